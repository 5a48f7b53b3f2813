"""ApplyGuardrail: a guardrail's policies on text, with Bedrock's assessments, outputs and usage.

Each text block is checked by the policies enabled for its direction (INPUT: what a user sends; OUTPUT: what
a model answered). A finding whose action is BLOCK replaces the whole answer with the guardrail's blocked
message; ANONYMIZE masks the match as `{TYPE}` (or `{regex name}`) and the masked text is the output; NONE
reports without acting (detect mode). Text qualified as `grounding_source` or `query` is what contextual
grounding judges an answer against, not content to filter, as on Bedrock.

The meaning-based policies (denied topics: topics.py; content filters: content.py; contextual grounding:
grounding.py) read one embedding of the checked text's sentences (semantic.py).

Custom regexes are the user's, run with a time limit per block (the `regex` module's `timeout`): a pattern
that backtracks catastrophically fails the call with a ValidationException instead of holding a server thread.
"""

from __future__ import annotations

import math
import time
from typing import Any

import regex

from outcrop.errors import ValidationException
from outcrop.guardrails import content, grounding, sensitive, topics
from outcrop.guardrails.semantic import Embedder, sentences
from outcrop.guardrails.words import compile_words, profanity

INPUT, OUTPUT = "INPUT", "OUTPUT"
INTERVENED, NONE = "GUARDRAIL_INTERVENED", "NONE"
#: Bedrock bills guardrails in text units of up to 1,000 characters.
UNIT_CHARACTERS = 1000
#: Seconds one custom regex may spend on one text block.
REGEX_SECONDS = 0.25
#: The most characters one check embeds for the meaning-based policies (every sentence is embedded: without a
#: bound, one request could hold the embedding model for minutes).
SEMANTIC_CHARACTERS = 100_000
#: Content filters' confidences and strengths, in order.
LEVELS = ("NONE", "LOW", "MEDIUM", "HIGH")
_PAST = {"BLOCK": "BLOCKED", "ANONYMIZE": "ANONYMIZED", "NONE": "NONE"}


def apply(document: dict[str, Any], source: str, content: list[dict[str, Any]], full: bool = False,
          embedder: Embedder | None = None) -> dict[str, Any]:
    """ApplyGuardrail's answer for `content` (its text blocks) under the guardrail `document`. `embedder` gives
    the meaning-based policies (denied topics, content filters, contextual grounding) their vectors."""
    started = time.perf_counter()
    direction = "input" if source == INPUT else "output"
    texts, sources, queries = [], [], []
    for i, block in enumerate(content):
        if "image" in block:
            raise ValidationException(f"content[{i}].image: image content is not supported by guardrails on this "
                                      "server yet")
        qualifiers = block["text"].get("qualifiers") or []
        text = block["text"]["text"]
        if "grounding_source" in qualifiers:
            sources.append(text)
        elif "query" in qualifiers:
            queries.append(text)
        else:
            texts.append(text)
    words, word_findings = _word_policy(document.get("wordPolicy"), direction, texts)
    pii, masked = _sensitive_policy(document.get("sensitiveInformationPolicy"), direction, texts)
    semantic = _Semantic(document, direction, texts, sources, queries, embedder)
    characters = sum(len(t) for t in texts)
    units = _units(characters)
    usage = {"topicPolicyUnits": units if semantic.topics else 0,
             "contentPolicyUnits": units if semantic.filters else 0,
             "contextualGroundingPolicyUnits": _units(characters + sum(map(len, sources + queries)))
             if semantic.grounding else 0,
             "wordPolicyUnits": units if words else 0,
             "sensitiveInformationPolicyUnits": units if (document.get("sensitiveInformationPolicy") or {}).get(
                 "piiEntities") else 0,
             "sensitiveInformationPolicyFreeUnits": units if (document.get("sensitiveInformationPolicy") or {}).get(
                 "regexes") else 0}
    assessment: dict[str, Any] = {}
    shown = (lambda f: True) if full else (lambda f: f["action"] != "NONE")
    if semantic.topics:
        assessment["topicPolicy"] = {"topics": [f for f in semantic.topic_findings() if shown(f)]}
    if semantic.filters:
        assessment["contentPolicy"] = {"filters": [f for f in semantic.content_findings() if shown(f)]}
    if words:
        assessment["wordPolicy"] = {k: [f for f in v if shown(f)] for k, v in word_findings.items()}
    if document.get("sensitiveInformationPolicy"):
        assessment["sensitiveInformationPolicy"] = {k: [f for f in v if shown(f)] for k, v in pii.items()}
    if semantic.grounding:  # scores are what a user tunes thresholds by: always shown
        assessment["contextualGroundingPolicy"] = {"filters": semantic.grounding_findings()}
    actions = [f["action"] for policy in assessment.values() for group in policy.values() for f in group]
    coverage = {"textCharacters": {"guarded": characters,
                                   "total": sum(len(b["text"]["text"]) for b in content if "text" in b)}}
    assessment["invocationMetrics"] = {"guardrailProcessingLatency": round((time.perf_counter() - started) * 1000),
                                       "usage": usage, "guardrailCoverage": coverage}
    if "BLOCKED" in actions:
        message = document["blockedInputMessaging" if source == INPUT else "blockedOutputsMessaging"]
        return _answer(INTERVENED, "Guardrail blocked.", [{"text": message}], assessment, usage, coverage)
    if "ANONYMIZED" in actions:
        return _answer(INTERVENED, "Guardrail masked.", [{"text": t} for t in masked], assessment, usage, coverage)
    return _answer(NONE, None, [], assessment, usage, coverage)


