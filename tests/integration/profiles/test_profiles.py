"""Inference profiles and model aliases through boto3: Bedrock's profile operations, invoking through a
profile or a well-known Bedrock id, what is metered, who may see and use a profile, and the runtime's answer
to a model identifier that names nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import boto3
import pytest
from botocore.config import Config

from tests.integration.profiles.conftest import TINY_ALIAS, TINY_CLAUDE
from tests.integration.security.helpers import error_code, outcrop

REGION = "us-east-1"
CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"  # a built-in default: SmolLM2 answers
SMOLLM2 = "huggingface.smollm2-135m-instruct-v1:0"
MINILM = "sentence-transformers.all-minilm-l6-v2-v1:0"
QUESTION = [{"role": "user", "content": [{"text": "hello world"}]}]
INVALID = "The provided model identifier is invalid."


def fm_arn(model_id: str) -> str:
    return f"arn:aws:bedrock:{REGION}::foundation-model/{model_id}"


def create(control, name: str, source: str = TINY_ALIAS, **extra) -> str:
    copy_from = source if source.startswith("arn:") else fm_arn(source)
    response = control.create_inference_profile(inferenceProfileName=name, modelSource={"copyFrom": copy_from},
                                                 **extra)
    assert response["status"] == "ACTIVE" and response["ResponseMetadata"]["HTTPStatusCode"] == 201
    return response["inferenceProfileArn"]


def converse(runtime, model_id: str, max_tokens: int = 3):
    return runtime.converse(modelId=model_id, messages=QUESTION, inferenceConfig={"maxTokens": max_tokens,
                                                                                   "temperature": 0})


def request_id(response) -> str:
    return response["ResponseMetadata"]["RequestId"]


def test_application_profile_lifecycle_and_tags(control, profile_server):
    arn = create(control, "support-bot", description="Support bot", tags=[{"key": "team", "value": "support"}])
    account = arn.split(":")[4]
    profile_id = arn.rsplit("/", 1)[1]
    assert arn == f"arn:aws:bedrock:{REGION}:{account}:application-inference-profile/{profile_id}"
    got = control.get_inference_profile(inferenceProfileIdentifier=arn)
    assert (got["inferenceProfileName"], got["description"], got["inferenceProfileId"]) == \
        ("support-bot", "Support bot", profile_id)
    assert (got["type"], got["status"]) == ("APPLICATION", "ACTIVE")
    assert got["models"] == [{"modelArn": fm_arn(TINY_ALIAS)}]
    assert got["createdAt"] <= got["updatedAt"]
    assert control.get_inference_profile(inferenceProfileIdentifier=profile_id)["inferenceProfileArn"] == arn
    # Raw HTTP shows which local model answers (boto3 drops the member).
    status, _, raw = profile_server.raw("GET", f"/inference-profiles/{profile_id}")
    assert status == 200 and raw["outcropModelId"] == "local.tiny-v1:0"

    with pytest.raises(control.exceptions.ConflictException):
        create(control, "support-bot")

    assert control.list_tags_for_resource(resourceARN=arn)["tags"] == [{"key": "team", "value": "support"}]
    control.tag_resource(resourceARN=arn, tags=[{"key": "cost-centre", "value": "42"}])
    control.untag_resource(resourceARN=arn, tagKeys=["team"])
    assert control.list_tags_for_resource(resourceARN=arn)["tags"] == [{"key": "cost-centre", "value": "42"}]

    second = create(control, "batch-jobs", source=CLAUDE)
    listed = control.list_inference_profiles(typeEquals="APPLICATION")["inferenceProfileSummaries"]
    assert {p["inferenceProfileArn"] for p in listed} >= {arn, second}
    pages = list(control.get_paginator("list_inference_profiles").paginate(
        typeEquals="APPLICATION", PaginationConfig={"PageSize": 1}))
    assert len(pages) >= 2
    assert [p["inferenceProfileArn"] for page in pages for p in page["inferenceProfileSummaries"]] == \
        [p["inferenceProfileArn"] for p in listed]

    control.delete_inference_profile(inferenceProfileIdentifier=second)
    with pytest.raises(control.exceptions.ResourceNotFoundException):
        control.get_inference_profile(inferenceProfileIdentifier=second)
    with pytest.raises(control.exceptions.ResourceNotFoundException):
        control.delete_inference_profile(inferenceProfileIdentifier=second)


def test_system_profiles_are_listed_by_default(control):
    listed = control.list_inference_profiles()["inferenceProfileSummaries"]
    assert listed and {p["type"] for p in listed} == {"SYSTEM_DEFINED"}
    ids = {p["inferenceProfileId"] for p in listed}
    assert {f"us.{CLAUDE}", "us.amazon.nova-micro-v1:0", f"us.{TINY_ALIAS}"} <= ids
    assert control.list_inference_profiles(typeEquals="SYSTEM_DEFINED")["inferenceProfileSummaries"] == listed
    profile = control.get_inference_profile(inferenceProfileIdentifier=f"us.{CLAUDE}")
    account = profile["inferenceProfileArn"].split(":")[4]
    assert profile["inferenceProfileArn"] == f"arn:aws:bedrock:{REGION}:{account}:inference-profile/us.{CLAUDE}"
    assert profile["models"] == [{"modelArn": fm_arn(CLAUDE)}] and profile["type"] == "SYSTEM_DEFINED"
    with pytest.raises(control.exceptions.ResourceNotFoundException):
        control.get_inference_profile(inferenceProfileIdentifier="us.acme.nothing-v1:0")
    with pytest.raises(control.exceptions.ValidationException):
        control.delete_inference_profile(inferenceProfileIdentifier=f"us.{CLAUDE}")
    # Paged by boto3's paginator; the tokens are signed, so an edited one is refused.
    pages = list(control.get_paginator("list_inference_profiles").paginate(PaginationConfig={"PageSize": 7}))
    assert [p["inferenceProfileId"] for page in pages for p in page["inferenceProfileSummaries"]] == \
        [p["inferenceProfileId"] for p in listed] and len(pages) > 1
    token = pages[0]["nextToken"]
    for forged in (f"system:us.{CLAUDE}", token[:5] + ("A" if token[5] != "A" else "B") + token[6:]):
        assert error_code(lambda t=forged: control.list_inference_profiles(maxResults=7, nextToken=t)) == \
            ("ValidationException", 400, "nextToken is not a token this server gave out")


def test_invoking_through_a_profile_arn_meters_the_local_model(control, runtime, usage):
    arn = create(control, "metered")
    response = converse(runtime, arn)
    assert response["output"]["message"]["content"][0]["text"] is not None
    assert usage(request_id(response))[:3] == ("local.tiny-v1:0", arn, "Converse")
    by_id = converse(runtime, arn.rsplit("/", 1)[1])  # the bare profile id works too
    assert usage(request_id(by_id))[0] == "local.tiny-v1:0"
    # A profile copying a system profile serves that profile's model.
    account = arn.split(":")[4]
    copied = create(control, "copied", source=f"arn:aws:bedrock:{REGION}:{account}:inference-profile/us.{TINY_ALIAS}")
    assert control.get_inference_profile(inferenceProfileIdentifier=copied)["models"] == \
        [{"modelArn": fm_arn(TINY_ALIAS)}]
    assert usage(request_id(converse(runtime, copied)))[:2] == ("local.tiny-v1:0", copied)
    control.delete_inference_profile(inferenceProfileIdentifier=arn)
    code, status, message = error_code(lambda: converse(runtime, arn))
    assert (code, status, message) == ("ValidationException", 400, INVALID)


def test_a_system_profile_id_and_an_aliased_claude_id(runtime, usage):
    for model_id in (f"us.{TINY_CLAUDE}", TINY_CLAUDE, f"global.{TINY_ALIAS}"):
        response = converse(runtime, model_id)
        assert usage(request_id(response))[:3] == ("local.tiny-v1:0", model_id, "Converse"), model_id


def test_an_anthropic_messages_body_on_an_aliased_claude_id(runtime, usage):
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 3, "temperature": 0,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hello world"}]}]}
    response = runtime.invoke_model(modelId=TINY_CLAUDE, body=json.dumps(body))
    answer = json.loads(response["body"].read())
    assert answer["type"] == "message" and answer["role"] == "assistant" and answer["model"] == TINY_CLAUDE
    assert answer["content"][0]["type"] == "text" and answer["usage"]["output_tokens"] <= 3
    assert usage(request_id(response)) == ("local.tiny-v1:0", TINY_CLAUDE, "InvokeModel",
                                           answer["usage"]["input_tokens"], answer["usage"]["output_tokens"])
    streamed = runtime.invoke_model_with_response_stream(modelId=f"us.{TINY_CLAUDE}", body=json.dumps(body))
    chunks = [json.loads(e["chunk"]["bytes"]) for e in streamed["body"] if "chunk" in e]
    assert chunks[0]["type"] == "message_start" and chunks[-1]["type"] == "message_stop"
    counted = runtime.count_tokens(modelId=TINY_CLAUDE, input={"invokeModel": {"body": json.dumps(body)}})
    assert counted["inputTokens"] == answer["usage"]["input_tokens"]


def served_by(response: dict) -> str:
    return response["ResponseMetadata"]["HTTPHeaders"]["x-outcrop-model-id"]


def test_the_builtin_defaults_answer_with_smollm2_and_minilm(runtime, usage):
    """The issue's own example: an application naming Claude 3 Haiku runs unchanged, SmolLM2 answers."""
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 4, "temperature": 0,
            "messages": [{"role": "user", "content": "Say hi."}]}
    invoked = runtime.invoke_model(modelId=CLAUDE, body=json.dumps(body))
    answer = json.loads(invoked["body"].read())
    assert answer["content"][0]["text"].strip()
    assert usage(request_id(invoked))[:3] == (SMOLLM2, CLAUDE, "InvokeModel")
    assert served_by(invoked) == SMOLLM2  # the answer says which model gave it
    conversed = converse(runtime, CLAUDE, max_tokens=4)
    assert conversed["output"]["message"]["content"][0]["text"].strip()
    assert usage(request_id(conversed))[:3] == (SMOLLM2, CLAUDE, "Converse")
    assert served_by(conversed) == SMOLLM2
    streamed = runtime.converse_stream(modelId=f"us.{CLAUDE}", messages=QUESTION, inferenceConfig={"maxTokens": 2})
    assert served_by(streamed) == SMOLLM2 and list(streamed["stream"])
    embedded = runtime.invoke_model(modelId="amazon.titan-embed-text-v2:0", body=json.dumps({"inputText": "hi"}))
    assert len(json.loads(embedded["body"].read())["embedding"]) == 384
    assert usage(request_id(embedded))[:3] == (MINILM, "amazon.titan-embed-text-v2:0", "InvokeModel")


