"""`outcrop kb`: knowledge bases from the command line: create one on a bucket, sync a folder into it, ask it.

The common path is a person with a folder of documents who wants cited answers from it without writing
boto3 code: `create` makes the knowledge base, its S3 data source and (unless given one) the read-only
service role it needs; `sync --from DIR` uploads the folder and runs the ingestion with a progress bar;
`retrieve` and `ask` search it and answer from it. Like `outcrop chat` and `outcrop eval`, every call is a
plain boto3 client (bedrock-agent, bedrock-agent-runtime) of a running `outcrop serve`, so the CLI only
does what any Bedrock application can; the service role and the upload go straight to the local data dir,
as `outcrop iam create-role` and `outcrop s3 cp` do, since neither is a Bedrock operation.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from outcrop.cli.chat import ENDPOINT_ENV, Fatal, make_client, run_client

DEFAULT_EMBEDDING_MODEL = "sentence-transformers.all-minilm-l6-v2-v1:0"
DEFAULT_CHAT_MODEL = "huggingface.smollm2-135m-instruct-v1:0"
CHUNKING = ("FIXED_SIZE", "NONE", "HIERARCHICAL", "SEMANTIC")
TERMINAL = ("COMPLETE", "FAILED", "STOPPED")
#: Bedrock's console defaults for the chunking strategies, used for what the flags leave out.
DEFAULT_MAX_TOKENS, DEFAULT_OVERLAP, DEFAULT_PARENT_TOKENS, DEFAULT_BREAKPOINT = 300, 20, 1500, 95
#: How much of a passage `retrieve` shows: enough to recognise it, short enough to scan a list.
SNIPPET = 300
#: IAM role names are at most 64 characters; knowledge base names may be longer.
ROLE_NAME_LIMIT = 64
POLL_SECONDS = 1.0
_STATISTICS = (("numberOfDocumentsScanned", "scanned"), ("numberOfNewDocumentsIndexed", "new"),
               ("numberOfModifiedDocumentsIndexed", "modified"), ("numberOfDocumentsDeleted", "deleted"),
               ("numberOfDocumentsFailed", "failed"))


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    client = argparse.ArgumentParser(add_help=False, parents=[common])
    client.add_argument("--endpoint-url", default=None,
                        help=f"the Outcrop server (default: ${ENDPOINT_ENV}, else http://127.0.0.1:8600)")
    search = argparse.ArgumentParser(add_help=False)
    search.add_argument("-n", "--results", type=int, default=5, metavar="N", help="passages to retrieve (default 5)")
    search.add_argument("--search-type", choices=("SEMANTIC", "HYBRID"), default=None,
                        help="vectors only, or vectors and keywords (default: the server's)")
    search.add_argument("--filter", default=None, metavar="JSON|FILE",
                        help="a Bedrock metadata filter, e.g. '{\"equals\": {\"key\": \"year\", \"value\": 2024}}'")

    parser = sub.add_parser("kb", help="knowledge bases: create, sync a folder, retrieve, ask, list")
    commands = parser.add_subparsers(dest="kb_command", required=True, metavar="SUBCOMMAND")

    def command(name: str, func, help_text: str, parents=(client,)) -> argparse.ArgumentParser:
        # The options go on each leaf so that `--data-dir` may come after the arguments, as users type it.
        leaf = commands.add_parser(name, parents=list(parents), help=help_text, description=help_text)
        leaf.set_defaults(func=lambda args: run_client(func, args))
        return leaf

    create = command("create", _create, "create a knowledge base with an S3 data source (prints its id)")
    create.add_argument("name", help="the knowledge base's name (letters, digits, - and _)")
    create.add_argument("--source", required=True, metavar="s3://BUCKET[/PREFIX]",
                        help="the documents' bucket, and optionally the prefix they are under")
    create.add_argument("--role-arn", help="the service role that reads the bucket (default: make a read-only "
                                           "role kb-NAME, or reuse one of that name)")
    create.add_argument("--embedding-model", default=DEFAULT_EMBEDDING_MODEL, metavar="ID",
                        help=f"an embedding model id or ARN (default {DEFAULT_EMBEDDING_MODEL})")
    create.add_argument("--chunking", choices=CHUNKING, default=None,
                        help="how documents are cut into passages (default: the server's, FIXED_SIZE 300/20%%)")
    create.add_argument("--max-tokens", type=int, default=None, metavar="N",
                        help=f"tokens in a passage (HIERARCHICAL: in a child passage; default {DEFAULT_MAX_TOKENS})")
    create.add_argument("--overlap", type=int, default=None, metavar="PCT",
                        help=f"percent of a passage repeated in the next (default {DEFAULT_OVERLAP})")
    create.add_argument("--description", default=None)

    sync = command("sync", _sync, "run an ingestion job on each data source, optionally uploading a folder first")
    sync.add_argument("kb", metavar="KB", help="the knowledge base's id or name")
    sync.add_argument("--from", dest="folder", metavar="DIR",
                      help="upload this folder into the data source's bucket and prefix first (relative paths kept)")
    sync.add_argument("--no-wait", action="store_true", help="start the job and return")

    retrieve = command("retrieve", _retrieve, "the passages that best match a question",
                       parents=(client, search))
    retrieve.add_argument("kb", metavar="KB", help="the knowledge base's id or name")
    retrieve.add_argument("question", metavar="QUESTION")
    retrieve.add_argument("--json", action="store_true", help="print the raw retrievalResults")

    ask = command("ask", _ask, "an answer from the knowledge base, with its sources", parents=(client, search))
    ask.add_argument("kb", metavar="KB", help="the knowledge base's id or name")
    ask.add_argument("question", metavar="QUESTION")
    ask.add_argument("--model", default=DEFAULT_CHAT_MODEL, metavar="ID",
                     help=f"the model that answers, an id or ARN (default {DEFAULT_CHAT_MODEL})")
    ask.add_argument("--session", default=None, metavar="ID",
                     help="continue a conversation (the id `ask` printed on stderr)")
    ask.add_argument("--max-tokens", type=int, default=None, metavar="N", help="most tokens in the answer")
    ask.add_argument("--temperature", type=float, default=None, help="sampling temperature (0: greedy)")

    command("list", _list, "knowledge bases: id, name, status, last update")


# -- shared ----------------------------------------------------------------------------------------

def model_arn(region: str, model: str) -> str:
    """Bedrock names models by ARN in knowledge base requests; a person types the id."""
    return model if model.startswith("arn:") else f"arn:aws:bedrock:{region}::foundation-model/{model}"


def resolve(agent, kb: str) -> dict[str, Any]:
    """The summary of the knowledge base whose id or name is `kb`: the API takes ids, people remember names."""
    summaries = [s for page in agent.get_paginator("list_knowledge_bases").paginate()
                 for s in page["knowledgeBaseSummaries"]]
    found = next((s for s in summaries if s["knowledgeBaseId"] == kb), None) or \
        next((s for s in summaries if s["name"] == kb), None)
    if found is None:
        raise Fatal(f"no knowledge base with the id or name {kb} (`outcrop kb list` shows them)")
    return found


def _note(message: str) -> None:
    """What a person reads and a script does not capture: stdout keeps the one value scripts want."""
    print(message, file=sys.stderr, flush=True)


# -- create ----------------------------------------------------------------------------------------

def _create(args: argparse.Namespace) -> int:
    source = folder_uri(args.source)
    chunking = chunking_configuration(args.chunking, args.max_tokens, args.overlap)
    agent = make_client(args, "bedrock-agent")
    region = agent.meta.region_name
    role = args.role_arn or service_role(args, f"kb-{args.name}"[:ROLE_NAME_LIMIT], source)
    vector = {"embeddingModelArn": model_arn(region, args.embedding_model)}
    request = {"name": args.name, "roleArn": role,
               "knowledgeBaseConfiguration": {"type": "VECTOR", "vectorKnowledgeBaseConfiguration": vector}}
    if args.description:
        request["description"] = args.description
    kb_id = agent.create_knowledge_base(**request)["knowledgeBase"]["knowledgeBaseId"]
    try:
        request = data_source_request(kb_id, args.name, source, chunking)
        ds_id = agent.create_data_source(**request)["dataSource"]["dataSourceId"]
    except Exception:
        # A knowledge base without its source is no use, and its name would block the corrected retry.
        agent.delete_knowledge_base(knowledgeBaseId=kb_id)
        raise
    _note(f"knowledge base {args.name}: {kb_id}, data source {ds_id} on {source}, role {role}")
    _note(f"next: outcrop kb sync {args.name} --from DIR")
    print(kb_id)
    return 0


def folder_uri(value: str):
    """`s3://b/docs` means the folder docs/, as in `outcrop s3 cp --recursive`, not also `docs-old/`; the role
    made for it reads `docs/*`, which is what the data source then asks of it."""
    from outcrop.platform.objectstore import S3Uri

    uri = S3Uri.parse(value)
    return uri if not uri.key or uri.key.endswith("/") else S3Uri(uri.bucket, uri.key + "/")


def chunking_configuration(strategy: str | None, max_tokens: int | None, overlap: int | None) -> dict[str, Any] | None:
    """Bedrock's chunkingConfiguration from the flags; None (the server's default) when none is given."""
    if strategy is None:
        if max_tokens is None and overlap is None:
            return None
        strategy = "FIXED_SIZE"  # sizes without a strategy are sizes of the default strategy
    tokens = DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens
    percent = DEFAULT_OVERLAP if overlap is None else overlap
    if strategy == "NONE":
        if max_tokens is not None or overlap is not None:
            raise Fatal("--max-tokens and --overlap do not apply to --chunking NONE (a document is one passage)")
        return {"chunkingStrategy": "NONE"}
    if strategy == "FIXED_SIZE":
        return {"chunkingStrategy": strategy,
                "fixedSizeChunkingConfiguration": {"maxTokens": tokens, "overlapPercentage": percent}}
    if strategy == "HIERARCHICAL":
        # --max-tokens sizes the child passages, which are searched; parents give the answer more context.
        levels = [{"maxTokens": max(DEFAULT_PARENT_TOKENS, tokens)}, {"maxTokens": tokens}]
        return {"chunkingStrategy": strategy, "hierarchicalChunkingConfiguration": {
            "levelConfigurations": levels, "overlapTokens": max(1, round(tokens * percent / 100))}}
    if overlap is not None:
        raise Fatal("--overlap does not apply to --chunking SEMANTIC (it cuts where the meaning changes)")
    return {"chunkingStrategy": strategy, "semanticChunkingConfiguration": {
        "maxTokens": tokens, "bufferSize": 0, "breakpointPercentileThreshold": DEFAULT_BREAKPOINT}}


def data_source_request(kb_id: str, name: str, source, chunking: dict[str, Any] | None) -> dict[str, Any]:
    s3: dict[str, Any] = {"bucketArn": f"arn:aws:s3:::{source.bucket}"}
    if source.key:
        s3["inclusionPrefixes"] = [source.key]
    request = {"knowledgeBaseId": kb_id, "name": name,
               "dataSourceConfiguration": {"type": "S3", "s3Configuration": s3}}
    if chunking is not None:
        request["vectorIngestionConfiguration"] = {"chunkingConfiguration": chunking}
    return request


def service_role(args: argparse.Namespace, name: str, source) -> str:
    """The read-only role `outcrop iam create-role --name NAME --s3-access BUCKET/PREFIX --read-only` makes,
    or the existing role of that name (a second knowledge base of the same name, or a retry)."""
    from outcrop.cli.iam import open_iam
    from outcrop.errors import ConflictException
    from outcrop.iam.principal import principal_arn

    iam, account, _ = open_iam(args)
    try:
        role = iam.create_service_role(account, name, s3_access=f"{source.bucket}/{source.key}".rstrip("/"),
                                       read_only=True)
    except ConflictException:
        _note(f"reusing the role {name}")
        return principal_arn(account, "role", name)
    return role.arn


# -- sync ------------------------------------------------------------------------------------------

def _sync(args: argparse.Namespace) -> int:
    agent = make_client(args, "bedrock-agent")
    kb = resolve(agent, args.kb)
    sources = s3_data_sources(agent, kb["knowledgeBaseId"])
    if not sources:
        raise Fatal(f"the knowledge base {kb['name']} has no S3 data source to sync")
    if args.folder:
        if len(sources) != 1:
            raise Fatal(f"the knowledge base {kb['name']} has {len(sources)} S3 data sources: --from does not "
                        "know which one to upload into (use `outcrop s3 cp --recursive`, then sync)")
        upload(args, args.folder, source_uri(sources[0]))
    if args.no_wait and len(sources) > 1:
        raise Fatal(f"the knowledge base {kb['name']} has {len(sources)} data sources and runs one ingestion job "
                    "at a time: leave out --no-wait to sync them one after another")
    keep_progress(agent)
    failed = False
    for source in sources:
        job = agent.start_ingestion_job(knowledgeBaseId=kb["knowledgeBaseId"],
                                        dataSourceId=source["dataSourceId"])["ingestionJob"]
        if args.no_wait:
            _note(f"{kb['name']}/{source['name']}: ingestion job started")
            print(job["ingestionJobId"])
            return 0
        job = follow(agent, job, f"{kb['name']}/{source['name']}")
        report(job, f"{kb['name']}/{source['name']}")
        failed |= job["status"] == "FAILED"
    return 1 if failed else 0


def s3_data_sources(agent, kb_id: str) -> list[dict[str, Any]]:
    """The knowledge base's S3 data sources, in full (ListDataSources' summaries do not say the type);
    CUSTOM ones are fed by IngestKnowledgeBaseDocuments and have nothing to sync."""
    summaries = [s for page in agent.get_paginator("list_data_sources").paginate(knowledgeBaseId=kb_id)
                 for s in page["dataSourceSummaries"]]
    sources = [agent.get_data_source(knowledgeBaseId=kb_id, dataSourceId=s["dataSourceId"])["dataSource"]
               for s in summaries]
    return [s for s in sources if s["dataSourceConfiguration"]["type"] == "S3"]


def source_uri(source: dict[str, Any]) -> str:
    s3 = source["dataSourceConfiguration"]["s3Configuration"]
    prefixes = s3.get("inclusionPrefixes") or [""]
    return f"s3://{s3['bucketArn'].removeprefix('arn:aws:s3:::')}/{prefixes[0]}"


def upload(args: argparse.Namespace, folder: str, destination: str) -> None:
    """`outcrop s3 cp --recursive FOLDER DESTINATION`, through the same code and the same account."""
    from outcrop.cli import s3

    copy = argparse.Namespace(data_dir=args.data_dir, account=None, src=folder, dst=destination, recursive=True)
    if s3._with_store(s3._cp)(copy) != 0:  # it printed why
        raise SystemExit(1)


def follow(agent, job: dict[str, Any], label: str) -> dict[str, Any]:
    """Poll the job until it ends, with a progress bar of documents done once the job reports them."""
    from tqdm import tqdm

    bar = None
    try:
        while True:
            job = agent.get_ingestion_job(knowledgeBaseId=job["knowledgeBaseId"], dataSourceId=job["dataSourceId"],
                                          ingestionJobId=job["ingestionJobId"])["ingestionJob"]
            progress = job.get("progress") or {}
            if bar is None and progress.get("totalDocuments"):
                # The job reports a batch at a time: a rate between two looks would mean nothing.
                bar = tqdm(total=progress["totalDocuments"], desc=label, dynamic_ncols=True,
                           bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} documents{postfix}")
            if bar is not None:
                bar.n = progress.get("documents") or 0
                failed = progress.get("failed") or 0
                bar.set_postfix_str(f"{failed} failed" if failed else "", refresh=False)
                bar.refresh()
            if job["status"] in TERMINAL:
                return job
            time.sleep(POLL_SECONDS)
    finally:
        if bar is not None:
            bar.close()


def keep_progress(agent) -> None:
    """boto3 drops members its model lacks: put Outcrop's `progress` back into GetIngestionJob's result."""
    def keep(http_response, parsed, **_):
        try:
            body = json.loads(http_response.content or b"{}")
        except ValueError:
            return
        progress = (body.get("ingestionJob") or {}).get("progress")
        if progress is not None and "ingestionJob" in parsed:
            parsed["ingestionJob"]["progress"] = progress

    agent.meta.events.register("after-call.bedrock-agent.GetIngestionJob", keep, unique_id="outcrop-kb-progress")


def report(job: dict[str, Any], label: str) -> None:
    statistics = job.get("statistics") or {}
    counts = ", ".join(f"{statistics.get(member, 0)} {word}" for member, word in _STATISTICS)
    print(f"{label}: {job['status']}: {counts}")
    for reason in job.get("failureReasons") or []:
        print(f"  failed: {reason}")


# -- retrieve and ask ------------------------------------------------------------------------------

def retrieval_configuration(args: argparse.Namespace) -> dict[str, Any]:
    vector: dict[str, Any] = {"numberOfResults": args.results}
    if args.search_type:
        vector["overrideSearchType"] = args.search_type
    if args.filter:
        from outcrop.cli.iam import read_document

        try:
            vector["filter"] = json.loads(read_document(args.filter))
        except (OSError, ValueError) as exc:
            raise Fatal(f"--filter is neither JSON nor a JSON file: {exc}") from None
    return {"vectorSearchConfiguration": vector}


def location_uri(location: dict[str, Any], metadata: dict[str, Any] | None = None) -> str:
    """Where a passage came from, whatever the kind of data source."""
    for member, field in (("s3Location", "uri"), ("webLocation", "url"), ("customDocumentLocation", "id"),
                          ("confluenceLocation", "url"), ("salesforceLocation", "url"),
                          ("sharePointLocation", "url"), ("kendraDocumentLocation", "uri")):
        value = (location.get(member) or {}).get(field)
        if value:
            return value
    return str((metadata or {}).get("x-amz-bedrock-kb-source-uri") or location.get("type") or "?")


def snippet(text: str, limit: int = SNIPPET) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit - 3].rstrip() + "..."


def _retrieve(args: argparse.Namespace) -> int:
    runtime = make_client(args, "bedrock-agent-runtime")
    kb = resolve(make_client(args, "bedrock-agent"), args.kb)
    results = runtime.retrieve(knowledgeBaseId=kb["knowledgeBaseId"], retrievalQuery={"text": args.question},
                               retrievalConfiguration=retrieval_configuration(args))["retrievalResults"]
    if args.json:
        print(json.dumps(results, indent=2, ensure_ascii=False, default=str))
        return 0
    if not results:
        _note("no passages found (has the knowledge base been synced? `outcrop kb sync`)")
    for rank, result in enumerate(results, 1):
        score = "-" if result.get("score") is None else f"{result['score']:.4f}"
        print(f"{rank}. {score}  {location_uri(result.get('location') or {}, result.get('metadata'))}")
        print(f"   {snippet((result.get('content') or {}).get('text') or '')}")
    return 0


def _ask(args: argparse.Namespace) -> int:
    runtime = make_client(args, "bedrock-agent-runtime")
    kb = resolve(make_client(args, "bedrock-agent"), args.kb)
    configuration: dict[str, Any] = {"knowledgeBaseId": kb["knowledgeBaseId"],
                                     "modelArn": model_arn(runtime.meta.region_name, args.model),
                                     "retrievalConfiguration": retrieval_configuration(args)}
    inference = {k: v for k, v in (("maxTokens", args.max_tokens), ("temperature", args.temperature))
                 if v is not None}
    if inference:
        configuration["generationConfiguration"] = {"inferenceConfig": {"textInferenceConfig": inference}}
    request: dict[str, Any] = {"input": {"text": args.question}, "retrieveAndGenerateConfiguration": {
        "type": "KNOWLEDGE_BASE", "knowledgeBaseConfiguration": configuration}}
    if args.session:
        request["sessionId"] = args.session
    response = runtime.retrieve_and_generate_stream(**request)
    sources = stream_answer(response["stream"])
    if sources:
        print()  # the answer, a blank line, its sources
    for number, uri in enumerate(sources, 1):
        print(f"[{number}] {uri}")
    if not sources:
        _note("(no passage was cited)")
    _note(f"session: {response['sessionId']}")
    return 0


def stream_answer(stream) -> list[str]:
    """Print the answer as it arrives; return the cited sources, each once, in order of first citation.
    Ctrl-C stops the answer (closing the stream drops the connection, and the server stops generating)."""
    sources: list[str] = []
    try:
        for event in stream:
            text = (event.get("output") or {}).get("text")
            if text:
                sys.stdout.write(text)
                sys.stdout.flush()
            for uri in cited(event.get("citation") or {}):
                if uri not in sources:
                    sources.append(uri)
    except KeyboardInterrupt:
        stream.close()
        print()
        _note("(answer stopped)")
        return sources
    print()
    return sources


def cited(event: dict[str, Any]) -> list[str]:
    """The sources of one citation event (its newer top-level members, or the older nested `citation`)."""
    references = event.get("retrievedReferences") or (event.get("citation") or {}).get("retrievedReferences") or []
    return [location_uri(r.get("location") or {}, r.get("metadata")) for r in references]


# -- list ------------------------------------------------------------------------------------------

def _list(args: argparse.Namespace) -> int:
    agent = make_client(args, "bedrock-agent")
    for page in agent.get_paginator("list_knowledge_bases").paginate():
        for kb in page["knowledgeBaseSummaries"]:
            print(f"{kb['knowledgeBaseId']}  {kb['name']:<30}  {kb['status']:<8}  "
                  f"{kb['updatedAt'].astimezone():%Y-%m-%d %H:%M:%S}")
    return 0
