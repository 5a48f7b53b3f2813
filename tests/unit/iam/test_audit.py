"""The audit trail: writing events, querying them back in SQL, `outcrop audit`, and the 0004 migration."""

from __future__ import annotations

import argparse
import io
import json
import shutil
from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext

from outcrop.cli import audit as audit_cli
from outcrop.iam.audit import query_events, record_event
from outcrop.iam.principal import Principal
from outcrop.iam.tables import AuditEvent
from outcrop.platform.database import MIGRATIONS_DIR, Base, Database
from outcrop.runtime.tables import InvocationLoggingConfig

ALICE = Principal("111111111111", "arn:aws:iam::111111111111:user/alice", "AKIAALICE")
BOB = Principal("222222222222", "arn:aws:iam::222222222222:user/bob", "AKIABOB")
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def db(tmp_path) -> Database:
    database = Database(f"sqlite:///{tmp_path}/t.db")
    Base.metadata.create_all(database.engine)
    yield database
    database.dispose()


def _seed(db: Database) -> None:
    record_event(db, service="bedrock", operation="ListFoundationModels", principal=ALICE, event_time=T0,
                 source_ip="10.0.0.1", request_id="r1", user_agent="Boto3/1.40")
    record_event(db, service="bedrock", operation="CreateModelCustomizationJob", principal=ALICE,
                 resource="arn:aws:bedrock:us-east-1:111111111111:model-customization-job/j1",
                 event_time=T0 + timedelta(minutes=5), source_ip="10.0.0.1", request_id="r2")
    record_event(db, service="bedrock", operation="CreateModelCustomizationJob", principal=BOB,
                 result="AccessDeniedException", status=403, event_time=T0 + timedelta(minutes=10),
                 source_ip="10.0.0.2", request_id="r3")
    record_event(db, service="iam", operation="CreateUser", principal=ALICE,
                 resource="arn:aws:iam::111111111111:user/carol", event_time=T0 + timedelta(minutes=15),
                 request_id="r4")
    record_event(db, service="bedrock", operation="ListCustomModels", result="UnrecognizedClientException",
                 status=403, access_key_id="AKIAUNKNOWN", event_time=T0 + timedelta(minutes=20),
                 source_ip="203.0.113.9", request_id="r5")


def test_record_and_read_back(db):
    record_event(db, service="bedrock", operation="GetCustomModel", principal=ALICE,
                 resource="arn:aws:bedrock:us-east-1:111111111111:custom-model/m", source_ip="::1",
                 request_id="req-1", user_agent="x" * 5000, event_time=T0)
    [event] = query_events(db)
    assert event.account_id == "111111111111"
    assert event.principal_arn == ALICE.arn
    assert event.access_key_id == "AKIAALICE"
    assert (event.service, event.operation, event.result, event.status) == ("bedrock", "GetCustomModel", "Success",
                                                                            200)
    assert event.resource.endswith("custom-model/m")
    assert len(event.user_agent) == 512
    assert event.event_time == T0 and event.event_time.tzinfo is not None


def test_times_are_stored_in_utc(db):
    plus_two = timezone(timedelta(hours=2))
    record_event(db, service="bedrock", operation="A", principal=ALICE, event_time=T0.astimezone(plus_two))
    record_event(db, service="bedrock", operation="B", principal=ALICE, event_time=T0 + timedelta(minutes=1))
    assert [e.operation for e in query_events(db)] == ["B", "A"]
    assert query_events(db, operation="A")[0].event_time == T0
    # An offset `since` means the same instant as its UTC spelling; a naive one is UTC.
    assert [e.operation for e in query_events(db, since=(T0 + timedelta(seconds=30)).astimezone(plus_two))] == ["B"]
    assert [e.operation for e in query_events(db, since=datetime(2025, 3, 1, 12, 0, 30))] == ["B"]


def test_record_event_never_raises(tmp_path, caplog):
    broken = Database(f"sqlite:///{tmp_path}/empty.db")  # no tables
    record_event(broken, service="bedrock", operation="ListFoundationModels", principal=ALICE)
    assert "could not record audit event" in caplog.text


def test_filters_and_order(db):
    _seed(db)
    assert [e.request_id for e in query_events(db)] == ["r5", "r4", "r3", "r2", "r1"]
    assert [e.request_id for e in query_events(db, account_id="111111111111")] == ["r4", "r2", "r1"]
    assert [e.request_id for e in query_events(db, since=T0 + timedelta(minutes=10))] == ["r5", "r4", "r3"]
    assert [e.request_id for e in query_events(db, operation="CreateModelCustomizationJob")] == ["r3", "r2"]
    assert [e.request_id for e in query_events(db, principal_arn=BOB.arn)] == ["r3"]
    assert [e.request_id for e in query_events(db, result="AccessDeniedException")] == ["r3"]
    assert [e.request_id for e in query_events(db, failed=True)] == ["r5", "r3"]
    assert [e.request_id for e in query_events(db, service="iam")] == ["r4"]
    assert [e.request_id for e in query_events(db, limit=2)] == ["r5", "r4"]
    assert [e.request_id for e in query_events(db, account_id="111111111111", since=T0 + timedelta(minutes=1),
                                               operation="CreateModelCustomizationJob")] == ["r2"]
    unauthenticated = query_events(db, failed=True, limit=1)[0]
    assert (unauthenticated.account_id, unauthenticated.principal_arn) == ("", "")


def test_same_second_events_keep_insertion_order(db):
    for i in range(3):
        record_event(db, service="bedrock", operation=f"Op{i}", principal=ALICE, event_time=T0)
    assert [e.operation for e in query_events(db)] == ["Op2", "Op1", "Op0"]


