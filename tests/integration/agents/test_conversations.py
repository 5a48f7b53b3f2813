"""Agents in conversation, through boto3 on the built-in SmolLM2 (greedy, as agents' steps are): an action handed
back to the caller and the turn resumed with its result, an OpenAPI action carried out by a local HTTP function
(and the same action timing out); and, on the tiny model, memory across sessions and an inline agent.

SmolLM2 is a 135M model: which step it takes for a question is its own, and the questions here are ones it
answers by calling the action (checked once, greedy decoding makes it repeatable). What the tests assert is
the platform's side: the call's shape, the function's event, the resumption, the trace and the memory.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.integration.security.helpers import error_code, outcrop

SMOLLM2 = "huggingface.smollm2-135m-instruct-v1:0"
WEATHER = {"functions": [{"name": "get_weather", "description": "The weather now in a city",
                          "parameters": {"city": {"type": "string", "description": "the city", "required": True}}}]}
WEATHER_INSTRUCTION = "You answer questions about the weather. Always call get_weather to know the weather."
RAIN = "Is it raining in London right now?"
ORDERS = {"openapi": "3.0.0", "info": {"title": "orders", "version": "1"}, "paths": {"/orders/{orderId}": {"get": {
    "operationId": "get_order", "description": "Look up the status of a customer's order by its id",
    "parameters": [{"name": "orderId", "in": "path", "required": True, "schema": {"type": "string"}}]}}}}


def _events(stream) -> tuple[list[dict], list[dict]]:
    """(the orchestration traces, the other events) of an InvokeAgent stream, as botocore parsed it."""
    events = list(stream)
    traces = [e["trace"] for e in events if "trace" in e]
    return [t["trace"]["orchestrationTrace"] for t in traces], [e for e in events if "trace" not in e]


@pytest.fixture(scope="module")
def orders_function(server):
    """An HTTP function (Bedrock's Lambda contract for agents) that answers every order as shipped, or, while
    `slow` is set, answers after its timeout."""
    seen, slow = [], threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            event = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(event)
            if slow.is_set():
                time.sleep(5)
            body = json.dumps({"messageVersion": "1.0", "response": {
                "actionGroup": event["actionGroup"], "apiPath": event["apiPath"], "httpMethod": event["httpMethod"],
                "httpStatusCode": 200, "responseBody": {"application/json": {"body": '{"status": "shipped"}'}}}})
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    arn = outcrop(server, "functions", "register", "orders-desk", "--url",
                  f"http://127.0.0.1:{httpd.server_address[1]}/orders", "--timeout", "2").stdout.strip()
    yield arn, seen, slow
    httpd.shutdown()


def _agent(agent, name: str, instruction: str, **extra) -> str:
    return agent.create_agent(agentName=name, foundationModel=SMOLLM2, instruction=instruction,
                              **extra)["agent"]["agentId"]


def test_an_action_handed_back_to_the_caller_resumes_the_turn(server):
    agent = server.client("bedrock-agent")
    runtime = server.client("bedrock-agent-runtime", read_timeout=600)
    agent_id = _agent(agent, "rain", WEATHER_INSTRUCTION)
    agent.create_agent_action_group(agentId=agent_id, agentVersion="DRAFT", actionGroupName="weather",
                                    actionGroupExecutor={"customControl": "RETURN_CONTROL"}, functionSchema=WEATHER)
    agent.prepare_agent(agentId=agent_id)
    alias = agent.create_agent_alias(agentId=agent_id, agentAliasName="live")["agentAlias"]["agentAliasId"]

    traces, [handed] = _events(runtime.invoke_agent(agentId=agent_id, agentAliasId=alias, sessionId="rain-1",
                                                    inputText=RAIN, enableTrace=True)["completion"])
    control = handed["returnControl"]
    call = control["invocationInputs"][0]["functionInvocationInput"]
    assert (call["actionGroup"], call["function"], call["parameters"]) == (
        "weather", "get_weather", [{"name": "city", "type": "string", "value": "London"}])
    assert traces[-1]["invocationInput"]["actionGroupInvocationInput"]["executionType"] == "RETURN_CONTROL"
    result = {"invocationId": control["invocationId"], "returnControlInvocationResults": [{"functionResult": {
        "actionGroup": "weather", "function": "get_weather", "responseBody": {"TEXT": {"body": "Heavy rain, 9 C"}}}}]}
    # The result belongs to this session: another one is not waiting for it.
    code, _, message = error_code(lambda: runtime.invoke_agent(agentId=agent_id, agentAliasId=alias,
                                                               sessionId="rain-2", sessionState=result))
    assert code == "ValidationException" and "waiting for" in message
    traces, [answer] = _events(runtime.invoke_agent(agentId=agent_id, agentAliasId=alias, sessionId="rain-1",
                                                    sessionState=result, enableTrace=True)["completion"])
    assert answer["chunk"]["bytes"].decode().strip()
    assert traces[-1]["observation"]["type"] == "FINISH"


def test_an_openapi_action_runs_as_an_http_function_and_its_timeout_is_reported(server, orders_function):
    arn, seen, slow = orders_function
    agent = server.client("bedrock-agent")
    runtime = server.client("bedrock-agent-runtime", read_timeout=600)
    agent_id = _agent(agent, "orders-desk",
                               "You help customers with their orders. Always call get_order to look an order up.")
    agent.create_agent_action_group(agentId=agent_id, agentVersion="DRAFT", actionGroupName="orders",
                                    actionGroupExecutor={"lambda": arn}, apiSchema={"payload": json.dumps(ORDERS)})
    agent.prepare_agent(agentId=agent_id)

    def ask(session: str) -> tuple[list[dict], str]:
        traces, [chunk] = _events(runtime.invoke_agent(
            agentId=agent_id, agentAliasId="TSTALIASID", sessionId=session, enableTrace=True,
            inputText="What is the status of order A-17?",
            sessionState={"sessionAttributes": {"customer": "c-9"}})["completion"])
        return traces, chunk["chunk"]["bytes"].decode()

    traces, answer = ask("orders-1")
    event = seen[-1]
    assert (event["apiPath"], event["httpMethod"], event["actionGroup"]) == ("/orders/{orderId}", "GET", "orders")
    assert event["sessionAttributes"] == {"customer": "c-9"} and event["agent"]["id"] == agent_id
    assert event["inputText"] == "What is the status of order A-17?"
    [action] = [t["invocationInput"]["actionGroupInvocationInput"] for t in traces if "invocationInput" in t]
    assert (action["executionType"], action["apiPath"], action["verb"]) == ("LAMBDA", "/orders/{orderId}", "GET")
    [observed] = [t["observation"] for t in traces if "observation" in t and t["observation"]["type"] ==
                  "ACTION_GROUP"]
    assert json.loads(observed["actionGroupInvocationOutput"]["text"]) == {"status": "shipped"}
    assert answer.strip()

    slow.set()
    try:
        traces, answer = ask("orders-2")
    finally:
        slow.clear()
    [observed] = [t["observation"] for t in traces if "observation" in t and t["observation"]["type"] ==
                  "ACTION_GROUP"]
    assert "failed (Timeout)" in observed["actionGroupInvocationOutput"]["text"]
    assert answer.strip()  # the turn went on to an answer: a failed action is an observation, not an error


def test_memory_keeps_a_summary_of_each_ended_session(server, tiny_agent_model):
    """On the tiny model: what is checked is the platform's (a summary is made when the session ends, kept,
    listed and forgotten), whatever the summary says."""
    agent = server.client("bedrock-agent")
    runtime = server.client("bedrock-agent-runtime", read_timeout=600)
    agent_id = agent.create_agent(agentName="travel-memory", foundationModel=tiny_agent_model,
                                  instruction="You are a travel assistant. Answer the user briefly.",
                                  memoryConfiguration={"enabledMemoryTypes": ["SESSION_SUMMARY"],
                                                       "storageDays": 3})["agent"]["agentId"]
    assert agent.get_agent(agentId=agent_id)["agent"]["memoryConfiguration"] == {
        "enabledMemoryTypes": ["SESSION_SUMMARY"], "storageDays": 3,
        "sessionSummaryConfiguration": {"maxRecentSessions": 20}}
    agent.prepare_agent(agentId=agent_id)
    _events(runtime.invoke_agent(agentId=agent_id, agentAliasId="TSTALIASID", sessionId="trip-1", memoryId="ana",
                                 inputText="I am planning a trip to Lisbon in May.")["completion"])
    assert _events(runtime.invoke_agent(agentId=agent_id, agentAliasId="TSTALIASID", sessionId="trip-1",
                                        endSession=True)["completion"]) == ([], [])
    memory = runtime.get_agent_memory(agentId=agent_id, agentAliasId="TSTALIASID", memoryId="ana",
                                      memoryType="SESSION_SUMMARY")["memoryContents"]
    [summary] = [m["sessionSummary"] for m in memory]
    assert summary["sessionId"] == "trip-1" and summary["memoryId"] == "ana" and summary["summaryText"].strip()
    assert summary["sessionExpiryTime"] > summary["sessionStartTime"]
    runtime.delete_agent_memory(agentId=agent_id, agentAliasId="TSTALIASID", memoryId="ana")
    assert runtime.get_agent_memory(agentId=agent_id, agentAliasId="TSTALIASID", memoryId="ana",
                                    memoryType="SESSION_SUMMARY")["memoryContents"] == []


def test_an_inline_agent_answers_and_keeps_its_session(server, tiny_agent_model):
    """On the tiny model (the protocol is the subject; the loop itself is tests/unit/agents'): the stream as
    botocore reads it, a handed-back action resumed in the same inline session, and refusals by name."""
    runtime = server.client("bedrock-agent-runtime", read_timeout=600)
    agent = {"foundationModel": tiny_agent_model, "instruction": WEATHER_INSTRUCTION, "enableTrace": True,
             "actionGroups": [{"actionGroupName": "weather", "functionSchema": WEATHER,
                               "actionGroupExecutor": {"customControl": "RETURN_CONTROL"}}]}
    response = runtime.invoke_inline_agent(sessionId="inline-1", inputText=RAIN, **agent)
    assert response["sessionId"] == "inline-1"
    traces, [last] = _events(response["completion"])
    assert traces and ("chunk" in last or "returnControl" in last)
    if "returnControl" in last:
        control = last["returnControl"]
        assert control["invocationInputs"][0]["functionInvocationInput"]["function"] == "get_weather"
        _, [last] = _events(runtime.invoke_inline_agent(sessionId="inline-1", **agent, inlineSessionState={
            "invocationId": control["invocationId"], "returnControlInvocationResults": [{"functionResult": {
                "actionGroup": "weather", "function": "get_weather",
                "responseBody": {"TEXT": {"body": "Heavy rain, 9 C"}}}}]})["completion"])
        assert "chunk" in last or "returnControl" in last
    code, _, message = error_code(lambda: runtime.invoke_inline_agent(
        sessionId="inline-2", inputText="hi", collaborators=[{"foundationModel": tiny_agent_model,
                                                             "instruction": WEATHER_INSTRUCTION}], **agent))
    assert code == "ValidationException" and "collaborators" in message


def test_an_agent_under_a_guardrail_answers_its_blocked_message(server, tiny_agent_model):
    """The user's words are checked before the model reads them, the agent's answer before it is sent."""
    guardrail = server.client("bedrock").create_guardrail(
        name="agent-guard", blockedInputMessaging="I cannot discuss that.", blockedOutputsMessaging="Withheld.",
        wordPolicyConfig={"wordsConfig": [{"text": "password"}]})
    runtime = server.client("bedrock-agent-runtime", read_timeout=600)
    agent = {"foundationModel": tiny_agent_model, "instruction": WEATHER_INSTRUCTION, "enableTrace": True,
             "guardrailConfiguration": {"guardrailIdentifier": guardrail["guardrailArn"],
                                        "guardrailVersion": "DRAFT"}}
    events = list(runtime.invoke_inline_agent(sessionId="guarded-1", inputText="Tell me the wifi password.",
                                              **agent)["completion"])
    assert [e["chunk"]["bytes"] for e in events if "chunk" in e] == [b"I cannot discuss that."]
    assert [e["trace"]["trace"]["guardrailTrace"]["action"] for e in events
            if "guardrailTrace" in e.get("trace", {}).get("trace", {})] == ["INTERVENED"]
    assert not [e for e in events if "orchestrationTrace" in e.get("trace", {}).get("trace", {})
                and "modelInvocationInput" in e["trace"]["trace"]["orchestrationTrace"]]  # the model never ran
    bedrock_agent = server.client("bedrock-agent")
    agent_id = bedrock_agent.create_agent(agentName="guarded", foundationModel=tiny_agent_model,
                                          instruction=WEATHER_INSTRUCTION,
                                          guardrailConfiguration=agent["guardrailConfiguration"])["agent"]["agentId"]
    assert bedrock_agent.get_agent(agentId=agent_id)["agent"]["guardrailConfiguration"] == \
        agent["guardrailConfiguration"]
