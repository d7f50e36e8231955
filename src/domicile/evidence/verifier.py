"""Check a domicile evidence pack offline, with public keys only.

This file is shipped inside every pack as ``verify.py`` and is also what ``domicile
evidence verify`` runs: one set of checks, two ways to start it. It needs Python 3.11+,
its standard library and the ``cryptography`` package, nothing of domicile::

    python verify.py PACK.zip [--keys KEYS.json] [--json]

Exit 0: every signature and proof holds. Exit 1: some check failed; each failure names
the member of the pack and what did not hold. Exit 2: the file is not an evidence pack
(or the keys file cannot be read).

What is checked:

- ``manifest.json`` is signed (Ed25519, in ``manifest.sig``) by the key of every site the
  pack lists, over ``domicile/evidence-manifest/v1`` 0x00 and the manifest's bytes;
- every member's SHA-256 and size are the manifest's, and nothing else is in the zip;
- with ``--keys``, the sites of the pack are exactly those of a file obtained elsewhere
  (``domicile audit heads --out``, or a ``keys.json`` of an earlier pack), each with that
  file's key, and of its deployment; a head of that heads file of the same size as one in
  the pack is the same head (else a fork);
- per site (``audit/SITE.json``): every tree head's signature; a consistency proof
  (RFC 9162 2.1.4) between each pair of successive heads; the entries of the period form
  one hash chain; each entry's inclusion proof (RFC 9162 2.1.3) in the closing head; each
  witness's record of a head, proved in the witness's own signed log;
- the transfer ledger (``ledger/transfers.json``): each transfer and masked disclosure
  it lists is, field for field, the row that entry of a site's proven log makes; every one
  of the period is listed; its totals are those the entries make.

Members of other kinds (reports) are covered by their hash in the signed manifest.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime as dt
import hashlib
import itertools
import json
import struct
import sys
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

PACK_FORMAT = "domicile.evidence/1"
KEYS_FORMAT = "domicile.keys/1"
SEGMENT_FORMAT = "domicile.audit-segment/1"
LEDGER_FORMAT = "domicile.transfers/1"
SIGNATURES_FORMAT = "domicile.evidence-signatures/1"
MANIFEST = "manifest.json"
SIGNATURES = "manifest.sig"
MANIFEST_TAG = b"domicile/evidence-manifest/v1"
HEAD_TAG = b"domicile/tree-head/v1"
ENTRY_TAG = b"domicile/audit/v1"
MAX_MEMBER = 1 << 30  # a member bigger than this is not read (a zip bomb)
MAX_PACK = 2 << 30  # nor members beyond this much in all
MAX_MANIFEST = 64 << 20  # nor a manifest or its signatures bigger than this
WITNESS_PREFIX = '{"action":"witness"'


class PackUnreadable(Exception):
    """Not an evidence pack at all (exit 2)."""


@dataclass
class Report:
    pack: str
    failures: list[dict[str, str]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    sites: dict[str, dict[str, Any]] = field(default_factory=dict)

    def fail(self, member: str, problem: str) -> None:
        self.failures.append({"member": member, "problem": problem})

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "pack": self.pack,
            **self.info,
            "sites": self.sites,
            "failures": self.failures,
        }


# --- RFC 9162 Merkle trees and the log's hashes ----------------------------------------


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def entry_hash(prev: bytes, seq: int, payload: str) -> bytes:
    return hashlib.sha256(ENTRY_TAG + prev + struct.pack(">Q", seq) + payload.encode()).digest()


def head_message(site: str, size: int, root: bytes, signed_at: str) -> bytes:
    return b"\x00".join((HEAD_TAG, site.encode(), str(size).encode(), root, signed_at.encode()))


def verify_inclusion(
    leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 2.1.3.2."""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, path: Sequence[bytes]
) -> bool:
    """RFC 9162 2.1.4.2."""
    if not 0 <= size1 <= size2:
        return False
    if size1 == size2:
        return not path and root1 == root2
    if size1 == 0:
        return not path
    if not path:
        return False
    proof = list(path)
    if size1 & (size1 - 1) == 0:
        proof.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == root1 and sr == root2 and sn == 0


# --- small readers ---------------------------------------------------------------------


class Malformed(ValueError):
    pass


