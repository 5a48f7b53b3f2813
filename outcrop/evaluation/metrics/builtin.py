"""Bedrock's built-in evaluation metrics, as `fmeval` describes them, in pure Python.

* Accuracy: QA word-set F1 (SQuAD normalisation, best over several answers), exact and quasi-exact match,
  classification accuracy, real-world-knowledge match for open generation.
* Robustness: seeded prompt perturbations (lowercase, keyboard typos, random capitals, numbers as words,
  whitespace added/removed), the score delta and the word error rate between original and perturbed outputs.
* WER: word error rate (whitespace tokens, Levenshtein distance over words; agrees with `jiwer`).
"""

from __future__ import annotations

import random
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from rapidfuzz.distance import Levenshtein

from outcrop.evaluation.metrics.base import Metric, References, as_list

VERSION = "outcrop-0.1"

#: fmeval joins several acceptable answers into one string with this separator.
OR_SEPARATOR = "<OR>"

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


# --------------------------------------------------------------------------------------------- normalisation
def normalize_answer(text: str) -> str:
    """SQuAD / fmeval normalisation: lowercase, drop punctuation, drop articles a/an/the, collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def answer_list(answers: str | Sequence[str]) -> list[str]:
    """A list of targets; a single string is split on `<OR>` as fmeval does."""
    items = answers.split(OR_SEPARATOR) if isinstance(answers, str) else list(answers)
    out: list[str] = []
    for item in items:
        out.extend(item.split(OR_SEPARATOR))
    return out or [""]


def token_f1(pred_tokens: Sequence[str], gold_tokens: Sequence[str]) -> float:
    """SQuAD's token F1: the multiset overlap's precision and recall; 0.0 without a common token."""
    common = Counter(pred_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _f1(prediction: str, target: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(target).split()
    if not pred_tokens or not gold_tokens:  # SQuAD v2: both empty counts as a match
        return float(pred_tokens == gold_tokens)
    return token_f1(pred_tokens, gold_tokens)


def qa_f1(prediction: str, answers: str | Sequence[str]) -> float:
    """SQuAD token-overlap F1 after `normalize_answer`, the best over the answers (`<OR>`-joined or a list)."""
    return max(_f1(prediction, a) for a in answer_list(answers))


def exact_match(prediction: str, answers: str | Sequence[str]) -> float:
    """1.0 when the prediction equals an answer after stripping surrounding whitespace, else 0.0."""
    return float(any(prediction.strip() == a.strip() for a in answer_list(answers)))


def quasi_exact_match(prediction: str, answers: str | Sequence[str]) -> float:
    """1.0 when the prediction equals an answer after `normalize_answer`, else 0.0."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(a) for a in answer_list(answers)))


def _label_form(text: str) -> str:
    return " ".join(text.strip().strip(string.punctuation + string.whitespace).lower().split())


def classification_accuracy(prediction: str, label: str | Sequence[str]) -> float:
    """1.0 when the prediction names the label, else 0.0.

    Rule: both sides are lowercased, stripped of surrounding whitespace and punctuation and have inner
    whitespace collapsed ("1." -> "1", " Positive\\n" -> "positive"). The prediction matches when this form
    equals the label's, or when its first word (again stripped of punctuation) does, so "1 (positive)" and
    "Positive, clearly" count but "not positive" does not. Several labels: any of them.
    """
    pred = _label_form(prediction)
    first = _label_form(pred.split()[0]) if pred else ""
    for target in as_list(label):
        gold = _label_form(target)
        if pred == gold or (first and first == gold):
            return 1.0
    return 0.0


def knowledge_score(prediction: str, answers: str | Sequence[str]) -> float:
    """Real-world-knowledge score: 1.0 when any normalised target appears in the normalised output."""
    pred = f" {normalize_answer(prediction)} "
    for target in answer_list(answers):
        gold = normalize_answer(target)
        if gold and f" {gold} " in pred:
            return 1.0
    return 0.0


