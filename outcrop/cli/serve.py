"""`outcrop serve`: the one process that answers all four Bedrock services."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import ipaddress
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass
from ssl import SSLError

import h2.events
import h2.exceptions
import h11
import hypercorn.protocol
from h2.stream import StreamState
from hypercorn.asyncio.lifespan import Lifespan
from hypercorn.asyncio.tcp_server import MAX_RECV, TCPServer
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.protocol.h2 import H2Protocol
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.utils import wrap_app
from hyperframe.frame import GoAwayFrame

from outcrop import __version__
from outcrop.api.asgi import Networks, behind_proxies, in_networks, ip_address, is_loopback
from outcrop.iam.credentials import read_credentials
from outcrop.platform.config import Settings, load_settings
from outcrop.platform.tls import self_signed

log = logging.getLogger(__name__)

#: Seconds a closing TLS connection waits for the client's close_notify (asyncio's default is 30): an idle
#: client that never answers (a pooled boto3 connection) would hold its slot, and a stop, that long.
TLS_SHUTDOWN_SECONDS = 3.0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("serve", parents=[common], help="run the Bedrock-compatible server")
    parser.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port to listen on (default 8600)")
    parser.add_argument("--tls", action="store_const", const="on", default=None,
                        help="serve HTTPS (a self-signed certificate unless OUTCROP_TLS_CERTFILE/KEYFILE are set); "
                             "boto3 sends bearer API keys over HTTPS only")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from outcrop.api.app import BedrockApp
    from outcrop.api.bedrock.protocol import SERVICES
    from outcrop.services import Services

    settings = load_settings(data_dir=args.data_dir, host=args.host, port=args.port, tls=args.tls)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per migration step is noise
    services = Services.start(settings)
    store = settings.s3_endpoint or str(settings.objects_dir)
    tls: dict[str, str] = {}
    if settings.tls_enabled:
        cert, key = ((settings.tls_certfile, settings.tls_keyfile) if settings.tls_certfile
                     else self_signed(settings.data_dir / "tls", settings.host))
        tls = {"certfile": str(cert), "keyfile": str(key)}
    endpoint = f"{'https' if tls else 'http'}://{settings.host}:{settings.port}"
    print(f"Outcrop {__version__}\n"
          f"  data dir     {settings.data_dir}\n"
          f"  database     {_redact(settings.resolved_database_url)} (schema {services.schema_revision})\n"
          f"  objects      {store}\n"
          f"  credentials  {settings.credentials_file} (profile outcrop)\n"
          f"  listening    {endpoint} ({', '.join(SERVICES)})", flush=True)
    print(f"  console      {endpoint}/console/ ({_console_key(settings)})", flush=True)
    if tls:
        print(f"  certificate  {tls['certfile']} (clients: verify=<this file> or AWS_CA_BUNDLE)", flush=True)
    if settings.preload_model_ids:
        print(f"  models       loading {', '.join(settings.preload_model_ids)} in the background "
              f"(GET {endpoint}/_outcrop/health says when they are ready)", flush=True)
    if not settings.auth_enabled:
        print(f"  WARNING      authentication is OFF (OUTCROP_AUTH={settings.auth}): every request acts as the "
              f"root of account {services.iam.default_account()}. Use this for local experiments only.", flush=True)
    if settings.trusted_proxies:
        print(f"  proxies      X-Forwarded-For/-Proto believed from {settings.trusted_proxies}", flush=True)
    app = behind_proxies(BedrockApp(services), settings.trusted_proxy_networks)
    server = HttpServer(app, settings.host, settings.port, HttpLimits.from_settings(settings),
                        certfile=tls.get("certfile"), keyfile=tls.get("keyfile"))
    return server.run()


def _console_key(settings) -> str:
    """How to sign in to the console. To a person trying Outcrop on their machine (a loopback address, output to a
    terminal) the root key is printed: whoever reads that terminal owns the data dir and its credentials file
    anyway. Output that goes to a file or a journal, or a server listening beyond this machine, gets only where
    the key is: logs are often shared."""
    if not settings.auth_enabled:
        return "no sign-in: authentication is off"
    found = read_credentials(settings.credentials_file)
    if found is None or not is_loopback(settings.host):
        return f"sign in with the root key in {settings.credentials_file}"
    if not sys.stdout.isatty():  # a log may be shared: the key ID only, never the secret
        return f"sign in with access key ID {found[0]} and its secret from {settings.credentials_file}"
    return f"sign in with access key ID {found[0]} and secret {found[1]}"


#: This machine's addresses, which the per-address connection cap does not count.
LOOPBACK: Networks = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
#: What a connection whose request body stalled gets before it is closed (HTTP/1.1; HTTP/2 gets a GOAWAY).
REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


@dataclass(frozen=True)
class HttpLimits:
    """What one client can hold of the HTTP server; `outcrop serve` takes them from the http_* settings."""

    # The defaults are the settings' (platform/config.py, the one place for each default).
    #: Seconds to complete a request's headers, from when the connection opens.
    header_timeout: float = Settings.http_header_timeout_seconds
    #: Seconds an idle connection is kept after a response (never more than `header_timeout`).
    keep_alive: float = Settings.http_keep_alive_seconds
    #: Seconds a request body may go without a byte, and its grace before `body_min_rate` applies.
    body_timeout: float = Settings.http_body_timeout_seconds
    #: Bytes a second a request body must average after `body_timeout` (0: none).
    body_min_rate: int = Settings.http_body_min_bytes_per_second
    #: Open connections; one beyond is closed at once.
    max_connections: int = Settings.http_max_connections
    #: Open connections from one address outside `uncounted`; one beyond is closed at once.
    max_connections_per_address: int = Settings.http_max_connections_per_address
    #: Addresses whose connections `max_connections_per_address` does not count: this machine, and the
    #: trusted proxies (each carries many clients).
    uncounted: Networks = LOOPBACK
    #: Bytes of an HTTP/1.1 request line plus headers, and of an HTTP/2 header list.
    max_header_bytes: int = Settings.http_max_header_bytes
    #: HTTP/2 streams (requests) one connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
    max_streams: int = Settings.http2_max_concurrent_streams
    #: Requests one connection may make; then HTTP/1.1 answers `Connection: close` and HTTP/2 sends GOAWAY
    #: (which also bounds a client that opens and resets HTTP/2 streams in a loop).
    max_requests_per_connection: int = Settings.http_max_requests_per_connection
    #: Seconds running requests get to finish on SIGTERM before they are cut.
    graceful_timeout: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(header_timeout=settings.http_header_timeout_seconds, keep_alive=settings.http_keep_alive_seconds,
                   body_timeout=settings.http_body_timeout_seconds,
                   body_min_rate=settings.http_body_min_bytes_per_second,
                   max_connections=settings.http_max_connections,
                   max_connections_per_address=settings.http_max_connections_per_address,
                   uncounted=LOOPBACK + settings.trusted_proxy_networks,
                   max_header_bytes=settings.http_max_header_bytes,
                   max_streams=settings.http2_max_concurrent_streams,
                   max_requests_per_connection=settings.http_max_requests_per_connection)


def hypercorn_config(limits: HttpLimits, certfile: str | None = None, keyfile: str | None = None) -> Config:
    """hypercorn's settings for these limits (under TLS, ALPN offers h2 before http/1.1)."""
    config = Config()
    config.accesslog = None  # the app logs each request itself, with its operation and principal
    config.errorlog = logging.getLogger("hypercorn.error")  # through the process's logging setup
    config.include_server_header = False
    config.keep_alive_max_requests = limits.max_requests_per_connection
    config.h11_max_incomplete_size = limits.max_header_bytes
    config.h2_max_header_list_size = limits.max_header_bytes
    config.h2_max_concurrent_streams = limits.max_streams
    config.ssl_handshake_timeout = limits.header_timeout
    config.graceful_timeout = limits.graceful_timeout
    config.certfile, config.keyfile = certfile, keyfile
    return config


