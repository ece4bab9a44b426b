"""The API's metrics, until the lead moves them into `reconguard.metrics` (one declaration each).

Labels are bounded: ``route`` is the route template (``/users/{user_id}/logs``), never a path
with ids in it; unmatched paths share one value.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

api_requests_total = Counter(
    "api_requests_total",
    "HTTP requests answered by the API, by route template and status code.",
    ["route", "status"],
)
api_request_duration_seconds = Histogram(
    "api_request_duration_seconds",
    "Time to answer an API request, by route template.",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
api_sync_requests_total = Counter(
    "api_sync_requests_total",
    "Manual sync requests, by outcome (accepted, rate_limited, failed).",
    ["outcome"],
)
