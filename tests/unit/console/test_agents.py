"""Agents in the console: creating one, its page, Prepare, associating a knowledge base, and the chat test panel.
No model is loaded: the chat's turns here are answered by the agent's guardrail (a blocked word ends the turn
before the model is asked), which still runs InvokeAgent's whole stream (trace, chunk) through the page. The
stream reader is also checked on the events an agent's tool calls and returned control produce."""

from __future__ import annotations

import html
import json
import re

from outcrop.api.console.pages.agents import _read
from tests.unit.console.test_knowledge import _create as create_knowledge_base
from tests.unit.console.test_knowledge import _role

SMOLLM2 = "huggingface.smollm2-135m-instruct-v1:0"
INSTRUCTION = "You answer questions about the opening hours of the museum, briefly and politely."


def _guardrail(root) -> str:
    created = root.post("guardrails/create", {"name": "no-fruit", "words": "pineapple",
                                              "blockedInputMessaging": "Let us not talk about fruit.",
                                              "blockedOutputsMessaging": "Sorry."})
    assert created.status == 303, created.errors()
    return created.location.rsplit("/", 1)[-1]


def _agent(root, **fields) -> str:
    created = root.post("agents/create", {"agentName": "museum", "foundationModel": SMOLLM2,
                                          "instruction": INSTRUCTION, "idleSessionTTLInSeconds": "600", **fields})
    assert created.status == 303, created.errors()
    return created.location.rsplit("/", 1)[-1]


def _hidden(body: str, name: str) -> str:
    return html.unescape(re.search(rf'name="{name}" value="([^"]*)"', body)[1])


def test_creating_an_agent_and_preparing_it(root):
    gid = _guardrail(root)
    form = root.get("agents/create")
    assert form.status == 200 and SMOLLM2 in form.body and gid in form.body
    assert "cross-encoder" not in form.body  # a reranker is no agent's model
    agent = _agent(root, guardrailIdentifier=gid, guardrailVersion="DRAFT", description="opening hours")
    listed = root.get("agents")
    assert listed.status == 200 and f"/console/agents/{agent}" in listed.body and "NOT_PREPARED" in listed.body
    page = root.get(f"agents/{agent}")
    assert page.status == 200 and "NOT_PREPARED" in page.body and INSTRUCTION in page.body
    assert f"/console/guardrails/{gid}" in page.body and "TSTALIASID" in page.body
    assert "No action groups" in page.body and "None associated." in page.body
    prepared = root.post(f"agents/{agent}/prepare")
    assert prepared.status == 303 and prepared.location == f"/console/agents/{agent}"
    assert '<span class="status PREPARED">PREPARED</span>' in root.get(f"agents/{agent}").body


def test_create_errors_are_the_apis_and_keep_the_values(root):
    short = root.post("agents/create", {"agentName": "a", "foundationModel": SMOLLM2, "instruction": "Be nice."})
    assert short.status == 400 and short.errors()[0].startswith("ValidationException: ")
    assert "instruction" in short.errors()[0] and "Be nice." in short.body
    not_text = root.post("agents/create", {"agentName": "a", "instruction": INSTRUCTION,
                                           "foundationModel": "sentence-transformers.all-minilm-l6-v2-v1:0"})
    assert not_text.status == 400 and "does not generate text" in not_text.errors()[0]


def test_the_chat_sends_messages_in_one_session_and_shows_the_trace(root):
    agent = _agent(root, guardrailIdentifier=_guardrail(root))
    page = root.get(f"agents/{agent}")
    session = _hidden(page.body, "sessionId")
    # Before Prepare: InvokeAgent's own refusal, the message kept to send again.
    early = root.post(f"agents/{agent}/invoke", {"sessionId": session, "transcript": "[]", "agentAliasId": "TSTALIASID",
                                                 "message": "Do you sell pineapple juice?"})
    assert early.status == 400 and "has not been prepared" in early.errors()[0]
    assert "Do you sell pineapple juice?" in early.body
    root.post(f"agents/{agent}/prepare")
    first = root.post(f"agents/{agent}/invoke", {"sessionId": session, "transcript": "[]", "agentAliasId": "TSTALIASID",
                                                 "message": "Do you sell pineapple juice?"})
    assert first.status == 200 and not first.errors()
    turns = re.findall(r'<p class="turn (user|assistant)">([^<]*)</p>', first.body)
    assert turns == [("user", "Do you sell pineapple juice?"), ("assistant", "Let us not talk about fruit.")]
    trace = re.search(r"<summary>Trace of this turn.*?</ol></details>", first.body, re.S)[0]
    assert "<strong>Guardrail</strong>" in trace and "action INTERVENED" in trace
    assert "<strong>Final answer</strong>" in trace and "Let us not talk about fruit." in trace
    assert _hidden(first.body, "sessionId") == session  # the conversation goes on in the agent's session
    second = root.post(f"agents/{agent}/invoke", {"sessionId": session, "agentAliasId": "TSTALIASID",
                                                  "transcript": _hidden(first.body, "transcript"),
                                                  "message": "And pineapple cake?"})
    turns = re.findall(r'<p class="turn (user|assistant)">([^<]*)</p>', second.body)
    assert [t for _, t in turns] == ["Do you sell pineapple juice?", "Let us not talk about fruit.",
                                     "And pineapple cake?", "Let us not talk about fruit."]
    assert len(json.loads(_hidden(second.body, "transcript"))) == 4


