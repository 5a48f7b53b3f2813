#!/usr/bin/env python
"""Throughput of `outcrop serve` under concurrent load against a sequential `generate` loop.

16 concurrent boto3 clients each stream Converse requests for 64 new tokens from the built-in
SmolLM2-135M-Instruct, back to back for `--rounds` rounds, against a real `outcrop serve` subprocess.
Then the server is stopped and, in this process, the same converted weights run the same prompts
one after another through `model.generate`. Printed: requests, output tokens, wall time, aggregate
tokens/s and time to first token (p50, p95) for both, and last the line `ratio <ours / sequential>`.
The goal is a ratio of at least 5.

    .venv/bin/python bench/serve_throughput.py [--rounds 2] [--baseline-requests 8] [--json out.json]

The llama.cpp engine against llama.cpp itself: `--engines transformers,llama.cpp --clients-list 1,4,16,32` runs
the server once per engine (OUTCROP_ENGINE) and measures each client count on it; `--llama-baseline` adds
llama-cpp-python's own `Llama` (one request at a time, the way a llama.cpp user serves one stream) on the same
GGUF file, with the same prompts, sampling and token budget. Both need llama-cpp-python installed.

The server's GGUF -> safetensors conversion is cached in `--model-cache-dir`, so only the first run
pays for it; model loading is never part of a measurement (both sides warm up first).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

MODEL_ID = "huggingface.smollm2-135m-instruct-v1:0"
TEMPERATURE = 0.7
TOP_P = 0.9  # the server's default topP, given explicitly to the baseline

PROMPTS = [
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Write a short story about a robot learning to bake bread.",
    "Describe, in detail, a walk through a busy market in the morning.",
    "Write a short story about two friends lost in a snowy forest.",
    "Explain how a city changes over a hundred years, decade by decade.",
    "Write a short story about a dragon who is afraid of heights.",
    "Describe a thunderstorm over the ocean from the point of view of a sailor.",
    "Write a short story about a child who discovers a hidden door in the library.",
    "Write a letter from a traveller to their family describing a long train journey.",
    "Write a short story about a cat who wants to become the mayor of a small town.",
    "Describe the life of a honeybee from spring to autumn.",
    "Write a short story about an old clockmaker and a clock that runs backwards.",
    "Write a short story about the last day of summer at a seaside village.",
    "Describe how you would plan a garden that blooms all year round.",
    "Write a short story about an astronaut who hears music on the moon.",
    "Write a short story about a baker, a secret recipe and a rival across the street.",
]


@dataclass
class Side:
    """One side of the comparison, as printed and as written to --json."""

    name: str
    requests: int = 0
    output_tokens: int = 0
    wall_s: float = 0.0
    ttft_s: list[float] = field(default_factory=list)
    #: CPU seconds during the measured phase: this process (the boto3 clients, or the baseline model),
    #: the server (ours only), and everything else on the machine, which should be close to 0.
    own_cpu_s: float = 0.0
    server_cpu_s: float | None = None
    other_cpu_s: float | None = None

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.wall_s if self.wall_s else 0.0

    def summary(self) -> dict:
        return {"name": self.name, "requests": self.requests, "output_tokens": self.output_tokens,
                "wall_s": round(self.wall_s, 3), "tokens_per_s": round(self.tokens_per_s, 2),
                "ttft_p50_s": round(percentile(self.ttft_s, 50), 3),
                "ttft_p95_s": round(percentile(self.ttft_s, 95), 3),
                "own_cpu_s": round(self.own_cpu_s, 2),
                "server_cpu_s": None if self.server_cpu_s is None else round(self.server_cpu_s, 2),
                "other_cpu_s": None if self.other_cpu_s is None else round(self.other_cpu_s, 2)}

    def cpu_report(self) -> str:
        parts = [f"{self.name}: {self.wall_s:.1f} s wall; CPU s used: this process {self.own_cpu_s:.1f}"]
        if self.server_cpu_s is not None:
            parts.append(f"server {self.server_cpu_s:.1f}")
        if self.other_cpu_s is not None:
            parts.append(f"other processes {self.other_cpu_s:.1f}")
        line = ", ".join(parts)
        if self.other_cpu_s is not None and self.other_cpu_s > 0.1 * self.wall_s * (os.cpu_count() or 1):
            line += "\nWARNING: other processes took a noticeable share of the CPUs; these numbers are not reliable"
        return line


class CpuMeter:
    """CPU seconds spent by the machine, this process and (optionally) other processes (the servers) during a
    phase.

    Read from /proc (Linux); elsewhere only this process's time is known.
    """

    def __init__(self, *pids: int | None) -> None:
        self.pids = [pid for pid in pids if pid is not None]
        self._start = self._read()

    @staticmethod
    def _machine() -> float | None:
        try:
            with open("/proc/stat") as fh:
                fields = [int(v) for v in fh.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        busy = sum(fields[:8]) - fields[3] - fields[4]  # all but idle and iowait
        return busy / os.sysconf("SC_CLK_TCK")

    def _processes(self) -> float | None:
        times = [process_cpu_s(pid) for pid in self.pids]
        return None if not times or None in times else sum(times)

    def _read(self) -> tuple[float | None, float, float | None]:
        return self._machine(), time.process_time(), self._processes()

    def stop(self, side) -> None:  # noqa: ANN001 - any record with own_cpu_s, server_cpu_s, other_cpu_s
        machine, own, servers = self._read()
        side.own_cpu_s = own - self._start[1]
        if servers is not None and self._start[2] is not None:
            side.server_cpu_s = servers - self._start[2]
        if machine is not None and self._start[0] is not None:
            side.other_cpu_s = max(0.0, machine - self._start[0] - side.own_cpu_s - (side.server_cpu_s or 0.0))


def process_cpu_s(pid: int) -> float | None:
    """utime + stime of a process, from /proc (None where there is none)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def smollm2_gguf() -> Path:
    """The GGUF file of the built-in chat model, found the way the catalog finds it (without importing it)."""
    import importlib.util

    from outcrop.catalog.cards import builtin_cards

    card = next(c for c in builtin_cards() if c.model_id == MODEL_ID)
    spec = importlib.util.find_spec(card.source.package)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"the package {card.source.package} (the weights of {MODEL_ID}) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / card.source.file


