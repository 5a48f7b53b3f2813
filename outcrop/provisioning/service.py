"""Provisioned throughput: buy capacity in model units for a custom or foundation model, and serve it.

Create loads the model and answers one warm-up request before the status turns InService; an update
loads the new model while the old one keeps serving, then swaps; delete stops the traffic at once and
unloads the weights no other provisioned throughput uses. Every one records model-unit hours from
creation to deletion, priced by the price table and the commitment term.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from datetime import timedelta
from typing import Any

from sqlalchemy import func, insert, literal, select
from sqlalchemy.exc import IntegrityError

from outcrop.catalog.arns import foundation_model_arn
from outcrop.catalog.cards import ImageLimits
from outcrop.catalog.prices import PriceTable
from outcrop.catalog.served import ModelLookup, ServedModel, engine_kind
from outcrop.errors import (
    ModelNotReadyException,
    ResourceNotFoundException,
    ServiceQuotaExceededException,
    ValidationException,
)
from outcrop.inference.engine import Engine
from outcrop.inference.images import IMAGE, TEXT_TO_IMAGE, ImageRequest
from outcrop.inference.sampling import SamplingParams
from outcrop.platform.config import Settings
from outcrop.platform.database import Database, as_utc, utc_now
from outcrop.platform.idempotency import run_once
from outcrop.platform.ids import new_id
from outcrop.platform.pagination import page
from outcrop.platform.presence import Presence
from outcrop.provisioning.capacity import Capacity, SharedCapacity
from outcrop.provisioning.tables import ProvisionedThroughputRow, ThroughputStatus

log = logging.getLogger(__name__)

COMMITMENT_DAYS = {"OneMonth": 30, "SixMonths": 180}


def _units_lock_key(account: str) -> int:
    """The PostgreSQL advisory lock (a signed 64-bit key) that serializes an account's model-unit quota checks."""
    digest = hashlib.sha256(f"outcrop:model-units:{account}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class ProvisioningService:
    def __init__(self, db: Database, engine: Engine, lookup: ModelLookup, settings: Settings,
                 prices: PriceTable, presence: Presence | None = None) -> None:
        #: This process's presence on the database (a server's, or a job's that asks models): its throughputs'
        #: capacity is then shared with every other process there (SharedCapacity); without one (tests of one
        #: process), it is counted in this process.
        self.presence = presence
        self.db = db
        self.engine = engine
        self.lookup = lookup
        self.settings = settings
        self.prices = prices
        self._capacity: dict[str, Capacity | SharedCapacity] = {}
        self._lock = threading.Lock()

    # -- the control plane --------------------------------------------------------------------------

    def create(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        return run_once(self.db, account_id=account, operation="CreateProvisionedModelThroughput",
                        token=params.get("clientRequestToken"), params=params, token_member="clientRequestToken",
                        create=lambda: self._create(account, params))

    def _create(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        units = params["modelUnits"]
        if units < 1:
            raise ValidationException("modelUnits must be at least 1")
        served = self.lookup(account, params["modelId"])
        name = params["provisionedModelName"]
        arn = f"arn:aws:bedrock:{self.settings.region}:{account}:provisioned-model/{new_id()}"
        commitment = params.get("commitmentDuration")
        now = utc_now()
        values = {"arn": arn, "account_id": account, "name": name, "model_arn": served.model_arn,
                  "desired_model_arn": served.model_arn, "foundation_model_id": served.card.model_id,
                  "model_units": units, "status": ThroughputStatus.CREATING.value, "created_at": now,
                  "updated_at": now}
        if commitment:
            values.update(commitment=commitment,
                          commitment_expiration=now + timedelta(days=COMMITMENT_DAYS[commitment]))
        self._insert_within_quota(values)
        self._load_in_background(arn, account, served)
        return {"provisionedModelArn": arn}

    def _insert_within_quota(self, values: dict[str, Any]) -> None:
        """Insert the throughput if the account's live model units plus its own fit the per-account quota, in
        one transaction that every server on the database serializes per account: one INSERT ... SELECT ...
        WHERE held + units <= quota (atomic on SQLite, one writer at a time), on PostgreSQL after taking the
        account's advisory lock (`pg_advisory_xact_lock`, released at commit), so that two servers' sums cannot
        both see the last free units. The name is unique among the account's live throughputs by an index
        (uq_provisioned_throughputs_live_name): two creates of one name at once leave one.

        Only Create adds units: UpdateProvisionedModelThroughput has no modelUnits member on Bedrock
        (it renames or swaps the model), so an update never changes the sum and needs no check."""
        pt = ProvisionedThroughputRow
        account, name, units = values["account_id"], values["name"], values["model_units"]
        limit = self.settings.max_model_units_per_account
        live = (pt.account_id == account, pt.deleted_at.is_(None))
        held = select(func.coalesce(func.sum(pt.model_units), 0)).where(*live).scalar_subquery()
        columns = pt.__table__.c
        taken = ValidationException(f"A provisioned throughput named {name} already exists")
        try:
            with self.db.session() as session:
                if self.db.engine.dialect.name == "postgresql":
                    session.execute(select(func.pg_advisory_xact_lock(_units_lock_key(account))))
                session.execute(insert(pt).from_select(
                    list(values), select(*(literal(v, columns[k].type) for k, v in values.items()))
                    .where(held + units <= limit)))
                # Whether the row went in, read back: an INSERT ... SELECT's rowcount is not reported by every driver.
                inserted = session.get(pt, values["arn"]) is not None
                held_now = 0 if inserted else session.scalar(select(held))
        except IntegrityError:  # the name is a live throughput's of the account (the unique index)
            raise taken from None
        if not inserted:
            raise ServiceQuotaExceededException(
                f"The request for {units} model units exceeds the quota of {limit} model units of provisioned "
                f"throughput per account; this account holds {held_now}. Delete a provisioned throughput or "
                f"request fewer model units.")

    def _load_in_background(self, arn: str, account: str, served: ServedModel) -> None:
        threading.Thread(target=self._load, args=(arn, account, served), name=f"provision-{arn[-12:]}",
                         daemon=True).start()

    def _load(self, arn: str, account: str, served: ServedModel) -> None:
        """Load the model and answer one request; then it is in service (or failed, with the reason)."""
        try:
            self._warm_up(served)
        except Exception as exc:  # a model that cannot load fails its provisioned throughput, not the server
            log.exception("provisioned throughput %s could not load %s", arn, served.model_arn)
            self._set(arn, status=ThroughputStatus.FAILED, failure_message=f"The model could not be loaded: {exc}")
            return
        with self.db.session() as session:
            row = session.get(ProvisionedThroughputRow, arn)
            if row is None or row.deleted_at is not None:
                return
            previous = row.model_arn
            row.model_arn, row.status, row.failure_message, row.updated_at = (
                served.model_arn, ThroughputStatus.IN_SERVICE, None, utc_now())
        if previous != served.model_arn:
            self._unload_if_unused(account, previous)

    def _warm_up(self, served: ServedModel) -> None:
        """Load the model and answer one request with it: a text model's is one token; an image model's (a LoRA
        fused into its base pipeline, for a custom one) one image of its smallest size in one denoising step."""
        if "IMAGE" in served.card.output_modalities:
            deployment = self.engine.get(served.weights, IMAGE, base=served.base)
            side = (served.card.image or ImageLimits()).min_side
            request = ImageRequest(TEXT_TO_IMAGE, "warm-up", side, side, steps=1, guidance=1.0, seeds=(0,))
            deployment.scheduler.submit(request).result()
            return
        deployment = self.engine.get(served.weights, engine_kind(served.card), base=served.base)
        ids = deployment.loaded.tokenizer("Hello")["input_ids"] or [0]
        deployment.scheduler.submit(ids, SamplingParams(max_tokens=1, temperature=0)).result()

    def _set(self, arn: str, **fields: Any) -> None:
        with self.db.session() as session:
            row = session.get(ProvisionedThroughputRow, arn)
            for name, value in fields.items():
                setattr(row, name, value)
            row.updated_at = utc_now()

    def _row(self, account: str, identifier: str) -> ProvisionedThroughputRow:
        with self.db.session() as session:
            query = select(ProvisionedThroughputRow).where(ProvisionedThroughputRow.account_id == account,
                                                           ProvisionedThroughputRow.deleted_at.is_(None))
            column = ProvisionedThroughputRow.arn if identifier.startswith("arn:") else ProvisionedThroughputRow.name
            row = session.scalars(query.where(column == identifier)).first()
        if row is None:
            raise ResourceNotFoundException(f"The provisioned throughput {identifier} does not exist")
        return row

    def get(self, account: str, identifier: str) -> dict[str, Any]:
        row = self._row(account, identifier)
        return {**self._summary(row), "failureMessage": row.failure_message, "cost": self.cost(row),
                "utilization": self.utilization(row)}

    def utilization(self, row: ProvisionedThroughputRow) -> dict[str, Any]:
        """Outcrop's own member: the sequence slots the model units buy and how many are taken now (by every
        server on the database when there are several), and the tokens a minute they allow."""
        capacity = self._capacity.get(row.arn)
        slots = row.model_units * self.settings.mu_concurrent_sequences
        if capacity is None and self.presence is not None:  # unused here yet: other servers may hold its slots
            capacity = SharedCapacity(self.db, self.presence, row.arn, row.model_units,
                                      self.settings.mu_concurrent_sequences, self.settings.mu_tokens_per_minute,
                                      self.settings.provisioned_queue_seconds)
        return {"sequenceSlots": slots, "sequencesInUse": capacity.in_use if capacity is not None else 0,
                "tokensPerMinute": row.model_units * self.settings.mu_tokens_per_minute}

    def _summary(self, row: ProvisionedThroughputRow) -> dict[str, Any]:
        return {"provisionedModelName": row.name, "provisionedModelArn": row.arn, "modelArn": row.model_arn,
                "desiredModelArn": row.desired_model_arn,
                "foundationModelArn": foundation_model_arn(self.settings.region, row.foundation_model_id),
                "modelUnits": row.model_units, "desiredModelUnits": row.model_units, "status": row.status,
                "commitmentDuration": row.commitment, "commitmentExpirationTime": row.commitment_expiration,
                "creationTime": row.created_at, "lastModifiedTime": row.updated_at}

    def cost(self, row: ProvisionedThroughputRow) -> dict[str, Any]:
        """Model-unit hours from creation to now (or deletion) at the commitment term's price."""
        end = as_utc(row.deleted_at) if row.deleted_at else utc_now()
        hours = max(0.0, (end - as_utc(row.created_at)).total_seconds() / 3600)
        price = self.prices.mu_hour(row.foundation_model_id, row.commitment)
        mu_hours = row.model_units * hours
        return {"modelUnitHours": round(mu_hours, 6), "pricePerModelUnitHour": price,
                "costSoFar": round(mu_hours * price, 6), "currency": self.prices.currency}

    def list(self, account: str, params: dict[str, Any]) -> dict[str, Any]:
        query = select(ProvisionedThroughputRow).where(ProvisionedThroughputRow.account_id == account,
                                                       ProvisionedThroughputRow.deleted_at.is_(None))
        if params.get("statusEquals"):
            query = query.where(ProvisionedThroughputRow.status == params["statusEquals"])
        if params.get("modelArnEquals"):
            query = query.where(ProvisionedThroughputRow.model_arn == params["modelArnEquals"])
        if params.get("nameContains"):
            query = query.where(ProvisionedThroughputRow.name.contains(params["nameContains"], autoescape=True))
        rows, token = page(self.db, query, ProvisionedThroughputRow.created_at, params)
        return {"provisionedModelSummaries": [self._summary(r) for r in rows], "nextToken": token}

    def update(self, account: str, identifier: str, params: dict[str, Any]) -> None:
        row = self._row(account, identifier)
        new_name = params.get("desiredProvisionedModelName")
        if new_name and new_name != row.name:
            taken = ValidationException(f"A provisioned throughput named {new_name} already exists")
            with self.db.session() as session:
                if session.scalar(select(func.count()).select_from(ProvisionedThroughputRow).where(
                        ProvisionedThroughputRow.account_id == account, ProvisionedThroughputRow.name == new_name,
                        ProvisionedThroughputRow.deleted_at.is_(None))):
                    raise taken
            try:
                self._set(row.arn, name=new_name)
            except IntegrityError:  # taken by another request between the check and the rename (the unique index)
                raise taken from None
        if params.get("desiredModelId"):
            if row.status in (ThroughputStatus.CREATING, ThroughputStatus.UPDATING):
                raise ValidationException(f"The provisioned throughput is {row.status}; wait until it is InService")
            served = self.lookup(account, params["desiredModelId"])
            if served.card.model_id != row.foundation_model_id:
                raise ValidationException(
                    f"The model {served.model_arn} is based on {served.card.model_id}; this provisioned throughput "
                    f"serves models of {row.foundation_model_id} only")
            if served.model_arn != row.model_arn:
                self._set(row.arn, status=ThroughputStatus.UPDATING, desired_model_arn=served.model_arn)
                self._load_in_background(row.arn, account, served)  # the old model serves until the swap

    def delete(self, account: str, identifier: str, force: bool = False) -> None:
        row = self._row(account, identifier)
        if row.commitment_expiration and as_utc(row.commitment_expiration) > utc_now() and not force:
            raise ValidationException(
                f"The provisioned throughput {row.name} has a {row.commitment} commitment until "
                f"{row.commitment_expiration:%Y-%m-%d}; it cannot be deleted before the term ends")
        self._set(row.arn, deleted_at=utc_now())
        self._capacity.pop(row.arn, None)
        for model_arn in {row.model_arn, row.desired_model_arn}:
            self._unload_if_unused(account, model_arn)

    def _unload_if_unused(self, account: str, model_arn: str) -> None:
        """Free a model's memory once no live provisioned throughput serves it (foundation models stay)."""
        if ":custom-model/" not in model_arn:
            return
        with self.db.session() as session:
            still_used = session.scalar(select(func.count()).select_from(ProvisionedThroughputRow).where(
                ProvisionedThroughputRow.deleted_at.is_(None),
                (ProvisionedThroughputRow.model_arn == model_arn)
                | (ProvisionedThroughputRow.desired_model_arn == model_arn)))
        if not still_used:
            try:
                self.engine.unload(self.lookup(account, model_arn).weights)
            except ValidationException:
                pass  # the custom model is gone already

    def in_use(self, account: str, model_arn: str) -> str | None:
        """Why a custom model may not be deleted now (a live provisioned throughput serves it), or None."""
        with self.db.session() as session:
            names = session.scalars(select(ProvisionedThroughputRow.name).where(
                ProvisionedThroughputRow.account_id == account, ProvisionedThroughputRow.deleted_at.is_(None),
                (ProvisionedThroughputRow.model_arn == model_arn)
                | (ProvisionedThroughputRow.desired_model_arn == model_arn))).all()
        return f"the provisioned throughput {', '.join(names)} uses it" if names else None

    def resume(self) -> None:
        """At start: finish loading what a previous server was creating or updating."""
        with self.db.session() as session:
            pending = session.scalars(select(ProvisionedThroughputRow).where(
                ProvisionedThroughputRow.deleted_at.is_(None),
                ProvisionedThroughputRow.status.in_([ThroughputStatus.CREATING, ThroughputStatus.UPDATING]))).all()
        for row in pending:
            try:
                self._load_in_background(row.arn, row.account_id, self.lookup(row.account_id, row.desired_model_arn))
            except ValidationException as exc:
                self._set(row.arn, status=ThroughputStatus.FAILED, failure_message=str(exc))

    # -- the data plane -----------------------------------------------------------------------------

    def resolve(self, account: str, arn: str) -> tuple[ServedModel, Capacity | SharedCapacity]:
        """The model behind a provisioned ARN and the capacity its requests share."""
        row = self._row(account, arn)
        if row.status == ThroughputStatus.CREATING:
            raise ModelNotReadyException(f"The provisioned throughput {row.name} is still being created; "
                                         "retry when its status is InService")
        if row.status == ThroughputStatus.FAILED:
            raise ValidationException(f"The provisioned throughput {row.name} failed: {row.failure_message}")
        with self._lock:
            capacity = self._capacity.get(row.arn)
            if capacity is None or capacity.slots != row.model_units * self.settings.mu_concurrent_sequences:
                units = (row.model_units, self.settings.mu_concurrent_sequences, self.settings.mu_tokens_per_minute,
                         self.settings.provisioned_queue_seconds)
                capacity = self._capacity[row.arn] = (
                    SharedCapacity(self.db, self.presence, row.arn, *units) if self.presence is not None
                    else Capacity(*units))
        return self.lookup(account, row.model_arn), capacity
