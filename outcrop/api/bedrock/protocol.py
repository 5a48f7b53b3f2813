"""AWS rest-json, server side, driven by botocore's own service models.

Every operation of the four Bedrock services is routed from its `requestUri` in botocore's model;
requests are parsed into Python values by the input shape (path labels, query strings, headers,
JSON body or raw payload) and responses serialized by the output shape. Routing happens on the raw
path, so percent-encoded ARNs (`%3A`, `%2F`) stay inside one path label.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any
from urllib.parse import parse_qsl, unquote

import botocore.session
from botocore.model import OperationModel, Shape, StructureShape

from outcrop.api import eventstream
from outcrop.api.bedrock.validation import coerce_scalar, validate_input
from outcrop.errors import BedrockError, Cancelled, SerializationException, ValidationException
from outcrop.platform import jsontext

log = logging.getLogger(__name__)

#: The services one Outcrop port answers, in the order that breaks a route tie (the agent services
#: share `/tags/{resourceArn}`; the build-time service wins, as its tags are the ones users set).
SERVICES = ("bedrock", "bedrock-runtime", "bedrock-agent", "bedrock-agent-runtime")

_LABEL = re.compile(r"\{([^}+]+)(\+?)\}")


@dataclass(frozen=True)
class Route:
    service: str
    operation: OperationModel
    method: str
    pattern: re.Pattern[str]
    #: Literal characters in the template: the more, the more specific (`/a/b` beats `/a/{x}`).
    specificity: int

    @property
    def name(self) -> str:
        return self.operation.name


@cache
def service_model(service: str):
    return botocore.session.get_session().get_service_model(service)


def _compile(template: str) -> tuple[re.Pattern[str], int]:
    parts, last, literal = [], 0, 0
    for match in _LABEL.finditer(template):
        text = template[last:match.start()]
        parts.append(re.escape(text))
        literal += len(text)
        name, greedy = match.group(1), match.group(2)
        parts.append(f"(?P<{_group(name)}>{'.+' if greedy else '[^/]+'})")
        last = match.end()
    parts.append(re.escape(template[last:]))
    literal += len(template) - last
    return re.compile("".join(parts)), literal


def _group(label: str) -> str:
    # Labels are identifiers in every Bedrock model, but a regex group name must be one for sure.
    return "g_" + re.sub(r"\W", "_", label)


@cache
def routes() -> tuple[Route, ...]:
    table = []
    for service in SERVICES:
        model = service_model(service)
        for name in model.operation_names:
            op = model.operation_model(name)
            pattern, specificity = _compile(op.http["requestUri"].split("?", 1)[0])
            table.append(Route(service, op, op.http["method"], pattern, specificity))
    # Stable sort keeps SERVICES order among equally specific routes.
    return tuple(sorted(table, key=lambda r: -r.specificity))


def match_route(method: str, raw_path: str) -> tuple[Route, dict[str, str]] | None:
    """The operation for a method and raw (still percent-encoded) path, with its decoded labels."""
    for route in routes():
        if route.method != method:
            continue
        found = route.pattern.fullmatch(raw_path)
        if found:
            labels = {}
            for member, shape in (route.operation.input_shape.members.items()
                                  if route.operation.input_shape else ()):
                if shape.serialization.get("location") == "uri":
                    label = shape.serialization.get("name", member)
                    value = found.groupdict().get(_group(label))
                    if value is not None:
                        labels[member] = unquote(value)
            return route, labels
    return None


# -- requests ----------------------------------------------------------------------------------

def _from_json(shape: Shape, value: Any, path: str) -> Any:
    """JSON value -> Python value by shape. Type mismatches are left for the validator to name."""
    if value is None:
        return None
    kind = shape.type_name
    if shape.metadata.get("document"):  # free-form JSON (additionalModelRequestFields, tool input)
        return value
    if kind == "structure" and isinstance(value, dict):
        out = {}
        for member, member_shape in shape.members.items():
            key = member_shape.serialization.get("name", member)
            if key in value:
                out[member] = _from_json(member_shape, value[key], f"{path}.{member}" if path else member)
        return out
    if kind == "list" and isinstance(value, list):
        return [_from_json(shape.member, v, f"{path}.{i + 1}.member") for i, v in enumerate(value)]
    if kind == "map" and isinstance(value, dict):
        return {k: _from_json(shape.value, v, f"{path}.{k}") for k, v in value.items()}
    if kind == "blob" and isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValidationException(
                f"1 validation error detected: Value at '{path}' failed to satisfy constraint: "
                "Member must be base64-encoded") from None
    if kind == "timestamp" and isinstance(value, str | int | float) and not isinstance(value, bool):
        return coerce_scalar(shape, str(value), path)
    return value


def parse_request(route: Route, labels: dict[str, str], query: str, headers: dict[str, str],
                  body: bytes) -> dict[str, Any]:
    """Wire request -> the operation's input as Python values, validated against the model."""
    try:
        return _parse_request(route, labels, query, headers, body)
    except RecursionError:  # recursive shapes (retrieval filters) with absurdly deep input
        raise SerializationException("The request body is nested too deeply") from None


