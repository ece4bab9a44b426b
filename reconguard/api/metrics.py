"""The API's metrics (declared in `reconguard.metrics`, like every metric)."""

from reconguard.metrics import api_request_duration_seconds, api_requests_total, api_sync_requests_total

__all__ = ["api_request_duration_seconds", "api_requests_total", "api_sync_requests_total"]
