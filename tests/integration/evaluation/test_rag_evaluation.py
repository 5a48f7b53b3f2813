"""RAG evaluation (Bedrock's knowledge-base evaluation jobs) end to end through boto3: a small knowledge base
synced once, a retrieve-only job and a retrieve-and-generate job that ask it, and jobs on responses brought in
the dataset (a RAG source's and a model's). One server serves the module; its jobs run side by side.

The judge is a tiny random model: its verdicts may not parse. What is checked is the platform: validation,
Bedrock's output layout, the metrics and counts, and that the passages in the outputs are the knowledge
base's own chunks, found by its search under the job's settings.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
import uuid

import botocore.exceptions
import pytest

from outcrop.cli import main
from tests.backends import objects_path
from tests.conftest import start_server, stop_server
from tests.integration.customization.test_customization import jsonl

BUCKET = "rag-eval"
MINILM = "arn:aws:bedrock:us-east-1::foundation-model/sentence-transformers.all-minilm-l6-v2-v1:0"
DOCUMENTS = {
    "eiffel.txt": "The Eiffel Tower in Paris was completed in 1889 and is 330 metres tall.",
    "coffee.txt": "Coffee plants were first cultivated in Ethiopia and Yemen before spreading worldwide.",
    "volcano.txt": "Mount Vesuvius erupted in 79 AD and buried the Roman city of Pompeii under ash.",
    "penguins.txt": "Emperor penguins breed during the dark Antarctic winter on the sea ice.",
}
QUESTIONS = [("How tall is the Eiffel Tower?", "It is 330 metres tall.", "eiffel.txt"),
             ("Where was coffee first grown?", "In Ethiopia and Yemen.", "coffee.txt"),
             ("Which city did Mount Vesuvius bury?", "Pompeii.", "volcano.txt")]
RETRIEVE_METRICS = ["Builtin.ContextRelevance", "Builtin.ContextCoverage"]
# One of each kind the job scores differently (a model rubric with a reference, the passages, each citation, the
# citations as a whole, a responsible-AI rubric); every metric's prompt is checked in tests/unit/evaluation/test_rag.py.
GENERATE_METRICS = ["Builtin.Correctness", "Builtin.Faithfulness", "Builtin.CitationPrecision",
                    "Builtin.CitationCoverage", "Builtin.Refusal"]


def outcrop(data, *args: str) -> str:
    """The outcrop command run in this process, as a user runs it on the server's data dir (no interpreter to
    start for each: the module's setup stays short)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*args, "--data-dir", str(data)]) == 0, args
    return out.getvalue()


def turn(question: str, reference: str, **extra) -> dict:
    return {"prompt": {"content": [{"text": question}]}, "referenceResponses": [{"content": [{"text": reference}]}],
            **extra}


def byo_output(answer: str, passage: str) -> dict:
    """A RAG source's own response, as Bedrock's dataset for precomputed retrieve-and-generate spells it."""
    return {"knowledgeBaseIdentifier": "my-rag", "text": answer,
            "retrievedPassages": {"retrievalResults": [{"content": {"text": passage}}]},
            "citations": [{"generatedResponsePart": {"textResponsePart": {"text": answer, "span": {
                "start": 0, "end": len(answer) - 1}}}, "retrievedReferences": [{"content": {"text": passage}}]}]}


