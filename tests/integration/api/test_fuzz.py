"""Property-based fuzzing of the HTTP door: every implemented operation answers hostile input with a named 4xx.

For every operation in `HANDLERS` (whatever `load_handlers()` registers, so a newly implemented operation
is fuzzed without touching this file) and every `/_outcrop/iam/<Action>`, hypothesis sends malformed
bodies, wrong JSON types, deep nesting, 100k-character strings, odd unicode (lone surrogates, RTL marks,
NUL, emoji), JSON-incompatible numbers and random query strings and headers, signed with the root key.

The property: the status is 2xx (the request happened to be valid) or one of the 4xx statuses Bedrock
uses; never 5xx. An error body is JSON with `__type` and `message`, and `x-amzn-ErrorType` repeats
`__type`. A 2xx event stream carries no internal-server exception. Every request finishes in 30 s.

Runtime operations only ever name the tiny random-weight model or an invalid id, and a body that
would generate is tamed to two tokens, so the fuzz never waits on a real model.

Separately: bodies over `OUTCROP_MAX_REQUEST_BYTES` are refused before parsing (declared or chunked),
and unsigned, wrongly signed or garbage-signed requests are a 403 with an authentication error name.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import ssl
import time
import urllib.parse
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer
from botocore.model import Shape
from hypothesis import HealthCheck, currently_in_test_context, given, note, settings
from hypothesis import strategies as st

from outcrop.api import iam as iam_api
from outcrop.api.bedrock import protocol
from outcrop.api.bedrock.operations import HANDLERS, load_handlers
from tests.conftest import RunningServer, start_server, stop_server

#: Statuses a named error may have: what the Bedrock reference lists (Conflict is 409 on the agent services).
ERROR_STATUSES = frozenset({400, 403, 404, 408, 409, 413, 424, 429})
AUTH_ERRORS = frozenset({"MissingAuthenticationTokenException", "InvalidSignatureException",
                         "UnrecognizedClientException"})
#: A request slower than this counts as a hang (the client itself gives up at REQUEST_TIMEOUT_S).
MAX_SECONDS = 30.0
REQUEST_TIMEOUT_S = 60.0
SMOLLM2 = "huggingface.smollm2-135m-instruct-v1:0"
SMOLLM2_ARN = f"arn:aws:bedrock:us-east-1::foundation-model/{SMOLLM2}"
#: Placeholders resolved per session: the tiny model's id, and an access key of a throwaway user.
TINY = "\x00tiny-model\x00"
TINY_ARN = "\x00tiny-model-arn\x00"
FUZZ_KEY = "\x00fuzz-access-key\x00"
#: Principals the IAM fuzz may create on purpose; anything it creates is deleted afterwards.
FUZZ_USER, FUZZ_ROLE = "fuzz-user", "fuzz-role"

FUZZ_SETTINGS = {
    "deadline": None,
    "derandomize": True,
    "database": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                              HealthCheck.data_too_large, HealthCheck.large_base_example],
}


# -- the operations ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Operation:
    service: str
    name: str
    method: str
    #: The botocore requestUri without its query part, labels still in braces.
    template: str
    input_shape: Any

    @property
    def labels(self) -> list[str]:
        return [m.group(1) for m in re.finditer(r"\{([^}+]+)\+?\}", self.template)]

    def members(self, location: str | None) -> dict[str, Shape]:
        shape = self.input_shape
        if shape is None:
            return {}
        return {name: member for name, member in shape.members.items()
                if member.serialization.get("location") == location}

    @property
    def payload(self) -> Shape | None:
        shape = self.input_shape
        member = shape.serialization.get("payload") if shape is not None else None
        return shape.members[member] if member else None


def implemented_operations() -> list[Operation]:
    load_handlers()
    routes = {(route.service, route.name): route for route in protocol.routes()}
    return [Operation(service, name, routes[service, name].method,
                      routes[service, name].operation.http["requestUri"].split("?", 1)[0],
                      routes[service, name].operation.input_shape)
            for service, name in sorted(HANDLERS)]


OPERATIONS = implemented_operations()
RUNTIME_OPS = [op for op in OPERATIONS if op.service == "bedrock-runtime"]
CONTROL_OPS = [op for op in OPERATIONS if op.service != "bedrock-runtime"]
IAM_ACTIONS = sorted(iam_api.ACTIONS)


def test_every_implemented_operation_is_fuzzed():
    assert OPERATIONS, "load_handlers() registered nothing"
    assert {(op.service, op.name) for op in RUNTIME_OPS + CONTROL_OPS} == set(HANDLERS)
    assert IAM_ACTIONS
    for op in OPERATIONS:
        assert op.method in ("GET", "POST", "PUT", "DELETE", "PATCH"), op


# -- values ---------------------------------------------------------------------------------------

ODD = ["\ud800", "\udfff", "\udbff\udc00", "\u202e", "\u200f", "\u200b", "\x00", "\x7f", "\U0001f600",
       "\U0001f469\u200d\U0001f4bb", "\ufeff", "e\u0301", "\uffff", "\U0010ffff", "\u2028", "\r\n", "\t",
       "\\", "\"", "'", "%00", "%2F", "../../etc/passwd", "{{7*7}}", "${jndi:ldap://x}", "<script>", "NaN",
       "null", "-1", "arn:aws:bedrock:us-east-1::foundation-model/", "\u0645\u0631\u062d\u0628\u0627"]
huge_text = st.tuples(st.sampled_from(["x", "\u00e9", "\U0001f600", "\ud800", " ", "\x00", "\u202e"]),
                      st.sampled_from([300, 5_000, 100_000])).map(lambda t: t[0] * t[1])
short_text = st.one_of(st.text(max_size=12), st.sampled_from(ODD))
odd_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(ODD),
    st.lists(st.sampled_from(ODD), min_size=1, max_size=6).map("".join),
    huge_text,
)
numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([-1, 0, 1, 2, 2**31 - 1, 2**31, 2**63 - 1, 2**63, -(2**63) - 1, 10**300, -(10**300)]),
    st.floats(allow_nan=True, allow_infinity=True),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, odd_text)
json_values = st.recursive(
    scalars, lambda children: st.one_of(st.lists(children, max_size=4),
                                        st.dictionaries(short_text, children, max_size=4)),
    max_leaves=10)


def _nest(depth: int, kind: str, leaf: Any) -> Any:
    for _ in range(depth):
        leaf = [leaf] if kind == "list" else {"a": leaf}
    return leaf


nested = st.builds(_nest, st.integers(1, 50), st.sampled_from(["list", "dict"]), scalars)
junk = st.one_of(scalars, json_values, nested)


@st.composite
def shaped(draw, shape: Shape, depth: int = 0) -> Any:
    """A value for `shape`: mostly of the right JSON type (so the walk goes deep), sometimes junk."""
    if depth > 6 or draw(st.integers(0, 9)) == 0:
        return draw(junk)
    if shape.metadata.get("document"):
        return draw(json_values)
    kind = shape.type_name
    if kind == "structure":
        names = sorted(shape.members)
        chosen = draw(st.lists(st.sampled_from(names), unique=True, max_size=min(4, len(names)))) if names else []
        return {shape.members[name].serialization.get("name", name): draw(shaped(shape.members[name], depth + 1))
                for name in chosen}
    if kind == "list":
        return draw(st.lists(shaped(shape.member, depth + 1), max_size=3))
    if kind == "map":
        return draw(st.dictionaries(short_text, shaped(shape.value, depth + 1), max_size=3))
    if kind == "string":
        enum = shape.metadata.get("enum")
        return draw(st.one_of(st.sampled_from(enum), odd_text) if enum else odd_text)
    if kind in ("integer", "long"):
        return draw(st.one_of(st.integers(-5, 10), numbers))
    if kind in ("float", "double"):
        return draw(st.one_of(st.floats(0, 1), numbers))
    if kind == "boolean":
        return draw(st.booleans())
    if kind == "blob":
        return draw(st.one_of(st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()), odd_text))
    if kind == "timestamp":
        return draw(st.one_of(numbers, st.sampled_from(["2024-01-01T00:00:00Z", "9999-99-99", "yesterday"]),
                              odd_text))
    return draw(junk)


# -- bodies ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Json:
    """A JSON document still to be encoded, so that it can be tamed before it is sent."""

    value: Any
    ensure_ascii: bool = True


def encode(body: bytes | Json) -> bytes:
    if isinstance(body, bytes):
        return body
    # allow_nan (the default) writes NaN / Infinity, tokens that JSON itself does not have; surrogatepass
    # writes lone surrogates as the invalid UTF-8 that a careless client would send.
    return json.dumps(body.value, ensure_ascii=body.ensure_ascii).encode("utf-8", "surrogatepass")


INVALID_JSON = [b"", b" ", b"{", b"}", b"[", b"{'a': 1}", b'{"a": 1,}', b'{"a" 1}', b"undefined", b"NaN",
                b"-Infinity", b'{"a": NaN}', b'{"a": Infinity}', b'{"a": 01}', b'{"a": 1e999}', b'{"a": -0}',
                b'{"a": .5}', b'{"a": 0x10}', b'{"a": "\\x41"}', b'{"a": "\\ud800"}', b'{"a": "\\uZZZZ"}',
                b'{"a": "unterminated', b"\xef\xbb\xbf{}", b"\xff\xfe{\x00}\x00", b"{}\x00", b"{} {}",
                b'{"a": 1}garbage', b"\x00" * 16, b"\x80\x81\xfe\xff", "{\"a\": \"\u00e9\"}".encode("latin-1"),
                b'{"a": ' + b"9" * 5000 + b"}", b'{"__proto__": {"x": 1}}', b'{"a": 1, "a": 2}']
raw_bodies = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(INVALID_JSON),
    st.builds(lambda n, open_: open_ * n, st.sampled_from([50, 1_000, 100_000]),
              st.sampled_from([b"[", b'{"a":', b'{"messages":['])),
    st.sampled_from([b"x" * 100_000, b"\x00" * 100_000]),
)


def json_bodies(value_strategy) -> st.SearchStrategy[Json]:
    return st.builds(Json, value_strategy, st.booleans())


@st.composite
def bodies_for(draw, op: Operation) -> bytes | Json:
    """Raw junk, JSON of the wrong type, and documents built from the operation's own input shape."""
    shape = op.input_shape
    roll = draw(st.integers(0, 9))
    if roll < 3:
        return draw(raw_bodies)
    if roll < 5 or shape is None or op.payload is not None:
        return draw(json_bodies(junk))
    return draw(json_bodies(shaped(shape)))


