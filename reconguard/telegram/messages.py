"""What a trader reads in Telegram: pure functions from an event to an HTML message.

Only the numbers that matter, each on its own line, with every outside value escaped.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import Any

from infra.tables import PositionSnapshot
from schemas import Envelope
from schemas.decisions import GuardAlertRaised
from schemas.results import CloseOutcome, PositionClosed
from schemas.retcodes import retcode_name

MAX_LENGTH = 4096  # Telegram's limit for one message

_ALERT_TITLES = {
    "drawdown_warning": "⚠️ Drawdown warning",
    "drawdown_critical": "🛑 Drawdown limit breached",
    "daily_loss_critical": "🛑 Daily loss limit breached",
    "market_gap": "⚡ Market gap",
    "spread": "⚡ Spread too wide",
    "stale_feed": "⚡ Stale price feed",
}


def money(value: float | None) -> str:
    if value is None:
        return "–"
    sign = "−" if value < 0 else ""
    return f"{sign}£{abs(value):,.2f}"


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}%"


def retcode(value: int | None) -> str:
    if value is None:
        return "not sent"
    return f"{value} ({retcode_name(value)})"


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _humane(token: str) -> str:
    return token.replace("_", " ")


def render(envelope: Envelope[Any], *, account: str) -> str | None:
    """The message for an alert or a close result; None for events nobody is told about."""
    payload = envelope.payload
    if isinstance(payload, GuardAlertRaised):
        text = alert_text(payload, account=account, at=envelope.occurred_at)
    elif isinstance(payload, CloseOutcome):
        text = close_text(payload, account=account, at=envelope.occurred_at)
    else:
        return None
    return text[:MAX_LENGTH]


def alert_text(alert: GuardAlertRaised, *, account: str, at: datetime) -> str:
    title = _ALERT_TITLES.get(alert.alert_type, _humane(alert.alert_type).capitalize())
    lines = [f"<b>{escape(title)}</b> — account <b>{escape(account)}</b>"]
    if alert.drawdown_percent is not None:
        threshold = percent(alert.threshold_percent)
        lines.append(f"Drawdown: <b>{percent(alert.drawdown_percent)}</b> (threshold {threshold})")
    elif alert.threshold_percent is not None:
        lines.append(f"Threshold: {percent(alert.threshold_percent)}")
    if alert.equity_gbp is not None:
        lines.append(f"Equity: {money(alert.equity_gbp)}")
    if alert.symbol:
        lines.append(f"Symbol: {escape(alert.symbol)}")
    if alert.positions_closed_count or alert.total_loss_gbp:
        lines.append(
            f"Positions closed: {alert.positions_closed_count} · Loss: {money(alert.total_loss_gbp)}"
        )
    if alert.message:
        lines.append(escape(alert.message))
    lines.append(f"<i>{escape(_humane(alert.action_taken))} · {_when(at)}</i>")
    return "\n".join(lines)


def close_text(outcome: CloseOutcome, *, account: str, at: datetime) -> str:
    closed = isinstance(outcome, PositionClosed)
    title = "✅ Position closed" if closed else "❌ Close failed"
    side = f" ({outcome.direction} {outcome.volume:g} lots)" if outcome.direction and outcome.volume else ""
    lines = [
        f"<b>{title}</b> — account <b>{escape(account)}</b>",
        f"{escape(outcome.symbol)} ticket {outcome.ticket}{escape(side)}",
    ]
    if outcome.price is not None:
        lines.append(
            f"Price: {outcome.price:g}"
            + (f" (opened {outcome.entry_price:g})" if outcome.entry_price else "")
        )
    if outcome.pnl_gbp is not None:
        lines.append(f"P&amp;L: <b>{money(outcome.pnl_gbp)}</b>")
    lines.append(
        f"Reason: {escape(_humane(outcome.reason))} · Retcode {retcode(outcome.retcode)}"
        + (f" · {outcome.attempts} attempt(s)" if outcome.attempts else "")
    )
    if not closed and outcome.error_message:
        lines.append(f"Error: {escape(outcome.error_message)}")
    lines.append(f"<i>{_when(at)}</i>")
    return "\n".join(lines)


def status_text(*, account: str, snapshot: PositionSnapshot | None, open_divergences: int) -> str:
    """The answer to /status: the latest snapshot and how many divergences are open."""
    lines = [f"<b>Account {escape(account)}</b>"]
    if snapshot is None:
        lines.append("No snapshot yet.")
    else:
        lines += [
            f"Equity: <b>{money(float(snapshot.equity_gbp))}</b> "
            f"(peak {money(float(snapshot.peak_equity_gbp))})",
            f"Drawdown: <b>{percent(float(snapshot.drawdown_percent))}</b>",
            f"Open positions: {snapshot.open_positions_count} · "
            f"Open P&amp;L: {money(float(snapshot.open_pnl_gbp))}",
        ]
    lines.append(f"Open divergences: <b>{open_divergences}</b>")
    if snapshot is not None:
        lines.append(f"<i>as of {_when(snapshot.created_at)}</i>")
    return "\n".join(lines)


NOT_LINKED = (
    "This chat is not linked to a reconguard account. Ask your operator to link it "
    "(they need this chat's id)."
)
