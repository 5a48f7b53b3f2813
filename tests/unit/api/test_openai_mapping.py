"""The OpenAI door's translations (outcrop/api/openai/): OpenAI requests -> Bedrock params, answers -> OpenAI's.

Every translated request is also checked against botocore's input shape and read by the runtime's own parsers
(tool_use), so what the door sends is what Converse and InvokeModel take."""

from __future__ import annotations

import base64
import json
import struct

import pytest

from outcrop.api.openai import chat, completions, embeddings, errors, models
from outcrop.api.openai.door import MODEL, route, sse, validated
from outcrop.api.openai.errors import InvalidRequest, MethodNotAllowed, RouteNotFound, error_body, error_status
from outcrop.errors import (
    AccessDeniedException,
    MissingAuthenticationTokenException,
    ModelNotReadyException,
    ThrottlingException,
    UnrecognizedClientException,
    ValidationException,
)
from outcrop.runtime import tool_use
from outcrop.runtime.formats import detect_text_format
from outcrop.runtime.service import INVALID_MODEL_IDENTIFIER

MODEL_ID = "meta.llama3-8b-instruct-v1:0"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def chat_params(**body):
    request = chat.parse({"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], **body})
    validated("bedrock-runtime", "ConverseStream" if request.stream else "Converse", request.params)
    return request.params


def refused(parse, body, param):
    with pytest.raises(InvalidRequest) as caught:
        parse(body)
    assert caught.value.param == param, caught.value.message
    return caught.value


# -- chat: the request ---------------------------------------------------------------------------------

def test_a_plain_chat_gets_openais_sampling_defaults():
    params = chat_params()
    assert params == {"modelId": MODEL_ID, "messages": [{"role": "user", "content": [{"text": "Hi"}]}],
                      "inferenceConfig": {"temperature": 1.0, "topP": 1.0}}


def test_sampling_fields_become_inference_config_and_extra_fields():
    params = chat_params(temperature=0, top_p=0.5, max_completion_tokens=7, stop="END", seed=0, top_k=3,
                         n=1, logprobs=False, frequency_penalty=0, presence_penalty=0.0, logit_bias={},
                         store=False, service_tier="default", parallel_tool_calls=False, modalities=["text"])
    assert params["inferenceConfig"] == {"temperature": 0.0, "topP": 0.5, "maxTokens": 7, "stopSequences": ["END"]}
    assert params["additionalModelRequestFields"] == {"seed": 0, "top_k": 3}
    assert params["serviceTier"] == {"type": "default"}
    assert chat_params(max_tokens=5)["inferenceConfig"]["maxTokens"] == 5
    refused(chat.parse, {"model": MODEL_ID, "messages": [{"role": "user", "content": "x"}], "max_tokens": 5,
                         "max_completion_tokens": 6}, "max_completion_tokens")


def test_openais_temperatures_above_bedrocks_range_go_as_the_runtimes_extra_field():
    hot = chat_params(temperature=1.7, seed=4)
    assert "temperature" not in hot["inferenceConfig"]
    assert hot["additionalModelRequestFields"] == {"seed": 4, "temperature": 1.7}
    assert chat_params(temperature=1)["inferenceConfig"]["temperature"] == 1.0
    # Completions' Mistral body keeps Bedrock's range, and says where a higher temperature is taken.
    error = refused(completions.parse, {"model": MODEL_ID, "prompt": "x", "temperature": 1.5}, "temperature")
    assert "/v1/chat/completions" in error.message


def test_n_choices_are_calls_of_their_own_with_seeds_of_their_own():
    request = chat.parse({"model": MODEL_ID, "messages": [{"role": "user", "content": "x"}], "n": 3, "seed": 7})
    assert request.n == 3
    assert [request.choice_params(i)["additionalModelRequestFields"]["seed"] for i in range(3)] == [7, 8, 9]
    unseeded = chat.parse({"model": MODEL_ID, "messages": [{"role": "user", "content": "x"}], "n": 2})
    assert unseeded.choice_params(1) == unseeded.params  # each sequence draws its own random seed
    text = completions.parse({"model": MODEL_ID, "prompt": "x", "n": 2, "best_of": 2, "seed": 2**63 - 1})
    assert (text.n, text.choice_body(0)["seed"], text.choice_body(1)["seed"]) == (2, 2**63 - 1, 0)
    refused(completions.parse, {"model": MODEL_ID, "prompt": "x", "n": 2, "best_of": 3}, "best_of")


def test_user_and_metadata_are_request_metadata_for_insights():
    params = chat_params(user="u-42", metadata={"sessionId": "s-1", "domain": "tests"})
    assert params["requestMetadata"] == {"sessionId": "s-1", "domain": "tests", "userId": "u-42"}
    base = {"model": MODEL_ID, "messages": [{"role": "user", "content": "x"}]}
    refused(chat.parse, {**base, "user": "u", "metadata": {"userId": "v"}}, "user")
    refused(chat.parse, {**base, "metadata": {"k": "ünïcode"}}, "metadata")
    refused(chat.parse, {**base, "metadata": {"k": 1}}, "metadata")


@pytest.mark.parametrize(("field", "value"), [
    ("logprobs", True), ("top_logprobs", 2), ("frequency_penalty", 0.5), ("presence_penalty", -1),
    ("logit_bias", {"50256": -100}), ("store", True), ("service_tier", "flex"), ("modalities", ["text", "audio"])])
def test_what_cannot_be_honoured_is_refused_by_name(field, value):
    error = refused(chat.parse, {"model": MODEL_ID, "messages": [{"role": "user", "content": "x"}], field: value},
                    field)
    assert error.openai_code == "unsupported_value" and "not supported" in error.message


@pytest.mark.parametrize(("body", "param"), [
    ({"foo": 1}, "foo"), ({"functions": []}, "functions"), ({"reasoning_effort": "low"}, "reasoning_effort"),
    ({"temperature": 2.5}, "temperature"), ({"n": 0}, "n"), ({"n": 17}, "n"), ({"top_p": 2}, "top_p"),
    ({"seed": -1}, "seed"), ({"stop": [""]}, "stop"),
    ({"stream": "yes"}, "stream"), ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"stream": True, "stream_options": {"include_obfuscation": True}}, "stream_options.include_obfuscation"),
    ({"model": ""}, "model"), ({"messages": []}, "messages")])