def _load(raw: bytes | str) -> Any:
    """JSON, where nesting too deep for the parser is one more way to be malformed."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise Malformed("it is nested too deeply to be read") from None


def _hex(value: Any, size: int | None = 32) -> bytes:
    if not isinstance(value, str):
        raise Malformed("a hash is not a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise Malformed("a hash is not hex") from None
    if size is not None and len(raw) != size:
        raise Malformed(f"a hash of {len(raw)} bytes where {size} belong")
    return raw


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise Malformed("a number is not an integer")
    return value


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Malformed(f"{what} is not an object")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise Malformed(f"{what} is not a list")
    return value


def parse_key(text: Any) -> Ed25519PublicKey:
    if not isinstance(text, str) or not text.startswith("ed25519:"):
        raise Malformed("a public key is not written ed25519:BASE64")
    try:
        return Ed25519PublicKey.from_public_bytes(
            base64.b64decode(text.removeprefix("ed25519:"), validate=True)
        )
    except (binascii.Error, ValueError):
        raise Malformed("a public key is not 32 bytes of base64") from None


def signature_holds(key: Ed25519PublicKey, message: bytes, signature: bytes) -> bool:
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def _day(at: Any) -> dt.date:
    if not isinstance(at, str):
        raise Malformed("an entry has no time")
    try:
        moment = dt.datetime.fromisoformat(at)
    except ValueError:
        raise Malformed("an entry's time is not ISO 8601") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC)
    return moment.date()


@dataclass(frozen=True)
class Head:
    site: str
    size: int
    root: bytes
    signed_at: str
    signature: bytes

    @classmethod
    def parse(cls, data: Any) -> Head:
        d = _obj(data, "a tree head")
        try:
            return cls(
                str(d["site"]), _int(d["size"]), _hex(d["root"]), str(d["signed_at"]),
                _hex(d["signature"], 64),
            )  # fmt: skip
        except KeyError as exc:
            raise Malformed(f"a tree head has no {exc.args[0]}") from None

    def verifies(self, key: Ed25519PublicKey) -> bool:
        return signature_holds(
            key, head_message(self.site, self.size, self.root, self.signed_at), self.signature
        )

    def same(self, data: Any) -> bool:
        try:
            return Head.parse(data) == self
        except Malformed:
            return False


def segment_bounds(
    heads: Sequence[tuple[int, str]], since: dt.date, until: dt.date
) -> tuple[int, int]:
    """The first and last entry of a site's log that a pack of ``since``..``until`` holds,
    from its signed heads (``(size, signed_at)``): the entry after the newest head signed
    before the period (every entry up to that head was logged before it was signed), to
    the first head signed after the period (every later entry was logged after it), or the
    newest head. Cut so, entries whose own times are out of order cannot trim the ends."""
    if not heads:
        return 1, 0
    before = [size for size, at in heads if _day(at) < since]
    after = [size for size, at in heads if _day(at) > until]
    return (max(before) + 1 if before else 1), (min(after) if after else max(s for s, _ in heads))


# --- the pack --------------------------------------------------------------------------


def _open(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except FileNotFoundError:
        raise PackUnreadable(f"no file at {path}") from None
    except (OSError, zipfile.BadZipFile):
        raise PackUnreadable(f"{path} is not a zip file (an evidence pack is one)") from None


def _read(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes | str:
    try:
        return zf.read(info)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError):
        return "cannot be read from the zip: its stored bytes were changed"


def read_manifest(zf: zipfile.ZipFile, path: Path) -> tuple[bytes | str, bytes | str | None]:
    """The manifest and its signatures, read before anything else: the manifest says which
    other members to read at all."""
    out: dict[str, bytes | str] = {}
    for info in zf.infolist():
        if info.filename not in (MANIFEST, SIGNATURES):
            continue
        if info.filename in out:
            out[info.filename] = "appears twice in the zip"
        elif info.file_size > MAX_MANIFEST:
            out[info.filename] = "is too big to be a member of an evidence pack"
        else:
            out[info.filename] = _read(zf, info)
    if MANIFEST not in out:
        raise PackUnreadable(f"{path} has no {MANIFEST}: it is not a domicile evidence pack")
    return out[MANIFEST], out.get(SIGNATURES)


def read_members(
    zf: zipfile.ZipFile, sizes: dict[str, int]
) -> tuple[dict[str, bytes | str], list[str]]:
    """The members the manifest lists (``sizes``: path -> size): their bytes, or why they
    were not read (a string): a size other than the listed one, too big, twice in the zip,
    unreadable. Members it does not list are never read, only named (second value)."""
    out: dict[str, bytes | str] = {}
    added: list[str] = []
    total = 0
    for info in zf.infolist():
        name = info.filename
        if name in (MANIFEST, SIGNATURES):
            continue
        if name not in sizes:
            added.append(name)
        elif name in out:
            out[name] = "appears twice in the zip"
        elif info.file_size != sizes[name]:
            out[name] = "its size is not the one in the signed manifest: it was changed"
        elif info.file_size > MAX_MEMBER or total + info.file_size > MAX_PACK:
            out[name] = "is too big to be a member of an evidence pack"
        else:
            total += info.file_size
            out[name] = _read(zf, info)
    return out, sorted(set(added))


@dataclass(frozen=True)
class Pinned:
    """What the inspector obtained apart from the pack: site keys and, from a heads file,
    the heads it held then."""

    keys: dict[str, str]
    heads: dict[str, Head] = field(default_factory=dict)
    deployment: str | None = None  # the deployment id the file names, when it names one


def load_pinned(path: Path) -> Pinned:
    """Site keys from a file obtained apart from the pack: a heads file (``domicile audit
    heads --out``, whose heads are compared too) or a pack's ``keys.json``; both map
    ``sites`` to ``public_key``."""
    try:
        data = _load(path.read_text(encoding="utf-8"))
        sites = _obj(_obj(data, "the keys file")["sites"], "sites")
        keys, heads = {}, {}
        for site, entry in sites.items():
            text = _obj(entry, "a site")["public_key"]
            parse_key(text)
            keys[str(site)] = str(text)
            if entry.get("head") is not None:
                head = Head.parse(entry["head"])
                if head.site != site or not head.verifies(parse_key(text)):
                    raise Malformed(f"the head of site {site} is not signed by its key")
                heads[str(site)] = head
        named = data.get("deployment", data.get("environment"))
        return Pinned(keys, heads, str(named) if named else None)
    except FileNotFoundError:
        raise PackUnreadable(f"no keys file at {path}") from None
    except Malformed as exc:
        raise PackUnreadable(f"{path}: {exc}") from None
    except (OSError, UnicodeDecodeError, ValueError, KeyError):
        raise PackUnreadable(
            f"{path} is not a keys file (a heads file from `domicile audit heads --out`, or "
            "a pack's keys.json)"
        ) from None


def check_pack(path: str | Path, pinned: Pinned | None = None) -> Report:
    """Every check of the pack at ``path``; ``pinned``: site keys obtained elsewhere."""
    p = Path(path)
    report = Report(str(path))
    with _open(p) as zf:
        raw_manifest, raw_signatures = read_manifest(zf, p)
        if isinstance(raw_manifest, str):
            report.fail(MANIFEST, raw_manifest)
            return report
        try:
            manifest = _obj(_load(raw_manifest), MANIFEST)
            if manifest.get("format") != PACK_FORMAT:
                raise Malformed(f"its format is not {PACK_FORMAT}")
            listed = _list(manifest["members"], "members")
            hashes = {
                str(_obj(m, "a member")["path"]): (
                    str(m["sha256"]),
                    _int(m["bytes"]),
                    str(m["kind"]),
                )
                for m in listed
            }
            if len(hashes) != len(listed):
                raise Malformed("it lists a member twice")
            signers = [str(s) for s in _list(manifest["signed_by"], "signed_by")]
            period = _obj(manifest["period"], "period")
            since = dt.date.fromisoformat(str(period["since"]))
            until = dt.date.fromisoformat(str(period["until"]))
        except (ValueError, KeyError, TypeError) as exc:
            report.fail(MANIFEST, f"cannot be read ({_why(exc)}): it was changed")
            return report
        members, added = read_members(zf, {n: size for n, (_d, size, _k) in hashes.items()})
    report.info = {
        "deployment": manifest.get("deployment"),
        "domicile_version": manifest.get("domicile_version"),
        "exported_at": manifest.get("exported_at"),
        "period": {"since": since.isoformat(), "until": until.isoformat()},
        "members": len(hashes),
    }

    # Every member is what the manifest says, and nothing else is in the pack. A member
    # that is not is named and not read further: its bytes are not the signed ones.
    content: dict[str, bytes] = {}
    for name, (digest, size, _kind) in sorted(hashes.items()):
        got = members.get(name)
        if got is None:
            report.fail(name, "is listed in the manifest but missing from the pack")
        elif isinstance(got, str):
            report.fail(name, got)
        elif hashlib.sha256(got).hexdigest() != digest or len(got) != size:
            report.fail(name, "its SHA-256 is not the one in the signed manifest: it was changed")
        else:
            content[name] = got
    for name in added:
        report.fail(name, "is in the pack but not in the manifest (added)")

    kinds = {name: kind for name, (_d, _s, kind) in hashes.items()}
    keys = _check_keys(report, content, kinds, pinned)
    _check_signatures(report, raw_signatures, raw_manifest, signers, keys)
    segments = _check_segments(report, content, kinds, keys, since, until)
    if pinned is not None:
        _check_pinned_heads(report, segments, pinned)
    _check_witnesses(report, segments, keys)
    _check_ledger(report, content, kinds, segments, since, until)
    return report


def _why(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"no {exc.args[0]}"
    return str(exc) or type(exc).__name__


def _member(content: dict[str, bytes], kinds: dict[str, str], kind: str) -> list[str]:
    return sorted(name for name, k in kinds.items() if k == kind and name in content)


def _check_keys(
    report: Report, content: dict[str, bytes], kinds: dict[str, str], pinned: Pinned | None
) -> dict[str, Ed25519PublicKey]:
    names = _member(content, kinds, "keys")
    keys: dict[str, Ed25519PublicKey] = {}
    if not names:
        report.fail("keys.json", "the pack has no readable site keys")
        return keys
    name = names[0]
    try:
        data = _obj(_load(content[name]), name)
        if data.get("format") != KEYS_FORMAT:
            raise Malformed(f"its format is not {KEYS_FORMAT}")
        texts = {
            str(site): str(_obj(e, "a site")["public_key"])
            for site, e in _obj(data["sites"], "sites").items()
        }
        keys = {site: parse_key(text) for site, text in texts.items()}
    except (ValueError, KeyError, TypeError) as exc:
        report.fail(name, f"cannot be read ({_why(exc)})")
        return {}
    if not texts:
        report.fail(name, "it lists no site: the pack shows no log")
    deployment = report.info.get("deployment")
    if data.get("deployment") != deployment:
        report.fail(name, "its deployment is not the one of the signed manifest")
    trust: dict[str, Any] = {"pinned": [], "unpinned": sorted(texts)}
    if pinned is not None:
        # The keys file decides which sites there are: each of its sites is in the pack
        # with the same key, and the pack has no site of its own.
        trust = {"pinned": [], "unpinned": []}
        for site, text in sorted(texts.items()):
            if site not in pinned.keys:
                trust["unpinned"].append(site)
                report.fail(
                    name, f"site {site} is not in the keys file given: its key is not pinned"
                )
            elif pinned.keys[site] != text:
                report.fail(name, f"the key of site {site} is not the one in the keys file given")
            else:
                trust["pinned"].append(site)
        for site in sorted(set(pinned.keys) - set(texts)):
            report.fail(name, f"site {site} of the keys file given is not in the pack")
        if pinned.deployment is not None and pinned.deployment != deployment:
            report.fail(
                MANIFEST,
                f"it is of deployment {deployment}, the keys file given of {pinned.deployment}",
            )
    report.info["trust"] = (
        "keys pinned by a file obtained apart from the pack"
        if pinned is not None
        else "the pack's own keys only (pass --keys FILE to pin them)"
    )
    report.info["keys"] = trust
    return keys


def _check_signatures(
    report: Report,
    raw: bytes | str | None,
    manifest: bytes,
    signers: list[str],
    keys: dict[str, Ed25519PublicKey],
) -> None:
    """The manifest's signatures. ``manifest.sig`` also holds the SHA-256 of the manifest
    it signs, which tells a changed manifest from a changed signature."""
    if raw is None:
        report.fail(SIGNATURES, "is missing: the manifest is not signed")
        return
    if isinstance(raw, str):
        report.fail(SIGNATURES, raw)
        return
    try:
        data = _obj(_load(raw), SIGNATURES)
        if data.get("format") != SIGNATURES_FORMAT:
            raise Malformed(f"its format is not {SIGNATURES_FORMAT}")
        signed = _hex(data["manifest_sha256"])
        sigs = {
            str(_obj(s, "a signature")["site"]): _hex(s["signature"], 64)
            for s in _list(data["signatures"], "signatures")
        }
    except (ValueError, KeyError, TypeError) as exc:
        report.fail(SIGNATURES, f"cannot be read ({_why(exc)}): it was changed")
        return
    if keys and sorted(signers) != sorted(keys):
        report.fail(MANIFEST, "it is not signed by every site of the pack's keys")
    message = MANIFEST_TAG + b"\x00" + manifest
    same = hashlib.sha256(manifest).digest() == signed
    bad = []
    for site in sorted(set(signers) | set(sigs)):
        key = keys.get(site)
        if site not in sigs:
            report.fail(SIGNATURES, f"has no signature of site {site}")
        elif key is None:
            report.fail(
                SIGNATURES, f"holds a signature of site {site}, whose key is not in the pack"
            )
        elif not signature_holds(key, message, sigs[site]):
            bad.append(site)
    if bad and not same:
        report.fail(MANIFEST, f"it was changed after it was signed (by {', '.join(bad)})")
    elif bad:
        report.fail(
            SIGNATURES, f"the signature of {', '.join(bad)} does not verify: it was changed"
        )
    elif not same:
        report.fail(SIGNATURES, "the manifest SHA-256 it records was changed")
    report.info["manifest_signed_by"] = sorted(set(sigs) - set(bad))


@dataclass
class Segment:
    """A site's proven part of its log: entries by number and heads by size."""

    site: str
    member: str
    entries: dict[int, dict[str, Any]] = field(default_factory=dict)  # seq -> parsed payload
    heads: dict[int, Head] = field(default_factory=dict)  # only heads whose signature holds
    witnessed: list[dict[str, Any]] = field(default_factory=list)
    proven: bool = False  # every entry proven in a signed head


