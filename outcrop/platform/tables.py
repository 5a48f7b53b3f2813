"""The platform's tables: the job runner's jobs, and the idempotency tokens of create requests."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Boolean, Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from outcrop.platform.database import Base, UtcDateTime


class JobState(StrEnum):
    """A runner job's state (`jobs.state`); an entry point returns STOPPED when it honoured a stop request."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"


class JobRow(Base):
    __tablename__ = "jobs"

    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(12))
    entry_point: Mapped[str] = mapped_column(String(256))
    failure_hook: Mapped[str | None] = mapped_column(String(256), nullable=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: The server (platform/presence.py) that claimed it; another requeues it when that server is dead.
    server_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    stop_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    #: The job's own report: {"percent", "step", "epoch", "loss", "etaSeconds", ...}.
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class IdempotencyRow(Base):
    __tablename__ = "idempotency_tokens"

    account_id: Mapped[str] = mapped_column(String(12), primary_key=True)
    operation: Mapped[str] = mapped_column(String(64), primary_key=True)
    token: Mapped[str] = mapped_column(String(256), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    response: Mapped[Any] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class ServerRow(Base):
    """A running `outcrop serve` process, seen alive at `seen_at` (platform/presence.py writes that every few
    seconds): what the jobs and the provisioned throughputs' slots a server held are given back by when it dies."""

    __tablename__ = "servers"

    server_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seen_at: Mapped[float] = mapped_column(Float)
    #: Where it runs: a server on this host whose process is gone is dead at once, not after STALE_SECONDS.
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)

