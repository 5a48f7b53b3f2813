"""Bedrock's retrieval filters, run by LanceDB, keep exactly the chunks Bedrock's documented semantics keep.

`matches` below is the oracle: written from the API reference (RetrievalFilter) and the user guide, in plain
Python, without looking at how filters.py does it. Filters are generated (hypothesis) over a table of 50 chunks
whose metadata mixes every type, puts different types under one key, leaves keys out, and uses keys and values
with quotes, dots, dashes, percent signs, pipes, backslashes and newlines; each filter's SQL is run through the
store with k larger than the table, so the rows that come back are all the rows it keeps.
"""

from __future__ import annotations

import operator
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outcrop.errors import ValidationException
from outcrop.knowledge import filters
from outcrop.knowledge.filters import to_sql
from outcrop.knowledge.store import ChunkRecord, LanceStore

DIMENSION = 8
PATH = "retrievalConfiguration.vectorSearchConfiguration.filter"


# -- the oracle ---------------------------------------------------------------------------------

def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same(attribute, value) -> bool:
    """equals: an attribute of the value's type with an equal value (3 == 3.0; "3" is not 3; True is not 1)."""
    if isinstance(value, bool):
        return isinstance(attribute, bool) and attribute == value
    if isinstance(value, str):
        return isinstance(attribute, str) and attribute == value
    return _is_number(attribute) and attribute == value


_COMPARE = {"greaterThan": operator.gt, "greaterThanOrEquals": operator.ge, "lessThan": operator.lt,
            "lessThanOrEquals": operator.le}


def matches(f: dict, metadata: dict) -> bool:
    ((name, argument),) = f.items()
    if name == "andAll":
        return all(matches(member, metadata) for member in argument)
    if name == "orAll":
        return any(matches(member, metadata) for member in argument)
    key, value = argument["key"], argument["value"]
    present, attribute = key in metadata, metadata.get(key)
    if name == "equals":
        return present and _same(attribute, value)
    if name == "notEquals":  # also the documents without the key
        return not (present and _same(attribute, value))
    if name in _COMPARE:
        return present and _is_number(attribute) and _COMPARE[name](attribute, value)
    if name == "in":
        return present and any(_same(attribute, member) for member in value)
    if name == "notIn":
        return not (present and any(_same(attribute, member) for member in value))
    if name == "startsWith":
        return isinstance(attribute, str) and attribute.startswith(value)
    if name == "listContains":
        return isinstance(attribute, list) and value in attribute
    if name == "stringContains":
        return ((isinstance(attribute, str) and value in attribute)
                or (isinstance(attribute, list) and any(value in member for member in attribute)))
    raise AssertionError(name)


# -- the table ----------------------------------------------------------------------------------

ODD_KEYS = ["it's", 'say "hi"', "dot.ted", "dash-ed", "x-amz-bedrock-kb-source-uri", "50%_off", "back\\slash",
            "pi|pe", "new\nline", "ünï", "s:genre", "$[0]"]
KEYS = ["genre", "year", "rating", "draft", "tags", "mixed", *ODD_KEYS]
STRINGS = ["", "a", "ab", "abc", "b", "A", "3", "true", "%", "50% off", "_", "x_y", "|", "a|b", "%7C", "%25",
           "it's", 'say "hi"', "back\\slash", "new\nline", "ünï", "s3://bucket/doc-1.pdf", "ab%_c"]
NUMBERS = [0, 1, 3, 3.0, 2.5, -1, -0.0, 0.1, 1e20, 2020, 2021]


def _value(rng: random.Random):
    kind = rng.randrange(4)
    if kind == 0:
        return rng.choice(STRINGS)
    if kind == 1:
        return rng.choice(NUMBERS)
    if kind == 2:
        return rng.random() < 0.5
    return rng.sample(STRINGS, rng.randrange(4))


def _rows() -> list[dict]:
    rng = random.Random(20240601)
    rows = []
    for i in range(50):
        metadata = {}
        if i % 5:
            metadata["genre"] = rng.choice(["news", "blog", "paper", "3", "true"])
        if i % 3:
            metadata["year"] = rng.choice([1999, 2020, 2021, 2021.5, 2024])
        if i % 4:
            metadata["rating"] = rng.choice([0, -0.0, 0.1, 2.5, 3, 1e20, -1])
        if i % 2:
            metadata["draft"] = rng.random() < 0.5
        if i % 6:
            metadata["tags"] = rng.sample(STRINGS, rng.randrange(4))
        if i % 7:
            metadata["mixed"] = _value(rng)  # one key, every type
        for key in ODD_KEYS:
            if rng.random() < 0.3:
                metadata[key] = _value(rng)
        rows.append(metadata)
    rows.append({})  # no metadata at all
    return rows


