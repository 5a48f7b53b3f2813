"""Images by reverse diffusion: diffusers pipelines loaded from folders, and the batches they denoise.

A pipeline folder (model_index.json: Stable Diffusion 1.x/2.x, SD-Turbo, SDXL, SD 3.x) loads once as its
text-to-image pipeline; the image-to-image and inpainting pipelines are views of the same components
(`from_pipe`), so a model costs its weights once whatever it is asked. A fine-tuned model is a LoRA folder
(diffusers' `pytorch_lora_weights.safetensors`) fused into a private copy of its base pipeline.

`ImageScheduler` is the image side of continuous batching: requests wait in one queue, and each step takes
the oldest one and every queued request of the same shape (task, size, steps, guidance, strength) into one
pipeline call, up to `max_batch` images. Every image has its own seeded generator, so an image depends on
its seed and its request, not on the batch it ran in. Knows tensors and PIL images, nothing of Bedrock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from outcrop.errors import Cancelled, ThrottlingException
from outcrop.inference.loader import LoadedModel, default_device
from outcrop.inference.scheduler import THROTTLED

log = logging.getLogger(__name__)

IMAGE = "image"
#: What a request asks the pipeline to do.
TEXT_TO_IMAGE = "text-to-image"
IMAGE_TO_IMAGE = "image-to-image"
INPAINT = "inpaint"
#: The LoRA file diffusers writes (`save_lora_weights`) and reads (`load_lora_weights`).
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
#: How long the worker lets a batch gather after the first request arrives: concurrent clients' requests land
#: within milliseconds of each other, and a denoising step costs far more than this wait.
GATHER_S = 0.01


@dataclass(frozen=True)
class ImageRequest:
    """One request: `len(seeds)` images of one prompt. `mask` is white where the image is to be repainted."""

    task: str
    prompt: str
    width: int
    height: int
    steps: int
    guidance: float
    seeds: tuple[int, ...]
    negative_prompt: str = ""
    init_image: Any = None  # PIL.Image for IMAGE_TO_IMAGE and INPAINT
    mask: Any = None  # PIL.Image ("L") for INPAINT
    strength: float = 1.0
    #: A diffusers scheduler class name to denoise with instead of the pipeline's own ("": its own).
    sampler: str = ""
    #: INPAINT: paste the request's own pixels back outside the mask, so that only the masked area changes (the
    #: VAE's round trip alters every pixel a little); False lets the model blend the borders too.
    keep_unmasked: bool = True

    @property
    def shape(self) -> tuple:
        """Requests with the same shape denoise in one pipeline call."""
        return self.task, self.width, self.height, self.steps, self.guidance, self.strength, self.sampler


@dataclass(frozen=True)
class GeneratedImage:
    image: Any  # PIL.Image, RGB
    seed: int
    #: The pipeline's safety checker flagged it (the image is then blanked by diffusers).
    filtered: bool = False


@dataclass(eq=False)
class _Job:
    request: ImageRequest
    cancelled: threading.Event
    done: threading.Event = field(default_factory=threading.Event)
    started: threading.Event = field(default_factory=threading.Event)
    images: list[GeneratedImage] | None = None
    error: BaseException | None = None

    def result(self) -> list[GeneratedImage]:
        while not self.done.wait(0.1):
            if self.cancelled.is_set() and not self.started.is_set():
                break  # the worker drops it; the caller need not wait for that
        if self.error is not None:
            raise self.error
        if self.images is None:
            raise Cancelled("the request was cancelled")
        return self.images


def _dtype(device: torch.device) -> torch.dtype:
    # Half precision on GPUs (diffusion models are published and run in it); fp32 on CPUs, where fp16 is slow.
    return torch.float16 if device.type == "cuda" else torch.float32


def load_image_pipeline(path: Path, device: torch.device | None = None, base: Path | None = None) -> LoadedModel:
    """A diffusers pipeline folder, or a LoRA folder fused into its `base` pipeline, ready to generate."""
    from diffusers import AutoPipelineForText2Image

    device = device or default_device()
    lora = (path / LORA_WEIGHTS).is_file()
    if lora and base is None:
        raise ValueError(f"{path} is a LoRA adapter; loading it needs its base pipeline's folder")
    pipeline = AutoPipelineForText2Image.from_pretrained(base if lora else path, dtype=_dtype(device))
    if lora:
        pipeline.load_lora_weights(str(path), weight_name=LORA_WEIGHTS, adapter_name="custom")
        pipeline.fuse_lora()
        pipeline.unload_lora_weights()  # the fused weights stay; the adapter's own copies go
    pipeline = pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)
    nbytes = sum(p.numel() * p.element_size() for module in pipeline.components.values()
                 if isinstance(module, torch.nn.Module) for p in module.parameters())
    tokenizer = getattr(pipeline, "tokenizer", None)
    limit = getattr(tokenizer, "model_max_length", 77) if tokenizer is not None else 77
    return LoadedModel(IMAGE, pipeline, tokenizer, device, limit if 0 < limit < 10**6 else 77, nbytes=nbytes,
                       extra={"vae_scale": getattr(pipeline, "vae_scale_factor", 8)})


def _task_pipeline(loaded: LoadedModel, task: str):
    """The pipeline for a task, made once from the loaded one's components (no second copy of the weights)."""
    if task == TEXT_TO_IMAGE:
        return loaded.model
    key = f"pipeline:{task}"
    if key not in loaded.extra:
        from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

        make = AutoPipelineForImage2Image if task == IMAGE_TO_IMAGE else AutoPipelineForInpainting
        try:
            pipeline = make.from_pipe(loaded.model)
        except ValueError as exc:  # this family has no such pipeline in diffusers
            raise NotImplementedError(f"{type(loaded.model).__name__} cannot {task}: {exc}") from None
        pipeline.set_progress_bar_config(disable=True)
        loaded.extra[key] = pipeline
    return loaded.extra[key]


