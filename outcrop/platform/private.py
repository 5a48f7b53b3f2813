"""The data dir belongs to the user who runs Outcrop alone: the folder is 0700, what is written in it 0600.

It holds every account's secrets (`secret.key`, `credentials`, the TLS key, the database whose stored
secrets that key decrypts), every customer's objects, model weights and job outputs. Many writers put
files there and most choose no mode: SQLite (the database and its -wal/-shm), the object store,
PyTorch and transformers saving checkpoints, the job logs. So rather than a mode at each of them (and
the next one forgotten), each process that writes there sets its umask to 0o077 once, at its entry
point: the `outcrop` command (`cli.main`), the job process (`jobs.main`, which inherits it anyway)
and `Services.start` (for programs and tests that embed the server). Files the `outcrop` command
writes elsewhere (a downloaded object, a report) come out 0600 too, which errs on the safe side.

A data dir made 0755 by an earlier version, or by an operator who wrote its outcrop.toml before the first
start, is tightened to 0700 when the server starts, which shuts out its older 0644 files with it, since no
one else can enter the folder; and outcrop.toml itself (a database password, an S3 secret key) is made
0600 wherever the folder stands.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from outcrop.platform.config import CONFIG_FILE_NAME

log = logging.getLogger(__name__)

#: Group and others get nothing: new files are 0600, new folders 0700.
PRIVATE_UMASK = 0o077


def private_files() -> None:
    """Make every file and folder this process creates from now on private to its user."""
    os.umask(PRIVATE_UMASK)


#: Files only an Outcrop data dir holds: a folder with one of them is Outcrop's to tighten. outcrop.toml is
#: among them: an operator often writes it before the first start (a cluster's database and S3 settings).
_OUTCROP_FILES = ("secret.key", "outcrop.db", "credentials", CONFIG_FILE_NAME)


def private_dir(path: Path) -> None:
    """Create `path` (0700), or take group's and others' access away from the data dir that is there.

    An existing folder is tightened only when it is empty or already holds Outcrop's own files: a data dir
    pointed at a shared folder (a home directory, /srv/x) is the operator's to decide, so it gets a warning."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    _private_file(path / CONFIG_FILE_NAME)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077 and not (any((path / name).exists() for name in _OUTCROP_FILES) or not any(path.iterdir())):
        log.warning("the data dir %s (mode %o) holds other files than Outcrop's; it is left as it is. Its "
                    "secrets are 0600, but give Outcrop a folder of its own to keep its folders private", path, mode)
        return
    if mode & 0o077:
        try:
            os.chmod(path, mode & 0o700)
        except OSError as exc:  # not ours to change (another user's folder): say so, and go on
            log.warning("could not make the data dir %s private (mode %o): %s", path, mode, exc)


def _private_file(path: Path) -> None:
    """Take group's and others' access away from a file of secrets written by hand (outcrop.toml holds the
    database's password and the S3 secret key), whatever the folder around it; a file that is not there is
    left so."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return
    if mode & 0o077:
        try:
            os.chmod(path, mode & 0o700)
        except OSError as exc:  # another user's file: say so, and go on
            log.warning("could not make %s private (mode %o): %s", path, mode, exc)