ROWS = _rows()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    store = LanceStore(str(tmp_path_factory.mktemp("filters")), "kb", DIMENSION)
    rng = np.random.default_rng(1)
    store.replace_documents([], [
        ChunkRecord(chunk_id=f"c{i}", document_id=f"d{i}", data_source_id="ds", source_uri=f"s3://b/d{i}",
                    text=f"chunk {i}", context=f"chunk {i}", metadata=metadata,
                    vector=rng.standard_normal(DIMENSION).tolist())
        for i, metadata in enumerate(ROWS)])
    return store


def _kept(store, f: dict) -> set[str]:
    hits = store.search([1.0] * DIMENSION, "", len(ROWS) + 10, where=to_sql(f))
    return {hit.chunk_id for hit in hits}


def _expected(f: dict) -> set[str]:
    return {f"c{i}" for i, metadata in enumerate(ROWS) if matches(f, metadata)}


# -- generated filters --------------------------------------------------------------------------

def _present(kind) -> list:
    """The values of `kind` the table holds (list members too), so that filters often hit."""
    found = {v for metadata in ROWS for value in metadata.values()
             for v in (value if isinstance(value, list) else [value]) if kind(v)}
    return sorted(found, key=repr)


_keys = st.sampled_from([*KEYS, "absent"])
_strings = st.one_of(st.sampled_from(_present(lambda v: isinstance(v, str))), st.sampled_from(STRINGS),
                     st.text(max_size=4))
_numbers = st.one_of(st.sampled_from(_present(_is_number)), st.sampled_from(NUMBERS), st.integers(-5, 2030),
                     st.floats(allow_nan=False, allow_infinity=False, width=32))
_scalars = st.one_of(_strings, _numbers, st.booleans())


def _attribute(name: str, values) -> st.SearchStrategy:
    return st.builds(lambda key, value: {name: {"key": key, "value": value}}, _keys, values)


def _anchored_on(key, value) -> st.SearchStrategy:
    """Filters built from a value some row holds under `key`, so that they keep some rows and drop others."""
    options = []
    if isinstance(value, list):
        options += [_attribute_of(name, key, st.sampled_from(value)) for name in ("listContains", "stringContains")
                    if value]
    elif isinstance(value, str):
        options += [_attribute_of("startsWith", key, st.integers(0, len(value)).map(lambda n: value[:n])),
                    _attribute_of("stringContains", key, st.tuples(st.integers(0, len(value)), st.integers(0, 3))
                                  .map(lambda ij: value[ij[0]:ij[0] + ij[1]]))]
    else:
        options += [_attribute_of(name, key, st.just(value)) for name in ("equals", "notEquals")]
        if _is_number(value):
            options += [_attribute_of(name, key, st.sampled_from([value, value - 1, value + 0.5]))
                        for name in ("greaterThan", "greaterThanOrEquals", "lessThan", "lessThanOrEquals")]
    if not isinstance(value, list):
        options += [_attribute_of(name, key, st.lists(_scalars, max_size=2).map(lambda vs: [value, *vs]))
                    for name in ("in", "notIn")]
    return st.one_of(options)


def _attribute_of(name: str, key: str, values) -> st.SearchStrategy:
    return values.map(lambda value: {name: {"key": key, "value": value}})


_PAIRS = sorted({(key, repr(value)): (key, value) for metadata in ROWS for key, value in metadata.items()}.values(),
                key=repr)

_leaf = st.one_of(
    st.sampled_from(_PAIRS).flatmap(lambda pair: _anchored_on(*pair)),
    *(_attribute(name, _scalars) for name in ("equals", "notEquals")),
    *(_attribute(name, _numbers) for name in ("greaterThan", "greaterThanOrEquals", "lessThan", "lessThanOrEquals")),
    *(_attribute(name, st.lists(_scalars, max_size=4)) for name in ("in", "notIn")),
    *(_attribute(name, _strings) for name in ("startsWith", "listContains", "stringContains")),
)


def _depth(f: dict) -> int:
    ((name, argument),) = f.items()
    return 1 + max(map(_depth, argument)) if name in ("andAll", "orAll") else 1


def _group(children: st.SearchStrategy) -> st.SearchStrategy:
    members = st.lists(children, min_size=2, max_size=filters.MAX_MEMBERS)
    return st.builds(lambda name, ms: {name: ms}, st.sampled_from(["andAll", "orAll"]), members)


