"""HTTP/2 on the server's one port: h2c by prior knowledge and by `Upgrade: h2c`, h2 by ALPN under TLS,
HTTP/1.1 still, and event streams over HTTP/2.

The AWS SDK for JavaScript v3 opens HTTP/2 by default (prior knowledge on http://, ALPN on https://).
The client here is the h2 library over a socket of our own, so that every way in is driven exactly;
requests are SigV4-signed with botocore as the SDKs sign them.
"""

from __future__ import annotations

import base64
import json
import signal
import socket
import ssl
import time
import urllib.parse
import uuid
from urllib.parse import urlsplit

import boto3
import h2.config
import h2.connection
import h2.events
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer
from hyperframe.frame import GoAwayFrame

from tests.backends import query
from tests.conftest import register_model, start_server, stop_server
from tests.helpers import make_endless_llama

QUESTION = [{"role": "user", "content": [{"text": "hello world"}]}]


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    running = start_server(tmp_path_factory.mktemp("http2-tls"), {"OUTCROP_TLS": "on"})
    yield running
    stop_server(running)


def signed_headers(server, method: str, path: str, body: bytes = b"") -> list[tuple[str, str]]:
    """The headers of a SigV4-signed request (with botocore's signer), without `host` (HTTP/2 says :authority)."""
    headers = {"Content-Type": "application/json"} if body else {}
    request = AWSRequest(method=method, url=server.endpoint + path, data=body, headers=headers)
    SigV4Auth(Credentials(*server.root_key()), "bedrock", "us-east-1").add_auth(request)
    return [(name.lower(), value) for name, value in request.headers.items() if name.lower() != "host"]


