"""Inference profiles: Bedrock's names for "this model, tracked this way", and how every model name resolves.

Two kinds, as on Bedrock. System-defined profiles are a geo prefix and a model id
(`us.anthropic.claude-3-5-haiku-20241022-v1:0`); they exist for every model this server can answer for, and
ListInferenceProfiles lists those of the aliased Bedrock ids in this region's geography. Application profiles
are an account's own (CreateInferenceProfile copies a foundation model or a system profile): another account
neither sees nor uses them, and their usage is recorded under the model that answered, with the profile's
ARN as what was invoked.

`model` is the one place a runtime model identifier becomes a catalog card: a model id or foundation-model
ARN (aliases included, `catalog.Catalog.get`), a system profile id or ARN (any geo prefix, in any region), or
an application profile ARN or id. A catalog card whose weights are not on this machine and cannot be fetched
(offline, or a gated repository) is answered by the model the alias patterns give its id, when that one is
here (`_card`): `meta.llama3-1-8b-instruct-v1:0` offline runs on the chat model, and says so as any alias
does. `authorization_arns` gives what IAM checks for the same identifier: the profile's ARN and every model
ARN behind it (the alias or stand-in and the local model), so a model denied by a policy stays denied
whatever name or profile reaches it.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from outcrop.catalog.arns import BedrockArn, foundation_model_arn, model_arn, parse_bedrock_arn
from outcrop.catalog.cards import FoundationModel
from outcrop.catalog.service import SERVED_BY_MEMBER, Catalog
from outcrop.errors import (
    ConflictException,
    ResourceNotFoundException,
    ServiceQuotaExceededException,
    TooManyTagsException,
    ValidationException,
)
from outcrop.platform import pagination
from outcrop.platform.database import Database, utc_now
from outcrop.platform.idempotency import run_once
from outcrop.platform.ids import new_id
from outcrop.platform.pagination import ASCENDING, DEFAULT_PAGE_SIZE, page
from outcrop.profiles.aliases import geo_prefix, system_profile_model
from outcrop.profiles.tables import InferenceProfileRow, InferenceProfileTag, ProfileStatus, ProfileType

SYSTEM = "inference-profile"
APPLICATION = "application-inference-profile"
FOUNDATION_MODEL = "foundation-model"
#: Application profiles one account may hold (Bedrock's default quota).
MAX_PROFILES_PER_ACCOUNT = 1000
#: Tags one resource may carry (the size of Bedrock's TagList).
MAX_TAGS = 200
_APPLICATION_ID = re.compile(r"[a-z0-9]{12}")
#: What a system-profile page token is signed for (pagination's tokens name their list).
_SYSTEM_LIST = "system-inference-profiles"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Seconds to wait for the hub when asking whether a missing model's weights could be fetched, and seconds
#: the answer is kept (so an unreachable hub costs one wait, not one a request).
HUB_PROBE_TIMEOUT = 5.0
HUB_PROBE_TTL = 300.0

log = logging.getLogger(__name__)


class InferenceProfiles:
    def __init__(self, db: Database, catalog: Catalog, region: str) -> None:
        self.db = db
        self.catalog = catalog
        self.region = region
        #: Serializes the name and quota checks with the insert they allow (two creates could both pass).
        self._create_lock = threading.Lock()
        #: Hub repository -> (its weights can be fetched, when that was asked), for `_fetchable`.
        self._probes: dict[str, tuple[bool, float]] = {}
        #: The catalog models another model has stood in for (each is logged once).
        self._stood_in: set[str] = set()

    # -- resolution (runtime, IAM) -------------------------------------------------------------------

    def model(self, account: str, identifier: str) -> FoundationModel:
        """The card a runtime model identifier names (an alias's card for an alias, a stand-in's for a catalog
        model that cannot be had here), or ResourceNotFoundException."""
        return self._card(self._resolve(account, identifier)[1])

    def served_model_id(self, account: str, identifier: str) -> str:
        """The local model that answers for `identifier`, as usage is recorded and billed; the identifier
        itself when it names no catalog model (a provisioned throughput is billed by its own ARN). A profile
        deleted since the call began still names its model."""
        try:
            return self._card(self._resolve(account, identifier, deleted=True)[1]).served_model_id
        except (ResourceNotFoundException, ValidationException):
            return identifier
        except Exception:  # metering never fails the call; the record keeps what was invoked
            log.exception("could not resolve %s for its usage record", identifier)
            return identifier

    def authorization_arns(self, account: str, identifier: str) -> list[str] | None:
        """Every ARN IAM must allow for a call on `identifier`: a profile's ARN, then the model's, then the
        local model's when the model is an alias. None when it names no profile and no catalog model (the
        caller then authorizes it its own way)."""
        try:
            profile_arn, model_id = self._resolve(account, identifier)
        except ResourceNotFoundException:
            arn = parse_bedrock_arn(identifier, self.region)
            return [str(arn)] if arn is not None and arn.resource_type in (SYSTEM, APPLICATION) else None
        arns = [profile_arn] if profile_arn else []
        try:
            card = self._card(model_id)
        except ResourceNotFoundException:
            return arns or None
        arns.append(foundation_model_arn(self.region, card.model_id))
        if card.served_by:
            arns.append(foundation_model_arn(self.region, card.served_by))
        return arns

    def invocation_arns(self, account: str, identifier: str) -> list[str]:
        """What invoking `identifier` must be allowed on: its chain of ARNs, or for a name outside the
        catalog and the profiles (a provisioned or custom model's ARN) the ARN it spells."""
        return self.authorization_arns(account, identifier) or [model_arn(identifier, self.region)]

    def profile_arn(self, account: str, identifier: str) -> str:
        """The canonical ARN an `inferenceProfileIdentifier` names (IAM authorizes against it): no lookup, so
        a profile that does not exist is authorized by the ARN it would have."""
        arn = parse_bedrock_arn(identifier, self.region)
        if arn is not None:
            return str(arn)
        if system_profile_model(identifier) is not None:
            return self._system_arn(account, identifier)
        return str(BedrockArn(self.region, account, APPLICATION, identifier))

    def _resolve(self, account: str, identifier: str, deleted: bool = False) -> tuple[str | None, str]:
        """(the profile's ARN or None, the model id or foundation-model ARN to look up in the catalog)."""
        arn = parse_bedrock_arn(identifier, self.region)
        if arn is not None:
            if arn.resource_type == APPLICATION:
                row = self._row(account, str(arn), deleted=deleted)
                return row.arn, row.model_id
            if arn.resource_type == SYSTEM:
                model_id = system_profile_model(arn.resource_id)
                if model_id is None or arn.account not in ("", account):
                    raise ResourceNotFoundException(f"The inference profile {identifier} does not exist")
                return self._system_arn(account, arn.resource_id), model_id
            if arn.resource_type == FOUNDATION_MODEL:
                return None, identifier
            raise ResourceNotFoundException(f"{identifier} is not a model or an inference profile")
        model_id = system_profile_model(identifier)
        if model_id is not None:
            return self._system_arn(account, identifier), model_id
        if _APPLICATION_ID.fullmatch(identifier):
            row = self._row(account, identifier, deleted=deleted, missing=None)
            if row is not None:
                return row.arn, row.model_id
        return None, identifier

    def _system_arn(self, account: str, profile_id: str) -> str:
        return str(BedrockArn(self.region, account, SYSTEM, profile_id))

    def _card(self, model_id: str) -> FoundationModel:
        """The catalog's card for `model_id`, or the card of the model standing in for it.

        A catalog model whose weights are absent and cannot be fetched would answer 404 "not on this
        machine"; when the alias patterns map its id (a Bedrock provider's, `meta.llama3-1-8b-instruct-v1:0`)
        to a model of the same output whose weights are here, that model answers instead, as an alias
        (`served_by` names it: the X-Outcrop-Model-Id header, `outcropModelId` and the usage record say so).
        Weights that are here, or can be fetched, are always the card's own."""
        card = self.catalog.get(model_id)
        if card.served_by:
            return card
        target = self.catalog.aliases.by_pattern(card.model_id)
        if not target or target == card.model_id or self.catalog.weights_path(card) is not None:
            return card
        try:
            local = self.catalog.get(target)
        except ResourceNotFoundException:
            return card
        if (local.output_modalities != card.output_modalities or self.catalog.weights_path(local) is None
                or self._fetchable(card)):
            return card
        if card.model_id not in self._stood_in:
            self._stood_in.add(card.model_id)
            log.warning("the weights of %s are not on this machine and cannot be fetched: %s answers for it",
                        card.model_id, local.served_model_id)
        return dataclasses.replace(local, model_id=card.model_id, served_by=local.served_model_id,
                                   provider=card.provider)

    def _fetchable(self, card: FoundationModel) -> bool:
        """Whether a hub model's weights could be fetched now: the hub answers for its config file (one HEAD,
        with a token if one is set; offline mode, no network, a gated or missing repository all say no)."""
        if card.source.kind != "hub":
            return False
        from huggingface_hub import get_hf_file_metadata, hf_hub_url, is_offline_mode

        if is_offline_mode():
            return False
        repo = card.source.repo
        known = self._probes.get(repo)
        if known is not None and time.monotonic() - known[1] < HUB_PROBE_TTL:
            return known[0]
        marker = "model_index.json" if card.image is not None else "config.json"
        try:
            get_hf_file_metadata(hf_hub_url(repo, marker), timeout=HUB_PROBE_TIMEOUT)
            reachable = True
        except Exception:  # offline, gated, no such repository: the fetch would fail the same way
            reachable = False
        self._probes[repo] = (reachable, time.monotonic())
        return reachable

    # -- the control plane ---------------------------------------------------------------------------

    def create(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        return run_once(self.db, account_id=account, operation="CreateInferenceProfile",
                        token=params.get("clientRequestToken"), params=params, token_member="clientRequestToken",
                        create=lambda: self._create(account, params))

    def _create(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        name = params["inferenceProfileName"]
        source = params["modelSource"].get("copyFrom")
        if not source:
            raise ValidationException("modelSource.copyFrom is required: the ARN of a foundation model or of a "
                                      "system-defined inference profile")
        model_id = self._source_model(account, source)
        tags = _tag_map(params.get("tags") or [])
        profile_id = new_id()
        arn = str(BedrockArn(self.region, account, APPLICATION, profile_id))
        now = utc_now()
        taken = ConflictException(f"An inference profile named {name} already exists")
        try:
            with self._create_lock, self.db.session() as session:
                live = select(func.count()).select_from(InferenceProfileRow).where(
                    InferenceProfileRow.account_id == account, InferenceProfileRow.deleted_at.is_(None))
                if session.scalar(live.where(InferenceProfileRow.name == name)):
                    raise taken
                if session.scalar(live) >= MAX_PROFILES_PER_ACCOUNT:
                    raise ServiceQuotaExceededException(
                        f"This account holds {MAX_PROFILES_PER_ACCOUNT} application inference profiles, the quota; "
                        "delete one first")
                session.add(InferenceProfileRow(
                    arn=arn, account_id=account, profile_id=profile_id, name=name,
                    description=params.get("description"), model_id=model_id, source_arn=source,
                    status=ProfileStatus.ACTIVE, created_at=now, updated_at=now))
                session.flush()
                session.add_all(InferenceProfileTag(profile_arn=arn, key=k, value=v) for k, v in tags.items())
        except IntegrityError:  # another process took the name between the check and the insert
            raise taken from None
        return {"inferenceProfileArn": arn, "status": ProfileStatus.ACTIVE}

    def _source_model(self, account: str, source: str) -> str:
        """The model id `copyFrom` names: a foundation model (or alias) ARN, or a system profile ARN."""
        arn = parse_bedrock_arn(source, self.region)
        if arn is None or arn.resource_type not in (FOUNDATION_MODEL, SYSTEM):
            raise ValidationException(f"modelSource.copyFrom '{source}' must be the ARN of a foundation model or of "
                                      "a system-defined inference profile")
        try:
            _, model_id = self._resolve(account, source)
            card = self.catalog.get(model_id)
        except ResourceNotFoundException:
            raise ResourceNotFoundException(f"The model source {source} does not exist") from None
        return card.model_id

    def get(self, account: str, identifier: str) -> dict[str, Any]:
        arn = parse_bedrock_arn(identifier, self.region)
        profile_id = arn.resource_id if arn is not None else identifier
        if (arn is None or arn.resource_type == SYSTEM) and system_profile_model(profile_id) is not None:
            if arn is not None and arn.account not in ("", account):
                raise ResourceNotFoundException(f"The inference profile {identifier} does not exist")
            return self._system(account, profile_id)
        if arn is not None and arn.resource_type != APPLICATION:
            raise ResourceNotFoundException(f"The inference profile {identifier} does not exist")
        return self._application(self._row(account, identifier))

    def list(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        """Bedrock lists the system-defined profiles unless `typeEquals` is APPLICATION (as its CLI shows)."""
        if params.get("typeEquals") == ProfileType.APPLICATION:
            query = select(InferenceProfileRow).where(InferenceProfileRow.account_id == account,
                                                      InferenceProfileRow.deleted_at.is_(None))
            rows, token = page(self.db, query, InferenceProfileRow.created_at, params)
            return {"inferenceProfileSummaries": [self._application(r) for r in rows], "nextToken": token}
        return self._system_page(account, params)

    def _system_page(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        """The system profiles in id order; a nextToken is the last id given, signed as every other list's
        tokens are (`platform/pagination.py`), so an edited or made-up token is refused."""
        geo = geo_prefix(self.region)
        ids = [f"{geo}.{alias}" for alias in self.catalog.alias_table()]
        key = pagination._KEYS.get(self.db, pagination._PROCESS_KEY)
        filters = pagination._filters_digest(params)
        if params.get("nextToken"):
            _, after = pagination._read_token(key, params["nextToken"], _SYSTEM_LIST, ASCENDING, filters)
            ids = [i for i in ids if i > str(after)]
        size = int(params.get("maxResults") or DEFAULT_PAGE_SIZE)
        shown = ids[:size]
        summaries = []
        for profile_id in shown:
            try:
                summaries.append(self._system(account, profile_id))
            except ResourceNotFoundException:  # an alias whose local model was unregistered
                continue
        token = pagination._make_token(key, {"e": _SYSTEM_LIST, "o": ASCENDING, "f": filters,
                                             "t": _EPOCH.isoformat(timespec="microseconds"), "k": [shown[-1]]}) \
            if len(ids) > size else None
        return {"inferenceProfileSummaries": summaries, "nextToken": token}

    def delete(self, account: str, identifier: str) -> None:
        arn = parse_bedrock_arn(identifier, self.region)
        if system_profile_model(arn.resource_id if arn is not None else identifier) is not None:
            raise ValidationException(f"{identifier} is a system-defined inference profile; only application "
                                      "inference profiles can be deleted")
        row = self._row(account, identifier)
        with self.db.session() as session:
            stored = session.get(InferenceProfileRow, row.arn)
            stored.deleted_at = stored.updated_at = utc_now()
            session.execute(delete(InferenceProfileTag).where(InferenceProfileTag.profile_arn == row.arn))

    # -- tags -----------------------------------------------------------------------------------------

    def tag(self, account: str, arn: str, tags: Iterable[dict[str, str]]) -> None:
        row = self._taggable(account, arn)
        new = _tag_map(tags)
        with self.db.session() as session:
            current = {t.key: t for t in session.scalars(select(InferenceProfileTag).where(
                InferenceProfileTag.profile_arn == row.arn))}
            if len(current.keys() | new.keys()) > MAX_TAGS:
                raise TooManyTagsException(f"A resource may carry at most {MAX_TAGS} tags")
            for key, value in new.items():
                if key in current:
                    current[key].value = value
                else:
                    session.add(InferenceProfileTag(profile_arn=row.arn, key=key, value=value))

    def untag(self, account: str, arn: str, keys: Iterable[str]) -> None:
        row = self._taggable(account, arn)
        with self.db.session() as session:
            session.execute(delete(InferenceProfileTag).where(InferenceProfileTag.profile_arn == row.arn,
                                                              InferenceProfileTag.key.in_(list(keys))))

    def tags(self, account: str, arn: str) -> list[dict[str, str]]:
        row = self._taggable(account, arn)
        with self.db.session() as session:
            found = session.scalars(select(InferenceProfileTag).where(InferenceProfileTag.profile_arn == row.arn)
                                    .order_by(InferenceProfileTag.key)).all()
        return [{"key": t.key, "value": t.value} for t in found]

    def _taggable(self, account: str, arn: str) -> InferenceProfileRow:
        parsed = parse_bedrock_arn(arn, self.region)
        if parsed is not None and parsed.resource_type == SYSTEM:
            raise ValidationException(f"{arn} is a system-defined inference profile, which carries no tags")
        return self._row(account, arn)

    # -- rows and their answers ----------------------------------------------------------------------

    def _row(self, account: str, identifier: str, deleted: bool = False,
             missing: type[Exception] | None = ResourceNotFoundException) -> Any:
        """The account's profile by ARN or id; another account's answers as a missing one."""
        arn = parse_bedrock_arn(identifier, self.region)
        column = InferenceProfileRow.arn if arn is not None else InferenceProfileRow.profile_id
        query = select(InferenceProfileRow).where(InferenceProfileRow.account_id == account,
                                                  column == (str(arn) if arn is not None else identifier))
        if not deleted:
            query = query.where(InferenceProfileRow.deleted_at.is_(None))
        with self.db.session() as session:
            row = session.scalars(query.order_by(InferenceProfileRow.created_at.desc())).first()
        if row is None and missing is not None:
            raise missing(f"The inference profile {identifier} does not exist")
        return row

    def _models(self, model_id: str) -> tuple[list[dict[str, str]], dict[str, str]]:
        """The profile's `models` member, and the extra member naming the local model (when known)."""
        models = [{"modelArn": foundation_model_arn(self.region, model_id)}]
        try:
            return models, {SERVED_BY_MEMBER: self._card(model_id).served_model_id}
        except ResourceNotFoundException:
            return models, {}

    def _system(self, account: str, profile_id: str) -> dict[str, Any]:
        model_id = system_profile_model(profile_id)
        try:
            card = self._card(model_id)
        except ResourceNotFoundException:
            raise ResourceNotFoundException(f"The inference profile {profile_id} does not exist") from None
        geo = profile_id.split(".", 1)[0]
        return {"inferenceProfileName": _readable(f"{geo.upper()} {model_id}"),
                "description": f"Routes requests to {model_id}. Outcrop answers with {card.served_model_id}",
                "inferenceProfileArn": self._system_arn(account, profile_id),
                "models": [{"modelArn": foundation_model_arn(self.region, model_id)}],
                "inferenceProfileId": profile_id, "status": ProfileStatus.ACTIVE,
                "type": ProfileType.SYSTEM_DEFINED, SERVED_BY_MEMBER: card.served_model_id}

    def _application(self, row: InferenceProfileRow) -> dict[str, Any]:
        models, served = self._models(row.model_id)
        return {"inferenceProfileName": row.name, "description": row.description, "createdAt": row.created_at,
                "updatedAt": row.updated_at, "inferenceProfileArn": row.arn, "models": models,
                "inferenceProfileId": row.profile_id, "status": row.status, "type": ProfileType.APPLICATION,
                **served}


def _tag_map(tags: Iterable[dict[str, str]]) -> dict[str, str]:
    found: dict[str, str] = {}
    for tag in tags:
        key = tag["key"]
        if key.lower().startswith("aws:"):
            raise ValidationException(f"The tag key {key} uses the reserved prefix aws:")
        found[key] = tag.get("value", "")
    if len(found) > MAX_TAGS:
        raise TooManyTagsException(f"A resource may carry at most {MAX_TAGS} tags")
    return found


def _readable(text: str) -> str:
    """A name Bedrock's InferenceProfileName pattern allows: letters and digits, single separators."""
    return re.sub(r"[ _-]{2,}", " ", re.sub(r"[^0-9A-Za-z _-]", " ", text)).strip()
