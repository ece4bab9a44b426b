"""The scenario file: a YAML script of accounts, market moves, trades, faults and expected decisions.

``load(path)`` parses and validates a file before anything runs: a mistake is a ``ScenarioError``
naming the file, the line and the field (``scenario.yaml:14: steps[2].approve.volume: Input should be
greater than 0``). The format is documented in ``docs/scenarios.md``; ``json_schema()`` is what
``reconguard docs`` publishes as ``docs/schemas/scenario.v1.schema.json``.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from infra.settings import GuardSettings
from infra.settings.markets import NEW_YORK_CLOSE, check_clock_rule
from producers.mt5.simulator import DEFAULT_START
from schemas.common import Direction

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "docs" / "schemas" / "scenario.v1.schema.json"
#: The guard profiles a scenario account may name (the rules of streams/drawdown: ``default``).
PROFILES = ("default",)
_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)d)?\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m(?!s))?\s*"
                       r"(?:(\d+(?:\.\d+)?)s)?\s*(?:(\d+)ms)?\s*$")


def seconds_of(value: Any) -> float:
    """``90``, ``"90s"``, ``"1h30m"``, ``"2d"``, ``"250ms"`` -> seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    found = _DURATION.match(str(value)) if isinstance(value, str) and value.strip() else None
    if found is None or not any(found.groups()):
        raise ValueError(f"{value!r} is not a duration (e.g. 90, 90s, 2m, 1h30m, 2d, 250ms)")
    d, h, m, s, ms = (float(g) if g else 0.0 for g in found.groups())
    return d * 86_400 + h * 3_600 + m * 60 + s + ms / 1000


Duration = Annotated[float, BeforeValidator(seconds_of), Field(json_schema_extra={
    "description": "seconds, or a string such as 90s, 2m, 1h30m, 2d, 250ms"})]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Levels(Strict):
    """The account's guard levels (a ``users`` row); unset ones keep the defaults."""

    warning_drawdown_percent: float = Field(5.0, gt=0)
    critical_drawdown_percent: float = Field(10.0, gt=0)
    daily_loss_limit_percent: float = Field(5.0, gt=0)
    close_grace_seconds: float = Field(10.0, ge=0)


class Account(Strict):
    id: str = Field(min_length=1, max_length=64, description="the user id (the key on every topic)")
    login: int | None = Field(None, gt=0, description="the MT5 login (default: 51000001, 51000002, ...)")
    currency: Literal["GBP", "USD", "EUR", "JPY"] = "GBP"
    balance: float = Field(10_000.0, gt=0)
    leverage: int = Field(100, gt=0)
    levels: Levels = Levels()
    profile: str = Field("default", description="the guard profile (today: `default`, the levels above)")
    server_clock: str | None = Field(None, description="the poller's clock rule for this account (MarketSettings."
                                                       "server_clocks): auto, new-york-close, UTC+HH:MM or a zone; "
                                                       "default: the guard's markets.server_clock (auto)")

    @field_validator("server_clock")
    @classmethod
    def _clock_rule(cls, value: str | None) -> str | None:
        return None if value is None else check_clock_rule(value)

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, value: str) -> str:
        if value not in PROFILES:
            raise ValueError(f"unknown guard profile {value!r} (known: {', '.join(PROFILES)})")
        return value


class Broker(Strict):
    server_clock: str = Field(NEW_YORK_CLOSE, description="the server clock: new-york-close (UTC+2, UTC+3 in New "
                                                          "York's summer), UTC+HH:MM, or a time zone name")
    sessions: bool = Field(True, description="follow the market calendar (closed markets, weekends)")

    @model_validator(mode="after")
    def _clock(self) -> Broker:
        check_clock_rule(self.server_clock)
        return self


# --- the actions a step can take (exactly one per step) -----------------------------------------------


class Approve(Strict):
    """The platform approves a signal and places it: as approved, or with a deviation."""

    account: str
    signal: str = Field(min_length=1, max_length=64)
    symbol: str
    direction: Direction
    volume: float = Field(gt=0)
    sl_points: int = Field(0, ge=0)
    tp_points: int = Field(0, ge=0)
    slippage_points: int = Field(0, description="the fill is this many points worse than approved")
    placed_volume: float | None = Field(None, gt=0, description="the volume placed, when it differs")
    placed_direction: Direction | None = Field(None, description="the side placed, when it differs")
    placed: bool = Field(True, description="false: approved, never placed (a missed fill)")
    anonymous: bool = Field(False, description="placed with no comment, magic or ticket (no identity)")


