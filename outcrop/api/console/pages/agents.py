"""Agents: the list, a form to create one, and one agent (its DRAFT, action groups, knowledge bases, aliases,
Prepare) with its chat test panel: InvokeAgent's event stream read here, on the server, into the answer, each
step of its trace told readably, and a returnControl shown as the action the agent asks its caller to run (with
a form to send that action's result back). The conversation lives in the agent's session (a hidden sessionId);
the transcript shown travels in a hidden field, the page's own copy of what was said."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import Any

from outcrop.api.console.app import Visit, page
from outcrop.api.sessions import Response
from outcrop.errors import BedrockError

DRAFT = "DRAFT"
#: Bedrock's built-in alias of every agent: it runs the prepared DRAFT.
TEST_ALIAS = "TSTALIASID"
#: How many turns the transcript keeps (the agent's session keeps its own).
TRANSCRIPT_TURNS = 40
#: The longest prompt text a trace step shows (a model's whole prompt is long and mostly the agent's guide).
SHOWN_CHARACTERS = 4000


@page("GET", "agents")
def agents(visit: Visit) -> Response:
    found, next_token = visit.listing("bedrock-agent", "ListAgents", "agentSummaries")
    return visit.render("agents.html", "Agents", agents=found, next_token=next_token,
                        may_create=visit.refusal("CreateAgent") is None)


# -- create --------------------------------------------------------------------------------------------

@page("GET", "agents/create")
def create_form(visit: Visit) -> Response:
    visit.require("CreateAgent")  # a form the policy forbids sending: why not, instead
    return _create_form(visit, {"instruction": "You are a helpful assistant. Answer the user's questions briefly.",
                                "idleSessionTTLInSeconds": "600", "guardrailVersion": DRAFT})


@page("POST", "agents/create")
def create(visit: Visit) -> Response:
    form = visit.form
    params: dict[str, Any] = {"agentName": form.get("agentName", "").strip(),
                              "foundationModel": form.get("foundationModel", ""),
                              "instruction": form.get("instruction", "").strip()}
    if form.get("description", "").strip():
        params["description"] = form["description"].strip()
    ttl = form.get("idleSessionTTLInSeconds", "").strip()
    if ttl:
        params["idleSessionTTLInSeconds"] = int(ttl) if ttl.isdigit() else ttl  # the API names a bad value
    if form.get("guardrailIdentifier"):
        params["guardrailConfiguration"] = {"guardrailIdentifier": form["guardrailIdentifier"],
                                            "guardrailVersion": form.get("guardrailVersion", "").strip() or DRAFT}
    try:
        created = visit.call("bedrock-agent", "CreateAgent", params)["agent"]
    except BedrockError as exc:
        return _create_form(visit, form, error=f"{exc.code}: {exc.message}", status=exc.status)
    return visit.redirect(f"agents/{created['agentId']}")


def _create_form(visit: Visit, values: dict[str, str], error: str = "", status: int = 200) -> Response:
    try:
        models = [m for m in visit.call("bedrock", "ListFoundationModels", {"byOutputModality": "TEXT"})[
            "modelSummaries"] if m.get("responseStreamingSupported")]  # rerankers do not generate
    except BedrockError:
        models = []
    try:
        guardrails = visit.call("bedrock", "ListGuardrails")["guardrails"]
    except BedrockError:
        guardrails = []
    return visit.render("agents_create.html", "Create an agent", status=status, values=values, error=error,
                        models=models, guardrails=guardrails)


# -- one agent -----------------------------------------------------------------------------------------

@page("GET", "agents/(?P<agent>[^/]+)")
def agent(visit: Visit, agent: str) -> Response:
    return _agent_page(visit, agent, chat=_chat(str(uuid.uuid4()), visit.query.get("alias") or TEST_ALIAS, []))


def _agent_page(visit: Visit, agent_id: str, status: int = 200, **context: Any) -> Response:
    found = visit.call("bedrock-agent", "GetAgent", {"agentId": agent_id})["agent"]
    summaries = visit.call("bedrock-agent", "ListAgentActionGroups", {"agentId": agent_id, "agentVersion": DRAFT})
    groups = [visit.call("bedrock-agent", "GetAgentActionGroup", {
        "agentId": agent_id, "agentVersion": DRAFT, "actionGroupId": g["actionGroupId"]})["agentActionGroup"]
        for g in summaries["actionGroupSummaries"]]
    kbs = visit.call("bedrock-agent", "ListAgentKnowledgeBases", {"agentId": agent_id, "agentVersion": DRAFT})
    aliases = visit.call("bedrock-agent", "ListAgentAliases", {"agentId": agent_id})["agentAliasSummaries"]
    try:
        available = visit.call("bedrock-agent", "ListKnowledgeBases")["knowledgeBaseSummaries"]
    except BedrockError:  # the association form then takes an id
        available = []
    defaults = {"error": "", "kb_error": "", "kb_values": {}, "chat": None}
    return visit.render("agents_one.html", found["agentName"], status=status, agent=found, groups=groups,
                        knowledge_bases=kbs["agentKnowledgeBaseSummaries"], aliases=aliases,
                        available_kbs=available, test_alias=TEST_ALIAS, **{**defaults, **context})


def _chat(session_id: str, alias: str, transcript: list[dict[str, str]], **turn: Any) -> dict[str, Any]:
    """The chat panel's state: its session, alias, the transcript so far and what this turn brought."""
    return {"sessionId": session_id, "alias": alias, "transcript": transcript,
            "transcript_json": json.dumps(transcript[-TRANSCRIPT_TURNS:]), "message": "", "error": "",
            "steps": [], "control": None, "citations": [], **turn}


