"""Replication between nodes: the outbox of a node's site delivered to the target's node.

The home node decides, under its packs on the day it runs, what a target may keep (as the
worker always has: ``vault.replication``), opens the permitted fields and sends them over
the node channel; the target node seals them under its own site's keys, writes the copy
and logs the transfer in its own audit, in one transaction, as a local delivery does.
Nothing else changes: a copy only moves forward (a repeated delivery changes and logs
nothing), the item leaves the home's outbox only after the target answered, and a target
that does not answer keeps the rest of the outbox queued, in order. Removals and erasures
travel the same way.

A node accepts copies from a peer only of that peer's own primaries (the peer's id is its
verified certificate's), only of collections that copy to it, and only the fields they copy.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from domicile.access import Forbidden
from domicile.audit import AuditEvent
from domicile.config import Site
from domicile.errors import BadInput, NodeUnavailable
from domicile.federation.node import FederatedDomicile
from domicile.packs import Outcome
from domicile.policy import Decision
from domicile.policy.decision import decision_to_wire
from domicile.residency import Residency
from domicile.stores import StoredRecord
from domicile.stores.base import SiteStore, SiteUnavailable
from domicile.vault.core import _residency_from_json, residency_text
from domicile.vault.replication import PURPOSE, ReplicationReport, Replicator, _TargetPlan


def plan_to_wire(home: Site, plan: _TargetPlan) -> dict[str, Any]:
    copies = []
    for _, primary, fields, decision, (residency, values) in plan.copies.values():
        copies.append({
            "record_id": primary.record_id, "subject_id": primary.subject_id,
            "collection": primary.collection, "version": primary.version,
            "created_at": primary.created_at, "updated_at": primary.updated_at,
            "fields": {f: values[f] for f in fields if f in values},
            "residency": residency_text(residency),
            "decision": decision_to_wire(decision),
        })  # fmt: skip
    return {
        "home": home.id,
        "copies": copies,
        "remove": dict(plan.remove),
        "decisions": {
            rid: decision_to_wire(d) if d is not None else None for rid, d in plan.decisions.items()
        },
        "erase": list(plan.erase),
    }


def replica_key(home: str, seqs: list[int]) -> str:
    """The idempotency key of a batch of ``home``'s outbox items: a digest of all of them."""
    text = home + ":" + ",".join(str(s) for s in seqs)
    return hashlib.sha256(text.encode()).hexdigest()


class NodeReplicator(Replicator):
    """The replication worker of a node: its own site's outbox, to every target's node."""

    vault: FederatedDomicile

    def _apply(self, home: Site, plan: _TargetPlan, report: ReplicationReport) -> None:
        target = plan.target
        if self.vault.is_here(target.id):
            super()._apply(home, plan, report)
            return
        # One key per batch content: a batch the channel repeats is applied once there. The
        # key names every item (a digest of them all): a later batch that starts with the
        # same items and has more must never be answered with this one's answer, which
        # would dequeue its other items undelivered.
        key = "replica-" + replica_key(home.id, [i.seq for i in plan.items])
        try:
            answer = self.vault.peers.call(
                target.id, "replica", plan_to_wire(home, plan), idempotency_key=key
            )
        except NodeUnavailable as exc:
            raise SiteUnavailable(target.id, exc.message) from None
        report.delivered += int(answer["delivered"])
        report.unchanged += int(answer["unchanged"])
        report.removed += int(answer["removed"])
        report.refused += int(answer.get("refused", 0))
        plan.counted.extend((str(s), bool(x)) for s, x in answer["counted"])


