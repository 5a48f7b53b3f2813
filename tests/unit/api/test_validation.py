"""The request validator, driven by the real botocore models so that a model upgrade is tested too.

Expected messages are written out in full: clients and users match on AWS's exact wording.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import time

import botocore.session
import pytest
import regex
from botocore.model import ShapeResolver

from outcrop.api.bedrock.validation import (
    MAX_DEPTH,
    MAX_ERRORS,
    coerce_scalar,
    compile_pattern,
    validate_input,
    validation_error,
)
from outcrop.errors import ValidationException

SERVICES = ("bedrock", "bedrock-runtime", "bedrock-agent", "bedrock-agent-runtime")
_session = botocore.session.get_session()
MODELS = {name: _session.get_service_model(name) for name in SERVICES}

PROVIDER = "[A-Za-z0-9- ]{1,63}"
S3_URI = "s3://[a-z0-9][-.a-z0-9]{1,61}[a-z0-9](?:/[-!_*'().a-z0-9A-Z]+(?:/[-!_*'().a-z0-9A-Z]+)*)?/?"
CUSTOM_MODEL_NAME = "([0-9a-zA-Z][_-]?){1,63}"
MODEL_ID = "anthropic.claude-3-haiku-20240307-v1:0"
FOUNDATION_ARN = "arn:aws:bedrock:us-east-1::foundation-model/"


def shape_of(service: str, operation: str):
    return MODELS[service].operation_model(operation).input_shape


def error_of(service: str, operation: str, params: dict) -> str:
    with pytest.raises(ValidationException) as caught:
        validate_input(shape_of(service, operation), params)
    return caught.value.message


def one(value: str, path: str, constraint: str) -> str:
    return (f"1 validation error detected: Value {value} at '{path}' "
            f"failed to satisfy constraint: {constraint}")


def fake_shape(shapes: dict, name: str = "Top"):
    """A hand-written model, for the traits no real operation combines in one place."""
    return ShapeResolver(shapes).get_shape_by_name(name)


# --------------------------------------------------------------------------------------------------
# bedrock: ListFoundationModels, GetFoundationModel


def test_pattern_message_matches_aws_wording():
    assert error_of("bedrock", "ListFoundationModels", {"byProvider": "abc!"}) == one(
        "'abc!'", "byProvider", f"Member must satisfy regular expression pattern: {PROVIDER}")


def test_pattern_is_matched_against_the_whole_value():
    # A search would find "abc" inside; Java's matches() wants all of it.
    validate_input(shape_of("bedrock", "ListFoundationModels"), {"byProvider": "Meta Platforms-2"})
    assert "byProvider" in error_of("bedrock", "ListFoundationModels", {"byProvider": "abc/def"})
    assert "byProvider" in error_of("bedrock", "ListFoundationModels", {"byProvider": "a" * 64})


def test_enum_message_lists_the_model_values():
    assert error_of("bedrock", "ListFoundationModels", {"byOutputModality": "AUDIO"}) == one(
        "'AUDIO'", "byOutputModality", "Member must satisfy enum value set: [TEXT, IMAGE, EMBEDDING]")


def test_several_errors_are_counted_and_joined_with_semicolons():
    message = error_of("bedrock", "ListFoundationModels",
                       {"byProvider": "abc!", "byOutputModality": "AUDIO", "byInferenceType": "ON_DEMAND"})
    assert message == (
        "2 validation errors detected: "
        f"Value 'abc!' at 'byProvider' failed to satisfy constraint: "
        f"Member must satisfy regular expression pattern: {PROVIDER}; "
        "Value 'AUDIO' at 'byOutputModality' failed to satisfy constraint: "
        "Member must satisfy enum value set: [TEXT, IMAGE, EMBEDDING]")


def test_missing_required_member_is_value_null():
    assert error_of("bedrock", "GetFoundationModel", {}) == one(
        "null", "modelIdentifier", "Member must not be null")
    assert error_of("bedrock", "GetFoundationModel", {"modelIdentifier": None}) == one(
        "null", "modelIdentifier", "Member must not be null")


def test_identifier_length_and_pattern():
    shape = shape_of("bedrock", "GetFoundationModel")
    validate_input(shape, {"modelIdentifier": "amazon.titan-text-express-v1"})
    validate_input(shape, {"modelIdentifier": "arn:aws:bedrock:us-east-1::foundation-model/" + MODEL_ID})
    pattern = shape.members["modelIdentifier"].metadata["pattern"]
    assert error_of("bedrock", "GetFoundationModel", {"modelIdentifier": ""}) == (
        "2 validation errors detected: "
        "Value '' at 'modelIdentifier' failed to satisfy constraint: "
        "Member must have length greater than or equal to 1; "
        "Value '' at 'modelIdentifier' failed to satisfy constraint: "
        f"Member must satisfy regular expression pattern: {pattern}")


def test_long_values_are_truncated_in_the_message():
    message = error_of("bedrock", "GetFoundationModel", {"modelIdentifier": "x" * 100_000})
    assert "Member must have length less than or equal to 2048" in message
    assert "x" * 256 + "...' at 'modelIdentifier'" in message
    assert len(message) < 2_500


def test_unknown_members_are_ignored():
    validate_input(shape_of("bedrock", "ListFoundationModels"), {"byFuture": 3, "byProvider": "Amazon"})


# --------------------------------------------------------------------------------------------------
# bedrock: CreateModelCustomizationJob


def customization_job(**changes) -> dict:
    """Every top-level member of the request, filled in the way the AWS documentation's examples are."""
    body = {
        "jobName": "fine-tune-job-7",
        "customModelName": "my-titan_v2",
        "roleArn": "arn:aws:iam::123456789012:role/service-role/BedrockFineTune",
        "clientRequestToken": "3f0c1a2b-token",
        "baseModelIdentifier": FOUNDATION_ARN + "amazon.titan-text-express-v1:0:8k",
        "customizationType": "FINE_TUNING",
        "customModelKmsKeyId": "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "jobTags": [{"key": "team", "value": "search"}],
        "customModelTags": [{"key": "stage", "value": ""}],
        "trainingDataConfig": {"s3Uri": "s3://my-bucket/train/data.jsonl"},
        "validationDataConfig": {"validators": [{"s3Uri": "s3://my-bucket/validation/data.jsonl"}]},
        "outputDataConfig": {"s3Uri": "s3://my-bucket/output/"},
        "hyperParameters": {"epochCount": "2", "batchSize": "1", "learningRate": "0.00001"},
        "vpcConfig": {"subnetIds": ["subnet-0123456789abcdef0"],
                      "securityGroupIds": ["sg-0123456789abcdef0"]},
        "customizationConfig": {"distillationConfig": {"teacherModelConfig": {
            "teacherModelIdentifier": FOUNDATION_ARN + "meta.llama3-1-70b-instruct-v1:0",
            "maxResponseLengthForInference": 1000}}},
    }
    body.update(changes)
    return body


