"""Knowledge bases in the console: the list, creating one, adding an S3 data source, its ingestion jobs and their
statistics (the page reloads while one runs), Sync, the test panel's errors (no model is loaded: a search embeds
its question, so only the paths that stop before that run here), and a denied page."""

from __future__ import annotations

import re

from outcrop.iam.principal import Principal
from outcrop.iam.scoped_store import ScopedStore
from outcrop.knowledge.tables import IngestionJobRow
from outcrop.platform.database import utc_now

MINILM = "arn:aws:bedrock:us-east-1::foundation-model/sentence-transformers.all-minilm-l6-v2-v1:0"
READ_BUCKET = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetObject"],
     "Resource": ["arn:aws:s3:::docs", "arn:aws:s3:::docs/*"]}]}


def _role(services, name: str = "kb-reader", policy: dict | None = READ_BUCKET) -> str:
    """A role for knowledge bases (it trusts Bedrock), allowed to read the bucket `docs` of the root's account."""
    account = services.iam.default_account()
    ScopedStore(services.store, services.iam, Principal.account_root(account)).create_bucket("docs")
    role = services.iam.create_role(account, name)
    if policy is not None:
        services.iam.put_policy(role.arn, "read", policy)
    return role.arn


def _create(root, role: str, name: str = "manuals") -> str:
    created = root.post("knowledge-bases/create", {"name": name, "description": "the manuals",
                                                   "embeddingModelArn": MINILM, "roleArn": role})
    assert created.status == 303, created.errors()
    return created.location.rsplit("/", 1)[-1]


def test_creating_a_knowledge_base_and_adding_a_data_source(root, services):
    role = _role(services)
    form = root.get("knowledge-bases/create")
    assert form.status == 200 and MINILM in form.body and role in form.body  # the catalog's embedders, the roles
    kb = _create(root, role)
    listed = root.get("knowledge-bases")
    assert listed.status == 200 and f"/console/knowledge-bases/{kb}" in listed.body and "manuals" in listed.body
    page = root.get(f"knowledge-bases/{kb}")
    assert page.status == 200 and "No data sources yet" in page.body and MINILM in page.body
    assert 'http-equiv="refresh"' not in page.body
    added = root.post(f"knowledge-bases/{kb}/data-sources/create", {"name": "bucket", "bucket": "docs",
                                                                    "prefix": "guides/"})
    assert added.status == 303 and added.location.startswith(f"/console/knowledge-bases/{kb}?notice=")
    page = root.get(added.location)
    assert "s3://docs/guides/" in page.body and "Never synced." in page.body and "Sync bucket" in page.body
    assert "Data source added" in page.body


def test_create_errors_are_the_apis_and_keep_the_values(root, services):
    role = _role(services)
    bad = root.post("knowledge-bases/create", {"name": "bad name!", "embeddingModelArn": MINILM, "roleArn": role})
    assert bad.status == 400 and bad.errors()[0].startswith("ValidationException: ") and "name" in bad.errors()[0]
    assert 'value="bad name!"' in bad.body
    not_embedder = root.post("knowledge-bases/create", {
        "name": "kb", "roleArn": role,
        "embeddingModelArn": "arn:aws:bedrock:us-east-1::foundation-model/huggingface.smollm2-135m-instruct-v1:0"})
    assert not_embedder.status == 400 and "not an embedding model" in not_embedder.errors()[0]


def test_a_data_source_the_role_cannot_read_is_refused_on_the_page(root, services):
    kb = _create(root, _role(services, "no-reads", policy=None))
    refused = root.post(f"knowledge-bases/{kb}/data-sources/create", {"name": "bucket", "bucket": "docs"})
    assert refused.status == 403 and refused.errors()[0].startswith("AccessDeniedException: ")
    assert "s3:ListBucket" in refused.errors()[0] and 'value="docs"' in refused.body


def test_ingestion_jobs_show_their_statistics_and_the_page_reloads_while_one_runs(root, services):
    role = _role(services)
    kb = _create(root, role)
    root.post(f"knowledge-bases/{kb}/data-sources/create", {"name": "bucket", "bucket": "docs"})
    ds = re.search(rf"/knowledge-bases/{kb}/data-sources/([A-Z0-9]+)/sync", root.get(f"knowledge-bases/{kb}").body)[1]
    statistics = {"numberOfDocumentsScanned": 7, "numberOfNewDocumentsIndexed": 6, "numberOfDocumentsFailed": 1}
    with services.db.session() as session:  # as a sync leaves it part way (no job process in a unit test)
        session.add(IngestionJobRow(ingestion_job_id="JOB0000001", knowledge_base_id=kb, data_source_id=ds,
                                    account_id=services.iam.default_account(), status="IN_PROGRESS",
                                    statistics=statistics, started_at=utc_now(), updated_at=utc_now()))
    page = root.get(f"knowledge-bases/{kb}")
    assert 'http-equiv="refresh" content="3"' in page.body
    row = re.search(r"<code>JOB0000001</code>.*?</tr>", page.body, re.S)[0]
    assert "IN_PROGRESS" in row and [int(n) for n in re.findall(r"<td>(\d+)</td>", row)] == [7, 6, 0, 0, 1]
    # A second sync while one runs: the API's conflict, on the page.
    conflict = root.post(f"knowledge-bases/{kb}/data-sources/{ds}/sync")
    assert conflict.errors()[0].startswith("ConflictException: ") and "JOB0000001" in conflict.errors()[0]
    assert 'http-equiv="refresh"' not in conflict.body  # a POST's page never reloads (it would GET the form URL)


