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
from schemas.locks import AccountLocked, AccountUnlocked, LockEnd
from schemas.operations import OperatorAlertRaised
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


#: Alert states a person is told about, beyond an alert's first word (its warning, or the market
#: guard's "closing"): what the terminal confirmed, a failure, an escalation, an admin stopping the
#: retries. "ordered", "waiting"
#: and "superseded" change nothing a person must act on (the row and the dashboard show them).
TOLD_STATES = frozenset({"executed", "failed", "escalated", "stopped"})
_STATE_TITLES = {"executed": "✅ Positions closed", "failed": "❌ Close failed", "escalated": "🚨 Liquidation failed",
                 "stopped": "⏹ Retries stopped"}
MAX_TICKET_LINES = 20


def told(alert: GuardAlertRaised) -> bool:
    """Whether this state of an alert is one a person needs a message for (exactly one per change)."""
    return alert.revision == 0 or alert.status in TOLD_STATES


def render(envelope: Envelope[Any], *, account: str) -> str | None:
    """The message for an alert state a person needs; None for events nobody is told about."""
    payload = envelope.payload
    if isinstance(payload, GuardAlertRaised) and told(payload):
        return alert_text(payload, account=account, at=envelope.occurred_at)[:MAX_LENGTH]
    if isinstance(payload, AccountLocked | AccountUnlocked):
        return lock_text(payload, account=account, at=envelope.occurred_at)[:MAX_LENGTH]
    if isinstance(payload, OperatorAlertRaised):
        return operator_text(payload, at=envelope.occurred_at)[:MAX_LENGTH]
    return None


_OPERATOR_TITLES = {"crash_loop": "🔥 Service crash loop", "service_recovered": "✅ Service recovered",
                    "warning_delayed": "⏱ Warning published late"}


def operator_text(alert: OperatorAlertRaised, *, at: datetime) -> str:
    """For the admins: what the guard survived but an operator must look at (a crash loop, a late warning)."""
    title = _OPERATOR_TITLES.get(alert.kind, _humane(alert.kind).capitalize())
    lines = [f"<b>{escape(title)}</b> — service <b>{escape(alert.service)}</b> ({escape(alert.severity)})",
             escape(alert.message), f"<i>{_when(at)}</i>"]
    return "\n".join(lines)


_LOCK_ENDS = {LockEnd.NEXT_BROKER_DAY: "It ends at the start of the next broker day.",
              LockEnd.ADMIN_UNLOCK: "It ends when an admin unlocks it."}


def lock_text(event: AccountLocked | AccountUnlocked, *, account: str, at: datetime) -> str:
    """A lock after a liquidation (no new trades until it ends, and how it ends), or its end (who, why)."""
    kind = _humane(event.kind).capitalize()
    if isinstance(event, AccountLocked):
        lines = [f"<b>🔒 Account locked</b> — account <b>{escape(account)}</b>",
                 f"{escape(kind)} liquidation: new trades are closed at once and the platform approves none.",
                 escape(_LOCK_ENDS[event.ends])]
        if event.message:
            lines.append(escape(event.message))
    else:
        lines = [f"<b>🔓 Account unlocked</b> — account <b>{escape(account)}</b>",
                 f"{escape(kind)} lock ended by {escape(event.unlocked_by)}: {escape(event.reason)}",
                 "Trading may resume."]
    lines.append(f"<i>{_when(at)}</i>")
    return "\n".join(lines)


def alert_text(alert: GuardAlertRaised, *, account: str, at: datetime) -> str:
    title = _ALERT_TITLES.get(alert.alert_type, _humane(alert.alert_type).capitalize())
    if alert.revision and alert.status in _STATE_TITLES:
        title = f"{_STATE_TITLES[alert.status]} · {title.split(' ', 1)[-1]}"
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
    if alert.revision and alert.status in TOLD_STATES:
        lines += _ticket_lines(alert.details.get("tickets"))
    lines.append(f"<i>{escape(_humane(alert.action_taken))} · {_when(at)}</i>")
    return "\n".join(lines)


def _ticket_lines(tickets: Any) -> list[str]:
    """Each ticket of the alert: closed (with its realised P&L), still open (why), or closed by another."""
    if not isinstance(tickets, dict):
        return []
    lines = []
    for ticket, t in list(tickets.items())[:MAX_TICKET_LINES]:
        if t.get("status") == "closed":
            what = f"closed, P&amp;L <b>{money(t.get('pnl_gbp'))}</b>"
        elif t.get("status") == "superseded":
            what = f"already closed by {escape(str(t.get('why')))}"
        else:
            what = f"still open: {escape(str(t.get('why') or t.get('status')))}"
        lines.append(f"{escape(str(t.get('symbol') or ''))} ticket {escape(str(ticket))}: {what}")
    if len(tickets) > MAX_TICKET_LINES:
        lines.append(f"… and {len(tickets) - MAX_TICKET_LINES} more")
    return lines


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
