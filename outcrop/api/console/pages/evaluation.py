"""Model evaluation: the jobs (newest first), a job's configuration, progress and report, stop and delete, and a
form that starts an automated job.

Bedrock's GetEvaluationJob and StopEvaluationJob take the job's ARN only (botocore's model says so, and the API
validates it), while the console's URLs name a job by its name, as its list shows it: a page finds the ARN by
listing the jobs whose name contains it. A completed job's report is the `report.html` the job wrote beside its
outputs; it is read from the object store as the signed-in principal (who must be allowed to read that output)
and served with the reports' own CSP (inline CSS and SVG, no script), framed by the job's page.
"""

from __future__ import annotations

import urllib.parse
import uuid
from typing import Any

from outcrop.api.console.app import CSP, REPORT_CSP, Visit, page
from outcrop.api.sessions import Response
from outcrop.errors import BedrockError, ResourceNotFoundException
from outcrop.evaluation import outputs
from outcrop.evaluation.datasets import BUILTIN
from outcrop.evaluation.scoring import ACCURACY, ROBUSTNESS, TOXICITY
from outcrop.platform.objectstore import S3Uri

#: The form's task types: (Bedrock's name, what the console calls it).
TASK_TYPES = (("Generation", "General text generation"), ("Summarization", "Text summarization"),
              ("QuestionAndAnswer", "Question and answer"), ("Classification", "Text classification"))
#: The built-in metrics; the API scores each of them for every task type (outcrop.evaluation.scoring.spec).
METRICS = ((ACCURACY, "Accuracy"), (ROBUSTNESS, "Robustness"), (TOXICITY, "Toxicity"))
#: Statuses that change by themselves: their pages reload until they settle.
MOVING = ("InProgress", "Stopping")
STATUSES = ("InProgress", "Completed", "Failed", "Stopping", "Stopped")
RATER_PAGES = "/_outcrop/evaluation/rate"
#: The console's CSP, plus what a job's page needs to frame its report (this server's own page; the report's CSP
#: allows this server's pages, and only them, to frame it). The console's own CSP frames nothing.
FRAMING_CSP = f"{CSP}; frame-src 'self'"
#: Jobs asked for per listing when looking a name up (the API's largest page).
LOOKUP_PAGE = 1000


@page("GET", "evaluation")
def jobs(visit: Visit) -> Response:
    params: dict[str, Any] = {"sortBy": "CreationTime", "sortOrder": "Descending"}
    status, name = visit.query.get("status", ""), visit.query.get("name", "").strip()
    if status:
        params["statusEquals"] = status
    if name:
        params["nameContains"] = name
    if visit.query.get("next"):
        params["nextToken"] = visit.query["next"]
    listed = visit.call("bedrock", "ListEvaluationJobs", params)
    # What each job evaluates: its models, precomputed sources or knowledge base (the summary's own split)
    rows = [{**summary, "sources": outputs.summary_sources(summary)} for summary in listed["jobSummaries"]]
    more = urllib.parse.urlencode({"status": status, "name": name, "next": listed["nextToken"]}) \
        if listed.get("nextToken") else ""
    return visit.render("evaluation.html", "Evaluation", jobs=rows, statuses=STATUSES, status_filter=status, name=name,
                        more=more, refresh=3 if any(j["status"] in MOVING for j in rows) else 0,
                        may_create=visit.refusal("CreateEvaluationJob") is None)


# -- one job ------------------------------------------------------------------------------------------


def _job_arn(visit: Visit, name: str) -> str:
    """The ARN of the caller's job `name` (GetEvaluationJob takes nothing else); an ARN stays as it is."""
    if name.startswith("arn:"):
        return name
    params: dict[str, Any] = {"nameContains": name, "maxResults": LOOKUP_PAGE}
    while True:
        listed = visit.call("bedrock", "ListEvaluationJobs", params)
        for summary in listed["jobSummaries"]:
            if summary["jobName"] == name:
                return summary["jobArn"]
        if not listed.get("nextToken"):
            raise ResourceNotFoundException(f"The evaluation job {name} does not exist")
        params["nextToken"] = listed["nextToken"]


def _get(visit: Visit, name: str) -> dict[str, Any]:
    return visit.call("bedrock", "GetEvaluationJob", {"jobIdentifier": _job_arn(visit, name)})


