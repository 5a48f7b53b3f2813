"""Bedrock's list conventions in one place: creation-time filters, sort order, maxResults, nextToken."""

from __future__ import annotations

import base64
from typing import Any

from sqlalchemy import Select

from outcrop.errors import ValidationException
from outcrop.platform.database import Database

DEFAULT_PAGE_SIZE = 100


def page(db: Database, query: Select, created_column: Any, params: dict[str, Any]) -> tuple[list[Any], str | None]:
    """One page of `query` by the operation's `creationTimeAfter/Before`, `sortOrder`, `maxResults`,
    `nextToken` (an opaque offset), newest first unless `sortOrder` is Ascending."""
    if params.get("creationTimeAfter"):
        query = query.where(created_column > params["creationTimeAfter"])
    if params.get("creationTimeBefore"):
        query = query.where(created_column < params["creationTimeBefore"])
    ascending = params.get("sortOrder") == "Ascending"
    query = query.order_by(created_column.asc() if ascending else created_column.desc())
    try:
        offset = int(base64.urlsafe_b64decode((params.get("nextToken") or "MA==").encode()).decode())
    except (ValueError, UnicodeDecodeError):
        raise ValidationException("nextToken is not a token this server gave out") from None
    size = int(params.get("maxResults") or DEFAULT_PAGE_SIZE)
    with db.session() as session:
        rows = list(session.scalars(query.offset(offset).limit(size + 1)).all())
    token = base64.urlsafe_b64encode(str(offset + size).encode()).decode() if len(rows) > size else None
    return rows[:size], token
