"""Tool calling and structured output through clients others wrote, against SmolLM2 on a real `outcrop serve`:
LangChain (langchain-aws ChatBedrockConverse: bind_tools, a tool-calling agent loop, streamed tool calls,
with_structured_output in both of its Converse modes) and the AWS CLI (a weather tool round trip).

SmolLM2's chat template has no tools, so Outcrop prompts it with its fallback tool prompt and constrains the
decoding with a grammar compiled from each tool's JSON schema: every call that arrives must parse and validate.
The tools are written as a LangChain user writes them: a `@tool` function bound with strict=True (LangChain
then closes its schema with additionalProperties false, and sends toolSpec.strict), and pydantic models with
enums and nested arrays, whose schemas LangChain leaves open (the grammar closes them: no invented
properties, and whatever it lets through still validates against the open schema). Greedy throughout.

A call ends the model's turn (one call per turn), so a forced answer stops by itself after its call, well
within each request's maxTokens.
"""

from __future__ import annotations

import functools
import json
import operator
from typing import Literal

import jsonschema
import pytest
from langchain_aws import ChatBedrockConverse
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, Field

#: An alias of SmolLM2 under which LangChain offers tool_choice any and tool, and streams.
CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
#: SmolLM2's own id: LangChain knows no "huggingface" provider, so it offers no tool_choice and does not stream.
SMOLLM2 = "huggingface.smollm2-135m-instruct-v1:0"


@tool
def get_weather(city: str, unit: Literal["celsius", "fahrenheit"]) -> str:
    """Get the current weather in a city."""
    degrees = 21 if unit == "celsius" else 70
    return json.dumps({"city": city, "temperature": degrees, "unit": unit, "sky": "sunny"})


class Item(BaseModel):
    """One line of an order."""

    sku: str = Field(pattern=r"^[A-Z]{3}-[0-9]{2}$", description="stock code, like ABC-12")
    quantity: int = Field(ge=1, le=9)
    sizes: list[Literal["S", "M", "L"]] = Field(min_length=1, max_length=2)


class PlaceOrder(BaseModel):
    """Order items for a customer."""

    customer: str = Field(max_length=20)
    tier: Literal["basic", "gold"]
    items: list[Item] = Field(min_length=1, max_length=2)


class Forecast(BaseModel):
    """A weather forecast for a city."""

    city: str = Field(max_length=20)
    sky: Literal["sunny", "cloudy", "rainy"]
    highs: list[int] = Field(min_length=1, max_length=3, description="daily highs in celsius")


WEATHER_QUESTION = "What is the weather in Paris?"
ORDER_QUESTION = "Order two ABC-12 shirts in size M for Ann, a gold customer."
FORECAST_QUESTION = "Give a short forecast for Rome."

#: maxTokens well above what each forced answer takes (the call ends the answer): get_weather's call is about
#: 37 tokens, PlaceOrder's about 104 with two items, the Forecast JSON answer about 29.
WEATHER_MAX_TOKENS = 120
ORDER_MAX_TOKENS = 240
FORECAST_TOKENS = 120
#: Enough of a plain answer to know there is one.
ANSWER_MAX_TOKENS = 16
MAX_TURNS = 3

#: The arguments' schema of each tool as LangChain sends it (toolSpec.inputSchema.json).
SCHEMAS = {"get_weather": convert_to_openai_tool(get_weather, strict=True)["function"]["parameters"],
           "PlaceOrder": convert_to_openai_tool(PlaceOrder)["function"]["parameters"]}


def check_calls(message: AIMessage, name: str) -> list[dict]:
    """The message's tool calls, each known to parse (LangChain found no invalid call), to name `name`
    and to validate against its tool's JSON schema (and its pydantic model, if it has one)."""
    assert not message.invalid_tool_calls, message.invalid_tool_calls
    for call in message.tool_calls:
        assert call["name"] == name and call["id"].startswith("tooluse_"), call
        jsonschema.validate(call["args"], SCHEMAS[name])
        if name == "PlaceOrder":
            PlaceOrder.model_validate(call["args"])
    return message.tool_calls


def joined(chunks):
    """A stream's chunks added up, as LangChain users do: text concatenated, tool call chunks merged by index."""
    assert chunks, "the stream yielded nothing"
    return functools.reduce(operator.add, chunks)


def chat_model(aws_kwargs, model: str = CLAUDE, **settings) -> ChatBedrockConverse:
    # No retries: a slow answer must fail, not run twice. The timeout covers the first load of SmolLM2.
    return ChatBedrockConverse(model=model, temperature=0, timeout=300, max_retries=0, **settings, **aws_kwargs)


