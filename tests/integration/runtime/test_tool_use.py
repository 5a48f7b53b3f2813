"""Converse tool use and structured output through real boto3, on the tiny random model and on SmolLM2.

A random model writes nothing meaningful, which makes it the hardest test of constrained decoding: left
alone it never writes a well-formed call, so every call that arrives parses and validates only because
the grammar made it so."""

from __future__ import annotations

import json

import jsonschema
import pytest
from botocore.exceptions import ClientError, EventStreamError

from tests.backends import objects, query

SMOLLM2 = "huggingface.smollm2-135m-instruct-v1:0"

WEATHER = {"toolSpec": {
    "name": "get_weather", "description": "The current weather in a city.",
    "inputSchema": {"json": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 40},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"], "additionalProperties": False}}}}
ORDER = {"toolSpec": {
    "name": "place_order", "description": "Order items for a customer.",
    "inputSchema": {"json": {"type": "object", "properties": {
        "customer": {"type": "object", "properties": {
            "name": {"type": "string", "maxLength": 20},
            "tier": {"enum": ["basic", "gold"]}}, "required": ["name", "tier"], "additionalProperties": False},
        "items": {"type": "array", "minItems": 1, "maxItems": 3, "items": {
            "type": "object", "properties": {"sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"},
                                             "qty": {"type": "integer", "minimum": 1, "maximum": 9}},
            "required": ["sku", "qty"], "additionalProperties": False}}},
        "required": ["customer", "items"], "additionalProperties": False}}}}
QUESTION = [{"role": "user", "content": [{"text": "What is the weather in Paris?"}]}]


@pytest.fixture(scope="module")
def tiny_model(server, tmp_path_factory):
    """The tiny random Llama with a context long enough for the tools' prompt (its byte-level vocabulary
    spends a token on almost every character)."""
    from tests.conftest import register_model
    from tests.helpers import make_tiny_llama

    return register_model(server, "tiny-tools", make_tiny_llama(tmp_path_factory.mktemp("tiny-tools"), context=4096))


def _schema(tool):
    return tool["toolSpec"]["inputSchema"]["json"]


def _tool_uses(response):
    return [b["toolUse"] for b in response["output"]["message"]["content"] if "toolUse" in b]


def test_any_always_calls_a_tool_with_valid_arguments(runtime, tiny_model):
    tools = {"tools": [WEATHER, ORDER], "toolChoice": {"any": {}}}
    for seed in range(4):
        response = runtime.converse(modelId=tiny_model, messages=QUESTION, toolConfig=tools,
                                    inferenceConfig={"maxTokens": 300, "temperature": 1},
                                    additionalModelRequestFields={"seed": seed})
        uses = _tool_uses(response)
        assert len(uses) == 1 and response["stopReason"] == "tool_use", response  # the call ends the turn
        for use in uses:
            assert use["toolUseId"].startswith("tooluse_")
            jsonschema.validate(use["input"], _schema(WEATHER if use["name"] == "get_weather" else ORDER))


def test_tool_choice_names_the_tool_that_is_called(runtime, tiny_model):
    response = runtime.converse(modelId=tiny_model, messages=QUESTION,
                                toolConfig={"tools": [WEATHER, ORDER], "toolChoice": {"tool": {"name": "place_order"}}},
                                inferenceConfig={"maxTokens": 200, "temperature": 0})
    uses = _tool_uses(response)
    assert uses and all(u["name"] == "place_order" for u in uses)
    for use in uses:
        jsonschema.validate(use["input"], _schema(ORDER))


def test_stream_tool_deltas_reassemble_to_the_same_call(runtime, tiny_model):
    kwargs = {"modelId": tiny_model, "messages": QUESTION,
              "toolConfig": {"tools": [WEATHER], "toolChoice": {"any": {}}},
              "inferenceConfig": {"maxTokens": 200, "temperature": 1},
              "additionalModelRequestFields": {"seed": 3}}
    whole = runtime.converse(**kwargs)
    events = list(runtime.converse_stream(**kwargs)["stream"])
    starts = [e["contentBlockStart"] for e in events if "contentBlockStart" in e]
    assert starts and starts[0]["start"]["toolUse"]["name"] == "get_weather"
    index = starts[0]["contentBlockIndex"]
    fragments = [e["contentBlockDelta"]["delta"]["toolUse"]["input"] for e in events
                 if "contentBlockDelta" in e and e["contentBlockDelta"]["contentBlockIndex"] == index]
    assert len(fragments) > 1  # the arguments arrive as they are generated, not at the end
    assert json.loads("".join(fragments)) == _tool_uses(whole)[0]["input"]
    stops = [e["contentBlockStop"]["contentBlockIndex"] for e in events if "contentBlockStop" in e]
    assert index in stops
    assert next(e for e in events if "messageStop" in e)["messageStop"]["stopReason"] == "tool_use"


def test_a_round_trip_of_call_result_and_answer(runtime, tiny_model):
    tools = {"tools": [WEATHER], "toolChoice": {"any": {}}}
    first = runtime.converse(modelId=tiny_model, messages=QUESTION, toolConfig=tools,
                             inferenceConfig={"maxTokens": 300, "temperature": 0})
    use = _tool_uses(first)[0]
    conversation = [*QUESTION, first["output"]["message"],
                    {"role": "user", "content": [{"toolResult": {"toolUseId": use["toolUseId"],
                                                                 "content": [{"json": {"temperature": 21}}]}}]}]
    final = runtime.converse(modelId=tiny_model, messages=conversation, toolConfig={"tools": [WEATHER]},
                             inferenceConfig={"maxTokens": 20, "temperature": 0})
    assert final["stopReason"] in ("end_turn", "max_tokens", "tool_use")
    assert final["usage"]["inputTokens"] > first["usage"]["inputTokens"]
    # An error result is a turn too.
    conversation[-1]["content"][0]["toolResult"]["status"] = "error"
    failed = runtime.converse(modelId=tiny_model, messages=conversation, toolConfig={"tools": [WEATHER]},
                              inferenceConfig={"maxTokens": 5, "temperature": 0})
    # The error is in the prompt the model reads (the fallback writes it into the tool response).
    assert failed["usage"]["inputTokens"] > final["usage"]["inputTokens"]


TAGS = {"toolSpec": {
    "name": "tag_photo", "description": "Tag a photo with its colours.",
    "inputSchema": {"json": {"type": "object", "properties": {"tags": {
        "type": "array", "items": {"enum": ["red", "blue", "green"]}, "minItems": 2, "maxItems": 3,
        "uniqueItems": True}}, "required": ["tags"], "additionalProperties": False}}}}


def test_a_keyword_the_grammar_cannot_enforce_is_checked_and_never_returned_broken(runtime, tiny_model):
    """uniqueItems is beyond a grammar: each call is validated once written and written again when it fails, so
    what comes back validates, whole or streamed, or is a ModelErrorException that names the keyword."""
    kwargs = {"modelId": tiny_model, "messages": QUESTION, "toolConfig": {"tools": [TAGS], "toolChoice": {"any": {}}},
              "inferenceConfig": {"maxTokens": 120, "temperature": 1}}
    called = 0
    for seed in (1, 2):  # on the tiny model: valid at the third try; invalid at all four (ModelErrorException)
        try:
            response = runtime.converse(**kwargs, additionalModelRequestFields={"seed": seed})
        except ClientError as error:
            assert error.response["Error"]["Code"] == "ModelErrorException", error.response
            assert "uniqueItems" in error.response["Error"]["Message"]
            continue
        (use,) = _tool_uses(response)
        jsonschema.validate(use["input"], _schema(TAGS))
        called += 1
    assert called, "no call validated in any of the tries"
    events = []
    try:
        events.extend(runtime.converse_stream(**kwargs, additionalModelRequestFields={"seed": 0})["stream"])
    except EventStreamError as error:  # every try failed: the stream ends with the model's error
        assert error.response["Error"]["Code"] == "modelStreamErrorException", error.response
        assert "uniqueItems" in error.response["Error"]["Message"]
    fragments = "".join(e["contentBlockDelta"]["delta"]["toolUse"]["input"] for e in events
                        if "toolUse" in e.get("contentBlockDelta", {}).get("delta", {}))
    if fragments:  # a call streams only once it has validated
        jsonschema.validate(json.loads(fragments), _schema(TAGS))


def test_a_call_cut_off_by_max_tokens_leaves_no_blank_text_block(runtime, tiny_model):
    """Bedrock refuses a blank text block sent back: the cut call is dropped, and nothing is left in its place."""
    response = runtime.converse(modelId=tiny_model, messages=QUESTION, inferenceConfig={"maxTokens": 4},
                                toolConfig={"tools": [WEATHER], "toolChoice": {"any": {}}})
    assert response["stopReason"] == "max_tokens" and response["output"]["message"]["content"] == []


def test_structured_output_follows_the_schema(runtime, tiny_model):
    schema = {"type": "object", "properties": {"answer": {"type": "string", "maxLength": 30},
                                               "confidence": {"type": "number"},
                                               "tags": {"type": "array", "items": {"enum": ["a", "b"]},
                                                        "maxItems": 3}},
              "required": ["answer", "confidence", "tags"], "additionalProperties": False}
    for seed in range(3):
        response = runtime.converse(
            modelId=tiny_model, messages=QUESTION, inferenceConfig={"maxTokens": 150, "temperature": 1},
            additionalModelRequestFields={"seed": seed},
            outputConfig={"textFormat": {"type": "json_schema",
                                         "structure": {"jsonSchema": {"schema": json.dumps(schema), "name": "a"}}}})
        assert response["stopReason"] == "end_turn", response
        jsonschema.validate(json.loads(response["output"]["message"]["content"][0]["text"]), schema)


def test_count_tokens_counts_the_tools(runtime, tiny_model):
    plain = runtime.count_tokens(modelId=tiny_model, input={"converse": {"messages": QUESTION}})
    with_tools = runtime.count_tokens(modelId=tiny_model, input={"converse": {
        "messages": QUESTION, "toolConfig": {"tools": [WEATHER]}}})
    assert with_tools["inputTokens"] > plain["inputTokens"]


def _spec(request):
    return request["toolConfig"]["tools"][0]["toolSpec"]


def _schema_is(schema):
    return lambda r: _spec(r)["inputSchema"].update(json=schema)


def _without_tools_but_with_tool_turns(request):
    request.pop("toolConfig")
    request["messages"] += [
        {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {}}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "1"}]}}]}]


