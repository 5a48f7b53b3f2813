"""Agents through boto3 against a real server: the control plane (action groups, knowledge bases, prepare,
versions and aliases), InvokeAgent's event stream as botocore reads it, and isolation between accounts.

InvokeAgent runs here on the tiny random model (conftest.py says why).
"""

from __future__ import annotations

import json

import yaml

from tests.integration.security.helpers import error_code, outcrop

WEATHER = {"functions": [{"name": "get_weather", "description": "The weather now in a city",
                          "parameters": {"city": {"type": "string", "description": "the city", "required": True}}}]}
OPENAPI = {"openapi": "3.0.0", "info": {"title": "orders", "version": "1"}, "paths": {"/orders/{orderId}": {"get": {
    "operationId": "get_order", "description": "The status of an order",
    "parameters": [{"name": "orderId", "in": "path", "required": True, "schema": {"type": "string"}}]}}}}


def test_an_agent_is_built_prepared_versioned_and_invoked(server, tiny_agent_model):
    agent = server.client("bedrock-agent")
    agent_id = agent.create_agent(agentName="helper", foundationModel=tiny_agent_model,
                                  instruction="Help the user with the weather and with orders.",
                                  idleSessionTTLInSeconds=300)["agent"]["agentId"]
    assert agent.get_agent(agentId=agent_id)["agent"]["agentStatus"] == "NOT_PREPARED"
    group = agent.create_agent_action_group(agentId=agent_id, agentVersion="DRAFT", actionGroupName="weather",
                                            actionGroupExecutor={"customControl": "RETURN_CONTROL"},
                                            functionSchema=WEATHER)["agentActionGroup"]
    function = outcrop(server, "functions", "register", "orders", "--url", "http://127.0.0.1:9/orders").stdout.strip()
    agent.create_agent_action_group(agentId=agent_id, agentVersion="DRAFT", actionGroupName="orders",
                                    actionGroupExecutor={"lambda": function},
                                    apiSchema={"payload": json.dumps(OPENAPI)})
    assert {g["actionGroupName"] for g in agent.list_agent_action_groups(
        agentId=agent_id, agentVersion="DRAFT")["actionGroupSummaries"]} == {"weather", "orders"}
    code, _, message = error_code(lambda: agent.create_agent_action_group(
        agentId=agent_id, agentVersion="DRAFT", actionGroupName="broken",
        actionGroupExecutor={"lambda": "arn:aws:lambda:us-east-1:123456789012:function:nothing"},
        functionSchema=WEATHER))
    assert code == "ResourceNotFoundException"
    runtime = server.client("bedrock-agent-runtime", read_timeout=300)
    code, _, message = error_code(lambda: runtime.invoke_agent(agentId=agent_id, agentAliasId="TSTALIASID",
                                                               sessionId="s0", inputText="hi"))
    assert code == "ValidationException" and "PrepareAgent" in message
    assert agent.prepare_agent(agentId=agent_id)["agentStatus"] == "PREPARED"
    # An alias without routing makes version 1 from the prepared DRAFT.
    alias = agent.create_agent_alias(agentId=agent_id, agentAliasName="live")["agentAlias"]
    assert alias["routingConfiguration"] == [{"agentVersion": "1"}] and alias["agentAliasStatus"] == "PREPARED"
    versions = agent.list_agent_versions(agentId=agent_id)["agentVersionSummaries"]
    assert [v["agentVersion"] for v in versions] == ["DRAFT", "1"]
    agent.delete_agent_action_group(agentId=agent_id, agentVersion="DRAFT", actionGroupId=group["actionGroupId"])
    assert agent.get_agent_version(agentId=agent_id, agentVersion="1")["agentVersion"]["agentStatus"] == "PREPARED"
    assert agent.get_agent(agentId=agent_id)["agent"]["agentStatus"] == "NOT_PREPARED"  # the DRAFT changed
    # The stream, as botocore reads it: traces, then an answer or a return of control, on version 1.
    answer = runtime.invoke_agent(agentId=agent_id, agentAliasId=alias["agentAliasId"], sessionId="s1",
                                  inputText="What is the weather in Paris?", enableTrace=True)
    assert answer["sessionId"] == "s1"
    events = list(answer["completion"])
    assert "trace" in events[0] and events[0]["trace"]["agentVersion"] == "1"
    assert "modelInvocationInput" in events[0]["trace"]["trace"]["orchestrationTrace"]
    assert "chunk" in events[-1] or "returnControl" in events[-1], events[-1]
    code, _, _ = error_code(lambda: agent.delete_agent(agentId=agent_id))
    assert code == "ConflictException"  # it has an alias
    agent.delete_agent_alias(agentId=agent_id, agentAliasId=alias["agentAliasId"])
    assert agent.delete_agent(agentId=agent_id)["agentStatus"] == "DELETING"


