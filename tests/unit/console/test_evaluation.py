"""The evaluation pages: the jobs, a job's page and its report, stop and delete, and the form that starts an
automated job. Jobs are put in the table as the evaluation service leaves them (no job process runs here)."""

from __future__ import annotations

import html
from datetime import UTC, datetime

from outcrop.api.console.app import CSP, REPORT_CSP
from outcrop.evaluation.tables import EvaluationJobRow
from outcrop.iam.principal import Principal
from outcrop.iam.scoped_store import ScopedStore

BUCKET = "evals"
REPORT = "<!doctype html><html><head><style>h1{color:red}</style></head><body><h1>Scores</h1><svg></svg></body></html>"
MODEL = "huggingface.smollm2-135m-instruct-v1:0"
READ_JOBS = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["bedrock:ListEvaluationJobs", "bedrock:GetEvaluationJob"], "Resource": "*"}]}


def _job(services, name: str, job_id: str, status: str, human: bool = False) -> str:
    """An evaluation job's row as the service writes it (`job_id`: 12 lowercase letters or digits, as Bedrock's)."""
    account = services.iam.default_account()
    arn = f"arn:aws:bedrock:us-east-1:{account}:evaluation-job/{job_id}"
    datasets = [{"taskType": "QuestionAndAnswer", "dataset": {"name": "Builtin.BoolQ"},
                 "metricNames": ["Builtin.Accuracy"]}]
    config = ({"human": {"humanWorkflowConfig": {"flowDefinitionArn": f"arn:aws:sagemaker:us-east-1:{account}:"
                                                                      "flow-definition/raters",
                                                 "instructions": "Pick the better answer."},
                         "customMetrics": [{"name": "Better", "ratingMethod": "ComparisonChoice"}],
                         "datasetMetricConfigs": [{**datasets[0], "metricNames": ["Better"]}]}}
              if human else {"automated": {"datasetMetricConfigs": datasets}})
    request = {"jobName": name, "jobId": job_id, "roleArn": f"arn:aws:iam::{account}:role/eval",
               "evaluationConfig": config,
               "inferenceConfig": {"models": [{"bedrockModel": {"modelIdentifier": MODEL}}]},
               "outputDataConfig": {"s3Uri": f"s3://{BUCKET}/out/"}}
    now = datetime.now(UTC)
    with services.db.session() as session:
        session.add(EvaluationJobRow(job_arn=arn, account_id=account, job_name=name, job_type="Human" if human
                                     else "Automated", status=status, request=request, created_at=now,
                                     updated_at=now, failure_messages=["The model ran out of memory"]
                                     if status == "Failed" else None))
    return arn


def _completed_with_report(services) -> str:
    arn = _job(services, "boolq-check", "evaldone0001", "Completed")
    store = ScopedStore(services.store, services.iam, Principal.account_root(services.iam.default_account()))
    store.create_bucket(BUCKET)
    store.put_bytes(f"s3://{BUCKET}/out/boolq-check/evaldone0001/report.html", REPORT.encode())
    return arn


def test_the_jobs_newest_first_and_a_completed_jobs_report_in_a_frame(root, services):
    _job(services, "older-failed", "evalfail0001", "Failed")
    arn = _completed_with_report(services)
    listed = root.get("evaluation")
    assert listed.status == 200 and "refresh" not in listed.body
    assert listed.body.index("boolq-check") < listed.body.index("older-failed")  # newest first
    assert 'href="/console/evaluation/jobs/boolq-check"' in listed.body and 'class="status Completed"' in listed.body
    assert "older-failed" not in root.get("evaluation?status=Completed").body

    job = root.get("evaluation/jobs/boolq-check")
    assert job.status == 200 and arn in job.body and MODEL in job.body and "Builtin.BoolQ" in job.body
    assert "Builtin.Accuracy" in job.body and f"s3://{BUCKET}/out/boolq-check/evaldone0001/report.json" in job.body
    assert ('<iframe class="report-frame" src="/console/evaluation/jobs/boolq-check/report" '
            'title="Evaluation report">') in job.body
    assert "Stop the job" not in job.body and 'http-equiv="refresh"' not in job.body

    report = root.get("evaluation/jobs/boolq-check/report")
    assert report.status == 200 and report.body == REPORT
    assert report.headers["content-security-policy"] == REPORT_CSP
    assert job.headers["content-security-policy"] == f"{CSP}; frame-src 'self'"  # the console's, and the frame

    failed = root.get("evaluation/jobs/older-failed")
    assert failed.errors() == ["The model ran out of memory"] and "report-frame" not in failed.body
    assert root.get("evaluation/jobs/older-failed/report").status == 404
    assert root.get("evaluation/jobs/no-such-job").status == 404


