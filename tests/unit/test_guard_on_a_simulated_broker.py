"""The guards on a simulated broker at UTC+2/UTC+3, end to end without Kafka: the simulator, the
poller's own read and parsing, the broker clock, and the streams' rules, on one simulated clock.

Each poll is what the poller does (``read_account`` + ``conclude_poll`` with a learned clock); each
report goes through the drawdown, market and reconciliation rules as the worker would apply them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from infra.brokerclock import BrokerClock, server_clock_at
from infra.settings import AccountLevels, GuardSettings
from producers.mt5 import constants as c
from producers.mt5.gateway import SimulatorGateway
from producers.mt5.simulator import SimulatedBroker, SimulatedTerminal
from producers.poller.client import SymbolCache, read_account
from producers.poller.parsing import PollState, conclude_poll, latest_tick_msc
from schemas import Envelope, observed
from streams.drawdown import rules as drawdown
from streams.drawdown.liquidation import fire_due
from streams.drawdown.state import DrawdownState
from streams.market import rules as market
from streams.reconciliation import rules as reconciliation
from streams.reconciliation.state import ReconciliationState

LOGIN, USER = 9001, "u-sim"
CONFIG = GuardSettings()
LEVELS = AccountLevels(warning_drawdown_percent=5, critical_drawdown_percent=10, daily_loss_limit_percent=5,
                       close_grace_seconds=10)


@dataclass
class Guarded:
    """One account on a simulated broker, polled and judged on the broker's simulated clock."""

    broker: SimulatedBroker
    gateway: SimulatorGateway
    clock: BrokerClock = field(default_factory=BrokerClock)
    poll_state: PollState = field(default_factory=PollState)
    cache: SymbolCache = field(default_factory=SymbolCache)
    drawdown: DrawdownState = field(default_factory=DrawdownState)
    market: market.MarketState = field(default_factory=market.MarketState)
    reconciliation: ReconciliationState = field(default_factory=ReconciliationState)
    outputs: list[Envelope[Any]] = field(default_factory=list)
    reports: list[Any] = field(default_factory=list)

    @classmethod
    def at(cls, text: str, *, currency: str = "GBP", balance: float = 10_000.0, sessions: bool = True) -> Guarded:
        start = datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()
        broker = SimulatedBroker(seed=11, start_time=start, sessions=sessions)  # UTC+2/UTC+3 by default
        broker.add_account(LOGIN, "pw", currency=currency, balance=balance)
        gateway = SimulatorGateway(SimulatedTerminal(broker, login=LOGIN, password="pw"))
        assert gateway.initialize()
        return cls(broker, gateway)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.broker.now(), UTC)

    def poll(self) -> None:
        now = self.now()
        offset = self.clock.offset_minutes(now)
        read = read_account(self.gateway, login=LOGIN, cache=self.cache, previous=self.poll_state.volumes,
                            pending=self.poll_state.waiting, flows_since=self.poll_state.flows_since,
                            server_now=int(server_clock_at(now, offset).timestamp()))
        self.clock.observe(latest_tick_msc(read.ticks.values()), now)
        offset = self.clock.offset_minutes(now)
        outcome = conclude_poll(read, self.poll_state, user_id=USER, poll_seq=len(self.reports), offset=offset,
                                server_now=server_clock_at(now, offset))
        self.poll_state = outcome.state
        self.reports.append(outcome)
        for payload in (outcome.positions, outcome.account, *outcome.ticks):
            self.judge(observed(payload, account_id=USER, occurred_at=now), now)

    def judge(self, event: Envelope[Any], now: datetime) -> None:
        steps = ((drawdown.handle, "drawdown", (LEVELS, CONFIG, now)), (market.handle, "market", (CONFIG,)),
                 (reconciliation.handle, "reconciliation", (CONFIG,)))
        for handle, name, extra in steps:
            decision = handle(getattr(self, name), event, *extra)
            setattr(self, name, decision.state)
            self.outputs += decision.outputs
        if self.drawdown.pending is not None and self.drawdown.pending.deadline <= now:
            fired = fire_due(self.drawdown, now)
            self.drawdown, self.outputs = fired.state, self.outputs + list(fired.outputs)

    def run(self, seconds: float, every: float = 1.0) -> None:
        end = self.broker.now() + seconds
        while self.broker.now() < end:
            self.broker.advance(every)
            self.poll()

    def of(self, event_type: str) -> list[Any]:
        return [o.payload for o in self.outputs if o.event_type == event_type]

    def buy(self, symbol: str, volume: float) -> int:
        return self.broker.manual_open(LOGIN, symbol, c.ORDER_TYPE_BUY, volume)


