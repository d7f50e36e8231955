"""A site's keys in a real SoftHSM2 token, through python-pkcs11 (in this process)."""

from __future__ import annotations

import base64
import gc
import json
import os
import sys
from pathlib import Path

import pkcs11
import pytest
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11

from domicile.crypto.custody import KeyProviderUnavailable
from domicile.crypto.envelope import key_context
from domicile.crypto.errors import DecryptionFailed, KeyringError
from domicile.crypto.providers import SiteKeyRouter, site_status
from domicile.errors import ExitCode, MissingExtra
from domicile.stores.base import SiteUnavailable
from domicile.vault import Domicile

from .conftest import PIN
from .deploy import ANNA, MODULE, RU, US, deploy, pkcs11_provider
from .scan import files_holding_key


def token_objects(label: str) -> dict[str, pkcs11.SecretKey]:
    """The token's secret keys by label, seen through a session of the test's own."""
    lib = pkcs11.lib(MODULE)
    token = lib.get_token(token_label=label)
    session = token.open()  # the process is logged in already (by the provider)
    return {
        obj.label: obj for obj in session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY})
    }


@pytest.fixture
def hsm_vault(tmp_path: Path, token: str):  # type: ignore[no-untyped-def]
    config = deploy(tmp_path / "deploy", pkcs11_provider(token))
    d = Domicile(config)
    yield d
    d.close()


def test_the_kek_is_made_in_the_token_and_never_leaves_it(hsm_vault: Domicile, token: str) -> None:
    keys = token_objects(token)
    assert set(keys) == {"domicile/ru/kek/1", "domicile/ru/seal"}
    for key in keys.values():
        assert key.key_type == KeyType.AES
        assert key[Attribute.VALUE_LEN] == 32
        assert key[Attribute.SENSITIVE] is True
        assert key[Attribute.EXTRACTABLE] is False
        assert key[Attribute.NEVER_EXTRACTABLE] is True
        assert key[Attribute.LOCAL] is True  # generated inside the token
        with pytest.raises(p11.AttributeSensitive):
            key[Attribute.VALUE]
    # Not even wrapped under another key of the token can it come out.
    lib = pkcs11.lib(MODULE)
    session = lib.get_token(token_label=token).open(rw=True)
    wrapper = session.generate_key(KeyType.AES, 256, template={Attribute.WRAP: True})
    with pytest.raises((p11.KeyUnextractable, p11.KeyNotWrappable)):
        wrapper.wrap_key(keys["domicile/ru/kek/1"], mechanism=Mechanism.AES_KEY_WRAP_PAD)


def test_records_round_trip_under_the_token(hsm_vault: Domicile) -> None:
    put = hsm_vault.put("profiles", subject=RU, fields=ANNA, purpose="account_signup")
    assert put.site == "ru"
    assert isinstance(hsm_vault.keys, SiteKeyRouter)
    assert hsm_vault.keys.kind("ru") == "pkcs11"
    assert hsm_vault.keys.kind("us") == "keyring"
    got = hsm_vault.get(put.token, purpose="profile_view", as_site="ru")
    assert got.fields == ANNA
    found = hsm_vault.find(
        "profiles", where={"email": ANNA["email"]}, purpose="lookup", as_site="ru"
    )  # the index key, unsealed from the token
    assert [r.fields["full_name"] for r in found.records] == [ANNA["full_name"]]
    assert all(r.ok for r in hsm_vault.verify_audit())  # heads signed with the unsealed key


def test_a_wrapped_key_is_bound_to_its_context(hsm_vault: Domicile) -> None:
    dek = os.urandom(32)
    version, wrapped = hsm_vault.keys.wrap("ru", dek, key_context("ru", "subject-a"))
    assert hsm_vault.keys.unwrap("ru", version, wrapped, key_context("ru", "subject-a")) == dek
    with pytest.raises(DecryptionFailed):
        hsm_vault.keys.unwrap("ru", version, wrapped, key_context("ru", "subject-b"))
    tampered = wrapped[:-1] + bytes([wrapped[-1] ^ 1])
    with pytest.raises(DecryptionFailed):
        hsm_vault.keys.unwrap("ru", version, tampered, key_context("ru", "subject-a"))
    with pytest.raises(DecryptionFailed):
        hsm_vault.keys.unwrap("ru", version, wrapped[:10], key_context("ru", "subject-a"))


