"""Knowledge bases, the control plane (bedrock-agent): knowledge bases, data sources, ingestion jobs and
directly ingested documents. It validates, records, and reads back; the ingestion itself is a job
(`outcrop.knowledge.job`) and the questions are answered by `outcrop.knowledge.retrieval`.

Everything a knowledge base stores goes through one `VectorStore` (LanceDB), at a place derived from the
server's object store: a folder of the data dir, or a prefix of the S3 endpoint.
"""

from __future__ import annotations

import re
import secrets
import string
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, update

from outcrop.catalog.cards import FoundationModel
from outcrop.errors import ConflictException, ResourceNotFoundException, ValidationException
from outcrop.iam.principal import Principal
from outcrop.iam.scoped_store import bucket_arn, object_arn
from outcrop.iam.service import IamService
from outcrop.knowledge import chunking
from outcrop.knowledge.store import VectorStore, open_store
from outcrop.knowledge.tables import (
    DataSourceRow,
    DataSourceStatus,
    DocumentRow,
    DocumentStatus,
    IngestionJobRow,
    IngestionJobStatus,
    KnowledgeBaseRow,
    KnowledgeBaseStatus,
)
from outcrop.platform.config import Settings
from outcrop.platform.database import Database, utc_now
from outcrop.platform.idempotency import run_once
from outcrop.platform.jobs import JobRunner
from outcrop.platform.objectstore import S3Uri
from outcrop.platform.pagination import page
from outcrop.platform.tables import JobState
from outcrop.profiles.service import InferenceProfiles

ENTRY_POINT = "outcrop.knowledge.job:run"
FAILURE_HOOK = "outcrop.knowledge.job:on_failure"
#: The one table of a knowledge base's own store (S3_VECTORS names its index instead).
DEFAULT_TABLE = "chunks"
#: Bedrock's ids for knowledge bases, data sources and ingestion jobs: 10 upper-case letters and digits.
_ID_ALPHABET = string.ascii_uppercase + string.digits
_S3_VECTORS_BUCKET = re.compile(r"arn:aws:s3vectors:[a-z0-9-]+:(?P<account>\d{12}):bucket/(?P<bucket>[a-z0-9.-]{3,63})")
_S3_VECTORS_INDEX = re.compile(_S3_VECTORS_BUCKET.pattern + r"/index/(?P<index>[a-z0-9.-]{3,63})")
_STATISTICS = ("numberOfDocumentsScanned", "numberOfMetadataDocumentsScanned", "numberOfNewDocumentsIndexed",
               "numberOfModifiedDocumentsIndexed", "numberOfMetadataDocumentsModified", "numberOfDocumentsDeleted",
               "numberOfDocumentsFailed", "numberOfDocumentsSkipped")
RUNNING = (IngestionJobStatus.STARTING, IngestionJobStatus.IN_PROGRESS, IngestionJobStatus.STOPPING)


def new_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(10))


def knowledge_base_arn(region: str, account: str, kb_id: str) -> str:
    return f"arn:aws:bedrock:{region}:{account}:knowledge-base/{kb_id}"


def empty_statistics() -> dict[str, int]:
    return dict.fromkeys(_STATISTICS, 0)


def source_prefixes(data_source: DataSourceRow) -> list[S3Uri]:
    """The S3 prefixes an S3 data source reads (the whole bucket without inclusion prefixes)."""
    s3 = data_source.configuration["s3Configuration"]
    bucket = s3["bucketArn"].removeprefix("arn:aws:s3:::")
    return [S3Uri(bucket, prefix) for prefix in (s3.get("inclusionPrefixes") or [""])]


def read_permissions(data_source: DataSourceRow) -> list[tuple[str, str, dict[str, str]]]:
    """What the knowledge base's role must allow for a sync: list the bucket under each prefix (the listing
    sends s3:prefix, so a role scoped to the prefix passes), read under each prefix."""
    needs = []
    for prefix in source_prefixes(data_source):
        needs += [("s3:ListBucket", bucket_arn(prefix.bucket), {"s3:prefix": prefix.key}),
                  ("s3:GetObject", object_arn(prefix) + "*", {})]
    return needs


def store_for(row: KnowledgeBaseRow, settings: Settings) -> VectorStore:
    return open_store(row.store_uri, row.store_table, row.dimension, settings.vectors_storage_options,
                      ann_threshold=settings.knowledge_ann_threshold)