def _check_segments(
    report: Report,
    content: dict[str, bytes],
    kinds: dict[str, str],
    keys: dict[str, Ed25519PublicKey],
    since: dt.date,
    until: dt.date,
) -> dict[str, Segment]:
    out: dict[str, Segment] = {}
    for name in _member(content, kinds, "audit"):
        try:
            seg = _check_segment(report, name, content[name], keys, since, until)
        except (ValueError, KeyError, TypeError) as exc:
            report.fail(name, f"cannot be read ({_why(exc)})")
            continue
        if seg is not None:
            out[seg.site] = seg
    for site in sorted(set(keys) - set(out)):
        report.fail(f"audit/{site}.json", f"the pack has no readable audit segment of site {site}")
    return out


def _check_segment(
    report: Report,
    name: str,
    raw: bytes,
    keys: dict[str, Ed25519PublicKey],
    since: dt.date,
    until: dt.date,
) -> Segment | None:
    data = _obj(_load(raw), name)
    if data.get("format") != SEGMENT_FORMAT:
        raise Malformed(f"its format is not {SEGMENT_FORMAT}")
    site = str(data["site"])
    key = keys.get(site)
    if key is None:
        report.fail(name, f"site {site} has no key in the pack")
        return None
    seg = Segment(site, name)
    failures = len(report.failures)

    # Heads: each signed by the site, each extending the one before.
    heads = [Head.parse(h) for h in _list(data["heads"], "heads")]
    for h in heads:
        if h.site != site:
            report.fail(name, f"the head of size {h.size} is of another site ({h.site})")
        elif not h.verifies(key):
            report.fail(name, f"the head of size {h.size} has a bad signature (forged or changed)")
        else:
            seg.heads[h.size] = h
    sizes = [h.size for h in heads]
    if sizes != sorted(set(sizes)):
        report.fail(name, "its heads are not in order of size")
    proofs = {
        (_int(c["from"]), _int(c["to"])): [_hex(x) for x in _list(c["proof"], "a proof")]
        for c in (_obj(c, "a consistency proof") for c in _list(data["consistency"], "consistency"))
    }
    for older, newer in itertools.pairwise(heads):
        path = proofs.get((older.size, newer.size))
        if path is None:
            report.fail(
                name, f"no consistency proof from the head of size {older.size} to {newer.size}"
            )
        elif not verify_consistency(older.size, newer.size, older.root, newer.root, path):
            report.fail(
                name,
                f"the head of size {newer.size} does not extend the head of size {older.size} "
                "(the consistency proof fails: the log was rewritten, or the proof changed)",
            )

    # Entries: one chain, each in the closing head.
    entries = _list(data["entries"], "entries")
    closing_size = data.get("closing")
    closing = seg.heads.get(closing_size) if isinstance(closing_size, int) else None
    paths = {
        _int(p["seq"]): [_hex(x) for x in _list(p["path"], "a path")]
        for p in (_obj(p, "an inclusion proof") for p in _list(data["inclusion"], "inclusion"))
    }
    if entries and closing is None:
        report.fail(name, "the head its entries are proved against is missing or not valid")
    prev_seq: int | None = None
    prev_digest = b""
    for e in entries:
        e = _obj(e, "an entry")
        seq, payload, prev = _int(e["seq"]), str(e["payload"]), _hex(e["prev_hash"], None)
        digest = entry_hash(prev, seq, payload)
        if prev_seq is not None and (seq != prev_seq + 1 or prev != prev_digest):
            report.fail(name, f"entry {seq} does not follow entry {prev_seq} in the hash chain")
        prev_seq, prev_digest = seq, digest
        if closing is not None:
            path = paths.get(seq)
            if path is None:
                report.fail(name, f"entry {seq} has no inclusion proof")
            elif not verify_inclusion(leaf_hash(digest), seq - 1, closing.size, path, closing.root):
                report.fail(
                    name,
                    f"entry {seq} is not in the signed head of size {closing.size} "
                    "(its inclusion proof fails: the entry or the proof was changed)",
                )
        try:
            seg.entries[seq] = _obj(_load(payload), "a payload")
        except ValueError:
            report.fail(name, f"entry {seq} does not hold a JSON payload")
    newest = heads[-1] if heads else None
    # The ends: cut at signed heads, so that no entry of the period was left out either end.
    lo, hi = segment_bounds([(h.size, h.signed_at) for h in seg.heads.values()], since, until)
    if entries and _int(entries[0]["seq"]) != lo:
        report.fail(
            name, f"its first entry is {_int(entries[0]['seq'])}, not {lo}, the one after the "
            "newest head signed before the period: the start of the period may have been cut",
        )  # fmt: skip
    if entries and prev_seq != hi:
        report.fail(
            name, f"its last entry is {prev_seq}, not {hi}, the size of the first head signed "
            "after the period (or the newest): the end of the period may have been cut",
        )  # fmt: skip
    if not entries and lo <= hi:
        report.fail(
            name, f"it holds no entries, though its heads show entries {lo}-{hi} around the "
            "period: the period may have been cut",
        )  # fmt: skip
    seg.witnessed = [
        _obj(w, "a witness record") for w in _list(data.get("witnessed", []), "witnessed")
    ]
    seg.proven = len(report.failures) == failures
    days = [_safe_day(e) for e in seg.entries.values()]
    report.sites[site] = {
        "entries": len(entries),
        "in_period": sum(1 for d in days if d is not None and since <= d <= until),
        "first": _int(entries[0]["seq"]) if entries else None,
        "last": prev_seq,
        "heads": len(heads),
        "closing_head": closing_size if entries else None,
        "newest_head": newest.size if newest else None,
        "witnessed_by": [],
        "recorded_by": [],
        "witnessed_head": None,
        "not_yet_signed": data.get("not_yet_signed", 0),
        "covered_until": newest.signed_at if newest else None,
        "proven": seg.proven,
    }
    return seg


