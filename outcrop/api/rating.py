"""The raters' web pages for human evaluation, under `/_outcrop/evaluation/rate`.

Plain server-rendered HTML forms (outcrop/web/templates/rating*.html): every control is a native
radio button or text field with a label, so the pages work by keyboard (Tab between questions,
arrows within one, Enter submits) and without JavaScript; a few lines of inline script
(web/static/rating.js, allowed by its CSP hash) add digit shortcuts. A rater signs in with their
Outcrop access key once and gets a session cookie (HMAC-signed with a key derived from the data
dir's `secret.key`, HttpOnly, SameSite=Lax, a few hours long), which is why these requests skip
SigV4. Each answer is saved when submitted (Post/Redirect/Get), so closing the tab loses nothing.

Signing in sends the user's long-lived secret access key, so it is taken only over HTTPS (`outcrop
serve --tls`, or a proxy that says https) or from a loopback client; anywhere else the sign-in form
says so and checks nothing (the same rule as bearer API keys: `asgi.transport`). Repeated failures
lock the key ID and the address out for a while (`SignInThrottle`), and every attempt, with its
address and the key ID tried (never the secret), goes to the audit trail as outcrop-rating:SignIn.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import math
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any

import anyio

from outcrop.api import asgi
from outcrop.api.asgi import HTTPS, PLAIN, read_body
from outcrop.errors import (
    ConflictException,
    ResourceNotFoundException,
    ValidationException,
)
from outcrop.evaluation.human.items import TaskView, answers_to_values
from outcrop.evaluation.human.methods import (
    CHOICE,
    COMPARISON_LIKERT,
    LIKERT,
    PER_RESPONSE_METHODS,
    RANK,
    THUMBS,
    TIE,
    Metric,
)
from outcrop.evaluation.human.ratings import ALREADY_RATED, ITEM_FULL
from outcrop.evaluation.human.service import HumanReview
from outcrop.iam.audit import SUCCESS, record_event
from outcrop.iam.principal import USER
from outcrop.iam.secrets import KEY_FILE_NAME, SecretBox
from outcrop.iam.service import IamService
from outcrop.web import render, static_hash

PREFIX = "/_outcrop/evaluation/rate"
COOKIE = "outcrop_rater"
SESSION_SECONDS = 8 * 3600
MAX_FORM_BYTES = 256 * 1024
#: How long a failed sign-in waits before its answer (on the event loop, never in a worker thread).
FAILED_SIGN_IN_DELAY = 0.3
#: The audit trail's name for these pages and their sign-in (every attempt is recorded, never the secret).
AUDIT_SERVICE, SIGN_IN = "outcrop-rating", "SignIn"
PLAIN_HTTP_REFUSED = ("Signing in sends your secret access key, so this server takes it only over HTTPS (or from "
                      "the machine it runs on). Ask its administrator to run `outcrop serve --tls`; programs that "
                      "call Outcrop with SigV4 or bearer keys are not affected.")
#: What a notice code in `?notice=` says (codes, not text, so a link cannot put words on the page).
NOTICES = {
    "saved": "Saved.",
    "already": "You had already rated that item; here is the next one.",
    "full": "That item got all its ratings from other raters meanwhile; here is the next one.",
}

access_log = logging.getLogger("outcrop.access")
log = logging.getLogger("outcrop.api.rating")


@dataclass
class Response:
    status: int
    body: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    #: Seconds to wait before answering (a failed sign-in's), awaited on the event loop.
    delay: float = 0.0


class Sessions:
    """Stateless session cookies: base64(JSON {arn, key, exp}) + "." + HMAC-SHA256 of it.

    The signing key is derived from `secret.key` (never the key itself, which encrypts stored
    secrets), so sessions survive restarts and every server sharing the data dir accepts them."""

    def __init__(self, secret: bytes, lifetime: int = SESSION_SECONDS) -> None:
        self._key = hmac.new(secret, b"outcrop rating sessions v1", hashlib.sha256).digest()
        self.lifetime = lifetime

    def _mac(self, payload: str) -> str:
        return base64.urlsafe_b64encode(hmac.new(self._key, payload.encode(), hashlib.sha256).digest()).decode()

    def issue(self, principal_arn: str, key_id: str) -> str:
        data = json.dumps({"arn": principal_arn, "key": key_id, "exp": int(time.time()) + self.lifetime})
        payload = base64.urlsafe_b64encode(data.encode()).decode()
        return f"{payload}.{self._mac(payload)}"

    def read(self, cookie: str) -> tuple[str, str] | None:
        """(principal ARN, access key id) of a valid, unexpired cookie; None otherwise."""
        if not cookie.isascii():  # compare_digest refuses non-ASCII str; no cookie we issue has any
            return None
        payload, _, mac = cookie.partition(".")
        if not payload or not hmac.compare_digest(mac.encode(), self._mac(payload).encode()):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(payload.encode()))
        except ValueError:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("exp"), int) or data["exp"] < time.time():
            return None
        return str(data.get("arn", "")), str(data.get("key", ""))


@dataclass
class _Failures:
    times: list[float] = field(default_factory=list)  # failures within the window
    strikes: int = 0  # locks so far: each one is twice as long as the last
    locked_until: float = 0.0
    last: float = 0.0


class SignInThrottle:
    """Backs sign-in off per access key ID and per client address after repeated failures.

    After `key_failures` failed sign-ins with one key ID within `window` seconds (or `address_failures`
    from one address), that key or address is locked: its attempts answer 429 with Retry-After, the
    secret unchecked, for `base_lock` seconds, twice as long at each further lock, up to `max_lock`.
    A key's count is cleared when it signs in; an address's only by time, so one valid key of one's
    own does not clear the way to guessing others'. Counts idle longer than `max_lock + window` go.

    The counts live in this server process's memory: a restart forgets them, and several servers
    sharing one database count apart. That is enough here: secrets are 40 random characters, so the
    backoff is against noise and spraying, and the audit trail keeps every attempt anyway.
    """

    #: Most keys and addresses tracked at once; beyond it the longest idle are forgotten first.
    MAX_TRACKED = 10_000

    def __init__(self, key_failures: int = 5, address_failures: int = 20, window: float = 900.0,
                 base_lock: float = 60.0, max_lock: float = 3600.0, clock=time.monotonic) -> None:
        self.limits = {"key": key_failures, "address": address_failures}
        self.window, self.base_lock, self.max_lock, self.clock = window, base_lock, max_lock, clock
        self._records: dict[tuple[str, str], _Failures] = {}
        self._lock = threading.Lock()  # sign-ins are handled in worker threads

    @staticmethod
    def _subjects(key_id: str, address: str) -> list[tuple[str, str]]:
        return [(kind, value[:128]) for kind, value in (("key", key_id), ("address", address)) if value]

    def locked(self, key_id: str, address: str) -> float:
        """Seconds until this key and this address may try again (0: now)."""
        now = self.clock()
        with self._lock:
            return max([self._records[s].locked_until - now for s in self._subjects(key_id, address)
                        if s in self._records] + [0.0])

    def failed(self, key_id: str, address: str) -> None:
        now = self.clock()
        with self._lock:
            for subject in self._subjects(key_id, address):
                record = self._records.get(subject)
                if record is None or now - record.last > self.max_lock + self.window:
                    self._make_room(now)
                    record = self._records[subject] = _Failures()
                record.times = [t for t in record.times if now - t < self.window] + [now]
                record.last = now
                if len(record.times) >= self.limits[subject[0]]:
                    record.locked_until = now + min(self.base_lock * 2 ** record.strikes, self.max_lock)
                    record.strikes, record.times = record.strikes + 1, []

    def succeeded(self, key_id: str) -> None:
        with self._lock:
            self._records.pop(("key", key_id[:128]), None)

    def _make_room(self, now: float) -> None:
        if len(self._records) < self.MAX_TRACKED:
            return
        for subject in [s for s, r in self._records.items() if now - r.last > self.max_lock + self.window]:
            del self._records[subject]
        if len(self._records) >= self.MAX_TRACKED:  # still full of recent ones: the longest idle tenth goes
            for subject in sorted(self._records, key=lambda s: self._records[s].last)[:self.MAX_TRACKED // 10]:
                del self._records[subject]


class RatingApp:
    """The ASGI app for PREFIX; `BedrockApp` hands it every request under that path."""

    def __init__(self, human: HumanReview, iam: IamService, data_dir, secure_cookie: bool = False) -> None:
        """`secure_cookie`: the server itself serves HTTPS (`outcrop serve --tls`)."""
        self.human = human
        self.iam = iam
        SecretBox(data_dir)  # makes secret.key if this data dir has none yet
        self.sessions = Sessions((data_dir / KEY_FILE_NAME).read_bytes().strip())
        self.secure_cookie = secure_cookie
        self.throttle = SignInThrottle()

    async def __call__(self, scope: dict[str, Any], receive, send) -> None:
        started = time.perf_counter()
        method = scope["method"]
        raw = scope.get("raw_path")
        path = (raw.decode("latin-1") if raw else scope.get("path", "/")).split("?", 1)[0]
        query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        body = await read_body(receive, MAX_FORM_BYTES)
        if body is None:
            response = Response(413, _page("Too large", "That form is too large."))
        else:
            client = asgi.client_host(scope)
            transport = asgi.transport(self.secure_cookie or asgi.is_tls(scope), client)
            response = await anyio.to_thread.run_sync(self.handle, method, path, query, headers, body, transport,
                                                      client)
        if response.delay:
            await anyio.sleep(response.delay)  # here, not in handle: a sleeping worker thread is one the server lacks
        page = response.body.encode()
        out = [(b"content-type", b"text/html; charset=utf-8"), (b"cache-control", b"no-store"),
               (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin"),
               (b"content-security-policy",
                f"default-src 'none'; style-src 'unsafe-inline'; script-src '{SCRIPT_HASH}'; "
                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'".encode())]
        out += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
        await send({"type": "http.response.start", "status": response.status, "headers": out})
        await send({"type": "http.response.body", "body": page})
        access_log.info("%s %s rating %d %.1fms", method, path, response.status,
                        (time.perf_counter() - started) * 1000)

    # -- routing (in a worker thread: everything below may touch the database) -----------------

    def handle(self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str],
               body: bytes, transport: str = PLAIN, client: str = "") -> Response:
        """`transport`: HTTPS, LOOPBACK (plain HTTP from this machine) or PLAIN (plain HTTP from elsewhere);
        `client`: the client's address."""
        rest = path[len(PREFIX):].strip("/")
        form = {k: v for k, v in urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)}
        try:
            if method == "POST" and not _same_origin(headers):
                return Response(403, _page("Refused", "That form was sent from another site."))
            if rest == "sign-in":
                if method == "POST":
                    return self._sign_in(form, transport, client, headers.get("user-agent"))
                next_path = _next_path((query.get("next") or [""])[0])
                return Response(200, _sign_in_page(PLAIN_HTTP_REFUSED if transport == PLAIN else "",
                                                   next_path=next_path))
            if rest == "sign-out" and method == "POST":
                return _redirect(f"{PREFIX}/sign-in", clear_cookie=True)
            rater = self._rater(headers)
            if rater is None:
                # A job's link (from an email, a chat) signs in and comes back to that job.
                back = f"?next={urllib.parse.quote(path, safe='')}" if rest.startswith("jobs/") else ""
                return _redirect(f"{PREFIX}/sign-in{back}", clear_cookie=COOKIE in headers.get("cookie", ""))
            if rest == "" and method == "GET":
                return Response(200, _jobs_page(rater, self.human.jobs_for(rater)))
            if rest.startswith("jobs/") and method in ("GET", "POST"):
                job_arn = urllib.parse.unquote(rest[len("jobs/"):])
                if method == "POST":
                    return self._submit(rater, job_arn, form)
                notice = NOTICES.get((query.get("notice") or [""])[0], "")
                return self._job_page(rater, job_arn, notice=notice)
            return Response(404, _page("Not found", "There is no such page.", rater))
        except ResourceNotFoundException as exc:  # other teams' jobs too: see human.teams.job_for_rater
            return Response(404, _page("Not available", exc.message, back=True))
        except Exception:  # a stack trace helps no rater; the log keeps it
            log.exception("rating page %s %s failed", method, path)
            return Response(500, _page("Error", "Something went wrong on the server. Please try again."))

    def _rater(self, headers: dict[str, str]) -> str | None:
        """The signed-in rater's ARN, while their cookie is valid and their access key still active."""
        cookie = _cookies(headers.get("cookie", "")).get(COOKIE)
        session = self.sessions.read(cookie) if cookie else None
        if session is None:
            return None
        arn, key_id = session
        found = self.iam.authenticate_key(key_id)  # a deactivated or deleted key ends its sessions
        return arn if found is not None and found[0].arn == arn else None

    def _sign_in(self, form: dict[str, str], transport: str, client: str = "", user_agent: str | None = None
                 ) -> Response:
        key_id, secret = form.get("access_key_id", "").strip(), form.get("secret_access_key", "").strip()
        next_path = _next_path(form.get("next", ""))

        def audit(result: str, status: int, principal=None) -> None:  # the key ID tried, never the secret
            record_event(self.iam.db, service=AUDIT_SERVICE, operation=SIGN_IN, result=result, status=status,
                         principal=principal, access_key_id=None if principal else key_id, resource=PREFIX,
                         source_ip=client, request_id=str(uuid.uuid4()), user_agent=user_agent)

        if transport == PLAIN:  # the secret crossed the network in clear once; it is not checked, nor welcome again
            audit("AccessDeniedException", 403)
            return Response(403, _sign_in_page(PLAIN_HTTP_REFUSED, key_id, next_path))
        wait = self.throttle.locked(key_id, client)
        if wait > 0:  # not even a right secret gets in now: a guesser learns nothing while locked out
            audit("ThrottlingException", 429)
            seconds = math.ceil(wait)
            return Response(429, _sign_in_page(f"Too many failed sign-ins with this access key or from this address. "
                                               f"Try again in {seconds} seconds.", key_id, next_path),
                            [("retry-after", str(seconds))], delay=FAILED_SIGN_IN_DELAY)  # no audit flood at line rate
        found = self.iam.authenticate_key(key_id) if key_id else None
        if found is None or not hmac.compare_digest(found[1].encode(), secret.encode()):
            self.throttle.failed(key_id, client)
            audit("UnrecognizedClientException", 401, found[0] if found else None)
            # A guesser pays for every try (a person mistyping does not notice); the wait is the caller's,
            # on the event loop. Guessing could not win anyway: secrets are 40 random characters (~240 bits).
            return Response(401, _sign_in_page("That access key ID and secret access key do not match an "
                                               "active key.", key_id, next_path), delay=FAILED_SIGN_IN_DELAY)
        principal = found[0]
        self.throttle.succeeded(key_id)
        if principal.kind != USER:
            audit("AccessDeniedException", 403, principal)
            return Response(403, _sign_in_page("Raters sign in with an IAM user's access key, not the "
                                               "account root's.", key_id, next_path))
        audit(SUCCESS, 303, principal)
        # Lax, not Strict: a job's link opened from an email or a chat must arrive signed in. Every change
        # is a POST, which Lax keeps off other sites' forms, and _same_origin checks besides.
        cookie = (f"{COOKIE}={self.sessions.issue(principal.arn, key_id)}; Path={PREFIX}; HttpOnly; "
                  f"SameSite=Lax; Max-Age={self.sessions.lifetime}" + ("; Secure" if transport == HTTPS else ""))
        return Response(303, "", [("location", next_path), ("set-cookie", cookie)])

    def _job_page(self, rater: str, job_arn: str, notice: str = "", view: TaskView | None = None,
                  error: str = "", form: dict[str, str] | None = None) -> Response:
        summary = self.human.job_summary(job_arn, rater)
        if view is None and summary["status"] == "InProgress":
            view = self.human.next_task(job_arn, rater)
        if view is None:
            return Response(200, _done_page(rater, summary, notice))
        return Response(400 if error else 200, _task_page(rater, summary, view, notice, error, form or {}))

    def _submit(self, rater: str, job_arn: str, form: dict[str, str]) -> Response:
        task_id = form.get("task", "")
        view = self.human.task_view(job_arn, task_id, rater)
        here = f"{PREFIX}/jobs/{urllib.parse.quote(job_arn, safe='')}"
        try:
            values = answers_to_values(view, _answers(view, form))
            comment = form.get("comment", "")
            self.human.submit(job_arn, task_id, rater, values, comment)
        except ValidationException as exc:
            return self._job_page(rater, job_arn, view=view, error=exc.message, form=form)
        except ConflictException as exc:
            if exc.message == ALREADY_RATED:
                return _redirect(f"{here}?notice=already")
            if exc.message == ITEM_FULL:
                return _redirect(f"{here}?notice=full")
            return self._job_page(rater, job_arn, notice=exc.message)
        return _redirect(f"{here}?notice=saved")


