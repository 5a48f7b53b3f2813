"""Guardrails, the control plane (bedrock): CreateGuardrail, Get, List, Update, Delete, CreateGuardrailVersion.

A guardrail is edited as its DRAFT; CreateGuardrailVersion snapshots the DRAFT as the next numbered version,
which never changes. Policies are kept as GetGuardrail returns them (`wordPolicy.words`, ...), with every
action and switch filled in, so enforcement (assessment.py) reads one plain document.

Every policy of Bedrock's but automated reasoning is honoured: content filters (content.py), denied topics
(topics.py), word filters, sensitive information (sensitive.py), contextual grounding (grounding.py), blocked
messages. What is not (automated reasoning, image modalities, the STANDARD tier's languages, cross-Region
profiles, KMS keys) is refused by name, never accepted and ignored.
"""

from __future__ import annotations

import copy
import re
import secrets
import string
from typing import Any

import regex
from sqlalchemy import delete, select

from outcrop.errors import ResourceNotFoundException, ValidationException
from outcrop.guardrails import content
from outcrop.guardrails.assessment import LEVELS, apply
from outcrop.guardrails.content import UNSUPPORTED
from outcrop.guardrails.semantic import Embedder, ReferenceCache
from outcrop.guardrails.sensitive import SUPPORTED
from outcrop.guardrails.tables import GuardrailCheckRow, GuardrailRow, GuardrailStatus, GuardrailVersionRow
from outcrop.iam.audit import record_event
from outcrop.iam.principal import Principal
from outcrop.platform.database import Database, utc_now
from outcrop.platform.idempotency import run_once
from outcrop.platform.pagination import page
from outcrop.runtime.service import RuntimeService

DRAFT = "DRAFT"
_ID_ALPHABET = string.ascii_lowercase + string.digits
_ARN = re.compile(r"arn:aws(?:-[^:]+)?:bedrock:(?P<region>[a-z0-9-]{1,20}):(?P<account>\d{12}):guardrail/"
                  r"(?P<id>[a-z0-9]+)")
_REFUSED = {"automatedReasoningPolicyConfig": "automated reasoning", "crossRegionConfig": "cross-Region inference",
            "kmsKeyId": "a KMS key", "tags": "tags"}
#: The members of CreateGuardrail kept as they are.
_PLAIN = ("name", "description", "blockedInputMessaging", "blockedOutputsMessaging")


def guardrail_arn(region: str, account: str, guardrail_id: str) -> str:
    return f"arn:aws:bedrock:{region}:{account}:guardrail/{guardrail_id}"


def parse_identifier(account: str, identifier: str, region: str | None = None) -> str:
    """A guardrail's id from its id or ARN (an ARN of another account, or Region, names nothing here)."""
    match = _ARN.fullmatch(identifier)
    if match is None:
        return identifier
    if match.group("account") != account or (region is not None and match.group("region") != region):
        raise ResourceNotFoundException(f"Guardrail {identifier} does not exist")
    return match.group("id")