def test_a_human_job_in_progress_reloads_links_the_raters_pages_and_stops_then_is_deleted(root, services):
    arn = _job(services, "raters-compare", "evalhuman001", "InProgress", human=True)
    job = root.get("evaluation/jobs/raters-compare")
    assert 'http-equiv="refresh" content="3"' in job.body and "Pick the better answer." in job.body
    assert 'href="/_outcrop/evaluation/rate/"' in job.body
    assert f'href="/_outcrop/evaluation/rate/jobs/{arn.replace(":", "%3A").replace("/", "%2F")}"' in job.body
    assert "Delete the job" not in job.body
    stopped = root.post("evaluation/jobs/raters-compare/stop")
    assert stopped.status == 303 and stopped.location == "/console/evaluation/jobs/raters-compare"
    job = root.get("evaluation/jobs/raters-compare")
    assert 'class="status Stopped"' in job.body and "Stop the job" not in job.body
    again = root.post("evaluation/jobs/raters-compare/stop")  # the API's words, on the job's page
    assert again.status == 400 and "only a job in progress can be stopped" in again.errors()[0]
    deleted = root.post("evaluation/jobs/raters-compare/delete")
    assert deleted.status == 303 and deleted.location == "/console/evaluation"
    assert "raters-compare" not in root.get("evaluation").body


def test_a_report_the_principal_may_not_read_is_refused_in_the_apis_words(root, services, user_browser):
    _completed_with_report(services)
    reader = user_browser("job-reader", READ_JOBS)
    job = reader.get("evaluation/jobs/boolq-check")
    assert job.status == 200 and "report-frame" not in job.body
    assert "s3:GetObject" in job.errors()[0]
    report = reader.get("evaluation/jobs/boolq-check/report")
    assert report.status == 403 and "s3:GetObject" in html.unescape(report.body)
    assert report.headers["content-security-policy"] == CSP  # a refusal is a console page, not a report


def test_a_user_without_list_evaluation_jobs_is_denied(user_browser):
    catalog_only = user_browser("no-eval", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "bedrock:ListFoundationModels", "Resource": "*"}]})
    denied = catalog_only.get("evaluation")
    assert denied.status == 403 and "bedrock:ListEvaluationJobs" in denied.body


def test_the_create_form_shows_the_apis_validation_messages_and_keeps_the_values(root, services):
    form = root.get("evaluation/create")
    assert form.status == 200 and f'<option value="{MODEL}">' in form.body and "Builtin.BoolQ" in form.body
    values = {"jobName": "Bad Name", "roleArn": "", "model1": MODEL, "taskType": "QuestionAndAnswer",
              "datasetName": "Builtin.BoolQ", "metric:Builtin.Accuracy": "on", "outputUri": f"s3://{BUCKET}/out/"}
    bad = root.post("evaluation/create", values)
    assert bad.status == 400 and bad.errors()[0].startswith("ValidationException: 2 validation errors detected")
    assert "'Bad Name' at 'jobName'" in bad.errors()[0] and "at 'roleArn'" in bad.errors()[0]
    assert 'value="Bad Name"' in bad.body and 'name="metric:Builtin.Accuracy" checked' in bad.body
    account = services.iam.default_account()
    missing = root.post("evaluation/create", {**values, "jobName": "fine-name",
                                              "roleArn": f"arn:aws:iam::{account}:role/nobody"})
    assert missing.errors() == [f"ValidationException: The role arn:aws:iam::{account}:role/nobody does not exist"]


def test_the_create_form_sends_what_boto3_would_and_opens_the_new_job(root, services, monkeypatch):
    iam, account = services.iam, services.iam.default_account()
    ScopedStore(services.store, iam, Principal.account_root(account)).create_bucket(BUCKET)
    role = iam.create_role(account, "evaluator")
    iam.put_policy(role.arn, "work", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["bedrock:InvokeModel", "s3:GetObject", "s3:PutObject"], "Resource": "*"}]})
    submitted = []
    # The job's process would load models: the runner only records what it was given.
    monkeypatch.setattr(services.jobs, "submit", lambda *args, **kw: submitted.append(args) or "runner-job-1")
    started = root.post("evaluation/create", {
        "jobName": "my-qa", "roleArn": role.arn, "model1": MODEL, "model2": "", "taskType": "QuestionAndAnswer",
        "datasetName": "trivia", "datasetUri": f"s3://{BUCKET}/qa.jsonl", "metric:Builtin.Accuracy": "on",
        "metric:Builtin.Toxicity": "on", "moreMetrics": "Outcrop.ROUGE-L", "outputUri": f"s3://{BUCKET}/out/"})
    assert started.status == 303, started.errors()
    assert started.location == "/console/evaluation/jobs/my-qa" and len(submitted) == 1
    with services.db.session() as session:
        row = session.query(EvaluationJobRow).filter_by(job_name="my-qa").one()
    assert {k: v for k, v in row.request.items() if k != "jobId"} == {
        "jobName": "my-qa", "roleArn": role.arn,
        "evaluationConfig": {"automated": {"datasetMetricConfigs": [{
            "taskType": "QuestionAndAnswer",
            "dataset": {"name": "trivia", "datasetLocation": {"s3Uri": f"s3://{BUCKET}/qa.jsonl"}},
            "metricNames": ["Builtin.Accuracy", "Builtin.Toxicity", "Outcrop.ROUGE-L"]}]}},
        "inferenceConfig": {"models": [{"bedrockModel": {"modelIdentifier": MODEL}}]},
        "outputDataConfig": {"s3Uri": f"s3://{BUCKET}/out/"}}
    page = root.get("evaluation/jobs/my-qa")
    assert page.status == 200 and 'class="status InProgress"' in page.body and "Stop the job" in page.body
