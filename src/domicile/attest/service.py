"""Commitments of a deployment's sites, and proofs of where one subject's data is.

``commit`` rebuilds each site's subject tree, signs its root and records it as an
``attest`` entry of the site's audit log, then runs a witness round so that the entry is
under a signed tree head that the other sites hold. It must run again after writes,
copies, deletions and erasures: a proof is made only from a commitment that the site's
current contents still rebuild exactly (else ``StaleCommitment`` names the site).

``prove`` reads only. Its document names the subject by its keyed hash alone and holds,
for every site of the deployment: the site's newest commitment, the audit entry that
records it with its inclusion proof under the site's newest signed tree head, and either
the subject's leaf (home site: primary; a copy site: copy, with the transfer entries that
brought the copies) or the two neighbours that show it absent.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from domicile.attest.commitment import (
    CommitmentHead,
    Role,
    SubjectTree,
    attest_key,
    newest_message,
    sign_commitment,
    subject_key,
    subjects_of,
)
from domicile.audit.heads import public_key_text
from domicile.audit.ledger import AuditEvent, LogTree
from domicile.audit.merkle import inclusion_proof
from domicile.crypto.signing import sign
from domicile.errors import BadInput, Conflict, ExitCode, NotFound
from domicile.stores.base import AuditRow, SiteStore, SiteUnavailable

if TYPE_CHECKING:
    from domicile.access import Access
    from domicile.config import Site
    from domicile.stores import StoredRecord
    from domicile.vault.service import Domicile

FORMAT = "domicile.attestation/1"
ATTEST_PREFIX = '{"action":"attest"'
TRANSFER_PREFIX = '{"action":"transfer"'


class StaleCommitment(Conflict):
    """A site's contents no longer match its newest commitment (or it has none): no proof
    until ``domicile attest commit`` runs (exit 1; over HTTP, 409)."""

    code = "stale_commitment"
    exit_code = ExitCode.CHECK_FAILED


def site_subjects(store: SiteStore) -> dict[str, Role]:
    """Every subject the site holds, and whether as primary or copy (one grouped query)."""
    return subjects_of((sid, only_copies) for sid, only_copies in store.subject_roles().items())


class _Trees:
    """The subject trees last built, each under the fingerprint of exactly what it was
    built from (the key, the site and its ``{subject: role}``). The site's subjects are
    read afresh on every use, and a kept tree is used only when they hash to the same
    fingerprint, which saves its keyed hashes and Merkle levels, the bulk of a proof's
    work; so a proof still reflects the site as it is now. A few trees are kept (a tree
    of a million subjects holds about 200 MB)."""

    MOST = 4

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: OrderedDict[bytes, SubjectTree] = OrderedDict()

    def get(self, vault: Domicile, site_id: str) -> tuple[SubjectTree, dict[str, Role]]:
        key = attest_key(vault.keys.token_key())
        subjects = site_subjects(vault.store(site_id))
        h = hashlib.sha256(b"domicile/attest/tree-cache/v1\x00" + key + site_id.encode())
        for sid in sorted(subjects):
            h.update(f"\x00{sid}\x00{subjects[sid]}".encode())
        fingerprint = h.digest()
        with self._lock:
            tree = self._kept.get(fingerprint)
            if tree is not None:
                self._kept.move_to_end(fingerprint)
                return tree, subjects
        tree = SubjectTree(key, site_id, subjects)
        with self._lock:
            self._kept[fingerprint] = tree
            while len(self._kept) > self.MOST:
                self._kept.popitem(last=False)
        return tree, subjects


_TREES = _Trees()


def build_tree(vault: Domicile, site_id: str) -> SubjectTree:
    return _TREES.get(vault, site_id)[0]


@dataclass
class Published:
    site: str
    head: CommitmentHead
    seq: int
    subjects: int
    changed: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "size": self.head.size,
            "root": self.head.root.hex(),
            "signed_at": self.head.signed_at,
            "seq": self.seq,
            "changed": self.changed,
        }


def _check_site(vault: Domicile, site_id: str) -> None:
    if site_id not in {s.id for s in vault.config.sites}:
        raise BadInput(
            f"no site named {site_id!r}",
            hint=f"the sites are: {', '.join(s.id for s in vault.config.sites)}",
        )


def commit(vault: Domicile, site: str | None = None) -> dict[str, Any]:
    """Rebuild, sign and publish each site's commitment (or one site's); a site whose tree
    did not change since its newest commitment publishes nothing new. Then a witness round."""
    from domicile.vault.auditing import witness_round

    ids = [site] if site else [s.id for s in vault.config.sites]
    for sid in ids:
        _check_site(vault, sid)
    out: list[Published] = []
    unavailable: list[str] = []
    for sid in ids:
        try:
            out.append(_publish(vault, sid))
        except SiteUnavailable:  # its commitment stays as it was; the others go ahead
            vault.forget_store(sid)
            unavailable.append(sid)
    rnd = witness_round(vault)
    return {
        "ok": not rnd.refused and not unavailable,
        "sites": [p.to_dict() for p in out],
        "unavailable": unavailable,
        "witness": rnd.to_dict(),
    }


def _publish(vault: Domicile, sid: str) -> Published:
    """One site's commitment: signed and recorded in one audit entry, unless unchanged."""
    tree = build_tree(vault, sid)
    latest = latest_commitment(vault.store(sid))
    if latest is not None and latest[0].root == tree.root and latest[0].size == tree.size:
        return Published(sid, latest[0], latest[1].seq, tree.subjects, False)
    head = sign_commitment(vault.keys.signing_key(sid), tree)
    event = AuditEvent("attest", sid, detail={"commitment": head.to_dict()})
    rows = vault.ledger(sid).append_now(vault.store(sid), [event])
    return Published(sid, head, rows[-1].seq, tree.subjects, True)


