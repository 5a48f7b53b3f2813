"""The composition root: the one module that builds the service graph, for the server and for a job process.

Every service gets its dependencies through its constructor, built here in dependency order. The server's
graph is `Services.start`; a job process (fine-tuning, evaluation) builds the part it needs with
`JobServices`, from the same pieces, so a model answers a job exactly as it answers a client. API doors,
the CLI and job entry points (`<capability>/job.py`) import this module; no service does.
"""

from __future__ import annotations

import atexit
import logging
from dataclasses import dataclass

import torch

from outcrop.agents.memory import SessionMemory
from outcrop.agents.orchestration import AgentRuntime
from outcrop.agents.service import Agents
from outcrop.batch.service import BatchInference
from outcrop.catalog.prices import PriceTable
from outcrop.catalog.served import engine_kind
from outcrop.catalog.service import Catalog
from outcrop.customization.models import CustomModels
from outcrop.customization.service import CustomizationService
from outcrop.evaluation.human.service import HumanReview
from outcrop.evaluation.service import EvaluationService
from outcrop.functions.service import Functions
from outcrop.guardrails.service import Guardrails
from outcrop.iam import buckets
from outcrop.iam.credentials import write_credentials
from outcrop.iam.principal import Principal
from outcrop.iam.scoped_store import ScopedStore
from outcrop.iam.secrets import KEY_FILE_NAME
from outcrop.iam.service import IamService
from outcrop.inference.engine import BoundedEngine, Engine, Preload
from outcrop.insights.service import InsightsService
from outcrop.knowledge.retrieval import Retrieval
from outcrop.knowledge.service import KnowledgeBases
from outcrop.model_import.models import ImportedModels
from outcrop.model_import.service import ModelImports
from outcrop.platform.config import VECTOR_BUCKET, Settings
from outcrop.platform.database import Database
from outcrop.platform.jobs import JobRunner
from outcrop.platform.objectstore import ObjectStore, S3Uri, open_object_store
from outcrop.platform.pagination import use_secret
from outcrop.platform.presence import Presence
from outcrop.platform.private import private_dir, private_files
from outcrop.profiles.aliases import model_aliases
from outcrop.profiles.service import InferenceProfiles
from outcrop.provisioning.service import ProvisioningService
from outcrop.runtime.invocation_logging import InvocationLogWriter
from outcrop.runtime.quotas import Quotas
from outcrop.runtime.service import RuntimeService

