"""On-demand quotas kept in the database: two Quotas on one database (two server processes) grant an account
its allowance once; the bucket refills with time and goes negative on tokens charged after the fact."""

from __future__ import annotations

import threading

import pytest

from outcrop.errors import ThrottlingException
from outcrop.runtime import quotas as quotas_module
from outcrop.runtime.quotas import Quotas


@pytest.fixture
def clock(monkeypatch):
    now = [1_000_000.0]
    monkeypatch.setattr(quotas_module.time, "time", lambda: now[0])
    return now


def test_two_servers_on_one_database_share_the_requests_allowance(db, clock):
    first, second = Quotas(db, 10, 0), Quotas(db, 10, 0)
    for i in range(10):
        (first if i % 2 else second).admit("111111111111")
    for quotas in (first, second):
        with pytest.raises(ThrottlingException, match="10 requests per minute"):
            quotas.admit("111111111111")
    first.admit("222222222222")  # another account has its own bucket
    clock[0] += 6  # a tenth of a minute refills one request
    second.admit("111111111111")
    with pytest.raises(ThrottlingException):
        first.admit("111111111111")


def test_tokens_are_charged_after_the_fact_and_hold_back_later_requests(db, clock):
    quotas = Quotas(db, 0, 100)
    quotas.admit("111111111111")
    quotas.charge("111111111111", 150)  # the bucket goes negative
    with pytest.raises(ThrottlingException, match="100 tokens per minute"):
        Quotas(db, 0, 100).admit("111111111111")
    clock[0] += 60  # a minute refills a whole bucket: -50 + 100
    quotas.admit("111111111111")


def test_concurrent_admissions_never_exceed_the_allowance(db, clock):
    servers = [Quotas(db, 25, 0) for _ in range(4)]
    admitted = []

    def call(quotas):
        for _ in range(20):
            try:
                quotas.admit("111111111111")
                admitted.append(1)
            except ThrottlingException:
                pass
    threads = [threading.Thread(target=call, args=(q,)) for q in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(admitted) == 25


def test_no_database_means_no_quotas():
    Quotas(None, 1, 1).admit("111111111111")
    Quotas(None, 1, 1).admit("111111111111")


def test_a_server_whose_clock_runs_behind_refills_nothing(db, clock):
    quotas = Quotas(db, 60, 0)  # one request a second
    for _ in range(59):
        quotas.admit("111111111111")
    clock[0] -= 5  # another server, 5 s behind, takes the last one: the bucket's time must not move back...
    quotas.admit("111111111111")
    clock[0] += 5  # ...or this server would refill those 5 s a second time
    with pytest.raises(ThrottlingException):
        quotas.admit("111111111111")
    clock[0] += 1
    quotas.admit("111111111111")
