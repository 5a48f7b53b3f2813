"""The PII types added last: NAME and ADDRESS (spaCy's recognizer, loaded once for this module), AGE, and the
pattern types with context words or a checksum, each in a realistic sentence and in a near miss (no context word,
a bad check digit, a place named in passing, "May" the month)."""

from __future__ import annotations

import threading
import time

import pytest

from outcrop.guardrails import entities, sensitive

FOUND = {
    "NAME": ("Please forward the contract to Maria Garcia before Friday.", "Maria Garcia"),
    "ADDRESS": ("Ship it to 1600 Pennsylvania Avenue NW, Washington, DC 20500 by Monday.",
                "1600 Pennsylvania Avenue NW, Washington, DC 20500"),
    "AGE": ("My son is 7 years old and loves trains.", "7 years"),
    "SWIFT_CODE": ("Wire the deposit to SWIFT/BIC: DEUTDEFF, reference 4471.", "DEUTDEFF"),
    "UK_NATIONAL_HEALTH_SERVICE_NUMBER": ("Her NHS number is 943 476 5919.", "943 476 5919"),
    "US_BANK_ACCOUNT_NUMBER": ("Checking account 000123456789 at the credit union.", "000123456789"),
    "US_PASSPORT_NUMBER": ("Passport no. A12345678, issued in 2022.", "A12345678"),
    "UK_UNIQUE_TAXPAYER_REFERENCE_NUMBER": ("My UTR is 12345 67890 for self assessment.", "12345 67890"),
    "CA_HEALTH_NUMBER": ("OHIP health card 1234-567-897-AB, expiring soon.", "1234-567-897-AB"),
    "DRIVER_ID": ("Driver\u2019s license number: D1234567.", "D1234567"),
    "LICENSE_PLATE": ("The car's license plate is 7ABC123.", "7ABC123"),
    "PIN": ("My PIN is 4821, don't tell anyone.", "4821"),
    "USERNAME": ("Log in with username: jane_doe42.", "jane_doe42"),
}
MISSED = {
    "NAME": "The meeting moved to May. May I bring the slides?",
    "ADDRESS": "We visited France and walked down the street past 3 shops.",  # a place in passing, no street form
    "AGE": "The bridge is 150 years old and the toll is 34 dollars.",  # older than anyone; a price
    "SWIFT_CODE": "THE HOSPITAL HAS A STANDARD FORM.",  # capitals with a country (IT, AR) but no digit, no context
    "UK_NATIONAL_HEALTH_SERVICE_NUMBER": "Her NHS number is 943 476 5918.",  # check digit off by one
    "US_BANK_ACCOUNT_NUMBER": "Order 000123456789 shipped on time.",
    "US_PASSPORT_NUMBER": "Ticket A12345678 is confirmed.",
    "UK_UNIQUE_TAXPAYER_REFERENCE_NUMBER": "Invoice 12345 67890 was paid.",
    "CA_HEALTH_NUMBER": "Invoice 1234-567-897 was paid.",
    "DRIVER_ID": "Order D1234567 shipped.",
    "LICENSE_PLATE": "Registration 2024 is open.",  # a year: no letters
    "PIN": "She pinned 4821 messages.",  # "pin" only inside a word
    "USERNAME": "Your username is required.",
}


@pytest.fixture(scope="module", autouse=True)
def pipeline():
    return entities.pipeline()


@pytest.mark.parametrize("kind", sorted(FOUND))
def test_each_type_is_found(kind):
    text, match = FOUND[kind]
    assert [f.match for f in sensitive.find(text, [kind])] == [match]


@pytest.mark.parametrize("kind", sorted(MISSED))
def test_near_misses_are_not(kind):
    assert sensitive.find(MISSED[kind], [kind]) == []


def test_entity_types_are_not_also_patterns():
    assert not entities.TYPES & set(sensitive.DETECTORS)


def test_names_are_persons_not_streets_or_codes():
    text = "Maria Garcia and John Smith live at Apt 4B, 221B Baker St, London; login: BOFAUS3N"
    assert [f.match for f in sensitive.find(text, ["NAME"])] == ["Maria Garcia", "John Smith"]


