"""LangChain (langchain-aws) against a real `outcrop serve`, with Bedrock model ids as LangChain's users write them.

The Bedrock ids are served by the built-in models (SmolLM2 for chat, all-MiniLM-L6-v2 for embeddings), so
every answer is real and greedy: the same question gets the same words and the same token counts whichever
way it is asked (invoke, stream, batch), and those counts are what the server metered and what CountTokens says.
"""

from __future__ import annotations

import functools
import json
import operator

import pytest
from langchain_aws import BedrockEmbeddings, ChatBedrock, ChatBedrockConverse

from tests.integration.frameworks.shared import DIMENSIONS, MAX_TOKENS, QUESTION, SIMILAR, UNRELATED, cosine

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
CLAUDE_PROFILE = "us.anthropic.claude-3-5-haiku-20241022-v1:0"  # a cross-region inference profile id


def joined(chunks):
    """A stream's chunks added up, as LangChain users do: content concatenated, usage summed."""
    assert chunks, "the stream yielded nothing"
    return functools.reduce(operator.add, chunks)


def check_usage(usage, input_tokens: int | None = None) -> None:
    assert usage is not None, "no usage_metadata"
    assert usage["input_tokens"] > 0 and 0 < usage["output_tokens"] <= MAX_TOKENS, usage
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"], usage
    if input_tokens is not None:
        assert usage["input_tokens"] == input_tokens, (usage, input_tokens)


# -- ChatBedrockConverse: the Converse API ----------------------------------------------------------

@pytest.fixture(scope="module")
def converse_llm(aws_kwargs):
    return ChatBedrockConverse(model=CLAUDE, temperature=0, max_tokens=MAX_TOKENS, **aws_kwargs)


@pytest.fixture(scope="module")
def converse_answer(converse_llm):
    return converse_llm.invoke(QUESTION)


def test_chat_bedrock_converse_invoke(converse_answer, count_tokens, usage_record):
    assert "Paris" in converse_answer.content
    assert converse_answer.response_metadata["stopReason"] == "end_turn"
    usage = converse_answer.usage_metadata
    check_usage(usage, input_tokens=count_tokens(CLAUDE))
    request_id = converse_answer.response_metadata["ResponseMetadata"]["RequestId"]
    _, operation, metered_in, metered_out = usage_record(request_id)
    assert (operation, metered_in, metered_out) == ("Converse", usage["input_tokens"], usage["output_tokens"])


def test_chat_bedrock_converse_stream(converse_llm, converse_answer):
    # LangChain streams only the providers it knows stream (anthropic does): this really is ConverseStream.
    assert not converse_llm.disable_streaming
    chunks = list(converse_llm.stream(QUESTION))
    assert sum(1 for c in chunks if c.content) > 1, "the answer came in one piece: not streamed"
    streamed = joined(chunks)
    assert streamed.text == converse_answer.text  # greedy: the same words
    check_usage(streamed.usage_metadata)
    assert {k: streamed.usage_metadata[k] for k in ("input_tokens", "output_tokens", "total_tokens")} \
        == {k: converse_answer.usage_metadata[k] for k in ("input_tokens", "output_tokens", "total_tokens")}


def test_chat_bedrock_converse_batch_on_an_inference_profile(aws_kwargs, usage_record):
    llm = ChatBedrockConverse(model=CLAUDE_PROFILE, temperature=0, max_tokens=MAX_TOKENS, **aws_kwargs)
    answers = llm.batch([QUESTION, "Name one primary colour."])
    assert len(answers) == 2 and "Paris" in answers[0].content and answers[1].content.strip()
    for answer in answers:
        check_usage(answer.usage_metadata)
        _, operation, metered_in, metered_out = usage_record(answer.response_metadata["ResponseMetadata"]["RequestId"])
        assert (metered_in, metered_out) == (answer.usage_metadata["input_tokens"],
                                             answer.usage_metadata["output_tokens"])
    assert answers[0].usage_metadata["input_tokens"] != answers[1].usage_metadata["input_tokens"]


# -- ChatBedrock: InvokeModel with each provider's native body --------------------------------------

CHAT_BEDROCK_MODELS = [
    # (model id, model_kwargs in the provider's own field names)
    (CLAUDE, {"temperature": 0, "max_tokens": MAX_TOKENS}),            # Anthropic Messages body
    ("meta.llama3-8b-instruct-v1:0", {"temperature": 0, "max_gen_len": MAX_TOKENS}),  # Llama 3 prompt markup
    ("mistral.mistral-large-2402-v1:0", {"temperature": 0, "max_tokens": MAX_TOKENS}),  # [INST] prompt markup
]


@pytest.mark.parametrize(("model_id", "model_kwargs"), CHAT_BEDROCK_MODELS, ids=[m for m, _ in CHAT_BEDROCK_MODELS])
def test_chat_bedrock_invoke_and_stream(aws_kwargs, runtime, model_id, model_kwargs):
    llm = ChatBedrock(model_id=model_id, model_kwargs=model_kwargs, **aws_kwargs)
    sent: list[bytes] = []  # the InvokeModel body LangChain wrote, to ask CountTokens about the same one
    llm.client.meta.events.register("before-parameter-build.bedrock-runtime.InvokeModel",
                                    lambda params, **_: sent.append(params["body"]))
    answer = llm.invoke(QUESTION)
    assert "Paris" in answer.content, (answer.content, sent)
    # ChatBedrock reads InvokeModel's usage from the X-Amzn-Bedrock-*-Token-Count headers.
    check_usage(answer.usage_metadata)
    body = sent[0] if isinstance(sent[0], bytes) else sent[0].encode()
    counted = runtime.count_tokens(modelId=model_id, input={"invokeModel": {"body": body}})["inputTokens"]
    assert answer.usage_metadata["input_tokens"] == counted, json.loads(body)

    streamed = joined(list(llm.stream(QUESTION)))
    assert streamed.text == answer.text
    # ... and a stream's usage from the chunks (amazon-bedrock-invocationMetrics): the same numbers.
    assert (streamed.usage_metadata["input_tokens"], streamed.usage_metadata["output_tokens"]) \
        == (answer.usage_metadata["input_tokens"], answer.usage_metadata["output_tokens"])


# -- BedrockEmbeddings ------------------------------------------------------------------------------

@pytest.mark.parametrize("model_id", ["amazon.titan-embed-text-v2:0", "cohere.embed-english-v3"])
def test_bedrock_embeddings(aws_kwargs, model_id):
    embeddings = BedrockEmbeddings(model_id=model_id, **aws_kwargs)
    query = embeddings.embed_query(SIMILAR[0])
    documents = embeddings.embed_documents([*SIMILAR, UNRELATED])
    assert len(query) == DIMENSIONS and [len(d) for d in documents] == [DIMENSIONS] * 3
    assert all(isinstance(x, float) for x in query)
    assert cosine(query, documents[0]) > 0.999  # the same text, as a query and as a document
    close, far = cosine(documents[0], documents[1]), cosine(documents[0], documents[2])
    assert close > 0.5 and far < 0.3 and close > far + 0.3, (close, far)