@st.composite
def _mutated(draw, base: dict[str, Any], mutations: dict[str, st.SearchStrategy]) -> dict[str, Any]:
    """A valid request with at most one member made odd, so that most draws get past validation and deep."""
    doc = json.loads(json.dumps(base))
    if draw(st.integers(0, 2)):
        key = draw(st.sampled_from(sorted(mutations)))
        doc[key] = draw(mutations[key])
    return doc


def _text_blocks(text: st.SearchStrategy[str]) -> st.SearchStrategy[list]:
    return st.lists(st.builds(lambda t: {"text": t}, text), min_size=1, max_size=2)


@st.composite
def converse_docs(draw) -> dict[str, Any]:
    text = draw(odd_text)
    return draw(_mutated({"messages": [{"role": "user", "content": [{"text": text}]}],
                          "inferenceConfig": {"maxTokens": 2}}, {
        "messages": st.one_of(
            st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", ""]),
                                            "content": _text_blocks(odd_text)}), min_size=1, max_size=3),
            st.just([{"role": "user", "content": [{"text": text}]}, {"role": "assistant",
                                                                      "content": [{"text": text}]}]),
            junk),
        "system": st.one_of(_text_blocks(odd_text), junk),
        "inferenceConfig": st.one_of(st.fixed_dictionaries({"maxTokens": st.one_of(st.just(2), numbers)}, optional={
            "temperature": st.one_of(st.floats(0, 1), numbers), "topP": st.one_of(st.floats(0, 1), numbers),
            "stopSequences": st.one_of(st.lists(odd_text, max_size=3), junk)}), junk),
        "additionalModelRequestFields": st.one_of(
            st.fixed_dictionaries({}, optional={"top_k": numbers, "seed": numbers}), json_values),
        "requestMetadata": st.one_of(st.dictionaries(short_text, short_text, max_size=3), junk),
        "toolConfig": junk,
        "guardrailConfig": junk,
        "promptVariables": junk,
        "additionalModelResponseFieldPaths": st.one_of(st.lists(odd_text, max_size=2), junk),
    }))