def test_complete_customization_job_passes():
    shape = shape_of("bedrock", "CreateModelCustomizationJob")
    body = customization_job()
    assert set(body) <= set(shape.members)
    validate_input(shape, body)


def test_customization_job_required_members_in_model_order():
    message = error_of("bedrock", "CreateModelCustomizationJob", {})
    assert message == "6 validation errors detected: " + "; ".join(
        f"Value null at '{name}' failed to satisfy constraint: Member must not be null"
        for name in ("jobName", "customModelName", "roleArn", "baseModelIdentifier",
                     "trainingDataConfig", "outputDataConfig"))


def test_customization_job_name_too_long():
    name = "m" * 64
    assert error_of("bedrock", "CreateModelCustomizationJob", customization_job(customModelName=name)) == (
        "2 validation errors detected: "
        f"Value '{name}' at 'customModelName' failed to satisfy constraint: "
        "Member must have length less than or equal to 63; "
        f"Value '{name}' at 'customModelName' failed to satisfy constraint: "
        f"Member must satisfy regular expression pattern: {CUSTOM_MODEL_NAME}")


def test_nested_structure_path():
    body = customization_job(trainingDataConfig={"s3Uri": "https://my-bucket/train.jsonl"})
    assert error_of("bedrock", "CreateModelCustomizationJob", body) == one(
        "'https://my-bucket/train.jsonl'", "trainingDataConfig.s3Uri",
        f"Member must satisfy regular expression pattern: {S3_URI}")


def test_list_of_structures_path_uses_one_based_member_index():
    body = customization_job(validationDataConfig={"validators": [{"s3Uri": "s3://ok-bucket/v"}, {}]})
    assert error_of("bedrock", "CreateModelCustomizationJob", body) == one(
        "null", "validationDataConfig.validators.2.member.s3Uri", "Member must not be null")


def test_map_values_are_typed():
    body = customization_job(hyperParameters={"epochCount": 2})
    assert error_of("bedrock", "CreateModelCustomizationJob", body) == one(
        "'2'", "hyperParameters.epochCount", "Member must be of type string")
    body = customization_job(hyperParameters=["epochCount", "2"])
    assert error_of("bedrock", "CreateModelCustomizationJob", body) == one(
        "'[epochCount, 2]'", "hyperParameters", "Member must be of type map")


def test_list_of_scalars_is_reported_once_with_every_element_constraint():
    body = customization_job(vpcConfig={"subnetIds": ["subnet-1", "subnet_2", "subnet 3"],
                                        "securityGroupIds": ["sg-1"]})
    assert error_of("bedrock", "CreateModelCustomizationJob", body) == one(
        "'[subnet-1, subnet_2, subnet 3]'", "vpcConfig.subnetIds",
        "Member must satisfy constraint: [Member must have length less than or equal to 32, "
        "Member must have length greater than or equal to 0, "
        "Member must satisfy regular expression pattern: [-0-9a-zA-Z]+]")


