"""A site's keys in HashiCorp Vault Transit, through hvac.

Tested against the documented Transit HTTP API, not a Vault server: no Vault server can
run here, so ``transit_server.py`` serves that API (over real TLS) in this process.
"""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from domicile.crypto.custody import KeyProviderUnavailable
from domicile.crypto.envelope import key_context
from domicile.crypto.errors import DecryptionFailed, KeyringError
from domicile.crypto.providers import site_status
from domicile.errors import ExitCode, MissingExtra
from domicile.vault import Domicile

from .deploy import ANNA, RU, US, deploy, transit_provider
from .transit_server import TransitServer


@pytest.fixture
def transit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TransitServer]:
    folder = tmp_path / "transit"
    folder.mkdir()
    server = TransitServer(folder)
    monkeypatch.setenv("VAULT_TOKEN", server.token)
    yield server
    server.stop()


@pytest.fixture
def kms_vault(tmp_path: Path, transit: TransitServer) -> Iterator[Domicile]:
    config = deploy(tmp_path / "deploy", transit_provider(transit.url, ca=str(transit.ca)))
    d = Domicile(config)
    yield d
    d.close()


def test_records_round_trip_through_transit(kms_vault: Domicile, transit: TransitServer) -> None:
    assert set(transit.keys) == {"domicile-ru", "domicile-ru-sealed"}
    assert all(k.derived for k in transit.keys.values())
    transit.requests.clear()
    put = kms_vault.put("profiles", subject=RU, fields=ANNA, purpose="account_signup")
    assert put.site == "ru"
    assert ("POST", "/v1/transit/encrypt/domicile-ru") in transit.requests
    kms_vault.close()  # forget the cached data key: the next read unwraps through Transit
    transit.requests.clear()
    assert kms_vault.get(put.token, purpose="profile_view", as_site="ru").fields == ANNA
    assert ("POST", "/v1/transit/decrypt/domicile-ru") in transit.requests
    found = kms_vault.find(
        "profiles", where={"email": ANNA["email"]}, purpose="lookup", as_site="ru"
    )
    assert [r.fields["city"] for r in found.records] == [ANNA["city"]]
    assert all(r.ok for r in kms_vault.verify_audit())


def test_a_wrapped_key_is_transit_ciphertext_bound_to_its_context(kms_vault: Domicile) -> None:
    ctx = key_context("ru", "subject-a")
    version, wrapped = kms_vault.keys.wrap("ru", b"d" * 32, ctx)
    assert version == 1
    assert wrapped.startswith(b"vault:v1:")
    assert kms_vault.keys.unwrap("ru", 1, wrapped, ctx) == b"d" * 32
    with pytest.raises(DecryptionFailed):
        kms_vault.keys.unwrap("ru", 1, wrapped, key_context("ru", "subject-b"))
    with pytest.raises(DecryptionFailed):  # the version recorded must be the ciphertext's
        kms_vault.keys.unwrap("ru", 2, wrapped, ctx)
    with pytest.raises(DecryptionFailed):
        kms_vault.keys.unwrap("ru", 1, b"\xff" + wrapped, ctx)


def test_rotation_and_retirement_through_min_decryption_version(
    kms_vault: Domicile, transit: TransitServer
) -> None:
    put = kms_vault.put("profiles", subject=RU, fields=ANNA, purpose="account_signup")
    ctx = key_context("ru", "someone")
    _, old = kms_vault.keys.wrap("ru", b"o" * 32, ctx)
    out = kms_vault.rotate_key("ru", grace=0)
    assert (out["from_version"], out["to_version"], out["rewrapped"], out["retired"]) == (
        1, 2, 1, [1],
    )  # fmt: skip
    key = transit.keys["domicile-ru"]
    assert (key.latest, key.min_decryption_version) == (2, 2)
    assert kms_vault.keys.versions("ru") == [2]  # type: ignore[attr-defined]
    with pytest.raises(KeyringError, match="retired"):
        kms_vault.keys.unwrap("ru", 1, old, ctx)
    kms_vault.close()
    assert kms_vault.get(put.token, purpose="profile_view", as_site="ru").fields == ANNA
    assert set(kms_vault.keystore("ru").versions()) == {2}


