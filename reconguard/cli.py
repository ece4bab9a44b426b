"""The one entry point: `reconguard COMMAND`. Run everything, one service, replay, tail a topic."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from reconguard.runner import (
    EndpointsUnknown,
    ServiceSpec,
    embedded_or_given,
    install_stop_signals,
    prepare,
    resolve_endpoints,
    run_services,
)
from reconguard.settings import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode="markdown",
                  help="reconguard: reconcile MT5 accounts against the platform and guard them.")
console = Console(stderr=True)

SERVICES = {
    "projector": ServiceSpec("projector", "projections.projector:serve"),
}


def _settings() -> Settings:
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(name)s: %(message)s",
                        handlers=[RichHandler(console=console, show_path=False)])
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    return settings


def _connected(settings: Settings) -> Settings:
    try:
        return resolve_endpoints(settings)
    except EndpointsUnknown as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None


async def _serve(settings: Settings, specs: list[ServiceSpec]) -> None:
    stop = asyncio.Event()
    install_stop_signals(stop)
    await prepare(settings)
    await run_services(settings, specs, stop=stop)


@app.command()
def run() -> None:
    """Run the whole pipeline; embedded broker and Postgres unless KAFKA_BOOTSTRAP_SERVERS/DATABASE_URL are set.

    Example: `reconguard run` (Ctrl-C stops everything, servers included).
    """
    settings = _settings()
    with embedded_or_given(settings) as resolved:
        console.print(f"broker {resolved.kafka_bootstrap_servers}, database ready; Ctrl-C stops everything")
        asyncio.run(_serve(resolved, list(SERVICES.values())))
    console.print("stopped")


@app.command()
def projector() -> None:
    """Materialise reconciliation_logs, position_snapshots and drawdown_alerts from the topics.

    Example: `DATABASE_URL=postgresql://… KAFKA_BOOTSTRAP_SERVERS=host:9092 reconguard projector`
    """
    settings = _connected(_settings())
    asyncio.run(_serve(settings, [SERVICES["projector"]]))


@app.command()
def migrate() -> None:
    """Bring the database schema to the latest revision (alembic upgrade head).

    Example: `DATABASE_URL=postgresql://user:pass@db:5432/reconguard reconguard migrate`
    """
    from reconguard.db import migrate as upgrade

    settings = _connected(_settings())
    assert settings.database_url
    upgrade(settings.database_url)
    console.print("schema at head")


@app.command()
def docs() -> None:
    """Regenerate the generated documentation: JSON Schemas of every topic and the configuration reference.

    Example: `reconguard docs && git diff docs/`
    """
    from reconguard import configdoc
    from schemas.jsonschema import SCHEMA_DIR, write

    console.print(f"wrote {len(write())} files into {SCHEMA_DIR} and {configdoc.write()}")


@app.command()
def replay(
    database: Annotated[Optional[str], typer.Option(help="Fresh database to build (same server).")] = None,
    schema: Annotated[Optional[str], typer.Option(help="Fresh schema to build (same database).")] = None,
    since: Annotated[Optional[datetime], typer.Option(help="Only events that occurred at or after this time "
                                                           "(ISO 8601, UTC if no zone).")] = None,
    replace: Annotated[bool, typer.Option(help="Drop the target first if it exists.")] = False,
) -> None:
    """Rebuild the projections from the log into a fresh database or schema.

    Example: `reconguard replay --schema audit_2026_11 --since 2026-11-01T00:00:00Z`
    """
    from projections.replay import ReplayError, prepare_target, replay as run_replay, table_checksums

    settings = _connected(_settings())
    if since is not None and since.tzinfo is None:
        from datetime import UTC

        since = since.replace(tzinfo=UTC)

    async def go() -> None:
        assert settings.database_url
        target = await prepare_target(settings.database_url, database=database, schema=schema, replace=replace)
        columns = (TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console) as bar:
            task = bar.add_task("events", total=None)
            result = await run_replay(settings, target, since=since,
                                      progress=lambda done, total: bar.update(task, completed=done, total=total))
        console.print(f"{result.events_read} events read, {result.rows_inserted} rows written, "
                      f"{result.dead_lettered} dead-lettered")
        for table, checksum in (await table_checksums(target.database_url, schema=target.schema)).items():
            console.print(f"  {table}: md5 {checksum}")

    try:
        asyncio.run(go())
    except ReplayError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None


@app.command()
def tail(
    topic: Annotated[str, typer.Argument(help="Topic base name (e.g. alerts, close-results) or full name.")],
    from_beginning: Annotated[bool, typer.Option(help="Start at the oldest message.")] = False,
    raw: Annotated[bool, typer.Option(help="Print the JSON as received.")] = False,
) -> None:
    """Pretty-print a topic's events as they arrive (Ctrl-C to stop).

    Example: `reconguard tail alerts --from-beginning`
    """
    from reconguard.tail import follow

    settings = _connected(_settings())
    try:
        asyncio.run(follow(settings, topic, from_beginning=from_beginning, raw=raw, console=Console()))
    except KeyError as error:
        console.print(f"[red]{error.args[0]}[/red]")
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        pass


def main() -> None:
    app()


if __name__ == "__main__":
    main()
