"""A human job's items: storing them for a job, the order their responses are shown in, and the rater's view.

Raters never see model names: responses are "Response 1", "Response 2", in an order drawn per item
from a seed of the job ARN and the item's position (so it is the same for every rater and on every
page load), and stored with the item as each response's `shownAs`.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select

from outcrop.errors import ConflictException, ResourceNotFoundException, ValidationException
from outcrop.evaluation.human.methods import (
    CHOICE,
    COMPARISON_LIKERT,
    DOWN,
    LIKERT,
    PER_RESPONSE_METHODS,
    RANK,
    THUMBS,
    TIE,
    UP,
    Metric,
    competition_ranks,
    metrics_for,
    whole_number,
)
from outcrop.evaluation.tables import EvaluationJobRow, HumanRatingRow, HumanTaskRow, JobStatus
from outcrop.platform.database import Database


def _display_order(job_arn: str, position: int, count: int) -> list[int]:
    """For each response, its 1-based place on the page: a shuffle seeded by the job and the item, so
    that position bias averages out over the items while every rater and reload sees the same order."""
    order = list(range(1, count + 1))
    seed = int.from_bytes(hashlib.sha256(f"{job_arn}\n{position}".encode()).digest()[:8], "big")
    random.Random(seed).shuffle(order)
    return order


def create_tasks(db: Database, job_arn: str, items: list[dict[str, Any]], ratings_needed: int) -> int:
    """Store a human job's items; returns how many.

    `items`: [{taskType, dataset (its name), record: {prompt, referenceResponse?, category?},
    responses: [{modelIdentifier, response}]}], responses in the job's model order. Call it once
    with every item of the job: a second call (a restarted job) replaces the items while none has
    a rating yet, and is a ConflictException once raters have started."""
    if not isinstance(ratings_needed, int) or isinstance(ratings_needed, bool) or ratings_needed < 1:
        raise ValidationException(f"ratings_needed must be a whole number of at least 1, not {ratings_needed!r}")
    if not items:
        raise ValidationException("A human evaluation job needs at least one item to rate")
    rows = []
    for position, item in enumerate(items):
        where = f"items[{position}]"
        record, responses = item.get("record"), item.get("responses")
        for key in ("taskType", "dataset"):
            if not isinstance(item.get(key), str) or not item[key]:
                raise ValidationException(f"{where}.{key} is required")
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
            raise ValidationException(f"{where}.record.prompt is required")
        if not isinstance(responses, list) or not responses:
            raise ValidationException(f"{where}.responses must list each model's response")
        models = [r.get("modelIdentifier") if isinstance(r, dict) else None for r in responses]
        if any(not isinstance(m, str) or not m for m in models) or len(set(models)) != len(models):
            # Ratings are stored keyed by model, so two responses of one identifier could not be told apart.
            raise ValidationException(f"{where}.responses need distinct modelIdentifier values, got {models}")
        order = _display_order(job_arn, position, len(responses))
        kept_record = {k: record[k] for k in ("prompt", "referenceResponse", "category") if record.get(k) is not None}
        rows.append(HumanTaskRow(
            task_id=uuid.uuid4().hex, job_arn=job_arn, position=position, task_type=item["taskType"],
            dataset_name=item["dataset"], record=kept_record, ratings_needed=ratings_needed,
            responses=[{"modelIdentifier": r["modelIdentifier"], "response": str(r.get("response") or ""),
                        "shownAs": shown} for r, shown in zip(responses, order, strict=True)]))
    with db.session() as session:
        rated = session.scalar(select(func.count()).select_from(HumanRatingRow)
                               .where(HumanRatingRow.job_arn == job_arn))
        if rated:
            raise ConflictException(f"The evaluation job {job_arn} already has {rated} ratings; its items "
                                    "cannot be replaced")
        session.execute(delete(HumanTaskRow).where(HumanTaskRow.job_arn == job_arn))
        session.add_all(rows)
    return len(rows)


def task_count(db: Database, job_arn: str) -> int:
    """How many items a job has (0 before `create_tasks`): a restarted job's cue to skip generating."""
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(HumanTaskRow).where(HumanTaskRow.job_arn == job_arn))


