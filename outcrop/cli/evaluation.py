"""`outcrop eval`: create an evaluation job, watch it with a progress bar, list jobs, read the report.

`create`, `watch` and `list` are bedrock clients (boto3) of a running server, like `outcrop chat`;
`report` reads the finished job's summary from the local state (`--data-dir`) and prints it, writes
the HTML page, or opens it in a browser.
"""

from __future__ import annotations

import argparse
import json
import string
import sys
import time
from pathlib import Path
from typing import Any

from outcrop.cli.chat import ENDPOINT_ENV, Fatal, make_client, run_client

TERMINAL = ("Completed", "Failed", "Stopped")
#: What `outcrop eval compare` scores unless told otherwise: cheap, reference-based, and one of each kind
#: (word overlap, corpus n-grams, the task's own accuracy).
COMPARE_METRICS = "Builtin.Accuracy,Outcrop.ROUGE-L,Outcrop.BLEU"


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    client = argparse.ArgumentParser(add_help=False)
    client.add_argument("--endpoint-url", default=None,
                        help=f"the Outcrop server (default: ${ENDPOINT_ENV}, else http://127.0.0.1:8600)")
    parser = sub.add_parser("eval", help="model evaluation jobs: create, watch, list, report")
    commands = parser.add_subparsers(dest="eval_command", required=True, metavar="SUBCOMMAND")

    job = argparse.ArgumentParser(add_help=False)  # what an automated job needs, for `create` and `compare`
    job.add_argument("--task", default="Custom", choices=("Summarization", "Classification",
                                                           "QuestionAndAnswer", "Generation", "Custom"))
    job.add_argument("--dataset", action="append", default=[], metavar="DATASET",
                     help="s3://bucket/prompts.jsonl or a built-in name such as Builtin.BoolQ; repeatable")
    job.add_argument("--role-arn", help="the service role that reads the datasets and writes the results")
    job.add_argument("--output", metavar="S3URI", help="where results go, e.g. s3://bucket/evaluations/")
    job.add_argument("--judge", metavar="MODEL", help="a model that scores the Builtin judge metrics")
    job.add_argument("--max-tokens", type=int, default=None, help="most tokens in each answer (default 256)")
    job.add_argument("--temperature", type=float, default=None, help="sampling temperature (default 0: greedy)")

    create = commands.add_parser(
        "create", parents=[common, client, job], help="start an evaluation job",
        description="Start an evaluation job. Either give --config with a whole CreateEvaluationJob request "
                    "(JSON), or build one: models, one task type, its datasets and metrics. With --flow-definition "
                    "and --rate the job is a human evaluation.")
    create.add_argument("name", help="the job's name (lowercase letters, digits and hyphens)")
    create.add_argument("--config", metavar="FILE", help="a CreateEvaluationJob request as JSON (- reads stdin); "
                                                        "the name and flags below override its members")
    create.add_argument("--model", action="append", default=[], metavar="MODEL",
                        help="a model id or provisioned model ARN; twice to compare two models")
    create.add_argument("--metrics", default="Builtin.Accuracy",
                        help="comma-separated metric names (default Builtin.Accuracy)")
    create.add_argument("--flow-definition", metavar="ARN", help="human evaluation: the work team (`outcrop "
                                                                 "workteam create` prints its ARN)")
    create.add_argument("--rate", action="append", default=[], metavar="NAME:METHOD[:DESCRIPTION]",
                        help="human evaluation: a metric the raters rate, e.g. helpful:ThumbsUpDown")
    create.add_argument("--instructions", default=None, help="human evaluation: what the raters read first")
    create.add_argument("--watch", action="store_true", help="follow the job until it ends")
    create.set_defaults(func=lambda args: run_client(_create, args))

    compare = commands.add_parser(
        "compare", parents=[common, client, job], help="evaluate a base model against its fine-tuned copy",
        description="Evaluate BASE and CUSTOM on the same prompts in one job, wait for it, and print, per metric, "
                    "which is better, by how much, with an interval and a p-value adjusted for every comparison. "
                    "CUSTOM may be a custom model's name or ARN: it is evaluated through its provisioned "
                    "throughput, as on Bedrock.")
    compare.add_argument("base", help="the model to compare against: a model id, custom model or provisioned ARN")
    compare.add_argument("custom", help="the fine-tuned model: a custom model name or ARN, or a provisioned model ARN")
    compare.add_argument("--name", default=None, help="the job's name (default compare-<custom>-<time>)")
    compare.add_argument("--metrics", default=COMPARE_METRICS,
                         help=f"comma-separated metric names (default {COMPARE_METRICS})")
    compare.set_defaults(func=lambda args: run_client(_compare, args))

    watch = commands.add_parser("watch", parents=[common, client], help="follow a job with a progress bar")
    watch.add_argument("job", help="the job's ARN or name")
    watch.add_argument("--interval", type=float, default=1.0, help="seconds between looks (default 1)")
    watch.set_defaults(func=lambda args: run_client(_watch, args))

    listing = commands.add_parser("list", parents=[common, client], help="evaluation jobs, newest first")
    listing.set_defaults(func=lambda args: run_client(_list, args))

    report = commands.add_parser("report", parents=[common], help="a completed job's results",
                                 description="Print a completed job's results as tables; --html writes the "
                                             "report page (charts included), --open shows it in a browser.")
    report.add_argument("job", help="the job's ARN, name or 12-character id")
    report.add_argument("--html", metavar="FILE", help="write the HTML report to FILE")
    report.add_argument("--json", action="store_true", help="print the JSON summary instead of tables")
    report.add_argument("--open", action="store_true", help="open the HTML report in a web browser")
    report.set_defaults(func=_report)


