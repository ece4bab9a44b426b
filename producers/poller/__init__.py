"""The poller: reads each account's terminal on an interval and publishes what it said.

client (terminal I/O) / parsing (pure) / loop (rounds and batches) / service (Kafka wiring).
"""

from producers.poller.loop import Poller, PollerConfig
from producers.poller.service import run_poller, serve

__all__ = ["Poller", "PollerConfig", "run_poller", "serve"]
