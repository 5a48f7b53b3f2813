"""Capacity of one provisioned throughput: model units -> concurrent sequences and tokens per minute.

One model unit buys `mu_concurrent_sequences` sequences generating at once and `mu_tokens_per_minute`
tokens (input and output) a minute; N units buy N times both. A request beyond the capacity waits
its turn in a first-come, first-served line for a few seconds, then gets ThrottlingException (429),
which boto3 retries with backoff.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque

from sqlalchemy import delete, func, insert, literal, select

from outcrop.errors import ThrottlingException
from outcrop.platform.database import Database
from outcrop.platform.presence import STALE_SECONDS, Presence
from outcrop.platform.tables import ServerRow
from outcrop.provisioning.tables import CapacityLeaseRow, ProvisionedThroughputRow
from outcrop.runtime.quotas import TOKENS, Buckets

log = logging.getLogger(__name__)


class Capacity:
    def __init__(self, model_units: int, sequences_per_unit: int, tokens_per_minute_per_unit: int,
                 queue_seconds: float) -> None:
        self.slots = model_units * sequences_per_unit
        self.tokens_per_minute = model_units * tokens_per_minute_per_unit
        self.queue_seconds = queue_seconds
        self._busy = 0
        self._line: deque[object] = deque()
        self._tokens = float(self.tokens_per_minute)
        self._refilled = time.monotonic()
        self._lock = threading.Condition()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.tokens_per_minute,
                           self._tokens + (now - self._refilled) * self.tokens_per_minute / 60.0)
        self._refilled = now

    def acquire(self) -> None:
        """Take a sequence slot, waiting in line up to `queue_seconds`; else ThrottlingException."""
        ticket = object()
        deadline = time.monotonic() + self.queue_seconds
        with self._lock:
            self._line.append(ticket)
            try:
                while True:
                    self._refill()
                    if self._line[0] is ticket and self._busy < self.slots and self._tokens >= 1:
                        self._busy += 1
                        return
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise ThrottlingException(
                            "Too many requests for this provisioned throughput: its capacity is "
                            f"{self.slots} concurrent sequences and {self.tokens_per_minute} tokens per minute. "
                            "Retry, or buy more model units.")
                    self._lock.wait(min(remaining, 0.25))
            finally:
                self._line.remove(ticket)
                self._lock.notify_all()

    def release(self, tokens: int) -> None:
        with self._lock:
            self._busy -= 1
            self._refill()
            self._tokens -= tokens
            self._lock.notify_all()

    @property
    def in_use(self) -> int:
        return self._busy


class SharedCapacity:
    """A provisioned throughput's capacity shared by every server process on the database: its sequence slots
    are leases (`capacity_leases`), its tokens a minute a bucket (runtime/quotas.py), so N servers grant the
    model units bought once, not N times. A request beyond the capacity polls for a slot for `queue_seconds`
    (no first-come order across servers), then gets ThrottlingException. Leases of a server that died stop
    counting once it has not been seen for presence.STALE_SECONDS."""

    POLL_SECONDS = 0.05

    def __init__(self, db: Database, presence: Presence, arn: str, model_units: int, sequences_per_unit: int,
                 tokens_per_minute_per_unit: int, queue_seconds: float) -> None:
        self.db, self.presence, self.arn = db, presence, arn
        self.slots = model_units * sequences_per_unit
        self.tokens_per_minute = model_units * tokens_per_minute_per_unit
        self.queue_seconds = queue_seconds
        self.buckets = Buckets(db)
        self._held: list[str] = []  # this process's leases: any one is released when a request ends
        self._lock = threading.Lock()
        self._swept = 0.0  # monotonic time of the last sweep of leases left by processes long gone

    def acquire(self) -> None:
        self._sweep()
        deadline = time.monotonic() + self.queue_seconds
        while True:
            if self.buckets.level(self.arn, TOKENS, self.tokens_per_minute) >= 1 and self._lease():
                return
            if time.monotonic() >= deadline:
                raise ThrottlingException(
                    "Too many requests for this provisioned throughput: its capacity is "
                    f"{self.slots} concurrent sequences and {self.tokens_per_minute} tokens per minute. "
                    "Retry, or buy more model units.")
            time.sleep(self.POLL_SECONDS)

    def _lease(self) -> bool:
        """Take a slot if fewer than `slots` are held by live servers: one INSERT ... SELECT ... WHERE count <
        slots, atomic on SQLite (one writer at a time); on PostgreSQL the throughput's row is locked first, so
        two servers' counts cannot both see the last free slot."""
        lease_id, now = uuid.uuid4().hex, time.time()
        lease = CapacityLeaseRow
        held = self._held_by_live_servers(now).scalar_subquery()
        with self.db.session() as session:
            if self.db.engine.dialect.name == "postgresql":
                session.execute(select(ProvisionedThroughputRow.arn).where(ProvisionedThroughputRow.arn == self.arn)
                                .with_for_update())
            session.execute(insert(lease).from_select(
                ["lease_id", "throughput_arn", "server_id", "acquired_at"],
                select(literal(lease_id), literal(self.arn), literal(self.presence.server_id), literal(now))
                .where(held < self.slots)))
            # Whether the row went in, read back: an INSERT ... SELECT's rowcount is not reported by every driver.
            taken = session.get(lease, lease_id) is not None
        if taken:
            with self._lock:
                self._held.append(lease_id)
        return bool(taken)

    def _sweep(self) -> None:
        """Delete this throughput's leases whose process is no longer on the database at all (they stopped
        counting when it went stale; its row goes after 10 of those periods): at most once a minute."""
        if time.monotonic() - self._swept < 60:
            return
        self._swept = time.monotonic()
        try:
            with self.db.session() as session:
                session.execute(delete(CapacityLeaseRow).where(
                    CapacityLeaseRow.throughput_arn == self.arn,
                    CapacityLeaseRow.acquired_at < time.time() - 10 * STALE_SECONDS,
                    CapacityLeaseRow.server_id.not_in(select(ServerRow.server_id))))
        except Exception:  # tidying up; a request must not fail for it
            log.warning("could not sweep old capacity leases of %s", self.arn, exc_info=True)

    def release(self, tokens: int) -> None:
        with self._lock:
            lease_id = self._held.pop() if self._held else None
        if lease_id is not None:
            with self.db.session() as session:
                session.execute(delete(CapacityLeaseRow).where(CapacityLeaseRow.lease_id == lease_id))
        if tokens > 0:
            self.buckets.draw(self.arn, TOKENS, self.tokens_per_minute, tokens)

    @property
    def in_use(self) -> int:
        """The slots held now, by every live server."""
        with self.db.session() as session:
            return session.scalar(self._held_by_live_servers(time.time()))

    def _held_by_live_servers(self, now: float):
        """How many of this throughput's slots servers seen within STALE_SECONDS hold (a SELECT)."""
        lease, server = CapacityLeaseRow, ServerRow
        return (select(func.count()).select_from(lease).join(server, server.server_id == lease.server_id)
                .where(lease.throughput_arn == self.arn, server.seen_at >= now - STALE_SECONDS))
