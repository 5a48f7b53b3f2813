"""Fixtures shared by the suite: a real `outcrop serve` on a loopback port, and clients for it."""

from __future__ import annotations

import configparser
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from tests import backends

# No test may reach the network: the hub is off for every model load in this process and children.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listened on port {port} within {timeout}s")


@dataclass
class RunningServer:
    endpoint: str
    data_dir: Path
    process: subprocess.Popen
    #: Everything the server printed so far (a thread drains the pipe so the server never blocks).
    output: list[str]

    @property
    def banner(self) -> str:
        return "".join(self.output)

    def root_key(self) -> tuple[str, str]:
        """The root access key the server wrote to `<data dir>/credentials` on first start."""
        parser = configparser.ConfigParser()
        parser.read(self.data_dir / "credentials")
        return parser["outcrop"]["aws_access_key_id"], parser["outcrop"]["aws_secret_access_key"]

    def client(self, service: str, key: tuple[str, str] | None = None, **config):
        """A real boto3 client for one of the four services, signed with `key` (default: the root key)."""
        key_id, secret = key or self.root_key()
        return boto3.client(
            service, endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=key_id, aws_secret_access_key=secret,
            config=Config(**{"retries": {"max_attempts": 1}, **config}))

    def raw(self, method: str, path: str, body: bytes | None = None, key: tuple[str, str] | None = None,
            sign: bool = True, headers: dict[str, str] | None = None):
        """A plain HTTP request (SigV4-signed with botocore unless sign=False).

        Returns (status, headers with case-insensitive lookup, JSON body)."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        request = AWSRequest(method=method, url=self.endpoint + path, data=body or b"", headers=headers or {})
        if sign:
            SigV4Auth(Credentials(*(key or self.root_key())), "bedrock", "us-east-1").add_auth(request)
        prepared = urllib.request.Request(self.endpoint + path, data=body, method=method,
                                          headers=dict(request.headers.items()))
        try:
            with urllib.request.urlopen(prepared, timeout=60) as response:
                return response.status, response.headers, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            return error.code, error.headers, json.loads(error.read() or b"{}")

    def cli_env(self) -> dict[str, str]:
        """Environment for the AWS CLI as the README tells a user to set it up."""
        env = dict(os.environ)
        env.update(AWS_SHARED_CREDENTIALS_FILE=str(self.data_dir / "credentials"),
                   AWS_CONFIG_FILE=str(self.data_dir / "config"), AWS_PROFILE="outcrop")
        return env

    def aws(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "awscli", *args, "--endpoint-url", self.endpoint],
                              capture_output=True, text=True, env=self.cli_env(), timeout=120)


def prepare_data_dir(data_dir: Path) -> Path:
    """A data dir set up for the services this run selected (tests/backends.py), for a test that runs the CLI on
    it before any server starts there (start_server does this itself)."""
    backends.configure(data_dir, _postgres)
    return data_dir


def start_server(data_dir: Path, extra_env: dict[str, str] | None = None) -> RunningServer:
    port = free_port()
    # An empty hub cache, so that "not downloaded" means the same on every machine.
    # No preloading unless a test asks for it: every test server would convert and load SmolLM2. A first
    # request waits for its model's load as long as the `runtime` client's read timeout allows, since the
    # tests' clients do not retry ModelNotReadyException (and converting SmolLM2 takes longer than 30 s).
    env = {**os.environ, "HF_HUB_CACHE": str(data_dir / "hf-hub-cache"), "OUTCROP_PRELOAD_MODELS": "",
           "OUTCROP_MODEL_LOAD_WAIT_SECONDS": "240",
           # Agents' steps: SmolLM2 may ramble in a final answer to the limit; the tests check the platform, and
           # 120 tokens hold any call they make (the limit's own behaviour is tests/unit/agents').
           "OUTCROP_AGENT_STEP_TOKENS": "120", **(extra_env or {})}
    prepare_data_dir(data_dir)
    env.pop("OUTCROP_DATA_DIR", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "outcrop", "serve", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    output: list[str] = []
    threading.Thread(target=lambda: output.extend(iter(process.stdout.readline, "")), daemon=True).start()
    wait_for_port(port, process)
    scheme = "https" if env.get("OUTCROP_TLS") == "on" else "http"
    return RunningServer(f"{scheme}://127.0.0.1:{port}", data_dir, process, output)


def stop_server(server: RunningServer) -> int:
    server.process.terminate()
    try:
        return server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        raise
    finally:  # what the server said, for whoever reads a failure later (`pytest --basetemp=...`)
        (server.data_dir / "server-output.log").write_text("".join(server.output))


#: The PostgreSQL server every test server runs on, with OUTCROP_TEST_DATABASE=postgresql (tests/backends.py).
_postgres: backends.PostgresServer | None = None


@pytest.fixture(scope="session", autouse=True)
def _database() -> Iterator[None]:
    global _postgres
    if not backends.wanted():
        yield
        return
    _postgres = backends.PostgresServer(free_port())
    try:
        yield
    finally:
        _postgres.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("outcrop-data"))
    yield running
    stop_server(running)


@pytest.fixture(scope="session")
def bedrock(server):
    return server.client("bedrock")


def register_model(server: RunningServer, name: str, path: Path) -> str:
    """Add a model folder to a running server's catalog the way a user does, returning its id."""
    result = subprocess.run([sys.executable, "-m", "outcrop", "models", "register", name, str(path),
                             "--data-dir", str(server.data_dir)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer random-weight Llama with a tokenizer trained in the test, as a HF folder."""
    from tests.helpers import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_model(server, tiny_model_dir) -> str:
    """The tiny Llama's model id in `server`'s catalog."""
    return register_model(server, "tiny-llama", tiny_model_dir)


@pytest.fixture(scope="session")
def runtime(server):
    return server.client("bedrock-runtime", read_timeout=300)


def pytest_collection_modifyitems(config, items) -> None:
    """Every integration test starts a server (Outcrop's, or an S3 one): all are `slow`, so that
    `pytest -m "not slow"` is the quick loop of unit tests. `make test` runs everything."""
    for item in items:
        if "integration" in item.path.relative_to(config.rootpath).parts:
            item.add_marker(pytest.mark.slow)
