"""Tool use without a server: requests parsed, prompts rendered, grammars built, and generated text read back.

The oracles: for reading, the same text read whole (`read_all`) and delta by delta (`AnswerReader`), and the
calls each syntax's `write` put into it; for prompts, the chat templates themselves (Qwen 2.5's as Alibaba
publishes it, small Llama 3.1-, Mistral- and SmolLM2-like ones) applied by transformers to the messages
written by hand in transformers' tool-calling format; for grammars, llguidance's own matcher fed the
tokens of well-formed and malformed calls."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import llguidance
import llguidance.hf
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outcrop.errors import ModelErrorException, ValidationException
from outcrop.inference.sampling import SamplingParams
from outcrop.inference.scheduler import END_OF_TEXT, Completion
from outcrop.runtime import tool_use
from outcrop.runtime.tool_use import ANY, AUTO, HERMES, LLAMA3, MISTRAL, NONE, TOOL, ToolCall, ToolSet
from tests.helpers import train_tokenizer

WEATHER = {"toolSpec": {
    "name": "get_weather", "description": "The current weather in a city.",
    "inputSchema": {"json": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 40},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"], "additionalProperties": False}}}}
PING = {"toolSpec": {"name": "ping", "description": "Is the service up?",
                     "inputSchema": {"json": {"type": "object", "properties": {}, "additionalProperties": False}}}}
TOOLS = tool_use.converse_tool_set({"tools": [WEATHER, PING]})
#: The same tools' names, any object their arguments: what the reading oracles read (calls are checked against
#: their schemas, and these take the random arguments the property tests write).
READING = tool_use.converse_tool_set({"tools": [
    {"toolSpec": {"name": name, "inputSchema": {"json": {"type": "object"}}}} for name in ("get_weather", "ping")]})
SYNTAXES = [HERMES, LLAMA3, MISTRAL]


# -- reading generated text ---------------------------------------------------------------------------

def read_stream(syntax, deltas, tools=READING):
    """Text and calls as a stream reads them (`AnswerReader` fed delta by delta, as ConverseStream reads), after
    checking the shape of the reads: each call is a start, its arguments in pieces that join to exactly its
    input's JSON, and a stop with the same id."""
    reader = tool_use.AnswerReader(syntax, tools)
    reads = [r for delta in deltas for r in reader.feed(delta)] + list(reader.finish())
    open_call, pieces = None, []
    for read in reads:
        if read.kind == "start":
            assert open_call is None
            open_call, pieces = read.call, []
        elif read.kind == "input":
            assert open_call is not None and read.text
            pieces.append(read.text)
        elif read.kind == "stop":
            assert read.call.id == open_call.id and read.call.name == open_call.name
            assert json.loads("".join(pieces)) == read.call.input
            open_call = None
        else:
            assert read.kind == "text" and read.text
    assert [(c.name, c.input) for c in reader.calls] == [
        (r.call.name, r.call.input) for r in reads if r.kind == "stop"]
    return "".join(r.text for r in reads if r.kind == "text"), [(c.name, c.input) for c in reader.calls]


def read_whole(syntax, text, tools=READING):
    pieces, calls = tool_use.read_all(syntax, tools, text)
    return "".join(pieces), [(c.name, c.input) for c in calls]


def call(syntax, name, arguments):
    return syntax.write(ToolCall("tooluse_x", name, arguments))


TRICKY = {"city": 'a } b }} " \\ \\" {"name": "ping"} }\n</tool_call> }] [TOOL_CALLS] <tool_call>', "unit": "celsius"}


def generated_texts(syntax):
    """(generated text, the text it reads as, the calls it reads as)."""
    weather = call(syntax, "get_weather", {"city": "Paris", "unit": "celsius"})
    ping = call(syntax, "ping", {})
    unknown = call(syntax, "get_time", {"zone": "UTC"})
    return [
        ("The weather is fine.", "The weather is fine.", []),
        ("Let me look.\n" + weather, "Let me look.", [("get_weather", {"city": "Paris", "unit": "celsius"})]),
        (weather + "\n" + ping, "", [("get_weather", {"city": "Paris", "unit": "celsius"}), ("ping", {})]),
        # Braces, quotes, backslashes and every syntax's markers inside a string end nothing.
        (call(syntax, "get_weather", TRICKY), "", [("get_weather", TRICKY)]),
        # Text that only starts like a call stays text, held back no longer than the end.
        ("a <tool b <tool_ [TOOL x {\"name\" y", "a <tool b <tool_ [TOOL x {\"name\" y", []),
        # ...except the start of a trigger at the very end: the call that did not come.
        ("ends with <tool", "ends with" if syntax.trigger.startswith("<tool") else "ends with <tool", []),
        # A call cut off (max tokens) in its arguments is dropped with the space before it; one whose arguments
        # are complete is a call even if its closing was cut off.
        ("Sure.\n" + weather[:weather.index("Paris")], "Sure.", []),
        ("Sure.\n" + weather[:-1], "Sure.", [("get_weather", {"city": "Paris", "unit": "celsius"})]),
        # A tool that is not offered: not a call, so the text reads exactly as written.
        ("Now: " + unknown, "Now: " + unknown, []),
    ]


