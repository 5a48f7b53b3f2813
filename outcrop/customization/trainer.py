"""Fine-tune a causal language model: one plain PyTorch loop over transformers + PEFT, read top to bottom.

After torchtune's recipes and nanoGPT's train.py: configuration is data (`TrainingConfig`), the loop is
`train()`, and no trainer framework sits in between. The examples arrive tokenized, with `labels` already
-100 where no loss is taken (the prompt), in the transformers convention: `labels[i]` is the target of
position `i`, predicted from the tokens before it. So "loss only on completion tokens" is decided by the data.

What one optimizer step does: for each of `gradient_accumulation_steps` micro-batches, a forward pass,
the summed token loss divided by the number of loss tokens in the *whole* accumulated group, backward.
Accumulating two micro-batches of one therefore gives the gradient of one batch of two. Then the gradient
is clipped to norm 1.0, AdamW steps, and the learning rate follows a linear warmup and linear decay.

The work dir:

    checkpoints/epoch-<n>/   model/ (LoRA adapter or full weights) + state.pt (optimizer, scheduler,
                             counters, metrics so far, RNG state); only the latest epoch is kept
    model/                   the final weights (adapter or full model) and the tokenizer

Decisions:
- Resuming: `train()` with a work dir that holds a checkpoint continues after that epoch. The shuffle is
  seeded per epoch and the RNG state is restored, so the losses equal those of an uninterrupted run.
- Stopping (`should_stop()`, checked before every optimizer step): the step is not taken and nothing new is
  saved, like Bedrock, where a stopped job makes no custom model. The last epoch checkpoint
  stays, so a later `train()` on the same work dir resumes from it; `TrainingResult.model_dir` names that
  checkpoint's weights, or is None when no epoch had finished.
- Packing (`packing=True`) concatenates all examples and cuts the stream into rows of exactly
  `max_sequence_length` tokens (TRL's "wrapped" strategy; the last row is padded). Unlike TRL's wrapped
  strategy, examples do not attend across boundaries: position ids restart at 0 with every example, and
  transformers turns restarting positions into a block-diagonal attention mask. An example cut by a row
  end continues in the next row with its positions going on, and its start is out of that row's view.
  Without packing, examples longer than `max_sequence_length` keep their start.
- The LM head runs only on the positions that carry a loss (`logits_to_keep`): prompt and padding tokens
  cost no vocabulary projection (the LM head is a fifth of SmolLM2-135M's weights).
- Determinism: `torch.manual_seed(seed)` before the LoRA init, so dropout and init repeat; the data order
  comes from its own generator, seeded with `seed + epoch`. Same machine, same losses.
- Several workers (`DataParallel`, torch.distributed as Ray Train sets it up): each optimizer step's rows
  (`batchSize` x `gradientAccumulationSteps`) are dealt out among them and their gradients summed, so N
  workers take the steps one would (with dropout, each worker draws its own masks); `batchSize` stays the
  batch of the whole step, as on Bedrock, however many workers share it. A step of fewer rows than workers
  leaves some idle: raise `gradientAccumulationSteps` or `batchSize` to keep N workers busy.
- bf16 weights on CUDA (LoRA adapters kept in fp32 by PEFT), fp32 on CPU, as the inference loader does.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from outcrop.inference.loader import _dtype, default_device

log = logging.getLogger(__name__)

IGNORE = -100  # the label of a token that carries no loss
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# --- configuration, as data ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = 5
    batch_size: int = 1
    learning_rate: float = 1e-4
    warmup_steps: int = 5  # optimizer steps
    gradient_accumulation_steps: int = 1
    method: str = "lora"  # or "full"
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    max_sequence_length: int = 1024
    packing: bool = False
    weight_decay: float = 0.0
    seed: int = 42

    def __post_init__(self) -> None:
        if self.method not in ("lora", "full"):
            raise ValueError(f"fineTuningMethod must be 'lora' or 'full', not {self.method!r}")
        for name in ("epochs", "batch_size", "gradient_accumulation_steps", "lora_rank", "max_sequence_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if not self.learning_rate > 0 or self.warmup_steps < 0 or self.weight_decay < 0:
            raise ValueError("learning rate must be positive, warmup steps and weight decay not negative")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"loraDropout must be in [0, 1), not {self.lora_dropout}")

    #: Bedrock's hyperparameter names (strings in the API) -> field names here.
    HYPERPARAMETERS = {
        "epochCount": "epochs", "batchSize": "batch_size", "learningRate": "learning_rate",
        "learningRateWarmupSteps": "warmup_steps", "fineTuningMethod": "method", "loraRank": "lora_rank",
        "loraAlpha": "lora_alpha", "loraDropout": "lora_dropout", "maxSequenceLength": "max_sequence_length",
        "packing": "packing", "gradientAccumulationSteps": "gradient_accumulation_steps",
        "weightDecay": "weight_decay", "seed": "seed",
    }

    @classmethod
    def from_hyperparameters(cls, values: dict[str, Any]) -> TrainingConfig:
        """A config from Bedrock's `hyperParameters` (string values, as the API sends them, or numbers).

        Keys not listed in `HYPERPARAMETERS` are ignored: validating them is `hyperparameters.resolve`'s job.
        """
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            name = cls.HYPERPARAMETERS.get(key)
            if name is None or value is None:
                continue
            kind = types[name]
            try:
                if kind == "bool":
                    text = str(value).strip().lower()
                    if text not in ("true", "false", "1", "0"):
                        raise ValueError
                    kwargs[name] = text in ("true", "1")
                elif kind == "int":
                    number = float(value)
                    if not number.is_integer():
                        raise ValueError
                    kwargs[name] = int(number)
                elif kind == "float":
                    kwargs[name] = float(value)
                else:
                    kwargs[name] = str(value).strip().lower()
            except ValueError:
                raise ValueError(f"hyperparameter {key}: {value!r} is not a valid {kind}") from None
        return cls(**kwargs)


@dataclass
class Progress:
    """What the job shows while training; handed to `on_progress` after every optimizer step."""

    step: int
    total_steps: int
    epoch: int
    epochs: int
    loss: float
    learning_rate: float
    tokens_per_second: float
    eta_seconds: float

    @property
    def percent(self) -> float:
        return 100.0 * self.step / self.total_steps if self.total_steps else 100.0


@dataclass
class TrainingResult:
    steps: int
    epochs_completed: int
    stopped: bool
    step_metrics: list[tuple[int, int, float]]  # (step, epoch, training loss), one per optimizer step
    validation_metrics: list[tuple[int, int, float]]  # (step, epoch, validation loss), one per epoch end
    train_tokens: int  # input tokens trained on, padding excluded, all epochs
    seconds: float  # this call's wall time
    model_dir: Path | None  # the final weights; when stopped, the last checkpoint's weights (None if none)


class TokenizedExample(Protocol):
    """Any object with these two attributes will do (the dataset loader's `Example` has them)."""

    input_ids: list[int]
    labels: list[int]


# --- data: rows, packing, batches ---------------------------------------------------------------------


@dataclass
class Row:
    input_ids: list[int]
    labels: list[int]
    position_ids: list[int] | None = None  # only packed rows carry them
    padding: int = 0  # pad tokens at the end of a packed row


@dataclass
class Batch:
    """One micro-batch, built on the CPU once per epoch; nothing in it needs a device sync to read."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None  # None when no row is padded (lets attention take its fast path)
    position_ids: torch.Tensor | None
    keep: torch.Tensor | int  # positions whose logits are needed (0 = all)
    targets: torch.Tensor  # next-token targets at the kept positions, -100 where no loss
    tokens: int  # non-padding tokens
    loss_tokens: int  # targets that are not -100


def rows_from_examples(examples: Sequence[TokenizedExample], max_length: int) -> list[Row]:
    """One row per example, cut to `max_length` tokens keeping the start."""
    return [Row(list(e.input_ids[:max_length]), list(e.labels[:max_length])) for e in examples]


def pack(examples: Sequence[TokenizedExample], length: int, pad_id: int) -> list[Row]:
    """All examples end to end, cut into rows of exactly `length` tokens; the last row is padded.

    Position ids restart at 0 with each example, so each attends only to itself; the padding at the end is
    one more "example" with no loss.
    """
    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    for example in examples:
        ids += example.input_ids
        labels += example.labels
        positions += range(len(example.input_ids))
    pad = -len(ids) % length
    ids += [pad_id] * pad
    labels += [IGNORE] * pad
    positions += range(pad)
    rows = [Row(ids[i:i + length], labels[i:i + length], positions[i:i + length]) for i in range(0, len(ids), length)]
    rows[-1].padding = pad
    return rows


def collate(rows: Sequence[Row], pad_id: int) -> Batch:
    """Right-pad to the longest row; targets are the labels shifted left by one (-100 on padding)."""
    width = max(len(row.input_ids) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    targets = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row.input_ids)
        input_ids[i, :n] = torch.tensor(row.input_ids)
        targets[i, :n - 1] = torch.tensor(row.labels[1:n])
        attention_mask[i, :n] = 1
    position_ids = None
    if rows[0].position_ids is not None:  # packed rows all have the same length, their padding is inside them
        position_ids = torch.tensor([row.position_ids for row in rows])
        targets[:, :-1][position_ids[:, 1:] == 0] = IGNORE  # an example's first token is not the previous' target
    has_loss = (targets != IGNORE).any(dim=0)
    keep = 0 if has_loss.all() else has_loss.nonzero().flatten()
    return Batch(
        input_ids=input_ids,
        attention_mask=None if position_ids is not None or bool(attention_mask.all()) else attention_mask,
        position_ids=position_ids,
        keep=keep,
        targets=targets if isinstance(keep, int) else targets[:, keep],
        tokens=int(attention_mask.sum()) - sum(row.padding for row in rows),
        loss_tokens=int((targets != IGNORE).sum()),
    )


def epoch_steps(rows: Sequence[Row], batch_size: int, accumulation: int, seed: int, pad_id: int,
                rank: int = 0, world: int = 1) -> list[list[Batch]]:
    """The epoch's optimizer steps, each a list of micro-batches of up to `batch_size` rows, over the rows in a
    seeded random order (the same order whenever the epoch is re-run). A step takes `batch_size *
    accumulation` rows (the last one what is left).

    With `world` workers, each step's rows are dealt out among them and this returns worker `rank`'s share,
    cut into micro-batches (an empty list where it gets no row): every worker walks the same steps.
    """
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()
    per_step = batch_size * accumulation
    steps = []
    for start in range(0, len(order), per_step):
        share = order[start:start + per_step][rank::world]
        steps.append([collate([rows[i] for i in share[at:at + batch_size]], pad_id)
                      for at in range(0, len(share), batch_size)])
    return steps


# --- data parallel --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataParallel:
    """This worker's place when several processes train one model (torch.distributed, as Ray Train sets it
    up), or the only worker.

    Each optimizer step's rows are dealt out among the workers (`epoch_steps`); each divides its token loss
    by the loss tokens of the *whole* step, so the gradients it computes are its part of the single-worker
    gradient, and their sum (one all-reduce a step, all gradients flattened into one tensor) is that gradient:
    N workers take the steps one worker would, up to float rounding. Summing by hand rather than through
    DistributedDataParallel lets a worker with fewer rows (or none) in a step take part all the same.
    """

    rank: int = 0
    world: int = 1
    #: Where the collectives' tensors live: NCCL reduces only CUDA tensors, gloo CPU ones.
    device: torch.device = torch.device("cpu")

    @classmethod
    def current(cls, device: torch.device) -> DataParallel:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), device)
        return cls(device=device)

    @property
    def first(self) -> bool:
        """The worker that reports progress, validates and saves."""
        return self.rank == 0

    def same_start(self, parameters: Sequence[torch.Tensor]) -> None:
        """Every worker starts from the first worker's trainable weights (they are seeded alike anyway)."""
        if self.world > 1:
            import torch.distributed as dist

            for p in parameters:
                dist.broadcast(p.data, 0)

    def agree(self, stop: bool, loss_tokens: int, tokens: int) -> tuple[bool, int, int]:
        """Before a step: whether any worker was asked to stop, and the step's loss and input tokens, summed."""
        if self.world == 1:
            return stop, loss_tokens, tokens
        import torch.distributed as dist

        summed = torch.tensor([float(stop), float(loss_tokens), float(tokens)], dtype=torch.float64,
                              device=self.device)
        dist.all_reduce(summed)
        return summed[0].item() > 0, int(summed[1].item()), int(summed[2].item())

    def sum_gradients(self, parameters: Sequence[torch.Tensor], step_loss: torch.Tensor) -> torch.Tensor:
        """After the backward passes: every worker holds the step's whole gradient; returns the whole loss."""
        if self.world == 1:
            return step_loss
        import torch.distributed as dist

        for p in parameters:
            if p.grad is None:  # this worker had no row in the step
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.flatten().float() for p in parameters] + [step_loss.reshape(1).float()])
        dist.all_reduce(flat)
        offset = 0
        for p in parameters:
            p.grad.copy_(flat[offset:offset + p.numel()].view_as(p.grad))
            offset += p.numel()
        return flat[-1]

    def wait_for_all(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


# --- the model, the loss, the optimizer ---------------------------------------------------------------


def load_model(base_model_dir: Path, config: TrainingConfig, device: torch.device,
               checkpoint: Path | None = None) -> Any:
    """The base model made trainable: wrapped with fresh LoRA adapters, or whole for full fine-tuning.

    With a checkpoint, its weights are loaded instead of fresh adapters (or instead of the base, for full).
    The base folder is only read.
    """
    from transformers import AutoModelForCausalLM

    dtype = _dtype(device)
    if config.method == "full":
        source = checkpoint / "model" if checkpoint else base_model_dir
        return AutoModelForCausalLM.from_pretrained(source, dtype=dtype).to(device)
    from peft import LoraConfig, PeftModel, get_peft_model

    base = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=dtype).to(device)
    if checkpoint:
        return PeftModel.from_pretrained(base, checkpoint / "model", is_trainable=True)
    present = {name.rsplit(".", 1)[-1] for name, _ in base.named_modules()}
    targets = [t for t in LORA_TARGETS if t in present] or "all-linear"
    return get_peft_model(base, LoraConfig(task_type="CAUSAL_LM", target_modules=targets, r=config.lora_rank,
                                           lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout))


