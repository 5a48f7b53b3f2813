"""Constrained decoding: `Grammars.mask` and the scheduler's constrained rows, against llguidance as the oracle.

The mask is checked token by token against what llguidance itself says a matcher accepts next (trying each
token on a copy of the matcher), so the bitmask unpacking, the batch rows it writes and the columns beyond
the vocabulary are all held to llguidance's own answer. End to end, the tiny random-weight Llama writes
nothing meaningful on its own: every JSON document it produces validates only because the mask made it so."""

from __future__ import annotations

import json
import time

import jsonschema
import llguidance
import llguidance.hf
import pytest
import torch

from outcrop.inference.engine import Engine
from outcrop.inference.grammar import GrammarError, Grammars, json_schema_grammar
from outcrop.inference.sampling import SamplingParams
from outcrop.inference.scheduler import END_OF_TEXT, LENGTH
from tests.helpers import make_tiny_llama, train_tokenizer

SCHEMA = {"type": "object", "properties": {
    # ASCII only (a pattern, not just maxLength), so that a text cut at max_tokens never ends mid-character.
    "city": {"type": "string", "pattern": "^[a-z ]{1,10}$"},
    "unit": {"enum": ["celsius", "fahrenheit"]},
    "n": {"type": "integer", "minimum": 0, "maximum": 999}},
    "required": ["city", "unit", "n"], "additionalProperties": False}
GRAMMAR = json_schema_grammar(SCHEMA)
#: A shorter document, for the tests where what matters is that a constrained row shares the batch.
SMALL = json_schema_grammar({"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 99}},
                             "required": ["n"], "additionalProperties": False})
#: A grammar that accepts before it stops: end-of-text is allowed after one letter, and alone after three.
LETTERS = '%llguidance {}\nstart: /[a-c]{1,3}/\n'


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return train_tokenizer(tmp_path_factory.mktemp("tokenizer"))


def allowed_next(matcher, vocab_size: int) -> set[int]:
    """The oracle: the tokens llguidance accepts next, each tried on a copy (end-of-text included)."""
    return {t for t in range(vocab_size) if matcher.deep_copy().try_consume_tokens([t]) == 1}


def finite(row: torch.Tensor) -> set[int]:
    return set(torch.isfinite(row).nonzero().flatten().tolist())


# The bitmask has a bit per token rounded up to 32: logits 7 columns wider still end inside it, 45 beyond it.
@pytest.mark.parametrize(("extra_model_vocab", "extra_columns"), [(0, 7), (40, 45)])
def test_mask_leaves_exactly_the_tokens_llguidance_allows(tokenizer, extra_model_vocab, extra_columns):
    """A batch of four rows, two constrained (different grammars, different states) and two free, over a
    few dozen sampled steps. A model whose vocabulary is wider than its tokenizer's (extra_model_vocab)
    and logits wider still (a padded output layer): every column past the tokenizer is never allowed."""
    vocab = len(tokenizer)
    eos = tokenizer.eos_token_id
    grammars = Grammars(tokenizer, vocab + extra_model_vocab, frozenset({eos}))
    width = vocab + extra_model_vocab + extra_columns
    generator = torch.Generator().manual_seed(0)
    matchers = {1: grammars.matcher(GRAMMAR), 3: grammars.matcher(LETTERS)}
    seen_eos_allowed = seen_only_eos = False
    for _ in range(40):
        logits = torch.randn(4, width, generator=generator)
        before = logits.clone()
        grammars.mask(logits, sorted(matchers.items()))
        for row in (0, 2):  # the free rows are untouched
            assert torch.equal(logits[row], before[row])
        for row, matcher in list(matchers.items()):
            allowed = allowed_next(matcher, vocab + extra_model_vocab)
            assert finite(logits[row]) == allowed
            kept = sorted(allowed)
            assert torch.equal(logits[row, kept], before[row, kept])  # allowed logits keep their values
            seen_eos_allowed |= eos in allowed and len(allowed) > 1
            seen_only_eos |= allowed == {eos}
            token = int(torch.multinomial(torch.softmax(logits[row], -1), 1, generator=generator))
            if token == eos:
                matchers[row] = grammars.matcher(GRAMMAR if row == 1 else LETTERS)  # start over
            else:
                assert matcher.consume_token(token)
                if matcher.is_stopped():
                    # Stopped: only end-of-text may follow, which the next step's mask must say.
                    logits = torch.zeros(1, width)
                    grammars.mask(logits, [(0, matcher)])
                    assert finite(logits[0]) == {eos}
                    seen_only_eos = True
                    matchers[row] = grammars.matcher(GRAMMAR if row == 1 else LETTERS)
    # The walk went through the states that matter: end-of-text allowed among others, and alone.
    assert seen_eos_allowed and seen_only_eos


