"""Knowledge bases: the list, a form to create one, and one knowledge base with its data sources and their recent
ingestion jobs (Sync starts one, a form adds an S3 data source), and its test panel: a question searched with
Retrieve, or answered with RetrieveAndGenerate by a chosen model, showing the passages, scores and sources."""

from __future__ import annotations

from typing import Any

from outcrop.api.console.app import Visit, page
from outcrop.api.sessions import Response
from outcrop.errors import BedrockError

#: Ingestion job statuses that change by themselves: the knowledge base's page reloads until they settle.
MOVING = ("STARTING", "IN_PROGRESS", "STOPPING")
#: How many of each data source's latest ingestion jobs the page shows.
RECENT_JOBS = 5
#: The test panel's search types (overrideSearchType); "" lets the knowledge base choose.
SEARCH_TYPES = ("", "HYBRID", "SEMANTIC")
DEFAULT_RESULTS = "5"


#: The notices a page may show after a change, by the code in `?notice=` (a link cannot put words on a page).
NOTICES = {"source-added": "Data source added: sync it to index its documents."}

@page("GET", "knowledge-bases")
def knowledge_bases(visit: Visit) -> Response:
    found, next_token = visit.listing("bedrock-agent", "ListKnowledgeBases", "knowledgeBaseSummaries")
    return visit.render("knowledge.html", "Knowledge bases", knowledge_bases=found, next_token=next_token,
                        may_create=visit.refusal("CreateKnowledgeBase") is None)


# -- create --------------------------------------------------------------------------------------------

@page("GET", "knowledge-bases/create")
def create_form(visit: Visit) -> Response:
    visit.require("CreateKnowledgeBase")  # a form the policy forbids sending: why not, instead
    return _create_form(visit, {})


@page("POST", "knowledge-bases/create")
def create(visit: Visit) -> Response:
    form = visit.form
    params: dict[str, Any] = {
        "name": form.get("name", "").strip(), "roleArn": form.get("roleArn", "").strip(),
        "knowledgeBaseConfiguration": {"type": "VECTOR", "vectorKnowledgeBaseConfiguration": {
            "embeddingModelArn": form.get("embeddingModelArn", "")}}}
    if form.get("description", "").strip():
        params["description"] = form["description"].strip()
    try:
        created = visit.call("bedrock-agent", "CreateKnowledgeBase", params)["knowledgeBase"]
    except BedrockError as exc:
        return _create_form(visit, form, error=f"{exc.code}: {exc.message}", status=exc.status)
    return visit.redirect(f"knowledge-bases/{created['knowledgeBaseId']}")


def _create_form(visit: Visit, values: dict[str, str], error: str = "", status: int = 200) -> Response:
    try:
        embedders = visit.call("bedrock", "ListFoundationModels", {"byOutputModality": "EMBEDDING"})["modelSummaries"]
    except BedrockError:  # a user who may not read the catalog types the model's ARN
        embedders = []
    try:
        roles = visit.call_json("iam", "ListRoles")["Roles"]
    except BedrockError:
        roles = []
    return visit.render("knowledge_create.html", "Create a knowledge base", status=status, values=values,
                        error=error, embedders=embedders, roles=roles)


# -- one knowledge base --------------------------------------------------------------------------------

@page("GET", "knowledge-bases/(?P<kb>[^/]+)")
def knowledge_base(visit: Visit, kb: str) -> Response:
    return _knowledge_base_page(visit, kb, live=True)


def _knowledge_base_page(visit: Visit, kb: str, status: int = 200, live: bool = False, **context: Any) -> Response:
    """The knowledge base, its data sources with their recent jobs, and the test panel. `live`: a GET, which
    may reload itself while a job runs (a page answering a POST must not: its reload would GET the form's URL)."""
    found = visit.call("bedrock-agent", "GetKnowledgeBase", {"knowledgeBaseId": kb})["knowledgeBase"]
    sources = [_data_source(visit, kb, summary["dataSourceId"]) for summary in
               visit.call("bedrock-agent", "ListDataSources", {"knowledgeBaseId": kb})["dataSourceSummaries"]]
    running = any(job["status"] in MOVING for source in sources for job in source["jobs"])
    defaults = {"error": "", "notice": NOTICES.get(visit.query.get("notice", ""), ""), "source_error": "",
                "source_values": {},
                "ask": {"numberOfResults": DEFAULT_RESULTS}, "ask_error": "", "results": None, "answer": None}
    return visit.render("knowledge_one.html", found["name"], status=status, kb=found, sources=sources,
                        models=_generators(visit), buckets=_buckets(visit), search_types=SEARCH_TYPES,
                        refresh=3 if live and running else 0, **{**defaults, **context})


