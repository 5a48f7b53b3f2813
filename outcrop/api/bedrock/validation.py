"""Server-side validation of a parsed Bedrock request against its botocore input shape.

boto3 checks only required members, types and `min` before sending, and other clients (curl, the AWS
SDKs for other languages, clients built from an older or newer model) may check less, so the server
enforces the whole model itself and answers the way AWS does: a `ValidationException` whose message
lists each violation in the AWS wording that users search for and recognise.

Message conventions (AWS's, where AWS has one; ours, documented, where it has none):

* One violation reads ``Value 'abc' at 'byProvider' failed to satisfy constraint: <phrase>``; several
  read ``N validation errors detected: <one>; <two>``. A missing member is ``Value null at ...``.
* Paths are member names joined by ``.``. A list element is ``<list>.<i>.member`` with ``i`` counted
  from 1, so the role of the first message of a Converse request is ``messages.1.member.role`` and a
  nested list reads ``messages.1.member.content.2.member.image.format``.
* A list of scalars is reported once for the list, as AWS does:
  ``Value '[a, b]' at 'names' failed to satisfy constraint: Member must satisfy constraint: [<every
  constraint of the element shape>]``. Maps likewise use ``Map keys must satisfy constraint: [...]``
  and ``Map value must satisfy constraint: [...]`` at the map's path. A structure or list inside a map
  (AWS has no public example) is walked under ``<map>.<key>``.
* Values render the way Java's ``toString`` would (``[a, b]``, ``{k=v}``, ``true``); blobs render as
  AWS renders them, ``java.nio.HeapByteBuffer[pos=0 lim=N cap=N]``, so their bytes never appear.
  Anything under a `sensitive` trait renders as ``'***'`` (inside a rendered structure, the
  sensitive member alone; in a path, a sensitive map's key becomes ``***``).
* A wrong JSON type (AWS would answer SerializationException) is ``Member must be of type integer``;
  a union with zero or several members set is ``Member must have exactly one member set``; input
  nested deeper than `MAX_DEPTH` is ``Member must have nesting depth less than or equal to 64``.

Bounded work: at most `MAX_ERRORS` violations are collected (the walk stops there and the count in
the message is the number shown), rendered values are truncated to `MAX_VALUE_CHARS`, nesting is cut
at `MAX_DEPTH`, and all regular-expression matching in one request shares `PATTERN_BUDGET_S` seconds;
a pattern that cannot finish in what is left is skipped rather than failing a possibly valid request.

Known-bad patterns: a few patterns in botocore's published models are wrong as written (a typo that,
read literally, rejects every well-formed value, which the real service plainly accepts). They are
listed in `PATTERN_OVERRIDES` with the regular expression the service evidently enforces, and the
corrected one is what is checked and what a violation message quotes. Each entry says where the
pattern is used and what is wrong with it; an entry that botocore has since fixed is dead but harmless
(`tests/unit/api/test_botocore_gaps.py` reports it).
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import email.utils
import functools
import logging
import math
import re
import time
from typing import Any

import regex
from botocore.model import Shape

from outcrop.errors import ValidationException

__all__ = [
    "MAX_DEPTH",
    "MAX_ERRORS",
    "PATTERN_OVERRIDES",
    "coerce_scalar",
    "compile_pattern",
    "effective_pattern",
    "validate_input",
    "validation_error",
]

log = logging.getLogger("outcrop.api.validation")

#: Violations reported per request; beyond this the walk stops (AWS lists them all, but a hostile
#: body could otherwise produce a megabyte of message).
MAX_ERRORS = 10
#: Containers (structures, lists, maps) nested deeper than this are refused instead of walked;
#: real Bedrock requests, recursive filters included, stay far below it.
MAX_DEPTH = 64
#: Rendered values and paths longer than this are cut and end in "..." (AWS prints them whole).
MAX_VALUE_CHARS = 256
MAX_PATH_CHARS = 512
#: Seconds of regular-expression matching one request may spend in total.
PATTERN_BUDGET_S = 0.1

_INT_RANGES = {"integer": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_NUMERIC = frozenset({"integer", "long", "float", "double"})
_CONTAINERS = frozenset({"structure", "list", "map"})
_SURROGATES = re.compile("[\ud800-\udfff]")


# bedrock-agent's TaggableResourcesArn (the resourceArn of TagResource, UntagResource and
# ListTagsForResource): `/d{12}` where the account id `\d{12}` was meant, and `:/d+` for a prompt
# version's `:\d+`. Read literally, no agent, alias, knowledge base, flow or prompt ARN matches.
_AGENT_TAGGABLE_ARN = (
    ".*(^arn:aws:bedrock:[a-zA-Z0-9-]+:/d{12}:(agent|agent-alias|knowledge-base|flow|prompt)/[A-Z0-9]{10}"
    "(?:/[A-Z0-9]{10})?$|^arn:aws:bedrock:[a-zA-Z0-9-]+:/d{12}:flow/([A-Z0-9]{10})/alias/([A-Z0-9]{10})$"
    "|^arn:aws:bedrock:[a-zA-Z0-9-]+:/d{12}:prompt/([A-Z0-9]{10})?(?::/d+)?$"
    "|^arn:aws(-cn|-us-gov|-eusc|-iso(-[b-f])?)?:bedrock:[a-zA-Z0-9-]+:[0-9]{12}:retrieval-instruction/[a-z0-9]{10}$).*"
)

#: Pattern as botocore's model spells it -> the pattern actually enforced (see the module docstring).
#: Keyed by the exact pattern text, so the fix applies wherever a model reuses the pattern, and a
#: pattern botocore corrects (or changes) simply stops matching its entry.
PATTERN_OVERRIDES: dict[str, str] = {
    _AGENT_TAGGABLE_ARN: _AGENT_TAGGABLE_ARN.replace(":/d{12}:", r":\d{12}:").replace("(?::/d+)?", r"(?::\d+)?"),
}


def effective_pattern(pattern: str) -> str:
    """The pattern to enforce for a model's `pattern`: its correction if it is a known-bad one."""
    return PATTERN_OVERRIDES.get(pattern, pattern)


