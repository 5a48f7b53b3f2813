"""Where the job runner's processes run: child processes of the server, or jobs on a Ray cluster.

The runner (`outcrop.platform.jobs`) decides which job runs and records how it ends; a launcher only starts
the job's process (`python -m outcrop.platform.job_process JOB_ID --data-dir DIR`), says when it has ended,
and ends it on request. The same command runs either way, so a job knows nothing of where it runs.

- `LocalProcesses` (job_backend = "local", the default): children of the server, in their own session. A
  server that stops takes them down; the next one requeues the job, which resumes from its checkpoints.
- `RayJobs` (job_backend = "ray"): Ray jobs submitted to `ray_address` (the head's job API, as for
  `ray job submit`), one submission per attempt (`outcrop-<job id>-<attempt>`). They outlive the server: a
  server that stops leaves them running, and the server that recovers the job watches it again instead of
  starting it over. The job's output is in Ray's job log, copied into the job's `job.log` as it runs (every
  `LOG_POLL_S`, and the rest when it ends). Every node of the cluster must reach the same database and
  object store, see the data dir at the same path (a shared filesystem: job folders, custom model weights)
  and run Outcrop with the same Python. A job's own process asks Ray for no resources, so it runs on the
  head; the Ray Train workers of a fine-tune take theirs.

What reaches Ray, where its dashboard and job API show it to whoever reaches them: the job's command line
(its id and the data dir), its metadata (the job id and attempt), and two environment variables,
OUTCROP_DATA_DIR and OUTCROP_CONFIG. The settings themselves, secrets included (the database URL and its
password, the S3 keys), are the server's as it resolved them (flags, OUTCROP_*, outcrop.toml) written to a
0600 file in the shared data dir (`ray/settings-<digest>.toml`, `job_settings_file`) that OUTCROP_CONFIG
names; the HTTP server's own settings and the root key are left out. A Ray node's own OUTCROP_* variables,
if it has any, win over that file, as the environment does over outcrop.toml.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any, Protocol

from outcrop.platform.config import ENV_PREFIX, Settings

log = logging.getLogger(__name__)

#: Exit statuses the runner reads from a Ray job's end (a Ray job has a status, not an exit status).
_RAY_EXIT = {"SUCCEEDED": 0, "FAILED": 1, "STOPPED": 143}
#: Seconds between two copies of a running Ray job's log into its job.log (each asks the head for the log).
LOG_POLL_S = 5.0
#: Settings a job's process never reads, kept off the file a Ray job is given: the HTTP server's (these, and
#: every http_*), and the root key that only a first start writes (the data dir is on the command line).
_SERVER_ONLY = frozenset({"data_dir", "host", "port", "tls", "tls_certfile", "tls_keyfile", "trusted_proxies",
                          "root_access_key_id", "root_secret_access_key", "preload_models"})


class Launcher(Protocol):
    def start(self, job_id: str, attempt: int, log_path: Path) -> int | None:
        """Start the job's process; returns its pid where it has one on this machine."""

    def ended(self, job_id: str) -> int | None:
        """The exit status once the job's process has ended (then it is forgotten), else None."""

    def terminate(self, job_id: str) -> None:
        """End the job's process now (SIGTERM, then SIGKILL after a grace period)."""

    def watched(self) -> list[str]:
        """The jobs whose processes this launcher watches."""

    def forget(self, job_id: str) -> None:
        """Stop watching a job (recovered by another server first), leaving its process alone."""

    def recover(self, job_id: str, attempt: int, pid: int | None) -> bool:
        """A job of a server that is gone: True when its process still runs and is watched from now on; else
        anything left of it is ended, and the runner requeues or fails it. Raises LauncherUnavailable when
        that cannot be known now (the Ray cluster does not answer): the job is left as it is, for later."""

    def close(self) -> None:
        """The server is stopping."""


class LauncherUnavailable(RuntimeError):
    """Where the jobs run cannot be asked now (the Ray head is down or refuses us)."""


def job_command(job_id: str, settings: Settings) -> list[str]:
    return [sys.executable, "-m", "outcrop.platform.job_process", job_id, "--data-dir", str(settings.data_dir)]


def open_launcher(settings: Settings) -> Launcher:
    if settings.job_backend == "ray":
        return RayJobs(settings)
    return LocalProcesses(settings)


