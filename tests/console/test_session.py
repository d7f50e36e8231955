"""Console sessions and forms without a browser: the cookie's Secure flag over https,
forged, foreign and expired sessions, and the sign-in form's own CSRF token."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from domicile.clients import hash_secret
from domicile.console.session import COOKIE, Sessions
from domicile.deploy.starter import init
from domicile.http.app import create_app
from domicile.vault import Domicile


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[TestClient, str, str, Sessions]]:
    vault = Domicile(init(tmp_path))
    application = create_app(vault)
    client, secret = application.state.service.clients.add("officer", ["admin"])
    sessions = Sessions(vault.keys.token_key(), vault.config.model.environment_id)
    with TestClient(application, base_url="https://testserver") as http:
        yield http, client.id, secret, sessions


def _sign_in(http: TestClient, client_id: str, secret: str) -> str:
    form = http.get("/console/signin").text
    found = re.search(r'name="csrf" value="([^"]+)"', form)
    assert found is not None
    r = http.post(
        "/console/signin",
        data={"csrf": found.group(1), "client_id": client_id, "client_secret": secret},
        follow_redirects=False,
    )
    assert r.status_code == 303
    return _session_cookie(r.headers.get_list("set-cookie"))


def _session_cookie(headers: list[str]) -> str:
    """The session's Set-Cookie header, or "" when none sets it."""
    return next((h for h in headers if h.startswith(COOKIE + "=")), "")


def test_over_https_the_cookie_is_secure_http_only_and_strict(
    app: tuple[TestClient, str, str, Sessions],
) -> None:
    http, client_id, secret, _ = app
    flags = [f.strip().lower() for f in _sign_in(http, client_id, secret).split(";")]
    assert "secure" in flags
    assert "httponly" in flags
    assert "samesite=strict" in flags
    assert http.get("/console/audit").status_code == 200


def test_forged_foreign_and_expired_sessions_are_not_signed_in(
    app: tuple[TestClient, str, str, Sessions], tmp_path: Path
) -> None:
    http, client_id, _, sessions = app
    stamp = http.app.state.service.clients.session_stamp(client_id)  # type: ignore[attr-defined]
    assert stamp is not None
    assert sessions.read(sessions.issue(client_id, stamp)) is not None
    other = Sessions(b"\x01" * 32, "default")  # another deployment's key
    for cookie in (
        other.issue(client_id, stamp),
        sessions.issue(client_id, stamp, ttl=-10),
        sessions.issue(client_id, stamp)[:-2] + "AA",
        sessions.issue(client_id, "0$another"),  # bound to another secret or generation
        sessions.issue("dc_no_such_client", stamp),
        "dcs1.e30.x",
        "garbage",
    ):
        http.cookies.set(COOKIE, cookie, domain="testserver.local", path="/console")
        r = http.get("/console/audit", follow_redirects=False)
        assert r.status_code == 303, cookie
        assert r.headers["location"] == "/console/signin"
        http.cookies.clear()


def test_sign_in_needs_the_forms_token_and_the_right_secret(
    app: tuple[TestClient, str, str, Sessions],
) -> None:
    http, client_id, secret, _ = app
    r = http.post("/console/signin", data={"client_id": client_id, "client_secret": secret})
    assert r.status_code == 403
    assert _session_cookie(r.headers.get_list("set-cookie")) == ""
    form = http.get("/console/signin").text
    token = re.search(r'name="csrf" value="([^"]+)"', form)
    assert token is not None
    r = http.post(
        "/console/signin",
        data={"csrf": token.group(1), "client_id": client_id, "client_secret": "wrong"},
    )
    assert r.status_code == 401
    assert "Traceback" not in r.text
    assert _session_cookie(r.headers.get_list("set-cookie")) == ""


def test_console_routes_are_not_in_the_openapi_document(
    app: tuple[TestClient, str, str, Sessions],
) -> None:
    http, *_ = app
    paths = http.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith(("/console", "/docs", "/redoc"))]


def test_the_audit_page_names_the_first_bad_entry(
    app: tuple[TestClient, str, str, Sessions], tmp_path: Path
) -> None:
    http, client_id, secret, _ = app
    vault: Domicile = http.app.state.service.vault  # type: ignore[attr-defined]
    for i in range(3):
        vault.put(
            "profiles", subject={"citizenship": "RU"},
            fields={"full_name": f"Person {i}", "email": f"p{i}@example.org"}, purpose="signup",
        )  # fmt: skip
    _sign_in(http, client_id, secret)
    assert "tampered" not in http.get("/console/audit").text
    with sqlite3.connect(tmp_path / "domicile-data" / "ru.sqlite") as db:  # an attacker's view
        db.execute("DROP TRIGGER audit_append_only_update")
        db.execute("UPDATE audit SET payload = '{}' WHERE seq = 2")
    vault.put(  # the log grows, so the page verifies it again
        "profiles", subject={"citizenship": "RU"},
        fields={"full_name": "Person 4", "email": "p4@example.org"}, purpose="signup",
    )  # fmt: skip
    page = http.get("/console/audit").text
    deadline = time.monotonic() + 10
    while "tampered" not in page and time.monotonic() < deadline:
        time.sleep(0.1)  # the newer entries are verified in the background
        page = http.get("/console/audit").text
    assert "tampered" in page
    assert "entry 2:" in page


