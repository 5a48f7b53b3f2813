"""Model invocation logging: the configuration's validation and storage, the record schema, the writer."""

from __future__ import annotations

import gzip
import json
import logging
import re
import time
from datetime import UTC, datetime

import pytest

from outcrop.errors import ValidationException
from outcrop.iam import buckets
from outcrop.iam.tables import AccountRow, BucketRow
from outcrop.platform.database import Base, Database
from outcrop.platform.objectstore import LocalObjectStore
from outcrop.runtime.invocation_logging import (
    InvocationLogWriter,
    delete_config,
    get_config,
    make_log_record,
    put_config,
)

ACCOUNT = "111111111111"
OTHER = "222222222222"
REGION = "us-east-1"
KEY_RE = re.compile(
    r"logs/bedrock/AWSLogs/(\d{12})/BedrockModelInvocationLogs/us-east-1/\d{4}/\d{2}/\d{2}/\d{2}/"
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.json\.gz")


@pytest.fixture
def db(tmp_path) -> Database:
    database = Database(f"sqlite:///{tmp_path}/t.db")
    Base.metadata.create_all(database.engine)
    with database.session() as session:
        for account in (ACCOUNT, OTHER):
            session.add(AccountRow(account_id=account, name=account, created_at=datetime.now(UTC)))
    yield database
    database.dispose()


@pytest.fixture
def store(tmp_path, db) -> LocalObjectStore:
    objects = LocalObjectStore(tmp_path / "objects")
    buckets.create(db, objects, ACCOUNT, "logs-bucket")
    return objects


@pytest.fixture
def writer(db, store):
    w = InvocationLogWriter(db, store, REGION, flush_interval_s=60.0)
    yield w
    w.close()


def _config(text: bool = True, prefix: str | None = "/logs/bedrock/") -> dict:
    s3 = {"bucketName": "logs-bucket"}
    if prefix is not None:
        s3["keyPrefix"] = prefix
    return {"s3Config": s3, "textDataDeliveryEnabled": text, "imageDataDeliveryEnabled": False,
            "embeddingDataDeliveryEnabled": True}


def _record(i: int, account: str = ACCOUNT, **overrides) -> dict:
    fields = dict(
        request_id=f"req-{i}", account_id=account, principal_arn=f"arn:aws:iam::{account}:user/alice",
        region=REGION, operation="InvokeModel", model_id="amazon.titan-text-lite-v1",
        input_body=json.dumps({"inputText": f"hello {i}"}).encode(), input_content_type="application/json",
        output_body=json.dumps({"results": [{"outputText": f"hi {i}"}]}).encode(),
        output_content_type="application/json", input_tokens=3, output_tokens=2, latency_ms=40)
    fields.update(overrides)
    return make_log_record(**fields)


def _log_objects(store: LocalObjectStore, bucket: str = "logs-bucket") -> list:
    return list(store.list(f"s3://{bucket}/"))


def _lines(store: LocalObjectStore, info) -> list[dict]:
    raw = gzip.decompress(store.get_bytes(info.uri)).decode("utf-8")
    return [json.loads(line) for line in raw.splitlines()]


# -- configuration ----------------------------------------------------------------------------------


def test_round_trip(db, store):
    assert get_config(db, ACCOUNT) is None
    put_config(db, store, ACCOUNT, _config())
    assert get_config(db, ACCOUNT) == _config()
    put_config(db, store, ACCOUNT, _config(text=False, prefix=None))
    assert get_config(db, ACCOUNT) == _config(text=False, prefix=None)
    assert get_config(db, OTHER) is None
    delete_config(db, ACCOUNT)
    assert get_config(db, ACCOUNT) is None
    delete_config(db, ACCOUNT)  # idempotent, as Bedrock's Delete is


def test_stored_config_is_a_copy(db, store):
    config = _config()
    put_config(db, store, ACCOUNT, config)
    config["s3Config"]["bucketName"] = "changed"
    got = get_config(db, ACCOUNT)
    got["s3Config"]["keyPrefix"] = "changed"
    assert get_config(db, ACCOUNT) == _config()


@pytest.mark.parametrize("config, words", [
    ({}, ["at least one destination", "s3Config"]),
    ({"textDataDeliveryEnabled": True}, ["at least one destination"]),
    ({"cloudWatchConfig": {"logGroupName": "g", "roleArn": "arn:aws:iam::111111111111:role/r"}},
     ["cloudWatchConfig", "CloudWatch", "not available on this server"]),
    ({"cloudWatchConfig": {"logGroupName": "g", "roleArn": "arn:aws:iam::111111111111:role/r"},
      "s3Config": {"bucketName": "logs-bucket"}}, ["CloudWatch"]),
    ({"s3Config": {}}, ["s3Config.bucketName", "required"]),
    ({"s3Config": {"keyPrefix": "x"}}, ["s3Config.bucketName", "required"]),
    ({"s3Config": {"bucketName": "Bad_Bucket"}}, ["s3Config.bucketName", "Bad_Bucket"]),
    ({"s3Config": {"bucketName": "no-such-bucket"}}, ["no-such-bucket", "does not exist"]),
    ({"s3Config": {"bucketName": "logs-bucket", "keyPrefix": "a/../b"}}, ["keyPrefix"]),
    ({"s3Config": {"bucketName": "logs-bucket", "keyPrefix": "x" * 900}}, ["keyPrefix", "too long"]),
    ({"s3Config": {"bucketName": "logs-bucket"}, "textDataDeliveryEnabled": "yes"}, ["textDataDeliveryEnabled"]),
    ("s3://logs-bucket", ["loggingConfig"]),
])
def test_validation(db, store, config, words):
    with pytest.raises(ValidationException) as info:
        put_config(db, store, ACCOUNT, config)
    for word in words:
        assert word in info.value.message
    assert get_config(db, ACCOUNT) is None


def test_key_prefix_is_optional_and_flags_are_kept(db, store):
    config = {"s3Config": {"bucketName": "logs-bucket"}, "videoDataDeliveryEnabled": True}
    put_config(db, store, ACCOUNT, config)
    assert get_config(db, ACCOUNT) == config


# -- records ----------------------------------------------------------------------------------------


def test_record_schema():
    record = _record(1, error_code=None)
    assert record["schemaType"] == "ModelInvocationLog" and record["schemaVersion"] == "1.0"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", record["timestamp"])
    assert record["accountId"] == ACCOUNT
    assert record["identity"] == {"arn": f"arn:aws:iam::{ACCOUNT}:user/alice"}
    assert (record["region"], record["requestId"], record["operation"], record["modelId"]) == (
        REGION, "req-1", "InvokeModel", "amazon.titan-text-lite-v1")
    assert record["input"] == {"inputContentType": "application/json", "inputBodyJson": {"inputText": "hello 1"},
                               "inputTokenCount": 3}
    assert record["output"]["outputBodyJson"] == {"results": [{"outputText": "hi 1"}]}
    assert record["output"]["outputTokenCount"] == 2 and record["output"]["latencyMs"] == 40
    assert "errorCode" not in record
    json.dumps(record)


def test_record_bodies_that_are_not_json_and_errors():
    record = _record(2, input_body=b"plain \xff text", input_content_type="text/plain", output_body=None,
                     output_tokens=0, error_code="ModelTimeoutException")
    assert record["input"]["inputBodyJson"] == "plain \ufffd text"
    assert record["input"]["inputContentType"] == "text/plain"
    assert "outputBodyJson" not in record["output"]
    assert record["errorCode"] == "ModelTimeoutException"
    chunks = [{"outputText": "a"}, {"outputText": "b"}]
    assert _record(3, output_body=chunks)["output"]["outputBodyJson"] == chunks
    assert _record(4, input_body='{"a": 1}')["input"]["inputBodyJson"] == {"a": 1}


# -- the writer -------------------------------------------------------------------------------------


def test_batches_into_one_object_at_the_bedrock_key(db, store, writer):
    put_config(db, store, ACCOUNT, _config())
    records = [_record(i) for i in range(25)]
    for record in records:
        writer.submit(record)
    assert writer.flush()
    [info] = _log_objects(store)
    assert KEY_RE.fullmatch(info.key) and KEY_RE.fullmatch(info.key)[1] == ACCOUNT
    assert _lines(store, info) == records
    assert writer.written == 25
    assert writer.flush() and len(_log_objects(store)) == 1  # nothing new, nothing written


def test_another_accounts_bucket_is_refused_like_a_missing_one(db, store, writer):
    with pytest.raises(ValidationException) as foreign:
        put_config(db, store, OTHER, {**_config(), "s3Config": {"bucketName": "logs-bucket"}})
    with pytest.raises(ValidationException) as missing:
        put_config(db, store, OTHER, {**_config(), "s3Config": {"bucketName": "no-such-bucket"}})
    assert "does not exist in this account" in foreign.value.message
    assert foreign.value.message.replace("logs-bucket", "X") == missing.value.message.replace("no-such-bucket", "X")
    # A configuration stored while the bucket was its own stops delivering once the bucket changes hands.
    buckets.create(db, store, OTHER, "other-logs")
    put_config(db, store, OTHER, {**_config(), "s3Config": {"bucketName": "other-logs"}})
    store.delete_bucket("other-logs")
    with db.session() as session:
        session.get(BucketRow, "other-logs").account_id = ACCOUNT
    store.create_bucket("other-logs")
    writer.submit(_record(1, account=OTHER))
    writer.flush()
    assert _log_objects(store, "other-logs") == []


def test_one_object_per_account(db, store, writer):
    put_config(db, store, ACCOUNT, _config())
    # The bucket is ACCOUNT's: OTHER writes there only because its bucket policy names OTHER.
    buckets.put_policy(db, ACCOUNT, "logs-bucket", {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{OTHER}:root"}, "Action": "s3:PutObject",
        "Resource": "arn:aws:s3:::logs-bucket/AWSLogs/*"}]})
    put_config(db, store, OTHER, _config(prefix=""))
    for i in range(3):
        writer.submit(_record(i))
        writer.submit(_record(i, account=OTHER))
    writer.flush()
    keys = sorted(info.key for info in _log_objects(store))
    assert len(keys) == 2
    assert keys[0].startswith(f"AWSLogs/{OTHER}/BedrockModelInvocationLogs/us-east-1/")
    assert keys[1].startswith(f"logs/bedrock/AWSLogs/{ACCOUNT}/")