def loss_sum(model: Any, batch: Batch, device: torch.device) -> torch.Tensor:
    """Summed cross-entropy over the batch's loss tokens (a 0-d tensor; divide by the token count)."""
    def move(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(device, non_blocking=True)

    keep = batch.keep if isinstance(batch.keep, int) else move(batch.keep)
    logits = model(input_ids=move(batch.input_ids), attention_mask=move(batch.attention_mask),
                   position_ids=move(batch.position_ids), logits_to_keep=keep, use_cache=False).logits
    return F.cross_entropy(logits.flatten(0, 1).float(), move(batch.targets).flatten(), ignore_index=IGNORE,
                           reduction="sum")


def make_optimizer(model: Any, config: TrainingConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (not on norms and biases), as in nanoGPT."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.learning_rate, fused=device.type in ("cuda", "cpu"))


def linear_schedule(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """The learning-rate factor for step `s` (0-based): up from 0 over the warmup, then down to 0.

    Step s uses s/warmup during the warmup, then (total - s)/(total - warmup), reaching 0 just after the
    last step: transformers' `get_linear_schedule_with_warmup`, so runs compare with TRL's.
    """
    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


# --- checkpoints ----------------------------------------------------------------------------------------


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Write into a temporary sibling folder, then rename it to `target`: a reader sees all of it or none."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield staging
        if target.exists():
            old = target.with_name(f".{target.name}-old-{os.getpid()}")
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def latest_checkpoint(checkpoints: Path, prefix: str = "epoch") -> Path | None:
    """The newest complete `<prefix>-<n>` checkpoint (image jobs count steps, not epochs), or None."""
    done = [p for p in checkpoints.glob(f"{prefix}-*") if (p / "state.pt").is_file()] if checkpoints.is_dir() else []
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def save_checkpoint(checkpoints: Path, epoch: int, model: Any, state: dict[str, Any]) -> Path:
    """Save `epoch-<n>` atomically, then drop every older checkpoint (and leftovers of interrupted saves)."""
    target = checkpoints / f"epoch-{epoch}"
    with atomic_dir(target) as staging:
        model.save_pretrained(staging / "model")
        torch.save(state, staging / "state.pt")
    for other in checkpoints.iterdir():
        if other != target:
            shutil.rmtree(other, ignore_errors=True)
    return target


# --- the loop ---------------------------------------------------------------------------------------------


def train(base_model_dir: Path, train_examples: Sequence[TokenizedExample],
          validation_examples: Sequence[TokenizedExample] | None, config: TrainingConfig, work_dir: Path, *,
          on_progress: Callable[[Progress], None] = lambda progress: None,
          should_stop: Callable[[], bool] = lambda: False,
          device: torch.device | None = None) -> TrainingResult:
    """Fine-tune the model in `base_model_dir` on the examples; weights go to `work_dir/model`.

    Resumes from `work_dir/checkpoints` when a checkpoint is there. `should_stop` is called before every
    optimizer step, so keep it cheap. Run by each of several workers (torch.distributed initialized, see
    `DataParallel`), every worker takes the same steps on its share of the rows; the first one reports progress
    and writes checkpoints and weights into `work_dir`, which all of them read.
    """
    from transformers import AutoTokenizer

    started = time.perf_counter()
    device = device or default_device()
    length = config.max_sequence_length
    # An example with no loss token left (its prompt fills the length) would cost time and teach nothing.
    usable = [e for e in train_examples if any(x != IGNORE for x in e.labels[1:None if config.packing else length])]
    if len(usable) < len(train_examples):
        log.info("%d of %d examples have no completion token within the length; left out",
                 len(train_examples) - len(usable), len(train_examples))
    if not usable:
        raise ValueError("no training example has a completion token to learn from")
    checkpoints = Path(work_dir) / "checkpoints"
    checkpoint = latest_checkpoint(checkpoints)

    # 1. Model and tokenizer. Seeding first makes LoRA's initialization and every dropout mask repeat.
    torch.manual_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    pad_id = next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)
    model = load_model(Path(base_model_dir), config, device, checkpoint)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    parallel = DataParallel.current(device)
    parallel.same_start(trainable)

    # 2. Data: rows (packed or not), then per epoch a shuffled list of micro-batches, grouped into steps.
    rows = pack(usable, length, pad_id) if config.packing else rows_from_examples(usable, length)
    held_out = rows_from_examples(validation_examples or [], length)  # never packed
    validation = [collate(held_out[i:i + config.batch_size], pad_id)
                  for i in range(0, len(held_out), config.batch_size)]
    accumulation = config.gradient_accumulation_steps
    steps_per_epoch = math.ceil(len(rows) / (config.batch_size * accumulation))
    total_steps = steps_per_epoch * config.epochs

    # 3. Optimizer and learning-rate schedule.
    optimizer = make_optimizer(model, config, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(config.warmup_steps, total_steps))

    # 4. Counters; from the checkpoint when resuming.
    step, epochs_completed, train_tokens = 0, 0, 0
    step_metrics: list[tuple[int, int, float]] = []
    validation_metrics: list[tuple[int, int, float]] = []
    if checkpoint:
        state = torch.load(checkpoint / "state.pt", weights_only=True)
        if state["config"] != dataclasses.asdict(config) or state["total_steps"] != total_steps:
            raise ValueError(f"{checkpoint} was made with other settings or data; remove it to start over")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, epochs_completed, train_tokens = state["step"], state["epoch"], state["train_tokens"]
        step_metrics, validation_metrics = state["step_metrics"], state["validation_metrics"]
        torch.set_rng_state(state["rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        log.info("resuming from %s at step %d", checkpoint, step)
    if parallel.world > 1:  # each worker its own dropout masks, repeatably (the checkpoint holds the first's RNG)
        torch.manual_seed(config.seed + 1 + parallel.rank + parallel.world * step)

    # 5. Train.
    stopped = False
    session_steps, session_tokens = 0, 0
    loop_started = time.perf_counter()
    for epoch in range(epochs_completed + 1, config.epochs + 1):
        for group in epoch_steps(rows, config.batch_size, accumulation, config.seed + epoch, pad_id, parallel.rank,
                                 parallel.world):  # this worker's share of each step
            stopped, loss_tokens, tokens = parallel.agree(should_stop(), sum(b.loss_tokens for b in group),
                                                          sum(b.tokens for b in group))
            if stopped:
                break
            step_loss = torch.zeros((), device=device)
            for batch in group:
                loss = loss_sum(model, batch, device) / max(1, loss_tokens)  # the step's mean token loss, in parts
                loss.backward()
                step_loss += loss.detach()
            step_loss = parallel.sum_gradients(trainable, step_loss)
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            learning_rate = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            step += 1
            session_steps += 1
            train_tokens += tokens
            session_tokens += tokens
            loss_value = step_loss.item()  # the one device sync of the step
            step_metrics.append((step, epoch, loss_value))
            elapsed = time.perf_counter() - loop_started
            if parallel.first:
                on_progress(Progress(step, total_steps, epoch, config.epochs, loss_value, learning_rate,
                                     session_tokens / elapsed if elapsed > 0 else 0.0,
                                     elapsed / session_steps * (total_steps - step)))
        if stopped:
            break

        # 6. Epoch end: validation loss, then a checkpoint to resume from (by the first worker; the others wait
        # for it at the next step, or below).
        epochs_completed = epoch
        if not parallel.first:
            continue
        if validation:
            validation_metrics.append((step, epoch, evaluate(model, validation, device)))
        save_checkpoint(checkpoints, epoch, model, {
            "config": dataclasses.asdict(config), "total_steps": total_steps, "epoch": epoch, "step": step,
            "train_tokens": train_tokens, "step_metrics": step_metrics, "validation_metrics": validation_metrics,
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "rng": torch.get_rng_state(), "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda"
            else None})

    # 7. The final weights (the adapter alone for LoRA) and the tokenizer, for serving.
    model_dir: Path | None
    if stopped:
        parallel.wait_for_all()
        last = latest_checkpoint(checkpoints)
        model_dir = last / "model" if last else None
    else:
        model_dir = Path(work_dir) / "model"
        if parallel.first:
            with atomic_dir(model_dir) as staging:
                model.save_pretrained(staging)
                tokenizer.save_pretrained(staging)
        parallel.wait_for_all()
    return TrainingResult(step, epochs_completed, stopped, step_metrics, validation_metrics, train_tokens,
                          time.perf_counter() - started, model_dir)


def evaluate(model: Any, batches: Sequence[Batch], device: torch.device) -> float:
    """Mean token loss over the batches, without gradients (and with dropout off)."""
    model.eval()
    with torch.inference_mode():
        total = sum(loss_sum(model, batch, device) for batch in batches)
    model.train()
    return float(total) / max(1, sum(b.loss_tokens for b in batches))