# -- create ----------------------------------------------------------------------------------------

def build_request(args: argparse.Namespace) -> dict[str, Any]:
    """The CreateEvaluationJob request from --config and the flags (flags win)."""
    request: dict[str, Any] = {}
    if args.config:
        text = sys.stdin.read() if args.config == "-" else Path(args.config).read_text(encoding="utf-8")
        try:
            request = json.loads(text)
        except json.JSONDecodeError as exc:
            raise Fatal(f"{args.config} is not JSON: {exc}") from None
    request["jobName"] = args.name
    if args.role_arn:
        request["roleArn"] = args.role_arn
    if args.output:
        request["outputDataConfig"] = {"s3Uri": args.output}
    if args.model:
        params = {k: v for k, v in (("maxTokens", args.max_tokens), ("temperature", args.temperature)) if v is not None}
        inference = {"inferenceParams": json.dumps({"inferenceConfig": params})} if params else {}
        request["inferenceConfig"] = {"models": [{"bedrockModel": {"modelIdentifier": m, **inference}}
                                                 for m in args.model]}
    if args.dataset:
        configs = [{"taskType": args.task, "dataset": _dataset(d),
                    "metricNames": [m.strip() for m in args.metrics.split(",") if m.strip()]} for d in args.dataset]
        taken: set[str] = set()
        for config in configs:  # a/prompts.jsonl and b/prompts.jsonl: "prompts" and "prompts-2"
            name, n = config["dataset"]["name"], 1
            while name in taken:
                n += 1
                name = f"{config['dataset']['name'][:60]}-{n}"
            config["dataset"]["name"] = name
            taken.add(name)
        if args.flow_definition or args.rate:
            metrics = [_rated(spec) for spec in args.rate]
            if not args.flow_definition or not metrics:
                raise Fatal("a human evaluation needs both --flow-definition and at least one --rate")
            for config in configs:
                config["metricNames"] = [m["name"] for m in metrics]
            workflow = {"flowDefinitionArn": args.flow_definition,
                        **({"instructions": args.instructions} if args.instructions else {})}
            request["evaluationConfig"] = {"human": {"humanWorkflowConfig": workflow, "customMetrics": metrics,
                                                     "datasetMetricConfigs": configs}}
        else:
            automated: dict[str, Any] = {"datasetMetricConfigs": configs}
            if args.judge:
                automated["evaluatorModelConfig"] = {"bedrockEvaluatorModels": [{"modelIdentifier": args.judge}]}
            request["evaluationConfig"] = {"automated": automated}
    missing = [flag for flag, member in (("--role-arn", "roleArn"), ("--output", "outputDataConfig"),
                                         ("--model", "inferenceConfig"), ("--dataset", "evaluationConfig"))
               if member not in request]
    if missing:
        raise Fatal(f"missing {', '.join(missing)} (or give them in --config)")
    return request


