"""Word filters: the guardrail's own words and phrases, and the managed PROFANITY list.

A word matches as a whole word or phrase, in any case, with any run of spaces between a phrase's words.
PROFANITY is the word list of the `better-profanity` package (MIT, 900-odd entries, leetspeak spellings
included); its own matcher expands every character's variants and is slower than one compiled pattern, so
only the list is taken.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources


def compile_words(words: list[str]) -> re.Pattern[str] | None:
    """One case-insensitive pattern over whole words and phrases (longest first, so a phrase beats its words)."""
    parts = [r"\s+".join(re.escape(piece) for piece in word.split()) for word in
             sorted({w.strip() for w in words if w.strip()}, key=len, reverse=True)]
    if not parts:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(parts) + r")(?!\w)", re.IGNORECASE)


@lru_cache(maxsize=1)
def profanity() -> re.Pattern[str]:
    listed = resources.files("better_profanity").joinpath("profanity_wordlist.txt").read_text("utf-8")
    pattern = compile_words(listed.splitlines())
    assert pattern is not None
    return pattern
