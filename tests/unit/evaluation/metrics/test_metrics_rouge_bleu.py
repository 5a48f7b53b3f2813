"""ROUGE and BLEU agree with their reference packages (rouge-score 0.1.2, sacrebleu 2.6) on the same inputs."""

from __future__ import annotations

import json
import random

import pytest

rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
sacrebleu = pytest.importorskip("sacrebleu")

from outcrop.errors import ValidationException  # noqa: E402
from outcrop.evaluation.metrics.bleu import Bleu, reference_streams  # noqa: E402
from outcrop.evaluation.metrics.rouge import Rouge, lcs_indices, lcs_length  # noqa: E402
from tests.helpers import TEST_DATA  # noqa: E402

TYPES = ["rouge1", "rouge2", "rouge3", "rougeL", "rougeLsum"]
SCITLDR = TEST_DATA / "eval" / "summarization-scitldr.jsonl"

VOCAB = (
    "the a of cat cats running runs ran dog dogs house houses generously generous 12 3.5 1,000 2024 "
    "quick brown fox jumps over lazy , . ! ? ; : ' \" ( ) - -- ... don't it's U.S. e-mail "
    "The THE Cat RUNNING connection connected connecting caresses ponies ties sized meeting"
).split()


def _random_text(rng: random.Random, lo: int = 0, hi: int = 40) -> str:
    words = []
    for _ in range(rng.randint(lo, hi)):
        word = rng.choice(VOCAB)
        if rng.random() < 0.2 and words:
            word = words[-1]  # repeated words
        words.append(word)
        if rng.random() < 0.08:
            words.append("\n")
    return " ".join(words)


def _close(ours: dict, theirs: dict, types, tol: float = 1e-9) -> None:
    for t in types:
        score = theirs[t]
        for field in ("precision", "recall", "fmeasure"):
            assert ours[t][field] == pytest.approx(getattr(score, field), abs=tol), (t, field)


def _pairs(n: int, seed: int, lo: int = 0, hi: int = 40):
    rng = random.Random(seed)
    return [(_random_text(rng, lo, hi), _random_text(rng, lo, hi)) for _ in range(n)]


ADVERSARIAL = [
    ("", "the cat sat"),
    ("the cat sat", ""),
    ("", ""),
    ("... !!! ???", "the cat"),
    ("the cat", "--- ,,, ..."),
    ("日本語のテキスト", "日本語のテキスト"),
    ("Καλημέρα κόσμε", "Καλημέρα κόσμε"),
    ("\n\n\n", "a\n\nb"),
    ("a\n!!!\nb", "a b\n...\n"),
    ("İstanbul Kelvin \u212a naïve café", "istanbul kelvin k naive cafe"),
]


@pytest.mark.parametrize("stem", [False, True])
def test_rouge_matches_rouge_score_random(stem: bool) -> None:
    ours = Rouge(types=TYPES, use_stemmer=stem)
    ref = rouge_scorer.RougeScorer(TYPES, use_stemmer=stem)
    for pred, target in _pairs(300, seed=7 + stem) + ADVERSARIAL:
        _close(ours.score(pred, target), ref.score(target, pred), TYPES)


def test_rouge_long_texts() -> None:
    ours = Rouge(types=TYPES, use_stemmer=True)
    ref = rouge_scorer.RougeScorer(TYPES, use_stemmer=True)
    for pred, target in _pairs(4, seed=3, lo=300, hi=600):
        _close(ours.score(pred, target), ref.score(target, pred), TYPES)


@pytest.mark.parametrize("stem", [False, True])
def test_rouge_several_references_match_score_multi(stem: bool) -> None:
    ours = Rouge(types=TYPES, use_stemmer=stem)
    ref = rouge_scorer.RougeScorer(TYPES, use_stemmer=stem)
    rng = random.Random(11)
    for _ in range(150):
        pred = _random_text(rng)
        targets = [_random_text(rng) for _ in range(rng.randint(1, 4))]
        _close(ours.score(pred, targets), ref.score_multi(targets, pred), TYPES)


def test_score_multi_picks_reference_per_type() -> None:
    # rouge1 prefers the first reference, rougeL the second: each type keeps its own best reference.
    ours = Rouge(types=["rouge1", "rougeL"])
    ref = rouge_scorer.RougeScorer(["rouge1", "rougeL"])
    pred = "a b c d"
    targets = ["d c b a", "a b x y"]
    got, want = ours.score(pred, targets), ref.score_multi(targets, pred)
    _close(got, want, ["rouge1", "rougeL"])
    assert got["rouge1"]["fmeasure"] == 1.0
    assert got["rougeL"]["fmeasure"] == 0.5


def test_rouge_only_lsum_and_rouge_n() -> None:
    for types in (["rougeLsum"], ["rouge4"], ["rougeL"]):
        ours = Rouge(types=types, use_stemmer=True)
        ref = rouge_scorer.RougeScorer(types, use_stemmer=True)
        for pred, target in _pairs(100, seed=5):
            _close(ours.score(pred, target), ref.score(target, pred), types)


