"""Bounded work: what one client can make the server spend, and for how long.

A hung-up client stops its generation (streaming or not) and is billed for what was generated; an
output budget beyond the model's context is refused; provisioned model units have a per-account
quota; a connection that never completes its request headers is closed.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.parse
import uuid
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.backends import query
from tests.conftest import register_model, start_server, stop_server
from tests.helpers import make_endless_llama
from tests.integration.security.helpers import QUESTION, error_code

#: An answer the long model takes tens of seconds to write (decoding the text so far each step makes
#: the steps slower as it grows), so that a hang-up after half a second lands mid-answer on any machine.
LONG_ANSWER = 16_000


@pytest.fixture(scope="module")
def long_model(server, tmp_path_factory) -> str:
    """A model whose greedy answers run to max_tokens, slowly enough to hang up in the middle."""
    model = register_model(server, "tiny-llama-endless", make_endless_llama(tmp_path_factory.mktemp("endless")))
    # Loaded before any test hangs up: the first call pays the load, not the generation under test.
    server.client("bedrock-runtime").converse(modelId=model, messages=QUESTION, inferenceConfig={"maxTokens": 1})
    return model


def signed(server, path: str, document: dict) -> bytes:
    """A complete, SigV4-signed HTTP/1.1 POST as bytes, to send on a socket of our own."""
    body = json.dumps(document).encode()
    host = urlsplit(server.endpoint).netloc
    request = AWSRequest(method="POST", url=server.endpoint + path, data=body,
                         headers={"Content-Type": "application/json", "Host": host})
    SigV4Auth(Credentials(*server.root_key()), "bedrock", "us-east-1").add_auth(request)
    headers = "".join(f"{name}: {value}\r\n" for name, value in request.headers.items())
    return f"POST {path} HTTP/1.1\r\n{headers}Content-Length: {len(body)}\r\n\r\n".encode() + body


def connect(server) -> socket.socket:
    parts = urlsplit(server.endpoint)
    return socket.create_connection((parts.hostname, parts.port), timeout=30)


def usage_row(server, session_id: str, timeout: float) -> tuple[str, int] | None:
    """(status, output tokens) of the usage record tagged with this sessionId, once there is one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = next(iter(query(server.data_dir, "SELECT status, output_tokens FROM usage_records WHERE session_id = ?",
                              session_id)), None)
        if row is not None:
            return row
        time.sleep(0.1)
    return None


def converse_document(session_id: str, max_tokens: int) -> dict:
    return {"messages": QUESTION, "inferenceConfig": {"maxTokens": max_tokens, "temperature": 0},
            "requestMetadata": {"sessionId": session_id}}


# -- a client that hangs up ------------------------------------------------------------------------

def test_a_hung_up_converse_stops_its_generation(server, long_model):
    session_id = f"hangup-{uuid.uuid4()}"
    path = f"/model/{urllib.parse.quote(long_model, safe='')}/converse"
    with connect(server) as sock:
        sock.sendall(signed(server, path, converse_document(session_id, LONG_ANSWER)))
        time.sleep(0.5)  # the model is generating; the client gives up and closes its socket
    hung_up = time.monotonic()
    row = usage_row(server, session_id, timeout=8)
    assert row is not None, "the generation went on after its client hung up"
    status, tokens = row
    assert status == "Cancelled"
    assert 0 < tokens < LONG_ANSWER, tokens
    assert time.monotonic() - hung_up < 8


def test_a_hung_up_stream_stops_and_counts_what_it_generated(server, long_model):
    session_id = f"hangup-stream-{uuid.uuid4()}"
    path = f"/model/{urllib.parse.quote(long_model, safe='')}/converse-stream"
    with connect(server) as sock:
        sock.sendall(signed(server, path, converse_document(session_id, LONG_ANSWER)))
        received = b""
        while b"contentBlockDelta" not in received:  # some text has arrived: the model is generating
            chunk = sock.recv(65536)
            assert chunk, "the server closed the stream"
            received += chunk
        assert received.startswith(b"HTTP/1.1 200")
    row = usage_row(server, session_id, timeout=8)
    assert row is not None, "the stream went on after its client hung up"
    status, tokens = row
    assert status == "Cancelled"
    assert 0 < tokens < LONG_ANSWER, tokens  # what was generated, not 0


# -- max_tokens beyond the context window ----------------------------------------------------------

