"""The transfer ledger, read back: every transfer in every site's hash-chained audit.

Only transfers are listed and counted: reads from abroad that disclosed the data, and
copies delivered. A masked disclosure (a read from abroad that the law refused in full but
let through in the masked forms a pack permits) is no transfer; it is reported apart, as a
count per destination, and listed only when asked for (``masked=True``). Entries written
before masked disclosures had their own kind (``transfer`` with ``masked: true``) are read
as the masked disclosures they were.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from domicile.stores.base import SiteUnavailable
from domicile.vault.service import Domicile


@dataclass
class TransferSummary:
    total: int = 0
    by_destination: dict[str, dict[str, Any]] = field(default_factory=dict)
    entries: list[dict[str, Any]] = field(default_factory=list)
    masked_total: int = 0
    masked_by_destination: dict[str, int] = field(default_factory=dict)
    masked_entries: list[dict[str, Any]] | None = None  # listed on request only
    unavailable: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        masked: dict[str, Any] = {
            "total": self.masked_total,
            "by_destination": self.masked_by_destination,
        }
        if self.masked_entries is not None:
            masked["entries"] = self.masked_entries
        return {
            "total": self.total,
            "by_destination": self.by_destination,
            "entries": self.entries,
            "masked_disclosures": masked,
            "unavailable": self.unavailable,
        }


def _is_masked(entry: dict[str, Any]) -> bool:
    if entry.get("action") == "disclose_masked":
        return True
    return entry.get("action") == "transfer" and bool(entry.get("detail", {}).get("masked"))


def summarize(
    vault: Domicile,
    *,
    since: dt.date | None = None,
    until: dt.date | None = None,
    to_country: str | None = None,
    limit: int = 1000,
    masked: bool = False,
    upto: Mapping[str, int] | None = None,
) -> TransferSummary:
    """Transfers (reads from abroad and copies delivered), newest last, with per-destination
    totals: entries, distinct subjects, kinds, routes and filings relied on; masked
    disclosures counted apart (and listed with ``masked``). ``since`` and ``until`` are
    days (UTC), both included; ``upto``: per site, the last entry to read (an evidence
    pack's ledger ends where its proven audit segments end)."""
    out = TransferSummary(masked_entries=[] if masked else None)
    subjects: dict[str, set[str]] = defaultdict(set)
    for site in vault.config.sites:
        try:
            rows = list(vault.store(site.id).audit())
        except SiteUnavailable:
            vault._drop(site.id)
            out.unavailable.append(site.id)
            continue
        last = upto.get(site.id, 0) if upto is not None else None
        for row in rows:
            if last is not None and row.seq > last:
                break
            entry = json.loads(row.payload)
            if entry.get("action") not in ("transfer", "disclose_masked"):
                continue
            detail = entry.get("detail", {})
            dest = detail.get("to_country", "?")
            if to_country and dest != to_country:
                continue
            if (since or until) and not _within(entry["at"], since, until):
                continue
            if _is_masked(entry):
                out.masked_total += 1
                out.masked_by_destination[dest] = out.masked_by_destination.get(dest, 0) + 1
                if out.masked_entries is not None and len(out.masked_entries) < limit:
                    out.masked_entries.append(_masked_entry(vault, site.id, row.seq, entry))
                continue
            out.total += 1
            agg = out.by_destination.setdefault(
                dest, {"transfers": 0, "subjects": 0, "kinds": {}, "routes": {}, "filings": []}
            )
            agg["transfers"] += 1
            kind = detail.get("kind", "access")
            agg["kinds"][kind] = agg["kinds"].get(kind, 0) + 1
            for route in detail.get("routes", []):
                agg["routes"][route] = agg["routes"].get(route, 0) + 1
            agg["filings"] = sorted(set(agg["filings"]) | set(detail.get("filings", [])))
            if entry.get("subject"):
                subjects[dest].add(entry["subject"])
            if len(out.entries) < limit:
                out.entries.append(
                    {
                        "at": entry["at"],
                        "logged_at_site": site.id,
                        "seq": row.seq,
                        "kind": kind,
                        "from_country": detail.get("from_country"),
                        "to_country": dest,
                        "record": entry.get("record"),
                        "token": vault.tokens.issue(
                            entry.get("requester", site.id) if kind == "replica" else site.id,
                            entry["record"],
                        )
                        if entry.get("record")
                        else None,
                        "categories": entry.get("categories", []),
                        "routes": detail.get("routes", []),
                        "rules": entry.get("rules", []),
                        "bases": detail.get("bases", []),
                        "filings": detail.get("filings", []),
                        "purpose": entry.get("purpose"),
                        "requester": entry.get("requester"),
                        "client": entry.get("client"),
                    }
                )
    for dest, agg in out.by_destination.items():
        agg["subjects"] = len(subjects[dest])
    out.entries.sort(key=lambda e: e["at"])
    if out.masked_entries is not None:
        out.masked_entries.sort(key=lambda e: e["at"])
    return out


def _within(at: str, since: dt.date | None, until: dt.date | None) -> bool:
    """Whether an entry's time falls on a day of the period (UTC; both ends included)."""
    moment = dt.datetime.fromisoformat(at)
    day = (moment.astimezone(dt.UTC) if moment.tzinfo else moment).date()
    return (since is None or day >= since) and (until is None or day <= until)


def _masked_entry(vault: Domicile, site_id: str, seq: int, entry: dict[str, Any]) -> dict[str, Any]:
    detail = entry.get("detail", {})
    return {
        "at": entry["at"],
        "logged_at_site": site_id,
        "seq": seq,
        "from_country": detail.get("from_country"),
        "to_country": detail.get("to_country"),
        "record": entry.get("record"),
        "token": vault.tokens.issue(site_id, entry["record"]) if entry.get("record") else None,
        "fields": entry.get("fields", []),
        "masks": detail.get("masks", {}),
        "withheld": detail.get("withheld", []),
        "rules": entry.get("rules", []),
        "purpose": entry.get("purpose"),
        "requester": entry.get("requester"),
        "client": entry.get("client"),
    }