def _units(characters: int) -> int:
    return math.ceil(characters / UNIT_CHARACTERS) if characters else 0


class _Semantic:
    """The meaning-based policies enabled for this direction, judged on one embedding of every sentence
    checked (and of the grounding sources and queries), made only when one of them is on."""

    def __init__(self, document: dict[str, Any], direction: str, texts: list[str], sources: list[str],
                 queries: list[str], embedder: Embedder | None) -> None:
        self.direction = direction
        self.topics = [t for t in (document.get("topicPolicy") or {}).get("topics", []) if _enabled(t, direction)]
        self.filters = [f for f in (document.get("contentPolicy") or {}).get("filters", [])
                        if _enabled(f, direction) and f[f"{direction}Strength"] != "NONE"]
        # Grounding judges an answer against its sources: model output (Bedrock's rule) that came with a source.
        self.grounding = [f for f in (document.get("contextualGroundingPolicy") or {}).get("filters", [])
                          if f.get("enabled", True) and direction == "output" and sources
                          and (f["type"] == "GROUNDING" or queries)]
        if not (self.topics or self.filters or self.grounding):
            return
        if embedder is None:
            raise RuntimeError("a guardrail with meaning-based policies needs an embedder")
        checked = sum(map(len, texts)) + (sum(map(len, sources + queries)) if self.grounding else 0)
        if checked > SEMANTIC_CHARACTERS:
            raise ValidationException(f"The guardrail's content filters, denied topics and grounding checks read at "
                                      f"most {SEMANTIC_CHARACTERS} characters per call; this one has {checked}")
        self.embedder = embedder
        self.sentences = [s for t in texts for s in sentences(t)]
        self.source_sentences = [s for t in sources for s in sentences(t)] if self.grounding else []
        query = [" ".join(queries)] if self.grounding and queries else []
        vectors = embedder(self.sentences + self.source_sentences + query)
        n, m = len(self.sentences), len(self.source_sentences)
        self.vectors, self.source_vectors, self.query_vectors = vectors[:n], vectors[n:n + m], vectors[n + m:]

    def topic_findings(self) -> list[dict[str, Any]]:
        found = []
        for topic, similarity in zip(self.topics, topics.similarities(self.embedder, self.topics, self.vectors),
                                     strict=True):
            if similarity >= topics.TOPIC_SIMILARITY:
                found.append({"name": topic["name"], "type": topic.get("type", "DENY"), "detected": True,
                              "action": _PAST[topic[f"{self.direction}Action"]]})
        return found

    def content_findings(self) -> list[dict[str, Any]]:
        if not self.sentences:  # nothing but punctuation: nothing to classify
            return []
        levels = content.confidences(self.vectors, self.sentences)
        found = []
        for entry in self.filters:
            confidence = max((row[entry["type"]] for row in levels), key=LEVELS.index, default="NONE")
            if confidence == "NONE":
                continue
            strength = entry[f"{self.direction}Strength"]
            # Strength is how little confidence it takes to act: HIGH acts on LOW confidence, LOW on HIGH only.
            detected = LEVELS.index(confidence) >= 4 - LEVELS.index(strength)
            found.append({"type": entry["type"], "confidence": confidence, "filterStrength": strength,
                          "detected": detected,
                          "action": _PAST[entry[f"{self.direction}Action"]] if detected else "NONE"})
        return found

    def grounding_findings(self) -> list[dict[str, Any]]:
        found = []
        for entry in self.grounding:
            if entry["type"] == "GROUNDING":
                score = grounding.grounding(self.sentences, self.vectors, self.source_sentences,
                                            self.source_vectors)
            else:
                score = grounding.relevance(self.vectors, self.query_vectors)
            detected = score < entry["threshold"]
            found.append({"type": entry["type"], "threshold": entry["threshold"], "score": score,
                          "detected": detected, "action": _PAST[entry.get("action", "BLOCK")] if detected else "NONE"})
        return found


