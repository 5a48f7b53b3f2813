"""Training data (Bedrock's three JSONL formats, validated and tokenized with loss masks) and hyperparameters."""

from __future__ import annotations

import copy
import json

import pytest

from outcrop.catalog.cards import FoundationModel, WeightsSource, builtin_cards
from outcrop.customization import hyperparameters
from outcrop.customization.datasets import (
    CONTINUED_TEXT,
    CONVERSATION,
    IGNORE_INDEX,
    PROMPT_COMPLETION,
    DatasetError,
    load_examples,
)
from outcrop.errors import ValidationException
from outcrop.evaluation.datasets import PACKAGED_DIR
from outcrop.inference.chat import render_chat
from tests.helpers import TEST_DATA, train_tokenizer

SOURCE = "s3://bucket/train.jsonl"
#: The fine-tuning samples of tests/data, and the WikiText-2 sample the package ships for evaluation.
SAMPLES = [*sorted((TEST_DATA / "finetune").glob("*.jsonl")),
           PACKAGED_DIR / "finetune" / "cpt-wikitext2.jsonl"]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    """The tiny test tokenizer, with its ChatML-like template: `<s>role: content</s>`, `<s>assistant: `."""
    return train_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def plain(tok):
    """The same tokenizer without a chat template."""
    other = copy.deepcopy(tok)
    other.chat_template = None
    return other


def load(lines, tokenizer, *, kind="FINE_TUNING", max_tokens=4096, min_records=1, max_records=1000):
    return load_examples(lines, source=SOURCE, customization_type=kind, tokenizer=tokenizer, max_tokens=max_tokens,
                         min_records=min_records, max_records=max_records)


def jl(*records) -> list[str]:
    return [r if isinstance(r, str) else json.dumps(r) for r in records]


def pc(prompt="hello world", completion="the quick fox") -> dict:
    return {"prompt": prompt, "completion": completion}


def msg(role: str, *texts: str) -> dict:
    return {"role": role, "content": [{"text": t} for t in texts]}


def conv(*messages, system=None) -> dict:
    record = {"schemaVersion": "bedrock-conversation-2024", "messages": list(messages)}
    if system is not None:
        record["system"] = [{"text": s} for s in system]
    return record


def spans(tokenizer, example) -> list[str]:
    """The labelled runs of an example, decoded; labels are the input ids themselves where not -100."""
    assert len(example.labels) == len(example.input_ids)
    runs, current = [], []
    for token, label in zip(example.input_ids, example.labels, strict=True):
        if label == IGNORE_INDEX:
            if current:
                runs.append(current)
            current = []
        else:
            assert label == token
            current.append(token)
    if current:
        runs.append(current)
    return [tokenizer.decode(run) for run in runs]


def unlabelled_prefix(example) -> list[int]:
    n = next(i for i, label in enumerate(example.labels) if label != IGNORE_INDEX)
    return example.input_ids[:n]


# -- prompt-completion -------------------------------------------------------------------------------


def test_prompt_completion_renders_with_the_chat_template_and_labels_only_the_completion(tok):
    examples, summary = load(jl(pc(), pc("after the rains", "the roads are wet")), tok)
    first = examples[0]
    assert tok.decode(first.input_ids) == "<s>user: hello world</s><s>assistant: the quick fox</s>"
    assert spans(tok, first) == ["the quick fox</s>"]
    # The prompt is token for token what the runtime sends for one user turn.
    runtime = tok(render_chat(tok, [{"role": "user", "content": "hello world"}], ""), add_special_tokens=False)
    assert unlabelled_prefix(first) == runtime["input_ids"]
    assert spans(tok, examples[1]) == ["the roads are wet</s>"]
    assert summary.source == SOURCE and summary.format == PROMPT_COMPLETION
    assert (summary.records, summary.examples) == (2, 2)
    assert summary.tokens == sum(len(e.input_ids) for e in examples)
    assert summary.trainable_tokens == sum(sum(1 for x in e.labels if x != IGNORE_INDEX) for e in examples)
    assert 0 < summary.trainable_tokens < summary.tokens


