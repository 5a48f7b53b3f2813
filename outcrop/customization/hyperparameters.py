"""Hyperparameters of a customization job: Bedrock's names, ranges and defaults, plus Outcrop's own.

They arrive as a map of strings (`{"epochCount": "2", "learningRate": "0.0001"}`); `resolve` checks every key
and value against one table of specs and returns every hyperparameter typed, the given value or the default.
Each spec's `doc` is what the README lists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from outcrop.catalog.cards import FoundationModel, ImageLimits
from outcrop.errors import ValidationException

#: The bound of maxSequenceLength for a model whose card does not say its context (a user-registered one).
UNKNOWN_CONTEXT_BOUND = 4096
DEFAULT_MAX_SEQUENCE_LENGTH = 1024
MIN_SEQUENCE_LENGTH = 32
#: Most Ray Train workers one job may ask for.
MAX_WORKERS = 64


@dataclass(frozen=True)
class Hyperparameter:
    name: str
    kind: str  # int | float | bool | choice
    default: Any
    minimum: int | float | None = None
    maximum: int | float | None = None
    choices: tuple[str, ...] = ()
    doc: str = ""

    def accepted(self) -> str:
        """What a value must be, in words: "an integer from 1 to 10"."""
        if self.kind == "int":
            return f"an integer from {self.minimum} to {self.maximum}"
        if self.kind == "float":
            return f"a number from {self.minimum:g} to {self.maximum:g}"
        if self.kind == "bool":
            return "true or false"
        return f"one of {', '.join(self.choices)}"

    def parse(self, value: Any) -> Any:
        """The typed value of a wire string; ValidationException naming the key and what it accepts."""
        text = (str(value).lower() if isinstance(value, bool) else str(value)).strip()
        problem = "is not accepted"
        if self.kind == "bool":
            if text.lower() in ("true", "false"):
                return text.lower() == "true"
        elif self.kind == "choice":
            if text.lower() in self.choices:
                return text.lower()
        else:
            number = _number(text, integer=self.kind == "int")
            if number is None:
                problem = "is not an integer" if self.kind == "int" else "is not a number"
            elif self.minimum <= number <= self.maximum:
                return number
            else:
                problem = "is out of range"
        raise ValidationException(f"hyperParameters.{self.name}: {str(value)!r} {problem}; "
                                  f"it must be {self.accepted()}")


def _number(text: str, integer: bool) -> int | float | None:
    """"2", "2.0", "1e-4", "0.0001" -> a number; None for anything else (nan and infinity included)."""
    try:
        number = float(text)
    except ValueError:
        return None
    if not math.isfinite(number):
        return None
    if not integer:
        return number
    try:
        return int(text)  # exact, however large
    except ValueError:
        return int(number) if number.is_integer() else None


def is_image_model(model: FoundationModel) -> bool:
    """An image generator: it fine-tunes on image-caption pairs, as Titan Image Generator does."""
    return "IMAGE" in model.output_modalities


def specs_for(model: FoundationModel) -> dict[str, Hyperparameter]:
    """Every hyperparameter a job on `model` takes, by name, in the order the README lists them."""
    if is_image_model(model):
        return image_specs_for(model)
    bound = model.context_length or UNKNOWN_CONTEXT_BOUND
    specs = [
        Hyperparameter("epochCount", "int", 5, 1, 10, doc="Passes over the training data (Bedrock)."),
        Hyperparameter("batchSize", "int", 1, 1, 64, doc="Examples per micro-batch (Bedrock)."),
        Hyperparameter("learningRate", "float", 1e-4, 5e-6, 0.1,
                       doc="Peak learning rate of AdamW, after warmup; it then decays linearly to 0 (Bedrock)."),
        Hyperparameter("learningRateWarmupSteps", "int", 5, 0, 250,
                       doc="Optimizer steps over which the learning rate rises linearly from 0 (Bedrock)."),
        Hyperparameter("fineTuningMethod", "choice", "lora", choices=("lora", "full"),
                       doc="lora trains a low-rank adapter on the attention and MLP projections and keeps the "
                           "base weights frozen; full trains every weight (Outcrop)."),
        Hyperparameter("loraRank", "int", 8, 1, 256, doc="Rank of the LoRA matrices (Outcrop; lora only)."),
        Hyperparameter("loraAlpha", "int", 16, 1, 512,
                       doc="LoRA scaling: the adapter's update is multiplied by loraAlpha / loraRank "
                           "(Outcrop; lora only)."),
        Hyperparameter("loraDropout", "float", 0.05, 0.0, 0.5,
                       doc="Dropout on the LoRA adapter's input (Outcrop; lora only)."),
        Hyperparameter("maxSequenceLength", "int", min(DEFAULT_MAX_SEQUENCE_LENGTH, bound),
                       min(MIN_SEQUENCE_LENGTH, bound), bound,
                       doc="Most tokens in one example, up to the model's context (4096 when the model does not "
                           "say): longer prompt-completion and conversation records fail validation; "
                           "continued pre-training text is cut into windows of this many tokens (Outcrop)."),
        Hyperparameter("packing", "bool", False,
                       doc="Concatenate examples into rows of exactly maxSequenceLength tokens, each example still "
                           "attending only to itself; faster on many short records (Outcrop)."),
        Hyperparameter("gradientAccumulationSteps", "int", 1, 1, 64,
                       doc="Micro-batches per optimizer step: the effective batch is batchSize times this "
                           "(Outcrop)."),
        Hyperparameter("weightDecay", "float", 0.0, 0.0, 1.0, doc="AdamW weight decay (Outcrop)."),
        Hyperparameter("seed", "int", 42, 0, 2**31 - 1,
                       doc="Seed of the adapter's initialization, dropout and the data order: the same job on the "
                           "same machine gives the same losses (Outcrop)."),
        Hyperparameter("workerCount", "int", 1, 1, MAX_WORKERS,
                       doc="Processes that train data-parallel through Ray Train (torch.distributed): on the Ray "
                           "cluster with job_backend = ray, else on a Ray the job starts on its machine. Each "
                           "step's batch is dealt out among them, so the losses are one worker's; more than 1 "
                           "needs `outcrop[ray]` (Outcrop)."),
    ]
    return {spec.name: spec for spec in specs}


def image_specs_for(model: FoundationModel) -> dict[str, Hyperparameter]:
    """An image model's hyperparameters: Titan Image Generator's names (a job is `stepCount` optimizer steps,
    or `epochCount` passes when that is given instead), with lower bounds a single GPU or a CPU can meet."""
    limits = model.image or ImageLimits()
    native = min(limits.default_size)
    specs = [
        Hyperparameter("stepCount", "int", 500, 1, 40_000,
                       doc="Optimizer steps, each on one batch; the data is walked in a new order on every pass "
                           "(Bedrock). Give this or epochCount, not both."),
        Hyperparameter("epochCount", "int", 1, 1, 1000,
                       doc="Passes over the training data, instead of stepCount (Outcrop; by default the job "
                           "counts steps)."),
        Hyperparameter("batchSize", "int", 8, 1, 192,
                       doc="Image-caption pairs per step (Bedrock: 8 to 192; from 1 here, for small GPUs)."),
        Hyperparameter("learningRate", "float", 1e-4, 1e-7, 1.0,
                       doc="Learning rate of AdamW on the LoRA weights, constant (Bedrock's range; the default is "
                           "the usual one for a LoRA, not Titan's 1e-5 for the whole model)."),
        Hyperparameter("loraRank", "int", 8, 1, 256, doc="Rank of the LoRA matrices on the denoiser's attention "
                                                          "projections (Outcrop)."),
        Hyperparameter("loraAlpha", "int", 8, 1, 512,
                       doc="LoRA scaling: the adapter's update is multiplied by loraAlpha / loraRank (Outcrop)."),
        Hyperparameter("resolution", "int", native, limits.min_side, limits.max_side,
                       doc="Side of the square every image is resized and center-cropped to, a multiple of the "
                           "VAE's downscale; the default is the model's native size (Outcrop)."),
        Hyperparameter("seed", "int", 42, 0, 2**31 - 1,
                       doc="Seed of the adapter's initialization, the data order, the noise and the timesteps: the "
                           "same job on the same machine gives the same losses (Outcrop)."),
    ]
    return {spec.name: spec for spec in specs}


def resolve(model: FoundationModel, customization_type: str, given: dict[str, str] | None) -> dict[str, Any]:
    """Every hyperparameter of a job, typed: the given value, checked, or the default."""
    if customization_type not in model.customizations:
        if not model.customizations:
            raise ValidationException(f"Model {model.model_id} does not support customization")
        raise ValidationException(f"Model {model.model_id} does not support {customization_type} "
                                  f"(it supports: {', '.join(model.customizations)})")
    given = {} if given is None else given
    if not isinstance(given, dict):
        raise ValidationException("hyperParameters must be a map of strings")
    specs = specs_for(model)
    unknown = [key for key in given if key not in specs]
    if unknown:
        noun = "key" if len(unknown) == 1 else "keys"
        raise ValidationException(f"hyperParameters: unknown {noun} {', '.join(repr(k) for k in unknown)}; "
                                  f"accepted keys are {', '.join(sorted(specs))}")
    values = {name: spec.parse(given[name]) if name in given else spec.default for name, spec in specs.items()}
    if is_image_model(model):
        return _image_values(model, values, given)
    if values["workerCount"] > 1:
        from outcrop.customization.distributed import ray_installed

        if not ray_installed():
            raise ValidationException(f"hyperParameters.workerCount: {values['workerCount']} workers train through "
                                      "Ray Train, which is not installed here (pip install 'outcrop[ray]')")
    return values


def _image_values(model: FoundationModel, values: dict[str, Any], given: dict[str, str]) -> dict[str, Any]:
    """An image job's values: its length as steps or as epochs (one of the two, whichever was given), and a
    resolution the VAE can halve down to its latents."""
    if "stepCount" in given and "epochCount" in given:
        raise ValidationException("hyperParameters: give stepCount or epochCount, not both")
    del values["epochCount" if "epochCount" not in given else "stepCount"]
    multiple = (model.image or ImageLimits()).multiple
    if values["resolution"] % multiple:
        raise ValidationException(f"hyperParameters.resolution: {values['resolution']} is not a multiple of "
                                  f"{multiple}, the downscale of {model.model_id}'s VAE")
    return values
