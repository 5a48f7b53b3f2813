"""The job runner: each job runs in its own process, here or on a Ray cluster; its state lives in the database.

The runner knows no domain. A job names its entry point (`outcrop.customization.job:run`), which is
called in a child process with a `JobContext`, and optionally a failure hook (`module:function`),
which the runner calls with (job id, message) when the process dies without saying how it ended
or when a restart finds the job orphaned. Stop is cooperative: the job checks `should_stop()` between
steps; one that does not stop within the grace period is terminated. Where the processes run is the
launcher's business (`outcrop.platform.launchers`: child processes, or Ray jobs).

After a restart, a job that was running is started again (its entry point sees `attempt > 1` and
resumes from its own checkpoints) up to `MAX_ATTEMPTS`, after which it fails with a message: a job
never stays running forever.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from outcrop.platform.config import Settings
from outcrop.platform.database import Database, utc_now
from outcrop.platform.launchers import Launcher, LauncherUnavailable, open_launcher
from outcrop.platform.presence import Presence
from outcrop.platform.tables import JobRow, JobState

log = logging.getLogger(__name__)

TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.STOPPED})
MAX_ATTEMPTS = 3
#: Seconds a job has to honour a stop request before it is terminated.
STOP_GRACE_S = 20.0
POLL_S = 0.5
#: Seconds between looks for jobs whose server died (with other servers on the database).
RECOVER_SECONDS = 10.0
#: Seconds before starting jobs is tried again when the launcher could not be reached (the Ray head is down).
LAUNCH_RETRY_S = 10.0


def _resolve(entry_point: str) -> Callable[..., Any]:
    module, _, name = entry_point.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass
class JobContext:
    """What a running job gets: its spec, the platform's stores, and ways to report and to listen."""

    job_id: str
    account_id: str
    spec: dict[str, Any]
    attempt: int
    settings: Settings
    db: Database
    work_dir: Path
    _stop_checked: float = 0.0
    _stop: bool = False
    _last_report: float = field(default=0.0)

    def should_stop(self, fresh: bool = False) -> bool:
        """True once a stop was requested (read from the database at most once a second, unless `fresh`)."""
        now = time.monotonic()
        if not self._stop and (fresh or now - self._stop_checked >= 1.0):
            self._stop_checked = now
            with self.db.session() as session:
                self._stop = bool(session.get(JobRow, self.job_id).stop_requested)
        return self._stop

    def report(self, progress: dict[str, Any], force: bool = False) -> None:
        """Publish progress (rate-limited to one write a second unless forced)."""
        now = time.monotonic()
        if not force and now - self._last_report < 1.0:
            return
        self._last_report = now
        with self.db.session() as session:
            row = session.get(JobRow, self.job_id)
            row.progress, row.updated_at = progress, utc_now()


