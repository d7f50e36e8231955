"""Checking an attestation offline, with nothing but the sites' public keys.

The keys come from a heads file (``domicile audit heads --out``) obtained apart from the
proof: it pins each site's public key and a signed audit tree head. For every site in it,
the proof must show the site's signed commitment, recorded in the site's witnessed audit
log under a head that is the pinned one, or a newer one with an RFC 9162 consistency proof
from the pinned one (``attest subject --heads FILE`` makes it); a head older than the
pinned one is **stale** (a newer commitment may say otherwise). Then the subject's leaf in
the commitment, or two neighbours bracketing its absence. The home site must hold the
subject's primary records; any other site that holds the subject holds a copy, and must
show the transfer entries that brought it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from domicile.attest.commitment import (
    CommitmentHead,
    check_absent,
    check_member,
    newest_message,
    unhex,
)
from domicile.attest.service import FORMAT
from domicile.audit.heads import HeadsFile, TreeHead, parse_public_key
from domicile.audit.merkle import HASH_SIZE, leaf_hash, verify_consistency, verify_inclusion
from domicile.crypto.signing import verify
from domicile.errors import BadInput
from domicile.stores.base import entry_hash


@dataclass
class SiteResult:
    site: str
    holds: str = ""
    problems: list[str] = field(default_factory=list)
    transfers: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "ok": not self.problems,
            "holds": self.holds,
            "transfers": self.transfers,
            "problems": self.problems,
        }


@dataclass
class Report:
    subject: str = ""
    home: str = ""
    sites: list[SiteResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(not s.problems for s in self.sites)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "subject": self.subject,
            "home": self.home,
            "held_at": [s.site for s in self.sites if s.holds in ("primary", "copy")],
            "sites": [s.to_dict() for s in self.sites],
            "problems": self.problems,
        }


def load(path: str | Path) -> Any:
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"no proof at {p}") from None
    except (OSError, UnicodeDecodeError, ValueError):
        raise BadInput(
            f"{p} is not an attestation", hint="make one with `domicile attest subject`"
        ) from None
    if not isinstance(data, Mapping) or data.get("format") != FORMAT:
        raise BadInput(
            f"{p} is not an attestation ({FORMAT})", hint="make one with `domicile attest subject`"
        )
    return data


def check(document: Any, heads: HeadsFile, expect: str | None = None) -> Report:
    """Check ``document`` against the pinned ``heads`` and the subject hash ``expect``;
    every failure is named. Without ``expect`` the report fails as unbound: a proof checked
    against whatever hash it names could be passed off as about someone else."""
    report = Report()
    try:
        subject = unhex(document.get("subject"), HASH_SIZE)
    except ValueError:
        report.problems.append("the proof names no subject hash (32 bytes, hex)")
        return report
    report.subject = subject.hex()
    report.home = str(document.get("home", ""))
    if expect is None:
        report.problems.append(
            "unbound: the proof was not checked against the subject it must be about "
            "(--subject HASH); it could be a true proof about someone else"
        )
    elif expect.lower() != report.subject:
        report.problems.append(
            f"the proof is for another subject ({report.subject[:16]}..., expected {expect[:16]}...)"
        )
    sites = document.get("sites")
    if not isinstance(sites, Mapping):
        report.problems.append("the proof has no sites")
        return report
    if report.home not in heads.keys:
        report.problems.append(f"the home site {report.home!r} is not in the heads file")
    for extra in sorted(set(sites) - set(heads.keys)):
        report.problems.append(f"site {extra!r} is not in the heads file")
    for site in sorted(heads.keys):
        result = SiteResult(site)
        report.sites.append(result)
        section = sites.get(site)
        if not isinstance(section, Mapping):
            result.problems.append("the proof says nothing about this site")
            continue
        try:
            _check_site(site, section, subject, report.home, heads, result)
        except BadInput as exc:
            result.problems.append(exc.message)
    return report


def _check_site(
    site: str,
    section: Mapping[str, Any],
    subject: bytes,
    home: str,
    heads: HeadsFile,
    result: SiteResult,
) -> None:
    key = parse_public_key(heads.keys[site])
    audit_head = TreeHead.from_dict(section.get("audit_head"), "the audit tree head")
    if audit_head.site != site or not audit_head.verifies(key):
        raise BadInput("the audit tree head has a bad signature (forged or altered)")
    pinned = heads.heads.get(site)
    if pinned is None:
        raise BadInput("the heads file holds no tree head of this site")
    if audit_head.size < pinned.size:
        raise BadInput(
            f"stale: the proof stands on the audit tree head of size {audit_head.size}, the heads "
            f"file holds a newer one of size {pinned.size}; ask for a new proof"
        )
    if audit_head.size > pinned.size:
        _check_extends(section.get("consistency"), pinned, audit_head)
    elif audit_head.root != pinned.root:
        raise BadInput(
            f"the audit tree head of size {audit_head.size} differs from the one in the heads "
            "file (a forked or rewritten log)"
        )
    commitment = CommitmentHead.from_dict(section.get("commitment"), "the commitment")
    if commitment.site != site or not commitment.verifies(key):
        raise BadInput("the commitment has a bad signature (forged or altered)")
    entry = section.get("entry")
    try:
        seq = int(entry["seq"])  # type: ignore[index]
        payload = str(entry["payload"])  # type: ignore[index]
        prev = unhex(entry["prev_hash"], None)  # type: ignore[index]
        path = [unhex(h, HASH_SIZE) for h in section["audit_path"]]
    except (KeyError, TypeError, ValueError):
        raise BadInput(
            "the commitment's audit entry needs seq, payload, prev_hash and audit_path"
        ) from None
    if not 1 <= seq <= audit_head.size:
        raise BadInput(f"audit entry {seq} is not in the signed tree of {audit_head.size} entries")
    leaf = leaf_hash(entry_hash(prev, seq, payload))
    if not verify_inclusion(leaf, seq - 1, audit_head.size, path, audit_head.root):
        raise BadInput(f"audit entry {seq} is not in the signed tree of {audit_head.size} entries")
    try:
        recorded = json.loads(payload)
        ok = (
            recorded.get("action") == "attest"
            and recorded.get("site") == site
            and recorded.get("detail", {}).get("commitment") == commitment.to_dict()
        )
    except (ValueError, AttributeError):
        ok = False
    if not ok:
        raise BadInput(f"audit entry {seq} does not record this commitment")
    _check_newest(site, section.get("newest"), audit_head, seq, commitment, key)
    if "member" in section:
        role = check_member(commitment, subject, section["member"])
        result.holds = role
        if site == home and role != "primary":
            raise BadInput("the home site holds only a copy of the subject")
        if site != home and role == "primary":
            raise BadInput(f"the site holds primary records, but the proof names {home!r} as home")
        if role == "copy":
            _check_transfers(site, subject, section.get("transfers"), audit_head, result)
    elif "absence" in section:
        if site == home:
            raise BadInput("the home site does not hold the subject")
        check_absent(commitment, subject, section["absence"])
        result.holds = "nothing"
    else:
        raise BadInput("the proof shows neither the subject's leaf nor its absence")


def _check_newest(
    site: str,
    signature: Any,
    audit_head: TreeHead,
    seq: int,
    commitment: CommitmentHead,
    key: Ed25519PublicKey,
) -> None:
    """The site's signed word that entry ``seq`` is its newest commitment up to the signed
    audit head: without it an older commitment (made before a copy arrived) could stand for
    the newest one."""
    try:
        raw = unhex(signature, 64)
    except ValueError:
        raise BadInput(
            f"the proof does not show that entry {seq} is the site's newest commitment "
            "(no signed statement 'newest'); ask for a new proof"
        ) from None
    message = newest_message(site, audit_head.size, audit_head.root, seq, commitment.root)
    if not verify(key, message, raw):
        raise BadInput(
            f"the site did not sign that entry {seq} is its newest commitment up to its audit "
            f"tree head of size {audit_head.size} (an older commitment, or an altered proof)"
        )


def _check_extends(consistency: Any, pinned: TreeHead, head: TreeHead) -> None:
    """The proof's newer head extends the pinned one (RFC 9162 consistency proof)."""
    newer = (
        f"the proof stands on a tree head of size {head.size}, newer than the heads file's "
        f"({pinned.size})"
    )
    if not isinstance(consistency, Mapping):
        raise BadInput(
            f"{newer}, with no consistency proof from it: make the proof with "
            "`attest subject --heads FILE`, or export the heads again"
        )
    try:
        size = int(consistency["from_size"])
        path = [unhex(h, HASH_SIZE) for h in consistency["path"]]
    except (KeyError, TypeError, ValueError):
        raise BadInput(f"{newer}; its consistency proof needs from_size and path") from None
    if size != pinned.size:
        raise BadInput(
            f"{newer}; its consistency proof starts at size {size}, not at the heads file's"
        )
    if not verify_consistency(pinned.size, head.size, pinned.root, head.root, path):
        raise BadInput(
            f"{newer} and does not extend it (a forked or rewritten log, or a forged proof)"
        )


