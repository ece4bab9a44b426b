"""`reconguard verify` on the real broker and Postgres: equal tables pass, a lost or invented row is found."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from infra.dburl import plain_url
from projections.verify import verify
from tests.integration.projections.test_projector import _publish, running_projector
from tests.support.events import add_users, mixed_events
from tests.support.waiting import eventually

USERS = ["u-vic", "u-wes"]


@pytest.fixture(scope="module")
def projected(settings):
    asyncio.run(add_users(settings.database_url, *USERS))
    events = mixed_events(USERS, 400, seed=21)

    async def project() -> None:
        await _publish(settings, events)
        async with running_projector(settings, "projector"):
            await eventually(lambda: verify(settings), until=lambda r: r.events_read == 400, timeout=90,
                             what="the live projector to cover every event")

    asyncio.run(project())
    return events


async def test_live_tables_equal_to_the_replay_verify_clean(settings, projected):
    result = await verify(settings)
    assert result.differences == 0 and result.events_read == 400
    assert sum(t.live for t in result.tables) == sum(t.replayed for t in result.tables) > 0


async def test_a_deleted_an_invented_and_a_changed_row_are_reported(settings, projected):
    connection = await asyncpg.connect(plain_url(settings.database_url))
    try:
        gone = await connection.fetchval("DELETE FROM drawdown_alerts WHERE id = (SELECT id FROM drawdown_alerts "
                                         "ORDER BY id LIMIT 1) RETURNING id::text")
        invented = await connection.fetchval(
            "INSERT INTO reconciliation_logs SELECT gen_random_uuid(), "
            + ", ".join(f"t.{c}" for c in await _columns(connection, "reconciliation_logs") if c != "id")
            + " FROM reconciliation_logs t LIMIT 1 RETURNING id::text")
        tampered = await connection.fetchval("UPDATE position_snapshots SET sync_error = 'tampered' WHERE id = "
                                             "(SELECT id FROM position_snapshots ORDER BY id LIMIT 1) "
                                             "RETURNING id::text")
        result = await verify(settings)
    finally:
        await connection.close()
    by_table = {t.table: t for t in result.tables}
    assert by_table["drawdown_alerts"].lost == [gone]
    assert by_table["reconciliation_logs"].extra == [invented]
    assert by_table["position_snapshots"].changed == [tampered]
    assert result.changed_columns["position_snapshots"]["sync_error"][0] == "tampered"
    assert result.differences == 3


async def _columns(connection: asyncpg.Connection, table: str) -> list[str]:
    rows = await connection.fetch("SELECT column_name FROM information_schema.columns WHERE table_schema = "
                                  "'public' AND table_name = $1 ORDER BY ordinal_position", table)
    return [r[0] for r in rows]
