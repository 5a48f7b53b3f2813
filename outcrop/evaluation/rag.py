"""RAG evaluation: Bedrock's knowledge-base evaluation jobs (applicationType RagEvaluation), top to bottom.

A job evaluates one RAG source (`inferenceConfig.ragConfigs[0]`):
- a knowledge base, retrieve-only (`retrieveConfig`) or retrieve-and-generate (`retrieveAndGenerateConfig`).
  Each prompt goes through Outcrop's own knowledge-base code, the very `Retrieval` that serves the Retrieve and
  RetrieveAndGenerate APIs, on the job's runtime and as the job's role: the same search (numberOfResults,
  filters, search type), prompt template, generation model, inference settings and guardrail. A conversation's
  later turns continue its RetrieveAndGenerate session, as a client's would.
- responses brought in the dataset (`precomputedRagSourceConfig`): each turn's `output` is the answer, and
  nothing is asked but the judge.

The dataset is Bedrock's for knowledge-base evaluation, one conversation per line:
    {"conversationTurns": [{"prompt": {"content": [{"text"}]}, "referenceResponses": [{"content": [{"text"}]}],
                            "referenceContexts": [...], "output": {...}}]}
at most 1,000 conversations of one turn (retrieve-only) or up to five (retrieve-and-generate). A precomputed
turn's `output` is {"knowledgeBaseIdentifier" (the job's ragSourceIdentifier), "text" (retrieve-and-generate),
"retrievedPassages" | "retrievedResults": {"retrievalResults": [{"content": {"text"}, ...}]}, "citations"}:
Bedrock's examples spell the passages `retrievedPassages` for retrieve-and-generate and `retrievedResults` for
retrieve-only; either is read for both.

Every metric is a judge metric (`judge.RAG_RUBRICS`, prose in catalog/judge_rubrics.toml), asked of
`evaluatorModelConfig`'s model once per turn, except CitationPrecision, asked once per cited passage (a turn's
result is the mean over its citations; a turn that cites nothing has none). CitationCoverage of a turn that
cites nothing is the scale's lowest value without asking: no statement of it is supported by a citation.

Outputs, in Bedrock's layout with the knowledge base id (or ragSourceIdentifier) in place of a model:
    <job prefix>/models/<source>/taskTypes/<task>/datasets/<dataset>/<uuid>_output.jsonl
one line per conversation, `{"conversationTurns": [{"inputRecord", "output", "results": [{"metricName",
"result", "evaluatorDetails": [{"modelIdentifier", "explanation"}]}]}]}`, and report.json / report.html with
the model jobs' summary.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from outcrop.customization.datasets import DatasetError
from outcrop.errors import ValidationException
from outcrop.evaluation import datasets, inference, job, judge, outputs, statistics
from outcrop.evaluation.service import dataset_configs, rag_generation, required_permissions
from outcrop.evaluation.tables import EvaluationJobRow
from outcrop.iam.scoped_store import ScopedStore
from outcrop.platform import jobs

log = logging.getLogger(__name__)

RETRIEVE, GENERATE = judge.RETRIEVE, judge.GENERATE
#: Bedrock's limit on a retrieve-and-generate conversation's turns (retrieve-only conversations have one).
MAX_TURNS = 5
CONTEXT_COVERAGE, CITATION_COVERAGE = "Builtin.ContextCoverage", "Builtin.CitationCoverage"
#: What the judge reads where a turn has no passage.
NO_PASSAGES = "(no passages)"
#: A turn without citations: CitationCoverage's lowest rating is given, not asked; CitationPrecision has none.
UNCITED = "The response cites no passage, so none of it is supported by a citation (rated without asking the judge)."
NOTHING_CITED = "The response cites no passage: there is no citation to judge."


# ------------------------------------------------------------------------------------------------ the dataset
@dataclass
class Turn:
    prompt: str
    #: The referenceResponses' texts, joined: the judge's ground truth.
    reference: str | None
    #: The referenceContexts' texts, joined: ContextCoverage's ground truth when there is no reference response.
    contexts: str | None
    #: The line in the dataset (1-based) and the turn's place in its conversation.
    line: int
    position: int
    #: The turn as read, less its output: the output line's inputRecord.
    record: dict[str, Any]
    #: A precomputed source's answer (`output` checked and read); None when the knowledge base is asked.
    answer: Answer | None = None
    #: `job._Judged.entry` groups scores by category; Bedrock's RAG datasets have none.
    category: str | None = None


@dataclass
class Answer:
    """One turn's RAG output: what the judges read and the output line shows."""

    text: str | None
    #: Retrieve's retrievalResults: every passage found (for retrieve-and-generate: all the model was given).
    passages: list[dict[str, Any]]
    #: RetrieveAndGenerate's citations (retrieve-only: none).
    citations: list[dict[str, Any]]
    #: The generation model, as the output line's modelIdentifier.
    model: str | None = None
    guardrail_action: str | None = None

    def output(self, kind: str, identifier: str) -> dict[str, Any]:
        out: dict[str, Any] = {"knowledgeBaseIdentifier": identifier}
        if kind == RETRIEVE:
            return out | {"retrievedResults": {"retrievalResults": self.passages}}
        out["text"] = self.text or ""
        if self.model:
            out["modelIdentifier"] = self.model
        if self.guardrail_action:
            out["guardrailAction"] = self.guardrail_action
        return out | {"retrievedPassages": {"retrievalResults": self.passages}, "citations": self.citations}


