"""DeleteKnowledgeBaseDocuments against an ingestion job that holds the same document: the delete wins.

The job's steps are called by hand with the delete between them (before the job writes the document's chunks,
and between writing and recording them), so each interleaving is exercised exactly, with no sleeps: the
control plane (`KnowledgeBases`) on a real database, the job's steps (`knowledge/job.py`) on a real LanceDB
folder, a fake embedding.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from sqlalchemy import select

from outcrop.iam.principal import Principal
from outcrop.knowledge import job
from outcrop.knowledge.service import KnowledgeBases, empty_statistics, purge_deleted, store_for
from outcrop.knowledge.tables import (
    DataSourceRow,
    DocumentRow,
    IngestionJobRow,
    IngestionJobStatus,
    KnowledgeBaseRow,
)
from outcrop.platform.config import Settings
from outcrop.platform.database import utc_now

ACCOUNT = "123456789012"
PRINCIPAL = Principal.account_root(ACCOUNT)
KB, CUSTOM, S3 = "KBRACE0001", "DSCUSTOM01", "DSBUCKET01"
DIMENSION = 16
#: Each document whole as one chunk: no tokenizer needed.
WHOLE = {"chunkingStrategy": "NONE"}


class _Runner:
    """Jobs are run by hand here: submitting one starts nothing (and leaves no runner id to ask about)."""

    def submit(self, *args, **kwargs) -> None:
        return None


def _embed(texts: list[str]) -> np.ndarray:
    vectors = np.stack([np.random.default_rng(zlib.crc32(t.encode())).standard_normal(DIMENSION) for t in texts])
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture
def kbs(db, tmp_path):
    now = utc_now()
    with db.session() as session:
        session.add(KnowledgeBaseRow(
            arn=f"arn:aws:bedrock:us-east-1:{ACCOUNT}:knowledge-base/{KB}", knowledge_base_id=KB, account_id=ACCOUNT,
            name="race", role_arn=f"arn:aws:iam::{ACCOUNT}:role/r", configuration={"type": "VECTOR"},
            embedding_model_id="m", dimension=DIMENSION, store_uri=str(tmp_path / "vectors"), store_table="chunks",
            status="ACTIVE", created_at=now, updated_at=now))
        session.flush()
        for ds_id, configuration in ((CUSTOM, {"type": "CUSTOM"}), (S3, {
                "type": "S3", "s3Configuration": {"bucketArn": "arn:aws:s3:::docs"}})):
            session.add(DataSourceRow(data_source_id=ds_id, knowledge_base_id=KB, account_id=ACCOUNT, name=ds_id,
                                      configuration=configuration, deletion_policy="DELETE", status="AVAILABLE",
                                      created_at=now, updated_at=now))
    return KnowledgeBases(db, None, None, _Runner(), Settings(data_dir=tmp_path))


def _rows(kbs, ds_id: str = CUSTOM):
    with kbs.db.session() as session:
        kb = session.scalars(select(KnowledgeBaseRow)).one()
        source = session.get(DataSourceRow, ds_id)
        running = session.scalars(select(IngestionJobRow).where(
            IngestionJobRow.data_source_id == ds_id).order_by(IngestionJobRow.started_at.desc())).first()
    return kb, source, running


def _ingest(kbs, text: str) -> list[job.Pending]:
    """IngestKnowledgeBaseDocuments of doc-1, and the job's plan for it."""
    kbs.ingest_documents(PRINCIPAL, {"knowledgeBaseId": KB, "dataSourceId": CUSTOM, "documents": [{"content": {
        "dataSourceType": "CUSTOM", "custom": {"customDocumentIdentifier": {"id": "doc-1"}, "sourceType": "IN_LINE",
                                               "inlineContent": {"type": "TEXT", "textContent": {"data": text}}}}}]})
    _, source, running = _rows(kbs)
    return job._plan_documents(None, source, running.documents, {})


def _delete(kbs, ds_id: str = CUSTOM, identifier: dict | None = None) -> str:
    identifier = identifier or {"dataSourceType": "CUSTOM", "custom": {"id": "doc-1"}}
    [detail] = kbs.delete_documents(PRINCIPAL, {"knowledgeBaseId": KB, "dataSourceId": ds_id,
                                                "documentIdentifiers": [identifier]})["documentDetails"]
    return detail["status"]


def _finish(kbs, ds_id: str = CUSTOM) -> None:
    """The end of the job's run: its status leaves RUNNING, then the tombstones go."""
    kb, _, running = _rows(kbs, ds_id)
    kbs.db.update(IngestionJobRow, running.ingestion_job_id, status=IngestionJobStatus.COMPLETE)
    purge_deleted(kbs.db, store_for(kb, kbs.settings), ds_id)


