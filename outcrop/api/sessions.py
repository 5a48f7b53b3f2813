"""What every page signed in with an access key shares: session cookies, CSRF tokens, the sign-in check
and its throttle. The raters' pages (api/rating.py) and the console (api/console/) both use it.

Signing in sends the user's long-lived secret access key, so it is taken only over HTTPS (`outcrop
serve --tls`, or a proxy that says https) or from a loopback client; anywhere else the form says so
and checks nothing (the same rule as bearer API keys: `asgi.transport`). Repeated failures lock the
key ID and the address out for a while (`SignInThrottle`); each door audits every attempt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import secrets
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import delete

from outcrop.api.asgi import PLAIN
from outcrop.iam.audit import record_event
from outcrop.iam.principal import Principal
from outcrop.iam.secrets import KEY_FILE_NAME, SecretBox
from outcrop.iam.service import IamService
from outcrop.iam.tables import EndedSessionRow

#: The largest form a signed-in page takes (the console's uploads excepted: they have the server's request limit).
MAX_FORM_BYTES = 256 * 1024
#: How long a failed sign-in waits before its answer (on the event loop, never in a worker thread).
FAILED_SIGN_IN_DELAY = 0.3
PLAIN_HTTP_REFUSED = ("Signing in sends your secret access key, so this server takes it only over HTTPS (or from "
                      "the machine it runs on). Ask its administrator to run `outcrop serve --tls`; programs that "
                      "call Outcrop with SigV4 or bearer keys are not affected.")
NO_MATCH = "That access key ID and secret access key do not match an active key."


@dataclass
class Response:
    status: int
    body: str | bytes = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    #: Seconds to wait before answering (a failed sign-in's), awaited on the event loop.
    delay: float = 0.0


class Sessions:
    """Stateless session cookies: base64(JSON {arn, key, exp}) + "." + HMAC-SHA256 of it.

    The signing key is derived from `secret.key` (never the key itself, which encrypts stored
    secrets) and from the pages' `purpose`, so sessions survive restarts, every server sharing the
    data dir accepts them, and a rater's cookie is no console session (nor the reverse)."""

    def __init__(self, secret: bytes, purpose: str = "rating", lifetime: int = 8 * 3600) -> None:
        self._key = hmac.new(secret, f"outcrop {purpose} sessions v1".encode(), hashlib.sha256).digest()
        self.lifetime = lifetime

    @classmethod
    def for_data_dir(cls, data_dir: Path, purpose: str, lifetime: int = 8 * 3600) -> Sessions:
        SecretBox(data_dir)  # makes secret.key if this data dir has none yet
        return cls((data_dir / KEY_FILE_NAME).read_bytes().strip(), purpose, lifetime)

    def csrf_token(self, cookie: str) -> str:
        """The token a page of this session echoes in its forms and script calls: a site that cannot read
        the page cannot know it, though the browser sends the cookie along."""
        return self._mac("csrf:" + cookie)

    def csrf_ok(self, cookie: str, token: str) -> bool:
        return cookie.isascii() and token.isascii() and hmac.compare_digest(token.encode(),
                                                                           self.csrf_token(cookie).encode())

    def _mac(self, payload: str) -> str:
        return base64.urlsafe_b64encode(hmac.new(self._key, payload.encode(), hashlib.sha256).digest()).decode()

    def issue(self, principal_arn: str, key_id: str) -> str:
        data = json.dumps({"arn": principal_arn, "key": key_id, "exp": int(time.time()) + self.lifetime,
                           "sid": secrets.token_hex(16)})
        payload = base64.urlsafe_b64encode(data.encode()).decode()
        return f"{payload}.{self._mac(payload)}"

    def read(self, cookie: str) -> tuple[str, str] | None:
        """(principal ARN, access key id) of a valid, unexpired cookie; None otherwise."""
        data = self._data(cookie)
        return (str(data.get("arn", "")), str(data.get("key", ""))) if data is not None else None

    def identity(self, cookie: str) -> tuple[str, float] | None:
        """(session id, expiry) of a valid, unexpired cookie: what signing out records."""
        data = self._data(cookie)
        return (str(data.get("sid", "")), float(data["exp"])) if data is not None else None

    def _data(self, cookie: str) -> dict | None:
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
        return data


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