def test_account_time_index_exists(db):
    indexes = {ix.name: [c.name for c in ix.columns] for ix in AuditEvent.__table__.indexes}
    assert indexes["ix_audit_events_account_time"] == ["account_id", "event_time"]


# -- the CLI ----------------------------------------------------------------------------------------


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir")
    audit_cli.register(sub, common)
    return parser.parse_args(["audit", *argv])


def _run(db: Database, *argv: str) -> str:
    out = io.StringIO()
    assert audit_cli.run(_args(*argv), db=db, out=out) == 0
    return out.getvalue()


def test_cli_table(db):
    _seed(db)
    lines = _run(db).splitlines()
    assert lines[0].split() == ["TIME", "PRINCIPAL", "OPERATION", "RESOURCE", "RESULT", "SOURCE", "IP"]
    assert len(lines) == 6
    assert lines[1].startswith("2025-03-01 12:20:00Z")
    assert "(unauthenticated AKIAUNKNOWN)" in lines[1] and "UnrecognizedClientException (403)" in lines[1]
    assert "iam:CreateUser" in lines[2] and "arn:aws:iam::111111111111:user/carol" in lines[2]
    assert lines[2].rstrip().endswith("-")  # no source ip
    assert "10.0.0.1" in lines[5] and "bedrock:ListFoundationModels" in lines[5] and "Success" in lines[5]


def test_cli_filters(db):
    _seed(db)
    failed = _run(db, "--failed").splitlines()
    assert len(failed) == 3 and all("Success" not in line for line in failed[1:])
    assert len(_run(db, "--account", "222222222222").splitlines()) == 2
    assert len(_run(db, "--principal", ALICE.arn, "--limit", "2").splitlines()) == 3
    assert len(_run(db, "--operation", "bedrock:CreateModelCustomizationJob").splitlines()) == 3
    assert len(_run(db, "--operation", "iam:CreateModelCustomizationJob").splitlines()) == 0
    assert len(_run(db, "--since", "2025-03-01T12:14:00Z").splitlines()) == 3


def test_cli_json_lines(db):
    _seed(db)
    lines = _run(db, "--json", "--operation", "CreateModelCustomizationJob").splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["request_id"] for r in records] == ["r3", "r2"]
    assert records[0]["event_time"] == "2025-03-01T12:10:00.000Z"
    assert records[0]["result"] == "AccessDeniedException" and records[0]["status"] == 403
    assert records[1]["resource"].endswith("model-customization-job/j1")


def test_cli_empty(db, capsys):
    assert _run(db, "--account", "999999999999") == ""
    assert "no matching audit events" in capsys.readouterr().err


def test_parse_since():
    now = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    assert audit_cli.parse_since("1h", now) == now - timedelta(hours=1)
    assert audit_cli.parse_since("7d", now) == now - timedelta(days=7)
    assert audit_cli.parse_since("30m", now) == now - timedelta(minutes=30)
    assert audit_cli.parse_since("2025-02-01") == datetime(2025, 2, 1, tzinfo=UTC)
    assert audit_cli.parse_since("2025-02-01T10:00:00+02:00") == datetime(2025, 2, 1, 8, tzinfo=UTC)
    with pytest.raises(argparse.ArgumentTypeError):
        audit_cli.parse_since("yesterday")
    with pytest.raises(SystemExit):
        _args("--since", "soon")
    with pytest.raises(SystemExit):
        _args("--limit", "0")


# -- the migration ----------------------------------------------------------------------------------


def test_migration_matches_the_models(tmp_path):
    """Upgrading to head yields exactly the tables the ORM declares (a stand-in 0003 while it is missing)."""
    scripts = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    if not any(p.name.startswith("0003") for p in (scripts / "versions").iterdir()):
        (scripts / "versions" / "0003_stand_in.py").write_text(
            'revision = "0003"\ndown_revision = "0002"\nbranch_labels = None\ndepends_on = None\n\n\n'
            "def upgrade():\n    pass\n\n\ndef downgrade():\n    pass\n")
    database = Database(f"sqlite:///{tmp_path}/m.db")
    config = Config()
    config.set_main_option("script_location", str(scripts))
    with database.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    mine = {AuditEvent.__tablename__, InvocationLoggingConfig.__tablename__}
    with database.engine.connect() as connection:
        diffs = compare_metadata(MigrationContext.configure(connection), Base.metadata)

    def table_of(diff) -> str | None:
        item = diff[0] if isinstance(diff, list) else diff
        kind = item[0]
        if kind in ("add_table", "remove_table"):
            return item[1].name
        if kind in ("add_index", "remove_index", "add_constraint", "remove_constraint", "add_fk", "remove_fk"):
            return item[1].table.name
        return item[2]  # add_column, remove_column, modify_*: (kind, schema, table, ...)

    assert [d for d in diffs if table_of(d) in mine] == []
    with database.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0002")
    with database.engine.connect() as connection:
        names = set(database.engine.dialect.get_table_names(connection))
    assert not names & mine
    database.dispose()


def test_cli_migrates_the_data_dir(tmp_path, monkeypatch, capsys):
    """Without a database handed in, `run` opens the configured one and migrates it first."""
    for name in ("OUTCROP_DATABASE_URL", "OUTCROP_CONFIG", "OUTCROP_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    data_dir = tmp_path / "data"
    assert audit_cli.run(_args("--data-dir", str(data_dir))) == 0
    database = Database(f"sqlite:///{data_dir / 'outcrop.db'}")
    record_event(database, service="bedrock", operation="ListFoundationModels", principal=ALICE, event_time=T0)
    database.dispose()
    capsys.readouterr()
    assert audit_cli.run(_args("--data-dir", str(data_dir), "--json")) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line)["operation"] == "ListFoundationModels"
