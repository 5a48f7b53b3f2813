"""Agents: the agent and its DRAFT (action groups and knowledge bases kept inside it), its frozen versions,
its aliases, the sessions of InvokeAgent, and the summaries of ended sessions (memory).

A DRAFT is one JSON document rather than three tables: Bedrock's versions are snapshots of the whole agent,
so a version is a copy of the prepared document, and InvokeAgent reads one document per call.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from outcrop.platform.database import Base, UtcDateTime


class AgentStatus(StrEnum):
    """Bedrock's `AgentStatus` (the values Outcrop passes through)."""

    NOT_PREPARED = "NOT_PREPARED"
    PREPARED = "PREPARED"
    DELETING = "DELETING"
    FAILED = "FAILED"


class AgentAliasStatus(StrEnum):
    PREPARED = "PREPARED"
    DELETING = "DELETING"


class AgentRow(Base):
    __tablename__ = "agents"
    __table_args__ = (UniqueConstraint("account_id", "name", name="uq_agents_account_name"),)

    #: Bedrock's 10-character id; the ARN is `arn:aws:bedrock:REGION:ACCOUNT:agent/ID`.
    agent_id: Mapped[str] = mapped_column(String(10), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(12))
    name: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16))  # an AgentStatus
    #: {"agent": CreateAgent's members, "actionGroups": {id: ...}, "knowledgeBases": {id: ...}}: editable.
    draft: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: The DRAFT as PrepareAgent froze it: what the test alias (TSTALIASID) runs, and what a version copies.
    prepared: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    prepared_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    #: The highest numbered version made so far (versions count up from 1, never reused).
    latest_version: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class AgentVersionRow(Base):
    __tablename__ = "agent_versions"

    agent_id: Mapped[str] = mapped_column(String(10), primary_key=True)
    version: Mapped[str] = mapped_column(String(5), primary_key=True)
    snapshot: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class AgentAliasRow(Base):
    __tablename__ = "agent_aliases"
    __table_args__ = (UniqueConstraint("agent_id", "name", name="uq_agent_aliases_agent_name"),)

    agent_alias_id: Mapped[str] = mapped_column(String(10), primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(10))
    account_id: Mapped[str] = mapped_column(String(12))
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(String(200), nullable=True)
    #: The version it routes to (Bedrock's routingConfiguration, one entry).
    version: Mapped[str] = mapped_column(String(5))
    status: Mapped[str] = mapped_column(String(16))  # an AgentAliasStatus
    #: [{"routingConfiguration": [...], "startDate": ..., "endDate": ...}], newest first.
    history: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class AgentSessionRow(Base):
    """One InvokeAgent conversation: its Converse messages, its attributes, and a pending return of control."""

    __tablename__ = "agent_sessions"

    agent_id: Mapped[str] = mapped_column(String(10), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(12))
    messages: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    session_attributes: Mapped[dict[str, str]] = mapped_column(JSON)
    prompt_attributes: Mapped[dict[str, str]] = mapped_column(JSON)
    #: Set while the caller holds control: {"invocationId", "toolUses": [...], "step": n}.
    pending: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    #: The caller's memoryId, when the agent has memory: the session's summary is kept under it when it ends.
    memory_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    #: The alias the session began on (memory is kept per alias, as GetAgentMemory asks for it).
    alias_id: Mapped[str | None] = mapped_column(String(10), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class AgentMemoryRow(Base):
    """One ended session, summarized (memory type SESSION_SUMMARY), kept under its memoryId until it expires."""

    __tablename__ = "agent_memories"
    __table_args__ = (Index("ix_agent_memories_memory", "agent_id", "alias_id", "memory_id"),)

    #: One per summarized conversation: a session id reused after its session ended is another conversation.
    summary_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(10))
    alias_id: Mapped[str] = mapped_column(String(10))
    memory_id: Mapped[str] = mapped_column(String(100))
    session_id: Mapped[str] = mapped_column(String(100))
    account_id: Mapped[str] = mapped_column(String(12))
    summary: Mapped[str] = mapped_column(Text)
    session_start: Mapped[datetime] = mapped_column(UtcDateTime())
    #: When the session ended (its last call, plus the idle TTL when it idled out): the order of recall.
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    #: The end of its storage (the agent's storageDays after the session ended).
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
