"""The streams worker as a ``reconguard.service`` service (a child process; see ``worker.py``)."""

from streams.worker import run_worker, serve

__all__ = ["run_worker", "serve"]
