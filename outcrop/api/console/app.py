"""The console's door: sign-in, sessions, CSRF, the route table, and how a page calls the platform.

A page is a function `(visit, **groups) -> Response` registered with `@page(method, pattern)`. It never
reaches a service directly: `visit.call(service, operation, params)` validates `params` against botocore's
model of that operation and goes through `operations.invoke` as the signed-in principal, exactly as the API
does (the same canonical resources, the same IAM check, the same handler, the same audit event), so a page
may do what that principal's API call may, and a form shows the API's own error text. `visit.call_json`
does the same for Outcrop's JSON APIs (IAM, insights), `visit.store()` is the object store as the principal
sees it. What pages stream or poll (a chat, a job's progress) their script asks of the API itself, signed
by the session cookie and the CSRF token (`api_principal`).

Sessions are the raters' (`api.sessions`): a signed cookie, HttpOnly and SameSite=Strict, its path `/`
so that the page's script reaches the API with it. Every POST to a page and every API call made with the
cookie carries the session's CSRF token (a form field or the `X-Outcrop-Csrf` header) and a same-origin
`Origin`; a request that lacks either is refused. The CSP allows this server's own scripts, styles and
fetches and nothing else: no inline script, no other origin.
"""

from __future__ import annotations

import email.parser
import email.policy
import functools
import json
import logging
import mimetypes
import re
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import anyio

from outcrop.api import asgi
from outcrop.api import iam as iam_api
from outcrop.api import insights as insights_api
from outcrop.api.asgi import HTTPS, read_body
from outcrop.api.bedrock.operations import RequestContext, audit, call, http_status, iam_action, load_handlers
from outcrop.api.bedrock.resources import resources as named_resources
from outcrop.api.sessions import (
    MAX_FORM_BYTES,
    PLAIN_HTTP_REFUSED,
    Refusal,
    Response,
    Sessions,
    SignInThrottle,
    check_sign_in,
    cookies,
    end_session,
    record_sign_in,
    same_origin,
    session_principal,
)
from outcrop.errors import AccessDeniedException, BedrockError
from outcrop.iam.audit import SUCCESS
from outcrop.iam.principal import Principal, principal_arn
from outcrop.iam.scoped_store import ScopedStore
from outcrop.services import Services
from outcrop.web import render

PREFIX = "/console"
COOKIE = "outcrop_console"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-outcrop-csrf"
SESSION_SECONDS = 8 * 3600
#: Most parts an upload form may have (a file, its key, the token, a few fields); more is an attack on the parser.
MAX_FORM_PARTS = 16
AUDIT_SERVICE = "outcrop-console"  # sign-ins are audited as outcrop-console:SignIn
#: Static files the console serves (from outcrop/web/static), by URL name.
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".svg": "image/svg+xml", ".md": "text/plain; charset=utf-8", "": "text/plain; charset=utf-8"}
#: Pages only: this server's own scripts, styles, images and fetches; nothing inline, nothing from elsewhere.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
#: The standalone reports shown inside the console (evaluation, insights) carry their own inline CSS and SVG
#: charts and no script: they get this CSP instead.
#: Sandboxed, and no form may post anywhere: a report is a file in a bucket, which whoever may write there could
#: have replaced with a page of their own. The sandbox keeps the page's origin (`allow-same-origin`, never with
#: `allow-scripts`: no script runs in it at all) so that the page framing it can size the frame to the report.
REPORT_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'; "
              "base-uri 'none'; form-action 'none'; sandbox allow-same-origin")



@dataclass(frozen=True)
class Room:
    """One room of the console: its side-menu link and home-page tile, shown to a principal whose policy allows the
    IAM action its page's listing needs (on `*`, as the API authorizes a listing; IAM's and insights' on the account's
    resource, as their APIs do). A room denied is not drawn: its page would only say why not."""

    path: str  # after /console/
    label: str
    blurb: str
    action: str

    def resource(self, principal: Principal, region: str) -> str:
        if self.action.startswith("iam:"):
            return principal_arn(principal.account_id, "root", "")
        if self.action.startswith("outcrop:"):
            return insights_api.resource_arn(region, principal.account_id)
        return "*"