class _Enough(Exception):
    """Unwinds the walk once `MAX_ERRORS` violations are in hand."""


# --------------------------------------------------------------------------------------------------
# Public API


def validate_input(shape: Shape | None, params: dict) -> None:
    """Raise ValidationException if `params` breaks any constraint of `shape`, recursively.

    Unknown members are ignored: clients newer than our model may send members we do not know.
    Event-stream members are skipped: their events are validated by whoever decodes the stream.
    """
    if shape is None:
        return
    if params is None:  # a request with no body and no bound members
        params = {}
    walk = _Walk()
    try:
        walk.check(shape, params, "", 0, False)
    except _Enough:
        pass
    except RecursionError:  # pragma: no cover - MAX_DEPTH keeps the walk far from the limit
        walk.errors.append(_violation("", None, True, f"Member must have nesting depth less than or "
                                                      f"equal to {MAX_DEPTH}"))
    if walk.errors:
        raise ValidationException(_message(walk.errors))


def coerce_scalar(shape: Shape, raw: str, location: str) -> object:
    """Turn a query-string or header value into the Python type of `shape`, or raise ValidationException.

    Only the wire syntax is checked here; constraints (range, enum, pattern) are left to
    `validate_input`, which the caller runs on the assembled request so that all violations of one
    request are reported together. List members are coerced one item at a time by the caller.
    """
    type_name = shape.type_name
    if type_name in _CONTAINERS:
        raise TypeError(f"coerce_scalar takes scalar shapes, not {type_name} ({shape.name})")
    if type_name == "string":
        return raw
    try:
        if type_name in ("integer", "long"):
            # int() would also take "1_000", non-ASCII digits and 5000-digit strings; AWS takes none.
            if len(raw) <= 21 and _INT_SYNTAX.fullmatch(raw):
                number = int(raw)
                low, high = _INT_RANGES[type_name]
                if low <= number <= high:
                    return number
        elif type_name in ("float", "double"):
            if raw in _FLOAT_SPECIALS:
                return _FLOAT_SPECIALS[raw]
            if len(raw) <= 400 and _FLOAT_SYNTAX.fullmatch(raw):
                return float(raw)
        elif type_name == "boolean":
            if raw in ("true", "false"):
                return raw == "true"
        elif type_name == "timestamp":
            parsed = _parse_timestamp(raw)
            if parsed is not None:
                return parsed
        elif type_name == "blob":
            return base64.b64decode(raw, validate=True)
    except (ValueError, OverflowError, OSError, TypeError, binascii.Error):
        pass
    sensitive = bool(shape.metadata.get("sensitive"))
    raise validation_error(location, raw, f"Member must be of type {type_name}", sensitive=sensitive)


