"""The vector and full-text store: what replacing, deleting and searching do, on a folder and on S3 (moto).

Vectors are small and chosen so the nearest chunk is known; the ANN index is forced with a low threshold so
that searching through it is checked against exact answers. A second store object on the same folder stands
for another process (an ingestion job writing while the server searches).
"""

from __future__ import annotations

import socket
import zlib

import boto3
import numpy as np
import pytest

from outcrop.errors import ValidationException
from outcrop.knowledge import store as store_module
from outcrop.knowledge.filters import to_sql
from outcrop.knowledge.store import ChunkRecord, LanceStore, open_store

DIMENSION = 16


def _unit(seed: int) -> list[float]:
    v = np.random.default_rng(seed).standard_normal(DIMENSION)
    return (v / np.linalg.norm(v)).tolist()


def _record(chunk_id: str, document_id: str = "d1", data_source_id: str = "ds1", text: str | None = None,
            vector: list[float] | None = None, metadata: dict | None = None) -> ChunkRecord:
    text = text if text is not None else f"plain words of chunk {chunk_id}"
    return ChunkRecord(chunk_id=chunk_id, document_id=document_id, data_source_id=data_source_id,
                       source_uri=f"s3://bucket/{document_id}.txt", text=text, context=f"context of {chunk_id}",
                       metadata=metadata if metadata is not None else {"x-amz-bedrock-kb-source-uri": document_id},
                       vector=vector if vector is not None else _unit(zlib.crc32(chunk_id.encode())))


def _ids(store, k: int = 1000, **kwargs) -> set[str]:
    return {hit.chunk_id for hit in store.search(_unit(0), "", k, **kwargs)}


@pytest.fixture
def store(tmp_path):
    return LanceStore(str(tmp_path / "vectors"), "kb", DIMENSION)


# -- writing ------------------------------------------------------------------------------------

def test_an_empty_store_has_nothing(store):
    assert store.count() == 0
    assert store.search(_unit(1), "words", 5) == []
    assert store.search(_unit(1), "words", 5, "HYBRID") == []
    store.delete_documents(["d1"])
    store.delete_data_source("ds1")
    store.optimize()
    store.drop()


def test_replace_documents_replaces_every_old_chunk(store):
    store.replace_documents(["d1", "d2"], [_record("a1", "d1"), _record("a2", "d1"), _record("a3", "d1"),
                                           _record("b1", "d2"), _record("b2", "d2")])
    assert store.count() == 5
    version = store._table.version
    # a1 keeps its id (rewritten), a2 and a3 go, a4 comes; d2 is untouched.
    store.replace_documents(["d1"], [_record("a1", "d1", text="rewritten"), _record("a4", "d1")])
    assert _ids(store) == {"a1", "a4", "b1", "b2"}
    assert store._table.version == version + 1  # one commit
    assert {h.text for h in store.search(_unit(0), "", 10) if h.chunk_id == "a1"} == {"rewritten"}
    # A document replaced by nothing (it no longer parses, say) leaves the store.
    store.replace_documents(["d2"], [])
    assert _ids(store) == {"a1", "a4"}


def test_delete_documents_and_data_sources(store):
    store.replace_documents(["d1", "d2", "d3"], [
        _record("a", "d1"), _record("b", "d2"), _record("c", "d3", "ds2"), _record("e", "it's", "ds2")])
    store.delete_documents(["d1", "x' OR '1'='1"])
    assert _ids(store) == {"b", "c", "e"}
    store.delete_documents(["it's"])
    assert _ids(store) == {"b", "c"}
    store.delete_data_source("ds2' OR 'a'='a")
    assert _ids(store) == {"b", "c"}
    store.delete_data_source("ds2")
    assert _ids(store) == {"b"}


def test_records_are_checked(store):
    with pytest.raises(ValueError, match="dimensions"):
        store.replace_documents(["d1"], [_record("a", vector=[1.0, 0.0])])
    with pytest.raises(ValueError, match="twice"):
        store.replace_documents(["d1"], [_record("a"), _record("a")])
    with pytest.raises(ValueError, match="a list must hold only strings"):
        store.replace_documents(["d1"], [_record("a", metadata={"tags": [1, 2]})])
    assert store.count() == 0


def test_hits_carry_everything_back(store):
    metadata = {"genre": "news", "year": 2021, "rating": 4.5, "draft": False, "tags": ["a", "b|c"],
                "x-amz-bedrock-kb-source-uri": "s3://bucket/d1.txt"}
    store.replace_documents(["d1"], [_record("a", metadata=metadata, vector=_unit(0))])
    (hit,) = store.search(_unit(0), "", 1)
    assert (hit.chunk_id, hit.document_id, hit.data_source_id, hit.source_uri, hit.text, hit.context) == (
        "a", "d1", "ds1", "s3://bucket/d1.txt", "plain words of chunk a", "context of a")
    assert hit.metadata == metadata


# -- searching ----------------------------------------------------------------------------------