@dataclass
class RagDataset:
    task_type: str
    name: str
    metric_names: list[str]
    conversations: list[list[Turn]]
    source: str

    @property
    def turns(self) -> list[Turn]:
        return [turn for conversation in self.conversations for turn in conversation]


def parse_conversations(lines: Iterable[bytes | str], source: str, kind: str, precomputed: str | None = None,
                        max_records: int = datasets.MAX_PROMPTS) -> list[list[Turn]]:
    """A knowledge-base evaluation dataset, line by line, errors naming the line. `precomputed` is the job's
    ragSourceIdentifier when the responses come in the dataset (every turn then needs its `output`)."""
    conversations = [_conversation(value, f"{source} line {number}", number, kind, precomputed)
                     for number, value in datasets.json_lines(lines, source, max_records, "conversations")]
    if not conversations:
        raise DatasetError(f"{source}: no conversations; a dataset needs at least one JSON line with "
                           "conversationTurns")
    return conversations


def _conversation(value: Any, where: str, number: int, kind: str, precomputed: str | None) -> list[Turn]:
    turns = value.get("conversationTurns") if isinstance(value, dict) else None
    if not isinstance(turns, list) or not turns:
        raise DatasetError(f"{where}: conversationTurns is required: a list of turns, each with a prompt")
    limit = 1 if kind == RETRIEVE else MAX_TURNS
    if len(turns) > limit:
        raise DatasetError(f"{where}: {len(turns)} conversation turns; a "
                           f"{'retrieve-only' if kind == RETRIEVE else 'retrieve-and-generate'} evaluation takes "
                           f"at most {limit}")
    return [_turn(turn, f"{where}: conversationTurns[{i}]", number, i, kind, precomputed)
            for i, turn in enumerate(turns)]


def _turn(value: Any, where: str, number: int, position: int, kind: str, precomputed: str | None) -> Turn:
    if not isinstance(value, dict):
        raise DatasetError(f"{where} must be an object with a prompt")
    prompt = _text(value.get("prompt"), f"{where}.prompt")
    if not prompt.strip():
        raise DatasetError(f"{where}.prompt needs content with text")
    references = _texts(value.get("referenceResponses"), f"{where}.referenceResponses")
    contexts = _texts(value.get("referenceContexts"), f"{where}.referenceContexts")
    answer = None
    if precomputed is not None:
        answer = _precomputed(value.get("output"), f"{where}.output", kind, precomputed)
    elif "output" in value:
        raise DatasetError(f"{where}.output is a response of your own: it is for jobs with a "
                           "precomputedRagSourceConfig, and this job asks the knowledge base")
    record = {k: v for k, v in value.items() if k != "output"}
    return Turn(prompt, "\n\n".join(references) or None, "\n\n".join(contexts) or None, number, position, record,
                answer)


def _text(value: Any, where: str) -> str:
    """A `{"content": [{"text"}]}` block's text (its parts joined)."""
    content = value.get("content") if isinstance(value, dict) else None
    if not isinstance(content, list) or not all(isinstance(c, dict) and isinstance(c.get("text"), str)
                                                for c in content):
        raise DatasetError(f"{where} must be {{\"content\": [{{\"text\": \"...\"}}]}}")
    return "\n".join(c["text"] for c in content)