@pytest.fixture(scope="module")
def rag(tmp_path_factory):
    """A server with a knowledge base of four one-chunk documents, synced; datasets; a tiny model that generates
    and judges (its context holds a rubric and the passages); a role that may search and ask."""
    data = tmp_path_factory.mktemp("rag-data")
    server = start_server(data, {"OUTCROP_MAX_RUNNING_JOBS": "3"})
    try:
        from tests.helpers import make_tiny_llama

        model = outcrop(data, "models", "register", "tiny-rag", str(make_tiny_llama(
            tmp_path_factory.mktemp("tiny-rag"), context=4096))).strip()
        folder = tmp_path_factory.mktemp("rag-files")
        for name, text in DOCUMENTS.items():
            (folder / "docs").mkdir(exist_ok=True)
            (folder / "docs" / name).write_text(text)
        (folder / "sets").mkdir()
        files = {
            "single.jsonl": [{"conversationTurns": [turn(q, a)]} for q, a, _ in QUESTIONS],
            "chat.jsonl": [{"conversationTurns": [turn(q, a)]} for q, a, _ in QUESTIONS[:2]]
            + [{"conversationTurns": [turn(QUESTIONS[2][0], QUESTIONS[2][1]), turn("When was that?", "In 79 AD.")]}],
            "byo.jsonl": [{"conversationTurns": [turn(q, a, output=byo_output(a, DOCUMENTS[doc]))]}
                          for q, a, doc in QUESTIONS],
            "answers.jsonl": [{"prompt": q, "referenceResponse": a,
                               "modelResponses": [{"response": a if i else "no idea", "modelIdentifier": "my-model"}]}
                              for i, (q, a, _) in enumerate(QUESTIONS)],
        }
        for name, lines in files.items():
            (folder / "sets" / name).write_text(jsonl(lines))
        outcrop(data, "s3", "mb", f"s3://{BUCKET}")
        outcrop(data, "s3", "cp", str(folder), f"s3://{BUCKET}/", "--recursive")
        agent = server.client("bedrock-agent")
        kb_role = outcrop(data, "iam", "create-role", "--name", "kb-reader", "--s3-access", BUCKET,
                          "--read-only").strip()
        kb = agent.create_knowledge_base(name="facts", roleArn=kb_role, knowledgeBaseConfiguration={
            "type": "VECTOR", "vectorKnowledgeBaseConfiguration": {"embeddingModelArn": MINILM}})["knowledgeBase"]
        source = agent.create_data_source(
            knowledgeBaseId=kb["knowledgeBaseId"], name="docs", dataSourceConfiguration={
                "type": "S3", "s3Configuration": {"bucketArn": f"arn:aws:s3:::{BUCKET}",
                                                  "inclusionPrefixes": ["docs/"]}})["dataSource"]
        sync = agent.start_ingestion_job(knowledgeBaseId=kb["knowledgeBaseId"], dataSourceId=source["dataSourceId"])
        # Meanwhile, the roles: one that may do everything a RAG job needs, one that may not search.
        role = outcrop(data, "iam", "create-role", "--name", "rag-eval", "--s3-access", BUCKET,
                       "--invoke-models").strip()
        outcrop(data, "iam", "put-role-policy", "--role-name", "rag-eval", "--policy-name", "kb",
                "--policy-document", json.dumps({"Version": "2012-10-17", "Statement": [
                    {"Effect": "Allow", "Action": ["bedrock:Retrieve", "bedrock:RetrieveAndGenerate"],
                     "Resource": kb["knowledgeBaseArn"]}]}))
        blind = outcrop(data, "iam", "create-role", "--name", "rag-blind", "--s3-access", BUCKET,
                        "--invoke-models").strip()
        job = sync["ingestionJob"]
        deadline = time.monotonic() + 120
        while job["status"] in ("STARTING", "IN_PROGRESS"):
            assert time.monotonic() < deadline, job
            time.sleep(0.3)
            job = agent.get_ingestion_job(knowledgeBaseId=kb["knowledgeBaseId"], dataSourceId=source["dataSourceId"],
                                          ingestionJobId=job["ingestionJobId"])["ingestionJob"]
        assert job["status"] == "COMPLETE", job
        yield {"server": server, "bedrock": server.client("bedrock"), "model": model, "kb": kb["knowledgeBaseId"],
               "role": role, "blind": blind}
    finally:
        stop_server(server)


def create(rag, rag_config: dict | None, dataset: str, metrics: list[str], *, role: str | None = None,
           models: list[dict] | None = None, task: str = "QuestionAndAnswer") -> str:
    inference = {"ragConfigs": [rag_config]} if rag_config else {"models": models}
    return rag["bedrock"].create_evaluation_job(
        jobName=f"rag-{uuid.uuid4().hex[:8]}", roleArn=role or rag["role"],
        applicationType="RagEvaluation" if rag_config else "ModelEvaluation",
        outputDataConfig={"s3Uri": f"s3://{BUCKET}/out/"}, inferenceConfig=inference,
        evaluationConfig={"automated": {
            "datasetMetricConfigs": [{"taskType": task, "dataset": {
                "name": dataset.removesuffix(".jsonl"), "datasetLocation": {"s3Uri": f"s3://{BUCKET}/sets/{dataset}"}},
                "metricNames": metrics}],
            **({"evaluatorModelConfig": {"bedrockEvaluatorModels": [{"modelIdentifier": rag["model"]}]}}
               if rag_config else {})}})["jobArn"]


def retrieve_config(rag, **vector) -> dict:
    return {"knowledgeBaseConfig": {"retrieveConfig": {
        "knowledgeBaseId": rag["kb"], "knowledgeBaseRetrievalConfiguration": {"vectorSearchConfiguration": vector}}}}


