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
