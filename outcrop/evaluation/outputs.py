"""Where an evaluation job's results go, in Bedrock's layout, and the report beside them.

    <outputDataConfig.s3Uri>/<job-name>/<job-id>/
        models/<model-id>/taskTypes/<task>/datasets/<dataset>/<uuid>_output.jsonl   one line per prompt
        datasets/<dataset>/<uuid>_output.jsonl      a human job's instead: one line per item, every model's answer
        report.json     the summary (`outcrop.evaluation.report`'s shape)
        report.html     the same, drawn

Each output line is `{"automatedEvaluationResult": {"scores": [{"metricName", "result"}]}, "inputRecord",
"modelResponses": [{"response", "modelIdentifier"}]}`; a human job's lines carry
`humanEvaluationResult` with every rating instead. A RAG job (`outcrop.evaluation.rag`) writes one line per
conversation, `{"conversationTurns": [{"inputRecord", "output", "results"}]}`, in the same layout with its
knowledge base id (or its ragSourceIdentifier) in place of the model.
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
MODEL_EVALUATION, RAG_EVALUATION = "ModelEvaluation", "RagEvaluation"


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

    # Completed when its report is written: after the answers, the judging and the per-record outputs.
    summary["completedAt"] = utc_now().isoformat()
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


def application_type(request: dict[str, Any]) -> str:
    return request.get("applicationType") or MODEL_EVALUATION


def model_identifier(model: dict[str, Any]) -> str:
    """An `inferenceConfig.models[]` entry's name: the Bedrock model's identifier, or a precomputed source's
    inferenceSourceIdentifier (the answers are in the dataset: nothing is invoked)."""
    if "precomputedInferenceSource" in model:
        return model["precomputedInferenceSource"]["inferenceSourceIdentifier"]
    return model["bedrockModel"]["modelIdentifier"]


def bedrock_models(request: dict[str, Any]) -> list[str]:
    """The models a job invokes to answer its prompts (precomputed sources are not invoked)."""
    return [m["bedrockModel"]["modelIdentifier"] for m in (request["inferenceConfig"].get("models") or [])
            if "bedrockModel" in m]


def rag_source(request: dict[str, Any]) -> tuple[str, str, bool]:
    """A RAG job's (kind, identifier, precomputed): kind "retrieve" or "generate"; the identifier is the
    knowledge base's id, or the ragSourceIdentifier of responses brought in the dataset (precomputed)."""
    config = request["inferenceConfig"]["ragConfigs"][0]
    if "precomputedRagSourceConfig" in config:
        source = config["precomputedRagSourceConfig"]
        kind = "retrieve" if "retrieveSourceConfig" in source else "generate"
        return kind, next(iter(source.values()))["ragSourceIdentifier"], True
    knowledge_base = config["knowledgeBaseConfig"]
    if "retrieveConfig" in knowledge_base:
        return "retrieve", knowledge_base["retrieveConfig"]["knowledgeBaseId"], False
    return "generate", knowledge_base["retrieveAndGenerateConfig"]["knowledgeBaseConfiguration"][
        "knowledgeBaseId"], False


def evaluated(request: dict[str, Any]) -> list[str]:
    """What a job evaluates, as its report and listings name it: each model (a precomputed source by its
    inferenceSourceIdentifier), or a RAG job's knowledge base id or ragSourceIdentifier."""
    if application_type(request) == RAG_EVALUATION:
        return [rag_source(request)[1]]
    return [model_identifier(m) for m in request["inferenceConfig"]["models"]]


def summary_sources(summary: dict[str, Any]) -> list[str]:
    """What a ListEvaluationJobs summary evaluates (models, precomputed sources, knowledge bases), for listings."""
    config = summary.get("inferenceConfigSummary") or {}
    models, rag = config.get("modelConfigSummary") or {}, config.get("ragConfigSummary") or {}
    return [*(models.get("bedrockModelIdentifiers") or []), *(models.get("precomputedInferenceSourceIdentifiers")
            or []), *(rag.get("bedrockKnowledgeBaseIdentifiers") or []), *(rag.get("precomputedRagSourceIdentifiers")
                                                                           or [])]


def base_summary(row: Any) -> dict[str, Any]:
    """The summary's header, from the job's row."""
    request = row.request
    judges = evaluator_models(request)
    return {"jobName": row.job_name, "jobArn": row.job_arn, "jobType": row.job_type, "status": JobStatus.COMPLETED,
            "createdAt": iso(row.created_at), "completedAt": None,  # write_report sets it
            "models": evaluated(request),
            "evaluatorModel": judges[0] if judges else None, "tasks": [], "human": None}


def human_summary(row: Any, aggregated: list[dict[str, Any]], ratings: list[dict[str, Any]]) -> dict[str, Any]:
    """A human job's summary: `aggregated` is `HumanReview.aggregate`'s [{taskType, dataset, metrics}]."""
    summary = base_summary(row)
    workflow = row.request["evaluationConfig"]["human"]["humanWorkflowConfig"]
    summary["tasks"] = aggregated
    summary["human"] = {"flowDefinitionArn": workflow["flowDefinitionArn"],
                        "instructions": workflow.get("instructions") or "",
                        "raters": sorted({r["raterArn"] for r in ratings}), "ratings": len(ratings)}
    from outcrop.evaluation import statistics

    statistics.correct(summary, statistics.Settings())
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
    # Bedrock's layout for a job with human workers: one file per dataset, each line with every model's response.
    for (_, dataset), lines in groups.items():
        store.put_bytes(prefix.join(f"datasets/{dataset}/{uuid.uuid4()}_output.jsonl"), jsonl(lines))
    write_report(store, prefix, summary)
