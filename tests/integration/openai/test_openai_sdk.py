"""The OpenAI-compatible door (/v1) driven by the `openai` SDK and LangChain's ChatOpenAI, on one server.

The tiny random model writes nothing meaningful, so the tool-call and JSON checks pass only because the
runtime's grammar constrains what it writes; greedy decoding makes a stream and a whole answer comparable.
Every call is the runtime's own: the usage records checked here are the ones Converse and InvokeModel write.
"""

from __future__ import annotations

import json
import time

import httpx
import jsonschema
import openai
import pytest

from tests.backends import query
from tests.conftest import register_model, start_server, stop_server
from tests.helpers import make_endless_llama, make_tiny_llama

EMBEDDING_MODEL = "sentence-transformers.all-minilm-l6-v2-v1:0"
QUESTION = [{"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "hello world, this is a test"}]
WEATHER_SCHEMA = {"type": "object", "properties": {
    "city": {"type": "string", "maxLength": 30}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"], "additionalProperties": False}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
                                            "parameters": WEATHER_SCHEMA}}


class Door:
    def __init__(self, server, model: str, key: str, reader_key: str) -> None:
        self.server, self.model, self.key, self.reader_key = server, model, key, reader_key

    def client(self, key: str | None = None, prefix: str = "/v1", **options) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.server.endpoint + prefix, api_key=key or self.key, max_retries=0,
                             timeout=120, **options)

    def usage(self, request_id: str) -> tuple:
        rows = query(self.server.data_dir, "SELECT operation, input_tokens, output_tokens, request_metadata "
                     "FROM usage_records WHERE request_id = ?", request_id)
        assert len(rows) == 1, rows
        return rows[0]


def _iam(server, action: str, body: dict) -> dict:
    status, _, answer = server.raw("POST", f"/_outcrop/iam/{action}", json.dumps(body).encode())
    assert status == 200, answer
    return answer


@pytest.fixture(scope="module")
def door(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("openai-door"))
    try:
        # A context long enough for the tools' prompt: the tiny tokenizer spends a token on most characters.
        model = register_model(server, "tiny-openai", make_tiny_llama(tmp_path_factory.mktemp("tiny"), context=4096))
        key = _iam(server, "CreateAccessKey", {"Bearer": True})["ApiKey"]
        _iam(server, "CreateUser", {"UserName": "openai-reader"})  # no policy: denied everything
        reader_key = _iam(server, "CreateAccessKey", {"UserName": "openai-reader", "Bearer": True})["ApiKey"]
        yield Door(server, model, key, reader_key)
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def client(door):
    return door.client()


@pytest.fixture(scope="module")
def answer(client, door):
    return client.chat.completions.create(model=door.model, messages=QUESTION, temperature=0, max_tokens=8,
                                          user="u-7", metadata={"sessionId": "s-1"})


def test_models_are_listed_and_retrieved(client, door):
    listed = {m.id: m for m in client.models.list()}
    assert door.model in listed and EMBEDDING_MODEL in listed
    assert all(m.object == "model" for m in listed.values())
    assert not any("rerank" in model_id for model_id in listed)  # rerankers answer Rerank only
    assert client.models.retrieve(door.model).id == door.model
    # Bedrock's path for the same door
    assert door.model in {m.id for m in door.client(prefix="/openai/v1").models.list()}


def test_chat_answers_with_usage_and_a_usage_record(answer, door):
    choice = answer.choices[0]
    assert answer.object == "chat.completion" and answer.model == door.model
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    usage = answer.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens <= 8
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    if choice.finish_reason == "length":
        assert usage.completion_tokens == 8
    assert answer.id == "chatcmpl-" + answer._request_id.replace("-", "")
    operation, tokens_in, tokens_out, metadata = door.usage(answer._request_id)
    assert (operation, tokens_in, tokens_out) == ("Converse", usage.prompt_tokens, usage.completion_tokens)
    assert (json.loads(metadata) if isinstance(metadata, str) else metadata) == {"sessionId": "s-1", "userId": "u-7"}


def test_a_stream_says_the_same_and_ends_with_its_usage(client, door, answer):
    stream = client.chat.completions.create(model=door.model, messages=QUESTION, temperature=0, max_tokens=8,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer.choices[0].message.content  # greedy: the same words
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [answer.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage == answer.usage
    assert all(c.usage is None for c in chunks[:-1])
    request_id = stream.response.headers["x-request-id"]
    assert door.usage(request_id)[:3] == ("ConverseStream", answer.usage.prompt_tokens,
                                          answer.usage.completion_tokens)


def test_a_client_that_hangs_up_stops_its_generation(door, tmp_path_factory):
    endless = register_model(door.server, "endless-openai", make_endless_llama(tmp_path_factory.mktemp("endless")))
    stream = door.client().chat.completions.create(model=endless, messages=QUESTION, max_tokens=4000, temperature=0,
                                                   stream=True)
    for seen, _ in enumerate(stream):
        if seen == 3:
            break
    stream.close()  # the client goes away mid-answer
    request_id = stream.response.headers["x-request-id"]
    deadline, rows = time.monotonic() + 20, []
    while not rows and time.monotonic() < deadline:
        time.sleep(0.2)
        rows = query(door.server.data_dir, "SELECT status, output_tokens FROM usage_records WHERE request_id = ?",
                     request_id)
    assert rows, "the abandoned stream never ended"
    status, tokens = rows[0]
    assert status == "Cancelled" and tokens < 4000


def test_a_forced_tool_call_has_arguments_valid_for_its_schema(client, door):
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    response = client.chat.completions.create(
        model=door.model, messages=question, tools=[WEATHER], temperature=0, max_tokens=200,
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls" and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER_SCHEMA)
    # The call and its result go back as the next turns.
    follow = client.chat.completions.create(
        model=door.model, tools=[WEATHER], temperature=0, max_tokens=5,
        messages=[*question, choice.message.model_dump(exclude_none=True),
                  {"role": "tool", "tool_call_id": call.id, "content": "21 degrees"}])
    assert follow.usage.prompt_tokens > response.usage.prompt_tokens
    # Streamed, the arguments arrive in pieces that add up to valid JSON.
    chunks = list(client.chat.completions.create(model=door.model, messages=question, tools=[WEATHER],
                                                 tool_choice="required", temperature=1, seed=3, max_tokens=200,
                                                 stream=True))
    calls = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert calls[0].id and calls[0].function.name == "get_weather" and len(calls) > 2
    jsonschema.validate(json.loads("".join(c.function.arguments or "" for c in calls)), WEATHER_SCHEMA)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_a_json_schema_answer_is_valid_json(client, door):
    schema = {"type": "object", "properties": {"answer": {"type": "string", "maxLength": 20},
                                               "score": {"type": "integer", "minimum": 0, "maximum": 9}},
              "required": ["answer", "score"], "additionalProperties": False}
    response = client.chat.completions.create(
        model=door.model, messages=QUESTION, temperature=0, max_tokens=200,
        response_format={"type": "json_schema", "json_schema": {"name": "rating", "schema": schema, "strict": True}})
    assert response.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(response.choices[0].message.content), schema)


def test_n_choices_share_the_batch_and_stream_with_their_indexes(client, door, answer):
    """n sequences of one prompt, each with its own seed (derived from the request's): the prompt is counted once
    and the completions added up, as OpenAI counts them; a stream tags each chunk with its choice. Temperatures
    above Bedrock's 1 go up to OpenAI's 2."""
    whole = client.chat.completions.create(model=door.model, messages=QUESTION, max_tokens=6, temperature=1.6,
                                           seed=11, n=2)
    assert [c.index for c in whole.choices] == [0, 1]
    assert whole.choices[0].message.content != whole.choices[1].message.content
    assert whole.usage.prompt_tokens == answer.usage.prompt_tokens and whole.usage.completion_tokens <= 12
    # Greedy, both choices are the one greedy answer, each streamed under its own index.
    chunks = list(client.chat.completions.create(model=door.model, messages=QUESTION, max_tokens=8, temperature=0,
                                                 n=2, stream=True, stream_options={"include_usage": True}))
    for index in (0, 1):
        assert "".join(c.choices[0].delta.content or "" for c in chunks
                       if c.choices and c.choices[0].index == index) == answer.choices[0].message.content
    assert chunks[-1].usage.prompt_tokens == answer.usage.prompt_tokens
    assert chunks[-1].usage.completion_tokens == 2 * answer.usage.completion_tokens
    texts = client.completions.create(model=door.model, prompt="the quick brown", max_tokens=4, n=2, seed=5)
    assert [c.index for c in texts.choices] == [0, 1] and texts.usage.completion_tokens <= 8


def test_a_strict_schema_refuses_what_the_grammar_cannot_enforce(client, door):
    unique = {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"},
                                                        "uniqueItems": True}}, "required": ["tags"]}
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=door.model, messages=QUESTION, max_tokens=50, response_format={
            "type": "json_schema", "json_schema": {"name": "tags", "schema": unique, "strict": True}})
    assert refused.value.param == "response_format.json_schema.schema" and "uniqueItems" in refused.value.message


