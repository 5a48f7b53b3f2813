"""Batch inference end to end through boto3: records in the store, a role, a job, Bedrock's outputs.

One server for the module (two jobs at a time), and the tiny Llama made endless (`make_endless_llama`: every
answer runs to its max_gen_len), so each record costs exactly the tokens it asks for. Every input file is
uploaded once, by the fixture. The last test kills that server and its job mid-batch and starts it again.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.backends import objects_path, query
from tests.conftest import RunningServer, register_model, start_server, stop_server
from tests.helpers import make_endless_llama
from tests.integration.customization.test_customization import outcrop

BUCKET = "batch-data"
ENV = {"OUTCROP_MAX_RUNNING_JOBS": "2"}
RESUMED = [30, 60] + [600] * 8  # max_gen_len of each record of the job the last test kills


def body(prompt: str, tokens: int) -> dict:
    return {"prompt": prompt, "max_gen_len": tokens, "temperature": 0}


def line(record_id: str, model_input: dict) -> str:
    return json.dumps({"recordId": record_id, "modelInput": model_input})


INPUTS = {
    # eight records, a line that is not JSON (line 4) and a body the model refuses (line 10)
    "records.jsonl": [line(f"rec{i:02d}", body(f"Story {i}:", 4 + i)) for i in range(3)]
    + ['{"recordId": "broken", "modelInput": ']
    + [line(f"rec{i:02d}", body(f"Story {i}:", 4 + i)) for i in range(3, 8)]
    + [line("rec99", {"prompt": "x", "max_gen_len": 0})],
    "long.jsonl": [line(f"r{i}", body("Go", 8000)) for i in range(4)],
    "resume.jsonl": [line(f"r{i}", body("Once", n)) for i, n in enumerate(RESUMED)],
}


class Batch:
    """The module's server (replaced by the restart test), its model, a role that may do everything a job needs."""

    def __init__(self, server: RunningServer, model: str, role: str) -> None:
        self.server, self.model, self.role = server, model, role

    @property
    def bedrock(self):
        return self.server.client("bedrock")

    def create(self, name: str, source: str, role: str | None = None) -> str:
        return self.bedrock.create_model_invocation_job(
            jobName=name, roleArn=role or self.role, modelId=self.model,
            inputDataConfig={"s3InputDataConfig": {"s3Uri": f"s3://{BUCKET}/in/{source}"}},
            outputDataConfig={"s3OutputDataConfig": {"s3Uri": f"s3://{BUCKET}/out/"}})["jobArn"]

    def wait(self, arn: str, until=("Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired"),
             timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.bedrock.get_model_invocation_job(jobIdentifier=arn)
            if job["status"] in until:
                return job
            assert time.monotonic() < deadline, f"{arn} still {job['status']}"
            time.sleep(0.2)

    def output(self, arn: str, name: str) -> bytes:
        uri = f"s3://{BUCKET}/out/{arn.rsplit('/', 1)[1]}/"
        return (objects_path(self.server.data_dir, uri) / name).read_bytes()


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    data = tmp_path_factory.mktemp("batch-server")
    server = start_server(data, ENV)
    state = Batch(server, "", "")
    try:
        state.model = register_model(server, "endless", make_endless_llama(tmp_path_factory.mktemp("endless")))
        folder = tmp_path_factory.mktemp("records")
        for name, lines in INPUTS.items():
            (folder / name).write_text("".join(text + "\n" for text in lines))
        outcrop(data, "s3", "mb", f"s3://{BUCKET}")
        outcrop(data, "s3", "cp", str(folder), f"s3://{BUCKET}/in/", "--recursive")
        state.role = outcrop(data, "iam", "create-role", "--name", "batch", "--s3-access", BUCKET,
                             "--invoke-models").strip()
        yield state
    finally:
        stop_server(state.server)


def test_a_batch_job_answers_every_record_and_reports_the_malformed_ones_and_stop_ends_another(batch):
    long_arn = batch.create("stopped-batch", "long.jsonl")  # beside the first job: four answers of 8,000 tokens
    arn = batch.create("first-batch", "records.jsonl")
    assert arn.startswith("arn:aws:bedrock:us-east-1:") and ":model-invocation-job/" in arn

    batch.wait(long_arn, until=("InProgress",))
    batch.bedrock.stop_model_invocation_job(jobIdentifier=long_arn)
    assert batch.bedrock.get_model_invocation_job(jobIdentifier=long_arn)["status"] in ("Stopping", "Stopped")
    stopped_at = time.monotonic()
    stopped = batch.wait(long_arn, timeout=30)
    assert stopped["status"] == "Stopped" and time.monotonic() - stopped_at < 10
    manifest = json.loads(batch.output(long_arn, "manifest.json.out"))
    assert manifest["totalRecordCount"] == 4 and manifest["processedRecordCount"] < 4
    with pytest.raises(batch.bedrock.exceptions.ValidationException, match="only a job that is Submitted"):
        batch.bedrock.stop_model_invocation_job(jobIdentifier=long_arn)

    job = batch.wait(arn)
    assert job["status"] == "Completed", job.get("message")
    assert (job["totalRecordCount"], job["processedRecordCount"], job["successRecordCount"],
            job["errorRecordCount"]) == (10, 10, 8, 2)
    assert job["modelId"] == batch.model and job["timeoutDurationInHours"] == 24
    assert job["jobExpirationTime"] > job["submitTime"] and job["endTime"] >= job["submitTime"]

    lines = [json.loads(text) for text in batch.output(arn, "records.jsonl.out").decode().splitlines()]
    assert [out["recordId"] for out in lines] == [f"rec{i:02d}" for i in range(3)] + [None] + [
        f"rec{i:02d}" for i in range(3, 8)] + ["rec99"]
    answered = [out for out in lines if "modelOutput" in out]
    for i, out in enumerate(answered):
        assert out["modelInput"] == body(f"Story {i}:", 4 + i)
        assert out["modelOutput"]["generation_token_count"] == 4 + i
    broken, refused = lines[3], lines[9]
    assert broken["error"]["errorCode"] == 400 and broken["error"]["errorMessage"].startswith("Line 4: ")
    assert "not valid JSON" in broken["error"]["errorMessage"]
    assert refused["error"]["errorCode"] == 400 and refused["error"]["errorMessage"].startswith("Line 10: ")
    assert "max_gen_len" in refused["error"]["errorMessage"]
    manifest = json.loads(batch.output(arn, "manifest.json.out"))
    assert manifest == {"totalRecordCount": 10, "processedRecordCount": 10, "successRecordCount": 8,
                        "errorRecordCount": 2,
                        "inputTokenCount": sum(a["modelOutput"]["prompt_token_count"] for a in answered),
                        "outputTokenCount": sum(4 + i for i in range(8))}

    # The same greedy answer as InvokeModel gives one by one.
    runtime = batch.server.client("bedrock-runtime", read_timeout=120)
    alone = json.loads(runtime.invoke_model(modelId=batch.model, body=json.dumps(body("Story 5:", 9)))["body"].read())
    assert alone == answered[5]["modelOutput"]
    # Each record's call is billed as the job's (at the batch price).
    billed = query(batch.server.data_dir, "SELECT count(*), sum(output_tokens) FROM usage_records "
                                          "WHERE batch_job_arn = ?", arn)
    assert billed == [(8, sum(4 + i for i in range(8)))]

    job_id = arn.rsplit("/", 1)[1]
    assert batch.bedrock.get_model_invocation_job(jobIdentifier=job_id)["jobArn"] == arn
    listed = batch.bedrock.list_model_invocation_jobs(nameContains="first-batch", statusEquals="Completed")
    assert [j["jobArn"] for j in listed["invocationJobSummaries"]] == [arn]
    with pytest.raises(batch.bedrock.exceptions.ConflictException):
        batch.create("first-batch", "records.jsonl")
    batch.bedrock.tag_resource(resourceARN=arn, tags=[{"key": "team", "value": "search"}])
    assert batch.bedrock.list_tags_for_resource(resourceARN=arn)["tags"] == [{"key": "team", "value": "search"}]


def test_a_role_that_cannot_do_the_job_is_refused(batch):
    data = batch.server.data_dir
    read_only = outcrop(data, "iam", "create-role", "--name", "batch-ro", "--s3-access", BUCKET, "--read-only",
                        "--invoke-models").strip()
    with pytest.raises(batch.bedrock.exceptions.AccessDeniedException, match="s3:PutObject"):
        batch.create("refused-1", "records.jsonl", read_only)
    no_models = outcrop(data, "iam", "create-role", "--name", "batch-nm", "--s3-access", BUCKET).strip()
    with pytest.raises(batch.bedrock.exceptions.AccessDeniedException, match="bedrock:InvokeModel"):
        batch.create("refused-2", "records.jsonl", no_models)
    assert not batch.bedrock.list_model_invocation_jobs(nameContains="refused")["invocationJobSummaries"]


def test_a_job_killed_mid_batch_resumes_without_redoing_finished_records(batch):
    arn = batch.create("resumed-batch", "resume.jsonl")
    data = batch.server.data_dir
    runner_id = pid = None
    deadline = time.monotonic() + 120
    try:
        # Killed as soon as its journal holds two records: whatever the machine's speed, the others are in the batch.
        while True:
            assert time.monotonic() < deadline, "the job never finished two records"
            if pid is None:
                [(runner_id, pid)] = query(data, "SELECT runner_job_id, pid FROM model_invocation_jobs JOIN jobs "
                                                 "ON jobs.job_id = runner_job_id WHERE job_arn = ?", arn)
            else:
                journal = data / "jobs" / runner_id / "finished-records.jsonl"
                if journal.exists() and journal.read_bytes().count(b"\n") >= 2:
                    break
            time.sleep(0.01)
    finally:
        # The hardest stop, as when the machine dies: job process and server killed, no shutdown code runs.
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        batch.server.process.send_signal(signal.SIGKILL)
        batch.server.process.wait(timeout=30)
    finished = {json.loads(text)["k"] for text in journal.read_text().split("\n")[:-1]}  # whole lines
    assert 2 <= len(finished) < len(RESUMED)

    batch.server = start_server(data, ENV)
    job = batch.wait(arn)
    assert job["status"] == "Completed", job.get("message")
    assert (job["processedRecordCount"], job["successRecordCount"]) == (10, 10)
    lines = [json.loads(text) for text in batch.output(arn, "resume.jsonl.out").decode().splitlines()]
    assert [out["modelOutput"]["generation_token_count"] for out in lines] == RESUMED
    job_id = arn.rsplit("/", 1)[1]
    calls = dict(query(data, "SELECT request_id, count(*) FROM usage_records WHERE batch_job_arn = ? "
                             "GROUP BY request_id", arn))
    for key in finished:  # asked once, before the kill; never again
        file, number = key.split(":")
        assert calls[f"batch-{job_id}-{file}-{number}"] == 1
    assert len(calls) == len(RESUMED)
    assert "resuming" in (data / "jobs" / runner_id / "job.log").read_text()
