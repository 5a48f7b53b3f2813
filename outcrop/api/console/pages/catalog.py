"""The front page, the model catalog and the playground."""

from __future__ import annotations

from outcrop.api.console.app import Visit, page
from outcrop.api.sessions import Response
from outcrop.errors import BedrockError

#: The catalog's filters: ListFoundationModels' own query members, so the page filters exactly as the API does.
FILTERS = {"provider": "byProvider", "modality": "byOutputModality", "customization": "byCustomizationType"}
MODALITIES = ("TEXT", "EMBEDDING", "IMAGE")
CUSTOMIZATIONS = ("FINE_TUNING", "CONTINUED_PRE_TRAINING")


@page("GET", "")
def home(visit: Visit) -> Response:
    try:
        count = len(visit.call("bedrock", "ListFoundationModels")["modelSummaries"])
    except BedrockError:  # a user without the catalog still gets the front page
        count = None
    return visit.render("home.html", "Home", model_count=count)


@page("GET", "models")
def models(visit: Visit) -> Response:
    chosen = {name: visit.query.get(name, "") for name in FILTERS}
    params = {FILTERS[name]: value for name, value in chosen.items() if value}
    summaries = visit.call("bedrock", "ListFoundationModels", params)["modelSummaries"]
    every = visit.call("bedrock", "ListFoundationModels")["modelSummaries"] if params else summaries
    providers = sorted({m["providerName"] for m in every})  # the filter offers every provider, filtered or not
    return visit.render("models.html", "Model catalog", models=summaries, chosen=chosen, providers=providers,
                        modalities=MODALITIES, customizations=CUSTOMIZATIONS)


@page("GET", "playground")
def playground(visit: Visit) -> Response:
    """The page is a form; its script streams each answer from the API (ConverseStream, InvokeModel...)."""
    summaries = visit.call("bedrock", "ListFoundationModels")["modelSummaries"]
    text = [m for m in summaries if "TEXT" in m.get("outputModalities", [])]
    embeddings = [m for m in summaries if "EMBEDDING" in m.get("outputModalities", [])]
    pictures = [m for m in summaries if "IMAGE" in m.get("outputModalities", [])]
    custom = []
    try:
        throughputs = visit.call("bedrock", "ListProvisionedModelThroughputs")["provisionedModelSummaries"]
        custom = [t for t in throughputs if t["status"] == "InService"]
    except BedrockError:
        pass  # the playground still works on foundation models
    chosen = visit.query.get("model", "")
    return visit.render("playground.html", "Playground", text_models=text, embedding_models=embeddings,
                        image_models=pictures, provisioned=custom, chosen=chosen, mode=visit.query.get("mode", "chat"))
