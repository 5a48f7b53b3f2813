"""Tool use and structured output: how tools reach a model's prompt, and how its calls come back.

Three steps, shared by Converse, ConverseStream and the Anthropic Messages body of InvokeModel:

1. **Parse** the request's tools (`ToolSet`: each tool's name, description and JSON schema, and the tool
   choice) and its conversation, whose messages may carry tool calls (assistant) and tool results (user),
   into one neutral form (`ToolCall`, `ToolResult` on a message dict). Every schema is compiled here, so
   a bad one is a ValidationException naming its tool before any model loads.
2. **Prompt** through the model's own chat template where it renders tools (Hermes-style `<tool_call>`
   templates such as Qwen 2.5's, Llama 3.1's JSON calls, Mistral's `[TOOL_CALLS]`), and otherwise (SmolLM2,
   the tiny test models) through `FALLBACK_PROMPT` in the system message with calls and results written
   into the turns as text. `CallSyntax` is how the chosen prompt asks the model to write a call.
3. **Constrain and read back.** `grammar` builds the decoding grammar (inference/grammar.py): with
   `toolChoice` auto, free text in which a call, once its trigger is written, must be exactly one of the
   tools with arguments valid against its schema; with `any` or `tool`, calls from the first token on.
   `CallReader` reads the generated text, whole or delta by delta, into text and tool calls: the same
   code answers Converse and streams ConverseStream's `contentBlockStart`/`toolUse` deltas.

A structured answer (Converse `outputConfig.textFormat`) is the same constraint on a plain answer: one
JSON document valid against the caller's schema.

4. **Check** what the grammar could not enforce: `checked_calls` validates a call against its tool's whole
   schema once it is written (jsonschema), and has the model write it again when it fails (`CheckedCalls`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import secrets
import string
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from outcrop.errors import ModelErrorException, ValidationException
from outcrop.inference.chat import FALLBACK_TOOL_SYNTAX, chat_template, render_chat, template_tool_syntax
from outcrop.inference.grammar import GrammarError, check_grammar, json_rule, json_schema_grammar

if TYPE_CHECKING:  # the engine's types (torch, transformers): imported where a generation runs, not to parse
    from outcrop.inference.sampling import SamplingParams
    from outcrop.inference.scheduler import Completion

#: The most tools one request may carry, and the largest schema (JSON text) one tool may have. Bedrock
#: documents neither; these keep one request from compiling an unbounded grammar on the server.
MAX_TOOLS = 128
MAX_SCHEMA_BYTES = 64 * 1024
#: All of one request's schemas together: compiling them costs CPU on the request's thread.
MAX_TOTAL_SCHEMA_BYTES = 256 * 1024

AUTO, ANY, TOOL, NONE = "auto", "any", "tool", "none"

#: Bedrock's words when a conversation carries tool blocks but the request has no tools.
TOOL_CONFIG_REQUIRED = "The toolConfig field must be defined when using toolUse and toolResult content blocks."


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    #: The arguments' JSON schema, as canonical JSON text (hashable, and the cache key of its grammar).
    schema: str
    #: Refuse what the grammar cannot enforce (toolSpec.strict), instead of leaving it to the model.
    strict: bool = False

    @property
    def parameters(self) -> dict[str, Any]:
        return json.loads(self.schema)

    @property
    def enforced(self) -> bool:
        """Whether the grammar enforces the whole schema, so that every call it lets through validates."""
        return _enforced(self.schema)

    def error(self, arguments: Any) -> str | None:
        """Why `arguments` fail this tool's schema (where, and the keyword), or None when they validate."""
        return schema_error(self.schema, arguments)


@dataclass(frozen=True)
class ToolSet:
    """The tools a request offers and how the model must use them."""

    tools: tuple[Tool, ...]
    #: AUTO: the model may answer or call; ANY: it must call one or more; TOOL: it must call `forced`;
    #: NONE (Anthropic's): tools are described but never called.
    choice: str = AUTO
    forced: str | None = None

    def names(self) -> list[str]:
        return [t.name for t in self.tools]


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    input: dict[str, Any]


@dataclass(frozen=True)
class ToolResult:
    id: str
    #: The result as the model reads it: text, or JSON text for a json block.
    content: str
    error: bool = False


def new_tool_use_id() -> str:
    """An id in Bedrock's form (`tooluse_` and 22 letters or digits)."""
    alphabet = string.ascii_letters + string.digits
    return "tooluse_" + "".join(secrets.choice(alphabet) for _ in range(22))


# -- 1. parse ---------------------------------------------------------------------------------------

def tool(name: Any, description: Any, schema: Any, where: str, strict: Any = False) -> Tool:
    """One tool, its schema checked as a JSON schema and compiled, or a ValidationException naming it.

    A schema names an object whether or not it says `"type": "object"` (Bedrock's and Anthropic's
    reading), and is compiled as one, so the arguments are always an object. With `strict`, a keyword
    the grammar cannot enforce (uniqueItems, not, if/then/else...) is refused; without it, the grammar
    enforces the rest (llguidance's lenient mode), so the schemas pydantic and LangChain write for sets and
    unions still work, and each call is validated against the whole schema once written (`checked_calls`)."""
    if not isinstance(name, str) or not re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", name):
        raise ValidationException(f"{where}.name must be 1 to 64 letters, digits, underscores or hyphens "
                                  f"(pattern [a-zA-Z0-9_-]+), got {name!r}")
    if description is not None and not isinstance(description, str):
        raise ValidationException(f"{where}.description of tool {name} must be a string")
    if not isinstance(schema, dict):
        raise ValidationException(f"The input schema of tool {name} ({where}) must be a JSON object")
    if not isinstance(strict, bool):
        raise ValidationException(f"{where}.strict of tool {name} must be a boolean")
    if schema.get("type", "object") != "object":
        raise ValidationException(f"The input schema of tool {name} must describe a JSON object (type object).")
    schema = {"type": "object", **schema}
    return Tool(name, description or "", checked_schema(schema, f"The input schema of tool {name}", strict), strict)


