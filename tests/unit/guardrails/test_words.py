"""The word filters: custom words as whole words, and the managed PROFANITY list (a profanity-only list, not one that
blocks ordinary words)."""

from __future__ import annotations

import json

import pytest

from outcrop.guardrails import words

ORDINARY = ("How do I kill a Python process that hangs?", "I need sex education resources for my teenager.",
            "He was drunk at the party.", "Is God mentioned in the constitution?", "My cat is fat and lazy.",
            "The rooster is called a cock in British English.", "Peter pricked his finger on a rose.",
            "I added buttermilk and a sack of flour.", "A crow sat on the fence.", "The murder rate fell in 2020.",
            "Breast cancer screening starts at 50.", "The drug trial enrolled 69 patients.",
            "Heroin addiction is treatable.", "Can I pay with PayPal?", "We stroked the dog.")
PROFANE = {"That is a shit answer.": "shit", "What the fuck is this?": "What the fuck", "You stupid motherfucker.":
           "motherfucker", "Go to hell.": "Go to hell", "Shut up, you b1tch": "b1tch", "Such a bullshit policy.":
           "bullshit", "what an asshole": "asshole", "You WANKER!": "WANKER"}


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_words_are_not_profanity(text):
    assert words.profanity().search(text) is None


@pytest.mark.parametrize(("text", "match"), sorted(PROFANE.items()))
def test_profanity_is_caught(text, match):
    assert [m.group(0) for m in words.profanity().finditer(text)] == [match]


def test_the_list_says_where_it_comes_from_and_what_was_left_out():
    doc = json.loads(words.PROFANITY_PATH.read_text(encoding="utf-8"))
    assert "surge-ai/profanity" in doc["source"]["list"] and doc["licence"].startswith("MIT License")
    assert "Copyright (c) 2021 Surge AI" in doc["licence"]
    listed = {w.lower() for w in doc["words"]}
    assert len(listed) > 1000 and not listed & set(doc["excluded"])
    assert not listed & {"kill", "sex", "drunk", "god", "fat", "murder", "drug", "heroin"}


def test_custom_words_match_whole_words_and_phrases_in_any_case():
    pattern = words.compile_words(["Project Falcon", "zeta"])
    assert [m.group(0) for m in pattern.finditer("project   FALCON and Zeta, not zetas")] == ["project   FALCON",
                                                                                              "Zeta"]
    assert words.compile_words(["  ", ""]) is None
