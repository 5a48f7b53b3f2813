"""The front page, the model catalog and the playground."""

from __future__ import annotations

from typing import Any

from outcrop.api.console.app import Visit, page
from outcrop.api.sessions import Response
from outcrop.errors import BedrockError

#: The catalog's filters: ListFoundationModels' own query members, so the page filters exactly as the API does.
FILTERS = {"provider": "byProvider", "modality": "byOutputModality", "customization": "byCustomizationType"}
MODALITIES = ("TEXT", "EMBEDDING", "IMAGE")
CUSTOMIZATIONS = ("FINE_TUNING", "CONTINUED_PRE_TRAINING")


#: The playground's modes: (label, what it needs of a model, the word for such a model). Chat and text stream their
#: answers (ConverseStream, InvokeModelWithResponseStream), so their models must stream text.
MODES = {"chat": ("Chat (ConverseStream)", "text"), "text": ("Text (InvokeModel, Titan text body)", "text"),
         "embeddings": ("Embeddings (InvokeModel, Titan embeddings body)", "embedding"),
         "images": ("Images (InvokeModel, Titan image body)", "image")}


@page("GET", "")
def home(visit: Visit) -> Response:
    count = None  # a user without the catalog still gets the front page
    if visit.may("bedrock:ListFoundationModels"):
        try:
            count = len(visit.call("bedrock", "ListFoundationModels")["modelSummaries"])
        except BedrockError:
            pass
    return visit.render("home.html", "Home", model_count=count)


@page("GET", "models")
def models(visit: Visit) -> Response:
    chosen = {name: visit.query.get(name, "") for name in FILTERS}
    params = {FILTERS[name]: value for name, value in chosen.items() if value}
    summaries = visit.call("bedrock", "ListFoundationModels", params)["modelSummaries"]
    every = visit.call("bedrock", "ListFoundationModels")["modelSummaries"] if params else summaries
    providers = sorted({m["providerName"] for m in every})  # the filter offers every provider, filtered or not
    return visit.render("models.html", "Model catalog", models=summaries, chosen=chosen, providers=providers,
                        modalities=MODALITIES, customizations=CUSTOMIZATIONS,
                        modes={m["modelId"]: _kind(m) for m in summaries})


def _kind(summary: dict[str, Any]) -> str:
    """What a foundation model is to the playground: "text" (it streams text), "embedding", "image", or ""."""
    outputs = summary.get("outputModalities") or []
    if not summary.get("inferenceTypesSupported"):
        return ""  # not invoked itself (a segmenter the image models call for maskPrompt)
    if "TEXT" in outputs and summary.get("responseStreamingSupported"):
        return "text"
    return "embedding" if "EMBEDDING" in outputs else "image" if "IMAGE" in outputs else ""


def _first_mode(kind: str) -> str:
    return next((mode for mode, (_, needs) in MODES.items() if needs == kind), "")


@page("GET", "playground")
def playground(visit: Visit) -> Response:
    """The page is a form; its script streams each answer from the API (ConverseStream, InvokeModel...). Each mode
    offers the models of its kind only (the others are in the list, hidden, for when the mode changes)."""
    summaries = visit.call("bedrock", "ListFoundationModels")["modelSummaries"]
    kinds = {m["modelArn"]: _kind(m) for m in summaries}
    groups: dict[str, list[tuple[str, str]]] = {"text": [], "embedding": [], "image": []}
    for m in summaries:
        if kinds[m["modelArn"]]:
            groups[kinds[m["modelArn"]]].append((m["modelId"], f"{m['modelName']} ({m['modelId']})"))
    provisioned: dict[str, list[tuple[str, str]]] = {"text": [], "embedding": [], "image": []}
    try:
        throughputs = visit.call("bedrock", "ListProvisionedModelThroughputs")["provisionedModelSummaries"]
    except BedrockError:
        throughputs = []  # the playground still works on foundation models
    for t in throughputs:  # a custom model is of its foundation model's kind
        if t["status"] == "InService" and kinds.get(t.get("foundationModelArn", ""), "text"):
            provisioned[kinds.get(t.get("foundationModelArn", ""), "text")].append(
                (t["provisionedModelArn"], f"{t['provisionedModelName']} (provisioned throughput)"))
    options = [(kind, label, choices) for kind, label, choices in (
        ("text", "Text models", groups["text"]), ("embedding", "Embedding models", groups["embedding"]),
        ("image", "Image models", groups["image"]), ("text", "Provisioned throughput", provisioned["text"]),
        ("embedding", "Provisioned embedding models", provisioned["embedding"]),
        ("image", "Provisioned image models", provisioned["image"])) if choices]
    kind_of = {value: kind for kind, _, choices in options for value, _ in choices}
    chosen, mode, notice = visit.query.get("model", ""), visit.query.get("mode", ""), ""
    if mode not in MODES:  # a model alone (the catalog's "Try it"): the mode for its kind
        mode = _first_mode(kind_of.get(chosen, "")) or "chat"
    needs = MODES[mode][1]
    if chosen and kind_of.get(chosen) != needs:
        what = f"an {kind_of[chosen]} model" if kind_of.get(chosen) in ("embedding", "image") else \
            "a text model" if chosen in kind_of else "no model the catalog lists for the playground"
        notice = (f"{chosen} is {what}, and {MODES[mode][0].split(' (')[0].lower()} needs "
                  f"{'an' if needs[0] in 'aeiou' else 'a'} {needs} model: pick one below.")
        chosen = ""
    if not chosen:
        chosen = next((value for value, kind in kind_of.items() if kind == needs), "")
    return visit.render("playground.html", "Playground", options=options, chosen=chosen, mode=mode, modes=MODES,
                        notice=notice)
