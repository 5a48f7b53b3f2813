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


def load_handlers() -> None:
    """Import the modules whose decorators fill HANDLERS (kept explicit: no import magic)."""
    from outcrop.api.bedrock import control, runtime  # noqa: F401