def test_list_length_and_wrong_element_type():
    body = customization_job(vpcConfig={"subnetIds": [], "securityGroupIds": ["sg-1", 7]})
    assert error_of("bedrock", "CreateModelCustomizationJob", body) == (
        "2 validation errors detected: "
        "Value '[]' at 'vpcConfig.subnetIds' failed to satisfy constraint: "
        "Member must have length greater than or equal to 1; "
        "Value '7' at 'vpcConfig.securityGroupIds.2.member' failed to satisfy constraint: "
        "Member must be of type string")


def test_union_with_two_members_set():
    body = customization_job(customizationConfig={
        "distillationConfig": {"teacherModelConfig": {"teacherModelIdentifier": MODEL_ID}},
        "rftConfig": {}})
    message = error_of("bedrock", "CreateModelCustomizationJob", body)
    assert message.startswith("1 validation error detected: Value '{distillationConfig=")
    assert message.endswith("at 'customizationConfig' failed to satisfy constraint: "
                            "Member must have exactly one member set")


def test_integer_range_in_nested_union_member():
    body = customization_job(customizationConfig={"rftConfig": {"hyperParameters": {
        "epochCount": 0, "learningRate": 0.5, "batchSize": 16}}})
    assert error_of("bedrock", "CreateModelCustomizationJob", body) == (
        "2 validation errors detected: "
        "Value '0' at 'customizationConfig.rftConfig.hyperParameters.epochCount' failed to satisfy "
        "constraint: Member must have value greater than or equal to 1; "
        "Value '0.5' at 'customizationConfig.rftConfig.hyperParameters.learningRate' failed to satisfy "
        "constraint: Member must have value less than or equal to 0.001")


# --------------------------------------------------------------------------------------------------
# bedrock-runtime: Converse


def converse(**changes) -> dict:
    """What boto3's `converse()` sends for a plain text chat, once the wire format is parsed."""
    body = {
        "modelId": MODEL_ID,
        "messages": [
            {"role": "user", "content": [{"text": "Name three rivers in Europe."}]},
            {"role": "assistant", "content": [{"text": "Danube, Rhine, Loire."}]},
            {"role": "user", "content": [{"text": "And in Asia?"},
                                         {"image": {"format": "png", "source": {"bytes": b"\x89PNG..."}}}]},
        ],
        "system": [{"text": "You are a terse geography tutor."}],
        "inferenceConfig": {"maxTokens": 512, "temperature": 0.5, "topP": 0.9,
                            "stopSequences": ["\n\nHuman:"]},
        "additionalModelRequestFields": {"top_k": 200, "nested": [{"any": None}, 1.5, True]},
        "additionalModelResponseFieldPaths": ["/stop_sequence"],
        "requestMetadata": {"tenant": "acme corp"},
    }
    body.update(changes)
    return body


def test_valid_converse_passes():
    validate_input(shape_of("bedrock-runtime", "Converse"), converse())
    validate_input(shape_of("bedrock-runtime", "Converse"), {"modelId": MODEL_ID, "messages": [
        {"role": "user", "content": [{"text": "hi"}]}]})


def test_message_role_required_and_enum():
    messages = [{"role": "user", "content": [{"text": "hi"}]}, {"content": [{"text": "x"}]},
                {"role": "robot", "content": [{"text": "x"}]}]
    assert error_of("bedrock-runtime", "Converse", converse(messages=messages)) == (
        "2 validation errors detected: "
        "Value null at 'messages.2.member.role' failed to satisfy constraint: Member must not be null; "
        "Value 'robot' at 'messages.3.member.role' failed to satisfy constraint: "
        "Member must satisfy enum value set: [user, assistant, system]")


def test_first_message_path_is_messages_1():
    assert error_of("bedrock-runtime", "Converse", converse(messages=[{"content": []}])) == one(
        "null", "messages.1.member.role", "Member must not be null")


def test_temperature_range_and_max_tokens_min():
    body = converse(inferenceConfig={"temperature": 1.5, "maxTokens": 0, "topP": -0.1})
    assert error_of("bedrock-runtime", "Converse", body) == (
        "3 validation errors detected: "
        "Value '0' at 'inferenceConfig.maxTokens' failed to satisfy constraint: "
        "Member must have value greater than or equal to 1; "
        "Value '1.5' at 'inferenceConfig.temperature' failed to satisfy constraint: "
        "Member must have value less than or equal to 1; "
        "Value '-0.1' at 'inferenceConfig.topP' failed to satisfy constraint: "
        "Member must have value greater than or equal to 0")


