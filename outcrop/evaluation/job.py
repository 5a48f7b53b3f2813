"""One evaluation job, top to bottom: read the datasets, have every model answer, score, write, report.

Runs in its own process under the job runner. Every read and write of the user's bucket goes through
the job's service role. Answers are kept in the job's work dir as they are finished, so a job that a
server restart interrupted resumes without asking the models again. A human job ends its process once
the answers are stored as items to rate; the raters finish it (`EvaluationService.finish_human`).
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from outcrop.errors import ValidationException
from outcrop.evaluation import datasets, inference, judge, outputs, scoring, statistics
from outcrop.evaluation.datasets import PromptRecord
from outcrop.evaluation.service import FINISHED, dataset_configs, is_rag, required_permissions
from outcrop.evaluation.tables import EvaluationJobRow, JobStatus
from outcrop.iam.scoped_store import ScopedStore
from outcrop.iam.service import IamService
from outcrop.platform import jobs
from outcrop.platform.database import Database, utc_now
from outcrop.platform.tables import JobState

log = logging.getLogger(__name__)

#: Greedy, and cut at a second "Rating:": small judges repeat the pattern, and two ratings are unparseable.
JUDGE_INFERENCE = {"inferenceConfig": {"maxTokens": judge.JUDGE_MAX_TOKENS, "temperature": 0.0, "topP": 1.0,
                                       "stopSequences": list(judge.JUDGE_STOP_SEQUENCES)}}


@dataclass
class Dataset:
    task_type: str
    name: str
    metric_names: list[str]
    records: list[PromptRecord]
    #: Where the records came from (an S3 URI, a packaged sample, the hub), as the report says.
    source: str = ""

    def labels(self) -> list[str]:
        return [f"dataset {self.name} line {r.line}" for r in self.records]


class _Progress:
    """Answers done out of answers needed, published as the job's progress."""

    def __init__(self, ctx: jobs.JobContext, total: int) -> None:
        self.ctx, self.total, self.done, self.stage = ctx, max(total, 1), 0, "generating"
        self._lock = threading.Lock()

    def step(self) -> None:
        with self._lock:
            self.done += 1
            self.publish(force=self.done == self.total)

    def publish(self, force: bool = False) -> None:
        self.ctx.report({"percent": round(100.0 * min(self.done, self.total) / self.total, 1), "stage": self.stage,
                         "done": self.done, "total": self.total}, force=force)