def test_another_account_sees_no_agent(server, tiny_model):
    created = json.loads(outcrop(server, "iam", "create-account", "--name", "agent-outsider").stdout)
    key = (created["AccessKeyId"], created["SecretAccessKey"])
    agent_id = server.client("bedrock-agent").create_agent(
        agentName="private", foundationModel=tiny_model,
        instruction="You are a private agent of the first account.")["agent"]["agentId"]
    assert server.client("bedrock-agent", key=key).list_agents()["agentSummaries"] == []
    code, status, _ = error_code(lambda: server.client("bedrock-agent", key=key).get_agent(agentId=agent_id))
    assert (code, status) == ("ResourceNotFoundException", 404)
    code, _, _ = error_code(lambda: server.client("bedrock-agent-runtime", key=key).invoke_agent(
        agentId=agent_id, agentAliasId="TSTALIASID", sessionId="x0", inputText="hi"))
    assert code == "ResourceNotFoundException"
    code, _, _ = error_code(lambda: server.client("bedrock-agent-runtime", key=key).get_agent_memory(
        agentId=agent_id, agentAliasId="TSTALIASID", memoryId="anyone", memoryType="SESSION_SUMMARY"))
    assert code == "ResourceNotFoundException"


def test_an_openapi_schema_in_s3_is_read_with_the_agents_role(server, tiny_agent_model, tmp_path):
    schema = tmp_path / "orders.yaml"
    schema.write_text(yaml.safe_dump(OPENAPI))
    outcrop(server, "s3", "mb", "s3://agent-schemas")
    outcrop(server, "s3", "cp", str(schema), "s3://agent-schemas/orders.yaml")
    agent = server.client("bedrock-agent")
    agent_id = agent.create_agent(agentName="s3-schema", foundationModel=tiny_agent_model,
                                  instruction="Help the user with their orders, always.")["agent"]["agentId"]
    group = {"agentId": agent_id, "agentVersion": "DRAFT", "actionGroupName": "orders",
             "actionGroupExecutor": {"customControl": "RETURN_CONTROL"},
             "apiSchema": {"s3": {"s3BucketName": "agent-schemas", "s3ObjectKey": "orders.yaml"}}}
    code, _, message = error_code(lambda: agent.create_agent_action_group(**group))
    assert code == "ValidationException" and "agentResourceRoleArn" in message
    blind = outcrop(server, "iam", "create-role", "--name", "agent-blind", "--s3-access", "agent-schemas/other/",
                    "--read-only").stdout.strip()
    agent.update_agent(agentId=agent_id, agentName="s3-schema", foundationModel=tiny_agent_model,
                       instruction="Help the user with their orders, always.", agentResourceRoleArn=blind)
    code, _, message = error_code(lambda: agent.create_agent_action_group(**group))
    assert code == "AccessDeniedException" and "s3:GetObject" in message
    reader = outcrop(server, "iam", "create-role", "--name", "agent-reader", "--s3-access", "agent-schemas",
                     "--read-only").stdout.strip()
    agent.update_agent(agentId=agent_id, agentName="s3-schema", foundationModel=tiny_agent_model,
                       instruction="Help the user with their orders, always.", agentResourceRoleArn=reader)
    created = agent.create_agent_action_group(**group)["agentActionGroup"]
    assert created["apiSchema"] == group["apiSchema"]
    assert agent.prepare_agent(agentId=agent_id)["agentStatus"] == "PREPARED"
    # The prepared agent runs on the document as it was read: a later change in the bucket needs a prepare.
    schema.write_text("not: [an, openapi, document")
    outcrop(server, "s3", "cp", str(schema), "s3://agent-schemas/orders.yaml")
    events = list(server.client("bedrock-agent-runtime", read_timeout=300).invoke_agent(
        agentId=agent_id, agentAliasId="TSTALIASID", sessionId="s3-1", inputText="Where is order 7?")["completion"])
    assert "chunk" in events[-1] or "returnControl" in events[-1]
    code, _, message = error_code(lambda: agent.prepare_agent(agentId=agent_id))
    assert code == "ValidationException" and "apiSchema" in message
