"""Where botocore's models and Bedrock part ways: a known-bad pattern corrected, headers the shapes
omit, documents whose nulls are data, Converse's additionalModelResponseFieldPaths pointers, and
GetModelCustomizationJob's required validationDataConfig."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace

import botocore.session
import pytest
import regex

from outcrop.api.bedrock import protocol
from outcrop.api.bedrock.validation import PATTERN_OVERRIDES, compile_pattern, effective_pattern, validate_input
from outcrop.customization.service import CustomizationService
from outcrop.errors import ValidationException
from outcrop.runtime import formats

_session = botocore.session.get_session()
AGENT = _session.get_service_model("bedrock-agent")
SERVICES = ("bedrock", "bedrock-runtime", "bedrock-agent", "bedrock-agent-runtime")

AGENT_ARN = "arn:aws:bedrock:us-east-1:123456789012:agent/ABCDEFGHIJ"
WELL_FORMED = [
    AGENT_ARN,
    "arn:aws:bedrock:us-east-1:123456789012:agent-alias/ABCDEFGHIJ/KLMNOPQRST",
    "arn:aws:bedrock:us-east-1:123456789012:knowledge-base/ABCDEFGHIJ",
    "arn:aws:bedrock:us-east-1:123456789012:flow/ABCDEFGHIJ/alias/KLMNOPQRST",
    "arn:aws:bedrock:us-east-1:123456789012:prompt/ABCDEFGHIJ:3",
]


def tagging_shape(operation: str):
    return AGENT.operation_model(operation).input_shape


def all_patterns() -> set[str]:
    found = set()
    for name in SERVICES:
        model = _session.get_service_model(name)
        for shape_name in model.shape_names:
            pattern = model.shape_for(shape_name).metadata.get("pattern")
            if pattern is not None:
                found.add(pattern)
    return found


# -- known-bad patterns ----------------------------------------------------------------------------

def test_botocore_tagging_pattern_read_literally_rejects_every_well_formed_arn():
    """The trap the override exists for: `/d{12}` where `\\d{12}` was meant."""
    literal = tagging_shape("TagResource").members["resourceArn"].metadata["pattern"]
    if literal not in PATTERN_OVERRIDES:
        pytest.skip("botocore's bedrock-agent tagging pattern changed; the override may be stale")
    assert "/d{12}" in literal
    assert all(compile_pattern(literal).fullmatch(arn) is None for arn in WELL_FORMED)


@pytest.mark.parametrize("operation", ["TagResource", "UntagResource", "ListTagsForResource"])
@pytest.mark.parametrize("arn", WELL_FORMED)
def test_overridden_pattern_accepts_well_formed_arns(operation, arn):
    params = {"resourceArn": arn}
    if operation == "TagResource":
        params["tags"] = {"team": "a"}
    if operation == "UntagResource":
        params["tagKeys"] = ["team"]
    validate_input(tagging_shape(operation), params)


def test_overridden_pattern_still_refuses_malformed_arns_and_quotes_the_corrected_pattern():
    shape = tagging_shape("ListTagsForResource")
    literal = shape.members["resourceArn"].metadata["pattern"]
    for bad in ("arn:aws:bedrock:us-east-1:12345:agent/ABCDEFGHIJ",  # short account
                "arn:aws:bedrock:us-east-1:123456789012:agent/abc",  # id not 10 upper-case characters
                "arn:aws:bedrock:us-east-1:/d/d/d/d/d/d/d/d/d/d/d/d:agent/ABCDEFGHIJ"):
        with pytest.raises(ValidationException) as caught:
            validate_input(shape, {"resourceArn": bad})
        assert "Member must satisfy regular expression pattern: " + effective_pattern(literal) in caught.value.message
        assert r":\d{12}:" in caught.value.message


def test_every_override_is_a_valid_regex_and_changes_something():
    for bad, corrected in PATTERN_OVERRIDES.items():
        assert bad != corrected
        regex.compile(corrected)
        assert compile_pattern(corrected) is not None


def test_every_override_still_names_a_pattern_in_botocore():
    stale = [bad for bad in PATTERN_OVERRIDES if bad not in all_patterns()]
    if stale:
        pytest.skip(f"botocore no longer ships {len(stale)} overridden pattern(s); remove their entries: {stale}")


def test_patterns_without_an_override_are_enforced_as_written():
    assert effective_pattern("[a-z]+") == "[a-z]+"


# -- headers the output shapes do not model --------------------------------------------------------

def test_handler_adds_unmodelled_response_headers():
    route, _ = protocol.match_route("POST", "/model/m.x/invoke")
    wire = protocol.serialize_response(route, {
        "body": b"{}", "contentType": "application/json", "performanceConfigLatency": "standard",
        protocol.EXTRA_HEADERS: {"X-Amzn-Bedrock-Input-Token-Count": 7, "X-Amzn-Bedrock-Invocation-Latency": 12}})
    assert wire.headers["X-Amzn-Bedrock-Input-Token-Count"] == "7"
    assert wire.headers["X-Amzn-Bedrock-Invocation-Latency"] == "12"
    assert wire.headers["X-Amzn-Bedrock-PerformanceConfig-Latency"] == "standard"
    assert wire.body == b"{}" and protocol.EXTRA_HEADERS.encode() not in wire.body


def test_extra_headers_never_reach_a_json_body():
    route, _ = protocol.match_route("GET", "/custom-models/abc")
    wire = protocol.serialize_response(route, {"modelArn": "a", protocol.EXTRA_HEADERS: {"X-Extra": "1"}})
    assert wire.headers["X-Extra"] == "1" and b"X-Extra" not in wire.body and b"@" not in wire.body


def test_an_extra_header_may_not_shadow_a_modelled_one():
    route, _ = protocol.match_route("POST", "/model/m.x/invoke")
    for name in ("x-amzn-bedrock-service-tier", "Content-Type"):
        with pytest.raises(ValueError, match="modelled header"):
            protocol.serialize_response(route, {"body": b"{}", "contentType": "application/json",
                                                protocol.EXTRA_HEADERS: {name: "x"}})


def test_extra_headers_on_event_streams():
    route, _ = protocol.match_route("POST", "/model/m.x/invoke-with-response-stream")
    wire = protocol.serialize_response(route, {"body": iter(()), "contentType": "application/json",
                                               "serviceTier": "default", protocol.EXTRA_HEADERS: {"X-A": 1}})
    assert wire.stream is not None
    assert wire.headers["X-Amzn-Bedrock-Service-Tier"] == "default" and wire.headers["X-A"] == "1"


# -- documents keep their nulls --------------------------------------------------------------------

def test_document_nulls_are_sent():
    route, _ = protocol.match_route("POST", "/model/m.x/converse")
    wire = protocol.serialize_response(route, {
        "output": {"message": {"role": "assistant", "content": [{"text": "hi"}]}}, "stopReason": "end_turn",
        "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2}, "metrics": {"latencyMs": 1},
        "additionalModelResponseFields": {"stop_sequence": None, "outputs": [None, {"a": 1}]}, "trace": None})
    assert b'"additionalModelResponseFields": {"stop_sequence": null, "outputs": [null, {"a": 1}]}' in wire.body
    assert b'"trace"' not in wire.body  # a null member is still left out


# -- additionalModelResponseFieldPaths -------------------------------------------------------------

NATIVE = {"generation": "Paris.", "stop_reason": "stop", "stop_sequence": None, "a/b": 1, "t~": 2,
          "usage": {"input_tokens": 3, "output_tokens": 4},
          "outputs": [{"text": "x", "stop_reason": "stop"}, {"text": "y", "stop_reason": "length"}]}


@pytest.mark.parametrize(("paths", "expected"), [
    (["/stop_reason"], {"stop_reason": "stop"}),
    (["/stop_sequence"], {"stop_sequence": None}),
    (["/usage/input_tokens"], {"usage": {"input_tokens": 3}}),
    (["/usage/input_tokens", "/usage/output_tokens"], {"usage": {"input_tokens": 3, "output_tokens": 4}}),
    (["/usage", "/usage/input_tokens"], {"usage": {"input_tokens": 3, "output_tokens": 4}}),
    (["/outputs/1/stop_reason"], {"outputs": [None, {"stop_reason": "length"}]}),
    (["/a~1b", "/t~0"], {"a/b": 1, "t~": 2}),
    # Well-formed pointers to what the response lacks are ignored, as Bedrock documents.
    (["/missing", "/outputs/9", "/outputs/01", "/generation/x", "/"], {}),
])
def test_pointers_pick_fields_in_the_native_layout(paths, expected):
    assert formats.pick(NATIVE, formats.parse_pointers(paths)) == expected


@pytest.mark.parametrize("path", ["stop_sequence", "", "/a~2", "/~"])
def test_malformed_pointer_is_refused_by_name(path):
    with pytest.raises(ValidationException, match="additionalModelResponseFieldPaths") as caught:
        formats.parse_pointers([path])
    assert repr(path) in caught.value.message


def test_no_paths_means_no_fields():
    assert formats.parse_pointers(None) is None
    assert formats.parse_pointers([]) == []


# -- GetModelCustomizationJob: validationDataConfig is required ------------------------------------

def _job_answer(validation: dict | None) -> dict:
    """GetModelCustomizationJob's wire answer for a stored job, without a database or a runner."""
    service = CustomizationService.__new__(CustomizationService)
    service.region = "us-east-1"
    when = datetime(2026, 1, 2, tzinfo=UTC)
    request = {"baseModelId": "meta.llama3-2-1b-instruct-v1:0", "customModelName": "m", "roleArn":
               "arn:aws:iam::123456789012:role/r", "customizationType": "FINE_TUNING", "resolved": {"epochCount": 1},
               "trainingDataConfig": {"s3Uri": "s3://b/train.jsonl"}, "outputDataConfig": {"s3Uri": "s3://b/out/"}}
    if validation is not None:
        request["validationDataConfig"] = validation
    row = SimpleNamespace(job_arn="arn:aws:bedrock:us-east-1:123456789012:model-customization-job/abc", job_name="j",
                          status="InProgress", status_details={}, created_at=when, updated_at=when, ended_at=None,
                          output_model_arn=None, failure_message=None, training_loss=None, validation_losses=None,
                          runner_job_id=None, request=request)
    service._job_row = lambda account, identifier: row
    route, _ = protocol.match_route("GET", "/model-customization-jobs/abc")
    return json.loads(protocol.serialize_response(route, service.get_job("123456789012", "abc")).body)


def _required_gaps(shape, value, path=""):
    if shape.type_name != "structure" or not isinstance(value, dict):
        return []
    gaps = [f"{path}{name}" for name in shape.required_members if value.get(name) is None]
    for name, member in shape.members.items():
        if name in value:
            gaps += _required_gaps(member, value[name], f"{path}{name}.")
    return gaps


@pytest.mark.parametrize("validation", [None, {"validators": [{"s3Uri": "s3://b/valid.jsonl"}]}])
def test_get_model_customization_job_answers_every_required_member(validation):
    answer = _job_answer(validation)
    shape = _session.get_service_model("bedrock").operation_model("GetModelCustomizationJob").output_shape
    assert _required_gaps(shape, answer) == []
    assert answer["validationDataConfig"] == (validation or {"validators": []})