def validation_error(
    path: str, value: Any, constraint: str, *, sensitive: bool = False
) -> ValidationException:
    """One violation in AWS's wording, for request parsing that finds a problem before validation does."""
    return ValidationException(_message([_violation(path, value, sensitive, constraint)]))


@functools.lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> regex.Pattern | None:
    """The model's Java-flavoured `pattern`, compiled once; None when it cannot be compiled.

    AWS evaluates patterns with java.util.regex, so where the `regex` module's defaults differ the
    pattern is rewritten first (see `_java_to_python`); an untranslatable pattern is compiled as
    written, and one that still does not compile is skipped by the caller rather than crashing.
    """
    for candidate in (_java_to_python(pattern), pattern):
        if candidate is None:
            continue
        try:
            return regex.compile(candidate)
        except (regex.error, ValueError, TypeError, OverflowError, RecursionError):
            continue
    log.warning("model pattern does not compile, not enforced: %r", pattern)
    return None


# --------------------------------------------------------------------------------------------------
# The walk


class _Walk:
    __slots__ = ("errors", "pattern_deadline", "too_deep")

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.too_deep = False
        self.pattern_deadline = time.monotonic() + PATTERN_BUDGET_S

    def fail(
        self, path: str, value: Any, sensitive: bool, constraint: str, shape: Shape | None = None
    ) -> None:
        self.errors.append(_violation(path, value, sensitive, constraint, shape))
        if len(self.errors) >= MAX_ERRORS:
            raise _Enough

    def check(self, shape: Shape, value: Any, path: str, depth: int, sensitive: bool) -> None:
        """Check a non-null `value` at `path`; the caller has already dealt with null."""
        meta = shape.metadata
        if meta.get("document"):
            return
        sensitive = sensitive or bool(meta.get("sensitive"))
        type_name = shape.type_name
        if type_name in _CONTAINERS:
            if not _is_type(type_name, value):
                self.fail(path, value, sensitive, f"Member must be of type {type_name}", shape)
                return
            if depth >= MAX_DEPTH:
                if not self.too_deep:  # once per request: every sibling below the cut would repeat it
                    self.too_deep = True
                    self.fail(path, value, sensitive,
                              f"Member must have nesting depth less than or equal to {MAX_DEPTH}", shape)
                return
            if type_name == "structure":
                self.check_structure(shape, value, path, depth + 1, sensitive)
            elif type_name == "list":
                self.check_list(shape, value, path, depth + 1, sensitive)
            else:
                self.check_map(shape, value, path, depth + 1, sensitive)
            return
        if not _is_type(type_name, value):
            self.fail(path, value, sensitive, f"Member must be of type {type_name}")
            return
        for phrase in self.scalar_violations(shape, value):
            self.fail(path, value, sensitive, phrase)

    def check_structure(self, shape: Shape, value: dict, path: str, depth: int, sensitive: bool) -> None:
        members = shape.members
        if shape.metadata.get("union"):
            set_count = sum(1 for name in members if value.get(name) is not None)
            if set_count != 1:
                self.fail(path, value, sensitive, "Member must have exactly one member set", shape)
        required = shape.metadata.get("required", ())
        for name, member in members.items():
            if member.serialization.get("eventstream"):
                continue
            child = value.get(name)
            child_path = f"{path}.{name}" if path else name
            if child is None:
                if name in required:
                    self.fail(child_path, None, sensitive, "Member must not be null")
                continue
            self.check(member, child, child_path, depth, sensitive)

    def check_list(self, shape: Shape, value: list, path: str, depth: int, sensitive: bool) -> None:
        for phrase in _length_violations(shape.metadata, len(value), "length"):
            self.fail(path, value, sensitive, phrase, shape)
        element = shape.member
        element_sensitive = sensitive or bool(element.metadata.get("sensitive"))
        if _is_scalar(element):
            aggregate_failed = False
            for index, item in enumerate(value, 1):
                if item is None or not _is_type(element.type_name, item):
                    self.element_type(element, item, f"{path}.{index}.member", element_sensitive)
                elif not aggregate_failed and self.scalar_violations(element, item):
                    aggregate_failed = True
            if aggregate_failed:
                phrases = ", ".join(_constraint_phrases(element))
                self.fail(path, value, element_sensitive,
                          f"Member must satisfy constraint: [{phrases}]", shape)
            return
        for index, item in enumerate(value, 1):
            item_path = f"{path}.{index}.member"
            if item is None:
                self.fail(item_path, None, element_sensitive, "Member must not be null")
            else:
                self.check(element, item, item_path, depth, sensitive)

    def check_map(self, shape: Shape, value: dict, path: str, depth: int, sensitive: bool) -> None:
        for phrase in _length_violations(shape.metadata, len(value), "length"):
            self.fail(path, value, sensitive, phrase, shape)
        key_shape, value_shape = shape.key, shape.value
        key_sensitive = sensitive or bool(key_shape.metadata.get("sensitive"))
        value_sensitive = sensitive or bool(value_shape.metadata.get("sensitive"))
        scalar_values = _is_scalar(value_shape)
        keys_failed = values_failed = False
        for key, item in value.items():
            if keys_failed:
                pass
            elif not isinstance(key, str):
                self.fail(path, value, key_sensitive, "Map keys must satisfy constraint: "
                                                      "[Member must be of type string]", shape)
                keys_failed = True
            elif self.scalar_violations(key_shape, key):
                phrases = ", ".join(_constraint_phrases(key_shape))
                self.fail(path, value, key_sensitive, f"Map keys must satisfy constraint: [{phrases}]", shape)
                keys_failed = True
            if scalar_values:
                if item is None or not _is_type(value_shape.type_name, item):
                    self.element_type(value_shape, item, _map_path(path, key, key_sensitive), value_sensitive)
                elif not values_failed and self.scalar_violations(value_shape, item):
                    phrases = ", ".join(_constraint_phrases(value_shape))
                    self.fail(path, value, value_sensitive,
                              f"Map value must satisfy constraint: [{phrases}]", shape)
                    values_failed = True
            elif item is None:
                self.fail(_map_path(path, key, key_sensitive), None, value_sensitive,
                          "Member must not be null")
            else:
                self.check(value_shape, item, _map_path(path, key, key_sensitive), depth, sensitive)

    def element_type(self, shape: Shape, item: Any, path: str, sensitive: bool) -> None:
        if item is None:
            self.fail(path, None, sensitive, "Member must not be null")
        else:
            self.fail(path, item, sensitive, f"Member must be of type {shape.type_name}")

    def scalar_violations(self, shape: Shape, value: Any) -> list[str]:
        """The phrases `value` (already of the right type) breaks, in the order AWS lists them."""
        meta = shape.metadata
        type_name = shape.type_name
        if type_name in _NUMERIC:
            return _length_violations(meta, value, "value")
        if type_name == "blob":
            return _length_violations(meta, len(value), "length")
        if type_name != "string":
            return []
        found = _length_violations(meta, len(value), "length")
        enum = meta.get("enum")
        if enum and value not in enum:
            found.append(_enum_phrase(enum))
        pattern = meta.get("pattern")
        if pattern is not None:
            pattern = effective_pattern(pattern)
        if pattern is not None and not self.matches(pattern, value):
            found.append(f"Member must satisfy regular expression pattern: {pattern}")
        return found

    def matches(self, pattern: str, value: str) -> bool:
        compiled = compile_pattern(pattern)
        if compiled is None:
            return True
        remaining = self.pattern_deadline - time.monotonic()
        if remaining <= 0:
            return True
        try:
            return compiled.fullmatch(value, timeout=remaining) is not None
        except TimeoutError:
            log.warning("pattern check abandoned after the request's budget: %r", pattern)
            return True


