#!/usr/bin/env python
"""Fine-tuning throughput of Outcrop's trainer against TRL's SFTTrainer, same model, data and settings.

A random 4-layer Llama (hidden 256) with a byte-level BPE tokenizer of 8192 tokens trained on the records
the way the tests train theirs (a real vocabulary makes the LM head a real share of the work; `--vocab 0`
takes the tests' own ~300-token tokenizer), and prompt/completion pairs
from `tests/data/finetune/instruction-dolly.jsonl`. Both sides train on the same token ids: ours
tokenizes the way TRL does for a prompt/completion dataset (prompt, then prompt + completion + EOS, loss
on the completion only, cut to `--max-length` keeping the start; records whose prompt fills the length
are left out, as both trainers do), and the TRL side checks that its own
preprocessing produced exactly these ids and labels. Same batch size, learning rate and linear schedule
with warmup, epochs, seed, LoRA settings, gradient clipping at 1.0, fused AdamW.

TRL's defaults that change the work done, not the objective, are set to match ours: no gradient
checkpointing (TRL turns it on by default), no bf16 autocast on the CPU (both train fp32 there; on a GPU
both get the same bf16 weights), no checkpoint saving, no progress bar.

Each side runs in its own subprocess, so peak memory (ru_maxrss, and the CUDA allocator's peak on a GPU)
is its own. Tokens/s (and the ratio) time the training loop: from just before the first micro-batch to
the end of the last optimizer step, read by callbacks (ours: `should_stop`/`on_progress`; TRL: a
`TrainerCallback`, `on_step_begin` to `on_train_end`); our epoch-end checkpoint is inside that span.
"End-to-end" is from the model's folder to saved weights: ours, the `train()` call; TRL, loading the
model, building `SFTTrainer` (its tokenizing of the records included), `train()` and `save_model()`.
"Final loss" is each final model's mean token loss over the training examples, computed the same way for
both after training (eval mode, transformers' own loss); the last-epoch mean training loss is shown too.
A busy machine makes single runs noisy: `--repeat N` alternates the sides N times and keeps each side's
fastest run. Printed: a table, then the last line `ratio <ours / TRL tokens per second>`. Goals: ratio
>= 1.0 and final losses within 5% of each other.

    .venv/bin/python bench/finetune_throughput.py [--method lora|full] [--vocab 8192] [--examples 100]
        [--epochs 2] [--max-length 256] [--batch-size 4] [--learning-rate 1e-3] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "finetune" / "instruction-dolly.jsonl"
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_tokenizer(folder: Path, vocab: int):
    """A byte-level BPE tokenizer of `vocab` tokens trained on the records, as the tests train theirs; with
    vocab 0, the tests' own (about 300 tokens, which leaves the LM head almost no work)."""
    if not vocab:
        sys.path.insert(0, str(ROOT))
        from tests.helpers import train_tokenizer

        return train_tokenizer(folder)
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([r["prompt"] + r["completion"] for r in records(10**9)], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(folder)
    return fast


def make_base(folder: Path, vocab: int) -> None:
    """A random Llama, small but not trivial, with its tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = make_tokenizer(folder, vocab)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)


def records(count: int) -> list[dict[str, str]]:
    with DATA.open() as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows[:count]]


def tokenize(tokenizer, rows: list[dict[str, str]], max_length: int) -> list[SimpleNamespace]:
    """TRL's preprocessing of a prompt/completion dataset, by hand: EOS added, loss on the completion only."""
    out = []
    for row in rows:
        prompt = tokenizer(row["prompt"]).input_ids
        ids = tokenizer(row["prompt"] + row["completion"] + tokenizer.eos_token).input_ids
        start = 0  # where the completion starts: the end of the prefix the two share (TRL's rule)
        while start < min(len(prompt), len(ids)) and prompt[start] == ids[start]:
            start += 1
        labels = [-100] * start + ids[start:]
        out.append(SimpleNamespace(input_ids=ids[:max_length], labels=labels[:max_length]))
    return out


def usable(tokenizer, rows: list[dict[str, str]], max_length: int) -> tuple[list[dict[str, str]], list]:
    """Only the rows with a completion token within the length: both trainers leave the others out."""
    examples = tokenize(tokenizer, rows, max_length)
    keep = [i for i, e in enumerate(examples) if any(label != -100 for label in e.labels[1:])]
    return [rows[i] for i in keep], [examples[i] for i in keep]


def final_loss(model, examples, device) -> float:
    """Mean token loss over the examples with transformers' own loss: one judge for both sides."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for example in examples:
            n = sum(1 for label in example.labels[1:] if label != -100)
            if n:
                ids = torch.tensor([example.input_ids], device=device)
                labels = torch.tensor([example.labels], device=device)
                total += model(input_ids=ids, labels=labels).loss.float().item() * n
                count += n
    return total / max(1, count)


def side_ours(args, base: Path, work: Path, examples, device) -> dict:
    import peft  # noqa: F401  (imported before the clock starts, as TRL's side has it imported)
    from transformers import AutoModelForCausalLM

    sys.path.insert(0, str(ROOT))
    from outcrop.customization.trainer import TrainingConfig, train
    from outcrop.inference.loader import _dtype

    config = TrainingConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                            warmup_steps=args.warmup_steps, gradient_accumulation_steps=args.accumulation,
                            method=args.method, lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
                            lora_dropout=args.lora_dropout, max_sequence_length=args.max_length,
                            weight_decay=args.weight_decay, seed=args.seed)
    clock: dict[str, float] = {}

    def first_micro_batch() -> bool:  # asked before every micro-batch: the first ask starts the loop's clock
        clock.setdefault("start", time.perf_counter())
        return False

    started = time.perf_counter()
    result = train(base, examples, None, config, work, device=device, should_stop=first_micro_batch,
                   on_progress=lambda progress: clock.update(end=time.perf_counter()))  # after the step's sync
    seconds = time.perf_counter() - started
    last = [loss for _, epoch, loss in result.step_metrics if epoch == args.epochs]
    if args.method == "lora":
        from peft import PeftModel

        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=_dtype(device)),
                                          result.model_dir).to(device)
    else:
        model = AutoModelForCausalLM.from_pretrained(result.model_dir, dtype=_dtype(device)).to(device)
    return {"seconds": seconds, "loop_seconds": clock["end"] - clock["start"], "steps": result.steps,
            "trained_tokens": result.train_tokens, "last_epoch_loss": sum(last) / len(last),
            "final_loss": final_loss(model, examples, device)}


def side_trl(args, base: Path, work: Path, examples, device, rows) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    clock: dict[str, float] = {}

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):  # before an accumulation group's first forward
            clock.setdefault("start", time.perf_counter())

        def on_train_end(self, args, state, control, **kwargs):
            if device.type == "cuda":
                torch.cuda.synchronize()
            clock["end"] = time.perf_counter()

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(base)
    dataset = Dataset.from_list(rows)
    started = time.perf_counter()  # from the model's folder to saved weights, as ours
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype).to(device)
    steps_per_epoch = math.ceil(math.ceil(len(examples) / args.batch_size) / args.accumulation)
    config = SFTConfig(
        output_dir=str(work), num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.accumulation, learning_rate=args.learning_rate,
        lr_scheduler_type="linear", warmup_steps=args.warmup_steps, weight_decay=args.weight_decay,
        max_grad_norm=1.0, optim="adamw_torch_fused", seed=args.seed, data_seed=args.seed,
        max_length=args.max_length, completion_only_loss=True, packing=False,
        gradient_checkpointing=False, bf16=False, fp16=False, use_cpu=device.type == "cpu",
        logging_steps=steps_per_epoch, save_strategy="no", report_to="none", disable_tqdm=True)
    peft_config = None
    if args.method == "lora":
        peft_config = LoraConfig(task_type="CAUSAL_LM", target_modules=LORA_TARGETS, r=args.lora_rank,
                                 lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout)
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config, callbacks=[Clock()])
    trainer.train()
    trainer.save_model(str(work / "model"))
    seconds = time.perf_counter() - started
    prepared = trainer.train_dataset
    same = (list(prepared["input_ids"]) == [e.input_ids for e in examples]
            and list(prepared["labels"]) == [e.labels for e in examples])
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {"seconds": seconds, "loop_seconds": clock["end"] - clock["start"], "steps": trainer.state.global_step,
            "trained_tokens": args.epochs * sum(len(e.input_ids) for e in examples),
            "last_epoch_loss": losses[-1] if losses else float("nan"), "same_data": same,
            "final_loss": final_loss(trainer.model, examples, device)}


def run_side(args) -> None:
    import torch
    from transformers import AutoTokenizer

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    base, work = Path(args.base), Path(args.work)
    rows, examples = usable(AutoTokenizer.from_pretrained(base), records(args.examples), args.max_length)
    if args.side == "outcrop":
        out = side_ours(args, base, work, examples, device)
    else:
        out = side_trl(args, base, work, examples, device, rows)
    out["tokens_per_second"] = out["trained_tokens"] / out["loop_seconds"]
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    out["device"] = str(device)
    out["examples"] = len(examples)
    out["vocab"] = len(AutoTokenizer.from_pretrained(base))
    out["threads"] = torch.get_num_threads()
    print("RESULT " + json.dumps(out), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", choices=["lora", "full"], default="lora")
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--accumulation", type=int, default=1)
    parser.add_argument("--learning-rate", type=float, default=None, help="default: 1e-3 for LoRA, 1e-4 full")
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--lora-alpha", type=int, default=16)
    parser.add_argument("--lora-dropout", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--vocab", type=int, default=8192,
                        help="tokenizer size, trained on the records; 0: the tests' tiny tokenizer (~300)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the sides alternately this many times and keep each side's fastest run")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    parser.add_argument("--side", choices=["outcrop", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.learning_rate is None:
        args.learning_rate = 1e-3 if args.method == "lora" else 1e-4
    if args.side:
        run_side(args)
        return 0

    passed = [f"--method={args.method}", f"--examples={args.examples}", f"--epochs={args.epochs}",
              f"--max-length={args.max_length}", f"--batch-size={args.batch_size}",
              f"--accumulation={args.accumulation}", f"--learning-rate={args.learning_rate}",
              f"--warmup-steps={args.warmup_steps}", f"--weight-decay={args.weight_decay}",
              f"--lora-rank={args.lora_rank}", f"--lora-alpha={args.lora_alpha}",
              f"--lora-dropout={args.lora_dropout}", f"--seed={args.seed}"]
    if args.device:
        passed.append(f"--device={args.device}")
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="outcrop-finetune-bench-") as tmp:
        base = Path(tmp) / "base"
        make_base(base, args.vocab)
        for attempt in range(args.repeat):
            for side in ("outcrop", "trl"):
                work = Path(tmp) / f"{side}-{attempt}"
                command = [sys.executable, __file__, f"--side={side}", f"--base={base}", f"--work={work}", *passed]
                done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
                lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
                if done.returncode or not lines:
                    sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
                    print(f"{side} failed (exit {done.returncode})")
                    return 1
                result = json.loads(lines[-1][len("RESULT "):])
                print(f"  run {attempt + 1} {side}: {result['tokens_per_second']:.0f} tokens/s", flush=True)
                if side not in results or result["tokens_per_second"] > results[side]["tokens_per_second"]:
                    results[side] = result

    ours, trl = results["outcrop"], results["trl"]
    print(f"method {args.method}, vocab {ours['vocab']}, {ours['examples']} examples, {args.epochs} epochs, "
          f"max length {args.max_length}, "
          f"batch {args.batch_size} x {args.accumulation}, lr {args.learning_rate}, warmup {args.warmup_steps}, "
          f"device {ours['device']}, {ours['threads']} threads")
    print(f"{'side':8} {'steps':>6} {'tokens':>8} {'loop s':>7} {'tokens/s':>9} {'end-to-end s':>13} "
          f"{'peak RSS MiB':>13} {'peak GPU MiB':>13} {'last-epoch loss':>16} {'final loss':>11}")
    for name, r in (("outcrop", ours), ("trl", trl)):
        gpu = f"{r['peak_gpu_mib']:.0f}" if r["peak_gpu_mib"] is not None else "-"
        print(f"{name:8} {r['steps']:>6} {r['trained_tokens']:>8} {r['loop_seconds']:>7.2f} "
              f"{r['tokens_per_second']:>9.0f} {r['seconds']:>13.2f} {r['peak_rss_mib']:>13.0f} {gpu:>13} "
              f"{r['last_epoch_loss']:>16.4f} {r['final_loss']:>11.4f}")
    print(f"same token ids and labels on both sides: {'yes' if trl['same_data'] else 'NO'}")
    difference = (ours["final_loss"] - trl["final_loss"]) / trl["final_loss"]
    print(f"final loss, ours against TRL: {difference:+.2%} (goal: within 5%)")
    ratio = ours["tokens_per_second"] / trl["tokens_per_second"]
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "outcrop": ours,
                                         "trl": trl, "ratio": ratio, "final_loss_difference": difference},
                                        indent=2))
    print(f"ratio {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