@dataclass
class Refusal:
    """Why a sign-in did not go through: the page's status and message, the audit's result code."""

    status: int
    message: str
    result: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    delay: float = 0.0
    principal: Principal | None = None  # the key's owner, when the key exists (for the audit)


def check_sign_in(iam: IamService, throttle: SignInThrottle, key_id: str, secret: str, transport: str,
                  client: str) -> Principal | Refusal:
    """The principal whose active key this is, or why not. Every failure waits (`delay`, on the event loop):
    a guesser pays for each try, a person mistyping does not notice. Guessing could not win anyway: secrets
    are 40 random characters (~240 bits)."""
    if transport == PLAIN:  # the secret crossed the network in clear once; it is not checked, nor welcome again
        return Refusal(403, PLAIN_HTTP_REFUSED, "AccessDeniedException")
    wait = throttle.locked(key_id, client)
    if wait > 0:  # not even a right secret gets in now: a guesser learns nothing while locked out
        seconds = math.ceil(wait)
        return Refusal(429, f"Too many failed sign-ins with this access key or from this address. Try again in "
                            f"{seconds} seconds.", "ThrottlingException", [("retry-after", str(seconds))],
                       FAILED_SIGN_IN_DELAY)
    found = iam.authenticate_key(key_id) if key_id else None
    if found is None or not hmac.compare_digest(found[1].encode(), secret.encode()):
        throttle.failed(key_id, client)
        return Refusal(401, NO_MATCH, "UnrecognizedClientException", delay=FAILED_SIGN_IN_DELAY,
                       principal=found[0] if found else None)
    throttle.succeeded(key_id)
    return found[0]


def record_sign_in(iam: IamService, *, door: str, resource: str, key_id: str, client: str, user_agent: str | None,
                   result: str, status: int, principal: Principal | None = None) -> None:
    """A sign-in attempt in the audit trail as `<door>:SignIn`, with the address and the key ID tried (the key's
    owner once it is known), never the secret."""
    record_event(iam.db, service=door, operation="SignIn", result=result, status=status, principal=principal,
                 access_key_id=None if principal else key_id, resource=resource, source_ip=client,
                 request_id=str(uuid.uuid4()), user_agent=user_agent)


def session_principal(iam: IamService, sessions: Sessions, cookie: str | None) -> Principal | None:
    """The principal of a valid, unexpired session cookie whose access key is still active and which was not
    signed out of."""
    session = sessions.read(cookie) if cookie else None
    if session is None:
        return None
    sid, _ = sessions.identity(cookie)
    with iam.db.session() as db_session:
        if db_session.get(EndedSessionRow, sid) is not None:
            return None
    arn, key_id = session
    found = iam.authenticate_key(key_id)  # a deactivated or deleted key ends its sessions
    return found[0] if found is not None and found[0].arn == arn else None


def end_session(iam: IamService, sessions: Sessions, cookie: str | None) -> None:
    """Sign out: the cookie's session is refused from now on by every server on the database (a stateless cookie
    would otherwise stay good until it expires, in a copy the browser kept or someone took)."""
    found = sessions.identity(cookie) if cookie else None
    if found is None or not found[0]:
        return
    sid, expires = found
    with iam.db.session() as db_session:
        db_session.execute(delete(EndedSessionRow).where(EndedSessionRow.expires_at < time.time()))
        if db_session.get(EndedSessionRow, sid) is None:
            db_session.add(EndedSessionRow(session_id=sid, expires_at=expires))


def same_origin(headers: dict[str, str]) -> bool:
    """SameSite already keeps the cookie off other sites' POSTs; a foreign Origin is refused too.

    No Origin, or "null" (what privacy settings send), passes: the cookie rule still holds then."""
    origin = headers.get("origin")
    if not origin or origin == "null":
        return True
    try:
        return urllib.parse.urlsplit(origin).netloc == headers.get("host", "")
    except ValueError:  # "http://[": no origin we serve
        return False


def cookies(header: str) -> dict[str, str]:
    found = {}
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name:
            found[name] = value
    return found