def checked_schema(schema: dict[str, Any], subject: str, strict: bool) -> str:
    """`schema` as canonical JSON text, once it is known to be a JSON schema (jsonschema's metaschema
    check) that fits the size limit and compiles to a grammar; else a ValidationException on `subject`."""
    # Keys keep the caller's order: the grammar writes properties in schema order ("reasoning" before
    # "answer" is a choice the caller made on purpose).
    text = json.dumps(schema, separators=(",", ":"))
    size = len(text.encode())
    if size > MAX_SCHEMA_BYTES:
        raise ValidationException(f"{subject} is {size} bytes; the limit is {MAX_SCHEMA_BYTES} bytes.")
    _check_schema(text, subject, strict)
    return text


@lru_cache(maxsize=512)
def _check_schema(schema: str, subject: str, strict: bool) -> None:
    import jsonschema

    document = json.loads(schema)
    try:
        jsonschema.validators.validator_for(document).check_schema(document)
    except jsonschema.SchemaError as exc:
        raise ValidationException(f"{subject} is not a valid JSON schema: {exc.message}") from None
    if strict and '"oneOf"' in schema:  # compiles, but the grammar reads it as anyOf (see _enforced)
        raise ValidationException(f"{subject} cannot be enforced: oneOf is read as anyOf (a value may match two "
                                  "branches)")
    try:
        check_grammar(json_schema_grammar(document, lenient=not strict))
    except GrammarError as exc:
        raise ValidationException(f"{subject} cannot be enforced: {exc}") from None


@lru_cache(maxsize=512)
def _validator(schema: str) -> Any:
    import jsonschema

    document = json.loads(schema)
    return jsonschema.validators.validator_for(document)(document)


def schema_error(schema: str, instance: Any) -> str | None:
    """Why `instance` fails the JSON schema `schema` (JSON text): where, the keyword, and jsonschema's words."""
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator(schema).iter_errors(instance))
    if error is None:
        return None
    return f"{error.json_path} fails {error.validator}: {error.message}"


@lru_cache(maxsize=512)
def _enforced(schema: str) -> bool:
    """Whether a grammar enforces every keyword of `schema`: it compiles strictly (llguidance refuses what it
    cannot enforce) and has no oneOf, which a grammar reads as anyOf (a value may match two branches)."""
    if '"oneOf"' in schema:
        return False
    try:
        check_grammar(json_schema_grammar(json.loads(schema), lenient=False))
    except GrammarError:
        return False
    return True


def tool_set(tools: list[Tool], choice: str, forced: str | None, tools_field: str, choice_field: str) -> ToolSet:
    """The tools checked together (a name once, a forced tool among them); the fields name the request's."""
    if not tools:
        raise ValidationException(f"{tools_field} must name at least one tool")
    if len(tools) > MAX_TOOLS:
        raise ValidationException(f"{tools_field} has {len(tools)} tools; the limit is {MAX_TOOLS}.")
    total = sum(len(t.schema.encode()) for t in tools)
    if total > MAX_TOTAL_SCHEMA_BYTES:
        raise ValidationException(f"The schemas of {tools_field} are {total} bytes together; the limit is "
                                  f"{MAX_TOTAL_SCHEMA_BYTES} bytes.")
    names = [t.name for t in tools]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise ValidationException(f"{tools_field} names the tool {duplicate} more than once")
    if choice == TOOL and forced not in names:
        raise ValidationException(f"{choice_field} names the tool {forced}, which is not in {tools_field} "
                                  f"({', '.join(names)})")
    return ToolSet(tuple(tools), choice, forced if choice == TOOL else None)


def converse_tool_set(config: dict[str, Any] | None) -> ToolSet | None:
    """Converse's `toolConfig`."""
    if config is None:
        return None
    tools = []
    for i, entry in enumerate(config.get("tools") or []):
        where = f"toolConfig.tools.{i}"
        if "toolSpec" not in entry:
            kind = next(iter(entry), "unknown")
            raise ValidationException(f"{where}: {kind} is not supported by this server; "
                                      "only toolSpec tools are (Outcrop has no prompt cache or system tools).")
        spec = entry["toolSpec"]
        schema = (spec.get("inputSchema") or {}).get("json")
        tools.append(tool(spec.get("name"), spec.get("description"), schema, f"{where}.toolSpec",
                          spec.get("strict", False)))
    choice = config.get("toolChoice") or {"auto": {}}
    kinds = [k for k in choice if k in (AUTO, ANY, TOOL)]
    if len(kinds) != 1 or len(choice) != 1:
        raise ValidationException(f"toolConfig.toolChoice must hold exactly one of auto, any or tool; "
                                  f"got {', '.join(choice) or 'none'}")
    kind = kinds[0]
    return tool_set(tools, kind, (choice.get("tool") or {}).get("name"), "toolConfig.tools", "toolConfig.toolChoice")


def anthropic_tool_set(tools: Any, choice: Any) -> ToolSet | None:
    """The Anthropic Messages body's `tools` and `tool_choice`."""
    if not tools:  # absent, or an empty list: no tools
        if choice is not None:
            raise ValidationException("tool_choice may only be specified while providing tools.")
        return None
    if not isinstance(tools, list):
        raise ValidationException("tools must be a list")
    parsed = []
    for i, entry in enumerate(tools):
        if not isinstance(entry, dict):
            raise ValidationException(f"tools.{i} must be an object")
        if entry.get("type") not in (None, "custom"):
            raise ValidationException(f"tools.{i}: the tool type {entry.get('type')!r} is not supported; "
                                      "only custom tools with an input_schema are")
        extra = sorted(set(entry) - {"name", "description", "input_schema", "type"})
        if extra:
            raise ValidationException(f"tools.{i}: extraneous key [{', '.join(extra)}] is not permitted")
        parsed.append(tool(entry.get("name"), entry.get("description"), entry.get("input_schema"), f"tools.{i}"))
    choice = choice if choice is not None else {"type": AUTO}
    if not isinstance(choice, dict) or choice.get("type") not in (AUTO, ANY, TOOL, NONE):
        raise ValidationException("tool_choice.type must be one of auto, any, tool, none")
    allowed = {"type", "disable_parallel_tool_use"} | ({"name"} if choice["type"] == TOOL else set())
    extra = sorted(set(choice) - allowed)
    if extra:
        raise ValidationException(f"tool_choice: extraneous key [{', '.join(extra)}] is not permitted "
                                  f"for type {choice['type']}")
    if not isinstance(choice.get("disable_parallel_tool_use", False), bool):
        raise ValidationException("tool_choice.disable_parallel_tool_use must be a boolean")
    # disable_parallel_tool_use needs nothing more: this server's models make one call per turn (`grammar`).
    return tool_set(parsed, choice["type"], choice.get("name"), "tools", "tool_choice")