@pytest.mark.parametrize("syntax", SYNTAXES, ids=lambda s: s.name)
def test_reading_in_deltas_reads_what_reading_whole_reads(syntax):
    for text, expected_text, expected_calls in generated_texts(syntax):
        assert read_whole(syntax, text) == (expected_text, expected_calls), text
        for at in range(len(text) + 1):  # every place a delta can end
            assert read_stream(syntax, [text[:at], text[at:]]) == (expected_text, expected_calls), (text, at)
        assert read_stream(syntax, list(text)) == (expected_text, expected_calls), text


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**9, 10**9) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8)
arguments = st.dictionaries(st.text(max_size=8), json_values, max_size=4)
#: Free text that cannot start any syntax's call (no "<", "[" or "{").
plain_text = st.text(st.characters(blacklist_characters="<[{", blacklist_categories=("Cs",)), max_size=20)


@st.composite
def answers(draw):
    """A generated answer: text and calls in a random order, and the text and calls it must read as."""
    syntax = draw(st.sampled_from(SYNTAXES))
    parts = draw(st.lists(st.one_of(plain_text, st.tuples(st.sampled_from(["get_weather", "ping"]), arguments)),
                          max_size=5))
    merged = []  # consecutive texts are one text
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        else:
            merged.append(part)
    text, expected_text, calls = "", "", []
    for part in merged:
        if isinstance(part, str):
            text += part
            # Space between text and a call only separates them, and space at the end is no answer.
            expected_text += part.rstrip()
        else:
            text += call(syntax, *part)
            calls.append(part)
    return syntax, text, expected_text, calls


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answers(), st.lists(st.integers(0, 10**6), max_size=6))
def test_random_calls_read_back_as_written_however_the_text_is_cut(answer, cuts):
    syntax, text, expected_text, expected_calls = answer
    assert read_whole(syntax, text) == (expected_text, expected_calls)
    cuts = sorted({c % (len(text) + 1) for c in cuts})
    deltas = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    assert read_stream(syntax, deltas) == (expected_text, expected_calls)


adversarial = st.lists(st.sampled_from(
    ["<tool_call>", "<tool", "_call>", "\n", " ", "{", "}", '"', "\\", "[TOOL_CALLS]", "[", "]", "}]", "x",
     '{"name": ', '"ping"', '"get_weather"', '"nope"', ', "arguments": ', ', "parameters": ', "}\n</tool_call>"]),
    max_size=30).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SYNTAXES), adversarial, st.lists(st.integers(0, 10**6), max_size=6))
def test_near_miss_text_reads_the_same_in_deltas(syntax, text, cuts):
    """Fragments of heads, markers and arguments in any order: whatever the reader makes of them, a stream
    cut anywhere makes the same of them (and the reads keep their shape: start, input, stop)."""
    cuts = sorted({c % (len(text) + 1) for c in cuts})
    deltas = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    assert read_stream(syntax, deltas) == read_whole(syntax, text)


# -- bare JSON calls, calls checked against their whole schema, empty answers ---------------------------

WEATHER_CALL = {"city": "Paris", "unit": "celsius"}


@pytest.mark.parametrize("text", [
    '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}',
    '  {"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}\n',
    '[{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}]',
    '{"type": "function", "name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\", \\"unit\\": \\"celsius\\"}"}',
    '```json\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n```'])
@pytest.mark.parametrize("syntax", [HERMES, MISTRAL], ids=lambda s: s.name)
def test_a_whole_answer_that_is_a_bare_json_call_is_a_call_under_auto(syntax, text):
    """What small models write when they skip the prompt's syntax (vLLM's hermes/llama3_json parsers read the same)."""
    expected = ("", [("get_weather", WEATHER_CALL)])
    assert read_whole(syntax, text, TOOLS) == expected
    assert read_stream(syntax, list(text), TOOLS) == expected  # held back until the answer ends, then one call


@pytest.mark.parametrize("text", [
    '{"name": "get_weather", "arguments": {"city": "Paris"}}',  # unit is required
    '{"name": "get_weather", "arguments": {"type": "object", "properties": {"city": {"type": "string"}}}}',
    '{"name": "get_time", "arguments": {}}',  # not offered
    '{"name": "ping", "arguments": {}, "reason": "why not"}',
    '{"name": "ping", "arguments": {}} and then some words',
    '{"answer": 42}', "```python\nprint(1)\n```", "[1, 2]"])
def test_json_that_is_not_exactly_a_valid_call_stays_text(text):
    assert read_whole(HERMES, text, TOOLS) == (text.strip(), [])
    assert read_stream(HERMES, list(text), TOOLS) == (text.strip(), [])


def test_bare_calls_are_read_under_auto_only():
    text = '{"name": "ping", "arguments": {}}'
    assert read_whole(HERMES, text) == ("", [("ping", {})])
    forced = tool_use.converse_tool_set({"tools": [WEATHER, PING], "toolChoice": {"any": {}}})
    assert read_whole(HERMES, text, forced) == (text, [])  # under any, the grammar writes every call
    # A text answer streams as it comes: only an answer that opens like JSON is held back.
    reader = tool_use.AnswerReader(HERMES, TOOLS)
    assert [r.text for r in reader.feed("Hello")] == ["Hello"]


TAGS = {"toolSpec": {"name": "tag", "description": "Tags for a picture.", "inputSchema": {"json": {
    "type": "object", "properties": {"tags": {"type": "array", "items": {"enum": ["red", "blue", "green"]},
                                              "uniqueItems": True}}, "required": ["tags"]}}}}


def test_a_call_that_fails_what_its_grammar_could_not_enforce_is_not_a_call():
    tools = tool_use.converse_tool_set({"tools": [TAGS, WEATHER], "toolChoice": {"any": {}}})
    assert [t.enforced for t in tools.tools] == [False, True]
    reader = tool_use.AnswerReader(HERMES, tools)
    assert reader.read(call(HERMES, "tag", {"tags": ["red", "blue", "green", "blue"]})) == []
    assert reader.calls == [] and reader.malformed
    ((name, why),) = reader.invalid
    assert name == "tag" and why.startswith("$.tags fails uniqueItems:")
    assert tool_use.read_all(HERMES, tools, call(HERMES, "tag", {"tags": ["red", "blue"]}))[1][0].input == {
        "tags": ["red", "blue"]}


