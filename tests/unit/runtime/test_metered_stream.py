"""A metered stream reports how it ended exactly once, also when its consumer drops it before reading it (the
provisioned slot it holds is released by that report)."""

from __future__ import annotations

from outcrop.runtime.service import _MeteredStream
from outcrop.runtime.tables import UsageStatus


class _Inner:
    completion = None
    produced_tokens = 3

    def __iter__(self):
        yield from ("a", "b")


def test_a_stream_dropped_unread_is_settled_once():
    reports = []
    stream = _MeteredStream(_Inner(), lambda completion, status, produced: reports.append((status, produced)))
    stream.close()
    stream.close()
    assert reports == [(UsageStatus.CANCELLED, 0)]


def test_a_stream_read_to_its_end_is_reported_by_its_reading():
    reports = []
    stream = _MeteredStream(_Inner(), lambda completion, status, produced: reports.append(status))
    assert list(stream) == ["a", "b"]
    stream.close()
    assert reports == [UsageStatus.SUCCESS]