def generate_config(rag, **vector) -> dict:
    configuration = {
        "knowledgeBaseId": rag["kb"], "modelArn": rag["model"],
        "retrievalConfiguration": {"vectorSearchConfiguration": vector},
        "generationConfiguration": {"kbInferenceConfig": {"textInferenceConfig": {"maxTokens": 12, "temperature": 0}}}}
    return {"knowledgeBaseConfig": {"retrieveAndGenerateConfig": {"type": "KNOWLEDGE_BASE",
                                                                  "knowledgeBaseConfiguration": configuration}}}


def with_guardrail(config: dict) -> dict:
    generation = config["knowledgeBaseConfig"]["retrieveAndGenerateConfig"]["knowledgeBaseConfiguration"][
        "generationConfiguration"]
    generation["guardrailConfiguration"] = {"guardrailId": "nosuchguard1", "guardrailVersion": "DRAFT"}
    return config


def wait(rag, job_arns: list[str], timeout: float = 240) -> list[dict]:
    deadline, done = time.monotonic() + timeout, {}
    while len(done) < len(job_arns):
        assert time.monotonic() < deadline, f"still running: {set(job_arns) - set(done)}"
        for arn in set(job_arns) - set(done):
            job = rag["bedrock"].get_evaluation_job(jobIdentifier=arn)
            if job["status"] in ("Completed", "Failed", "Stopped"):
                done[arn] = job
        time.sleep(0.3)
    return [done[arn] for arn in job_arns]


def outputs(rag, job: dict, source: str, dataset: str) -> tuple[dict, list[dict]]:
    """The job's report.json and its output lines, from Bedrock's layout."""
    folder = objects_path(rag["server"].data_dir, f"s3://{BUCKET}/out/{job['jobName']}/{job['jobArn'][-12:]}")
    [lines] = list((folder / "models" / source / "taskTypes" / "QuestionAndAnswer" / "datasets" / dataset)
                   .glob("*_output.jsonl"))
    return (json.loads((folder / "report.json").read_text()),
            [json.loads(line) for line in lines.read_text().splitlines()])


def check_results(lines: list[dict], metrics: list[str], judge: str) -> None:
    for line in lines:
        for one in line["conversationTurns"]:
            assert [r["metricName"] for r in one["results"]] == metrics
            for result in one["results"]:
                assert result["result"] is None or 0 <= result["result"] <= 1
                assert result["evaluatorDetails"][0]["modelIdentifier"] == judge


def check_report(report: dict, source: str, metrics: list[str], records: int) -> None:
    """One task, every metric a judge metric with each turn counted once, parsed or not (CitationPrecision
    counts citations as unparseable, turns as scored)."""
    assert report["models"] == [source]
    [task] = report["tasks"]
    assert task["records"] == records and [m["name"] for m in task["metrics"]] == metrics
    for metric in task["metrics"]:
        assert metric["kind"] == "judge" and source in metric["intervals"]
        if metric["name"] != "Builtin.CitationPrecision":
            assert metric["counts"][source] + metric["unparseable"][source] == records


