"""The close executor: closes positions by ticket on command, exactly once, and reports the result.

client (terminal I/O) / parsing (pure) / ledger (Postgres) / loop (commands) / service (Kafka wiring).
"""

from producers.executor.loop import Executor, ExecutorConfig
from producers.executor.service import run_executor, serve

__all__ = ["Executor", "ExecutorConfig", "run_executor", "serve"]