def _answers(view: TaskView, form: dict[str, str]) -> dict[str, Any]:
    """The form's fields (m<i> for a question about the pair, m<i>.<n> for Response n) per metric."""
    answers: dict[str, Any] = {}
    for i, metric in enumerate(view.metrics):
        if metric.rating_method in PER_RESPONSE_METHODS:
            answers[metric.name] = [form.get(f"m{i}.{n}") for n in range(1, len(view.shown) + 1)]
        else:
            answers[metric.name] = form.get(f"m{i}")
    return answers




def _same_origin(headers: dict[str, str]) -> bool:
    """SameSite=Lax already keeps the cookie off other sites' POSTs; a foreign Origin is refused too.

    No Origin, or "null" (what privacy settings send), passes: the cookie rule still holds then."""
    origin = headers.get("origin")
    if not origin or origin == "null":
        return True
    try:
        return urllib.parse.urlsplit(origin).netloc == headers.get("host", "")
    except ValueError:  # "http://[": no origin we serve
        return False


def _next_path(value: str) -> str:
    """Where sign-in goes next: `value` when it is a path under PREFIX (nowhere else, not even on
    this server, and nothing a browser could read as another host), else the job list."""
    plain = urllib.parse.unquote(value)
    if (value.startswith(PREFIX + "/") and value.isascii() and value.isprintable()
            and not any(c in value for c in "\\?#\"'<> ") and "\\" not in plain
            and not any(part in (".", "..") for part in plain.split("/"))):
        return value
    return f"{PREFIX}/"


