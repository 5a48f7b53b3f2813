"""Bedrock's model invocation logging: the per-account configuration and the writer that delivers logs.

An account turns logging on with PutModelInvocationLoggingConfiguration; every invocation then
yields one record in Bedrock's `ModelInvocationLog` schema (see `make_log_record`), which the
runtime hands to `InvocationLogWriter.submit`. Submitting never blocks and never fails: records go
onto a bounded queue (dropped and counted when it is full) and a daemon thread delivers them in
batches, one gzip'd JSON-lines object per account per flush, under Bedrock's own key layout:

    s3://<bucketName>/<keyPrefix>/AWSLogs/<accountId>/BedrockModelInvocationLogs/<region>/YYYY/MM/DD/HH/<uuid>.json.gz

Only S3 delivery exists here; a configuration naming CloudWatch Logs is refused. The configuration
is read again at every flush, so turning logging off (or text delivery off) takes effect for
records not yet written. A failed write (the bucket was deleted) is logged and the batch dropped.
"""

from __future__ import annotations

import copy
import gzip
import json
import logging
import queue
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from outcrop.errors import AccessDeniedException, BedrockError, ValidationException
from outcrop.iam import buckets
from outcrop.iam.principal import Principal
from outcrop.platform.database import Database, utc_now
from outcrop.platform.objectstore import MAX_KEY_BYTES, ObjectStore, S3Uri, _segment_error
from outcrop.runtime.tables import InvocationLoggingConfig

log = logging.getLogger(__name__)

SCHEMA_TYPE = "ModelInvocationLog"
SCHEMA_VERSION = "1.0"
#: The booleans of LoggingConfig; kept as given, `textDataDeliveryEnabled` decides whether bodies are logged.
DELIVERY_FLAGS = ("textDataDeliveryEnabled", "imageDataDeliveryEnabled", "embeddingDataDeliveryEnabled",
                  "videoDataDeliveryEnabled", "audioDataDeliveryEnabled")
#: Room left in a key after the prefix for `AWSLogs/<account>/BedrockModelInvocationLogs/<region>/...`.
_KEY_TAIL_BYTES = 160


# -- configuration ----------------------------------------------------------------------------------


def _key_prefix_parts(key_prefix: str | None) -> list[str]:
    """The prefix's path segments; leading, trailing and doubled slashes are dropped."""
    return [part for part in (key_prefix or "").split("/") if part]


def validate_config(store: ObjectStore, logging_config: Any,
                    authorize: Callable[[str, str], None] = lambda bucket, prefix: None) -> dict[str, Any]:
    """Refuse what Bedrock (or this server) would refuse; returns a deep copy of the config.

    `authorize(bucket, key prefix)` raises AccessDeniedException unless the account may write its logs
    there; it runs before the bucket's existence is checked, so another account's bucket and a missing
    one answer the same."""
    if not isinstance(logging_config, dict):
        raise ValidationException("loggingConfig must be a structure")
    if logging_config.get("cloudWatchConfig") is not None:
        raise ValidationException(
            "loggingConfig.cloudWatchConfig: CloudWatch Logs delivery is not available on this server; "
            "deliver invocation logs to S3 with loggingConfig.s3Config instead")
    s3 = logging_config.get("s3Config")
    if s3 is None:
        raise ValidationException(
            "loggingConfig must configure at least one destination: set loggingConfig.s3Config "
            "(bucketName, optional keyPrefix)")
    if not isinstance(s3, dict):
        raise ValidationException("loggingConfig.s3Config must be a structure")
    bucket = s3.get("bucketName")
    if not isinstance(bucket, str) or not bucket:
        raise ValidationException("loggingConfig.s3Config.bucketName is required")
    try:
        S3Uri(bucket)
    except ValidationException as exc:
        raise ValidationException(f"loggingConfig.s3Config.bucketName: {exc.message}") from None
    key_prefix = s3.get("keyPrefix")
    if key_prefix is not None:
        if not isinstance(key_prefix, str):
            raise ValidationException("loggingConfig.s3Config.keyPrefix must be a string")
        if len(key_prefix) > 1024 or len(key_prefix.encode("utf-8", "replace")) > MAX_KEY_BYTES - _KEY_TAIL_BYTES:
            raise ValidationException(
                f"loggingConfig.s3Config.keyPrefix is too long: at most {MAX_KEY_BYTES - _KEY_TAIL_BYTES} bytes "
                "leave room for the log objects' own path")
        if "\\" in key_prefix or "\0" in key_prefix:
            raise ValidationException("loggingConfig.s3Config.keyPrefix: backslashes and NUL bytes are not allowed")
        for part in _key_prefix_parts(key_prefix):
            if why := _segment_error(part):
                raise ValidationException(f"loggingConfig.s3Config.keyPrefix {key_prefix!r}: {why}")
    for flag in DELIVERY_FLAGS:
        if flag in logging_config and not isinstance(logging_config[flag], bool):
            raise ValidationException(f"loggingConfig.{flag} must be a boolean")
    try:
        authorize(bucket, "".join(part + "/" for part in _key_prefix_parts(key_prefix)))
    except AccessDeniedException:
        raise ValidationException(f"loggingConfig.s3Config.bucketName: the S3 bucket {bucket!r} does not exist in "
                                  "this account (and no bucket policy lets the account write there); create it "
                                  "first") from None
    try:
        exists = store.bucket_exists(bucket)
    except BedrockError:
        raise
    except Exception as exc:  # the S3 endpoint refused or failed the check
        raise ValidationException(
            f"loggingConfig.s3Config.bucketName: could not check the S3 bucket {bucket!r}: {exc}") from None
    if not exists:
        raise ValidationException(
            f"loggingConfig.s3Config.bucketName: the S3 bucket {bucket!r} does not exist; create it first")
    return copy.deepcopy(logging_config)


