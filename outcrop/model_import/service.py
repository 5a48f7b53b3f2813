"""Custom model import: create, get and list import jobs; get, list and delete the imported models.

The copy and the checks of the weights happen in `outcrop.model_import.job`, run by the job runner in its
own process. Creating a job already checks what needs no weights, as the job's role: the folder's listing
(config.json, safetensors, a tokenizer) and the architecture config.json names, so a folder that cannot be
imported is refused at once, by name, rather than failing a job minutes later.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from outcrop.errors import ConflictException, ValidationException
from outcrop.iam.principal import Principal
from outcrop.iam.scoped_store import ScopedStore, bucket_arn, object_arn
from outcrop.iam.service import IamService
from outcrop.model_import import folder
from outcrop.model_import.models import ImportedModels
from outcrop.model_import.tables import ImportedModelRow, ImportJobStatus, ModelImportJobRow
from outcrop.platform.database import Database, utc_now
from outcrop.platform.idempotency import run_once
from outcrop.platform.ids import new_id
from outcrop.platform.jobs import JobRunner
from outcrop.platform.objectstore import ObjectStore, S3Uri
from outcrop.platform.pagination import page

ENTRY_POINT = "outcrop.model_import.job:run"
FAILURE_HOOK = "outcrop.model_import.job:on_failure"

#: Request members this server cannot honour, and why: each is refused by name rather than ignored.
UNSUPPORTED = {
    "vpcConfig": "this server reads the object store directly; there is no VPC to run the import in",
    "importedModelKmsKeyId": "this server has no KMS: imported weights are kept in its private data dir "
                             "(0700), not encrypted with a customer key",
    "jobTags": "tags are kept for inference profiles only on this server",
    "importedModelTags": "tags are kept for inference profiles only on this server",
}


def source_folder(params: dict[str, Any]) -> S3Uri:
    """The folder modelDataSource names, as a prefix ending in `/` (a key prefix `s3://b/m` would also match
    `s3://b/m2/...`)."""
    source = (params.get("modelDataSource") or {}).get("s3DataSource") or {}
    uri = source.get("s3Uri")
    if not uri:
        raise ValidationException("modelDataSource.s3DataSource.s3Uri is required: the S3 folder of the model")
    parsed = S3Uri.parse(uri)
    return parsed if not parsed.key or parsed.key.endswith("/") else S3Uri(parsed.bucket, parsed.key + "/")


def required_permissions(uri: S3Uri) -> list[tuple[str, str, dict[str, Any]]]:
    """What the job's role must allow: list the folder (as the listing will, with its prefix), read its files."""
    return [("s3:ListBucket", bucket_arn(uri.bucket), {"s3:prefix": uri.key}),
            ("s3:GetObject", object_arn(uri) + "*", {})]


def listing(store: ScopedStore, uri: S3Uri) -> dict[str, int]:
    """The folder's top-level files, name -> size (subfolders, such as Llama's `original/`, are not read)."""
    return {info.key[len(uri.key):]: info.size for info in store.list(uri, recursive=False)
            if "/" not in info.key[len(uri.key):]}


def model_home(data_dir: Path, account: str, model_id: str) -> Path:
    """Where an imported model's files live: Outcrop's own model store, beside customization's custom models."""
    return data_dir / "imported-models" / account / model_id


