"""``domicile upgrade``: re-seal a deployment's records in the current layout, in place.

Records written before layout 3 (one seal per field) stay readable; this walks every site's
records (primaries and the copies held there), opens each layout-2 record of a configured
collection with its subject's key at that site, and seals it again as one layout-3 body,
at the same version (nothing about the data changes, so copies abroad and parity are
unaffected). Each batch is one transaction with one audit entry naming the records it
re-sealed, so the upgrade can stop at any point and run again: it goes on from where it is
(already re-sealed records are passed over).

InCountry-compatible records (``@incountry`` and their files) keep layout 2 on purpose:
their bodies can be megabytes and their filters read single keys, which per-field seals
serve better.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from domicile.audit import AuditEvent
from domicile.crypto.errors import DecryptionFailed, KeyDestroyed
from domicile.errors import BadInput
from domicile.stores.base import SiteUnavailable, StoredRecord, VersionConflict
from domicile.vault.core import residency_text
from domicile.vault.sealing import open_body, seal_body
from domicile.vault.service import Domicile


@dataclass
class SiteUpgrade:
    site: str
    resealed: int = 0  # records re-sealed now
    current: int = 0  # records already in the current layout (or not the vault's)
    unreadable: list[str] = field(default_factory=list)  # record ids that do not open

    def to_dict(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "resealed": self.resealed,
            "current": self.current,
            "unreadable": self.unreadable,
        }


@dataclass
class UpgradeReport:
    sites: list[SiteUpgrade] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return not self.unavailable and not any(s.unreadable for s in self.sites)

    def to_dict(self) -> dict[str, Any]:
        return {
            "done": self.done,
            "sites": [s.to_dict() for s in self.sites],
            "unavailable": self.unavailable,
        }


def upgrade(
    vault: Domicile,
    *,
    site: str | None = None,
    batch: int = 500,
    progress: Callable[[str, int, int], None] | None = None,
) -> UpgradeReport:
    """Re-seal every layout-2 record of the configured collections at each site (or one
    site); ``progress(site, records walked, records there)`` after each batch."""
    if batch < 1:
        raise BadInput("the batch size must be at least 1")
    ids = [s.id for s in vault.config.sites]
    if site is not None and site not in ids:
        raise BadInput("no site of that name", hint=f"the sites are: {', '.join(ids)}")
    report = UpgradeReport()
    for sid in [site] if site else ids:
        try:
            report.sites.append(_upgrade_site(vault, sid, batch, progress))
        except SiteUnavailable:
            vault.forget_store(sid)
            report.unavailable.append(sid)
    return report


def _upgrade_site(
    vault: Domicile,
    site_id: str,
    batch: int,
    progress: Callable[[str, int, int], None] | None,
) -> SiteUpgrade:
    here = vault.config.site(site_id)
    store = vault.store(site_id)
    vault.keystore(site_id)  # a missing key store is an unavailable site, here as anywhere
    total = store.count() + store.count_replicas()
    out = SiteUpgrade(site_id)
    walked, after = 0, ""
    while True:
        page = store.records_after(after, batch)
        if not page:
            break
        resealed: list[tuple[StoredRecord, StoredRecord]] = []
        for rec in page:
            if rec.layout == 3 or rec.collection.startswith("@"):
                out.current += 1
                continue
            try:
                cipher = vault._cipher(site_id, rec.subject_id)
                text, fields = open_body(cipher, site_id, rec)
            except (KeyDestroyed, DecryptionFailed):
                out.unreadable.append(rec.record_id)  # erased meanwhile, or altered
                continue
            body = seal_body(
                cipher, site_id, rec.collection, rec.record_id, rec.version,
                residency_text(vault.residency_of(text)), fields,
            )  # fmt: skip
            resealed.append((rec, replace(rec, body=body)))
        if resealed:
            event = AuditEvent(
                action="upgrade", site=site_id, requester=here.id,
                client=vault.operator.client, records=tuple(r.record_id for r, _ in resealed),
                detail={"layout": 3},
            )  # fmt: skip
            try:
                with store.transaction() as tx:
                    for old, new in resealed:
                        tx.replace(new, old.version)
                    vault.ledger(site_id).append(tx, [event])
            except VersionConflict:
                # A record of this page changed meanwhile (an update seals it in layout 3
                # itself): nothing of the page was written; read it again.
                out.current -= sum(1 for r in page if r.layout == 3 or r.collection[:1] == "@")
                out.unreadable = [u for u in out.unreadable if u not in {r.record_id for r in page}]
                continue
            out.resealed += len(resealed)
        after = page[-1].record_id
        walked += len(page)
        if progress is not None:
            progress(site_id, walked, total)
    return out
