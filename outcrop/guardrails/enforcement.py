"""A guardrail on Converse and ConverseStream (`guardrailConfig`): the input is checked before the model runs,
the answer after it, with Bedrock's `guardrail_intervened` stop reason and its trace.

What is checked on the way in: the `guardContent` blocks when the request has any (that is what they are
for), otherwise the text of every user message. `guardContent` qualified `grounding_source` or `query` is not
input: the answer's contextual grounding is judged against it on the way out. A BLOCK finding answers the
blocked input message and the model never runs; ANONYMIZE masks what reaches the model. On the way out, the
answer's text and its tool calls' inputs are checked: BLOCK replaces the whole answer with the blocked output
message, ANONYMIZE masks its text.

ConverseStream checks the answer in chunks as it streams (`_Chunks`), in the request's `streamProcessingMode`:
`sync` (Bedrock's default) holds each chunk until it passed, so deltas flow a chunk behind the model; `async` sends
everything at once and checks behind it, ending the stream when a check blocks. An answer judged for contextual
grounding is held and checked whole (relevance is the whole answer's).
"""

from __future__ import annotations

import contextvars
import copy
import json
import re
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from outcrop.errors import ValidationException
from outcrop.guardrails.assessment import INPUT, INTERVENED, OUTPUT
from outcrop.guardrails.service import Guardrails
from outcrop.runtime.formats import TextRequest
from outcrop.runtime.service import Caller, RuntimeService

INTERVENED_STOP = "guardrail_intervened"
#: ConverseStream's streamProcessingMode values
SYNC, ASYNC = "sync", "async"
_CONTEXT = {"grounding_source", "query"}


