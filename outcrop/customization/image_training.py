"""Fine-tune a text-to-image model as Bedrock's Titan Image Generator customization does: image-caption pairs in,
a LoRA on the denoiser out. The image counterpart of `datasets` (the data) and `trainer` (the loop), read top
to bottom.

The data is JSON Lines, one pair a line: `{"image-ref": "s3://bucket/key.png", "caption": "..."}`. Every image is
read through the job's role, decoded and checked while the dataset is validated, so a bad line fails the job
before training starts, named by its line as `datasets` names text lines.

What one step does, as diffusers' `train_text_to_image_lora.py` does: take a batch of pairs, draw a latent from
each image's VAE posterior (`latent_dist.sample() * scaling_factor`), noise it at a random timestep of the
training schedule (`DDPMScheduler.add_noise`), ask the UNet, conditioned on the caption's text-encoder states,
for the noise (or the velocity, for v-prediction models such as SD 2.x at 768), and step AdamW on the mean
squared error, through the LoRA weights only (every base weight is frozen).

Decisions:
- Stable Diffusion 1.x and 2.x only (`StableDiffusionPipeline` folders): SDXL conditions on two text encoders and
  on size and crop embeddings, SD 3 is a transformer trained by flow matching. Training either with this loop
  would be silently wrong, so `check_base` refuses them when the job is created.
- Each image is encoded by the VAE once: its posterior's mean and standard deviation are kept (on the CPU), and
  every step samples a fresh latent from them, which is what `latent_dist.sample()` would do, without running
  the encoder each time. The images themselves are read twice (once to validate, once to encode) and never held
  all at once: a dataset's images may not fit in memory, their latents do (128 KB a 512 px image).
- The VAE runs in fp32 (SD's VAE overflows in fp16, and it runs once per image); on CUDA the UNet and the text
  encoder run in bf16 with the LoRA weights in fp32, on CPU everything is fp32.
- Noise, timesteps and latent samples come from one CPU generator seeded by `seed`, so a job repeats itself on
  any device, and resumes exactly: its state is in every checkpoint. The data order of pass e is a permutation
  seeded with `seed + e`. The validation loss draws from a generator of its own, reseeded every time, so every
  evaluation of it noises the same latents at the same timesteps and its values compare.
- Validation and checkpoints happen `EVALUATIONS` times a job (and validation at its end): an image job of
  stepCount steps has no natural epoch (Bedrock's default is 500 steps, of one pass each on 8 images).
- The LoRA is saved as diffusers saves it (`save_lora_weights` of the pipeline's class, with the adapter's
  config as metadata so that loraAlpha survives), so `load_lora_weights` loads it, here and anywhere.

The work dir:

    checkpoints/step-<n>/state.pt   the LoRA weights, optimizer, generator, counters and metrics so far
    model/                          pytorch_lora_weights.safetensors, the custom model
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from outcrop.customization import datasets
from outcrop.customization.datasets import DatasetError, RecordError
from outcrop.customization.trainer import atomic_dir, latest_checkpoint
from outcrop.errors import AccessDeniedException, ResourceNotFoundException, ValidationException
from outcrop.inference.images import LORA_WEIGHTS
from outcrop.inference.loader import _dtype, default_device
from outcrop.platform.objectstore import S3Uri

log = logging.getLogger(__name__)

IMAGE_REF, CAPTION = "image-ref", "caption"
#: Bedrock's limit on one training image.
MAX_IMAGE_BYTES = 50 << 20
#: Outcrop's bounds on an image's sides: smaller teaches nothing at any resolution a model generates; larger
#: is a decompression bomb more likely than a photograph.
MIN_IMAGE_SIDE, MAX_IMAGE_SIDE = 64, 8192
#: Bedrock's image formats.
IMAGE_FORMATS = ("PNG", "JPEG")
#: Bedrock's most image-caption pairs in a Titan Image Generator job's training data.
MAX_TRAINING_PAIRS = 10_000
#: The pipelines this loop trains correctly (see the module docstring).
TRAINABLE_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline")
#: Where the LoRA goes: the attention projections of the UNet, as diffusers' own LoRA script puts it.
LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
#: How many times a job measures its validation loss and saves a checkpoint.
EVALUATIONS = 10
ENCODE_BATCH = 8
MAX_GRAD_NORM = 1.0


# --- the base ---------------------------------------------------------------------------------------


def check_base(folder: Path, model_id: str) -> str:
    """The pipeline class of a base this loop can fine-tune; a ValidationException that says which can otherwise."""
    try:
        index = json.loads((Path(folder) / "model_index.json").read_text())
    except (OSError, ValueError):
        raise ValidationException(f"The base model {model_id} has no readable diffusers pipeline "
                                  f"(model_index.json) in {folder}") from None
    family = index.get("_class_name") or "unnamed"
    if family not in TRAINABLE_PIPELINES or not index.get("unet"):
        raise ValidationException(
            f"The base model {model_id} is a {family} pipeline, which cannot be fine-tuned here: image "
            f"fine-tuning trains Stable Diffusion 1.x and 2.x pipelines ({', '.join(TRAINABLE_PIPELINES)}) only")
    return family


@dataclass
class Denoiser:
    """What training touches of a pipeline: the frozen parts and the UNet that carries the LoRA."""

    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    noise_scheduler: Any  # DDPMScheduler: the training schedule of noise levels

    @property
    def native_resolution(self) -> int:
        """The side the model was trained at: its latent size times the VAE's downscale."""
        return self.unet.config.sample_size * 2 ** (len(self.vae.config.block_out_channels) - 1)


