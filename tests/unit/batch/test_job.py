"""A batch inference job through the service and the job's entry point, with a stand-in for the model: what
is checked at creation, how records flow to the runtime and back into Bedrock's outputs, how a second attempt
resumes, and how a stop, the timeout and a job left waiting in the queue end."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from outcrop.batch import job as batch_job
from outcrop.batch.journal import JOURNAL_NAME
from outcrop.batch.service import BatchInference, required_permissions
from outcrop.batch.tables import ModelInvocationJobRow
from outcrop.catalog.service import Catalog
from outcrop.errors import AccessDeniedException, Cancelled, ResourceNotFoundException, ValidationException
from outcrop.iam import buckets
from outcrop.iam.principal import Principal
from outcrop.platform import jobs
from outcrop.platform.config import load_settings
from outcrop.platform.database import utc_now
from outcrop.platform.jobs import JobRunner
from outcrop.platform.objectstore import LocalObjectStore
from outcrop.profiles.aliases import model_aliases
from outcrop.profiles.service import InferenceProfiles
from outcrop.runtime.service import Invoked
from outcrop.services import JobServices

MODEL = "huggingface.smollm2-135m-instruct-v1:0"
BUCKET = "batch"


class FakeRuntime:
    """InvokeModel as far as the job can tell: an answer per body, a refusal for {"fail": ...}, and for
    {"slow": ...} a generation that runs until it is called off."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.callers: list = []
        self.engine = SimpleNamespace(get=lambda *args, **kwargs: None, close=lambda: None)
        self.invocation_log = SimpleNamespace(close=lambda: None)
        self.lock = threading.Lock()

    def target(self, account, model_id):
        card = SimpleNamespace(output_modalities=["TEXT"], input_modalities=["TEXT"], native_format="meta-llama")
        return SimpleNamespace(card=card, weights=Path("."), base=None), None

    def invoke(self, caller, model_id, body):
        document = json.loads(body)
        with self.lock:
            self.calls.append(caller.request_id)
            self.callers.append(caller)
        if "fail" in document:
            raise ValidationException("max_gen_len must be a number between 1 and 8192, got 0")
        if "slow" in document:
            if not caller.cancelled.wait(10):
                raise AssertionError("never called off")
            raise Cancelled("the generation was cancelled")
        text = document["prompt"].upper()
        return Invoked(json.dumps({"generation": text}).encode(), len(document["prompt"]), len(text), 1)


@pytest.fixture
def world(db, iam, tmp_path, monkeypatch):
    settings = load_settings(data_dir=tmp_path, max_batch_sequences=8)  # the stop test needs 3 records at once
    iam.bootstrap()
    account = iam.default_account()
    store = LocalObjectStore(settings.objects_dir)
    buckets.create(db, store, account, BUCKET)
    role = iam.create_service_role(account, "batch", s3_access=BUCKET, invoke_models=True).arn
    runner = JobRunner(db, settings)
    profiles = InferenceProfiles(db, Catalog(db, settings.region, model_aliases()), settings.region)
    runtime = FakeRuntime()
    monkeypatch.setattr(JobServices, "runtime", lambda self: runtime)
    return SimpleNamespace(db=db, iam=iam, settings=settings, account=account, store=store, role=role,
                           runner=runner, runtime=runtime, root=Principal.account_root(account),
                           service=BatchInference(db, iam, runner, profiles, settings.region))


def put(world, key: str, lines: list) -> str:
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    world.store.put_bytes(f"s3://{BUCKET}/{key}", text.encode())
    return f"s3://{BUCKET}/{key}"


def params(world, source: str, **more) -> dict:
    return {"jobName": more.pop("jobName", "job-1"), "roleArn": world.role, "modelId": MODEL,
            "inputDataConfig": {"s3InputDataConfig": {"s3Uri": source}},
            "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": f"s3://{BUCKET}/out/"}}, **more}


def record(i: int, **model_input) -> dict:
    return {"recordId": f"r{i}", "modelInput": model_input or {"prompt": f"prompt {i}"}}


