"""Recording what an application learns after a response: feedback, conversions, revenue.

Every input is checked here, once, for every door (JSON API, Python helper, CLI), and refused with a
ValidationException naming the field; feedback on a request id this account never made is a
ResourceNotFoundException naming the id, so a typo cannot silently skew satisfaction. Text may hold no
control characters (the terminal report prints names as they are; a comment may hold newlines and tabs),
and amounts are bounded (|x| <= 1e12), so that no sum overflows to infinity.
"""

from __future__ import annotations

import math
import unicodedata
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from outcrop.errors import ResourceNotFoundException, ValidationException
from outcrop.iam.principal import Principal
from outcrop.insights.tables import ConversionRow, FeedbackRow, RevenueRow
from outcrop.platform.database import Database, utc_now
from outcrop.runtime.tables import UsageRecord

THUMBS = ("up", "down")
RATINGS = range(1, 6)
MAX_ID = 256
MAX_NAME = 128
MAX_COMMENT = 4096
#: the largest magnitude of an amount or a conversion value: far beyond any real payment, far below where a
#: sum of many of them could overflow a double (to infinity on SQLite, an error on PostgreSQL)
MAX_AMOUNT = 1e12


def _text(value: Any, field: str, limit: int, required: bool = False, allowed: str = "") -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValidationException(f"{field} must be a non-empty string" + ("" if required else " when given"))
    if len(value) > limit:
        raise ValidationException(f"{field} is {len(value)} characters long; the limit is {limit}")
    bad = next((c for c in value if unicodedata.category(c) == "Cc" and c not in allowed), None)
    if bad is not None:  # an escape sequence would reach the terminal of whoever reads the report
        raise ValidationException(f"{field} contains the control character {bad!r}; "
                                  + (f"only {', '.join(map(repr, allowed))} are allowed" if allowed
                                     else "none is allowed"))
    return value


def _number(value: Any, field: str, required: bool = False) -> float | None:
    if value is None and not required:
        return None
    # bool is an int in Python, but `true` is no amount of money.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationException(f"{field} must be a finite number, got {value!r}")
    if abs(value) > MAX_AMOUNT:
        raise ValidationException(f"{field} must be between -1e12 and 1e12, got {value!r}")
    return float(value)


def _invocation(session, account_id: str, request_id: str) -> UsageRecord:
    record = session.scalars(select(UsageRecord).where(
        UsageRecord.request_id == request_id, UsageRecord.account_id == account_id)
        .order_by(UsageRecord.id.desc()).limit(1)).first()
    if record is None:
        raise ResourceNotFoundException(
            f"No invocation with request id {request_id} in account {account_id}; feedback and conversions name "
            "the x-amzn-requestid of a bedrock-runtime call (boto3: response['ResponseMetadata']['RequestId'])")
    return record


def _meta(record: UsageRecord, key: str) -> str | None:
    value = (record.request_metadata or {}).get(key)
    return value if isinstance(value, str) else None


def record_feedback(db: Database, principal: Principal, request_id: Any, *, thumbs: Any = None, rating: Any = None,
                    comment: Any = None, at: datetime | None = None) -> dict[str, Any]:
    """Thumbs up/down and/or a 1-5 rating on one response.

    Feedback on a response already rated updates only the fields given (thumbs, then a rating, keeps both);
    two calls at once (a double click) make one row, not an error."""
    request_id = _text(request_id, "requestId", 64, required=True)
    if thumbs is None and rating is None:
        raise ValidationException("Feedback needs thumbs ('up' or 'down') or rating (1 to 5), or both")
    if thumbs is not None and thumbs not in THUMBS:
        raise ValidationException(f"thumbs must be 'up' or 'down', got {thumbs!r}")
    if rating is not None and (isinstance(rating, bool) or not isinstance(rating, int) or rating not in RATINGS):
        raise ValidationException(f"rating must be a whole number from 1 to 5, got {rating!r}")
    comment = _text(comment, "comment", MAX_COMMENT, allowed="\n\r\t")
    now = at or utc_now()
    given = {name: value for name, value in (("thumbs", thumbs), ("rating", rating), ("comment", comment))
             if value is not None}
    for attempt in range(2):
        try:
            return _save_feedback(db, principal, request_id, given, now)
        except IntegrityError:
            # Another call inserted this request's feedback between our look and our insert (the unique
            # (account, request id) refused the second row): look again, find it, update it.
            if attempt:
                raise
    raise AssertionError("unreachable")


def _save_feedback(db: Database, principal: Principal, request_id: str, given: dict[str, Any],
                   now: datetime) -> dict[str, Any]:
    with db.session() as session:
        record = _invocation(session, principal.account_id, request_id)
        row = session.scalars(select(FeedbackRow).where(FeedbackRow.account_id == principal.account_id,
                                                        FeedbackRow.request_id == request_id)).first()
        if row is None:
            row = FeedbackRow(account_id=principal.account_id, request_id=request_id)
            session.add(row)
        row.principal_arn, row.model_id, row.invoked_at = principal.arn, record.model_id, record.created_at
        row.domain, row.user_id = _meta(record, "domain"), _meta(record, "userId")
        row.session_id = _meta(record, "sessionId")
        for name, value in given.items():
            setattr(row, name, value)
        row.created_at = now
        session.flush()
        return {"feedbackId": str(row.id), "requestId": request_id, "modelId": record.model_id,
                "thumbs": row.thumbs, "rating": row.rating}


def record_conversion(db: Database, principal: Principal, name: Any, *, user_id: Any = None, session_id: Any = None,
                      value: Any = None, request_id: Any = None, at: datetime | None = None) -> dict[str, Any]:
    """A named outcome for a user or a session; a request id fills in both from its requestMetadata."""
    name = _text(name, "name", MAX_NAME, required=True)
    user_id = _text(user_id, "userId", MAX_ID)
    session_id = _text(session_id, "sessionId", MAX_ID)
    value = _number(value, "value")
    request_id = _text(request_id, "requestId", 64)
    with db.session() as session:
        if request_id is not None:
            record = _invocation(session, principal.account_id, request_id)
            user_id = user_id or _meta(record, "userId")
            session_id = session_id or _meta(record, "sessionId")
        if user_id is None and session_id is None:
            raise ValidationException("A conversion needs userId or sessionId (or a requestId whose "
                                      "requestMetadata carries one)")
        row = ConversionRow(account_id=principal.account_id, principal_arn=principal.arn, name=name, user_id=user_id,
                            session_id=session_id, request_id=request_id, value=value,
                            created_at=at or utc_now())
        session.add(row)
        session.flush()
        return {"conversionId": str(row.id), "userId": user_id, "sessionId": session_id}


def record_revenue(db: Database, principal: Principal, user_id: Any, amount: Any, *,
                   at: datetime | None = None) -> dict[str, Any]:
    """An amount a user paid (negative: a refund), in the price table's currency."""
    user_id = _text(user_id, "userId", MAX_ID, required=True)
    amount = _number(amount, "amount", required=True)
    with db.session() as session:
        row = RevenueRow(account_id=principal.account_id, principal_arn=principal.arn, user_id=user_id,
                         amount=amount, created_at=at or utc_now())
        session.add(row)
        session.flush()
        return {"revenueId": str(row.id)}
