"""Model customization: create, watch, stop and list jobs; get, list and delete the custom models.

The work itself happens in `outcrop.customization.job`, run by the job runner in its own process;
this module only validates, records, and reads back.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from outcrop.catalog.arns import foundation_model_arn
from outcrop.catalog.cards import FoundationModel
from outcrop.catalog.service import Catalog
from outcrop.customization import hyperparameters, image_training
from outcrop.customization.models import CustomModels
from outcrop.customization.tables import CustomizationJobRow, CustomModelRow, JobStatus
from outcrop.errors import ConflictException, ResourceNotFoundException, ValidationException
from outcrop.iam.principal import Principal
from outcrop.iam.scoped_store import object_arn
from outcrop.iam.service import IamService
from outcrop.platform.database import Database, utc_now
from outcrop.platform.idempotency import run_once
from outcrop.platform.ids import new_id
from outcrop.platform.jobs import JobRunner
from outcrop.platform.objectstore import S3Uri
from outcrop.platform.pagination import page

STAGES = ("validationDetails", "dataProcessingDetails", "trainingDetails")
ENTRY_POINT = "outcrop.customization.job:run"
FAILURE_HOOK = "outcrop.customization.job:on_failure"
SUPPORTED_TYPES = ("FINE_TUNING", "CONTINUED_PRE_TRAINING")


def job_output_prefix(request: dict[str, Any], job_id: str) -> S3Uri:
    """`<outputDataConfig.s3Uri>/model-customization-job-<id>/`, Bedrock's layout for a job's outputs."""
    return S3Uri.parse(request["outputDataConfig"]["s3Uri"]).join(f"model-customization-job-{job_id}/")


def required_permissions(request: dict[str, Any], job_id: str) -> list[tuple[str, str]]:
    """What the job's role must allow: read every data file, write the job's outputs."""
    reads = [request["trainingDataConfig"]["s3Uri"]]
    reads += [v["s3Uri"] for v in (request.get("validationDataConfig") or {}).get("validators", [])]
    output = job_output_prefix(request, job_id).join("step_wise_training_metrics.csv")
    return [*(("s3:GetObject", object_arn(S3Uri.parse(uri))) for uri in reads),
            ("s3:PutObject", object_arn(output))]


class CustomizationService:
    def __init__(self, db: Database, catalog: Catalog, iam: IamService, runner: JobRunner, models: CustomModels,
                 in_use: Callable[[str, str], str | None], region: str) -> None:
        self.db = db
        self.catalog = catalog
        self.iam = iam
        self.runner = runner
        self.models = models
        #: (account, model ARN) -> why the custom model may not be deleted now (it is provisioned), or None.
        self.in_use = in_use
        self.region = region

    # -- jobs -------------------------------------------------------------------------------------

    def create_job(self, principal: Principal, params: dict[str, Any]) -> dict[str, Any]:
        return run_once(self.db, account_id=principal.account_id, operation="CreateModelCustomizationJob",
                        token=params.get("clientRequestToken"), params=params, token_member="clientRequestToken",
                        create=lambda: self._create_job(principal, params))

    def _create_job(self, principal: Principal, params: dict[str, Any]) -> dict[str, Any]:
        account = principal.account_id
        customization_type = params.get("customizationType") or "FINE_TUNING"
        if customization_type not in SUPPORTED_TYPES:
            raise ValidationException(f"customizationType {customization_type} is not available on this server; "
                                      f"use one of {', '.join(SUPPORTED_TYPES)}")
        base = self._base_model(params["baseModelIdentifier"])
        resolved = hyperparameters.resolve(base, customization_type, params.get("hyperParameters"))
        if hyperparameters.is_image_model(base):
            self._check_image_base(base)
        for uri in [params["trainingDataConfig"].get("s3Uri"), params["outputDataConfig"].get("s3Uri"),
                    *(v.get("s3Uri") for v in (params.get("validationDataConfig") or {}).get("validators", []))]:
            if not uri:
                raise ValidationException("Every data config needs an s3Uri")
            S3Uri.parse(uri)
        job_id = new_id()
        job_arn = f"arn:aws:bedrock:{self.region}:{account}:model-customization-job/{base.model_id}/{job_id}"
        request = {**params, "customizationType": customization_type, "baseModelId": base.model_id,
                   "jobId": job_id, "resolved": resolved}
        request.pop("clientRequestToken", None)
        # The role is checked now, so a missing permission is the caller's error, not a failed job later.
        self.iam.check_role(params["roleArn"], account, required_permissions(request, job_id))
        with self.db.session() as session:
            clash = session.scalar(select(func.count()).select_from(CustomizationJobRow).where(
                CustomizationJobRow.account_id == account, CustomizationJobRow.job_name == params["jobName"]))
            if clash:
                raise ConflictException(f"A model customization job named {params['jobName']} already exists")
            taken = session.scalar(select(func.count()).select_from(CustomModelRow).where(
                CustomModelRow.account_id == account, CustomModelRow.model_name == params["customModelName"]))
            taken = taken or session.scalar(select(func.count()).select_from(CustomizationJobRow).where(
                CustomizationJobRow.account_id == account,
                CustomizationJobRow.status.in_([JobStatus.IN_PROGRESS, JobStatus.STOPPING]),
                CustomizationJobRow.request["customModelName"].as_string() == params["customModelName"]))
            if taken:
                raise ConflictException(f"A custom model named {params['customModelName']} already exists "
                                        "or is being created")
            stamp = utc_now().isoformat()
            details = {stage: {"status": "NotStarted", "creationTime": stamp, "lastModifiedTime": stamp}
                       for stage in STAGES}
            details["validationDetails"]["status"] = JobStatus.IN_PROGRESS
            session.add(CustomizationJobRow(
                job_arn=job_arn, account_id=account, job_name=params["jobName"], status=JobStatus.IN_PROGRESS,
                request=request, status_details=details, created_at=utc_now(), updated_at=utc_now()))
        runner_id = self.runner.submit(account, ENTRY_POINT, {"jobArn": job_arn}, failure_hook=FAILURE_HOOK)
        with self.db.session() as session:
            session.get(CustomizationJobRow, job_arn).runner_job_id = runner_id
        return {"jobArn": job_arn}

    def _base_model(self, identifier: str) -> FoundationModel:
        try:
            return self.catalog.get(identifier)
        except ResourceNotFoundException:
            raise ValidationException(f"The base model {identifier} is not a foundation model in this catalog") \
                from None

    def _check_image_base(self, base: FoundationModel) -> None:
        """A pipeline this server cannot fine-tune (SDXL, SD 3) is refused now, not by a failed job later; a hub
        model whose weights are not here yet is checked by its job, once fetched."""
        weights = self.catalog.weights_path(base)
        if weights is not None:
            image_training.check_base(weights, base.model_id)

    def _job_row(self, account: str, identifier: str) -> CustomizationJobRow:
        return self.db.owned(CustomizationJobRow, CustomizationJobRow.job_name, account, identifier,
                           "model customization job")

    def get_job(self, account: str, identifier: str) -> dict[str, Any]:
        row = self._job_row(account, identifier)
        request = row.request
        out = {**self._summary(row), **_training(row), "outputModelName": request["customModelName"],
               "outputModelArn": row.output_model_arn, "roleArn": request["roleArn"],
               "failureMessage": row.failure_message}
        # Required in GetModelCustomizationJob's output shape (optional in GetCustomModel's): a job
        # created without validation data answers with no validators, as Bedrock does.
        out["validationDataConfig"] = out.get("validationDataConfig") or {"validators": []}
        progress = self.progress(row)
        if progress:
            out["progress"] = progress  # Outcrop's own member: boto3 drops it, raw JSON and the CLI show it
        return out

    def progress(self, row: CustomizationJobRow) -> dict[str, Any] | None:
        job = self.runner.get(row.runner_job_id) if row.runner_job_id else None
        return dict(job.progress) if job is not None and job.progress else None

    def _summary(self, row: CustomizationJobRow) -> dict[str, Any]:
        request = row.request
        return {"jobArn": row.job_arn, "jobName": row.job_name, "status": row.status,
                "statusDetails": _details(row.status_details), "creationTime": row.created_at,
                "lastModifiedTime": row.updated_at, "endTime": row.ended_at,
                "baseModelArn": self._base_arn(request["baseModelId"]),
                "customModelArn": row.output_model_arn, "customModelName": request["customModelName"],
                "customizationType": request["customizationType"]}

    def _base_arn(self, model_id: str) -> str:
        return foundation_model_arn(self.region, model_id)

    def list_jobs(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        query = select(CustomizationJobRow).where(CustomizationJobRow.account_id == account)
        if params.get("statusEquals"):
            query = query.where(CustomizationJobRow.status == params["statusEquals"])
        if params.get("nameContains"):
            query = query.where(CustomizationJobRow.job_name.contains(params["nameContains"], autoescape=True))
        rows, token = page(self.db, query, CustomizationJobRow.created_at, params)
        return {"modelCustomizationJobSummaries": [self._summary(r) for r in rows], "nextToken": token}

    def stop_job(self, account: str, identifier: str) -> None:
        row = self._job_row(account, identifier)
        if row.status != JobStatus.IN_PROGRESS:
            raise ValidationException(f"The job {row.job_name} is {row.status}; only a job in progress can be stopped")
        with self.db.session() as session:
            job = session.get(CustomizationJobRow, row.job_arn)
            job.status, job.updated_at = JobStatus.STOPPING, utc_now()
        if row.runner_job_id:
            self.runner.request_stop(row.runner_job_id)

    # -- custom models ----------------------------------------------------------------------------

    def _model_row(self, account: str, identifier: str) -> CustomModelRow:
        return self.models.row(account, identifier)

    def get_custom_model(self, account: str, identifier: str) -> dict[str, Any]:
        row = self._model_row(account, identifier)
        job = self._job_row(account, row.job_arn)
        request = job.request
        return {**self._model_summary(row, request), **_training(job), "jobArn": job.job_arn}

    def _model_summary(self, row: CustomModelRow, request: dict[str, Any]) -> dict[str, Any]:
        base = self.catalog.get(row.base_model_id)
        return {"modelArn": row.model_arn, "modelName": row.model_name, "creationTime": row.created_at,
                "baseModelArn": self._base_arn(row.base_model_id), "baseModelName": base.name,
                "customizationType": request["customizationType"], "ownerAccountId": row.account_id,
                "modelStatus": "Active"}

    def list_custom_models(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        query = select(CustomModelRow).where(CustomModelRow.account_id == account)
        if params.get("nameContains"):
            query = query.where(CustomModelRow.model_name.contains(params["nameContains"], autoescape=True))
        for member in ("baseModelArnEquals", "foundationModelArnEquals"):
            if params.get(member):
                query = query.where(CustomModelRow.base_model_id == params[member].rsplit("/", 1)[-1])
        if params.get("modelStatus") not in (None, "Active"):
            return {"modelSummaries": []}  # every stored custom model is Active
        rows, token = page(self.db, query, CustomModelRow.created_at, params)
        summaries = []
        for row in rows:
            request = self._job_row(account, row.job_arn).request
            summaries.append(self._model_summary(row, request))
        return {"modelSummaries": summaries, "nextToken": token}

    def delete_custom_model(self, account: str, identifier: str) -> None:
        import shutil

        row = self._model_row(account, identifier)
        reason = self.in_use(account, row.model_arn)
        if reason:
            raise ValidationException(f"The custom model {row.model_name} cannot be deleted: {reason}")
        with self.db.session() as session:
            session.delete(session.get(CustomModelRow, row.model_arn))
        shutil.rmtree(row.weights_path, ignore_errors=True)


def _training(job: CustomizationJobRow) -> dict[str, Any]:
    """How a model was trained, as both GetModelCustomizationJob and GetCustomModel report it."""
    request = job.request
    out = {"jobName": job.job_name, "hyperParameters": _as_strings(request["resolved"]),
           "trainingDataConfig": request["trainingDataConfig"],
           "validationDataConfig": request.get("validationDataConfig"),
           "outputDataConfig": request["outputDataConfig"]}
    if job.training_loss is not None:
        out["trainingMetrics"] = {"trainingLoss": job.training_loss}
    if job.validation_losses:
        out["validationMetrics"] = [{"validationLoss": loss} for loss in job.validation_losses]
    return out


def _details(details: dict[str, Any]) -> dict[str, Any]:
    return {stage: {"status": d["status"], "creationTime": datetime.fromisoformat(d["creationTime"]),
                    "lastModifiedTime": datetime.fromisoformat(d["lastModifiedTime"])}
            for stage, d in details.items()}


def _as_strings(values: dict[str, Any]) -> dict[str, str]:
    """Hyperparameters as the API carries them: strings (`true`/`false` for booleans)."""
    return {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in values.items()}
