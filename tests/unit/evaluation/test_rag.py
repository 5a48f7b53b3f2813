"""RAG evaluation without a server: the knowledge-base evaluation dataset, the RAG rubrics' judge prompts, how
each metric asks the judge and reads it back, precomputed answers, and what a RAG job's role must allow."""

from __future__ import annotations

import json
import re

import pytest

from outcrop.customization.datasets import DatasetError
from outcrop.errors import ValidationException
from outcrop.evaluation import datasets, judge, outputs, rag
from outcrop.evaluation.service import EvaluationService, _inference_summary, required_permissions

SOURCE = "s3://b/rag.jsonl"


def line(*turns: dict) -> str:
    return json.dumps({"conversationTurns": list(turns)})


def turn(prompt: str = "How tall is it?", reference: str | None = "330 m", **extra) -> dict:
    out = {"prompt": {"content": [{"text": prompt}]}, **extra}
    if reference is not None:
        out["referenceResponses"] = [{"content": [{"text": reference}]}]
    return out


def output(text: str = "It is 330 m.", passages: tuple[str, ...] = ("The tower is 330 m tall.",),
           key: str = "retrievedPassages", cited: bool = True, **extra) -> dict:
    results = [{"content": {"text": p}} for p in passages]
    citations = [{"generatedResponsePart": {"textResponsePart": {"text": text}}, "retrievedReferences": results}] \
        if cited else []
    return {"knowledgeBaseIdentifier": "my-rag", "text": text, key: {"retrievalResults": results},
            "citations": citations, **extra}


# -- the dataset ---------------------------------------------------------------------------------------------

def test_conversations_keep_their_lines_turns_and_references():
    got = rag.parse_conversations(["\ufeff" + line(turn()), "", line(turn("a?", None), turn("b?", "B", extra=1))],
                                  SOURCE, rag.GENERATE)
    assert [[(t.prompt, t.reference, t.line, t.position) for t in c] for c in got] == [
        [("How tall is it?", "330 m", 1, 0)], [("a?", None, 3, 0), ("b?", "B", 3, 1)]]
    assert got[1][1].record == turn("b?", "B", extra=1) and got[0][0].answer is None
    contexts = rag.parse_conversations([line(turn(referenceContexts=[{"content": [{"text": "c1"}, {"text": "c2"}]}]))],
                                       SOURCE, rag.RETRIEVE)
    assert contexts[0][0].contexts == "c1\nc2"


@pytest.mark.parametrize("text, kind, message", [
    ("{", rag.RETRIEVE, "not a JSON object"),
    (json.dumps({"prompt": "x"}), rag.RETRIEVE, "conversationTurns is required"),
    (line(turn(), turn()), rag.RETRIEVE, "2 conversation turns; a retrieve-only evaluation takes at most 1"),
    (line(*[turn()] * 6), rag.GENERATE, "6 conversation turns; a retrieve-and-generate evaluation takes at most 5"),
    (line({"prompt": {"content": "x"}}), rag.RETRIEVE, "conversationTurns[0].prompt must be"),
    (line({"prompt": {"content": [{"text": " "}]}}), rag.RETRIEVE, "conversationTurns[0].prompt needs content"),
    (line(turn(reference=None, referenceResponses="x")), rag.RETRIEVE,
     "conversationTurns[0].referenceResponses must be a list"),
    (line(turn(output=output())), rag.GENERATE, "conversationTurns[0].output is a response of your own"),
])
def test_dataset_errors_name_the_line_and_field(text, kind, message):
    with pytest.raises(DatasetError, match=re.escape(f"{SOURCE} line 2: ") + ".*" + re.escape(message)):
        rag.parse_conversations([line(turn()), text], SOURCE, kind)


def test_a_dataset_needs_a_conversation_and_at_most_the_limit():
    with pytest.raises(DatasetError, match="no conversations"):
        rag.parse_conversations(["", " "], SOURCE, rag.RETRIEVE)
    with pytest.raises(DatasetError, match="more than 2 conversations"):
        rag.parse_conversations([line(turn())] * 3, SOURCE, rag.RETRIEVE, max_records=2)


