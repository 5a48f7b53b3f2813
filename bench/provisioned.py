#!/usr/bin/env python
"""Provisioned throughput: memory of N adapter-backed models against N full copies, and 1 MU against 2 MUs.

Part 1, memory (in this machine's processes, no server): a random Llama of a few tens of MB (or, with
`--smollm2`, the converted SmolLM2-135M-Instruct) and `--adapters` random LoRA adapters of it saved with
PEFT, each with the tokenizer as the trainer saves it. One subprocess loads all N through an `Engine`
(`engine.get(adapter, base=base)`: one shared copy of the base, N small adapters); another keeps N
`load_causal_lm(adapter, ..., base=base)` models alive at once (each adapter merged into a private full
copy of its base). Each reports the bytes of parameters it holds and its RSS growth, and the greedy next
token of one prompt per adapter, which must be the same on both sides.

Part 2, throughput (a real `outcrop serve`): the same base registered as a local model and provisioned
twice through boto3, with 1 and with 2 model units (one unit = 2 concurrent sequences); 8 concurrent
clients send Converse requests (maxTokens 48, temperature 0.7) for `--rounds` rounds to one throughput,
then to the other. More clients than slots keep each throughput saturated; the queue is long (30 s) so
requests wait their turn instead of being throttled.

    .venv/bin/python bench/provisioned.py [--adapters 10] [--smollm2] [--rounds 3] [--json out.json]

Last two lines: `ratio memory <full copies / shared adapters>` and `ratio throughput <2 MU / 1 MU>`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
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
    CpuMeter,
    Side,
    free_port,
    percentile,
    root_key,
    smollm2_gguf,
    start_server,
    stop_server,
)

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CLIENTS = 8
MAX_TOKENS = 48
TEMPERATURE = 0.7
#: Server settings of the throughput part: the default 2 sequences per model unit, and a line long enough
#: that saturating load waits for a slot rather than getting ThrottlingException.
SERVER_ENV = {"OUTCROP_MU_CONCURRENT_SEQUENCES": "2", "OUTCROP_PROVISIONED_QUEUE_SECONDS": "30"}
TOKENS_PER_MINUTE_PER_MU = 6000  # the default OUTCROP_MU_TOKENS_PER_MINUTE, only to report how much was used

PROMPTS = [
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how a city changes over a hundred years, decade by decade.",
    "Describe a thunderstorm over the ocean from the point of view of a sailor.",
    "Write a letter from a traveller to their family describing a long train journey.",
    "Describe the life of a honeybee from spring to autumn.",
    "Write a short story about an old clockmaker and a clock that runs backwards.",
    "Describe how you would plan a garden that blooms all year round.",
    "Write a short story about a baker, a secret recipe and a rival across the street.",
]
CHAT_TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
                 "{% if add_generation_prompt %}<s>assistant: {% endif %}")


# -- the models ----------------------------------------------------------------------------------------

def corpus_lines(limit_bytes: int = 3_000_000):
    """Text to train an 8k-token tokenizer on, offline and the same on every run: the standard library's
    top-level modules (docstrings and code) in name order, then the prompts."""
    used = 0
    for path in sorted(Path(os.__file__).parent.glob("*.py")):
        text = path.read_text(errors="replace")
        yield from text.splitlines()
        used += len(text)
        if used >= limit_bytes:
            break
    yield from PROMPTS


def make_base(folder: Path, vocab: int = 8192) -> Path:
    """A random 4-layer Llama (hidden 512, vocabulary 8k: about 18M parameters, 71 MB in fp32) and its
    byte-level BPE tokenizer, trained as `tests.helpers.train_tokenizer` trains its own but larger."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(corpus_lines(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=512, intermediate_size=1024, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=1024,
                         bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                         pad_token_id=fast.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def make_adapters(base: Path, folder: Path, count: int) -> list[Path]:
    """`count` random LoRA adapters of `base` (r 8 on the attention and MLP projections, B not zero so
    each one changes the model), saved with PEFT next to the tokenizer, as the trainer saves its output."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    paths = []
    for i in range(count):
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        torch.manual_seed(1000 + i)
        config = LoraConfig(r=8, lora_alpha=16, target_modules=LORA_TARGETS, init_lora_weights=False,
                            task_type="CAUSAL_LM")
        path = folder / f"adapter-{i:02d}"
        get_peft_model(model, config).save_pretrained(path)
        tokenizer.save_pretrained(path)
        paths.append(path)
    return paths


# -- part 1: memory, each side in its own process --------------------------------------------------------

def parameter_bytes(model) -> int:
    """Bytes of the distinct parameter tensors of a model (tied weights and shared storage counted once)."""
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() in seen:
            continue
        seen.add(p.data_ptr())
        total += p.numel() * p.element_size()
    return total


def rss_bytes() -> tuple[int, int, int]:
    """(peak RSS, current RSS, current PSS) of this process in bytes.

    PSS counts a page mapped k times once in all (1/k per mapping); RSS counts it once per mapping."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    fields = {}
    with open("/proc/self/smaps_rollup") as fh:
        for line in fh:
            name, _, rest = line.partition(":")
            if name in ("Rss", "Pss"):
                fields[name] = int(rest.split()[0]) * 1024
    return peak, fields["Rss"], fields["Pss"]


