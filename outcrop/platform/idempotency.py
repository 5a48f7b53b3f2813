"""Idempotency tokens (`clientRequestToken`, `clientToken`): the same token twice creates one resource.

boto3 fills these tokens with a uuid4 when the caller gives none, and retries a create with the same
token after a timeout; the retry must get the first answer, not a second resource. The same token with
a different request is the caller's mistake: ConflictException, as AWS answers for a token reused with
other parameters.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import IntegrityError

from outcrop.errors import ConflictException
from outcrop.platform.database import Database, utc_now
from outcrop.platform.tables import IdempotencyRow


def request_hash(params: dict[str, Any], token_member: str) -> str:
    """A digest of the request without its token (the token is what may repeat)."""
    body = {k: v for k, v in params.items() if k != token_member}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def run_once(db: Database, *, account_id: str, operation: str, token: str | None, params: dict[str, Any],
             token_member: str, create: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """`create()` the first time a token is seen; the stored answer every time after."""
    if not token:
        return create()
    digest = request_hash(params, token_member)
    key = (account_id, operation, token)
    with db.session() as session:
        row = session.get(IdempotencyRow, key)
        if row is not None:
            if row.request_hash != digest:
                raise ConflictException(f"The {token_member} '{token}' was already used with different "
                                        f"parameters for {operation}")
            return row.response
    response = create()
    try:
        with db.session() as session:
            session.add(IdempotencyRow(account_id=account_id, operation=operation, token=token,
                                       request_hash=digest, response=response, created_at=utc_now()))
    except IntegrityError:
        # Two requests racing with one token both ran create(); the later one answers as the first did.
        # boto3 retries only after a timeout, so the race needs a create slower than the client's timeout.
        with db.session() as session:
            return session.get(IdempotencyRow, key).response
    return response
