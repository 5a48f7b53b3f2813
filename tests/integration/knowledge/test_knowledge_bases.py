"""Knowledge bases end to end, through boto3 and LangChain against a real server: a bucket of mixed
files synced, searched with filters, asked with citations, changed and re-synced, and hidden from another
account. One knowledge base serves the module (each sync is a job process that loads the embedding model).
"""

from __future__ import annotations

import json
import time

import docx
import pytest

from tests.helpers import make_pdf
from tests.integration.security.helpers import error_code, outcrop

BUCKET = "kb-mixed"
MINILM = "arn:aws:bedrock:us-east-1::foundation-model/sentence-transformers.all-minilm-l6-v2-v1:0"
SMOLLM2 = "arn:aws:bedrock:us-east-1::foundation-model/huggingface.smollm2-135m-instruct-v1:0"
#: What each file says, and the question it alone answers.
FILES = {
    "docs/eiffel.txt": "The Eiffel Tower in Paris was completed in 1889. It is 330 metres tall and was designed by "
                       "the engineering company of Gustave Eiffel for the World's Fair.",
    "docs/coffee.md": "# Coffee\n\nCoffee plants were first cultivated in Ethiopia and Yemen. The beans are roasted "
                      "before brewing, and espresso is made by forcing hot water through finely ground beans.",
    "docs/volcano.html": "<html><head><title>Vesuvius</title><script>var hidden = 'SCRIPTWORD';</script></head><body>"
                         "<h1>Mount Vesuvius</h1><p>Mount Vesuvius erupted in 79 AD and buried the Roman city of "
                         "Pompeii under volcanic ash.</p></body></html>",
    "docs/planets.csv": "planet,moons,notes\nJupiter,95,largest planet with the great red spot\n"
                        "Saturn,146,famous for its bright rings of ice\n",
}
QUESTIONS = {"How tall is the Eiffel Tower?": "eiffel.txt", "Where was coffee first grown?": "coffee.md",
             "Which city did Mount Vesuvius bury?": "volcano.html", "Which planet has bright rings of ice?":
             "planets.csv", "When do emperor penguins breed?": "penguins.pdf",
             "How do honey bees tell each other where flowers are?": "bees.docx"}


def _write_documents(folder) -> None:
    for key, text in FILES.items():
        (folder / key).parent.mkdir(parents=True, exist_ok=True)
        (folder / key).write_text(text)
    (folder / "docs/penguins.pdf").write_bytes(make_pdf(
        "Emperor penguins breed during the dark Antarctic winter.", "The male keeps the egg warm on his feet."))
    document = docx.Document()
    document.add_paragraph("Honey bees tell each other where flowers are with a waggle dance.")
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text, table.rows[0].cells[1].text = "hive", "colony of bees"
    document.save(folder / "docs/bees.docx")
    (folder / "docs/broken.pdf").write_bytes(b"%PDF-1.4\nthis is not really a pdf")
    metadata = {"eiffel.txt": {"year": 1889, "topic": "architecture", "tags": ["paris", "tower"]},
                "coffee.md": {"year": 850, "topic": "food", "tags": ["drink"]},
                "volcano.html": {"year": 79, "topic": "geology", "tags": ["italy", "rome"]}}
    for name, attributes in metadata.items():
        (folder / f"docs/{name}.metadata.json").write_text(json.dumps({"metadataAttributes": attributes}))


def _sync(agent, kb_id: str, ds_id: str) -> dict:
    job = agent.start_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]
    assert job["status"] in ("STARTING", "IN_PROGRESS")
    deadline = time.monotonic() + 300
    while job["status"] in ("STARTING", "IN_PROGRESS"):
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
        job = agent.get_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id,
                                      ingestionJobId=job["ingestionJobId"])["ingestionJob"]
    return job