class SignalRef(Strict):
    account: str
    signal: str


class PlatformClose(SignalRef):
    """The platform reports it closed a trade; ``execute: false`` — and never gets it done."""

    execute: bool = True


class ManualOpen(Strict):
    account: str
    symbol: str
    direction: Direction
    volume: float = Field(gt=0)
    name: str | None = Field(None, description="a name later steps use as `signal` to refer to this position")


class ManualClose(SignalRef):
    volume: float | None = Field(None, gt=0, description="part of the position (default: all of it)")


class Modify(SignalRef):
    sl_points: int = Field(ge=0, description="the new stop, points from the open price")
    tp_points: int = Field(ge=0, description="the new take profit, points from the open price")


class Touch(SignalRef):
    level: Literal["sl", "tp"]


class Money(Strict):
    account: str
    amount: float = Field(gt=0)


class Quote(Strict):
    symbol: str
    bid: float = Field(gt=0)
    ask: float | None = Field(None, gt=0)


class Move(Strict):
    """Move the price by points or percent, at once or evenly over a duration (one step a poll)."""

    symbol: str
    points: int | None = None
    percent: float | None = None
    over: Duration = 0.0

    @model_validator(mode="after")
    def _one(self) -> Move:
        if (self.points is None) == (self.percent is None):
            raise ValueError("give exactly one of points and percent")
        return self


class Gap(Strict):
    symbol: str
    percent: float


class Spread(Strict):
    symbol: str
    factor: float = Field(gt=1)
    ticks: int = Field(30, gt=0)


class Freeze(Strict):
    symbol: str
    duration: Duration = Field(gt=0)


class Disconnect(Strict):
    account: str
    duration: Duration = Field(gt=0)
    kind: Literal["server", "ipc"] = "server"


class WrongEquity(Strict):
    """The next reading of the account says this equity (a terminal glitch), the ones after it are right."""

    account: str
    equity: float


class BadRate(Strict):
    """The next reading converts to GBP at this rate (a bad conversion quote)."""

    account: str
    gbp_rate: float = Field(gt=0)


class Unlock(Strict):
    account: str
    by: str = "u-admin"
    reason: str = "reviewed"


ACTIONS: dict[str, type[BaseModel] | None] = {
    "approve": Approve, "platform_close": PlatformClose, "manual_open": ManualOpen, "manual_close": ManualClose,
    "modify": Modify, "touch": Touch, "deposit": Money, "withdraw": Money, "credit": Money, "quote": Quote,
    "move": Move, "gap": Gap, "spread": Spread, "freeze": Freeze, "disconnect": Disconnect,
    "wrong_equity": WrongEquity, "bad_rate": BadRate, "unlock": Unlock, "restart_worker": None,
}


class Step(Strict):
    """When (``at`` from the start or a UTC date-time, or ``after`` the previous step) and one action."""

    at: Duration | AwareDatetime | None = None
    after: Duration | None = None
    note: str | None = None
    approve: Approve | None = None
    platform_close: PlatformClose | None = None
    manual_open: ManualOpen | None = None
    manual_close: ManualClose | None = None
    modify: Modify | None = None
    touch: Touch | None = None
    deposit: Money | None = None
    withdraw: Money | None = None
    credit: Money | None = None
    quote: Quote | None = None
    move: Move | None = None
    gap: Gap | None = None
    spread: Spread | None = None
    freeze: Freeze | None = None
    disconnect: Disconnect | None = None
    wrong_equity: WrongEquity | None = None
    bad_rate: BadRate | None = None
    unlock: Unlock | None = None
    restart_worker: Literal[True] | None = None

    @model_validator(mode="after")
    def _one_action(self) -> Step:
        given = [name for name in ACTIONS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"a step takes exactly one action of {', '.join(ACTIONS)}; got {given or 'none'}")
        if self.at is not None and self.after is not None:
            raise ValueError("give `at` or `after`, not both")
        return self

    @property
    def action(self) -> tuple[str, Any]:
        name = next(name for name in ACTIONS if getattr(self, name) is not None)
        return name, getattr(self, name)


