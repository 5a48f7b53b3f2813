"""The PII detectors on texts that hold each type and on near misses (a checksum off by one, a number without
the words that must stand near it), and the custom-regex time limit."""

from __future__ import annotations

import pytest

from outcrop.errors import ValidationException
from outcrop.guardrails import sensitive
from outcrop.guardrails.assessment import apply

FOUND = {
    "EMAIL": ("Mail ana.lima+news@mail.example.org today.", "ana.lima+news@mail.example.org"),
    "PHONE": ("Call +1 415-555-0132, +14155550132 or 1-800-555-0199 now.", "1-800-555-0199"),
    "CREDIT_DEBIT_CARD_NUMBER": ("Card 5500-0000-0000-0004 on file.", "5500-0000-0000-0004"),
    "CREDIT_DEBIT_CARD_CVV": ("The CVV: 737 is printed on the back.", "737"),
    "CREDIT_DEBIT_CARD_EXPIRY": ("It expires 09/28 as far as I know.", "09/28"),
    "US_SOCIAL_SECURITY_NUMBER": ("SSN 123-45-6789.", "123-45-6789"),
    "US_INDIVIDUAL_TAX_IDENTIFICATION_NUMBER": ("ITIN 912-70-1234.", "912-70-1234"),
    "US_BANK_ROUTING_NUMBER": ("Routing number 021000021.", "021000021"),
    "CA_SOCIAL_INSURANCE_NUMBER": ("My SIN is 046 454 286.", "046 454 286"),
    "UK_NATIONAL_INSURANCE_NUMBER": ("NI number AB 12 34 56 C.", "AB 12 34 56 C"),
    "INTERNATIONAL_BANK_ACCOUNT_NUMBER": ("Pay GB82 WEST 1234 5698 7654 32 please.", "GB82 WEST 1234 5698 7654 32"),
    "VEHICLE_IDENTIFICATION_NUMBER": ("VIN 1M8GDM9AXKP042788.", "1M8GDM9AXKP042788"),
    "IP_ADDRESS": ("Hosts 192.168.1.20 and 2001:db8::8a2e:370:7334.", "2001:db8::8a2e:370:7334"),
    "MAC_ADDRESS": ("Its MAC is 00:1A:2B:3C:4D:5E.", "00:1A:2B:3C:4D:5E"),
    "URL": ("See https://example.com/a?b=c, then stop.", "https://example.com/a?b=c"),
    "AWS_ACCESS_KEY": ("key AKIAIOSFODNN7EXAMPLE here", "AKIAIOSFODNN7EXAMPLE"),
    "AWS_SECRET_KEY": ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                       "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    "PASSWORD": ("password: hunter22 is weak", "hunter22"),
}
MISSED = {
    "CREDIT_DEBIT_CARD_NUMBER": "Card 5500-0000-0000-0005 on file.",  # Luhn fails
    "CREDIT_DEBIT_CARD_CVV": "Room 737 is on the left.",  # no CVV nearby
    "US_SOCIAL_SECURITY_NUMBER": "Number 666-45-6789.",  # area 666 is never issued
    "INTERNATIONAL_BANK_ACCOUNT_NUMBER": "Pay GB83 WEST 1234 5698 7654 32 please.",  # mod 97 fails
    "VEHICLE_IDENTIFICATION_NUMBER": "VIN 1M8GDM9AYKP042788.",  # check digit fails
    "IP_ADDRESS": "Version 300.1.2.3 shipped.",
    "US_BANK_ROUTING_NUMBER": "Order 021000021 shipped.",
    # Context words count as words, not inside others.
    "CA_SOCIAL_INSURANCE_NUMBER": "Built using 046 454 286 parts.",
    "CREDIT_DEBIT_CARD_EXPIRY": "We export 12/25 rows.",
    "PHONE": "Range 2000-3000-4000, ids 123-456-789 and 100 200 300.",
}
MORE_MISSED = {"US_BANK_ROUTING_NUMBER": "The routing number 021000022 fails its checksum.",
               "IP_ADDRESS": "In Haskell, x :: Int is a type.",
               "CREDIT_DEBIT_CARD_CVV": "CVV: 737 and the year 2024."}


@pytest.mark.parametrize("kind", sorted(FOUND))
def test_each_type_is_found(kind):
    text, match = FOUND[kind]
    assert match in [f.match for f in sensitive.find(text, [kind])]