def test_an_explicit_max_tokens_beyond_the_context_is_refused(runtime, tiny_model):
    def converse(max_tokens):
        return lambda: runtime.converse(modelId=tiny_model, messages=QUESTION,
                                        inferenceConfig={"maxTokens": max_tokens})

    def invoke(document):
        return lambda: runtime.invoke_model(modelId=tiny_model, body=json.dumps(document))

    code, status, message = error_code(converse(100_000))
    assert (code, status) == ("ValidationException", 400)
    assert "maxTokens" in message and "model limit of 256" in message
    _, _, message = error_code(invoke({"prompt": "hello", "max_gen_len": 1000}))
    assert "#/max_gen_len: 1000 is not less or equal to 256" in message
    _, _, message = error_code(invoke({"prompt": "hello", "max_tokens": 300}))
    assert "#/max_tokens: 300 is not less or equal to 256" in message
    _, _, message = error_code(invoke({"inputText": "hello", "textGenerationConfig": {"maxTokenCount": 257}}))
    assert "#/textGenerationConfig/maxTokenCount: 257 is not less or equal to 256" in message
    # Anthropic counts the prompt too, as Anthropic does.
    _, _, message = error_code(invoke({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 250,
                                       "messages": [{"role": "user", "content": "hello world, this is a test"}]}))
    assert "input length and `max_tokens` exceed context limit" in message and "> 256" in message


def test_a_budget_that_fits_or_is_defaulted_still_answers(runtime, tiny_model):
    # No maxTokens: the default (512) is larger than the window (256) and is clamped, not refused.
    assert runtime.converse(modelId=tiny_model, messages=QUESTION)["usage"]["outputTokens"] > 0
    answer = runtime.converse(modelId=tiny_model, messages=QUESTION, inferenceConfig={"maxTokens": 256})
    assert answer["usage"]["inputTokens"] + answer["usage"]["outputTokens"] <= 256


# -- provisioned model units -----------------------------------------------------------------------

def test_model_units_beyond_the_account_quota_are_refused(server, second_account, tiny_model):
    bedrock = server.client("bedrock", key=second_account[1])

    def create(name, units):
        return lambda: bedrock.create_provisioned_model_throughput(
            modelUnits=units, provisionedModelName=name, modelId=tiny_model)

    code, status, message = error_code(create("huge", 1_000_000_000))
    assert (code, status) == ("ServiceQuotaExceededException", 400)
    assert "16 model units" in message
    first = create("first", 10)()["provisionedModelArn"]
    try:
        # The quota is a sum over the account's live throughputs: 10 + 7 > 16.
        assert error_code(create("second", 7))[0] == "ServiceQuotaExceededException"
        second = create("second", 6)()["provisionedModelArn"]
        bedrock.delete_provisioned_model_throughput(provisionedModelId=second)
    finally:
        bedrock.delete_provisioned_model_throughput(provisionedModelId=first)
    # Deleted throughputs no longer count.
    again = create("again", 16)()["provisionedModelArn"]
    bedrock.delete_provisioned_model_throughput(provisionedModelId=again)


# -- connections -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def impatient_server(tmp_path_factory):
    running = start_server(tmp_path_factory.mktemp("impatient"), {"OUTCROP_HTTP_HEADER_TIMEOUT_SECONDS": "1"})
    yield running
    stop_server(running)


def closed_after(sock: socket.socket, trickle: bytes = b"", limit: float = 10) -> float:
    """Seconds until the server closes `sock`, sending `trickle` a byte every 0.2 s meanwhile."""
    started = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - started < limit:
        if trickle:
            sock.sendall(trickle[:1])
            trickle = trickle[1:]
        try:
            if sock.recv(1024) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic() - started
    raise AssertionError(f"the connection was still open after {limit}s")


def test_partial_headers_are_closed_within_the_timeout(impatient_server):
    with connect(impatient_server) as sock:
        sock.sendall(b"GET /foundation-models HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        assert closed_after(sock) < 4
    with connect(impatient_server) as sock:  # a byte now and then does not keep it open either
        assert closed_after(sock, trickle=b"GET /foundation-models HTTP/1.1\r\nX-Slow: " + b"a" * 100) < 4
    with connect(impatient_server) as sock:  # nor does saying nothing at all
        assert closed_after(sock) < 4
    with connect(impatient_server) as sock:  # nor, over HTTP/2 by prior knowledge, the preface alone
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000"))  # + empty SETTINGS
        assert closed_after(sock) < 4
    # A complete request is still answered, however slow its handler.
    status, _, body = impatient_server.raw("GET", "/foundation-models")
    assert status == 200 and body["modelSummaries"]
