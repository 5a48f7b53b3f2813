"""Capacity of one provisioned throughput: model units -> concurrent sequences and tokens per minute.

One model unit buys `mu_concurrent_sequences` sequences generating at once and `mu_tokens_per_minute`
tokens (input and output) a minute; N units buy N times both. A request beyond the capacity waits
its turn in a first-come, first-served line for a few seconds, then gets ThrottlingException (429),
which boto3 retries with backoff.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from outcrop.errors import ThrottlingException


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