@pytest.fixture(scope="module")
def kb(server, tmp_path_factory):
    """A knowledge base over a bucket of seven files (one of them a corrupt PDF), synced once."""
    folder = tmp_path_factory.mktemp("kb-files")
    _write_documents(folder)
    outcrop(server, "s3", "mb", f"s3://{BUCKET}")
    outcrop(server, "s3", "cp", "--recursive", str(folder / "docs"), f"s3://{BUCKET}/docs/")
    role = outcrop(server, "iam", "create-role", "--name", "kb-reader", "--s3-access", BUCKET,
                   "--read-only").stdout.strip()
    agent = server.client("bedrock-agent")
    created = agent.create_knowledge_base(
        name="mixed", roleArn=role, knowledgeBaseConfiguration={
            "type": "VECTOR", "vectorKnowledgeBaseConfiguration": {"embeddingModelArn": MINILM}})["knowledgeBase"]
    assert created["status"] == "ACTIVE" and created["knowledgeBaseArn"].endswith(created["knowledgeBaseId"])
    source = agent.create_data_source(
        knowledgeBaseId=created["knowledgeBaseId"], name="bucket", dataSourceConfiguration={
            "type": "S3", "s3Configuration": {"bucketArn": f"arn:aws:s3:::{BUCKET}", "inclusionPrefixes": ["docs/"]}},
        vectorIngestionConfiguration={"chunkingConfiguration": {
            "chunkingStrategy": "FIXED_SIZE", "fixedSizeChunkingConfiguration": {"maxTokens": 64,
                                                                                 "overlapPercentage": 10}}},
    )["dataSource"]
    job = _sync(agent, created["knowledgeBaseId"], source["dataSourceId"])
    return {"id": created["knowledgeBaseId"], "source": source["dataSourceId"], "folder": folder, "job": job,
            "role": role}


def _retrieve(server, kb, text: str, **vector) -> list[dict]:
    configuration = {"vectorSearchConfiguration": {"numberOfResults": 3, **vector}}
    return server.client("bedrock-agent-runtime").retrieve(
        knowledgeBaseId=kb["id"], retrievalQuery={"text": text}, retrievalConfiguration=configuration,
    )["retrievalResults"]


def _names(results: list[dict]) -> list[str]:
    return [r["location"]["s3Location"]["uri"].rsplit("/", 1)[-1] for r in results]


def test_a_sync_indexes_every_format_and_counts_the_corrupt_file_as_failed(kb):
    job = kb["job"]
    assert job["status"] == "COMPLETE", job
    statistics = job["statistics"]
    assert statistics["numberOfDocumentsScanned"] == 7 and statistics["numberOfMetadataDocumentsScanned"] == 3
    assert statistics["numberOfNewDocumentsIndexed"] == 6 and statistics["numberOfDocumentsFailed"] == 1
    assert any("broken.pdf" in reason and "PDF" in reason for reason in job["failureReasons"])


def test_retrieve_finds_the_file_that_answers(server, kb):
    for question, name in QUESTIONS.items():
        results = _retrieve(server, kb, question)
        assert _names(results)[0] == name, (question, _names(results))
        scores = [r["score"] for r in results]
        assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    top = _retrieve(server, kb, "How tall is the Eiffel Tower?")[0]
    assert "330 metres" in top["content"]["text"] and top["content"]["type"] == "TEXT"
    assert top["metadata"]["topic"] == "architecture" and top["metadata"]["year"] == 1889
    assert top["metadata"]["x-amz-bedrock-kb-source-uri"] == f"s3://{BUCKET}/docs/eiffel.txt"
    hidden = _retrieve(server, kb, "SCRIPTWORD hidden script", overrideSearchType="HYBRID")
    assert "SCRIPTWORD" not in json.dumps(hidden)


def test_metadata_filters_narrow_the_search(server, kb):
    question = "a famous place"
    only = lambda f: set(_names(_retrieve(server, kb, question, filter=f)))  # noqa: E731
    assert only({"equals": {"key": "topic", "value": "food"}}) == {"coffee.md"}
    assert only({"greaterThan": {"key": "year", "value": 100}}) == {"eiffel.txt", "coffee.md"}
    assert only({"listContains": {"key": "tags", "value": "italy"}}) == {"volcano.html"}
    assert only({"andAll": [{"lessThan": {"key": "year", "value": 1000}},
                            {"startsWith": {"key": "topic", "value": "geo"}}]}) == {"volcano.html"}
    assert only({"in": {"key": "x-amz-bedrock-kb-source-uri", "value": [f"s3://{BUCKET}/docs/bees.docx"]}}) == {
        "bees.docx"}
    code, status, message = error_code(lambda: _retrieve(server, kb, question, filter={
        "greaterThan": {"key": "year", "value": "recent"}}))
    assert (code, status) == ("ValidationException", 400) and "greaterThan" in message