def latest_commitment(
    store: SiteStore, upto: int | None = None
) -> tuple[CommitmentHead, AuditRow] | None:
    """The newest ``attest`` entry of a site's log (up to entry ``upto``) and its head."""
    rows = store.audit_tagged(ATTEST_PREFIX, upto if upto is not None else 2**62, newest=True)
    if not rows or not rows[0].payload.startswith(ATTEST_PREFIX):
        return None
    found = rows[0]
    detail = json.loads(found.payload).get("detail", {})
    return CommitmentHead.from_dict(detail.get("commitment"), "a commitment"), found


def status(vault: Domicile) -> list[dict[str, Any]]:
    """Per site: its newest commitment and whether the site's contents still match it."""
    out = []
    for s in vault.config.sites:
        store = vault.store(s.id)
        latest = latest_commitment(store)
        tree = build_tree(vault, s.id)
        current = latest is not None and latest[0].root == tree.root
        out.append(
            {
                "site": s.id,
                "committed": latest is not None,
                "current": current,
                "signed_at": latest[0].signed_at if latest else None,
                "seq": latest[1].seq if latest else None,
            }
        )
    return out


# --- proofs -------------------------------------------------------------------------------


OPERATION = "subjects:attest"


PURPOSE = "attestation"


def resolve_subject(
    vault: Domicile,
    *,
    token: str | None = None,
    identity: tuple[str, str] | None = None,
    access: Access | None = None,
    as_site: str | None = None,
    purpose: str = PURPOSE,
) -> tuple[str, str, AuditEvent | None]:
    """(home site, subject id) of a token's record, or of an identifying value, and the
    audit event of the disclosure (a token's only). The one check of every interface: the
    caller (``access``) needs ``subjects:attest`` for its site, the purpose and the
    record's collection (else the record answers as missing), names the subject by a
    token only, and the policy must let its site read the record, as a read from there
    would be decided (a proof shows where the subject is held, and what was copied where:
    no less than the record's metadata). A refusal is audited at the home site. The local
    operator (the CLI, with the keyring) is not decided: it can read the sites anyway."""
    from domicile.vault.core import check_purpose

    if (token is None) == (identity is None):
        raise BadInput("name the subject by --token or by --identity, one of them")
    check_purpose(purpose)
    access, requester = vault._acting(access, as_site)
    vault.authorize(access, OPERATION, site=requester.id, purpose=purpose)
    if token is not None:
        site, record_id = vault._locate(token)
        rec = vault.store(site.id).get(record_id)
        if rec is None or rec.is_replica:
            raise NotFound("no such record", hint="the token's record was deleted or erased")
        vault.authorize(access, OPERATION, collection=rec.collection, hide=True, purpose=purpose)
        # A proof reads the subject's metadata: a restriction stops it as it stops a read
        # (unless the purpose's basis is one the block allows), for every caller.
        vault.check_blocks(
            access, "records:read", site.id, rec.subject_id, purpose,
            collection=rec.collection, record=rec.record_id,
        )  # fmt: skip
        if access.scopes is None:  # the local operator, who holds the keyring: no decision
            return site.id, rec.subject_id, None
        return site.id, rec.subject_id, _decide(vault, site, rec, requester, purpose, access)
    if not access.unrestricted:
        raise BadInput("a client names the subject by a token")
    assert identity is not None
    site_id, subject = _by_identity(vault, *identity)
    vault.check_blocks(access, "records:read", site_id, subject, purpose)
    return site_id, subject, None