def test_precomputed_outputs_are_read_as_bedrock_spells_them():
    [[one]] = rag.parse_conversations([line(turn(output=output(modelIdentifier="gpt")))], SOURCE, rag.GENERATE,
                                      "my-rag")
    assert one.answer.text == "It is 330 m." and one.answer.model == "gpt"
    assert one.answer.passages == [{"content": {"text": "The tower is 330 m tall."}}]
    assert len(one.answer.citations) == 1 and "output" not in one.record
    # retrieve-only: the passages alone, spelled retrievedResults (retrievedPassages is read too)
    for key in ("retrievedResults", "retrievedPassages"):
        [[only]] = rag.parse_conversations([line(turn(output={"knowledgeBaseIdentifier": "my-rag", key: {
            "retrievalResults": []}}))], SOURCE, rag.RETRIEVE, "my-rag")
        assert (only.answer.text, only.answer.passages) == (None, [])
        assert only.answer.output(rag.RETRIEVE, "my-rag") == {"knowledgeBaseIdentifier": "my-rag",
                                                              "retrievedResults": {"retrievalResults": []}}


@pytest.mark.parametrize("value, message", [
    (None, "output is required"),
    (output(knowledgeBaseIdentifier="other"), "must be the job's ragSourceIdentifier my-rag, not 'other'"),
    ({"knowledgeBaseIdentifier": "my-rag", "text": "x"}, "needs the passages retrieved"),
    (output(passages=("a",)) | {"retrievedPassages": {"retrievalResults": [{"content": "a"}]}},
     "retrievalResults[0] must have content with text"),
    ({k: v for k, v in output().items() if k != "text"}, "output.text (the generated response) is required"),
    (output() | {"citations": [{"retrievedReferences": []}]}, "textResponsePart.text (the cited part"),
])
def test_precomputed_output_errors_name_the_field(value, message):
    extra = {} if value is None else {"output": value}
    with pytest.raises(DatasetError, match=re.escape(message)):
        rag.parse_conversations([line(turn(**extra))], SOURCE, rag.GENERATE, "my-rag")


def test_context_coverage_needs_ground_truth_in_every_turn():
    conversations = rag.parse_conversations([line(turn()), line(turn(reference=None))], SOURCE, rag.RETRIEVE)
    dataset = rag.RagDataset("Custom", "mine", [rag.CONTEXT_COVERAGE], conversations, SOURCE)
    with pytest.raises(DatasetError, match="mine line 2: Builtin.ContextCoverage needs referenceResponses"):
        rag.require_ground_truth(dataset, rag.CONTEXT_COVERAGE)


def test_generation_settings_become_retrieve_and_generates():
    config = {"type": "KNOWLEDGE_BASE", "knowledgeBaseConfiguration": {
        "knowledgeBaseId": "KB", "modelArn": "m", "retrievalConfiguration": {"vectorSearchConfiguration": {
            "numberOfResults": 2}}, "generationConfiguration": {
            "promptTemplate": {"textPromptTemplate": "$search_results$"},
            "kbInferenceConfig": {"textInferenceConfig": {"maxTokens": 9}}}}}
    mapped = rag.generation_configuration(config)
    generation = mapped["knowledgeBaseConfiguration"]["generationConfiguration"]
    assert generation == {"promptTemplate": {"textPromptTemplate": "$search_results$"},
                          "inferenceConfig": {"textInferenceConfig": {"maxTokens": 9}}}
    assert mapped["knowledgeBaseConfiguration"]["retrievalConfiguration"] == config["knowledgeBaseConfiguration"][
        "retrievalConfiguration"]
    assert "inferenceConfig" not in config["knowledgeBaseConfiguration"]["generationConfiguration"]  # not changed


# -- the rubrics and their prompts -------------------------------------------------------------------------------

