"""Market guard: close positions exposed to an abnormal market, per account and held symbol.

Pure functions. On each quote of a symbol the account holds, in this order of precedence:
- ``market_gap``: the mid moved more than ``quote_gap_percent`` since the previous quote;
- ``spread``: ask - bid is wider than ``max_spread_points`` of the symbol;
- ``stale_feed``: the market is open and the quote is older than ``stale_quote_seconds`` at the
  time of the poll that reported it (the terminal is alive but its feed is not moving).
A breach closes every ticket of that symbol (one ``ClosePosition``) and raises the alert of the
same type, at most once per account and symbol per ``reclose_after_seconds``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from infra.settings import GuardSettings, SymbolRules
from schemas import Envelope, derived
from schemas.commands import ClosePosition
from schemas.common import CloseReason
from schemas.decisions import ActionTaken, AlertType, GuardAlertRaised
from schemas.reports import PositionReport, TickReport
from streams.decisions import Decision, percent_off, replace


@dataclass(frozen=True)
class Quote:
    bid: float
    ask: float
    quoted_at: datetime

    @property
    def mid(self) -> float:
        return (self.bid + self.ask) / 2


@dataclass(frozen=True)
class MarketState:
    held: dict[str, tuple[int, ...]] = field(default_factory=dict)  # symbol -> open tickets
    closed_at: dict[str, datetime] = field(default_factory=dict)  # symbol -> last close command
    positions_at: datetime | None = field(default=None, compare=False)
    quotes: dict[str, Quote] = field(default_factory=dict, compare=False)  # volatile: the last quote


@dataclass(frozen=True)
class Breach:
    reason: CloseReason
    alert_type: AlertType
    message: str
    inputs: dict[str, Any]


def handle(state: MarketState, event: Envelope[Any], config: GuardSettings) -> Decision[MarketState]:
    payload = event.payload
    if isinstance(payload, TickReport):
        return on_tick(state, event, config)
    if isinstance(payload, PositionReport):
        return Decision(on_positions(state, event))
    return Decision(state)


def on_positions(state: MarketState, event: Envelope[PositionReport]) -> MarketState:
    if state.positions_at is not None and event.occurred_at <= state.positions_at:
        return state
    held: dict[str, list[int]] = {}
    for p in event.payload.positions:
        held.setdefault(p.symbol, []).append(p.ticket)
    tickets = {s: tuple(sorted(t)) for s, t in sorted(held.items())}
    return replace(state, held=tickets if tickets != state.held else state.held, positions_at=event.occurred_at)


def on_tick(state: MarketState, event: Envelope[TickReport], config: GuardSettings) -> Decision[MarketState]:
    tick = event.payload
    previous = state.quotes.get(tick.symbol)
    if previous is not None and tick.quoted_at < previous.quoted_at:
        return Decision(state)  # an older quote, delivered late
    quote = Quote(tick.bid, tick.ask, tick.quoted_at)
    state = replace(state, quotes={**state.quotes, tick.symbol: quote})
    tickets = state.held.get(tick.symbol)
    if not tickets:
        return Decision(state)
    breach = assess(tick, previous, event.occurred_at, config.symbol(tick.symbol))
    if breach is None or _recently_closed(state, tick.symbol, event.occurred_at, config):
        return Decision(state)
    return _close(state, event, tickets, breach, config)


def assess(tick: TickReport, previous: Quote | None, polled_at: datetime, rules: SymbolRules) -> Breach | None:
    """The abnormality this quote shows, if any (gap, then spread, then staleness)."""
    quote = Quote(tick.bid, tick.ask, tick.quoted_at)
    if previous is not None and previous.quoted_at < tick.quoted_at:
        move = percent_off(quote.mid, previous.mid)
        if move > rules.quote_gap_percent:
            return Breach(CloseReason.MARKET_GAP, AlertType.MARKET_GAP,
                          f"{tick.symbol} gapped {move:.3f}% between quotes (limit {rules.quote_gap_percent:g}%)",
                          {"previous_mid": previous.mid, "mid": quote.mid, "move_percent": round(move, 6),
                           "threshold_percent": rules.quote_gap_percent,
                           "previous_quoted_at": previous.quoted_at.isoformat()})
    spread = (tick.ask - tick.bid) / tick.point
    if rules.max_spread_points is not None and spread > rules.max_spread_points:
        return Breach(CloseReason.SPREAD, AlertType.SPREAD,
                      f"{tick.symbol} spread {spread:.0f} points beyond its maximum {rules.max_spread_points:g}",
                      {"spread_points": round(spread, 3), "max_spread_points": rules.max_spread_points})
    age = (polled_at - tick.quoted_at).total_seconds()
    if tick.market_open and age > rules.stale_quote_seconds:
        return Breach(CloseReason.STALE_FEED, AlertType.STALE_FEED,
                      f"{tick.symbol} quote is {age:.0f} s old while the market is open "
                      f"(limit {rules.stale_quote_seconds:g} s)",
                      {"quote_age_seconds": round(age, 3), "stale_quote_seconds": rules.stale_quote_seconds})
    return None


def _recently_closed(state: MarketState, symbol: str, at: datetime, config: GuardSettings) -> bool:
    last = state.closed_at.get(symbol)
    return last is not None and (at - last).total_seconds() < config.reclose_after_seconds


def _close(state: MarketState, event: Envelope[TickReport], tickets: tuple[int, ...], breach: Breach,
           config: GuardSettings) -> Decision[MarketState]:
    tick = event.payload
    inputs = breach.inputs | {"symbol": tick.symbol, "bid": tick.bid, "ask": tick.ask, "point": tick.point,
                              "quoted_at": tick.quoted_at.isoformat(), "market_open": tick.market_open,
                              "polled_at": event.occurred_at.isoformat(), "tickets": list(tickets),
                              "reclose_after_seconds": config.reclose_after_seconds}
    rule = f"market_guard/{breach.reason.value}"
    # The alert says what was ordered; the alert tracker (streams/alerts) says what the terminal confirmed.
    alert = derived(GuardAlertRaised(
        user_id=event.account_id, alert_type=breach.alert_type, action_taken=ActionTaken.WARNING_SENT,
        status="ordered", message=f"{breach.message}: closing {len(tickets)} position(s)", symbol=tick.symbol,
        threshold_percent=breach.inputs.get("threshold_percent"), details=inputs), cause=event, rule=f"{rule}/alert")
    command = ClosePosition(user_id=event.account_id, symbol=tick.symbol, tickets=tickets, reason=breach.reason,
                            rule=rule, details=inputs, alert_id=alert.event_id)
    outputs = (derived(command, cause=event, rule=f"{rule}/close"), alert)
    closed_at = {**state.closed_at, tick.symbol: event.occurred_at}
    return Decision(replace(state, closed_at=closed_at), outputs)
