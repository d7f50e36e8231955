"""The audit, read back for reports: every site's entries once, and what each site holds.

Reports count what the audit says happened, never what a record holds: the entries name
records, subjects (pseudonymous ids), categories, rules and countries, so every figure can
point at the entries it came from (``site:seq``) and anyone holding the logs can recount it.
Nothing here opens a sealed value or writes anything.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from domicile.vault.service import Domicile


@dataclass(frozen=True)
class Entry:
    """One audit entry: where it is logged, its number there, when, and its payload."""

    site: str
    seq: int
    at: dt.datetime
    data: dict[str, Any]

    @property
    def action(self) -> str:
        return str(self.data.get("action", ""))

    @property
    def detail(self) -> dict[str, Any]:
        d = self.data.get("detail")
        return d if isinstance(d, dict) else {}

    @property
    def rules(self) -> list[str]:
        return list(self.data.get("rules", ()))

    @property
    def day(self) -> dt.date:
        return self.at.astimezone(dt.UTC).date()

    @property
    def ref(self) -> str:
        return f"{self.site}:{self.seq}"

    def records(self) -> list[tuple[str, str | None]]:
        """(record, subject) pairs the entry names: a batch names many, in the same order."""
        recs = list(self.data.get("records", ()))
        subs = list(self.data.get("subjects", ()))
        if recs:
            return [(r, subs[i] if i < len(subs) else None) for i, r in enumerate(recs)]
        if self.data.get("record"):
            return [(self.data["record"], self.data.get("subject"))]
        return []

    def subjects(self) -> set[str]:
        out = {s for s in self.data.get("subjects", ()) if s}
        if self.data.get("subject"):
            out.add(self.data["subject"])
        return out

    @property
    def masked(self) -> bool:
        """A masked disclosure (or an entry written before they had their own kind)."""
        return self.action == "disclose_masked" or (
            self.action == "transfer" and bool(self.detail.get("masked"))
        )


@dataclass
class AuditView:
    """Every site's entries, in log order per site. A report counts every site or none: a
    site that does not answer fails the report (``SiteUnavailable``, exit 4), since a
    register or a count that leaves a database out unseen is wrong evidence."""

    entries: list[Entry] = field(default_factory=list)

    @classmethod
    def read(cls, vault: Domicile) -> AuditView:
        out = cls()
        for site in vault.config.sites:
            for row in vault.store(site.id).audit():
                data = json.loads(row.payload)
                at = dt.datetime.fromisoformat(data["at"]) if data.get("at") else _EPOCH
                out.entries.append(Entry(site.id, row.seq, at, data))
        return out

    def until(self, day: dt.date | None) -> Iterator[Entry]:
        """Entries logged on or before ``day`` (all when None), per site in log order."""
        for e in self.entries:
            if day is None or e.day <= day:
                yield e


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def refs(entries: Iterable[Entry]) -> dict[str, str]:
    """Entry numbers per site as compact ranges, e.g. ``{"ru": "1-4, 9"}``: what a
    figure came from, complete however many there are."""
    by_site: dict[str, list[int]] = {}
    for e in entries:
        by_site.setdefault(e.site, []).append(e.seq)
    out = {}
    for site, seqs in sorted(by_site.items()):
        seqs = sorted(set(seqs))
        parts: list[str] = []
        start = prev = seqs[0]
        for s in seqs[1:]:
            if s == prev + 1:
                prev = s
                continue
            parts.append(f"{start}-{prev}" if prev != start else str(start))
            start = prev = s
        parts.append(f"{start}-{prev}" if prev != start else str(start))
        out[site] = ", ".join(parts)
    return out


# --- what each site holds, replayed from the audit -----------------------------------------


@dataclass
class Held:
    """One record at one site: whose, which categories, primary or copy, and the entries
    that put it there."""

    subject: str | None
    categories: set[str]
    copy: bool
    sources: list[Entry]


@dataclass
class Holdings:
    """What the audit says each site holds of the subjects a report is about."""

    sites: dict[str, dict[str, Held]] = field(default_factory=dict)
    category_count: dict[str, Counter[str]] = field(default_factory=dict)
    # The last time an item came or went: (site, None) for the site, (site, category).
    changed: dict[tuple[str, str | None], Entry] = field(default_factory=dict)

    def site(self, site: str) -> dict[str, Held]:
        return self.sites.setdefault(site, {})

    def subjects(self, site: str) -> set[str]:
        return {h.subject for h in self.sites.get(site, {}).values() if h.subject}

    def categories(self, site: str) -> set[str]:
        return {c for c, n in self.category_count.get(site, Counter()).items() if n > 0}

    def _add(self, site: str, rid: str, held: Held, entry: Entry) -> None:
        recs = self.site(site)
        counts = self.category_count.setdefault(site, Counter())
        old = recs.get(rid)
        if not recs:
            self.changed[(site, None)] = entry
        if old is not None:
            held.sources = old.sources + held.sources
            held.categories |= old.categories
            for c in old.categories:
                counts[c] -= 1
        recs[rid] = held
        for c in held.categories:
            if counts[c] == 0:
                self.changed[(site, c)] = entry
            counts[c] += 1

    def _remove(self, site: str, rid: str, entry: Entry) -> None:
        recs = self.sites.get(site, {})
        held = recs.pop(rid, None)
        if held is None:
            return
        counts = self.category_count[site]
        for c in held.categories:
            counts[c] -= 1
            if counts[c] == 0:
                self.changed[(site, c)] = entry
        if not recs:
            self.changed[(site, None)] = entry

    def apply(self, e: Entry, about: Callable[[Entry], bool], subjects: set[str]) -> None:
        """Follow one entry: writes and copies delivered add records of the report's
        subjects, updates add categories, deletions and erasures take records away."""
        act = e.action
        if act in ("write", "update") or (act == "transfer" and e.detail.get("kind") == "replica"):
            copy = act == "transfer"
            if act == "update" and not any(r in self.sites.get(e.site, {}) for r, _ in e.records()):
                return
            if act != "update" and not (about(e) or e.subjects() & subjects):
                return
            for rid, sub in e.records():
                if sub:
                    subjects.add(sub)
                self._add(e.site, rid, Held(sub, set(e.data.get("categories", ())), copy, [e]), e)
        elif act == "delete":
            for rid, _ in e.records():
                self._remove(e.site, rid, e)
        elif act == "erase":
            gone = e.subjects()
            for rid, held in list(self.sites.get(e.site, {}).items()):
                if held.subject in gone or rid in {r for r, _ in e.records()}:
                    self._remove(e.site, rid, e)


def replay(
    view: AuditView, about: Callable[[Entry], bool], *, until: dt.date | None = None
) -> Holdings:
    """What each site held at the end of ``until`` (now when None) of the subjects whose
    entries ``about`` accepts (and, once accepted, every later entry about them)."""
    out = Holdings()
    subjects: set[str] = set()
    # Copies are logged at their target; a subject is first met at home: writes first.
    ordered = sorted(view.until(until), key=lambda e: (e.at, e.site, e.seq))
    for e in ordered:
        out.apply(e, about, subjects)
    return out
