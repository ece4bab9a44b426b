"""Terminal results to report payloads: pure functions, no I/O.

Everything here takes what the MetaTrader5 package returned (struct sequences, read by field name)
and produces the payloads of ``schemas.reports``. The poller reports what the terminal said; it
never concludes (a vanished ticket is reported with its closing deal, not as a divergence).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from operator import attrgetter
from typing import Any

from infra.brokerclock import to_utc
from producers.mt5 import constants as c
from schemas.common import DealEntry, DealReason, Direction
from schemas.reports import (
    AccountReport,
    AccountSyncFailed,
    MoneyFlow,
    MoneyFlowKind,
    ObservedDeal,
    ObservedPosition,
    PositionReport,
    TickReport,
)

DEAL_REASONS: Mapping[int, DealReason] = {
    c.DEAL_REASON_CLIENT: DealReason.CLIENT, c.DEAL_REASON_MOBILE: DealReason.MOBILE,
    c.DEAL_REASON_WEB: DealReason.WEB, c.DEAL_REASON_EXPERT: DealReason.EXPERT,
    c.DEAL_REASON_SL: DealReason.SL, c.DEAL_REASON_TP: DealReason.TP, c.DEAL_REASON_SO: DealReason.STOP_OUT,
    c.DEAL_REASON_ROLLOVER: DealReason.ROLLOVER, c.DEAL_REASON_VMARGIN: DealReason.VMARGIN,
    c.DEAL_REASON_SPLIT: DealReason.SPLIT,
}
DEAL_ENTRIES: Mapping[int, DealEntry] = {
    c.DEAL_ENTRY_IN: DealEntry.IN, c.DEAL_ENTRY_OUT: DealEntry.OUT, c.DEAL_ENTRY_INOUT: DealEntry.INOUT,
    c.DEAL_ENTRY_OUT_BY: DealEntry.OUT_BY,
}
#: Balance operations that are money in or out, not trading results (MT5's DEAL_TYPE_*).
FLOW_TYPES: Mapping[int, MoneyFlowKind] = {
    c.DEAL_TYPE_BALANCE: MoneyFlowKind.BALANCE, c.DEAL_TYPE_CREDIT: MoneyFlowKind.CREDIT,
    c.DEAL_TYPE_CHARGE: MoneyFlowKind.CHARGE, c.DEAL_TYPE_CORRECTION: MoneyFlowKind.CORRECTION,
    c.DEAL_TYPE_BONUS: MoneyFlowKind.BONUS,
}
#: Deals that take volume out of a position (a close, or a close-by against an opposite position).
CLOSING_ENTRIES = frozenset({c.DEAL_ENTRY_OUT, c.DEAL_ENTRY_OUT_BY})
BASE_CURRENCY = "GBP"
#: How many polls a vanished ticket waits for its closing deal to appear in the terminal's history.
DEAL_WAIT_POLLS = 5

# The reports' validators, called directly: ``model_validate`` is a Python wrapper around the same call, and
# a poll makes several reports per account (the same validation, a fifth less time for a small report).
_position = ObservedPosition.__pydantic_validator__.validate_python
_tick = TickReport.__pydantic_validator__.validate_python
_account = AccountReport.__pydantic_validator__.validate_python
_positions = PositionReport.__pydantic_validator__.validate_python
_by_ticket = attrgetter("ticket")


@lru_cache(maxsize=4096)  # an open position's time is read again on every poll
def utc_from_epoch(seconds: int, msc: int | None = None) -> datetime:
    """MT5 times are epoch seconds (and milliseconds) of the server clock, labelled UTC as MT5 does."""
    return datetime.fromtimestamp(msc / 1000 if msc else seconds, tz=UTC)


def price_or_none(value: float) -> float | None:
    """MT5 writes 0.0 for "no SL/TP"."""
    return value if value > 0 else None


def position_direction(position_type: int) -> Direction:
    return Direction.BUY if position_type == c.POSITION_TYPE_BUY else Direction.SELL


def deal_direction(deal_type: int) -> Direction | None:
    """A buy or sell deal's own direction (closing a buy is a sell deal); None for balance and the like."""
    return {c.DEAL_TYPE_BUY: Direction.BUY, c.DEAL_TYPE_SELL: Direction.SELL}.get(deal_type)


# --- conversion to GBP with the terminal's own quotes -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Leg:
    """One step of a conversion: multiply by the symbol's bid, or divide by its ask (``inverted``)."""

    symbol: str
    inverted: bool


