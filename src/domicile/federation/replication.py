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

from collections.abc import Mapping
from typing import Any

from domicile.access import Forbidden
from domicile.config import Site
from domicile.errors import BadInput, NodeUnavailable
from domicile.federation.node import FederatedDomicile
from domicile.policy.decision import decision_from_dict, decision_to_wire
from domicile.residency import Residency
from domicile.stores import StoredRecord
from domicile.stores.base import SiteUnavailable
from domicile.vault.core import _residency_from_json, residency_text
from domicile.vault.replication import ReplicationReport, Replicator, _TargetPlan


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


class NodeReplicator(Replicator):
    """The replication worker of a node: its own site's outbox, to every target's node."""

    vault: FederatedDomicile

    def _apply(self, home: Site, plan: _TargetPlan, report: ReplicationReport) -> None:
        target = plan.target
        if self.vault.is_here(target.id):
            super()._apply(home, plan, report)
            return
        # One key per batch content: a batch the channel repeats is applied once there.
        key = "replica-" + ",".join(str(i.seq) for i in plan.items)[:200]
        try:
            answer = self.vault.peers.call(
                target.id, "replica", plan_to_wire(home, plan), idempotency_key=key
            )
        except NodeUnavailable as exc:
            raise SiteUnavailable(target.id, exc.message) from None
        report.delivered += int(answer["delivered"])
        report.unchanged += int(answer["unchanged"])
        report.removed += int(answer["removed"])
        plan.counted.extend((str(s), bool(x)) for s, x in answer["counted"])


def receive(vault: FederatedDomicile, peer: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """Apply, at this node, a batch of peer ``peer``'s outbox meant for this node's site."""
    here = vault.node
    assert here is not None
    if body.get("home") != peer:
        raise Forbidden(f"node {peer!r} may deliver copies of its own site's records only")
    home = vault._sites.get(peer)
    target = vault._sites[here]
    if home is None:
        raise Forbidden(f"{peer!r} is not a site of this deployment")
    copies, remove, erase = body.get("copies"), body.get("remove"), body.get("erase")
    if (
        not isinstance(copies, list)
        or not isinstance(remove, Mapping)
        or not isinstance(erase, list)
    ):
        raise BadInput("a replica batch has copies (a list), remove (an object) and erase (a list)")
    worker = Replicator(vault, client=f"node:{peer}/replication")
    plan = _TargetPlan(target)
    for c in copies:
        coll = vault.collection(str(c["collection"]))
        spec = next((t for t in coll.replicate if t.to == here), None)
        allowed = set(spec.fields or coll.fields) if spec else set()
        fields = dict(c["fields"])
        if spec is None or not set(fields) <= allowed:
            raise Forbidden(
                f"collection {c['collection']!r} does not copy those fields to site {here!r}"
            )
        primary = StoredRecord(
            str(c["record_id"]), str(c["subject_id"]), str(c["collection"]), int(c["version"]),
            str(c["created_at"]), str(c["updated_at"]), b"",
        )  # fmt: skip
        residency: Residency = _residency_from_json(_loads(c["residency"]))
        decision = decision_from_dict(c["decision"])
        plan.copies[primary.record_id] = (
            home,
            primary,
            list(fields),
            decision,
            (residency, fields),
        )
    # Removals and erasures reach only what the peer's own primaries put here.
    store = vault.store(here)
    theirs = {
        rid for rid, r in store.get_many([str(k) for k in remove]).items()
        if r.is_replica and r.primary_site == peer
    }  # fmt: skip
    plan.remove = {str(k): str(v) for k, v in remove.items() if str(k) in theirs}
    decisions = body.get("decisions") or {}
    plan.decisions = {
        str(k): decision_from_dict(v) if v is not None else None
        for k, v in decisions.items()
        if str(k) in theirs
    }
    for subject in (str(s) for s in erase):
        held = store.subject_records(subject)
        if any(not r.is_replica or r.primary_site != peer for r in held):
            raise Forbidden(f"node {peer!r} may erase only the copies of its own subjects")
        plan.erase.append(subject)
    report = ReplicationReport()
    worker._apply(home, plan, report)
    return {
        "delivered": report.delivered,
        "unchanged": report.unchanged,
        "removed": report.removed,
        "counted": [list(x) for x in plan.counted],
    }


def _loads(text: Any) -> dict[str, Any]:
    import json

    if not isinstance(text, str):
        raise BadInput("residency: the sealed residency's text")
    data = json.loads(text)
    if not isinstance(data, dict):
        raise BadInput("residency: an object")
    return data