def put_config(db: Database, store: ObjectStore, account_id: str, logging_config: dict[str, Any]) -> dict[str, Any]:
    """Validate and store (replacing any previous one) the account's `loggingConfig`; returns what was stored."""
    def authorize(bucket: str, prefix: str) -> None:
        resource = f"arn:aws:s3:::{bucket}/{prefix}AWSLogs/{account_id}/BedrockModelInvocationLogs/"
        buckets.check_access(db, Principal.account_root(account_id), "s3:PutObject", resource)

    config = validate_config(store, logging_config, authorize)
    with db.session() as session:
        row = session.get(InvocationLoggingConfig, account_id)
        if row is None:
            session.add(InvocationLoggingConfig(account_id=account_id, config=config, updated_at=utc_now()))
        else:
            row.config = config
            row.updated_at = utc_now()
    return copy.deepcopy(config)


def get_config(db: Database, account_id: str) -> dict[str, Any] | None:
    """The account's `loggingConfig`, or None when logging is off (GetModelInvocationLoggingConfiguration
    then answers with no `loggingConfig` member, as Bedrock does)."""
    with db.session() as session:
        row = session.get(InvocationLoggingConfig, account_id)
        return copy.deepcopy(row.config) if row is not None else None


def delete_config(db: Database, account_id: str) -> None:
    """Turn logging off for the account; deleting a configuration that does not exist is not an error."""
    with db.session() as session:
        row = session.get(InvocationLoggingConfig, account_id)
        if row is not None:
            session.delete(row)


def _load_configs(db: Database) -> dict[str, dict[str, Any]]:
    with db.session() as session:
        return {row.account_id: row.config for row in session.scalars(select(InvocationLoggingConfig))}


# -- records ----------------------------------------------------------------------------------------


def _body_json(body: Any) -> Any:
    """A body as logged: parsed JSON when it is JSON, else the text itself; objects pass through."""
    if isinstance(body, (bytes, bytearray, memoryview)):
        body = bytes(body).decode("utf-8", errors="replace")
    if isinstance(body, str):
        try:
            return json.loads(body)
        except ValueError:
            return body
    return body