def _status(kbs, identifier: str = "doc-1", ds_id: str = CUSTOM) -> str:
    kind = "CUSTOM" if ds_id == CUSTOM else "S3"
    key = {"custom": {"id": identifier}} if kind == "CUSTOM" else {"s3": {"uri": identifier}}
    [detail] = kbs.get_documents(ACCOUNT, {"knowledgeBaseId": KB, "dataSourceId": ds_id, "documentIdentifiers": [
        {"dataSourceType": kind, **key}]})["documentDetails"]
    return detail["status"]


def _chunks(kbs) -> set[str]:
    kb, _, _ = _rows(kbs)
    return {hit.document_id for hit in store_for(kb, kbs.settings).search(_embed(["q"])[0].tolist(), "", 100)}


def test_a_document_deleted_before_the_job_writes_it_stays_deleted_and_can_be_ingested_again(kbs):
    pending = _ingest(kbs, "The office dog is a beagle named Waffles.")
    assert _status(kbs) == "STARTING"
    assert _delete(kbs) == "DELETING"
    assert _status(kbs) == "DELETING"  # the job still runs: a tombstone until it ends
    kb, source, _ = _rows(kbs)
    statistics = empty_statistics()
    job._index(pending, source, kb, store_for(kb, kbs.settings), None, WHOLE, _embed, kbs.db, statistics, [],
               direct=True)
    assert _chunks(kbs) == set() and _status(kbs) == "DELETING"
    assert statistics == empty_statistics()
    _finish(kbs)
    assert _status(kbs) == "NOT_FOUND" and kbs.list_documents(ACCOUNT, {
        "knowledgeBaseId": KB, "dataSourceId": CUSTOM})["documentDetails"] == []

    pending = _ingest(kbs, "The office dog is a poodle named Pancake.")  # the same id, ingested again
    job._index(pending, source, kb, store_for(kb, kbs.settings), None, WHOLE, _embed, kbs.db, statistics, [],
               direct=True)
    _finish(kbs)
    assert _status(kbs) == "INDEXED" and _chunks(kbs) == {f"{CUSTOM}:doc-1"}


def test_a_document_deleted_between_the_write_and_the_record_loses_its_chunks(kbs):
    pending = _ingest(kbs, "The office cat is a tabby called Biscuit.")
    kb, source, _ = _rows(kbs)
    store = store_for(kb, kbs.settings)
    records, outcome = job._prepare(pending, source, None, WHOLE, _embed)
    kept = job._write(pending, records, source, store, kbs.db, True)
    assert _chunks(kbs) == {f"{CUSTOM}:doc-1"}
    assert _delete(kbs) == "DELETING"
    statistics = empty_statistics()
    job._record(kept, outcome, source, kb, store, kbs.db, statistics, [], True)
    assert _chunks(kbs) == set() and _status(kbs) == "DELETING" and statistics == empty_statistics()
    _finish(kbs)
    assert _status(kbs) == "NOT_FOUND"


def test_with_no_job_running_a_delete_is_done_at_once(kbs):
    pending = _ingest(kbs, "The office fish is a goldfish.")
    kb, source, _ = _rows(kbs)
    job._index(pending, source, kb, store_for(kb, kbs.settings), None, WHOLE, _embed, kbs.db, empty_statistics(),
               [], direct=True)
    _finish(kbs)
    assert _status(kbs) == "INDEXED"
    assert _delete(kbs) == "DELETING"
    assert _status(kbs) == "NOT_FOUND" and _chunks(kbs) == set()


def test_a_sync_drops_a_file_deleted_while_it_runs_and_indexes_a_new_one(kbs):
    now = utc_now()
    old, new = "s3://docs/old.txt", "s3://docs/new.txt"
    with kbs.db.session() as session:
        session.add(DocumentRow(data_source_id=S3, identifier=old, knowledge_base_id=KB, account_id=ACCOUNT,
                                source_type="S3", fingerprint="f", status="INDEXED", chunks=1, updated_at=now))
        session.add(IngestionJobRow(ingestion_job_id="JOBSYNC001", knowledge_base_id=KB, data_source_id=S3,
                                    account_id=ACCOUNT, status=IngestionJobStatus.IN_PROGRESS,
                                    statistics=empty_statistics(), started_at=now, updated_at=now))
    assert _delete(kbs, S3, {"dataSourceType": "S3", "s3": {"uri": old}}) == "DELETING"
    kb, source, _ = _rows(kbs, S3)
    pending = [job.Pending(uri, "g", lambda uri=uri: (uri, f"text of {uri}".encode()), lambda: None, new=uri == new)
               for uri in (old, new)]
    statistics = empty_statistics()
    job._index(pending, source, kb, store_for(kb, kbs.settings), None, WHOLE, _embed, kbs.db, statistics, [])
    assert _chunks(kbs) == {f"{S3}:{new}"} and statistics["numberOfNewDocumentsIndexed"] == 1
    assert statistics["numberOfModifiedDocumentsIndexed"] == 0
    _finish(kbs, S3)
    assert (_status(kbs, old, S3), _status(kbs, new, S3)) == ("NOT_FOUND", "INDEXED")