def check(loaded: LoadedModel, request: ImageRequest) -> None:
    """Refuse what this pipeline cannot do before the request queues: a task its family has no pipeline for, a
    sampler its noise schedule is not made for (a flow-matching model takes no DDIM). ValueError says why."""
    try:
        pipeline = _task_pipeline(loaded, request.task)
    except NotImplementedError as exc:
        raise ValueError(str(exc)) from None
    if request.sampler:
        import diffusers

        if getattr(diffusers, request.sampler) not in pipeline.scheduler.compatibles:
            raise ValueError(f"{type(pipeline).__name__} denoises with {type(pipeline.scheduler).__name__}, which "
                             f"{request.sampler} cannot stand in for")


def generate(loaded: LoadedModel, requests: list[ImageRequest],
             interrupted=lambda: False) -> list[list[GeneratedImage]]:
    """Run requests of one shape as one pipeline call; each request's images, in order.

    `interrupted` is asked after each denoising step: when it answers True the call stops there (everyone in the
    batch has gone) and raises Cancelled."""
    first = requests[0]
    assert all(r.shape == first.shape for r in requests), "a batch holds requests of one shape"
    pipeline = _task_pipeline(loaded, first.task)
    prompts, negatives, generators, images, masks = [], [], [], [], []
    for request in requests:
        for seed in request.seeds:
            prompts.append(request.prompt)
            negatives.append(request.negative_prompt)
            generators.append(torch.Generator(device="cpu").manual_seed(seed))
            images.append(request.init_image.convert("RGB") if request.init_image is not None else None)
            masks.append(request.mask)
    arguments: dict[str, Any] = {
        "prompt": prompts, "num_inference_steps": first.steps, "guidance_scale": first.guidance,
        "generator": generators, "output_type": "pil"}
    # A negative prompt only means something under classifier-free guidance; an empty one is the unconditional.
    if first.guidance > 1:
        arguments["negative_prompt"] = negatives
    if first.task == TEXT_TO_IMAGE:
        arguments |= {"height": first.height, "width": first.width}
    else:
        arguments |= {"image": images, "strength": first.strength}
    if first.task == INPAINT:
        arguments |= {"mask_image": masks, "height": first.height, "width": first.width}

    def step_end(pipe, step, timestep, tensors):
        if interrupted():
            # Out of the call at once: diffusers' own `_interrupt` skips the remaining steps but still decodes the
            # latents, which for a large image costs as much as several steps, for no one.
            raise Cancelled("every request in the batch was cancelled")
        return tensors

    arguments["callback_on_step_end"] = step_end
    own = pipeline.scheduler
    if first.sampler:  # a scheduler of another family over the same trained noise schedule
        import diffusers

        pipeline.scheduler = getattr(diffusers, first.sampler).from_config(own.config)
    try:
        with torch.inference_mode():
            # Generators on the CPU keep a seed's noise the same on every device; the pipeline moves it.
            output = pipeline(**arguments)
    finally:
        pipeline.scheduler = own
    if interrupted():
        raise Cancelled("every request in the batch was cancelled")
    flags = getattr(output, "nsfw_content_detected", None) or [False] * len(output.images)
    made, at = [], 0
    for request in requests:
        made.append([GeneratedImage(_finish(request, output.images[at + i]), seed, bool(flags[at + i]))
                     for i, seed in enumerate(request.seeds)])
        at += len(request.seeds)
    return made


