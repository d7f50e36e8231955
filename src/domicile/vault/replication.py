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

An erasure reaches the copies at once where their sites answer (``erase_copies``, called by
``Domicile.erase``): the subject's key there first, then its copies, leaving the subject
marked erased at that site, so a copy the worker was about to deliver is never written
after it. Sites that did not answer keep their ``erase`` item for the worker.

``reconcile`` re-checks every copy that exists. A regulator's ban, a withdrawn filing or a
law's effective date can end the permission without any write to the primary; the copies
then go, with evidence.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from domicile.access import Access
from domicile.audit import AuditEvent
from domicile.audit.ledger import PayloadTemplate
from domicile.config import Site
from domicile.crypto.envelope import FieldCipher, key_context, new_data_key
from domicile.crypto.errors import DecryptionFailed, KeyDestroyed
from domicile.errors import DomicileError
from domicile.packs import Outcome
from domicile.policy import Decision
from domicile.residency import Residency
from domicile.stores import StoredRecord, TransferCount, WrappedKey
from domicile.stores.base import OutboxClaim, OutboxItem, SiteUnavailable
from domicile.vault.core import VaultCore, _utcnow, is_sensitive, residency_text
from domicile.vault.reading import transfer_detail
from domicile.vault.sealing import seal_body
from domicile.vault.service import Domicile

PURPOSE = "replication"
T = TypeVar("T")


@dataclass
class _TargetPlan:
    """What one batch does at one target site."""

    target: Site
    items: list[OutboxItem] = field(default_factory=list)
    # record id -> (home, primary, fields copied, decision, the primary opened)
    copies: dict[
        str, tuple[Site, StoredRecord, list[str], Decision, tuple[Residency, dict[str, Any]]]
    ] = field(default_factory=dict)
    remove: dict[str, str] = field(default_factory=dict)  # record id -> reason
    decisions: dict[str, Decision | None] = field(default_factory=dict)
    erase: list[str] = field(default_factory=list)
    counted: list[tuple[str, bool]] = field(default_factory=list)  # (subject, sensitive)
    # The facts of the decisions (year-to-date counts where a pack reads them), read once
    # per batch: the batch's own counts are added when it is cleared, so they are the same
    # for every item of it.
    facts: dict[str, bool | int | str] | None = None


@dataclass
class ReplicationReport:
    delivered: int = 0  # copies written or brought up to date
    unchanged: int = 0  # items whose copy was already current
    refused: int = 0  # items the law did not allow (no copy kept)
    removed: int = 0  # copies deleted (the primary went, or the permission did)
    paused: int = 0  # new copies of restricted subjects not made (until the restriction ends)
    unavailable: list[str] = field(default_factory=list)  # sites that did not answer

    def to_dict(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "unchanged": self.unchanged,
            "refused": self.refused,
            "removed": self.removed,
            "paused": self.paused,
            "unavailable": sorted(set(self.unavailable)),
        }


