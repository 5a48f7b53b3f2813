"""Events an application reports about its own outcomes: feedback on a response, conversions, revenue.

Feedback copies the model, domain, user and session of the invocation it rates (from its usage record)
when it is recorded, so that satisfaction by model or by domain is one GROUP BY on this table, not a
join against millions of usage records on every report. Amounts are floats: these are analytics, not
a ledger.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from outcrop.platform.database import Base, UtcDateTime


class FeedbackRow(Base):
    """One end user's verdict on one response (recording it again replaces it)."""

    __tablename__ = "insights_feedback"
    __table_args__ = (UniqueConstraint("account_id", "request_id", name="uq_insights_feedback_request"),
                      Index("ix_insights_feedback_account_created", "account_id", "created_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(String(12))
    request_id: Mapped[str] = mapped_column(String(64))
    #: Who recorded it (the application's principal), not the end user.
    principal_arn: Mapped[str] = mapped_column(String(2048))
    model_id: Mapped[str] = mapped_column(String(2048))
    domain: Mapped[str | None] = mapped_column(String(256), nullable=True)
    user_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    session_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    thumbs: Mapped[str | None] = mapped_column(String(4), nullable=True)  # up | down
    rating: Mapped[int | None] = mapped_column(Integer, nullable=True)  # 1..5
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: When the rated invocation happened (its usage record's time).
    invoked_at: Mapped[datetime] = mapped_column(UtcDateTime())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class ConversionRow(Base):
    """A recommended outcome reached (a purchase, a sign-up) by a user or in a session."""

    __tablename__ = "insights_conversions"
    __table_args__ = (Index("ix_insights_conversions_account_created", "account_id", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(String(12))
    principal_arn: Mapped[str] = mapped_column(String(2048))
    name: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    session_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class RevenueRow(Base):
    """Money a user brought in (negative for a refund)."""

    __tablename__ = "insights_revenue"
    __table_args__ = (Index("ix_insights_revenue_account_created", "account_id", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(String(12))
    principal_arn: Mapped[str] = mapped_column(String(2048))
    user_id: Mapped[str] = mapped_column(String(256))
    amount: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