def _parse_request(route: Route, labels: dict[str, str], query: str, headers: dict[str, str],
                   body: bytes) -> dict[str, Any]:
    shape: StructureShape | None = route.operation.input_shape
    if shape is None:
        return {}
    params: dict[str, Any] = {}
    query_items = parse_qsl(query, keep_blank_values=True)
    payload_member = shape.serialization.get("payload")
    body_members: dict[str, Shape] = {}
    for member, member_shape in shape.members.items():
        location = member_shape.serialization.get("location")
        wire_name = member_shape.serialization.get("name", member)
        if location == "uri":
            if member in labels:
                params[member] = coerce_scalar(member_shape, labels[member], member)
        elif location == "querystring":
            values = [v for k, v in query_items if k == wire_name]
            if not values:
                continue
            if member_shape.type_name == "list":
                params[member] = [coerce_scalar(member_shape.member, v, member) for v in values]
            else:
                params[member] = coerce_scalar(member_shape, values[-1], member)
        elif location == "header":
            value = headers.get(wire_name.lower())
            if value is not None:
                params[member] = coerce_scalar(member_shape, value, member)
        elif location == "headers":
            prefix = wire_name.lower()
            found = {k[len(prefix):]: v for k, v in headers.items() if k.startswith(prefix)}
            if found:
                params[member] = found
        elif member != payload_member:
            body_members[member] = member_shape

    if payload_member:
        payload_shape = shape.members[payload_member]
        if payload_shape.type_name in ("blob", "string"):
            params[payload_member] = body if payload_shape.type_name == "blob" else body.decode()
        elif body:
            params[payload_member] = _from_json(payload_shape, _load_json(body), payload_member)
    elif body_members and body.strip():
        document = _load_json(body)
        if not isinstance(document, dict):
            raise SerializationException("The request body must be a JSON object")
        for member, member_shape in body_members.items():
            key = member_shape.serialization.get("name", member)
            if key in document:
                params[member] = _from_json(member_shape, document[key], member)

    validate_input(shape, params)
    return params


def _load_json(body: bytes) -> Any:
    try:
        return jsontext.loads(body)
    except jsontext.InvalidJson as exc:
        raise SerializationException(f"The request body is not valid JSON: {exc}") from None


# -- responses ---------------------------------------------------------------------------------

