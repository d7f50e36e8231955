"""The front of the service (``domicile.http.fast``): what it remembers of a client stays
as strict as looking the client up on every request, and what it serves is observed and
refused exactly as through FastAPI's stack."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from domicile.deploy.starter import init
from domicile.http import deps, fast, native
from domicile.http.app import create_app
from domicile.vault import Domicile

US = {"subject": {"citizenship": "US"}, "fields": {"full_name": "Jane Roe"}, "purpose": "signup"}
SCOPES = ["records:write", "records:read", "collection:*", "purpose:*", "site:us"]


@pytest.fixture
def app(tmp_path: Path) -> Any:
    return create_app(Domicile(init(tmp_path)))


def _read(http: TestClient, token: str, headers: dict[str, str]) -> Any:
    return http.get(f"/v1/records/{token}", params={"purpose": "view"}, headers=headers)


def test_a_removed_client_is_refused_at_its_next_request(app: Any) -> None:
    clients = app.state.service.clients
    client, key = clients.add("app", SCOPES, api_key=True)
    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(app) as http:
        token = http.post("/v1/collections/profiles/records", json=US, headers=headers).json()
        for _ in range(2):  # the second from memory
            assert _read(http, token["token"], headers).status_code == 200
        clients.remove(client.id)
        r = _read(http, token["token"], headers)
        assert r.status_code == 401
        assert r.json()["code"] == "unauthorized"
        refusals = [e.payload for e in app.state.service.vault.store("us").audit()]
        assert any('"reason":"invalid credentials"' in p for p in refusals)


def test_a_remembered_token_is_refused_once_it_expires(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = app.state.service
    client, _ = svc.clients.add("app", SCOPES)
    access, ttl = svc.issuer.issue(client)
    headers = {"Authorization": f"Bearer {access}"}
    with TestClient(app) as http:
        token = http.post("/v1/collections/profiles/records", json=US, headers=headers).json()
        assert _read(http, token["token"], headers).status_code == 200
        later = time.time() + ttl + 5
        monkeypatch.setattr(time, "time", lambda: later)
        assert _read(http, token["token"], headers).status_code == 401


def test_bearer_values_are_remembered_by_digest_only(app: Any) -> None:
    svc = app.state.service
    _, key = svc.clients.add("app", SCOPES, api_key=True)
    assert svc.bearer(key) is svc.bearer(key)  # the second from memory
    assert svc.bearer(key + "x") is None
    assert all(isinstance(k, bytes) and key.encode() not in k for k in svc._principals)


def _unexpected(monkeypatch: pytest.MonkeyPatch, fastapi: bool, folder: Path) -> Any:
    """A read whose work fails with an error no handler expects, on one path."""
    folder.mkdir()
    app = create_app(Domicile(init(folder)))
    _, key = app.state.service.clients.add("ops", ["admin"], api_key=True)
    headers = {"Authorization": f"Bearer {key}"}

    def broken(*args: Any) -> bytes:
        raise RuntimeError("a value that must not be shown")

    with monkeypatch.context() as m:
        if fastapi:
            m.setattr(fast, "ROUTES", {})
        with TestClient(app, raise_server_exceptions=False) as http:
            token = http.post("/v1/collections/profiles/records", json=US, headers=headers)
            m.setattr(native, "get_work", broken)
            r = _read(http, token.json()["token"], headers)
            metrics = app.state.service.metrics.exposition().decode()
    counted = [
        line
        for line in metrics.splitlines()
        if line.startswith("domicile_requests_total") and 'status="500"' in line
    ]
    return r.status_code, r.json(), r.headers["content-type"], counted


def test_an_unexpected_error_answers_as_through_fastapi(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    front = _unexpected(monkeypatch, False, tmp_path / "front")
    assert front == _unexpected(monkeypatch, True, tmp_path / "fastapi")
    status, document, _, counted = front
    assert status == 500
    assert document["code"] == "internal_error"
    assert "must not" not in json.dumps(document)
    assert counted == [
        'domicile_requests_total{method="GET",route="/v1/records/{token}",status="500"} 1.0'
    ]


def test_each_request_served_in_front_is_observed_once(
    app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    _, key = app.state.service.clients.add("app", SCOPES, api_key=True)
    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(app) as http, caplog.at_level(logging.INFO, logger="domicile.http"):
        token = http.post("/v1/collections/profiles/records", json=US, headers=headers).json()
        assert _read(http, token["token"], headers).status_code == 200
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "domicile.http"]
    requests = [(x["method"], x["route"], x["status"]) for x in lines if x["event"] == "request"]
    assert requests == [
        ("POST", "/v1/collections/{collection}/records", 201),
        ("GET", "/v1/records/{token}", 200),
    ]
    assert all(x["client"] for x in lines if x["event"] == "request")
    metrics = app.state.service.metrics.exposition().decode()
    assert 'domicile_requests_total{method="GET",route="/v1/records/{token}",status="200"} 1.0' in (
        metrics
    )
    assert 'domicile_decisions_total{outcome="allow"} 2.0' in metrics


def _site(backend: str, keys: str | None = None, provider: str | None = None) -> Any:
    spec = SimpleNamespace(kind=provider) if provider else None
    return SimpleNamespace(backend=backend, keys=keys, key_provider=spec)


@pytest.mark.parametrize(
    ("sites", "node", "inline"),
    [
        ([_site("sqlite:a"), _site("sqlite:b", "sqlite:k")], None, True),
        ([_site("sqlite:a", provider="keyring")], None, True),
        ([_site("sqlite:a"), _site("postgresql://u@h/db")], None, False),
        ([_site("sqlite:a", "postgresql://u@h/keys")], None, False),
        ([_site("sqlite:a", provider="transit")], None, False),
        ([_site("sqlite:a")], "us", False),
    ],
)
def test_single_reads_are_served_on_the_loop_only_when_nothing_is_remote(
    sites: list[Any], node: str | None, inline: bool
) -> None:
    vault = SimpleNamespace(node=node, config=SimpleNamespace(sites=sites))
    assert deps.on_this_machine(vault) is inline  # type: ignore[arg-type]


def test_the_starter_deployment_serves_single_reads_on_the_loop(app: Any) -> None:
    assert app.state.service.inline


def test_a_single_read_goes_to_the_executor_while_a_write_runs_there(app: Any) -> None:
    """A write on the executor may hold a site's database: a read that arrives meanwhile
    waits for it on a thread, not on the event loop, where it would hold up every other
    request; once the executor is idle, single reads run on the loop again."""
    svc = app.state.service
    assert svc.inline

    async def main() -> tuple[int, int, int, int]:
        here = threading.get_ident()
        started, release = threading.Event(), threading.Event()

        def write() -> int:
            started.set()
            release.wait(10)
            return threading.get_ident()

        writing = asyncio.ensure_future(svc.run(write))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
        during = await svc.run_single(threading.get_ident)
        release.set()
        await writing
        after = await svc.run_single(threading.get_ident)
        return here, during, after, svc._running

    here, during, after, running = asyncio.run(main())
    assert during != here
    assert after == here
    assert running == 0
