"""Every bedrock-runtime answer, as boto3 parses it, holds every member botocore's output shape marks
required, recursively and inside event streams, so that a member Outcrop forgets fails here rather than
in a client (LangChain, the AWS SDKs). Plus what the shapes do not say: InvokeModel's token-count and
latency headers, the last stream chunk's invocation metrics, and the performance and tier members.
"""

from __future__ import annotations

import json
from typing import Any

import botocore.session
import pytest

from outcrop.api.bedrock.operations import HANDLERS, load_handlers

MODEL = botocore.session.get_session().get_service_model("bedrock-runtime")
SMOLLM2 = "huggingface.smollm2-135m-instruct-v1:0"
MINILM = "sentence-transformers.all-minilm-l6-v2-v1:0"
QUESTION = [{"role": "user", "content": [{"text": "hello world, this is a test"}]}]
METRICS = {"inputTokenCount", "outputTokenCount", "invocationLatency", "firstByteLatency"}
#: Every native text format each text model answers, as one small request body.
BODIES = {
    "meta-llama": {"prompt": "hello world", "max_gen_len": 5, "temperature": 0},
    "mistral": {"prompt": "hello world", "max_tokens": 5, "temperature": 0, "top_k": 5},
    "titan-text": {"inputText": "hello world", "textGenerationConfig": {"maxTokenCount": 5, "temperature": 0}},
    "anthropic-messages": {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 5, "temperature": 0,
                           "messages": [{"role": "user", "content": "hello"}]},
}
#: The operations this file calls: a bedrock-runtime handler added later must be added here too.
COVERED = {"Converse", "ConverseStream", "InvokeModel", "InvokeModelWithResponseStream", "CountTokens",
           "ApplyGuardrail"}


def missing_members(shape, value: Any, path: str = "") -> list[str]:
    """Paths of required members absent from `value` (boto3's parse of `shape`), at any depth."""
    if value is None or shape.metadata.get("document"):
        return []
    found = []
    if shape.type_name == "structure":
        if not isinstance(value, dict):
            return [f"{path or '<root>'} (not a structure: {type(value).__name__})"]
        for name in shape.required_members:
            if value.get(name) is None:
                found.append(f"{path}.{name}" if path else name)
        for name, member in shape.members.items():
            if name in value and not member.serialization.get("eventstream"):
                found += missing_members(member, value[name], f"{path}.{name}" if path else name)
    elif shape.type_name == "list":
        for index, item in enumerate(value):
            found += missing_members(shape.member, item, f"{path}[{index}]")
    elif shape.type_name == "map":
        for key, item in value.items():
            found += missing_members(shape.value, item, f"{path}.{key}")
    return found


def check_response(operation: str, response: dict[str, Any]) -> None:
    shape = MODEL.operation_model(operation).output_shape
    body = {k: v for k, v in response.items() if k != "ResponseMetadata"}
    assert missing_members(shape, body) == [], f"{operation} lacks required members"


def check_events(operation: str, response: dict[str, Any]) -> list[dict[str, Any]]:
    """Read the event stream, checking each event against its member of the stream union."""
    shape = MODEL.operation_model(operation).output_shape
    member = next(name for name, m in shape.members.items() if m.serialization.get("eventstream"))
    union = shape.members[member]
    events = list(response[member])
    assert events, f"{operation} streamed nothing"
    for index, event in enumerate(events):
        assert len(event) == 1 and next(iter(event)) in union.members, event
        name, payload = next(iter(event.items()))
        gaps = missing_members(union.members[name], payload, f"{member}[{index}].{name}")
        assert gaps == [], f"{operation} event {name} lacks required members"
    return events


def headers(response: dict[str, Any]) -> dict[str, str]:
    return response["ResponseMetadata"]["HTTPHeaders"]


def test_every_runtime_operation_outcrop_implements_is_covered():
    load_handlers()
    implemented = {operation for service, operation in HANDLERS if service == "bedrock-runtime"}
    assert implemented == COVERED


def test_the_walker_notices_a_missing_member():
    shape = MODEL.operation_model("Converse").output_shape
    answer = {"output": {"message": {"role": "assistant", "content": [{"text": "hi"}]}}, "stopReason": "end_turn",
              "usage": {"inputTokens": 1, "outputTokens": 1}, "metrics": {"latencyMs": 1}}
    assert missing_members(shape, answer) == ["usage.totalTokens"]
    assert missing_members(shape, {**answer, "usage": {**answer["usage"], "totalTokens": 2}}) == []
    del answer["output"]["message"]["role"]
    assert sorted(missing_members(shape, answer)) == ["output.message.role", "usage.totalTokens"]


