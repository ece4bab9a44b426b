"""Market guard: close positions exposed to an abnormal market, per account and held symbol.

Pure functions. Nothing here fires while the symbol's market is closed (its session calendar,
``infra/sessions.py``, at the poll's true UTC time, or a trade mode that allows no trading). On
each quote of a symbol the account holds, while its market is open, in this order of precedence:
- ``market_gap``: the mid moved more than ``quote_gap_percent`` since the previous quote of the
  same session, no more than ``gap_window_seconds`` earlier (a quote from before a weekend, a
  break or days without a position is not a previous quote);
- ``session_gap`` (off by default): the mid moved more than ``session_gap_percent`` across a
  closed period; it closes with the reason ``market_gap``;
- ``spread``: ask - bid is wider than ``max_spread_points`` of the symbol;
- ``stale_feed``: the quote is older than ``stale_quote_seconds`` of open market at the time of
  the poll that reported it (time the market was closed does not count).
Prices are compared in whole points of the symbol (its digits), never as float differences, so a
value exactly at its limit is within it. Rules are looked up by the base symbol (``EURUSD.r`` ->
``EURUSD``). A breach closes every ticket of that symbol (one ``ClosePosition``) and raises the
alert of the same type, at most once per account and symbol per ``reclose_after_seconds``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from infra.sessions import Interval, open_throughout, session_at
from infra.settings import GuardSettings, SymbolRules
from infra.settings.markets import MarketSettings
from schemas import Envelope, derived
from schemas.commands import ClosePosition
from schemas.common import CloseReason
from schemas.decisions import ActionTaken, AlertType, GuardAlertRaised
from schemas.reports import ObservedPosition, PositionReport, TickReport
from streams.decisions import Decision, replace


@dataclass(frozen=True)
class Quote:
    bid: float
    ask: float
    quoted_at: datetime
    digits: int = 5
    #: When the guard first saw this quote (our clock): a quote's age is judged by both clocks.
    seen_at: datetime | None = None

    @property
    def mid(self) -> float:
        return (self.bid + self.ask) / 2

    @property
    def points(self) -> tuple[int, int]:
        """bid and ask in whole points of the symbol (1.09512 -> 109512 with 5 digits): their sum (twice
        the mid) and difference (the spread) are exact.

        Kept on the quote once computed, as the next quote's gap asks again: in the instance dict, not a
        field, so never stored nor compared (nothing builds a changed copy of a quote). By hand, as 3.11's
        ``cached_property`` takes a lock on every first read, which costs more than the rounding."""
        known = self.__dict__.get("_points")
        if known is None:
            scale = 10 ** self.digits
            known = self.__dict__["_points"] = (round(self.bid * scale), round(self.ask * scale))
        return known  # type: ignore[no-any-return]


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
    positions = event.payload.positions
    if _one_per_symbol_as_held(state.held, positions):  # most reports: the same positions as the last one
        return replace(state, positions_at=event.occurred_at)
    held: dict[str, list[int]] = {}
    for p in positions:
        held.setdefault(p.symbol, []).append(p.ticket)
    tickets = {s: tuple(sorted(t)) for s, t in sorted(held.items())}
    return replace(state, held=tickets if tickets != state.held else state.held, positions_at=event.occurred_at)


def _one_per_symbol_as_held(held: dict[str, tuple[int, ...]], positions: tuple[ObservedPosition, ...]) -> bool:
    """Whether ``positions`` are one per symbol, each the one ticket ``held`` has for its symbol, on every
    symbol of ``held``: then they would build ``held`` again (a quicker question than building it)."""
    if len(positions) != len(held):
        return False
    for p in positions:
        if held.get(p.symbol) != (p.ticket,):
            return False
    return len({p.symbol for p in positions}) == len(held)


def on_tick(state: MarketState, event: Envelope[TickReport], config: GuardSettings) -> Decision[MarketState]:
    state, breach = see_quote(state, event.payload, event.occurred_at, config)
    return Decision(state) if breach is None else close(state, event, breach, config)


def see_quote(state: MarketState, tick: TickReport, polled_at: datetime, config: GuardSettings
              ) -> tuple[MarketState, Breach | None]:
    """The quote kept, and the breach to close its symbol for, if any (most quotes: none). Apart from
    ``close`` so that a caller holding the quote without its envelope (the simulation, in virtual time)
    makes the envelope only for a breach: the breach's messages are the only use of its id."""
    symbol = tick.symbol
    previous = state.quotes.get(symbol)
    if previous is not None and tick.quoted_at < previous.quoted_at:
        return state, None  # an older quote, delivered late
    same = previous is not None and previous.quoted_at == tick.quoted_at and previous.seen_at is not None
    seen_at = previous.seen_at if same and previous is not None else polled_at
    quote = Quote(tick.bid, tick.ask, tick.quoted_at, tick.price_digits, seen_at)
    state = replace(state, quotes={**state.quotes, symbol: quote})
    if not state.held.get(symbol):
        return state, None
    breach = assess(tick, previous, polled_at, config.symbol(symbol), config.markets, quote)
    if breach is None or _recently_closed(state, symbol, polled_at, config):
        return state, None
    return state, breach