class KnowledgeBases:
    def __init__(self, db: Database, iam: IamService, profiles: InferenceProfiles, runner: JobRunner | None,
                 settings: Settings) -> None:
        """`runner` starts ingestion jobs; None in a job process, which only searches (a RAG evaluation)."""
        self.db = db
        self.iam = iam
        self.profiles = profiles
        self.runner = runner
        self.settings = settings
        self.region = settings.region

    # -- knowledge bases --------------------------------------------------------------------------

    def create(self, principal: Principal, params: dict[str, Any]) -> dict[str, Any]:
        created = run_once(self.db, account_id=principal.account_id, operation="CreateKnowledgeBase",
                           token=params.get("clientToken"), params=params, token_member="clientToken",
                           create=lambda: self._create(principal.account_id, params))
        return self.get(principal.account_id, created["knowledgeBaseId"])

    def _create(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        if params.get("tags"):
            raise ValidationException("tags are not kept for knowledge bases on this server")
        configuration = params["knowledgeBaseConfiguration"]
        model, dimension = self._embedding_model(account, configuration)
        self.iam.check_role(params["roleArn"], account, [])
        kb_id = new_id()
        store_uri, table = self._placement(account, kb_id, params.get("storageConfiguration"))
        now = utc_now()
        with self.db.session() as session:
            if session.scalar(select(func.count()).select_from(KnowledgeBaseRow).where(
                    KnowledgeBaseRow.account_id == account, KnowledgeBaseRow.name == params["name"])):
                raise ConflictException(f"A knowledge base named {params['name']} already exists")
            if session.scalar(select(func.count()).select_from(KnowledgeBaseRow).where(
                    KnowledgeBaseRow.store_uri == store_uri, KnowledgeBaseRow.store_table == table)):
                raise ConflictException("Another knowledge base already uses this vector index "
                                        "(storageConfiguration.s3VectorsConfiguration)")
            session.add(KnowledgeBaseRow(
                arn=knowledge_base_arn(self.region, account, kb_id), knowledge_base_id=kb_id,
                account_id=account, name=params["name"], description=params.get("description"),
                role_arn=params["roleArn"], configuration=configuration,
                storage=params.get("storageConfiguration"), embedding_model_id=model.model_id, dimension=dimension,
                store_uri=store_uri, store_table=table, status=KnowledgeBaseStatus.ACTIVE, created_at=now,
                updated_at=now))
        return {"knowledgeBaseId": kb_id}

    def _embedding_model(self, account: str, configuration: dict[str, Any]) -> tuple[FoundationModel, int]:
        if configuration["type"] != "VECTOR":
            raise ValidationException(f"knowledgeBaseConfiguration.type {configuration['type']} is not available on "
                                      "this server; VECTOR knowledge bases are")
        vector = configuration.get("vectorKnowledgeBaseConfiguration")
        if not vector:
            raise ValidationException("knowledgeBaseConfiguration.vectorKnowledgeBaseConfiguration is required for "
                                      "a VECTOR knowledge base")
        if vector.get("supplementalDataStorageConfiguration"):
            raise ValidationException("supplementalDataStorageConfiguration (images in documents) is not supported "
                                      "on this server")
        try:
            model = self.profiles.model(account, vector["embeddingModelArn"])
        except ResourceNotFoundException:
            raise ValidationException(f"embeddingModelArn {vector['embeddingModelArn']} is not a model in this "
                                      "catalog") from None
        if "EMBEDDING" not in model.output_modalities:
            raise ValidationException(f"embeddingModelArn names {model.model_id}, which is not an embedding model")
        dimension = _hidden_size(self.profiles.catalog.local_weights(model))
        bedrock = (vector.get("embeddingModelConfiguration") or {}).get("bedrockEmbeddingModelConfiguration") or {}
        if bedrock.get("dimensions") not in (None, dimension):
            raise ValidationException(f"embeddingModelConfiguration.bedrockEmbeddingModelConfiguration.dimensions "
                                      f"must be {dimension} for {model.model_id} (its embedding size)")
        for member in ("audio", "video", "modelConfiguration"):
            if bedrock.get(member):
                raise ValidationException(f"bedrockEmbeddingModelConfiguration.{member} is not supported on this "
                                          "server (text knowledge bases only)")
        if bedrock.get("embeddingDataType", "FLOAT32") != "FLOAT32":
            raise ValidationException("embeddingDataType BINARY is not supported on this server; use FLOAT32")
        return model, dimension

    def _placement(self, account: str, kb_id: str, storage: dict[str, Any] | None) -> tuple[str, str]:
        """Where the knowledge base's store lives: its own folder of the vector store, or, for Bedrock's
        S3_VECTORS, the named index of the named vector bucket (of the caller's account)."""
        root = self.settings.vectors_uri.rstrip("/")
        if not storage:
            return f"{root}/{account}/{kb_id}", DEFAULT_TABLE
        if storage["type"] != "S3_VECTORS":
            raise ValidationException(f"storageConfiguration.type {storage['type']} is not available on this server: "
                                      "knowledge bases are stored in LanceDB on the server's object store. Use "
                                      "S3_VECTORS, or leave storageConfiguration out")
        config = storage.get("s3VectorsConfiguration") or {}
        match = _S3_VECTORS_INDEX.fullmatch(config.get("indexArn") or "")
        bucket_match = match or _S3_VECTORS_BUCKET.fullmatch(config.get("vectorBucketArn") or "")
        index = match.group("index") if match else config.get("indexName")
        named = _S3_VECTORS_BUCKET.fullmatch(config.get("vectorBucketArn") or "")
        if match and config.get("vectorBucketArn") and (named is None or named.group(0) != match.group(0).split(
                "/index/")[0]):
            raise ValidationException("s3VectorsConfiguration.vectorBucketArn names another bucket than indexArn")
        if match and config.get("indexName") not in (None, match.group("index")):
            raise ValidationException("s3VectorsConfiguration.indexName names another index than indexArn")
        if bucket_match is None or not index:
            raise ValidationException("storageConfiguration.s3VectorsConfiguration needs an indexArn, or a "
                                      "vectorBucketArn (arn:aws:s3vectors:REGION:ACCOUNT:bucket/NAME) and an indexName")
        if bucket_match.group("account") != account:
            raise ValidationException("storageConfiguration.s3VectorsConfiguration names a vector bucket of another "
                                      "account")
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{2,62}", index):
            raise ValidationException(f"indexName {index!r} must be 3-63 lower-case letters, digits, dots or dashes")
        return f"{root}/{account}/s3-vectors/{bucket_match.group('bucket')}", index

    def row(self, account: str, kb_id: str) -> KnowledgeBaseRow:
        with self.db.session() as session:
            row = session.scalars(select(KnowledgeBaseRow).where(
                KnowledgeBaseRow.knowledge_base_id == kb_id)).first()
        if row is None or row.account_id != account:
            raise ResourceNotFoundException(f"Knowledge base {kb_id} does not exist")
        return row

    def get(self, account: str, kb_id: str) -> dict[str, Any]:
        row = self.row(account, kb_id)
        out = {"knowledgeBaseId": row.knowledge_base_id, "name": row.name, "knowledgeBaseArn": row.arn,
               "description": row.description, "roleArn": row.role_arn,
               "knowledgeBaseConfiguration": row.configuration, "status": row.status,
               "createdAt": row.created_at, "updatedAt": row.updated_at, "failureReasons": row.failure_reasons}
        if row.storage:
            out["storageConfiguration"] = row.storage
        return {"knowledgeBase": out}

    def list(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        rows, token = page(self.db, select(KnowledgeBaseRow).where(KnowledgeBaseRow.account_id == account),
                           KnowledgeBaseRow.created_at, params)
        return {"knowledgeBaseSummaries": [
            {"knowledgeBaseId": r.knowledge_base_id, "name": r.name, "description": r.description,
             "status": r.status, "updatedAt": r.updated_at} for r in rows], "nextToken": token}

    def update(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        row = self.row(account, params["knowledgeBaseId"])
        if params.get("metadataConfigurations"):
            raise ValidationException("metadataConfigurations are not supported on this server")
        with self.db.session() as session:
            if session.scalar(select(func.count()).select_from(KnowledgeBaseRow).where(
                    KnowledgeBaseRow.account_id == account, KnowledgeBaseRow.name == params["name"],
                    KnowledgeBaseRow.arn != row.arn)):
                raise ConflictException(f"A knowledge base named {params['name']} already exists")
        configuration = params["knowledgeBaseConfiguration"]
        model, dimension = self._embedding_model(account, configuration)
        if (model.model_id, dimension) != (row.embedding_model_id, row.dimension):
            raise ValidationException("The embedding model of a knowledge base cannot change: its vectors were made "
                                      "with it. Create a new knowledge base instead.")
        if (params.get("storageConfiguration") or None) != (row.storage or None):
            raise ValidationException("The storageConfiguration of a knowledge base cannot change")
        self.iam.check_role(params["roleArn"], account, [])
        self.db.update(KnowledgeBaseRow, row.arn, name=params["name"], description=params.get("description"),
                       role_arn=params["roleArn"], configuration=configuration)
        return self.get(account, row.knowledge_base_id)

    def delete(self, account: str, kb_id: str) -> dict[str, Any]:
        """Gone at once, data sources and vectors with it (Bedrock answers DELETING and finishes later)."""
        row = self.row(account, kb_id)
        self._no_running_job(kb_id, "delete the knowledge base")
        store_for(row, self.settings).drop()  # first: if it fails, the knowledge base is still there to retry
        with self.db.session() as session:
            for table in (DocumentRow, IngestionJobRow, DataSourceRow):
                session.execute(delete(table).where(table.knowledge_base_id == kb_id))
            session.delete(session.get(KnowledgeBaseRow, row.arn))
        return {"knowledgeBaseId": kb_id, "knowledgeBaseArn": row.arn, "status": KnowledgeBaseStatus.DELETING}

    def _no_running_job(self, kb_id: str, doing: str) -> None:
        running = self._running_job(IngestionJobRow.knowledge_base_id == kb_id)
        if running is not None:
            raise ConflictException(f"Cannot {doing} while the ingestion job {running.ingestion_job_id} is "
                                    f"{running.status}")

    def _running_job(self, *where: Any) -> IngestionJobRow | None:
        """The ingestion job still running among those `where` selects (one per knowledge base at most)."""
        with self.db.session() as session:
            running = session.scalars(select(IngestionJobRow).where(
                *where, IngestionJobRow.status.in_(RUNNING))).first()
        if running is None:
            return None
        settled = self._settle(running)
        return settled if settled.status in RUNNING else None

    # -- data sources -----------------------------------------------------------------------------

    def create_data_source(self, principal: Principal, params: dict[str, Any]) -> dict[str, Any]:
        account = principal.account_id
        created = run_once(self.db, account_id=account, operation="CreateDataSource",
                           token=params.get("clientToken"), params=params, token_member="clientToken",
                           create=lambda: self._create_data_source(account, params))
        return self.get_data_source(account, params["knowledgeBaseId"], created["dataSourceId"])

    def _create_data_source(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        kb = self.row(account, params["knowledgeBaseId"])
        configuration = params["dataSourceConfiguration"]
        _check_source(configuration, account)
        ingestion = params.get("vectorIngestionConfiguration")
        _check_ingestion(ingestion)
        chunk_tokens = chunking.embedded_tokens((ingestion or {}).get("chunkingConfiguration"))
        window = self.window(kb)
        if chunk_tokens is not None and chunk_tokens > window and (ingestion or {}).get("chunkingConfiguration"):
            raise ValidationException(
                f"vectorIngestionConfiguration.chunkingConfiguration: chunks of {chunk_tokens} tokens do not fit "
                f"the embedding model {kb.embedding_model_id}, which embeds at most {window} tokens at once")
        if params.get("serverSideEncryptionConfiguration"):
            raise ValidationException("serverSideEncryptionConfiguration (a KMS key) is not supported on this server")
        ds_id, now = new_id(), utc_now()
        row = DataSourceRow(data_source_id=ds_id, knowledge_base_id=kb.knowledge_base_id, account_id=account,
                            name=params["name"], description=params.get("description"), configuration=configuration,
                            ingestion=ingestion, deletion_policy=params.get("dataDeletionPolicy") or "DELETE",
                            status=DataSourceStatus.AVAILABLE, created_at=now, updated_at=now)
        if configuration["type"] == "S3":  # the role must read the bucket: said now, not by a failed sync later
            self.iam.check_role(kb.role_arn, account, read_permissions(row))
        with self.db.session() as session:
            if session.scalar(select(func.count()).select_from(DataSourceRow).where(
                    DataSourceRow.knowledge_base_id == kb.knowledge_base_id, DataSourceRow.name == params["name"])):
                raise ConflictException(f"A data source named {params['name']} already exists in knowledge base "
                                        f"{kb.knowledge_base_id}")
            session.add(row)
        return {"dataSourceId": ds_id}

    def window(self, kb: KnowledgeBaseRow) -> int:
        """The most tokens of text the knowledge base's embedding model embeds at once (its window, less the
        two special tokens around a text)."""
        return self.profiles.catalog.get(kb.embedding_model_id).context_length - 2

    def data_source(self, account: str, kb_id: str, ds_id: str) -> DataSourceRow:
        self.row(account, kb_id)
        with self.db.session() as session:
            row = session.get(DataSourceRow, ds_id)
        if row is None or row.knowledge_base_id != kb_id:
            raise ResourceNotFoundException(f"Data source {ds_id} does not exist in knowledge base {kb_id}")
        return row

    def get_data_source(self, account: str, kb_id: str, ds_id: str) -> dict[str, Any]:
        row = self.data_source(account, kb_id, ds_id)
        out = {"knowledgeBaseId": kb_id, "dataSourceId": ds_id, "name": row.name, "status": row.status,
               "description": row.description, "dataSourceConfiguration": row.configuration,
               "dataDeletionPolicy": row.deletion_policy, "createdAt": row.created_at, "updatedAt": row.updated_at,
               "failureReasons": row.failure_reasons}
        if row.ingestion:
            out["vectorIngestionConfiguration"] = row.ingestion
        return {"dataSource": out}

    def list_data_sources(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        kb_id = params["knowledgeBaseId"]
        self.row(account, kb_id)
        rows, token = page(self.db, select(DataSourceRow).where(DataSourceRow.knowledge_base_id == kb_id),
                           DataSourceRow.created_at, params)
        return {"dataSourceSummaries": [
            {"knowledgeBaseId": kb_id, "dataSourceId": r.data_source_id, "name": r.name, "status": r.status,
             "description": r.description, "updatedAt": r.updated_at} for r in rows], "nextToken": token}

    def update_data_source(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        kb_id, ds_id = params["knowledgeBaseId"], params["dataSourceId"]
        row = self.data_source(account, kb_id, ds_id)
        configuration = params["dataSourceConfiguration"]
        _check_source(configuration, account)
        if configuration["type"] != row.configuration["type"]:
            raise ValidationException("dataSourceConfiguration.type of a data source cannot change")
        with self.db.session() as session:
            if session.scalar(select(func.count()).select_from(DataSourceRow).where(
                    DataSourceRow.knowledge_base_id == kb_id, DataSourceRow.name == params["name"],
                    DataSourceRow.data_source_id != ds_id)):
                raise ConflictException(f"A data source named {params['name']} already exists in knowledge base "
                                        f"{kb_id}")
        ingestion = params.get("vectorIngestionConfiguration")
        _check_ingestion(ingestion)
        if ingestion is not None and (ingestion or {}).get("chunkingConfiguration") != (
                row.ingestion or {}).get("chunkingConfiguration"):
            raise ValidationException("vectorIngestionConfiguration.chunkingConfiguration cannot change after a data "
                                      "source is created (its documents were chunked with it)")
        if params.get("serverSideEncryptionConfiguration"):
            raise ValidationException("serverSideEncryptionConfiguration (a KMS key) is not supported on this server")
        row.configuration = configuration
        if configuration["type"] == "S3":
            self.iam.check_role(self.row(account, kb_id).role_arn, account, read_permissions(row))
        self.db.update(DataSourceRow, ds_id, name=params["name"], description=params.get("description"),
                       configuration=configuration, deletion_policy=params.get("dataDeletionPolicy")
                       or row.deletion_policy)
        return self.get_data_source(account, kb_id, ds_id)

    def delete_data_source(self, account: str, kb_id: str, ds_id: str) -> dict[str, Any]:
        """With the DELETE policy its chunks leave the store; with RETAIN they stay searchable."""
        kb, row = self.row(account, kb_id), self.data_source(account, kb_id, ds_id)
        self._no_running_job(kb_id, "delete a data source")
        if row.deletion_policy == "DELETE":
            store_for(kb, self.settings).delete_data_source(ds_id)
        with self.db.session() as session:
            for table in (DocumentRow, IngestionJobRow):
                session.execute(delete(table).where(table.data_source_id == ds_id))
            session.delete(session.get(DataSourceRow, ds_id))
        return {"knowledgeBaseId": kb_id, "dataSourceId": ds_id, "status": DataSourceStatus.DELETING}

    # -- ingestion jobs ---------------------------------------------------------------------------

    def start_ingestion_job(self, principal: Principal, params: dict[str, Any]) -> dict[str, Any]:
        account = principal.account_id
        started = run_once(self.db, account_id=account, operation="StartIngestionJob",
                           token=params.get("clientToken"), params=params, token_member="clientToken",
                           create=lambda: self._start(account, params["knowledgeBaseId"], params["dataSourceId"],
                                                      params.get("description")))
        return self.get_ingestion_job(account, params["knowledgeBaseId"], params["dataSourceId"],
                                      started["ingestionJobId"])

    def _start(self, account: str, kb_id: str, ds_id: str, description: str | None,
               documents: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        kb, source = self.row(account, kb_id), self.data_source(account, kb_id, ds_id)
        if documents is None:
            if source.configuration["type"] != "S3":
                raise ValidationException("A CUSTOM data source has nothing to sync: ingest its documents with "
                                          "IngestKnowledgeBaseDocuments")
            self.iam.check_role(kb.role_arn, account, read_permissions(source))
        self._no_running_job(kb_id, "start an ingestion job")
        job_id, now = new_id(), utc_now()
        with self.db.session() as session:
            session.add(IngestionJobRow(ingestion_job_id=job_id, knowledge_base_id=kb_id, data_source_id=ds_id,
                                        account_id=account, description=description,
                                        status=IngestionJobStatus.STARTING, statistics=empty_statistics(),
                                        documents=documents, started_at=now, updated_at=now))
        runner_id = self.runner.submit(account, ENTRY_POINT, {"ingestionJobId": job_id}, failure_hook=FAILURE_HOOK)
        self.db.update(IngestionJobRow, job_id, runner_job_id=runner_id)
        return {"ingestionJobId": job_id}

    def _job_row(self, account: str, kb_id: str, ds_id: str, job_id: str) -> IngestionJobRow:
        self.data_source(account, kb_id, ds_id)
        with self.db.session() as session:
            row = session.get(IngestionJobRow, job_id)
        if row is None or row.data_source_id != ds_id or row.documents is not None:
            raise ResourceNotFoundException(f"Ingestion job {job_id} does not exist")
        return self._settle(row)

    def _settle(self, row: IngestionJobRow) -> IngestionJobRow:
        """A job the runner ended without the job saying how (stopped while queued, killed after the stop's
        grace, given up after restarts) is written down as the runner left it, so that it never holds the
        knowledge base as running."""
        if row.status not in RUNNING or not row.runner_job_id:
            return row
        runner = self.runner.get(row.runner_job_id)
        outcome = {JobState.STOPPED: IngestionJobStatus.STOPPED, JobState.FAILED: IngestionJobStatus.FAILED,
                   JobState.SUCCEEDED: IngestionJobStatus.FAILED}.get(runner.state if runner else JobState.FAILED)
        if outcome is None:
            return row
        with self.db.session() as session:
            fresh = session.get(IngestionJobRow, row.ingestion_job_id)
            settled = fresh.status in RUNNING  # the job itself may have finished in between
            if settled:
                fresh.status, fresh.updated_at = outcome, utc_now()
                if outcome == IngestionJobStatus.FAILED:
                    reason = (runner.message if runner else None) or "The job ended without reporting its outcome"
                    fresh.failure_reasons = [*(fresh.failure_reasons or []), reason]
                if fresh.documents is not None:
                    abandon_documents(session, fresh.data_source_id, f"The ingestion job was {outcome.lower()}")
            kb_id, ds_id = fresh.knowledge_base_id, fresh.data_source_id
        if settled:  # documents deleted while it ran are not waited for any more
            with self.db.session() as session:
                kb = session.scalars(select(KnowledgeBaseRow).where(
                    KnowledgeBaseRow.knowledge_base_id == kb_id)).first()
            if kb is not None:
                purge_deleted(self.db, store_for(kb, self.settings), ds_id)
        return fresh

    def get_ingestion_job(self, account: str, kb_id: str, ds_id: str, job_id: str) -> dict[str, Any]:
        row = self._job_row(account, kb_id, ds_id, job_id)
        out = {**self._job_summary(row), "failureReasons": row.failure_reasons}
        progress = self.progress(row)
        if progress:
            out["progress"] = progress  # Outcrop's own member: boto3 drops it, raw JSON and the CLI show it
        return {"ingestionJob": out}

    def progress(self, row: IngestionJobRow) -> dict[str, Any] | None:
        job = self.runner.get(row.runner_job_id) if row.runner_job_id else None
        return dict(job.progress) if job is not None and job.progress else None

    @staticmethod
    def _job_summary(row: IngestionJobRow) -> dict[str, Any]:
        return {"knowledgeBaseId": row.knowledge_base_id, "dataSourceId": row.data_source_id,
                "ingestionJobId": row.ingestion_job_id, "description": row.description, "status": row.status,
                "statistics": row.statistics, "startedAt": row.started_at, "updatedAt": row.updated_at}

    def list_ingestion_jobs(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        kb_id, ds_id = params["knowledgeBaseId"], params["dataSourceId"]
        self.data_source(account, kb_id, ds_id)
        query = select(IngestionJobRow).where(IngestionJobRow.data_source_id == ds_id,
                                              IngestionJobRow.documents.is_(None))
        for f in params.get("filters") or []:
            if f["attribute"] != "STATUS" or f["operator"] != "EQ":
                raise ValidationException("filters: only attribute STATUS with operator EQ is supported")
            query = query.where(IngestionJobRow.status.in_(f["values"]))
        sort = params.get("sortBy") or {}
        column = {"STATUS": IngestionJobRow.status}.get(sort.get("attribute"), IngestionJobRow.started_at)
        if column is not IngestionJobRow.started_at:
            raise ValidationException("sortBy: only STARTED_AT is supported")
        order = {"sortOrder": "Ascending" if sort.get("order") == "ASCENDING" else "Descending"}
        rows, token = page(self.db, query, IngestionJobRow.started_at, {**params, **order})
        return {"ingestionJobSummaries": [self._job_summary(r) for r in rows], "nextToken": token}

    def stop_ingestion_job(self, account: str, kb_id: str, ds_id: str, job_id: str) -> dict[str, Any]:
        row = self._job_row(account, kb_id, ds_id, job_id)
        if row.status not in (IngestionJobStatus.STARTING, IngestionJobStatus.IN_PROGRESS):
            raise ConflictException(f"The ingestion job {job_id} is {row.status}; only a running job can be stopped")
        self.db.update(IngestionJobRow, job_id, status=IngestionJobStatus.STOPPING)
        if row.runner_job_id:
            self.runner.request_stop(row.runner_job_id)
        return self.get_ingestion_job(account, kb_id, ds_id, job_id)

    # -- documents --------------------------------------------------------------------------------

    def ingest_documents(self, principal: Principal, params: dict[str, Any]) -> dict[str, Any]:
        """IngestKnowledgeBaseDocuments: the documents are recorded as STARTING and ingested by a job, as
        a sync is, so that a big document never holds a request open."""
        account, kb_id, ds_id = principal.account_id, params["knowledgeBaseId"], params["dataSourceId"]
        source = self.data_source(account, kb_id, ds_id)
        documents = [_storable(doc) for doc in params["documents"]]
        identifiers = [_check_document(doc, source, i, account) for i, doc in enumerate(documents)]
        if len(set(identifiers)) != len(identifiers):
            raise ValidationException("documents names the same document twice")

        def ingest() -> dict[str, Any]:
            self._no_running_job(kb_id, "ingest documents")
            self._mark(account, kb_id, ds_id, source.configuration["type"], identifiers, DocumentStatus.STARTING)
            self._start(account, kb_id, ds_id, None, documents)
            return {"identifiers": identifiers}
        run_once(self.db, account_id=account, operation="IngestKnowledgeBaseDocuments",
                 token=params.get("clientToken"), params={**params, "documents": documents},
                 token_member="clientToken", create=ingest)
        return {"documentDetails": self._details(kb_id, ds_id, identifiers, source.configuration["type"])}

    def delete_documents(self, principal: Principal, params: dict[str, Any]) -> dict[str, Any]:
        account, kb_id, ds_id = principal.account_id, params["knowledgeBaseId"], params["dataSourceId"]
        kb, source = self.row(account, kb_id), self.data_source(account, kb_id, ds_id)
        kind = source.configuration["type"]
        identifiers = [_identifier(d, kind, f"documentIdentifiers[{i}]")
                       for i, d in enumerate(params["documentIdentifiers"])]
        details = self._details(kb_id, ds_id, identifiers, kind, DocumentStatus.DELETING)
        # The delete wins over a running job without waiting for it: the rows become tombstones (DELETING)
        # first, then the chunks go. A job checks a document's row before it writes the document's chunks
        # and again as it records it (knowledge/job.py), and drops a tombstoned one, its chunks included.
        # The tombstones go once no job of the data source runs: here, or when that job ends.
        with self.db.session() as session:
            session.execute(update(DocumentRow).where(
                DocumentRow.data_source_id == ds_id, DocumentRow.identifier.in_(identifiers)).values(
                status=DocumentStatus.DELETING, status_reason=None, updated_at=utc_now()))
        store = store_for(kb, self.settings)
        store.delete_documents([f"{ds_id}:{i}" for i in identifiers])
        if self._running_job(IngestionJobRow.data_source_id == ds_id) is None:
            purge_deleted(self.db, None, ds_id, identifiers)  # the chunks went just now
        return {"documentDetails": details}

    def get_documents(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        kb_id, ds_id = params["knowledgeBaseId"], params["dataSourceId"]
        kind = self.data_source(account, kb_id, ds_id).configuration["type"]
        identifiers = [_identifier(d, kind, f"documentIdentifiers[{i}]")
                       for i, d in enumerate(params["documentIdentifiers"])]
        return {"documentDetails": self._details(kb_id, ds_id, identifiers, kind)}

    def list_documents(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        kb_id, ds_id = params["knowledgeBaseId"], params["dataSourceId"]
        source = self.data_source(account, kb_id, ds_id)
        offset = int(params["nextToken"]) if (params.get("nextToken") or "").isdigit() else 0
        limit = params.get("maxResults") or 100
        with self.db.session() as session:
            rows = session.scalars(select(DocumentRow).where(DocumentRow.data_source_id == ds_id)
                                   .order_by(DocumentRow.identifier).offset(offset).limit(limit + 1)).all()
        out = {"documentDetails": [_detail(r, source.configuration["type"]) for r in rows[:limit]]}
        if len(rows) > limit:
            out["nextToken"] = str(offset + limit)
        return out

    def _details(self, kb_id: str, ds_id: str, identifiers: list[str], kind: str,
                 status: str | None = None) -> list[dict[str, Any]]:
        with self.db.session() as session:
            rows = {r.identifier: r for r in session.scalars(select(DocumentRow).where(
                DocumentRow.data_source_id == ds_id, DocumentRow.identifier.in_(identifiers)))}
        out = []
        for identifier in identifiers:
            row = rows.get(identifier) or DocumentRow(data_source_id=ds_id, identifier=identifier,
                                                      knowledge_base_id=kb_id, status=DocumentStatus.NOT_FOUND,
                                                      updated_at=utc_now())
            out.append(_detail(row, kind, status))
        return out

    def _mark(self, account: str, kb_id: str, ds_id: str, kind: str, identifiers: list[str], status: str) -> None:
        with self.db.session() as session:
            for identifier in identifiers:
                row = session.get(DocumentRow, (ds_id, identifier)) or DocumentRow(
                    data_source_id=ds_id, identifier=identifier, knowledge_base_id=kb_id, account_id=account,
                    source_type=kind, chunks=0)
                row.status, row.status_reason, row.updated_at = status, None, utc_now()
                session.merge(row)


def _detail(row: DocumentRow, kind: str, status: str | None = None) -> dict[str, Any]:
    identifier = {"dataSourceType": kind}
    identifier |= {"s3": {"uri": row.identifier}} if kind == "S3" else {"custom": {"id": row.identifier}}
    out = {"knowledgeBaseId": row.knowledge_base_id, "dataSourceId": row.data_source_id,
           "status": status or row.status, "identifier": identifier, "updatedAt": row.updated_at}
    if row.status_reason and not status:
        out["statusReason"] = row.status_reason
    return out


def _identifier(document: dict[str, Any], kind: str, path: str) -> str:
    """A DocumentIdentifier's key in the data source: its S3 URI or its custom id."""
    if document.get("dataSourceType") != kind:
        raise ValidationException(f"{path}.dataSourceType must be {kind}, the data source's type")
    if kind == "S3":
        uri = (document.get("s3") or {}).get("uri")
        if not uri:
            raise ValidationException(f"{path}.s3.uri is required for an S3 data source")
        return str(S3Uri.parse(uri))
    identifier = (document.get("custom") or {}).get("id")
    if not identifier:
        raise ValidationException(f"{path}.custom.id is required for a CUSTOM data source")
    return identifier


def _check_document(document: dict[str, Any], source: DataSourceRow, index: int, account: str) -> str:
    path = f"documents[{index}]"
    content = document["content"]
    kind = source.configuration["type"]
    _check_metadata(document.get("metadata"), f"{path}.metadata", account)
    if kind == "S3":
        identifier = _identifier({"dataSourceType": content["dataSourceType"],
                                  "s3": (content.get("s3") or {}).get("s3Location")}, kind, f"{path}.content")
        prefixes = [str(p) for p in source_prefixes(source)]
        if not any(identifier.startswith(p) for p in prefixes):
            raise ValidationException(f"{path}.content.s3.uri {identifier} is outside the data source's "
                                      f"bucket and prefixes ({', '.join(prefixes)})")
        return identifier
    custom = content.get("custom") or {}
    identifier = _identifier({"dataSourceType": content["dataSourceType"],
                              "custom": custom.get("customDocumentIdentifier")}, kind, f"{path}.content")
    source_type = custom.get("sourceType")
    if source_type == "IN_LINE":
        inline = custom.get("inlineContent") or {}
        if inline.get("type") == "TEXT" and not (inline.get("textContent") or {}).get("data"):
            raise ValidationException(f"{path}.content.custom.inlineContent.textContent.data is required")
        if inline.get("type") == "BYTE" and not (inline.get("byteContent") or {}).get("data"):
            raise ValidationException(f"{path}.content.custom.inlineContent.byteContent.data is required")
        if inline.get("type") not in ("TEXT", "BYTE"):
            raise ValidationException(f"{path}.content.custom.inlineContent.type must be TEXT or BYTE")
    elif source_type == "S3_LOCATION":
        _check_location(custom.get("s3Location"), f"{path}.content.custom.s3Location", account)
    else:
        raise ValidationException(f"{path}.content.custom.sourceType must be IN_LINE or S3_LOCATION")
    return identifier


def _check_metadata(metadata: dict[str, Any] | None, path: str, account: str) -> None:
    if not metadata:
        return
    if metadata.get("accessControlList"):
        raise ValidationException(f"{path}.accessControlList (per-document access control) is not supported on "
                                  "this server: every principal who may Retrieve sees every document")
    if metadata["type"] == "S3_LOCATION":
        _check_location(metadata.get("s3Location"), f"{path}.s3Location", account)
    elif metadata["type"] != "IN_LINE_ATTRIBUTE":
        raise ValidationException(f"{path}.type must be IN_LINE_ATTRIBUTE or S3_LOCATION")


def _check_location(location: dict[str, Any] | None, path: str, account: str) -> None:
    if not (location or {}).get("uri"):
        raise ValidationException(f"{path}.uri is required")
    S3Uri.parse(location["uri"])
    if location.get("bucketOwnerAccountId") not in (None, account):
        raise ValidationException(f"{path}.bucketOwnerAccountId: the bucket must be one of the caller's account")


def _storable(document: dict[str, Any]) -> dict[str, Any]:
    """The document as JSON can hold it (it waits in the job's row): inline bytes as base64 text."""
    inline = ((document.get("content") or {}).get("custom") or {}).get("inlineContent") or {}
    data = (inline.get("byteContent") or {}).get("data")
    if not isinstance(data, bytes):
        return document
    import base64
    import copy

    document = copy.deepcopy(document)
    document["content"]["custom"]["inlineContent"]["byteContent"]["data"] = base64.b64encode(data).decode()
    return document


def purge_deleted(db: Database, store: VectorStore | None, ds_id: str, identifiers: list[str] | None = None) -> None:
    """The tombstones (DELETING rows) of the data source go, with any chunks of theirs a job wrote after the
    delete removed them (`store`; None when the caller has just removed them). `identifiers`: only those."""
    query = select(DocumentRow.identifier).where(DocumentRow.data_source_id == ds_id,
                                                 DocumentRow.status == DocumentStatus.DELETING)
    if identifiers is not None:
        query = query.where(DocumentRow.identifier.in_(identifiers))
    with db.session() as session:
        deleted = list(session.scalars(query))
    if not deleted:
        return
    if store is not None:
        store.delete_documents([f"{ds_id}:{i}" for i in deleted])
    with db.session() as session:  # only rows still tombstones: one ingested again since is kept
        session.execute(delete(DocumentRow).where(DocumentRow.data_source_id == ds_id,
                                                  DocumentRow.identifier.in_(deleted),
                                                  DocumentRow.status == DocumentStatus.DELETING))


def abandon_documents(session: Any, ds_id: str, reason: str) -> None:
    """Directly ingested documents still waiting when their job ended without them: FAILED, with why."""
    for doc in session.scalars(select(DocumentRow).where(
            DocumentRow.data_source_id == ds_id,
            DocumentRow.status.in_([DocumentStatus.STARTING, DocumentStatus.IN_PROGRESS]))):
        doc.status, doc.status_reason, doc.updated_at = DocumentStatus.FAILED, reason, utc_now()


def _check_source(configuration: dict[str, Any], account: str) -> None:
    kind = configuration["type"]
    if kind == "CUSTOM":
        if configuration.get("s3Configuration"):
            raise ValidationException("dataSourceConfiguration.s3Configuration is for S3 data sources; a CUSTOM one "
                                      "takes its documents from IngestKnowledgeBaseDocuments")
        return
    if kind != "S3":
        raise ValidationException(f"dataSourceConfiguration.type {kind} is not available on this server; use S3 "
                                  "(a bucket of this server's object store) or CUSTOM (IngestKnowledgeBaseDocuments)")
    s3 = configuration.get("s3Configuration")
    if not s3:
        raise ValidationException("dataSourceConfiguration.s3Configuration is required for an S3 data source")
    bucket = s3["bucketArn"].removeprefix("arn:aws:s3:::")
    if bucket == s3["bucketArn"] or "/" in bucket:
        raise ValidationException("dataSourceConfiguration.s3Configuration.bucketArn must be arn:aws:s3:::BUCKET")
    S3Uri(bucket, "")  # the bucket name is checked as every bucket is
    if s3.get("bucketOwnerAccountId") not in (None, account):
        raise ValidationException("bucketOwnerAccountId: the bucket must be one of the caller's account")
    if len(s3.get("inclusionPrefixes") or []) > 1:
        raise ValidationException("s3Configuration.inclusionPrefixes takes at most one prefix, as on Bedrock")


def _check_ingestion(ingestion: dict[str, Any] | None) -> None:
    if not ingestion:
        return
    for member, what in (("parsingConfiguration", "parsing with a foundation model or Bedrock Data Automation"),
                         ("customTransformationConfiguration", "custom transformations (Lambda)"),
                         ("contextEnrichmentConfiguration", "context enrichment")):
        if ingestion.get(member):
            raise ValidationException(f"vectorIngestionConfiguration.{member} ({what}) is not supported on this "
                                      "server; documents are parsed by its own parsers (txt, md, html, csv, pdf, docx)")
    chunking.check_config(ingestion.get("chunkingConfiguration"))


def _hidden_size(weights: Path) -> int:
    """The size of an embedding model's vectors, from its config, without loading it."""
    import json

    config = json.loads((weights / "config.json").read_text()) if (weights / "config.json").exists() else {}
    size = config.get("hidden_size") or config.get("d_model")
    if not isinstance(size, int):
        raise ValidationException(f"The embedding model at {weights} has no hidden_size in its config.json")
    return size
