"""The one entry point: `reconguard COMMAND`. Run everything, one service, replay, tail a topic."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from infra.settings import Settings
from reconguard.console import console
from reconguard.runner import ServiceSpec, embedded_or_given, install_stop_signals, prepare, run_services
from reconguard.startup import connected, loaded_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode="markdown",
                  help="reconguard: reconcile MT5 accounts against the platform and guard them.")

SERVICES = {
    "projector": ServiceSpec("projector", "projections.projector:serve"),
    "worker": ServiceSpec("worker", "streams.worker:serve"),  # Faust owns its loop: a child process
    "poller": ServiceSpec("poller", "producers.poller.service:serve"),
    "executor": ServiceSpec("executor", "producers.executor.service:serve"),
    "api": ServiceSpec("api", "reconguard.api.app:serve"),
    "telegram": ServiceSpec("telegram", "reconguard.telegram.service:serve"),
}
#: `reconguard run`: the demo platform runs the simulated terminals, the poller and the executor
#: in one process, because they must share the in-memory simulator.
EMBEDDED_RUN = [SERVICES["projector"], SERVICES["worker"], ServiceSpec("demo", "producers.demo.service:serve"),
                SERVICES["api"], SERVICES["telegram"]]


async def _serve(settings: Settings, specs: list[ServiceSpec], *, live_view: bool | None = None) -> None:
    """``live_view``: None for a single service; False or True for `run` (with or without the view)."""
    stop = asyncio.Event()
    install_stop_signals(stop)
    await prepare(settings)
    if live_view is not None:
        await _announce(settings)
        specs = [*specs, ServiceSpec("run-token", "reconguard.runtoken:hold")]
    if live_view:
        specs = [*specs, ServiceSpec("view", "reconguard.liveview:show")]
    await run_services(settings, specs, stop=stop)


async def _announce(settings: Settings) -> None:
    """Print where the API and dashboard are, with a fresh admin token for this run."""
    from reconguard import runtoken

    issued = await runtoken.issue(settings)  # lives as long as the run: see the run-token service
    base = f"http://{settings.http_host}:{settings.http_port}"
    console.print(f"API {base}  (OpenAPI {base}/docs, metrics {base}/metrics, health {base}/health)")
    console.print(f"dashboard {base}/dashboard#token={issued.token}")
    console.print(f"admin token for this run (revoked when it stops): {issued.token}")


@app.command()
def run(
    view: Annotated[bool, typer.Option(help="Show the live terminal view (default: when on a terminal).")] = True,
) -> None:
    """Run the whole pipeline; embedded broker and Postgres unless KAFKA_BOOTSTRAP_SERVERS/DATABASE_URL are set.

    Serves the API, /health, /openapi.json, /metrics and /dashboard on http://127.0.0.1:8000 and shows
    a live view of accounts, equity, drawdown, divergences and alerts.
    Example: `reconguard run` (Ctrl-C stops everything, servers included).
    """
    settings = loaded_settings()
    _share_metrics_between_processes(settings)
    with embedded_or_given(settings) as resolved:
        _redact_database_password(resolved)
        console.print(f"broker {resolved.kafka_bootstrap_servers}, database ready; Ctrl-C stops everything")
        asyncio.run(_serve(resolved, EMBEDDED_RUN, live_view=view and console.is_terminal))
    console.print("stopped")


def _redact_database_password(settings: Settings) -> None:
    from infra.logredact import add_database_url

    add_database_url(settings.database_url)  # the embedded database's generated password, if any


def _share_metrics_between_processes(settings: Settings) -> None:
    """/metrics of `run` must show the Faust worker's metrics too: it is a child process."""
    import os
    import shutil
    import sys

    assert "prometheus_client" not in sys.modules, "set the multiprocess directory before any metric exists"
    directory = (settings.data_dir / "metrics").resolve()
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


def _one_service(name: str) -> None:
    settings = connected(loaded_settings())
    asyncio.run(_serve(settings, [SERVICES[name]]))