def test_rotation_makes_a_new_token_key_current_and_retire_destroys_the_old(
    hsm_vault: Domicile, token: str
) -> None:
    first = hsm_vault.put("profiles", subject=RU, fields=ANNA, purpose="account_signup")
    old_dek = hsm_vault.keys.wrap("ru", b"k" * 32, key_context("ru", "someone"))
    assert old_dek[0] == 1
    out = hsm_vault.rotate_key("ru", grace=0)
    assert (out["from_version"], out["to_version"], out["rewrapped"]) == (1, 2, 1)
    assert out["retired"] == [1]
    assert set(token_objects(token)) == {"domicile/ru/kek/2", "domicile/ru/seal"}
    assert hsm_vault.keys.current_version("ru") == 2
    # What was wrapped with the retired key no longer unwraps anywhere.
    with pytest.raises(KeyringError):
        hsm_vault.keys.unwrap("ru", 1, old_dek[1], key_context("ru", "someone"))
    assert hsm_vault.get(first.token, purpose="profile_view", as_site="ru").fields == ANNA
    second = hsm_vault.put("profiles", subject=RU, fields=ANNA, purpose="account_signup")
    assert hsm_vault.get(second.token, purpose="profile_view", as_site="ru").fields == ANNA
    assert set(hsm_vault.keystore("ru").versions()) == {2}  # every subject key re-wrapped


def test_an_old_version_still_unwraps_until_it_is_retired(hsm_vault: Domicile) -> None:
    ctx = key_context("ru", "s")
    v1, w1 = hsm_vault.keys.wrap("ru", b"a" * 32, ctx)
    assert hsm_vault.keys.rotate("ru") == 2
    v2, w2 = hsm_vault.keys.wrap("ru", b"b" * 32, ctx)
    assert (v1, v2) == (1, 2)
    assert hsm_vault.keys.unwrap("ru", 1, w1, ctx) == b"a" * 32
    assert hsm_vault.keys.unwrap("ru", 2, w2, ctx) == b"b" * 32
    assert hsm_vault.keys.versions("ru") == [1, 2]  # type: ignore[attr-defined]
    with pytest.raises(KeyringError, match="current"):
        hsm_vault.keys.retire("ru", 2)
    hsm_vault.keys.retire("ru", 1)
    assert hsm_vault.keys.versions("ru") == [2]  # type: ignore[attr-defined]