Route = tuple[Leg, ...]


def conversion_route(currency: str, exists: Callable[[str], bool], *,
                     to: str = BASE_CURRENCY) -> Route | None:
    """The symbols that turn one unit of ``currency`` into ``to``: direct, inverse, or across USD."""
    if currency == to:
        return ()
    direct = _one_leg(currency, to, exists)
    if direct is not None:
        return (direct,)
    if "USD" in (currency, to):
        return None
    first, second = _one_leg(currency, "USD", exists), _one_leg("USD", to, exists)
    return (first, second) if first is not None and second is not None else None


def _one_leg(from_ccy: str, to_ccy: str, exists: Callable[[str], bool]) -> Leg | None:
    if exists(from_ccy + to_ccy):
        return Leg(from_ccy + to_ccy, inverted=False)
    if exists(to_ccy + from_ccy):
        return Leg(to_ccy + from_ccy, inverted=True)
    return None


def inverse_route(route: Route, exists: Callable[[str], bool]) -> Route | None:
    """The same conversion through the opposite pairs (GBPUSD for USDGBP), when the terminal quotes
    every one of them: a second opinion on the rate."""
    if not route:
        return None
    legs = tuple(Leg(leg.symbol[3:6] + leg.symbol[:3], not leg.inverted) for leg in route if len(leg.symbol) == 6)
    return legs if len(legs) == len(route) and all(exists(leg.symbol) for leg in legs) else None


def route_rate(route: Route, quotes: Mapping[str, Any]) -> float | None:
    """The rate along ``route`` at the given ticks (a direct pair at bid, an inverse one at 1/ask)."""
    rate = 1.0
    for leg in route:
        tick = quotes.get(leg.symbol)
        price = None if tick is None else (tick.ask if leg.inverted else tick.bid)
        if not price or price <= 0:
            return None
        rate = rate / price if leg.inverted else rate * price
    return rate


# --- positions, deals, ticks ------------------------------------------------------------------------


def observed_position(position: Any, gbp_rate: float, offset: int = 0) -> ObservedPosition:
    opened = utc_from_epoch(position.time, position.time_msc)
    return _position({  # a dict: validated as keyword arguments are, with less work
        "ticket": position.ticket, "symbol": position.symbol, "direction": position_direction(position.type),
        "volume": position.volume, "price_open": position.price_open, "price_current": position.price_current,
        "sl": price_or_none(position.sl), "tp": price_or_none(position.tp), "profit": position.profit,
        "profit_gbp": round(position.profit * gbp_rate, 2), "magic": position.magic,
        "comment": position.comment[:64], "opened_at": to_utc(opened, offset), "opened_server_at": opened,
    })


def observed_deal(deal: Any, gbp_rate: float, offset: int = 0) -> ObservedDeal | None:
    """The deal as a report, if it is a closing buy or sell deal (balance operations and entries are not)."""
    direction = deal_direction(deal.type)
    if direction is None or deal.entry not in CLOSING_ENTRIES or deal.volume <= 0 or deal.price <= 0:
        return None
    return ObservedDeal(
        ticket=deal.ticket, position_id=deal.position_id, symbol=deal.symbol, direction=direction,
        entry=DEAL_ENTRIES[deal.entry], reason=DEAL_REASONS.get(deal.reason, DealReason.CLIENT),
        volume=deal.volume, price=deal.price, profit=deal.profit, profit_gbp=round(deal.profit * gbp_rate, 2),
        time=to_utc(utc_from_epoch(deal.time, deal.time_msc), offset),
        server_time=utc_from_epoch(deal.time, deal.time_msc),
    )


def money_flow(deal: Any, gbp_rate: float, offset: int = 0, after_previous_poll: bool = False) -> MoneyFlow | None:
    """A balance or credit deal as a money flow; None for any other deal. ``after_previous_poll``: the
    previous read of the account, which took its figures before its deal history, did not have it."""
    kind = FLOW_TYPES.get(deal.type)
    if kind is None or not deal.profit:
        return None
    server = utc_from_epoch(deal.time, deal.time_msc)
    return MoneyFlow(ticket=deal.ticket, kind=kind, amount=deal.profit, amount_gbp=round(deal.profit * gbp_rate, 2),
                     time=to_utc(server, offset), server_time=server, comment=deal.comment[:64],
                     after_previous_poll=after_previous_poll)


