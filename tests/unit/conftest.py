"""Fixtures the unit tests share: a migrated SQLite database, and IAM on it."""

from __future__ import annotations

import pytest

from outcrop.iam.service import IamService
from outcrop.platform.database import Database


@pytest.fixture
def db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'outcrop.db'}")
    database.migrate()
    yield database
    database.dispose()


@pytest.fixture
def iam(db, tmp_path):
    return IamService(db, tmp_path)