def _iso(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


#: The key under which a handler's output carries response headers that the service sends but
#: botocore's output shape does not model, as a dict of header name -> value: InvokeModel's
#: X-Amzn-Bedrock-Input-Token-Count, -Output-Token-Count and -Invocation-Latency, which clients such
#: as LangChain read from the raw response. No botocore member name contains "@", so it cannot collide
#: with a modelled member. A modelled header is set through its member, never here
#: (`serialize_response` refuses the clash).
EXTRA_HEADERS = "@headers"


def _document(value: Any) -> Any:
    """A free-form JSON document goes out as it is: its nulls are data (`"stop_sequence": null`)."""
    if isinstance(value, dict):
        return {k: _document(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_document(v) for v in value]
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    return value


def to_json(shape: Shape | None, value: Any) -> Any:
    """Python value -> JSON value by shape: timestamps as ISO-8601, blobs as base64, None dropped
    (except inside a document, which is sent as it is)."""
    if value is None:
        return None
    kind = shape.type_name if shape is not None else None
    if shape is not None and shape.metadata.get("document"):
        return _document(value)
    if kind == "structure" and isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if item is None:
                continue
            member_shape = shape.members.get(key)
            wire = member_shape.serialization.get("name", key) if member_shape is not None else key
            out[wire] = to_json(member_shape, item)
        return out
    if kind == "list" and isinstance(value, list | tuple):
        return [to_json(shape.member, v) for v in value]
    if kind == "map" and isinstance(value, dict):
        return {k: to_json(shape.value, v) for k, v in value.items()}
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: to_json(None, v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [to_json(None, v) for v in value]
    return value


def encode_event_stream(union: StructureShape, events: Iterable[tuple[str, dict]]) -> Iterator[bytes]:
    """(member name, payload) pairs -> event-stream messages; an error becomes an exception event.

    The status line has gone out before the first event, so an error raised while generating can
    only travel as a modelled exception event: the union's member for that error if it has one,
    else its internal-server member.
    """
    try:
        for name, payload in events:
            yield eventstream.encode_event(name, to_json(union.members[name], payload))
    except BedrockError as exc:
        member = exc.code[0].lower() + exc.code[1:]
        if member not in union.members:
            # A failed model is modelStreamErrorException on bedrock-runtime, dependencyFailedException
            # on the agent services; every stream union has internalServerException.
            fallbacks = ("modelStreamErrorException", "dependencyFailedException") if exc.status == 424 else ()
            member = next((m for m in fallbacks if m in union.members), "internalServerException")
        yield eventstream.encode_exception(member, exc.message)
    except Cancelled:  # the client hung up and its generation was called off: no one reads the stream
        return
    except Exception:
        log.exception("event stream failed")
        yield eventstream.encode_exception("internalServerException", "Internal error while streaming")


@dataclass
class WireResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    #: For event-stream outputs: the handler's iterator of events, encoded by the app as it streams.
    stream: Any = None


def serialize_response(route: Route, output: dict[str, Any] | None) -> WireResponse:
    op = route.operation
    status = int(op.http.get("responseCode", 200))
    headers: dict[str, str] = {}
    shape = op.output_shape
    output = dict(output or {})
    extra = output.pop(EXTRA_HEADERS, None) or {}
    if shape is None:
        return WireResponse(status, {"Content-Type": "application/json", **_extra(extra, None)}, b"{}")
    for member, member_shape in shape.members.items():
        location = member_shape.serialization.get("location")
        if location == "statusCode" and member in output:
            status = int(output.pop(member))
        elif location == "header" and output.get(member) is not None:
            value = output.pop(member)
            headers[member_shape.serialization.get("name", member)] = (
                _iso(value) if isinstance(value, datetime) else str(value))
        elif location == "headers" and member in output:
            prefix = member_shape.serialization.get("name", member)
            for k, v in (output.pop(member) or {}).items():
                headers[prefix + k] = str(v)
    headers.update(_extra(extra, shape))
    payload_member = shape.serialization.get("payload")
    if payload_member:
        payload_shape = shape.members[payload_member]
        value = output.get(payload_member)
        if payload_shape.serialization.get("eventstream"):
            headers.setdefault("Content-Type", "application/vnd.amazon.eventstream")
            return WireResponse(status, headers, b"", stream=encode_event_stream(payload_shape, value))
        if payload_shape.type_name in ("blob", "string"):
            headers.setdefault("Content-Type", "application/json")
            data = value if isinstance(value, bytes) else (value or "").encode()
            return WireResponse(status, headers, data)
        body = to_json(payload_shape, value) or {}
    else:
        body = to_json(shape, output) or {}
    headers.setdefault("Content-Type", "application/json")
    return WireResponse(status, headers, json.dumps(body, ensure_ascii=False).encode())


def _extra(extra: dict[str, Any], shape: StructureShape | None) -> dict[str, str]:
    """A handler's unmodelled headers (`EXTRA_HEADERS`), checked against the ones its shape models."""
    taken, prefixes = {"content-type"}, []
    for member, member_shape in (shape.members.items() if shape is not None else ()):
        location, wire = member_shape.serialization.get("location"), member_shape.serialization.get("name", member)
        if location == "header":
            taken.add(wire.lower())
        elif location == "headers":
            prefixes.append(wire.lower())
    out = {}
    for name, value in extra.items():
        if name.lower() in taken or name.lower().startswith(tuple(prefixes)):
            raise ValueError(f"{name} is a modelled header of this operation: set it through its member")
        out[name] = _iso(value) if isinstance(value, datetime) else str(value)
    return out
