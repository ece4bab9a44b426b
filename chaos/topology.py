"""The separate-process topology the faults are done to, and the harness's orchestrator.

Servers: a tansu broker whose clients all go through a cuttable TCP proxy (the broker advertises the
proxy's address), and a real PostgreSQL (the embedded one's binaries) that can be killed, restarted
and frozen. Services: `reconguard simulator`, `demo-platform`, `poller`, `worker`, `executor`,
`projector`, `api` and `telegram`, each its own process, the producers on the mt5linux gateway.

The harness is their orchestrator, as compose's or Kubernetes' restart policy would be: it kills the
processes it started (by pid, never by name) and starts any service that exited again after a short
delay, counting the exits it did not cause. It does not rely on `reconguard run`'s own supervision,
so it works with or without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from chaos.proxy import CuttableProxy
from infra.embedded import EmbeddedPostgres, EmbeddedStartError, die_with_parent, free_port, tansu_binary, wait_until
from infra.settings import Settings
from producers.mt5.gateway import GatewayUnavailable, simulator_endpoints

def free_port_block(count: int, *, low: int = 20_000, high: int = 32_000) -> int:
    """The first of ``count`` consecutive free ports, below the kernel's ephemeral range (32768 up by
    default), where the thousands of client sockets of a run can never take one of them."""
    rng = random.Random()
    for _ in range(50):
        base = rng.randrange(low, high - count)
        try:
            for port in range(base, base + count):
                with socket.socket() as probe:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    probe.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError(f"no {count} consecutive free ports between {low} and {high}")


SERVICES = ("simulator", "platform", "poller", "worker", "executor", "projector", "api", "telegram")
COMMANDS = {"platform": "demo-platform"}


@dataclass
class Service:
    name: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    killed: int = 0  # by the harness
    crashed: int = 0  # exits the harness did not cause
    held: bool = False  # killed on purpose and not to be restarted yet
    restart_at: float | None = None
    down: list[tuple[float, float | None]] = field(default_factory=list)  # wall-clock outages

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Topology:
    """Everything of one chaos run under ``directory``; ``stop()`` ends every process it started."""

    def __init__(self, directory: Path, *, seed: int, accounts: int, telegram_url: str,
                 restart_delay: Callable[[], float]) -> None:
        self.directory, self.seed, self.accounts = directory, seed, accounts
        self.restart_delay = restart_delay
        self.logs = directory / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.broker_port, self.proxy_port = free_port(), free_port()
        self.simulator_port = free_port_block(accounts + 5)  # the control port; the accounts' follow it
        self.http_port = free_port()
        self.postgres = EmbeddedPostgres(directory)
        self.proxy = CuttableProxy(self.proxy_port, ("127.0.0.1", self.broker_port))
        self.tansu: subprocess.Popen[bytes] | None = None
        self.telegram_url = telegram_url
        self.services: dict[str, Service] = {}
        self.outages: list[tuple[str, float, float]] = []  # (database / broker, from, to): wall clock
        self._watch_stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="chaos-orchestrator", daemon=True)
        self._lock = threading.Lock()

    # -- settings every process shares ------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        return Settings(KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{self.proxy_port}", DATABASE_URL=self.postgres.url,
                        topic_prefix=f"chaos-{self.seed}", data_dir=self.directory)

    def environment(self) -> dict[str, str]:
        return os.environ | {
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{self.proxy_port}", "DATABASE_URL": self.postgres.url,
            "RECONGUARD_TOPIC_PREFIX": f"chaos-{self.seed}", "RECONGUARD_DATA_DIR": str(self.directory),
            "RECONGUARD_MT5_GATEWAY": "simulator", "RECONGUARD_MT5_SIMULATOR": f"127.0.0.1:{self.simulator_port}",
            "RECONGUARD_HTTP_PORT": str(self.http_port), "RECONGUARD_LOG_LEVEL": "INFO",
            "TELEGRAM_BOT_TOKEN": "4242:chaos", "RECONGUARD_TELEGRAM_API_BASE": self.telegram_url,
            "RECONGUARD_TELEGRAM_BACKOFF_MAX_SECONDS": "2", "PYTHONUNBUFFERED": "1", "COLUMNS": "250"}

    # -- servers ------------------------------------------------------------------------------------------

    def start_servers(self) -> None:
        url = f"tcp://127.0.0.1:{self.broker_port}"
        advertised = f"tcp://127.0.0.1:{self.proxy_port}"  # clients must come back through the proxy
        with (self.logs / "tansu.log").open("ab") as log:
            self.tansu = subprocess.Popen(
                [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", advertised,
                 "--storage-engine", "memory://tansu/"], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent(signal.SIGTERM))
        self.proxy.start()
        self.postgres.start()

    def postgres_pids(self) -> list[int]:
        """The postmaster (from its pid file, PostgreSQL's own record) and every child of it."""
        pid_file = self.postgres.pgdata / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text().split("\n", 1)[0])
            with contextlib.suppress(psutil.Error):
                return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
        return []

    def kill_postgres(self) -> None:
        pids = self.postgres_pids()
        if not pids:
            return
        os.kill(pids[0], signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pids[0], 0)  # we are its parent: reap it, or its pid stays "in use"

    def restart_postgres(self, *, timeout: float = 60.0) -> None:
        """Start it again on the same port and data; orphaned backends may hold its memory a moment."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.postgres.start()
                return
            except (EmbeddedStartError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def freeze_postgres(self, frozen: bool) -> None:
        for pid in self.postgres_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP if frozen else signal.SIGCONT)

    def prepare(self) -> None:
        from reconguard.runner import prepare

        asyncio.run(prepare(self.settings))

    # -- services -------------------------------------------------------------------------------------------

    def start_services(self) -> None:
        self.start("simulator")
        wait_until(self.simulator_answers, timeout=60, what="the simulator's control port")
        self.start("platform")
        wait_until(lambda: self._users() >= self.accounts + 4, timeout=60, what="the platform's users")
        for name in SERVICES[2:]:
            self.start(name)
        self._watcher.start()

    def argv(self, name: str) -> list[str]:
        command = [sys.executable, "-m", "reconguard.cli", COMMANDS.get(name, name)]
        if name == "simulator":
            command += ["--accounts", str(self.accounts), "--base-port", str(self.simulator_port),
                        "--state-dir", str(self.directory / "simulator"), "--seed", str(self.seed)]
        return command

    def start(self, name: str) -> None:
        service = self.services.setdefault(name, Service(name, self.argv(name), self.logs / f"{name}.log"))
        with service.log_path.open("ab") as log:
            service.process = subprocess.Popen(
                service.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.environment(),
                start_new_session=True, preexec_fn=die_with_parent(signal.SIGKILL))
        service.held, service.restart_at = False, None

    def kill(self, name: str) -> None:
        """kill -9 of one service's process; the orchestrator starts it again after its delay."""
        with self._lock:
            service = self.services[name]
            if not service.alive():
                return
            service.held = True
            assert service.process is not None
            service.process.send_signal(signal.SIGKILL)
            service.process.wait()
            service.killed += 1
            service.down.append((time.time(), None))
            service.restart_at = time.monotonic() + self.restart_delay()

    def _watch(self) -> None:
        while not self._watch_stop.wait(0.2):
            with self._lock:
                for service in self.services.values():
                    self._tend(service)

    def _tend(self, service: Service) -> None:
        if service.alive():
            if service.down and service.down[-1][1] is None and self._ready(service):
                service.down[-1] = (service.down[-1][0], time.time())
            return
        if not service.held:  # it exited by itself: a crash, restarted like any other
            service.held, service.crashed = True, service.crashed + 1
            service.down.append((time.time(), None))
            service.restart_at = time.monotonic() + self.restart_delay()
        if service.restart_at is not None and time.monotonic() >= service.restart_at:
            self.start(service.name)

    def _ready(self, service: Service) -> bool:
        return service.name != "simulator" or self.simulator_answers()

    def simulator_answers(self) -> bool:
        try:
            simulator_endpoints(f"127.0.0.1:{self.simulator_port}", timeout=2)
            return True
        except GatewayUnavailable:
            return False

    def all_up(self) -> bool:
        with self._lock:
            return all(s.alive() and not (s.down and s.down[-1][1] is None) for s in self.services.values())

    def _users(self) -> int:
        return self._count("SELECT count(*) FROM users WHERE mt5_login IS NOT NULL")

    def assessed_accounts(self) -> int:
        """Accounts the guard has assessed at least once (it measures drawdown from what it has seen)."""
        return self._count("SELECT count(DISTINCT user_id) FROM position_snapshots")

    def _count(self, sql: str) -> int:
        import asyncpg

        async def count() -> int:
            connection = await asyncpg.connect(self.postgres.url)
            try:
                return int(await connection.fetchval(sql))
            finally:
                await connection.close()

        try:
            return asyncio.run(count())
        except (OSError, asyncpg.PostgresError):
            return 0

    # -- the end ----------------------------------------------------------------------------------------------

    def stop(self) -> None:
        self._watch_stop.set()
        if self._watcher.is_alive():
            self._watcher.join(timeout=5)
        for service in reversed(list(self.services.values())):
            if service.alive():
                assert service.process is not None
                service.process.send_signal(signal.SIGTERM)
        for service in self.services.values():
            if service.process is not None:
                try:
                    service.process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    service.process.kill()
                    service.process.wait()
        self.freeze_postgres(False)
        self.proxy.stop()
        with contextlib.suppress(Exception):
            self.postgres.stop()
        if self.tansu is not None and self.tansu.poll() is None:
            self.tansu.terminate()
            self.tansu.wait(timeout=15)