def test_mask_with_no_constrained_rows_changes_nothing(tokenizer):
    grammars = Grammars(tokenizer, len(tokenizer), frozenset({tokenizer.eos_token_id}))
    logits = torch.randn(3, len(tokenizer))
    before = logits.clone()
    grammars.mask(logits, [])
    assert torch.equal(logits, before)


def test_a_cached_grammar_gives_independent_matchers(tokenizer):
    grammars = Grammars(tokenizer, len(tokenizer), frozenset({tokenizer.eos_token_id}))
    first = grammars.matcher(GRAMMAR)
    first_allowed = allowed_next(first, len(tokenizer))
    assert first.consume_tokens(tokenizer('{"city": "', add_special_tokens=False)["input_ids"])
    second = grammars.matcher(GRAMMAR)  # from the cache: must start where a fresh compile starts
    assert second is not first
    assert allowed_next(second, len(tokenizer)) == first_allowed
    assert allowed_next(first, len(tokenizer)) != first_allowed
    # Advancing the second leaves the first where it was (no state shared through the cache).
    state = allowed_next(first, len(tokenizer))
    assert second.consume_tokens(tokenizer('{"city": "ab", ', add_special_tokens=False)["input_ids"])
    assert allowed_next(first, len(tokenizer)) == state


def test_a_grammar_that_does_not_compile_is_a_grammar_error(tokenizer):
    grammars = Grammars(tokenizer, len(tokenizer), frozenset({tokenizer.eos_token_id}))
    with pytest.raises(GrammarError):
        grammars.matcher(json_schema_grammar({"type": "string", "pattern": "(?<=x)y"}))


# -- the scheduler end to end -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    folder = make_tiny_llama(tmp_path_factory.mktemp("tiny"), context=1024)
    engine = Engine(tmp_path_factory.mktemp("cache"), memory_budget_bytes=1 << 30, max_batch=4)
    yield engine.get(folder)
    engine.close()


@pytest.fixture(scope="module")
def oracle(deployment):
    """llguidance's own matcher for the model's tokenizer, built apart from the scheduler's."""
    tokenizer = deployment.loaded.tokenizer
    return llguidance.hf.from_tokenizer(tokenizer, eos_token=tokenizer.eos_token_id)


def _prompt(deployment, text="the weather in paris"):
    return deployment.loaded.tokenizer(text)["input_ids"]


def _together(scheduler, prompt, params):
    """Submit all at once, so that they enter the batch in one prefill, in this order (the worker takes
    waiting requests under the scheduler's condition lock, which submit takes reentrantly)."""
    with scheduler._wake:
        streams = [scheduler.submit(prompt, p) for p in params]
    return [s.result() for s in streams]


def _constrained(seed, max_tokens=80, grammar=GRAMMAR):
    return SamplingParams(max_tokens=max_tokens, temperature=1, top_p=1, seed=seed, grammar=grammar)


def test_constrained_sampling_always_writes_valid_json(deployment, oracle):
    scheduler, tokenizer = deployment.scheduler, deployment.loaded.tokenizer
    prompt = _prompt(deployment)
    complete = _together(scheduler, prompt, [_constrained(seed) for seed in range(4)])
    cut = _together(scheduler, prompt, [_constrained(seed, max_tokens=12) for seed in range(4, 8)])
    for completion in complete:
        # The grammar ends the sequence as soon as the document closes (nothing may follow it).
        assert completion.finish_reason == END_OF_TEXT, completion
        jsonschema.validate(json.loads(completion.text), SCHEMA)
    assert len({c.text for c in complete}) > 1  # sampled, not one forced document
    for completion in cut:
        # Cut at max_tokens: no document yet, but every token so far is one the grammar allowed.
        assert (completion.finish_reason, completion.output_tokens) == (LENGTH, 12)
        ids = tokenizer(completion.text, add_special_tokens=False)["input_ids"]
        matcher = llguidance.LLMatcher(oracle, GRAMMAR, log_level=0)
        assert matcher.validate_tokens(ids) == len(ids), completion.text