def load_denoiser(folder: Path, device: torch.device) -> Denoiser:
    """A Stable Diffusion folder's parts, every weight frozen."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    dtype = _dtype(device)
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=dtype).to(device)
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae").to(device)
    text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", dtype=dtype).to(device)
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False)
    vae.eval()
    text_encoder.eval()
    return Denoiser(unet, vae, text_encoder, load_tokenizer(folder),
                    DDPMScheduler.from_pretrained(folder, subfolder="scheduler"))


def load_tokenizer(folder: Path) -> Any:
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")


# --- the data ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImagePair:
    caption: str
    #: Reads and decodes the image (RGB) when it is needed, so that a dataset's images are never all in memory.
    image: Callable[[], Any]
    line: int = 0


def read_pairs(lines: Iterable[bytes | str], *, source: str, store: Any, tokenizer: Any, min_records: int,
               max_records: int) -> list[ImagePair]:
    """Validate an image dataset line by line, reading every image once through `store` (the job's role).

    Every problem is a DatasetError naming `source` and the line, counted from 1, blank lines included."""
    pairs: list[ImagePair] = []
    too_many = False
    for number, raw in enumerate(lines, start=1):
        try:
            text = datasets.decode_line(raw, number)
            if not text.strip():
                continue
            if len(pairs) == max_records:
                too_many = True
                break
            pairs.append(_pair(datasets.parse_record(text), store, tokenizer, f"{source} line {number}", number))
        except RecordError as exc:
            raise DatasetError(f"{source} line {number}: {exc}") from None
    datasets.check_count(source, len(pairs), min_records, max_records, too_many)
    return pairs


def _pair(record: dict[str, Any], store: Any, tokenizer: Any, where: str, number: int) -> ImagePair:
    missing = [key for key in (IMAGE_REF, CAPTION) if key not in record]
    if missing:
        raise RecordError(f"missing key {', '.join(repr(k) for k in missing)}; an image record is "
                          f'{{"{IMAGE_REF}": "s3://bucket/key.png", "{CAPTION}": "..."}}')
    extra = [key for key in record if key not in (IMAGE_REF, CAPTION)]
    if extra:
        noun = "key" if len(extra) == 1 else "keys"
        raise RecordError(f"unknown {noun} {', '.join(repr(k) for k in extra)} in an image record "
                          f"(its keys are {IMAGE_REF}, {CAPTION})")
    ref, caption = record[IMAGE_REF], record[CAPTION]
    if not isinstance(ref, str):
        raise RecordError(f'"{IMAGE_REF}" must be a string, not {datasets.json_type(ref)}')
    try:
        uri = S3Uri.parse(ref)
    except ValidationException as exc:
        raise RecordError(f'"{IMAGE_REF}" is {exc.message}') from None
    if not isinstance(caption, str):
        raise RecordError(f'"{CAPTION}" must be a string, not {datasets.json_type(caption)}')
    if not caption.strip():
        raise RecordError(f'"{CAPTION}" is empty')
    tokens = len(tokenizer(caption).input_ids)  # with the start and end tokens, as the text encoder reads it
    if tokens > tokenizer.model_max_length:
        raise RecordError(f"the caption is {tokens} tokens; the model's text encoder reads at most "
                          f"{tokenizer.model_max_length} (start and end included), so the rest would be cut: "
                          "shorten it")
    read = functools.partial(load_image, store, uri, where)
    read()  # decoded now, so that a bad image fails validation, not training
    return ImagePair(caption, read, number)


def load_image(store: Any, uri: S3Uri, where: str) -> Any:
    """The image at `uri`, read as the store's principal, decoded and upright, in RGB (transparency on white)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    def bad(problem: str) -> DatasetError:
        return DatasetError(f"{where}: {uri} {problem}")

    try:
        size = store.head(uri).size
        if size > MAX_IMAGE_BYTES:
            raise bad(f"is {size:,} bytes, over the limit of {MAX_IMAGE_BYTES:,} bytes for an image")
        data = store.get_bytes(uri)
    except ResourceNotFoundException:
        raise bad("does not exist") from None
    except AccessDeniedException:
        raise bad("cannot be read by the job's role (s3:GetObject is not allowed)") from None
    except ValidationException as exc:
        raise bad(f"is not an object's address: {exc.message}") from None
    try:
        with Image.open(io.BytesIO(data)) as opened:
            if opened.format not in IMAGE_FORMATS:
                raise bad(f"is a {opened.format} image; images must be {' or '.join(IMAGE_FORMATS)}")
            width, height = opened.size
            if min(width, height) < MIN_IMAGE_SIDE or max(width, height) > MAX_IMAGE_SIDE:
                raise bad(f"is {width}x{height} pixels; each side must be from {MIN_IMAGE_SIDE} to "
                          f"{MAX_IMAGE_SIDE} pixels")
            opened.load()
            image = ImageOps.exif_transpose(opened)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        kind = "cannot be decoded" if isinstance(exc, UnidentifiedImageError) else f"is damaged ({exc})"
        raise bad(f"{kind}: it is not a PNG or JPEG image that decodes") from None
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image.convert("RGBA"))
    return image.convert("RGB")


