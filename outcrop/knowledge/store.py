"""A knowledge base's chunks, their vectors and their words: one small interface, LanceDB behind it.

Ingestion jobs write (in their own processes) and the server searches; both open the same table, on the data
dir or on S3, and Lance's versioned commits keep them apart: a search sees either all of a replacement or none
of it. `VectorStore` is all the rest of the package uses, so another backend (pgvector, OpenSearch) can stand in.

Layout: one table per knowledge base, created on first write with a fixed schema. `metadata` holds the
document's attributes as knowledge/filters.py lays them out (each key tagged with its type) so that Bedrock's
filters become SQL that cannot fail on a value of an unexpected type; `Hit.metadata` gives them back as given.

Search: the cosine distance over L2-normalized embeddings, exact until the table is big enough for an ANN index
(`optimize`), BM25 over `text` for HYBRID, and filters always applied before the nearest neighbours are chosen.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, TypeVar

import lancedb
import pyarrow as pa
from lancedb.index import FTS, HnswSq
from lancedb.query import MatchQuery

from outcrop.errors import ValidationException
from outcrop.knowledge import filters

SEARCH_TYPES = ("SEMANTIC", "HYBRID")

#: Reciprocal rank fusion's constant (Cormack et al. 2009; LanceDB's RRFReranker uses the same).
RRF_K = 60

#: Old versions stay readable this long after an optimize, for a search that began on one.
KEEP_VERSIONS = timedelta(hours=1)

_TEXT_COLUMNS = ("chunk_id", "document_id", "data_source_id", "source_uri", "text", "context")
# The scores are named too: Lance warns on every query that leaves them out.
_RESULT_COLUMNS = [*_TEXT_COLUMNS, "metadata"]

T = TypeVar("T")


@dataclass(frozen=True)
class ChunkRecord:
    chunk_id: str
    document_id: str
    data_source_id: str
    source_uri: str  # s3://bucket/key, or a custom document's identifier
    text: str  # embedded and full-text indexed
    context: str  # returned by retrieval (a hierarchical chunk's parent; else == text)
    metadata: dict[str, Any]  # the document's attributes (str, float, bool, list[str]) and Bedrock's reserved keys
    vector: Sequence[float]


@dataclass(frozen=True)
class Hit:
    chunk_id: str
    document_id: str
    data_source_id: str
    source_uri: str
    text: str
    context: str
    metadata: dict[str, Any]
    score: float  # higher is better, in [0, 1]


class VectorStore(Protocol):
    """The store of one knowledge base."""

    def replace_documents(self, document_ids: Sequence[str], records: Sequence[ChunkRecord]) -> None:
        """Every old chunk of those documents goes and `records` come, in one commit."""

    def delete_documents(self, document_ids: Sequence[str]) -> None: ...

    def delete_data_source(self, data_source_id: str) -> None: ...

    def search(self, vector: Sequence[float], text: str, k: int, search_type: str = "SEMANTIC",
               where: str | None = None) -> list[Hit]:
        """The best `k` chunks, best first. `where` is filters.to_sql's output, applied before ranking.

        SEMANTIC: score = (1 + cosine similarity) / 2. HYBRID: reciprocal rank fusion of the vector and the BM25
        rankings, divided by its maximum (first in both) so that it too lies in [0, 1]; blank text is SEMANTIC.
        """

    def count(self) -> int: ...

    def optimize(self) -> None:
        """After an ingestion: compact, bring the indexes up to date, build the ANN index once big enough."""

    def drop(self) -> None:
        """The whole knowledge base's data goes."""


def open_store(uri: str, table: str, dimension: int, storage_options: dict[str, str] | None = None,
               ann_threshold: int = 20_000) -> VectorStore:
    """The store of table `table` under `uri` (a folder, or s3://bucket/prefix with `storage_options`).

    Stores are kept per process and shared: opening one reads the table's manifest (a round trip or more on
    S3), and retrieval opens the store on every request. Sharing costs nothing in freshness: every read checks
    for a newer version of the table anyway.
    """
    options = dict(storage_options or {})
    key = (uri, table, dimension, tuple(sorted(options.items())), ann_threshold)
    with _OPEN_LOCK:
        store = _OPEN.get(key)
        if store is None:
            store = _OPEN[key] = LanceStore(uri, table, dimension, options, ann_threshold)
            while len(_OPEN) > _OPEN_LIMIT:
                _OPEN.popitem(last=False)
        else:
            _OPEN.move_to_end(key)
        return store


