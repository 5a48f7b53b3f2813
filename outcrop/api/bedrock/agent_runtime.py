"""The `bedrock-agent-runtime` service: Retrieve, RetrieveAndGenerate and its stream, Rerank, InvokeAgent and
InvokeInlineAgent, and agent memory."""

from __future__ import annotations

from typing import Any

from outcrop.api.bedrock.operations import RequestContext, handles
from outcrop.api.bedrock.resources import invocation_arns
from outcrop.guardrails.service import guardrail_arn, parse_identifier
from outcrop.iam.scoped_store import object_arn
from outcrop.knowledge.service import knowledge_base_arn
from outcrop.platform.objectstore import S3Uri
from outcrop.runtime.service import Caller


def _caller(ctx: RequestContext) -> Caller:
    return Caller(ctx.request_id, ctx.principal, cancelled=ctx.cancelled)


def _authorize_generation(ctx: RequestContext, params: dict[str, Any]) -> None:
    """RetrieveAndGenerate searches a knowledge base and invokes a model, both named inside its configuration:
    the caller needs bedrock:Retrieve on the one and bedrock:InvokeModel on the other (every ARN the model's
    name reaches, as for Converse), as on Bedrock."""
    services, account = ctx.services, ctx.principal.account_id
    config = (params.get("retrieveAndGenerateConfiguration") or {}).get("knowledgeBaseConfiguration") or {}
    if config.get("knowledgeBaseId"):
        ctx.authorize("bedrock:Retrieve", knowledge_base_arn(services.settings.region, account,
                                                             config["knowledgeBaseId"]))
    if config.get("modelArn"):
        _authorize_model(ctx, config["modelArn"])
    guardrail = (config.get("generationConfiguration") or {}).get("guardrailConfiguration") or {}
    if guardrail.get("guardrailId"):
        _authorize_guardrail(ctx, {"guardrailIdentifier": guardrail["guardrailId"]})


def _authorize_model(ctx: RequestContext, identifier: str) -> None:
    """bedrock:InvokeModel on the model a request runs, as Converse authorizes it: allowed on every ARN its name
    reaches, and not denied on the models beneath a provisioned throughput or custom model."""
    named, beneath = invocation_arns(ctx.services, ctx.principal.account_id, identifier)
    for arn in named:
        ctx.authorize("bedrock:InvokeModel", arn)
    for arn in beneath:
        ctx.services.iam.refuse_denied(ctx.principal, "bedrock:InvokeModel", arn, ctx.conditions)


def _authorize_guardrail(ctx: RequestContext, configuration: dict[str, Any] | None) -> None:
    """Running under a guardrail needs bedrock:ApplyGuardrail on it, as on Bedrock."""
    if configuration and configuration.get("guardrailIdentifier"):
        account, region = ctx.principal.account_id, ctx.services.settings.region
        ctx.authorize("bedrock:ApplyGuardrail", guardrail_arn(region, account, parse_identifier(
            account, configuration["guardrailIdentifier"], region)))


@handles("bedrock-agent-runtime", "Retrieve")
def retrieve(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.retrieval.retrieve(_caller(ctx), params)


@handles("bedrock-agent-runtime", "RetrieveAndGenerate")
def retrieve_and_generate(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    _authorize_generation(ctx, params)
    return ctx.services.retrieval.retrieve_and_generate(_caller(ctx), params)


@handles("bedrock-agent-runtime", "RetrieveAndGenerateStream")
def retrieve_and_generate_stream(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    _authorize_generation(ctx, params)
    session_id, stream = ctx.services.retrieval.retrieve_and_generate_stream(_caller(ctx), params)
    return {"sessionId": session_id, "stream": stream}


@handles("bedrock-agent-runtime", "Rerank")
def rerank(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    """Needs bedrock:Rerank and, as on Bedrock, bedrock:InvokeModel on the reranking model."""
    model = params["rerankingConfiguration"]["bedrockRerankingConfiguration"]["modelConfiguration"]["modelArn"]
    _authorize_model(ctx, model)
    return ctx.services.retrieval.rerank(_caller(ctx), params)


@handles("bedrock-agent-runtime", "InvokeAgent")
def invoke_agent(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    """The agent acts for its caller: the caller needs bedrock:InvokeModel on its model and bedrock:Retrieve on
    its knowledge bases, as for Converse and RetrieveAndGenerate (a policy that denies a model stays in force
    through an agent)."""
    services, account = ctx.services, ctx.principal.account_id
    model, knowledge_bases, guardrail = services.agent_runtime.authorization(account, params)
    _authorize_model(ctx, model)
    for kb_id in knowledge_bases:
        ctx.authorize("bedrock:Retrieve", knowledge_base_arn(services.settings.region, account, kb_id))
    _authorize_guardrail(ctx, guardrail)
    session_id, events = ctx.services.agent_runtime.invoke(_caller(ctx), params)
    return {"sessionId": session_id, "contentType": "application/json", "completion": events,
            **({"memoryId": params["memoryId"]} if params.get("memoryId") else {})}


@handles("bedrock-agent-runtime", "InvokeInlineAgent")
def invoke_inline_agent(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    """The agent is the request's: the caller needs bedrock:InvokeModel on its model, bedrock:Retrieve on its
    knowledge bases, s3:GetObject on its OpenAPI documents in S3 (an inline agent has no role of its own) and
    lambda:InvokeFunction on the functions its actions run (an agent's need CreateAgentActionGroup instead)."""
    services, account = ctx.services, ctx.principal.account_id
    _authorize_model(ctx, params["foundationModel"])
    for kb in params.get("knowledgeBases") or []:
        ctx.authorize("bedrock:Retrieve", knowledge_base_arn(services.settings.region, account, kb["knowledgeBaseId"]))
    for group in params.get("actionGroups") or []:
        function = (group.get("actionGroupExecutor") or {}).get("lambda")
        if function:
            ctx.authorize("lambda:InvokeFunction", function)
        location = (group.get("apiSchema") or {}).get("s3")
        if location:
            ctx.authorize("s3:GetObject", object_arn(S3Uri(location.get("s3BucketName") or "",
                                                           location.get("s3ObjectKey") or "")))
    _authorize_guardrail(ctx, params.get("guardrailConfiguration"))
    session_id, events = services.agent_runtime.invoke_inline(_caller(ctx), params)
    return {"sessionId": session_id, "contentType": "application/json", "completion": events}


@handles("bedrock-agent-runtime", "GetAgentMemory")
def get_agent_memory(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    account = ctx.principal.account_id
    ctx.services.agents.runnable(account, params["agentId"], params["agentAliasId"])  # the account's own alias
    return ctx.services.agent_runtime.memory.get(account, params["agentId"], params["agentAliasId"], params)


@handles("bedrock-agent-runtime", "DeleteAgentMemory")
def delete_agent_memory(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    account = ctx.principal.account_id
    ctx.services.agents.runnable(account, params["agentId"], params["agentAliasId"])
    return ctx.services.agent_runtime.memory.delete(account, params["agentId"], params["agentAliasId"], params)
