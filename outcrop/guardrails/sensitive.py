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
    try:
        ipaddress.ip_address(match)
    except ValueError:
        return False
    return True


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
    "EMAIL": Detector(_p(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")),
    "PHONE": Detector(_p(r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?|\d{2,4}[\s.-])\d{3,4}[\s.-]\d{3,4}"
                         r"(?!\w)")),
    "CREDIT_DEBIT_CARD_NUMBER": Detector(_p(r"\b(?:\d[ -]?){12,18}\d\b"), _card),
    "CREDIT_DEBIT_CARD_CVV": Detector(_p(r"\b\d{3,4}\b"), context=("cvv", "cvc", "cvv2", "security code")),
    "CREDIT_DEBIT_CARD_EXPIRY": Detector(_p(r"\b(?:0[1-9]|1[0-2])\s?/\s?(?:\d{2}|20\d{2})\b"),
                                         context=("exp", "expiry", "expires", "expiration", "valid thru")),
    "US_SOCIAL_SECURITY_NUMBER": Detector(_p(r"\b\d{3}-\d{2}-\d{4}\b"), _ssn),
    "US_INDIVIDUAL_TAX_IDENTIFICATION_NUMBER": Detector(
        _p(r"\b9\d{2}-(?:5\d|6[0-5]|7\d|8[0-8]|9[0-2]|9[4-9])-\d{4}\b")),
    "US_BANK_ROUTING_NUMBER": Detector(_p(r"\b\d{9}\b"), context=("routing", "aba", "rtn")),
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
    """The PII of `types` in `text`, in order, overlaps resolved in favour of the earlier, then longer, match."""
    found: list[Finding] = []
    lowered = text.lower()
    for kind in types:
        detector = DETECTORS[kind]
        for m in detector.pattern.finditer(text):
            if detector.valid is not None and not detector.valid(m.group(0)):
                continue
            if detector.context and not any(word in lowered[max(0, m.start() - CONTEXT_WINDOW):m.start()]
                                            for word in detector.context):
                continue
            found.append(Finding(kind, m.start(), m.end(), m.group(0)))
    return _without_overlaps(found)


def find_custom(text: str, regexes: list[tuple[str, re.Pattern[str]]]) -> list[Finding]:
    return _without_overlaps([Finding(name, m.start(), m.end(), m.group(0)) for name, pattern in regexes
                              for m in pattern.finditer(text) if m.end() > m.start()])


def _without_overlaps(found: list[Finding]) -> list[Finding]:
    kept: list[Finding] = []
    for finding in sorted(found, key=lambda f: (f.start, -(f.end - f.start))):
        if not kept or finding.start >= kept[-1].end:
            kept.append(finding)
    return kept