def test_unknown_and_malformed_fields_are_named(body, param):
    error = refused(chat.parse, {"model": MODEL_ID, "messages": [{"role": "user", "content": "x"}], **body}, param)
    if param in ("foo", "functions", "reasoning_effort"):
        assert error.openai_code == "unknown_parameter" and f"'{param}'" in error.message


def test_roles_map_onto_converse_turns():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather"}, {"type": "text", "text": "in Paris?"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_2", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Lyon"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "21 C"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "19 C"}]},
        {"role": "developer", "content": "Answer in French."},
        {"role": "user", "content": "And so?"},
        {"role": "user", "content": "Well?"}]
    params = chat_params(messages=messages, tools=[WEATHER])
    assert params["system"] == [{"text": "Be brief."}, {"text": "Answer in French."}]
    assert params["messages"] == [
        {"role": "user", "content": [{"text": "Weather\nin Paris?"}]},
        {"role": "assistant", "content": [
            {"toolUse": {"toolUseId": "call_1", "name": "get_weather", "input": {"city": "Paris"}}},
            {"toolUse": {"toolUseId": "call_2", "name": "get_weather", "input": {"city": "Lyon"}}}]},
        {"role": "user", "content": [
            {"toolResult": {"toolUseId": "call_1", "content": [{"text": "21 C"}]}},
            {"toolResult": {"toolUseId": "call_2", "content": [{"text": "19 C"}]}},
            {"text": "And so?"}, {"text": "\n\nWell?"}]}]
    # The runtime reads it as one conversation: calls answered by the next user turn, texts joined.
    tools = tool_use.converse_tool_set(params["toolConfig"])
    chat_turns = tool_use.converse_messages(params["messages"], tools)
    assert chat_turns[2]["content"] == "And so?\n\nWell?" and len(chat_turns[2]["tool_results"]) == 2


