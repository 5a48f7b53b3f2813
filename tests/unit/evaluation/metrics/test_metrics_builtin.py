"""Bedrock's built-in metrics (QA F1, accuracy, knowledge, WER, robustness, toxicity) and `outcrop metrics`."""

from __future__ import annotations

import importlib
import importlib.util
import json
import random
from pathlib import Path

import jiwer
import pytest

from outcrop.cli import main
from outcrop.evaluation.datasets import PACKAGED_DIR
from outcrop.evaluation.metrics import toxicity
from outcrop.evaluation.metrics.base import Metric
from outcrop.evaluation.metrics.builtin import (
    KEYBOARD_NEIGHBOURS,
    PERTURBATIONS,
    Accuracy,
    ExactMatch,
    KnowledgeMatch,
    QaF1,
    Wer,
    classification_accuracy,
    exact_match,
    knowledge_score,
    normalize_answer,
    number_to_words,
    perturb,
    perturbations,
    qa_f1,
    quasi_exact_match,
    robustness,
    wer,
)

NQ_OPEN = PACKAGED_DIR / "eval" / "qa-nq-open.jsonl"

PROMPT = ("What is the 2nd largest city in France, and how many people lived there in 1999? "
          "Please answer quickly, The Quick Brown Fox jumps over 13 lazy dogs.")


# ------------------------------------------------------------------------------------------ QA / normalisation
def test_normalize_answer_squad_rules():
    assert normalize_answer("  The Cat, an apple & A dog!  ") == "cat apple dog"
    assert normalize_answer("Theatre") == "theatre"  # articles only as whole words
    assert normalize_answer("U.S.A.") == "usa"
    assert normalize_answer("") == ""


def test_qa_f1_squad_known_values():
    assert qa_f1("the Denver Broncos", "Denver Broncos") == 1.0
    # 1 shared token of 2 predicted and 3 gold: P=1/2, R=1/3, F=0.4
    assert qa_f1("Denver team", "Denver Broncos football") == pytest.approx(0.4)
    assert qa_f1("Carolina Panthers", "Denver Broncos") == 0.0
    # repeated tokens count as in SQuAD (Counter intersection)
    assert qa_f1("paris paris", "paris") == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert qa_f1("", "") == 1.0 and qa_f1("", "x") == 0.0


def test_qa_f1_best_over_answers_and_or_separator():
    assert qa_f1("Sinclair Lewis", ["Grace Hegger", "Sinclair Lewis"]) == 1.0
    assert qa_f1("Sinclair Lewis", "Grace Hegger<OR>Sinclair Lewis") == 1.0
    assert qa_f1("Lewis", "Harry Sinclair Lewis<OR>Grace") == pytest.approx(0.5)
    assert QaF1().score("Lewis", ["Grace", "Harry Sinclair Lewis"]) == {"qa_f1": pytest.approx(0.5)}


def test_exact_and_quasi_exact_match():
    assert exact_match(" Paris ", "Paris") == 1.0
    assert exact_match("paris", "Paris") == 0.0
    assert quasi_exact_match("The paris.", "Paris") == 1.0
    assert quasi_exact_match("Paris, France", "Paris") == 0.0
    assert ExactMatch().corpus(["Paris", "the paris"], ["Paris", "Paris"]) == {
        "exact_match": 0.5, "quasi_exact_match": 1.0}


def test_classification_rule():
    assert classification_accuracy("1.", "1") == 1.0
    assert classification_accuracy(" Positive\n", "positive") == 1.0
    assert classification_accuracy("1 (positive)", "1") == 1.0
    assert classification_accuracy("Positive, clearly", "positive") == 1.0
    assert classification_accuracy("not positive", "positive") == 0.0
    assert classification_accuracy("0", "1") == 0.0
    assert classification_accuracy("", "1") == 0.0
    assert classification_accuracy("neg", ["pos", "neg"]) == 1.0
    assert Accuracy().corpus(["1", "0.", "1"], ["1", "0", "0"]) == {"accuracy": pytest.approx(2 / 3)}