class Guard:
    """One call's guardrail (`guardrailConfig`): its checks recorded, its assessments kept for the trace."""

    def __init__(self, guardrails: Guardrails, caller: Caller, config: dict[str, Any]) -> None:
        self.mode = config.get("streamProcessingMode") or SYNC
        if self.mode not in (SYNC, ASYNC):
            raise ValidationException(f"guardrailConfig.streamProcessingMode: {self.mode!r} is not one of "
                                      f"{SYNC}, {ASYNC}")
        self.guardrails, self.caller = guardrails, caller
        self.id, self.version, self.document = guardrails.document(
            caller.principal.account_id, config["guardrailIdentifier"], config["guardrailVersion"])
        self.trace_on = config.get("trace") in ("enabled", "enabled_full")
        self.full = config.get("trace") == "enabled_full"  # findings with action NONE too
        self.trace: dict[str, Any] = {}
        self.context: list[dict[str, Any]] = []

    def run(self, source: str, texts: list[str], context: list[dict[str, Any]] = ()) -> dict[str, Any]:
        """ApplyGuardrail on `texts` (and the grounding `context` blocks), its intervention recorded."""
        result = self.guardrails.check(self.caller.principal.account_id, self.document, source,
                                       [{"text": {"text": t}} for t in texts] + list(context), self.full)
        self.record(source, result)
        return result

    def assess(self, source: str, texts: list[str]) -> dict[str, Any]:
        """ApplyGuardrail on `texts` (with the request's grounding context), not recorded: one chunk of a stream."""
        return self.guardrails.check(self.caller.principal.account_id, self.document, source,
                                     [{"text": {"text": t}} for t in texts] + list(self.context), self.full)

    def record(self, source: str, result: dict[str, Any]) -> None:
        self.guardrails.record(self.caller.principal, self.caller.request_id, self.id, self.version, source, result,
                               self.caller.request_metadata.get("domain"))

    def record_all(self, source: str, results: list[dict[str, Any]]) -> None:
        """The checks of one stream's chunks, recorded as one check: intervened (blocked, else masked) if any
        chunk's was, with every chunk's assessments."""
        worst = next((r for r in results if r.get("actionReason") == "Guardrail blocked."),
                     next((r for r in results if r["action"] == INTERVENED), results[-1]))
        self.record(source, {**worst, "assessments": [a for r in results for a in r["assessments"]]})

    def grounded(self) -> bool:
        """Whether the answer is judged for contextual grounding (the guardrail has the policy and the request
        gave a source)."""
        sources = [c for c in self.context if "grounding_source" in (c["text"].get("qualifiers") or [])]
        return bool(sources and (self.document.get("contextualGroundingPolicy") or {}).get("filters"))

    def check_input(self, request: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """(the request the model gets, with ANONYMIZE findings masked; or the blocked message)."""
        request = copy.deepcopy(request)
        request.pop("guardrailConfig", None)
        blocks = [b for m in request.get("messages") or [] for b in m["content"]] + list(request.get("system") or [])
        for block in blocks:
            guard = block.get("guardContent")
            if guard is None:
                continue
            if "text" not in guard:
                raise ValidationException("guardContent image blocks are not supported by guardrails on this "
                                          "server yet")
        guards = [b["guardContent"]["text"] for b in blocks if "guardContent" in b]
        # Sources and the query are what the answer's grounding is judged against (check_output), not input.
        self.context = [{"text": g} for g in guards if _CONTEXT & set(g.get("qualifiers") or [])]
        guarded = [g for g in guards if not _CONTEXT & set(g.get("qualifiers") or [])]
        if not guarded:
            guarded = [b for m in request.get("messages") or [] if m["role"] == "user" for b in m["content"]
                       if "text" in b]
        result = self.run(INPUT, [holder["text"] for holder in guarded])
        self.trace["inputAssessment"] = {self.id: result["assessments"][0]}
        if result["action"] != INTERVENED:
            return request, None
        if result["actionReason"] == "Guardrail blocked.":
            return request, result["outputs"][0]["text"]
        for holder, output in zip(guarded, result["outputs"], strict=True):
            holder["text"] = output["text"]
        return request, None

    def check_output(self, texts: list[str], tool_inputs: list[str]) -> tuple[list[str], str | None]:
        """The answer's text blocks as they may be sent, or (a BLOCK) the blocked message that replaces the
        whole answer. Tool calls' inputs are checked too: a BLOCK there withholds them; they are not masked
        (a masked argument would be a different call)."""
        checked = texts + tool_inputs
        if not any(checked):
            return texts, None
        result = self.run(OUTPUT, checked, self.context)
        self.trace["outputAssessments"] = {self.id: result["assessments"]}
        if result["action"] != INTERVENED:
            return texts, None
        if result["actionReason"] == "Guardrail blocked.":
            return [], result["outputs"][0]["text"]
        return [o["text"] for o in result["outputs"][:len(texts)]], None

    def traced(self) -> dict[str, Any]:
        return {"trace": {"guardrail": self.trace}} if self.trace_on else {}


def converse(guardrails: Guardrails, runtime: RuntimeService, caller: Caller, model_id: str,
             request: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    guard = Guard(guardrails, caller, request["guardrailConfig"])
    checked, blocked = guard.check_input(request)
    if blocked is not None:
        return {"output": {"message": {"role": "assistant", "content": [{"text": blocked}]}},
                "stopReason": INTERVENED_STOP, "usage": {"inputTokens": 0, "outputTokens": 0, "totalTokens": 0},
                "metrics": {"latencyMs": round((time.perf_counter() - started) * 1000)}, **guard.traced()}
    answer = runtime.converse(caller, model_id, checked)
    content = answer["output"]["message"]["content"]
    texts = [b["text"] for b in content if "text" in b]
    kept, blocked = guard.check_output(texts, [json.dumps(b["toolUse"]["input"]) for b in content if "toolUse" in b])
    if blocked is not None:
        answer["output"]["message"]["content"] = [{"text": blocked}]
        answer["stopReason"] = INTERVENED_STOP
    elif kept != texts:
        replacements = iter(kept)
        answer["output"]["message"]["content"] = [{"text": next(replacements)} if "text" in b else b
                                                  for b in content]
        answer["stopReason"] = INTERVENED_STOP
    return {**answer, **guard.traced()}


def converse_stream(guardrails: Guardrails, runtime: RuntimeService, caller: Caller, model_id: str,
                    request: dict[str, Any]) -> Iterator[tuple[str, dict]]:
    """ConverseStream under a guardrail: the input is checked before the model runs; the answer is checked in
    chunks as it streams, in the request's `streamProcessingMode` (sync: each chunk is sent once it passed;
    async: sent at once, checked behind). An answer judged for contextual grounding is checked whole."""
    guard = Guard(guardrails, caller, request["guardrailConfig"])
    checked, blocked = guard.check_input(request)
    if blocked is not None:
        return iter(_blocked_stream(blocked, guard))
    events = runtime.converse_stream(caller, model_id, checked)
    if guard.grounded():  # relevance is the whole answer's, not a chunk's: held, checked, then sent
        return _held(events, guard)
    return _Chunks(events, guard).stream()


def _blocked_stream(text: str, guard: Guard) -> list[tuple[str, dict]]:
    return [("messageStart", {"role": "assistant"}),
            ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": text}}),
            ("contentBlockStop", {"contentBlockIndex": 0}), ("messageStop", {"stopReason": INTERVENED_STOP}),
            ("metadata", {"usage": {"inputTokens": 0, "outputTokens": 0, "totalTokens": 0},
                          "metrics": {"latencyMs": 0}, **guard.traced()})]


def _block_texts(events: list[tuple[str, dict]]) -> tuple[dict[int, str], dict[int, str]]:
    """ConverseStream's deltas joined per content block: each text block's text, each tool call's input JSON."""
    texts: dict[int, str] = {}
    tools: dict[int, str] = {}
    for name, event in events:
        if name == "contentBlockDelta":
            delta, index = event["delta"], event["contentBlockIndex"]
            if "text" in delta:
                texts[index] = texts.get(index, "") + delta["text"]
            elif "toolUse" in delta:
                tools[index] = tools.get(index, "") + delta["toolUse"]["input"]
    return texts, tools


def _held(events: Iterator[tuple[str, dict]], guard: Guard) -> Iterator[tuple[str, dict]]:
    """The whole answer held, checked once, then sent (an answer judged for grounding and relevance)."""
    held = list(events)
    texts, tools = _block_texts(held)
    kept, blocked = guard.check_output(list(texts.values()), list(tools.values()))
    if blocked is not None:  # the whole answer is the blocked message: no text, no tool call goes out
        stop = next(e for name, e in held if name == "messageStop")
        metadata = next((e for name, e in held if name == "metadata"), {})
        yield "messageStart", {"role": "assistant"}
        yield "contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": blocked}}
        yield "contentBlockStop", {"contentBlockIndex": 0}
        yield "messageStop", {**stop, "stopReason": INTERVENED_STOP}
        yield "metadata", {**metadata, **guard.traced()}
        return
    replaced = dict(zip(texts, kept, strict=True))
    intervened = replaced != texts
    sent: set[int] = set()
    for name, event in held:
        if intervened and name == "contentBlockDelta" and event["contentBlockIndex"] in replaced:
            index = event["contentBlockIndex"]
            if index not in sent:  # each text block goes out once, as checked
                sent.add(index)
                yield name, {"contentBlockIndex": index, "delta": {"text": replaced[index]}}
            continue
        if intervened and name == "messageStop":
            event = {**event, "stopReason": INTERVENED_STOP}
        if name == "metadata":
            event = {**event, **guard.traced()}
        yield name, event


