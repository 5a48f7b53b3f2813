#!/usr/bin/env python
"""An automatic evaluation job against the loop an evaluation library runs: one `generate` per prompt.

Ours: a real `outcrop serve`, one CreateEvaluationJob (QuestionAndAnswer, Builtin.NaturalQuestions from
the local samples, Builtin.Accuracy) on the built-in SmolLM2-135M-Instruct, timed from the create call to
status Completed: the job process starting, loading the model, answering every prompt through the
continuous-batching scheduler, scoring, and writing its outputs and report.
Baseline (fmeval's way, in this process after the server stopped): load the same converted weights,
`model.generate` each prompt in turn through the chat template, then score with the same QA F1.
Both are greedy with the same token budget, so their answers should agree; the agreement is printed.
The last line is `ratio <baseline seconds / ours seconds>`.

    .venv/bin/python bench/evaluation.py [--prompts 48] [--max-tokens 32]
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

from serve_throughput import MODEL_ID, free_port, root_key, smollm2_gguf, start_server, stop_server  # noqa: E402

DATASET = "Builtin.NaturalQuestions"


def run_ours(endpoint: str, data_dir: Path, key: tuple[str, str], max_tokens: int) -> tuple[float, list[str], float]:
    """(seconds from create to Completed, the answers in dataset order, the job's accuracy)."""
    import boto3

    def outcrop(*args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "outcrop", *args, "--data-dir", str(data_dir)],
                                capture_output=True, text=True, check=True)
        return result.stdout.strip()

    outcrop("s3", "mb", "s3://bench")
    role = outcrop("iam", "create-role", "--name", "bench", "--s3-access", "bench", "--invoke-models")
    bedrock = boto3.client("bedrock", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key[0],
                           aws_secret_access_key=key[1])
    params = json.dumps({"inferenceConfig": {"maxTokens": max_tokens, "temperature": 0}})
    started = time.perf_counter()
    arn = bedrock.create_evaluation_job(
        jobName="bench", roleArn=role, outputDataConfig={"s3Uri": "s3://bench/out/"},
        evaluationConfig={"automated": {"datasetMetricConfigs": [{
            "taskType": "QuestionAndAnswer", "dataset": {"name": DATASET}, "metricNames": ["Builtin.Accuracy"]}]}},
        inferenceConfig={"models": [{"bedrockModel": {"modelIdentifier": MODEL_ID, "inferenceParams": params}}]},
    )["jobArn"]
    while (job := bedrock.get_evaluation_job(jobIdentifier=arn))["status"] == "InProgress":
        time.sleep(0.2)
    elapsed = time.perf_counter() - started
    if job["status"] != "Completed":
        sys.exit(f"the evaluation job ended {job['status']}: {job.get('failureMessages')}")
    [output] = list((data_dir / "objects" / "bench" / "out").rglob("*_output.jsonl"))
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    answers = [line["modelResponses"][0]["response"] for line in lines]
    summary = json.loads(next((data_dir / "objects" / "bench" / "out").rglob("report.json")).read_text())
    accuracy = summary["tasks"][0]["metrics"][0]["scores"][MODEL_ID]
    return elapsed, answers, accuracy


def run_sequential(folder: Path, prompts: list[str], answers: list[list[str]],
                   max_tokens: int) -> tuple[float, list[str], float]:
    """The same prompts one `generate` after another, model load included (as the job's is)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from outcrop.evaluation.metrics.builtin import qa_f1

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    outputs = []
    for prompt in prompts:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        encoded = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            generated = model.generate(**encoded, max_new_tokens=max_tokens, do_sample=False,
                                       pad_token_id=tokenizer.eos_token_id)
        outputs.append(tokenizer.decode(generated[0, encoded["input_ids"].shape[1]:], skip_special_tokens=True))
    accuracy = sum(qa_f1(o, a) for o, a in zip(outputs, answers, strict=True)) / len(outputs)
    return time.perf_counter() - started, outputs, accuracy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=48, help="prompts sampled from the dataset (default 48)")
    parser.add_argument("--max-tokens", type=int, default=32, help="answer budget (default 32)")
    parser.add_argument("--samples", type=Path, default=None,
                        help="a folder of built-in dataset samples (default: the ones shipped with Outcrop)")
    parser.add_argument("--model-cache-dir", type=Path, default=Path("~/.cache/outcrop-bench"),
                        help="converted weights, kept between runs (default ~/.cache/outcrop-bench)")
    args = parser.parse_args()
    cache_dir = args.model_cache_dir.expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)

    from outcrop.evaluation import datasets
    from outcrop.inference.loader import convert_gguf

    folder = convert_gguf(smollm2_gguf(), cache_dir)  # converted once, outside both measurements
    with tempfile.TemporaryDirectory(prefix="outcrop-bench-") as tmp:
        samples = args.samples or datasets.PACKAGED_DIR
        records = datasets.load_builtin(datasets.BUILTIN[DATASET], local_dir=samples,
                                        cache_dir=Path(tmp), records=args.prompts)
        print(f"{len(records)} prompts of {DATASET}, {MODEL_ID}, greedy, {args.max_tokens} new tokens", flush=True)
        port, data_dir = free_port(), Path(tmp) / "data"
        log_path = Path(tmp) / "server.log"
        server = start_server(port, data_dir, cache_dir, log_path, {
            "OUTCROP_BUILTIN_DATASETS_DIR": str(samples),
            "OUTCROP_BUILTIN_DATASET_RECORDS": str(args.prompts)})
        try:
            ours_s, ours_answers, ours_accuracy = run_ours(f"http://127.0.0.1:{port}", data_dir, root_key(data_dir),
                                                           args.max_tokens)
        except BaseException:
            print(f"server log:\n{log_path.read_text()[-3000:]}", file=sys.stderr)
            raise
        finally:
            stop_server(server)  # before the baseline: the two must not share the CPUs
    print(f"ours (evaluation job, create to Completed): {ours_s:.1f} s, accuracy {ours_accuracy:.4f}", flush=True)
    base_s, base_answers, base_accuracy = run_sequential(folder, [r.prompt for r in records],
                                                         [list(r.answers) for r in records], args.max_tokens)
    print(f"sequential generate + the same scoring: {base_s:.1f} s, accuracy {base_accuracy:.4f}")
    same = sum(a.strip() == b.strip() for a, b in zip(ours_answers, base_answers, strict=True))
    print(f"identical answers: {same} of {len(records)}")
    print(f"ratio {base_s / ours_s:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