def test_rag_metrics_are_bedrocks_by_kind_of_job():
    by_job = {kind: [n for n, m in judge.RAG_RUBRICS.items() if m.job == kind] for kind in (rag.RETRIEVE, rag.GENERATE)}
    assert by_job[rag.RETRIEVE] == ["Builtin.ContextRelevance", "Builtin.ContextCoverage"]
    assert set(by_job[rag.GENERATE]) == {
        "Builtin.Correctness", "Builtin.Completeness", "Builtin.Helpfulness", "Builtin.LogicalCoherence",
        "Builtin.Faithfulness", "Builtin.CitationPrecision", "Builtin.CitationCoverage", "Builtin.Harmfulness",
        "Builtin.Stereotyping", "Builtin.Refusal"}
    assert [n for n, m in judge.RAG_RUBRICS.items() if m.per_citation] == ["Builtin.CitationPrecision"]
    with pytest.raises(ValidationException, match="metricNames: Builtin.Faithfulness is not a metric of retrieve-only"):
        judge.rag_metric("Builtin.Faithfulness", rag.RETRIEVE)
    assert judge.rag_metric("Builtin.Faithfulness", rag.GENERATE).rubric.name == "Builtin.Faithfulness"
    # Model evaluation's judge metrics are unchanged: the RAG-only ones are not valid there.
    assert "Builtin.ContextRelevance" not in judge.BUILTIN_RUBRICS


def test_metrics_that_mean_the_same_take_the_model_rubric():
    for name, model_name in (("Builtin.Correctness", "Builtin.Correctness"), ("Builtin.Refusal", "Builtin.Refusal"),
                             ("Builtin.LogicalCoherence", "Builtin.Coherence")):
        rubric, model = judge.RAG_RUBRICS[name].rubric, judge.BUILTIN_RUBRICS[model_name]
        assert rubric.name == name
        assert (rubric.instructions, rubric.scale, rubric.higher_is_better) == (
            model.instructions, model.scale, model.higher_is_better)
    assert judge.RAG_RUBRICS["Builtin.Faithfulness"].rubric != judge.BUILTIN_RUBRICS["Builtin.Faithfulness"]


@pytest.mark.parametrize("name", list(judge.RAG_RUBRICS))
def test_every_rag_prompt_fills_every_placeholder_once(name):
    metric = judge.RAG_RUBRICS[name]
    rubric = metric.rubric
    assert rubric.description and rubric.numeric
    values = [item.value for item in rubric.scale]
    assert values == sorted(values) and rubric.normalise(values[0]) == 0.0 and rubric.normalise(values[-1]) == 1.0
    response = None if metric.job == rag.RETRIEVE else "It is 330 m."
    system, user = judge.judge_messages(rubric, "How tall is it?", response, "330 metres", "[1] The tower is 330 m.")
    text = user["content"]
    assert "{{" not in text and text.count("How tall is it?") == 1
    if "{{context}}" in rubric.instructions:
        assert text.count("[1] The tower is 330 m.") == 1
    if response is None:
        assert "<response>" not in text and "passages a search system retrieved" in system["content"]
    else:
        assert text.count("It is 330 m.") == 1 and "one response written by an AI assistant" in system["content"]
    assert f"Allowed values: {', '.join(judge.show_value(v) for v in values)}." in text


# -- asking the judge and reading it back --------------------------------------------------------------------------

def answered(kind: str, *outputs_: dict) -> tuple[rag.RagDataset, list[rag.Answer]]:
    conversations = rag.parse_conversations([line(*(turn(f"q{i}?", output=o) for i, o in enumerate(outputs_)))],
                                            SOURCE, kind, "my-rag")
    dataset = rag.RagDataset("Custom", "mine", [], conversations, SOURCE)
    return dataset, [t.answer for t in dataset.turns]


def test_context_metrics_show_the_numbered_passages_and_no_response():
    dataset, answers = answered(rag.RETRIEVE, {"knowledgeBaseIdentifier": "my-rag", "retrievedResults": {
        "retrievalResults": [{"content": {"text": "one"}}, {"content": {"text": "two"}}]}})
    [ask] = rag._Plan("Builtin.ContextRelevance", dataset, answers).asks
    assert ask == ("q0?", None, "330 m", "[1] one\n\n[2] two")
    empty, answers = answered(rag.RETRIEVE, {"knowledgeBaseIdentifier": "my-rag", "retrievedResults": {
        "retrievalResults": []}})
    assert rag._Plan("Builtin.ContextCoverage", empty, answers).asks[0][3] == rag.NO_PASSAGES


