"""Sensitive information: Bedrock's PII entity types. Those a pattern can find reliably are here, each with its
checksum (Luhn for cards and Canadian SINs, ISO 7064 mod 97 for IBANs, the VIN check digit, mod 11 for NHS numbers,
the rules that valid SSNs and ITINs follow, a real country in a SWIFT code) or with the words that must stand near
it (a CVV is three digits after "CVV", not any three digits; a PIN is four to six digits after "PIN"). NAME,
ADDRESS and AGE need a language model or phrases, not a checksum: entities.py finds them, and its recognizer runs
only for a guardrail that asks for NAME or ADDRESS.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

from outcrop.guardrails import entities

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
    digits = sum(c.isdigit() for c in match)
    if match.lstrip("(").startswith("0"):  # a national number with its trunk 0: 10 or 11 digits, as in most plans
        return 10 <= digits <= 11
    return 10 <= digits <= 15


_VIN_VALUES = {**{str(d): d for d in range(10)}, **dict(zip("ABCDEFGH", range(1, 9), strict=True)),
               **dict(zip("JKLMN", range(1, 6), strict=True)), "P": 7, "R": 9,
               **dict(zip("STUVWXYZ", range(2, 10), strict=True))}
_VIN_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)


def _vin(match: str) -> bool:
    total = sum(_VIN_VALUES[c] * w for c, w in zip(match.upper(), _VIN_WEIGHTS, strict=True))
    check = total % 11
    return match[8].upper() == ("X" if check == 10 else str(check))


def _nhs(match: str) -> bool:
    digits = [int(c) for c in match if c.isdigit()]
    check = 11 - sum(d * w for d, w in zip(digits[:9], range(10, 1, -1), strict=True)) % 11
    # 10 is no check digit (never issued); one digit ten times passes the sum but is a placeholder.
    return check != 10 and check % 11 == digits[9] and len(set(digits)) > 1


#: ISO 3166-1 alpha-2, and XK, which SWIFT gives Kosovo.
_COUNTRIES = frozenset("""
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC
    CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD
    GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH
    KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW
    MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC
    SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY
    UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW XK""".split())


def _swift(match: str) -> bool:
    return match[4:6] in _COUNTRIES


def _swift_alone(match: str) -> bool:
    """Without "SWIFT" or "BIC" before it, eight capitals are as likely a shouted word ("HOSPITAL" holds IT,
    "BUSINESS" NE): such a code must hold a digit where words hold none, or name the head office (branch XXX)."""
    return any(c.isdigit() for c in match[6:]) or match[8:] == "XXX"


def _both(match: str) -> bool:
    return any(c.isdigit() for c in match) and any(c.isalpha() for c in match)


#: What follows "username is" in a sentence about usernames rather than in one that gives one.
_NOT_USERNAMES = frozenset({"a", "an", "the", "my", "your", "not", "now", "still", "already", "also", "too", "case",
                            "required", "optional", "invalid", "incorrect", "wrong", "correct", "valid", "missing",
                            "empty", "blank", "taken", "available", "unavailable", "unique", "different", "locked",
                            "disabled", "down", "broken", "failing", "working", "shown", "hidden", "same"})


def _username(match: str) -> bool:
    after_is = re.search(r"(?i:\bis)\s{0,3}(\S+)$", match)
    return after_is is None or after_is.group(1).lower() not in _NOT_USERNAMES


@dataclass(frozen=True)
class Detector:
    pattern: re.Pattern[str]
    valid: Callable[[str], bool] | None = None
    #: Words one of which must stand within CONTEXT_WINDOW characters before the match (lower case).
    context: tuple[str, ...] = ()
    #: Whether a match with none of the context words near it is found all the same (a code whose form is enough).
    alone: Callable[[str], bool] | None = None


_DRIVER = ("driver's license", "driver's licence", "drivers license", "drivers licence", "driver license",
           "driver licence", "driving license", "driving licence", "dl")


def _p(pattern: str, flags: int = 0) -> re.Pattern[str]:
    return re.compile(pattern, flags)


DETECTORS: dict[str, Detector] = {
    # Bounded runs, starting only where a run of local-part characters starts: the unbounded form rescans the
    # rest of a long run from every position in it (quadratic on text like "a.a.a.a...").
    "EMAIL": Detector(_p(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})"
                         r"{0,8}\.[A-Za-z]{2,24}\b")),
    # An international number (+ country code, 7-14 more digits in groups), a North American one (3-3-4, with
    # separators or a parenthesized area code, optionally 1- before it), or a national one with its trunk 0 (an
    # area code of 1-4 digits after the 0, maybe parenthesized, then groups: the UK's "020 7946 0958" and
    # "07700 900123", "(02) 9876 5432", "01 23 45 67 89"; 10 or 11 digits): digit runs of other shapes (ranges,
    # ids, 3-3-3, dates) are not phones.
    "PHONE": Detector(_p(r"(?<![\w+])(?:\+\d{1,3}(?:[\s.-]?\(?\d{1,4}\)?){2,5}(?=[\s.-]?\d)[\s.-]?\d{2,4}"
                         r"|(?:1[\s.-])?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}"
                         r"|(?:\(0\d{1,4}\)\s?|0\d{1,4}[\s.-])\d{2,6}(?:[\s.-]\d{2,6}){0,3})(?![\w-])"),
                      _phone_digits),
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
    # A BIC: bank (4 letters), country (2), location (2), optional branch (3), in capitals as it is written.
    "SWIFT_CODE": Detector(_p(r"(?<![A-Za-z0-9])[A-Z]{6}[A-Z0-9]{2}(?:[A-Z0-9]{3})?(?![A-Za-z0-9])"), _swift,
                           context=("swift", "bic"), alone=_swift_alone),
    # Written 3-3-4 with spaces; hyphenated, that shape is a North American phone number.
    "UK_NATIONAL_HEALTH_SERVICE_NUMBER": Detector(_p(r"(?<![\w+-])\d{3}( ?)\d{3}\1\d{4}(?![\w-])"), _nhs),
    "US_BANK_ACCOUNT_NUMBER": Detector(_p(r"(?<![\w-])\d{8,17}(?![\w-])"), context=("account", "acct")),
    # The passport book's number: nine digits, or a letter and eight digits (since 2021).
    "US_PASSPORT_NUMBER": Detector(_p(r"(?<![\w-])(?:[A-Z]\d{8}|\d{9})(?![\w-])"), context=("passport",)),
    "UK_UNIQUE_TAXPAYER_REFERENCE_NUMBER": Detector(_p(r"(?<![\w-])\d{5} ?\d{5}(?![\w-])"),
                                                    context=("utr", "taxpayer reference", "tax reference")),
    # Ontario's: 10 digits (4-3-3), then the card's version code, if any, in two letters.
    "CA_HEALTH_NUMBER": Detector(_p(r"(?<![\w-])\d{4}([ -]?)\d{3}\1\d{3}(?:[ -]?[A-Z]{2})?(?![\w-])"),
                                 context=("health card", "ohip", "health number", "health insurance number")),
    # Each state has its own form: up to five letters, then digits and capitals (California's A1234567, New
    # York's nine digits, a UK licence's MORGA657054SM9IJ).
    "DRIVER_ID": Detector(_p(r"(?<![\w-])[A-Z]{0,5}\d[A-Z0-9]{3,15}(?![\w-])"), context=_DRIVER),
    # In capitals, one space or hyphen at most, letters and digits both ("7ABC123", "AB12 CDE"): the year in
    # "registration 2024" is not a plate.
    "LICENSE_PLATE": Detector(_p(r"(?<![\w-])(?:[A-Z0-9]{1,4}[ -][A-Z0-9]{1,4}|[A-Z0-9]{2,8})(?![\w-])"), _both,
                              context=("plate", "registration", "reg")),
    "PIN": Detector(_p(r"(?<![\w-])\d{4,6}(?![\w-])"), context=("pin",)),
    # The value after "username:" or "username is", up to its last word character ("jdoe." ends a sentence).
    "USERNAME": Detector(_p(r"(?i:\b(?:user[ _-]?name|user[ _-]?id|login(?:[ _-]?(?:name|id))?)\b\s{0,3}"
                            r"(?:[:=]|\bis\b))\s{0,3}(?P<value>[\w.@+-]{0,63}\w)"), _username),
}
#: The types detected here or in entities.py: every one Bedrock names (a test checks it against botocore); a
#: type Bedrock adds later is refused by name at CreateGuardrail (service.py) until it is here.
SUPPORTED: frozenset[str] = frozenset(DETECTORS) | entities.TYPES


def find(text: str, types: list[str]) -> list[Finding]:
    """The PII of `types` in `text`, in order of position. Findings of different types may overlap (a URL
    holding an email): each is reported and acted on; masking covers their union (assessment._mask)."""
    found: list[Finding] = []
    lowered = text.lower().replace("\u2019", "'")  # a phone's curly apostrophe: "driver\u2019s license"
    for kind in types:
        if kind in entities.TYPES:
            continue
        detector = DETECTORS[kind]
        for m in detector.pattern.finditer(text):
            if detector.valid is not None and not detector.valid(m.group(0)):
                continue
            if (detector.context and not _near(lowered[max(0, m.start() - CONTEXT_WINDOW):m.start()], detector)
                    and not (detector.alone is not None and detector.alone(m.group(0)))):
                continue
            start, end = m.span("value") if "value" in m.re.groupindex else m.span()
            found.append(Finding(kind, start, end, text[start:end]))
    found += [Finding(kind, start, end, text[start:end]) for kind, start, end in entities.find(text, types)]
    return sorted(found, key=lambda f: (f.start, f.end))


def _near(before: str, detector: Detector) -> bool:
    """Whether one of the detector's words, as a word (not "sin" in "using"), stands in the text before."""
    return any(re.search(r"(?<![a-z])" + re.escape(word) + r"(?![a-z])", before) for word in detector.context)
