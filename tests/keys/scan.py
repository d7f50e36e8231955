"""Looking for a key-encryption key in files, without knowing it.

A PKCS#11 key-encryption key cannot be read from its token, so a test cannot grep for its
bytes. It asks instead whether any 32 bytes of a file (raw, or written as base64 or hex)
unwrap a data key that the key wrapped: such bytes would be the key. The same search finds
the keyring file's key-encryption key, which shows that it would find one.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAX_BYTES = 8 * 1024 * 1024  # a deployment of a few records is far smaller


def candidates(data: bytes) -> Iterator[bytes]:
    """Every 32 bytes of ``data``, and every 32-byte value it spells in base64 or hex."""
    for i in range(len(data) - 31):
        yield data[i : i + 32]
    for m in re.finditer(rb"[A-Za-z0-9+/]{43}=", data):
        yield base64.b64decode(m.group(0))  # 43 characters and "=" are always 32 bytes
    for m in re.finditer(rb"[0-9a-fA-F]{64}", data):
        yield bytes.fromhex(m.group(0).decode())


def files_holding_key(folder: Path, wrapped: bytes, context: bytes) -> list[Path]:
    """The files under ``folder`` in which some 32 bytes unwrap ``wrapped`` (a nonce and
    an AES-GCM ciphertext with ``context`` as associated data)."""
    nonce, body = wrapped[:12], wrapped[12:]
    total = 0
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        total += len(data)
        assert total <= MAX_BYTES, f"the deployment grew past {MAX_BYTES} bytes: bound the scan"
        for key in candidates(data):
            try:
                AESGCM(key).decrypt(nonce, body, context)
            except InvalidTag:
                continue
            found.append(path)
            break
    return found
