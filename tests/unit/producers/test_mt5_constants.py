"""The simulator's module surface against the written reference of the real MetaTrader5 package.

The reference (docs/mt5-api.md of the shared workspace) is parsed at run time, so a correction to it
shows up here as a failing row naming the constant, field or function that differs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from producers.mt5 import constants, types
from producers.mt5.simulator import SimulatedBroker, SimulatedTerminal

REFERENCE = Path(os.environ.get("RECONGUARD_MT5_REFERENCE")
                 or Path(__file__).resolve().parents[3].parent / "shared" / "reference" / "mt5-api.md")
MISSING = f"MT5 reference not found at {REFERENCE} (set RECONGUARD_MT5_REFERENCE)"
_PY_TYPES = {"f": float, "bool": bool, "str": str, "TradeRequest": types.TradeRequest}


def _reference() -> str | None:
    return REFERENCE.read_text(encoding="utf-8") if REFERENCE.is_file() else None


def _section(text: str, number: int) -> str:
    start = re.search(rf"^## {number}\. .*$", text, re.MULTILINE)
    assert start is not None, f"section {number} not found in {REFERENCE}"
    end = re.search(r"^## \d+\. ", text[start.end():], re.MULTILINE)
    return text[start.end(): start.end() + end.start() if end else len(text)]


def _bullets(section: str) -> list[str]:
    """Top-level '- ' items with their indented continuation lines joined."""
    items: list[str] = []
    for line in section.splitlines():
        if line.startswith("- "):
            items.append(line[2:])
        elif line.startswith("  ") and items:
            items[-1] += " " + line.strip()
    return items


_SEGMENT = re.compile(r"([A-Z][A-Z_]*_)(?: \((\d+)\))?:(.*?)(?=[A-Z][A-Z_]*_(?: \(\d+\))?:|$)")


def parse_constants(text: str) -> tuple[dict[str, int], dict[str, int]]:
    """(name -> value, prefix -> count the reference states) from sections 6 and 9."""
    values: dict[str, int] = {}
    stated: dict[str, int] = {}
    for bullet in _bullets(_section(text, 6)):
        for prefix, count, body in _SEGMENT.findall(" ".join(bullet.split())):
            if count:
                stated[prefix] = int(count)
            if prefix == "TRADE_RETCODE_":
                continue  # listed as ranges here; the names and values are in the section 9 table
            for name, value in re.findall(r"\b([A-Z][A-Z0-9_]*)=(-?\d+)", body):
                # DEAL_DIVIDEND, DEAL_DIVIDEND_FRANKED and DEAL_TAX are written out without TYPE_
                values[name if name.startswith("DEAL_") else prefix + name] = int(value)
    for value, name in re.findall(r"^\| (\d+) \| (TRADE_RETCODE_\w+) \|", _section(text, 9), re.MULTILINE):
        values[name] = int(value)
    return values, stated


def parse_result_types(text: str) -> dict[str, tuple[int, list[tuple[str, str]]]]:
    """Type name -> (stated field count, [(field, reference type)]) from the section 5 code blocks."""
    blocks = re.findall(r"\*\*(\w+)\*\* \((\d+)\)[^\n]*\n```\n(.*?)```", _section(text, 5), re.DOTALL)
    return {name: (int(count), [tuple(f.split()) for f in body.replace("\n", " ").split(",") if f.strip()])
            for name, count, body in blocks}


def parse_functions(text: str) -> list[str]:
    block = re.search(r"The 32 C functions.*?```\n(.*?)```", _section(text, 1), re.DOTALL)
    assert block is not None
    return block.group(1).split()


def parse_conventions(text: str) -> dict[str, list[str]]:
    """Calling convention -> function names, from the section 1 table."""
    rows = re.findall(r"^\| ([^|]+?) \| ([a-z_, ]+) \|", _section(text, 1), re.MULTILINE)
    return {kind.strip(): [n.strip() for n in names.split(",")] for kind, names in rows}


TEXT = _reference()
CONSTANTS, STATED = parse_constants(TEXT) if TEXT else ({}, {})
RESULT_TYPES = parse_result_types(TEXT) if TEXT else {}
FUNCTIONS = parse_functions(TEXT) if TEXT else []
CONVENTIONS = parse_conventions(TEXT) if TEXT else {}
SKIP_ROW = [pytest.param(None, None, marks=pytest.mark.skip(reason=MISSING), id="reference-missing")]


def _ours() -> dict[str, int]:
    return {k: v for k, v in vars(constants).items() if k.isupper()}


@pytest.mark.skipif(TEXT is None, reason=MISSING)
def test_reference_lists_223_constants_and_so_do_we() -> None:
    assert len(CONSTANTS) == 223
    assert len(_ours()) == 223


@pytest.mark.skipif(TEXT is None, reason=MISSING)
def test_no_constant_beyond_the_package() -> None:
    assert sorted(set(_ours()) - set(CONSTANTS)) == []


@pytest.mark.skipif(TEXT is None, reason=MISSING)
def test_group_sizes_match_the_counts_the_reference_states() -> None:
    for prefix, count in STATED.items():
        assert sum(1 for name in CONSTANTS if name.startswith(prefix)) == count, prefix


@pytest.mark.parametrize(("name", "value"), [pytest.param(n, v, id=n) for n, v in CONSTANTS.items()] or SKIP_ROW)
def test_constant_has_the_package_value(name: str, value: int) -> None:
    assert getattr(constants, name) == value
    assert getattr(SimulatedTerminal, name) == value  # the terminal passes for the module


@pytest.mark.parametrize(("name", "spec"), [pytest.param(n, s, id=n) for n, s in RESULT_TYPES.items()] or SKIP_ROW)
def test_result_type_fields_in_package_order(name: str, spec: tuple[int, list[tuple[str, str]]]) -> None:
    count, fields = spec
    ours = getattr(types, name)
    assert len(fields) == count
    assert list(ours._fields) == [f for f, _ in fields]
    for field, ref_type in fields:
        assert ours.__annotations__[field] is _PY_TYPES.get(ref_type, int), field


@pytest.mark.skipif(TEXT is None, reason=MISSING)
def test_eleven_result_types() -> None:
    assert len(RESULT_TYPES) == 11


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in FUNCTIONS] or [pytest.param(None, marks=pytest.mark.skip(reason=MISSING))])
def test_terminal_has_every_package_function(name: str) -> None:
    assert len(FUNCTIONS) == 32
    assert callable(getattr(SimulatedTerminal, name))


def _terminal() -> SimulatedTerminal:
    broker = SimulatedBroker(seed=1)
    broker.add_account(1, "pw")
    terminal = SimulatedTerminal(broker, login=1, password="pw")
    assert terminal.initialize()
    return terminal


_NOARGS = CONVENTIONS.get("no arguments (`METH_NOARGS`)", [])
_POSITIONAL = CONVENTIONS.get("positional only (`METH_VARARGS`)", [])
_KEYWORDS = CONVENTIONS.get("positional + keywords", [])


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in _NOARGS] or [pytest.param(None, marks=pytest.mark.skip(reason=MISSING))])
def test_noargs_functions_raise_type_error_on_any_argument(name: str) -> None:
    terminal = _terminal()
    with pytest.raises(TypeError):
        getattr(terminal, name)(1)
    with pytest.raises(TypeError):
        getattr(terminal, name)(x=1)


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in _POSITIONAL] or [pytest.param(None, marks=pytest.mark.skip(reason=MISSING))])
def test_positional_functions_raise_type_error_on_keywords(name: str) -> None:
    with pytest.raises(TypeError, match="takes no keyword arguments"):
        getattr(_terminal(), name)(symbol="EURUSD")


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in _KEYWORDS] or [pytest.param(None, marks=pytest.mark.skip(reason=MISSING))])
def test_keyword_functions_answer_bad_arguments_with_code_minus_2(name: str) -> None:
    terminal = _terminal()
    result = getattr(terminal, name)(object(), object(), bogus=object())
    assert result in (None, False)
    assert terminal.last_error()[0] == -2


@pytest.mark.skipif(TEXT is None, reason=MISSING)
def test_conventions_cover_all_32_functions() -> None:
    assert sorted(_NOARGS + _POSITIONAL + _KEYWORDS) == sorted(FUNCTIONS)
    assert SimulatedTerminal.__version__ == re.search(r"`MetaTrader5` (\S+)\*\*", TEXT or "").group(1)


def test_retcode_names_in_the_contracts_agree_with_the_package():
    from schemas.retcodes import RETCODE_NAMES

    package = {value: name.removeprefix("TRADE_RETCODE_") for name, value in vars(constants).items()
               if name.startswith("TRADE_RETCODE_")}
    assert RETCODE_NAMES == package
