"""The foundation-model catalog as a user sees it through boto3, the AWS CLI and raw HTTP."""

from __future__ import annotations

import json
import os
import stat
from urllib.parse import quote

import pytest
from botocore.exceptions import ClientError

SMOLLM2 = "huggingface.smollm2-135m-instruct-v1:0"
MINILM = "sentence-transformers.all-minilm-l6-v2-v1:0"


def raw(server, method: str, path: str, body: bytes | None = None):
    return server.raw(method, path, body)


def test_lists_both_builtin_models_with_bedrock_fields(bedrock):
    models = {m["modelId"]: m for m in bedrock.list_foundation_models()["modelSummaries"]}
    assert {SMOLLM2, MINILM} <= set(models)
    smol = models[SMOLLM2]
    assert smol["modelArn"] == f"arn:aws:bedrock:us-east-1::foundation-model/{SMOLLM2}"
    assert smol["providerName"] == "Hugging Face"
    assert smol["inputModalities"] == ["TEXT"] and smol["outputModalities"] == ["TEXT"]
    assert smol["responseStreamingSupported"] is True
    assert "FINE_TUNING" in smol["customizationsSupported"]
    assert "ON_DEMAND" in smol["inferenceTypesSupported"]
    assert smol["modelLifecycle"] == {"status": "ACTIVE"}
    assert models[MINILM]["outputModalities"] == ["EMBEDDING"]
    providers = {m["providerName"] for m in models.values()}
    assert {"Meta", "Mistral AI", "Google", "Qwen", "AI21 Labs", "Cohere", "Stability AI"} <= providers


@pytest.mark.parametrize(("kwargs", "must_have", "must_not_have"), [
    ({"byOutputModality": "EMBEDDING"}, {MINILM}, {SMOLLM2}),
    ({"byProvider": "Meta"}, {"meta.llama3-2-1b-instruct-v1:0"}, {SMOLLM2, MINILM}),
    ({"byProvider": "meta"}, {"meta.llama3-2-1b-instruct-v1:0"}, {SMOLLM2}),
    ({"byCustomizationType": "CONTINUED_PRE_TRAINING"}, {SMOLLM2}, {MINILM}),
    ({"byInferenceType": "PROVISIONED"}, {SMOLLM2}, {MINILM}),
    ({"byOutputModality": "IMAGE"}, {"stability.stable-diffusion-xl-v1:0"}, {SMOLLM2}),
])
def test_filters(bedrock, kwargs, must_have, must_not_have):
    ids = {m["modelId"] for m in bedrock.list_foundation_models(**kwargs)["modelSummaries"]}
    assert must_have <= ids
    assert not (must_not_have & ids)


def test_get_by_id_and_by_arn(bedrock):
    by_id = bedrock.get_foundation_model(modelIdentifier=SMOLLM2)["modelDetails"]
    by_arn = bedrock.get_foundation_model(modelIdentifier=by_id["modelArn"])["modelDetails"]
    assert by_id == by_arn
    assert by_id["modelId"] == SMOLLM2


def test_percent_encoded_arn_on_the_raw_path(server):
    arn = f"arn:aws:bedrock:us-east-1::foundation-model/{MINILM}"
    status, headers, body = raw(server, "GET", "/foundation-models/" + quote(arn, safe=""))
    assert status == 200, body
    assert body["modelDetails"]["modelId"] == MINILM
    assert body["modelDetails"]["weightsStatus"] == "AVAILABLE"
    assert headers["x-amzn-RequestId"]


def test_weights_status_tells_local_from_hub(server):
    _, _, body = raw(server, "GET", "/foundation-models")
    status = {m["modelId"]: m["weightsStatus"] for m in body["modelSummaries"]}
    assert status[SMOLLM2] == "AVAILABLE"
    assert status["mistral.mistral-7b-instruct-v0:2"] == "NOT_DOWNLOADED"


def test_unknown_model_is_resource_not_found(bedrock):
    # Not a Bedrock provider's id: those (meta.*, anthropic.*, ...) resolve to a local model by pattern.
    with pytest.raises(ClientError) as caught:
        bedrock.get_foundation_model(modelIdentifier="acme.no-such-model-v1:0")
    error = caught.value.response
    assert error["Error"]["Code"] == "ResourceNotFoundException"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert "acme.no-such-model-v1:0" in error["Error"]["Message"]
    assert isinstance(caught.value, bedrock.exceptions.ResourceNotFoundException)


def test_invalid_identifier_and_enum_are_validation_errors(bedrock):
    with pytest.raises(bedrock.exceptions.ValidationException) as caught:
        bedrock.get_foundation_model(modelIdentifier="Not A Model")
    assert "modelIdentifier" in str(caught.value)
    with pytest.raises(bedrock.exceptions.ValidationException) as caught:
        bedrock.list_foundation_models(byOutputModality="AUDIO")
    assert "byOutputModality" in str(caught.value) and "TEXT, IMAGE, EMBEDDING" in str(caught.value)


def test_every_response_has_a_request_id(bedrock):
    response = bedrock.list_foundation_models()
    assert response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    assert response["ResponseMetadata"]["RequestId"]


def test_unknown_route_answers_in_the_error_shape(server):
    status, headers, body = raw(server, "GET", "/no/such/route")
    assert status == 404
    assert headers["x-amzn-ErrorType"] == "UnknownOperationException"
    assert body["__type"] == "UnknownOperationException" and "/no/such/route" in body["message"]
    assert headers["x-amzn-RequestId"]


def test_malformed_json_body_is_a_named_error(server):
    status, headers, body = raw(server, "POST", "/model-customization-jobs", b"{not json")
    assert status in (400, 501)
    assert body["__type"] in ("SerializationException", "NotImplementedException")


def test_aws_cli_lists_foundation_models(server):
    result = server.aws("bedrock", "list-foundation-models", "--output", "json")
    assert result.returncode == 0, result.stderr
    ids = {m["modelId"] for m in json.loads(result.stdout)["modelSummaries"]}
    assert {SMOLLM2, MINILM} <= ids


def test_aws_cli_get_by_arn_and_not_found(server):
    arn = f"arn:aws:bedrock:us-east-1::foundation-model/{SMOLLM2}"
    result = server.aws("bedrock", "get-foundation-model", "--model-identifier", arn)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["modelDetails"]["modelName"] == "SmolLM2 135M"
    missing = server.aws("bedrock", "get-foundation-model", "--model-identifier", "acme.nothing-v1:0")
    assert missing.returncode != 0
    assert "ResourceNotFoundException" in missing.stderr


def test_first_start_writes_private_credentials(server):
    credentials = server.data_dir / "credentials"
    assert stat.S_IMODE(os.stat(credentials).st_mode) == 0o600
    text = credentials.read_text()
    assert "[outcrop]" in text and "aws_access_key_id = AKIA" in text
    assert "profile outcrop" in (server.data_dir / "config").read_text()


def test_banner_says_where_data_lives_and_what_listens(server):
    assert str(server.data_dir) in server.banner
    assert server.endpoint in server.banner
    assert "bedrock-agent-runtime" in server.banner
