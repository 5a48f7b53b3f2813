"""What a batch job has finished, kept as it finishes, so that a restarted job asks the model only for the rest.

One file in the job's work dir, appended to (and flushed) as each record's answer comes: a job process
killed at any moment loses at most the records that were in the batch, never one it had finished. Each
entry names the record by its place (input file and line) and a digest of its recordId and modelInput,
so an input file changed between two attempts has its changed records asked again, not answered from
the old ones. A last line cut short by the kill is dropped, and the file cut back to its last whole line.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from outcrop.batch.records import Record

JOURNAL_NAME = "finished-records.jsonl"


def digest(record: Record) -> str:
    """What a finished entry must match to stand for `record` (its id and input, not its place alone)."""
    text = json.dumps([record.record_id, record.model_input], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass(frozen=True)
class Finished:
    """One finished record: its output line and the tokens the bill counted for it."""

    line: dict[str, Any]
    input_tokens: int
    output_tokens: int


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file = None

    def load(self, records: list[Record]) -> dict[str, Finished]:
        """The records of `records` finished by an earlier attempt, by `Record.key`; the journal is then open
        for appending (torn last line removed)."""
        wanted = {record.key: digest(record) for record in records}
        finished: dict[str, Finished] = {}
        good = 0  # bytes of whole, readable lines
        if self.path.exists():
            with self.path.open("rb") as fh:
                for raw in fh:
                    if not raw.endswith(b"\n"):
                        break  # cut short by the kill
                    try:
                        entry = json.loads(raw)
                        key, entry_digest = entry["k"], entry["d"]
                        done = Finished(entry["o"], int(entry["i"]), int(entry["t"]))
                    except (ValueError, KeyError, TypeError):
                        break
                    good += len(raw)
                    if wanted.get(key) == entry_digest:
                        finished[key] = done
            with self.path.open("r+b") as fh:
                fh.truncate(good)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")
        return finished

    def add(self, record: Record, done: Finished) -> None:
        """Keep one finished record (safe from many threads); on disk before this returns."""
        entry = json.dumps({"k": record.key, "d": digest(record), "o": done.line, "i": done.input_tokens,
                            "t": done.output_tokens}, ensure_ascii=False, separators=(",", ":"))
        with self._lock:
            self._file.write(entry + "\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
                self._file = None
