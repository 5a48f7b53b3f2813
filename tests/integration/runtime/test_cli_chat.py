"""`outcrop chat` and `outcrop invoke` as a user runs them: subprocesses talking to a running server."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import free_port

TINY_NAME = "tiny-chat-cli"
LLAMA_BODY = {"prompt": "hello", "max_gen_len": 5, "temperature": 0}


@pytest.fixture(scope="module")
def tiny_chat_model(server, tmp_path_factory) -> str:
    """A random-weight 2-layer Llama, registered with the running server the way a user does."""
    from tests.helpers import make_tiny_llama

    folder = make_tiny_llama(tmp_path_factory.mktemp(TINY_NAME))
    result = subprocess.run([sys.executable, "-m", "outcrop", "models", "register", TINY_NAME, str(folder),
                             "--data-dir", str(server.data_dir)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    model_id = result.stdout.strip()
    assert model_id == f"local.{TINY_NAME}-v1:0"
    return model_id


def outcrop(server, *args: str, endpoint: str | None = None, stdin: str | bytes = "") -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "outcrop", *args, "--data-dir", str(server.data_dir),
               "--endpoint-url", endpoint or server.endpoint]
    return subprocess.run(command, input=stdin, capture_output=True, text=isinstance(stdin, str), timeout=120)


def test_chat_reads_one_message_per_line_and_keeps_the_conversation(server, tiny_chat_model):
    runtime = server.client("bedrock-runtime", read_timeout=120)
    config = {"temperature": 0, "maxTokens": 8}

    def reply(messages):
        answer = runtime.converse(modelId=tiny_chat_model, messages=messages, inferenceConfig=config)
        return answer["output"]["message"]["content"][0]["text"]

    first = [{"role": "user", "content": [{"text": "hello world"}]}]
    first_reply = reply(first)
    assert first_reply, "the tiny model must say something for this test to mean anything"
    second = [*first, {"role": "assistant", "content": [{"text": first_reply}]},
              {"role": "user", "content": [{"text": "the quick brown fox"}]}]
    second_reply = reply(second)

    result = outcrop(server, "chat", tiny_chat_model, "--temperature", "0", "--max-tokens", "8",
                     stdin="hello world\nthe quick brown fox\n")
    assert result.returncode == 0, result.stderr
    # Two replies, the second one to the whole conversation (greedy, so the same as the direct calls).
    assert result.stdout == f"{first_reply}\n{second_reply}\n"


def test_chat_reset_forgets_and_exit_stops_reading(server, tiny_chat_model):
    result = outcrop(server, "chat", tiny_chat_model, "--temperature", "0", "--max-tokens", "8",
                     stdin="hello world\n/reset\nhello world\n/exit\nnever sent\n")
    assert result.returncode == 0, result.stderr
    replies = result.stdout.split("\n")
    assert len(replies) == 3 and replies[2] == ""
    assert replies[0] == replies[1]  # after /reset the same first message gets the same greedy reply


def test_chat_with_an_unknown_model_fails_before_reading(server):
    result = outcrop(server, "chat", "local.no-such-model-v1:0", stdin="hello\n")
    assert result.returncode == 1
    assert result.stderr.startswith("outcrop: ResourceNotFoundException: "), result.stderr


def test_invoke_prints_the_response_body(server, tiny_chat_model, tmp_path):
    body = tmp_path / "body.json"
    body.write_text(json.dumps(LLAMA_BODY))
    result = outcrop(server, "invoke", tiny_chat_model, "--body", str(body))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("{\n  ")  # pretty-printed
    document = json.loads(result.stdout)
    assert isinstance(document["generation"], str)
    assert document["generation_token_count"] == 5 or document["stop_reason"] == "stop"


def test_invoke_stream_prints_one_chunk_per_line(server, tiny_chat_model):
    result = outcrop(server, "invoke", tiny_chat_model, "--body", "-", "--stream", stdin=json.dumps(LLAMA_BODY))
    assert result.returncode == 0, result.stderr
    chunks = [json.loads(line) for line in result.stdout.splitlines()]
    assert chunks and all("generation" in chunk for chunk in chunks)
    assert chunks[-1]["stop_reason"] in ("length", "stop")
    assert "amazon-bedrock-invocationMetrics" in chunks[-1]


def test_invoke_with_a_bad_body_prints_the_server_error(server, tiny_chat_model):
    result = outcrop(server, "invoke", tiny_chat_model, "--body", "-",
                     stdin=json.dumps({"prompt": "hello", "max_gen_len": "many"}))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("outcrop: ValidationException: "), result.stderr
    assert "max_gen_len" in result.stderr


@pytest.mark.parametrize("command", [["chat", "local.any-v1:0"], ["invoke", "local.any-v1:0", "--body", "-"]])
def test_no_server_is_one_clear_line(server, command):
    dead = f"http://127.0.0.1:{free_port()}"
    result = outcrop(server, *command, endpoint=dead, stdin="{}\n")
    assert result.returncode == 1
    assert result.stderr == f"outcrop: no Outcrop server at {dead}: start one with `outcrop serve`\n"