def _timestamp(moment: datetime | None = None) -> str:
    moment = (moment or utc_now()).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_log_record(*, request_id: str, account_id: str, principal_arn: str, region: str, operation: str,
                    model_id: str, input_body: Any, input_content_type: str | None, output_body: Any,
                    output_content_type: str | None, input_tokens: int, output_tokens: int, latency_ms: int,
                    error_code: str | None = None, timestamp: datetime | None = None) -> dict[str, Any]:
    """One record in Bedrock's `ModelInvocationLog` schema.

    Bodies may be bytes, str or already-parsed JSON (a streamed answer is logged as the list of its
    chunks, as Bedrock does); a body that is not JSON is logged as its text. A body of None is left
    out. `output.latencyMs` is Outcrop's addition: the time the invocation took end to end.
    """
    input_part: dict[str, Any] = {"inputContentType": input_content_type or "application/json"}
    if input_body is not None:
        input_part["inputBodyJson"] = _body_json(input_body)
    input_part["inputTokenCount"] = int(input_tokens)
    output_part: dict[str, Any] = {"outputContentType": output_content_type or "application/json"}
    if output_body is not None:
        output_part["outputBodyJson"] = _body_json(output_body)
    output_part["outputTokenCount"] = int(output_tokens)
    output_part["latencyMs"] = int(latency_ms)
    record: dict[str, Any] = {
        "schemaType": SCHEMA_TYPE,
        "schemaVersion": SCHEMA_VERSION,
        "timestamp": _timestamp(timestamp),
        "accountId": account_id,
        "identity": {"arn": principal_arn},
        "region": region,
        "requestId": request_id,
        "operation": operation,
        "modelId": model_id,
        "input": input_part,
        "output": output_part,
    }
    if error_code:
        record["errorCode"] = error_code
    return record


def _without_text(record: dict[str, Any]) -> dict[str, Any]:
    """The record with its input and output bodies removed (text data delivery is off)."""
    record = dict(record)
    for part, body in (("input", "inputBodyJson"), ("output", "outputBodyJson")):
        if isinstance(record.get(part), dict) and body in record[part]:
            record[part] = {k: v for k, v in record[part].items() if k != body}
    return record


def log_object_uri(config: dict[str, Any], account_id: str, region: str, when: datetime) -> S3Uri:
    """Where one delivery of the account's records goes, in Bedrock's layout."""
    s3 = config["s3Config"]
    when = when.astimezone(UTC)
    parts = [*_key_prefix_parts(s3.get("keyPrefix")), "AWSLogs", account_id, "BedrockModelInvocationLogs", region,
             f"{when:%Y}", f"{when:%m}", f"{when:%d}", f"{when:%H}", f"{uuid.uuid4()}.json.gz"]
    return S3Uri(s3["bucketName"], "/".join(parts))


def encode_records(records: list[dict[str, Any]]) -> bytes:
    """JSON lines, gzip'd: the body of one log object."""
    text = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":"), default=str) + "\n" for r in records)
    return gzip.compress(text.encode("utf-8"), compresslevel=6)


# -- the writer -------------------------------------------------------------------------------------


class _Flush:
    """Put on the queue by `flush()`: everything submitted before it is in the batch when it arrives."""

    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()
#: Seconds between two "queue full" warnings; the count in the next one covers everything dropped since.
_DROP_WARNING_INTERVAL_S = 10.0