@app.command()
def projector() -> None:
    """Materialise reconciliation_logs, position_snapshots and drawdown_alerts from the topics.

    Example: `DATABASE_URL=postgresql://… KAFKA_BOOTSTRAP_SERVERS=host:9092 reconguard projector`
    """
    _one_service("projector")


@app.command()
def poller() -> None:
    """Poll the MT5 terminals of every account in `users` and publish what they hold, every second.

    Terminals are reached through RECONGUARD_MT5_GATEWAY (mt5linux or native).
    Example: `RECONGUARD_MT5_ENDPOINTS="51000101=10.0.0.5:18812" reconguard poller`
    """
    _one_service("poller")


@app.command()
def executor() -> None:
    """Execute close commands on the terminals: once per command id, by ticket, with bounded retries.

    Example: `RECONGUARD_MT5_ENDPOINTS="51000101=10.0.0.5:18812" reconguard executor`
    """
    _one_service("executor")


@app.command()
def worker() -> None:
    """Run the Faust worker: reconciliation, drawdown guard and market guard.

    Scale out by starting more workers; partitions (accounts) are shared between them.
    Example: `KAFKA_BOOTSTRAP_SERVERS=kafka:9092 DATABASE_URL=postgresql://… reconguard worker`
    """
    from streams.worker import run_worker

    settings = connected(loaded_settings())
    asyncio.run(prepare(settings))
    run_worker(settings)


@app.command()
def api() -> None:
    """Serve the REST API, /health, /openapi.json, /metrics and /dashboard.

    Example: `RECONGUARD_HTTP_HOST=0.0.0.0 reconguard api`
    """
    _one_service("api")


@app.command()
def telegram() -> None:
    """Send every alert and auto-close result to its owner's Telegram chat; answer /status.

    Example: `TELEGRAM_BOT_TOKEN=123:abc reconguard telegram`
    """
    _one_service("telegram")


@app.command("publish-trade")
def publish_trade(
    source: Annotated[typer.FileText, typer.Argument(help="JSON of one TradeApproved payload ('-' for stdin).")],
) -> None:
    """Publish an approved trade (the platform's expectation) onto the expected-trades topic.

    Example: `echo '{"signal_id": "s1", "approval_id": "a1", "user_id": "u-alice", "symbol": "EURUSD",
    "direction": "buy", "volume": 0.1, "entry_price": 1.0841}' | reconguard publish-trade -`
    """
    from producers.platform import UnknownReference, check_references, expectation_from_json, publish_expected_trade

    settings = connected(loaded_settings())
    try:
        trade = expectation_from_json(source.read())
    except ValueError as error:
        console.print(f"[red]not a valid approved trade: {error}[/red]", highlight=False)
        raise typer.Exit(2) from None
    try:
        asyncio.run(check_references(settings, trade))
    except UnknownReference as error:
        console.print(f"[red]refused: {error}[/red]", highlight=False)
        raise typer.Exit(2) from None
    envelope = asyncio.run(publish_expected_trade(settings, trade))
    console.print(f"published {envelope.event_type} {envelope.event_id}")


@app.command()
def migrate() -> None:
    """Bring the database schema to the latest revision (alembic upgrade head).

    Example: `DATABASE_URL=postgresql://user:pass@db:5432/reconguard reconguard migrate`
    """
    from infra.db import migrate as upgrade

    settings = connected(loaded_settings())
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
    from projections.replay import ReplayError, prepare_target, table_checksums
    from projections.replay import replay as run_replay

    settings = connected(loaded_settings())
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
                      f"{result.dead_lettered} unusable (logged; replay writes no dead letters)")
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

    settings = connected(loaded_settings())
    try:
        asyncio.run(follow(settings, topic, from_beginning=from_beginning, raw=raw, console=Console()))
    except KeyError as error:
        console.print(f"[red]{error.args[0]}[/red]")
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        pass


def _add_groups() -> None:
    from reconguard import users_cli

    app.add_typer(users_cli.app, name="users")


_add_groups()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
