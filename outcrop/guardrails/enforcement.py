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
        self.trace: dict[str, Any] = {}

    def check_input(self, request: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """(the request the model gets, with ANONYMIZE findings masked; or the blocked message)."""
        request = copy.deepcopy(request)
        request.pop("guardrailConfig", None)
        guarded = [(m, b, b["guardContent"]["text"]) for m in request.get("messages") or []
                   for b in m["content"] if "text" in (b.get("guardContent") or {})]
        if not guarded:
            guarded = [(m, b, b) for m in request.get("messages") or [] if m["role"] == "user"
                       for b in m["content"] if "text" in b]
        result = apply(self.document, INPUT, [{"text": {"text": holder["text"]}} for _, _, holder in guarded])
        self.trace["inputAssessment"] = {self.id: result["assessments"][0]}
        self.guardrails.record(self.caller.principal, self.caller.request_id, self.id, self.version, INPUT, result)
        if result["action"] != INTERVENED:
            return request, None
        if result["actionReason"] == "Guardrail blocked.":
            return request, result["outputs"][0]["text"]
        for (_, _, holder), output in zip(guarded, result["outputs"], strict=True):
            holder["text"] = output["text"]
        return request, None

    def check_output(self, text: str) -> tuple[str, bool]:
        """(the answer's text as it may be sent, whether the guardrail intervened)."""
        if not text:
            return text, False
        result = apply(self.document, OUTPUT, [{"text": {"text": text}}])
        self.trace["outputAssessments"] = {self.id: result["assessments"]}
        self.guardrails.record(self.caller.principal, self.caller.request_id, self.id, self.version, OUTPUT, result)
        if result["action"] != INTERVENED:
            return text, False
        return result["outputs"][0]["text"], True

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
    text, intervened = guard.check_output("".join(block.get("text", "") for block in content))
    if intervened:
        answer["output"]["message"]["content"] = [{"text": text}] + [b for b in content if "text" not in b]
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
    text_blocks = {e["contentBlockIndex"] for name, e in held if name == "contentBlockDelta" and "text" in e["delta"]}
    text = "".join(e["delta"]["text"] for name, e in held if name == "contentBlockDelta" and "text" in e["delta"])
    checked, intervened = guard.check_output(text)
    first = min(text_blocks) if text_blocks else None
    for name, event in held:
        if intervened and name == "contentBlockDelta" and event["contentBlockIndex"] in text_blocks:
            if event["contentBlockIndex"] == first and checked is not None:
                yield name, {"contentBlockIndex": first, "delta": {"text": checked}}
                checked = None  # the replacement goes out once, in the first text block
            continue
        if intervened and name == "messageStop":
            event = {**event, "stopReason": INTERVENED_STOP}
        if name == "metadata":
            event = {**event, **guard.traced()}
        yield name, event