# -------------------------------------------------------------------------------------------------------- WER
def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference word count), words split on any whitespace.

    The edit distance is rapidfuzz's (the engine under jiwer) over the word lists; the words are split
    here rather than by jiwer, whose default splits on spaces only, so that newlines in model outputs
    separate words too."""
    ref = reference.split()
    return Levenshtein.distance(ref, hypothesis.split()), len(ref)


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate (S + D + I) / N over whitespace tokens, as `jiwer.wer` computes it.

    With an empty reference WER is undefined: jiwer answers the count of inserted words (2.0 for two);
    here it is 1.0 (any output where none was expected is wholly wrong), so that a robustness score
    averaged over records stays a rate.
    """
    errors, n = word_errors(reference, hypothesis)
    if n == 0:
        return 0.0 if errors == 0 else 1.0
    return errors / n


# ------------------------------------------------------------------------------------------------ perturbations
PERTURBATIONS = ("lowercase", "typos", "random_capitals", "numbers_as_words", "whitespace")

_KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


def _keyboard_neighbours() -> dict[str, str]:
    pos = {ch: (r, c) for r, row in enumerate(_KEYBOARD_ROWS) for c, ch in enumerate(row)}
    out: dict[str, str] = {}
    for ch, (r, c) in pos.items():
        near = [o for o, (r2, c2) in pos.items() if o != ch and abs(r - r2) <= 1 and abs(c - c2) <= 1]
        out[ch] = "".join(sorted(near))
    return out


KEYBOARD_NEIGHBOURS = _keyboard_neighbours()

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))


def number_to_words(n: int) -> str:
    """English words for a non-negative integer: 42 -> "forty-two", 1905 -> "one thousand nine hundred five"."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f"-{_ONES[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_ONES[hundreds]} hundred" + (f" {number_to_words(rest)}" if rest else "")
    for size, word in _SCALES:
        if n >= size:
            high, rest = divmod(n, size)
            return f"{number_to_words(high)} {word}" + (f" {number_to_words(rest)}" if rest else "")
    raise AssertionError("unreachable")


def _digits_to_words(match: re.Match[str]) -> str:
    digits = match.group(0)
    if len(digits) > 15 or (len(digits) > 1 and digits.startswith("0")):  # codes, not quantities: digit by digit
        return " ".join(_ONES[int(d)] for d in digits)
    return number_to_words(int(digits))


def perturb(prompt: str, kind: str, seed: int = 0, *, rate: float = 0.1) -> str:
    """One perturbed copy of the prompt; the same (prompt, kind, seed) always gives the same text.

    lowercase: all lowercase. typos: each letter, with probability `rate`, becomes a neighbouring key on a
    QWERTY keyboard (case kept). random_capitals: each lowercase letter, with probability 2 x `rate`, is
    upper-cased. numbers_as_words: each run of digits becomes English words. whitespace: each space is removed
    with probability `rate`, and a space is added after a non-space character with probability `rate` / 2.
    """
    rng = random.Random(f"{kind}:{seed}")
    if kind == "lowercase":
        return prompt.lower()
    if kind == "typos":
        out = []
        for ch in prompt:
            low = ch.lower()
            if low in KEYBOARD_NEIGHBOURS and rng.random() < rate:
                new = rng.choice(KEYBOARD_NEIGHBOURS[low])
                ch = new.upper() if ch.isupper() else new
            out.append(ch)
        return "".join(out)
    if kind == "random_capitals":
        return "".join(ch.upper() if ch.islower() and rng.random() < 2 * rate else ch for ch in prompt)
    if kind == "numbers_as_words":
        return re.sub(r"\d+", _digits_to_words, prompt)
    if kind == "whitespace":
        out = []
        for ch in prompt:
            if ch == " ":
                if rng.random() >= rate:
                    out.append(ch)
            else:
                out.append(ch)
                if not ch.isspace() and rng.random() < rate / 2:
                    out.append(" ")
        return "".join(out)
    raise ValueError(f"unknown perturbation {kind!r}; choose from {', '.join(PERTURBATIONS)}")


def perturbations(prompt: str, seed: int = 0, count: int = 5) -> list[tuple[str, str]]:
    """`count` (kind, perturbed prompt) pairs: one of each kind in `PERTURBATIONS` order, cycling (with the
    next seed) past five."""
    return [(PERTURBATIONS[i % len(PERTURBATIONS)],
             perturb(prompt, PERTURBATIONS[i % len(PERTURBATIONS)], seed + i // len(PERTURBATIONS)))
            for i in range(count)]


def robustness(score_fn: Callable[[str], float] | None, original_output: str,
               perturbed_outputs: Sequence[str]) -> dict[str, float]:
    """Robustness of one record: `delta` = mean |score(original) - score(perturbed)| over the perturbed
    outputs (when a score function is given), and `wer` = mean word error rate of each perturbed output
    against the original output (the open-generation measure)."""
    if not perturbed_outputs:
        raise ValueError("robustness needs at least one perturbed output")
    out: dict[str, float] = {}
    if score_fn is not None:
        base = score_fn(original_output)
        out["delta"] = sum(abs(base - score_fn(p)) for p in perturbed_outputs) / len(perturbed_outputs)
    out["wer"] = sum(wer(original_output, p) for p in perturbed_outputs) / len(perturbed_outputs)
    return out


# ------------------------------------------------------------------------------------------------ Metric classes
class MeanMetric(Metric):
    """A metric whose corpus scores are the means of its per-pair scores."""

    def signature(self) -> str:
        return f"{self.name}|norm:squad|v:{VERSION}"

    def corpus(self, predictions: Sequence[str], references: Sequence[References]) -> dict[str, float]:
        items = self.score_items(predictions, references)
        if not items:
            return {}
        return {key: sum(float(item[key]) for item in items) / len(items) for key in items[0]}


class QaF1(MeanMetric):
    """QA accuracy: SQuAD word-set F1, best over the references (each may be `<OR>`-joined)."""

    name = "qa_f1"

    def score(self, prediction: str, references: References) -> dict[str, Any]:
        return {"qa_f1": qa_f1(prediction, references)}


class ExactMatch(MeanMetric):
    """Exact match (whitespace-stripped) and quasi-exact match (normalised), best over the references."""

    name = "exact_match"

    def score(self, prediction: str, references: References) -> dict[str, Any]:
        return {"exact_match": exact_match(prediction, references),
                "quasi_exact_match": quasi_exact_match(prediction, references)}


class Accuracy(MeanMetric):
    """Classification accuracy under `classification_accuracy`'s rule."""

    name = "accuracy"

    def signature(self) -> str:
        return f"accuracy|norm:label-first-word|v:{VERSION}"

    def score(self, prediction: str, references: References) -> dict[str, Any]:
        return {"accuracy": classification_accuracy(prediction, references)}