class HttpServer:
    """HTTP/1.1, h2c (prior knowledge or `Upgrade: h2c`) and, under TLS, h2 by ALPN, all on one port.

    The protocols are hypercorn's (h11 and h2); the accept loop is ours, in place of
    `hypercorn.asyncio.serve`, for what hypercorn lacks: a cap on open connections, in all and per client
    address, a header deadline that also covers HTTP/2 by prior knowledge and a deadline on request bodies
    (see `_Connection`), a graceful stop that ends as planned
    (on SIGTERM or SIGINT running requests get `graceful_timeout` seconds, a second signal cuts that
    short; then the app's lifespan shutdown closes the database), and a server that tests can run in a
    thread and stop.
    """

    def __init__(self, app, host: str, port: int, limits: HttpLimits | None = None, *,
                 certfile: str | None = None, keyfile: str | None = None) -> None:
        self.app, self.host, self.port = app, host, port
        self.limits = limits or HttpLimits()
        self.config = hypercorn_config(self.limits, certfile, keyfile)
        #: Set once the server listens (its lifespan startup done); `stop()` works from then on.
        self.started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._force: asyncio.Event | None = None

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT: 0 after a stop as planned, 1 if it never listened."""
        asyncio.run(self.serve(handle_signals=threading.current_thread() is threading.main_thread()))
        return 0 if self.started.is_set() else 1

    def stop(self) -> None:
        """Begin the graceful stop, from any thread; a second call cuts the wait for running requests."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has ended: stopped already
                self._loop.call_soon_threadsafe(self._request_stop)

    def _request_stop(self) -> None:
        if self._stop is not None and self._force is not None:
            (self._force if self._stop.is_set() else self._stop).set()

    async def serve(self, handle_signals: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self._loop, self._stop, self._force = loop, asyncio.Event(), asyncio.Event()
        signals = (signal.SIGINT, signal.SIGTERM) if handle_signals else ()
        for sig in signals:  # from the start: a stop during startup still ends as planned
            loop.add_signal_handler(sig, self._request_stop)
        try:
            await self._serve(loop)
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)

    async def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        # hypercorn makes its HTTP/2 protocol object (by ALPN, prior knowledge or Upgrade) through this
        # module-level name and offers no other hook; ours is a subclass (`_Http2`). One server per process.
        hypercorn.protocol.H2Protocol = _Http2
        app = wrap_app(self.app, self.config.wsgi_max_body_size, "asgi")
        state: dict = {}
        lifespan = Lifespan(app, self.config, loop, state)
        lifespan_task = loop.create_task(lifespan.handle_lifespan())
        await lifespan.wait_for_startup()
        if lifespan_task.done() and lifespan_task.exception() is not None:
            raise lifespan_task.exception()
        context = WorkerContext(None)
        connections: set[asyncio.Task] = set()
        per_address: dict[str, int] = {}  # open connections of each counted address
        limits, config = self.limits, self.config

        async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peer = writer.get_extra_info("peername")
            address = ip_address(peer[0]) if isinstance(peer, tuple) and peer else None
            counted = None
            if address is not None and not in_networks(str(address), limits.uncounted):
                # An IPv6 client holds a whole /64 (any host of it is its own): counted as one address.
                counted = str(ipaddress.ip_network(f"{address}/64", strict=False) if address.version == 6 else address)
            if len(connections) >= limits.max_connections or (
                    counted is not None and per_address.get(counted, 0) >= limits.max_connections_per_address):
                writer.close()  # beyond a cap: closed at once, not held open to be answered later
                return
            task = asyncio.current_task()
            connections.add(task)
            task.add_done_callback(connections.discard)
            if counted is not None:
                per_address[counted] = per_address.get(counted, 0) + 1
            try:
                await _Connection(app, loop, config, context, state, reader, writer, limits=limits)
            finally:
                if counted is not None:
                    if per_address[counted] <= 1:
                        del per_address[counted]
                    else:
                        per_address[counted] -= 1

        ssl = config.create_ssl_context()
        try:
            server = await asyncio.start_server(on_connection, self.host, self.port, ssl=ssl, backlog=2048,
                                                ssl_handshake_timeout=limits.header_timeout if ssl else None,
                                                ssl_shutdown_timeout=TLS_SHUTDOWN_SECONDS if ssl else None)
        except OSError as exc:
            log.error("cannot listen on %s:%s: %s", self.host, self.port, exc)
            await _end_lifespan(lifespan, lifespan_task)
            return
        self.started.set()
        try:
            await self._stop.wait()
        finally:
            log.info("Shutting down")
            server.close()
            await context.terminated.set()  # idle connections close now, busy ones after their answer
            await self._drain(connections)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 5)
            await _end_lifespan(lifespan, lifespan_task)
            log.info("Finished server process [%d]", os.getpid())

    async def _drain(self, connections: set[asyncio.Task]) -> None:
        """Wait for running requests until they end, `graceful_timeout` passes or a second stop; then cut them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.graceful_timeout
        while connections and not self._force.is_set() and (left := deadline - loop.time()) > 0:
            force = loop.create_task(self._force.wait())
            await asyncio.wait([*connections, force], timeout=left, return_when=asyncio.FIRST_COMPLETED)
            force.cancel()
        for task in connections:
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)


async def _end_lifespan(lifespan: Lifespan, task: asyncio.Task) -> None:
    await lifespan.wait_for_shutdown()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class _Connection(TCPServer):
    """One client connection, hypercorn's, with a deadline for each request's headers and body.

    hypercorn's idle timer runs whenever a connection has no request in progress (from when it opens,
    after an HTTP/1.1 response, when the last HTTP/2 stream closes) and stops when a request's headers
    are complete, never on bytes alone; so a client that trickles partial headers (or nothing) is closed
    when it fires. Here it fires `header_timeout` after the connection opens and `keep_alive` (at most
    `header_timeout`) after a response. Two additions: hypercorn parses the HTTP/2 prior-knowledge preface
    as an HTTP/1.1 request, stopping the timer, and never restarts it until a stream has closed, so a
    client could send the preface and then nothing, forever; the timer is restarted when a connection
    turns to HTTP/2 with no stream open. An idle HTTP/2 connection is closed with a GOAWAY, so that a
    client's request racing the close is refused as unprocessed (and retried) rather than lost. And a
    GOAWAY from the client lets its streams finish (`_Http2`).

    Since the idle timer stops once a request's headers are in, its body is timed here, in the read loop:
    while a body is still to come (HTTP/1.1 `their_state` SEND_BODY, or an HTTP/2 stream the client has
    not ended) each read waits at most `body_timeout`, and after that grace the body must keep up
    `body_min_rate` (one byte a second must not hold a connection for hours). A body that stalls gets 408
    (HTTP/1.1, when no answer has begun) and the connection is closed. Once the body is in, the client may
    say nothing for as long as its answer takes.
    """

    def __init__(self, *args, limits: HttpLimits) -> None:
        super().__init__(*args)
        self._idle_seconds = limits.header_timeout
        self._after_response = min(limits.keep_alive, limits.header_timeout)
        self._timer_running = True  # TCPServer.run starts it when the connection opens
        self._http2_seen = False
        self._limits = limits
        self._body_started: float | None = None  # when the current wait for request bodies began
        self._body_bytes = 0  # bytes read since then

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, Updated):
            self._timer_running = event.idle
            if event.idle:
                self._idle_seconds = self._after_response
        await super().protocol_send(event)

    async def _read_data(self) -> None:
        try:
            await self._read_loop()
        finally:
            # Nothing more will be read: the idle timer has nothing left to time. (hypercorn leaves it running,
            # and its task group waits for it, so a connection the client closed kept its place, in the caps
            # too, until the timer fired.)
            await self.idle_task.stop()

    async def _read_loop(self) -> None:  # TCPServer's _read_data, plus body deadlines, HTTP/2's switch and errors
        while not self.reader.at_eof():
            wait = self._body_wait()
            try:
                if wait is not None and wait <= 0:
                    raise TimeoutError
                data = await asyncio.wait_for(self.reader.read(MAX_RECV), wait)
            except TimeoutError:
                if wait is not None:
                    await self._body_timed_out()
                    return
                break
            except (ConnectionError, OSError, SSLError):
                break
            if self._body_started is not None:
                self._body_bytes += len(data)
            try:
                await self.protocol.handle(RawData(data))
            except Exception as exc:  # hypercorn could not take it (a malformed HTTP2-Settings): one line, not a trace
                log.info("closing a connection from %s: %s: %s", self.writer.get_extra_info("peername"),
                         type(exc).__name__, exc)
                with contextlib.suppress(Exception):  # its state may be half made: closing it may fail too
                    await self.protocol.handle(Closed())
                return
            if not self._http2_seen and isinstance(self.protocol.protocol, H2Protocol):
                self._http2_seen = True
                if self.protocol.protocol.idle and not self._timer_running:
                    self._timer_running = True
                    await self.idle_task.restart(self._task_group, self._idle_timeout)
        await self.protocol.handle(Closed())

    def _body_wait(self) -> float | None:
        """Seconds the next read may wait while a request body is awaited; None when none is."""
        if not self._awaiting_body():
            self._body_started = None
            return None
        now = self.loop.time()
        if self._body_started is None:
            self._body_started, self._body_bytes = now, 0
        limits = self._limits
        if limits.body_min_rate <= 0:
            return limits.body_timeout
        deadline = self._body_started + limits.body_timeout + self._body_bytes / limits.body_min_rate
        return min(limits.body_timeout, deadline - now)

    def _awaiting_body(self) -> bool:
        """Whether a request in progress still has body to come from the client."""
        protocol = getattr(self, "protocol", None)
        inner = getattr(protocol, "protocol", None)
        if isinstance(inner, H11Protocol):
            connection = inner.connection
            return (inner.stream is not None and isinstance(connection, h11.Connection)
                    and connection.their_state is h11.SEND_BODY)
        if isinstance(inner, H2Protocol):
            return any(stream.state_machine.state in (StreamState.OPEN, StreamState.HALF_CLOSED_LOCAL)
                       for stream in list(inner.connection.streams.values()))
        return False

    async def _body_timed_out(self) -> None:
        inner = self.protocol.protocol
        log.info("closing a connection from %s: its request body stalled (%d bytes in %.1fs)",
                 self.writer.get_extra_info("peername"), self._body_bytes,
                 self.loop.time() - (self._body_started or self.loop.time()))
        if (isinstance(inner, H11Protocol) and isinstance(inner.connection, h11.Connection)
                and inner.connection.our_state is h11.SEND_RESPONSE):  # no answer has begun
            with contextlib.suppress(Exception):
                self.writer.write(REQUEST_TIMEOUT)
        await asyncio.shield(self._initiate_server_close())  # the app sees a disconnect; its answer goes nowhere

    async def _close(self) -> None:
        with contextlib.suppress(TimeoutError, SSLError):  # a TLS client that never sent close_notify
            await super()._close()

    async def _idle_timeout(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.context.terminated.wait(), self._idle_seconds)
        await asyncio.shield(self._initiate_server_close())

    async def _initiate_server_close(self) -> None:
        http2 = self.protocol.protocol
        if isinstance(http2, H2Protocol) and not http2.closed:
            try:
                http2.connection.close_connection()  # GOAWAY: the streams it has not seen were not processed
            except h2.exceptions.ProtocolError:
                pass
            else:
                await self.protocol_send(RawData(data=http2.connection.data_to_send()))
        await super()._initiate_server_close()


class _Http2(H2Protocol):
    """hypercorn's HTTP/2, except that a GOAWAY, the client's or ours, lets the streams in progress finish.

    RFC 9113 6.8: a GOAWAY only says that no new stream will come; streams already open may complete.
    The AWS SDK for JavaScript relies on it: for an event stream it sends GOAWAY as soon as the response
    headers arrive, then reads the events. h2 closes its connection state on any GOAWAY, sent or received,
    and refuses to send more (python-hyper/h2#1181): hypercorn then closed the socket, which cut every
    ConverseStream after its first event, and its own GOAWAY at the connection's request limit dropped
    the answers of every stream still running (which the client, told they were processed, never
    retries). Here (with `_receive_goaway`) the client's GOAWAY lets the streams go on; at the request
    limit ours is written without closing h2's state (`_goaway_gracefully`), and hypercorn's hard close
    comes only if a client keeps opening streams after it (its limit is raised by `max_streams` for that).
    When no stream is left the idle timer closes the connection, unless the client has closed it first.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.connection._frame_dispatch_table[GoAwayFrame] = _receive_goaway  # h2 has no hook for it
        self.request_limit = self.config.keep_alive_max_requests
        self.goaway_sent = False
        # hypercorn's own (hard) close, for a client that ignores our GOAWAY: on a copy of the config, as
        # HTTP/1.1 connections keep the plain limit.
        self.config = copy.copy(self.config)
        self.config.keep_alive_max_requests += self.config.h2_max_concurrent_streams

    async def _handle_events(self, events: list[h2.events.Event]) -> None:
        goaway = any(isinstance(event, h2.events.ConnectionTerminated) for event in events)
        await super()._handle_events([e for e in events if not isinstance(e, h2.events.ConnectionTerminated)])
        if self.keep_alive_requests >= self.request_limit and not self.goaway_sent and not self.closed:
            self.goaway_sent = True
            _goaway_gracefully(self.connection)
            await self._flush()
        if goaway and not self.streams:
            await self.send(Closed())


def _goaway_gracefully(connection) -> None:
    """Queue a GOAWAY (no error) naming the last stream this connection took, leaving h2's state open
    so the streams up to it can still be answered (h2 has no graceful GOAWAY of its own)."""
    frame = GoAwayFrame(0)
    frame.last_stream_id = connection.highest_inbound_stream_id
    frame.error_code = 0
    connection._data_to_send += frame.serialize()


def _receive_goaway(frame: GoAwayFrame) -> tuple[list, list[h2.events.Event]]:
    """h2's handling of a GOAWAY frame, less closing the connection's state and dropping what it has to send."""
    event = h2.events.ConnectionTerminated()
    event.error_code, event.last_stream_id = frame.error_code, frame.last_stream_id
    event.additional_data = frame.additional_data or None
    return [], [event]


def _redact(url: str) -> str:
    """Never print a database password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


if __name__ == "__main__":
    sys.exit(run(argparse.Namespace(data_dir=None, host=None, port=None, tls=None)))