_OPEN: OrderedDict[tuple, LanceStore] = OrderedDict()
_OPEN_LOCK = threading.Lock()
_OPEN_LIMIT = 256

#: HYBRID's BM25 query runs here while the vector query runs in the caller's thread.
_PARALLEL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="knowledge-store")


def schema(dimension: int) -> pa.Schema:
    return pa.schema([
        *(pa.field(name, pa.utf8(), nullable=False) for name in _TEXT_COLUMNS),
        # As knowledge/filters.py lays it out; Lance stores it as JSONB and filters it with json_get_*.
        pa.field("metadata", pa.json_(pa.utf8()), nullable=False),
        pa.field("vector", pa.list_(pa.float32(), dimension), nullable=False),
    ])


class LanceStore:
    """VectorStore on LanceDB."""

    def __init__(self, uri: str, table: str, dimension: int, storage_options: dict[str, str] | None = None,
                 ann_threshold: int = 20_000) -> None:
        if dimension < 1:
            raise ValueError(f"dimension must be positive, not {dimension}")
        self.uri, self.name, self.dimension, self.ann_threshold = uri, table, dimension, ann_threshold
        self.schema = schema(dimension)
        # timedelta(0): every read checks for a newer version, so the server sees at once what an ingestion
        # job (another process) committed.
        self._db = lancedb.connect(uri, read_consistency_interval=timedelta(0), storage_options=storage_options or None)
        self._lock = threading.Lock()
        self._table: Any = None
        self._has_fts = False

    # -- writing --------------------------------------------------------------------------------

    def replace_documents(self, document_ids: Sequence[str], records: Sequence[ChunkRecord]) -> None:
        documents = sorted({*document_ids, *(r.document_id for r in records)})
        if not records:
            self.delete_documents(documents)
            return
        data = self._arrow(records)
        # One commit: chunks that keep their id are rewritten, new ones inserted, and the documents' other old
        # chunks deleted; a search sees the documents before or after, never half-replaced or missing.
        self._with_table(lambda table: (
            table.merge_insert("chunk_id")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .when_not_matched_by_source_delete(f"document_id IN ({_sql_list(documents)})")
            .execute(data)), create=True)

    def delete_documents(self, document_ids: Sequence[str]) -> None:
        if document_ids:
            where = f"document_id IN ({_sql_list(sorted(set(document_ids)))})"
            self._with_table(lambda table: table.delete(where))

    def delete_data_source(self, data_source_id: str) -> None:
        where = f"data_source_id = {_sql_list([data_source_id])}"
        self._with_table(lambda table: table.delete(where))

    def optimize(self) -> None:
        self._with_table(self._optimize)

    def _optimize(self, table: Any) -> None:
        # Compaction, cleanup of old versions, and the rows written since added to the existing indexes (each
        # time as one more segment of the vector index, searched one after another).
        table.optimize(cleanup_older_than=KEEP_VERSIONS)
        indexes = _indexes(table)
        if "text" not in indexes:
            self._create_fts(table)
        rows = table.count_rows()
        vector = indexes.get("vector")
        if (vector is None and rows >= self.ann_threshold
                or vector is not None and (vector.num_segments or 1) > ANN_MAX_SEGMENTS):
            table.create_index("vector", config=_ann_config(rows), replace=True)

    def drop(self) -> None:
        with self._lock:
            try:
                self._db.drop_table(self.name)
            except ValueError as exc:  # never written, or dropped already
                if not _vanished(exc):
                    raise
            self._table, self._has_fts = None, False

    # -- reading --------------------------------------------------------------------------------

    def count(self) -> int:
        return self._with_table(lambda table: table.count_rows(), missing=0)

    def search(self, vector: Sequence[float], text: str, k: int, search_type: str = "SEMANTIC",
               where: str | None = None) -> list[Hit]:
        if search_type not in SEARCH_TYPES:
            raise ValidationException(f"search type {search_type!r} is not one of: {', '.join(SEARCH_TYPES)}")
        if len(vector) != self.dimension:
            raise ValueError(f"the query vector has {len(vector)} dimensions; this store's have {self.dimension}")
        if k < 1:
            return []
        return self._with_table(lambda table: self._search(table, vector, text, k, search_type, where), missing=[])

    def _search(self, table: Any, vector: Sequence[float], text: str, k: int, search_type: str,
                where: str | None) -> list[Hit]:
        if search_type == "SEMANTIC" or not text.strip():
            return [_hit(row, _cosine_score(row["_distance"])) for row in self._nearest(table, vector, k, where)]
        # Each ranking is asked for more than k, so that a chunk a little down one list and high in the other
        # is not missed. The two run at once: each evaluates the filter over the whole table.
        depth = 2 * k
        words = _PARALLEL.submit(self._words, table, text, depth, where)
        try:
            nearest = self._nearest(table, vector, depth, where)
        except BaseException:
            wait([words])  # no query left running behind the caller's back
            raise
        fused: dict[str, float] = {}
        found: dict[str, dict] = {}
        for ranking in (nearest, words.result()):
            for rank, row in enumerate(ranking, start=1):
                fused[row["chunk_id"]] = fused.get(row["chunk_id"], 0.0) + 1.0 / (RRF_K + rank)
                found.setdefault(row["chunk_id"], row)
        best = 2.0 / (RRF_K + 1)  # first in both rankings
        order = sorted(fused, key=lambda chunk: (-fused[chunk], chunk))[:k]
        return [_hit(found[chunk], min(1.0, fused[chunk] / best)) for chunk in order]

    def _nearest(self, table: Any, vector: Sequence[float], k: int, where: str | None) -> list[dict]:
        query = (table.search(list(vector), vector_column_name="vector").distance_type("cosine")
                 .select([*_RESULT_COLUMNS, "_distance"]).limit(k)
                 # Used by the ANN index once there is one (see the note on ANN_EF), ignored before.
                 .ef(max(ANN_EF, 2 * k)).refine_factor(ANN_REFINE).minimum_nprobes(ANN_NPROBES).maximum_nprobes(0))
        if where:
            query = query.where(where, prefilter=True)
        return query.to_arrow().to_pylist()

    def _words(self, table: Any, text: str, k: int, where: str | None) -> list[dict]:
        if not self._has_fts:
            self._ensure_fts(table)
        # A MatchQuery: the words as they are (OR'ed), never parsed as a query language.
        query = table.search(MatchQuery(text, "text"), query_type="fts").select([*_RESULT_COLUMNS, "_score"]).limit(k)
        if where:
            query = query.where(where, prefilter=True)
        return query.to_arrow().to_pylist()

    # -- the table ------------------------------------------------------------------------------

    def _with_table(self, action: Callable[[Any], T], *, create: bool = False, missing: Any = None) -> T:
        """`action(table)`; `missing` while there is no table (with `create`, a new table first).

        The table a store holds may have been dropped by another process since (a deleted knowledge base):
        then it is looked for again, once.
        """
        for attempt in range(2):
            table = self._open(create)
            if table is None:
                return missing
            try:
                return action(table)
            except Exception as exc:
                if attempt or not _vanished(exc):
                    raise
                with self._lock:
                    if self._table is table:
                        self._table, self._has_fts = None, False
        raise AssertionError("unreachable")

    def _open(self, create: bool = False) -> Any:
        """The table, or None while nobody has written one (looked for again on every call until then)."""
        if self._table is not None:
            return self._table
        with self._lock:
            if self._table is None:
                try:
                    self._table = self._db.open_table(self.name)
                except ValueError as exc:
                    if not _vanished(exc):
                        raise
                    if create:
                        # exist_ok: another process may create it at the same moment.
                        self._table = self._db.create_table(self.name, schema=self.schema, exist_ok=True)
            return self._table

    def _ensure_fts(self, table: Any) -> None:
        with self._lock:
            if not self._has_fts:
                if "text" not in _indexes(table):
                    # Normally built by optimize after an ingestion; a search must not fail for want of it.
                    self._create_fts(table)
                self._has_fts = True

    def _create_fts(self, table: Any) -> None:
        table.create_index("text", config=FTS(), replace=True)

    def _arrow(self, records: Sequence[ChunkRecord]) -> pa.Table:
        seen: set[str] = set()
        columns: dict[str, list] = {name: [] for name in (*_TEXT_COLUMNS, "metadata", "vector")}
        for record in records:
            if record.chunk_id in seen:
                raise ValueError(f"chunk {record.chunk_id!r} is given twice")
            seen.add(record.chunk_id)
            if len(record.vector) != self.dimension:
                raise ValueError(f"chunk {record.chunk_id!r} has a vector of {len(record.vector)} dimensions; "
                                 f"this store's have {self.dimension}")
            for name in _TEXT_COLUMNS:
                columns[name].append(getattr(record, name))
            columns["metadata"].append(filters.encode_metadata(record.metadata))
            columns["vector"].append(record.vector)
        return pa.table(columns, schema=self.schema)


