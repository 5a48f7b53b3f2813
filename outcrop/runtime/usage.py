"""Usage records: one row per invocation, the ground truth for metering and business metrics."""

from __future__ import annotations

import logging

from outcrop.iam.principal import Principal
from outcrop.platform.database import Database, utc_now
from outcrop.runtime.tables import UsageRecord, UsageStatus

log = logging.getLogger(__name__)


def record_usage(db: Database, *, request_id: str, principal: Principal, model_id: str, operation: str,
                 input_tokens: int = 0, output_tokens: int = 0, latency_ms: int = 0,
                 first_token_ms: int | None = None, stop_reason: str | None = None, status: str = UsageStatus.SUCCESS,
                 request_metadata: dict[str, str] | None = None, invoked_model_id: str | None = None,
                 batch_job_arn: str | None = None) -> None:
    """Write one record. A metering failure is logged, never turned into the caller's failure.

    `model_id` is the model that answered (billed); `invoked_model_id` what the caller named (an alias, an
    inference profile), the same as `model_id` when not given; `batch_job_arn` the batch inference job whose
    record this was (billed at the batch price)."""
    try:
        with db.session() as session:
            session.add(UsageRecord(
                request_id=request_id, account_id=principal.account_id, principal_arn=principal.arn,
                model_id=model_id, invoked_model_id=invoked_model_id or model_id, operation=operation,
                input_tokens=input_tokens, output_tokens=output_tokens,
                latency_ms=latency_ms, first_token_ms=first_token_ms, stop_reason=stop_reason, status=status,
                request_metadata=request_metadata or None, batch_job_arn=batch_job_arn, created_at=utc_now()))
    except Exception:
        log.exception("could not record usage for request %s", request_id)
