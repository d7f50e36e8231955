"""Parity: proof that every in-country primary holds at least what its foreign copies hold.

For each site, its copies are read in record-id order, a page at a time, and compared with
their primaries, fetched a page at a time from the home site: memory stays bounded
however many records there are. A discrepancy is a copy whose primary is missing, a copy
newer than its primary, or a copy holding a field its primary lacks. A copy older than its
primary is normal (the worker has not caught up yet) and is counted as lagging.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from domicile.stores.base import SiteUnavailable
from domicile.vault.service import Domicile

PAGE = 1000
MAX_LISTED = 1000


@dataclass
class ParityReport:
    copies: int = 0
    lagging: int = 0
    discrepancy_count: int = 0
    discrepancies: list[dict[str, Any]] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.discrepancy_count == 0 and not self.unavailable

    def add(self, **item: Any) -> None:
        self.discrepancy_count += 1
        if len(self.discrepancies) < MAX_LISTED:
            self.discrepancies.append(item)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "copies": self.copies,
            "lagging": self.lagging,
            "discrepancy_count": self.discrepancy_count,
            "discrepancies": self.discrepancies,
            "unavailable": sorted(set(self.unavailable)),
        }


def check_parity(vault: Domicile, site: str | None = None, *, page: int = PAGE) -> ParityReport:
    """Compare the copies held at ``site`` (default: every site) with their primaries."""
    report = ParityReport()
    # Each copy is checked where it is: on a federation's node, the copies its own site
    # holds, against primaries its peers describe (versions and field names, no values).
    targets = [
        s for s in vault.config.sites if (site is None or s.id == site) and vault.is_here(s.id)
    ]
    if site is not None and not targets and vault.node is not None:
        report.unavailable.append(site)  # another node's copies: ask that node
    for target in targets:
        after = ""
        while True:
            try:
                copies = vault.store(target.id).replicas(after, page)
            except SiteUnavailable:
                vault._drop(target.id)
                report.unavailable.append(target.id)
                break
            if not copies:
                break
            after = copies[-1].record_id
            by_home: dict[str, list[str]] = {}
            for c in copies:
                by_home.setdefault(c.primary_site or "", []).append(c.record_id)
            primaries = {}
            for home, ids in by_home.items():
                try:
                    primaries.update(vault.primary_meta(home, ids))
                except (SiteUnavailable, KeyError):
                    report.unavailable.append(home)
            for c in copies:
                report.copies += 1
                p = primaries.get(c.record_id)
                where = {"site": target.id, "record": c.record_id, "primary_site": c.primary_site}
                if p is None or p.is_replica:
                    if c.primary_site not in report.unavailable:
                        report.add(problem="missing_primary", **where)
                elif c.version > p.version:
                    report.add(
                        problem="copy_ahead",
                        copy_version=c.version,
                        primary_version=p.version,
                        **where,
                    )
                elif extra := sorted(set(c.field_names) - set(p.field_names)):
                    report.add(problem="fields_missing_in_primary", fields=extra, **where)
                elif c.version < p.version:
                    report.lagging += 1
    return report
