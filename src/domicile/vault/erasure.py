"""Erasure and keys: a subject's erasure (its key destroyed first, then its records, here and
at every site that may hold copies) and the online rotation of a site's key-encryption key."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from domicile.access import Access
from domicile.audit import AuditEvent
from domicile.crypto.envelope import (
    key_context,
)
from domicile.errors import BadInput
from domicile.stores import (
    StoredRecord,
    WrappedKey,
)
from domicile.vault.core import (
    VaultCore,
    check_purpose,
    keep_reply,
)

# Seconds a key rotation waits before its second pass: longer than any writer takes between
# wrapping a new subject's key and storing it.
ROTATION_GRACE = 2.0


class Erasure(VaultCore):
    """erase and rotate_key."""

    def erase(
        self,
        token: str,
        *,
        purpose: str = "erasure",
        as_site: str | None = None,
        access: Access | None = None,
    ) -> dict[str, Any]:
        """Erase the subject the token belongs to: destroy its data key first (so every copy
        and backup of its data becomes unreadable), then delete all its records here; then,
        at once, its copies and its key at every site that may hold copies and answers.

        The answer lists those sites (``copies.deleted``) and the ones that did not answer
        (``copies.pending``): their outbox items stay, and ``replicate`` finishes there."""
        check_purpose(purpose)
        access, requester = self._acting(access, as_site)
        self.authorize(access, "records:erase", site=requester.id, purpose=purpose)
        site, record_id = self._locate(token)
        rec = self._load(site, record_id, purpose, "erase", access)
        self.authorize(
            access, "records:erase", collection=rec.collection, purpose=purpose, hide=True,
            subject=(site.id, rec.subject_id), record=rec.record_id,
        )  # fmt: skip
        subject = rec.subject_id
        self._require(site.id, purpose, None, "erase", access)
        self.keystore(site.id).delete(subject)
        self._forget_key(site.id, subject)
        store = self.store(site.id)
        # Every site that may hold copies forgets the subject too: its copies and its key.
        copy_sites = sorted(self._copy_sites - {site.id})

        def answer(removed: int, deleted: list[str], pending: list[str]) -> dict[str, Any]:
            return {
                "erased": True, "site": site.id, "country": site.country, "records": removed,
                "key_destroyed": True, "copies": {"deleted": deleted, "pending": pending},
            }  # fmt: skip

        with store.transaction() as tx:
            # After every write already holding the subject; later ones see it erased.
            removed = tx.erase_subject(subject, self.clock().isoformat())
            tx.enqueue([(record_id, subject, t, "erase") for t in copy_sites])
            self._ledgers[site.id].append(
                tx,
                [
                    AuditEvent(
                        action="erase", site=site.id, purpose=purpose, subject=subject,
                        requester=requester.id, client=access.client,
                        detail={"records": removed, "key_destroyed": True},
                    )
                ],
            )  # fmt: skip
            # A peer's retry after a crash gets this answer: every copy site pending (the
            # outbox items just queued reach them if the erasure below does not).
            keep_reply(tx, site.id, answer(removed, [], copy_sites))
        from domicile.vault.replication import erase_copies  # the worker's module uses ours

        deleted, pending = erase_copies(self, site, subject, copy_sites, access, purpose)
        return answer(removed, deleted, pending)

    def erase_records(
        self,
        site_id: str,
        records: Sequence[StoredRecord],
        *,
        belonging: Mapping[str, Sequence[str]] | None = None,
        purpose: str,
        client: str | None,
        detail: Mapping[str, Any],
    ) -> dict[str, Any]:
        """Erase some records of a site (not a whole subject), as ``erase`` erases a subject:
        a subject none of whose records stays at the site is erased whole, here and at every
        site that may hold copies, its data key destroyed first (crypto-shredding); the
        others lose only these rows, and their copies as ``delete`` removes them.
        ``belonging`` names, per record, rows that go with it (an InCountry record's
        attached files, which have the record's subject). One
        ``erase`` entry per record (``detail`` added to each, ``key_destroyed`` saying
        whether its subject's key went) is appended in the transaction that deletes it.
        The caller has decided that these records go (e.g. they expired)."""
        if not records:
            return {"site": site_id, "records": 0, "keys_destroyed": 0,
                    "copies": {"deleted": [], "pending": []}}  # fmt: skip
        site = self._sites[site_id]
        store = self.store(site_id)
        extra = belonging or {}
        gone = {r.record_id for r in records} | {
            x for r in records for x in extra.get(r.record_id, ())
        }
        subjects = sorted({r.subject_id for r in records})
        shred = [s for s in subjects if all(o.record_id in gone for o in store.subject_records(s))]
        keys = self.keystore(site_id)
        for subject in shred:  # the keys first: a saved copy of the rows no longer opens
            keys.delete(subject)
            self._forget_key(site_id, subject)
        copy_sites = sorted(self._copy_sites - {site_id})
        now = self.clock().isoformat()
        events = [
            AuditEvent(
                action="erase", site=site_id, purpose=purpose, collection=r.collection,
                record=r.record_id, subject=r.subject_id, requester=site_id, client=client,
                detail={**detail, "records": 1, "files": len(extra.get(r.record_id, ())),
                        "key_destroyed": r.subject_id in shred},
                at=now,
            )
            for r in records
        ]  # fmt: skip
        with store.transaction() as tx:
            tx.delete(sorted(gone))
            for subject in shred:  # remembered as erased, its copies' erasure queued
                tx.erase_subject(subject, now)
                first = next(r.record_id for r in records if r.subject_id == subject)
                tx.enqueue([(first, subject, t, "erase") for t in copy_sites])
            # The other records' copies go as a delete's do, through the outbox.
            colls = self.config.model.collections
            tx.enqueue(
                [
                    (r.record_id, r.subject_id, t, "delete")
                    for r in records
                    if r.subject_id not in shred and r.collection in colls
                    for t in self._replica_targets(self.collection(r.collection), site_id)
                ]
            )
            self._ledgers[site_id].append(tx, events)
        from domicile.vault.replication import erase_copies  # the worker's module uses ours

        deleted: set[str] = set()
        pending: set[str] = set()
        for subject in shred:
            reached, waiting = erase_copies(self, site, subject, copy_sites, self.operator, purpose)
            deleted.update(reached)
            pending.update(waiting)
        return {
            "site": site_id,
            "records": len(records),
            "keys_destroyed": len(shred),
            "copies": {"deleted": sorted(deleted), "pending": sorted(pending)},
        }

    def rotate_key(
        self, site_id: str, *, batch: int = 500, grace: float = ROTATION_GRACE
    ) -> dict[str, Any]:
        """Rotate a site's key-encryption key without downtime: new writes use the new key at
        once (in every process: each looks at the keyring before it wraps a key); existing
        data keys are re-wrapped in batches; the old key is retired last.

        A writer may have wrapped a new subject's key with the old key just before the
        rotation and store it just after the first pass: after ``grace`` seconds a second
        pass re-wraps such stragglers, and an old key is retired only if nothing at all is
        wrapped with it any more."""
        if site_id not in self._sites:
            raise BadInput("no site of that name", hint=f"the sites are: {', '.join(self._sites)}")
        if grace < 0:
            raise BadInput("the grace period cannot be negative", hint="give seconds, e.g. 2")
        ks = self.keystore(site_id)
        old = self.keys.current_version(site_id)
        new = self.keys.rotate(site_id)

        def rewrap_stale() -> int:
            done = 0
            while True:
                stale = ks.stale(new, batch)
                if not stale:
                    return done
                for sid, wk in stale:
                    ctx = key_context(site_id, sid)
                    dek = self.keys.unwrap(site_id, wk.kek_version, wk.wrapped, ctx)
                    version, wrapped = self.keys.wrap(site_id, dek, ctx)
                    if ks.rewrap(sid, wk, WrappedKey(version, wrapped)):
                        done += 1

        rewrapped = rewrap_stale()
        if grace:
            time.sleep(grace)
        rewrapped += rewrap_stale()
        retired = []
        versions: Callable[[str], list[int]] = getattr(self.keys, "versions", lambda _s: [])
        for v in range(1, new):
            if v in versions(site_id) and not ks.versions().get(v):
                self.keys.retire(site_id, v)
                # A provider may keep a version it cannot retire yet (Vault Transit
                # retires oldest first): only what is gone is reported retired.
                if v not in versions(site_id):
                    retired.append(v)
        self._audit(
            site_id,
            [
                AuditEvent(
                    action="rotate",
                    site=site_id,
                    client=self.operator.client,
                    detail={"from": old, "to": new, "rewrapped": rewrapped},
                )
            ],
        )
        return {
            "site": site_id,
            "from_version": old,
            "to_version": new,
            "rewrapped": rewrapped,
            "retired": retired,
        }
