"""The evidence pack: what a deployment shows an inspector about a period, in one zip that
is checked offline with public keys only (``verifier.py``, shipped in it as ``verify.py``).

A pack is a list of members, each made by one function of ``MEMBERS`` from the same
``Export`` (the open vault, the period, the site keys). The reports of
``domicile.reports`` join it as one more function each. Then comes ``manifest.json``
(every member's SHA-256 and size, the period, the deployment id, domicile's version),
signed in ``manifest.sig`` with the Ed25519 key of every site of the deployment: the
keys whose public halves sign the tree heads and which an inspector may already hold
from a heads file (``docs/evidence.md`` says why these keys and not a key of its own).

Export only reads: the vault is opened read-only, no head is signed, nothing is
recorded. Entries after a site's newest signed head cannot be proved yet: the pack ends at
that head, and the operations of the period it leaves out are counted (``domicile audit
witness`` before exporting brings them in).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from domicile._version import __version__
from domicile.audit.heads import TreeHead, public_key_text
from domicile.audit.ledger import LogTree, is_witness_record, to_head
from domicile.audit.merkle import consistency_proof, inclusion_proof
from domicile.errors import BadInput
from domicile.evidence import verifier
from domicile.stores.base import AuditRow, SiteStore

if TYPE_CHECKING:
    from domicile.vault.service import Domicile

MANIFEST_TAG = verifier.MANIFEST_TAG
_FIXED_TIME = (2000, 1, 1, 0, 0, 0)  # zip member times: the manifest holds the export time


@dataclass(frozen=True)
class Member:
    path: str
    kind: str  # keys, ledger, audit, verifier, readme; later: report
    data: bytes


@dataclass
class Export:
    """What every member function reads from: the vault (read-only) and the period."""

    vault: Domicile
    since: dt.date
    until: dt.date
    exported_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())
    summary: dict[str, Any] = field(default_factory=dict)  # per site, for the command
    proven_upto: dict[str, int] = field(default_factory=dict)  # per site: the last entry shipped
    pinned: dict[str, set[int]] = field(default_factory=dict)  # per site: head sizes to ship

    @property
    def period(self) -> dict[str, str]:
        return {"since": self.since.isoformat(), "until": self.until.isoformat()}

    @property
    def deployment(self) -> str:
        return self.vault.config.model.environment_id


def _json(data: Any) -> bytes:
    return (json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()


# --- members -------------------------------------------------------------------------------


def keys_member(ex: Export) -> list[Member]:
    """Each site's public signing key: it signs the site's tree heads and the manifest, and
    the other sites witness with theirs."""
    sites = {
        s.id: {"country": s.country, "public_key": public_key_text(ex.vault.keys.verify_key(s.id))}
        for s in ex.vault.config.sites
    }
    doc = {"format": verifier.KEYS_FORMAT, "deployment": ex.deployment, "sites": sites}
    return [Member("keys.json", "keys", _json(doc))]


def ledger_member(ex: Export) -> list[Member]:
    """The transfer ledger of the period, as ``domicile transfers --masked`` lists it, all of
    it, without record tokens (fresh random strings that prove nothing), read up to the
    last entry each audit segment ships (``audit_members`` runs first), so that it holds
    no transfer logged meanwhile."""
    from domicile.vault.transfers import summarize

    out = summarize(
        ex.vault, since=ex.since, until=ex.until, limit=2**62, masked=True, upto=ex.proven_upto
    ).to_dict()
    if out["unavailable"]:
        from domicile.stores.base import SiteUnavailable

        raise SiteUnavailable(
            out["unavailable"][0], "it does not answer, and the ledger would be incomplete"
        )
    for entry in [*out["entries"], *out["masked_disclosures"]["entries"]]:
        entry.pop("token", None)
    doc = {"format": verifier.LEDGER_FORMAT, "period": ex.period, **out}
    doc.pop("unavailable")
    return [Member("ledger/transfers.json", "ledger", _json(doc))]


def audit_members(ex: Export) -> list[Member]:
    """Per site: the entries of the period, the signed heads around and in it, consistency
    proofs between them, each entry's inclusion proof, and each witness's record of the
    heads proved in the witness's own log."""
    stores = {s.id: ex.vault.store(s.id) for s in ex.vault.config.sites}
    heads = {sid: [to_head(sid, h) for h in store.heads()] for sid, store in stores.items()}
    trees = {sid: _MemoTree(store) for sid, store in stores.items()}
    out = []
    for sid, store in stores.items():
        chosen, closing, entries, left_out = _choose_heads(
            heads[sid], store, ex.since, ex.until, ex.pinned.get(sid, set())
        )
        ex.proven_upto[sid] = entries[-1].seq if entries else 0
        tree = trees[sid]
        doc: dict[str, Any] = {
            "format": verifier.SEGMENT_FORMAT,
            "site": sid,
            "period": ex.period,
            "entries": [
                {"seq": r.seq, "payload": r.payload, "prev_hash": r.prev_hash.hex()}
                for r in entries
            ],
            "heads": [h.to_dict() for h in chosen],
            "closing": closing.size if closing else None,
            "consistency": [
                {
                    "from": a.size,
                    "to": b.size,
                    "proof": _hexes(consistency_proof(a.size, b.size, tree.subtree)),
                }
                for a, b in itertools.pairwise(chosen)
            ],
            "inclusion": [
                {
                    "seq": r.seq,
                    "path": _hexes(inclusion_proof(r.seq - 1, closing.size, tree.subtree)),
                }
                for r in entries
                if closing is not None
            ],
            "witnessed": _witness_records(sid, chosen, stores, heads, trees),
            # Operations of the period after the newest signed head, not in the pack: the
            # exporter's count, to be proved by a later pack.
            "not_yet_signed": left_out,
        }
        ex.summary[sid] = {
            "entries": len(entries),
            "first": entries[0].seq if entries else None,
            "last": entries[-1].seq if entries else None,
            "in_period": sum(_in_period(r, ex.since, ex.until) for r in entries),
            "heads": len(chosen),
            "not_yet_signed": left_out,
        }
        out.append(Member(f"audit/{sid}.json", "audit", _json(doc)))
    return out