def test_number_types():
    shape = shape_of("bedrock-runtime", "Converse")
    validate_input(shape, converse(inferenceConfig={"temperature": 1, "topP": 0}))  # JSON 1 is a float
    assert error_of("bedrock-runtime", "Converse", converse(inferenceConfig={"maxTokens": 5.0})) == one(
        "'5.0'", "inferenceConfig.maxTokens", "Member must be of type integer")
    assert error_of("bedrock-runtime", "Converse", converse(inferenceConfig={"maxTokens": True})) == one(
        "'true'", "inferenceConfig.maxTokens", "Member must be of type integer")
    assert error_of("bedrock-runtime", "Converse", converse(inferenceConfig={"temperature": "0.5"})) == one(
        "'0.5'", "inferenceConfig.temperature", "Member must be of type float")
    assert error_of("bedrock-runtime", "Converse", converse(inferenceConfig={"maxTokens": 2**31})) == one(
        "'2147483648'", "inferenceConfig.maxTokens", "Member must be of type integer")


def test_nan_breaks_both_bounds():
    message = error_of("bedrock-runtime", "Converse", converse(inferenceConfig={"temperature": math.nan}))
    assert message == (
        "2 validation errors detected: "
        "Value 'NaN' at 'inferenceConfig.temperature' failed to satisfy constraint: "
        "Member must have value less than or equal to 1; "
        "Value 'NaN' at 'inferenceConfig.temperature' failed to satisfy constraint: "
        "Member must have value greater than or equal to 0")


def test_content_block_union():
    both = {"text": "hi", "image": {"format": "png", "source": {"bytes": b"abc"}}}
    body = converse(messages=[{"role": "user", "content": [{"text": "ok"}, both, {}]}])
    assert error_of("bedrock-runtime", "Converse", body) == (
        "2 validation errors detected: "
        # ImageSource is sensitive in the model, so it is redacted inside the rendered structure.
        "Value '{text=hi, image={format=png, source=***}}' "
        "at 'messages.1.member.content.2.member' failed to satisfy constraint: "
        "Member must have exactly one member set; "
        "Value '{}' at 'messages.1.member.content.3.member' failed to satisfy constraint: "
        "Member must have exactly one member set")


def test_nested_list_path_inside_union_member():
    body = converse(messages=[{"role": "user", "content": [
        {"text": "look"}, {"image": {"format": "tiff", "source": {"bytes": b"abc"}}}]}])
    assert error_of("bedrock-runtime", "Converse", body) == one(
        "'tiff'", "messages.1.member.content.2.member.image.format",
        "Member must satisfy enum value set: [png, jpeg, gif, webp]")


def test_list_of_scalars_with_empty_string():
    body = converse(inferenceConfig={"stopSequences": ["END", ""]})
    assert error_of("bedrock-runtime", "Converse", body) == one(
        "'[END, ]'", "inferenceConfig.stopSequences",
        "Member must satisfy constraint: [Member must have length greater than or equal to 1]")


def test_sensitive_values_stay_out_of_the_message():
    secret = "s3cr3t!value" * 30
    message = error_of("bedrock-runtime", "Converse", converse(requestMetadata={"k": secret}))
    assert secret[:12] not in message
    assert message == one(
        "'***'", "requestMetadata",
        "Map value must satisfy constraint: [Member must have length less than or equal to 256, "
        "Member must have length greater than or equal to 0, "
        r"Member must satisfy regular expression pattern: [a-zA-Z0-9\s:_@$#=/+,-.]{0,256}]")
    # Inside a sensitive structure (GuardrailConverseImageBlock) every nested value is hidden too.
    body = converse(messages=[{"role": "user", "content": [
        {"guardContent": {"image": {"format": "bmp-secret", "source": {"bytes": b"x"}}}}]}])
    message = error_of("bedrock-runtime", "Converse", body)
    assert "bmp-secret" not in message
    assert message == one("'***'", "messages.1.member.content.1.member.guardContent.image.format",
                          "Member must satisfy enum value set: [png, jpeg]")


def test_document_members_accept_any_json():
    deep: list = []
    for _ in range(100_000):
        deep = [deep, {"k": None}]
    body = converse(additionalModelRequestFields={"x": deep})
    validate_input(shape_of("bedrock-runtime", "Converse"), body)


def test_blob_rendering_and_length():
    started = time.perf_counter()
    message = error_of("bedrock-runtime", "InvokeModel", {"modelId": MODEL_ID, "body": "not bytes"})
    assert message == one("'***'", "body", "Member must be of type blob")
    assert time.perf_counter() - started < 10  # a hang guard, not a benchmark
    validate_input(shape_of("bedrock-runtime", "InvokeModel"), {"modelId": MODEL_ID, "body": b"{}"})


def test_error_count_is_capped():
    body = converse(messages=[{"content": []} for _ in range(10_000)])
    started = time.perf_counter()
    message = error_of("bedrock-runtime", "Converse", body)
    assert time.perf_counter() - started < 10  # a hang guard, not a benchmark
    assert message.startswith(f"{MAX_ERRORS} validation errors detected: ")
    assert message.count("; ") == MAX_ERRORS - 1
    assert "'messages.10.member.role'" in message and "messages.11." not in message


def test_large_valid_request_is_linear():
    body = converse(messages=[{"role": "user", "content": [{"text": "hello " * 20}]}] * 20_000)
    started = time.perf_counter()
    validate_input(shape_of("bedrock-runtime", "Converse"), body)
    assert time.perf_counter() - started < 20  # a hang guard, not a benchmark


