"""The demo's traders: four users, each with one simulated MT5 account, a Telegram chat and guard levels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert

from infra.db import make_engine
from infra.tables import User
from producers.accounts import AccountRef
from producers.mt5.gateway import SimulatorGateway
from producers.mt5.simulator import SimulatedBroker, SimulatedTerminal

DEMO_PASSWORD = "demo"  # a simulated terminal's password: not a secret


@dataclass(frozen=True)
class DemoUser:
    user_id: str
    display_name: str
    login: int
    currency: str
    telegram_chat_id: int
    warning_percent: float
    critical_percent: float
    daily_loss_percent: float
    balance: float = 10_000.0
    leverage: int = 100


DEMO_USERS: tuple[DemoUser, ...] = (
    DemoUser("u-alice", "Alice (GBP)", 51_000_101, "GBP", 700_000_101, 5.0, 10.0, 5.0),
    DemoUser("u-bob", "Bob (USD)", 51_000_102, "USD", 700_000_102, 5.0, 10.0, 8.0),
    DemoUser("u-carol", "Carol (EUR)", 51_000_103, "EUR", 700_000_103, 4.0, 8.0, 5.0),
    DemoUser("u-dave", "Dave (GBP)", 51_000_104, "GBP", 700_000_104, 3.0, 6.0, 5.0),
)


def open_accounts(broker: SimulatedBroker, users: Sequence[DemoUser] = DEMO_USERS) -> None:
    for user in users:
        broker.add_account(user.login, DEMO_PASSWORD, currency=user.currency, balance=user.balance,
                           leverage=user.leverage, name=user.display_name)


def deposit(broker: SimulatedBroker, user_id: str, amount: float, users: Sequence[DemoUser] = DEMO_USERS) -> int:
    """Money in (or out, negative) of a demo account: a balance deal, as the broker's back office books it."""
    user = next(u for u in users if u.user_id == user_id)
    return broker.deposit(user.login, amount, "Deposit" if amount > 0 else "Withdrawal")


def attach(broker: SimulatedBroker, user: DemoUser) -> SimulatorGateway:
    """A terminal logged into the user's account (each service gets its own, as in production)."""
    gateway = SimulatorGateway(SimulatedTerminal(broker, login=user.login, password=DEMO_PASSWORD))
    if not gateway.initialize(login=user.login, password=DEMO_PASSWORD, server=broker.server):
        raise RuntimeError(f"demo terminal for {user.user_id} did not start: {gateway.last_error()}")
    return gateway


def ref(broker: SimulatedBroker, user: DemoUser) -> AccountRef:
    return AccountRef(user.user_id, user.login, broker.server, user.currency)


async def upsert_users(database_url: str, *, server: str, users: Sequence[DemoUser] = DEMO_USERS) -> None:
    """Make the demo users exist (the projections and the ledger refer to them), keeping any admin edits
    of their levels: only the account fields are overwritten on a rerun."""
    rows = [dict(id=u.user_id, display_name=u.display_name, role="trader", mt5_login=u.login,
                 mt5_server=server, account_currency=u.currency, telegram_chat_id=u.telegram_chat_id,
                 warning_drawdown_percent=u.warning_percent, critical_drawdown_percent=u.critical_percent,
                 daily_loss_limit_percent=u.daily_loss_percent) for u in users]
    statement = insert(User).values(rows)
    statement = statement.on_conflict_do_update(index_elements=[User.id], set_=dict(
        mt5_login=statement.excluded.mt5_login, mt5_server=statement.excluded.mt5_server,
        account_currency=statement.excluded.account_currency, updated_at=func.now()))
    engine = make_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(statement)
    finally:
        await engine.dispose()