log = logging.getLogger(__name__)


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
    #: Inference profiles (system and application) and how every model name resolves, aliases included.
    profiles: InferenceProfiles
    #: Knowledge bases: the control plane (bedrock-agent) and retrieval (bedrock-agent-runtime).
    knowledge: KnowledgeBases
    retrieval: Retrieval
    #: Functions (where Bedrock has Lambda), agents (bedrock-agent) and InvokeAgent.
    functions: Functions
    agents: Agents
    agent_runtime: AgentRuntime
    #: Guardrails: the control plane (bedrock) and the policies ApplyGuardrail enforces.
    guardrails: Guardrails
    #: Batch inference: model invocation jobs (their records are answered in a job process).
    batch: BatchInference
    #: Custom model import: import jobs and the imported models, served on demand by their ARNs.
    model_import: ModelImports
    #: The schema revision the database was migrated to at start.
    schema_revision: str = ""
    #: The models loaded in the background when the server starts (the app's lifespan starts it).
    preload: Preload | None = None
    #: This server's row among the servers on the database (platform/presence.py).
    presence: Presence | None = None

    @classmethod
    def start(cls, settings: Settings) -> Services:
        """Create the data dir, migrate the database, open the object store, write root credentials."""
        private_files()  # the process umask: 0600 files, 0700 folders (see outcrop.platform.private)
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        private_dir(settings.data_dir)  # made 0700, or tightened when an earlier version made it 0755
        db = Database(settings.resolved_database_url)
        revision = db.migrate()
        iam = IamService(db, settings.data_dir)  # makes <data dir>/secret.key on a first start
        use_secret(db, (settings.data_dir / KEY_FILE_NAME).read_bytes())  # signs List nextTokens
        root_key = iam.bootstrap(settings.root_access_key_id, settings.root_secret_access_key)
        write_credentials(settings.credentials_file, settings.region, root_key.access_key_id, root_key.secret)
        catalog = Catalog(db, settings.region, model_aliases(settings.model_aliases))
        profiles = InferenceProfiles(db, catalog, settings.region)
        engine = Engine(settings.models_dir, settings.model_memory_bytes, settings.max_batch_sequences,
                        max_queue_wait_s=settings.max_queue_wait_seconds or None, generator=settings.engine,
                        mu_concurrent_sequences=settings.mu_concurrent_sequences,
                        vllm_gpu_fraction=settings.vllm_gpu_memory_fraction, max_image_batch=settings.max_image_batch)
        store = open_object_store(settings)
        buckets.adopt_after_upgrade(db, store, iam.default_account)  # buckets from before owners were recorded
        _vectors_bucket(db, store, settings)
        invocation_log = InvocationLogWriter(db, store, settings.region)
        presence = Presence(db)  # this server, as the others on the database see it (jobs, shared capacity)
        presence.start()
        jobs = JobRunner(db, settings, settings.max_running_jobs, presence)
        jobs.start()  # recovers jobs a previous server left running
        models = CustomModels(db, catalog, settings.region)
        provisioning = _provisioning(db, settings, engine, models, presence)
        customization = CustomizationService(db, catalog, iam, jobs, models, provisioning.in_use, settings.region)
        provisioning.resume()  # finish loading what a previous server was creating or updating
        knowledge = KnowledgeBases(db, iam, profiles, jobs, settings)
        # The guardrails need the runtime, made below; a RAG job's guardrail is looked up only when a job is
        # created, by then `guardrails` exists.
        evaluation = EvaluationService(db, catalog, iam, jobs, store, provisioning, profiles, settings.region,
                                       knowledge_base=knowledge.row,
                                       guardrail=lambda *args: guardrails.document(*args))
        evaluation.human.finish_rated_jobs()  # a job whose last rating came just before a restart is finished now
        imported = ImportedModels(db, settings.region)  # imported models, which the runtime serves by ARN
        # Requests wait a bounded time for a model that is loading (then ModelNotReadyException, retried by
        # the SDKs); provisioning loads in the background and waits for it, so it gets the engine itself.
        runtime = RuntimeService(catalog, BoundedEngine(engine, settings.model_load_wait_seconds), db,
                                 Quotas(db, settings.quota_requests_per_minute, settings.quota_tokens_per_minute),
                                 invocation_log, settings.region, provisioning, profiles,
                                 imported=imported.served_model, objects=_caller_objects(iam, store))
        guardrails = Guardrails(db, settings.region, runtime, settings.guardrail_embedding_model)
        retrieval = Retrieval(knowledge, runtime, guardrails)
        functions = Functions(db, settings.region)
        agents = Agents(db, profiles, knowledge, functions, iam, store, settings.region)
        return cls(settings=settings, db=db, store=store, catalog=catalog, engine=engine, iam=iam,
                   human=evaluation.human, invocation_log=invocation_log, jobs=jobs, customization=customization,
                   provisioning=provisioning, evaluation=evaluation,
                   insights=InsightsService(db, provisioning.prices, settings), runtime=runtime, profiles=profiles,
                   knowledge=knowledge, retrieval=retrieval, functions=functions, agents=agents,
                   guardrails=guardrails,
                   batch=BatchInference(db, iam, jobs, profiles, settings.region),
                   model_import=ModelImports(db, iam, jobs, store, imported, settings.region, engine.unload),
                   agent_runtime=AgentRuntime(agents, retrieval, runtime, functions, SessionMemory(db, runtime), db,
                                                               settings.agent_max_steps, settings.agent_step_tokens,
                                                               guardrails),
                   schema_revision=revision, preload=_preload(engine, catalog, settings.preload_model_ids),
                   presence=presence)

    def close(self) -> None:
        try:
            self.jobs.close()  # its children stopped first: once this server is gone, another may requeue them
            if self.presence is not None:
                self.presence.close()
        finally:
            self.invocation_log.close()
            self.engine.close()
            self.db.dispose()


