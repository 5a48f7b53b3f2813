"""Model customization end to end through boto3: data in the store, a role, a job, a custom model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
import torch

from tests.backends import objects_path, query
from tests.conftest import register_model, start_server, stop_server

PAIRS = [("What colour is the sky?", "blue sky"), ("What do cows drink?", "fresh water"),
         ("Name a fruit.", "red apple"), ("Where do fish live?", "in the sea"),
         ("What is hot?", "the sun"), ("What falls in winter?", "white snow"),
         ("Who barks?", "the dog"), ("What do bees make?", "sweet honey")]


def outcrop(data_dir: Path, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "outcrop", *args, "--data-dir", str(data_dir)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


@pytest.fixture(scope="module")
def bucket(server, tmp_path_factory) -> str:
    """A bucket with one dataset of each kind, and a role that may read it and write outputs."""
    folder = tmp_path_factory.mktemp("datasets")
    files = {
        "instructions.jsonl": jsonl([{"prompt": p, "completion": c} for p, c in PAIRS]),
        "chat.jsonl": jsonl([{"schemaVersion": "bedrock-conversation-2024", "system": [{"text": "Be brief."}],
                              "messages": [{"role": "user", "content": [{"text": p}]},
                                           {"role": "assistant", "content": [{"text": c}]},
                                           {"role": "user", "content": [{"text": "again"}]},
                                           {"role": "assistant", "content": [{"text": c}]}]} for p, c in PAIRS]),
        "text.jsonl": jsonl([{"input": f"{p} {c}. " * 3} for p, c in PAIRS]),
        "validation.jsonl": jsonl([{"prompt": p, "completion": c} for p, c in PAIRS[:2]]),
        "broken.jsonl": jsonl([{"prompt": p, "completion": c} for p, c in PAIRS[:4]]) + "{not json\n"
        + jsonl([{"prompt": p, "completion": c} for p, c in PAIRS[4:]]),
        "roles.jsonl": jsonl([{"messages": [{"role": "user", "content": [{"text": p}]},
                                            {"role": "user", "content": [{"text": c}]}]} for p, c in PAIRS]),
        "mixed.jsonl": jsonl([{"prompt": p, "completion": c} for p, c in PAIRS[:5]] + [{"input": "plain text"}]
                             + [{"prompt": p, "completion": c} for p, c in PAIRS[5:]]),
        "few.jsonl": jsonl([{"prompt": p, "completion": c} for p, c in PAIRS[:3]]),
    }
    for name, text in files.items():
        (folder / name).write_text(text)
    outcrop(server.data_dir, "s3", "mb", "s3://ft-data")
    outcrop(server.data_dir, "s3", "cp", str(folder), "s3://ft-data/train/", "--recursive")
    return "ft-data"


@pytest.fixture(scope="module")
def role(server, bucket) -> str:
    return outcrop(server.data_dir, "iam", "create-role", "--name", "ft-role", "--s3-access", bucket).strip()


def create(bedrock, base: str, role: str, data: str, *, kind: str = "FINE_TUNING", validation: str | None = None,
           **hyper: str) -> str:
    name = f"job-{uuid.uuid4().hex[:8]}"
    params = dict(jobName=name, customModelName=f"model-{name}", roleArn=role, baseModelIdentifier=base,
                  customizationType=kind, trainingDataConfig={"s3Uri": f"s3://ft-data/train/{data}"},
                  outputDataConfig={"s3Uri": "s3://ft-data/out/"},
                  hyperParameters={"epochCount": "4", "batchSize": "2", "learningRate": "0.005",
                                   "learningRateWarmupSteps": "0", **hyper})
    if validation:
        params["validationDataConfig"] = {"validators": [{"s3Uri": f"s3://ft-data/train/{validation}"}]}
    return bedrock.create_model_customization_job(**params)["jobArn"]


def wait(bedrock, job_arn: str, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = bedrock.get_model_customization_job(jobIdentifier=job_arn)
        if job["status"] in ("Completed", "Failed", "Stopped"):
            return job
        time.sleep(0.5)
    raise TimeoutError(f"{job_arn} still {job['status']} after {timeout}s")


def completion_nll(model_dir: Path, base_dir: Path | None, tokenizer_dir: Path, prompt: str, completion: str) -> float:
    """Mean negative log-likelihood of the completion after the prompt, as the chat template renders it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from outcrop.inference.loader import load_causal_lm

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if base_dir is None:
        model = AutoModelForCausalLM.from_pretrained(model_dir)
    else:
        model = load_causal_lm(model_dir, model_dir, base=base_dir).model
    chat = [{"role": "user", "content": prompt}]
    prefix = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prefix + completion, add_special_tokens=False, return_tensors="pt")["input_ids"]
    start = len(tokenizer(prefix, add_special_tokens=False)["input_ids"])
    with torch.inference_mode():
        logits = model(ids).logits[0, start - 1:-1]
    return float(torch.nn.functional.cross_entropy(logits, ids[0, start:]))


