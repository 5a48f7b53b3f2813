"""The fine-tuning loop on a tiny random Llama: what it learns, what it saves, and that it repeats itself."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from outcrop.customization.trainer import (
    IGNORE,
    Progress,
    Row,
    TrainingConfig,
    collate,
    epoch_steps,
    linear_schedule,
    load_model,
    loss_sum,
    pack,
    rows_from_examples,
    train,
)
from tests.helpers import CORPUS, make_tiny_llama

CPU = torch.device("cpu")


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def examples(base) -> list[Example]:
    """Four sentences; the first three words are the prompt (no loss), the rest and EOS the completion."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    out = []
    for text in CORPUS[:4]:
        prompt = tokenizer(" ".join(text.split()[:3])).input_ids
        ids = tokenizer(text).input_ids + [tokenizer.eos_token_id]
        out.append(Example(ids, [IGNORE] * len(prompt) + ids[len(prompt):]))
    return out


def folder_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def run(base, examples, tmp_path, name="work", validation=None, **config):
    settings = {"epochs": 2, "learning_rate": 1e-2, "warmup_steps": 0, "seed": 7, **config}
    return train(base, examples, validation, TrainingConfig(**settings), tmp_path / name, device=CPU)


def epoch_mean(result, epoch):
    losses = [loss for _, e, loss in result.step_metrics if e == epoch]
    return sum(losses) / len(losses)


def test_lora_learns_leaves_the_base_alone_and_saves_an_adapter(base, examples, tmp_path):
    from safetensors.torch import load_file

    before = folder_digest(base)
    seen: list[Progress] = []
    result = train(base, examples, examples[:2], TrainingConfig(epochs=6, learning_rate=5e-2, warmup_steps=2),
                   tmp_path / "work", on_progress=seen.append, device=CPU)

    # LoRA moves a random tiny model slowly (its LM head is not adapted): the loss falls, a little.
    assert (result.steps, result.epochs_completed, result.stopped) == (24, 6, False)
    assert epoch_mean(result, 6) < epoch_mean(result, 1)
    assert [s for s, _, _ in result.validation_metrics] == [4, 8, 12, 16, 20, 24]
    assert result.validation_metrics[-1][2] < result.validation_metrics[0][2]
    assert result.train_tokens == 6 * sum(len(e.input_ids) for e in examples)
    assert [p.step for p in seen] == list(range(1, 25)) and seen[-1].percent == 100.0
    assert seen[0].learning_rate == 0.0 and seen[2].learning_rate == pytest.approx(5e-2)

    # The base folder is never written; the adapter holds only LoRA matrices, and they moved.
    assert folder_digest(base) == before
    assert result.model_dir == tmp_path / "work" / "model"
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= {
        p.name for p in result.model_dir.iterdir()}
    adapter = load_file(result.model_dir / "adapter_model.safetensors")
    assert adapter and all("lora_" in name for name in adapter)
    assert any(t.abs().sum() > 0 for name, t in adapter.items() if "lora_B" in name)  # B starts at zero
    assert [p.name for p in (tmp_path / "work" / "checkpoints").iterdir()] == ["epoch-6"]

    # Base tensors inside the trained model equal the base's own.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    original = AutoModelForCausalLM.from_pretrained(base).state_dict()
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), result.model_dir)
    for name, tensor in tuned.get_base_model().state_dict().items():
        if "lora_" not in name:
            assert torch.equal(tensor, original[name.replace(".base_layer", "")]), name


def test_full_fine_tuning_memorises_and_changes_every_weight(base, examples, tmp_path):
    from transformers import AutoModelForCausalLM

    before = folder_digest(base)
    result = run(base, examples, tmp_path, validation=examples, method="full", epochs=4, warmup_steps=2)
    assert folder_digest(base) == before
    means = [epoch_mean(result, epoch) for epoch in (1, 2, 3, 4)]
    assert means == sorted(means, reverse=True) and means[-1] < means[0] - 1.0
    held_out = [loss for _, _, loss in result.validation_metrics]
    assert held_out == sorted(held_out, reverse=True)
    original = AutoModelForCausalLM.from_pretrained(base).state_dict()
    tuned = AutoModelForCausalLM.from_pretrained(result.model_dir).state_dict()
    assert original.keys() == tuned.keys()
    changed = [name for name in original if not torch.equal(original[name], tuned[name])]
    assert len(changed) == len(original)
    assert (result.model_dir / "tokenizer.json").is_file()


