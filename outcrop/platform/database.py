"""The metadata database: one SQLAlchemy engine, sessions, and Alembic migrations applied on start.

SQLite in the data dir is the embedded default; a `postgresql://` URL runs the same code. Each
service module declares its own tables on `Base`; the schema itself only ever changes through a
migration in `platform/migrations/versions/`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Engine, MetaData, TypeDecorator, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

# Stable constraint names, so that migrations can refer to them on every backend.
_NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=_NAMING)


def utc_now() -> datetime:
    """Now, as an aware UTC datetime: the one clock every table's timestamps come from."""
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """`moment` in UTC; a naive datetime is taken to be UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class UtcDateTime(TypeDecorator):
    """Every table's timestamp column: stored in UTC, always read back as an aware UTC datetime, on SQLite
    (which keeps no offset) as on PostgreSQL; naive values are taken to be UTC. The DDL is plain
    `DateTime(timezone=True)`."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else as_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else as_utc(value)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets the server read while a job process writes; busy_timeout turns the rare writer
    # collision into a short wait instead of "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for `url`; for SQLite the file's folder is created and the pragmas set."""
    if url.startswith("postgresql://"):
        # The same URL users write for psql; psycopg 3 is the driver we install.
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_engine(url, pool_pre_ping=True, json_serializer=_json_without_nul)
    if engine.dialect.name == "postgresql":
        event.listen(engine, "before_cursor_execute", _no_nul, retval=True)
    return engine


#: What a NUL character becomes on PostgreSQL, whose text cannot hold one (a model's answer, a user's text may).
NUL_REPLACEMENT = "\ufffd"


def _json_without_nul(value: Any) -> str:
    """JSON for PostgreSQL: NULs in its strings become U+FFFD (PostgreSQL's JSON operators refuse `\\u0000`)."""
    def clean(item: Any) -> Any:
        if isinstance(item, str):
            return item.replace("\x00", NUL_REPLACEMENT)
        if isinstance(item, dict):
            return {clean(k): clean(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [clean(v) for v in item]
        return item
    return json.dumps(clean(value))


def _no_nul(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001 - SQLAlchemy's event
    """PostgreSQL refuses NUL in text (SQLite keeps it): each string parameter's NULs become U+FFFD, so a stray
    NUL in generated or uploaded text is stored, marked, instead of failing the request."""
    def clean(value):
        if isinstance(value, str) and "\x00" in value:
            return value.replace("\x00", NUL_REPLACEMENT)
        return value

    def clean_set(params):
        if isinstance(params, dict):
            return {k: clean(v) for k, v in params.items()}
        if isinstance(params, list | tuple):
            return type(params)(clean(v) for v in params)
        return params

    if executemany and isinstance(parameters, list | tuple):
        return statement, type(parameters)(clean_set(p) for p in parameters)
    return statement, clean_set(parameters)


def migrate(engine: Engine) -> tuple[str | None, str]:
    """Bring the schema to the newest revision; returns (the revision before, None for a new database; the newest)."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        before = MigrationContext.configure(connection).get_current_revision()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        return before, MigrationContext.configure(connection).get_current_revision() or ""


class Database:
    """The engine and a session factory; `session()` commits on success and rolls back on error."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        #: The schema revision this process found before migrating it (None: a new database, or not migrated
        #: here); data migrations that need more than SQL (the object store) run when it is older than theirs.
        self.upgraded_from: str | None = None

    def __reduce__(self) -> tuple:
        """Sent to another process (a Ray Train worker of a job) as its URL: it opens its own connections."""
        return Database, (self.url,)

    def migrate(self) -> str:
        """Migrate to the newest revision and return it."""
        before, after = migrate(self.engine)
        if before != after:
            self.upgraded_from = before
        return after

    @contextmanager
    def session(self) -> Iterator[Session]:
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()

    def update(self, table: Any, key: Any, **fields: Any) -> None:
        """Set some fields of one row, found by primary key; a row with `updated_at` gets it set too."""
        with self.session() as session:
            row = session.get(table, key)
            for name, value in fields.items():
                setattr(row, name, value)
            if hasattr(row, "updated_at"):
                row.updated_at = utc_now()

    @staticmethod
    def check_name_free(session: Session, table: Any, account: str, name: str, key: Any = None,
                        what: str = "A resource") -> None:
        """ConflictException if another row of `table` (`account_id`, `name`) in the account has the name;
        `key`: the primary key of the row being renamed, which may keep its own."""
        from sqlalchemy import func, inspect, select

        from outcrop.errors import ConflictException

        query = select(func.count()).select_from(table).where(table.account_id == account, table.name == name)
        if key is not None:
            query = query.where(inspect(table).primary_key[0] != key)
        if session.scalar(query):
            raise ConflictException(f"{what} named {name} already exists")

    def owned(self, table: Any, name_column: Any, account: str, identifier: str, what: str) -> Any:
        """A row of `table` by ARN (its primary key) or by name; another account's row does not exist
        for this caller, so both answer the same ResourceNotFoundException."""
        from sqlalchemy import select

        from outcrop.errors import ResourceNotFoundException

        with self.session() as session:
            if identifier.startswith("arn:"):
                row = session.get(table, identifier)
            else:
                row = session.scalars(select(table).where(table.account_id == account,
                                                          name_column == identifier)).first()
        if row is None or row.account_id != account:
            raise ResourceNotFoundException(f"The {what} {identifier} does not exist")
        return row
