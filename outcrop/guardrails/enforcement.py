"""A guardrail on Converse and ConverseStream (`guardrailConfig`): the input is checked before the model runs,
the answer after it, with Bedrock's `guardrail_intervened` stop reason and its trace.

What is checked on the way in: the `guardContent` blocks when the request has any (that is what they are
for), otherwise the text of every user message. A BLOCK finding answers the blocked input message and the
model never runs; ANONYMIZE masks what reaches the model. On the way out, the answer's text (not its tool
calls) is checked: BLOCK replaces it with the blocked output message, ANONYMIZE masks it.

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
from outcrop.guardrails.assessment import INPUT, INTERVENED, OUTPUT, apply
from outcrop.guardrails.service import Guardrails
from outcrop.runtime.service import Caller, RuntimeService

INTERVENED_STOP = "guardrail_intervened"


class _Guard:
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
            if guard["text"].get("qualifiers"):
                raise ValidationException("guardContent qualifiers (grounding_source, query) are for contextual "
                                          "grounding checks, which this server does not support yet")
        guarded = [b["guardContent"]["text"] for b in blocks if "guardContent" in b]
        if not guarded:
            guarded = [b for m in request.get("messages") or [] if m["role"] == "user" for b in m["content"]
                       if "text" in b]
        result = apply(self.document, INPUT, [{"text": {"text": holder["text"]}} for holder in guarded],
                       full=self.full)
        self.trace["inputAssessment"] = {self.id: result["assessments"][0]}
        self.guardrails.record(self.caller.principal, self.caller.request_id, self.id, self.version, INPUT, result)
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
        result = apply(self.document, OUTPUT, [{"text": {"text": t}} for t in checked], full=self.full)
        self.trace["outputAssessments"] = {self.id: result["assessments"]}
        self.guardrails.record(self.caller.principal, self.caller.request_id, self.id, self.version, OUTPUT, result)
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
    guard = _Guard(guardrails, caller, request["guardrailConfig"])
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
    guard = _Guard(guardrails, caller, request["guardrailConfig"])
    checked, blocked = guard.check_input(request)
    if blocked is not None:
        return iter(_blocked_stream(blocked, guard))
    return _held(runtime.converse_stream(caller, model_id, checked), guard)


def _blocked_stream(text: str, guard: _Guard) -> list[tuple[str, dict]]:
    return [("messageStart", {"role": "assistant"}),
            ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": text}}),
            ("contentBlockStop", {"contentBlockIndex": 0}), ("messageStop", {"stopReason": INTERVENED_STOP}),
            ("metadata", {"usage": {"inputTokens": 0, "outputTokens": 0, "totalTokens": 0},
                          "metrics": {"latencyMs": 0}, **guard.traced()})]


def _held(events: Iterator[tuple[str, dict]], guard: _Guard) -> Iterator[tuple[str, dict]]:
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