def test_text_delivery_off_strips_bodies(db, store, writer):
    put_config(db, store, ACCOUNT, _config(text=False))
    record = _record(1)
    writer.submit(record)
    writer.flush()
    [line] = _lines(store, _log_objects(store)[0])
    assert "inputBodyJson" not in line["input"] and "outputBodyJson" not in line["output"]
    assert line["input"]["inputTokenCount"] == 3 and line["output"]["outputTokenCount"] == 2
    assert line["requestId"] == "req-1"
    assert "inputBodyJson" in record["input"]  # the caller's record is left alone


def test_logging_off_writes_nothing(db, store, writer):
    writer.submit(_record(1))
    writer.flush()
    assert _log_objects(store) == []
    put_config(db, store, ACCOUNT, _config())
    writer.submit(_record(2))
    delete_config(db, ACCOUNT)  # turned off before the flush: not delivered
    writer.flush()
    assert _log_objects(store) == []
    assert not writer.is_enabled(ACCOUNT)


def test_is_enabled_follows_refresh(db, store, writer):
    assert not writer.is_enabled(ACCOUNT)
    put_config(db, store, ACCOUNT, _config())
    writer.refresh()
    assert writer.is_enabled(ACCOUNT)


def test_full_queue_drops_without_blocking(db, store, caplog):
    put_config(db, store, ACCOUNT, _config())
    writer = InvocationLogWriter(db, store, REGION, queue_size=3, start=False)
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING):
        for i in range(10):
            writer.submit(_record(i))
    assert time.perf_counter() - started < 0.5
    assert writer.dropped == 7
    assert "dropped" in caplog.text and "queue is full" in caplog.text
    writer.flush()  # no thread: delivers inline
    [info] = _log_objects(store)
    assert [r["requestId"] for r in _lines(store, info)] == ["req-0", "req-1", "req-2"]
    writer.close()
    writer.submit(_record(99))  # after close: dropped, not raised
    assert writer.dropped == 8