def _cookies(header: str) -> dict[str, str]:
    cookies = {}
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name:
            cookies[name] = value
    return cookies


def _redirect(location: str, clear_cookie: bool = False) -> Response:
    headers = [("location", location)]
    if clear_cookie:
        headers.append(("set-cookie", f"{COOKIE}=; Path={PREFIX}; HttpOnly; SameSite=Lax; Max-Age=0"))
    return Response(303, "", headers)


# -- pages -----------------------------------------------------------------------------------------


def _render(template: str, title: str, rater: str | None = None, **context: Any) -> str:
    """A raters' page from web/templates (rating.html is their layout); the templates escape every value."""
    return render(template, prefix=PREFIX, title=title, rater=rater, **context)


#: The CSP hash of the pages' one script (web/static/rating.js): it runs, nothing injected into a page could.
SCRIPT_HASH = static_hash("rating.js")


def _page(title: str, message: str, rater: str | None = None, back: bool = False) -> str:
    """A page that says one thing (`message`, plain text), with a link back to the job list if `back`."""
    return _render("rating_message.html", title, rater, message=message, with_back=back)


def _sign_in_page(error: str = "", key_id: str = "", next_path: str = f"{PREFIX}/") -> str:
    return _render("rating_sign_in.html", "Sign in", error=error, key_id=key_id, next_path=next_path)