class LocalProcesses:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._children: dict[str, subprocess.Popen] = {}

    def start(self, job_id: str, attempt: int, log_path: Path) -> int:
        with log_path.open("ab") as log_file:  # the child keeps its own handle
            child = subprocess.Popen(
                job_command(job_id, self.settings), stdin=subprocess.DEVNULL, stdout=log_file,
                stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "OUTCROP_DATA_DIR": str(self.settings.data_dir)})
        self._children[job_id] = child
        return child.pid

    def ended(self, job_id: str) -> int | None:
        code = self._children[job_id].poll()
        if code is not None:
            del self._children[job_id]
        return code

    def terminate(self, job_id: str) -> None:
        child = self._children.get(job_id)
        if child is not None:
            _terminate(child)

    def watched(self) -> list[str]:
        return list(self._children)

    def forget(self, job_id: str) -> None:
        self._children.pop(job_id, None)

    def recover(self, job_id: str, attempt: int, pid: int | None) -> bool:
        # A process is watched only by the server that started it (its exit status goes to its parent), so a
        # leftover one (the server was killed hard) is ended and the job starts over from its checkpoints.
        if pid and _is_our_child(pid, job_id):
            os.kill(pid, signal.SIGTERM)
        return False

    def close(self) -> None:
        for child in self._children.values():
            _terminate(child)


class RayJobs:
    def __init__(self, settings: Settings) -> None:
        try:
            import ray.job_submission  # noqa: F401 - checked here, used in `client`
        except ImportError as exc:  # an optional dependency: say which
            raise RuntimeError("job_backend = \"ray\" needs Ray's job client: pip install 'outcrop[ray]'") from exc
        if not settings.ray_address:
            raise RuntimeError("job_backend = \"ray\" needs ray_address (OUTCROP_RAY_ADDRESS): the Ray head's job "
                               "API, such as http://127.0.0.1:8265")
        self.settings = settings
        self._client = None
        self._submissions: dict[str, str] = {}  # job id -> this attempt's submission id
        self._logs: dict[str, Path] = {}
        self._copied: dict[str, int] = {}  # job id -> characters of Ray's log already in its job.log
        self._polled: dict[str, float] = {}  # job id -> when its log was last copied (time.monotonic)

    @property
    def client(self):  # noqa: ANN201 - Ray's JobSubmissionClient
        """Made on first use: it calls the head when made, and a server starts (and serves) while the head is
        down; its jobs wait for it."""
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            try:
                self._client = JobSubmissionClient(self.settings.ray_address)
            except Exception as exc:
                raise LauncherUnavailable(f"the Ray head at {self.settings.ray_address} does not answer: {exc}") \
                    from exc
        return self._client

    def _status(self, submission: str) -> str | None:
        """The submission's status (SUCCEEDED, RUNNING, ...), None when Ray does not know it (never submitted, or
        forgotten by a head restarted without its state); LauncherUnavailable when Ray cannot be asked."""
        try:
            status = self.client.get_job_status(submission)
        except LauncherUnavailable:
            raise
        except Exception as exc:
            if "does not exist" in str(exc):
                return None
            raise LauncherUnavailable(f"Ray could not say how {submission} is: {exc}") from exc
        return str(status).rsplit(".", 1)[-1]  # JobStatus.SUCCEEDED on some versions, SUCCEEDED on others

    @staticmethod
    def submission_id(job_id: str, attempt: int) -> str:
        return f"outcrop-{job_id}-{attempt}"

    def start(self, job_id: str, attempt: int, log_path: Path) -> None:
        submission = self.submission_id(job_id, attempt)
        env = job_environment(self.settings)
        try:
            self.client.submit_job(entrypoint=shlex.join(job_command(job_id, self.settings)),
                                   submission_id=submission, runtime_env={"env_vars": env},
                                   metadata={"outcrop_job_id": job_id, "attempt": str(attempt)})
        except OSError as exc:  # requests' connection errors and timeouts: the head is down, the job waits
            raise LauncherUnavailable(f"the Ray head at {self.settings.ray_address} does not answer: {exc}") \
                from exc
        except Exception as exc:
            if "already exists" not in str(exc):
                raise
            # An earlier submit of this attempt went through though its answer was lost: that one is the job.
        self._watch(job_id, submission, log_path)
        return None

    def _watch(self, job_id: str, submission: str, log_path: Path) -> None:
        self._submissions[job_id], self._logs[job_id] = submission, log_path
        self._copied[job_id] = _LogOffset(log_path).read(submission)  # what an earlier watcher already copied
        self._polled[job_id] = 0.0

    def ended(self, job_id: str) -> int | None:
        submission = self._submissions[job_id]
        status = self._status(submission)
        if status is None:  # the cluster lost it: as good as a process that died
            self.forget(job_id)
            return 1
        if status not in _RAY_EXIT:
            if time.monotonic() - self._polled[job_id] >= LOG_POLL_S:
                self._copy_log(job_id)
            return None
        self._copy_log(job_id, final=True)
        self.forget(job_id)
        return _RAY_EXIT[status]

    def _copy_log(self, job_id: str, final: bool = False) -> None:
        """Append what Ray's log of the job has beyond what its job.log already has."""
        submission, log_path = self._submissions[job_id], self._logs[job_id]
        self._polled[job_id] = time.monotonic()
        try:
            text = self.client.get_job_logs(submission)
        except Exception as exc:  # the job's ending matters more than its log; a running job's is read again
            if final:
                with log_path.open("a", encoding="utf-8", errors="replace") as out:
                    out.write(f"(Ray's log of {submission} could not be read: {exc})\n")
            return
        copied = self._copied.get(job_id, 0)
        if len(text) <= copied:
            return
        with log_path.open("a", encoding="utf-8", errors="replace") as out:
            out.write(text[copied:])
        self._copied[job_id] = len(text)
        _LogOffset(log_path).write(submission, len(text))

    def terminate(self, job_id: str) -> None:
        submission = self._submissions.get(job_id)
        if submission is not None:
            self.client.stop_job(submission)  # SIGTERM, then SIGKILL after Ray's grace period

    def watched(self) -> list[str]:
        return list(self._submissions)

    def forget(self, job_id: str) -> None:
        self._submissions.pop(job_id, None)
        self._logs.pop(job_id, None)
        self._copied.pop(job_id, None)
        self._polled.pop(job_id, None)

    def recover(self, job_id: str, attempt: int, pid: int | None) -> bool:
        from outcrop.platform.jobs import job_dir

        submission = self.submission_id(job_id, attempt)
        status = self._status(submission)  # None: never submitted (the server died in between), or forgotten
        if status is None or status in _RAY_EXIT:
            return False
        self._watch(job_id, submission, job_dir(self.settings, job_id) / "job.log")
        return True

    def close(self) -> None:
        """Ray jobs go on without the server: the one that recovers them watches them again."""
        self._submissions.clear()


