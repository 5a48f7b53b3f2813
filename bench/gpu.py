#!/usr/bin/env python
"""Outcrop on vLLM against raw vLLM, on one GPU: the same weights, the same concurrent streaming load.

Run by bench/gpu.sh on a GPU machine (it installs vLLM). 16 concurrent clients each stream `--rounds`
chat requests of `--max-tokens` new tokens: through `outcrop serve` with engine = vllm (ConverseStream,
boto3, SigV4, event streams) and through `vllm serve` (its OpenAI-compatible chat completions, SSE), one
after the other so that they never share the GPU. Printed: tokens/s and time to first token for both, and last
`ratio <outcrop / vllm>` (the goal is at least 0.9).

    .venv-gpu/bin/python bench/gpu.py [--model-dir DIR] [--clients 16] [--rounds 4] [--max-tokens 256]

Without --model-dir: SmolLM2-135M-Instruct, converted from the GGUF that Outcrop ships by Outcrop itself
(the folder both servers load); with it, any Hugging Face folder (Llama 3.2 1B Instruct, say), registered
in Outcrop's catalog under its folder name.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_throughput import (  # noqa: E402 - the benches' shared helpers
    MODEL_ID,
    PROMPTS,
    Side,
    free_port,
    print_table,
    root_key,
    run_concurrent,
    run_ours,
    smollm2_gguf,
    start_server,
    stop_server,
    stream_once,
    wait_until_ready,
)


def vllm_stream_once(port: int, model: str, prompt: str, seed: int, max_tokens: int) -> tuple[float, int]:
    """One streamed chat completion from `vllm serve`: (seconds to the first content, completion tokens)."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                       "temperature": 0.7, "seed": seed, "stream": True,
                       "stream_options": {"include_usage": True}})
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    started = time.perf_counter()
    connection.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    if response.status != 200:
        raise RuntimeError(f"vllm answered {response.status}: {response.read()[:500]!r}")
    ttft, tokens = None, None
    for raw in response:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if chunk.get("choices") and chunk["choices"][0]["delta"].get("content") and ttft is None:
            ttft = time.perf_counter() - started
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
    connection.close()
    if tokens is None:
        raise RuntimeError("vllm's stream ended without usage")
    return (ttft if ttft is not None else time.perf_counter() - started), tokens


def run_vllm(port: int, model: str, server_pid: int, clients: int, rounds: int, max_tokens: int) -> Side:
    return run_concurrent(f"vllm serve, {clients} concurrent", clients, rounds, server_pid,
                          lambda i, n: vllm_stream_once(port, model, PROMPTS[i % len(PROMPTS)], n, max_tokens))


def start_vllm(folder: Path, port: int, max_seqs: int, log_path: Path) -> subprocess.Popen:
    vllm = str(Path(sys.executable).with_name("vllm"))
    process = subprocess.Popen([vllm, "serve", str(folder), "--port", str(port), "--host", "127.0.0.1",
                                "--max-num-seqs", str(max_seqs), "--seed", "0", "--served-model-name", "bench"],
                               stdout=log_path.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"vllm serve exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            pass
        time.sleep(1)
    stop_server(process)
    sys.exit("vllm serve was not ready within 900 s")


def register(data_dir: Path, folder: Path) -> str:
    out = subprocess.run([sys.executable, "-m", "outcrop", "models", "register", folder.name, str(folder),
                          "--data-dir", str(data_dir)], capture_output=True, text=True, check=True)
    return out.stdout.strip().split()[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=None, help="a Hugging Face folder (default: SmolLM2)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--model-cache-dir", type=Path, default=Path("~/.cache/outcrop-bench"))
    args = parser.parse_args()
    cache_dir = args.model_cache_dir.expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)
    from outcrop.inference.loader import convert_gguf

    folder = args.model_dir.resolve() if args.model_dir else convert_gguf(smollm2_gguf(), cache_dir)
    import torch

    print(f"{folder}; {args.clients} clients x {args.rounds} rounds x {args.max_tokens} tokens; "
          f"GPU {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}", flush=True)
    with tempfile.TemporaryDirectory(prefix="outcrop-gpu-bench-") as tmp:
        tmp = Path(tmp)
        port = free_port()
        server = start_server(port, tmp / "data", cache_dir, tmp / "outcrop.log",
                              {"OUTCROP_ENGINE": "vllm", "OUTCROP_MAX_BATCH_SEQUENCES": str(args.clients),
                               "OUTCROP_PRELOAD_MODELS": "" if args.model_dir else MODEL_ID,
                               "OUTCROP_MODEL_LOAD_WAIT_SECONDS": "600"})
        try:
            endpoint, key = f"http://127.0.0.1:{port}", root_key(tmp / "data")
            wait_until_ready(endpoint, timeout=900)
            model = register(tmp / "data", folder) if args.model_dir else MODEL_ID
            import serve_throughput

            serve_throughput.MODEL_ID = model  # stream_once and run_ours name the model by this
            stream_once(serve_throughput.runtime_client(endpoint, key), "Say hello.", 0, 8)  # warm
            ours = run_ours(endpoint, key, server.pid, args.clients, args.rounds, args.max_tokens)
        except BaseException:
            print((tmp / "outcrop.log").read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            stop_server(server)
        vport = free_port()
        vllm = start_vllm(folder, vport, args.clients, tmp / "vllm.log")
        try:
            vllm_stream_once(vport, "bench", "Say hello.", 0, 8)  # warm
            raw = run_vllm(vport, "bench", vllm.pid, args.clients, args.rounds, args.max_tokens)
        finally:
            stop_server(vllm)
    print()
    print_table([ours, raw])
    ratio = ours.tokens_per_s / raw.tokens_per_s if raw.tokens_per_s else float("nan")
    print(f"ratio {ratio:.2f}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
