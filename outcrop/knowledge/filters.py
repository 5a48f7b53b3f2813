"""Bedrock's RetrievalFilter as a Lance SQL predicate, and the layout of the metadata column it reads.

Retrieve and RetrieveAndGenerate take a `filter` (botocore's RetrievalFilter: one operator per level, andAll
and orAll nesting) that the vector store applies before the nearest neighbours are chosen. The store keeps
each chunk's metadata in one JSON column, and Lance filters JSON with `json_get_string/float/bool(col, key)`.
Those functions raise, failing the whole query, when the value under the key is of another type (a list for
json_get_string, a word for json_get_float); and nothing stops one document from having `year: 2020` and
another `year: "2020"`. JSONPath functions (json_extract, json_exists) never raise, but they parse the path
again for every row: measured at 100,000 rows, json_extract costs ~48 ms per condition, json_get_string ~13 ms.

So the column does not hold the attributes as given but under a key that names their type (`encode_metadata`):
`s:<key>` for a string, `n:<key>` for a number, `b:<key>` for a boolean, `l:<key>` for a list of strings (kept
whole, to give it back) and `j:<key>`, the same list as one string that SQL can search. Every key then has one
type in every row, every condition is a plain-key json_get_* (no raising, no path parsing), and the type checks
Bedrock implies (`greaterThan` on a number, `startsWith` on a string) come for free: a string attribute simply
has no `n:` key. `decode_metadata` gives the attributes back as they were.

Semantics (https://docs.aws.amazon.com/bedrock/latest/userguide/kb-test-config.html and the API reference):
equals matches an attribute of the value's own type with an equal value (numbers compare as numbers, 3 == 3.0;
a string "3" is not the number 3); greaterThan and the like compare numbers; in matches an attribute equal to
any member; startsWith a string with that prefix; listContains a list with that member; stringContains a string
with that substring or a list with a member that has it. notEquals and notIn are the negations, so they also
match documents that lack the key: bedrock-agent-runtime's RetrievalFilter documents exactly that for notEquals
("The key is not present in the document"); its notIn text says only "contain ... whose value isn't in the
list", and is read the same way, as `in`'s negation. andAll and orAll take 2 to 5 filters and nest up to 5
levels deep (the top filter is level 1).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from outcrop.errors import ValidationException

DEFAULT_PATH = "retrievalConfiguration.vectorSearchConfiguration.filter"

#: Type tags of the stored keys (see the module docstring).
STRING, NUMBER, BOOLEAN, LIST, LIST_TEXT = "s:", "n:", "b:", "l:", "j:"

#: A list's members in one string: `|m1|m2|`, each member with `%` and `|` percent-escaped, so a `|` is always a
#: boundary. An empty list is the empty string (`||` is the list of one empty string).
_SEPARATOR = "|"
_ESCAPES = {"%": "%25", "|": "%7C"}

COMPARISONS = {"greaterThan": ">", "greaterThanOrEquals": ">=", "lessThan": "<", "lessThanOrEquals": "<="}
ATTRIBUTE_OPERATORS = ("equals", "notEquals", *COMPARISONS, "in", "notIn", "startsWith", "listContains",
                       "stringContains")
GROUP_OPERATORS = ("andAll", "orAll")
OPERATORS = (*GROUP_OPERATORS, *ATTRIBUTE_OPERATORS)

#: andAll/orAll take 2 to 5 filters (botocore checks the 2), and filters nest at most 5 levels.
MIN_MEMBERS, MAX_MEMBERS, MAX_DEPTH = 2, 5, 5
#: botocore's FilterKey.
MAX_KEY_LENGTH = 100

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# -- the stored layout ----------------------------------------------------------------------------

def encode_metadata(metadata: Mapping[str, Any]) -> str:
    """The attributes as the metadata column stores them: JSON text, every key tagged with its value's type.

    Values are str, int/float (finite), bool or a list of str; None means absent. Anything else is the
    caller's mistake (the ingestion job's parser allows nothing else) and raises ValueError.
    """
    stored: dict[str, Any] = {}
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise ValueError(f"metadata key {key!r} is not a string")
        if value is None:
            continue
        if isinstance(value, bool):
            stored[BOOLEAN + key] = value
        elif isinstance(value, int | float):
            stored[NUMBER + key] = _stored_number(key, value)
        elif isinstance(value, str):
            stored[STRING + key] = value
        elif isinstance(value, list | tuple):
            if not all(isinstance(member, str) for member in value):
                raise ValueError(f"metadata {key!r}: a list must hold only strings")
            stored[LIST + key] = list(value)
            stored[LIST_TEXT + key] = _list_text(value)
        else:
            raise ValueError(f"metadata {key!r}: unsupported value of type {type(value).__name__}")
    # ensure_ascii=False: the column is UTF-8 anyway, and keeps non-ASCII text at its own size.
    return json.dumps(stored, ensure_ascii=False, separators=(",", ":"))


def decode_metadata(stored: str | bytes | Mapping[str, Any] | None) -> dict[str, Any]:
    """The attributes `encode_metadata` was given (its None values left out)."""
    if stored is None:
        return {}
    document = json.loads(stored) if isinstance(stored, str | bytes) else stored
    return {key[2:]: value for key, value in document.items() if key[:2] in (STRING, NUMBER, BOOLEAN, LIST)}


def _stored_number(key: str, value: int | float) -> int | float:
    try:
        as_float = float(value)
    except OverflowError:
        as_float = math.inf
    if not math.isfinite(as_float):
        raise ValueError(f"metadata {key!r}: {value} is not a finite number")
    if isinstance(value, int) and not -(2 ** 63) <= value < 2 ** 64:
        return as_float  # past JSONB's integers; filters compare numbers as float64 anyway
    # -0.0 would be stored as such, and Arrow orders -0.0 before 0.0 (total order): keep the one zero.
    return 0.0 if value == 0 and isinstance(value, float) else value


def _escape_member(member: str) -> str:
    return "".join(_ESCAPES.get(c, c) for c in member)


def _list_text(members: list[str] | tuple[str, ...]) -> str:
    if not members:
        return ""
    return _SEPARATOR + _SEPARATOR.join(_escape_member(m) for m in members) + _SEPARATOR


# -- RetrievalFilter -> SQL -----------------------------------------------------------------------

def to_sql(filter: dict, column: str = "metadata", path: str = DEFAULT_PATH) -> str:  # noqa: A002 (Bedrock's name)
    """A Lance SQL predicate over `column` (stored by encode_metadata) that keeps what `filter` keeps.

    Raises ValidationException naming the member at fault (`path` is the filter's place in the request).
    """
    if not _IDENTIFIER.fullmatch(column):
        raise ValueError(f"column {column!r} is not a plain SQL identifier")
    return _Translator(column).filter(filter, path, 1)


class _Translator:
    def __init__(self, column: str) -> None:
        self.column = column

    def filter(self, node: Any, path: str, depth: int) -> str:
        if not isinstance(node, Mapping):
            raise ValidationException(f"{path} must be an object with one of: {', '.join(OPERATORS)}")
        if depth > MAX_DEPTH:
            raise ValidationException(f"{path} is nested deeper than {MAX_DEPTH} levels of filters")
        unknown = [name for name in node if name not in OPERATORS]
        if unknown:
            raise ValidationException(f"{path}.{unknown[0]} is not a filter operator; use one of: "
                                      f"{', '.join(OPERATORS)}")
        # A member sent as JSON null is absent, as in AWS's JSON protocols.
        present = [name for name in node if node[name] is not None]
        if len(present) != 1:
            got = f"got {', '.join(present)}" if present else "got none"
            raise ValidationException(f"{path} must have exactly one of: {', '.join(OPERATORS)} ({got})")
        operator = present[0]
        member = f"{path}.{operator}"
        if operator in GROUP_OPERATORS:
            return self.group(operator, node[operator], member, depth)
        return self.attribute(operator, node[operator], member)

    def group(self, operator: str, members: Any, path: str, depth: int) -> str:
        if not isinstance(members, list):
            raise ValidationException(f"{path} must be a list of filters")
        if len(members) < MIN_MEMBERS:
            raise ValidationException(f"{path} must have at least {MIN_MEMBERS} members")
        if len(members) > MAX_MEMBERS:
            raise ValidationException(f"{path} must have at most {MAX_MEMBERS} members")
        joiner = " AND " if operator == "andAll" else " OR "
        return "(" + joiner.join(self.filter(m, f"{path}[{i}]", depth + 1) for i, m in enumerate(members)) + ")"

    def attribute(self, operator: str, attribute: Any, path: str) -> str:
        if not isinstance(attribute, Mapping):
            raise ValidationException(f"{path} must be an object with a key and a value")
        unknown = sorted(set(attribute) - {"key", "value"})
        if unknown:
            raise ValidationException(f"{path}.{unknown[0]} is not a member of a filter attribute (key, value)")
        key = attribute.get("key")
        if not isinstance(key, str):
            raise ValidationException(f"{path}.key must be a string")
        if not 1 <= len(key) <= MAX_KEY_LENGTH:
            raise ValidationException(f"{path}.key must be 1 to {MAX_KEY_LENGTH} characters long")
        if attribute.get("value") is None:
            raise ValidationException(f"{path}.value is required")
        value, where = attribute["value"], f"{path}.value"

        if operator in ("equals", "notEquals"):
            sql = self.equals(key, _scalar(value, where))
            return sql if operator == "equals" else _not(sql)
        if operator in COMPARISONS:
            return f"{self.get(NUMBER, key)} {COMPARISONS[operator]} {_number(value, where)}"
        if operator in ("in", "notIn"):
            if not isinstance(value, list):
                raise ValidationException(f"{where} must be a list")
            sql = self.one_of(key, [_scalar(v, f"{where}[{i}]") for i, v in enumerate(value)])
            return sql if operator == "in" else _not(sql)
        text = _string(value, where)
        if operator == "startsWith":
            return f"starts_with({self.get(STRING, key)}, {_literal(text)})"
        if operator == "listContains":
            # A whole member lies between two separators, and no escaped member holds a separator.
            return f"contains({self.get(LIST_TEXT, key)}, {_literal(_SEPARATOR + _escape_member(text) + _SEPARATOR)})"
        # stringContains: a string with the substring, or a list with a member that has it. In the list's text
        # the match must start inside a member, at a whole character: after a separator and whole escapes.
        member = r"\x{7c}(?:[^\x{25}\x{7c}]|\x{25}[0-9A-F]{2})*" + _regex_literal(_escape_member(text))
        return (f"(contains({self.get(STRING, key)}, {_literal(text)})"
                f" OR regexp_like({self.get(LIST_TEXT, key)}, {_literal(member)}))")

    def get(self, tag: str, key: str) -> str:
        function = {STRING: "json_get_string", NUMBER: "json_get_float", BOOLEAN: "json_get_bool",
                    LIST_TEXT: "json_get_string"}[tag]
        return f"{function}({self.column}, {_literal(tag + key)})"

    def equals(self, key: str, value: str | int | float | bool) -> str:
        return self.one_of(key, [value])

    def one_of(self, key: str, values: list[str | int | float | bool]) -> str:
        """The attribute equals one of `values`, each compared with the attribute of its own type."""
        strings = [v for v in values if isinstance(v, str)]
        booleans = [v for v in values if isinstance(v, bool)]
        numbers = [v for v in values if not isinstance(v, str | bool)]
        terms = []
        for tag, group, render in ((STRING, strings, _literal), (NUMBER, numbers, _number_literal),
                                   (BOOLEAN, booleans, _boolean_literal)):
            if len(group) == 1:
                terms.append(f"{self.get(tag, key)} = {render(group[0])}")
            elif group:
                terms.append(f"{self.get(tag, key)} IN ({', '.join(render(v) for v in group)})")
        if not terms:
            return "FALSE"  # `in` with an empty list matches nothing (and `notIn` everything)
        return terms[0] if len(terms) == 1 else "(" + " OR ".join(terms) + ")"


def _not(sql: str) -> str:
    # A missing key makes the condition NULL, and NOT NULL is NULL (not kept): IS NOT TRUE keeps those rows.
    return f"({sql}) IS NOT TRUE"


def _scalar(value: Any, where: str) -> str | int | float | bool:
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        _number(value, where)
        return value
    raise ValidationException(f"{where} must be a string, number or boolean")


def _number(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationException(f"{where} must be a number")
    try:
        as_float = float(value)
    except OverflowError:
        as_float = math.inf
    if not math.isfinite(as_float):
        raise ValidationException(f"{where} must be a finite number")
    return _number_literal(value)


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ValidationException(f"{where} must be a string")
    return value


def _literal(text: str) -> str:
    """A SQL string literal: the one escape is a doubled quote (Lance's SQL takes backslashes as they are)."""
    return "'" + text.replace("'", "''") + "'"


def _number_literal(value: int | float) -> str:
    # Compared as float64 (json_get_float); repr gives the shortest text that reads back as the same double,
    # e.g. 3.0, 1e+20, 1.5e-07. -0.0 is 0.0, as the stored side (see _stored_number).
    as_float = float(value)
    return repr(as_float if as_float != 0 else 0.0)


def _boolean_literal(value: bool) -> str:
    return "TRUE" if value else "FALSE"


def _regex_literal(text: str) -> str:
    """`text` as a Rust regex matching exactly it: letters and digits as they are, everything else \\x{..}."""
    return "".join(c if c.isascii() and c.isalnum() else f"\\x{{{ord(c):x}}}" for c in text)