class FakeStream:
    """A scheduler's GenerationStream over a fixed text, three characters a delta."""

    def __init__(self, text):
        self.text, self.completion, self.produced_tokens = text, None, 0

    def __iter__(self):
        for at in range(0, len(self.text), 3):
            self.produced_tokens += 1
            yield self.text[at:at + 3]
        self.completion = Completion(self.text, 7, self.produced_tokens, END_OF_TEXT, None, 0.1, 0.2)


class CharTokenizer:
    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}


def generations(*texts):
    """A fake submit that answers `texts` in turn, and the (prompt ids, params) it was called with."""
    submitted = []

    def submit(ids, params):
        submitted.append((list(ids), params))
        return FakeStream(texts[len(submitted) - 1])
    return submit, submitted


def test_a_call_that_fails_its_schema_is_written_again_from_the_text_before_it():
    tools = tool_use.converse_tool_set({"tools": [TAGS, WEATHER]})
    bad, good = (call(HERMES, "tag", {"tags": tags}) for tags in (["red", "red"], ["red", "blue"]))
    submit, submitted = generations("Sure.\n" + bad, bad, good)
    greedy = SamplingParams(temperature=0, max_tokens=100, grammar="the request's grammar")
    stream = tool_use.checked_calls(submit, [1, 2], greedy, tools, HERMES, CharTokenizer())
    deltas = list(stream)
    assert "".join(deltas) == "Sure.\n" + good and deltas[0] == "Sur"  # the text streams, the call waits
    assert [call.input for call in tool_use.read_all(HERMES, tools, "".join(deltas))[1]] == [{"tags": ["red", "blue"]}]
    # Each retry continues from the text before the call, the same tool forced, sampled with a seed of its own.
    assert [ids for ids, _ in submitted] == [[1, 2], [1, 2, *map(ord, "Sure.\n")], [1, 2, *map(ord, "Sure.\n")]]
    retries = [params for _, params in submitted[1:]]
    assert all(p.temperature == tool_use.RETRY_TEMPERATURE and p.max_tokens == 94 for p in retries)
    assert "tag" in retries[0].grammar and "get_weather" not in retries[0].grammar
    assert len({p.seed for p in retries}) == 2
    again = generations("Sure.\n" + bad, bad, good)
    list(tool_use.checked_calls(again[0], [1, 2], greedy, tools, HERMES, CharTokenizer()))
    assert [p.seed for _, p in again[1][1:]] == [p.seed for p in retries]  # derived from the prompt: repeatable
    # The usage is the answer's: the text before the call, then the call that validated.
    assert stream.completion.text == "Sure.\n" + good and stream.completion.input_tokens == 2
    assert stream.completion.output_tokens == len("Sure.\n") + math.ceil(len(good) / 3)


def test_a_call_that_keeps_failing_is_a_model_error_naming_the_keyword():
    tools = tool_use.converse_tool_set({"tools": [TAGS], "toolChoice": {"any": {}}})
    bad = call(HERMES, "tag", {"tags": ["blue", "blue"]})
    submit, submitted = generations(*[bad] * tool_use.CALL_TRIES)
    stream = tool_use.checked_calls(submit, [1], SamplingParams(seed=5, grammar="g"), tools, HERMES, CharTokenizer())
    with pytest.raises(ModelErrorException, match="tag.*uniqueItems"):
        list(stream)
    assert len(submitted) == tool_use.CALL_TRIES and stream.completion is None


def test_tools_the_grammar_enforces_whole_are_not_held_back():
    submit, submitted = generations("text")
    stream = tool_use.checked_calls(submit, [1], SamplingParams(grammar="g"), TOOLS, HERMES, CharTokenizer())
    assert isinstance(stream, FakeStream)  # the scheduler's own stream: its calls stream as they come


def test_an_answer_with_nothing_in_it_has_no_content_blocks():
    """Bedrock refuses a blank text block sent back in a conversation: a call cut off by maxTokens is no block."""
    assert tool_use.converse_content([]) == [] == tool_use.converse_content(["", " \n"])
    cut = call(HERMES, "get_weather", WEATHER_CALL)[:30]
    assert tool_use.converse_content(tool_use.AnswerReader(HERMES, TOOLS).read(cut)) == []


# -- prompting ----------------------------------------------------------------------------------------

#: Qwen 2.5 Instruct's chat template, as published with the model (Apache-2.0).
QWEN25 = (
    "{%- if tools %}{{- '<|im_start|>system\\n' }}{%- if messages[0]['role'] == 'system' %}"
    "{{- messages[0]['content'] }}{%- else %}"
    "{{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}{%- endif %}"
    "{{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are "
    "provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}{%- for tool in tools %}"
    "{{- \"\\n\" }}{{- tool | tojson }}{%- endfor %}{{- \"\\n</tools>\\n\\nFor each function call, return a json "
    "object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n"
    "{\\\"name\\\": <function-name>, \\\"arguments\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}"
    "{%- else %}{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}{%- endif %}{%- for message in messages %}{%- if (message.role == \"user\") or "
    "(message.role == \"system\" and not loop.first) or (message.role == \"assistant\" and not message.tool_calls) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- elif message.role == \"assistant\" %}{{- '<|im_start|>' + message.role }}{%- if message.content %}"
    "{{- '\\n' + message.content }}{%- endif %}{%- for tool_call in message.tool_calls %}"
    "{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}"
    "{{- '\\n<tool_call>\\n{\"name\": \"' }}{{- tool_call.name }}{{- '\", \"arguments\": ' }}"
    "{{- tool_call.arguments | tojson }}{{- '}\\n</tool_call>' }}{%- endfor %}{{- '<|im_end|>\\n' }}"
    "{%- elif message.role == \"tool\" %}{%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}"
    "{{- '<|im_start|>user' }}{%- endif %}{{- '\\n<tool_response>\\n' }}{{- message.content }}"
    "{{- '\\n</tool_response>' }}{%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}"
    "{{- '<|im_end|>\\n' }}{%- endif %}{%- endif %}{%- endfor %}{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}{%- endif %}")