def test_get_foundation_model_answers_an_alias_and_the_list_shows_the_table(control, profile_server):
    details = control.get_foundation_model(modelIdentifier=CLAUDE)["modelDetails"]
    assert details["modelId"] == CLAUDE and details["modelArn"] == fm_arn(CLAUDE)
    assert details["modelName"] == "SmolLM2 135M" and details["outputModalities"] == ["TEXT"]
    assert details["providerName"] == "Anthropic"
    status, _, raw = profile_server.raw("GET", f"/foundation-models/{CLAUDE}")
    assert status == 200 and raw["modelDetails"]["outcropModelId"] == SMOLLM2
    # Bedrock lists its models, and an application may find its id so: the catalog, then the aliases, each
    # marked with the local model that answers (the catalog's own models carry no mark).
    listed = {m["modelId"] for m in control.list_foundation_models()["modelSummaries"]}
    assert {SMOLLM2, CLAUDE, TINY_ALIAS} <= listed
    status, _, raw = profile_server.raw("GET", "/foundation-models?byProvider=Anthropic")
    anthropic = {m["modelId"]: m.get("outcropModelId") for m in raw["modelSummaries"]}
    assert anthropic[CLAUDE] == SMOLLM2 and anthropic[TINY_CLAUDE] == "local.tiny-v1:0"
    assert {m["providerName"] for m in raw["modelSummaries"]} == {"Anthropic"}
    status, _, raw = profile_server.raw("GET", "/foundation-models?byOutputModality=EMBEDDING")
    embedders = {m["modelId"]: m.get("outcropModelId") for m in raw["modelSummaries"]}
    assert embedders[MINILM] is None and embedders["cohere.embed-v4:0"] == MINILM


