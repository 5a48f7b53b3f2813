"""The runtime service behind bedrock-runtime: model id -> deployment, formats, generation, metering.

Callable from Python without HTTP; the API door, the CLI and later the evaluation jobs share it.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from outcrop.catalog.cards import FoundationModel
from outcrop.catalog.served import ModelLookup, ServedModel, engine_kind
from outcrop.catalog.service import MULTIMODAL_EMBED_FORMAT, RERANK_FORMAT, AliasTargetMissing, Catalog
from outcrop.errors import BedrockError, Cancelled, ResourceNotFoundException, ValidationException
from outcrop.iam.principal import Principal
from outcrop.inference import clip, vision
from outcrop.inference import images as image_engine
from outcrop.inference.engine import Deployment, Engine
from outcrop.inference.grammar import GrammarError
from outcrop.inference.images import IMAGE
from outcrop.inference.loader import ENCODER, RERANKER
from outcrop.inference.sampling import DEFAULT_MAX_TOKENS, DEFAULT_TEMPERATURE, DEFAULT_TOP_P, SamplingParams
from outcrop.inference.scheduler import END_OF_TEXT, LENGTH, STOP_SEQUENCE, Completion, GenerationStream
from outcrop.platform.database import Database
from outcrop.profiles.service import InferenceProfiles
from outcrop.provisioning.capacity import Capacity
from outcrop.provisioning.service import ProvisioningService
from outcrop.runtime import embeddings, formats, images, multimodal, tool_use
from outcrop.runtime.formats import Invocation, TextRequest, check_alternation
from outcrop.runtime.invocation_logging import InvocationLogWriter, make_log_record
from outcrop.runtime.quotas import Quotas
from outcrop.runtime.tables import UsageStatus
from outcrop.runtime.usage import record_usage

CONVERSE_STOP_REASON = {END_OF_TEXT: "end_turn", STOP_SEQUENCE: "stop_sequence", LENGTH: "max_tokens"}
#: Keys of Converse's `additionalModelRequestFields` that every text model understands. `temperature` (0 to 2)
#: overrides inferenceConfig's, whose range stops at 1: the OpenAI door sends OpenAI's wider range through it.
ADDITIONAL_FIELDS = {"top_k", "seed", "temperature"}
MAX_EXTRA_TEMPERATURE = 2.0
JSON = "application/json"
#: Bedrock's runtime answer to a model identifier that names nothing it serves (400, not 404).
INVALID_MODEL_IDENTIFIER = "The provided model identifier is invalid."
#: The one latency profile and the one service tier this server has: every request runs the same
#: way, so these are honoured (and echoed), and the others are refused as Bedrock refuses them for a
#: model that does not offer them (`check_performance`).
STANDARD_LATENCY = "standard"
DEFAULT_TIER = "default"


def check_performance(model_id: str, latency: str | None, tier: str | None) -> None:
    """Refuse a latency profile or service tier this server cannot give, in Bedrock's way (400).

    There is no faster path to run "optimized" on and no queue to put "priority" or "flex" in, so
    answering them as if honoured would mislead a caller who pays for them on Bedrock."""
    if latency not in (None, STANDARD_LATENCY):
        raise ValidationException(
            f"Latency-optimized inference (performanceConfig latency '{latency}') isn't supported for the model "
            f"{model_id}. Retry with latency '{STANDARD_LATENCY}' or without performanceConfig.")
    if tier not in (None, DEFAULT_TIER):
        raise ValidationException(
            f"The service tier '{tier}' isn't supported for the model {model_id}. "
            f"Retry with the '{DEFAULT_TIER}' tier or without serviceTier.")



class TextGuard(Protocol):
    """A guardrail around one InvokeModel, from its headers (guardrails/enforcement.py InvokeGuard)."""

    def check_prompt(self, request: TextRequest) -> str | None:
        """The blocked input message, or None (ANONYMIZE findings masked in `request`)."""

    def check_answer(self, text: str) -> str:
        """The answer as it may be sent."""

    def members(self) -> dict[str, Any]:
        """What the answer's body gains (amazon-bedrock-guardrailAction, its trace)."""

@dataclass(frozen=True)
class Invoked:
    """InvokeModel's answer: the native body, and the counts the API sends as response headers."""

    body: bytes
    input_tokens: int
    output_tokens: int
    latency_ms: int


@dataclass
class Caller:
    """Who is invoking, for the usage record, and how they call the generation off."""

    request_id: str
    principal: Principal
    request_metadata: dict[str, str] = field(default_factory=dict)
    #: Set when the caller no longer wants the answer (the API sets it when the client hangs up). It is
    #: the generation's own cancel flag in the scheduler, so setting it from any thread takes the
    #: sequence out of the batch at the next step and wakes a caller blocked waiting for the result.
    #: One Caller per invocation: a dropped stream sets it too, and a set event cancels at submission.
    cancelled: threading.Event = field(default_factory=threading.Event)
    #: Set by the runtime once it knows which model answers (before a stream's first event): an alias's or
    #: a profile's local model, which the API names in a response header.
    served_model_id: str | None = None
    #: Set by a batch inference job for its records (never from a request): the usage record carries it, and
    #: the bill prices those tokens at the batch price.
    batch_job_arn: str | None = None
    #: The request's condition keys (aws:SourceIp, aws:SecureTransport), for what the runtime reads as the
    #: caller (Converse's images in S3), so that a policy's conditions hold there as on the request itself.
    conditions: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Prepared:
    model: FoundationModel
    deployment: Deployment
    prompt_ids: list[int]
    params: SamplingParams
    #: What the caller invoked (a model id, alias, profile, or a provisioned model ARN).
    invoked: str
    capacity: Capacity | None = None
    #: The request's tools, and how this model writes a call (runtime/tool_use.py); None without tools.
    tools: tool_use.ToolSet | None = None
    syntax: tool_use.CallSyntax | None = None

    @property
    def served(self) -> str:
        """What usage records and the bill name: the local model that answers (an alias's or a profile's),
        or a provisioned throughput's own ARN (billed by its model units)."""
        return self.invoked if self.capacity is not None else self.model.served_model_id


