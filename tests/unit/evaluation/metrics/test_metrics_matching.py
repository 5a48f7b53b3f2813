"""HF evaluate's exact match (with its options) and SQuAD v1.1 EM/F1 reproduce their metric cards' numbers;
`outcrop metrics score` scores chrF, TER, SQuAD and HF exact match and refuses options nothing would use."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from outcrop.cli import main
from outcrop.evaluation.metrics.builtin import exact_match, qa_f1
from outcrop.evaluation.metrics.matching import HfExactMatch, Squad, squad_exact_match, squad_f1

# HF evaluate's exact_match metric card.
REFS = ["the cat", "theater", "YELLING", "agent007"]
PREDS = ["cat?", "theater", "yelling", "agent"]


@pytest.mark.parametrize("options, expected", [
    ({}, 0.25),
    ({"regexes_to_ignore": ["the ", "yell"], "ignore_case": True, "ignore_punctuation": True}, 0.5),
    ({"regexes_to_ignore": ["the ", "yell", "YELL"], "ignore_case": True, "ignore_punctuation": True}, 0.75),
    ({"regexes_to_ignore": ["the ", "yell", "YELL"], "ignore_case": True, "ignore_punctuation": True,
      "ignore_numbers": True}, 1.0),
])
def test_hf_exact_match_card_examples(options: dict, expected: float) -> None:
    assert HfExactMatch(**options).corpus(PREDS, REFS) == {"hf_exact_match": expected}


def test_hf_exact_match_card_sentences() -> None:
    refs = ["The cat sat on the mat.", "Theaters are great.", "It's like comparing oranges and apples."]
    preds = ["The cat sat on the mat?", "Theaters are great.", "It's like comparing apples and oranges."]
    assert round(HfExactMatch().corpus(preds, refs)["hf_exact_match"], 2) == 0.33


def test_hf_exact_match_order_and_details() -> None:
    # Regexes run before lowercasing: "YELL" is still there for "yell" to miss (the card's 0.5 example).
    assert HfExactMatch(["yell"], ignore_case=True).normalize("YELLING") == "yelling"
    assert HfExactMatch(["YELL"], ignore_case=True).normalize("YELLING") == "ing"
    # Punctuation is ASCII string.punctuation, digits are 0-9; other characters stay.
    assert HfExactMatch(ignore_punctuation=True, ignore_numbers=True).normalize("«a-b», 42½!") == "«ab» ½"
    # No white-space stripping, unlike fmeval's exact match.
    assert HfExactMatch().score(" Paris ", "Paris") == {"hf_exact_match": 0.0}
    assert exact_match(" Paris ", "Paris") == 1.0
    # Several references: the best; `<OR>`-joined answers as in Bedrock datasets.
    assert HfExactMatch().score("Lyon", ["Paris", "Lyon"])["hf_exact_match"] == 1.0
    assert HfExactMatch().score("Lyon", "Paris<OR>Lyon")["hf_exact_match"] == 1.0
    assert HfExactMatch(regexes_to_ignore="the ").regexes_to_ignore == ["the "]  # one pattern, not characters
    sig = HfExactMatch(["a|b"], ignore_case=True).signature()
    assert sig.startswith('hf_exact_match|regexes:["a|b"]|case:ignored|punct:kept|digits:kept|')
    with pytest.raises(re.error):
        HfExactMatch(["("])


# HF evaluate's squad metric card.
@pytest.mark.parametrize("predictions, answers, expected", [
    (["1976"], [["1976"]], {"exact_match": 100.0, "f1": 100.0}),
    (["1999"], [["1976"]], {"exact_match": 0.0, "f1": 0.0}),
    (["1976", "Beyonce", "climate change"], [["1976"], ["Beyoncé and Bruno Mars"], ["climate change"]],
     {"exact_match": 66.66666666666667, "f1": 66.66666666666667}),
])
def test_squad_card_examples(predictions, answers, expected) -> None:
    assert Squad().corpus(predictions, answers) == expected


def test_squad_hand_checked() -> None:
    # Normalisation drops case, punctuation and articles.
    assert Squad().score("The Denver Broncos!", "denver broncos") == {"exact_match": 100.0, "f1": 100.0}
    # One of two gold tokens: precision 1, recall 1/2, F1 2/3.
    assert Squad().score("Denver", "Denver Broncos") == {"exact_match": 0.0, "f1": pytest.approx(200 / 3)}
    # Counter overlap: "x x y" and "x y y" share one x and one y, so precision = recall = 2/3.
    assert squad_f1("x x y", "x y y") == pytest.approx(2 / 3)
    # Best over the ground truths, for EM and F1 separately.
    assert Squad().score("Denver Broncos", ["Broncos", "Denver Broncos team"]) == {
        "exact_match": 0.0, "f1": pytest.approx(100 * 0.8)}
    # v1.1: no shared token, no F1, even when both sides are empty; EM counts the empty match.
    assert (squad_exact_match("", ""), squad_f1("", ""), squad_f1("the", "")) == (1.0, 0.0, 0.0)
    assert qa_f1("", "") == 1.0  # builtin.qa_f1 follows SQuAD v2 there
    assert Squad().corpus([], []) == {}
    with pytest.raises(ValueError):
        Squad().corpus(["a"], [])


# ------------------------------------------------------------------------------------------------------- CLI
def _write(path: Path, lines) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture
def card_files(tmp_path):
    return str(_write(tmp_path / "p.txt", PREDS)), str(_write(tmp_path / "r.txt", REFS))


def test_cli_hf_exact_match_flags(card_files, capsys):
    preds, refs = card_files
    rc = main(["metrics", "score", "--metric", "hf_exact_match", "--predictions", preds, "--references", refs,
               "--regexes-to-ignore", "the ", "--regexes-to-ignore", "yell", "--regexes-to-ignore", "YELL",
               "--ignore-case", "--ignore-punctuation", "--json"])
    assert rc == 0 and json.loads(capsys.readouterr().out) == {"hf_exact_match": 0.75}
    rc = main(["metrics", "score", "--metric", "hf_exact_match", "--predictions", preds, "--references", refs,
               "--json"])
    assert rc == 0 and json.loads(capsys.readouterr().out) == {"hf_exact_match": 0.25}


@pytest.mark.parametrize("metrics, flags, message", [
    ("bleu", ["--ignore-case"], "--ignore-case set the options of hf_exact_match"),
    ("exact_match", ["--ignore-numbers", "--regexes-to-ignore", "x"],
     "--regexes-to-ignore, --ignore-numbers set the options of hf_exact_match"),
    ("exact_match", ["--ignore-punctuation"], "exact_match is fmeval's and takes no options"),
    ("hf_exact_match", ["--regexes-to-ignore", "("], "'(' is not a valid regular expression"),
    ("exact_match,squad", [], "metrics exact_match and squad both report 'exact_match'"),
])
def test_cli_refuses_unused_flags_and_clashes(card_files, capsys, metrics, flags, message):
    preds, refs = card_files
    rc = main(["metrics", "score", "--metric", metrics, "--predictions", preds, "--references", refs, *flags])
    err = capsys.readouterr().err
    assert rc == 1 and message in err and err.count("\n") == 1


def test_cli_sacrebleu_and_squad_metrics(tmp_path, capsys):
    import sacrebleu

    preds = ["The cat sat on the mat.", "Denver"]
    refs = ["The cat is on the mat.", "Denver Broncos"]
    p, r = str(_write(tmp_path / "p.txt", preds)), str(_write(tmp_path / "r.txt", refs))
    items = tmp_path / "items.jsonl"
    rc = main(["metrics", "score", "--metric", "chrf,chrf++", "--metric", "ter,squad", "--predictions", p,
               "--references", r, "--json", "--per-item", str(items)])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"chrf": sacrebleu.corpus_chrf(preds, [refs]).score,
                   "chrf++": sacrebleu.corpus_chrf(preds, [refs], word_order=2).score,
                   "ter": sacrebleu.corpus_ter(preds, [refs]).score,
                   "exact_match": 0.0, "f1": pytest.approx(100 * (3 / 4 + 2 / 3) / 2)}
    rows = [json.loads(line) for line in items.read_text().splitlines()]
    assert rows[1]["ter"] == 50.0 and rows[1]["num_edits"] == 1 and rows[1]["f1"] == pytest.approx(200 / 3)
    rc = main(["metrics", "score", "--metric", "chrf++,ter", "--predictions", p, "--references", r])
    out = capsys.readouterr().out
    assert rc == 0 and "signature: chrF2++|nrefs:1|" in out and "signature: TER|nrefs:1|" in out