def _map_path(path: str, key: Any, sensitive: bool) -> str:
    if sensitive:
        return f"{path}.***"
    return f"{path}.{_clip(key, 64) if isinstance(key, str) else _render(key)}"


def _is_scalar(shape: Shape) -> bool:
    return shape.type_name not in _CONTAINERS and not shape.metadata.get("document")


def _is_type(type_name: str, value: Any) -> bool:
    if type_name == "string":
        return isinstance(value, str)
    if type_name in ("integer", "long"):
        if type(value) is bool or not isinstance(value, int):
            return False
        low, high = _INT_RANGES[type_name]
        return low <= value <= high
    if type_name in ("float", "double"):
        return type(value) is not bool and isinstance(value, (int, float))
    if type_name == "boolean":
        return isinstance(value, bool)
    if type_name == "structure":
        return isinstance(value, dict)
    if type_name == "list":
        return isinstance(value, (list, tuple))
    if type_name == "map":
        return isinstance(value, dict)
    if type_name == "blob":
        return isinstance(value, (bytes, bytearray, memoryview))
    if type_name == "timestamp":
        return isinstance(value, _dt.datetime)
    return True


# --------------------------------------------------------------------------------------------------
# Constraint phrases, in Coral's words


def _length_violations(meta: dict, measured: Any, kind: str) -> list[str]:
    """`kind` is "length" (strings, blobs, lists, maps) or "value" (numbers).

    Written as `not (measured >= low)` so that NaN breaks a numeric range, as it should.
    """
    found = []
    high, low = meta.get("max"), meta.get("min")
    if high is not None and not measured <= high:
        found.append(f"Member must have {kind} less than or equal to {_number(high)}")
    if low is not None and not measured >= low:
        found.append(f"Member must have {kind} greater than or equal to {_number(low)}")
    return found