def verifier_member(ex: Export) -> list[Member]:
    return [Member("verify.py", "verifier", Path(verifier.__file__).read_bytes())]


def readme_member(ex: Export) -> list[Member]:
    text = f"""domicile evidence pack: deployment {ex.deployment}, {ex.since} to {ex.until}

To check it offline (Python 3.11+ and the `cryptography` package, nothing else):

    python verify.py THIS.zip --keys KEYS.json

KEYS.json: the deployment's public keys as you obtained them apart from this pack (a heads
file from `domicile audit heads --out`, or keys.json of a pack you trust). Without --keys
the pack is checked against its own keys.json, which shows that it is whole and
consistent, not who made it. `domicile evidence verify THIS.zip --keys KEYS.json` runs the
same checks. This verify.py is code the pack's maker chose: compare its SHA-256 with the
one of src/domicile/evidence/verifier.py in the published source of domicile
{__version__}, or use an independently installed domicile.

manifest.json        every member's SHA-256, the period, the deployment, domicile's version
manifest.sig         Ed25519 signatures of the manifest by every site's signing key
keys.json            each site's public key (tree heads, witnesses, the manifest)
audit/SITE.json      the site's audit entries of the period, its signed tree heads,
                     consistency and inclusion proofs (RFC 9162), witness records
ledger/transfers.json  the transfers and masked disclosures of the period
reports/             the reports of the period (JSON; HTML and PDF when they could be
                     rendered): what the operator states, covered by the manifest's hashes
verify.py            the checker
"""
    return [Member("README.txt", "readme", text.encode())]


def reports_member(ex: Export) -> list[Member]:
    """The reports of the period (registers, compliance per jurisdiction): JSON always, and
    HTML and PDF where the ``reports`` extra is installed. Covered by the manifest's hashes:
    they are what the operator says, and the audit members are what proves it."""
    import importlib.util

    from domicile.extras import EXTRAS
    from domicile.reports import report_files

    rendered = all(importlib.util.find_spec(m) for m in EXTRAS["reports"])
    formats = ("json", "html", "pdf") if rendered else ("json",)
    files = report_files(ex.vault, since=ex.since, until=ex.until, formats=formats)
    return [Member(path, "report", data) for path, data in sorted(files.items())]


