"""Outcrop's JSON API for insights, under `/_outcrop/insights/<Action>` (POST, JSON body, SigV4-signed).

Bedrock has no place for what happens after a response (a thumbs up, a purchase, revenue), so the
application reports it here, naming the response by the request id that bedrock-runtime returned. Each
action is authorized as `outcrop:<Action>` on the account's insights resource
(`arn:aws:outcrop:<region>:<account>:insights`), always within the caller's own account. These calls
are not in the audit trail: events arrive at the rate of invocations (which have usage records, not
audit events), and each event row keeps the principal that recorded it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from outcrop.errors import UnknownOperationException
from outcrop.iam.principal import Principal
from outcrop.iam.service import IamService
from outcrop.insights.service import InsightsService, dumps

PREFIX = "/_outcrop/insights/"
SERVICE = "outcrop-insights"

ACTIONS: dict[str, Callable[[InsightsService, Principal, dict[str, Any]], dict[str, Any]]] = {
    "RecordFeedback": lambda s, c, b: s.record_feedback(c, b),
    "RecordConversion": lambda s, c, b: s.record_conversion(c, b),
    "RecordRevenue": lambda s, c, b: s.record_revenue(c, b),
    "GetReport": lambda s, c, b: s.report(c.account_id, b.get("since"), b.get("until"), b.get("groupBy")),
}


def action_of(method: str, raw_path: str) -> str:
    action = raw_path[len(PREFIX):]
    if method != "POST" or action not in ACTIONS:
        raise UnknownOperationException(
            f"No Outcrop insights action answers {method} {raw_path}; POST one of {', '.join(sorted(ACTIONS))}")
    return action


def resource_arn(region: str, account_id: str) -> str:
    return f"arn:aws:outcrop:{region}:{account_id}:insights"


def handle(insights: InsightsService, iam: IamService, caller: Principal, action: str, body: dict[str, Any],
           context: dict[str, Any]) -> bytes:
    """Authorize `outcrop:<Action>`, run it, return the JSON response."""
    iam.authorize(caller, f"outcrop:{action}", resource_arn(insights.settings.region, caller.account_id), context)
    return dumps(ACTIONS[action](insights, caller, body)).encode()
