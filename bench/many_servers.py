#!/usr/bin/env python
"""Two `outcrop serve` processes on one data dir against one: aggregate Converse throughput, same machine, one run.

N servers behind a load balancer share one platform: one data dir, so one database (the catalog, the keys,
the account's on-demand quota, the `servers` presence rows), one object store and one secret. This script
starts two real `outcrop serve` subprocesses on one fresh temp data dir (the second after the first is ready,
so the first creates the secret, the database and the root key), both preloading the model, and warms both
up (a round of `--concurrency` requests each) before anything is timed. Then, with both servers up:

* Converse throughput. `--concurrency` threads, each with its own boto3 bedrock-runtime client (retries off,
  read timeout 600 s), send Converse requests back to back with one fixed prompt, maxTokens `--max-tokens`
  (default 32) and temperature 0, until `--requests` requests are done. Phase A: every client talks to server
  1 (server 2 stays up and idle). Phase B: the same clients, split round-robin over servers 1 and 2 (client i
  talks to server i mod 2). A and B alternate `--repeats` times (A B A B ...) so a change in the machine's
  other load hits both alike; each phase's numbers are summed over its repeats. Printed per phase: requests/s,
  output tokens/s, p50/p95 request latency, the CPU seconds the servers took and what other processes took.
* The coordination cost alone. The same clients call ListFoundationModels (SigV4 authenticated, so the key is
  looked up in the shared database, and the catalog read from it), `--cheap-calls` calls in all, against one
  server and then split over two. Printed: calls/s and p50/p95 latency.

Last lines: `ratio requests/s <B / A>`, `ratio tokens/s <B / A>` and `ratio cheap-call p50 <B / A>`.

    .venv/bin/python bench/many_servers.py --quick       # tiny random Llama, about 2 minutes
    .venv/bin/python bench/many_servers.py               # SmolLM2-135M-Instruct

The model is the built-in `huggingface.smollm2-135m-instruct-v1:0` (loaded in each server), or with `--quick`
a tiny random Llama (tests/helpers.make_endless_llama: make_tiny_llama's model changed so that greedy decoding
never stops early, so every answer is `--max-tokens` long) registered with `outcrop models register` before
the servers start. The quota is set high (OUTCROP_QUOTA_REQUESTS_PER_MINUTE, ..._TOKENS_PER_MINUTE) so it
never throttles, but not off: it is drawn from the database by both servers on every request, which is part of
what is measured. The queue wait is unbounded (OUTCROP_MAX_QUEUE_WAIT_SECONDS 0) so nothing is throttled there.

What to expect: both servers and the clients run on this one machine. Generation is CPU-bound, and each server's
torch uses every core, so on a small machine (2 cores here) two servers split the same cores that one already
used: the ratio is near or below 1 (the two also compete for the cores with their own threads). That is not
the point of the line. It shows that a second server on the same platform adds no coordination overhead that
collapses throughput (a ratio far below 1, or a cheap-call p50 that grows a lot, would), and it scales where
the hardware does: servers on their own cores, machines or GPUs. The load average is printed before and after,
with the busiest processes, because anything else running (tests) takes the same cores.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from knowledge import client, machine_state, outcrop_cli  # noqa: E402
from serve_throughput import (  # noqa: E402
    CpuMeter,
    free_port,
    percentile,
    print_rows,
    root_key,
    start_server,
    stop_server,
    wait_until_ready,
)

SMOLLM2 = "huggingface.smollm2-135m-instruct-v1:0"
TINY = "tiny"
PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
SERVER_ENV = {
    # High enough never to throttle, but on: both servers draw it from the shared database on every request.
    "OUTCROP_QUOTA_REQUESTS_PER_MINUTE": "100000000",
    "OUTCROP_QUOTA_TOKENS_PER_MINUTE": "100000000000",
    "OUTCROP_MAX_QUEUE_WAIT_SECONDS": "0",
}


@dataclass
class Phase:
    """One phase (A: one server, B: two), summed over its repeats."""

    name: str
    servers: int
    requests: int = 0
    output_tokens: int = 0
    wall_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    own_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    other_cpu_s: float = 0.0

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.wall_s if self.wall_s else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.wall_s if self.wall_s else 0.0


def tiny_model(cache_dir: Path) -> Path:
    from tests.helpers import make_endless_llama

    folder = cache_dir / "tiny-endless-llama-1024"
    if not (folder / "config.json").is_file():
        make_endless_llama(folder, context=1024)
    return folder


def drive(name: str, servers: int, pool: list, call, total: int, pids: list[int]) -> Phase:
    """`len(pool)` threads, thread i using pool[i], call `call(client)` (-> output tokens) until `total` calls
    are done; timed from the moment all threads are released."""
    phase = Phase(name, servers)
    barrier = threading.Barrier(len(pool) + 1)
    lock = threading.Lock()
    left = [total]
    results: list[tuple[float, int]] = []
    errors: list[BaseException] = []

    def loop(i: int) -> None:
        barrier.wait()
        while True:
            with lock:
                if left[0] <= 0 or errors:
                    return
                left[0] -= 1
            started = time.perf_counter()
            try:
                tokens = call(pool[i])
            except BaseException as exc:  # reported after the phase, not lost in a thread
                with lock:
                    errors.append(exc)
                return
            with lock:
                results.append((time.perf_counter() - started, tokens))

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(len(pool))]
    for thread in threads:
        thread.start()
    meter = CpuMeter(*pids)
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    phase.wall_s = time.perf_counter() - started
    meter.stop(phase)  # the servers' CPU s, and the rest: everything but us and the servers
    if errors:
        raise RuntimeError(f"{name}: {len(errors)} requests failed; the first: {errors[0]!r}")
    phase.requests = len(results)
    phase.output_tokens = sum(tokens for _, tokens in results)
    phase.latencies = [seconds for seconds, _ in results]
    return phase


def merge(into: Phase | None, phase: Phase) -> Phase:
    if into is None:
        return phase
    into.requests += phase.requests
    into.output_tokens += phase.output_tokens
    into.wall_s += phase.wall_s
    into.latencies += phase.latencies
    into.server_cpu_s += phase.server_cpu_s
    into.other_cpu_s += phase.other_cpu_s
    return into


def print_table(phases: list[Phase], unit: str) -> None:
    print_rows(("phase", "servers", unit, "out tokens", "wall s", f"{unit}/s", "tokens/s", "p50 s", "p95 s",
                "server CPU s", "other CPU s"),
               [(p.name, str(p.servers), str(p.requests), str(p.output_tokens), f"{p.wall_s:.2f}",
                 f"{p.requests_per_s:.2f}", f"{p.tokens_per_s:.1f}", f"{percentile(p.latencies, 50):.3f}",
                 f"{percentile(p.latencies, 95):.3f}", f"{p.server_cpu_s:.1f}", f"{p.other_cpu_s:.1f}")
                for p in phases])


def ratio(b: float, a: float) -> float:
    return b / a if a else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="the tiny random Llama (unless --model says otherwise), one repeat")
    parser.add_argument("--requests", type=int, default=64, help="Converse requests per phase and repeat (default 64)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--max-tokens", type=int, default=32, help="maxTokens of every request (default 32)")
    parser.add_argument("--model", default=None,
                        help=f"a model id, or '{TINY}' for the tiny random Llama (default {SMOLLM2}; {TINY} "
                             "with --quick)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="A/B alternations (default 2; 1 with --quick)")
    parser.add_argument("--cheap-calls", type=int, default=400,
                        help="ListFoundationModels calls per phase (default 400)")
    parser.add_argument("--model-cache-dir", type=Path, default=Path("~/.cache/outcrop-bench"),
                        help="converted weights and the tiny model, kept between runs (default ~/.cache/outcrop-bench)")
    args = parser.parse_args()
    # SIGTERM (timeout, kill) unwinds like Ctrl-C, so the servers are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    model = args.model or (TINY if args.quick else SMOLLM2)
    repeats = args.repeats or (1 if args.quick else 2)
    cache_dir = args.model_cache_dir.expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)

    print(f"before: {machine_state()}", flush=True)
    print("note: other processes on this machine share its cores with the servers; their CPU seconds are in "
          "the 'other CPU s' column", flush=True)
    with tempfile.TemporaryDirectory(prefix="outcrop-many-") as tmp:
        data_dir = Path(tmp) / "data"
        if model == TINY:
            model_id = outcrop_cli(data_dir, "models", "register", "bench-tiny", str(tiny_model(cache_dir)))
        else:
            model_id = model
        env = {**SERVER_ENV, "OUTCROP_PRELOAD_MODELS": model_id}
        print(f"model {model_id}; {args.concurrency} clients, {args.requests} Converse requests per phase x "
              f"{repeats} repeats, maxTokens {args.max_tokens}, temperature 0; both servers on {data_dir}",
              flush=True)
        servers: list[subprocess.Popen] = []
        logs = [Path(tmp) / f"server{i + 1}.log" for i in range(2)]
        try:
            endpoints = []
            for log_path in logs:  # one after the other: the first creates the secret, the database, the key
                port = free_port()
                servers.append(start_server(port, data_dir, cache_dir, log_path, env))
                endpoints.append(f"http://127.0.0.1:{port}")
                ready = wait_until_ready(endpoints[-1])
                print(f"server {len(servers)} (pid {servers[-1].pid}) ready (model preloaded) after {ready:.1f} s",
                      flush=True)
            key = root_key(data_dir)
            pids = [server.pid for server in servers]

            def converse(c) -> int:
                response = c.converse(modelId=model_id, messages=[{"role": "user", "content": [{"text": PROMPT}]}],
                                      inferenceConfig={"maxTokens": args.max_tokens, "temperature": 0})
                return response["usage"]["outputTokens"]

            def list_models(c) -> int:
                c.list_foundation_models()
                return 0

            # Clients are made here, one by one: making boto3 clients concurrently is not thread-safe.
            n = args.concurrency
            one = [client("bedrock-runtime", endpoints[0], key) for _ in range(n)]
            two = [client("bedrock-runtime", endpoints[i % 2], key) for i in range(n)]
            one_cheap = [client("bedrock", endpoints[0], key) for _ in range(n)]
            two_cheap = [client("bedrock", endpoints[i % 2], key) for i in range(n)]

            started = time.perf_counter()
            for pool in ([one[0]], [two[1]]):  # loads nothing (preloaded), but the first request is slower
                drive("warm-up", 1, pool, converse, 1, pids)
            drive("warm-up", 1, one, converse, n, pids)
            drive("warm-up", 2, two, converse, 2 * n, pids)
            drive("warm-up", 2, two_cheap, list_models, 4 * n, pids)
            print(f"warm-up {time.perf_counter() - started:.1f} s", flush=True)

            a = b = None
            for r in range(repeats):
                for phase in (drive("A: one server", 1, one, converse, args.requests, pids),
                              drive("B: two servers", 2, two, converse, args.requests, pids)):
                    print(f"  {phase.name}: {phase.requests} requests in {phase.wall_s:.1f} s, "
                          f"{phase.tokens_per_s:.1f} tokens/s", flush=True)
                    if phase.servers == 1:
                        a = merge(a, phase)
                    else:
                        b = merge(b, phase)
                print(f"repeat {r + 1}/{repeats} done; load {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
                      flush=True)
            cheap_a = drive("A: one server", 1, one_cheap, list_models, args.cheap_calls, pids)
            cheap_b = drive("B: two servers", 2, two_cheap, list_models, args.cheap_calls, pids)
        except BaseException:
            for log_path in logs:
                if log_path.exists():
                    print(f"{log_path.name}:\n{log_path.read_text()[-3000:]}", file=sys.stderr)
            raise
        finally:
            for server in reversed(servers):
                stop_server(server)

    print(f"\nafter: {machine_state()}\n")
    print(f"Converse ({model_id}, maxTokens {args.max_tokens}, {args.concurrency} clients):")
    print_table([a, b], "requests")
    print(f"\nListFoundationModels ({args.concurrency} clients):")
    print_table([cheap_a, cheap_b], "calls")
    cpu_total = (a.wall_s + b.wall_s + cheap_a.wall_s + cheap_b.wall_s) * (os.cpu_count() or 1)
    other = a.other_cpu_s + b.other_cpu_s + cheap_a.other_cpu_s + cheap_b.other_cpu_s
    if other > 0.1 * cpu_total:
        print(f"\nWARNING: other processes took {other:.0f} of {cpu_total:.0f} CPU s in the measured phases; "
              "these numbers are not reliable")
    print(f"\n{os.cpu_count()} CPUs: both servers share them, so for CPU-bound generation a ratio near or below 1 "
          "is expected here; it shows no coordination overhead collapsing throughput, not the scaling that "
          "servers on their own cores or GPUs get.")
    print(f"ratio requests/s {ratio(b.requests_per_s, a.requests_per_s):.2f}")
    print(f"ratio tokens/s {ratio(b.tokens_per_s, a.tokens_per_s):.2f}")
    print(f"ratio cheap-call p50 {ratio(percentile(cheap_b.latencies, 50), percentile(cheap_a.latencies, 50)):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
