"""A record's body, sealed under its subject's data key.

**Layout 3** (what the vault writes): a header naming the record's fields (schema, not
personal data: what the earlier layout showed too), then the subject's residency and every
field's value in one plaintext (JSON: ``[residency, {field: value, ...}]``), sealed with a
single AES-256-GCM operation. The associated data binds the body to its place and its
moment: site, collection, record id, version and the header. A body copied to another record, site or
collection, or put back under another version, does not open. Projection, masking and the
field selection of a copy abroad happen after the body is opened, in memory.

**Layout 2** (what earlier versions wrote, read until ``domicile upgrade`` re-seals it):
each field sealed on its own (associated data: site, collection, record, field), the
residency as a field named ``@residency``, packed one after another.

The residency is kept as the JSON text it was sealed as: many subjects share one, and the
vault parses each distinct text once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from domicile.crypto.envelope import NONCE, FieldCipher, record_context
from domicile.crypto.errors import DecryptionFailed
from domicile.stores.base import LAYOUT3, StoredRecord, body_header, split_body, unpack_fields
from domicile.vault import values

RESIDENCY_FIELD = "@residency"  # layout 2: the residency's field
_AD3 = b"domicile/record/v3"


def body_context(site: str, collection: str, record_id: str, version: int, header: bytes) -> bytes:
    """The associated data of a layout-3 body: where it belongs, its version, and the
    header that names its fields."""
    return b"\x00".join(
        (_AD3, site.encode(), collection.encode(), record_id.encode(), b"%d" % version, header)
    )


def plaintext(residency: str, fields: Mapping[str, Any]) -> bytes:
    return orjson.dumps([residency, fields])


def seal_bodies(cipher: FieldCipher, items: Sequence[tuple[bytes, bytes, bytes]]) -> list[bytes]:
    """Seal (header, plaintext, associated data) triples into layout-3 bodies, with one
    call to the OS for all the nonces (each still 96 fresh random bits)."""
    pool = os.urandom(NONCE * len(items))
    encrypt = cipher.aead.encrypt
    out = []
    for i, (header, plain, ad) in enumerate(items):
        nonce = pool[NONCE * i : NONCE * (i + 1)]
        out.append(header + nonce + encrypt(nonce, plain, ad))
    return out


def seal_body(
    cipher: FieldCipher,
    site: str,
    collection: str,
    record_id: str,
    version: int,
    residency: str,
    fields: Mapping[str, Any],
) -> bytes:
    header = body_header(tuple(fields))
    ad = body_context(site, collection, record_id, version, header)
    return seal_bodies(cipher, [(header, plaintext(residency, fields), ad)])[0]


def open_body(cipher: FieldCipher, site: str, rec: StoredRecord) -> tuple[str, dict[str, Any]]:
    """The residency (as JSON text) and the fields of a stored record, in either layout.
    ``DecryptionFailed`` when it does not open in its place (altered or moved)."""
    body = rec.body
    if body[:1] == LAYOUT3:
        header, _, sealed = split_body(body)
        if len(sealed) < NONCE + 16:
            raise _malformed()
        ad = body_context(site, rec.collection, rec.record_id, rec.version, header)
        plain = cipher.open_raw(sealed[:NONCE], sealed[NONCE:], ad)
        try:
            residency, fields = orjson.loads(plain)
        except (orjson.JSONDecodeError, TypeError, ValueError):
            raise _malformed() from None
        if not isinstance(residency, str) or not isinstance(fields, dict):
            raise _malformed()
        return residency, fields
    prefix = record_context(site, rec.collection, rec.record_id)
    residency_text = ""
    fields = {}
    for name, value in unpack_fields(body).items():
        raw = cipher.open(value, prefix + name.encode())
        if name == RESIDENCY_FIELD:
            # Sealed as ``values.encode(dict)``: a type tag, then JSON text.
            residency_text = canonical(values.decode(raw))
        else:
            fields[name] = raw[1:].decode("utf-8") if raw[:1] == b"s" else values.decode(raw)
    return residency_text, fields


def canonical(data: Any) -> str:
    """JSON text with sorted keys: one text per residency, whatever built it."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _malformed() -> DecryptionFailed:
    return DecryptionFailed(
        "a stored record is malformed", hint="the site's data was altered; restore it from a backup"
    )
