"""ApplyGuardrail: a guardrail's policies on text, with Bedrock's assessments, outputs and usage.

Each text block is checked by the policies enabled for its direction (INPUT: what a user sends; OUTPUT: what
a model answered). A finding whose action is BLOCK replaces the whole answer with the guardrail's blocked
message; ANONYMIZE masks the match as `{TYPE}` (or `{regex name}`) and the masked text is the output; NONE
reports without acting (detect mode). Text qualified as `grounding_source` or `query` is a source for
contextual grounding, not content to filter, and is left alone, as on Bedrock.

Custom regexes are the user's, run with a time limit per block (the `regex` module's `timeout`): a pattern
that backtracks catastrophically fails the call with a ValidationException instead of holding a server thread.
"""

from __future__ import annotations

import math
import time
from typing import Any

import regex

from outcrop.errors import ValidationException
from outcrop.guardrails import sensitive
from outcrop.guardrails.words import compile_words, profanity

INPUT, OUTPUT = "INPUT", "OUTPUT"
INTERVENED, NONE = "GUARDRAIL_INTERVENED", "NONE"
#: Bedrock bills guardrails in text units of up to 1,000 characters.
UNIT_CHARACTERS = 1000
#: Seconds one custom regex may spend on one text block.
REGEX_SECONDS = 0.25
_NOT_CHECKED = {"grounding_source", "query"}
_PAST = {"BLOCK": "BLOCKED", "ANONYMIZE": "ANONYMIZED", "NONE": "NONE"}


def apply(document: dict[str, Any], source: str, content: list[dict[str, Any]], full: bool = False
          ) -> dict[str, Any]:
    """ApplyGuardrail's answer for `content` (its text blocks) under the guardrail `document`."""
    started = time.perf_counter()
    direction = "input" if source == INPUT else "output"
    texts = []
    for i, block in enumerate(content):
        if "image" in block:
            raise ValidationException(f"content[{i}].image: image content is not supported by guardrails on this "
                                      "server yet")
        qualifiers = set(block["text"].get("qualifiers") or [])
        if not qualifiers & _NOT_CHECKED:
            texts.append(block["text"]["text"])
    words, word_findings = _word_policy(document.get("wordPolicy"), direction, texts)
    pii, masked = _sensitive_policy(document.get("sensitiveInformationPolicy"), direction, texts)
    actions = [f["action"] for f in word_findings["customWords"] + word_findings["managedWordLists"]
               + pii["piiEntities"] + pii["regexes"]]
    characters = sum(len(t) for t in texts)
    units = math.ceil(characters / UNIT_CHARACTERS) if characters else 0
    usage = {"topicPolicyUnits": 0, "contentPolicyUnits": 0, "contextualGroundingPolicyUnits": 0,
             "wordPolicyUnits": units if words else 0,
             "sensitiveInformationPolicyUnits": units if (document.get("sensitiveInformationPolicy") or {}).get(
                 "piiEntities") else 0,
             "sensitiveInformationPolicyFreeUnits": units if (document.get("sensitiveInformationPolicy") or {}).get(
                 "regexes") else 0}
    assessment: dict[str, Any] = {}
    shown = (lambda f: True) if full else (lambda f: f["action"] != "NONE")
    if words:
        assessment["wordPolicy"] = {k: [f for f in v if shown(f)] for k, v in word_findings.items()}
    if document.get("sensitiveInformationPolicy"):
        assessment["sensitiveInformationPolicy"] = {k: [f for f in v if shown(f)] for k, v in pii.items()}
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
