"""Provisioned throughputs. Deleted ones keep their row (with `deleted_at`) for what they cost."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from outcrop.platform.database import Base


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
    commitment_expiration: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    status: Mapped[str] = mapped_column(String(16))  # Creating | InService | Updating | Failed
    failure_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
