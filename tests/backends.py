"""The services a test server can run on instead of its embedded defaults, selected by environment variables,
so that the same integration tests run on the engines people operate at scale:

- `OUTCROP_TEST_DATABASE=postgresql`: a throwaway PostgreSQL server from the machine's own PostgreSQL binaries
  (Debian's `postgresql` package): `initdb` in a temporary folder, a free port on loopback, stopped at the end;
  each test server gets a database of its own. PostgreSQL refuses to run as root: as root, it runs as the
  `postgres` user the package creates.
- `OUTCROP_TEST_OBJECT_STORE=s3`: each test server's object store (buckets, datasets, artifacts, invocation
  logs, knowledge-base vectors through LanceDB) is an S3 API: a moto server of its own (one per test server,
  since bucket names are global to an S3 endpoint and the tests of different servers reuse names).

Both are written into the data dir's outcrop.toml, as a user configures them, so that the server and every CLI
command given `--data-dir` use them.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

#: What selects PostgreSQL, and S3, for the test servers.
SELECT = "OUTCROP_TEST_DATABASE"
SELECT_S3 = "OUTCROP_TEST_OBJECT_STORE"


def _choice(name: str, allowed: tuple[str, ...]) -> str:
    """The value of a selecting variable; anything but its known values is an error, not a silent default."""
    value = os.environ.get(name, "").lower()
    if value not in ("", *allowed):
        raise RuntimeError(f"{name}={value!r}: use one of {', '.join(allowed)}, or leave it unset")
    return value


def wanted() -> bool:
    return _choice(SELECT, ("sqlite", "postgres", "postgresql")) in ("postgres", "postgresql")


def s3_wanted() -> bool:
    return _choice(SELECT_S3, ("local", "s3")) == "s3"


def configure(data_dir: Path, postgres: PostgresServer | None) -> None:
    """Write the selected services into the data dir's outcrop.toml (prepended: a top-level key must come
    before the tables a test's own outcrop.toml may hold). A data dir configured before (a restarted
    server) keeps its database and its S3 server."""
    config = data_dir / "outcrop.toml"
    text = config.read_text() if config.exists() else ""
    lines = []
    if postgres is not None and not _has_key(text, "database_url"):
        lines.append(f'database_url = "{postgres.database_for(data_dir.resolve())}"')
    if s3_wanted() and not _has_key(text, "s3_endpoint"):
        lines += [f'{key} = "{value}"' for key, value in _moto(data_dir).items()]
    if lines:
        data_dir.mkdir(parents=True, exist_ok=True)
        config.write_text("\n".join(lines) + "\n" + text)


def _has_key(toml: str, key: str) -> bool:
    return any(line.split("=", 1)[0].strip() == key for line in toml.splitlines() if "=" in line)


def _moto(data_dir: Path) -> dict[str, str]:
    from tests.integration.conftest import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, start_moto

    return {"s3_endpoint": start_moto(), "s3_access_key_id": ACCESS_KEY_ID,
            "s3_secret_access_key": SECRET_ACCESS_KEY, "s3_region": REGION}


def _binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)),
                                       None)
    if found is None:
        raise RuntimeError(f"{SELECT}=postgresql needs PostgreSQL's {name} (Debian: apt-get install postgresql)")
    return found


class PostgresServer:
    def __init__(self, port: int) -> None:
        # Its own folder under the system's temporary one: pytest's are private to the user running the tests,
        # and the server may run as another (`postgres`).
        self.folder = folder = Path(tempfile.mkdtemp(prefix="outcrop-postgres-"))
        self.port = port
        self._names = itertools.count(1)
        self._databases: dict[Path, str] = {}
        # As root the server runs as `postgres`, which must own its folder.
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            account = pwd.getpwnam("postgres")
            os.chown(folder, account.pw_uid, account.pw_gid)
        self.data = folder / "data"
        self._run(_binary("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync")
        self._run(_binary("pg_ctl"), "-D", str(self.data), "-w", "-l", str(folder / "server.log"), "-o",
                  f"-h 127.0.0.1 -p {self.port} -k {folder} -c fsync=off -c max_connections=300", "start")

    def _run(self, *command: str) -> None:
        subprocess.run([*self._as, *command], check=True, capture_output=True, timeout=120)

    def database_for(self, data_dir: Path) -> str:
        """The database of the server with this data dir: a fresh one for a new data dir (servers never share
        state), the same one again when a test restarts a server on its data dir."""
        if data_dir not in self._databases:
            self._databases[data_dir] = self._new_database()
        return self._databases[data_dir]

    def _new_database(self) -> str:
        import psycopg

        name = f"outcrop_{next(self._names)}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        try:
            self._run(_binary("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def query(data_dir: Path, sql: str, *params: object) -> list[tuple]:
    """The rows of `sql` (`?` placeholders) on the database of the server with this data dir: its SQLite file, or
    the PostgreSQL database its outcrop.toml names. For tests that check what a server stored."""
    from outcrop.platform.config import load_settings

    url = load_settings(data_dir=data_dir).resolved_database_url
    if url.startswith("sqlite:///"):
        import sqlite3

        with sqlite3.connect(url[len("sqlite:///"):]) as db:
            return [tuple(row) for row in db.execute(sql, params).fetchall()]
    import psycopg

    with psycopg.connect(url) as db:
        return [tuple(row) for row in db.execute(sql.replace("?", "%s"), params).fetchall()]


def objects(data_dir: Path, uri_prefix: str, suffix: str = "") -> dict[str, bytes]:
    """The objects under `uri_prefix` (keys ending with `suffix`) in the object store of the server with this
    data dir: its folder, or the S3 endpoint its outcrop.toml names. For tests that check what a server wrote."""
    from outcrop.platform.config import load_settings
    from outcrop.platform.objectstore import open_object_store

    store = open_object_store(load_settings(data_dir=data_dir))
    bucket = uri_prefix.removeprefix("s3://").split("/", 1)[0]
    if not store.bucket_exists(bucket):
        return {}
    return {info.key: store.get_bytes(f"s3://{bucket}/{info.key}") for info in store.list(uri_prefix)
            if info.key.endswith(suffix)}


#: For the tests of the embedded backends themselves (file modes of the SQLite file, the objects folder).
embedded_only = pytest.mark.skipif(wanted() or s3_wanted(), reason="checks the embedded SQLite file and objects "
                                                                    "folder, which this run replaced")


def objects_path(data_dir: Path, uri: str) -> Path:
    """A local folder holding the objects under `uri`, laid out as the embedded store lays them out
    (`<bucket>/<key>`): the objects folder itself on the embedded store; on S3, a fresh copy downloaded now.
    For tests that walk what a job wrote (glob, read_text) whatever the store."""
    from outcrop.platform.config import load_settings
    from outcrop.platform.objectstore import LocalObjectStore, open_object_store

    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    store = open_object_store(load_settings(data_dir=data_dir))
    if isinstance(store, LocalObjectStore):
        return store.root / bucket / prefix
    root = Path(tempfile.mkdtemp(prefix="outcrop-objects-"))
    for info in store.list(uri):
        target = root / bucket / info.key
        target.parent.mkdir(parents=True, exist_ok=True)
        store.download_file(f"s3://{bucket}/{info.key}", target)
    return root / bucket / prefix
