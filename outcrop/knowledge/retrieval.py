"""Knowledge bases, the runtime (bedrock-agent-runtime): Retrieve, RetrieveAndGenerate and its stream, Rerank.

A question is embedded by the knowledge base's own embedding model and searched in its store (vectors, or
vectors and BM25 together for HYBRID), with Bedrock's metadata filters. RetrieveAndGenerate puts the
numbered results into the generation prompt and asks the model through the runtime's Converse, so a
provisioned throughput, an inference profile or an alias answers exactly as it does for Converse (and is
metered the same way).

Citations are found after the fact: each sentence of the answer is attributed to the retrieved passages
whose words it shares (`cite`). Asking a model to write its own source markers works for large models and
not for the small ones this server often runs; attribution by overlap works for both, and a sentence that
shares too little with every passage is left uncited rather than cited wrongly.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
from sqlalchemy import delete

from outcrop.errors import ValidationException
from outcrop.guardrails.assessment import INPUT, INTERVENED, OUTPUT
from outcrop.guardrails.enforcement import Guard
from outcrop.guardrails.service import Guardrails
from outcrop.knowledge import filters
from outcrop.knowledge.service import KnowledgeBases, store_for
from outcrop.knowledge.store import Hit
from outcrop.knowledge.tables import RagSessionRow
from outcrop.platform.database import utc_now
from outcrop.runtime.service import Caller, RuntimeService

DEFAULT_RESULTS = 5
SEARCH_TYPES = ("SEMANTIC", "HYBRID")
#: What a search does when the request does not say (overrideSearchType). Chosen by bench/knowledge.py.
DEFAULT_SEARCH_TYPE = "SEMANTIC"
SEARCH_RESULTS = "$search_results$"
#: The generation prompt when the request gives none: Bedrock's placeholders, Outcrop's wording.
DEFAULT_PROMPT = (
    "You answer questions using only the search results below. If they do not contain the answer, say that "
    "you could not find it. Answer briefly, in your own sentences, with the facts the results give.\n\n"
    "Search results:\n$search_results$\n\n$output_format_instructions$")
OUTPUT_FORMAT = "Write the answer as plain sentences."
#: Turns of a session kept in the prompt (the oldest go first).
SESSION_TURNS = 5
#: Earlier questions of a session searched with a new one, and the new one's weight against theirs
#: (`conversation_query`; chosen on follow-ups and changes of subject, tests/unit/knowledge/test_retrieval.py).
CONTEXT_QUESTIONS = 2
QUESTION_WEIGHT = 2.0
#: Share of a sentence's words that must appear in a passage for the passage to be cited for it.
CITATION_OVERLAP = 0.5
_WORD = re.compile(r"\w+", re.UNICODE)
_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+|\n|$)")
_STOPWORDS = frozenset("a an the of to in on at for and or but is are was were be been it its this that with as by "
                       "from not no yes do does did which who what when where how".split())


def search_plan(configuration: dict[str, Any] | None, path: str) -> tuple[int, str, str | None]:
    """A retrievalConfiguration checked (what this server cannot honour refused under `path`), as (number of
    results, search type, SQL filter): callers that search later check it before they start (inline agents)."""
    configuration = configuration or {}
    if configuration.get("managedSearchConfiguration"):
        raise ValidationException(f"{path}.managedSearchConfiguration is for MANAGED knowledge bases; this one "
                                  "is a VECTOR knowledge base")
    vector = configuration.get("vectorSearchConfiguration") or {}
    _refuse(vector, {"rerankingConfiguration": "reranking during retrieval (call Rerank on the results)",
                     "implicitFilterConfiguration": "implicit filters"}, f"{path}.vectorSearchConfiguration")
    where = filters.to_sql(vector["filter"], path=f"{path}.vectorSearchConfiguration.filter") \
        if vector.get("filter") else None
    return vector.get("numberOfResults") or DEFAULT_RESULTS, vector.get("overrideSearchType") or \
        DEFAULT_SEARCH_TYPE, where


#: What a session remembers of a question the guardrail blocked (it is neither searched nor replayed).
BLOCKED_QUESTION = "(a question the guardrail blocked)"


@dataclass
class _Asked:
    """A RetrieveAndGenerate call made ready: the question as the model reads it (masked under a guardrail),
    its session, what the search found, and the Converse request (None when the guardrail blocked it)."""

    question: str
    session_id: str
    turns: list[dict[str, str]]
    hits: list[Hit]
    request: dict[str, Any] | None
    guard: Guard | None
    blocked: str | None = None  # the blocked input message
    masked: bool = False


class Retrieval:
    def __init__(self, knowledge: KnowledgeBases, runtime: RuntimeService, guardrails: Guardrails) -> None:
        self.knowledge = knowledge
        self.runtime = runtime
        self.guardrails = guardrails
        self.settings = knowledge.settings

    # -- Retrieve ---------------------------------------------------------------------------------

    def retrieve(self, caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        _refuse(params, {"guardrailConfiguration": "guardrails", "userContext": "user context (access filters)"})
        if params.get("nextToken"):
            raise ValidationException("nextToken is not a token this server gave out: Retrieve answers every result "
                                      "at once (numberOfResults up to 100)")
        query = params["retrievalQuery"]
        if query.get("type", "TEXT") != "TEXT" or query.get("image") or not query.get("text"):
            raise ValidationException("retrievalQuery must be a TEXT query with text (image queries are not supported "
                                      "on this server)")
        hits = self.search(caller, params["knowledgeBaseId"], query["text"], params.get("retrievalConfiguration"),
                           "retrievalConfiguration")
        return {"retrievalResults": [retrieval_result(hit) for hit in hits]}

    def search(self, caller: Caller, kb_id: str, query: str, configuration: dict[str, Any] | None,
               path: str, earlier: list[str] | None = None) -> list[Hit]:
        """The passages for `query`; `earlier`: the questions before it in a conversation (newest first), which
        the search takes in with it (`conversation_query`)."""
        kb = self.knowledge.row(caller.principal.account_id, kb_id)
        count, search_type, where = search_plan(configuration, path)
        if not query.strip():
            raise ValidationException(f"The query text is empty ({path})")
        earlier = [q for q in earlier or [] if q.strip()]
        texts = [query, "\n".join(earlier)] if earlier else [query]
        vectors = self.runtime.embed_texts(caller, kb.embedding_model_id, texts, "Retrieve").numpy()
        embedded, words = conversation_query(query, earlier, vectors)
        store = store_for(kb, self.settings)
        # Hierarchical chunks answer with their parent: children of one parent count once.
        hits, seen = [], set()
        for hit in store.search(embedded, words, count * 3, search_type, where):
            if hit.context not in seen:
                seen.add(hit.context)
                hits.append(hit)
        return hits[:count]

    # -- Rerank -----------------------------------------------------------------------------------

    def rerank(self, caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        """Rerank: the sources ordered by a cross-encoder's relevance to the query, most relevant first."""
        if params.get("nextToken"):
            raise ValidationException("nextToken is not a token this server gave out: Rerank answers every result "
                                      "at once")
        bedrock = params["rerankingConfiguration"]["bedrockRerankingConfiguration"]
        model = bedrock["modelConfiguration"]
        _refuse(model, {"additionalModelRequestFields": "model request fields"},
                "rerankingConfiguration.bedrockRerankingConfiguration.modelConfiguration")
        query = params["queries"][0]["textQuery"].get("text")
        if not query:
            raise ValidationException("queries[0].textQuery.text is required")
        sources = [source["inlineDocumentSource"] for source in params["sources"]]
        texts = []
        for i, document in enumerate(sources):
            if document["type"] == "TEXT":
                text = (document.get("textDocument") or {}).get("text")
            else:  # JSON documents are read as their JSON text, as Bedrock's rerankers read them
                text = None if document.get("jsonDocument") is None else json.dumps(document["jsonDocument"])
            if not text:
                raise ValidationException(f"sources[{i}].inlineDocumentSource has no {document['type']} document")
            texts.append(text)
        scores = self.runtime.rerank(caller, model["modelArn"], query, texts)
        order = sorted(range(len(texts)), key=lambda i: -scores[i])[:bedrock.get("numberOfResults") or len(texts)]
        return {"results": [{"index": i, "relevanceScore": scores[i], "document": sources[i]} for i in order]}

    # -- RetrieveAndGenerate ----------------------------------------------------------------------

    def retrieve_and_generate(self, caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        return self.answer(caller, params)[0]

    def answer(self, caller: Caller, params: dict[str, Any]) -> tuple[dict[str, Any], list[Hit]]:
        """RetrieveAndGenerate's response, and every passage the search found for it, cited or not: a RAG
        evaluation judges the answer's faithfulness against all of what the model was given."""
        asked = self._prepare(caller, params)
        text, action = self._generate(caller, asked)
        self._remember(caller, asked.session_id, asked.turns, asked.question, text)
        out = {"output": {"text": text}, "citations": cite(text, asked.hits), "sessionId": asked.session_id}
        return out | ({"guardrailAction": action} if action else {}), asked.hits

    def retrieve_and_generate_stream(self, caller: Caller, params: dict[str, Any]) -> tuple[str, Iterator]:
        asked = self._prepare(caller, params)
        if asked.guard is not None:  # sync: the answer is checked before any of it is sent
            return asked.session_id, self._guarded_stream(caller, asked)
        events = self.runtime.converse_stream(caller, asked.request["modelId"], asked.request)

        def stream() -> Iterator[tuple[str, dict]]:
            parts = []
            for name, event in events:
                text = (event.get("delta") or {}).get("text") if name == "contentBlockDelta" else None
                if text:
                    parts.append(text)
                    yield "output", {"text": text}
            answer = "".join(parts)
            for citation in cite(answer, asked.hits):
                yield "citation", {"citation": citation, **citation}
            self._remember(caller, asked.session_id, asked.turns, asked.question, answer)
        return asked.session_id, stream()

    def _guarded_stream(self, caller: Caller, asked: _Asked) -> Iterator[tuple[str, dict]]:
        text, action = self._generate(caller, asked)
        yield "output", {"text": text}
        for citation in cite(text, asked.hits):
            yield "citation", {"citation": citation, **citation}
        yield "guardrail", {"action": action}
        self._remember(caller, asked.session_id, asked.turns, asked.question, text)

    def _prepare(self, caller: Caller, params: dict[str, Any]) -> _Asked:
        _refuse(params, {"sessionConfiguration": "a KMS key for sessions",
                         "userContext": "user context (access filters)"})
        configuration = params.get("retrieveAndGenerateConfiguration")
        if not configuration:
            raise ValidationException("retrieveAndGenerateConfiguration is required")
        if configuration["type"] != "KNOWLEDGE_BASE":
            raise ValidationException(f"retrieveAndGenerateConfiguration.type {configuration['type']} is not "
                                      "available on this server; use KNOWLEDGE_BASE")
        path = "retrieveAndGenerateConfiguration.knowledgeBaseConfiguration"
        kb_config = configuration.get("knowledgeBaseConfiguration")
        if not kb_config:
            raise ValidationException(f"{path} is required when type is KNOWLEDGE_BASE")
        orchestration = kb_config.get("orchestrationConfiguration") or {}
        if orchestration:
            raise ValidationException(f"{path}.orchestrationConfiguration (query rewriting by a model) is not "
                                      "supported on this server; the question is searched as asked, with the "
                                      "session's earlier questions")
        generation = kb_config.get("generationConfiguration") or {}
        template = (generation.get("promptTemplate") or {}).get("textPromptTemplate") or DEFAULT_PROMPT
        if SEARCH_RESULTS not in template:
            raise ValidationException(f"{path}.generationConfiguration.promptTemplate.textPromptTemplate must "
                                      f"contain {SEARCH_RESULTS}")
        session_id = params.get("sessionId")
        turns = self._turns(caller, session_id) if session_id else []
        question = params["input"]["text"]
        session_id = session_id or str(uuid.uuid4())
        guard = self._guard(caller, generation.get("guardrailConfiguration"))
        masked = False
        if guard is not None:  # before the search: a blocked question is not searched, a masked one searched masked
            checked = guard.run(INPUT, [question])
            if checked["action"] == INTERVENED:
                if checked["actionReason"] == "Guardrail blocked.":
                    return _Asked(BLOCKED_QUESTION, session_id, turns, [], None, guard,
                                  blocked=checked["outputs"][0]["text"])
                question, masked = checked["outputs"][0]["text"], True
        hits = self.search(caller, kb_config["knowledgeBaseId"], question, kb_config.get("retrievalConfiguration"),
                           f"{path}.retrievalConfiguration", earlier_questions(turns))
        system = (template.replace(SEARCH_RESULTS, _numbered(hits))
                  .replace("$output_format_instructions$", OUTPUT_FORMAT).replace("$query$", question))
        messages = []
        for turn in turns[-SESSION_TURNS:]:
            messages += [{"role": "user", "content": [{"text": turn["question"]}]},
                         {"role": "assistant", "content": [{"text": turn["answer"] or "-"}]}]
        messages.append({"role": "user", "content": [{"text": question}]})
        request: dict[str, Any] = {"modelId": kb_config["modelArn"], "messages": messages, "system": [{"text": system}]}
        inference = (generation.get("inferenceConfig") or {}).get("textInferenceConfig")
        if inference:
            request["inferenceConfig"] = inference
        for member in ("additionalModelRequestFields", "performanceConfig"):
            if generation.get(member):
                request[member] = generation[member]
        return _Asked(question, session_id, turns, hits, request, guard, masked=masked)

    def _guard(self, caller: Caller, configuration: dict[str, Any] | None) -> Guard | None:
        if not configuration:
            return None
        return Guard(self.guardrails, caller, {"guardrailIdentifier": configuration["guardrailId"],
                                               "guardrailVersion": configuration["guardrailVersion"]})

    def _generate(self, caller: Caller, asked: _Asked) -> tuple[str, str | None]:
        """(the answer, and under a guardrail its action). The question was checked in `_prepare`; the answer
        is checked here, its contextual grounding judged against the passages found and the question."""
        if asked.blocked is not None:
            return asked.blocked, "INTERVENED"
        answer = self.runtime.converse(caller, asked.request["modelId"], asked.request)
        text = "".join(block.get("text", "") for block in answer["output"]["message"]["content"])
        if asked.guard is None:
            return text, None
        context = [{"text": {"text": hit.context, "qualifiers": ["grounding_source"]}} for hit in asked.hits]
        result = asked.guard.run(OUTPUT, [text], context + [{"text": {"text": asked.question,
                                                                      "qualifiers": ["query"]}}])
        if result["action"] == INTERVENED:
            return result["outputs"][0]["text"], "INTERVENED"
        return text, "INTERVENED" if asked.masked else "NONE"

    def _turns(self, caller: Caller, session_id: str) -> list[dict[str, str]]:
        db = self.knowledge.db
        with db.session() as session:
            row = session.get(RagSessionRow, session_id)
        expired = row is not None and utc_now() - row.updated_at > timedelta(
            seconds=self.settings.knowledge_session_seconds)
        if row is None or row.account_id != caller.principal.account_id or expired:
            raise ValidationException(f"Session with Id {session_id} is not valid. Please check and try again.")
        return list(row.turns)

    def _remember(self, caller: Caller, session_id: str, turns: list[dict[str, str]], question: str,
                  answer: str) -> None:
        turns = [*turns, {"question": question, "answer": answer}][-SESSION_TURNS:]
        now = utc_now()
        with self.knowledge.db.session() as session:
            row = session.get(RagSessionRow, session_id)
            if row is None:  # a new session: the expired ones go now (nothing else reads them)
                session.execute(delete(RagSessionRow).where(RagSessionRow.updated_at < now - timedelta(
                    seconds=self.settings.knowledge_session_seconds)))
                session.add(RagSessionRow(session_id=session_id, account_id=caller.principal.account_id, turns=turns,
                                          created_at=now, updated_at=now))
            else:
                row.turns, row.updated_at = turns, now


def earlier_questions(turns: list[dict[str, str]]) -> list[str]:
    """The questions of a session's last turns that a new question is searched with, newest first (a question
    the guardrail blocked is not searched)."""
    return [t["question"] for t in reversed(turns) if t["question"] != BLOCKED_QUESTION][:CONTEXT_QUESTIONS]


def conversation_query(question: str, earlier: list[str], vectors: np.ndarray) -> tuple[list[float], str]:
    """The vector and the words a session's question is searched with. A follow-up ("And how many of them roll
    over?") often names nothing the documents hold. Bedrock has a model rewrite it into a standalone question,
    which a small model does unreliably; Outcrop searches, deterministically, with the question's unit vector
    (`vectors[0]`) plus the earlier questions' (`vectors[1]`, embedded together) at half its weight, so that
    the conversation's subject is found and a question on a new subject still wins. The full-text side
    (HYBRID) reads the question's words and the earlier ones'."""
    if not earlier:
        return vectors[0].tolist(), question
    mixed = QUESTION_WEIGHT * vectors[0] + vectors[1]
    return (mixed / np.linalg.norm(mixed)).tolist(), "\n".join([question, *earlier])


def cite(answer: str, hits: list[Hit]) -> list[dict[str, Any]]:
    """Bedrock's citations for `answer`: its sentences in order, consecutive ones citing the same passages
    grouped into one part, each part with the passages it draws on (none when it shares too little)."""
    passages = [_words(hit.context) for hit in hits]
    parts: list[tuple[int, int, tuple[int, ...]]] = []
    for match in _SENTENCE.finditer(answer):
        sentence = match.group().strip()
        if not sentence:
            continue
        start = match.start() + match.group().index(sentence)
        words = _words(sentence)
        sources = tuple(i for i, passage in enumerate(passages)
                        if words and len(words & passage) / len(words) >= CITATION_OVERLAP)
        if parts and parts[-1][2] == sources:
            parts[-1] = (parts[-1][0], start + len(sentence), sources)
        else:
            parts.append((start, start + len(sentence), sources))
    return [{"generatedResponsePart": {"textResponsePart": {"text": answer[start:end],
                                                            "span": {"start": start, "end": end - 1}}},
             "retrievedReferences": [reference(hits[i]) for i in sources]} for start, end, sources in parts]


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS}


