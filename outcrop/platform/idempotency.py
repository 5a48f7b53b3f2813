"""Idempotency tokens (`clientRequestToken`, `clientToken`): the same token twice creates one resource.

boto3 fills these tokens with a uuid4 when the caller gives none, and retries a create with the same
token after a timeout; the retry must get the first answer, not a second resource. The same token with
a different request is the caller's mistake: ConflictException, as AWS answers for a token reused with
other parameters.

The token is claimed before anything is created: a pending row (its answer a JSON null) inserted under the
table's primary key (account, operation, token), so that of two requests with one token at the same moment,
on one server or on two, exactly one inserts it and creates. The other waits for that one's answer and
returns it; if the first one fails it gives the token back (deletes its row) and the waiting one claims it
and tries itself, so it answers as a retry would. A claim never answered within CLAIM_EXPIRY_SECONDS (its
server died mid-create) is taken over.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from outcrop.errors import ConflictException
from outcrop.platform.database import Database, as_utc, utc_now
from outcrop.platform.tables import IdempotencyRow

log = logging.getLogger(__name__)

#: How long a claimed token may go without its answer before another request with it takes it over: far longer
#: than any create takes (they record rows and start background work), so only a claim whose server died expires.
CLAIM_EXPIRY_SECONDS = 300.0
#: How long a request waits for the answer of another one with its token before it gives up (ConflictException,
#: which the caller may retry): below boto3's 60 s read timeout.
WAIT_SECONDS = 30.0


def request_hash(params: dict[str, Any], token_member: str) -> str:
    """A digest of the request without its token (the token is what may repeat)."""
    body = {k: v for k, v in params.items() if k != token_member}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def run_once(db: Database, *, account_id: str, operation: str, token: str | None, params: dict[str, Any],
             token_member: str, create: Callable[[], dict[str, Any]],
             wait_seconds: float = WAIT_SECONDS) -> dict[str, Any]:
    """`create()` the first time a token is seen; the stored answer every time after, and to a request with the
    same token made while the first one runs (once it has answered)."""
    if not token:
        return create()
    digest = request_hash(params, token_member)
    key = (account_id, operation, token)
    deadline = time.monotonic() + wait_seconds
    pause = 0.02
    claimed_at = _claim(db, key, digest)
    while claimed_at is None:
        with db.session() as session:
            row = session.get(IdempotencyRow, key)
        if row is not None and row.request_hash != digest:
            raise ConflictException(f"The {token_member} '{token}' was already used with different parameters "
                                    f"for {operation}")
        if row is not None and row.response is not None:
            return row.response
        if row is None or as_utc(row.created_at) < utc_now() - timedelta(seconds=CLAIM_EXPIRY_SECONDS):
            # Given back by a request that failed, or abandoned by a server that died mid-create: claim it again.
            if row is not None:
                _give_back(db, key, row.created_at)
            claimed_at = _claim(db, key, digest)
            continue
        if time.monotonic() >= deadline:
            raise ConflictException(f"A request with the {token_member} '{token}' is still in progress for "
                                    f"{operation}; retry later for its answer")
        time.sleep(pause)
        pause = min(2 * pause, 0.25)
    try:
        response = create()
    except BaseException:
        try:
            _give_back(db, key, claimed_at)  # a retry (or the request waiting now) may try again
        except Exception:  # the database failed too: the claim expires instead; the create's error is the answer
            log.warning("could not give back the %s token of %s", operation, account_id, exc_info=True)
        raise
    with db.session() as session:
        row = session.get(IdempotencyRow, key)
        if row is None:  # taken over and given back meanwhile (a create slower than CLAIM_EXPIRY_SECONDS)
            session.add(IdempotencyRow(account_id=account_id, operation=operation, token=token,
                                       request_hash=digest, response=response, created_at=utc_now()))
        else:
            row.response = response
    return response


def _claim(db: Database, key: tuple[str, str, str], digest: str) -> datetime | None:
    """Insert the token's pending row; its time if this request inserted it, None if the token was there."""
    now = utc_now()
    account_id, operation, token = key
    try:
        with db.session() as session:
            session.add(IdempotencyRow(account_id=account_id, operation=operation, token=token,
                                       request_hash=digest, response=None, created_at=now))
    except IntegrityError:
        return None
    return now


def _give_back(db: Database, key: tuple[str, str, str], claimed_at: datetime) -> None:
    """Delete the token's row if it is still the claim made at `claimed_at` (not one another request made since)."""
    account_id, operation, token = key
    with db.session() as session:
        session.execute(delete(IdempotencyRow).where(
            IdempotencyRow.account_id == account_id, IdempotencyRow.operation == operation,
            IdempotencyRow.token == token, IdempotencyRow.created_at == claimed_at))