def test_prompt_completion_without_a_chat_template_is_prompt_completion_eos(plain):
    examples, summary = load(jl(pc()), plain)
    (example,) = examples
    assert plain.decode(example.input_ids) == "hello worldthe quick fox</s>"
    assert spans(plain, example) == ["the quick fox</s>"]
    assert unlabelled_prefix(example) == plain("hello world")["input_ids"]  # as the runtime tokenizes a raw prompt
    assert example.input_ids[-1] == plain.eos_token_id
    assert summary.format == PROMPT_COMPLETION


# -- conversations -----------------------------------------------------------------------------------


def test_multi_turn_conversation_labels_each_assistant_turn_and_nothing_else(tok):
    record = conv(msg("user", "hi"), msg("assistant", "the dog"), msg("user", "and then"),
                  msg("assistant", "the fox"), system=["be nice", "be brief"])
    (example,), summary = load(jl(record), tok)
    assert tok.decode(example.input_ids) == ("<s>system: be nice\nbe brief</s><s>user: hi</s>"
                                             "<s>assistant: the dog</s><s>user: and then</s>"
                                             "<s>assistant: the fox</s>")
    assert spans(tok, example) == ["the dog</s>", "the fox</s>"]
    runtime = tok(render_chat(tok, [{"role": "user", "content": "hi"}], "be nice\nbe brief"),
                  add_special_tokens=False)
    assert unlabelled_prefix(example) == runtime["input_ids"]
    assert summary.format == CONVERSATION and summary.records == 1


def test_conversation_without_system_or_schema_version_and_with_several_text_blocks(tok):
    record = {"messages": [msg("user", "hello ", "world"), msg("assistant", "the quick", " fox")]}
    (example,), _ = load(jl(record), tok)
    assert tok.decode(example.input_ids) == "<s>user: hello world</s><s>assistant: the quick fox</s>"
    assert spans(tok, example) == ["the quick fox</s>"]


def test_conversation_without_a_chat_template_is_a_plain_transcript(plain):
    record = conv(msg("user", "hi"), msg("assistant", "the dog"), msg("user", "and"), msg("assistant", "the fox"),
                  system=["be nice"])
    (example,), _ = load(jl(record), plain)
    assert plain.decode(example.input_ids) == ("System: be nice\nUser: hi\nAssistant: the dog</s>\n"
                                               "User: and\nAssistant: the fox</s>")
    # The runtime's prompt ends in "\nAssistant:"; what follows, and the EOS where the runtime stops, is labelled.
    assert spans(plain, example) == [" the dog</s>", " the fox</s>"]
    runtime = plain(render_chat(plain, [{"role": "user", "content": "hi"}], "be nice"), add_special_tokens=False)
    assert unlabelled_prefix(example) == runtime["input_ids"]


def test_a_template_that_renders_earlier_turns_differently_is_a_runtime_error(tok):
    odd = copy.deepcopy(tok)
    odd.chat_template = ("{% for m in messages %}<s>{{ m['role'] }}: "
                         "{% if m['role'] == 'assistant' and not loop.last %}(earlier){% else %}{{ m['content'] }}"
                         "{% endif %}</s>{% endfor %}{% if add_generation_prompt %}<s>assistant: {% endif %}")
    (example,), _ = load(jl(conv(msg("user", "hi"), msg("assistant", "the dog"))), odd)
    assert spans(odd, example) == ["the dog</s>"]
    record = conv(msg("user", "hi"), msg("assistant", "the dog"), msg("user", "and"), msg("assistant", "the fox"))
    with pytest.raises(RuntimeError, match=r"line 2: the model's chat template does not render messages\[3\]"):
        load(["", json.dumps(record)], odd)