def _check_pinned_heads(report: Report, segments: dict[str, Segment], pinned: Pinned) -> None:
    """A head of the keys file must be in the pack, the same signed head: two different
    signed roots for one size are a forked log. A pinned head no larger than the pack's
    newest that the pack does not hold cannot be compared, and fails too (``domicile
    evidence export --pinned FILE`` ships the deployment's head of each size of a heads
    file); a pinned head newer than the pack's newest is only noted."""
    for site, head in sorted(pinned.heads.items()):
        seg = segments.get(site)
        if seg is None:
            continue  # a site of the keys file missing from the pack fails in _check_keys
        newest = max(seg.heads, default=0)
        if head.size in seg.heads and seg.heads[head.size] != head:
            report.fail(
                seg.member,
                f"its head of size {head.size} is not the one in the keys file: the log was "
                "forked or rewritten",
            )
        elif head.size in seg.heads:
            if site in report.sites:
                report.sites[site]["matches_pinned_head"] = head.size
        elif head.size <= newest:
            report.fail(
                seg.member,
                f"it holds no head of size {head.size}, the head of the keys file, so the two "
                "cannot be compared (export the pack with --pinned KEYS_FILE)",
            )
        elif site in report.sites:
            report.sites[site]["pinned_head_newer"] = head.size


