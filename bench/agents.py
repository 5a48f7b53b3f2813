#!/usr/bin/env python
"""Agents: InvokeAgent against a LangChain tool-calling agent on the same model, the same tools, the same server.

50 scripted tasks (`--tasks`) over a small tool set, each with the tools it needs and an answer that can be
checked (a number, or a word that must appear in the final answer): 14 arithmetic questions (`calculator`),
12 lookups in a fixed table of capitals and product prices (`lookup`), 13 questions about a made-up outdoor
shop answered by a knowledge base, 4 that need a lookup and then arithmetic (the price of 3 rain jackets),
and 7 that need no tool. The kinds take turns, so any `--tasks` count draws from all of them.

The tools are plain Python functions in this script. `calculator(expression)` evaluates arithmetic (`^`, `%`
and the words times/plus/minus/divided by are read too), `lookup(name)` reads a table, and the knowledge
base is 6 short documents written here, put in a bucket of Outcrop's object store and ingested (S3 data
source, the built-in MiniLM embedding model, as bench/knowledge.py does).

* Outcrop: a real `outcrop serve` (a temporary data dir). The two functions are served by an HTTP endpoint
  this script runs on loopback, registered with `outcrop functions register --url`, and are one action
  group (functionSchema, Lambda executor) of an agent per model, with the knowledge base associated. Each
  task is one InvokeAgent (enableTrace, a new session, the test alias). The server's loop (agents/
  orchestration.py): every step is Converse with toolChoice any over the actions, `search_knowledge_base`
  and `final_answer`, greedy, at most MAX_TOKENS tokens, at most `agent_max_steps` steps. Read from the
  traces: steps (modelInvocationInput), action calls (invocationInput: the action's parameters, turned back
  into JSON by their declared type, or the knowledge base's query), the final answer (the chunk). A step cut
  off before its call (the turn ends with "could not finish this step") counts as an invalid call.
* LangChain, as its documentation writes an agent: `langchain_aws.ChatBedrockConverse` on the same model id
  pointed at the same server (temperature 0, the same max tokens per step), `create_tool_calling_agent` +
  `AgentExecutor` (langchain-classic; max_iterations = agent_max_steps, so at most as many model calls),
  the same two functions as StructuredTools with the same descriptions, and `search_knowledge_base` calling
  Outcrop's Retrieve (5 results, as the agent's search), so both sides search the same store. LangChain
  offers no tool choice for these providers (huggingface, local): it sends toolChoice auto, and a plain text
  answer ends the run. Every model call is recorded by a callback: steps, tool calls, invalid tool calls
  (LangChain could not parse the arguments), stopReason.

A call is valid when it names one of the three tools and its arguments validate (jsonschema) against the
tool's declared parameters, closed (no others). A run is valid when all its calls are, no step was cut off
at max tokens before its call (LangChain: stopReason max_tokens and nothing readable), and it did not end in
an error. Success: the expected answer is in the final answer. Seconds per task: the wall time of one
InvokeAgent (its stream read to the end) or one AgentExecutor.invoke, sequential; the two sides take
turns going first, task by task, after one untimed warm-up task each. Goals: 100% valid runs on Outcrop
for both models (the tool-use grammar makes every step a call), and a ratio (LangChain / Outcrop seconds
per task) that says what the server-side loop costs or saves.

The models: SmolLM2-135M-Instruct (the built-in chat model, the main one) and a tiny random Llama
(tests/helpers.py, 4,096-token context, registered with `outcrop models register`), which writes nothing
meaningful: its valid calls are the grammar's doing, and its successes are chance.

    .venv/bin/python bench/agents.py [--tasks 50] [--models smollm2,tiny] [--cache-dir DIR] [--json out.json]

Printed: the machine's load before and after, a table per model, the CPU time other processes took while
each model ran (the busiest of those alive at its end; and machine-wide, /proc/stat less this benchmark's
own, which also counts processes that came and went; a warning when it is noticeable), then the lines
`valid <model> outcrop X% langchain Y%` and last `ratio <LangChain / Outcrop seconds per task>` for SmolLM2
(or the first model asked for). The server's model cache (the GGUF conversion) and the tiny model are kept
in `--cache-dir`. Most of a run is SmolLM2's steps, each up to 300 tokens: with both models, 50 tasks take
about 19 minutes on 2 quiet cores (52 while a test suite shared them).
"""

from __future__ import annotations

