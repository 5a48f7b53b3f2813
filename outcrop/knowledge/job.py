"""One ingestion job, top to bottom: list what the data source holds, compare it with what the index has,
then parse, chunk, embed and store what is new or changed, and remove what is gone.

Runs in its own process under the job runner (`outcrop.platform.jobs`). Every read of the user's bucket goes
through the knowledge base's role. Documents are written to the store a batch at a time and recorded in
`knowledge_base_documents` right after, so a job that dies (or a server restart) resumes where it was: the
next attempt finds the finished documents unchanged and skips them. A document that cannot be read is
counted as failed with its reason, and the job goes on.

The same job serves IngestKnowledgeBaseDocuments: then it ingests the documents of the request instead of
listing the bucket.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import mimetypes
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update

from outcrop.iam.scoped_store import ScopedStore
from outcrop.knowledge import chunking, parsing
from outcrop.knowledge.service import (
    abandon_documents,
    purge_deleted,
    read_permissions,
    source_prefixes,
    store_for,
)
from outcrop.knowledge.store import ChunkRecord, VectorStore
from outcrop.knowledge.tables import (
    DataSourceRow,
    DocumentRow,
    DocumentStatus,
    IngestionJobRow,
    IngestionJobStatus,
    KnowledgeBaseRow,
)
from outcrop.platform import jobs
from outcrop.platform.database import Database, utc_now
from outcrop.platform.objectstore import ObjectInfo, S3Uri
from outcrop.platform.tables import JobState

log = logging.getLogger(__name__)

#: Documents embedded and written together: one embedding pass over their chunks, one commit to the store.
BATCH_DOCUMENTS = 32
#: Per-document failure reasons kept on the job (the documents' own rows keep every one).
MAX_REASONS = 100
#: Metadata keys Bedrock reserves and sets on every chunk; retrieval results carry them.
SOURCE_URI, CHUNK_ID, DATA_SOURCE_ID = ("x-amz-bedrock-kb-source-uri", "x-amz-bedrock-kb-chunk-id",
                                        "x-amz-bedrock-kb-data-source-id")
#: A directly ingested document's statuses while its job has yet to index it.
_WAITING = (DocumentStatus.STARTING, DocumentStatus.IN_PROGRESS)
_MIME_EXTENSIONS = {"text/plain": ".txt", "text/markdown": ".md", "text/html": ".html", "text/csv": ".csv",
                    "application/pdf": ".pdf",
                    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx"}


@dataclass
class Pending:
    """A document to (re)index: where it is, how to read it, and what the index should remember of it."""

    identifier: str
    fingerprint: str
    read: Callable[[], tuple[str, bytes]]  # -> (a name whose extension says the type, the bytes)
    read_metadata: Callable[[], bytes | None]
    new: bool
    metadata_changed: bool = False


def run(ctx: jobs.JobContext) -> str | None:
    from outcrop.runtime.service import Caller
    from outcrop.services import JobServices  # the composition root: a job's entry point builds its services

    job_id = ctx.spec["ingestionJobId"]
    db, settings = ctx.db, ctx.settings
    services = JobServices.open(db, settings)
    job, source, kb = _rows(db, job_id)
    _update(db, job_id, status=IngestionJobStatus.IN_PROGRESS)
    # A resumed job keeps what its earlier attempt counted (those documents are skipped or gone now) and
    # scans the source again.
    statistics = {**job.statistics, "numberOfDocumentsScanned": 0, "numberOfMetadataDocumentsScanned": 0}
    reasons: list[str] = []

    # 1. The role may read the data source; what it holds, against what the index has.
    role = services.iam.check_role(kb.role_arn, kb.account_id,
                                   read_permissions(source) if source.configuration["type"] == "S3" else [])
    objects = ScopedStore(services.store, services.iam, role)
    store = store_for(kb, settings)
    # Documents deleted while an earlier job ran and ended without removing their tombstones: gone first,
    # so that nothing below takes their rows for indexed documents.
    purge_deleted(db, store, source.data_source_id)
    with db.session() as session:
        indexed = {r.identifier: r for r in session.scalars(select(DocumentRow).where(
            DocumentRow.data_source_id == source.data_source_id))}
    if job.documents is None:
        pending, gone = _plan_sync(objects, source, indexed, statistics)
    else:
        pending, gone = _plan_documents(objects, source, job.documents, indexed), []

    # 2. Gone from the bucket: gone from the index.
    if gone:
        store.delete_documents([_document_id(source, i) for i in gone])
        _forget(db, source.data_source_id, gone)
        statistics["numberOfDocumentsDeleted"] += len(gone)

    # 3. New and changed documents, a batch at a time.
    runtime = services.runtime()
    caller = Caller(request_id=f"ingestion-{job_id}", principal=role)
    model_id = kb.embedding_model_id
    _, deployment = runtime.encoder(kb.account_id, model_id)
    tokenizer = deployment.loaded.tokenizer
    config = (source.ingestion or {}).get("chunkingConfiguration") or chunking.default_for(
        deployment.loaded.context_length - 2)

    def embed(texts: list[str]):
        return runtime.embed_texts(caller, model_id, texts, "IngestionJob").numpy()

    direct = job.documents is not None
    done = 0
    try:
        for start in range(0, len(pending), BATCH_DOCUMENTS):
            if ctx.should_stop():
                _finish(db, job_id, IngestionJobStatus.STOPPED, statistics, reasons)
                if direct:
                    with db.session() as session:
                        abandon_documents(session, source.data_source_id, "The ingestion job was stopped")
                return JobState.STOPPED
            batch = pending[start:start + BATCH_DOCUMENTS]
            _index(batch, source, kb, store, tokenizer, config, embed, db, statistics, reasons, direct)
            done += len(batch)
            _update(db, job_id, statistics=dict(statistics))
            ctx.report({"percent": round(100 * done / len(pending), 1), "documents": done, "totalDocuments":
                        len(pending), "failed": statistics["numberOfDocumentsFailed"]}, force=done == len(pending))
        store.optimize()  # the full-text index takes in the new chunks; an ANN index once the table is big
        _finish(db, job_id, IngestionJobStatus.COMPLETE, statistics, reasons)
        return None
    finally:
        # After the job's status left the running ones (or as it fails): a delete from now on removes its own
        # tombstones, and those written while the job ran go here (else at the next job's start).
        try:
            purge_deleted(db, store, source.data_source_id)
        except Exception:  # never in place of the job's own outcome
            log.exception("removing the documents deleted during ingestion job %s", job_id)


def on_failure(db: Database, runner_job_id: str, message: str) -> None:
    """Called by the job runner when the job failed or died: the job is FAILED with the reason."""
    with db.session() as session:
        row = session.scalars(select(IngestionJobRow).where(IngestionJobRow.runner_job_id == runner_job_id)).first()
        if row is None or row.status in (IngestionJobStatus.COMPLETE, IngestionJobStatus.FAILED,
                                         IngestionJobStatus.STOPPED):
            return
        row.status, row.updated_at = IngestionJobStatus.FAILED, utc_now()
        row.failure_reasons = [*(row.failure_reasons or []), message][-MAX_REASONS:]
        if row.documents is not None:  # directly ingested documents that never got there failed with the job
            abandon_documents(session, row.data_source_id, message)


# -- what to do ------------------------------------------------------------------------------------

def _plan_sync(objects: ScopedStore, source: DataSourceRow, indexed: dict[str, DocumentRow],
               statistics: dict[str, int]) -> tuple[list[Pending], list[str]]:
    """The bucket's documents (and their metadata sidecars) against the index: what to index, what to drop."""
    listed: dict[str, ObjectInfo] = {}
    for prefix in source_prefixes(source):
        for info in objects.list(prefix):
            listed[str(info.uri)] = info
    sidecars = {parsing.document_of(uri): info for uri, info in listed.items() if parsing.is_metadata_file(uri)}
    documents = {uri: info for uri, info in listed.items() if not parsing.is_metadata_file(uri)}
    statistics["numberOfDocumentsScanned"] += len(documents)
    statistics["numberOfMetadataDocumentsScanned"] += len(sidecars)
    pending = []
    for uri, info in sorted(documents.items()):
        sidecar = sidecars.get(uri)
        fingerprint = _fingerprint(_stamp(info), _stamp(sidecar) if sidecar else "")
        old = indexed.get(uri)
        if old is not None and old.fingerprint == fingerprint and old.status == DocumentStatus.INDEXED:
            continue
        metadata_changed = old is not None and old.fingerprint is not None and \
            old.fingerprint.split(":")[0] == fingerprint.split(":")[0]
        pending.append(Pending(uri, fingerprint, _reader(objects, uri),
                               _reader_or_none(objects, str(sidecar.uri)) if sidecar else lambda: None,
                               new=old is None, metadata_changed=metadata_changed))
    gone = sorted(set(indexed) - set(documents))
    return pending, gone


