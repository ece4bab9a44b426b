"""The embedded demo: a simulated broker with four traders, a scripted platform, and the producers."""

from producers.demo.service import demo_broker, serve

__all__ = ["demo_broker", "serve"]
