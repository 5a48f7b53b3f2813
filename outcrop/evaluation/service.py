"""Model evaluation jobs as the bedrock API shows them: create, get, list, stop, delete.

The work happens in `outcrop.evaluation.job`, run by the job runner in its own process. A human
job's runner part ends once every model has answered every prompt; the job stays InProgress until
the raters are done (`outcrop.evaluation.human`), and then `finish_human` writes its results here,
in the server.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from outcrop.catalog.service import Catalog
from outcrop.errors import ConflictException, ResourceNotFoundException, ValidationException
from outcrop.evaluation import datasets, inference, outputs, scoring
from outcrop.evaluation.human.methods import check_custom_metrics
from outcrop.evaluation.human.service import HumanReview
from outcrop.evaluation.tables import EvaluationJobRow, HumanRatingRow, HumanTaskRow, JobStatus
from outcrop.iam.principal import Principal
from outcrop.iam.scoped_store import ScopedStore, object_arn
from outcrop.iam.service import IamService
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


def invoked_models(request: dict[str, Any]) -> list[str]:
    """Every model the job asks: the evaluated ones and its judges."""
    models = [m["bedrockModel"]["modelIdentifier"] for m in request["inferenceConfig"]["models"]]
    return list(dict.fromkeys([*models, *outputs.evaluator_models(request)]))


def required_permissions(request: dict[str, Any], job_id: str,
                         model_arns: Callable[[str], list[str]]) -> list[tuple[str, str]]:
    """What the job's role must allow: read every custom dataset, invoke every model it asks (as on
    Bedrock, the models are invoked as the role; `model_arns` gives every ARN a model's name reaches, an
    alias's or a profile's model included: `InferenceProfiles.invocation_arns`), write the job's outputs."""
    reads = [c["dataset"]["datasetLocation"]["s3Uri"] for c in dataset_configs(request)
             if not c["dataset"]["name"].startswith("Builtin.")]
    report = outputs.job_prefix(request, job_id).join(outputs.REPORT_JSON)
    return [*(("s3:GetObject", object_arn(S3Uri.parse(uri))) for uri in reads),
            *(("bedrock:InvokeModel", arn) for m in invoked_models(request) for arn in model_arns(m)),
            ("s3:PutObject", object_arn(report))]


class EvaluationService:
    def __init__(self, db: Database, catalog: Catalog, iam: IamService, runner: JobRunner, store: ObjectStore,
                 provisioning: ProvisioningService, profiles: InferenceProfiles, region: str) -> None:
        self.db = db
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
        request = {k: v for k, v in params.items() if k != "clientRequestToken"}
        if request.get("applicationType", "ModelEvaluation") != "ModelEvaluation":
            raise ValidationException("applicationType RagEvaluation is not available on this server yet; "
                                      "use ModelEvaluation")
        config = request["evaluationConfig"]
        if ("automated" in config) == ("human" in config):
            raise ValidationException("evaluationConfig needs exactly one of automated or human")
        models = self._models(account, request["inferenceConfig"])
        if "human" in config:
            self._check_human(account, config["human"], len(models))
        else:
            self._check_automated(config["automated"])
        S3Uri.parse(request["outputDataConfig"]["s3Uri"])
        job_id = new_id()
        job_arn = f"arn:aws:bedrock:{self.region}:{account}:evaluation-job/{job_id}"
        request["jobId"] = job_id
        # The role is checked now, so that a missing permission is the caller's error, not a failed job later.
        self.iam.check_role(request["roleArn"], account, required_permissions(
            request, job_id, functools.partial(self.profiles.invocation_arns, account)))
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
        if config.get("ragConfigs"):
            raise ValidationException("inferenceConfig.ragConfigs (RAG evaluation) is not available on this server yet")
        models = config.get("models") or []
        if not models:
            raise ValidationException("inferenceConfig.models needs one or two models")
        identifiers = []
        for i, model in enumerate(models):
            where = f"inferenceConfig.models[{i}]"
            if "bedrockModel" not in model:
                raise ValidationException(f"{where}: only bedrockModel is available on this server "
                                          "(precomputedInferenceSource is not)")
            bedrock_model = model["bedrockModel"]
            identifier = bedrock_model["modelIdentifier"]
            self._check_model(account, identifier, f"{where}.bedrockModel.modelIdentifier")
            inference.parse_inference_params(bedrock_model.get("inferenceParams"),
                                             f"{where}.bedrockModel.inferenceParams")
            identifiers.append(identifier)
        if len(set(identifiers)) != len(identifiers):
            raise ValidationException("inferenceConfig.models names the same model twice")
        return identifiers

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
               "jobType": row.job_type, "applicationType": request.get("applicationType", "ModelEvaluation"),
               "evaluationConfig": request["evaluationConfig"], "inferenceConfig": request["inferenceConfig"],
               "outputDataConfig": request["outputDataConfig"], "creationTime": row.created_at,
               "lastModifiedTime": row.updated_at, "failureMessages": row.failure_messages,
               "customerEncryptionKeyId": request.get("customerEncryptionKeyId")}
        progress = self.progress(row)
        if progress:
            out["progress"] = progress  # Outcrop's own member: boto3 drops it; raw JSON and `outcrop eval` show it
        if row.status == JobStatus.COMPLETED:
            out["reportUri"] = str(outputs.job_prefix(request, request["jobId"]).join(outputs.REPORT_HTML))
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
        if params.get("applicationTypeEquals") not in (None, "ModelEvaluation"):
            return {"jobSummaries": []}
        rows, token = page(self.db, query, EvaluationJobRow.created_at, params)
        return {"jobSummaries": [self._summary(self._settle(r)) for r in rows], "nextToken": token}

    def _summary(self, row: EvaluationJobRow) -> dict[str, Any]:
        request = row.request
        config = request["evaluationConfig"].get("automated") or {}
        models = [m["bedrockModel"]["modelIdentifier"] for m in request["inferenceConfig"]["models"]]
        judges = [m["modelIdentifier"] for m in (config.get("evaluatorModelConfig") or {})
                  .get("bedrockEvaluatorModels", [])]
        custom_judges = [m["modelIdentifier"] for m in ((config.get("customMetricConfig") or {})
                         .get("evaluatorModelConfig") or {}).get("bedrockEvaluatorModels", [])]
        return {"jobArn": row.job_arn, "jobName": row.job_name, "status": row.status,
                "creationTime": row.created_at, "jobType": row.job_type,
                "evaluationTaskTypes": list(dict.fromkeys(c["taskType"] for c in dataset_configs(request))),
                "modelIdentifiers": models, "evaluatorModelIdentifiers": judges or None,
                "customMetricsEvaluatorModelIdentifiers": custom_judges or None,
                "inferenceConfigSummary": {"modelConfigSummary": {"bedrockModelIdentifiers": models}},
                "applicationType": request.get("applicationType", "ModelEvaluation")}

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
