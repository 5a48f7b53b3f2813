"""`outcrop serve`: the one process that answers all four Bedrock services."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading

import uvicorn

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
    from outcrop.api.services import Services

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
                            timeout_graceful_shutdown=10, **tls)
    server = _Server(config)
    server.run()
    return 0 if server.started else 1


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