def converse_messages(messages: list[dict[str, Any]], tools: ToolSet | None) -> list[dict[str, Any]]:
    """Converse messages as the neutral chat: {"role", "content": text, "tool_calls", "tool_results"}."""
    chat = []
    for i, message in enumerate(messages):
        texts, calls, results = [], [], []
        for block in message["content"]:
            if "text" in block:
                texts.append(block["text"])
            elif "guardContent" in block:
                texts.append(block["guardContent"].get("text", {}).get("text", ""))
            elif "toolUse" in block:
                use = block["toolUse"]
                if use.get("type") is not None:
                    raise ValidationException(f"messages.{i}: toolUse type {use['type']!r} is not supported; "
                                              "this server runs no server-side tools")
                if not isinstance(use.get("input"), dict):
                    raise ValidationException(f"messages.{i}: the input of toolUse {use['toolUseId']} "
                                              "must be a JSON object")
                calls.append(ToolCall(use["toolUseId"], use["name"], use["input"]))
            elif "toolResult" in block:
                result = block["toolResult"]
                if result.get("type") is not None:
                    raise ValidationException(f"messages.{i}: toolResult type {result['type']!r} is not "
                                              "supported; this server runs no server-side tools")
                results.append(ToolResult(result["toolUseId"], _converse_result_text(result["content"], i),
                                          result.get("status") == "error"))
            else:
                kind = next(iter(block), "unknown")
                raise ValidationException(
                    f"This model doesn't support the {kind} content block that you provided (messages.{i}).")
        chat.append(_message(message["role"], "".join(texts), calls, results, i))
    check_tool_turns(chat, tools)
    return chat


def _converse_result_text(content: list[dict[str, Any]], index: int) -> str:
    parts = []
    for block in content:
        if "text" in block:
            parts.append(block["text"])
        elif "json" in block:
            parts.append(json.dumps(block["json"]))
        else:
            kind = next(iter(block), "unknown")
            raise ValidationException(f"messages.{index}: a toolResult's {kind} content is not supported by "
                                      "this model; send text or json.")
    return "\n".join(parts)


def anthropic_messages(messages: list[dict[str, Any]], tools: ToolSet | None) -> list[dict[str, Any]]:
    """Anthropic Messages content (a string, or text, tool_use and tool_result blocks) as the neutral chat."""
    chat = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise ValidationException(f"messages.{i}.role must be 'user' or 'assistant'")
        content = message.get("content")
        where = f"messages.{i}.content"
        if isinstance(content, str):
            chat.append(_message(message["role"], content, [], [], i))
            continue
        if not isinstance(content, list):
            raise ValidationException(f"{where} must be a string or a list of content blocks")
        texts, calls, results = [], [], []
        for j, block in enumerate(content):
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            if isinstance(block, dict) and "cache_control" in block:
                raise ValidationException(f"{where}.{j}: cache_control is not supported: this server has no "
                                          "prompt cache")
            if kind == "text" and isinstance(block.get("text"), str):
                texts.append(block["text"])
            elif kind == "tool_use":
                if not isinstance(block.get("input"), dict) or not isinstance(block.get("id"), str) \
                        or not isinstance(block.get("name"), str):
                    raise ValidationException(f"{where}.{j}: a tool_use block needs an id, a name and an input "
                                              "object")
                calls.append(ToolCall(block["id"], block["name"], block["input"]))
            elif kind == "tool_result":
                results.append(ToolResult(str(block.get("tool_use_id")),
                                           _anthropic_result_text(block.get("content", ""), f"{where}.{j}"),
                                           bool(block.get("is_error"))))
            else:
                raise ValidationException(f"{where}: content blocks of type {kind!r} are not supported by this model")
        chat.append(_message(message["role"], "".join(texts), calls, results, i))
    check_tool_turns(chat, tools)
    return chat


def _anthropic_result_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(b, dict) and b.get("type") == "text" for b in content):
        return "\n".join(str(b.get("text", "")) for b in content)
    raise ValidationException(f"{where}: tool_result content must be a string or a list of text blocks")


def _message(role: str, text: str, calls: list[ToolCall], results: list[ToolResult], index: int) -> dict[str, Any]:
    if calls and role != "assistant":
        raise ValidationException(f"messages.{index}: toolUse blocks may only appear in assistant messages")
    if results and role != "user":
        raise ValidationException(f"messages.{index}: toolResult blocks may only appear in user messages")
    message: dict[str, Any] = {"role": role, "content": text}
    if calls:
        message["tool_calls"] = calls
    if results:
        message["tool_results"] = results
    return message


def check_tool_turns(chat: list[dict[str, Any]], tools: ToolSet | None) -> None:
    """Tool blocks need tools; each assistant message's calls are answered, one result per call, by the user
    message right after it (when there is one), and by no other; a toolUseId is used once."""
    seen: set[str] = set()
    pending: dict[str, str] = {}
    for i, message in enumerate(chat):
        calls, results = message.get("tool_calls", ()), message.get("tool_results", ())
        if (calls or results) and tools is None:
            raise ValidationException(TOOL_CONFIG_REQUIRED)
        if message["role"] == "user":
            answered = [r.id for r in results]
            for result_id in answered:
                if result_id not in pending:
                    raise ValidationException(
                        f"messages.{i}: the toolResult's toolUseId {result_id} matches no toolUse of the "
                        "assistant message before it. Each toolResult must answer a toolUse of the previous "
                        "assistant message.")
            if len(set(answered)) != len(answered):
                raise ValidationException(f"messages.{i}: more than one toolResult answers the same toolUseId")
            missing = sorted(set(pending) - set(answered))
            if missing:
                raise ValidationException(f"messages.{i}: expected toolResult blocks for the toolUse ids "
                                          f"{', '.join(missing)} of the previous assistant message")
            pending = {}
        else:
            for call in calls:
                if call.id in seen:
                    raise ValidationException(f"messages.{i}: the toolUseId {call.id} is used more than once")
                seen.add(call.id)
            pending = {call.id: call.name for call in calls}