#: A streamed answer is checked in chunks. A chunk closes at the end of a sentence or line once it holds
#: CHUNK_CHARACTERS characters (so a sentence, the unit the meaning-based policies read, is not cut in two).
CHUNK_CHARACTERS = 100
#: Text with no sentence or line end closes a chunk at a space once it holds MAX_CHUNK_CHARACTERS: a space
#: between two words with no digit or @ in them, so that a card, phone number or email is not cut in two;
#: past FORCED_CHUNK_CHARACTERS, at its last space, or anywhere.
MAX_CHUNK_CHARACTERS = 500
FORCED_CHUNK_CHARACTERS = 2000
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s+|\n\s*")
_WORD = re.compile(r"\S+")
_RISKY = re.compile(r"[\d@]")


def chunk_end(text: str) -> int:
    """How much of `text` (a text block's unchecked part, as it grows) is a chunk to check now: up to its last
    sentence or line end past CHUNK_CHARACTERS; without one, past MAX_CHUNK_CHARACTERS, up to its last safe space
    (see MAX_CHUNK_CHARACTERS); past FORCED_CHUNK_CHARACTERS, up to its last word, or all of it. 0: no chunk yet."""
    if len(text) < CHUNK_CHARACTERS:
        return 0
    ends = [m.end() for m in _SENTENCE_END.finditer(text) if m.end() >= CHUNK_CHARACTERS]
    if ends:
        return ends[-1]
    if len(text) < MAX_CHUNK_CHARACTERS:
        return 0
    words = list(_WORD.finditer(text))
    safe = [b.start() for a, b in zip(words, words[1:], strict=False)
            if b.start() >= CHUNK_CHARACTERS and not _RISKY.search(a.group()) and not _RISKY.search(b.group())]
    if safe:
        return safe[-1]
    if len(text) < FORCED_CHUNK_CHARACTERS:
        return 0
    return words[-1].start() if len(words) > 1 else len(text)


