"""Bounded work without the whole server: cancelling a generation, output budgets, the HTTP server."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from outcrop.cli.serve import HttpLimits
from outcrop.errors import Cancelled, ValidationException
from outcrop.inference.engine import Engine
from outcrop.inference.sampling import SamplingParams
from outcrop.runtime.formats import TEXT_FORMATS, detect_text_format
from tests.helpers import make_endless_llama, serving

# -- cancelling a generation -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def endless(tmp_path_factory):
    engine = Engine(tmp_path_factory.mktemp("cache"), memory_budget_bytes=1 << 30, max_batch=4)
    deployment = engine.get(make_endless_llama(tmp_path_factory.mktemp("endless"), context=1024))
    yield deployment
    engine.close()


def _wait_idle(scheduler) -> None:
    deadline = time.monotonic() + 10
    while scheduler.active and time.monotonic() < deadline:
        time.sleep(0.01)
    assert scheduler.active == 0


def test_a_cancel_event_wakes_a_waiting_caller_with_the_tokens_produced(endless):
    scheduler, cancel = endless.scheduler, threading.Event()
    ids = endless.loaded.tokenizer("hello world")["input_ids"]
    stream = scheduler.submit(ids, SamplingParams(max_tokens=1000, temperature=0), cancelled=cancel)
    deltas = iter(stream)
    next(deltas)  # generating
    with scheduler.step_lock:  # between two steps: what it has produced now is all it will produce
        produced = stream.produced_tokens
        cancel.set()  # what the API does when the client hangs up
    with pytest.raises(Cancelled):
        for _ in deltas:  # a non-streaming caller blocked here wakes up
            pass
    assert 0 < stream.produced_tokens == produced < 1000
    _wait_idle(scheduler)


def test_a_request_cancelled_while_waiting_never_runs(endless):
    scheduler, cancel = endless.scheduler, threading.Event()
    ids = endless.loaded.tokenizer("hello world")["input_ids"]
    with scheduler.step_lock:
        stream = scheduler.submit(ids, SamplingParams(max_tokens=1000, temperature=0), cancelled=cancel)
        cancel.set()
    with pytest.raises(Cancelled):
        stream.result()
    assert stream.produced_tokens == 0
    _wait_idle(scheduler)


# -- output budgets against the context window ------------------------------------------------------

def _refusal(body: dict, prompt_tokens: int = 10, context: int = 256) -> str | None:
    request = detect_text_format(body, "meta-llama").parse(body)
    if request.check_max_tokens is None:
        return None
    try:
        request.check_max_tokens(prompt_tokens, context)
    except ValidationException as exc:
        return exc.message
    return None


def test_each_format_refuses_an_explicit_budget_beyond_the_window_in_its_words():
    assert _refusal({"prompt": "hi", "max_gen_len": 257}) == (
        "Malformed input request: #/max_gen_len: 257 is not less or equal to 256, please reformat your input "
        "and try again.")
    assert _refusal({"prompt": "hi", "max_gen_len": 256}) is None  # the window itself is allowed
    assert "#/textGenerationConfig/maxTokenCount: 300" in _refusal(
        {"inputText": "hi", "textGenerationConfig": {"maxTokenCount": 300}})
    # Anthropic counts the prompt: 10 + 250 > 256.
    anthropic = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 250,
                 "messages": [{"role": "user", "content": "hi"}]}
    assert _refusal(anthropic) == ("input length and `max_tokens` exceed context limit: 10 + 250 > 256, "
                                   "decrease input length or `max_tokens` and try again")
    assert _refusal({**anthropic, "max_tokens": 246}) is None


def test_a_budget_left_to_its_default_is_never_refused():
    assert TEXT_FORMATS["meta-llama"].parse({"prompt": "hi"}).check_max_tokens is None
    assert TEXT_FORMATS["titan-text"].parse({"inputText": "hi"}).check_max_tokens is None


# -- the HTTP server: header deadline and connection cap, over HTTP/1.1 and HTTP/2 -----------------

async def _slow_app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    await asyncio.sleep(1.0)  # longer than the header timeout: a request being served is not cut
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _serving(limits: HttpLimits):
    """`_slow_app` under the HTTP server in a thread, with these limits; yields its port."""
    return serving(_slow_app, limits)


@pytest.fixture
def http_server():
    with _serving(HttpLimits(header_timeout=0.5, max_connections=3)) as port:
        yield port


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes `sock` within `seconds` (whatever it sends first, a GOAWAY say)."""
    deadline = time.monotonic() + seconds
    try:
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if sock.recv(1024) == b"":
                return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return False


