"""The resources a request acts on, named the one way IAM policies name them.

Authorization must follow resolution, not the caller's spelling: a model or job can be named by id,
by name, or by an ARN, and policies are written against ARNs. So before any handler runs, every
identifier in the request is resolved to the canonical ARN of what it names (a foundation model's
`arn:aws:bedrock:REGION::foundation-model/ID`, a provisioned throughput's or a job's own ARN),
and ARNs of another partition or region are refused (catalog/arns.py). A name that reaches a model
through another name is authorized against every ARN on the way, as Bedrock does for inference
profiles: an inference profile's ARN and its model's, and for an alias (anthropic.claude-...) the
local model's too; a provisioned throughput's ARN and the model it serves (a custom model's ARN and its
base foundation model's): so a model a policy denies stays denied whichever name, profile, throughput or
fine-tune reaches it.
This is the only place the request path turns identifiers into authorization resources, so a new
operation cannot forget it: it names its identifier member in `_MEMBERS` below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from outcrop.agents.service import agent_arn, alias_arn
from outcrop.batch.service import job_arn as batch_job_arn
from outcrop.catalog.arns import foundation_model_arn, model_arn, parse_bedrock_arn
from outcrop.customization.tables import CustomizationJobRow, CustomModelRow
from outcrop.errors import ResourceNotFoundException
from outcrop.evaluation.tables import EvaluationJobRow
from outcrop.guardrails.service import guardrail_arn, parse_identifier
from outcrop.knowledge.service import knowledge_base_arn
from outcrop.model_import.tables import ImportedModelRow, ModelImportJobRow
from outcrop.provisioning.tables import ProvisionedThroughputRow
from outcrop.services import Services

#: "Any resource": what list and create operations without an identifier are authorized against.
ANY = "*"

Resolver = Callable[[Services, str, str], "str | list[str]"]


#: Operations that run a model: one reached through a provisioned throughput or a custom model must not be denied
#: on the models beneath it either (`beneath_arns`). Managing the throughput or the custom model (get, delete,
#: update) is not checked against them.
_INVOKING = frozenset({"InvokeModel", "InvokeModelWithResponseStream", "Converse", "ConverseStream"})


def _model(services: Services, account: str, identifier: str, beneath: bool = True) -> str | list[str]:
    """A model id or ARN (foundation, alias, inference profile, provisioned, custom). A bare name that is no
    foundation model may be one of the account's custom models (GetCustomModel takes names). With `beneath`, a
    provisioned throughput or a custom model is authorized with the models beneath it (`_beneath`)."""
    chain = services.profiles.authorization_arns(account, identifier)
    if chain:
        return chain
    arn = parse_bedrock_arn(identifier, services.settings.region)
    if arn is not None:
        return _with_beneath(services, account, str(arn)) if beneath else str(arn)
    try:
        return services.catalog.get(identifier).arn(services.settings.region)
    except ResourceNotFoundException:
        row = _owned(services, CustomModelRow, CustomModelRow.model_name, account, identifier)
        if row is None:
            return model_arn(identifier, services.settings.region)
        return _with_beneath(services, account, row.model_arn) if beneath else row.model_arn


def _model_itself(services: Services, account: str, identifier: str) -> str | list[str]:
    return _model(services, account, identifier, beneath=False)


def _with_beneath(services: Services, account: str, arn: str) -> str | list[str]:
    beneath = _beneath(services, account, arn)
    return [arn, *beneath] if beneath else arn


def _beneath(services: Services, account: str, arn: str, depth: int = 0) -> list[str]:
    """The ARNs of the models a provisioned throughput or custom model of the account serves, down to the
    foundation model (and, for an alias, its local model): a model a policy denies stays denied when it is
    reached through a throughput made on it, or a fine-tune of it. Nothing for another account's resource
    (the handler answers that it does not exist) or for any other kind of ARN."""
    region = services.settings.region
    found: list[str] = []
    if ":provisioned-model/" in arn:
        with services.db.session() as session:
            row = session.execute(select(ProvisionedThroughputRow.model_arn,
                                         ProvisionedThroughputRow.desired_model_arn,
                                         ProvisionedThroughputRow.foundation_model_id).where(
                ProvisionedThroughputRow.arn == arn, ProvisionedThroughputRow.account_id == account,
                ProvisionedThroughputRow.deleted_at.is_(None))).first()
        if row is not None:  # the model it serves, the one an update moves it to, and their foundation model
            found = [row.model_arn, row.desired_model_arn, foundation_model_arn(region, row.foundation_model_id)]
    elif ":custom-model/" in arn:
        with services.db.session() as session:
            base = session.scalar(select(CustomModelRow.base_model_id).where(
                CustomModelRow.model_arn == arn, CustomModelRow.account_id == account))
        if base is not None:
            found = [model_arn(base, region)]
    chain: list[str] = []
    for beneath in found:
        if beneath == arn or beneath in chain:
            continue
        if ":foundation-model/" in beneath:  # an alias reaches its local model too
            chain += services.profiles.authorization_arns(account, beneath) or [beneath]
        else:
            chain.append(beneath)
            if depth < 3:
                chain += _beneath(services, account, beneath, depth + 1)
    return list(dict.fromkeys(chain))


def model_arns(services: Services, account: str, identifier: str) -> list[str]:
    """Every ARN a model identifier reaches, for a request that names its model inside a structure
    (RetrieveAndGenerate's modelArn) and authorizes bedrock:InvokeModel on it itself."""
    resolved = _model(services, account, identifier)
    return [resolved] if isinstance(resolved, str) else resolved


def _imported_model(services: Services, account: str, identifier: str) -> str:
    """An imported model by ARN or by name (GetImportedModel and DeleteImportedModel take either): by name it
    is looked up among the account's imported models only, never taken for a foundation or custom model."""
    arn = parse_bedrock_arn(identifier, services.settings.region)
    if arn is not None:
        return str(arn)
    row = _owned(services, ImportedModelRow, ImportedModelRow.model_name, account, identifier)
    return row.model_arn if row is not None else ANY


def _knowledge_base(services: Services, account: str, identifier: str) -> str:
    """A knowledge base by its id (in the caller's account: another account's answers ResourceNotFound)."""
    return knowledge_base_arn(services.settings.region, account, identifier)


def _guardrail(services: Services, account: str, identifier: str) -> str:
    region = services.settings.region
    return guardrail_arn(region, account, parse_identifier(account, identifier, region))


def _profile(services: Services, account: str, identifier: str) -> str:
    """An inference profile by id or ARN: a system profile's ARN carries the caller's account, as on Bedrock."""
    return services.profiles.profile_arn(account, identifier)


def _provisioned(services: Services, account: str, identifier: str) -> str:
    arn = parse_bedrock_arn(identifier, services.settings.region)
    if arn is not None:
        return str(arn)
    with services.db.session() as session:
        arn = session.scalar(select(ProvisionedThroughputRow.arn).where(
            ProvisionedThroughputRow.account_id == account, ProvisionedThroughputRow.name == identifier,
            ProvisionedThroughputRow.deleted_at.is_(None)))
    return arn or ANY


def _job(table: Any | None) -> Resolver:
    """A job by ARN, or by name among the account's jobs of that kind (`table`)."""
    def resolve(services: Services, account: str, identifier: str) -> str:
        arn = parse_bedrock_arn(identifier, services.settings.region)
        if arn is not None:
            return str(arn)
        row = _owned(services, table, table.job_name, account, identifier) if table is not None else None
        return row.job_arn if row is not None else ANY
    return resolve


def _invocation_job(services: Services, account: str, identifier: str) -> str:
    """A batch inference job by ARN or by its 12-character id (its jobIdentifier takes no name)."""
    arn = parse_bedrock_arn(identifier, services.settings.region)
    if arn is not None:
        return str(arn)
    return batch_job_arn(services.settings.region, account, identifier)


def _arn(services: Services, account: str, identifier: str) -> str:
    """Any Bedrock ARN (tags name their resource so), checked and normalized."""
    arn = parse_bedrock_arn(identifier, services.settings.region)
    return str(arn) if arn is not None else ANY


def _owned(services: Services, table: Any, name_column: Any, account: str, name: str) -> Any:
    """The account's row called `name`, or None. A name that resolves to nothing is authorized against `*`
    (or its id's ARN): the handler then answers ResourceNotFoundException if the caller may act at all."""
    try:
        return services.db.owned(table, name_column, account, name, "resource")
    except ResourceNotFoundException:
        return None

#: Input members that identify what an operation acts on, and how each is resolved. An operation whose
#: input has none of them (lists, creations without a model) is authorized against `*`.
_MEMBERS: dict[str, Resolver] = {
    "modelId": _model,
    "modelIdentifier": _model,
    "baseModelIdentifier": _model,
    "desiredModelId": _model,
    "provisionedModelId": _provisioned,
    "inferenceProfileIdentifier": _profile,
    "resourceARN": _arn,
    "knowledgeBaseId": _knowledge_base,
    "guardrailIdentifier": _guardrail,
}

#: `jobIdentifier(s)` by the kind of job an operation names (its name's suffix).
_JOBS: dict[str, Resolver] = {"ModelCustomizationJob": _job(CustomizationJobRow),
                              "EvaluationJob": _job(EvaluationJobRow),
                              "ModelInvocationJob": _invocation_job,
                              "ModelImportJob": _job(ModelImportJobRow)}
#: Operations whose `modelIdentifier` names an imported model, not any model.
_IMPORTED_MODEL_OPERATIONS = frozenset({"GetImportedModel", "DeleteImportedModel"})


def beneath_arns(services: Services, account: str, operation: str, params: dict[str, Any]) -> list[str]:
    """For an operation that runs a model named through a provisioned throughput or a custom model: the models
    beneath it, down to the foundation model. The caller must not be explicitly denied the action on any of them (a
    model a policy denies stays denied however it is reached), but needs no Allow on them: as on Bedrock, an Allow on
    the provisioned model's ARN is enough to invoke it."""
    if operation not in _INVOKING:
        return []
    found: list[str] = []
    for member, resolve in _MEMBERS.items():
        if resolve is _model and isinstance(params.get(member), str) and params[member]:
            found += invocation_arns(services, account, params[member])[1]
    return list(dict.fromkeys(found))


def invocation_arns(services: Services, account: str, identifier: str) -> tuple[list[str], list[str]]:
    """For a model a request runs: the ARNs its name reaches (each needs the caller's Allow), and the models beneath
    a provisioned throughput or custom model among them (each must only not be denied: `beneath_arns`)."""
    named = _model_itself(services, account, identifier)
    named = [named] if isinstance(named, str) else named
    return named, list(dict.fromkeys(arn for n in named for arn in _beneath(services, account, n)))


def resources(services: Services, account: str, operation: str, params: dict[str, Any]) -> list[str]:
    """The canonical ARNs `operation` acts on (at least one: `*` when it names nothing)."""
    found: list[str] = []
    for member, resolve in _MEMBERS.items():
        if member == "modelIdentifier" and operation in _IMPORTED_MODEL_OPERATIONS:
            resolve = _imported_model
        elif resolve is _model:
            resolve = _model_itself  # what is beneath it is `beneath_arns`'s
        if isinstance(params.get(member), str) and params[member]:
            resolved = resolve(services, account, params[member])
            found += [resolved] if isinstance(resolved, str) else resolved
    if isinstance(params.get("agentId"), str) and params["agentId"]:  # the agent, or the alias InvokeAgent calls
        region = services.settings.region
        found.append(alias_arn(region, account, params["agentId"], params["agentAliasId"])
                     if isinstance(params.get("agentAliasId"), str) and params["agentAliasId"]
                     else agent_arn(region, account, params["agentId"]))
    copied = (params.get("modelSource") or {}).get("copyFrom")  # CreateInferenceProfile: what it reaches
    if isinstance(copied, str) and copied:
        found += services.profiles.invocation_arns(account, copied)
    jobs = params.get("jobIdentifiers") or ([params["jobIdentifier"]] if params.get("jobIdentifier") else [])
    if jobs:
        resolve = next((r for suffix, r in _JOBS.items() if operation.endswith(suffix)), _job(None))
        found += [resolve(services, account, job) for job in jobs]
    return found or [ANY]
