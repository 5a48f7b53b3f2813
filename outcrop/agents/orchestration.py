"""InvokeAgent: the reason-act loop, top to bottom.

Each step asks the agent's model through Converse with every action it may take as a tool, plus one more
tool, `final_answer`, and `toolChoice` any: the constrained decoding of tool use ([12]) makes the model's
every step one well-formed call, a small model included, so the loop never has to parse free text. A call
is then carried out:
- an action of a RETURN_CONTROL group ends the stream with a `returnControl` event; the caller runs it and
  calls InvokeAgent again with `sessionState.returnControlInvocationResults`, and the loop goes on;
- an action whose executor is a function (`outcrop functions`, where Bedrock has a Lambda ARN) gets
  Bedrock's Lambda event; its response, or its failure (a timeout, an error), is what the model sees next;
- a knowledge base is searched (Retrieve) and its passages are the result; the final answer cites them;
- `final_answer` ends the turn: its text is the `chunk` event.
A call the turn has already made with the same input is not made again: the next step must be the final
answer (small models, given an action's result, often ask for it once more). After `max_steps` steps
without an answer the turn ends with a message that says so. With `enableTrace`,
every step is reported as Bedrock's orchestration trace (model input, invocation input, observation).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete

from outcrop.agents.memory import SessionMemory
from outcrop.agents.memory import configuration as memory_configuration
from outcrop.agents.service import DEFAULT_IDLE_TTL, DRAFT, Agents, Tool, tools
from outcrop.agents.tables import AgentSessionRow
from outcrop.errors import ResourceNotFoundException, ValidationException
from outcrop.functions.service import FunctionError, Functions
from outcrop.guardrails.assessment import INPUT, INTERVENED, OUTPUT
from outcrop.guardrails.enforcement import Guard
from outcrop.guardrails.service import Guardrails
from outcrop.knowledge.retrieval import Retrieval, cite, reference
from outcrop.platform.database import Database, utc_now
from outcrop.runtime.service import Caller, RuntimeService

log = logging.getLogger(__name__)

FINAL_ANSWER = "final_answer"
SEARCH = "search_knowledge_base"
#: The longest final answer: a greedy small model may repeat itself inside the answer's string until the step's
#: tokens run out, and the grammar then closes it here instead (the answer is not lost to the cut).
ANSWER_CHARACTERS = 800
#: Tokens one step may write by default (config.agent_step_tokens): a call, or the final answer. Steps are
#: greedy, as Bedrock's orchestration is by default (temperature 0): an agent's choice of action should not be
#: a roll of the dice.
MAX_TOKENS = 300
#: How the agent is told to work, after its own instruction.
GUIDE = ("Work step by step. Call one of the tools when you need an action or information. When you can answer "
         f"the user, call {FINAL_ANSWER} with the answer.")
_REFUSED = {"bedrockModelConfigurations": "model configurations", "promptCreationConfigurations": "prompt creation",
            "sourceArn": "source ARNs", "streamingConfigurations": "streaming configurations"}
#: InvokeInlineAgent's members beyond those CreateAgent refuses too (Agents._agent_fields).
_INLINE_REFUSED = {**_REFUSED, "collaborators": "multi-agent collaboration",
                   "collaboratorConfigurations": "multi-agent collaboration"}
#: What a session keeps of user input a guardrail blocked (the words themselves are never kept or replayed).
BLOCKED_INPUT = "(input blocked by the guardrail)"
#: User turns of a session kept in the prompt (the oldest go first), so a long session never outgrows the window.
SESSION_TURNS = 10
_STATE_REFUSED = {"files": "files", "knowledgeBaseConfigurations": "knowledge base overrides",
                  "conversationHistory": "conversation history"}


@dataclass(frozen=True)
class Identity:
    """Who runs a turn: an agent's id, name, alias and version; an inline agent has no alias, and an id of its
    account's own (inline_agent_id), under which its sessions are kept."""

    agent_id: str
    name: str
    alias_id: str | None
    version: str