class ModelImports:
    def __init__(self, db: Database, iam: IamService, runner: JobRunner, store: ObjectStore, models: ImportedModels,
                 region: str, unload: Callable[[Path], None]) -> None:
        self.db = db
        self.iam = iam
        self.runner = runner
        self.store = store
        self.models = models
        self.region = region
        #: Drops a deleted model's weights from the serving engine.
        self.unload = unload

    # -- jobs -------------------------------------------------------------------------------------

    def create_job(self, principal: Principal, params: dict[str, Any]) -> dict[str, Any]:
        return run_once(self.db, account_id=principal.account_id, operation="CreateModelImportJob",
                        token=params.get("clientRequestToken"), params=params, token_member="clientRequestToken",
                        create=lambda: self._create_job(principal, params))

    def _create_job(self, principal: Principal, params: dict[str, Any]) -> dict[str, Any]:
        account = principal.account_id
        for member, why in UNSUPPORTED.items():
            if params.get(member):
                raise ValidationException(f"{member} is not supported on this server: {why}")
        uri = source_folder(params)
        # The role is checked now, so a missing permission is the caller's error, not a failed job later.
        role = self.iam.check_role(params["roleArn"], account, required_permissions(uri))
        store = ScopedStore(self.store, self.iam, role)
        files = listing(store, uri)
        folder.check_listing(str(uri), files)
        config = folder.read_config(str(uri), store.get_bytes(uri.join(folder.CONFIG)))
        architecture = folder.check_config(str(uri), config)
        name, model_name = params["jobName"], params["importedModelName"]
        with self.db.session() as session:
            if session.scalar(select(func.count()).select_from(ModelImportJobRow).where(
                    ModelImportJobRow.account_id == account, ModelImportJobRow.job_name == name)):
                raise ConflictException(f"A model import job named {name} already exists")
            taken = session.scalar(select(func.count()).select_from(ImportedModelRow).where(
                ImportedModelRow.account_id == account, ImportedModelRow.model_name == model_name))
            taken = taken or session.scalar(select(func.count()).select_from(ModelImportJobRow).where(
                ModelImportJobRow.account_id == account, ModelImportJobRow.status == ImportJobStatus.IN_PROGRESS,
                ModelImportJobRow.imported_model_name == model_name))
            if taken:
                raise ConflictException(f"An imported model named {model_name} already exists or is being imported")
            job_id = new_id()
            job_arn = f"arn:aws:bedrock:{self.region}:{account}:model-import-job/{job_id}"
            request = {k: v for k, v in params.items() if k != "clientRequestToken"}
            request.update(jobId=job_id, modelId=new_id(), architecture=architecture.name)
            now = utc_now()
            session.add(ModelImportJobRow(job_arn=job_arn, account_id=account, job_name=name,
                                          imported_model_name=model_name, status=ImportJobStatus.IN_PROGRESS,
                                          request=request, created_at=now, updated_at=now))
        runner_id = self.runner.submit(account, ENTRY_POINT, {"jobArn": job_arn}, failure_hook=FAILURE_HOOK)
        with self.db.session() as session:
            session.get(ModelImportJobRow, job_arn).runner_job_id = runner_id
        return {"jobArn": job_arn}

    def _job_row(self, account: str, identifier: str) -> ModelImportJobRow:
        return self.db.owned(ModelImportJobRow, ModelImportJobRow.job_name, account, identifier, "model import job")

    def get_job(self, account: str, identifier: str) -> dict[str, Any]:
        row = self._job_row(account, identifier)
        out = {**self._job_summary(row), "roleArn": row.request["roleArn"],
               "modelDataSource": row.request["modelDataSource"], "failureMessage": row.failure_message}
        job = self.runner.get(row.runner_job_id) if row.runner_job_id else None
        if job is not None and job.progress and row.status == ImportJobStatus.IN_PROGRESS:
            out["progress"] = dict(job.progress)  # Outcrop's own member: boto3 drops it, raw JSON and the CLI show it
        return out

    def _job_summary(self, row: ModelImportJobRow) -> dict[str, Any]:
        return {"jobArn": row.job_arn, "jobName": row.job_name, "status": row.status,
                "creationTime": row.created_at, "lastModifiedTime": row.updated_at, "endTime": row.ended_at,
                "importedModelArn": row.imported_model_arn, "importedModelName": row.imported_model_name}

    def list_jobs(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        query = select(ModelImportJobRow).where(ModelImportJobRow.account_id == account)
        if params.get("statusEquals"):
            query = query.where(ModelImportJobRow.status == params["statusEquals"])
        if params.get("nameContains"):
            query = query.where(ModelImportJobRow.job_name.contains(params["nameContains"], autoescape=True))
        rows, token = page(self.db, query, ModelImportJobRow.created_at, params)
        return {"modelImportJobSummaries": [self._job_summary(r) for r in rows], "nextToken": token}

    # -- imported models --------------------------------------------------------------------------

    def get_model(self, account: str, identifier: str) -> dict[str, Any]:
        row = self.models.row(account, identifier)
        return {**_model_summary(row), "jobName": row.job_name, "jobArn": row.job_arn,
                "modelDataSource": {"s3DataSource": {"s3Uri": row.s3_uri}}}

    def list_models(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        query = select(ImportedModelRow).where(ImportedModelRow.account_id == account)
        if params.get("nameContains"):
            query = query.where(ImportedModelRow.model_name.contains(params["nameContains"], autoescape=True))
        rows, token = page(self.db, query, ImportedModelRow.created_at, params)
        return {"modelSummaries": [_model_summary(r) for r in rows], "nextToken": token}

    def delete_model(self, account: str, identifier: str) -> None:
        """Delete the row first (from then on the model's ARN is invalid to the runtime), then drop it from the
        engine and remove its files. Nothing stored can depend on an imported model: provisioned throughput
        and inference profiles take foundation and custom models only, as on Bedrock."""
        row = self.models.row(account, identifier)
        with self.db.session() as session:
            session.delete(session.get(ImportedModelRow, row.model_arn))
        self.unload(Path(row.weights_path))
        shutil.rmtree(row.weights_path, ignore_errors=True)


def _model_summary(row: ImportedModelRow) -> dict[str, Any]:
    return {"modelArn": row.model_arn, "modelName": row.model_name, "creationTime": row.created_at,
            "modelArchitecture": row.architecture, "instructSupported": row.instruct_supported}