#: Llama 3.1's way with tools, shortened: the functions in the first user turn, calls as {"name", "parameters"}.
LLAMA31 = (
    "{{- bos_token }}<|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython<|eot_id|>"
    "{%- if tools is not none %}<|start_header_id|>user<|end_header_id|>\n\nRespond in the format "
    "{\"name\": function name, \"parameters\": dictionary of argument name and its value}.\n\n"
    "{%- for t in tools %}{{- t | tojson }}\n\n{%- endfor %}<|eot_id|>{%- endif %}"
    "{%- for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{%- if message.tool_calls %}{%- for c in message.tool_calls %}{\"name\": \"{{ c.function.name }}\", "
    "\"parameters\": {{ c.function.arguments | tojson }}}{%- endfor %}{%- else %}{{ message['content'] }}{%- endif %}"
    "<|eot_id|>{%- endfor %}{%- if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n"
    "{%- endif %}")
#: Mistral v3's way with tools, shortened.
MISTRAL_V3 = (
    "{{- bos_token }}{%- for message in messages %}{%- if message['role'] == 'user' %}"
    "{%- if tools is not none and loop.last %}[AVAILABLE_TOOLS]{{ tools | tojson }}[/AVAILABLE_TOOLS]{%- endif %}"
    "[INST]{{ message['content'] }}[/INST]{%- elif message.tool_calls %}[TOOL_CALLS]["
    "{%- for c in message.tool_calls %}{\"name\": \"{{ c.function.name }}\", \"arguments\": "
    "{{ c.function.arguments | tojson }}}{%- endfor %}]{{ eos_token }}{%- elif message['role'] == 'tool' %}"
    "[TOOL_RESULTS]{\"content\": {{ message['content'] | tojson }}}[/TOOL_RESULTS]"
    "{%- else %}{{ message['content'] }}{{ eos_token }}{%- endif %}{%- endfor %}")
#: SmolLM2's ChatML template: no tools.
SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return train_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture
def templated(tokenizer):
    """The tokenizer with another chat template (restored after the test: it is shared by the module)."""
    original = tokenizer.chat_template

    def use(template):
        tokenizer.chat_template = template
        return tokenizer
    yield use
    tokenizer.chat_template = original


@pytest.mark.parametrize(("template", "syntax", "native"), [
    (QWEN25, HERMES, True), (LLAMA31, LLAMA3, True), (MISTRAL_V3, MISTRAL, True), (SMOLLM2, HERMES, False)],
    ids=["qwen2.5", "llama3.1", "mistral", "smollm2"])
def test_prompting_reads_the_call_syntax_from_the_template(templated, template, syntax, native):
    how = tool_use.prompting(templated(template))
    assert (how.syntax, how.native) == (syntax, native)


def test_prompting_falls_back_without_a_tools_template():
    # The test tokenizer's own template, a template that names tools but no known syntax, and none at all.
    chat = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    for template in (chat, "{% if tools %}{{ tools | tojson }}{% endif %}" + chat, None):
        assert tool_use.prompting(SimpleNamespace(chat_template=template)) == tool_use.Prompting(HERMES, False)
    # Several named templates: the tool-use one decides.
    named = {"default": SMOLLM2, "tool_use": QWEN25}
    assert tool_use.prompting(SimpleNamespace(chat_template=named)) == tool_use.Prompting(HERMES, True)