def test_partial_headers_are_cut_off_but_a_slow_answer_is_not(http_server):
    with socket.create_connection(("127.0.0.1", http_server)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        assert _closed_within(sock, 3)
    with socket.create_connection(("127.0.0.1", http_server)) as sock:
        for _ in range(2):  # keep-alive: the deadline starts again after each response
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.settimeout(5)
            response = b""
            while not response.endswith(b"\r\n\r\nok"):
                response += sock.recv(1024)
            assert response.startswith(b"HTTP/1.1 200")
        assert _closed_within(sock, 3)  # then idle, without a new request


def _http2_client():
    import h2.config
    import h2.connection

    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    return client


def test_http2_by_prior_knowledge_has_the_same_deadline(http_server):
    from hyperframe.frame import HeadersFrame

    with socket.create_connection(("127.0.0.1", http_server)) as sock:
        sock.sendall(_http2_client().data_to_send())  # the preface, then nothing
        assert _closed_within(sock, 3)
    with socket.create_connection(("127.0.0.1", http_server)) as sock:
        client = _http2_client()
        sock.sendall(client.data_to_send())
        partial = HeadersFrame(1, client.encoder.encode([(":method", "GET"), (":path", "/"), (":scheme", "http"),
                                                         (":authority", "x")]))  # no END_HEADERS: more to come
        sock.sendall(partial.serialize())
        assert _closed_within(sock, 3)
    with socket.create_connection(("127.0.0.1", http_server)) as sock:  # a slow answer is not cut
        client = _http2_client()
        client.send_headers(1, [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "x")],
                            end_stream=True)
        sock.sendall(client.data_to_send())
        sock.settimeout(5)
        body, ended, goaway = b"", False, False
        while not goaway:
            data = sock.recv(65536)
            if not data:
                break
            for event in client.receive_data(data):
                body += getattr(event, "data", None) or b""
                ended = ended or type(event).__name__ == "StreamEnded"
                goaway = goaway or type(event).__name__ == "ConnectionTerminated"
            sock.sendall(client.data_to_send())
        assert (body, ended) == (b"ok", True)
        assert goaway  # then idle: closed with a GOAWAY, not a bare hang-up


def test_the_http2_request_limit_sends_goaway_and_still_answers_the_streams_in_flight():
    """At the per-connection request limit the GOAWAY names the streams taken, and each gets its answer."""
    from hyperframe.frame import GoAwayFrame

    from outcrop.cli.serve import _receive_goaway

    with _serving(HttpLimits(header_timeout=5, max_requests_per_connection=2)) as port:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            client = _http2_client()
            # h2 as a client closes its state on a GOAWAY too: read the answers after it as a real client does.
            client._frame_dispatch_table[GoAwayFrame] = _receive_goaway
            for stream in (1, 3, 5):  # three at once, one past the limit
                client.send_headers(stream, [(":method", "GET"), (":path", "/"), (":scheme", "http"),
                                             (":authority", "x")], end_stream=True)
            sock.sendall(client.data_to_send())
            sock.settimeout(10)
            bodies, ended, last_stream = {}, set(), None
            while len(ended) < 3:
                data = sock.recv(65536)
                assert data, f"closed with streams {sorted({1, 3, 5} - ended)} unanswered"
                for event in client.receive_data(data):
                    name = type(event).__name__
                    if name == "DataReceived":
                        bodies[event.stream_id] = bodies.get(event.stream_id, b"") + event.data
                    elif name == "StreamEnded":
                        ended.add(event.stream_id)
                    elif name == "ConnectionTerminated":
                        last_stream = event.last_stream_id
                sock.sendall(client.data_to_send())
        assert last_stream == 5 and bodies == {1: b"ok", 3: b"ok", 5: b"ok"}


def test_connections_beyond_the_limit_are_closed_at_once(http_server):
    held = [socket.create_connection(("127.0.0.1", http_server)) for _ in range(3)]
    try:
        time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", http_server)) as extra:
            assert _closed_within(extra, 0.3)  # well before the 0.5 s header timeout
    finally:
        for sock in held:
            sock.close()