def inline_agent_id(account: str) -> str:
    """The id an account's inline agents keep their sessions under: 10 characters like an agent's, a different
    one for each account (its 12 digits written in base 36), so one account's session ids never meet another's,
    and never an id that new_id makes (those have no lower-case letter)."""
    digits, number = "0123456789abcdefghijklmnopqrstuvwxyz", int(account)
    out = ""
    for _ in range(8):
        number, digit = divmod(number, 36)
        out = digits[digit] + out
    return "il" + out


class AgentRuntime:
    def __init__(self, agents: Agents, retrieval: Retrieval, runtime: RuntimeService, functions: Functions,
                 memory: SessionMemory, db: Database, max_steps: int, step_tokens: int = MAX_TOKENS,
                 guardrails: Guardrails | None = None) -> None:
        self.guardrails = guardrails
        self.agents = agents
        self.retrieval = retrieval
        self.runtime = runtime
        self.functions = functions
        self.memory = memory
        self.db = db
        self.max_steps = max_steps
        self.step_tokens = step_tokens

    def invoke(self, caller: Caller, params: dict[str, Any]) -> tuple[str, Iterator[tuple[str, dict]]]:
        state = _accepted(params, _REFUSED, "sessionState")
        agent, version, document = self.agents.runnable(caller.principal.account_id, params["agentId"],
                                                        params["agentAliasId"])
        who = Identity(agent.agent_id, agent.name, params["agentAliasId"], version)
        return params["sessionId"], self._start(_Turn(self, caller, who, document, params), state)

    def invoke_inline(self, caller: Caller, params: dict[str, Any]) -> tuple[str, Iterator[tuple[str, dict]]]:
        """InvokeInlineAgent: the agent is the request's; its sessions are kept as an agent's are."""
        state = _accepted(params, _INLINE_REFUSED, "inlineSessionState")
        account = caller.principal.account_id
        document = self.agents.inline(account, params)
        who = Identity(inline_agent_id(account), document["agent"]["agentName"], None, DRAFT)
        return params["sessionId"], self._start(_Turn(self, caller, who, document, params), state)

    def _start(self, turn: _Turn, state: dict[str, Any]) -> Iterator[tuple[str, dict]]:
        if turn.params.get("endSession") and not turn.params.get("inputText") and not state.get(
                "returnControlInvocationResults"):
            turn.end()  # ending alone: the session goes, whatever it was waiting for
            return iter(())
        turn.begin(state)  # before the stream: what is wrong with the input is a ValidationException
        return turn.run()

    def authorization(self, account: str, params: dict[str, Any]) -> tuple[str, list[str]]:
        """What the agent behind this call will use, for the caller's authorization: its model, its knowledge
        bases and its guardrail's configuration (or None)."""
        _, _, document = self.agents.runnable(account, params["agentId"], params["agentAliasId"])
        return document["agent"]["foundationModel"], [kb["knowledgeBaseId"]
                                                      for kb in document["knowledgeBases"].values()
                                                      if kb["knowledgeBaseState"] == "ENABLED"], \
            document["agent"].get("guardrailConfiguration")


def _accepted(params: dict[str, Any], refused: dict[str, str], state_member: str) -> dict[str, Any]:
    """The call's session state, once every member this server cannot honour is refused by name."""
    for member, what in refused.items():
        if params.get(member):
            raise ValidationException(f"{member} ({what}) is not supported on this server")
    state = params.get(state_member) or {}
    for member, what in _STATE_REFUSED.items():
        if state.get(member):
            raise ValidationException(f"{state_member}.{member} ({what}) is not supported on this server")
    return state


