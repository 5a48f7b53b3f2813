"""Agent memory, Bedrock's SESSION_SUMMARY: when a session with a `memoryId` ends, the agent's own model
summarizes it, and the summaries of the latest sessions under that memoryId reach the prompt of every new one.

A session ends by `endSession`, or by idling past the agent's TTL. An idle one is summarized the next time its
memoryId is used (InvokeAgent on a new session), not by a timer: nothing runs in the background, and the
summary is ready when it is first needed. Summaries are kept per agent alias (GetAgentMemory names one) for
the agent's `storageDays`, and `maxRecentSessions` of them are recalled, oldest first.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select

from outcrop.agents.tables import AgentMemoryRow, AgentSessionRow
from outcrop.errors import ValidationException
from outcrop.platform.database import Database, utc_now
from outcrop.platform.pagination import ASCENDING, page
from outcrop.runtime.service import Caller, RuntimeService

log = logging.getLogger(__name__)

SESSION_SUMMARY = "SESSION_SUMMARY"
#: Bedrock's defaults for memoryConfiguration.
DEFAULT_STORAGE_DAYS = 30
DEFAULT_RECENT_SESSIONS = 20
#: A summary's length: a few sentences.
SUMMARY_TOKENS = 200
#: The end of a session's transcript that is summarized (characters): a long session must still fit the prompt
#: of a small model (a byte-level tokenizer spends a token per character).
TRANSCRIPT_CHARACTERS = 3000
#: Idle sessions of one memoryId summarized on one call; any more wait for the next (a call never stalls long).
SETTLE_AT_ONCE = 4
SUMMARIZE = ("You keep an assistant's memory of its sessions with a user. Summarize the conversation below in at "
             "most five sentences: what the user wanted, the facts that were learned, and what was done or decided.")


def configuration(agent: dict[str, Any]) -> dict[str, Any] | None:
    """The agent's memory settings with Bedrock's defaults, or None when it has no memory."""
    config = agent.get("memoryConfiguration")
    if not config:
        return None
    return {"enabledMemoryTypes": [SESSION_SUMMARY],
            "storageDays": config.get("storageDays") or DEFAULT_STORAGE_DAYS,
            "sessionSummaryConfiguration": {"maxRecentSessions": (config.get("sessionSummaryConfiguration") or {})
                                            .get("maxRecentSessions") or DEFAULT_RECENT_SESSIONS}}


def check_configuration(config: dict[str, Any] | None) -> None:
    """CreateAgent/UpdateAgent's memoryConfiguration: what this server can honour, or a ValidationException."""
    if not config:
        return
    if list(config.get("enabledMemoryTypes") or []) != [SESSION_SUMMARY]:
        raise ValidationException(f"memoryConfiguration.enabledMemoryTypes must be [{SESSION_SUMMARY}]")
    if config.get("storageDays") == 0:
        raise ValidationException("memoryConfiguration.storageDays must be 1-365 (0 would keep nothing)")


