"""A scenario played in real time through the real pipeline: ``reconguard simulate --pipeline``.

The virtual-time runner (``simulation.runner``) calls the production rules directly; this module
plays the same scenario file against the real services instead: the poller and the close executor
(``run_poller``, ``run_executor``) on simulated terminals, the Faust streams worker as a child process,
and the projector, all talking through the real broker and PostgreSQL. The simulator's clock follows
the wall clock (``drive_market``, as the demo of ``reconguard run`` does), each step runs when its
time comes, and the decisions are read back from the real topics into the decision log of
``simulation.runner`` (same lines, same summary).

What differs from virtual time, by construction:

- times are the run's true UTC (the wall clock), not the scenario's date; the simulated market opens
  at the wall-clock time and never closes (the guard's calendar is made always open to agree, as in
  the demo), so a scenario that depends on the market calendar (weekends, holidays, session breaks)
  plays in virtual time only;
- report ids are random (the poller's own), so every decision id, derived from its cause, differs;
- how many polls (and so reports, assessments and matches re-stated each poll) fall in the run
  depends on the wall clock.

``compared(decisions)`` is what both modes must agree on. Scenarios with a step outside ``SUPPORTED``
(``bad_rate`` and ``restart_worker`` need a hook the real services do not have) or that last longer
than ``MAX_SECONDS`` are refused before anything starts (``NotForPipeline``).

The caller provides the broker and the database and runs the pipeline's own services
(``reconguard/live_scenario.py`` does, with ``reconguard run``'s ``run_services``): ``LiveScenario``
is the simulated side (market, platform, traders, terminals) and the collector of decisions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from infra.dburl import plain_url
from infra.kafka import make_consumer, make_producer, publish
from infra.settings import AccountLevels, GuardSettings, Settings
from producers.accounts import AccountRef
from producers.demo.accounts import DEMO_PASSWORD, DemoUser, attach, upsert_users
from producers.demo.script import DemoPlatform
from producers.demo.service import drive_market
from producers.executor.service import run_executor
from producers.mt5.gateway import Gateway
from producers.mt5.simulator import SimulatedBroker
from producers.platform import LockedAccounts, follow_locks, publish_expected
from producers.poller.loop import PollerConfig
from producers.poller.parsing import sync_failed
from producers.poller.service import run_poller
from schemas import DecodeError, Envelope, decode, observed, utcnow
from schemas.deadletters import MessageDeadLettered
from schemas.envelope import DERIVED_ID_NAMESPACE
from schemas.locks import UnlockAccount
from schemas.platform import TradeApproved, TradeClosedByPlatform
from schemas.topics import (
    ACCOUNT_LOCKS,
    ACCOUNT_REPORTS,
    ACCOUNT_STATE,
    ALERTS,
    CLOSE_COMMANDS,
    CLOSE_RESULTS,
    DEAD_LETTERS,
    EXPECTED_TRADES,
    LOCK_COMMANDS,
    POSITION_REPORTS,
    RECONCILIATION,
    Topic,
    topic_by_name,
)
from simulation.actions import act, apply_move
from simulation.runner import (
    FIRST_LOGIN,
    REPORT_TYPES,
    DecisionLog,
    Outcome,
    _kind,
    _report_summary,
    _user,
    _with_clock_rules,
)
from simulation.scenario import Move, Scenario

log = logging.getLogger(__name__)

#: The longest scenario ``--pipeline`` plays (it takes as long on the wall clock).
MAX_SECONDS = 15 * 60
#: The actions played through the pipeline: on the shared simulator (``simulation.actions``), the poller's
#: terminal (``wrong_equity``) or the lock-commands topic (``unlock``). Any other is refused.
SUPPORTED = frozenset({"approve", "platform_close", "manual_open", "manual_close", "modify", "touch", "deposit",
                       "withdraw", "credit", "quote", "move", "gap", "spread", "freeze", "disconnect",
                       "wrong_equity", "unlock"})
#: Why the others are not (a new kind of step is refused until it is played here and checked).
UNSUPPORTED = {
    "bad_rate": "the real poller derives its conversion rate from quotes; there is no hook to falsify one reading",
    "restart_worker": "restarting the real worker process is not scripted yet",
}
#: Accounts no terminal has: a sync error going through the worker to Postgres shows the pipeline works (at the
#: start), or has taken what came before it (at the end). One each: the worker reports one outage once.
PROBES = ("sim-probe-start", "sim-probe-end")
#: The topics the decision log is read from (ticks are not logged, as in virtual time).
LOGGED: tuple[Topic, ...] = (EXPECTED_TRADES, LOCK_COMMANDS, ACCOUNT_REPORTS, POSITION_REPORTS, RECONCILIATION,
                             ACCOUNT_STATE, ALERTS, CLOSE_COMMANDS, CLOSE_RESULTS, ACCOUNT_LOCKS, DEAD_LETTERS)
#: Decisions whose number follows the number of polls (one per report, or re-stated on a poll), which
#: the wall clock decides: logged, but not compared between the two modes.
PER_POLL = frozenset({"AccountReport", "PositionReport", "AccountSyncFailed", "AccountAssessed",
                      "ReconciliationIndeterminate"})


class NotForPipeline(ValueError):
    """A scenario ``--pipeline`` cannot play (too long, or an action without a hook in the real services)."""


def check(scenario: Scenario) -> None:
    """Refuse, before anything starts, a scenario the pipeline cannot play as written."""
    seconds = (scenario.end() - scenario.start).total_seconds()
    if seconds > MAX_SECONDS:
        raise NotForPipeline(f"{scenario.name} lasts {seconds:g} s; --pipeline plays it on the wall clock and "
                             f"takes at most {MAX_SECONDS} s (play it in virtual time)")
    for i, step in enumerate(scenario.steps):
        name = step.action[0]
        if name not in SUPPORTED:
            why = UNSUPPORTED.get(name, "not played through the pipeline yet")
            raise NotForPipeline(f"steps[{i}].{name}: not supported with --pipeline: {why}")


def compared(decisions: list[dict[str, Any]]) -> Counter[tuple[Any, ...]]:
    """What the virtual-time and pipeline runs of a scenario must agree on, as a multiset of
    (type, account, reason or status, symbol, tickets): every approval, platform close and unlock, every
    match, divergence and resolution, guard alert, close command and result, lock and dead letter.
    Not compared: times and ids (the wall clock's, and derived from random report ids), prices and
    amounts (the market moves with the wall clock between a step and the next poll), and the decisions
    in ``PER_POLL``, whose number follows the number of polls."""
    def tickets(p: dict[str, Any]) -> tuple[int, ...]:
        found = [p.get("ticket"), p.get("mt5_position_id")] + list(p.get("alert_tickets") or ())
        return tuple(sorted({t for t in found if t is not None}))

    return Counter((d["type"], d["account"], _kind(d), d.get("payload", {}).get("symbol"),
                    tickets(d.get("payload", {}))) for d in decisions if d["type"] not in PER_POLL)


@dataclass
class Held:
    """One scenario account on the pipeline side: its user, levels, and the next reading's glitch."""

    user: DemoUser
    levels: AccountLevels
    glitch: dict[str, float] = field(default_factory=dict)


class Glitching:
    """A terminal whose next ``account_info`` reports the glitch's equity (``wrong_equity``), then is right."""

    def __init__(self, terminal: Gateway, held: Held) -> None:
        self._terminal, self._held = terminal, held

    def account_info(self) -> Any:
        info = self._terminal.account_info()
        if info is not None and "equity" in self._held.glitch:
            info = info._replace(equity=self._held.glitch.pop("equity"))
        return info

    def __getattr__(self, name: str) -> Any:
        return getattr(self._terminal, name)


class LiveScenario:
    """The simulated side of a scenario on the wall clock, as ``simulation.actions`` drives it (``sim``).

    ``settings`` must point at a broker and a database of the run's own (a fresh topic prefix and
    database): ``self.settings`` adds the scenario's guard settings, which every service then reads."""

    def __init__(self, settings: Settings, scenario: Scenario, *, seed: int | None = None) -> None:
        check(scenario)
        self.scenario = scenario
        self.seed = scenario.seed if seed is None else seed
        guard = _with_clock_rules(GuardSettings(**scenario.guard), scenario.accounts)
        guard = guard.model_copy(update={"markets": guard.markets.always_open()})
        self.settings = settings.model_copy(update={"guard": guard})
        self.broker = SimulatedBroker(self.seed, start_time=time.time(), markets=guard.markets,
                                      server_clock=scenario.broker.server_clock, sessions=False)
        self.accounts: dict[str, Held] = {}
        for i, account in enumerate(scenario.accounts):
            user = _user(account, FIRST_LOGIN + i)
            self.broker.add_account(user.login, DEMO_PASSWORD, currency=user.currency, balance=user.balance,
                                    leverage=user.leverage, name=user.display_name)
            self.accounts[user.user_id] = Held(user, AccountLevels(**account.levels.model_dump()))
        users = {a.user.user_id: a.user for a in self.accounts.values()}
        self.locked = LockedAccounts()
        self.platform = DemoPlatform(self.broker, users=users, locked=self.locked, publish=self._publish_trade,
                                     gateways={u: attach(self.broker, held.user) for u, held in self.accounts.items()})
        self.moves: list[tuple[Move, datetime, datetime, list[float]]] = []
        self.releases: list[tuple[datetime, int, Any]] = []
        self.started: datetime | None = None  # the scenario's start on the wall clock
        self.ended = asyncio.Event()  # every step played and the scenario's duration over
        self._producer: Any = None
        self.seen: list[Envelope[Any]] = []
        self._last_seen = time.monotonic()

    @property
    def now(self) -> datetime:
        return datetime.fromtimestamp(self.broker.now(), UTC)

    def wall(self, at: datetime) -> datetime:
        """A scenario time on the run's clock."""
        assert self.started is not None
        return self.started + (at - self.scenario.start)

    # --- before the services start -----------------------------------------------------------------------

    async def write_users(self) -> None:
        """Each account a ``users`` row with its guard levels (the worker reads them when it starts), and
        the probe account (the worker and the projector know every account from there)."""
        database_url = self.settings.database_url
        assert database_url is not None
        await upsert_users(database_url, server=self.broker.server, users=[a.user for a in self.accounts.values()])
        connection = await asyncpg.connect(plain_url(database_url))
        try:
            for held in self.accounts.values():
                await connection.execute("UPDATE users SET close_grace_seconds = $2 WHERE id = $1",
                                         held.user.user_id, int(held.levels.close_grace_seconds))
            for probe in PROBES:
                await connection.execute("INSERT INTO users (id, display_name) VALUES ($1, $1) ON CONFLICT DO NOTHING",
                                         probe)
        finally:
            await connection.close()

    # --- the services of the simulated side (each ``(settings, *, stop)``, as ``run_services`` runs them) ----

    def services(self) -> dict[str, Callable[..., Awaitable[None]]]:
        """The market, the platform and traders playing the steps, the poller and the close executor.

        The poller and the executor are the production ones (``run_poller``, ``run_executor``) on their own
        simulated terminals; the executor is kept apart (``executor``) so it can outlive the poller."""
        refs = [(AccountRef(u, held.user.login, self.broker.server, held.user.currency),
                 Glitching(attach(self.broker, held.user), held)) for u, held in self.accounts.items()]
        closers = {u: attach(self.broker, held.user) for u, held in self.accounts.items()}

        async def market(settings: Settings, *, stop: asyncio.Event) -> None:
            await drive_market(self.broker, stop=stop, interval=0.1)

        async def platform(settings: Settings, *, stop: asyncio.Event) -> None:
            await self.play(stop=stop)

        async def poller(settings: Settings, *, stop: asyncio.Event) -> None:
            await run_poller(settings, stop=stop, accounts=refs,  # type: ignore[arg-type]
                             config=PollerConfig(interval=self.scenario.poll_interval))

        async def locks(settings: Settings, *, stop: asyncio.Event) -> None:
            await follow_locks(settings, self.locked, stop=stop)

        async def executor(settings: Settings, *, stop: asyncio.Event) -> None:
            await run_executor(settings, stop=stop, gateways=closers)

        return {"sim-market": market, "sim-platform": platform, "sim-locks": locks, "poller": poller,
                "executor": executor}

    def start_clock(self) -> None:
        """The scenario starts now: the simulator's clock is brought to the wall clock (``drive_market``
        keeps it there from this point on)."""
        self.broker.advance_to(time.time())
        self.started = self.now
        log.info("scenario %s starts at %s", self.scenario.name, self.started.isoformat())

    async def play(self, *, stop: asyncio.Event) -> None:
        """Play every step at its time on the wall clock, spread moves over their durations (a share per
        poll interval) and end faults on time; set ``ended`` at the scenario's end, then wait for ``stop``."""
        s = self.scenario
        assert self.settings.kafka_bootstrap_servers is not None
        self._producer = make_producer(self.settings.kafka_bootstrap_servers)
        await self._producer.start()
        try:
            assert self.started is not None, "start_clock() first"
            steps = sorted(zip(s.times(), range(len(s.steps)), s.steps, strict=True), key=lambda x: (x[0], x[1]))
            end, poll = self.wall(s.end()), timedelta(seconds=s.poll_interval)
            next_moves, i = self.started, 0
            while not stop.is_set() and (t := self.now) < end:
                for _, _, undo in sorted(r for r in self.releases if r[0] <= t):
                    undo()
                self.releases = [r for r in self.releases if r[0] > t]
                while i < len(steps) and self.wall(steps[i][0]) <= t:
                    await self._act(steps[i][2], steps[i][1])
                    i += 1
                if next_moves <= t:
                    for move in self.moves:
                        apply_move(self, move, t)
                    self.moves = [m for m in self.moves if m[2] > t]
                    next_moves += poll
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.05)
            self.ended.set()
            await stop.wait()
        finally:
            await self._producer.stop()

    async def _act(self, step: Any, index: int) -> None:
        name, action = step.action
        if name == "unlock":  # the admin's command goes on its topic; the worker reads it from there
            event_id = uuid.uuid5(DERIVED_ID_NAMESPACE, f"scenario/{self.seed}/{action.account}/unlock/{index}")
            unlock = UnlockAccount(user_id=action.account, requested_by=action.by, reason=action.reason)
            await publish(self._producer, LOCK_COMMANDS, self.settings.topic_prefix,
                          observed(unlock, account_id=action.account, occurred_at=utcnow(), event_id=event_id))
            return
        await act(self, step, index)

    async def _publish_trade(self, trade: TradeApproved | TradeClosedByPlatform) -> object:
        return await publish_expected(self._producer, self.settings.topic_prefix, trade)

    # --- reading the decisions back ---------------------------------------------------------------------------

    async def collect(self, *, stop: asyncio.Event) -> None:
        """Read every logged topic from its beginning until ``stop`` (into ``seen``)."""
        settings = self.settings
        assert settings.kafka_bootstrap_servers is not None
        names = [t.name(settings.topic_prefix) for t in LOGGED]
        consumer = make_consumer(*names, bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None,
                                 fetch_max_wait_ms=20)
        await consumer.start()
        try:
            while not stop.is_set():
                for tp, records in (await consumer.getmany(timeout_ms=100)).items():
                    topic = topic_by_name(tp.topic, settings.topic_prefix)
                    for record in records:
                        try:
                            self.seen.append(decode(topic, record.value))
                        except DecodeError as error:  # the worker would dead-letter it: say so in the log
                            self.seen.append(_undecodable(tp.topic, record, error.reason))
                    self._last_seen = time.monotonic()
        finally:
            await consumer.stop()

    async def until_quiet(self, quiet: float = 3.0, longest: float = 60.0) -> None:
        """Wait until no logged topic has had a new record for ``quiet`` seconds (at most ``longest``)."""
        deadline = time.monotonic() + longest
        while time.monotonic() < deadline and time.monotonic() - self._last_seen < quiet:
            await asyncio.sleep(0.2)

    async def until_working(self, check: Callable[[], None], *, probe: str = PROBES[0], timeout: float = 120.0) -> None:
        """Until the ``probe`` account's sync error has gone through the worker to ``reconciliation_logs``:
        the worker and the projector are up (at the start), or have taken what was sent before it (at the
        end, with the other probe); ``check`` raises if a service died meanwhile."""
        settings = self.settings
        assert settings.kafka_bootstrap_servers is not None and settings.database_url is not None
        producer = make_producer(settings.kafka_bootstrap_servers)
        connection = await asyncpg.connect(plain_url(settings.database_url))
        await producer.start()
        deadline = time.monotonic() + timeout
        try:
            while not await connection.fetchval("SELECT count(*) FROM reconciliation_logs WHERE user_id = $1", probe):
                check()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the streams worker and the projector did not answer within {timeout:g} s "
                                       f"(see {settings.data_dir}/logs)")
                failure = sync_failed(user_id=probe, login=1, poll_seq=0, stage="terminal_info", error_code=-10004,
                                      error_message="probe: is the pipeline up?")
                await publish(producer, ACCOUNT_REPORTS, settings.topic_prefix,
                              observed(failure, account_id=probe, occurred_at=utcnow()))
                await asyncio.sleep(1.0)
        finally:
            await producer.stop()
            await connection.close()

    def outcome(self) -> Outcome:
        """The decision log of what was read (the probes left out), in time order, and its counts."""
        events = sorted((e for e in self.seen if e.account_id not in PROBES), key=lambda e: e.occurred_at)
        log = DecisionLog(self.scenario.expect)
        for event in events:
            log.add(self._logged(event))
        polls = len({e.payload.poll_seq for e in events if e.event_type == "AccountReport"})
        seconds = (self.scenario.end() - self.scenario.start).total_seconds()
        return Outcome(log, polls // max(1, len(self.accounts)), seconds)

    def _logged(self, event: Envelope[Any]) -> dict[str, Any]:
        """One decision-log line, as ``Simulation.log`` writes it."""
        at = event.occurred_at
        broker = datetime.fromtimestamp(self.broker.market.server_msc(round(at.timestamp() * 1000)) / 1000, UTC)
        line = {"utc": at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                "broker": broker.replace(tzinfo=None).isoformat(), "account": event.account_id,
                "type": event.event_type}
        payload = event.payload
        if isinstance(payload, REPORT_TYPES):
            return line | _report_summary(payload)
        if isinstance(payload, MessageDeadLettered):
            return line | {"type": _dead_type(payload), "id": str(event.event_id),
                           "dead_lettered": f"{payload.consumer}: {payload.reason}"}
        return line | {"id": str(event.event_id), "payload": payload.model_dump(mode="json")}


def _dead_type(payload: MessageDeadLettered) -> str:
    """The dead letter's own event type, where its value says it (as virtual time logs the event's type)."""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        return str(json.loads(payload.value)["event_type"])
    return MessageDeadLettered.event_type


def _undecodable(topic: str, record: Any, reason: str) -> Envelope[MessageDeadLettered]:
    key = record.key.decode("utf-8", errors="replace") if record.key else "unknown"
    payload = MessageDeadLettered(consumer="simulate", source_topic=topic, source_partition=record.partition,
                                  source_offset=record.offset, key=key,
                                  value=(record.value or b"").decode("utf-8", errors="replace"), reason=reason)
    return observed(payload, account_id=key[:64] or "unknown", occurred_at=utcnow())
