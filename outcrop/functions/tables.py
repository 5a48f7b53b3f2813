"""Functions, one row each: what a Lambda ARN of an account stands for here (a URL or a Python entry point),
and how long it may run."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from outcrop.platform.database import Base, UtcDateTime


class FunctionKind(StrEnum):
    """How a function runs: POSTed to a URL, or called in a child process as `module:function`."""

    URL = "URL"
    ENTRY_POINT = "ENTRY_POINT"


class FunctionRow(Base):
    __tablename__ = "functions"
    __table_args__ = (UniqueConstraint("account_id", "name", name="uq_functions_account_name"),)

    #: `arn:aws:lambda:REGION:ACCOUNT:function:NAME`, what an agent's action group names.
    arn: Mapped[str] = mapped_column(String(140), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(12))
    #: 1-64 letters, digits, - and _ (Lambda's function names), unique in the account.
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # a FunctionKind
    #: The http(s) URL, or the `package.module:function` entry point.
    target: Mapped[str] = mapped_column(String(2048))
    timeout_seconds: Mapped[int] = mapped_column(Integer, default=30)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