def test_hybrid_search_finds_a_rare_word(server, kb):
    assert _names(_retrieve(server, kb, "espresso", overrideSearchType="HYBRID"))[0] == "coffee.md"


def test_retrieve_and_generate_cites_the_file_it_used(server, kb):
    runtime = server.client("bedrock-agent-runtime")
    configuration = {"type": "KNOWLEDGE_BASE", "knowledgeBaseConfiguration": {
        "knowledgeBaseId": kb["id"], "modelArn": SMOLLM2,
        "retrievalConfiguration": {"vectorSearchConfiguration": {"numberOfResults": 2}},
        "generationConfiguration": {"inferenceConfig": {"textInferenceConfig": {"maxTokens": 40,
                                                                                "temperature": 0}}}}}
    answer = runtime.retrieve_and_generate(input={"text": "When was the Eiffel Tower completed?"},
                                           retrieveAndGenerateConfiguration=configuration)
    assert answer["output"]["text"] and answer["sessionId"]
    cited = {ref["location"]["s3Location"]["uri"] for c in answer["citations"] for ref in c["retrievedReferences"]}
    assert cited == {f"s3://{BUCKET}/docs/eiffel.txt"}, answer
    for citation in answer["citations"]:
        part = citation["generatedResponsePart"]["textResponsePart"]
        assert answer["output"]["text"][part["span"]["start"]:part["span"]["end"] + 1] == part["text"]
    # The session goes on, as a stream: text as it comes, then the citations.
    streamed = runtime.retrieve_and_generate_stream(input={"text": "How tall is it?"}, sessionId=answer["sessionId"],
                                                    retrieveAndGenerateConfiguration=configuration)
    assert streamed["sessionId"] == answer["sessionId"]
    events = list(streamed["stream"])
    text = "".join(e["output"]["text"] for e in events if "output" in e)
    assert text and [list(e) for e in events if "output" not in e] == [["citation"]] * sum(
        "citation" in e for e in events)
    code, _, _ = error_code(lambda: runtime.retrieve_and_generate(
        input={"text": "x"}, sessionId="no-such-session", retrieveAndGenerateConfiguration=configuration))
    assert code == "ValidationException"


def test_a_follow_up_in_a_session_is_searched_with_the_conversation(server, kb):
    """A follow-up that names nothing of the documents, searched alone, finds another one first; in its session
    it is searched with the question before it, and the answer cites the document the conversation is about."""
    follow_up = "What happens to them before they are used?"
    assert _names(_retrieve(server, kb, follow_up))[0] != "coffee.md"
    runtime = server.client("bedrock-agent-runtime")
    configuration = {"type": "KNOWLEDGE_BASE", "knowledgeBaseConfiguration": {
        "knowledgeBaseId": kb["id"], "modelArn": SMOLLM2,
        "retrievalConfiguration": {"vectorSearchConfiguration": {"numberOfResults": 1}},
        "generationConfiguration": {"inferenceConfig": {"textInferenceConfig": {"maxTokens": 30,
                                                                                "temperature": 0}}}}}
    first = runtime.retrieve_and_generate(input={"text": "Where was coffee first grown?"},
                                          retrieveAndGenerateConfiguration=configuration)
    answer = runtime.retrieve_and_generate(input={"text": follow_up}, sessionId=first["sessionId"],
                                           retrieveAndGenerateConfiguration=configuration)
    cited = {ref["location"]["s3Location"]["uri"] for c in answer["citations"] for ref in c["retrievedReferences"]}
    assert cited == {f"s3://{BUCKET}/docs/coffee.md"}, answer


