"""This server process, as the others on the database see it: a row in `servers` it refreshes every
HEARTBEAT_SECONDS. Work a server holds on behalf of the platform (a provisioned throughput's sequence slots)
counts only while its server has been seen within STALE_SECONDS, so a server that dies (kill -9, a lost
machine) gives its share back within that time, without anyone cleaning up after it; its jobs are requeued
by the next server that notices (platform/jobs.py)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from outcrop.platform.database import Database
from outcrop.platform.tables import ServerRow

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0
STALE_SECONDS = 30.0


class Presence:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.server_id = uuid.uuid4().hex
        self.host = _host()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.beat()

    def beat(self) -> None:
        now = time.time()
        with self.db.session() as session:
            if not session.execute(update(ServerRow).where(ServerRow.server_id == self.server_id)
                                   .values(seen_at=now)).rowcount:
                session.add(ServerRow(server_id=self.server_id, seen_at=now, host=self.host, pid=os.getpid()))
            # The long dead are forgotten (what they held stopped counting when they went stale).
            session.execute(delete(ServerRow).where(ServerRow.seen_at < now - 10 * STALE_SECONDS))

    def live(self, session: Session) -> set[str]:
        """The servers alive: this one, and those seen within STALE_SECONDS, except those on this host whose
        process is gone (a server killed here and restarted need not wait for its old self to go stale)."""
        now, out = time.time(), {self.server_id}
        for server_id, seen_at, host, pid in session.execute(
                select(ServerRow.server_id, ServerRow.seen_at, ServerRow.host, ServerRow.pid)):
            if seen_at >= now - STALE_SECONDS and (host != self.host or _running(pid)):
                out.add(server_id)
        return out

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
        """Leave: this server's row goes at once, and with it the worth of whatever it still held."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=HEARTBEAT_SECONDS)
        with self.db.session() as session:
            session.execute(delete(ServerRow).where(ServerRow.server_id == self.server_id))


def _host() -> str:
    """This host as its processes see each other: the hostname, and the pid namespace (containers sharing a
    hostname but not their processes are different hosts for the pid check)."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{socket.gethostname()}#{namespace}"[:255]


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    return True