def conversation():
    """A conversation with a call answered, a call that failed, and a question after it (Converse's form)."""
    return tool_use.converse_messages([
        {"role": "user", "content": [{"text": "Weather in Paris?"}]},
        {"role": "assistant", "content": [
            {"text": "Let me look."},
            {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather",
                         "input": {"city": "Paris", "unit": "celsius"}}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": "tooluse_1", "content": [{"json": {"temp": 21}}]}}]},
        {"role": "assistant", "content": [{"toolUse": {"toolUseId": "tooluse_2", "name": "ping", "input": {}}}]},
        {"role": "user", "content": [
            {"toolResult": {"toolUseId": "tooluse_2", "status": "error", "content": [{"text": "no route"}]}},
            {"text": "And now?"}]},
    ], TOOLS)


def test_a_native_template_renders_tools_calls_and_results_itself(templated):
    # Templates see each toolUseId as a 9-character alias (Mistral's refuse any other shape).
    alias = tool_use.template_call_id
    assert len(alias("tooluse_1")) == 9 and alias("tooluse_1").isalnum() and alias("tooluse_1") != alias("tooluse_2")
    tokenizer = templated(QWEN25)
    prompt = tool_use.render(tokenizer, conversation(), "Be brief.", TOOLS)
    # The oracle: the template applied to the same conversation written by hand in transformers' format.
    functions = [{"type": "function", "function": {"name": t.name, "description": t.description,
                                                   "parameters": t.parameters}} for t in TOOLS.tools]
    by_hand = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [{"id": alias("tooluse_1"), "type": "function",
         "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}]},
        {"role": "tool", "tool_call_id": alias("tooluse_1"), "name": "get_weather", "content": '{"temp": 21}'},
        {"role": "assistant", "content": "", "tool_calls": [{"id": alias("tooluse_2"), "type": "function",
                                                             "function": {"name": "ping", "arguments": {}}}]},
        {"role": "tool", "tool_call_id": alias("tooluse_2"), "name": "ping", "content": "Error: no route"},
        {"role": "user", "content": "And now?"},
    ]
    assert prompt == tokenizer.apply_chat_template(by_hand, tools=functions, tokenize=False,
                                                   add_generation_prompt=True)
    # Qwen's template ignores a result's call id and tool name; templates that show them get them right.
    assert tool_use._template_chat(conversation()) == by_hand[1:]
    # And the template writes a call exactly as the syntax the grammar enforces does.
    assert "Let me look.\n" + call(HERMES, "get_weather", {"city": "Paris", "unit": "celsius"}) in prompt
    assert "<|im_start|>user\n<tool_response>\nError: no route\n</tool_response><|im_end|>" in prompt
    assert json.dumps(functions[0]) in prompt


def test_the_fallback_prompt_lists_the_tools_and_writes_calls_and_results_as_text(templated):
    tokenizer = templated(SMOLLM2)
    turns = [t.split("\n", 1) for t in
             tool_use.render(tokenizer, conversation(), "Be brief.", TOOLS).split("<|im_start|>")[1:]]
    roles = [role for role, _ in turns]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user", "assistant"]
    system = turns[0][1]
    assert system.startswith("Be brief.\n\n# Tools\n")
    for t in TOOLS.tools:  # one line per tool: name, description, schema
        assert json.dumps({"name": t.name, "description": t.description, "parameters": t.parameters}) in system
    assert "Call a tool only when it helps answer; otherwise answer directly." in system
    # The calls as the model is asked to write them, so its own past calls show it the syntax.
    assert turns[2][1] == "Let me look.\n" + call(HERMES, "get_weather", {"city": "Paris", "unit": "celsius"}) \
        + "<|im_end|>\n"
    assert turns[4][1] == call(HERMES, "ping", {}) + "<|im_end|>\n"
    assert turns[3][1] == ('<tool_response>\n{"name": "get_weather", "content": "{\\"temp\\": 21}"}\n'
                           "</tool_response><|im_end|>\n")
    assert turns[5][1] == ('<tool_response>\n{"name": "ping", "content": "no route", "status": "error"}\n'
                           "</tool_response>\nAnd now?<|im_end|>\n")
    assert turns[6][1] == ""  # the generation prompt


@pytest.mark.parametrize(("choice", "rule"), [
    ({"any": {}}, "You must call at least one tool now."),
    ({"tool": {"name": "ping"}}, "You must call the tool ping now.")])
def test_the_fallback_prompt_states_the_tool_choice(templated, choice, rule):
    tools = tool_use.converse_tool_set({"tools": [WEATHER, PING], "toolChoice": choice})
    chat = tool_use.converse_messages([{"role": "user", "content": [{"text": "Hi"}]}], tools)
    assert rule in tool_use.render(templated(SMOLLM2), chat, "", tools)


def test_without_tools_the_prompt_is_the_plain_chat(templated):
    from outcrop.inference.chat import render_chat

    tokenizer = templated(QWEN25)
    chat = tool_use.converse_messages([{"role": "user", "content": [{"text": "Hi"}]}], None)
    assert tool_use.render(tokenizer, chat, "", None) == render_chat(tokenizer, [{"role": "user", "content": "Hi"}],
                                                                     "")
    assert "<tools>" not in tool_use.render(tokenizer, chat, "", None)


# -- parsing errors -----------------------------------------------------------------------------------

def spec(name="lookup", schema=None, **extra):
    schema = {"type": "object"} if schema is None else schema
    return {"toolSpec": {"name": name, "inputSchema": {"json": schema}, **extra}}


@pytest.mark.parametrize(("config", "words"), [
    ({"tools": [{"systemTool": {"name": "web_grounding"}}]}, ["tools.0", "systemTool"]),
    ({"tools": [spec(), {"cachePoint": {"type": "default"}}]}, ["tools.1", "cachePoint"]),
    ({"tools": [spec("a"), spec("b"), spec("a")]}, ["tool a", "more than once"]),
    ({"tools": [spec("a")], "toolChoice": {"tool": {"name": "b"}}}, ["tool b", "not in"]),
    ({"tools": [spec("bad name")]}, ["'bad name'"]),
    ({"tools": [spec("x" * 65)]}, ["x" * 65]),
    ({"tools": [spec("lookup", [])]}, ["tool lookup", "JSON object"]),
    ({"tools": [spec("lookup", {"type": "string"})]}, ["tool lookup", "type object"]),
    ({"tools": [spec("lookup", {"type": 7})]}, ["tool lookup"]),
    ({"tools": [spec("lookup", {"type": "object", "properties": {"a": {"type": 7}}})]},
     ["tool lookup", "not a valid JSON schema"]),
    ({"tools": [spec("lookup", {"type": "object", "required": "a"})]}, ["tool lookup", "not a valid JSON schema"]),
    ({"tools": [spec("lookup", {"type": "object", "properties": {"a": {"type": "string", "pattern": "(?<=x)y"}}})]},
     ["tool lookup", "cannot be enforced"]),
    ({"tools": [spec("lookup", {"type": "object", "description": "x" * tool_use.MAX_SCHEMA_BYTES})]},
     ["tool lookup", f"limit is {tool_use.MAX_SCHEMA_BYTES} bytes"]),
    ({"tools": [spec(f"t{i}") for i in range(tool_use.MAX_TOOLS + 1)]}, [f"limit is {tool_use.MAX_TOOLS}"]),
    ({"tools": []}, ["at least one tool"]),
])
def test_a_bad_tool_config_is_refused_with_its_reason(config, words):
    with pytest.raises(ValidationException) as raised:
        tool_use.converse_tool_set(config)
    for word in words:
        assert word in str(raised.value)


def test_a_good_tool_config_parses():
    assert tool_use.converse_tool_set(None) is None
    tools = tool_use.converse_tool_set({"tools": [WEATHER, PING], "toolChoice": {"tool": {"name": "ping"}}})
    assert (tools.names(), tools.choice, tools.forced) == (["get_weather", "ping"], TOOL, "ping")
    assert tools.tools[0].parameters == WEATHER["toolSpec"]["inputSchema"]["json"]
    assert tool_use.converse_tool_set({"tools": [PING]}).choice == AUTO
    # A schema just under the limit is accepted: the limit is on the schema, not on the request.
    padding = tool_use.MAX_SCHEMA_BYTES - len(json.dumps({"description": "", "type": "object"},
                                                         separators=(",", ":")))
    assert tool_use.converse_tool_set({"tools": [spec("big", {"type": "object", "description": "x" * padding})]})


def user(*blocks):
    return {"role": "user", "content": list(blocks)}


def assistant(*blocks):
    return {"role": "assistant", "content": list(blocks)}


USE = {"toolUse": {"toolUseId": "tooluse_1", "name": "ping", "input": {}}}
RESULT = {"toolResult": {"toolUseId": "tooluse_1", "content": [{"text": "up"}]}}


@pytest.mark.parametrize(("messages", "tools", "words"), [
    ([user({"text": "hi"}, USE)], TOOLS, ["messages.0", "assistant messages"]),
    ([user({"text": "hi"}), assistant(USE, RESULT)], TOOLS, ["messages.1", "user messages"]),
    ([user({"text": "hi"}), assistant(USE), user({"toolResult": {**RESULT["toolResult"], "toolUseId": "tooluse_9"}})],
     TOOLS, ["messages.2", "tooluse_9"]),
    ([user(RESULT), assistant(USE)], TOOLS, ["tooluse_1", "previous"]),  # a result before its call
    ([user({"text": "hi"}), assistant(USE), user(RESULT)], None, [tool_use.TOOL_CONFIG_REQUIRED]),
    ([user({"text": "hi"}), assistant({"toolUse": {**USE["toolUse"], "input": [1]}})], TOOLS, ["JSON object"]),
    ([user({"text": "hi"}), assistant(USE), user({"toolResult": {**RESULT["toolResult"],
                                                                 "content": [{"image": {}}]}})],
     TOOLS, ["image"]),
])
def test_tool_blocks_in_the_wrong_place_are_refused(messages, tools, words):
    with pytest.raises(ValidationException) as raised:
        tool_use.converse_messages(messages, tools)
    for word in words:
        assert word in str(raised.value)


def test_converse_messages_carry_calls_and_results():
    chat = tool_use.converse_messages(
        [user({"text": "hi"}), assistant({"text": "one moment"}, USE),
         user({"toolResult": {**RESULT["toolResult"], "status": "error",
                              "content": [{"text": "down"}, {"json": {"code": 503}}]}})], TOOLS)
    assert chat[1] == {"role": "assistant", "content": "one moment",
                       "tool_calls": [ToolCall("tooluse_1", "ping", {})]}
    assert chat[2] == {"role": "user", "content": "",
                       "tool_results": [tool_use.ToolResult("tooluse_1", 'down\n{"code": 503}', error=True)]}


ANTHROPIC_TOOL = {"name": "ping", "description": "Is it up?", "input_schema": {"type": "object"}}


@pytest.mark.parametrize(("tools", "choice", "words"), [
    (None, {"type": "auto"}, ["tool_choice may only be specified while providing tools"]),
    ([ANTHROPIC_TOOL], {"type": "auto", "disable_parallel_tool_use": "yes"}, ["disable_parallel_tool_use"]),
    ([ANTHROPIC_TOOL], {"type": "required"}, ["tool_choice.type"]),
    ([ANTHROPIC_TOOL], {"type": "tool", "name": "pong"}, ["pong"]),
    ([ANTHROPIC_TOOL, ANTHROPIC_TOOL], None, ["ping", "more than once"]),
    ([{**ANTHROPIC_TOOL, "input_schema": {"type": "array"}}], None, ["tool ping", "type object"]),
    ([{**ANTHROPIC_TOOL, "cache_control": {"type": "ephemeral"}}], None, ["tools.0", "cache_control"]),
    ([{"type": "bash_20250124", "name": "bash"}], None, ["tools.0", "bash_20250124"]),
    ({"name": "ping"}, None, ["tools must be a list"]),
])
def test_a_bad_anthropic_tool_set_is_refused(tools, choice, words):
    with pytest.raises(ValidationException) as raised:
        tool_use.anthropic_tool_set(tools, choice)
    for word in words:
        assert word in str(raised.value)


def test_anthropic_tool_choices():
    assert tool_use.anthropic_tool_set(None, None) is None
    assert tool_use.anthropic_tool_set([ANTHROPIC_TOOL], None).choice == AUTO
    assert tool_use.anthropic_tool_set([ANTHROPIC_TOOL], {"type": "any"}).choice == ANY
    forced = tool_use.anthropic_tool_set([ANTHROPIC_TOOL], {"type": "tool", "name": "ping"})
    assert (forced.choice, forced.forced) == (TOOL, "ping")
    # none: the tools are described to the model but never called, so nothing constrains the text.
    never = tool_use.anthropic_tool_set([ANTHROPIC_TOOL], {"type": "none"})
    assert never.choice == NONE
    assert tool_use.grammar(HERMES, never, None) is None


def test_anthropic_messages_carry_calls_and_results_or_are_refused():
    tools = tool_use.anthropic_tool_set([ANTHROPIC_TOOL], None)
    call_block = {"type": "tool_use", "id": "toolu_1", "name": "ping", "input": {}}
    result_block = {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "up"}],
                    "is_error": True}
    chat = tool_use.anthropic_messages([{"role": "user", "content": "hi"},
                                        {"role": "assistant", "content": [call_block]},
                                        {"role": "user", "content": [result_block]}], tools)
    assert chat[1]["tool_calls"] == [ToolCall("toolu_1", "ping", {})]
    assert chat[2]["tool_results"] == [tool_use.ToolResult("toolu_1", "up", error=True)]
    refused = [
        ([{"role": "user", "content": [call_block]}], tools, "assistant messages"),
        ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": [result_block]}], tools,
         "user messages"),
        ([{"role": "user", "content": [result_block]}], tools, "toolu_1"),
        ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": [call_block]}], None,
         tool_use.TOOL_CONFIG_REQUIRED),
        ([{"role": "assistant", "content": [{**call_block, "input": "{}"}]}], tools, "input object"),
        ([{"role": "user", "content": [{**result_block, "content": [{"type": "image"}]}]}], tools, "text blocks"),
    ]
    for messages, tool_set, words in refused:
        with pytest.raises(ValidationException) as raised:
            tool_use.anthropic_messages(messages, tool_set)
        assert words in str(raised.value), messages