@dataclass(frozen=True)
class Shown:
    """One response as the rater sees it."""

    label: str  # "Response 1"
    model: str  # never shown; maps the rater's answer back
    text: str


@dataclass(frozen=True)
class TaskView:
    """One item on the rater's page."""

    task_id: str
    job_arn: str
    #: 1-based place of the item in the job, and the job's item count.
    number: int
    total: int
    task_type: str
    dataset: str
    prompt: str
    reference: str | None
    category: str | None
    shown: list[Shown]
    metrics: list[Metric]
    #: The item's models in the job's order (the order comparisons' "first" and "second" mean).
    models: list[str]


def view(task: HumanTaskRow, total: int, metrics: list[Metric]) -> TaskView:
    responses = task.responses
    shown = sorted(responses, key=lambda r: r.get("shownAs", 0))
    labels = ["Response"] if len(shown) == 1 else [f"Response {i}" for i in range(1, len(shown) + 1)]
    view = TaskView(task.task_id, task.job_arn, task.position + 1, total, task.task_type, task.dataset_name,
                    task.record.get("prompt", ""), task.record.get("referenceResponse"), task.record.get("category"),
                    [Shown(label, r["modelIdentifier"], r["response"]) for label, r in zip(labels, shown, strict=True)],
                    metrics, [r["modelIdentifier"] for r in responses])
    return view


def answers_to_values(view: TaskView, answers: dict[str, Any]) -> dict[str, Any]:
    """Turn what the rater picked on the page (in terms of what they saw) into stored values.

    `answers` per metric: for ThumbsUpDown, IndividualLikertScale and ComparisonRank a list aligned
    with `view.shown` ("up"/"down", 1..5, ranks); for ComparisonLikertScale 1..5 where 1 means the
    response shown first is much better; for ComparisonChoice the 1-based number of the response
    shown, or "tie". Messages speak of "Response 1" and never of models, to keep the rating blind."""
    values: dict[str, Any] = {}
    shown_models = [s.model for s in view.shown]
    for metric in view.metrics:
        answer = answers.get(metric.name)
        method = metric.rating_method
        if method in PER_RESPONSE_METHODS:
            answer = list(answer) if isinstance(answer, list | tuple) else []
            answer += [None] * (len(view.shown) - len(answer))
            picked = {}
            for shown, value in zip(view.shown, answer, strict=False):
                if value in (None, ""):
                    what = {THUMBS: "thumbs up or down", LIKERT: "a rating from 1 to 5", RANK: "a rank"}[method]
                    raise ValidationException(f"{metric.name}: choose {what} for {shown.label}")
                picked[shown.model] = value if method == THUMBS else whole_number(value)
                high = 5 if method == LIKERT else len(view.shown)
                if (value not in (UP, DOWN)) if method == THUMBS else not 1 <= (picked[shown.model] or 0) <= high:
                    raise ValidationException(f"{metric.name}: {value!r} is not a choice for {shown.label}")
            if method == RANK and not competition_ranks(list(picked.values())):
                raise ValidationException(f"{metric.name}: give rank 1 to the better response (or to both when "
                                          "they are equally good)")
            values[metric.name] = picked
        elif method == COMPARISON_LIKERT:
            v = whole_number(answer)
            if answer in (None, ""):
                raise ValidationException(f"{metric.name}: choose how much better one response is (1 to 5)")
            if v is None or not 1 <= v <= 5:
                raise ValidationException(f"{metric.name}: {answer!r} is not a choice from 1 to 5")
            # The scale runs from the response shown first to the one shown second; store it from the
            # job's first model to its second.
            values[metric.name] = v if shown_models == view.models else 6 - v
        elif method == CHOICE:
            if answer in (None, ""):
                raise ValidationException(f"{metric.name}: choose the better response, or a tie")
            if answer == TIE:
                values[metric.name] = TIE
            else:
                v = whole_number(answer)
                if v is None or not 1 <= v <= len(view.shown):
                    raise ValidationException(f"{metric.name}: {answer!r} is not a choice")
                values[metric.name] = view.shown[v - 1].model
    return values



