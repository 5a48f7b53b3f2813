"""The OpenAI-compatible door under `/v1` (and `/openai/v1`, Bedrock's path for it): a door, not a runtime.

Each request is translated into the Bedrock operation that does the work (Converse or ConverseStream for
chat, InvokeModel with a Mistral body for completions, with Titan or Cohere bodies for embeddings,
ListFoundationModels for the models), validated against botocore's input shape and run through
`operations.invoke`, exactly as the API runs it: the same canonical resources and IAM actions
(bedrock:InvokeModel, bedrock:InvokeModelWithResponseStream, bedrock:ListFoundationModels), quotas, usage
records, invocation logs and insights. The answer (or the event stream) is translated back. Streams go
out through the app's disconnect-aware streaming, so a client that hangs up stops its generation.

Credentials are the API's: a bearer API key (`outcrop iam create-access-key --bearer`, taken over HTTPS or
from this machine only), or SigV4. Failures answer in OpenAI's error shape (errors.py).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from outcrop.api.asgi import is_tls, read_body
from outcrop.api.auth import authenticate
from outcrop.api.bedrock import protocol
from outcrop.api.bedrock.operations import RequestContext, call, iam_action, validated
from outcrop.api.bedrock.protocol import EXTRA_HEADERS
from outcrop.api.bedrock.resources import resources
from outcrop.api.bedrock.runtime import SERVED_BY
from outcrop.api.openai import chat, completions, embeddings, models
from outcrop.api.openai.errors import (
    InvalidRequest,
    MethodNotAllowed,
    ModelNotFound,
    RouteNotFound,
    error_body,
    error_status,
)
from outcrop.catalog.service import RERANK_FORMAT, SERVED_BY_MEMBER
from outcrop.errors import (
    AccessDeniedException,
    BedrockError,
    Cancelled,
    InternalServerException,
    ResourceNotFoundException,
    ValidationException,
)
from outcrop.platform import jsontext
from outcrop.runtime.service import INVALID_MODEL_IDENTIFIER, JSON
from outcrop.services import Services

#: Where the door answers: OpenAI's base URL path, and Bedrock's OpenAI-compatible path on the runtime endpoint.
PREFIXES = ("/v1/", "/openai/v1/")

#: The access log's service for this door's requests.
SERVICE = "openai"
CLIENT_CLOSED_REQUEST = 499
SSE_DONE = b"data: [DONE]\n\n"

log = logging.getLogger("outcrop.api.openai")
access_log = logging.getLogger("outcrop.access")


def is_door_path(method: str, raw_path: str) -> bool:
    """Under the door's prefixes, except where botocore models a Bedrock route (a few /v1/... operations): those
    stay Bedrock's, and every other path there answers in OpenAI's shape, a 404 included."""
    return raw_path.startswith(PREFIXES) and protocol.match_route(method, raw_path) is None


@dataclass
class Answer:
    """A handler's answer: a JSON body, or a stream of server-sent-event bytes."""

    body: dict[str, Any] | None = None
    stream: Iterator[bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[RequestContext, dict[str, Any], str], Answer]


# -- running Bedrock operations as the API runs them: operations.call and operations.validated -----------------

def require_model(ctx: RequestContext, model: str, output: str, operation: str) -> None:
    """The model must exist (else OpenAI's 404), the caller may call it with `operation` (authorized first, as
    the API does, so a caller learns nothing of a model it may not use), and it produces `output` (TEXT or
    EMBEDDING), so that a Titan embeddings body never reaches a text model (which reads it as a Titan Text prompt)."""
    try:
        for target in resources(ctx.services, ctx.principal.account_id, operation, {"modelId": model}):
            ctx.authorize(iam_action(operation), target)
        card = ctx.services.runtime.target(ctx.principal.account_id, model)[0].card
    except ResourceNotFoundException:
        raise ModelNotFound(model) from None
    except ValidationException as exc:
        if exc.message == INVALID_MODEL_IDENTIFIER:
            raise ModelNotFound(model) from None
        raise
    if output not in card.output_modalities or card.native_format == RERANK_FORMAT:
        what = "generate text" if output == "TEXT" else "embed text"
        if card.native_format == RERANK_FORMAT:
            instead = "it is a reranking model, which answers Bedrock's Rerank"
        elif "EMBEDDING" in card.output_modalities:
            instead = "it is an embedding model: use /v1/embeddings"
        elif "TEXT" in card.output_modalities:
            instead = "it generates text: use /v1/chat/completions or /v1/completions"
        else:
            instead = f"its output is {', '.join(card.output_modalities)}"
        raise InvalidRequest(f"The model {model} does not {what}; {instead}.", "model", "model_not_supported")


