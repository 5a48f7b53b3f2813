"""What a Ray job is given (no secret in what Ray shows), and its log copied into job.log while it runs."""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

import pytest

from outcrop.platform import launchers
from outcrop.platform.config import ENV_PREFIX, Settings, load_settings
from outcrop.platform.jobs import job_dir
from outcrop.platform.launchers import RayJobs

SECRETS = {"database_url": "postgresql://outcrop:pa55word@db/outcrop", "s3_access_key_id": "AKIAS3KEY",
           "s3_secret_access_key": "s3-secret-value", "root_secret_access_key": "root-secret-value"}


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
    for field in dataclasses.fields(Settings):  # the server's environment, as an operator set it
        monkeypatch.delenv(ENV_PREFIX + field.name.upper(), raising=False)
    monkeypatch.delenv(ENV_PREFIX + "CONFIG", raising=False)
    for name, value in {**SECRETS, "root_access_key_id": "AKIAROOT", "torch_threads": "1", "job_backend": "ray",
                        "ray_address": "http://127.0.0.1:1", "port": "9000",
                        "model_aliases": '{"a.model-v1:0": "tiny"}'}.items():
        monkeypatch.setenv(ENV_PREFIX + name.upper(), value)
    (tmp_path / "outcrop.toml").write_text('s3_endpoint = "http://s3:9000"\nmax_running_jobs = 2\n')
    return load_settings(data_dir=tmp_path)


class FakeRay:
    def __init__(self) -> None:
        self.submitted: dict = {}
        self.log, self.status = "", "RUNNING"
        self.log_reads = 0

    def submit_job(self, **kwargs) -> str:
        self.submitted = kwargs
        return kwargs["submission_id"]

    def get_job_status(self, submission: str) -> str:
        return self.status

    def get_job_logs(self, submission: str) -> str:
        self.log_reads += 1
        return self.log


def test_a_ray_job_is_given_no_secret_and_reads_the_servers_settings_from_a_private_file(settings, monkeypatch):
    jobs = RayJobs(settings)
    jobs._client = fake = FakeRay()
    jobs.start("job1", 1, settings.data_dir / "job.log")
    shown = repr(fake.submitted)  # what Ray's dashboard and job API show: entrypoint, runtime_env, metadata
    assert not [value for value in (*SECRETS.values(), "AKIAS3KEY") if value in shown]
    env = fake.submitted["runtime_env"]["env_vars"]
    assert set(env) == {"OUTCROP_DATA_DIR", "OUTCROP_CONFIG"}
    path = Path(env["OUTCROP_CONFIG"])
    assert path.parent.parent == settings.data_dir and stat.S_IMODE(path.stat().st_mode) == 0o600
    # The job, on a Ray node with no OUTCROP_* of its own, resolves what the server resolved.
    for name in os.environ.copy():
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OUTCROP_CONFIG", env["OUTCROP_CONFIG"])
    job = load_settings(data_dir=env["OUTCROP_DATA_DIR"])
    for field in dataclasses.fields(Settings):
        if field.name not in launchers._SERVER_ONLY and not field.name.startswith("http"):
            assert getattr(job, field.name) == getattr(settings, field.name), field.name
    assert (job.root_secret_access_key, job.root_access_key_id, job.port) == ("", "", 8600)  # never sent
    jobs.start("job2", 1, settings.data_dir / "job2.log")  # the same settings: the same file
    assert fake.submitted["runtime_env"]["env_vars"]["OUTCROP_CONFIG"] == str(path)


def test_a_running_ray_jobs_log_is_copied_as_it_grows_and_a_recovering_server_goes_on_from_there(settings,
                                                                                                 monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(launchers.time, "monotonic", lambda: clock[0])
    log_path = job_dir(settings, "job1") / "job.log"  # where a recovering server finds it
    log_path.parent.mkdir(parents=True)
    jobs = RayJobs(settings)
    jobs._client = fake = FakeRay()
    jobs.start("job1", 1, log_path)
    fake.log = "loading\n"
    assert jobs.ended("job1") is None and log_path.read_text() == "loading\n"
    fake.log += "step 1\n"
    clock[0] += 1  # polled at most every LOG_POLL_S
    assert jobs.ended("job1") is None and log_path.read_text() == "loading\n" and fake.log_reads == 1
    clock[0] += launchers.LOG_POLL_S
    assert jobs.ended("job1") is None and log_path.read_text() == "loading\nstep 1\n"
    # The server stops; another recovers the job and copies only what is new.
    jobs.close()
    other = RayJobs(settings)
    other._client = fake
    fake.log += "step 2\n"
    assert other.recover("job1", 1, None)
    fake.log += "done\n"
    fake.status = "SUCCEEDED"
    assert other.ended("job1") == 0
    assert log_path.read_text() == "loading\nstep 1\nstep 2\ndone\n"
    assert other.watched() == []
