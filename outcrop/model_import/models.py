"""Imported models as the runtime sees them: an account's row by name or ARN, and how to serve it.

Kept apart from ModelImports (the API's jobs and models) so that the runtime, in the server and in a job
process, can resolve an imported model's ARN without the import service (its IAM, job runner, store).
"""

from __future__ import annotations

from pathlib import Path

from outcrop.catalog.arns import parse_bedrock_arn
from outcrop.catalog.cards import FoundationModel, WeightsSource
from outcrop.catalog.served import ServedModel
from outcrop.errors import ResourceNotFoundException
from outcrop.model_import.tables import ImportedModelRow
from outcrop.platform.database import Database

IMPORTED_MODEL = "imported-model"
#: The provider an imported model's card names.
PROVIDER = "imported"


def imported_model_arn(region: str, account: str, model_id: str) -> str:
    return f"arn:aws:bedrock:{region}:{account}:{IMPORTED_MODEL}/{model_id}"


def is_imported_model_arn(identifier: str) -> bool:
    return f":{IMPORTED_MODEL}/" in identifier


class ImportedModels:
    def __init__(self, db: Database, region: str) -> None:
        self.db = db
        self.region = region

    def row(self, account: str, identifier: str) -> ImportedModelRow:
        """One of the account's imported models by name or ARN (another account's 'does not exist')."""
        arn = parse_bedrock_arn(identifier, self.region)
        if arn is not None:
            if arn.resource_type != IMPORTED_MODEL:
                raise ResourceNotFoundException(f"The imported model {identifier} does not exist")
            identifier = str(arn)
        return self.db.owned(ImportedModelRow, ImportedModelRow.model_name, account, identifier, "imported model")

    def served_model(self, account: str, identifier: str) -> ServedModel:
        """What serving the imported model `identifier` (its ARN) takes; ResourceNotFoundException when this
        account has none such (deleted, never imported, another account's)."""
        row = self.row(account, identifier)
        return ServedModel(row.model_arn, card(row), Path(row.weights_path))


def card(row: ImportedModelRow) -> FoundationModel:
    """An imported model as the runtime reads a model: a text model answering its family's InvokeModel body,
    on demand, under its ARN (what usage records, the bill and the invocation log name)."""
    return FoundationModel(
        model_id=row.model_arn, name=row.model_name, provider=PROVIDER, input_modalities=("TEXT",),
        output_modalities=("TEXT",), streaming=True, customizations=(), inference_types=("ON_DEMAND",),
        native_format=row.native_format, context_length=row.context_length,
        source=WeightsSource(kind="local-folder", path=row.weights_path))