# -- the rater's view of a job ------------------------------------------------------------------


def _instructions(request: dict[str, Any]) -> str:
    return request.get("evaluationConfig", {}).get("human", {}).get("humanWorkflowConfig", {}).get("instructions", "")


def counts(db: Database, job_arn: str,
           rater_arn: str | None = None) -> tuple[list[HumanTaskRow], dict[str, int], set[str]]:
    """The job's items by position, ratings per item, and the items `rater_arn` rated."""
    with db.session() as session:
        tasks = list(session.scalars(select(HumanTaskRow).where(HumanTaskRow.job_arn == job_arn)
                                     .order_by(HumanTaskRow.position)))
        per_task = dict(session.execute(select(HumanRatingRow.task_id, func.count()).where(
            HumanRatingRow.job_arn == job_arn).group_by(HumanRatingRow.task_id)).all())
        mine = set(session.scalars(select(HumanRatingRow.task_id).where(
            HumanRatingRow.job_arn == job_arn, HumanRatingRow.rater_arn == rater_arn))) if rater_arn else set()
    return tasks, per_task, mine


def progress_of(tasks: list[HumanTaskRow], counts: dict[str, int]) -> dict[str, Any]:
    """{ratings (counting at most ratings_needed per item), needed, percent}."""
    needed = sum(t.ratings_needed for t in tasks)
    ratings = sum(min(counts.get(t.task_id, 0), t.ratings_needed) for t in tasks)
    return {"ratings": ratings, "needed": needed, "percent": round(100 * ratings / needed, 1) if needed else 0.0}


def progress(db: Database, job_arn: str) -> dict[str, Any]:
    """The job's progress (see `progress_of`)."""
    tasks, per_task, _ = counts(db, job_arn)
    return progress_of(tasks, per_task)


def summary(db: Database, job: EvaluationJobRow, rater_arn: str) -> dict[str, Any]:
    """What the rater's pages show about one job: name, instructions, status and progress (overall
    and the rater's own: `ratedByYou`, `leftForYou`)."""
    tasks, per_task, mine = counts(db, job.job_arn, rater_arn)
    left = sum(1 for t in tasks if t.task_id not in mine and per_task.get(t.task_id, 0) < t.ratings_needed)
    return {"jobArn": job.job_arn, "jobName": job.job_name, "status": job.status,
            "instructions": _instructions(job.request), "items": len(tasks),
            **progress_of(tasks, per_task), "ratedByYou": len(mine), "leftForYou": left}


def next_task(db: Database, job: EvaluationJobRow, rater_arn: str) -> TaskView | None:
    """The first item by position that the rater has not rated and that still needs ratings; None
    when there is none (or the job no longer takes ratings)."""
    if job.status != JobStatus.IN_PROGRESS:
        return None
    tasks, per_task, mine = counts(db, job.job_arn, rater_arn)
    for task in tasks:
        if task.task_id not in mine and per_task.get(task.task_id, 0) < task.ratings_needed:
            return view(task, len(tasks), metrics_for(job.request, task.task_type, task.dataset_name))
    return None


def get_task(db: Database, job: EvaluationJobRow, task_id: str) -> HumanTaskRow:
    """One item of the job, or a ResourceNotFoundException."""
    with db.session() as session:
        task = session.get(HumanTaskRow, task_id)
    if task is None or task.job_arn != job.job_arn:
        raise ResourceNotFoundException(f"The job {job.job_name} has no item {task_id}")
    return task


def task_view(db: Database, job: EvaluationJobRow, task_id: str) -> TaskView:
    """One item as the rater sees it (to re-render a form the rater got wrong)."""
    task = get_task(db, job, task_id)
    return view(task, task_count(db, job.job_arn), metrics_for(job.request, task.task_type, task.dataset_name))
