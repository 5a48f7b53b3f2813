"""Guardrails: the control plane (`bedrock`: CreateGuardrail ... CreateGuardrailVersion) and ApplyGuardrail
(`bedrock-runtime`)."""

from __future__ import annotations

from typing import Any

from outcrop.api.bedrock.operations import RequestContext, handles


@handles("bedrock", "CreateGuardrail")
def create_guardrail(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.guardrails.create(ctx.principal.account_id, params)


@handles("bedrock", "GetGuardrail")
def get_guardrail(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.guardrails.get(ctx.principal.account_id, params["guardrailIdentifier"],
                                       params.get("guardrailVersion"))


@handles("bedrock", "ListGuardrails")
def list_guardrails(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.guardrails.list(ctx.principal.account_id, params)


@handles("bedrock", "UpdateGuardrail")
def update_guardrail(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.guardrails.update(ctx.principal.account_id, params)


@handles("bedrock", "DeleteGuardrail")
def delete_guardrail(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.guardrails.delete(ctx.principal.account_id, params["guardrailIdentifier"],
                                          params.get("guardrailVersion"))


@handles("bedrock", "CreateGuardrailVersion")
def create_guardrail_version(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.guardrails.create_version(ctx.principal.account_id, params)


@handles("bedrock-runtime", "ApplyGuardrail")
def apply_guardrail(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    guardrails = ctx.services.guardrails
    guardrail_id, version, document = guardrails.document(ctx.principal.account_id, params["guardrailIdentifier"],
                                                          params["guardrailVersion"])
    result = guardrails.check(ctx.principal.account_id, document, params["source"], params["content"],
                              full=params.get("outputScope") == "FULL")
    guardrails.record(ctx.principal, ctx.request_id, guardrail_id, version, params["source"], result)
    return result
