"""Sensitive information: Bedrock's PII entity types that a pattern can find reliably, each with its checksum
(Luhn for cards and Canadian SINs, ISO 7064 mod 97 for IBANs, the VIN check digit, the rules that valid SSNs
and ITINs follow) or with the words that must stand near it (a CVV is three digits after "CVV", not any three
digits). Types that need a language model to find (names, addresses, ages...) are not here: a guardrail that
asks for them is refused by name (service.py), not answered with a pattern that would miss most of them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

#: Characters a finding is looked for context in, before it.
CONTEXT_WINDOW = 30


@dataclass(frozen=True)
class Finding:
    type: str  # a PII entity type, or a custom regex's name
    start: int
    end: int
    match: str


def _luhn(number: str) -> bool:
    digits = [int(d) for d in number if d.isdigit()]
    total = 0
    for i, digit in enumerate(reversed(digits)):
        if i % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def _card(match: str) -> bool:
    digits = re.sub(r"\D", "", match)
    return 13 <= len(digits) <= 19 and _luhn(digits)


def _iban(match: str) -> bool:
    compact = match.replace(" ", "").upper()
    rearranged = compact[4:] + compact[:4]
    return 15 <= len(compact) <= 34 and int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _ssn(match: str) -> bool:
    area, group, serial = match[:3], match[4:6], match[7:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _ip(match: str) -> bool:
    if not any(c.isalnum() for c in match):  # "::" is an address, but in text it is punctuation
        return False
    try:
        ipaddress.ip_address(match)
    except ValueError:
        return False
    return True


def _aba(match: str) -> bool:
    d = [int(c) for c in match]
    return (3 * (d[0] + d[3] + d[6]) + 7 * (d[1] + d[4] + d[7]) + d[2] + d[5] + d[8]) % 10 == 0


def _phone_digits(match: str) -> bool:
    return 10 <= sum(c.isdigit() for c in match) <= 15


_VIN_VALUES = {**{str(d): d for d in range(10)}, **dict(zip("ABCDEFGH", range(1, 9), strict=True)),
               **dict(zip("JKLMN", range(1, 6), strict=True)), "P": 7, "R": 9,
               **dict(zip("STUVWXYZ", range(2, 10), strict=True))}
_VIN_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)


def _vin(match: str) -> bool:
    total = sum(_VIN_VALUES[c] * w for c, w in zip(match.upper(), _VIN_WEIGHTS, strict=True))
    check = total % 11
    return match[8].upper() == ("X" if check == 10 else str(check))


@dataclass(frozen=True)
class Detector:
    pattern: re.Pattern[str]
    valid: Callable[[str], bool] | None = None
    #: Words one of which must stand within CONTEXT_WINDOW characters before the match (lower case).
    context: tuple[str, ...] = ()


def _p(pattern: str, flags: int = 0) -> re.Pattern[str]:
    return re.compile(pattern, flags)


DETECTORS: dict[str, Detector] = {
    # Bounded runs, starting only where a run of local-part characters starts: the unbounded form rescans the
    # rest of a long run from every position in it (quadratic on text like "a.a.a.a...").
    "EMAIL": Detector(_p(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})"
                         r"{0,8}\.[A-Za-z]{2,24}\b")),
    # An international number (+ country code, 7-14 more digits in groups), or a North American one (3-3-4, with
    # separators or a parenthesized area code, optionally 1- before it): digit runs of other shapes (ranges,
    # ids, 3-3-3) are not phones.
    "PHONE": Detector(_p(r"(?<![\w+])(?:\+\d{1,3}(?:[\s.-]?\(?\d{1,4}\)?){2,5}(?=[\s.-]?\d)[\s.-]?\d{2,4}"
                         r"|(?:1[\s.-])?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4})(?![\w-])"), _phone_digits),
    "CREDIT_DEBIT_CARD_NUMBER": Detector(_p(r"\b(?:\d[ -]?){12,18}\d\b"), _card),
    "CREDIT_DEBIT_CARD_CVV": Detector(_p(r"(?i:\b(?:cvv2?|cvc|security code)\b)\D{0,12}\b(?P<value>\d{3,4})\b")),
    "CREDIT_DEBIT_CARD_EXPIRY": Detector(_p(r"\b(?:0[1-9]|1[0-2])\s?/\s?(?:\d{2}|20\d{2})\b"),
                                         context=("exp", "expiry", "expires", "expiration", "valid thru")),
    "US_SOCIAL_SECURITY_NUMBER": Detector(_p(r"\b\d{3}-\d{2}-\d{4}\b"), _ssn),
    "US_INDIVIDUAL_TAX_IDENTIFICATION_NUMBER": Detector(
        _p(r"\b9\d{2}-(?:5\d|6[0-5]|7\d|8[0-8]|9[0-2]|9[4-9])-\d{4}\b")),
    "US_BANK_ROUTING_NUMBER": Detector(_p(r"\b\d{9}\b"), _aba, context=("routing", "aba", "rtn")),
    "CA_SOCIAL_INSURANCE_NUMBER": Detector(_p(r"\b\d{3}[ -]\d{3}[ -]\d{3}\b"), _luhn,
                                           context=("sin", "social insurance")),
    "UK_NATIONAL_INSURANCE_NUMBER": Detector(_p(r"\b(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
                                                r" ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")),
    "INTERNATIONAL_BANK_ACCOUNT_NUMBER": Detector(_p(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"),
                                                  _iban),
    "VEHICLE_IDENTIFICATION_NUMBER": Detector(_p(r"\b[A-HJ-NPR-Z0-9]{17}\b"), _vin),
    # A sentence's full stop may follow an address; another octet or a port may not.
    "IP_ADDRESS": Detector(_p(r"(?<![\w.:])(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7})"
                              r"(?!\w|[.:][0-9A-Fa-f])"), _ip),
    "MAC_ADDRESS": Detector(_p(r"\b[0-9A-Fa-f]{2}(?:([:-])[0-9A-Fa-f]{2})(?:\1[0-9A-Fa-f]{2}){4}\b")),
    "URL": Detector(_p(r"\b(?:https?://|www\.)[^\s<>\"']+[^\s<>\"'.,;:!?)\]]")),
    "AWS_ACCESS_KEY": Detector(_p(r"\b(?:AKIA|ASIA|AIDA|AROA)[A-Z0-9]{16}\b")),
    "AWS_SECRET_KEY": Detector(_p(r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"),
                               context=("secret", "aws_secret_access_key", "secret_access_key", "secret key")),
    "PASSWORD": Detector(_p(r"(?<=[:=] )\S{4,64}|(?<=[:=])\S{4,64}"), context=("password", "passwd", "pwd")),
}
#: Types Bedrock names whose detection needs a language model (named-entity recognition), not yet here.
NOT_DETECTED = frozenset({"ADDRESS", "AGE", "NAME", "USERNAME", "DRIVER_ID", "LICENSE_PLATE", "PIN", "SWIFT_CODE",
                          "US_BANK_ACCOUNT_NUMBER", "US_PASSPORT_NUMBER", "UK_NATIONAL_HEALTH_SERVICE_NUMBER",
                          "UK_UNIQUE_TAXPAYER_REFERENCE_NUMBER", "CA_HEALTH_NUMBER"})


def find(text: str, types: list[str]) -> list[Finding]:
    """The PII of `types` in `text`, in order of position. Findings of different types may overlap (a URL
    holding an email): each is reported and acted on; masking covers their union (assessment._mask)."""
    found: list[Finding] = []
    lowered = text.lower()
    for kind in types:
        detector = DETECTORS[kind]
        for m in detector.pattern.finditer(text):
            if detector.valid is not None and not detector.valid(m.group(0)):
                continue
            if detector.context and not _near(lowered[max(0, m.start() - CONTEXT_WINDOW):m.start()], detector):
                continue
            start, end = m.span("value") if "value" in m.re.groupindex else m.span()
            found.append(Finding(kind, start, end, text[start:end]))
    return sorted(found, key=lambda f: (f.start, f.end))


def _near(before: str, detector: Detector) -> bool:
    """Whether one of the detector's words, as a word (not "sin" in "using"), stands in the text before."""
    return any(re.search(r"(?<![a-z])" + re.escape(word) + r"(?![a-z])", before) for word in detector.context)