def test_retrieve_and_generate_under_a_guardrail(server, kb):
    guardrail = server.client("bedrock").create_guardrail(
        name="kb-guard", blockedInputMessaging="Not about that.", blockedOutputsMessaging="Cannot say.",
        wordPolicyConfig={"wordsConfig": [{"text": "password"}]},
        contextualGroundingPolicyConfig={"filtersConfig": [{"type": "GROUNDING", "threshold": 0.1,
                                                            "action": "NONE"}]})
    runtime = server.client("bedrock-agent-runtime")
    configuration = {"type": "KNOWLEDGE_BASE", "knowledgeBaseConfiguration": {
        "knowledgeBaseId": kb["id"], "modelArn": SMOLLM2, "generationConfiguration": {
            "guardrailConfiguration": {"guardrailId": guardrail["guardrailId"], "guardrailVersion": "DRAFT"},
            "inferenceConfig": {"textInferenceConfig": {"maxTokens": 24, "temperature": 0}}}}}
    blocked = runtime.retrieve_and_generate(input={"text": "What is the admin password of the tower?"},
                                            retrieveAndGenerateConfiguration=configuration)
    assert (blocked["output"]["text"], blocked["guardrailAction"]) == ("Not about that.", "INTERVENED")
    events = list(runtime.retrieve_and_generate_stream(input={"text": "Tell me the password."},
                                                       retrieveAndGenerateConfiguration=configuration)["stream"])
    assert events[0] == {"output": {"text": "Not about that."}} and {"guardrail": {"action": "INTERVENED"}} in events
    passed = runtime.retrieve_and_generate(input={"text": "When was the Eiffel Tower completed?"},
                                           retrieveAndGenerateConfiguration=configuration)
    assert passed["guardrailAction"] == "NONE" and passed["output"]["text"]


def test_langchain_retriever(server, kb):
    from langchain_aws.retrievers import AmazonKnowledgeBasesRetriever

    retriever = AmazonKnowledgeBasesRetriever(
        knowledge_base_id=kb["id"], client=server.client("bedrock-agent-runtime"),
        retrieval_config={"vectorSearchConfiguration": {"numberOfResults": 2}})
    documents = retriever.invoke("Which city did Mount Vesuvius bury?")
    assert "Pompeii" in documents[0].page_content
    assert documents[0].metadata["location"]["s3Location"]["uri"].endswith("volcano.html")


def test_an_agent_searches_it_and_its_answer_cites_the_passages(server, kb):
    """Through InvokeAgent on SmolLM2 (greedy): a question that asks for the search gets one (a 135M model
    rarely searches unasked), and the answer's attribution cites passages of the bucket's documents."""
    agent = server.client("bedrock-agent")
    agent_id = agent.create_agent(agentName="librarian", foundationModel=SMOLLM2.rsplit("/", 1)[1], instruction=(
        "You are a librarian. To answer any question, search the knowledge base with the question."))["agent"][
        "agentId"]
    agent.associate_agent_knowledge_base(agentId=agent_id, agentVersion="DRAFT", knowledgeBaseId=kb["id"],
                                         description="documents about landmarks, food, volcanoes, planets, "
                                                     "penguins and bees")
    agent.prepare_agent(agentId=agent_id)
    events = list(server.client("bedrock-agent-runtime", read_timeout=600).invoke_agent(
        agentId=agent_id, agentAliasId="TSTALIASID", sessionId="library-1", enableTrace=True,
        inputText="Search the knowledge base: which planet has bright rings of ice?")["completion"])
    steps = [e["trace"]["trace"]["orchestrationTrace"] for e in events if "trace" in e]
    [lookup] = [s["invocationInput"]["knowledgeBaseLookupInput"] for s in steps if "invocationInput" in s]
    assert lookup["knowledgeBaseId"] == kb["id"] and lookup["text"]
    [found] = [s["observation"]["knowledgeBaseLookupOutput"] for s in steps if "observation" in s
               and s["observation"]["type"] == "KNOWLEDGE_BASE"]
    assert found["retrievedReferences"]
    [chunk] = [e["chunk"] for e in events if "chunk" in e]
    cited = [r["location"]["s3Location"]["uri"] for c in chunk["attribution"]["citations"]
             for r in c["retrievedReferences"]]
    assert cited and all(uri.startswith(f"s3://{BUCKET}/docs/") for uri in cited)


def test_another_account_cannot_see_or_search_it(server, kb):
    created = json.loads(outcrop(server, "iam", "create-account", "--name", "kb-outsider").stdout)
    key = (created["AccessKeyId"], created["SecretAccessKey"])
    assert server.client("bedrock-agent", key=key).list_knowledge_bases()["knowledgeBaseSummaries"] == []
    code, status, _ = error_code(lambda: server.client("bedrock-agent", key=key).get_knowledge_base(
        knowledgeBaseId=kb["id"]))
    assert (code, status) == ("ResourceNotFoundException", 404)
    code, _, _ = error_code(lambda: server.client("bedrock-agent-runtime", key=key).retrieve(
        knowledgeBaseId=kb["id"], retrievalQuery={"text": "Eiffel"}))
    assert code == "ResourceNotFoundException"


