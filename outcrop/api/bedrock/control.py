"""The `bedrock` control-plane service: catalog, customization, provisioned throughput, invocation logging,
inference profiles and their tags."""

from __future__ import annotations

from typing import Any

from outcrop.api.bedrock.operations import RequestContext, handles
from outcrop.catalog.arns import parse_bedrock_arn
from outcrop.errors import AccessDeniedException, NotImplementedException
from outcrop.runtime import invocation_logging


@handles("bedrock", "ListFoundationModels")
def list_foundation_models(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    catalog = ctx.services.catalog
    models = catalog.list_models(
        provider=params.get("byProvider"),
        output_modality=params.get("byOutputModality"),
        customization_type=params.get("byCustomizationType"),
        inference_type=params.get("byInferenceType"),
    )
    return {"modelSummaries": catalog.describe(models)}


@handles("bedrock", "GetFoundationModel")
def get_foundation_model(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    catalog = ctx.services.catalog
    return {"modelDetails": catalog.describe([catalog.get(params["modelIdentifier"])])[0]}


@handles("bedrock", "PutModelInvocationLoggingConfiguration")
def put_model_invocation_logging_configuration(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    services = ctx.services
    invocation_logging.put_config(services.db, services.store, ctx.principal.account_id, params["loggingConfig"])
    services.invocation_log.refresh()
    return {}


@handles("bedrock", "GetModelInvocationLoggingConfiguration")
def get_model_invocation_logging_configuration(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    config = invocation_logging.get_config(ctx.services.db, ctx.principal.account_id)
    return {"loggingConfig": config} if config else {}


@handles("bedrock", "DeleteModelInvocationLoggingConfiguration")
def delete_model_invocation_logging_configuration(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    invocation_logging.delete_config(ctx.services.db, ctx.principal.account_id)
    ctx.services.invocation_log.refresh()
    return {}


def _pass_role(ctx: RequestContext, role_arn: str) -> None:
    """A job acts as its service role, so naming a role needs iam:PassRole on it, as on AWS: without this,
    anyone who may create jobs could borrow any role that trusts Bedrock."""
    ctx.authorize("iam:PassRole", role_arn)


@handles("bedrock", "CreateModelCustomizationJob")
def create_model_customization_job(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    _pass_role(ctx, params["roleArn"])
    return ctx.services.customization.create_job(ctx.principal, params)


@handles("bedrock", "GetModelCustomizationJob")
def get_model_customization_job(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.customization.get_job(ctx.principal.account_id, params["jobIdentifier"])


@handles("bedrock", "ListModelCustomizationJobs")
def list_model_customization_jobs(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.customization.list_jobs(ctx.principal.account_id, params)


@handles("bedrock", "StopModelCustomizationJob")
def stop_model_customization_job(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    ctx.services.customization.stop_job(ctx.principal.account_id, params["jobIdentifier"])
    return {}


@handles("bedrock", "GetCustomModel")
def get_custom_model(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.customization.get_custom_model(ctx.principal.account_id, params["modelIdentifier"])


@handles("bedrock", "ListCustomModels")
def list_custom_models(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.customization.list_custom_models(ctx.principal.account_id, params)


@handles("bedrock", "DeleteCustomModel")
def delete_custom_model(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    ctx.services.customization.delete_custom_model(ctx.principal.account_id, params["modelIdentifier"])
    return {}


#: An administrator (the account root) may delete a committed provisioned throughput before its term.
FORCE_HEADER = "x-outcrop-force-delete"


@handles("bedrock", "CreateProvisionedModelThroughput")
def create_provisioned_model_throughput(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.provisioning.create(ctx.principal.account_id, params)


@handles("bedrock", "GetProvisionedModelThroughput")
def get_provisioned_model_throughput(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.provisioning.get(ctx.principal.account_id, params["provisionedModelId"])


@handles("bedrock", "ListProvisionedModelThroughputs")
def list_provisioned_model_throughputs(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.provisioning.list(ctx.principal.account_id, params)


@handles("bedrock", "UpdateProvisionedModelThroughput")
def update_provisioned_model_throughput(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    ctx.services.provisioning.update(ctx.principal.account_id, params["provisionedModelId"], params)
    return {}


@handles("bedrock", "DeleteProvisionedModelThroughput")
def delete_provisioned_model_throughput(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    force = ctx.headers.get(FORCE_HEADER, "").lower() == "true"
    if force and not ctx.principal.is_root:
        raise AccessDeniedException(f"Only the account root may force a deletion ({FORCE_HEADER})")
    ctx.services.provisioning.delete(ctx.principal.account_id, params["provisionedModelId"], force=force)
    return {}


@handles("bedrock", "CreateEvaluationJob")
def create_evaluation_job(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    _pass_role(ctx, params["roleArn"])
    return ctx.services.evaluation.create_job(ctx.principal, params)


@handles("bedrock", "GetEvaluationJob")
def get_evaluation_job(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.evaluation.get_job(ctx.principal.account_id, params["jobIdentifier"])


@handles("bedrock", "ListEvaluationJobs")
def list_evaluation_jobs(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.evaluation.list_jobs(ctx.principal.account_id, params)


@handles("bedrock", "StopEvaluationJob")
def stop_evaluation_job(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    ctx.services.evaluation.stop_job(ctx.principal.account_id, params["jobIdentifier"])
    return {}


@handles("bedrock", "BatchDeleteEvaluationJob")
def batch_delete_evaluation_job(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.evaluation.batch_delete(ctx.principal.account_id, params["jobIdentifiers"])


@handles("bedrock", "CreateInferenceProfile")
def create_inference_profile(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.profiles.create(ctx.principal.account_id, params)


@handles("bedrock", "GetInferenceProfile")
def get_inference_profile(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.profiles.get(ctx.principal.account_id, params["inferenceProfileIdentifier"])


@handles("bedrock", "ListInferenceProfiles")
def list_inference_profiles(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return ctx.services.profiles.list(ctx.principal.account_id, params)


@handles("bedrock", "DeleteInferenceProfile")
def delete_inference_profile(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    ctx.services.profiles.delete(ctx.principal.account_id, params["inferenceProfileIdentifier"])
    return {}


def _tagged(ctx: RequestContext, arn: str) -> Any:
    """The service keeping the tags of the resource a tag operation names: inference profiles and batch inference
    jobs keep tags so far (others: 501, as before)."""
    parsed = parse_bedrock_arn(arn, ctx.services.settings.region)
    if parsed is not None and parsed.resource_type == "model-invocation-job":
        return ctx.services.batch
    if parsed is None or parsed.resource_type not in ("application-inference-profile", "inference-profile"):
        raise NotImplementedException("Tags are kept for inference profiles and batch inference jobs only in "
                                      "Outcrop so far")
    return ctx.services.profiles


@handles("bedrock", "TagResource")
def tag_resource(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    _tagged(ctx, params["resourceARN"]).tag(ctx.principal.account_id, params["resourceARN"], params["tags"])
    return {}


@handles("bedrock", "UntagResource")
def untag_resource(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    _tagged(ctx, params["resourceARN"]).untag(ctx.principal.account_id, params["resourceARN"], params["tagKeys"])
    return {}


@handles("bedrock", "ListTagsForResource")
def list_tags_for_resource(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return {"tags": _tagged(ctx, params["resourceARN"]).tags(ctx.principal.account_id, params["resourceARN"])}