def _decide(
    vault: Domicile, site: Site, rec: StoredRecord, requester: Site, purpose: str, access: Access
) -> AuditEvent:
    """The policy's word on a read of ``rec`` from ``requester``'s site (its residency is
    opened, nothing else): allowed, the event to audit; else the refusal audited and
    raised. A masked disclosure is no allowance here (a proof is not maskable)."""
    from domicile.packs import Outcome
    from domicile.vault.errors import PolicyRefused

    abroad = requester.country != site.country
    shape = vault._record_shape(rec)
    facts = vault.transfer_facts(site, requester.country) if abroad else {}
    decision = vault._decide_sorted(
        vault._residency(site, rec), shape.categories, "retrieve", site.country,
        requester.country if abroad else None, tuple(sorted(facts.items())), vault._stamp(),
    )  # fmt: skip
    event = AuditEvent(
        action="read", site=site.id, purpose=purpose, collection=rec.collection,
        record=rec.record_id, subject=rec.subject_id, requester=requester.id,
        client=access.client, decision=decision.outcome.value, rules=decision.rule_ids,
        categories=shape.categories, detail={"operation": OPERATION},
    )  # fmt: skip
    if decision.outcome is Outcome.allow:
        return event
    refusal = replace(
        event, action="refuse", detail={**event.detail, "to_country": requester.country}
    )
    vault.audit_read(site.id, refusal.payload())
    raise PolicyRefused(
        f"policy does not let site {requester.id!r} ({requester.country}) read this record, "
        f"so not learn where its subject is held: {decision.outcome.value}",
        decision=decision.to_dict(),
        hint="the decision's rules say why",
    )


def _by_identity(vault: Domicile, name: str, value: str) -> tuple[str, str]:
    from domicile.vault import values
    from domicile.vault.core import IDENTITY

    spec = None
    for coll in vault.config.model.collections.values():
        for fname, fspec in coll.fields.items():
            if fspec.identifies and name in (fname, fspec.category):
                spec, fname_found = fspec, fname
                break
        if spec is not None:
            break
    if spec is None:
        raise BadInput(
            f"no collection has a field {name!r} that identifies the subject",
            hint="--identity FIELD=VALUE names a field marked identifies: true",
        )
    norm = values.normalize(fname_found, spec, values.coerce(fname_found, spec, value))
    found: set[tuple[str, str]] = set()
    for s in vault.config.sites:
        digest = vault._indexers[s.id].digest(IDENTITY, spec.category, norm)
        store = vault.store(s.id)
        sid = store.subjects_for([digest]).get(digest)
        if sid is not None and any(not r.is_replica for r in store.subject_records(sid)):
            found.add((s.id, sid))
    if not found:
        raise NotFound(
            "no subject has that identifying value", hint="check the value, or use --token"
        )
    if len(found) > 1:
        raise BadInput(
            f"that value identifies subjects at {len(found)} sites",
            hint="name one of them by --token",
        )
    return found.pop()