def _answer(action: str, reason: str | None, outputs: list[dict[str, Any]], assessment: dict[str, Any],
            usage: dict[str, int], coverage: dict[str, Any]) -> dict[str, Any]:
    out = {"action": action, "outputs": outputs, "assessments": [assessment], "usage": usage,
           "guardrailCoverage": coverage}
    if reason:
        out["actionReason"] = reason
    return out


def _enabled(entry: dict[str, Any], direction: str) -> bool:
    return bool(entry.get(f"{direction}Enabled", True))


def _word_policy(policy: dict[str, Any] | None, direction: str, texts: list[str]
                 ) -> tuple[bool, dict[str, list[dict[str, Any]]]]:
    found: dict[str, list[dict[str, Any]]] = {"customWords": [], "managedWordLists": []}
    if not policy:
        return False, found
    custom = {" ".join(w["text"].lower().split()): w for w in policy["words"] if _enabled(w, direction)}
    pattern = compile_words(list(custom))
    for text in texts:
        for m in pattern.finditer(text) if pattern else ():
            entry = custom.get(" ".join(m.group(0).lower().split()))
            action = _PAST[entry[f"{direction}Action"]] if entry else "BLOCKED"
            found["customWords"].append({"match": m.group(0), "action": action, "detected": True})
        for managed in policy["managedWordLists"]:
            if _enabled(managed, direction):
                found["managedWordLists"] += [{"match": m.group(0), "type": managed["type"], "detected": True,
                                               "action": _PAST[managed[f"{direction}Action"]]}
                                              for m in profanity().finditer(text)]
    return True, found


def _sensitive_policy(policy: dict[str, Any] | None, direction: str, texts: list[str]
                      ) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """The PII and custom-regex findings, and each text with its ANONYMIZE findings masked."""
    found: dict[str, list[dict[str, Any]]] = {"piiEntities": [], "regexes": []}
    if not policy:
        return found, texts
    entities = {e["type"]: e for e in policy["piiEntities"] if _enabled(e, direction)}
    regexes = [r for r in policy["regexes"] if _enabled(r, direction)]
    masked = []
    for text in texts:
        masks: list[tuple[int, int, str]] = []
        for finding in sensitive.find(text, list(entities)):
            action = entities[finding.type][f"{direction}Action"]
            found["piiEntities"].append({"match": finding.match, "type": finding.type, "action": _PAST[action],
                                         "detected": True})
            if action == "ANONYMIZE":
                masks.append((finding.start, finding.end, "{" + finding.type + "}"))
        for entry in regexes:
            try:
                matches = list(regex.finditer(entry["pattern"], text, timeout=REGEX_SECONDS))
            except TimeoutError:
                raise ValidationException(f"The guardrail's regex {entry['name']} took longer than {REGEX_SECONDS} s "
                                          "on this text (catastrophic backtracking?): fix its pattern") from None
            for m in matches:
                if m.end() == m.start():
                    continue
                action = entry[f"{direction}Action"]
                found["regexes"].append({"name": entry["name"], "match": m.group(0), "regex": entry["pattern"],
                                         "action": _PAST[action], "detected": True})
                if action == "ANONYMIZE":
                    masks.append((m.start(), m.end(), "{" + entry["name"] + "}"))
        masked.append(_mask(text, masks))
    return found, masked


def _mask(text: str, masks: list[tuple[int, int, str]]) -> str:
    """The text with every masked span replaced by its label; overlapping spans are masked as their union
    (under the label of the one that starts first), so no part of either shows."""
    merged: list[list[Any]] = []
    for start, end, label in sorted(masks):
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end, label])
    out, at = [], 0
    for start, end, label in merged:
        out += [text[at:start], label]
        at = end
    return "".join(out) + text[at:]
