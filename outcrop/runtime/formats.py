"""InvokeModel's provider-native bodies: parse each into one neutral request, render results back.

Every text model has a native format after its provider, and also accepts the Anthropic Messages
and Amazon Titan Text formats, recognised by their keys, so code written for one provider runs on
another. A Bedrock model id that an alias maps to a local model (`amazon.nova-micro-v1:0`,
`anthropic.claude-v2`, `cohere.command-r-plus-v1:0`, `ai21.jamba-1-5-large-v1:0`,
`mistral.mistral-large-2402-v1:0`) brings its provider's body: `detect_text_format` reads the id the
client named first (Amazon Nova, Claude Text Completions, Cohere Command R chat, AI21 Jamba chat,
Mistral AI chat), and the body's keys after. Field names, ranges and stop-reason words follow each
provider's Bedrock documentation; a documented field this server cannot honour (Cohere's `documents`,
Jamba's `n` above 1, Mistral's `tools`, ...) is refused by name, never ignored.
`seed` is accepted in every format (an Outcrop extension): generation is sampling, and a seed is how
a caller pins it.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from outcrop.errors import ValidationException
from outcrop.inference.sampling import DEFAULT_MAX_TOKENS, DEFAULT_TEMPERATURE, DEFAULT_TOP_P, SamplingParams
from outcrop.inference.scheduler import END_OF_TEXT, LENGTH, STOP_SEQUENCE, Completion
from outcrop.platform import jsontext
from outcrop.profiles.aliases import GEO_PREFIXES
from outcrop.runtime import tool_use
from outcrop.runtime.chat_markup import parse_chat_markup

MAX_STOP_SEQUENCES = 2500


@dataclass
class TextRequest:
    """What any format asks of a text model: a raw prompt, or a chat to render with its template."""

    params: SamplingParams
    prompt: str | None = None
    messages: list[dict[str, str]] = field(default_factory=list)
    system: str = ""
    #: How this format refuses an output budget the model's context cannot hold, called with (prompt
    #: tokens, context window) once the model is loaded; None when the caller named no budget (the
    #: default is clamped: generation stops at the window). See `max_tokens_rule`.
    check_max_tokens: Callable[[int, int], None] | None = None
    #: The tools the model may call (runtime/tool_use.py), and the JSON schema a plain answer must follow.
    tools: tool_use.ToolSet | None = None
    answer_schema: dict[str, Any] | None = None
    #: What the system turn tells the model of that answer (`tool_use.answer_instructions`).
    answer_prompt: str = ""
    #: The images the messages carry (runtime/multimodal.py ImageInput), in order; IMAGE_MARKER in a message's
    #: text stands for each. Only a model whose input includes IMAGE takes them.
    images: tuple[Any, ...] = ()


@dataclass
class Invocation:
    """The facts a response needs besides the text: who answered, token counts, timings."""

    model_id: str
    input_tokens: int
    completion: Completion | None = None
    #: Milliseconds, as Bedrock's `amazon-bedrock-invocationMetrics` reports them.
    metrics: Callable[[], dict[str, int]] = lambda: {}
    #: How the answer's text and tool calls are read (once per invocation); None: the text as it is.
    answer: tool_use.AnswerReader | None = None


# -- field checks ----------------------------------------------------------------------------------

def number_field(body: dict, key: str, low: float, high: float, default: float, where: str = "") -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValidationException(f"{where}{key} must be a number between {low:g} and {high:g}, got {value!r}")
    return float(value)


def integer_field(body: dict, key: str, low: int, high: int | None, default: int | None, where: str = "") -> int | None:
    value = body.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ValidationException(f"{where}{key} must be an integer {bound}, got {value!r}")
    return value


def string_field(body: dict, key: str, where: str = "", required: bool = True) -> str:
    value = body.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise ValidationException(f"{where}{key} is required and must be a string")
    return value


def _stops(body: dict, key: str, where: str = "") -> tuple[str, ...]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value) \
            or len(value) > MAX_STOP_SEQUENCES:
        raise ValidationException(f"{where}{key} must be a list of non-empty strings")
    return tuple(value)


def only_keys(body: dict, allowed: set[str], fmt: str, where: str = "") -> None:
    extra = sorted(set(body) - allowed)
    if extra:
        raise ValidationException(
            f"{where}extraneous key [{', '.join(extra)}] is not permitted in the {fmt} format; "
            f"accepted keys: {', '.join(sorted(allowed))}")


def _seed(body: dict, where: str = "") -> int | None:
    return integer_field(body, "seed", 0, 2**63 - 1, None, where)


def _prompt_or_chat(prompt: str) -> dict[str, Any]:
    """A raw prompt's TextRequest fields: the chat its markup writes, or the prompt itself.

    Chat markup of a known family (`[INST]`, Llama 3/4 headers, ChatML; see `chat_markup`) is read
    back into messages, which the serving model's own template renders, so a Meta- or Mistral-format
    chat works on any chat model. Any other text is a completion prompt, tokenized as is."""
    chat = parse_chat_markup(prompt)
    if chat is None:
        return {"prompt": prompt}
    return {"messages": chat.messages, "system": chat.system}


# -- the output budget against the context window --------------------------------------------------

def max_tokens_rule(body: dict, key: str, where: str = "") -> Callable[[int, int], None] | None:
    """Llama's `max_gen_len`, Mistral's `max_tokens`, Titan's `maxTokenCount`: refused above the window.

    How each format bounds the answer against the model's context window, as its provider defines it:

    - Meta Llama, Mistral, Titan Text (InvokeModel): the field caps the generated tokens only, and the
      generation stops early when prompt plus answer fill the window. A value larger than the whole
      window can never be honoured, so it is refused in Bedrock's schema wording for native bodies
      (`Malformed input request: #/max_gen_len: 5000 is not less or equal to 256, ...`). A prompt that
      leaves less room than asked is not refused: the answer ends with the format's "length" reason.
    - Anthropic Messages: `max_tokens` is required and Anthropic counts the prompt: prompt plus
      max_tokens beyond the window is refused in Anthropic's wording (`anthropic_max_tokens_rule`).
    - Converse: `inferenceConfig.maxTokens` above the window is refused in Converse's wording
      (`converse_max_tokens_rule`); like the native formats, the prompt is not counted.
    - Any budget the caller did not name (the 512-token default) is clamped, not refused: generation
      stops at the window. The tiny test models' window (256) is smaller than that default.
    """
    value = body.get(key)
    if value is None:
        return None
    pointer = "#/" + (where + key).replace(".", "/")

    def check(_prompt_tokens: int, context: int) -> None:
        if value > context:
            raise ValidationException(f"Malformed input request: {pointer}: {value} is not less or equal to "
                                      f"{context}, please reformat your input and try again.")
    return check


def anthropic_max_tokens_rule(value: int | None) -> Callable[[int, int], None] | None:
    """Anthropic's rule: the prompt and the whole requested answer must fit the context window."""
    if value is None:
        return None

    def check(prompt_tokens: int, context: int) -> None:
        if prompt_tokens + value > context:
            raise ValidationException(f"input length and `max_tokens` exceed context limit: {prompt_tokens} + "
                                      f"{value} > {context}, decrease input length or `max_tokens` and try again")
    return check