def job_environment(settings: Settings) -> dict[str, str]:
    """The environment a Ray job is given: where the data dir is, and the file of its settings (no secret)."""
    return {ENV_PREFIX + "DATA_DIR": str(settings.data_dir),
            ENV_PREFIX + "CONFIG": str(job_settings_file(settings))}


def job_settings_file(settings: Settings) -> Path:
    """The server's settings as a job reads them, less `_SERVER_ONLY` and the defaults, in a file of the shared
    data dir that only its user reads (0600 in a 0700 folder), named by its content: servers and attempts with
    the same settings share one, and one that is written is never changed."""
    values: dict[str, Any] = {}
    for field in dataclasses.fields(Settings):
        value = getattr(settings, field.name)
        default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        if field.name not in _SERVER_ONLY and not field.name.startswith("http") and value != default:
            values[field.name] = str(value) if isinstance(value, Path) else value
    text = _toml(values)
    folder = settings.data_dir / "ray"
    path = folder / f"settings-{hashlib.sha256(text.encode()).hexdigest()[:16]}.toml"
    if not path.is_file():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = folder / f".{path.name}.{os.getpid()}"
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(partial, path)
    return path


def _toml(values: dict[str, Any]) -> str:
    """`values` (strings, numbers, tables of strings) as TOML, checked by reading it back."""
    def quoted(text: str) -> str:  # JSON's escapes are TOML's; DEL is a control character TOML wants escaped
        return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")

    lines, tables = ["# Written by the Outcrop server for its Ray jobs (launchers.job_settings_file).\n"], []
    for name, value in sorted(values.items()):
        if isinstance(value, dict):
            tables += [f"\n[{name}]\n", *(f"{quoted(k)} = {quoted(v)}\n" for k, v in sorted(value.items()))]
        else:
            lines.append(f"{name} = {quoted(value) if isinstance(value, str) else repr(value)}\n")
    text = "".join(lines + tables)
    if tomllib.loads(text) != values:
        raise ValueError("the settings could not be written as TOML for a Ray job")
    return text


class _LogOffset:
    """How much of a Ray submission's log a job.log holds, beside it: a server that recovers the job (or the
    same one restarted) goes on from there instead of copying it again."""

    def __init__(self, log_path: Path) -> None:
        self.path = log_path.with_name(log_path.name + ".ray-copied")

    def read(self, submission: str) -> int:
        try:
            saved = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return 0
        return int(saved.get("copied", 0)) if saved.get("submission") == submission else 0

    def write(self, submission: str, copied: int) -> None:
        partial = self.path.with_name(self.path.name + ".tmp")
        partial.write_text(json.dumps({"submission": submission, "copied": copied}))
        partial.replace(self.path)


def _terminate(child: subprocess.Popen, grace: float = 5.0) -> None:
    if child.poll() is not None:
        return
    child.terminate()
    try:
        child.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        child.kill()


def _is_our_child(pid: int, job_id: str) -> bool:
    """True if `pid` is still a job process for this job (pids are reused; the command line is not)."""
    try:
        return job_id in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