def _answer_schema_is(text):
    return lambda r: r.update(outputConfig={"textFormat": {"type": "json_schema",
                                                           "structure": {"jsonSchema": {"schema": text}}}})


@pytest.mark.parametrize("change, words", [
    (lambda r: _spec(r).update(name="bad name!"), "name"),
    (_schema_is({"type": "object", "properties": {"a": {"type": 7}}}), "get_weather"),
    (_schema_is({"type": "object", "properties": {"a": {"type": "string", "pattern": "(?<=x)y"}}}), "get_weather"),
    (_schema_is({"type": "object", "description": "x" * 70000}), "limit"),
    (lambda r: r["toolConfig"].update(toolChoice={"tool": {"name": "nope"}}), "nope"),
    (lambda r: r["toolConfig"]["tools"].append(WEATHER), "more than once"),
    (lambda r: r["messages"].append({"role": "user", "content": [
        {"toolResult": {"toolUseId": "tooluse_x", "content": [{"text": "1"}]}}]}), "tooluse_x"),
    (_without_tools_but_with_tool_turns, "toolConfig"),
    (lambda r: r["messages"].insert(0, {"role": "assistant", "content": [{"text": "hi"}]}), "start with a user"),
    (_answer_schema_is("{not json"), "outputConfig"),
    (lambda r: _spec(r).update(strict=True, inputSchema={"json": {"type": "object", "properties": {
        "tags": {"type": "array", "uniqueItems": True}}}}), "uniqueItems"),
    (lambda r: r.update(inferenceConfig={"stopSequences": ["}"]}, toolConfig={**r["toolConfig"],
                                                                               "toolChoice": {"any": {}}}),
     "Stop sequences"),
    (lambda r: r["messages"].extend([
        {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {}}}]},
        {"role": "user", "content": [{"text": "and?"}]}]), "expected toolResult"),
], ids=["tool-name", "invalid-schema", "unsupported-regex", "schema-size", "unknown-forced-tool", "duplicate",
        "unmatched-result", "tool-turns-without-tools", "roles", "answer-schema", "strict-unenforceable",
        "stop-sequences-with-forced-call", "unanswered-call"])
