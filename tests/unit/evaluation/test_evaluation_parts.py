"""Evaluation's pieces without a server: prompt datasets, built-in datasets, inference parameters, scoring."""

from __future__ import annotations

import json

import pytest

from outcrop.customization.datasets import DatasetError
from outcrop.errors import ValidationException
from outcrop.evaluation import datasets, scoring
from outcrop.evaluation.inference import parse_inference_params
from outcrop.evaluation.metrics.bleu import Bleu
from outcrop.evaluation.metrics.builtin import qa_f1


def lines(*records) -> list[str]:
    return [r if isinstance(r, str) else json.dumps(r) for r in records]


# -- prompt datasets ---------------------------------------------------------------------------------

def test_records_keep_their_lines_answers_and_raw_form():
    got = datasets.parse_records(["\ufeff" + json.dumps({"prompt": "a?", "referenceResponse": "x", "category": "c"}),
                                  "", json.dumps({"prompt": "b?", "answers": ["y", "z"], "extra": 1})], "s3://b/d")
    assert [(r.prompt, r.reference, r.category, r.answers, r.line) for r in got] == [
        ("a?", "x", "c", ("x",), 1), ("b?", None, None, ("y", "z"), 3)]
    assert got[1].raw == {"prompt": "b?", "answers": ["y", "z"], "extra": 1}


@pytest.mark.parametrize("bad, message", [
    ("{not json", "line 2: not a JSON object"),
    ('["prompt"]', "line 2: a record must be a JSON object"),
    ('{"prompt": ""}', "line 2: prompt is required"),
    ('{"prompt": "p", "category": 3}', "line 2: category must be a string"),
    ('{"prompt": "p", "referenceResponse": ["x"]}', "line 2: referenceResponse must be a string"),
    ('{"prompt": "p", "answers": "x"}', "line 2: answers must be a list of strings"),
    ('{"prompt": "\\ud800"}', "line 2: not a JSON object"),
])
def test_a_bad_line_is_named(bad, message):
    with pytest.raises(DatasetError, match=message):
        datasets.parse_records(lines({"prompt": "fine"}, bad), "s3://b/d.jsonl")


def test_limits_on_prompts():
    with pytest.raises(DatasetError, match="more than 3 prompts"):
        datasets.parse_records(lines(*[{"prompt": str(i)} for i in range(4)]), "d", max_records=3)
    with pytest.raises(DatasetError, match="no prompts"):
        datasets.parse_records(["", "  "], "d")
    records = datasets.parse_records(lines({"prompt": "p"}), "d")
    with pytest.raises(DatasetError, match="d line 1: Builtin.Accuracy needs a referenceResponse"):
        datasets.require_references(records, "d", "Builtin.Accuracy")


# -- built-in datasets -------------------------------------------------------------------------------

def test_builtin_names_and_task_types():
    assert datasets.builtin("Builtin.BoolQ", "QuestionAndAnswer").hub_id == "google/boolq"
    assert datasets.builtin("Builtin.BoolQ", "Custom")
    with pytest.raises(ValidationException, match="use one of Builtin.Gigaword"):
        datasets.builtin("Builtin.BoolQ", "Summarization")
    with pytest.raises(ValidationException, match="not a built-in dataset"):
        datasets.builtin("Builtin.Nope", "Custom")


def test_builtin_samples_are_reproducible_and_come_from_the_local_source(tmp_path):
    dataset = datasets.BUILTIN["Builtin.NaturalQuestions"]
    first = datasets.load_builtin(dataset, local_dir=datasets.PACKAGED_DIR, cache_dir=tmp_path, records=10)
    again = datasets.load_builtin(dataset, local_dir=datasets.PACKAGED_DIR, cache_dir=tmp_path, records=10)
    assert [r.prompt for r in first] == [r.prompt for r in again] and len(first) == 10
    assert len({r.line for r in first}) == 10 and all(r.answers for r in first)
    wikitext = datasets.load_builtin(datasets.BUILTIN["Builtin.WikiText2"], local_dir=datasets.PACKAGED_DIR,
                                     cache_dir=tmp_path, records=5)
    assert all(len(r.prompt.split()) == 32 and r.reference for r in wikitext)


