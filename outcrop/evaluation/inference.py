"""How an evaluation job gets its answers: Converse on the job's own runtime, many prompts at a time.

The job process builds its own `RuntimeService` (catalog, engine, provisioned throughputs) from the
database, so a foundation model, or a custom model through its provisioned ARN, answers exactly as it
does for a client, and every call leaves a usage record (tagged with the job's ARN in its request
metadata). The account's on-demand request quotas do not apply: evaluation calls are the platform's
own batch work, and a provisioned throughput's capacity is enforced per process.
"""

from __future__ import annotations

import concurrent.futures
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from outcrop.errors import ModelNotReadyException, ThrottlingException, ValidationException
from outcrop.iam.principal import Principal
from outcrop.platform import jsontext

#: Evaluation is greedy unless the job's inferenceParams say otherwise, so that a job can be rerun.
DEFAULT_INFERENCE = {"maxTokens": 256, "temperature": 0.0, "topP": 1.0}
_NUMBERS = {"maxTokens": (int, 1, 8192), "temperature": (float, 0.0, 1.0), "topP": (float, 0.0, 1.0)}
_EXTRA = {"top_k": (int, 0, 500), "seed": (int, 0, 2**63 - 1)}
#: Seconds a throttled call (a provisioned throughput at capacity, a model still loading) waits before trying again.
RETRY_S = 1.0

T = TypeVar("T")


class Stopped(Exception):
    """The job was asked to stop while answers were being generated."""


def parse_inference_params(text: str | None, where: str) -> dict[str, Any]:
    """Bedrock's `inferenceParams` JSON string -> Converse's inferenceConfig and additionalModelRequestFields.

    Bedrock's own examples carry numbers as strings (`{"inferenceConfig": {"maxTokens": "512"}}`); both
    forms are accepted."""
    document: dict[str, Any] = {}
    if text:
        try:
            document = jsontext.loads(text)
        except jsontext.InvalidJson as exc:
            raise ValidationException(f"{where} is not valid JSON: {exc.msg}") from None
        if not isinstance(document, dict):
            raise ValidationException(f"{where} must be a JSON object")
    unknown = sorted(set(document) - {"inferenceConfig", "additionalModelRequestFields"})
    if unknown:
        raise ValidationException(f"{where}: unknown member {', '.join(unknown)}; use inferenceConfig and "
                                  "additionalModelRequestFields")
    config = {**DEFAULT_INFERENCE, **_numbers(document.get("inferenceConfig") or {}, _NUMBERS,
                                              f"{where}.inferenceConfig", allow={"stopSequences"})}
    stops = config.get("stopSequences", [])
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops) or len(stops) > 4:
        raise ValidationException(f"{where}.inferenceConfig.stopSequences must be a list of at most 4 strings")
    extra = _numbers(document.get("additionalModelRequestFields") or {}, _EXTRA,
                     f"{where}.additionalModelRequestFields")
    return {"inferenceConfig": config, **({"additionalModelRequestFields": extra} if extra else {})}


def _numbers(values: Any, allowed: dict[str, tuple[type, float, float]], where: str,
             allow: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise ValidationException(f"{where} must be a JSON object")
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key in allow:
            out[key] = value
            continue
        if key not in allowed:
            accepted = ", ".join(sorted([*allowed, *allow]))
            raise ValidationException(f"{where}: unknown member {key}; accepted: {accepted}")
        kind, low, high = allowed[key]
        try:
            number = kind(value) if not isinstance(value, bool) else None
            if kind is int and isinstance(value, str | float) and float(value) != int(float(value)):
                number = None
        except (TypeError, ValueError):
            number = None
        if number is None or not low <= number <= high:
            raise ValidationException(f"{where}.{key} must be a number from {low} to {high}, not {value!r}")
        out[key] = number
    return out


class Generator:
    """Answers many chat prompts with one model, keeping its continuous-batching scheduler full."""

    def __init__(self, runtime: Any, principal: Principal, job_arn: str, workers: int,
                 should_stop: Callable[[], bool] = lambda: False) -> None:
        self.runtime = runtime
        self.principal = principal
        self.job_arn = job_arn
        self.workers = max(1, workers)
        self.should_stop = should_stop

    def many(self, count: int, call: Callable[[int], T]) -> list[T]:
        """`call(i)` for every i below `count`, `workers` at a time, so that the model's continuous-batching
        scheduler always has a full batch; the results in order. A call the model cannot take yet (it is
        loading, a provisioned throughput is at capacity) is tried again; the first other exception ends the
        whole (the calls not yet started are dropped) and is raised, as is `Stopped` once the job is asked
        to stop. Batch inference runs its records through this too."""
        def one(index: int) -> T:
            while True:
                if self.should_stop():
                    raise Stopped()
                try:
                    return call(index)
                except (ThrottlingException, ModelNotReadyException):
                    time.sleep(RETRY_S)

        with concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="eval") as pool:
            futures = [pool.submit(one, i) for i in range(count)]
            try:
                return [f.result() for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise

    def chat(self, model_id: str, conversations: Sequence[list[dict[str, str]]], params: dict[str, Any],
             on_answer: Callable[[], None] = lambda: None, labels: Sequence[str] | None = None) -> list[str]:
        """The model's answer to each conversation ([{"role": "system"|"user"|"assistant", "content"}]), in order.

        A conversation the model refuses (too long for its context, ...) fails the whole call with its
        label (e.g. "dataset X line 7") in the message: an evaluation with holes would mislead."""
        from outcrop.runtime.service import Caller

        def one(index: int) -> str:
            messages = conversations[index]
            request = {**params,
                       "system": [{"text": m["content"]} for m in messages if m["role"] == "system"],
                       "messages": [{"role": m["role"], "content": [{"text": m["content"]}]}
                                    for m in messages if m["role"] != "system"]}
            caller = Caller(f"eval-{uuid.uuid4()}", self.principal, {"evaluationJobArn": self.job_arn})
            try:
                answer = self.runtime.converse(caller, model_id, request)
            except ValidationException as exc:
                label = labels[index] if labels else f"prompt {index + 1}"
                raise ValidationException(f"{label}: {model_id} refused it: {exc.message}") from None
            on_answer()
            return "".join(b.get("text", "") for b in answer["output"]["message"]["content"])

        return self.many(len(conversations), one)

    def answer(self, model_id: str, prompts: Sequence[str], params: dict[str, Any],
               on_answer: Callable[[], None] = lambda: None, labels: Sequence[str] | None = None) -> list[str]:
        """Each prompt as one user turn."""
        return self.chat(model_id, [[{"role": "user", "content": p}] for p in prompts], params, on_answer, labels)