def _finish(request: ImageRequest, image):
    """The pipeline's image as the caller gets it: RGB, and for inpainting the untouched pixels pasted back."""
    image = image.convert("RGB")
    if request.task == INPAINT and request.keep_unmasked:
        from PIL import Image

        original = request.init_image.convert("RGB")
        image = Image.composite(image.resize(original.size), original, request.mask)
    return image


class ImageScheduler:
    """Requests of one shape denoise together; the rest wait their turn, oldest first."""

    def __init__(self, loaded: LoadedModel, max_batch: int = 8, max_queue_wait_s: float | None = None) -> None:
        self.loaded = loaded
        #: The most images one pipeline call makes (a request's own images count; one request is never split).
        self.max_batch = max_batch
        #: Seconds a request may wait for its batch to start before ThrottlingException; None: no bound.
        self.max_queue_wait_s = max_queue_wait_s
        self._waiting: deque[_Job] = deque()
        self._running: list[_Job] = []
        self._wake = threading.Condition()
        self._closed = False
        #: Held for each pipeline call (tests hold it to keep the worker from starting the next batch).
        self.step_lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="outcrop-images", daemon=True)
        self._thread.start()

    def submit(self, request: ImageRequest, cancelled: threading.Event | None = None) -> _Job:
        """Queue a request; `result()` on the answer waits for its images. With a bound on the queue, this
        returns once its batch has started, or raises ThrottlingException (the request used no compute)."""
        job = _Job(request, cancelled if cancelled is not None else threading.Event())
        with self._wake:
            if self._closed:
                raise RuntimeError("the model was unloaded")
            self._waiting.append(job)
            self._wake.notify()
        if self.max_queue_wait_s is not None:
            deadline = time.monotonic() + self.max_queue_wait_s
            # Started, or settled without starting (cancelled while it waited, the model unloaded): `result` says.
            while not (job.started.is_set() or job.done.is_set() or job.cancelled.is_set()):
                if time.monotonic() >= deadline:
                    with self._wake:
                        if job in self._waiting:
                            self._waiting.remove(job)
                            raise ThrottlingException(THROTTLED)
                    break
                job.started.wait(0.05)
        return job

    @property
    def active(self) -> int:
        return len(self._waiting) + len(self._running)

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout=30)
        for job in [*self._waiting, *self._running]:
            if not job.done.is_set():
                job.error = RuntimeError("the model was unloaded")
                job.done.set()

    def _take(self) -> list[_Job]:
        """The oldest request and every waiting request of its shape that fits in the batch."""
        first = self._waiting.popleft()
        batch, images = [first], len(first.request.seeds)
        for job in list(self._waiting):
            if job.cancelled.is_set():
                continue  # the loop drops it before the next batch
            if job.request.shape == first.request.shape and images + len(job.request.seeds) <= self.max_batch:
                self._waiting.remove(job)
                batch.append(job)
                images += len(job.request.seeds)
        return batch

    def _loop(self) -> None:
        while True:
            with self._wake:
                while True:
                    for job in [j for j in self._waiting if j.cancelled.is_set()]:
                        self._waiting.remove(job)
                        job.done.set()
                    if self._closed or self._waiting:
                        break
                    self._wake.wait()
                if self._closed:
                    return
            time.sleep(GATHER_S)
            with self._wake:
                if self._closed:
                    return
                for job in [j for j in self._waiting if j.cancelled.is_set()]:
                    self._waiting.remove(job)
                    job.done.set()
                if not self._waiting:
                    continue
                batch = self._take()
                self._running = batch
                for job in batch:
                    job.started.set()
            try:
                with self.step_lock:
                    made = generate(self.loaded, [job.request for job in batch],
                                    interrupted=lambda jobs=batch: all(j.cancelled.is_set() for j in jobs))
                for job, images in zip(batch, made, strict=True):
                    job.images = images
            except BaseException as exc:  # noqa: BLE001 - handed to every caller in the batch
                if not isinstance(exc, Cancelled):
                    log.warning("an image batch of %d requests failed: %r", len(batch), exc)
                for job in batch:
                    job.error = exc
            finally:
                with self._wake:
                    self._running = []
                for job in batch:
                    job.done.set()