def _jobs_page(rater: str, jobs: list[dict[str, Any]]) -> str:
    return _render("rating_jobs.html", "Your jobs", rater, jobs=jobs)


def _done_page(rater: str, summary: dict[str, Any], notice: str) -> str:
    return _render("rating_done.html", "Done", rater, summary=summary, notice=notice)


def _options(metric: Metric, shown_count: int) -> list[tuple[str, str]]:
    method = metric.rating_method
    if method == THUMBS:
        return [("up", "👍 Thumbs up"), ("down", "👎 Thumbs down")]
    if method == LIKERT:
        return [("1", "1 · very poor"), ("2", "2 · poor"), ("3", "3 · fair"), ("4", "4 · good"), ("5", "5 · very good")]
    if method == RANK:
        return [(str(r), f"Rank {r}" + (" (best)" if r == 1 else "")) for r in range(1, shown_count + 1)]
    if method == COMPARISON_LIKERT:
        return [("1", "Response 1 is much better"), ("2", "Response 1 is better"), ("3", "About the same"),
                ("4", "Response 2 is better"), ("5", "Response 2 is much better")]
    return [("1", "Response 1"), ("2", "Response 2"), (TIE, "They are equally good")]  # CHOICE


HINTS = {THUMBS: "Give each response a thumbs up or down.", LIKERT: "Rate each response from 1 to 5.",
         RANK: "Rank the responses: 1 for the best; give both rank 1 if they are equally good.",
         COMPARISON_LIKERT: "Compare the two responses.", CHOICE: "Which response is better?"}