def run(world, arn: str, attempt: int = 1) -> str | None:
    with world.db.session() as session:
        runner_id = session.get(ModelInvocationJobRow, arn).runner_job_id
    ctx = jobs.JobContext(job_id=runner_id, account_id=world.account, spec={"jobArn": arn}, attempt=attempt,
                          settings=world.settings, db=world.db,
                          work_dir=jobs.job_dir(world.settings, runner_id))
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    return batch_job.run(ctx)


def output(world, arn: str, name: str) -> bytes:
    return world.store.get_bytes(f"s3://{BUCKET}/out/{arn.rsplit('/', 1)[1]}/{name}")


def test_a_job_answers_its_records_and_writes_bedrocks_outputs(world):
    source = put(world, "in/data.jsonl", [record(0), "{broken", record(2), record(3, fail=True), record(4)])
    arn = world.service.create_job(world.root, params(world, source, tags=[{"key": "team", "value": "a"}]))["jobArn"]
    job = world.service.get_job(world.account, arn)
    assert job["status"] == "Submitted" and job["timeoutDurationInHours"] == 24
    assert job["jobExpirationTime"] - job["submitTime"] == timedelta(hours=24)
    assert run(world, arn) is None
    job = world.service.get_job(world.account, arn.rsplit("/", 1)[1])
    assert job["status"] == "Completed"
    assert (job["totalRecordCount"], job["processedRecordCount"], job["successRecordCount"],
            job["errorRecordCount"]) == (5, 5, 3, 2)
    lines = [json.loads(line) for line in output(world, arn, "data.jsonl.out").splitlines()]
    assert [line.get("recordId") for line in lines] == ["r0", None, "r2", "r3", "r4"]
    assert lines[0]["modelOutput"] == {"generation": "PROMPT 0"}
    assert lines[1]["error"]["errorMessage"].startswith("Line 2: the record is not valid JSON")
    assert lines[3]["error"] == {"errorCode": 400, "errorMessage": "Line 4: ValidationException: max_gen_len must "
                                                                   "be a number between 1 and 8192, got 0"}
    assert json.loads(output(world, arn, "manifest.json.out")) == {
        "totalRecordCount": 5, "processedRecordCount": 5, "successRecordCount": 3, "errorRecordCount": 2,
        "inputTokenCount": 24, "outputTokenCount": 24}
    # every call is the role's, carries the job's ARN for the bill, and is named by its place
    job_id = arn.rsplit("/", 1)[1]
    assert sorted(world.runtime.calls) == sorted(f"batch-{job_id}-0-{n}" for n in (1, 3, 4, 5))
    assert {(c.principal.arn, c.batch_job_arn) for c in world.runtime.callers} == {(world.role, arn)}


def test_a_folder_of_files_gives_one_output_per_file(world):
    put(world, "folder/a.jsonl", [record(0)])
    put(world, "folder/sub/b.jsonl", [record(1), record(2)])
    put(world, "folder/notes.txt", ["not input"])
    arn = world.service.create_job(world.root, params(world, f"s3://{BUCKET}/folder"))["jobArn"]
    run(world, arn)
    assert len(output(world, arn, "a.jsonl.out").splitlines()) == 1
    assert len(output(world, arn, "sub/b.jsonl.out").splitlines()) == 2
    assert json.loads(output(world, arn, "manifest.json.out"))["totalRecordCount"] == 3


