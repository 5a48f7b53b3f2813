"""Guardrails: the list, a form to create one with the common policies (a denied topic, content filters, custom
words and the profanity list, PII entities, a regex), one guardrail (its policies told readably, its versions,
a new version, delete) and its test panel: ApplyGuardrail on a text as INPUT or OUTPUT, showing the action, the
text as it leaves the guardrail, and every policy's findings."""

from __future__ import annotations

from typing import Any

from outcrop.api.console.app import Visit, page
from outcrop.api.sessions import Response
from outcrop.errors import BedrockError

DRAFT = "DRAFT"
#: Bedrock's default blocked messages (its console's).
BLOCKED_MESSAGE = "Sorry, the model cannot answer this question."
CONTENT_FILTERS = ("HATE", "INSULTS", "SEXUAL", "VIOLENCE", "MISCONDUCT", "PROMPT_ATTACK")
STRENGTHS = ("NONE", "LOW", "MEDIUM", "HIGH")
#: The PII entity types the create form offers (Bedrock's names; the API takes more).
PII_TYPES = ("NAME", "EMAIL", "PHONE", "ADDRESS", "AGE", "USERNAME", "PASSWORD", "URL", "IP_ADDRESS",
             "CREDIT_DEBIT_CARD_NUMBER", "US_SOCIAL_SECURITY_NUMBER", "US_PASSPORT_NUMBER", "DRIVER_ID",
             "INTERNATIONAL_BANK_ACCOUNT_NUMBER", "AWS_ACCESS_KEY", "AWS_SECRET_KEY")
PII_ACTIONS = ("BLOCK", "ANONYMIZE")
SOURCES = ("INPUT", "OUTPUT")
#: ApplyGuardrail's findings as the test panel tables them: (policy, group, heading, columns).
FINDINGS = (
    ("topicPolicy", "topics", "Denied topics", ("name", "type", "action", "detected")),
    ("contentPolicy", "filters", "Content filters", ("type", "confidence", "filterStrength", "action", "detected")),
    ("wordPolicy", "customWords", "Custom words", ("match", "action", "detected")),
    ("wordPolicy", "managedWordLists", "Managed word lists", ("match", "type", "action", "detected")),
    ("sensitiveInformationPolicy", "piiEntities", "PII entities", ("type", "match", "action", "detected")),
    ("sensitiveInformationPolicy", "regexes", "Regexes", ("name", "match", "regex", "action", "detected")),
    ("contextualGroundingPolicy", "filters", "Contextual grounding",
     ("type", "threshold", "score", "action", "detected")),
)


@page("GET", "guardrails")
def guardrails(visit: Visit) -> Response:
    found, next_token = visit.listing("bedrock", "ListGuardrails", "guardrails")
    return visit.render("guardrails.html", "Guardrails", guardrails=found, next_token=next_token,
                        may_create=visit.refusal("CreateGuardrail") is None)


# -- create --------------------------------------------------------------------------------------------

@page("GET", "guardrails/create")
def create_form(visit: Visit) -> Response:
    visit.require("CreateGuardrail")  # a form the policy forbids sending: why not, instead
    return _create_form(visit, {"blockedInputMessaging": BLOCKED_MESSAGE, "blockedOutputsMessaging": BLOCKED_MESSAGE})


@page("POST", "guardrails/create")
def create(visit: Visit) -> Response:
    try:
        created = visit.call("bedrock", "CreateGuardrail", create_params(visit.form))
    except BedrockError as exc:
        return _create_form(visit, visit.form, error=f"{exc.code}: {exc.message}", status=exc.status)
    return visit.redirect(f"guardrails/{created['guardrailId']}")


def _create_form(visit: Visit, values: dict[str, str], error: str = "", status: int = 200) -> Response:
    return visit.render("guardrails_create.html", "Create a guardrail", status=status, values=values, error=error,
                        filters=CONTENT_FILTERS, strengths=STRENGTHS, pii_types=PII_TYPES, pii_actions=PII_ACTIONS)