def report_uri(job: dict[str, Any]) -> S3Uri:
    """Where the job wrote report.html: the API says so for a completed job; the layout is outputs.job_prefix's."""
    if job.get("reportUri"):
        return S3Uri.parse(job["reportUri"])
    prefix = outputs.job_prefix({"outputDataConfig": job["outputDataConfig"], "jobName": job["jobName"]},
                                job["jobArn"].rsplit("/", 1)[-1])
    return prefix.join(outputs.REPORT_HTML)


def _config(job: dict[str, Any]) -> dict[str, Any]:
    """What the template shows of the job's request: its datasets and metrics, judges and work team."""
    config = job["evaluationConfig"]
    automated, human = config.get("automated") or {}, config.get("human") or {}
    judges = [m["modelIdentifier"] for m in (automated.get("evaluatorModelConfig") or {})
              .get("bedrockEvaluatorModels", [])]
    return {"datasets": (automated or human).get("datasetMetricConfigs", []), "judges": judges,
            "custom_metrics": human.get("customMetrics") or [],
            "workflow": human.get("humanWorkflowConfig") or {},
            "models": _evaluated(job)}


def _evaluated(job: dict[str, Any]) -> list[dict[str, Any]]:
    """What the job evaluates, as the page lists it: each model (a precomputed source by its identifier, with
    nothing to invoke), or a RAG job's knowledge base or RAG source."""
    if outputs.application_type(job) == outputs.RAG_EVALUATION:
        return [{"modelIdentifier": identifier} for identifier in outputs.evaluated(job)]
    return [m.get("bedrockModel") or {"modelIdentifier": outputs.model_identifier(m)}
            for m in job["inferenceConfig"].get("models") or []]


@page("GET", "evaluation/jobs/(?P<name>[^/]+)")
def job(visit: Visit, name: str) -> Response:
    return _job_page(visit, _get(visit, name))


def _job_page(visit: Visit, found: dict[str, Any], error: str = "", status: int = 200) -> Response:
    report, report_error = str(report_uri(found)), ""
    if found["status"] == "Completed":
        try:  # the frame would show a refusal with no context: say it here instead
            visit.store().head(report)
        except BedrockError as exc:
            report_error = f"{exc.code}: {exc.message}"
    raters = f"{RATER_PAGES}/jobs/{urllib.parse.quote(found['jobArn'], safe='')}"
    response = visit.render("evaluation_job.html", found["jobName"], status=status, job=found, config=_config(found),
                            report=report, report_json=report.removesuffix(outputs.REPORT_HTML) + outputs.REPORT_JSON,
                            report_error=report_error, raters=raters, rater_pages=f"{RATER_PAGES}/", error=error,
                            refresh=3 if found["status"] in MOVING and not error else 0)
    if found["status"] == "Completed" and not report_error:
        response.headers.append(("content-security-policy", FRAMING_CSP))
    return response


@page("GET", r"evaluation/jobs/(?P<name>[^/]+)/report")
def report(visit: Visit, name: str) -> Response:
    found = _get(visit, name)
    if found["status"] != "Completed":
        return visit.render("message.html", "No report yet", status=404, heading="No report yet",
                            message=f"The evaluation job {found['jobName']} is {found['status']}: a job writes its "
                                    "report when it completes.")
    html = visit.store().get_bytes(report_uri(found))  # as the principal: a denied read is the denied page
    return Response(200, html, [("content-security-policy", REPORT_CSP)])


@page("POST", r"evaluation/jobs/(?P<name>[^/]+)/stop")
def stop(visit: Visit, name: str) -> Response:
    arn = _job_arn(visit, name)
    try:
        visit.call("bedrock", "StopEvaluationJob", {"jobIdentifier": arn})
    except BedrockError as exc:  # e.g. the job ended meanwhile: the job's page, with the API's words
        return _job_page(visit, _get(visit, name), error=f"{exc.code}: {exc.message}", status=exc.status)
    return visit.redirect(f"evaluation/jobs/{urllib.parse.quote(name, safe='')}")


