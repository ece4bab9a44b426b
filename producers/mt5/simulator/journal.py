"""The simulated world on disk, so a restarted (or killed) simulator resumes where it was.

The world (the broker with its market, accounts and fault dice, and every terminal's session) is
pickled whole into one file, replaced atomically (write, fsync, rename, fsync the folder). The
server writes it after every call that changed something and before that call's reply leaves, so
a client never hears of a trade the disk does not hold: a simulator killed between the trade and
the write never replied, and the client sees a lost reply, as with a real terminal. Between
changes the clock moves on its own; its state is written every second (less often for a world so large that
its save would take more than a twentieth of the time), and what a restart loses of
it is regenerated identically, because prices come from the seeded random streams in the file.
"""

from __future__ import annotations

import copyreg
import io
import os
import pickle
import threading
from dataclasses import dataclass, field
from pathlib import Path

from producers.mt5.simulator.broker import SimulatedBroker
from producers.mt5.simulator.terminal import SimulatedTerminal

_LOCK_TYPE = type(threading.RLock())
FORMAT = 1  # bump when the pickled shape changes incompatibly


@dataclass
class World:
    """Everything a simulator serves: the broker and one terminal per account, by login."""

    broker: SimulatedBroker
    terminals: dict[int, SimulatedTerminal] = field(default_factory=dict)

    def terminal(self, login: int, password: str) -> SimulatedTerminal:
        if login not in self.terminals:
            self.terminals[login] = SimulatedTerminal(self.broker, login=login, password=password)
        return self.terminals[login]


def _fresh_lock(_: object) -> tuple[type, tuple[()]]:
    return threading.RLock, ()


def dumps(world: World) -> bytes:
    """The world as bytes; the broker's lock is written as a fresh lock (held or not)."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = copyreg.dispatch_table.copy()
    pickler.dispatch_table[_LOCK_TYPE] = _fresh_lock
    pickler.dump((FORMAT, world))
    return buffer.getvalue()


def loads(data: bytes) -> World:
    version, world = pickle.loads(data)  # noqa: S301 - our own file, written by dumps
    if version != FORMAT:
        raise ValueError(f"simulator state format {version}, this build reads {FORMAT}")
    return world


class Journal:
    """One state file; ``save`` is atomic and durable, ``load`` returns None when there is none yet."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "world.pickle"
        self.saves = 0

    def load(self) -> World | None:
        if not self.path.exists():
            return None
        return loads(self.path.read_bytes())

    def save(self, world: World) -> None:
        with world.broker.lock:
            data = dumps(world)
        self.directory.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)
        folder = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
        self.saves += 1