@st.composite
def native_docs(draw) -> dict[str, Any]:
    text = draw(odd_text)
    base, mutations = draw(st.sampled_from([
        ({"prompt": text, "max_gen_len": 2}, {"temperature": numbers, "top_p": numbers, "seed": numbers,
                                              "images": junk, "prompt": junk, "max_gen_len": numbers}),
        ({"prompt": text, "max_tokens": 2}, {"stop": st.one_of(st.lists(odd_text, max_size=3), junk),
                                             "top_k": numbers, "temperature": numbers, "prompt": junk}),
        ({"inputText": text, "textGenerationConfig": {"maxTokenCount": 2}}, {
            "textGenerationConfig": st.one_of(st.fixed_dictionaries({"maxTokenCount": st.just(2)}, optional={
                "topP": numbers, "temperature": numbers, "stopSequences": st.one_of(st.lists(odd_text, max_size=3),
                                                                                    junk)}), junk),
            "dimensions": numbers, "normalize": junk, "inputText": junk, "seed": numbers}),
        ({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 2,
          "messages": [{"role": "user", "content": text}]}, {
            "anthropic_version": junk, "max_tokens": numbers, "system": st.one_of(odd_text, json_values),
            "messages": st.one_of(st.lists(st.fixed_dictionaries({
                "role": st.sampled_from(["user", "assistant", "x"]), "content": st.one_of(odd_text, json_values)}),
                max_size=3), junk),
            "stop_sequences": junk, "top_k": numbers, "metadata": json_values}),
    ]))
    if draw(st.integers(0, 3)):
        return draw(_mutated(base, mutations))
    keys = st.sampled_from(["prompt", "inputText", "messages", "max_gen_len", "max_tokens", "anthropic_version",
                            "textGenerationConfig", "stop", "seed", "x"])
    return draw(st.dictionaries(keys, junk, max_size=4))


count_tokens_docs = st.one_of(
    st.builds(lambda c: {"input": {"converse": c}}, converse_docs()),
    st.builds(lambda b: {"input": {"invokeModel": {"body": base64.b64encode(encode(b)).decode()}}},
              st.one_of(json_bodies(native_docs()), raw_bodies.filter(lambda b: len(b) < 2_000))),
)
NEAR_VALID = {
    "Converse": json_bodies(converse_docs()),
    "ConverseStream": json_bodies(converse_docs()),
    "InvokeModel": json_bodies(native_docs()),
    "InvokeModelWithResponseStream": json_bodies(native_docs()),
    "CountTokens": json_bodies(count_tokens_docs),
}


def _clamp(container: Any, key: str, add: bool = True) -> None:
    """Cap a token budget at 2 where it is a usable integer (junk values stay, to be refused)."""
    if not isinstance(container, dict):
        return
    value = container.get(key)
    if (value is None and add) or (type(value) is int and value > 2):
        container[key] = 2


