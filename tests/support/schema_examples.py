"""Hypothesis strategies for the JSON values a JSON Schema accepts, for the subset of draft
2020-12 that pydantic writes: objects with properties, required and additionalProperties, ``$ref``
into ``$defs``, anyOf, enum, const, strings (length, pattern, date-time and uuid formats),
integers and numbers (inclusive and exclusive bounds), booleans, null, arrays (items, minItems).

hypothesis-jsonschema does this in general, but reaches into Hypothesis internals that the
Hypothesis release used here no longer has.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

_JSON_LEAVES = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=8)
ANY_JSON = st.recursive(_JSON_LEAVES, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)

_OFFSETS = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))])
_DATE_TIMES = st.builds(
    lambda moment, zone: moment.replace(tzinfo=UTC).astimezone(zone).isoformat(),
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)), _OFFSETS)


def examples(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values ``schema`` (a whole document with its ``$defs``) accepts."""
    return _of(schema, schema.get("$defs", {}))


def _of(schema: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Any]:
    if "$ref" in schema:
        return st.deferred(lambda: _of(defs[schema["$ref"].rsplit("/", 1)[-1]], defs))
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema:
        return st.one_of([_of(option, defs) for option in schema["anyOf"]])
    kind = schema.get("type")
    if kind is None:
        return ANY_JSON
    return _BY_TYPE[kind](schema, defs)


def _object(schema: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Any]:
    properties = schema.get("properties")
    if properties is None:
        return st.dictionaries(st.text(max_size=8), ANY_JSON, max_size=3)
    required = set(schema.get("required", ()))
    return st.fixed_dictionaries(
        {name: _of(sub, defs) for name, sub in properties.items() if name in required},
        optional={name: _of(sub, defs) for name, sub in properties.items() if name not in required})


def _string(schema: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Any]:
    low, high = schema.get("minLength", 0), schema.get("maxLength", 40)
    fmt = schema.get("format")
    if fmt == "date-time":
        return _DATE_TIMES
    if fmt == "uuid":
        return st.uuids().map(str)
    if "pattern" in schema:
        return st.from_regex(schema["pattern"], fullmatch=True).filter(lambda s: low <= len(s) <= high)
    return st.text(min_size=low, max_size=min(high, low + 40))


def _number(schema: dict[str, Any], defs: dict[str, Any], *, integer: bool = False) -> st.SearchStrategy[Any]:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    if integer:
        low = None if low is None else math.ceil(low) + ("exclusiveMinimum" in schema and low == math.ceil(low))
        high = None if high is None else math.floor(high) - ("exclusiveMaximum" in schema and high == math.floor(high))
        return st.integers(min_value=low, max_value=high)
    return st.floats(min_value=low, max_value=high, allow_nan=False, allow_infinity=False,
                     exclude_min="exclusiveMinimum" in schema, exclude_max="exclusiveMaximum" in schema)


def _array(schema: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Any]:
    items = _of(schema.get("items", {}), defs)
    return st.lists(items, min_size=schema.get("minItems", 0), max_size=max(schema.get("minItems", 0), 3))


_BY_TYPE = {
    "object": _object,
    "string": _string,
    "number": _number,
    "integer": lambda schema, defs: _number(schema, defs, integer=True),
    "boolean": lambda schema, defs: st.booleans(),
    "null": lambda schema, defs: st.none(),
    "array": _array,
}