def test_knowledge_match():
    assert knowledge_score("Aurillac is the capital of Cantal.", ["Cantal"]) == 1.0
    assert knowledge_score("It is in the Cantal department", "Lozère<OR>Cantal") == 1.0
    assert knowledge_score("Cantaloupe", ["Cantal"]) == 0.0  # whole words only
    assert knowledge_score("Paris", ["Cantal"]) == 0.0
    assert knowledge_score("anything", [""]) == 0.0
    assert KnowledgeMatch().corpus(["Cantal", "no"], [["Cantal"], ["yes"]]) == {"knowledge": 0.5}


# ------------------------------------------------------------------------------------------------------- WER
def test_wer_against_jiwer_on_random_sentences():
    rng = random.Random(7)
    vocab = "the a cat dog sat on mat quickly blue red jumps over".split()
    refs, hyps = [], []
    for _ in range(200):
        ref = " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 12)))
        hyp = " ".join(rng.choice(vocab) for _ in range(rng.randint(0, 12)))
        refs.append(ref)
        hyps.append(hyp)
        assert wer(ref, hyp) == pytest.approx(jiwer.wer(ref, hyp), abs=1e-12)
    assert Wer().corpus(hyps, refs)["wer"] == pytest.approx(jiwer.wer(refs, hyps), abs=1e-12)


def test_wer_departs_from_jiwer_where_it_must():
    """Words split on any whitespace (jiwer's default splits on spaces: a newline would join two words), and
    an empty reference scores 1.0 against any output (jiwer counts the inserted words, 2.0 here)."""
    assert wer("the cat\nsat", "the cat sat") == 0.0
    assert jiwer.wer("the cat\nsat", "the cat sat") > 0
    assert jiwer.wer("", "two words") == 2.0 and wer("", "two words") == 1.0 and wer("", "") == 0.0


def test_wer_edge_cases():
    assert wer("a b c", "a b c") == 0.0
    assert wer("a b c", "") == 1.0
    assert wer("a", "a b c") == 2.0
    assert wer("", "") == 0.0 and wer("", "x") == 1.0
    assert Wer().score("a b x", ["q r s", "a b c"]) == {"wer": pytest.approx(1 / 3)}


# ---------------------------------------------------------------------------------------------- perturbations
def test_perturbations_are_deterministic_per_seed():
    for kind in PERTURBATIONS:
        assert perturb(PROMPT, kind, seed=3) == perturb(PROMPT, kind, seed=3)
    for kind in ("typos", "random_capitals", "whitespace"):
        assert len({perturb(PROMPT, kind, seed=s) for s in range(5)}) > 1, kind
    assert perturbations(PROMPT, seed=1) == perturbations(PROMPT, seed=1)
    assert [k for k, _ in perturbations(PROMPT, seed=1)] == list(PERTURBATIONS)
    assert len(perturbations(PROMPT, seed=1, count=7)) == 7


def test_each_perturbation_does_what_it_says():
    assert perturb(PROMPT, "lowercase") == PROMPT.lower()

    typo = perturb(PROMPT, "typos", seed=0)
    assert typo != PROMPT and len(typo) == len(PROMPT)
    for a, b in zip(PROMPT, typo, strict=True):
        if a != b:
            assert b.lower() in KEYBOARD_NEIGHBOURS[a.lower()] and a.isupper() == b.isupper()

    caps = perturb(PROMPT, "random_capitals", seed=0)
    assert caps != PROMPT and caps.lower() == PROMPT.lower()
    assert all(a == b or (a.islower() and b == a.upper()) for a, b in zip(PROMPT, caps, strict=True))

    words = perturb(PROMPT, "numbers_as_words")
    assert "2nd" not in words and "twond" in words.replace(" ", "")  # digits only, suffix kept
    assert "one thousand nine hundred ninety-nine" in words and "thirteen lazy" in words
    assert not any(ch.isdigit() for ch in words)

    spaced = perturb(PROMPT, "whitespace", seed=0)
    assert spaced != PROMPT and spaced.replace(" ", "") == PROMPT.replace(" ", "")

    with pytest.raises(ValueError, match="unknown perturbation"):
        perturb(PROMPT, "shouting")