def test_a_weekend_on_a_utc_plus_2_broker_closes_nothing_and_raises_nothing():
    guarded = Guarded.at("2026-11-06T21:50")  # Friday 16:50 New York, 23:50 on the broker's clock
    guarded.buy("EURUSD", 0.5)
    guarded.buy("XAUUSD", 0.1)
    guarded.run(60)
    assert guarded.clock.learned == 120
    guarded.run(2 * 86400 - 3600, every=300)  # through the weekend (every 5 min: the same rules, less CPU)
    guarded.run(2 * 3600, every=30)  # every 30 s across Sunday's 22:00 UTC open, until 22:50
    assert guarded.of("ClosePosition") == [] and guarded.of("GuardAlertRaised") == []
    last = guarded.reports[-1]
    assert last.ticks and abs((last.ticks[0].quoted_at - guarded.now()).total_seconds()) < 60


def test_a_frozen_feed_on_a_utc_plus_3_broker_is_stale():
    """Server times read as UTC are three hours in the future: the quote never looked old."""
    guarded = Guarded.at("2026-07-07T10:00")
    guarded.buy("EURUSD", 0.5)
    guarded.run(10)
    guarded.broker.market.symbols["EURUSD"].step = lambda *args, **kwargs: False  # its feed stops
    guarded.run(40)
    closes = guarded.of("ClosePosition")
    assert [(cmd.symbol, cmd.reason.value) for cmd in closes] == [("EURUSD", "stale_feed")]


def test_an_unexpected_position_on_a_utc_plus_2_broker_is_reported():
    guarded = Guarded.at("2026-01-13T10:00")
    guarded.buy("EURUSD", 0.2)  # opened by hand, approved by nobody
    guarded.run(20)
    reasons = [d.divergence_reason.value for d in guarded.of("DivergenceDetected")]
    assert reasons == ["unexpected"]


def test_a_withdrawal_and_a_deposit_then_withdrawal_with_positions_open_raise_nothing():
    guarded = Guarded.at("2026-03-17T10:00")  # New York on summer time, Europe not yet: UTC+3
    guarded.buy("EURGBP", 1.0)
    guarded.run(10)
    guarded.broker.deposit(LOGIN, -1_500.0, "Withdrawal")  # 15 % out
    guarded.run(10)
    guarded.broker.deposit(LOGIN, 5_000.0)
    guarded.run(5)
    guarded.broker.deposit(LOGIN, -5_000.0, "Withdrawal")
    guarded.broker.credit(LOGIN, 1_000.0)
    guarded.run(5)
    guarded.broker.credit(LOGIN, -1_000.0)
    guarded.run(10)
    assert guarded.clock.learned == 180
    assert guarded.of("GuardAlertRaised") == [] and guarded.of("ClosePosition") == []
    assert len(guarded.drawdown.flows) == 6  # the five, and the initial deposit (in the first reading already)
    assert guarded.drawdown.flows[0].ratio == 1.0
    assert guarded.drawdown.untrusted == 0


