"""Guard alerts through their lifecycle: from the guard's close commands to what the terminal confirmed.

Pure functions. ``handle(state, event, config)`` folds a close command, a close result or a position
report into the account's open alerts and returns the alert states it calls for; ``fire_due(state,
now)`` sends the retries whose time has come (the worker's sweep). Times are the events' own, so a
replay gives the same states with the same ids.

An alert (``alert_id``: the guard's first alert event) owns every ticket its commands list
(``alert_tickets``). Each ticket ends *closed* (a PositionClosed of one of the alert's commands:
counted, its realised P&L summed) or *superseded* (another command, a stop, a take-profit, a
stop-out or a hand closed it first: PositionCloseSuperseded, or it left the terminal while no
command of the alert was in flight). Until then a refused ticket is *failed* (retried) or
*deferred* (market closed: retried at the market's next open, as the executor said).

The alert's states, each published once as a GuardAlertRaised with the next revision:
- ``ordered``: the liquidation's commands were sent (the market guard's own alert says it already);
- ``executed``: every ticket closed or superseded, at least one closed by the alert:
  ``positions_closed`` with the count, the realised loss and the time of the last confirmation;
- ``superseded``: every ticket was closed by something else (nothing to count);
- ``failed``: positions remain open after a round (which, and why); fast retries follow, at
  ``liquidation_retry_seconds`` doubling, ``liquidation_fast_retries`` times;
- ``waiting``: only deferred tickets remain (market closed): retried at the next open;
- ``escalated``: the fast retries are used up: "liquidation failed: N positions still open", retried
  every ``liquidation_escalated_retry_seconds`` until the positions are flat or an admin intervenes;
- ``stopped``: an admin intervened: unlocking the account (UnlockAccount, with who and why) ends the
  retries of its unfinished liquidations; the positions still open are named and left to the admin.
A close the executor has not answered within ``liquidation_answer_timeout_seconds`` counts as refused
(its late answer still counts if it confirms the close), so an executor that is down escalates too.
Once ordered, a liquidation is never cancelled by a recovery (the trigger is fixed, as its deadline).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from infra.settings import GuardSettings
from schemas import Envelope, derived
from schemas.commands import ClosePosition
from schemas.common import CloseReason
from schemas.decisions import ActionTaken, AlertType, GuardAlertRaised
from schemas.locks import UnlockAccount
from schemas.reports import PositionReport
from schemas.results import CloseOutcome, PositionClosed, PositionCloseDeferred, PositionCloseSuperseded
from streams.alerts.state import (
    CLOSED,
    DEFERRED,
    EARLY_KEPT,
    FAILED,
    FINAL,
    ORDERED,
    SUPERSEDED,
    AlertProgress,
    AlertsState,
    TicketState,
)
from streams.decisions import CauseRef, Decision, replace
from streams.reconciliation.matching import closing_deals

ALERT_OF_REASON = {CloseReason.DRAWDOWN_GUARD: AlertType.DRAWDOWN_CRITICAL,
                   CloseReason.DAILY_LOSS_GUARD: AlertType.DAILY_LOSS_CRITICAL,
                   CloseReason.MARKET_GAP: AlertType.MARKET_GAP, CloseReason.SPREAD: AlertType.SPREAD,
                   CloseReason.STALE_FEED: AlertType.STALE_FEED}
LIQUIDATIONS = frozenset({CloseReason.DRAWDOWN_GUARD, CloseReason.DAILY_LOSS_GUARD})
KEEP_FINISHED = timedelta(days=1)
_ACTION = {"executed": ActionTaken.POSITIONS_CLOSED, "failed": ActionTaken.FAILED,
           "escalated": ActionTaken.FAILED, "stopped": ActionTaken.FAILED}


def handle(state: AlertsState, event: Envelope[Any], config: GuardSettings) -> Decision[AlertsState]:
    payload = event.payload
    if isinstance(payload, PositionReport):  # every poll: asked first
        return on_positions(state, event, config) if state.alerts else Decision(state)
    if isinstance(payload, UnlockAccount):
        return on_unlock(state, event)
    if isinstance(payload, ClosePosition):
        return on_command(state, event, config)
    if isinstance(payload, CloseOutcome):
        return on_result(state, event, config)
    return Decision(state)


def on_command(state: AlertsState, event: Envelope[ClosePosition], config: GuardSettings) -> Decision[AlertsState]:
    c = event.payload
    if c.alert_id is None:
        return Decision(state)
    key, command = str(c.alert_id), event.event_id.hex[:16]
    alert = state.alerts.get(key)
    if alert is not None and (alert.done_at is not None or command in alert.commands):
        return Decision(state)  # a redelivery, or our own retry coming back
    fresh = alert is None
    if alert is None:
        state = _forget_finished(state, event.occurred_at)
        alert = AlertProgress(key, CauseRef.of(event), c.reason, c.rule, None if c.reason in LIQUIDATIONS else c.symbol,
                              c.details, event.occurred_at,
                              tickets={t: TicketState("", at=event.occurred_at) for t in c.alert_tickets or c.tickets})
    tickets = dict(alert.tickets)
    for ticket in c.tickets:
        known = tickets.get(ticket)
        if known is None or known.status not in FINAL:
            tickets[ticket] = TicketState(c.symbol, ORDERED, command, at=event.occurred_at)
    alert = replace(alert, tickets=tickets, commands=alert.commands + (command,))
    outputs: tuple[Envelope[Any], ...] = ()
    if fresh and c.reason in LIQUIDATIONS:  # the market guard's own alert already says "closing"
        alert, published = _publish(alert, "ordered", event.occurred_at)
        outputs = (published,)
    answered = {int(k.split("/")[0]): a for k, a in state.early.items() if a.command == command}
    if not answered:
        return Decision(_with(state, alert), outputs)
    state = replace(state, early={k: a for k, a in state.early.items() if a.command != command})
    tickets = {**alert.tickets, **{t: a for t, a in answered.items()
                                   if t in alert.tickets and alert.tickets[t].status not in FINAL}}
    progressed = _progress(state, replace(alert, tickets=tickets), max(event.occurred_at, *(
        a.at for a in answered.values() if a.at is not None)), config)
    return Decision(progressed.state, outputs + tuple(progressed.outputs))


def on_result(state: AlertsState, event: Envelope[CloseOutcome], config: GuardSettings) -> Decision[AlertsState]:
    r = event.payload
    alert = state.alerts.get(str(r.alert_id)) if r.alert_id is not None else None
    if r.alert_id is not None and (alert is None or alert.done_at is None and r.command_id.hex[:16] not in alert.commands):
        return Decision(_keep_early(state, event))  # its command is on the other topic, not read yet
    ticket = alert.tickets.get(r.ticket) if alert is not None else None
    if alert is None or ticket is None or alert.done_at is not None or ticket.status in FINAL:
        return Decision(state)  # not a guard alert's, unknown, or already settled (a redelivery)
    answered = _answer(state, ticket, event)
    if answered.status not in FINAL and r.command_id.hex[:16] != ticket.command:
        return Decision(state)  # an earlier attempt's refusal, delivered late: the newer command decides
    alert = replace(alert, tickets={**alert.tickets, r.ticket: answered})
    return _progress(state, alert, event.occurred_at, config)


def on_positions(state: AlertsState, event: Envelope[PositionReport], config: GuardSettings
                 ) -> Decision[AlertsState]:
    """A refused ticket that left the terminal was closed by something else (a stop, a hand, a stop-out)."""
    at, report = event.occurred_at, event.payload
    live = {p.ticket for p in report.positions}
    deals = closing_deals(report.closed_deals)
    outputs: list[Envelope[Any]] = []
    for alert in list(state.alerts.values()):
        if alert.done_at is not None or at <= alert.ordered_at:
            continue
        gone = {t: s for t, s in alert.tickets.items() if s.status in (FAILED, DEFERRED) and t not in live}
        if not gone:
            continue
        tickets = dict(alert.tickets)
        for t, s in gone.items():
            deal = deals.get(t)
            why = f"{deal.reason.value} (deal {deal.ticket})" if deal else "left the terminal"
            tickets[t] = replace(s, status=SUPERSEDED, at=at, why=why, retry_at=None)
        decision = _progress(state, replace(alert, tickets=tickets), at, config)
        state, outputs = decision.state, outputs + list(decision.outputs)
    return Decision(state, tuple(outputs))


def on_unlock(state: AlertsState, event: Envelope[UnlockAccount]) -> Decision[AlertsState]:
    """An admin's unlock is the intervention that ends a failed liquidation's retries: each unfinished
    liquidation of the account is published ``stopped``, naming who, why and what is still open."""
    outputs: list[Envelope[Any]] = []
    for alert in list(state.alerts.values()):
        if alert.done_at is not None or alert.reason not in LIQUIDATIONS:
            continue
        stopped = replace(alert, retry_at=None, done_at=event.occurred_at,
                          details={**alert.details, "stopped_by": event.payload.requested_by,
                                   "stopped_because": event.payload.reason})
        stopped, published = _publish(stopped, "stopped", event.occurred_at)
        state, outputs = _with(state, stopped), outputs + [published]
    return Decision(state, tuple(outputs))


def fire_due(state: AlertsState, now: datetime, config: GuardSettings) -> Decision[AlertsState]:
    """Count a close the executor has not answered within ``liquidation_answer_timeout_seconds`` as
    failed; retry every alert whose retry is due: one command per symbol of its refused tickets."""
    outputs: list[Envelope[Any]] = []
    for alert in list(state.alerts.values()):
        if alert.done_at is not None:
            continue
        late = _unanswered(alert, now, config)
        if late:
            why = f"no answer from the executor within {config.liquidation_answer_timeout_seconds:g} s"
            tickets = {**alert.tickets, **{t: replace(s, status=FAILED, at=now, why=why) for t, s in late.items()}}
            decision = _progress(state, replace(alert, tickets=tickets), now, config)
            state, outputs = decision.state, outputs + list(decision.outputs)
            alert = state.alerts[alert.alert_id]
        if alert.done_at is None and alert.retry_at is not None and alert.retry_at <= now:
            alert, commands = _retry(alert, now)
            state, outputs = _with(state, alert), outputs + commands
    return Decision(state, tuple(outputs))


def due(state: AlertsState, now: datetime, config: GuardSettings) -> bool:
    return any(a.done_at is None and (a.retry_at is not None and a.retry_at <= now or _unanswered(a, now, config))
               for a in state.alerts.values())


def _unanswered(alert: AlertProgress, now: datetime, config: GuardSettings) -> dict[int, TicketState]:
    """Tickets whose command has gone unanswered too long (the executor is down, or never got it)."""
    horizon = now - timedelta(seconds=config.liquidation_answer_timeout_seconds)
    return {t: s for t, s in alert.tickets.items() if s.status == ORDERED and s.at is not None and s.at <= horizon}


# --- the steps -----------------------------------------------------------------------------------


def _answer(state: AlertsState, ticket: TicketState, event: Envelope[CloseOutcome]) -> TicketState:
    r, at = event.payload, event.occurred_at
    command = r.command_id.hex[:16]
    if isinstance(r, PositionClosed):
        return replace(ticket, status=CLOSED, command=command, pnl_gbp=r.pnl_gbp, at=at, why=None, retry_at=None)
    if isinstance(r, PositionCloseSuperseded):
        return replace(ticket, status=SUPERSEDED, command=command, at=at, why=_closer(state, r), retry_at=None)
    if isinstance(r, PositionCloseDeferred):
        return replace(ticket, status=DEFERRED, command=command, at=at, why=r.error_message, retry_at=r.retry_at)
    why = r.error_message or (f"retcode {r.retcode}" if r.retcode is not None else "not sent")
    return replace(ticket, status=FAILED, command=command, at=at, why=why, retry_at=None)


def _keep_early(state: AlertsState, event: Envelope[CloseOutcome]) -> AlertsState:
    """An answer to a command not read yet, kept until it is (``on_command``); a redelivery changes nothing."""
    r = event.payload
    key = f"{r.ticket}/{r.command_id.hex[:16]}"
    known = state.early.get(key)
    if known is not None and known.status in FINAL:
        return state
    early = {**state.early, key: _answer(state, TicketState(r.symbol), event)}
    return replace(state, early=dict(list(early.items())[-EARLY_KEPT:]))


def _closer(state: AlertsState, r: PositionCloseSuperseded) -> str:
    """What closed a superseded ticket, naming the other command and its reason when it is known here."""
    other = r.superseded_by_command
    if other is None:
        return f"{r.closed_by or 'something else'} (deal {r.closing_deal})"
    reason = next((a.reason.value for a in state.alerts.values() if other in a.commands), None)
    return f"command {other}" + (f" ({reason})" if reason else "")


def _progress(state: AlertsState, alert: AlertProgress, at: datetime, config: GuardSettings
              ) -> Decision[AlertsState]:
    """Where the alert stands once every command in flight has answered; publish it if that changed."""
    statuses = {t.status for t in alert.tickets.values()}
    if ORDERED in statuses:
        return Decision(_with(state, alert))  # still waiting for answers
    if statuses <= FINAL:
        status = "executed" if CLOSED in statuses else "superseded"
        alert = replace(alert, retry_at=None, done_at=at)
    elif FAILED in statuses:
        fast = alert.retries < config.liquidation_fast_retries
        delay = config.liquidation_retry_seconds * 2 ** alert.retries if fast else \
            config.liquidation_escalated_retry_seconds
        status = "failed" if fast and alert.status != "escalated" else "escalated"
        alert = replace(alert, retry_at=at + timedelta(seconds=delay))
    else:  # only deferred tickets remain: the market's next open
        status = "waiting" if alert.status != "escalated" else "escalated"
        alert = replace(alert, retry_at=min(t.retry_at or at for t in alert.tickets.values() if t.status == DEFERRED))
    if status == alert.status:
        return Decision(_with(state, alert))
    alert, published = _publish(alert, status, at)
    return Decision(_with(state, alert), (published,))


def _retry(alert: AlertProgress, now: datetime) -> tuple[AlertProgress, list[Envelope[Any]]]:
    due_tickets = {t: s for t, s in alert.tickets.items()
                   if s.status == FAILED or s.status == DEFERRED and (s.retry_at is None or s.retry_at <= now)}
    refused = any(s.status == FAILED for s in due_tickets.values())
    by_symbol: dict[str, list[int]] = {}
    for t, s in sorted(due_tickets.items()):
        if s.symbol:  # a ticket whose command was never seen: its symbol is unknown, it stays open on record
            by_symbol.setdefault(s.symbol, []).append(t)
    tickets, commands, outputs = dict(alert.tickets), list(alert.commands), []
    for symbol, listed in sorted(by_symbol.items()):
        command = ClosePosition(user_id=alert.cause.account_id, symbol=symbol, tickets=tuple(listed),
                                reason=alert.reason, rule=alert.rule, details=alert.details,
                                alert_id=uuid.UUID(alert.alert_id), alert_tickets=tuple(sorted(alert.tickets)),
                                attempt=alert.retries + 2)
        envelope = derived(command, cause=alert.cause, rule=f"alert/{alert.alert_id}/retry/{len(commands)}/{symbol}",
                           occurred_at=now)
        hexid = envelope.event_id.hex[:16]
        tickets.update({t: replace(tickets[t], status=ORDERED, command=hexid, at=now, retry_at=None) for t in listed})
        commands.append(hexid)
        outputs.append(envelope)
    alert = replace(alert, tickets=tickets, commands=tuple(commands), retry_at=None,
                    retries=alert.retries + (1 if refused else 0))
    return alert, outputs


def _publish(alert: AlertProgress, status: str, at: datetime) -> tuple[AlertProgress, Envelope[Any]]:
    alert = replace(alert, status=status, revision=alert.revision + 1)
    closed = {t: s for t, s in alert.tickets.items() if s.status == CLOSED}
    pnl = sum(s.pnl_gbp or 0.0 for s in closed.values())
    d = alert.details
    level = d.get("daily_loss_percent") if alert.reason is CloseReason.DAILY_LOSS_GUARD else d.get("drawdown_percent")
    payload = GuardAlertRaised(
        user_id=alert.cause.account_id, alert_type=ALERT_OF_REASON[alert.reason],
        action_taken=_ACTION.get(status, ActionTaken.WARNING_SENT), status=status,
        message=_message(alert, status, closed, pnl)[:2000], drawdown_percent=level, equity_gbp=d.get("equity_gbp"),
        threshold_percent=d.get("threshold_percent"), positions_closed_count=len(closed),
        total_loss_gbp=round(max(0.0, -pnl), 4), symbol=alert.symbol,
        executed_at=max((s.at for s in closed.values() if s.at), default=None) if status == "executed" else None,
        details={"tickets": {str(t): _ticket_detail(s) for t, s in sorted(alert.tickets.items())},
                 "realised_pnl_gbp": round(pnl, 4), "retries": alert.retries, "commands": list(alert.commands),
                 "retry_at": alert.retry_at.isoformat() if alert.retry_at else None, "rule": alert.rule},
        alert_id=uuid.UUID(alert.alert_id), revision=alert.revision)
    return alert, derived(payload, cause=alert.cause, rule=f"alert/{alert.alert_id}/{alert.revision}", occurred_at=at)


def _ticket_detail(s: TicketState) -> dict[str, Any]:
    return {"symbol": s.symbol, "status": s.status, "command": s.command, "pnl_gbp": s.pnl_gbp,
            "at": s.at.isoformat() if s.at else None, "why": s.why}


def _message(alert: AlertProgress, status: str, closed: dict[int, TicketState], pnl: float) -> str:
    by = alert.reason.value.replace("_", " ")
    remaining = sorted(t for t, s in alert.tickets.items() if s.status not in FINAL)
    others = {t: s for t, s in alert.tickets.items() if s.status == SUPERSEDED}
    also = "; already closed: " + ", ".join(f"{t} by {s.why}" for t, s in sorted(others.items())) if others else ""
    if status == "ordered":
        return f"{len(alert.tickets)} position(s) ordered closed by the {by}"
    if status == "executed":
        return f"{len(closed)} position(s) closed by the {by}, realised P&L {pnl:+.2f} GBP{also}"
    if status == "superseded":
        return f"nothing left for the {by} to close{also}"
    why = "; ".join(sorted({f"{t}: {alert.tickets[t].why}" for t in remaining}))
    if status == "waiting":
        return f"market closed: {len(remaining)} position(s) close at its next open ({why})"
    if status == "escalated":
        return f"liquidation failed: {len(remaining)} position(s) still open ({why}); retrying until flat"
    if status == "stopped":
        return (f"retries stopped by {alert.details.get('stopped_by')} ({alert.details.get('stopped_because')}): "
                f"{len(remaining)} position(s) left open" + (f" ({why})" if remaining else ""))
    return f"could not close {len(remaining)} position(s) ({why}); retrying"


def _forget_finished(state: AlertsState, at: datetime) -> AlertsState:
    """Alerts that ended more than ``KEEP_FINISHED`` ago: kept no longer, so state stays bounded."""
    horizon = at - KEEP_FINISHED
    if not any(a.done_at is not None and a.done_at < horizon for a in state.alerts.values()):
        return state
    return replace(state, alerts={k: a for k, a in state.alerts.items() if a.done_at is None or a.done_at >= horizon})


def _with(state: AlertsState, alert: AlertProgress) -> AlertsState:
    return replace(state, alerts={**state.alerts, alert.alert_id: alert})
