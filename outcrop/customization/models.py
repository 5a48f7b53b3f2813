"""Custom models as other services see them: an account's row by name or ARN, and how to serve it.

Kept apart from CustomizationService (the API's jobs and models) so that provisioning and a job process's
runtime can look custom models up without the whole customization service (its IAM, job runner, engine).
"""

from __future__ import annotations

from pathlib import Path

from outcrop.catalog.served import ServedModel
from outcrop.catalog.service import Catalog
from outcrop.customization.tables import CustomModelRow
from outcrop.errors import ResourceNotFoundException, ValidationException
from outcrop.platform.database import Database


class CustomModels:
    def __init__(self, db: Database, catalog: Catalog, region: str) -> None:
        self.db = db
        self.catalog = catalog
        self.region = region

    def row(self, account: str, identifier: str) -> CustomModelRow:
        """One of the account's custom models by name or ARN (another account's 'does not exist')."""
        return self.db.owned(CustomModelRow, CustomModelRow.model_name, account, identifier, "custom model")

    def served_model(self, account: str, identifier: str) -> ServedModel:
        """The weights behind a custom model of this account, or a foundation model, for provisioned serving."""
        if ":custom-model/" in identifier:
            try:
                row = self.row(account, identifier)
            except ResourceNotFoundException:
                raise ValidationException(f"The model {identifier} does not exist in this account") from None
            base = Path(row.base_weights_path) if row.method == "lora" else None
            return ServedModel(row.model_arn, self.catalog.get(row.base_model_id), Path(row.weights_path), base)
        try:
            card = self.catalog.get(identifier)
        except ResourceNotFoundException:
            raise ValidationException(f"The model {identifier} is neither a custom model nor a foundation model "
                                      "in this catalog") from None
        if "PROVISIONED" not in card.inference_types:
            raise ValidationException(f"The model {card.model_id} does not support provisioned throughput")
        return ServedModel(card.arn(self.region), card,
                           self.catalog.local_weights(card))
