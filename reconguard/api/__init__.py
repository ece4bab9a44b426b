"""The REST API, /health, /metrics and the ops dashboard (FastAPI under uvicorn)."""

from reconguard.api.app import create_app, serve

__all__ = ["create_app", "serve"]