@page("POST", "agents/(?P<agent>[^/]+)/prepare")
def prepare(visit: Visit, agent: str) -> Response:
    try:
        visit.call("bedrock-agent", "PrepareAgent", {"agentId": agent})
    except BedrockError as exc:
        return _agent_page(visit, agent, status=exc.status, error=f"{exc.code}: {exc.message}",
                           chat=_chat(str(uuid.uuid4()), TEST_ALIAS, []))
    return visit.redirect(f"agents/{agent}")


@page("POST", "agents/(?P<agent>[^/]+)/knowledge-bases")
def associate(visit: Visit, agent: str) -> Response:
    form = visit.form
    params = {"agentId": agent, "agentVersion": DRAFT, "knowledgeBaseId": form.get("knowledgeBaseId", "").strip(),
              "description": form.get("description", "").strip()}
    try:
        visit.call("bedrock-agent", "AssociateAgentKnowledgeBase", params)
    except BedrockError as exc:
        return _agent_page(visit, agent, status=exc.status, kb_error=f"{exc.code}: {exc.message}", kb_values=form,
                           chat=_chat(str(uuid.uuid4()), TEST_ALIAS, []))
    return visit.redirect(f"agents/{agent}")


# -- the chat ------------------------------------------------------------------------------------------

@page("POST", "agents/(?P<agent>[^/]+)/invoke")
def invoke(visit: Visit, agent: str) -> Response:
    """One turn: the message (or an action's result the agent asked for) sent with InvokeAgent, its stream read
    to the end here; the page shows the transcript, the answer and its trace."""
    form = visit.form
    session_id = form.get("sessionId") or str(uuid.uuid4())
    alias = form.get("agentAliasId") or TEST_ALIAS
    transcript = _transcript(form.get("transcript", ""))
    params: dict[str, Any] = {"agentId": agent, "agentAliasId": alias, "sessionId": session_id, "enableTrace": True}
    if form.get("invocationId"):
        params["sessionState"] = {"invocationId": form["invocationId"],
                                  "returnControlInvocationResults": [_action_result(form)]}
        said = f"(the result of {form.get('action', 'the action')}) {form.get('result', '')}"
    else:
        params["inputText"] = form.get("message", "")
        said = params["inputText"]
    try:
        output = visit.call("bedrock-agent-runtime", "InvokeAgent", params)
        turn = _read(output["completion"])  # errors of the agent's run arrive while the stream is read
    except BedrockError as exc:
        chat = _chat(session_id, alias, transcript, message=form.get("message", ""), error=f"{exc.code}: {exc.message}")
        return _agent_page(visit, agent, status=exc.status, chat=chat)
    transcript = [*transcript, {"role": "user", "text": said}]
    if turn["answer"] or not turn["control"]:
        transcript.append({"role": "assistant", "text": turn["answer"]})
    if turn["control"]:
        transcript.append({"role": "assistant", "text": "The agent asks the caller to run " +
                           "; ".join(c["summary"] for c in turn["control"]["actions"])})
    return _agent_page(visit, agent, chat=_chat(output.get("sessionId") or session_id, alias, transcript, **turn))