def test_a_template_that_refuses_a_conversation_is_a_dataset_error_at_its_line(tok):
    strict = copy.deepcopy(tok)
    strict.chat_template = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system prompts') }}"
                            "{% endif %}" + tok.chat_template)
    good = conv(msg("user", "hi"), msg("assistant", "the dog"))
    bad = conv(msg("user", "hi"), msg("assistant", "the dog"), system=["be nice"])
    with pytest.raises(DatasetError, match=f"^{SOURCE} line 2: The model's chat template refused this "
                                           "conversation: no system prompts$"):
        load(jl(good, bad), strict)


# -- continued pre-training --------------------------------------------------------------------------


def test_continued_pretraining_is_input_eos_all_labelled(plain):
    (example,), summary = load(jl({"input": "the quick brown fox"}), plain, kind="CONTINUED_PRE_TRAINING")
    assert plain.decode(example.input_ids) == "the quick brown fox</s>"
    assert example.labels == example.input_ids
    assert summary.format == CONTINUED_TEXT and summary.trainable_tokens == summary.tokens


def test_continued_pretraining_cuts_long_text_into_windows_overlapping_by_one_token(tok):
    text = "the quick brown fox jumps over the lazy dog " * 6
    whole = tok(text)["input_ids"] + [tok.eos_token_id]
    size = 16
    assert len(whole) > 3 * size
    examples, summary = load(jl({"input": text}), tok, kind="CONTINUED_PRE_TRAINING", max_tokens=size)
    assert summary.records == 1 and summary.examples == len(examples) > 3
    assert all(2 <= len(e.input_ids) <= size and e.labels == e.input_ids for e in examples)
    assert all(len(e.input_ids) == size for e in examples[:-1])
    for before, after in zip(examples, examples[1:], strict=False):
        assert before.input_ids[-1] == after.input_ids[0]
    # Dropping each later window's first token (the overlap, never a target) gives back the record.
    rebuilt = examples[0].input_ids + [t for e in examples[1:] for t in e.input_ids[1:]]
    assert rebuilt == whole


def test_a_window_is_never_a_lone_token(plain):
    whole = plain("the quick brown fox")["input_ids"] + [plain.eos_token_id]
    examples, _ = load(jl({"input": "the quick brown fox"}), plain, kind="CONTINUED_PRE_TRAINING",
                       max_tokens=len(whole) - 1)
    assert [len(e.input_ids) for e in examples] == [len(whole) - 1, 2]


# -- failures, with the line ---------------------------------------------------------------------------

GOOD = json.dumps(pc())
GOOD_CONV = json.dumps(conv(msg("user", "hi"), msg("assistant", "the dog")))


