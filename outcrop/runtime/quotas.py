"""On-demand inference quotas: requests and tokens per minute, per account, as token buckets kept in the
database, so that every server process on one database draws from the same allowance.

A bucket holds a minute's allowance and refills continuously, so a burst up to the quota passes and
a steady rate above it is refused with ThrottlingException (429), which boto3 retries with backoff.
Token use is only known after generation, so a request is admitted while the account's token bucket
is not empty and its actual tokens are charged when it ends (the bucket may go negative, which then
holds back the next requests until it refills).

Each draw is one conditional UPDATE that refills and takes in the same statement: atomic on SQLite (one
writer at a time) and on PostgreSQL (the row is locked by the update), with no read-then-write race between
servers and no lock held across a request. Time is each server's wall clock (keep them in sync, NTP): a
bucket's time only moves forward, so a server whose clock runs behind refills nothing until it catches up,
and never hands out again what a faster clock already refilled.
"""

from __future__ import annotations

import time

from sqlalchemy import case, insert, select, update
from sqlalchemy.exc import IntegrityError

from outcrop.errors import ThrottlingException
from outcrop.platform.database import Database
from outcrop.runtime.tables import QuotaBucketRow

TOO_MANY = "Too many requests, please wait before trying again."
REQUESTS, TOKENS = "requests", "tokens"


def _refilled(capacity: float, now: float):
    """The bucket's level brought up to `now` (SQL): a minute refills it to `capacity`, never beyond."""
    row = QuotaBucketRow
    grown = row.level + case((row.updated < now, now - row.updated), else_=0.0) * (capacity / 60.0)
    return case((grown > capacity, float(capacity)), else_=grown)


class Buckets:
    """Token buckets in the database, each named by its owner (an account, a provisioned throughput) and kind."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def level(self, owner: str, kind: str, capacity: float) -> float:
        """What the bucket holds now (a full one if it was never drawn from)."""
        with self.db.session() as session:
            level = session.scalar(select(_refilled(capacity, time.time())).where(
                QuotaBucketRow.owner == owner, QuotaBucketRow.kind == kind))
        return capacity if level is None else level

    def draw(self, owner: str, kind: str, capacity: float, amount: float, at_least: float | None = None) -> bool:
        """Refill the bucket and take `amount`; with `at_least`, only if it holds that much after the refill."""
        row, now = QuotaBucketRow, time.time()
        refilled = _refilled(capacity, now)
        where = [row.owner == owner, row.kind == kind]
        if at_least is not None:
            where.append(refilled >= at_least)
        for _ in range(2):
            with self.db.session() as session:
                # `updated` never moves back: a server whose clock runs behind must not reopen time another refilled.
                later = case((row.updated > now, row.updated), else_=now)
                if session.execute(update(row).where(*where).values(level=refilled - amount, updated=later)
                                   .execution_options(synchronize_session=False)).rowcount:
                    return True
                if session.get(row, (owner, kind)) is not None:
                    return False  # the bucket is there, and too low
            try:  # the first draw: a full bucket, less this one
                with self.db.session() as session:
                    session.execute(insert(row).values(owner=owner, kind=kind, level=capacity - amount, updated=now))
                return True
            except IntegrityError:
                continue  # another server made it first: draw from theirs
        return False


class Quotas:
    def __init__(self, db: Database | None, requests_per_minute: int, tokens_per_minute: int) -> None:
        self.buckets = Buckets(db) if db is not None else None
        self.requests_per_minute = requests_per_minute if db is not None else 0
        self.tokens_per_minute = tokens_per_minute if db is not None else 0

    def admit(self, account: str) -> None:
        """Take one request from the account's allowance, or raise ThrottlingException."""
        if self.tokens_per_minute and self.buckets.level(account, TOKENS, self.tokens_per_minute) <= 0:
            raise ThrottlingException(f"{TOO_MANY} The account's quota of {self.tokens_per_minute} tokens "
                                      "per minute is used up.")
        if self.requests_per_minute and not self.buckets.draw(account, REQUESTS, self.requests_per_minute, 1,
                                                              at_least=1):
            raise ThrottlingException(f"{TOO_MANY} The account's quota is {self.requests_per_minute} "
                                      "requests per minute.")

    def charge(self, account: str, tokens: int) -> None:
        if self.tokens_per_minute and tokens > 0:
            self.buckets.draw(account, TOKENS, self.tokens_per_minute, tokens)