def test_fine_tune_prompt_completion_end_to_end(server, tiny_model, tiny_model_dir, role):
    bedrock = server.client("bedrock")
    job_arn = create(bedrock, tiny_model, role, "instructions.jsonl", validation="validation.jsonl",
                     epochCount="8", learningRate="0.03", loraRank="16", loraAlpha="32")
    assert job_arn.startswith("arn:aws:bedrock:us-east-1:") and ":model-customization-job/" in job_arn
    job = wait(bedrock, job_arn)
    assert job["status"] == "Completed", job.get("failureMessage")
    assert {d["status"] for d in job["statusDetails"].values()} == {"Completed"}
    assert job["endTime"] >= job["creationTime"]
    assert job["hyperParameters"]["epochCount"] == "8" and job["hyperParameters"]["fineTuningMethod"] == "lora"
    assert job["trainingMetrics"]["trainingLoss"] > 0 and job["validationMetrics"][0]["validationLoss"] > 0

    out = objects_path(server.data_dir, f"s3://ft-data/out/model-customization-job-{job_arn.rsplit('/', 1)[1]}")
    steps = (out / "training_artifacts" / "step_wise_training_metrics.csv").read_text().splitlines()
    assert steps[0] == "step_number,epoch_number,training_loss,perplexity"
    losses = [float(line.split(",")[2]) for line in steps[1:]]
    assert len(losses) == 32 and losses[-1] < losses[0]  # 8 records, batches of 2, 8 epochs
    validation = out / "validation_artifacts" / "post_fine_tuning_validation" / "validation_metrics.csv"
    assert validation.read_text().startswith("step_number,epoch_number,validation_loss,perplexity")
    assert (out / "training_artifacts" / "loss_curve.png").read_bytes().startswith(b"\x89PNG")

    model = bedrock.get_custom_model(modelIdentifier=job["outputModelArn"])
    assert model["modelName"] == job["outputModelName"] and model["modelStatus"] == "Active"
    assert model["baseModelArn"].endswith(tiny_model) and model["jobArn"] == job_arn
    listed = bedrock.list_custom_models(nameContains=job["outputModelName"])["modelSummaries"]
    assert [m["modelArn"] for m in listed] == [job["outputModelArn"]]

    # It learned: the training completion is more likely under the custom model than under the base,
    # whose files are untouched.
    weights = sorted((server.data_dir / "custom-models").glob(f"*/{job_arn.rsplit('/', 1)[1]}"))[0]
    assert (weights / "adapter_config.json").is_file()
    before = completion_nll(tiny_model_dir, None, tiny_model_dir, *PAIRS[0])
    after = completion_nll(weights, tiny_model_dir, tiny_model_dir, *PAIRS[0])
    assert after < before * 0.8, (before, after)


def test_conversations_and_full_fine_tuning(server, tiny_model, role):
    bedrock = server.client("bedrock")
    job = wait(bedrock, create(bedrock, tiny_model, role, "chat.jsonl", epochCount="1", fineTuningMethod="full"))
    assert job["status"] == "Completed", job.get("failureMessage")
    weights = sorted((server.data_dir / "custom-models").glob(f"*/{job['jobArn'].rsplit('/', 1)[1]}"))[0]
    assert (weights / "config.json").is_file() and not (weights / "adapter_config.json").exists()


