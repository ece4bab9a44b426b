"""A scenario played in virtual time: the simulator, the poller's parsing, the worker's rules, the executor.

Nothing here waits for the wall clock. The loop moves a virtual clock from event to event: a step of
the scenario, a poll (every ``poll_interval``), a sweep of the worker's timer (only when something is
due), the end of a fault. At each poll every account's terminal is read as the poller reads it
(``read_account``, ``conclude_poll``), the reports go through the worker's processors
(``simulation.worker``), their close commands through the close executor (``Executor.handle`` with
its in-memory ledger, trading on the simulated terminal), and its results back into the worker.

Every id is derived from the seed and the scenario (observations) or from its cause (decisions), and
every time is the virtual clock's, so the same file and seed give a byte-identical decision log.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from infra.brokerclock import BrokerClock, server_clock_at
from infra.settings import AccountLevels, GuardSettings
from producers.demo.accounts import DemoUser, attach
from producers.demo.script import DemoPlatform
from producers.executor.ledger import LogLedger
from producers.executor.loop import Executor, ExecutorConfig, market_calendar
from producers.mt5.gateway import Gateway
from producers.mt5.simulator import SimulatedBroker
from producers.platform import LockedAccounts, approval_event_id
from producers.poller.client import AccountRead, Quotes, ReadFailed, SymbolCache, read_account
from producers.poller.parsing import PollState, conclude_poll, latest_tick_msc, sync_failed
from schemas import Envelope, observed
from schemas.commands import ClosePosition
from schemas.envelope import derived_uuid
from schemas.platform import TradeApproved, TradeClosedByPlatform
from schemas.reports import AccountReport, AccountSyncFailed, PositionReport, TickReport
from simulation.actions import act, apply_move
from simulation.scenario import Account, Move, Scenario
from simulation.worker import DEFAULT_SWEEP, Worker, on_grid

FIRST_LOGIN = 51_000_001
#: The phases of one instant of the loop, in its order (a timed fault's end logs nothing): with the place
#: in the phase (the step's position, 0, the account's index), what orders a line among the instant's.
STEP, SWEEP, POLL = 1, 2, 3


@dataclass
class Polled:
    """One account as the poller sees it: its terminal, what it remembers, its clock."""

    user: DemoUser
    levels: AccountLevels
    terminal: Gateway
    seq: int
    clock: BrokerClock
    state: PollState = field(default_factory=PollState)
    cache: SymbolCache = field(default_factory=SymbolCache)
    glitch: dict[str, float] = field(default_factory=dict)  # the next reading's wrong figures


class _Executor(Executor):
    """The close executor with its in-memory ledger; results are returned, not published."""

    async def _publish(self, results: list[Envelope[Any]]) -> list[Envelope[Any]]:
        return results


REPORTS = ("AccountReport", "PositionReport", "AccountSyncFailed")
#: One decision log line: ``json.dumps(d, sort_keys=True, separators=(",", ":"))``, with one encoder for all.
LINE = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def _line_encoder() -> Callable[[dict[str, Any]], str]:
    """``LINE.encode``, the same text, from the C encoder made once rather than at every line (``encode``
    makes one per call: a third of a line's cost, at two lines an account-poll). Without the C
    accelerator (not CPython), ``LINE.encode`` itself."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return LINE.encode
    encoder = make(None, LINE.default, json.encoder.encode_basestring_ascii, None, LINE.key_separator,
                   LINE.item_separator, LINE.sort_keys, LINE.skipkeys, LINE.allow_nan)
    return lambda d: "".join(encoder(d, 0))


encode_line = _line_encoder()

Sink = Callable[[str], object]


class DecisionLog:
    """The decision log as it is made: each line encoded once, when it is made, and handed to ``sink``
    (a file's writer, or by default the ``lines`` list kept here). Beside it only what the summary table
    and the scenario's expectations read, counted as the lines go by: a day's log (two million lines)
    kept as dicts and encoded at the end took a gigabyte, and the run slowed as its memory grew."""

    def __init__(self, expect: Sequence[Any] = (), sink: Sink | None = None) -> None:
        self.lines: list[str] | None = [] if sink is None else None  # None: written to the sink, not kept
        self._sink: Sink = self.lines.append if self.lines is not None else sink  # type: ignore[assignment]
        self.expect = list(expect)
        self.found = [0] * len(self.expect)  # per expectation, the lines that match it
        self.counts: Counter[tuple[str, str, str]] = Counter()  # the summary's (account, type, kind)
        self.written = 0

    def add(self, d: dict[str, Any]) -> None:
        self._sink(encode_line(d))
        self.written += 1
        if d["type"] not in REPORTS:
            self.counts[d["account"], d["type"], _kind(d)] += 1
        for i, expected in enumerate(self.expect):
            if _matches(expected, d):
                self.found[i] += 1


@dataclass
class Outcome:
    """What a run produced: its decision log's counts (and its lines, when kept) and the run's size."""

    log: DecisionLog = field(repr=False)  # asyncio's task repr shows the result: not a day's log
    polls: int
    simulated_seconds: float
    shard_cpu_seconds: tuple[float, ...] = ()  # each worker process's CPU seconds, when shards played it
    played_by: int = 1  # processes that played it to its end (1 too when the shards fell back: ``simulation.shards``)

    @property
    def lines(self) -> list[str]:
        """The decision log, one JSON object a line (when it was kept rather than written to a sink)."""
        if self.log.lines is None:
            raise ValueError("the decision log went to its sink; it was not kept")
        return self.log.lines

    @property
    def decisions(self) -> list[dict[str, Any]]:
        """The decision log's lines decoded (for tests and comparisons: a run keeps only the lines)."""
        return [json.loads(line) for line in self.lines]

    def summary(self) -> list[tuple[str, str, str, int]]:
        """(account, type, reason or status, count), sorted: the summary table's rows."""
        return sorted((a, t, k, n) for (a, t, k), n in self.log.counts.items())


class Simulation:
    def __init__(self, scenario: Scenario, *, seed: int | None = None, log_reports: bool = True,
                 sink: Sink | None = None) -> None:
        """``sink`` takes each decision-log line as it is made (by default the log keeps them)."""
        self.scenario = scenario
        self.seed = scenario.seed if seed is None else seed
        self.guard = _with_clock_rules(GuardSettings(**scenario.guard), scenario.accounts)
        self.log_reports = log_reports
        self.now = scenario.start
        self.broker = SimulatedBroker(self.seed, start_time=scenario.start.timestamp(), markets=self.guard.markets,
                                      server_clock=scenario.broker.server_clock, sessions=scenario.broker.sessions)
        self.accounts: dict[str, Polled] = {}
        users, platform_terminals, executor_terminals = {}, {}, {}
        first_seq = int(scenario.start.timestamp() * 1000)
        for i, account in enumerate(scenario.accounts):
            user = _user(account, FIRST_LOGIN + i)
            self.broker.add_account(user.login, "demo", currency=user.currency, balance=user.balance,
                                    leverage=user.leverage, name=user.display_name)
            users[user.user_id] = user
            platform_terminals[user.user_id], executor_terminals[user.user_id] = attach(self.broker, user), \
                attach(self.broker, user)
            markets = self.guard.markets
            self.accounts[user.user_id] = Polled(user, AccountLevels(**account.levels.model_dump()),
                                                 attach(self.broker, user), first_seq, BrokerClock(
                markets.clock_rule(user.user_id, str(user.login)), markets.server_clock_assumed))
        self.locked = LockedAccounts()
        self.platform = DemoPlatform(self.broker, users=users, gateways=platform_terminals, publish=self._expect,
                                     locked=self.locked)
        self.executor = _Executor(gateways=executor_terminals, ledger=LogLedger(None), producer=None, prefix="",
                                  config=ExecutorConfig(next_open=market_calendar(self.guard)),
                                  clock=lambda: self.now)
        self.worker = Worker(self.guard, levels=lambda account_id: self.accounts[account_id].levels)
        self.sweep_interval = DEFAULT_SWEEP
        self.decision_log = DecisionLog(scenario.expect, sink)
        self.releases: list[tuple[datetime, int, Any]] = []  # (when, order, undo) of timed faults
        self.moves: list[tuple[Move, datetime, datetime, list[float]]] = []
        self.polls = 0
        #: The accounts polled, in order, each with its place (``POLL``, index); a shard polls some of them.
        self.polled = [((POLL, i), account) for i, account in enumerate(self.accounts.values())]
        self.place: tuple[int, int] = (STEP, 0)  # where in the instant the loop is (``simulation.shards``)
        self._logged_at: tuple[datetime | None, str, str] = (None, "", "")  # (now, utc, broker) of the last line

    # --- the loop -------------------------------------------------------------------------------------

    async def run(self) -> Outcome:
        s = self.scenario
        steps = sorted(zip(s.times(), range(len(s.steps)), s.steps, strict=True), key=lambda x: (x[0], x[1]))
        end, poll = s.end(), timedelta(seconds=s.poll_interval)
        next_poll, i = s.start, 0
        while True:
            due = self.worker.next_due()
            sweep_at = on_grid(max(due, self.now), self.sweep_interval) if due is not None else None
            candidates = [next_poll] + ([steps[i][0]] if i < len(steps) else []) + \
                ([sweep_at] if sweep_at is not None else []) + [r[0] for r in self.releases]
            t = min(candidates)
            if t > end:
                break
            self._advance(t)
            for when, order, undo in sorted(r for r in self.releases if r[0] <= t):
                undo()
            self.releases = [r for r in self.releases if r[0] > t]
            while i < len(steps) and steps[i][0] <= t:
                self.place = (STEP, i)
                await self._act(steps[i][2], steps[i][1])
                i += 1
            if sweep_at is not None and sweep_at <= t:
                self.place = (SWEEP, 0)
                await self.take(self.worker.sweep(t))
            if next_poll <= t:
                self._apply_moves(t)
                await self._poll_all()
                next_poll += poll
        return Outcome(self.decision_log, self.polls, (self.now - s.start).total_seconds())

    def _advance(self, t: datetime) -> None:
        self.now = max(self.now, t)
        self.broker.advance_to(self.now.timestamp())

    # --- the poller ------------------------------------------------------------------------------------

    async def _poll_all(self) -> None:
        """One round, as the poller's: the accounts share the round's quotes (one market, one quote per
        symbol) and the tick reports of the same quote (immutable), so N accounts cost one read per symbol."""
        self.polls += 1
        quotes: Quotes = {}
        tick_reports: dict[tuple[Any, ...], Any] = {}
        worker = self.worker
        for place, account in self.polled:
            self.place = place
            events, ticks, seq = self._poll(account, quotes, tick_reports)
            for event in events:
                outputs = worker.process(event, self.now)
                if outputs or worker.failures:  # most reports decide nothing: no coroutine for them
                    await self.take(outputs)
            user_id = account.user.user_id
            for tick in ticks:
                outputs = worker.quote(user_id, tick, self.now, partial(self._tick_event, tick, user_id, seq))
                if outputs or worker.failures:
                    await self.take(outputs)

    def _poll(self, a: Polled, quotes: Quotes, tick_reports: dict[tuple[Any, ...], Any]
              ) -> tuple[list[Envelope[Any]], tuple[TickReport, ...], int]:
        """One account's poll as the poller makes it: its reports' envelopes (position report first), with
        deterministic ids, then its tick reports (``_tick_event`` makes their envelopes), and its poll's number."""
        seq, at, user_id = a.seq, self.now, a.user.user_id
        a.seq += 1
        offset = a.clock.offset_minutes(at)
        server_now = server_clock_at(at, offset)
        try:
            read = read_account(a.terminal, login=a.user.login, cache=a.cache, previous=a.state.volumes,
                                pending=a.state.waiting, flows_since=a.state.flows_since,
                                server_now=int(server_now.timestamp()), quotes=quotes)
        except ReadFailed as failed:
            failure = sync_failed(user_id=user_id, login=a.user.login, poll_seq=seq, stage=failed.stage,
                                  error_code=failed.code, error_message=failed.message)
            return [self._observed(failure, user_id, f"{seq}")], (), seq
        a.clock.observe(latest_tick_msc(read.ticks.values()), at)
        if (learned := a.clock.offset_minutes(at)) != offset:  # the read taught the clock: read it again
            offset, server_now = learned, server_clock_at(at, learned)
        outcome = conclude_poll(_glitched(read, a.glitch), a.state, user_id=user_id, poll_seq=seq, offset=offset,
                                server_now=server_now, tick_reports=tick_reports)
        a.state, a.glitch = outcome.state, {}
        events = [self._observed(outcome.positions, user_id, f"{seq}"), self._observed(outcome.account, user_id, f"{seq}")]
        return events, outcome.ticks, seq

    def _tick_event(self, tick: TickReport, account_id: str, seq: int) -> Envelope[TickReport]:
        """A tick report's envelope, as the poller publishes it (the simulation makes one only when used)."""
        return self._observed(tick, account_id, f"{seq}/{tick.symbol}", report=False)

    def _observed(self, payload: Any, account_id: str, key: str, *, report: bool = True) -> Envelope[Any]:
        """The envelope of an observation; a report's summary goes into the log (a tick report's does not:
        the caller says which, rather than every tick asking its type)."""
        event_id = derived_uuid(f"scenario/{self.seed}/{account_id}/{payload.event_type}/{key}")
        event = observed(payload, account_id=account_id, occurred_at=self.now, event_id=event_id)
        if report and self.log_reports:
            self.log(event, _report_summary(payload))
        return event

    # --- the worker's outputs, the executor ----------------------------------------------------------------

    async def take(self, outputs: list[Envelope[Any]]) -> None:
        """Log the worker's decisions; hand close commands to the executor and its results back."""
        for failed in self.worker.failures:  # the worker dead-letters an event a rule raised on, and goes on
            self.log(failed.event, {"id": str(failed.event.event_id), "dead_lettered": f"{failed.rule} rule failed: "
                                                                                       f"{failed.error}"})
        self.worker.failures.clear()
        for output in outputs:  # all of them first: the worker publishes a batch's outputs together
            self.log(output, {"id": str(output.event_id), "payload": output.payload.model_dump(mode="json")})
            self.locked.apply(output)
        for output in outputs:
            if isinstance(output.payload, ClosePosition):
                for result in await self.executor.handle(output):
                    self.log(result, {"id": str(result.event_id), "payload": result.payload.model_dump(mode="json")})
                    await self.take(self.worker.process(result, self.now))

    def log(self, event: Envelope[Any], fields: dict[str, Any]) -> None:
        if self._logged_at[0] != self.now:  # most lines of a run share their time with the line before
            broker_time = datetime.fromtimestamp(
                self.broker.market.server_msc(round(self.now.timestamp() * 1000)) / 1000, UTC).replace(tzinfo=None)
            self._logged_at = (self.now, self.now.isoformat().replace("+00:00", "Z"), broker_time.isoformat())
        self.decision_log.add({"utc": self._logged_at[1], "broker": self._logged_at[2], "account": event.account_id,
                               "type": event.event_type, **fields})

    # --- the scenario's steps ---------------------------------------------------------------------------------

    async def _expect(self, trade: TradeApproved | TradeClosedByPlatform) -> None:
        if not self.observes(trade.user_id):  # a shard's other accounts: the platform acted, their shard logs it
            return
        event = observed(trade, account_id=trade.user_id, occurred_at=self.now, event_id=approval_event_id(trade))
        self.log(event, {"id": str(event.event_id), "payload": trade.model_dump(mode="json")})
        await self.take(self.worker.process(event, self.now))

    def observes(self, account_id: str) -> bool:
        """Whether this run polls, guards and logs the account (all of them, but in a shard)."""
        return True

    async def _act(self, step: Any, index: int) -> None:
        await act(self, step, index)

    def _apply_moves(self, t: datetime) -> None:
        """Price moves spread over a duration: each poll applies what is due by now."""
        for move in self.moves:
            apply_move(self, move, t)
        self.moves = [m for m in self.moves if m[2] > t]


REPORT_TYPES = (AccountReport, PositionReport, AccountSyncFailed)


def _report_summary(p: Any) -> dict[str, Any]:
    if isinstance(p, AccountReport):
        return {"equity": p.equity, "balance": p.balance, "gbp_rate": p.gbp_rate, "poll_seq": p.poll_seq,
                "server_time": None if p.server_time is None else p.server_time.isoformat()}
    if isinstance(p, PositionReport):
        return {"tickets": [x.ticket for x in p.positions], "closed_deals": [d.ticket for d in p.closed_deals]}
    return {"stage": p.stage, "error_code": p.error_code, "error": p.error_message}


def _glitched(read: AccountRead, glitch: dict[str, float]) -> AccountRead:
    """The read with a terminal glitch applied (a wrong equity, a bad conversion rate), if any."""
    if not glitch:
        return read
    info = read.info._replace(equity=glitch["equity"]) if "equity" in glitch else read.info
    return replace(read, info=info, gbp_rate=glitch.get("gbp_rate", read.gbp_rate))


def _with_clock_rules(guard: GuardSettings, accounts: list[Account]) -> GuardSettings:
    """The guard settings with each account's own broker clock rule (``markets.server_clocks``), if given."""
    rules = {a.id: a.server_clock for a in accounts if a.server_clock is not None}
    if not rules:
        return guard
    markets = guard.markets.model_copy(update={"server_clocks": guard.markets.server_clocks | rules})
    return guard.model_copy(update={"markets": markets})


def _user(account: Account, login: int) -> DemoUser:
    levels = account.levels
    return DemoUser(account.id, account.id, account.login or login, account.currency, 0,
                    levels.warning_drawdown_percent, levels.critical_drawdown_percent,
                    levels.daily_loss_limit_percent, balance=account.balance, leverage=account.leverage)


def _kind(d: dict[str, Any]) -> str:
    p = d.get("payload", {})
    for key in ("divergence_reason", "alert_type", "reason", "status"):
        if p.get(key):
            return str(p[key]) + (f"/{p['status']}" if key == "alert_type" and p.get("status") else "")
    return ""


def play(scenario: Scenario, *, seed: int | None = None, log_reports: bool = True, sink: Sink | None = None,
         jobs: int = 1) -> Outcome:
    """Run a scenario to its end (its own event loop: nothing waits on the wall clock); ``sink`` takes the
    decision log's lines as they are made, else the outcome keeps them. ``jobs`` > 1 plays the accounts in
    that many worker processes, with the same log and outcome (``simulation.shards``)."""
    if jobs > 1 and len(scenario.accounts) > 1:
        from simulation.shards import play_shards  # it builds on this module

        return play_shards(scenario, jobs=jobs, seed=seed, log_reports=log_reports, sink=sink)
    return asyncio.run(Simulation(scenario, seed=seed, log_reports=log_reports, sink=sink).run())


def unmet(scenario: Scenario, outcome: Outcome) -> list[str]:
    """The scenario's expectations that the decisions do not meet, each said in a sentence (counted by the
    run's log as its lines went by, when it was given the same expectations)."""
    log = outcome.log
    if log.expect != list(scenario.expect):
        log = DecisionLog(scenario.expect)
        for d in outcome.decisions:
            log.add(d)
    missed = []
    for expected, found in zip(scenario.expect, log.found, strict=True):
        wanted = expected.count
        if (wanted is None and found == 0) or (wanted is not None and found != wanted):
            said = {k: v for k, v in expected.model_dump().items() if v is not None and k != "count"}
            missed.append(f"expected {'at least one' if wanted is None else wanted} decision {said}; found {found}")
    return missed


def _matches(expected: Any, d: dict[str, Any]) -> bool:
    p = d.get("payload", {})
    reason = p.get("divergence_reason") or p.get("reason")
    checks = ((expected.type, d["type"]), (expected.account, d["account"]), (expected.reason, reason),
              (expected.alert_type, p.get("alert_type")), (expected.action, p.get("action_taken")),
              (expected.status, p.get("status")), (expected.symbol, p.get("symbol")))
    if expected.contains is not None and expected.contains not in json.dumps(p, sort_keys=True, separators=(",", ":")):
        return False
    return all(want is None or want == got for want, got in checks)
