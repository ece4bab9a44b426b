"""What if: the guard's decisions over recorded history under other settings, beside what really happened.

``Changes`` says what differs from the settings in force: guard settings and account levels
(``--set guard.critical_drawdown_percent=8``), a profile for every account (``--profile``), or a
settings file of the same keys. ``what_if`` replays the recorded inputs through the worker's
processors in virtual time (``simulation/worker.py``) with the changed settings, takes the guard
liquidations it decides, and sets them beside the liquidations really ordered (the recorded close
commands): a liquidation is the same decision when it has the same account, reason and trigger (the
report that confirmed the breach); the others would not have happened, or would have.

The replay sees the market and the accounts as they really went, the real closes included: after a
liquidation that would not have happened, the account's later readings are still those of the
closed account. Nothing is written anywhere: the history is read, the rules run in memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from infra.settings import DEFAULT_LEVELS, AccountLevels, GuardSettings
from schemas import Envelope
from schemas.commands import ClosePosition
from schemas.common import CloseReason
from simulation.worker import Worker, replay

LIQUIDATIONS = (CloseReason.DRAWDOWN_GUARD, CloseReason.DAILY_LOSS_GUARD)
WOULD_NOT, WOULD = "would_not_have_happened", "would_have_happened"


class ChangeError(ValueError):
    """A change that cannot be applied (unknown key, bad value, unknown profile); the message says which."""


@dataclass(frozen=True)
class Changes:
    guard: dict[str, Any] = field(default_factory=dict)  # GuardSettings fields
    levels: dict[str, Any] = field(default_factory=dict)  # AccountLevels fields, for every account

    @classmethod
    def parse(cls, assignments: Iterable[str] = (), *, profile: str | None = None,
              file: Path | None = None) -> Changes:
        values: dict[str, Any] = {}
        if file is not None:
            values |= _flatten(_load(file))
        for assignment in assignments:
            key, sep, text = assignment.partition("=")
            if not sep or not key.startswith("guard."):
                raise ChangeError(f"--set {assignment!r}: expected guard.FIELD=VALUE")
            values[key.removeprefix("guard.")] = _value(text)
        if profile is not None:
            values["profile"] = profile
        guard = {k: v for k, v in values.items() if k in GuardSettings.model_fields}
        levels = {k: v for k, v in values.items() if k in AccountLevels.model_fields}
        unknown = sorted(set(values) - set(guard) - set(levels))
        if unknown:
            raise ChangeError(f"unknown setting(s): {', '.join('guard.' + k for k in unknown)}")
        return cls(guard, levels)

    def applied(self, guard: GuardSettings) -> GuardSettings:
        try:
            changed = GuardSettings.model_validate(guard.model_dump() | self.guard)
        except ValueError as error:
            raise ChangeError(str(error)) from None
        name = self.levels.get("profile")
        if name is not None and name not in changed.profiles:
            raise ChangeError(f"no guard profile {name!r}; known: {', '.join(sorted(changed.profiles))}")
        return changed

    def levels_of(self, recorded: AccountLevels) -> AccountLevels:
        try:
            return AccountLevels.model_validate(recorded.model_dump() | self.levels)
        except ValueError as error:
            raise ChangeError(str(error)) from None


@dataclass(frozen=True)
class Liquidation:
    account_id: str
    reason: str
    trigger: str  # the id of the report that confirmed the breach
    warned_at: str
    ordered_at: str
    loss_percent: float
    loss_gbp: float
    equity_gbp: float
    threshold_percent: float
    profile: str | None


@dataclass(frozen=True)
class Difference:
    account_id: str
    change: str  # WOULD_NOT or WOULD
    liquidation: Liquidation


@dataclass(frozen=True)
class Outcome:
    real: list[Liquidation]
    simulated: list[Liquidation]
    differences: list[Difference]
    inputs: int
    unreproduced: list[Difference] = field(default_factory=list)  # the replay differs even unchanged

    def as_json(self) -> dict[str, Any]:
        def rows(found: list[Difference]) -> list[dict[str, Any]]:
            return [{"account_id": d.account_id, "change": d.change} | asdict(d.liquidation) for d in found]

        return {"inputs_replayed": self.inputs, "real_liquidations": len(self.real),
                "simulated_liquidations": len(self.simulated), "differences": rows(self.differences),
                "unreproduced": rows(self.unreproduced)}


def what_if(inputs: list[Envelope[Any]], decided: list[Envelope[Any]], *, guard: GuardSettings,
            recorded_levels: Mapping[str, AccountLevels], changes: Changes,
            until: datetime | None = None) -> Outcome:
    """Replay ``inputs`` (time order) with ``changes`` and compare its liquidations with ``decided``'s.

    Virtual time runs to ``until`` (default: the latest recorded event), so a liquidation whose grace
    ends after the last report is still ordered. The replay runs a second time without the changes:
    what even that one decides differently from the record (a race the real worker's lag decided, such
    as a broker's stop-out before a grace ended) is listed as ``unreproduced``, not blamed on the change."""
    changed = changes.applied(guard)
    if until is None:  # the record ends with its latest event, a close command included
        until = max((e.occurred_at for e in (*inputs[-1:], *decided)), default=None)
    real = liquidations(decided)
    simulated = _replayed(inputs, changed, recorded_levels, changes, until)
    baseline = _replayed(inputs, guard, recorded_levels, Changes(), until) if changes != Changes() else simulated
    unreproduced = differences(real, baseline)
    artefacts = {_key(d) for d in unreproduced}
    found = [d for d in differences(real, simulated) if _key(d) not in artefacts]
    return Outcome(real, simulated, found, len(inputs), unreproduced)


def _replayed(inputs: list[Envelope[Any]], guard: GuardSettings, recorded_levels: Mapping[str, AccountLevels],
              changes: Changes, until: datetime | None) -> list[Liquidation]:
    levels = {account: changes.levels_of(recorded_levels.get(account, DEFAULT_LEVELS))
              for account in {e.account_id for e in inputs}}
    worker = Worker(guard=guard, levels=lambda account: levels.get(account, DEFAULT_LEVELS))
    return liquidations(output for _, output in replay(worker, inputs, until=until))


def _key(d: Difference) -> tuple[str, str, str, str]:
    return d.change, d.account_id, d.liquidation.reason, d.liquidation.trigger


def liquidations(commands: Iterable[Envelope[Any]]) -> list[Liquidation]:
    """One per trigger: the first close command a guard liquidation ordered (retries are the same decision)."""
    found: dict[tuple[str, str, str], Liquidation] = {}
    for event in commands:
        command = event.payload
        if not isinstance(command, ClosePosition) or command.reason not in LIQUIDATIONS:
            continue
        d = command.details
        trigger = str(d.get("trigger_event_id") or event.correlation_id or event.event_id)
        key = (event.account_id, command.reason.value, trigger)
        if key not in found:
            found[key] = _liquidation(event.account_id, command.reason, trigger, event.occurred_at, d)
    return sorted(found.values(), key=lambda x: (x.account_id, x.ordered_at))


def _liquidation(account_id: str, reason: CloseReason, trigger: str, at: datetime, d: dict[str, Any]) -> Liquidation:
    drawdown = reason is CloseReason.DRAWDOWN_GUARD
    profile = d.get("profile")
    if drawdown:
        loss_percent = d.get("max_loss_percent", d.get("drawdown_percent", 0.0))
        reference = d.get("max_loss_reference_gbp", d.get("peak_equity_gbp", 0.0))
        loss_gbp = max(0.0, float(reference) - float(d.get("equity_gbp", 0.0)))
    else:
        loss_percent, loss_gbp = d.get("daily_loss_percent", 0.0), float(d.get("daily_loss_gbp", 0.0))
    return Liquidation(account_id, reason.value, trigger, str(d.get("warning_at", "")),
                       str(d.get("ordered_at", at.isoformat())), round(float(loss_percent), 4), round(loss_gbp, 4),
                       float(d.get("equity_gbp", 0.0)), float(d.get("threshold_percent", 0.0)),
                       f"{profile['name']}@{profile['version']}" if isinstance(profile, dict) else None)


def differences(real: list[Liquidation], simulated: list[Liquidation]) -> list[Difference]:
    def key(x: Liquidation) -> tuple[str, str, str]:
        return x.account_id, x.reason, x.trigger

    real_keys, simulated_keys = {key(x) for x in real}, {key(x) for x in simulated}
    found = [Difference(x.account_id, WOULD_NOT, x) for x in real if key(x) not in simulated_keys]
    found += [Difference(x.account_id, WOULD, x) for x in simulated if key(x) not in real_keys]
    return sorted(found, key=lambda d: (d.account_id, d.liquidation.ordered_at, d.change))


def table_rows(outcome: Outcome) -> list[tuple[str, ...]]:
    return [(d.account_id, "would not" if d.change == WOULD_NOT else "would", d.liquidation.reason,
             d.liquidation.ordered_at[:19].replace("T", " "),
             f"{d.liquidation.loss_percent:.2f}%", f"{d.liquidation.loss_gbp:.2f}",
             f"{d.liquidation.threshold_percent:g}%", d.liquidation.profile or "—") for d in outcome.differences]


TABLE_HEADERS = ("account", "liquidated?", "reason", "ordered at (UTC)", "loss", "loss GBP", "level", "profile")


def dumps(outcome: Outcome) -> str:
    return json.dumps(outcome.as_json(), indent=2, sort_keys=True)


def _load(file: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ChangeError(f"{file}: {error}") from None
    if not isinstance(data, dict):
        raise ChangeError(f"{file}: expected a mapping such as {{guard: {{critical_drawdown_percent: 8}}}}")
    return data


def _flatten(data: dict[str, Any]) -> dict[str, Any]:
    """``{guard: {a: 1}}`` (or ``{"guard.a": 1}``) to ``{a: 1}``."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key == "guard" and isinstance(value, dict):
            flat |= value
        elif key.startswith("guard."):
            flat[key.removeprefix("guard.")] = value
        else:
            raise ChangeError(f"settings file: {key!r} is not under guard")
    return flat


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