# -- Converse ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["tiny", SMOLLM2])
def test_converse_shape_and_echoes(runtime, tiny_model, model):
    model = tiny_model if model == "tiny" else model
    response = runtime.converse(
        modelId=model, messages=QUESTION, inferenceConfig={"maxTokens": 6, "temperature": 0},
        performanceConfig={"latency": "standard"}, serviceTier={"type": "default"},
        additionalModelResponseFieldPaths=["/stop_reason", "/stop_sequence", "/generation_token_count",
                                           "/no_such_field"])
    check_response("Converse", response)
    assert response["performanceConfig"] == {"latency": "standard"}
    assert response["serviceTier"] == {"type": "default"}
    fields = response["additionalModelResponseFields"]
    # Both models answer InvokeModel in Meta Llama's format: its stop reason, its token count; the
    # matched stop sequence comes from the engine; a field the response lacks is ignored, as on Bedrock.
    assert fields == {"stop_reason": "stop" if response["stopReason"] == "end_turn" else "length",
                      "stop_sequence": None, "generation_token_count": response["usage"]["outputTokens"]}


def test_converse_without_the_optional_members_sends_none_of_them(runtime, tiny_model):
    response = runtime.converse(modelId=tiny_model, messages=QUESTION, inferenceConfig={"maxTokens": 3})
    check_response("Converse", response)
    assert not {"performanceConfig", "serviceTier", "additionalModelResponseFields"} & set(response)


