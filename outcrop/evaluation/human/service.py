"""`HumanReview`: the human evaluation facade that the rating pages, the `workteam` CLI and the
evaluation service use. It delegates to `teams`, `items`, `ratings` and `aggregation`, and holds the
hook that ends a fully rated job."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from outcrop.evaluation.human import aggregation, items, ratings, teams
from outcrop.evaluation.human.items import TaskView
from outcrop.evaluation.human.teams import FlowDefinition
from outcrop.iam.service import IamService
from outcrop.platform.database import Database

log = logging.getLogger(__name__)


class HumanReview:
    """Work teams, the rater's view of human jobs, ratings, and the hook that ends a fully rated job."""

    def __init__(self, db: Database, iam: IamService, region: str,
                 on_complete: Callable[[str], None] | None = None) -> None:
        self.db = db
        self.iam = iam
        self.region = region
        #: Called with the job ARN once, when the job's last needed rating is saved (the evaluation
        #: service aggregates, writes the report and completes the job). If it raises, that is logged.
        self.on_complete = on_complete

    # -- flow definitions ---------------------------------------------------------------------

    def create_flow_definition(self, account_id: str, name: str, members: list[str], workers_per_item: int) -> str:
        """A work team of the account's IAM users (names or ARNs); returns its flow definition ARN."""
        return teams.create(self.db, self.iam, self.region, account_id, name, members, workers_per_item)

    def get_flow_definition(self, account_id: str, name_or_arn: str) -> FlowDefinition:
        return teams.get(self.db, self.region, account_id, name_or_arn)

    def list_flow_definitions(self, account_id: str) -> list[FlowDefinition]:
        return teams.list_all(self.db, account_id)

    def delete_flow_definition(self, account_id: str, name_or_arn: str) -> None:
        """Refused while a human job in progress uses the team: its raters would lose their items."""
        teams.delete_team(self.db, self.region, account_id, name_or_arn)

    def resolve_flow_definition(self, account_id: str, arn: str) -> FlowDefinition:
        """For CreateEvaluationJob: the flow definition that `humanWorkflowConfig.flowDefinitionArn` names."""
        return teams.resolve(self.db, self.region, account_id, arn)

    # -- the rater's view ---------------------------------------------------------------------

    def job_summary(self, job_arn: str, rater_arn: str) -> dict[str, Any]:
        """What the rater's pages show about one job: name, instructions, status and progress (overall
        and the rater's own: `ratedByYou`, `leftForYou`)."""
        return items.summary(self.db, teams.job_for_rater(self.db, job_arn, rater_arn), rater_arn)

    def jobs_for(self, rater_arn: str) -> list[dict[str, Any]]:
        """The InProgress human jobs whose work team includes the rater, oldest first, with progress."""
        return [items.summary(self.db, job, rater_arn) for job in teams.jobs_of_rater(self.db, rater_arn)]

    def next_task(self, job_arn: str, rater_arn: str) -> TaskView | None:
        """The first item by position that the rater has not rated and that still needs ratings; None
        when there is none (or the job no longer takes ratings)."""
        return items.next_task(self.db, teams.job_for_rater(self.db, job_arn, rater_arn), rater_arn)

    def task_view(self, job_arn: str, task_id: str, rater_arn: str) -> TaskView:
        """One item as the rater sees it (to re-render a form the rater got wrong)."""
        return items.task_view(self.db, teams.job_for_rater(self.db, job_arn, rater_arn), task_id)

    def progress(self, job_arn: str) -> dict[str, Any]:
        """{ratings (counting at most ratings_needed per item), needed, percent}."""
        return items.progress(self.db, job_arn)

    # -- ratings ------------------------------------------------------------------------------

    def submit(self, job_arn: str, task_id: str, rater_arn: str, values: dict[str, Any],
               comment: str | None = None) -> dict[str, Any]:
        """Save one rater's ratings of one item (values in model terms, see `methods`); returns the
        job's progress. The rating that completes the job calls the completion hooks."""
        job = teams.job_for_rater(self.db, job_arn, rater_arn)
        progress = ratings.save(self.db, job, task_id, rater_arn, values, comment)
        if progress["ratings"] == progress["needed"]:
            self._complete(job_arn)
        return progress

    def _complete(self, job_arn: str) -> None:
        if self.on_complete is None:
            return
        try:
            self.on_complete(job_arn)
        except Exception:  # the rating is saved; the rater is not the one to hear about the report
            log.exception("completing the human evaluation job %s failed", job_arn)

    def finish_rated_jobs(self) -> list[str]:
        """Call `on_complete` for InProgress human jobs whose every item is rated: a server that stopped
        between the last rating and its completion finishes them at the next start. Returns their ARNs."""
        done = []
        for job in teams.jobs_in_progress(self.db):
            progress = self.progress(job.job_arn)
            if progress["needed"] and progress["ratings"] == progress["needed"]:
                self._complete(job.job_arn)
                done.append(job.job_arn)
        return done

    def aggregate(self, job_arn: str) -> list[dict[str, Any]]:
        """[{taskType, dataset, metrics: [entry]}] with one entry per custom metric in the report's shape:
        {name, kind: "human", description, ratingMethod, range, higherIsBetter, scores, counts,
        byCategory, distribution, winRates (comparisons only)}."""
        return aggregation.aggregate(self.db, job_arn)

    def ratings(self, job_arn: str) -> list[dict[str, Any]]:
        """Every rating of a job, for per-record outputs: {taskId, raterArn, values, comment, createdAt}."""
        return ratings.list_all(self.db, job_arn)
