"""`outcrop metrics`: score predictions against references with automatic metrics.

Input files are JSONL when their name ends in `.jsonl` or `.ndjson`, otherwise plain text with one item a
line. In JSONL, a prediction is the first of the keys `prediction`, `response`, `output`, `text`,
`modelResponse` present in the record (a bare JSON string is taken as is); a record's references are its
`answers` list when present (several references), else `referenceResponse`, else `reference`, else a
`references` list. ROUGE, BLEU, chrF, TER and BERTScore load only when asked for.

chrf, chrf++ and ter are sacrebleu's, with its defaults (0-100; TER: lower is better). hf_exact_match is
Hugging Face evaluate's exact match (0-1), the one that --regexes-to-ignore, --ignore-case,
--ignore-punctuation and --ignore-numbers set, in that order; exact_match is fmeval's (surrounding white space
stripped) with its quasi-exact match. squad is the official SQuAD v1.1 exact match and F1 (0-100), keyed
`exact_match` and `f1` as in Hugging Face's squad, so it is scored in a run without exact_match.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

METRIC_NAMES = ("rouge", "bleu", "chrf", "chrf++", "ter", "bertscore", "qa_f1", "exact_match", "hf_exact_match",
                "squad", "accuracy", "knowledge", "wer", "toxicity")
#: The flags that set `hf_exact_match`'s options: flag -> HfExactMatch keyword.
MATCH_FLAGS = {"--regexes-to-ignore": "regexes_to_ignore", "--ignore-case": "ignore_case",
               "--ignore-punctuation": "ignore_punctuation", "--ignore-numbers": "ignore_numbers"}
PREDICTION_KEYS = ("prediction", "response", "output", "text", "modelResponse")
REFERENCE_KEYS = ("referenceResponse", "reference")


class MetricsInputError(ValueError):
    """A user-caused problem with the metric inputs; reported as one line."""


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("metrics", help="automatic evaluation metrics (ROUGE, BLEU, BERTScore, QA F1, ...)")
    metrics = parser.add_subparsers(dest="metrics_command", required=True, metavar="SUBCOMMAND")

    score = metrics.add_parser("score", parents=[common], help="score predictions against references",
                               description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    score.add_argument("--metric", action="append", required=True, metavar="NAME",
                       help=f"a metric to compute, repeatable or comma-separated: {', '.join(METRIC_NAMES)}")
    score.add_argument("--predictions", required=True, help="text file (one a line) or JSONL of predictions")
    score.add_argument("--references", default=None,
                       help="text file (one a line) or JSONL of references (optional for toxicity alone)")
    score.add_argument("--json", action="store_true", help="print one JSON object of corpus scores")
    score.add_argument("--per-item", default=None, metavar="FILE", help="write each pair's scores as JSONL")
    score.add_argument("--stemmer", action="store_true", help="Porter stemmer on for ROUGE")
    score.add_argument("--tokenizer", choices=("default", "unicode"), default="default",
                       help="ROUGE tokenizer: rouge-score's ASCII one (default) or one that keeps non-Latin text")
    score.add_argument("--bootstrap", action="store_true",
                       help="add each score's percentile bootstrap interval (ROUGE's: rouge-score's "
                            "BootstrapAggregator, identical to it with the same --seed)")
    score.add_argument("--resamples", type=int, default=None, metavar="N", help="bootstrap resamples (default 1000)")
    score.add_argument("--confidence", type=float, default=None, help="interval level (default 0.95)")
    score.add_argument("--seed", type=int, default=None, help="the bootstrap's seed (default 12345)")
    match = score.add_argument_group("hf_exact_match options (Hugging Face evaluate's, applied in this order)")
    match.add_argument("--regexes-to-ignore", action="append", metavar="REGEX",
                       help="remove matches of this regular expression first, repeatable (applied in order)")
    match.add_argument("--ignore-case", action="store_true", help="then lowercase")
    match.add_argument("--ignore-punctuation", action="store_true", help="then remove ASCII punctuation")
    match.add_argument("--ignore-numbers", action="store_true", help="then remove the digits 0-9")
    score.set_defaults(func=_score)


# --------------------------------------------------------------------------------------------------- reading
def _is_jsonl(path: Path) -> bool:
    return path.suffix.lower() in (".jsonl", ".ndjson")


def _records(path: Path) -> list[Any]:
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise MetricsInputError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
    return out


def read_predictions(path: str | Path) -> list[str]:
    path = Path(path)
    if not _is_jsonl(path):
        return path.read_text(encoding="utf-8").splitlines()
    out = []
    for number, record in enumerate(_records(path), 1):
        if isinstance(record, str):
            out.append(record)
            continue
        key = next((k for k in PREDICTION_KEYS if isinstance(record, dict) and k in record), None)
        if key is None:
            raise MetricsInputError(f"{path}: record {number} has none of the keys {', '.join(PREDICTION_KEYS)}")
        out.append(str(record[key]))
    return out


def read_references(path: str | Path) -> list[str | list[str]]:
    path = Path(path)
    if not _is_jsonl(path):
        return list(path.read_text(encoding="utf-8").splitlines())
    out: list[str | list[str]] = []
    for number, record in enumerate(_records(path), 1):
        if isinstance(record, str):
            out.append(record)
        elif isinstance(record, list):
            out.append([str(r) for r in record])
        elif isinstance(record, dict) and isinstance(record.get("answers"), list) and record["answers"]:
            out.append([str(a) for a in record["answers"]])
        elif isinstance(record, dict) and any(k in record for k in REFERENCE_KEYS):
            out.append(str(next(record[k] for k in REFERENCE_KEYS if k in record)))
        elif isinstance(record, dict) and isinstance(record.get("references"), list):
            out.append([str(r) for r in record["references"]])
        else:
            raise MetricsInputError(f"{path}: record {number} has no answers, referenceResponse or reference")
    return out


# --------------------------------------------------------------------------------------------------- intervals
def _bootstrap_settings(args: argparse.Namespace):
    from outcrop.evaluation import statistics

    given = {k: v for k, v in (("resamples", args.resamples), ("confidence", args.confidence), ("seed", args.seed))
             if v is not None}
    try:
        return statistics.Settings(**given)
    except ValueError as exc:
        raise MetricsInputError(str(exc)) from None


def bootstrap_intervals(metric: Any, predictions: list[str], references: list[Any], settings: Any,
                        corpus: dict[str, float], items: Callable[[], list[dict[str, Any]]]
                        ) -> dict[str, list[float]]:
    """Corpus key -> [low, high]: a sacrebleu metric's from its resampled statistics, ROUGE's F from rouge-score's
    BootstrapAggregator, a mean's from its per-item values. A key that is no mean of its items gets none.
    `corpus` is the metric's corpus scores, `items` gives its per-item scores (scored once for the whole run)."""
    from outcrop.evaluation import statistics
    from outcrop.evaluation.metrics.rouge import Rouge, bootstrap_aggregate
    from outcrop.evaluation.metrics.sacrebleu_metrics import SacrebleuMetric

    if isinstance(metric, Rouge):
        aggregated = bootstrap_aggregate(items(), confidence=settings.confidence, n_samples=settings.resamples,
                                         seed=settings.seed)
        return {key: [bounds["low"]["fmeasure"], bounds["high"]["fmeasure"]] for key, bounds in aggregated.items()}
    resamples = statistics.Resamples(len(predictions), settings)
    if isinstance(metric, SacrebleuMetric):
        sample = statistics.Sample([0.0] * len(predictions), metric.corpus_statistics(predictions, references),
                                   metric.from_stats)
        interval = resamples.interval(sample)
        return {metric.name: interval} if interval else {}
    scored = items()
    out = {}
    for key, value in corpus.items():
        values = [item.get(key) for item in scored]
        if not all(isinstance(v, int | float) for v in values):
            continue
        sample = statistics.Sample(values)
        mean = sample.score()
        if mean is not None and abs(mean - value) <= 1e-9 * max(1.0, abs(value)):
            if interval := resamples.interval(sample):
                out[key] = interval
    return out