def receive(vault: FederatedDomicile, peer: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """Apply, at this node, a batch of peer ``peer``'s outbox meant for this node's site.

    Everything the batch names is checked before anything is written. It may touch only
    what is the peer's here (``_not_theirs``): a copy whose record id is a local primary or
    another peer's copy, or whose subject has records here that are not the peer's copies,
    is refused; a subject to erase that has such records refuses the whole batch. And each
    copy is decided again here, under this node's packs: the decision the peer sent is not
    taken on its word; a copy this node would not keep (``reconcile`` would remove it) is
    not written. Each refused copy is audited here and counted in the answer."""
    here = vault.node
    assert here is not None
    if body.get("home") != peer:
        raise Forbidden(f"node {peer!r} may deliver copies of its own site's records only")
    home = vault._sites.get(peer)
    target = vault._sites[here]
    if home is None:
        raise Forbidden(f"{peer!r} is not a site of this deployment")
    copies, remove, erase = body.get("copies"), body.get("remove"), body.get("erase")
    decisions = body.get("decisions") or {}
    if (
        not isinstance(copies, list)
        or not isinstance(remove, Mapping)
        or not isinstance(erase, list)
        or not isinstance(decisions, Mapping)
    ):
        raise BadInput("a replica batch has copies (a list), remove (an object) and erase (a list)")
    try:
        parsed = [_copy(vault, here, c) for c in copies]
        erase_ids = [_plain(s) for s in erase]
        removals = {_plain(k): _reason(_text(v, "remove")) for k, v in remove.items()}
    except (KeyError, ValueError, TypeError, AttributeError):
        raise BadInput(
            "a replica batch is malformed",
            hint="each copy has record_id, subject_id, collection, version, created_at, "
            "updated_at, fields and residency; remove maps record ids to reasons",
        ) from None
    # The decisions the home attached to its removals are not taken into this node's audit
    # (their rule ids would be the peer's words there): the home's own log records them
    # with its refusals; the evidence here is the removal and its reason.
    said: dict[str, Decision | None] = {}
    store = vault.store(here)
    foreign = _not_theirs(store, peer, [p for p, _, _ in parsed], erase_ids)
    worker = Replicator(vault, client=f"node:{peer}/replication")
    plan = _TargetPlan(target)
    refusals: list[AuditEvent] = []
    stamp = vault._stamp()
    for primary, fields, residency in parsed:
        if primary.record_id in foreign:
            refusals.append(_refusal(target, peer, primary, None, worker.client, "not_its_own"))
            continue
        names = list(fields)
        try:
            decision = worker.permission(
                home, target, primary, names, stamp=stamp, residency=residency
            )
        except SiteUnavailable:  # the home's own counts decide (volume thresholds): not here
            decision = None
        if decision is None or decision.outcome is not Outcome.allow:
            removals[primary.record_id] = f"policy at {here} does not permit a copy here"
            said[primary.record_id] = decision
            refusals.append(_refusal(target, peer, primary, decision, worker.client, "policy"))
            continue
        removals.pop(primary.record_id, None)
        plan.copies[primary.record_id] = (home, primary, names, decision, (residency, fields))
    theirs = {
        rid for rid, r in store.get_many(list(removals)).items()
        if r.is_replica and r.primary_site == peer
    }  # fmt: skip
    plan.remove = {k: v for k, v in removals.items() if k in theirs}
    plan.decisions = {k: v for k, v in said.items() if k in theirs}
    plan.erase = erase_ids
    report = ReplicationReport()
    worker._apply(home, plan, report)
    if refusals:
        vault._audit(here, refusals)
    return {
        "delivered": report.delivered,
        "unchanged": report.unchanged,
        "removed": report.removed,
        "refused": len(refusals),
        "counted": [list(x) for x in plan.counted],
    }


def _not_theirs(
    store: SiteStore, peer: str, copies: list[StoredRecord], erase: list[str]
) -> set[str]:
    """The copies of a batch that would touch what is not ``peer``'s here: a record id held
    by a local primary or another peer's copy, or a subject with such records. They are
    refused one by one (a record id can collide by another's doing: a peer names the ids of
    the records it forwards), so the rest of the sender's outbox is not held up. A subject
    to erase with records here that are not the sender's copies refuses the whole batch."""

    def theirs(r: StoredRecord) -> bool:
        return r.is_replica and r.primary_site == peer

    for subject in dict.fromkeys(erase):
        if not all(theirs(r) for r in store.subject_records(subject)):
            raise Forbidden(f"node {peer!r} may erase only the copies of its own subjects")
    held = store.get_many([c.record_id for c in copies])
    foreign = {rid for rid, r in held.items() if not theirs(r)}
    subjects = {
        subject for subject in dict.fromkeys(c.subject_id for c in copies)
        if not all(theirs(r) for r in store.subject_records(subject))
    }  # fmt: skip
    return foreign | {c.record_id for c in copies if c.subject_id in subjects}


def _refusal(
    target: Site, peer: str, primary: StoredRecord, decision: Decision | None,
    client: str | None, reason: str,
) -> AuditEvent:  # fmt: skip
    return AuditEvent(
        action="refuse", site=target.id, purpose=PURPOSE, collection=primary.collection,
        record=primary.record_id, subject=primary.subject_id, requester=peer, client=client,
        decision=decision.outcome.value if decision else None,
        rules=decision.rule_ids if decision else (),
        detail={"operation": "replicate", "from_site": peer, "to_site": target.id,
                "reason": reason},
    )  # fmt: skip


# The reasons a home gives for removing a copy (``vault.replication``): they go into this
# node's audit as the evidence of the removal, so nothing else is written there.
_REASONS = re.compile(
    r"the primary was deleted|no replication to this site is configured any more"
    r"|policy does not permit a copy at [a-z][a-z0-9_]{0,31}: [a-z_ ]{1,40}"
)


def _reason(text: str) -> str:
    return text if _REASONS.fullmatch(text) else "its home node removed it"


_PLAIN = re.compile(r"[0-9A-Za-z:.+_-]{1,64}")


def _plain(value: Any) -> str:
    if not isinstance(value, str) or not _PLAIN.fullmatch(value):
        raise ValueError("an id or a time")
    return value


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(name)
    return value


def _copy(
    vault: FederatedDomicile, here: str, c: Any
) -> tuple[StoredRecord, dict[str, Any], Residency]:
    """One copy of a batch: its record (no body yet), its fields and its residency."""
    name = _text(c["collection"], "collection")
    coll = vault.collection(name)
    spec = next((t for t in coll.replicate if t.to == here), None)
    allowed = set(spec.fields or coll.fields) if spec else set()
    fields = dict(c["fields"])
    if spec is None or not set(fields) <= allowed:
        raise Forbidden(f"collection {name!r} does not copy those fields to site {here!r}")
    version = c["version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError("version")
    # Ids and times are stored as they come (not sealed): a short plain token each, never
    # room for a value.
    primary = StoredRecord(
        _plain(c["record_id"]), _plain(c["subject_id"]), name, version,
        _plain(c["created_at"]), _plain(c["updated_at"]), b"",
    )  # fmt: skip
    return primary, fields, _residency_from_json(_loads(c["residency"]))


def _loads(text: Any) -> dict[str, Any]:
    import json

    if not isinstance(text, str):
        raise BadInput("residency: the sealed residency's text")
    data = json.loads(text)
    if not isinstance(data, dict):
        raise BadInput("residency: an object")
    return data