# -- the ANN index ------------------------------------------------------------------------------
#
# IVF_HNSW_SQ, chosen by measuring LanceStore.search end to end on this 2-core machine (other work running on it
# at the same time, load average 2-5): 100,000 chunks of 384 dimensions, all-MiniLM-L6-v2 embeddings of 100,000
# real paragraphs; 60-100 held-out paragraphs as queries; k=5; recall@5 against exact search.
#
#   index (build time)                        p50 / p95      recall@5   with a filter keeping 20%, p50 / p95
#   none: exact search                        58 / 88 ms     1.000      74 / 131 ms
#   IVF_HNSW_SQ, 1 partition (80-140 s)       5 / 7 ms       1.000      25 / 34 ms     ef 128, refine 2
#   IVF_SQ, 256 partitions (27 s)             9 / 14 ms      1.000      30 / 35 ms     nprobes 40, refine 2
#   IVF_RQ, 256 partitions (32 s)             10 / 12 ms     0.980      26 / 34 ms     nprobes 40, refine 5
#   IVF_PQ, 256 x 48 sub-vectors (121 s)      13 / 19 ms     1.000      33 / 38 ms     nprobes 40, refine 10
#
# With IVF_HNSW_SQ: k=100 takes 14 / 20 ms (recall@100 0.99); a filter of two conditions 32 / 40 ms; a narrow
# filter (the 10 chunks of one document) 21 / 31 ms and finds all 10. A filter costs what evaluating it over every
# row costs (~12 ms per json_get_* condition at 100,000 rows), whatever the index. HYBRID: 10 / 16 ms; with the
# 20% filter 46 / 62 ms (both rankings evaluate it, side by side on the 2 cores). After 5 incremental optimizes
# (6 index segments) plain search took 11 / 13 ms, hence the rebuild past ANN_MAX_SEGMENTS.
# HNSW holds one graph per IVF partition; one partition is best until a graph is too big to build in memory.