def _texts(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise DatasetError(f"{where} must be a list of {{\"content\": [{{\"text\": \"...\"}}]}}")
    return [text for i, item in enumerate(value) if (text := _text(item, f"{where}[{i}]")).strip()]


def _precomputed(output: Any, where: str, kind: str, identifier: str) -> Answer:
    """A turn's own RAG response, read as Bedrock's dataset spells it."""
    if not isinstance(output, dict):
        raise DatasetError(f"{where} is required: this job's responses come in the dataset "
                           "(precomputedRagSourceConfig), each turn's in its output")
    if output.get("knowledgeBaseIdentifier") != identifier:
        raise DatasetError(f"{where}.knowledgeBaseIdentifier must be the job's ragSourceIdentifier {identifier}, "
                           f"not {output.get('knowledgeBaseIdentifier')!r}")
    names = [n for n in ("retrievedPassages", "retrievedResults") if n in output]
    found = output[names[0]] if len(names) == 1 else None
    results = found.get("retrievalResults") if isinstance(found, dict) else None
    if not isinstance(results, list):
        raise DatasetError(f"{where} needs the passages retrieved, as one of retrievedPassages or retrievedResults: "
                           "{\"retrievalResults\": [{\"content\": {\"text\": \"...\"}}]} (an empty list when "
                           "nothing was found)")
    for i, result in enumerate(results):
        _passage(result, f"{where}.{names[0]}.retrievalResults[{i}]")
    if kind == RETRIEVE:
        return Answer(None, results, [])
    if not isinstance(output.get("text"), str):
        raise DatasetError(f"{where}.text (the generated response) is required and must be a string")
    citations = output.get("citations") or []
    if not isinstance(citations, list):
        raise DatasetError(f"{where}.citations must be a list of citations")
    for i, citation in enumerate(citations):
        _citation(citation, f"{where}.citations[{i}]")
    model = output.get("modelIdentifier")
    return Answer(output["text"], results, citations, model if isinstance(model, str) else None)


def _passage(value: Any, where: str) -> str:
    content = value.get("content") if isinstance(value, dict) else None
    if not isinstance(content, dict) or not isinstance(content.get("text"), str):
        raise DatasetError(f"{where} must have content with text: {{\"content\": {{\"text\": \"...\"}}}}")
    return content["text"]


def _citation(value: Any, where: str) -> None:
    part = ((value.get("generatedResponsePart") or {}).get("textResponsePart") or {}) if isinstance(value, dict) \
        else {}
    if not isinstance(part.get("text"), str):
        raise DatasetError(f"{where}.generatedResponsePart.textResponsePart.text (the cited part of the response) "
                           "is required")
    references = value.get("retrievedReferences")
    if not isinstance(references, list):
        raise DatasetError(f"{where}.retrievedReferences must be a list of the passages the part cites")
    for i, reference in enumerate(references):
        _passage(reference, f"{where}.retrievedReferences[{i}]")


def require_ground_truth(dataset: RagDataset, metric: str) -> None:
    """ContextCoverage compares the passages with what a right answer holds: every turn needs it."""
    for turn in dataset.turns:
        if turn.reference is None and turn.contexts is None:
            raise DatasetError(f"{dataset.name} line {turn.line}: {metric} needs referenceResponses (or "
                               "referenceContexts) in every turn")


# ------------------------------------------------------------------------------------------------ the job
def run(ctx: jobs.JobContext, services: Any, row: EvaluationJobRow) -> str | None:
    """`job.run` for applicationType RagEvaluation: `services` is the job's `JobServices`."""
    db, settings, request, job_arn = ctx.db, ctx.settings, row.request, row.job_arn
    iam = services.iam
    role = iam.check_role(request["roleArn"], row.account_id, required_permissions(
        request, request["jobId"], functools.partial(services.profiles.invocation_arns, row.account_id),
        settings.region))
    store = ScopedStore(services.store, iam, role)
    kind, identifier, precomputed = outputs.rag_source(request)
    automated = request["evaluationConfig"]["automated"]
    judge_model = automated["evaluatorModelConfig"]["bedrockEvaluatorModels"][0]["modelIdentifier"]

    # 1. The datasets, every line checked before the knowledge base or the judge is asked anything.
    sets = [_dataset(config, store, kind, identifier if precomputed else None) for config in dataset_configs(request)]
    for dataset in sets:
        if CONTEXT_COVERAGE in dataset.metric_names:
            require_ground_truth(dataset, CONTEXT_COVERAGE)
    progress = job._Progress(ctx, sum(len(d.turns) * (len(d.metric_names) + (not precomputed)) for d in sets))
    progress.publish(force=True)

    runtime = services.runtime()
    generator = inference.Generator(runtime, role, job_arn, settings.max_batch_sequences, ctx.should_stop)
    with job.Asking(db, job_arn, runtime) as asking:
        # 2. The knowledge base answers every turn (a precomputed source's answers are in the dataset).
        if precomputed:
            answers = [[turn.answer for turn in dataset.turns] for dataset in sets]
        else:
            asker = _Asker(services.retrieval(runtime), generator, role, job_arn, request, kind)
            answers = [_cached(ctx.work_dir / f"rag-answers-{d}.json", asker, dataset, progress)
                       for d, dataset in enumerate(sets)]

        # 3. The judge scores every turn on every metric; 4. Bedrock's lines, one per conversation.
        progress.stage = "judging"
        plans = [[_Plan(name, dataset, answers[d]) for name in dataset.metric_names] for d, dataset in enumerate(sets)]
        progress.total = progress.done + sum(len(plan.asks) for per_set in plans for plan in per_set) or 1
        progress.publish(force=True)
        summary = outputs.base_summary(row)
        prefix = outputs.job_prefix(request, request["jobId"])
        stats = statistics.Settings()  # one knowledge base: nothing to compare, intervals only
        for d, dataset in enumerate(sets):
            turns = dataset.turns
            entries: dict[str, dict[str, Any]] = {}
            results: list[list[dict[str, Any]]] = [[] for _ in turns]
            for plan, texts in zip(plans[d], _ask_judge(generator, judge_model, plans[d], progress), strict=True):
                one, per_turn = plan.read(texts, judge_model)
                job._add(entries, plan.name, identifier, one, kind="judge")
                for i, result in enumerate(per_turn):
                    results[i].append(result)
            if ctx.should_stop():
                raise inference.Stopped()
            summary["tasks"].append({"taskType": dataset.task_type, "dataset": dataset.name,
                                     "datasetSource": dataset.source, "records": len(turns),
                                     "metrics": job.task_metrics(
                                         entries, [identifier], len(turns), stats,
                                         clusters=[c for c, conversation in enumerate(dataset.conversations)
                                                   for _ in conversation])})
            lines, i = [], 0
            for conversation in dataset.conversations:
                lines.append({"conversationTurns": [
                    {"inputRecord": turn.record, "output": answers[d][i + k].output(kind, identifier),
                     "results": results[i + k]} for k, turn in enumerate(conversation)]})
                i += len(conversation)
            store.put_bytes(outputs.records_uri(prefix, identifier, dataset.task_type, dataset.name),
                            outputs.jsonl(lines))
        job.complete(db, job_arn, store, prefix, summary, progress, stats)
    return asking.state


def _dataset(config: dict[str, Any], store: ScopedStore, kind: str, precomputed: str | None) -> RagDataset:
    location = config["dataset"]["datasetLocation"]["s3Uri"]
    with store.open_read(location) as fh:
        conversations = parse_conversations(fh, location, kind, precomputed)
    return RagDataset(config["taskType"], config["dataset"]["name"], list(config["metricNames"]), conversations,
                      location)


# ------------------------------------------------------------------------------------------------ asking
def generation_configuration(config: dict[str, Any]) -> dict[str, Any]:
    """The job's retrieveAndGenerateConfig as RetrieveAndGenerate's retrieveAndGenerateConfiguration: the same
    members, except that the generation's inference settings are `kbInferenceConfig` here, `inferenceConfig` there."""
    knowledge_base = dict(config["knowledgeBaseConfiguration"])
    generation = dict(knowledge_base.get("generationConfiguration") or {})
    if "kbInferenceConfig" in generation:
        generation["inferenceConfig"] = generation.pop("kbInferenceConfig")
    if generation:
        knowledge_base["generationConfiguration"] = generation
    return {"type": config["type"], "knowledgeBaseConfiguration": knowledge_base}


class _Asker:
    """A conversation through the knowledge base, as its APIs answer it: Retrieve for a retrieve-only job,
    RetrieveAndGenerate (each later turn in the first turn's session) for a retrieve-and-generate one."""

    def __init__(self, retrieval: Any, generator: inference.Generator, role: Any, job_arn: str,
                 request: dict[str, Any], kind: str) -> None:
        self.retrieval, self.generator, self.role, self.job_arn, self.kind = retrieval, generator, role, job_arn, kind
        knowledge_base = request["inferenceConfig"]["ragConfigs"][0]["knowledgeBaseConfig"]
        self.retrieve = knowledge_base.get("retrieveConfig")
        generation = rag_generation(request)
        self.generation = generation_configuration(knowledge_base["retrieveAndGenerateConfig"]) if generation else None
        self.model = generation["modelArn"] if generation else None

    def caller(self) -> Any:
        from outcrop.runtime.service import Caller

        return Caller(f"eval-{uuid.uuid4()}", self.role, {"evaluationJobArn": self.job_arn})

    def conversation(self, turns: list[Turn]) -> list[Answer]:
        from outcrop.knowledge.retrieval import retrieval_result

        if self.retrieve is not None:
            found = self.retrieval.retrieve(self.caller(), {
                "knowledgeBaseId": self.retrieve["knowledgeBaseId"], "retrievalQuery": {"text": turns[0].prompt},
                "retrievalConfiguration": self.retrieve["knowledgeBaseRetrievalConfiguration"]})
            return [Answer(None, found["retrievalResults"], [])]
        answers, session = [], None
        for turn in turns:
            params = {"input": {"text": turn.prompt}, "retrieveAndGenerateConfiguration": self.generation,
                      **({"sessionId": session} if session else {})}
            out, hits = self.retrieval.answer(self.caller(), params)
            session = out["sessionId"]
            answers.append(Answer(out["output"]["text"], [retrieval_result(hit) for hit in hits], out["citations"],
                                  self.model, out.get("guardrailAction")))
        return answers

    def all(self, dataset: RagDataset, progress: Any) -> list[Answer]:
        """Every turn's answer, conversations `max_batch_sequences` at a time (the generation model's batch full);
        a conversation the knowledge base or its model refuses fails the job with its line."""
        def one(c: int) -> list[Answer]:
            turns = dataset.conversations[c]
            try:
                answers = self.conversation(turns)
            except ValidationException as exc:
                raise ValidationException(f"dataset {dataset.name} line {turns[0].line}: {exc.message}") from None
            for _ in turns:
                progress.step()
            return answers

        return [answer for answers in self.generator.many(len(dataset.conversations), one) for answer in answers]


def _cached(path: Path, asker: _Asker, dataset: RagDataset, progress: Any) -> list[Answer]:
    """The answers of an earlier attempt of this job when it asked the same prompts, or new ones (then kept):
    a job a restart interrupted does not ask the knowledge base again."""
    prompts = [[turn.prompt for turn in conversation] for conversation in dataset.conversations]
    answers = job.cached(path, prompts, progress, lambda: [dataclasses.asdict(a) for a in asker.all(dataset, progress)],
                         f"dataset {dataset.name}")
    return [Answer(**answer) for answer in answers]


# ------------------------------------------------------------------------------------------------ judging
def numbered(passages: list[str]) -> str:
    """Passages as the judge reads them in {{context}}: numbered, or NO_PASSAGES."""
    return "\n\n".join(f"[{i}] {text}" for i, text in enumerate(passages, 1)) if passages else NO_PASSAGES


def cited_passages(answer: Answer) -> list[str]:
    """The distinct passages a response cites, in the order it first cites them."""
    texts = [reference["content"]["text"] for citation in answer.citations
             for reference in citation.get("retrievedReferences") or []]
    return list(dict.fromkeys(texts))


def judge_prompts(dataset: RagDataset, answers: list[Answer]) -> list[str]:
    """What the judge reads as each turn's prompt: its question, after its conversation's earlier turns."""
    prompts, i = [], 0
    for conversation in dataset.conversations:
        said = ""
        for turn in conversation:
            prompts.append(f"Earlier in the conversation:\n{said}\nQuestion: {turn.prompt}" if said else turn.prompt)
            said += f"User: {turn.prompt}\nAssistant: {answers[i].text or ''}\n"
            i += 1
    return prompts


def _ask_judge(generator: inference.Generator, judge_model: str, plans: list[_Plan], progress: Any) -> list[list[str]]:
    """Every metric's chats of one dataset in one call, so that the judge's continuous batching stays full
    (a metric alone has one chat per turn); the answers split back per metric."""
    chats = [chat for plan in plans for chat in plan.chats()]
    labels = [label for plan in plans for label in plan.labels()]
    texts = generator.chat(judge_model, chats, job.JUDGE_INFERENCE, progress.step, labels) if chats else []
    out, start = [], 0
    for plan in plans:
        out.append(texts[start:start + len(plan.asks)])
        start += len(plan.asks)
    return out


class _Plan:
    """One metric over one dataset: the judge's items (`asks`, with the turn each belongs to), and the verdicts
    read back into one result per turn and the report's entry."""

    def __init__(self, name: str, dataset: RagDataset, answers: list[Answer]) -> None:
        self.name, self.dataset, self.answers = name, dataset, answers
        self.metric = judge.RAG_RUBRICS[name]
        self.turns = dataset.turns
        self.asks: list[tuple[Any, ...]] = []
        self.owners: list[int] = []
        for i, (turn, answer, prompt) in enumerate(zip(self.turns, answers, judge_prompts(dataset, answers),
                                                        strict=True)):
            items = self._items(turn, answer, prompt)
            self.asks += items
            self.owners += [i] * len(items)

    def _items(self, turn: Turn, answer: Answer, prompt: str) -> list[tuple[Any, ...]]:
        """(prompt, response, reference, context) items for `judge.judge`: one per turn, or per cited passage."""
        if self.metric.per_citation:
            return [(prompt, citation["generatedResponsePart"]["textResponsePart"]["text"], turn.reference,
                     reference["content"]["text"])
                    for citation in answer.citations for reference in citation.get("retrievedReferences") or []]
        if self.name == CITATION_COVERAGE:
            cited = cited_passages(answer)
            return [(prompt, answer.text or "", turn.reference, numbered(cited))] if cited else []
        reference = turn.reference or (turn.contexts if self.name == CONTEXT_COVERAGE else None)
        passages = numbered([p["content"]["text"] for p in answer.passages])
        return [(prompt, answer.text if self.metric.job == GENERATE else None, reference, passages)]

    def chats(self) -> list[list[dict[str, str]]]:
        return [judge.judge_messages(self.metric.rubric, *item) for item in self.asks]

    def labels(self) -> list[str]:
        return [f"judging {self.name} on dataset {self.dataset.name} line {self.turns[i].line}" for i in self.owners]

    def read(self, texts: list[str], judge_model: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The judge's answers to `chats()` as (the entry for `job._add`, each turn's result for its output line)."""
        rubric = self.metric.rubric
        verdicts = [judge.parse_verdict(rubric, text) for text in texts]
        mine: list[list[judge.Verdict]] = [[] for _ in self.turns]
        for owner, verdict in zip(self.owners, verdicts, strict=True):
            mine[owner].append(verdict)
        if self.metric.per_citation:
            return self._precision(verdicts, mine, judge_model)
        per_turn = [found[0] if found else self._uncited() for found in mine]
        results = [{"metricName": self.name, "result": v.score, "evaluatorDetails": [
            {"modelIdentifier": judge_model, "explanation": v.explanation or v.raw}]} for v in per_turn]
        return job._Judged(rubric, per_turn).entry(self.turns), results

    def _uncited(self) -> judge.Verdict:
        """CitationCoverage of a response that cites nothing: the scale's lowest value, not asked."""
        lowest = self.metric.rubric.scale[0].value
        return judge.Verdict(lowest, self.metric.rubric.normalise(lowest), f"Reason: {UNCITED}")

    def _precision(self, verdicts: list[judge.Verdict], mine: list[list[judge.Verdict]],
                   judge_model: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """CitationPrecision: a turn's result is the mean over its citations' parsed verdicts; the entry's
        distribution and unparseable count are over citations, its score and count over turns."""
        rubric = self.metric.rubric
        scores: list[float | None] = []
        results = []
        for found in mine:
            parsed = [v.score for v in found if v.score is not None]
            scores.append(sum(parsed) / len(parsed) if parsed else None)
            explanation = "\n".join(f"Citation {k}: {v.explanation or v.raw}" for k, v in enumerate(found, 1)) \
                if found else NOTHING_CITED
            results.append({"metricName": self.name, "result": scores[-1], "evaluatorDetails": [
                {"modelIdentifier": judge_model, "explanation": explanation}]})
        summary = judge.summarise(rubric, verdicts)
        scored = [s for s in scores if s is not None]
        one = {"description": rubric.description, "range": [0, 1], "higherIsBetter": rubric.higher_is_better,
               "score": sum(scored) / len(scored) if scored else None, "count": len(scored), "byCategory": {},
               "unparseable": summary["unparseable"], "distribution": summary["distribution"],
               "sample": statistics.Sample(scores)}
        return one, results