def to_pixels(image: Any, resolution: int) -> torch.Tensor:
    """The image resized so that its short side is `resolution`, center-cropped square, as (3, r, r) in [-1, 1]."""
    import numpy as np
    from PIL import Image

    width, height = image.size
    scale = resolution / min(width, height)
    size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    resized = image.resize(size, Image.Resampling.BILINEAR)
    left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    square = resized.crop((left, top, left + resolution, top + resolution))
    return torch.from_numpy(np.asarray(square, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1.0


@dataclass
class Encoded:
    """Pairs as training reads them: each image's latent posterior and each caption's token ids (CPU tensors)."""

    mean: torch.Tensor  # (n, 4, h, w)
    std: torch.Tensor
    input_ids: torch.Tensor  # (n, model_max_length)

    def __len__(self) -> int:
        return len(self.input_ids)


@torch.no_grad()
def encode(denoiser: Denoiser, pairs: Sequence[ImagePair], resolution: int) -> Encoded:
    """Every image through the VAE's encoder once, `ENCODE_BATCH` at a time; every caption tokenized."""
    device = denoiser.vae.device
    means, stds = [], []
    for start in range(0, len(pairs), ENCODE_BATCH):
        pixels = torch.stack([to_pixels(pair.image(), resolution) for pair in pairs[start:start + ENCODE_BATCH]])
        posterior = denoiser.vae.encode(pixels.to(device)).latent_dist
        means.append(posterior.mean.float().cpu())
        stds.append(posterior.std.float().cpu())
    tokenizer = denoiser.tokenizer
    ids = tokenizer([pair.caption for pair in pairs], padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    return Encoded(torch.cat(means), torch.cat(stds), ids)


# --- the loss ---------------------------------------------------------------------------------------


def denoising_loss(denoiser: Denoiser, data: Encoded, rows: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """The mean squared error of the UNet's prediction on these rows, noised with draws from `generator`."""
    rows = list(rows)
    mean, std = data.mean[rows], data.std[rows]
    schedule = denoiser.noise_scheduler
    # Drawn on the CPU in a fixed order, so that the same seed gives the same draws on any device.
    sample = torch.randn(mean.shape, generator=generator)
    noise = torch.randn(mean.shape, generator=generator)
    timesteps = torch.randint(0, schedule.config.num_train_timesteps, (len(rows),), generator=generator)
    unet = denoiser.unet
    device = unet.device
    latents = ((mean + std * sample) * denoiser.vae.config.scaling_factor).to(device)
    noise, timesteps = noise.to(device), timesteps.to(device)
    noisy = schedule.add_noise(latents, noise, timesteps)
    kind = schedule.config.prediction_type
    if kind == "epsilon":
        target = noise
    elif kind == "v_prediction":
        target = schedule.get_velocity(latents, noise, timesteps)
    elif kind == "sample":
        target = latents
    else:
        raise ValueError(f"unknown prediction type {kind!r} in the scheduler's config")
    with torch.no_grad():
        states = denoiser.text_encoder(data.input_ids[rows].to(device))[0]
    predicted = unet(noisy.to(unet.dtype), timesteps, states.to(unet.dtype)).sample
    return F.mse_loss(predicted.float(), target.float())


@torch.no_grad()
def validation_loss(denoiser: Denoiser, data: Encoded, batch_size: int, seed: int) -> float:
    """The mean loss over every pair, with the same noise and timesteps whenever it is asked (`seed`)."""
    generator = torch.Generator().manual_seed(seed)
    total = 0.0
    for start in range(0, len(data), batch_size):
        rows = range(start, min(len(data), start + batch_size))
        total += denoising_loss(denoiser, data, rows, generator).item() * len(rows)
    return total / len(data)


# --- the LoRA ---------------------------------------------------------------------------------------


def add_lora(unet: Any, rank: int, alpha: int) -> list[torch.nn.Parameter]:
    """A fresh LoRA on the UNet's attention (B at zero: the model starts as the base); its weights, in fp32."""
    from peft import LoraConfig

    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=LORA_TARGETS))
    weights = [p for p in unet.parameters() if p.requires_grad]
    for weight in weights:
        weight.data = weight.data.float()  # on a bf16 base: Adam's small updates must not round away
    return weights


def save_lora(unet: Any, pipeline_class: str, folder: Path) -> None:
    """`pytorch_lora_weights.safetensors` in `folder`, as diffusers' own training scripts write it."""
    import diffusers
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    getattr(diffusers, pipeline_class).save_lora_weights(
        folder, unet_lora_layers=layers, weight_name=LORA_WEIGHTS, safe_serialization=True,
        unet_lora_adapter_metadata=unet.peft_config["default"].to_dict())


# --- configuration, progress, result ----------------------------------------------------------------


@dataclass(frozen=True)
class ImageTrainingConfig:
    steps: int | None = None  # stepCount, or
    epochs: int | None = None  # epochCount: exactly one of the two
    batch_size: int = 8
    learning_rate: float = 1e-4
    lora_rank: int = 8
    lora_alpha: int = 8
    resolution: int = 0  # 0: the model's native resolution
    seed: int = 42

    def __post_init__(self) -> None:
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("give the job's length as steps or as epochs, exactly one of them")
        if min(self.steps or self.epochs, self.batch_size, self.lora_rank, self.lora_alpha) < 1:
            raise ValueError("steps, epochs, batch size, LoRA rank and alpha must be at least 1")
        if not self.learning_rate > 0 or self.resolution < 0:
            raise ValueError("the learning rate must be positive and the resolution not negative")

    @classmethod
    def from_hyperparameters(cls, values: dict[str, Any]) -> ImageTrainingConfig:
        """From `hyperparameters.resolve`'s values for an image model (typed and checked there)."""
        return cls(steps=values.get("stepCount"), epochs=values.get("epochCount"), batch_size=values["batchSize"],
                   learning_rate=values["learningRate"], lora_rank=values["loraRank"],
                   lora_alpha=values["loraAlpha"], resolution=values["resolution"], seed=values["seed"])


@dataclass
class Progress:
    """What the job shows while training; handed to `on_progress` after every optimizer step."""

    step: int
    total_steps: int
    epoch: int
    epochs: int
    loss: float
    learning_rate: float
    images_per_second: float
    eta_seconds: float

    @property
    def percent(self) -> float:
        return 100.0 * self.step / self.total_steps if self.total_steps else 100.0


@dataclass
class ImageTrainingResult:
    steps: int
    epochs_completed: int
    stopped: bool
    step_metrics: list[tuple[int, int, float]]  # (step, epoch, training loss), one per optimizer step
    validation_metrics: list[tuple[int, int, float]]  # (step, epoch, validation loss), EVALUATIONS a job
    images: int  # images trained on, all steps (an image seen twice counts twice)
    seconds: float  # this call's wall time
    model_dir: Path | None  # the LoRA folder; None when stopped (a stopped job makes no model, as on Bedrock)


# --- the loop ---------------------------------------------------------------------------------------


def train(base_dir: Path, pairs: Sequence[ImagePair], validation_pairs: Sequence[ImagePair] | None,
          config: ImageTrainingConfig, work_dir: Path, *,
          on_progress: Callable[[Progress], None] = lambda progress: None,
          should_stop: Callable[[], bool] = lambda: False,
          device: torch.device | None = None) -> ImageTrainingResult:
    """Train a LoRA for the pipeline in `base_dir` on the pairs; it goes to `work_dir/model`.

    Resumes from `work_dir/checkpoints` when a checkpoint is there. `should_stop` is asked before every step."""
    started = time.perf_counter()
    device = device or default_device()
    family = check_base(base_dir, str(base_dir))
    checkpoints = Path(work_dir) / "checkpoints"
    checkpoint = latest_checkpoint(checkpoints, prefix="step")

    # 1. The model, with a fresh LoRA (seeded first: its initialization repeats), and the data, encoded.
    torch.manual_seed(config.seed)
    denoiser = load_denoiser(Path(base_dir), device)
    lora = add_lora(denoiser.unet, config.lora_rank, config.lora_alpha)
    denoiser.unet.train()
    resolution = config.resolution or denoiser.native_resolution
    data = encode(denoiser, pairs, resolution)
    held_out = encode(denoiser, validation_pairs, resolution) if validation_pairs else None

    # 2. How long: steps, or passes over the data; when to measure and save.
    steps_per_epoch = math.ceil(len(data) / config.batch_size)
    total_steps = config.steps or steps_per_epoch * config.epochs
    epochs = math.ceil(total_steps / steps_per_epoch)
    interval = math.ceil(total_steps / EVALUATIONS)

    # 3. The optimizer (AdamW with torch's defaults, diffusers' script's too) and the draws; from the checkpoint.
    optimizer = torch.optim.AdamW(lora, lr=config.learning_rate)
    generator = torch.Generator().manual_seed(config.seed)
    step, images = 0, 0
    step_metrics: list[tuple[int, int, float]] = []
    validation_metrics: list[tuple[int, int, float]] = []
    if checkpoint:
        state = torch.load(checkpoint / "state.pt", weights_only=True)
        if state["config"] != dataclasses.asdict(config) or state["total_steps"] != total_steps:
            raise ValueError(f"{checkpoint} was made with other settings or data; remove it to start over")
        with torch.no_grad():
            for weight, saved in zip(lora, state["lora"], strict=True):
                weight.copy_(saved)
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        step, images = state["step"], state["images"]
        step_metrics, validation_metrics = state["step_metrics"], state["validation_metrics"]
        log.info("resuming from %s at step %d", checkpoint, step)

    # 4. Train.
    stopped = False
    session_steps, session_images = 0, 0
    loop_started = time.perf_counter()
    orders: dict[int, list[int]] = {}
    while step < total_steps:
        if should_stop():
            stopped = True
            break
        epoch, index = divmod(step, steps_per_epoch)
        epoch += 1
        if epoch not in orders:
            orders = {epoch: torch.randperm(len(data), generator=torch.Generator().manual_seed(
                config.seed + epoch)).tolist()}
        rows = orders[epoch][index * config.batch_size:(index + 1) * config.batch_size]
        loss = denoising_loss(denoiser, data, rows, generator)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lora, MAX_GRAD_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        step += 1
        session_steps += 1
        images += len(rows)
        session_images += len(rows)
        loss_value = loss.item()
        step_metrics.append((step, epoch, loss_value))
        elapsed = time.perf_counter() - loop_started
        on_progress(Progress(step, total_steps, epoch, epochs, loss_value, config.learning_rate,
                             session_images / elapsed if elapsed > 0 else 0.0,
                             elapsed / session_steps * (total_steps - step)))

        # 5. Every `interval` steps: the validation loss, then a checkpoint to resume from.
        if step % interval and step < total_steps:
            continue
        if held_out is not None:
            validation_metrics.append((step, epoch, validation_loss(denoiser, held_out, config.batch_size,
                                                                    config.seed)))
        if step < total_steps:
            _save_checkpoint(checkpoints, step, {
                "config": dataclasses.asdict(config), "total_steps": total_steps, "step": step, "images": images,
                "step_metrics": step_metrics, "validation_metrics": validation_metrics,
                "lora": [weight.detach().cpu() for weight in lora], "optimizer": optimizer.state_dict(),
                "generator": generator.get_state()})

    # 6. The LoRA, as diffusers writes it: the custom model.
    model_dir = None
    if not stopped:
        model_dir = Path(work_dir) / "model"
        with atomic_dir(model_dir) as staging:
            save_lora(denoiser.unet, family, staging)
    epochs_completed = step // steps_per_epoch
    return ImageTrainingResult(step, epochs_completed, stopped, step_metrics, validation_metrics, images,
                               time.perf_counter() - started, model_dir)


def _save_checkpoint(checkpoints: Path, step: int, state: dict[str, Any]) -> None:
    """`step-<n>/state.pt`, atomically; then every older checkpoint goes."""
    target = checkpoints / f"step-{step}"
    with atomic_dir(target) as staging:
        torch.save(state, staging / "state.pt")
    for other in checkpoints.iterdir():
        if other != target:
            shutil.rmtree(other, ignore_errors=True)
