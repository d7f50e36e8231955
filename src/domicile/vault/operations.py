"""Operations: filings on record, the sites' health, and the audit logs (verification,
witness rounds, heads, proofs)."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from domicile.access import Access
from domicile.audit import AuditEvent, VerifyReport
from domicile.audit.heads import HeadsFile
from domicile.crypto.providers import SiteKeyRouter
from domicile.errors import DomicileError
from domicile.filings import FilingEntry
from domicile.stores.base import SiteUnavailable
from domicile.vault.core import (
    VaultCore,
)

if TYPE_CHECKING:
    from domicile.vault.auditing import WitnessRound

from domicile.vault.results import SiteStatus


def location_digests(config: Any) -> dict[str, str]:
    """Per site, a short digest of where it is (country, provider, city, address)."""
    out = {}
    for site in config.sites:
        loc = site.location
        text = "\x00".join((site.country, loc.provider or "", loc.city or "", loc.address or ""))
        out[site.id] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return out


class Operations(VaultCore):
    """Filings, sites and the audit logs."""

    def add_filing(
        self,
        name: str,
        date: str | dt.date,
        *,
        note: str | None = None,
        access: Access | None = None,
    ) -> FilingEntry:
        """Put a filing on record (a notice, clauses, a ban); decisions use it at once."""
        access = access or self.operator
        self.authorize(access, "filings:write")
        entry = self.filings.add(name, date, note=note)
        self._audit_filing("add", entry, access)
        return entry

    def withdraw_filing(self, name: str, *, access: Access | None = None) -> FilingEntry:
        access = access or self.operator
        self.authorize(access, "filings:write")
        entry = self.filings.withdraw(name)
        self._audit_filing("withdraw", entry, access)
        return entry

    def _audit_filing(self, change: str, entry: FilingEntry, access: Access) -> None:
        event = AuditEvent(
            action="filing", site=self.config.local_site,
            requester=access.site or self.config.local_site, client=access.client,
            detail={
                "change": change, "name": entry.name, "date": entry.date.isoformat(),
                # Where each site was when the filing went on record (a notice states the
                # databases' addresses): a digest of each, so that a register can tell a
                # site that moved since (a data centre's address, no personal data).
                **({"sites": location_digests(self.config)} if change == "add" else {}),
            },
        )  # fmt: skip
        try:
            self._audit(self.config.local_site, [event])
        except SiteUnavailable:
            self._drop(self.config.local_site)

    def sites(self) -> list[SiteStatus]:
        out = []
        for s in self.config.sites:
            loc = s.location.model_dump()
            try:
                store = self.store(s.id)
                healthy = self._answers(s.id)
                out.append(
                    SiteStatus(
                        s.id,
                        s.country,
                        loc,
                        store.display_url,
                        store.count() if healthy else None,
                        healthy,
                    )
                )
            except DomicileError as exc:
                self._drop(s.id)
                out.append(SiteStatus(s.id, s.country, loc, s.backend, None, False, exc.message))
        return out

    def _answers(self, site_id: str) -> bool:
        """Whether a site's store and key store answer a ping; beyond a keyring, its key
        provider (a token, a KMS) is asked too, and raises when it does not answer."""
        healthy = self.store(site_id).ping() and self.keystore(site_id).ping()
        if isinstance(self.keys, SiteKeyRouter) and self.keys.kind(site_id) != "keyring":
            self.keys.index_key(site_id)  # its token or KMS answers (opened, unsealed)
        return bool(healthy)

    def ready(self) -> dict[str, bool]:
        """Whether each site this process serves answers (its store, its key store and,
        beyond a keyring, its key provider), by a ping: no count, so a readiness probe
        stays cheap on a large site. On a federation node, its own site only: its
        peers' sites are theirs to report, and a peer that is down makes only the calls
        routed to it fail."""
        out = {}
        for s in self.config.sites:
            if not self.is_here(s.id):
                continue
            try:
                ok = self._answers(s.id)
            except DomicileError:
                self._drop(s.id)
                ok = False
            out[s.id] = ok
        return out

    def verify_audit(
        self, site_id: str | None = None, *, heads: HeadsFile | str | Path | None = None
    ) -> list[VerifyReport]:
        """Verify each site's audit log (or one site's) against its own signed heads, the
        heads its witnesses hold and, when given, a heads file kept offline. Reads only."""
        from domicile.vault import auditing

        if heads is not None and not isinstance(heads, HeadsFile):
            heads = HeadsFile.load(heads)
        return auditing.verify(self, site_id, heads=heads)

    def witness(self, sites: Sequence[str] | None = None) -> WitnessRound:
        """Sign each site's log where it changed and have the other sites witness it."""
        from domicile.vault import auditing

        return auditing.witness_round(self, sites=sites)

    def audit_heads(self) -> HeadsFile:
        """Every site's public key and newest signed head (reads only)."""
        from domicile.vault import auditing

        return auditing.export_heads(self)

    def prove_entry(self, site_id: str, seq: int) -> dict[str, Any]:
        """An audit entry with its inclusion proof (reads only)."""
        from domicile.vault import auditing

        return auditing.prove(self, site_id, seq)
