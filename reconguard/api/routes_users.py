"""Per-user reads (status, logs, snapshots, alerts) and the admin's manual sync."""

from __future__ import annotations

import logging
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import AwareDatetime

from infra.metrics import api_sync_requests_total
from infra.tables import DrawdownAlert, PositionSnapshot, ReconciliationLog, User
from reconguard.api import queries
from reconguard.api.auth import Admin, CurrentCaller, ReadableUser, UserIdPath
from reconguard.api.deps import App, Session
from reconguard.api.models import (
    CallerPublic,
    DrawdownAlertPublic,
    PagePublic,
    PositionSnapshotPublic,
    ReconciliationLogPublic,
    ReconciliationStatusPublic,
    SyncRequestedPublic,
    UserPublic,
)
from reconguard.api.pagination import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Cursor,
    CursorError,
    OutOfRange,
    decode_cursor,
    in_range,
    next_cursor,
)
from schemas import observed, utcnow
from schemas.commands import SyncAccount
from schemas.decisions import AlertType, DivergenceReason, ReconciliationStatus
from schemas.topics import RECONCILIATION, SYNC_COMMANDS

PublicT = TypeVar("PublicT", ReconciliationLogPublic, PositionSnapshotPublic, DrawdownAlertPublic)

log = logging.getLogger(__name__)
router = APIRouter(tags=["accounts"])

ReconciliationEvent = StrEnum(
    "ReconciliationEvent", {p.event_type: p.event_type for p in RECONCILIATION.payloads}
)
_UNAUTHORISED = {401: {"description": "No, unknown or revoked token"}}
_FORBIDDEN = {403: {"description": "Not your account (or not an admin)"}}
_NOT_FOUND = {404: {"description": "No such user (admins only; others get 403)"}}
_BAD_INPUT = {400: {"description": "A filter or cursor that cannot be used"}}
_READ = _UNAUTHORISED | _FORBIDDEN | _NOT_FOUND | _BAD_INPUT

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"Rows per page (at most {MAX_LIMIT})")]
CursorText = Annotated[str | None, Query(max_length=200, description="next_cursor of the previous page")]
Since = Annotated[AwareDatetime | None, Query(description="Rows created at or after (RFC 3339, with offset)")]
Until = Annotated[AwareDatetime | None, Query(description="Rows created before (RFC 3339, with offset)")]
SymbolFilter = Annotated[str | None, Query(max_length=29, pattern=r"^[A-Za-z0-9._#\-]+$")]
AlertStatus = Annotated[
    str | None, Query(max_length=32, pattern=r"^[a-z_]+$", description="open, executed, failed")
]


def _bad_request(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_400_BAD_REQUEST, detail=detail)


def _utc(value: datetime | None, name: str) -> datetime | None:
    try:
        return None if value is None else in_range(value)
    except OutOfRange as error:
        raise _bad_request(f"{name} {error}") from None


def time_range(since: Since = None, until: Until = None) -> queries.TimeRange:
    window = queries.TimeRange(since=_utc(since, "since"), until=_utc(until, "until"))
    if window.since is not None and window.until is not None and window.since >= window.until:
        raise _bad_request("since must be earlier than until")
    return window


def page_cursor(cursor: CursorText = None) -> Cursor | None:
    try:
        return None if cursor is None else decode_cursor(cursor)
    except CursorError as error:
        raise _bad_request(str(error)) from None


Window = Annotated[queries.TimeRange, Depends(time_range)]
PageCursor = Annotated[Cursor | None, Depends(page_cursor)]


def user_public(user: User) -> UserPublic:
    return UserPublic(
        id=user.id,
        display_name=user.display_name,
        role=user.role,
        mt5_login=user.mt5_login,
        mt5_server=user.mt5_server,
        account_currency=user.account_currency,
        telegram_linked=user.telegram_chat_id is not None,
        warning_drawdown_percent=user.warning_drawdown_percent,
        critical_drawdown_percent=user.critical_drawdown_percent,
        daily_loss_limit_percent=user.daily_loss_limit_percent,
    )


@router.get("/me", response_model=CallerPublic, responses=_UNAUTHORISED)
async def me(caller: CurrentCaller) -> CallerPublic:
    """Who this token belongs to."""
    return CallerPublic(user_id=caller.user_id, role=caller.role)


@router.get("/users", response_model=list[UserPublic], responses=_UNAUTHORISED | _FORBIDDEN)
async def users(_: Admin, session: Session, limit: Limit = MAX_LIMIT) -> list[UserPublic]:
    """Every user (admins only)."""
    return [user_public(u) for u in await queries.list_users(session, limit=limit)]


@router.get("/users/{user_id}", response_model=UserPublic, responses=_READ)
async def user(user: ReadableUser) -> UserPublic:
    """The account's owner, MT5 login and guard levels."""
    return user_public(user)