def test_embeddings_as_floats_and_base64(client, door):
    text = "The cat sat on the mat."
    floats = client.embeddings.create(model=EMBEDDING_MODEL, input=text, encoding_format="float")
    vector = floats.data[0].embedding
    assert len(vector) == 384 and floats.usage.prompt_tokens > 3
    assert floats.usage.total_tokens == floats.usage.prompt_tokens
    # The SDK asks for base64 by default and decodes it: the same float32 values.
    assert client.embeddings.create(model=EMBEDDING_MODEL, input=text).data[0].embedding == vector
    batch = client.embeddings.create(model=EMBEDDING_MODEL, input=[text, "Quarterly revenue grew."],
                                     encoding_format="float")
    assert [d.index for d in batch.data] == [0, 1]
    assert max(abs(a - b) for a, b in zip(batch.data[0].embedding, vector, strict=True)) < 1e-5
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model=door.model, input=text)
    assert refused.value.param == "model"


def test_completions_continue_a_raw_prompt(client, door):
    whole = client.completions.create(model=door.model, prompt="the quick brown", max_tokens=5, temperature=0)
    choice = whole.choices[0]
    assert whole.object == "text_completion" and choice.finish_reason in ("stop", "length")
    assert whole.usage.completion_tokens <= 5 and whole.usage.prompt_tokens > 0
    assert door.usage(whole._request_id)[:3] == ("InvokeModel", whole.usage.prompt_tokens,
                                                 whole.usage.completion_tokens)
    chunks = list(client.completions.create(model=door.model, prompt="the quick brown", max_tokens=5, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == choice.text
    assert chunks[-1].usage == whole.usage


def test_errors_are_the_sdks_exceptions(client, door):
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4o", messages=QUESTION)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=door.model, messages=QUESTION, logprobs=True)
    assert refused.value.param == "logprobs" and "log probabilities" in refused.value.message
    with pytest.raises(openai.BadRequestError) as unknown:
        client.chat.completions.create(model=door.model, messages=QUESTION, extra_body={"frobnicate": 1})
    assert unknown.value.param == "frobnicate" and unknown.value.code == "unknown_parameter"
    with pytest.raises(openai.PermissionDeniedError) as denied:
        door.client(door.reader_key).chat.completions.create(model=door.model, messages=QUESTION)
    assert "bedrock:InvokeModel" in denied.value.message and denied.value.type == "permission_denied"
    with pytest.raises(openai.AuthenticationError):
        door.client("ABSK-not-a-key").models.list()
    with pytest.raises(openai.AuthenticationError):
        client.models.list(extra_headers={"Authorization": openai.Omit()})  # no key at all
    # A path the door does not answer, in OpenAI's error shape.
    response = httpx.post(door.server.endpoint + "/v1/responses", json={}, timeout=30)
    assert response.status_code == 404 and response.json()["error"]["type"] == "invalid_request_error"


def test_langchain_chat_openai_invoke_and_stream(door, answer):
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=door.server.endpoint + "/v1", api_key=door.key, model=door.model, temperature=0,
                     max_tokens=8, max_retries=0, stream_usage=True)
    said = llm.invoke(QUESTION)
    assert said.content == answer.choices[0].message.content
    assert said.usage_metadata["input_tokens"] == answer.usage.prompt_tokens
    chunks = list(llm.stream(QUESTION))
    assert "".join(c.content for c in chunks) == said.content
    usage = next(c.usage_metadata for c in chunks if c.usage_metadata)
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] == answer.usage.total_tokens