class SessionMemory:
    def __init__(self, db: Database, runtime: RuntimeService) -> None:
        self.db = db
        self.runtime = runtime

    def recall(self, account: str, agent_id: str, alias_id: str, memory_id: str, config: dict[str, Any]) -> list[str]:
        """The summaries the prompt of a new session gets: the latest `maxRecentSessions`, oldest first."""
        limit = config["sessionSummaryConfiguration"]["maxRecentSessions"]
        with self.db.session() as session:
            rows = session.scalars(select(AgentMemoryRow).where(
                AgentMemoryRow.account_id == account, AgentMemoryRow.agent_id == agent_id,
                AgentMemoryRow.alias_id == alias_id, AgentMemoryRow.memory_id == memory_id,
                AgentMemoryRow.expires_at > utc_now()).order_by(AgentMemoryRow.created_at.desc()).limit(limit)).all()
        return [row.summary for row in reversed(rows)]

    def settle(self, caller: Caller, model: str, agent_id: str, memory_id: str, ttl: timedelta,
               config: dict[str, Any]) -> None:
        """Summarize the sessions of this memoryId that idled past the TTL (they are over), and forget the
        agent's summaries past their storage. A session the model fails to summarize stays, for a later call:
        a new session is not refused for an old one's sake."""
        now = utc_now()
        with self.db.session() as session:
            session.execute(delete(AgentMemoryRow).where(AgentMemoryRow.agent_id == agent_id,
                                                         AgentMemoryRow.expires_at <= now))
            idle = session.scalars(select(AgentSessionRow).where(
                AgentSessionRow.account_id == caller.principal.account_id, AgentSessionRow.agent_id == agent_id,
                AgentSessionRow.memory_id == memory_id, AgentSessionRow.updated_at < now - ttl)
                .order_by(AgentSessionRow.updated_at).limit(SETTLE_AT_ONCE)).all()
        for row in idle:
            try:
                self.keep(caller, model, row, config, ended=row.updated_at + ttl)
            except Exception:  # noqa: BLE001 - the turn goes on; the session waits for the next call
                log.warning("could not summarize idle session %s of agent %s", row.session_id, agent_id,
                            exc_info=True)

    def keep(self, caller: Caller, model: str, row: AgentSessionRow, config: dict[str, Any],
             ended: datetime | None = None) -> None:
        """Summarize an ended session under its memoryId, then delete the session (only as it was read: a call
        that went on with the session meanwhile keeps it). If the model fails, the exception goes to the caller
        and the session stays. A session whose storage would already be over is dropped unsummarized."""
        ended = ended or utc_now()
        expires = ended + timedelta(days=config["storageDays"])
        summary = self._summarize(caller, model, row.messages) if row.messages and expires > utc_now() else ""
        with self.db.session() as session:
            gone = session.execute(delete(AgentSessionRow).where(
                AgentSessionRow.agent_id == row.agent_id, AgentSessionRow.session_id == row.session_id,
                AgentSessionRow.updated_at == row.updated_at))
            if summary and gone.rowcount:
                session.add(AgentMemoryRow(
                    summary_id=uuid.uuid4().hex, agent_id=row.agent_id, alias_id=row.alias_id or "",
                    memory_id=row.memory_id, session_id=row.session_id, account_id=row.account_id,
                    summary=summary, session_start=row.started_at or row.updated_at, created_at=ended,
                    expires_at=expires))

    def _summarize(self, caller: Caller, model: str, messages: list[dict[str, Any]]) -> str:
        text = transcript(messages)
        if len(text) > TRANSCRIPT_CHARACTERS:  # the latest part: a long session still fits a small model
            text = "..." + text[-TRANSCRIPT_CHARACTERS:]
        request = {"system": [{"text": SUMMARIZE}], "messages": [{"role": "user", "content": [{"text": text}]}],
                   "inferenceConfig": {"maxTokens": SUMMARY_TOKENS, "temperature": 0}}
        answer = self.runtime.converse(caller, model, request)
        return "".join(block.get("text", "") for block in answer["output"]["message"]["content"]).strip()

    # -- GetAgentMemory, DeleteAgentMemory ---------------------------------------------------------

    def get(self, account: str, agent_id: str, alias_id: str, params: dict[str, Any]) -> dict[str, Any]:
        if params["memoryType"] != SESSION_SUMMARY:
            raise ValidationException(f"memoryType must be {SESSION_SUMMARY}")
        query = select(AgentMemoryRow).where(
            AgentMemoryRow.account_id == account, AgentMemoryRow.agent_id == agent_id,
            AgentMemoryRow.alias_id == alias_id, AgentMemoryRow.memory_id == params["memoryId"],
            AgentMemoryRow.expires_at > utc_now())
        rows, token = page(self.db, query, AgentMemoryRow.created_at, {
            "memoryId": params["memoryId"], "maxResults": params.get("maxItems"),
            "nextToken": params.get("nextToken"), "sortOrder": ASCENDING})
        return {"memoryContents": [{"sessionSummary": {
            "memoryId": r.memory_id, "sessionId": r.session_id, "sessionStartTime": r.session_start,
            "sessionExpiryTime": r.expires_at, "summaryText": r.summary}} for r in rows], "nextToken": token}

    def delete(self, account: str, agent_id: str, alias_id: str, params: dict[str, Any]) -> dict[str, Any]:
        """Forget the alias's summaries: all of them, one memoryId's, or one session's."""
        query = delete(AgentMemoryRow).where(AgentMemoryRow.account_id == account,
                                             AgentMemoryRow.agent_id == agent_id, AgentMemoryRow.alias_id == alias_id)
        if params.get("memoryId"):
            query = query.where(AgentMemoryRow.memory_id == params["memoryId"])
        if params.get("sessionId"):
            query = query.where(AgentMemoryRow.session_id == params["sessionId"])
        with self.db.session() as session:
            session.execute(query)
        return {}


def transcript(messages: list[dict[str, Any]]) -> str:
    """A session's Converse messages as plain text: who said what, which actions ran and what they gave."""
    lines = []
    for message in messages:
        for block in message["content"]:
            if "text" in block:
                lines.append(f"{'User' if message['role'] == 'user' else 'Assistant'}: {block['text']}")
            elif "toolUse" in block:
                use = block["toolUse"]
                lines.append(f"Assistant called {use['name']}({json.dumps(use['input'])})")
            elif "toolResult" in block:
                text = " ".join(part.get("text", "") for part in block["toolResult"]["content"])
                lines.append(f"Result: {text}")
    return "\n".join(lines)