def test_deleted_bucket_does_not_raise(db, store, writer, caplog):
    put_config(db, store, ACCOUNT, _config())
    store.delete_bucket("logs-bucket")
    with caplog.at_level(logging.WARNING):
        writer.submit(_record(1))
        assert writer.flush()
    assert "could not deliver 1 model invocation log record" in caplog.text
    assert writer.written == 0
    store.create_bucket("logs-bucket")  # the thread is still alive and delivers again
    writer.submit(_record(2))
    writer.flush()
    [info] = _log_objects(store)
    assert [r["requestId"] for r in _lines(store, info)] == ["req-2"]


def test_interval_and_batch_size_trigger_delivery(db, store):
    put_config(db, store, ACCOUNT, _config())
    by_size = InvocationLogWriter(db, store, REGION, flush_interval_s=60.0, max_batch=4)
    try:
        for i in range(4):
            by_size.submit(_record(i))
        _wait_for(lambda: len(_log_objects(store)) == 1)
    finally:
        by_size.close()
    by_time = InvocationLogWriter(db, store, REGION, flush_interval_s=0.1)
    try:
        by_time.submit(_record(9))
        _wait_for(lambda: len(_log_objects(store)) == 2)
    finally:
        by_time.close()


def test_close_flushes(db, store):
    put_config(db, store, ACCOUNT, _config())
    writer = InvocationLogWriter(db, store, REGION, flush_interval_s=60.0)
    writer.submit(_record(1))
    writer.close()
    assert len(_log_objects(store)) == 1


def test_inline_flush_splits_at_max_batch(db, store):
    put_config(db, store, ACCOUNT, _config())
    writer = InvocationLogWriter(db, store, REGION, max_batch=4, start=False)
    for i in range(10):
        writer.submit(_record(i))
    writer.close()
    sizes = sorted(len(_lines(store, info)) for info in _log_objects(store))
    assert sizes == [2, 4, 4]


def _wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