# -- 2. prompt --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CallSyntax:
    """How a prompt asks the model to write one tool call: `opening` name `,` "args_key": args `closing`."""

    name: str
    #: The text that starts a call, and what `toolChoice` auto waits for before constraining.
    trigger: str
    opening: str
    args_key: str
    closing: str
    #: Parts of the call that a template's tokenizer may hold as one added token (`marker_tokens`).
    markers: tuple[str, ...] = ()

    @property
    def separator(self) -> str:
        """What comes between the tool's name and its arguments."""
        return f", {json.dumps(self.args_key)}: "

    def head(self, tool_name: str) -> str:
        return f"{self.opening}{json.dumps(tool_name)}{self.separator}"

    def write(self, call: ToolCall) -> str:
        return self.head(call.name) + json.dumps(call.input) + self.closing


#: Qwen 2.5, Hermes, SmolLM3 and our fallback prompt: <tool_call>{"name": .., "arguments": ..}</tool_call>.
HERMES = CallSyntax("hermes", "<tool_call>", '<tool_call>\n{"name": ', "arguments", "}\n</tool_call>",
                    ("<tool_call>", "</tool_call>"))
#: Llama 3.1+ JSON tool calling: {"name": .., "parameters": ..}.
LLAMA3 = CallSyntax("llama3-json", '{"name": ', '{"name": ', "parameters", "}")
#: Mistral v3 templates: [TOOL_CALLS][{"name": .., "arguments": ..}].
MISTRAL = CallSyntax("mistral", "[TOOL_CALLS]", '[TOOL_CALLS][{"name": ', "arguments", "}]", ("[TOOL_CALLS]",))

FALLBACK_PROMPT = """# Tools

You can call the tools below. Each line describes one tool: its name, what it does, and the JSON schema of \
its arguments.
{tools}

To call a tool, write exactly this, with the tool's name and its arguments as a JSON object:
<tool_call>
{{"name": "tool_name", "arguments": {{"argument": "value"}}}}
</tool_call>
A call ends your answer: call one tool at a time.
{rule}Tool results come back to you inside <tool_response></tool_response> tags."""

_RULES = {AUTO: "Call a tool only when it helps answer; otherwise answer directly.\n",
          ANY: "You must call at least one tool now.\n", TOOL: "You must call the tool {forced} now.\n",
          NONE: "Do not call any tool now; answer directly.\n"}


SYNTAXES = {syntax.name: syntax for syntax in (HERMES, LLAMA3, MISTRAL)}


@dataclass(frozen=True)
class Prompting:
    """How one model is prompted for tools: through its template (`native`) or the fallback, and the syntax."""

    syntax: CallSyntax
    native: bool


def prompting(tokenizer: Any) -> Prompting:
    """Read the model's chat template: does it render tools, and in which call syntax does it ask for them."""
    name = template_tool_syntax(chat_template(tokenizer))
    return Prompting(SYNTAXES[name], True) if name else Prompting(SYNTAXES[FALLBACK_TOOL_SYNTAX], False)


def marker_tokens(tokenizer: Any, syntax: CallSyntax) -> tuple[tuple[str, int], ...]:
    """The syntax's markers that the tokenizer holds as one added token (Qwen 2.5's <tool_call>, Mistral's
    [TOOL_CALLS]), with their ids. The model writes a marker as that token, and the grammar must allow it
    there (a grammar's text never matches an added token, which llguidance treats as special)."""
    added = tokenizer.get_added_vocab() if hasattr(tokenizer, "get_added_vocab") else {}
    return tuple((marker, added[marker]) for marker in syntax.markers if marker in added)


def render(tokenizer: Any, chat: list[dict[str, Any]], system: str, tools: ToolSet | None,
           answer_prompt: str = "") -> str:
    """The prompt text for a conversation that may carry tools, calls and results, and a structured answer's
    instructions (`answer_instructions`) for the system turn."""
    if tools is None:
        return render_chat(tokenizer, [{"role": m["role"], "content": m["content"]} for m in chat],
                           _joined(system, answer_prompt))
    how = prompting(tokenizer)
    if how.native:
        functions = [{"type": "function", "function": {"name": t.name, "description": t.description,
                                                       "parameters": t.parameters}} for t in tools.tools]
        return render_chat(tokenizer, _template_chat(chat), _joined(system, answer_prompt), tools=functions)
    listing = "\n".join(json.dumps({"name": t.name, "description": t.description, "parameters": t.parameters})
                        for t in tools.tools)
    rule = _RULES[tools.choice].format(forced=tools.forced)
    instructions = FALLBACK_PROMPT.format(tools=listing, rule=rule)
    return render_chat(tokenizer, _fallback_chat(chat, how.syntax), _joined(system, answer_prompt, instructions))


def _joined(*parts: str) -> str:
    """System-turn parts, a blank line apart (the empty ones left out)."""
    return "\n\n".join(part for part in parts if part)