def _data_source(visit: Visit, kb: str, ds: str) -> dict[str, Any]:
    """A data source (its configuration says what a sync reads) with its latest ingestion jobs, newest first."""
    source = visit.call("bedrock-agent", "GetDataSource", {"knowledgeBaseId": kb, "dataSourceId": ds})["dataSource"]
    jobs = visit.call("bedrock-agent", "ListIngestionJobs", {
        "knowledgeBaseId": kb, "dataSourceId": ds, "sortBy": {"attribute": "STARTED_AT", "order": "DESCENDING"},
        "maxResults": RECENT_JOBS})["ingestionJobSummaries"]
    return {**source, "jobs": jobs}


def _generators(visit: Visit) -> list[dict[str, Any]]:
    """The models RetrieveAndGenerate may answer with: text models that generate (rerankers score and do not
    stream). A user who may not list the catalog still searches with Retrieve."""
    try:
        models = visit.call("bedrock", "ListFoundationModels", {"byOutputModality": "TEXT"})["modelSummaries"]
    except BedrockError:
        return []
    return [m for m in models if m.get("responseStreamingSupported")]


def _buckets(visit: Visit) -> list[str]:
    try:
        return list(visit.store().list_buckets())
    except BedrockError:
        return []


@page("POST", "knowledge-bases/(?P<kb>[^/]+)/data-sources/create")
def create_data_source(visit: Visit, kb: str) -> Response:
    form = visit.form
    s3: dict[str, Any] = {"bucketArn": f"arn:aws:s3:::{form.get('bucket', '').strip()}"}
    if form.get("prefix", "").strip():
        s3["inclusionPrefixes"] = [form["prefix"].strip()]
    params: dict[str, Any] = {"knowledgeBaseId": kb, "name": form.get("name", "").strip(),
                              "dataSourceConfiguration": {"type": "S3", "s3Configuration": s3}}
    if form.get("description", "").strip():
        params["description"] = form["description"].strip()
    try:
        visit.call("bedrock-agent", "CreateDataSource", params)
    except BedrockError as exc:
        return _knowledge_base_page(visit, kb, status=exc.status, source_error=f"{exc.code}: {exc.message}",
                                    source_values=form)
    return visit.redirect(f"knowledge-bases/{kb}?notice=source-added")


@page("POST", "knowledge-bases/(?P<kb>[^/]+)/data-sources/(?P<ds>[^/]+)/sync")
def sync(visit: Visit, kb: str, ds: str) -> Response:
    try:
        visit.call("bedrock-agent", "StartIngestionJob", {"knowledgeBaseId": kb, "dataSourceId": ds})
    except BedrockError as exc:
        return _knowledge_base_page(visit, kb, status=exc.status, error=f"{exc.code}: {exc.message}")
    return visit.redirect(f"knowledge-bases/{kb}")


@page("POST", "knowledge-bases/(?P<kb>[^/]+)/delete")
def delete(visit: Visit, kb: str) -> Response:
    try:
        visit.call("bedrock-agent", "DeleteKnowledgeBase", {"knowledgeBaseId": kb})
    except BedrockError as exc:
        return _knowledge_base_page(visit, kb, status=exc.status, error=f"{exc.code}: {exc.message}")
    return visit.redirect("knowledge-bases")


# -- the test panel ------------------------------------------------------------------------------------

@page("POST", "knowledge-bases/(?P<kb>[^/]+)/retrieve")
def ask(visit: Visit, kb: str) -> Response:
    """Retrieve, or with a model chosen RetrieveAndGenerate; the answer is this page, the question kept."""
    form = visit.form
    question = form.get("question", "")
    search = _search_configuration(form)
    try:
        if form.get("modelArn"):
            answer = visit.call("bedrock-agent-runtime", "RetrieveAndGenerate", {
                "input": {"text": question}, "retrieveAndGenerateConfiguration": {
                    "type": "KNOWLEDGE_BASE", "knowledgeBaseConfiguration": {
                        "knowledgeBaseId": kb, "modelArn": form["modelArn"], "retrievalConfiguration": search}}})
            return _knowledge_base_page(visit, kb, ask=form, answer=answer)
        found = visit.call("bedrock-agent-runtime", "Retrieve", {
            "knowledgeBaseId": kb, "retrievalQuery": {"text": question}, "retrievalConfiguration": search})
    except BedrockError as exc:
        return _knowledge_base_page(visit, kb, status=exc.status, ask=form, ask_error=f"{exc.code}: {exc.message}")
    return _knowledge_base_page(visit, kb, ask=form, results=found["retrievalResults"])


def _search_configuration(form: dict[str, str]) -> dict[str, Any]:
    count: int | str = form.get("numberOfResults", "").strip() or DEFAULT_RESULTS
    try:
        count = int(count)
    except ValueError:
        pass  # sent as typed: the API's validation names the member, as for any caller
    vector: dict[str, Any] = {"numberOfResults": count}
    if form.get("searchType"):
        vector["overrideSearchType"] = form["searchType"]
    return {"vectorSearchConfiguration": vector}
