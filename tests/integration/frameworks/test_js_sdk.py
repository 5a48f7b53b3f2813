"""The AWS SDK for JavaScript v3 (Node) against a real `outcrop serve`: tests/js/drive.mjs runs every call once
with the clients' default request handlers (bedrock-runtime's is HTTP/2) and the default credential chain, and
prints what came back; each test here checks one operation.

Needs Node.js 20 or later; without `node` these tests are skipped, saying so. `make test` installs the SDK
(`npm ci` in tests/js, from package-lock.json); run directly, the fixture does it when node_modules is missing.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.integration.frameworks.shared import DIMENSIONS, JS_DIR, MAX_TOKENS, node, quickstart_env

CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
TITAN_EMBED = "amazon.titan-embed-text-v2:0"


@pytest.fixture(scope="module")
def js(request) -> dict:
    binary = node()  # first: without node, skip before starting a server
    server = request.getfixturevalue("server")
    options = {"endpoint": server.endpoint, "chatModel": CLAUDE, "embeddingModel": TITAN_EMBED}
    result = subprocess.run([binary, "drive.mjs", json.dumps(options)], cwd=JS_DIR, env=quickstart_env(server),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def ok(js: dict, operation: str) -> dict:
    outcome = js[operation]
    assert outcome["ok"], f"{operation} failed in the JS SDK: {outcome['error']}"
    return outcome


def test_list_foundation_models(js):
    assert "huggingface.smollm2-135m-instruct-v1:0" in ok(js, "listFoundationModels")["modelIds"]


def test_converse(js, usage_record):
    converse = ok(js, "converse")
    assert "Paris" in converse["text"] and converse["stopReason"] == "end_turn"
    usage = converse["usage"]
    assert 0 < usage["outputTokens"] <= MAX_TOKENS
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"]
    assert usage["inputTokens"] == ok(js, "countTokens")["inputTokens"]
    _, operation, metered_in, metered_out = usage_record(converse["requestId"])
    assert (operation, metered_in, metered_out) == ("Converse", usage["inputTokens"], usage["outputTokens"])


def test_converse_stream(js):
    stream, converse = ok(js, "converseStream"), ok(js, "converse")
    assert stream["events"][0] == "messageStart" and stream["events"][-3:] == ["contentBlockStop", "messageStop",
                                                                              "metadata"]
    assert stream["events"].count("contentBlockDelta") > 1
    assert stream["text"] == converse["text"] and stream["stopReason"] == converse["stopReason"]
    assert stream["usage"] == converse["usage"]


def test_invoke_model_anthropic_messages(js):
    response = ok(js, "invokeModel")
    assert response["contentType"] == "application/json"
    message = response["response"]
    assert message["type"] == "message" and message["role"] == "assistant" and message["stop_reason"] == "end_turn"
    assert "Paris" in message["content"][0]["text"]
    # The same question as Converse's, in the same chat template: the same tokens in and out.
    usage = ok(js, "converse")["usage"]
    assert message["usage"] == {"input_tokens": usage["inputTokens"], "output_tokens": usage["outputTokens"]}


def test_invoke_model_with_response_stream(js):
    chunks = ok(js, "invokeModelWithResponseStream")["chunks"]
    kinds = [c["type"] for c in chunks]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    text = "".join(c["delta"]["text"] for c in chunks if c["type"] == "content_block_delta")
    message = ok(js, "invokeModel")["response"]
    assert text == message["content"][0]["text"]
    assert chunks[0]["message"]["usage"]["input_tokens"] == message["usage"]["input_tokens"]
    assert chunks[-2]["usage"]["output_tokens"] == message["usage"]["output_tokens"]
    metrics = chunks[-1]["amazon-bedrock-invocationMetrics"]
    assert (metrics["inputTokenCount"], metrics["outputTokenCount"]) == (message["usage"]["input_tokens"],
                                                                         message["usage"]["output_tokens"])


def test_invoke_model_embedding(js):
    embedding = ok(js, "embed")
    assert embedding["dimension"] == DIMENSIONS and embedding["inputTextTokenCount"] > 0
    assert abs(embedding["norm"] - 1) < 1e-4