def converse_max_tokens_rule(value: int | None) -> Callable[[int, int], None] | None:
    """Converse's rule: `inferenceConfig.maxTokens` may not exceed the model's limit (its context window)."""
    if value is None:
        return None

    def check(_prompt_tokens: int, context: int) -> None:
        if value > context:
            raise ValidationException(f"The maximum tokens you requested (inferenceConfig.maxTokens: {value}) "
                                      f"exceeds the model limit of {context}. Try again with a maximum tokens "
                                      f"value that is lower than or equal to {context}.")
    return check


# -- the formats -----------------------------------------------------------------------------------

class TextFormat:
    name: str
    label: str
    keys: set[str]

    def parse(self, body: dict[str, Any]) -> TextRequest:
        raise NotImplementedError

    def render(self, inv: Invocation) -> dict[str, Any]:
        raise NotImplementedError

    def stream(self, deltas: Iterable[str], inv: Invocation) -> Iterator[dict[str, Any]]:
        raise NotImplementedError


class MetaLlama(TextFormat):
    name, label = "meta-llama", "Meta Llama"
    keys = {"prompt", "temperature", "top_p", "max_gen_len", "images", "seed"}
    _REASON = {END_OF_TEXT: "stop", STOP_SEQUENCE: "stop", LENGTH: "length"}

    def parse(self, body):
        only_keys(body, self.keys, self.label)
        if body.get("images"):
            raise ValidationException("images are not supported by this model")
        return TextRequest(**_prompt_or_chat(string_field(body, "prompt")), params=SamplingParams(
            max_tokens=integer_field(body, "max_gen_len", 1, 8192, DEFAULT_MAX_TOKENS),
            temperature=number_field(body, "temperature", 0, 1, DEFAULT_TEMPERATURE),
            top_p=number_field(body, "top_p", 0, 1, DEFAULT_TOP_P), seed=_seed(body)),
            check_max_tokens=max_tokens_rule(body, "max_gen_len"))

    def render(self, inv):
        c = inv.completion
        return {"generation": c.text, "prompt_token_count": inv.input_tokens,
                "generation_token_count": c.output_tokens, "stop_reason": self._REASON[c.finish_reason]}

    def stream(self, deltas, inv):
        count = 0
        for delta in deltas:
            count += 1
            yield {"generation": delta, "prompt_token_count": inv.input_tokens if count == 1 else None,
                   "generation_token_count": count, "stop_reason": None}
        c = inv.completion
        yield {"generation": "", "prompt_token_count": None, "generation_token_count": c.output_tokens,
               "stop_reason": self._REASON[c.finish_reason], "amazon-bedrock-invocationMetrics": inv.metrics()}


class Mistral(TextFormat):
    name, label = "mistral", "Mistral"
    keys = {"prompt", "max_tokens", "stop", "temperature", "top_p", "top_k", "seed"}
    _REASON = {END_OF_TEXT: "stop", STOP_SEQUENCE: "stop", LENGTH: "length"}

    def parse(self, body):
        only_keys(body, self.keys, self.label)
        return TextRequest(**_prompt_or_chat(string_field(body, "prompt")), params=SamplingParams(
            max_tokens=integer_field(body, "max_tokens", 1, 32768, DEFAULT_MAX_TOKENS),
            temperature=number_field(body, "temperature", 0, 1, DEFAULT_TEMPERATURE),
            top_p=number_field(body, "top_p", 0, 1, DEFAULT_TOP_P), top_k=integer_field(body, "top_k", 0, 200, 0),
            stop=_stops(body, "stop"), seed=_seed(body)), check_max_tokens=max_tokens_rule(body, "max_tokens"))

    def render(self, inv):
        return {"outputs": [{"text": inv.completion.text, "stop_reason": self._REASON[inv.completion.finish_reason]}]}

    def stream(self, deltas, inv):
        for delta in deltas:
            yield {"outputs": [{"text": delta, "stop_reason": None}]}
        yield {"outputs": [{"text": "", "stop_reason": self._REASON[inv.completion.finish_reason]}],
               "amazon-bedrock-invocationMetrics": inv.metrics()}


class TitanText(TextFormat):
    """Amazon Titan Text. On a chat model the `inputText` becomes one user turn of its template (or, when
    it is written in another family's chat markup, the chat it writes: `chat_markup`)."""

    name, label = "titan-text", "Amazon Titan Text"
    keys = {"inputText", "textGenerationConfig", "seed"}
    _CONFIG = {"temperature", "topP", "maxTokenCount", "stopSequences"}
    _REASON = {END_OF_TEXT: "FINISH", STOP_SEQUENCE: "STOP_CRITERIA_MET", LENGTH: "LENGTH"}

    def parse(self, body):
        only_keys(body, self.keys, self.label)
        config = body.get("textGenerationConfig", {})
        if not isinstance(config, dict):
            raise ValidationException("textGenerationConfig must be an object")
        where = "textGenerationConfig."
        only_keys(config, self._CONFIG, self.label, where)
        params = SamplingParams(
            max_tokens=integer_field(config, "maxTokenCount", 1, 8192, DEFAULT_MAX_TOKENS, where),
            temperature=number_field(config, "temperature", 0, 1, DEFAULT_TEMPERATURE, where),
            top_p=number_field(config, "topP", 0, 1, DEFAULT_TOP_P, where),
            stop=_stops(config, "stopSequences", where), seed=_seed(body))
        text = string_field(body, "inputText")
        chat = parse_chat_markup(text)
        turns = {"messages": chat.messages, "system": chat.system} if chat else {
            "messages": [{"role": "user", "content": text}]}
        return TextRequest(**turns, params=params,
                           check_max_tokens=max_tokens_rule(config, "maxTokenCount", where))

    def render(self, inv):
        c = inv.completion
        return {"inputTextTokenCount": inv.input_tokens, "results": [
            {"tokenCount": c.output_tokens, "outputText": c.text, "completionReason": self._REASON[c.finish_reason]}]}

    def stream(self, deltas, inv):
        count = 0
        for delta in deltas:
            count += 1
            yield {"outputText": delta, "index": 0, "totalOutputTextTokenCount": count,
                   "completionReason": None, "inputTextTokenCount": inv.input_tokens if count == 1 else None}
        c = inv.completion
        yield {"outputText": "", "index": 0, "totalOutputTextTokenCount": c.output_tokens,
               "completionReason": self._REASON[c.finish_reason], "inputTextTokenCount": None,
               "amazon-bedrock-invocationMetrics": inv.metrics()}


