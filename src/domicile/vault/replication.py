"""The replication worker: copies of in-country primaries at permitted foreign sites.

Every write to a primary puts outbox items in the same transaction (``upsert``, ``delete``,
``erase``, one per target site). The worker takes them in order, per home site, and for an
``upsert`` asks the decision engine, on the day it runs, whether the target may keep a copy
(``store`` at the target with ``replica=true``). If so, it copies the permitted fields,
re-sealed under the target's own key for the subject. It always copies the primary's
current version, so a copy is never ahead of the primary. If not, it removes any copy the
target still has, and the removal is the evidence of deletion.

Delivery is idempotent. A copy is written, and its transfer entered in the target's audit,
in one transaction at the target. A copy only ever moves forward, so a redelivered item
changes nothing and logs nothing. The item leaves the outbox afterwards, in a transaction
at the home site. A worker killed at any point and restarted therefore loses nothing and
duplicates nothing.

``reconcile`` re-checks every copy that exists. A regulator's ban, a withdrawn filing or a
law's effective date can end the permission without any write to the primary; the copies
then go, with evidence.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from domicile.audit import AuditEvent
from domicile.config import Site
from domicile.crypto.envelope import FieldCipher, key_context, new_data_key, record_context
from domicile.crypto.errors import DecryptionFailed, KeyDestroyed
from domicile.errors import DomicileError
from domicile.packs import Outcome
from domicile.policy import Decision
from domicile.stores import StoredRecord, WrappedKey
from domicile.stores.base import OutboxItem, SiteUnavailable
from domicile.vault.service import RESIDENCY_FIELD, Domicile, is_sensitive, transfer_detail

PURPOSE = "replication"


@dataclass
class ReplicationReport:
    delivered: int = 0  # copies written or brought up to date
    unchanged: int = 0  # items whose copy was already current
    refused: int = 0  # items the law did not allow (no copy kept)
    removed: int = 0  # copies deleted (the primary went, or the permission did)
    unavailable: list[str] = field(default_factory=list)  # sites that did not answer

    def to_dict(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "unchanged": self.unchanged,
            "refused": self.refused,
            "removed": self.removed,
            "unavailable": sorted(set(self.unavailable)),
        }


class Replicator:
    def __init__(self, vault: Domicile, *, batch: int = 200) -> None:
        self.vault = vault
        self.batch = batch
        self.sites = {s.id: s for s in vault.config.sites}

    # --- the outbox -------------------------------------------------------------------------

    def pending(self) -> int:
        total = 0
        for s in self.vault.config.sites:
            try:
                total += len(self.vault.store(s.id).outbox(1_000_000))
            except SiteUnavailable:
                self.vault._drop(s.id)
        return total

    def run_once(
        self,
        *,
        progress: Callable[[int], None] | None = None,
        stop: threading.Event | None = None,
        reconcile: bool = True,
    ) -> ReplicationReport:
        """Drain every home site's outbox, then (by default) re-check existing copies."""
        report = ReplicationReport()
        for home in self.vault.config.sites:
            while not (stop and stop.is_set()):
                try:
                    items = self.vault.store(home.id).outbox(self.batch)
                except SiteUnavailable:
                    self.vault._drop(home.id)
                    report.unavailable.append(home.id)
                    break
                if not items:
                    break
                done = 0
                for item in items:
                    if stop and stop.is_set():
                        break
                    if not self._process(home, item, report):
                        break  # a target is down: keep the order, try again later
                    done += 1
                    if progress:
                        progress(1)
                if done < len(items):
                    break
        if reconcile and not (stop and stop.is_set()):
            self.reconcile(report)
        return report

    def follow(
        self,
        stop: threading.Event,
        *,
        interval: float = 1.0,
        on_report: Callable[[ReplicationReport], None] | None = None,
    ) -> None:
        """Run until ``stop`` is set, re-checking copies about once a minute."""
        rounds = 0
        while not stop.is_set():
            every = max(1, int(60 / max(interval, 0.01)))
            report = self.run_once(stop=stop, reconcile=rounds % every == 0)
            if on_report:
                on_report(report)
            rounds += 1
            stop.wait(interval)

    # --- one item ---------------------------------------------------------------------------

    def _process(self, home: Site, item: OutboxItem, report: ReplicationReport) -> bool:
        """Handle one item; False when a site did not answer (the item stays queued)."""
        target = self.sites.get(item.target_site)
        try:
            if target is None:
                pass  # the site left the configuration: nothing to deliver to
            elif item.op == "upsert":
                self._upsert(home, target, item, report)
            elif item.op == "delete":
                report.removed += self._remove(target, [item.record_id], "the primary was deleted")
            else:
                report.removed += self._erase(target, item.subject_id)
            with self.vault.store(home.id).transaction() as tx:
                tx.dequeue([item.seq])
        except SiteUnavailable as exc:
            self.vault._drop(exc.site)
            report.unavailable.append(exc.site)
            return False
        return True

    def _upsert(
        self, home: Site, target: Site, item: OutboxItem, report: ReplicationReport
    ) -> None:
        vault = self.vault
        primary = vault.store(home.id).get(item.record_id)
        if primary is None or primary.is_replica:
            return  # deleted since: a later item removes any copy
        fields = self._permitted_fields(primary, target.id)
        decision = self.permission(home, target, primary, fields)
        if fields is None or decision is None or decision.outcome is not Outcome.allow:
            report.refused += 1
            reason = "no replication to this site is configured any more" if fields is None else (
                f"policy does not permit a copy at {target.id}: "
                f"{decision.outcome.value if decision else 'no decision'}"
            )  # fmt: skip
            report.removed += self._remove(target, [primary.record_id], reason, decision)
            self._audit_refusal(home, target, primary, decision)
            return
        copy = self._reseal(home, target, primary, fields)
        event = AuditEvent(
            action="transfer", site=target.id, purpose=PURPOSE, collection=primary.collection,
            record=primary.record_id, subject=primary.subject_id, requester=home.id,
            rules=decision.rule_ids,
            categories=tuple(sorted({self._category(primary.collection, f) for f in fields})),
        )  # fmt: skip
        event = replace(
            event,
            **transfer_detail(
                decision,
                home.country,
                target.country,
                dict.fromkeys(fields),
                False,
                "replica",
                primary.version,
            ),
        )
        store = vault.store(target.id)
        with store.transaction() as tx:
            changed = tx.put_replica(copy)
            if changed:  # the data crossed now: its transfer is logged with it, once
                vault._ledgers[target.id].append(tx, [event])
        if changed:
            report.delivered += 1
            sensitive = any(is_sensitive(c) for c in event.categories)
            with vault.store(home.id).transaction() as tx:
                tx.count_transfer(
                    vault._today().year, target.country, primary.subject_id, sensitive
                )
        else:
            report.unchanged += 1

    def _category(self, collection: str, name: str) -> str:
        return self.vault.collection(collection).fields[name].category

    def _permitted_fields(self, primary: StoredRecord, target: str) -> list[str] | None:
        """The fields of ``primary`` that its collection copies to ``target``."""
        coll = self.vault.collection(primary.collection)
        spec = next((t for t in coll.replicate if t.to == target), None)
        if spec is None:
            return None
        wanted = spec.fields or list(coll.fields)
        return [f for f in wanted if f in primary.fields]

    def permission(
        self, home: Site, target: Site, record: StoredRecord, fields: list[str] | None,
        *, residency_site: Site | None = None,
    ) -> Decision | None:  # fmt: skip
        """May ``target`` keep a copy of these fields of ``record`` today?"""
        vault = self.vault
        holder = residency_site or home
        try:
            residency = vault._residency(holder, record)
        except (KeyDestroyed, DecryptionFailed):
            return None
        names = fields if fields is not None else [f for f in record.fields if f != RESIDENCY_FIELD]
        cats = [self._category(record.collection, f) for f in names]
        facts: dict[str, bool | int | str] = {"replica": True, "primary_country": home.country}
        facts.update(vault.transfer_facts(home, target.country))
        return vault._decide(residency, cats, "store", target.country, facts=facts)

    def _reseal(
        self, home: Site, target: Site, primary: StoredRecord, fields: list[str]
    ) -> StoredRecord:
        """The copy: permitted fields (and the sealed residency), re-sealed for the target."""
        vault = self.vault
        source = vault._cipher(home.id, primary.subject_id)
        dest = self._target_cipher(target, primary.subject_id)
        src_ctx = record_context(home.id, primary.collection, primary.record_id)
        dst_ctx = record_context(target.id, primary.collection, primary.record_id)
        sealed = {}
        for name in [*fields, RESIDENCY_FIELD]:
            plain = source.open(primary.fields[name], src_ctx + name.encode())
            sealed[name] = dest.seal(plain, dst_ctx + name.encode())
        return StoredRecord(
            primary.record_id, primary.subject_id, primary.collection, primary.version,
            primary.created_at, primary.updated_at, sealed, primary_site=home.id,
        )  # fmt: skip

    def _target_cipher(self, target: Site, subject: str) -> FieldCipher:
        """The subject's key at the target site, created on first copy."""
        vault = self.vault
        try:
            return vault._cipher(target.id, subject)
        except KeyDestroyed:
            pass
        dek = new_data_key()
        version, wrapped = vault.keys.wrap(target.id, dek, key_context(target.id, subject))
        try:
            vault.keystore(target.id).put_many([(subject, WrappedKey(version, wrapped))])
        except DomicileError:
            return vault._cipher(target.id, subject)  # another worker made it first
        return FieldCipher(dek)

    # --- removing copies --------------------------------------------------------------------

    def _remove(
        self,
        target: Site,
        record_ids: list[str],
        reason: str,
        decision: Decision | None = None,
    ) -> int:
        """Delete copies at ``target``, with an audit entry for each as evidence."""
        store = self.vault.store(target.id)
        copies = [r for r in store.get_many(record_ids).values() if r.is_replica]
        if not copies:
            return 0
        events = [
            AuditEvent(
                action="delete",
                site=target.id,
                purpose=PURPOSE,
                collection=c.collection,
                record=c.record_id,
                subject=c.subject_id,
                requester=c.primary_site,
                rules=decision.rule_ids if decision else (),
                decision=decision.outcome.value if decision else None,
                detail={"reason": reason, "copy_of": c.primary_site, "version": c.version},
            )
            for c in copies
        ]
        with store.transaction() as tx:
            tx.delete([c.record_id for c in copies])
            self.vault._ledgers[target.id].append(tx, events)
        return len(copies)

    def _erase(self, target: Site, subject: str) -> int:
        """The subject was erased at home: its copies and its key go here too."""
        vault = self.vault
        store = vault.store(target.id)
        copies = [r for r in store.subject_records(subject) if r.is_replica]
        destroyed = vault.keystore(target.id).delete(subject)
        vault._forget_key(target.id, subject)
        if not copies and not destroyed:
            return 0
        with store.transaction() as tx:
            tx.delete([c.record_id for c in copies])
            vault._ledgers[target.id].append(
                tx,
                [
                    AuditEvent(
                        action="erase",
                        site=target.id,
                        purpose=PURPOSE,
                        subject=subject,
                        detail={"records": len(copies), "key_destroyed": destroyed, "copies": True},
                    )
                ],
            )
        return len(copies)

    def _audit_refusal(
        self, home: Site, target: Site, primary: StoredRecord, decision: Decision | None
    ) -> None:
        event = AuditEvent(
            action="refuse", site=home.id, purpose=PURPOSE, collection=primary.collection,
            record=primary.record_id, subject=primary.subject_id, requester=home.id,
            decision=decision.outcome.value if decision else None,
            rules=decision.rule_ids if decision else (),
            detail={"operation": "replicate", "to_site": target.id, "to_country": target.country},
        )  # fmt: skip
        self.vault._audit(home.id, [event])

    def reconcile(self, report: ReplicationReport | None = None) -> ReplicationReport:
        """Re-check every copy: delete those the law no longer permits."""
        report = report or ReplicationReport()
        for target in self.vault.config.sites:
            after = ""
            while True:
                try:
                    copies = self.vault.store(target.id).replicas(after, 500)
                except SiteUnavailable:
                    self.vault._drop(target.id)
                    report.unavailable.append(target.id)
                    break
                if not copies:
                    break
                after = copies[-1].record_id
                for copy in copies:
                    home = self.sites.get(copy.primary_site or "")
                    fields = [f for f in copy.fields if f != RESIDENCY_FIELD]
                    decision = (
                        self.permission(home, target, copy, fields, residency_site=target)
                        if home is not None
                        else None
                    )
                    if decision is None or decision.outcome is not Outcome.allow:
                        why = (
                            "the law no longer permits this copy"
                            if decision
                            else "its key or primary site is gone"
                        )
                        report.removed += self._remove(target, [copy.record_id], why, decision)
        return report
