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
NEUTRAL = {           "logprobs": fields.Neutral(lambda v: v is None, fields.NO_LOGPROBS.why),
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
    #: How many choices (`n`): each an InvokeModel of its own, made together so they share the batch.
    n: int = 1

    def choice_body(self, index: int) -> dict[str, Any]:
        """Choice `index`'s body: the request's, with a seed of its own when the request has one."""
        if index == 0 or "seed" not in self.body:
            return self.body
        return {**self.body, "seed": fields.choice_seed(self.body["seed"], index)}


def parse(body: dict[str, Any]) -> CompletionRequest:
    fields.only_fields(body, FIELDS)
    fields.check_neutral(body, NEUTRAL)
    model = fields.string(body, "model")
    stream = fields.boolean(body, "stream")
    n = fields.choices(body)
    best_of = body.get("best_of")
    if best_of is not None and best_of not in (1, n) or isinstance(best_of, bool):
        raise InvalidRequest(f"best_of={json.dumps(best_of)} is not supported: this server does not rank candidates "
                             "(it returns no log probabilities); send n choices instead.", "best_of",
                             "unsupported_value")
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
        # The Mistral body's range (Bedrock's) stops at 1.
        "temperature": fields.temperature(body, DEFAULT_TEMPERATURE, fields.BEDROCK_MAX_TEMPERATURE),
        "top_p": fields.number(body, "top_p", 0, 1, DEFAULT_TOP_P)}
    for name, value in (("stop", fields.stop(body)), ("seed", fields.seed(body)),
                        ("top_k", fields.integer(body, "top_k", 0, 200))):
        if value is not None and value != []:
            native[name] = value
    return CompletionRequest(model, stream, include_usage, native, fields.request_metadata(body, with_metadata=False),
                             n)


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
    return completion_of([(native, input_tokens, output_tokens)], completion_id=completion_id, created=created,
                         model=model)


def completion_of(answers: list[tuple[dict[str, Any], int, int]], *, completion_id: str, created: int,
                  model: str) -> dict[str, Any]:
    """One Mistral answer per choice (with its input and output token counts) as a `text_completion`: the
    prompt's tokens counted once, the choices' added up (as OpenAI counts n choices)."""
    return {"id": completion_id, "object": "text_completion", "created": created, "model": model,
            "choices": [{"text": native["outputs"][0]["text"], "index": index, "logprobs": None,
                         "finish_reason": FINISH_REASONS.get(native["outputs"][0]["stop_reason"], "stop")}
                        for index, (native, _, _) in enumerate(answers)],
            "usage": usage(answers[0][1], sum(out for _, _, out in answers))}


def usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": input_tokens, "completion_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens}


def chunks(native_chunks: Iterable[dict[str, Any]], *, completion_id: str, created: int, model: str,
           include_usage: bool) -> Iterator[dict[str, Any]]:
    """InvokeModelWithResponseStream's Mistral chunks as streamed `text_completion`s; the last native chunk
    carries the finish reason and Bedrock's invocation metrics, whose counts become the usage chunk."""
    return choice_chunks(((0, native) for native in native_chunks), 1, completion_id=completion_id,
                         created=created, model=model, include_usage=include_usage)


def choice_chunks(native_chunks: Iterable[tuple[int, dict[str, Any]]], n: int, *, completion_id: str, created: int,
                  model: str, include_usage: bool) -> Iterator[dict[str, Any]]:
    """`chunks` for `n` choices, each native chunk tagged with its choice's index: the usage chunk comes once
    every choice's metrics are in, the prompt counted once and the choices' tokens added up."""
    metrics: list[dict[str, int] | None] = [None] * n

    def chunk(index: int, text: str, finish: str | None) -> dict[str, Any]:
        out = {"id": completion_id, "object": "text_completion", "created": created, "model": model,
               "choices": [{"text": text, "index": index, "logprobs": None, "finish_reason": finish}]}
        if include_usage:
            out["usage"] = None
        return out

    for index, native in native_chunks:
        output = native["outputs"][0]
        reason = output.get("stop_reason")
        if output["text"] or reason:
            yield chunk(index, output["text"], FINISH_REASONS.get(reason, "stop") if reason else None)
        if native.get("amazon-bedrock-invocationMetrics") is not None:
            metrics[index] = native["amazon-bedrock-invocationMetrics"]
            if include_usage and all(m is not None for m in metrics):
                yield {"id": completion_id, "object": "text_completion", "created": created, "model": model,
                       "choices": [], "usage": usage(metrics[0]["inputTokenCount"],
                                                     sum(m["outputTokenCount"] for m in metrics))}


def native_chunks(events: Iterable[tuple[str, dict[str, Any]]]) -> Iterator[dict[str, Any]]:
    """The JSON bodies of InvokeModelWithResponseStream's `chunk` events."""
    for name, event in events:
        if name == "chunk":
            yield json.loads(event["bytes"])