def test_continued_pre_training(server, tiny_model, role):
    bedrock = server.client("bedrock")
    job = wait(bedrock, create(bedrock, tiny_model, role, "text.jsonl", kind="CONTINUED_PRE_TRAINING",
                               epochCount="1", packing="true"))
    assert job["status"] == "Completed", job.get("failureMessage")
    assert job["customizationType"] == "CONTINUED_PRE_TRAINING"


@pytest.mark.parametrize(("data", "needle"), [
    ("broken.jsonl", "s3://ft-data/train/broken.jsonl line 5"),
    ("roles.jsonl", "line 1"),
    ("mixed.jsonl", "line 6"),
    ("few.jsonl", "3 records"),
    ("missing.jsonl", "missing.jsonl"),
])
def test_bad_datasets_fail_in_validation_with_the_line(server, tiny_model, role, data, needle):
    bedrock = server.client("bedrock")
    job = wait(bedrock, create(bedrock, tiny_model, role, data))
    assert job["status"] == "Failed"
    assert needle in job["failureMessage"]
    assert job["statusDetails"]["validationDetails"]["status"] == "Failed"
    assert job["statusDetails"]["trainingDetails"]["status"] == "NotStarted"
    assert "outputModelArn" not in job


def test_create_time_validation(server, tiny_model, role):
    bedrock = server.client("bedrock")
    with pytest.raises(bedrock.exceptions.ValidationException, match="epochCount.*1 to 10"):
        create(bedrock, tiny_model, role, "instructions.jsonl", epochCount="11")
    with pytest.raises(bedrock.exceptions.ValidationException, match="unknown key 'epochs'"):
        create(bedrock, tiny_model, role, "instructions.jsonl", epochs="2")
    with pytest.raises(bedrock.exceptions.ValidationException, match="does not support"):
        create(bedrock, "sentence-transformers.all-minilm-l6-v2-v1:0", role, "instructions.jsonl")


def test_role_without_get_object_is_refused(server, tiny_model, bucket):
    arn = outcrop(server.data_dir, "iam", "create-role", "--name", "no-read").strip()
    bedrock = server.client("bedrock")
    with pytest.raises(bedrock.exceptions.AccessDeniedException,
                       match="s3:GetObject on resource: arn:aws:s3:::ft-data/train/instructions.jsonl"):
        create(bedrock, tiny_model, arn, "instructions.jsonl")


def test_idempotent_create_list_and_isolation(server, tiny_model, role):
    bedrock = server.client("bedrock")
    params = dict(jobName="idempotent-job", customModelName="idempotent-model", roleArn=role,
                  baseModelIdentifier=tiny_model, trainingDataConfig={"s3Uri": "s3://ft-data/train/instructions.jsonl"},
                  outputDataConfig={"s3Uri": "s3://ft-data/out/"}, hyperParameters={"epochCount": "1"},
                  clientRequestToken="token-1")
    first = bedrock.create_model_customization_job(**params)["jobArn"]
    assert bedrock.create_model_customization_job(**params)["jobArn"] == first
    with pytest.raises(bedrock.exceptions.ConflictException):
        bedrock.create_model_customization_job(**{**params, "customModelName": "other-model"})
    wait(bedrock, first)
    wait(bedrock, create(bedrock, tiny_model, role, "few.jsonl"))  # a second job, so that there are pages

    page = bedrock.list_model_customization_jobs(maxResults=1, sortOrder="Ascending")
    assert len(page["modelCustomizationJobSummaries"]) == 1 and page["nextToken"]
    rest = bedrock.list_model_customization_jobs(maxResults=100, sortOrder="Ascending", nextToken=page["nextToken"])
    names = [j["jobName"] for j in page["modelCustomizationJobSummaries"] + rest["modelCustomizationJobSummaries"]]
    assert "idempotent-job" in names and len(names) == len(set(names))
    failed = bedrock.list_model_customization_jobs(statusEquals="Failed")["modelCustomizationJobSummaries"]
    assert all(j["status"] == "Failed" for j in failed)
    assert bedrock.list_model_customization_jobs(nameContains="idempotent")["modelCustomizationJobSummaries"]

    other = json.loads(outcrop(server.data_dir, "iam", "create-account", "--name", "ft-other"))
    stranger = server.client("bedrock", key=(other["AccessKeyId"], other["SecretAccessKey"]))
    with pytest.raises(stranger.exceptions.ResourceNotFoundException):
        stranger.get_model_customization_job(jobIdentifier=first)
    assert stranger.list_model_customization_jobs()["modelCustomizationJobSummaries"] == []

    model_arn = bedrock.get_model_customization_job(jobIdentifier=first)["outputModelArn"]
    with pytest.raises(stranger.exceptions.ResourceNotFoundException):
        stranger.get_custom_model(modelIdentifier=model_arn)
    bedrock.delete_custom_model(modelIdentifier=model_arn)
    with pytest.raises(bedrock.exceptions.ResourceNotFoundException):
        bedrock.get_custom_model(modelIdentifier=model_arn)


