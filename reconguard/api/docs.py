"""Swagger UI at ``/docs``, served from the installed package (fastapi-offline's copy of the
swagger-ui-dist files), never from a CDN: a deployment may have no internet, and the page's
Content-Security-Policy (`reconguard.api.headers.DOCS_POLICY`) lets it load only this server's files.

FastAPI's own page starts Swagger UI with an inline script, which that policy forbids; this page
starts it from ``/docs/init.js`` instead.
"""

from __future__ import annotations

from functools import cache
from importlib import resources as package_files

from fastapi import FastAPI, HTTPException, Response, status
from fastapi.responses import HTMLResponse

#: The files the page may load: a fixed map, so no request can name another file.
_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon.png": "image/png",
}

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} - API documentation</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
<link rel="icon" href="/docs/favicon.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body>
</html>
"""

_INIT = """window.ui = SwaggerUIBundle({
  url: "%s",
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
});
"""


@cache
def _asset(name: str) -> bytes:
    return package_files.files("fastapi_offline").joinpath("static", name).read_bytes()


def add_offline_docs(app: FastAPI) -> None:
    """Serve ``/docs`` (the page, its start script and Swagger UI's own files) from the package."""
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def docs_page() -> HTMLResponse:
        return HTMLResponse(_PAGE.format(title=app.title))

    @app.get("/docs/init.js", include_in_schema=False)
    async def docs_init() -> Response:
        return Response(_INIT % openapi_url, media_type="text/javascript")

    @app.get("/docs/{name}", include_in_schema=False)
    async def docs_asset(name: str) -> Response:
        media_type = _ASSETS.get(name)
        if media_type is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such file")
        return Response(_asset(name), media_type=media_type, headers={"Cache-Control": "public, max-age=86400"})
