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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from domicile.evidence.verifier import is_masked, ledger_totals, masked_row, transfer_row
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
    found: list[dict[str, Any]] = []  # the entries the totals count
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
            if to_country and entry.get("detail", {}).get("to_country", "?") != to_country:
                continue
            if (since or until) and not _within(entry["at"], since, until):
                continue
            found.append(entry)
            if is_masked(entry):
                if out.masked_entries is not None and len(out.masked_entries) < limit:
                    listed = masked_row(site.id, row.seq, entry)
                    listed["token"] = _token(vault, site.id, entry)
                    out.masked_entries.append(listed)
            elif len(out.entries) < limit:
                listed = transfer_row(site.id, row.seq, entry)
                requester = entry.get("requester", site.id)
                listed["token"] = _token(
                    vault, requester if listed["kind"] == "replica" else site.id, entry
                )
                out.entries.append(listed)
    totals = ledger_totals(found)
    out.total, out.by_destination = totals["total"], totals["by_destination"]
    out.masked_total = totals["masked_disclosures"]["total"]
    out.masked_by_destination = totals["masked_disclosures"]["by_destination"]
    out.entries.sort(key=lambda e: e["at"])
    if out.masked_entries is not None:
        out.masked_entries.sort(key=lambda e: e["at"])
    return out


def _token(vault: Domicile, site_id: str, entry: dict[str, Any]) -> str | None:
    return vault.tokens.issue(site_id, entry["record"]) if entry.get("record") else None


def _within(at: str, since: dt.date | None, until: dt.date | None) -> bool:
    """Whether an entry's time falls on a day of the period (UTC; both ends included)."""
    moment = dt.datetime.fromisoformat(at)
    day = (moment.astimezone(dt.UTC) if moment.tzinfo else moment).date()
    return (since is None or day >= since) and (until is None or day <= until)
