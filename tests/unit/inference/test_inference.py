"""The inference layer without HTTP: sampling, continuous batching, streaming, stops, eviction."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from outcrop.inference.engine import Engine
from outcrop.inference.sampling import SamplingParams, sample
from outcrop.inference.scheduler import LENGTH, STOP_SEQUENCE
from tests.helpers import make_tiny_llama


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_llama(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    engine = Engine(tmp_path_factory.mktemp("cache"), memory_budget_bytes=1 << 30, max_batch=4)
    yield engine
    engine.close()


def test_top_k_and_top_p_never_pick_outside_their_set():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    generator = torch.Generator().manual_seed(0)
    top_k = {sample(logits, SamplingParams(temperature=1, top_p=1, top_k=2), generator) for _ in range(300)}
    assert top_k == {0, 1}
    top_p = {sample(logits, SamplingParams(temperature=1, top_p=0.75, top_k=0), generator) for _ in range(300)}
    assert top_p == {0, 1}  # 0.5 + 0.3 reaches 0.75; 0.15 and 0.05 are cut
    assert sample(logits, SamplingParams(temperature=0), generator) == 0


def test_seeded_sampling_is_repeatable():
    logits = torch.randn(50)
    draws = [[sample(logits, SamplingParams(temperature=1, top_p=1), p.generator()) for _ in range(5)]
             for p in (SamplingParams(seed=3), SamplingParams(seed=3))]
    assert draws[0] == draws[1]


def _ids(deployment, text):
    return deployment.loaded.tokenizer(text)["input_ids"]


def test_batched_generation_matches_one_at_a_time(engine, tiny_dir):
    deployment = engine.get(tiny_dir)
    prompts = ["the quick brown fox", "hello", "after the rains the roads are flooded", "models", "a", "tiny"]
    params = [SamplingParams(max_tokens=4 + 3 * i, temperature=0) for i in range(len(prompts))]
    alone = [deployment.scheduler.submit(_ids(deployment, p), sp).result().text
             for p, sp in zip(prompts, params, strict=True)]
    together: dict[int, str] = {}

    def run(i):
        together[i] = deployment.scheduler.submit(_ids(deployment, prompts[i]), params[i]).result().text
    # Six requests into a batch of four: two join the batch while others are mid-generation.
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [together[i] for i in range(len(prompts))] == alone


def test_stream_holds_back_a_stop_sequence(engine, tiny_dir):
    deployment = engine.get(tiny_dir)
    for text in ("hello world", "the quick brown fox", "models are loaded", "after the rains"):
        prompt = _ids(deployment, text)
        full = deployment.scheduler.submit(prompt, SamplingParams(max_tokens=30, temperature=0)).result()
        if len(full.text) >= 16:
            break
    assert full.output_tokens <= 30 and (full.finish_reason != LENGTH or full.output_tokens == 30)
    stop = full.text[10:13]
    stream = deployment.scheduler.submit(prompt, SamplingParams(max_tokens=30, temperature=0, stop=(stop,)))
    deltas = list(stream)
    assert "".join(deltas) == full.text[:full.text.index(stop)]
    assert stream.completion.finish_reason == STOP_SEQUENCE and stream.completion.stop_sequence == stop


def test_abandoned_stream_frees_its_slot(engine, tiny_dir):
    deployment = engine.get(tiny_dir)
    stream = iter(deployment.scheduler.submit(_ids(deployment, "hello"),
                                              SamplingParams(max_tokens=200, temperature=0)))
    next(stream)
    stream.close()  # what happens when an HTTP client disconnects mid-stream
    done = deployment.scheduler.submit(_ids(deployment, "hi"), SamplingParams(max_tokens=3, temperature=0)).result()
    assert done.output_tokens <= 3
    deadline = time.monotonic() + 10  # the worker retires both at the end of its current step
    while deployment.scheduler.active and time.monotonic() < deadline:
        time.sleep(0.01)
    assert deployment.scheduler.active == 0


def test_least_recently_used_model_is_unloaded_beyond_the_budget(tmp_path):
    first, second = make_tiny_llama(tmp_path / "a"), make_tiny_llama(tmp_path / "b")
    engine = Engine(tmp_path / "cache", memory_budget_bytes=1, max_batch=2)  # room for one model only
    try:
        engine.get(first)
        engine.get(second)
        assert [path for path, _, _ in engine.loaded()] == [str(second)]
        engine.get(first)
        assert [path for path, _, _ in engine.loaded()] == [str(first)]
    finally:
        engine.close()


def test_batched_sampling_draws_what_row_by_row_sampling_draws():
    from outcrop.inference.sampling import sample_batch

    torch.manual_seed(1)
    params = [SamplingParams(temperature=0), SamplingParams(temperature=0.7, top_p=0.9, seed=1),
              SamplingParams(temperature=1.0, top_k=5, top_p=1.0, seed=2), SamplingParams(top_k=1, seed=3),
              SamplingParams(temperature=1.3, top_k=40, top_p=0.5, seed=4)]
    for scale in [3] * 20 + [0.1] * 5:  # peaked rows (a nucleus in the top-k head), then flat ones (sorted in full)
        logits = torch.randn(5, 400) * scale
        one = [sample(logits[i], p, p.generator()) for i, p in enumerate(params)]
        batch = sample_batch(logits, params, [p.generator() for p in params])
        assert one == batch


def _random_adapter(base_dir, folder, seed):
    """A LoRA adapter with random (non-zero) weights, so that it changes what the model says."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                           LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj", "up_proj"],
                                      init_lora_weights=False))
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(folder)  # as the trainer saves it
    return folder