def prove(
    vault: Domicile,
    *,
    token: str | None = None,
    identity: tuple[str, str] | None = None,
    access: Access | None = None,
    as_site: str | None = None,
    since: Mapping[str, int] | None = None,
    purpose: str = PURPOSE,
    audit: bool = False,
) -> dict[str, Any]:
    """The attestation document of one subject (see the module's docstring). Reads only,
    unless ``audit`` (a client's request, over the API): then the disclosure is audited at
    the home site, as a read is, once the proof is made. ``since``: the sizes of the audit
    heads the verifier holds (its heads file), per site; where the newest head is bigger,
    the proof carries a consistency proof from it."""
    home, subject, event = resolve_subject(
        vault, token=token, identity=identity, access=access, as_site=as_site, purpose=purpose
    )
    key = attest_key(vault.keys.token_key())
    hashed = subject_key(key, subject)
    sites: dict[str, Any] = {}
    for s in vault.config.sites:
        store = vault.store(s.id)
        tree, subjects = _TREES.get(vault, s.id)
        ledger = vault.ledger(s.id)
        audit_head = ledger.latest_head(store)
        latest = latest_commitment(store, audit_head.size if audit_head else 0)
        if latest is None or audit_head is None:
            raise StaleCommitment(
                f"site {s.id!r} has no witnessed commitment yet",
                hint="run `domicile attest commit`",
            )
        head, row = latest
        if head.root != tree.root or head.size != tree.size:
            raise StaleCommitment(
                f"site {s.id!r} changed since its newest commitment ({head.signed_at})",
                hint="run `domicile attest commit`, then ask again",
            )
        role = subjects.get(subject)
        section: dict[str, Any] = {
            "commitment": head.to_dict(),
            "entry": {"seq": row.seq, "payload": row.payload, "prev_hash": row.prev_hash.hex()},
            "audit_head": audit_head.to_dict(),
            "audit_path": _entry_path(store, row.seq, audit_head.size),
            "newest": sign(
                vault.keys.signing_key(s.id),
                newest_message(s.id, audit_head.size, audit_head.root, row.seq, head.root),
            ).hex(),
            "public_key": public_key_text(vault.keys.verify_key(s.id)),
        }
        known = (since or {}).get(s.id)
        if known is not None and 0 < known < audit_head.size:
            # The verifier holds an older head of this log: show that this one extends it.
            path = ledger.consistency(store, known, audit_head.size)
            section["consistency"] = {"from_size": known, "path": [h.hex() for h in path]}
        if role is None:
            section["holds"] = "nothing"
            section["absence"] = tree.prove(hashed, None)
        else:
            section["holds"] = "primary" if s.id == home else role
            section["member"] = tree.prove(hashed, role)
            if role == "copy":
                section["transfers"] = _transfers(store, subject, audit_head.size)
        sites[s.id] = section
    if audit and event is not None:
        vault.audit_read(home, event.payload())
    return {
        "format": FORMAT,
        "environment": vault.config.model.environment_id,
        "subject": hashed.hex(),
        "home": home,
        "made_at": dt.datetime.now(dt.UTC).isoformat(),
        "sites": sites,
        "how_to_check": (
            "per site: the commitment's Ed25519 signature over 'domicile/attest-head/v1' 0x00 "
            "site 0x00 size 0x00 root 0x00 signed_at; the entry recording it is in the signed "
            "audit tree head (RFC 9162 inclusion); the subject's leaf is SHA-256(0x00 || "
            "subject || role_commit) with role_commit = SHA-256('domicile/attest/role/v1' 0x00 "
            "role 0x00 salt), or two adjacent leaves bracket the subject. Check with "
            "`domicile attest verify PROOF --keys HEADS`."
        ),
    }


def _entry_path(store: SiteStore, seq: int, size: int) -> list[str]:
    return [h.hex() for h in inclusion_proof(seq - 1, size, LogTree(store).subtree)]


def _transfers(store: SiteStore, subject: str, size: int) -> list[dict[str, Any]]:
    """The transfer entries that brought this subject's copies to the site (under the
    signed head), each whole (place, previous hash, payload and inclusion proof), so that
    the verifier rebuilds the entry's hash from what it checks. The payload names the
    subject's internal random id and the ids of its copied records (never a value, a token
    or anyone else): the price of a transfer that can be checked (docs/attestation.md)."""
    out = []
    tree = LogTree(store)
    for row in store.audit_tagged(TRANSFER_PREFIX, size, containing=subject):
        if row.seq > size or not row.payload.startswith(TRANSFER_PREFIX):
            continue
        data = json.loads(row.payload)
        if data.get("subject") != subject or (data.get("detail") or {}).get("kind") != "replica":
            continue
        out.append(
            {
                "seq": row.seq,
                "prev_hash": row.prev_hash.hex(),
                "payload": row.payload,
                "audit_path": [h.hex() for h in inclusion_proof(row.seq - 1, size, tree.subtree)],
            }
        )
    return out
