"""A running service (uvicorn, in a thread) over a three-site deployment with known
contents, and Debian's Chromium driven by Playwright (``scripts/browser`` installs both)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from domicile.deploy.starter import init
from domicile.errors import DomicileError
from domicile.http.app import create_app
from domicile.rights import open_request
from domicile.vault import Domicile

CHROMIUM = Path("/usr/bin/chromium")


@dataclass
class Console:
    url: str
    vault: Domicile
    officer: tuple[str, str]  # client id and secret: admin
    viewer: tuple[str, str]  # sites:read and filings:read only
    tokens: dict[str, str]  # citizenship -> token of that subject's record


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    import uvicorn

    vault = Domicile(init(tmp_path_factory.mktemp("deployment")))
    vault.add_filing("ru.art12_notice", "2025-01-01")
    tokens = {}
    for cc in ("RU", "DE", "US"):
        r = vault.put(
            "profiles", subject={"citizenship": cc},
            fields={"full_name": f"Person {cc}", "email": f"person.{cc.lower()}@example.org"},
            purpose="signup",
        )  # fmt: skip
        tokens[cc] = r.token
        for site in ("us", "de", "ru"):
            with contextlib.suppress(DomicileError):  # refusals are known contents too
                vault.get(r.token, purpose="support", as_site=site)
    open_request(
        vault, "access", {"email": "person.ru@example.org"}, checked_by="dpo.kim",
        verified_how="email_confirmation",
    )  # fmt: skip
    vault.witness()
    app = create_app(vault)
    clients = app.state.service.clients
    officer, officer_secret = clients.add("officer", ["admin"])
    viewer, viewer_secret = clients.add("viewer", ["sites:read", "filings:read"])
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the service did not start")
        time.sleep(0.05)
    try:
        yield Console(
            f"http://127.0.0.1:{port}", vault, (officer.id, officer_secret),
            (viewer.id, viewer_secret), tokens,
        )  # fmt: skip
    finally:
        server.should_exit = True
        thread.join(timeout=20)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail("Chromium is missing: run scripts/browser")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()