class _Turn:
    """One InvokeAgent call: its session, its tools, and the loop."""

    def __init__(self, owner: AgentRuntime, caller: Caller, who: Identity, document: dict[str, Any],
                 params: dict[str, Any]) -> None:
        self.owner, self.caller, self.who, self.document, self.params = owner, caller, who, document, params
        self.session_id = params["sessionId"]
        self.model = document["agent"]["foundationModel"]
        self.trace_on = bool(params.get("enableTrace"))
        self.step_trace_id = uuid.uuid4().hex[:16]  # the orchestration step the traces belong to
        self.tools: dict[str, Tool] = {}
        for group in document["actionGroups"].values():
            for tool in tools(group, _unread):
                self.tools[tool.name] = tool
        self.knowledge_bases = [kb for kb in document["knowledgeBases"].values()
                                if kb["knowledgeBaseState"] == "ENABLED"]
        self.searches = {_search_name(kb["knowledgeBaseId"], self.knowledge_bases): kb
                         for kb in self.knowledge_bases}
        self.hits: list = []
        self.memory = memory_configuration(document["agent"])
        self.memory_id = params.get("memoryId")
        if self.memory_id and self.memory is None:
            raise ValidationException(f"memoryId was given, but agent {who.agent_id} has no memoryConfiguration "
                                      "(UpdateAgent with one, then PrepareAgent)")
        self.recalled: list[str] = []
        self.guard: Guard | None = None
        self.typed = False

    # -- the session ------------------------------------------------------------------------------

    def begin(self, state: dict[str, Any]) -> None:
        """Load (or start) the session, and take in this call's input: text, or the results of the actions
        the caller was given control of. A session that idled past the agent's TTL is over: it is summarized
        into memory (when it has a memoryId) and a new one begins."""
        ttl = timedelta(seconds=self.document["agent"].get("idleSessionTTLInSeconds") or DEFAULT_IDLE_TTL)
        with self.owner.db.session() as session:
            # Sessions of this agent idle past the TTL with nothing to remember are over: they go now (an inline
            # agent's, or a deleted alias's, have no other moment to).
            session.execute(delete(AgentSessionRow).where(
                AgentSessionRow.agent_id == self.who.agent_id, AgentSessionRow.memory_id.is_(None),
                AgentSessionRow.updated_at < utc_now() - ttl, AgentSessionRow.session_id != self.session_id))
            row = session.get(AgentSessionRow, (self.who.agent_id, self.session_id))
        if row is not None and row.account_id != self.caller.principal.account_id:
            raise ResourceNotFoundException(f"Session {self.session_id} does not exist")  # unreachable by design
        if row is not None and utc_now() - row.updated_at > ttl:
            self._close(row, row.updated_at + ttl)
            row = None
        if row is not None:
            if self.memory_id and row.memory_id != self.memory_id:
                raise ValidationException(f"Session {self.session_id} began with memoryId {row.memory_id}; a "
                                          "session keeps the memoryId it began with")
            self.memory_id = row.memory_id
        if self.memory_id and self.memory:
            self.owner.memory.settle(self.caller, self.model, self.who.agent_id, self.memory_id, ttl, self.memory)
            self.recalled = self.owner.memory.recall(self.caller.principal.account_id, self.who.agent_id,
                                                     self.who.alias_id or "", self.memory_id, self.memory)
        self.fresh = row is None
        self.messages = _recent(list(row.messages)) if row else []
        self.attributes = {**(row.session_attributes if row else {}), **(state.get("sessionAttributes") or {})}
        self.prompt_attributes = {**(row.prompt_attributes if row else {}),
                                  **(state.get("promptSessionAttributes") or {})}
        pending = row.pending if row else None
        results = state.get("returnControlInvocationResults")
        if results:
            if not pending or state.get("invocationId") not in (None, pending["invocationId"]):
                raise ValidationException("sessionState.returnControlInvocationResults answer no invocation this "
                                          "session is waiting for (check invocationId and sessionId)")
            self.messages.append({"role": "user", "content": self._results(results, pending)})
        else:
            if pending:
                raise ValidationException(f"The session is waiting for the results of invocation "
                                          f"{pending['invocationId']} (sessionState.returnControlInvocationResults)")
            text = self.params.get("inputText")
            if not text:
                raise ValidationException("inputText is required (or sessionState.returnControlInvocationResults)")
            self.messages.append({"role": "user", "content": [{"text": text}]})
        self.typed = not results  # this call's input is the user's words (not actions' results): guarded
        guardrail = self.document["agent"].get("guardrailConfiguration")
        if guardrail:  # resolved here, before the stream: a guardrail that is gone is a clear error
            self.guard = Guard(self.owner.guardrails, self.caller, {
                "guardrailIdentifier": guardrail["guardrailIdentifier"],
                "guardrailVersion": guardrail["guardrailVersion"]})
        self.input_text = next((block["text"] for message in reversed(self.messages) if message["role"] == "user"
                                for block in message["content"] if "text" in block), "")

    def _results(self, results: list[dict[str, Any]], pending: dict[str, Any]) -> list[dict[str, Any]]:
        uses = list(pending["toolUses"])
        if len(results) != len(uses):
            raise ValidationException(f"returnControlInvocationResults has {len(results)} results for "
                                      f"{len(uses)} invocations")
        blocks = []
        for result, use in zip(results, uses, strict=True):
            answered = result.get("functionResult") or result.get("apiResult") or {}
            body = answered.get("responseBody") or {}
            text = next((part.get("body", "") for part in body.values()), "")
            failed = answered.get("responseState") in ("FAILURE", "REPROMPT") or (
                answered.get("httpStatusCode") or 200) >= 400
            blocks.append({"toolResult": {"toolUseId": use["toolUseId"], "content": [{"text": text or "(empty)"}],
                                          **({"status": "error"} if failed else {})}})
        return blocks

    def end(self) -> None:
        with self.owner.db.session() as session:
            row = session.get(AgentSessionRow, (self.who.agent_id, self.session_id))
        if row is not None and row.account_id == self.caller.principal.account_id:
            self._close(row)

    def _close(self, row: AgentSessionRow, ended: datetime | None = None) -> None:
        """The session is over (at `ended`, now by default): kept as a summary under its memoryId (when the
        agent has memory), and gone."""
        if row.memory_id and self.memory:
            self.owner.memory.keep(self.caller, self.model, row, self.memory, ended)
            return
        with self.owner.db.session() as session:
            stale = session.get(AgentSessionRow, (row.agent_id, row.session_id))
            if stale is not None:
                session.delete(stale)

    def _save(self, pending: dict[str, Any] | None) -> None:
        with self.owner.db.session() as session:
            row = session.get(AgentSessionRow, (self.who.agent_id, self.session_id))
            if row is None:
                row = AgentSessionRow(agent_id=self.who.agent_id, session_id=self.session_id,
                                      account_id=self.caller.principal.account_id)
                session.add(row)
            if self.fresh:
                row.memory_id, row.alias_id, row.started_at = self.memory_id, self.who.alias_id, utc_now()
                self.fresh = False
            row.messages, row.session_attributes, row.prompt_attributes = self.messages, self.attributes, \
                self.prompt_attributes
            row.pending, row.updated_at = pending, utc_now()

    # -- the loop ---------------------------------------------------------------------------------

    def run(self) -> Iterator[tuple[str, dict]]:
        if self.guard is not None and self.typed:
            # The user's words are checked before the model reads them: a BLOCK answers the blocked message, and
            # the session keeps a placeholder, never the words; ANONYMIZE keeps (and sends) them masked.
            checked = self.guard.run(INPUT, [self.input_text])
            yield from self._guardrail_trace(checked)
            if checked["action"] == INTERVENED:
                blocked = checked["actionReason"] == "Guardrail blocked."
                self.input_text = BLOCKED_INPUT if blocked else checked["outputs"][0]["text"]
                self.messages[-1] = {"role": "user", "content": [{"text": self.input_text}]}
                if blocked:
                    yield from self._finish(checked["outputs"][0]["text"], checked=True)
                    return
        must_answer = False
        for _ in range(self.owner.max_steps):
            request = self._request(must_answer)
            self.step_trace_id = uuid.uuid4().hex[:16]  # every trace of this step carries it, as Bedrock's do
            # The prompt as the model read it: the Converse request (instructions, history, tools) the step sends.
            yield from self._trace({"modelInvocationInput": {
                "type": "ORCHESTRATION", "text": json.dumps({k: request[k] for k in ("system", "messages",
                                                                                     "toolConfig")}),
                "foundationModel": self.model, "promptCreationMode": "DEFAULT", "parserMode": "DEFAULT",
                "inferenceConfiguration": {"maximumLength": request["inferenceConfig"]["maxTokens"],
                                           "temperature": request["inferenceConfig"]["temperature"]}}})
            started = utc_now()
            use, cut, raw, usage = self._ask(request)
            ended = utc_now()
            yield from self._trace({"modelInvocationOutput": {"rawResponse": {"content": raw}, "metadata": {
                "startTime": started, "endTime": ended,
                "totalTimeMs": int((ended - started).total_seconds() * 1000), "usage": usage}}})
            if use is None:  # the grammar forces a call: only one cut off at MAX_TOKENS gets here
                yield from self._finish(cut or f"I could not finish this step within {self.owner.step_tokens} "
                                              "tokens.")
                return
            if use["name"] == FINAL_ANSWER:
                yield from self._finish(_until_repeat(str(use["input"].get("answer", ""))))
                return
            if (use["name"], json.dumps(use["input"], sort_keys=True)) in self._calls_this_turn():
                must_answer = True  # asked again for what it already has: it answers next
                yield from self._trace({"observation": {"type": "REPROMPT", "repromptResponse": {
                    "source": "PARSER", "text": f"{use['name']} was already called with these arguments this turn: "
                                                "the next step must answer."}}})
                continue
            self.messages.append({"role": "assistant", "content": [{"toolUse": use}]})
            tool = self.tools.get(use["name"])
            if use["name"] in self.searches:
                yield from self._search(use)
            elif tool is not None and tool.group["actionGroupExecutor"].get("customControl") == "RETURN_CONTROL":
                yield from self._return_control(use, tool)
                return
            elif tool is not None:
                yield from self._call_function(use, tool)
            else:  # not reachable through the grammar; said plainly to the model if it ever is
                self._observe(use, f"There is no tool called {use['name']}", failed=True)
        yield from self._finish(f"I could not finish this request within {self.owner.max_steps} steps.")

    def _ask(self, request: dict[str, Any]) -> tuple[dict[str, Any] | None, str, str, dict[str, int]]:
        """One step, through ConverseStream: the call the model made; or, when the step's tokens ran out first,
        none and what can be kept of a final answer it was writing (a small greedy model may repeat a
        sentence until the limit: the answer up to the first repeat is still its answer). Then what the model
        wrote (the call as JSON) and the step's token usage, for the trace."""
        use: dict[str, Any] | None = None
        fragments: list[str] = []
        stop, usage = "", {"inputTokens": 0, "outputTokens": 0}
        for name, event in self.owner.runtime.converse_stream(self.caller, self.model, request):
            if name == "contentBlockStart" and "toolUse" in event["start"]:
                use = dict(event["start"]["toolUse"])
            elif name == "contentBlockDelta" and "toolUse" in event["delta"]:
                fragments.append(event["delta"]["toolUse"]["input"])
            elif name == "messageStop":
                stop = event["stopReason"]
            elif name == "metadata":
                usage = {k: event["usage"][k] for k in ("inputTokens", "outputTokens")}
        raw = json.dumps({"name": use["name"], "input": "".join(fragments)}) if use else ""
        if use is not None:
            try:  # a call whose arguments are complete counts, even if the tokens ran out just after them
                arguments = json.loads("".join(fragments) or "{}")
            except json.JSONDecodeError:
                arguments = None
            if isinstance(arguments, dict) and (stop == "tool_use" or use["name"] != FINAL_ANSWER
                                                or "answer" in arguments):
                return {**use, "input": arguments}, "", raw, usage
        cut = _cut_answer("".join(fragments)) if use and use["name"] == FINAL_ANSWER else ""
        return None, cut, raw, usage

    def _calls_this_turn(self) -> set[tuple[str, str]]:
        """The (tool, input) pairs called since the user's last text (across returns of control)."""
        start = max((i for i, m in enumerate(self.messages) if m["role"] == "user"
                     and any("text" in block for block in m["content"])), default=0)
        return {(block["toolUse"]["name"], json.dumps(block["toolUse"]["input"], sort_keys=True))
                for message in self.messages[start:] for block in message["content"] if "toolUse" in block}

    def _request(self, must_answer: bool = False) -> dict[str, Any]:
        specs = [tool.spec() for tool in self.tools.values()]
        for kb in self.knowledge_bases:
            specs.append({"toolSpec": {"name": _search_name(kb["knowledgeBaseId"], self.knowledge_bases),
                                       "description": f"Search the knowledge base: {kb['description']}",
                                       "inputSchema": {"json": {"type": "object", "properties": {
                                           "query": {"type": "string"}}, "required": ["query"]}}}})
        specs.append({"toolSpec": {"name": FINAL_ANSWER, "description": "Answer the user and end the turn.",
                                   "inputSchema": {"json": {"type": "object", "properties": {
                                       "answer": {"type": "string", "maxLength": ANSWER_CHARACTERS}},
                                       "required": ["answer"]}}}})
        system = self.document["agent"]["instruction"] + "\n\n" + GUIDE
        if self.recalled:
            system += "\n\nSummaries of your earlier sessions with this user, oldest first:\n" + "\n".join(
                f"- {summary}" for summary in self.recalled)
        if self.prompt_attributes:
            system += "\n\n" + "\n".join(f"{k}: {v}" for k, v in sorted(self.prompt_attributes.items()))
        choice = {"tool": {"name": FINAL_ANSWER}} if must_answer else {"any": {}}
        return {"messages": self.messages, "system": [{"text": system}],
                "toolConfig": {"tools": specs, "toolChoice": choice},
                "inferenceConfig": {"maxTokens": self.owner.step_tokens, "temperature": 0}}

    def _finish(self, text: str, checked: bool = False) -> Iterator[tuple[str, dict]]:
        if self.guard is not None and not checked and text:
            result = self.guard.run(OUTPUT, [text])
            yield from self._guardrail_trace(result)
            if result["action"] == INTERVENED:
                text = result["outputs"][0]["text"]
        self.messages.append({"role": "assistant", "content": [{"text": text or "-"}]})
        yield from self._trace({"observation": {"type": "FINISH", "finalResponse": {"text": text}}})
        self._save(None)
        chunk: dict[str, Any] = {"bytes": text.encode()}
        if self.hits:
            chunk["attribution"] = {"citations": cite(text, self.hits)}
        yield "chunk", chunk
        if self.params.get("endSession"):  # after the answer: a failed summary must not take the answer with it
            try:
                self.end()
            except Exception:  # noqa: BLE001 - the session stays; it idles out and is summarized then
                log.warning("could not close session %s of agent %s", self.session_id, self.who.agent_id,
                            exc_info=True)

    def _search(self, use: dict[str, Any]) -> Iterator[tuple[str, dict]]:
        kb = self.searches[use["name"]]
        kb_id = kb["knowledgeBaseId"]
        query = str(use["input"].get("query") or "").strip() or self.input_text  # a blank query asks the question
        yield from self._trace({"invocationInput": {"invocationType": "KNOWLEDGE_BASE", "knowledgeBaseLookupInput": {
            "knowledgeBaseId": kb_id, "text": query}}})
        hits = self.owner.retrieval.search(self.caller, kb_id, query, kb.get("retrievalConfiguration"),
                                           "knowledgeBase")
        self.hits += hits
        references = [reference(h) for h in hits]
        yield from self._trace({"observation": {"type": "KNOWLEDGE_BASE", "knowledgeBaseLookupOutput": {
            "retrievedReferences": references}}})
        # The passages as they read, without "[1]"-style labels: a small model answers with the label otherwise.
        text = "\n\n".join(h.context for h in hits) or "No results."
        self._observe(use, text)

    def _return_control(self, use: dict[str, Any], tool: Tool) -> Iterator[tuple[str, dict]]:
        invocation_id = str(uuid.uuid4())
        yield from self._trace({"invocationInput": {"invocationType": "ACTION_GROUP", "actionGroupInvocationInput": {
            **self._action_input(use, tool), "executionType": "RETURN_CONTROL", "invocationId": invocation_id}}})
        self._save({"invocationId": invocation_id, "toolUses": [{"toolUseId": use["toolUseId"], "name": tool.name}]})
        if tool.function:
            member = {"functionInvocationInput": {"actionGroup": tool.group["actionGroupName"],
                                                  "function": tool.function, "parameters": _parameters(use),
                                                  "actionInvocationType": "RESULT", "agentId": self.who.agent_id}}
        else:
            member = {"apiInvocationInput": {"actionGroup": tool.group["actionGroupName"], "apiPath": tool.api_path,
                                             "httpMethod": tool.method, "actionInvocationType": "RESULT",
                                             "agentId": self.who.agent_id, **_api_arguments(use, tool)}}
        yield "returnControl", {"invocationId": invocation_id, "invocationInputs": [member]}

    def _call_function(self, use: dict[str, Any], tool: Tool) -> Iterator[tuple[str, dict]]:
        """Bedrock's Lambda event for agents, sent to the group's function; its answer is the observation."""
        yield from self._trace({"invocationInput": {"invocationType": "ACTION_GROUP", "actionGroupInvocationInput": {
            **self._action_input(use, tool), "executionType": "LAMBDA"}}})
        event: dict[str, Any] = {
            "messageVersion": "1.0", "inputText": self.input_text, "sessionId": self.session_id,
            "agent": {"name": self.who.name, "id": self.who.agent_id, "alias": self.who.alias_id or "",
                      "version": self.who.version},
            "actionGroup": tool.group["actionGroupName"], "sessionAttributes": self.attributes,
            "promptSessionAttributes": self.prompt_attributes}
        if tool.function:
            event |= {"function": tool.function, "parameters": _parameters(use)}
        else:
            event |= {"apiPath": tool.api_path, "httpMethod": tool.method, **_api_arguments(use, tool)}
        try:
            response = self.owner.functions.invoke(self.caller.principal.account_id,
                                                   tool.group["actionGroupExecutor"]["lambda"], event)
            text, failed = _function_output(response)
            self.attributes = {**self.attributes, **_strings(response.get("sessionAttributes"))}
            self.prompt_attributes = {**self.prompt_attributes, **_strings(response.get("promptSessionAttributes"))}
        except FunctionError as exc:
            text, failed = f"The action failed ({exc.kind}): {exc}", True
        except ResourceNotFoundException as exc:  # the function was deleted after the agent was prepared
            text, failed = f"The action failed: {exc.message}", True
        yield from self._trace({"observation": {"type": "ACTION_GROUP", "actionGroupInvocationOutput": {
            "text": text}}})
        self._observe(use, text, failed)

    def _action_input(self, use: dict[str, Any], tool: Tool) -> dict[str, Any]:
        out = {"actionGroupName": tool.group["actionGroupName"], "parameters": _parameters(use)}
        if tool.function:
            out["function"] = tool.function
        else:
            out |= {"apiPath": tool.api_path, "verb": tool.method}
        return out

    def _observe(self, use: dict[str, Any], text: str, failed: bool = False) -> None:
        self.messages.append({"role": "user", "content": [{"toolResult": {
            "toolUseId": use["toolUseId"], "content": [{"text": text or "(empty)"}],
            **({"status": "error"} if failed else {})}}]})

    def _trace(self, orchestration: dict[str, Any], kind: str = "orchestrationTrace") -> Iterator[tuple[str, dict]]:
        if self.trace_on:
            if kind == "orchestrationTrace":  # each part of a step's trace names the step
                for part in orchestration.values():
                    part.setdefault("traceId", self.step_trace_id)
            agent = {"agentId": self.who.agent_id, "agentAliasId": self.who.alias_id,
                     "agentVersion": self.who.version} if self.who.alias_id else {}  # an inline trace has none
            yield "trace", {**agent, "sessionId": self.session_id, "eventTime": utc_now(),
                            "trace": {kind: orchestration}}

    def _guardrail_trace(self, result: dict[str, Any]) -> Iterator[tuple[str, dict]]:
        """Bedrock's guardrailTrace: what the guardrail did (its assessments are ApplyGuardrail's, in the
        audit trail and through ApplyGuardrail; agent-runtime's assessment shapes differ, so they are not
        repeated here)."""
        yield from self._trace({"action": "INTERVENED" if result["action"] == INTERVENED else "NONE",
                                "traceId": uuid.uuid4().hex[:16]}, "guardrailTrace")


