"""Fault knobs of the simulated broker: what can go wrong, and how often.

Every probability is drawn from a seeded ``random.Random`` (one stream per account for trade and call
faults, one per symbol for market faults), so a run with the same seed and the same calls fails in
exactly the same places. All knobs default to "never".
"""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """Probabilities are per event: per API call, per order_send, or per symbol tick as noted."""

    # order_send on Request/Instant-execution symbols: the server answers 10004 (requote) with fresh
    # prices. Market-execution symbols never requote in MT5, so they ignore this knob.
    requote_probability: float = 0.0
    # order_send: the fill is moved against the trader by 1..slippage_points points. On Instant
    # execution a slip beyond the request's deviation becomes a requote instead of a fill.
    slippage_probability: float = 0.0
    slippage_points: int = 0
    # order_send: the server has no usable quote and answers 10021 (price off).
    price_off_probability: float = 0.0
    # any API call: the terminal's IPC pipe hiccups for that one call -> None/False and
    # (-10004, 'No IPC connection'). Use broker.disconnect() for a lasting outage.
    disconnect_probability: float = 0.0
    # order_send: the trade is executed on the server but the answer is lost on the way back ->
    # None and (-10002, 'IPC recv failed'). The case an idempotent close executor must survive.
    lost_reply_probability: float = 0.0
    # per symbol tick: the spread widens by spread_widen_factor for spread_widen_ticks ticks.
    spread_widen_probability: float = 0.0
    spread_widen_factor: float = 5.0
    spread_widen_ticks: int = 30
    # per symbol tick: the price jumps by up to +-gap_max_pct percent (session-open gaps are separate
    # and always on, sized per symbol by SymbolSpec.session_gap_pct).
    gap_probability: float = 0.0
    gap_max_pct: float = 0.5
