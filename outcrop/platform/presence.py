"""This server process, as the others on the database see it: a row in `servers` it refreshes every
HEARTBEAT_SECONDS. Work a server holds on behalf of the platform (a provisioned throughput's sequence slots)
counts only while its server has been seen within STALE_SECONDS, so a server that dies (kill -9, a lost
machine) gives its share back within that time, without anyone cleaning up after it."""

from __future__ import annotations

import logging
import threading
import time
import uuid

from sqlalchemy import delete, update

from outcrop.platform.database import Database
from outcrop.runtime.tables import CapacityLeaseRow, ServerRow

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0
STALE_SECONDS = 30.0


class Presence:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.server_id = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.beat()

    def beat(self) -> None:
        now = time.time()
        with self.db.session() as session:
            if not session.execute(update(ServerRow).where(ServerRow.server_id == self.server_id)
                                   .values(seen_at=now)).rowcount:
                session.add(ServerRow(server_id=self.server_id, seen_at=now))
            # The dead are forgotten, with what they held (their leases stopped counting already).
            gone = [row.server_id for row in session.query(ServerRow.server_id)
                    .where(ServerRow.seen_at < now - 10 * STALE_SECONDS)]
            if gone:
                session.execute(delete(CapacityLeaseRow).where(CapacityLeaseRow.server_id.in_(gone)))
                session.execute(delete(ServerRow).where(ServerRow.server_id.in_(gone)))

    def start(self) -> None:
        def run() -> None:
            while not self._stop.wait(HEARTBEAT_SECONDS):
                try:
                    self.beat()
                except Exception:  # noqa: BLE001 - a missed beat is retried; the server goes on serving
                    log.warning("could not refresh this server's presence", exc_info=True)
        self._thread = threading.Thread(target=run, name="presence", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Leave: this server's row and whatever it still held go at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=HEARTBEAT_SECONDS)
        with self.db.session() as session:
            session.execute(delete(CapacityLeaseRow).where(CapacityLeaseRow.server_id == self.server_id))
            session.execute(delete(ServerRow).where(ServerRow.server_id == self.server_id))