ROOMS = (
    Room("models", "Model catalog", "models, their modalities and weights", "bedrock:ListFoundationModels"),
    Room("playground", "Playground", "chat, text, embeddings and images, two models side by side",
         "bedrock:ListFoundationModels"),
    Room("customization", "Fine-tuning", "jobs, loss curves, custom models", "bedrock:ListModelCustomizationJobs"),
    Room("provisioned", "Provisioned throughput", "model units for custom models",
         "bedrock:ListProvisionedModelThroughputs"),
    Room("evaluation", "Evaluation", "jobs and their reports", "bedrock:ListEvaluationJobs"),
    Room("knowledge-bases", "Knowledge bases", "documents synced from S3, asked in a test panel",
         "bedrock:ListKnowledgeBases"),
    Room("agents", "Agents", "instructions, actions and knowledge, tried with their trace", "bedrock:ListAgents"),
    Room("guardrails", "Guardrails", "filters, tried on a text", "bedrock:ListGuardrails"),
    Room("storage", "Object store", "buckets, upload, download", "s3:ListAllMyBuckets"),
    Room("iam", "IAM", "users, roles, policies, access keys", "iam:ListUsers"),
    Room("insights", "Insights", "business metrics and the bill", "outcrop:GetReport"),
)

log = logging.getLogger("outcrop.api.console")
access_log = logging.getLogger("outcrop.access")

Page = Callable[..., Response]
_ROUTES: list[tuple[str, re.Pattern[str], Page]] = []


def page(method: str, pattern: str) -> Callable[[Page], Page]:
    """Register a page for `method` and the path after /console/ (a regex; its named groups are arguments)."""
    def register(fn: Page) -> Page:
        _ROUTES.append((method, re.compile(pattern + r"\Z"), fn))
        return fn
    return register


