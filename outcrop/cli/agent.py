"""`outcrop agent`: Bedrock Agents from the command line: make one from a few flags, talk to it, watch it work.

An agent on Bedrock takes four or five calls to set up (CreateAgent, an action group per tool set, a knowledge
base association, PrepareAgent) and an event stream to talk to; trying an idea should not need a script for
each. `create` does the whole setup from a function schema or OpenAPI file and prints the agent id; `invoke`
prints the answer as it arrives and, with `--trace`, one readable line per step the agent takes. When the
agent hands control back (an action group with `customControl: RETURN_CONTROL`), this command is the caller
that holds it: it shows the requested call, takes the result from `--result` or a prompt, and sends it back,
which is the loop an application writes, here without writing it. Like `outcrop kb`, every call is a plain
boto3 client (bedrock-agent, bedrock-agent-runtime) of a running `outcrop serve`, so the CLI does only what
any Bedrock application can.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from outcrop.cli.chat import ENDPOINT_ENV, Fatal, make_client, run_client
from outcrop.cli.kb import DEFAULT_CHAT_MODEL, cited, resolve, snippet

#: The alias every agent has: the DRAFT as last prepared, which is what one tries while building an agent.
TEST_ALIAS = "TSTALIASID"
#: The name of the action group `create` makes; one group is what a person with one schema file means.
ACTION_GROUP = "actions"
#: Where a bare function name is looked up: the account's Lambda ARN, as Bedrock expects in an action group.
FUNCTION_ARN = "arn:aws:lambda:{region}:{account}:function:{name}"
#: A small model can ask for the same action over and over; past this many hand-backs in one turn, stop.
MAX_HANDBACKS = 10
#: How much of a trace value one line shows: enough to follow the agent, short enough to scan.
TRACE_WIDTH = 200
POLL_SECONDS = 1.0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    client = argparse.ArgumentParser(add_help=False, parents=[common])
    client.add_argument("--endpoint-url", default=None,
                        help=f"the Outcrop server (default: ${ENDPOINT_ENV}, else http://127.0.0.1:8600)")

    parser = sub.add_parser("agent", help="agents: create, prepare, alias, invoke (with traces), list")
    commands = parser.add_subparsers(dest="agent_command", required=True, metavar="SUBCOMMAND")

    def command(name: str, func, help_text: str) -> argparse.ArgumentParser:
        # The options go on each leaf so that `--data-dir` may come after the arguments, as users type it.
        leaf = commands.add_parser(name, parents=[client], help=help_text, description=help_text)
        leaf.set_defaults(func=lambda args: run_client(func, args))
        return leaf

    create = command("create", _create, "create an agent, its action group and knowledge base, and prepare it "
                                        "(prints its id)")
    create.add_argument("name", help="the agent's name (letters, digits, - and _)")
    create.add_argument("--model", default=DEFAULT_CHAT_MODEL, metavar="ID",
                        help=f"the model that runs the agent, an id or ARN (default {DEFAULT_CHAT_MODEL})")
    create.add_argument("--instruction", required=True, metavar="TEXT", help="what the agent does and how")
    create.add_argument("--description", default=None)
    create.add_argument("--idle-ttl", type=int, default=None, metavar="SECONDS",
                        help="forget a session idle this long (default: the server's, 600)")
    schema = create.add_mutually_exclusive_group()
    schema.add_argument("--functions", metavar="FILE.json",
                        help="the actions, as Bedrock's functionSchema: {\"functions\": [{\"name\": ..., "
                             "\"parameters\": {...}}]}")
    schema.add_argument("--openapi", metavar="FILE", help="the actions, as an OpenAPI 3 document (JSON or YAML)")
    executor = create.add_mutually_exclusive_group()
    executor.add_argument("--return-control", action="store_true",
                          help="the actions are carried out by the caller (`agent invoke` asks for the results)")
    executor.add_argument("--function", metavar="ARN|NAME",
                          help="the function that carries out the actions (`outcrop functions register`)")
    create.add_argument("--memory-days", type=int, default=None, metavar="DAYS",
                        help="remember ended sessions as summaries for DAYS (1-365; invoke with --memory-id)")
    create.add_argument("--knowledge-base", metavar="KB", help="a knowledge base (id or name) the agent may search")
    create.add_argument("--kb-description", metavar="TEXT",
                        help="when the agent should search it (required with --knowledge-base)")

    prepare = command("prepare", _prepare, "prepare the agent's DRAFT, which the test alias TSTALIASID runs")
    prepare.add_argument("agent", metavar="AGENT", help="the agent's id or name")

    alias = command("alias", _alias, "an alias on a new version of the agent, or on --version (prints its id)")
    alias.add_argument("agent", metavar="AGENT", help="the agent's id or name")
    alias.add_argument("alias_name", metavar="NAME", help="the alias's name")
    alias.add_argument("--version", default=None, metavar="N",
                       help="route the alias to this version (default: a new version of the prepared DRAFT)")

    invoke = command("invoke", _invoke, "ask the agent; prints the answer, and with --trace each step on stderr")
    invoke.add_argument("agent", metavar="AGENT", help="the agent's id or name")
    invoke.add_argument("text", metavar="TEXT", help="what to ask")
    invoke.add_argument("--alias", default=TEST_ALIAS, metavar="ALIAS",
                        help=f"the alias's id or name (default {TEST_ALIAS}: the prepared DRAFT)")
    invoke.add_argument("--session", default=None, metavar="ID",
                        help="continue a conversation (the id printed on stderr; default: a new one)")
    invoke.add_argument("--memory-id", default=None, metavar="ID",
                        help="whose memory the session joins (the agent was created with --memory-days)")
    invoke.add_argument("--trace", action="store_true", help="print each step of the agent on stderr")
    invoke.add_argument("--end-session", action="store_true", help="end the session after this answer")
    invoke.add_argument("--result", action="append", default=[], metavar="TEXT",
                        help="the result of an action the agent hands back (RETURN_CONTROL), used in order; "
                             "the last one answers any further request; without it a terminal is prompted")

    command("list", _list, "agents: id, name, status, latest version, last update")


# -- shared ----------------------------------------------------------------------------------------

def resolve_agent(agent, name: str) -> dict[str, Any]:
    """The summary of the agent whose id or name is `name`: the API takes ids, people remember names."""
    summaries = [s for page in agent.get_paginator("list_agents").paginate() for s in page["agentSummaries"]]
    found = next((s for s in summaries if s["agentId"] == name), None) or \
        next((s for s in summaries if s["agentName"] == name), None)
    if found is None:
        raise Fatal(f"no agent with the id or name {name} (`outcrop agent list` shows them)")
    return found


def _note(message: str) -> None:
    """What a person reads and a script does not capture: stdout keeps the one value scripts want."""
    print(message, file=sys.stderr, flush=True)


def prepare_and_wait(agent, agent_id: str) -> dict[str, Any]:
    """PrepareAgent, then wait while the agent is PREPARING (Bedrock prepares in the background)."""
    status = agent.prepare_agent(agentId=agent_id)["agentStatus"]
    described: dict[str, Any] = {"agentStatus": status}
    while status == "PREPARING":
        time.sleep(POLL_SECONDS)
        described = agent.get_agent(agentId=agent_id)["agent"]
        status = described["agentStatus"]
    if status == "FAILED":
        reasons = "; ".join(described.get("failureReasons") or []) or "no reason given"
        raise Fatal(f"preparing agent {agent_id} failed: {reasons}")
    return described


# -- create ----------------------------------------------------------------------------------------

def _create(args: argparse.Namespace) -> int:
    # Everything that can be wrong locally is checked before the agent exists, so a typo leaves nothing behind.
    group = action_group_schema(args)
    if group and not (args.return_control or args.function):
        raise Fatal("--functions and --openapi need who carries the actions out: --return-control (the caller) "
                    "or --function ARN|NAME")
    if not group and (args.return_control or args.function):
        raise Fatal("--return-control and --function need the actions: --functions FILE.json or --openapi FILE")
    if bool(args.knowledge_base) != bool(args.kb_description):
        raise Fatal("--knowledge-base and --kb-description go together (the description tells the agent when "
                    "to search it)")
    agent = make_client(args, "bedrock-agent")
    kb = resolve(agent, args.knowledge_base) if args.knowledge_base else None

    request: dict[str, Any] = {"agentName": args.name, "foundationModel": args.model,
                               "instruction": args.instruction}
    if args.description:
        request["description"] = args.description
    if args.idle_ttl is not None:
        request["idleSessionTTLInSeconds"] = args.idle_ttl
    if args.memory_days is not None:
        request["memoryConfiguration"] = {"enabledMemoryTypes": ["SESSION_SUMMARY"], "storageDays": args.memory_days}
    created = agent.create_agent(**request)["agent"]
    agent_id = created["agentId"]
    try:
        if group:
            executor = {"customControl": "RETURN_CONTROL"} if args.return_control else \
                {"lambda": function_arn(args.function, created["agentArn"])}
            agent.create_agent_action_group(agentId=agent_id, agentVersion="DRAFT", actionGroupName=ACTION_GROUP,
                                            actionGroupExecutor=executor, **group)
            _note(f"action group {ACTION_GROUP}: {', '.join(action_names(group))}, carried out by "
                  f"{'the caller (return of control)' if args.return_control else executor['lambda']}")
        if kb:
            agent.associate_agent_knowledge_base(agentId=agent_id, agentVersion="DRAFT",
                                                 knowledgeBaseId=kb["knowledgeBaseId"],
                                                 description=args.kb_description)
            _note(f"knowledge base {kb['name']} ({kb['knowledgeBaseId']})")
        prepare_and_wait(agent, agent_id)
    except Exception:
        # A half-made agent is no use, and its name would block the corrected retry; the error that says what
        # went wrong is the one to show, not a failure of this clean-up.
        with contextlib.suppress(Exception):
            agent.delete_agent(agentId=agent_id, skipResourceInUseCheck=True)
        raise
    _note(f"agent {args.name}: {agent_id}, prepared")
    _note(f"next: outcrop agent invoke {args.name} \"...\" --trace")
    print(agent_id)
    return 0


def action_group_schema(args: argparse.Namespace) -> dict[str, Any] | None:
    """The functionSchema or apiSchema member of CreateAgentActionGroup, from the file the flags name."""
    if args.functions:
        try:
            schema = json.loads(_read(args.functions))
        except ValueError as exc:
            raise Fatal(f"--functions {args.functions} is not JSON: {exc}") from None
        if isinstance(schema, list):  # the list alone is what people write first; it means the same
            schema = {"functions": schema}
        if not isinstance(schema, dict) or not isinstance(schema.get("functions"), list):
            raise Fatal(f"--functions {args.functions} must hold {{\"functions\": [...]}} (Bedrock's functionSchema)")
        return {"functionSchema": {"functions": schema["functions"]}}
    if args.openapi:
        # Sent as written: Bedrock takes the document inline, JSON or YAML, and says itself what is wrong with it.
        return {"apiSchema": {"payload": _read(args.openapi)}}
    return None


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise Fatal(f"cannot read {path}: {exc.strerror or exc}") from None


def function_arn(function: str, agent_arn: str) -> str:
    """A function's Lambda ARN; a bare name is the caller's own function, in the agent's region and account
    (read from the agent's ARN, arn:aws:bedrock:REGION:ACCOUNT:agent/ID, so no other call is needed)."""
    if function.startswith("arn:"):
        return function
    _, _, _, region, account, _ = agent_arn.split(":", 5)
    return FUNCTION_ARN.format(region=region, account=account, name=function)


def action_names(group: dict[str, Any]) -> list[str]:
    if "functionSchema" in group:
        return [f.get("name", "?") for f in group["functionSchema"]["functions"]]
    return ["the OpenAPI operations"]


# -- prepare, alias, list --------------------------------------------------------------------------

def _prepare(args: argparse.Namespace) -> int:
    agent = make_client(args, "bedrock-agent")
    found = resolve_agent(agent, args.agent)
    prepare_and_wait(agent, found["agentId"])
    print(f"{found['agentName']}: PREPARED")
    return 0


def _alias(args: argparse.Namespace) -> int:
    agent = make_client(args, "bedrock-agent")
    found = resolve_agent(agent, args.agent)
    request: dict[str, Any] = {"agentId": found["agentId"], "agentAliasName": args.alias_name}
    if args.version:
        request["routingConfiguration"] = [{"agentVersion": args.version}]
    alias = agent.create_agent_alias(**request)["agentAlias"]
    versions = ", ".join(r.get("agentVersion", "?") for r in alias.get("routingConfiguration") or []) or "?"
    _note(f"alias {args.alias_name} of {found['agentName']}: version {versions}, {alias['agentAliasStatus']}")
    print(alias["agentAliasId"])
    return 0


def _list(args: argparse.Namespace) -> int:
    agent = make_client(args, "bedrock-agent")
    for page in agent.get_paginator("list_agents").paginate():
        for summary in page["agentSummaries"]:
            print(f"{summary['agentId']}  {summary['agentName']:<30}  {summary['agentStatus']:<14}  "
                  f"{summary.get('latestAgentVersion') or '-':<6}  "
                  f"{summary['updatedAt'].astimezone():%Y-%m-%d %H:%M:%S}")
    return 0


# -- invoke ----------------------------------------------------------------------------------------

def _invoke(args: argparse.Namespace) -> int:
    agent = make_client(args, "bedrock-agent")
    runtime = make_client(args, "bedrock-agent-runtime")
    agent_id = resolve_agent(agent, args.agent)["agentId"]
    alias_id = resolve_alias(agent, agent_id, args.alias)
    session = args.session or str(uuid.uuid4())
    _note(f"session: {session}")
    request: dict[str, Any] = {"agentId": agent_id, "agentAliasId": alias_id, "sessionId": session,
                               "inputText": args.text, "enableTrace": args.trace, "endSession": args.end_session}
    if args.memory_id:
        request["memoryId"] = args.memory_id
    results = Results(args.result)
    tracer = Tracer() if args.trace else None
    handbacks = 0
    while True:
        turn = run_turn(runtime, request, tracer)
        if turn.control is None:
            break
        handbacks += 1
        if handbacks > MAX_HANDBACKS:
            raise Fatal(f"the agent handed control back {handbacks} times without answering; the session "
                        f"{session} still waits for a result")
        # The agent waits for the results of the calls it handed back; the next call carries them, not text.
        request = {key: value for key, value in request.items() if key != "inputText"}
        request["sessionState"] = {"invocationId": turn.control["invocationId"],
                                   "returnControlInvocationResults": [
                                       invocation_result(i, results) for i in turn.control["invocationInputs"]]}
    if turn.sources:
        print()  # the answer, a blank line, its sources
    for number, uri in enumerate(turn.sources, 1):
        print(f"[{number}] {uri}")
    if not turn.answered:
        _note("(the agent gave no answer)")
    return 0


def resolve_alias(agent, agent_id: str, alias: str) -> str:
    """The id of the alias whose id or name is `alias`; the test alias needs no look-up."""
    if alias == TEST_ALIAS:
        return alias
    summaries = [s for page in agent.get_paginator("list_agent_aliases").paginate(agentId=agent_id)
                 for s in page["agentAliasSummaries"]]
    found = next((s for s in summaries if s["agentAliasId"] == alias), None) or \
        next((s for s in summaries if s["agentAliasName"] == alias), None)
    if found is None:
        raise Fatal(f"the agent has no alias with the id or name {alias}")
    return found["agentAliasId"]


class Turn:
    """What one InvokeAgent stream came to: an answer (and its sources), or a hand-back of control."""

    def __init__(self) -> None:
        self.answered = False
        self.sources: list[str] = []
        self.control: dict[str, Any] | None = None


def run_turn(runtime, request: dict[str, Any], tracer: Tracer | None) -> Turn:
    """One InvokeAgent call: print the answer as it arrives and each trace on stderr; keep the sources and any
    returnControl. Ctrl-C stops the answer (closing the stream drops the connection; the server stops)."""
    turn = Turn()
    stream = runtime.invoke_agent(**request)["completion"]
    try:
        for event in stream:
            if "trace" in event and tracer is not None:
                tracer.show(event["trace"].get("trace") or {})
            if "chunk" in event:
                text = event["chunk"].get("bytes", b"").decode("utf-8", "replace")
                sys.stdout.write(text)
                sys.stdout.flush()
                turn.answered = turn.answered or bool(text)
                for citation in (event["chunk"].get("attribution") or {}).get("citations") or []:
                    for uri in cited(citation):
                        if uri not in turn.sources:
                            turn.sources.append(uri)
            if "returnControl" in event:
                turn.control = event["returnControl"]
    except KeyboardInterrupt:
        stream.close()
        print()
        _note("(answer stopped)")
        raise
    if tracer is not None:
        tracer.flush()
    if turn.answered:
        print()
    return turn


# -- return of control -----------------------------------------------------------------------------

class Results:
    """Where the results of handed-back calls come from: the --result values in order, then a prompt on a
    terminal; a script gets the last --result again, as a fixed function would answer the same call."""

    def __init__(self, given: list[str]) -> None:
        self.given = list(given)
        self.used = 0

    def next(self, call: str) -> str:
        if self.used < len(self.given):
            self.used += 1
            return self.given[self.used - 1]
        if sys.stdin.isatty():
            print(f"result of {call}> ", end="", file=sys.stderr, flush=True)
            try:
                return input()
            except EOFError:
                raise Fatal(f"no result for {call}") from None
        if self.given:
            _note("(answering with the last --result again)")
            return self.given[-1]
        raise Fatal(f"the agent hands back {call} for the caller to carry out: give its result with --result TEXT")


def invocation_result(invocation: dict[str, Any], results: Results) -> dict[str, Any]:
    """Show one handed-back call, get its result, and wrap it as Bedrock's functionResult or apiResult."""
    if "functionInvocationInput" in invocation:
        call = invocation["functionInvocationInput"]
        shown = f"{call.get('actionGroup')}.{call.get('function')}({arguments(call.get('parameters'))})"
        _note(f"[return control] {shown}")
        return {"functionResult": {"actionGroup": call["actionGroup"], "function": call.get("function"),
                                   "responseBody": {"TEXT": {"body": results.next(shown)}}}}
    call = invocation.get("apiInvocationInput") or {}
    body = ((call.get("requestBody") or {}).get("content") or {}).get("application/json") or {}
    parameters = arguments((call.get("parameters") or []) + (body.get("properties") or []))
    shown = f"{call.get('actionGroup')}: {call.get('httpMethod')} {call.get('apiPath')}({parameters})"
    _note(f"[return control] {shown}")
    return {"apiResult": {"actionGroup": call.get("actionGroup"), "apiPath": call.get("apiPath"),
                          "httpMethod": call.get("httpMethod"),
                          "responseBody": {"application/json": {"body": results.next(shown)}}}}


def arguments(parameters: list[dict[str, Any]] | None) -> str:
    """Bedrock's [{name, type, value}] as a call's arguments, `city=Paris, days=3`."""
    return ", ".join(f"{p.get('name')}={p.get('value')}" for p in parameters or [])


# -- traces ----------------------------------------------------------------------------------------

class Tracer:
    """Bedrock's trace events, a line or two per step on stderr. A knowledge base search arrives as two
    events (the query, then the passages); it is shown as one line once both are in."""

    def __init__(self) -> None:
        self.step = 0
        self.search: dict[str, Any] | None = None

    def show(self, trace: dict[str, Any]) -> None:
        if "orchestrationTrace" in trace:
            self.orchestration(trace["orchestrationTrace"])
        elif "failureTrace" in trace:
            self.line("failure", trace["failureTrace"].get("failureReason"))
        elif "guardrailTrace" in trace:
            self.line("guardrail", trace["guardrailTrace"].get("action"))
        else:
            for kind in ("preProcessingTrace", "postProcessingTrace", "routingClassifierTrace",
                         "customOrchestrationTrace"):
                if kind in trace:
                    self.line(kind.removesuffix("Trace"), json.dumps(trace[kind], default=str))

    def orchestration(self, trace: dict[str, Any]) -> None:
        if "modelInvocationInput" in trace:
            self.flush()
            self.step += 1
            self.line(f"step {self.step}", _model_text(trace["modelInvocationInput"].get("text")))
        if "modelInvocationOutput" in trace:
            usage = ((trace["modelInvocationOutput"].get("metadata") or {}).get("usage") or {})
            raw = (trace["modelInvocationOutput"].get("rawResponse") or {}).get("content") or ""
            self.line("model output", f"{raw} ({usage.get('inputTokens', '?')} in, "
                                      f"{usage.get('outputTokens', '?')} out)")
        if "rationale" in trace:
            self.line("rationale", trace["rationale"].get("text"))
        if "invocationInput" in trace:
            self.invocation(trace["invocationInput"])
        if "observation" in trace:
            self.observation(trace["observation"])

    def invocation(self, invocation: dict[str, Any]) -> None:
        if "actionGroupInvocationInput" in invocation:
            call = invocation["actionGroupInvocationInput"]
            body = ((call.get("requestBody") or {}).get("content") or {}).get("application/json") or []
            parameters = (call.get("parameters") or []) + (body if isinstance(body, list) else [])
            target = call.get("function") or f"{call.get('verb', '').upper()} {call.get('apiPath')}".strip()
            handed = " (handed back to the caller)" if call.get("executionType") == "RETURN_CONTROL" else ""
            self.line("action", f"{call.get('actionGroupName')}.{target}({arguments(parameters)}){handed}")
        elif "knowledgeBaseLookupInput" in invocation:
            self.flush()
            self.search = invocation["knowledgeBaseLookupInput"]
        else:
            self.line("invocation", json.dumps(invocation, default=str))

    def observation(self, observation: dict[str, Any]) -> None:
        if "knowledgeBaseLookupOutput" in observation:
            references = observation["knowledgeBaseLookupOutput"].get("retrievedReferences") or []
            search, self.search = self.search or {}, None
            passages = f"{len(references)} passage{'' if len(references) == 1 else 's'}"
            self.line("knowledge base", f"{search.get('knowledgeBaseId', '?')}: {search.get('text', '?')!r} -> "
                                        f"{passages}")
        elif "finalResponse" in observation:
            self.line("final", observation["finalResponse"].get("text"))
        elif "actionGroupInvocationOutput" in observation:
            self.line("observation", observation["actionGroupInvocationOutput"].get("text"))
        elif "repromptResponse" in observation:
            self.line("reprompt", observation["repromptResponse"].get("text"))
        else:
            self.line("observation", json.dumps(observation, default=str))

    def flush(self) -> None:
        """A search whose passages never came (the stream ended or moved on) is still shown."""
        if self.search is not None:
            search, self.search = self.search, None
            self.line("knowledge base", f"{search.get('knowledgeBaseId', '?')}: {search.get('text', '?')!r}")

    @staticmethod
    def line(label: str, text: Any) -> None:
        _note(f"[{label}] {snippet(str(text if text is not None else ''), TRACE_WIDTH)}")


def _model_text(text: str | None) -> str:
    """The prompt of a step, often a JSON string itself: shown as the text it stands for. Its end is what
    is new at this step (the instruction comes first and is the same every time), so the line shows the end."""
    if text and text.startswith('"'):
        with contextlib.suppress(ValueError):
            text = json.loads(text)
    flat = " ".join((text or "").split())
    prefix = f"model input ({len(flat)} chars): "
    room = TRACE_WIDTH - len(prefix) - 3  # the line is cut at TRACE_WIDTH: the tail must fit after the prefix
    return prefix + (flat if len(flat) <= room + 3 else "..." + flat[-room:].lstrip())