def _question(i: int, metric: Metric, view: TaskView, form: dict[str, str], first: bool) -> dict[str, Any]:
    """One metric's fieldset: a radio group per response (m<i>.<n>), or one about the pair (m<i>)."""
    options = _options(metric, len(view.shown))
    names = ([(f"m{i}.{n}", s.label) for n, s in enumerate(view.shown, start=1)]
             if metric.rating_method in PER_RESPONSE_METHODS else [(f"m{i}", "")])
    rows = [{"name": name, "label": label, "group_label": f"{metric.name}, {label}" if label else metric.name,
             "radios": [{"value": value, "text": text, "key": k, "checked": form.get(name) == value,
                         "autofocus": first and row == 0 and k == 1}
                        for k, (value, text) in enumerate(options, start=1)]}
            for row, (name, label) in enumerate(names)]
    return {"name": metric.name, "description": metric.description, "hint": HINTS[metric.rating_method],
            "rows": rows}


def _task_page(rater: str, summary: dict[str, Any], view: TaskView, notice: str, error: str,
               form: dict[str, str]) -> str:
    questions = [_question(i, m, view, form, i == 0) for i, m in enumerate(view.metrics)]
    return _render("rating_task.html", f"Item {view.number}", rater, summary=summary, view=view, notice=notice,
                   error=error, questions=questions, comment=form.get("comment", ""))
