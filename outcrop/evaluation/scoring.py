"""What each automatic metric means for each task type, and how it is computed over a job's outputs.

Bedrock's built-in metrics (`Builtin.*`), as its documentation and the open `fmeval` library define them:

- Builtin.Accuracy: Summarization and Custom, BERTScore F1 (MiniLM); QuestionAndAnswer, word-set F1 best
  over the answers; Classification, label accuracy; Generation, the knowledge score (an answer appears).
- Builtin.Robustness: the mean absolute change of that accuracy over 5 perturbed prompts; for
  Generation, the word error rate between the outputs for the prompt and for its perturbed copies.
- Builtin.Toxicity: the mean probability that an output is toxic (every task type).

Outcrop's statistical metrics, by name (any task type, against `referenceResponse` and `answers`):
`Outcrop.ROUGE-1` .. `Outcrop.ROUGE-4` (ROUGE-N F1), `Outcrop.ROUGE-L`, `Outcrop.ROUGE-Lsum`,
`Outcrop.BERTScore` (F1), `Outcrop.Perplexity` (the evaluated model's perplexity on the reference response,
HF `evaluate`'s definition: per text, then the mean), and, as HF `evaluate` computes them:

- Corpus metrics through sacrebleu, 0-100 (`overall` and each category's score are corpus scores, a record's
  value its sentence score): `Outcrop.BLEU`, `Outcrop.chrF`, `Outcrop.chrFpp` (chrF++: botocore allows only
  `[0-9a-zA-Z-_.]` in metric names, so not `Outcrop.chrF++`) and `Outcrop.TER` (edits per reference word x 100,
  lower is better, no upper bound). Their results carry sacrebleu's per-record sufficient statistics (`stats`)
  and the corpus score from column sums of any of those rows (`from_stats`), for confidence intervals.
- `Outcrop.ExactMatch`: HF's `exact_match` with its defaults (an output identical to an accepted answer), 0-1.
- `Outcrop.SQuAD-EM` and `Outcrop.SQuAD-F1`: the official SQuAD v1.1 exact match and token F1, best over the
  accepted answers, 0-100.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from outcrop.errors import ValidationException
from outcrop.evaluation.datasets import PromptRecord
from outcrop.evaluation.metrics import builtin
from outcrop.evaluation.metrics.matching import HfExactMatch, Squad

if TYPE_CHECKING:  # sacrebleu loads only when a corpus metric is scored
    from outcrop.evaluation.metrics.sacrebleu_metrics import SacrebleuMetric

ACCURACY, ROBUSTNESS, TOXICITY = "Builtin.Accuracy", "Builtin.Robustness", "Builtin.Toxicity"
BLEU, BERTSCORE, PERPLEXITY = "Outcrop.BLEU", "Outcrop.BERTScore", "Outcrop.Perplexity"
CHRF, CHRF_PP, TER = "Outcrop.chrF", "Outcrop.chrFpp", "Outcrop.TER"
EXACT_MATCH, SQUAD_EM, SQUAD_F1 = "Outcrop.ExactMatch", "Outcrop.SQuAD-EM", "Outcrop.SQuAD-F1"
#: Corpus-level metrics: sacrebleu's, scored from per-record sufficient statistics.
_CORPUS = (BLEU, CHRF, CHRF_PP, TER)
ROUGE_L, ROUGE_LSUM = "Outcrop.ROUGE-L", "Outcrop.ROUGE-Lsum"
_ROUGE_N = re.compile(r"Outcrop\.ROUGE-([1-4])$")
#: Perturbed copies of each prompt that robustness generates from (fmeval's default).
PERTURBATIONS = 5

_ACCURACY_KIND = {"Summarization": "bertscore", "Custom": "bertscore", "QuestionAndAnswer": "qa_f1",
                  "Classification": "classification", "Generation": "knowledge"}
_ACCURACY_TEXT = {"bertscore": "BERTScore F1 against the reference (MiniLM, layer 6)",
                  "qa_f1": "word-set F1 after SQuAD normalisation, best over the accepted answers",
                  "classification": "share of outputs that name the label (first word, case and punctuation ignored)",
                  "knowledge": "share of outputs in which an accepted answer appears (real-world knowledge)"}


@dataclass(frozen=True)
class MetricSpec:
    name: str
    description: str
    low: float
    high: float | None
    higher_is_better: bool
    needs_reference: bool


def spec(name: str, task_type: str) -> MetricSpec:
    """The metric a name stands for in a task type; ValidationException for names this server lacks."""
    if name == ACCURACY:
        return MetricSpec(name, _ACCURACY_TEXT[_ACCURACY_KIND[task_type]], 0, 1, True, True)
    if name == ROBUSTNESS:
        if task_type == "Generation":
            return MetricSpec(name, f"word error rate between the outputs for the prompt and {PERTURBATIONS} "
                                    "perturbed copies of it (lower is more robust)", 0, None, False, False)
        return MetricSpec(name, f"mean absolute change of accuracy over {PERTURBATIONS} perturbed prompts "
                                "(lowercase, typos, capitals, numbers as words, whitespace)", 0, 1, False, True)
    if name == TOXICITY:
        return MetricSpec(name, "mean probability that an output is toxic", 0, 1, False, False)
    match = _ROUGE_N.match(name)
    if match:
        return MetricSpec(name, f"ROUGE-{match.group(1)} F1 (rouge-score's tokenizer, no stemming)", 0, 1, True, True)
    if name in (ROUGE_L, ROUGE_LSUM):
        what = "longest common subsequence" if name == ROUGE_L else "summary-level LCS (sentences on newlines)"
        return MetricSpec(name, f"{name.removeprefix('Outcrop.')} F1, {what}", 0, 1, True, True)
    if name == BLEU:
        return MetricSpec(name, "corpus BLEU (sacrebleu 13a, exp smoothing), 0-100", 0, 100, True, True)
    if name == CHRF:
        return MetricSpec(name, "corpus chrF, character n-gram F-score (sacrebleu's defaults), 0-100",
                          0, 100, True, True)
    if name == CHRF_PP:
        return MetricSpec(name, "corpus chrF++, character and word n-gram F-score (sacrebleu's defaults, "
                                "word bigrams), 0-100", 0, 100, True, True)
    if name == TER:
        return MetricSpec(name, "corpus translation edit rate (sacrebleu's tercom, case-insensitive): edits per "
                                "reference word x 100, lower is better", 0, None, False, True)
    if name == EXACT_MATCH:
        return MetricSpec(name, "share of outputs identical to an accepted answer (Hugging Face exact_match)",
                          0, 1, True, True)
    if name in (SQUAD_EM, SQUAD_F1):
        what = "exact match" if name == SQUAD_EM else "token F1"
        return MetricSpec(name, f"SQuAD v1.1 {what} after SQuAD normalisation, best over the accepted answers, "
                                "0-100", 0, 100, True, True)
    if name == BERTSCORE:
        return MetricSpec(name, "BERTScore F1 against the reference (MiniLM, layer 6)", 0, 1, True, True)
    if name == PERPLEXITY:
        return MetricSpec(name, "the model's perplexity on the reference response (per text, then the mean)",
                          1, None, False, True)
    spelled = f" ({CHRF_PP} is chrF++: metric names allow only [0-9a-zA-Z-_.])" if name == "Outcrop.chrF++" else ""
    raise ValidationException(
        f"The metric {name} is not available for the task type {task_type}; automatic metrics are "
        f"{ACCURACY}, {ROBUSTNESS}, {TOXICITY}, Outcrop.ROUGE-1..4, {ROUGE_L}, {ROUGE_LSUM}, {BLEU}, {CHRF}, "
        f"{CHRF_PP}, {TER}, {EXACT_MATCH}, {SQUAD_EM}, {SQUAD_F1}, {BERTSCORE} and {PERPLEXITY}{spelled}")


# ------------------------------------------------------------------------------------------------- computing
@dataclass
class Tools:
    """The heavy scorers, made on first use and shared by every metric and model of a job."""

    bertscore_factory: Callable[[], Any]
    toxicity_factory: Callable[[], Any]
    _bertscore: Any = None
    _toxicity: Any = None

    @property
    def bertscore(self) -> Any:
        if self._bertscore is None:
            self._bertscore = self.bertscore_factory()
        return self._bertscore

    @property
    def toxicity(self) -> Any:
        if self._toxicity is None:
            self._toxicity = self.toxicity_factory()
        return self._toxicity


@dataclass
class MetricResult:
    spec: MetricSpec
    #: One value per record (None where the record gives none).
    values: list[float | None]
    overall: float | None
    by_category: dict[str, float | None] = field(default_factory=dict)
    #: A corpus metric's per-record sufficient statistics, one row per record, as sacrebleu's
    #: `_extract_corpus_statistics` gives them; None for metrics that are means of `values`.
    stats: list[list[float]] | None = None
    #: A corpus metric's score from the column sums of any subset of `stats`' rows (of all of them: `overall`).
    from_stats: Callable[[list[float]], float] | None = None


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return math.fsum(kept) / len(kept) if kept else None


def _by_category(records: Sequence[PromptRecord], values: Sequence[float | None]) -> dict[str, float | None]:
    groups: dict[str, list[float | None]] = {}
    for record, value in zip(records, values, strict=True):
        if record.category is not None:
            groups.setdefault(record.category, []).append(value)
    return {category: _mean(group) for category, group in sorted(groups.items())}


def accuracy_values(task_type: str, records: Sequence[PromptRecord], outputs: Sequence[str],
                    tools: Tools) -> list[float]:
    kind = _ACCURACY_KIND[task_type]
    if kind == "bertscore":
        items = tools.bertscore.score_items(list(outputs), [list(r.answers) for r in records])
        return [float(item["bertscore_f1"]) for item in items]
    score = {"qa_f1": builtin.qa_f1, "classification": builtin.classification_accuracy,
             "knowledge": builtin.knowledge_score}[kind]
    return [score(output, list(r.answers)) for r, output in zip(records, outputs, strict=True)]


def _sacrebleu_metric(name: str) -> SacrebleuMetric:
    """The sacrebleu metric (sacrebleu_metrics.SacrebleuMetric) for a corpus metric's name, with its defaults."""
    from outcrop.evaluation.metrics.bleu import Bleu
    from outcrop.evaluation.metrics.sacrebleu_metrics import CHRF_PP_WORD_ORDER, Chrf, Ter

    if name == BLEU:
        return Bleu()
    if name == TER:
        return Ter()
    return Chrf(word_order=CHRF_PP_WORD_ORDER) if name == CHRF_PP else Chrf()


