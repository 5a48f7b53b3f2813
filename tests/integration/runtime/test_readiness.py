"""Ready when up, and within the clients' timeouts under load, through a real `outcrop serve` and boto3."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from tests.conftest import register_model, start_server, stop_server

SMOLLM2 = "huggingface.smollm2-135m-instruct-v1:0"
MINILM = "sentence-transformers.all-minilm-l6-v2-v1:0"
UNKNOWN = "unknown.model-v1:0"
QUESTION = [{"role": "user", "content": [{"text": "What is the capital of France?"}]}]


def health(server) -> tuple[int, dict]:
    """GET /_outcrop/health, unsigned, as a load balancer asks."""
    try:
        with urllib.request.urlopen(server.endpoint + "/_outcrop/health", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_ready(server, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, body = health(server)
        if status == 200:
            return body
        assert time.monotonic() < deadline, f"not ready after {timeout} s: {body}"
        time.sleep(0.5)


def test_serve_preloads_the_built_in_models_and_reports_readiness(tmp_path):
    """A fresh data dir: health says loading (503) while SmolLM2 is converted and loaded in the background;
    a Converse sent meanwhile by a default boto3 client (60 s read timeout, standard retries) waits or is
    told ModelNotReadyException and retries, and succeeds; then health says ready (200). A restart of the
    same data dir finds the converted weights and does not convert again."""
    env = {"OUTCROP_PRELOAD_MODELS": f"{SMOLLM2},{MINILM}", "OUTCROP_MODEL_LOAD_WAIT_SECONDS": "30"}
    server = start_server(tmp_path / "data", env)
    try:
        status, body = health(server)
        assert (status, body) == (503, {"status": "loading", "models": {SMOLLM2: "loading", MINILM: "loading"}})
        client = server.client("bedrock-runtime", retries={"mode": "standard"})  # boto3's defaults otherwise
        started = time.monotonic()
        answer = client.converse(modelId=SMOLLM2, messages=QUESTION,
                                 inferenceConfig={"maxTokens": 20, "temperature": 0})
        waited = time.monotonic() - started
        assert "Paris" in answer["output"]["message"]["content"][0]["text"]
        print(f"first request answered after {waited:.1f} s, "
              f"{answer['ResponseMetadata']['RetryAttempts']} retries")
        body = wait_ready(server, 120)
        assert body == {"status": "ready", "models": {SMOLLM2: "ready", MINILM: "ready"}}
        # What the first start made of the GGUF file, once: the F16 copy llama.cpp serves where it is installed,
        # else the transformers folder it converts to.
        from outcrop.inference import llama_cpp

        cache = tmp_path / "data" / "models" / "gguf"
        made = [p for p in cache.iterdir() if p.name.endswith(".f16.gguf")] if llama_cpp.available() else \
            [p / "config.json" for p in cache.iterdir()]
        making = "writing an F16 copy" if llama_cpp.available() else "converting"
        assert len(made) == 1 and made[0].is_file()
        assert making in server.banner
    finally:
        stop_server(server)
    mtime = made[0].stat().st_mtime
    again = start_server(tmp_path / "data", env)
    try:
        started = time.monotonic()
        assert wait_ready(again, 120)["status"] == "ready"
        print(f"restart: ready {time.monotonic() - started:.1f} s after listening")
        assert making not in again.banner  # the cached conversion survived the restart
        assert made[0].stat().st_mtime == mtime
        assert again.client("bedrock-runtime").converse(
            modelId=SMOLLM2, messages=QUESTION, inferenceConfig={"maxTokens": 5})["usage"]["outputTokens"] <= 5
    finally:
        stop_server(again)


@pytest.fixture(scope="module")
def busy_server(tmp_path_factory):
    """A server that answers at once when a model is not loaded (wait 0), with two places in the batch and
    a one-second bound on the wait for one, told to preload a model that does not exist; and an endless
    model (answers run to maxTokens)."""
    from tests.helpers import make_endless_llama

    env = {"OUTCROP_MODEL_LOAD_WAIT_SECONDS": "0", "OUTCROP_MAX_BATCH_SEQUENCES": "2",
           "OUTCROP_MAX_QUEUE_WAIT_SECONDS": "1", "OUTCROP_PRELOAD_MODELS": UNKNOWN}
    server = start_server(tmp_path_factory.mktemp("busy-data"), env)
    model = register_model(server, "endless", make_endless_llama(tmp_path_factory.mktemp("endless")))
    yield server, model
    stop_server(server)


def test_a_request_while_its_model_loads_gets_model_not_ready_and_a_retry_succeeds(busy_server):
    server, model = busy_server
    # A preload that failed keeps the server out of rotation, and says why by the error's type only.
    deadline = time.monotonic() + 30
    while health(server)[1]["status"] == "loading" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert health(server) == (503, {"status": "failed", "models": {UNKNOWN: "failed: ResourceNotFoundException"}})
    once = server.client("bedrock-runtime")  # no retries
    with pytest.raises(ClientError) as raised:
        once.converse(modelId=model, messages=QUESTION, inferenceConfig={"maxTokens": 3})
    error = raised.value.response
    assert error["Error"]["Code"] == "ModelNotReadyException"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 429
    retrying = server.client("bedrock-runtime", retries={"mode": "standard", "max_attempts": 10})
    answer = retrying.converse(modelId=model, messages=QUESTION, inferenceConfig={"maxTokens": 3})
    assert answer["usage"]["outputTokens"] == 3


def test_a_request_that_cannot_start_in_time_is_throttled_before_its_response_begins(busy_server):
    server, model = busy_server
    retrying = server.client("bedrock-runtime", retries={"mode": "standard", "max_attempts": 10})
    retrying.converse(modelId=model, messages=QUESTION, inferenceConfig={"maxTokens": 1})  # loaded
    once = server.client("bedrock-runtime", max_pool_connections=20)
    # Two endless streams take both places; a stream's response begins once its request is in the batch.
    streams = [once.converse_stream(modelId=model, messages=QUESTION, inferenceConfig={"maxTokens": 10_000})
               for _ in range(2)]
    try:
        started = time.monotonic()
        with pytest.raises(ClientError) as raised:
            once.converse(modelId=model, messages=QUESTION, inferenceConfig={"maxTokens": 3})
        assert 1 <= time.monotonic() - started < 15
        error = raised.value.response
        assert error["Error"] == {"Code": "ThrottlingException",
                                  "Message": "Too many requests, please wait before trying again."}
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 429
        # A stream that cannot start is refused with an HTTP error boto3 can retry, not inside the stream.
        with pytest.raises(ClientError) as raised:
            once.converse_stream(modelId=model, messages=QUESTION, inferenceConfig={"maxTokens": 3})
        assert raised.value.response["Error"]["Code"] == "ThrottlingException"
    finally:
        for response in streams:
            response["stream"].close()  # the client hangs up: both places free up
    assert retrying.converse(modelId=model, messages=QUESTION, inferenceConfig={"maxTokens": 3})[
        "usage"]["outputTokens"] == 3


def test_a_flood_beyond_the_batch_is_answered_within_the_bound(busy_server):
    """Eight clients at once for two places: each is answered, or throttled about a second after it asked,
    never left waiting for a place until its read timeout."""
    server, model = busy_server
    retrying = server.client("bedrock-runtime", retries={"mode": "standard", "max_attempts": 10})
    retrying.converse(modelId=model, messages=QUESTION, inferenceConfig={"maxTokens": 1})  # loaded
    clients = [server.client("bedrock-runtime") for _ in range(8)]
    outcomes: list[tuple[str, float]] = []
    lock = threading.Lock()

    def ask(client) -> None:
        started = time.monotonic()
        try:
            # Greedy, so the endless model runs to maxTokens: seconds, several times the bound on the wait.
            client.converse(modelId=model, messages=QUESTION, inferenceConfig={"maxTokens": 2000, "temperature": 0})
            outcome = "answered"
        except ClientError as exc:
            outcome = exc.response["Error"]["Code"]
        except BotoCoreError as exc:  # a read timeout: what the bound is there to prevent
            outcome = type(exc).__name__
        with lock:
            outcomes.append((outcome, time.monotonic() - started))

    threads = [threading.Thread(target=ask, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    kinds = {kind for kind, _ in outcomes}
    assert len(outcomes) == 8 and kinds <= {"answered", "ThrottlingException"}, outcomes
    assert "answered" in kinds and "ThrottlingException" in kinds, outcomes
    assert all(seconds < 15 for kind, seconds in outcomes if kind == "ThrottlingException"), outcomes