def test_constraints_do_not_disturb_the_other_rows(deployment):
    """A seeded free request writes the same text whatever shares its batch: a constrained row before
    it, after it, or joining mid-generation (the prefill of newcomers masks rows from an offset)."""
    scheduler = deployment.scheduler
    prompt = _prompt(deployment)
    free = SamplingParams(max_tokens=16, temperature=1, top_p=1, seed=5)
    constrained = _constrained(1, grammar=SMALL)
    alone = scheduler.submit(prompt, free).result().text
    constrained_alone = scheduler.submit(prompt, constrained).result().text
    assert alone and json.loads(constrained_alone)
    assert _together(scheduler, prompt, [constrained, free])[1].text == alone
    first, second = _together(scheduler, prompt, [free, constrained])
    assert (first.text, second.text) == (alone, constrained_alone)
    # Each joins the other mid-generation. Long runs for the early one (the free one at its full 200 tokens,
    # the constrained one through the bigger schema), so that the newcomer arrives while it still runs even
    # on a busy machine.
    free = SamplingParams(max_tokens=200, temperature=1, top_p=1, seed=5)
    constrained = _constrained(1, max_tokens=200, grammar=GRAMMAR)
    alone = scheduler.submit(prompt, free).result().text
    constrained_alone = scheduler.submit(prompt, constrained).result().text
    for early, late in ((free, constrained), (constrained, free)):
        joined = False
        for _ in range(5):  # a busy machine may let the early one finish first: then try again
            running = scheduler.submit(prompt, early)
            deadline = time.monotonic() + 30
            while running.produced_tokens < 2 and time.monotonic() < deadline:
                time.sleep(0.001)
            joining = scheduler.submit(prompt, late)
            queued_at = running.produced_tokens
            early_done = running.result()
            texts = {early.seed: early_done.text, late.seed: joining.result().text}
            assert texts == {5: alone, 1: constrained_alone}
            joined = queued_at < early_done.output_tokens  # queued while the other still ran
            if joined:
                break
        assert joined, "the newcomer never joined mid-generation"


def test_a_visible_special_token_stays_in_the_text(tmp_path):
    """Mistral's [TOOL_CALLS] is a special token: decoding drops special tokens, except the ones a request
    makes visible (a tool call's marker), which the runtime must see to read the call."""
    from outcrop.inference.scheduler import _decode

    tokenizer = train_tokenizer(tmp_path)
    tokenizer.add_tokens(["[TOOL_CALLS]"], special_tokens=True)
    marker = tokenizer.convert_tokens_to_ids("[TOOL_CALLS]")
    ids = tokenizer("hello[TOOL_CALLS][1]", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert marker in ids
    assert _decode(tokenizer, ids, frozenset()) == tokenizer.decode(ids, skip_special_tokens=True) == "hello[1]"
    assert _decode(tokenizer, ids, frozenset({marker})) == "hello[TOOL_CALLS][1]"


def test_closed_objects_only_narrows_and_leaves_data_alone():
    from outcrop.inference.grammar import closed_objects

    schema = {"type": "object", "properties": {
        "a": {"type": "object", "properties": {"b": {"type": "string"}}},
        "open": {"type": "object", "properties": {"c": {"type": "string"}}, "additionalProperties": True},
        "list": {"type": "array", "items": {"anyOf": [{"type": "object", "properties": {"d": {"type": "integer"}}},
                                                       {"type": "null"}]}},
        "data": {"enum": [{"properties": {"x": 1}}], "default": {"properties": {}}}}}
    closed = closed_objects(schema)
    assert closed["additionalProperties"] is False
    assert closed["properties"]["a"]["additionalProperties"] is False
    assert closed["properties"]["open"]["additionalProperties"] is True  # the caller said so
    # A branch of anyOf/allOf stays open: closing it could refuse what another branch or its parent allows.
    assert "additionalProperties" not in closed["properties"]["list"]["items"]["anyOf"][0]
    combined = {"type": "object", "allOf": [{"properties": {"a": {"type": "string"}}, "required": ["a"]},
                                            {"properties": {"b": {"type": "string"}}, "required": ["b"]}]}
    assert closed_objects(combined) == combined
    unlisted = {"type": "object", "properties": {"a": {}}, "required": ["a", "b"]}  # requires what it lists not
    assert closed_objects(unlisted) == unlisted
    assert closed["properties"]["data"] == schema["properties"]["data"]  # enum and default values are data
    assert "additionalProperties" not in schema  # the caller's schema is not changed
    document = {"a": {"b": "x"}, "open": {"c": "y", "extra": 1}, "list": [{"d": 1, "e": 2}, None]}
    jsonschema.validate(document, closed)
    jsonschema.validate(document, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"a": {"b": "x", "invented": 1}}, closed)
