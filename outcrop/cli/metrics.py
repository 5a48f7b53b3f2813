"""`outcrop metrics`: score predictions against references with automatic metrics.

Input files are JSONL when their name ends in `.jsonl` or `.ndjson`, otherwise plain text with one item a
line. In JSONL, a prediction is the first of the keys `prediction`, `response`, `output`, `text`,
`modelResponse` present in the record (a bare JSON string is taken as is); a record's references are its
`answers` list when present (several references), else `referenceResponse`, else `reference`, else a
`references` list. ROUGE, BLEU and BERTScore load only when asked for.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

METRIC_NAMES = ("rouge", "bleu", "bertscore", "qa_f1", "exact_match", "accuracy", "knowledge", "wer", "toxicity")
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


# --------------------------------------------------------------------------------------------------- metrics
def build_metric(name: str, *, stemmer: bool = False, tokenizer: str = "default"):
    """The metric object for a CLI name; ROUGE/BLEU/BERTScore are imported only here."""
    try:
        if name == "rouge":
            from outcrop.evaluation.metrics.rouge import Rouge

            return Rouge(use_stemmer=stemmer, tokenizer=tokenizer)
        if name == "bleu":
            from outcrop.evaluation.metrics.bleu import Bleu

            return Bleu()
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


def _run(args: argparse.Namespace) -> int:
    names = _metric_names(args.metric)
    for name in names:
        if name not in METRIC_NAMES:
            raise MetricsInputError(f"unknown metric {name!r}; choose from {', '.join(METRIC_NAMES)}")
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

    metrics = [build_metric(n, stemmer=args.stemmer, tokenizer=args.tokenizer) for n in names]
    corpus: dict[str, float] = {}
    signatures: list[tuple[str, str]] = []
    per_item: list[dict[str, Any]] = [{} for _ in predictions]
    for metric in metrics:
        corpus.update(metric.corpus(predictions, references))
        signatures.append((metric.name, metric.signature()))
        if args.per_item:
            for row, scores in zip(per_item, metric.score_items(predictions, references), strict=True):
                row.update(scores)

    if args.per_item:
        with open(args.per_item, "w", encoding="utf-8") as fh:
            for index, row in enumerate(per_item):
                fh.write(json.dumps({"index": index, **row}) + "\n")

    if args.json:
        print(json.dumps(corpus))
        return 0
    width = max([len("METRIC"), *(len(k) for k in corpus)])
    print(f"{'METRIC'.ljust(width)}  VALUE")
    for key, value in corpus.items():
        print(f"{key.ljust(width)}  {value:.4f}")
    print(f"\n{len(predictions)} pairs")
    for _, sig in signatures:
        print(f"signature: {sig}")
    return 0