def test_semantic_search_ranks_by_cosine_similarity(store):
    query = np.array(_unit(0))
    others = np.array([_unit(seed) for seed in range(1, 40)])
    store.replace_documents(["d1"], [
        _record("same", vector=query.tolist()), _record("opposite", vector=(-query).tolist()),
        *(_record(f"o{i}", vector=v.tolist()) for i, v in enumerate(others))])
    hits = store.search(query.tolist(), "", 10)
    assert [h.chunk_id for h in hits[:1]] == ["same"]
    expected = ["same"] + [f"o{i}" for i in np.argsort(-(others @ query))[:9]]
    assert [h.chunk_id for h in hits] == expected
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert scores[0] == pytest.approx(1.0, abs=1e-6)
    assert hits[1].score == pytest.approx((1 + float(others[np.argmax(others @ query)] @ query)) / 2, abs=1e-5)
    assert store.search(query.tolist(), "", 100)[-1].chunk_id == "opposite"
    assert store.search(query.tolist(), "", 100)[-1].score == pytest.approx(0.0, abs=1e-6)


def test_hybrid_finds_a_rare_word_the_vector_would_not(store):
    query = _unit(0)
    near = [_record(f"n{i}", text=f"common text {i}", vector=(np.array(query) + 0.05 * np.array(_unit(i + 1)))
                    .tolist()) for i in range(30)]
    far = _record("far", text="the zygomorphic flower", vector=(-np.array(query)).tolist())
    store.replace_documents(["d1"], [*near, far])
    assert "far" not in {h.chunk_id for h in store.search(query, "zygomorphic", 5, "SEMANTIC")}
    hits = store.search(query, "zygomorphic", 5, "HYBRID")
    assert "far" in {h.chunk_id for h in hits}
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)
    # Blank text: HYBRID is SEMANTIC.
    assert store.search(query, "  ", 5, "HYBRID") == store.search(query, "", 5, "SEMANTIC")
    # Query words are words, never a query language; words the index drops (stop words, punctuation) leave the
    # vector ranking alone.
    assert "far" in {h.chunk_id for h in store.search(query, 'zygomorphic" OR (text:* AND', 5, "HYBRID")}
    assert [h.chunk_id for h in store.search(query, "the ???", 5, "HYBRID")] == \
        [h.chunk_id for h in store.search(query, "", 5, "SEMANTIC")]


def test_hybrid_sees_rows_added_after_the_index(store):
    store.replace_documents(["d1"], [_record(f"a{i}", text=f"ordinary text {i}") for i in range(20)])
    store.optimize()  # the full-text index is built here
    store.replace_documents(["d2"], [_record("late", "d2", text="a quokka arrived", vector=_unit(7))])
    assert "late" in {h.chunk_id for h in store.search(_unit(0), "quokka", 3, "HYBRID")}
    store.optimize()  # and brought up to date here
    assert "late" in {h.chunk_id for h in store.search(_unit(0), "quokka", 3, "HYBRID")}


def test_filters_apply_before_ranking(store):
    store.replace_documents(["d1"], [
        _record(f"c{i}", metadata={"year": 2000 + i, "tags": ["even" if i % 2 == 0 else "odd"]}, vector=_unit(i))
        for i in range(40)])
    where = to_sql({"andAll": [{"greaterThanOrEquals": {"key": "year", "value": 2030}},
                               {"listContains": {"key": "tags", "value": "odd"}}]})
    expected = {f"c{i}" for i in range(31, 40, 2)}
    assert {h.chunk_id for h in store.search(_unit(0), "", 5, where=where)} == expected
    assert {h.chunk_id for h in store.search(_unit(0), "words", 5, "HYBRID", where=where)} == expected
    assert store.search(_unit(0), "", 5, where=to_sql({"equals": {"key": "year", "value": "2001"}})) == []


def test_search_arguments_are_checked(store):
    store.replace_documents(["d1"], [_record("a")])
    with pytest.raises(ValidationException, match="SEMANTIC"):
        store.search(_unit(0), "", 5, "KEYWORD")
    with pytest.raises(ValueError, match="dimensions"):
        store.search([1.0, 0.0], "", 5)
    assert store.search(_unit(0), "", 0) == []


# -- the ANN index --------------------------------------------------------------------------------