@pytest.fixture(scope="module")
def llm(aws_kwargs):
    return chat_model(aws_kwargs)


@pytest.fixture(scope="module")
def sent(llm) -> list[dict]:
    """Every Converse and ConverseStream request `llm` sends, as botocore's parameters."""
    requests: list[dict] = []
    for operation in ("Converse", "ConverseStream"):
        llm.client.meta.events.register(f"before-parameter-build.bedrock-runtime.{operation}",
                                        lambda params, **_: requests.append(params))
    return requests


# -- bind_tools with toolChoice any: invoke, stream, and an agent loop -------------------------------

@pytest.fixture(scope="module")
def weather_tools(llm):
    return llm.bind_tools([get_weather], tool_choice="any", strict=True, max_tokens=WEATHER_MAX_TOKENS)


@pytest.fixture(scope="module")
def weather_call(weather_tools, sent):
    """The first turn of the agent loop: SmolLM2 left to choose (auto) answers this without a call."""
    answer = weather_tools.invoke(WEATHER_QUESTION)
    config = sent[-1]["toolConfig"]
    assert config["toolChoice"] == {"any": {}} and config["tools"][0]["toolSpec"]["strict"] is True
    assert config["tools"][0]["toolSpec"]["inputSchema"]["json"] == SCHEMAS["get_weather"]
    return answer


def test_tool_choice_any_calls_the_tool_with_valid_arguments(weather_call):
    calls = check_calls(weather_call, "get_weather")
    assert calls and all(c["args"]["city"] and c["args"]["unit"] in ("celsius", "fahrenheit") for c in calls)
    assert weather_call.response_metadata["stopReason"] == "tool_use"  # the call ended the answer


def test_streamed_tool_call_chunks_add_up_to_the_same_calls(llm, weather_tools, weather_call):
    assert not llm.disable_streaming  # LangChain streams Claude ids: this is ConverseStream
    chunks = list(weather_tools.stream(WEATHER_QUESTION))
    pieces = [c for chunk in chunks for c in chunk.tool_call_chunks if c.get("args")]
    assert len(pieces) > 1, "the arguments came in one piece: not streamed"
    streamed = joined(chunks)
    check_calls(streamed, "get_weather")
    assert [(c["name"], c["args"]) for c in streamed.tool_calls] \
        == [(c["name"], c["args"]) for c in weather_call.tool_calls]
    assert streamed.response_metadata["stopReason"] == weather_call.response_metadata["stopReason"]


def test_agent_loop_runs_the_tools_until_the_model_answers(llm, weather_call, sent):
    """The loop of a LangChain tool-calling agent (langchain's create_agent is not installed here, so by
    hand): run every call, send the results back as ToolMessages, ask again (auto), until the model answers
    without a call or MAX_TURNS have passed."""
    tools = {"get_weather": get_weather}
    messages: list = [HumanMessage(WEATHER_QUESTION), weather_call]
    received: list[dict] = []
    answer = weather_call
    for _ in range(MAX_TURNS):
        calls = check_calls(answer, "get_weather")
        if not calls:
            break
        received.extend(calls)
        for call in calls:
            result = tools[call["name"]].invoke(call)  # a ToolCall in, a ToolMessage out
            assert isinstance(result, ToolMessage) and result.tool_call_id == call["id"]
            messages.append(result)
        answer = llm.bind_tools(list(tools.values()), strict=True, max_tokens=ANSWER_MAX_TOKENS).invoke(messages)
        messages.append(answer)
        # The server took the results: the request carried one for each call, under the call's id.
        ids = [block["toolResult"]["toolUseId"] for m in sent[-1]["messages"] for block in m["content"]
               if "toolResult" in block]
        assert ids == [c["id"] for c in received], sent[-1]["messages"]
    assert received
    if not answer.tool_calls:  # it ended with an answer (and not by running out of turns)
        assert answer.text.strip() and answer.response_metadata["stopReason"] in ("end_turn", "max_tokens"), answer


# -- with_structured_output: by a forced tool (LangChain's default) and by outputConfig (json_schema) ---