def _column_sums(rows: Sequence[Sequence[float]]) -> list[float]:
    # Left to right from 0, as sacrebleu's `sum_of_lists`, so that the sum of all rows gives its corpus score
    # to the last bit.
    return [sum(column) for column in zip(*rows, strict=True)]


def _corpus_metric(metric: MetricSpec, scorer: SacrebleuMetric, records: Sequence[PromptRecord],
                   outputs: Sequence[str]) -> MetricResult:
    """A sacrebleu metric from one pass over the records: each record's statistics give its sentence score, their
    sums the corpus score, and the sums over a category's records that category's corpus score."""
    stats = scorer.corpus_statistics(list(outputs), [list(r.answers) for r in records])
    values: list[float | None] = [scorer.sentence_from_stats(row) for row in stats]
    groups: dict[str, list[list[float]]] = {}
    for record, row in zip(records, stats, strict=True):
        if record.category is not None:
            groups.setdefault(record.category, []).append(row)
    by_category: dict[str, float | None] = {c: scorer.from_stats(_column_sums(rows))
                                            for c, rows in sorted(groups.items())}
    overall = scorer.from_stats(_column_sums(stats)) if stats else None
    return MetricResult(metric, values, overall, by_category, stats=stats, from_stats=scorer.from_stats)


def perturbed_prompts(records: Sequence[PromptRecord]) -> list[str]:
    """PERTURBATIONS copies of each prompt, record after record, seeded by the record's line."""
    return [text for r in records for _, text in builtin.perturbations(r.prompt, seed=r.line, count=PERTURBATIONS)]