# Groups have 2 members or more, so 5 leaves nest at most 5 levels (the filter below keeps it explicit).
_filters = st.recursive(_leaf, _group, max_leaves=filters.MAX_DEPTH).filter(lambda f: _depth(f) <= filters.MAX_DEPTH)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(f=_filters)
def test_lance_keeps_what_bedrock_keeps(store, f):
    assert _kept(store, f) == _expected(f)


@settings(max_examples=100, deadline=None)
@given(metadata=st.dictionaries(st.text(max_size=6), st.one_of(
    st.text(max_size=6), st.integers(-(2 ** 53), 2 ** 53), st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(), st.lists(st.text(max_size=4), max_size=4)), max_size=6))
def test_the_stored_layout_gives_the_attributes_back(metadata):
    assert filters.decode_metadata(filters.encode_metadata(metadata)) == metadata


# -- cases worth naming -------------------------------------------------------------------------

NAMED = {
    "a string is not the number it spells": {"equals": {"key": "genre", "value": 3}},
    "the number equals its float": {"equals": {"key": "rating", "value": 3.0}},
    "-0.0 is zero": {"equals": {"key": "rating", "value": 0}},
    "a boolean is not a number": {"equals": {"key": "draft", "value": 1}},
    "notEquals keeps the documents without the key": {"notEquals": {"key": "genre", "value": "news"}},
    "notIn keeps the documents without the key": {"notIn": {"key": "year", "value": [2020, 2021]}},
    "in of mixed types": {"in": {"key": "mixed", "value": ["a", 3, True]}},
    "in of nothing": {"in": {"key": "genre", "value": []}},
    "notIn of nothing": {"notIn": {"key": "genre", "value": []}},
    "greaterThan skips strings": {"greaterThan": {"key": "mixed", "value": -100}},
    "startsWith the empty string: every string": {"startsWith": {"key": "mixed", "value": ""}},
    "stringContains in a list member": {"stringContains": {"key": "tags", "value": "b"}},
    "stringContains never spans two members": {"stringContains": {"key": "tags", "value": "a|b"}},
    "listContains a whole member only": {"listContains": {"key": "tags", "value": "a"}},
    "listContains a member with a pipe": {"listContains": {"key": "tags", "value": "a|b"}},
    "the reserved source key": {"startsWith": {"key": "x-amz-bedrock-kb-source-uri", "value": "s3://"}},
    "nested groups": {"orAll": [{"andAll": [{"greaterThanOrEquals": {"key": "year", "value": 2020}},
                                             {"lessThan": {"key": "year", "value": 2022}}]},
                                {"listContains": {"key": "tags", "value": "it's"}}]},
}


@pytest.mark.parametrize("f", NAMED.values(), ids=NAMED.keys())
def test_named_cases(store, f):
    assert _kept(store, f) == _expected(f)


def test_the_named_cases_are_not_vacuous(store):
    # Each of these keeps some rows and drops others, so a predicate that is always TRUE or FALSE would fail.
    for name in ("notEquals keeps the documents without the key", "stringContains in a list member",
                 "in of mixed types", "the number equals its float", "nested groups"):
        assert 0 < len(_expected(NAMED[name])) < len(ROWS), name


# -- injection ------------------------------------------------------------------------------------

INJECTIONS = ["' OR '1'='1", "x') OR TRUE OR ('", "'); DROP TABLE kb; --", "\\' OR 1=1 --", "a'' OR ''1''=''1",
              "json_get_string(metadata, 'genre')", "%' OR chunk_id LIKE '%", '" OR ""="', "\\x{7c}.*"]


@pytest.mark.parametrize("text", INJECTIONS)
@pytest.mark.parametrize("name", ["equals", "notEquals", "startsWith", "listContains", "stringContains"])
def test_keys_and_values_are_data_never_sql(store, name, text):
    as_value = {name: {"key": "genre", "value": text}}
    as_key = {name: {"key": text, "value": "news"}}
    assert _kept(store, as_value) == _expected(as_value)
    assert _kept(store, as_key) == _expected(as_key)
    assert store.count() == len(ROWS)


def test_an_injected_attribute_is_found_as_plain_data(tmp_path):
    store = LanceStore(str(tmp_path), "kb", DIMENSION)
    evil = "x') OR TRUE OR ('"
    store.replace_documents([], [
        ChunkRecord(chunk_id=f"c{i}", document_id="d", data_source_id="ds", source_uri="u", text="t", context="t",
                    metadata=metadata, vector=[1.0] * DIMENSION)
        for i, metadata in enumerate([{evil: evil}, {"k": "v"}])])
    assert {h.chunk_id for h in store.search([1.0] * DIMENSION, "", 5, where=to_sql(
        {"equals": {"key": evil, "value": evil}}))} == {"c0"}


# -- malformed filters ----------------------------------------------------------------------------