def measure(side: str, base: Path, adapters: list[Path]) -> dict:
    """Run in a fresh process: load the N adapters one way, keep them all alive, report bytes and RSS."""
    import gc

    import peft  # noqa: F401  (everything both sides need is imported before the first RSS reading)
    import torch
    import transformers.models.llama.modeling_llama  # noqa: F401
    from transformers import AutoTokenizer

    from outcrop.inference.engine import Engine, adapter_name
    from outcrop.inference.loader import LORA_HOST, load_causal_lm

    torch.set_grad_enabled(False)
    tokenizer = AutoTokenizer.from_pretrained(base)
    prompts = [tokenizer(PROMPTS[i % len(PROMPTS)], return_tensors="pt")["input_ids"] for i in range(len(adapters))]
    gc.collect()
    peak0, rss0, pss0 = rss_bytes()
    started = time.perf_counter()
    engine_bytes, base_tokens = None, None
    with tempfile.TemporaryDirectory(prefix="outcrop-bench-cache-") as cache:
        if side == "shared":
            engine = Engine(Path(cache), memory_budget_bytes=1 << 50)
            for adapter in adapters:
                engine.get(adapter, base=base)
            host = engine.get(base, LORA_HOST).loaded.model
            load_s = time.perf_counter() - started
            held = parameter_bytes(host)
            engine_bytes = sum(nbytes for _, _, nbytes in engine.loaded())
            tokens = [int(host(input_ids=ids, adapter_names=[adapter_name(a)]).logits[0, -1].argmax())
                      for ids, a in zip(prompts, adapters, strict=True)]
            base_tokens = [int(host(input_ids=ids, adapter_names=["__base__"]).logits[0, -1].argmax())
                           for ids in prompts]
        else:
            copies = [load_causal_lm(adapter, Path(cache), base=base) for adapter in adapters]
            load_s = time.perf_counter() - started
            held = sum(parameter_bytes(c.model) for c in copies)
            tokens = [int(c.model(input_ids=ids).logits[0, -1].argmax())
                      for ids, c in zip(prompts, copies, strict=True)]
        # Read after the forward passes: transformers maps safetensors files copy-on-write, so weights
        # become resident only when first touched (a merge writes the adapted ones, a forward reads all).
        gc.collect()
        peak1, rss1, pss1 = rss_bytes()
        if side == "shared":
            engine.close()
    return {"side": side, "adapters": len(adapters), "parameter_bytes": held, "engine_loaded_bytes": engine_bytes,
            "rss_peak_growth_bytes": peak1 - peak0, "rss_growth_bytes": rss1 - rss0, "pss_growth_bytes": pss1 - pss0,
            "rss_baseline_bytes": rss0, "load_s": round(load_s, 2), "next_tokens": tokens,
            "base_next_tokens": base_tokens}