def _dataset(value: str) -> dict[str, Any]:
    if value.startswith("Builtin."):
        return {"name": value}
    if not value.startswith("s3://"):
        raise Fatal(f"--dataset {value}: give an s3:// URI (upload with `outcrop s3 cp`) or a Builtin. name")
    stem = value.rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    name = "".join(ch if ch in _NAME_CHARACTERS else "-" for ch in stem).strip(".")[:63] or "dataset"
    return {"name": name, "datasetLocation": {"s3Uri": value}}


#: What Bedrock allows in a dataset name (`[0-9a-zA-Z-_.]+`).
_NAME_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-_.")


def _rated(spec: str) -> dict[str, str]:
    name, _, rest = spec.partition(":")
    method, _, description = rest.partition(":")
    if not name or not method:
        raise Fatal(f"--rate {spec}: use NAME:METHOD[:DESCRIPTION], e.g. helpful:ThumbsUpDown")
    return {"name": name, "ratingMethod": method, **({"description": description} if description else {})}


def _create(args: argparse.Namespace) -> int:
    bedrock = make_client(args, "bedrock")
    arn = bedrock.create_evaluation_job(**build_request(args))["jobArn"]
    print(arn)
    if args.watch:
        args.job, args.interval = arn, 1.0
        return _follow(bedrock, args)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from outcrop.evaluation import report

    bedrock = make_client(args, "bedrock")
    args.model = [_served(bedrock, args.base), _served(bedrock, args.custom)]
    args.config, args.flow_definition, args.rate, args.instructions = None, None, [], None
    args.name = args.name or _job_name(args.custom)
    args.job = bedrock.create_evaluation_job(**build_request(args))["jobArn"]
    print(args.job)
    args.interval = 1.0
    extra = _with_progress(bedrock)
    status = _follow(bedrock, args, extra)
    if status == 0 and extra.get("results"):
        print()
        print(report.text_table(extra["results"]), end="")
    return status


def _served(bedrock, identifier: str) -> str:
    """What answers for `identifier`: a custom model's provisioned throughput (Bedrock serves custom models only
    through one), else the identifier itself."""
    from botocore.exceptions import ClientError

    if ":provisioned-model/" in identifier or ("." in identifier and "/" not in identifier):
        return identifier  # a provisioned throughput, or a foundation model id
    try:
        custom = bedrock.get_custom_model(modelIdentifier=identifier)
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("ResourceNotFoundException", "ValidationException"):
            raise
        return identifier  # not a custom model: let CreateEvaluationJob judge it
    pages = bedrock.get_paginator("list_provisioned_model_throughputs").paginate(
        modelArnEquals=custom["modelArn"], statusEquals="InService")
    served = [p["provisionedModelArn"] for page in pages for p in page["provisionedModelSummaries"]]
    if not served:
        raise Fatal(f"{custom['modelName']} has no provisioned throughput in service; buy one first: "
                    f"aws bedrock create-provisioned-model-throughput --model-id {custom['modelArn']} "
                    "--model-units 1 --provisioned-model-name NAME")
    return served[0]


def _job_name(custom: str) -> str:
    """`compare-<custom model's name>-<UTC time>`, within Bedrock's job name pattern."""
    tail = "".join(c if c.isalnum() else "-" for c in custom.rsplit("/", 1)[-1].lower()).strip("-")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    tail = "-".join(filter(None, tail[:63 - len("compare--") - len(stamp)].split("-")))
    return f"compare-{tail}-{stamp}" if tail else f"compare-{stamp}"


# -- watch and list --------------------------------------------------------------------------------

def _with_progress(bedrock) -> dict[str, Any]:
    """boto3 drops members its model lacks; keep Outcrop's `progress`, `reportUri` and `results` from the raw
    body."""
    extra: dict[str, Any] = {}

    def keep(http_response, **_):
        try:
            body = json.loads(http_response.content or b"{}")
        except ValueError:
            return
        extra.clear()
        extra.update({k: body[k] for k in ("progress", "reportUri", "results") if k in body})

    bedrock.meta.events.register("after-call.bedrock.GetEvaluationJob", keep)
    return extra


