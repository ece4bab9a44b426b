"""The one entry point: `reconguard COMMAND`. Run everything, one service, replay, tail a topic."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from infra.settings import Settings
from reconguard.console import console
from reconguard.runner import (
    ServiceSpec,
    embedded_or_given,
    install_stop_signals,
    prepare_when_reachable,
    run_services,
)
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
    "archiver": ServiceSpec("archiver", "projections.archive:serve"),
}
#: `reconguard run`: the demo platform runs the simulated terminals, the poller and the executor
#: in one process, because they must share the in-memory simulator.
EMBEDDED_RUN = [SERVICES["projector"], SERVICES["worker"], ServiceSpec("demo", "producers.demo.service:serve"),
                SERVICES["api"], SERVICES["telegram"], SERVICES["archiver"]]
#: `reconguard run --no-demo`: every service against the real terminals (RECONGUARD_MT5_*).
PRODUCTION_RUN = [SERVICES[name] for name in
                  ("projector", "worker", "poller", "executor", "api", "telegram", "archiver")]


def demo_wanted(settings: Settings, demo: bool | None) -> bool:
    """The demo writes four demo users: by default only into the embedded database, never into a real one."""
    return settings.embedded_broker and settings.embedded_database if demo is None else demo


async def _serve(settings: Settings, specs: list[ServiceSpec], *, live_view: bool | None = None) -> None:
    """``live_view``: None for a single service; False or True for `run` (with or without the view)."""
    stop = asyncio.Event()
    install_stop_signals(stop)
    await prepare_when_reachable(settings, stop=stop)
    if stop.is_set():
        return
    if live_view is not None:
        from reconguard.runner import restore_history

        await restore_history(settings)
        await _announce(settings)
        specs = [*specs, ServiceSpec("run-token", "reconguard.runtoken:hold")]
    if live_view:
        specs = [*specs, ServiceSpec("view", "reconguard.liveview:show")]
    await run_services(settings, specs, stop=stop, supervise=live_view is not None)  # `run` supervises


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
    demo: Annotated[Optional[bool], typer.Option(
        "--demo/--no-demo", show_default=False,
        help="Run the demo platform on simulated terminals instead of the poller and executor on real ones "
             "(default: on with the embedded broker and database, off when pointed at real servers).")] = None,
) -> None:
    """Run the whole pipeline; embedded broker and Postgres unless KAFKA_BOOTSTRAP_SERVERS/DATABASE_URL are set.

    Serves the API, /health, /openapi.json, /metrics and /dashboard on http://127.0.0.1:8000 and shows
    a live view of accounts, equity, drawdown, divergences and alerts.
    Example: `reconguard run` (Ctrl-C stops everything, servers included).
    """
    settings = loaded_settings()
    _share_metrics_between_processes(settings)  # before anything that defines a metric is imported
    specs = EMBEDDED_RUN if demo_wanted(settings, demo) else PRODUCTION_RUN
    if specs is EMBEDDED_RUN:
        from producers.demo.service import demo_settings

        settings = demo_settings(settings)
    with embedded_or_given(settings) as resolved:
        _redact_database_password(resolved)
        console.print(f"broker {resolved.kafka_bootstrap_servers}, database ready; Ctrl-C stops everything")
        asyncio.run(_serve(resolved, specs, live_view=view and console.is_terminal))
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
    asyncio.run(prepare_when_reachable(settings, stop=asyncio.Event()))
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


@app.command()
def archiver() -> None:
    """Archive every event of every topic into event_archive (append-only, partitioned by month).

    Example: `DATABASE_URL=postgresql://… KAFKA_BOOTSTRAP_SERVERS=kafka:9092 reconguard archiver`
    """
    _one_service("archiver")


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
    from simulation.scenario import write_schema

    console.print(f"wrote {len(write()) + 1} files into {SCHEMA_DIR} and {configdoc.write()}")
    write_schema()


@app.command()
def replay(
    database: Annotated[Optional[str], typer.Option(help="Fresh database to build (same server).")] = None,
    schema: Annotated[Optional[str], typer.Option(help="Fresh schema to build (same database).")] = None,
    since: Annotated[Optional[datetime], typer.Option(help="Only events that occurred at or after this time "
                                                           "(ISO 8601, UTC if no zone).")] = None,
    replace: Annotated[bool, typer.Option(help="Drop the target first if it exists.")] = False,
    source: Annotated[str, typer.Option(help="Where the events come from: `log` (the topics) or `archive` "
                                             "(event_archive, beyond the broker's retention).")] = "log",
) -> None:
    """Rebuild the projections from the log (or the event archive) into a fresh database or schema.

    Example: `reconguard replay --schema audit_2026_11 --since 2026-11-01T00:00:00Z --source archive`
    """
    from projections.replay import ReplayError, prepare_target, replay_archive, table_checksums
    from projections.replay import replay as run_replay

    if source not in ("log", "archive"):
        console.print(f"[red]--source must be log or archive, not {source!r}[/red]")
        raise typer.Exit(2)
    run_replay = replay_archive if source == "archive" else run_replay  # noqa: F811 - chosen by --source

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


@app.command()
def whatif(
    since: Annotated[Optional[datetime], typer.Option(help="History from (ISO 8601, UTC if no zone)")] = None,
    until: Annotated[Optional[datetime], typer.Option(help="History until (exclusive)")] = None,
    account: Annotated[Optional[list[str]], typer.Option(help="Only this account (repeatable)")] = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="guard.FIELD=VALUE: a guard setting or an account level, e.g. guard.critical_drawdown_percent=8")
    ] = None,
    profile: Annotated[Optional[str], typer.Option(help="Judge every account by this guard profile")] = None,
    settings_file: Annotated[Optional[str], typer.Option(
        "--settings", help="YAML or JSON of changes: {guard: {critical_drawdown_percent: 8}}")] = None,
    source: Annotated[str, typer.Option(help="`log` (the topics) or `archive` (event_archive)")] = "log",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")] = False,
) -> None:
    """Replay recorded history through the guard with other settings, in virtual time, and list the
    liquidations that would, and would not, have happened. Reads only: writes no topic and no table.

    Example: `reconguard whatif --since 2026-12-01T00:00Z --set guard.critical_drawdown_percent=8 --json`
    """
    from pathlib import Path

    from rich.table import Table

    from simulation.whatif import TABLE_HEADERS, ChangeError, Changes, dumps, table_rows
    from simulation.whatif_history import SOURCES, Window, recorded_what_if

    if source not in SOURCES:
        console.print(f"[red]--source must be log or archive, not {source!r}[/red]")
        raise typer.Exit(2)
    try:
        changes = Changes.parse(set_ or (), profile=profile, file=Path(settings_file) if settings_file else None)
    except ChangeError as error:
        console.print(f"[red]{error}[/red]", highlight=False)
        raise typer.Exit(2) from None
    since, until = (None if t is None else t if t.tzinfo else t.replace(tzinfo=UTC) for t in (since, until))
    settings = connected(loaded_settings())
    try:
        outcome = asyncio.run(recorded_what_if(settings, Window(since, until, frozenset(account or ())), changes,
                                               source=source))
    except (ChangeError, ValueError) as error:
        console.print(f"[red]{error}[/red]", highlight=False)
        raise typer.Exit(2) from None
    if as_json:
        print(dumps(outcome))
        return
    table = Table(*TABLE_HEADERS, title=f"what if: {outcome.inputs} events replayed, {len(outcome.real)} real and "
                                        f"{len(outcome.simulated)} simulated liquidations")
    for row in table_rows(outcome):
        table.add_row(*row)
    console.print(table if outcome.differences else "no liquidation would have been different")
    if outcome.unreproduced:
        console.print(f"{len(outcome.unreproduced)} recorded liquidation(s) differ even in a replay without the "
                      "change (the real worker's timing decided them): see --json, 'unreproduced'")


@app.command()
def simulator(
    accounts: Annotated[int, typer.Option(help="Flat load accounts beside the demo's four (logins 52000001...).",
                                          min=0)] = 0,
    host: Annotated[str, typer.Option(help="Address to bind (RPyC classic runs any code: keep it private).")]
    = "127.0.0.1",
    base_port: Annotated[int, typer.Option(help="Control port; account i (login order) gets base+1+i.")] = 18900,
    advertise: Annotated[Optional[str], typer.Option(help="Host named in the endpoints (default: --host).")] = None,
    state_dir: Annotated[Optional[str], typer.Option(help="Where the world is saved (default: DATA_DIR/simulator); "
                                                          "'-' keeps it in memory only.")] = None,
    fresh: Annotated[bool, typer.Option(help="Discard a saved world and start a new one.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the market and of the fault dice.")] = 20_240_108,
    endpoints_file: Annotated[Optional[str], typer.Option(help="Also write login=host:port,... here.")] = None,
) -> None:
    """Serve simulated MT5 terminals over RPyC classic (mt5linux's protocol), one port per account.

    The poller and executor reach them as real terminals: `RECONGUARD_MT5_GATEWAY=mt5linux` with the
    printed RECONGUARD_MT5_ENDPOINTS, or `RECONGUARD_MT5_GATEWAY=simulator` (asks the control port).
    The world is saved after every change, so a restarted simulator resumes it.
    Example: `reconguard simulator --accounts 200 --endpoints-file /tmp/endpoints`
    """
    import shutil
    import signal
    import threading
    from pathlib import Path

    from producers.mt5.simulator.server import SimulatorServer, open_world

    settings = loaded_settings()
    directory = None if state_dir == "-" else Path(state_dir) if state_dir else settings.data_dir / "simulator"
    if fresh and directory is not None:
        shutil.rmtree(directory, ignore_errors=True)
    world, journal, resumed = open_world(directory, seed=seed, load_accounts=accounts)
    server = SimulatorServer(world, journal, host=host, base_port=base_port, advertised_host=advertise)
    if endpoints_file:
        Path(endpoints_file).write_text(server.endpoints + "\n")
    state = "resumed from " + str(journal.path) if resumed and journal else "new world"
    console.print(f"simulator: {len(server.ports)} terminals on {host}:{base_port + 1}..{base_port + len(server.ports)}"
                  f", control port {base_port}; {state}")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server.serve(stop=stop)
    console.print("simulator stopped; world saved" if journal else "simulator stopped")


@app.command("demo-platform")
def demo_platform() -> None:
    """The demo platform against `reconguard simulator` (at RECONGUARD_MT5_SIMULATOR): makes each simulated
    account a user, then plays the demo's script (divergences, drawdowns, liquidations) over RPyC.

    With the poller and executor on RECONGUARD_MT5_GATEWAY=simulator, this is the demo as separate processes.
    Example: `RECONGUARD_MT5_SIMULATOR=127.0.0.1:18900 reconguard demo-platform`
    """
    from producers.demo.remote import serve

    settings = connected(loaded_settings())

    async def go() -> None:
        stop = asyncio.Event()
        install_stop_signals(stop)
        await prepare_when_reachable(settings, stop=stop)
        await serve(settings, stop=stop, simulator=settings.mt5.simulator)

    asyncio.run(go())


@app.command()
def verify(
    keep: Annotated[bool, typer.Option(help="Keep the replayed schema for inspection.")] = False,
    show: Annotated[int, typer.Option(help="Row ids shown per kind of difference.")] = 5,
) -> None:
    """Compare the live projections with a replay of the same events: rows lost, extra, changed.

    Works on a running system (the replay reads exactly as far as the live progress it compares).
    Exit code 0 when they are identical, 1 when any count is not 0.
    Example: `reconguard verify` (while `reconguard run` runs, or with KAFKA_BOOTSTRAP_SERVERS/DATABASE_URL)
    """
    from projections.verify import report_lines
    from projections.verify import verify as run_verify

    settings = connected(loaded_settings())
    result = asyncio.run(run_verify(settings, keep=keep))
    for line in report_lines(result, show=show):
        console.print(line, highlight=False)
    verdict = "identical" if result.differences == 0 else f"[red]{result.differences} differences[/red]"
    console.print(f"{result.events_read} events replayed into {result.schema}"
                  f"{' (kept)' if keep else ' (dropped)'}: live tables and replay are {verdict}")
    raise typer.Exit(0 if result.differences == 0 else 1)


@app.command()
def simulate(
    scenario: Annotated[str, typer.Argument(help="a scenario file (YAML, see docs/scenarios.md)")],
    seed: Annotated[Optional[int], typer.Option(help="the random seed (default: the scenario's)")] = None,
    log: Annotated[Optional[str], typer.Option(help="write the decision log (JSON lines) here; - for stdout")] = None,
    pipeline: Annotated[bool, typer.Option(help="play it in real time through the real broker, database and "
                                                "services instead (embedded unless KAFKA_BOOTSTRAP_SERVERS/"
                                                "DATABASE_URL are set; scenarios of a few minutes)")] = False,
    jobs: Annotated[int, typer.Option(min=1, help="play the accounts in this many worker processes, with the "
                                                  "same decision log (docs/scenarios.md, \"In parallel\"); "
                                                  "1: in this process")] = 1,
) -> None:
    """Play a scenario in virtual time through the production rules, without a broker or database.

    The simulator, the poller's parsing, the worker's rules and the close executor, on a virtual
    clock: the same file and seed give a byte-identical decision log. Prints a summary table and
    checks the scenario's `expect` list (exit code 1 if one is not met, 2 if the file is invalid).
    `--pipeline` plays it in real time through the real broker, database and services instead
    (docs/scenarios.md, "Through the pipeline"). `--jobs N` plays the accounts in N worker processes,
    byte for byte the same log (docs/scenarios.md, "In parallel").
    Example: `reconguard simulate docs/scenarios/guard-drawdown-critical.yaml --log decisions.jsonl`
    """
    import contextlib
    import sys
    from collections.abc import Callable

    from rich.table import Table

    from simulation.runner import play, unmet
    from simulation.scenario import ScenarioError, load

    if pipeline and jobs > 1:
        console.print("[red]--jobs plays virtual time; --pipeline plays in real time, in one process[/red]")
        raise typer.Exit(2)
    try:
        loaded = load(scenario)
    except ScenarioError as error:
        console.print(f"[red]{error}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    # The log is written as it is made (a day's log is not held in memory), to the file or stdout.
    with open(log, "w") if log and log != "-" else contextlib.nullcontext(sys.stdout) as out:
        write: Callable[[str], object] = (lambda line: out.write(line + "\n")) if log else (lambda line: None)
        if pipeline:
            outcome = _simulate_live(loaded, seed)
            for line in outcome.lines:
                write(line)
        else:
            outcome = play(loaded, seed=seed, sink=write, jobs=jobs)
    table = Table(title=f"{loaded.name}: {outcome.simulated_seconds:g} s "
                        f"{'in real time through the pipeline' if pipeline else 'simulated'}, {outcome.polls} polls")
    for column in ("account", "decision", "reason / status", "count"):
        table.add_column(column)
    for account, kind, what, count in outcome.summary():
        table.add_row(account, kind, what, str(count))
    console.print(table)
    if jobs > 1 and len(loaded.accounts) > 1 and outcome.played_by == 1:
        console.print("A decision acted on the trade server the accounts share: played again in one process "
                      "from the start (docs/scenarios.md, \"In parallel\").")
    missed = unmet(loaded, outcome)
    for line in missed:
        console.print(f"[red]not met:[/red] {line}", highlight=False, soft_wrap=True)
    if loaded.expect:
        console.print(f"{len(loaded.expect) - len(missed)} of {len(loaded.expect)} expectations met")
    raise typer.Exit(1 if missed else 0)


@app.command()
def faultsim(
    runs: Annotated[int, typer.Option(help="how many runs (seeds SEED, SEED+1, ...)")] = 1000,
    seed: Annotated[int, typer.Option(help="the first run's seed")] = 1,
    verbose: Annotated[bool, typer.Option(help="print every run's fault plan")] = False,
    jobs: Annotated[int, typer.Option(help="processes to run the seeds in (the results do not depend on it)")] = 1,
) -> None:
    """Seeded virtual-time runs with faults (worker crashes and redelivery, changelog restores, lost
    answers, executor crashes, terminal disconnects), each checked for chaos's invariants.

    Prints the count of each broken invariant (all must be 0) and, for a failing run, its seed and the
    command that plays exactly that run again (exit code 1). See docs/scenarios.md, "Fault simulation".
    Example: `reconguard faultsim --runs 1000 --seed 1`
    """
    import logging

    from simulation.faults import print_batch

    logging.getLogger().setLevel(logging.ERROR)  # the demo platform's refused placings are part of the runs
    raise typer.Exit(print_batch(seed, runs, verbose=verbose, console=console, jobs=jobs))


def _simulate_live(scenario, seed: Optional[int]):  # type: ignore[no-untyped-def]
    """`simulate --pipeline`: a scenario the pipeline cannot play is refused (exit 2) before anything starts."""
    from reconguard.live_scenario import simulate_live
    from simulation.pipeline import NotForPipeline

    try:
        return simulate_live(loaded_settings(), scenario, seed=seed,
                             announce=lambda line: console.print(line, highlight=False))
    except NotForPipeline as error:
        console.print(f"[red]{error}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _add_groups() -> None:
    from reconguard import users_cli

    app.add_typer(users_cli.app, name="users")
    from reconguard import accounts_cli

    app.add_typer(accounts_cli.app, name="accounts")


_add_groups()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