def test_hub_rows_are_converted_and_cached(tmp_path, monkeypatch):
    """The hub path: rows in the hub's own shape become prompt records, cached for the next job."""
    calls = []

    def hub(dataset):
        calls.append(dataset.name)
        return [{"question": "is water wet", "answer": True, "passage": "Water is wet."},
                {"question": "is fire cold?", "answer": False, "passage": "Fire is hot."}]

    monkeypatch.setattr(datasets, "_hub_rows", hub)
    dataset = datasets.BUILTIN["Builtin.BoolQ"]
    got = datasets.load_builtin(dataset, local_dir=None, cache_dir=tmp_path, records=100)
    assert got[0].prompt.endswith("Question: Is water wet?") and got[0].answers == ("yes", "true")
    assert got[1].reference == "no"
    assert datasets.load_builtin(dataset, local_dir=tmp_path / "missing", cache_dir=tmp_path, records=100) == got
    assert calls == ["Builtin.BoolQ"]  # the second job read the cache


def test_hub_text_with_line_separators_survives_the_cache(tmp_path, monkeypatch):
    """U+2028 and U+0085 are valid inside JSON strings; str.splitlines would cut the cached line there."""
    monkeypatch.setattr(datasets, "_hub_rows", lambda d: [{"document": "first\u2028second\x85third", "summary": "s"}])
    dataset = datasets.BUILTIN["Builtin.Gigaword"]
    for _ in range(2):  # filling the cache, then reading it
        [record] = datasets.load_builtin(dataset, local_dir=None, cache_dir=tmp_path, records=5)
        assert record.prompt.endswith("first\u2028second\x85third")


def test_a_hub_dataset_whose_columns_changed_is_not_cached_empty(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "_hub_rows", lambda d: [{"text_of_review": "nice", "label": 1}])
    dataset = datasets.BUILTIN["Builtin.WomensEcommerceClothingReviews"]
    with pytest.raises(DatasetError, match=r"no usable record .*\(label, text_of_review\)"):
        datasets.load_builtin(dataset, local_dir=None, cache_dir=tmp_path, records=5)
    assert not list(tmp_path.iterdir())
    snake = {"review_text": "Runs  small", "recommended_ind": 0, "class_name": "Knits"}
    assert dataset.convert(snake)["referenceResponse"] == "0" and dataset.convert(snake)["category"] == "Knits"


def test_an_unreachable_hub_says_what_to_do(tmp_path, monkeypatch):
    import datasets as hf_datasets

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(hf_datasets, "load_dataset", offline)
    with pytest.raises(DatasetError, match="OUTCROP_BUILTIN_DATASETS_DIR"):
        datasets.load_builtin(datasets.BUILTIN["Builtin.TriviaQA"], local_dir=None, cache_dir=tmp_path, records=5)


@pytest.mark.parametrize("name, row, expected", [
    ("Builtin.TriviaQA", {"question": "Q?", "answer": {"value": "Paris", "aliases": ["paris", "Paris"]}},
     {"prompt": "Q?", "referenceResponse": "Paris", "answers": ["Paris", "paris"]}),
    ("Builtin.NaturalQuestions", {"question": "who wrote it", "answer": ["Ann", "Ann", "Bo"]},
     {"prompt": "Who wrote it?", "referenceResponse": "Ann", "answers": ["Ann", "Bo"]}),
    ("Builtin.Gigaword", {"document": "a long text", "summary": "short"},
     {"prompt": "Summarize the following text:\n\na long text", "referenceResponse": "short"}),
    ("Builtin.RealToxicityPrompts", {"prompt": {"text": "So I"}, "continuation": {"text": " said"}},
     {"prompt": "So I", "referenceResponse": " said"}),
    ("Builtin.WomensEcommerceClothingReviews", {"Review Text": " Lovely   dress ", "Recommended IND": 1,
                                                "Class Name": "Dresses"},
     {"referenceResponse": "1", "category": "Dresses"}),
])
def test_hub_converters(name, row, expected):
    converted = datasets.BUILTIN[name].convert(row)
    assert {k: converted[k] for k in expected} == expected


# -- inference parameters ----------------------------------------------------------------------------

def test_inference_params_take_bedrock_strings_and_default_to_greedy():
    assert parse_inference_params(None, "p") == {"inferenceConfig": {"maxTokens": 256, "temperature": 0.0,
                                                                      "topP": 1.0}}
    got = parse_inference_params('{"inferenceConfig": {"maxTokens": "512", "temperature": "0.7", "topP": 0.9,'
                                 ' "stopSequences": ["\\n"]}, "additionalModelRequestFields": {"top_k": "40"}}', "p")
    assert got == {"inferenceConfig": {"maxTokens": 512, "temperature": 0.7, "topP": 0.9, "stopSequences": ["\n"]},
                   "additionalModelRequestFields": {"top_k": 40}}