def _ids(ctx: RequestContext, prefix: str, model: str) -> dict[str, Any]:
    """The answer's id (the request id, which usage records and invocation logs carry), time and model."""
    return {"completion_id": f"{prefix}-{ctx.request_id.replace('-', '')}", "created": int(time.time()),
            "model": model}


def _served_by(output: dict[str, Any]) -> dict[str, str]:
    served = (output.get(EXTRA_HEADERS) or {}).get(SERVED_BY)
    return {SERVED_BY: served} if served else {}


# -- the endpoints ---------------------------------------------------------------------------------------------

def chat_completions(ctx: RequestContext, body: dict[str, Any], _: str) -> Answer:
    request = chat.parse(body)
    operation = "ConverseStream" if request.stream else "Converse"
    validated("bedrock-runtime", operation, request.params)
    require_model(ctx, request.model, "TEXT", operation)
    outputs = each_choice(ctx, operation, [request.choice_params(i) for i in range(request.n)], request.stream)
    ids = _ids(ctx, "chatcmpl", request.model)
    if request.stream:
        streams = [output["stream"] for output in outputs]
        tagged = interleaved(streams)
        return Answer(stream=sse(chat.choice_chunks(tagged, request.n, include_usage=request.include_usage, **ids),
                                 Closing([tagged, *streams])),
                      headers=_served_by(outputs[0]))
    return Answer(chat.completion(outputs, **ids), headers=_served_by(outputs[0]))


def text_completions(ctx: RequestContext, body: dict[str, Any], _: str) -> Answer:
    request = completions.parse(body)
    operation = "InvokeModelWithResponseStream" if request.stream else "InvokeModel"
    each = []
    for index in range(request.n):
        params: dict[str, Any] = {"modelId": request.model, "body": json.dumps(request.choice_body(index)).encode(),
                                  "contentType": JSON}
        if request.metadata:
            params["requestMetadata"] = json.dumps(request.metadata)
        each.append(params)
    validated("bedrock-runtime", operation, each[0])
    require_model(ctx, request.model, "TEXT", operation)
    outputs = each_choice(ctx, operation, each, request.stream)
    ids = _ids(ctx, "cmpl", request.model)
    if request.stream:
        streams = [output["body"] for output in outputs]
        tagged = interleaved(streams)
        native = ((index, json.loads(event["bytes"])) for index, name, event in tagged if name == "chunk")
        return Answer(stream=sse(completions.choice_chunks(native, request.n, include_usage=request.include_usage,
                                                           **ids), Closing([tagged, *streams])),
                      headers=_served_by(outputs[0]))
    answers = [(json.loads(output["body"]), output[EXTRA_HEADERS]["X-Amzn-Bedrock-Input-Token-Count"],
                output[EXTRA_HEADERS]["X-Amzn-Bedrock-Output-Token-Count"]) for output in outputs]
    return Answer(completions.completion_of(answers, **ids), headers=_served_by(outputs[0]))


