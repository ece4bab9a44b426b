"""Operations: /health, /metrics, the dashboard page and the data it draws."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from importlib import resources as package_files
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status
from fastapi.responses import HTMLResponse
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from infra.metrics import exposition
from infra.service import SUPERVISION
from infra.tables import DrawdownAlert, User
from reconguard.api import queries
from reconguard.api.auth import CurrentCaller, MetricsScraper
from reconguard.api.deps import App, Session
from reconguard.api.models import (
    AccountOverviewPublic,
    CheckPublic,
    DrawdownAlertPublic,
    HealthPublic,
    OverviewPublic,
    PositionSnapshotPublic,
    ReconciliationLogPublic,
    SeriesPointPublic,
)
from schemas import utcnow

router = APIRouter(tags=["operations"])

#: The dashboard's files: a fixed map, so no request can name another file.
_DASHBOARD_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
_DASHBOARD_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_RECENT = 8


async def _timed(check: Callable[[], Awaitable[object]], *, timeout: float) -> CheckPublic:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(check(), timeout)
    except Exception as error:  # noqa: BLE001 - the kind of failure is the answer; details may hold secrets
        return CheckPublic(ok=False, latency_ms=_ms_since(started), error=type(error).__name__)
    return CheckPublic(ok=True, latency_ms=_ms_since(started))


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


@router.get("/health", response_model=HealthPublic, responses={503: {"model": HealthPublic}})
async def health(app: App, response: Response) -> HealthPublic:
    """Asks the broker for metadata and the database for SELECT 1; 503 if either fails."""

    async def database() -> None:
        async with app.sessions() as session:
            await session.execute(text("SELECT 1"))

    timeout = app.settings.api.health_timeout_seconds
    broker, db = await asyncio.gather(
        _timed(app.broker.check, timeout=timeout), _timed(database, timeout=timeout)
    )
    healthy = broker.ok and db.ok and not SUPERVISION.degraded()  # a crash loop degrades health too
    if not healthy:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return HealthPublic(status="ok" if healthy else "degraded", checks={"broker": broker, "database": db},
                        services=SUPERVISION.public())


@router.get("/health/live")
async def live() -> dict[str, str]:
    """Liveness: this process answers (for an orchestrator's liveness probe; /health is readiness)."""
    return {"status": "alive"}


@router.get("/metrics", response_class=Response, dependencies=[MetricsScraper], responses={
    200: {"content": {"text/plain": {}}}, 401: {"description": "No or a bad token"},
    403: {"description": "A trader's token"}})
async def metrics(app: App) -> Response:
    """Prometheus text format: every metric of this process (all services under `reconguard run`).

    Send the metrics token (RECONGUARD_API_METRICS_TOKEN) or an admin's token as a bearer token.
    Per-account series appear only when RECONGUARD_API_METRICS_PER_ACCOUNT is on."""
    body, content_type = exposition(per_account=app.settings.api.metrics_per_account)
    return Response(body, media_type=content_type)


@router.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
async def dashboard(app: App) -> HTMLResponse:
    page = _dashboard_file("index.html").replace(
        "{{refresh_seconds}}", str(app.settings.api.dashboard_refresh_seconds)
    )
    return HTMLResponse(
        page, headers={"Content-Security-Policy": _DASHBOARD_POLICY, "Cache-Control": "no-store"}
    )


@router.get("/dashboard/{name}", include_in_schema=False)
async def dashboard_asset(name: str) -> Response:
    media_type = _DASHBOARD_FILES.get(name)
    if media_type is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such file")
    return Response(_dashboard_file(name), media_type=media_type, headers={"Cache-Control": "no-cache"})


def _dashboard_file(name: str) -> str:
    return package_files.files("reconguard.dashboard").joinpath(name).read_text(encoding="utf-8")


@router.get("/overview", response_model=OverviewPublic, responses={401: {"description": "No or a bad token"}})
async def overview(
    caller: CurrentCaller,
    session: Session,
    app: App,
    limit: Annotated[int, Query(ge=1, le=200, description="Most accounts")] = 50,
) -> OverviewPublic:
    """What the dashboard draws: per account the caller may read, its equity/drawdown series, open
    divergences, recent alerts and recent closes."""
    if caller.is_admin:
        # Admins are shown the accounts; an admin without an MT5 account has nothing to draw.
        users = [u for u in await queries.list_users(session, limit=limit) if u.role != "admin" or u.mt5_login]
    else:
        users = [u for u in [await queries.get_user(session, user_id=caller.user_id)] if u is not None]
    points = app.settings.api.dashboard_points
    accounts = [await _account(session, user=u, points=points) for u in users]
    return OverviewPublic(
        generated_at=utcnow(),
        refresh_seconds=app.settings.api.dashboard_refresh_seconds,
        accounts=accounts,
    )


async def _account(session: AsyncSession, *, user: User, points: int) -> AccountOverviewPublic:
    rows = await queries.series(session, user_id=user.id, points=points)
    divergences = await queries.latest_outcomes(session, user_id=user.id, limit=50, only_divergences=True)
    alerts = await queries.page(session, DrawdownAlert, user_id=user.id, limit=_RECENT)
    closes = await queries.recent_closes(session, user_id=user.id, limit=_RECENT)
    return AccountOverviewPublic(
        user_id=user.id,
        display_name=user.display_name,
        warning_drawdown_percent=user.warning_drawdown_percent,
        critical_drawdown_percent=user.critical_drawdown_percent,
        latest=PositionSnapshotPublic.model_validate(rows[-1]) if rows else None,
        series=[
            SeriesPointPublic(t=r.created_at, equity_gbp=r.equity_gbp, drawdown_percent=r.drawdown_percent)
            for r in rows
        ],
        open_divergences=[ReconciliationLogPublic.model_validate(d) for d in divergences],
        recent_alerts=[DrawdownAlertPublic.model_validate(a) for a in alerts],
        recent_closes=[ReconciliationLogPublic.model_validate(c) for c in closes],
    )