# --------------------------------------------------------------------------------------------------
# Depth, recursion and hostile patterns


def nested_filter(depth: int) -> dict:
    leaf = {"equals": {"key": "year", "value": 2024}}
    current = leaf
    for _ in range(depth):
        current = {"andAll": [current, {"equals": {"key": "genre", "value": "jazz"}}]}
    return current


def retrieve(filter_: dict) -> dict:
    return {"knowledgeBaseId": "ABCDEFGHIJ", "retrievalQuery": {"text": "q"},
            "retrievalConfiguration": {"vectorSearchConfiguration": {"filter": filter_}}}


def test_recursive_shape_within_depth_passes():
    validate_input(shape_of("bedrock-agent-runtime", "Retrieve"), retrieve(nested_filter(10)))


@pytest.mark.parametrize("depth", [MAX_DEPTH, 5_000, 200_000])
def test_recursive_shape_with_deep_input_is_cut(depth):
    started = time.perf_counter()
    message = error_of("bedrock-agent-runtime", "Retrieve", retrieve(nested_filter(depth)))
    assert time.perf_counter() - started < 10  # a hang guard, not a benchmark
    assert message.startswith("1 validation error detected: Value '***' at 'retrievalConfiguration."
                              "vectorSearchConfiguration.filter.andAll.1.member.andAll.1.member.")
    assert message.endswith(f"failed to satisfy constraint: Member must have nesting depth less than or "
                            f"equal to {MAX_DEPTH}")
    assert len(message) < 1_000


def test_deeply_nested_lists_where_strings_belong():
    deep: list = ["x"]
    for _ in range(100_000):
        deep = [deep]
    message = error_of("bedrock-runtime", "Converse", converse(inferenceConfig={"stopSequences": deep}))
    assert message.startswith("1 validation error detected: Value '[[[[[[[")
    assert message.endswith("at 'inferenceConfig.stopSequences.1.member' failed to satisfy constraint: "
                            "Member must be of type string")


def test_catastrophic_pattern_is_bounded():
    # '[a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9\+\-\.]){0,63}' backtracks exponentially on "a-a-...-!".
    hostile = ("a-" * 40)[:62] + "!"
    shape = fake_shape({
        "Top": {"type": "structure", "members": {"names": {"shape": "Names"}}},
        "Names": {"type": "list", "member": {"shape": "Name"}},
        "Name": {"type": "string", "pattern": r"[a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9\+\-\.]){0,63}"},
    })
    started = time.perf_counter()
    try:
        validate_input(shape, {"names": [hostile] * 50})
    except ValidationException:
        pass
    assert time.perf_counter() - started < 10  # a hang guard, not a benchmark


# --------------------------------------------------------------------------------------------------
# Patterns


def all_patterns() -> set[str]:
    found = set()
    for model in MODELS.values():
        for name in model.shape_names:
            pattern = model.shape_for(name).metadata.get("pattern")
            if pattern is not None:
                found.add(pattern)
    return found


def test_every_model_pattern_compiles():
    patterns = all_patterns()
    assert len(patterns) > 100
    broken = sorted(p for p in patterns if compile_pattern(p) is None)
    assert broken == []
    raw_broken = []
    for pattern in patterns:
        try:
            regex.compile(pattern)
        except regex.error:
            raw_broken.append(pattern)
    assert raw_broken == []


def test_pattern_is_compiled_once():
    compile_pattern.cache_clear()
    for _ in range(3):
        validate_input(shape_of("bedrock", "ListFoundationModels"), {"byProvider": "Amazon"})
    info = compile_pattern.cache_info()
    assert info.misses == 1 and info.hits == 2


def test_java_semantics():
    # Java's "." stops at "\r" as well as "\n"; its \d and \s are ASCII.
    assert compile_pattern(".+").fullmatch("a\rb") is None
    assert compile_pattern(r"v\d+.\d+").fullmatch("v\u0661.2") is None
    assert compile_pattern(r"[a-zA-Z0-9\s._:/=+@-]*").fullmatch("a\u00a0b") is None
    assert compile_pattern(r"[a-zA-Z0-9\s._:/=+@-]*").fullmatch("a b\tc") is not None
    letters = r"\p{L}[\p{L}\p{M}0-9_]*( [\p{L}\p{M}0-9_]+)*"
    assert compile_pattern(letters).fullmatch("Zürich 東京") is not None
    assert compile_pattern(r"^\P{C}*$").fullmatch("line\n") is None
    assert compile_pattern(r"[\.\-]\Q*+\E").fullmatch(".*+") is not None


def test_uncompilable_pattern_is_skipped():
    shape = fake_shape({
        "Top": {"type": "structure", "members": {"name": {"shape": "Name"}}},
        "Name": {"type": "string", "pattern": "([a-z", "max": 3},
    })
    assert compile_pattern("([a-z") is None
    validate_input(shape, {"name": "ANY"})
    with pytest.raises(ValidationException):
        validate_input(shape, {"name": "four"})


