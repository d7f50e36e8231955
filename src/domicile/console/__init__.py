"""The web console, served by ``domicile serve`` at ``/console``, and the Swagger UI of
``/docs`` with its assets served from here (no CDN): server-rendered pages (Jinja2, with
autoescaping) and a little JavaScript, for operators and compliance officers.

It signs in with the API's clients (client id and secret) and shows only what their
scopes allow, through the vault's one check. Its routes are not in the OpenAPI document.
Without the ``console`` extra, ``/console`` and ``/docs`` answer one line saying which
extra to install.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

from domicile.errors import MissingExtra
from domicile.extras import require


def install(app: FastAPI) -> None:
    """Add the console's and /docs' routes to ``app``."""
    try:
        require("console", "the web console")
    except MissingExtra as exc:
        words = f"{exc.message}: {exc.hint}\n"

        async def missing() -> PlainTextResponse:
            return PlainTextResponse(words, status_code=503)

        for path in ("/docs", "/redoc", "/console", "/console/{rest:path}"):
            app.add_api_route(path, missing, include_in_schema=False)
        return
    from domicile.console import docs, pages

    app.include_router(docs.router)
    app.include_router(pages.router)
