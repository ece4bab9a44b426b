"""The streams worker's processors in memory, on a virtual clock: what ``streams/app.py`` does, minus I/O.

``Worker.process(event)`` hands an event to every processor that reads its type (the same rules
and the same routing as ``StreamsRuntime``), keeps each account's new state, and returns what the
rules decided. Outputs the worker itself reads back (its close commands, on close-commands) are fed
in again right after the event, as the topic would deliver them. ``Worker.sweep(now)`` is the
worker's timer: due liquidations and the alert tracker's retries and answer timeouts.
``replay(worker, events)`` feeds events in time order and sweeps in between, on the sweep grid,
only when something is due, so a day of history costs what its events cost.

Feed it the worker's outside inputs only (account, position and tick reports, approved trades and
platform closes, close results, unlocks): its own close commands are read back here, so a recorded
command fed in as well would be handled twice. ``levels`` gives each account's guard levels (the
``users`` row in production). After a run, ``states`` holds every account's state per processor,
and ``failures`` the events a rule raised on (the worker dead-letters them and goes on).

Nothing here reads the wall clock: ``now`` is the event's own time or the caller's virtual time,
so the same inputs give the same outputs (ids included, as they are derived from their causes).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from infra.settings import DEFAULT_LEVELS, AccountLevels, GuardSettings
from schemas import Envelope
from schemas.commands import ClosePosition
from schemas.locks import UnlockAccount
from schemas.platform import TradeApproved, TradeClosedByPlatform
from schemas.reports import AccountReport, AccountSyncFailed, PositionReport, TickReport
from schemas.results import (
    PositionClosed,
    PositionCloseDeferred,
    PositionCloseFailed,
    PositionCloseSuperseded,
)
from streams.alerts import lifecycle
from streams.alerts.state import ORDERED, AlertsState
from streams.decisions import Decision
from streams.drawdown import liquidation
from streams.drawdown import rules as drawdown
from streams.drawdown.state import DrawdownState
from streams.market import rules as market
from streams.reconciliation import rules as reconciliation
from streams.reconciliation.state import ReconciliationState
from streams.state import dump_state, load_state

log = logging.getLogger(__name__)

Levels = Callable[[str], AccountLevels]
#: What the worker reads back of its own outputs (close-commands is one of its input topics).
READ_BACK = (ClosePosition,)
DEFAULT_SWEEP = timedelta(seconds=0.2)  # WorkerSettings.sweep_interval_seconds' default


@dataclass(frozen=True)
class Rule:
    """One processor: its name (the state table's), the payload types it reads, its state and step."""

    name: str
    reads: tuple[type, ...]
    state_type: type
    step: Callable[[Worker, Any, Envelope[Any], datetime], Decision[Any]]


#: The processors of ``StreamsRuntime``, in its order, reading the same types (a unit test compares them).
RULES: tuple[Rule, ...] = (
    Rule("reconciliation", (PositionReport, AccountSyncFailed, TradeApproved, TradeClosedByPlatform, ClosePosition,
                            PositionClosed, PositionCloseFailed), ReconciliationState,
         lambda w, state, event, now: reconciliation.handle(state, event, w.guard)),
    Rule("drawdown", (AccountReport, AccountSyncFailed, PositionReport, ClosePosition, UnlockAccount), DrawdownState,
         lambda w, state, event, now: drawdown.handle(state, event, w.levels(event.account_id), w.guard, now)),
    Rule("market", (TickReport, PositionReport), market.MarketState,
         lambda w, state, event, now: market.handle(state, event, w.guard)),
    Rule("alerts", (ClosePosition, PositionClosed, PositionCloseFailed, PositionCloseSuperseded,
                    PositionCloseDeferred, PositionReport, UnlockAccount), AlertsState,
         lambda w, state, event, now: lifecycle.handle(state, event, w.guard)),
)


@dataclass(frozen=True)
class RuleFailed:
    """A rule that raised on an event: the worker dead-letters the event and goes on (so does this)."""

    rule: str
    event: Envelope[Any]
    error: str


@dataclass
class Worker:
    """The four processors' states per account, and the routing of events to their rules."""

    guard: GuardSettings
    levels: Levels = field(default=lambda account_id: DEFAULT_LEVELS)
    states: dict[str, dict[str, Any]] = field(default_factory=lambda: {rule.name: {} for rule in RULES})
    failures: list[RuleFailed] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._routes: dict[type, tuple[Rule, ...]] = {}
        for rule in RULES:
            for kind in rule.reads:
                self._routes[kind] = self._routes.get(kind, ()) + (rule,)

    def state(self, rule: str, account_id: str) -> Any:
        """An account's state in one processor (its empty state if it has none yet)."""
        known = self.states[rule].get(account_id)
        return known if known is not None else _rule(rule).state_type()

    def process(self, event: Envelope[Any], now: datetime | None = None) -> list[Envelope[Any]]:
        """Run one event through every rule that reads it, then what the worker reads back of the outputs."""
        now = now or event.occurred_at
        outputs = self._step_all(event, now)
        return self._with_read_back(outputs, now) if outputs else outputs  # most events decide nothing

    def quote(self, account_id: str, tick: TickReport, now: datetime,
              event: Callable[[], Envelope[TickReport]]) -> list[Envelope[Any]]:
        """``process`` of a tick report polled at ``now`` (the market guard alone reads one), its envelope
        made by ``event`` only when the guard closes on the quote or fails on it: an id is then needed
        (the cause of the close, the dead letter's), and most quotes need none. A poll has one tick
        report per held symbol, and their envelopes were the largest share of a poll's own cost."""
        table = self.states["market"]
        state = table.get(account_id)
        try:
            state, breach = market.see_quote(market.MarketState() if state is None else state, tick, now, self.guard)
            decision = market.close(state, event(), breach, self.guard) if breach is not None else None
        except Exception as error:  # as ``_step_all``: the event is dead-lettered and the state kept
            failed = event()
            log.exception("market rule failed on %s %s", failed.event_type, failed.event_id)
            self.failures.append(RuleFailed("market", failed, repr(error)))
            return []
        if decision is None:
            table[account_id] = state
            return []
        table[account_id] = decision.state
        return self._with_read_back(list(decision.outputs), now)

    def sweep(self, now: datetime) -> list[Envelope[Any]]:
        """The worker's timer at ``now``: due liquidations, then the alerts' retries and timeouts."""
        outputs: list[Envelope[Any]] = []
        for account_id, state in sorted(self.states["drawdown"].items()):
            if state.pending is not None and state.pending.deadline <= now:
                outputs += self._keep("drawdown", account_id, liquidation.fire_due(state, now))
        for account_id, state in sorted(self.states["alerts"].items()):
            if lifecycle.due(state, now, self.guard):
                outputs += self._keep("alerts", account_id, lifecycle.fire_due(state, now, self.guard))
        return self._with_read_back(outputs, now)

    def next_due(self) -> datetime | None:
        """The earliest time a sweep would do something (a deadline, a retry, an answer timeout)."""
        times = [s.pending.deadline for s in self.states["drawdown"].values() if s.pending is not None]
        timeout = timedelta(seconds=self.guard.liquidation_answer_timeout_seconds)
        for state in self.states["alerts"].values():
            for alert in state.alerts.values():
                if alert.done_at is not None:
                    continue
                if alert.retry_at is not None:
                    times.append(alert.retry_at)
                times += [t.at + timeout for t in alert.tickets.values() if t.status == ORDERED and t.at is not None]
        return min(times, default=None)

    def restart(self) -> None:
        """A worker restart: every state comes back from its table as it was written (JSON round trip)."""
        for rule in RULES:
            table = self.states[rule.name]
            for account_id, state in table.items():
                table[account_id] = load_state(rule.state_type, dump_state(state))

    # --- plumbing -------------------------------------------------------------------------------------

    def _with_read_back(self, outputs: list[Envelope[Any]], now: datetime) -> list[Envelope[Any]]:
        """``outputs``, each followed by what the rules decide when the worker reads it back from its topic."""
        if not any(isinstance(output.payload, READ_BACK) for output in outputs):
            return outputs  # most events: nothing to read back
        done: list[Envelope[Any]] = []
        queue = deque(outputs)
        while queue:
            output = queue.popleft()
            done.append(output)
            if isinstance(output.payload, READ_BACK):
                queue.extend(self._step_all(output, now))
        return done

    def _step_all(self, event: Envelope[Any], now: datetime) -> list[Envelope[Any]]:
        """Every rule that reads the event, in order, each on the account's state in its own table.
        One loop, no call per rule beyond the rule's own: a poll hands several events to each account."""
        outputs: list[Envelope[Any]] = []
        account_id = event.account_id
        for rule in self._routes.get(type(event.payload), ()):
            table = self.states[rule.name]
            state = table.get(account_id)
            try:
                decision = rule.step(self, rule.state_type() if state is None else state, event, now)
            except Exception as error:  # one account's bad event must not stop the others (as in the worker)
                log.exception("%s rule failed on %s %s", rule.name, event.event_type, event.event_id)
                self.failures.append(RuleFailed(rule.name, event, repr(error)))
                continue
            table[account_id] = decision.state
            if decision.outputs:
                outputs += decision.outputs
        return outputs

    def _keep(self, rule: str, account_id: str, decision: Decision[Any]) -> list[Envelope[Any]]:
        self.states[rule][account_id] = decision.state
        return list(decision.outputs)


def _rule(name: str) -> Rule:
    return next(rule for rule in RULES if rule.name == name)


def on_grid(at: datetime, interval: timedelta) -> datetime:
    """The first tick of a timer firing every ``interval`` (counted from the epoch) at or after ``at``."""
    step = interval.total_seconds()
    ticks = math.ceil(round(at.timestamp() / step, 9))
    return datetime.fromtimestamp(ticks * step, UTC)


def replay(worker: Worker, events: Iterable[Envelope[Any]], *, sweep_interval: timedelta = DEFAULT_SWEEP,
           until: datetime | None = None) -> Iterator[tuple[datetime, Envelope[Any]]]:
    """Feed ``events`` (in time order) and sweep between them when something is due; yield (time, output).

    A sweep runs on the timer's grid at the first tick at or after what is due, as the worker's timer
    would fire it; after the last event, sweeps go on until nothing is due or ``until``."""
    for event in events:
        yield from sweep_until(worker, event.occurred_at, sweep_interval=sweep_interval, inclusive=False)
        for output in worker.process(event):
            yield event.occurred_at, output
    if until is not None:
        yield from sweep_until(worker, until, sweep_interval=sweep_interval, inclusive=True)


def sweep_until(worker: Worker, end: datetime, *, sweep_interval: timedelta = DEFAULT_SWEEP,
                inclusive: bool = True) -> Iterator[tuple[datetime, Envelope[Any]]]:
    """Run every sweep that is due before ``end`` (at ``end`` too if ``inclusive``); yield (time, output)."""
    last: datetime | None = None
    while (due := worker.next_due()) is not None:
        at = on_grid(due, sweep_interval)
        if last is not None and at <= last:  # still due after a sweep: the timer fires again a tick later
            at = last + sweep_interval
        if at > end or (at == end and not inclusive):
            return
        last = at
        for output in worker.sweep(at):
            yield at, output
