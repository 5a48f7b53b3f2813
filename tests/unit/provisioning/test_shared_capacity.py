"""A provisioned throughput's capacity shared by two server processes on one database (two Presences, two
SharedCapacity objects): the model units bought are granted once, and a dead server's slots come back."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import update

from outcrop.errors import ThrottlingException
from outcrop.platform.presence import STALE_SECONDS, Presence
from outcrop.platform.tables import ServerRow
from outcrop.provisioning.capacity import SharedCapacity

ARN = "arn:aws:bedrock:us-east-1:111111111111:provisioned-model/abc123"


def _capacity(db, presence, tokens_per_minute=6000):
    return SharedCapacity(db, presence, ARN, model_units=1, sequences_per_unit=2,
                          tokens_per_minute_per_unit=tokens_per_minute, queue_seconds=0.2)


def test_two_servers_grant_the_slots_once(db):
    first, second = _capacity(db, Presence(db)), _capacity(db, Presence(db))
    first.acquire()
    second.acquire()
    assert first.in_use == second.in_use == 2
    for capacity in (first, second):
        with pytest.raises(ThrottlingException, match="2 concurrent sequences"):
            capacity.acquire()
    first.release(10)
    second.acquire()  # the slot the first server gave back
    assert first.in_use == 2


def test_a_dead_servers_slots_stop_counting(db):
    dead, alive = Presence(db), Presence(db)
    held = _capacity(db, dead)
    held.acquire()
    held.acquire()
    with pytest.raises(ThrottlingException):
        _capacity(db, alive).acquire()
    with db.session() as session:  # not seen for longer than STALE_SECONDS: as after a kill -9
        session.execute(update(ServerRow).where(ServerRow.server_id == dead.server_id)
                        .values(seen_at=time.time() - 2 * STALE_SECONDS))
    _capacity(db, alive).acquire()


def test_tokens_a_minute_are_shared_too(db):
    first, second = _capacity(db, Presence(db), 100), _capacity(db, Presence(db), 100)
    first.acquire()
    first.release(150)  # the minute's tokens, and more, spent through the first server
    with pytest.raises(ThrottlingException, match="100 tokens per minute"):
        second.acquire()


def test_a_server_that_leaves_gives_back_what_it_held(db):
    leaving, staying = Presence(db), Presence(db)
    _capacity(db, leaving).acquire()
    _capacity(db, leaving).acquire()
    leaving.close()
    _capacity(db, staying).acquire()


def test_leases_of_a_process_long_gone_are_swept(db):
    from sqlalchemy import delete, func, select

    from outcrop.provisioning.tables import CapacityLeaseRow

    gone, here = Presence(db), Presence(db)
    _capacity(db, gone).acquire()
    with db.session() as session:  # its row forgotten, as Presence.beat forgets the long dead
        session.execute(delete(ServerRow).where(ServerRow.server_id == gone.server_id))
        session.execute(update(CapacityLeaseRow).values(acquired_at=time.time() - 11 * STALE_SECONDS))
    _capacity(db, here).acquire()  # the first acquire of a capacity sweeps
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(CapacityLeaseRow)
                              .where(CapacityLeaseRow.server_id == gone.server_id)) == 0
