"""``domicile federation reindex --node SITE``: search entries for records written before
the deployment was federated.

A federated deployment indexes each searchable value a second time at its site, by its
search digest (``crypto/blind.py``), so other nodes can find it without the value. Records
written before the configuration had a ``federation`` section have no such entries, and
other nodes' finds miss them. This walks the node's own site (its keys are the only ones
that open its records), opens each primary of a configured collection and adds the
search entries it lacks, a batch per transaction with one audit entry (``upgrade``,
``detail.search_entries``) naming the records it gave entries to. Each transaction checks
that its records are still at the version read (an update meanwhile makes its own
entries; the page is read again), so the walk can stop at any point and run again: what
has its entries is passed over, and a run with nothing missing writes nothing.

Nothing else makes these entries for old records: writes make them for what they write.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from domicile.audit import AuditEvent
from domicile.config import Config
from domicile.crypto.errors import DecryptionFailed, KeyDestroyed
from domicile.errors import BadInput
from domicile.stores.base import IndexEntry, StoredRecord, VersionConflict
from domicile.vault.service import Domicile


@dataclass
class Reindexed:
    """What a reindex of one node's site did."""

    site: str
    records: int = 0  # records walked (primaries and copies held there)
    indexed: int = 0  # records given the search entries they lacked, now
    entries: int = 0  # entries added, now
    current: int = 0  # primaries that had every search entry already
    unreadable: list[str] = field(default_factory=list)  # record ids that do not open

    @property
    def done(self) -> bool:
        return not self.unreadable

    def to_dict(self) -> dict[str, Any]:
        return {
            "site": self.site, "done": self.done, "records": self.records,
            "indexed": self.indexed, "entries": self.entries, "current": self.current,
            "unreadable": self.unreadable,
        }  # fmt: skip


def check_federated(config: Config) -> None:
    """Refuse a deployment without a ``federation`` section: search entries serve only
    other nodes' finds, and nothing makes them in the embedded default."""
    if config.model.federation is None:
        raise BadInput(
            "this deployment has no federation section: search entries serve federated finds only",
            hint="add a federation section (domicile init --federated writes one), then reindex each node",
        )


def reindex(
    vault: Domicile,
    *,
    batch: int = 500,
    progress: Callable[[int, int], None] | None = None,
) -> Reindexed:
    """Add the missing search entries of the records at the vault's own node site;
    ``progress(records walked, records there)`` after each page."""
    if batch < 1:
        raise BadInput("the batch size must be at least 1")
    check_federated(vault.config)
    site_id = vault.node
    if site_id is None:
        raise BadInput(
            "a reindex runs at a node, over its own site",
            hint="run `domicile federation reindex --node SITE` on that node's host",
        )
    store = vault.store(site_id)
    vault.keystore(site_id)  # a missing key store is an unavailable site, here as anywhere
    total = store.count() + store.count_replicas()
    collections = vault.config.model.collections
    out = Reindexed(site_id)
    walked, after = 0, ""
    while True:
        page = store.records_after(after, batch)
        if not page:
            break
        primaries = [r for r in page if not r.is_replica and r.collection in collections]
        held = store.digests_of([r.record_id for r in primaries])
        missing: list[tuple[StoredRecord, list[IndexEntry]]] = []
        unreadable: list[str] = []
        for rec in primaries:
            try:
                entries = vault.search_entries(site_id, rec)
            except (KeyDestroyed, DecryptionFailed):
                unreadable.append(rec.record_id)  # erased meanwhile, or altered
                continue
            have = held.get(rec.record_id, set())
            want = [d for d in entries if d not in have]
            if want:
                missing.append((rec, [IndexEntry(d, rec.record_id) for d in dict.fromkeys(want)]))
        if missing:
            event = AuditEvent(
                action="upgrade", site=site_id, requester=site_id,
                client=vault.operator.client, records=tuple(r.record_id for r, _ in missing),
                detail={"search_entries": sum(len(e) for _, e in missing)},
            )  # fmt: skip
            try:
                with store.transaction() as tx:
                    for rec, adding in missing:
                        # The record as read, written back as it was: a record updated
                        # or deleted since (its own entries made, or gone) fails this.
                        tx.replace(rec, rec.version)
                        tx.index(adding)
                    vault.ledger(site_id).append(tx, [event])
            except VersionConflict:
                continue  # nothing of the page was written: read it again
            out.indexed += len(missing)
            out.entries += sum(len(e) for _, e in missing)
        out.unreadable += unreadable
        out.current += len(primaries) - len(missing) - len(unreadable)
        after = page[-1].record_id
        walked += len(page)
        out.records = walked
        if progress is not None:
            progress(walked, total)
    return out
