"""The `bedrock-agent` service: knowledge bases, their data sources, ingestion jobs and documents."""

from __future__ import annotations

from typing import Any

from outcrop.api.bedrock.operations import RequestContext, handles


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