class InvocationLogWriter:
    """Batches invocation records per account and delivers them to each account's S3 destination."""

    def __init__(self, db: Database, store: ObjectStore, region: str, flush_interval_s: float = 2.0,
                 max_batch: int = 500, queue_size: int = 10_000, start: bool = True) -> None:
        self.db = db
        self.store = store
        self.region = region
        self.flush_interval_s = flush_interval_s
        self.max_batch = max(1, max_batch)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._pending: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._configs: dict[str, dict[str, Any]] = {}
        self._closed = False
        #: Serialises delivery between the thread and a caller flushing inline (no thread running).
        self._deliver_lock = threading.Lock()
        self._counter_lock = threading.Lock()
        self._dropped = 0
        self._dropped_reported = 0
        self._last_drop_warning = float("-inf")
        self.written = 0
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    # -- the request path --

    def submit(self, record: dict[str, Any]) -> None:
        """Queue a record for delivery; never blocks and never raises. Dropped (and counted) when full."""
        try:
            if self._closed:
                self._drop("the writer is closed")
                return
            self._queue.put_nowait(record)
        except queue.Full:
            self._drop("the queue is full")
        except Exception:  # never the caller's problem
            log.exception("could not queue an invocation log record")

    def is_enabled(self, account_id: str) -> bool:
        """Whether the account had logging on at the last refresh (at most one flush interval ago);
        lets the runtime skip building a record nobody will receive. `refresh()` updates it now."""
        return account_id in self._configs

    def refresh(self) -> None:
        """Re-read every account's configuration (done on every flush and every interval anyway)."""
        try:
            self._configs = _load_configs(self.db)
        except Exception:
            log.exception("could not read the model invocation logging configurations")

    @property
    def dropped(self) -> int:
        """Records dropped because the queue was full (or the writer closed) since it started."""
        return self._dropped

    def _drop(self, why: str) -> None:
        with self._counter_lock:
            self._dropped += 1
            now = time.monotonic()
            if now - self._last_drop_warning < _DROP_WARNING_INTERVAL_S:
                return
            self._last_drop_warning = now
            count, self._dropped_reported = self._dropped - self._dropped_reported, self._dropped
        log.warning("dropped %d model invocation log record(s): %s (%d dropped in all)", count, why, self._dropped)

    # -- lifecycle --

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._closed = False
            self._thread = threading.Thread(target=self._run, name="outcrop-invocation-log", daemon=True)
            self._thread.start()

    def _running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._thread is not threading.current_thread()

    def flush(self, timeout: float = 30.0) -> bool:
        """Deliver everything submitted so far, synchronously; False if the thread did not finish in time."""
        if self._running():
            request = _Flush()
            try:
                self._queue.put(request, timeout=timeout)
            except queue.Full:
                return False
            return request.done.wait(timeout)
        self._drain_inline()
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Flush and stop the thread; later submissions are dropped."""
        self._closed = True
        if self._running():
            try:
                self._queue.put(_STOP, timeout=timeout)
            except queue.Full:
                log.warning("the invocation log writer did not stop in time")
            self._thread.join(timeout)
        self._drain_inline()

    # -- the thread --

    def _drain_inline(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Flush):
                item.done.set()
            elif item is not _STOP:
                self._add(item)
        self._deliver()

    def _add(self, record: Any) -> bool:
        """Batch one record; True when its account's batch is full."""
        account = record.get("accountId") if isinstance(record, dict) else None
        if not isinstance(account, str) or not account:
            log.warning("dropped a model invocation log record without an accountId")
            return False
        batch = self._pending[account]
        batch.append(record)
        return len(batch) >= self.max_batch

    def _run(self) -> None:
        self.refresh()
        deadline = time.monotonic() + self.flush_interval_s
        while True:
            try:
                left = deadline - time.monotonic()
                item = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                item = None
            try:
                if item is _STOP:
                    self._deliver()
                    return
                if isinstance(item, _Flush):
                    self._deliver()
                    item.done.set()
                    deadline = time.monotonic() + self.flush_interval_s
                    continue
                full = item is not None and self._add(item)
                if full or time.monotonic() >= deadline:
                    self._deliver()
                    deadline = time.monotonic() + self.flush_interval_s
            except Exception:  # the thread must outlive any one bad batch
                log.exception("model invocation log delivery failed")

    def _deliver(self) -> None:
        """Write every pending batch (re-reading the configurations first), then forget them."""
        with self._deliver_lock:
            self.refresh()
            pending, self._pending = self._pending, defaultdict(list)
            for account, records in pending.items():
                config = self._configs.get(account)
                if config is None or not isinstance(config.get("s3Config"), dict):
                    log.debug("logging is off for %s: %d record(s) not delivered", account, len(records))
                    continue
                if not config.get("textDataDeliveryEnabled", False):
                    records = [_without_text(r) for r in records]
                for start in range(0, len(records), self.max_batch):
                    self._write(config, account, records[start:start + self.max_batch])

    def _write(self, config: dict[str, Any], account: str, records: list[dict[str, Any]]) -> None:
        uri = None
        try:
            uri = log_object_uri(config, account, self.region, utc_now())
            # Checked again at each write: the bucket may have been deleted and its name taken by another account.
            buckets.check_access(self.db, Principal.account_root(account), "s3:PutObject",
                                 f"arn:aws:s3:::{uri.bucket}/{uri.key}")
            self.store.put_bytes(uri, encode_records(records))
            self.written += len(records)
        except Exception as exc:
            log.warning("could not deliver %d model invocation log record(s) for account %s to %s: %s",
                        len(records), account, uri or f"s3://{config['s3Config'].get('bucketName')}", exc)
