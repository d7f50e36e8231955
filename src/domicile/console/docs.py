"""``/docs`` and ``/redoc``: the API's OpenAPI document in Swagger UI and in ReDoc, with
every asset served from here (no CDN), so both work offline.

The assets are the files the ``fastapi-offline`` package on PyPI ships (MIT): Swagger UI 5
(swagger-ui-dist, Apache-2.0), which reads OpenAPI 3.1 documents, and ReDoc (MIT). Only
the package's files are used, not its application class.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from fastapi import APIRouter
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

router = APIRouter(include_in_schema=False)
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}


_INLINE = re.compile(r"<script>(.*?)</script>", re.S)


def _guarded(page: HTMLResponse) -> HTMLResponse:
    """The console pages' headers on a documentation page: never framed (clickjacking),
    never sniffed, no referrer outside; scripts only from here, and the page's own inline
    start-up script by its hash. Both viewers set styles from their scripts, and ReDoc's
    search runs in a worker made from a blob."""
    scripts = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(m.encode()).digest()).decode() + "'"
        for m in _INLINE.findall(bytes(page.body).decode())
    )
    page.headers.update(
        {
            "Cache-Control": "no-store",
            "Content-Security-Policy": (
                f"default-src 'self'; script-src 'self' {scripts}; "
                "style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                "worker-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; "
                "form-action 'self'"
            ),
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "same-origin",
        }
    )
    return page


def _assets() -> Path:
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"


@router.get("/docs")
async def docs() -> HTMLResponse:
    page = get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="domicile: API",
        swagger_js_url="/docs/assets/swagger-ui-bundle.js",
        swagger_css_url="/docs/assets/swagger-ui.css",
        swagger_favicon_url="/docs/assets/favicon.png",
    )
    return _guarded(page)


@router.get("/redoc")
async def redoc() -> HTMLResponse:
    page = get_redoc_html(
        openapi_url="/openapi.json",
        title="domicile: API",
        redoc_js_url="/docs/assets/redoc.standalone.js",
        redoc_favicon_url="/docs/assets/favicon.png",
        with_google_fonts=False,
    )
    return _guarded(page)


@router.get("/docs/assets/{name}")
async def asset(name: str) -> Response:
    kind = ASSETS.get(name)
    if kind is None:
        return Response("not found", status_code=404, media_type="text/plain")
    return Response(
        (_assets() / name).read_bytes(),
        media_type=kind,
        headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
    )
