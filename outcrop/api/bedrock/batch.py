"""The `bedrock` control plane's batch inference: model invocation jobs (outcrop/batch/)."""

from __future__ import annotations

from typing import Any

from outcrop.api.bedrock.operations import RequestContext, handles


@handles("bedrock", "CreateModelInvocationJob")
def create_model_invocation_job(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    # The job acts as its role: naming a role needs iam:PassRole on it, as for every other job.
    ctx.authorize("iam:PassRole", params["roleArn"])
    return ctx.services.batch.create_job(ctx.principal, params)


@handles("bedrock", "GetModelInvocationJob")
def get_model_invocation_job(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.batch.get_job(ctx.principal.account_id, params["jobIdentifier"])


@handles("bedrock", "ListModelInvocationJobs")
def list_model_invocation_jobs(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.batch.list_jobs(ctx.principal.account_id, params)


@handles("bedrock", "StopModelInvocationJob")
def stop_model_invocation_job(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    ctx.services.batch.stop_job(ctx.principal.account_id, params["jobIdentifier"])
    return {}
