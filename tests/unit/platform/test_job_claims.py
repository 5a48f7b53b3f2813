"""Jobs with several servers on one database: a queued job is claimed by one server only, and a job whose
server died is requeued by another, while a live server's jobs stay its own."""

from __future__ import annotations

import time

from sqlalchemy import update

from outcrop.platform.config import load_settings
from outcrop.platform.database import utc_now
from outcrop.platform.jobs import JobRunner
from outcrop.platform.presence import STALE_SECONDS, Presence
from outcrop.platform.tables import JobRow, JobState, ServerRow


def _job(db, job_id: str, state: str, server_id: str | None = None) -> None:
    with db.session() as session:
        session.add(JobRow(job_id=job_id, account_id="111111111111", entry_point="x:y", spec={}, state=state,
                           attempt=1 if state == JobState.RUNNING else 0, stop_requested=False,
                           server_id=server_id, created_at=utc_now(), updated_at=utc_now()))


def _state(db, job_id: str) -> tuple[str, str | None]:
    with db.session() as session:
        row = session.get(JobRow, job_id)
        return row.state, row.server_id


def test_a_queued_job_is_claimed_once(db, tmp_path):
    settings = load_settings(data_dir=tmp_path)
    first, second = (JobRunner(db, settings, 1, Presence(db)) for _ in range(2))
    _job(db, "j1", JobState.QUEUED)
    with db.session() as session:  # both servers read the job while it was queued
        seen = session.get(JobRow, "j1")
    assert first._claim(seen) and not second._claim(seen)
    assert _state(db, "j1") == (JobState.RUNNING, first.presence.server_id)


def test_jobs_of_a_dead_server_are_requeued_and_a_live_ones_are_not(db, tmp_path):
    alive, dead, me = Presence(db), Presence(db), Presence(db)
    with db.session() as session:
        session.execute(update(ServerRow).where(ServerRow.server_id == dead.server_id)
                        .values(seen_at=time.time() - 2 * STALE_SECONDS))
    _job(db, "live", JobState.RUNNING, alive.server_id)
    _job(db, "orphan", JobState.RUNNING, dead.server_id)
    _job(db, "gone", JobState.RUNNING, "a-server-forgotten-long-ago")
    JobRunner(db, load_settings(data_dir=tmp_path), 1, me).recover()
    assert _state(db, "live") == (JobState.RUNNING, alive.server_id)
    assert _state(db, "orphan") == (JobState.QUEUED, None)
    assert _state(db, "gone") == (JobState.QUEUED, None)


def test_an_orphan_taken_over_meanwhile_is_left_to_its_new_server(db, tmp_path):
    _job(db, "j", JobState.RUNNING, "dead-server")
    with db.session() as session:
        seen = session.get(JobRow, "j")  # read as an orphan by a recovering server...
    with db.session() as session:  # ...which another server requeued and claimed in the meantime
        session.execute(update(JobRow).where(JobRow.job_id == "j").values(server_id="new-server", attempt=2))
    assert not JobRunner(db, load_settings(data_dir=tmp_path), 1, Presence(db))._take_over(seen, JobState.QUEUED, None)
    assert _state(db, "j") == (JobState.RUNNING, "new-server")


class _Cluster:
    """A launcher whose jobs run elsewhere (as on Ray): `running` ones outlive their server; `down` makes every
    call fail as a Ray head that does not answer does."""

    def __init__(self, running: set[str] = frozenset(), down: bool = False) -> None:
        self.running, self.down, self.watching = set(running), down, []

    def _check(self) -> None:
        from outcrop.platform.launchers import LauncherUnavailable

        if self.down:
            raise LauncherUnavailable("the head does not answer")

    def start(self, job_id, attempt, log_path):
        self._check()
        self.watching.append(job_id)

    def recover(self, job_id, attempt, pid):
        self._check()
        if job_id in self.running:
            self.watching.append(job_id)
            return True
        return False

    def watched(self):
        return list(self.watching)

    def forget(self, job_id):
        self.watching.remove(job_id)

    def close(self):
        pass


def test_a_job_still_running_elsewhere_is_adopted_and_an_unreachable_cluster_changes_nothing(db, tmp_path):
    settings = load_settings(data_dir=tmp_path)
    _job(db, "still-running", JobState.RUNNING, "dead-server")
    _job(db, "ended", JobState.RUNNING, "dead-server")
    me = Presence(db)
    JobRunner(db, settings, 1, Presence(db), launcher=_Cluster(down=True)).recover()
    assert _state(db, "still-running") == _state(db, "ended") == (JobState.RUNNING, "dead-server")  # for later
    cluster = _Cluster(running={"still-running"})
    JobRunner(db, settings, 1, me, launcher=cluster).recover()
    assert _state(db, "still-running") == (JobState.RUNNING, me.server_id) and cluster.watching == ["still-running"]
    assert _state(db, "ended") == (JobState.QUEUED, None)


def test_a_job_that_cannot_start_goes_back_to_the_queue_as_it_was(db, tmp_path):
    _job(db, "j", JobState.QUEUED)
    runner = JobRunner(db, load_settings(data_dir=tmp_path), 1, Presence(db), launcher=_Cluster(down=True))
    runner._launch()
    with db.session() as session:
        row = session.get(JobRow, "j")
        assert (row.state, row.attempt, row.server_id) == (JobState.QUEUED, 0, None)
    runner._launch()  # not tried again at once
    runner.launcher.down = False
    runner._launch_after = 0.0
    runner._launch()
    assert _state(db, "j") == (JobState.RUNNING, runner.presence.server_id) and runner.launcher.watching == ["j"]
