"""A server whose outcrop.toml aliases two Bedrock ids to the tiny test model (fast answers); the built-in
defaults stay in force for the other well-known ids (SmolLM2 and all-MiniLM answer those)."""

from __future__ import annotations

import json

import pytest

from tests.backends import query
from tests.conftest import register_model, start_server, stop_server
from tests.integration.security.helpers import outcrop

#: Configured in this server's outcrop.toml, both answered by the tiny model.
TINY_ALIAS = "acme.tiny-chat-v1:0"
TINY_CLAUDE = "anthropic.claude-3-sonnet-20240229-v1:0"


@pytest.fixture(scope="module")
def profile_server(tmp_path_factory, tiny_model_dir):
    data = tmp_path_factory.mktemp("profiles-data")
    (data / "outcrop.toml").write_text(
        f'[model_aliases]\n"{TINY_ALIAS}" = "local.tiny-v1:0"\n"{TINY_CLAUDE}" = "local.tiny-v1:0"\n')
    running = start_server(data)
    running.model = register_model(running, "tiny", tiny_model_dir)
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def control(profile_server):
    return profile_server.client("bedrock")


@pytest.fixture(scope="module")
def runtime(profile_server):
    return profile_server.client("bedrock-runtime", read_timeout=300)


@pytest.fixture(scope="module")
def other_account(profile_server):
    """A second account's root key."""
    created = json.loads(outcrop(profile_server, "iam", "create-account", "--name", "tenant-b").stdout)
    return created["AccessKeyId"], created["SecretAccessKey"]


@pytest.fixture(scope="module")
def usage(profile_server):
    """(model_id, invoked_model_id, operation, input tokens, output tokens) of one request's usage record."""
    def record(request_id: str) -> tuple[str, str, str, int, int]:
        row = next(iter(query(profile_server.data_dir, "SELECT model_id, invoked_model_id, operation, input_tokens, "
                              "output_tokens FROM usage_records WHERE request_id = ?", request_id)), None)
        assert row is not None, f"no usage record for {request_id}"
        return row
    return record
