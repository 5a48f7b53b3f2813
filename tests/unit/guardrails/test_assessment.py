"""ApplyGuardrail's meaning-based policies without a model: a seeded random embedder stands in for MiniLM (what
is checked here is the wiring: which texts are judged, strength against confidence, empty text)."""

from __future__ import annotations

import numpy as np
import pytest

from outcrop.guardrails import assessment, content, semantic
from outcrop.guardrails.semantic import Embedder, sentences
from outcrop.guardrails.service import policies


def _embedder() -> Embedder:
    rng = np.random.default_rng(0)

    def embed(texts):
        vectors = rng.normal(size=(len(texts), 384))
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return Embedder(embed)


def _document(strength: str = "HIGH") -> dict:
    return policies({"name": "g", "blockedInputMessaging": "in", "blockedOutputsMessaging": "out",
                     "contentPolicyConfig": {"filtersConfig": [
                         {"type": "INSULTS", "inputStrength": strength, "outputStrength": strength}]},
                     "topicPolicyConfig": {"topicsConfig": [{"name": "t", "definition": "d", "type": "DENY"}]},
                     "contextualGroundingPolicyConfig": {"filtersConfig": [{"type": "GROUNDING", "threshold": 0.5},
                                                                           {"type": "RELEVANCE", "threshold": 0.5}]}})


@pytest.mark.parametrize("text", ["", "...", "?!", "   "])
def test_text_without_a_sentence_passes(text):
    answer = assessment.apply(_document(), "OUTPUT", [{"text": {"text": text}}], True, _embedder())
    assert answer["action"] == "NONE"


@pytest.mark.parametrize(("strength", "confidence", "acts"), [
    ("HIGH", "LOW", True), ("MEDIUM", "LOW", False), ("MEDIUM", "MEDIUM", True), ("LOW", "MEDIUM", False),
    ("LOW", "HIGH", True), ("NONE", "HIGH", False)])
def test_strength_is_how_little_confidence_it_takes(monkeypatch, strength, confidence, acts):
    monkeypatch.setattr(content, "confidences", lambda vectors, texts: [
        {c: confidence if c == "INSULTS" else "NONE" for c in content.CATEGORIES} for _ in texts])
    answer = assessment.apply(_document(strength), "INPUT", [{"text": {"text": "Some words."}}], True, _embedder())
    assert (answer["action"] == "GUARDRAIL_INTERVENED") is acts
    if strength != "NONE":
        [finding] = answer["assessments"][0]["contentPolicy"]["filters"]
        assert finding == {"type": "INSULTS", "confidence": confidence, "filterStrength": strength, "detected": acts,
                           "action": "BLOCKED" if acts else "NONE"}


def test_grounding_judges_only_answers_with_sources():
    document = _document("NONE")
    asked = assessment.apply(document, "INPUT", [{"text": {"text": "A question."}},
                                                 {"text": {"text": "A source.", "qualifiers": ["grounding_source"]}}],
                             True, _embedder())
    assert "contextualGroundingPolicy" not in asked["assessments"][0]
    answered = assessment.apply(document, "OUTPUT", [
        {"text": {"text": "The sky is green.", "qualifiers": ["guard_content"]}},
        {"text": {"text": "The sky is blue.", "qualifiers": ["grounding_source"]}}], True, _embedder())
    [grounding] = answered["assessments"][0]["contextualGroundingPolicy"]["filters"]  # no query: no RELEVANCE
    assert grounding["type"] == "GROUNDING" and answered["usage"]["contextualGroundingPolicyUnits"] == 1


def test_sentences_are_bounded():
    assert sentences("One. Two!  Three?\nfour") == ["One.", "Two!", "Three?", "four"]
    assert [len(s.split()) for s in sentences("word " * 100)] == [48, 48, 4]


def test_the_text_a_check_embeds_is_bounded():
    with pytest.raises(assessment.ValidationException, match="at most"):
        assessment.apply(_document(), "INPUT", [{"text": {"text": "word. " * 20_000}}], True, _embedder())


def test_a_strength_no_classifier_confidence_reaches_is_refused(monkeypatch):
    monkeypatch.setattr(content, "reachable", lambda category, level: level != "HIGH")
    with pytest.raises(assessment.ValidationException, match=r"filtersConfig\[0\].inputStrength LOW"):
        _document("LOW")
    _document("MEDIUM")


def test_reference_vectors_are_embedded_once_and_bounded():
    calls = []

    def embed(texts):
        calls.append(list(texts))
        return np.eye(len(texts), 384)

    cache = semantic.ReferenceCache(size=2)
    embedder = Embedder(embed, cache)
    first = embedder.references(["a", "b", "a"])
    assert calls == [["a", "b"]] and (first[0] == first[2]).all()
    Embedder(embed, cache).references(["b", "a"])  # another caller, the same cache: nothing embedded
    assert len(calls) == 1
    embedder.references(["c"])  # over the bound: the least recently used ("b") goes
    embedder.references(["a"])
    assert len(calls) == 2
    embedder.references(["b"])
    assert calls[-1] == ["b"]