# --------------------------------------------------------------------------------------------------- metrics
def build_metric(name: str, *, stemmer: bool = False, tokenizer: str = "default",
                 match_options: dict[str, Any] | None = None):
    """The metric object for a CLI name; ROUGE/BLEU/chrF/TER/BERTScore are imported only here. `match_options`
    are `HfExactMatch`'s keywords (for hf_exact_match only)."""
    if match_options and name != "hf_exact_match":
        raise MetricsInputError(f"metric {name!r} takes no exact-match options")
    try:
        if name == "rouge":
            from outcrop.evaluation.metrics.rouge import Rouge

            return Rouge(use_stemmer=stemmer, tokenizer=tokenizer)
        if name == "bleu":
            from outcrop.evaluation.metrics.bleu import Bleu

            return Bleu()
        if name in ("chrf", "chrf++"):
            from outcrop.evaluation.metrics.sacrebleu_metrics import CHRF_PP_WORD_ORDER, Chrf

            return Chrf(word_order=CHRF_PP_WORD_ORDER) if name == "chrf++" else Chrf()
        if name == "ter":
            from outcrop.evaluation.metrics.sacrebleu_metrics import Ter

            return Ter()
        if name == "bertscore":
            from outcrop.evaluation.metrics.bertscore import BertScore

            return BertScore()
    except (ImportError, OSError, RuntimeError) as exc:  # module not written/installed, or model weights absent
        raise MetricsInputError(f"metric {name!r} is not available here: {exc}") from None
    from outcrop.evaluation.metrics import builtin

    simple = {"qa_f1": builtin.QaF1, "exact_match": builtin.ExactMatch, "accuracy": builtin.Accuracy,
              "knowledge": builtin.KnowledgeMatch, "wer": builtin.Wer}
    if name in simple:
        return simple[name]()
    if name in ("hf_exact_match", "squad"):
        from outcrop.evaluation.metrics.matching import HfExactMatch, Squad

        if name == "squad":
            return Squad()
        try:
            return HfExactMatch(**(match_options or {}))
        except re.error as exc:
            raise MetricsInputError(f"--regexes-to-ignore {exc.pattern!r} is not a valid regular expression: "
                                    f"{exc}") from None
    if name == "toxicity":
        from outcrop.evaluation.metrics.toxicity import Toxicity

        return Toxicity()
    raise MetricsInputError(f"unknown metric {name!r}; choose from {', '.join(METRIC_NAMES)}")


