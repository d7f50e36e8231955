"""Issue 8, finding 11: what domicile keeps on disk is for its owner only, whatever the umask.

Site databases, key stores, their WAL and SHM files, the keyring, the deployment registry,
heads files and the registries of clients and filings: mode 0600, in folders of mode 0700.
Each test runs the real ``domicile`` (the CLI, and ``domicile serve`` on the embedded
default) under a umask of 000, which would otherwise leave every file readable and
writable by everyone, and looks at every file and folder it made.

Also: ``domicile serve`` shows the demo client's secret only when it makes it, and the demo
client can do what the README's walkthrough does, and nothing more.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from domicile.config import load_config
from domicile.vault import Domicile

from .domicile_process import Served, cli

OPEN_UMASK = 0o000  # the worst case: files as the code asks for them, nothing taken away


def wrong_modes(root: Path) -> dict[str, str]:
    """Every file not 0600 and every folder not 0700 under ``root`` (``root`` included)."""
    wrong = {}
    for path in [root, *sorted(root.rglob("*"))]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        want = 0o700 if path.is_dir() else 0o600
        if mode != want:
            wrong[str(path.relative_to(root.parent))] = oct(mode)
    return wrong


def names(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def open_umask() -> Iterator[None]:
    """This process under umask 000 for the test (what the CLI's children get too)."""
    before = os.umask(OPEN_UMASK)
    try:
        yield
    finally:
        os.umask(before)


def test_init_and_writes_leave_only_private_files(tmp_path: Path, open_umask: None) -> None:
    root = tmp_path / "deploy"
    config = root / "domicile.yaml"

    def run(*args: str) -> dict[str, object]:
        done = cli(*args, "--json", "--config", str(config), umask=OPEN_UMASK)
        assert done.code == 0, done.err + done.out
        out: dict[str, object] = json.loads(done.out)
        return out

    done = cli("init", str(root), "--json", umask=OPEN_UMASK)
    assert done.code == 0, done.err
    assert wrong_modes(root) == {}
    assert {"domicile-data/deployment.json", "domicile-data/keyring.json",
            "domicile-data/ru.sqlite", "domicile-data/keys/ru.sqlite"} <= names(root)  # fmt: skip

    written = run(
        "put", "profiles", "--subject", "citizenship=RU", "--field", "full_name=Anna Volkova",
        "--field", "email=anna@example.ru", "--purpose", "account_signup",
    )  # fmt: skip
    run("put", "profiles", "--subject", "citizenship=US", "--field", "full_name=Jane Roe", "--purpose", "account_signup")  # fmt: skip
    run("get", str(written["token"]), "--purpose", "profile_view", "--as-site", "ru")
    run("filings", "add", "ru.art12_notice=2025-03-03")
    run("clients", "add", "app", "--scope", "records:read")
    run("audit", "witness")
    run("audit", "heads", "--out", str(root / "heads.json"))  # what an operator keeps
    run("erase", str(written["token"]))
    assert {"heads.json", "domicile-data/clients.json",
            "domicile-data/filings.json"} <= names(root)  # fmt: skip
    assert wrong_modes(root) == {}

    # While a vault has the sites open, their write-ahead logs and shared-memory files exist.
    with Domicile.open(config) as vault:
        vault.put(
            "profiles", subject={"citizenship": "DE", "residence": "DE"},
            fields={"full_name": "Dieter D"}, purpose="account_signup",
        )  # fmt: skip
        vault.keystore("ru")
        live = names(root)
        assert {"domicile-data/de.sqlite-wal", "domicile-data/de.sqlite-shm",
                "domicile-data/keys/de.sqlite-wal"} <= live  # fmt: skip
        assert wrong_modes(root) == {}
    assert wrong_modes(root) == {}


def token(base: str, client_id: str, client_secret: str) -> str:
    basic = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
    req = urllib.request.Request(
        base + "/oauth2/token", data=b"grant_type=client_credentials",
        headers={"Authorization": f"Basic {basic}"}, method="POST",
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=30) as r:
        access: str = json.loads(r.read())["access_token"]
        return access


def test_serve_on_the_embedded_default_leaves_only_private_files(
    tmp_path: Path, open_umask: None
) -> None:
    """``domicile serve`` from a folder with no configuration: it sets up
    ``./domicile-service`` once (through ``init``), makes the demo client, serves."""
    first = Served(tmp_path, "--sample", umask=OPEN_UMASK)
    try:
        first.start()
        root = tmp_path / "domicile-service"
        creds = json.loads((root / "demo-client.json").read_text())
        shown = first.output()
        assert creds["client_secret"] in shown  # shown once, when it is made
        first.headers = {"Authorization": f"Bearer {token(first.url, **creds)}"}

        # The README's walkthrough, and no more than it.
        body = {
            "subject": {"citizenship": "RU"}, "purpose": "account_signup",
            "fields": {"full_name": "Anna Volkova", "email": "anna@example.ru"},
        }  # fmt: skip
        r = first.request("POST", "/v1/collections/profiles/records", body)
        assert r.status == 201, r.body
        record = urllib.parse.quote(r.body["token"])
        r = first.request("GET", f"/v1/records/{record}?purpose=profile_view")
        assert r.status == 200, r.body
        assert r.body["fields"]["full_name"] == "A. V."  # read from the US: masked
        for method, path in (
            ("DELETE", f"/v1/records/{record}?purpose=profile_view"),
            ("GET", "/v1/transfers"),
            ("GET", "/v1/filings"),
            ("GET", f"/v1/records/{record}?purpose=marketing"),
        ):
            assert first.request(method, path).status == 403, (method, path)

        live = names(root)
        assert {"domicile-data/us.sqlite-wal", "domicile-data/us.sqlite-shm"} <= live
        assert wrong_modes(root) == {}
    finally:
        first.stop()
    assert "demo-client.json" in names(root)
    assert wrong_modes(root) == {}

    again = Served(tmp_path, umask=OPEN_UMASK)
    try:
        again.start()
        assert creds["client_secret"] not in again.output()  # never shown a second time
        assert creds["client_id"] in again.output()
    finally:
        again.stop()
    assert wrong_modes(root) == {}
    config = load_config(root / "domicile.yaml")
    assert config.registry_path.is_file()