def _plan_documents(objects: ScopedStore, source: DataSourceRow, documents: list[dict[str, Any]],
                    indexed: dict[str, DocumentRow]) -> list[Pending]:
    """IngestKnowledgeBaseDocuments: each document as given (inline, or read from S3), always (re)indexed."""
    pending = []
    for doc in documents:
        content = doc["content"]
        if content["dataSourceType"] == "S3":
            identifier = str(S3Uri.parse(content["s3"]["s3Location"]["uri"]))
            read = _reader(objects, identifier)
        else:
            custom = content["custom"]
            identifier = custom["customDocumentIdentifier"]["id"]
            read = _custom_reader(objects, identifier, custom)
        metadata = doc.get("metadata") or {}
        if metadata.get("type") == "S3_LOCATION":
            read_metadata = _reader_or_none(objects, metadata["s3Location"]["uri"])
        elif metadata.get("type") == "IN_LINE_ATTRIBUTE":
            attributes = {a["key"]: {"value": a["value"]} for a in metadata.get("inlineAttributes") or []}
            encoded = json.dumps({"metadataAttributes": attributes}).encode()
            read_metadata = lambda encoded=encoded: encoded  # noqa: E731
        else:
            read_metadata = lambda: None  # noqa: E731
        digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
        pending.append(Pending(identifier, digest, read, read_metadata, new=identifier not in indexed))
    return pending


