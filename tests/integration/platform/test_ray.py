"""Jobs on a Ray cluster (job_backend = "ray"): a local Ray head with 2 CPUs, started as a user starts one
(`ray start --head`, token authentication on), and a server that submits its jobs there.

A fine-tune on 2 Ray Train workers takes the steps the same fine-tune takes on 1 worker, and it outlives the
server that submitted it: stopped mid-job, the next server watches it to the end instead of starting it over.
"""

from __future__ import annotations

import csv
import io
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.backends import objects, query
from tests.conftest import free_port, register_model, start_server, stop_server
from tests.integration.customization.test_customization import create, outcrop, wait

pytest.importorskip("ray.job_submission")

PAIRS = [("What colour is the sky?", "blue sky"), ("What do cows drink?", "fresh water"),
         ("Name a fruit.", "red apple"), ("Where do fish live?", "in the sea"),
         ("What is hot?", "the sun"), ("What falls in winter?", "white snow")]


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head on loopback with 2 CPUs; yields its job API address and the token its clients need."""
    token = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env = {**os.environ, **token, "RAY_USAGE_STATS_ENABLED": "0"}
    temp = tempfile.mkdtemp(prefix="ray-")  # short: Ray's socket paths live under it
    ray = str(Path(sys.executable).with_name("ray"))
    dashboard = free_port()
    started = subprocess.run(
        [ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={free_port()}", "--num-cpus=2",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
         f"--dashboard-agent-listen-port={free_port()}", f"--ray-client-server-port={free_port()}",
         f"--temp-dir={temp}", "--disable-usage-stats"], env=env, capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield f"http://127.0.0.1:{dashboard}", token
    finally:
        # `ray stop` has no address: it stops every Ray process of this user on the machine (a developer's own
        # local Ray too), which is why the suite starts only this one.
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


def losses(data_dir: Path, job_arn: str) -> list[float]:
    job_id = job_arn.rsplit("/", 1)[-1]
    (body,) = objects(data_dir, f"s3://ft-data/out/model-customization-job-{job_id}/",
                      "step_wise_training_metrics.csv").values()
    return [float(row["training_loss"]) for row in csv.DictReader(io.StringIO(body.decode()))]


def test_a_two_worker_fine_tune_on_ray_matches_one_worker_and_outlives_its_server(ray_head, tmp_path_factory,
                                                                                   tiny_model_dir):
    address, token = ray_head
    data = tmp_path_factory.mktemp("ray-data")
    env = {"OUTCROP_JOB_BACKEND": "ray", "OUTCROP_RAY_ADDRESS": address, "OUTCROP_TORCH_THREADS": "1", **token}
    server = start_server(data, env)
    try:
        model = register_model(server, "tiny-llama", tiny_model_dir)
        folder = tmp_path_factory.mktemp("ft-datasets")
        (folder / "train.jsonl").write_text("".join(f'{{"prompt": "{p}", "completion": "{c}"}}\n' for p, c in PAIRS
                                                    for _ in range(2)))
        outcrop(data, "s3", "mb", "s3://ft-data")
        outcrop(data, "s3", "cp", str(folder / "train.jsonl"), "s3://ft-data/train/train.jsonl")  # where create() reads
        role = outcrop(data, "iam", "create-role", "--name", "ray-role", "--s3-access", "ft-data").strip()
        bedrock = server.client("bedrock")
        # Three rows a step: the two workers get two and one; no dropout, so only float rounding differs.
        hyper = {"epochCount": "2", "batchSize": "3", "loraDropout": "0"}
        alone = create(bedrock, model, role, "train.jsonl", **hyper)
        assert wait(bedrock, alone)["status"] == "Completed"
        together = create(bedrock, model, role, "train.jsonl", workerCount="2", **hyper)
        deadline = time.monotonic() + 120
        while bedrock.get_model_customization_job(jobIdentifier=together)["status"] != "InProgress" \
                or not query(data, "SELECT 1 FROM jobs WHERE state = 'RUNNING'"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        stop_server(server)  # the Ray job goes on without it
    (runner_job,) = query(data, "SELECT runner_job_id FROM customization_jobs WHERE job_arn = ?", together)[0]
    assert query(data, "SELECT state FROM jobs WHERE job_id = ?", runner_job) == [("RUNNING",)]

    server = start_server(data, env)
    log = data / "jobs" / runner_job / "job.log"
    try:
        job = wait(server.client("bedrock"), together)
        assert job["status"] == "Completed", job.get("failureMessage")
        deadline = time.monotonic() + 30
        while not log.exists():  # copied from Ray's log when the server sees the Ray job end
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        stop_server(server)
    # Watched to the end by the second server, not started over: one attempt, one Ray submission.
    assert query(data, "SELECT state, attempt FROM jobs WHERE job_id = ?", runner_job) == [("SUCCEEDED", 1)]
    log = log.read_text()
    assert f"outcrop-{runner_job}-1" in log and "world_rank=1" in log
    one, two = losses(data, alone), losses(data, together)
    assert len(one) == len(two) == 8  # 12 rows, 3 a step, 2 epochs
    assert two == pytest.approx(one, rel=1e-4)
