"""Batch inference jobs as the bedrock API shows them: create, get, list, stop.

The work happens in `outcrop.batch.job`, run by the job runner in its own process; this module checks a
request, records it, and reads the job back. A job's status moves on in its process (Validating,
Scheduled, InProgress, then how it ended); what no process is left to record (a stop or a timeout that
came while the job still waited in the queue, a stop finished by the runner) is settled here when the
job is read.
"""

from __future__ import annotations

import functools
import posixpath
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from outcrop.batch.records import INPUT_SUFFIX, MANIFEST_NAME
from outcrop.batch.tables import FINISHED, STOPPABLE, InvocationJobStatus, ModelInvocationJobRow
from outcrop.catalog.service import RERANK_FORMAT, AliasTargetMissing
from outcrop.errors import (
    AccessDeniedException,
    ConflictException,
    ResourceNotFoundException,
    TooManyTagsException,
    ValidationException,
)
from outcrop.iam import buckets
from outcrop.iam.principal import Principal
from outcrop.iam.scoped_store import bucket_arn, object_arn
from outcrop.iam.service import IamService
from outcrop.platform.database import Database, as_utc, utc_now
from outcrop.platform.idempotency import run_once
from outcrop.platform.ids import new_id
from outcrop.platform.jobs import TERMINAL, JobRunner
from outcrop.platform.objectstore import S3Uri
from outcrop.platform.pagination import page
from outcrop.profiles.service import InferenceProfiles

ENTRY_POINT = "outcrop.batch.job:run"
FAILURE_HOOK = "outcrop.batch.job:on_failure"
#: Bedrock's default timeout (timeoutDurationInHours is 24 to 168).
DEFAULT_TIMEOUT_HOURS = 24
INVOKE_MODEL = "InvokeModel"
#: Tags one job may carry (the size of Bedrock's TagList).
MAX_TAGS = 200
S = InvocationJobStatus


def job_arn(region: str, account: str, job_id: str) -> str:
    return f"arn:aws:bedrock:{region}:{account}:model-invocation-job/{job_id}"


def input_uri(request: dict[str, Any]) -> S3Uri:
    return S3Uri.parse(request["inputDataConfig"]["s3InputDataConfig"]["s3Uri"])


def is_single_file(uri: S3Uri) -> bool:
    """A URI whose key ends in `.jsonl` names one input file; any other names a folder, whose JSONL files
    (at any depth) are the job's input, as Bedrock takes either."""
    return uri.key.endswith(INPUT_SUFFIX)


def folder_prefix(uri: S3Uri) -> S3Uri:
    """A folder's prefix, ending in `/` (`s3://b/in` is the folder `in/`, not every key starting `in`)."""
    return S3Uri(uri.bucket, uri.key if not uri.key or uri.key.endswith("/") else uri.key + "/")


def output_prefix(request: dict[str, Any], job_id: str) -> S3Uri:
    """`<s3OutputDataConfig.s3Uri>/<job id>/`, where Bedrock writes a job's outputs."""
    return S3Uri.parse(request["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"]).join(f"{job_id}/")


def input_name(file_uri: S3Uri, request: dict[str, Any]) -> str:
    """An input file's name as its output is named after it: the file's name for a one-file job, its path
    under the folder for a folder's files (so two `part.jsonl` in two subfolders do not meet)."""
    source = input_uri(request)
    if is_single_file(source):
        return posixpath.basename(file_uri.key)
    return file_uri.key[len(folder_prefix(source).key):]


def required_permissions(request: dict[str, Any], job_id: str,
                         model_arns: Callable[[str], list[str]]) -> list[tuple[str, ...] | tuple[str, str, dict]]:
    """What the job's role must allow: read the input (list the folder, or get the file; a folder's files
    are each read through the role as well), invoke the model (every ARN its name reaches), write the
    outputs."""
    source = input_uri(request)
    needs: list[Any] = []
    if is_single_file(source):
        needs.append(("s3:GetObject", object_arn(source)))
    else:
        prefix = folder_prefix(source)
        needs.append(("s3:ListBucket", bucket_arn(prefix.bucket), {"s3:prefix": prefix.key}))
    needs += [("bedrock:InvokeModel", arn) for arn in model_arns(request["modelId"])]
    needs.append(("s3:PutObject", object_arn(output_prefix(request, job_id).join(MANIFEST_NAME))))
    return needs