def test_retrieve_generate_and_precomputed_jobs(rag):
    bedrock, model = rag["bedrock"], rag["model"]
    penguins = f"s3://{BUCKET}/docs/penguins.txt"
    arns = [create(rag, retrieve_config(rag, numberOfResults=2), "single.jsonl", RETRIEVE_METRICS),
            create(rag, generate_config(rag, numberOfResults=3, filter={
                "notEquals": {"key": "x-amz-bedrock-kb-source-uri", "value": penguins}}), "chat.jsonl",
                GENERATE_METRICS),
            create(rag, {"precomputedRagSourceConfig": {"retrieveAndGenerateSourceConfig": {
                "ragSourceIdentifier": "my-rag"}}}, "byo.jsonl", ["Builtin.Faithfulness",
                                                                  "Builtin.CitationPrecision"], role=rag["blind"]),
            create(rag, None, "answers.jsonl", ["Builtin.Accuracy"], models=[
                {"precomputedInferenceSource": {"inferenceSourceIdentifier": "my-model"}}], role=rag["blind"])]
    retrieve, generate, byo, answers = wait(rag, arns)
    for job in (retrieve, generate, byo, answers):
        assert job["status"] == "Completed", job.get("failureMessages")
    assert retrieve["applicationType"] == "RagEvaluation" and answers["applicationType"] == "ModelEvaluation"

    # Retrieve-only: numberOfResults passages per prompt, the knowledge base's chunks, the right one first.
    report, lines = outputs(rag, retrieve, rag["kb"], "single")
    check_report(report, rag["kb"], RETRIEVE_METRICS, 3)
    check_results(lines, RETRIEVE_METRICS, model)
    for line, (question, _, document) in zip(lines, QUESTIONS, strict=True):
        [one] = line["conversationTurns"]
        assert one["inputRecord"]["prompt"]["content"][0]["text"] == question
        assert one["output"]["knowledgeBaseIdentifier"] == rag["kb"]
        passages = one["output"]["retrievedResults"]["retrievalResults"]
        assert len(passages) == 2 and all(p["content"]["text"] in DOCUMENTS.values() for p in passages)
        assert passages[0]["content"]["text"] == DOCUMENTS[document]
        assert passages[0]["location"]["s3Location"]["uri"] == f"s3://{BUCKET}/docs/{document}"

    # Retrieve-and-generate: an answer per turn from the tiny model, the passages it was given (the filter kept
    # the penguins out), citations of those passages; the two-turn conversation is one line.
    report, lines = outputs(rag, generate, rag["kb"], "chat")
    check_report(report, rag["kb"], GENERATE_METRICS, 4)
    check_results(lines, GENERATE_METRICS, model)
    assert [len(line["conversationTurns"]) for line in lines] == [1, 1, 2]
    for line in lines:
        for one in line["conversationTurns"]:
            output = one["output"]
            assert isinstance(output["text"], str) and output["modelIdentifier"] == model
            passages = [p["content"]["text"] for p in output["retrievedPassages"]["retrievalResults"]]
            assert len(passages) == 3 and set(passages) <= set(DOCUMENTS.values()) - {DOCUMENTS["penguins.txt"]}
            cited = [r["content"]["text"] for c in output["citations"] for r in c["retrievedReferences"]]
            assert set(cited) <= set(passages)
    assert lines[0]["conversationTurns"][0]["output"]["retrievedPassages"]["retrievalResults"][0]["content"][
        "text"] == DOCUMENTS["eiffel.txt"]

    # Precomputed RAG responses: judged as given, under the ragSourceIdentifier, by a role that may not search.
    report, lines = outputs(rag, byo, "my-rag", "byo")
    check_report(report, "my-rag", ["Builtin.Faithfulness", "Builtin.CitationPrecision"], 3)
    check_results(lines, ["Builtin.Faithfulness", "Builtin.CitationPrecision"], model)
    for line, (_, answer, document) in zip(lines, QUESTIONS, strict=True):
        [one] = line["conversationTurns"]
        assert one["output"]["text"] == answer and one["output"]["knowledgeBaseIdentifier"] == "my-rag"
        assert one["output"]["retrievedPassages"]["retrievalResults"] == [{"content": {"text": DOCUMENTS[document]}}]
        assert "output" not in one["inputRecord"]

    # Precomputed model responses: the dataset's answers are scored, nothing is invoked.
    report, lines = outputs(rag, answers, "my-model", "answers")
    assert [line["modelResponses"] for line in lines] == [
        [{"response": r, "modelIdentifier": "my-model"}] for r in ["no idea", QUESTIONS[1][1], QUESTIONS[2][1]]]
    accuracy = [s["result"] for line in lines for s in line["automatedEvaluationResult"]["scores"]]
    assert accuracy[0] < 1 and accuracy[1:] == [1.0, 1.0]

    # Listings: by application type, with the summary shapes botocore defines.
    listed = {s["jobArn"]: s for s in bedrock.list_evaluation_jobs(applicationTypeEquals="RagEvaluation")[
        "jobSummaries"]}
    assert set(listed) == set(arns[:3])
    assert listed[arns[0]]["inferenceConfigSummary"]["ragConfigSummary"] == {
        "bedrockKnowledgeBaseIdentifiers": [rag["kb"]]}
    assert listed[arns[0]]["ragIdentifiers"] == [rag["kb"]] and listed[arns[1]]["modelIdentifiers"] == [model]
    assert listed[arns[2]]["inferenceConfigSummary"]["ragConfigSummary"] == {
        "precomputedRagSourceIdentifiers": ["my-rag"]}
    [model_job] = bedrock.list_evaluation_jobs(applicationTypeEquals="ModelEvaluation")["jobSummaries"]
    assert model_job["inferenceConfigSummary"]["modelConfigSummary"] == {
        "bedrockModelIdentifiers": [], "precomputedInferenceSourceIdentifiers": ["my-model"]}


