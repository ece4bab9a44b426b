"""The worker's integration tests share its fixtures (``tests/support/streams_worker.py``): a module
that defines ``accounts`` (with a ``"probe"``) gets the running ``worker`` and its ``outputs``."""

from tests.support.streams_worker import outputs, worker  # noqa: F401 - fixtures, found by pytest here