def _cut_answer(partial: str) -> str:
    """The text of a final answer whose call was cut off: the JSON string so far, its sentences up to the first
    one said twice."""
    match = re.match(r'\s*\{\s*"answer"\s*:\s*"((?:[^"\\]|\\.)*)', partial)
    if not match:
        return ""
    try:
        text = json.loads(f'"{match.group(1)}"')
    except json.JSONDecodeError:  # cut inside an escape
        text = json.loads(f'"{match.group(1).rsplit(chr(92), 1)[0]}"')
    return _until_repeat(text)


def _until_repeat(text: str) -> str:
    """`text` up to the first sentence it says a second time: a small greedy model may loop on a sentence until
    its tokens run out ("I am a shop assistant. I am a shop assistant. ..."); what came before is its answer."""
    kept: list[str] = []
    for sentence in re.split(r"(?<=[.!?])\s+", text.strip()):
        if sentence in kept:
            break
        kept.append(sentence)
    return " ".join(kept)


def _unread(location: dict[str, Any]) -> bytes:
    """A running agent's OpenAPI documents were read from S3 when it was prepared (service.SCHEMA_TEXT)."""
    raise ValidationException("The agent's apiSchema in S3 was not read when it was prepared: prepare it again")


def _search_name(kb_id: str, knowledge_bases: list[dict[str, Any]]) -> str:
    return SEARCH if len(knowledge_bases) == 1 else f"{SEARCH}_{kb_id.lower()}"