# --------------------------------------------------------------------------------------------------
# Traits no single real operation combines


def test_map_of_structures_and_key_constraints():
    shape = fake_shape({
        "Top": {"type": "structure", "members": {
            "things": {"shape": "Things"}, "when": {"shape": "When"}, "size": {"shape": "Size"},
            "data": {"shape": "Data"}, "flag": {"shape": "Flag"}, "secret": {"shape": "Secret"}}},
        "Things": {"type": "map", "key": {"shape": "Key"}, "value": {"shape": "Thing"}, "max": 2},
        "Key": {"type": "string", "pattern": "[a-z]+"},
        "Thing": {"type": "structure", "required": ["id"], "members": {"id": {"shape": "Size"}}},
        "When": {"type": "timestamp"},
        "Size": {"type": "long", "min": 1},
        "Data": {"type": "blob", "max": 2},
        "Flag": {"type": "boolean"},
        "Secret": {"type": "string", "sensitive": True, "min": 8},
    })
    validate_input(shape, {"things": {"ab": {"id": 2**62}}, "when": dt.datetime.now(dt.UTC),
                           "data": b"ab", "flag": False, "secret": "long enough"})
    with pytest.raises(ValidationException) as caught:
        validate_input(shape, {"things": {"ok": {}, "Bad1": {"id": 0}}, "when": "2024-01-01",
                               "size": 2**63, "data": b"abc", "flag": "true", "secret": "short"})
    message = caught.value.message
    assert message == (
        "8 validation errors detected: "
        "Value null at 'things.ok.id' failed to satisfy constraint: Member must not be null; "
        "Value '{ok={}, Bad1={id=0}}' at 'things' failed to satisfy constraint: "
        "Map keys must satisfy constraint: [Member must satisfy regular expression pattern: [a-z]+]; "
        "Value '0' at 'things.Bad1.id' failed to satisfy constraint: "
        "Member must have value greater than or equal to 1; "
        "Value '2024-01-01' at 'when' failed to satisfy constraint: Member must be of type timestamp; "
        "Value '9223372036854775808' at 'size' failed to satisfy constraint: Member must be of type long; "
        "Value 'java.nio.HeapByteBuffer[pos=0 lim=3 cap=3]' at 'data' failed to satisfy constraint: "
        "Member must have length less than or equal to 2; "
        "Value 'true' at 'flag' failed to satisfy constraint: Member must be of type boolean; "
        "Value '***' at 'secret' failed to satisfy constraint: "
        "Member must have length greater than or equal to 8")


def test_sensitive_map_keys_stay_out_of_paths():
    shape = fake_shape({
        "Top": {"type": "structure", "members": {"vars": {"shape": "Vars"}}},
        "Vars": {"type": "map", "key": {"shape": "K"}, "value": {"shape": "V"}, "sensitive": True},
        "K": {"type": "string"},
        "V": {"type": "structure", "members": {"n": {"shape": "N"}}},
        "N": {"type": "integer", "max": 3},
    })
    with pytest.raises(ValidationException) as caught:
        validate_input(shape, {"vars": {"patient-name": {"n": 4}}})
    assert caught.value.message == one("'***'", "vars.***.n",
                                       "Member must have value less than or equal to 3")


def test_none_params_is_an_empty_request():
    validate_input(shape_of("bedrock", "ListFoundationModels"), None)
    with pytest.raises(ValidationException):
        validate_input(shape_of("bedrock", "GetFoundationModel"), None)


def test_non_dict_input():
    shape = shape_of("bedrock", "ListFoundationModels")
    with pytest.raises(ValidationException) as caught:
        validate_input(shape, ["not", "a", "dict"])
    assert caught.value.message == ("1 validation error detected: Value '[not, a, dict]' failed to satisfy "
                                    "constraint: Member must be of type structure")


def test_validation_error_helper():
    error = validation_error("messages.1.member.content", "{", "Member must be of type list")
    assert error.message == one("'{'", "messages.1.member.content", "Member must be of type list")
    assert validation_error("x", "pw", "Member must be of type string", sensitive=True).message == one(
        "'***'", "x", "Member must be of type string")


# --------------------------------------------------------------------------------------------------
# coerce_scalar


def member(service: str, operation: str, name: str):
    return shape_of(service, operation).members[name]


def test_coerce_integer():
    max_results = member("bedrock", "ListCustomModels", "maxResults")
    assert coerce_scalar(max_results, "10", "maxResults") == 10
    assert coerce_scalar(max_results, "-3", "maxResults") == -3
    for raw in ("abc", "1.0", "1_000", "\u0661", " 1", "", "2147483648", "9" * 5000):
        with pytest.raises(ValidationException) as caught:
            coerce_scalar(max_results, raw, "maxResults")
        assert caught.value.message.endswith(
            "at 'maxResults' failed to satisfy constraint: Member must be of type integer")
    with pytest.raises(ValidationException) as caught:
        coerce_scalar(max_results, "abc", "maxResults")
    assert caught.value.message == one("'abc'", "maxResults", "Member must be of type integer")