def test_with_structured_output_forces_the_schema_s_tool(aws_kwargs):
    """LangChain's default method binds the schema as a tool and names it in toolChoice, for a model it
    knows can be forced: under SmolLM2's own id, a user says so (supports_tool_choice_values)."""
    llm = chat_model(aws_kwargs, SMOLLM2, max_tokens=ORDER_MAX_TOKENS, supports_tool_choice_values=("auto", "tool"))
    sent: list[dict] = []
    llm.client.meta.events.register("before-parameter-build.bedrock-runtime.Converse",
                                    lambda params, **_: sent.append(params))
    result = llm.with_structured_output(PlaceOrder, include_raw=True).invoke(ORDER_QUESTION)
    assert sent[-1]["toolConfig"]["toolChoice"] == {"tool": {"name": "PlaceOrder"}}
    assert result["parsing_error"] is None, result
    order = result["parsed"]
    assert isinstance(order, PlaceOrder), result
    assert order.tier in ("basic", "gold") and all(set(item.sizes) <= {"S", "M", "L"} for item in order.items)
    assert check_calls(result["raw"], "PlaceOrder")


def test_with_structured_output_json_schema_sends_output_config(llm, sent):
    # No maxTokens (include_raw's chain passes no invoke arguments on): the JSON's grammar ends the answer.
    result = llm.with_structured_output(Forecast, method="json_schema", include_raw=True).invoke(FORECAST_QUESTION)
    request = sent[-1]
    assert "toolConfig" not in request
    text_format = request["outputConfig"]["textFormat"]
    assert text_format["type"] == "json_schema" and text_format["structure"]["jsonSchema"]["name"] == "Forecast"
    assert result["parsing_error"] is None, result
    assert isinstance(result["parsed"], Forecast)
    raw = result["raw"]
    assert raw.response_metadata["stopReason"] == "end_turn" and not raw.tool_calls
    assert raw.usage_metadata["output_tokens"] < FORECAST_TOKENS, raw.usage_metadata
    jsonschema.validate(json.loads(raw.text), json.loads(text_format["structure"]["jsonSchema"]["schema"]))


def test_langchain_refuses_tool_choice_for_an_unknown_provider(aws_kwargs):
    """What a user meets first under SmolLM2's own id: LangChain itself refuses any/tool, before sending."""
    llm = ChatBedrockConverse(model=SMOLLM2, **aws_kwargs)
    with pytest.raises(ValueError, match="does not currently support tool_choice"):
        llm.bind_tools([get_weather], tool_choice="any")
    assert llm.disable_streaming  # and stream() would call Converse, not ConverseStream


# -- the AWS CLI: a weather tool round trip ---------------------------------------------------------

WEATHER_TOOL = {"toolSpec": {"name": "get_weather", "description": "Get the current weather in a city.",
                             "inputSchema": {"json": SCHEMAS["get_weather"]}}}


def converse(server, tmp_path, messages: list[dict], choice: dict, max_tokens: int) -> dict:
    (tmp_path / "messages.json").write_text(json.dumps(messages))
    (tmp_path / "tools.json").write_text(json.dumps({"tools": [WEATHER_TOOL], "toolChoice": choice}))
    result = server.aws("bedrock-runtime", "converse", "--model-id", SMOLLM2,
                        "--messages", f"file://{tmp_path / 'messages.json'}",
                        "--tool-config", f"file://{tmp_path / 'tools.json'}",
                        "--inference-config", f"maxTokens={max_tokens},temperature=0")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_aws_cli_weather_round_trip(server, tmp_path):
    schema = SCHEMAS["get_weather"]
    messages = [{"role": "user", "content": [{"text": WEATHER_QUESTION}]}]
    first = converse(server, tmp_path, messages, {"any": {}}, WEATHER_MAX_TOKENS)
    message = first["output"]["message"]
    uses = [block["toolUse"] for block in message["content"] if "toolUse" in block]
    assert uses and first["stopReason"] == "tool_use", first
    for use in uses:
        assert use["name"] == "get_weather" and use["toolUseId"].startswith("tooluse_")
        jsonschema.validate(use["input"], schema)

    results = [{"toolResult": {"toolUseId": use["toolUseId"],
                               "content": [{"json": json.loads(get_weather.invoke(use["input"]))}]}} for use in uses]
    second = converse(server, tmp_path, [*messages, message, {"role": "user", "content": results}], {"auto": {}},
                      ANSWER_MAX_TOKENS)
    answer = second["output"]["message"]
    assert answer["role"] == "assistant" and second["usage"]["inputTokens"] > first["usage"]["inputTokens"]
    for block in answer["content"]:
        if "toolUse" in block:
            jsonschema.validate(block["toolUse"]["input"], schema)
    if second["stopReason"] in ("end_turn", "max_tokens"):
        assert "".join(block.get("text", "") for block in answer["content"]).strip(), second