def test_addresses_join_their_parts_and_places_count_only_as_addresses():
    def addresses(text):
        return [f.match for f in sensitive.find(text, ["ADDRESS"])]

    assert addresses("John lives at 42 Baker Street, London NW1 6XE.") == ["42 Baker Street, London NW1 6XE"]
    assert addresses("Flat 3, 10 Downing Street, London") == ["Flat 3, 10 Downing Street, London"]
    assert addresses("She lives in Springfield, Illinois now.") == ["Springfield, Illinois"]
    assert addresses("Send letters to P.O. Box 1234.") == ["P.O. Box 1234"]
    assert addresses("Paris is lovely and 3 dogs ran down the street.") == []


def test_ages_are_quantities_said_to_be_ages():
    text = "A 34-year-old, aged 12, age: 40, baby 18 months old, at the age of 200, in 1990, last year."
    assert [f.match for f in sensitive.find(text, ["AGE"])] == ["34-year", "12", "40", "18 months"]


def test_swift_codes_without_context_need_a_digit_or_a_head_office_and_a_real_country():
    def codes(text):
        return [f.match for f in sensitive.find(text, ["SWIFT_CODE"])]

    assert codes("Pay BOFAUS3N or BNPAFRPPXXX, not DEUTDEFF.") == ["BOFAUS3N", "BNPAFRPPXXX"]
    assert codes("SWIFT: DEUTXXFF") == []  # XX is no country
    assert codes("swift code deutdeff") == []  # codes are written in capitals


def test_a_repeated_digit_is_no_nhs_number():
    assert sensitive.find("NHS 111 111 1111", ["UK_NATIONAL_HEALTH_SERVICE_NUMBER"]) == []


def test_usernames_after_is_exclude_plain_words_but_not_handles():
    found = sensitive.find("Login is down. My user name is jdoe.", ["USERNAME"])
    assert [f.match for f in found] == ["jdoe"]


def test_the_recognizer_runs_only_for_name_and_address(monkeypatch):
    def refuse():
        raise AssertionError("the recognizer ran")

    monkeypatch.setattr(entities, "pipeline", refuse)
    text = FOUND["AGE"][0] + " " + FOUND["PIN"][0]
    assert [f.type for f in sensitive.find(text, [*sensitive.DETECTORS, "AGE"])] == ["AGE", "PIN"]


def test_long_texts_are_read_in_chunks_with_their_offsets(monkeypatch):
    monkeypatch.setattr(entities, "_CHUNK", 64)
    text = "Maria Garcia called. " * 10
    found = sensitive.find(text, ["NAME"])
    assert len(found) == 10 and all(text[f.start:f.end] == f.match == "Maria Garcia" for f in found)


def test_threads_share_one_pipeline():
    results, text = [], FOUND["NAME"][0]
    threads = [threading.Thread(target=lambda: results.append(sensitive.find(text, ["NAME"]))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [sensitive.find(text, ["NAME"])] * 4


def test_the_recognizer_is_linear_on_long_adversarial_text():
    # Runs without whitespace are what spaCy's tokenizer is quadratic on ("1:1:1...": 4 s for 40,000 characters).
    for text in ("1:" * 50_000, "a." * 50_000, "http://" + "." * 100_000, ("ab:" * 30 + " ") * 1_000):
        started = time.perf_counter()
        sensitive.find(text, sorted(entities.TYPES))
        assert time.perf_counter() - started < 2, text[:10]


def test_the_address_pattern_is_linear_on_long_adversarial_text():
    for text in ("1 " * 50_000, "1 A " * 25_000, "1 Baker " * 12_500, "Apt 1 " * 16_000, "#1 A A A " * 10_000):
        started = time.perf_counter()
        list(entities.STREET.finditer(text))
        assert time.perf_counter() - started < 1, text[:10]


def test_form_labels_and_greetings_are_not_names():
    text = "Email: jane@example.com, Phone: 020 7946 0958. Hi Email, this is Maria Garcia."
    assert [f.match for f in sensitive.find(text, ["NAME"])] == ["Maria Garcia"]