def test_loss_is_taken_only_where_labels_are_not_masked(base, examples):
    model = load_model(base, TrainingConfig(method="full"), CPU).eval()
    ids = examples[0].input_ids
    loss_positions = [4, 7]  # labels[i] is the target of position i, predicted from position i - 1
    labels = [t if i in loss_positions else IGNORE for i, t in enumerate(ids)]
    short = Example(examples[1].input_ids[:5], [IGNORE] * 4 + examples[1].input_ids[4:5])

    batch = collate(rows_from_examples([Example(ids, labels), short], 1024), pad_id=0)
    assert batch.loss_tokens == 3 and batch.attention_mask is not None
    with torch.no_grad():
        mean = loss_sum(model, batch, CPU) / batch.loss_tokens
        first = torch.log_softmax(model(torch.tensor([ids])).logits[0], dim=-1)
        second = torch.log_softmax(model(torch.tensor([short.input_ids])).logits[0], dim=-1)
    by_hand = -(first[3, ids[4]] + first[6, ids[7]] + second[3, short.input_ids[4]]) / 3
    assert mean.item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_two_runs_give_the_same_losses(base, examples, tmp_path):
    first = run(base, examples, tmp_path, "a", lora_dropout=0.1, batch_size=2)
    second = run(base, examples, tmp_path, "b", lora_dropout=0.1, batch_size=2)
    assert first.step_metrics == second.step_metrics
    third = run(base, examples, tmp_path, "c", lora_dropout=0.1, batch_size=2, seed=8)
    assert third.step_metrics != first.step_metrics