class Http2:
    """A small HTTP/2 client on one socket: send requests, read their answers frame by frame."""

    def __init__(self, sock: socket.socket, connection: h2.connection.H2Connection | None = None) -> None:
        self.sock = sock
        if connection is None:
            connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            connection.initiate_connection()
        self.connection = connection
        self.responses: dict[int, dict] = {}
        self.terminated = False
        self.flush()

    def flush(self) -> None:
        data = self.connection.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, server, method: str, path: str, body: bytes = b"") -> int:
        authority = urlsplit(server.endpoint).netloc
        stream_id = self.connection.get_next_available_stream_id()
        headers = [(":method", method), (":path", path), (":scheme", urlsplit(server.endpoint).scheme),
                   (":authority", authority), *signed_headers(server, method, path, body)]
        if body:
            headers.append(("content-length", str(len(body))))
        self.connection.send_headers(stream_id, headers, end_stream=not body)
        if body:
            self.connection.send_data(stream_id, body, end_stream=True)
        self.flush()
        return stream_id

    def read(self) -> list[h2.events.Event]:
        """Some events from the server (acknowledging its data as it comes)."""
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        events = self.connection.receive_data(data)
        for event in events:
            response = self.responses.setdefault(getattr(event, "stream_id", 0), {"data": b"", "frames": 0})
            if isinstance(event, h2.events.ResponseReceived):
                response["headers"] = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h2.events.DataReceived):
                response["data"] += event.data
                response["frames"] += 1
                self.connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                response["ended"] = True
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.terminated = True
        self.flush()
        return events

    def response(self, stream_id: int) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) of a stream, once it has ended."""
        while not self.responses.get(stream_id, {}).get("ended"):
            self.read()
        response = self.responses[stream_id]
        return int(response["headers"][":status"]), response["headers"], response["data"]


def connect(server) -> socket.socket:
    parts = urlsplit(server.endpoint)
    return socket.create_connection((parts.hostname, parts.port), timeout=60)


def tls_connect(server, alpn: list[str]) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(server.data_dir / "tls" / "cert.pem"))
    context.set_alpn_protocols(alpn)
    return context.wrap_socket(connect(server), server_hostname="127.0.0.1")


def events(body: bytes) -> list[tuple[str, dict]]:
    """(event type, JSON payload) of each message of an AWS event stream, decoded by botocore."""
    buffer = EventStreamBuffer()
    buffer.add_data(body)
    return [(message.headers[":event-type"], json.loads(message.payload)) for message in buffer]


def model_path(model: str, operation: str) -> str:
    return f"/model/{urllib.parse.quote(model, safe='')}/{operation}"


# -- the ways in ------------------------------------------------------------------------------------

def test_h2c_by_prior_knowledge(server):
    with connect(server) as sock:
        client = Http2(sock)
        first = client.request(server, "GET", "/foundation-models")
        second = client.request(server, "GET", "/foundation-models?byProvider=meta")  # two streams, one connection
        status, headers, body = client.response(first)
        assert status == 200 and headers["content-type"].startswith("application/json")
        assert json.loads(body)["modelSummaries"]
        status, _, body = client.response(second)
        assert status == 200
        assert {m["providerName"] for m in json.loads(body)["modelSummaries"]} <= {"Meta"}
        # Unsigned: refused as over HTTP/1.1, in Bedrock's words.
        stream_id = client.connection.get_next_available_stream_id()
        client.connection.send_headers(stream_id, [(":method", "GET"), (":path", "/foundation-models"),
                                                   (":scheme", "http"), (":authority", "x")], end_stream=True)
        client.flush()
        status, headers, _ = client.response(stream_id)
        assert status == 403 and headers["x-amzn-errortype"].startswith("MissingAuthenticationToken")


def test_h2c_by_upgrade(server):
    path = "/foundation-models"
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    settings = connection.initiate_upgrade_connection().decode()
    headers = "".join(f"{name}: {value}\r\n" for name, value in signed_headers(server, "GET", path))
    with connect(server) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {urlsplit(server.endpoint).netloc}\r\n{headers}"
                     f"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: {settings}\r\n\r\n"
                     .encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)  # byte by byte: what follows the 101 is HTTP/2 for the h2 connection
        assert head.startswith(b"HTTP/1.1 101")
        assert b"upgrade: h2c" in head.lower()
        client = Http2(sock, connection)  # the request became stream 1
        status, _, body = client.response(1)
        assert status == 200 and json.loads(body)["modelSummaries"]


def test_http1_is_still_served(server):
    status, _, body = server.raw("GET", "/foundation-models")
    assert status == 200 and body["modelSummaries"]


def test_h2_by_alpn_under_tls_and_http1_there_too(tls_server):
    with tls_connect(tls_server, ["h2", "http/1.1"]) as sock:
        assert sock.selected_alpn_protocol() == "h2"
        client = Http2(sock)
        status, _, body = client.response(client.request(tls_server, "GET", "/foundation-models"))
        assert status == 200 and json.loads(body)["modelSummaries"]
    with tls_connect(tls_server, ["http/1.1"]) as sock:  # a client that offers only HTTP/1.1
        assert sock.selected_alpn_protocol() == "http/1.1"
    key_id, secret = tls_server.root_key()
    bedrock = boto3.client("bedrock", endpoint_url=tls_server.endpoint, region_name="us-east-1",
                           aws_access_key_id=key_id, aws_secret_access_key=secret,
                           verify=str(tls_server.data_dir / "tls" / "cert.pem"))
    assert bedrock.list_foundation_models()["modelSummaries"]  # boto3: HTTP/1.1 over TLS


# -- event streams over HTTP/2 ----------------------------------------------------------------------

def test_converse_stream_over_h2c(server, tiny_model):
    document = {"messages": QUESTION, "inferenceConfig": {"maxTokens": 12, "temperature": 0}}
    with connect(server) as sock:
        client = Http2(sock)
        stream_id = client.request(server, "POST", model_path(tiny_model, "converse-stream"),
                                   json.dumps(document).encode())
        status, headers, body = client.response(stream_id)
    assert status == 200 and headers["content-type"] == "application/vnd.amazon.eventstream"
    kinds = [kind for kind, _ in events(body)]
    assert kinds[0] == "messageStart" and kinds[-2:] == ["messageStop", "metadata"]
    assert "contentBlockDelta" in kinds
    assert events(body)[-1][1]["usage"]["outputTokens"] > 0


def test_a_client_goaway_lets_its_event_stream_finish(server, tiny_model):
    """The JS SDK reads each event stream on a connection of its own and sends GOAWAY as soon as the response
    headers arrive (RFC 9113 6.8: no new streams; those open go on): the events must still all come."""
    document = {"messages": QUESTION, "inferenceConfig": {"maxTokens": 12, "temperature": 0}}
    with connect(server) as sock:
        client = Http2(sock)
        stream_id = client.request(server, "POST", model_path(tiny_model, "converse-stream"),
                                   json.dumps(document).encode())
        while "headers" not in client.responses.get(stream_id, {}):
            client.read()
        sock.sendall(GoAwayFrame(0, last_stream_id=0).serialize())  # what Node's session.close() sends
        status, _, body = client.response(stream_id)
    assert status == 200
    kinds = [kind for kind, _ in events(body)]
    assert kinds[0] == "messageStart" and kinds[-2:] == ["messageStop", "metadata"]


def test_invoke_model_with_response_stream_over_h2_under_tls(tls_server, tmp_path_factory):
    from tests.helpers import make_tiny_llama

    model = register_model(tls_server, "tiny-llama", make_tiny_llama(tmp_path_factory.mktemp("tiny-tls")))
    document = {"prompt": "hello world", "max_gen_len": 12, "temperature": 0}
    with tls_connect(tls_server, ["h2"]) as sock:
        client = Http2(sock)
        stream_id = client.request(tls_server, "POST", model_path(model, "invoke-with-response-stream"),
                                   json.dumps(document).encode())
        status, _, body = client.response(stream_id)
    assert status == 200
    chunks = [json.loads(base64.b64decode(payload["bytes"])) for kind, payload in events(body)]
    assert {kind for kind, _ in events(body)} == {"chunk"}
    assert chunks[-1]["amazon-bedrock-invocationMetrics"]["outputTokenCount"] > 0


def test_a_reset_stream_stops_its_generation(server, tmp_path_factory):
    """RST_STREAM is HTTP/2's hang-up: it reaches the app as http.disconnect, and the connection lives on."""
    model = register_model(server, "tiny-llama-endless-h2", make_endless_llama(tmp_path_factory.mktemp("endless")))
    session_id = f"h2-reset-{uuid.uuid4()}"
    document = {"messages": QUESTION, "inferenceConfig": {"maxTokens": 16_000, "temperature": 0},
                "requestMetadata": {"sessionId": session_id}}
    with connect(server) as sock:
        client = Http2(sock)
        stream_id = client.request(server, "POST", model_path(model, "converse-stream"), json.dumps(document).encode())
        while b"contentBlockDelta" not in client.responses.get(stream_id, {}).get("data", b""):
            client.read()  # the first load of the model, then text: it is generating
        client.connection.reset_stream(stream_id)
        client.flush()
        row, deadline = None, time.monotonic() + 10
        while row is None and time.monotonic() < deadline:
            row = next(iter(query(server.data_dir, "SELECT status, output_tokens FROM usage_records "
                                  "WHERE session_id = ?", session_id)), None)
            time.sleep(0.1)
        assert row is not None, "the generation went on after its stream was reset"
        assert row[0] == "Cancelled" and 0 < row[1] < 16_000, row
        # The connection itself is fine: the next request on it is answered.
        status, _, _ = client.response(client.request(server, "GET", "/foundation-models"))
        assert status == 200


