"""InvokeModel's provider-native bodies: parse each into one neutral request, render results back.

Every text model has a native format after its provider, and also accepts the Anthropic Messages
and Amazon Titan Text formats, recognised by their keys, so code written for one provider runs on
another. Field names, ranges and stop-reason words follow each provider's Bedrock documentation.
`seed` is accepted in every format (an Outcrop extension): generation is sampling, and a seed is how
a caller pins it.
"""

from __future__ import annotations

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


TEXT_FORMATS: dict[str, TextFormat] = {f.name: f for f in (MetaLlama(), Mistral(), TitanText(), AnthropicMessages())}


def detect_text_format(body: dict[str, Any], native: str) -> TextFormat:
    """The format a body is written in, by its keys; the model's native one where keys allow both."""
    if "anthropic_version" in body or "messages" in body:
        return TEXT_FORMATS["anthropic-messages"]
    if "inputText" in body:
        return TEXT_FORMATS["titan-text"]
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
