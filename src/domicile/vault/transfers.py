"""The transfer ledger, read back: every transfer in every site's hash-chained audit."""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from domicile.stores.base import SiteUnavailable
from domicile.vault.service import Domicile


@dataclass
class TransferSummary:
    total: int = 0
    by_destination: dict[str, dict[str, Any]] = field(default_factory=dict)
    entries: list[dict[str, Any]] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_destination": self.by_destination,
            "entries": self.entries,
            "unavailable": self.unavailable,
        }


def summarize(
    vault: Domicile,
    *,
    since: dt.date | None = None,
    to_country: str | None = None,
    limit: int = 1000,
) -> TransferSummary:
    """Transfers (reads from abroad and copies delivered), newest last, with per-destination
    totals: entries, distinct subjects, kinds, routes and filings relied on."""
    out = TransferSummary()
    subjects: dict[str, set[str]] = defaultdict(set)
    for site in vault.config.sites:
        try:
            rows = list(vault.store(site.id).audit())
        except SiteUnavailable:
            vault._drop(site.id)
            out.unavailable.append(site.id)
            continue
        for row in rows:
            entry = json.loads(row.payload)
            if entry.get("action") != "transfer":
                continue
            detail = entry.get("detail", {})
            dest = detail.get("to_country", "?")
            if to_country and dest != to_country:
                continue
            if since and dt.datetime.fromisoformat(entry["at"]).date() < since:
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
                        "masked": detail.get("masked", False),
                        "purpose": entry.get("purpose"),
                        "requester": entry.get("requester"),
                    }
                )
    for dest, agg in out.by_destination.items():
        agg["subjects"] = len(subjects[dest])
    out.entries.sort(key=lambda e: e["at"])
    return out