def test_a_second_attempt_asks_only_for_the_records_not_finished(world):
    source = put(world, "in/resume.jsonl", [record(i) for i in range(6)])
    arn = world.service.create_job(world.root, params(world, source))["jobArn"]
    run(world, arn)
    with world.db.session() as session:
        runner_id = session.get(ModelInvocationJobRow, arn).runner_job_id
    journal = jobs.job_dir(world.settings, runner_id) / JOURNAL_NAME
    kept = journal.read_text().splitlines()
    assert len(kept) == 6
    journal.write_text("\n".join(kept[:4]) + "\n" + kept[4][:20])  # as if killed after four, mid-write of a fifth
    world.db.update(ModelInvocationJobRow, arn, status="InProgress", ended_at=None)
    world.runtime.calls.clear()
    assert run(world, arn, attempt=2) is None
    finished_before = {json.loads(line)["k"] for line in kept[:4]}
    job_id = arn.rsplit("/", 1)[1]
    assert sorted(world.runtime.calls) == sorted(f"batch-{job_id}-{key.replace(':', '-')}"
                                                 for key in {f"0:{n}" for n in range(1, 7)} - finished_before)
    lines = [json.loads(line) for line in output(world, arn, "resume.jsonl.out").splitlines()]
    assert [line["modelOutput"]["generation"] for line in lines] == [f"PROMPT {i}" for i in range(6)]
    assert world.service.get_job(world.account, arn)["processedRecordCount"] == 6


def test_stop_calls_off_the_records_in_the_batch(world):
    source = put(world, "in/slow.jsonl", [record(0), record(1, slow=True), record(2, slow=True)])
    arn = world.service.create_job(world.root, params(world, source))["jobArn"]
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("outcome", run(world, arn)))
    thread.start()
    deadline = time.monotonic() + 10
    while world.service.get_job(world.account, arn)["status"] != "InProgress" or len(world.runtime.calls) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    world.service.stop_job(world.account, arn)
    assert world.service.get_job(world.account, arn)["status"] == "Stopping"
    thread.join(15)
    assert result["outcome"] == jobs.JobState.STOPPED
    job = world.service.get_job(world.account, arn)
    assert job["status"] == "Stopped" and job["processedRecordCount"] == 1
    assert [json.loads(line)["recordId"] for line in output(world, arn, "slow.jsonl.out").splitlines()] == ["r0"]
    with pytest.raises(ValidationException, match="is Stopped"):
        world.service.stop_job(world.account, arn)


def test_the_timeout_ends_a_running_job_partially_completed(world, monkeypatch):
    source = put(world, "in/late.jsonl", [record(0), record(1, slow=True)])
    arn = world.service.create_job(world.root, params(world, source, timeoutDurationInHours=48))["jobArn"]
    assert world.service.get_job(world.account, arn)["timeoutDurationInHours"] == 48
    soon = utc_now() + timedelta(seconds=1.5)
    world.db.update(ModelInvocationJobRow, arn, expires_at=soon)
    assert run(world, arn) is None
    job = world.service.get_job(world.account, arn)
    assert job["status"] == "PartiallyCompleted" and job["processedRecordCount"] == 1
    assert "timed out after 48 hours with 1 of 2 records processed" in job["message"]


def test_a_job_still_queued_at_its_timeout_expires_and_one_stopped_in_the_queue_never_runs(world):
    source = put(world, "in/q.jsonl", [record(0)])
    arn = world.service.create_job(world.root, params(world, source))["jobArn"]
    world.db.update(ModelInvocationJobRow, arn, expires_at=utc_now() - timedelta(seconds=1))
    assert world.service.get_job(world.account, arn)["status"] == "Expired"
    assert world.service.list_jobs(world.account, {"statusEquals": "Expired"})["invocationJobSummaries"][0][
        "jobArn"] == arn
    assert run(world, arn) == jobs.JobState.STOPPED and world.runtime.calls == []

    other = world.service.create_job(world.root, params(world, source, jobName="job-2"))["jobArn"]
    world.service.stop_job(world.account, other)
    assert world.service.get_job(world.account, other)["status"] == "Stopped"
    assert run(world, other) == jobs.JobState.STOPPED and world.runtime.calls == []


