"""Where an evaluation job's results go, in Bedrock's layout, and the report beside them.

    <outputDataConfig.s3Uri>/<job-name>/<job-id>/
        models/<model-id>/taskTypes/<task>/datasets/<dataset>/<uuid>_output.jsonl   one line per prompt
        report.json     the summary (`outcrop.evaluation.report`'s shape)
        report.html     the same, drawn

Each output line is `{"automatedEvaluationResult": {"scores": [{"metricName", "result"}]}, "inputRecord",
"modelResponses": [{"response", "modelIdentifier"}]}`; a human job's lines carry
`humanEvaluationResult` with every rating instead.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from outcrop.evaluation.tables import JobStatus
from outcrop.platform.database import utc_now
from outcrop.platform.objectstore import S3Uri

REPORT_JSON, REPORT_HTML = "report.json", "report.html"


def job_prefix(request: dict[str, Any], job_id: str) -> S3Uri:
    return S3Uri.parse(request["outputDataConfig"]["s3Uri"]).join(f"{request['jobName']}/{job_id}/")


def model_folder(identifier: str) -> str:
    """A model's folder name: its id (`meta.llama3-8b-instruct-v1:0`), or the id at the end of its ARN."""
    return identifier.rsplit("/", 1)[-1]


def records_uri(prefix: S3Uri, model: str, task_type: str, dataset: str) -> S3Uri:
    return prefix.join(f"models/{model_folder(model)}/taskTypes/{task_type}/datasets/{dataset}/"
                       f"{uuid.uuid4()}_output.jsonl")


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode("utf-8")


def write_report(store: Any, prefix: S3Uri, summary: dict[str, Any]) -> None:
    from outcrop.evaluation import report

    report.validate_summary(summary)  # a summary the report cannot draw is our bug: fail here, not in a browser
    store.put_bytes(prefix.join(REPORT_JSON), report.render_json(summary))
    store.put_bytes(prefix.join(REPORT_HTML), report.render_html(summary).encode("utf-8"))


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


def evaluator_models(request: dict[str, Any]) -> list[str]:
    """The judges a request names: its evaluatorModelConfig's, then its custom metrics' (once each)."""
    automated = request["evaluationConfig"].get("automated") or {}
    configs = (automated.get("evaluatorModelConfig"),
               (automated.get("customMetricConfig") or {}).get("evaluatorModelConfig"))
    return list(dict.fromkeys(m["modelIdentifier"] for config in configs
                              for m in (config or {}).get("bedrockEvaluatorModels", [])))


def base_summary(row: Any) -> dict[str, Any]:
    """The summary's header, from the job's row."""
    request = row.request
    judges = evaluator_models(request)
    return {"jobName": row.job_name, "jobArn": row.job_arn, "jobType": row.job_type, "status": JobStatus.COMPLETED,
            "createdAt": iso(row.created_at), "completedAt": utc_now().isoformat(),
            "models": [m["bedrockModel"]["modelIdentifier"] for m in request["inferenceConfig"]["models"]],
            "evaluatorModel": judges[0] if judges else None, "tasks": [], "human": None}


def human_summary(row: Any, aggregated: list[dict[str, Any]], ratings: list[dict[str, Any]]) -> dict[str, Any]:
    """A human job's summary: `aggregated` is `HumanReview.aggregate`'s [{taskType, dataset, metrics}]."""
    summary = base_summary(row)
    workflow = row.request["evaluationConfig"]["human"]["humanWorkflowConfig"]
    summary["tasks"] = aggregated
    summary["human"] = {"flowDefinitionArn": workflow["flowDefinitionArn"],
                        "instructions": workflow.get("instructions") or "",
                        "raters": sorted({r["raterArn"] for r in ratings}), "ratings": len(ratings)}
    return summary


def write_human_outputs(store: Any, db: Any, row: Any, summary: dict[str, Any],
                        ratings: list[dict[str, Any]]) -> None:
    """Every rated item, per model, task and dataset, then the report. `ratings` is `HumanReview.ratings`'s."""
    from sqlalchemy import select

    from outcrop.evaluation.tables import HumanTaskRow

    prefix = job_prefix(row.request, row.request["jobId"])
    with db.session() as session:
        tasks = session.scalars(select(HumanTaskRow).where(HumanTaskRow.job_arn == row.job_arn)
                                .order_by(HumanTaskRow.position)).all()
    by_task: dict[str, list[dict[str, Any]]] = {}
    for rating in ratings:
        by_task.setdefault(rating["taskId"], []).append(rating)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for task in tasks:
        groups.setdefault((task.task_type, task.dataset_name), []).append({
            "humanEvaluationResult": {"ratings": [{"rater": r["raterArn"], "values": r["values"],
                                                   "comment": r["comment"]} for r in by_task.get(task.task_id, [])]},
            "inputRecord": task.record,
            "modelResponses": [{"response": r["response"], "modelIdentifier": r["modelIdentifier"]}
                               for r in task.responses]})
    for model in summary["models"]:
        for (task_type, dataset), lines in groups.items():
            store.put_bytes(records_uri(prefix, model, task_type, dataset), jsonl(lines))
    write_report(store, prefix, summary)