def _watch(args: argparse.Namespace) -> int:
    bedrock = make_client(args, "bedrock")
    if not args.job.startswith("arn:"):  # the API names jobs by ARN only; a person remembers the name
        pages = bedrock.get_paginator("list_evaluation_jobs").paginate(nameContains=args.job)
        found = [j for page in pages for j in page["jobSummaries"] if j["jobName"] == args.job]
        if not found:
            raise Fatal(f"no evaluation job named {args.job}")
        args.job = found[0]["jobArn"]
    return _follow(bedrock, args)


def _follow(bedrock, args: argparse.Namespace, extra: dict[str, Any] | None = None) -> int:
    """Watch the job to its end; `extra` (`_with_progress`'s, made here if not given) then holds its last raw
    members."""
    from tqdm import tqdm

    extra = _with_progress(bedrock) if extra is None else extra
    bar, stage = None, None
    while True:
        job = bedrock.get_evaluation_job(jobIdentifier=args.job)
        progress = extra.get("progress") or {}
        if progress.get("stage") != stage:
            stage = progress.get("stage")
            if bar is not None:
                bar.close()
                bar = None
            if stage == "awaiting ratings":
                url = f"{args.resolved_endpoint}/_outcrop/evaluation/rate/"
                note = "" if url.startswith("https:") else \
                    " (on this machine; raters elsewhere need `outcrop serve --tls`)"
                print(f"{job['jobName']}: the raters sign in at {url}{note}", file=sys.stderr)
            if stage:
                bar = tqdm(total=100.0, unit="%", desc=f"{job['jobName']}: {stage}", dynamic_ncols=True,
                           bar_format="{desc} {percentage:3.0f}%|{bar}| {postfix}")
        if bar is not None:
            bar.n = min(float(progress.get("percent") or 0), 100.0)
            done = progress.get("done", progress.get("ratings"))
            total = progress.get("total", progress.get("needed"))
            bar.set_postfix_str(f"{done}/{total}" if done is not None else "", refresh=False)
            bar.refresh()
        if job["status"] in TERMINAL:
            if bar is not None:
                bar.close()
            failures = "; ".join(job.get("failureMessages") or [])
            print(f"{job['jobName']}: {job['status']}" + (f": {failures}" if failures else ""))
            if extra.get("reportUri"):
                print(f"report: {extra['reportUri']}  (outcrop eval report {job['jobName']} --open)")
            return 1 if job["status"] == "Failed" else 0
        time.sleep(args.interval)


def _list(args: argparse.Namespace) -> int:
    from outcrop.evaluation.outputs import summary_sources  # models, precomputed sources or a knowledge base

    bedrock = make_client(args, "bedrock")
    for job in (j for page in bedrock.get_paginator("list_evaluation_jobs").paginate() for j in page["jobSummaries"]):
        models = " vs ".join(summary_sources(job) or job.get("modelIdentifiers") or [])
        print(f"{job['creationTime']:%Y-%m-%d %H:%M:%S}  {job['status']:<10}  {job['jobType']:<9}  "
              f"{job['jobName']:<30}  {models}")
    return 0


# -- report ----------------------------------------------------------------------------------------

def _report(args: argparse.Namespace) -> int:
    from sqlalchemy import or_, select

    from outcrop.errors import ResourceNotFoundException
    from outcrop.evaluation import report
    from outcrop.evaluation.tables import EvaluationJobRow
    from outcrop.platform.config import load_settings
    from outcrop.platform.database import Database

    settings = load_settings(data_dir=args.data_dir)
    db = Database(settings.resolved_database_url)
    db.migrate()
    with db.session() as session:
        row = session.scalars(select(EvaluationJobRow).where(or_(
            EvaluationJobRow.job_arn == args.job, EvaluationJobRow.job_name == args.job,
            EvaluationJobRow.job_arn.endswith("/" + args.job)))).first()
    if row is None:
        raise ResourceNotFoundException(f"No evaluation job {args.job}")
    if row.results is None:
        print(f"outcrop: the evaluation job {row.job_name} is {row.status}; its report exists once it completes",
              file=sys.stderr)
        return 1
    if args.json:
        sys.stdout.write(report.render_json(row.results).decode())
    else:
        print(report.text_table(row.results))
    if args.html or args.open:
        path = Path(args.html) if args.html else settings.data_dir / "reports" / f"{row.job_name}.html"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(report.render_html(row.results), encoding="utf-8")
        print(f"report: {path}", file=sys.stderr)
        if args.open:
            import webbrowser

            webbrowser.open(path.resolve().as_uri())
    return 0
