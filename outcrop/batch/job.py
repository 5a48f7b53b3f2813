"""One batch inference job, top to bottom: check the role, read every record, answer them many at a time, write
Bedrock's outputs.

Runs in its own process under the job runner; every read and write of the user's bucket goes through the
job's service role (`ScopedStore`), and the records are answered by a `RuntimeService` of the job's own, as
InvokeModel answers them, `max_batch_sequences` at once so that the continuous-batching scheduler stays
full (`evaluation.inference.Generator.many`, the same pool an evaluation asks its prompts through). Each
answer is kept in the job's work dir the moment it comes (`journal.py`): a job the server's restart
interrupted asks the model only for the records it had not finished. A stop request or the job's timeout
calls off the records in the batch at the next step; the outputs then hold the records that were done.
Every record's call leaves a usage record carrying the job's ARN, which the bill prices at the batch price.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import update

from outcrop.batch import records as fmt
from outcrop.batch.journal import JOURNAL_NAME, Finished, Journal
from outcrop.batch.records import Counts, Malformed, Record
from outcrop.batch.service import (
    check_bucket_owners,
    folder_prefix,
    input_name,
    input_uri,
    is_single_file,
    output_prefix,
    required_permissions,
)
from outcrop.batch.tables import FINISHED, InvocationJobStatus, ModelInvocationJobRow
from outcrop.errors import BedrockError, Cancelled, ModelNotReadyException, ThrottlingException, ValidationException
from outcrop.evaluation.inference import Generator, Stopped
from outcrop.iam.scoped_store import ScopedStore
from outcrop.platform import jobs
from outcrop.platform.database import Database, as_utc, utc_now
from outcrop.platform.objectstore import S3Uri
from outcrop.platform.tables import JobState

log = logging.getLogger(__name__)
S = InvocationJobStatus

#: Bedrock's quotas on a job's input: records in a job, bytes in one file and in the whole job.
MAX_RECORDS = 50_000
MAX_FILE_BYTES = 1 << 30
MAX_JOB_BYTES = 5 << 30
#: Seconds between looks at the stop flag and the clock, and between writes of the counts.
WATCH_S = 0.5
STOP, TIMEOUT = "stop", "timeout"


def run(ctx: jobs.JobContext) -> str | None:
    arn = ctx.spec["jobArn"]
    db, settings = ctx.db, ctx.settings
    row = _row(db, arn)
    if row.status in FINISHED:  # stopped or expired while it waited in the queue
        return JobState.STOPPED if row.status != S.COMPLETED else None
    if row.status == S.STOPPING or ctx.should_stop(fresh=True):
        _end(db, arn, S.STOPPED, "Stopped on request")
        return JobState.STOPPED
    if ctx.attempt == 1 and utc_now() >= as_utc(row.expires_at):
        _end(db, arn, S.EXPIRED, "The job timed out before it started")
        return None

    from outcrop.services import JobServices  # the composition root: a job's entry point builds its services

    services = JobServices.open(db, settings)
    request, account = row.request, row.account_id
    job_id = request["jobId"]

    # 1. Validating: the role may still do all the job needs, and every line of the input is read.
    _advance(db, arn, S.VALIDATING)
    role = services.iam.check_role(request["roleArn"], account, required_permissions(
        request, job_id, functools.partial(services.profiles.invocation_arns, account)))
    check_bucket_owners(db, request)
    store = ScopedStore(services.store, services.iam, role)
    files = input_files(store, request)
    parsed = [read_file(store, uri, index) for index, (uri, _) in enumerate(files)]
    total = sum(len(items) for items in parsed)
    if total == 0:
        raise ValidationException(f"The input {input_uri(request)} holds no records")
    if total > MAX_RECORDS:
        raise ValidationException(f"The input holds {total:,} records, over the limit of {MAX_RECORDS:,} a job")
    to_answer = [item for items in parsed for item in items if isinstance(item, Record)]
    journal = Journal(ctx.work_dir / JOURNAL_NAME)
    done = journal.load(to_answer)
    if done:
        log.info("attempt %d of %s: resuming, %d of %d records were finished before", ctx.attempt, arn, len(done),
                 len(to_answer))
    counts = Counts(total=total)
    for items in parsed:
        for item in items:
            if isinstance(item, Malformed):
                counts.add(item.output())
    for finished in done.values():
        counts.add(finished.line, finished.input_tokens, finished.output_tokens)
    pending = [record for record in to_answer if record.key not in done]

    # 2. Scheduled: the model is loaded (the job's own copy); then every record still to do, many at a time.
    _advance(db, arn, S.SCHEDULED, counts)
    runtime = services.runtime()
    answering = _Answering(ctx, db, arn, row.expires_at, runtime, role, request["modelId"], journal, done, counts)
    try:
        if utc_now() >= as_utc(row.expires_at):  # resumed past its time: what it had finished is its output
            ended = TIMEOUT
        else:
            _load(runtime, account, request["modelId"])
            _advance(db, arn, S.IN_PROGRESS, counts)
            ended = answering.run(pending, settings.max_batch_sequences)
    finally:
        journal.close()
        runtime.invocation_log.close()
        runtime.engine.close()

    # 3. The outputs, in Bedrock's layout, written as the role: the records that were done, in input order.
    write_outputs(store, request, files, parsed, done, counts, ctx.work_dir)
    if ended == STOP:
        _end(db, arn, S.STOPPED, "Stopped on request", counts)
        return JobState.STOPPED
    if ended == TIMEOUT and counts.processed < counts.total:  # (the clock ran out after the last record: done)
        processed = counts.processed
        answered = counts.processed - sum(1 for items in parsed for item in items if isinstance(item, Malformed))
        _end(db, arn, S.PARTIALLY_COMPLETED if answered > 0 else S.EXPIRED,
             f"The job timed out after {request['timeoutDurationInHours']} hours with {processed:,} of "
             f"{counts.total:,} records processed", counts)
        return None
    _end(db, arn, S.COMPLETED, None, counts)
    return None


def on_failure(db: Database, runner_job_id: str, message: str) -> None:
    """Called by the job runner when the job failed or its process died."""
    from sqlalchemy import select

    with db.session() as session:
        row = session.scalars(select(ModelInvocationJobRow).where(
            ModelInvocationJobRow.runner_job_id == runner_job_id)).first()
        if row is None or row.status in FINISHED:
            return
        row.status, row.message = S.FAILED, message[:2048]
        row.ended_at = row.updated_at = utc_now()


# ------------------------------------------------------------------------------------------------ the pieces

def input_files(store: ScopedStore, request: dict[str, Any]) -> list[tuple[S3Uri, str]]:
    """(URI, name) of each input file: the one file, or a folder's `.jsonl` files in key order. Other objects
    in a folder (a README, an earlier job's outputs) are not input."""
    source = input_uri(request)
    if is_single_file(source):
        size = store.head(source).size
        _check_size(source, size, MAX_FILE_BYTES)
        return [(source, input_name(source, request))]
    prefix = folder_prefix(source)
    found = sorted((info for info in store.list(prefix) if info.key.endswith(fmt.INPUT_SUFFIX)),
                   key=lambda info: info.key)
    if not found:
        raise ValidationException(f"No {fmt.INPUT_SUFFIX} files under {prefix}")
    for info in found:
        _check_size(info.uri, info.size, MAX_FILE_BYTES)
    _check_size(prefix, sum(info.size for info in found), MAX_JOB_BYTES)
    return [(info.uri, input_name(info.uri, request)) for info in found]


def _check_size(uri: S3Uri, size: int, limit: int) -> None:
    if size > limit:
        raise ValidationException(f"{uri}: {size:,} bytes, over the limit of {limit:,} bytes")


def read_file(store: ScopedStore, uri: S3Uri, index: int) -> list[Record | Malformed]:
    with store.open_read(uri) as fh:
        return list(fmt.parse_lines(fh, index))


def _load(runtime: Any, account: str, model_id: str) -> None:
    """Load the job's model before the records go: Scheduled is the wait for it."""
    from outcrop.catalog.served import engine_kind

    served, _ = runtime.target(account, model_id)
    runtime.engine.get(served.weights, engine_kind(served.card), base=served.base)


class _Answering:
    """The records' calls, `workers` at a time, each answer journaled as it comes; a watcher thread writes the
    counts and calls the batch off on a stop request or at the timeout."""

    def __init__(self, ctx: jobs.JobContext, db: Database, arn: str, expires_at: Any, runtime: Any, role: Any,
                 model_id: str, journal: Journal, done: dict[str, Finished], counts: Counts) -> None:
        self.ctx, self.db, self.arn, self.expires_at = ctx, db, arn, as_utc(expires_at)
        self.runtime, self.role, self.model_id = runtime, role, model_id
        self.journal, self.done, self.counts = journal, done, counts
        self.job_id = arn.rsplit("/", 1)[1]
        self.lock = threading.Lock()
        #: Each call in flight has its own cancel event (one generation's failure sets its own, and must not
        #: call off the others); the watcher sets them all to call the batch off.
        self.live: set[threading.Event] = set()
        self.calling_off = threading.Event()
        self.ended: str | None = None

    def run(self, pending: list[Record], workers: int) -> str | None:
        """Answer `pending`; None when all were answered, else why the job ended first (STOP or TIMEOUT)."""
        over = threading.Event()
        watcher = threading.Thread(target=self._watch, args=(over,), name="batch-watch", daemon=True)
        watcher.start()
        generator = Generator(self.runtime, self.role, self.arn, workers, self.calling_off.is_set)
        try:
            generator.many(len(pending), lambda i: self._answer(pending[i]))
        except Stopped:
            pass
        finally:
            over.set()
            watcher.join()
        return self.ended

    def _answer(self, record: Record) -> None:
        from outcrop.runtime.service import Caller

        cancel = threading.Event()
        with self.lock:
            self.live.add(cancel)
        try:
            if self.calling_off.is_set():
                raise Stopped()
            caller = Caller(f"batch-{self.job_id}-{record.file}-{record.line}", self.role, cancelled=cancel,
                            batch_job_arn=self.arn)
            body = json.dumps(record.model_input, ensure_ascii=False).encode()
            try:
                invoked = self.runtime.invoke(caller, self.model_id, body)
                finished = Finished(fmt.success_line(record, json.loads(invoked.body)), invoked.input_tokens,
                                    invoked.output_tokens)
            except Cancelled:
                if self.calling_off.is_set():
                    raise Stopped() from None
                # called off by the engine itself (the model unloaded): this record's answer is lost
                finished = Finished(fmt.error_line(record.record_id, record.model_input, 500,
                                                   f"Line {record.line}: InternalServerException: the generation "
                                                   "was called off"), 0, 0)
            except (ThrottlingException, ModelNotReadyException):
                raise  # not the record's fault: asked again (Generator.many)
            except BedrockError as exc:  # the record's body, or the model on it: its own line says so
                finished = Finished(fmt.error_line(record.record_id, record.model_input, exc.status,
                                                   f"Line {record.line}: {exc.code}: {exc.message}"), 0, 0)
            except Exception as exc:  # the model failed on this record; the others go on
                log.exception("record %s (line %d) failed", record.record_id, record.line)
                finished = Finished(fmt.error_line(record.record_id, record.model_input, 500,
                                                   f"Line {record.line}: InternalServerException: {exc}"), 0, 0)
        finally:
            with self.lock:
                self.live.discard(cancel)
        self.journal.add(record, finished)
        with self.lock:
            self.done[record.key] = finished
            self.counts.add(finished.line, finished.input_tokens, finished.output_tokens)

    def _watch(self, over: threading.Event) -> None:
        while not over.wait(WATCH_S):
            if self.ended is None:
                if self.ctx.should_stop():
                    self.ended = STOP
                elif utc_now() >= self.expires_at:
                    self.ended = TIMEOUT
                if self.ended is not None:
                    self.calling_off.set()
                    with self.lock:
                        for event in self.live:
                            event.set()
            self._publish()
        self._publish()

    def _publish(self) -> None:
        with self.lock:
            counts = Counts(**vars(self.counts))
        _counts(self.db, self.arn, counts)
        self.ctx.report({"percent": round(100.0 * counts.processed / max(counts.total, 1), 1),
                         "processedRecordCount": counts.processed, "totalRecordCount": counts.total})


def write_outputs(store: ScopedStore, request: dict[str, Any], files: list[tuple[S3Uri, str]],
                  parsed: list[list[Record | Malformed]], done: dict[str, Finished], counts: Counts,
                  work_dir: Path) -> None:
    """`<input name>.out` per input file (each record that was done, in input order) and `manifest.json.out`,
    under `<output prefix>/<job id>/`; each file is written in the work dir first and sent whole."""
    prefix = output_prefix(request, request["jobId"])
    staging = work_dir / "outputs"
    staging.mkdir(parents=True, exist_ok=True)
    for index, ((_, name), items) in enumerate(zip(files, parsed, strict=True)):
        local = staging / f"{index}.out"
        with local.open("w", encoding="utf-8") as out:
            for item in items:
                if isinstance(item, Malformed):
                    line = item.output()
                elif item.key in done:
                    line = done[item.key].line
                else:
                    continue  # not processed (stopped, timed out)
                out.write(fmt.dumps(line) + "\n")
        store.upload_file(local, prefix.join(fmt.output_name(name)))
    store.put_bytes(prefix.join(fmt.MANIFEST_NAME), json.dumps(counts.manifest()).encode())


def _row(db: Database, arn: str) -> ModelInvocationJobRow:
    with db.session() as session:
        return session.get(ModelInvocationJobRow, arn)


def _count_values(counts: Counts | None) -> dict[str, int]:
    if counts is None:
        return {}
    return {"total_records": counts.total, "processed_records": counts.processed,
            "success_records": counts.success, "error_records": counts.error,
            "input_tokens": counts.input_tokens, "output_tokens": counts.output_tokens}


#: The order of a running job's statuses: a job resumed after a restart never goes back to an earlier one.
_ORDER = [S.SUBMITTED, S.VALIDATING, S.SCHEDULED, S.IN_PROGRESS]


def _advance(db: Database, arn: str, status: str, counts: Counts | None = None) -> None:
    """Move a running job on, unless it is being stopped, has ended or is further on already. One conditional
    UPDATE, so that a stop request committed meanwhile (service.stop_job's own conditional UPDATE) is never
    written over."""
    earlier = _ORDER[:_ORDER.index(status)]
    with db.session() as session:
        session.execute(update(ModelInvocationJobRow).where(
            ModelInvocationJobRow.job_arn == arn, ModelInvocationJobRow.status.in_(earlier)).values(status=status))
        session.execute(update(ModelInvocationJobRow).where(ModelInvocationJobRow.job_arn == arn).values(
            updated_at=utc_now(), **_count_values(counts)))


def _counts(db: Database, arn: str, counts: Counts) -> None:
    with db.session() as session:
        row = session.get(ModelInvocationJobRow, arn)
        for name, value in _count_values(counts).items():
            setattr(row, name, value)
        row.updated_at = utc_now()


def _end(db: Database, arn: str, status: str, message: str | None, counts: Counts | None = None) -> None:
    """End the job, unless it has ended already (one conditional UPDATE: the first ending wins)."""
    now = utc_now()
    with db.session() as session:
        session.execute(update(ModelInvocationJobRow).where(
            ModelInvocationJobRow.job_arn == arn, ModelInvocationJobRow.status.not_in(list(FINISHED))).values(
            status=status, message=message, ended_at=now, updated_at=now, **_count_values(counts)))
