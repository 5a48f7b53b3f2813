"""`outcrop serve`: the one process that answers all four Bedrock services."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from outcrop import __version__
from outcrop.platform.config import load_settings
from outcrop.platform.tls import self_signed


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
        tls = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    endpoint = f"{'https' if tls else 'http'}://{settings.host}:{settings.port}"
    print(f"Outcrop {__version__}\n"
          f"  data dir     {settings.data_dir}\n"
          f"  database     {_redact(settings.resolved_database_url)} (schema {services.schema_revision})\n"
          f"  objects      {store}\n"
          f"  credentials  {settings.credentials_file} (profile outcrop)\n"
          f"  listening    {endpoint} ({', '.join(SERVICES)})", flush=True)
    if tls:
        print(f"  certificate  {tls['ssl_certfile']} (clients: verify=<this file> or AWS_CA_BUNDLE)", flush=True)
    if not settings.auth_enabled:
        print(f"  WARNING      authentication is OFF (OUTCROP_AUTH={settings.auth}): every request acts as the "
              f"root of account {services.iam.default_account()}. Use this for local experiments only.", flush=True)
    config = uvicorn.Config(BedrockApp(services), host=settings.host, port=settings.port,
                            log_level=settings.log_level, access_log=False, lifespan="on",
                            timeout_graceful_shutdown=10, http=http_protocol(settings.http_header_timeout_seconds),
                            timeout_keep_alive=settings.http_keep_alive_seconds,
                            limit_concurrency=settings.http_max_connections,
                            h11_max_incomplete_event_size=settings.http_max_header_bytes, **tls)
    server = _Server(config)
    server.run()
    return 0 if server.started else 1


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, with a deadline for request headers and a hard cap on connections.

    uvicorn (0.55) has no header timeout: its keep-alive timer runs only after a response and any byte
    received cancels it, so a connection that never completes its request headers (a client sending a
    byte now and then) stays open forever, holding a file descriptor. Here a timer is armed when a
    connection opens and again when each response ends; when it fires, the connection is closed unless
    a request's headers have arrived since (h11 no longer sees the client IDLE). A connection beyond
    `limit_concurrency` is closed at once instead of being held open only to be answered 503.
    """

    #: Seconds to complete a request's headers; set per server by `http_protocol`.
    header_timeout: float = 10.0

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self._header_timer = None
        super().connection_made(transport)
        if self.limit_concurrency is not None and len(self.connections) > self.limit_concurrency:
            transport.close()  # connection_lost forgets it
            return
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_timeout_expired)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout_expired(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def http_protocol(header_timeout: float) -> type[HeaderTimeoutProtocol]:
    """The protocol class uvicorn instantiates per connection, with this server's header timeout."""
    return type("OutcropHTTPProtocol", (HeaderTimeoutProtocol,), {"header_timeout": header_timeout})


class _Server(uvicorn.Server):
    """uvicorn's server, except that a stop by SIGTERM or SIGINT exits 0 once shutdown is done.

    On either signal uvicorn stops accepting, lets running requests finish, then runs the lifespan
    shutdown (which closes the database); then it re-raises the signal, so the process would end
    "killed by SIGTERM". A stop that went as planned is a success to supervisors and scripts.
    """

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _redact(url: str) -> str:
    """Never print a database password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


if __name__ == "__main__":
    sys.exit(run(argparse.Namespace(data_dir=None, host=None, port=None, tls=None)))