def _safe_day(entry: dict[str, Any]) -> dt.date | None:
    try:
        return _day(entry.get("at"))
    except Malformed:
        return None


def _check_witnesses(
    report: Report, segments: dict[str, Segment], keys: dict[str, Ed25519PublicKey]
) -> None:
    """Each witness's record of a head, as an entry proven in the witness's own signed log."""
    for site, seg in sorted(segments.items()):
        by: dict[int, set[str]] = {}
        claims: dict[int, set[str]] = {}
        for w in seg.witnessed:
            try:
                witness, size, seq = str(w["witness"]), _int(w["size"]), _int(w["seq"])
                head = seg.heads.get(size)
                if head is None:
                    report.fail(
                        seg.member, f"a witness record names a head of size {size} not in the pack"
                    )
                    continue
                other = segments.get(witness)
                if witness == site or witness not in keys or other is None:
                    report.fail(
                        seg.member,
                        f"a witness record names {witness}, not another site of the pack",
                    )
                    continue
                if "path" not in w:  # recorded after the witness's newest head: claimed only
                    claims.setdefault(size, set()).add(witness)
                    continue
                entry = _obj(w["entry"], "a witness entry")
                payload, prev = str(entry["payload"]), _hex(entry["prev_hash"], None)
                against = other.heads.get(_int(w["head_size"]))
                path = [_hex(x) for x in _list(w["path"], "a path")]
                leaf = leaf_hash(entry_hash(prev, seq, payload))
                if against is None or not verify_inclusion(
                    leaf, seq - 1, against.size, path, against.root
                ):
                    report.fail(
                        seg.member,
                        f"the record of its head of size {size} by {witness} is not proved "
                        f"in {witness}'s signed log",
                    )
                    continue
                recorded = _load(payload)
                detail = recorded.get("detail", {}) if isinstance(recorded, dict) else {}
                if (
                    not payload.startswith(WITNESS_PREFIX)
                    or "refused" in detail
                    or not head.same(detail.get("head"))
                ):
                    report.fail(
                        seg.member,
                        f"entry {seq} of {witness}'s log does not record its head of size {size}",
                    )
                    continue
                by.setdefault(size, set()).add(witness)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                report.fail(seg.member, f"a witness record cannot be read ({_why(exc)})")
        summary = report.sites.get(site)
        if summary is not None:
            at = summary["closing_head"] or summary["newest_head"]
            summary["witnessed_by"] = sorted(by.get(at, set()))
            summary["recorded_by"] = sorted(claims.get(at, set()))
            if by:
                biggest = max(by)
                summary["witnessed_head"] = {"size": biggest, "by": sorted(by[biggest])}


