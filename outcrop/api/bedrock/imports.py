"""The `bedrock` control plane's custom model import: import jobs and the imported models they leave."""

from __future__ import annotations

from typing import Any

from outcrop.api.bedrock.operations import RequestContext, handles


@handles("bedrock", "CreateModelImportJob")
def create_model_import_job(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    # The job acts as its role, so naming the role needs iam:PassRole on it, as for every Bedrock job.
    ctx.authorize("iam:PassRole", params["roleArn"])
    return ctx.services.model_import.create_job(ctx.principal, params)


@handles("bedrock", "GetModelImportJob")
def get_model_import_job(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.model_import.get_job(ctx.principal.account_id, params["jobIdentifier"])


@handles("bedrock", "ListModelImportJobs")
def list_model_import_jobs(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.model_import.list_jobs(ctx.principal.account_id, params)


@handles("bedrock", "GetImportedModel")
def get_imported_model(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.model_import.get_model(ctx.principal.account_id, params["modelIdentifier"])


@handles("bedrock", "ListImportedModels")
def list_imported_models(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.model_import.list_models(ctx.principal.account_id, params)


@handles("bedrock", "DeleteImportedModel")
def delete_imported_model(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    ctx.services.model_import.delete_model(ctx.principal.account_id, params["modelIdentifier"])
    return {}