class Replicator:
    def __init__(self, vault: Domicile, *, batch: int = 200, client: str | None = None) -> None:
        self.vault = vault
        self.batch = batch
        # Who runs the worker, named in its audit entries (by default the vault's operator).
        self.client = client if client is not None else vault.operator.client
        self.sites = {s.id: s for s in vault.config.sites}
        self._templates: dict[tuple[Any, ...], tuple[Decision, PayloadTemplate, bool]] = {}
        self._categories: dict[tuple[str, tuple[str, ...]], tuple[str, ...]] = {}
        # Per-record work that depends only on what many records share: the fields a
        # collection copies to a target (by the fields a primary has), and the JSON text
        # of a residency (many subjects share one; encoding it per copy cost a tenth of a
        # delivery).
        self._fields: dict[tuple[str, str, tuple[str, ...]], list[str] | None] = {}
        self._texts: dict[Residency, str] = {}
        self._attest_key: bytes | None = None
        self._hash_subject: Callable[[bytes, str], bytes] | None = None

    def _subject_key(self, subject: str) -> str:
        """The subject's keyed hash (as attestation names it), recorded in each transfer
        entry of a copy so that a proof can bind the entry to the subject without its id."""
        if self._attest_key is None or self._hash_subject is None:
            # Imported here: attestation builds on the vault, not the other way round.
            from domicile.attest.commitment import attest_key, subject_key

            self._attest_key = attest_key(self.vault.keys.token_key())
            self._hash_subject = subject_key
        return self._hash_subject(self._attest_key, subject).hex()

    # --- the outbox -------------------------------------------------------------------------

    def _here(self) -> list[Site]:
        """The sites whose outboxes and copies this worker tends: every site, but on a
        federation's node, where each node tends its own (``domicile.federation``)."""
        return [s for s in self.vault.config.sites if self.vault.is_here(s.id)]

    def pending(self) -> int:
        total = 0
        for s in self._here():
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
        for home in self._here():
            while not (stop and stop.is_set()):
                try:
                    with self.vault.store(home.id).claim_outbox(self.batch) as claim:
                        items = claim.items
                        done = self._process_batch(home, claim, report) if items else 0
                except SiteUnavailable as exc:
                    # The home site (its claim, its primaries, its keys) did not answer; the
                    # claim rolled back and its items stay queued, in order.
                    self.vault._drop(exc.site)
                    report.unavailable.append(exc.site)
                    break
                if progress and done:
                    progress(done)
                if not items or done < len(items):
                    # Nothing to take (or only items that wait for another worker's), or a
                    # target did not answer: the rest stays queued, in order.
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

    # --- a batch of items -------------------------------------------------------------------

    def _process_batch(self, home: Site, claim: OutboxClaim, report: ReplicationReport) -> int:
        """Deliver the claim's items (in order) with one transaction per target site, then
        clear them (with their transfer counts and refusals) in the claim's transaction at
        home. Returns how many were handled; the rest stay queued for the next round."""
        vault = self.vault
        items = claim.items
        upserts = [i for i in items if i.op == "upsert"]
        # The subjects' keys at home in one question (opening each primary then finds its
        # key cached), asked of the key store while the site reads the primaries.
        keys = _started(
            lambda: self._ciphers(home.id, [i.subject_id for i in upserts], skip_broken=True),
            apart=vault.keystore(home.id).backend != "sqlite",
        )
        try:
            primaries = vault.store(home.id).get_many([i.record_id for i in upserts])
        finally:
            keys()
        held = self._restricted(home, items)
        plans: dict[str, _TargetPlan] = {}
        refusals: list[AuditEvent] = []
        paused: list[AuditEvent] = []
        handled: list[OutboxItem] = []
        stamp = vault._stamp()  # the batch is decided on one day, under one set of filings
        for item in items:
            target = self.sites.get(item.target_site)
            if target is None:
                handled.append(item)  # the site left the configuration
                continue
            plan = plans.get(target.id)
            if plan is None:
                plan = plans[target.id] = _TargetPlan(target)
            if item.op == "delete":
                plan.remove[item.record_id] = "the primary was deleted"
            elif item.op == "erase":
                plan.erase.append(item.subject_id)
            elif item.record_id in held.get(target.id, ()):
                # A restricted subject: no new copy while the restriction lasts (copies
                # that exist still follow rectifications). Lifting it queues the record
                # again (``domicile.rights``), so the copy is made then, once.
                paused.append(self._paused_event(home, target, item))
            else:
                self._plan_upsert(
                    home, target, primaries.get(item.record_id), plan, refusals, stamp
                )
            plan.items.append(item)
        failed: set[str] = set()
        for plan in plans.values():
            try:
                self._apply(home, plan, report)
                handled.extend(plan.items)
            except SiteUnavailable as exc:
                vault._drop(exc.site)
                report.unavailable.append(exc.site)
                failed.add(plan.target.id)
        year = vault._today().year
        done = [i for i in handled if i.target_site not in failed]
        with claim.transaction() as tx:
            tx.count_transfers(
                [
                    TransferCount(year, plan.target.country, subject, sensitive)
                    for plan in plans.values()
                    if plan.target.id not in failed
                    for subject, sensitive in plan.counted
                ]
            )
            kept = [e for e in refusals if e.detail.get("to_site") not in failed]
            waits = [e for e in paused if e.detail.get("to_site") not in failed]
            if kept or waits:
                vault._ledgers[home.id].append(tx, kept + waits)
            tx.dequeue([i.seq for i in done])
        report.refused += len(kept)
        report.paused += len(waits)
        return len(done)

    def _restricted(self, home: Site, items: Sequence[OutboxItem]) -> dict[str, set[str]]:
        """For each target site, the records of the batch's ``upsert`` items whose subject
        is restricted at home and which the target holds no copy of yet (one query at
        home; at a target only when a restricted subject has items for it). A target this
        process cannot look into (another node's) counts as holding none."""
        upserts = [i for i in items if i.op == "upsert"]
        if not upserts:
            return {}
        store = self.vault.store(home.id)
        restricted = store.restricted(i.subject_id for i in upserts)
        wanted: dict[str, set[str]] = {}
        for i in upserts:
            if i.subject_id in restricted:
                wanted.setdefault(i.target_site, set()).add(i.record_id)
        out: dict[str, set[str]] = {}
        for target, ids in wanted.items():
            have: set[str] = set()
            if target in self.sites and self.vault.is_here(target):
                have = set(self.vault.store(target).get_many(sorted(ids)))
            out[target] = ids - have
        return out

    def _paused_event(self, home: Site, target: Site, item: OutboxItem) -> AuditEvent:
        """The entry of a copy held back because its subject is restricted."""
        return AuditEvent(
            action="refuse", site=home.id, purpose=PURPOSE, record=item.record_id,
            subject=item.subject_id, requester=home.id, client=self.client,
            detail={"operation": "replicate", "to_site": target.id, "to_country": target.country,
                    "reason": "restricted", "paused": True},
        )  # fmt: skip

    def _plan_upsert(
        self,
        home: Site,
        target: Site,
        primary: StoredRecord | None,
        plan: _TargetPlan,
        refusals: list[AuditEvent],
        stamp: tuple[dt.date, Any],
    ) -> None:
        if primary is None or primary.is_replica:
            return  # deleted since: a later item removes any copy
        fields = self._permitted_fields(primary, target.id)
        try:
            opened: tuple[Residency, dict[str, Any]] | None = self.vault._open_record(home, primary)
        except (KeyDestroyed, DecryptionFailed):
            opened = None  # erased meanwhile (or altered): no copy; any old one goes
        decision = None
        if opened is not None:
            decision = self.permission(
                home, target, primary, fields, stamp=stamp, residency=opened[0],
                facts=self._plan_facts(home, plan),
            )  # fmt: skip
        if fields is None or decision is None or decision.outcome is not Outcome.allow:
            outcome = decision.outcome.value if decision else "no decision"
            plan.remove[primary.record_id] = (
                "no replication to this site is configured any more"
                if fields is None
                else f"policy does not permit a copy at {target.id}: {outcome}"
            )
            plan.decisions[primary.record_id] = decision
            refusals.append(
                AuditEvent(
                    action="refuse",
                    site=home.id,
                    purpose=PURPOSE,
                    collection=primary.collection,
                    record=primary.record_id,
                    subject=primary.subject_id,
                    requester=home.id,
                    client=self.client,
                    decision=decision.outcome.value if decision else None,
                    rules=decision.rule_ids if decision else (),
                    detail={
                        "operation": "replicate",
                        "to_site": target.id,
                        "to_country": target.country,
                    },
                )
            )
            return
        plan.remove.pop(primary.record_id, None)  # a newer write supersedes an earlier removal
        assert opened is not None
        plan.copies[primary.record_id] = (home, primary, fields, decision, opened)

    def _apply(self, home: Site, plan: _TargetPlan, report: ReplicationReport) -> None:
        """One transaction at the target: copies (each logged as a transfer when it
        changes), removals and erasures, with their audit entries. A copy of a subject
        erased at the target (by an erasure that reached it before this batch) is not
        written, and the key made for it goes again."""
        vault = self.vault
        target = plan.target
        store = vault.store(target.id)
        for subject in plan.erase:  # crypto-shred first, as at home
            vault.keystore(target.id).delete(subject)
            vault._forget_key(target.id, subject)
        ciphers, stored = self._target_ciphers(
            target, [p.subject_id for _, p, _, _, _ in plan.copies.values()]
        )
        copies: list[tuple[StoredRecord, str, bool]] = []  # (copy, its entry, sensitive)
        at = _utcnow().isoformat()  # the copies of a batch cross together, in one transaction
        try:
            for source_site, primary, fields, decision, opened in plan.copies.values():
                copy = self._reseal(
                    source_site, target, primary, fields, ciphers[primary.subject_id], opened
                )
                template, sensitive = self._transfer_template(
                    source_site, target, primary, fields, decision
                )
                # The entry of ``transfer_detail`` over the transfer event, from a template.
                payload = template.render(
                    primary.record_id,
                    primary.subject_id,
                    at,
                    primary.version,
                    self._subject_key(primary.subject_id),
                )
                copies.append((copy, payload, sensitive))
        finally:
            stored()  # the new keys are in the key store before the copies' transaction
        removals = [r for r in store.get_many(list(plan.remove)).values() if r.is_replica]
        now = vault.clock().isoformat()
        with store.transaction() as tx:
            payloads: list[str] = []
            erased = {subject: tx.erase_subject(subject, now) for subject in plan.erase}
            gone = tx.hold_subjects([copy.subject_id for copy, _, _ in copies])
            kept = [c for c in copies if c[0].subject_id not in gone]
            changed = tx.put_replicas([copy for copy, _, _ in kept])
            for (copy, payload, sensitive), crossed in zip(kept, changed, strict=True):
                if crossed:  # the data crossed now: logged with it, once
                    payloads.append(payload)
                    plan.counted.append((copy.subject_id, sensitive))
                    report.delivered += 1
                else:
                    report.unchanged += 1
            # Only the copies this transaction removed are logged: another worker (its
            # reconcile) may have removed one first.
            removals = [r for r in removals if tx.delete([r.record_id])]
            events = self._removal_events(target, removals, plan)
            events += [
                _erasure_event(target, subject, count, self.client)
                for subject, count in erased.items()
            ]
            payloads += [e.payload() for e in events]
            if payloads:
                vault._ledgers[target.id].append_payloads(tx, payloads, chain=tx.chain_many)
        for subject in gone - set(plan.erase):
            vault.keystore(target.id).delete(subject)
            vault._forget_key(target.id, subject)
        report.removed += len(removals) + sum(erased.values())

    def _transfer_template(
        self,
        source: Site,
        target: Site,
        primary: StoredRecord,
        fields: list[str],
        decision: Decision,
    ) -> tuple[PayloadTemplate, bool]:
        """The template of a copy's transfer entry, and whether its categories are
        sensitive (for the year-to-date counts)."""
        names = tuple(fields)
        key = (id(decision), source.id, target.id, primary.collection, names)
        hit = self._templates.get(key)
        if hit is not None and hit[0] is decision:
            return hit[1], hit[2]
        categories = tuple(sorted({self._category(primary.collection, f) for f in fields}))
        event = AuditEvent(
            action="transfer", site=target.id, purpose=PURPOSE, collection=primary.collection,
            record=primary.record_id, subject=primary.subject_id, requester=source.id,
            client=self.client, rules=decision.rule_ids, categories=categories,
        )  # fmt: skip
        detail = transfer_detail(
            decision, source.country, target.country, dict.fromkeys(fields), "replica",
            primary.version,
        )  # fmt: skip
        template = PayloadTemplate(
            replace(event, **detail),
            ("record", "subject", "at", "detail.version", "detail.subject_key"),
        )
        sensitive = any(is_sensitive(c) for c in categories)
        if len(self._templates) >= 4096:
            self._templates.clear()
        self._templates[key] = (
            decision,
            template,
            sensitive,
        )  # keeps the decision: ids stay unique
        return template, sensitive

    def _removal_events(
        self, target: Site, removals: list[StoredRecord], plan: _TargetPlan
    ) -> list[AuditEvent]:
        return [
            _removal_event(
                target, c, plan.remove[c.record_id], plan.decisions.get(c.record_id), self.client
            )
            for c in removals
        ]

    def _ciphers(
        self, site_id: str, subjects: Sequence[str], *, skip_broken: bool = False
    ) -> dict[str, FieldCipher]:
        """The keys these subjects have at ``site_id`` (none for a subject without one),
        from the vault's cache or else with one question to the site's key store, and
        kept in the cache. (Opening the primaries one key at a time asked the key store
        once per record as soon as the cache could not hold every subject.)
        ``skip_broken``: a key that does not unwrap is left out (its record then fails
        alone when opened) instead of failing them all."""
        vault = self.vault
        out: dict[str, FieldCipher] = {}
        missing = []
        for subject in dict.fromkeys(subjects):
            cached = vault._deks.get((site_id, subject))
            if cached is not None:
                out[subject] = cached
            else:
                missing.append(subject)
        if not missing:
            return out
        stored = vault.keystore(site_id).get_many(missing)
        found: list[tuple[str, FieldCipher]] = []
        for subject, wrapped in stored.items():
            try:
                dek = vault.keys.unwrap(
                    site_id, wrapped.kek_version, wrapped.wrapped, key_context(site_id, subject)
                )
            except DecryptionFailed:
                if skip_broken:
                    continue
                raise
            found.append((subject, FieldCipher(dek)))
        self.vault.keep_ciphers(site_id, found)
        out.update(found)
        return out

    def _target_ciphers(
        self, target: Site, subjects: list[str]
    ) -> tuple[dict[str, FieldCipher], Callable[[], None]]:
        """Each subject's key at the target, created (in one batch) where missing, and
        what waits until the new keys are stored (raising what storing them raised). They
        are written on a thread of their own while the caller seals the copies (the
        write's wait for the key store's commit releases the interpreter); the caller
        waits before its transaction at the target begins, so no copy commits before
        its key is stored, as before."""
        vault = self.vault
        out = self._ciphers(target.id, subjects)
        new: list[tuple[str, WrappedKey]] = []
        for subject in dict.fromkeys(subjects):
            if subject in out:
                continue
            dek = new_data_key()
            version, wrapped = vault.keys.wrap(target.id, dek, key_context(target.id, subject))
            new.append((subject, WrappedKey(version, wrapped)))
            out[subject] = FieldCipher(dek)
        if not new:
            return out, lambda: None
        keystore = vault.keystore(target.id)
        written = _started(lambda: keystore.put_many(new), apart=keystore.backend != "sqlite")

        def stored() -> None:
            written()
            self.vault.keep_ciphers(target.id, [(subject, out[subject]) for subject, _ in new])

        return out, stored

    def _category(self, collection: str, name: str) -> str:
        return self.vault.collection(collection).fields[name].category

    def _permitted_fields(self, primary: StoredRecord, target: str) -> list[str] | None:
        """The fields of ``primary`` that its collection copies to ``target``."""
        key = (primary.collection, target, tuple(primary.field_names))
        if key in self._fields:
            hit = self._fields[key]
            return None if hit is None else list(hit)
        coll = self.vault.collection(primary.collection)
        spec = next((t for t in coll.replicate if t.to == target), None)
        if spec is None:
            names = None
        else:
            present = set(primary.field_names)
            names = [f for f in spec.fields or list(coll.fields) if f in present]
        if len(self._fields) >= 4096:
            self._fields.clear()
        self._fields[key] = names
        return None if names is None else list(names)

    def permission(
        self, home: Site, target: Site, record: StoredRecord, fields: list[str] | None,
        *, residency_site: Site | None = None, stamp: tuple[dt.date, Any] | None = None,
        residency: Residency | None = None, facts: dict[str, bool | int | str] | None = None,
    ) -> Decision | None:  # fmt: skip
        """May ``target`` keep a copy of these fields of ``record`` today? (``residency``:
        the subject's, when the caller opened the record already; ``facts``: the decision's
        facts, when the caller has them for this home and target already.)"""
        vault = self.vault
        holder = residency_site or home
        if residency is None:
            try:
                residency = vault._residency(holder, record)
            except (KeyDestroyed, DecryptionFailed):
                return None
        names = fields if fields is not None else list(record.field_names)
        key = (record.collection, tuple(names))
        cats = self._categories.get(key)
        if cats is None:
            cats = tuple(sorted({self._category(record.collection, f) for f in names}))
            if len(self._categories) >= 4096:
                self._categories.clear()
            self._categories[key] = cats
        if facts is None:
            facts = self.facts(home, target)
        return vault._decide_sorted(
            residency, cats, "store", target.country, None, tuple(sorted(facts.items())),
            stamp or vault._stamp(),
        )  # fmt: skip

    def _plan_facts(self, home: Site, plan: _TargetPlan) -> dict[str, bool | int | str]:
        if plan.facts is None:
            plan.facts = self.facts(home, plan.target)
        return plan.facts

    def facts(self, home: Site, target: Site) -> dict[str, bool | int | str]:
        """The facts a copy at ``target`` of a record of ``home`` is decided on."""
        facts: dict[str, bool | int | str] = {"replica": True, "primary_country": home.country}
        facts.update(self.vault.transfer_facts(home, target.country))
        return facts

    def _reseal(
        self,
        home: Site,
        target: Site,
        primary: StoredRecord,
        fields: list[str],
        dest: FieldCipher,
        opened: tuple[Residency, dict[str, Any]],
    ) -> StoredRecord:
        """The copy: the permitted fields (and the residency), opened from the primary once
        and sealed once for the target, bound to the target site and the primary's version."""
        residency, values = opened
        body = seal_body(
            dest, target.id, primary.collection, primary.record_id, primary.version,
            self._residency_text(residency), {f: values[f] for f in fields if f in values},
        )  # fmt: skip
        return StoredRecord(
            primary.record_id, primary.subject_id, primary.collection, primary.version,
            primary.created_at, primary.updated_at, body, primary_site=home.id,
        )  # fmt: skip

    def _residency_text(self, residency: Residency) -> str:
        text = self._texts.get(residency)
        if text is None:
            if len(self._texts) >= 4096:
                self._texts.clear()
            text = self._texts[residency] = residency_text(residency)
        return text

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
        with store.transaction() as tx:
            # Each copy logged only if this transaction removed it (another worker may run).
            removed = [c for c in copies if tx.delete([c.record_id])]
            events = [_removal_event(target, c, reason, decision, self.client) for c in removed]
            if events:
                self.vault._ledgers[target.id].append(tx, events)
        return len(removed)

    def reconcile(self, report: ReplicationReport | None = None) -> ReplicationReport:
        """Re-check every copy: delete those the law no longer permits."""
        report = report or ReplicationReport()
        for target in self._here():
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
                    fields = list(copy.field_names)
                    try:
                        decision = (
                            self.permission(home, target, copy, fields, residency_site=target)
                            if home is not None
                            else None
                        )
                    except SiteUnavailable as exc:
                        # The decision needs the home's figures (a volume threshold) and the
                        # home did not answer (or, on a node, is another node's): the copy
                        # stays until it can be decided; never removed on a guess.
                        report.unavailable.append(exc.site)
                        continue
                    if decision is None or decision.outcome is not Outcome.allow:
                        why = (
                            "the law no longer permits this copy"
                            if decision
                            else "its key or primary site is gone"
                        )
                        report.removed += self._remove(target, [copy.record_id], why, decision)
        return report


