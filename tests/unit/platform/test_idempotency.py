"""Idempotency tokens claimed before the create: two requests with one token at the same moment, from two
processes' connections (two Database objects on one database), create once and answer alike."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from outcrop.errors import ConflictException, ValidationException
from outcrop.platform.database import Database, utc_now
from outcrop.platform.idempotency import CLAIM_EXPIRY_SECONDS, request_hash, run_once
from outcrop.platform.tables import IdempotencyRow
from tests.helpers import at_once

ACCOUNT = "111111111111"
PARAMS = {"jobName": "a", "clientRequestToken": "t-1"}


@pytest.fixture
def two(db):
    """The test's database as two servers see it: two engines, two connection pools."""
    other = Database(db.url)
    yield db, other
    other.dispose()


def _once(db, create, params=PARAMS, **options):
    return lambda: run_once(db, account_id=ACCOUNT, operation="CreateX", token="t-1", params=params,
                            token_member="clientRequestToken", create=create, **options)


def test_one_token_at_once_from_two_servers_creates_once(two):
    created = []

    def create():
        created.append(1)
        time.sleep(0.2)  # a create slower than the other request's arrival
        return {"jobArn": f"arn:job/{len(created)}"}
    first, second = at_once(_once(two[0], create), _once(two[1], create))
    assert first == second == {"jobArn": "arn:job/1"} and len(created) == 1
    other = {**PARAMS, "jobName": "b"}
    with pytest.raises(ConflictException, match="different parameters"):
        _once(two[1], create, other)()


def test_when_the_first_fails_the_waiting_one_tries_itself(two):
    calls = []

    def create():
        calls.append(1)
        time.sleep(0.2)
        if len(calls) == 1:
            raise ValidationException("the first attempt failed")
        return {"jobArn": "arn:job/2"}
    results = at_once(_once(two[0], create), _once(two[1], create))
    assert sorted(map(repr, results)) == sorted([repr(ValidationException("the first attempt failed")),
                                                 repr({"jobArn": "arn:job/2"})])
    assert _once(two[0], create)() == {"jobArn": "arn:job/2"} and len(calls) == 2


def test_a_claim_in_progress_makes_a_retry_wait_and_an_abandoned_one_is_taken_over(db):
    def claim(age: float) -> None:
        with db.session() as session:
            session.merge(IdempotencyRow(account_id=ACCOUNT, operation="CreateX", token="t-1",
                                         request_hash=request_hash(PARAMS, "clientRequestToken"), response=None,
                                         created_at=utc_now() - timedelta(seconds=age)))
    claim(0)
    with pytest.raises(ConflictException, match="still in progress"):
        _once(db, lambda: {"jobArn": "arn:job/1"}, wait_seconds=0.1)()
    claim(CLAIM_EXPIRY_SECONDS + 1)  # its server died mid-create
    assert _once(db, lambda: {"jobArn": "arn:job/2"})() == {"jobArn": "arn:job/2"}
    assert _once(db, lambda: {"jobArn": "arn:job/3"})() == {"jobArn": "arn:job/2"}
