"""A judge run on a real (tiny, random-weight) model through the engine's scheduler.

The tiny model writes noise, so most verdicts are unparseable; what is checked is the accounting: every
verdict is either an allowed scale value or counted as unparseable, and the summary's counts add up."""

from __future__ import annotations

import pytest

from outcrop.evaluation.judge import (
    JUDGE_MAX_TOKENS,
    JUDGE_STOP_SEQUENCES,
    builtin_rubric,
    custom_rubric,
    judge,
    summarise,
)
from outcrop.inference.chat import render_chat
from outcrop.inference.engine import Engine
from outcrop.inference.sampling import SamplingParams

ITEMS = [
    ("What is the capital of France?", "The capital of France is Paris.", "Paris"),
    ("What is 2 + 2?", "2 + 2 is 5.", "4"),
    ("Name a primary colour.", "Bananas are yellow and tasty.", None),
    ("Say hello in French.", "Bonjour !", None),
]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    engine = Engine(tmp_path_factory.mktemp("judge-cache"), memory_budget_bytes=1 << 30, max_batch=8)
    yield engine
    engine.close()


def chat_generate(engine: Engine, path, texts: list[str], max_tokens: int = 24):
    """A `generate` for `judge`: each chat rendered with the model's own template (the way the runtime and
    customization's `sample` do) and submitted at once, so the scheduler batches them."""
    deployment = engine.get(path)
    tokenizer = deployment.loaded.tokenizer

    def generate(chats: list[list[dict]]) -> list[str]:
        streams = []
        for chat in chats:
            system = "\n".join(m["content"] for m in chat if m["role"] == "system")
            turns = [m for m in chat if m["role"] != "system"]
            ids = tokenizer(render_chat(tokenizer, turns, system), add_special_tokens=False)["input_ids"]
            params = SamplingParams(max_tokens=max_tokens, temperature=0, stop=JUDGE_STOP_SEQUENCES)
            streams.append(deployment.scheduler.submit(ids, params))
        answers = [stream.result().text for stream in streams]
        texts.extend(answers)
        return answers

    return generate


@pytest.mark.parametrize("rubric", [
    builtin_rubric("Builtin.Correctness"),
    builtin_rubric("Builtin.Harmfulness"),
    custom_rubric({"name": "Language", "instructions": "Which language is {{prediction}} written in?",
                   "ratingScale": [{"definition": "English", "value": {"stringValue": "en"}},
                                   {"definition": "French", "value": {"stringValue": "fr"}}]}),
], ids=lambda rubric: rubric.name)
def test_tiny_model_verdicts_are_parsed_or_counted(engine, tiny_model_dir, rubric):
    texts: list[str] = []
    verdicts = judge(chat_generate(engine, tiny_model_dir, texts), rubric, ITEMS, batch_size=3)

    assert len(verdicts) == len(ITEMS) == len(texts)
    allowed = {item.value for item in rubric.scale}
    for verdict, text in zip(verdicts, texts, strict=True):
        assert verdict.raw == text
        assert verdict.value is None or verdict.value in allowed
        assert (verdict.score is None) == (verdict.value is None or not rubric.numeric)
        assert verdict.score is None or 0.0 <= verdict.score <= 1.0

    summary = summarise(rubric, verdicts)
    assert summary["count"] + summary["unparseable"] == len(ITEMS)
    assert summary["count"] == sum(1 for v in verdicts if v.value is not None)
    assert sum(summary["distribution"].values()) == summary["count"]
    assert set(summary["distribution"]) == {rubric.label(value) for value in allowed}
    if summary["count"] and rubric.numeric:
        assert 0.0 <= summary["mean"] <= 1.0
    else:
        assert summary["mean"] is None


def test_judge_budget_is_a_sensible_generation_length():
    # Callers size the judge's max_tokens from this; a rating line and a short reason must fit.
    assert 32 <= JUDGE_MAX_TOKENS <= 512
