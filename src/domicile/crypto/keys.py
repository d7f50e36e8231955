"""Key providers: where key-encryption keys, index keys and signing keys come from.

The vault never handles a site's key-encryption key directly: it asks the provider to wrap
and unwrap data keys, which is what an external KMS offers too. Index keys and signing keys
are handed out because they are used on every write.

``LocalKeyring`` keeps everything in one JSON file that must be readable by its owner only
(mode 0600): it refuses a file that group or others can read, and writes atomically.
Several processes may share the file (a server and the CLI): each picks up the others'
changes before it wraps a key, and changes the file only under an exclusive lock, after
reading it again, so no process writes back a stale copy.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import stat
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from domicile.crypto.errors import DecryptionFailed, KeyringError
from domicile.files import private_dir

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows; one process per keyring there
    fcntl = None  # type: ignore[assignment]

KEYRING_FORMAT = 1
REFRESH = 0.05  # seconds between looks at the keyring file on the busy path


class KeyProvider(Protocol):
    def ensure_site(self, site_id: str) -> None:
        """Create the site's keys if it has none."""

    def wrap(self, site_id: str, dek: bytes, context: bytes) -> tuple[int, bytes]:
        """Wrap a data key with the site's current key-encryption key; returns its version."""

    def unwrap(self, site_id: str, version: int, wrapped: bytes, context: bytes) -> bytes:
        """Unwrap a data key wrapped with the given key version."""

    def current_version(self, site_id: str) -> int: ...

    def rotate(self, site_id: str) -> int:
        """Add a new key-encryption key and make it current; old versions still unwrap."""

    def retire(self, site_id: str, version: int) -> None:
        """Remove an old key-encryption key once nothing is wrapped with it."""

    def index_key(self, site_id: str) -> bytes: ...

    def signing_key(self, site_id: str) -> Ed25519PrivateKey: ...

    def verify_key(self, site_id: str) -> Ed25519PublicKey: ...

    def token_key(self) -> bytes: ...

    def join_key(self) -> bytes:
        """The key of deterministic join tokens (one for the whole deployment)."""


class _Wraps(Protocol):
    def wrap(self, site_id: str, dek: bytes, context: bytes) -> tuple[int, bytes]: ...


def wrap_many(
    keys: _Wraps, site_id: str, deks: Sequence[tuple[bytes, bytes]]
) -> list[tuple[int, bytes]]:
    """Wrap many ``(dek, context)`` pairs, in one call where the provider has ``wrap_many``
    (the keyring), else one ``wrap`` each (a KMS wraps key by key)."""
    many = getattr(keys, "wrap_many", None)
    if many is not None:
        wrapped: list[tuple[int, bytes]] = many(site_id, deks)
        return wrapped
    return [keys.wrap(site_id, dek, context) for dek, context in deks]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


