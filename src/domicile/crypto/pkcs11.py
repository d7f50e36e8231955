"""A site's keys in a PKCS#11 token (an HSM), through python-pkcs11 (the ``hsm`` extra).

The key-encryption keys are AES-256 keys generated inside the token, as token objects that
are sensitive and not extractable (``CKA_SENSITIVE``, ``CKA_EXTRACTABLE`` false): their
bytes never leave it. A data key is wrapped by ``C_Encrypt`` with ``CKM_AES_GCM`` inside
the token, the key context (site and subject) as associated data and a fresh 96-bit
nonce, so a wrapped key moved to another subject or site does not unwrap; unwrap is
``C_Decrypt`` there too. (``C_WrapKey`` is not used: the data key is a value the vault
holds, not a token object, and SoftHSM2's ``C_WrapKey`` offers no AEAD mechanism; GCM by
encryption gives the associated data that ``CKM_AES_KEY_WRAP`` lacks.)

Objects, by label: ``domicile/SITE/kek/N`` for each key-encryption key version (the highest
is current; rotation adds one, retirement destroys one) and ``domicile/SITE/seal`` for the
key that seals the site's index and signing keys (``custody.py``). The token is found by
its label and logged into with the user PIN from the environment variable the site's
configuration names. PKCS#11 logs a whole process in at once, so sites that share a token
share one session; it is used under a lock.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Any

from domicile.crypto.custody import (
    REFRESH,
    CustodyProvider,
    KeyProviderUnavailable,
    env_secret,
)
from domicile.crypto.errors import DecryptionFailed, KeyringError
from domicile.crypto.specs import Pkcs11Spec
from domicile.extras import require
from domicile.files import lock_file

NONCE = 12

# One loaded library per module path and one logged-in session per token, in a process.
_libs: dict[str, Any] = {}
_sessions: dict[tuple[str, str], tuple[Any, threading.RLock]] = {}
_open_lock = threading.Lock()


def _session(spec: Pkcs11Spec, site_id: str) -> tuple[Any, threading.RLock]:
    import pkcs11
    from pkcs11 import exceptions as p11

    where = f"PKCS#11 token {spec.token!r}"
    with _open_lock:
        found = _sessions.get((spec.module, spec.token))
        if found is not None:
            return found
        if not os.path.exists(spec.module):
            raise KeyProviderUnavailable(
                site_id,
                f"its PKCS#11 module {spec.module} is not there",
                hint="install the token's PKCS#11 library (SoftHSM2: scripts/hsm-deps), or"
                " correct key_provider.module",
            )
        pin = env_secret(spec.pin_env, "the token's user PIN", where, site_id)
        try:
            lib = _libs.get(spec.module)
            if lib is None:
                lib = _libs[spec.module] = pkcs11.lib(spec.module)
            token = lib.get_token(token_label=spec.token)
        except p11.NoSuchToken:
            raise KeyProviderUnavailable(
                site_id,
                f"no {where} is present",
                hint="insert or initialise the token (the label must match key_provider.token),"
                " then start domicile again",
            ) from None
        except p11.PKCS11Error as exc:
            raise KeyProviderUnavailable(
                site_id,
                f"its PKCS#11 module {spec.module} cannot be used ({type(exc).__name__})",
                hint="check that it is the token's PKCS#11 library and that the token is configured",
            ) from None
        try:
            session = token.open(user_pin=pin, rw=True)
        except (p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange):
            raise KeyProviderUnavailable(
                site_id,
                f"the {where} refused the user PIN in ${spec.pin_env}",
                hint=f"set ${spec.pin_env} to the token's user PIN (a token may lock the PIN"
                " after a few wrong tries)",
                final=True,
            ) from None
        except p11.PKCS11Error as exc:
            raise KeyProviderUnavailable(
                site_id, f"the {where} cannot be opened ({type(exc).__name__})"
            ) from None
        found = (session, threading.RLock())
        _sessions[(spec.module, spec.token)] = found
        return found


def _forget(spec: Pkcs11Spec, session: Any) -> None:
    """Drop a session that failed, so the next call opens the token again (unless another
    site of the same token has opened a new one meanwhile)."""
    with _open_lock:
        found = _sessions.get((spec.module, spec.token))
        if found is None or found[0] is not session:
            return
        del _sessions[(spec.module, spec.token)]
    with contextlib.suppress(Exception):  # a session that is gone is closed already
        session.close()


# Errors meaning the token or its session is gone, not that a ciphertext is wrong.
_GONE = (
    "DeviceError",
    "DeviceMemory",
    "DeviceRemoved",
    "SessionClosed",
    "SessionHandleInvalid",
    "TokenNotPresent",
    "TokenNotRecognised",
    "UserNotLoggedIn",
    "FunctionFailed",
    "HostMemory",
)


class Pkcs11Provider(CustodyProvider):
    """One site's keys in a PKCS#11 token."""

    kind = "pkcs11"

    def __init__(self, site_id: str, spec: Pkcs11Spec, sealed_path: Path) -> None:
        require("hsm", f"site {site_id!r}'s key provider (PKCS#11)")
        super().__init__(site_id, sealed_path)
        self.spec = spec
        self._kek_prefix = f"domicile/{site_id}/kek/"
        self._seal_label = f"domicile/{site_id}/seal"
        self._keys: dict[int, Any] = {}  # version -> key object (a handle in the session)
        self._keys_session: Any = None  # the session those handles belong to
        self._current = 0
        self._looked = -1.0
        _session(spec, site_id)  # opens the token now: one that does not answer fails here
        if sealed_path.exists():
            self.open_secrets()

    def describe(self) -> str:
        return self.spec.describe()

    # --- token calls --------------------------------------------------------------------

    def _call(self, what: str, fn: Any, expect: tuple[type[Exception], ...] = ()) -> Any:
        """``fn(session)`` under the token's lock. The token gone is an unavailable site
        (its session is dropped, so the next call opens the token again); an error the
        caller ``expect``s is its to interpret; any other refusal is an unavailable site
        too, never a traceback."""
        from pkcs11 import exceptions as p11

        session, lock = _session(self.spec, self.site_id)
        with lock:
            try:
                return fn(session)
            except p11.PKCS11Error as exc:
                name = type(exc).__name__
                if name in _GONE:
                    _forget(self.spec, session)
                    self._keys.clear()  # their handles belonged to that session
                    self._looked = -1.0
                    raise KeyProviderUnavailable(
                        self.site_id,
                        f"the {self.describe()} stopped answering while it {what} ({name})",
                        hint="check the token; the next call tries to open it again",
                    ) from None
                if isinstance(exc, expect):
                    raise
                raise KeyProviderUnavailable(
                    self.site_id,
                    f"the {self.describe()} refused what it was asked when it {what} ({name})",
                    hint="check the token's state and its log; nothing was written",
                ) from None

    def _find(self) -> dict[int, Any]:
        from pkcs11 import Attribute, ObjectClass

        def look(session: Any) -> dict[int, Any]:
            out: dict[int, Any] = {}
            for obj in session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY}):
                label = obj.label or ""
                if label.startswith(self._kek_prefix):
                    tail = label.removeprefix(self._kek_prefix)
                    if tail.isdigit():
                        out[int(tail)] = obj
            return out

        found: dict[int, Any] = self._call("listed its keys", look)
        return found

    def _refresh(self, *, at_most_every: float = 0.0) -> None:
        now = time.monotonic()
        if now - self._looked < at_most_every:
            return
        session = _session(self.spec, self.site_id)[0]
        found = self._find()
        with self._lock:
            self._keys = found
            self._keys_session = session
            self._current = max(found, default=0)
            self._looked = now

    def _generate(self, label: str) -> Any:
        from pkcs11 import Attribute, KeyType, MechanismFlag

        return self._call(
            "made a key",
            lambda s: s.generate_key(
                KeyType.AES,
                256,
                label=label,
                store=True,
                capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
                template={
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: True,
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.WRAP: False,
                    Attribute.UNWRAP: False,
                    Attribute.DERIVE: False,
                    Attribute.SIGN: False,
                    Attribute.VERIFY: False,
                },
            ),
        )

    def _seal_key(self) -> Any:
        from pkcs11 import ObjectClass
        from pkcs11 import exceptions as p11

        def get(session: Any) -> Any:
            return session.get_key(object_class=ObjectClass.SECRET_KEY, label=self._seal_label)

        try:
            return self._call(
                "looked for its sealing key", get, (p11.NoSuchKey, p11.MultipleObjectsReturned)
            )
        except p11.NoSuchKey:
            raise KeyringError(
                f"the {self.describe()} holds no sealing key of site {self.site_id!r}",
                hint="is this the site's token? sites are set up by `domicile sites create`",
            ) from None
        except p11.MultipleObjectsReturned:
            raise KeyringError(
                f"the {self.describe()} holds two sealing keys of site {self.site_id!r}",
                hint=f"keep the one the site was set up with (label {self._seal_label})",
            ) from None

    def _gcm(self, key: Any, op: str, data: bytes, nonce: bytes, ad: bytes) -> bytes:
        """AES-GCM in the token. A decryption's errors other than the token going away
        are the caller's to interpret (a wrong tag, a retired key)."""
        from pkcs11 import Mechanism
        from pkcs11 import exceptions as p11
        from pkcs11.mechanisms import GCMParams

        param = GCMParams(nonce, ad, 128)
        fn = key.encrypt if op == "encrypt" else key.decrypt
        out: bytes = self._call(
            "wrapped a key" if op == "encrypt" else "unwrapped a key",
            lambda _s: fn(data, mechanism=Mechanism.AES_GCM, mechanism_param=param),
            (p11.PKCS11Error,) if op == "decrypt" else (),
        )
        return out

    # --- CustodyProvider ----------------------------------------------------------------

    def _create_keys(self) -> None:
        self._refresh()
        if not self._keys:
            self._generate(f"{self._kek_prefix}1")
        try:
            self._seal_key()
        except KeyringError:
            self._generate(self._seal_label)
        self._refresh()

    def _seal(self, plaintext: bytes, ad: bytes) -> bytes:
        nonce = os.urandom(NONCE)
        return nonce + self._gcm(self._seal_key(), "encrypt", plaintext, nonce, ad)

    def _unseal(self, sealed: bytes, ad: bytes) -> bytes:
        from pkcs11 import exceptions as p11

        try:
            return self._gcm(self._seal_key(), "decrypt", sealed[NONCE:], sealed[:NONCE], ad)
        except p11.PKCS11Error:
            raise DecryptionFailed("sealed keys do not open") from None

    def _kek(self, version: int) -> Any:
        if self._keys_session is not _session(self.spec, self.site_id)[0]:
            self._refresh()  # the token was opened again: its objects have new handles
        key = self._keys.get(version)
        if key is None:
            self._refresh()  # perhaps made by another process
            key = self._keys.get(version)
        if key is None:
            raise KeyringError(
                f"site {self.site_id!r} has no key-encryption key version {version} in the {self.describe()}",
                hint="it was retired while data was still wrapped with it; restore the token from its backup",
            )
        return key

    def current_version(self, site_id: str) -> int:
        self._mine(site_id)
        self._refresh(at_most_every=REFRESH)
        if not self._current:
            raise KeyringError(
                f"the {self.describe()} holds no key-encryption key of site {site_id!r}",
                hint="is this the site's token? sites are set up by `domicile sites create`",
            )
        return self._current

    def versions(self, site_id: str) -> list[int]:
        self._mine(site_id)
        self._refresh()
        return sorted(self._keys)

    def wrap(self, site_id: str, dek: bytes, context: bytes) -> tuple[int, bytes]:
        version = self.current_version(site_id)
        nonce = os.urandom(NONCE)
        return version, nonce + self._gcm(self._kek(version), "encrypt", dek, nonce, context)

    def unwrap(self, site_id: str, version: int, wrapped: bytes, context: bytes) -> bytes:
        from pkcs11 import exceptions as p11

        self._mine(site_id)
        key = self._kek(version)
        if len(wrapped) < NONCE + 16:
            raise DecryptionFailed(
                f"a data key of site {site_id!r} does not unwrap",
                hint="the key store was altered",
            )
        try:
            return self._gcm(key, "decrypt", wrapped[NONCE:], wrapped[:NONCE], context)
        except (p11.ObjectHandleInvalid, p11.KeyHandleInvalid):
            self._refresh()  # retired by another process meanwhile
            raise KeyringError(
                f"site {site_id!r}'s key-encryption key version {version} left the {self.describe()}",
                hint="it was retired while data was still wrapped with it; restore the token from its backup",
            ) from None
        except p11.PKCS11Error:
            raise DecryptionFailed(
                f"a data key of site {site_id!r} does not unwrap",
                hint="the key store was altered",
            ) from None

    def rotate(self, site_id: str) -> int:
        self._mine(site_id)
        with lock_file(self.sealed_path.with_name(self.sealed_path.name + ".lock")):
            self._refresh()
            version = max(self._keys, default=0) + 1
            self._generate(f"{self._kek_prefix}{version}")
            self._refresh()
        return version

    def retire(self, site_id: str, version: int) -> None:
        self._mine(site_id)
        with lock_file(self.sealed_path.with_name(self.sealed_path.name + ".lock")):
            self._refresh()
            if version == self._current:
                raise KeyringError(
                    "cannot retire the current key-encryption key", hint="rotate first"
                )
            key = self._keys.get(version)
            if key is not None:
                self._call("destroyed a retired key", lambda _s: key.destroy())
            self._refresh()
