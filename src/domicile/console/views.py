"""What the console's pages show, gathered from the vault (blocking work: the routes run it
on the service's executor). Nothing here checks scopes: the routes ask ``Domicile.authorize``
first, as every interface does.

Two caches keep the pages fast on a large deployment, both grown incrementally from each
site's append-only audit, never rebuilt:

- ``LedgerIndex``: the transfer entries (as ``domicile transfers`` lists them) and the last
  sequence number read, per site; a page reads only the entries appended since the last one.
- the audit page's verification, kept per site for the sequence number it was computed at,
  and computed again only when the log has grown.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from domicile.errors import DomicileError
from domicile.packs.model import Operation
from domicile.stores.base import SiteUnavailable
from domicile.vault import Domicile

_KINDS = ('"action":"transfer"', '"action":"disclose_masked"')


@dataclass
class _SiteLedger:
    last: int = 0
    entries: list[dict[str, Any]] = field(default_factory=list)
    masked: int = 0
    # (audit sequence number they were counted at, records, subjects, copies held): every
    # change to a site's records is audited there, so they hold while the log has not grown.
    counts: tuple[int, int, int, int] | None = None


@dataclass
class _Flow:
    transfers: int = 0
    subjects: set[str] = field(default_factory=set)


class LedgerIndex:
    """Transfer entries of every site's audit, read once and then only as they grow."""

    def __init__(self, vault: Domicile) -> None:
        self.vault = vault
        self._sites: dict[str, _SiteLedger] = {}
        self._lock = threading.Lock()
        self._verified: dict[str, tuple[int, dict[str, Any]]] = {}
        self.flows: dict[tuple[str, str, str], _Flow] = {}  # (from, to, kind), kept as read
        self._merged: tuple[tuple[int, ...], list[dict[str, Any]]] | None = None
        self._verifying = False

    def refresh(self) -> tuple[dict[str, _SiteLedger], list[str]]:
        """Bring every site up to date; the sites that did not answer."""
        unavailable: list[str] = []
        with self._lock:
            for site in self.vault.config.sites:
                led = self._sites.setdefault(site.id, _SiteLedger())
                try:
                    for row in self.vault.store(site.id).audit(led.last + 1):
                        led.last = row.seq
                        payload = row.payload
                        if not (_KINDS[0] in payload or _KINDS[1] in payload):
                            continue
                        entry = json.loads(payload)
                        if entry.get("action") == "disclose_masked" or entry.get("detail", {}).get(
                            "masked"
                        ):
                            led.masked += 1
                            continue
                        added = self._entry(site.id, row.seq, entry)
                        led.entries.append(added)
                        key = (added["from_country"] or "?", added["to_country"], added["kind"])
                        flow = self.flows.setdefault(key, _Flow())
                        flow.transfers += 1
                        if added["subject"]:
                            flow.subjects.add(added["subject"])
                except SiteUnavailable:
                    self.vault._drop(site.id)
                    unavailable.append(site.id)
            return dict(self._sites), unavailable

    def counts(self, site: str) -> tuple[int, int, int]:
        """Records, subjects and copies held at a site, counted again only when its log
        has grown since they were last counted."""
        led = self._sites.get(site)
        if led is not None and led.counts is not None and led.counts[0] == led.last:
            return led.counts[1:]
        store = self.vault.store(site)
        at = led.last if led is not None else -1
        found = (at, store.count(), store.count_subjects(), store.count_replicas())
        if led is not None:
            led.counts = found
        return found[1:]

    def _entry(self, site: str, seq: int, entry: dict[str, Any]) -> dict[str, Any]:
        detail = entry.get("detail", {})
        return {
            "at": entry["at"],
            "site": site,
            "seq": seq,
            "kind": detail.get("kind", "access"),
            "from_country": detail.get("from_country"),
            "to_country": detail.get("to_country", "?"),
            "record": entry.get("record"),
            "subject": entry.get("subject"),
            "categories": entry.get("categories", []),
            "routes": detail.get("routes", []),
            "rules": entry.get("rules", []),
            "filings": detail.get("filings", []),
            "bases": detail.get("bases", []),
            "purpose": entry.get("purpose"),
            "requester": entry.get("requester"),
            "client": entry.get("client"),
            "decision": entry.get("decision"),
        }

    def entries(self) -> tuple[list[dict[str, Any]], list[str]]:
        """Every transfer entry, oldest first (merged again only when one was added)."""
        sites, unavailable = self.refresh()
        stamp = tuple(len(led.entries) for led in sites.values())
        if self._merged is None or self._merged[0] != stamp:
            out = [e for led in sites.values() for e in led.entries]
            out.sort(key=lambda e: e["at"])
            self._merged = (stamp, out)
        return self._merged[1], unavailable

    def verified(self) -> list[dict[str, Any]]:
        """Each site's audit verification, with ``as_of``: the entry it was computed at.

        A site with no result yet is verified now. A site whose log has grown since keeps
        its last result, marked ``stale``, while one background thread verifies it again:
        a busy site's log grows with every read, and verifying a long log on every visit
        would make the page as slow as the log is long."""
        sites, _ = self.refresh()
        out = []
        grown = []
        for site in self.vault.config.sites:
            last = sites[site.id].last if site.id in sites else -1
            cached = self._verified.get(site.id)
            if cached is None:
                cached = self._verify(site.id, last)
            elif cached[0] != last:
                grown.append(site.id)
            out.append({**cached[1], "as_of": cached[0], "stale": cached[0] != last})
        if grown:
            self._reverify(grown)
        return out

    def _verify(self, site: str, last: int) -> tuple[int, dict[str, Any]]:
        report = self.vault.verify_audit(site)[0].to_dict()
        found = self._verified[site] = (last, report)
        return found

    def _reverify(self, sites: list[str]) -> None:
        with self._lock:
            if self._verifying:
                return
            self._verifying = True
        lasts = {s: led.last for s, led in self._sites.items()}

        def work() -> None:
            try:
                for site in sites:
                    try:
                        self._verify(site, lasts.get(site, -1))
                    except DomicileError:
                        self.vault._drop(site)
            finally:
                self._verifying = False

        threading.Thread(target=work, name="domicile-console-verify", daemon=True).start()