def test_no_kek_bytes_and_no_plaintext_secret_in_any_file_the_deployment_writes(
    hsm_vault: Domicile, tmp_path: Path
) -> None:
    for _ in range(3):
        hsm_vault.put("profiles", subject=RU, fields=ANNA, purpose="account_signup")
    hsm_vault.rotate_key("ru", grace=0)
    hsm_vault.put("profiles", subject=US, fields=ANNA, purpose="account_signup")
    folder = tmp_path / "deploy"
    ctx = key_context("ru", "probe")
    _, by_token = hsm_vault.keys.wrap("ru", os.urandom(32), ctx)
    assert files_holding_key(folder, by_token, ctx) == []
    # The same search finds the keyring file's key-encryption key of the US site.
    _, by_keyring = hsm_vault.keys.wrap("us", os.urandom(32), key_context("us", "probe"))
    assert files_holding_key(folder, by_keyring, key_context("us", "probe")) == [
        folder / "data" / "keyring.json"
    ]
    # The index and signing keys are on disk only sealed: not raw, base64 or hex.
    from cryptography.hazmat.primitives import serialization

    secrets = [
        hsm_vault.keys.index_key("ru"),
        hsm_vault.keys.signing_key("ru").private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        ),
    ]
    for path in (p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        for secret in secrets:
            for form in (secret, base64.b64encode(secret), secret.hex().encode()):
                assert form not in data, f"a secret of site ru is in {path}"


def test_the_sealed_file_opens_only_under_its_own_token(
    tmp_path: Path, token: str, softhsm: object
) -> None:
    config = deploy(tmp_path / "deploy", pkcs11_provider(token))
    sealed = config.data_dir / "custody" / "ru.sealed.json"
    doc = json.loads(sealed.read_text())
    assert doc["site"] == "ru"
    assert oct(sealed.stat().st_mode & 0o777) == "0o600"
    # Another token's sealed file put in its place does not open.
    other = softhsm.take()  # type: ignore[attr-defined]
    elsewhere = deploy(tmp_path / "other", pkcs11_provider(other))
    sealed.write_bytes((elsewhere.data_dir / "custody" / "ru.sealed.json").read_bytes())
    with Domicile(config) as d, pytest.raises(SiteUnavailable) as info:
        d.put("profiles", subject=RU, fields=ANNA, purpose="account_signup")
    assert "do not open" in str(info.value)
    assert info.value.exit_code == ExitCode.UNAVAILABLE


@pytest.mark.parametrize(
    ("provider", "words"),
    [
        (pkcs11_provider("no-such-token"), "no PKCS#11 token 'no-such-token' is present"),
        (
            pkcs11_provider("x", module="/nonexistent/libpkcs11.so"),
            "module /nonexistent/libpkcs11.so is not there",
        ),
        (
            pkcs11_provider("x", pin_env="DOMICILE_UNSET_PIN"),
            "$DOMICILE_UNSET_PIN, which is not set",
        ),
    ],
)
def test_a_provider_that_does_not_answer_makes_its_site_unavailable_and_only_it(
    tmp_path: Path, token: str, provider: str, words: str
) -> None:
    deploy(tmp_path / "deploy", pkcs11_provider(token))
    cfg_path = tmp_path / "deploy" / "domicile.yaml"
    cfg_path.write_text(cfg_path.read_text().replace(pkcs11_provider(token), provider))
    with Domicile.open(cfg_path) as d:
        with pytest.raises(KeyProviderUnavailable) as info:
            d.put("profiles", subject=RU, fields=ANNA, purpose="account_signup")
        assert words in info.value.message
        assert info.value.exit_code == ExitCode.UNAVAILABLE
        assert PIN not in str(info.value)
        # The other sites work.
        put = d.put("profiles", subject=US, fields=ANNA, purpose="account_signup")
        assert d.get(put.token, purpose="profile_view", as_site="us").fields == ANNA
        health = {s.id: s for s in d.sites()}  # `domicile status`, `sites`, /readyz
        assert health["ru"].healthy is False
        assert words in (health["ru"].error or "")
        assert health["us"].healthy is True
        status = site_status(d.keys, "ru")
        assert status["answers"] is False
        assert status["error"]["code"] == "key_provider_unavailable"
        assert site_status(d.keys, "us")["answers"] is True


def test_a_missing_hsm_extra_says_which_to_install(
    tmp_path: Path, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = deploy(tmp_path / "deploy", pkcs11_provider(token))
    monkeypatch.setitem(sys.modules, "pkcs11", None)  # as if python-pkcs11 were not installed
    with Domicile(config) as d, pytest.raises(MissingExtra) as info:
        d.put("profiles", subject=RU, fields=ANNA, purpose="account_signup")
    assert info.value.hint == "pip install 'domicile[hsm]'"
    assert info.value.exit_code == ExitCode.BAD_INPUT


# python-pkcs11 marks a search active before the token accepts it; a search refused by a
# dead session is left active, and its finalizer then fails on the dead handle when it is
# collected ("Exception ignored in ... __del__"). Harmless, and python-pkcs11's own; it is
# collected inside this test (below), so that it is not reported in whichever test the
# garbage collector happens to run in.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_session_the_token_dropped_is_opened_again(hsm_vault: Domicile, token: str) -> None:
    """The token closes the session under the vault (as a reset does): that call finds the
    site unavailable, the next one logs in again and works."""
    from domicile.crypto import pkcs11 as provider

    put = hsm_vault.put("profiles", subject=RU, fields=ANNA, purpose="account_signup")
    ctx = key_context("ru", "after-reset")
    session = provider._sessions[(MODULE, token)][0]
    session.close()  # C_CloseSession: the handles the provider holds are dead now
    with pytest.raises(KeyProviderUnavailable, match="stopped answering"):
        hsm_vault.keys.wrap("ru", b"r" * 32, ctx)
    gc.collect()  # the search the dead session refused is finalized here (see above)
    version, wrapped = hsm_vault.keys.wrap("ru", b"r" * 32, ctx)
    assert hsm_vault.keys.unwrap("ru", version, wrapped, ctx) == b"r" * 32
    assert provider._sessions[(MODULE, token)][0] is not session
    hsm_vault.close()
    assert hsm_vault.get(put.token, purpose="profile_view", as_site="ru").fields == ANNA


def test_two_sites_share_one_token_and_keep_their_keys_apart(tmp_path: Path, token: str) -> None:
    config = deploy(tmp_path / "deploy", pkcs11_provider(token), pkcs11_provider(token))
    assert set(token_objects(token)) == {
        "domicile/ru/kek/1", "domicile/ru/seal", "domicile/de/kek/1", "domicile/de/seal",
    }  # fmt: skip
    with Domicile(config) as d:
        ru = d.put("profiles", subject=RU, fields=ANNA, purpose="account_signup")
        assert d.get(ru.token, purpose="profile_view", as_site="ru").fields == ANNA
        assert d.keys.index_key("ru") != d.keys.index_key("de")
        version, wrapped = d.keys.wrap("ru", b"x" * 32, key_context("ru", "s"))
        with pytest.raises(DecryptionFailed):  # de's key does not open ru's wrapping
            d.keys.unwrap("de", version, wrapped, key_context("ru", "s"))
        d.rotate_key("de", grace=0)
        assert (d.keys.current_version("ru"), d.keys.current_version("de")) == (1, 2)
