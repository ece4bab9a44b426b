"""The one terminal console: logs and the live view share it, so log lines print above the view."""

from rich.console import Console

console = Console(stderr=True)