@pytest.mark.parametrize(("message", "param"), [
    ({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]},
     "messages[0].content[0].type"),
    ({"role": "user", "content": "x", "nickname": "bob"}, "messages[0].nickname"),
    ({"role": "function", "content": "x", "name": "f"}, "messages[0].role"),
    ({"role": "robot", "content": "x"}, "messages[0].role"),
    ({"role": "tool", "content": "x"}, "messages[0].tool_call_id"),
    ({"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                                           "function": {"name": "f", "arguments": "{oops"}}]},
     "messages[0].tool_calls[0].function.arguments"),
    ({"role": "assistant", "content": "x", "refusal": "no"}, "messages[0].refusal")])
def test_messages_the_models_cannot_read_are_refused_by_position(message, param):
    refused(chat.parse, {"model": MODEL_ID, "messages": [message]}, param)


def test_tools_and_tool_choice():
    params = chat_params(tools=[WEATHER])
    assert params["toolConfig"] == {"tools": [{"toolSpec": {
        "name": "get_weather", "description": "The weather in a city.",
        "inputSchema": {"json": WEATHER["function"]["parameters"]}}}], "toolChoice": {"auto": {}}}
    assert chat_params(tools=[WEATHER], tool_choice="required")["toolConfig"]["toolChoice"] == {"any": {}}
    forced = chat_params(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert forced["toolConfig"]["toolChoice"] == {"tool": {"name": "get_weather"}}
    assert tool_use.converse_tool_set(forced["toolConfig"]).choice == tool_use.TOOL
    assert "toolConfig" not in chat_params(tools=[WEATHER], tool_choice="none")
    bare = chat_params(tools=[{"type": "function", "function": {"name": "ping", "strict": True}}])
    assert bare["toolConfig"]["tools"][0]["toolSpec"] == {
        "name": "ping", "inputSchema": {"json": {"type": "object", "properties": {}}}, "strict": True}
    base = {"model": MODEL_ID, "messages": [{"role": "user", "content": "x"}]}
    refused(chat.parse, {**base, "tool_choice": "auto"}, "tool_choice")
    refused(chat.parse, {**base, "tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "tool_choice.function.name")
    refused(chat.parse, {**base, "tools": [{"type": "custom", "custom": {}}]}, "tools[0].type")
    refused(chat.parse, {**base, "tools": [{"type": "function", "function": {"name": "a b"}}]},
            "tools[0].function.name")
    history = [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"}]
    refused(chat.parse, {"model": MODEL_ID, "messages": history, "tools": [WEATHER], "tool_choice": "none"},
            "tool_choice")


def test_response_formats_become_answer_schemas():
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    params = chat_params(response_format={"type": "json_schema", "json_schema": {
        "name": "count", "description": "A count.", "schema": schema, "strict": True}})
    assert tool_use.answer_schema(params["outputConfig"]) == schema
    assert "count: A count." in tool_use.answer_instructions(params["outputConfig"], schema)
    any_object = chat_params(response_format={"type": "json_object"})
    assert tool_use.answer_schema(any_object["outputConfig"]) == {"type": "object"}
    assert "outputConfig" not in chat_params(response_format={"type": "text"})
    base = {"model": MODEL_ID, "messages": [{"role": "user", "content": "x"}]}
    refused(chat.parse, {**base, "response_format": {"type": "xml"}}, "response_format.type")
    refused(chat.parse, {**base, "response_format": {"type": "json_schema", "json_schema": {"schema": schema}}},
            "response_format.json_schema.name")
    # strict: a keyword the grammar cannot enforce is refused, not left to the model; without strict, it is.
    unique = {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"},
                                                        "uniqueItems": True}}}
    error = refused(chat.parse, {**base, "response_format": {"type": "json_schema", "json_schema": {
        "name": "tags", "schema": unique, "strict": True}}}, "response_format.json_schema.schema")
    assert "uniqueItems" in error.message
    assert chat_params(response_format={"type": "json_schema", "json_schema": {"name": "tags", "schema": unique}})
    either = {"oneOf": [{"type": "object", "properties": {"a": {"type": "integer"}}},
                        {"type": "object", "properties": {"b": {"type": "integer"}}}]}
    error = refused(chat.parse, {**base, "response_format": {"type": "json_schema", "json_schema": {
        "name": "either", "schema": either, "strict": True}}}, "response_format.json_schema.schema")
    assert "oneOf is read as anyOf" in error.message  # it compiles, but a value may match both branches


def test_a_stream_asks_for_usage_through_stream_options():
    request = chat.parse({"model": MODEL_ID, "messages": [{"role": "user", "content": "x"}], "stream": True,
                          "stream_options": {"include_usage": True}})
    assert request.stream and request.include_usage
    validated("bedrock-runtime", "ConverseStream", request.params)


# -- chat: the answer ----------------------------------------------------------------------------------

IDS = {"completion_id": "chatcmpl-1", "created": 1700000000, "model": MODEL_ID}


def test_a_converse_answer_as_a_chat_completion():
    answer = {"output": {"message": {"role": "assistant", "content": [{"text": "Hello"}]}}, "stopReason": "max_tokens",
              "usage": {"inputTokens": 5, "outputTokens": 2, "totalTokens": 7}}
    out = chat.completion(answer, **IDS)
    assert out["object"] == "chat.completion" and out["model"] == MODEL_ID
    assert out["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Hello", "refusal": None},
                               "logprobs": None, "finish_reason": "length"}]
    assert out["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    called = {**answer, "stopReason": "tool_use", "output": {"message": {"role": "assistant", "content": [
        {"text": ""}, {"toolUse": {"toolUseId": "tooluse_a", "name": "get_weather", "input": {"city": "Paris"}}}]}}}
    message = chat.completion(called, **IDS)["choices"][0]
    assert message["finish_reason"] == "tool_calls" and message["message"]["content"] is None
    assert message["message"]["tool_calls"] == [{"id": "tooluse_a", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city": "Paris"}'}}]


def test_converse_stream_events_as_chunks():
    events = [("messageStart", {"role": "assistant"}),
              ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "He"}}),
              ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "y"}}),
              ("contentBlockStop", {"contentBlockIndex": 0}),
              ("contentBlockStart", {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t1", "name": "f"}}}),
              ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"a": '}}}),
              ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": "1}"}}}),
              ("contentBlockStop", {"contentBlockIndex": 1}),
              ("messageStop", {"stopReason": "tool_use"}),
              ("metadata", {"usage": {"inputTokens": 3, "outputTokens": 4, "totalTokens": 7}, "metrics": {}})]
    out = list(chat.chunks(iter(events), include_usage=True, **IDS))
    deltas = [c["choices"][0]["delta"] for c in out if c["choices"]]
    assert deltas[0]["role"] == "assistant"
    assert "".join(d.get("content") or "" for d in deltas) == "Hey"
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0] == {"index": 0, "id": "t1", "type": "function", "function": {"name": "f", "arguments": ""}}
    assert "".join(c["function"]["arguments"] for c in calls) == '{"a": 1}'
    assert out[-2]["choices"][0]["finish_reason"] == "tool_calls" and out[-2]["usage"] is None
    assert out[-1]["choices"] == [] and out[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 4,
                                                             "total_tokens": 7}
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "chatcmpl-1" for c in out)
    assert "usage" not in next(chat.chunks(iter(events), include_usage=False, **IDS))


