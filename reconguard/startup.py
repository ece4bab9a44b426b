"""What every command does first: load the settings once (refusing unsafe ones), set up logging,
and find the broker and database (given, or those of a running `reconguard run`)."""

from __future__ import annotations

import logging

import typer
from rich.logging import RichHandler

from infra import logredact, logthrottle
from infra.service import tune_garbage_collector
from infra.settings import ConfigurationError, Settings, load
from reconguard.console import console
from reconguard.runner import EndpointsUnknown, resolve_endpoints


def loaded_settings() -> Settings:
    """The process's settings; a clear message and exit code 2 when a value is refused."""
    tune_garbage_collector()  # every command starts here
    try:
        settings = load()
    except ConfigurationError as error:
        console.print(f"[red]{error}[/red]", highlight=False)
        raise typer.Exit(2) from None
    logging.basicConfig(level=settings.log_level, format="%(name)s: %(message)s",
                        handlers=[RichHandler(console=console, show_path=False)])
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    logredact.install_for(settings)
    logthrottle.install()
    return settings


def connected(settings: Settings) -> Settings:
    """``settings`` with a broker and a database, or a clear message and exit code 2."""
    try:
        resolved = resolve_endpoints(settings)
    except EndpointsUnknown as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    logredact.add_database_url(resolved.database_url)  # found through run.json: not in the environment
    return resolved