#: Ids the frameworks accept that this server once refused (the unit tests walk LlamaIndex's whole list).
FRAMEWORK_SAMPLE = ("anthropic.claude-sonnet-4-5-20250929-v1:0", "anthropic.claude-haiku-4-5-20251001-v1:0",
                    "amazon.nova-premier-v1:0", "meta.llama4-scout-17b-instruct-v1:0", "deepseek.r1-v1:0",
                    "openai.gpt-oss-20b-1:0", "mistral.mistral-7b-instruct-v0:2", "cohere.command-r-v1:0")


def test_ids_frameworks_accept_count_tokens_from_any_region(profile_server):
    """CountTokens on ids LlamaIndex's BedrockConverse accepts, from clients configured for eu-west-1 and
    ap-northeast-1 naming their own geography's system profiles, as their applications do."""
    key_id, secret = profile_server.root_key()
    for region, geo in (("us-east-1", ""), ("eu-west-1", "eu."), ("ap-northeast-1", "apac.")):
        client = boto3.client("bedrock-runtime", endpoint_url=profile_server.endpoint, region_name=region,
                              aws_access_key_id=key_id, aws_secret_access_key=secret,
                              config=Config(retries={"max_attempts": 1}, read_timeout=300))
        for model_id in FRAMEWORK_SAMPLE if not geo else FRAMEWORK_SAMPLE[:2]:
            counted = client.count_tokens(modelId=geo + model_id, input={"converse": {"messages": QUESTION}})
            assert counted["inputTokens"] > 0, geo + model_id