@pytest.mark.parametrize(("lines", "message"), [
    ([GOOD, "", '{"prompt": "a" "completion": "b"}'], "line 3: not valid JSON: Expecting ',' delimiter"),
    ([GOOD, "[1, 2]"], "line 2: not a JSON object but an array"),
    ([GOOD, '"text"'], "line 2: not a JSON object but a string"),
    ([GOOD, json.dumps({"prompt": "a"})], "line 2: missing key 'completion' in a prompt-completion record"),
    ([GOOD, json.dumps({"completion": "a"})], "line 2: missing key 'prompt'"),
    ([GOOD, json.dumps(pc(completion=5))], 'line 2: "completion" must be a string, not a number'),
    ([GOOD, json.dumps(pc(prompt=None))], 'line 2: "prompt" must be a string, not null'),
    ([GOOD, json.dumps(pc(completion="  "))], 'line 2: "completion" is empty'),
    ([GOOD, json.dumps({**pc(), "extra": 1, "more": 2})],
     "line 2: unknown keys 'extra', 'more' in a prompt-completion record (its keys are prompt, completion)"),
    ([GOOD, json.dumps({"text": "a"})], "line 2: a record of no known format (keys: 'text')"),
    ([GOOD_CONV, json.dumps({**conv(msg("user", "a"), msg("assistant", "b")), "id": 7})],
     "line 2: unknown key 'id' in a conversation record"),
    ([json.dumps(conv(msg("user", "a"), msg("user", "b")))],
     "line 1: messages[1] has role 'user' where 'assistant' was expected"),
    ([GOOD_CONV, "", json.dumps(conv(msg("user", "a"), msg("assistant", "b"), msg("assistant", "c")))],
     "line 3: messages[2] has role 'assistant' where 'user' was expected"),
    ([json.dumps(conv(msg("assistant", "a"), msg("user", "b")))],
     "line 1: messages[0] has role 'assistant' where 'user' was expected"),
    ([json.dumps(conv(msg("system", "a"), msg("assistant", "b")))],
     "line 1: messages[0].role must be 'user' or 'assistant', not \"system\""),
    ([GOOD_CONV, "", json.dumps(conv(msg("user", "a"), msg("assistant", "b"), msg("user", "c")))],
     "line 3: the last message must be from the assistant"),
    ([json.dumps(conv())], 'line 1: "messages" is empty'),
    ([json.dumps({"messages": "hi"})], 'line 1: "messages" must be a non-empty list of messages, not a string'),
    ([json.dumps(conv(msg("user", "a"), {"role": "assistant", "content": [{"image": {}}]}))],
     "line 1: \"messages[1].content[0]\" has unsupported key 'image'; only text blocks are supported"),
    ([json.dumps(conv(msg("user", "a"), {"role": "assistant", "content": [{"text": 3}]}))],
     'line 1: "messages[1].content[0].text" must be a string, not a number'),
    ([json.dumps(conv(msg("user", "a"), msg("assistant", " ")))], "line 1: messages[1] has no text"),
    ([json.dumps(conv(msg("user", "a"), {"role": "assistant"}))], "line 1: messages[1] is missing key 'content'"),
    ([json.dumps({**conv(msg("user", "a"), msg("assistant", "b")), "schemaVersion": "v2"})],
     'line 1: "schemaVersion" must be "bedrock-conversation-2024", not "v2"'),
    ([json.dumps({**conv(msg("user", "a"), msg("assistant", "b")), "system": "be nice"})],
     'line 1: "system" must be a list of {"text": ...} blocks, not a string'),
    ([GOOD, GOOD, json.dumps(conv(msg("user", "a"), msg("assistant", "b")))],
     "line 3: a conversation record in a prompt-completion dataset: one dataset, one format"),
    ([GOOD_CONV, GOOD], "line 2: a prompt-completion record in a conversation dataset: one dataset, one format"),
    ([GOOD, json.dumps({"input": "text"})],
     "line 2: a continued-pretraining record in a prompt-completion dataset: one dataset, one format"),
    ([json.dumps({"input": "text"})], "line 1: a continued-pretraining record, but FINE_TUNING needs "
                                      'prompt-completion {"prompt", "completion"} or conversation '
                                      '{"schemaVersion"?, "system"?, "messages"} records'),
    ([GOOD, b'{"prompt": "\xff", "completion": "b"}'], "line 2: not valid UTF-8 (byte 0xff at position 12)"),
])
def test_each_failure_names_its_line(tok, lines, message):
    with pytest.raises(DatasetError) as caught:
        load(lines, tok)
    assert caught.value.message.startswith(f"{SOURCE} {message}"), caught.value.message
    assert isinstance(caught.value, ValidationException) and caught.value.status == 400


def test_a_format_the_customization_type_does_not_take_fails_at_its_first_record(tok):
    with pytest.raises(DatasetError, match=f"^{SOURCE} line 2: a prompt-completion record, but "
                                           "CONTINUED_PRE_TRAINING needs continued-pretraining "):
        load(["", GOOD], tok, kind="CONTINUED_PRE_TRAINING")
    with pytest.raises(DatasetError, match="customization type 'DISTILLATION' takes no training data"):
        load([GOOD], tok, kind="DISTILLATION")


def test_blank_lines_are_skipped_but_counted(tok):
    lines = ["\n", GOOD + "\r\n", "   \n", "", GOOD + "\n", "{bad\n"]
    with pytest.raises(DatasetError, match=f"^{SOURCE} line 6: not valid JSON"):
        load(lines, tok)
    _, summary = load(lines[:5], tok)
    assert summary.records == 2
    # Bytes, as a file opened in binary mode gives them; a UTF-8 BOM on the first line is not an error.
    _, summary = load([b"\xef\xbb\xbf" + GOOD.encode() + b"\n", b"\n", GOOD.encode()], tok)
    assert summary.records == 2