def test_unsupported_storage_is_refused_by_name(server, kb):
    code, status, message = error_code(lambda: server.client("bedrock-agent").create_knowledge_base(
        name="elsewhere", roleArn=kb["role"], knowledgeBaseConfiguration={
            "type": "VECTOR", "vectorKnowledgeBaseConfiguration": {"embeddingModelArn": MINILM}},
        storageConfiguration={"type": "PINECONE", "pineconeConfiguration": {
            "connectionString": "https://x",
            "credentialsSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:x",
            "fieldMapping": {"textField": "t", "metadataField": "m"}}}))
    assert (code, status) == ("ValidationException", 400) and "PINECONE" in message and "S3_VECTORS" in message


def test_documents_ingested_directly_are_found_and_deleted(server, kb):
    agent = server.client("bedrock-agent")
    source = agent.create_data_source(knowledgeBaseId=kb["id"], name="direct", dataSourceConfiguration={
        "type": "CUSTOM"})["dataSource"]["dataSourceId"]
    # Created without one, it answers none (as Bedrock does), and chunks with the default.
    assert "vectorIngestionConfiguration" not in agent.get_data_source(knowledgeBaseId=kb["id"],
                                                                       dataSourceId=source)["dataSource"]
    identifier = {"dataSourceType": "CUSTOM", "custom": {"id": "note-1"}}
    page = b"<html><body><p>The office cat is a tabby called Biscuit.</p></body></html>"
    details = agent.ingest_knowledge_base_documents(knowledgeBaseId=kb["id"], dataSourceId=source, documents=[{
        "content": {"dataSourceType": "CUSTOM", "custom": {
            "customDocumentIdentifier": {"id": "note-1"}, "sourceType": "IN_LINE",
            "inlineContent": {"type": "TEXT", "textContent": {"data": "The office dog is a beagle named Waffles."}}}},
        "metadata": {"type": "IN_LINE_ATTRIBUTE", "inlineAttributes": [
            {"key": "team", "value": {"type": "STRING", "stringValue": "platform"}}]}}, {
        "content": {"dataSourceType": "CUSTOM", "custom": {
            "customDocumentIdentifier": {"id": "page-2"}, "sourceType": "IN_LINE",
            "inlineContent": {"type": "BYTE", "byteContent": {"mimeType": "text/html", "data": page}}}}},
    ])["documentDetails"]
    assert [d["status"] for d in details] == ["STARTING"] * 2 and details[0]["identifier"] == identifier
    _wait_indexed(agent, kb["id"], source, [d["identifier"] for d in details])
    listed = agent.list_knowledge_base_documents(knowledgeBaseId=kb["id"], dataSourceId=source)["documentDetails"]
    assert sorted(d["identifier"]["custom"]["id"] for d in listed) == ["note-1", "page-2"]
    assert "Biscuit" in _retrieve(server, kb, "What is the office cat called?")[0]["content"]["text"]
    top = _retrieve(server, kb, "What is the office dog called?", filter={
        "equals": {"key": "team", "value": "platform"}})
    assert [r["location"] for r in top] == [{"type": "CUSTOM", "customDocumentLocation": {"id": "note-1"}}]
    deleted = agent.delete_knowledge_base_documents(knowledgeBaseId=kb["id"], dataSourceId=source,
                                                    documentIdentifiers=[identifier])["documentDetails"]
    assert deleted[0]["status"] == "DELETING"
    assert _retrieve(server, kb, "What is the office dog called?", filter={
        "equals": {"key": "team", "value": "platform"}}) == []
    agent.delete_data_source(knowledgeBaseId=kb["id"], dataSourceId=source)  # DELETE policy: its chunks go
    assert not any("Biscuit" in r["content"]["text"] for r in _retrieve(server, kb, "What is the office cat called?"))