class Expected(Strict):
    """A decision the scenario must produce (every given field must match), or must not (``count: 0``)."""

    type: str = Field(description="the event type, e.g. DivergenceDetected, GuardAlertRaised, ClosePosition")
    account: str | None = None
    reason: str | None = Field(None, description="divergence reason, or close reason of a command or result")
    alert_type: str | None = None
    action: str | None = Field(None, description="a guard alert's action_taken")
    status: str | None = Field(None, description="a guard alert's status, or a reconciliation row's")
    symbol: str | None = None
    contains: str | None = Field(None, description="text the decision's payload (as JSON) contains")
    count: int | None = Field(None, ge=0, description="exactly this many (default: at least one)")


class Scenario(Strict):
    """A scripted market and platform, played in virtual time through the production rules."""

    name: str
    description: str = ""
    seed: int = 0
    start: AwareDatetime = datetime.fromtimestamp(DEFAULT_START, UTC)
    duration: Duration | None = Field(None, description="how long to run (default: the last step + 60 s)")
    poll_interval: Duration = Field(1.0, gt=0)
    broker: Broker = Broker()
    guard: dict[str, Any] = Field(default_factory=dict, description="GuardSettings fields to override")
    accounts: list[Account] = Field(min_length=1)
    steps: list[Step] = Field(default_factory=list)
    expect: list[Expected] = Field(default_factory=list)

    @field_validator("guard")
    @classmethod
    def _guard(cls, value: dict[str, Any]) -> dict[str, Any]:
        """An unknown or invalid guard setting is refused before anything runs."""
        unknown = sorted(set(value) - set(GuardSettings.model_fields))
        if unknown:
            raise ValueError(f"unknown guard setting(s) {', '.join(unknown)} (see docs/configuration.md)")
        try:
            GuardSettings(**value)
        except ValidationError as error:
            raise ValueError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())) from None
        return value

    @model_validator(mode="after")
    def _references(self) -> Scenario:
        ids = [a.id for a in self.accounts]
        if len(set(ids)) != len(ids):
            raise ValueError("two accounts have the same id")
        for i, step in enumerate(self.steps):
            account = getattr(step.action[1], "account", None)
            if account is not None and account not in ids:
                raise ValueError(f"steps[{i}]: unknown account {account!r} (accounts: {', '.join(ids)})")
        return self

    def times(self) -> list[datetime]:
        """Each step's true UTC time, in the order given (``after`` counts from the step before)."""
        times: list[datetime] = []
        for step in self.steps:
            previous = times[-1] if times else self.start
            if isinstance(step.at, datetime):
                times.append(step.at.astimezone(UTC))
            elif step.at is not None:
                times.append(self.start + timedelta(seconds=step.at))
            else:
                times.append(previous + timedelta(seconds=step.after or 0.0))
        return times

    def end(self) -> datetime:
        if self.duration is not None:
            return self.start + timedelta(seconds=self.duration)
        return max([self.start, *self.times()]) + timedelta(seconds=60)


class ScenarioError(ValueError):
    """A scenario file that cannot run; the message names the file, the line and the field."""


def load(path: Path | str) -> Scenario:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ScenarioError(f"{path}: cannot read it: {error.strerror}") from None
    return parse(text, name=str(path))


def parse(text: str, *, name: str = "<scenario>") -> Scenario:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f"{mark.line + 1}" if mark is not None else "?"
        raise ScenarioError(f"{name}:{line}: not valid YAML: {getattr(error, 'problem', error)}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{name}:1: a scenario is a mapping (name, accounts, steps, expect)")
    try:
        return Scenario.model_validate(data)
    except ValidationError as error:
        raise ScenarioError("\n".join(_located(name, node, e) for e in error.errors())) from None


def _located(name: str, root: yaml.Node | None, error: Any) -> str:
    loc = [part for part in error["loc"] if not (isinstance(part, str) and part[:1].isupper() or "[" in str(part))]
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "(top level)"
    return f"{name}:{_line(root, loc)}: {field}: {error['msg']}"


def _line(node: yaml.Node | None, loc: list[Any]) -> int:
    """The line of the deepest node the error's path reaches (1-based)."""
    line = node.start_mark.line + 1 if node is not None else 1
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
        if child is None:
            break
        node, line = child, child.start_mark.line + 1
    return line


def json_schema() -> str:
    schema = Scenario.model_json_schema()
    schema["$id"] = "scenario.v1.schema.json"
    schema["title"] = "reconguard scenario (reconguard simulate)"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schema(path: Path = SCHEMA_FILE) -> Path:
    path.write_text(json_schema())
    return path