def test_a_record_over_the_token_limit_says_both_numbers(tok):
    long = pc(completion="the quick brown fox jumps over the lazy dog " * 50)
    (example,), _ = load(jl(long), tok)
    n = len(example.input_ids)
    assert n > 1000
    with pytest.raises(DatasetError) as caught:
        load(jl(pc(), long), tok, max_tokens=1000)
    assert caught.value.message == f"{SOURCE} line 2: {n:,} tokens, over the limit of 1,000 (maxSequenceLength)"
    assert "," in f"{n:,}"
    # A limit equal to the length passes.
    load(jl(long), tok, max_tokens=n)
    # Conversations too, with the line.
    chat = conv(msg("user", "hi"), msg("assistant", "the quick brown fox jumps over the lazy dog " * 30))
    with pytest.raises(DatasetError, match=r"line 3: [\d,]+ tokens, over the limit of 64 \(maxSequenceLength\)"):
        load(jl(GOOD_CONV, GOOD_CONV, chat), tok, max_tokens=64)


def test_the_first_bad_line_is_reported_even_across_a_batch(tok):
    long = json.dumps(pc(completion="the quick brown fox " * 20))
    with pytest.raises(DatasetError, match=r"line 2: [\d,]+ tokens, over the limit"):
        load([GOOD, long, GOOD, "{not json"], tok, max_tokens=64)


def test_too_few_records(tok):
    with pytest.raises(DatasetError) as caught:
        load([GOOD, "", GOOD, GOOD], tok, min_records=8)
    assert caught.value.message == f"{SOURCE}: 3 records; at least 8 are needed"
    with pytest.raises(DatasetError, match=f"^{SOURCE}: 0 records; at least 1 is needed$"):
        load(["", "  "], tok, min_records=1)


def test_too_many_records_stops_reading(tok):
    read = []

    def lines():
        for number in range(1, 10_001):
            read.append(number)
            yield GOOD

    with pytest.raises(DatasetError) as caught:
        load(lines(), tok, max_records=5)
    assert caught.value.message == f"{SOURCE}: more than 5 records; at most 5 are allowed"
    assert len(read) == 6
    _, summary = load([GOOD] * 5, tok, max_records=5)
    assert summary.records == 5


# -- the sample datasets ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_the_sample_datasets_validate(tok, path):
    name = path.name
    kind = "CONTINUED_PRE_TRAINING" if name.startswith("cpt-") else "FINE_TUNING"
    expected = {"cpt": CONTINUED_TEXT, "chat": CONVERSATION, "instruction": PROMPT_COMPLETION}[name.split("-")[0]]
    with path.open("rb") as fh:
        examples, summary = load_examples(fh, source=f"s3://samples/{name}", customization_type=kind,
                                          tokenizer=tok, max_tokens=1_000_000, min_records=8, max_records=100_000)
    records = sum(1 for line in path.read_bytes().splitlines() if line.strip())
    assert summary.format == expected
    assert summary.records == records == summary.examples == len(examples)
    assert 0 < summary.trainable_tokens <= summary.tokens
    assert all(any(label != IGNORE_INDEX for label in e.labels) for e in examples)


# -- hyperparameters ---------------------------------------------------------------------------------


def card(context_length=8192, customizations=("FINE_TUNING", "CONTINUED_PRE_TRAINING")) -> FoundationModel:
    return FoundationModel(model_id="test.tiny-v1:0", name="Tiny", provider="Test", input_modalities=("TEXT",),
                           output_modalities=("TEXT",), streaming=True, customizations=customizations,
                           inference_types=("ON_DEMAND",), native_format="meta-llama",
                           context_length=context_length, source=WeightsSource(kind="local-folder", path="/x"))