@pytest.mark.parametrize("kind", sorted(MISSED))
def test_near_misses_are_not(kind):
    assert sensitive.find(MISSED[kind], [kind]) == []


def test_more_near_misses():
    assert sensitive.find(MORE_MISSED["US_BANK_ROUTING_NUMBER"], ["US_BANK_ROUTING_NUMBER"]) == []
    assert sensitive.find(MORE_MISSED["IP_ADDRESS"], ["IP_ADDRESS"]) == []
    assert [f.match for f in sensitive.find(MORE_MISSED["CREDIT_DEBIT_CARD_CVV"], ["CREDIT_DEBIT_CARD_CVV"])] == [
        "737"]
    phones = [f.match for f in sensitive.find(FOUND["PHONE"][0], ["PHONE"])]
    assert phones == ["+1 415-555-0132", "+14155550132", "1-800-555-0199"]


def test_every_detector_is_linear_on_long_adversarial_text():
    import time

    for text in ("a." * 50_000, "1-" * 50_000, "1:" * 50_000, "http://" + "." * 100_000, "9" * 100_000,
                 "A" * 100_000, "1 A " * 25_000, "A1 " * 33_000, "AB12 " * 20_000, "pin 1234 " * 11_000,
                 "username: " * 10_000, "age " * 25_000):
        started = time.perf_counter()
        sensitive.find(text, [*sensitive.DETECTORS, "AGE"])  # AGE is a pattern too; NAME and ADDRESS: test_entities
        assert time.perf_counter() - started < 2, text[:10]


def _policy(*entries, regexes=()):
    def directions(entry):
        return {**entry, "inputAction": entry["action"], "outputAction": entry["action"], "inputEnabled": True,
                "outputEnabled": True}
    return {"blockedInputMessaging": "blocked", "blockedOutputsMessaging": "blocked", "sensitiveInformationPolicy": {
        "piiEntities": [directions(e) for e in entries], "regexes": [directions(r) for r in regexes]}}


def test_overlapping_findings_each_act_and_masks_cover_their_union():
    blocked = apply(_policy({"type": "URL", "action": "ANONYMIZE"}, {"type": "EMAIL", "action": "BLOCK"}), "OUTPUT",
                    [{"text": {"text": "See https://x.org/?u=bob@corp.io today"}}])
    assert blocked["outputs"] == [{"text": "blocked"}]
    masked = apply(_policy({"type": "EMAIL", "action": "ANONYMIZE"},
                           regexes=[{"name": "USER", "pattern": "jane", "action": "ANONYMIZE"}]), "OUTPUT",
                   [{"text": {"text": "mail jane.doe@example.com now"}}])
    assert masked["outputs"] == [{"text": "mail {USER} now"}]


def test_every_bedrock_type_is_detected():
    import botocore.session

    model = botocore.session.get_session().get_service_model("bedrock")
    assert set(model.shape_for("GuardrailPiiEntityType").enum) == sensitive.SUPPORTED


def test_a_custom_regex_that_backtracks_forever_fails_the_call_in_time():
    document = {"blockedInputMessaging": "no", "blockedOutputsMessaging": "no", "sensitiveInformationPolicy": {
        "piiEntities": [], "regexes": [{"name": "evil", "pattern": r"(\w|\w\w)+\d$", "action": "BLOCK",
                                        "inputAction": "BLOCK", "outputAction": "BLOCK", "inputEnabled": True,
                                        "outputEnabled": True}]}}
    with pytest.raises(ValidationException, match="evil"):
        apply(document, "INPUT", [{"text": {"text": "a" * 40 + "!"}}])


def test_national_phone_numbers_with_a_trunk_zero_are_phones():
    text = ("London 020 7946 0958, mobile 07700 900123, Sydney (02) 9876 5432, Paris 01 23 45 67 89, "
            "Manchester 0161-496-0000.")
    assert [f.match for f in sensitive.find(text, ["PHONE"])] == [
        "020 7946 0958", "07700 900123", "(02) 9876 5432", "01 23 45 67 89", "0161-496-0000"]
    # dates, versions, short codes and long ids that start with 0 are not
    near = "On 05.06.2023 version 0.12.3 shipped; code 012 345; order 0012 3456 7890 1234; 0 45 cases."
    assert sensitive.find(near, ["PHONE"]) == []
