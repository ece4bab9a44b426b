"""What a simulated terminal shows about symbols, itself and the market book (pure builders)."""

from __future__ import annotations

from functools import lru_cache

from producers.mt5 import constants as c
from producers.mt5.simulator.market import SymbolMarket
from producers.mt5.types import BookInfo, SymbolInfo, TerminalInfo, Tick

BUILD = 5120
VERSION = (500, BUILD, "23 May 2025")
PACKAGE_VERSION = "5.0.6231"

_EXPIRATION_ALL = 1 | 2 | 4 | 8  # GTC, DAY, SPECIFIED, SPECIFIED_DAY
_ORDER_ALL = 1 | 2 | 4 | 8 | 16 | 32 | 64  # market, limit, stop, stop-limit, SL, TP, close-by


def build_symbol_info(market: SymbolMarket, tick: Tick, *, tick_value: float, selected: bool) -> SymbolInfo:
    """SymbolInfo as MT5 fills it for forex/CFD symbols; tick_value is in the account currency."""
    spec = market.spec
    _, day_open, bid_hi, bid_lo, ask_hi, ask_lo = market.day_stats
    change = round((tick.bid - day_open) / day_open * 100, 2) if day_open else 0.0
    fields: dict[str, object] = dict.fromkeys(SymbolInfo._fields, 0.0)  # the many unused real fields
    fields.update(
        custom=False, chart_mode=c.SYMBOL_CHART_MODE_BID, select=selected, visible=selected,
        session_deals=0, session_buy_orders=0, session_sell_orders=0, volume=0, volumehigh=0, volumelow=0,
        time=tick.time, digits=spec.digits, spread=round((tick.ask - tick.bid) / market.point), spread_float=True,
        ticks_bookdepth=10, trade_calc_mode=spec.calc_mode, trade_mode=spec.trade_mode, start_time=0,
        expiration_time=0, trade_stops_level=spec.stops_level, trade_freeze_level=0, trade_exemode=spec.exemode,
        swap_mode=c.SYMBOL_SWAP_MODE_POINTS, swap_rollover3days=c.DAY_OF_WEEK_WEDNESDAY,
        margin_hedged_use_leg=True, expiration_mode=_EXPIRATION_ALL, filling_mode=spec.filling_mode,
        order_mode=_ORDER_ALL, order_gtc_mode=c.SYMBOL_ORDERS_GTC, option_mode=c.SYMBOL_OPTION_MODE_EUROPEAN,
        option_right=c.SYMBOL_OPTION_RIGHT_CALL,
        bid=tick.bid, bidhigh=bid_hi, bidlow=bid_lo, ask=tick.ask, askhigh=ask_hi, asklow=ask_lo,
        point=market.point, trade_tick_value=tick_value, trade_tick_value_profit=tick_value,
        trade_tick_value_loss=tick_value, trade_tick_size=market.point, trade_contract_size=spec.contract_size,
        volume_min=spec.volume_min, volume_max=spec.volume_max, volume_step=spec.volume_step,
        session_open=day_open, session_close=day_open, price_change=change,
        basis="", category=spec.category, currency_base=spec.currency_base,
        currency_profit=spec.currency_profit, currency_margin=spec.currency_margin, bank="",
        description=spec.description, exchange="", formula="", isin="", name=spec.name, page="",
        path=f"{spec.category}\\{spec.name}",
    )
    return SymbolInfo(**fields)  # type: ignore[arg-type]


@lru_cache(maxsize=1024)  # asked on every poll with the same few answers; a TerminalInfo is immutable
def build_terminal_info(*, connected: bool, trade_allowed: bool, company: str, login: int | None) -> TerminalInfo:
    folder = f"/sim/terminals/{login or 'none'}"
    return TerminalInfo(
        community_account=False, community_connection=False, connected=connected, dlls_allowed=False,
        trade_allowed=trade_allowed, tradeapi_disabled=False, email_enabled=False, ftp_enabled=False,
        notifications_enabled=False, mqid=False, build=BUILD, maxbars=100_000, codepage=0,
        ping_last=25_000 if connected else 0, community_balance=0.0, retransmission=0.0, company=company,
        name="MetaTrader 5 (simulated)", language="English", path=folder, data_path=folder,
        commondata_path="/sim/terminals/common",
    )


def build_book(market: SymbolMarket, tick: Tick, depth: int = 5) -> tuple[BookInfo, ...]:
    """A synthetic book around the quote: sells first (descending price), then buys."""
    step = market.point * max(1, market.spec.spread_points // 2)
    digits = market.spec.digits
    sells = [BookInfo(c.BOOK_TYPE_SELL, round(tick.ask + i * step, digits), 10 * (i + 1), 10.0 * (i + 1))
             for i in reversed(range(depth))]
    buys = [BookInfo(c.BOOK_TYPE_BUY, round(tick.bid - i * step, digits), 10 * (i + 1), 10.0 * (i + 1))
            for i in range(depth)]
    return tuple(sells + buys)