def test_chat_errors_are_invoke_agents(root):
    agent = _agent(root)
    root.post(f"agents/{agent}/prepare")
    unknown = root.post(f"agents/{agent}/invoke", {"sessionId": "s-1", "agentAliasId": "NOSUCHALIA",
                                                   "message": "hello"})
    assert unknown.status == 404 and unknown.errors()[0].startswith("ResourceNotFoundException: ")
    assert "NOSUCHALIA" in unknown.errors()[0] and ">hello</textarea>" in unknown.body
    bad_session = root.post(f"agents/{agent}/invoke", {"sessionId": "not a session id!", "message": "hello"})
    assert bad_session.status == 400 and "sessionId" in bad_session.errors()[0]
    # An action's result sent back when the session waits for none: the API checks the invocation.
    stray = root.post(f"agents/{agent}/invoke", {"sessionId": "s-2", "invocationId": "inv-1", "actionGroup": "tools",
                                                 "function": "lookup", "result": "42"})
    assert stray.status == 400 and "answer no invocation this session is waiting for" in stray.errors()[0]


def test_associating_a_knowledge_base(root, services):
    agent = _agent(root)
    missing = root.post(f"agents/{agent}/knowledge-bases", {"knowledgeBaseId": "NOSUCHKB00",
                                                            "description": "the museum's guide"})
    assert missing.status == 404 and missing.errors()[0].startswith("ResourceNotFoundException: ")
    assert 'value="the museum&#39;s guide"' in missing.body
    kb = create_knowledge_base(root, _role(services))
    assert f'<option value="{kb}"' in root.get(f"agents/{agent}").body
    done = root.post(f"agents/{agent}/knowledge-bases", {"knowledgeBaseId": kb, "description": "the museum's guide"})
    assert done.status == 303
    page = root.get(f"agents/{agent}")
    assert f'href="/console/knowledge-bases/{kb}"' in page.body and "ENABLED" in page.body


def test_the_stream_reader_tells_tool_calls_observations_and_returned_control():
    trace = lambda body: ("trace", {"sessionId": "s", "trace": {"orchestrationTrace": body}})  # noqa: E731
    events = [
        trace({"rationale": {"text": "The user asks about hours."}}),
        trace({"modelInvocationInput": {"type": "ORCHESTRATION", "foundationModel": SMOLLM2,
                                        "text": json.dumps("system prompt\nquestion")}}),
        trace({"invocationInput": {"invocationType": "KNOWLEDGE_BASE", "knowledgeBaseLookupInput": {
            "knowledgeBaseId": "KB12345678", "text": "opening hours"}}}),
        trace({"observation": {"type": "KNOWLEDGE_BASE", "knowledgeBaseLookupOutput": {"retrievedReferences": [
            {"content": {"text": "Open 9 to 5."}, "location": {"type": "S3", "s3Location": {"uri": "s3://b/h.txt"}}}]}}}),
        trace({"invocationInput": {"invocationType": "ACTION_GROUP", "actionGroupInvocationInput": {
            "actionGroupName": "tickets", "function": "book", "parameters": [{"name": "day", "value": "Monday"}],
            "executionType": "RETURN_CONTROL", "invocationId": "inv-1"}}}),
        ("returnControl", {"invocationId": "inv-1", "invocationInputs": [{"functionInvocationInput": {
            "actionGroup": "tickets", "function": "book", "parameters": [{"name": "day", "value": "Monday"}]}}]}),
    ]
    turn = _read(events)
    assert turn["answer"] == "" and turn["control"]["invocationId"] == "inv-1"
    assert turn["control"]["actions"] == [{"actionGroup": "tickets", "function": "book",
                                           "summary": "tickets · book(day='Monday')"}]
    told = [(s["title"], s["text"]) for s in turn["steps"]]
    assert told[0] == ("Rationale", "The user asks about hours.")
    assert told[1] == ("Model call", f"ORCHESTRATION step with {SMOLLM2}")
    assert turn["steps"][1]["detail"] == "system prompt\nquestion"
    assert told[2] == ("Tool call", "searches knowledge base KB12345678 for “opening hours”")
    assert told[3] == ("Observation", "the knowledge base found 1 passages")
    assert "s3://b/h.txt" in turn["steps"][3]["detail"] and "Open 9 to 5." in turn["steps"][3]["detail"]
    assert told[4] == ("Tool call", "tickets · book(day='Monday'), returned to the caller")
    cited = {"citations": [{"retrievedReferences": []}]}
    answered = _read([("chunk", {"bytes": b"Open 9 to 5.", "attribution": cited}),
                      trace({"observation": {"type": "ACTION_GROUP", "actionGroupInvocationOutput": {"text": "ok"}}})])
    assert answered["answer"] == "Open 9 to 5." and len(answered["citations"]) == 1
    assert answered["steps"] == [{"title": "Observation", "text": "the action answered", "detail": "ok"}]