def _check_transfers(
    site: str, subject: bytes, transfers: Any, head: TreeHead, result: SiteResult
) -> None:
    """Each transfer entry is rebuilt from its payload, proven in the site's signed log, and
    read: a copy (``replica``) of this subject (its keyed hash) to this site, from another
    site, allowed. What the report shows comes from the payload, never from the proof."""
    if not isinstance(transfers, list) or not transfers:
        raise BadInput(
            "the site holds a copy, but the proof shows no transfer entry that allowed it"
        )
    for t in transfers:
        try:
            seq = int(t["seq"])
            prev = unhex(t["prev_hash"], None)
            payload = str(t["payload"])
            path = [unhex(h, HASH_SIZE) for h in t["audit_path"]]
        except (KeyError, TypeError, ValueError):
            raise BadInput("a transfer needs seq, prev_hash, payload and audit_path") from None
        if not 1 <= seq <= head.size or not verify_inclusion(
            leaf_hash(entry_hash(prev, seq, payload)), seq - 1, head.size, path, head.root
        ):
            raise BadInput(f"transfer entry {seq} is not in the signed tree of site {site!r}")
        try:
            data = json.loads(payload)
            detail = data.get("detail") or {}
            if not isinstance(detail, Mapping):
                raise ValueError
        except (ValueError, AttributeError):
            raise BadInput(f"transfer entry {seq} is not an audit entry") from None
        if data.get("action") != "transfer" or detail.get("kind") != "replica":
            raise BadInput(f"transfer entry {seq} records no copy (it is a {data.get('action')!r})")
        if data.get("site") != site:
            raise BadInput(f"transfer entry {seq} copied to site {data.get('site')!r}, not here")
        if data.get("decision") != "allow":
            raise BadInput(
                f"transfer entry {seq} did not allow the copy ({data.get('decision')!r})"
            )
        if not isinstance(data.get("requester"), str) or data["requester"] == site:
            raise BadInput(f"transfer entry {seq} names no other site the copy came from")
        if "subject_key" not in detail:
            raise BadInput(
                f"transfer entry {seq} was written before transfer entries named the subject's "
                "keyed hash: it cannot be bound to this subject (not checked, so not passed)"
            )
        if detail.get("subject_key") != subject.hex():
            raise BadInput(f"transfer entry {seq} copied another subject")
        result.transfers.append(
            {
                "seq": seq,
                "from_site": data.get("requester"),
                "collection": data.get("collection"),
                "decision": data.get("decision"),
                "rules": data.get("rules", []),
                "categories": data.get("categories", []),
                "at": data.get("at"),
                **{
                    k: detail.get(k, [])
                    for k in ("from_country", "to_country", "routes", "bases", "filings")
                },
            }
        )


def render(report: Report) -> str:
    lines = [f"subject {report.subject[:16]}... (keyed hash), home site {report.home}"]
    lines += [f"FAILED: {p}" for p in report.problems]
    for s in report.sites:
        if s.problems:
            lines += [f"FAILED {s.site}: {p}" for p in s.problems]
            continue
        what = {"primary": "holds the primary records", "copy": "holds a lawful copy"}.get(
            s.holds, "does not hold the subject"
        )
        lines.append(f"ok {s.site}: {what}")
        for t in s.transfers:
            why = ", ".join([*(t.get("rules") or []), *(t.get("routes") or [])])
            lines.append(
                f"   transfer entry {t['seq']}: {t.get('collection')} from {t.get('from_site')} "
                f"({t.get('from_country')} to {t.get('to_country')}), {t.get('decision')}"
                + (f" ({why})" if why else "")
            )
    lines.append("attestation verified" if report.ok else "attestation: checks failed")
    return "\n".join(lines)
