"""The composition root: one object holding every service a request or command can reach."""

from __future__ import annotations

from dataclasses import dataclass

from outcrop.catalog.prices import PriceTable
from outcrop.catalog.service import Catalog
from outcrop.customization.service import CustomizationService
from outcrop.evaluation.human import HumanReview
from outcrop.evaluation.service import EvaluationService
from outcrop.iam import buckets
from outcrop.iam.credentials import write_credentials
from outcrop.iam.secrets import KEY_FILE_NAME
from outcrop.iam.service import IamService
from outcrop.inference.engine import Engine
from outcrop.insights.service import InsightsService
from outcrop.platform.config import Settings
from outcrop.platform.database import Database
from outcrop.platform.jobs import JobRunner
from outcrop.platform.objectstore import ObjectStore, open_object_store
from outcrop.platform.pagination import use_secret
from outcrop.platform.private import private_dir, private_files
from outcrop.provisioning.service import ProvisioningService
from outcrop.runtime.invocation_logging import InvocationLogWriter
from outcrop.runtime.quotas import Quotas
from outcrop.runtime.service import RuntimeService


@dataclass
class Services:
    settings: Settings
    db: Database
    store: ObjectStore
    catalog: Catalog
    engine: Engine
    iam: IamService
    invocation_log: InvocationLogWriter
    jobs: JobRunner
    customization: CustomizationService
    provisioning: ProvisioningService
    runtime: RuntimeService
    #: Human evaluation: work teams, the raters' items and ratings (the rating pages' service).
    human: HumanReview
    evaluation: EvaluationService
    insights: InsightsService
    #: The schema revision the database was migrated to at start.
    schema_revision: str = ""

    @classmethod
    def start(cls, settings: Settings) -> Services:
        """Create the data dir, migrate the database, open the object store, write root credentials."""
        private_files()  # the process umask: 0600 files, 0700 folders (see outcrop.platform.private)
        private_dir(settings.data_dir)  # made 0700, or tightened when an earlier version made it 0755
        db = Database(settings.resolved_database_url)
        revision = db.migrate()
        iam = IamService(db, settings.data_dir)  # makes <data dir>/secret.key on a first start
        use_secret(db, (settings.data_dir / KEY_FILE_NAME).read_bytes())  # signs List nextTokens
        root_key = iam.bootstrap(settings.root_access_key_id, settings.root_secret_access_key)
        write_credentials(settings.credentials_file, settings.region, root_key.access_key_id, root_key.secret)
        catalog = Catalog(db, settings.region)
        engine = Engine(settings.models_dir, settings.model_memory_bytes, settings.max_batch_sequences)
        store = open_object_store(settings)
        buckets.adopt_after_upgrade(db, store, iam.default_account)  # buckets from before owners were recorded
        invocation_log = InvocationLogWriter(db, store, settings.region)
        quotas = Quotas(settings.quota_requests_per_minute, settings.quota_tokens_per_minute)
        jobs = JobRunner(db, settings, settings.max_running_jobs)
        jobs.start()  # recovers jobs a previous server left running
        customization = CustomizationService(db, catalog, iam, jobs, engine, settings.region)
        provisioning = ProvisioningService(db, engine, customization.served_model, settings,
                                           PriceTable.load(settings.price_table or None))
        customization.deletion_checks.append(provisioning.in_use)
        provisioning.resume()  # finish loading what a previous server was creating or updating
        human = HumanReview(db, iam, settings.region)
        evaluation = EvaluationService(db, catalog, iam, jobs, store, provisioning, human, settings.region)
        human.completion_hooks.append(evaluation.finish_human)
        human.finish_rated_jobs()  # a job whose last rating came just before a restart is finished now
        return cls(settings=settings, db=db, store=store, catalog=catalog, engine=engine, iam=iam, human=human,
                   invocation_log=invocation_log, jobs=jobs, customization=customization,
                   provisioning=provisioning, evaluation=evaluation,
                   insights=InsightsService(db, provisioning.prices, settings),
                   runtime=RuntimeService(catalog, engine, db, quotas, invocation_log, settings.region, provisioning),
                   schema_revision=revision)

    def close(self) -> None:
        self.jobs.close()
        self.invocation_log.close()
        self.engine.close()
        self.db.dispose()

