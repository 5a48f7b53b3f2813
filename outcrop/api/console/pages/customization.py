"""Fine-tuning: jobs (a form to start one, live progress and the loss curve, stop) and custom models."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

from outcrop.api.console.app import Visit, page
from outcrop.api.sessions import Response
from outcrop.errors import BedrockError

CUSTOMIZATION_TYPES = ("FINE_TUNING", "CONTINUED_PRE_TRAINING")
#: The form's hyperparameters (Bedrock's names) and what it suggests; an empty field is left out of the request.
HYPERPARAMETERS = (("epochCount", "2"), ("batchSize", "1"), ("learningRate", "0.00001"),
                   ("learningRateWarmupSteps", ""))
#: How many objects the form's S3 picker lists (the object store page shows the rest).
PICKER_OBJECTS = 200
#: The operation the form makes (and whose authorization decides whether the form is drawn).
CREATE = "CreateModelCustomizationJob"


@page("GET", "customization")
def jobs(visit: Visit) -> Response:
    listed = visit.call("bedrock", "ListModelCustomizationJobs", {"sortBy": "CreationTime",
                                                                  "sortOrder": "Descending"})
    models = visit.call("bedrock", "ListCustomModels", {"sortBy": "CreationTime", "sortOrder": "Descending"})
    may_create = visit.refusal(CREATE, _candidates(visit)) is None
    return visit.render("customization.html", "Fine-tuning", jobs=listed["modelCustomizationJobSummaries"],
                        models=models["modelSummaries"], may_create=may_create)


def _customizable(visit: Visit) -> list[dict[str, Any]]:
    """The foundation models a job may start from (those that list a customization)."""
    try:
        return [m for m in visit.call("bedrock", "ListFoundationModels")["modelSummaries"]
                if m.get("customizationsSupported")]
    except BedrockError:  # a user who may not list the catalog names a base model by the API
        return []


def _candidates(visit: Visit) -> Iterator[dict[str, Any]]:
    """CreateModelCustomizationJob's parameters that decide its authorization: any base model (`*`), else each
    one the form offers (a policy may name some only)."""
    yield {}
    yield from ({"baseModelIdentifier": m["modelId"]} for m in _customizable(visit))


@page("GET", "customization/create")
def create_form(visit: Visit) -> Response:
    visit.require(CREATE, _candidates(visit))  # the form of a job the policy forbids: why not
    suffix = uuid.uuid4().hex[:6]
    return _form(visit, {"jobName": f"tune-{suffix}", "customModelName": f"custom-{suffix}",
                         "customizationType": "FINE_TUNING", **dict(HYPERPARAMETERS)})


@page("POST", "customization/create")
def create(visit: Visit) -> Response:
    form = visit.form
    params: dict[str, Any] = {
        "jobName": form.get("jobName", "").strip(), "customModelName": form.get("customModelName", "").strip(),
        "baseModelIdentifier": form.get("baseModelIdentifier", ""), "roleArn": form.get("roleArn", "").strip(),
        "customizationType": form.get("customizationType", "FINE_TUNING"),
        "trainingDataConfig": {"s3Uri": form.get("trainingData", "").strip()},
        "outputDataConfig": {"s3Uri": form.get("outputData", "").strip()},
        "hyperParameters": {name: form[name].strip() for name, _ in HYPERPARAMETERS if form.get(name, "").strip()},
    }
    if form.get("validationData", "").strip():
        params["validationDataConfig"] = {"validators": [{"s3Uri": form["validationData"].strip()}]}
    try:
        visit.call("bedrock", CREATE, params)
    except BedrockError as exc:  # the API's own words, beside the fields that caused them
        return _form(visit, form, error=f"{exc.code}: {exc.message}", status=exc.status)
    return visit.redirect(f"customization/jobs/{params['jobName']}")


def _form(visit: Visit, values: dict[str, str], error: str = "", status: int = 200) -> Response:
    # The base models this principal may start a job from (its policy may name some only).
    bases = [m for m in visit.call("bedrock", "ListFoundationModels")["modelSummaries"]
             if m.get("customizationsSupported")
             and visit.refusal(CREATE, [{"baseModelIdentifier": m["modelId"]}]) is None]
    try:
        roles = visit.call_json("iam", "ListRoles")["Roles"]
    except BedrockError:  # a user who may not list roles types the ARN
        roles = []
    return visit.render("customization_create.html", "Start a fine-tuning job", status=status, values=values,
                        error=error, bases=bases, roles=roles, types=CUSTOMIZATION_TYPES,
                        hyperparameters=HYPERPARAMETERS, objects=_objects(visit))


def _objects(visit: Visit) -> list[str]:
    """The S3 picker's choices: the JSONL objects this principal may list, and its buckets as output folders."""
    store, found = visit.store(), []
    try:
        for bucket in store.list_buckets():
            found.append(f"s3://{bucket}/")
            try:
                found += [str(info.uri) for info in store.list(f"s3://{bucket}/")
                          if info.uri.key.endswith((".jsonl", ".jsonl.gz"))][:PICKER_OBJECTS]
            except BedrockError:
                pass  # a bucket it may see but not list
            if len(found) >= PICKER_OBJECTS:
                break
    except BedrockError:
        pass
    return found[:PICKER_OBJECTS]


@page("GET", "customization/jobs/(?P<name>[^/]+)")
def job(visit: Visit, name: str) -> Response:
    found = visit.call("bedrock", "GetModelCustomizationJob", {"jobIdentifier": name})
    may_provision = bool(found.get("outputModelArn")) and visit.refusal(
        "CreateProvisionedModelThroughput", [{"modelId": found["outputModelArn"]}]) is None
    return visit.render("customization_job.html", found["jobName"], job=found, notice=visit.query.get("notice", ""),
                        may_provision=may_provision)


@page("POST", "customization/jobs/(?P<name>[^/]+)/stop")
def stop(visit: Visit, name: str) -> Response:
    visit.call("bedrock", "StopModelCustomizationJob", {"jobIdentifier": name})
    return visit.redirect(f"customization/jobs/{name}")


@page("GET", "customization/models/(?P<name>[^/]+)")
def custom_model(visit: Visit, name: str) -> Response:
    found = visit.call("bedrock", "GetCustomModel", {"modelIdentifier": name})
    may_provision = visit.refusal("CreateProvisionedModelThroughput", [{"modelId": found["modelArn"]}]) is None
    return visit.render("custom_model.html", found["modelName"], model=found, may_provision=may_provision)


@page("POST", "customization/models/(?P<name>[^/]+)/delete")
def delete_model(visit: Visit, name: str) -> Response:
    visit.call("bedrock", "DeleteCustomModel", {"modelIdentifier": name})
    return visit.redirect("customization")