def each_choice(ctx: RequestContext, operation: str, each: list[dict[str, Any]], stream: bool) -> list[Any]:
    """One runtime call per choice (`n`), made together so that their sequences share the model's batch: a
    stream's sequence is submitted when its call returns, a whole answer's call runs in a thread of its own.
    The first failure is the request's (the other calls run to their end and are metered, as they ran)."""
    if len(each) == 1 or stream:
        outputs = []
        try:
            for params in each:
                outputs.append(call(ctx, "bedrock-runtime", operation, params))
        except BaseException:
            # The request fails: the choices already submitted stop (their cancel flag is the request's) and
            # are settled, each stream pulled once so that closing it runs its metering.
            ctx.cancelled.set()
            for output in outputs:
                events = output.get("stream", output.get("body"))
                try:
                    next(events, None)
                except Exception:  # Cancelled, or the failure it ended with: metered as it ended
                    pass
                finally:
                    events.close()
            raise
        return outputs
    with ThreadPoolExecutor(max_workers=len(each), thread_name_prefix="outcrop-openai-choice") as pool:
        futures = [pool.submit(call, ctx, "bedrock-runtime", operation, params) for params in each]
        return [future.result() for future in futures]


def interleaved(streams: list[Iterable[tuple[str, dict[str, Any]]]]) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """The events of several streams, each tagged with its stream's index, taken in turn (one from each stream
    that has not ended); the choices' sequences advance together in the batch, so none waits long."""
    iterators = [iter(s) for s in streams]
    live = list(range(len(iterators)))
    while live:
        for index in list(live):
            try:
                name, event = next(iterators[index])
            except StopIteration:
                live.remove(index)
                continue
            yield index, name, event


@dataclass
class Closing:
    """Closes each of `parts` (generators), for `sse`'s `source`: every choice's runtime stream ends and is metered."""

    parts: list[Any]

    def close(self) -> None:
        for part in self.parts:
            close = getattr(part, "close", None)
            if close is not None:
                close()


def create_embeddings(ctx: RequestContext, body: dict[str, Any], _: str) -> Answer:
    request = embeddings.parse(body)
    base: dict[str, Any] = {"modelId": request.model, "contentType": JSON}
    if request.metadata:
        base["requestMetadata"] = json.dumps(request.metadata)
    validated("bedrock-runtime", "InvokeModel", {**base, "body": b"{}"})
    require_model(ctx, request.model, "EMBEDDING", "InvokeModel")
    by_position: dict[int, list[float]] = {}
    tokens, headers = 0, {}
    for one in embeddings.calls(request):
        output = call(ctx, "bedrock-runtime", "InvokeModel", {**base, "body": json.dumps(one.body).encode()})
        for position, vector in zip(one.positions, embeddings.vectors(json.loads(output["body"])), strict=True):
            by_position[position] = vector
        tokens += output[EXTRA_HEADERS]["X-Amzn-Bedrock-Input-Token-Count"]
        headers = _served_by(output)
    return Answer(embeddings.response(request, by_position, tokens), headers=headers)


def list_models(ctx: RequestContext, _body: dict[str, Any], _: str) -> Answer:
    """The catalog's text and embedding models (bedrock:ListFoundationModels), then the caller's provisioned
    throughputs in service where its policy lets it list them (bedrock:ListProvisionedModelThroughputs)."""
    summaries = call(ctx, "bedrock", "ListFoundationModels", {})["modelSummaries"]
    rerankers = {m.model_id for m in ctx.services.catalog.all() if m.native_format == RERANK_FORMAT}
    # An alias (Bedrock's rerank ids) names the local model answering for it: a reranker's is left out too.
    data = models.listed(summaries, lambda s: not {s["modelId"], s.get(SERVED_BY_MEMBER)} & rerankers)
    for operation, params, member, key in (
            ("ListProvisionedModelThroughputs", {"statusEquals": models.IN_SERVICE}, "provisionedModelSummaries",
             "provisionedModelArn"),
            ("ListImportedModels", {}, "modelSummaries", "modelArn")):
        params = {**params, "maxResults": 1000}
        try:
            while True:
                listed = call(ctx, "bedrock", operation, params)
                data += [models.from_arn(s[key], s.get("creationTime"), ctx.principal.account_id)
                         for s in listed[member]]
                if not listed.get("nextToken"):
                    break
                params = {**params, "nextToken": listed["nextToken"]}
        except AccessDeniedException:  # the models the caller may list are still the answer
            pass
    return Answer(models.page(data))


