"""One model customization job, top to bottom: validate the data, train, write the outputs, keep the model.

Runs in its own process under the job runner (`outcrop.platform.jobs`). Every read and write of the
user's bucket goes through the job's service role. On a second attempt (the server restarted mid-job)
the trainer resumes from the last checkpoint in the job's work dir. A text model trains on text records
(`datasets`, `trainer`), an image model on image-caption pairs (`image_training`); the rest is one path.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from outcrop.catalog.cards import FoundationModel
from outcrop.catalog.service import Catalog
from outcrop.customization import datasets, hyperparameters, image_training, trainer
from outcrop.customization.service import job_output_prefix, required_permissions
from outcrop.customization.tables import CustomizationJobRow, CustomModelRow, JobStatus
from outcrop.iam.scoped_store import ScopedStore
from outcrop.inference.loader import convert_gguf
from outcrop.platform import jobs
from outcrop.platform.database import Database, utc_now
from outcrop.platform.tables import JobState

#: Bedrock's limits on training data (Titan's: 1 GB, 10 GB for continued pre-training, 100 MB validation).
MAX_TRAINING_BYTES = {"FINE_TUNING": 1 << 30, "CONTINUED_PRE_TRAINING": 10 << 30}
MAX_VALIDATION_BYTES = 100 << 20
#: Most (step, loss) points a job's progress carries for the live loss curve (older ones are thinned, not cut).
LOSS_CURVE_POINTS = 240
#: Fewer records than this cannot teach a model anything worth a job; more than the maximum is refused.
MIN_TRAINING_RECORDS, MAX_TRAINING_RECORDS = 8, 100_000
MIN_VALIDATION_RECORDS, MAX_VALIDATION_RECORDS = 1, 1_000


log = logging.getLogger(__name__)


@dataclass
class _Job:
    """What every step of one job reads: its request, the role's view of the store, the base model's card."""

    ctx: jobs.JobContext
    arn: str
    account: str
    request: dict[str, Any]
    store: ScopedStore
    catalog: Catalog
    base: FoundationModel

    @property
    def validators(self) -> list[str]:
        return [v["s3Uri"] for v in (self.request.get("validationDataConfig") or {}).get("validators", [])]

    def stage(self, stage: str, status: str) -> None:
        _stage(self.ctx.db, self.arn, stage, status)


@dataclass
class _Trained:
    result: trainer.TrainingResult | image_training.ImageTrainingResult
    base_dir: Path
    method: str  # lora | full
    #: Whether the loss is a cross-entropy, whose exp is a perplexity (an image's is a mean squared error).
    perplexity: bool


def run(ctx: jobs.JobContext) -> str | None:
    job_arn = ctx.spec["jobArn"]
    if ctx.attempt > 1:
        log.info("attempt %d of %s: resuming from the last checkpoint in %s", ctx.attempt, job_arn, ctx.work_dir)
    from outcrop.services import JobServices  # the composition root: a job's entry point builds its services

    db = ctx.db
    services = JobServices.open(db, ctx.settings)
    iam, catalog = services.iam, services.catalog
    row = _row(db, job_arn)
    request = row.request

    # 1. Validation (the role may do what the job needs, the files are there, every line is right), then
    # 2. training, with progress for the API and `outcrop jobs watch`: text, or image-caption pairs.
    role = iam.check_role(request["roleArn"], row.account_id, required_permissions(request, request["jobId"]))
    job = _Job(ctx, job_arn, row.account_id, request, ScopedStore(services.store, iam, role), catalog,
               catalog.get(request["baseModelId"]))
    trained = _train_images(job) if hyperparameters.is_image_model(job.base) else _train_text(job)
    if trained.result.stopped:
        job.stage("trainingDetails", JobStatus.STOPPED)
        db.update(CustomizationJobRow, job_arn, status=JobStatus.STOPPED, ended_at=utc_now())
        return JobState.STOPPED

    # 3. Outputs in Bedrock's layout, written as the role; 4. the custom model.
    _write_outputs(job, trained)
    _keep_model(job, trained)
    shutil.rmtree(ctx.work_dir / "checkpoints", ignore_errors=True)  # the model is kept; the scratch is not
    return None


def _train_text(job: _Job) -> _Trained:
    """Prompt-completion, conversation or continued pre-training records on a causal language model."""
    ctx, request = job.ctx, job.request
    weights = job.catalog.local_weights(job.base)
    base_dir = convert_gguf(weights, ctx.settings.models_dir) if weights.suffix.lower() == ".gguf" else weights
    values = hyperparameters.resolve(job.base, request["customizationType"], request.get("hyperParameters"))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)

    def load(uri: str, max_bytes: int, min_records: int, max_records: int):
        with _dataset(job.store, uri, max_bytes) as fh:
            return datasets.load_examples(fh, source=uri, customization_type=request["customizationType"],
                                          tokenizer=tokenizer, max_tokens=values["maxSequenceLength"],
                                          min_records=min_records, max_records=max_records)

    train_examples, train_summary = load(request["trainingDataConfig"]["s3Uri"],
                                         MAX_TRAINING_BYTES[request["customizationType"]],
                                         MIN_TRAINING_RECORDS, MAX_TRAINING_RECORDS)
    validation_examples = [example for uri in job.validators
                           for example in load(uri, MAX_VALIDATION_BYTES, MIN_VALIDATION_RECORDS,
                                               MAX_VALIDATION_RECORDS)[0]]
    _validated(job)
    config = trainer.TrainingConfig.from_hyperparameters(values)
    on_progress = _reporter(ctx, job.arn, train_summary.examples, _token_speed)
    if values["workerCount"] > 1:  # data-parallel over Ray Train workers, which call on_progress themselves
        from outcrop.customization import distributed

        result = distributed.train(values["workerCount"], base_dir, train_examples, validation_examples or None,
                                   config, ctx.work_dir, on_progress=on_progress, should_stop=ctx.should_stop)
    else:
        result = trainer.train(base_dir, train_examples, validation_examples or None, config, ctx.work_dir,
                               on_progress=on_progress, should_stop=ctx.should_stop)
    return _Trained(result, base_dir, config.method, perplexity=True)


def _train_images(job: _Job) -> _Trained:
    """Image-caption pairs on a diffusion pipeline: a LoRA on its denoiser, as Titan Image Generator is tuned."""
    ctx, request = job.ctx, job.request
    base_dir = job.catalog.local_weights(job.base)
    image_training.check_base(base_dir, job.base.model_id)
    values = hyperparameters.resolve(job.base, request["customizationType"], request.get("hyperParameters"))
    tokenizer = image_training.load_tokenizer(base_dir)

    def load(uri: str, max_bytes: int, min_records: int, max_records: int) -> list[image_training.ImagePair]:
        with _dataset(job.store, uri, max_bytes) as fh:
            return image_training.read_pairs(fh, source=uri, store=job.store, tokenizer=tokenizer,
                                             min_records=min_records, max_records=max_records)

    pairs = load(request["trainingDataConfig"]["s3Uri"], MAX_TRAINING_BYTES[request["customizationType"]],
                 MIN_TRAINING_RECORDS, image_training.MAX_TRAINING_PAIRS)
    validation_pairs = [pair for uri in job.validators
                        for pair in load(uri, MAX_VALIDATION_BYTES, MIN_VALIDATION_RECORDS, MAX_VALIDATION_RECORDS)]
    _validated(job)
    config = image_training.ImageTrainingConfig.from_hyperparameters(values)
    result = image_training.train(base_dir, pairs, validation_pairs or None, config, ctx.work_dir,
                                  on_progress=_reporter(ctx, job.arn, len(pairs), _image_speed),
                                  should_stop=ctx.should_stop)
    return _Trained(result, base_dir, "lora", perplexity=False)


def _validated(job: _Job) -> None:
    """Every line of every dataset was right: validation and data processing are done, training begins."""
    job.stage("validationDetails", JobStatus.COMPLETED)
    job.stage("dataProcessingDetails", JobStatus.COMPLETED)
    job.stage("trainingDetails", JobStatus.IN_PROGRESS)


def _reporter(ctx: jobs.JobContext, job_arn: str, examples: int,
              speed: Callable[[Any], dict[str, float]]) -> Callable[[Any], None]:
    """The trainer's `on_progress`: the job's progress, a loss curve for the console's live chart (thinned to
    LOSS_CURVE_POINTS), and the latest loss on the job's row. It may be sent to Ray Train workers (cloudpickle):
    it holds only what travels."""
    curve: list[list[float]] = []

    def on_progress(p: trainer.Progress | image_training.Progress) -> None:
        curve.append([p.step, round(p.loss, 4)])
        if len(curve) > LOSS_CURVE_POINTS:  # every other point goes, the latest stays: the shape and a bound size
            latest = curve[-1]
            del curve[1::2]
            if curve[-1] is not latest:
                curve.append(latest)
        ctx.report({"percent": round(p.percent, 1), "step": p.step, "totalSteps": p.total_steps,
                    "epoch": p.epoch, "epochs": p.epochs, "loss": round(p.loss, 4), **speed(p),
                    "etaSeconds": round(p.eta_seconds), "examples": examples, "lossCurve": list(curve)},
                   force=p.step == p.total_steps)
        ctx.db.update(CustomizationJobRow, job_arn, training_loss=p.loss)

    return on_progress


def _token_speed(p: trainer.Progress) -> dict[str, float]:
    return {"tokensPerSecond": round(p.tokens_per_second, 1)}


def _image_speed(p: image_training.Progress) -> dict[str, float]:
    return {"imagesPerSecond": round(p.images_per_second, 2)}


def _write_outputs(job: _Job, trained: _Trained) -> None:
    """The metrics and the loss curve, in Bedrock's layout under the job's output folder."""
    result, store = trained.result, job.store
    prefix = job_output_prefix(job.request, job.request["jobId"])
    store.put_bytes(prefix.join("training_artifacts/step_wise_training_metrics.csv"),
                    _csv(["step_number", "epoch_number", "training_loss"], result.step_metrics, trained.perplexity))
    store.put_bytes(prefix.join("training_artifacts/loss_curve.png"), loss_curve_png(result))
    if result.validation_metrics:
        store.put_bytes(prefix.join("validation_artifacts/post_fine_tuning_validation/validation_metrics.csv"),
                        _csv(["step_number", "epoch_number", "validation_loss"], result.validation_metrics,
                             trained.perplexity))


def _keep_model(job: _Job, trained: _Trained) -> None:
    """The custom model, in Outcrop's own model store, owned by the job's account; then the job is Completed."""
    ctx, request, result = job.ctx, job.request, trained.result
    model_id = request["jobId"]
    model_arn = f"arn:aws:bedrock:{ctx.settings.region}:{job.account}:custom-model/{job.base.model_id}/{model_id}"
    home = ctx.settings.data_dir / "custom-models" / job.account / model_id
    home.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(home, ignore_errors=True)
    shutil.move(str(result.model_dir), home)
    (home / "outcrop-custom-model.json").write_text(json.dumps(
        {"modelArn": model_arn, "baseModelId": job.base.model_id, "baseWeights": str(trained.base_dir),
         "method": trained.method, "jobArn": job.arn}, indent=2))
    with ctx.db.session() as session:
        session.add(CustomModelRow(model_arn=model_arn, account_id=job.account,
                                   model_name=request["customModelName"], job_arn=job.arn,
                                   base_model_id=job.base.model_id, method=trained.method, weights_path=str(home),
                                   base_weights_path=str(trained.base_dir), created_at=utc_now()))
    job.stage("trainingDetails", JobStatus.COMPLETED)
    ctx.db.update(CustomizationJobRow, job.arn, status=JobStatus.COMPLETED, ended_at=utc_now(),
                  output_model_arn=model_arn,
                  training_loss=result.step_metrics[-1][2] if result.step_metrics else None,
                  validation_losses=[loss for _, _, loss in result.validation_metrics] or None)


def on_failure(db: Database, runner_job_id: str, message: str) -> None:
    """Called by the job runner when the job failed or died: the stage in progress failed with it."""
    from sqlalchemy import select

    with db.session() as session:
        row = session.scalars(select(CustomizationJobRow).where(
            CustomizationJobRow.runner_job_id == runner_job_id)).first()
        if row is None or row.status in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.STOPPED):
            return
        details = json.loads(json.dumps(row.status_details))
        for stage in details.values():
            if stage["status"] == JobStatus.IN_PROGRESS:
                stage["status"], stage["lastModifiedTime"] = JobStatus.FAILED, utc_now().isoformat()
        row.status_details, row.status, row.failure_message = details, JobStatus.FAILED, message
        row.ended_at = row.updated_at = utc_now()


@contextmanager
def _dataset(store: ScopedStore, uri: str, max_bytes: int) -> Iterator[BinaryIO]:
    """A dataset file, open for reading as the role, once its size is within `max_bytes`."""
    size = store.head(uri).size
    if size > max_bytes:
        raise datasets.DatasetError(f"{uri}: {size:,} bytes, over the limit of {max_bytes:,} bytes")
    with store.open_read(uri) as fh:
        yield fh


def _row(db: Database, job_arn: str) -> CustomizationJobRow:
    with db.session() as session:
        return session.get(CustomizationJobRow, job_arn)


def _stage(db: Database, job_arn: str, stage: str, status: str) -> None:
    with db.session() as session:
        row = session.get(CustomizationJobRow, job_arn)
        details = json.loads(json.dumps(row.status_details))  # a new object, so the JSON column is rewritten
        details[stage]["status"], details[stage]["lastModifiedTime"] = status, utc_now().isoformat()
        if status == JobStatus.IN_PROGRESS:
            details[stage]["creationTime"] = details[stage]["lastModifiedTime"]
        row.status_details, row.updated_at = details, utc_now()


def _csv(header: list[str], rows: list[tuple[int, int, float]], perplexity: bool) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header + ["perplexity"] * perplexity)
    for step, epoch, loss in rows:
        writer.writerow([step, epoch, f"{loss:.6f}"] + [f"{math.exp(min(loss, 50)):.6f}"] * perplexity)
    return out.getvalue().encode()


def loss_curve_png(result: trainer.TrainingResult | image_training.ImageTrainingResult) -> bytes:
    """Training loss per step and validation loss per epoch, drawn: a person would rather look than read."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=100)
    steps = [s for s, _, _ in result.step_metrics]
    axes.plot(steps, [loss for _, _, loss in result.step_metrics], label="training loss", linewidth=1.2)
    if result.validation_metrics:
        axes.plot([s for s, _, _ in result.validation_metrics], [loss for _, _, loss in result.validation_metrics],
                  "o-", label="validation loss")
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title(f"Fine-tuning loss ({datetime.now():%Y-%m-%d %H:%M})")
    axes.grid(alpha=0.3)
    axes.legend()
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()