class AnthropicMessages(TextFormat):
    name, label = "anthropic-messages", "Anthropic Messages"
    keys = {"anthropic_version", "max_tokens", "messages", "system", "temperature", "top_p", "top_k",
            "stop_sequences", "seed", "metadata", "tools", "tool_choice"}
    _REASON = {END_OF_TEXT: "end_turn", STOP_SEQUENCE: "stop_sequence", LENGTH: "max_tokens"}

    def parse(self, body):
        only_keys(body, self.keys, self.label)
        string_field(body, "anthropic_version")
        if "max_tokens" not in body:
            raise ValidationException("max_tokens is required in the Anthropic Messages format")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ValidationException("messages must be a non-empty list")
        tools = tool_use.anthropic_tool_set(body.get("tools"), body.get("tool_choice"))
        chat = tool_use.anthropic_messages(messages, tools)
        check_alternation([m["role"] for m in chat])
        return TextRequest(messages=chat, system=_anthropic_text(body.get("system", ""), "system"), tools=tools,
                           params=SamplingParams(
                               max_tokens=integer_field(body, "max_tokens", 1, 131072, None),
                               temperature=number_field(body, "temperature", 0, 1, DEFAULT_TEMPERATURE),
                               top_p=number_field(body, "top_p", 0, 1, DEFAULT_TOP_P),
                               top_k=integer_field(body, "top_k", 0, 500, 0),
                               stop=_stops(body, "stop_sequences"), seed=_seed(body)),
                           check_max_tokens=anthropic_max_tokens_rule(body["max_tokens"]))

    def _message(self, inv: Invocation, content: list[dict[str, Any]], stop_reason: str | None) -> dict[str, Any]:
        c = inv.completion
        return {"id": f"msg_bdrk_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant",
                "model": inv.model_id, "content": content, "stop_reason": stop_reason,
                "stop_sequence": c.stop_sequence if c else None,
                "usage": {"input_tokens": inv.input_tokens, "output_tokens": c.output_tokens if c else 0}}

    def _stop_reason(self, inv: Invocation) -> str:
        c = inv.completion
        calls = inv.answer.calls if inv.answer else []
        return "tool_use" if calls and c.finish_reason == END_OF_TEXT else self._REASON[c.finish_reason]

    def render(self, inv):
        blocks = inv.answer.read(inv.completion.text) if inv.answer else [inv.completion.text]
        content = [{"type": "text", "text": b} if isinstance(b, str) else
                   {"type": "tool_use", "id": b.id, "name": b.name, "input": b.input} for b in blocks]
        return self._message(inv, content or [{"type": "text", "text": ""}], self._stop_reason(inv))

    def stream(self, deltas, inv):
        yield {"type": "message_start", "message": self._message(inv, [], None)}
        # With tools, a block starts when its first piece is read (an answer may open with a tool_use
        # block, as Anthropic's own stream does); without them, the text block opens at once, as before.
        answer = inv.answer
        blocks = _AnthropicBlocks(eager=not answer.calling)
        yield from blocks.opening()
        for delta in deltas:
            yield from blocks.events(answer.feed(delta))
        yield from blocks.events(answer.finish())
        yield from blocks.close()
        if blocks.index == 0:  # nothing was said: one empty text block, as the whole answer has
            yield from blocks.events([tool_use.Read("text", "")])
            yield from blocks.close()
        c = inv.completion
        yield {"type": "message_delta", "delta": {"stop_reason": self._stop_reason(inv),
                                                  "stop_sequence": c.stop_sequence},
               "usage": {"output_tokens": c.output_tokens}}
        yield {"type": "message_stop", "amazon-bedrock-invocationMetrics": inv.metrics()}


class _AnthropicBlocks:
    """The Anthropic stream's content blocks for what an AnswerReader read: a text block's text_delta
    events, and for each tool call a tool_use block whose input arrives as input_json_delta events."""

    def __init__(self, eager: bool) -> None:
        self.index = 0
        self.open: str | None = None
        self.eager = eager

    def opening(self) -> Iterator[dict[str, Any]]:
        if self.eager:
            yield from self._start({"type": "text", "text": ""})

    def _start(self, block: dict[str, Any]) -> Iterator[dict[str, Any]]:
        self.open = block["type"]
        yield {"type": "content_block_start", "index": self.index, "content_block": block}

    def events(self, reads: list[tool_use.Read]) -> Iterator[dict[str, Any]]:
        for read in reads:
            if read.kind == "text":
                if self.open != "text":
                    yield from self._start({"type": "text", "text": ""})
                yield {"type": "content_block_delta", "index": self.index,
                       "delta": {"type": "text_delta", "text": read.text}}
            elif read.kind == "start":
                yield from self.close()
                yield from self._start({"type": "tool_use", "id": read.call.id, "name": read.call.name, "input": {}})
            elif read.kind == "input":
                yield {"type": "content_block_delta", "index": self.index,
                       "delta": {"type": "input_json_delta", "partial_json": read.text}}
            else:
                yield from self.close()

    def close(self) -> Iterator[dict[str, Any]]:
        if self.open is not None:
            yield {"type": "content_block_stop", "index": self.index}
            self.index += 1
            self.open = None


def _anthropic_text(content: Any, where: str) -> str:
    """Anthropic content: a string, or a list of blocks of which only text blocks are supported."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
                kind = block.get("type") if isinstance(block, dict) else type(block).__name__
                raise ValidationException(f"{where}: content blocks of type {kind!r} are not supported by this model")
            parts.append(block["text"])
        return "".join(parts)
    raise ValidationException(f"{where} must be a string or a list of text blocks")


def check_alternation(roles: list[str]) -> None:
    """Bedrock's rule for every chat API: start with user, then alternate."""
    if not roles or roles[0] != "user":
        raise ValidationException("A conversation must start with a user message. "
                                  "Try again with a conversation that starts with a user message.")
    for previous, current in zip(roles, roles[1:], strict=False):
        if previous == current:
            raise ValidationException("A conversation must alternate between user and assistant roles. "
                                      "Make sure the conversation alternates between user and assistant roles "
                                      "and try again.")