def create_params(form: dict[str, str]) -> dict[str, Any]:
    """CreateGuardrail's members from the form: a policy appears only when the form fills it in."""
    params: dict[str, Any] = {"name": form.get("name", "").strip(),
                              "blockedInputMessaging": form.get("blockedInputMessaging", ""),
                              "blockedOutputsMessaging": form.get("blockedOutputsMessaging", "")}
    if form.get("description", "").strip():
        params["description"] = form["description"].strip()
    if form.get("topicName", "").strip() or form.get("topicDefinition", "").strip():
        params["topicPolicyConfig"] = {"topicsConfig": [{
            "name": form.get("topicName", "").strip(), "definition": form.get("topicDefinition", "").strip(),
            "examples": _lines(form.get("topicExamples", "")), "type": "DENY"}]}
    filters = [{"type": kind, "inputStrength": form.get(f"filter_{kind}_input") or "NONE",
                "outputStrength": form.get(f"filter_{kind}_output") or "NONE"} for kind in CONTENT_FILTERS]
    filters = [f for f in filters if (f["inputStrength"], f["outputStrength"]) != ("NONE", "NONE")]
    if filters:
        params["contentPolicyConfig"] = {"filtersConfig": filters}
    words: dict[str, Any] = {}
    if _lines(form.get("words", "")):
        words["wordsConfig"] = [{"text": w} for w in _lines(form["words"])]
    if form.get("profanity"):
        words["managedWordListsConfig"] = [{"type": "PROFANITY"}]
    if words:
        params["wordPolicyConfig"] = words
    sensitive: dict[str, Any] = {}
    pii = [{"type": kind, "action": form[f"pii_{kind}"]} for kind in PII_TYPES if form.get(f"pii_{kind}")]
    if pii:
        sensitive["piiEntitiesConfig"] = pii
    if form.get("regexName", "").strip() or form.get("regexPattern", "").strip():
        sensitive["regexesConfig"] = [{"name": form.get("regexName", "").strip(),
                                       "pattern": form.get("regexPattern", ""),
                                       "action": form.get("regexAction") or "ANONYMIZE"}]
    if sensitive:
        params["sensitiveInformationPolicyConfig"] = sensitive
    return params


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


# -- one guardrail -------------------------------------------------------------------------------------

@page("GET", "guardrails/(?P<gid>[^/]+)")
def guardrail(visit: Visit, gid: str) -> Response:
    return _guardrail_page(visit, gid, version=visit.query.get("version") or DRAFT)


def _guardrail_page(visit: Visit, gid: str, version: str = DRAFT, status: int = 200, **context: Any) -> Response:
    """The guardrail as `version` has it, its versions, and the test panel (with this turn's result, if any)."""
    params = {"guardrailIdentifier": gid} | ({"guardrailVersion": version} if version != DRAFT else {})
    found = visit.call("bedrock", "GetGuardrail", params)
    versions = visit.call("bedrock", "ListGuardrails", {"guardrailIdentifier": gid})["guardrails"]
    defaults = {"error": "", "test": {"source": "INPUT", "guardrailVersion": version}, "test_error": "",
                "result": None}
    return visit.render("guardrails_one.html", found["name"], status=status, guardrail=found, gid=gid,
                        versions=versions, sources=SOURCES, findings=FINDINGS, **{**defaults, **context})


@page("POST", "guardrails/(?P<gid>[^/]+)/apply")
def apply(visit: Visit, gid: str) -> Response:
    form = visit.form
    params: dict[str, Any] = {"guardrailIdentifier": gid, "guardrailVersion": form.get("guardrailVersion") or DRAFT,
                              "source": form.get("source") or "INPUT",
                              "content": [{"text": {"text": form.get("text", "")}}]}
    if form.get("full"):
        params["outputScope"] = "FULL"
    try:
        result = visit.call("bedrock-runtime", "ApplyGuardrail", params)
    except BedrockError as exc:
        return _guardrail_page(visit, gid, status=exc.status, test=form, test_error=f"{exc.code}: {exc.message}")
    return _guardrail_page(visit, gid, test=form, result=result)


@page("POST", "guardrails/(?P<gid>[^/]+)/versions")
def create_version(visit: Visit, gid: str) -> Response:
    params = {"guardrailIdentifier": gid} | (
        {"description": visit.form["description"].strip()} if visit.form.get("description", "").strip() else {})
    try:
        created = visit.call("bedrock", "CreateGuardrailVersion", params)
    except BedrockError as exc:
        return _guardrail_page(visit, gid, status=exc.status, error=f"{exc.code}: {exc.message}")
    return visit.redirect(f"guardrails/{gid}?version={created['version']}")


@page("POST", "guardrails/(?P<gid>[^/]+)/delete")
def delete(visit: Visit, gid: str) -> Response:
    try:
        visit.call("bedrock", "DeleteGuardrail", {"guardrailIdentifier": gid})
    except BedrockError as exc:
        return _guardrail_page(visit, gid, status=exc.status, error=f"{exc.code}: {exc.message}")
    return visit.redirect("guardrails")
