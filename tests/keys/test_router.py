"""Routing each site's calls to its provider; the keyring file stays the default."""

from __future__ import annotations

from pathlib import Path

import pytest

from domicile.config import load_config
from domicile.crypto.custody import KeyProviderUnavailable
from domicile.crypto.keys import LocalKeyring
from domicile.crypto.providers import SiteKeyRouter, key_provider
from domicile.errors import ConfigError
from domicile.vault import Domicile

from .conftest import PIN
from .deploy import ANNA, RU, US, deploy, pkcs11_provider, write
from .test_cli import run


def test_a_deployment_that_names_no_provider_keeps_the_keyring_itself(tmp_path: Path) -> None:
    config = deploy(tmp_path / "deploy")
    with Domicile(config) as d:
        assert type(d.keys) is LocalKeyring
        put = d.put("profiles", subject=RU, fields=ANNA, purpose="account_signup")
        assert d.get(put.token, purpose="profile_view", as_site="ru").fields == ANNA


def test_an_explicit_keyring_provider_is_the_default(tmp_path: Path) -> None:
    config = deploy(tmp_path / "deploy", "    key_provider: {kind: keyring}")
    assert type(key_provider(config, LocalKeyring(config.keyring_path))) is LocalKeyring


def test_keys_given_to_the_vault_are_used_as_they_are(tmp_path: Path, token: str) -> None:
    config = deploy(tmp_path / "deploy", pkcs11_provider(token))
    keyring = LocalKeyring(config.keyring_path)
    with Domicile(config, keys=keyring) as d:
        assert d.keys is keyring


def test_deployment_wide_secrets_stay_in_the_keyring_file(tmp_path: Path, token: str) -> None:
    config = deploy(tmp_path / "deploy", pkcs11_provider(token))
    keyring = LocalKeyring(config.keyring_path)
    router = key_provider(config, keyring)
    assert isinstance(router, SiteKeyRouter)
    assert router.token_key() == keyring.token_key()
    assert router.join_key() == keyring.join_key()
    assert router.kind("ru") == "pkcs11"
    assert router.kind("de") == "keyring"
    # The keyring file holds no keys of the site whose keys are in the token.
    assert "ru" not in keyring._data["sites"]
    assert {"de", "us"} <= set(keyring._data["sites"])


def test_a_node_routes_only_its_own_site(tmp_path: Path, token: str) -> None:
    """A federation's node holds only its own site's keys: another site's provider is
    never opened there (of that site it keeps public keys only)."""
    config = load_config(
        write(tmp_path / "deploy", pkcs11_provider(token), pkcs11_provider("de-token"))
    )
    keyring = LocalKeyring(config.keyring_path, create=True)
    on_ru = key_provider(config, keyring, node="ru")
    assert isinstance(on_ru, SiteKeyRouter)
    assert (on_ru.kind("ru"), on_ru.kind("de")) == ("pkcs11", "keyring")
    assert key_provider(config, keyring, node="us") is keyring


def test_a_refused_pin_is_not_tried_again_by_the_same_process(
    tmp_path: Path, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real HSM locks its user PIN after a few wrong tries: a running process that was
    refused does not keep trying. A process started with the right PIN works."""
    config_path = write(tmp_path / "deploy", pkcs11_provider(token, pin_env="RU_PIN"))
    # Set up in a process of its own (this one has not logged into the token yet).
    code, _, err = run(config_path, "sites", "create", "--all", env={"RU_PIN": PIN})
    assert code == 0, err
    monkeypatch.setenv("RU_PIN", "wrong-pin")
    with Domicile.open(config_path) as d:
        for _ in range(3):
            with pytest.raises(KeyProviderUnavailable, match="refused the user PIN in \\$RU_PIN"):
                d.put("profiles", subject=RU, fields=ANNA, purpose="account_signup")
            monkeypatch.setenv("RU_PIN", PIN)  # too late for this process's router
        put = d.put("profiles", subject=US, fields=ANNA, purpose="account_signup")
        assert d.get(put.token, purpose="profile_view", as_site="us").fields == ANNA
    with Domicile.open(config_path) as d:  # as a process started with the right PIN
        put = d.put("profiles", subject=RU, fields=ANNA, purpose="account_signup")
        assert d.get(put.token, purpose="profile_view", as_site="ru").fields == ANNA


@pytest.mark.parametrize(
    ("provider", "words"),
    [
        ("    key_provider: {kind: cloudhsm}", "key_provider"),
        ("    key_provider: {kind: pkcs11, token: t}", "module"),
        ('    key_provider: {kind: pkcs11, module: m, token: t, pin_env: "1 2"}', "pin_env"),
        ('    key_provider: {kind: transit, url: "vault:8200"}', "url"),
        ("    key_provider: {kind: transit, url: 'https://v', pin: '1234'}", "pin"),
    ],
)
def test_a_malformed_provider_is_refused_with_file_line_and_field(
    tmp_path: Path, provider: str, words: str
) -> None:
    path = write(tmp_path / "deploy", provider)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert words in str(info.value)
    assert info.value.line is not None
