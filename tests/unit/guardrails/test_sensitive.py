"""The PII detectors on texts that hold each type and on near misses (a checksum off by one, a number without
the words that must stand near it), and the custom-regex time limit."""

from __future__ import annotations

import pytest

from outcrop.errors import ValidationException
from outcrop.guardrails import sensitive
from outcrop.guardrails.assessment import apply

FOUND = {
    "EMAIL": ("Mail ana.lima+news@mail.example.org today.", "ana.lima+news@mail.example.org"),
    "PHONE": ("Call +1 415-555-0132 now.", "+1 415-555-0132"),
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
    "IP_ADDRESS": ("Hosts 192.168.1.20 and 2001:db8::8a2e:370:7334.", "192.168.1.20"),
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
}


@pytest.mark.parametrize("kind", sorted(FOUND))
def test_each_type_is_found(kind):
    text, match = FOUND[kind]
    assert match in [f.match for f in sensitive.find(text, [kind])]


@pytest.mark.parametrize("kind", sorted(MISSED))
def test_near_misses_are_not(kind):
    assert sensitive.find(MISSED[kind], [kind]) == []


def test_every_bedrock_type_is_detected_or_refused():
    import botocore.session

    model = botocore.session.get_session().get_service_model("bedrock")
    assert set(model.shape_for("GuardrailPiiEntityType").enum) == set(sensitive.DETECTORS) | sensitive.NOT_DETECTED


def test_a_custom_regex_that_backtracks_forever_fails_the_call_in_time():
    document = {"blockedInputMessaging": "no", "blockedOutputsMessaging": "no", "sensitiveInformationPolicy": {
        "piiEntities": [], "regexes": [{"name": "evil", "pattern": r"(\w|\w\w)+\d$", "action": "BLOCK",
                                        "inputAction": "BLOCK", "outputAction": "BLOCK", "inputEnabled": True,
                                        "outputEnabled": True}]}}
    with pytest.raises(ValidationException, match="evil"):
        apply(document, "INPUT", [{"text": {"text": "a" * 40 + "!"}}])