def run(ctx: jobs.JobContext) -> str | None:
    job_arn = ctx.spec["jobArn"]
    if ctx.attempt > 1:
        log.info("attempt %d of %s: resuming with the answers saved in %s", ctx.attempt, job_arn, ctx.work_dir)
    from outcrop.services import JobServices  # the composition root: a job's entry point builds its services

    db, settings = ctx.db, ctx.settings
    services = JobServices.open(db, settings)
    row = _row(db, job_arn)
    request = row.request
    if is_rag(request):  # a knowledge-base evaluation: rag.py's own
        from outcrop.evaluation import rag

        return rag.run(ctx, services, row)
    iam = services.iam
    role = iam.check_role(request["roleArn"], row.account_id,
                          required_permissions(request, request["jobId"],
                                               functools.partial(services.profiles.invocation_arns, row.account_id)))
    store = ScopedStore(services.store, iam, role)

    # 1. The datasets, every line checked before any model is asked anything.
    sets = [_dataset(config, store, settings) for config in dataset_configs(request)]
    # (identifier, inference parameters); None for a precomputedInferenceSource, whose answers are in the dataset
    models = [(outputs.model_identifier(m), None if "precomputedInferenceSource" in m else
               inference.parse_inference_params(m["bedrockModel"].get("inferenceParams"), "inferenceParams"))
              for m in request["inferenceConfig"]["models"]]
    # A precomputed source's answers are read now, with the rest of step 1: a line without them fails the job
    # before any model is asked.
    brought = {(d, m): datasets.precomputed_responses(dataset.records, dataset.name, model)
               for d, dataset in enumerate(sets) for m, (model, params) in enumerate(models) if params is None}
    automated = request["evaluationConfig"].get("automated")
    judged = _judged_metrics(automated) if automated else {}
    for dataset in sets:
        for name in dataset.metric_names:
            if name not in judged and automated and scoring.spec(name, dataset.task_type).needs_reference:
                datasets.require_references(dataset.records, dataset.name, name)
    total = 0
    for dataset in sets:
        perturbed = scoring.ROBUSTNESS in dataset.metric_names
        judges = sum(1 for n in dataset.metric_names if n in judged)
        total += len(dataset.records) * len(models) * (1 + (scoring.PERTURBATIONS if perturbed else 0) + judges)
    progress = _Progress(ctx, total)
    progress.publish(force=True)

    runtime = services.runtime()
    generator = inference.Generator(runtime, role, job_arn, settings.max_batch_sequences, ctx.should_stop)
    with Asking(db, job_arn, runtime) as asking:
        # 2. Every model answers every prompt (and its perturbed copies, for robustness).
        answers: dict[tuple[int, int], list[str]] = {}
        perturbed_answers: dict[tuple[int, int], list[str]] = {}
        for d, dataset in enumerate(sets):
            prompts = [r.prompt for r in dataset.records]
            perturbed = scoring.perturbed_prompts(dataset.records) if scoring.ROBUSTNESS in dataset.metric_names \
                else []
            perturbed_labels = [f"{label} (perturbed copy {k + 1})" for label in dataset.labels()
                                for k in range(scoring.PERTURBATIONS)]
            for m, (model, params) in enumerate(models):
                if params is None:  # precomputed: the dataset's modelResponses are the answers (no robustness)
                    answers[d, m] = brought[d, m]
                    progress.done += len(prompts)
                    continue
                answers[d, m] = _cached(ctx.work_dir / f"answers-{d}-{m}.json", progress, generator, model, prompts,
                                        params, dataset.labels())
                if perturbed:
                    perturbed_answers[d, m] = _cached(ctx.work_dir / f"perturbed-{d}-{m}.json", progress, generator,
                                                      model, perturbed, params, perturbed_labels)

        if not automated:  # 3a. A human job: the answers become items to rate; the raters finish the job.
            if ctx.should_stop(fresh=True):  # stopped while the last answers came: no items to rate
                raise inference.Stopped()
            _store_human_tasks(db, iam, settings.region, row, sets, models, answers)
            return None

        # 3b. Scores, per dataset and model.
        progress.stage = "scoring"
        progress.publish(force=True)
        summary = outputs.base_summary(row)
        prefix = outputs.job_prefix(request, request["jobId"])
        tools = scoring.Tools(_bertscore, _toxicity)
        # Every metric of every dataset is compared between each pair of models: Holm's family.
        stats = statistics.Settings.for_comparisons(
            sum(len(d.metric_names) for d in sets) * len(models) * (len(models) - 1) // 2)
        perplexities: dict[str, Any] = {}
        for d, dataset in enumerate(sets):
            entries: dict[str, dict[str, Any]] = {}
            per_model_scores: list[list[list[dict[str, Any]]]] = []
            for m, (model, _) in enumerate(models):
                record_scores: list[list[dict[str, Any]]] = [[] for _ in dataset.records]
                for name in dataset.metric_names:
                    if name in judged:
                        rubric, judge_model = judged[name]
                        result = _judge(generator, rubric, judge_model, dataset, answers[d, m], progress)
                        _add(entries, name, model, result.entry(dataset.records), kind="judge")
                        for i, verdict in enumerate(result.verdicts):
                            record_scores[i].append(
                                {"metricName": name, "result": verdict.score,
                                 **({"rating": verdict.value} if isinstance(verdict.value, str) else {}),
                                 "evaluatorDetails": [{"modelIdentifier": judge_model,
                                                       "explanation": verdict.explanation or verdict.raw}]})
                        continue
                    computed = scoring.compute(
                        name, dataset.task_type, dataset.records, answers[d, m], tools,
                        perturbed_outputs=perturbed_answers.get((d, m)),
                        perplexity=lambda texts, model=model: _perplexity(perplexities, runtime, row.account_id,
                                                                           model, settings).compute(texts)
                        ["perplexities"])
                    _add(entries, name, model, _automatic_entry(computed), kind="automatic")
                    for i, value in enumerate(computed.values):
                        record_scores[i].append({"metricName": name, "result": value})
                per_model_scores.append(record_scores)
                if ctx.should_stop():
                    raise inference.Stopped()
            summary["tasks"].append({"taskType": dataset.task_type, "dataset": dataset.name,
                                     "datasetSource": dataset.source, "records": len(dataset.records),
                                     "metrics": task_metrics(entries, [m for m, _ in models], len(dataset.records),
                                                             stats, [r.category for r in dataset.records])})
            # 4. Bedrock's per-record outputs, one file per model.
            for m, (model, _) in enumerate(models):
                lines = [{"automatedEvaluationResult": {"scores": per_model_scores[m][i]}, "inputRecord": r.raw,
                          "modelResponses": [{"response": answers[d, m][i], "modelIdentifier": model}]}
                         for i, r in enumerate(dataset.records)]
                store.put_bytes(outputs.records_uri(prefix, model, dataset.task_type, dataset.name),
                                outputs.jsonl(lines))
        complete(db, job_arn, store, prefix, summary, progress, stats)
    return asking.state


class Asking:
    """The part of a job that asks models: a stop (`inference.Stopped`) marks the job Stopped and ends the
    block quietly (`state` then tells the runner), and the job's runtime closes however the block ends."""

    def __init__(self, db: Database, job_arn: str, runtime: Any) -> None:
        self.db, self.job_arn, self.runtime = db, job_arn, runtime
        self.state: str | None = None

    def __enter__(self) -> Asking:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: Any) -> bool:
        try:
            if kind is not None and issubclass(kind, inference.Stopped):
                self.db.update(EvaluationJobRow, self.job_arn, status=JobStatus.STOPPED, ended_at=utc_now())
                self.state = JobState.STOPPED
                return True
            return False
        finally:
            self.runtime.invocation_log.close()
            self.runtime.engine.close()


