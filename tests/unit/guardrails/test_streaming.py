"""A streamed answer checked in chunks (guardrails/enforcement.py `_Chunks`), on made-up model events and a stand-in
guardrail, so that what is checked when, and what is sent when, can be seen exactly: sync mode sends each chunk once
it passed, async sends at once and checks behind, and a BLOCK in a later chunk ends the stream there."""

from __future__ import annotations

import threading
import time

import pytest

from outcrop.guardrails import enforcement
from outcrop.guardrails.enforcement import ASYNC, SYNC, _Chunks, chunk_end

BLOCKED = "Sorry, that answer is withheld."


class FakeGuard:
    """A guardrail that blocks a chunk holding "FORBIDDEN" and masks "secret" (as {SECRET}); it records every chunk
    it was asked about, and the model's progress when it was asked."""

    def __init__(self, mode: str = SYNC, delay: float = 0.0) -> None:
        self.mode, self.delay = mode, delay
        self.id = "g1"
        self.trace: dict = {}
        self.checked: list[str] = []
        self.recorded: list[dict] = []
        self.threads: set[str] = set()

    def assess(self, source: str, texts: list[str]) -> dict:
        time.sleep(self.delay)
        self.threads.add(threading.current_thread().name)
        self.checked.append(" | ".join(texts))
        text = " ".join(texts)
        assessment = {"contentPolicy": {"filters": []}}
        if "FORBIDDEN" in text:
            return {"action": "GUARDRAIL_INTERVENED", "actionReason": "Guardrail blocked.",
                    "outputs": [{"text": BLOCKED}], "assessments": [assessment]}
        if "secret" in text:
            return {"action": "GUARDRAIL_INTERVENED", "actionReason": "Guardrail masked.",
                    "outputs": [{"text": t.replace("secret", "{SECRET}")} for t in texts], "assessments": [assessment]}
        return {"action": "NONE", "outputs": [], "assessments": [assessment]}

    def record_all(self, source: str, results: list[dict]) -> None:
        self.recorded.append({"source": source, "checks": len(results),
                              "action": "GUARDRAIL_INTERVENED" if any(r["action"] != "NONE" for r in results)
                              else "NONE"})

    def traced(self) -> dict:
        return {"trace": {"guardrail": self.trace}}


class Model:
    """A model's ConverseStream events, one text delta per word; `produced` counts the deltas handed out so far,
    and `closed` says whether the consumer stopped it."""

    def __init__(self, text: str, tools: list[str] = ()) -> None:
        self.words = [w + " " for w in text.split(" ")]
        self.tools = list(tools)
        self.produced = 0
        self.closed = False

    def __iter__(self):
        return self.events()

    def events(self):
        try:
            yield "messageStart", {"role": "assistant"}
            for word in self.words:
                self.produced += 1
                yield "contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": word}}
            yield "contentBlockStop", {"contentBlockIndex": 0}
            for i, tool in enumerate(self.tools, 1):
                yield "contentBlockStart", {"contentBlockIndex": i, "start": {"toolUse": {"toolUseId": f"t{i}",
                                                                                          "name": "lookup"}}}
                yield "contentBlockDelta", {"contentBlockIndex": i, "delta": {"toolUse": {"input": tool}}}
                yield "contentBlockStop", {"contentBlockIndex": i}
            yield "messageStop", {"stopReason": "tool_use" if self.tools else "end_turn"}
            yield "metadata", {"usage": {"inputTokens": 5, "outputTokens": len(self.words), "totalTokens": 9},
                               "metrics": {"latencyMs": 1}}
        finally:
            self.closed = True


SENTENCES = [f"This is sentence number {n} of a long and perfectly harmless answer about museum opening hours."
             for n in range(1, 9)]


def run(model: Model, guard: FakeGuard) -> list[tuple[str, dict, int]]:
    """The events sent, each with how many deltas the model had produced when it went out."""
    events = model.events()
    return [(name, event, model.produced) for name, event in _Chunks(events, guard).stream()]


def texts_of(sent: list[tuple[str, dict, int]]) -> list[str]:
    return [e["delta"]["text"] for n, e, _ in sent if n == "contentBlockDelta" and "text" in e["delta"]]


def test_chunks_close_at_sentence_ends_past_the_minimum_and_never_inside_a_number_or_email() -> None:
    assert chunk_end("Short. Still short.") == 0
    text = "a" * 90 + ". Second sentence is here. And a third"
    assert text[:chunk_end(text)].endswith("is here. ")
    # no sentence end: a chunk closes at a space only past MAX_CHUNK_CHARACTERS, never beside digits or an @
    words = "word " * 150 + "card 4111 1111 1111 1111 mail jane@example.com"
    end = chunk_end(words)
    assert end and words[:end].strip().split()[-1] in ("word", "card", "mail") and "4111" not in words[:end]
    assert chunk_end("x" * 600) == 0 and chunk_end("x" * enforcement.FORCED_CHUNK_CHARACTERS) > 0