def test_versions_retire_oldest_first(kms_vault: Domicile, transit: TransitServer) -> None:
    ctx = key_context("ru", "s")
    _, w1 = kms_vault.keys.wrap("ru", b"1" * 32, ctx)
    kms_vault.keys.rotate("ru")
    kms_vault.keys.rotate("ru")
    assert kms_vault.keys.versions("ru") == [1, 2, 3]  # type: ignore[attr-defined]
    kms_vault.keys.retire("ru", 2)  # version 1 still decrypts: 2 waits
    assert kms_vault.keys.versions("ru") == [1, 2, 3]  # type: ignore[attr-defined]
    assert kms_vault.keys.unwrap("ru", 1, w1, ctx) == b"1" * 32
    kms_vault.keys.retire("ru", 1)
    kms_vault.keys.retire("ru", 2)
    assert kms_vault.keys.versions("ru") == [3]  # type: ignore[attr-defined]
    assert transit.keys["domicile-ru"].min_decryption_version == 3
    with pytest.raises(KeyringError, match="current"):
        kms_vault.keys.retire("ru", 3)


def test_no_transit_key_and_no_plaintext_secret_in_any_deployment_file(
    kms_vault: Domicile, transit: TransitServer, tmp_path: Path
) -> None:
    for _ in range(3):
        kms_vault.put("profiles", subject=RU, fields=ANNA, purpose="account_signup")
    kms_vault.rotate_key("ru", grace=0)
    from cryptography.hazmat.primitives import serialization

    secrets = [v for k in transit.keys.values() for v in k.versions.values()]
    secrets.append(kms_vault.keys.index_key("ru"))
    secrets.append(
        kms_vault.keys.signing_key("ru").private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
    )  # fmt: skip
    files = [p for p in (tmp_path / "deploy").rglob("*") if p.is_file()]
    assert any(p.name == "ru.sealed.json" for p in files)
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            for form in (secret, base64.b64encode(secret), secret.hex().encode()):
                assert form not in data, f"key material of site ru is in {path}"


def test_vault_sealed_refused_token_or_gone_makes_only_its_site_unavailable(
    tmp_path: Path, transit: TransitServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = deploy(tmp_path / "deploy", transit_provider(transit.url, ca=str(transit.ca)))

    def attempt(words: str) -> None:
        with Domicile(config) as d:
            with pytest.raises(KeyProviderUnavailable) as info:
                d.put("profiles", subject=RU, fields=ANNA, purpose="account_signup")
            assert words in info.value.message
            assert info.value.exit_code == ExitCode.UNAVAILABLE
            assert transit.token not in str(info.value)
            put = d.put("profiles", subject=US, fields=ANNA, purpose="account_signup")
            assert d.get(put.token, purpose="profile_view", as_site="us").fields == ANNA
            assert site_status(d.keys, "ru")["answers"] is False
            assert site_status(d.keys, "us")["answers"] is True

    transit.down = True
    attempt("is not serving")
    transit.down = False
    monkeypatch.setenv("VAULT_TOKEN", "s.not-the-token")
    attempt("refused the token in $VAULT_TOKEN")
    monkeypatch.setenv("VAULT_TOKEN", transit.token)
    transit.stop()
    attempt("does not answer")


def test_a_server_whose_certificate_is_not_trusted_is_not_used(
    tmp_path: Path, transit: TransitServer
) -> None:
    config = deploy(tmp_path / "deploy", transit_provider(transit.url, ca=str(transit.ca)))
    untrusting = tmp_path / "deploy" / "domicile.yaml"
    untrusting.write_text(untrusting.read_text().replace(f', ca: "{transit.ca}"', ""))
    with Domicile.open(untrusting) as d, pytest.raises(KeyProviderUnavailable) as info:
        d.put("profiles", subject=RU, fields=ANNA, purpose="account_signup")
    assert "does not answer" in info.value.message
    assert config.site("ru").key_provider is not None


def test_a_missing_kms_extra_says_which_to_install(
    tmp_path: Path, transit: TransitServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = deploy(tmp_path / "deploy", transit_provider(transit.url, ca=str(transit.ca)))
    monkeypatch.setitem(sys.modules, "hvac", None)  # as if hvac were not installed
    with Domicile(config) as d, pytest.raises(MissingExtra) as info:
        d.put("profiles", subject=RU, fields=ANNA, purpose="account_signup")
    assert info.value.hint == "pip install 'domicile[kms]'"
    assert os.environ["VAULT_TOKEN"] not in str(info.value)
