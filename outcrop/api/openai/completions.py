"""(Legacy) Completions as InvokeModel with a Mistral body: a raw prompt, continued as written, not wrapped in
a chat template; the Mistral body because its fields (prompt, max_tokens, stop, temperature, top_p, top_k,
seed) are OpenAI's, and every text model takes it. Pure functions: no I/O.

As for any raw prompt on this server, a prompt written wholly in a known chat markup (`[INST]`, ChatML,
Llama 3 headers) is read back into a chat and rendered through the serving model's own template
(runtime/chat_markup.py); any other text is tokenized as it stands.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from outcrop.api.openai import fields
from outcrop.api.openai.chat import DEFAULT_TEMPERATURE, DEFAULT_TOP_P
from outcrop.api.openai.errors import InvalidRequest

#: OpenAI's budget for a completion that names none.
DEFAULT_MAX_TOKENS = 16

FIELDS = frozenset({"model", "prompt", "stream", "stream_options", "max_tokens", "temperature", "top_p", "n",
                    "stop", "seed", "user", "echo", "suffix", "logprobs", "best_of", "presence_penalty",
                    "frequency_penalty", "logit_bias", "top_k"})
NEUTRAL = {"n": fields.ONE_CHOICE, "best_of": fields.ONE_CHOICE,
           "logprobs": fields.Neutral(lambda v: v is None, fields.NO_LOGPROBS.why),
           "echo": fields.Neutral(lambda v: v is None or v is False, "the answer never repeats the prompt."),
           "suffix": fields.Neutral(lambda v: v is None, "this server's models do not fill in text before a suffix."),
           "frequency_penalty": fields.PENALTY, "presence_penalty": fields.PENALTY, "logit_bias": fields.LOGIT_BIAS}
#: Mistral's stop_reason is already OpenAI's finish_reason.
FINISH_REASONS = {"stop": "stop", "length": "length"}


@dataclass(frozen=True)
class CompletionRequest:
    model: str
    stream: bool
    include_usage: bool
    #: The InvokeModel body (Mistral's format).
    body: dict[str, Any]
    #: Bedrock's requestMetadata (InvokeModel carries it as a header of JSON text).
    metadata: dict[str, str]


def parse(body: dict[str, Any]) -> CompletionRequest:
    fields.only_fields(body, FIELDS)
    fields.check_neutral(body, NEUTRAL)
    model = fields.string(body, "model")
    stream = fields.boolean(body, "stream")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not stream:
            raise InvalidRequest("stream_options is only allowed when stream is true", "stream_options")
        fields.only_fields(fields.body_object(options, "stream_options"), {"include_usage"}, "stream_options.")
        include_usage = fields.boolean(options, "include_usage", where="stream_options.")
    native: dict[str, Any] = {
        "prompt": prompt(body.get("prompt")),
        "max_tokens": fields.max_tokens(body, "max_tokens") or DEFAULT_MAX_TOKENS,
        "temperature": fields.temperature(body, DEFAULT_TEMPERATURE),
        "top_p": fields.number(body, "top_p", 0, 1, DEFAULT_TOP_P)}
    for name, value in (("stop", fields.stop(body)), ("seed", fields.seed(body)),
                        ("top_k", fields.integer(body, "top_k", 0, 200))):
        if value is not None and value != []:
            native[name] = value
    return CompletionRequest(model, stream, include_usage, native, fields.request_metadata(body, with_metadata=False))


def prompt(value: Any) -> str:
    """One prompt: a string, or a list holding one string. Token ids and several prompts are refused."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        value = value[0]
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(p, str) for p in value):
        raise InvalidRequest(f"prompt holds {len(value)} prompts; this server answers one prompt per request",
                             "prompt", "unsupported_value")
    if isinstance(value, list) and value and all(isinstance(p, int | list) for p in value):
        raise InvalidRequest("prompt as token ids is not supported: send the text", "prompt", "unsupported_value")
    raise InvalidRequest("prompt is required and must be a string", "prompt")


def completion(native: dict[str, Any], input_tokens: int, output_tokens: int, *, completion_id: str, created: int,
               model: str) -> dict[str, Any]:
    """InvokeModel's Mistral answer as a `text_completion`."""
    output = native["outputs"][0]
    return {"id": completion_id, "object": "text_completion", "created": created, "model": model,
            "choices": [{"text": output["text"], "index": 0, "logprobs": None,
                         "finish_reason": FINISH_REASONS.get(output["stop_reason"], "stop")}],
            "usage": usage(input_tokens, output_tokens)}


def usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": input_tokens, "completion_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens}


def chunks(native_chunks: Iterable[dict[str, Any]], *, completion_id: str, created: int, model: str,
           include_usage: bool) -> Iterator[dict[str, Any]]:
    """InvokeModelWithResponseStream's Mistral chunks as streamed `text_completion`s; the last native chunk
    carries the finish reason and Bedrock's invocation metrics, whose counts become the usage chunk."""
    def chunk(text: str, finish: str | None) -> dict[str, Any]:
        out = {"id": completion_id, "object": "text_completion", "created": created, "model": model,
               "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]}
        if include_usage:
            out["usage"] = None
        return out

    for native in native_chunks:
        output = native["outputs"][0]
        reason = output.get("stop_reason")
        if output["text"] or reason:
            yield chunk(output["text"], FINISH_REASONS.get(reason, "stop") if reason else None)
        metrics = native.get("amazon-bedrock-invocationMetrics")
        if metrics is not None and include_usage:
            yield {"id": completion_id, "object": "text_completion", "created": created, "model": model,
                   "choices": [], "usage": usage(metrics["inputTokenCount"], metrics["outputTokenCount"])}


def native_chunks(events: Iterable[tuple[str, dict[str, Any]]]) -> Iterator[dict[str, Any]]:
    """The JSON bodies of InvokeModelWithResponseStream's `chunk` events."""
    for name, event in events:
        if name == "chunk":
            yield json.loads(event["bytes"])