import argparse
import ast
import json
import operator
import os
import re
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from knowledge import OtherCpu, client, ingest, machine_state, other_report, outcrop_cli  # noqa: E402
from serve_throughput import MODEL_ID as SMOLLM2_ID  # noqa: E402
from serve_throughput import free_port, percentile, root_key, start_server, stop_server, wait_until_ready  # noqa: E402
from tool_calls import machine_busy_s, validates  # noqa: E402

from outcrop.agents.orchestration import MAX_TOKENS  # noqa: E402
from outcrop.platform.config import Settings  # noqa: E402

TEST_ALIAS = "TSTALIASID"
INSTRUCTION = ("You are the assistant of Fjellvind Outfitters, an outdoor shop. Use the calculator for arithmetic, "
               "lookup for capital cities and product prices, and the knowledge base for the shop's policies and "
               "facts. Answer briefly.")
#: LangChain's agent is told the same; it ends a run with a plain answer instead of a final_answer call.
LANGCHAIN_GUIDE = ("Work step by step. Call one of the tools when you need an action or information. When you can "
                   "answer the user, answer in plain text.")
KB_DESCRIPTION = "the shop's policies: returns, shipping, warranty, the head office, the loyalty club, its history"

# -- the tools ------------------------------------------------------------------------------------------

#: The action group's functions, as Bedrock's functionSchema declares them.
FUNCTIONS = [
    {"name": "calculator", "description": "Evaluate an arithmetic expression, such as 12 * (3 + 4), and return the "
                                          "number.",
     "parameters": {"expression": {"type": "string", "description": "the arithmetic expression", "required": True}}},
    {"name": "lookup", "description": "Look up a fact in the shop's table: the capital city of a country, or the "
                                      "price of a product.",
     "parameters": {"name": {"type": "string", "description": "a country or a product", "required": True}}},
]
SEARCH = "search_knowledge_base"
SEARCH_DESCRIPTION = f"Search the knowledge base: {KB_DESCRIPTION}"