def assess(tick: TickReport, previous: Quote | None, polled_at: datetime, rules: SymbolRules,
           markets: MarketSettings, quote: Quote | None = None) -> Breach | None:
    """The abnormality this quote shows, if any (gap, then spread, then staleness); None while closed.

    The calendar is asked once, for the session at the poll; the gap and the staleness compare their
    times with it (``session_at``), and ask again only when a time falls outside it."""
    session = session_at(markets, tick.symbol, polled_at) if tick.market_open else None
    if session is None:
        return None
    if quote is None:
        quote = Quote(tick.bid, tick.ask, tick.quoted_at, tick.price_digits)
    bid, ask = quote.points  # once per quote: the gap and the spread both compare them
    breach = _gap(tick.symbol, quote, bid + ask, previous, rules, markets, session) if previous is not None \
        else None
    limit = rules.max_spread_points
    if breach is None and limit is not None and ask - bid > limit:
        breach = _spread(tick.symbol, ask - bid, limit)
    return breach or _stale(tick, quote, polled_at, rules, markets, session)


def _gap(symbol: str, quote: Quote, twice_mid: int, previous: Quote, rules: SymbolRules, markets: MarketSettings,
         session: Interval) -> Breach | None:
    """A move of the mid beyond the limit since the previous quote (``twice_mid``: this one's bid + ask in points)."""
    if not previous.quoted_at < quote.quoted_at:
        return None
    same_session = session[0] <= previous.quoted_at and quote.quoted_at < session[1] or \
        open_throughout(markets, symbol, previous.quoted_at, quote.quoted_at)
    if same_session:
        if (quote.quoted_at - previous.quoted_at).total_seconds() > rules.gap_window_seconds:
            return None  # not consecutive quotes: nothing held in between, or a silent feed
        limit, kind = rules.quote_gap_percent, "market_gap"
    elif rules.session_gap_percent is not None:
        limit, kind = rules.session_gap_percent, "session_gap"
    else:
        return None
    before = sum(previous.points)
    moved = abs(twice_mid - before)
    if before <= 0 or moved * 100 < limit * before * _SURELY_WITHIN or \
            Decimal(moved) * 100 <= Decimal(str(limit)) * before:
        return None  # at the limit is within it: exact integer arithmetic (floats only far below the limit)
    move = moved / before * 100
    what = "between quotes" if kind == "market_gap" else "across a closed session"
    return Breach(CloseReason.MARKET_GAP, AlertType.MARKET_GAP,
                  f"{symbol} gapped {move:.3f}% {what} (limit {limit:g}%)",
                  {"kind": kind, "previous_mid": previous.mid, "mid": quote.mid, "move_percent": round(move, 6),
                   "move_points": moved / 2, "threshold_percent": limit,
                   "previous_quoted_at": previous.quoted_at.isoformat()})


#: Below this share of the limit a move is within it whatever the floats' rounding (errors are ~1e-16).
_SURELY_WITHIN = 1 - 1e-9


def _spread(symbol: str, spread: int, max_spread_points: float) -> Breach:
    """A spread beyond the symbol's maximum (in whole points: one at the maximum is within it)."""
    return Breach(CloseReason.SPREAD, AlertType.SPREAD,
                  f"{symbol} spread {spread} points beyond its maximum {max_spread_points:g}",
                  {"spread_points": spread, "max_spread_points": max_spread_points})


def _stale(tick: TickReport, quote: Quote, polled_at: datetime, rules: SymbolRules, markets: MarketSettings,
           session: Interval) -> Breach | None:
    """Older than the limit in open-market time: the market must have been open for the whole last
    ``stale_quote_seconds`` (a quote from before a break is not stale until the break is that long over).

    The age is the lesser of the quote's own (its true UTC time depends on the broker clock's offset,
    which before it is learned rests on an assumed rule, possibly hours off) and how long the guard has
    seen this same quote (``seen_at``): a wrong offset alone never makes a live feed stale."""
    age = (polled_at - max(tick.quoted_at, quote.seen_at or tick.quoted_at)).total_seconds()
    if age <= rules.stale_quote_seconds:
        return None
    window_start = polled_at - timedelta(seconds=rules.stale_quote_seconds)
    if not (session[0] <= window_start or open_throughout(markets, tick.symbol, window_start, polled_at)):
        return None
    return Breach(CloseReason.STALE_FEED, AlertType.STALE_FEED,
                  f"{tick.symbol} quote is {age:.0f} s old while the market is open "
                  f"(limit {rules.stale_quote_seconds:g} s)",
                  {"quote_age_seconds": round(age, 3), "stale_quote_seconds": rules.stale_quote_seconds})


def _recently_closed(state: MarketState, symbol: str, at: datetime, config: GuardSettings) -> bool:
    last = state.closed_at.get(symbol)
    return last is not None and (at - last).total_seconds() < config.reclose_after_seconds


def close(state: MarketState, event: Envelope[TickReport], breach: Breach, config: GuardSettings
          ) -> Decision[MarketState]:
    """Every ticket held of the quote's symbol closed for ``breach`` (``see_quote``'s), with its alert."""
    tick = event.payload
    tickets = state.held[tick.symbol]
    inputs = breach.inputs | {"symbol": tick.symbol, "bid": tick.bid, "ask": tick.ask, "point": tick.point,
                              "digits": tick.price_digits, "quoted_at": tick.quoted_at.isoformat(),
                              "server_quoted_at": tick.server_quoted_at.isoformat() if tick.server_quoted_at
                              else None, "market_open": tick.market_open,
                              "polled_at": event.occurred_at.isoformat(), "tickets": list(tickets),
                              "reclose_after_seconds": config.reclose_after_seconds}
    rule = f"market_guard/{breach.inputs.get('kind', breach.reason.value)}"
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
