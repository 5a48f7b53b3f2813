"""The `bedrock-runtime` service: Converse, InvokeModel, their streams, and CountTokens."""

from __future__ import annotations

from typing import Any

from outcrop.api.bedrock.operations import RequestContext, handles
from outcrop.api.bedrock.protocol import EXTRA_HEADERS
from outcrop.errors import ValidationException
from outcrop.guardrails import enforcement
from outcrop.guardrails.service import guardrail_arn, parse_identifier
from outcrop.platform import jsontext
from outcrop.runtime.service import JSON, Caller

_ACCEPTABLE = {None, "", "*/*", JSON, "application/*"}


def _caller(ctx: RequestContext, params: dict[str, Any]) -> Caller:
    return Caller(ctx.request_id, ctx.principal, request_metadata(params.get("requestMetadata")), ctx.cancelled,
                  conditions=ctx.conditions)


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


def _invoke_guard(ctx: RequestContext, params: dict[str, Any], caller: Caller) -> enforcement.InvokeGuard | None:
    """The guardrail InvokeModel's headers name (X-Amzn-Bedrock-GuardrailIdentifier, -Version, -Trace)."""
    identifier, version = params.get("guardrailIdentifier"), params.get("guardrailVersion")
    if not identifier and not version:
        if params.get("trace") in ("ENABLED", "ENABLED_FULL"):
            raise ValidationException("X-Amzn-Bedrock-Trace traces a guardrail: name one with "
                                      "X-Amzn-Bedrock-GuardrailIdentifier and X-Amzn-Bedrock-GuardrailVersion")
        return None
    for header, value in (("GuardrailIdentifier", identifier), ("GuardrailVersion", version)):
        if not value:
            raise ValidationException(f"X-Amzn-Bedrock-{header} is required when a guardrail is named")
    _authorize_guardrail(ctx, identifier)
    return enforcement.InvokeGuard(ctx.services.guardrails, caller, identifier, version, params.get("trace"))


def _check_accept(value: str | None) -> None:
    if value not in _ACCEPTABLE:
        raise ValidationException(f"accept must be {JSON}; this server answers JSON only, got {value!r}")


#: The local model that answered, on every runtime answer: an application naming a Bedrock id (an alias)
#: or an inference profile learns which model served it. A header, because InvokeModel's body is the
#: model's own and a stream's headers come first; Converse's JSON also carries it as `outcropModelId`,
#: the member GetFoundationModel and GetInferenceProfile use (clients ignore members they do not model).
SERVED_BY = "X-Outcrop-Model-Id"


def _served_by(caller: Caller) -> dict[str, str]:
    """The header, from what the runtime resolved for this call (no second lookup)."""
    return {SERVED_BY: caller.served_model_id} if caller.served_model_id else {}


def _guarded(ctx: RequestContext, params: dict[str, Any]) -> bool:
    """Whether the call runs under a guardrail (authorized)."""
    config = params.get("guardrailConfig")
    if not config:
        return False
    for member in ("guardrailIdentifier", "guardrailVersion"):
        if not config.get(member):
            raise ValidationException(f"guardrailConfig.{member} is required")
    _authorize_guardrail(ctx, config["guardrailIdentifier"])
    return True


def _authorize_guardrail(ctx: RequestContext, identifier: str) -> None:
    """Using a guardrail needs bedrock:ApplyGuardrail on it, as on Bedrock."""
    account, region = ctx.principal.account_id, ctx.services.settings.region
    ctx.authorize("bedrock:ApplyGuardrail", guardrail_arn(region, account, parse_identifier(account, identifier,
                                                                                             region)))


@handles("bedrock-runtime", "Converse")
def converse(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    caller = _caller(ctx, params)
    services = ctx.services
    if _guarded(ctx, params):
        answer = enforcement.converse(services.guardrails, services.runtime, caller, params["modelId"], params)
    else:
        answer = services.runtime.converse(caller, params["modelId"], params)
    return {**answer, "outcropModelId": caller.served_model_id, EXTRA_HEADERS: _served_by(caller)}


@handles("bedrock-runtime", "ConverseStream")
def converse_stream(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    caller = _caller(ctx, params)
    services = ctx.services
    if _guarded(ctx, params):
        stream = enforcement.converse_stream(services.guardrails, services.runtime, caller, params["modelId"],
                                             params)
    else:
        stream = services.runtime.converse_stream(caller, params["modelId"], params)
    return {"stream": stream, EXTRA_HEADERS: _served_by(caller)}


def _performance(params: dict[str, Any]) -> dict[str, str | None]:
    """The performance-config and service-tier request headers, as the runtime service takes them."""
    return {"latency": params.get("performanceConfigLatency"), "tier": params.get("serviceTier")}


def _echo(params: dict[str, Any]) -> dict[str, str]:
    """The same headers answered back (modelled output members): what the request ran with."""
    return {k: params[k] for k in ("performanceConfigLatency", "serviceTier") if params.get(k) is not None}


@handles("bedrock-runtime", "InvokeModel")
def invoke_model(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    _check_accept(params.get("accept"))
    caller = _caller(ctx, params)
    answer = ctx.services.runtime.invoke(caller, params["modelId"], params.get("body") or b"", **_performance(params),
                                         guard=_invoke_guard(ctx, params, caller))
    # Bedrock sends these on every InvokeModel answer although botocore's shape does not model them;
    # LangChain's ChatBedrock reads its token usage from them.
    counts = {"X-Amzn-Bedrock-Input-Token-Count": answer.input_tokens,
              "X-Amzn-Bedrock-Output-Token-Count": answer.output_tokens,
              "X-Amzn-Bedrock-Invocation-Latency": answer.latency_ms, **_served_by(caller)}
    return {"body": answer.body, "contentType": JSON, **_echo(params), EXTRA_HEADERS: counts}


@handles("bedrock-runtime", "InvokeModelWithResponseStream")
def invoke_model_with_response_stream(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    _check_accept(params.get("accept"))
    caller = _caller(ctx, params)
    events = ctx.services.runtime.invoke_stream(caller, params["modelId"], params.get("body") or b"",
                                                **_performance(params), guard=_invoke_guard(ctx, params, caller))
    return {"body": events, "contentType": JSON, **_echo(params), EXTRA_HEADERS: _served_by(caller)}


@handles("bedrock-runtime", "CountTokens")
def count_tokens(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return {"inputTokens": ctx.services.runtime.count_tokens(ctx.principal.account_id, params["modelId"],
                                                             params["input"])}