def test_additional_fields_report_the_stop_sequence_that_matched(runtime, tiny_model):
    full = runtime.converse(modelId=tiny_model, messages=QUESTION, inferenceConfig={"maxTokens": 40, "temperature": 0})
    text = full["output"]["message"]["content"][0]["text"]
    stop = text[len(text) // 2: len(text) // 2 + 2]
    assert stop.strip(), f"need a visible stop sequence from {text!r}"
    cut = runtime.converse(modelId=tiny_model, messages=QUESTION,
                           inferenceConfig={"maxTokens": 40, "temperature": 0, "stopSequences": [stop]},
                           additionalModelResponseFieldPaths=["/stop_sequence"])
    assert cut["stopReason"] == "stop_sequence"
    assert cut["additionalModelResponseFields"] == {"stop_sequence": stop}


def test_malformed_response_field_path_is_refused_by_name(runtime, tiny_model):
    with pytest.raises(runtime.exceptions.ValidationException, match="'stop_sequence' is not a valid JSON Pointer"):
        runtime.converse(modelId=tiny_model, messages=QUESTION, inferenceConfig={"maxTokens": 3},
                         additionalModelResponseFieldPaths=["stop_sequence"])


def test_converse_stream_shape_metrics_and_echoes(runtime, tiny_model):
    response = runtime.converse_stream(
        modelId=tiny_model, messages=QUESTION, inferenceConfig={"maxTokens": 6, "temperature": 0},
        performanceConfig={"latency": "standard"}, serviceTier={"type": "default"},
        additionalModelResponseFieldPaths=["/stop_reason"])
    events = check_events("ConverseStream", response)
    names = [next(iter(e)) for e in events]
    assert names[0] == "messageStart" and names[-2:] == ["messageStop", "metadata"]
    stop, metadata = events[-2]["messageStop"], events[-1]["metadata"]
    assert stop["additionalModelResponseFields"]["stop_reason"] in ("stop", "length")
    usage = metadata["usage"]
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"] > 0
    assert metadata["metrics"]["latencyMs"] >= 0
    assert metadata["performanceConfig"] == {"latency": "standard"}
    assert metadata["serviceTier"] == {"type": "default"}


@pytest.mark.parametrize("operation", ["converse", "converse_stream"])
@pytest.mark.parametrize(("extra", "needle"), [
    ({"performanceConfig": {"latency": "optimized"}}, "Latency-optimized inference"),
    ({"serviceTier": {"type": "priority"}}, "service tier 'priority'"),
    ({"serviceTier": {"type": "flex"}}, "service tier 'flex'"),
])
def test_tiers_this_server_lacks_are_refused(runtime, tiny_model, operation, extra, needle):
    with pytest.raises(runtime.exceptions.ValidationException, match=needle):
        getattr(runtime, operation)(modelId=tiny_model, messages=QUESTION, inferenceConfig={"maxTokens": 3}, **extra)


# -- InvokeModel -------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", sorted(BODIES))
def test_invoke_model_shape_and_usage_headers(runtime, tiny_model, fmt):
    response = runtime.invoke_model(modelId=tiny_model, body=json.dumps(BODIES[fmt]))
    check_response("InvokeModel", response)
    body = json.loads(response["body"].read())
    sent = headers(response)
    inputs, outputs = int(sent["x-amzn-bedrock-input-token-count"]), int(sent["x-amzn-bedrock-output-token-count"])
    assert int(sent["x-amzn-bedrock-invocation-latency"]) >= 0
    assert inputs > 0 and 0 <= outputs <= 5
    native_counts = {  # each format's own count of the same tokens
        "meta-llama": (body.get("prompt_token_count"), body.get("generation_token_count")),
        "titan-text": (body.get("inputTextTokenCount"), body.get("results", [{}])[0].get("tokenCount")),
        "anthropic-messages": (body.get("usage", {}).get("input_tokens"), body.get("usage", {}).get("output_tokens")),
    }.get(fmt)
    if native_counts:
        assert native_counts == (inputs, outputs)
    assert "x-amzn-bedrock-performanceconfig-latency" not in sent and "x-amzn-bedrock-service-tier" not in sent


def test_invoke_model_on_the_builtin_models(runtime):
    chat = runtime.invoke_model(modelId=SMOLLM2, body=json.dumps(BODIES["meta-llama"]))
    check_response("InvokeModel", chat)
    body = json.loads(chat["body"].read())
    assert int(headers(chat)["x-amzn-bedrock-input-token-count"]) == body["prompt_token_count"]
    assert int(headers(chat)["x-amzn-bedrock-output-token-count"]) == body["generation_token_count"]
    embedded = runtime.invoke_model(modelId=MINILM, body=json.dumps({"inputText": "hello world"}))
    check_response("InvokeModel", embedded)
    body = json.loads(embedded["body"].read())
    assert int(headers(embedded)["x-amzn-bedrock-input-token-count"]) == body["inputTextTokenCount"]
    assert headers(embedded)["x-amzn-bedrock-output-token-count"] == "0"
    assert int(headers(embedded)["x-amzn-bedrock-invocation-latency"]) >= 0


def test_invoke_model_echoes_performance_and_tier(runtime, tiny_model):
    response = runtime.invoke_model(modelId=tiny_model, body=json.dumps(BODIES["meta-llama"]),
                                    performanceConfigLatency="standard", serviceTier="default")
    check_response("InvokeModel", response)
    assert response["performanceConfigLatency"] == "standard" and response["serviceTier"] == "default"
    sent = headers(response)
    assert sent["x-amzn-bedrock-performanceconfig-latency"] == "standard"
    assert sent["x-amzn-bedrock-service-tier"] == "default"


@pytest.mark.parametrize("operation", ["invoke_model", "invoke_model_with_response_stream"])
def test_invoke_refuses_tiers_this_server_lacks(runtime, tiny_model, operation):
    call = getattr(runtime, operation)
    with pytest.raises(runtime.exceptions.ValidationException, match="Latency-optimized"):
        call(modelId=tiny_model, body=json.dumps(BODIES["meta-llama"]), performanceConfigLatency="optimized")
    with pytest.raises(runtime.exceptions.ValidationException, match="service tier 'reserved'"):
        call(modelId=tiny_model, body=json.dumps(BODIES["meta-llama"]), serviceTier="reserved")


# -- InvokeModelWithResponseStream -------------------------------------------------------------------

@pytest.mark.parametrize("fmt", sorted(BODIES))
def test_invoke_stream_shape_and_last_chunk_metrics(runtime, tiny_model, fmt):
    response = runtime.invoke_model_with_response_stream(modelId=tiny_model, body=json.dumps(BODIES[fmt]),
                                                         performanceConfigLatency="standard")
    check_response("InvokeModelWithResponseStream", response)
    assert response["contentType"] == "application/json" and response["performanceConfigLatency"] == "standard"
    chunks = [json.loads(event["chunk"]["bytes"]) for event in check_events("InvokeModelWithResponseStream", response)]
    *rest, last = chunks
    metrics = last["amazon-bedrock-invocationMetrics"]
    assert set(metrics) == METRICS and metrics["inputTokenCount"] > 0 and 0 <= metrics["outputTokenCount"] <= 5
    assert not any("amazon-bedrock-invocationMetrics" in chunk for chunk in rest)


# -- CountTokens -------------------------------------------------------------------------------------

def test_count_tokens_shape(runtime, tiny_model):
    body = json.dumps(BODIES["meta-llama"]).encode()
    for request in ({"invokeModel": {"body": body}}, {"converse": {"messages": QUESTION}}):
        response = runtime.count_tokens(modelId=tiny_model, input=request)
        check_response("CountTokens", response)
        assert response["inputTokens"] > 0


# -- ApplyGuardrail ----------------------------------------------------------------------------------

def test_apply_guardrail_shape(server, runtime):
    guardrail = server.client("bedrock").create_guardrail(
        name="shapes", blockedInputMessaging="no", blockedOutputsMessaging="no",
        wordPolicyConfig={"wordsConfig": [{"text": "forbidden"}], "managedWordListsConfig": [{"type": "PROFANITY"}]},
        sensitiveInformationPolicyConfig={"piiEntitiesConfig": [{"type": "EMAIL", "action": "ANONYMIZE"}],
                                          "regexesConfig": [{"name": "ID", "pattern": "id-[0-9]+",
                                                             "action": "BLOCK"}]})
    for text in ("a forbidden word", "mail a@b.example or id-7", "nothing here"):
        response = runtime.apply_guardrail(guardrailIdentifier=guardrail["guardrailId"], guardrailVersion="DRAFT",
                                           source="OUTPUT", content=[{"text": {"text": text}}], outputScope="FULL")
        check_response("ApplyGuardrail", response)
