"""Custom model import end to end through boto3: a Hugging Face folder in S3, an import job, the imported model
invoked on demand by its ARN through the runtime's doors, then deleted."""

from __future__ import annotations

import json
import shutil
import time

import pytest
from botocore.exceptions import ClientError

from tests.conftest import start_server, stop_server
from tests.helpers import make_tiny_llama
from tests.integration.customization.test_customization import outcrop

BUCKET = "import-data"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server of this module's own: its job runner runs one job at a time, so no other test's job (a
    fine-tuning) is queued ahead of the import."""
    running = start_server(tmp_path_factory.mktemp("import-data"))
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def role(server, tmp_path_factory) -> str:
    """Three folders in the bucket (the tiny Llama; the same naming an architecture not served; one without
    its tokenizer), and a role that may read them."""
    root = tmp_path_factory.mktemp("folders")
    tiny = make_tiny_llama(root / "tiny")
    mamba = shutil.copytree(tiny, root / "mamba")
    config = json.loads((mamba / "config.json").read_text())
    (mamba / "config.json").write_text(json.dumps({**config, "architectures": ["MambaForCausalLM"]}))
    bare = shutil.copytree(tiny, root / "bare")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (bare / name).unlink()
    outcrop(server.data_dir, "s3", "mb", f"s3://{BUCKET}")
    outcrop(server.data_dir, "s3", "cp", str(root), f"s3://{BUCKET}/models/", "--recursive")
    return outcrop(server.data_dir, "iam", "create-role", "--name", "import-role", "--s3-access", BUCKET).strip()


def create(bedrock, role: str, folder: str, name: str, **extra):
    return bedrock.create_model_import_job(
        jobName=f"import-{name}", importedModelName=name, roleArn=role,
        modelDataSource={"s3DataSource": {"s3Uri": f"s3://{BUCKET}/models/{folder}"}}, **extra)


@pytest.fixture(scope="module")
def imported(server, role) -> dict:
    """The tiny Llama imported: the completed job."""
    bedrock = server.client("bedrock")
    job_arn = create(bedrock, role, "tiny/", "tiny-llama")["jobArn"]
    deadline = time.monotonic() + 120
    while (job := bedrock.get_model_import_job(jobIdentifier=job_arn))["status"] == "InProgress":
        assert time.monotonic() < deadline, "the import did not finish in 120 s"
        time.sleep(0.5)
    assert job["status"] == "Completed", job.get("failureMessage")
    return job


def test_the_job_and_the_model_are_described_as_bedrock_does(server, imported, role):
    bedrock = server.client("bedrock")
    job_arn, model_arn = imported["jobArn"], imported["importedModelArn"]
    assert job_arn.startswith("arn:aws:bedrock:us-east-1:") and ":model-import-job/" in job_arn
    assert model_arn.startswith("arn:aws:bedrock:us-east-1:") and ":imported-model/" in model_arn
    assert imported["roleArn"] == role and imported["endTime"] >= imported["creationTime"]
    assert imported["modelDataSource"] == {"s3DataSource": {"s3Uri": f"s3://{BUCKET}/models/tiny/"}}
    assert bedrock.get_model_import_job(jobIdentifier="import-tiny-llama")["jobArn"] == job_arn  # by name too
    listed = bedrock.list_model_import_jobs(statusEquals="Completed")["modelImportJobSummaries"]
    assert [(j["jobArn"], j["importedModelArn"]) for j in listed] == [(job_arn, model_arn)]

    model = bedrock.get_imported_model(modelIdentifier=model_arn)
    assert model["modelName"] == "tiny-llama" and model["jobArn"] == job_arn and model["jobName"] == "import-tiny-llama"
    assert model["modelArchitecture"] == "llama" and model["instructSupported"] is True
    assert bedrock.get_imported_model(modelIdentifier="tiny-llama")["modelArn"] == model_arn
    summaries = bedrock.list_imported_models(nameContains="tiny")["modelSummaries"]
    assert [m["modelArn"] for m in summaries] == [model_arn]
    # The weights live in Outcrop's model store, copied: the bucket's README and pickles would not be.
    home = next((server.data_dir / "imported-models").glob(f"*/{model_arn.rsplit('/', 1)[1]}"))
    assert (home / "model.safetensors").is_file() and (home / "tokenizer.json").is_file()


def test_it_is_invoked_on_demand_by_its_arn(server, imported):
    runtime = server.client("bedrock-runtime", read_timeout=120)
    arn = imported["importedModelArn"]
    answer = runtime.converse(modelId=arn, messages=[{"role": "user", "content": [{"text": "hello world"}]}],
                              inferenceConfig={"maxTokens": 4})
    assert answer["usage"]["inputTokens"] > 0 and 0 < answer["usage"]["outputTokens"] <= 4
    assert answer["stopReason"] in ("end_turn", "max_tokens")
    streamed = list(runtime.converse_stream(modelId=arn, messages=[{"role": "user", "content": [{"text": "hi"}]}],
                                            inferenceConfig={"maxTokens": 3})["stream"])
    assert streamed[-1]["metadata"]["usage"]["outputTokens"] <= 3
    # The OpenAI door lists and describes it too (a SigV4-signed call here; SDKs send bearer keys).
    status, _, listed = server.raw("GET", "/v1/models")
    assert status == 200 and arn in [m["id"] for m in listed["data"]]
    status, _, one = server.raw("GET", f"/v1/models/{arn}")
    assert status == 200 and one["id"] == arn

    # InvokeModel speaks the Llama family's body, as Bedrock asks of an imported Llama.
    response = runtime.invoke_model(modelId=arn, body=json.dumps({"prompt": "the quick brown", "max_gen_len": 4}))
    body = json.loads(response["body"].read())
    assert body["prompt_token_count"] > 0 and 0 < body["generation_token_count"] <= 4
    headers = response["ResponseMetadata"]["HTTPHeaders"]
    assert int(headers["x-amzn-bedrock-output-token-count"]) == body["generation_token_count"]
    chunks = [json.loads(e["chunk"]["bytes"]) for e in runtime.invoke_model_with_response_stream(
        modelId=arn, body=json.dumps({"prompt": "the lazy", "max_gen_len": 3}))["body"]]
    assert chunks[-1]["amazon-bedrock-invocationMetrics"]["outputTokenCount"] <= 3
    counted = runtime.count_tokens(modelId=arn, input={"converse": {
        "messages": [{"role": "user", "content": [{"text": "hello world"}]}]}})
    assert counted["inputTokens"] == answer["usage"]["inputTokens"]

    # Billed per use, under its ARN.
    from tests.backends import query

    rows = query(server.data_dir, "SELECT model_id, operation FROM usage_records WHERE invoked_model_id = ?", arn)
    assert {op for model, op in rows if model == arn} >= {"Converse", "ConverseStream", "InvokeModel",
                                                          "InvokeModelWithResponseStream"}


def test_folders_that_cannot_be_imported_are_refused_by_name(server, role):
    bedrock = server.client("bedrock")
    with pytest.raises(bedrock.exceptions.ValidationException, match="MambaForCausalLM.*not supported"):
        create(bedrock, role, "mamba/", "mamba")
    with pytest.raises(bedrock.exceptions.ValidationException, match="no tokenizer"):
        create(bedrock, role, "bare/", "bare")
    with pytest.raises(bedrock.exceptions.ValidationException, match="no config.json"):
        create(bedrock, role, "nothing-here/", "nothing")
    with pytest.raises(bedrock.exceptions.ValidationException, match="vpcConfig is not supported"):
        create(bedrock, role, "tiny/", "vpc", vpcConfig={"subnetIds": ["subnet-1"], "securityGroupIds": ["sg-1"]})
    assert bedrock.list_model_import_jobs(nameContains="mamba")["modelImportJobSummaries"] == []


def test_iam_sees_the_imported_models_arn_whatever_names_it(server, imported):
    arn = imported["importedModelArn"]
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "bedrock:*", "Resource": "*"},
        {"Effect": "Deny", "Action": ["bedrock:InvokeModel", "bedrock:GetImportedModel"], "Resource": arn}]}
    for action, body in (("CreateUser", {"UserName": "limited"}),
                         ("PutUserPolicy", {"UserName": "limited", "PolicyName": "p", "PolicyDocument": policy})):
        assert server.raw("POST", f"/_outcrop/iam/{action}", json.dumps(body).encode())[0] == 200
    _, _, created = server.raw("POST", "/_outcrop/iam/CreateAccessKey", json.dumps({"UserName": "limited"}).encode())
    key = (created["AccessKeyId"], created["SecretAccessKey"])
    bedrock, runtime = server.client("bedrock", key=key), server.client("bedrock-runtime", key=key)
    for call in (lambda: bedrock.get_imported_model(modelIdentifier="tiny-llama"),  # by name: the same ARN
                 lambda: runtime.converse(modelId=arn, messages=[{"role": "user", "content": [{"text": "hi"}]}])):
        with pytest.raises(ClientError) as caught:
            call()
        error = caught.value.response["Error"]
        assert error["Code"] == "AccessDeniedException" and arn in error["Message"]
    assert [m["modelArn"] for m in bedrock.list_imported_models()["modelSummaries"]] == [arn]


def test_another_account_cannot_reach_it(server, imported):
    created = json.loads(outcrop(server.data_dir, "iam", "create-account", "--name", "tenant-b"))
    key = (created["AccessKeyId"], created["SecretAccessKey"])
    bedrock, runtime = server.client("bedrock", key=key), server.client("bedrock-runtime", key=key)
    arn = imported["importedModelArn"]
    for call in (lambda: bedrock.get_imported_model(modelIdentifier=arn),
                 lambda: bedrock.delete_imported_model(modelIdentifier=arn),
                 lambda: bedrock.get_model_import_job(jobIdentifier=imported["jobArn"])):
        with pytest.raises(bedrock.exceptions.ResourceNotFoundException):
            call()
    with pytest.raises(runtime.exceptions.ValidationException, match="model identifier is invalid"):
        runtime.converse(modelId=arn, messages=[{"role": "user", "content": [{"text": "hi"}]}])
    assert bedrock.list_imported_models()["modelSummaries"] == []


def test_deleted_it_is_gone_everywhere(server, imported):
    bedrock = server.client("bedrock")
    runtime = server.client("bedrock-runtime")
    arn = imported["importedModelArn"]
    with pytest.raises(bedrock.exceptions.ConflictException, match="imported model named tiny-llama already"):
        bedrock.create_model_import_job(jobName="import-again", importedModelName="tiny-llama",
                                        roleArn=imported["roleArn"], modelDataSource=imported["modelDataSource"])
    with pytest.raises(bedrock.exceptions.ConflictException, match="job named import-tiny-llama already"):
        create(bedrock, imported["roleArn"], "tiny/", "tiny-llama")
    home = next((server.data_dir / "imported-models").glob(f"*/{arn.rsplit('/', 1)[1]}"))
    bedrock.delete_imported_model(modelIdentifier=arn)
    assert not home.exists()
    with pytest.raises(bedrock.exceptions.ResourceNotFoundException):
        bedrock.get_imported_model(modelIdentifier=arn)
    with pytest.raises(runtime.exceptions.ValidationException, match="model identifier is invalid"):
        runtime.converse(modelId=arn, messages=[{"role": "user", "content": [{"text": "hi"}]}])
    assert bedrock.list_imported_models()["modelSummaries"] == []
    # The job's record stays, as Bedrock's does.
    assert bedrock.get_model_import_job(jobIdentifier=imported["jobArn"])["status"] == "Completed"
