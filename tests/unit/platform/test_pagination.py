"""Keyset pagination: every row once in either order, stable under inserts between pages, signed tokens."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import DateTime, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from outcrop.errors import ValidationException
from outcrop.platform.database import Database
from outcrop.platform.pagination import page, use_secret

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


class _Base(DeclarativeBase):
    pass


class Thing(_Base):
    __tablename__ = "things"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Other(_Base):
    __tablename__ = "others"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@pytest.fixture
def db(tmp_path):
    database = Database(f"sqlite:///{tmp_path}/t.db")
    _Base.metadata.create_all(database.engine)
    use_secret(database, b"a deployment secret")
    yield database
    database.dispose()


def add(db: Database, *rows: tuple[str, datetime]) -> None:
    with db.session() as session:
        session.add_all(Thing(id=i, kind="a", created_at=t) for i, t in rows)


def seed(db: Database) -> None:
    """Ten rows, several sharing a timestamp (ties broken by id), one microsecond apart at the edges."""
    add(db, ("r0", T0), ("r1", T0), ("r2", T0), ("r3", T0 + timedelta(microseconds=1)),
        ("r4", T0 + timedelta(seconds=1)), ("r5", T0 + timedelta(seconds=1)), ("r6", T0 + timedelta(seconds=2)),
        ("r7", T0 - timedelta(microseconds=1)), ("r8", T0), ("r9", T0 + timedelta(seconds=2)))


def walk(db: Database, params: dict, between=None) -> list[list[str]]:
    """Page through everything; `between(n)` runs after page n is read."""
    pages, token, query = [], None, select(Thing)
    while True:
        rows, token = page(db, query, Thing.created_at, {**params, "nextToken": token})
        pages.append([r.id for r in rows])
        if between:
            between(len(pages))
        if token is None:
            return pages
        assert len(pages) < 100


def expected(db: Database, ascending: bool) -> list[str]:
    with db.session() as session:
        rows = session.scalars(select(Thing)).all()
    ordered = sorted(rows, key=lambda r: (r.created_at, r.id))
    return [r.id for r in (ordered if ascending else ordered[::-1])]


@pytest.mark.parametrize("size", [1, 2, 3, 4, 10, 11])
@pytest.mark.parametrize("order", ["Ascending", "Descending", None])
def test_pages_cover_every_row_once_in_order_with_ties(db, size, order):
    seed(db)
    params = {"maxResults": size} | ({"sortOrder": order} if order else {})
    pages = walk(db, params)
    assert all(len(p) <= size for p in pages) and all(len(p) == size for p in pages[:-1])
    flat = [i for p in pages for i in p]
    assert flat == expected(db, order == "Ascending")  # newest first by default
    assert len(set(flat)) == 10


def test_newer_rows_inserted_between_pages_neither_repeat_nor_shift_rows(db):
    seed(db)
    before = expected(db, ascending=False)
    counter = iter(range(100))

    def insert(_):  # newer rows, and one at the newest existing time with a higher id
        n = next(counter)
        add(db, (f"new{n}", T0 + timedelta(hours=1, seconds=n)), (f"s{n}", T0 + timedelta(seconds=2)))

    flat = [i for p in walk(db, {"maxResults": 3}, between=insert) for i in p]
    assert flat == before  # rows newer than the first page's start are not this listing's


def test_newer_rows_inserted_between_ascending_pages_come_last_once(db):
    seed(db)

    def insert(n):
        if n <= 2:
            add(db, (f"late{n}", T0 + timedelta(hours=n)))

    flat = [i for p in walk(db, {"maxResults": 4, "sortOrder": "Ascending"}, between=insert) for i in p]
    assert flat == expected(db, ascending=True) and flat[-2:] == ["late1", "late2"]


def test_creation_time_filters_with_an_offset_and_pages(db):
    seed(db)
    after = (T0 - timedelta(microseconds=1)).astimezone(timezone(timedelta(hours=-5)))  # same instant, UTC-5
    pages = walk(db, {"maxResults": 2, "sortOrder": "Ascending", "creationTimeAfter": after,
                      "creationTimeBefore": T0 + timedelta(seconds=2)})
    assert [i for p in pages for i in p] == ["r0", "r1", "r2", "r8", "r3", "r4", "r5"]


def test_max_results_is_respected_and_last_page_has_no_token(db):
    seed(db)
    rows, token = page(db, select(Thing), Thing.created_at, {"maxResults": 4})
    assert len(rows) == 4 and token
    rows, token = page(db, select(Thing), Thing.created_at, {"maxResults": 10})
    assert len(rows) == 10 and token is None
    rows, token = page(db, select(Thing), Thing.created_at, {})
    assert len(rows) == 10 and token is None


def first_token(db: Database, **params) -> str:
    _, token = page(db, select(Thing), Thing.created_at, {"maxResults": 3, **params})
    assert token
    return token


def bad(db: Database, token: str, **params) -> str:
    with pytest.raises(ValidationException) as caught:
        page(db, select(Thing), Thing.created_at, {"maxResults": 3, "nextToken": token, **params})
    assert caught.value.message.startswith("nextToken")
    return caught.value.message


def test_a_tampered_token_is_refused(db):
    seed(db)
    token = first_token(db)
    body_text, mac = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body_text + "=" * (-len(body_text) % 4)))
    assert payload["k"] == ["r5"]  # the last row of the first page (r9, r6, r5); a caller might try to change it
    payload["k"] = ["r9"]
    forged = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")
    bad(db, f"{forged}.{mac}")
    bad(db, token[:-2] + ("AA" if not token.endswith("AA") else "BB"))


def test_a_token_for_another_sort_order_or_other_filters_is_refused(db):
    seed(db)
    assert "sortOrder" in bad(db, first_token(db), sortOrder="Ascending")
    assert "sortOrder" in bad(db, first_token(db, sortOrder="Ascending"))
    assert "filters" in bad(db, first_token(db, nameContains="x"), nameContains="y")
    query = select(Thing).where(Thing.kind == "a")
    page(db, query, Thing.created_at, {"maxResults": 3, "nextToken": first_token(db), "sortOrder": "Descending"})


def test_a_token_from_another_list_is_refused(db):
    with db.session() as session:
        session.add_all(Other(id=f"o{i}", created_at=T0) for i in range(3))
    _, token = page(db, select(Other), Other.created_at, {"maxResults": 1})
    assert token
    bad(db, token)


@pytest.mark.parametrize("garbage", ["", "x", "MA==", "a.b", "a.b.c", "!!!.???", "A" * 5000,
                                     base64.urlsafe_b64encode(b"3").decode(), "\u00e9.\u00e9"])
def test_garbage_is_refused(db, garbage):
    seed(db)
    if garbage == "":  # no token: the first page
        assert len(page(db, select(Thing), Thing.created_at, {"maxResults": 3, "nextToken": garbage})[0]) == 3
        return
    bad(db, garbage)


def test_tokens_survive_a_restart_and_need_the_same_secret(db, tmp_path):
    seed(db)
    token = first_token(db)
    again = Database(db.url)  # a new process: the same database and secret file
    use_secret(again, b"a deployment secret\n")
    rows, _ = page(again, select(Thing), Thing.created_at, {"maxResults": 3, "nextToken": token})
    assert [r.id for r in rows] == expected(db, ascending=False)[3:6]
    other = Database(db.url)
    use_secret(other, b"another deployment's secret")
    bad(other, token)
    again.dispose()
    other.dispose()
