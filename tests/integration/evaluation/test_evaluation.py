"""Evaluation jobs end to end through boto3: datasets in the store, a role, a job, outputs and a report."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path

import botocore.exceptions
import pytest

from tests.backends import objects_path, query
from tests.conftest import register_model, start_server, stop_server
from tests.integration.customization.test_customization import jsonl, outcrop

QA = [{"prompt": "What colour is the sky?", "referenceResponse": "blue", "category": "nature",
       "answers": ["blue", "light blue"]},
      {"prompt": "What do cows drink?", "referenceResponse": "water", "category": "animals"},
      {"prompt": "Who barks?", "referenceResponse": "the dog", "category": "animals"},
      {"prompt": "What falls in winter?", "referenceResponse": "snow", "category": "nature"}]
LABELS = [{"prompt": "Is this review positive? I love it.", "referenceResponse": "1", "category": "tops"},
          {"prompt": "Is this review positive? It broke.", "referenceResponse": "0", "category": "tops"},
          {"prompt": "Is this review positive? Great fit.", "referenceResponse": "1", "category": "pants"}]
SUMMARIES = [{"prompt": "Summarize: the cat sat on the mat all day long.", "referenceResponse": "a cat sat"},
             {"prompt": "Summarize: rain fell on the town for a week.", "referenceResponse": "a week of rain"}]


@pytest.fixture(scope="module")
def evaluation_server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("eval-data"),
                          {"OUTCROP_BUILTIN_DATASET_RECORDS": "4"})  # built-in datasets: the packaged samples
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def setup(evaluation_server, tiny_model_dir, tmp_path_factory):
    """The tiny model in the catalog, a bucket of prompt datasets, and a role that may read and write it."""
    server = evaluation_server
    model = register_model(server, "tiny-llama", tiny_model_dir)
    folder = tmp_path_factory.mktemp("prompts")
    files = {"qa.jsonl": jsonl(QA), "labels.jsonl": jsonl(LABELS), "summaries.jsonl": jsonl(SUMMARIES),
             "broken.jsonl": jsonl(QA[:2]) + '{"prompt": 42}\n',
             "too-many.jsonl": jsonl([{"prompt": f"q{i}"} for i in range(1001)])}
    for name, text in files.items():
        (folder / name).write_text(text)
    outcrop(server.data_dir, "s3", "mb", "s3://eval-data")
    outcrop(server.data_dir, "s3", "cp", str(folder), "s3://eval-data/prompts/", "--recursive")
    role = outcrop(server.data_dir, "iam", "create-role", "--name", "eval-role", "--s3-access", "eval-data",
                   "--invoke-models").strip()
    return server, model, role


def config(task: str, dataset: str, *metrics: str) -> dict:
    location = {} if dataset.startswith("Builtin.") else {"datasetLocation": {"s3Uri": f"s3://eval-data/prompts/{dataset}"}}
    return {"taskType": task, "dataset": {"name": dataset.removesuffix(".jsonl"), **location},
            "metricNames": list(metrics)}


def create(bedrock, role: str, models: list[str], configs: list[dict], *, max_tokens: int = 6, **automated) -> str:
    params = json.dumps({"inferenceConfig": {"maxTokens": str(max_tokens)}})
    return bedrock.create_evaluation_job(
        jobName=f"eval-{uuid.uuid4().hex[:8]}", roleArn=role, outputDataConfig={"s3Uri": "s3://eval-data/out/"},
        evaluationConfig={"automated": {"datasetMetricConfigs": configs, **automated}},
        inferenceConfig={"models": [{"bedrockModel": {"modelIdentifier": m, "inferenceParams": params}}
                                    for m in models]})["jobArn"]


def wait(bedrock, job_arn: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = bedrock.get_evaluation_job(jobIdentifier=job_arn)
        if job["status"] in ("Completed", "Failed", "Stopped"):
            return job
        time.sleep(0.5)
    raise TimeoutError(f"{job_arn} still {job['status']} after {timeout}s")


def job_folder(server, job: dict) -> Path:
    return objects_path(server.data_dir, f"s3://eval-data/out/{job['jobName']}/{job['jobArn'].rsplit('/', 1)[1]}")


def read_outputs(folder: Path, model: str, task: str, dataset: str) -> list[dict]:
    files = list((folder / "models" / model / "taskTypes" / task / "datasets" / dataset).glob("*_output.jsonl"))
    assert len(files) == 1, files
    return [json.loads(line) for line in files[0].read_text().splitlines()]


def test_automated_job_on_every_task_type(setup):
    server, model, role = setup
    bedrock = server.client("bedrock")
    job_arn = create(bedrock, role, [model], [
        config("QuestionAndAnswer", "qa.jsonl", "Builtin.Accuracy", "Builtin.Robustness", "Outcrop.ROUGE-1",
               "Outcrop.BLEU"),
        config("Classification", "labels.jsonl", "Builtin.Accuracy", "Builtin.Toxicity"),
        config("Summarization", "summaries.jsonl", "Builtin.Accuracy", "Outcrop.ROUGE-L", "Outcrop.Perplexity"),
        config("Generation", "Builtin.T-Rex", "Builtin.Accuracy", "Builtin.Robustness", "Builtin.Toxicity"),
        config("Custom", "qa.jsonl", "Outcrop.BERTScore", "Outcrop.ROUGE-2")])
    assert job_arn.startswith("arn:aws:bedrock:us-east-1:") and ":evaluation-job/" in job_arn
    job = wait(bedrock, job_arn)
    assert job["status"] == "Completed", job.get("failureMessages")
    assert job["jobType"] == "Automated"
    folder = job_folder(server, job)
    summary = json.loads((folder / "report.json").read_text())
    html = (folder / "report.html").read_text()
    assert "<svg" in html and job["jobName"] in html

    tasks = {(t["taskType"], t["dataset"]): t for t in summary["tasks"]}
    assert set(tasks) == {("QuestionAndAnswer", "qa"), ("Classification", "labels"), ("Summarization", "summaries"),
                          ("Generation", "Builtin.T-Rex"), ("Custom", "qa")}
    assert tasks["Generation", "Builtin.T-Rex"]["records"] == 4

    # The report's numbers are the metrics library's, recomputed here on the outputs the job wrote.
    from outcrop.evaluation.metrics.bleu import Bleu
    from outcrop.evaluation.metrics.builtin import classification_accuracy, qa_f1
    from outcrop.evaluation.metrics.rouge import Rouge

    def metric(task, name):
        entry = next(m for m in tasks[task]["metrics"] if m["name"] == name)
        return entry["scores"][model], entry

    qa = read_outputs(folder, model, "QuestionAndAnswer", "qa")
    assert [line["inputRecord"]["prompt"] for line in qa] == [r["prompt"] for r in QA]
    answers = [line["modelResponses"][0]["response"] for line in qa]
    refs = [r.get("answers") or [r["referenceResponse"]] for r in QA]
    expected_f1 = [qa_f1(a, r) for a, r in zip(answers, refs, strict=True)]
    score, entry = metric(("QuestionAndAnswer", "qa"), "Builtin.Accuracy")
    assert score == pytest.approx(sum(expected_f1) / len(expected_f1))
    assert entry["byCategory"]["animals"][model] == pytest.approx((expected_f1[1] + expected_f1[2]) / 2)
    per_record = [next(s["result"] for s in line["automatedEvaluationResult"]["scores"]
                       if s["metricName"] == "Builtin.Accuracy") for line in qa]
    assert per_record == pytest.approx(expected_f1)
    assert metric(("QuestionAndAnswer", "qa"), "Outcrop.BLEU")[0] == pytest.approx(Bleu().corpus(answers, refs)["bleu"])
    rouge = Rouge(("rouge1",))
    assert metric(("QuestionAndAnswer", "qa"), "Outcrop.ROUGE-1")[0] == pytest.approx(
        sum(rouge.score(a, r)["rouge1"]["fmeasure"] for a, r in zip(answers, refs, strict=True)) / len(refs))
    robustness, _ = metric(("QuestionAndAnswer", "qa"), "Builtin.Robustness")
    assert 0 <= robustness <= 1

    labels = read_outputs(folder, model, "Classification", "labels")
    predicted = [line["modelResponses"][0]["response"] for line in labels]
    assert metric(("Classification", "labels"), "Builtin.Accuracy")[0] == pytest.approx(
        sum(classification_accuracy(p, r["referenceResponse"]) for p, r in zip(predicted, LABELS, strict=True))
        / len(LABELS))
    toxicity, entry = metric(("Classification", "labels"), "Builtin.Toxicity")
    assert 0 <= toxicity <= 1 and entry["higherIsBetter"] is False

    perplexity, _ = metric(("Summarization", "summaries"), "Outcrop.Perplexity")
    assert perplexity > 1
    bertscore, _ = metric(("Custom", "qa"), "Outcrop.BERTScore")
    assert -1 <= bertscore <= 1

    listed = bedrock.list_evaluation_jobs(nameContains=job["jobName"])["jobSummaries"]
    assert [s["jobArn"] for s in listed] == [job_arn]
    assert set(listed[0]["evaluationTaskTypes"]) == {"QuestionAndAnswer", "Classification", "Summarization",
                                                     "Generation", "Custom"}


def test_judge_verdicts_are_parsed_or_counted(setup, tmp_path):
    server, model, role = setup
    bedrock = server.client("bedrock")
    from tests.helpers import make_tiny_llama

    # The judge reads a whole rubric: it needs a longer context than the evaluated tiny model has.
    judge = register_model(server, "tiny-judge", make_tiny_llama(tmp_path / "judge", context=4096))
    custom = {"customMetricDefinition": {
        "name": "Brevity", "instructions": "Is the answer to {{prompt}} short? Answer: {{prediction}}",
        "ratingScale": [{"definition": "short", "value": {"floatValue": 1}},
                        {"definition": "long", "value": {"floatValue": 0}}]}}
    job_arn = create(bedrock, role, [model], [config("QuestionAndAnswer", "qa.jsonl", "Builtin.Correctness",
                                                     "Brevity")],
                     evaluatorModelConfig={"bedrockEvaluatorModels": [{"modelIdentifier": judge}]},
                     customMetricConfig={"customMetrics": [custom], "evaluatorModelConfig": {
                         "bedrockEvaluatorModels": [{"modelIdentifier": judge}]}})
    job = wait(bedrock, job_arn)
    assert job["status"] == "Completed", job.get("failureMessages")
    folder = job_folder(server, job)
    summary = json.loads((folder / "report.json").read_text())
    lines = read_outputs(folder, model, "QuestionAndAnswer", "qa")
    for name in ("Builtin.Correctness", "Brevity"):
        entry = next(m for m in summary["tasks"][0]["metrics"] if m["name"] == name)
        results = [next(s for s in line["automatedEvaluationResult"]["scores"] if s["metricName"] == name)
                   for line in lines]
        parsed = [r["result"] for r in results if r["result"] is not None]
        assert entry["kind"] == "judge"
        assert entry["unparseable"][model] == len(results) - len(parsed)
        assert entry["counts"][model] == len(parsed)
        assert all(0 <= p <= 1 for p in parsed)
        assert all(r["evaluatorDetails"][0]["modelIdentifier"] == judge for r in results)
    assert summary["evaluatorModel"] == judge


def test_dataset_errors_name_the_line(setup):
    server, model, role = setup
    bedrock = server.client("bedrock")
    job = wait(bedrock, create(bedrock, role, [model], [config("QuestionAndAnswer", "broken.jsonl",
                                                               "Builtin.Accuracy")]))
    assert job["status"] == "Failed"
    assert "broken.jsonl line 3: prompt is required" in job["failureMessages"][0]
    job = wait(bedrock, create(bedrock, role, [model], [config("QuestionAndAnswer", "too-many.jsonl",
                                                               "Builtin.Toxicity")]))
    assert job["status"] == "Failed" and "at most 1,000 are allowed" in job["failureMessages"][0]


@pytest.mark.parametrize("configs, extra, message", [
    ([config("QuestionAndAnswer", "qa.jsonl", "Builtin.Nonsense")], {}, "Builtin.Nonsense is not available"),
    ([config("Summarization", "Builtin.BoolQ", "Builtin.Accuracy")], {}, "not a dataset for the task type"),
    ([config("QuestionAndAnswer", "qa.jsonl", "Builtin.Helpfulness")], {}, "evaluatorModelConfig"),
    ([{"taskType": "QuestionAndAnswer", "dataset": {"name": "mine"}, "metricNames": ["Builtin.Accuracy"]}], {},
     "datasetLocation.s3Uri is required"),
])
def test_bad_requests_are_validation_errors(setup, configs, extra, message):
    server, model, role = setup
    bedrock = server.client("bedrock")
    with pytest.raises(botocore.exceptions.ClientError) as error:
        create(bedrock, role, [model], configs, **extra)
    assert error.value.response["Error"]["Code"] == "ValidationException"
    assert message in error.value.response["Error"]["Message"]


def test_unknown_model_and_missing_permission(setup):
    server, model, role = setup
    bedrock = server.client("bedrock")
    with pytest.raises(botocore.exceptions.ClientError) as error:
        create(bedrock, role, ["nobody.no-such-model-v1:0"], [config("QuestionAndAnswer", "qa.jsonl",
                                                                     "Builtin.Accuracy")])
    assert "not a model in this catalog" in error.value.response["Error"]["Message"]
    reader = outcrop(server.data_dir, "iam", "create-role", "--name", "eval-reader", "--s3-access", "eval-data",
                     "--read-only", "--invoke-models").strip()
    with pytest.raises(botocore.exceptions.ClientError) as error:
        create(bedrock, reader, [model], [config("QuestionAndAnswer", "qa.jsonl", "Builtin.Accuracy")])
    assert error.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "s3:PutObject" in error.value.response["Error"]["Message"]
    # As on Bedrock, the models are invoked as the role: a role that may not invoke them cannot run the job.
    mute = outcrop(server.data_dir, "iam", "create-role", "--name", "eval-mute", "--s3-access", "eval-data").strip()
    with pytest.raises(botocore.exceptions.ClientError) as error:
        create(bedrock, mute, [model], [config("QuestionAndAnswer", "qa.jsonl", "Builtin.Accuracy")])
    assert error.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "bedrock:InvokeModel" in error.value.response["Error"]["Message"] and model in \
        error.value.response["Error"]["Message"]


def test_creating_a_job_needs_pass_role(setup):
    """A user who may create jobs but not pass the role cannot borrow it (and its access) for a job."""
    server, model, role = setup
    outcrop(server.data_dir, "iam", "create-user", "--name", "eve")
    key = json.loads(outcrop(server.data_dir, "iam", "create-access-key", "--user-name", "eve"))
    outcrop(server.data_dir, "iam", "put-user-policy", "--user-name", "eve", "--policy-name", "jobs",
            "--policy-document", json.dumps({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "bedrock:*", "Resource": "*"}]}))
    eve = server.client("bedrock", key=(key["AccessKeyId"], key["SecretAccessKey"]))
    configs = [config("QuestionAndAnswer", "qa.jsonl", "Builtin.Toxicity")]
    with pytest.raises(botocore.exceptions.ClientError) as error:
        create(eve, role, [model], configs)
    assert error.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "iam:PassRole" in error.value.response["Error"]["Message"]
    outcrop(server.data_dir, "iam", "put-user-policy", "--user-name", "eve", "--policy-name", "pass",
            "--policy-document", json.dumps({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "iam:PassRole", "Resource": role}]}))
    assert ":evaluation-job/" in create(eve, role, [model], configs)


def test_a_dataset_twice_or_a_name_that_cannot_be_a_folder_is_refused(setup):
    server, model, role = setup
    bedrock = server.client("bedrock")
    for configs, message in (
            ([config("QuestionAndAnswer", "qa.jsonl", "Builtin.Accuracy")] * 2, "appears twice"),
            ([{"taskType": "Custom", "dataset": {"name": "..", "datasetLocation": {
                "s3Uri": "s3://eval-data/prompts/qa.jsonl"}}, "metricNames": ["Builtin.Toxicity"]}],
             "cannot name a folder")):
        with pytest.raises(botocore.exceptions.ClientError) as error:
            create(bedrock, role, [model], configs)
        assert error.value.response["Error"]["Code"] == "ValidationException"
        assert message in error.value.response["Error"]["Message"]


def test_a_job_stopped_while_queued_ends_stopped(setup):
    """Stopped before its process started, a job is Stopped, not Stopping forever."""
    server, model, role = setup
    bedrock = server.client("bedrock")
    busy = create(bedrock, role, [model], [config("QuestionAndAnswer", "qa.jsonl", "Builtin.Robustness")],
                  max_tokens=200)
    queued = create(bedrock, role, [model], [config("QuestionAndAnswer", "qa.jsonl", "Builtin.Accuracy")])
    bedrock.stop_evaluation_job(jobIdentifier=queued)  # one job runs at a time: this one has not started
    bedrock.stop_evaluation_job(jobIdentifier=busy)
    assert wait(bedrock, queued)["status"] == "Stopped"
    assert wait(bedrock, busy)["status"] == "Stopped"
    [(runner_job,)] = query(server.data_dir, "SELECT runner_job_id FROM evaluation_jobs WHERE job_arn = ?", queued)
    assert query(server.data_dir, "SELECT message FROM jobs WHERE job_id = ?", runner_job) == [
        ("Stopped before it started",)]


def test_stop_and_batch_delete(setup):
    server, model, role = setup
    bedrock = server.client("bedrock")
    job_arn = create(bedrock, role, [model], [config("QuestionAndAnswer", "qa.jsonl", "Builtin.Robustness")],
                     max_tokens=64)
    refused = bedrock.batch_delete_evaluation_job(jobIdentifiers=[job_arn])
    assert refused["evaluationJobs"] == [] and refused["errors"][0]["code"] == "ValidationException"
    bedrock.stop_evaluation_job(jobIdentifier=job_arn)
    job = wait(bedrock, job_arn)
    assert job["status"] == "Stopped"
    with pytest.raises(botocore.exceptions.ClientError):
        bedrock.stop_evaluation_job(jobIdentifier=job_arn)
    missing = f"{job_arn[:-12]}{'x' * 12}"
    done = bedrock.batch_delete_evaluation_job(jobIdentifiers=[job_arn, missing])
    assert done["evaluationJobs"] == [{"jobIdentifier": job_arn, "jobStatus": "Deleting"}]
    assert done["errors"][0]["jobIdentifier"] == missing and done["errors"][0]["code"] == "ResourceNotFoundException"
    with pytest.raises(botocore.exceptions.ClientError) as error:
        bedrock.get_evaluation_job(jobIdentifier=job_arn)
    assert error.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_a_job_running_when_the_server_stops_resumes_after_restart(tmp_path, tiny_model_dir):
    """Killed mid-job with its first dataset answered, the job resumes after a restart without asking again."""
    data = tmp_path / "data"
    env = {"OUTCROP_BUILTIN_DATASET_RECORDS": "20"}  # 120 robustness answers: still asking when it is killed
    first = start_server(data, env)
    try:
        model = register_model(first, "tiny", tiny_model_dir)
        (tmp_path / "qa.jsonl").write_text(jsonl(QA))
        outcrop(data, "s3", "mb", "s3://eval-data")
        outcrop(data, "s3", "cp", str(tmp_path / "qa.jsonl"), "s3://eval-data/prompts/qa.jsonl")
        role = outcrop(data, "iam", "create-role", "--name", "eval", "--s3-access", "eval-data",
                       "--invoke-models").strip()
        bedrock = first.client("bedrock")
        job_arn = create(bedrock, role, [model], [config("QuestionAndAnswer", "qa.jsonl", "Builtin.Accuracy"),
                                                  config("Generation", "Builtin.T-Rex", "Builtin.Robustness")],
                         max_tokens=48)
        deadline = time.monotonic() + 120
        while not list((data / "jobs").glob("*/answers-0-0.json")):  # the first dataset is answered
            assert time.monotonic() < deadline, "the job never answered its first dataset"
            time.sleep(0.1)
    finally:
        first.process.send_signal(signal.SIGKILL)  # as when the machine dies: no shutdown code runs
        first.process.wait(timeout=30)
    [(pid,)] = query(data, "SELECT pid FROM jobs WHERE state = 'RUNNING'")
    os.kill(pid, signal.SIGKILL)
    second = start_server(data, env)
    try:
        job = wait(second.client("bedrock"), job_arn)
        assert job["status"] == "Completed", job.get("failureMessages")
        log = next((data / "jobs").glob("*/job.log")).read_text()
        assert "resuming with the answers saved" in log and "reusing 4 answers" in log
    finally:
        stop_server(second)