def measure_in_subprocess(side: str, base: Path, adapters: list[Path]) -> dict:
    result = subprocess.run([sys.executable, __file__, "--measure", side, "--base", str(base),
                             *[arg for a in adapters for arg in ("--adapter-dir", str(a))]],
                            capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        sys.exit(f"the {side} measurement failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f}"


def run_memory(base: Path, adapters: list[Path]) -> dict:
    print(f"memory: {len(adapters)} LoRA adapters of {base.name}, each side in its own process ...", flush=True)
    shared = measure_in_subprocess("shared", base, adapters)
    full = measure_in_subprocess("full", base, adapters)
    if shared["next_tokens"] != full["next_tokens"]:
        sys.exit(f"the two sides disagree on the greedy next token: shared {shared['next_tokens']}, "
                 f"full copies {full['next_tokens']}")
    changed = sum(a != b for a, b in zip(shared["next_tokens"], shared["base_next_tokens"], strict=True))
    print(f"sanity: the greedy next token of one prompt per adapter is the same on both sides "
          f"({len(adapters)}/{len(adapters)}); {changed} of them differ from the base model's own")
    rows = [("side", "param MB", "Engine.loaded MB", "RSS growth MB", "peak RSS growth MB", "PSS growth MB",
             "load s")]
    for name, m in ((f"{len(adapters)} adapters, one shared base (Engine)", shared),
                    (f"{len(adapters)} full copies (load_causal_lm, merged)", full)):
        rows.append((name, mb(m["parameter_bytes"]), mb(m["engine_loaded_bytes"]), mb(m["rss_growth_bytes"]),
                     mb(m["rss_peak_growth_bytes"]), mb(m["pss_growth_bytes"]), f"{m['load_s']:.1f}"))
    print_rows(rows)
    # The ratio is of parameter bytes, not RSS: bytes held are exact and the same on every run, they are what
    # the Engine's memory budget counts, and what N copies cost on a GPU (where every tensor is copied to the
    # device). RSS also moves with the allocator (freed blocks kept by malloc; transient copies while a merge
    # runs, the peak column, which is relative to the process's peak before loading and so can read 0), and on
    # CPU with how transformers loads: each copy maps the base's safetensors file copy-on-write, so the
    # tensors a merge leaves alone (embeddings, output layer, norms) stay page-cache pages that the N copies
    # share; RSS counts them once per copy, PSS once in all. Both are printed above as cross-checks.
    return {"shared": shared, "full": full, "ratio": full["parameter_bytes"] / shared["parameter_bytes"],
            "ratio_rss": full["rss_growth_bytes"] / max(shared["rss_growth_bytes"], 1),
            "ratio_pss": full["pss_growth_bytes"] / max(shared["pss_growth_bytes"], 1)}


# -- part 2: throughput of 1 MU and 2 MUs on a real server ------------------------------------------------

def outcrop_cli(data_dir: Path, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "outcrop", *args, "--data-dir", str(data_dir)],
                            capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        sys.exit(f"outcrop {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return result.stdout.strip()


def client(service: str, endpoint: str, key: tuple[str, str]):
    import boto3
    from botocore.config import Config

    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key[0],
                        aws_secret_access_key=key[1],
                        config=Config(max_pool_connections=16, read_timeout=300, retries={"max_attempts": 1}))


def wait_in_service(bedrock, arn: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = bedrock.get_provisioned_model_throughput(provisionedModelId=arn)
        if got["status"] == "InService":
            return
        if got["status"] == "Failed":
            sys.exit(f"{arn} failed: {got.get('failureMessage')}")
        time.sleep(0.2)
    sys.exit(f"{arn} is not InService after {timeout:.0f} s")


def converse(runtime, arn: str, prompt: str) -> tuple[int, int]:
    """One Converse call: (input tokens, output tokens)."""
    response = runtime.converse(modelId=arn, messages=[{"role": "user", "content": [{"text": prompt}]}],
                                inferenceConfig={"maxTokens": MAX_TOKENS, "temperature": TEMPERATURE})
    return response["usage"]["inputTokens"], response["usage"]["outputTokens"]


def saturate(endpoint: str, key: tuple[str, str], arn: str, units: int, rounds: int, server_pid: int) -> dict:
    """CLIENTS threads, each with its own boto3 client, send `rounds` Converse requests back to back."""
    side = Side(f"{units} MU ({units * int(SERVER_ENV['OUTCROP_MU_CONCURRENT_SEQUENCES'])} sequences)")
    pool = [client("bedrock-runtime", endpoint, key) for _ in range(CLIENTS)]  # made here: not thread-safe
    converse(pool[0], arn, "Say hello.")  # warm-up, not measured
    barrier = threading.Barrier(CLIENTS + 1)
    results: list[tuple[int, int, float]] = []
    errors: list[BaseException] = []
    throttled = [0]
    lock = threading.Lock()

    def loop(i: int) -> None:
        barrier.wait()
        try:
            for r in range(rounds):
                prompt = PROMPTS[(i + r) % len(PROMPTS)]
                while True:
                    started = time.perf_counter()
                    try:
                        tokens_in, tokens_out = converse(pool[i], arn, prompt)
                        break
                    except pool[i].exceptions.ThrottlingException:  # counted and retried; should stay 0
                        with lock:
                            throttled[0] += 1
                        time.sleep(0.1)
                with lock:
                    results.append((tokens_in, tokens_out, time.perf_counter() - started))
        except BaseException as exc:  # reported after the phase, not lost in a thread
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    barrier.wait()
    meter, started = CpuMeter(server_pid), time.perf_counter()
    for thread in threads:
        thread.join()
    side.wall_s = time.perf_counter() - started
    meter.stop(side)
    if errors:
        raise RuntimeError(f"{len(errors)} client(s) failed; the first: {errors[0]!r}")
    side.requests = len(results)
    side.output_tokens = sum(out for _, out, _ in results)
    latencies = [s for _, _, s in results]
    print(side.cpu_report(), flush=True)
    return {**side.summary(), "model_units": units, "input_tokens": sum(i for i, _, _ in results),
            "latency_p50_s": round(percentile(latencies, 50), 3), "latency_p95_s": round(percentile(latencies, 95), 3),
            "throttled": throttled[0]}


def run_throughput(base: Path, cache_dir: Path, rounds: int, tmp: Path) -> dict:
    port, data_dir, log_path = free_port(), tmp / "data", tmp / "server.log"
    server = start_server(port, data_dir, cache_dir, log_path, SERVER_ENV)
    try:
        endpoint, key = f"http://127.0.0.1:{port}", root_key(data_dir)
        model_id = outcrop_cli(data_dir, "models", "register", "bench-base", str(base))
        bedrock = client("bedrock", endpoint, key)
        arns = {units: bedrock.create_provisioned_model_throughput(
            modelUnits=units, provisionedModelName=f"bench-{units}mu", modelId=model_id)["provisionedModelArn"]
            for units in (1, 2)}
        for arn in arns.values():
            wait_in_service(bedrock, arn)
        print(f"throughput: {model_id} provisioned with 1 and 2 MUs (InService); {CLIENTS} clients x {rounds} "
              f"rounds of Converse, maxTokens {MAX_TOKENS}, temperature {TEMPERATURE}, one throughput at a time ...",
              flush=True)
        sides = {units: saturate(endpoint, key, arn, units, rounds, server.pid) for units, arn in arns.items()}
        for arn in arns.values():
            bedrock.delete_provisioned_model_throughput(provisionedModelId=arn)
    except BaseException:
        print(f"server log ({log_path}):\n{log_path.read_text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        stop_server(server)
    rows = [("throughput", "requests", "in tokens", "out tokens", "seconds", "tokens/s", "latency p50 s",
             "latency p95 s", "throttled")]
    for s in sides.values():
        rows.append((s["name"], str(s["requests"]), str(s["input_tokens"]), str(s["output_tokens"]),
                     f"{s['wall_s']:.2f}", f"{s['tokens_per_s']:.1f}", f"{s['latency_p50_s']:.2f}",
                     f"{s['latency_p95_s']:.2f}", str(s["throttled"])))
    print_rows(rows)
    for s in sides.values():
        used = s["input_tokens"] + s["output_tokens"]
        budget = s["model_units"] * TOKENS_PER_MINUTE_PER_MU
        if used > budget:  # the bucket starts full; beyond it the tokens-per-minute limit may have paced the run
            print(f"note: {s['name']} used {used} tokens, more than its {budget} tokens a minute: "
                  "the token budget, not only the sequence slots, may have limited it")
    return {"one_mu": sides[1], "two_mu": sides[2],
            "ratio": sides[2]["tokens_per_s"] / sides[1]["tokens_per_s"] if sides[1]["tokens_per_s"] else float("nan")}


# -- main -------------------------------------------------------------------------------------------------

def print_rows(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths,
                                                                                                       strict=True))))
    print()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapters", type=int, default=10, help="LoRA adapters, N (default 10)")
    parser.add_argument("--smollm2", action="store_true",
                        help="use the converted SmolLM2-135M-Instruct as the base instead of a random 4-layer Llama")
    parser.add_argument("--model-cache-dir", type=Path, default=Path("~/.cache/outcrop-bench"),
                        help="converted weights, kept between runs (default ~/.cache/outcrop-bench)")
    parser.add_argument("--rounds", type=int, default=3,
                        help=f"requests each of the {CLIENTS} clients sends to each throughput (default 3)")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the numbers here")
    # One side of the memory measurement, run by this script in a fresh process.
    parser.add_argument("--measure", choices=["shared", "full"], help=argparse.SUPPRESS)
    parser.add_argument("--base", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--adapter-dir", type=Path, action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.base, args.adapter_dir)))
        return 0

    cache_dir = args.model_cache_dir.expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(prefix="outcrop-bench-") as tmp_name:
        tmp = Path(tmp_name)
        started = time.perf_counter()
        if args.smollm2:
            from outcrop.inference.loader import convert_gguf

            base = convert_gguf(smollm2_gguf(), cache_dir)
        else:
            base = make_base(tmp / "base")
        adapters = make_adapters(base, tmp / "adapters", args.adapters)
        print(f"base {base} ({sum(f.stat().st_size for f in base.glob('*.safetensors')) / 2**20:.1f} MB of "
              f"weights) and {len(adapters)} adapters made in {time.perf_counter() - started:.1f} s", flush=True)
        memory = run_memory(base, adapters)
        throughput = run_throughput(base, cache_dir, args.rounds, tmp)

    if args.json:
        args.json.write_text(json.dumps({"base": str(base), "adapters": args.adapters, "rounds": args.rounds,
                                         "clients": CLIENTS, "max_tokens": MAX_TOKENS, "memory": memory,
                                         "throughput": throughput}, indent=2) + "\n")
    print(f"ratio memory {memory['ratio']:.2f}")
    print(f"ratio throughput {throughput['ratio']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