# --- pages ---------------------------------------------------------------------------------


def data_map(vault: Domicile, ledger: LedgerIndex, flows: bool) -> dict[str, Any]:
    """Sites with their country, location, records and subjects; with ``flows``, the flows
    between countries seen in the transfer ledger, with counts (else None)."""
    _, unavailable = ledger.refresh()
    sites = []
    for s in vault.config.sites:
        loc = s.location.model_dump()
        row: dict[str, Any] = {
            "id": s.id,
            "country": s.country,
            "city": loc.get("city", ""),
            "provider": loc.get("provider", ""),
            "healthy": s.id not in unavailable,
            "records": None,
            "subjects": None,
            "replicas": None,
        }
        if row["healthy"]:
            try:
                row["records"], row["subjects"], row["replicas"] = ledger.counts(s.id)
            except (SiteUnavailable, DomicileError):
                vault._drop(s.id)
                row["healthy"] = False
        sites.append(row)
    shown: list[dict[str, Any]] | None = None
    if flows:
        shown = [
            {
                "from": k[0],
                "to": k[1],
                "kind": k[2],
                "transfers": f.transfers,
                "subjects": len(f.subjects),
            }
            for k, f in sorted(ledger.flows.items())
        ]
    return {"sites": sites, "flows": shown}


def diagram(sites: list[dict[str, Any]], flows: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Positions for the data map's SVG: one node per site on a line, one arc per flow."""
    width, gap = 760, 0
    n = max(1, len(sites))
    gap = width // n
    nodes = []
    where: dict[str, int] = {}
    for i, s in enumerate(sites):
        x = gap // 2 + i * gap
        where.setdefault(s["country"], x)
        nodes.append({**s, "x": x, "y": 150})
    arcs = []
    for f in flows or []:
        a, b = where.get(f["from"]), where.get(f["to"])
        if a is None or b is None or a == b:
            continue
        lift = 40 + abs(b - a) // 4
        up = a < b  # flows to the right arc above the sites, to the left below
        cy = 150 - lift if up else 150 + lift
        arcs.append(
            {
                **f,
                "d": f"M {a} {150 + (-30 if up else 30)} Q {(a + b) // 2} {cy} {b} {150 + (-30 if up else 30)}",
                "lx": (a + b) // 2,
                "ly": (150 - lift // 2 - 14) if up else (150 + lift // 2 + 20),
            }
        )
    return {"width": width, "height": 300, "nodes": nodes, "arcs": arcs}


def filter_transfers(
    entries: list[dict[str, Any]],
    *,
    to: str | None,
    since: dt.date | None,
    until: dt.date | None,
    kind: str | None,
    record: set[str] | None = None,
) -> list[dict[str, Any]]:
    out = []
    for e in entries:
        if to and e["to_country"] != to:
            continue
        if kind and e["kind"] != kind:
            continue
        if record is not None and e["record"] not in record:
            continue
        if since or until:
            day = dt.datetime.fromisoformat(e["at"]).astimezone(dt.UTC).date()
            if (since and day < since) or (until and day > until):
                continue
        out.append(e)
    return out


def rule_details(vault: Domicile, ids: list[str]) -> list[dict[str, Any]]:
    """The rules an entry names, with their titles, words and citations from the packs."""
    found: dict[str, dict[str, Any]] = {}
    for lp in vault.engine.packs:
        pack = lp.pack
        titles = {s.id: s.title for s in pack.sources}
        for rule in pack.rules:
            if rule.id in ids:
                found[rule.id] = {
                    "id": rule.id,
                    "pack": pack.id,
                    "title": rule.title,
                    "says": rule.says,
                    "citations": [
                        {"title": titles.get(c.source, c.source), "pinpoint": c.pinpoint}
                        for c in rule.cite
                    ],
                }
    return [found.get(i, {"id": i, "title": "", "says": "", "citations": []}) for i in ids]


def obligations(vault: Domicile, today: dt.date) -> list[dict[str, Any]]:
    """What the law asks of this deployment today: for each pair of its sites' countries, a
    transfer of each collection's categories by a subject covered at the origin, decided
    with the filings on record. Obligations not yet met, with their earliest dates."""
    countries = sorted({s.country for s in vault.config.sites})
    categories = sorted(
        {f.category for c in vault.config.model.collections.values() for f in c.fields.values()}
    )
    filings = vault.filings.current()
    seen: dict[tuple[str, str, str], dict[str, Any]] = {}
    engine = vault.engine
    for origin in countries:
        for dest in countries:
            if origin == dest:
                continue
            request = engine.request(
                subject={"citizenship": origin, "residence": origin},
                categories=categories,
                operation=Operation.transfer,
                site_country=origin,
                to_country=dest,
                date=today,
                filings=filings,
            )
            decision = engine.decide(request)
            for o in decision.obligations:
                if o.status == "met":
                    continue
                key = (o.id, origin, dest)
                seen[key] = {
                    **o.to_dict(),
                    "from": origin,
                    "to": dest,
                    "outcome": decision.outcome.value,
                }
    return sorted(seen.values(), key=lambda o: (o["status"] != "outstanding", o["from"], o["to"]))