def _reader(objects: ScopedStore, uri: str) -> Callable[[], tuple[str, bytes]]:
    def read() -> tuple[str, bytes]:
        size = objects.head(uri).size
        if size > parsing.MAX_DOCUMENT_BYTES:
            raise parsing.ParseError(f"{size:,} bytes, over the limit of {parsing.MAX_DOCUMENT_BYTES:,} bytes")
        return uri, objects.get_bytes(uri)
    return read


def _reader_or_none(objects: ScopedStore, uri: str) -> Callable[[], bytes | None]:
    return lambda: objects.get_bytes(uri)


def _custom_reader(objects: ScopedStore, identifier: str, custom: dict[str, Any]) -> Callable[[], tuple[str, bytes]]:
    def read() -> tuple[str, bytes]:
        if custom["sourceType"] == "S3_LOCATION":
            return _reader(objects, custom["s3Location"]["uri"])()
        inline = custom["inlineContent"]
        if inline["type"] == "TEXT":
            return identifier + ".txt", inline["textContent"]["data"].encode()
        byte = inline["byteContent"]
        extension = _MIME_EXTENSIONS.get(byte["mimeType"]) or mimetypes.guess_extension(byte["mimeType"]) or ""
        data = byte["data"]
        return identifier + extension, data if isinstance(data, bytes) else base64.b64decode(data)
    return read


def _stamp(info: ObjectInfo) -> str:
    return f"{info.size}/{info.last_modified.isoformat()}"


def _fingerprint(document: str, metadata: str) -> str:
    """`<document digest>:<metadata digest>`: a change of the sidecar alone is told apart (Bedrock counts it)."""
    return f"{hashlib.sha256(document.encode()).hexdigest()[:31]}:{hashlib.sha256(metadata.encode()).hexdigest()[:32]}"