def _wait_indexed(agent, kb_id: str, source: str, identifiers: list[dict]) -> None:
    deadline = time.monotonic() + 120
    while True:
        details = agent.get_knowledge_base_documents(knowledgeBaseId=kb_id, dataSourceId=source,
                                                     documentIdentifiers=identifiers)["documentDetails"]
        if all(d["status"] == "INDEXED" for d in details):
            return
        assert time.monotonic() < deadline and all(d["status"] in ("STARTING", "INDEXED") for d in details), details
        time.sleep(0.5)


def test_a_stopped_sync_lets_the_next_one_start(server, kb):
    agent = server.client("bedrock-agent")
    job = agent.start_ingestion_job(knowledgeBaseId=kb["id"], dataSourceId=kb["source"])["ingestionJob"]
    stopped = agent.stop_ingestion_job(knowledgeBaseId=kb["id"], dataSourceId=kb["source"],
                                       ingestionJobId=job["ingestionJobId"])["ingestionJob"]
    assert stopped["status"] == "STOPPING"
    deadline = time.monotonic() + 120
    while stopped["status"] == "STOPPING":
        assert time.monotonic() < deadline
        time.sleep(0.5)
        stopped = agent.get_ingestion_job(knowledgeBaseId=kb["id"], dataSourceId=kb["source"],
                                          ingestionJobId=job["ingestionJobId"])["ingestionJob"]
    assert stopped["status"] == "STOPPED"
    listed = agent.list_ingestion_jobs(knowledgeBaseId=kb["id"], dataSourceId=kb["source"], filters=[
        {"attribute": "STATUS", "operator": "EQ", "values": ["STOPPED"]}])["ingestionJobSummaries"]
    assert [j["ingestionJobId"] for j in listed] == [job["ingestionJobId"]]


def test_zz_a_resync_takes_in_changes_and_deletions(server, kb):
    """Last in the module: it changes the bucket the other tests read."""
    folder = kb["folder"]
    (folder / "docs/coffee.md").write_text("# Tea\n\nGreen tea is steamed or pan fired soon after the leaves are "
                                           "picked.")
    outcrop(server, "s3", "cp", str(folder / "docs/coffee.md"), f"s3://{BUCKET}/docs/coffee.md")
    outcrop(server, "s3", "rm", f"s3://{BUCKET}/docs/volcano.html")
    job = _sync(server.client("bedrock-agent"), kb["id"], kb["source"])
    statistics = job["statistics"]
    assert job["status"] == "COMPLETE" and statistics["numberOfDocumentsScanned"] == 6
    assert statistics["numberOfModifiedDocumentsIndexed"] == 1 and statistics["numberOfDocumentsDeleted"] == 1
    assert statistics["numberOfNewDocumentsIndexed"] == 0 and statistics["numberOfDocumentsFailed"] == 1
    assert "volcano.html" not in _names(_retrieve(server, kb, "Which city did Mount Vesuvius bury?"))
    assert "steamed" in _retrieve(server, kb, "How is green tea made?")[0]["content"]["text"]


def test_zzz_an_s3_document_ingested_directly(server, kb):
    agent = server.client("bedrock-agent")
    identifier = {"dataSourceType": "S3", "s3": {"uri": f"s3://{BUCKET}/docs/eiffel.txt"}}
    agent.ingest_knowledge_base_documents(knowledgeBaseId=kb["id"], dataSourceId=kb["source"], documents=[{
        "content": {"dataSourceType": "S3", "s3": {"s3Location": {"uri": f"s3://{BUCKET}/docs/eiffel.txt"}}},
        "metadata": {"type": "IN_LINE_ATTRIBUTE", "inlineAttributes": [
            {"key": "topic", "value": {"type": "STRING", "stringValue": "landmark"}}]}}])
    _wait_indexed(agent, kb["id"], kb["source"], [identifier])
    top = _retrieve(server, kb, "How tall is the Eiffel Tower?", filter={
        "equals": {"key": "topic", "value": "landmark"}})
    assert _names(top) == ["eiffel.txt"]
    code, _, message = error_code(lambda: agent.ingest_knowledge_base_documents(
        knowledgeBaseId=kb["id"], dataSourceId=kb["source"], documents=[{
            "content": {"dataSourceType": "S3", "s3": {"s3Location": {"uri": "s3://elsewhere/a.txt"}}}}]))
    assert code == "ValidationException" and "outside" in message
