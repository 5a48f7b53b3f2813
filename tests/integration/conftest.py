"""A real S3 API for the object-store tests: moto's standalone server, in its own process."""

from __future__ import annotations

import atexit
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from outcrop.platform.objectstore import S3ObjectStore

#: Dummy credentials, given explicitly so no test depends on ~/.aws or the environment.
ACCESS_KEY_ID = "AKIAOUTCROPTESTKEY00"
SECRET_ACCESS_KEY = "outcrop-test-secret"
REGION = "us-east-1"

_endpoint: str | None = None


def moto_endpoint_url() -> str:
    """Start moto once per test process (unit and integration tests share it) and return its URL."""
    global _endpoint
    if _endpoint is None:
        _endpoint = start_moto()
    return _endpoint


def start_moto() -> str:
    """A moto server of its own, stopped when the test process ends: its URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atexit.register(_stop, process)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
                break
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                raise TimeoutError("moto server did not answer within 30 s") from None
            time.sleep(0.05)
    return url


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


def reset_moto(url: str) -> None:
    """Forget every bucket, so each test starts from an empty S3."""
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=10).close()


def fresh_s3_store() -> S3ObjectStore:
    url = moto_endpoint_url()
    reset_moto(url)
    return S3ObjectStore(url, ACCESS_KEY_ID, SECRET_ACCESS_KEY, REGION)


@pytest.fixture
def moto_endpoint() -> str:
    """The moto server's URL, emptied for this test."""
    url = moto_endpoint_url()
    reset_moto(url)
    return url
