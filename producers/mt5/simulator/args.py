"""Argument conversion exactly as the MetaTrader5 package does it (reference sections 3 and 11).

Pure functions: each either returns the converted value or raises ApiError carrying the package's
code and message, which the terminal turns into ``None``/``False`` plus ``last_error()``. Only the
calling-convention check (TypeError) and C number parsing (SystemError) raise what CPython itself would.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from producers.mt5 import constants as c
from producers.mt5.types import TradeRequest

MAX_SHORT_STRING = 29  # symbol/comment: length + 1 < 31 UTF-16 units
MAX_GROUP = 1997

_U32, _U64, _I64 = (0, 2**32), (0, 2**64), (-(2**63), 2**63)

# (field, kind, range) in the order the package validates them: the first failing key wins.
REQUEST_FIELDS: tuple[tuple[str, str, tuple[int, int] | None], ...] = (
    ("action", "int", _U32), ("magic", "int", _U64), ("order", "int", _U64), ("symbol", "str", None),
    ("volume", "float", None), ("price", "float", None), ("stoplimit", "float", None),
    ("sl", "float", None), ("tp", "float", None), ("deviation", "int", _U64), ("type", "int", _U32),
    ("type_filling", "int", _U32), ("type_time", "int", _U32), ("expiration", "int", _I64),
    ("comment", "str", None), ("position", "int", _U64), ("position_by", "int", _U64),
)
_DEFAULTS = {"int": 0, "float": 0.0, "str": ""}


class ApiError(Exception):
    """A call the package refuses before it reaches the terminal (code -2 unless stated)."""

    def __init__(self, message: str, code: int = c.RES_E_INVALID_PARAMS) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def short_string_ok(value: object) -> bool:
    return isinstance(value, str) and len(value.encode("utf-16-le")) // 2 <= MAX_SHORT_STRING


def _field_ok(kind: str, bounds: tuple[int, int] | None, value: object) -> bool:
    if kind == "int":  # Python int or bool only: a float or a numpy integer is refused
        return isinstance(value, int) and bounds is not None and bounds[0] <= value < bounds[1]
    if kind == "float":  # float or a subclass (numpy.float64); an int such as 1 or 0 is refused
        return isinstance(value, float)
    return short_string_ok(value)


def parse_request(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> TradeRequest:
    """order_send/order_check arguments -> TradeRequest; a dict positional or the same keys as keywords."""
    if args and kwargs:
        raise ApiError("Unnamed arguments not allowed")
    if kwargs:
        source: Mapping[str, Any] = kwargs
    elif len(args) != 1:
        raise ApiError("Invalid number of arguments")
    elif not isinstance(args[0], dict):
        raise ApiError("Invalid arguments")
    else:
        source = args[0]
    values: dict[str, Any] = {}
    for name, kind, bounds in REQUEST_FIELDS:  # unknown keys are never looked at
        if name not in source:
            values[name] = _DEFAULTS[kind]
        elif not _field_ok(kind, bounds, source[name]):
            raise ApiError(f'Invalid "{name}" argument')
        else:
            value = source[name]
            values[name] = int(value) if kind == "int" else float(value) if kind == "float" else value
    return TradeRequest(**values)


def to_epoch(value: object) -> int:
    """A date argument: int seconds, float (truncated) or datetime; stored by the package as 32-bit."""
    if isinstance(value, datetime):  # the poller's dates: asked first, as a bool is never one
        return int(value.timestamp())
    if isinstance(value, bool):
        raise ApiError("Invalid arguments")
    if isinstance(value, int | float):
        return int(value)
    raise ApiError("Invalid arguments")


def symbol_arg(value: object) -> str:
    if not isinstance(value, str):
        raise ApiError("Invalid arguments")
    return value


def group_matches(group: str, name: str) -> bool:
    """MT5 group masks: comma-separated, '*' wildcards, '!' excludes; the last matching mask decides."""
    selected = False
    for mask in (m.strip() for m in group.split(",")):
        if not mask:
            continue
        negate = mask.startswith("!")
        if fnmatch.fnmatchcase(name.upper(), mask.lstrip("!").upper()):
            selected = not negate
    return selected


def filters(kwargs: Mapping[str, Any]) -> tuple[int | None, str | None, str | None]:
    """positions_get/orders_get keyword filters (ticket, symbol, group), validated like the package."""
    if not kwargs:  # every poll asks for all positions
        return None, None, None
    ticket, symbol, group = kwargs.get("ticket"), kwargs.get("symbol"), kwargs.get("group")
    if ticket is not None and not (isinstance(ticket, int) and 0 <= ticket < 2**64):
        raise ApiError('Invalid "ticket" argument')
    if symbol is not None and not short_string_ok(symbol):
        raise ApiError('Invalid "symbol" argument')
    if group is not None and not (isinstance(group, str) and len(group) <= MAX_GROUP):
        raise ApiError('Invalid "group" argument')
    return ticket, symbol, group


def enforce_convention(name: str, convention: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """The TypeErrors CPython raises for METH_NOARGS and METH_VARARGS C functions."""
    if convention == "noargs" and kwargs:
        raise TypeError(f"{name}() takes no keyword arguments")
    if convention == "noargs" and args:
        raise TypeError(f"{name}() takes no arguments ({len(args)} given)")
    if convention == "positional" and kwargs:
        raise TypeError(f"{name}() takes no keyword arguments")


def c_number(name: str, value: object, kind: type) -> Any:
    """PyArg_ParseTuple number parsing: a wrong type leaves a TypeError pending while the C function
    returns None, which CPython reports as SystemError."""
    ok = isinstance(value, int) if kind is int else isinstance(value, int | float)
    if not ok:
        raise SystemError(f"<built-in function {name}> returned a result with an exception set")
    return kind(value)


def arity(args: tuple[Any, ...], count: int) -> None:
    if len(args) != count:
        raise ApiError("Invalid arguments")


def history_query(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """("ticket", T) | ("position", P) | ("dates", from, to, group) from history_*_get arguments."""
    for key in ("ticket", "position") if kwargs else ():  # a poll's dates come without keywords
        if kwargs.get(key) is not None:
            if args:
                raise ApiError("Unnamed arguments not allowed")
            value = kwargs[key]
            if not (isinstance(value, int) and 0 <= value < 2**64):
                raise ApiError(f'Invalid "{key}" argument')
            return (key, value)
    if not args and not kwargs:
        raise ApiError("Invalid arguments")
    if len(args) != 2:
        raise ApiError("Invalid number of arguments")
    group = kwargs.get("group")
    if group is not None and not isinstance(group, str):
        raise ApiError('Invalid "group" argument')
    return ("dates", to_epoch(args[0]), to_epoch(args[1]), group)