def tame(op_name: str, body: bytes | Json) -> bytes | Json:
    """A body that would make a model generate asks for two tokens at most."""
    if not isinstance(body, Json) or not isinstance(body.value, dict):
        return body
    doc = json.loads(json.dumps(body.value))  # a copy: hypothesis may show the drawn value again
    if op_name in ("Converse", "ConverseStream"):
        if doc.get("inferenceConfig") is None:
            doc["inferenceConfig"] = {}
        _clamp(doc["inferenceConfig"], "maxTokens")
    elif op_name in ("InvokeModel", "InvokeModelWithResponseStream"):
        if "anthropic_version" in doc or "messages" in doc:
            _clamp(doc, "max_tokens", add=False)
        elif "inputText" in doc:
            if doc.get("textGenerationConfig") is None:
                doc["textGenerationConfig"] = {}
            _clamp(doc["textGenerationConfig"], "maxTokenCount")
        elif "prompt" in doc:
            if "max_gen_len" in doc or not doc.keys() & {"max_tokens", "stop", "top_k"}:
                _clamp(doc, "max_gen_len")
            else:
                _clamp(doc, "max_tokens")
    return replace(body, value=doc)


# -- requests -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    method: str
    #: The path with its labels filled (unquoted) and quoted at send time, or a literal path.
    template: str
    labels: dict[str, str] = field(default_factory=dict)
    query: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | Json = b""
    operation: str = ""


header_text = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40),
    st.sampled_from(["", " ", "application/json", "*/*", "text/html", "ENABLED", "\u00e9\u00ff", "a" * 9000,
                     "eyJhIjogMX0=", '{"k": "v"}', "k=v", "ab"]),
)
query_text = st.one_of(short_text, st.sampled_from(["-1", "0", "99999999999999999999", "%00", "TEXT", "EMBEDDING",
                                                    "FINE_TUNING", "ON_DEMAND", "huggingface", "a" * 3000]))
RAW_QUERIES = ["", "=", "&&", "a", "%", "%zz", "a=%", "a=%e9", "maxResults=-1", "byProvider=%00",
               "byProvider=a&byProvider=b", "nextToken=" + "A" * 5000, "byOutputModality=TEXT&x=%ED%A0%80"]


def _quote(text: str) -> str:
    return urllib.parse.quote(text.encode("utf-8", "surrogatepass"), safe="")


@st.composite
def query_strings(draw, op: Operation) -> str:
    if draw(st.booleans()):
        return draw(st.sampled_from(RAW_QUERIES))
    names = [m.serialization.get("name", n) for n, m in op.members("querystring").items()]
    keys = st.one_of(st.sampled_from(names or ["maxResults"]), st.sampled_from(["maxResults", "nextToken"]),
                     short_text)
    pairs = draw(st.lists(st.tuples(keys, query_text), max_size=4))
    return "&".join(f"{_quote(k)}={_quote(v)}" for k, v in pairs)


@st.composite
def header_sets(draw, op: Operation) -> dict[str, str]:
    members = sorted(op.members("header").items())
    if not members or draw(st.integers(0, 2)):  # usually none, so that a bad header does not mask the body
        return {}
    headers = {}
    for _, member in draw(st.lists(st.sampled_from(members), unique_by=lambda item: item[0], min_size=1, max_size=3)):
        enum = member.metadata.get("enum")
        value = draw(st.sampled_from(enum)) if enum and draw(st.booleans()) else draw(header_text)
        headers[member.serialization["name"]] = value
    return headers


#: Path labels stay under ~64 KB once percent-encoded: longer request heads never reach the app (the HTTP
#: server answers them itself with a 431), so they would test the HTTP parser, not the operations.
label_text = st.one_of(
    st.text(min_size=1, max_size=40),
    st.sampled_from(ODD),
    st.lists(st.sampled_from(ODD), min_size=1, max_size=6).map("".join),
    st.tuples(st.sampled_from(["x", "\u00e9", "\U0001f600", "\ud800", " ", "\x00"]),
              st.sampled_from([300, 3_000])).map(lambda t: t[0] * t[1]),
)


@st.composite
def label_values(draw, op: Operation) -> str:
    if draw(st.integers(0, 9)) < 6:
        if op.service == "bedrock-runtime":  # never a model that would really load or generate
            return draw(st.sampled_from([TINY, TINY, TINY_ARN]))
        return draw(st.sampled_from([TINY, TINY_ARN, SMOLLM2, SMOLLM2_ARN]))
    return draw(st.one_of(label_text, st.sampled_from(["a", "%", "%25", ".", "..", "arn:aws:", "a/b", "x" * 5000])))


@st.composite
def operation_cases(draw, ops: list[Operation]) -> Case:
    op = draw(st.sampled_from(ops))
    labels = {label: draw(label_values(op)) for label in op.labels}
    # Explicit weights: nested one_of()s flatten into one uniform choice, which would starve the near-valid bodies.
    if op.name in NEAR_VALID and draw(st.integers(0, 9)) < 6:
        body = draw(NEAR_VALID[op.name])
    else:
        body = draw(bodies_for(op))
    query = draw(query_strings(op)) if op.members("querystring") or draw(st.integers(0, 3)) == 0 else ""
    return Case(op.method, op.template, labels, query, draw(header_sets(op)), tame(op.name, body),
                f"{op.service}:{op.name}")


