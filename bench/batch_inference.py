#!/usr/bin/env python
"""Batch inference: N records through one CreateModelInvocationJob against the same N sent one by one.

Ours: a real `outcrop serve`; the records (short questions, each a Titan Text body, greedy, `--max-tokens`
new tokens, on the built-in SmolLM2-135M-Instruct) uploaded as one JSONL file, one batch job, timed from
the create call to status Completed: the job process starting, loading its copy of the model, answering
the records `max_batch_sequences` at a time through the continuous-batching scheduler, writing the outputs.
Its records per second are also given from InProgress (the model loaded) to Completed.
Baseline: the same bodies sent one after another through InvokeModel (boto3) to the same server, its model
loaded beforehand (one warm-up call, not timed), which is what a script without batch inference does.
Both are greedy with the same budget: every record's answer must be the same text, and the count of
identical answers is printed. `--one-by-one N` sends only N of the records (evenly spread) one by one, for a
machine where the whole baseline takes too long (its records/s is steady; the batch side gains from size).
The last line is `ratio <batch records/s / one-by-one records/s>`.

    .venv/bin/python bench/batch_inference.py [--records 1000] [--max-tokens 32] [--one-by-one 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from serve_throughput import (  # noqa: E402
    MODEL_ID,
    free_port,
    print_rows,
    root_key,
    smollm2_gguf,
    start_server,
    stop_server,
)

SUBJECTS = ["the sea", "a volcano", "bread", "the moon", "a river", "winter", "bees", "a library", "trains",
            "the desert", "clocks", "a forest", "salt", "bridges", "rain", "owls", "glass", "music", "maps", "tea"]
ASKS = ["In one sentence, what is {}?", "Name one fact about {}.", "Why do people like {}?",
        "Describe {} in five words.", "What colour is {} usually?"]


def bodies(n: int, max_tokens: int) -> list[dict]:
    """n short prompts (distinct while n <= 100, then numbered), as Titan Text bodies: greedy."""
    out = []
    for i in range(n):
        prompt = ASKS[i % len(ASKS)].format(SUBJECTS[(i // len(ASKS)) % len(SUBJECTS)])
        if i >= len(ASKS) * len(SUBJECTS):
            prompt = f"({i}) {prompt}"
        out.append({"inputText": prompt, "textGenerationConfig": {"maxTokenCount": max_tokens, "temperature": 0}})
    return out


def run_batch(endpoint: str, data_dir: Path, key: tuple[str, str], records: list[dict],
              folder: Path) -> tuple[float, float, list[str]]:
    """(seconds create -> Completed, seconds InProgress -> Completed, each record's answer in order)."""
    import boto3

    def outcrop(*args: str) -> str:
        return subprocess.run([sys.executable, "-m", "outcrop", *args, "--data-dir", str(data_dir)],
                              capture_output=True, text=True, check=True).stdout.strip()

    path = folder / "records.jsonl"
    path.write_text("".join(json.dumps({"recordId": f"r{i:06d}", "modelInput": body}) + "\n"
                            for i, body in enumerate(records)))
    outcrop("s3", "mb", "s3://bench")
    outcrop("s3", "cp", str(path), "s3://bench/in/records.jsonl")
    role = outcrop("iam", "create-role", "--name", "bench", "--s3-access", "bench", "--invoke-models")
    bedrock = boto3.client("bedrock", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key[0],
                           aws_secret_access_key=key[1])
    started = time.perf_counter()
    arn = bedrock.create_model_invocation_job(
        jobName="bench", roleArn=role, modelId=MODEL_ID,
        inputDataConfig={"s3InputDataConfig": {"s3Uri": "s3://bench/in/records.jsonl"}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://bench/out/"}})["jobArn"]
    in_progress = None
    while (job := bedrock.get_model_invocation_job(jobIdentifier=arn))["status"] not in (
            "Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired"):
        if in_progress is None and job["status"] == "InProgress":
            in_progress = time.perf_counter()
        time.sleep(0.1)
    ended = time.perf_counter()
    if job["status"] != "Completed":
        sys.exit(f"the batch job ended {job['status']}: {job.get('message')}")
    output = data_dir / "objects" / "bench" / "out" / arn.rsplit("/", 1)[1] / "records.jsonl.out"
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    errors = [line for line in lines if "error" in line]
    if errors or len(lines) != len(records):
        sys.exit(f"{len(errors)} records failed ({errors[:1]}), {len(lines)} of {len(records)} answered")
    answers = [line["modelOutput"]["results"][0]["outputText"] for line in lines]
    return ended - started, ended - (in_progress or started), answers


def run_one_by_one(endpoint: str, key: tuple[str, str], records: list[dict]) -> tuple[float, list[str]]:
    import boto3
    from botocore.config import Config

    runtime = boto3.client("bedrock-runtime", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id=key[0], aws_secret_access_key=key[1],
                           config=Config(read_timeout=600, retries={"max_attempts": 1}))
    while True:  # the server loads its model: not timed
        try:
            runtime.invoke_model(modelId=MODEL_ID, body=json.dumps(records[0]))
            break
        except runtime.exceptions.ModelNotReadyException:
            time.sleep(1)
    answers = []
    started = time.perf_counter()
    for body in records:
        out = json.loads(runtime.invoke_model(modelId=MODEL_ID, body=json.dumps(body))["body"].read())
        answers.append(out["results"][0]["outputText"])
    return time.perf_counter() - started, answers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1000, help="records on each side (default 1000)")
    parser.add_argument("--max-tokens", type=int, default=32, help="new tokens per record (default 32)")
    parser.add_argument("--one-by-one", type=int, default=None,
                        help="records sent one by one, evenly spread (default: all of them)")
    parser.add_argument("--model-cache-dir", type=Path, default=Path("~/.cache/outcrop-bench"),
                        help="converted weights, kept between runs (default ~/.cache/outcrop-bench)")
    args = parser.parse_args()
    cache_dir = args.model_cache_dir.expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)
    records = bodies(args.records, args.max_tokens)
    from outcrop.inference.loader import convert_gguf

    convert_gguf(smollm2_gguf(), cache_dir)  # converted once, outside both measurements
    print(f"{len(records)} records, {MODEL_ID}, greedy, up to {args.max_tokens} new tokens each", flush=True)
    with tempfile.TemporaryDirectory(prefix="outcrop-bench-") as tmp:
        port, data_dir, log_path = free_port(), Path(tmp) / "data", Path(tmp) / "server.log"
        server = start_server(port, data_dir, cache_dir, log_path, {"OUTCROP_PRELOAD_MODELS": ""})
        endpoint = f"http://127.0.0.1:{port}"
        try:
            key = root_key(data_dir)
            batch_s, working_s, batch_answers = run_batch(endpoint, data_dir, key, records, Path(tmp))
            print(f"batch job: {batch_s:.1f} s from create to Completed ({working_s:.1f} s InProgress)", flush=True)
            step = max(1, len(records) // args.one_by_one) if args.one_by_one else 1
            picked = list(range(0, len(records), step))[:args.one_by_one or len(records)]
            alone_s, alone_answers = run_one_by_one(endpoint, key, [records[i] for i in picked])
        except BaseException:
            print(f"server log:\n{log_path.read_text()[-3000:]}", file=sys.stderr)
            raise
        finally:
            stop_server(server)
    n, m = len(records), len(picked)
    print_rows(("side", "records", "seconds", "records/s"), [
        ("batch job (create to Completed)", str(n), f"{batch_s:.1f}", f"{n / batch_s:.2f}"),
        ("batch job (InProgress to Completed)", str(n), f"{working_s:.1f}", f"{n / working_s:.2f}"),
        ("InvokeModel one by one", str(m), f"{alone_s:.1f}", f"{m / alone_s:.2f}")])
    same = sum(batch_answers[i] == answer for i, answer in zip(picked, alone_answers, strict=True))
    print(f"identical answers: {same} of {m}")
    print(f"ratio {(n / batch_s) / (m / alone_s):.2f}")
    return 0 if same == m else 1


if __name__ == "__main__":
    sys.exit(main())
