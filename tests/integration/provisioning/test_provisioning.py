"""Provisioned throughput through boto3: fine-tune, provision, converse by ARN, throttle, update, delete."""

from __future__ import annotations

import json
import threading
import time

import pytest

from tests.conftest import register_model, start_server, stop_server
from tests.integration.customization.test_customization import PAIRS, create, jsonl, outcrop, wait

QUESTION = [{"role": "user", "content": [{"text": PAIRS[0][0]}]}]


@pytest.fixture(scope="module")
def pt_server(tmp_path_factory, tiny_model_dir):
    """A server where one model unit buys one sequence and a full line throttles at once."""
    data = tmp_path_factory.mktemp("pt-data")
    running = start_server(data, {"OUTCROP_MU_CONCURRENT_SEQUENCES": "1", "OUTCROP_PROVISIONED_QUEUE_SECONDS": "0.02"})
    running.model = register_model(running, "tiny", tiny_model_dir)
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def custom_models(pt_server, tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("pt-datasets")
    (folder / "train.jsonl").write_text(jsonl([{"prompt": p, "completion": c} for p, c in PAIRS]))
    outcrop(pt_server.data_dir, "s3", "mb", "s3://ft-data")
    outcrop(pt_server.data_dir, "s3", "cp", str(folder / "train.jsonl"), "s3://ft-data/train/instructions.jsonl")
    role = outcrop(pt_server.data_dir, "iam", "create-role", "--name", "ft", "--s3-access", "ft-data").strip()
    bedrock = pt_server.client("bedrock")
    jobs = [create(bedrock, pt_server.model, role, "instructions.jsonl", epochCount="1", seed=str(seed))
            for seed in (1, 2)]
    models = []
    for job_arn in jobs:
        job = wait(bedrock, job_arn)
        assert job["status"] == "Completed", job.get("failureMessage")
        models.append(job["outputModelArn"])
    return models


def wait_in_service(bedrock, arn: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = bedrock.get_provisioned_model_throughput(provisionedModelId=arn)
        if got["status"] in ("InService", "Failed"):
            return got
        time.sleep(0.2)
    raise TimeoutError(f"{arn} is still {got['status']}")


def burst(client, arn: str, callers: int) -> tuple[int, int]:
    """`callers` simultaneous Converse calls: (how many answered, how many were throttled)."""
    results: list[str] = []

    def call() -> None:
        try:
            client.converse(modelId=arn, messages=QUESTION, inferenceConfig={"maxTokens": 120, "temperature": 1})
            results.append("ok")
        except client.exceptions.ThrottlingException:
            results.append("throttled")
    threads = [threading.Thread(target=call) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results.count("ok"), results.count("throttled")


def test_a_custom_model_is_served_only_through_provisioned_throughput(pt_server, custom_models):
    runtime = pt_server.client("bedrock-runtime")
    # Bedrock refuses a custom model ARN on the runtime (here botocore's own pattern already does).
    with pytest.raises(runtime.exceptions.ValidationException):
        runtime.converse(modelId=custom_models[0], messages=QUESTION, inferenceConfig={"maxTokens": 3})
    with pytest.raises(runtime.exceptions.ValidationException):
        runtime.invoke_model(modelId=custom_models[0], body=json.dumps({"prompt": "hi", "max_gen_len": 2}))


def test_provision_converse_throttle_update_delete(pt_server, custom_models):
    bedrock, runtime = pt_server.client("bedrock"), pt_server.client("bedrock-runtime")
    arn = bedrock.create_provisioned_model_throughput(
        modelUnits=1, provisionedModelName="support-bot", modelId=custom_models[0])["provisionedModelArn"]
    assert ":provisioned-model/" in arn
    got = wait_in_service(bedrock, arn)
    assert got["status"] == "InService", got.get("failureMessage")
    assert got["modelArn"] == custom_models[0] and got["modelUnits"] == 1
    assert got["foundationModelArn"].endswith(pt_server.model)
    cost = pt_server.raw("GET", "/provisioned-model-throughput/" + arn.replace(":", "%3A").replace("/", "%2F"))[2]
    assert cost["cost"]["modelUnitHours"] >= 0 and cost["cost"]["currency"] == "USD"
    assert [p["provisionedModelArn"] for p in
            bedrock.list_provisioned_model_throughputs(nameContains="support")["provisionedModelSummaries"]] == [arn]

    answer = runtime.converse(modelId=arn, messages=QUESTION, inferenceConfig={"maxTokens": 4, "temperature": 0})
    assert answer["usage"]["outputTokens"] >= 1

    # At capacity (1 model unit = 1 sequence here) callers beyond it are throttled; retries get through.
    ok, throttled = burst(pt_server.client("bedrock-runtime"), arn, 8)
    assert throttled > 0 and ok > 0
    ok, throttled = burst(pt_server.client("bedrock-runtime", retries={"mode": "standard", "max_attempts": 10}),
                          arn, 4)
    assert (ok, throttled) == (4, 0)

    # The custom model cannot be deleted while it is provisioned.
    with pytest.raises(bedrock.exceptions.ValidationException, match="support-bot"):
        bedrock.delete_custom_model(modelIdentifier=custom_models[0])

    # Update to the second custom model while a client keeps calling: no call fails.
    failures, calls, stop = [], [0], threading.Event()

    def keep_calling() -> None:
        client = pt_server.client("bedrock-runtime", retries={"mode": "standard", "max_attempts": 10})
        while not stop.is_set():
            try:
                client.converse(modelId=arn, messages=QUESTION, inferenceConfig={"maxTokens": 2})
                calls[0] += 1
            except Exception as exc:  # noqa: BLE001 - every failure is the finding
                failures.append(exc)
    caller = threading.Thread(target=keep_calling)
    caller.start()
    try:
        time.sleep(0.5)
        bedrock.update_provisioned_model_throughput(provisionedModelId=arn, desiredModelId=custom_models[1],
                                                    desiredProvisionedModelName="support-bot-v2")
        updated = wait_in_service(bedrock, arn)
        assert updated["modelArn"] == custom_models[1] and updated["provisionedModelName"] == "support-bot-v2"
        time.sleep(0.5)
    finally:
        stop.set()
        caller.join(timeout=60)
    assert failures == [] and calls[0] > 0

    bedrock.delete_provisioned_model_throughput(provisionedModelId=arn)
    with pytest.raises(runtime.exceptions.ResourceNotFoundException):
        runtime.converse(modelId=arn, messages=QUESTION, inferenceConfig={"maxTokens": 2})
    bedrock.delete_custom_model(modelIdentifier=custom_models[0])  # free again


def test_another_account_cannot_use_the_arn(pt_server, custom_models):
    bedrock = pt_server.client("bedrock")
    arn = bedrock.create_provisioned_model_throughput(
        modelUnits=1, provisionedModelName="private", modelId=custom_models[1])["provisionedModelArn"]
    wait_in_service(bedrock, arn)
    other = json.loads(outcrop(pt_server.data_dir, "iam", "create-account", "--name", "pt-other"))
    stranger = pt_server.client("bedrock-runtime", key=(other["AccessKeyId"], other["SecretAccessKey"]))
    with pytest.raises(stranger.exceptions.ResourceNotFoundException):
        stranger.converse(modelId=arn, messages=QUESTION, inferenceConfig={"maxTokens": 2})
    stranger_control = pt_server.client("bedrock", key=(other["AccessKeyId"], other["SecretAccessKey"]))
    with pytest.raises(stranger_control.exceptions.ValidationException, match="does not exist in this account"):
        stranger_control.create_provisioned_model_throughput(modelUnits=1, provisionedModelName="steal",
                                                             modelId=custom_models[1])
    bedrock.delete_provisioned_model_throughput(provisionedModelId=arn)


def test_a_commitment_holds_until_an_administrator_forces_it(pt_server):
    bedrock = pt_server.client("bedrock")
    arn = bedrock.create_provisioned_model_throughput(
        modelUnits=2, provisionedModelName="committed", modelId=pt_server.model,
        commitmentDuration="OneMonth")["provisionedModelArn"]
    got = wait_in_service(bedrock, arn)
    assert got["commitmentDuration"] == "OneMonth" and got["commitmentExpirationTime"] > got["creationTime"]
    with pytest.raises(bedrock.exceptions.ValidationException, match="commitment"):
        bedrock.delete_provisioned_model_throughput(provisionedModelId=arn)

    def force(request, **_):
        request.headers["x-outcrop-force-delete"] = "true"
    bedrock.meta.events.register("before-sign.bedrock.DeleteProvisionedModelThroughput", force)
    bedrock.delete_provisioned_model_throughput(provisionedModelId=arn)
    with pytest.raises(bedrock.exceptions.ResourceNotFoundException):
        bedrock.get_provisioned_model_throughput(provisionedModelId=arn)