class LocalKeyring:
    """A keyring file, for the embedded default and for tests."""

    def __init__(self, path: str | os.PathLike[str], *, create: bool = False) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._aead: dict[tuple[str, int], AESGCM] = {}
        self._seen: tuple[int, int, int] | None = None
        self._looked = 0.0  # when the file was last looked at (time.monotonic)
        self._data: dict[str, Any] = {}
        if not self.path.exists() and not create:
            raise KeyringError(
                f"no keyring at {self.path}", hint="run `domicile init` or point keyring: at it"
            )
        with self._lock, self._file_lock():
            if self.path.exists():  # perhaps made by another process a moment ago
                self._reload()
            else:
                self._data = {
                    "format": KEYRING_FORMAT,
                    "token_key": _b64(AESGCM.generate_key(256)),
                    "join_key": _b64(secrets.token_bytes(32)),
                    "sites": {},
                }
                self._save()

    # --- file -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        """Exclusive, across processes, while the file is read and rewritten."""
        private_dir(self.path.parent)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _stamp(self) -> tuple[int, int, int]:
        st = self.path.stat()
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _reload(self) -> None:
        stamp = self._stamp()
        self._data = self._load()
        self._seen = stamp
        # Forget key-encryption keys that another process has retired.
        sites = self._data["sites"]
        self._aead = {
            (site, v): aead
            for (site, v), aead in self._aead.items()
            if str(v) in sites.get(site, {}).get("keks", {})
        }

    def _refresh(self, *, at_most_every: float = 0.0) -> None:
        """Pick up what another process changed since the file was last read (looking at
        the file at most every ``at_most_every`` seconds)."""
        now = time.monotonic()
        if now - self._looked < at_most_every:
            return
        self._looked = now
        try:
            changed = self._stamp() != self._seen
        except OSError:
            return  # gone for the moment (being replaced): keep what is known
        if changed:
            with self._lock:
                self._reload()

    @contextlib.contextmanager
    def _changing(self) -> Iterator[dict[str, Any]]:
        """Change the keyring: under both locks, on a fresh read, saved at the end."""
        with self._lock, self._file_lock():
            self._reload()
            yield self._data
            self._save()

    def _load(self) -> dict[str, Any]:
        try:
            st = self.path.stat()
        except OSError as exc:
            raise KeyringError(f"cannot read keyring {self.path}: {exc.strerror}") from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyringError(
                f"keyring {self.path} is readable by others (mode {stat.S_IMODE(st.st_mode):o})",
                hint=f"chmod 600 {self.path}",
            )
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise KeyringError(
                f"keyring {self.path} is not valid JSON", hint="restore it from backup"
            ) from None
        if not isinstance(data, dict) or data.get("format") != KEYRING_FORMAT:
            raise KeyringError(f"keyring {self.path} has an unknown format")
        return data

    def _save(self) -> None:
        private_dir(self.path.parent)
        fd, tmp = tempfile.mkstemp(prefix=".keyring-", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(self._data, fh, indent=1, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._seen = self._stamp()

    def _site(self, site_id: str) -> dict[str, Any]:
        try:
            site: dict[str, Any] = self._data["sites"][site_id]
        except KeyError:
            raise KeyringError(
                f"the keyring holds no keys for site {site_id!r}",
                hint="open the vault once with this site configured, or restore the keyring",
            ) from None
        return site

    # --- KeyProvider ------------------------------------------------------------------------

    def ensure_site(self, site_id: str) -> None:
        self._refresh()
        if site_id in self._data["sites"]:
            return
        node = self._data.get("node")
        if node is not None:  # a node's keyring: never keys of another node's site
            raise KeyringError(
                f"this is node {node!r}'s keyring: it holds no keys of site {site_id!r}",
                hint="a site's keys are made and kept at its own node",
            )
        with self._changing() as data:
            if site_id in data["sites"]:
                return  # another process made them meanwhile
            signing = Ed25519PrivateKey.generate()
            from cryptography.hazmat.primitives import serialization

            raw = signing.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            data["sites"][site_id] = {
                "keks": {"1": _b64(AESGCM.generate_key(256))},
                "current": 1,
                "index_key": _b64(secrets.token_bytes(32)),
                "signing_key": _b64(raw),
            }

    def _kek(self, site_id: str, version: int) -> AESGCM:
        cached = self._aead.get((site_id, version))
        if cached is not None:
            return cached
        keks = self._site(site_id)["keks"]
        if str(version) not in keks:
            self._refresh()  # perhaps a newer key made by another process
            keks = self._site(site_id)["keks"]
        if str(version) not in keks:
            raise KeyringError(
                f"site {site_id!r} has no key-encryption key version {version}",
                hint="it was retired while data was still wrapped with it; restore the keyring",
            )
        aead = AESGCM(_unb64(keks[str(version)]))
        self._aead[(site_id, version)] = aead
        return aead

    def current_version(self, site_id: str) -> int:
        # A rotation by another process takes effect here, within REFRESH seconds: far
        # less than the grace period a rotation waits for writers (vault.ROTATION_GRACE).
        self._refresh(at_most_every=REFRESH)
        return int(self._site(site_id)["current"])

    def wrap(self, site_id: str, dek: bytes, context: bytes) -> tuple[int, bytes]:
        version = self.current_version(site_id)
        nonce = secrets.token_bytes(12)
        return version, nonce + self._kek(site_id, version).encrypt(nonce, dek, context)

    def wrap_many(
        self, site_id: str, keys: Sequence[tuple[bytes, bytes]]
    ) -> list[tuple[int, bytes]]:
        """``wrap`` for many ``(dek, context)`` pairs: the current version looked up once,
        one call to the OS for all the nonces."""
        version = self.current_version(site_id)
        encrypt = self._kek(site_id, version).encrypt
        pool = os.urandom(12 * len(keys))
        out = []
        for i, (dek, context) in enumerate(keys):
            nonce = pool[12 * i : 12 * i + 12]
            out.append((version, nonce + encrypt(nonce, dek, context)))
        return out

    def unwrap(self, site_id: str, version: int, wrapped: bytes, context: bytes) -> bytes:
        try:
            return self._kek(site_id, version).decrypt(wrapped[:12], wrapped[12:], context)
        except (InvalidTag, ValueError):  # ValueError: cut too short to hold a nonce
            raise DecryptionFailed(
                f"a data key of site {site_id!r} does not unwrap",
                hint="the key store or keyring was altered",
            ) from None

    def rotate(self, site_id: str) -> int:
        with self._changing():
            site = self._site(site_id)
            version = max(int(v) for v in site["keks"]) + 1
            site["keks"][str(version)] = _b64(AESGCM.generate_key(256))
            site["current"] = version
            return version

    def retire(self, site_id: str, version: int) -> None:
        with self._changing():
            site = self._site(site_id)
            if version == int(site["current"]):
                raise KeyringError(
                    "cannot retire the current key-encryption key", hint="rotate first"
                )
            site["keks"].pop(str(version), None)
            self._aead.pop((site_id, version), None)

    def index_key(self, site_id: str) -> bytes:
        return _unb64(self._site(site_id)["index_key"])

    def signing_key(self, site_id: str) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(_unb64(self._site(site_id)["signing_key"]))

    def verify_key(self, site_id: str) -> Ed25519PublicKey:
        peer = self._data.get("peers", {}).get(site_id)
        if peer is not None and site_id not in self._data["sites"]:
            return Ed25519PublicKey.from_public_bytes(_unb64(peer))
        return self.signing_key(site_id).public_key()

    def node_copy(
        self,
        site_id: str,
        path: str | os.PathLike[str],
        *,
        verify_keys: dict[str, Ed25519PublicKey] | None = None,
    ) -> LocalKeyring:
        """A keyring for the node of ``site_id``: that site's keys (none when its keys are
        in a token or a KMS: ``verify_keys`` then gives the public keys this keyring does
        not hold), the deployment's token and join keys, and only the public verify keys
        of the other sites (to check their signed tree heads). Written once (0600);
        refuses to replace an existing file."""
        from cryptography.hazmat.primitives import serialization

        self._refresh()
        publics = dict(verify_keys or {})
        for sid in self._data["sites"]:
            publics.setdefault(sid, self.verify_key(sid))
        own = self._data["sites"].get(site_id)
        peers = {
            sid: _b64(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
            for sid, key in publics.items()
            if sid != site_id
        }
        target = Path(path)
        if target.exists():
            raise KeyringError(
                f"{target} exists already", hint="a node's keyring is made once; move it away first"
            )
        copy = LocalKeyring.__new__(LocalKeyring)
        copy.path = target
        copy._lock = threading.Lock()
        copy._aead, copy._seen, copy._looked = {}, None, 0.0
        copy._data = {
            "format": KEYRING_FORMAT,
            "node": site_id,
            "token_key": self._data["token_key"],
            "join_key": _b64(self.join_key()),
            "sites": {site_id: json.loads(json.dumps(own))} if own is not None else {},
            "peers": peers,
        }
        with copy._lock, copy._file_lock():
            copy._save()
        return copy

    def token_key(self) -> bytes:
        return _unb64(self._data["token_key"])

    def join_key(self) -> bytes:
        if "join_key" not in self._data:  # keyrings made before join tokens existed
            with self._changing() as data:
                data.setdefault("join_key", _b64(secrets.token_bytes(32)))
        return _unb64(self._data["join_key"])

    def versions(self, site_id: str) -> list[int]:
        self._refresh()
        return sorted(int(v) for v in self._site(site_id)["keks"])
