"""Rule state to JSON-compatible values and back, for Faust tables (changelog-backed).

States are frozen dataclasses; fields marked ``compare=False`` are volatile (the last quote, the
last reading): they do not make a state "changed", so they alone never cause a table write.
"""

from __future__ import annotations

from functools import cache
from typing import Any, TypeVar

from pydantic import TypeAdapter

T = TypeVar("T")


@cache
def _adapter(state_type: type[T]) -> TypeAdapter[T]:
    return TypeAdapter(state_type)


def dump_state(state: Any) -> dict[str, Any]:
    return _adapter(type(state)).dump_python(state, mode="json")


def load_state(state_type: type[T], data: dict[str, Any] | None) -> T:
    if data is None:
        return state_type()
    return _adapter(state_type).validate_python(data)