# Each function gives members of the pack; a report is one more line here.
MEMBERS: tuple[Callable[[Export], list[Member]], ...] = (
    keys_member,
    audit_members,
    ledger_member,
    verifier_member,
    readme_member,
    reports_member,
)


# --- the zip -----------------------------------------------------------------------------


def export_pack(
    vault: Domicile,
    out: str | Path,
    *,
    since: dt.date,
    until: dt.date,
    tell: Callable[[str], None] | None = None,
    pinned: str | Path | None = None,
) -> dict[str, Any]:
    """Write the evidence pack of ``since``..``until`` (both days included, UTC) to
    ``out``, a new file; read-only towards the deployment. ``pinned``: a heads file an
    inspector holds; the pack then ships the deployment's own head of each size it names,
    proved consistent with the others. Returns what was written."""
    if since > until:
        raise BadInput("--since is after --until", hint="the period runs from --since to --until")
    target = Path(out)
    if target.exists():
        raise BadInput(
            f"{target} already exists", hint="name a new file; a pack is never overwritten"
        )
    if not target.parent.is_dir():
        raise BadInput(f"there is no folder {target.parent} to write {target.name} in")
    ex = Export(vault, since, until)
    if pinned is not None:
        try:
            held = verifier.load_pinned(Path(pinned))
        except verifier.PackUnreadable as exc:
            raise BadInput(
                str(exc), hint="give a heads file from `domicile audit heads --out`"
            ) from None
        ex.pinned = {site: {head.size} for site, head in held.heads.items()}
    members: list[Member] = []
    for make in MEMBERS:
        if tell is not None:
            tell(make.__name__.removesuffix("_member").removesuffix("_members"))
        members.extend(make(ex))
    paths = [m.path for m in members]
    if len(set(paths)) != len(paths):
        raise AssertionError("two members of the pack share a path")
    manifest = _json(
        {
            "format": verifier.PACK_FORMAT,
            "deployment": ex.deployment,
            "domicile_version": __version__,
            "period": ex.period,
            "exported_at": ex.exported_at,
            "signed_by": sorted(s.id for s in vault.config.sites),
            "members": [
                {
                    "path": m.path,
                    "kind": m.kind,
                    "sha256": hashlib.sha256(m.data).hexdigest(),
                    "bytes": len(m.data),
                }
                for m in members
            ],
        }
    )
    message = MANIFEST_TAG + b"\x00" + manifest
    signatures = _json(
        {
            "format": verifier.SIGNATURES_FORMAT,
            "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
            "signatures": [
                {"site": sid, "signature": vault.keys.signing_key(sid).sign(message).hex()}
                for sid in sorted(s.id for s in vault.config.sites)
            ],
        }
    )
    _write_zip(
        target,
        [
            Member(verifier.MANIFEST, "manifest", manifest),
            Member(verifier.SIGNATURES, "signature", signatures),
            *members,
        ],
    )
    return {
        "out": str(target),
        "sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
        "bytes": target.stat().st_size,
        "deployment": ex.deployment,
        "period": ex.period,
        "sites": ex.summary,
        "members": paths,
    }


def _write_zip(target: Path, members: list[Member]) -> None:
    """All or nothing: a temporary file beside the target, renamed when whole."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as zf:
            for m in members:
                info = zipfile.ZipInfo(m.path, date_time=_FIXED_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, m.data)
        if target.exists():
            raise BadInput(f"{target} appeared while the pack was written; nothing replaced it")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- choosing what to prove -----------------------------------------------------------------


class _MemoTree:
    """A site's ``LogTree`` whose subtree roots are remembered: the proofs of a run of
    entries share most of their nodes."""

    def __init__(self, store: SiteStore) -> None:
        self._tree = LogTree(store)
        self._memo: dict[tuple[int, int], bytes] = {}

    def subtree(self, lo: int, hi: int) -> bytes:
        key = (lo, hi)
        got = self._memo.get(key)
        if got is None:
            got = self._memo[key] = self._tree.subtree(lo, hi)
        return got


def _day(payload: str) -> dt.date:
    at = dt.datetime.fromisoformat(json.loads(payload)["at"])
    return (at.astimezone(dt.UTC) if at.tzinfo else at).date()


def _bounds(heads: list[TreeHead], since: dt.date, until: dt.date) -> tuple[int, int]:
    """The entries a pack ships, cut at signed heads (never at the entries' own times,
    which a skewed clock can put out of order): from the one after the newest head signed
    before the period (all before it were logged before that head was signed) to the first
    head signed after the period, or the newest head. ``verifier.segment_bounds`` is the
    same rule on the pack's side."""
    return verifier.segment_bounds([(h.size, h.signed_at) for h in heads], since, until)


