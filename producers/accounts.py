"""Which MT5 accounts the producers serve: the users with an MT5 login, or an explicit list (demo).

An account's key on every topic is its user's id: one MT5 account per user.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import select

from infra.db import make_engine
from infra.settings import GatewaySettings
from infra.tables import User
from producers.mt5.gateway import (
    Gateway,
    GatewayUnavailable,
    Mt5LinuxGateway,
    NativeGateway,
    simulator_endpoints,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AccountRef:
    """One MT5 account as the producers address it."""

    user_id: str
    login: int
    server: str
    currency: str | None = None


def account_refs(rows: Iterable[tuple[str, int | None, str | None, str | None]]) -> list[AccountRef]:
    """Refs of the rows (id, mt5_login, mt5_server, account_currency) that name an MT5 account."""
    return [AccountRef(user_id, int(login), server, currency)
            for user_id, login, server, currency in rows if login is not None and server]


async def load_accounts(*, database_url: str) -> list[AccountRef]:
    """Every user with an MT5 login and server, in id order."""
    engine = make_engine(database_url)
    try:
        async with engine.connect() as connection:
            result = await connection.execute(
                select(User.id, User.mt5_login, User.mt5_server, User.account_currency).order_by(User.id))
            return account_refs(result.all())
    finally:
        await engine.dispose()


def connect_gateways(accounts: Iterable[AccountRef], config: GatewaySettings,
                     *, attach: bool = True, simulator_wait: float = 120.0) -> list[tuple[AccountRef, Gateway]]:
    """A started gateway per account this process can reach; the others are logged and skipped.

    ``attach=False``: no ``initialize()`` now (one round trip per terminal, which at a few hundred
    accounts delayed a restarted executor by seconds); the caller attaches each terminal on first use.
    A `reconguard simulator` that does not answer (restarting) is asked again for up to ``simulator_wait``
    seconds, with backoff, before GatewayUnavailable is raised."""
    connected: list[tuple[AccountRef, Gateway]] = []
    endpoints = config.endpoint_map()
    if config.gateway == "simulator" and not endpoints:
        endpoints = _simulator_endpoint_map(config, wait=simulator_wait)
    for account in accounts:
        gateway = _gateway_for(account, config, endpoints)
        if gateway is not None:
            connected.append((account, gateway))
    if not attach:
        return connected
    # Each initialize() is a connect and a round trip or more: thousands of terminals one after the
    # other took longer than a minute, so they are started a few dozen at a time.
    with ThreadPoolExecutor(max(1, min(STARTING_AT_ONCE, len(connected))), "mt5-initialize") as pool:
        for (account, gateway), attached in zip(connected, pool.map(_initialize, connected), strict=True):
            if not attached:
                log.warning("terminal of %s did not initialize: %s (its polls will report it)", account.user_id,
                            gateway.last_error())
    return connected


#: Terminals started at once by connect_gateways.
STARTING_AT_ONCE = 32


def _initialize(pair: tuple[AccountRef, Gateway]) -> bool:
    return pair[1].initialize()


def _simulator_endpoint_map(config: GatewaySettings, *, wait: float) -> dict[int, tuple[str, int]]:
    deadline, delay = time.monotonic() + wait, 0.5
    while True:
        try:
            return config.model_copy(update={"endpoints": simulator_endpoints(config.simulator)}).endpoint_map()
        except GatewayUnavailable as error:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("%s; asking again in %.1f s", error, delay)
        time.sleep(delay)
        delay = min(5.0, delay * 2)


def _gateway_for(account: AccountRef, config: GatewaySettings, endpoints: dict[int, tuple[str, int]]
                 ) -> Gateway | None:
    try:
        if config.gateway == "native":
            if config.login != account.login:
                return None
            return NativeGateway()
        if account.login not in endpoints:
            log.warning("no mt5linux endpoint for %s (login %d): not served", account.user_id, account.login)
            return None
        host, port = endpoints[account.login]
        # A bridge that is down now (a restarting terminal or simulator) is served all the same: its
        # calls fail as IPC failures, which the poller reports and both services mend by reconnecting.
        return Mt5LinuxGateway(host, port, connect=False)
    except GatewayUnavailable as error:
        log.error("cannot reach the terminal of %s: %s", account.user_id, error)
        return None