# -- doing it --------------------------------------------------------------------------------------

def _index(batch: list[Pending], source: DataSourceRow, kb: KnowledgeBaseRow, store: VectorStore, tokenizer: Any,
           config: dict[str, Any] | None, embed: Callable, db: Database, statistics: dict[str, int],
           reasons: list[str], direct: bool = False) -> None:
    """Parse and chunk each document of the batch, embed every chunk in one pass, write them in one go, and
    record them; a document deleted (DeleteKnowledgeBaseDocuments) since it was queued is dropped."""
    records, outcome = _prepare(batch, source, tokenizer, config, embed)
    kept = _write(batch, records, source, store, db, direct)
    _record(kept, outcome, source, kb, store, db, statistics, reasons, direct)


def _prepare(batch: list[Pending], source: DataSourceRow, tokenizer: Any, config: dict[str, Any] | None,
             embed: Callable) -> tuple[list[ChunkRecord], dict[str, tuple[str, str | None, int]]]:
    """The batch's chunks with their vectors, and each document's outcome (status, reason, chunks)."""
    records: list[ChunkRecord] = []
    embedded: list[str] = []
    outcome: dict[str, tuple[str, str | None, int]] = {}
    for doc in batch:
        try:
            name, data = doc.read()
            text = parsing.parse(name, data)
            raw = doc.read_metadata()
            metadata = parsing.parse_metadata(raw) if raw is not None else parsing.Metadata({}, ())
            chunks = chunking.split(text, config, tokenizer, embed)
        except parsing.ParseError as exc:
            outcome[doc.identifier] = (DocumentStatus.FAILED, str(exc), 0)
            continue
        except Exception as exc:  # one unreadable document must not end the job; its reason is kept
            log.exception("ingesting %s", doc.identifier)
            outcome[doc.identifier] = (DocumentStatus.FAILED, f"{type(exc).__name__}: {exc}", 0)
            continue
        prefix = "".join(f"{key}: {_plain(metadata.attributes[key])}\n" for key in metadata.for_embedding)
        for n, chunk in enumerate(chunks):
            chunk_id = hashlib.sha256(f"{source.data_source_id}:{doc.identifier}:{n}".encode()).hexdigest()[:36]
            records.append(ChunkRecord(
                chunk_id=chunk_id, document_id=_document_id(source, doc.identifier),
                data_source_id=source.data_source_id, source_uri=doc.identifier, text=chunk.text,
                context=chunk.context, vector=(),
                metadata={**metadata.attributes, SOURCE_URI: doc.identifier, CHUNK_ID: chunk_id,
                          DATA_SOURCE_ID: source.data_source_id}))
            embedded.append(prefix + chunk.text)
        outcome[doc.identifier] = (DocumentStatus.INDEXED, None, len(chunks))
    if embedded:
        vectors = embed(embedded)
        records = [ChunkRecord(**{**r.__dict__, "vector": vectors[i].tolist()}) for i, r in enumerate(records)]
    return records, outcome


def _wanted(db: Database, ds_id: str, identifiers: list[str], direct: bool) -> set[str]:
    """Those of `identifiers` not deleted since the job took them: a directly ingested document still waits
    (STARTING or IN_PROGRESS: its row was made so by the request, and a delete turns it to DELETING or
    removes it); a synced one is anything but a tombstone (a new file has no row yet)."""
    with db.session() as session:
        status = dict(session.execute(select(DocumentRow.identifier, DocumentRow.status).where(
            DocumentRow.data_source_id == ds_id, DocumentRow.identifier.in_(identifiers))).all())
    if direct:
        return {i for i in identifiers if status.get(i) in _WAITING}
    return {i for i in identifiers if status.get(i) != DocumentStatus.DELETING}