def declared_schema(parameters: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A function's declared parameters as a closed JSON schema: what a valid call's arguments must match."""
    return {"type": "object", "properties": {k: {"type": v["type"]} for k, v in parameters.items()},
            "required": [k for k, v in parameters.items() if v.get("required")], "additionalProperties": False}


SCHEMAS = {f["name"]: declared_schema(f["parameters"]) for f in FUNCTIONS}
SCHEMAS[SEARCH] = declared_schema({"query": {"type": "string", "required": True}})

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.Pow: operator.pow, ast.Mod: operator.mod, ast.FloorDiv: operator.floordiv}
_WORDS = [(r"\bdivided by\b", "/"), (r"\btimes\b", "*"), (r"\bplus\b", "+"), (r"\bminus\b", "-"),
          (r"(\d+(?:\.\d+)?)\s*%\s*(?:of\b)?", r"(\1/100)*"), (r"(?<=\d),(?=\d{3}\b)", ""), (r"\^", "**"),
          ("×", "*"), ("÷", "/")]


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 64:
            raise ValueError("exponent too large")
        return _OPS[type(node.op)](left, right)
    raise ValueError(f"{type(node).__name__} is not arithmetic")


def calculator(expression: str) -> str:
    text = str(expression).strip().rstrip("=?").strip()
    for pattern, replacement in _WORDS:
        text = re.sub(pattern, replacement, text)
    text = text.rstrip("* ")
    try:
        value = _evaluate(ast.parse(text, mode="eval"))
    except (SyntaxError, ValueError, TypeError, ZeroDivisionError, OverflowError) as exc:
        return f"Error: {expression!r} is not an arithmetic expression ({exc})."
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(round(value, 6) if isinstance(value, float) else value)


CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Kenya": "Nairobi", "Peru": "Lima", "Norway": "Oslo",
            "Canada": "Ottawa", "Australia": "Canberra", "Egypt": "Cairo"}
PRICES = {"trail tent": 249, "hiking boots": 139, "rain jacket": 89, "sleeping bag": 119, "headlamp": 27,
          "water filter": 45, "camp stove": 64}
TABLE = {**{k.lower(): f"The capital of {k} is {v}." for k, v in CAPITALS.items()},
         **{k: f"The {k} costs {v} dollars." for k, v in PRICES.items()}}


def lookup(name: str) -> str:
    key = re.sub(r"\s+", " ", str(name).lower()).strip()
    for entry, fact in TABLE.items():
        if entry in key or (len(key) >= 3 and key in entry) or entry.rstrip("s") in key:
            return fact
    return f"No entry for {name!r}. The table has: {', '.join(TABLE)}."


ACTIONS = {"calculator": calculator, "lookup": lookup}


def act(name: str, arguments: dict[str, Any]) -> str:
    """One action, as both sides run it; a bad call is the model's to read, not a crash."""
    try:
        return ACTIONS[name](**arguments)
    except (KeyError, TypeError) as exc:
        return f"Error: {name} cannot take {json.dumps(arguments)} ({exc})."


class _FunctionHandler(BaseHTTPRequestHandler):
    """The Outcrop function: Bedrock's agent Lambda event in, Bedrock's function response out."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        event = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        arguments = {p["name"]: p["value"] for p in event.get("parameters") or []}
        answer = {"messageVersion": "1.0", "response": {
            "actionGroup": event.get("actionGroup"), "function": event.get("function"),
            "functionResponse": {"responseBody": {"TEXT": {"body": act(event.get("function", ""), arguments)}}}}}
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:  # quiet
        pass


def serve_functions() -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FunctionHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# -- the knowledge base -----------------------------------------------------------------------------------

DOCUMENTS = {
    "returns.txt": "Returns policy. Customers may return any unused item within 45 days of delivery for a full "
                   "refund. Sale items can be exchanged but not refunded. Refunds reach the customer's card within "
                   "6 business days.",
    "shipping.txt": "Shipping. Standard delivery takes 5 business days. Express delivery arrives within 36 hours and "
                    "costs 12 dollars. Orders above 85 dollars ship for free with standard delivery.",
    "warranty.txt": "Warranty. Every trail tent carries a 7-year warranty against defects. Backpacks have a lifetime "
                    "warranty. Stoves and headlamps are covered for 2 years.",
    "office.txt": "The head office of Fjellvind Outfitters is in Bergen, Norway. It opens at 8 am and closes at 6 pm "
                  "on weekdays. The customer support line is extension 4417.",
    "loyalty.txt": "The loyalty programme is called the Summit Club. Members earn 15 points for every dollar they "
                   "spend, and get a voucher on their birthday. 500 points are worth a 10-dollar discount.",
    "history.txt": "History. Fjellvind Outfitters was founded in 1998 by Ingrid Halvorsen, a mountain guide. The "
                   "first shop sold only ropes and tents; today the company has 23 shops.",
}

# -- the tasks ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    kind: str
    prompt: str
    #: Any of these in the final answer is a success (numbers are compared as numbers).
    expected: tuple[str | float, ...]
    #: The tools a good run calls.
    tools: tuple[str, ...]


def _calc(prompt: str, value: float) -> Task:
    return Task("calculator", prompt, (value,), ("calculator",))


def _lookup(prompt: str, *answer: str | float) -> Task:
    return Task("lookup", prompt, answer, ("lookup",))


def _kb(prompt: str, *answer: str | float) -> Task:
    return Task("knowledge", prompt, answer, (SEARCH,))


def _both(prompt: str, value: float) -> Task:
    return Task("lookup+calc", prompt, (value,), ("lookup", "calculator"))


def _none(prompt: str, *answer: str) -> Task:
    return Task("no tool", prompt, answer, ())


KINDS = {
    "calculator": [
        _calc("What is 347 * 29?", 10063), _calc("What is 1234 + 5678?", 6912),
        _calc("Compute 98765 - 43210.", 55555), _calc("What is 1512 divided by 14?", 108),
        _calc("What is 17 squared?", 289), _calc("What is 15% of 240?", 36),
        _calc("If I buy 7 items at 13.5 dollars each, what is the total?", 94.5),
        _calc("What is (125 + 375) * 4?", 2000), _calc("Divide 1000 by 8.", 125),
        _calc("What is 56 times 78?", 4368), _calc("What is 2 to the power of 10?", 1024),
        _calc("What is 9999 minus 1234?", 8765), _calc("What is 3.5 times 12?", 42),
        _calc("What is the sum of 250, 125 and 625?", 1000)],
    "lookup": [
        _lookup("What is the capital of Kenya?", "Nairobi"), _lookup("How much does the trail tent cost?", 249),
        _lookup("What is the capital of Australia?", "Canberra"), _lookup("What is the price of the headlamp?", 27),
        _lookup("Which city is the capital of Canada?", "Ottawa"), _lookup("How much are the hiking boots?", 139),
        _lookup("What is the capital of Peru?", "Lima"), _lookup("What does the sleeping bag cost?", 119),
        _lookup("Name the capital of Egypt.", "Cairo"), _lookup("What is the price of the water filter?", 45),
        _lookup("What is the capital of Norway?", "Oslo"), _lookup("How much does the camp stove cost?", 64)],
    "knowledge": [
        _kb("How many days do customers have to return an item?", 45),
        _kb("How long does express delivery take?", 36),
        _kb("Above what order value is shipping free?", 85),
        _kb("How many years of warranty does a trail tent have?", 7),
        _kb("What is the name of the loyalty programme?", "Summit Club"),
        _kb("Who founded Fjellvind Outfitters?", "Halvorsen"),
        _kb("In which year was the shop founded?", 1998),
        _kb("In which city is the head office?", "Bergen"),
        _kb("What is the customer support extension?", 4417),
        _kb("How many points per dollar do loyalty members earn?", 15),
        _kb("How much does express delivery cost?", 12),
        _kb("What warranty do backpacks have?", "lifetime"),
        _kb("How many shops does the company have today?", 23)],
    "lookup+calc": [
        _both("How much do 3 rain jackets cost?", 267), _both("What do 4 headlamps cost together?", 108),
        _both("How much is a trail tent plus a camp stove?", 313),
        _both("How much do 2 sleeping bags cost?", 238)],
    "no tool": [
        _none("Reply with the single word hello.", "hello"), _none("What colour is the sky on a clear day?", "blue"),
        _none("What is the opposite of hot?", "cold"), _none("Which is larger, an elephant or a mouse?", "elephant"),
        _none("Say thank you to me.", "thank"), _none("What animal says moo?", "cow"),
        _none("Is water wet? Answer yes or no.", "yes")],
}
WARMUP = Task("calculator", "What is 2 + 3?", (5,), ("calculator",))


def tasks(count: int) -> list[Task]:
    """The kinds in turn (a kind that runs out drops out), so that any count draws from all of them."""
    pools = [list(v) for v in KINDS.values()]
    out = []
    while any(pools):
        for pool in pools:
            if pool:
                out.append(pool.pop(0))
    if count > len(out):
        sys.exit(f"--tasks is at most {len(out)}")
    return out[:count]


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def answered(text: str, expected: tuple[str | float, ...]) -> bool:
    numbers = []
    for match in _NUMBER.findall(text):
        try:
            numbers.append(float(match.replace(",", "").rstrip(".")))
        except ValueError:
            continue
    for want in expected:
        if isinstance(want, str) and want.lower() in text.lower():
            return True
        if not isinstance(want, str) and any(abs(n - want) < 1e-6 for n in numbers):
            return True
    return False


# -- measuring ------------------------------------------------------------------------------------------


@dataclass
class Call:
    name: str
    arguments: Any
    valid: bool


@dataclass
class Run:
    task: int
    kind: str
    seconds: float = 0.0
    steps: int = 0
    calls: list[Call] = field(default_factory=list)
    #: Steps that ended at max tokens before their call was complete (nothing to run).
    cut_off: int = 0
    answer: str = ""
    success: bool = False
    error: str | None = None

    @property
    def valid(self) -> bool:
        return self.error is None and self.cut_off == 0 and all(c.valid for c in self.calls)

    def used(self, task: Task) -> bool:
        names = {c.name for c in self.calls}
        return set(task.tools) <= names and (bool(task.tools) or not names)


def check(name: str, arguments: Any) -> Call:
    return Call(name, arguments, name in SCHEMAS and isinstance(arguments, dict) and validates(arguments,
                                                                                                SCHEMAS[name]))


def trace_arguments(parameters: list[dict[str, Any]]) -> dict[str, Any]:
    """Bedrock's parameter list (every value as text, with its JSON type) back into the call's arguments."""
    out = {}
    for p in parameters:
        value = p.get("value")
        if p.get("type") != "string":
            try:
                value = json.loads(value)
            except (TypeError, ValueError):
                pass
        out[p["name"]] = value
    return out


def run_outcrop(runtime, agent_id: str, index: int, task: Task) -> Run:
    from botocore.exceptions import BotoCoreError, ClientError

    run, answer = Run(index, task.kind), []
    started = time.perf_counter()
    try:
        response = runtime.invoke_agent(agentId=agent_id, agentAliasId=TEST_ALIAS, sessionId=uuid.uuid4().hex,
                                        inputText=task.prompt, enableTrace=True)
        for event in response["completion"]:
            if "chunk" in event:
                answer.append(event["chunk"]["bytes"].decode())
            elif "returnControl" in event:
                run.error = "returnControl (no action of this agent returns control)"
            elif "trace" in event:
                step = event["trace"]["trace"].get("orchestrationTrace", {})
                run.steps += "modelInvocationInput" in step
                invocation = step.get("invocationInput") or {}
                if "actionGroupInvocationInput" in invocation:
                    action = invocation["actionGroupInvocationInput"]
                    run.calls.append(check(action.get("function", ""),
                                           trace_arguments(action.get("parameters") or [])))
                elif "knowledgeBaseLookupInput" in invocation:
                    run.calls.append(check(SEARCH, {"query": invocation["knowledgeBaseLookupInput"].get("text")}))
    except (BotoCoreError, ClientError) as exc:
        run.error = f"{type(exc).__name__}: {exc}"[:400]
    run.seconds = time.perf_counter() - started
    run.answer = "".join(answer)
    # orchestration.py's words for a step that produced no call (cut off at max tokens)
    run.cut_off = int("could not finish this step" in run.answer)
    run.success = run.error is None and answered(run.answer, task.expected)
    return run


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(block.get("text", "") if isinstance(block, dict) else str(block) for block in content or [])


class LangChainSide:
    """A tool-calling AgentExecutor on one model; every model call it makes is recorded."""

    def __init__(self, model_id: str, endpoint: str, key: tuple[str, str], kb_id: str, max_steps: int) -> None:
        from botocore.config import Config
        from langchain_aws import ChatBedrockConverse
        from langchain_classic.agents import AgentExecutor, create_tool_calling_agent
        from langchain_core.callbacks import BaseCallbackHandler
        from langchain_core.prompts import ChatPromptTemplate
        from langchain_core.tools import StructuredTool
        from pydantic import Field, create_model

        retriever = client("bedrock-agent-runtime", endpoint, key)

        def search_knowledge_base(query: str) -> str:
            results = retriever.retrieve(knowledgeBaseId=kb_id, retrievalQuery={"text": query})["retrievalResults"]
            return "\n\n".join(f"[{i}] {r['content']['text']}" for i, r in enumerate(results, 1)) or "No results."

        def search(query: str) -> str:
            try:
                return search_knowledge_base(query)
            except Exception as exc:  # noqa: BLE001 - the model reads what went wrong, as on the server
                return f"The search failed: {exc}"

        def structured(name: str, description: str, parameters: dict[str, dict[str, Any]], run) -> Any:
            fields = {k: (str, Field(description=v.get("description", ""))) for k, v in parameters.items()}
            return StructuredTool.from_function(func=run, name=name, description=description,
                                                args_schema=create_model(f"{name}_input", **fields),
                                                handle_validation_error=True)

        def action(name: str):
            return lambda **arguments: act(name, arguments)

        self.tools = [structured(f["name"], f["description"], f["parameters"], action(f["name"])) for f in FUNCTIONS]
        self.tools.append(structured(SEARCH, SEARCH_DESCRIPTION, {"query": {"description": "what to search for"}},
                                     lambda query: search(query)))
        self.llm = ChatBedrockConverse(
            model=model_id, temperature=0, max_tokens=MAX_TOKENS, endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id=key[0], aws_secret_access_key=key[1],
            config=Config(read_timeout=300, retries={"max_attempts": 1}))
        prompt = ChatPromptTemplate.from_messages([("system", f"{INSTRUCTION}\n\n{LANGCHAIN_GUIDE}"),
                                                   ("human", "{input}"), ("placeholder", "{agent_scratchpad}")])
        agent = create_tool_calling_agent(self.llm, self.tools, prompt)
        self.executor = AgentExecutor(agent=agent, tools=self.tools, max_iterations=max_steps,
                                      handle_parsing_errors=True)

        class Recorder(BaseCallbackHandler):
            def __init__(self) -> None:
                self.messages: list = []

            def on_llm_end(self, response, **kwargs: Any) -> None:
                for generations in response.generations:
                    self.messages += [g.message for g in generations if getattr(g, "message", None) is not None]

        self.recorder_class = Recorder

    def run(self, index: int, task: Task) -> Run:
        from botocore.exceptions import BotoCoreError, ClientError

        run, recorder = Run(index, task.kind), self.recorder_class()
        started = time.perf_counter()
        try:
            result = self.executor.invoke({"input": task.prompt}, config={"callbacks": [recorder]})
            run.answer = text_of(result.get("output"))
        except (BotoCoreError, ClientError, ValueError) as exc:
            run.error = f"{type(exc).__name__}: {exc}"[:400]
        run.seconds = time.perf_counter() - started
        for message in recorder.messages:
            run.steps += 1
            run.calls += [check(c["name"], c["args"]) for c in message.tool_calls]
            run.calls += [Call(c.get("name") or "", c.get("args"), False) for c in message.invalid_tool_calls]
            stop = message.response_metadata.get("stopReason")
            run.cut_off += stop == "malformed_tool_use" or (
                stop == "max_tokens" and not message.tool_calls and not text_of(message.content).strip())
        run.success = run.error is None and answered(run.answer, task.expected)
        return run


@dataclass
class Side:
    runs: list[Run] = field(default_factory=list)

    def summary(self, chosen: list[Task]) -> dict[str, Any]:
        runs = self.runs
        n = len(runs) or 1
        seconds = [r.seconds for r in runs]
        calls = [c for r in runs for c in r.calls]
        kinds: dict[str, list[int]] = {}
        for r in runs:
            kinds.setdefault(r.kind, [0, 0])
            kinds[r.kind][0] += r.success
            kinds[r.kind][1] += 1
        return {
            "tasks": len(runs), "valid_runs": sum(r.valid for r in runs),
            "valid_share": sum(r.valid for r in runs) / n, "success": sum(r.success for r in runs),
            "success_rate": sum(r.success for r in runs) / n,
            "used_expected_tools": sum(r.used(chosen[r.task]) for r in runs),
            "mean_steps": statistics.fmean(r.steps for r in runs) if runs else float("nan"),
            "calls": len(calls), "invalid_calls": sum(not c.valid for c in calls),
            "cut_off_steps": sum(r.cut_off for r in runs), "errors": sum(r.error is not None for r in runs),
            "mean_s": statistics.fmean(seconds) if seconds else float("nan"), "p50_s": percentile(seconds, 50),
            "p95_s": percentile(seconds, 95), "success_by_kind": {k: f"{v[0]}/{v[1]}" for k, v in kinds.items()},
        }


class MachineCpu:
    """CPU seconds the whole machine was busy during a phase, less this benchmark's own (this process, the
    server and the children they waited for): unlike OtherCpu (the processes alive at the phase's end), it
    also counts processes that started and ended meanwhile, such as another suite's servers."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.started, self.busy, self.ours = time.perf_counter(), machine_busy_s(), self._ours()

    def _ours(self) -> float:
        t = os.times()
        try:
            with open(f"/proc/{self.server_pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            server = sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime
        except (OSError, ValueError):
            server = 0.0
        return t.user + t.system + t.children_user + t.children_system + server

    def report(self, label: str) -> tuple[str, float | None]:
        wall, busy = time.perf_counter() - self.started, machine_busy_s()
        if busy is None or self.busy is None:
            return "", None
        other = max(0.0, busy - self.busy - (self._ours() - self.ours))
        line = (f"  [{label}, machine-wide: other processes took {other:.1f} CPU s of the "
                f"{wall * (os.cpu_count() or 1):.0f} the {os.cpu_count()} CPUs had in {wall:.0f} s]")
        if other > 0.1 * wall * (os.cpu_count() or 1):
            line += "\n  WARNING: other processes took a noticeable share of the CPUs; these numbers are not reliable"
        return line, other


# -- one model ------------------------------------------------------------------------------------------


def make_agent(agent_api, name: str, model_id: str, function_arn: str, kb_id: str) -> str:
    agent_id = agent_api.create_agent(agentName=f"bench-{name}", foundationModel=model_id, instruction=INSTRUCTION,
                                      idleSessionTTLInSeconds=600)["agent"]["agentId"]
    agent_api.create_agent_action_group(agentId=agent_id, agentVersion="DRAFT", actionGroupName="shop-tools",
                                        actionGroupExecutor={"lambda": function_arn},
                                        functionSchema={"functions": FUNCTIONS})
    agent_api.associate_agent_knowledge_base(agentId=agent_id, agentVersion="DRAFT", knowledgeBaseId=kb_id,
                                             description=KB_DESCRIPTION, knowledgeBaseState="ENABLED")
    agent_api.prepare_agent(agentId=agent_id)
    return agent_id


def bench_model(name: str, model_id: str, chosen: list[Task], endpoint: str, key: tuple[str, str], kb_id: str,
                function_arn: str, max_steps: int, server_pid: int) -> dict[str, Any]:
    agent_api = client("bedrock-agent", endpoint, key)
    runtime = client("bedrock-agent-runtime", endpoint, key)
    agent_id = make_agent(agent_api, name, model_id, function_arn, kb_id)
    langchain = LangChainSide(model_id, endpoint, key, kb_id, max_steps)
    started = time.perf_counter()
    warm = [run_outcrop(runtime, agent_id, -1, WARMUP), langchain.run(-1, WARMUP)]
    print(f"\n== {name} ({model_id}): {len(chosen)} tasks, at most {max_steps} steps of at most {MAX_TOKENS} tokens; "
          f"warm-up task (model load, grammars) {time.perf_counter() - started:.1f} s"
          + "".join(f"; {side} warm-up failed: {r.error}" for side, r in zip(("Outcrop", "LangChain"), warm,
                                                                            strict=True) if r.error), flush=True)
    sides = {"outcrop": Side(), "langchain": Side()}
    meter, machine = OtherCpu(), MachineCpu(server_pid)
    for i, task in enumerate(chosen):
        order = ("outcrop", "langchain") if i % 2 == 0 else ("langchain", "outcrop")
        for side in order:
            run = run_outcrop(runtime, agent_id, i, task) if side == "outcrop" else langchain.run(i, task)
            sides[side].runs.append(run)
        if (i + 1) % 10 == 0 and i + 1 < len(chosen):
            print(f"  {i + 1}/{len(chosen)} tasks [{time.perf_counter() - started:.0f} s]", flush=True)
    cpu = other_report(f"{name}, both sides", meter)
    machine_line, machine_other = machine.report(f"{name}, both sides")
    summaries = {side: s.summary(chosen) for side, s in sides.items()}
    print_table(summaries)
    print(cpu)
    if machine_line:
        print(machine_line)
    for side, s in sides.items():
        shown = [(r, c) for r in s.runs for c in r.calls if not c.valid][:3]
        shown += [(r, None) for r in s.runs if r.cut_off or r.error][: 3 - len(shown)]
        for r, c in shown:
            what = (f"invalid call {c.name} {json.dumps(c.arguments)[:120]}" if c else
                    f"error {r.error}" if r.error else f"cut off, answer {r.answer[:100]!r}")
            print(f"  {side} task {r.task} ({chosen[r.task].prompt!r}): {what}")
    o, lc = summaries["outcrop"], summaries["langchain"]
    ratio = lc["mean_s"] / o["mean_s"] if o["mean_s"] else float("nan")
    print(f"  {name} LangChain/Outcrop seconds per task: {ratio:.2f}", flush=True)
    return {"model": model_id, "agent_id": agent_id, "sides": summaries, "ratio": ratio,
            "other_cpu_s_machine_wide": machine_other,
            "runs": {side: [asdict(r) for r in s.runs] for side, s in sides.items()}}


def print_table(summaries: dict[str, dict[str, Any]]) -> None:
    o, lc = summaries["outcrop"], summaries["langchain"]

    def share(s: dict[str, Any], count: str) -> str:
        return f"{s[count]}/{s['tasks']} ({100 * s[count] / max(s['tasks'], 1):.0f}%)"

    rows = [("", "Outcrop InvokeAgent", "LangChain AgentExecutor"),
            ("runs with every call valid", share(o, "valid_runs"), share(lc, "valid_runs")),
            ("task success", share(o, "success"), share(lc, "success")),
            ("called the expected tools", share(o, "used_expected_tools"), share(lc, "used_expected_tools")),
            ("mean steps (model calls)", f"{o['mean_steps']:.2f}", f"{lc['mean_steps']:.2f}"),
            ("action calls (invalid)", f"{o['calls']} ({o['invalid_calls']})",
             f"{lc['calls']} ({lc['invalid_calls']})"),
            ("steps cut off before a call", str(o["cut_off_steps"]), str(lc["cut_off_steps"])),
            ("runs ending in an error", str(o["errors"]), str(lc["errors"])),
            ("seconds per task: mean", f"{o['mean_s']:.2f}", f"{lc['mean_s']:.2f}"),
            ("seconds per task: p50 / p95", f"{o['p50_s']:.2f} / {o['p95_s']:.2f}",
             f"{lc['p50_s']:.2f} / {lc['p95_s']:.2f}"),
            ("success by kind", ", ".join(f"{k} {v}" for k, v in o["success_by_kind"].items()),
             ", ".join(f"{k} {v}" for k, v in lc["success_by_kind"].items()))]
    widths = [max(len(r[i]) for r in rows[:-1]) for i in range(3)]
    for r in rows[:-1]:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    print(f"  success by kind: Outcrop {rows[-1][1]}\n                   LangChain {rows[-1][2]}")


# -- main -----------------------------------------------------------------------------------------------


def tiny_model(cache_dir: Path) -> Path:
    from tests.helpers import make_tiny_llama

    folder = cache_dir / "tiny-agent-llama-4096"
    if not (folder / "config.json").is_file():
        make_tiny_llama(folder, context=4096)
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=50, help="scripted tasks per model (at most 50)")
    parser.add_argument("--models", default="smollm2,tiny", help="comma-separated: smollm2, tiny")
    parser.add_argument("--cache-dir", type=Path, default=Path("~/.cache/outcrop-bench"),
                        help="the server's model cache and the tiny model (default ~/.cache/outcrop-bench)")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write every number here")
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = set(models) - {"smollm2", "tiny"}
    if unknown or not models:
        sys.exit(f"--models takes smollm2 and/or tiny, not {', '.join(sorted(unknown)) or 'nothing'}")
    chosen = tasks(args.tasks)
    cache_dir = args.cache_dir.expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)
    max_steps = Settings().agent_max_steps
    print(f"machine: {machine_state()}", flush=True)
    counts = {k: sum(t.kind == k for t in chosen) for k in KINDS}
    print(f"{len(chosen)} tasks ({', '.join(f'{k} {v}' for k, v in counts.items())}); tools: calculator, lookup "
          f"(Outcrop functions on an HTTP endpoint), {SEARCH} ({len(DOCUMENTS)} documents)", flush=True)
    results: dict[str, Any] = {"tasks": [asdict(t) for t in chosen], "max_steps": max_steps, "max_tokens": MAX_TOKENS}
    started = time.perf_counter()
    functions = serve_functions()
    with tempfile.TemporaryDirectory(prefix="outcrop-agents-bench-") as tmp:
        tmp_path = Path(tmp)
        corpus = tmp_path / "corpus"
        corpus.mkdir()
        for file_name, text in DOCUMENTS.items():
            (corpus / file_name).write_text(text + "\n", encoding="utf-8")
        port, data_dir, log_path = free_port(), tmp_path / "data", tmp_path / "server.log"
        server = start_server(port, data_dir, cache_dir, log_path, {"OUTCROP_AGENT_MAX_STEPS": str(max_steps)})
        try:
            endpoint, key = f"http://127.0.0.1:{port}", root_key(data_dir)
            ready = wait_until_ready(endpoint)
            kb = ingest(data_dir, endpoint, key, corpus)
            function_arn = outcrop_cli(data_dir, "functions", "register", "shop-tools", "--url",
                                       f"http://127.0.0.1:{functions.server_address[1]}/")
            print(f"server ready in {ready:.1f} s; knowledge base ingested in {kb['seconds']:.1f} s "
                  f"({kb['statistics'].get('numberOfNewDocumentsIndexed', '?')} documents)", flush=True)
            for name in models:
                model_id = SMOLLM2_ID if name == "smollm2" else outcrop_cli(
                    data_dir, "models", "register", "bench-tiny-agent", str(tiny_model(cache_dir)))
                results[name] = bench_model(name, model_id, chosen, endpoint, key, kb["kb_id"], function_arn,
                                            max_steps, server.pid)
        except BaseException:
            print(f"\nthe server's log, last lines:\n{log_path.read_text(errors='replace')[-4000:]}", file=sys.stderr)
            raise
        finally:
            stop_server(server)
            functions.shutdown()
    print(f"\ntotal {time.perf_counter() - started:.0f} s; machine: {machine_state()}")
    main_model = "smollm2" if "smollm2" in models else models[0]
    results["main_model"], results["ratio"] = main_model, results[main_model]["ratio"]
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    for name in models:
        sides = results[name]["sides"]
        print(f"valid {name} outcrop {100 * sides['outcrop']['valid_share']:.1f}% "
              f"langchain {100 * sides['langchain']['valid_share']:.1f}%")
    print(f"ratio {results[main_model]['ratio']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
