"""The composition root: one object holding every service a request or command can reach."""

from __future__ import annotations

from dataclasses import dataclass

from outcrop.catalog.service import Catalog
from outcrop.iam.credentials import ensure_root_credentials
from outcrop.platform.config import Settings
from outcrop.platform.database import Database
from outcrop.platform.objectstore import ObjectStore, open_object_store


@dataclass
class Services:
    settings: Settings
    db: Database
    store: ObjectStore
    catalog: Catalog
    #: The schema revision the database was migrated to at start.
    schema_revision: str = ""

    @classmethod
    def start(cls, settings: Settings) -> Services:
        """Create the data dir, migrate the database, open the object store, write root credentials."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.resolved_database_url)
        revision = db.migrate()
        ensure_root_credentials(settings.credentials_file, settings.region,
                                settings.root_access_key_id, settings.root_secret_access_key)
        return cls(settings=settings, db=db, store=open_object_store(settings),
                   catalog=Catalog(db, settings.region), schema_revision=revision)

    def close(self) -> None:
        self.db.dispose()
