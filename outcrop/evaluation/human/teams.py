"""Work teams (flow definitions): creating and resolving them, who is on one, and the human jobs a rater may rate.

A flow definition ARN names a work team of the account's IAM users and how many of them rate each item.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from outcrop.errors import ConflictException, ResourceNotFoundException, ValidationException
from outcrop.evaluation.tables import EvaluationJobRow, FlowDefinitionRow, JobStatus
from outcrop.iam.principal import USER, principal_arn
from outcrop.iam.service import IamService
from outcrop.iam.tables import PrincipalRow
from outcrop.platform.database import Database, as_utc, utc_now

HUMAN_JOB = "Human"

_FLOW_NAME = re.compile(r"[a-z0-9](-*[a-z0-9]){0,62}")
_FLOW_ARN = re.compile(r"arn:aws:sagemaker:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):flow-definition/(?P<name>.+)")
_USER_ARN = re.compile(r"arn:aws:iam::(?P<account>\d{12}):user/(?P<name>.+)")


@dataclass(frozen=True)
class FlowDefinition:
    arn: str
    account_id: str
    name: str
    #: IAM user ARNs.
    members: list[str]
    workers_per_item: int
    created_at: datetime

    @classmethod
    def of(cls, row: FlowDefinitionRow) -> FlowDefinition:
        return cls(row.arn, row.account_id, row.name, list(row.members), row.workers_per_item, row.created_at)


def flow_definition_arn(region: str, account_id: str, name: str) -> str:
    return f"arn:aws:sagemaker:{region}:{account_id}:flow-definition/{name}"


def flow_arn_of(request: dict[str, Any]) -> str:
    """The flow definition ARN a human job's request names."""
    human = request.get("evaluationConfig", {}).get("human", {})
    return human.get("humanWorkflowConfig", {}).get("flowDefinitionArn", "")


def is_member(session, flow: FlowDefinitionRow, user_arn: str) -> bool:
    """Whether `user_arn` is on the work team: named in it, and the very user it named. A member deleted
    since is off the team, and so is a later user given the same name (created after the team), who
    would otherwise inherit the deleted one's place and ratings to give."""
    if user_arn not in flow.members:
        return False
    principal = session.get(PrincipalRow, user_arn)
    return (principal is not None and principal.kind == USER
            and as_utc(principal.created_at) <= as_utc(flow.created_at))


# -- flow definitions ---------------------------------------------------------------------------


def create(db: Database, iam: IamService, region: str, account_id: str, name: str, members: list[str],
           workers_per_item: int) -> str:
    """A work team of the account's IAM users (names or ARNs); returns its flow definition ARN."""
    if not _FLOW_NAME.fullmatch(name or ""):
        raise ValidationException(f"The flow definition name '{name}' must be 1-63 lowercase letters, digits "
                                  "or hyphens, starting and ending with a letter or digit")
    arns: list[str] = []
    for member in members:
        arn = _member_arn(iam, account_id, member)
        if arn not in arns:
            arns.append(arn)
    if not arns:
        raise ValidationException("A work team needs at least one member (an IAM user of the account)")
    if isinstance(workers_per_item, bool) or not isinstance(workers_per_item, int) \
            or not 1 <= workers_per_item <= len(arns):
        raise ValidationException(f"workers per item must be from 1 to the team's size ({len(arns)}), "
                                  f"not {workers_per_item!r}")
    arn = flow_definition_arn(region, account_id, name)
    try:
        with db.session() as session:
            session.add(FlowDefinitionRow(arn=arn, account_id=account_id, name=name, members=arns,
                                          workers_per_item=workers_per_item, created_at=utc_now()))
    except IntegrityError:
        raise ConflictException(f"A flow definition named {name} already exists in account {account_id}") \
            from None
    return arn


def _member_arn(iam: IamService, account_id: str, member: str) -> str:
    member = (member or "").strip()
    match = _USER_ARN.fullmatch(member)
    if member.startswith("arn:") and match is None:
        raise ValidationException(f"The member '{member}' is not an IAM user ARN (arn:aws:iam::ACCOUNT:user/NAME)")
    if match and match.group("account") != account_id:
        raise ValidationException(f"The user {member} belongs to another account than {account_id}")
    arn = member if match else principal_arn(account_id, USER, member)
    try:
        principal = iam.get_principal(arn)
    except ResourceNotFoundException:
        raise ValidationException(f"The IAM user '{member}' does not exist in account {account_id}") from None
    if principal.kind != USER:
        raise ValidationException(f"'{member}' is not an IAM user; only users can rate")
    return arn