def complete(db: Database, job_arn: str, store: ScopedStore, prefix: Any, summary: dict[str, Any],
             progress: _Progress, settings: statistics.Settings) -> None:
    """The end of an automated job (model or RAG): Holm's correction over all its comparisons, the report beside
    the outputs, the row Completed with the summary, the progress at 100%."""
    statistics.correct(summary, settings)
    outputs.write_report(store, prefix, summary)
    db.update(EvaluationJobRow, job_arn, status=JobStatus.COMPLETED, results=summary, ended_at=utc_now())
    progress.stage = "completed"
    progress.done = progress.total
    progress.publish(force=True)


def on_failure(db: Database, runner_job_id: str, message: str) -> None:
    """Called by the job runner when the job failed or died."""
    from sqlalchemy import select

    with db.session() as session:
        row = session.scalars(select(EvaluationJobRow).where(EvaluationJobRow.runner_job_id == runner_job_id)).first()
        if row is None or row.status in FINISHED:
            return
        row.status, row.failure_messages = JobStatus.FAILED, [message[:2000]]
        row.ended_at = row.updated_at = utc_now()


# ------------------------------------------------------------------------------------------------ the pieces
def _dataset(config: dict[str, Any], store: ScopedStore, settings: Any) -> Dataset:
    name, task_type = config["dataset"]["name"], config["taskType"]
    if name.startswith("Builtin."):
        local, dataset = datasets.samples_dir(settings.builtin_datasets_dir), datasets.builtin(name, task_type)
        records = datasets.load_builtin(dataset, local_dir=local, cache_dir=settings.data_dir / "datasets" / "builtin",
                                        records=settings.builtin_dataset_records)
        source = datasets.describe_source(dataset, local)
    else:
        source = config["dataset"]["datasetLocation"]["s3Uri"]
        with store.open_read(source) as fh:
            records = datasets.parse_records(fh, source)
    return Dataset(task_type, name, list(config["metricNames"]), records, source)


