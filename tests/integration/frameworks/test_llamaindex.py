"""LlamaIndex (llama-index-llms-bedrock-converse, llama-index-embeddings-bedrock) against a real `outcrop serve`.

LlamaIndex accepts only the model ids it knows (it looks up their context window), so these tests are also the
proof that Bedrock's own ids work here unchanged.
"""

from __future__ import annotations

import pytest
from llama_index.core.llms import ChatMessage
from llama_index.embeddings.bedrock import BedrockEmbedding
from llama_index.llms.bedrock_converse import BedrockConverse

from tests.integration.frameworks.shared import DIMENSIONS, MAX_TOKENS, QUESTION, SIMILAR, UNRELATED, cosine

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
CONVERSATION = [
    ChatMessage(role="system", content="You are a geography teacher."),
    ChatMessage(role="user", content="What is the capital of Italy?"),
    ChatMessage(role="assistant", content="The capital of Italy is Rome."),
    ChatMessage(role="user", content=QUESTION),
]


@pytest.fixture(scope="module")
def llm(aws_kwargs):
    return BedrockConverse(model=CLAUDE, temperature=0, max_tokens=MAX_TOKENS, **aws_kwargs)


def check_usage(kwargs: dict, raw_usage: dict) -> None:
    """LlamaIndex's token counts (additional_kwargs) against the Converse usage they came from."""
    assert kwargs["prompt_tokens"] > 0 and 0 < kwargs["completion_tokens"] <= MAX_TOKENS, kwargs
    assert kwargs["total_tokens"] == kwargs["prompt_tokens"] + kwargs["completion_tokens"]
    assert (kwargs["prompt_tokens"], kwargs["completion_tokens"]) == (raw_usage["inputTokens"],
                                                                      raw_usage["outputTokens"])


def test_bedrock_converse_complete(llm, count_tokens, usage_record):
    response = llm.complete(QUESTION)
    assert "Paris" in response.text
    check_usage(response.additional_kwargs, response.raw["usage"])
    assert response.additional_kwargs["prompt_tokens"] == count_tokens(CLAUDE)
    _, operation, metered_in, metered_out = usage_record(response.raw["ResponseMetadata"]["RequestId"])
    assert (operation, metered_in, metered_out) == ("Converse", response.additional_kwargs["prompt_tokens"],
                                                    response.additional_kwargs["completion_tokens"])


@pytest.fixture(scope="module")
def chat_answer(llm):
    return llm.chat(CONVERSATION)


def test_bedrock_converse_chat_with_a_system_prompt_and_turns(chat_answer, usage_record):
    assert chat_answer.message.role == "assistant" and "Paris" in chat_answer.message.content
    check_usage(chat_answer.additional_kwargs, chat_answer.raw["usage"])
    _, _, metered_in, metered_out = usage_record(chat_answer.raw["ResponseMetadata"]["RequestId"])
    assert (metered_in, metered_out) == (chat_answer.additional_kwargs["prompt_tokens"],
                                         chat_answer.additional_kwargs["completion_tokens"])


def test_bedrock_converse_stream_chat(llm, chat_answer):
    responses = list(llm.stream_chat(CONVERSATION))
    assert sum(1 for r in responses if r.delta) > 1, "the answer came in one piece: not streamed"
    last = responses[-1]
    assert last.message.content == "".join(r.delta or "" for r in responses) == chat_answer.message.content
    check_usage(last.additional_kwargs, last.raw["metadata"]["usage"])
    assert last.additional_kwargs["prompt_tokens"] == chat_answer.additional_kwargs["prompt_tokens"]
    assert last.additional_kwargs["completion_tokens"] == chat_answer.additional_kwargs["completion_tokens"]


@pytest.mark.parametrize("connect", ["client", "environment"])
@pytest.mark.parametrize("model_name", ["amazon.titan-embed-text-v2:0", "cohere.embed-english-v3"])
def test_bedrock_embedding(server, aws_kwargs, monkeypatch, model_name, connect):
    # BedrockEmbedding has no endpoint_url (it takes one and ignores it, calling AWS): a user hands it a
    # bedrock-runtime client, or names the endpoint in botocore's environment variable.
    keys = {k: v for k, v in aws_kwargs.items() if k != "endpoint_url"}
    if connect == "client":
        embedding = BedrockEmbedding(model_name=model_name, client=server.client("bedrock-runtime"))
    else:
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", server.endpoint)
        embedding = BedrockEmbedding(model_name=model_name, **keys)
    query = embedding.get_query_embedding(SIMILAR[0])
    documents = embedding.get_text_embedding_batch([*SIMILAR, UNRELATED])
    assert len(query) == DIMENSIONS and [len(d) for d in documents] == [DIMENSIONS] * 3
    assert cosine(query, documents[0]) > 0.999
    close, far = cosine(documents[0], documents[1]), cosine(documents[0], documents[2])
    assert close > 0.5 and far < 0.3 and close > far + 0.3, (close, far)