def structured(schema_text, **extra):
    return {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": {"schema": schema_text, **extra}}}}


@pytest.mark.parametrize(("config", "words"), [
    ({"effort": "high"}, ["effort"]),
    ({"textFormat": {"type": "text"}}, ["'text'", "json_schema"]),
    ({"textFormat": {"type": "json_schema", "structure": {}}}, ["jsonSchema"]),
    (structured("{not json"), ["is not JSON"]),
    (structured("[1, 2]"), ["must be a JSON object"]),
    (structured('{"type": 7}'), ["not a valid JSON schema"]),
    (structured('{"type": "string", "pattern": "(?<=x)y"}'), ["cannot be enforced"]),
])
def test_a_bad_answer_schema_is_refused(config, words):
    with pytest.raises(ValidationException) as raised:
        tool_use.answer_schema(config)
    for word in words:
        assert word in str(raised.value)


def test_an_answer_schema_parses():
    assert tool_use.answer_schema(None) is None
    assert tool_use.answer_schema({}) is None
    assert tool_use.answer_schema({"textFormat": None}) is None
    # Any JSON schema, not only objects: a structured answer may be a list or a string.
    assert tool_use.answer_schema(structured('{"type": "array", "items": {"type": "integer"}}', name="numbers")) == {
        "type": "array", "items": {"type": "integer"}}


# -- grammars -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def oracle(tokenizer):
    """llguidance's view of the test tokenizer, for matchers built straight from the grammar text."""
    return llguidance.hf.from_tokenizer(tokenizer)


def accepts(oracle, tokenizer, grammar, text):
    """Whether `text`, as the tokenizer splits it, is a complete answer under `grammar`."""
    matcher = llguidance.LLMatcher(oracle, grammar, log_level=0)
    assert not matcher.is_error(), matcher.get_error()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return matcher.validate_tokens(ids) == len(ids) and matcher.consume_tokens(ids) and matcher.is_accepting()


PARIS = {"city": "Paris", "unit": "celsius"}


@pytest.mark.parametrize("syntax", SYNTAXES, ids=lambda s: s.name)
def test_tool_grammars_accept_well_formed_calls_and_nothing_else(oracle, tokenizer, syntax):
    weather, ping = call(syntax, "get_weather", PARIS), call(syntax, "ping", {})
    kelvin = call(syntax, "get_weather", {"city": "Paris", "unit": "kelvin"})
    unknown = call(syntax, "get_time", {})
    incomplete = call(syntax, "get_weather", {"city": "Paris"})
    choices = {choice: tool_use.grammar(syntax, ToolSet(TOOLS.tools, choice, "ping" if choice == TOOL else None), None)
               for choice in (AUTO, ANY, TOOL)}
    cases = {
        # text                         auto   any    tool
        weather:                       (True, True, False),
        ping:                          (True, True, True),
        weather + "\n" + ping:         (False, False, False),  # one call per turn: a call ends the answer
        ping + "\n" + ping:            (False, False, False),
        "It is sunny.":                (True, False, False),
        "Let me look. " + weather:     (True, False, False),
        weather + " That is all.":     (False, False, False),
        kelvin:                        (False, False, False),  # an argument outside its enum
        "Let me look. " + kelvin:      (False, False, False),  # a call cannot hide in prose
        unknown:                       (False, False, False),
        incomplete:                    (False, False, False),  # a required argument missing
        weather[:-3]:                  (False, False, False),  # not closed
        weather + ping:                (False, False, False),
    }
    for text, expected in cases.items():
        got = tuple(accepts(oracle, tokenizer, choices[c], text) for c in (AUTO, ANY, TOOL))
        assert got == expected, text


def test_an_answer_schema_constrains_the_answer(oracle, tokenizer):
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"],
              "additionalProperties": False}
    answer, weather = '{"answer": 42}', call(HERMES, "get_weather", PARIS)
    # Tools offered (auto): a call or the structured answer, never free text.
    with_tools = tool_use.grammar(HERMES, TOOLS, schema)
    assert accepts(oracle, tokenizer, with_tools, answer) and accepts(oracle, tokenizer, with_tools, weather)
    for text in ('{"answer": "42"}', "42", "The answer: " + answer, answer + "\n" + weather):
        assert not accepts(oracle, tokenizer, with_tools, text), text
    # No tools, or tools that are never called: the answer alone.
    for tools in (None, ToolSet(TOOLS.tools, NONE)):
        alone = tool_use.grammar(HERMES, tools, schema)
        assert accepts(oracle, tokenizer, alone, answer)
        assert not accepts(oracle, tokenizer, alone, weather)
        assert not accepts(oracle, tokenizer, alone, '{"answer": 4.5}')
    # Calls required: a call, even though an answer schema was given.
    required = tool_use.grammar(HERMES, ToolSet(TOOLS.tools, ANY), schema)
    assert accepts(oracle, tokenizer, required, weather) and not accepts(oracle, tokenizer, required, answer)
    assert tool_use.grammar(HERMES, None, None) is None


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(SYNTAXES), st.lists(st.tuples(st.text(st.characters(
    # ASCII without control characters or ">", so that no text spells the tokenizer's special "</s>".
    codec="ascii", exclude_categories=("Cc",), exclude_characters=">"), max_size=15),
                                                     st.sampled_from(["celsius", "fahrenheit"])),
                                           min_size=1, max_size=1))
