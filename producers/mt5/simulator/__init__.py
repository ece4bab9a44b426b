"""The simulated MT5 trade server, market and terminals: the embedded default and the test double.

``broker`` (the trade server and market, shared by many accounts) knows nothing of terminals;
``terminal`` (one terminal process, usable wherever the ``MetaTrader5`` module is expected) talks
to a broker. Beside them: ``market`` (symbols, sessions, prices), ``accounts`` (positions, history,
money), ``trading`` (checks and executes requests), ``args`` (argument conversion as the package
does it), ``views`` (symbol and terminal info), ``faults`` (what can go wrong).
"""

from producers.mt5.simulator.broker import DEFAULT_START, SimulatedBroker, SimulationError, follow_wall_clock
from producers.mt5.simulator.faults import FaultConfig
from producers.mt5.simulator.market import SymbolSpec
from producers.mt5.simulator.terminal import SimulatedTerminal

__all__ = ["DEFAULT_START", "FaultConfig", "SimulatedBroker", "SimulatedTerminal", "SimulationError",
           "SymbolSpec", "follow_wall_clock"]
