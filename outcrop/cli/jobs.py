"""`outcrop jobs`: list model customization jobs and watch one with a progress bar."""

from __future__ import annotations

import argparse
import sys
import time

from outcrop.platform.config import load_settings

TERMINAL = ("Completed", "Failed", "Stopped")


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("jobs", help="model customization jobs: list them, watch one")
    commands = parser.add_subparsers(dest="jobs_command", required=True, metavar="SUBCOMMAND")
    listing = commands.add_parser("list", parents=[common], help="jobs, newest first")
    listing.set_defaults(func=_list)
    watch = commands.add_parser("watch", parents=[common], help="follow a job until it ends, with a progress bar")
    watch.add_argument("job", help="the job's ARN, name or 12-character id")
    watch.add_argument("--interval", type=float, default=1.0, help="seconds between looks (default 1)")
    watch.set_defaults(func=_watch)


def _db(args: argparse.Namespace):
    from outcrop.platform.database import Database

    settings = load_settings(data_dir=args.data_dir)
    db = Database(settings.resolved_database_url)
    db.migrate()
    return db


def _list(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from outcrop.customization.tables import CustomizationJobRow

    with _db(args).session() as session:
        rows = session.scalars(select(CustomizationJobRow).order_by(CustomizationJobRow.created_at.desc())).all()
    for row in rows:
        print(f"{row.created_at:%Y-%m-%d %H:%M:%S}  {row.status:<10}  {row.job_name:<30}  {row.job_arn}")
    return 0


def _find(db, job: str):
    from sqlalchemy import or_, select

    from outcrop.customization.tables import CustomizationJobRow
    from outcrop.errors import ResourceNotFoundException

    with db.session() as session:
        row = session.scalars(select(CustomizationJobRow).where(or_(
            CustomizationJobRow.job_arn == job, CustomizationJobRow.job_name == job,
            CustomizationJobRow.job_arn.endswith("/" + job)))).first()
    if row is None:
        raise ResourceNotFoundException(f"No model customization job {job}")
    return row


def _watch(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from outcrop.platform.tables import JobRow

    db = _db(args)
    bar = None
    stage = ""
    while True:
        row = _find(db, args.job)
        with db.session() as session:
            runner = session.get(JobRow, row.runner_job_id) if row.runner_job_id else None
        progress = (runner.progress if runner is not None else None) or {}
        current = next((name for name, d in row.status_details.items() if d["status"] == "InProgress"), "")
        if current != stage and bar is None:
            stage = current
            print(f"{row.job_name}: {row.status} ({stage.replace('Details', '') or 'queued'})", file=sys.stderr)
        if progress.get("totalSteps"):
            if bar is None:
                bar = tqdm(total=progress["totalSteps"], unit="step", desc=row.job_name, dynamic_ncols=True)
            bar.n = progress["step"]
            bar.set_postfix(epoch=f"{progress['epoch']}/{progress['epochs']}", loss=progress["loss"],
                            eta=f"{progress['etaSeconds']}s", refresh=False)
            bar.refresh()
        if row.status in TERMINAL:
            if bar is not None:
                bar.close()
            print(f"{row.job_name}: {row.status}" + (f": {row.failure_message}" if row.failure_message else ""))
            if row.output_model_arn:
                print(row.output_model_arn)
            return 1 if row.status == "Failed" else 0
        time.sleep(args.interval)