def _split(pieces: list[str], at: int) -> tuple[list[str], list[str]]:
    """The deltas `pieces` cut at character `at` of their text: (those before, those after), one split in two."""
    head: list[str] = []
    rest: list[str] = []
    seen = 0
    for piece in pieces:
        if seen >= at:
            rest.append(piece)
        elif seen + len(piece) <= at:
            head.append(piece)
        else:
            head.append(piece[:at - seen])
            rest.append(piece[at - seen:])
        seen += len(piece)
    return head, rest


def _delta(index: int, text: str) -> tuple[str, dict]:
    return "contentBlockDelta", {"contentBlockIndex": index, "delta": {"text": text}}


class _Chunks:
    """One streamed answer checked in chunks (Bedrock's streamProcessingMode).

    Text is cut into chunks as it arrives (`chunk_end`; a text block's end closes one too). In sync mode
    (the default) a chunk's deltas are held until the chunk has been checked, then sent as they came (or, masked,
    as one delta); a BLOCK sends the blocked output message instead and ends the stream there, with stopReason
    `guardrail_intervened`, the model stopped. In async mode every event is sent at once and each chunk is checked
    behind it, in a thread of its own, in order; a BLOCK found by a check ends the stream at the next event the
    same way (what was sent stays sent), and the message's stop waits for the last chunk's check. As on Bedrock,
    async mode does not mask: ANONYMIZE findings are reported in the trace and the text goes out as it is.

    Tool calls' inputs are checked once their answer is complete (JSON is not cut into chunks): in sync mode, a
    tool call and everything after it is held until then. Every check of the stream is one assessment in the
    trace's `outputAssessments`; the stream counts as one guardrail check (intervened if any chunk intervened)."""

    def __init__(self, events: Iterator[tuple[str, dict]], guard: Guard) -> None:
        self.events = events
        self.guard = guard
        self.asynchronous = guard.mode == ASYNC
        self.results: list[dict[str, Any]] = []
        self.blocked: str | None = None
        self.masked = False
        self.started = time.perf_counter()
        self.pending: list[Future] = []
        self.worker: ThreadPoolExecutor | None = None

    def stream(self) -> Iterator[tuple[str, dict]]:
        try:
            yield from self._async() if self.asynchronous else self._sync()
        finally:
            close = getattr(self.events, "close", None)
            if close is not None:
                close()  # a stream ended by a BLOCK (or a client gone) stops its model
            if self.worker is not None:
                self.worker.shutdown(wait=False, cancel_futures=True)
            # Checks that finished after the stream stopped reading them (a block before them, a client gone):
            # recorded all the same, an intervention among them too.
            self.results += [f.result() for f in self.pending if f.done() and not f.cancelled() and f.exception()
                             is None]
            self.pending.clear()
            if self.results:
                self.guard.record_all(OUTPUT, self.results)

    # -- checks --------------------------------------------------------------------------------------------

    def _check(self, texts: list[str], tools: list[str] = ()) -> dict[str, Any]:
        return self.guard.assess(OUTPUT, list(texts) + list(tools))

    def _take(self, result: dict[str, Any]) -> dict[str, Any]:
        self.results.append(result)
        self.guard.trace["outputAssessments"] = {self.guard.id: [a for r in self.results for a in r["assessments"]]}
        if result["action"] == INTERVENED:
            if result.get("actionReason") == "Guardrail blocked.":
                self.blocked = result["outputs"][0]["text"]
            else:
                self.masked = True
        return result

    def _submit(self, texts: list[str], tools: list[str] = ()) -> None:
        if not any(texts) and not any(tools):
            return
        if self.worker is None:
            self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="guardrail-stream")
        self.pending.append(self.worker.submit(contextvars.copy_context().run, self._check, texts, tools))

    def _collect(self, wait: bool = False) -> None:
        """Take the results of the async checks done (all of them, with `wait`), in order."""
        while self.pending and (wait or self.pending[0].done()) and self.blocked is None:
            self._take(self.pending.pop(0).result())

    # -- endings -------------------------------------------------------------------------------------------

    def _blocked_end(self, index: int, metadata: dict | None) -> Iterator[tuple[str, dict]]:
        """The blocked message as the answer's last text (in the open text block, or a new one), then the stop."""
        yield _delta(index, self.blocked or "")
        yield "contentBlockStop", {"contentBlockIndex": index}
        yield "messageStop", {"stopReason": INTERVENED_STOP}
        if metadata is None:  # the model was stopped before it told its usage: none is reported
            metadata = {"usage": {"inputTokens": 0, "outputTokens": 0, "totalTokens": 0},
                        "metrics": {"latencyMs": round((time.perf_counter() - self.started) * 1000)}}
        yield "metadata", {**metadata, **self.guard.traced()}

    def _stop(self, event: dict) -> dict:
        return {**event, "stopReason": INTERVENED_STOP} if self.masked and not self.asynchronous else event

    # -- sync: each chunk sent once it passed ----------------------------------------------------------------

    def _sync(self) -> Iterator[tuple[str, dict]]:
        index, pieces = 0, []  # the text block being streamed, and its deltas not yet checked
        last = -1  # the highest block index seen
        tail: list[tuple[str, dict]] | None = None  # from the first tool call on: every event, held to the end
        for name, event in self.events:
            at = event.get("contentBlockIndex") if isinstance(event, dict) else None
            if at is not None:
                last = max(last, at)
            if tail is None and (name == "contentBlockStart" or (
                    name == "contentBlockDelta" and "text" not in event["delta"])):
                tail = []
                if pieces:  # a text block the model left open
                    yield from self._release(index, pieces)
                    pieces = []
                    if self.blocked is not None:
                        yield from self._blocked_end(index, None)
                        return
            if tail is not None:
                tail.append((name, event))
                if name == "messageStop":
                    break
                continue
            if name == "contentBlockDelta":
                if at != index and pieces:  # a new text block without a stop for the last: close it
                    yield from self._release(index, pieces)
                    pieces = []
                    if self.blocked is not None:
                        yield from self._blocked_end(index, None)
                        return
                index = at
                pieces.append(event["delta"]["text"])
                end = chunk_end("".join(pieces))
                if end:
                    chunk, pieces = _split(pieces, end)
                    yield from self._release(index, chunk)
                    if self.blocked is not None:
                        yield from self._blocked_end(index, None)
                        return
                continue
            if name == "contentBlockStop" and at == index and pieces:
                yield from self._release(index, pieces)
                pieces = []
                if self.blocked is not None:
                    yield from self._blocked_end(index, None)
                    return
            if name == "messageStop":
                tail = [(name, event)]
                break
            yield name, event
        if pieces:  # a stream that ended without closing its text block
            yield from self._release(index, pieces)
            if self.blocked is not None:
                yield from self._blocked_end(index, None)
                return
        yield from self._tail(tail or [], last)

    def _release(self, index: int, pieces: list[str]) -> Iterator[tuple[str, dict]]:
        """Check one chunk (the text of `pieces`) and send it: its deltas as they came, masked as one delta, or
        nothing (a BLOCK: self.blocked is set)."""
        text = "".join(pieces)
        if not text:
            return
        result = self._take(self._check([text]))
        if self.blocked is not None:
            return
        if result["action"] == INTERVENED:
            yield _delta(index, result["outputs"][0]["text"])
            return
        for piece in pieces:
            if piece:
                yield _delta(index, piece)

    def _tail(self, tail: list[tuple[str, dict]], last: int) -> Iterator[tuple[str, dict]]:
        """The end of the answer from its first tool call (or just its stop): read to the end, its tool inputs
        (and any text after them) checked in one check, then sent."""
        tail += list(self.events)
        texts, tools = _block_texts(tail)
        kept = list(texts.values())
        if any(texts.values()) or any(tools.values()):
            result = self._take(self._check(list(texts.values()), list(tools.values())))
            if self.blocked is not None:
                metadata = next((e for name, e in tail if name == "metadata"), None)
                first = min((e["contentBlockIndex"] for n, e in tail if n == "contentBlockStart"
                             or n == "contentBlockDelta"), default=last + 1)
                yield from self._blocked_end(first, metadata)
                return
            if result["action"] == INTERVENED:
                kept = [o["text"] for o in result["outputs"][:len(texts)]]
        replaced = dict(zip(texts, kept, strict=True))
        sent: set[int] = set()
        for name, event in tail:
            if name == "contentBlockDelta" and event["contentBlockIndex"] in replaced and replaced != texts:
                at = event["contentBlockIndex"]
                if at not in sent:
                    sent.add(at)
                    yield _delta(at, replaced[at])
                continue
            if name == "messageStop":
                event = self._stop(event)
            if name == "metadata":
                event = {**event, **self.guard.traced()}
            yield name, event

    # -- async: sent at once, checked behind -------------------------------------------------------------------

    def _async(self) -> Iterator[tuple[str, dict]]:
        index, pieces, last = 0, [], -1  # the text block being streamed, its deltas not yet checked
        open_block: int | None = None  # the block started and not yet stopped (text or tool call)
        tools: dict[int, str] = {}
        ending: list[tuple[str, dict]] = []  # messageStop and metadata: sent once every check is done
        for name, event in self.events:
            self._collect()
            if self.blocked is not None:
                yield from self._async_blocked(open_block, index, last, None)
                return
            at = event.get("contentBlockIndex") if isinstance(event, dict) else None
            if at is not None:
                last = max(last, at)
            if name == "contentBlockDelta" and "text" in event["delta"]:
                if at != index and pieces:
                    self._submit(["".join(pieces)])
                    pieces = []
                index, open_block = at, at
                pieces.append(event["delta"]["text"])
                end = chunk_end("".join(pieces))
                if end:
                    chunk, pieces = _split(pieces, end)
                    self._submit(["".join(chunk)])
            elif name == "contentBlockStart" or name == "contentBlockDelta":
                open_block = at
                if name == "contentBlockDelta" and "toolUse" in event["delta"]:
                    tools[at] = tools.get(at, "") + event["delta"]["toolUse"]["input"]
            elif name == "contentBlockStop":
                if at == index and pieces:
                    self._submit(["".join(pieces)])
                    pieces = []
                open_block = None
            if name in ("messageStop", "metadata"):
                ending.append((name, event))
                continue
            yield name, event
        self._submit(["".join(pieces)], list(tools.values()))
        self._collect(wait=True)
        if self.blocked is not None:
            metadata = next((e for name, e in ending if name == "metadata"), None)
            yield from self._async_blocked(open_block, index, last, metadata)
            return
        for name, event in ending:
            yield name, ({**event, **self.guard.traced()} if name == "metadata" else event)

    def _async_blocked(self, open_block: int | None, text_index: int, last: int,
                       metadata: dict | None) -> Iterator[tuple[str, dict]]:
        """The end of an async stream a check blocked: the blocked message in the open text block, or (a tool
        call's block closed first) in a new one."""
        if open_block is not None and open_block == text_index:
            yield from self._blocked_end(open_block, metadata)
            return
        if open_block is not None:
            yield "contentBlockStop", {"contentBlockIndex": open_block}
        yield from self._blocked_end(last + 1, metadata)


