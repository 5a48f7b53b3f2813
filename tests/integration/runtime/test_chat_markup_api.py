"""Another family's chat markup in a raw prompt, on the real SmolLM2 (ChatML): answered as Converse answers.

LangChain's ChatBedrock with provider meta or mistral writes the chat into the body's `prompt` as
Llama 3 header tokens or `[INST]`; the runtime reads it back and renders it through SmolLM2's own
template, so the same question through InvokeModel and Converse is the same prompt, token for
token, and greedy decoding gives the same answer."""

from __future__ import annotations

import json

import pytest

SMOLLM2 = "huggingface.smollm2-135m-instruct-v1:0"
QUESTION = "What is the capital of France?"
SYSTEM = "You answer in one short sentence."
MAX_TOKENS = 30

pytestmark = pytest.mark.slow


def invoke(runtime, body: dict) -> dict:
    return json.loads(runtime.invoke_model(modelId=SMOLLM2, body=json.dumps(body))["body"].read())


def converse(runtime, system: str = "") -> dict:
    return runtime.converse(modelId=SMOLLM2, messages=[{"role": "user", "content": [{"text": QUESTION}]}],
                            **({"system": [{"text": system}]} if system else {}),
                            inferenceConfig={"maxTokens": MAX_TOKENS, "temperature": 0})


def answer_of(response: dict) -> str:
    return response["output"]["message"]["content"][0]["text"]


def count(runtime, body: dict) -> int:
    return runtime.count_tokens(modelId=SMOLLM2, input={"invokeModel": {"body": json.dumps(body)}})["inputTokens"]


@pytest.fixture(scope="module")
def plain(runtime):
    return converse(runtime)


@pytest.fixture(scope="module")
def with_system(runtime):
    return converse(runtime, SYSTEM)


def test_a_meta_body_in_llama3_markup_is_answered_as_converse_answers(runtime, plain):
    prompt = ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n" + QUESTION + "<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n")
    out = invoke(runtime, {"prompt": prompt, "max_gen_len": MAX_TOKENS, "temperature": 0})
    assert out["generation"].strip(), out
    assert out["generation"] == answer_of(plain)
    assert out["prompt_token_count"] == plain["usage"]["inputTokens"]
    assert out["generation_token_count"] == plain["usage"]["outputTokens"]


def test_a_system_prompt_in_llama3_markup_as_langchain_writes_it(runtime, with_system):
    prompt = "\n".join(["<|begin_of_text|>", f"<|start_header_id|>system<|end_header_id|>{SYSTEM}<|eot_id|>",
                        f"<|start_header_id|>user<|end_header_id|>{QUESTION}<|eot_id|>",
                        "<|start_header_id|>assistant<|end_header_id|>\n\n"])
    out = invoke(runtime, {"prompt": prompt, "max_gen_len": MAX_TOKENS, "temperature": 0})
    assert out["generation"].strip(), out
    assert out["generation"] == answer_of(with_system)
    assert out["prompt_token_count"] == with_system["usage"]["inputTokens"]


def test_a_mistral_body_in_inst_markup_is_answered_as_converse_answers(runtime, plain):
    body = {"prompt": f"<s>[INST] {QUESTION} [/INST]", "max_tokens": MAX_TOKENS, "temperature": 0}
    out = invoke(runtime, body)
    assert out["outputs"][0]["text"].strip(), out
    assert out["outputs"][0]["text"] == answer_of(plain)
    assert count(runtime, body) == plain["usage"]["inputTokens"]


def test_a_llama2_system_block_becomes_the_system_prompt(runtime, with_system):
    body = {"prompt": f"<s>[INST] <<SYS>>\n{SYSTEM}\n<</SYS>>\n\n{QUESTION} [/INST]", "max_tokens": MAX_TOKENS,
            "temperature": 0}
    assert invoke(runtime, body)["outputs"][0]["text"] == answer_of(with_system)
    assert count(runtime, body) == with_system["usage"]["inputTokens"]


def test_a_prompt_without_markup_stays_raw(runtime, plain):
    """A completion prompt is tokenized as is: fewer tokens than the chat template's rendering of it."""
    out = invoke(runtime, {"prompt": QUESTION, "max_gen_len": 5, "temperature": 0})
    assert 0 < out["prompt_token_count"] < plain["usage"]["inputTokens"]
    assert count(runtime, {"prompt": QUESTION, "max_gen_len": 5}) == out["prompt_token_count"]
    # Prose that mentions the markup is no chat either: raw, where Titan's inputText becomes a user turn.
    prose = f"Explain what [INST] means. [INST] {QUESTION} [/INST]"
    assert count(runtime, {"prompt": prose, "max_gen_len": 1}) < count(runtime, {"inputText": prose})
