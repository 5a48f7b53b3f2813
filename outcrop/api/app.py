"""The ASGI application: one port for bedrock, bedrock-runtime, bedrock-agent and bedrock-agent-runtime.

Plain ASGI rather than a framework router, because routing must see the raw path: frameworks decode
`%2F` before matching, which splits a percent-encoded ARN into several path segments.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio

from outcrop.api import iam as iam_api
from outcrop.api import insights as insights_api
from outcrop.api import rating
from outcrop.api.asgi import is_tls, read_body
from outcrop.api.auth import authenticate
from outcrop.api.bedrock import protocol
from outcrop.api.bedrock.operations import (
    AUDITED_SERVICES,
    HANDLERS,
    RequestContext,
    http_status,
    invoke,
    load_handlers,
)
from outcrop.api.console import ConsoleApp
from outcrop.api.console.app import PREFIX as CONSOLE
from outcrop.api.openai import OpenAIDoor, is_door_path
from outcrop.errors import (
    BedrockError,
    Cancelled,
    ConflictException,
    InternalServerException,
    NotImplementedException,
    UnknownOperationException,
    ValidationException,
)
from outcrop.iam.audit import SUCCESS, record_event
from outcrop.iam.principal import Principal
from outcrop.inference.engine import READY
from outcrop.runtime.tables import UsageStatus
from outcrop.services import Services

#: Worker threads for handlers (parsing, database, waiting on a generation).
THREADS = 256
#: The access log's status for a request whose client hung up before its answer (nginx's "client closed request").
CLIENT_CLOSED_REQUEST = 499
#: Readiness for load balancers and scripts: unauthenticated, so it says only which preloaded models are ready.
HEALTH = "/_outcrop/health"

log = logging.getLogger("outcrop.api")
access_log = logging.getLogger("outcrop.access")


@dataclass(frozen=True)
class JsonApi:
    """One of Outcrop's own JSON APIs: `POST <prefix><Action>`, SigV4-signed, a JSON object in and out."""

    prefix: str
    service: str
    action_of: Callable[[str, str], str]
    #: (services, principal, action, body, policy context) -> the JSON response; authorizes first.
    handle: Callable[[Services, Principal, str, dict[str, Any], dict[str, Any]], bytes]


#: The route table, first match wins: the raters' pages and the console (their own ASGI apps, a session cookie
#: rather than SigV4), Outcrop's JSON APIs, then the four Bedrock services, whose routes come from botocore's
#: models.
PAGES = rating.PREFIX
JSON_APIS = (
    JsonApi(iam_api.PREFIX, iam_api.SERVICE, iam_api.action_of,
            lambda services, caller, action, body, context: iam_api.handle(
                services.iam, caller, action, body, context)),
    JsonApi(insights_api.PREFIX, insights_api.SERVICE, insights_api.action_of,
            lambda services, caller, action, body, context: insights_api.handle(
                services.insights, services.iam, caller, action, body, context)),
)


def error_response(error: BedrockError, request_id: str, service: str = "") -> tuple[int, list[tuple[bytes, bytes]],
                                                                                     bytes]:
    """Bedrock's error shape: the code in `x-amzn-ErrorType` and again as `__type` in the body."""
    body = json.dumps({"__type": error.code, "message": error.message}).encode()
    headers = [(b"content-type", b"application/json"),
               (b"x-amzn-errortype", error.code.encode()),
               (b"x-amzn-requestid", request_id.encode())]
    return http_status(error, service), headers, body