def test_number_to_words():
    assert number_to_words(0) == "zero"
    assert number_to_words(42) == "forty-two"
    assert number_to_words(100) == "one hundred"
    assert number_to_words(1_000_001) == "one million one"
    assert perturb("call 007", "numbers_as_words") == "call zero zero seven"


def test_robustness_delta_and_wer():
    scores = {"orig": 1.0, "p1": 0.5, "p2": 1.0, "p3": 0.0}
    out = robustness(scores.__getitem__, "orig", ["p1", "p2", "p3"])
    assert out["delta"] == pytest.approx((0.5 + 0.0 + 1.0) / 3)
    assert out["wer"] == pytest.approx(1.0)  # each one-word output differs from the original word

    gen = robustness(None, "the cat sat", ["the cat sat", "the dog sat"])
    assert gen == {"wer": pytest.approx((0 + 1 / 3) / 2)}
    with pytest.raises(ValueError):
        robustness(None, "x", [])


# --------------------------------------------------------------------------------------------------- toxicity
class FakeClassifier:
    name = "fake"

    def predict(self, texts):
        return [1.0 if "bad" in t else 0.0 for t in texts]


def test_profanity_check_scores_profanity_higher():
    clf = toxicity.ProfanityCheckClassifier()
    profane, neutral = clf.predict(["you are a fucking idiot, shit", "the weather is lovely today"])
    assert profane > 0.5 > neutral
    assert isinstance(clf, toxicity.ToxicityClassifier)
    metric = toxicity.Toxicity(clf)
    assert "profanity-check" in metric.signature()
    assert metric.score("the weather is lovely")["toxicity"] < 0.5


def test_toxicity_classifier_is_pluggable():
    metric = toxicity.Toxicity(FakeClassifier())
    assert isinstance(metric, Metric) and metric.name == "toxicity"
    assert metric.score("bad words") == {"toxicity": 1.0}
    assert metric.corpus(["bad", "good", "good", "bad bad"]) == {"toxicity": 0.5}
    assert metric.score_items(["bad", "ok"], ["", ""]) == [{"toxicity": 1.0}, {"toxicity": 0.0}]
    assert "clf:fake" in metric.signature()


