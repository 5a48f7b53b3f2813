"""Fixtures the unit tests share: a migrated database (SQLite, or PostgreSQL with
OUTCROP_TEST_DATABASE=postgresql: tests/backends.py), and IAM on it."""

from __future__ import annotations

import pytest

from outcrop.iam.service import IamService
from outcrop.platform.database import Database


@pytest.fixture
def db(tmp_path):
    from tests import conftest

    postgres = conftest._postgres
    database = Database(postgres.database_for(tmp_path) if postgres else f"sqlite:///{tmp_path / 'outcrop.db'}")
    database.migrate()
    yield database
    database.dispose()


@pytest.fixture
def iam(db, tmp_path):
    return IamService(db, tmp_path)