# -- formats of the Bedrock ids an alias maps to a local model -------------------------------------

def _object(body: dict, key: str, where: str = "") -> dict[str, Any]:
    value = body.get(key, {})
    if not isinstance(value, dict):
        raise ValidationException(f"{where}{key} must be a JSON object")
    return value


def _one_of(body: dict, keys: tuple[str, str], where: str = "") -> str:
    """Which of two spellings of one setting the body uses (Nova's `maxTokens` or `max_new_tokens`); both is
    refused, as neither could be preferred."""
    first, second = keys
    if first in body and second in body:
        raise ValidationException(f"{where}{first} and {where}{second} are the same setting; send one of them")
    return second if second in body else first


def refuse_unsupported(body: dict, fields: dict[str, tuple[tuple[Any, ...], str]], fmt: str) -> None:
    """The documented fields of `fmt` that this server cannot honour, each refused by name when its value asks
    for something (`fields`: field -> (the values that ask for nothing, why it is not honoured))."""
    for key, (neutral, why) in fields.items():
        if key in body and body[key] not in neutral:
            raise ValidationException(f"{key} is not supported by this server in the {fmt} format: {why}. "
                                      "It is refused rather than ignored; leave it out.")


def _stop_list(body: dict, key: str, where: str = "") -> tuple[str, ...]:
    """An OpenAI-style `stop`: one string or a list of them."""
    if isinstance(body.get(key), str):
        return _stops({key: [body[key]]}, key, where)
    return _stops(body, key, where)


_PENALTY = ((0, 0.0, None), "repetition penalties are not implemented by its sampler")


class AmazonNova(TextFormat):
    """Amazon Nova's `messages-v1` body: Converse's messages, system and toolConfig, with images as base64.

    `inferenceConfig` takes the documented camelCase names and the snake_case ones of Nova's first user
    guide (`max_new_tokens`, `top_p`, `top_k`), which applications still send."""

    name, label = "amazon-nova", "Amazon Nova"
    keys = {"schemaVersion", "messages", "system", "inferenceConfig", "toolConfig", "seed"}
    _CONFIG = {"maxTokens", "max_new_tokens", "temperature", "topP", "top_p", "topK", "top_k", "stopSequences"}
    _REASON = {END_OF_TEXT: "end_turn", STOP_SEQUENCE: "stop_sequence", LENGTH: "max_tokens"}

    def parse(self, body):
        from outcrop.runtime import multimodal  # it imports this module

        only_keys(body, self.keys, self.label)
        if body.get("schemaVersion", "messages-v1") != "messages-v1":
            raise ValidationException(f"schemaVersion must be 'messages-v1', got {body['schemaVersion']!r}")
        where = "inferenceConfig."
        config = _object(body, "inferenceConfig")
        only_keys(config, self._CONFIG, self.label, where)
        max_key = _one_of(config, ("maxTokens", "max_new_tokens"), where)
        top_p_key = _one_of(config, ("topP", "top_p"), where)
        top_k_key = _one_of(config, ("topK", "top_k"), where)
        tools = tool_use.converse_tool_set(_nova_tool_config(body.get("toolConfig")))
        messages, pictures = multimodal.converse_images(_nova_messages(body.get("messages")))
        chat = tool_use.converse_messages(messages, tools)
        check_alternation([m["role"] for m in chat])
        return TextRequest(messages=chat, system=_nova_system(body.get("system", [])), tools=tools, images=pictures,
                           params=SamplingParams(
                               max_tokens=integer_field(config, max_key, 1, 10000, DEFAULT_MAX_TOKENS, where),
                               temperature=number_field(config, "temperature", 0, 1, DEFAULT_TEMPERATURE, where),
                               top_p=number_field(config, top_p_key, 0, 1, DEFAULT_TOP_P, where),
                               top_k=integer_field(config, top_k_key, 0, 128, 0, where),
                               stop=_stops(config, "stopSequences", where), seed=_seed(body)),
                           check_max_tokens=max_tokens_rule(config, max_key, where))

    def _stop_reason(self, inv: Invocation) -> str:
        c = inv.completion
        calls = inv.answer.calls if inv.answer else []
        return "tool_use" if calls and c.finish_reason == END_OF_TEXT else self._REASON[c.finish_reason]

    def _usage(self, inv: Invocation) -> dict[str, int]:
        out = inv.completion.output_tokens
        return {"inputTokens": inv.input_tokens, "outputTokens": out, "totalTokens": inv.input_tokens + out,
                "cacheReadInputTokenCount": 0, "cacheWriteInputTokenCount": 0}  # this server has no prompt cache

    def render(self, inv):
        blocks = inv.answer.read(inv.completion.text) if inv.answer else [inv.completion.text]
        return {"output": {"message": {"role": "assistant", "content": tool_use.converse_content(blocks)}},
                "stopReason": self._stop_reason(inv), "usage": self._usage(inv)}

    def stream(self, deltas, inv):
        yield {"messageStart": {"role": "assistant"}}
        answer = inv.answer or tool_use.AnswerReader(None, None)
        blocks = _NovaBlocks()
        for delta in deltas:
            yield from blocks.events(answer.feed(delta))
        yield from blocks.events(answer.finish())
        yield from blocks.close()
        yield {"messageStop": {"stopReason": self._stop_reason(inv)}}
        metrics = inv.metrics()
        yield {"metadata": {"usage": self._usage(inv), "metrics": {"latencyMs": metrics.get("invocationLatency", 0)}},
               "amazon-bedrock-invocationMetrics": metrics}


class _NovaBlocks:
    """Nova's stream events for what an AnswerReader read, as ConverseStream's: text deltas in a text block,
    and for each tool call a contentBlockStart (toolUseId, name), its input as toolUse deltas, and a stop."""

    def __init__(self) -> None:
        self.index = 0
        self.open = False

    def events(self, reads: list[tool_use.Read]) -> Iterator[dict[str, Any]]:
        for read in reads:
            if read.kind == "text":
                self.open = True
                yield {"contentBlockDelta": {"delta": {"text": read.text}, "contentBlockIndex": self.index}}
            elif read.kind == "start":
                yield from self.close() if self.open else ()
                yield {"contentBlockStart": {"start": {"toolUse": {"toolUseId": read.call.id, "name": read.call.name}},
                                             "contentBlockIndex": self.index}}
                self.open = True
            elif read.kind == "input":
                yield {"contentBlockDelta": {"delta": {"toolUse": {"input": read.text}},
                                             "contentBlockIndex": self.index}}
            else:
                yield from self.close()

    def close(self) -> Iterator[dict[str, Any]]:
        """End the open block; an answer with no block at all still ends its (empty) text block 0."""
        if self.open or self.index == 0:
            yield {"contentBlockStop": {"contentBlockIndex": self.index}}
            self.index += 1
            self.open = False


