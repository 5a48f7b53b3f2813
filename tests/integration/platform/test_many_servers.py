"""Two `outcrop serve` processes on one data dir (one database, one object store, one secret), as N servers
behind a load balancer run: a client spread over them sees one platform, and an account's on-demand quota is
granted once, not once per server; creates racing through both servers with one token, or for the account's last
model units, take effect once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

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


def test_creates_racing_through_two_servers_take_effect_once(pair):
    first, second, model = pair
    clients = [server.client("bedrock") for server in (first, second)]

    def at_once(calls):
        def answer(call):
            try:
                return call()
            except ClientError as error:
                return error.response["Error"]["Code"]
        with ThreadPoolExecutor(len(calls)) as pool:
            return list(pool.map(answer, calls))

    def create(client, name, units=1, **token):
        return lambda: client.create_provisioned_model_throughput(
            modelUnits=units, provisionedModelName=name, modelId=model, **token)["provisionedModelArn"]

    # A retry with the first one's token, through the other server while the first is being answered.
    one, again = at_once([create(client, "racing", clientRequestToken="one-token") for client in clients])
    assert one == again and one.startswith("arn:")
    # Four 6-unit creates over both servers: 1 unit held already and a quota of 16 leave room for two.
    results = at_once([create(clients[i % 2], f"units-{i}", 6) for i in range(4)])
    arns = [one] + [r for r in results if r.startswith("arn:")]
    try:
        assert sorted(r for r in results if not r.startswith("arn:")) == ["ServiceQuotaExceededException"] * 2
        listed = clients[1].list_provisioned_model_throughputs()["provisionedModelSummaries"]
        assert sorted(s["provisionedModelArn"] for s in listed) == sorted(arns)
        assert sum(s["modelUnits"] for s in listed) == 13
    finally:
        for arn in arns:
            clients[0].delete_provisioned_model_throughput(provisionedModelId=arn)
