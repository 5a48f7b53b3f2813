"""The migrations build exactly the tables and columns the code declares (indexes live in migrations only)."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import outcrop
from outcrop.platform.database import Base, Database


def _table_modules() -> list[str]:
    """Every module that declares a table on `Base`, found by reading the source (no import of the rest)."""
    names = []
    for module in pkgutil.walk_packages(outcrop.__path__, "outcrop."):
        spec = importlib.util.find_spec(module.name)
        if spec and spec.origin and spec.origin.endswith(".py") and "(Base):" in Path(spec.origin).read_text():
            names.append(module.name)
    return names


def test_migrations_match_the_declared_tables(tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    modules = _table_modules()
    assert "outcrop.evaluation.tables" in modules and "outcrop.insights.tables" in modules
    for name in modules:
        importlib.import_module(name)
    db = Database(f"sqlite:///{tmp_path / 'outcrop.db'}")
    db.migrate()
    with db.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    # Indexes are declared in the migrations (where the queries that need them are explained), not on models.
    assert [d for d in differences if not (isinstance(d, tuple) and d[0] == "remove_index")] == []
