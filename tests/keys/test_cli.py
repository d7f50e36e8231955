"""`domicile keys status` and `domicile keys rotate` through each provider, as commands in
processes of their own (which see every SoftHSM2 token of the session)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import PIN, Tokens
from .deploy import pkcs11_provider, transit_provider, write
from .transit_server import TransitServer

DOMICILE = str(Path(sys.executable).with_name("domicile"))


def run(config: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    full = {**os.environ, "COLUMNS": "250", **(env or {})}
    done = subprocess.run(
        [DOMICILE, *args, "--config", str(config)],
        capture_output=True, text=True, env=full, timeout=120,
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout, done.stderr


def put(config: Path, citizenship: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    return run(
        config, "put", "profiles", "--subject", f"citizenship={citizenship}",
        "--field", "full_name=Anna Volkova", "--field", "email=anna@example.ru",
        "--purpose", "account_signup", "--quiet", env=env,
    )  # fmt: skip


def status(config: Path, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    code, out, _ = run(config, "keys", "status", "--json", env=env)
    doc = json.loads(out)
    return code, {r["site"]: r for r in doc["sites"]}


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def hsm_config(tmp_path: Path, softhsm: Tokens, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DOMICILE_PKCS11_PIN", PIN)
    config = write(tmp_path / "deploy", pkcs11_provider(softhsm.take()))
    code, _, err = run(config, "sites", "create", "--all")
    assert code == 0, err
    return config


def test_status_and_rotation_through_a_pkcs11_token(hsm_config: Path) -> None:
    code, token, err = put(hsm_config, "RU")
    assert code == 0, err
    code, sites = status(hsm_config)
    assert code == 0
    assert (sites["ru"]["provider"], sites["ru"]["current_version"]) == ("pkcs11", 1)
    assert sites["ru"]["answers"] is True
    assert sites["us"]["provider"] == "keyring"
    code, out, err = run(hsm_config, "keys", "rotate", "--site", "ru", "--grace", "0", "--json")
    assert code == 0, err
    rotated = json.loads(out)
    assert (rotated["to_version"], rotated["rewrapped"], rotated["retired"]) == (2, 1, [1])
    code, sites = status(hsm_config)
    assert (sites["ru"]["current_version"], sites["ru"]["versions"]) == (2, [2])
    code, out, err = run(
        hsm_config, "get", token.strip(), "--purpose", "profile_view", "--as-site", "ru", "--json"
    )
    assert code == 0, err
    assert json.loads(out)["fields"]["full_name"] == "Anna Volkova"
    code, out, _ = run(hsm_config, "keys", "status")
    assert "ru: pkcs11 token" in out
    assert "current v2" in out


def test_a_wrong_pin_makes_the_site_unavailable_and_the_others_work(hsm_config: Path) -> None:
    wrong = {"DOMICILE_PKCS11_PIN": "not-the-pin"}
    before = snapshot(hsm_config.parent)
    code, sites = status(hsm_config, env=wrong)
    assert code == 4
    assert sites["ru"]["answers"] is False
    assert "refused the user PIN in $DOMICILE_PKCS11_PIN" in sites["ru"]["error"]["message"]
    assert sites["us"]["answers"] is True
    assert snapshot(hsm_config.parent) == before  # `keys status` reads only
    code, out, err = run(hsm_config, "keys", "status", env=wrong)
    assert code == 4
    assert "DOWN  ru:" in out
    assert "not-the-pin" not in out + err
    code, _, err = put(hsm_config, "RU", env=wrong)
    assert code == 4
    assert err.startswith("error: site 'ru' is unavailable: the PKCS#11 token")
    assert len(err.strip().splitlines()) == 1
    code, _, err = put(hsm_config, "US", env=wrong)
    assert code == 0, err
    code, _, err = run(hsm_config, "keys", "rotate", "--site", "ru", "--grace", "0", env=wrong)
    assert code == 4
    code, out, _ = run(
        hsm_config, "keys", "rotate", "--site", "ru", "--json", env={"DOMICILE_PKCS11_PIN": ""}
    )
    assert code == 4
    assert json.loads(out)["error"]["code"] == "key_provider_unavailable"


@pytest.fixture
def transit(tmp_path: Path) -> Iterator[TransitServer]:
    folder = tmp_path / "transit"
    folder.mkdir()
    server = TransitServer(folder)
    yield server
    server.stop()


def test_status_and_rotation_through_vault_transit(tmp_path: Path, transit: TransitServer) -> None:
    """Against the documented Transit API served by the test, not a Vault server."""
    env = {"VAULT_TOKEN": transit.token}
    config = write(tmp_path / "deploy", transit_provider(transit.url, ca=str(transit.ca)))
    code, _, err = run(config, "sites", "create", "--all", env=env)
    assert code == 0, err
    code, _, err = put(config, "RU", env=env)
    assert code == 0, err
    code, sites = status(config, env=env)
    assert code == 0
    assert (sites["ru"]["provider"], sites["ru"]["current_version"]) == ("transit", 1)
    code, out, err = run(
        config, "keys", "rotate", "--site", "ru", "--grace", "0", "--json", env=env
    )
    assert code == 0, err
    assert json.loads(out)["retired"] == [1]
    assert transit.keys["domicile-ru"].min_decryption_version == 2
    code, sites = status(config, env=env)
    assert (sites["ru"]["current_version"], sites["ru"]["versions"]) == (2, [2])
    transit.down = True
    code, sites = status(config, env=env)
    assert code == 4
    assert sites["ru"]["answers"] is False
    assert sites["de"]["answers"] is True


def test_a_rotation_by_another_process_takes_effect_here(hsm_config: Path) -> None:
    """A server keeps running while `keys rotate` runs beside it: its next wrap uses the
    new token key, and what it read before is still read."""
    from domicile.crypto.envelope import key_context
    from domicile.vault import Domicile

    with Domicile.open(hsm_config) as d:
        put = d.put("profiles", subject={"citizenship": "RU"}, fields={"full_name": "Anna"},
                    purpose="account_signup")  # fmt: skip
        assert d.keys.current_version("ru") == 1
        code, _, err = run(hsm_config, "keys", "rotate", "--site", "ru", "--grace", "0")
        assert code == 0, err
        deadline = 50  # REFRESH is 50 ms; a loaded machine may take longer to look
        while d.keys.current_version("ru") != 2 and deadline:
            time.sleep(0.1)
            deadline -= 1
        assert d.keys.wrap("ru", b"k" * 32, key_context("ru", "new"))[0] == 2
        assert d.keys.versions("ru") == [2]  # type: ignore[attr-defined]
        d.close()  # forget cached data keys: the read unwraps with the token's new key
        assert d.get(put.token, purpose="profile_view", as_site="ru").fields == {
            "full_name": "Anna"
        }