@router.get("/users/{user_id}/status", response_model=ReconciliationStatusPublic, responses=_READ)
async def reconciliation_status(
    user: ReadableUser,
    session: Session,
    limit: Limit = 200,
) -> ReconciliationStatusPublic:
    """The latest outcome per position, how many positions are diverged now, and the latest snapshot."""
    positions = await queries.latest_outcomes(session, user_id=user.id, limit=limit)
    snapshot = await queries.latest_snapshot(session, user_id=user.id)
    return ReconciliationStatusPublic(
        user_id=user.id,
        as_of=utcnow(),
        open_divergences=await queries.open_divergence_count(session, user_id=user.id),
        positions=[ReconciliationLogPublic.model_validate(p) for p in positions],
        latest_snapshot=None if snapshot is None else PositionSnapshotPublic.model_validate(snapshot),
    )


@router.get("/users/{user_id}/logs", response_model=PagePublic[ReconciliationLogPublic], responses=_READ)
async def reconciliation_logs(
    user: ReadableUser,
    session: Session,
    window: Window,
    cursor: PageCursor,
    limit: Limit = DEFAULT_LIMIT,
    symbol: SymbolFilter = None,
    reason: DivergenceReason | None = None,
    status_: Annotated[ReconciliationStatus | None, Query(alias="status")] = None,
    event_type: ReconciliationEvent | None = None,
) -> PagePublic[ReconciliationLogPublic]:
    """reconciliation_logs rows, newest first, filtered by time, symbol, divergence reason, status, type."""
    rows = await queries.page(
        session, ReconciliationLog, user_id=user.id, window=window, cursor=cursor, limit=limit, symbol=symbol,
        divergence_reason=reason, status=status_, event_type=event_type)
    return _page_of(ReconciliationLogPublic, rows, limit=limit)


@router.get("/users/{user_id}/snapshots", response_model=PagePublic[PositionSnapshotPublic], responses=_READ)
async def position_snapshots(
    user: ReadableUser,
    session: Session,
    window: Window,
    cursor: PageCursor,
    limit: Limit = DEFAULT_LIMIT,
) -> PagePublic[PositionSnapshotPublic]:
    """position_snapshots rows (equity, drawdown, exposure), newest first."""
    rows = await queries.page(session, PositionSnapshot, user_id=user.id, window=window, cursor=cursor,
                              limit=limit)
    return _page_of(PositionSnapshotPublic, rows, limit=limit)


@router.get("/users/{user_id}/alerts", response_model=PagePublic[DrawdownAlertPublic], responses=_READ)
async def drawdown_alerts(
    user: ReadableUser,
    session: Session,
    window: Window,
    cursor: PageCursor,
    limit: Limit = DEFAULT_LIMIT,
    alert_type: AlertType | None = None,
    status_: Annotated[AlertStatus, Query(alias="status")] = None,
) -> PagePublic[DrawdownAlertPublic]:
    """drawdown_alerts rows (guard warnings and triggers), newest first."""
    rows = await queries.page(
        session, DrawdownAlert, user_id=user.id, window=window, cursor=cursor, limit=limit,
        alert_type=alert_type, status=status_)
    return _page_of(DrawdownAlertPublic, rows, limit=limit)


def _page_of(model: type[PublicT], rows: list[Any], *, limit: int) -> PagePublic[PublicT]:
    items = [model.model_validate(r) for r in rows]
    return PagePublic[model](items=items, next_cursor=next_cursor(rows, limit=limit))


@router.post(
    "/users/{user_id}/sync",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=SyncRequestedPublic,
    responses=_UNAUTHORISED
    | _FORBIDDEN
    | _NOT_FOUND
    | {
        429: {
            "description": "Synced less than 10 s ago; see Retry-After",
            "headers": {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}},
        },
        503: {"description": "The broker did not take the command"},
    },
)
async def request_sync(user_id: UserIdPath, caller: Admin, session: Session, app: App) -> SyncRequestedPublic:
    """Ask the poller to read this account now (admins only; one per account per 10 s)."""
    if await queries.get_user(session, user_id=user_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no user {user_id!r}")
    wait = app.sync_limiter.acquire(user_id)
    if wait:
        api_sync_requests_total.labels(outcome="rate_limited").inc()
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            headers={"Retry-After": str(wait)},
            detail=f"this account was synced less than {app.settings.api.sync_interval_seconds:g} s "
            f"ago; retry in {wait} s",
        )
    command = observed(
        SyncAccount(user_id=user_id, requested_by=caller.user_id), account_id=user_id, occurred_at=utcnow()
    )
    try:
        await app.broker.publish(SYNC_COMMANDS, command)
    except Exception as error:  # noqa: BLE001 - any broker failure is the same answer to the caller
        app.sync_limiter.release(user_id)
        api_sync_requests_total.labels(outcome="failed").inc()
        log.warning("sync command for %s not published: %s", user_id, type(error).__name__)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, detail="the broker did not take the command; retry"
        ) from None
    api_sync_requests_total.labels(outcome="accepted").inc()
    log.info("sync of %s requested by %s (command %s)", user_id, caller.user_id, command.event_id)
    return SyncRequestedPublic(command_id=command.event_id, user_id=user_id, requested_at=command.occurred_at)
