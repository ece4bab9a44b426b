"""The FastAPI application and the `api` service that runs it under uvicorn.

Access logging is ours, not uvicorn's: uvicorn's access log prints query strings, and a query
string is where a careless client puts a token. Every response carries a request id and the
security headers (``reconguard.api.headers``); an unexpected error answers a short JSON 500 naming
that id and is logged as one line, never a traceback per request (a client must not be able to
flood the log).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import uvicorn
from fastapi import FastAPI, Request, Response, status
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from infra.db import make_engine, make_sessionmaker
from infra.metrics import api_request_duration_seconds, api_requests_total
from infra.settings import Settings
from reconguard.api.broker import BrokerLink
from reconguard.api.deps import Resources
from reconguard.api.docs import add_offline_docs
from reconguard.api.headers import secure
from reconguard.api.ratelimit import SyncLimiter
from reconguard.api.routes_ops import router as ops_router
from reconguard.api.routes_locks import router as locks_router
from reconguard.api.routes_profiles import router as profiles_router
from reconguard.api.routes_users import router as users_router

log = logging.getLogger("reconguard.api")

DESCRIPTION = """Reconciliation status, logs, snapshots and guard alerts of each MT5 account.

Send `Authorization: Bearer <token>` (issue one with `reconguard users token`). A trader reads only
their own account; an admin reads every account and may request a manual sync."""


def _endpoints(settings: Settings) -> tuple[str, str]:
    if settings.kafka_bootstrap_servers is None or settings.database_url is None:
        raise ValueError(
            "the API needs KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL "
            "(`reconguard run` fills them in for the embedded runtime)"
        )
    return settings.kafka_bootstrap_servers, settings.database_url


def create_app(settings: Settings) -> FastAPI:
    """The app; its database engine and producer open at start-up and close at shutdown."""
    bootstrap_servers, database_url = _endpoints(settings)
    api_settings = settings.api

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(database_url, pool_size=5, max_overflow=5, pool_timeout=5)
        broker = BrokerLink(
            bootstrap_servers=bootstrap_servers,
            prefix=settings.topic_prefix,
            timeout=api_settings.health_timeout_seconds * 2,
        )
        app.state.resources = Resources(
            settings=settings,
            sessions=make_sessionmaker(engine),
            broker=broker,
            sync_limiter=SyncLimiter(interval=api_settings.sync_interval_seconds),
        )
        try:
            yield
        finally:
            await broker.close()
            await engine.dispose()

    app = FastAPI(title="reconguard", version="1", description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    add_offline_docs(app)
    app.include_router(users_router)
    app.include_router(ops_router)
    app.include_router(locks_router)
    app.include_router(profiles_router)
    app.middleware("http")(_observe)
    for error in (OperationalError, PoolTimeoutError, OSError, ConnectionError):
        app.add_exception_handler(error, _unavailable)
    return app


async def _observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """Count, time and log each request by route template; the query string is never logged."""
    started = time.perf_counter()
    request_id = uuid.uuid4().hex
    try:
        response = await call_next(request)
    except Exception as error:  # noqa: BLE001 - any unexpected failure: one line, a short 500
        response = _internal_error(request, error, request_id)
    elapsed = time.perf_counter() - started
    route = getattr(request.scope.get("route"), "path", "unmatched")
    api_requests_total.labels(route=route, status=str(response.status_code)).inc()
    api_request_duration_seconds.labels(route=route).observe(elapsed)
    log.info("%s %s %d %.1fms %s", request.method, request.url.path, response.status_code, elapsed * 1000,
             request_id)
    return secure(response, path=request.url.path, request_id=request_id)


def _internal_error(request: Request, error: Exception, request_id: str) -> JSONResponse:
    """One log line (where, what kind, the request id), never the traceback nor the message, which
    may quote input or a secret; the caller gets the id to quote to an operator."""
    frame = error.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    where = f"{frame.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.tb_lineno}" if frame else "?"
    log.error("%s %s: unexpected %s at %s (request %s)", request.method, request.url.path,
              type(error).__name__, where, request_id)
    return JSONResponse({"detail": "internal error", "request_id": request_id},
                        status_code=status.HTTP_500_INTERNAL_SERVER_ERROR)


async def _unavailable(request: Request, error: Exception) -> JSONResponse:
    log.warning(
        "%s %s: backing service unavailable (%s)", request.method, request.url.path, type(error).__name__
    )
    return JSONResponse(
        {"detail": "a backing service is unavailable; retry"},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": "5"},
    )


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: stopping is the owner's job, through ``stop``."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(settings: Settings, *, stop: asyncio.Event) -> None:
    """The `api` service: serve HTTP on settings.http_host:http_port until ``stop`` is set."""
    logging.getLogger("uvicorn.access").disabled = True  # query strings may hold tokens; see _observe
    config = uvicorn.Config(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        lifespan="on",
    )
    server = _Server(config)
    serving = asyncio.create_task(server.serve())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopping.cancel()
    try:
        await serving
    except SystemExit:  # uvicorn exits this way when it cannot bind
        raise RuntimeError(f"the API could not listen on {settings.http_host}:{settings.http_port}") from None
    if not stop.is_set():
        raise RuntimeError("the API server stopped on its own")