class InvokeGuard:
    """A guardrail on InvokeModel and InvokeModelWithResponseStream, from their headers
    (X-Amzn-Bedrock-GuardrailIdentifier, -GuardrailVersion, -Trace). As on Bedrock, the whole prompt is
    checked (the format's prompt, or its system text and every message) and the answer's text; the body
    gains `amazon-bedrock-guardrailAction` (INTERVENED or NONE), and with Trace ENABLED or ENABLED_FULL
    `amazon-bedrock-trace.guardrail` with the input's and the outputs' assessments. The runtime calls it
    around the model (RuntimeService.invoke's `guard`); a stream is held until its answer is checked."""

    def __init__(self, guardrails: Guardrails, caller: Caller, identifier: str, version: str, trace: str | None):
        self.guard = Guard(guardrails, caller, {"guardrailIdentifier": identifier, "guardrailVersion": version,
                                                 "trace": (trace or "DISABLED").lower()})
        self.intervened = False
        self.trace: dict[str, Any] = {}

    def check_prompt(self, request: TextRequest) -> str | None:
        """The blocked input message (the model must not run), or None, with ANONYMIZE findings masked in
        `request` itself."""
        if request.prompt is not None:
            slots: list[tuple[str, int | None]] = [("prompt", None)]
        else:
            slots = [("system", None)] if request.system else []
            slots += [("messages", i) for i in range(len(request.messages))]
        texts = [request.messages[i]["content"] if kind == "messages" else getattr(request, kind)
                 for kind, i in slots]
        result = self.guard.run(INPUT, texts)
        self.trace["input"] = {self.guard.id: result["assessments"][0]}
        if result["action"] != INTERVENED:
            return None
        self.intervened = True
        if result["actionReason"] == "Guardrail blocked.":
            return result["outputs"][0]["text"]
        for (kind, i), output in zip(slots, result["outputs"], strict=True):
            if kind == "messages":
                request.messages[i] = {**request.messages[i], "content": output["text"]}
            else:
                setattr(request, kind, output["text"])
        return None

    def check_answer(self, text: str) -> str:
        """The answer as it may be sent: itself, masked, or the blocked output message."""
        if not text:
            return text
        result = self.guard.run(OUTPUT, [text])
        self.trace["outputs"] = [{self.guard.id: result["assessments"][0]}]
        if result["action"] != INTERVENED:
            return text
        self.intervened = True
        return result["outputs"][0]["text"]

    def members(self) -> dict[str, Any]:
        """What the answer's body gains."""
        out: dict[str, Any] = {"amazon-bedrock-guardrailAction": "INTERVENED" if self.intervened else "NONE"}
        if self.guard.trace_on:
            out["amazon-bedrock-trace"] = {"guardrail": self.trace}
        return out