def _parameters(use: dict[str, Any]) -> list[dict[str, str]]:
    """Bedrock's parameters list: every value as text, with its JSON type."""
    out = []
    for name, value in use["input"].items():
        kind = {bool: "boolean", int: "integer", float: "number", list: "array"}.get(type(value), "string")
        out.append({"name": name, "type": kind, "value": value if isinstance(value, str) else json.dumps(value)})
    return out


def _api_arguments(use: dict[str, Any], tool: Tool) -> dict[str, Any]:
    body = [p for p in _parameters(use) if p["name"] in tool.body_params]
    out: dict[str, Any] = {"parameters": [p for p in _parameters(use) if p["name"] not in tool.body_params]}
    if body:
        out["requestBody"] = {"content": {"application/json": {"properties": body}}}
    return out


def _function_output(response: dict[str, Any]) -> tuple[str, bool]:
    """The text of a function's answer in Bedrock's agent Lambda response shape, and whether it failed; a
    function that answers in another shape has failed, and the model is told how."""
    answer = response.get("response")
    if isinstance(answer, dict) and isinstance(answer.get("functionResponse"), dict):
        answer = answer["functionResponse"]
    body = answer.get("responseBody") if isinstance(answer, dict) else None
    text = next((part.get("body") for part in body.values() if isinstance(part, dict)), None) \
        if isinstance(body, dict) else None
    if text is None:
        return f"The action answered without a responseBody: {json.dumps(response)[:500]}", True
    failed = answer.get("responseState") in ("FAILURE", "REPROMPT") or (
        isinstance(answer.get("httpStatusCode"), int) and answer["httpStatusCode"] >= 400)
    return str(text), failed


def _strings(attributes: Any) -> dict[str, str]:
    """Session attributes from a function's answer: strings to strings, anything else left out."""
    if not isinstance(attributes, dict):
        return {}
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in attributes.items()}


def _recent(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The session's last SESSION_TURNS user turns (a turn starts at a user message with text)."""
    starts = [i for i, m in enumerate(messages) if m["role"] == "user" and any("text" in b for b in m["content"])]
    return messages[starts[-SESSION_TURNS]:] if len(starts) > SESSION_TURNS else messages

