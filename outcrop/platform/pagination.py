"""Bedrock's list conventions in one place: creation-time filters, sort order, maxResults, nextToken.

Pages are keyset pages: rows are ordered by (creation time, primary key), and `nextToken` carries the
last row's key, so the next page starts strictly after it. Rows inserted or deleted between two calls
neither repeat nor skip the rows still to come (an offset would shift them).

A token is `base64url(payload).base64url(HMAC-SHA256(key, payload))`: opaque to callers, and one that
was altered, made up, or made for another sortOrder or other filters answers a ValidationException.

The HMAC key. `platform/` cannot reach the deployment secret (`iam/` owns `<data dir>/secret.key`), so
the composition root hands its bytes to `use_secret(db, secret)`, which derives a key for this purpose
alone; it is kept per `Database`, so that `page(db, ...)` and its callers need no new argument. The same
secret file gives the same key after a restart, so tokens outlive the process. A database nobody gave a
secret (programs that build a service by hand) signs with a random key of this process. The key only
signs tokens: it never enters a query, so the order of rows does not depend on it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from datetime import datetime
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import ColumnElement, Select, and_, inspect, or_

from outcrop.errors import ValidationException
from outcrop.platform.database import Database, as_utc

DEFAULT_PAGE_SIZE = 100
ASCENDING, DESCENDING = "Ascending", "Descending"
#: Request members that are not filters: they may change from one page to the next (or are the token).
_NOT_FILTERS = frozenset({"nextToken", "maxResults", "sortOrder"})
_PURPOSE = b"outcrop pagination nextToken v1"
_KEYS: WeakKeyDictionary[Database, bytes] = WeakKeyDictionary()
_PROCESS_KEY = secrets.token_bytes(32)


def use_secret(db: Database, secret: bytes) -> None:
    """Sign `db`'s page tokens with a key derived from the deployment secret (the bytes of secret.key)."""
    _KEYS[db] = hmac.new(secret.strip(), _PURPOSE, hashlib.sha256).digest()


def page(db: Database, query: Select, created_column: Any, params: dict[str, Any]) -> tuple[list[Any], str | None]:
    """One page of `query` (a select of one mapped entity) by the operation's `creationTimeAfter/Before`,
    `sortOrder` (newest first unless Ascending), `maxResults` and `nextToken`."""
    if params.get("creationTimeAfter"):
        # Bound as UTC: SQLite compares the stored UTC text, and an aware value binds without its offset.
        query = query.where(created_column > as_utc(params["creationTimeAfter"]))
    if params.get("creationTimeBefore"):
        query = query.where(created_column < as_utc(params["creationTimeBefore"]))
    order = ASCENDING if params.get("sortOrder") == ASCENDING else DESCENDING
    mapper = inspect(query.column_descriptions[0]["entity"])
    columns = [created_column, *mapper.primary_key]
    query = query.order_by(*(c.asc() if order == ASCENDING else c.desc() for c in columns))
    key = _KEYS.get(db, _PROCESS_KEY)
    filters = _filters_digest(params)
    if params.get("nextToken"):
        after = _read_token(key, params["nextToken"], mapper.persist_selectable.name, order, filters)
        query = query.where(_after(list(zip(columns, after, strict=True)), order == ASCENDING))
    size = int(params.get("maxResults") or DEFAULT_PAGE_SIZE)
    with db.session() as session:
        rows = list(session.scalars(query.limit(size + 1)).all())
    if len(rows) <= size:
        return rows, None
    last = rows[size - 1]
    created = as_utc(getattr(last, created_column.key))
    token = _make_token(key, {"e": mapper.persist_selectable.name, "o": order, "f": filters,
                              "t": created.isoformat(timespec="microseconds"),
                              "k": list(mapper.primary_key_from_instance(last))})
    return rows[:size], token


def _after(key: list[tuple[Any, Any]], ascending: bool) -> ColumnElement[bool]:
    """Rows strictly after `key` in lexicographic (column, value) order: a > x, or a = x and b > y, ..."""
    clauses = []
    for i, (column, value) in enumerate(key):
        beyond = column > value if ascending else column < value
        clauses.append(and_(*(c == v for c, v in key[:i]), beyond))
    return or_(*clauses)


def _filters_digest(params: dict[str, Any]) -> str:
    def plain(value: Any) -> Any:
        if isinstance(value, datetime):
            return as_utc(value).isoformat(timespec="microseconds")
        return str(value)

    filters = {k: v for k, v in params.items() if k not in _NOT_FILTERS and v is not None}
    text = json.dumps(filters, sort_keys=True, separators=(",", ":"), default=plain)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _make_token(key: bytes, payload: dict[str, Any]) -> str:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return f"{_b64(body)}.{_b64(hmac.new(key, body, hashlib.sha256).digest())}"


def _read_token(key: bytes, token: str, table: str, order: str, filters: str) -> list[Any]:
    """The (creation time, primary key...) a token resumes after, once its signature, list (`table`),
    and request match."""
    invalid = ValidationException("nextToken is not a token this server gave out")
    try:
        body_text, mac_text = token.split(".")
        body, mac = _unb64(body_text), _unb64(mac_text)
    except (ValueError, binascii.Error):
        raise invalid from None
    if not hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest()):
        raise invalid
    try:
        payload = json.loads(body)
        made_in, made_for, made_with = payload["e"], payload["o"], payload["f"]
        after = [as_utc(datetime.fromisoformat(payload["t"])), *payload["k"]]
    except (ValueError, KeyError, TypeError):
        raise invalid from None
    if made_in != table:
        raise invalid
    if made_for != order:
        raise ValidationException(f"nextToken was given out for sortOrder {made_for}; this request asks for {order}")
    if made_with != filters:
        raise ValidationException("nextToken was given out for a request with other filters; "
                                  "send the same filters with each page")
    return after
