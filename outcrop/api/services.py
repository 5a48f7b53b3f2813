"""The composition root: one object holding every service a request or command can reach."""

from __future__ import annotations

from dataclasses import dataclass

from outcrop.catalog.service import Catalog
from outcrop.iam.credentials import ensure_root_credentials
from outcrop.inference.engine import Engine
from outcrop.platform.config import Settings
from outcrop.platform.database import Database
from outcrop.platform.objectstore import ObjectStore, open_object_store
from outcrop.runtime.service import RuntimeService


@dataclass
class Services:
    settings: Settings
    db: Database
    store: ObjectStore
    catalog: Catalog
    engine: Engine
    runtime: RuntimeService
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
        catalog = Catalog(db, settings.region)
        engine = Engine(settings.models_dir, settings.model_memory_bytes, settings.max_batch_sequences)
        return cls(settings=settings, db=db, store=open_object_store(settings), catalog=catalog, engine=engine,
                   runtime=RuntimeService(catalog, engine, db), schema_revision=revision)

    def close(self) -> None:
        self.engine.close()
        self.db.dispose()