policy_docs = st.one_of(
    junk,
    st.builds(lambda effect, action, resource, extra: {"Version": "2012-10-17", "Statement": [
        {"Effect": effect, "Action": action, "Resource": resource, **extra}]},
        st.one_of(st.sampled_from(["Allow", "Deny"]), junk), st.one_of(st.just("bedrock:*"), junk),
        st.one_of(st.just("*"), junk), st.dictionaries(short_text, junk, max_size=2)),
    st.builds(json.dumps, json_values),
    st.builds(lambda n: "[" * n, st.sampled_from([10, 100_000])),
)
iam_names = st.one_of(st.sampled_from([FUZZ_USER, FUZZ_ROLE, "fuzz.x@y+z=1,2-3_4", "f" * 64, "f" * 65]), odd_text, junk)
iam_values = {
    "UserName": iam_names, "RoleName": iam_names, "PolicyName": iam_names,
    "PolicyDocument": policy_docs, "AssumeRolePolicyDocument": policy_docs,
    "AccessKeyId": st.one_of(st.just(FUZZ_KEY), st.just("AKIA" + "0" * 16), odd_text, junk),
    "Status": st.one_of(st.sampled_from(["Active", "Inactive", "active", ""]), junk),
    "Bearer": junk, "ReadOnly": junk,
    "S3Access": st.one_of(st.sampled_from(["s3://bucket/prefix", "s3://", "bucket", "s3://b/" + "p" * 2000]), junk),
}
ALLOW_ALL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "bedrock:*", "Resource": "*"}]}
#: What each action reads, filled with values that work (on the principals and key `iam_door` makes).
IAM_BASES = {
    "CreateUser": {"UserName": FUZZ_USER}, "DeleteUser": {"UserName": FUZZ_USER},
    "CreateRole": {"RoleName": FUZZ_ROLE}, "DeleteRole": {"RoleName": FUZZ_ROLE},
    "ListUsers": {}, "ListRoles": {},
    "CreateAccessKey": {"UserName": FUZZ_USER}, "ListAccessKeys": {"UserName": FUZZ_USER},
    "UpdateAccessKey": {"UserName": FUZZ_USER, "AccessKeyId": FUZZ_KEY, "Status": "Active"},
    "DeleteAccessKey": {"UserName": FUZZ_USER, "AccessKeyId": FUZZ_KEY},
    "PutUserPolicy": {"UserName": FUZZ_USER, "PolicyName": "fuzz-policy", "PolicyDocument": ALLOW_ALL},
    "PutRolePolicy": {"RoleName": FUZZ_ROLE, "PolicyName": "fuzz-policy", "PolicyDocument": ALLOW_ALL},
    "DeleteUserPolicy": {"UserName": FUZZ_USER, "PolicyName": "fuzz-policy"},
    "DeleteRolePolicy": {"RoleName": FUZZ_ROLE, "PolicyName": "fuzz-policy"},
    "GetUserPolicies": {"UserName": FUZZ_USER}, "GetRolePolicies": {"RoleName": FUZZ_ROLE},
}


def test_every_iam_action_has_a_base_request():
    assert set(IAM_BASES) == set(IAM_ACTIONS)


@st.composite
def iam_cases(draw) -> Case:
    action = draw(st.sampled_from(IAM_ACTIONS))
    roll = draw(st.integers(0, 9))
    if roll < 2:
        body = draw(raw_bodies)
    elif roll < 3:
        body = draw(json_bodies(junk))
    else:  # the action's own request with one member odd (or one member more, of any name)
        mutations = {draw(short_text): junk, **iam_values}
        body = draw(json_bodies(_mutated(IAM_BASES.get(action, {}), mutations)))
    return Case("POST", iam_api.PREFIX + action, body=body, operation=f"outcrop-iam:{action}")


any_case = st.one_of(operation_cases(OPERATIONS), iam_cases())


# -- sending and judging ---------------------------------------------------------------------------

@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    data: bytes
    elapsed: float

    def describe(self) -> str:
        return f"{self.status} {dict(self.headers.items())} {self.data[:600]!r} in {self.elapsed:.2f}s"