def _constraint_phrases(shape: Shape) -> list[str]:
    """All constraints of an element shape, failing or not, as AWS lists them inside `[...]`."""
    meta = shape.metadata
    kind = "value" if shape.type_name in _NUMERIC else "length"
    phrases = []
    if meta.get("max") is not None:
        phrases.append(f"Member must have {kind} less than or equal to {_number(meta['max'])}")
    if meta.get("min") is not None:
        phrases.append(f"Member must have {kind} greater than or equal to {_number(meta['min'])}")
    if meta.get("enum"):
        phrases.append(_enum_phrase(meta["enum"]))
    if meta.get("pattern") is not None:
        phrases.append(f"Member must satisfy regular expression pattern: {effective_pattern(meta['pattern'])}")
    return phrases


def _enum_phrase(enum: list[str]) -> str:
    return f"Member must satisfy enum value set: [{', '.join(enum)}]"


def _number(bound: Any) -> str:
    if isinstance(bound, float) and bound.is_integer():
        return str(int(bound))
    return str(bound)


# --------------------------------------------------------------------------------------------------
# Messages


def _message(errors: list[str]) -> str:
    count = len(errors)
    noun = "error" if count == 1 else "errors"
    return f"{count} validation {noun} detected: " + "; ".join(errors)


def _violation(path: str, value: Any, sensitive: bool, constraint: str, shape: Shape | None = None) -> str:
    if value is None:
        shown = "null"
    elif sensitive:
        shown = "'***'"
    else:
        shown = f"'{_render(value, shape)}'"
    where = f" at '{_SURROGATES.sub(chr(0xFFFD), _clip(path, MAX_PATH_CHARS))}'" if path else ""
    return f"Value {shown}{where} failed to satisfy constraint: {constraint}"


