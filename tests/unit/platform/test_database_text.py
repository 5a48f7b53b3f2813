"""Text with a NUL character (a random model's answer can hold one) is stored on every database: SQLite keeps
it, PostgreSQL (whose text cannot hold one) gets U+FFFD in its place instead of failing the request."""

from __future__ import annotations

from outcrop.platform.database import NUL_REPLACEMENT, utc_now
from outcrop.platform.tables import JobRow


def test_a_nul_in_text_is_stored(db):
    with db.session() as session:
        session.add(JobRow(job_id="j", account_id="111111111111", entry_point="x:y", spec={"text": "a\x00b"},
                           state="QUEUED", attempt=0, stop_requested=False, message="before\x00after",
                           created_at=utc_now(), updated_at=utc_now()))
    with db.session() as session:
        row = session.get(JobRow, "j")
        assert row.message in ("before\x00after", f"before{NUL_REPLACEMENT}after")
        assert row.spec["text"] in ("a\x00b", f"a{NUL_REPLACEMENT}b")