def _judged_metrics(automated: dict[str, Any]) -> dict[str, tuple[Any, str]]:
    """Metric name -> (rubric, judge model) for every metric a model scores."""
    out: dict[str, tuple[Any, str]] = {}
    evaluator = automated.get("evaluatorModelConfig")
    names = {n for c in automated["datasetMetricConfigs"] for n in c["metricNames"]}
    if evaluator:
        model = evaluator["bedrockEvaluatorModels"][0]["modelIdentifier"]
        out.update({n: (judge.builtin_rubric(n), model) for n in names if n in judge.BUILTIN_RUBRICS})
    custom = automated.get("customMetricConfig")
    if custom:
        model = custom["evaluatorModelConfig"]["bedrockEvaluatorModels"][0]["modelIdentifier"]
        for source in custom["customMetrics"]:
            rubric = judge.custom_rubric(source["customMetricDefinition"])
            out[rubric.name] = (rubric, model)
    return out


def _cached(path: Path, progress: _Progress, generator: inference.Generator, model: str, prompts: list[str],
            params: dict[str, Any], labels: list[str] | None) -> list[str]:
    return cached(path, prompts, progress, lambda: generator.answer(model, prompts, params, progress.step, labels),
                  model)


def cached(path: Path, prompts: Any, progress: _Progress, ask: Callable[[], list[Any]], what: str) -> list[Any]:
    """Answers (JSON values) from an earlier attempt of this job, or new ones from `ask` (then kept for the
    next attempt).

    The file is replaced atomically and names its prompts, so a write cut short or a dataset replaced between
    attempts means asking again, not a resumed job that fails."""
    if path.is_file():
        try:
            kept = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            kept = None
        if isinstance(kept, dict) and kept.get("prompts") == prompts:
            log.info("reusing %d answers of %s from an earlier attempt (%s)", len(kept["answers"]), what, path.name)
            progress.done += len(kept["answers"])
            progress.publish()
            return kept["answers"]
    answers = ask()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"prompts": prompts, "answers": answers}, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)
    return answers


@dataclass
class _Judged:
    rubric: Any
    verdicts: list[Any]

    def entry(self, records: list[PromptRecord]) -> dict[str, Any]:
        summary = judge.summarise(self.rubric, self.verdicts)
        groups: dict[str, list[float]] = {}
        for record, verdict in zip(records, self.verdicts, strict=True):
            if record.category is not None and verdict.score is not None:
                groups.setdefault(record.category, []).append(verdict.score)
        return {"description": self.rubric.description or _first_line(self.rubric.instructions), "range": [0, 1],
                "higherIsBetter": self.rubric.higher_is_better, "score": summary["mean"], "count": summary["count"],
                "byCategory": {c: sum(v) / len(v) for c, v in sorted(groups.items())},
                "unparseable": summary["unparseable"], "distribution": summary.get("distribution") or {},
                "sample": statistics.Sample([v.score for v in self.verdicts])}


def _judge(generator: inference.Generator, rubric: Any, judge_model: str, dataset: Dataset, answers: list[str],
           progress: _Progress) -> _Judged:
    def generate(conversations: list[list[dict[str, str]]]) -> list[str]:
        labels = [f"judging dataset {dataset.name} line {r.line}" for r in dataset.records]
        return generator.chat(judge_model, conversations, JUDGE_INFERENCE, progress.step,
                              labels if len(labels) == len(conversations) else None)

    items = [(r.prompt, a, r.reference) for r, a in zip(dataset.records, answers, strict=True)]
    return _Judged(rubric, list(judge.judge(generate, rubric, items)))


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= 160 else line[:157] + "..."


