"""Provisioned throughputs. Deleted ones keep their row (with `deleted_at`) for what they cost."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from outcrop.platform.database import Base, UtcDateTime


class ThroughputStatus(StrEnum):
    """A provisioned throughput's status (Bedrock's values)."""

    CREATING = "Creating"
    IN_SERVICE = "InService"
    UPDATING = "Updating"
    FAILED = "Failed"


class ProvisionedThroughputRow(Base):
    __tablename__ = "provisioned_throughputs"

    arn: Mapped[str] = mapped_column(String(1011), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(12))
    name: Mapped[str] = mapped_column(String(63))
    #: The model serving now, and the one an update is moving to (equal when no update runs).
    model_arn: Mapped[str] = mapped_column(String(1011))
    desired_model_arn: Mapped[str] = mapped_column(String(1011))
    foundation_model_id: Mapped[str] = mapped_column(String(140))
    model_units: Mapped[int] = mapped_column(Integer)
    commitment: Mapped[str | None] = mapped_column(String(16), nullable=True)
    commitment_expiration: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    status: Mapped[str] = mapped_column(String(16))  # a ThroughputStatus
    failure_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)

class CapacityLeaseRow(Base):
    """One sequence slot of a provisioned throughput, held by a request on one server while it generates."""

    __tablename__ = "capacity_leases"

    lease_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    throughput_arn: Mapped[str] = mapped_column(String(1011), index=True)
    server_id: Mapped[str] = mapped_column(String(64))
    acquired_at: Mapped[float] = mapped_column(Float)