def _transcript(text: str) -> list[dict[str, str]]:
    """The transcript the page sent back (its own earlier rendering): only well-formed turns are kept."""
    try:
        turns = json.loads(text) if text else []
    except ValueError:
        return []
    if not isinstance(turns, list):
        return []
    return [{"role": t["role"], "text": t["text"]} for t in turns[-TRANSCRIPT_TURNS:]
            if isinstance(t, dict) and t.get("role") in ("user", "assistant") and isinstance(t.get("text"), str)]


def _action_result(form: dict[str, str]) -> dict[str, Any]:
    """The result of an action the agent returned control for, as InvokeAgent's sessionState takes it."""
    group, body = form.get("actionGroup", ""), form.get("result", "")
    if form.get("apiPath"):
        return {"apiResult": {"actionGroup": group, "apiPath": form["apiPath"],
                              "httpMethod": form.get("httpMethod", ""), "httpStatusCode": 200,
                              "responseBody": {"application/json": {"body": body}}}}
    return {"functionResult": {"actionGroup": group, "function": form.get("function", ""),
                               "responseBody": {"TEXT": {"body": body}}}}


def _read(events: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """InvokeAgent's stream (the handler's (event, payload) pairs, as the API encodes them) gathered: the answer's
    text, its citations, the trace's steps, and a returnControl."""
    answer, citations, steps, control = [], [], [], None
    for name, payload in events:
        if name == "chunk":
            data = payload.get("bytes") or b""
            answer.append(data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data))
            citations += (payload.get("attribution") or {}).get("citations") or []
        elif name == "trace":
            steps += _steps(payload.get("trace") or {})
        elif name == "returnControl":
            control = {"invocationId": payload.get("invocationId", ""),
                       "actions": [_control(i) for i in payload.get("invocationInputs") or []]}
    return {"answer": "".join(answer), "citations": citations, "steps": steps, "control": control}


def _control(member: dict[str, Any]) -> dict[str, Any]:
    """One action the agent asks its caller to run, with what the result form must send back."""
    if "functionInvocationInput" in member:
        call = member["functionInvocationInput"]
        arguments = ", ".join(f"{p.get('name')}={p.get('value')!r}" for p in call.get("parameters") or [])
        return {"actionGroup": call.get("actionGroup", ""), "function": call.get("function", ""),
                "summary": f"{call.get('actionGroup', '')} · {call.get('function', '')}({arguments})"}
    call = member.get("apiInvocationInput") or {}
    arguments = [f"{p.get('name')}={p.get('value')!r}" for p in call.get("parameters") or []]
    for content in ((call.get("requestBody") or {}).get("content") or {}).values():
        arguments += [f"{p.get('name')}={p.get('value')!r}" for p in content.get("properties") or []]
    return {"actionGroup": call.get("actionGroup", ""), "apiPath": call.get("apiPath", ""),
            "httpMethod": call.get("httpMethod", ""),
            "summary": f"{call.get('actionGroup', '')} · {call.get('httpMethod', '')} {call.get('apiPath', '')}"
                       f"({', '.join(arguments)})"}


# -- the trace, told ----------------------------------------------------------------------------------