@dataclass
class Visit:
    """One request to a console page by a signed-in principal."""

    app: ConsoleApp
    principal: Principal
    method: str
    path: str  # after /console/, still percent-encoded
    query: dict[str, str]
    form: dict[str, str]
    headers: dict[str, str]
    client: str
    csrf: str
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # multipart uploads: name -> (filename, data)
    secure: bool = False  # the request came over HTTPS (this server's TLS or a trusted proxy's)

    @property
    def services(self) -> Services:
        return self.app.services

    @property
    def conditions(self) -> dict[str, Any]:
        return {"aws:SourceIp": self.client, "aws:SecureTransport": self.secure}

    def call(self, service: str, operation: str, params: dict[str, Any] | None = None) -> Any:
        """The operation as this principal's API call: validated, authorized, run and audited as the API does."""
        try:
            return call(self._context(), service, operation, params or {})
        except BedrockError as exc:
            exc.status = http_status(exc, service)  # the page answers with the API's status for this service
            raise

    def _context(self) -> RequestContext:
        return RequestContext(request_id=str(uuid.uuid4()), principal=self.principal, services=self.services,
                              source_ip=self.client, headers=self.headers, conditions=self.conditions)

    def listing(self, service: str, operation: str, member: str, params: dict[str, Any] | None = None
                ) -> tuple[list[dict[str, Any]], str]:
        """One page of a List operation (the page after `?next=<token>`), and the token of the next one or ""."""
        params = {**(params or {}), **({"nextToken": self.query["next"]} if self.query.get("next") else {})}
        listed = self.call(service, operation, params)
        return listed[member], listed.get("nextToken") or ""

    def call_json(self, api: str, action: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One of Outcrop's JSON APIs ("iam" or "insights") as this principal, authorized and audited as the API."""
        service = iam_api.SERVICE if api == "iam" else insights_api.SERVICE
        ctx, error = self._context(), None
        try:
            if api == "iam":
                answer = iam_api.handle(self.services.iam, self.principal, action, body or {}, self.conditions)
            else:
                answer = insights_api.handle(self.services.insights, self.services.iam, self.principal, action,
                                             body or {}, self.conditions)
            return json.loads(answer)
        except BedrockError as exc:
            error = exc
            raise
        finally:
            audit(ctx, service, action, error, "*")

    def store(self) -> ScopedStore:
        """The object store as this principal sees it (every read, write and listing authorized)."""
        return ScopedStore(self.services.store, self.services.iam, self.principal, self.conditions)

    def may(self, action: str, resource: str = "*") -> bool:
        """Whether this principal's policies allow `action` on `resource`: IAM's own decision (`IamService.authorize`,
        as every API call gets), asked before drawing a link or a form; the call itself is authorized as always."""
        try:
            self.services.iam.authorize(self.principal, action, resource, self.conditions)
        except BedrockError:
            return False
        return True

    def refusal(self, operation: str, candidates: Iterable[dict[str, Any]] = ({},)) -> BedrockError | None:
        """None when this principal may call `operation` with at least one of `candidates` (its parameters; `{}`:
        the operation on `*`), authorized as `operations.invoke` authorizes the call (on each canonical resource
        the parameters name); otherwise the API's AccessDeniedException for the first. Candidates are tried in
        turn, so a generator lists its costlier ones only when the first are refused. A create form asks this
        before it is drawn, its link before it is shown."""
        first: BedrockError | None = None
        for params in candidates:
            try:
                for target in named_resources(self.services, self.principal.account_id, operation, params):
                    self.services.iam.authorize(self.principal, iam_action(operation), target, self.conditions)
                return None
            except BedrockError as exc:
                first = first or exc
        return first

    def require(self, operation: str, candidates: Iterable[dict[str, Any]] = ({},)) -> None:
        """Raise the API's refusal unless `refusal` finds the call allowed (the page then says why not, 403)."""
        refused = self.refusal(operation, candidates)
        if refused is not None:
            raise refused

    def rooms(self) -> list[Room]:
        """The rooms this principal's policy opens, in the menu's order."""
        region = self.services.settings.region
        return [room for room in ROOMS if self.may(room.action, room.resource(self.principal, region))]

    def render(self, template: str, title: str, status: int = 200, **context: Any) -> Response:
        """A page from web/templates/console/ in the console's layout (its menu: the rooms the policy opens)."""
        body = render(f"console/{template}", title=title, prefix=PREFIX, csrf=self.csrf, csrf_field=CSRF_FIELD,
                      principal=self.principal, section=self.path.split("/", 1)[0], rooms=self.rooms(), **context)
        return Response(status, body)

    def denied(self, error: BedrockError) -> Response:
        """The page a principal sees where its policy stops it (or the platform says no): the API's own words."""
        return self.render("message.html", "Not allowed" if isinstance(error, AccessDeniedException) else error.code,
                           status=error.status, heading=error.code, message=error.message)

    def redirect(self, where: str) -> Response:
        return Response(303, "", [("location", where if where.startswith("/") else f"{PREFIX}/{where}")])


class ConsoleApp:
    """The ASGI app for /console; `BedrockApp` hands it every request under that path."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.sessions = Sessions.for_data_dir(services.settings.data_dir, "console", SESSION_SECONDS)
        self.secure_cookie = services.settings.tls_enabled
        self.throttle = SignInThrottle()
        load_handlers()
        from outcrop.api.console import pages  # noqa: F401  (fills the route table)

    # -- the API's door for the console's scripts --------------------------------------------------

    def api_principal(self, headers: dict[str, str]) -> Principal | None:
        """The principal of an API request made by a console page: its session cookie, the session's CSRF token
        in X-Outcrop-Csrf, and no foreign Origin. Anything less is no console call (the API then asks for a
        signature as usual), so another site's script or form cannot act with a visitor's cookie."""
        cookie = cookies(headers.get("cookie", "")).get(COOKIE)
        token = headers.get(CSRF_HEADER, "")
        if not cookie or not token or not same_origin(headers) or not self.sessions.csrf_ok(cookie, token):
            return None
        return session_principal(self.services.iam, self.sessions, cookie)

    # -- ASGI ------------------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive, send) -> None:
        started = time.perf_counter()
        method = scope["method"]
        raw = scope.get("raw_path")
        path = (raw.decode("latin-1") if raw else scope.get("path", "/")).split("?", 1)[0]
        query = dict(urllib.parse.parse_qsl(scope.get("query_string", b"").decode("latin-1"),
                                            keep_blank_values=True))
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        body = await read_body(receive, self.services.settings.max_request_bytes)
        client = asgi.client_host(scope)
        if body is None:
            response = Response(413, render("console/message.html", title="Too large", prefix=PREFIX, csrf="",
                                            csrf_field=CSRF_FIELD, principal=None, section="", heading="Too large",
                                            message="That upload is larger than this server takes."))
        else:
            transport = asgi.transport(self.secure_cookie or asgi.is_tls(scope), client)
            response = await anyio.to_thread.run_sync(self.handle, method, path, query, headers, body, transport,
                                                      client)
        if response.delay:
            await anyio.sleep(response.delay)
        out = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in _with_defaults(response).headers]
        data = response.body if isinstance(response.body, bytes) else response.body.encode()
        await send({"type": "http.response.start", "status": response.status, "headers": out})
        await send({"type": "http.response.body", "body": data})
        access_log.info("%s %s console %d %.1fms", method, path, response.status,
                        (time.perf_counter() - started) * 1000)

    def handle(self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes,
               transport: str, client: str) -> Response:
        """One request (in a worker thread: pages touch the database), with the console's security headers."""
        return _with_defaults(self._handle(method, path, query, headers, body, transport, client))

    def _handle(self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes,
                transport: str, client: str) -> Response:
        if path != PREFIX and not path.startswith(PREFIX + "/"):  # the server's root: the console's front door
            return Response(303, "", [("location", f"{PREFIX}/")])
        rest = path[len(PREFIX):].lstrip("/")
        try:
            if rest.startswith("static/") and method in ("GET", "HEAD"):
                return _static(rest[len("static/"):])
            if method == "POST" and not self._origin_ok(headers):
                return Response(403, self._message("Refused", "That form was sent from another site."))
            multipart = headers.get("content-type", "").startswith("multipart/form-data")
            if method == "POST" and (multipart or len(body) > MAX_FORM_BYTES) and not _upload(rest):
                return Response(413, self._message("Too large", "That form is larger than this page takes."))
            if rest == "sign-in":
                if method == "POST":
                    return self._sign_in(_form(headers, body)[0], transport, client, headers.get("user-agent"))
                return Response(200, self._sign_in_page(_plain_refusal(transport)))
            principal, cookie = self._visitor(headers)
            if principal is None:
                return Response(303, "", [("location", f"{PREFIX}/sign-in")]
                                + ([("set-cookie", self._cookie("", 0, transport))]
                                   if COOKIE in headers.get("cookie", "") else []))
            # Parsed only now: a large upload is read for a signed-in visitor alone, and in a bounded number of parts.
            form, files = _form(headers, body) if method == "POST" else ({}, {})
            csrf = self.sessions.csrf_token(cookie) if cookie else ""
            if method == "POST" and cookie and not self.sessions.csrf_ok(cookie, form.get(CSRF_FIELD, "")):
                return Response(403, self._message("Refused", "That form's security token is missing or stale: "
                                                   "reload the page and send it again."))
            if rest == "sign-out" and method == "POST":
                end_session(self.services.iam, self.sessions, cookie)
                return self._signed_out()
            visit = Visit(self, principal, method, rest, query, form, headers, client, csrf, files,
                          secure=transport == HTTPS)
            for route_method, pattern, fn in _ROUTES:
                found = pattern.match(rest)
                if found and route_method == method:
                    try:
                        return fn(visit, **{k: urllib.parse.unquote(v) for k, v in found.groupdict().items()})
                    except BedrockError as exc:  # what the API would have answered, as a page
                        return visit.denied(exc)
            return visit.render("message.html", "Not found", status=404, heading="Not found",
                                message="There is no such console page.")
        except Exception:  # a stack trace helps no one on a page; the log keeps it
            log.exception("console page %s %s failed", method, path)
            return Response(500, self._message("Error", "Something went wrong on the server. Please try again."))

    # -- sessions ----------------------------------------------------------------------------------

    def _visitor(self, headers: dict[str, str]) -> tuple[Principal | None, str]:
        if not self.services.settings.auth_enabled:  # OUTCROP_AUTH=off: every caller is the first account's root
            return Principal.account_root(self.services.iam.default_account()), ""
        cookie = cookies(headers.get("cookie", "")).get(COOKIE, "")
        return session_principal(self.services.iam, self.sessions, cookie), cookie

    def _origin_ok(self, headers: dict[str, str]) -> bool:
        """A POST from this site. With sessions, its CSRF token proves that too; with authentication off there is no
        session to bind a token to, so the browser's Origin must be present and this server's (browsers send it on
        every form POST; "null", what a sandboxed frame on any site sends, is not this server)."""
        if self.services.settings.auth_enabled:
            return same_origin(headers)
        origin = headers.get("origin", "")
        return bool(origin) and origin != "null" and same_origin(headers)

    def _cookie(self, value: str, max_age: int, transport: str) -> str:
        # Strict: no other site's link or form arrives with it. Path /: the page's script calls the API with it.
        return (f"{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}"
                + ("; Secure" if transport == HTTPS else ""))

    def _sign_in(self, form: dict[str, str], transport: str, client: str, user_agent: str | None) -> Response:
        key_id, secret = form.get("access_key_id", "").strip(), form.get("secret_access_key", "").strip()

        attempt = functools.partial(record_sign_in, self.services.iam, door=AUDIT_SERVICE, resource=PREFIX,
                                    key_id=key_id, client=client, user_agent=user_agent)
        principal = check_sign_in(self.services.iam, self.throttle, key_id, secret, transport, client)
        if isinstance(principal, Refusal):
            attempt(result=principal.result, status=principal.status, principal=principal.principal)
            return Response(principal.status, self._sign_in_page(principal.message, key_id), principal.headers,
                            delay=principal.delay)
        attempt(result=SUCCESS, status=303, principal=principal)
        cookie = self.sessions.issue(principal.arn, key_id)
        return Response(303, "", [("location", f"{PREFIX}/"),
                                  ("set-cookie", self._cookie(cookie, self.sessions.lifetime, transport))])

    def _signed_out(self) -> Response:
        return Response(303, "", [("location", f"{PREFIX}/sign-in"),
                                  ("set-cookie", f"{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")])

    def _sign_in_page(self, error: str = "", key_id: str = "") -> str:
        return render("console/sign_in.html", title="Sign in", prefix=PREFIX, csrf="", csrf_field=CSRF_FIELD,
                      principal=None, section="", error=error, key_id=key_id)

    def _message(self, heading: str, message: str) -> str:
        return render("console/message.html", title=heading, prefix=PREFIX, csrf="", csrf_field=CSRF_FIELD,
                      principal=None, section="", heading=heading, message=message)


def _upload(rest: str) -> bool:
    """The pages that take a file (multipart, up to the server's request limit): the object store's upload."""
    return re.fullmatch(r"storage/[^/]+/upload", rest) is not None


def _with_defaults(response: Response) -> Response:
    """The headers every console response has unless it says otherwise (a static file's caching, a report's CSP)."""
    defaults = {"cache-control": "no-store", "x-content-type-options": "nosniff", "referrer-policy": "same-origin",
                "content-type": "text/html; charset=utf-8", "content-security-policy": CSP}
    names = {k.lower() for k, _ in response.headers}
    response.headers = [(k, v) for k, v in defaults.items() if k not in names] + response.headers
    return response


def _plain_refusal(transport: str) -> str:
    return PLAIN_HTTP_REFUSED if transport == asgi.PLAIN else ""


@cache
def _static_files() -> dict[str, bytes]:
    """Every file under web/static by its URL name, read once: a name not in it is a 404 (no path is ever built
    from a request, and nothing a request names is remembered)."""
    root = resources.files("outcrop.web").joinpath("static")
    found: dict[str, bytes] = {}

    def walk(folder, prefix: str) -> None:
        for entry in folder.iterdir():
            if entry.is_dir():
                walk(entry, f"{prefix}{entry.name}/")
            elif entry.is_file():
                found[prefix + entry.name] = entry.read_bytes()
    walk(root, "")
    return found


def _static(name: str) -> Response:
    data = _static_files().get(name)
    if data is None:
        return Response(404, b"", [("content-type", "text/plain; charset=utf-8")])
    suffix = "." + name.rsplit(".", 1)[1] if "." in name.rsplit("/", 1)[-1] else ""
    kind = STATIC_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
    # The URL carries the file's hash (`static_url`), so a browser may keep it: a new release is a new URL.
    return Response(200, data, [("content-type", kind), ("cache-control", "public, max-age=86400, immutable")])


def _form(headers: dict[str, str], body: bytes) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]]:
    """A POST's fields (urlencoded or multipart) and its uploaded files."""
    kind = headers.get("content-type", "")
    if not kind.startswith("multipart/form-data"):
        return dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)), {}
    boundary = kind.partition("boundary=")[2].split(";", 1)[0].strip().strip('"')
    if not boundary or body.count(b"--" + boundary.encode("latin-1", "replace")) > MAX_FORM_PARTS + 1:
        return {}, {}  # no boundary, or more parts than any console form has: nothing is taken from it
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {kind}\r\n\r\n".encode("latin-1") + body)
    fields: dict[str, str] = {}
    files: dict[str, tuple[str, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        data = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is not None:
            files[name] = (filename, data)
        else:
            fields[name] = data.decode("utf-8", "replace")
    return fields, files