def closing_deals(deals: Iterable[Any], gbp_rate: float, *, already_reported: set[int] | frozenset[int],
                  offset: int = 0) -> list[ObservedDeal]:
    """The closing deals not reported before, oldest first."""
    found = (observed_deal(d, gbp_rate, offset) for d in deals if d.ticket not in already_reported)
    return sorted((d for d in found if d is not None), key=lambda d: (d.time, d.ticket))


def tickets_to_explain(previous: Mapping[int, float] | None, positions: Sequence[Any],
                       pending: Iterable[int] = ()) -> list[int]:
    """Tickets whose history must be read: gone since the last poll, shrunk (a partial close), or still
    waiting for their closing deal. Nothing on the first poll: there is no "before" to compare with."""
    if previous is None:
        return sorted(set(pending))
    now = {p.ticket: p.volume for p in positions}
    changed = {t for t, v in previous.items() if t not in now or now[t] < v - 1e-9}
    return sorted(changed | set(pending))


def held_symbols(positions: Iterable[Any]) -> list[str]:
    return sorted({p.symbol for p in positions})


def tick_report(symbol: str, tick: Any, *, point: float, market_open: bool, digits: int | None = None,
                offset: int = 0) -> TickReport | None:
    """The quote as a report; None for a tick without both sides (nothing usable to report)."""
    if tick is None or tick.bid <= 0 or tick.ask <= 0:
        return None
    server = utc_from_epoch(tick.time, tick.time_msc)
    return _tick({"symbol": symbol, "bid": tick.bid, "ask": tick.ask, "point": point, "digits": digits,
                  "quoted_at": to_utc(server, offset), "server_quoted_at": server, "market_open": market_open})


def latest_tick_msc(ticks: Iterable[Any]) -> int | None:
    """The terminal's notion of now (MQL5's TimeCurrent): the time of the latest quote it received (ms)."""
    return max((t.time_msc or t.time * 1000 for t in ticks if t is not None), default=None)


# --- the poll's reports -----------------------------------------------------------------------------


def account_report(info: Any, *, user_id: str, poll_seq: int, gbp_rate: float, server_time: datetime | None,
                   offset: int | None = None, positions_profit: float | None = None,
                   flows: tuple[MoneyFlow, ...] = (), gbp_rate_inverse: float | None = None) -> AccountReport:
    return _account({
        "user_id": user_id, "login": info.login, "server": info.server, "currency": info.currency,
        "poll_seq": poll_seq, "balance": info.balance, "equity": info.equity, "profit": info.profit,
        "margin": max(0.0, info.margin), "margin_free": info.margin_free,
        "margin_level": max(0.0, info.margin_level), "gbp_rate": gbp_rate, "server_time": server_time,
        "server_offset_minutes": offset, "credit": getattr(info, "credit", 0.0),
        "positions_profit": positions_profit, "money_flows": flows, "gbp_rate_inverse": gbp_rate_inverse,
    })


def position_report(positions: Sequence[Any], deals: Sequence[ObservedDeal], *, user_id: str, login: int,
                    poll_seq: int, gbp_rate: float, offset: int = 0) -> PositionReport:
    observed = tuple(sorted((observed_position(p, gbp_rate, offset) for p in positions), key=_by_ticket))
    return _positions({"user_id": user_id, "login": login, "poll_seq": poll_seq, "positions": observed,
                       "closed_deals": tuple(deals)})


def sync_failed(*, user_id: str, login: int, poll_seq: int, stage: str, error_code: int,
                error_message: str) -> AccountSyncFailed:
    return AccountSyncFailed(user_id=user_id, login=login, poll_seq=poll_seq, stage=stage[:64],
                             error_code=error_code, error_message=error_message[:1000])


# --- one account's poll state, folded forward poll by poll ------------------------------------------


@dataclass(frozen=True)
class PollState:
    """What the poller remembers of an account between polls.

    ``volumes``: ticket -> volume at the last good poll (None before the first one); ``waiting``:
    vanished tickets whose closing deal has not appeared yet -> polls left to look for it;
    ``reported``: position -> closing deals already reported (partial closes of open positions).
    """

    volumes: Mapping[int, float] | None = None
    waiting: Mapping[int, int] = field(default_factory=dict)
    reported: Mapping[int, frozenset[int]] = field(default_factory=dict)
    flows_since: int | None = None  # server-clock second the next read of money flows starts from
    flows_reported: frozenset[int] = frozenset()  # flow deals already reported (the reads overlap)
    flows_window: tuple[int, int] | None = None  # the server-clock seconds the last read's flows covered