def test_later_turns_are_judged_after_the_conversation_so_far():
    dataset, answers = answered(rag.GENERATE, output("First."), output("Second."))
    asks = rag._Plan("Builtin.Helpfulness", dataset, answers).asks
    assert asks[0][0] == "q0?"
    assert asks[1][0] == "Earlier in the conversation:\nUser: q0?\nAssistant: First.\n\nQuestion: q1?"
    assert asks[1][1] == "Second."


def test_citation_precision_judges_each_cited_passage_and_averages_per_turn():
    dataset, answers = answered(rag.GENERATE, output(passages=("p1", "p2")), output(cited=False))
    plan = rag._Plan("Builtin.CitationPrecision", dataset, answers)
    assert [a[1:] for a in plan.asks] == [("It is 330 m.", "330 m", "p1"), ("It is 330 m.", "330 m", "p2")]
    assert plan.owners == [0, 0]
    one, results = plan.read(["Rating: 3\nReason: yes", "Rating: 2\nReason: partly"], "judge")
    assert [r["result"] for r in results] == [0.75, None]
    assert results[1]["evaluatorDetails"] == [{"modelIdentifier": "judge", "explanation": rag.NOTHING_CITED}]
    assert "Citation 1: yes" in results[0]["evaluatorDetails"][0]["explanation"]
    assert (one["score"], one["count"], one["unparseable"], one["sample"].values) == (0.75, 1, 0, [0.75, None])
    assert one["distribution"] == {"1": 0, "2": 1, "3": 1}


def test_citation_coverage_of_an_uncited_response_is_the_lowest_rating_unasked():
    dataset, answers = answered(rag.GENERATE, output(passages=("p1", "p1")), output(cited=False))
    plan = rag._Plan(rag.CITATION_COVERAGE, dataset, answers)
    assert [a[3] for a in plan.asks] == ["[1] p1"] and plan.owners == [0]  # a passage cited twice is shown once
    one, results = plan.read(["Rating: 5\nReason: all of it"], "judge")
    assert [r["result"] for r in results] == [1.0, 0.0]
    assert results[1]["evaluatorDetails"][0]["explanation"] == rag.UNCITED
    assert (one["score"], one["count"], one["unparseable"]) == (0.5, 2, 0)


def test_unparseable_verdicts_are_counted_not_scored():
    dataset, answers = answered(rag.GENERATE, output())
    one, results = rag._Plan("Builtin.Refusal", dataset, answers).read(["blah blah"], "judge")
    assert results[0]["result"] is None and results[0]["evaluatorDetails"][0]["explanation"] == "blah blah"
    assert (one["count"], one["unparseable"], one["higherIsBetter"]) == (0, 1, False)


# -- precomputed model responses, and what a job needs -------------------------------------------------------------

def test_precomputed_model_responses_are_read_by_identifier():
    records = datasets.parse_records([json.dumps({"prompt": "a?", "modelResponses": [
        {"response": "A", "modelIdentifier": "mine"}, {"response": "B", "modelIdentifier": "theirs"}]}),
        json.dumps({"prompt": "b?", "modelResponses": [{"response": "C", "modelIdentifier": "mine"}]})], SOURCE)
    assert datasets.precomputed_responses(records, "set", "mine") == ["A", "C"]
    with pytest.raises(DatasetError, match="set line 2: modelResponses has no response whose modelIdentifier is "):
        datasets.precomputed_responses(records, "set", "theirs")
    bare = datasets.parse_records([json.dumps({"prompt": "a?"})], SOURCE)
    with pytest.raises(DatasetError, match="set line 1: modelResponses must be a list"):
        datasets.precomputed_responses(bare, "set", "mine")


def model_request(*metrics: str, dataset: str = "mine") -> dict:
    return {"jobName": "j", "jobId": "abcdefabcdef", "roleArn": "arn:aws:iam::123456789012:role/r",
            "outputDataConfig": {"s3Uri": "s3://outputs/"},
            "inferenceConfig": {"models": [{"precomputedInferenceSource": {"inferenceSourceIdentifier": "mine"}},
                                           {"bedrockModel": {"modelIdentifier": "m.x-v1:0"}}]},
            "evaluationConfig": {"automated": {"datasetMetricConfigs": [{
                "taskType": "QuestionAndAnswer", "metricNames": list(metrics), "dataset": {
                    "name": dataset, "datasetLocation": {"s3Uri": "s3://inputs/d.jsonl"}}}]}}}