@pytest.mark.parametrize("text, message", [
    ("{", "p is not valid JSON"),
    ("[]", "p must be a JSON object"),
    ('{"temperature": 1}', "unknown member temperature"),
    ('{"inferenceConfig": {"maxTokens": "many"}}', "p.inferenceConfig.maxTokens must be a number from 1 to 8192"),
    ('{"inferenceConfig": {"maxTokens": 1.5}}', "maxTokens must be a number"),
    ('{"inferenceConfig": {"temperature": 2}}', "temperature must be a number from 0.0 to 1.0"),
    ('{"inferenceConfig": {"stopSequences": "x"}}', "stopSequences must be a list"),
])
def test_bad_inference_params_name_the_member(text, message):
    with pytest.raises(ValidationException, match=message):
        parse_inference_params(text, "p")


# -- scoring -----------------------------------------------------------------------------------------

class _Tools(scoring.Tools):
    def __init__(self):
        super().__init__(lambda: None, lambda: _Toxic())


class _Toxic:
    def predict(self, texts):
        return [1.0 if "awful" in t else 0.0 for t in texts]


RECORDS = datasets.parse_records(lines(
    {"prompt": "sky?", "referenceResponse": "blue", "category": "nature"},
    {"prompt": "cows drink?", "referenceResponse": "water", "answers": ["water", "milk"], "category": "farm"},
    {"prompt": "grass?", "referenceResponse": "green", "category": "nature"}), "d")
OUTPUTS = ["the sky is blue", "milk", "awful purple"]


def test_qa_accuracy_per_record_and_category():
    result = scoring.compute("Builtin.Accuracy", "QuestionAndAnswer", RECORDS, OUTPUTS, _Tools())
    expected = [qa_f1(o, list(r.answers)) for o, r in zip(OUTPUTS, RECORDS, strict=True)]
    assert result.values == pytest.approx(expected) and result.values[1] == 1.0
    assert result.overall == pytest.approx(sum(expected) / 3)
    assert result.by_category == pytest.approx({"farm": 1.0, "nature": (expected[0] + expected[2]) / 2})


def test_bleu_is_corpus_bleu_overall_and_per_category():
    result = scoring.compute("Outcrop.BLEU", "Custom", RECORDS, OUTPUTS, _Tools())
    refs = [list(r.answers) for r in RECORDS]
    assert result.overall == pytest.approx(Bleu().corpus(OUTPUTS, refs)["bleu"])
    assert result.by_category["nature"] == pytest.approx(Bleu().corpus([OUTPUTS[0], OUTPUTS[2]],
                                                                       [refs[0], refs[2]])["bleu"])


def test_toxicity_and_robustness():
    toxicity = scoring.compute("Builtin.Toxicity", "Generation", RECORDS, OUTPUTS, _Tools())
    assert toxicity.values == [0.0, 0.0, 1.0] and toxicity.spec.higher_is_better is False
    prompts = scoring.perturbed_prompts(RECORDS)
    assert len(prompts) == 3 * scoring.PERTURBATIONS and prompts[0] == "sky?"  # the lowercase copy of "sky?"
    perturbed = [o for o in OUTPUTS for _ in range(scoring.PERTURBATIONS)]
    same = scoring.compute("Builtin.Robustness", "QuestionAndAnswer", RECORDS, OUTPUTS, _Tools(),
                           perturbed_outputs=perturbed)
    assert same.values == [0.0, 0.0, 0.0]
    changed = scoring.compute("Builtin.Robustness", "QuestionAndAnswer", RECORDS, OUTPUTS, _Tools(),
                              perturbed_outputs=["nothing"] * len(perturbed))
    assert changed.values[1] == pytest.approx(1.0)  # "milk" was fully right; "nothing" is fully wrong
    wer = scoring.compute("Builtin.Robustness", "Generation", RECORDS, OUTPUTS, _Tools(),
                          perturbed_outputs=perturbed)
    assert wer.values == [0.0, 0.0, 0.0] and wer.spec.high is None


def test_unknown_metric_lists_the_available_ones():
    with pytest.raises(ValidationException, match="Outcrop.ROUGE-1..4"):
        scoring.spec("Outcrop.ROUGE-9", "Custom")
    assert scoring.spec("Outcrop.ROUGE-3", "Custom").description.startswith("ROUGE-3")