def test_adapters_of_one_base_share_it_and_answer_as_if_merged(tiny_dir, tmp_path):
    from outcrop.inference.loader import load_causal_lm

    adapters = [_random_adapter(tiny_dir, tmp_path / f"adapter-{i}", seed=i) for i in range(2)]
    engine = Engine(tmp_path / "cache", memory_budget_bytes=1 << 30, max_batch=4)
    try:
        prompt = engine.get(tiny_dir).loaded.tokenizer("the quick brown fox")["input_ids"]
        greedy = SamplingParams(max_tokens=12, temperature=0)
        expected = []
        for adapter in adapters:
            merged = load_causal_lm(adapter, tmp_path, base=tiny_dir)
            ids = torch.tensor([prompt])
            with torch.inference_mode():
                out = merged.model.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=None)
            expected.append(merged.tokenizer.decode(out[0, len(prompt):], skip_special_tokens=True))
        deployments = [engine.get(a, base=tiny_dir) for a in adapters]
        assert deployments[0].loaded is deployments[1].loaded  # one copy of the base
        results: dict[int, str] = {}

        def run(i):
            results[i] = deployments[i % 2].scheduler.submit(prompt, greedy).result().text
        threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]  # both adapters in one batch
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [results[i] for i in range(4)] == [expected[0], expected[1]] * 2
        assert expected[0] != expected[1]
    finally:
        engine.close()


def test_greedy_generation_matches_transformers_generate(engine, tiny_dir):
    """transformers' own generate is the oracle for the scheduler's cache, masks and positions."""
    deployment = engine.get(tiny_dir)
    model, tokenizer = deployment.loaded.model, deployment.loaded.tokenizer
    for text in ("the quick brown fox", "hello", "models are loaded from folders and served"):
        prompt = tokenizer(text)["input_ids"]
        with torch.inference_mode():
            out = model.generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=False, eos_token_id=None)
        tokens = out[0, len(prompt):].tolist()
        if tokenizer.eos_token_id in tokens:  # the scheduler stops there; compare up to it
            tokens = tokens[:tokens.index(tokenizer.eos_token_id)]
        expected = tokenizer.decode(tokens, skip_special_tokens=True)
        got = deployment.scheduler.submit(prompt, SamplingParams(max_tokens=10, temperature=0)).result().text
        assert got == expected