def _automatic_entry(result: scoring.MetricResult) -> dict[str, Any]:
    metric = result.spec
    return {"description": metric.description, "range": [metric.low, metric.high],
            "higherIsBetter": metric.higher_is_better, "score": result.overall,
            "count": sum(1 for v in result.values if v is not None), "byCategory": result.by_category,
            "sample": statistics.Sample(result.values, result.stats, result.from_stats)}


def _add(entries: dict[str, dict[str, Any]], name: str, model: str, one: dict[str, Any], kind: str) -> None:
    """Merge one model's result for a metric into the metric's entry (the report's shape: per model).

    `one["sample"]` (the per-record scores) is what `task_metrics` draws intervals from; it waits in the
    entry's private `_samples` until then."""
    entry = entries.setdefault(name, {"name": name, "kind": kind, "description": one["description"],
                                      "range": one["range"], "higherIsBetter": one["higherIsBetter"],
                                      "scores": {}, "counts": {}, "byCategory": {}})
    if one.get("sample") is not None:
        entry.setdefault("_samples", {})[model] = one["sample"]
    entry["scores"][model] = one["score"]
    entry["counts"][model] = one["count"]
    for category, value in one["byCategory"].items():
        entry["byCategory"].setdefault(category, {})[model] = value
    if kind == "judge":
        entry.setdefault("unparseable", {})[model] = one["unparseable"]
        if one["distribution"]:
            entry.setdefault("distribution", {})[model] = one["distribution"]


def task_metrics(entries: dict[str, dict[str, Any]], models: list[str], records: int, settings: statistics.Settings,
                 categories: list[str | None] | None = None, clusters: list[Any] | None = None
                 ) -> list[dict[str, Any]]:
    """A task's metric entries, each with its bootstrap intervals and, for two models, their paired comparison."""
    metrics = list(entries.values())
    samples = {entry["name"]: entry.pop("_samples", {}) for entry in metrics}
    statistics.annotate(metrics, samples, models, records, settings, categories=categories, clusters=clusters)
    return metrics


def _perplexity(cache: dict[str, Any], runtime: Any, account: str, model: str, settings: Any) -> Any:
    from outcrop.evaluation.metrics.perplexity import Perplexity

    if model not in cache:
        served, _ = runtime.target(account, model)
        cache[model] = Perplexity(served.weights, cache_dir=settings.models_dir, base=served.base)
    return cache[model]


def _bertscore() -> Any:
    from outcrop.evaluation.metrics.bertscore import BertScore

    return BertScore()


def _toxicity() -> Any:
    from outcrop.evaluation.metrics.toxicity import default_classifier

    return default_classifier()


def _store_human_tasks(db: Database, iam: IamService, region: str, row: EvaluationJobRow, sets: list[Dataset],
                       models: list[tuple[str, Any]], answers: dict[tuple[int, int], list[str]]) -> None:
    from outcrop.evaluation.human.items import create_tasks, task_count
    from outcrop.evaluation.human.service import HumanReview

    if task_count(db, row.job_arn):  # a resumed job stored its items before the restart
        return
    workflow = row.request["evaluationConfig"]["human"]["humanWorkflowConfig"]
    team = HumanReview(db, iam, region).resolve_flow_definition(row.account_id, workflow["flowDefinitionArn"])
    items = [{"taskType": dataset.task_type, "dataset": dataset.name, "record": record.raw,
              "responses": [{"modelIdentifier": model, "response": answers[d, m][i]}
                            for m, (model, _) in enumerate(models)]}
             for d, dataset in enumerate(sets) for i, record in enumerate(dataset.records)]
    create_tasks(db, row.job_arn, items, team.workers_per_item)


def _row(db: Database, job_arn: str) -> EvaluationJobRow:
    with db.session() as session:
        row = session.get(EvaluationJobRow, job_arn)
    if row is None:
        raise ValidationException(f"The evaluation job {job_arn} no longer exists")
    return row