def retrieve_model(ctx: RequestContext, _body: dict[str, Any], model: str) -> Answer:
    """One model: a foundation model or alias (bedrock:GetFoundationModel), a provisioned throughput by ARN
    (bedrock:GetProvisionedModelThroughput), or an imported model by ARN (bedrock:GetImportedModel)."""
    try:
        if ":provisioned-model/" in model:
            details = call(ctx, "bedrock", "GetProvisionedModelThroughput", {"provisionedModelId": model})
            return Answer(models.from_arn(details["provisionedModelArn"], details.get("creationTime"),
                                          ctx.principal.account_id))
        if ":imported-model/" in model:
            details = call(ctx, "bedrock", "GetImportedModel", {"modelIdentifier": model})
            return Answer(models.from_arn(details["modelArn"], details.get("creationTime"), ctx.principal.account_id))
        details = call(ctx, "bedrock", "GetFoundationModel", {"modelIdentifier": model})["modelDetails"]
    except (ResourceNotFoundException, ValidationException):
        raise ModelNotFound(model) from None
    return Answer(models.from_summary(details))


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    name: str
    handler: Handler


ROUTES = (Route("GET", "/models", "ListModels", list_models),
          Route("POST", "/chat/completions", "ChatCompletions", chat_completions),
          Route("POST", "/completions", "Completions", text_completions),
          Route("POST", "/embeddings", "Embeddings", create_embeddings))
MODEL = Route("GET", "/models/{model}", "RetrieveModel", retrieve_model)


def route(method: str, raw_path: str) -> tuple[Route, str]:
    """The route for a path under one of PREFIXES, and its label (a model id, percent-decoded) or ""."""
    path = "/" + raw_path.split("/v1/", 1)[1]
    found = [r for r in ROUTES if r.path == path]
    label = ""
    if not found and path.startswith("/models/") and len(path) > len("/models/"):
        found, label = [MODEL], urllib.parse.unquote(path[len("/models/"):])
    if not found:
        raise RouteNotFound(f"Unknown request URL: {method} {raw_path}. This server answers GET /v1/models, "
                            "GET /v1/models/{model}, POST /v1/chat/completions, POST /v1/completions and "
                            "POST /v1/embeddings.")
    if found[0].method != method:
        raise MethodNotAllowed(f"{raw_path} takes {found[0].method}, not {method}")
    return found[0], label


# -- server-sent events -------------------------------------------------------------------------------------------

def sse(chunks: Iterable[dict[str, Any]], source: Any) -> Iterator[bytes]:
    """Chunks as server-sent events, ended by `data: [DONE]`. An error once the stream has begun (its status
    line is out) is one last event in OpenAI's error shape, which the SDKs raise; closing this closes
    `source`, the runtime's event stream, so an abandoned generation ends and is metered."""
    try:
        for chunk in chunks:
            yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
        yield SSE_DONE
    except Cancelled:
        raise
    except Exception as exc:
        if not isinstance(exc, BedrockError):
            log.exception("an OpenAI stream failed")
            exc = InternalServerException("Internal error while streaming")
        yield b"data: " + json.dumps(error_body(exc)).encode() + b"\n\n"
    finally:
        for closable in (chunks, source):
            close = getattr(closable, "close", None)
            if close is not None:
                close()


# -- the ASGI door ---------------------------------------------------------------------------------------------

RunWatching = Callable[[Callable[[], Any], Any, threading.Event], Awaitable[Any]]
Stream = Callable[[Any, Any, Any, threading.Event], Awaitable[None]]