def _steps(trace: dict[str, Any]) -> list[dict[str, str]]:
    """One trace event as steps a person reads: {title, text, detail (preformatted, may be empty)}."""
    steps = []
    for kind, body in trace.items():
        body = body or {}
        if kind == "guardrailTrace":
            steps.append(_step("Guardrail", f"action {body.get('action', 'NONE')}"))
        elif kind == "failureTrace":
            steps.append(_step("Failure", body.get("failureReason", ""), body.get("failureCode", "")))
        elif kind in ("orchestrationTrace", "preProcessingTrace", "postProcessingTrace"):
            steps += _orchestration(body)
        else:
            steps.append(_step(kind, "", json.dumps(body, indent=2, default=str)))
    return steps


def _orchestration(body: dict[str, Any]) -> list[dict[str, str]]:
    steps = []
    if body.get("rationale"):
        steps.append(_step("Rationale", body["rationale"].get("text", "")))
    if body.get("modelInvocationInput"):
        model = body["modelInvocationInput"]
        steps.append(_step("Model call", f"{model.get('type', '')} step with {model.get('foundationModel', '')}",
                           _prompt(model.get("text", ""))))
    if body.get("modelInvocationOutput"):
        raw = (body["modelInvocationOutput"].get("rawResponse") or {}).get("content", "")
        steps.append(_step("Model output", "", raw))
    if body.get("invocationInput"):
        steps.append(_invocation(body["invocationInput"]))
    if body.get("observation"):
        steps.append(_observation(body["observation"]))
    return steps


def _invocation(call: dict[str, Any]) -> dict[str, str]:
    if call.get("knowledgeBaseLookupInput"):
        lookup = call["knowledgeBaseLookupInput"]
        return _step("Tool call", f"searches knowledge base {lookup.get('knowledgeBaseId', '')} for "
                                  f"“{lookup.get('text', '')}”")
    if call.get("actionGroupInvocationInput"):
        action = call["actionGroupInvocationInput"]
        target = action.get("function") or f"{action.get('verb', '')} {action.get('apiPath', '')}".strip()
        arguments = ", ".join(f"{p.get('name')}={p.get('value')!r}" for p in action.get("parameters") or [])
        how = "returned to the caller" if action.get("executionType") == "RETURN_CONTROL" else "run by its function"
        return _step("Tool call", f"{action.get('actionGroupName', '')} · {target}({arguments}), {how}")
    return _step("Tool call", call.get("invocationType", ""), json.dumps(call, indent=2, default=str))


def _observation(seen: dict[str, Any]) -> dict[str, str]:
    kind = seen.get("type", "")
    if kind == "FINISH":
        return _step("Final answer", (seen.get("finalResponse") or {}).get("text", ""))
    if kind == "KNOWLEDGE_BASE":
        references = (seen.get("knowledgeBaseLookupOutput") or {}).get("retrievedReferences") or []
        detail = "\n\n".join(f"[{i}] {_where(r.get('location') or {})}\n{(r.get('content') or {}).get('text', '')}"
                             for i, r in enumerate(references, 1))
        return _step("Observation", f"the knowledge base found {len(references)} passages", detail)
    if kind == "ACTION_GROUP":
        return _step("Observation", "the action answered",
                     (seen.get("actionGroupInvocationOutput") or {}).get("text", ""))
    if kind == "REPROMPT":
        return _step("Observation", "the agent asks again", (seen.get("repromptResponse") or {}).get("text", ""))
    return _step("Observation", kind, json.dumps(seen, indent=2, default=str))


def _where(location: dict[str, Any]) -> str:
    return ((location.get("s3Location") or {}).get("uri") or (location.get("customDocumentLocation") or {}).get("id")
            or location.get("type", ""))


def _prompt(text: str) -> str:
    """The model's prompt as it was sent (the trace carries it JSON-encoded), cut to what a page shows."""
    try:
        decoded = json.loads(text)
        text = decoded if isinstance(decoded, str) else text
    except ValueError:
        pass
    return text if len(text) <= SHOWN_CHARACTERS else text[:SHOWN_CHARACTERS] + "\n… (cut)"


def _step(title: str, text: str, detail: str = "") -> dict[str, str]:
    return {"title": title, "text": text, "detail": detail}