def _vectors_bucket(db: Database, store: ObjectStore, settings: Settings) -> None:
    """On an S3 endpoint, knowledge bases keep their LanceDB tables in Outcrop's own bucket (no account may
    claim the default one: iam/buckets.py); it is made here, so that the first ingestion finds it. A bucket
    an account already owns would hand it every account's vectors: the server refuses to start on it."""
    if not settings.vectors_uri.startswith("s3://"):
        return
    bucket = S3Uri.parse(settings.vectors_uri).bucket
    holder = buckets.owner(db, bucket)
    if holder is not None:
        raise RuntimeError(f"The bucket {bucket} belongs to account {holder}: knowledge bases cannot keep their "
                           "vectors there. Set knowledge_store_uri to a bucket no account uses.")
    if bucket != VECTOR_BUCKET:
        return
    try:
        if not store.bucket_exists(VECTOR_BUCKET):
            store.create_bucket(VECTOR_BUCKET)
    except Exception as exc:  # an S3 endpoint that is down must not keep the server from starting
        log.warning("could not make the bucket %s for knowledge bases (%s); ingestion will fail until it exists",
                    VECTOR_BUCKET, exc)


class _CallerObjects(ScopedStore):
    """What the runtime reads a request's images in S3 through (runtime/multimodal.CallerObjects): the store as
    the caller sees it, every read authorized for them, and the buckets' owners, for S3Location's bucketOwner."""

    def owner(self, bucket: str) -> str | None:
        return buckets.owner(self.iam.db, bucket)


def _caller_objects(iam: IamService, store: ObjectStore):
    """The runtime's `objects`: a caller's view of the store, made per request from its principal and the
    request's condition keys."""
    def objects(principal: Principal, conditions: dict) -> _CallerObjects:
        return _CallerObjects(store, iam, principal, conditions)
    return objects


def _provisioning(db: Database, settings: Settings, engine: Engine, models: CustomModels,
                  presence: Presence | None = None) -> ProvisioningService:
    """Provisioned throughput, serving foundation and custom models (looked up through CustomModels)."""
    return ProvisioningService(db, engine, models.served_model, settings, PriceTable.load(settings.price_table or None),
                               presence)


def _preload(engine: Engine, catalog: Catalog, model_ids: tuple[str, ...]) -> Preload:
    """The models to load as the server starts, each resolved (weights fetched if need be) in the preload
    thread exactly as a request resolves it, so that a request finds the very load the preload started."""
    def target(model_id: str):
        def resolve():
            model = catalog.get(model_id)
            return catalog.local_weights(model), engine_kind(model)
        return resolve
    return Preload(engine, {model_id: target(model_id) for model_id in model_ids})


@dataclass
class JobServices:
    """What a job process works with: the database, IAM (its role), the catalog and the object store, and a
    runtime of its own when it asks models (an evaluation) - built like the server's."""

    settings: Settings
    db: Database
    iam: IamService
    catalog: Catalog
    store: ObjectStore
    #: How model names resolve (aliases, profiles), for the runtime and for what the job's role must allow.
    profiles: InferenceProfiles

    @classmethod
    def open(cls, db: Database, settings: Settings) -> JobServices:
        catalog = Catalog(db, settings.region, model_aliases(settings.model_aliases))
        return cls(settings, db, IamService(db, settings.data_dir), catalog, open_object_store(settings),
                   InferenceProfiles(db, catalog, settings.region))

    def runtime(self) -> RuntimeService:
        """The server's runtime, minus what only a server needs: no quotas (a job is billed, not throttled).
        Provisioned capacity is shared with the servers: the job process takes its slots as one more process on
        the database (a presence of its own, which stops counting when the process ends)."""
        settings = self.settings
        engine = Engine(settings.models_dir, settings.model_memory_bytes, settings.max_batch_sequences)
        logs = InvocationLogWriter(self.db, self.store, settings.region)
        presence = Presence(self.db)
        presence.start()
        atexit.register(presence.close)  # its leases stop counting as the job ends
        return RuntimeService(self.catalog, engine, self.db, Quotas(None, 0, 0), logs, settings.region,
                              _provisioning(self.db, settings, engine, CustomModels(self.db, self.catalog,
                                                                                    settings.region), presence),
                              self.profiles, imported=ImportedModels(self.db, settings.region).served_model,
                              objects=_caller_objects(self.iam, self.store))

    def retrieval(self, runtime: RuntimeService) -> Retrieval:
        """Knowledge-base retrieval on the job's runtime (a RAG evaluation): the same search, generation and
        guardrails as the server's Retrieve and RetrieveAndGenerate. A job process searches and never syncs, so
        its KnowledgeBases has no job runner."""
        settings = self.settings
        knowledge = KnowledgeBases(self.db, self.iam, self.profiles, None, settings)
        return Retrieval(knowledge, runtime, Guardrails(self.db, settings.region, runtime,
                                                        settings.guardrail_embedding_model))
