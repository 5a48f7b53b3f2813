"""Two `outcrop serve` processes on one data dir (one database, one object store, one secret), as N servers
behind a load balancer run: a client spread over them sees one platform, and an account's on-demand quota is
granted once, not once per server."""

from __future__ import annotations

import pytest

from tests.conftest import register_model, start_server, stop_server
from tests.integration.security.helpers import QUESTION, error_code


@pytest.fixture(scope="module")
def pair(tmp_path_factory, tiny_model_dir):
    data = tmp_path_factory.mktemp("shared-data")
    # One torch thread each: two servers on 2 cores would otherwise spin against each other.
    env = {"OUTCROP_QUOTA_REQUESTS_PER_MINUTE": "4", "OUTCROP_TORCH_THREADS": "1"}
    first = start_server(data, env)
    second = start_server(data, env)
    try:
        yield first, second, register_model(first, "tiny-llama", tiny_model_dir)
    finally:
        stop_server(second)
        stop_server(first)


def test_a_client_spread_over_two_servers_sees_one_platform(pair):
    first, second, _ = pair
    guardrail = first.client("bedrock").create_guardrail(name="shared", blockedInputMessaging="no",
                                                         blockedOutputsMessaging="no",
                                                         wordPolicyConfig={"wordsConfig": [{"text": "x-ray"}]})
    assert second.client("bedrock").get_guardrail(guardrailIdentifier=guardrail["guardrailId"])["name"] == "shared"


def test_the_quota_is_granted_once_across_servers(pair):
    first, second, model = pair
    clients = [server.client("bedrock-runtime", read_timeout=300) for server in (first, second)]
    for i in range(4):  # the allowance, drawn from both servers in turn
        clients[i % 2].converse(modelId=model, messages=QUESTION, inferenceConfig={"maxTokens": 1})
    for client in clients:  # each server alone would still have 2 left
        code, status, message = error_code(lambda c=client: c.converse(
            modelId=model, messages=QUESTION, inferenceConfig={"maxTokens": 1}))
        assert (code, status) == ("ThrottlingException", 429) and "4 requests per minute" in message