def test_returned_control_is_shown_and_its_result_sent_back(root, services, monkeypatch):
    """The model's part stands in for a canned stream (the events orchestration.py yields when an action group
    returns control): the page shows what the agent asks for, and its form sends the result as InvokeAgent's
    sessionState."""
    agent = _agent(root)
    services.agents.create_action_group(services.iam.default_account(), {
        "agentId": agent, "agentVersion": "DRAFT", "actionGroupName": "tickets",
        "actionGroupExecutor": {"customControl": "RETURN_CONTROL"}, "functionSchema": {"functions": [{
            "name": "book", "description": "Book a ticket", "parameters": {
                "day": {"type": "string", "description": "the day", "required": True}}}]}})
    page = root.get(f"agents/{agent}")
    group = re.search(r'<section class="box" aria-label="Action group tickets">.*?</section>', page.body, re.S)[0]
    assert "by the caller (RETURN_CONTROL)" in group and "<code>book</code>" in group
    assert "<code>day</code>: string (required)" in group and "Book a ticket" in group
    root.post(f"agents/{agent}/prepare")
    sent = []

    def invoke(caller, params):
        sent.append(params)
        if "sessionState" in params:
            return params["sessionId"], iter([("chunk", {"bytes": b"Booked for Monday."})])
        return params["sessionId"], iter([
            ("trace", {"trace": {"orchestrationTrace": {"invocationInput": {
                "invocationType": "ACTION_GROUP", "actionGroupInvocationInput": {
                    "actionGroupName": "tickets", "function": "book", "executionType": "RETURN_CONTROL",
                    "parameters": [{"name": "day", "type": "string", "value": "Monday"}]}}}}}),
            ("returnControl", {"invocationId": "inv-1", "invocationInputs": [{"functionInvocationInput": {
                "actionGroup": "tickets", "function": "book", "actionInvocationType": "RESULT",
                "parameters": [{"name": "day", "type": "string", "value": "Monday"}]}}]})])
    monkeypatch.setattr(services.agent_runtime, "invoke", invoke)
    asked = root.post(f"agents/{agent}/invoke", {"sessionId": "s-1", "message": "Book me a ticket for Monday"})
    assert asked.status == 200 and not asked.errors()
    assert "The agent asks the caller to run" in asked.body and "tickets · book(day=&#39;Monday&#39;)" in asked.body
    assert _hidden(asked.body, "invocationId") == "inv-1" and _hidden(asked.body, "function") == "book"
    answered = root.post(f"agents/{agent}/invoke", {
        "sessionId": "s-1", "transcript": _hidden(asked.body, "transcript"), "invocationId": "inv-1",
        "actionGroup": "tickets", "function": "book", "action": "tickets · book", "result": "ticket 42"})
    assert answered.status == 200 and not answered.errors()
    assert sent[1]["sessionState"] == {"invocationId": "inv-1", "returnControlInvocationResults": [{"functionResult": {
        "actionGroup": "tickets", "function": "book", "responseBody": {"TEXT": {"body": "ticket 42"}}}}]}
    assert "inputText" not in sent[1] and sent[1]["enableTrace"] is True
    turns = [t for _, t in re.findall(r'<p class="turn (user|assistant)">([^<]*)</p>', answered.body)]
    assert turns[-2:] == ["(the result of tickets · book) ticket 42", "Booked for Monday."]


def test_a_user_without_list_agents_is_denied(user_browser):
    reader = user_browser("catalog-only", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["bedrock:ListFoundationModels"], "Resource": "*"}]})
    denied = reader.get("agents")
    assert denied.status == 403 and "bedrock:ListAgents" in denied.body
