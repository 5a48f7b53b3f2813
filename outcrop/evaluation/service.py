"""Model and RAG evaluation jobs as the bedrock API shows them: create, get, list, stop, delete.

The work happens in `outcrop.evaluation.job` (and `outcrop.evaluation.rag` for applicationType
RagEvaluation), run by the job runner in its own process. A human job's runner part ends once every model
has answered every prompt; the job stays InProgress until the raters are done (`outcrop.evaluation.human`),
and then `finish_human` writes its results here, in the server. A model given as a
precomputedInferenceSource, or a RAG job's precomputedRagSourceConfig, is not invoked: its answers are in
the dataset.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from outcrop.catalog.service import Catalog
from outcrop.errors import ConflictException, ResourceNotFoundException, ValidationException
from outcrop.evaluation import datasets, inference, outputs, scoring
from outcrop.evaluation.human.methods import check_custom_metrics
from outcrop.evaluation.human.service import HumanReview
from outcrop.evaluation.tables import EvaluationJobRow, HumanRatingRow, HumanTaskRow, JobStatus
from outcrop.guardrails.service import guardrail_arn, parse_identifier
from outcrop.iam.principal import Principal
from outcrop.iam.scoped_store import ScopedStore, object_arn
from outcrop.iam.service import IamService, role_arn_account
from outcrop.knowledge.retrieval import SEARCH_RESULTS, search_plan
from outcrop.knowledge.service import knowledge_base_arn
from outcrop.platform import jsontext
from outcrop.platform.database import Database, utc_now
from outcrop.platform.idempotency import run_once
from outcrop.platform.ids import new_id
from outcrop.platform.jobs import TERMINAL, JobRunner
from outcrop.platform.objectstore import TEMP_PREFIX, ObjectStore, S3Uri
from outcrop.platform.pagination import page
from outcrop.platform.tables import JobState
from outcrop.profiles.service import InferenceProfiles
from outcrop.provisioning.service import ProvisioningService

FINISHED = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.STOPPED)
AUTOMATED, HUMAN = "Automated", "Human"
ENTRY_POINT = "outcrop.evaluation.job:run"
FAILURE_HOOK = "outcrop.evaluation.job:on_failure"


def job_type(request: dict[str, Any]) -> str:
    return HUMAN if "human" in request["evaluationConfig"] else AUTOMATED


def dataset_configs(request: dict[str, Any]) -> list[dict[str, Any]]:
    config = request["evaluationConfig"]
    return (config.get("automated") or config.get("human"))["datasetMetricConfigs"]


def is_rag(request: dict[str, Any]) -> bool:
    return outputs.application_type(request) == outputs.RAG_EVALUATION


def rag_generation(request: dict[str, Any]) -> dict[str, Any] | None:
    """A RAG job's knowledgeBaseConfiguration when Outcrop retrieves and generates for it (the knowledge base,
    its generation model and settings); None for retrieve-only and precomputed sources."""
    if not is_rag(request):
        return None
    knowledge_base = request["inferenceConfig"]["ragConfigs"][0].get("knowledgeBaseConfig") or {}
    return (knowledge_base.get("retrieveAndGenerateConfig") or {}).get("knowledgeBaseConfiguration")


def invoked_models(request: dict[str, Any]) -> list[str]:
    """Every model the job asks: the evaluated ones (a precomputed source is not asked), a RAG job's generation
    model, and its judges."""
    generation = rag_generation(request)
    models = [*outputs.bedrock_models(request), *([generation["modelArn"]] if generation else [])]
    return list(dict.fromkeys([*models, *outputs.evaluator_models(request)]))


def required_permissions(request: dict[str, Any], job_id: str, model_arns: Callable[[str], list[str]],
                         region: str | None = None) -> list[tuple[str, str]]:
    """What the job's role must allow: read every custom dataset, invoke every model it asks (as on
    Bedrock, the models are invoked as the role; `model_arns` gives every ARN a model's name reaches, an
    alias's or a profile's model included: `InferenceProfiles.invocation_arns`), write the job's outputs.
    A RAG job on a knowledge base also needs what Bedrock's knowledge-base evaluation role needs (bedrock:Retrieve,
    and for retrieve-and-generate bedrock:RetrieveAndGenerate, on the knowledge base; bedrock:ApplyGuardrail on
    its guardrail): `region` names the knowledge base's ARN."""
    reads = [c["dataset"]["datasetLocation"]["s3Uri"] for c in dataset_configs(request)
             if not c["dataset"]["name"].startswith("Builtin.")]
    report = outputs.job_prefix(request, job_id).join(outputs.REPORT_JSON)
    return [*(("s3:GetObject", object_arn(S3Uri.parse(uri))) for uri in reads),
            *_knowledge_base_permissions(request, region),
            *(("bedrock:InvokeModel", arn) for m in invoked_models(request) for arn in model_arns(m)),
            ("s3:PutObject", object_arn(report))]