def test_bad_tool_requests_are_named_validation_errors(runtime, tiny_model, change, words):
    request = {"modelId": tiny_model, "messages": [QUESTION[0]],
               "toolConfig": {"tools": [json.loads(json.dumps(WEATHER))]}}
    change(request)
    with pytest.raises(ClientError) as caught:
        runtime.converse(**request)
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert words in caught.value.response["Error"]["Message"], caught.value.response["Error"]["Message"]


# -- the Anthropic Messages body of InvokeModel ------------------------------------------------------

def _anthropic(model, messages, **extra):
    return {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 300, "temperature": 1, "seed": 5,
            "messages": messages, **extra}


ANTHROPIC_WEATHER = {"name": "get_weather", "description": WEATHER["toolSpec"]["description"],
                     "input_schema": _schema(WEATHER)}


def test_anthropic_tools_answer_tool_use_blocks(runtime, tiny_model):
    body = _anthropic(tiny_model, [{"role": "user", "content": "Weather in Paris?"}],
                      tools=[ANTHROPIC_WEATHER], tool_choice={"type": "tool", "name": "get_weather"})
    answer = json.loads(runtime.invoke_model(modelId=tiny_model, body=json.dumps(body))["body"].read())
    uses = [b for b in answer["content"] if b["type"] == "tool_use"]
    assert uses and uses[0]["name"] == "get_weather" and uses[0]["id"].startswith("tooluse_")
    jsonschema.validate(uses[0]["input"], _schema(WEATHER))
    assert answer["stop_reason"] in ("tool_use", "max_tokens")

    # The stream: a tool_use block whose input_json_delta fragments add up to the same input.
    events = [json.loads(e["chunk"]["bytes"]) for e in runtime.invoke_model_with_response_stream(
        modelId=tiny_model, body=json.dumps(body))["body"]]
    start = next(e for e in events if e["type"] == "content_block_start")
    assert start["content_block"]["type"] == "tool_use" and start["content_block"]["name"] == "get_weather"
    fragments = [e["delta"]["partial_json"] for e in events
                 if e["type"] == "content_block_delta" and e["index"] == start["index"]]
    assert json.loads("".join(fragments)) == uses[0]["input"]
    assert any(e["type"] == "content_block_stop" and e["index"] == start["index"] for e in events)

    # The result goes back as a tool_result block; the next answer is generated from it.
    follow = _anthropic(tiny_model, [{"role": "user", "content": "Weather in Paris?"},
                                     {"role": "assistant", "content": answer["content"]},
                                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0]["id"],
                                                                   "content": "21 degrees"}]}],
                        tools=[ANTHROPIC_WEATHER], max_tokens=10)
    runtime.invoke_model(modelId=tiny_model, body=json.dumps(follow))