DEFAULTS = {"epochCount": 5, "batchSize": 1, "learningRate": 1e-4, "learningRateWarmupSteps": 5,
            "fineTuningMethod": "lora", "loraRank": 8, "loraAlpha": 16, "loraDropout": 0.05,
            "maxSequenceLength": 1024, "packing": False, "gradientAccumulationSteps": 1, "weightDecay": 0.0,
            "seed": 42, "workerCount": 1}


def test_defaults_for_every_hyperparameter():
    values = hyperparameters.resolve(card(), "FINE_TUNING", None)
    assert values == DEFAULTS and list(values) == list(DEFAULTS)
    assert hyperparameters.resolve(card(), "CONTINUED_PRE_TRAINING", {}) == DEFAULTS
    for spec in hyperparameters.specs_for(card()).values():
        assert spec.doc
        if spec.kind in ("int", "float"):
            assert spec.minimum <= spec.default <= spec.maximum
        assert spec.parse(str(spec.default).lower()) == spec.default


def test_given_values_are_typed():
    values = hyperparameters.resolve(card(), "FINE_TUNING", {
        "epochCount": "2", "batchSize": " 4 ", "learningRate": "1e-4", "learningRateWarmupSteps": "0",
        "fineTuningMethod": "FULL", "loraDropout": "0", "maxSequenceLength": "2048", "packing": "true",
        "gradientAccumulationSteps": "8.0", "weightDecay": "0.01", "seed": "2147483647"})
    assert values == {**DEFAULTS, "epochCount": 2, "batchSize": 4, "learningRate": 1e-4,
                      "learningRateWarmupSteps": 0, "fineTuningMethod": "full", "loraDropout": 0.0,
                      "maxSequenceLength": 2048, "packing": True, "gradientAccumulationSteps": 8,
                      "weightDecay": 0.01, "seed": 2**31 - 1}
    assert all(type(values[k]) is int for k in ("epochCount", "batchSize", "gradientAccumulationSteps", "seed"))
    assert type(values["learningRate"]) is float and type(values["packing"]) is bool
    assert hyperparameters.resolve(card(), "FINE_TUNING", {"learningRate": "0.0001"})["learningRate"] == 1e-4
    assert hyperparameters.resolve(card(), "FINE_TUNING", {"packing": "False"})["packing"] is False


@pytest.mark.parametrize(("given", "message"), [
    ({"epochCount": "11"}, "hyperParameters.epochCount: '11' is out of range; it must be an integer from 1 to 10"),
    ({"epochCount": "0"}, "hyperParameters.epochCount: '0' is out of range; it must be an integer from 1 to 10"),
    ({"epochCount": "two"}, "hyperParameters.epochCount: 'two' is not an integer; it must be an integer from 1 to 10"),
    ({"batchSize": "2.5"}, "hyperParameters.batchSize: '2.5' is not an integer; it must be an integer from 1 to 64"),
    ({"batchSize": ""}, "hyperParameters.batchSize: '' is not an integer; it must be an integer from 1 to 64"),
    ({"learningRate": "1"}, "hyperParameters.learningRate: '1' is out of range; "
                            "it must be a number from 5e-06 to 0.1"),
    ({"learningRate": "1e-7"}, "hyperParameters.learningRate: '1e-7' is out of range; "
                               "it must be a number from 5e-06 to 0.1"),
    ({"learningRate": "fast"}, "hyperParameters.learningRate: 'fast' is not a number; "
                               "it must be a number from 5e-06 to 0.1"),
    ({"learningRate": "nan"}, "hyperParameters.learningRate: 'nan' is not a number"),
    ({"loraDropout": "0.6"}, "hyperParameters.loraDropout: '0.6' is out of range; it must be a number from 0 to 0.5"),
    ({"learningRateWarmupSteps": "251"}, "hyperParameters.learningRateWarmupSteps: '251' is out of range; "
                                         "it must be an integer from 0 to 250"),
    ({"seed": "-1"}, "hyperParameters.seed: '-1' is out of range; it must be an integer from 0 to 2147483647"),
    ({"packing": "yes"}, "hyperParameters.packing: 'yes' is not accepted; it must be true or false"),
    ({"fineTuningMethod": "qlora"}, "hyperParameters.fineTuningMethod: 'qlora' is not accepted; "
                                    "it must be one of lora, full"),
    ({"epochs": "3"}, "hyperParameters: unknown key 'epochs'; accepted keys are batchSize, epochCount, "
                      "fineTuningMethod, gradientAccumulationSteps, learningRate, learningRateWarmupSteps, "
                      "loraAlpha, loraDropout, loraRank, maxSequenceLength, packing, seed, weightDecay"),
    ({"epochs": "3", "lr": "1"}, "hyperParameters: unknown keys 'epochs', 'lr'; accepted keys are batchSize, "),
])
def test_hyperparameter_errors_name_the_key_and_its_range(given, message):
    with pytest.raises(ValidationException) as caught:
        hyperparameters.resolve(card(), "FINE_TUNING", given)
    assert caught.value.message.startswith(message), caught.value.message