def test_sync_sends_each_chunk_once_it_passed_and_before_the_answer_ends() -> None:
    model, guard = Model(" ".join(SENTENCES)), FakeGuard()
    sent = run(model, guard)
    deltas = [(e, produced) for n, e, produced in sent if n == "contentBlockDelta"]
    assert "".join(texts_of(sent)) == " ".join(SENTENCES) + " "  # every word, as the model wrote it
    assert len(deltas) == len(model.words)  # deltas go out as they came, not merged into one
    assert deltas[0][1] < len(model.words) // 2  # the first went out while the model was not half done
    assert len(guard.checked) >= 4 and all(c.strip() for c in guard.checked)
    assert "".join(guard.checked).replace(" | ", "") == " ".join(SENTENCES) + " "  # every character checked once
    names = [n for n, _, _ in sent]
    assert names[0] == "messageStart" and names[-3:] == ["contentBlockStop", "messageStop", "metadata"]
    assert sent[-2][1]["stopReason"] == "end_turn"
    assert len(sent[-1][1]["trace"]["guardrail"]["outputAssessments"]["g1"]) == len(guard.checked)
    assert guard.recorded == [{"source": "OUTPUT", "checks": len(guard.checked), "action": "NONE"}]


def test_sync_a_block_in_a_later_chunk_ends_the_stream_with_the_blocked_message() -> None:
    text = " ".join(SENTENCES[:4] + ["Here is the FORBIDDEN part of the answer, which must never be sent out."]
                    + SENTENCES[4:])
    model, guard = Model(text), FakeGuard()
    sent = run(model, guard)
    texts = texts_of(sent)
    assert texts[-1] == BLOCKED and "FORBIDDEN" not in "".join(texts)
    assert "".join(texts[:-1]).startswith(SENTENCES[0])  # what passed before it was sent
    assert [n for n, _, _ in sent][-3:] == ["contentBlockStop", "messageStop", "metadata"]
    assert sent[-2][1] == {"stopReason": "guardrail_intervened"}
    assert model.closed and model.produced < len(model.words)  # the model was stopped
    assert guard.recorded[0]["action"] == "GUARDRAIL_INTERVENED"


def test_sync_masks_a_chunk_and_says_the_guardrail_intervened() -> None:
    secret = "The secret code is in the drawer of the desk, next to the pens."
    model, guard = Model(" ".join([*SENTENCES[:2], secret])), FakeGuard()
    sent = run(model, guard)
    joined = "".join(texts_of(sent))
    assert "{SECRET}" in joined and "secret" not in joined
    assert joined.startswith(SENTENCES[0])
    assert sent[-2][1]["stopReason"] == "guardrail_intervened"


def test_sync_holds_tool_calls_until_the_answer_is_complete_and_checks_their_input() -> None:
    model, guard = Model("Let me look that up for you.", tools=['{"q": "FORBIDDEN"}']), FakeGuard()
    sent = run(model, guard)
    names = [n for n, _, _ in sent]
    assert "contentBlockStart" not in names  # the tool call is withheld
    assert texts_of(sent) == ["Let ", "me ", "look ", "that ", "up ", "for ", "you. ", BLOCKED]
    assert [e["contentBlockIndex"] for n, e, _ in sent if n == "contentBlockDelta"][-1] == 1
    assert sent[-2][1]["stopReason"] == "guardrail_intervened"
    passed = run(Model("Let me look that up.", tools=['{"q": "hours"}']), FakeGuard())
    assert [n for n, _, _ in passed].count("contentBlockStart") == 1 and passed[-2][1]["stopReason"] == "tool_use"


def test_async_sends_at_once_and_checks_behind_in_another_thread() -> None:
    model, guard = Model(" ".join(SENTENCES)), FakeGuard(ASYNC, delay=0.01)
    sent = run(model, guard)
    deltas = [produced for n, _, produced in sent if n == "contentBlockDelta"]
    assert deltas == list(range(1, len(model.words) + 1))  # each delta went out as soon as the model made it
    assert "".join(texts_of(sent)) == " ".join(SENTENCES) + " "
    assert guard.threads == {t for t in guard.threads if t.startswith("guardrail-stream")}
    assert "".join(guard.checked).replace(" | ", "") == " ".join(SENTENCES) + " "
    assert sent[-2][1]["stopReason"] == "end_turn"
    assert len(sent[-1][1]["trace"]["guardrail"]["outputAssessments"]["g1"]) == len(guard.checked)


@pytest.mark.parametrize("late", [False, True])
def test_async_a_block_ends_the_stream_what_was_sent_stays_sent(late: bool) -> None:
    body = SENTENCES[:3] + ["Here is the FORBIDDEN part of the answer, which a later check will catch."]
    text = " ".join(body + ([] if late else SENTENCES[3:]))
    model, guard = Model(text), FakeGuard(ASYNC)
    sent = run(model, guard)
    texts = texts_of(sent)
    assert texts[-1] == BLOCKED and "FORBIDDEN" in "".join(texts[:-1])  # sent before its check came back
    assert sent[-2][1] == {"stopReason": "guardrail_intervened"}
    assert [n for n, _, _ in sent][-3:] == ["contentBlockStop", "messageStop", "metadata"]
    stops = [e["contentBlockIndex"] for n, e, _ in sent if n == "contentBlockStop"]
    assert len(stops) == len(set(stops))  # each block is stopped once
    assert guard.recorded[0]["action"] == "GUARDRAIL_INTERVENED"


def test_async_does_not_mask_as_on_bedrock() -> None:
    model, guard = Model("The secret is out. " + " ".join(SENTENCES[:2])), FakeGuard(ASYNC)
    sent = run(model, guard)
    assert "secret" in "".join(texts_of(sent)) and sent[-2][1]["stopReason"] == "end_turn"