def _knowledge_base_permissions(request: dict[str, Any], region: str | None) -> list[tuple[str, str]]:
    if not is_rag(request):
        return []
    kind, kb_id, precomputed = outputs.rag_source(request)
    if precomputed:
        return []
    if region is None:  # a caller's slip, not the user's: without it the role would go unchecked
        raise ValueError("a RAG job's permissions need the region of its knowledge base")
    account = role_arn_account(request["roleArn"]) or ""
    arn = knowledge_base_arn(region, account, kb_id)
    if kind == "retrieve":
        return [("bedrock:Retrieve", arn)]
    needs = [("bedrock:Retrieve", arn), ("bedrock:RetrieveAndGenerate", arn)]
    guardrail = ((rag_generation(request) or {}).get("generationConfiguration") or {}).get("guardrailConfiguration")
    if guardrail:
        needs.append(("bedrock:ApplyGuardrail", guardrail_arn(region, account, parse_identifier(
            account, guardrail["guardrailId"], region))))
    return needs


class EvaluationService:
    def __init__(self, db: Database, catalog: Catalog, iam: IamService, runner: JobRunner, store: ObjectStore,
                 provisioning: ProvisioningService, profiles: InferenceProfiles, region: str, *,
                 knowledge_base: Callable[[str, str], Any],
                 guardrail: Callable[[str, str, str | None], Any]) -> None:
        self.db = db
        #: (account, knowledge base id) -> its row, ResourceNotFoundException when the account has none
        #: (`KnowledgeBases.row`): a RAG job's knowledge base must exist when the job is created.
        self.knowledge_base = knowledge_base
        #: (account, guardrail id or ARN, version) -> its document, ResourceNotFoundException when there is none
        #: (`Guardrails.document`): a RAG job's guardrail must exist when the job is created.
        self.guardrail = guardrail
        self.profiles = profiles
        self.catalog = catalog
        self.iam = iam
        self.runner = runner
        self.store = store
        self.provisioning = provisioning
        self.region = region
        #: Work teams and ratings; the last rating of a human job completes it here (finish_human).
        self.human = HumanReview(db, iam, region, on_complete=self.finish_human)

    # -- create -----------------------------------------------------------------------------------

    def create_job(self, principal: Principal, params: dict[str, Any]) -> dict[str, Any]:
        return run_once(self.db, account_id=principal.account_id, operation="CreateEvaluationJob",
                        token=params.get("clientRequestToken"), params=params, token_member="clientRequestToken",
                        create=lambda: self._create_job(principal.account_id, params))

    def _create_job(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        # A JSON null is an absent member (as the validator counts them), so `"x" in ...` below means "given".
        request = _without_nulls({k: v for k, v in params.items() if k != "clientRequestToken"})
        config = request["evaluationConfig"]
        if ("automated" in config) == ("human" in config):
            raise ValidationException("evaluationConfig needs exactly one of automated or human")
        if is_rag(request):
            self._check_rag(account, request)
        else:
            if request["inferenceConfig"].get("ragConfigs"):
                raise ValidationException("inferenceConfig.ragConfigs is for applicationType RagEvaluation; a "
                                          "ModelEvaluation job names its models in inferenceConfig.models")
            models = self._models(account, request["inferenceConfig"])
            if "human" in config:
                self._check_human(account, config["human"], len(models))
            else:
                self._check_automated(config["automated"])
            self._check_precomputed(request)
        S3Uri.parse(request["outputDataConfig"]["s3Uri"])
        job_id = new_id()
        job_arn = f"arn:aws:bedrock:{self.region}:{account}:evaluation-job/{job_id}"
        request["jobId"] = job_id
        # The role is checked now, so that a missing permission is the caller's error, not a failed job later.
        self.iam.check_role(request["roleArn"], account, required_permissions(
            request, job_id, functools.partial(self.profiles.invocation_arns, account), self.region))
        clash = ConflictException(f"An evaluation job named {request['jobName']} already exists")
        try:
            with self.db.session() as session:
                if session.scalar(select(func.count()).select_from(EvaluationJobRow).where(
                        EvaluationJobRow.account_id == account, EvaluationJobRow.job_name == request["jobName"])):
                    raise clash
                session.add(EvaluationJobRow(job_arn=job_arn, account_id=account, job_name=request["jobName"],
                                             job_type=job_type(request), status=JobStatus.IN_PROGRESS, request=request,
                                             created_at=utc_now(), updated_at=utc_now()))
        except IntegrityError:  # the same name created at the same moment by another request
            raise clash from None
        runner_id = self.runner.submit(account, ENTRY_POINT, {"jobArn": job_arn}, failure_hook=FAILURE_HOOK)
        with self.db.session() as session:
            session.get(EvaluationJobRow, job_arn).runner_job_id = runner_id
        return {"jobArn": job_arn}

    def _models(self, account: str, config: dict[str, Any]) -> list[str]:
        models = config.get("models") or []
        if not models:
            raise ValidationException("inferenceConfig.models needs one or two models")
        identifiers = []
        for i, model in enumerate(models):
            where = f"inferenceConfig.models[{i}]"
            _one_of(model, ("bedrockModel", "precomputedInferenceSource"), where)
            if "precomputedInferenceSource" in model:  # answers brought in the dataset: nothing to check or invoke
                identifiers.append(model["precomputedInferenceSource"]["inferenceSourceIdentifier"])
                continue
            bedrock_model = model["bedrockModel"]
            identifier = bedrock_model["modelIdentifier"]
            self._check_model(account, identifier, f"{where}.bedrockModel.modelIdentifier")
            inference.parse_inference_params(bedrock_model.get("inferenceParams"),
                                             f"{where}.bedrockModel.inferenceParams")
            identifiers.append(identifier)
        if len(set(identifiers)) != len(identifiers):
            raise ValidationException("inferenceConfig.models names the same model twice")
        return identifiers

    @staticmethod
    def _check_precomputed(request: dict[str, Any]) -> None:
        """A precomputed source's answers are the dataset's `modelResponses`: a built-in dataset has none, and a
        metric that asks the model again (perturbed prompts, its own token probabilities) has no model to ask."""
        sources = [i for i, m in enumerate(request["inferenceConfig"]["models"]) if "precomputedInferenceSource" in m]
        if not sources:
            return
        source = f"inferenceConfig.models[{sources[0]}].precomputedInferenceSource"
        for i, item in enumerate(dataset_configs(request)):
            name = item["dataset"]["name"]
            if name.startswith("Builtin."):
                raise ValidationException(f"datasetMetricConfigs[{i}].dataset: the built-in dataset {name} holds no "
                                          f"modelResponses; {source} needs a custom dataset whose lines carry them")
            for metric in item["metricNames"]:
                if metric in (scoring.ROBUSTNESS, scoring.PERPLEXITY):
                    raise ValidationException(f"datasetMetricConfigs[{i}].metricNames: {metric} asks the model "
                                              f"itself, and {source} has no model to ask")

    # -- RAG evaluation jobs ----------------------------------------------------------------------

    def _check_rag(self, account: str, request: dict[str, Any]) -> None:
        """A RagEvaluation job: one knowledge base (retrieve-only or retrieve-and-generate) or one precomputed
        RAG source, custom datasets, and the built-in RAG metrics of that kind of job, judged by the evaluator."""
        from outcrop.evaluation import judge

        config, inference = request["evaluationConfig"], request["inferenceConfig"]
        if "automated" not in config:
            raise ValidationException("evaluationConfig.human is not available for applicationType RagEvaluation: "
                                      "RAG evaluation jobs are automated, scored by evaluationConfig.automated."
                                      "evaluatorModelConfig")
        if inference.get("models"):
            raise ValidationException("inferenceConfig.models is for ModelEvaluation jobs; a RagEvaluation job names "
                                      "its knowledge base or RAG source in inferenceConfig.ragConfigs")
        rags = inference.get("ragConfigs") or []
        if len(rags) != 1:
            raise ValidationException("inferenceConfig.ragConfigs needs exactly one RAG configuration for "
                                      "applicationType RagEvaluation")
        where = "inferenceConfig.ragConfigs[0]"
        _one_of(rags[0], ("knowledgeBaseConfig", "precomputedRagSourceConfig"), where)
        if "knowledgeBaseConfig" in rags[0]:
            knowledge_base = rags[0]["knowledgeBaseConfig"]
            where += ".knowledgeBaseConfig"
            _one_of(knowledge_base, ("retrieveConfig", "retrieveAndGenerateConfig"), where)
            if "retrieveConfig" in knowledge_base:
                retrieve = knowledge_base["retrieveConfig"]
                self._check_knowledge_base(account, retrieve["knowledgeBaseId"],
                                           f"{where}.retrieveConfig.knowledgeBaseId")
                search_plan(retrieve["knowledgeBaseRetrievalConfiguration"],
                            f"{where}.retrieveConfig.knowledgeBaseRetrievalConfiguration")
            else:
                self._check_generation(account, knowledge_base["retrieveAndGenerateConfig"],
                                       f"{where}.retrieveAndGenerateConfig")
        else:
            _one_of(rags[0]["precomputedRagSourceConfig"], ("retrieveSourceConfig", "retrieveAndGenerateSourceConfig"),
                    f"{where}.precomputedRagSourceConfig")
        kind = outputs.rag_source(request)[0]
        automated = config["automated"]
        if automated.get("customMetricConfig"):
            raise ValidationException("evaluationConfig.automated.customMetricConfig is not available for RAG "
                                      "evaluation jobs on this server; use the built-in RAG metrics")
        evaluator = automated.get("evaluatorModelConfig")
        if not evaluator:
            raise ValidationException("RAG evaluation metrics are scored by a judge model: set "
                                      "evaluationConfig.automated.evaluatorModelConfig")
        self._check_model("", evaluator["bedrockEvaluatorModels"][0]["modelIdentifier"],
                          "evaluatorModelConfig.bedrockEvaluatorModels[0].modelIdentifier")
        for i, item in enumerate(automated["datasetMetricConfigs"]):
            if item["dataset"]["name"].startswith("Builtin."):
                raise ValidationException(f"datasetMetricConfigs[{i}].dataset.name: RAG evaluation has no built-in "
                                          "datasets; give a custom dataset's datasetLocation.s3Uri")
            for name in item["metricNames"]:
                judge.rag_metric(name, kind, f"datasetMetricConfigs[{i}].metricNames")
        self._check_datasets(automated["datasetMetricConfigs"])

    def _check_knowledge_base(self, account: str, kb_id: str, where: str) -> None:
        try:
            self.knowledge_base(account, kb_id)
        except ResourceNotFoundException:
            raise ValidationException(f"{where}: the knowledge base {kb_id} does not exist in this account") from None

    def _check_generation(self, account: str, config: dict[str, Any], where: str) -> None:
        """A retrieveAndGenerateConfig: what RetrieveAndGenerate would refuse, refused now by its path here."""
        if config["type"] != "KNOWLEDGE_BASE" or config.get("externalSourcesConfiguration"):
            raise ValidationException(f"{where}.type {config['type']} (externalSourcesConfiguration) is not available "
                                      "on this server; use KNOWLEDGE_BASE")
        knowledge_base = config.get("knowledgeBaseConfiguration")
        where += ".knowledgeBaseConfiguration"
        if not knowledge_base:
            raise ValidationException(f"{where} is required when type is KNOWLEDGE_BASE")
        self._check_knowledge_base(account, knowledge_base["knowledgeBaseId"], f"{where}.knowledgeBaseId")
        self._check_model(account, knowledge_base["modelArn"], f"{where}.modelArn")
        if knowledge_base.get("orchestrationConfiguration"):
            raise ValidationException(f"{where}.orchestrationConfiguration (query decomposition) is not supported on "
                                      "this server; the question is searched as asked")
        search_plan(knowledge_base.get("retrievalConfiguration"), f"{where}.retrievalConfiguration")
        generation = knowledge_base.get("generationConfiguration") or {}
        guardrail = generation.get("guardrailConfiguration")
        if guardrail:
            try:
                self.guardrail(account, guardrail["guardrailId"], guardrail.get("guardrailVersion"))
            except ResourceNotFoundException as exc:
                raise ValidationException(f"{where}.generationConfiguration.guardrailConfiguration: "
                                          f"{exc.message}") from None
        template = (generation.get("promptTemplate") or {}).get("textPromptTemplate")
        if template is not None and SEARCH_RESULTS not in template:
            raise ValidationException(f"{where}.generationConfiguration.promptTemplate.textPromptTemplate must "
                                      f"contain {SEARCH_RESULTS}")

    def _check_model(self, account: str, identifier: str, where: str) -> None:
        if ":provisioned-model/" in identifier:
            try:
                self.provisioning.get(account, identifier)
            except ResourceNotFoundException:
                raise ValidationException(f"{where}: the provisioned throughput {identifier} does not exist") \
                    from None
            return
        if ":custom-model/" in identifier:
            raise ValidationException(f"{where}: a custom model is evaluated through its provisioned throughput "
                                      "(its provisionedModelArn), as on Bedrock")
        try:
            card = self.catalog.get(identifier)
        except ResourceNotFoundException:
            raise ValidationException(f"{where}: {identifier} is not a model in this catalog") from None
        if "TEXT" not in card.output_modalities:
            raise ValidationException(f"{where}: {card.model_id} does not generate text")

    def _check_automated(self, config: dict[str, Any]) -> None:
        from outcrop.evaluation import judge

        evaluator = config.get("evaluatorModelConfig")
        judge_model = None
        if evaluator:
            judge_model = evaluator["bedrockEvaluatorModels"][0]["modelIdentifier"]
            self._check_model("", judge_model, "evaluatorModelConfig.bedrockEvaluatorModels[0].modelIdentifier")
        custom = config.get("customMetricConfig")
        custom_names = set()
        if custom:
            self._check_model("", custom["evaluatorModelConfig"]["bedrockEvaluatorModels"][0]["modelIdentifier"],
                              "customMetricConfig.evaluatorModelConfig.bedrockEvaluatorModels[0].modelIdentifier")
            for i, source in enumerate(custom["customMetrics"]):
                definition = source.get("customMetricDefinition")
                if not definition:
                    raise ValidationException(f"customMetricConfig.customMetrics[{i}] needs a customMetricDefinition")
                custom_names.add(judge.custom_rubric(definition).name)
        self._check_datasets(config["datasetMetricConfigs"])
        for item in config["datasetMetricConfigs"]:
            for name in item["metricNames"]:
                if name in custom_names:
                    continue
                if name in judge.BUILTIN_RUBRICS:
                    if judge_model is None:
                        raise ValidationException(f"The metric {name} is scored by a judge model: set "
                                                  "evaluationConfig.automated.evaluatorModelConfig")
                    continue
                scoring.spec(name, item["taskType"])  # an unknown name raises, listing what is available

    def _check_human(self, account: str, config: dict[str, Any], model_count: int) -> None:
        metrics = config.get("customMetrics") or []
        if not metrics:
            raise ValidationException("evaluationConfig.human.customMetrics needs at least one metric to rate")
        check_custom_metrics(metrics, model_count)
        workflow = config.get("humanWorkflowConfig")
        if not workflow:
            raise ValidationException("evaluationConfig.human.humanWorkflowConfig (the work team) is required")
        self.human.resolve_flow_definition(account, workflow["flowDefinitionArn"])
        names = {m["name"] for m in metrics}
        self._check_datasets(config["datasetMetricConfigs"])
        for i, item in enumerate(config["datasetMetricConfigs"]):
            unknown = [n for n in item["metricNames"] if n not in names]
            if unknown:
                raise ValidationException(f"datasetMetricConfigs[{i}].metricNames: {', '.join(unknown)} is not "
                                          "one of the job's customMetrics")

    def _check_datasets(self, items: list[dict[str, Any]]) -> None:
        seen = set()
        for i, item in enumerate(items):
            key = (item["taskType"], item["dataset"]["name"])
            if key in seen:
                raise ValidationException(f"datasetMetricConfigs[{i}]: the dataset {key[1]} appears twice for the "
                                          f"task type {key[0]}; give each dataset its own name")
            seen.add(key)
            self._check_dataset(item, i)

    def _check_dataset(self, item: dict[str, Any], index: int) -> None:
        name = item["dataset"]["name"]
        # The name becomes a folder of the outputs: refuse it now rather than after the work is done.
        if name in (".", "..") or name.startswith(TEMP_PREFIX):
            raise ValidationException(f"datasetMetricConfigs[{index}].dataset.name {name!r} cannot name a folder "
                                      "of the job's outputs; use letters, digits, '-', '_' or '.'")
        location = (item["dataset"].get("datasetLocation") or {}).get("s3Uri")
        if name.startswith("Builtin."):
            datasets.builtin(name, item["taskType"])
        elif not location:
            raise ValidationException(f"datasetMetricConfigs[{index}].dataset.datasetLocation.s3Uri is required "
                                      f"for the custom dataset {name}")
        else:
            S3Uri.parse(location)

    # -- read -------------------------------------------------------------------------------------

    def _row(self, account: str, identifier: str) -> EvaluationJobRow:
        return self._settle(self.db.owned(EvaluationJobRow, EvaluationJobRow.job_name, account, identifier,
                                          "evaluation job"))

    def _settle(self, row: EvaluationJobRow) -> EvaluationJobRow:
        """A Stopping job whose process has ended (stopped while queued, terminated after the grace period,
        lost in a restart) is Stopped: nothing else would ever say so."""
        if row.status != JobStatus.STOPPING:
            return row
        job = self.runner.get(row.runner_job_id) if row.runner_job_id else None
        if job is not None and job.state not in TERMINAL:
            return row
        with self.db.session() as session:
            session.execute(update(EvaluationJobRow).where(EvaluationJobRow.job_arn == row.job_arn,
                                                           EvaluationJobRow.status == JobStatus.STOPPING)
                            .values(status=JobStatus.STOPPED, ended_at=utc_now(), updated_at=utc_now()))
            return session.get(EvaluationJobRow, row.job_arn)

    def get_job(self, account: str, identifier: str) -> dict[str, Any]:
        row = self._row(account, identifier)
        request = row.request
        out = {"jobName": row.job_name, "jobArn": row.job_arn, "status": row.status,
               "jobDescription": request.get("jobDescription"), "roleArn": request["roleArn"],
               "jobType": row.job_type, "applicationType": outputs.application_type(request),
               "evaluationConfig": request["evaluationConfig"], "inferenceConfig": request["inferenceConfig"],
               "outputDataConfig": request["outputDataConfig"], "creationTime": row.created_at,
               "lastModifiedTime": row.updated_at, "failureMessages": row.failure_messages,
               "customerEncryptionKeyId": request.get("customerEncryptionKeyId")}
        progress = self.progress(row)
        if progress:
            out["progress"] = progress  # Outcrop's own member: boto3 drops it; raw JSON and `outcrop eval` show it
        if row.status == JobStatus.COMPLETED:
            out["reportUri"] = str(outputs.job_prefix(request, request["jobId"]).join(outputs.REPORT_HTML))
            # Outcrop's own too: report.json's summary (every score with its interval, the paired comparisons)
            out["results"] = jsontext.finite(row.results)  # JSON has no NaN
        return out

    def progress(self, row: EvaluationJobRow) -> dict[str, Any] | None:
        if row.status == JobStatus.COMPLETED:
            return {"percent": 100.0, "stage": "completed"}
        job = self.runner.get(row.runner_job_id) if row.runner_job_id else None
        if row.job_type == HUMAN and job is not None and job.state == JobState.SUCCEEDED:
            return {"stage": "awaiting ratings", **self.human.progress(row.job_arn)}
        return dict(job.progress) if job is not None and job.progress else None

    def results(self, account: str, identifier: str) -> dict[str, Any] | None:
        """The report's JSON summary of a completed job (Outcrop's own; the CLI reads it)."""
        return self._row(account, identifier).results

    def list_jobs(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        query = select(EvaluationJobRow).where(EvaluationJobRow.account_id == account)
        if params.get("statusEquals"):
            query = query.where(EvaluationJobRow.status == params["statusEquals"])
        if params.get("nameContains"):
            query = query.where(EvaluationJobRow.job_name.contains(params["nameContains"], autoescape=True))
        if params.get("applicationTypeEquals"):
            # Rows from before RAG evaluation may not spell applicationType: those are model evaluations.
            kind = EvaluationJobRow.request["applicationType"].as_string()
            wanted = params["applicationTypeEquals"]
            query = query.where(kind == wanted if wanted != outputs.MODEL_EVALUATION else
                                or_(kind.is_(None), kind == wanted))
        rows, token = page(self.db, query, EvaluationJobRow.created_at, params)
        return {"jobSummaries": [self._summary(self._settle(r)) for r in rows], "nextToken": token}

    def _summary(self, row: EvaluationJobRow) -> dict[str, Any]:
        request = row.request
        config = request["evaluationConfig"].get("automated") or {}
        generation = rag_generation(request)
        models = [*outputs.bedrock_models(request), *([generation["modelArn"]] if generation else [])]
        judges = [m["modelIdentifier"] for m in (config.get("evaluatorModelConfig") or {})
                  .get("bedrockEvaluatorModels", [])]
        custom_judges = [m["modelIdentifier"] for m in ((config.get("customMetricConfig") or {})
                         .get("evaluatorModelConfig") or {}).get("bedrockEvaluatorModels", [])]
        return {"jobArn": row.job_arn, "jobName": row.job_name, "status": row.status,
                "creationTime": row.created_at, "jobType": row.job_type,
                "evaluationTaskTypes": list(dict.fromkeys(c["taskType"] for c in dataset_configs(request))),
                "modelIdentifiers": models, "evaluatorModelIdentifiers": judges or None,
                "customMetricsEvaluatorModelIdentifiers": custom_judges or None,
                **_inference_summary(request), "applicationType": outputs.application_type(request)}

    # -- stop and delete --------------------------------------------------------------------------

    def stop_job(self, account: str, identifier: str) -> None:
        row = self._row(account, identifier)
        if row.status != JobStatus.IN_PROGRESS:
            raise ValidationException(f"The evaluation job {row.job_name} is {row.status}; only a job in progress "
                                      "can be stopped")
        job = self.runner.get(row.runner_job_id) if row.runner_job_id else None
        # A human job whose responses are all generated has no process left: it stops at once.
        waiting = job is not None and job.state in TERMINAL
        status = JobStatus.STOPPED if waiting else JobStatus.STOPPING
        with self.db.session() as session:  # only from InProgress: a job that just completed stays Completed
            changed = session.execute(update(EvaluationJobRow).where(
                EvaluationJobRow.job_arn == row.job_arn, EvaluationJobRow.status == JobStatus.IN_PROGRESS).values(
                status=status, updated_at=utc_now(), **({"ended_at": utc_now()} if waiting else {}))).rowcount
        if not changed:
            raise ValidationException(f"The evaluation job {row.job_name} has just ended; only a job in progress "
                                      "can be stopped")
        if row.runner_job_id and not waiting:
            self.runner.request_stop(row.runner_job_id)

    def batch_delete(self, account: str, identifiers: list[str]) -> dict[str, Any]:
        """Deletes the records of finished jobs (their outputs stay in the user's bucket, as on Bedrock)."""
        deleted, errors = [], []
        for identifier in identifiers:
            try:
                row = self._row(account, identifier)
            except ResourceNotFoundException as exc:
                errors.append({"jobIdentifier": identifier, "code": exc.code, "message": exc.message})
                continue
            if row.status not in FINISHED:
                errors.append({"jobIdentifier": identifier, "code": "ValidationException",
                               "message": f"The evaluation job {row.job_name} is {row.status}; stop it first"})
                continue
            with self.db.session() as session:
                session.execute(delete(HumanRatingRow).where(HumanRatingRow.job_arn == row.job_arn))
                session.execute(delete(HumanTaskRow).where(HumanTaskRow.job_arn == row.job_arn))
                session.execute(delete(EvaluationJobRow).where(EvaluationJobRow.job_arn == row.job_arn))
            deleted.append({"jobIdentifier": identifier, "jobStatus": JobStatus.DELETING})
        return {"errors": errors, "evaluationJobs": deleted}

    # -- human jobs end here ----------------------------------------------------------------------

    def finish_human(self, job_arn: str) -> None:
        """The last rating arrived: aggregate, write the outputs and the report as the job's role, complete."""
        with self.db.session() as session:
            row = session.get(EvaluationJobRow, job_arn)
        if row is None or row.status != JobStatus.IN_PROGRESS:
            return
        request = row.request
        try:
            role = self.iam.check_role(request["roleArn"], row.account_id,
                                       required_permissions(request, request["jobId"], functools.partial(
                                           self.profiles.invocation_arns, row.account_id)))
            store = ScopedStore(self.store, self.iam, role)
            ratings = self.human.ratings(job_arn)
            summary = outputs.human_summary(row, self.human.aggregate(job_arn), ratings)
            outputs.write_human_outputs(store, self.db, row, summary, ratings)
        except Exception as exc:
            with self.db.session() as session:
                session.execute(update(EvaluationJobRow).where(
                    EvaluationJobRow.job_arn == job_arn, EvaluationJobRow.status == JobStatus.IN_PROGRESS).values(
                    status=JobStatus.FAILED, failure_messages=[f"Writing the results failed: {exc}"],
                    ended_at=utc_now(), updated_at=utc_now()))
            raise
        with self.db.session() as session:  # only from InProgress: a job stopped meanwhile stays Stopped
            session.execute(update(EvaluationJobRow).where(
                EvaluationJobRow.job_arn == job_arn, EvaluationJobRow.status == JobStatus.IN_PROGRESS).values(
                status=JobStatus.COMPLETED, results=summary, ended_at=utc_now(), updated_at=utc_now()))


def _inference_summary(request: dict[str, Any]) -> dict[str, Any]:
    """ListEvaluationJobs' inferenceConfigSummary (and ragIdentifiers): the Bedrock models and precomputed sources
    of a model evaluation, or a RAG job's knowledge base or precomputed RAG source."""
    if is_rag(request):
        _, identifier, precomputed = outputs.rag_source(request)
        key = "precomputedRagSourceIdentifiers" if precomputed else "bedrockKnowledgeBaseIdentifiers"
        return {"inferenceConfigSummary": {"ragConfigSummary": {key: [identifier]}},
                **({} if precomputed else {"ragIdentifiers": [identifier]})}
    models = request["inferenceConfig"]["models"]
    summary = {"bedrockModelIdentifiers": outputs.bedrock_models(request)}
    precomputed = [outputs.model_identifier(m) for m in models if "precomputedInferenceSource" in m]
    if precomputed:
        summary["precomputedInferenceSourceIdentifiers"] = precomputed
    return {"inferenceConfigSummary": {"modelConfigSummary": summary}}


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _one_of(value: dict[str, Any], members: tuple[str, ...], where: str) -> None:
    """A union of botocore's model: exactly one member set."""
    given = [m for m in members if value.get(m) is not None]
    if len(given) != 1:
        raise ValidationException(f"{where} needs exactly one of {' or '.join(members)}"
                                  + (f"; it has {' and '.join(given)}" if given else ""))