# -- ours: a real `outcrop serve` under concurrent ConverseStream load -----------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port: int, data_dir: Path, cache_dir: Path, log_path: Path,
                 extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "OUTCROP_MODEL_CACHE_DIR": str(cache_dir), "OUTCROP_LOG_LEVEL": "warning",
           **(extra_env or {})}
    env.pop("OUTCROP_DATA_DIR", None)
    log = log_path.open("w")
    process = subprocess.Popen([sys.executable, "-m", "outcrop", "serve", "--port", str(port),
                                "--data-dir", str(data_dir)], stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"outcrop serve exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process
        except OSError:
            time.sleep(0.2)
    stop_server(process)
    sys.exit(f"outcrop serve did not listen on port {port} within 120 s")


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def root_key(data_dir: Path) -> tuple[str, str]:
    """The root access key the server wrote to `<data dir>/credentials` (profile outcrop) when it started."""
    import configparser

    parser = configparser.ConfigParser()
    parser.read(data_dir / "credentials")
    if not parser.has_section("outcrop"):
        sys.exit(f"the server wrote no profile outcrop to {data_dir / 'credentials'}")
    return parser["outcrop"]["aws_access_key_id"], parser["outcrop"]["aws_secret_access_key"]


def runtime_client(endpoint: str, key: tuple[str, str]):
    import boto3
    from botocore.config import Config

    return boto3.client("bedrock-runtime", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=key[0], aws_secret_access_key=key[1],
                        config=Config(max_pool_connections=32, read_timeout=600, retries={"max_attempts": 1}))


def stream_once(client, prompt: str, seed: int, max_tokens: int) -> tuple[float, int]:
    """One ConverseStream request: (seconds to the first text delta, output tokens from the usage)."""
    started = time.perf_counter()
    response = client.converse_stream(
        modelId=MODEL_ID, messages=[{"role": "user", "content": [{"text": prompt}]}],
        inferenceConfig={"maxTokens": max_tokens, "temperature": TEMPERATURE},
        additionalModelRequestFields={"seed": seed})
    ttft, tokens = None, None
    for event in response["stream"]:
        if "contentBlockDelta" in event and ttft is None and event["contentBlockDelta"]["delta"].get("text"):
            ttft = time.perf_counter() - started
        elif "metadata" in event:
            tokens = event["metadata"]["usage"]["outputTokens"]
    if tokens is None:
        raise RuntimeError("the stream ended without its metadata event")
    return (ttft if ttft is not None else time.perf_counter() - started), tokens


def run_ours(endpoint: str, key: tuple[str, str], server_pid: int, clients: int, rounds: int,
             max_tokens: int) -> Side:
    # Clients are made here, one per thread: making boto3 clients concurrently is not thread-safe.
    pool = [runtime_client(endpoint, key) for _ in range(clients)]
    return run_concurrent(
        f"outcrop serve, {clients} concurrent", clients, rounds, server_pid,
        lambda i, n: stream_once(pool[i], PROMPTS[i % len(PROMPTS)], n, max_tokens))


def run_concurrent(name: str, clients: int, rounds: int, server_pid: int | None,
                   call: Callable[[int, int], tuple[float, int]]) -> Side:
    """`clients` threads, each making `rounds` calls back to back: `call(client, n)` answers (seconds to the first
    token, output tokens), with n different for every request (its seed); the prompt is the client's own."""
    side = Side(name)
    barrier = threading.Barrier(clients + 1)
    results: list[tuple[float, int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def client_loop(i: int) -> None:
        barrier.wait()
        try:
            for r in range(rounds):
                outcome = call(i, i + r * clients)
                with lock:
                    results.append(outcome)
        except BaseException as exc:  # reported after the phase, not lost in a thread
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    meter, started = CpuMeter(server_pid), time.perf_counter()
    for thread in threads:
        thread.join()
    side.wall_s = time.perf_counter() - started
    meter.stop(side)  # the clients share the machine with the server: how much CPU they (and others) took
    if errors:
        raise RuntimeError(f"{len(errors)} of the concurrent requests failed; the first: {errors[0]!r}")
    side.requests = len(results)
    side.output_tokens = sum(tokens for _, tokens in results)
    side.ttft_s = [ttft for ttft, _ in results]
    return side


# -- many more clients than places in the batch: latency as a default boto3 client sees it -----------

def wait_until_ready(endpoint: str, timeout: float = 600) -> float:
    """Seconds until GET /_outcrop/health answers 200: the server preloads its models in the background, and a
    request sent before that waits at most model_load_wait_seconds (then ModelNotReadyException)."""
    import urllib.error
    import urllib.request

    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        try:
            with urllib.request.urlopen(endpoint + "/_outcrop/health", timeout=10) as response:
                if response.status == 200:
                    return time.perf_counter() - started
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    sys.exit(f"the server was not ready within {timeout} s")


def run_burst(cache_dir: Path, clients: int, max_tokens: int, queue_wait: str) -> dict:
    """`clients` boto3 clients send one Converse each, all at once, with boto3's default configuration (60 s
    read timeout, standard retries: 3 attempts with backoff), so a retried request's latency counts every
    attempt and its backoff. With max_batch_sequences 16, half of 32 clients wait for a place: with
    `queue_wait` "0" (no bound, as before) they wait until the first half is done, however long; with a bound
    they are answered ThrottlingException in time and retry. Printed: p50/p95 latency, the answers, and the
    share of attempts answered ThrottlingException. Nothing else runs meanwhile but the server and these
    clients (their CPU use is printed too: on a small machine they compete with the model)."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    with tempfile.TemporaryDirectory(prefix="outcrop-burst-") as tmp:
        port, data_dir = free_port(), Path(tmp) / "data"
        log_path = Path(tmp) / "server.log"
        server = start_server(port, data_dir, cache_dir, log_path, {"OUTCROP_MAX_QUEUE_WAIT_SECONDS": queue_wait})
        try:
            endpoint, key = f"http://127.0.0.1:{port}", root_key(data_dir)
            wait_until_ready(endpoint)
            attempts: dict[str, int] = {}
            lock = threading.Lock()

            def count_attempt(response=None, **_) -> None:  # every attempt's answer, retried or not
                code = "timeout or connection error"
                if response is not None:
                    code = response[1].get("Error", {}).get("Code") or "answered"
                with lock:
                    attempts[code] = attempts.get(code, 0) + 1

            pool = []
            for _ in range(clients):  # made here, one per thread: making clients concurrently is not thread-safe
                client = boto3.client("bedrock-runtime", endpoint_url=endpoint, region_name="us-east-1",
                                      aws_access_key_id=key[0], aws_secret_access_key=key[1],
                                      config=Config(retries={"mode": "standard"}))
                client.meta.events.register("needs-retry.bedrock-runtime.Converse", count_attempt)
                pool.append(client)
            outcomes: list[tuple[str, float]] = []
            barrier = threading.Barrier(clients + 1)

            def ask(i: int) -> None:
                barrier.wait()
                started = time.perf_counter()
                try:
                    pool[i].converse(modelId=MODEL_ID, messages=[{"role": "user", "content": [{"text": PROMPTS[
                        i % len(PROMPTS)]}]}], inferenceConfig={"maxTokens": max_tokens, "temperature": TEMPERATURE})
                    outcome = "answered"
                except ClientError as exc:
                    outcome = exc.response["Error"]["Code"]
                except BotoCoreError as exc:
                    outcome = type(exc).__name__
                with lock:
                    outcomes.append((outcome, time.perf_counter() - started))

            threads = [threading.Thread(target=ask, args=(i,), daemon=True) for i in range(clients)]
            for thread in threads:
                thread.start()
            barrier.wait()
            side, meter, started = Side(f"burst {clients}"), CpuMeter(server.pid), time.perf_counter()
            for thread in threads:
                thread.join()
            side.wall_s = time.perf_counter() - started
            meter.stop(side)
        finally:
            stop_server(server)
    latencies = [seconds for _, seconds in outcomes]
    answers = {kind: sum(1 for k, _ in outcomes if k == kind) for kind in sorted({k for k, _ in outcomes})}
    total_attempts = sum(attempts.values())
    result = {"clients": clients, "max_queue_wait_seconds": queue_wait, "p50_s": round(percentile(latencies, 50), 2),
              "p95_s": round(percentile(latencies, 95), 2), "max_s": round(max(latencies), 2), "answers": answers,
              "attempts": attempts, "throttled_share": round(attempts.get("ThrottlingException", 0)
                                                             / max(total_attempts, 1), 3)}
    bound = "no bound" if float(queue_wait) == 0 else f"max_queue_wait_seconds {queue_wait}"
    print(f"{clients} concurrent Converse clients, {bound}: latency p50 {result['p50_s']:.1f} s, "
          f"p95 {result['p95_s']:.1f} s, max {result['max_s']:.1f} s; answers {answers}; attempts {attempts} "
          f"({result['throttled_share']:.0%} ThrottlingException)\n  {side.cpu_report()}", flush=True)
    return result


# -- the baseline: the same model, one `generate` after another, in this process --------------------

def run_sequential(folder: Path, requests: int, max_tokens: int) -> Side:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, LogitsProcessorList

    class FirstCall(LogitsProcessor):
        """Time to first token: `generate` calls its logits processors once per new token, the first time
        right after the prompt's forward pass (prefill) and before the first token is sampled."""

        def __init__(self) -> None:
            self.at: float | None = None

        def __call__(self, input_ids, scores):
            if self.at is None:
                self.at = time.perf_counter()
            return scores

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    eos = tokenizer.eos_token_id
    side = Side("transformers generate, sequential")

    def generate(prompt: str, seed: int, new_tokens: int) -> tuple[float, int, float]:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        encoded = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        first = FirstCall()
        torch.manual_seed(seed)
        started = time.perf_counter()
        with torch.inference_mode():
            output = model.generate(**encoded, max_new_tokens=new_tokens, do_sample=True, temperature=TEMPERATURE,
                                    top_p=TOP_P, top_k=0,  # top_k 0: no top-k, as the server samples
                                    pad_token_id=eos, logits_processor=LogitsProcessorList([first]))
        elapsed = time.perf_counter() - started
        new = output[0, encoded["input_ids"].shape[1]:].tolist()
        if new and new[-1] == eos:  # the server does not count the end-of-text token either
            new = new[:-1]
        return (first.at or time.perf_counter()) - started, len(new), elapsed

    return one_at_a_time(side, generate, requests, max_tokens)


def one_at_a_time(side: Side, generate: Callable[[str, int, int], tuple[float, int, float]], requests: int,
                  max_tokens: int) -> Side:
    """`requests` calls of `generate(prompt, seed, new tokens) -> (TTFT, tokens, seconds)`, one after another,
    after one unmeasured warm-up call (as the server's first request)."""
    generate(PROMPTS[0], 0, 4)
    meter = CpuMeter()
    for i in range(requests):
        ttft, tokens, elapsed = generate(PROMPTS[i % len(PROMPTS)], i, max_tokens)
        side.requests += 1
        side.output_tokens += tokens
        side.wall_s += elapsed
        side.ttft_s.append(ttft)
    meter.stop(side)
    return side


def run_llama_single(gguf: Path, requests: int, max_tokens: int) -> Side:
    """llama-cpp-python's own `Llama` on the GGUF file, one streamed chat request after another (its default
    context and threads; the chat template is the GGUF's)."""
    from llama_cpp import Llama

    llama = Llama(model_path=str(gguf), n_ctx=2048, n_threads=os.cpu_count(), verbose=False)
    side = Side("llama.cpp (llama-cpp-python), one at a time")

    def generate(prompt: str, seed: int, new_tokens: int) -> tuple[float, int, float]:
        started = time.perf_counter()
        first, tokens = None, 0
        for chunk in llama.create_chat_completion([{"role": "user", "content": prompt}], max_tokens=new_tokens,
                                                  temperature=TEMPERATURE, top_p=TOP_P, top_k=0, seed=seed,
                                                  stream=True):
            if chunk["choices"][0]["delta"].get("content"):
                first = first or time.perf_counter() - started
                tokens += 1  # one chunk a token
        return first or time.perf_counter() - started, tokens, time.perf_counter() - started

    return one_at_a_time(side, generate, requests, max_tokens)


def compare_engines(args: argparse.Namespace, cache_dir: Path) -> int:
    """Each engine's server at each client count, then (optionally) llama.cpp one request at a time."""
    engines = (args.engines or "auto").split(",")
    counts = [int(c) for c in (args.clients_list or str(args.clients)).split(",")]
    sides: list[Side] = []
    for engine in engines:
        with tempfile.TemporaryDirectory(prefix="outcrop-bench-") as tmp:
            port, log_path, data_dir = free_port(), Path(tmp) / "server.log", Path(tmp) / "data"
            server = start_server(port, data_dir, cache_dir, log_path, {"OUTCROP_ENGINE": engine,
                                                                       "OUTCROP_LOG_LEVEL": "info"})
            try:
                endpoint, key = f"http://127.0.0.1:{port}", root_key(data_dir)
                wait_until_ready(endpoint)
                stream_once(runtime_client(endpoint, key), "Say hello.", 0, 8)
                for clients in counts:
                    side = run_ours(endpoint, key, server.pid, clients, args.rounds, args.max_tokens)
                    side.name = f"outcrop serve ({engine}), {clients} concurrent"
                    print(side.cpu_report(), flush=True)
                    sides.append(side)
            except BaseException:
                print(f"server log ({log_path}):\n{log_path.read_text()[-3000:]}", file=sys.stderr)
                raise
            finally:
                stop_server(server)
    baselines: list[Side] = []
    if args.llama_baseline:
        from outcrop.inference.llama_cpp import f16_copy

        # The GGUF file as shipped (Q4_1, the baseline), and the F16 copy Outcrop's llama.cpp engine serves
        # (at 135M parameters the Q4_1 file answers word salad on llama.cpp's kernels): the same work per token.
        gguf = smollm2_gguf()
        for path, name in ((gguf, "llama.cpp (llama-cpp-python), one at a time"),
                           (f16_copy(gguf, cache_dir), "llama.cpp on the F16 copy, one at a time")):
            single = run_llama_single(path, args.baseline_requests, args.max_tokens)
            single.name = name
            print(single.cpu_report(), flush=True)
            baselines.append(single)
    print()
    print_table(sides + baselines)
    if args.json:
        args.json.write_text(json.dumps({"model_id": MODEL_ID, "max_tokens": args.max_tokens, "rounds": args.rounds,
                                         "sides": [s.summary() | {"ttft_s": s.ttft_s} for s in sides + baselines]},
                                        indent=2) + "\n")
    if baselines and sides:
        best = max(sides, key=lambda s: s.tokens_per_s)
        for baseline in baselines:
            print(f"ratio {best.tokens_per_s / baseline.tokens_per_s:.2f}  ({best.name} / {baseline.name})")
    return 0


# -- main --------------------------------------------------------------------------------------------

def print_table(sides: list[Side]) -> None:
    print_rows(("side", "requests", "out tokens", "wall s", "tokens/s", "TTFT p50 s", "TTFT p95 s"),
               [(s.name, str(s.requests), str(s.output_tokens), f"{s.wall_s:.2f}", f"{s.tokens_per_s:.1f}",
                 f"{percentile(s.ttft_s, 50):.3f}", f"{percentile(s.ttft_s, 95):.3f}") for s in sides])


def print_rows(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """A plain-text table: the first column left-aligned, the others right-aligned."""
    rows = [header, *rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        pairs = enumerate(zip(row, widths, strict=True))
        print("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in pairs))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    parser.add_argument("--rounds", type=int, default=2, help="requests each client sends back to back (default 2)")
    parser.add_argument("--max-tokens", type=int, default=64, help="new tokens per request (default 64)")
    parser.add_argument("--baseline-requests", type=int, default=8,
                        help="requests in the sequential baseline (default 8)")
    parser.add_argument("--model-cache-dir", type=Path, default=Path("~/.cache/outcrop-bench"),
                        help="converted weights, kept between runs (default ~/.cache/outcrop-bench)")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the numbers here")
    parser.add_argument("--engines", default=None, metavar="LIST",
                        help="server engines to measure, e.g. transformers,llama.cpp (default: the server's own)")
    parser.add_argument("--clients-list", default=None, metavar="LIST",
                        help="client counts to measure each engine at, e.g. 1,4,16,32 (default: --clients)")
    parser.add_argument("--llama-baseline", action="store_true",
                        help="also llama-cpp-python's Llama, one request at a time, on the same GGUF file")
    parser.add_argument("--burst-clients", type=int, default=32,
                        help="then this many clients at once, bounded queue wait against none (0: skip; default 32)")
    args = parser.parse_args()
    cache_dir = args.model_cache_dir.expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)

    import torch

    print(f"model {MODEL_ID}, {args.max_tokens} new tokens per request, temperature {TEMPERATURE}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs", flush=True)
    if args.engines or args.clients_list or args.llama_baseline:
        return compare_engines(args, cache_dir)
    with tempfile.TemporaryDirectory(prefix="outcrop-bench-") as tmp:
        port = free_port()
        log_path = Path(tmp) / "server.log"
        data_dir = Path(tmp) / "data"
        server = start_server(port, data_dir, cache_dir, log_path)
        try:
            endpoint, key = f"http://127.0.0.1:{port}", root_key(data_dir)
            print(f"server ready (preloaded) after {wait_until_ready(endpoint):.1f} s", flush=True)
            started = time.perf_counter()
            stream_once(runtime_client(endpoint, key), "Say hello.", 0, 8)  # loads (and first time converts) the model
            print(f"server warm-up (model load) {time.perf_counter() - started:.1f} s; "
                  f"{args.clients} clients x {args.rounds} rounds ...", flush=True)
            ours = run_ours(endpoint, key, server.pid, args.clients, args.rounds, args.max_tokens)
            print(ours.cpu_report(), flush=True)
        except BaseException:
            print(f"server log ({log_path}):\n{log_path.read_text()[-3000:]}", file=sys.stderr)
            raise
        finally:
            stop_server(server)  # before the baseline: the two must not share the CPUs

    from outcrop.inference.loader import convert_gguf

    folder = convert_gguf(smollm2_gguf(), cache_dir)  # the folder the server loaded
    print(f"sequential baseline: {args.baseline_requests} requests from {folder} ...", flush=True)
    sequential = run_sequential(folder, args.baseline_requests, args.max_tokens)
    print(sequential.cpu_report(), flush=True)

    from outcrop.platform.config import Settings

    bursts = [run_burst(cache_dir, args.burst_clients, args.max_tokens, wait)  # no bound (as before), the default
              for wait in ("0", str(Settings().max_queue_wait_seconds))] if args.burst_clients else []

    print()
    print_table([ours, sequential])
    ratio = ours.tokens_per_s / sequential.tokens_per_s if sequential.tokens_per_s else float("nan")
    if args.json:
        args.json.write_text(json.dumps({"model_id": MODEL_ID, "max_tokens": args.max_tokens,
                                         "clients": args.clients, "rounds": args.rounds,
                                         "ours": ours.summary(), "sequential": sequential.summary(),
                                         "ours_ttft_s": ours.ttft_s, "sequential_ttft_s": sequential.ttft_s,
                                         "bursts": bursts, "ratio": round(ratio, 2)}, indent=2) + "\n")
    print(f"ratio {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