def template_call_id(tool_use_id: str) -> str:
    """A toolUseId as a template sees it: 9 letters and digits, derived from the id (Mistral's templates
    refuse any other shape; the others take any string). The same id gives the same alias in every turn."""
    digest = int.from_bytes(hashlib.sha256(tool_use_id.encode()).digest()[:8], "big")
    alphabet = string.ascii_letters + string.digits
    return "".join(alphabet[(digest // len(alphabet) ** k) % len(alphabet)] for k in range(9))


def _template_chat(chat: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation in transformers' tool-calling message format, for templates that render tools."""
    names: dict[str, str] = {}
    out = []
    for message in chat:
        for result in message.get("tool_results", ()):
            content = f"Error: {result.content}" if result.error else result.content
            out.append({"role": "tool", "tool_call_id": template_call_id(result.id),
                        "name": names.get(result.id, ""), "content": content})
        entry: dict[str, Any] = {"role": message["role"], "content": message["content"]}
        if message.get("tool_calls"):
            entry["tool_calls"] = [{"id": template_call_id(c.id), "type": "function",
                                    "function": {"name": c.name, "arguments": c.input}}
                                   for c in message["tool_calls"]]
            names.update({c.id: c.name for c in message["tool_calls"]})
        if entry["content"] or "tool_calls" in entry or not message.get("tool_results"):
            out.append(entry)
    return out


def _fallback_chat(chat: list[dict[str, Any]], syntax: CallSyntax) -> list[dict[str, Any]]:
    """The conversation as plain turns: calls written as the model is asked to write them, results in tags."""
    names: dict[str, str] = {}
    out = []
    for message in chat:
        parts = []
        for result in message.get("tool_results", ()):
            body = {"name": names.get(result.id, ""), "content": result.content}
            if result.error:
                body["status"] = "error"
            parts.append(f"<tool_response>\n{json.dumps(body)}\n</tool_response>")
        if message["content"]:
            parts.append(message["content"])
        for call in message.get("tool_calls", ()):
            names[call.id] = call.name
            parts.append(syntax.write(call))
        out.append({"role": message["role"], "content": "\n".join(parts)})
    return out


# -- 3. constrain and read back ---------------------------------------------------------------------

def grammar(syntax: CallSyntax | None, tools: ToolSet | None, answer_schema: dict[str, Any] | None,
            markers: tuple[tuple[str, int], ...] = ()) -> str | None:
    """The decoding grammar for a request's tools and structured answer; None when the text is free.
    `markers` are the syntax's marker tokens in the serving model's tokenizer (`marker_tokens`)."""
    if tools is None or tools.choice == NONE:
        return json_schema_grammar(answer_schema, lenient=True) if answer_schema is not None else None
    return _tools_grammar(syntax, tools, json.dumps(answer_schema) if answer_schema is not None else None, markers)


def _literal(text: str, markers: tuple[tuple[str, int], ...]) -> str:
    """`text` as a Lark sequence: quoted strings, with each marker that is one token as that token."""
    parts = []
    while text:
        found = [(text.find(m), m, token) for m, token in markers if m in text]
        if not found:
            parts.append(json.dumps(text))
            break
        at, marker, token = min(found)
        if at:
            parts.append(json.dumps(text[:at]))
        parts.append(f"<[{token}]>")
        text = text[at + len(marker):]
    return " ".join(parts)


@lru_cache(maxsize=256)
def _tools_grammar(syntax: CallSyntax, tools: ToolSet, answer_schema: str | None,
                   markers: tuple[tuple[str, int], ...]) -> str:
    """Compiled once per tool set, syntax, answer schema and marker tokens (the grammar text is then the
    matcher cache's key)."""
    offered = [t for t in tools.tools if tools.choice != TOOL or t.name == tools.forced]
    lines = ["%llguidance {}"]
    for i, t in enumerate(offered):
        lines.append(f"args_{i}: {json_rule(t.parameters, lenient=not t.strict)}")
    calls = " | ".join(f"call_{i}" for i in range(len(offered)))
    closing = _literal(syntax.closing, markers)
    trigger_token = dict(markers).get(syntax.trigger)
    # One call per turn, which ends the answer: a small model allowed to go on after its call tends to
    # repeat the same call until max tokens (greedy SmolLM2 writes it nine times).
    if tools.choice in (ANY, TOOL) or answer_schema is not None:
        # A call from the first token, or a JSON answer when one is asked for.
        for i, t in enumerate(offered):
            lines.append(f"call_{i}: {_literal(syntax.head(t.name), markers)} args_{i} {closing}")
        top = calls
        if tools.choice == AUTO:
            lines.append(f"answer: {json_rule(json.loads(answer_schema), lenient=True)}")
            top = f"{top} | answer"
        lines.insert(1, f"start: {top}")
    elif trigger_token is not None:
        # The trigger is one token, which free text can never contain: text, then perhaps a call starting with it.
        for i, t in enumerate(offered):
            lines.append(f"call_{i}: {_literal(syntax.head(t.name), markers)} args_{i} {closing}")
        lines.insert(1, f"start: TEXT ({calls})?")
        # ...nor spell the marker out in pieces, which would start a call no grammar constrains.
        lines.append(f"TEXT: /(.|\\n)*/ & ~/(?s:.*){re.escape(syntax.trigger)}(?s:.*)/")
    else:
        # Free text, until the trigger is written: from there, exactly one tool's call (llguidance's lazy
        # lexeme ends the free text at the first trigger, so a call cannot hide inside prose).
        for i, t in enumerate(offered):
            rest = _literal(syntax.head(t.name)[len(syntax.trigger):], markers)
            lines.append(f"call_{i}: trigger_{i} {rest} args_{i} {closing}")
            lines.append(f"trigger_{i}[lazy]: TEXT {json.dumps(syntax.trigger)}")
        lines.insert(1, f"start: {calls} | TEXT")
        lines.append("TEXT: /(.|\\n)*/")
    text = "\n".join(lines) + "\n"
    try:
        check_grammar(text)
    except GrammarError as exc:
        raise ValidationException(f"The tools cannot be enforced together: {exc}") from None
    return text


@dataclass
class Read:
    """What `CallReader` found in a piece of text: text, a call starting (its id and name), arguments
    text, or a call ending (with the parsed input)."""

    kind: str  # "text" | "start" | "input" | "stop"
    text: str = ""
    call: ToolCall | None = None


@dataclass
class CallReader:
    """Reads generated text, as deltas arrive, into text and tool calls.

    Text that could be the start of the trigger, and whitespace that would only separate text from a
    call, is held back until the next delta says what it is. A call is recognised by its head (the
    trigger, the tool's name, the arguments key); its arguments are passed on as they arrive and end
    where their JSON object closes (a small scanner that knows strings and escapes), after which the
    syntax's closing text is expected. Text that only looked like a call's head stays text."""

    syntax: CallSyntax
    names: frozenset[str]
    #: The tools by name, when calls are checked against their schemas (a call that fails is not passed on).
    tools: dict[str, Tool] = field(default_factory=dict)
    _buffer: str = ""
    _state: str = "text"  # text | head | args | closing
    _args: list[str] = field(default_factory=list)
    _depth: int = 0
    _in_string: bool = False
    _escaped: bool = False
    _call: tuple[str, str] | None = None
    _space: str = ""  # whitespace before a trigger: dropped before a call, text if it was none
    #: A call whose arguments were not a JSON object, or failed its tool's schema (Converse answers stopReason
    #: malformed_tool_use).
    malformed: bool = False
    #: (tool name, why) for each call whose arguments failed its tool's schema (`Tool.error`).
    invalid: list[tuple[str, str]] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)

    def feed(self, delta: str) -> Iterator[Read]:
        self._buffer += delta
        while True:
            progressed = yield from self._step()
            if not progressed:
                return

    def finish(self) -> Iterator[Read]:
        """The text has ended (its end of text, max tokens or a stop sequence). What was held back is text,
        unless it is the start of a trigger; a call whose arguments are complete is a call even if its
        closing text was cut off; a call cut off before that is dropped."""
        if self._state == "text" and self._buffer.strip() and not self.syntax.trigger.startswith(self._buffer.strip()):
            yield Read("text", self._buffer)
        elif self._state == "closing":
            self._buffer = self.syntax.closing
            yield from self._step()
        self._buffer = ""

    def _step(self):
        syntax = self.syntax
        if self._state == "text":
            at = self._buffer.find(syntax.trigger)
            if at < 0:
                keep = _partial_suffix(self._buffer, syntax.trigger)
                safe = self._buffer[:len(self._buffer) - keep]
                text = safe.rstrip()
                if text:
                    yield Read("text", text)
                self._buffer = safe[len(text):] + self._buffer[len(safe):]
                return False
            before = self._buffer[:at]
            text = before.rstrip()
            if text:
                yield Read("text", text)
            self._space = before[len(text):]
            self._buffer, self._state = self._buffer[at:], "head"
            return True
        if self._state == "head":
            match = _head_pattern(syntax).match(self._buffer)
            if match is None:
                if _could_be_head(syntax, self._buffer):
                    return False  # still arriving
                # Not a call after all (only a constraint makes one certain): the trigger is text.
                yield Read("text", self._space + syntax.trigger)
                self._buffer, self._state = self._buffer[len(syntax.trigger):], "text"
                return True
            name = json.loads(match.group(1))
            if name not in self.names:
                yield Read("text", self._space + match.group(0))
                self._buffer, self._state = self._buffer[match.end():], "text"
                return True
            self._call = (new_tool_use_id(), name)
            self._buffer, self._state = self._buffer[match.end():], "args"
            self._args, self._depth, self._in_string, self._escaped = [], 0, False, False
            yield Read("start", call=ToolCall(self._call[0], name, {}))
            return True
        if self._state == "args":
            end = self._scan(self._buffer)
            piece = self._buffer if end is None else self._buffer[:end]
            if piece:
                self._args.append(piece)
                yield Read("input", piece)
            self._buffer = "" if end is None else self._buffer[end:]
            if end is None:
                return False
            self._state = "closing"
            return True
        # closing: the syntax's closing text (a different ending keeps the call and reads on as text)
        closing = syntax.closing
        if len(self._buffer) < len(closing) and closing.startswith(self._buffer):
            return False
        if self._buffer.startswith(closing):
            self._buffer = self._buffer[len(closing):]
        self._state = "text"
        try:
            arguments = json.loads("".join(self._args))
        except ValueError:
            arguments = None
        call = ToolCall(*self._call, arguments if isinstance(arguments, dict) else {})
        checked = self.tools.get(call.name)
        error = checked.error(arguments) if checked is not None and isinstance(arguments, dict) else None
        if isinstance(arguments, dict) and error is None:
            self.calls.append(call)
        else:  # never passed on as a call: a call no grammar constrained, or one its grammar could not hold to
            self.malformed = True
            if error is not None:
                self.invalid.append((call.name, error))
        yield Read("stop", call=call)
        return True

    def _scan(self, text: str) -> int | None:
        """Where the arguments' JSON value ends in `text` (an index past it), or None if not yet."""
        for i, ch in enumerate(text):
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif ch == "\\":
                    self._escaped = True
                elif ch == '"':
                    self._in_string = False
            elif ch == '"':
                self._in_string = True
            elif ch in "{[":
                self._depth += 1
            elif ch in "}]":
                self._depth -= 1
                if self._depth == 0:
                    return i + 1
        return None


def _partial_suffix(text: str, marker: str) -> int:
    """The length of the longest end of `text` that is a beginning of `marker`."""
    for size in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0


_STRING = r'"(?:[^"\\]|\\.)*"'


@lru_cache(maxsize=16)
def _head_pattern(syntax: CallSyntax) -> re.Pattern:
    return re.compile(re.escape(syntax.opening) + f"({_STRING})" + re.escape(syntax.separator))


def _could_be_head(syntax: CallSyntax, text: str) -> bool:
    """Whether `text` is the beginning of a call's head (more deltas may complete it)."""
    if len(text) <= len(syntax.opening):
        return syntax.opening.startswith(text)
    if not text.startswith(syntax.opening):
        return False
    rest = text[len(syntax.opening):]
    name = re.match(_STRING, rest)
    if name is None:  # the name's string is still open
        return re.fullmatch(r'"(?:[^"\\]|\\.)*\\?', rest) is not None
    return syntax.separator.startswith(rest[name.end():])


def read_all(syntax: CallSyntax, tools: ToolSet, text: str) -> tuple[list[str], list[ToolCall]]:
    """A whole answer read at once (`AnswerReader.read`): its text pieces and its complete tool calls."""
    reader = AnswerReader(syntax, tools)
    return [b for b in reader.read(text) if isinstance(b, str)], reader.calls


class AnswerReader:
    """One answer, read from the generated text once, whether it arrives as deltas (a stream) or whole:
    the response, a stream's events and the invocation log then all see the same text and the same tool
    calls, whose ids are made as they are read. Without tools every delta is text, passed on at once."""

    def __init__(self, syntax: CallSyntax | None, tools: ToolSet | None) -> None:
        calling = tools is not None and tools.choice != NONE and syntax is not None
        self._reader = CallReader(syntax, frozenset(tools.names()), {t.name: t for t in tools.tools}) \
            if calling else None
        self._tools = tools
        #: Under `auto`, the answer so far while it may still be a bare JSON call (`bare_call`), held back until
        #: it ends; None once it cannot be one (or a syntax whose calls are bare JSON already, Llama 3's).
        self._bare: str | None = "" if calling and tools.choice == AUTO and not syntax.trigger.startswith("{") \
            else None
        #: The answer's blocks in order: text (consecutive pieces joined) and tool calls.
        self.blocks: list[str | ToolCall] = []
        self._fed = False
        self._tail: list[Read] | None = None

    @property
    def calling(self) -> bool:
        """Whether tool calls are read (the request has tools the model may call)."""
        return self._reader is not None

    @property
    def calls(self) -> list[ToolCall]:
        return self._reader.calls if self._reader else []

    @property
    def malformed(self) -> bool:
        return self._reader.malformed if self._reader else False

    @property
    def invalid(self) -> list[tuple[str, str]]:
        """(tool name, why) for each call that failed its tool's schema (and was not passed on)."""
        return self._reader.invalid if self._reader else []

    def feed(self, delta: str) -> list[Read]:
        self._fed = True
        if self._bare is not None:
            self._bare += delta
            if _may_be_bare_call(self._bare):
                return []
            delta, self._bare = self._bare, None
        reads = list(self._reader.feed(delta)) if self._reader else [Read("text", delta)]
        self._collect(reads)
        return reads

    def finish(self) -> list[Read]:
        """What was held back, once the text has ended (the same list on every call)."""
        if self._tail is None:
            self._tail = []
            if self._bare is not None:
                text, self._bare = self._bare, None
                call = bare_call(text, self._tools)
                if call is not None:
                    self._reader.calls.append(call)
                    self._tail = [Read("start", call=call), Read("input", json.dumps(call.input)),
                                  Read("stop", call=call)]
                else:
                    self._tail = list(self._reader.feed(text))
            if self._reader is not None:
                self._tail += list(self._reader.finish())
            self._collect(self._tail)
        return self._tail

    def read(self, text: str) -> list[str | ToolCall]:
        """The answer's blocks; `text` is the whole generation, read here unless a stream fed it."""
        if not self._fed:
            self.feed(text)
        self.finish()
        return self.blocks

    def _collect(self, reads: list[Read]) -> None:
        for read in reads:
            if read.kind == "text":
                if self.blocks and isinstance(self.blocks[-1], str):
                    self.blocks[-1] += read.text
                else:
                    self.blocks.append(read.text)
            elif read.kind == "stop" and read.call in self.calls:  # not a malformed one
                self.blocks.append(read.call)


def _may_be_bare_call(text: str) -> bool:
    """Whether an answer that begins with `text` may still be a bare JSON call: a JSON object or list, or one in
    a ```json fence (what follows is only a prefix of it so far, or it is)."""
    text = text.lstrip()
    if not text or text[0] in "{[":
        return True
    if len(text) < 3:
        return "```".startswith(text)
    if not text.startswith("```"):
        return False
    rest = text[3:]
    if "json".startswith(rest.lower()):
        return True
    if rest.lower().startswith("json"):
        rest = rest[4:]
    rest = rest.lstrip(" \t")
    if not rest:
        return True
    if rest[0] != "\n":
        return False
    rest = rest[1:].lstrip()
    return not rest or rest[0] in "{["


_FENCED = re.compile(r"```(?:json)?[ \t]*\n(.*)\n?```", re.DOTALL | re.IGNORECASE)


def bare_call(text: str, tools: ToolSet) -> ToolCall | None:
    """A whole answer that is only a tool call written as bare JSON, as small models write one when they skip the
    prompt's syntax: `{"name": tool, "arguments": {...}}` (or "parameters", as Llama 3 writes it; arguments as an
    object or as JSON text), alone, in a one-element list, or in a ```json fence; read as a call only when the
    name is an offered tool and the arguments validate against its schema (vLLM's hermes and llama3_json
    parsers read the same shapes). Anything else is None: the answer stays text."""
    text = text.strip()
    fenced = _FENCED.fullmatch(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        document = json.loads(text)
    except ValueError:
        return None
    if isinstance(document, list) and len(document) == 1:
        document = document[0]
    if not isinstance(document, dict) or not isinstance(document.get("name"), str):
        return None
    keys = set(document) - {"type"}
    argument_keys = keys & {"arguments", "parameters"}
    if len(argument_keys) != 1 or keys != {"name"} | argument_keys or document.get("type", "function") != "function":
        return None
    arguments = document[argument_keys.pop()]
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    offered = {t.name: t for t in tools.tools}
    found = offered.get(document["name"])
    if found is None or not isinstance(arguments, dict) or found.error(arguments) is not None:
        return None
    return ToolCall(new_tool_use_id(), found.name, arguments)


def converse_content(blocks: list[str | ToolCall]) -> list[dict[str, Any]]:
    """Converse's content blocks, in the answer's order. Blank text is no block (Bedrock refuses a blank text
    block when a conversation sends it back), so an answer with nothing in it (a call cut off by maxTokens, an
    end of text at once) has no content blocks, as Bedrock answers such a turn."""
    return [({"text": b} if isinstance(b, str) else {"toolUse": {"toolUseId": b.id, "name": b.name, "input": b.input}})
            for b in blocks if not isinstance(b, str) or b.strip()]


def answer_schema(output_config: dict[str, Any] | None) -> dict[str, Any] | None:
    """Converse's `outputConfig`: the JSON schema a plain answer must follow, or None."""
    if not output_config:
        return None
    if output_config.get("effort") is not None:
        raise ValidationException("outputConfig.effort is not supported by this server's models")
    text_format = output_config.get("textFormat")
    if text_format is None:
        return None
    if text_format.get("type") != "json_schema":
        raise ValidationException(f"outputConfig.textFormat.type {text_format.get('type')!r} is not supported; "
                                  "use json_schema")
    definition = (text_format.get("structure") or {}).get("jsonSchema")
    if definition is None:
        raise ValidationException("outputConfig.textFormat.structure must hold a jsonSchema")
    try:
        schema = json.loads(definition["schema"])
    except ValueError as exc:
        raise ValidationException(f"outputConfig.textFormat.structure.jsonSchema.schema is not JSON: {exc}") \
            from None
    if not isinstance(schema, dict):
        raise ValidationException("outputConfig.textFormat.structure.jsonSchema.schema must be a JSON object")
    checked_schema(schema, "The JSON schema of outputConfig.textFormat", strict=False)
    return schema


ANSWER_PROMPT = ("Answer with one JSON document and nothing else{what}. It must be valid against this JSON "
                 "schema:\n{schema}")


def answer_instructions(output_config: dict[str, Any] | None, schema: dict[str, Any] | None) -> str:
    """The system-turn text that tells the model what the structured answer is (the grammar enforces it; the
    model should know what it writes): the definition's name and description, and `schema`, what
    `answer_schema` read from the same `output_config`."""
    if schema is None:
        return ""
    definition = output_config["textFormat"]["structure"]["jsonSchema"]
    name, description = definition.get("name"), definition.get("description")
    what = f" ({name}{': ' + description if description else ''})" if name else (
        f" ({description})" if description else "")
    return ANSWER_PROMPT.format(what=what, schema=json.dumps(schema))


# -- 4. check calls the grammar could not hold to their whole schema -------------------------------------

#: Tries of a tool call whose arguments fail a schema keyword the grammar cannot enforce (the first included).
CALL_TRIES = 4
#: The temperature of a retry of a greedy request's call (greedy decoding would write the same call again).
RETRY_TEMPERATURE = 0.8


def checked_calls(submit: Callable[[list[int], SamplingParams], Any], prompt_ids: list[int], params: SamplingParams,
                  tools: ToolSet | None, syntax: CallSyntax | None, tokenizer: Any) -> Any:
    """The generation of `prompt_ids` (`submit(ids, params)`, a scheduler's submit), as a GenerationStream whose
    tool calls validate against their tools' schemas.

    The grammar enforces most of a schema; what it cannot (uniqueItems, not, contains, if/then,
    dependentRequired, propertyNames, oneOf's "only one"...) is checked once a call is written
    (`CheckedCalls`). Where every offered tool is enforced whole, this is `submit`'s own stream, untouched."""
    if (tools is None or tools.choice == NONE or syntax is None or params.grammar is None
            or all(t.enforced for t in tools.tools if tools.choice != TOOL or t.name == tools.forced)):
        return submit(prompt_ids, params)
    return CheckedCalls(submit, prompt_ids, params, tools, syntax, tokenizer)


class CheckedCalls:
    """A generation whose tool call is checked against its tool's whole schema before it is passed on.

    Text before a call streams as it comes; from the call's trigger on, the deltas are held until the
    generation ends. A call whose arguments validate is then passed on (its deltas as they came); one that
    fails is written again: the model continues from the text before the call, the same tool forced, with a
    seed derived from the request's (or from the prompt, so a retry repeats), at RETRY_TEMPERATURE where the
    request was greedy, up to CALL_TRIES in all. If every try fails, ModelErrorException names the keyword:
    an invalid call is never passed on as valid. The answer's usage counts the tokens of the answer given
    (the text before the call, and the call that validated), not the discarded tries."""

    def __init__(self, submit: Callable[[list[int], SamplingParams], Any], prompt_ids: list[int],
                 params: SamplingParams, tools: ToolSet, syntax: CallSyntax, tokenizer: Any) -> None:
        self._submit, self._prompt_ids, self._params = submit, list(prompt_ids), params
        self._tools, self._syntax, self._tokenizer = tools, syntax, tokenizer
        self._started = time.perf_counter()
        self._stream = submit(prompt_ids, params)
        #: What a retry continues from (the prompt, and the text before the call), and that text's tokens.
        self._retry_ids, self._prefix_tokens = self._prompt_ids, 0
        self.completion: Completion | None = None

    @property
    def produced_tokens(self) -> int:
        return self._prefix_tokens + self._stream.produced_tokens

    def result(self) -> Completion:
        for _ in self:
            pass
        return self.completion

    def _retry_params(self, name: str, attempt: int) -> SamplingParams:
        """The params of a retry: the tool `name` forced, a seed of its own, room for what the text before the
        call has spent; sampled (not greedy), or it would write the same call."""
        params = self._params
        base = params.seed if params.seed is not None else int.from_bytes(
            hashlib.sha256(json.dumps(self._prompt_ids).encode()).digest()[:8], "big")
        seed = int.from_bytes(hashlib.sha256(f"{base}/{attempt}".encode()).digest()[:8], "big") & (2**63 - 1)
        forced = ToolSet(self._tools.tools, TOOL, name)
        grammar = _tools_grammar(self._syntax, forced, None, marker_tokens(self._tokenizer, self._syntax))
        sampled = {} if not params.greedy else {"temperature": RETRY_TEMPERATURE, "top_k": 0}
        return dataclasses.replace(params, grammar=grammar, seed=seed, **sampled,
                                   max_tokens=max(1, params.max_tokens - self._prefix_tokens))

    def __iter__(self) -> Iterator[str]:
        trigger = self._syntax.trigger
        prefix, first, failure = "", None, ""
        for attempt in range(CALL_TRIES):
            text, sent, held = "", 0, None  # held: the deltas from the trigger on
            deltas = iter(self._stream)
            try:
                for delta in deltas:
                    text += delta
                    if held is not None:
                        held.append(delta)
                        continue
                    at = text.find(trigger)
                    end = len(text) - _partial_suffix(text, trigger) if at < 0 else at
                    if end > sent:
                        yield text[sent:end]
                        sent = end
                    if at >= 0:
                        held = [text[at:]]
            finally:
                close = getattr(deltas, "close", None)
                if close is not None:
                    close()
            completion = self._stream.completion
            first = first or completion
            reader = AnswerReader(self._syntax, self._tools)
            reader.read(prefix + text)
            if not reader.invalid:
                yield from held if held is not None else ([text[sent:]] if len(text) > sent else [])
                from outcrop.inference.scheduler import Completion

                self.completion = completion if attempt == 0 else Completion(
                    prefix + text, len(self._prompt_ids), self._prefix_tokens + completion.output_tokens,
                    completion.finish_reason, completion.stop_sequence, first.first_token_s,
                    time.perf_counter() - self._started)
                return
            name, failure = reader.invalid[0]
            if attempt == 0 and trigger in text:  # from here on, the model continues from the text before its call
                prefix = text[:text.find(trigger)]
                if prefix:
                    ids = self._tokenizer(prefix, add_special_tokens=False)["input_ids"]
                    self._retry_ids, self._prefix_tokens = self._prompt_ids + ids, len(ids)
            if attempt + 1 < CALL_TRIES:
                self._stream = self._submit(self._retry_ids, self._retry_params(name, attempt + 1))
        raise ModelErrorException(
            f"The model's call of the tool {name} failed its input schema in {CALL_TRIES} tries: {failure}. "
            "The decoding grammar enforces the rest of the schema but cannot enforce this keyword; retry, or "
            "use a schema the grammar enforces whole (toolSpec.strict refuses any other).")
