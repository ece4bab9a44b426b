"""Security headers on every response of the API.

Every response: no content sniffing, no framing, no referrer, a request id, and a Content
Security Policy: none at all may load for a JSON answer; the Swagger UI page (``/docs``) may load
only its own files from this server (`reconguard.api.docs`); the dashboard sets its own, stricter
one. Data answers are not to be cached by a shared cache.
"""

from __future__ import annotations

from fastapi import Response

#: A JSON answer loads nothing, runs nothing, and is framed by no one.
API_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
#: Swagger UI: its script and style from this server; it styles elements inline (hence the one
#: 'unsafe-inline', for styles only), draws icons as data: URIs and fetches /openapi.json.
DOCS_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_ALWAYS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def secure(response: Response, *, path: str, request_id: str) -> Response:
    """``response`` with the security headers; a policy a route set itself is kept."""
    for name, value in _ALWAYS.items():
        response.headers[name] = value
    response.headers["X-Request-ID"] = request_id
    if "content-security-policy" not in response.headers:
        response.headers["Content-Security-Policy"] = DOCS_POLICY if path.startswith("/docs") else API_POLICY
    if "cache-control" not in response.headers:
        response.headers["Cache-Control"] = "no-store"
    return response