def _write(batch: list[Pending], records: list[ChunkRecord], source: DataSourceRow, store: VectorStore,
           db: Database, direct: bool) -> list[Pending]:
    """The chunks of the batch's documents that are still wanted, written in one commit; those documents."""
    wanted = _wanted(db, source.data_source_id, [d.identifier for d in batch], direct)
    kept = [doc for doc in batch if doc.identifier in wanted]
    if kept:
        # Failed documents leave the index too: a changed file that no longer parses must not answer with its
        # old text.
        ids = {_document_id(source, d.identifier) for d in kept}
        store.replace_documents(sorted(ids), [r for r in records if r.document_id in ids])
    return kept


def _record(kept: list[Pending], outcome: dict[str, tuple[str, str | None, int]], source: DataSourceRow,
            kb: KnowledgeBaseRow, store: VectorStore, db: Database, statistics: dict[str, int],
            reasons: list[str], direct: bool) -> None:
    """Each written document's row, set only while the document is still wanted (one conditional UPDATE, so
    a delete that came after `_write` is never overwritten); one deleted meanwhile loses its chunks again."""
    now = utc_now()
    dropped = []
    with db.session() as session:
        for doc in kept:
            status, reason, count = outcome[doc.identifier]
            key = (DocumentRow.data_source_id == source.data_source_id, DocumentRow.identifier == doc.identifier)
            still = DocumentRow.status.in_(_WAITING) if direct else DocumentRow.status != DocumentStatus.DELETING
            values = {"fingerprint": doc.fingerprint if status == DocumentStatus.INDEXED else None,
                      "status": status, "status_reason": reason, "chunks": count, "updated_at": now}
            if not session.execute(update(DocumentRow).where(*key, still).values(**values)).rowcount:
                if direct or session.scalar(select(func.count()).select_from(DocumentRow).where(*key)):
                    dropped.append(doc.identifier)
                    continue
                session.add(DocumentRow(data_source_id=source.data_source_id, identifier=doc.identifier,
                                        knowledge_base_id=kb.knowledge_base_id, account_id=kb.account_id,
                                        source_type=source.configuration["type"], **values))
            if status == DocumentStatus.FAILED:
                statistics["numberOfDocumentsFailed"] += 1
                if len(reasons) < MAX_REASONS:
                    reasons.append(f"{doc.identifier}: {reason}")
            elif doc.metadata_changed:
                statistics["numberOfMetadataDocumentsModified"] += 1
            elif doc.new:
                statistics["numberOfNewDocumentsIndexed"] += 1
            else:
                statistics["numberOfModifiedDocumentsIndexed"] += 1
    if dropped:
        store.delete_documents([_document_id(source, i) for i in dropped])


def _plain(value: Any) -> str:
    return ", ".join(value) if isinstance(value, list) else str(value)


def _document_id(source: DataSourceRow, identifier: str) -> str:
    """Documents are keyed by data source too: two sources may hold the same URI (RETAIN keeps old ones)."""
    return f"{source.data_source_id}:{identifier}"


def _forget(db: Database, ds_id: str, identifiers: list[str]) -> None:
    from sqlalchemy import delete

    with db.session() as session:
        session.execute(delete(DocumentRow).where(DocumentRow.data_source_id == ds_id,
                                                  DocumentRow.identifier.in_(identifiers)))


def _rows(db: Database, job_id: str) -> tuple[IngestionJobRow, DataSourceRow, KnowledgeBaseRow]:
    with db.session() as session:
        job = session.get(IngestionJobRow, job_id)
        source = session.get(DataSourceRow, job.data_source_id)
        kb = session.scalars(select(KnowledgeBaseRow).where(
            KnowledgeBaseRow.knowledge_base_id == job.knowledge_base_id)).one()
    return job, source, kb


def _update(db: Database, job_id: str, **fields: Any) -> None:
    db.update(IngestionJobRow, job_id, **fields)


def _finish(db: Database, job_id: str, status: str, statistics: dict[str, int], reasons: list[str]) -> None:
    db.update(IngestionJobRow, job_id, status=status, statistics=dict(statistics), failure_reasons=reasons or None)
