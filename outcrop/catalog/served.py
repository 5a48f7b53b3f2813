"""What it takes to serve a model, whatever kind it is: the handle runtime, provisioning and jobs pass around."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from outcrop.catalog.cards import FoundationModel


@dataclass(frozen=True)
class ServedModel:
    """A model to serve: its base's card (formats, limits) and where its weights are."""

    model_arn: str
    card: FoundationModel
    weights: Path
    #: The base model's folder when `weights` is a LoRA adapter.
    base: Path | None = None


#: (account, model id or ARN) -> the model to serve; raises ValidationException for unknown models.
ModelLookup = Callable[[str, str], ServedModel]


def engine_kind(card: FoundationModel) -> str:
    """How the engine loads a card's weights (inference's kinds), decided here once for the runtime, the preload,
    provisioning's warm-up and batch jobs: an image pipeline, CLIP, a text encoder, a cross-encoder, a model that
    reads images, or a causal LM."""
    from outcrop.catalog.service import MULTIMODAL_EMBED_FORMAT, RERANK_FORMAT
    from outcrop.inference.clip import CLIP
    from outcrop.inference.images import IMAGE
    from outcrop.inference.loader import CAUSAL, ENCODER, RERANKER
    from outcrop.inference.segmentation import SEGMENTATION, SEGMENTATION_FORMAT
    from outcrop.inference.vision import VISION

    if card.native_format == SEGMENTATION_FORMAT:  # a mask maker (maskPrompt), not a picture maker
        return SEGMENTATION
    if "IMAGE" in card.output_modalities:
        return IMAGE
    if card.native_format == MULTIMODAL_EMBED_FORMAT:
        return CLIP
    if "EMBEDDING" in card.output_modalities:
        return ENCODER
    if card.native_format == RERANK_FORMAT:
        return RERANKER
    return VISION if "IMAGE" in card.input_modalities else CAUSAL