def test_accumulating_two_batches_of_one_equals_one_batch_of_two(base, examples, tmp_path):
    from safetensors.torch import load_file

    # Examples of different lengths, so the batch of two is padded and token counts differ.
    uneven = [examples[0], Example(examples[1].input_ids[:6], examples[1].labels[:6]), *examples[2:]]
    accumulated = run(base, uneven, tmp_path, "accumulated", batch_size=1, gradient_accumulation_steps=2,
                      lora_dropout=0.0)
    batched = run(base, uneven, tmp_path, "batched", batch_size=2, lora_dropout=0.0)
    assert len(accumulated.step_metrics) == len(batched.step_metrics) == 4
    for (s1, e1, l1), (s2, e2, l2) in zip(accumulated.step_metrics, batched.step_metrics, strict=True):
        assert (s1, e1) == (s2, e2) and l1 == pytest.approx(l2, rel=1e-5)
    a = load_file(accumulated.model_dir / "adapter_model.safetensors")
    b = load_file(batched.model_dir / "adapter_model.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-3, atol=1e-5)  # Adam magnifies float noise


def test_warmup_then_linear_decay_like_transformers():
    from transformers import get_linear_schedule_with_warmup

    factor = linear_schedule(warmup_steps=4, total_steps=12)
    assert [factor(s) for s in range(13)] == pytest.approx(
        [0, 0.25, 0.5, 0.75, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8, 0])
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    reference = get_linear_schedule_with_warmup(optimizer, 4, 12).lr_lambdas[0]
    assert [factor(s) for s in range(13)] == pytest.approx([reference(s) for s in range(13)])
    assert [linear_schedule(0, 4)(s) for s in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]


def test_should_stop_stops_within_one_step(base, examples, tmp_path):
    seen: list[int] = []
    result = train(base, examples, None, TrainingConfig(epochs=3, gradient_accumulation_steps=2),
                   tmp_path / "work", on_progress=lambda p: seen.append(p.step),
                   should_stop=lambda: len(seen) >= 3, device=CPU)
    # Steps 1-2 made epoch 1 (and its checkpoint), step 3 began epoch 2, then the stop came.
    assert result.stopped and result.steps == 3 and seen == [1, 2, 3]
    assert result.epochs_completed == 1
    assert result.model_dir == tmp_path / "work" / "checkpoints" / "epoch-1" / "model"
    assert not (tmp_path / "work" / "model").exists()

    early = train(base, examples, None, TrainingConfig(), tmp_path / "early", should_stop=lambda: True, device=CPU)
    assert early.stopped and early.steps == 0 and early.model_dir is None


def test_resuming_from_a_checkpoint_equals_an_uninterrupted_run(base, examples, tmp_path):
    from safetensors.torch import load_file

    config = TrainingConfig(epochs=3, learning_rate=1e-2, warmup_steps=2, lora_dropout=0.1, seed=3)
    whole = train(base, examples, examples[:2], config, tmp_path / "whole", device=CPU)

    steps: list[int] = []
    interrupted = train(base, examples, examples[:2], config, tmp_path / "resumed",
                        on_progress=lambda p: steps.append(p.step), should_stop=lambda: len(steps) >= 6, device=CPU)
    assert interrupted.stopped and interrupted.epochs_completed == 1
    resumed = train(base, examples, examples[:2], config, tmp_path / "resumed", device=CPU)

    assert not resumed.stopped and resumed.epochs_completed == 3
    assert resumed.step_metrics == whole.step_metrics
    assert resumed.validation_metrics == whole.validation_metrics
    assert resumed.train_tokens == whole.train_tokens
    a = load_file(whole.model_dir / "adapter_model.safetensors")
    b = load_file(resumed.model_dir / "adapter_model.safetensors")
    assert all(torch.equal(a[name], b[name]) for name in a)

    with pytest.raises(ValueError, match="other settings"):
        train(base, examples, None, TrainingConfig(epochs=4), tmp_path / "resumed", device=CPU)


def test_packing_makes_full_rows_that_attend_within_each_example(base, examples, tmp_path):
    rows = pack(examples, 16, pad_id=2)
    total = sum(len(e.input_ids) for e in examples)
    assert len(rows) == math.ceil(total / 16) and all(len(r.input_ids) == 16 for r in rows)
    stream = [t for r in rows for t in r.input_ids]
    assert stream[:total] == [t for e in examples for t in e.input_ids] and set(stream[total:]) <= {2}
    positions = [p for r in rows for p in r.position_ids][:total]
    assert positions == [p for e in examples for p in range(len(e.input_ids))]

    batch = collate(rows[:2], pad_id=2)
    assert batch.attention_mask is None and batch.position_ids.shape == (2, 16)

    # Packed, examples score as they do apart: attention stays inside each example, and an example's first
    # token is not the target of the previous one's last (every token has a label here, as in pre-training).
    model = load_model(base, TrainingConfig(method="full"), CPU).eval()
    two = [Example(e.input_ids, e.input_ids) for e in examples[:2]]
    with torch.no_grad():
        packed = collate(pack(two, sum(len(e.input_ids) for e in two), pad_id=2), pad_id=2)
        apart = collate(rows_from_examples(two, 1024), pad_id=2)
        assert packed.loss_tokens == apart.loss_tokens == sum(len(e.input_ids) - 1 for e in two)
        assert loss_sum(model, packed, CPU).item() == pytest.approx(loss_sum(model, apart, CPU).item(), rel=1e-5)

    result = run(base, examples, tmp_path, packing=True, max_sequence_length=16, batch_size=2, epochs=6,
                 learning_rate=3e-2)
    assert result.steps == 6 * math.ceil(len(rows) / 2)
    assert result.train_tokens == 6 * total
    assert epoch_mean(result, 6) < epoch_mean(result, 1)


def test_hyperparameters_come_as_bedrock_sends_them():
    config = TrainingConfig.from_hyperparameters({
        "epochCount": "3", "batchSize": "2", "learningRate": "0.0002", "learningRateWarmupSteps": "0",
        "fineTuningMethod": "FULL", "loraRank": "16", "loraAlpha": "32", "loraDropout": "0.1",
        "maxSequenceLength": "512", "packing": "true", "gradientAccumulationSteps": "4", "weightDecay": "0.01",
        "seed": "1", "somethingElse": "x"})
    assert config == TrainingConfig(epochs=3, batch_size=2, learning_rate=2e-4, warmup_steps=0, method="full",
                                    lora_rank=16, lora_alpha=32, lora_dropout=0.1, max_sequence_length=512,
                                    packing=True, gradient_accumulation_steps=4, weight_decay=0.01, seed=1)
    typed = {"epochCount": 2, "learningRate": 1e-4, "packing": False, "fineTuningMethod": "lora"}  # as resolved
    assert TrainingConfig.from_hyperparameters(typed) == TrainingConfig(epochs=2)
    with pytest.raises(ValueError, match="epochCount"):
        TrainingConfig.from_hyperparameters({"epochCount": "2.5"})
    with pytest.raises(ValueError, match="packing"):
        TrainingConfig.from_hyperparameters({"packing": "maybe"})
    with pytest.raises(ValueError, match="fineTuningMethod"):
        TrainingConfig.from_hyperparameters({"fineTuningMethod": "qlora"})


def test_examples_without_a_completion_token_are_left_out(base, examples, tmp_path):
    prompt_only = Example(examples[0].input_ids, [IGNORE] * len(examples[0].input_ids))
    result = run(base, [*examples, prompt_only], tmp_path, epochs=1)
    assert result.steps == 4 and result.train_tokens == sum(len(e.input_ids) for e in examples)
    with pytest.raises(ValueError, match="completion token"):
        run(base, [prompt_only], tmp_path, "none", epochs=1)


def _train_as_worker(rank: int, world: int, port: int, base: Path, examples: list, work_dir: Path,
                     config: dict, results, stop_at: dict[int, int] | None = None) -> None:
    """One of `world` processes training together over gloo (what Ray Train sets up for each worker).
    `stop_at`: rank -> the steps after which that worker alone is asked to stop (it is asked before each)."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    asked: list[int] = []
    limit = (stop_at or {}).get(rank)

    def should_stop() -> bool:
        asked.append(1)
        return limit is not None and len(asked) > limit

    try:
        result = train(base, examples, None, TrainingConfig(**config), work_dir, device=CPU, should_stop=should_stop)
        results.put((rank, result.step_metrics, result.train_tokens, result.model_dir, result.stopped))
    finally:
        dist.destroy_process_group()


def _together(tmp_path: Path, base: Path, examples: list, config: dict, stop_at: dict[int, int] | None = None):
    """Two spawned workers' results, by rank."""
    import torch.multiprocessing as mp

    from tests.conftest import free_port

    context = mp.get_context("spawn")
    results = context.Queue()
    port = free_port()
    workers = [context.Process(target=_train_as_worker, args=(rank, 2, port, base, examples, tmp_path / "together",
                                                              config, results, stop_at)) for rank in range(2)]
    for worker in workers:
        worker.start()
    together = dict((rank, rest) for rank, *rest in (results.get(timeout=120) for _ in workers))
    for worker in workers:
        worker.join(timeout=30)
    assert [w.exitcode for w in workers] == [0, 0]
    return together


def test_two_workers_take_the_steps_one_worker_takes(base, examples, tmp_path):
    """Each step's rows are dealt out between two workers (three rows: one gets two micro-batches of one, the
    other one; in the last step of each epoch one gets none) and their gradients summed: the same losses and
    weights as one."""
    from safetensors.torch import load_file

    config = {"epochs": 2, "learning_rate": 1e-2, "warmup_steps": 0, "seed": 7, "batch_size": 1,
              "gradient_accumulation_steps": 3, "lora_dropout": 0.0}
    alone = train(base, examples, None, TrainingConfig(**config), tmp_path / "alone", device=CPU)
    together = _together(tmp_path, base, examples, config)
    for rank in (0, 1):
        steps, tokens, _, _ = together[rank]
        assert tokens == alone.train_tokens
        assert [(s, e) for s, e, _ in steps] == [(s, e) for s, e, _ in alone.step_metrics]
        assert [loss for *_, loss in steps] == pytest.approx([loss for *_, loss in alone.step_metrics], rel=1e-5)
    a = load_file(alone.model_dir / "adapter_model.safetensors")
    b = load_file(together[0][2] / "adapter_model.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-3, atol=1e-5)  # Adam magnifies float noise


def test_every_worker_gets_rows_of_each_step_even_with_batches_of_one():
    rows = [Row([1, 2, 3], [IGNORE, 2, 3]) for _ in range(5)]
    alone = epoch_steps(rows, 1, 2, seed=3, pad_id=0)
    assert [len(step) for step in alone] == [2, 2, 1]  # 5 rows, 2 a step, micro-batches of 1
    shares = [epoch_steps(rows, 1, 2, seed=3, pad_id=0, rank=rank, world=2) for rank in (0, 1)]
    assert [[len(step) for step in share] for share in shares] == [[1, 1, 1], [1, 1, 0]]


def test_a_stop_asked_of_one_worker_stops_both_at_the_same_step(base, examples, tmp_path):
    """Only the second worker is asked to stop, after 3 steps (4 rows, 2 a step: in the second epoch); both stop
    before step 4, no collective is left waiting, and the first epoch's checkpoint stays to resume from."""
    config = {"epochs": 3, "learning_rate": 1e-2, "warmup_steps": 0, "seed": 7, "batch_size": 2}
    together = _together(tmp_path, base, examples, config, stop_at={1: 3})
    for rank in (0, 1):
        steps, _, model_dir, stopped = together[rank]
        assert stopped and [(s, e) for s, e, _ in steps] == [(1, 1), (2, 1), (3, 2)]
    assert together[0][2] == tmp_path / "together" / "checkpoints" / "epoch-1" / "model"