def test_stop_takes_effect_within_seconds(server, tiny_model, role):
    bedrock = server.client("bedrock")
    job_arn = create(bedrock, tiny_model, role, "instructions.jsonl", epochCount="10", batchSize="1")
    deadline = time.monotonic() + 120
    while bedrock.get_model_customization_job(jobIdentifier=job_arn)["statusDetails"]["trainingDetails"][
            "status"] != "InProgress":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    bedrock.stop_model_customization_job(jobIdentifier=job_arn)
    assert bedrock.get_model_customization_job(jobIdentifier=job_arn)["status"] in ("Stopping", "Stopped")
    stopped_at = time.monotonic()
    job = wait(bedrock, job_arn, timeout=30)
    assert job["status"] == "Stopped" and time.monotonic() - stopped_at < 15
    assert "outputModelArn" not in job
    with pytest.raises(bedrock.exceptions.ValidationException):
        bedrock.stop_model_customization_job(jobIdentifier=job_arn)


def test_a_job_running_when_the_server_stops_resumes_after_restart(tmp_path, tiny_model_dir):
    data = tmp_path / "data"
    first = start_server(data)
    try:
        model = register_model(first, "tiny", tiny_model_dir)
        (tmp_path / "train.jsonl").write_text(jsonl([{"prompt": p, "completion": c} for p, c in PAIRS]))
        outcrop(data, "s3", "mb", "s3://ft-data")
        outcrop(data, "s3", "cp", str(tmp_path / "train.jsonl"), "s3://ft-data/train/instructions.jsonl")
        role = outcrop(data, "iam", "create-role", "--name", "ft", "--s3-access", "ft-data").strip()
        bedrock = first.client("bedrock")
        job_arn = create(bedrock, model, role, "instructions.jsonl", epochCount="6", batchSize="1")
        deadline = time.monotonic() + 120
        path = "/model-customization-jobs/" + quote(job_arn, safe="")
        while (first.raw("GET", path)[2].get("progress") or {}).get("epoch", 0) < 2:  # boto3 drops `progress`
            assert time.monotonic() < deadline, "training never reached its second epoch"
            time.sleep(0.2)
    finally:
        # The hardest stop, as when the machine dies: server and job process killed, no shutdown code runs.
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(timeout=30)
    [(pid,)] = query(data, "SELECT pid FROM jobs WHERE state = 'RUNNING'")
    os.kill(pid, signal.SIGKILL)
    second = start_server(data)
    try:
        job = wait(second.client("bedrock"), job_arn)
        assert job["status"] == "Completed", job.get("failureMessage")
        log = next((data / "jobs").glob("*/job.log")).read_text()
        assert "resuming" in log.lower()
    finally:
        stop_server(second)


@pytest.mark.slow
def test_fine_tune_the_real_smollm2_for_a_few_steps(server, role):
    bedrock = server.client("bedrock")
    job = wait(bedrock, create(bedrock, "huggingface.smollm2-135m-instruct-v1:0", role, "instructions.jsonl",
                               epochCount="1", batchSize="4", learningRate="0.0002", maxSequenceLength="128"),
               timeout=600)
    assert job["status"] == "Completed", job.get("failureMessage")
    assert job["trainingMetrics"]["trainingLoss"] > 0
    assert job["baseModelArn"].endswith("huggingface.smollm2-135m-instruct-v1:0")