class RuntimeService:
    def __init__(self, catalog: Catalog, engine: Engine, db: Database, quotas: Quotas,
                 invocation_log: InvocationLogWriter, region: str, provisioning: ProvisioningService,
                 profiles: InferenceProfiles, imported: ModelLookup | None = None,
                 objects: multimodal.ObjectsFor | None = None) -> None:
        self.provisioning = provisioning
        #: The object store as a caller sees it (iam/scoped_store.py), injected: Converse's images in S3 are read
        #: with the caller's permissions. None: they are refused.
        self.objects = objects
        #: Imported models by ARN (model_import/models.py), injected: the runtime does not import that layer.
        self.imported = imported
        #: How a model identifier resolves: model ids and aliases, system and application inference profiles.
        self.profiles = profiles
        self.catalog = catalog
        self.engine = engine
        self.db = db
        self.quotas = quotas
        self.invocation_log = invocation_log
        self.region = region

    # -- Converse ---------------------------------------------------------------------------------

    def converse(self, caller: Caller, model_id: str, request: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        performance = _converse_performance(model_id, request)
        pointers = formats.parse_pointers(request.get("additionalModelResponseFieldPaths"))
        prepared = self._prepare_converse(caller.principal.account_id, model_id, request, objects=self._objects(caller))
        answer = _ConverseAnswer(prepared)
        completion = self._generate(caller, "Converse", prepared, started, request, answer.output,
                                    answer).result()
        out = {**answer.output(completion), "metrics": {"latencyMs": _ms(time.perf_counter() - started)},
               **performance}
        if pointers is not None:
            out["additionalModelResponseFields"] = formats.pick(_native_document(prepared, completion), pointers)
        return out

    def converse_stream(self, caller: Caller, model_id: str, request: dict[str, Any]) -> Iterator[tuple[str, dict]]:
        started = time.perf_counter()
        # Errors up to here are HTTP errors; after this, they travel inside the stream.
        performance = _converse_performance(model_id, request)
        pointers = formats.parse_pointers(request.get("additionalModelResponseFieldPaths"))
        prepared = self._prepare_converse(caller.principal.account_id, model_id, request, objects=self._objects(caller))
        answer = _ConverseAnswer(prepared)
        stream = self._generate(caller, "ConverseStream", prepared, started, request, answer.output, answer)

        def events() -> Iterator[tuple[str, dict]]:
            try:
                yield from converse_events()
            finally:
                stream.close()

        def converse_events() -> Iterator[tuple[str, dict]]:
            yield "messageStart", {"role": "assistant"}
            blocks = _ContentBlocks()
            for delta in stream:
                yield from blocks.events(answer.feed(delta))
            yield from blocks.events(answer.finish())
            yield from blocks.close()
            completion = stream.completion
            stop = {"stopReason": answer.output(completion)["stopReason"]}
            if pointers is not None:
                stop["additionalModelResponseFields"] = formats.pick(_native_document(prepared, completion),
                                                                     pointers)
            yield "messageStop", stop
            yield "metadata", {"usage": _usage(completion),
                               "metrics": {"latencyMs": _ms(time.perf_counter() - started)}, **performance}
        return events()

    def _objects(self, caller: Caller) -> multimodal.CallerObjects | None:
        """The object store as `caller` sees it, for the request's images in S3."""
        return self.objects(caller.principal, caller.conditions) if self.objects is not None else None

    def _prepare_converse(self, account: str, model_id: str, request: dict[str, Any],
                          check_room: bool = True, objects: multimodal.CallerObjects | None = None) -> _Prepared:
        if request.get("guardrailConfig"):
            # Converse's handler runs guarded calls through guardrails/enforcement.py, which takes the member
            # out; one reaching here was sent by a path that does not enforce it.
            raise ValidationException("guardrailConfig is not supported on this call")
        tools = tool_use.converse_tool_set(request.get("toolConfig"))
        answer_schema = tool_use.answer_schema(request.get("outputConfig"))
        answer_prompt = tool_use.answer_instructions(request.get("outputConfig"), answer_schema)
        messages, pictures = multimodal.converse_images(request.get("messages") or [], objects)
        messages = tool_use.converse_messages(messages, tools)
        check_alternation([m["role"] for m in messages])
        system = "\n".join(block["text"] for block in request.get("system") or [] if "text" in block)
        config = request.get("inferenceConfig") or {}
        extra = request.get("additionalModelRequestFields") or {}
        if not isinstance(extra, dict):
            raise ValidationException("additionalModelRequestFields must be a JSON object")
        unknown = sorted(set(extra) - ADDITIONAL_FIELDS)
        if unknown:
            raise ValidationException(f"additionalModelRequestFields: extraneous key [{', '.join(unknown)}] "
                                      f"is not permitted; accepted keys: {', '.join(sorted(ADDITIONAL_FIELDS))}")
        where = "additionalModelRequestFields."
        top_k = formats.integer_field(extra, "top_k", 0, 500, 0, where)
        seed = formats.integer_field(extra, "seed", 0, 2**63 - 1, None, where)
        temperature = formats.number_field(extra, "temperature", 0, MAX_EXTRA_TEMPERATURE,
                                           config.get("temperature", DEFAULT_TEMPERATURE), where)
        params = SamplingParams(
            max_tokens=config.get("maxTokens", DEFAULT_MAX_TOKENS),
            temperature=temperature,
            top_p=config.get("topP", DEFAULT_TOP_P), top_k=top_k, seed=seed,
            stop=tuple(s for s in config.get("stopSequences") or () if s))
        return self._prepare(account, model_id, TextRequest(
            params=params, messages=messages, system=system, tools=tools, answer_schema=answer_schema,
            answer_prompt=answer_prompt, images=pictures,
            check_max_tokens=formats.converse_max_tokens_rule(config.get("maxTokens"))), check_room=check_room)

    # -- InvokeModel ------------------------------------------------------------------------------

    def invoke(self, caller: Caller, model_id: str, body: bytes, *, latency: str | None = None,
               tier: str | None = None, guard: TextGuard | None = None) -> Invoked:
        """One InvokeModel; `latency` and `tier` are its performance-config and service-tier headers, `guard`
        the guardrail its headers name (the prompt is checked before the model runs, the answer after)."""
        import json

        started = time.perf_counter()
        check_performance(model_id, latency, tier)
        document = formats.parse_json_body(body)
        served, capacity = self.target(caller.principal.account_id, model_id)
        model = served.card
        if "IMAGE" in model.output_modalities:
            if guard is not None:
                raise ValidationException("Guardrails apply to text generation, not to image generation models")
            return self._images(caller, model_id, served, capacity, document, started)
        if "EMBEDDING" in model.output_modalities:
            if guard is not None:
                raise ValidationException("Guardrails apply to text generation, not to embedding models")
            embedded, tokens = self._embed(caller, model_id, model, document, started)
            return Invoked(json.dumps(embedded).encode(), tokens, 0, _ms(time.perf_counter() - started))
        fmt = formats.detect_text_format(document, model.native_format, model_id, model.model_id)
        prepared, answer, render, blocked = self._guarded_prepare(caller, model_id, model, fmt, document, guard)
        if blocked is not None:
            completion = blocked
        else:
            completion = self._generate(caller, "InvokeModel", prepared, started, document, render, answer).result()
            if guard is not None:
                completion = dataclasses.replace(completion, text=guard.check_answer(completion.text))
        if guard is not None:  # the answer as checked, read afresh (a reader reads one text, once: metering read it)
            render = functools.partial(_render, fmt, model.model_id, len(prepared.prompt_ids),
                                       tool_use.AnswerReader(prepared.syntax, prepared.tools))
        rendered = render(completion) | (guard.members() if guard is not None else {})
        return Invoked(json.dumps(rendered).encode(), completion.input_tokens, completion.output_tokens,
                       _ms(time.perf_counter() - started))

    def _images(self, caller: Caller, invoked: str, served: ServedModel, capacity: Capacity | None,
                document: dict[str, Any], started: float) -> Invoked:
        """An image body (runtime/images.py) run through the model's image scheduler, which denoises it together
        with the other requests of its shape. The tokens are the prompt's, in the text encoder's tokenizer."""
        import json

        model = served.card
        caller.served_model_id = invoked if capacity is not None else model.served_model_id
        # Admitted first: a maskPrompt runs a segmentation model while the body is read, which a throttled caller
        # must not get for free.
        if capacity is not None:
            capacity.acquire()
        else:
            self.quotas.admit(caller.principal.account_id)
        status, made = "InternalServerException", None
        try:
            call = images.parse(document, model.image, images.PromptMasks(self.catalog, self.engine))
            deployment = self.engine.get(served.weights, IMAGE, base=served.base)
            loaded = deployment.loaded
            # The tokens the text encoder reads: a longer prompt is cut at its window, as diffusers cuts it (Bedrock
            # takes prompts of hundreds of characters), and the input-token header says how many were read.
            tokens = len(loaded.tokenizer(call.request.prompt, truncation=True, max_length=loaded.context_length)
                         ["input_ids"]) if loaded.tokenizer is not None else 0
            try:
                image_engine.check(loaded, call.request)
            except ValueError as exc:
                raise ValidationException(f"{model.model_id} cannot run this request: {exc}") from None
            job = deployment.scheduler.submit(call.request, cancelled=caller.cancelled)
        except BaseException:  # refused or throttled before any denoising: nothing is billed
            if capacity is not None:
                capacity.release(0)
            raise
        try:
            made = job.result()
            status = UsageStatus.SUCCESS
        except Cancelled:
            status = UsageStatus.CANCELLED
            raise
        except BedrockError as exc:
            status = exc.code
            raise
        finally:
            if capacity is not None:
                capacity.release(tokens)
            # The log keeps what was asked and how many images came back, not the images.
            self._meter(caller, "InvokeModel", invoked, caller.served_model_id, started, status, document,
                        capacity is None, {"images": len(made), "format": call.fmt} if made else None,
                        input_tokens=tokens, output_tokens=0)
        return Invoked(json.dumps(call.render(made)).encode(), tokens, 0, _ms(time.perf_counter() - started))

    def _guarded_prepare(self, caller: Caller, model_id: str, model: FoundationModel, fmt: formats.TextFormat,
                         document: dict[str, Any], guard: TextGuard | None) -> tuple[Any, ...]:
        """(prepared, answer reader, renderer, the blocked answer or None): the request parsed, checked by
        the guard (masked, or blocked: then the model does not run) and made ready for the model."""
        request = fmt.parse(document)
        message = guard.check_prompt(request) if guard is not None else None
        prepared = self._prepare(caller.principal.account_id, model_id, request)
        answer = tool_use.AnswerReader(prepared.syntax, prepared.tools)
        render = functools.partial(_render, fmt, model.model_id, len(prepared.prompt_ids), answer)
        blocked = None if message is None else Completion(message, 0, 0, END_OF_TEXT, None, 0.0, 0.0)
        return prepared, answer, render, blocked

    def invoke_stream(self, caller: Caller, model_id: str, body: bytes, *, latency: str | None = None,
                      tier: str | None = None, guard: TextGuard | None = None) -> Iterator[tuple[str, dict]]:
        """InvokeModelWithResponseStream; under a `guard` the answer is held until it is checked (Bedrock's
        sync mode), then sent as one chunk, with the guardrail's members on the last one."""
        started = time.perf_counter()
        check_performance(model_id, latency, tier)
        document = formats.parse_json_body(body)
        model = self.target(caller.principal.account_id, model_id)[0].card
        if not model.streaming:
            raise ValidationException(f"The model {model.model_id} does not support response streaming.")
        fmt = formats.detect_text_format(document, model.native_format, model_id, model.model_id)
        prepared, answer, render, blocked = self._guarded_prepare(caller, model_id, model, fmt, document, guard)
        invocation = Invocation(model.model_id, len(prepared.prompt_ids), answer=answer)
        stream = None
        if blocked is None:
            stream = self._generate(caller, "InvokeModelWithResponseStream", prepared, started, document, render,
                                    answer)

        def metrics() -> dict[str, int]:
            c = invocation.completion
            return {"inputTokenCount": c.input_tokens, "outputTokenCount": c.output_tokens,
                    "invocationLatency": _ms(time.perf_counter() - started),
                    "firstByteLatency": _ms(c.first_token_s)}
        invocation.metrics = metrics

        def chunks() -> Iterator[dict]:
            if guard is None:
                yield from fmt.stream(_capture(stream, invocation), invocation)
                return
            if stream is not None:
                text = "".join(stream)
                blocked_or_checked = dataclasses.replace(stream.completion, text=guard.check_answer(text))
            else:
                blocked_or_checked = blocked
            invocation.completion = blocked_or_checked
            invocation.answer = tool_use.AnswerReader(prepared.syntax, prepared.tools)  # read the checked text
            out = list(fmt.stream(iter([blocked_or_checked.text] if blocked_or_checked.text else []), invocation))
            out[-1] = out[-1] | guard.members()
            yield from out
        return (formats.chunk_event(chunk) for chunk in chunks())

    # -- CountTokens ------------------------------------------------------------------------------

    def count_tokens(self, account: str, model_id: str, request: dict[str, Any]) -> int:
        if "invokeModel" in request:
            document = formats.parse_json_body(request["invokeModel"]["body"])
            model = self.target(account, model_id)[0].card
            if "IMAGE" in model.output_modalities:
                raise ValidationException(f"CountTokens counts text models' tokens; {model.model_id} makes images")
            if "EMBEDDING" in model.output_modalities:
                loaded = self.engine.get(self.catalog.local_weights(model), ENCODER).loaded
                return sum(len(ids) for ids in embeddings.token_ids(loaded.tokenizer, embeddings.parse(document),
                                                                    loaded.context_length, model.model_id))
            fmt = formats.detect_text_format(document, model.native_format, model_id, model.model_id)
            return len(self._prepare(account, model_id, fmt.parse(document), check_room=False).prompt_ids)
        converse = dict(request.get("converse") or {})
        converse.pop("additionalModelRequestFields", None)
        return len(self._prepare_converse(account, model_id, converse, check_room=False).prompt_ids)

    # -- shared -----------------------------------------------------------------------------------

    def target(self, account: str, model_id: str) -> tuple[ServedModel, Capacity | None]:
        """What a model id or ARN names: a provisioned throughput (with its capacity), or a foundation model
        named by its id or ARN, an alias, or an inference profile (system or the account's application one).

        An alias's card is its local model's (weights, native format, limits) under the alias's id. A name
        that resolves to nothing is Bedrock's runtime answer, a ValidationException (400), not a 404."""
        if ":provisioned-model/" in model_id:
            return self.provisioning.resolve(account, model_id)
        if ":custom-model/" in model_id:
            raise ValidationException(
                f"The model {model_id} is a custom model: invoke it through a provisioned throughput "
                "(CreateProvisionedModelThroughput) and its provisionedModelArn, as on Bedrock.")
        if ":imported-model/" in model_id:  # served on demand by its ARN, as on Bedrock
            if self.imported is None:
                raise ValidationException(INVALID_MODEL_IDENTIFIER)
            try:
                return self.imported(account, model_id), None
            except ResourceNotFoundException:  # deleted, never imported, or another account's
                raise ValidationException(INVALID_MODEL_IDENTIFIER) from None
        try:
            model = self.profiles.model(account, model_id)
        except AliasTargetMissing as exc:  # the operator's configuration, named so it can be fixed
            raise ValidationException(exc.message) from None
        except ResourceNotFoundException:
            raise ValidationException(INVALID_MODEL_IDENTIFIER) from None
        return ServedModel(model_id, model, self.catalog.local_weights(model)), None

    def _prepare(self, account: str, model_id: str, request: TextRequest, check_room: bool = True) -> _Prepared:
        served, capacity = self.target(account, model_id)
        model = served.card
        if model.native_format == RERANK_FORMAT:
            raise ValidationException(f"The model {model.model_id} is a reranking model: it scores passages "
                                      "through Rerank (bedrock-agent-runtime), it does not generate text.")
        if "TEXT" not in model.output_modalities:
            raise ValidationException(f"The model {model.model_id} does not generate text; "
                                      f"its output is {', '.join(model.output_modalities)}.")
        multimodal.check_accepts_images(model.model_id, model.input_modalities, request.images)
        # A model that reads images runs one request at a time through its processor (inference/vision.py).
        kind = engine_kind(model)
        sees = kind == vision.VISION
        deployment = self.engine.get(served.weights, kind, base=served.base)
        tokenizer = deployment.loaded.tokenizer
        # The chat's template: a vision model's processor's (each image's tokens in place), else the tokenizer's.
        template = vision.ChatTemplate(deployment.loaded) if sees else tokenizer
        if request.prompt is not None:
            bos = tokenizer.bos_token
            # A Llama-style prompt often carries its own <|begin_of_text|>; never add a second one.
            add_special = not (bos and request.prompt.startswith(bos))
            text = request.prompt
        else:
            add_special = False
            text = tool_use.render(template, request.messages, request.system, request.tools, request.answer_prompt)
        if sees:
            deployment, ids = vision.prepare(deployment, text, [i.image for i in request.images], add_special,
                                             self.engine.max_queue_wait_s)
        else:
            ids = tokenizer(text, add_special_tokens=add_special)["input_ids"]
        limit = deployment.loaded.context_length
        if check_room and len(ids) >= limit:
            raise ValidationException(
                f"Input is too long for requested model. The prompt has {len(ids)} tokens; "
                f"the context window of {model.model_id} is {limit} tokens, including the answer.")
        if check_room and request.check_max_tokens is not None:  # each format's rule (formats.max_tokens_rule)
            request.check_max_tokens(len(ids), limit)
        if not ids:
            raise ValidationException("The prompt is empty")
        syntax = tool_use.prompting(template).syntax if request.tools is not None else None
        markers = tool_use.marker_tokens(tokenizer, syntax) if syntax is not None else ()
        grammar = tool_use.grammar(syntax, request.tools, request.answer_schema, markers)
        params = request.params
        forced = request.answer_schema is not None or (request.tools is not None and request.tools.choice in (
            tool_use.ANY, tool_use.TOOL))
        if forced and params.stop:
            raise ValidationException("Stop sequences cannot be combined with toolChoice any or tool, or with a "
                                      "structured answer (outputConfig): they would cut the call or the JSON "
                                      "document the request asks for.")
        if grammar:
            params = dataclasses.replace(params, grammar=grammar,
                                         visible_tokens=frozenset(token for _, token in markers))
        return _Prepared(model, deployment, ids, params, model_id, capacity, request.tools, syntax)

    def _generate(self, caller: Caller, operation: str, prepared: _Prepared, started: float,
                  request: Any, render: Callable[[Completion], dict], answer: tool_use.AnswerReader) -> _MeteredStream:
        """Submit to the model's scheduler; metering happens once, when the stream ends.

        On a provisioned throughput the request first takes one of its sequence slots (waiting in line,
        or ThrottlingException), and gives it back when the generation ends."""
        caller.served_model_id = prepared.served
        capacity = prepared.capacity
        if capacity is not None:
            capacity.acquire()
        else:  # on-demand: the account's quotas; a provisioned throughput has its own capacity instead
            self.quotas.admit(caller.principal.account_id)
        try:  # a tool call is checked against its whole schema, and written again when it fails (tool_use.py)
            stream = tool_use.checked_calls(
                functools.partial(prepared.deployment.scheduler.submit, cancelled=caller.cancelled),
                prepared.prompt_ids, prepared.params, prepared.tools, prepared.syntax,
                prepared.deployment.loaded.tokenizer)
        except GrammarError as exc:  # checked without a tokenizer before; this model's tokenizer refused it
            if capacity is not None:
                capacity.release(0)
            raise ValidationException(f"The tools or the answer schema cannot be enforced on "
                                      f"{prepared.model.model_id}: {exc}") from None
        except BaseException:
            if capacity is not None:
                capacity.release(0)
            raise

        def finish(completion: Completion | None, status: str, produced: int) -> None:
            output_tokens = completion.output_tokens if completion else produced
            if capacity is not None:
                capacity.release(len(prepared.prompt_ids) + output_tokens)
            self._meter(caller, operation, prepared.invoked, prepared.served, started, status, request,
                        capacity is None,
                        render(completion) if completion else None,
                        input_tokens=len(prepared.prompt_ids),
                        output_tokens=output_tokens,
                        first_token_ms=_ms(completion.first_token_s) if completion else None,
                        stop_reason=stop_reason(completion, answer) if completion else None)
        return _MeteredStream(stream, finish)

    def _meter(self, caller: Caller, operation: str, model_id: str, served: str, started: float, status: str,
               request: Any, on_demand: bool, response: Any, *, input_tokens: int, output_tokens: int,
               first_token_ms: int | None = None, stop_reason: str | None = None) -> None:
        """Everything an invocation leaves behind: a usage record (under `served`, the model that answered
        for `model_id`), quota spent, an invocation log line."""
        latency = _ms(time.perf_counter() - started)
        account = caller.principal.account_id
        record_usage(self.db, request_id=caller.request_id, principal=caller.principal,
                     model_id=served, invoked_model_id=model_id,
                     operation=operation, input_tokens=input_tokens, output_tokens=output_tokens,
                     latency_ms=latency, first_token_ms=first_token_ms, stop_reason=stop_reason, status=status,
                     request_metadata=caller.request_metadata, batch_job_arn=caller.batch_job_arn)
        if on_demand:
            self.quotas.charge(account, input_tokens + output_tokens)
        if self.invocation_log.is_enabled(account):
            self.invocation_log.submit(make_log_record(
                request_id=caller.request_id, account_id=account, principal_arn=caller.principal.arn,
                region=self.region, operation=operation, model_id=model_id, input_body=_loggable(request),
                input_content_type=JSON, output_body=response, output_content_type=JSON,
                input_tokens=input_tokens, output_tokens=output_tokens, latency_ms=latency,
                error_code=None if status == UsageStatus.SUCCESS else status))

    def encoder(self, account: str, model_id: str) -> tuple[FoundationModel, Deployment]:
        """An embedding model by any of its names (id, ARN, alias), loaded: its tokenizer chunks documents
        in its own tokens, and `embed_texts` embeds them (knowledge bases)."""
        model = self.target(account, model_id)[0].card
        if "EMBEDDING" not in model.output_modalities:
            raise ValidationException(f"The model {model.model_id} is not an embedding model; "
                                      f"its output is {', '.join(model.output_modalities)}.")
        if model.native_format == MULTIMODAL_EMBED_FORMAT:  # its towers are not a sentence encoder's
            raise ValidationException(f"The model {model.model_id} embeds through InvokeModel's Titan Multimodal "
                                      "Embeddings body only; choose a text embedding model here.")
        return model, self.engine.get(self.catalog.local_weights(model), ENCODER)

    def embed_texts(self, caller: Caller, model_id: str, texts: list[str], operation: str,
                    batch_size: int = 32) -> torch.Tensor:
        """Unit vectors for many texts, in batches of similar length (little padding), as one metered call
        named `operation` (Retrieve, an ingestion job): documents and queries are embedded exactly as
        InvokeModel embeds them. Texts longer than the model's window are cut at the end."""
        started = time.perf_counter()
        self.quotas.admit(caller.principal.account_id)
        model, tokens, vectors = self.vectors(caller.principal.account_id, model_id, texts, batch_size)
        caller.served_model_id = model.served_model_id
        self._meter(caller, operation, model_id, model.served_model_id, started, UsageStatus.SUCCESS,
                    {"texts": len(texts)}, True, None, input_tokens=tokens, output_tokens=0)
        return vectors

    def vectors(self, account: str, model_id: str, texts: list[str], batch_size: int = 32
                ) -> tuple[FoundationModel, int, torch.Tensor]:
        """(the model, the tokens read, unit vectors) for `texts`, unmetered: for work billed in its own
        units (a guardrail's policies embed what they check) and for `embed_texts`."""
        model, deployment = self.encoder(account, model_id)
        loaded = deployment.loaded
        request = embeddings.EmbeddingRequest(embeddings.TITAN, tuple(texts), None, True, ("float",), "END")
        ids = embeddings.token_ids(loaded.tokenizer, request, loaded.context_length, model.model_id)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        vectors = torch.empty((len(ids), loaded.model.config.hidden_size))
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            vectors[rows] = _pool(deployment, [ids[i] for i in rows], True)
        return model, sum(len(i) for i in ids), vectors

    def rerank(self, caller: Caller, model_id: str, query: str, passages: list[str],
               batch_size: int = 32) -> list[float]:
        """How relevant each passage is to `query`, in [0, 1], by a cross-encoder reading both together
        (one metered call, named Rerank). Pairs longer than the model's window lose the passage's end."""
        started = time.perf_counter()
        model = self.target(caller.principal.account_id, model_id)[0].card
        if model.native_format != RERANK_FORMAT:
            raise ValidationException(f"The model {model.model_id} is not a reranking model")
        self.quotas.admit(caller.principal.account_id)
        deployment = self.engine.get(self.catalog.local_weights(model), RERANKER)
        loaded = deployment.loaded
        scores: list[float] = []
        tokens = 0
        for start in range(0, len(passages), batch_size):
            batch = passages[start:start + batch_size]
            # The longer of the two loses its end first: a long query is cut too, not refused by the tokenizer.
            encoded = loaded.tokenizer([query] * len(batch), batch, padding=True, truncation="longest_first",
                                       max_length=loaded.context_length, return_tensors="pt")
            tokens += int(encoded["attention_mask"].sum())
            with deployment.lock, torch.inference_mode():
                logits = loaded.model(**{k: v.to(loaded.device) for k, v in encoded.items()}).logits.float()
            # One logit (ms-marco, bge): a sigmoid; two classes: the probability of "relevant".
            probabilities = torch.sigmoid(logits[:, 0]) if logits.shape[1] == 1 else logits.softmax(-1)[:, 1]
            scores += probabilities.cpu().tolist()
        caller.served_model_id = model.served_model_id
        self._meter(caller, "Rerank", model_id, model.served_model_id, started, UsageStatus.SUCCESS,
                    {"passages": len(passages)}, True, None, input_tokens=tokens, output_tokens=0)
        return scores

    def _embed(self, caller: Caller, invoked: str, model: FoundationModel, document: dict[str, Any],
               started: float) -> tuple[dict[str, Any], int]:
        """A Titan or Cohere embedding body for `invoked` (the caller's name for `model`), answered in its own
        format (runtime/embeddings.py), and the tokens it held (for Cohere, all its texts'): what the usage
        record and the token-count header say. A multimodal model (CLIP) takes Titan Multimodal Embeddings' body."""
        if model.native_format == MULTIMODAL_EMBED_FORMAT:
            response, counts = self._embed_multimodal(caller, model, document)
        else:
            request = embeddings.parse(document)
            self.quotas.admit(caller.principal.account_id)
            deployment = self.engine.get(self.catalog.local_weights(model), ENCODER)
            loaded = deployment.loaded
            dimension = loaded.model.config.hidden_size
            embeddings.check_dimensions(request, dimension, model.model_id)
            ids = embeddings.token_ids(loaded.tokenizer, request, loaded.context_length, model.model_id)
            vectors = _pool(deployment, ids, request.normalize)
            counts = [len(i) for i in ids]
            response = embeddings.render(request, vectors, counts)
        caller.served_model_id = model.served_model_id
        self._meter(caller, "InvokeModel", invoked, model.served_model_id, started, UsageStatus.SUCCESS, document,
                    True, response,
                    input_tokens=sum(counts), output_tokens=0)
        return response, sum(counts)

    def _embed_multimodal(self, caller: Caller, model: FoundationModel, document: dict[str, Any]
                          ) -> tuple[dict[str, Any], list[int]]:
        """A Titan Multimodal Embeddings body on a CLIP model: one vector for its text, its image, or both
        (inference/clip.py), and the text's token count (an image is no tokens: it counts none)."""
        request = multimodal.parse_multimodal_embedding(document)
        self.quotas.admit(caller.principal.account_id)
        deployment = self.engine.get(self.catalog.local_weights(model), clip.CLIP)
        loaded = deployment.loaded
        multimodal.check_length(request, model.model_id, clip.dimension(loaded))
        ids = None
        if request.text is not None:  # within the text tower's window, or refused as Titan's text bodies are
            text_only = embeddings.EmbeddingRequest(embeddings.TITAN, (request.text,))
            ids = embeddings.token_ids(loaded.tokenizer, text_only, loaded.context_length, model.model_id)[0]
        vector = embeddings.resize(clip.embed(deployment, ids, request.image)[None], request.length, False)[0]
        counts = [len(ids) if ids is not None else 0]
        return multimodal.render_multimodal_embedding(vector, counts[0]), counts


def _pool(deployment: Deployment, ids: list[list[int]], normalize: bool) -> torch.Tensor:
    """One vector per token-id list: the encoder's hidden states pooled as the model was trained (CLS or
    mean over real tokens), on the CPU."""
    loaded = deployment.loaded
    encoded = loaded.tokenizer.pad({"input_ids": ids}, return_tensors="pt")
    with deployment.lock, torch.inference_mode():
        hidden = loaded.model(**{k: v.to(loaded.device) for k, v in encoded.items()}).last_hidden_state
        if loaded.pooling == "cls":
            vectors = hidden[:, 0]
        else:
            mask = encoded["attention_mask"].to(loaded.device).unsqueeze(-1).to(hidden.dtype)
            vectors = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        if normalize:
            vectors = torch.nn.functional.normalize(vectors, dim=1)
    return vectors.float().cpu()


class _MeteredStream:
    """A GenerationStream that reports once how it ended: completed, failed (with the error code) or cancelled.

    `finish` gets the completion (None unless completed), the status, and the tokens produced. A
    cancelled generation (a stream the consumer dropped, or the caller's cancel event: Cancelled) is
    billed for the tokens the model actually generated before it stopped, not 0: that compute was spent."""

    def __init__(self, inner: GenerationStream, finish: Callable[[Completion | None, str, int], None]) -> None:
        self._inner = inner
        self._finish = finish
        self.completion: Completion | None = None
        self._started = self._reported = False

    def close(self) -> None:
        """Settle a stream its consumer dropped before reading it (a client gone while it waited for a
        provisioned slot): iterating is what reports, so without this its slot and its record would wait forever."""
        if not self._started:
            self._report(None, UsageStatus.CANCELLED, 0)

    def _report(self, completion: Completion | None, status: str, produced: int) -> None:
        if not self._reported:
            self._reported = True
            self._finish(completion, status, produced)

    def __iter__(self):
        self._started = True
        status = UsageStatus.CANCELLED
        try:
            yield from self._inner
            self.completion = self._inner.completion
            status = UsageStatus.SUCCESS
        except Cancelled:
            raise
        except BedrockError as exc:
            status = exc.code
            raise
        except Exception:
            status = "InternalServerException"
            raise
        finally:
            # A failed generation keeps its old record of 0 output tokens; a cancelled one counts its tokens.
            produced = self._inner.produced_tokens if status == UsageStatus.CANCELLED else 0
            self._report(self._inner.completion, status, produced)

    def result(self) -> Completion:
        for _ in self:
            pass
        return self.completion


def _capture(stream: _MeteredStream, invocation: Invocation) -> Iterable[str]:
    """Pass deltas through and hand the completion to the format when the stream ends."""
    yield from stream
    invocation.completion = stream.completion


def _converse_performance(model_id: str, request: dict[str, Any]) -> dict[str, Any]:
    """Converse's `performanceConfig` and `serviceTier`, checked; the members its answer echoes."""
    performance = request.get("performanceConfig")
    tier = request.get("serviceTier")
    check_performance(model_id, (performance or {}).get("latency"), (tier or {}).get("type"))
    echo: dict[str, Any] = {}
    if performance is not None:
        echo["performanceConfig"] = {"latency": performance.get("latency") or STANDARD_LATENCY}
    if tier is not None:
        echo["serviceTier"] = {"type": tier["type"]}
    return echo


def _native_document(prepared: _Prepared, completion: Completion) -> dict[str, Any]:
    """What `additionalModelResponseFieldPaths` point into: the model's native InvokeModel body for
    this very completion, plus the engine's facts that body lacks (`stop_sequence`: the stop
    sequence that ended the answer, or null)."""
    fmt = formats.TEXT_FORMATS.get(prepared.model.native_format)
    document = fmt.render(Invocation(prepared.model.model_id, len(prepared.prompt_ids), completion)) if fmt else {}
    document.setdefault("stop_sequence", completion.stop_sequence)
    return document


def stop_reason(completion: Completion, answer: tool_use.AnswerReader) -> str:
    """Converse's stopReason (and the usage record's): `tool_use` when the answer ends with its call."""
    if completion.finish_reason == END_OF_TEXT:
        if answer.calls:
            return "tool_use"
        if answer.malformed:
            return "malformed_tool_use"
    return CONVERSE_STOP_REASON[completion.finish_reason]


class _ConverseAnswer(tool_use.AnswerReader):
    """Converse's answer: text and tool calls read once (tool_use.AnswerReader), as Converse's members."""

    def __init__(self, prepared: _Prepared) -> None:
        super().__init__(prepared.syntax, prepared.tools)
        self._output: dict[str, Any] | None = None

    def output(self, completion: Completion) -> dict[str, Any]:
        """Converse's output, stopReason and usage members."""
        if self._output is None:
            blocks = self.read(completion.text)
            self._output = {"output": {"message": {"role": "assistant",
                                                   "content": tool_use.converse_content(blocks)}},
                            "stopReason": stop_reason(completion, self), "usage": _usage(completion)}
        return self._output


class _ContentBlocks:
    """ConverseStream's content-block events for what the reader found: text deltas in a text block,
    then for each tool call contentBlockStart (toolUseId, name), its input in toolUse deltas, and a stop."""

    def __init__(self) -> None:
        self.index = 0
        self.open = False

    def events(self, reads: list[tool_use.Read]) -> Iterator[tuple[str, dict]]:
        for read in reads:
            if read.kind == "text":
                self.open = True
                yield "contentBlockDelta", {"contentBlockIndex": self.index, "delta": {"text": read.text}}
            elif read.kind == "start":
                if self.open:
                    yield from self.close()
                call = read.call
                yield "contentBlockStart", {"contentBlockIndex": self.index,
                                            "start": {"toolUse": {"toolUseId": call.id, "name": call.name}}}
                self.open = True
            elif read.kind == "input":
                yield "contentBlockDelta", {"contentBlockIndex": self.index, "delta": {"toolUse": {"input": read.text}}}
            else:
                yield from self.close()

    def close(self) -> Iterator[tuple[str, dict]]:
        """End the open block; an answer with no block at all still ends its (empty) text block 0."""
        if self.open or self.index == 0:
            yield "contentBlockStop", {"contentBlockIndex": self.index}
            self.index += 1
            self.open = False


def _render(fmt: formats.TextFormat, model_id: str, input_tokens: int, answer: tool_use.AnswerReader,
            completion: Completion) -> dict[str, Any]:
    return fmt.render(Invocation(model_id, input_tokens, completion, answer=answer))


def _loggable(request: Any) -> Any:
    """The request as the invocation log shows it (Converse's parsed input minus routing members), its images
    (Converse's image bytes, base64 images in a body) replaced by their size: a log line is not megabytes."""
    if isinstance(request, dict):
        request = {k: v for k, v in request.items() if k not in ("modelId", "requestMetadata") and v is not None}
    return _without_images(request)


_BASE64 = re.compile(r"[A-Za-z0-9+/]{1024,}={0,2}")


def _without_images(document: Any) -> Any:
    if isinstance(document, dict):
        return {k: _without_images(v) for k, v in document.items()}
    if isinstance(document, list):
        return [_without_images(v) for v in document]
    if isinstance(document, bytes | bytearray):
        return f"<{len(document)} bytes>"
    if isinstance(document, str) and _BASE64.fullmatch(document):
        return f"<{len(document)} base64 characters>"
    return document


def _usage(completion: Completion) -> dict[str, int]:
    return {"inputTokens": completion.input_tokens, "outputTokens": completion.output_tokens,
            "totalTokens": completion.input_tokens + completion.output_tokens}


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))