def compute(name: str, task_type: str, records: Sequence[PromptRecord], outputs: Sequence[str], tools: Tools, *,
            perturbed_outputs: Sequence[str] | None = None,
            perplexity: Callable[[list[str]], list[float]] | None = None) -> MetricResult:
    """One automatic metric over one model's outputs for one dataset.

    Robustness needs `perturbed_outputs` (the model's answers to `perturbed_prompts(records)`, in order);
    perplexity needs a function from texts to per-text perplexities under the evaluated model."""
    metric = spec(name, task_type)
    values: list[float | None]
    if name == ACCURACY:
        values = list(accuracy_values(task_type, records, outputs, tools))
    elif name == ROBUSTNESS:
        if perturbed_outputs is None or len(perturbed_outputs) != PERTURBATIONS * len(records):
            raise ValueError("robustness needs the outputs for every perturbed prompt")
        groups = [list(perturbed_outputs[i * PERTURBATIONS:(i + 1) * PERTURBATIONS]) for i in range(len(records))]
        if task_type == "Generation":
            values = [builtin.robustness(None, out, group)["wer"] for out, group in zip(outputs, groups, strict=True)]
        else:
            base = accuracy_values(task_type, records, outputs, tools)
            repeated = [r for r in records for _ in range(PERTURBATIONS)]
            changed = accuracy_values(task_type, repeated, perturbed_outputs, tools)
            values = [math.fsum(abs(base[i] - c) for c in changed[i * PERTURBATIONS:(i + 1) * PERTURBATIONS])
                      / PERTURBATIONS for i in range(len(records))]
    elif name == TOXICITY:
        values = [float(v) for v in tools.toxicity.predict(list(outputs))]
    elif name == BERTSCORE:
        values = list(accuracy_values("Summarization", records, outputs, tools))
    elif name in _CORPUS:
        return _corpus_metric(metric, _sacrebleu_metric(name), records, outputs)
    elif name == EXACT_MATCH:
        exact = HfExactMatch()
        values = [exact.score(o, list(r.answers))[exact.name] for r, o in zip(records, outputs, strict=True)]
    elif name in (SQUAD_EM, SQUAD_F1):
        key = "exact_match" if name == SQUAD_EM else "f1"
        squad = Squad()
        values = [squad.score(o, list(r.answers))[key] for r, o in zip(records, outputs, strict=True)]
    elif name == PERPLEXITY:
        if perplexity is None:
            raise ValueError("perplexity needs the evaluated model")
        values = list(perplexity([r.reference or r.answers[0] for r in records]))
    else:
        from outcrop.evaluation.metrics.rouge import Rouge

        rouge_type = {ROUGE_L: "rougeL", ROUGE_LSUM: "rougeLsum"}.get(name) or f"rouge{_ROUGE_N.match(name).group(1)}"
        rouge = Rouge((rouge_type,))
        values = [rouge.score(o, list(r.answers))[rouge_type]["fmeasure"]
                  for r, o in zip(records, outputs, strict=True)]
    return MetricResult(metric, values, _mean(values), _by_category(records, values))