class KnowledgeMatch(MeanMetric):
    """Real-world-knowledge score: any normalised target inside the normalised output."""

    name = "knowledge"

    def score(self, prediction: str, references: References) -> dict[str, Any]:
        return {"knowledge": knowledge_score(prediction, references)}


class Wer(Metric):
    """Word error rate. Per pair: the lowest WER over the references. Corpus: total word errors over total
    reference words (as `jiwer.wer` on lists), using each pair's best reference."""

    name = "wer"

    def signature(self) -> str:
        return f"wer|tok:whitespace|case:yes|agg:corpus|v:{VERSION}"

    def _best(self, prediction: str, references: References) -> tuple[int, int]:
        pairs = [word_errors(r, prediction) for r in as_list(references)] or [word_errors("", prediction)]
        return min(pairs, key=lambda e: (e[0] / e[1]) if e[1] else float(e[0] > 0))

    def score(self, prediction: str, references: References) -> dict[str, Any]:
        errors, n = self._best(prediction, references)
        return {"wer": errors / n if n else float(errors > 0)}

    def corpus(self, predictions: Sequence[str], references: Sequence[References]) -> dict[str, float]:
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
        total_errors = total_words = 0
        for p, r in zip(predictions, references, strict=True):
            errors, n = self._best(p, r)
            total_errors += errors
            total_words += n
        if total_words == 0:
            return {"wer": 0.0 if total_errors == 0 else 1.0}
        return {"wer": total_errors / total_words}