class OpenAIDoor:
    """The ASGI app for PREFIXES; `BedrockApp` hands it those requests, with its own way of running a blocking
    call while watching for a hang-up (`run_watching`) and of streaming (`stream`), so both behave as the API's."""

    def __init__(self, services: Services, run_watching: RunWatching, stream: Stream) -> None:
        self.services = services
        self._run_watching = run_watching
        self._stream = stream

    async def __call__(self, scope: dict[str, Any], receive, send) -> None:
        request_id = str(uuid.uuid4())
        started = time.perf_counter()
        method = scope["method"]
        raw = scope.get("raw_path")
        raw_path = (raw.decode("latin-1") if raw else scope.get("path", "/")).split("?", 1)[0]
        name, status, response_started = "-", 500, False
        hung_up = threading.Event()  # the client's disconnect, the generation's cancel flag
        try:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            body = await self._read_body(headers, receive)
            found, label = route(method, raw_path)
            name = found.name
            client_ip = (scope.get("client") or ("", 0))[0]
            tls = is_tls(scope)
            query = scope.get("query_string", b"").decode("latin-1")

            def run() -> Answer:  # credentials, parsing and the model stay off the event loop
                principal = authenticate(self.services.iam, auth_enabled=self.services.settings.auth_enabled,
                                         service="bedrock-runtime", method=method, raw_path=raw_path, query=query,
                                         headers=headers, body=body, tls=tls, client_ip=client_ip)
                ctx = RequestContext(request_id=request_id, principal=principal, services=self.services,
                                     source_ip=client_ip, headers=headers, cancelled=hung_up,
                                     conditions={"aws:SourceIp": client_ip, "aws:SecureTransport": tls})
                return found.handler(ctx, _json(body) if method == "POST" else {}, label)

            answer = await self._run_watching(run, receive, hung_up)
            status = 200
            kind = b"text/event-stream" if answer.stream is not None else b"application/json"
            response_headers = [(b"content-type", kind), (b"x-request-id", request_id.encode()),
                                *((k.lower().encode(), v.encode()) for k, v in answer.headers.items())]
            if answer.stream is not None:
                response_headers.append((b"cache-control", b"no-cache"))
            await send({"type": "http.response.start", "status": status, "headers": response_headers})
            response_started = True
            if answer.stream is not None:
                await self._stream(answer.stream, send, receive, hung_up)
                await send({"type": "http.response.body", "body": b""})
            else:
                await send({"type": "http.response.body", "body": json.dumps(answer.body).encode()})
        except Cancelled:  # the client hung up and its generation was called off: no one to answer
            log.info("request %s (%s) cancelled: the client hung up", request_id, name)
            status = CLIENT_CLOSED_REQUEST
        except Exception as exc:  # every failure leaves in OpenAI's error shape, never as a stack trace
            if not isinstance(exc, BedrockError):
                log.exception("request %s (%s) failed", request_id, name)
                exc = InternalServerException(f"Internal error; request id {request_id}")
            if response_started:
                log.warning("request %s (%s) ended after its response began: %s", request_id, name, exc.code)
            else:
                status = error_status(exc)
                await send({"type": "http.response.start", "status": status, "headers": [
                    (b"content-type", b"application/json"), (b"x-request-id", request_id.encode())]})
                await send({"type": "http.response.body", "body": json.dumps(error_body(exc)).encode()})
        finally:
            access_log.info("%s %s %s:%s %d %.1fms %s", method, raw_path, SERVICE, name, status,
                            (time.perf_counter() - started) * 1000, request_id)

    async def _read_body(self, headers: dict[str, str], receive) -> bytes:
        limit = self.services.settings.max_request_bytes
        declared = headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise InvalidRequest(f"The request body is {declared} bytes; the limit is {limit}")
        body = await read_body(receive, limit)
        if body is None:
            raise InvalidRequest(f"The request body exceeds the limit of {limit} bytes")
        return body


def _json(body: bytes) -> dict[str, Any]:
    try:
        document = jsontext.loads(body)
    except jsontext.InvalidJson as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidRequest("The request body must be a JSON object")
    return document