def _nova_system(system: Any) -> str:
    if not isinstance(system, list) or not all(isinstance(b, dict) and isinstance(b.get("text"), str) and len(b) == 1
                                               for b in system):
        raise ValidationException("system must be a list of text blocks: [{\"text\": \"...\"}]")
    return "\n".join(block["text"] for block in system)


def _nova_messages(messages: Any) -> list[dict[str, Any]]:
    """Nova's messages, checked in shape, as Converse's (image bytes decoded from base64), for the Converse
    readers (`multimodal.converse_images`, `tool_use.converse_messages`) to take them as Converse does."""
    if not isinstance(messages, list) or not messages:
        raise ValidationException("messages is required and must be a non-empty list")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise ValidationException(f"messages.{i}.role must be 'user' or 'assistant'")
        only_keys(message, {"role", "content"}, AmazonNova.label, f"messages.{i}.")
        content = message.get("content")
        if not isinstance(content, list) or not content or \
                not all(isinstance(block, dict) and len(block) == 1 for block in content):
            raise ValidationException(f"messages.{i}.content must be a non-empty list of content blocks, each with "
                                      "one member (text, image, toolUse, toolResult)")
        blocks = []
        for j, block in enumerate(content):
            ((kind, value),) = block.items()
            where = f"messages.{i}.content.{j}.{kind}"
            if kind == "text" and not isinstance(value, str):
                raise ValidationException(f"{where} must be a string")
            if kind == "image":
                value = _nova_image(value, where)
            elif kind == "toolUse" and not (isinstance(value, dict) and isinstance(value.get("toolUseId"), str)
                                            and isinstance(value.get("name"), str)):
                raise ValidationException(f"{where} needs a toolUseId, a name and an input object")
            elif kind == "toolResult" and not (isinstance(value, dict) and isinstance(value.get("toolUseId"), str)
                                               and isinstance(value.get("content"), list)
                                               and all(isinstance(c, dict) for c in value["content"])):
                raise ValidationException(f"{where} needs a toolUseId and a content list of text or json blocks")
            blocks.append({kind: value})
        out.append({"role": message["role"], "content": blocks})
    return out


def _nova_image(image: Any, where: str) -> Any:
    """An image block with its base64 `source.bytes` decoded (Converse carries the bytes themselves)."""
    source = image.get("source") if isinstance(image, dict) else None
    if not isinstance(source, dict) or not isinstance(source.get("bytes"), str):
        return image  # multimodal.converse_images says what is missing (or refuses an S3 location)
    try:
        data = base64.b64decode(source["bytes"], validate=True)
    except (binascii.Error, ValueError):
        raise ValidationException(f"{where}.source.bytes must be the image's bytes in base64") from None
    return {**image, "source": {**source, "bytes": data}}


def _nova_tool_config(config: Any) -> dict[str, Any] | None:
    """Nova's toolConfig, checked in shape for `tool_use.converse_tool_set` (Converse's own is checked by botocore's
    model before it gets there)."""
    if config is None:
        return None
    if not isinstance(config, dict):
        raise ValidationException("toolConfig must be a JSON object")
    only_keys(config, {"tools", "toolChoice"}, AmazonNova.label, "toolConfig.")
    tools = config.get("tools")
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise ValidationException("toolConfig.tools must be a list of tools: [{\"toolSpec\": {...}}]")
    for i, entry in enumerate(tools):
        spec = entry.get("toolSpec", {})
        if not isinstance(spec, dict) or not isinstance(spec.get("inputSchema", {}), dict):
            raise ValidationException(f"toolConfig.tools.{i}.toolSpec must be an object with a name, a description "
                                      "and an inputSchema {\"json\": {...}}")
    if not isinstance(config.get("toolChoice", {}), dict):
        raise ValidationException("toolConfig.toolChoice must be an object: {\"auto\": {}}, {\"any\": {}} or "
                                  "{\"tool\": {\"name\": ...}}")
    return config


HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"
_CLAUDE_TURN = re.compile(r"\n\nHuman:|\n\nAssistant:")


def human_assistant_turns(prompt: str) -> tuple[str, list[dict[str, str]]]:
    """A Claude Text Completions prompt (`\\n\\nHuman: ...\\n\\nAssistant:`) as (system, messages), refused in
    Anthropic's words unless it is one. Text before the first Human turn is the system prompt (Claude 2.1's);
    text after the last `Assistant:` is a prefill the model continues, as in a Messages body."""
    marks = list(_CLAUDE_TURN.finditer(prompt))
    if not marks or marks[0].group() != HUMAN:
        raise ValidationException('prompt must start with "\\n\\nHuman:" turn after an optional system prompt')
    if marks[-1].group() != ASSISTANT:
        raise ValidationException('prompt must end with "\\n\\nAssistant:" turn')
    chat = []
    for mark, following in zip(marks, [*marks[1:], None], strict=True):
        text = prompt[mark.end(): following.start() if following else len(prompt)]
        chat.append({"role": "user" if mark.group() == HUMAN else "assistant", "content": text.strip()})
    if not chat[-1]["content"]:
        chat.pop()  # an empty last Assistant turn: the answer goes there
    check_alternation([m["role"] for m in chat])
    return prompt[:marks[0].start()].strip(), chat


