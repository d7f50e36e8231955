"""Finding 10: inputs that crashed the service or the CLI with an untyped error.

- ``/oauth2/token`` with ``scope="   "`` raised IndexError (a 500);
- an InCountry date such as ``9999-12-31T23:59:59-23:59`` (after year 9999 in UTC) raised
  OverflowError (a 500), in a record's ``expires_at`` and in find filters;
- a sealed blob altered in the database made the CLI die with a raw ``struct.error``.

Each is sent as an attacker would (HTTP to the service; the CLI against real files whose
bytes were changed) and must come back as a typed 4xx, or as ``decryption_failed``."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from domicile.config import load_config
from domicile.deploy.starter import init
from domicile.http.app import create_app
from domicile.vault import Domicile

from .conftest import Running

DOMICILE = Path(sys.executable).with_name("domicile")
LATE = "9999-12-31T23:59:59-23:59"
EARLY = "0001-01-01T00:00:00+01:00"


@pytest.fixture
def http(tmp_path: Path) -> TestClient:
    app = create_app(Domicile(init(tmp_path)))
    return TestClient(app)


def admin(http: TestClient) -> dict[str, str]:
    app: object = http.app
    _, key = app.state.service.clients.add("ops", ["admin"], api_key=True)  # type: ignore[attr-defined]
    return {"Authorization": f"Bearer {key}", "x-env-id": "default"}


@pytest.mark.parametrize("scope", ["   ", "\t", " \n "])
def test_a_blank_token_scope_is_bad_input(http: TestClient, scope: str) -> None:
    app: object = http.app
    client, secret = app.state.service.clients.add("app", ["sites:read"])  # type: ignore[attr-defined]
    with http:
        r = http.post(
            "/oauth2/token", data={"grant_type": "client_credentials", "scope": scope},
            auth=(client.id, secret),
        )  # fmt: skip
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_scope"
    assert "scope" in r.json()["error_description"]


@pytest.mark.parametrize("when", [LATE, EARLY])
def test_dates_outside_the_calendar_in_utc_are_bad_input(http: TestClient, when: str) -> None:
    with http:
        headers = admin(http)
        r = http.post(
            "/v2/storage/records/us", json={"record_key": "k", "expires_at": when}, headers=headers
        )
        assert r.status_code == 400, r.text
        assert "expires_at" in r.json()["detail"]
        for flt in (
            {"expires_at": when},
            {"created_at": {"$gt": when}},
            {"updated_at": {"$not": [when]}},
        ):
            r = http.post("/v2/storage/records/us/find", json={"filter": flt}, headers=headers)
            assert r.status_code == 400, r.text
            assert r.json()["code"] == "bad_input"
        assert when not in r.text


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DOMICILE), *args, "--config", str(config), "--json"],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


def alter(path: Path, table: str, column: str, change: Callable[[bytes], bytes]) -> None:
    """Rewrite every value of a BLOB column, as someone with the database file could."""
    conn = sqlite3.connect(path)
    try:
        for rowid, value in conn.execute(f"SELECT rowid, {column} FROM {table}").fetchall():
            conn.execute(
                f"UPDATE {table} SET {column} = ? WHERE rowid = ?", (change(bytes(value)), rowid)
            )
        conn.commit()
    finally:
        conn.close()


# Ways to damage a record's blob of sealed fields: cut it short, make a field's stated
# length run past the end, give a field a name that is not UTF-8, flip a ciphertext byte.
DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "cut short": lambda b: b[:7],
    "length past the end": lambda b: b + b"\x05\xff",
    "name not utf-8": lambda b: b"\x02\xff\xfe\x00\x00\x00\x01" + b,
    "ciphertext flipped": lambda b: b[:40] + bytes([b[40] ^ 1]) + b[41:],
}


@pytest.fixture
def deployment(tmp_path: Path) -> tuple[Path, str]:
    """A deployment with one Russian record, made through the CLI; its config and token."""
    config = init(tmp_path / "d").source
    done = cli(
        Path(config), "put", "profiles", "--subject", "citizenship=RU",
        "--field", "full_name=Anna Volkova", "--purpose", "signup",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return Path(config), json.loads(done.stdout)["token"]


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_sealed_blob_is_decryption_failed(
    deployment: tuple[Path, str], damage: str
) -> None:
    config, token = deployment
    alter(config.parent / "domicile-data" / "ru.sqlite", "records", "fields", DAMAGE[damage])
    done = cli(config, "get", token, "--purpose", "view", "--as-site", "ru")
    assert done.returncode == 1, done.stdout + done.stderr
    assert json.loads(done.stdout)["error"]["code"] == "decryption_failed"
    assert "Traceback" not in done.stdout + done.stderr
    assert "struct" not in done.stdout + done.stderr

    # The same over HTTP: a typed answer, not an internal error.
    with TestClient(create_app(Domicile(load_config(config)))) as http:
        r = http.get(f"/v1/records/{token}", params={"purpose": "view"}, headers=admin(http))
    assert r.json()["code"] == "decryption_failed"
    assert "Anna" not in r.text


def test_a_damaged_wrapped_key_is_decryption_failed(deployment: tuple[Path, str]) -> None:
    config, token = deployment
    keys = config.parent / "domicile-data" / "keys" / "ru.sqlite"
    alter(keys, "subject_keys", "wrapped", lambda b: b[:5])
    done = cli(config, "get", token, "--purpose", "view", "--as-site", "ru")
    assert done.returncode == 1, done.stdout + done.stderr
    assert json.loads(done.stdout)["error"]["code"] == "decryption_failed"
    assert "Traceback" not in done.stderr


def test_a_real_service_answers_them_without_an_internal_error(
    serve: Callable[..., Running],
) -> None:
    served = serve()
    with served.http() as http:
        r = http.post(
            "/v2/storage/records/us/find", json={"filter": {"expires_at": LATE}},
            headers=served.admin,
        )  # fmt: skip
        assert r.status_code == 400
        r = http.post(
            "/oauth2/token", data={"grant_type": "client_credentials", "scope": "   "},
            auth=("dc_x", "y"),
        )  # fmt: skip
        assert r.status_code == 400
    served.stop()
    statuses = [e.get("status") for e in served.log_events() if e["event"] == "request"]
    assert 500 not in statuses
    assert "error" not in {e["event"] for e in served.log_events()}
