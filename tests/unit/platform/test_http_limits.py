"""What one client can hold of the HTTP server: request bodies that stall or trickle, and connections per address.

The server runs in a thread on a small app, with the limits the settings give, shortened; the attacks are raw
sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import time

from outcrop.cli.serve import LOOPBACK, HttpLimits
from outcrop.platform.config import Settings
from tests.helpers import serving

POST = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"


async def _app(scope, receive, send) -> None:
    """Reads the whole body, then takes longer than the body timeout to answer."""
    if scope["type"] != "http":
        return
    size, more = 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    await asyncio.sleep(1.0)
    body = str(size).encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _limits(**changes) -> HttpLimits:
    settings = Settings(http_header_timeout_seconds=5, http_body_timeout_seconds=0.5,
                        http_body_min_bytes_per_second=100, http_max_connections_per_address=2)
    return dataclasses.replace(HttpLimits.from_settings(settings), **changes)


def _serving(limits: HttpLimits):
    return serving(_app, limits)


def _read_until_closed(sock: socket.socket, seconds: float, trickle: bytes = b"") -> tuple[bytes, float]:
    """What the server sends until it closes `sock` and when it closed (seconds), sending `trickle` a byte every
    0.1 s meanwhile; AssertionError if it is still open after `seconds`."""
    started, received = time.monotonic(), b""
    sock.settimeout(0.1)
    while time.monotonic() - started < seconds:
        if trickle:
            with contextlib.suppress(OSError):
                sock.sendall(trickle[:1])
            trickle = trickle[1:]
        try:
            data = sock.recv(1024)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return received, time.monotonic() - started
        if not data:
            return received, time.monotonic() - started
        received += data
    raise AssertionError(f"still open after {seconds}s (received {received!r})")


def test_a_body_that_stalls_or_trickles_is_answered_408_and_closed_but_a_slow_answer_is_not():
    with _serving(_limits()) as port:
        with socket.create_connection(("127.0.0.1", port)) as sock:  # headers, a byte of the body, then nothing
            sock.sendall(POST + b"{")
            received, after = _read_until_closed(sock, 3)
            assert received.startswith(b"HTTP/1.1 408") and after < 2
        with socket.create_connection(("127.0.0.1", port)) as sock:  # a byte every 0.1 s: no gap, but too slow
            sock.sendall(POST)
            received, after = _read_until_closed(sock, 5, trickle=b"x" * 100)
            assert received.startswith(b"HTTP/1.1 408") and after < 2.5
        with socket.create_connection(("127.0.0.1", port)) as sock:  # HTTP/2: a stream whose body never comes
            import h2.config
            import h2.connection

            client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            client.initiate_connection()
            client.send_headers(1, [(":method", "POST"), (":path", "/"), (":scheme", "http"), (":authority", "x")])
            sock.sendall(client.data_to_send())
            _, after = _read_until_closed(sock, 3)
            assert after < 2
        with socket.create_connection(("127.0.0.1", port)) as sock:  # the body in: its answer may take its time
            sock.sendall(POST + b"y" * 100)
            sock.settimeout(5)
            response = b""
            while not response.endswith(b"\r\n\r\n100"):
                response += sock.recv(1024)
            assert response.startswith(b"HTTP/1.1 200")


def test_connections_beyond_the_per_address_cap_are_closed_at_once_except_from_loopback():
    with _serving(_limits(uncounted=())) as port:  # loopback counted here, as any other address
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        try:
            with socket.create_connection(("127.0.0.1", port)) as extra:
                _, after = _read_until_closed(extra, 1)  # well before the 5 s header timeout
                assert after < 0.5
        finally:
            for sock in held:
                sock.close()
        time.sleep(0.2)  # closed ones no longer count
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(POST + b"z" * 100)
            sock.settimeout(5)
            assert sock.recv(1024).startswith(b"HTTP/1.1 200")
    assert _limits().uncounted == LOOPBACK
    with _serving(_limits()) as port:  # by default this machine is not counted
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        try:
            held[-1].settimeout(0.3)
            try:
                assert held[-1].recv(1024) != b""
            except TimeoutError:
                pass  # still open
        finally:
            for sock in held:
                sock.close()