class AnthropicText(TextFormat):
    """Anthropic Claude Text Completions (Claude Instant, v2, v2.1): the turns of its `\\n\\nHuman:` prompt are
    rendered through the serving model's chat template. Claude stops at `\\n\\nHuman:` of itself, and so does
    this format; the model's end of turn is reported as Claude reports its own, `stop_sequence` with that stop."""

    name, label = "anthropic-text", "Anthropic Claude Text Completions"
    keys = {"prompt", "max_tokens_to_sample", "temperature", "top_p", "top_k", "stop_sequences", "anthropic_version",
            "seed"}
    _REASON = {END_OF_TEXT: "stop_sequence", STOP_SEQUENCE: "stop_sequence", LENGTH: "max_tokens"}

    def parse(self, body):
        only_keys(body, self.keys, self.label)
        if body.get("max_tokens_to_sample") is None:
            raise ValidationException("max_tokens_to_sample is required in the Anthropic Claude Text Completions "
                                      "format")
        if "anthropic_version" in body:
            string_field(body, "anthropic_version")
        system, chat = human_assistant_turns(string_field(body, "prompt"))
        stops = _stops(body, "stop_sequences")
        return TextRequest(messages=chat, system=system, params=SamplingParams(
            max_tokens=integer_field(body, "max_tokens_to_sample", 1, 131072, None),
            temperature=number_field(body, "temperature", 0, 1, DEFAULT_TEMPERATURE),
            top_p=number_field(body, "top_p", 0, 1, DEFAULT_TOP_P), top_k=integer_field(body, "top_k", 0, 500, 0),
            stop=stops + ((HUMAN,) if HUMAN not in stops else ()), seed=_seed(body)),
            check_max_tokens=max_tokens_rule(body, "max_tokens_to_sample"))

    def _stop(self, inv: Invocation) -> str | None:
        c = inv.completion
        if c.finish_reason == STOP_SEQUENCE:
            return c.stop_sequence
        return HUMAN if c.finish_reason == END_OF_TEXT else None

    def render(self, inv):
        c = inv.completion
        return {"completion": c.text, "stop_reason": self._REASON[c.finish_reason], "stop": self._stop(inv)}

    def stream(self, deltas, inv):
        for delta in deltas:
            yield {"completion": delta, "stop_reason": None, "stop": None}
        yield {"completion": "", "stop_reason": self._REASON[inv.completion.finish_reason], "stop": self._stop(inv),
               "amazon-bedrock-invocationMetrics": inv.metrics()}


class CohereChat(TextFormat):
    """Cohere Command R and R+: `message`, `chat_history` (USER, CHATBOT; SYSTEM before the conversation) and
    `preamble` rendered through the serving model's template; `raw_prompting` sends the message as it is."""

    name, label = "cohere-chat", "Cohere Command R"
    keys = {"message", "chat_history", "preamble", "max_tokens", "temperature", "p", "k", "stop_sequences", "seed",
            "raw_prompting", "prompt_truncation", "frequency_penalty", "presence_penalty", "return_prompt",
            "search_queries_only", "documents", "tools", "tool_results"}
    _UNSUPPORTED = {
        "documents": ((None, []), "it has no grounded generation with citations; put the documents in the message "
                      "or the preamble"),
        "tools": ((None, []), "Cohere's tool calling is not implemented here; use Converse's toolConfig"),
        "tool_results": ((None, []), "Cohere's tool calling is not implemented here; use Converse's toolConfig"),
        "search_queries_only": ((None, False), "it does not generate search queries"),
        "return_prompt": ((None, False), "the rendered prompt is not returned"),
        "prompt_truncation": ((None, "OFF"), "the chat history is never truncated; a prompt longer than the "
                              "context window is refused"),
        "frequency_penalty": _PENALTY, "presence_penalty": _PENALTY}
    _ROLES = {"USER": "user", "CHATBOT": "assistant"}
    _REASON = {END_OF_TEXT: "COMPLETE", STOP_SEQUENCE: "STOP_SEQUENCE", LENGTH: "MAX_TOKENS"}

    def __init__(self) -> None:
        self._turns: list[dict[str, str]] = []

    def parse(self, body):
        only_keys(body, self.keys, self.label)
        refuse_unsupported(body, self._UNSUPPORTED, self.label)
        message = string_field(body, "message")
        history = body.get("chat_history", [])
        if not isinstance(history, list):
            raise ValidationException("chat_history must be a list of {role, message} entries")
        system = [string_field(body, "preamble", required=False)]
        chat = []
        for i, entry in enumerate(history):
            where = f"chat_history.{i}."
            if not isinstance(entry, dict) or entry.get("role") not in ("USER", "CHATBOT", "SYSTEM"):
                raise ValidationException(f"{where}role must be USER, CHATBOT or SYSTEM")
            only_keys(entry, {"role", "message"}, self.label, where)
            text = string_field(entry, "message", where)
            if entry["role"] == "SYSTEM":
                if chat:
                    raise ValidationException(f"{where}role: a SYSTEM message is taken before the conversation only; "
                                              "put later instructions in a USER message")
                system.append(text)
            else:
                chat.append({"role": self._ROLES[entry["role"]], "content": text})
        chat.append({"role": "user", "content": message})
        check_alternation([m["role"] for m in chat])
        self._turns = [*({"role": e["role"], "message": e["message"]} for e in history),
                       {"role": "USER", "message": message}]
        raw = body.get("raw_prompting", False)
        if not isinstance(raw, bool):
            raise ValidationException("raw_prompting must be true or false")
        if raw and (history or body.get("preamble")):
            raise ValidationException("raw_prompting sends the message to the model as it is: it cannot be combined "
                                      "with chat_history or a preamble")
        k = body.get("k", 0)
        params = SamplingParams(
            max_tokens=integer_field(body, "max_tokens", 1, 4096, DEFAULT_MAX_TOKENS),
            temperature=number_field(body, "temperature", 0, 1, DEFAULT_TEMPERATURE),
            top_p=number_field(body, "p", 0.01, 0.99, DEFAULT_TOP_P),
            top_k=integer_field({"k": int(k) if isinstance(k, float) and k.is_integer() else k}, "k", 0, 500, 0),
            stop=_stops(body, "stop_sequences"), seed=_seed(body))
        check = max_tokens_rule(body, "max_tokens")
        if raw:
            return TextRequest(prompt=message, params=params, check_max_tokens=check)
        return TextRequest(messages=chat, system="\n\n".join(s for s in system if s), params=params,
                           check_max_tokens=check)

    def _response(self, inv: Invocation, generation_id: str) -> dict[str, Any]:
        c = inv.completion
        tokens = {"input_tokens": inv.input_tokens, "output_tokens": c.output_tokens}
        return {"response_id": str(uuid.uuid4()), "text": c.text, "generation_id": generation_id,
                "chat_history": self._history(inv, c.text), "finish_reason": self._REASON[c.finish_reason],
                "meta": {"api_version": {"version": "1"}, "billed_units": tokens, "tokens": tokens}}

    def _history(self, inv: Invocation, text: str) -> list[dict[str, str]]:
        """The conversation with this turn and its answer, as Cohere returns it to send back next time: the
        turns `parse` kept (this object serves one request: `detect_text_format` makes one for each)."""
        return [*self._turns, {"role": "CHATBOT", "message": text}]

    def render(self, inv):
        return self._response(inv, str(uuid.uuid4()))

    def stream(self, deltas, inv):
        generation_id = str(uuid.uuid4())
        yield {"is_finished": False, "event_type": "stream-start", "generation_id": generation_id}
        for delta in deltas:
            yield {"is_finished": False, "event_type": "text-generation", "text": delta}
        response = self._response(inv, generation_id)
        yield {"is_finished": True, "event_type": "stream-end", "response": response,
               "finish_reason": response["finish_reason"], "amazon-bedrock-invocationMetrics": inv.metrics()}


