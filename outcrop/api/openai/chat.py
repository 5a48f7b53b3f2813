"""Chat Completions as Converse: the request becomes Converse's params, its answer (or ConverseStream's
events) becomes a `chat.completion` (or `chat.completion.chunk`s). Pure functions: no I/O.

OpenAI's conversation maps onto Converse's as follows: `system` and `developer` messages, wherever they
stand, join Converse's system prompt in order; `tool` messages become toolResult blocks of a user turn;
an assistant's `tool_calls` become toolUse blocks; consecutive turns of one role (several tool results,
a user message after them) are one Converse turn, their texts joined by a blank line, since Converse
alternates roles. Tools, `tool_choice` and `response_format` go through Converse's toolConfig and
outputConfig, so calls and JSON answers are constrained by the runtime's grammar (runtime/tool_use.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from outcrop.api.openai import fields
from outcrop.api.openai.errors import InvalidRequest
from outcrop.errors import ValidationException
from outcrop.runtime import tool_use

#: OpenAI's defaults where a request leaves sampling out (Converse's own defaults are Bedrock's).
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 1.0

FIELDS = frozenset({
    "model", "messages", "stream", "stream_options", "temperature", "top_p", "max_tokens", "max_completion_tokens",
    "stop", "seed", "n", "tools", "tool_choice", "parallel_tool_calls", "response_format", "logprobs",
    "top_logprobs", "user", "metadata", "store", "service_tier", "frequency_penalty", "presence_penalty",
    "logit_bias", "modalities", "top_k"})
NEUTRAL = {"logprobs": fields.NO_LOGPROBS,
           "top_logprobs": fields.Neutral(lambda v: v is None, fields.NO_LOGPROBS.why),
           "frequency_penalty": fields.PENALTY, "presence_penalty": fields.PENALTY, "logit_bias": fields.LOGIT_BIAS,
           "store": fields.NO_STORE, "service_tier": fields.ONE_TIER, "modalities": fields.TEXT_ONLY}

#: Converse's stopReason as OpenAI's finish_reason.
FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
                  "malformed_tool_use": "stop", "malformed_model_output": "stop",
                  "content_filtered": "content_filter", "guardrail_intervened": "content_filter"}
_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_TOOL_CALL_ID = re.compile(r"[a-zA-Z0-9_.:-]{1,64}")
#: Content part types this server's text models cannot read, refused by name.
_NOT_TEXT = ("image_url", "input_audio", "file", "refusal")


@dataclass(frozen=True)
class ChatRequest:
    model: str
    stream: bool
    include_usage: bool
    #: Converse's (or ConverseStream's) params, modelId included: the first choice's.
    params: dict[str, Any]
    #: How many choices (`n`): each is a Converse call of its own, made together so they share the batch.
    n: int = 1

    def choice_params(self, index: int) -> dict[str, Any]:
        """Choice `index`'s Converse params: the request's, with a seed of its own when the request has one."""
        extra = self.params.get("additionalModelRequestFields") or {}
        if index == 0 or "seed" not in extra:
            return self.params
        return {**self.params, "additionalModelRequestFields": {
            **extra, "seed": fields.choice_seed(extra["seed"], index)}}


def parse(body: dict[str, Any]) -> ChatRequest:
    """A Chat Completions request as Converse params, or InvalidRequest naming the field."""
    fields.only_fields(body, FIELDS)
    fields.check_neutral(body, NEUTRAL)
    model = fields.string(body, "model")
    stream = fields.boolean(body, "stream")
    include_usage = _stream_options(body, stream)
    n = fields.choices(body)
    fields.boolean(body, "parallel_tool_calls", True)  # true allows, not requires: one call per turn is honoured
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages is required and must be a non-empty list", "messages")
    system, turns = conversation(messages)
    params: dict[str, Any] = {"modelId": model, "messages": turns}
    if system:
        params["system"] = system
    temperature = fields.temperature(body, DEFAULT_TEMPERATURE)
    config: dict[str, Any] = {"topP": fields.number(body, "top_p", 0, 1, DEFAULT_TOP_P)}
    # Above Converse's range (1), OpenAI's temperature goes as the runtime's own additional field (up to 2).
    hot = temperature > fields.BEDROCK_MAX_TEMPERATURE
    if not hot:
        config = {"temperature": temperature, **config}
    budget = fields.max_tokens(body, "max_tokens", "max_completion_tokens")
    if budget is not None:
        config["maxTokens"] = budget
    stops = fields.stop(body)
    if stops:
        config["stopSequences"] = stops
    params["inferenceConfig"] = config
    extra = {k: v for k, v in (("seed", fields.seed(body)), ("top_k", fields.integer(body, "top_k", 0, 500)),
                               ("temperature", temperature if hot else None)) if v is not None}
    if extra:
        params["additionalModelRequestFields"] = extra
    tool_config = tools(body.get("tools"), body.get("tool_choice"), turns)
    if tool_config is not None:
        params["toolConfig"] = tool_config
    output = response_format(body.get("response_format"))
    if output is not None:
        params["outputConfig"] = output
    metadata = fields.request_metadata(body)
    if metadata:
        params["requestMetadata"] = metadata
    if body.get("service_tier") == "default":
        params["serviceTier"] = {"type": "default"}
    return ChatRequest(model, stream, include_usage, params, n)


def _stream_options(body: dict[str, Any], stream: bool) -> bool:
    """`stream_options.include_usage`: whether a stream ends with a chunk of usage."""
    options = body.get("stream_options")
    if options is None:
        return False
    if not stream:
        raise InvalidRequest("stream_options is only allowed when stream is true", "stream_options")
    fields.only_fields(fields.body_object(options, "stream_options"), {"include_usage"}, "stream_options.")
    return fields.boolean(options, "include_usage", where="stream_options.")


# -- the conversation ---------------------------------------------------------------------------------

def conversation(messages: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(Converse's system blocks, its messages) for OpenAI's `messages`."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        message = fields.body_object(message, where)
        role = message.get("role")
        # `name` (a participant's name, which LangGraph and AutoGen send) is accepted: Converse has no place for it.
        if role in ("system", "developer"):
            fields.only_fields(message, {"role", "content", "name"}, f"{where}.")
            text = _text(message.get("content"), f"{where}.content")
            if text:
                system.append({"text": text})
        elif role == "user":
            fields.only_fields(message, {"role", "content", "name"}, f"{where}.")
            _add(turns, "user", [{"text": _text(message.get("content"), f"{where}.content")}])
        elif role == "assistant":
            _add(turns, "assistant", _assistant(message, where))
        elif role == "tool":
            fields.only_fields(message, {"role", "content", "tool_call_id"}, f"{where}.")
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or not _TOOL_CALL_ID.fullmatch(call_id):
                raise InvalidRequest(f"{where}.tool_call_id must be the id of an earlier tool call: 1 to 64 letters, "
                                     "digits or _.:-", f"{where}.tool_call_id")
            result = {"toolUseId": call_id, "content": [{"text": _text(message.get("content"), f"{where}.content")}]}
            _add(turns, "user", [{"toolResult": result}])
        elif role == "function":
            raise InvalidRequest(f"{where}: the function role is not supported; answer tool calls with tool messages",
                                 f"{where}.role")
        else:
            raise InvalidRequest(f"{where}.role must be one of system, developer, user, assistant or tool, got "
                                 f"{json.dumps(role)}", f"{where}.role")
    return system, turns


def _assistant(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    fields.only_fields(message, {"role", "content", "name", "tool_calls", "refusal", "audio", "function_call"},
                       f"{where}.")
    for name in ("refusal", "audio", "function_call"):
        if message.get(name) is not None:
            raise InvalidRequest(f"{where}.{name} is not supported; send the assistant's text as content and its "
                                 "calls as tool_calls", f"{where}.{name}")
    blocks: list[dict[str, Any]] = []
    if message.get("content") is not None:
        text = _text(message["content"], f"{where}.content")
        if text:
            blocks.append({"text": text})
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise InvalidRequest(f"{where}.tool_calls must be a list", f"{where}.tool_calls")
    for j, call in enumerate(calls):
        at = f"{where}.tool_calls[{j}]"
        call = fields.body_object(call, at)
        fields.only_fields(call, {"id", "type", "function"}, f"{at}.")
        if call.get("type", "function") != "function":
            raise InvalidRequest(f"{at}.type must be function", f"{at}.type")
        call_id = call.get("id")
        if not isinstance(call_id, str) or not _TOOL_CALL_ID.fullmatch(call_id):
            raise InvalidRequest(f"{at}.id must be 1 to 64 letters, digits or _.:-", f"{at}.id")
        function = fields.body_object(call.get("function"), f"{at}.function")
        fields.only_fields(function, {"name", "arguments"}, f"{at}.function.")
        name = fields.string(function, "name", f"{at}.function.")
        arguments = function.get("arguments")
        try:
            parsed = json.loads(arguments) if isinstance(arguments, str) else None
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise InvalidRequest(f"{at}.function.arguments must be a JSON object written as a string",
                                 f"{at}.function.arguments")
        blocks.append({"toolUse": {"toolUseId": call_id, "name": name, "input": parsed}})
    return blocks or [{"text": ""}]


def _text(content: Any, where: str) -> str:
    """A message's content: a string, or text parts (joined by newlines, as the parts are read in turn)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest(f"{where} must be a string or a list of text parts", where)
    texts = []
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        part = fields.body_object(part, at)
        kind = part.get("type")
        if kind in _NOT_TEXT:
            raise InvalidRequest(f"{at}: {kind} parts are not supported: this server's models read text only",
                                 f"{at}.type")
        if kind != "text":
            raise InvalidRequest(f"{at}.type must be text, got {json.dumps(kind)}", f"{at}.type")
        fields.only_fields(part, {"type", "text"}, f"{at}.")
        if not isinstance(part.get("text"), str):
            raise InvalidRequest(f"{at}.text must be a string", f"{at}.text")
        texts.append(part["text"])
    return "\n".join(texts)