def test_a_catalog_model_whose_weights_are_not_here_is_answered_by_the_chat_model(profile_server, runtime, usage):
    """Offline (the tests' HF_HUB_OFFLINE), a hub model of the catalog cannot be fetched: its mapped model
    answers, and says so as an alias does."""
    llama = "meta.llama3-1-8b-instruct-v1:0"
    status, _, raw = profile_server.raw("GET", f"/foundation-models/{llama}")
    if raw["modelDetails"]["weightsStatus"] == "AVAILABLE":
        pytest.skip(f"{llama}'s weights are on this machine")
    answered = converse(runtime, f"eu.{llama}", max_tokens=2)
    assert served_by(answered) == SMOLLM2 and answered["output"]["message"]["content"]
    assert usage(request_id(answered))[:3] == (SMOLLM2, f"eu.{llama}", "Converse")


def test_models_list_shows_the_aliases(profile_server):
    result = subprocess.run([sys.executable, "-m", "outcrop", "models", "list", "--data-dir",
                             str(profile_server.data_dir)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    catalog, aliases = result.stdout.split("\n\n")
    assert SMOLLM2 in catalog and CLAUDE not in catalog
    rows = {line.split()[0]: line.split()[1] for line in aliases.splitlines()[1:]}
    assert rows[CLAUDE] == SMOLLM2 and rows[TINY_ALIAS] == "local.tiny-v1:0"
    assert rows["amazon.titan-embed-text-v2:0"] == MINILM
    assert "meta.llama3-1-8b-instruct-v1:0" not in rows  # a catalog model is not aliased by default
    assert "anthropic.claude-opus-4-9-v1:0" not in rows  # nor is an id mapped by pattern listed


def test_an_identifier_that_names_nothing_is_a_validation_exception(runtime, control):
    for model_id in ("sonnet", "acme.no-such-model-v1:0", "us.acme.no-such-model-v1:0",
                     f"arn:aws:bedrock:{REGION}::foundation-model/acme.no-such-model-v1:0"):
        for call in (lambda m=model_id: converse(runtime, m),
                     lambda m=model_id: runtime.invoke_model(modelId=m, body=json.dumps({"inputText": "hi"}))):
            assert error_code(call) == ("ValidationException", 400, INVALID), model_id
    # The control plane keeps answering a missing model as a missing resource.
    assert error_code(lambda: control.get_foundation_model(modelIdentifier="acme.no-such-model-v1:0"))[:2] == \
        ("ResourceNotFoundException", 404)


def test_another_account_neither_sees_nor_uses_a_profile(profile_server, control, other_account):
    arn = create(control, "private")
    profile_id = arn.rsplit("/", 1)[1]
    stranger = profile_server.client("bedrock", key=other_account)
    stranger_runtime = profile_server.client("bedrock-runtime", key=other_account)
    for identifier in (arn, profile_id):
        assert error_code(lambda i=identifier: stranger.get_inference_profile(inferenceProfileIdentifier=i))[:2] \
            == ("ResourceNotFoundException", 404)
        assert error_code(lambda i=identifier: stranger.delete_inference_profile(inferenceProfileIdentifier=i))[0] \
            == "ResourceNotFoundException"
        assert error_code(lambda i=identifier: converse(stranger_runtime, i)) == ("ValidationException", 400, INVALID)
    assert error_code(lambda: stranger.list_tags_for_resource(resourceARN=arn))[0] == "ResourceNotFoundException"
    assert error_code(lambda: stranger.tag_resource(resourceARN=arn, tags=[{"key": "k", "value": "v"}]))[0] == \
        "ResourceNotFoundException"
    assert arn not in {p["inferenceProfileArn"] for p in stranger.list_inference_profiles(
        typeEquals="APPLICATION")["inferenceProfileSummaries"]}
    # Its own name space: the same name is free in the other account.
    assert stranger.create_inference_profile(inferenceProfileName="private",
                                             modelSource={"copyFrom": fm_arn(TINY_ALIAS)})["inferenceProfileArn"]
    assert control.get_inference_profile(inferenceProfileIdentifier=arn)["inferenceProfileName"] == "private"


def test_iam_denies_by_the_profile_arn_and_by_every_model_behind_it(profile_server, control, tmp_path):
    arn = create(control, "guarded")
    outcrop(profile_server, "iam", "create-user", "--name", "pat")
    key = json.loads(outcrop(profile_server, "iam", "create-access-key", "--user-name", "pat").stdout)
    pat = (key["AccessKeyId"], key["SecretAccessKey"])

    def deny(resource: str) -> None:
        policy = tmp_path / "policy.json"
        policy.write_text(json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "bedrock:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "bedrock:*", "Resource": resource}]}))
        outcrop(profile_server, "iam", "put-user-policy", "--user-name", "pat", "--policy-name", "guard",
                "--policy-document", f"file://{policy}")

    runtime = profile_server.client("bedrock-runtime", key=pat)
    bedrock = profile_server.client("bedrock", key=pat)
    deny(arn)
    assert error_code(lambda: converse(runtime, arn))[0] == "AccessDeniedException"
    assert error_code(lambda: converse(runtime, arn.rsplit("/", 1)[1]))[0] == "AccessDeniedException"
    assert error_code(lambda: bedrock.get_inference_profile(inferenceProfileIdentifier=arn))[0] == \
        "AccessDeniedException"
    assert error_code(lambda: bedrock.delete_inference_profile(inferenceProfileIdentifier=arn))[0] == \
        "AccessDeniedException"
    assert converse(runtime, TINY_ALIAS)  # the model itself stays open
    # A denied local model stays denied through its aliases, its system profiles and any profile copying it.
    deny(fm_arn("local.tiny-v1:0"))
    for name in (arn, TINY_ALIAS, f"us.{TINY_ALIAS}", "local.tiny-v1:0"):
        assert error_code(lambda n=name: converse(runtime, n))[0] == "AccessDeniedException", name
    # Nor can a new profile copying it be made: its source is authorized with everything it reaches.
    assert error_code(lambda: bedrock.create_inference_profile(
        inferenceProfileName="around", modelSource={"copyFrom": fm_arn(TINY_ALIAS)}))[0] == "AccessDeniedException"
    # ... and a system profile is authorized by its own ARN (the caller's account), as on Bedrock.
    account = arn.split(":")[4]
    deny(f"arn:aws:bedrock:{REGION}:{account}:inference-profile/us.{TINY_ALIAS}")
    assert error_code(lambda: converse(runtime, f"us.{TINY_ALIAS}"))[0] == "AccessDeniedException"
    assert converse(runtime, TINY_ALIAS)
