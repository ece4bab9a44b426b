"""Run the streams worker: blocking in this process, or as a child process of an asyncio service.

Faust owns its event loop (mode's Worker runs it to completion and installs signal handlers),
so it does not run inside another loop. ``run_worker`` is the blocking entry point
(``python -m streams``); ``serve`` keeps the service contract of ``infra.service`` by running
that entry point as a child process until ``stop`` is set, then stopping it with SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import faust

from infra.embedded import die_with_parent
from infra.settings import Settings, environment

log = logging.getLogger(__name__)


def run_worker(settings: Settings) -> None:
    """Run the Faust worker until SIGTERM or SIGINT (blocking; creates its own event loop)."""
    from infra import logthrottle
    from infra.logredact import install_for
    from streams.app import create_app

    install_for(settings)  # this process's logging is Faust's: redact at the record factory
    logthrottle.install()  # Faust's and mode's load warnings: once, then a count a minute

    if settings.worker.metrics_port is not None:
        from infra.metrics import serve_metrics

        token = settings.api.metrics_token
        serve_metrics(host=settings.http_host, port=settings.worker.metrics_port,
                      token=token.get_secret_value() if token else None, per_account=settings.api.metrics_per_account)
    app = create_app(settings)
    faust_worker(app, loglevel=settings.log_level).execute_from_commandline()


def faust_worker(app: faust.App, *, loglevel: str) -> faust.Worker:
    """Faust's worker for ``app``, without its terminal spinner.

    At a log level of WARNING or above, Faust's worker spins the spinner on every log record, so
    it sets the root logger to DEBUG: every debug call in the process (Faust logs one per message
    sent) then builds a record and runs the handlers, a cost measured at several per cent of
    the worker's time."""
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.spinner = None  # read when the root logger is set up, in execute_from_commandline
    return worker


async def serve(settings: Settings, *, stop: asyncio.Event, extra_env: dict[str, str] | None = None) -> None:
    """Run the worker as a child process until ``stop`` is set; raise if it dies on its own."""
    log_path = Path(settings.data_dir) / "logs" / f"streams-{settings.topic_prefix}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = os.environ | environment(settings) | (extra_env or {})
    with log_path.open("ab") as log_file:
        child = subprocess.Popen([sys.executable, "-m", "streams"], env=env, stdout=log_file,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                 preexec_fn=die_with_parent(signal.SIGTERM))
    log.info("streams worker started (pid %s, log %s)", child.pid, log_path)
    try:
        while not stop.is_set():
            if child.poll() is not None:
                raise RuntimeError(f"streams worker exited with code {child.returncode}; see {log_path}")
            try:
                await asyncio.wait_for(stop.wait(), timeout=0.5)
            except asyncio.TimeoutError:
                pass
    finally:
        await asyncio.to_thread(_stop_child, child)


def _stop_child(child: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    if child.poll() is not None:
        return
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("streams worker did not stop in %.0fs; killing it", timeout)
        child.kill()
        child.wait(5)