def test_a_real_loss_after_a_withdrawal_is_still_caught():
    guarded = Guarded.at("2026-03-17T10:00")
    guarded.buy("EURGBP", 5.0)
    guarded.run(10)
    guarded.broker.deposit(LOGIN, -5_000.0, "Withdrawal")  # half the money out: the guard now guards 5 000
    guarded.run(10)
    bid = guarded.broker.tick("EURGBP").bid
    guarded.broker.set_quote("EURGBP", round(bid - 0.0013, 5))  # -650 EUR on 5 lots: 11 % of what is left
    guarded.run(15)
    assert [a.alert_type.value for a in guarded.of("GuardAlertRaised")][:1] == ["drawdown_critical"]
    assert {cmd.reason.value for cmd in guarded.of("ClosePosition")} == {"drawdown_guard"}


def test_a_flat_account_across_the_brokers_midnight_changes_day_once():
    guarded = Guarded.at("2026-01-13T21:59:30")  # 23:59:30 on a UTC+2 server
    guarded.run(60)
    days = [r.account.server_time.date().isoformat() for r in guarded.reports]
    assert days[0] == "2026-01-13" and days[-1] == "2026-01-14"
    assert days == sorted(days) and guarded.drawdown.day == "2026-01-14"
    assert guarded.drawdown.day_start_equity_gbp == 10_000


def test_the_demo_market_never_closes_and_still_runs_a_utc_plus_2_clock():
    guarded = Guarded.at("2026-11-07T12:00", sessions=False)  # a Saturday
    guarded.buy("EURUSD", 0.1)
    guarded.run(30)
    assert guarded.clock.learned == 120 and guarded.of("ClosePosition") == []
    assert guarded.reports[-1].account.server_time - guarded.now() == timedelta(hours=2)


def test_a_withdrawal_whose_report_the_guard_lost_is_applied_from_the_next():
    """A worker restored one update short (tansu's changelog end, once seen) loses the report that
    carried the withdrawal, and its input offset is past it. The poller repeats each flow for a
    minute, so the next report brings it back and the 15 % that left is not taken for a loss."""
    guarded = Guarded.at("2026-03-17T10:00")
    guarded.buy("EURGBP", 1.0)
    guarded.run(10)
    withdrawal = guarded.broker.deposit(LOGIN, -1_500.0, "Withdrawal")
    before = guarded.drawdown
    guarded.run(1)
    assert [f.amount_gbp for f in guarded.drawdown.flows][-1:] == [-1_500.0]
    guarded.drawdown = before  # the update of the report that carried it is lost
    guarded.run(20)
    assert guarded.of("GuardAlertRaised") == [] and guarded.of("ClosePosition") == []
    assert [f.ticket for f in guarded.drawdown.flows][-1:] == [withdrawal]


def test_a_poller_on_an_assumed_clock_neither_misses_nor_doubles_a_flow():
    """Until the offset is learned the poller reads flows by an assumed clock, here three hours behind the
    broker's: the account's initial deposit, made just before the first poll, is in the first reading
    and must not count again once the clock is learned (it would double the peak); money that moves
    before the clock is learned is still found, and counted once."""
    for assumed in ("UTC+00:00", "UTC+06:00"):  # behind the broker's clock, and ahead of it
        guarded = Guarded.at("2026-07-07T10:00")
        guarded.clock = BrokerClock(assumed=assumed)
        guarded.buy("EURGBP", 1.0)
        guarded.run(1)
        guarded.broker.deposit(LOGIN, -1_500.0, "Withdrawal")
        guarded.run(20)
        guarded.broker.deposit(LOGIN, 1_000.0)
        guarded.run(20)
        assert guarded.clock.learned == 180, assumed
        assert guarded.of("GuardAlertRaised") == [] and guarded.of("ClosePosition") == [], assumed
        assert [(f.amount_gbp, f.ratio == 1.0) for f in guarded.drawdown.flows] == \
            [(10_000.0, True), (-1_500.0, False), (1_000.0, False)], assumed
        assert guarded.drawdown.peak_equity_gbp is not None and guarded.drawdown.peak_equity_gbp < 9_600, assumed