def check_bucket_owners(db: Database, request: dict[str, Any]) -> None:
    """`s3BucketOwner`, S3's expected bucket owner: a bucket owned by another account is refused, as S3 refuses it."""
    for config in (request["inputDataConfig"]["s3InputDataConfig"], request["outputDataConfig"]["s3OutputDataConfig"]):
        expected = config.get("s3BucketOwner")
        if expected is None:
            continue
        bucket = S3Uri.parse(config["s3Uri"]).bucket
        if buckets.owner(db, bucket) != expected:
            raise AccessDeniedException(f"The bucket {bucket} is not owned by the expected bucket owner {expected}")


class BatchInference:
    def __init__(self, db: Database, iam: IamService, runner: JobRunner, profiles: InferenceProfiles,
                 region: str) -> None:
        self.db = db
        self.iam = iam
        self.runner = runner
        self.profiles = profiles
        self.region = region

    # -- create -----------------------------------------------------------------------------------

    def create_job(self, principal: Principal, params: dict[str, Any]) -> dict[str, Any]:
        return run_once(self.db, account_id=principal.account_id, operation="CreateModelInvocationJob",
                        token=params.get("clientRequestToken"), params=params, token_member="clientRequestToken",
                        create=lambda: self._create_job(principal.account_id, params))

    def _create_job(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        request = {k: v for k, v in params.items() if k not in ("clientRequestToken", "tags")}
        self._check_request(account, request)
        tags = _tag_map(params.get("tags") or [])
        job_id = new_id()
        arn = job_arn(self.region, account, job_id)
        request["jobId"] = job_id
        request.setdefault("timeoutDurationInHours", DEFAULT_TIMEOUT_HOURS)
        check_bucket_owners(self.db, request)
        # The role is checked now, so that a missing permission is the caller's error, not a failed job later.
        self.iam.check_role(request["roleArn"], account, required_permissions(
            request, job_id, functools.partial(self.profiles.invocation_arns, account)))
        now = utc_now()
        clash = ConflictException(f"A batch inference job named {request['jobName']} already exists")
        try:
            with self.db.session() as session:
                if session.scalar(select(func.count()).select_from(ModelInvocationJobRow).where(
                        ModelInvocationJobRow.account_id == account,
                        ModelInvocationJobRow.job_name == request["jobName"])):
                    raise clash
                session.add(ModelInvocationJobRow(
                    job_arn=arn, account_id=account, job_name=request["jobName"], model_id=request["modelId"],
                    status=S.SUBMITTED, request=request, client_request_token=params.get("clientRequestToken"),
                    tags=tags or None,
                    created_at=now, updated_at=now,
                    expires_at=now + timedelta(hours=request["timeoutDurationInHours"])))
        except IntegrityError:  # the same name created at the same moment by another request
            raise clash from None
        runner_id = self.runner.submit(account, ENTRY_POINT, {"jobArn": arn}, failure_hook=FAILURE_HOOK)
        with self.db.session() as session:
            session.get(ModelInvocationJobRow, arn).runner_job_id = runner_id
        return {"jobArn": arn}

    def _check_request(self, account: str, request: dict[str, Any]) -> None:
        """Every member is honoured or refused by name."""
        kind = request.get("modelInvocationType") or INVOKE_MODEL
        if kind != INVOKE_MODEL:
            raise ValidationException(f"modelInvocationType {kind} is not available on this server; use "
                                      f"{INVOKE_MODEL} (records carry the body InvokeModel takes)")
        if request.get("vpcConfig"):
            raise ValidationException("vpcConfig is not supported: this server has no VPC to run a job in")
        source = request["inputDataConfig"].get("s3InputDataConfig")
        if not source:
            raise ValidationException("inputDataConfig needs s3InputDataConfig")
        target = request["outputDataConfig"].get("s3OutputDataConfig")
        if not target:
            raise ValidationException("outputDataConfig needs s3OutputDataConfig")
        if target.get("s3EncryptionKeyId"):
            raise ValidationException("s3EncryptionKeyId is not supported: this server has no KMS to encrypt "
                                      "outputs with")
        S3Uri.parse(source["s3Uri"])
        S3Uri.parse(target["s3Uri"])
        self._check_model(account, request["modelId"])

    def _check_model(self, account: str, model_id: str) -> None:
        """A model the runtime answers on demand: a foundation model, an alias or an inference profile."""
        if ":provisioned-model/" in model_id or ":custom-model/" in model_id:
            raise ValidationException(f"The model {model_id} cannot run a batch inference job on this server: "
                                      "use a foundation model, an alias or an inference profile")
        try:
            model = self.profiles.model(account, model_id)
        except AliasTargetMissing as exc:
            raise ValidationException(exc.message) from None
        except ResourceNotFoundException:
            raise ValidationException("The provided model identifier is invalid.") from None
        if model.native_format == RERANK_FORMAT:
            raise ValidationException(f"The model {model.model_id} is a reranking model: it has no InvokeModel "
                                      "body to run in a batch")

    # -- read -------------------------------------------------------------------------------------

    def _row(self, account: str, identifier: str) -> ModelInvocationJobRow:
        """A job by its ARN or its 12-character id (what jobIdentifier takes; names are not identifiers here)."""
        arn = identifier if identifier.startswith("arn:") else job_arn(self.region, account, identifier)
        return self._settle(self.db.owned(ModelInvocationJobRow, ModelInvocationJobRow.job_arn, account, arn,
                                          "batch inference job"))

    def _settle(self, row: ModelInvocationJobRow) -> ModelInvocationJobRow:
        """Record what happened with no job process to record it: a job that timed out while it waited in
        the queue is Expired; a stop the runner finished (the job was stopped before it started, or did not
        stop in time and was ended) is Stopped."""
        if row.status in FINISHED:
            return row
        now = utc_now()
        ending: tuple[str, str] | None = None
        if row.status == S.SUBMITTED and now >= as_utc(row.expires_at):
            ending = (S.EXPIRED, "The job timed out before it started")
        elif row.status == S.STOPPING:
            runner = self.runner.get(row.runner_job_id) if row.runner_job_id else None
            if runner is None or runner.state in TERMINAL:
                ending = (S.STOPPED, "Stopped on request")
        if ending is None:
            return row
        with self.db.session() as session:
            changed = session.execute(update(ModelInvocationJobRow).where(
                ModelInvocationJobRow.job_arn == row.job_arn, ModelInvocationJobRow.status == row.status)
                .values(status=ending[0], message=ending[1], ended_at=now, updated_at=now)).rowcount
        if changed and ending[0] == S.EXPIRED and row.runner_job_id:
            self.runner.request_stop(row.runner_job_id)  # it never starts now
        with self.db.session() as session:
            return session.get(ModelInvocationJobRow, row.job_arn)

    def get_job(self, account: str, identifier: str) -> dict[str, Any]:
        return self._describe(self._row(account, identifier))

    def _describe(self, row: ModelInvocationJobRow) -> dict[str, Any]:
        request = row.request
        out = {"jobArn": row.job_arn, "jobName": row.job_name, "modelId": row.model_id,
               "clientRequestToken": row.client_request_token, "roleArn": request["roleArn"],
               "status": row.status, "message": row.message, "submitTime": row.created_at,
               "lastModifiedTime": row.updated_at, "endTime": row.ended_at,
               "inputDataConfig": request["inputDataConfig"], "outputDataConfig": request["outputDataConfig"],
               "timeoutDurationInHours": request["timeoutDurationInHours"], "jobExpirationTime": row.expires_at,
               "modelInvocationType": request.get("modelInvocationType") or INVOKE_MODEL,
               "totalRecordCount": row.total_records, "processedRecordCount": row.processed_records,
               "successRecordCount": row.success_records, "errorRecordCount": row.error_records}
        if row.input_tokens is not None:  # Outcrop's own members: boto3 drops them, raw JSON and the CLI show them
            out["inputTokenCount"], out["outputTokenCount"] = row.input_tokens, row.output_tokens
        return {k: v for k, v in out.items() if v is not None}

    def list_jobs(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        if params.get("sortBy") not in (None, "CreationTime"):
            raise ValidationException(f"sortBy {params['sortBy']} is not supported; use CreationTime")
        t = ModelInvocationJobRow
        with self.db.session() as session:  # settled first, so that a status filter sees what Get would say
            unsettled = session.scalars(select(t).where(t.account_id == account,
                                                        t.status.in_([S.SUBMITTED, S.STOPPING]))).all()
        for row in unsettled:
            self._settle(row)
        query = select(t).where(t.account_id == account)
        if params.get("submitTimeAfter"):
            query = query.where(t.created_at > as_utc(params["submitTimeAfter"]))
        if params.get("submitTimeBefore"):
            query = query.where(t.created_at < as_utc(params["submitTimeBefore"]))
        if params.get("statusEquals"):
            query = query.where(t.status == params["statusEquals"])
        if params.get("nameContains"):
            query = query.where(t.job_name.contains(params["nameContains"], autoescape=True))
        rows, token = page(self.db, query, t.created_at, params)
        return {"invocationJobSummaries": [self._describe(self._settle(row)) for row in rows], "nextToken": token}

    # -- tags (TagResource, UntagResource, ListTagsForResource on a job's ARN) -----------------------

    def tag(self, account: str, arn: str, tags: list[dict[str, str]]) -> None:
        row = self._row(account, arn)
        merged = {**(row.tags or {}), **_tag_map(tags)}
        if len(merged) > MAX_TAGS:
            raise TooManyTagsException(f"A resource may carry at most {MAX_TAGS} tags")
        self.db.update(ModelInvocationJobRow, row.job_arn, tags=merged)

    def untag(self, account: str, arn: str, keys: list[str]) -> None:
        row = self._row(account, arn)
        self.db.update(ModelInvocationJobRow, row.job_arn,
                       tags={k: v for k, v in (row.tags or {}).items() if k not in set(keys)} or None)

    def tags(self, account: str, arn: str) -> list[dict[str, str]]:
        return [{"key": k, "value": v} for k, v in sorted((self._row(account, arn).tags or {}).items())]

    # -- stop -------------------------------------------------------------------------------------

    def stop_job(self, account: str, identifier: str) -> None:
        row = self._row(account, identifier)
        if row.status not in STOPPABLE:
            raise ValidationException(f"The job {row.job_name} is {row.status}; only a job that is Submitted, "
                                      "Validating, Scheduled or InProgress can be stopped")
        now = utc_now()
        # A job still in the queue has no process to stop it: it is Stopped at once (and never starts).
        status = S.STOPPED if row.status == S.SUBMITTED else S.STOPPING
        with self.db.session() as session:
            changed = session.execute(update(ModelInvocationJobRow).where(
                ModelInvocationJobRow.job_arn == row.job_arn, ModelInvocationJobRow.status == row.status)
                .values(status=status, updated_at=now,
                        **({"ended_at": now, "message": "Stopped on request"} if status == S.STOPPED else {}))
            ).rowcount
        if not changed:  # it moved on meanwhile (started, or ended): stop it as it is now
            return self.stop_job(account, identifier)
        if row.runner_job_id:
            self.runner.request_stop(row.runner_job_id)


def _tag_map(tags: list[dict[str, str]]) -> dict[str, str]:
    found: dict[str, str] = {}
    for tag in tags:
        if tag["key"].lower().startswith("aws:"):
            raise ValidationException(f"The tag key {tag['key']} uses the reserved prefix aws:")
        found[tag["key"]] = tag.get("value", "")
    if len(found) > MAX_TAGS:
        raise TooManyTagsException(f"A resource may carry at most {MAX_TAGS} tags")
    return found