def openai_style_chat(messages: Any, fmt: str) -> tuple[str, list[dict[str, str]]]:
    """`[{"role": "system"|"user"|"assistant", "content": str}]` (AI21 Jamba, Mistral AI chat) as (system,
    messages): the leading system messages are the system prompt; the rest start with user and alternate, a last
    assistant message being a prefill the model continues."""
    if not isinstance(messages, list) or not messages:
        raise ValidationException("messages is required and must be a non-empty list")
    system, chat = [], []
    for i, message in enumerate(messages):
        where = f"messages.{i}."
        role = message.get("role") if isinstance(message, dict) else None
        if role == "tool" or (isinstance(message, dict) and message.get("tool_calls")):
            raise ValidationException(f"{where}role: tool calls and results are not supported by this server in the "
                                      f"{fmt} format; use Converse's toolConfig")
        if role not in ("system", "user", "assistant"):
            raise ValidationException(f"{where}role must be system, user or assistant, got {role!r}")
        only_keys(message, {"role", "content", "tool_calls"}, fmt, where)
        content = string_field(message, "content", where)
        if role == "system":
            if chat:
                raise ValidationException(f"{where}role: a system message is taken before the conversation only")
            system.append(content)
        else:
            chat.append({"role": role, "content": content})
    check_alternation([m["role"] for m in chat])
    return "\n\n".join(system), chat


class _OpenAIStyleChat(TextFormat):
    """The chat bodies shaped as OpenAI's (`messages` of role and string content, `max_tokens`, `stop`): their
    providers differ in their limits, the fields they refuse, and their answers."""

    max_tokens_limit, temperature_max = 4096, 1
    _UNSUPPORTED: dict[str, Any] = {}
    _REASON = {END_OF_TEXT: "stop", STOP_SEQUENCE: "stop", LENGTH: "length"}

    def parse(self, body):
        only_keys(body, self.keys, self.label)
        refuse_unsupported(body, self._UNSUPPORTED, self.label)
        system, chat = openai_style_chat(body.get("messages"), self.label)
        return TextRequest(messages=chat, system=system, params=SamplingParams(
            max_tokens=integer_field(body, "max_tokens", 1, self.max_tokens_limit, DEFAULT_MAX_TOKENS),
            temperature=number_field(body, "temperature", 0, self.temperature_max, DEFAULT_TEMPERATURE),
            top_p=number_field(body, "top_p", 0, 1, DEFAULT_TOP_P), stop=_stop_list(body, "stop"), seed=_seed(body)),
            check_max_tokens=max_tokens_rule(body, "max_tokens"))


class Ai21Jamba(_OpenAIStyleChat):
    name, label = "ai21-jamba", "AI21 Jamba"
    keys = {"messages", "max_tokens", "temperature", "top_p", "stop", "n", "frequency_penalty", "presence_penalty",
            "seed", "tools", "documents", "response_format"}
    max_tokens_limit, temperature_max = 4096, 2
    _UNSUPPORTED = {
        "n": ((None, 1), "it generates one answer per request"),
        "tools": ((None, []), "Jamba's tool calling is not implemented here; use Converse's toolConfig"),
        "documents": ((None, []), "it has no grounded generation; put the documents in a message"),
        "response_format": ((None, {"type": "text"}), "use Converse's outputConfig for a JSON answer"),
        "frequency_penalty": _PENALTY, "presence_penalty": _PENALTY}

    def _usage(self, inv: Invocation) -> dict[str, int]:
        out = inv.completion.output_tokens
        return {"prompt_tokens": inv.input_tokens, "completion_tokens": out, "total_tokens": inv.input_tokens + out}

    def render(self, inv):
        c = inv.completion
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "model": inv.model_id, "choices": [
            {"index": 0, "message": {"role": "assistant", "content": c.text, "tool_calls": None},
             "finish_reason": self._REASON[c.finish_reason]}], "usage": self._usage(inv)}

    def stream(self, deltas, inv):
        chunk_id = f"chatcmpl-{uuid.uuid4().hex}"
        yield {"id": chunk_id, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                            "finish_reason": None}]}
        for delta in deltas:
            yield {"id": chunk_id, "choices": [{"index": 0, "delta": {"content": delta}, "finish_reason": None}]}
        yield {"id": chunk_id, "choices": [{"index": 0, "delta": {},
                                            "finish_reason": self._REASON[inv.completion.finish_reason]}],
               "usage": self._usage(inv), "amazon-bedrock-invocationMetrics": inv.metrics()}


class MistralChat(_OpenAIStyleChat):
    """Mistral AI chat completion (Mistral Large); the `prompt` body of Mistral's text completion is `Mistral`."""

    name, label = "mistral-chat", "Mistral AI chat completion"
    keys = {"messages", "max_tokens", "temperature", "top_p", "stop", "seed", "tools", "tool_choice"}
    max_tokens_limit, temperature_max = 32768, 1
    _UNSUPPORTED = {
        "tools": ((None, []), "Mistral's tool calling is not implemented here; use Converse's toolConfig"),
        "tool_choice": ((None, "none", "auto"), "Mistral's tool calling is not implemented here")}

    def render(self, inv):
        c = inv.completion
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": c.text, "tool_calls": None},
                             "stop_reason": self._REASON[c.finish_reason]}]}

    def stream(self, deltas, inv):
        for delta in deltas:
            yield {"choices": [{"index": 0, "message": {"role": "assistant", "content": delta}, "stop_reason": None}]}
        yield {"choices": [{"index": 0, "message": {"role": "assistant", "content": ""},
                            "stop_reason": self._REASON[inv.completion.finish_reason]}],
               "amazon-bedrock-invocationMetrics": inv.metrics()}


TEXT_FORMATS: dict[str, TextFormat] = {f.name: f for f in (
    MetaLlama(), Mistral(), TitanText(), AnthropicMessages(), AmazonNova(), AnthropicText(), CohereChat(), Ai21Jamba(),
    MistralChat())}