class BedrockApp:
    def __init__(self, services: Services) -> None:
        self.services = services
        load_handlers()
        self.rating = rating.RatingApp(services.human, services.iam, services.settings.data_dir,
                                       secure_cookie=services.settings.tls_enabled)
        self.console = ConsoleApp(services)
        self.openai = OpenAIDoor(services, _run_watching, _stream)  # /v1: the OpenAI-compatible door

    async def __call__(self, scope: dict[str, Any], receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request_id = str(uuid.uuid4())
        started = time.perf_counter()
        method, raw_path = scope["method"], _raw_path(scope)
        if raw_path == HEALTH and method in ("GET", "HEAD"):
            await self._health(method, send)
            return
        if raw_path == PAGES or raw_path.startswith(PAGES + "/"):
            await self.rating(scope, receive, send)
            return
        if raw_path == CONSOLE or raw_path.startswith(CONSOLE + "/") or (raw_path == "/" and method == "GET"):
            await self.console(scope, receive, send)
            return
        if is_door_path(method, raw_path):
            await self.openai(scope, receive, send)
            return
        api = next((a for a in JSON_APIS if raw_path.startswith(a.prefix)), None)
        service, operation, status = "-", "-", 500
        targets: list[str] = []  # what the request acts on, for the audit: filled by `invoke`
        principal: Principal | None = None
        headers: dict[str, str] = {}
        error: BedrockError | None = None
        response_started = False
        hung_up = threading.Event()  # the client's disconnect, handed to the work as its cancel flag
        try:
            if api is not None:
                service, operation = api.service, api.action_of(method, raw_path)
            else:
                route, labels = self._route(method, raw_path)
                service, operation = route.service, route.name
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            body = await self._read_body(headers, receive)
            client_ip = (scope.get("client") or ("", 0))[0]
            query = scope.get("query_string", b"").decode("latin-1")
            tls = is_tls(scope)
            context = {"aws:SourceIp": client_ip, "aws:SecureTransport": tls}

            def call() -> protocol.WireResponse:  # signatures, parsing and models stay off the event loop
                nonlocal principal
                principal = authenticate(self.services.iam, auth_enabled=self.services.settings.auth_enabled,
                                         service=service, method=method, raw_path=raw_path, query=query,
                                         headers=headers, body=body, tls=tls, client_ip=client_ip,
                                         console=self.console.api_principal)
                if api is not None:
                    answer = api.handle(self.services, principal, operation, iam_api.parse_body(body), context)
                    return protocol.WireResponse(200, {"Content-Type": "application/json"}, answer)
                params = protocol.parse_request(route, labels, query, headers, body)
                ctx = RequestContext(request_id=request_id, principal=principal, services=self.services,
                                     source_ip=client_ip, headers=headers, cancelled=hung_up,
                                     conditions=context, resources=targets)
                return protocol.serialize_response(route, invoke(ctx, service, operation, params))

            wire = await _run_watching(call, receive, hung_up)
            status = wire.status
            response_headers = [(k.lower().encode(), v.encode()) for k, v in wire.headers.items()]
            response_headers.append((b"x-amzn-requestid", request_id.encode()))
            await send({"type": "http.response.start", "status": status, "headers": response_headers})
            response_started = True
            if wire.stream is not None:
                await _stream(wire.stream, send, receive, hung_up)
            await send({"type": "http.response.body", "body": wire.body})
        except Cancelled:  # the client hung up and its generation was called off: no one to answer
            log.info("request %s (%s:%s) cancelled: the client hung up", request_id, service, operation)
            status = CLIENT_CLOSED_REQUEST
        except Exception as exc:  # every failure leaves in Bedrock's error shape, never as a stack trace
            exc = lost_race(exc, operation)
            if not isinstance(exc, BedrockError):
                log.exception("request %s (%s:%s) failed", request_id, service, operation)
                exc = InternalServerException(f"Internal error; request id {request_id}")
            error = exc
            if response_started:  # the status line is out (a stream broke off): nothing more can be said
                log.warning("request %s (%s:%s) ended after its response began: %s", request_id, service,
                            operation, exc.code)
            else:
                status, error_headers, error_body = error_response(exc, request_id, service)
                await send({"type": "http.response.start", "status": status, "headers": error_headers})
                await send({"type": "http.response.body", "body": error_body})
        finally:
            access_log.info("%s %s %s:%s %d %.1fms %s", method, raw_path, service, operation, status,
                            (time.perf_counter() - started) * 1000, request_id)
            if service in AUDITED_SERVICES:
                await anyio.to_thread.run_sync(lambda: record_event(
                    self.services.db, service=service, operation=operation,
                    result=(error.code if error else UsageStatus.CANCELLED if status == CLIENT_CLOSED_REQUEST
                            else SUCCESS),
                    status=status, principal=principal, resource=", ".join(targets) or "*",
                    source_ip=(scope.get("client") or ("", 0))[0], request_id=request_id,
                    user_agent=headers.get("user-agent")))

    def _route(self, method: str, raw_path: str) -> tuple[protocol.Route, dict[str, str]]:
        found = protocol.match_route(method, raw_path)
        if found is None:
            raise UnknownOperationException(f"No Bedrock operation answers {method} {raw_path}")
        route, labels = found
        if (route.service, route.name) not in HANDLERS:
            raise NotImplementedException(f"{route.name} ({route.service}) is not available in Outcrop yet")
        return route, labels

    async def _read_body(self, headers: dict[str, str], receive) -> bytes:
        """The whole body, refused before reading when it is declared (or turns out) too large."""
        limit = self.services.settings.max_request_bytes
        declared = headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise ValidationException(f"The request body is {declared} bytes; the limit is {limit}")
        body = await read_body(receive, limit)
        if body is None:
            raise ValidationException(f"The request body exceeds the limit of {limit} bytes")
        return body

    async def _health(self, method: str, send) -> None:
        """{"status": "loading"|"ready"|"failed", "models": {model id: state}}: 200 when ready, else 503.

        The states are the preloaded models' (`Preload.models`): no paths, no error messages, nothing an
        anonymous caller should not see. Not in the access log: a load balancer asks every few seconds."""
        preload = self.services.preload
        status = preload.status() if preload is not None else READY
        body = json.dumps({"status": status, "models": preload.models() if preload is not None else {}}).encode()
        await send({"type": "http.response.start", "status": 200 if status == READY else 503,
                    "headers": [(b"content-type", b"application/json"), (b"cache-control", b"no-store"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # Each non-streaming generation holds a worker thread while its batch runs; anyio's
                # default of 40 threads would cap concurrency below what a batch can take.
                anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS
                if self.services.preload is not None:
                    self.services.preload.start()  # in the background: the server listens at once
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.services.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _raw_path(scope: dict[str, Any]) -> str:
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else scope.get("path", "/")
    return path.split("?", 1)[0]


def lost_race(exc: Exception, operation: str) -> Exception:
    """A create or update that lost a race to another server (or thread) for a unique name: the check before its
    insert saw no such name, the database's unique index refused its row. The caller is told so as Bedrock tells of
    a name in use (ConflictException), not with an internal error. Other integrity errors (a foreign key, a NOT
    NULL) stay what they are: a bug, logged and answered as an internal error."""
    from sqlalchemy.exc import IntegrityError

    orig = getattr(exc, "orig", None)
    unique = getattr(orig, "sqlstate", None) == "23505" or getattr(orig, "pgcode", None) == "23505" or \
        "UNIQUE constraint failed" in str(orig)  # PostgreSQL's unique_violation, SQLite's message
    if isinstance(exc, IntegrityError) and unique and operation.startswith(("Create", "Update")):
        return ConflictException(f"{operation} conflicts with a concurrent request: a resource with the same name "
                                 "was created at the same moment")
    return exc


async def _run_watching(call, receive, hung_up: threading.Event):
    """Run a blocking handler in a worker thread while watching for the client to hang up.

    A non-streaming generation holds its worker thread until the whole answer exists; without a watch,
    a client that disconnects (a timeout, a killed script) would leave it generating to max_tokens for
    no one. On `http.disconnect` the `hung_up` event is set: the handler handed it on as the
    generation's cancel flag, so the sequence leaves the batch at the next step and the handler raises
    Cancelled. The thread is not abandoned; its outcome is awaited as always. Its error is re-raised
    as itself, not inside the task group's ExceptionGroup, so that Bedrock errors still answer."""
    outcome: list = []
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(_watch_disconnect, receive, hung_up)
        try:
            outcome.append(await anyio.to_thread.run_sync(call))
        except Exception as exc:
            outcome.append(exc)
        finally:
            tasks.cancel_scope.cancel()
    if isinstance(outcome[0], Exception):
        raise outcome[0]
    return outcome[0]


async def _watch_disconnect(receive, hung_up: threading.Event) -> None:
    """Set `hung_up` when the client disconnects (the request body has been read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    hung_up.set()


async def _stream(stream, send, receive, hung_up: threading.Event) -> None:
    """Send an event stream as it is produced; a client that hangs up stops the generation behind it.

    The events come from a blocking generator (a model's token queue), pulled in a worker thread one
    item at a time. When the client disconnects, `hung_up` (the generation's cancel flag) is set, so
    the sequence leaves the batch at once and the pull waiting for its next token ends; then pulling
    stops and the generator is closed, instead of generating to the token limit for no one."""
    iterator = iter(stream)
    done = object()
    async with anyio.create_task_group() as tasks:
        async def watch_disconnect() -> None:
            await _watch_disconnect(receive, hung_up)
            tasks.cancel_scope.cancel()

        tasks.start_soon(watch_disconnect)
        try:
            while (chunk := await anyio.to_thread.run_sync(next, iterator, done)) is not done:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            tasks.cancel_scope.cancel()
            with anyio.CancelScope(shield=True):
                await _close(iterator)


async def _close(iterator) -> None:
    """Close a generator that a worker thread may still be advancing (then wait for it to let go)."""
    for _ in range(200):
        try:
            iterator.close()
            return
        except ValueError:  # "generator already executing" in the worker thread
            await anyio.sleep(0.05)
    log.warning("an abandoned event stream could not be closed")
