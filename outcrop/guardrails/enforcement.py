"""A guardrail on Converse and ConverseStream (`guardrailConfig`): the input is checked before the model runs,
the answer after it, with Bedrock's `guardrail_intervened` stop reason and its trace.

What is checked on the way in: the `guardContent` blocks when the request has any (that is what they are
for), otherwise the text of every user message. `guardContent` qualified `grounding_source` or `query` is not
input: the answer's contextual grounding is judged against it on the way out. A BLOCK finding answers the
blocked input message and the model never runs; ANONYMIZE masks what reaches the model. On the way out, the
answer's text and its tool calls' inputs are checked: BLOCK replaces the whole answer with the blocked output
message, ANONYMIZE masks its text.

ConverseStream checks in `sync` mode (Bedrock's default): the answer is held until it is complete and checked,
then sent; `async` (send first, check behind) is refused by name, since it would send what a BLOCK withholds.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from typing import Any

from outcrop.errors import ValidationException
from outcrop.guardrails.assessment import INPUT, INTERVENED, OUTPUT
from outcrop.guardrails.service import Guardrails
from outcrop.runtime.formats import TextRequest
from outcrop.runtime.service import Caller, RuntimeService

INTERVENED_STOP = "guardrail_intervened"
_CONTEXT = {"grounding_source", "query"}


class Guard:
    """One call's guardrail (`guardrailConfig`): its checks recorded, its assessments kept for the trace."""

    def __init__(self, guardrails: Guardrails, caller: Caller, config: dict[str, Any]) -> None:
        if config.get("streamProcessingMode") == "async":
            raise ValidationException("guardrailConfig.streamProcessingMode async is not supported on this server: "
                                      "use sync (the answer is checked before it is sent)")
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
        self.guardrails.record(self.caller.principal, self.caller.request_id, self.id, self.version, source, result,
                               self.caller.request_metadata.get("domain"))
        return result

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
    """ConverseStream under a guardrail, in sync mode: the model's events are held, the answer checked, and
    the events sent, with the text block replaced when the guardrail intervened."""
    guard = Guard(guardrails, caller, request["guardrailConfig"])
    checked, blocked = guard.check_input(request)
    if blocked is not None:
        return iter(_blocked_stream(blocked, guard))
    return _held(runtime.converse_stream(caller, model_id, checked), guard)


def _blocked_stream(text: str, guard: Guard) -> list[tuple[str, dict]]:
    return [("messageStart", {"role": "assistant"}),
            ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": text}}),
            ("contentBlockStop", {"contentBlockIndex": 0}), ("messageStop", {"stopReason": INTERVENED_STOP}),
            ("metadata", {"usage": {"inputTokens": 0, "outputTokens": 0, "totalTokens": 0},
                          "metrics": {"latencyMs": 0}, **guard.traced()})]


def _held(events: Iterator[tuple[str, dict]], guard: Guard) -> Iterator[tuple[str, dict]]:
    held = list(events)  # sync mode: nothing leaves before the answer is checked
    texts: dict[int, str] = {}
    tools: dict[int, str] = {}
    for name, event in held:
        if name == "contentBlockDelta":
            delta, index = event["delta"], event["contentBlockIndex"]
            if "text" in delta:
                texts[index] = texts.get(index, "") + delta["text"]
            elif "toolUse" in delta:
                tools[index] = tools.get(index, "") + delta["toolUse"]["input"]
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
