"""Closing one ticket on a terminal: the only module of the executor that trades.

Blocking, like the gateway it calls; the loop runs it inline (simulator) or in a thread. It re-reads
the position before every send and after every unanswered send, so it never acts on a stale view.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from producers.executor.parsing import (
    NOT_FOUND,
    Attempted,
    CloseSettings,
    close_request,
    closed_by,
    filling_mode,
    is_our_close,
)
from producers.mt5 import constants as c
from producers.mt5.gateway import Gateway
from producers.poller.client import IPC_FAILURES, ReadFailed, SymbolCache, called
from producers.poller.parsing import route_rate

log = logging.getLogger(__name__)


def close_ticket(gateway: Gateway, *, ticket: int, symbol: str, comment: str,
                 settings: CloseSettings) -> Attempted:
    """Close the whole position ``ticket`` (of ``symbol``) by an opposite deal; retry requotes."""
    ensure_attached(gateway)
    try:
        position = _open_position(gateway, ticket)
        if position is None:
            # Already closed (by another command, a stop, a hand, a stop-out) or never there: its deals say.
            return resolve_unknown(gateway, ticket=ticket, comment=comment, magic=settings.magic, attempts=0) or \
                Attempted("not_found", error=NOT_FOUND)
        if position.symbol != symbol:
            return Attempted("failed", error=f"ticket {ticket} is a {position.symbol} position, not {symbol}",
                             entry_price=position.price_open, position_type=position.type)
        info = called(gateway, "symbol_info", gateway.symbol_info(symbol))
        return _send_until_done(gateway, position, filling_mode(info.filling_mode), comment, settings)
    except ReadFailed as failed:
        return Attempted("failed", error=f"{failed.stage} failed: {failed.message} ({failed.code})")


def ensure_attached(gateway: Gateway) -> None:
    """A terminal whose process restarted answers nothing until initialize() is called again."""
    if gateway.terminal_info() is None and gateway.last_error()[0] in IPC_FAILURES:
        log.info("terminal not attached (%s); initializing it again", gateway.last_error())
        gateway.initialize()


def _open_position(gateway: Gateway, ticket: int) -> Any | None:
    found = called(gateway, "positions_get", gateway.positions_get(ticket=ticket))
    return found[0] if found else None


def _send_until_done(gateway: Gateway, position: Any, filling: int, comment: str,
                     settings: CloseSettings) -> Attempted:
    attempt = 0
    while True:
        attempt += 1
        tick = called(gateway, "symbol_info_tick", gateway.symbol_info_tick(position.symbol))
        request = close_request(position, tick, filling=filling, settings=settings, comment=comment)
        result = gateway.order_send(request)
        if result is None:  # no answer: the close may or may not have happened; look before anything else
            return _after_lost_reply(gateway, position, comment, settings, attempt)
        if result.retcode == c.TRADE_RETCODE_DONE:
            return _closed(gateway, position, result, attempt)
        if result.retcode == c.TRADE_RETCODE_MARKET_CLOSED:  # not a failure: the loop sets when to try again
            return Attempted("deferred", attempt, result.retcode, entry_price=position.price_open,
                             position_type=position.type, error=f"{result.retcode}: {result.comment or 'market closed'}")
        if not settings.retry.should_retry(result.retcode, attempt):
            error = f"{result.retcode}: {result.comment or 'rejected'}"
            return Attempted("failed", attempt, result.retcode, entry_price=position.price_open,
                             position_type=position.type, error=error)
        log.info("close of %d answered %d (%s); retrying at a fresh price", position.ticket, result.retcode,
                 result.comment)


def _closed(gateway: Gateway, position: Any, result: Any, attempts: int) -> Attempted:
    deals = gateway.history_deals_get(position=position.ticket) or ()
    deal = next((d for d in deals if d.ticket == result.deal), None)
    return Attempted("closed", attempts, result.retcode, price=result.price or (deal.price if deal else None),
                     volume=result.volume or position.volume, entry_price=position.price_open,
                     position_type=position.type, pnl=None if deal is None else deal.profit)


def _after_lost_reply(gateway: Gateway, position: Any, comment: str, settings: CloseSettings,
                      attempts: int) -> Attempted:
    code, message = gateway.last_error()
    try:
        found = resolve_unknown(gateway, ticket=position.ticket, comment=comment, magic=settings.magic,
                                attempts=attempts)
    except ReadFailed as failed:  # cannot tell yet: the ledger keeps it unresolved for the next sweep
        return Attempted("unknown", attempts, None, error=f"order_send gave no answer ({code}: {message}); "
                         f"then {failed.stage} failed: {failed.message}")
    if found is not None:
        return found
    return Attempted("failed", attempts, None, entry_price=position.price_open, position_type=position.type,
                     error=f"order_send gave no answer ({code}: {message}); the position is still open")


def resolve_unknown(gateway: Gateway, *, ticket: int, comment: str, magic: int,
                    attempts: int) -> Attempted | None:
    """After a send whose answer is unknown (lost reply, crash): what became of the position.

    None: it is still open, so the close did not happen. Otherwise its closing deal tells whether this
    executor closed it (``comment`` and ``magic``) or something else did (SL, TP, stop-out, a trader).
    """
    if _open_position(gateway, ticket) is not None:
        return None
    deals = called(gateway, "history_deals_get", gateway.history_deals_get(position=ticket))
    opening = next((d for d in deals if d.entry == c.DEAL_ENTRY_IN), None)
    known: dict[str, Any] = {} if opening is None else dict(
        entry_price=opening.price,
        position_type=c.POSITION_TYPE_BUY if opening.type == c.DEAL_TYPE_BUY else c.POSITION_TYPE_SELL)
    ours = [d for d in deals if is_our_close(d, comment=comment, magic=magic)]
    if ours:
        deal = ours[-1]
        return Attempted("closed", attempts, c.TRADE_RETCODE_DONE, price=deal.price, volume=deal.volume,
                         pnl=deal.profit, **known)
    others = [d for d in deals if d.entry in (c.DEAL_ENTRY_OUT, c.DEAL_ENTRY_OUT_BY)]
    if others:
        return replace(closed_by(others[-1], magic=magic), attempts=attempts, **known)
    return Attempted("not_found", attempts, None, error=NOT_FOUND, **known)


def gbp_rate(gateway: Gateway, cache: SymbolCache) -> float | None:
    """GBP per unit of the account currency at the terminal's quotes; None if it cannot be read now."""
    try:
        info = called(gateway, "account_info", gateway.account_info())
        route = cache.route(gateway, info.currency)
        ticks = {leg.symbol: called(gateway, "symbol_info_tick", gateway.symbol_info_tick(leg.symbol))
                 for leg in route}
    except ReadFailed as failed:
        log.warning("no GBP rate for a close result: %s", failed)
        return None
    return route_rate(route, ticks)
