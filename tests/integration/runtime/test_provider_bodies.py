"""Provider bodies of Bedrock ids that the built-in aliases map to SmolLM2, through real boto3 against one server:
each is read in its provider's format, rendered through SmolLM2's chat template (so greedy decoding gives
Converse's answer to the same chat) and answered in its provider's shape. Titan V2's `dimensions` through
LangChain's BedrockEmbeddings. The parsing itself is tests/unit/runtime/test_formats.py's."""

from __future__ import annotations

import json

import pytest

QUESTION = "What is the capital of France?"
SYSTEM = "You answer in one short sentence."
MAX_TOKENS = 12

pytestmark = pytest.mark.slow


def invoke(runtime, model_id: str, body: dict) -> dict:
    return json.loads(runtime.invoke_model(modelId=model_id, body=json.dumps(body))["body"].read())


def stream(runtime, model_id: str, body: dict) -> list[dict]:
    events = runtime.invoke_model_with_response_stream(modelId=model_id, body=json.dumps(body))["body"]
    return [json.loads(event["chunk"]["bytes"]) for event in events]


@pytest.fixture(scope="module")
def expected(runtime) -> dict:
    """Converse's greedy answer to the question with a system prompt: what every body below must match."""
    return runtime.converse(modelId="amazon.nova-micro-v1:0", system=[{"text": SYSTEM}],
                            messages=[{"role": "user", "content": [{"text": QUESTION}]}],
                            inferenceConfig={"maxTokens": MAX_TOKENS, "temperature": 0})


def test_each_providers_body_is_answered_as_converse_answers_in_its_own_shape(runtime, expected):
    answer = expected["output"]["message"]["content"][0]["text"]
    usage = expected["usage"]
    assert answer.strip()

    nova = invoke(runtime, "us.amazon.nova-micro-v1:0", {
        "schemaVersion": "messages-v1", "system": [{"text": SYSTEM}],
        "messages": [{"role": "user", "content": [{"text": QUESTION}]}],
        "inferenceConfig": {"maxTokens": MAX_TOKENS, "temperature": 0, "topP": 0.9, "topK": 20}})
    assert nova["output"]["message"] == {"role": "assistant", "content": [{"text": answer}]}
    assert nova["stopReason"] == expected["stopReason"]
    assert (nova["usage"]["inputTokens"], nova["usage"]["outputTokens"]) == (usage["inputTokens"],
                                                                            usage["outputTokens"])

    claude = invoke(runtime, "anthropic.claude-v2", {
        "prompt": f"{SYSTEM}\n\nHuman: {QUESTION}\n\nAssistant:", "max_tokens_to_sample": MAX_TOKENS,
        "temperature": 0, "top_p": 0.9, "top_k": 20})
    assert claude["completion"] == answer and claude["stop_reason"] in ("stop_sequence", "max_tokens")

    cohere = invoke(runtime, "cohere.command-r-plus-v1:0", {
        "message": QUESTION, "preamble": SYSTEM, "chat_history": [], "max_tokens": MAX_TOKENS, "temperature": 0})
    assert cohere["text"] == answer and cohere["finish_reason"] in ("COMPLETE", "MAX_TOKENS")
    assert cohere["chat_history"][-2:] == [{"role": "USER", "message": QUESTION},
                                           {"role": "CHATBOT", "message": answer}]

    chat = {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}],
            "max_tokens": MAX_TOKENS, "temperature": 0}
    jamba = invoke(runtime, "ai21.jamba-1-5-large-v1:0", {**chat, "n": 1})
    assert jamba["choices"][0]["message"]["content"] == answer
    assert jamba["usage"]["prompt_tokens"] == usage["inputTokens"]
    mistral = invoke(runtime, "mistral.mistral-large-2402-v1:0", chat)
    assert mistral["choices"][0]["message"]["content"] == answer
    assert mistral["choices"][0]["stop_reason"] in ("stop", "length")


def test_a_nova_stream_carries_the_answer_and_ends_with_metrics(runtime, expected):
    answer = expected["output"]["message"]["content"][0]["text"]
    chunks = stream(runtime, "amazon.nova-lite-v1:0", {
        "system": [{"text": SYSTEM}], "messages": [{"role": "user", "content": [{"text": QUESTION}]}],
        "inferenceConfig": {"max_new_tokens": MAX_TOKENS, "temperature": 0}})
    assert "".join(c["contentBlockDelta"]["delta"]["text"] for c in chunks if "contentBlockDelta" in c) == answer
    assert chunks[-1]["metadata"]["usage"]["outputTokens"] == expected["usage"]["outputTokens"]
    assert chunks[-1]["amazon-bedrock-invocationMetrics"]["outputTokenCount"] == expected["usage"]["outputTokens"]


def test_what_a_provider_body_cannot_have_honoured_is_refused_by_name(runtime):
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError, match="documents is not supported"):
        invoke(runtime, "cohere.command-r-plus-v1:0", {"message": QUESTION, "documents": [{"snippet": "x"}]})


def test_langchain_titan_v2_dimensions(runtime):
    from langchain_aws import BedrockEmbeddings

    texts = ["The cat sits on the mat.", "A cat is sitting on a mat.", "Stock markets fell sharply today."]
    native = BedrockEmbeddings(model_id="amazon.titan-embed-text-v2:0", client=runtime).embed_documents(texts)
    padded = BedrockEmbeddings(model_id="amazon.titan-embed-text-v2:0", client=runtime,
                               model_kwargs={"dimensions": 1024}).embed_documents(texts)
    cut = BedrockEmbeddings(model_id="amazon.titan-embed-text-v2:0", client=runtime,
                            model_kwargs={"dimensions": 256}).embed_documents(texts)
    assert [len(v) for v in native] == [384] * 3 and [len(v) for v in padded] == [1024] * 3
    assert [len(v) for v in cut] == [256] * 3

    def cosine(a, b):
        return sum(x * y for x, y in zip(a, b, strict=True)) / (sum(x * x for x in a) * sum(y * y for y in b)) ** 0.5

    assert cosine(padded[0], padded[1]) == pytest.approx(cosine(native[0], native[1]), abs=1e-6)
    assert cosine(cut[0], cut[1]) > cosine(cut[0], cut[2])  # changed, but still telling like from unlike
