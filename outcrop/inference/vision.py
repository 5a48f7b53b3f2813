"""Vision-language models: text and images in, text out, one request at a time.

A folder of any `AutoModelForImageTextToText` architecture (SmolVLM/Idefics3, Qwen2-VL, LLaVA...) loads as its
processor (tokenizer, image processor, and the chat template that places each image's tokens) and its model.

The continuous-batching scheduler is text-only: joining prompts that carry images into one KV cache would
mean running each architecture's vision tower and position scheme (Qwen2-VL's 3-D rope) by hand. So a
request runs alone, under the deployment's lock, through the model's own `generate`. Its tokens still go
through the scheduler's `emit` into a `GenerationStream`, and its sampling is the scheduler's
(`sample_batch` with the request's seeded generator, and its grammar's mask): stop sequences, budgets,
seeds, tool calls and cancellation behave as they do in the batch. Knows tensors and PIL images, nothing
of Bedrock.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from outcrop.errors import ThrottlingException, ValidationException
from outcrop.inference.grammar import Grammars
from outcrop.inference.loader import LoadedModel, _context_length, _dtype, _eos_ids, default_device
from outcrop.inference.sampling import SamplingParams, sample_batch
from outcrop.inference.scheduler import THROTTLED, GenerationStream, _leave_cancelled, _Sequence, emit

if TYPE_CHECKING:  # the engine imports this module (its loaders)
    from outcrop.inference.engine import Deployment

VISION = "vision"
#: Where an image sits in a message's text until the chat template renders it (runtime/multimodal.py puts it
#: there for each image block). Random per process, so no caller's text can forge one.
IMAGE_MARKER = f"<outcrop-image-{secrets.token_hex(8)}>"
#: How often a request waiting for the model looks at its cancel flag.
_POLL_S = 0.05


def load_vision_model(path: Path, device: torch.device | None = None) -> LoadedModel:
    """A vision-language model folder, its processor in `extra["processor"]`."""
    from transformers import AutoModelForImageTextToText, AutoProcessor, GenerationConfig

    device = device or default_device()
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=_dtype(device)).to(device).eval()
    tokenizer = processor.tokenizer
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    text_config = model.config.get_text_config()
    eos = _eos_ids(getattr(model, "generation_config", None), model.config, text_config, tokenizer)
    # Sampling is the request's (SamplingParams), as in the batch: the folder's defaults (a repetition penalty, a
    # temperature) must not slip into `generate`, which fills what a call leaves unset from this config.
    model.generation_config = GenerationConfig(eos_token_id=sorted(eos), pad_token_id=tokenizer.pad_token_id)
    nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    vocab = getattr(text_config, "vocab_size", 0) or 0
    return LoadedModel(VISION, model, tokenizer, device, _context_length(text_config, tokenizer), eos, nbytes=nbytes,
                       extra={"processor": processor, "grammars": Grammars(tokenizer, vocab, eos)})


class ChatTemplate:
    """The processor's chat template where `inference.chat.render_chat` expects a tokenizer's: each message's
    text is cut at IMAGE_MARKER into text and image parts, the content a vision model's template renders (its
    image tokens where the images were). runtime/tool_use.py renders tools and calls through it unchanged."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.processor = loaded.extra["processor"]

    @property
    def chat_template(self) -> Any:
        return self.processor.chat_template

    def apply_chat_template(self, chat: list[dict[str, Any]], **kwargs: Any) -> str:
        return self.processor.apply_chat_template([_with_parts(message) for message in chat], **kwargs)


