"""Provisioned throughputs created through two servers on one database (two ProvisioningService objects, each
with its own engine): the per-account model-unit quota and a `clientRequestToken` hold across them."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from outcrop.catalog.served import ServedModel
from outcrop.errors import ServiceQuotaExceededException, ValidationException
from outcrop.platform.config import Settings
from outcrop.platform.database import Database, utc_now
from outcrop.provisioning.service import ProvisioningService
from outcrop.provisioning.tables import ProvisionedThroughputRow
from tests.helpers import at_once

ACCOUNT = "111111111111"
MODEL = ServedModel("arn:aws:bedrock:us-east-1::foundation-model/tiny", SimpleNamespace(model_id="tiny"),
                    Path("/nowhere"))


def _service(db: Database) -> ProvisioningService:
    def lookup(account, model_id):
        time.sleep(0.05)  # a lookup of some length: two creates overlap
        return MODEL
    service = ProvisioningService(db, None, lookup, Settings(max_model_units_per_account=16), None)
    service._load_in_background = lambda *args: None  # no model to load: the rows are under test
    return service


@pytest.fixture
def servers(db):
    other = Database(db.url)
    yield _service(db), _service(other)
    other.dispose()


def _live(db, **where):
    with db.session() as session:
        query = select(func.count(), func.coalesce(func.sum(ProvisionedThroughputRow.model_units), 0)).where(
            ProvisionedThroughputRow.account_id == ACCOUNT, ProvisionedThroughputRow.deleted_at.is_(None))
        for column, value in where.items():
            query = query.where(getattr(ProvisionedThroughputRow, column) == value)
        return tuple(session.execute(query).one())


def _create(service, name, units=1, token=None):
    params = {"provisionedModelName": name, "modelId": "tiny", "modelUnits": units}
    if token:
        params["clientRequestToken"] = token
    return lambda: service.create(ACCOUNT, params)


def test_the_model_unit_quota_holds_across_servers(servers, db):
    # Six 6-unit creates at once, three through each server: 16 units allow two.
    results = at_once(*[_create(servers[i % 2], f"pt-{i}", 6) for i in range(6)])
    assert sum(isinstance(r, dict) for r in results) == 2, results
    assert all(isinstance(r, ServiceQuotaExceededException) and "holds 12" in str(r)
               for r in results if not isinstance(r, dict))
    assert _live(db) == (2, 12)


def test_one_token_at_once_through_two_servers_creates_one_throughput(servers, db):
    for round_ in range(3):
        first, second = at_once(*[_create(server, f"same-{round_}", token=f"token-{round_}") for server in servers])
        assert isinstance(first, dict) and first == second
        assert _live(db, name=f"same-{round_}") == (1, 1)


def test_one_name_at_once_through_two_servers_is_taken_once(servers, db):
    results = at_once(*[_create(server, "one-name", token=f"token-{i}") for i, server in enumerate(servers)])
    assert sorted(type(r).__name__ for r in results) == ["ValidationException", "dict"], results
    assert "named one-name already exists" in str(next(r for r in results if isinstance(r, ValidationException)))
    assert _live(db, name="one-name") == (1, 1)
    # A rename onto a live name is refused too; the name of a deleted throughput is free again.
    other = servers[1].create(ACCOUNT, {"provisionedModelName": "other", "modelId": "tiny", "modelUnits": 1,
                                        "commitmentDuration": "OneMonth"})
    assert servers[0]._row(ACCOUNT, "other").commitment_expiration > utc_now() + timedelta(days=29)
    with pytest.raises(ValidationException, match="already exists"):
        servers[0].update(ACCOUNT, other["provisionedModelArn"], {"desiredProvisionedModelName": "one-name"})
    servers[0].delete(ACCOUNT, "one-name")
    servers[1].update(ACCOUNT, other["provisionedModelArn"], {"desiredProvisionedModelName": "one-name"})
    assert _live(db, name="one-name") == (1, 1)


def test_live_names_shared_before_migration_0021_are_told_apart(tmp_path):
    """Throughputs the race left with one name keep their rows; all but the oldest get their id appended."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from outcrop.platform.database import MIGRATIONS_DIR
    from tests import conftest

    postgres = conftest._postgres
    database = Database(postgres.database_for(tmp_path) if postgres else f"sqlite:///{tmp_path / 'old.db'}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with database.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0020")
        # The last one is already called what the rename would pick for the second: the rename picks another.
        for arn, name, minute, deleted in (("pt/first", "twin", 1, None), ("pt/second", "twin", 2, None),
                                           ("pt/gone", "twin", 0, "2025-01-02"), ("pt/taken", "twin-second", 3, None)):
            connection.execute(text(
                "INSERT INTO provisioned_throughputs (arn, account_id, name, model_arn, desired_model_arn, "
                "foundation_model_id, model_units, status, created_at, updated_at, deleted_at) VALUES (:arn, :a, "
                ":n, 'm', 'm', 'tiny', 1, 'InService', :t, :t, :d)"),
                {"arn": arn, "a": ACCOUNT, "n": name, "t": f"2025-01-01 00:0{minute}:00", "d": deleted})
    database.migrate()
    with database.engine.connect() as connection:
        names = connection.execute(text("SELECT arn, name FROM provisioned_throughputs ORDER BY arn")).all()
    database.dispose()
    assert [tuple(r) for r in names] == [("pt/first", "twin"), ("pt/gone", "twin"), ("pt/second", "twin-second-2"),
                                         ("pt/taken", "twin-second")]