def test_coerce_boolean_and_string():
    is_owned = member("bedrock", "ListCustomModels", "isOwned")
    assert coerce_scalar(is_owned, "true", "isOwned") is True
    assert coerce_scalar(is_owned, "false", "isOwned") is False
    for raw in ("True", "1", "yes", ""):
        with pytest.raises(ValidationException):
            coerce_scalar(is_owned, raw, "isOwned")
    name_contains = member("bedrock", "ListCustomModels", "nameContains")
    assert coerce_scalar(name_contains, "abc", "nameContains") == "abc"


def test_coerce_float():
    shape = fake_shape({"F": {"type": "double"}}, "F")
    assert coerce_scalar(shape, "0.5", "t") == 0.5
    assert coerce_scalar(shape, "-1e-3", "t") == -0.001
    assert coerce_scalar(shape, "Infinity", "t") == math.inf
    assert math.isnan(coerce_scalar(shape, "NaN", "t"))
    for raw in ("nan", "inf", "1_0", "0x10", "", "1.2.3"):
        with pytest.raises(ValidationException) as caught:
            coerce_scalar(shape, raw, "t")
        assert caught.value.message.endswith("Member must be of type double")


def test_coerce_timestamp():
    before = member("bedrock", "ListCustomModels", "creationTimeBefore")
    expected = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)
    for raw in ("2024-05-01T12:30:00Z", "2024-05-01T12:30:00.000Z", "2024-05-01T14:30:00+02:00",
                "1714566600", "1714566600.0", "Wed, 01 May 2024 12:30:00 GMT"):
        value = coerce_scalar(before, raw, "creationTimeBefore")
        assert value == expected and value.tzinfo is not None, raw
    assert coerce_scalar(before, "2024-05-01T12:30:00", "x").tzinfo is not None
    for raw in ("yesterday", "2024-13-01T00:00:00Z", "99999999999999", "", "Wed, 99 Foo"):
        with pytest.raises(ValidationException) as caught:
            coerce_scalar(before, raw, "creationTimeBefore")
        assert caught.value.message.endswith(
            "at 'creationTimeBefore' failed to satisfy constraint: Member must be of type timestamp")


def test_coerce_list_items_one_by_one():
    # ListFoundationModels has no list query member; the caller coerces each repeated key the same way.
    shape = fake_shape({"Ints": {"type": "list", "member": {"shape": "Int"}},
                        "Int": {"type": "integer"}}, "Ints")
    assert [coerce_scalar(shape.member, raw, "ids") for raw in ("1", "2")] == [1, 2]
    with pytest.raises(TypeError):
        coerce_scalar(shape, "1", "ids")


def test_coerced_values_then_validate():
    shape = shape_of("bedrock", "ListCustomModels")
    params = {"maxResults": coerce_scalar(shape.members["maxResults"], "5000", "maxResults")}
    with pytest.raises(ValidationException) as caught:
        validate_input(shape, params)
    assert caught.value.message == one("'5000'", "maxResults",
                                       "Member must have value less than or equal to 1000")


# --------------------------------------------------------------------------------------------------
# Every operation of every model


def all_operations():
    for service, model in MODELS.items():
        for operation in model.operation_names:
            yield service, operation, model.operation_model(operation).input_shape


WRONG_TYPE = {"string": 12, "integer": "12", "long": 1.5, "float": "0.5", "double": [1.0], "boolean": "true",
              "blob": "Ym9keQ==", "timestamp": "2024-01-01T00:00:00Z", "list": {"0": "a"}, "map": ["a"],
              "structure": "{}"}


def checked_members(shape):
    return {name: m for name, m in shape.members.items()
            if not m.serialization.get("eventstream") and not m.metadata.get("document")}


def test_every_operation_with_empty_and_wrong_typed_input():
    operations = list(all_operations())
    assert len(operations) > 250
    for service, operation, shape in operations:
        # A required document must still be present; a required event stream arrives outside the dict.
        required = [name for name in shape.required_members
                    if not shape.members[name].serialization.get("eventstream")]
        try:
            validate_input(shape, {})
            assert not required, (service, operation)
        except ValidationException as error:
            assert error.message.startswith(f"{min(len(required), MAX_ERRORS)} validation error"), operation
            assert error.message.count("Member must not be null") == min(len(required), MAX_ERRORS)

        members = checked_members(shape)
        wrong = {name: WRONG_TYPE[m.type_name] for name, m in members.items()}
        if not wrong:
            validate_input(shape, wrong)
            continue
        with pytest.raises(ValidationException) as caught:
            validate_input(shape, wrong)
        assert caught.value.message.count("Member must be of type") == min(len(wrong), MAX_ERRORS), operation


# --------------------------------------------------------------------------------------------------
# Junk