def _with_parts(message: dict[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    if not isinstance(content, str):
        return message
    parts: list[dict[str, str]] = []
    for i, text in enumerate(content.split(IMAGE_MARKER)):
        if i:
            parts.append({"type": "image"})
        if text:
            parts.append({"type": "text", "text": text})
    return {**message, "content": parts}


def prepare(deployment: Deployment, text: str, images: list[Any], add_special_tokens: bool,
            queue_wait_s: float | None) -> tuple[Deployment, list[int]]:
    """The prompt's token ids (each image expanded into its tokens) and a deployment for this one request,
    whose `scheduler.submit` generates from it. `text` is the rendered prompt, `images` its PIL images in
    order; `queue_wait_s` bounds the wait for the model as the scheduler bounds the wait for the batch."""
    loaded = deployment.loaded
    processor = loaded.extra["processor"]
    if IMAGE_MARKER in text:  # rendered without a chat template (a plain transcript): the processor's own token
        token = getattr(processor, "image_token", None)
        if token is None:
            raise ValidationException("This model has no chat template and its processor names no image token: "
                                      "it cannot place the images in the prompt.")
        text = text.replace(IMAGE_MARKER, token)
    try:
        inputs = processor(text=[text], images=[list(images)] if images else None,
                           add_special_tokens=add_special_tokens, return_tensors="pt")
    except ValueError as exc:  # e.g. a caller's text that spells out the model's image token
        raise ValidationException(f"The model's processor refused this prompt: {exc}") from None
    runner = OneAtATime(deployment, inputs, queue_wait_s)
    return dataclasses.replace(deployment, scheduler=runner), inputs["input_ids"][0].tolist()


class OneAtATime:
    """One prepared request behind the scheduler's interface: `submit` waits for the model (the deployment's
    lock) and generates in a thread of its own, the tokens arriving in a GenerationStream."""

    def __init__(self, deployment: Deployment, inputs: Any, queue_wait_s: float | None) -> None:
        self.deployment = deployment
        self.inputs = inputs
        self.queue_wait_s = queue_wait_s

    @property
    def active(self) -> int:
        return int(self.deployment.lock.locked())

    def submit(self, prompt_ids: list[int], params: SamplingParams,
               cancelled: threading.Event | None = None) -> GenerationStream:
        """Like `Scheduler.submit`: returns once the request runs (or was cancelled while it waited: its stream
        raises Cancelled), or raises ThrottlingException when the model stayed busy past the bound."""
        loaded = self.deployment.loaded
        grammars: Grammars = loaded.extra["grammars"]
        sequence = _Sequence(list(prompt_ids), params, params.generator(loaded.device),
                             cancelled=cancelled if cancelled is not None else threading.Event(),
                             matcher=grammars.matcher(params.grammar) if params.grammar else None)
        if not self._wait_for_model(sequence):
            _leave_cancelled(sequence)
            return GenerationStream(sequence)
        sequence.dequeued.set()
        threading.Thread(target=self._run, args=(sequence,), name="outcrop-vision", daemon=True).start()
        return GenerationStream(sequence)

    def _wait_for_model(self, sequence: _Sequence) -> bool:
        """Take the model's lock (True), or give up because the caller left (False) or the bound passed."""
        deadline = None if self.queue_wait_s is None else time.monotonic() + self.queue_wait_s
        while not self.deployment.lock.acquire(timeout=_POLL_S):
            if sequence.cancelled.is_set():
                return False
            if deadline is not None and time.monotonic() > deadline:
                raise ThrottlingException(THROTTLED)
        if sequence.cancelled.is_set():
            self.deployment.lock.release()
            return False
        return True

    def _run(self, sequence: _Sequence) -> None:
        """Generate (holding the lock the caller took), then let the model go."""
        from transformers import LogitsProcessorList, StoppingCriteriaList

        loaded = self.deployment.loaded
        try:
            inputs = self.inputs.to(loaded.device)
            pixels = {k: v.to(loaded.model.dtype) for k, v in inputs.items() if torch.is_floating_point(v)}
            with torch.inference_mode():
                loaded.model.generate(
                    **{**inputs, **pixels}, max_new_tokens=max(1, sequence.params.max_tokens), do_sample=False,
                    logits_processor=LogitsProcessorList([_Sample(sequence, loaded.extra["grammars"])]),
                    stopping_criteria=StoppingCriteriaList([_Emit(sequence, loaded)]))
            if not sequence.done:  # stopped for the caller, or by a limit of generate's own
                if sequence.cancelled.is_set():
                    _leave_cancelled(sequence)
                else:
                    sequence.done = True
                    sequence.events.put(RuntimeError("generation ended before the answer was complete"))
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, never lost in a thread
            if not sequence.done:
                sequence.done = True
                sequence.events.put(exc)
        finally:
            self.deployment.lock.release()


class _Sample:
    """`generate`'s logits processor: the request's own sampling (SamplingParams with its seeded generator, and
    its grammar's mask) picks the token, and only that token is left for `generate`'s greedy choice."""

    def __init__(self, sequence: _Sequence, grammars: Grammars) -> None:
        self.sequence = sequence
        self.grammars = grammars

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        sequence = self.sequence
        if sequence.done or sequence.cancelled.is_set():  # the last step: its token is never emitted
            return scores
        if sequence.matcher is not None:
            self.grammars.mask(scores, [(0, sequence.matcher)])
        token = sample_batch(scores, [sequence.params], [sequence.generator])[0]
        chosen = torch.full_like(scores, float("-inf"))
        chosen[0, token] = 0.0
        return chosen


class _Emit:
    """`generate`'s stopping criterion, which also hands each new token to the sequence (`emit`). A criterion
    and not a streamer: generate shows a streamer each token only after it has asked whether to stop, so a stop
    sequence a streamer found would cost one more forward pass; a criterion sees the token first."""

    def __init__(self, sequence: _Sequence, loaded: LoadedModel) -> None:
        self.sequence = sequence
        self.loaded = loaded

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        sequence = self.sequence
        if not sequence.done and not sequence.cancelled.is_set():
            emit(self.loaded, sequence, int(input_ids[0, -1]))
        stop = sequence.done or sequence.cancelled.is_set()
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)