def _numbered(hits: list[Hit]) -> str:
    if not hits:
        return "(no results)"
    return "\n\n".join(f"[{i}] {hit.context}" for i, hit in enumerate(hits, 1))


def _location(hit: Hit) -> dict[str, Any]:
    if hit.source_uri.startswith("s3://"):
        return {"type": "S3", "s3Location": {"uri": hit.source_uri}}
    return {"type": "CUSTOM", "customDocumentLocation": {"id": hit.source_uri}}


def retrieval_result(hit: Hit) -> dict[str, Any]:
    """A passage as Retrieve answers it (one of its retrievalResults)."""
    return {"content": {"text": hit.context, "type": "TEXT"}, "location": _location(hit), "score": hit.score,
            "metadata": hit.metadata}


def reference(hit: Hit) -> dict[str, Any]:
    """A passage as Bedrock cites it (RetrieveAndGenerate's citations, an agent's knowledge-base trace)."""
    return {"content": {"text": hit.context, "type": "TEXT"}, "location": _location(hit), "metadata": hit.metadata}


def _refuse(params: dict[str, Any], members: dict[str, str], path: str = "") -> None:
    """Members this server cannot honour are refused by name, never ignored."""
    for member, what in members.items():
        if params.get(member):
            name = f"{path}.{member}" if path else member
            raise ValidationException(f"{name} ({what}) is not supported on this server")
