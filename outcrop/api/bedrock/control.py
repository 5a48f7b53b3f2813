"""The `bedrock` control-plane service: the foundation-model catalog (more operations follow)."""

from __future__ import annotations

from typing import Any

from outcrop.api.bedrock.operations import RequestContext, handles


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