@pytest.mark.parametrize("extra, words", [
    ({"tool_choice": {"type": "any"}}, "tool_choice"),
    ({"tools": [{**ANTHROPIC_WEATHER, "input_schema": {"type": "object", "properties": {"a": {"type": 7}}}}]},
     "get_weather"),
    ({"tools": [ANTHROPIC_WEATHER], "tool_choice": {"type": "tool", "name": "other"}}, "other"),
])
def test_anthropic_bad_tools_are_validation_errors(runtime, tiny_model, extra, words):
    body = _anthropic(tiny_model, [{"role": "user", "content": "hi"}], **extra)
    with pytest.raises(ClientError) as caught:
        runtime.invoke_model(modelId=tiny_model, body=json.dumps(body))
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert words in caught.value.response["Error"]["Message"]


def test_tool_calls_are_metered_and_logged_like_text(server, runtime, bedrock, tiny_model):
    """The usage record counts the call's tokens, and the invocation log holds the same toolUse blocks (same
    ids) as the answer the caller got."""
    import gzip
    import subprocess
    import sys
    import time

    subprocess.run([sys.executable, "-m", "outcrop", "s3", "mb", "s3://tool-logs", "--data-dir", str(server.data_dir)],
                   check=True, capture_output=True, timeout=120)
    bedrock.put_model_invocation_logging_configuration(loggingConfig={
        "s3Config": {"bucketName": "tool-logs", "keyPrefix": "calls"}, "textDataDeliveryEnabled": True})
    try:
        response = runtime.converse(modelId=tiny_model, messages=QUESTION,
                                    toolConfig={"tools": [WEATHER], "toolChoice": {"any": {}}},
                                    inferenceConfig={"maxTokens": 300, "temperature": 0})
        request_id = response["ResponseMetadata"]["RequestId"]
        records = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not records:
            for data in objects(server.data_dir, "s3://tool-logs/", ".json.gz").values():
                for line in gzip.decompress(data).decode().splitlines():
                    record = json.loads(line)
                    if record["requestId"] == request_id:
                        records.append(record)
            time.sleep(0.3)
    finally:
        bedrock.delete_model_invocation_logging_configuration()
    assert records, "no invocation log record for the request"
    logged = records[0]["output"]["outputBodyJson"]["output"]["message"]["content"]
    assert logged == response["output"]["message"]["content"]
    assert records[0]["input"]["inputBodyJson"]["toolConfig"]["tools"][0]["toolSpec"]["name"] == "get_weather"
    [(output_tokens,)] = query(server.data_dir, "SELECT output_tokens FROM usage_records WHERE request_id = ?",
                               request_id)
    assert output_tokens == response["usage"]["outputTokens"] > 0
