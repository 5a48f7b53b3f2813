"""The AWS CLI against a real `outcrop serve`, with the commands and model ids of Bedrock's own documentation.

`server.aws` runs `aws ... --endpoint-url` with the environment the README's Quickstart exports (the data dir's
credentials and config files, profile `outcrop`). Bodies go in with `fileb://`, which AWS CLI v1 and v2 read the
same way (v2 would otherwise want `--cli-binary-format raw-in-base64-out`).
"""

from __future__ import annotations

import json

import pytest

from tests.integration.frameworks.shared import DIMENSIONS, MAX_TOKENS, QUESTION

# Bedrock's prompt template for Llama 3, from its InvokeModel documentation.
LLAMA3_PROMPT = (f"<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n{QUESTION}<|eot_id|>\n"
                 "<|start_header_id|>assistant<|end_header_id|>\n")


def run(server, *args: str) -> dict:
    result = server.aws(*args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_converse(server, count_tokens):
    model = "amazon.nova-micro-v1:0"
    response = run(server, "bedrock-runtime", "converse", "--model-id", model,
                   "--messages", json.dumps([{"role": "user", "content": [{"text": QUESTION}]}]),
                   "--inference-config", f"maxTokens={MAX_TOKENS},temperature=0")
    assert "Paris" in response["output"]["message"]["content"][0]["text"]
    usage = response["usage"]
    assert usage["inputTokens"] == count_tokens(model) and 0 < usage["outputTokens"] <= MAX_TOKENS
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"]


INVOKE_BODIES = {
    "anthropic.claude-3-haiku-20240307-v1:0": {
        "anthropic_version": "bedrock-2023-05-31", "max_tokens": MAX_TOKENS, "temperature": 0,
        "messages": [{"role": "user", "content": [{"type": "text", "text": QUESTION}]}]},
    "meta.llama3-8b-instruct-v1:0": {"prompt": LLAMA3_PROMPT, "max_gen_len": MAX_TOKENS, "temperature": 0},
}


def invoke(server, tmp_path, model: str, body: dict) -> dict:
    (tmp_path / "body.json").write_text(json.dumps(body))
    result = server.aws("bedrock-runtime", "invoke-model", "--model-id", model, "--body",
                        f"fileb://{tmp_path / 'body.json'}", str(tmp_path / "response.json"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["contentType"] == "application/json"
    return json.loads((tmp_path / "response.json").read_text())


@pytest.mark.parametrize("model", sorted(INVOKE_BODIES))
def test_invoke_model(server, runtime, tmp_path, model):
    body = INVOKE_BODIES[model]
    response = invoke(server, tmp_path, model, body)
    counted = runtime.count_tokens(modelId=model, input={"invokeModel": {"body": json.dumps(body).encode()}})
    if "anthropic_version" in body:
        text = response["content"][0]["text"]
        tokens_in, tokens_out = response["usage"]["input_tokens"], response["usage"]["output_tokens"]
    else:
        text = response["generation"]
        tokens_in, tokens_out = response["prompt_token_count"], response["generation_token_count"]
    assert "Paris" in text, response
    assert tokens_in == counted["inputTokens"] and 0 < tokens_out <= MAX_TOKENS


def test_invoke_model_embedding(server, tmp_path):
    response = invoke(server, tmp_path, "amazon.titan-embed-text-v2:0", {"inputText": QUESTION, "normalize": True})
    assert len(response["embedding"]) == DIMENSIONS and response["inputTextTokenCount"] > 0
    assert abs(sum(x * x for x in response["embedding"]) - 1) < 1e-4


def test_list_inference_profiles(server):
    profiles = run(server, "bedrock", "list-inference-profiles")["inferenceProfileSummaries"]
    ids = {p["inferenceProfileId"] for p in profiles}
    assert "us.anthropic.claude-3-5-haiku-20241022-v1:0" in ids, sorted(ids)
