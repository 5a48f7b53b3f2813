"""chrF, chrF++ and TER agree with sacrebleu 2.6 itself and with HF evaluate's documented examples; the sufficient
statistics of BLEU, chrF and TER give back their corpus and sentence scores."""

from __future__ import annotations

import random

import pytest

sacrebleu = pytest.importorskip("sacrebleu")

from sacrebleu.metrics import CHRF, TER  # noqa: E402

from outcrop.evaluation.metrics.bleu import Bleu  # noqa: E402
from outcrop.evaluation.metrics.sacrebleu_metrics import CHRF_PP_WORD_ORDER, Chrf, Ter, reference_streams  # noqa: E402

WORDS = ("the a of cat cats dog running ran house Houses , . ! ? ' \" ( ) don't U.S. e-mail 12 3.5 "
         "The THE Cat 日本語 テキスト 我喜欢猫 Καλημέρα naïve café").split()


def _text(rng: random.Random, hi: int = 25) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, hi)))


def _corpus(n: int = 120, seed: int = 5, hi: int = 25) -> tuple[list[str], list[list[str]]]:
    """Predictions and 1-3 references each (empty texts included)."""
    rng = random.Random(seed)
    preds, refs = [], []
    for _ in range(n):
        preds.append(_text(rng, hi))
        refs.append([_text(rng, hi) for _ in range(rng.randint(1, 3))])
    return preds, refs


# HF evaluate's chrf and ter metric cards (sacrebleu's scale, 0-100).
HF_CHRF_PREDICTIONS = ["The relationship between cats and dogs is not exactly friendly.",
                       "a good bookshop is just a genteel black hole that knows how to read."]
HF_CHRF_REFERENCES = [["The relationship between dogs and cats is not exactly friendly."],
                      ["A good bookshop is just a genteel Black Hole that knows how to read."]]
HF_TER_PREDICTIONS = ["does this sentence match??", "what about this sentence?",
                      "What did the TER metric user say to the developer?"]
HF_TER_REFERENCES = [["does this sentence match", "does this sentence match!?!"],
                     ["wHaT aBoUt ThIs SeNtEnCe?", "wHaT aBoUt ThIs SeNtEnCe?"],
                     ["Your jokes are...", "...TERrible"]]

CHRF_OPTIONS = [{}, {"word_order": CHRF_PP_WORD_ORDER}, {"word_order": 1}, {"lowercase": True},
                {"whitespace": True}, {"beta": 1}, {"char_order": 4, "word_order": 2}, {"eps_smoothing": True}]
TER_OPTIONS = [{}, {"case_sensitive": True}, {"normalized": True}, {"no_punct": True},
               {"normalized": True, "asian_support": True}, {"no_punct": True, "asian_support": True}]


@pytest.mark.parametrize("options", CHRF_OPTIONS)
def test_chrf_corpus_and_sentence_match_sacrebleu(options: dict) -> None:
    preds, refs = _corpus()
    metric = Chrf(**options)
    want = CHRF(**options).corpus_score(preds, reference_streams(refs)).score
    assert metric.corpus(preds, refs)[metric.name] == want
    for pred, ref in zip(preds[:40], refs[:40], strict=True):
        assert metric.score(pred, ref)[metric.name] == CHRF(**options).sentence_score(pred, ref).score


@pytest.mark.parametrize("options", TER_OPTIONS)
def test_ter_corpus_and_sentence_match_sacrebleu(options: dict) -> None:
    preds, refs = _corpus(40, hi=12)  # TER's shift search is slow in Python: short texts
    metric = Ter(**options)
    want = TER(**options).corpus_score(preds, reference_streams(refs))
    got = metric.corpus_result(preds, refs)
    assert metric.corpus(preds, refs) == {"ter": want.score}
    assert (got.num_edits, got.ref_length) == (want.num_edits, want.ref_length)
    for pred, ref in zip(preds[:15], refs[:15], strict=True):
        sentence = TER(**options).sentence_score(pred, ref)
        assert metric.score(pred, ref) == {"ter": sentence.score, "num_edits": sentence.num_edits,
                                           "ref_length": sentence.ref_length}


