"""A small HTTPS server speaking the documented HTTP API of HashiCorp Vault's Transit
secrets engine: enough of it for domicile's Transit provider. It is NOT a Vault server
(none can run where domicile is developed): the provider is tested against the documented
API, as this server reads it.

Served: create, read, rotate and configure a key (``/v1/MOUNT/keys/NAME``, ``.../rotate``,
``.../config``), encrypt and decrypt (``/v1/MOUNT/encrypt/NAME``, ``/v1/MOUNT/decrypt/NAME``),
with Vault's token header (``X-Vault-Token``), its error bodies (``{"errors": [...]}``)
and status codes (400, 403, 404, 503), derived keys (a ``context`` required and used to
derive the key; HKDF-SHA256, as Vault's default KDF), ciphertexts ``vault:vN:BASE64`` and
``min_decryption_version``. Real TLS: a certificate of its own, made with ``cryptography``.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
import re
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import NameOID


@dataclass
class TransitKey:
    name: str
    derived: bool
    versions: dict[int, bytes] = field(default_factory=dict)
    created: dict[int, int] = field(default_factory=dict)
    min_decryption_version: int = 1

    @property
    def latest(self) -> int:
        return max(self.versions)

    def rotate(self) -> None:
        v = (max(self.versions) if self.versions else 0) + 1
        self.versions[v] = AESGCM.generate_key(256)
        self.created[v] = int(time.time())

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": "aes256-gcm96",
            "derived": self.derived,
            "kdf": "hkdf_sha256",
            "exportable": False,
            "deletion_allowed": False,
            "keys": {
                str(v): t for v, t in self.created.items() if v >= self.min_decryption_version
            },
            "latest_version": self.latest,
            "min_available_version": 0,
            "min_decryption_version": self.min_decryption_version,
            "min_encryption_version": 0,
            "supports_encryption": True,
            "supports_decryption": True,
            "supports_derivation": True,
        }

    def aead(self, version: int, context: bytes | None) -> AESGCM:
        key = self.versions[version]
        if self.derived:
            assert context is not None
            key = HKDF(hashes.SHA256(), 32, salt=None, info=context).derive(key)
        return AESGCM(key)


class _Error(Exception):
    def __init__(self, status: int, *errors: str) -> None:
        super().__init__(status)
        self.status = status
        self.errors = list(errors)


MISSING_CONTEXT = (
    "missing 'context' for key derivation; the key was created using a derived key, which "
    "means additional, per-request information must be included in order to perform "
    "operations with the key"
)


class TransitServer:
    """The server, on 127.0.0.1 at a free port, over TLS; ``url`` and ``ca`` for clients."""

    def __init__(self, folder: Path, *, token: str = "s.test-root-token", mount: str = "transit"):
        self.token = token
        self.mount = mount
        self.keys: dict[str, TransitKey] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path), for the tests
        self.down = False  # answer 503, as a sealed Vault does
        self._lock = threading.Lock()
        self.ca = self._certificate(folder)
        handler = self._handler()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(folder / "server.pem", folder / "server.key")
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=10)

    @staticmethod
    def _certificate(folder: Path) -> Path:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "transit test server")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        pem = cert.public_bytes(serialization.Encoding.PEM)
        (folder / "server.pem").write_bytes(pem)
        (folder / "server.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        os.chmod(folder / "server.key", 0o600)
        return folder / "server.pem"

    # --- the API ------------------------------------------------------------------------

    def handle(self, method: str, path: str, token: str | None, body: dict[str, Any]) -> Any:
        with self._lock:
            self.requests.append((method, path))
            if self.down:
                raise _Error(503, "Vault is sealed")
            if token != self.token:
                raise _Error(403, "permission denied")
            prefix = f"/v1/{self.mount}/"
            if not path.startswith(prefix):
                raise _Error(404, "no handler for route")
            route = path.removeprefix(prefix)
            if m := re.fullmatch(r"keys/([^/]+)", route):
                return self._key(method, m.group(1), body)
            if m := re.fullmatch(r"keys/([^/]+)/rotate", route):
                key = self._get(m.group(1))
                key.rotate()
                return {"data": key.info()}
            if m := re.fullmatch(r"keys/([^/]+)/config", route):
                key = self._get(m.group(1))
                if "min_decryption_version" in body:
                    v = int(body["min_decryption_version"])
                    if v > key.latest:
                        raise _Error(400, "cannot set min decryption version above latest version")
                    key.min_decryption_version = max(v, 1)
                return None
            if m := re.fullmatch(r"encrypt/([^/]+)", route):
                return self._encrypt(m.group(1), body)
            if m := re.fullmatch(r"decrypt/([^/]+)", route):
                return self._decrypt(m.group(1), body)
            raise _Error(404, "no handler for route")

    def _get(self, name: str) -> TransitKey:
        key = self.keys.get(name)
        if key is None:
            raise _Error(404)
        return key

    def _key(self, method: str, name: str, body: dict[str, Any]) -> Any:
        if method == "GET":
            return {"data": self._get(name).info()}
        if name not in self.keys:
            if body.get("type", "aes256-gcm96") != "aes256-gcm96":
                raise _Error(400, "this test server makes aes256-gcm96 keys only")
            key = TransitKey(name, derived=bool(body.get("derived", False)))
            key.rotate()
            self.keys[name] = key
        return None

    def _context(self, key: TransitKey, body: dict[str, Any]) -> bytes | None:
        if not key.derived:
            return None
        if not body.get("context"):
            raise _Error(400, MISSING_CONTEXT)
        return base64.b64decode(body["context"])

    def _encrypt(self, name: str, body: dict[str, Any]) -> Any:
        key = self._get(name)
        context = self._context(key, body)
        try:
            plaintext = base64.b64decode(body["plaintext"], validate=True)
        except (KeyError, ValueError):
            raise _Error(400, "failed to base64-decode plaintext") from None
        version = int(body.get("key_version") or key.latest)
        nonce = os.urandom(12)
        sealed = nonce + key.aead(version, context).encrypt(nonce, plaintext, None)
        text = f"vault:v{version}:{base64.b64encode(sealed).decode()}"
        return {"data": {"ciphertext": text, "key_version": version}}

    def _decrypt(self, name: str, body: dict[str, Any]) -> Any:
        key = self._get(name)
        context = self._context(key, body)
        m = re.fullmatch(r"vault:v(\d+):([A-Za-z0-9+/=]+)", str(body.get("ciphertext", "")))
        if m is None:
            raise _Error(400, "invalid ciphertext: no prefix")
        version = int(m.group(1))
        if version < key.min_decryption_version:
            raise _Error(400, "ciphertext or signature version is disallowed by policy (too old)")
        if version not in key.versions:
            raise _Error(400, "invalid key version")
        sealed = base64.b64decode(m.group(2))
        try:
            plaintext = key.aead(version, context).decrypt(sealed[:12], sealed[12:], None)
        except (InvalidTag, ValueError):
            raise _Error(400, "cipher: message authentication failed") from None
        return {"data": {"plaintext": base64.b64encode(plaintext).decode()}}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else {}
                    answer = server.handle(
                        method, self.path.split("?")[0], self.headers.get("X-Vault-Token"), body
                    )
                except _Error as exc:
                    self._send(exc.status, {"errors": exc.errors})
                    return
                except ValueError:
                    self._send(400, {"errors": ["failed to parse JSON input"]})
                    return
                if answer is None:
                    self.send_response(204)
                    self.end_headers()
                else:
                    self._send(200, answer)

            def _send(self, status: int, doc: Any) -> None:
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_PUT(self) -> None:
                self._serve("POST")

            def log_message(self, *args: Any) -> None:
                pass

        return Handler
