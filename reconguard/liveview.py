"""The live terminal view of `reconguard run`: accounts, equity, drawdown, divergences, alerts, and
the supervised services (restarts, crash loops).

It reads the projections (the same queries as the API), so what it shows is what ops see. While the
database is down it says so and keeps the last numbers; the services' health needs no database.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from decimal import Decimal

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from infra.db import make_engine, make_sessionmaker
from infra.service import SUPERVISION, ServiceStatus
from infra.settings import Settings
from infra.tables import DrawdownAlert
from reconguard.api import lock_queries, queries
from reconguard.console import console


@dataclass(frozen=True)
class AccountLine:
    user_id: str
    equity_gbp: Decimal | None
    peak_gbp: Decimal | None
    drawdown_percent: Decimal | None
    critical_percent: Decimal
    open_positions: int | None
    open_divergences: int
    sync_error: str | None
    locked: str | None = None  # the lock's kind ("drawdown", "daily_loss") while the account is locked


@dataclass(frozen=True)
class AlertLine:
    user_id: str
    created_at: str
    alert_type: str
    action_taken: str
    drawdown_percent: Decimal


async def _gather(session: AsyncSession) -> tuple[list[AccountLine], list[AlertLine]]:
    accounts, alerts = [], []
    for user in await queries.list_users(session, limit=50):
        if user.mt5_login is None:
            continue
        snap = await queries.latest_snapshot(session, user_id=user.id)
        accounts.append(AccountLine(
            user.id, snap.equity_gbp if snap else None, snap.peak_equity_gbp if snap else None,
            snap.drawdown_percent if snap else None, user.critical_drawdown_percent,
            snap.open_positions_count if snap else None,
            await queries.open_divergence_count(session, user_id=user.id), snap.sync_error if snap else None,
            await _lock_kind(session, user.id)))
        for alert in await queries.page(session, DrawdownAlert, user_id=user.id, limit=3):
            alerts.append(AlertLine(user.id, alert.created_at.strftime("%H:%M:%S"), alert.alert_type,
                                    alert.action_taken, alert.drawdown_percent))
    alerts.sort(key=lambda a: a.created_at, reverse=True)
    return accounts, alerts[:8]


async def _lock_kind(session: AsyncSession, user_id: str) -> str | None:
    lock = await lock_queries.current_lock(session, user_id=user_id)
    return None if lock is None else lock.kind


def _money(value: Decimal | None) -> str:
    return "—" if value is None else f"£{value:,.2f}"


def render(accounts: list[AccountLine], alerts: list[AlertLine], services: list[ServiceStatus] | None = None,
           database_error: str | None = None) -> Group:
    title = "reconguard — accounts" + (f" [red](database unavailable: {database_error}; last known)[/red]"
                                       if database_error else "")
    table = Table("account", "equity", "peak", "drawdown", "critical at", "positions", "divergences", "sync",
                  "trading", title=title, expand=True)
    for a in accounts:
        near = a.drawdown_percent is not None and a.drawdown_percent >= a.critical_percent * Decimal("0.8")
        drawdown = "—" if a.drawdown_percent is None else f"{a.drawdown_percent:.2f}%"
        table.add_row(a.user_id, _money(a.equity_gbp), _money(a.peak_gbp),
                      f"[red]{drawdown}[/red]" if near else drawdown, f"{a.critical_percent:.1f}%",
                      "—" if a.open_positions is None else str(a.open_positions),
                      f"[yellow]{a.open_divergences}[/yellow]" if a.open_divergences else "0",
                      f"[red]{a.sync_error[:30]}[/red]" if a.sync_error else "ok",
                      f"[bold red]LOCKED ({a.locked})[/bold red]" if a.locked else "open")
    recent = Table("time", "account", "alert", "action", "drawdown", title="latest alerts", expand=True)
    for alert in alerts:
        recent.add_row(alert.created_at, alert.user_id, alert.alert_type, alert.action_taken,
                       f"{alert.drawdown_percent:.2f}%")
    return Group(table, recent, *([_services(services)] if services else []))


def _services(services: list[ServiceStatus]) -> Table:
    """One line per supervised service: its state and restarts (a crash loop in red)."""
    table = Table("service", "state", "restarts", "last error", title="services", expand=True)
    for s in services:
        state = f"[red]{s.state}, crash loop[/red]" if s.crash_loop else \
            (s.state if s.state == "running" else f"[yellow]{s.state}[/yellow]")
        table.add_row(s.name, state, f"[yellow]{s.restarts}[/yellow]" if s.restarts else "0",
                      (s.last_error or "")[:80] if s.restarts else "")
    return table


async def show(settings: Settings, *, stop: asyncio.Event, console: Console = console) -> None:
    """Refresh the view every second until ``stop``; a service like the others."""
    assert settings.database_url
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    try:
        with Live(render([], []), console=console, refresh_per_second=2, transient=False) as live:
            shown: tuple[list[AccountLine], list[AlertLine]] = ([], [])
            while not stop.is_set():
                error = None
                try:
                    async with sessions() as session:
                        shown = await asyncio.wait_for(_gather(session), 5)
                except Exception as failure:  # noqa: BLE001 - the database is down: say so, keep the last numbers
                    error = type(failure).__name__
                live.update(render(*shown, list(SUPERVISION.services.values()), error))
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
    finally:
        await engine.dispose()