def test_rouge_scitldr_samples() -> None:
    rows = [json.loads(line) for line in SCITLDR.read_text().splitlines() if line.strip()][:300]
    rng = random.Random(1)
    refs = [row["referenceResponse"] for row in rows]
    preds = []
    for text in refs:
        words = text.split()
        rng.shuffle(words[: len(words) // 2])
        words = [w for w in words if rng.random() > 0.2] + rng.sample(words, min(2, len(words)))
        preds.append(" ".join(words))
    for stem in (False, True):
        ours = Rouge(types=TYPES, use_stemmer=stem)
        ref = rouge_scorer.RougeScorer(TYPES, use_stemmer=stem)
        for pred, target in zip(preds, refs, strict=True):
            _close(ours.score(pred, target), ref.score(target, pred), TYPES)
        corpus = ours.corpus(preds, refs)
        for t in TYPES:
            want = sum(ref.score(r, p)[t].fmeasure for p, r in zip(preds, refs, strict=True)) / len(refs)
            assert corpus[t] == pytest.approx(want, abs=1e-12)


def test_lcs_helpers_match_rouge_score() -> None:
    rng = random.Random(2)
    alphabet = "abcde"
    for _ in range(500):
        a = [rng.choice(alphabet) for _ in range(rng.randint(0, 25))]
        b = [rng.choice(alphabet) for _ in range(rng.randint(0, 25))]
        table = rouge_scorer._lcs_table(a, b)
        assert lcs_length(a, b) == table[-1][-1]
        assert lcs_indices(a, b) == (rouge_scorer.lcs_ind(a, b) if a and b else [])


def test_unicode_tokenizer_scores_non_latin() -> None:
    default = Rouge(types=["rouge1", "rougeL"])
    uni = Rouge(types=["rouge1", "rougeL"], tokenizer="unicode")
    for pred, ref in [("我喜欢猫和狗", "我喜欢狗"), ("Καλημέρα κόσμε, τι κάνεις", "καλημέρα κόσμε")]:
        assert default.score(pred, ref)["rouge1"]["fmeasure"] == 0.0
        assert uni.score(pred, ref)["rouge1"]["fmeasure"] > 0.0
        assert uni.score(pred, ref)["rougeL"]["fmeasure"] > 0.0
    # Latin text scores the same as the default tokenizer.
    assert uni.score("the cat sat", "the cat") == default.score("the cat sat", "the cat")
    assert "tok:unicode" in uni.signature()


def test_lsum_split_sentences() -> None:
    pred = "The cat sat on the mat. It was happy! Then it slept."
    ref = "It was happy. The cat sat on the mat? Then it slept."
    plain = Rouge(types=["rougeL", "rougeLsum"])
    split = Rouge(types=["rougeL", "rougeLsum"], split_sentences=True)
    plain_scores = plain.score(pred, ref)
    assert plain_scores["rougeLsum"] == plain_scores["rougeL"]  # rouge-score's behaviour without newlines
    split_scores = split.score(pred, ref)
    assert split_scores["rougeLsum"]["fmeasure"] > split_scores["rougeL"]["fmeasure"]
    # Split on punctuation == rouge-score on the same text with newlines between the sentences.
    ref_scorer = rouge_scorer.RougeScorer(["rougeLsum"])
    nl = ref_scorer.score(ref.replace(". ", ".\n").replace("? ", "?\n"), pred.replace(". ", ".\n").replace("! ", "!\n"))
    assert split_scores["rougeLsum"]["fmeasure"] == pytest.approx(nl["rougeLsum"].fmeasure, abs=1e-12)
    assert "split:yes" in split.signature()


def test_rouge_signature_and_errors() -> None:
    assert (
        Rouge(use_stemmer=True).signature()
        == "rouge|types:rouge1,rouge2,rougeL,rougeLsum|stem:yes|tok:default|split:no"
    )
    with pytest.raises(ValidationException, match="rougeX"):
        Rouge(types=["rougeX"])
    with pytest.raises(ValidationException, match="rouge0"):
        Rouge(types=["rouge0"])
    with pytest.raises(ValueError):
        Rouge(tokenizer="spacy")
    with pytest.raises(ValueError):
        Rouge().score("a", [])
    assert Rouge().corpus([], []) == {t: 0.0 for t in ("rouge1", "rouge2", "rougeL", "rougeLsum")}


# "rouge1\n": rouge-score's `$` also matches before a final newline; "rouge\u0661": a non-ASCII digit one.
ROUGE_NAMES = "rouge10 rouge01 rouge0 rouge1 rouge9 rougeL rougeLsum rougeX rouge rouge2 Rouge1 rougel".split()
ROUGE_NAMES += ["rouge-1", "rouge1\n", "rougeLsum\n", "rouge\u0661"]


@pytest.mark.parametrize("name", ROUGE_NAMES)
def test_rouge_types_accepted_exactly_where_rouge_score_accepts_them(name: str) -> None:
    # rouge-score is the oracle; it checks the type only when scoring, so score one pair.
    try:
        expected = rouge_scorer.RougeScorer([name]).score("a b c d", "a b d c")
    except ValueError:
        expected = None
    if expected is not None:
        got = Rouge(types=[name]).score("a b d c", "a b c d")
        assert set(got) == {name} and got[name]["fmeasure"] == expected[name].fmeasure
    else:
        with pytest.raises(ValidationException, match="invalid rouge type"):
            Rouge(types=[name])


# ---------------------------------------------------------------------------------------------------------- BLEU


def _bleu_corpus(tokenize: str = "13a"):
    rng = random.Random(17)
    preds, refs = [], []
    for _ in range(200):
        preds.append(_random_text(rng).replace("\n", " "))
        refs.append([_random_text(rng).replace("\n", " ") for _ in range(rng.randint(1, 3))])
    return preds, refs


@pytest.mark.parametrize("tokenize", ["13a", "intl", "char", "none"])
def test_bleu_corpus_matches_sacrebleu(tokenize: str) -> None:
    preds, refs = _bleu_corpus()
    streams = reference_streams(refs)
    want = sacrebleu.corpus_bleu(preds, streams, tokenize=tokenize).score
    assert Bleu(tokenize=tokenize).corpus(preds, refs)["bleu"] == pytest.approx(want, abs=1e-9)
    # Single reference per item as plain strings.
    single = [r[0] for r in refs]
    want1 = sacrebleu.corpus_bleu(preds, [single], tokenize=tokenize).score
    assert Bleu(tokenize=tokenize).corpus(preds, single)["bleu"] == pytest.approx(want1, abs=1e-9)


def test_bleu_sentence_matches_sacrebleu() -> None:
    preds, refs = _bleu_corpus()
    bleu = Bleu()
    for pred, ref in list(zip(preds, refs, strict=True)) + [("", ["a b"]), ("a b", [""]), ("!!!", ["..."])]:
        assert bleu.score(pred, ref)["bleu"] == pytest.approx(sacrebleu.sentence_bleu(pred, ref).score, abs=1e-9)


def test_bleu_scitldr_and_non_ascii() -> None:
    rows = [json.loads(line) for line in SCITLDR.read_text().splitlines() if line.strip()][:300]
    refs = [row["referenceResponse"] for row in rows]
    preds = [" ".join(reversed(r.split()[:5])) + " " + " ".join(r.split()[5:]) for r in refs]
    assert Bleu().corpus(preds, refs)["bleu"] == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score, abs=1e-9)
    zh_p, zh_r = ["我喜欢猫和狗。", "今天天气很好"], ["我喜欢狗。", "今天天气不错"]
    for tok in ("char", "zh", "intl"):
        want = sacrebleu.corpus_bleu(zh_p, [zh_r], tokenize=tok).score
        assert Bleu(tokenize=tok).corpus(zh_p, zh_r)["bleu"] == pytest.approx(want, abs=1e-9)
    assert Bleu().corpus(["", "..."], ["a b c", "!!!"])["bleu"] == pytest.approx(
        sacrebleu.corpus_bleu(["", "..."], [["a b c", "!!!"]]).score, abs=1e-9
    )


def test_bleu_signature_and_lowercase() -> None:
    sig = Bleu().signature()
    assert "tok:13a" in sig and "smooth:exp" in sig and "case:mixed" in sig
    assert "case:lc" in Bleu(lowercase=True).signature()
    preds, refs = ["The Cat sat"], ["the cat sat"]
    assert Bleu(lowercase=True).corpus(preds, refs)["bleu"] == pytest.approx(
        sacrebleu.corpus_bleu(preds, [refs], lowercase=True).score
    )
    with pytest.raises(ValueError):
        Bleu().corpus(["a"], [])
    with pytest.raises(ValueError):
        Bleu().corpus(["a"], [[]])


def test_split_sentences_cjk_and_quotes() -> None:
    split = Rouge(types=["rougeLsum"], tokenizer="unicode", split_sentences=True)
    assert split._sentences("我喜欢猫。你呢？好的") == ["我喜欢猫。", "你呢？", "好的"]
    assert split._sentences('He said "stop." Then left!\nOK') == ['He said "stop."', "Then left!", "OK"]
    assert split.score("我喜欢猫。你呢？", "你呢？我喜欢猫。")["rougeLsum"]["fmeasure"] == 1.0


def test_score_items_length_mismatch() -> None:
    with pytest.raises(ValueError):
        Rouge().score_items(["a", "b"], ["a"])
    with pytest.raises(ValueError):
        Bleu().corpus(["a", "b"], ["a"])
