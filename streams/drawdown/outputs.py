"""The drawdown guard's messages: alerts and account snapshots."""

from __future__ import annotations

from typing import Any

from infra.settings import GuardSettings
from schemas import Envelope, derived
from schemas.decisions import AccountAssessed, ActionTaken, AlertType, GuardAlertRaised
from streams.drawdown.readings import daily_loss
from streams.drawdown.state import DrawdownState, Reading


def guard_alert(event: Envelope[Any], rule: str, kind: AlertType, action: ActionTaken, **fields: Any) -> Envelope[Any]:
    return derived(GuardAlertRaised(user_id=event.account_id, alert_type=kind, action_taken=action, **fields),
                   cause=event, rule=rule)


def snapshot_due(state: DrawdownState, reading: Reading, config: GuardSettings, decided: bool) -> bool:
    last = state.last_snapshot_at
    return decided or last is None or (reading.at - last).total_seconds() >= config.snapshot_interval_seconds


def snapshot(state: DrawdownState, event: Envelope[Any], reading: Reading, *, drawdown: float) -> Envelope[Any]:
    equity = reading.equity_gbp
    margin = state.last_account.get("margin", 0.0)
    assessed = AccountAssessed(
        user_id=event.account_id, equity_gbp=round(equity, 4), balance_gbp=round(reading.balance_gbp, 4),
        peak_equity_gbp=round(state.peak_equity_gbp or equity, 4), drawdown_percent=round(drawdown, 4),
        daily_loss_gbp=round(daily_loss(state, reading)[0], 4), open_positions_count=len(state.positions),
        total_volume_lots=round(sum(h.volume for h in state.positions), 4),
        open_pnl_gbp=round(sum(h.profit_gbp for h in state.positions), 4),
        margin_used_percent=round(margin / equity * 100, 4) if equity > 0 else 0.0,
        last_sync_at=reading.at, sync_error=state.sync_error, profile=state.profile)
    return derived(assessed, cause=event, rule="drawdown/assessed")

