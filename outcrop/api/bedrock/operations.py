"""The table from (service, operation name) to the function that serves it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from outcrop.api.bedrock import protocol
from outcrop.api.bedrock.resources import beneath_arns, resources
from outcrop.api.bedrock.validation import validate_input
from outcrop.errors import BedrockError
from outcrop.iam.audit import SUCCESS, record_event
from outcrop.iam.principal import Principal
from outcrop.services import Services


@dataclass(frozen=True)
class RequestContext:
    request_id: str
    principal: Principal
    services: Services
    source_ip: str
    headers: dict[str, str]
    #: Set by the app when the client hangs up before the answer is sent; a handler whose work can be
    #: called off (a generation) hands it on, see `runtime.service.Caller.cancelled`.
    cancelled: threading.Event = field(default_factory=threading.Event)
    #: The request's condition keys (aws:SourceIp, aws:SecureTransport): a handler that authorizes more than
    #: the operation's own resources (a nested model, a passed role) passes them on, as the app does.
    conditions: dict[str, Any] = field(default_factory=dict)
    #: The canonical ARNs the request acts on, filled by `invoke` before it authorizes (the audit names them).
    resources: list[str] = field(default_factory=list)

    def authorize(self, action: str, resource: str) -> None:
        """Authorize a further action of this request, with the request's conditions."""
        self.services.iam.authorize(self.principal, action, resource, self.conditions)


#: The control planes whose every call goes to the audit trail (data-plane calls have usage records).
AUDITED_SERVICES = frozenset({"bedrock", "bedrock-agent", "outcrop-iam"})

#: Services whose ConflictException is 409 (botocore's models say so; bedrock's own is 400).
_CONFLICT_409 = ("bedrock-agent", "bedrock-agent-runtime")


def http_status(error: BedrockError, service: str) -> int:
    """The HTTP status `service` answers `error` with (its class's, but for the agent services' conflicts)."""
    return 409 if error.code == "ConflictException" and service in _CONFLICT_409 else error.status


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
_IAM_ACTIONS = {"Converse": "InvokeModel", "ConverseStream": "InvokeModelWithResponseStream",
                "RetrieveAndGenerateStream": "RetrieveAndGenerate"}


def iam_action(operation: str) -> str:
    """The IAM action a request needs: `bedrock:<Operation>` (Converse needs bedrock:InvokeModel)."""
    return f"bedrock:{_IAM_ACTIONS.get(operation, operation)}"


def load_handlers() -> None:
    """Import the modules whose decorators fill HANDLERS (kept explicit: no import magic)."""
    from outcrop.api.bedrock import agent, agent_runtime, batch, control, guardrails, imports, runtime  # noqa: F401


def invoke(ctx: RequestContext, service: str, operation: str, params: dict[str, Any]) -> Any:
    """What every door does with a parsed, validated request: resolve the resources it names to canonical ARNs
    (a policy sees those, whatever the caller spelled), authorize each, run the handler. The API and the console
    both come through here, so a page may do exactly what the same principal's API call may."""
    ctx.resources[:] = resources(ctx.services, ctx.principal.account_id, operation, params)
    for target in ctx.resources:
        ctx.authorize(iam_action(operation), target)
    for target in beneath_arns(ctx.services, ctx.principal.account_id, operation, params):
        ctx.services.iam.refuse_denied(ctx.principal, iam_action(operation), target, ctx.conditions)
    return HANDLERS[(service, operation)](ctx, params)


@cache
def _routes() -> dict[tuple[str, str], protocol.Route]:
    return {(r.service, r.name): r for r in protocol.routes()}


def validated(service: str, operation: str, params: dict[str, Any]) -> dict[str, Any]:
    """`params` checked against the operation's input shape in botocore's model, as the API's parser checks."""
    validate_input(_routes()[(service, operation)].operation.input_shape, params)
    return params


def call(ctx: RequestContext, service: str, operation: str, params: dict[str, Any]) -> Any:
    """An operation that a door other than the API's parser (the console, the OpenAI door) makes for `ctx`'s
    principal: validated, then `invoke`d, then audited as the API audits it (control planes only)."""
    error: BedrockError | None = None
    try:
        return invoke(ctx, service, operation, validated(service, operation, params))
    except BedrockError as exc:
        error = exc
        raise
    finally:
        audit(ctx, service, operation, error, ", ".join(ctx.resources) or "*")


def audit(ctx: RequestContext, service: str, operation: str, error: BedrockError | None, resource: str) -> None:
    """The audit event of one call of `service` (written for the control planes only, as the API writes them)."""
    if service in AUDITED_SERVICES:
        record_event(ctx.services.db, service=service, operation=operation,
                     result=error.code if error else SUCCESS, status=http_status(error, service) if error else 200,
                     principal=ctx.principal, resource=resource, source_ip=ctx.source_ip,
                     request_id=ctx.request_id, user_agent=ctx.headers.get("user-agent"))