ODD_STRINGS = ["", "\x00", "\ud800", "\udfff\ud800", "\u202e\u200b", "😀" * 100, "\r\n", "\u0661\u0662",
               "%2F%00", "arn:aws:bedrock:us-east-1:123456789012:" + "a" * 5000, "a-" * 40 + "!"]


def junk(rnd: random.Random, depth: int = 0):
    kind = rnd.randrange(16)
    if kind == 0:
        return None
    if kind == 1:
        return rnd.choice([True, False])
    if kind == 2:
        return rnd.choice([0, -1, 2**31, -(2**63) - 1, 10**5000, 7])
    if kind == 3:
        return rnd.choice([0.5, -0.0, math.nan, math.inf, -math.inf, 1e308])
    if kind == 4:
        return rnd.choice(ODD_STRINGS)
    if kind == 5:
        return rnd.choice("ab\u00e9\u6771") * rnd.choice([1, 64, 2049, 300_000])
    if kind == 6:
        return bytes(rnd.randrange(256) for _ in range(rnd.randrange(8)))
    if kind == 7:
        return dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    if kind == 8:
        nested: list = []
        for _ in range(rnd.choice([10, 1_000, 20_000])):
            nested = [nested]
        return nested
    if kind == 9:
        return object()
    if depth > 3:
        return "leaf"
    if kind in (10, 11):
        return [junk(rnd, depth + 1) for _ in range(rnd.randrange(4))]
    return {rnd.choice(["a", "text", "", "\ud800", "role", "0"]): junk(rnd, depth + 1) for _ in range(3)}


def plausible(shape, rnd: random.Random, depth: int = 0):
    """A value shaped like `shape` but full of edge cases; sometimes plain junk instead."""
    if rnd.random() < 0.12 or shape.metadata.get("document"):
        return junk(rnd)
    meta = shape.metadata
    kind = shape.type_name
    if kind == "structure":
        if depth > 10:
            return {}
        value = {name: plausible(m, rnd, depth + 1)
                 for name, m in shape.members.items() if rnd.random() < 0.6}
        if rnd.random() < 0.2:
            value["unknownMember"] = junk(rnd)
        return value
    if kind == "list":
        if depth > 10:
            return []
        count = rnd.choice([0, 1, 2, 3, 3_000]) if rnd.random() < 0.1 else rnd.randrange(3)
        return [plausible(shape.member, rnd, depth + 1) for _ in range(min(count, 50))] * max(1, count // 50)
    if kind == "map":
        if depth > 10:
            return {}
        return {rnd.choice(["k", "", "Key_1", "\u00e9"]) + str(i): plausible(shape.value, rnd, depth + 1)
                for i in range(rnd.randrange(3))}
    if kind == "string":
        if meta.get("enum") and rnd.random() < 0.7:
            return rnd.choice(meta["enum"])
        return rnd.choice(ODD_STRINGS + ["abc", "amazon.titan-text-express-v1", "s3://bucket/key"])
    if kind in ("integer", "long"):
        return rnd.choice([0, 1, -1, 100, 2**31, meta.get("min", 0), meta.get("max", 5)])
    if kind in ("float", "double"):
        return rnd.choice([0.0, 0.5, 1.0, 2.0, -1e-9, math.nan])
    if kind == "boolean":
        return rnd.random() < 0.5
    if kind == "blob":
        return rnd.choice([b"", b"{}", b"\x00" * 1000])
    if kind == "timestamp":
        return dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    return junk(rnd)


FUZZED = [
    ("bedrock-runtime", "Converse"), ("bedrock-runtime", "ConverseStream"),
    ("bedrock-runtime", "InvokeModel"), ("bedrock-runtime", "ApplyGuardrail"),
    ("bedrock", "CreateModelCustomizationJob"), ("bedrock", "CreateEvaluationJob"),
    ("bedrock", "CreateGuardrail"), ("bedrock", "ListFoundationModels"),
    ("bedrock-agent", "CreateAgent"), ("bedrock-agent", "CreateFlow"),
    ("bedrock-agent", "CreateKnowledgeBase"),
    ("bedrock-agent-runtime", "Retrieve"), ("bedrock-agent-runtime", "RetrieveAndGenerate"),
    ("bedrock-agent-runtime", "InvokeInlineAgent"),
]


@pytest.mark.parametrize(("service", "operation"), FUZZED)
def test_junk_never_raises_anything_but_validation_errors(service, operation):
    shape = shape_of(service, operation)
    rnd = random.Random(f"{service}/{operation}")
    slowest = 0.0
    for _ in range(60):
        params = plausible(shape, rnd) if rnd.random() < 0.9 else junk(rnd)
        started = time.perf_counter()
        try:
            validate_input(shape, params)
        except ValidationException as error:
            assert error.message.split(" ", 1)[0].isdigit()
            assert len(error.message) < 30_000
            error.message.encode("utf-8")  # no lone surrogates leak into the response body
        slowest = max(slowest, time.perf_counter() - started)
    assert slowest < 10  # a hang guard, not a benchmark