def test_single_references_as_strings_and_sacrebleu_shortcuts() -> None:
    preds, refs = _corpus(50, seed=9, hi=12)
    single = [r[0] for r in refs]
    assert Chrf().corpus(preds, single)["chrf"] == sacrebleu.corpus_chrf(preds, [single]).score
    assert Chrf(word_order=2).corpus(preds, single)["chrf++"] == sacrebleu.corpus_chrf(preds, [single],
                                                                                       word_order=2).score
    assert Ter().corpus(preds, single)["ter"] == sacrebleu.corpus_ter(preds, [single]).score
    assert Chrf().score(preds[0], single[0])["chrf"] == sacrebleu.sentence_chrf(preds[0], [single[0]]).score
    assert Ter().score(preds[0], single[0])["ter"] == sacrebleu.sentence_ter(preds[0], [single[0]]).score


def test_hf_chrf_card_examples() -> None:
    assert Chrf().corpus(HF_CHRF_PREDICTIONS, HF_CHRF_REFERENCES) == {"chrf": pytest.approx(84.64214891738334)}
    assert Chrf(word_order=2).corpus(HF_CHRF_PREDICTIONS, HF_CHRF_REFERENCES) == {
        "chrf++": pytest.approx(82.87263732906315)}
    assert Chrf(word_order=2, lowercase=True).corpus(HF_CHRF_PREDICTIONS, HF_CHRF_REFERENCES) == {
        "chrf++": pytest.approx(92.12853119829202)}


@pytest.mark.parametrize("count, options, score, edits, ref_length", [
    (3, {"case_sensitive": True}, 150.0, 15, 10.0),
    (2, {"case_sensitive": True}, 62.5, 5, 8.0),
    (2, {"normalized": True, "case_sensitive": True}, 57.14285714285714, 6, 10.5),
    (2, {"no_punct": True}, 0.0, 0, 8.0),  # HF's ignore_punct=True, case_sensitive=False
    (3, {"no_punct": True}, 100.0, 10, 10.0),
])
def test_hf_ter_card_examples(count: int, options: dict, score: float, edits: int, ref_length: float) -> None:
    result = Ter(**options).corpus_result(HF_TER_PREDICTIONS[:count], HF_TER_REFERENCES[:count])
    assert (result.score, result.num_edits, result.ref_length) == (pytest.approx(score), edits, ref_length)


def test_signatures_are_sacrebleus_after_the_score_name() -> None:
    assert Chrf().signature() == f"chrF2|nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:{sacrebleu.__version__}"
    assert Chrf(word_order=2, beta=1, lowercase=True).signature().startswith("chrF1++|nrefs:1|case:lc|")
    assert Ter().signature() == (f"TER|nrefs:1|case:lc|tok:tercom|norm:no|punct:yes|asian:no|"
                                 f"version:{sacrebleu.__version__}")
    assert "case:mixed" in Ter(case_sensitive=True).signature()
    assert Bleu().signature().startswith("BLEU|nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|")
    metric = Chrf()
    metric.corpus(["a b", "c"], [["a b", "a c"], ["c"]])
    assert "nrefs:var" in metric.signature()
    metric.score("a", ["a", "b", "c"])  # sentence scores leave the corpus's reference count alone
    assert "nrefs:var" in metric.signature()
    assert (Chrf().name, Chrf(word_order=2).name, Ter().name) == ("chrf", "chrf++", "ter")


def test_errors() -> None:
    for metric in (Chrf(), Ter()):
        with pytest.raises(ValueError, match="2 predictions but 1 references"):
            metric.corpus(["a", "b"], ["a"])
        with pytest.raises(ValueError, match="at least one reference"):
            metric.corpus(["a"], [[]])
        with pytest.raises(ValueError, match="at least one reference"):
            metric.score("a", [])


@pytest.mark.parametrize("metric", [Bleu(), Chrf(), Chrf(word_order=CHRF_PP_WORD_ORDER), Ter(),
                                    Ter(normalized=True, case_sensitive=True)], ids=lambda m: m.signature())
def test_statistics_give_back_corpus_subset_and_sentence_scores(metric) -> None:
    preds, refs = _corpus(80, seed=11, hi=12)
    stats = metric.corpus_statistics(preds, refs)
    assert len(stats) == len(preds)
    assert metric.from_stats([sum(column) for column in zip(*stats, strict=True)]) == \
        metric.corpus(preds, refs)[metric.name]
    subset = range(0, 80, 3)  # a category, or a resample without repeats
    sums = [sum(stats[i][k] for i in subset) for k in range(len(stats[0]))]
    assert metric.from_stats(sums) == pytest.approx(
        metric.corpus([preds[i] for i in subset], [refs[i] for i in subset])[metric.name], abs=1e-9)
    for i in range(0, 80, 7):
        assert metric.sentence_from_stats(stats[i]) == metric.score(preds[i], refs[i])[metric.name]
