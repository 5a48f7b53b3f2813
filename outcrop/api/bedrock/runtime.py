"""The `bedrock-runtime` service: Converse, InvokeModel, their streams, and CountTokens."""

from __future__ import annotations

from typing import Any

from outcrop.api.bedrock.operations import RequestContext, handles
from outcrop.errors import ValidationException
from outcrop.platform import jsontext
from outcrop.runtime.service import JSON, Caller

_ACCEPTABLE = {None, "", "*/*", JSON, "application/*"}


def _caller(ctx: RequestContext, params: dict[str, Any]) -> Caller:
    return Caller(ctx.request_id, ctx.principal, request_metadata(params.get("requestMetadata")), ctx.cancelled)


def request_metadata(value: Any) -> dict[str, str]:
    """Converse carries `requestMetadata` as a map; InvokeModel as the JSON text of a header."""
    if not value:
        return {}
    if isinstance(value, str):
        try:
            value = jsontext.loads(value)
        except jsontext.InvalidJson as exc:
            raise ValidationException(f"requestMetadata must be a JSON object of strings: {exc}") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValidationException("requestMetadata must be a JSON object whose keys and values are strings")
    return dict(value)


def _check_accept(value: str | None) -> None:
    if value not in _ACCEPTABLE:
        raise ValidationException(f"accept must be {JSON}; this server answers JSON only, got {value!r}")


@handles("bedrock-runtime", "Converse")
def converse(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.runtime.converse(_caller(ctx, params), params["modelId"], params)


@handles("bedrock-runtime", "ConverseStream")
def converse_stream(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return {"stream": ctx.services.runtime.converse_stream(_caller(ctx, params), params["modelId"], params)}


@handles("bedrock-runtime", "InvokeModel")
def invoke_model(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    _check_accept(params.get("accept"))
    body = ctx.services.runtime.invoke(_caller(ctx, params), params["modelId"], params.get("body") or b"")
    return {"body": body, "contentType": JSON}


@handles("bedrock-runtime", "InvokeModelWithResponseStream")
def invoke_model_with_response_stream(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    _check_accept(params.get("accept"))
    events = ctx.services.runtime.invoke_stream(_caller(ctx, params), params["modelId"], params.get("body") or b"")
    return {"body": events, "contentType": JSON}


@handles("bedrock-runtime", "CountTokens")
def count_tokens(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return {"inputTokens": ctx.services.runtime.count_tokens(ctx.principal.account_id, params["modelId"],
                                                             params["input"])}
