"""The published JSON Schemas say exactly what the strict decoder accepts.

For every event of every topic, examples are generated from the published schema
(``tests.support.schema_examples``): each valid one, made to satisfy the schema's declared ``x-rules``, must decode; then
each is mutated (a number sent as text, a boolean for a number, an unknown field, a missing field,
a value of another type, ...) and the schema's verdict and the decoder's must agree.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker, validators

from schemas import DecodeError, decode
from schemas.jsonschema import SCHEMA_DIR
from schemas.topics import ALL_TOPICS
from tests.support.schema_examples import examples

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
FORMATS = FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not _RFC3339.match(value):
        return False
    datetime.fromisoformat(value.upper().replace("Z", "+00:00"))  # a real date and time
    return True


# index.json's conventions: an integer is written as an integer literal (1, never 1.0), which JSON
# Schema's "integer" alone does not say.
_TYPES = Draft202012Validator.TYPE_CHECKER.redefine(
    "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool))
Validator = validators.extend(Draft202012Validator, type_checker=_TYPES)

EVENTS = [pytest.param(topic, payload, id=f"{topic.base}/{payload.event_type}")
          for topic in ALL_TOPICS for payload in topic.payloads]


def _published(topic, payload) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / f"{topic.base}.v{topic.version}" / f"{payload.event_type}.json").read_text())


# ---------------------------------------------------------------------------------- declared rules

def _account_is_user(doc: dict) -> bool:
    payload = doc.get("payload")
    return not isinstance(payload, dict) or "user_id" not in payload or payload["user_id"] == doc.get("account_id")


def _not_crossed(doc: dict) -> bool:
    p = doc.get("payload", {})
    return not all(isinstance(p.get(k), (int, float)) for k in ("bid", "ask")) or p["ask"] >= p["bid"]


def _stops_around_entry(doc: dict) -> bool:
    p = doc.get("payload", {})
    entry, sl, tp = p.get("entry_price"), p.get("stop_loss"), p.get("take_profit")
    if not isinstance(entry, (int, float)):
        return True
    below, above = (sl, tp) if p.get("direction") == "buy" else (tp, sl)
    return (not isinstance(below, (int, float)) or below < entry) and (not isinstance(above, (int, float)) or above > entry)


HOLDS = {"account-is-user": _account_is_user, "not-crossed": _not_crossed, "stops-around-entry": _stops_around_entry}


def _repaired(doc: dict) -> dict:
    """``doc`` changed as little as possible to satisfy every rule the schema declares."""
    doc = copy.deepcopy(doc)
    p = doc["payload"]
    if "user_id" in p:
        doc["account_id"] = p["user_id"]
    if "bid" in p and "ask" in p and p["ask"] < p["bid"]:
        p["bid"], p["ask"] = p["ask"], p["bid"]
    if "entry_price" in p and not _stops_around_entry(doc):
        p.pop("stop_loss", None), p.pop("take_profit", None)
    return doc


def test_every_rule_a_schema_declares_is_known_here():
    declared = {rule for topic in ALL_TOPICS for p in topic.payloads for rule in _published(topic, p).get("x-rules", {})}
    assert declared == set(HOLDS)


# -------------------------------------------------------------------------------------- mutations

def _leaves(value: Any, path: tuple = ()) -> list[tuple]:
    if isinstance(value, dict):
        return [path] + [p for k, v in value.items() for p in _leaves(v, (*path, k))]
    if isinstance(value, list):
        return [path] + [p for i, v in enumerate(value) for p in _leaves(v, (*path, i))]
    return [path]


def _replace(doc: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    doc = copy.deepcopy(doc)
    target = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return doc


def _drop(doc: Any, path: tuple) -> Any:
    doc = copy.deepcopy(doc)
    target = doc
    for step in path[:-1]:
        target = target[step]
    del target[path[-1]]
    return doc


def _mutations(doc: dict, path: tuple) -> list[Any]:
    target = doc
    for step in path:
        target = target[step]
    out = []
    if isinstance(target, bool):
        out += [_replace(doc, path, 1), _replace(doc, path, "true")]
    elif isinstance(target, (int, float)):
        out += [_replace(doc, path, str(target)), _replace(doc, path, True), _replace(doc, path, target + 0.5),
                _replace(doc, path, None)]
    elif isinstance(target, str):
        out += [_replace(doc, path, 1), _replace(doc, path, ""), _replace(doc, path, target + "\u00e9!"),
                _replace(doc, path, None)]
    elif isinstance(target, dict):
        out += [_replace(doc, path, {**target, "zz_unknown": 1}), _replace(doc, path, [target])]
        out += [_drop(doc, (*path, key)) for key in list(target)[:6]]
    elif isinstance(target, list):
        out += [_replace(doc, path, {}), _replace(doc, path, [])]
    elif target is None:
        out += [_replace(doc, path, 0), _replace(doc, path, "x")]
    return out


def _decodes(topic, doc: Any) -> bool:
    try:
        decode(topic, json.dumps(doc).encode())
    except DecodeError:
        return False
    return True


@pytest.mark.parametrize(("topic", "payload"), EVENTS)
def test_the_schema_and_the_decoder_agree(topic, payload):
    schema = _published(topic, payload)
    validator = Validator(schema, format_checker=FORMATS)
    rules = [HOLDS[r] for r in schema.get("x-rules", {})]

    @settings(max_examples=15, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(example=examples(schema), pick=st.randoms(use_true_random=False))
    def agree(example, pick):
        valid = _repaired(example)
        assert validator.is_valid(valid), list(validator.iter_errors(valid))[:1]
        assert _decodes(topic, valid), f"the schema accepts what the decoder refuses: {json.dumps(valid)[:600]}"
        paths = _leaves(valid)
        for path in pick.sample(paths, min(len(paths), 8)):
            for mutated in _mutations(valid, path):
                schema_says = validator.is_valid(mutated) and all(rule(mutated) for rule in rules)
                assert _decodes(topic, mutated) == schema_says, (
                    f"at {path}: schema says {'valid' if schema_says else 'invalid'}, the decoder disagrees: "
                    f"{json.dumps(mutated)[:600]}")

    agree()