def test_any_mode_accepts_calls_with_any_valid_arguments(oracle, tokenizer, syntax, calls):
    grammar = tool_use.grammar(syntax, ToolSet(TOOLS.tools, ANY), None)
    text = "\n".join(call(syntax, "get_weather", {"city": city, "unit": unit}) for city, unit in calls)
    assert accepts(oracle, tokenizer, grammar, text)
    # What the grammar let through reads back as exactly those calls.
    assert read_whole(syntax, text) == ("", [("get_weather", {"city": c, "unit": u}) for c, u in calls])


# -- marker tokens and property order -------------------------------------------------------------

# Qwen 2.5's tokenizer has <tool_call> and </tool_call> as added (not special) tokens, which llguidance takes for
# special ones all the same (their text is in angle brackets); Mistral's has [TOOL_CALLS] as a special token.
@pytest.mark.parametrize(("syntax", "markers", "special"), [
    (HERMES, ["<tool_call>", "</tool_call>"], False), (MISTRAL, ["[TOOL_CALLS]"], True)], ids=["qwen2.5", "mistral"])
def test_a_call_may_use_the_tokenizers_own_marker_tokens(tmp_path, syntax, markers, special):
    tokenizer = train_tokenizer(tmp_path)
    tokenizer.add_tokens(markers, special_tokens=special)
    native = tokenizer(call(syntax, "ping", {}), add_special_tokens=False)["input_ids"]
    assert native[0] == tokenizer.convert_tokens_to_ids(markers[0])  # the prompt's past calls look like this
    oracle = llguidance.hf.from_tokenizer(tokenizer)
    for choice in (AUTO, ANY):
        grammar = tool_use.grammar(syntax, ToolSet(TOOLS.tools, choice), None,
                                   tool_use.marker_tokens(tokenizer, syntax))
        matcher = llguidance.LLMatcher(oracle, grammar, log_level=0)
        assert matcher.validate_tokens(native) == len(native), choice


