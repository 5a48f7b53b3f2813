"""Ratings: saving one rater's ratings of one item, and reading a job's ratings back.

Each submission first writes the job's row, which serializes the ratings of a job on both backends, so
exactly one of them sees the last needed rating arrive.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from outcrop.errors import ConflictException, ValidationException
from outcrop.evaluation.human.items import get_task
from outcrop.evaluation.human.methods import check_values, metrics_for
from outcrop.evaluation.tables import EvaluationJobRow, HumanRatingRow, HumanTaskRow, JobStatus
from outcrop.platform.database import Database, utc_now

MAX_COMMENT = 2000
#: ConflictException messages the rating pages answer with the next item rather than an error.
ALREADY_RATED = "You have already rated this item"
ITEM_FULL = "This item already has all the ratings it needs"


def save(db: Database, job: EvaluationJobRow, task_id: str, rater_arn: str, values: dict[str, Any],
         comment: str | None = None) -> dict[str, Any]:
    """Save one rater's ratings of one item of `job` (values in model terms, see
    `outcrop.evaluation.human.methods`); returns the job's progress {ratings, needed, percent}."""
    job_arn = job.job_arn
    if comment is not None and not isinstance(comment, str):
        raise ValidationException("comment must be text")
    # Browsers send a textarea's line breaks as CRLF but count them as one character against its
    # maxlength: count them the same way, so a comment the page took is never refused here.
    comment = (comment or "").replace("\r\n", "\n").replace("\r", "\n").strip() or None
    if comment and len(comment) > MAX_COMMENT:
        raise ValidationException(f"comment is {len(comment)} characters; the limit is {MAX_COMMENT}")
    task = get_task(db, job, task_id)
    values = check_values(metrics_for(job.request, task.task_type, task.dataset_name),
                          [r["modelIdentifier"] for r in task.responses], values)
    try:
        with db.session() as session:
            # Writing the job's row first takes its lock (PostgreSQL: the row; SQLite: the database),
            # so the submissions of one job run one after another and exactly one of them sees the
            # last needed rating arrive, however many raters submit at the same moment.
            session.execute(update(EvaluationJobRow).where(EvaluationJobRow.job_arn == job_arn)
                            .values(updated_at=EvaluationJobRow.updated_at))
            status = session.scalar(select(EvaluationJobRow.status).where(EvaluationJobRow.job_arn == job_arn))
            if status != JobStatus.IN_PROGRESS:
                raise ConflictException(f"The evaluation job {job.job_name} is {status}; it takes no more ratings")
            if session.scalar(select(HumanRatingRow.id).where(HumanRatingRow.task_id == task_id,
                                                              HumanRatingRow.rater_arn == rater_arn)):
                raise ConflictException(ALREADY_RATED)
            have = session.scalar(select(func.count()).select_from(HumanRatingRow)
                                  .where(HumanRatingRow.task_id == task_id))
            if have >= task.ratings_needed:
                raise ConflictException(ITEM_FULL)
            session.add(HumanRatingRow(task_id=task_id, job_arn=job_arn, rater_arn=rater_arn, values=values,
                                       comment=comment, created_at=utc_now()))
            session.flush()
            needed = session.scalar(select(func.sum(HumanTaskRow.ratings_needed))
                                    .where(HumanTaskRow.job_arn == job_arn))
            per_task = session.execute(select(HumanTaskRow.ratings_needed, func.count(HumanRatingRow.id))
                                       .join(HumanRatingRow, HumanRatingRow.task_id == HumanTaskRow.task_id)
                                       .where(HumanTaskRow.job_arn == job_arn)
                                       .group_by(HumanTaskRow.task_id, HumanTaskRow.ratings_needed)).all()
            rated = sum(min(n, cap) for cap, n in per_task)
    except IntegrityError:  # the same rater's second tab, a moment apart
        raise ConflictException(ALREADY_RATED) from None
    return {"ratings": rated, "needed": needed, "percent": round(100 * rated / needed, 1)}


def list_all(db: Database, job_arn: str) -> list[dict[str, Any]]:
    """Every rating of a job, for per-record outputs: {taskId, raterArn, values, comment, createdAt}."""
    with db.session() as session:
        rows = session.scalars(select(HumanRatingRow).where(HumanRatingRow.job_arn == job_arn)
                               .order_by(HumanRatingRow.id)).all()
    return [{"taskId": r.task_id, "raterArn": r.rater_arn, "values": r.values, "comment": r.comment,
             "createdAt": r.created_at.isoformat()} for r in rows]