def _leaf_filter(name="equals", key="genre", value="news"):
    return {name: {"key": key, "value": value}}


def _nested(levels: int) -> dict:
    f = _leaf_filter()
    for _ in range(levels):
        f = {"andAll": [f, _leaf_filter()]}
    return f


MALFORMED = [
    ({}, f"{PATH} must have exactly one of"),
    ({"equals": {"key": "a", "value": "b"}, "notEquals": {"key": "a", "value": "b"}}, "(got equals, notEquals)"),
    ({"equal": {"key": "a", "value": "b"}}, f"{PATH}.equal is not a filter operator"),
    ([_leaf_filter()], f"{PATH} must be an object"),
    ({"equals": "genre=news"}, f"{PATH}.equals must be an object with a key and a value"),
    ({"equals": {"key": "a"}}, f"{PATH}.equals.value is required"),
    ({"equals": {"value": "a"}}, f"{PATH}.equals.key must be a string"),
    ({"equals": {"key": "", "value": "a"}}, f"{PATH}.equals.key must be 1 to 100 characters long"),
    ({"equals": {"key": "k" * 101, "value": "a"}}, f"{PATH}.equals.key must be 1 to 100 characters long"),
    ({"equals": {"key": "a", "value": "b", "extra": 1}}, f"{PATH}.equals.extra is not a member"),
    ({"equals": {"key": "a", "value": ["b"]}}, f"{PATH}.equals.value must be a string, number or boolean"),
    ({"notEquals": {"key": "a", "value": {"b": 1}}}, f"{PATH}.notEquals.value must be a string, number or boolean"),
    ({"greaterThan": {"key": "a", "value": "1989"}}, f"{PATH}.greaterThan.value must be a number"),
    ({"lessThan": {"key": "a", "value": True}}, f"{PATH}.lessThan.value must be a number"),
    ({"lessThanOrEquals": {"key": "a", "value": float("nan")}}, f"{PATH}.lessThanOrEquals.value must be a finite"),
    ({"greaterThanOrEquals": {"key": "a", "value": 10 ** 400}}, "greaterThanOrEquals.value must be a finite number"),
    ({"in": {"key": "a", "value": "cat"}}, f"{PATH}.in.value must be a list"),
    ({"notIn": {"key": "a", "value": ["cat", ["dog"]]}}, f"{PATH}.notIn.value[1] must be a string, number or boolean"),
    ({"startsWith": {"key": "a", "value": 1}}, f"{PATH}.startsWith.value must be a string"),
    ({"listContains": {"key": "a", "value": ["cat"]}}, f"{PATH}.listContains.value must be a string"),
    ({"stringContains": {"key": "a", "value": False}}, f"{PATH}.stringContains.value must be a string"),
    ({"andAll": [_leaf_filter()]}, f"{PATH}.andAll must have at least 2 members"),
    ({"orAll": [_leaf_filter()] * 6}, f"{PATH}.orAll must have at most 5 members"),
    ({"orAll": _leaf_filter()}, f"{PATH}.orAll must be a list of filters"),
    ({"andAll": [_leaf_filter(), _leaf_filter("greaterThan", "year", "2000")]},
     f"{PATH}.andAll[1].greaterThan.value must be a number"),
    ({"orAll": [_leaf_filter(), {"andAll": [_leaf_filter(), {}]}]}, f"{PATH}.orAll[1].andAll[1] must have exactly"),
    (_nested(5), f"{PATH}.andAll[0].andAll[0].andAll[0].andAll[0].andAll[0] is nested deeper than 5 levels"),
]


@pytest.mark.parametrize(("f", "message"), MALFORMED)
def test_a_malformed_filter_names_the_member_at_fault(f, message):
    with pytest.raises(ValidationException) as raised:
        to_sql(f)
    assert message in raised.value.message


def test_five_levels_are_allowed(store):
    f = _nested(4)
    assert _kept(store, f) == _expected(f)


def test_messages_use_the_path_given():
    path = "retrieveAndGenerateConfiguration.knowledgeBaseConfiguration.retrievalConfiguration." \
           "vectorSearchConfiguration.filter"
    with pytest.raises(ValidationException, match=r"^retrieveAndGenerateConfiguration\..*\.filter\.in\.value must"):
        to_sql({"in": {"key": "a", "value": 3}}, path=path)


def test_null_members_are_absent():
    assert to_sql({"equals": {"key": "a", "value": "b"}, "notEquals": None}) == to_sql(_leaf_filter("equals", "a", "b"))


def test_the_column_must_be_an_identifier():
    with pytest.raises(ValueError):
        to_sql(_leaf_filter(), column="metadata) OR (1=1")