def test_choices_answer_with_their_indexes_and_usage_added_up():
    def answer(text, tokens):
        return {"output": {"message": {"role": "assistant", "content": [{"text": text}]}}, "stopReason": "end_turn",
                "usage": {"inputTokens": 5, "outputTokens": tokens, "totalTokens": 5 + tokens}}
    out = chat.completion([answer("a", 2), answer("b", 3)], **IDS)
    assert [(c["index"], c["message"]["content"]) for c in out["choices"]] == [(0, "a"), (1, "b")]
    assert out["usage"] == {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}  # the prompt once

    def events(index, text, tokens):
        return [(index, "messageStart", {"role": "assistant"}),
                (index, "contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": text}}),
                (index, "messageStop", {"stopReason": "end_turn"}),
                (index, "metadata", {"usage": {"inputTokens": 5, "outputTokens": tokens}})]
    first, second = events(0, "a", 2), events(1, "b", 3)
    tagged = [first[0], second[0], second[1], first[1], first[2], first[3], second[2], second[3]]
    out = list(chat.choice_chunks(iter(tagged), 2, include_usage=True, **IDS))
    texts = {i: "".join(c["choices"][0]["delta"].get("content") or "" for c in out
                        if c["choices"] and c["choices"][0]["index"] == i) for i in (0, 1)}
    assert texts == {0: "a", 1: "b"}
    assert [c for c in out if not c["choices"]] == [out[-1]]  # one usage chunk, once both have ended
    assert out[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}


# -- completions -----------------------------------------------------------------------------------------