def bedrock_provider(model_id: str) -> tuple[str, str]:
    """(provider, model name) of a model id as a client names it: `amazon.nova-micro-v1:0` -> (amazon,
    nova-micro-v1:0), also inside an ARN and after a system profile's geo prefix (`us.`); ("", "") for a name
    without a provider (a provisioned model's ARN, an application profile's)."""
    name = model_id.rsplit("/", 1)[-1]
    provider, _, rest = name.partition(".")
    if provider in GEO_PREFIXES and "." in rest:
        provider, _, rest = rest.partition(".")
    return (provider, rest) if rest else ("", "")


def _provider_format(body: dict[str, Any], model_id: str) -> TextFormat | None:
    """The format of the model id's provider when the body has that format's main key; None to decide by keys.
    The Anthropic Messages and Titan Text bodies, which every model takes, are known by their own keys."""
    if ("anthropic_version" in body and "prompt" not in body) or "inputText" in body:
        return None
    provider, name = bedrock_provider(model_id)
    if provider == "amazon" and name.startswith("nova") and "messages" in body:
        return TEXT_FORMATS["amazon-nova"]
    if provider == "anthropic" and "prompt" in body and "messages" not in body:
        return TEXT_FORMATS["anthropic-text"]
    if provider == "cohere" and name.startswith("command-r") and "message" in body:
        return TEXT_FORMATS["cohere-chat"]
    if provider == "ai21" and name.startswith("jamba") and "messages" in body:
        return TEXT_FORMATS["ai21-jamba"]
    if provider == "mistral" and "messages" in body:
        return TEXT_FORMATS["mistral-chat"]
    return None


def detect_text_format(body: dict[str, Any], native: str, *model_ids: str) -> TextFormat:
    """The format a body is written in: its provider's, from the model ids (the one the client named first,
    then the card's: an alias of `amazon.nova-micro-v1:0` has that id) when the body has that format's main key;
    else by its keys, the model's native one where keys allow both."""
    fmt = _detect(body, native, model_ids)
    return type(fmt)()  # one object per request: a format may keep what its answer echoes (Cohere's chat_history)


def _detect(body: dict[str, Any], native: str, model_ids: tuple[str, ...]) -> TextFormat:
    for model_id in model_ids:
        fmt = _provider_format(body, model_id)
        if fmt is not None:
            return fmt
    if "anthropic_version" in body and "prompt" not in body:
        return TEXT_FORMATS["anthropic-messages"]
    if "messages" in body:
        nova = body.keys() & {"schemaVersion", "inferenceConfig", "toolConfig"}
        return TEXT_FORMATS["amazon-nova" if nova else "anthropic-messages"]
    if "inputText" in body:
        return TEXT_FORMATS["titan-text"]
    if "max_tokens_to_sample" in body:
        return TEXT_FORMATS["anthropic-text"]
    if "message" in body:
        return TEXT_FORMATS["cohere-chat"]
    if "prompt" in body:
        if "max_gen_len" in body:
            return TEXT_FORMATS["meta-llama"]
        if body.keys() & {"max_tokens", "stop", "top_k"}:
            return TEXT_FORMATS["mistral"]
        return TEXT_FORMATS[native if native in ("meta-llama", "mistral") else "meta-llama"]
    expected = "; ".join(f"{f.label}: {{{', '.join(sorted(f.keys - {'seed'}))}}}" for f in TEXT_FORMATS.values())
    raise ValidationException(f"The request body fits no format this model accepts. Expected one of {expected}")


def parse_json_body(body: bytes) -> dict[str, Any]:
    try:
        document = jsontext.loads(body)
    except jsontext.InvalidJson as exc:
        raise ValidationException(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ValidationException("The request body must be a JSON object")
    return document


def chunk_event(chunk: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A provider-native chunk as InvokeModelWithResponseStream's `chunk` event (bytes: base64 JSON)."""
    return "chunk", {"bytes": json.dumps(chunk).encode()}


# -- additionalModelResponseFieldPaths -------------------------------------------------------------

def parse_pointers(paths: Iterable[str] | None) -> list[list[str]] | None:
    """Converse's `additionalModelResponseFieldPaths` as JSON Pointers (RFC 6901), split into tokens.

    Bedrock refuses an empty or malformed pointer with a 400, so this does, naming it; a well-formed
    pointer to a field the model's response lacks is ignored, as Bedrock documents (`pick`). None when
    the caller asked for no fields."""
    if paths is None:
        return None
    pointers = []
    for path in paths:
        if not path.startswith("/") or _BAD_ESCAPE.search(path):
            raise ValidationException(
                f"additionalModelResponseFieldPaths: {path!r} is not a valid JSON Pointer; each path must "
                "start with '/' and escape '~' as '~0' and '/' as '~1' (RFC 6901), for example '/stop_sequence'.")
        pointers.append([t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")])
    return pointers


_BAD_ESCAPE = re.compile("~(?![01])")


def pick(document: dict[str, Any], pointers: list[list[str]]) -> dict[str, Any]:
    """The fields the pointers name in a model's native response, as a JSON object of the same layout.

    `/stop_sequence` gives `{"stop_sequence": ...}`, `/usage/input_tokens` gives
    `{"usage": {"input_tokens": ...}}` and `/outputs/0/stop_reason` gives `{"outputs": [{"stop_reason": ...}]}`
    (earlier list positions not asked for are null). A pointer to nothing is skipped."""
    out: dict[str, Any] = {}
    for tokens in pointers:
        chain: list[Any] = [document]
        for token in tokens:
            found, value = _step(chain[-1], token)
            if not found:
                break
            chain.append(value)
        else:
            target: Any = out
            for depth, token in enumerate(tokens):
                key: Any = int(token) if isinstance(chain[depth], list) else token
                if isinstance(target, list):
                    target.extend([None] * (key + 1 - len(target)))
                if depth == len(tokens) - 1:
                    target[key] = copy.deepcopy(chain[depth + 1])
                else:
                    child = chain[depth + 1]
                    existing = target.get(key) if isinstance(target, dict) else target[key]
                    if not isinstance(existing, type(child)):
                        target[key] = existing = [] if isinstance(child, list) else {}
                    target = existing
    return out


def _step(container: Any, token: str) -> tuple[bool, Any]:
    if isinstance(container, dict):
        return (True, container[token]) if token in container else (False, None)
    if isinstance(container, list) and _INDEX.fullmatch(token) and int(token) < len(container):
        return True, container[int(token)]
    return False, None


_INDEX = re.compile("0|[1-9][0-9]{0,8}")