def get(db: Database, region: str, account_id: str, name_or_arn: str) -> FlowDefinition:
    arn = name_or_arn if name_or_arn.startswith("arn:") else flow_definition_arn(region, account_id, name_or_arn)
    with db.session() as session:
        row = session.get(FlowDefinitionRow, arn)
    if row is None or row.account_id != account_id:
        raise ResourceNotFoundException(f"The flow definition {arn} does not exist")
    return FlowDefinition.of(row)


def list_all(db: Database, account_id: str) -> list[FlowDefinition]:
    with db.session() as session:
        rows = session.scalars(select(FlowDefinitionRow).where(FlowDefinitionRow.account_id == account_id)
                               .order_by(FlowDefinitionRow.name)).all()
    return [FlowDefinition.of(r) for r in rows]


def delete_team(db: Database, region: str, account_id: str, name_or_arn: str) -> None:
    """Refused while a human job in progress uses the team: its raters would lose their items."""
    flow = get(db, region, account_id, name_or_arn)
    busy = [job.job_name for job in jobs_in_progress(db, account_id) if flow_arn_of(job.request) == flow.arn]
    if busy:
        raise ConflictException(f"The flow definition {flow.name} is used by evaluation jobs in progress: "
                                f"{', '.join(busy)}")
    with db.session() as session:
        session.execute(delete(FlowDefinitionRow).where(FlowDefinitionRow.arn == flow.arn))


def resolve(db: Database, region: str, account_id: str, arn: str) -> FlowDefinition:
    """For CreateEvaluationJob: the flow definition that `humanWorkflowConfig.flowDefinitionArn` names."""
    field = "evaluationConfig.human.humanWorkflowConfig.flowDefinitionArn"
    match = _FLOW_ARN.fullmatch(arn or "")
    if match is None:
        raise ValidationException(f"{field} '{arn}' is not a flow definition ARN "
                                  "(arn:aws:sagemaker:REGION:ACCOUNT:flow-definition/NAME)")
    if match.group("account") != account_id:
        raise ValidationException(f"{field} '{arn}' belongs to another account than {account_id}")
    if match.group("region") != region:
        raise ValidationException(f"{field} '{arn}' is in region {match.group('region')}, not {region}")
    with db.session() as session:
        row = session.get(FlowDefinitionRow, arn)
    if row is None:
        raise ResourceNotFoundException(f"The flow definition {arn} does not exist; create its work team with "
                                        f"`outcrop workteam create {match.group('name')} --users ...`")
    flow = FlowDefinition.of(row)
    with db.session() as session:
        left = [m for m in flow.members if is_member(session, row, m)]
    if len(left) < flow.workers_per_item:
        raise ValidationException(f"The work team {flow.name} needs {flow.workers_per_item} raters per item but "
                                  f"only {len(left)} of its users still exist (a user deleted and created "
                                  "again is a new user: put them on a new work team)")
    return flow


# -- the jobs a rater may rate ------------------------------------------------------------------


def jobs_in_progress(db: Database, account_id: str | None = None) -> list[EvaluationJobRow]:
    """The account's InProgress human jobs (every account's when None), oldest first."""
    query = select(EvaluationJobRow).where(EvaluationJobRow.job_type == HUMAN_JOB,
                                           EvaluationJobRow.status == JobStatus.IN_PROGRESS)
    if account_id is not None:
        query = query.where(EvaluationJobRow.account_id == account_id)
    with db.session() as session:
        return list(session.scalars(query.order_by(EvaluationJobRow.created_at)))


def job_for_rater(db: Database, job_arn: str, rater_arn: str) -> EvaluationJobRow:
    """The human job `rater_arn` is on the work team of. A job that does not exist and another
    team's job are the same ResourceNotFoundException, so that a rater learns nothing of the
    jobs that are not theirs (not even their names)."""
    with db.session() as session:
        job = session.get(EvaluationJobRow, job_arn)
        flow = (session.get(FlowDefinitionRow, flow_arn_of(job.request))
                if job is not None and job.job_type == HUMAN_JOB else None)
        member = flow is not None and is_member(session, flow, rater_arn)
    if not member:
        raise ResourceNotFoundException(f"There is no human evaluation job {job_arn} for you to rate")
    return job


def jobs_of_rater(db: Database, rater_arn: str) -> list[EvaluationJobRow]:
    """The InProgress human jobs whose work team includes the rater, oldest first."""
    match = _USER_ARN.fullmatch(rater_arn or "")
    if match is None:
        return []
    with db.session() as session:
        teams = {row.arn for row in session.scalars(select(FlowDefinitionRow).where(
            FlowDefinitionRow.account_id == match.group("account"))) if is_member(session, row, rater_arn)}
    return [job for job in jobs_in_progress(db, match.group("account")) if flow_arn_of(job.request) in teams]
