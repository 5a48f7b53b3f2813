"""The insights service: what the JSON API, the Python helper's server side and the CLI call."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from typing import Any

from outcrop.catalog.prices import PriceTable
from outcrop.errors import ValidationException
from outcrop.iam.principal import Principal
from outcrop.insights import events
from outcrop.insights.report import build_report
from outcrop.platform import jsontext
from outcrop.platform.config import Settings
from outcrop.platform.database import Database, as_utc, utc_now

_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: Any, field: str = "since", now: datetime | None = None) -> datetime:
    """`30m`, `1h`, `7d`, `2w` back from now, or an ISO 8601 time (no offset means UTC)."""
    if not isinstance(text, str) or not text.strip():
        raise ValidationException(f"{field} must be a duration (30m, 1h, 7d, 2w) or an ISO 8601 time")
    text = text.strip()
    if match := _DURATION.fullmatch(text):
        try:
            return (now or utc_now()) - timedelta(**{_UNITS[match[2]]: int(match[1])})
        except OverflowError:  # before the year 1, or more days than a timedelta holds
            raise ValidationException(f"{field} {text!r} reaches back before the year 1") from None
    try:
        return as_utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        raise ValidationException(
            f"{field} {text!r} is neither a duration (30m, 1h, 7d, 2w) nor an ISO 8601 time "
            "(2025-01-31T09:00:00Z)") from None


def dumps(value: Any) -> str:
    """Strict JSON (the API's and `--json`'s): a non-finite number, which no JSON parser need accept, is null.
    Inputs are bounded so that none should arise; this is the last guard, not the rule."""
    return json.dumps(jsontext.finite(value), default=str, allow_nan=False)


class InsightsService:
    def __init__(self, db: Database, prices: PriceTable, settings: Settings) -> None:
        self.db, self.prices, self.settings = db, prices, settings

    def record_feedback(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        return events.record_feedback(self.db, principal, body.get("requestId"), thumbs=body.get("thumbs"),
                                      rating=body.get("rating"), comment=body.get("comment"))

    def record_conversion(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        return events.record_conversion(self.db, principal, body.get("name"), user_id=body.get("userId"),
                                        session_id=body.get("sessionId"), value=body.get("value"),
                                        request_id=body.get("requestId"))

    def record_revenue(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        return events.record_revenue(self.db, principal, body.get("userId"), body.get("amount"))

    def report(self, account_id: str, since: Any = None, until: Any = None, by: Any = None) -> dict[str, Any]:
        """`since` defaults to the setting `insights_period` back from now, `until` to now."""
        now = utc_now()
        return build_report(self.db, self.prices, account_id=account_id,
                            since=parse_time(since or self.settings.insights_period, "since", now),
                            until=parse_time(until, "until", now) if until is not None else now,
                            by=by or "model", mu_tokens_per_minute=self.settings.mu_tokens_per_minute, now=now)
