"""One model customization job, top to bottom: validate the data, train, write the outputs, keep the model.

Runs in its own process under the job runner (`outcrop.platform.jobs`). Every read and write of the
user's bucket goes through the job's service role. On a second attempt (the server restarted mid-job)
the trainer resumes from the last epoch checkpoint in the job's work dir.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import shutil
from datetime import datetime
from typing import Any

from outcrop.customization import datasets, hyperparameters, trainer
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


def run(ctx: jobs.JobContext) -> str | None:
    job_arn = ctx.spec["jobArn"]
    if ctx.attempt > 1:
        log.info("attempt %d of %s: resuming from the last checkpoint in %s", ctx.attempt, job_arn, ctx.work_dir)
    from outcrop.services import JobServices  # the composition root: a job's entry point builds its services

    db, settings = ctx.db, ctx.settings
    services = JobServices.open(db, settings)
    iam, catalog = services.iam, services.catalog
    row = _row(db, job_arn)
    request = row.request
    job_id = request["jobId"]

    # 1. Validation: the role may do what the job needs, the files are there, every line is right.
    role = iam.check_role(request["roleArn"], row.account_id, required_permissions(request, job_id))
    store = ScopedStore(services.store, iam, role)
    base = catalog.get(request["baseModelId"])
    weights = catalog.local_weights(base)
    base_dir = convert_gguf(weights, settings.models_dir) if weights.suffix.lower() == ".gguf" else weights
    values = hyperparameters.resolve(base, request["customizationType"], request.get("hyperParameters"))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    train_examples, train_summary = _load(store, request["trainingDataConfig"]["s3Uri"], request, tokenizer,
                                          values, MAX_TRAINING_BYTES[request["customizationType"]],
                                          MIN_TRAINING_RECORDS, MAX_TRAINING_RECORDS)
    validation_examples: list = []
    for validator in (request.get("validationDataConfig") or {}).get("validators", []):
        examples, _ = _load(store, validator["s3Uri"], request, tokenizer, values, MAX_VALIDATION_BYTES,
                            MIN_VALIDATION_RECORDS, MAX_VALIDATION_RECORDS)
        validation_examples += examples
    _stage(db, job_arn, "validationDetails", JobStatus.COMPLETED)
    _stage(db, job_arn, "dataProcessingDetails", JobStatus.COMPLETED)

    # 2. Training, with progress for the API and `outcrop jobs watch`.
    _stage(db, job_arn, "trainingDetails", JobStatus.IN_PROGRESS)
    config = trainer.TrainingConfig.from_hyperparameters(values)

    curve: list[list[float]] = []  # (step, loss) for the console's live chart, thinned to LOSS_CURVE_POINTS

    def on_progress(p: trainer.Progress) -> None:
        curve.append([p.step, round(p.loss, 4)])
        if len(curve) > LOSS_CURVE_POINTS:  # every other point goes, the latest stays: the shape and a bound size
            latest = curve[-1]
            del curve[1::2]
            if curve[-1] is not latest:
                curve.append(latest)
        ctx.report({"percent": round(p.percent, 1), "step": p.step, "totalSteps": p.total_steps,
                    "epoch": p.epoch, "epochs": p.epochs, "loss": round(p.loss, 4),
                    "tokensPerSecond": round(p.tokens_per_second, 1), "etaSeconds": round(p.eta_seconds),
                    "examples": train_summary.examples, "lossCurve": list(curve)}, force=p.step == p.total_steps)
        db.update(CustomizationJobRow, job_arn, training_loss=p.loss)

    if values["workerCount"] > 1:  # data-parallel over Ray Train workers, which call on_progress themselves
        from outcrop.customization import distributed

        result = distributed.train(values["workerCount"], base_dir, train_examples, validation_examples or None,
                                   config, ctx.work_dir, on_progress=on_progress, should_stop=ctx.should_stop)
    else:
        result = trainer.train(base_dir, train_examples, validation_examples or None, config, ctx.work_dir,
                               on_progress=on_progress, should_stop=ctx.should_stop)
    if result.stopped:
        _stage(db, job_arn, "trainingDetails", JobStatus.STOPPED)
        db.update(CustomizationJobRow, job_arn, status=JobStatus.STOPPED, ended_at=utc_now())
        return JobState.STOPPED

    # 3. Outputs in Bedrock's layout, written as the role.
    prefix = job_output_prefix(request, job_id)
    store.put_bytes(prefix.join("training_artifacts/step_wise_training_metrics.csv"),
                    _csv(["step_number", "epoch_number", "training_loss", "perplexity"], result.step_metrics))
    store.put_bytes(prefix.join("training_artifacts/loss_curve.png"), loss_curve_png(result))
    if result.validation_metrics:
        store.put_bytes(prefix.join("validation_artifacts/post_fine_tuning_validation/validation_metrics.csv"),
                        _csv(["step_number", "epoch_number", "validation_loss", "perplexity"],
                             result.validation_metrics))

    # 4. The custom model, in Outcrop's own model store, owned by the job's account.
    model_id = job_id
    model_arn = f"arn:aws:bedrock:{settings.region}:{row.account_id}:custom-model/{base.model_id}/{model_id}"
    home = settings.data_dir / "custom-models" / row.account_id / model_id
    home.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(home, ignore_errors=True)
    shutil.move(str(result.model_dir), home)
    (home / "outcrop-custom-model.json").write_text(json.dumps(
        {"modelArn": model_arn, "baseModelId": base.model_id, "baseWeights": str(base_dir),
         "method": config.method, "jobArn": job_arn}, indent=2))
    with db.session() as session:
        session.add(CustomModelRow(model_arn=model_arn, account_id=row.account_id,
                                   model_name=request["customModelName"], job_arn=job_arn,
                                   base_model_id=base.model_id, method=config.method, weights_path=str(home),
                                   base_weights_path=str(base_dir), created_at=utc_now()))
    _stage(db, job_arn, "trainingDetails", JobStatus.COMPLETED)
    db.update(CustomizationJobRow, job_arn, status=JobStatus.COMPLETED, ended_at=utc_now(), output_model_arn=model_arn,
              training_loss=result.step_metrics[-1][2] if result.step_metrics else None,
              validation_losses=[loss for _, _, loss in result.validation_metrics] or None)
    shutil.rmtree(ctx.work_dir / "checkpoints", ignore_errors=True)  # the model is kept; the scratch is not
    return None


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


def _load(store: ScopedStore, uri: str, request: dict[str, Any], tokenizer, values: dict[str, Any],
          max_bytes: int, min_records: int, max_records: int):
    size = store.head(uri).size
    if size > max_bytes:
        raise datasets.DatasetError(f"{uri}: {size:,} bytes, over the limit of {max_bytes:,} bytes")
    with store.open_read(uri) as fh:
        return datasets.load_examples(fh, source=uri, customization_type=request["customizationType"],
                                      tokenizer=tokenizer, max_tokens=values["maxSequenceLength"],
                                      min_records=min_records, max_records=max_records)


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


def _csv(header: list[str], rows: list[tuple[int, int, float]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for step, epoch, loss in rows:
        writer.writerow([step, epoch, f"{loss:.6f}", f"{math.exp(min(loss, 50)):.6f}"])
    return out.getvalue().encode()


def loss_curve_png(result: trainer.TrainingResult) -> bytes:
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