def test_arguments_are_written_in_the_schemas_property_order(oracle, tokenizer):
    schema = {"type": "object", "properties": {"reasoning": {"type": "string"}, "answer": {"type": "integer"}},
              "required": ["reasoning", "answer"], "additionalProperties": False}
    tools = tool_use.converse_tool_set({"tools": [spec("solve", schema)], "toolChoice": {"any": {}}})
    grammar = tool_use.grammar(HERMES, tools, None)
    assert accepts(oracle, tokenizer, grammar, call(HERMES, "solve", {"reasoning": "6 times 7", "answer": 42}))


def test_what_a_grammar_cannot_enforce_is_left_to_the_model_unless_strict():
    """pydantic writes uniqueItems for a set: LangChain's tools must work, so a non-strict schema compiles
    leniently (the rest is enforced); toolSpec.strict refuses it instead of enforcing less than it says."""
    schema = {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"},
                                                        "uniqueItems": True}}, "required": ["tags"]}
    lenient = tool_use.converse_tool_set({"tools": [spec("tag", schema)], "toolChoice": {"any": {}}})
    assert '"lenient": true' in tool_use.grammar(HERMES, lenient, None)
    strict = {"toolSpec": {**spec("tag", schema)["toolSpec"], "strict": True}}
    with pytest.raises(ValidationException, match="uniqueItems"):
        tool_use.converse_tool_set({"tools": [strict]})
    # A schema without "type" is an object's (Bedrock's reading), and compiled as one.
    untyped = tool_use.converse_tool_set({"tools": [spec("t", {"properties": {"a": {"type": "string"}}})]})
    assert json.loads(untyped.tools[0].schema)["type"] == "object"
    with pytest.raises(ValidationException, match="exactly one"):
        tool_use.converse_tool_set({"tools": [spec("t", schema)], "toolChoice": {"auto": {}, "any": {}}})
