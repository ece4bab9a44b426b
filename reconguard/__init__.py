"""reconguard: reconciles what a trading platform approved against what MT5 terminals hold."""

__version__ = "0.1.0"