class JobRunner:
    """Starts queued jobs as child processes, watches them, stops them, recovers them after restarts."""

    def __init__(self, db: Database, settings: Settings, max_running: int = 1,
                 presence: Presence | None = None, launcher: Launcher | None = None) -> None:
        #: This server among those on the database: a job it claims carries its id, and the jobs of servers
        #: that died are requeued (recover). None: the only server.
        self.presence = presence
        self._recovered = time.monotonic()
        self.db = db
        self.settings = settings
        self.max_running = max_running
        self.launcher = launcher or open_launcher(settings)
        self._launch_after = 0.0  # monotonic time before which no job is started (the launcher was unavailable)
        self._stop_deadlines: dict[str, float] = {}
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the service side ---------------------------------------------------------------------------

    def submit(self, account_id: str, entry_point: str, spec: dict[str, Any],
               failure_hook: str | None = None) -> str:
        job_id = uuid.uuid4().hex
        with self.db.session() as session:
            session.add(JobRow(job_id=job_id, account_id=account_id, entry_point=entry_point,
                               failure_hook=failure_hook, spec=spec, state=JobState.QUEUED, attempt=0,
                               stop_requested=False, created_at=utc_now(), updated_at=utc_now()))
        self._wake.set()
        return job_id

    def request_stop(self, job_id: str) -> None:
        with self.db.session() as session:
            row = session.get(JobRow, job_id)
            if row is not None and row.state not in TERMINAL:
                row.stop_requested, row.updated_at = True, utc_now()
        self._wake.set()

    def get(self, job_id: str) -> JobRow | None:
        with self.db.session() as session:
            return session.get(JobRow, job_id)

    # -- the loop -----------------------------------------------------------------------------------

    def start(self) -> None:
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="outcrop-jobs", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Server shutdown: stop the loop; local children are terminated and resume at the next start, Ray jobs
        go on."""
        self._closed.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.launcher.close()

    def recover(self, unowned: bool = True) -> None:
        """Jobs left running by a server that is gone (this one before a restart, or another server on the
        database that died) are requeued, to resume, or failed after MAX_ATTEMPTS. Jobs of live servers are
        theirs. `unowned`: also jobs no server claimed by id (claimed before servers had ids), which only a
        starting server takes back: during a rolling upgrade an older server may still be running them."""
        with self.db.session() as session:
            live = self.presence.live(session) if self.presence is not None else set()
            orphans = [row for row in session.scalars(select(JobRow).where(JobRow.state == JobState.RUNNING))
                       if row.server_id not in live and (unowned or row.server_id is not None)]
        for row in orphans:
            try:
                running = self.launcher.recover(row.job_id, row.attempt, row.pid)
            except LauncherUnavailable as exc:  # not knowable now: left as they are, tried again at the next look
                log.warning("jobs left running by servers that are gone wait: %s", exc)
                break
            if running:  # still running (a Ray job): watch it
                if not self._adopt(row):
                    self.launcher.forget(row.job_id)  # another server adopted it first
                continue
            if row.stop_requested:
                self._take_over(row, JobState.STOPPED, "Stopped while the server restarted")
            elif row.attempt >= MAX_ATTEMPTS:
                message = f"The job was interrupted {row.attempt} times (server restarts) and was given up"
                if self._take_over(row, JobState.FAILED, message):
                    self._run_failure_hook(row, message)
            elif self._take_over(row, JobState.QUEUED, None):
                log.info("job %s was running on a server that stopped; it will resume", row.job_id)

    def _adopt(self, row: JobRow) -> bool:
        """Make a job still running (on Ray) this server's, only if it is still as it was read."""
        with self.db.session() as session:
            return bool(session.execute(update(JobRow).where(*_unchanged(row)).values(
                server_id=self.presence.server_id if self.presence is not None else None,
                updated_at=utc_now())).rowcount)

    def _take_over(self, row: JobRow, state: str, message: str | None) -> bool:
        """Move an orphaned job on, only if it is still as it was read: of servers recovering it at once (or one
        that claimed it since), one wins and the others change nothing."""
        with self.db.session() as session:
            return bool(session.execute(update(JobRow).where(*_unchanged(row)).values(
                state=state, message=message, pid=None, server_id=None, updated_at=utc_now())).rowcount)

    def _loop(self) -> None:
        while not self._closed.is_set():
            try:
                self._reap()
                self._enforce_stops()
                if self.presence is not None and time.monotonic() - self._recovered > RECOVER_SECONDS:
                    self._recovered = time.monotonic()
                    self.recover(unowned=False)  # another server may have died with jobs running
                self._launch()
            except Exception:  # the loop must outlive any one job's trouble
                log.exception("job runner step failed")
            self._wake.wait(POLL_S)
            self._wake.clear()

    def _launch(self) -> None:
        room = self.max_running - len(self.launcher.watched())
        if room <= 0 or time.monotonic() < self._launch_after:
            return
        with self.db.session() as session:
            queued = session.scalars(select(JobRow).where(JobRow.state == JobState.QUEUED)
                                     .order_by(JobRow.created_at).limit(room)).all()
        for row in queued:
            if not self._claim(row):
                continue
            log_path = job_dir(self.settings, row.job_id) / "job.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            try:
                pid = self.launcher.start(row.job_id, row.attempt + 1, log_path)
            except LauncherUnavailable as exc:  # the Ray head is down: back in the queue, tried again later
                log.warning("job %s waits: %s", row.job_id, exc)
                self._unclaim(row)
                self._launch_after = time.monotonic() + LAUNCH_RETRY_S
                return
            except Exception as exc:  # claimed but not started: it must not stay RUNNING on no process
                self._fail(row, f"The job process could not start: {exc}")
                continue
            if pid is not None:
                with self.db.session() as session:
                    session.execute(update(JobRow).where(JobRow.job_id == row.job_id).values(pid=pid))
            log.info("job %s started (attempt %d, pid %s)", row.job_id, row.attempt + 1, pid)

    def _claim(self, row: JobRow) -> bool:
        """Take a queued job for this server by one conditional update: of servers racing for it, one wins (a
        job stopped while queued ends STOPPED instead)."""
        queued = (JobRow.job_id == row.job_id, JobRow.state == JobState.QUEUED)
        with self.db.session() as session:
            if row.stop_requested:
                session.execute(update(JobRow).where(*queued).values(
                    state=JobState.STOPPED, message="Stopped before it started", updated_at=utc_now()))
                return False
            return bool(session.execute(update(JobRow).where(*queued).values(
                state=JobState.RUNNING, attempt=JobRow.attempt + 1, updated_at=utc_now(),
                server_id=self.presence.server_id if self.presence is not None else None)).rowcount)

    def _unclaim(self, row: JobRow) -> None:
        """Put back a job claimed but not started, as it was."""
        with self.db.session() as session:
            session.execute(update(JobRow).where(
                JobRow.job_id == row.job_id, JobRow.state == JobState.RUNNING, JobRow.attempt == row.attempt + 1)
                .values(state=JobState.QUEUED, attempt=row.attempt, server_id=None, updated_at=utc_now()))

    def _reap(self) -> None:
        for job_id in self.launcher.watched():
            try:
                code = self.launcher.ended(job_id)
            except Exception as exc:  # one job's trouble (the Ray head not answering) must not stall the others
                log.warning("job %s: could not tell whether it ended: %s", job_id, exc)
                continue
            if code is None:
                continue
            self._stop_deadlines.pop(job_id, None)
            row = self.get(job_id)
            if row is None or row.state in TERMINAL:
                continue  # the job recorded its own ending
            if row.stop_requested:
                self._finish(job_id, JobState.STOPPED, "Stopped on request")
            else:
                self._fail(row, f"The job process ended unexpectedly ({_last_line(job_dir(self.settings, job_id))}"
                                f"; exit status {code})")

    def _enforce_stops(self) -> None:
        with self.db.session() as session:
            stopping = session.scalars(select(JobRow.job_id).where(
                JobRow.state == JobState.RUNNING, JobRow.stop_requested.is_(True))).all()
        now = time.monotonic()
        watched = set(self.launcher.watched())
        for job_id in stopping:
            if job_id not in watched:
                continue
            deadline = self._stop_deadlines.setdefault(job_id, now + STOP_GRACE_S)
            if now >= deadline:
                log.warning("job %s did not stop within %.0fs; terminating it", job_id, STOP_GRACE_S)
                self._stop_deadlines[job_id] = now + STOP_GRACE_S  # and again after as long, if need be
                try:
                    self.launcher.terminate(job_id)
                except Exception as exc:
                    log.warning("job %s could not be terminated: %s", job_id, exc)

    def _finish(self, job_id: str, state: str, message: str | None = None) -> None:
        with self.db.session() as session:
            row = session.get(JobRow, job_id)
            row.state, row.message, row.pid, row.updated_at = state, message, None, utc_now()

    def _fail(self, row: JobRow, message: str) -> None:
        self._finish(row.job_id, JobState.FAILED, message)
        self._run_failure_hook(row, message)

    def _run_failure_hook(self, row: JobRow, message: str) -> None:
        if row.failure_hook:
            try:
                _resolve(row.failure_hook)(self.db, row.job_id, message)
            except Exception:
                log.exception("failure hook of job %s failed", row.job_id)


