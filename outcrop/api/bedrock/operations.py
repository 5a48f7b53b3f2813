"""The table from (service, operation name) to the function that serves it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from outcrop.api.services import Services
from outcrop.iam.principal import Principal


@dataclass(frozen=True)
class RequestContext:
    request_id: str
    principal: Principal
    services: Services
    source_ip: str
    headers: dict[str, str]


Handler = Callable[[RequestContext, dict[str, Any]], Any]
HANDLERS: dict[tuple[str, str], Handler] = {}


def handles(service: str, operation: str) -> Callable[[Handler], Handler]:
    """Register a handler; it gets the parsed, validated input and returns the output dict."""
    def register(fn: Handler) -> Handler:
        key = (service, operation)
        if key in HANDLERS:
            raise RuntimeError(f"{service}:{operation} registered twice")
        HANDLERS[key] = fn
        return fn
    return register


#: Operations that IAM authorizes under another operation's action, as AWS does.
_IAM_ACTIONS = {"Converse": "InvokeModel", "ConverseStream": "InvokeModelWithResponseStream"}


def iam_action(operation: str) -> str:
    """The IAM action a request needs: `bedrock:<Operation>` (Converse needs bedrock:InvokeModel)."""
    return f"bedrock:{_IAM_ACTIONS.get(operation, operation)}"


#: Input members that identify the resource an operation acts on, most specific first.
_RESOURCE_MEMBERS = ("modelId", "modelIdentifier", "jobIdentifier", "provisionedModelId", "guardrailIdentifier",
                     "resourceARN", "knowledgeBaseId", "agentId")


def resource_arn(params: dict[str, Any], region: str) -> str:
    """The ARN a request is authorized against: its identifier as an ARN, else `*` (list operations).

    A bare model id names a foundation model, whose ARN has no account (the catalog is shared)."""
    for member in _RESOURCE_MEMBERS:
        value = params.get(member)
        if isinstance(value, str) and value:
            if value.startswith("arn:"):
                return value
            if member in ("modelId", "modelIdentifier"):
                return f"arn:aws:bedrock:{region}::foundation-model/{value}"
            return "*"
    return "*"


def load_handlers() -> None:
    """Import the modules whose decorators fill HANDLERS (kept explicit: no import magic)."""
    from outcrop.api.bedrock import control, runtime  # noqa: F401
