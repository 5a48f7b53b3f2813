"""Agents, the control plane (bedrock-agent): agents and their DRAFT, action groups, knowledge bases,
PrepareAgent, versions and aliases. InvokeAgent lives in `outcrop.agents.orchestration`.

An agent is edited as its DRAFT; PrepareAgent checks the DRAFT (its model answers text, its functions and
knowledge bases exist, its tool names are valid) and freezes it as `prepared`, which the test alias
`TSTALIASID` runs. An alias created without a routing configuration makes a new numbered version from the
prepared DRAFT, as on Bedrock; one that names a version routes to it.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select

from outcrop.agents.memory import check_configuration as check_memory
from outcrop.agents.memory import configuration as memory_configuration
from outcrop.agents.tables import (
    AgentAliasRow,
    AgentAliasStatus,
    AgentMemoryRow,
    AgentRow,
    AgentSessionRow,
    AgentStatus,
    AgentVersionRow,
)
from outcrop.errors import ConflictException, ResourceNotFoundException, ValidationException
from outcrop.functions.service import Functions
from outcrop.iam.principal import Principal
from outcrop.iam.scoped_store import object_arn
from outcrop.iam.service import IamService
from outcrop.knowledge.retrieval import search_plan
from outcrop.knowledge.service import KnowledgeBases, new_id
from outcrop.platform.database import Database, utc_now
from outcrop.platform.idempotency import run_once
from outcrop.platform.objectstore import ObjectStore, S3Uri
from outcrop.platform.pagination import page
from outcrop.profiles.service import InferenceProfiles

DRAFT = "DRAFT"
#: Bedrock's built-in alias of every agent: it runs the prepared DRAFT.
TEST_ALIAS = "TSTALIASID"
DEFAULT_IDLE_TTL = 600
#: The name an inline agent goes by when the request gives none (its traces and its functions' events show it).
INLINE_NAME = "inline-agent"
#: The members of CreateAgent/UpdateAgent this server honours; the rest are refused by name.
_AGENT_MEMBERS = ("agentName", "instruction", "foundationModel", "description", "idleSessionTTLInSeconds",
                  "agentResourceRoleArn", "memoryConfiguration", "guardrailConfiguration")
_REFUSED = {"customerEncryptionKeyArn": "a KMS key", "promptOverrideConfiguration": "prompt overrides",
            "agentCollaboration": "multi-agent collaboration",
            "customOrchestration": "custom orchestration (Lambda)", "tags": "tags"}
_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
#: The tools InvokeAgent adds itself (orchestration.py): an action may not take their names.
RESERVED_TOOLS = ("final_answer", "search_knowledge_base")
_HTTP_METHODS = ("get", "put", "post", "delete", "patch")
#: The longest string argument of an action whose schema sets none (Tool.spec).
ARGUMENT_CHARACTERS = 200
#: The largest OpenAPI document an action group may read from S3 (Bedrock's inline payload is as large).
MAX_SCHEMA_BYTES = 100_000
#: Where a prepared agent keeps the OpenAPI text it read from S3: a version runs on what was read when it was
#: prepared, as on Bedrock, and never reads the bucket again. Private: not part of any response.
SCHEMA_TEXT = "_apiSchemaText"


def agent_arn(region: str, account: str, agent_id: str) -> str:
    return f"arn:aws:bedrock:{region}:{account}:agent/{agent_id}"


def alias_arn(region: str, account: str, agent_id: str, alias_id: str) -> str:
    return f"arn:aws:bedrock:{region}:{account}:agent-alias/{agent_id}/{alias_id}"


class Agents:
    def __init__(self, db: Database, profiles: InferenceProfiles, knowledge: KnowledgeBases, functions: Functions,
                 iam: IamService, store: ObjectStore, region: str) -> None:
        #: An agent's DRAFT is one document, edited read-modify-write: edits (and prepare, and new versions) take
        #: turns, in this process by this lock and across servers by the row lock of `_locked`.
        self._lock = threading.Lock()
        self.db = db
        self.profiles = profiles
        self.knowledge = knowledge
        self.functions = functions
        self.iam = iam
        self.store = store
        self.region = region

    # -- agents -----------------------------------------------------------------------------------

    def create(self, principal: Principal, params: dict[str, Any]) -> dict[str, Any]:
        account = principal.account_id
        created = run_once(self.db, account_id=account, operation="CreateAgent", token=params.get("clientToken"),
                           params=params, token_member="clientToken", create=lambda: self._create(account, params))
        return self.get(account, created["agentId"])

    def _create(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        fields = self._agent_fields(account, params)
        agent_id, now = new_id(), utc_now()
        with self.db.session() as session:
            self._unique_name(session, account, params["agentName"])
            session.add(AgentRow(agent_id=agent_id, account_id=account, name=params["agentName"],
                                 status=AgentStatus.NOT_PREPARED, draft={"agent": fields, "actionGroups": {},
                                                                         "knowledgeBases": {}},
                                 latest_version=0, created_at=now, updated_at=now))
        return {"agentId": agent_id}

    def _agent_fields(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        for member, what in _REFUSED.items():
            if params.get(member) and not (member == "agentCollaboration" and params[member] == "DISABLED"):
                raise ValidationException(f"{member} ({what}) is not supported on this server")
        if params.get("orchestrationType", "DEFAULT") != "DEFAULT":
            raise ValidationException("orchestrationType CUSTOM_ORCHESTRATION is not supported on this server")
        fields = {k: params[k] for k in _AGENT_MEMBERS if params.get(k) is not None}
        fields.setdefault("idleSessionTTLInSeconds", DEFAULT_IDLE_TTL)
        check_memory(fields.get("memoryConfiguration"))
        if fields.get("memoryConfiguration"):
            fields["memoryConfiguration"] = memory_configuration(fields)
        if fields.get("foundationModel"):
            self._text_model(account, fields["foundationModel"])
        return fields

    def _text_model(self, account: str, identifier: str) -> None:
        if ":provisioned-model/" in identifier:
            return  # resolved (and its capacity checked) by the runtime on each call
        try:
            model = self.profiles.model(account, identifier)
        except ResourceNotFoundException:
            raise ValidationException(f"foundationModel {identifier} is not a model in this catalog") from None
        if "TEXT" not in model.output_modalities or model.native_format == "rerank":
            raise ValidationException(f"foundationModel {identifier} does not generate text")

    def _unique_name(self, session: Any, account: str, name: str, agent_id: str | None = None) -> None:
        self.db.check_name_free(session, AgentRow, account, name, agent_id, "An agent")

    def row(self, account: str, agent_id: str) -> AgentRow:
        with self.db.session() as session:
            row = session.get(AgentRow, agent_id)
        if row is None or row.account_id != account:
            raise ResourceNotFoundException(f"Agent {agent_id} does not exist")
        return row

    def get(self, account: str, agent_id: str) -> dict[str, Any]:
        row = self.row(account, agent_id)
        return {"agent": self._describe(row, row.draft["agent"], DRAFT)}

    def _describe(self, row: AgentRow, fields: dict[str, Any], version: str) -> dict[str, Any]:
        out = {**fields, "agentId": row.agent_id, "agentName": fields.get("agentName", row.name),
               "agentArn": agent_arn(self.region, row.account_id, row.agent_id), "agentStatus": row.status,
               "createdAt": row.created_at, "updatedAt": row.updated_at, "preparedAt": row.prepared_at,
               "orchestrationType": "DEFAULT"}
        out.setdefault("agentResourceRoleArn", f"arn:aws:iam::{row.account_id}:role/outcrop-agent")
        out["agentVersion" if version == DRAFT else "version"] = version
        return out

    def list(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        rows, token = page(self.db, select(AgentRow).where(AgentRow.account_id == account), AgentRow.created_at,
                           params)
        return {"agentSummaries": [
            {"agentId": r.agent_id, "agentName": r.name, "agentStatus": r.status,
             "description": r.draft["agent"].get("description"), "updatedAt": r.updated_at,
             "latestAgentVersion": str(r.latest_version) if r.latest_version else DRAFT} for r in rows],
            "nextToken": token}

    def update(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        row = self.row(account, params["agentId"])
        fields = self._agent_fields(account, params)
        with self.db.session() as session:
            self._unique_name(session, account, params["agentName"], row.agent_id)
            agent = session.get(AgentRow, row.agent_id)
            agent.draft = {**agent.draft, "agent": fields}
            agent.name, agent.status, agent.updated_at = params["agentName"], AgentStatus.NOT_PREPARED, utc_now()
        return self.get(account, row.agent_id)

    def delete(self, account: str, agent_id: str, skip_in_use_check: bool = False) -> dict[str, Any]:
        self.row(account, agent_id)
        with self.db.session() as session:
            aliases = session.scalar(select(func.count()).select_from(AgentAliasRow).where(
                AgentAliasRow.agent_id == agent_id))
            if aliases and not skip_in_use_check:
                raise ConflictException(f"Agent {agent_id} has {aliases} aliases; delete them first, or set "
                                        "skipResourceInUseCheck")
            for table in (AgentAliasRow, AgentVersionRow, AgentSessionRow, AgentMemoryRow):
                session.execute(delete(table).where(table.agent_id == agent_id))
            session.delete(session.get(AgentRow, agent_id))
        return {"agentId": agent_id, "agentStatus": AgentStatus.DELETING}

    # -- the DRAFT's parts ------------------------------------------------------------------------

    def _edit(self, account: str, agent_id: str, version: str, change) -> Any:
        """Apply `change(draft)` to the agent's DRAFT (the only version that can change) in one transaction."""
        if version != DRAFT:
            raise ValidationException(f"agentVersion must be {DRAFT}: numbered versions cannot change")
        self.row(account, agent_id)
        with self._lock, self.db.session() as session:
            agent = _locked(session, agent_id)
            draft = copy.deepcopy(agent.draft)
            result = change(draft)
            agent.draft, agent.status, agent.updated_at = draft, AgentStatus.NOT_PREPARED, utc_now()
        return result

    def _document(self, account: str, agent_id: str, version: str) -> dict[str, Any]:
        """The agent as `version` has it: the DRAFT, or a numbered version's snapshot."""
        row = self.row(account, agent_id)
        if version == DRAFT:
            return row.draft
        with self.db.session() as session:
            snapshot = session.get(AgentVersionRow, (agent_id, version))
        if snapshot is None:
            raise ResourceNotFoundException(f"Version {version} of agent {agent_id} does not exist")
        return snapshot.snapshot

    def create_action_group(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        group = self._action_group(account, params, self._schema_reader(account, params["agentId"]))

        def change(draft: dict[str, Any]) -> str:
            if any(g["actionGroupName"] == group["actionGroupName"] for g in draft["actionGroups"].values()):
                raise ConflictException(f"An action group named {group['actionGroupName']} already exists")
            group_id, now = new_id(), utc_now().isoformat()
            draft["actionGroups"][group_id] = {**group, "actionGroupId": group_id, "createdAt": now,
                                               "updatedAt": now}
            return group_id
        group_id = self._edit(account, params["agentId"], params["agentVersion"], change)
        return self.get_action_group(account, params["agentId"], DRAFT, group_id)

    def _action_group(self, account: str, params: dict[str, Any], read_s3: SchemaReader) -> dict[str, Any]:
        if params.get("parentActionGroupSignature") or params.get("parentActionGroupSignatureParams"):
            raise ValidationException("parentActionGroupSignature (user input, code interpreter) is not supported "
                                      "on this server")
        executor = params.get("actionGroupExecutor") or {}
        if bool(executor.get("lambda")) == bool(executor.get("customControl")):
            raise ValidationException("actionGroupExecutor needs exactly one of lambda (an Outcrop function's ARN, "
                                      "see `outcrop functions register`) or customControl RETURN_CONTROL")
        if executor.get("lambda"):
            self.functions.get(account, executor["lambda"])  # ResourceNotFoundException names it
        if bool(params.get("functionSchema")) == bool(params.get("apiSchema")):
            raise ValidationException("An action group needs exactly one of functionSchema or apiSchema")
        group = {k: params[k] for k in ("actionGroupName", "description", "actionGroupExecutor", "functionSchema",
                                        "apiSchema") if params.get(k) is not None}
        group["actionGroupState"] = params.get("actionGroupState") or "ENABLED"
        for function in (params.get("functionSchema") or {}).get("functions") or []:
            if function.get("requireConfirmation") == "ENABLED":
                raise ValidationException("requireConfirmation is not supported on this server")
        tools(group, read_s3)  # the schema is checked (and names made) now, not at the first call
        return group

    def _schema_reader(self, account: str, agent_id: str) -> SchemaReader:
        role = self.row(account, agent_id).draft["agent"].get("agentResourceRoleArn")
        return lambda location: self.read_schema(account, role, location)

    def read_schema(self, account: str, role_arn: str | None, location: dict[str, Any], inline: bool = False) -> bytes:
        """An OpenAPI document in S3 (apiSchema.s3), read as the agent's role, which must allow s3:GetObject on
        it (Bedrock reads it with the agent's service role too). `inline`: the agent of InvokeInlineAgent, which
        has no role; its caller was authorized for the read (api/bedrock/agent_runtime.py)."""
        uri = S3Uri(location.get("s3BucketName") or "", location.get("s3ObjectKey") or "")
        if not inline:
            if not role_arn:
                raise ValidationException("apiSchema.s3 is read with the agent's role: give the agent an "
                                          "agentResourceRoleArn that allows s3:GetObject on it, or give the OpenAPI "
                                          "document inline as apiSchema.payload")
            self.iam.check_role(role_arn, account, [("s3:GetObject", object_arn(uri), {})])
        if self.store.head(uri).size > MAX_SCHEMA_BYTES:  # ObjectNotFound names the object
            raise ValidationException(f"apiSchema {uri} is larger than {MAX_SCHEMA_BYTES} bytes")
        return self.store.get_bytes(uri)

    def get_action_group(self, account: str, agent_id: str, version: str, group_id: str) -> dict[str, Any]:
        group = self._document(account, agent_id, version)["actionGroups"].get(group_id)
        if group is None:
            raise ResourceNotFoundException(f"Action group {group_id} does not exist")
        return {"agentActionGroup": _group_out(group, agent_id, version)}

    def list_action_groups(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        groups = self._document(account, params["agentId"], params["agentVersion"])["actionGroups"].values()
        return {"actionGroupSummaries": [
            {"actionGroupId": g["actionGroupId"], "actionGroupName": g["actionGroupName"],
             "actionGroupState": g["actionGroupState"], "description": g.get("description"),
             "updatedAt": datetime.fromisoformat(g["updatedAt"])} for g in groups]}

    def update_action_group(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        group = self._action_group(account, params, self._schema_reader(account, params["agentId"]))

        def change(draft: dict[str, Any]) -> None:
            old = draft["actionGroups"].get(params["actionGroupId"])
            if old is None:
                raise ResourceNotFoundException(f"Action group {params['actionGroupId']} does not exist")
            if any(g["actionGroupName"] == group["actionGroupName"] for i, g in draft["actionGroups"].items()
                   if i != params["actionGroupId"]):
                raise ConflictException(f"An action group named {group['actionGroupName']} already exists")
            draft["actionGroups"][params["actionGroupId"]] = {**group, "actionGroupId": old["actionGroupId"],
                                                              "createdAt": old["createdAt"],
                                                              "updatedAt": utc_now().isoformat()}
        self._edit(account, params["agentId"], params["agentVersion"], change)
        return self.get_action_group(account, params["agentId"], DRAFT, params["actionGroupId"])

    def delete_action_group(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        def change(draft: dict[str, Any]) -> None:
            if draft["actionGroups"].pop(params["actionGroupId"], None) is None:
                raise ResourceNotFoundException(f"Action group {params['actionGroupId']} does not exist")
        self._edit(account, params["agentId"], params["agentVersion"], change)
        return {}

    def associate_knowledge_base(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        self.knowledge.row(account, params["knowledgeBaseId"])  # the account's own, or ResourceNotFound

        def change(draft: dict[str, Any]) -> None:
            now = utc_now().isoformat()
            old = draft["knowledgeBases"].get(params["knowledgeBaseId"], {})
            draft["knowledgeBases"][params["knowledgeBaseId"]] = {
                "knowledgeBaseId": params["knowledgeBaseId"],
                "description": params.get("description") or old.get("description", ""),
                "knowledgeBaseState": params.get("knowledgeBaseState") or old.get("knowledgeBaseState", "ENABLED"),
                "createdAt": old.get("createdAt", now), "updatedAt": now}
        self._edit(account, params["agentId"], params["agentVersion"], change)
        return self.get_knowledge_base(account, params["agentId"], DRAFT, params["knowledgeBaseId"])

    def get_knowledge_base(self, account: str, agent_id: str, version: str, kb_id: str) -> dict[str, Any]:
        kb = self._document(account, agent_id, version)["knowledgeBases"].get(kb_id)
        if kb is None:
            raise ResourceNotFoundException(f"Knowledge base {kb_id} is not associated with agent {agent_id}")
        return {"agentKnowledgeBase": _kb_out(kb, agent_id, version)}

    def list_knowledge_bases(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        kbs = self._document(account, params["agentId"], params["agentVersion"])["knowledgeBases"].values()
        return {"agentKnowledgeBaseSummaries": [
            {"knowledgeBaseId": k["knowledgeBaseId"], "description": k["description"],
             "knowledgeBaseState": k["knowledgeBaseState"], "updatedAt": datetime.fromisoformat(k["updatedAt"])}
            for k in kbs]}

    def disassociate_knowledge_base(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        def change(draft: dict[str, Any]) -> None:
            if draft["knowledgeBases"].pop(params["knowledgeBaseId"], None) is None:
                raise ResourceNotFoundException(f"Knowledge base {params['knowledgeBaseId']} is not associated")
        self._edit(account, params["agentId"], params["agentVersion"], change)
        return {}

    # -- prepare, versions, aliases ---------------------------------------------------------------

    def prepare(self, account: str, agent_id: str) -> dict[str, Any]:
        """Check the DRAFT as InvokeAgent will use it, then freeze it for the test alias."""
        with self._lock:
            return self._prepare(account, agent_id)

    def _prepare(self, account: str, agent_id: str) -> dict[str, Any]:
        row = self.row(account, agent_id)
        draft = row.draft
        if not draft["agent"].get("foundationModel"):
            raise ValidationException("The agent has no foundationModel: UpdateAgent with one, then prepare it")
        if not draft["agent"].get("instruction"):
            raise ValidationException("The agent has no instruction: UpdateAgent with one, then prepare it")
        self._text_model(account, draft["agent"]["foundationModel"])
        frozen = copy.deepcopy(draft)
        self._freeze(account, frozen, self._schema_reader(account, agent_id))
        now = utc_now()
        with self.db.session() as session:
            agent = _locked(session, agent_id)
            if agent.draft != draft:
                raise ConflictException(f"Agent {agent_id} changed while it was being prepared; prepare it again")
            agent.prepared, agent.prepared_at, agent.status = frozen, now, AgentStatus.PREPARED
        return {"agentId": agent_id, "agentStatus": AgentStatus.PREPARED, "agentVersion": DRAFT, "preparedAt": now}

    def _freeze(self, account: str, document: dict[str, Any], read_s3: SchemaReader) -> None:
        """Check an agent's document as InvokeAgent will run it (its functions and knowledge bases exist, its
        actions have distinct names), and keep the text of its OpenAPI documents in S3 inside it."""
        names: set[str] = set()
        for group in document["actionGroups"].values():
            executor = group["actionGroupExecutor"]
            if executor.get("lambda"):
                self.functions.get(account, executor["lambda"])
            if (group.get("apiSchema") or {}).get("s3"):
                group[SCHEMA_TEXT] = read_s3(group["apiSchema"]["s3"]).decode("utf-8", "replace")
            for tool in tools(group, read_s3):
                if tool.name in names:
                    raise ValidationException(f"Two actions are both called {tool.name}")
                names.add(tool.name)
        for kb_id in document["knowledgeBases"]:
            self.knowledge.row(account, kb_id)

    def inline(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        """InvokeInlineAgent's agent, as a prepared document: the same checks as CreateAgent, its action groups
        and PrepareAgent, on what the request defines."""
        fields = {"agentName": INLINE_NAME, **self._agent_fields(account, params)}
        read_s3: SchemaReader = lambda location: self.read_schema(account, None, location, inline=True)  # noqa: E731
        groups = {}
        for i, group in enumerate(params.get("actionGroups") or []):
            groups[str(i)] = {**self._action_group(account, group, read_s3), "actionGroupId": str(i)}
        kbs = {}
        for i, kb in enumerate(params.get("knowledgeBases") or []):
            search_plan(kb.get("retrievalConfiguration"), f"knowledgeBases[{i}].retrievalConfiguration")
            kbs[kb["knowledgeBaseId"]] = {"knowledgeBaseId": kb["knowledgeBaseId"], "description": kb["description"],
                                          "knowledgeBaseState": "ENABLED",
                                          **({"retrievalConfiguration": kb["retrievalConfiguration"]}
                                             if kb.get("retrievalConfiguration") else {})}
        document = {"agent": fields, "actionGroups": groups, "knowledgeBases": kbs}
        self._freeze(account, document, read_s3)
        return document

    def list_versions(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        row = self.row(account, params["agentId"])
        with self.db.session() as session:
            versions = session.scalars(select(AgentVersionRow).where(
                AgentVersionRow.agent_id == row.agent_id).order_by(AgentVersionRow.created_at)).all()
        summaries = [{"agentName": row.name, "agentStatus": row.status, "agentVersion": DRAFT,
                      "createdAt": row.created_at, "updatedAt": row.updated_at}]
        summaries += [{"agentName": v.snapshot["agent"].get("agentName", row.name), "agentStatus": AgentStatus.PREPARED,
                       "agentVersion": v.version, "createdAt": v.created_at, "updatedAt": v.created_at}
                      for v in versions]
        return {"agentVersionSummaries": summaries}

    def get_version(self, account: str, agent_id: str, version: str) -> dict[str, Any]:
        row = self.row(account, agent_id)
        document = self._document(account, agent_id, version)
        out = self._describe(row, document["agent"], version)
        if version != DRAFT:
            out["agentStatus"] = AgentStatus.PREPARED
        out.pop("preparedAt", None)
        out.pop("orchestrationType", None)
        return {"agentVersion": out}

    def delete_version(self, account: str, agent_id: str, version: str,
                       skip_in_use_check: bool = False) -> dict[str, Any]:
        self._document(account, agent_id, version)
        if version == DRAFT:
            raise ValidationException("The DRAFT version cannot be deleted; delete the agent")
        with self.db.session() as session:
            if not skip_in_use_check and session.scalar(select(func.count()).select_from(AgentAliasRow).where(
                    AgentAliasRow.agent_id == agent_id, AgentAliasRow.version == version)):
                raise ConflictException(f"Version {version} is in use by an alias (skipResourceInUseCheck "
                                        "deletes it anyway)")
            session.execute(delete(AgentVersionRow).where(AgentVersionRow.agent_id == agent_id,
                                                          AgentVersionRow.version == version))
        return {"agentId": agent_id, "agentVersion": version, "agentStatus": AgentStatus.DELETING}

    def create_alias(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        created = run_once(self.db, account_id=account, operation="CreateAgentAlias",
                           token=params.get("clientToken"), params=params, token_member="clientToken",
                           create=lambda: self._create_alias(account, params))
        return self.get_alias(account, params["agentId"], created["agentAliasId"])

    def _create_alias(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        if params.get("tags"):
            raise ValidationException("tags are not kept for agent aliases on this server")
        agent_id = params["agentId"]
        self.row(account, agent_id)
        self._free_alias_name(agent_id, params["agentAliasName"])  # before a version is made for it
        version = self._routed_version(account, agent_id, params.get("routingConfiguration"))
        alias_id, now = new_id(), utc_now()
        with self.db.session() as session:
            session.add(AgentAliasRow(agent_alias_id=alias_id, agent_id=agent_id, account_id=account,
                                      name=params["agentAliasName"], description=params.get("description"),
                                      version=version, status=AgentAliasStatus.PREPARED,
                                      history=[{"routingConfiguration": [{"agentVersion": version}],
                                                "startDate": now.isoformat()}], created_at=now, updated_at=now))
        return {"agentAliasId": alias_id}

    def _free_alias_name(self, agent_id: str, name: str, alias_id: str | None = None) -> None:
        with self.db.session() as session:
            query = select(func.count()).select_from(AgentAliasRow).where(AgentAliasRow.agent_id == agent_id,
                                                                          AgentAliasRow.name == name)
            if alias_id:
                query = query.where(AgentAliasRow.agent_alias_id != alias_id)
            if session.scalar(query):
                raise ConflictException(f"An alias named {name} already exists")

    def _routed_version(self, account: str, agent_id: str, routing: list[dict[str, Any]] | None) -> str:
        """The version an alias routes to: the one named, or a new version made from the prepared DRAFT."""
        if routing:
            if len(routing) != 1 or routing[0].get("provisionedThroughput"):
                raise ValidationException("routingConfiguration takes one agentVersion (provisioned throughput for "
                                          "agents is not supported on this server)")
            version = routing[0].get("agentVersion")
            if not version or version == DRAFT:
                raise ValidationException("routingConfiguration.agentVersion must name a numbered version; the "
                                          f"DRAFT is reached through {TEST_ALIAS}")
            self._document(account, agent_id, version)
            return version
        row = self.row(account, agent_id)
        if row.prepared is None or row.status != AgentStatus.PREPARED:
            raise ValidationException(f"Agent {agent_id} has changes that are not prepared: PrepareAgent first")
        now = utc_now()
        with self._lock, self.db.session() as session:
            agent = _locked(session, agent_id)
            agent.latest_version += 1
            version = str(agent.latest_version)
            session.add(AgentVersionRow(agent_id=agent_id, version=version, snapshot=copy.deepcopy(agent.prepared),
                                        created_at=now))
        return version

    def alias_row(self, account: str, agent_id: str, alias_id: str) -> AgentAliasRow:
        self.row(account, agent_id)
        with self.db.session() as session:
            row = session.get(AgentAliasRow, alias_id)
        if row is None or row.agent_id != agent_id:
            raise ResourceNotFoundException(f"Alias {alias_id} of agent {agent_id} does not exist")
        return row

    def get_alias(self, account: str, agent_id: str, alias_id: str) -> dict[str, Any]:
        row = self.alias_row(account, agent_id, alias_id)
        return {"agentAlias": {
            "agentId": agent_id, "agentAliasId": alias_id, "agentAliasName": row.name,
            "agentAliasArn": alias_arn(self.region, account, agent_id, alias_id), "description": row.description,
            "routingConfiguration": [{"agentVersion": row.version}], "createdAt": row.created_at,
            "updatedAt": row.updated_at, "agentAliasStatus": row.status,
            "agentAliasHistoryEvents": [{**h, "startDate": datetime.fromisoformat(h["startDate"]),
                                         **({"endDate": datetime.fromisoformat(h["endDate"])} if h.get("endDate")
                                            else {})} for h in row.history]}}

    def list_aliases(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        self.row(account, params["agentId"])
        with self.db.session() as session:
            rows = session.scalars(select(AgentAliasRow).where(AgentAliasRow.agent_id == params["agentId"])
                                   .order_by(AgentAliasRow.created_at)).all()
        return {"agentAliasSummaries": [
            {"agentAliasId": r.agent_alias_id, "agentAliasName": r.name, "description": r.description,
             "routingConfiguration": [{"agentVersion": r.version}], "agentAliasStatus": r.status,
             "createdAt": r.created_at, "updatedAt": r.updated_at} for r in rows]}

    def update_alias(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        row = self.alias_row(account, params["agentId"], params["agentAliasId"])
        self._free_alias_name(params["agentId"], params["agentAliasName"], row.agent_alias_id)
        # Without a routing configuration the alias keeps its version (a rename makes no new version).
        version = self._routed_version(account, params["agentId"], params["routingConfiguration"]) \
            if params.get("routingConfiguration") else row.version
        now = utc_now().isoformat()
        with self.db.session() as session:
            alias = session.get(AgentAliasRow, row.agent_alias_id)
            history = [dict(h) for h in alias.history]
            history[0]["endDate"] = now
            alias.history = [{"routingConfiguration": [{"agentVersion": version}], "startDate": now}, *history]
            alias.name, alias.description, alias.version = params["agentAliasName"], params.get("description"), version
            alias.updated_at = utc_now()
        return self.get_alias(account, params["agentId"], params["agentAliasId"])

    def delete_alias(self, account: str, agent_id: str, alias_id: str) -> dict[str, Any]:
        self.alias_row(account, agent_id, alias_id)
        with self.db.session() as session:
            session.execute(delete(AgentAliasRow).where(AgentAliasRow.agent_alias_id == alias_id))
            session.execute(delete(AgentMemoryRow).where(AgentMemoryRow.agent_id == agent_id,
                                                         AgentMemoryRow.alias_id == alias_id))
        return {"agentId": agent_id, "agentAliasId": alias_id, "agentAliasStatus": AgentAliasStatus.DELETING}

    def runnable(self, account: str, agent_id: str, alias_id: str) -> tuple[AgentRow, str, dict[str, Any]]:
        """What InvokeAgent runs for an alias: (the agent, its version, the document of that version)."""
        row = self.row(account, agent_id)
        if alias_id == TEST_ALIAS:
            if row.prepared is None:
                raise ValidationException(f"Agent {agent_id} has not been prepared: call PrepareAgent first")
            return row, DRAFT, row.prepared
        alias = self.alias_row(account, agent_id, alias_id)
        return row, alias.version, self._document(account, agent_id, alias.version)


# -- action groups as tools --------------------------------------------------------------------------

class Tool:
    """One action an agent's model may call: its Converse tool name and JSON schema, and how it maps back to
    Bedrock's action (a function of a function schema, or an operation of an OpenAPI schema)."""

    def __init__(self, name: str, description: str, schema: dict[str, Any], group: dict[str, Any],
                 function: str | None = None, api_path: str | None = None, method: str | None = None,
                 body_params: tuple[str, ...] = ()) -> None:
        if not _TOOL_NAME.fullmatch(name):
            raise ValidationException(f"The action {name!r} must be 1-64 letters, digits, _ or -")
        if name in RESERVED_TOOLS or name.startswith(RESERVED_TOOLS[1]):
            raise ValidationException(f"The action name {name!r} is the agent's own ({', '.join(RESERVED_TOOLS)}); "
                                      "choose another")
        self.name, self.description, self.schema, self.group = name, description, schema, group
        self.function, self.api_path, self.method, self.body_params = function, api_path, method, body_params

    def spec(self) -> dict[str, Any]:
        """The Converse tool. A string argument without a maxLength gets ARGUMENT_CHARACTERS: a small model can
        otherwise write one until the step's tokens run out, and the call is lost with them."""
        properties = {name: {**schema, "maxLength": ARGUMENT_CHARACTERS}
                      if schema.get("type") == "string" and "maxLength" not in schema and "enum" not in schema
                      else schema for name, schema in (self.schema.get("properties") or {}).items()}
        return {"toolSpec": {"name": self.name, "description": self.description or self.name,
                             "inputSchema": {"json": {**self.schema, "properties": properties}}}}


_TYPES = {"string": "string", "number": "number", "integer": "integer", "boolean": "boolean", "array": "array"}


#: Reads an apiSchema.s3 location ({"s3BucketName", "s3ObjectKey"}) into the document's bytes.
SchemaReader = Callable[[dict[str, Any]], bytes]


def tools(group: dict[str, Any], read_s3: SchemaReader) -> list[Tool]:
    """The tools an action group offers (none when it is DISABLED)."""
    if group.get("actionGroupState") == "DISABLED":
        return []
    if group.get("functionSchema"):
        return [_function_tool(group, f) for f in group["functionSchema"].get("functions") or []]
    schema = group["apiSchema"]
    text = group.get(SCHEMA_TEXT) or schema.get("payload") or read_s3(schema.get("s3") or {})
    return _api_tools(group, _openapi(text))


def _function_tool(group: dict[str, Any], function: dict[str, Any]) -> Tool:
    properties, required = {}, []
    for name, detail in (function.get("parameters") or {}).items():
        if detail["type"] not in _TYPES:
            raise ValidationException(f"Parameter {name} of {function['name']}: type must be one of "
                                      f"{', '.join(_TYPES)}")
        properties[name] = {"type": detail["type"], "description": detail.get("description", "")}
        if detail["type"] == "array":
            properties[name]["items"] = {"type": "string"}
        if detail.get("required"):
            required.append(name)
    schema = {"type": "object", "properties": properties, "required": required}
    return Tool(function["name"], function.get("description", ""), schema, group, function=function["name"])


def _openapi(text: str | bytes) -> dict[str, Any]:
    try:
        document = json.loads(text)
    except RecursionError:
        raise ValidationException("apiSchema is nested too deeply") from None
    except ValueError:
        try:
            document = _load_yaml(text)
        except RecursionError:
            raise ValidationException("apiSchema is nested too deeply") from None
    if "$ref" in json.dumps(document):
        raise ValidationException("apiSchema uses $ref, which this server does not resolve: write the schemas "
                                  "inline")
    if not isinstance(document, dict) or not str(document.get("openapi", "")).startswith("3"):
        raise ValidationException("apiSchema must be an OpenAPI 3 document (openapi: 3.x)")
    return document


def _load_yaml(text: str | bytes) -> Any:
    """YAML without anchors and aliases: a few hundred bytes of nested aliases expand to gigabytes."""
    import yaml

    class NoAliases(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                raise yaml.YAMLError("YAML aliases (*name) are not accepted in an API schema")
            return super().compose_node(parent, index)
    try:
        return yaml.load(text, Loader=NoAliases)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        raise ValidationException(f"apiSchema is neither JSON nor YAML: {exc}") from None


def _api_tools(group: dict[str, Any], document: dict[str, Any]) -> list[Tool]:
    out = []
    for path, operations in (document.get("paths") or {}).items():
        for method, operation in (operations or {}).items():
            if method not in _HTTP_METHODS:
                continue
            properties, required = {}, []
            for parameter in operation.get("parameters") or []:
                properties[parameter["name"]] = {**(parameter.get("schema") or {"type": "string"}),
                                                 "description": parameter.get("description", "")}
                if parameter.get("required"):
                    required.append(parameter["name"])
            body = (((operation.get("requestBody") or {}).get("content") or {}).get("application/json") or {})
            body_schema = body.get("schema") or {}
            body_params = tuple((body_schema.get("properties") or {}).keys())
            properties.update(body_schema.get("properties") or {})
            required += list(body_schema.get("required") or [])
            name = operation.get("operationId") or re.sub(r"[^a-zA-Z0-9_-]", "_", f"{method}_{path.strip('/')}")[:64]
            schema = {"type": "object", "properties": properties, "required": required}
            out.append(Tool(name, operation.get("description") or operation.get("summary") or "", schema, group,
                            api_path=path, method=method.upper(), body_params=body_params))
    if not out:
        raise ValidationException("apiSchema has no operations under paths")
    return out


def _group_out(group: dict[str, Any], agent_id: str, version: str) -> dict[str, Any]:
    return {**{k: v for k, v in group.items() if k not in ("createdAt", "updatedAt", SCHEMA_TEXT)},
            "agentId": agent_id,
            "agentVersion": version, "createdAt": datetime.fromisoformat(group["createdAt"]),
            "updatedAt": datetime.fromisoformat(group["updatedAt"])}


def _kb_out(kb: dict[str, Any], agent_id: str, version: str) -> dict[str, Any]:
    return {**kb, "agentId": agent_id, "agentVersion": version, "createdAt": datetime.fromisoformat(kb["createdAt"]),
            "updatedAt": datetime.fromisoformat(kb["updatedAt"])}


def _locked(session: Any, agent_id: str) -> AgentRow:
    """The agent's row, locked for this transaction where the database can (PostgreSQL's FOR UPDATE)."""
    return session.scalars(select(AgentRow).where(AgentRow.agent_id == agent_id).with_for_update()).one()