class Door:
    """Signed raw HTTP to one server, with the session's placeholders resolved."""

    def __init__(self, server: RunningServer, tiny: str = "", fuzz_key: str = "") -> None:
        self.server = server
        self.key = server.root_key()
        self.values = {TINY: tiny, TINY_ARN: f"arn:aws:bedrock:us-east-1::foundation-model/{tiny}", FUZZ_KEY: fuzz_key}

    def resolve(self, value: Any) -> Any:
        if isinstance(value, str):
            for placeholder, real in self.values.items():
                value = value.replace(placeholder, real)
            return value
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if isinstance(value, dict):
            return {self.resolve(k): self.resolve(v) for k, v in value.items()}
        return value

    def url_path(self, case: Case) -> str:
        path = case.template
        for label, value in case.labels.items():
            path = re.sub(r"\{" + re.escape(label) + r"\+?\}", lambda _m, v=value: _quote(self.resolve(v)), path)
        return path + (f"?{case.query}" if case.query else "")

    def body(self, case: Case) -> bytes:
        body = case.body
        if isinstance(body, Json):
            body = replace(body, value=self.resolve(body.value))
        return encode(body)

    def send(self, case: Case, *, sign: str = "root", mutate=None, chunked: bool = False) -> Answer:
        """sign: "root", "none", "wrong-secret" or "unknown-key"; mutate(headers) runs after signing."""
        path, body = self.url_path(case), self.body(case)
        return self.send_raw(case.method, path, body, dict(case.headers), sign=sign, mutate=mutate, chunked=chunked)

    def send_raw(self, method: str, path: str, body: bytes, headers: dict[str, str], *, sign: str = "root",
                 mutate=None, chunked: bool = False) -> Answer:
        request = AWSRequest(method=method, url=self.server.endpoint + path, data=body, headers=headers)
        if sign != "none":
            key_id, secret = self.key
            if sign == "wrong-secret":
                secret = secret[::-1] + "x"
            elif sign == "unknown-key":
                key_id = "AKIA" + "Z" * 16
            SigV4Auth(Credentials(key_id, secret), "bedrock", "us-east-1").add_auth(request)
        sent = dict(request.headers.items())
        if mutate is not None:
            mutate(sent)
        url = urllib.parse.urlsplit(self.server.endpoint)
        if url.scheme == "https":
            connection = http.client.HTTPSConnection(url.hostname, url.port, timeout=REQUEST_TIMEOUT_S,
                                                     context=ssl._create_unverified_context())
        else:
            connection = http.client.HTTPConnection(url.hostname, url.port, timeout=REQUEST_TIMEOUT_S)
        started = time.monotonic()
        try:
            connection.putrequest(method, path, skip_accept_encoding=True)
            for name, value in sent.items():
                connection.putheader(name, value.encode("latin-1") if isinstance(value, str) else value)
            if chunked:
                connection.putheader("Transfer-Encoding", "chunked")
                connection.endheaders()
                try:
                    for start in range(0, len(body), 500):
                        piece = body[start:start + 500]
                        connection.send(b"%x\r\n%s\r\n" % (len(piece), piece))
                    connection.send(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the server answered before the body ended and closed (HTTP allows it): read its answer
            else:
                if body or method in ("POST", "PUT", "PATCH"):
                    connection.putheader("Content-Length", str(len(body)))
                connection.endheaders(body or None)
            response = connection.getresponse()
            data = response.read()
            return Answer(response.status, response.headers, data, time.monotonic() - started)
        finally:
            connection.close()


def problems(answer: Answer) -> list[str]:
    """Everything wrong with an answer to a fuzzed request (empty when it is a 2xx or a named 4xx)."""
    found = []
    if answer.elapsed >= MAX_SECONDS:
        found.append(f"took {answer.elapsed:.1f}s")
    headers = answer.headers
    if 200 <= answer.status < 300:
        if (headers.get("content-type") or "").startswith("application/vnd.amazon.eventstream"):
            stream = EventStreamBuffer()
            stream.add_data(answer.data)
            try:
                for message in stream:
                    kind = message.headers.get(":message-type")
                    if kind == "exception" and message.headers.get(":exception-type") == "internalServerException":
                        found.append(f"internal error mid-stream: {message.payload[:300]!r}")
                    elif kind not in ("event", "exception"):
                        found.append(f"event stream message of type {kind!r}")
            except Exception as exc:  # any decoding failure is the finding
                found.append(f"undecodable event stream: {exc!r}")
        else:
            try:
                json.loads(answer.data)
            except ValueError:
                found.append("2xx body is not JSON")
        return found
    if answer.status not in ERROR_STATUSES:
        found.append(f"status {answer.status}")
    try:
        document = json.loads(answer.data)
    except ValueError:
        return [*found, "error body is not JSON"]
    if not isinstance(document, dict):
        return [*found, "error body is not a JSON object"]
    code, message = document.get("__type"), document.get("message")
    if not isinstance(code, str) or not re.fullmatch(r"[A-Z][A-Za-z]*(Exception|Error)", code):
        found.append(f"__type {code!r} is not an error name")
    if not isinstance(message, str):
        found.append("no message")
    if headers.get("x-amzn-ErrorType") != code:
        found.append(f"x-amzn-ErrorType {headers.get('x-amzn-ErrorType')!r} != __type {code!r}")
    if not headers.get("x-amzn-RequestId"):
        found.append("no x-amzn-RequestId")
    return found


def check(door: Door, case: Case, answer: Answer) -> None:
    if currently_in_test_context():
        note(f"{case.operation}: {case.method} {door.url_path(case)[:300]} headers={case.headers!r}"[:2000])
        note(f"body: {door.body(case)[:400]!r}")
    trouble = problems(answer)
    assert not trouble, f"{case.operation} {case.method} {door.url_path(case)[:200]}: {trouble}; {answer.describe()}"


# -- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def door(server, tiny_model) -> Door:
    return Door(server, tiny_model)


def _iam(door: Door, action: str, body: dict) -> Answer:
    return door.send(Case("POST", iam_api.PREFIX + action, body=Json(body)))


@pytest.fixture
def iam_door(door):
    """The door with an access key of FUZZ_USER; every principal the fuzz creates is deleted afterwards."""
    before = {kind: set(json.loads(_iam(door, f"List{kind}s", {}).data)[f"{kind}s"]) for kind in ("User", "Role")}
    for action, body in (("CreateUser", {"UserName": FUZZ_USER}), ("CreateRole", {"RoleName": FUZZ_ROLE})):
        answer = _iam(door, action, body)
        assert answer.status == 200, answer.describe()
    key = json.loads(_iam(door, "CreateAccessKey", {"UserName": FUZZ_USER}).data)["AccessKeyId"]
    yield Door(door.server, door.values[TINY], key)
    for kind in ("User", "Role"):
        for arn in set(json.loads(_iam(door, f"List{kind}s", {}).data)[f"{kind}s"]) - before[kind]:
            answer = _iam(door, f"Delete{kind}", {f"{kind}Name": arn.rsplit("/", 1)[1]})
            assert answer.status == 200, answer.describe()


# -- the properties -------------------------------------------------------------------------------

@settings(max_examples=150, **FUZZ_SETTINGS)
@given(case=operation_cases(CONTROL_OPS))
def test_control_plane_answers_fuzz_with_named_errors(door, case):
    check(door, case, door.send(case))


@settings(max_examples=150, **FUZZ_SETTINGS)
@given(case=operation_cases(RUNTIME_OPS))
def test_runtime_answers_fuzz_with_named_errors(door, case):
    check(door, case, door.send(case))


@settings(max_examples=150, **FUZZ_SETTINGS)
@given(case=iam_cases())
def test_iam_api_answers_fuzz_with_named_errors(iam_door, case):
    check(iam_door, case, iam_door.send(case))


def _replace_signature(value: str):
    def mutate(headers: dict[str, str]) -> None:
        authorization = headers["Authorization"]
        headers["Authorization"] = authorization[:authorization.index("Signature=")] + "Signature=" + value
    return mutate


def _set_header(name: str, value: str):
    return lambda headers: headers.update({name: value})


auth_tokens = st.text(st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_characters=",\x7f"),
                      min_size=1, max_size=80)
