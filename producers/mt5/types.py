"""The 11 result types of the MetaTrader5 package, with the package's field names and order.

The package returns CPython struct sequences: indexable, ``len()`` = field count, attribute access and
``_asdict()``. NamedTuple gives all of that (plus ``_fields``/``_replace``, which the real types lack;
code meant to run against the real package must not use those two).
Field comments give the C width the package uses, so callers know what range to expect.
"""

from typing import NamedTuple

#: ``new_record(Tick, values)``: the record ``Tick(*values)`` makes, values in field order, without the
#: NamedTuple's Python-level constructor (a call and an argument binding): the simulator builds records
#: by the thousand a second (a tick per symbol, a position per account and poll).
new_record = tuple.__new__


class TradeRequest(NamedTuple):
    action: int  # u32
    magic: int  # u64
    order: int  # u64
    symbol: str
    volume: float
    price: float
    stoplimit: float
    sl: float
    tp: float
    deviation: int  # u64
    type: int  # u32
    type_filling: int  # u32
    type_time: int  # u32
    expiration: int  # i64
    comment: str
    position: int  # u64
    position_by: int  # u64


class OrderSendResult(NamedTuple):
    retcode: int  # u32
    deal: int  # u64
    order: int  # u64
    volume: float
    price: float
    bid: float
    ask: float
    comment: str
    request_id: int  # u32
    retcode_external: int  # i32
    request: TradeRequest


class OrderCheckResult(NamedTuple):
    retcode: int  # u32
    balance: float
    equity: float
    profit: float
    margin: float
    margin_free: float
    margin_level: float
    comment: str
    request: TradeRequest


class TradePosition(NamedTuple):
    ticket: int  # u64
    time: int  # i64
    time_msc: int  # i64
    time_update: int  # i64
    time_update_msc: int  # i64
    type: int  # u32
    magic: int  # u64
    identifier: int  # u64
    reason: int  # u32
    volume: float
    price_open: float
    sl: float
    tp: float
    price_current: float
    swap: float
    profit: float
    symbol: str
    comment: str
    external_id: str


class TradeOrder(NamedTuple):
    ticket: int  # u64
    time_setup: int  # i64
    time_setup_msc: int  # i64
    time_done: int  # i64
    time_done_msc: int  # i64
    time_expiration: int  # i64
    type: int  # u32
    type_time: int  # u32
    type_filling: int  # u32
    state: int  # u32
    magic: int  # u64
    position_id: int  # u64
    position_by_id: int  # u64
    reason: int  # u32
    volume_initial: float
    volume_current: float
    price_open: float
    sl: float
    tp: float
    price_current: float
    price_stoplimit: float
    symbol: str
    comment: str
    external_id: str


class TradeDeal(NamedTuple):
    ticket: int  # u64
    order: int  # u64
    time: int  # i64
    time_msc: int  # i64
    type: int  # u32
    entry: int  # u32
    magic: int  # u64
    position_id: int  # u64
    reason: int  # u32
    volume: float
    price: float
    commission: float
    swap: float
    profit: float
    fee: float
    symbol: str
    comment: str
    external_id: str


class AccountInfo(NamedTuple):
    login: int  # u64
    trade_mode: int  # u32
    leverage: int  # u32
    limit_orders: int  # u32
    margin_so_mode: int  # u32
    trade_allowed: bool
    trade_expert: bool
    margin_mode: int  # u32
    currency_digits: int  # u32
    fifo_close: bool
    balance: float
    credit: float
    profit: float
    equity: float
    margin: float
    margin_free: float
    margin_level: float
    margin_so_call: float
    margin_so_so: float
    margin_initial: float
    margin_maintenance: float
    assets: float
    liabilities: float
    commission_blocked: float
    name: str
    server: str
    currency: str
    company: str


class TerminalInfo(NamedTuple):
    community_account: bool
    community_connection: bool
    connected: bool
    dlls_allowed: bool
    trade_allowed: bool
    tradeapi_disabled: bool
    email_enabled: bool
    ftp_enabled: bool
    notifications_enabled: bool
    mqid: bool
    build: int  # u32
    maxbars: int  # u32
    codepage: int  # i32
    ping_last: int  # i32
    community_balance: float
    retransmission: float
    company: str
    name: str
    language: str
    path: str
    data_path: str
    commondata_path: str


class SymbolInfo(NamedTuple):
    custom: bool
    chart_mode: int  # u32
    select: bool
    visible: bool
    session_deals: int  # u64
    session_buy_orders: int  # u64
    session_sell_orders: int  # u64
    volume: int  # u64
    volumehigh: int  # u64
    volumelow: int  # u64
    time: int  # i64
    digits: int  # u32
    spread: int  # i32
    spread_float: bool
    ticks_bookdepth: int  # u32
    trade_calc_mode: int  # u32
    trade_mode: int  # u32
    start_time: int  # i64
    expiration_time: int  # i64
    trade_stops_level: int  # i32
    trade_freeze_level: int  # i32
    trade_exemode: int  # u32
    swap_mode: int  # u32
    swap_rollover3days: int  # u32
    margin_hedged_use_leg: bool
    expiration_mode: int  # i32
    filling_mode: int  # i32
    order_mode: int  # i32
    order_gtc_mode: int  # u32
    option_mode: int  # u32
    option_right: int  # u32
    bid: float
    bidhigh: float
    bidlow: float
    ask: float
    askhigh: float
    asklow: float
    last: float
    lasthigh: float
    lastlow: float
    volume_real: float
    volumehigh_real: float
    volumelow_real: float
    option_strike: float
    point: float
    trade_tick_value: float
    trade_tick_value_profit: float
    trade_tick_value_loss: float
    trade_tick_size: float
    trade_contract_size: float
    trade_accrued_interest: float
    trade_face_value: float
    trade_liquidity_rate: float
    volume_min: float
    volume_max: float
    volume_step: float
    volume_limit: float
    swap_long: float
    swap_short: float
    margin_initial: float
    margin_maintenance: float
    session_volume: float
    session_turnover: float
    session_interest: float
    session_buy_orders_volume: float
    session_sell_orders_volume: float
    session_open: float
    session_close: float
    session_aw: float
    session_price_settlement: float
    session_price_limit_min: float
    session_price_limit_max: float
    margin_hedged: float
    price_change: float
    price_volatility: float
    price_theoretical: float
    price_greeks_delta: float
    price_greeks_theta: float
    price_greeks_gamma: float
    price_greeks_vega: float
    price_greeks_rho: float
    price_greeks_omega: float
    price_sensitivity: float
    basis: str
    category: str
    currency_base: str
    currency_profit: str
    currency_margin: str
    bank: str
    description: str
    exchange: str
    formula: str
    isin: str
    name: str
    page: str
    path: str


class Tick(NamedTuple):
    time: int  # i64
    bid: float
    ask: float
    last: float
    volume: int  # u64
    time_msc: int  # i64
    flags: int  # u32
    volume_real: float


class BookInfo(NamedTuple):
    type: int  # u32
    price: float
    volume: int  # u64
    volume_dbl: float