def test_a_precomputed_source_is_named_never_invoked_and_needs_its_answers():
    request = model_request("Builtin.Accuracy")
    assert outputs.evaluated(request) == ["mine", "m.x-v1:0"]
    needs = required_permissions(request, "abcdefabcdef", lambda m: [f"arn:{m}"])
    assert [n for n in needs if n[0] == "bedrock:InvokeModel"] == [("bedrock:InvokeModel", "arn:m.x-v1:0")]
    assert _inference_summary(request) == {"inferenceConfigSummary": {"modelConfigSummary": {
        "bedrockModelIdentifiers": ["m.x-v1:0"], "precomputedInferenceSourceIdentifiers": ["mine"]}}}
    EvaluationService._check_precomputed(request)
    with pytest.raises(ValidationException, match="Builtin.Robustness asks the model itself"):
        EvaluationService._check_precomputed(model_request("Builtin.Robustness"))
    with pytest.raises(ValidationException, match="the built-in dataset Builtin.BoolQ holds no modelResponses"):
        EvaluationService._check_precomputed(model_request("Builtin.Accuracy", dataset="Builtin.BoolQ"))


def rag_request(config: dict) -> dict:
    return {**model_request("Builtin.Faithfulness"), "applicationType": "RagEvaluation",
            "inferenceConfig": {"ragConfigs": [config]}}


def test_a_rag_jobs_role_needs_what_bedrocks_knowledge_base_role_needs():
    generation = {"type": "KNOWLEDGE_BASE", "knowledgeBaseConfiguration": {
        "knowledgeBaseId": "KB1", "modelArn": "gen.m-v1:0", "generationConfiguration": {
            "guardrailConfiguration": {"guardrailId": "g1", "guardrailVersion": "DRAFT"}}}}
    request = rag_request({"knowledgeBaseConfig": {"retrieveAndGenerateConfig": generation}})
    assert outputs.rag_source(request) == ("generate", "KB1", False)
    needs = required_permissions(request, "abcdefabcdef", lambda m: [f"arn:{m}"], "us-east-1")
    kb = "arn:aws:bedrock:us-east-1:123456789012:knowledge-base/KB1"
    assert ("bedrock:Retrieve", kb) in needs and ("bedrock:RetrieveAndGenerate", kb) in needs
    assert ("bedrock:InvokeModel", "arn:gen.m-v1:0") in needs
    assert ("bedrock:ApplyGuardrail", "arn:aws:bedrock:us-east-1:123456789012:guardrail/g1") in needs
    assert _inference_summary(request) == {"inferenceConfigSummary": {"ragConfigSummary": {
        "bedrockKnowledgeBaseIdentifiers": ["KB1"]}}, "ragIdentifiers": ["KB1"]}
    with pytest.raises(ValueError, match="region"):
        required_permissions(request, "abcdefabcdef", lambda m: [m])
    retrieve = rag_request({"knowledgeBaseConfig": {"retrieveConfig": {
        "knowledgeBaseId": "KB1", "knowledgeBaseRetrievalConfiguration": {"vectorSearchConfiguration": {}}}}})
    needs = required_permissions(retrieve, "abcdefabcdef", lambda m: [m], "us-east-1")
    assert [n for n in needs if n[0].startswith("bedrock:")] == [("bedrock:Retrieve", kb)]
    precomputed = rag_request({"precomputedRagSourceConfig": {"retrieveSourceConfig": {"ragSourceIdentifier": "s"}}})
    assert outputs.rag_source(precomputed) == ("retrieve", "s", True) and outputs.evaluated(precomputed) == ["s"]
    assert not [n for n in required_permissions(precomputed, "abcdefabcdef", lambda m: [m]) if n[0] != "s3:GetObject"
                and n[0] != "s3:PutObject"]
