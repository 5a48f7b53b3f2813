"""The InvokeAgent loop, step by step, with the model's steps scripted: what each kind of call does (return of
control and its resumption, a function through Bedrock's Lambda contract, a timeout, a knowledge-base search),
the loop breaker, the step limit, and the session's lifetime. The model's side (that every step is a valid call)
is the tool-use grammar's, tested in tests/unit/inference; here the loop is the subject."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select

from outcrop.agents.memory import SessionMemory
from outcrop.agents.orchestration import FINAL_ANSWER, SEARCH, AgentRuntime
from outcrop.agents.tables import AgentMemoryRow, AgentRow, AgentSessionRow
from outcrop.errors import ValidationException
from outcrop.functions.service import Functions
from outcrop.iam.principal import Principal
from outcrop.knowledge.store import Hit
from outcrop.platform.database import Database, utc_now
from outcrop.runtime.service import Caller

ACCOUNT = "111111111111"
WEATHER = {"functions": [{"name": "get_weather", "parameters": {"city": {"type": "string", "required": True}}}]}


class ScriptedModel:
    """Stands in for RuntimeService.converse: each call answers the next scripted tool call."""

    def __init__(self, *calls: tuple[str, dict]) -> None:
        self.calls = list(calls)
        self.requests: list[dict] = []

    def converse(self, caller, model_id, request):
        self.requests.append(json.loads(json.dumps(request)))
        name, arguments = self.calls.pop(0)
        if isinstance(arguments, Exception):
            raise arguments
        if name is None:  # a plain answer (a session's summary)
            return {"output": {"message": {"role": "assistant", "content": [{"text": arguments}]}}}
        return {"output": {"message": {"role": "assistant", "content": [
            {"toolUse": {"toolUseId": f"tooluse_{len(self.requests)}", "name": name, "input": arguments}}]}}}

    def converse_stream(self, caller, model_id, request):
        """The same answer as ConverseStream's events; a call given as text (a str) is one cut off there."""
        [block] = self.converse(caller, model_id, request)["output"]["message"]["content"]
        use = block["toolUse"]
        yield "contentBlockStart", {"start": {"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}}
        text = use["input"] if isinstance(use["input"], str) else json.dumps(use["input"])
        yield "contentBlockDelta", {"delta": {"toolUse": {"input": text}}}
        yield "messageStop", {"stopReason": "max_tokens" if isinstance(use["input"], str) else "tool_use"}
        yield "metadata", {"usage": {"inputTokens": 40 + len(request["messages"]), "outputTokens": len(text),
                                     "totalTokens": 40 + len(request["messages"]) + len(text)}}


class Agents:
    def __init__(self, document: dict) -> None:
        self.document = document

    def runnable(self, account, agent_id, alias_id):
        return AgentRow(agent_id="AGENT00001", account_id=ACCOUNT, name="helper"), "DRAFT", self.document


class Retrieval:
    def search(self, caller, kb_id, query, configuration, path):
        return [Hit(chunk_id="c1", document_id="d", data_source_id="ds", source_uri="s3://kb/eiffel.txt",
                    text="The Eiffel Tower is 330 metres tall.", context="The Eiffel Tower is 330 metres tall.",
                    metadata={}, score=0.9)]


def _document(groups: dict | None = None, knowledge_bases: dict | None = None) -> dict:
    return {"agent": {"instruction": "Help the user.", "foundationModel": "m", "idleSessionTTLInSeconds": 600},
            "actionGroups": groups or {}, "knowledgeBases": knowledge_bases or {}}


def _group(name: str, executor: dict, **schema) -> dict:
    return {"actionGroupId": name.upper(), "actionGroupName": name, "actionGroupExecutor": executor,
            "actionGroupState": "ENABLED", **schema}


@pytest.fixture
def db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'outcrop.db'}")
    database.migrate()
    return database


def _runtime(db, document, model, max_steps=6):
    return AgentRuntime(Agents(document), Retrieval(), model, Functions(db, "us-east-1"), SessionMemory(db, model), db,
                        max_steps)


def _invoke(runtime, session="s1", text=None, **extra):
    caller = Caller("r", Principal.account_root(ACCOUNT))
    params = {"agentId": "AGENT00001", "agentAliasId": "TSTALIASID", "sessionId": session, "enableTrace": True,
              **({"inputText": text} if text else {}), **extra}
    return list(runtime.invoke(caller, params)[1])


def _answer(events) -> str:
    return "".join(e["bytes"].decode() for name, e in events if name == "chunk")


def test_return_of_control_ends_the_stream_and_the_results_resume_the_loop(db):
    model = ScriptedModel(("get_weather", {"city": "Paris"}), (FINAL_ANSWER, {"answer": "Sunny in Paris."}))
    runtime = _runtime(db, _document({"W": _group("weather", {"customControl": "RETURN_CONTROL"},
                                                  functionSchema=WEATHER)}), model)
    events = _invoke(runtime, text="Weather in Paris?")
    name, control = events[-1]
    assert name == "returnControl"
    call = control["invocationInputs"][0]["functionInvocationInput"]
    assert (call["actionGroup"], call["function"], call["parameters"]) == (
        "weather", "get_weather", [{"name": "city", "type": "string", "value": "Paris"}])
    tools = [t["toolSpec"]["name"] for t in model.requests[0]["toolConfig"]["tools"]]
    assert tools == ["get_weather", FINAL_ANSWER] and model.requests[0]["toolConfig"]["toolChoice"] == {"any": {}}
    city = model.requests[0]["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"]["properties"]["city"]
    assert city["maxLength"] == 200  # bounded, so a small model's argument cannot eat the step's tokens
    with pytest.raises(ValidationException, match="waiting for the results"):
        _invoke(runtime, text="Hello again")
    events = _invoke(runtime, sessionState={"invocationId": control["invocationId"],
                                            "returnControlInvocationResults": [{"functionResult": {
                                                "actionGroup": "weather", "function": "get_weather",
                                                "responseBody": {"TEXT": {"body": "Sunny, 24 C"}}}}]})
    assert _answer(events) == "Sunny in Paris."
    result = model.requests[1]["messages"][-1]["content"][0]["toolResult"]
    assert result["content"] == [{"text": "Sunny, 24 C"}] and result["toolUseId"] == "tooluse_1"
    # The next turn sees the whole conversation.
    model.calls.append((FINAL_ANSWER, {"answer": "You are welcome."}))
    _invoke(runtime, text="Thanks")
    assert [m["role"] for m in model.requests[-1]["messages"]] == ["user", "assistant", "user", "assistant", "user"]


@pytest.fixture
def orders_url():
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            event = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(event)
            if self.path == "/slow":
                time.sleep(2)
            body = json.dumps({"messageVersion": "1.0", "response": {
                "actionGroup": event["actionGroup"], "apiPath": event["apiPath"], "httpMethod": event["httpMethod"],
                "httpStatusCode": 200, "responseBody": {"application/json": {"body": '{"status": "shipped"}'}}},
                "sessionAttributes": {"customer": "c-9"}}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    httpd.shutdown()


OPENAPI = json.dumps({"openapi": "3.0.0", "paths": {"/orders/{orderId}": {"get": {
    "operationId": "get_order", "parameters": [{"name": "orderId", "in": "path", "required": True,
                                                "schema": {"type": "string"}}]}}}})


def test_a_function_gets_bedrocks_lambda_event_and_its_failures_are_observations(db, orders_url):
    url, seen = orders_url
    functions = Functions(db, "us-east-1")
    fast = functions.register(ACCOUNT, "orders", url=url + "/orders").arn
    slow = functions.register(ACCOUNT, "slow", url=url + "/slow", timeout_seconds=1).arn
    model = ScriptedModel(("get_order", {"orderId": "42"}), (FINAL_ANSWER, {"answer": "It shipped."}))
    runtime = _runtime(db, _document({"O": _group("orders", {"lambda": fast}, apiSchema={"payload": OPENAPI})}),
                       model)
    events = _invoke(runtime, text="Where is order 42?")
    assert _answer(events) == "It shipped."
    assert seen[0]["apiPath"] == "/orders/{orderId}" and seen[0]["httpMethod"] == "GET"
    assert seen[0]["parameters"] == [{"name": "orderId", "type": "string", "value": "42"}]
    assert seen[0]["agent"] == {"name": "helper", "id": "AGENT00001", "alias": "TSTALIASID", "version": "DRAFT"}
    observation = [e["trace"]["orchestrationTrace"]["observation"] for name, e in events if name == "trace"
                   and "observation" in e["trace"]["orchestrationTrace"]][0]
    assert json.loads(observation["actionGroupInvocationOutput"]["text"]) == {"status": "shipped"}
    with db.session() as session:
        assert session.get(AgentSessionRow, ("AGENT00001", "s1")).session_attributes == {"customer": "c-9"}
    model = ScriptedModel(("get_order", {"orderId": "7"}), (FINAL_ANSWER, {"answer": "Try later."}))
    runtime = _runtime(db, _document({"O": _group("orders", {"lambda": slow}, apiSchema={"payload": OPENAPI})}),
                       model)
    assert _answer(_invoke(runtime, session="s2", text="Where is order 7?")) == "Try later."
    failed = model.requests[1]["messages"][-1]["content"][0]["toolResult"]
    assert failed["status"] == "error" and "Timeout" in failed["content"][0]["text"]


def test_a_knowledge_base_is_searched_and_the_answer_cites_it(db):
    model = ScriptedModel((SEARCH, {"query": "Eiffel height"}),
                          (FINAL_ANSWER, {"answer": "The Eiffel Tower is 330 metres tall."}))
    runtime = _runtime(db, _document(knowledge_bases={"KB": {"knowledgeBaseId": "KB", "description": "landmarks",
                                                             "knowledgeBaseState": "ENABLED"}}), model)
    events = _invoke(runtime, text="How tall is the Eiffel Tower?")
    chunk = [e for name, e in events if name == "chunk"][0]
    [citation] = chunk["attribution"]["citations"]
    assert citation["retrievedReferences"][0]["location"]["s3Location"]["uri"] == "s3://kb/eiffel.txt"
    # The passage as it reads: with a "[1]" label in front, a small model answers "1".
    assert model.requests[1]["messages"][-1]["content"][0]["toolResult"]["content"][0]["text"] == \
        "The Eiffel Tower is 330 metres tall."


def test_a_repeated_call_forces_the_answer_and_the_steps_are_bounded(db):
    group = {"W": _group("weather", {"customControl": "RETURN_CONTROL"}, functionSchema=WEATHER)}
    model = ScriptedModel(("get_weather", {"city": "Oslo"}), (FINAL_ANSWER, {"answer": "Cold."}))
    runtime = _runtime(db, _document(group), model)
    control = _invoke(runtime, text="Oslo?")[-1][1]
    model.calls = [("get_weather", {"city": "Oslo"}), (FINAL_ANSWER, {"answer": "Cold."})]
    events = _invoke(runtime, sessionState={"returnControlInvocationResults": [{"functionResult": {
        "actionGroup": "weather", "function": "get_weather", "responseBody": {"TEXT": {"body": "-5 C"}}}}],
        "invocationId": control["invocationId"]})
    assert _answer(events) == "Cold."
    assert model.requests[-1]["toolConfig"]["toolChoice"] == {"tool": {"name": FINAL_ANSWER}}
    steps = [e["trace"]["orchestrationTrace"] for name, e in events if name == "trace"]
    inputs = [t["modelInvocationInput"] for t in steps if "modelInvocationInput" in t]
    outputs = [t["modelInvocationOutput"] for t in steps if "modelInvocationOutput" in t]
    # Each step: the prompt the model read (the history included), what it wrote and its tokens, one traceId.
    assert [json.loads(i["text"])["messages"] for i in inputs] == [r["messages"] for r in model.requests[-2:]]
    assert [o["traceId"] for o in outputs] == [i["traceId"] for i in inputs] and len(set(o["traceId"]
                                                                                       for o in outputs)) == 2
    assert json.loads(outputs[0]["rawResponse"]["content"]) == {"name": "get_weather", "input": '{"city": "Oslo"}'}
    assert outputs[0]["metadata"]["usage"] == {"inputTokens": 40 + len(model.requests[-2]["messages"]),
                                               "outputTokens": len('{"city": "Oslo"}')}
    [reprompt] = [t["observation"] for t in steps if t.get("observation", {}).get("type") == "REPROMPT"]
    assert reprompt["repromptResponse"]["source"] == "PARSER" and reprompt["traceId"] == inputs[0]["traceId"]
    looping = ScriptedModel(*[(SEARCH, {"query": f"q{i}"}) for i in range(3)])
    runtime = _runtime(db, _document(knowledge_bases={"KB": {"knowledgeBaseId": "KB", "description": "d",
                                                             "knowledgeBaseState": "ENABLED"}}), looping, max_steps=3)
    assert "within 3 steps" in _answer(_invoke(runtime, session="s3", text="?"))


def test_an_idle_session_starts_over(db):
    model = ScriptedModel((FINAL_ANSWER, {"answer": "Hi."}), (FINAL_ANSWER, {"answer": "Hi again."}))
    runtime = _runtime(db, _document(), model)
    _invoke(runtime, text="Hello")
    with db.session() as session:
        session.get(AgentSessionRow, ("AGENT00001", "s1")).updated_at = utc_now() - timedelta(seconds=601)
    _invoke(runtime, text="Hello?")
    assert len(model.requests[-1]["messages"]) == 1


def test_action_schemas_are_checked_before_they_reach_a_model():
    from outcrop.agents.service import tools

    def group(**schema):
        return _group("g", {"customControl": "RETURN_CONTROL"}, **schema)

    for reserved in ("final_answer", "search_knowledge_base", "search_knowledge_base_x"):
        with pytest.raises(ValidationException, match="the agent's own"):
            tools(group(functionSchema={"functions": [{"name": reserved}]}), None)
    bomb = "a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\nopenapi: '3.0.0'\n"
    with pytest.raises(ValidationException, match="aliases"):
        tools(group(apiSchema={"payload": bomb}), None)
    referenced = json.dumps({"openapi": "3.0.0", "paths": {"/a": {"get": {"parameters": [
        {"$ref": "#/components/parameters/id"}]}}}})
    with pytest.raises(ValidationException, match=r"\$ref"):
        tools(group(apiSchema={"payload": referenced}), None)
    with pytest.raises(ValidationException, match="nested too deeply"):
        tools(group(apiSchema={"payload": "[" * 100_000}), None)
    unnamed = json.dumps({"openapi": "3.0.0", "paths": {"/orders/{orderId}": {"get": {"parameters": []}}}})
    assert [t.name for t in tools(group(apiSchema={"payload": unnamed}), None)] == ["get_orders__orderId_"]


def test_a_function_answering_in_another_shape_is_a_failed_action(db, orders_url):
    from outcrop.agents.orchestration import _function_output

    assert _function_output({"response": "ok"})[1] is True
    assert _function_output({"response": {"functionResponse": {"responseBody": {"TEXT": {"body": "fine"}}}}}) == (
        "fine", False)
    assert _function_output({"response": {"httpStatusCode": 500, "responseBody": {
        "application/json": {"body": "down"}}}}) == ("down", True)


def test_end_session_alone_ends_even_a_session_waiting_for_results(db):
    model = ScriptedModel(("get_weather", {"city": "Rome"}))
    runtime = _runtime(db, _document({"W": _group("weather", {"customControl": "RETURN_CONTROL"},
                                                  functionSchema=WEATHER)}), model)
    assert _invoke(runtime, text="Rome?")[-1][0] == "returnControl"
    assert _invoke(runtime, endSession=True) == []
    with db.session() as session:
        assert session.get(AgentSessionRow, ("AGENT00001", "s1")) is None


def test_memory_summarizes_an_ended_session_and_the_next_sessions_recall_it(db):
    memory = {"enabledMemoryTypes": ["SESSION_SUMMARY"], "storageDays": 7,
              "sessionSummaryConfiguration": {"maxRecentSessions": 2}}
    document = _document()
    document["agent"]["memoryConfiguration"] = memory
    model = ScriptedModel((FINAL_ANSWER, {"answer": "Noted: you like trains."}),
                          (None, "The user likes trains."))
    runtime = _runtime(db, document, model)
    _invoke(runtime, text="I like trains.", memoryId="user-1", endSession=True)
    summary = model.requests[-1]
    assert "toolConfig" not in summary and "User: I like trains." in summary["messages"][0]["content"][0]["text"]
    got = runtime.memory.get(ACCOUNT, "AGENT00001", "TSTALIASID", {"memoryId": "user-1",
                                                                   "memoryType": "SESSION_SUMMARY"})
    [kept] = [m["sessionSummary"] for m in got["memoryContents"]]
    assert (kept["sessionId"], kept["summaryText"]) == ("s1", "The user likes trains.")
    assert timedelta(days=6) < kept["sessionExpiryTime"] - utc_now() <= timedelta(days=7)
    # A new session under the same memoryId has it in its prompt; one under another memoryId does not.
    model.calls = [(FINAL_ANSWER, {"answer": "Trains, then."})]
    _invoke(runtime, session="s2", text="What do I like?", memoryId="user-1")
    assert "- The user likes trains." in model.requests[-1]["system"][0]["text"]
    with pytest.raises(ValidationException, match="keeps the memoryId"):
        _invoke(runtime, session="s2", text="Hm?", memoryId="user-2")
    # s1's summary is a day old; s2 idles out (it ended when its TTL ran out, 1 s ago), and the next session of
    # user-1 summarizes it first (no timer does); s3 ends now. s4 recalls the latest two, oldest first.
    with db.session() as session:
        session.scalars(select(AgentMemoryRow)).one().created_at = utc_now() - timedelta(days=1)
        session.get(AgentSessionRow, ("AGENT00001", "s2")).updated_at = utc_now() - timedelta(seconds=601)
    model.calls = [(None, "The user asked what they like."), (FINAL_ANSWER, {"answer": "Yes."}),
                   (None, "The user said yes."), (FINAL_ANSWER, {"answer": "Hello again."})]
    _invoke(runtime, session="s3", text="Anything else?", memoryId="user-1", endSession=True)
    _invoke(runtime, session="s4", text="Hi", memoryId="user-1")
    prompt = model.requests[-1]["system"][0]["text"]
    assert prompt.endswith("oldest first:\n- The user asked what they like.\n- The user said yes.")
    runtime.memory.delete(ACCOUNT, "AGENT00001", "TSTALIASID", {"memoryId": "user-1", "sessionId": "s1"})
    left = runtime.memory.get(ACCOUNT, "AGENT00001", "TSTALIASID", {"memoryId": "user-1",
                                                                    "memoryType": "SESSION_SUMMARY"})
    assert [m["sessionSummary"]["sessionId"] for m in left["memoryContents"]] == ["s2", "s3"]
    assert runtime.memory.get("222222222222", "AGENT00001", "TSTALIASID", {
        "memoryId": "user-1", "memoryType": "SESSION_SUMMARY"})["memoryContents"] == []  # another account's
    # Without memory on the agent, a memoryId is refused, not ignored.
    with pytest.raises(ValidationException, match="no memoryConfiguration"):
        _invoke(_runtime(db, _document(), model), session="s4", text="Hi", memoryId="user-1")


def test_a_final_answer_cut_off_by_the_step_limit_keeps_what_was_said_once(db):
    partial = '{"answer": "Paris is sunny. It is \\"warm\\". Paris is sunny. It is \\"wa'
    runtime = _runtime(db, _document(), ScriptedModel((FINAL_ANSWER, partial)))
    assert _answer(_invoke(runtime, text="Paris?")) == 'Paris is sunny. It is "warm".'
    runtime = _runtime(db, _document(), ScriptedModel((FINAL_ANSWER, '{"answer": "Hot \\')))
    assert _answer(_invoke(runtime, session="s2", text="Paris?")) == "Hot"
    runtime = _runtime(db, _document(), ScriptedModel((FINAL_ANSWER, '{"answer": "Hot \\u00')))
    assert _answer(_invoke(runtime, session="s4", text="Paris?")) == "Hot"
    runtime = _runtime(db, _document(), ScriptedModel((FINAL_ANSWER, '{"ans')))
    assert "within 300 tokens" in _answer(_invoke(runtime, session="s3", text="Paris?"))


def test_an_answer_survives_a_summary_that_fails_and_the_session_stays(db):
    document = _document()
    document["agent"]["memoryConfiguration"] = {"enabledMemoryTypes": ["SESSION_SUMMARY"]}
    model = ScriptedModel((FINAL_ANSWER, {"answer": "Bye."}), (None, RuntimeError("the model is throttled")))
    runtime = _runtime(db, document, model)
    assert _answer(_invoke(runtime, text="Bye", memoryId="user-9", endSession=True)) == "Bye."
    with db.session() as session:
        assert session.get(AgentSessionRow, ("AGENT00001", "s1")).memory_id == "user-9"


def test_an_inline_agent_keeps_its_session_under_its_accounts_id_and_its_traces_name_no_agent(db):
    from outcrop.agents.orchestration import inline_agent_id

    class InlineAgents(Agents):
        def inline(self, account, params):
            return {**self.document, "agent": {**self.document["agent"], "agentName": "inline-agent"}}

    model = ScriptedModel((FINAL_ANSWER, {"answer": "Hi."}))
    runtime = AgentRuntime(InlineAgents(_document()), Retrieval(), model, Functions(db, "us-east-1"),
                           SessionMemory(db, model), db, 6)
    caller = Caller("r", Principal.account_root(ACCOUNT))
    _, events = runtime.invoke_inline(caller, {"sessionId": "in-1", "inputText": "Hello", "enableTrace": True,
                                               "foundationModel": "m", "instruction": "Help."})
    traces = [e for name, e in events if name == "trace"]
    assert traces and all(set(t) == {"sessionId", "eventTime", "trace"} for t in traces)
    assert inline_agent_id(ACCOUNT) != inline_agent_id("222222222222") and len(inline_agent_id(ACCOUNT)) == 10
    with db.session() as session:
        assert session.get(AgentSessionRow, (inline_agent_id(ACCOUNT), "in-1")) is not None


def test_an_answer_that_loops_on_a_sentence_ends_before_the_loop(db):
    model = ScriptedModel((FINAL_ANSWER, {"answer": "I can help. I am a shop assistant. I am a shop assistant. I am"}))
    assert _answer(_invoke(_runtime(db, _document(), model), text="Who are you?")) == \
        "I can help. I am a shop assistant."