def _started(fn: Callable[[], T], *, apart: bool = True) -> Callable[[], T]:
    """``fn`` running on a thread of its own, and what waits for it (returning what it
    returned, or raising what it raised). Its waits on a database server release the
    interpreter, so the caller's own work goes on meanwhile. ``apart=False``: run now,
    in this thread (SQLite does its work in this process: measured, the thread only
    made replication slower there)."""
    result: list[T] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # raised again in the caller's thread
            failed.append(exc)

    thread = threading.Thread(target=run, name="domicile-replication", daemon=True)
    if apart:
        thread.start()
    else:
        run()

    def wait() -> T:
        if apart:
            thread.join()
        if failed:
            raise failed[0]
        return result[0]

    return wait


def _removal_event(
    target: Site,
    copy: StoredRecord,
    reason: str,
    decision: Decision | None,
    client: str | None,
) -> AuditEvent:
    """The audit entry that is the evidence of a copy's deletion at ``target``."""
    return AuditEvent(
        action="delete",
        site=target.id,
        purpose=PURPOSE,
        collection=copy.collection,
        record=copy.record_id,
        subject=copy.subject_id,
        requester=copy.primary_site,
        client=client,
        rules=decision.rule_ids if decision else (),
        decision=decision.outcome.value if decision else None,
        detail={"reason": reason, "copy_of": copy.primary_site, "version": copy.version},
    )