def test_sigterm_with_idle_connections_of_both_protocols_exits_at_once(tmp_path):
    """Idle keep-alive connections (boto3's pool, an HTTP/2 session) do not hold a stop: each is closed
    (HTTP/2 with a GOAWAY), and a TLS client that never answers close_notify is not waited for long."""
    running = start_server(tmp_path / "data", {"OUTCROP_TLS": "on", "OUTCROP_PRELOAD_MODELS": ""})
    try:
        key_id, secret = running.root_key()
        bedrock = boto3.client("bedrock", endpoint_url=running.endpoint, region_name="us-east-1",
                               aws_access_key_id=key_id, aws_secret_access_key=secret,
                               verify=str(running.data_dir / "tls" / "cert.pem"))
        assert bedrock.list_foundation_models()["modelSummaries"]  # its connection stays in the pool
        sock = tls_connect(running, ["h2"])
        client = Http2(sock)
        assert client.response(client.request(running, "GET", "/foundation-models"))[0] == 200
        started = time.monotonic()
        running.process.send_signal(signal.SIGTERM)
        assert running.process.wait(timeout=30) == 0
        assert time.monotonic() - started < 8
        while not client.terminated:  # the HTTP/2 session was told: GOAWAY
            client.read()
        sock.close()
    finally:
        if running.process.poll() is None:
            stop_server(running)
