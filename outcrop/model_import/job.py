"""One model import job, top to bottom: check the folder, copy it into Outcrop's model store, check that it
loads, record the imported model.

Runs in its own process under the job runner (`outcrop.platform.jobs`). Every read of the user's bucket goes
through the job's role (`ScopedStore`). Files are copied into a staging folder beside the final one; on a
second attempt (the server restarted mid-copy) a file already copied whole is not fetched again.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from outcrop.errors import ValidationException
from outcrop.iam.scoped_store import ScopedStore
from outcrop.model_import import folder
from outcrop.model_import.models import imported_model_arn
from outcrop.model_import.service import listing, model_home, required_permissions, source_folder
from outcrop.model_import.tables import ImportedModelRow, ImportJobStatus, ModelImportJobRow
from outcrop.platform import jobs
from outcrop.platform.database import Database, utc_now
from outcrop.platform.objectstore import S3Uri

#: Room left on the model store's disk beyond the folder's size, so an import never fills the disk.
DISK_MARGIN_BYTES = 1 << 30

log = logging.getLogger(__name__)


def run(ctx: jobs.JobContext) -> str | None:
    from outcrop.services import JobServices  # the composition root: a job's entry point builds its services

    db, settings = ctx.db, ctx.settings
    job_arn = ctx.spec["jobArn"]
    services = JobServices.open(db, settings)
    row = _row(db, job_arn)
    if row.status != ImportJobStatus.IN_PROGRESS:  # a job the runner hands out again after it finished: done is done
        log.info("import job %s is %s already; nothing to do", job_arn, row.status)
        return None
    request = row.request
    account = row.account_id

    # 1. The folder, as the role sees it, checked again: it may have changed since the job was created.
    uri = source_folder(request)
    role = services.iam.check_role(request["roleArn"], account, required_permissions(uri))
    store = ScopedStore(services.store, services.iam, role)
    files = listing(store, uri)
    names = folder.check_listing(str(uri), files)
    config = folder.read_config(str(uri), store.get_bytes(uri.join(folder.CONFIG)))
    architecture = folder.check_config(str(uri), config)
    if folder.INDEX in files:
        folder.check_index(str(uri), folder.read_config(str(uri), store.get_bytes(uri.join(folder.INDEX))), files)
    total = sum(files[name] for name in names)

    # 2. The copy, into a staging folder beside the model's home (one rename makes it the model), and 3. the
    # checks that it loads. A folder refused here is final: its staging copy goes (a process killed mid-copy
    # leaves it for the next attempt, which resumes).
    home = model_home(settings.data_dir, account, request["modelId"])
    staging = home.with_name(home.name + ".importing")
    try:
        tokenizer = _copy_and_check(ctx, store, uri, files, names, staging)
    except Exception:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    # 4. The imported model, owned by the job's account. Its home is this job's own (the model id is the job's);
    # if recording it fails (a name taken meanwhile), the files go too, so nothing is left that no row names.
    shutil.rmtree(home, ignore_errors=True)
    staging.replace(home)
    model_arn = imported_model_arn(settings.region, account, request["modelId"])
    (home / "outcrop-imported-model.json").write_text(json.dumps(
        {"modelArn": model_arn, "jobArn": job_arn, "source": str(uri), "architecture": architecture.name},
        indent=2))
    now = utc_now()
    try:
        _record(db, row, job_arn, model_arn, uri, config, architecture, tokenizer, total, home, now)
    except Exception:
        shutil.rmtree(home, ignore_errors=True)
        raise
    log.info("imported %s from %s into %s (%d bytes)", model_arn, uri, home, total)
    return None


def _record(db, row, job_arn: str, model_arn: str, uri: S3Uri, config: dict, architecture, tokenizer, total: int,
            home: Path, now) -> None:
    """The imported model's row and the job's completion, in one transaction."""
    with db.session() as session:
        session.add(ImportedModelRow(
            model_arn=model_arn, account_id=row.account_id, model_name=row.imported_model_name, job_arn=job_arn,
            job_name=row.job_name, s3_uri=str(uri), architecture=str(config.get("model_type") or architecture.name),
            native_format=architecture.native_format,
            instruct_supported=bool(getattr(tokenizer, "chat_template", None)),
            context_length=folder.context_length(config), size_bytes=total, weights_path=str(home), created_at=now))
        job = session.get(ModelImportJobRow, job_arn)
        job.status, job.imported_model_arn = ImportJobStatus.COMPLETED, model_arn
        job.updated_at = job.ended_at = now


def _copy_and_check(ctx: jobs.JobContext, store: ScopedStore, uri: S3Uri, files: dict[str, int], names: list[str],
                    staging: Path):
    """Copy `names` into `staging` (a file already there whole is kept), then check that the copy loads: the
    tokenizer as serving loads it, every tensor's shape against the config. Returns the tokenizer."""
    total = sum(files[name] for name in names)
    staging.mkdir(parents=True, exist_ok=True)
    pending = sum(files[n] for n in names if not _copied(staging / n, files[n]))
    free = shutil.disk_usage(staging).free
    if pending + DISK_MARGIN_BYTES > free:
        raise ValidationException(f"The model store has {free:,} bytes free; importing {total:,} bytes "
                                  f"({pending:,} still to copy) needs {pending + DISK_MARGIN_BYTES:,}")
    done = 0
    for name in names:
        target = staging / name
        if not _copied(target, files[name]):
            partial = target.with_name(target.name + ".part")
            store.download_file(uri.join(name), partial)
            partial.replace(target)
        done += files[name]
        ctx.report({"stage": "copying", "percent": round(100 * done / max(total, 1), 1), "bytesCopied": done,
                    "totalBytes": total, "file": name}, force=done == total)
    ctx.report({"stage": "checking", "percent": 100.0, "bytesCopied": total, "totalBytes": total}, force=True)
    tokenizer = folder.check_tokenizer(staging)
    folder.check_weights(staging)
    return tokenizer


def on_failure(db: Database, runner_job_id: str, message: str) -> None:
    """Called by the job runner when the job failed or died: the job fails with its message."""
    from sqlalchemy import select

    with db.session() as session:
        row = session.scalars(select(ModelImportJobRow).where(
            ModelImportJobRow.runner_job_id == runner_job_id)).first()
        if row is None or row.status != ImportJobStatus.IN_PROGRESS:
            return
        row.status, row.failure_message = ImportJobStatus.FAILED, message
        row.ended_at = row.updated_at = utc_now()


def _copied(path: Path, size: int) -> bool:
    return path.is_file() and path.stat().st_size == size


def _row(db: Database, job_arn: str) -> ModelImportJobRow:
    with db.session() as session:
        return session.get(ModelImportJobRow, job_arn)