def _detail(entry: dict[str, Any]) -> dict[str, Any]:
    detail = entry.get("detail")
    return detail if isinstance(detail, dict) else {}


def is_masked(entry: dict[str, Any]) -> bool:
    """A masked disclosure: its own kind, or (written before it had one) a transfer
    marked masked."""
    if entry.get("action") == "disclose_masked":
        return True
    return entry.get("action") == "transfer" and bool(_detail(entry).get("masked"))


# The transfer ledger's rows and totals, made from log entries: ``domicile transfers``
# lists them so, and the verifier rebuilds them from the proven entries to compare whole.


def transfer_row(site: str, seq: int, entry: dict[str, Any]) -> dict[str, Any]:
    """A transfer's row of the ledger (without its record token)."""
    detail = _detail(entry)
    return {
        "at": entry.get("at"),
        "logged_at_site": site,
        "seq": seq,
        "kind": detail.get("kind", "access"),
        "from_country": detail.get("from_country"),
        "to_country": detail.get("to_country", "?"),
        "record": entry.get("record"),
        "categories": entry.get("categories", []),
        "routes": detail.get("routes", []),
        "rules": entry.get("rules", []),
        "bases": detail.get("bases", []),
        "filings": detail.get("filings", []),
        "purpose": entry.get("purpose"),
        "requester": entry.get("requester"),
        "client": entry.get("client"),
    }