def test_create_refuses_what_it_cannot_honour(world):
    source = put(world, "in/x.jsonl", [record(0)])
    cases = [
        ({"modelInvocationType": "Converse"}, "modelInvocationType Converse is not available"),
        ({"vpcConfig": {"subnetIds": ["s"], "securityGroupIds": ["g"]}}, "vpcConfig is not supported"),
        ({"modelId": "no.such-model-v1:0"}, "The provided model identifier is invalid."),
        ({"modelId": f"arn:aws:bedrock:us-east-1:{world.account}:provisioned-model/abcdefabcdef"},
         "cannot run a batch inference job"),
        ({"modelId": "cohere.rerank-v3-5:0"}, "reranking model"),
    ]
    for more, message in cases:
        with pytest.raises(ValidationException, match=message):
            world.service.create_job(world.root, params(world, source, **more))
    kms = params(world, source)
    kms["outputDataConfig"]["s3OutputDataConfig"]["s3EncryptionKeyId"] = "alias/mine"
    with pytest.raises(ValidationException, match="s3EncryptionKeyId is not supported"):
        world.service.create_job(world.root, kms)
    owner = params(world, source)
    owner["inputDataConfig"]["s3InputDataConfig"]["s3BucketOwner"] = "999999999999"
    with pytest.raises(AccessDeniedException, match="not owned by the expected bucket owner 999999999999"):
        world.service.create_job(world.root, owner)
    assert world.service.list_jobs(world.account, {})["invocationJobSummaries"] == []


def test_idempotent_create_and_what_the_role_must_allow(world):
    source = put(world, "in/x.jsonl", [record(0)])
    first = world.service.create_job(world.root, params(world, source, clientRequestToken="t1"))
    assert world.service.create_job(world.root, params(world, source, clientRequestToken="t1")) == first
    assert world.service.get_job(world.account, first["jobArn"])["clientRequestToken"] == "t1"
    request = {**params(world, source), "jobId": "abcdefabcdef"}
    needs = required_permissions(request, "abcdefabcdef", lambda m: [f"arn:model/{m}"])
    assert needs == [("s3:GetObject", f"arn:aws:s3:::{BUCKET}/in/x.jsonl"),
                     ("bedrock:InvokeModel", f"arn:model/{MODEL}"),
                     ("s3:PutObject", f"arn:aws:s3:::{BUCKET}/out/abcdefabcdef/manifest.json.out")]
    request["inputDataConfig"]["s3InputDataConfig"]["s3Uri"] = f"s3://{BUCKET}/folder"
    assert required_permissions(request, "abcdefabcdef", lambda m: [])[0] == (
        "s3:ListBucket", f"arn:aws:s3:::{BUCKET}", {"s3:prefix": "folder/"})


def test_tags_are_kept_and_changed(world):
    source = put(world, "in/t.jsonl", [record(0)])
    arn = world.service.create_job(world.root, params(world, source, tags=[{"key": "team", "value": "a"}]))["jobArn"]
    assert world.service.tags(world.account, arn) == [{"key": "team", "value": "a"}]
    world.service.tag(world.account, arn, [{"key": "cost", "value": "42"}, {"key": "team", "value": "b"}])
    world.service.untag(world.account, arn, ["cost"])
    assert world.service.tags(world.account, arn) == [{"key": "team", "value": "b"}]
    with pytest.raises(ValidationException, match="reserved prefix"):
        world.service.tag(world.account, arn, [{"key": "aws:x", "value": "1"}])


def test_another_accounts_job_does_not_exist_for_this_one(world):
    source = put(world, "in/x.jsonl", [record(0)])
    arn = world.service.create_job(world.root, params(world, source))["jobArn"]
    world.iam.create_account("other")
    other = next(a for a in _accounts(world) if a != world.account)
    for identifier in (arn, arn.rsplit("/", 1)[1]):
        with pytest.raises(ResourceNotFoundException):
            world.service.get_job(other, identifier)
        with pytest.raises(ResourceNotFoundException):
            world.service.stop_job(other, identifier)
    assert world.service.list_jobs(other, {})["invocationJobSummaries"] == []
    assert world.service.get_job(world.account, arn)["status"] == "Submitted"


def _accounts(world) -> list[str]:
    from sqlalchemy import select

    from outcrop.iam.tables import AccountRow

    with world.db.session() as session:
        return list(session.scalars(select(AccountRow.account_id)))
