"""User administration: add (and re-run), roles, Telegram links, tokens shown once and stored hashed."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from infra.db import make_engine, make_sessionmaker
from infra.tables import ApiToken, User
from reconguard.users import (
    UserError,
    add_user,
    hash_token,
    issue_token,
    link_telegram,
    list_tokens,
    list_users,
    revoke_token,
    set_role,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def sessions(database_url):
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    await engine.dispose()


async def test_adding_again_updates_only_what_is_given(sessions):
    await add_user(
        sessions=sessions,
        user_id="u-carol",
        role="admin",
        display_name="Carol",
        mt5_login=5001,
        mt5_server="Demo",
    )
    await add_user(sessions=sessions, user_id="u-carol", telegram_chat_id=42)
    carol = next(u for u in await list_users(sessions=sessions) if u.id == "u-carol")
    assert (carol.role, carol.display_name, carol.mt5_login, carol.telegram_chat_id) == (
        "admin",
        "Carol",
        5001,
        42,
    )


async def test_roles_and_links_change_and_unknown_users_are_refused(sessions):
    await add_user(sessions=sessions, user_id="u-dave")
    await set_role(sessions=sessions, user_id="u-dave", role="admin")
    await link_telegram(sessions=sessions, user_id="u-dave", chat_id=99)
    async with sessions() as session:
        dave = await session.get(User, "u-dave")
    assert (dave.role, dave.telegram_chat_id) == ("admin", 99)
    with pytest.raises(UserError, match="role must be one of"):
        await set_role(sessions=sessions, user_id="u-dave", role="root")
    with pytest.raises(UserError, match="no user"):
        await set_role(sessions=sessions, user_id="u-nobody", role="trader")
    with pytest.raises(UserError, match="no user"):
        await issue_token(sessions=sessions, user_id="u-nobody")


async def test_a_token_is_kept_only_as_its_hash(sessions):
    await add_user(sessions=sessions, user_id="u-erin")
    issued = await issue_token(sessions=sessions, user_id="u-erin", name="laptop")
    async with sessions() as session:
        stored = (await session.scalars(select(ApiToken).where(ApiToken.user_id == "u-erin"))).one()
    assert stored.token_hash == hash_token(issued.token) and issued.token not in stored.token_hash
    await revoke_token(sessions=sessions, token_id=issued.token_id)
    with pytest.raises(UserError, match="no active token"):
        await revoke_token(sessions=sessions, token_id=issued.token_id)
    (listed,) = await list_tokens(sessions=sessions, user_id="u-erin")
    assert listed.revoked_at is not None and not hasattr(listed, "token_hash")