def _tick_reports(read: Any, offset: int, memo: dict[tuple[Any, ...], TickReport | None]) -> list[TickReport]:
    """The reports of the held symbols' quotes; ``memo``: by quote, symbol and what else they say."""
    digits, modes, reports = getattr(read, "digits", {}), read.trade_modes, []
    for s in held_symbols(read.positions):
        tick = read.ticks[s]
        market_open = modes.get(s, c.SYMBOL_TRADE_MODE_FULL) != c.SYMBOL_TRADE_MODE_DISABLED
        key = (s, tick, read.points[s], digits.get(s), offset, market_open)
        report = memo.get(key, _UNSEEN)
        if report is _UNSEEN:
            report = memo[key] = tick_report(s, tick, point=key[2], digits=key[3], offset=offset,
                                             market_open=market_open)
        if report is not None:
            reports.append(report)
    return reports


_UNSEEN = object()


@dataclass(frozen=True)
class PollOutcome:
    account: AccountReport
    positions: PositionReport
    ticks: tuple[TickReport, ...]
    state: PollState


def conclude_poll(read: Any, state: PollState, *, user_id: str, poll_seq: int, offset: int = 0,
                  server_now: datetime | None = None,
                  tick_reports: dict[tuple[Any, ...], TickReport | None] | None = None) -> PollOutcome:
    """The reports of one good read, and the state the next poll starts from. ``offset``: the broker's
    server clock minus true UTC, in minutes; ``server_now``: the server clock at the poll;
    ``tick_reports``: a round's reports by quote, so accounts sharing a quote share its (immutable) report."""
    open_now = {p.ticket: p.volume for p in read.positions}
    deals: list[ObservedDeal] = []
    waiting: dict[int, int] = {}
    reported = {t: ds for t, ds in state.reported.items() if t in open_now}
    for ticket, history in read.deals.items():
        seen = state.reported.get(ticket, frozenset())
        found = closing_deals(history, read.gbp_rate, already_reported=seen, offset=offset)
        deals.extend(found)
        if ticket in open_now:
            reported[ticket] = reported.get(ticket, frozenset()) | {d.ticket for d in found}
        elif not found:
            left = state.waiting.get(ticket, DEAL_WAIT_POLLS) - 1
            if left > 0:
                waiting[ticket] = left
    deals.sort(key=lambda d: (d.time, d.ticket))
    if server_now is None:  # no clock given: the newest quote's time, as MQL5's TimeCurrent
        latest = latest_tick_msc(read.ticks.values())
        server_now = None if latest is None else utc_from_epoch(0, latest)
    ticks = _tick_reports(read, offset, {} if tick_reports is None else tick_reports)
    # Every flow of the read's window, the ones already reported included (about a minute's worth: the
    # reads overlap), so a report whose effect the guard lost (a restore one update short) is healed by
    # the next. A flow is new to the previous report's balance only when the previous read looked at
    # its time and did not find it (not on a first read, nor when the clock's offset moved the window).
    covered = state.flows_window
    flows = tuple(f for d in getattr(read, "flows", ())
                  if (f := money_flow(d, read.gbp_rate, offset,
                                      covered is not None and d.ticket not in state.flows_reported
                                      and covered[0] <= d.time <= covered[1])) is not None)
    profit = round(sum(p.profit + getattr(p, "swap", 0.0) for p in read.positions), 2)
    return PollOutcome(
        account=account_report(read.info, user_id=user_id, poll_seq=poll_seq, gbp_rate=read.gbp_rate,
                               server_time=server_now, offset=offset, positions_profit=profit, flows=flows,
                               gbp_rate_inverse=getattr(read, "gbp_rate_inverse", None)),
        positions=position_report(read.positions, deals, user_id=user_id, login=read.info.login,
                                  poll_seq=poll_seq, gbp_rate=read.gbp_rate, offset=offset),
        ticks=tuple(ticks),
        state=PollState(volumes=open_now, waiting=waiting, reported=reported,
                        flows_since=int(server_now.timestamp()) if server_now is not None else state.flows_since,
                        flows_reported=frozenset(d.ticket for d in getattr(read, "flows", ())),
                        flows_window=getattr(read, "flows_window", None)),
    )