def _render(value: Any, shape: Shape | None = None) -> str:
    """Java-style toString of a JSON-like value, cut at MAX_VALUE_CHARS (long values are truncated).

    With the value's shape, members under a `sensitive` trait print as *** (as the AWS SDK for Java's
    toString redacts them), so a union or length error on a structure cannot leak a nested secret.
    """
    parts: list[str] = []
    _render_into(value, parts, [MAX_VALUE_CHARS + 1], 0, shape)
    text = "".join(parts)
    text = _clip(text, MAX_VALUE_CHARS)
    return _SURROGATES.sub("\ufffd", text)


def _render_into(value: Any, parts: list[str], budget: list[int], depth: int, shape: Shape | None) -> None:
    """Stops once `budget[0]` characters are spent, so a huge value costs no more than a small one."""
    if budget[0] <= 0:
        return
    if shape is not None and shape.metadata.get("document"):
        shape = None
    if shape is not None and shape.metadata.get("sensitive"):
        piece = "***"
    elif isinstance(value, str):
        piece = value[: budget[0]]
    elif value is None:
        piece = "null"
    elif isinstance(value, bool):
        piece = "true" if value else "false"
    elif isinstance(value, int):
        # str() refuses ints above 4300 digits; such a value is never meant to be read anyway.
        piece = str(value) if value.bit_length() < 4000 else f"<{value.bit_length()}-bit integer>"
    elif isinstance(value, float):
        piece = "NaN" if math.isnan(value) else ("Infinity" if value == math.inf else
                                                 "-Infinity" if value == -math.inf else repr(value))
    elif isinstance(value, (bytes, bytearray, memoryview)):
        size = value.nbytes if isinstance(value, memoryview) else len(value)
        piece = f"java.nio.HeapByteBuffer[pos=0 lim={size} cap={size}]"
    elif isinstance(value, _dt.datetime):
        piece = value.isoformat()
    elif isinstance(value, (list, tuple, dict)):
        if depth >= 8:
            piece = "..."
        else:
            dict_like = isinstance(value, dict)
            parts.append("{" if dict_like else "[")
            budget[0] -= 1
            items = value.items() if dict_like else value
            for index, item in enumerate(items):
                if budget[0] <= 0:
                    return
                if index:
                    parts.append(", ")
                    budget[0] -= 2
                if dict_like:
                    key_shape, value_shape = _entry_shapes(shape, item[0])
                    _render_into(item[0], parts, budget, depth + 1, key_shape)
                    parts.append("=")
                    budget[0] -= 1
                    _render_into(item[1], parts, budget, depth + 1, value_shape)
                else:
                    element = shape.member if shape is not None and shape.type_name == "list" else None
                    _render_into(item, parts, budget, depth + 1, element)
            piece = "}" if dict_like else "]"
    else:
        piece = type(value).__name__
    parts.append(piece)
    budget[0] -= len(piece)


def _entry_shapes(shape: Shape | None, key: Any) -> tuple[Shape | None, Shape | None]:
    """Shapes of one dict entry's key and value, when the dict is the structure or map it should be."""
    if shape is None:
        return None, None
    if shape.type_name == "map":
        return shape.key, shape.value
    if shape.type_name == "structure" and isinstance(key, str):
        return None, shape.members.get(key)
    return None, None


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