def test_a_completion_is_a_mistral_body_with_openais_defaults():
    request = completions.parse({"model": MODEL_ID, "prompt": ["Once upon"], "seed": 0, "stop": ["\n"],
                                 "user": "u-1", "echo": False, "best_of": 1, "logprobs": None})
    assert request.body == {"prompt": "Once upon", "max_tokens": 16, "temperature": 1.0, "top_p": 1.0,
                            "stop": ["\n"], "seed": 0}
    assert request.metadata == {"userId": "u-1"}
    fmt = detect_text_format(request.body, "meta-llama")
    assert fmt.name == "mistral" and fmt.parse(request.body).prompt == "Once upon"
    base = {"model": MODEL_ID, "prompt": "x"}
    refused(completions.parse, {**base, "prompt": ["a", "b"]}, "prompt")
    refused(completions.parse, {**base, "prompt": [1, 2, 3]}, "prompt")
    refused(completions.parse, {**base, "echo": True}, "echo")
    refused(completions.parse, {**base, "suffix": "end"}, "suffix")
    refused(completions.parse, {**base, "logprobs": 2}, "logprobs")
    refused(completions.parse, {**base, "messages": []}, "messages")


def test_mistral_answers_as_text_completions():
    out = completions.completion({"outputs": [{"text": "a time", "stop_reason": "length"}]}, 4, 2,
                                 completion_id="cmpl-1", created=1, model=MODEL_ID)
    assert out["choices"] == [{"text": "a time", "index": 0, "logprobs": None, "finish_reason": "length"}]
    assert out["usage"] == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
    events = [("chunk", {"bytes": json.dumps(c).encode()}) for c in (
        {"outputs": [{"text": "a", "stop_reason": None}]}, {"outputs": [{"text": " time", "stop_reason": None}]},
        {"outputs": [{"text": "", "stop_reason": "stop"}],
         "amazon-bedrock-invocationMetrics": {"inputTokenCount": 4, "outputTokenCount": 2}})]
    streamed = list(completions.chunks(completions.native_chunks(events), include_usage=True,
                                       completion_id="cmpl-1", created=1, model=MODEL_ID))
    assert [c["choices"][0]["text"] for c in streamed[:-1]] == ["a", " time", ""]
    assert streamed[-2]["choices"][0]["finish_reason"] == "stop"
    assert streamed[-1]["usage"] == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}


# -- embeddings ---------------------------------------------------------------------------------------------

def test_one_text_is_a_titan_body_and_a_list_goes_in_cohere_batches():
    one = embeddings.parse({"model": "amazon.titan-embed-text-v2:0", "input": "hello"})
    assert embeddings.calls(one) == [embeddings.Call((0,), {"inputText": "hello"})]
    long_text = "word " * 500
    texts = [f"text {i}" for i in range(100)] + [long_text]
    calls = embeddings.calls(embeddings.parse({"model": "m.x", "input": texts}))
    assert calls[0] == embeddings.Call((100,), {"inputText": long_text})
    assert [len(c.positions) for c in calls[1:]] == [96, 4]
    assert calls[1].body["texts"][:2] == ["text 0", "text 1"] and calls[1].body["input_type"] == "search_document"
    sized = embeddings.calls(embeddings.parse({"model": "m.x", "input": ["a", "b"], "dimensions": 384}))
    assert [c.body for c in sized] == [{"inputText": "a", "dimensions": 384}, {"inputText": "b", "dimensions": 384}]
    refused(embeddings.parse, {"model": "m.x", "input": [[1, 2]]}, "input[0]")
    refused(embeddings.parse, {"model": "m.x", "input": ["ok", " "]}, "input[1]")
    refused(embeddings.parse, {"model": "m.x", "input": []}, "input")
    refused(embeddings.parse, {"model": "m.x", "input": "x", "encoding_format": "int8"}, "encoding_format")


def test_base64_is_little_endian_float32():
    vector = [0.5, -1.25, 3.0]
    encoded = embeddings.encode(vector, "base64")
    assert list(struct.unpack("<3f", base64.b64decode(encoded))) == vector
    request = embeddings.parse({"model": "m.x", "input": ["a", "b"], "encoding_format": "base64"})
    out = embeddings.response(request, {1: [1.0], 0: [2.0]}, 6)
    assert [d["index"] for d in out["data"]] == [0, 1] and out["usage"] == {"prompt_tokens": 6, "total_tokens": 6}


# -- models, routes, errors, events ---------------------------------------------------------------------------

