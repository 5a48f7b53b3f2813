"""`GET /v1/models` in OpenAI's list shape, from ListFoundationModels and ListProvisionedModelThroughputs.

Listed: the catalog's models that generate text or embeddings (a reranker's output is TEXT on Bedrock's
card but it answers only Rerank, so it is left out), by Bedrock id, then the caller's provisioned
throughputs that are in service and its imported models, by ARN (what an application invokes them by). A
catalog model has no
creation time: `created` is 0 for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

#: The statuses of a provisioned throughput that answers invocations.
IN_SERVICE = "InService"


def entry(model_id: str, created: int, owned_by: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owned_by}


def from_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """A FoundationModelSummary (or GetFoundationModel's details) as an OpenAI model."""
    return entry(summary["modelId"], 0, summary.get("providerName") or "outcrop")


def listed(summaries: Iterable[dict[str, Any]], answers: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """The foundation models an OpenAI client can call: text or embedding output, and `answers(summary)` (not a
    reranker, nor an alias of one)."""
    return [from_summary(s) for s in summaries
            if {"TEXT", "EMBEDDING"} & set(s.get("outputModalities") or ()) and answers(s)]


def from_arn(arn: str, created: Any, account: str) -> dict[str, Any]:
    """A provisioned throughput or an imported model, by the ARN an application invokes it by."""
    return entry(arn, int(created.timestamp()) if isinstance(created, datetime) else 0, account)


def page(data: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "list", "data": data}
