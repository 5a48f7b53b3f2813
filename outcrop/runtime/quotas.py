"""On-demand inference quotas: requests and tokens per minute, per account, as token buckets.

A bucket holds a minute's allowance and refills continuously, so a burst up to the quota passes and
a steady rate above it is refused with ThrottlingException (429), which boto3 retries with backoff.
Token use is only known after generation, so a request is admitted while the account's token bucket
is not empty and its actual tokens are charged when it ends (the bucket may go negative, which then
holds back the next requests until it refills).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from outcrop.errors import ThrottlingException

TOO_MANY = "Too many requests, please wait before trying again."


@dataclass
class _Bucket:
    capacity: float
    level: float
    updated: float

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.capacity / 60.0)
        self.updated = now


class Quotas:
    def __init__(self, requests_per_minute: int, tokens_per_minute: int) -> None:
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self._requests: dict[str, _Bucket] = {}
        self._tokens: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def _bucket(self, buckets: dict[str, _Bucket], account: str, capacity: int, now: float) -> _Bucket:
        bucket = buckets.get(account)
        if bucket is None:
            bucket = buckets[account] = _Bucket(capacity, capacity, now)
        bucket.refill(now)
        return bucket

    def admit(self, account: str) -> None:
        """Take one request from the account's allowance, or raise ThrottlingException."""
        now = time.monotonic()
        with self._lock:
            if self.tokens_per_minute and self._bucket(self._tokens, account, self.tokens_per_minute, now).level <= 0:
                raise ThrottlingException(f"{TOO_MANY} The account's quota of {self.tokens_per_minute} tokens "
                                          "per minute is used up.")
            if self.requests_per_minute:
                bucket = self._bucket(self._requests, account, self.requests_per_minute, now)
                if bucket.level < 1:
                    raise ThrottlingException(f"{TOO_MANY} The account's quota is {self.requests_per_minute} "
                                              "requests per minute.")
                bucket.level -= 1

    def charge(self, account: str, tokens: int) -> None:
        if not self.tokens_per_minute or tokens <= 0:
            return
        with self._lock:
            self._bucket(self._tokens, account, self.tokens_per_minute, time.monotonic()).level -= tokens
