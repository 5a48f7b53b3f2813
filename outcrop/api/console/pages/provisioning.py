"""Provisioned throughput: buy model units for a model, change them, see their use and cost, delete them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

from outcrop.api.console.app import Visit, page
from outcrop.api.sessions import Response
from outcrop.errors import BedrockError

#: Statuses that change by themselves: their pages reload until they settle.
MOVING = ("Creating", "Updating")
CREATE = "CreateProvisionedModelThroughput"


@page("GET", "provisioned")
def throughputs(visit: Visit) -> Response:
    listed = visit.call("bedrock", "ListProvisionedModelThroughputs", {"sortBy": "CreationTime",
                                                                       "sortOrder": "Descending"})
    rows = listed["provisionedModelSummaries"]
    may_create = visit.refusal(CREATE, _candidates(visit, "")) is None
    return visit.render("provisioned.html", "Provisioned throughput", throughputs=rows, may_create=may_create,
                        refresh=3 if any(t["status"] in MOVING for t in rows) else 0)


def _custom_models(visit: Visit) -> list[dict[str, Any]]:
    try:
        return visit.call("bedrock", "ListCustomModels")["modelSummaries"]
    except BedrockError:
        return []


def _candidates(visit: Visit, model: str) -> Iterator[dict[str, Any]]:
    """CreateProvisionedModelThroughput's parameters that decide its authorization: the model the form is for, or
    else any model (`*`), else each of the account's custom models."""
    if model:
        yield {"modelId": model}
        return
    yield {}
    yield from ({"modelId": m["modelArn"]} for m in _custom_models(visit))


@page("GET", "provisioned/create")
def create_form(visit: Visit) -> Response:
    visit.require(CREATE, _candidates(visit, visit.query.get("model", "")))
    return _form(visit, {"provisionedModelName": f"pt-{uuid.uuid4().hex[:6]}", "modelId": visit.query.get("model", ""),
                         "modelUnits": "1"})


@page("POST", "provisioned/create")
def create(visit: Visit) -> Response:
    form = visit.form
    params: dict[str, Any] = {"provisionedModelName": form.get("provisionedModelName", "").strip(),
                              "modelId": form.get("modelId", "").strip()}
    try:
        params["modelUnits"] = int(form.get("modelUnits", ""))
    except ValueError:
        params["modelUnits"] = form.get("modelUnits", "")  # the API's validation names it, as for any caller
    if form.get("commitmentDuration"):
        params["commitmentDuration"] = form["commitmentDuration"]
    try:
        visit.call("bedrock", CREATE, params)
    except BedrockError as exc:
        return _form(visit, form, error=f"{exc.code}: {exc.message}", status=exc.status)
    return visit.redirect(f"provisioned/{params['provisionedModelName']}")  # its name or ARN identifies it


def _form(visit: Visit, values: dict[str, str], error: str = "", status: int = 200) -> Response:
    custom = _custom_models(visit)
    return visit.render("provisioned_create.html", "Buy provisioned throughput", status=status, values=values,
                        error=error, custom_models=custom)


@page("GET", "provisioned/(?P<ident>[^/]+)")
def throughput(visit: Visit, ident: str) -> Response:
    found = visit.call("bedrock", "GetProvisionedModelThroughput", {"provisionedModelId": ident})
    return visit.render("provisioned_one.html", found["provisionedModelName"], throughput=found, ident=ident,
                        error=visit.query.get("error", ""), refresh=3 if found["status"] in MOVING else 0)


@page("POST", "provisioned/(?P<ident>[^/]+)/update")
def update(visit: Visit, ident: str) -> Response:
    params: dict[str, Any] = {"provisionedModelId": ident}
    for name in ("desiredProvisionedModelName", "desiredModelId"):
        if visit.form.get(name, "").strip():
            params[name] = visit.form[name].strip()
    try:
        visit.call("bedrock", "UpdateProvisionedModelThroughput", params)
    except BedrockError as exc:
        found = visit.call("bedrock", "GetProvisionedModelThroughput", {"provisionedModelId": ident})
        return visit.render("provisioned_one.html", found["provisionedModelName"], status=exc.status,
                            throughput=found, ident=ident, error=f"{exc.code}: {exc.message}", refresh=0)
    return visit.redirect(f"provisioned/{params.get('desiredProvisionedModelName', ident)}")


@page("POST", "provisioned/(?P<ident>[^/]+)/delete")
def delete(visit: Visit, ident: str) -> Response:
    visit.call("bedrock", "DeleteProvisionedModelThroughput", {"provisionedModelId": ident})
    return visit.redirect("provisioned")
