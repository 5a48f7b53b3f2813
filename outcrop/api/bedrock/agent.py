"""The `bedrock-agent` service: knowledge bases, their data sources, ingestion jobs and documents; agents, their
action groups, knowledge bases, versions and aliases."""

from __future__ import annotations

from typing import Any

from outcrop.api.bedrock.operations import RequestContext, handles
from outcrop.errors import ValidationException


def _pass_role(ctx: RequestContext, params: dict[str, Any]) -> None:
    """A knowledge base reads the user's bucket as its role: naming one needs iam:PassRole on it, as on AWS."""
    ctx.authorize("iam:PassRole", params["roleArn"])


@handles("bedrock-agent", "CreateKnowledgeBase")
def create_knowledge_base(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    _pass_role(ctx, params)
    return ctx.services.knowledge.create(ctx.principal, params)


@handles("bedrock-agent", "GetKnowledgeBase")
def get_knowledge_base(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.knowledge.get(ctx.principal.account_id, params["knowledgeBaseId"])


@handles("bedrock-agent", "ListKnowledgeBases")
def list_knowledge_bases(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.knowledge.list(ctx.principal.account_id, params)


@handles("bedrock-agent", "UpdateKnowledgeBase")
def update_knowledge_base(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    _pass_role(ctx, params)
    return ctx.services.knowledge.update(ctx.principal.account_id, params)


@handles("bedrock-agent", "DeleteKnowledgeBase")
def delete_knowledge_base(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.knowledge.delete(ctx.principal.account_id, params["knowledgeBaseId"])


@handles("bedrock-agent", "CreateDataSource")
def create_data_source(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.knowledge.create_data_source(ctx.principal, params)


@handles("bedrock-agent", "GetDataSource")
def get_data_source(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.knowledge.get_data_source(ctx.principal.account_id, params["knowledgeBaseId"],
                                                  params["dataSourceId"])


@handles("bedrock-agent", "ListDataSources")
def list_data_sources(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.knowledge.list_data_sources(ctx.principal.account_id, params)


@handles("bedrock-agent", "UpdateDataSource")
def update_data_source(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.knowledge.update_data_source(ctx.principal.account_id, params)


@handles("bedrock-agent", "DeleteDataSource")
def delete_data_source(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.knowledge.delete_data_source(ctx.principal.account_id, params["knowledgeBaseId"],
                                                     params["dataSourceId"])


@handles("bedrock-agent", "StartIngestionJob")
def start_ingestion_job(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.knowledge.start_ingestion_job(ctx.principal, params)


@handles("bedrock-agent", "GetIngestionJob")
def get_ingestion_job(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.knowledge.get_ingestion_job(ctx.principal.account_id, params["knowledgeBaseId"],
                                                    params["dataSourceId"], params["ingestionJobId"])


@handles("bedrock-agent", "ListIngestionJobs")
def list_ingestion_jobs(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.knowledge.list_ingestion_jobs(ctx.principal.account_id, params)


@handles("bedrock-agent", "StopIngestionJob")
def stop_ingestion_job(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.knowledge.stop_ingestion_job(ctx.principal.account_id, params["knowledgeBaseId"],
                                                     params["dataSourceId"], params["ingestionJobId"])


@handles("bedrock-agent", "IngestKnowledgeBaseDocuments")
def ingest_knowledge_base_documents(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.knowledge.ingest_documents(ctx.principal, params)


@handles("bedrock-agent", "GetKnowledgeBaseDocuments")
def get_knowledge_base_documents(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.knowledge.get_documents(ctx.principal.account_id, params)


@handles("bedrock-agent", "ListKnowledgeBaseDocuments")
def list_knowledge_base_documents(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.knowledge.list_documents(ctx.principal.account_id, params)


@handles("bedrock-agent", "DeleteKnowledgeBaseDocuments")
def delete_knowledge_base_documents(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.knowledge.delete_documents(ctx.principal, params)


# -- agents --------------------------------------------------------------------------------------------

@handles("bedrock-agent", "CreateAgent")
def create_agent(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    if params.get("agentResourceRoleArn"):
        ctx.authorize("iam:PassRole", params["agentResourceRoleArn"])
    return ctx.services.agents.create(ctx.principal, params)


@handles("bedrock-agent", "GetAgent")
def get_agent(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.agents.get(ctx.principal.account_id, params["agentId"])


@handles("bedrock-agent", "ListAgents")
def list_agents(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.agents.list(ctx.principal.account_id, params)


@handles("bedrock-agent", "UpdateAgent")
def update_agent(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    ctx.authorize("iam:PassRole", params["agentResourceRoleArn"])
    return ctx.services.agents.update(ctx.principal.account_id, params)


@handles("bedrock-agent", "DeleteAgent")
def delete_agent(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.agents.delete(ctx.principal.account_id, params["agentId"],
                                      bool(params.get("skipResourceInUseCheck")))


@handles("bedrock-agent", "PrepareAgent")
def prepare_agent(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.agents.prepare(ctx.principal.account_id, params["agentId"])


@handles("bedrock-agent", "CreateAgentActionGroup")
def create_agent_action_group(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.agents.create_action_group(ctx.principal.account_id, params)


@handles("bedrock-agent", "GetAgentActionGroup")
def get_agent_action_group(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.agents.get_action_group(ctx.principal.account_id, params["agentId"], params["agentVersion"],
                                                params["actionGroupId"])


@handles("bedrock-agent", "ListAgentActionGroups")
def list_agent_action_groups(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.agents.list_action_groups(ctx.principal.account_id, params)


@handles("bedrock-agent", "UpdateAgentActionGroup")
def update_agent_action_group(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.agents.update_action_group(ctx.principal.account_id, params)


@handles("bedrock-agent", "DeleteAgentActionGroup")
def delete_agent_action_group(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.agents.delete_action_group(ctx.principal.account_id, params)


@handles("bedrock-agent", "AssociateAgentKnowledgeBase")
def associate_agent_knowledge_base(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.agents.associate_knowledge_base(ctx.principal.account_id, params)


@handles("bedrock-agent", "UpdateAgentKnowledgeBase")
def update_agent_knowledge_base(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    ctx.services.agents.get_knowledge_base(ctx.principal.account_id, params["agentId"], params["agentVersion"],
                                           params["knowledgeBaseId"])
    return ctx.services.agents.associate_knowledge_base(ctx.principal.account_id, params)


@handles("bedrock-agent", "GetAgentKnowledgeBase")
def get_agent_knowledge_base(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.agents.get_knowledge_base(ctx.principal.account_id, params["agentId"], params["agentVersion"],
                                                  params["knowledgeBaseId"])


@handles("bedrock-agent", "ListAgentKnowledgeBases")
def list_agent_knowledge_bases(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.agents.list_knowledge_bases(ctx.principal.account_id, params)


@handles("bedrock-agent", "DisassociateAgentKnowledgeBase")
def disassociate_agent_knowledge_base(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.agents.disassociate_knowledge_base(ctx.principal.account_id, params)


@handles("bedrock-agent", "ListAgentVersions")
def list_agent_versions(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.agents.list_versions(ctx.principal.account_id, params)


@handles("bedrock-agent", "GetAgentVersion")
def get_agent_version(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.agents.get_version(ctx.principal.account_id, params["agentId"], params["agentVersion"])


@handles("bedrock-agent", "DeleteAgentVersion")
def delete_agent_version(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.agents.delete_version(ctx.principal.account_id, params["agentId"], params["agentVersion"],
                                              bool(params.get("skipResourceInUseCheck")))


@handles("bedrock-agent", "CreateAgentAlias")
def create_agent_alias(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.agents.create_alias(ctx.principal.account_id, params)


@handles("bedrock-agent", "GetAgentAlias")
def get_agent_alias(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.agents.get_alias(ctx.principal.account_id, params["agentId"], params["agentAliasId"])


@handles("bedrock-agent", "ListAgentAliases")
def list_agent_aliases(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.agents.list_aliases(ctx.principal.account_id, params)


@handles("bedrock-agent", "UpdateAgentAlias")
def update_agent_alias(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    if params.get("aliasInvocationState") not in (None, "ACCEPT_INVOCATIONS"):
        raise ValidationException("aliasInvocationState REJECT_INVOCATIONS is not supported on this server")
    return ctx.services.agents.update_alias(ctx.principal.account_id, params)


@handles("bedrock-agent", "DeleteAgentAlias")
def delete_agent_alias(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.agents.delete_alias(ctx.principal.account_id, params["agentId"], params["agentAliasId"])