def test_sync_shows_why_the_role_can_no_longer_read(root, services):
    role = _role(services)
    kb = _create(root, role)
    root.post(f"knowledge-bases/{kb}/data-sources/create", {"name": "bucket", "bucket": "docs"})
    ds = re.search(r"/data-sources/([A-Z0-9]+)/sync", root.get(f"knowledge-bases/{kb}").body)[1]
    services.iam.delete_policy(role, "read")
    refused = root.post(f"knowledge-bases/{kb}/data-sources/{ds}/sync")
    assert refused.status == 403 and refused.errors()[0].startswith("AccessDeniedException: ")


def test_the_test_panel_shows_the_apis_errors_and_keeps_the_question(root, services, user_browser):
    kb = _create(root, _role(services))
    page = root.get(f"knowledge-bases/{kb}")
    assert f'action="/console/knowledge-bases/{kb}/retrieve"' in page.body
    assert "huggingface.smollm2-135m-instruct-v1:0" in page.body  # a model to answer with
    assert "cross-encoder" not in page.body  # a reranker does not generate
    bad = root.post(f"knowledge-bases/{kb}/retrieve", {"question": "How tall is it?", "numberOfResults": "0"})
    assert bad.status == 400 and "numberOfResults" in bad.errors()[0] and "How tall is it?" in bad.body
    missing = root.post("knowledge-bases/NOSUCHKB00/retrieve", {"question": "q"})
    assert missing.status == 404 and "NOSUCHKB00" in missing.body
    # A user who may read the knowledge base but not search it: Retrieve's own refusal, beside the question.
    reader = user_browser("reader", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["bedrock:GetKnowledgeBase", "bedrock:ListDataSources",
                                       "bedrock:GetDataSource", "bedrock:ListIngestionJobs"], "Resource": "*"}]})
    assert reader.get(f"knowledge-bases/{kb}").status == 200
    refused = reader.post(f"knowledge-bases/{kb}/retrieve", {"question": "How tall is it?"})
    assert refused.status == 403 and "bedrock:Retrieve" in refused.errors()[0]
    generate = reader.post(f"knowledge-bases/{kb}/retrieve", {"question": "q", "modelArn": MINILM})
    assert generate.status == 403 and generate.errors()[0].startswith("AccessDeniedException: ")


def test_the_test_panel_shows_passages_and_an_answer_with_its_citations(root, services, monkeypatch):
    """The search's embedding and the model's answer stand in for canned ones (in Retrieve's and
    RetrieveAndGenerate's output shapes): the page tells each passage's text, score and source, and the answer
    with the passages each part cites."""
    kb = _create(root, _role(services))
    passage = {"content": {"text": "The tower is 330 metres tall.", "type": "TEXT"},
               "location": {"type": "S3", "s3Location": {"uri": "s3://docs/eiffel.txt"}}, "metadata": {}}
    asked = []
    monkeypatch.setattr(services.retrieval, "retrieve", lambda caller, params: asked.append(params) or {
        "retrievalResults": [{**passage, "score": 0.8123}]})
    monkeypatch.setattr(services.retrieval, "retrieve_and_generate", lambda caller, params: asked.append(params) or {
        "output": {"text": "It is 330 metres tall."}, "sessionId": "s", "citations": [{
            "generatedResponsePart": {"textResponsePart": {"text": "It is 330 metres tall.",
                                                           "span": {"start": 0, "end": 21}}},
            "retrievedReferences": [passage]}]})
    found = root.post(f"knowledge-bases/{kb}/retrieve", {"question": "How tall?", "numberOfResults": "3",
                                                         "searchType": "HYBRID"})
    assert found.status == 200 and not found.errors()
    assert asked[0]["retrievalConfiguration"] == {"vectorSearchConfiguration": {"numberOfResults": 3,
                                                                                "overrideSearchType": "HYBRID"}}
    assert "score 0.8123" in found.body and "s3://docs/eiffel.txt" in found.body
    assert "The tower is 330 metres tall." in found.body
    model = "arn:aws:bedrock:us-east-1::foundation-model/huggingface.smollm2-135m-instruct-v1:0"
    answered = root.post(f"knowledge-bases/{kb}/retrieve", {"question": "How tall?", "modelArn": model})
    assert answered.status == 200 and not answered.errors()
    configuration = asked[1]["retrieveAndGenerateConfiguration"]["knowledgeBaseConfiguration"]
    assert configuration["knowledgeBaseId"] == kb and configuration["modelArn"] == model
    answer = re.search(r'<section aria-label="Answer">.*?</section>', answered.body, re.S)[0]
    assert "It is 330 metres tall." in answer and "s3://docs/eiffel.txt" in answer
    assert "The tower is 330 metres tall." in answer


def test_deleting_a_knowledge_base(root, services):
    kb = _create(root, _role(services))
    gone = root.post(f"knowledge-bases/{kb}/delete")
    assert gone.status == 303 and gone.location == "/console/knowledge-bases"
    assert root.get(f"knowledge-bases/{kb}").status == 404


def test_a_user_without_list_knowledge_bases_is_denied(user_browser):
    reader = user_browser("catalog-only", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["bedrock:ListFoundationModels"], "Resource": "*"}]})
    denied = reader.get("knowledge-bases")
    assert denied.status == 403 and "bedrock:ListKnowledgeBases" in denied.body
