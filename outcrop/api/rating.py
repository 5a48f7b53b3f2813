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

import logging
import time
import urllib.parse
from typing import Any

import anyio

from outcrop.api import asgi
from outcrop.api.asgi import HTTPS, PLAIN, read_body
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
from outcrop.iam.audit import SUCCESS
from outcrop.iam.principal import USER
from outcrop.iam.service import IamService
from outcrop.web import render, static_hash

PREFIX = "/_outcrop/evaluation/rate"
COOKIE = "outcrop_rater"
SESSION_SECONDS = 8 * 3600
#: The audit trail's name for these pages and their sign-in (every attempt is recorded, never the secret).
AUDIT_SERVICE = "outcrop-rating"  # sign-ins are audited as outcrop-rating:SignIn
#: What a notice code in `?notice=` says (codes, not text, so a link cannot put words on the page).
NOTICES = {
    "saved": "Saved.",
    "already": "You had already rated that item; here is the next one.",
    "full": "That item got all its ratings from other raters meanwhile; here is the next one.",
}

access_log = logging.getLogger("outcrop.access")
log = logging.getLogger("outcrop.api.rating")


class RatingApp:
    """The ASGI app for PREFIX; `BedrockApp` hands it every request under that path."""

    def __init__(self, human: HumanReview, iam: IamService, data_dir, secure_cookie: bool = False) -> None:
        """`secure_cookie`: the server itself serves HTTPS (`outcrop serve --tls`)."""
        self.human = human
        self.iam = iam
        self.sessions = Sessions.for_data_dir(data_dir, "rating", SESSION_SECONDS)
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
        page = response.body if isinstance(response.body, bytes) else response.body.encode()
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
            if method == "POST" and not same_origin(headers):
                return Response(403, _page("Refused", "That form was sent from another site."))
            if rest == "sign-in":
                if method == "POST":
                    return self._sign_in(form, transport, client, headers.get("user-agent"))
                next_path = _next_path((query.get("next") or [""])[0])
                return Response(200, _sign_in_page(PLAIN_HTTP_REFUSED if transport == PLAIN else "",
                                                   next_path=next_path))
            if rest == "sign-out" and method == "POST":
                end_session(self.iam, self.sessions, cookies(headers.get("cookie", "")).get(COOKIE))
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
        principal = session_principal(self.iam, self.sessions, cookies(headers.get("cookie", "")).get(COOKIE))
        return principal.arn if principal is not None else None

    def _sign_in(self, form: dict[str, str], transport: str, client: str = "", user_agent: str | None = None
                 ) -> Response:
        key_id, secret = form.get("access_key_id", "").strip(), form.get("secret_access_key", "").strip()
        next_path = _next_path(form.get("next", ""))

        def audit(result: str, status: int, principal=None) -> None:
            record_sign_in(self.iam, door=AUDIT_SERVICE, resource=PREFIX, key_id=key_id, client=client,
                           user_agent=user_agent, result=result, status=status, principal=principal)

        principal = check_sign_in(self.iam, self.throttle, key_id, secret, transport, client)
        if isinstance(principal, Refusal):
            audit(principal.result, principal.status, principal.principal)
            return Response(principal.status, _sign_in_page(principal.message, key_id, next_path), principal.headers,
                            delay=principal.delay)
        if principal.kind != USER:
            audit("AccessDeniedException", 403, principal)
            return Response(403, _sign_in_page("Raters sign in with an IAM user's access key, not the "
                                               "account root's.", key_id, next_path))
        audit(SUCCESS, 303, principal)
        # Lax, not Strict: a job's link opened from an email or a chat must arrive signed in. Every change
        # is a POST, which Lax keeps off other sites' forms, and same_origin checks besides.
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




def _next_path(value: str) -> str:
    """Where sign-in goes next: `value` when it is a path under PREFIX (nowhere else, not even on
    this server, and nothing a browser could read as another host), else the job list."""
    plain = urllib.parse.unquote(value)
    if (value.startswith(PREFIX + "/") and value.isascii() and value.isprintable()
            and not any(c in value for c in "\\?#\"'<> ") and "\\" not in plain
            and not any(part in (".", "..") for part in plain.split("/"))):
        return value
    return f"{PREFIX}/"


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