auth_variants = st.one_of(
    st.sampled_from(["none", "wrong-secret", "unknown-key"]).map(lambda sign: (sign, None)),
    # Signed by the root key, then one part of the signature made wrong.
    auth_tokens.map(lambda v: ("root", _replace_signature(v))),
    header_text.map(lambda v: ("root", _set_header("Authorization", v))),
    header_text.map(lambda v: ("root", _set_header("Authorization", "AWS4-HMAC-SHA256 " + v))),
    header_text.map(lambda v: ("root", _set_header("Authorization", "Bearer " + v))),
    header_text.map(lambda v: ("root", _set_header("X-Amz-Date", v))),
    st.sampled_from(["20000101T000000Z", "99991231T235959Z"]).map(lambda v: ("root", _set_header("X-Amz-Date", v))),
    st.just(("root", _set_header("X-Amz-Content-SHA256", "0" * 64))),
)


@settings(max_examples=80, **FUZZ_SETTINGS)
@given(case=any_case, variant=auth_variants)
def test_unsigned_and_badly_signed_fuzz_is_refused_with_403(iam_door, case, variant):
    door, (sign, mutate) = iam_door, variant  # iam_door: an IAM request that does get in is cleaned up after
    answer = door.send(case, sign=sign, mutate=mutate)
    check(door, case, answer)
    # A request signed by a real key whose signature part is valid may pass; anything else is a 403.
    if 200 <= answer.status < 300 or answer.status == 404:
        assert sign == "root", answer.describe()
        return
    body = json.loads(answer.data)
    if body["__type"] in AUTH_ERRORS:
        assert answer.status == 403, answer.describe()
    else:  # signed well enough to get in: then the operation's own named error
        assert sign == "root" and answer.status in ERROR_STATUSES, answer.describe()


@pytest.mark.parametrize("sign, expected", [
    ("none", "MissingAuthenticationTokenException"),
    ("wrong-secret", "InvalidSignatureException"),
    ("unknown-key", "UnrecognizedClientException"),
])
def test_each_way_of_signing_wrong_has_its_name(door, sign, expected):
    for case in (Case("GET", "/foundation-models", query="byProvider=%00"),
                 Case("POST", "/model/{modelId}/converse", {"modelId": TINY}, body=b"\xff{"),
                 Case("POST", iam_api.PREFIX + "CreateUser", body=Json({"UserName": "\ud800"}))):
        answer = door.send(case, sign=sign)
        assert answer.status == 403, answer.describe()
        assert json.loads(answer.data)["__type"] == expected == answer.headers["x-amzn-ErrorType"]


# -- known crashers: each a minimal request the fuzz found answering 500 ----------------------------