def masked_row(site: str, seq: int, entry: dict[str, Any]) -> dict[str, Any]:
    """A masked disclosure's row of the ledger (without its record token)."""
    detail = _detail(entry)
    return {
        "at": entry.get("at"),
        "logged_at_site": site,
        "seq": seq,
        "from_country": detail.get("from_country"),
        "to_country": detail.get("to_country"),
        "record": entry.get("record"),
        "fields": entry.get("fields", []),
        "masks": detail.get("masks", {}),
        "withheld": detail.get("withheld", []),
        "rules": entry.get("rules", []),
        "purpose": entry.get("purpose"),
        "requester": entry.get("requester"),
        "client": entry.get("client"),
    }


def ledger_totals(entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The ledger's totals over log entries of transfers and masked disclosures: per
    destination, transfers, distinct subjects, kinds, routes and filings relied on;
    masked disclosures counted apart."""
    total, masked_total = 0, 0
    by: dict[str, dict[str, Any]] = {}
    masked_by: dict[str, int] = {}
    subjects: dict[str, set[str]] = {}
    for entry in entries:
        detail = _detail(entry)
        dest = detail.get("to_country", "?")
        if is_masked(entry):
            masked_total += 1
            masked_by[dest] = masked_by.get(dest, 0) + 1
            continue
        total += 1
        agg = by.setdefault(
            dest, {"transfers": 0, "subjects": 0, "kinds": {}, "routes": {}, "filings": []}
        )
        agg["transfers"] += 1
        kind = detail.get("kind", "access")
        agg["kinds"][kind] = agg["kinds"].get(kind, 0) + 1
        for route in detail.get("routes", []):
            agg["routes"][route] = agg["routes"].get(route, 0) + 1
        agg["filings"] = sorted(set(agg["filings"]) | set(detail.get("filings", [])))
        if entry.get("subject"):
            subjects.setdefault(dest, set()).add(entry["subject"])
    for dest, agg in by.items():
        agg["subjects"] = len(subjects.get(dest, ()))
    return {
        "total": total,
        "by_destination": by,
        "masked_disclosures": {"total": masked_total, "by_destination": masked_by},
    }


def _check_ledger(
    report: Report,
    content: dict[str, bytes],
    kinds: dict[str, str],
    segments: dict[str, Segment],
    since: dt.date,
    until: dt.date,
) -> None:
    """The ledger is exactly what the proven segments' transfers (and masked disclosures)
    of the period make: every row rebuilt from its entry and compared whole, and the
    totals recounted from the entries."""
    names = _member(content, kinds, "ledger")
    if not names:
        report.fail("ledger/transfers.json", "the pack has no readable transfer ledger")
        return
    name = names[0]
    try:
        data = _obj(_load(content[name]), name)
        if data.get("format") != LEDGER_FORMAT:
            raise Malformed(f"its format is not {LEDGER_FORMAT}")
        listed = _list(data["entries"], "entries")
        masked_part = _obj(data["masked_disclosures"], "masked_disclosures")
        masked = _list(masked_part["entries"], "entries")
    except (ValueError, KeyError, TypeError) as exc:
        report.fail(name, f"cannot be read ({_why(exc)})")
        return
    expected: dict[tuple[str, int], dict[str, Any]] = {}  # (site, seq) -> its entry
    for site, seg in segments.items():
        for seq, entry in seg.entries.items():
            if entry.get("action") in ("transfer", "disclose_masked"):
                try:
                    if since <= _day(entry.get("at")) <= until:
                        expected[(site, seq)] = entry
                except Malformed:
                    continue
    seen: set[tuple[str, int]] = set()
    for masked_rows, rows in ((False, listed), (True, masked)):
        for raw in rows:
            try:
                row = _obj(raw, "a ledger entry")
                where = (str(row["logged_at_site"]), _int(row["seq"]))
                got = expected.get(where)
                make = masked_row if masked_rows else transfer_row
                if (
                    got is None
                    or is_masked(got) is not masked_rows
                    or where in seen
                    or row != make(where[0], where[1], got)
                ):
                    report.fail(
                        name,
                        f"its entry for {where[0]} entry {where[1]} is not that entry of the "
                        "site's proven log",
                    )
                seen.add(where)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                report.fail(name, f"an entry cannot be read ({_why(exc)})")
    missing = sorted(set(expected) - seen)
    for site, seq in missing[:20]:
        report.fail(
            name, f"entry {seq} of site {site} is a transfer of the period it does not list"
        )
    if len(missing) > 20:
        report.fail(name, f"and {len(missing) - 20} more transfers of the period it does not list")
    totals = ledger_totals([expected[k] for k in sorted(expected)])
    stated = {
        "total": data.get("total"),
        "by_destination": data.get("by_destination"),
        "masked_disclosures": {k: v for k, v in masked_part.items() if k != "entries"},
    }
    if stated != totals:
        report.fail(name, "its totals are not those of the transfers of the proven logs")
    if data.get("period") != report.info.get("period"):
        report.fail(name, "its period is not the one of the signed manifest")
    extra = sorted(set(data) - {"format", "period", *stated, "entries"})
    if extra:
        report.fail(name, f"it holds what no log entry shows: {', '.join(extra)}")
    report.info["ledger"] = {"transfers": len(listed), "masked_disclosures": len(masked)}


# --- the command -----------------------------------------------------------------------


def render(report: Report) -> str:
    """The report for people: one line per site, one per failure."""
    d = report.to_dict()
    period = d.get("period") or {}
    lines = [
        f"evidence pack {d['pack']}: deployment {d.get('deployment')}, "
        f"{period.get('since')} to {period.get('until')}, exported {d.get('exported_at')}"
    ]
    keys = d.get("keys") or {}
    if d.get("trust"):
        lines.append(f"trust: {d['trust']}")
    if keys.get("unpinned") and keys.get("pinned"):
        lines.append(f"  not pinned: {', '.join(keys['unpinned'])}")
    for site, s in sorted(d["sites"].items()):
        if s["entries"]:
            span = (
                f"entries {s['first']}-{s['last']} ({s['in_period']} of the period) proven in "
                f"the head of size {s['closing_head']}"
            )
        else:
            span = "no entries"
        lines.append(f"  {site}: {span}; signed heads: {s['heads']}")
        if s["witnessed_by"]:
            lines.append(f"    that head is witnessed by {', '.join(s['witnessed_by'])}")
        elif s["witnessed_head"]:
            w = s["witnessed_head"]
            lines.append(
                f"    the head of size {w['size']} is witnessed by {', '.join(w['by'])}; "
                "the later ones extend it"
            )
        else:
            lines.append("    no head of it shown witnessed by another site")
        covered = s["covered_until"]
        if covered and covered[:10] < str(period.get("until")):
            lines.append(
                f"    this log is covered up to its newest head in the pack, signed {covered}, "
                "before the period's end: later entries are not"
            )
        if s["not_yet_signed"]:
            lines.append(
                f"    the exporter counted {s['not_yet_signed']} later operations of the period "
                "that no signed head covered yet: not in this pack"
            )
        if s["recorded_by"]:
            lines.append(
                f"    {', '.join(s['recorded_by'])} recorded that head after their newest signed "
                "head: not provable in this pack yet"
            )
    ledger = d.get("ledger")
    if ledger:
        lines.append(
            f"  transfer ledger: {ledger['transfers']} transfers and "
            f"{ledger['masked_disclosures']} masked disclosures, each an entry of a proven log"
        )
    for f in d["failures"]:
        lines.append(f"FAILED {f['member']}: {f['problem']}")
    lines.append(
        "ok: every signature and proof holds"
        if report.ok
        else f"{len(d['failures'])} checks failed"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="verify.py", description="Check a domicile evidence pack offline."
    )
    parser.add_argument("pack", help="the evidence pack (a .zip)")
    parser.add_argument("--keys", help="site keys obtained apart from the pack, to pin trust")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        pinned = load_pinned(Path(args.keys)) if args.keys else None
        report = check_pack(args.pack, pinned)
    except PackUnreadable as exc:
        if args.json:
            print(json.dumps({"error": {"code": "bad_input", "message": str(exc)}}, indent=2))
        else:
            print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=2) if args.json else render(report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
