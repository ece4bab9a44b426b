"""The REST API, /health, /metrics and the ops dashboard (FastAPI under uvicorn)."""