def test_models_list_text_and_embedding_models():
    summaries = [{"modelId": "a.chat", "providerName": "Meta", "outputModalities": ["TEXT"]},
                 {"modelId": "a.embed", "providerName": "Amazon", "outputModalities": ["EMBEDDING"]},
                 {"modelId": "a.rerank", "providerName": "Cohere", "outputModalities": ["TEXT"]},
                 {"modelId": "a.image", "providerName": "Stability", "outputModalities": ["IMAGE"]}]
    listed = models.listed(summaries, lambda summary: summary["modelId"] != "a.rerank")
    assert listed == [{"id": "a.chat", "object": "model", "created": 0, "owned_by": "Meta"},
                      {"id": "a.embed", "object": "model", "created": 0, "owned_by": "Amazon"}]


def test_routes_under_both_prefixes():
    assert route("POST", "/v1/chat/completions")[0].name == "ChatCompletions"
    assert route("POST", "/openai/v1/chat/completions")[0].name == "ChatCompletions"
    assert route("GET", "/v1/models")[0].name == "ListModels"
    found, label = route("GET", "/v1/models/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aprovisioned-model/abc")
    assert found is MODEL and label == "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc"
    with pytest.raises(RouteNotFound):
        route("POST", "/v1/responses")
    with pytest.raises(MethodNotAllowed):
        route("GET", "/v1/chat/completions")


@pytest.mark.parametrize(("error", "status", "kind", "code"), [
    (ValidationException(INVALID_MODEL_IDENTIFIER), 404, "invalid_request_error", "model_not_found"),
    (errors.ModelNotFound("gpt-9"), 404, "invalid_request_error", "model_not_found"),
    (ValidationException("bad"), 400, "invalid_request_error", "ValidationException"),
    (MissingAuthenticationTokenException("Missing Authentication Token"), 401, "authentication_error",
     "missing_api_key"),
    (UnrecognizedClientException("invalid"), 401, "authentication_error", "invalid_api_key"),
    (AccessDeniedException("no"), 403, "permission_denied", "AccessDeniedException"),
    (ThrottlingException("slow down"), 429, "rate_limit_error", "rate_limit_exceeded"),
    (ModelNotReadyException("loading"), 429, "rate_limit_error", "ModelNotReadyException")])
def test_errors_in_openais_shape(error, status, kind, code):
    body = error_body(error)["error"]
    assert error_status(error) == status and body["type"] == kind and body["code"] == code
    assert body["message"] == error.message and set(body) == {"message", "type", "param", "code"}


def test_an_invalid_request_names_its_param():
    body = error_body(InvalidRequest("logprobs=true is not supported", "logprobs", "unsupported_value"))["error"]
    assert (body["param"], body["code"], body["type"]) == ("logprobs", "unsupported_value", "invalid_request_error")


def test_events_end_with_done_or_with_an_error_and_close_their_source():
    class Source:
        closed = False

        def __iter__(self):
            yield ("x", {})

        def close(self):
            self.closed = True

    source = Source()
    out = list(sse(iter([{"a": 1}]), source))
    assert out == [b'data: {"a": 1}\n\n', b"data: [DONE]\n\n"] and source.closed

    def failing():
        yield {"a": 1}
        raise ThrottlingException("slow down")

    out = list(sse(failing(), None))
    assert json.loads(out[-1][len(b"data: "):])["error"]["code"] == "rate_limit_exceeded"
    assert b"[DONE]" not in b"".join(out)


def test_a_participants_name_is_accepted_and_the_door_keeps_to_its_own_paths():
    from outcrop.api.openai import chat
    from outcrop.api.openai.door import is_door_path

    system, turns = chat.conversation([{"role": "system", "content": "Be brief.", "name": "rules"},
                                       {"role": "user", "content": "Hi", "name": "bob"},
                                       {"role": "assistant", "content": "Hello", "name": "agent"}])
    assert system == [{"text": "Be brief."}] and [t["role"] for t in turns] == ["user", "assistant"]
    assert is_door_path("POST", "/v1/chat/completions") and is_door_path("GET", "/openai/v1/models/x")
    assert is_door_path("GET", "/v1/nothing-here")  # answered in OpenAI's shape
    assert not is_door_path("GET", "/v1/data_retention/storage/meta")  # botocore models it: Bedrock's