@page("POST", r"evaluation/jobs/(?P<name>[^/]+)/delete")
def delete(visit: Visit, name: str) -> Response:
    arn = _job_arn(visit, name)
    answer = visit.call("bedrock", "BatchDeleteEvaluationJob", {"jobIdentifiers": [arn]})
    if answer.get("errors"):  # a job not yet finished: the API answers per job rather than failing the call
        first = answer["errors"][0]
        return _job_page(visit, _get(visit, name), error=f"{first['code']}: {first.get('message', '')}",
                         status=400)
    return visit.redirect("evaluation")


# -- the create form ---------------------------------------------------------------------------------


@page("GET", "evaluation/create")
def create_form(visit: Visit) -> Response:
    visit.require("CreateEvaluationJob")  # a form the policy forbids sending: why not, instead
    return _form(visit, {"jobName": f"eval-{uuid.uuid4().hex[:6]}", "taskType": "QuestionAndAnswer",
                         "datasetName": "Builtin.BoolQ", f"metric:{ACCURACY}": "on"})


def create_params(form: dict[str, str]) -> dict[str, Any]:
    """CreateEvaluationJob's input for an automated job, as boto3 would send it; the API judges the values."""
    dataset: dict[str, Any] = {"name": form.get("datasetName", "").strip()}
    if form.get("datasetUri", "").strip():
        dataset["datasetLocation"] = {"s3Uri": form["datasetUri"].strip()}
    metrics = [name for name, _ in METRICS if form.get(f"metric:{name}")]
    metrics += [m.strip() for m in form.get("moreMetrics", "").split(",") if m.strip()]
    models = [form.get(field, "").strip() for field in ("model1", "model2")]
    params: dict[str, Any] = {
        "jobName": form.get("jobName", "").strip(), "roleArn": form.get("roleArn", "").strip(),
        "evaluationConfig": {"automated": {"datasetMetricConfigs": [
            {"taskType": form.get("taskType", ""), "dataset": dataset, "metricNames": metrics}]}},
        "inferenceConfig": {"models": [{"bedrockModel": {"modelIdentifier": m}} for m in models if m]},
        "outputDataConfig": {"s3Uri": form.get("outputUri", "").strip()},
    }
    if form.get("jobDescription", "").strip():
        params["jobDescription"] = form["jobDescription"].strip()
    return params


@page("POST", "evaluation/create")
def create(visit: Visit) -> Response:
    params = create_params(visit.form)
    try:
        visit.call("bedrock", "CreateEvaluationJob", params)
    except BedrockError as exc:  # the API's own words, beside the fields that caused them
        return _form(visit, visit.form, error=f"{exc.code}: {exc.message}", status=exc.status)
    return visit.redirect(f"evaluation/jobs/{urllib.parse.quote(params['jobName'], safe='')}")


def _listed(visit: Visit, operation: str, member: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """A list for the form's suggestions; a principal that may not list them types the value instead."""
    try:
        return visit.call("bedrock", operation, params or {})[member]
    except BedrockError:
        return []


def _form(visit: Visit, values: dict[str, str], error: str = "", status: int = 200) -> Response:
    models = [(m["modelId"], m.get("modelName") or m["modelId"]) for m in _listed(
        visit, "ListFoundationModels", "modelSummaries", {"byOutputModality": "TEXT"})]
    models += [(m["modelArn"], f"custom model {m['modelName']}") for m in _listed(
        visit, "ListCustomModels", "modelSummaries")]
    models += [(t["provisionedModelArn"], f"provisioned throughput {t['provisionedModelName']}") for t in _listed(
        visit, "ListProvisionedModelThroughputs", "provisionedModelSummaries")]
    try:
        roles = visit.call_json("iam", "ListRoles")["Roles"]
    except BedrockError:  # a user who may not list roles types the ARN
        roles = []
    try:
        buckets = [f"s3://{b}/" for b in visit.store().list_buckets()]
    except BedrockError:
        buckets = []
    datasets = [(d.name, ", ".join(t for t in d.task_types if t != "Custom")) for d in BUILTIN.values()]
    return visit.render("evaluation_create.html", "Start an evaluation job", status=status, values=values,
                        error=error, models=models, roles=roles, buckets=buckets, datasets=datasets,
                        task_types=TASK_TYPES, metrics=METRICS)