def _metric_names(values: Sequence[str]) -> list[str]:
    names: list[str] = []
    for value in values:
        for name in value.split(","):
            name = name.strip()
            if name and name not in names:
                names.append(name)
    return names


def _score(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (MetricsInputError, FileNotFoundError) as exc:
        print(f"outcrop: {exc}", file=sys.stderr)
        return 1


def _match_options(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """The hf_exact_match options given on the command line; refused when no metric would use them."""
    given = {flag: getattr(args, key) for flag, key in MATCH_FLAGS.items() if getattr(args, key)}
    if given and "hf_exact_match" not in names:
        also = " (exact_match is fmeval's and takes no options)" if "exact_match" in names else ""
        raise MetricsInputError(f"{', '.join(given)} set the options of hf_exact_match (Hugging Face's exact "
                                f"match), which is not among the metrics{also}; add --metric hf_exact_match")
    return {MATCH_FLAGS[flag]: value for flag, value in given.items()}


def _merge(into: dict[str, Any], scores: dict[str, Any], owner: dict[str, str], name: str) -> None:
    """`into` updated with one metric's scores; two metrics that report the same key are refused, not overwritten."""
    for key in scores:
        if owner.get(key, name) != name:
            raise MetricsInputError(f"metrics {owner[key]} and {name} both report {key!r}; score them in "
                                    "separate runs")
        owner[key] = name
    into.update(scores)


def _run(args: argparse.Namespace) -> int:
    names = _metric_names(args.metric)
    for name in names:
        if name not in METRIC_NAMES:
            raise MetricsInputError(f"unknown metric {name!r}; choose from {', '.join(METRIC_NAMES)}")
    match_options = _match_options(args, names)
    predictions = read_predictions(args.predictions)
    if args.references is None:
        if any(n != "toxicity" for n in names):
            raise MetricsInputError("--references is required (only toxicity scores predictions alone)")
        references: list[Any] = [""] * len(predictions)
    else:
        references = read_references(args.references)
    if len(predictions) != len(references):
        raise MetricsInputError(f"{len(predictions)} predictions ({args.predictions}) but "
                                f"{len(references)} references ({args.references})")

    metrics = [build_metric(n, stemmer=args.stemmer, tokenizer=args.tokenizer,
                            match_options=match_options if n == "hf_exact_match" else None) for n in names]
    corpus: dict[str, float] = {}
    owner: dict[str, str] = {}
    signatures: list[tuple[str, str]] = []
    per_item: list[dict[str, Any]] = [{} for _ in predictions]
    item_owner: dict[str, str] = {}
    intervals: dict[str, list[float]] = {}
    aggregates: dict[str, Any] = {}
    if not args.bootstrap and any(v is not None for v in (args.resamples, args.confidence, args.seed)):
        raise MetricsInputError("--resamples, --confidence and --seed set the bootstrap: add --bootstrap")
    settings = _bootstrap_settings(args) if args.bootstrap else None
    for metric in metrics:
        scores = metric.corpus(predictions, references)
        _merge(corpus, scores, owner, metric.name)
        signatures.append((metric.name, metric.signature()))
        items = functools.cache(lambda metric=metric: metric.score_items(predictions, references))
        if args.per_item:
            for row, item in zip(per_item, items(), strict=True):
                _merge(row, item, item_owner, metric.name)
        if settings is not None:
            intervals.update(bootstrap_intervals(metric, predictions, references, settings, scores, items))
            from outcrop.evaluation.metrics.rouge import Rouge, bootstrap_aggregate

            if args.json and isinstance(metric, Rouge):  # rouge-score's whole BootstrapAggregator table
                aggregates = bootstrap_aggregate(items(), confidence=settings.confidence,
                                                 n_samples=settings.resamples, seed=settings.seed)
    if settings is not None:
        signatures.append(("bootstrap", settings.interval_signature()))

    if args.per_item:
        with open(args.per_item, "w", encoding="utf-8") as fh:
            for index, row in enumerate(per_item):
                fh.write(json.dumps({"index": index, **row}) + "\n")

    if args.json:
        bounds = {f"{key}_{end}": value for key, (low, high) in intervals.items()
                  for end, value in (("low", low), ("high", high))}
        # With ROUGE, its low/mid/high precision, recall and F, as rouge-score's aggregator gives them.
        print(json.dumps({**corpus, **bounds, **({"rougeBootstrap": aggregates} if aggregates else {})}))
        return 0
    width = max([len("METRIC"), *(len(k) for k in corpus)])
    print(f"{'METRIC'.ljust(width)}  VALUE" + ("     INTERVAL" if intervals else ""))
    for key, value in corpus.items():
        interval = f"  [{intervals[key][0]:.4f}, {intervals[key][1]:.4f}]" if key in intervals else ""
        print(f"{key.ljust(width)}  {value:.4f}{interval}")
    print(f"\n{len(predictions)} pairs")
    for _, sig in signatures:
        print(f"signature: {sig}")
    return 0
