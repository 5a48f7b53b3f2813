"""What a model unit buys: sequence slots and tokens per minute, a first-come first-served line, throttling."""

from __future__ import annotations

import threading
import time

import pytest

from outcrop.errors import ThrottlingException
from outcrop.provisioning.capacity import Capacity


def test_two_units_hold_twice_the_sequences_of_one():
    for units in (1, 2):
        capacity = Capacity(units, sequences_per_unit=2, tokens_per_minute_per_unit=10_000, queue_seconds=0.05)
        for _ in range(2 * units):
            capacity.acquire()
        with pytest.raises(ThrottlingException, match=f"{2 * units} concurrent sequences"):
            capacity.acquire()
        capacity.release(10)
        capacity.acquire()  # a released slot is taken again


def test_a_waiting_request_gets_the_next_free_slot_in_arrival_order():
    capacity = Capacity(1, sequences_per_unit=1, tokens_per_minute_per_unit=10_000, queue_seconds=5)
    capacity.acquire()
    order: list[int] = []

    def wait_then_record(i: int) -> None:
        capacity.acquire()
        order.append(i)
        capacity.release(1)
    threads = []
    for i in range(3):
        threads.append(threading.Thread(target=wait_then_record, args=(i,)))
        threads[-1].start()
        time.sleep(0.05)  # arrive one after another
    capacity.release(1)
    for t in threads:
        t.join(timeout=10)
    assert order == [0, 1, 2]


def test_tokens_per_minute_run_out_and_refill():
    capacity = Capacity(1, sequences_per_unit=4, tokens_per_minute_per_unit=600, queue_seconds=0.05)
    capacity.acquire()
    capacity.release(600)  # the whole minute's tokens in one answer
    with pytest.raises(ThrottlingException, match="600 tokens per minute"):
        capacity.acquire()
    time.sleep(0.3)  # 600 a minute refill 10 a second
    capacity.acquire()