def test_max_sequence_length_is_bounded_by_the_model_context():
    small = card(context_length=512)
    assert hyperparameters.resolve(small, "FINE_TUNING", None)["maxSequenceLength"] == 512
    assert hyperparameters.resolve(small, "FINE_TUNING", {"maxSequenceLength": "32"})["maxSequenceLength"] == 32
    with pytest.raises(ValidationException, match="^hyperParameters.maxSequenceLength: '513' is out of range; "
                                                  "it must be an integer from 32 to 512$"):
        hyperparameters.resolve(small, "FINE_TUNING", {"maxSequenceLength": "513"})
    with pytest.raises(ValidationException, match="from 32 to 512"):
        hyperparameters.resolve(small, "FINE_TUNING", {"maxSequenceLength": "31"})
    # A user-registered model's card says 0: 4096 is the bound until the model itself says.
    unknown = card(context_length=0)
    assert hyperparameters.resolve(unknown, "FINE_TUNING", None)["maxSequenceLength"] == 1024
    assert hyperparameters.resolve(unknown, "FINE_TUNING", {"maxSequenceLength": "4096"})["maxSequenceLength"] == 4096
    with pytest.raises(ValidationException, match="from 32 to 4096"):
        hyperparameters.resolve(unknown, "FINE_TUNING", {"maxSequenceLength": "4097"})
    big = card(context_length=131072)
    assert hyperparameters.resolve(big, "FINE_TUNING", {"maxSequenceLength": "8192"})["maxSequenceLength"] == 8192


def test_a_customization_type_the_model_does_not_support():
    with pytest.raises(ValidationException) as caught:
        hyperparameters.resolve(card(customizations=("FINE_TUNING",)), "CONTINUED_PRE_TRAINING", None)
    assert caught.value.message == ("Model test.tiny-v1:0 does not support CONTINUED_PRE_TRAINING "
                                    "(it supports: FINE_TUNING)")
    with pytest.raises(ValidationException) as caught:
        hyperparameters.resolve(card(customizations=()), "FINE_TUNING", {"epochCount": "2"})
    assert caught.value.message == "Model test.tiny-v1:0 does not support customization"


def test_every_customizable_builtin_model_resolves_its_defaults():
    for model in builtin_cards():
        for kind in model.customizations:
            values = hyperparameters.resolve(model, kind, None)
            if hyperparameters.is_image_model(model):  # Titan Image Generator's set, at the model's own size
                assert values["stepCount"] == 500 and values["resolution"] == min(model.image.default_size)
            else:
                assert values["maxSequenceLength"] == min(1024, model.context_length)


def test_an_unpaired_surrogate_is_a_bad_line_not_a_crash(tok):
    lines = [GOOD, '{"prompt": "hi \\ud800", "completion": "there"}']
    with pytest.raises(DatasetError, match="line 2: not valid JSON"):
        load_examples(lines, source=SOURCE, customization_type="FINE_TUNING", tokenizer=tok,
                      max_tokens=512, min_records=1, max_records=10)