# --------------------------------------------------------------------------------------------------
# Wire syntax for coerce_scalar

_INT_SYNTAX = re.compile(r"[+-]?[0-9]+")
_FLOAT_SYNTAX = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_FLOAT_SPECIALS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_EPOCH_SYNTAX = re.compile(r"[+-]?[0-9]{1,12}(?:\.[0-9]{1,9})?")
_ISO_SYNTAX = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[Tt ][0-9:.,+\-Zz]{2,40})?")


def _parse_timestamp(raw: str) -> _dt.datetime | None:
    """ISO 8601 (what botocore sends in query strings), epoch seconds, or an HTTP date (headers)."""
    if _EPOCH_SYNTAX.fullmatch(raw):
        return _dt.datetime.fromtimestamp(float(raw), tz=_dt.UTC)
    if _ISO_SYNTAX.fullmatch(raw):
        parsed = _dt.datetime.fromisoformat(raw)
    elif len(raw) <= 64 and raw[:1].isalpha():
        parsed = email.utils.parsedate_to_datetime(raw)
    else:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=_dt.UTC)


# --------------------------------------------------------------------------------------------------
# Java regular expressions on the `regex` module

# java.util.regex's `.` stops at every line terminator, not only "\n"; its \d \s \w are ASCII-only
# (without UNICODE_CHARACTER_CLASS), while `regex`'s are Unicode. regex.ASCII is no remedy: it also
# turns \p{L} ASCII-only, and the models use \p{L}, \p{M}, \p{C}.
_JAVA_DOT = r"[^\n\r\u0085\u2028\u2029]"
_SHORTHAND_OUTSIDE = {
    "d": "[0-9]", "D": "[^0-9]",
    "s": r"[ \t\n\x0B\f\r]", "S": r"[^ \t\n\x0B\f\r]",
    "w": "[a-zA-Z0-9_]", "W": "[^a-zA-Z0-9_]",
}
# Inside a class only the positive shorthands can be spelled out; a negated one (\S in `[\S\s]`) stays
# Unicode, which differs from Java only for exotic whitespace and digits.
_SHORTHAND_INSIDE = {"d": "0-9", "s": r" \t\n\x0B\f\r", "w": "a-zA-Z0-9_"}


def _java_to_python(pattern: str) -> str | None:
    """Rewrite the constructs whose meaning differs between Java and `regex`; None if unsure."""
    out: list[str] = []
    in_class = False
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "\\":
            if i + 1 >= n:
                return None
            nxt = pattern[i + 1]
            if nxt in "pP" and i + 2 < n and pattern[i + 2] == "{":
                end = pattern.find("}", i + 2)
                if end < 0:
                    return None
                out.append(pattern[i:end + 1])
                i = end + 1
                continue
            if nxt == "Q":
                end = pattern.find("\\E", i + 2)
                end = n if end < 0 else end
                literal = pattern[i + 2:end]
                out.append("".join("\\" + c if not c.isalnum() else c for c in literal) if in_class
                           else regex.escape(literal))
                i = end + 2
                continue
            table = _SHORTHAND_INSIDE if in_class else _SHORTHAND_OUTSIDE
            out.append(table.get(nxt, pattern[i:i + 2]))
            i += 2
            continue
        if in_class:
            if char == "[" or pattern.startswith("&&", i):
                return None  # Java class union/intersection: no faithful one-to-one rewrite
            if char == "]":
                in_class = False
            out.append(char)
            i += 1
            continue
        if char == "[":
            in_class = True
            out.append(char)
            i += 1
            if i < n and pattern[i] == "^":
                out.append("^")
                i += 1
            if i < n and pattern[i] == "]":  # a leading "]" is literal in `regex`; keep both in step
                out.append("\\]")
                i += 1
            continue
        out.append(_JAVA_DOT if char == "." else char)
        i += 1
    return None if in_class else "".join(out)