def test_optimize_builds_the_ann_index_past_the_threshold(tmp_path):
    store = LanceStore(str(tmp_path), "kb", DIMENSION, ann_threshold=600)
    vectors = np.random.default_rng(3).standard_normal((900, DIMENSION)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    records = [_record(f"c{i}", f"d{i // 50}", vector=v.tolist(), metadata={"n": i}) for i, v in enumerate(vectors)]
    store.replace_documents([], records[:500])
    store.optimize()
    assert _vector_indexes(store) == []  # 500 < 600
    store.replace_documents([], records[500:800])
    store.optimize()
    assert len(_vector_indexes(store)) == 1
    # Rows after the index are searched too, and updated into it by the next optimize.
    store.replace_documents([], records[800:])
    for stage in ("before", "after"):
        for q in (0, 450, 850):
            exact = np.argsort(-(vectors @ vectors[q]))[:5]
            hits = store.search(vectors[q].tolist(), "", 5)
            assert hits[0].chunk_id == f"c{q}", stage
            assert len({h.chunk_id for h in hits} & {f"c{i}" for i in exact}) >= 4, stage
        # A narrow filter still finds every row it keeps, however far from the query.
        where = to_sql({"in": {"key": "n", "value": [3, 501, 899]}})
        assert {h.chunk_id for h in store.search(vectors[0].tolist(), "", 10, where=where)} == {"c3", "c501", "c899"}
        store.optimize()
    assert len(_vector_indexes(store)) == 1


def test_the_ann_index_is_rebuilt_when_its_segments_pile_up(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "ANN_MAX_SEGMENTS", 2)
    store = LanceStore(str(tmp_path), "kb", DIMENSION, ann_threshold=300)
    vectors = np.random.default_rng(4).standard_normal((500, DIMENSION)).astype(np.float32)
    records = [_record(f"c{i}", f"d{i // 50}", vector=v.tolist()) for i, v in enumerate(vectors)]
    segments = []
    for batch in (records[:300], records[300:400], records[400:]):
        store.replace_documents([], batch)
        store.optimize()
        segments.append(_vector_indexes(store)[0].num_segments)
    assert segments == [1, 2, 1]  # built; the new rows as a second segment; a third is one too many: rebuilt
    assert _vector_indexes(store)[0].num_indexed_rows == 500
    assert store.search(vectors[450].tolist(), "", 1)[0].chunk_id == "c450"


def _vector_indexes(store) -> list:
    return [index for index in store._table.list_indices() if index.columns == ["vector"]]


# -- other processes ------------------------------------------------------------------------------

def test_another_store_on_the_same_folder_sees_writes_at_once(tmp_path):
    reader = LanceStore(str(tmp_path), "kb", DIMENSION)
    writer = LanceStore(str(tmp_path), "kb", DIMENSION)
    assert reader.search(_unit(0), "", 5) == []  # no table yet
    writer.replace_documents(["d1"], [_record("a")])
    assert _ids(reader) == {"a"}
    writer.replace_documents(["d1"], [_record("b")])
    assert _ids(reader) == {"b"}
    writer.optimize()
    writer.delete_documents(["d1"])
    assert reader.count() == 0
    writer.replace_documents(["d2"], [_record("c", "d2")])
    writer.drop()
    assert reader.search(_unit(0), "", 5) == [] and reader.count() == 0
    reader.replace_documents(["d3"], [_record("e", "d3")])  # and the table comes back on the next write
    assert _ids(writer) == {"e"}


def test_open_store_shares_one_store_per_place(tmp_path):
    assert open_store(str(tmp_path), "kb", DIMENSION) is open_store(str(tmp_path), "kb", DIMENSION)
    assert open_store(str(tmp_path), "kb", DIMENSION) is not open_store(str(tmp_path), "other", DIMENSION)


def test_drop_removes_everything(store):
    store.replace_documents(["d1"], [_record("a"), _record("b")])
    store.optimize()
    store.drop()
    assert store.count() == 0 and store.search(_unit(0), "b", 5, "HYBRID") == []
    store.drop()  # twice is fine


# -- S3 ---------------------------------------------------------------------------------------------

@pytest.fixture
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def test_a_store_on_s3(s3_endpoint):
    credentials = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", **credentials)
    s3.create_bucket(Bucket="vectors")
    # The options the server's settings give (platform/config.py: vectors_storage_options).
    options = {"region": "us-east-1", "endpoint": s3_endpoint, "allow_http": "true", **credentials}
    store = open_store("s3://vectors/kbs/KB1", "kb", DIMENSION, storage_options=options)
    assert store.search(_unit(0), "", 5) == []
    near = [_record(f"n{i}", vector=(np.array(_unit(0)) + 0.1 * np.array(_unit(i + 1))).tolist()) for i in range(5)]
    far = _record("far", text="a kookaburra laughs", vector=(-np.array(_unit(0))).tolist())
    store.replace_documents(["d1"], [_record("a", vector=_unit(0)), *near, far])
    assert store.search(_unit(0), "kookaburra", 1)[0].chunk_id == "a"
    assert "far" in {h.chunk_id for h in store.search(_unit(0), "kookaburra", 2, "HYBRID")}
    other = LanceStore("s3://vectors/kbs/KB1", "kb", DIMENSION, storage_options=options)
    store.replace_documents(["d1"], [_record("c", vector=_unit(0))])
    assert _ids(other) == {"c"}  # the whole document replaced, seen at once by another reader
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="vectors")["Contents"]]
    assert keys and all(key.startswith("kbs/KB1/kb.lance/") for key in keys)
    store.drop()
    assert "Contents" not in s3.list_objects_v2(Bucket="vectors", Prefix="kbs/KB1/")