def _csrf_of(http: TestClient) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', http.get("/console/audit").text)
    assert found is not None
    return found.group(1)


def _signed_in_with(http: TestClient, cookie: str) -> bool:
    http.cookies.clear()
    http.cookies.set(COOKIE, cookie, domain="testserver.local", path="/console")
    r = http.get("/console/audit", follow_redirects=False)
    http.cookies.clear()
    return r.status_code == 200


def test_a_cookie_kept_after_sign_out_or_a_secret_change_is_not_signed_in(
    app: tuple[TestClient, str, str, Sessions], tmp_path: Path
) -> None:
    http, client_id, secret, _ = app
    _sign_in(http, client_id, secret)
    kept = http.cookies.get(COOKIE)
    assert kept
    assert _signed_in_with(http, kept)
    # Sign out; someone who copied the cookie before keeps it.
    http.cookies.set(COOKIE, kept, domain="testserver.local", path="/console")
    r = http.post("/console/signout", data={"csrf": _csrf_of(http)}, follow_redirects=False)
    assert r.status_code == 303
    assert not _signed_in_with(http, kept)
    # Sign in again, then the client's secret changes (as an operator rotates it by hand).
    _sign_in(http, client_id, secret)
    kept = http.cookies.get(COOKIE)
    assert kept
    assert _signed_in_with(http, kept)
    clients = tmp_path / "domicile-data" / "clients.json"
    data = json.loads(clients.read_text())
    data["clients"][client_id]["secret_hash"] = hash_secret("ds_" + "n" * 43)
    clients.write_text(json.dumps(data) + " " * 8)  # another size: the registry re-reads it
    assert not _signed_in_with(http, kept)
    http.cookies.clear()
    assert _sign_in(http, client_id, "ds_" + "n" * 43)


def test_the_menu_lists_a_page_only_with_every_scope_the_page_needs(
    app: tuple[TestClient, str, str, Sessions],
) -> None:
    http, *_ = app
    clients = http.app.state.service.clients  # type: ignore[attr-defined]
    for scopes, shown, refused in (
        (["records:read", "audit:read"], [], ["subjects", "evidence"]),
        (["records:read", "records:export"], [], ["subjects"]),  # not for the lookup's purpose
        (["records:read", "records:export", "purpose:subject_access"], ["subjects"], ["evidence"]),
        (["audit:read", "transfers:read"], ["evidence"], ["subjects"]),
    ):
        client, secret = clients.add("limited", scopes)
        http.cookies.clear()
        _sign_in(http, client.id, secret)
        menu = http.get("/console/audit" if "audit:read" in scopes else "/console").text
        menu = menu.split('<nav aria-label="Pages">')[1].split("</nav>")[0]
        for page in shown:
            assert f'href="/console/{page}"' in menu, (scopes, page)
            assert http.get(f"/console/{page}").status_code == 200, (scopes, page)
        for page in refused:
            assert f'href="/console/{page}"' not in menu, (scopes, page)
            assert http.get(f"/console/{page}").status_code == 403, (scopes, page)


def test_only_a_signed_in_client_starts_the_warm_up(
    app: tuple[TestClient, str, str, Sessions],
) -> None:
    http, client_id, secret, _ = app
    state = http.app.state  # type: ignore[attr-defined]
    for _ in range(3):
        assert http.get("/console/signin").status_code == 200
    http.post("/console/signin", data={"client_id": client_id, "client_secret": secret})
    assert state.console._warmed is False  # no verification of every log for strangers
    _sign_in(http, client_id, secret)
    assert state.console._warmed is True


def test_the_data_maps_links_carry_the_flows_kind_encoded() -> None:
    from domicile.console.pages import templates

    flow = {"from": "US", "to": "DE", "kind": "a&to=RU #x", "transfers": 1, "subjects": 1}
    html = templates.get_template("map.html").render(
        who=None, nav=[], page="map", csrf="", sites=[], flows=[flow],
        diagram={"arrows": [], "nodes": []},
    )  # fmt: skip
    assert 'href="/console/transfers?to=DE&amp;kind=a%26to%3DRU%20%23x"' in html