@pytest.mark.parametrize("change, code, message", [
    (lambda r: {"type": "ModelEvaluation"}, "ValidationException",
     "inferenceConfig.ragConfigs is for applicationType RagEvaluation"),
    (lambda r: {"custom": True}, "ValidationException", "customMetricConfig is not available for RAG"),
    (lambda r: {"config": {"knowledgeBaseConfig": {"retrieveConfig": {
        "knowledgeBaseId": "NOSUCHKB00", "knowledgeBaseRetrievalConfiguration": {"vectorSearchConfiguration": {}}}}}},
     "ValidationException", "retrieveConfig.knowledgeBaseId: the knowledge base NOSUCHKB00 does not exist"),
    (lambda r: {"metrics": ["Builtin.Faithfulness"]}, "ValidationException",
     "Builtin.Faithfulness is not a metric of retrieve-only"),
    (lambda r: {"config": generate_config(r), "metrics": ["Builtin.ContextRelevance"]}, "ValidationException",
     "Builtin.ContextRelevance is not a metric of retrieve-and-generate"),
    (lambda r: {"config": retrieve_config(r, rerankingConfiguration={
        "type": "BEDROCK_RERANKING_MODEL", "bedrockRerankingConfiguration": {"modelConfiguration": {
            "modelArn": "arn:aws:bedrock:us-east-1::foundation-model/amazon.rerank-v1:0"}}})},
     "ValidationException", "knowledgeBaseRetrievalConfiguration.vectorSearchConfiguration.rerankingConfiguration"),
    (lambda r: {"role": r["blind"]}, "AccessDeniedException", "bedrock:Retrieve"),
    (lambda r: {"config": with_guardrail(generate_config(r)), "metrics": ["Builtin.Correctness"]},
     "ValidationException", "generationConfiguration.guardrailConfiguration"),
    # Sent as raw JSON (boto3 refuses None): a null member is an absent one, not a 500.
    (lambda r: {"raw": True, "config": {"precomputedRagSourceConfig": None, "knowledgeBaseConfig": {"retrieveConfig": {
        "knowledgeBaseId": "NOSUCHKB00", "knowledgeBaseRetrievalConfiguration": {"vectorSearchConfiguration": {}}}}}},
     "ValidationException", "the knowledge base NOSUCHKB00 does not exist"),
], ids=["rag-config-in-a-model-job", "custom-metrics", "no-such-knowledge-base", "generation-metric-on-retrieve",
        "context-metric-on-generate", "reranking", "role-may-not-search", "no-such-guardrail", "a-null-member"])
def test_bad_rag_requests_are_refused_by_name(rag, change, code, message):
    changed = change(rag)
    request = {"jobName": f"bad-{uuid.uuid4().hex[:8]}", "roleArn": changed.get("role", rag["role"]),
               "applicationType": "RagEvaluation", "outputDataConfig": {"s3Uri": f"s3://{BUCKET}/out/"},
               "inferenceConfig": {"ragConfigs": [changed.get("config", retrieve_config(rag))]},
               "evaluationConfig": {"automated": {
                   "datasetMetricConfigs": [{"taskType": "QuestionAndAnswer", "dataset": {
                       "name": "single", "datasetLocation": {"s3Uri": f"s3://{BUCKET}/sets/single.jsonl"}},
                       "metricNames": changed.get("metrics", RETRIEVE_METRICS)}],
                   "evaluatorModelConfig": {"bedrockEvaluatorModels": [{"modelIdentifier": rag["model"]}]}}}}
    if "type" in changed:
        request["applicationType"] = changed["type"]
    if "custom" in changed:
        request["evaluationConfig"]["automated"]["customMetricConfig"] = {
            "customMetrics": [{"customMetricDefinition": {"name": "Short", "instructions": "Short? {{prediction}}"}}],
            "evaluatorModelConfig": {"bedrockEvaluatorModels": [{"modelIdentifier": rag["model"]}]}}
    if changed.get("raw"):
        status, _, body = rag["server"].raw("POST", "/evaluation-jobs", json.dumps(request).encode(),
                                            headers={"Content-Type": "application/json"})
        assert status == 400 and body["__type"] == code and message in body["message"], (status, body)
        return
    with pytest.raises(botocore.exceptions.ClientError) as error:
        rag["bedrock"].create_evaluation_job(**request)
    assert error.value.response["Error"]["Code"] == code
    assert message in error.value.response["Error"]["Message"]