#: Candidates the HNSW search keeps (at least 2k): ef 32 found 0.96-0.97 of the exact top 5, ef 128 0.99, all of
#: them with refine 2.
ANN_EF = 128
#: The best refine x k candidates are re-scored on the full vectors: exact order and exact scores.
ANN_REFINE = 2
#: IVF partitions searched at least (all of them, for the partition counts _ann_config chooses); with
#: maximum_nprobes(0), more if a narrow filter leaves fewer than k rows in those.
ANN_NPROBES = 20
#: Each optimize adds the new rows to the index as a segment of its own; past this many, it is rebuilt whole.
ANN_MAX_SEGMENTS = 8


def _ann_config(rows: int) -> Any:
    """The vector index for a table of `rows` rows."""
    return HnswSq(distance_type="cosine", num_partitions=max(1, rows // 1_000_000))


# -- helpers ------------------------------------------------------------------------------------

def _indexes(table: Any) -> dict[str, Any]:
    """The table's indexes by the column they index."""
    return {column: index for index in table.list_indices() for column in index.columns}


def _vanished(exc: Exception) -> bool:
    """A table that is not there: never created ("Table 'kb' was not found"), or dropped under a handle
    ("lance error: Not found: .../kb.lance/_versions")."""
    return isinstance(exc, ValueError | RuntimeError | OSError) and "not found" in str(exc).lower()


def _sql_list(values: Sequence[str]) -> str:
    return ", ".join("'" + value.replace("'", "''") + "'" for value in values)


def _cosine_score(distance: float | None) -> float:
    # Lance's cosine distance is 1 - cos, so (1 + cos) / 2 = 1 - distance / 2: [-1, 1] onto [0, 1]. Quantized
    # distances can stray a little outside [0, 2].
    if distance is None or math.isnan(distance):
        return 0.0
    return min(1.0, max(0.0, 1.0 - distance / 2.0))


def _hit(row: dict, score: float) -> Hit:
    return Hit(**{name: row[name] for name in _TEXT_COLUMNS}, metadata=filters.decode_metadata(row["metadata"]),
               score=score)