def job_dir(settings: Settings, job_id: str) -> Path:
    """A job's private folder: its log, checkpoints and scratch files."""
    return settings.data_dir / "jobs" / job_id


def _last_line(folder: Path) -> str:
    try:
        lines = (folder / "job.log").read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return lines[-1][:500] if lines else "no output"


def _unchanged(row: JobRow) -> tuple:
    """The conditions of an update that applies only while the job is running as `row` read it: of servers
    recovering it at once (or one that claimed it since), one wins and the others change nothing."""
    owner = JobRow.server_id.is_(None) if row.server_id is None else JobRow.server_id == row.server_id
    return JobRow.job_id == row.job_id, JobRow.state == JobState.RUNNING, JobRow.attempt == row.attempt, owner


def run_job(job_id: str, settings: Settings) -> int:
    """The child process: run the entry point, record how it ended. Exit status 0 means 'recorded'."""
    db = Database(settings.resolved_database_url)
    with db.session() as session:
        row = session.get(JobRow, job_id)
        entry_point, failure_hook = row.entry_point, row.failure_hook
        context = JobContext(job_id=job_id, account_id=row.account_id, spec=dict(row.spec), attempt=row.attempt,
                             settings=settings, db=db, work_dir=job_dir(settings, job_id))
    context.work_dir.mkdir(parents=True, exist_ok=True)
    # SIGTERM (server shutdown, forced stop) ends the process at once; the job resumes from its checkpoints.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(143))
    try:
        outcome = _resolve(entry_point)(context)
    except BaseException as exc:  # record every failure, even KeyboardInterrupt
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        log.exception("job %s failed", job_id)
        with db.session() as session:
            row = session.get(JobRow, job_id)
            row.state, row.message, row.pid, row.updated_at = JobState.FAILED, message, None, utc_now()
        if failure_hook:
            _resolve(failure_hook)(db, job_id, message)
        return 0
    with db.session() as session:
        row = session.get(JobRow, job_id)
        row.state = JobState.STOPPED if outcome == JobState.STOPPED else JobState.SUCCEEDED
        row.pid, row.updated_at = None, utc_now()
    return 0


def main(argv: list[str] | None = None) -> int:
    from outcrop.platform.config import load_settings
    from outcrop.platform.private import private_files

    private_files()  # checkpoints, answers, logs in the data dir: 0600 (inherited from the server too)
    parser = argparse.ArgumentParser(prog="python -m outcrop.platform.job_process", description="run one job")
    parser.add_argument("job_id")
    parser.add_argument("--data-dir")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return run_job(args.job_id, load_settings(data_dir=args.data_dir))