def _segment_entries(store: SiteStore, lo: int, hi: int) -> list[AuditRow]:
    rows: list[AuditRow] = []
    if lo > hi:
        return rows
    for row in store.audit(lo):
        if row.seq > hi:
            break
        rows.append(row)
    return rows


def _in_period(row: AuditRow, since: dt.date, until: dt.date) -> bool:
    return since <= _day(row.payload) <= until


def _choose_heads(
    heads: list[TreeHead], store: SiteStore, since: dt.date, until: dt.date, pinned: set[int]
) -> tuple[list[TreeHead], TreeHead | None, list[AuditRow], int]:
    """The entries to ship (``_bounds``) and the heads: the newest before the period, those
    signed in it, the first after it (the closing head, which the inclusion proofs are
    against), the newest, and those of the sizes in ``pinned`` (the heads an inspector
    holds, so that the verifier can compare them). Entries after the newest head cannot
    be proved yet: those of the period that are operations (not a witness's records of
    other sites' heads, which every round leaves) are counted, so the export can say so."""
    newest = heads[-1].size if heads else 0
    left_out = sum(
        1
        for r in store.audit(newest + 1)
        if not is_witness_record(r.payload) and _in_period(r, since, until)
    )
    if not heads:
        return [], None, [], left_out
    lo, hi = _bounds(heads, since, until)
    entries = _segment_entries(store, lo, hi)
    chosen = {h.size: h for h in heads if since <= _signed_day(h) <= until or h.size in pinned}
    for h in heads:
        if h.size == lo - 1 or h.size == hi:
            chosen[h.size] = h
    chosen[heads[-1].size] = heads[-1]
    closing = chosen[hi] if entries else None
    return [chosen[s] for s in sorted(chosen)], closing, entries, left_out


def _signed_day(head: TreeHead) -> dt.date:
    return dt.datetime.fromisoformat(head.signed_at).astimezone(dt.UTC).date()


def _witness_records(
    site: str,
    chosen: list[TreeHead],
    stores: dict[str, SiteStore],
    heads: dict[str, list[TreeHead]],
    trees: dict[str, _MemoTree],
) -> list[dict[str, Any]]:
    """Where another site recorded one of ``chosen``: the entry of its log, proved in its
    newest signed head when that covers the entry (else listed as a claim only)."""
    wanted = {(h.size, h.root) for h in chosen}
    out: list[dict[str, Any]] = []
    for witness, store in stores.items():
        if witness == site:
            continue
        newest = heads[witness][-1] if heads[witness] else None
        for row in store.witnessed(site):
            if (row.size, row.root) not in wanted:
                continue
            record: dict[str, Any] = {"witness": witness, "size": row.size, "seq": row.seq}
            if newest is not None and newest.size >= row.seq:
                entry = _one(store.audit(row.seq), row.seq)
                record["entry"] = {"payload": entry.payload, "prev_hash": entry.prev_hash.hex()}
                record["head_size"] = newest.size
                record["path"] = _hexes(
                    inclusion_proof(row.seq - 1, newest.size, trees[witness].subtree)
                )
            out.append(record)
    return out


def _one(rows: Iterator[AuditRow], seq: int) -> AuditRow:
    row = next(rows, None)
    if row is None or row.seq != seq:
        from domicile.audit.ledger import AuditError

        raise AuditError(f"an audit log has no entry {seq}", hint="run `domicile audit verify`")
    return row


def _hexes(path: list[bytes]) -> list[str]:
    return [h.hex() for h in path]