def _erasure_event(
    target: Site, subject: str, copies: int, client: str | None, purpose: str = PURPOSE
) -> AuditEvent:
    """The audit entry that is the evidence of an erasure at a site holding copies."""
    return AuditEvent(
        action="erase",
        site=target.id,
        purpose=purpose,
        subject=subject,
        client=client,
        detail={"copies": copies, "key_destroyed": True},
    )


def erase_copies(
    vault: VaultCore,
    home: Site,
    subject: str,
    sites: Sequence[str],
    access: Access,
    purpose: str,
) -> tuple[list[str], list[str]]:
    """An erasure's copies, now (called by ``Domicile.erase`` once the home site has erased
    the subject): at each site that may hold copies, the subject's key goes first, then its
    copies, and the subject is marked erased there, with an entry in that site's audit
    naming the caller. The home outbox's ``erase`` items of the sites reached are cleared;
    a site that does not answer keeps its item for the worker. Returns (sites reached,
    sites pending)."""
    deleted: list[str] = []
    pending: list[str] = []
    now = vault.clock().isoformat()
    for site_id in sites:
        target = next(s for s in vault.config.sites if s.id == site_id)
        try:
            if not vault.is_here(site_id):  # a federation's node: the copy's node erases it
                vault.erase_copies_at(site_id, subject)
                deleted.append(site_id)
                continue
            vault.keystore(site_id).delete(subject)
            vault._forget_key(site_id, subject)
            with vault.store(site_id).transaction() as tx:
                copies = tx.erase_subject(subject, now)
                event = _erasure_event(target, subject, copies, access.client, purpose)
                vault._ledgers[site_id].append(
                    tx, [replace(event, requester=access.site or vault.config.local_site)]
                )
            deleted.append(site_id)
        except DomicileError:  # unreachable, or not the site it should be: the worker retries
            vault._drop(site_id)
            pending.append(site_id)
    if deleted:
        try:
            with vault.store(home.id).transaction() as tx:
                tx.dequeue_erasures(subject, deleted)
        except SiteUnavailable:
            # The items stay: the worker erases again there, which finds nothing left to do.
            vault._drop(home.id)
    return deleted, pending