def _add(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Append a turn, or join it to the last one of the same role (Converse alternates roles)."""
    if not turns or turns[-1]["role"] != role:
        turns.append({"role": role, "content": blocks})
        return
    content = turns[-1]["content"]
    for block in blocks:
        if "text" in block and any("text" in b for b in content):
            block = {"text": "\n\n" + block["text"]}  # the runtime joins a turn's text blocks as they stand
        content.append(block)


# -- tools and structured answers -----------------------------------------------------------------------

def tools(offered: Any, choice: Any, turns: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Converse's toolConfig for `tools` and `tool_choice`, or None.

    `tool_choice` none sends no tools at all (Converse has no "described but never called"): the model
    cannot call one, as asked, but is not told of them either. A conversation that already holds tool
    calls needs the tools described, so none is refused there."""
    if offered is None or offered == []:
        if choice is not None and choice != "none":
            raise InvalidRequest("tool_choice is only allowed when tools are specified", "tool_choice")
        return None
    if not isinstance(offered, list):
        raise InvalidRequest("tools must be a list", "tools")
    specs = [{"toolSpec": _tool(entry, f"tools[{k}]")} for k, entry in enumerate(offered)]
    if choice == "none":
        if any("toolUse" in b or "toolResult" in b for turn in turns for b in turn["content"]):
            raise InvalidRequest("tool_choice none is not supported on a conversation that holds tool calls: this "
                                 "server cannot describe tools without letting the model call them; send auto",
                                 "tool_choice", "unsupported_value")
        return None
    return {"tools": specs, "toolChoice": _choice(choice, [s["toolSpec"]["name"] for s in specs])}


def _tool(entry: Any, where: str) -> dict[str, Any]:
    entry = fields.body_object(entry, where)
    if entry.get("type") != "function":
        raise InvalidRequest(f"{where}.type must be function; other tool types are not supported",
                             f"{where}.type")
    fields.only_fields(entry, {"type", "function"}, f"{where}.")
    function = fields.body_object(entry.get("function"), f"{where}.function")
    fields.only_fields(function, {"name", "description", "parameters", "strict"}, f"{where}.function.")
    name = function.get("name")
    if not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
        raise InvalidRequest(f"{where}.function.name must be 1 to 64 letters, digits, underscores or hyphens",
                             f"{where}.function.name")
    parameters = function.get("parameters")
    if parameters is None:
        parameters = {"type": "object", "properties": {}}
    fields.body_object(parameters, f"{where}.function.parameters")
    spec: dict[str, Any] = {"name": name, "inputSchema": {"json": parameters}}
    description = function.get("description")
    if description is not None and not isinstance(description, str):
        raise InvalidRequest(f"{where}.function.description must be a string", f"{where}.function.description")
    if description:
        spec["description"] = description
    if function.get("strict") is not None:
        spec["strict"] = fields.boolean(function, "strict", where=f"{where}.function.")
    return spec


def _choice(choice: Any, names: list[str]) -> dict[str, Any]:
    if choice is None or choice == "auto":
        return {"auto": {}}
    if choice == "required":
        return {"any": {}}
    if isinstance(choice, dict) and choice.get("type") == "function":
        fields.only_fields(choice, {"type", "function"}, "tool_choice.")
        function = fields.body_object(choice.get("function"), "tool_choice.function")
        fields.only_fields(function, {"name"}, "tool_choice.function.")
        name = fields.string(function, "name", "tool_choice.function.")
        if name not in names:
            raise InvalidRequest(f"tool_choice names the function {name}, which is not in tools "
                                 f"({', '.join(names)})", "tool_choice.function.name")
        return {"tool": {"name": name}}
    raise InvalidRequest("tool_choice must be none, auto, required, or {\"type\": \"function\", \"function\": "
                         "{\"name\": ...}}", "tool_choice")


def response_format(value: Any) -> dict[str, Any] | None:
    """Converse's outputConfig for `response_format`: json_object is any JSON object, json_schema the caller's
    schema; both are enforced by the grammar. With `strict`, a schema keyword the grammar cannot enforce
    (uniqueItems, not, if/then...) is refused, as toolSpec.strict refuses it; without, it is left to the model,
    as Converse does for answer schemas (Converse's jsonSchema has no strict member, so the door checks it)."""
    if value is None:
        return None
    value = fields.body_object(value, "response_format")
    kind = value.get("type")
    if kind == "text":
        fields.only_fields(value, {"type"}, "response_format.")
        return None
    if kind == "json_object":
        fields.only_fields(value, {"type"}, "response_format.")
        definition: dict[str, Any] = {"schema": json.dumps({"type": "object"}), "name": "json_object"}
    elif kind == "json_schema":
        fields.only_fields(value, {"type", "json_schema"}, "response_format.")
        spec = fields.body_object(value.get("json_schema"), "response_format.json_schema")
        where = "response_format.json_schema."
        fields.only_fields(spec, {"name", "description", "schema", "strict"}, where)
        schema = fields.body_object(spec.get("schema", {"type": "object"}), f"{where}schema")
        if fields.boolean(spec, "strict", where=where):
            try:
                tool_use.checked_schema(schema, "The JSON schema of response_format", strict=True)
            except ValidationException as exc:
                raise InvalidRequest(f"{exc.message} (json_schema.strict is true: the answer must be held to every "
                                     "keyword; send strict false to leave the ones the grammar cannot enforce to "
                                     "the model)", f"{where}schema") from None
        definition = {"schema": json.dumps(schema), "name": fields.string(spec, "name", where)}
        if spec.get("description") is not None:
            if not isinstance(spec["description"], str):
                raise InvalidRequest(f"{where}description must be a string", f"{where}description")
            definition["description"] = spec["description"]
    else:
        raise InvalidRequest(f"response_format.type must be text, json_object or json_schema, got "
                             f"{json.dumps(kind)}", "response_format.type")
    return {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": definition}}}


# -- the answer -------------------------------------------------------------------------------------------

def completion(answers: dict[str, Any] | list[dict[str, Any]], *, completion_id: str, created: int,
               model: str) -> dict[str, Any]:
    """Converse's answer (or one per choice, in order) as a `chat.completion`."""
    answers = [answers] if isinstance(answers, dict) else answers
    return {"id": completion_id, "object": "chat.completion", "created": created, "model": model,
            "choices": [_choice_of(answer, index) for index, answer in enumerate(answers)],
            "usage": usage(*(answer["usage"] for answer in answers))}


def _choice_of(answer: dict[str, Any], index: int) -> dict[str, Any]:
    content = answer["output"]["message"]["content"]
    text = "".join(block["text"] for block in content if "text" in block)
    calls = [block["toolUse"] for block in content if "toolUse" in block]
    message: dict[str, Any] = {"role": "assistant", "content": None if calls and not text else text,
                               "refusal": None}
    if calls:
        message["tool_calls"] = [{"id": c["toolUseId"], "type": "function",
                                  "function": {"name": c["name"], "arguments": json.dumps(c["input"])}}
                                 for c in calls]
    return {"index": index, "message": message, "logprobs": None,
            "finish_reason": FINISH_REASONS.get(answer["stopReason"], "stop")}


def usage(*converse_usages: dict[str, int]) -> dict[str, int]:
    """OpenAI's usage for one or more choices of one prompt: the prompt counted once (as OpenAI counts it), the
    completions' tokens added up."""
    prompt = converse_usages[0]["inputTokens"]
    completion_tokens = sum(u["outputTokens"] for u in converse_usages)
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens}


def chunks(events: Iterable[tuple[str, dict[str, Any]]], *, completion_id: str, created: int, model: str,
           include_usage: bool) -> Iterator[dict[str, Any]]:
    """ConverseStream's events as `chat.completion.chunk`s: the role first, text and tool-call deltas as they
    come (a call's id and name, then its arguments piece by piece), the finish reason, then (when asked
    for) a last chunk with the usage and no choices."""
    return choice_chunks(((0, name, event) for name, event in events), 1, completion_id=completion_id,
                         created=created, model=model, include_usage=include_usage)


def choice_chunks(events: Iterable[tuple[int, str, dict[str, Any]]], n: int, *, completion_id: str, created: int,
                  model: str, include_usage: bool) -> Iterator[dict[str, Any]]:
    """`chunks` for `n` choices: each ConverseStream event tagged with its choice's index, the streams in any
    interleaving; each chunk carries its choice's index, and the usage chunk comes once every choice has ended,
    with their tokens added up (`usage`)."""
    tool_index = [-1] * n
    usages: list[dict[str, int] | None] = [None] * n

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        out = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
               "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if include_usage:
            out["usage"] = None
        return out

    for index, name, event in events:
        if name == "messageStart":
            yield chunk(index, {"role": "assistant", "content": "", "refusal": None})
        elif name == "contentBlockStart" and "toolUse" in event["start"]:
            tool_index[index] += 1
            start = event["start"]["toolUse"]
            yield chunk(index, {"tool_calls": [{"index": tool_index[index], "id": start["toolUseId"],
                                                "type": "function",
                                                "function": {"name": start["name"], "arguments": ""}}]})
        elif name == "contentBlockDelta":
            delta = event["delta"]
            if delta.get("text"):
                yield chunk(index, {"content": delta["text"]})
            elif "toolUse" in delta:
                yield chunk(index, {"tool_calls": [{"index": tool_index[index],
                                                    "function": {"arguments": delta["toolUse"]["input"]}}]})
        elif name == "messageStop":
            yield chunk(index, {}, FINISH_REASONS.get(event["stopReason"], "stop"))
        elif name == "metadata":
            usages[index] = event["usage"]
            if include_usage and all(u is not None for u in usages):
                yield {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                       "choices": [], "usage": usage(*usages)}