class Guardrails:
    def __init__(self, db: Database, region: str, runtime: RuntimeService, embedding_model: str) -> None:
        self.db = db
        self.region = region
        self.runtime = runtime
        self.embedding_model = embedding_model
        self._references = ReferenceCache()  # topic definitions' and examples' vectors, for every caller

    def check(self, account: str, document: dict[str, Any], source: str, content: list[dict[str, Any]],
              full: bool = False) -> dict[str, Any]:
        """ApplyGuardrail's answer (assessment.apply), the meaning-based policies embedding with the catalog's
        embedding model as `account` sees it (not metered: guardrails are billed in their own units)."""
        def embed(texts: list[str]) -> Any:
            return self.runtime.vectors(account, self.embedding_model, texts)[2].numpy()
        return apply(document, source, content, full, Embedder(embed, self._references))

    # -- create, update ---------------------------------------------------------------------------

    def create(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        created = run_once(self.db, account_id=account, operation="CreateGuardrail",
                           token=params.get("clientRequestToken"), params=params, token_member="clientRequestToken",
                           create=lambda: self._create(account, params))
        row = self._row(account, created["guardrailId"])
        return {"guardrailId": row.guardrail_id, "guardrailArn": self._arn(row), "version": DRAFT,
                "createdAt": row.created_at}

    def _create(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        document = policies(params)
        guardrail_id, now = "".join(secrets.choice(_ID_ALPHABET) for _ in range(12)), utc_now()
        with self.db.session() as session:
            self._unique_name(session, account, params["name"])
            session.add(GuardrailRow(guardrail_id=guardrail_id, account_id=account, name=params["name"],
                                     status=GuardrailStatus.READY, draft=document, latest_version=0,
                                     created_at=now, updated_at=now))
        return {"guardrailId": guardrail_id}

    def update(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        guardrail_id = parse_identifier(account, params["guardrailIdentifier"], self.region)
        self._row(account, guardrail_id)
        document = policies(params)
        with self.db.session() as session:
            self._unique_name(session, account, params["name"], guardrail_id)
            row = session.get(GuardrailRow, guardrail_id)
            row.draft, row.name, row.updated_at = document, params["name"], utc_now()
        row = self._row(account, guardrail_id)
        return {"guardrailId": guardrail_id, "guardrailArn": self._arn(row), "version": DRAFT,
                "updatedAt": row.updated_at}

    def _unique_name(self, session: Any, account: str, name: str, guardrail_id: str | None = None) -> None:
        self.db.check_name_free(session, GuardrailRow, account, name, guardrail_id, "A guardrail")

    # -- versions ---------------------------------------------------------------------------------

    def create_version(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        guardrail_id = parse_identifier(account, params["guardrailIdentifier"], self.region)
        self._row(account, guardrail_id)
        created = run_once(self.db, account_id=account, operation="CreateGuardrailVersion",
                           token=params.get("clientRequestToken"), params=params, token_member="clientRequestToken",
                           create=lambda: self._create_version(guardrail_id, params.get("description")))
        return {"guardrailId": guardrail_id, "version": created["version"]}

    def _create_version(self, guardrail_id: str, description: str | None) -> dict[str, Any]:
        with self.db.session() as session:
            row = session.scalars(select(GuardrailRow).where(GuardrailRow.guardrail_id == guardrail_id)
                                  .with_for_update()).one()
            row.latest_version += 1
            version = str(row.latest_version)
            snapshot = copy.deepcopy(row.draft)
            if description is not None:
                snapshot["description"] = description
            snapshot["name"] = row.name
            session.add(GuardrailVersionRow(guardrail_id=guardrail_id, version=version, snapshot=snapshot,
                                            created_at=utc_now()))
        return {"version": version}

    # -- read, delete -----------------------------------------------------------------------------

    def _row(self, account: str, guardrail_id: str) -> GuardrailRow:
        with self.db.session() as session:
            row = session.get(GuardrailRow, guardrail_id)
        if row is None or row.account_id != account:
            raise ResourceNotFoundException(f"Guardrail {guardrail_id} does not exist")
        return row

    def _arn(self, row: GuardrailRow) -> str:
        return guardrail_arn(self.region, row.account_id, row.guardrail_id)

    def document(self, account: str, identifier: str, version: str | None) -> tuple[str, str, dict[str, Any]]:
        """(id, version, the policies) of a guardrail's DRAFT or numbered version: what enforcement reads."""
        guardrail_id = parse_identifier(account, identifier, self.region)
        row = self._row(account, guardrail_id)
        if version in (None, DRAFT):
            return guardrail_id, DRAFT, {**row.draft, "name": row.name}
        with self.db.session() as session:
            snapshot = session.get(GuardrailVersionRow, (guardrail_id, str(version)))
        if snapshot is None:
            raise ResourceNotFoundException(f"Version {version} of guardrail {guardrail_id} does not exist")
        return guardrail_id, str(version), snapshot.snapshot

    def get(self, account: str, identifier: str, version: str | None) -> dict[str, Any]:
        guardrail_id, version, document = self.document(account, identifier, version)
        row = self._row(account, guardrail_id)
        updated = row.updated_at
        if version != DRAFT:  # a version was last changed when it was made
            with self.db.session() as session:
                updated = session.get(GuardrailVersionRow, (guardrail_id, version)).created_at
        return {**document, "guardrailId": guardrail_id, "guardrailArn": self._arn(row), "version": version,
                "status": row.status, "createdAt": row.created_at, "updatedAt": updated}

    def list(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        """Every guardrail's DRAFT, or (with guardrailIdentifier) that guardrail's DRAFT and versions."""
        if params.get("guardrailIdentifier"):
            guardrail_id = parse_identifier(account, params["guardrailIdentifier"], self.region)
            row = self._row(account, guardrail_id)
            versions, token = page(self.db, select(GuardrailVersionRow).where(
                GuardrailVersionRow.guardrail_id == guardrail_id), GuardrailVersionRow.created_at,
                {**params, "sortOrder": "Ascending"})
            draft = [] if params.get("nextToken") else [self._summary(row, DRAFT, row.draft, row.updated_at)]
            return {"guardrails": draft + [self._summary(row, v.version, v.snapshot, v.created_at)
                                           for v in versions], "nextToken": token}
        rows, token = page(self.db, select(GuardrailRow).where(GuardrailRow.account_id == account),
                           GuardrailRow.created_at, params)
        return {"guardrails": [self._summary(r, DRAFT, r.draft, r.updated_at) for r in rows], "nextToken": token}

    def _summary(self, row: GuardrailRow, version: str, document: dict[str, Any], updated: Any) -> dict[str, Any]:
        return {"id": row.guardrail_id, "arn": self._arn(row), "status": row.status,
                "name": document.get("name", row.name), "description": document.get("description"),
                "version": version, "createdAt": row.created_at, "updatedAt": updated}

    def record(self, principal: Principal, request_id: str, guardrail_id: str, version: str, source: str,
               result: dict[str, Any], domain: str | None = None) -> None:
        """Every check is counted (with the call's requestMetadata.domain, for the insights report's
        intervention rate); an intervention also goes to the audit trail (`outcrop audit --operation
        GuardrailIntervention`): who, which guardrail and version, which direction, which policies, and
        what they did."""
        intervened = result["action"] == "GUARDRAIL_INTERVENED"
        with self.db.session() as session:
            session.add(GuardrailCheckRow(account_id=principal.account_id, guardrail_id=guardrail_id,
                                          version=version, source=source, intervened=intervened,
                                          domain=(domain or None) and domain[:256], request_id=request_id[:64],
                                          checked_at=utc_now()))
        if not intervened:
            return
        policies = sorted({policy.removesuffix("Policy") for assessment in result["assessments"]
                           for policy, findings in assessment.items() if policy != "invocationMetrics"
                           and any(f.get("action") not in (None, "NONE") for group in findings.values()
                                   if isinstance(group, list) for f in group)})
        record_event(self.db, service="bedrock", operation="GuardrailIntervention", principal=principal,
                     resource=f"{guardrail_arn(self.region, principal.account_id, guardrail_id)}:{version}",
                     result=f"{source} {'BLOCKED' if 'blocked' in result.get('actionReason', '') else 'MASKED'} "
                            f"{','.join(policies)}", request_id=request_id)

    def delete(self, account: str, identifier: str, version: str | None) -> dict[str, Any]:
        """One numbered version, or (no version, or DRAFT) the guardrail with all its versions."""
        guardrail_id = parse_identifier(account, identifier, self.region)
        self._row(account, guardrail_id)
        with self.db.session() as session:
            if version not in (None, DRAFT):
                if session.get(GuardrailVersionRow, (guardrail_id, str(version))) is None:
                    raise ResourceNotFoundException(f"Version {version} of guardrail {guardrail_id} does not exist")
                session.execute(delete(GuardrailVersionRow).where(GuardrailVersionRow.guardrail_id == guardrail_id,
                                                                  GuardrailVersionRow.version == str(version)))
                return {}
            session.execute(delete(GuardrailVersionRow).where(GuardrailVersionRow.guardrail_id == guardrail_id))
            session.execute(delete(GuardrailRow).where(GuardrailRow.guardrail_id == guardrail_id))
        return {}


# -- the policies, from CreateGuardrail's configuration to GetGuardrail's shape -------------------------

def policies(params: dict[str, Any]) -> dict[str, Any]:
    """The guardrail's document from CreateGuardrail/UpdateGuardrail's members: each policy checked, every
    per-direction action and switch filled in (inputAction defaults to the entry's action, or BLOCK)."""
    for member, what in _REFUSED.items():
        if params.get(member):
            raise ValidationException(f"{member} ({what}) is not supported on this server yet")
    document: dict[str, Any] = {k: params[k] for k in _PLAIN if params.get(k) is not None}
    document.update(_content_policy(params.get("contentPolicyConfig")))
    document.update(_topic_policy(params.get("topicPolicyConfig")))
    document.update(_grounding_policy(params.get("contextualGroundingPolicyConfig")))
    words = params.get("wordPolicyConfig") or {}
    _unique([" ".join(w["text"].lower().split()) for w in words.get("wordsConfig") or []], "wordsConfig", "text")
    _unique([m["type"] for m in words.get("managedWordListsConfig") or []], "managedWordListsConfig", "type")
    if words.get("wordsConfig") or words.get("managedWordListsConfig"):
        document["wordPolicy"] = {
            "words": [_directions(w, "BLOCK") | {"text": w["text"]} for w in words.get("wordsConfig") or []],
            "managedWordLists": [_directions(m, "BLOCK") | {"type": m["type"]}
                                 for m in words.get("managedWordListsConfig") or []]}
    sensitive = params.get("sensitiveInformationPolicyConfig") or {}
    if sensitive.get("piiEntitiesConfig") or sensitive.get("regexesConfig"):
        for i, entity in enumerate(sensitive.get("piiEntitiesConfig") or []):
            if entity["type"] not in SUPPORTED:
                raise ValidationException(
                    f"sensitiveInformationPolicyConfig.piiEntitiesConfig[{i}].type {entity['type']} is not supported "
                    f"on this server yet")
        _unique([e["type"] for e in sensitive.get("piiEntitiesConfig") or []], "piiEntitiesConfig", "type")
        _unique([r["name"] for r in sensitive.get("regexesConfig") or []], "regexesConfig", "name")
        for i, entry in enumerate(sensitive.get("regexesConfig") or []):
            try:
                regex.compile(entry["pattern"])
            except regex.error as exc:
                raise ValidationException(f"sensitiveInformationPolicyConfig.regexesConfig[{i}].pattern does not "
                                          f"compile: {exc}") from None
        document["sensitiveInformationPolicy"] = {
            "piiEntities": [_directions(e, e["action"]) | {"type": e["type"], "action": e["action"]}
                            for e in sensitive.get("piiEntitiesConfig") or []],
            "regexes": [_directions(r, r["action"]) | {k: r[k] for k in ("name", "description", "pattern", "action")
                                                       if r.get(k) is not None}
                        for r in sensitive.get("regexesConfig") or []]}
    return document


def _content_policy(config: dict[str, Any] | None) -> dict[str, Any]:
    if not config:
        return {}
    filters = config["filtersConfig"]
    member = "contentPolicyConfig.filtersConfig"
    _unique([f["type"] for f in filters], member, "type")
    for i, entry in enumerate(filters):
        if entry["type"] in UNSUPPORTED:
            raise ValidationException(f"{member}[{i}].type {entry['type']} is not supported on this server: no "
                                      "labelled data to train its classifier installs offline (see "
                                      "outcrop/guardrails/CONTENT_FILTERS.md)")
        if entry["type"] == "PROMPT_ATTACK" and entry["outputStrength"] != "NONE":
            raise ValidationException(f"{member}[{i}].outputStrength must be NONE for PROMPT_ATTACK: prompt attacks "
                                      "are checked in input only")
        for key in ("inputStrength", "outputStrength"):
            # A strength acts from one confidence up (HIGH from LOW ... LOW from HIGH only); a classifier whose
            # training data never reached that confidence would make the setting a silent no-op.
            if entry[key] != "NONE" and not content.reachable(entry["type"], LEVELS[4 - LEVELS.index(entry[key])]):
                raise ValidationException(f"{member}[{i}].{key} {entry[key]} cannot act on this server: the "
                                          f"{entry['type']} classifier never reaches the confidence it needs "
                                          "(see outcrop/guardrails/CONTENT_FILTERS.md)")
        for key in ("inputModalities", "outputModalities"):
            if set(entry.get(key) or ["TEXT"]) != {"TEXT"}:
                raise ValidationException(f"{member}[{i}].{key}: only TEXT is supported on this server (no image "
                                          "classifier installs offline)")
    return {"contentPolicy": {
        "filters": [_directions(f, "BLOCK") | {k: f[k] for k in ("type", "inputStrength", "outputStrength")}
                    | {"inputModalities": ["TEXT"], "outputModalities": ["TEXT"]} for f in filters],
        "tier": _tier(config, "contentPolicyConfig")}}


def _topic_policy(config: dict[str, Any] | None) -> dict[str, Any]:
    if not config:
        return {}
    topics = config["topicsConfig"]
    _unique([t["name"].lower() for t in topics], "topicPolicyConfig.topicsConfig", "name")
    return {"topicPolicy": {
        "topics": [_directions(t, "BLOCK") | {"name": t["name"], "definition": t["definition"],
                                              "examples": list(t.get("examples") or []), "type": t["type"]}
                   for t in topics],
        "tier": _tier(config, "topicPolicyConfig")}}


def _grounding_policy(config: dict[str, Any] | None) -> dict[str, Any]:
    if not config:
        return {}
    filters = config["filtersConfig"]
    _unique([f["type"] for f in filters], "contextualGroundingPolicyConfig.filtersConfig", "type")
    for i, entry in enumerate(filters):
        if not 0 <= entry["threshold"] <= 0.99:
            raise ValidationException(f"contextualGroundingPolicyConfig.filtersConfig[{i}].threshold must be between "
                                      f"0 and 0.99, not {entry['threshold']}")
    return {"contextualGroundingPolicy": {
        "filters": [{"type": f["type"], "threshold": f["threshold"], "action": f.get("action") or "BLOCK",
                     "enabled": f.get("enabled", True)} for f in filters],
        "tier": _tier(config, "contextualGroundingPolicyConfig")}}


def _tier(config: dict[str, Any], member: str) -> dict[str, str]:
    """The CLASSIC tier (English; the one these classifiers are). STANDARD's languages are not here."""
    tier = (config.get("tierConfig") or {}).get("tierName", "CLASSIC")
    if tier != "CLASSIC":
        raise ValidationException(f"{member}.tierConfig.tierName {tier} is not supported on this server: only "
                                  "CLASSIC (English)")
    return {"tierName": tier}


def _unique(values: list[str], member: str, key: str) -> None:
    seen: set[str] = set()
    for i, value in enumerate(values):
        if value in seen:
            raise ValidationException(f"{member}[{i}].{key} {value!r} appears twice: give each one action")
        seen.add(value)


def _directions(entry: dict[str, Any], default_action: str) -> dict[str, Any]:
    return {"inputAction": entry.get("inputAction") or default_action,
            "outputAction": entry.get("outputAction") or default_action,
            "inputEnabled": entry.get("inputEnabled", True), "outputEnabled": entry.get("outputEnabled", True)}