KNOWN = [
    pytest.param(Case("POST", "/model/{modelId}/invoke", {"modelId": TINY}, body=b"[" * 100_000),
                 id="invoke-deeply-nested-body"),
    pytest.param(Case("POST", "/model/{modelId}/invoke", {"modelId": TINY},
                      body=Json({"prompt": "\ud800", "max_gen_len": 2})), id="invoke-lone-surrogate-prompt"),
    pytest.param(Case("POST", "/model/{modelId}/invoke", {"modelId": "nope"},
                      headers={"X-Amzn-Bedrock-Request-Metadata": '{"team": "fuzz"}'}, body=Json({})),
                 id="invoke-request-metadata-header"),
    pytest.param(Case("POST", "/model/{modelId}/converse", {"modelId": TINY},
                      body=Json({"messages": [{"role": "user", "content": [{"text": "\ud800"}]}],
                                 "inferenceConfig": {"maxTokens": 2}})), id="converse-lone-surrogate"),
    pytest.param(Case("POST", "/model/{modelId}/converse-stream", {"modelId": TINY},
                      body=Json({"messages": [{"role": "user", "content": [{"text": "hi"}]}],
                                 "system": [{"text": "\udfff"}], "inferenceConfig": {"maxTokens": 2}})),
                 id="converse-stream-lone-surrogate-system"),
    pytest.param(Case("POST", "/model/{modelId}/count-tokens", {"modelId": TINY},
                      body=Json({"input": {"converse": {"messages": [{"role": "user",
                                                                      "content": [{"text": "\ud800"}]}]}}})),
                 id="count-tokens-lone-surrogate"),
    pytest.param(Case("PUT", "/logging/modelinvocations",
                      body=Json({"loggingConfig": {"s3Config": {"bucketName": "abc", "keyPrefix": "\ud800"}}})),
                 id="logging-key-prefix-lone-surrogate"),
    pytest.param(Case("POST", iam_api.PREFIX + "CreateUser", body=b"[" * 100_000), id="iam-deeply-nested-body"),
    pytest.param(Case("POST", iam_api.PREFIX + "CreateRole",
                      body=Json({"RoleName": "fuzz-role", "AssumeRolePolicyDocument": "[" * 100_000})),
                 id="iam-deeply-nested-trust-policy"),
    pytest.param(Case("POST", iam_api.PREFIX + "DeleteUser", body=Json({"UserName": "\ud800"})),
                 id="iam-delete-user-lone-surrogate"),
    pytest.param(Case("POST", iam_api.PREFIX + "DeleteUserPolicy",
                      body=Json({"UserName": "fuzz-user", "PolicyName": "\ud800"})),
                 id="iam-delete-policy-lone-surrogate"),
    pytest.param(Case("POST", iam_api.PREFIX + "DeleteAccessKey", body=Json({"AccessKeyId": "\ud800"})),
                 id="iam-delete-key-lone-surrogate"),
]


@pytest.mark.parametrize("case", KNOWN)
def test_known_crashers_answer_named_errors(door, case):
    check(door, case, door.send(case))


@pytest.mark.parametrize("name, value", [("Signature", "\u00e9" * 64), ("X-Amz-Content-SHA256", "\u00e9")],
                         ids=["non-ascii-signature", "non-ascii-content-sha256"])
def test_non_ascii_signature_parts_are_invalid_signatures(door, name, value):
    case = Case("GET", "/foundation-models")
    if name == "Signature":
        answer = door.send(case, mutate=_replace_signature(value))
    else:  # signed over, so the server compares it with the body's hash
        answer = door.send(replace(case, headers={name: value}))
    check(door, case, answer)
    assert answer.status == 403 and json.loads(answer.data)["__type"] == "InvalidSignatureException"


# -- the body size limit --------------------------------------------------------------------------

LIMIT = 1000


@pytest.fixture(scope="module")
def small_door(tmp_path_factory):
    running = start_server(tmp_path_factory.mktemp("outcrop-small-limit"), {"OUTCROP_MAX_REQUEST_BYTES": str(LIMIT)})
    yield Door(running)
    stop_server(running)


def _refused_as_too_large(answer: Answer) -> None:
    assert not problems(answer), answer.describe()
    body = json.loads(answer.data)
    assert answer.status in (400, 413) and body["__type"] in ("ValidationException", "RequestEntityTooLargeException")
    assert "limit" in body["message"], body


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("sign", ["root", "none"])
@pytest.mark.parametrize("path", ["/model/nope/converse", "/model/nope/invoke", iam_api.PREFIX + "CreateUser"])
def test_body_over_the_limit_is_refused_before_parsing(small_door, path, sign, chunked):
    garbage = b"\xff{[" * (2 * LIMIT // 3)  # 2,000 bytes that no parser would take
    answer = small_door.send_raw("POST", path, garbage, {}, sign=sign, chunked=chunked)
    _refused_as_too_large(answer)


def test_body_at_the_limit_is_parsed(small_door):
    answer = small_door.send_raw("POST", "/model/nope/converse", b"\xff" * LIMIT, {})
    assert answer.status == 400 and json.loads(answer.data)["__type"] == "SerializationException", answer.describe()


def test_declared_oversize_body_is_refused_without_waiting_for_it(small_door):
    """Content-Length says 1 GB and nothing follows: the answer comes at once, not after a read timeout."""
    url = urllib.parse.urlsplit(small_door.server.endpoint)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    started = time.monotonic()
    try:
        connection.putrequest("POST", "/model/nope/converse", skip_accept_encoding=True)
        connection.putheader("Content-Length", str(10**9))
        connection.endheaders()
        response = connection.getresponse()
        answer = Answer(response.status, response.headers, response.read(), time.monotonic() - started)
    finally:
        connection.close()
    _refused_as_too_large(answer)
    assert answer.elapsed < 5