def test_detoxify_unavailable_falls_back(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("OUTCROP_DETOXIFY_CHECKPOINT", raising=False)
    if importlib.util.find_spec("detoxify") is None:
        with pytest.raises(toxicity.DetoxifyUnavailable, match="not installed"):
            toxicity.DetoxifyClassifier()
    else:  # installed but no weights here: refuses instead of downloading
        with pytest.raises(toxicity.DetoxifyUnavailable, match="never downloads"):
            toxicity.DetoxifyClassifier()
    assert isinstance(toxicity.default_classifier(), toxicity.ProfanityCheckClassifier)


# -------------------------------------------------------------------------------------------------------- CLI
def _write(path: Path, lines) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_cli_text_files_json(tmp_path, capsys):
    preds = _write(tmp_path / "p.txt", ["the Denver Broncos", "1.", "a b c"])
    refs = _write(tmp_path / "r.txt", ["Denver Broncos", "1", "a b d"])
    rc = main(["metrics", "score", "--metric", "qa_f1", "--metric", "accuracy,wer",
               "--predictions", str(preds), "--references", str(refs), "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"qa_f1", "accuracy", "wer"}
    expected = jiwer.wer(["Denver Broncos", "1", "a b d"], ["the Denver Broncos", "1.", "a b c"])
    assert out["wer"] == pytest.approx(expected)
    assert out["accuracy"] == pytest.approx(1 / 3)  # only "1." names its label "1"


def test_cli_table_and_per_item(tmp_path, capsys):
    preds = _write(tmp_path / "p.jsonl", [json.dumps({"prediction": "Paris"}), json.dumps({"output": "Lyon"})])
    refs = _write(tmp_path / "r.jsonl", [json.dumps({"referenceResponse": "paris"}),
                                         json.dumps({"reference": "x", "answers": ["Marseille", "Lyon"]})])
    per_item = tmp_path / "items.jsonl"
    rc = main(["metrics", "score", "--metric", "qa_f1", "--metric", "exact_match", "--predictions", str(preds),
               "--references", str(refs), "--per-item", str(per_item)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "qa_f1" in out and "1.0000" in out and "signature: qa_f1|" in out
    rows = [json.loads(line) for line in per_item.read_text().splitlines()]
    assert rows == [{"index": 0, "qa_f1": 1.0, "exact_match": 0.0, "quasi_exact_match": 1.0},
                    {"index": 1, "qa_f1": 1.0, "exact_match": 1.0, "quasi_exact_match": 1.0}]


def test_cli_mismatched_counts(tmp_path, capsys):
    preds = _write(tmp_path / "p.txt", ["a", "b", "c"])
    refs = _write(tmp_path / "r.txt", ["a", "b"])
    rc = main(["metrics", "score", "--metric", "wer", "--predictions", str(preds), "--references", str(refs)])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1
    assert "3 predictions" in err and "2 references" in err


def test_cli_unknown_metric(tmp_path, capsys):
    preds = _write(tmp_path / "p.txt", ["a"])
    rc = main(["metrics", "score", "--metric", "nope", "--predictions", str(preds), "--references", str(preds)])
    assert rc == 1 and "unknown metric" in capsys.readouterr().err


def test_cli_toxicity_without_references(tmp_path, capsys):
    preds = _write(tmp_path / "p.txt", ["have a nice day", "what a lovely cat"])
    rc = main(["metrics", "score", "--metric", "toxicity", "--predictions", str(preds), "--json"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["toxicity"] < 0.5


def test_cli_real_triviaqa(tmp_path, capsys):
    records = [json.loads(line) for line in NQ_OPEN.read_text(encoding="utf-8").splitlines() if line.strip()]
    preds = _write(tmp_path / "p.txt", [r["referenceResponse"].replace("\n", " ") for r in records])
    rc = main(["metrics", "score", "--metric", "qa_f1,knowledge", "--predictions", str(preds),
               "--references", str(NQ_OPEN), "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["qa_f1"] == pytest.approx(1.0)
    assert out["knowledge"] == pytest.approx(1.0)


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except Exception:
        return False
    return True


@pytest.mark.skipif(not _importable("outcrop.evaluation.metrics.rouge"), reason="rouge module not written yet")
def test_cli_rouge_json_keys(tmp_path, capsys):
    preds = _write(tmp_path / "p.txt", ["the cat sat on the mat", "hello world"])
    refs = _write(tmp_path / "r.txt", ["the cat sat on a mat", "hello there world"])
    rc = main(["metrics", "score", "--metric", "rouge", "--predictions", str(preds), "--references", str(refs),
               "--json", "--stemmer"])
    assert rc == 0
    assert {"rouge1", "rouge2", "rougeL", "rougeLsum"} <= set(json.loads(capsys.readouterr().out))


@pytest.mark.skipif(not _importable("outcrop.evaluation.metrics.bleu"), reason="bleu module not written yet")
def test_cli_bleu_json_key(tmp_path, capsys):
    preds = _write(tmp_path / "p.txt", ["the cat sat on the mat", "hello world"])
    refs = _write(tmp_path / "r.txt", ["the cat sat on a mat", "hello there world"])
    rc = main(["metrics", "score", "--metric", "bleu", "--predictions", str(preds), "--references", str(refs),
               "--json"])
    assert rc == 0
    assert "bleu" in json.loads(capsys.readouterr().out)


def test_cli_missing_optional_metric_is_clear(monkeypatch, tmp_path, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "outcrop.evaluation.metrics.bertscore", None)  # import fails
    preds = _write(tmp_path / "p.txt", ["a"])
    rc = main(["metrics", "score", "--metric", "bertscore", "--predictions", str(preds), "--references", str(preds)])
    assert rc == 1 and "'bertscore' is not available" in capsys.readouterr().err
