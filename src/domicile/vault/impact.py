"""What a change of the law does to a deployment: its actual flows, decided twice.

The flows are the deployment's own, read back without writing anything:

- **writes**: every primary record at its site, as a ``store`` of its fields' categories at
  the site's country, for the subject it belongs to (each distinct residency once);
- **copies**: every primary whose collection replicates to another site, as the copy the
  replication worker would keep there (the same question the worker asks);
- **transfers**: the transfer ledger's reads from abroad of the last year, as the same read
  now (copies delivered are counted under copies).

Each distinct flow is decided on a baseline day (today by default) and on the day asked
about, through the vault's own decision path (same filings on record, same facts), and
every flow whose outcome differs is reported: writes that would be refused, copies that
must go, transfers that need a step first (a filing, a clause, a wait). Nothing is printed
of the subjects but counts and the laws that cover them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from domicile.config import Site
from domicile.crypto.errors import DecryptionFailed, KeyDestroyed
from domicile.packs.model import Outcome
from domicile.policy import Decision
from domicile.residency import Residency
from domicile.stores import StoredRecord
from domicile.stores.base import SiteUnavailable
from domicile.vault.replication import Replicator
from domicile.vault.service import Domicile
from domicile.vault.transfers import summarize

FlowType = Literal["write", "copy", "transfer"]
PAGE = 500
# Told, per site, how many records were walked of how many (a progress bar's feed).
Progress = Callable[[str, int, int], None]
LEDGER_LIMIT = 100_000  # ledger entries re-decided at most (the rest are counted as skipped)


@dataclass
class _Group:
    records: int = 0
    subjects: set[str] = field(default_factory=set)


@dataclass
class FlowChange:
    """One kind of flow whose outcome changes between the two days. ``records``: the
    records concerned (transfers: the reads in the ledger); ``subjects``: their distinct
    subjects (transfers: the distinct records read)."""

    flow: FlowType
    collection: str | None
    site: str  # where the data is (copies: the primary's site; transfers: the origin site)
    to: str | None  # copies: the target site; transfers: the requester's country
    laws: tuple[str, ...]  # the packs covering the subjects concerned
    categories: tuple[str, ...]
    records: int
    subjects: int
    before: Outcome
    after: Outcome
    consequence: str
    rules: tuple[dict[str, Any], ...]
    steps: tuple[str, ...]  # what would allow it on the day (outstanding obligations)

    def key(self) -> tuple[Any, ...]:
        return (
            self.flow, self.collection, self.site, self.to, self.laws, self.categories,
            self.before, self.after, self.consequence,
            tuple(r["id"] for r in self.rules), self.steps,
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            "flow": self.flow,
            "collection": self.collection,
            "site": self.site,
            "to": self.to,
            "laws": list(self.laws),
            "categories": list(self.categories),
            "records": self.records,
            "subjects": self.subjects,
            "before": self.before.value,
            "after": self.after.value,
            "consequence": self.consequence,
            "rules": list(self.rules),
            "steps": list(self.steps),
        }


@dataclass
class Impact:
    baseline: dt.date
    on: dt.date
    changes: list[FlowChange] = field(default_factory=list)
    checked: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("write", "copy", "transfer"), 0)
    )
    unchanged: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("write", "copy", "transfer"), 0)
    )
    skipped: dict[str, int] = field(default_factory=dict)  # why -> how many
    unavailable: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline.isoformat(),
            "on": self.on.isoformat(),
            "changes": [c.to_dict() for c in self.changes],
            "summary": {
                "writes_refused": _count(self.changes, "write", worse=True),
                "copies_to_remove": _count(self.changes, "copy", worse=True),
                "transfers_needing_steps": _count(self.changes, "transfer", worse=True),
                "flows_allowed_again": sum(1 for c in self.changes if c.after.rank < c.before.rank),
            },
            "checked": self.checked,
            "unchanged": self.unchanged,
            "skipped": self.skipped,
            "unavailable": self.unavailable,
        }


def _count(changes: list[FlowChange], flow: FlowType, *, worse: bool) -> int:
    return sum(
        c.records
        for c in changes
        if c.flow == flow and (c.after.rank > c.before.rank) == worse and c.after != c.before
    )


def _consequence(flow: FlowType, before: Outcome, after: Outcome, steps: tuple[str, ...]) -> str:
    if after.rank < before.rank:
        return {
            "write": "writes become allowed",
            "copy": "copies become allowed",
            "transfer": "reads from abroad become allowed",
        }[flow] + ("" if after is Outcome.allow else " only after review")
    # The vault acts only on allow: an escalated flow is refused like a denied one, until
    # someone settles the reading (and the pack says so).
    why = " (escalated: a contested or uncertain reading)" if after is Outcome.escalate else ""
    if flow == "write":
        return "new writes and updates refused" + why
    if flow == "copy":
        return "copies must go: the replication worker removes them" + why
    if steps:
        return "reads from abroad refused until a step is taken (see steps)" + why
    return "reads from abroad refused" + why


class _Walker:
    def __init__(
        self, vault: Domicile, baseline: dt.date, on: dt.date, progress: Progress | None = None
    ) -> None:
        self.vault = vault
        self.progress = progress
        version = vault.filings.version
        self.stamps = ((baseline, version), (on, version))
        self.replicator = Replicator(vault)
        self.sites = {s.id: s for s in vault.config.sites}
        self.out = Impact(baseline, on)
        self.groups: dict[tuple[Any, ...], _Group] = {}
        self._laws: dict[Residency, tuple[str, ...]] = {}

    def skip(self, why: str) -> None:
        self.out.skipped[why] = self.out.skipped.get(why, 0) + 1

    def records(self, site: Site) -> Iterator[StoredRecord]:
        after = ""
        while True:
            page = self.vault.store(site.id).records_after(after, PAGE)
            yield from page
            if len(page) < PAGE:
                return
            after = page[-1].record_id

    def add(self, key: tuple[Any, ...], subject: str) -> None:
        group = self.groups.setdefault(key, _Group())
        group.records += 1
        group.subjects.add(subject)

    def walk_sites(self) -> None:
        vault = self.vault
        for site in vault.config.sites:
            try:
                total = vault.store(site.id).count() if self.progress else 0
                for walked, rec in enumerate(self.records(site), 1):
                    if self.progress and (walked % PAGE == 0 or walked == total):
                        self.progress(site.id, walked, total)
                    if rec.is_replica:
                        continue
                    try:
                        residency = vault._residency(site, rec)
                    except (KeyDestroyed, DecryptionFailed):
                        self.skip("record of an erased subject")
                        continue
                    cats = tuple(sorted(set(vault._field_categories(rec).values())))
                    self.add(
                        ("write", rec.collection, site.id, None, residency, cats, None),
                        rec.subject_id,
                    )
                    self.copies(site, rec, residency)
            except SiteUnavailable:
                vault._drop(site.id)
                if site.id not in self.out.unavailable:
                    self.out.unavailable.append(site.id)

    def copies(self, site: Site, rec: StoredRecord, residency: Residency) -> None:
        """The copies the record's collection asks for, at each replica target."""
        coll = self.vault.config.model.collections.get(rec.collection)
        if coll is None:
            self.skip("record of a collection no longer configured")
            return
        for target in self.vault._replica_targets(coll, site.id):
            fields = self.replicator._permitted_fields(rec, target)
            if not fields:
                continue
            cats = tuple(sorted({coll.fields[f].category for f in fields if f in coll.fields}))
            key = ("copy", rec.collection, site.id, target, residency, cats, tuple(fields))
            self.add(key, rec.subject_id)

    def walk_ledger(self) -> None:
        vault = self.vault
        since = vault._today() - dt.timedelta(days=365)  # the last year, whatever the days
        ledger = summarize(vault, since=since, limit=LEDGER_LIMIT)
        for site_id in ledger.unavailable:
            if site_id not in self.out.unavailable:
                self.out.unavailable.append(site_id)
        if ledger.total > len(ledger.entries):
            self.out.skipped["ledger entries beyond the limit"] = ledger.total - len(ledger.entries)
        opened: dict[tuple[str, str], Residency | None] = {}
        for e in ledger.entries:
            if e["kind"] != "access":
                continue  # a copy delivered: decided with the copies
            home = e["logged_at_site"]
            rid = e.get("record")
            if home not in self.sites or not rid:
                self.skip("ledger entry without its record")
                continue
            if (home, rid) not in opened:
                opened[(home, rid)] = self._residency_of(home, rid)
            residency = opened[(home, rid)]
            if residency is None:
                self.skip("ledger entry whose record is gone")
                continue
            cats = tuple(sorted(set(e.get("categories") or ())))
            if not cats:
                self.skip("ledger entry without categories")
                continue
            key = ("transfer", None, home, e["to_country"], residency, cats, None)
            self.add(key, f"{home}:{rid}")

    def _residency_of(self, site_id: str, record_id: str) -> Residency | None:
        site = self.sites[site_id]
        try:
            rec = self.vault.store(site_id).get(record_id)
            if rec is None:
                return None
            return self.vault._residency(site, rec)
        except (KeyDestroyed, DecryptionFailed):
            return None
        except SiteUnavailable:
            self.vault._drop(site_id)
            return None

    def decide(self, key: tuple[Any, ...], stamp: tuple[dt.date, Any]) -> Decision | None:
        flow, _, site_id, to, residency, cats, _fields = key
        vault = self.vault
        site = self.sites[site_id]
        if flow == "write":
            return vault._decide_sorted(residency, cats, "store", site.country, None, (), stamp)
        if flow == "copy":
            target = self.sites.get(to)
            if target is None:
                return None
            facts: dict[str, bool | int | str] = {"replica": True, "primary_country": site.country}
            facts.update(vault.transfer_facts(site, target.country))
            return vault._decide_sorted(
                residency, cats, "store", target.country, None, tuple(sorted(facts.items())), stamp
            )
        extra = tuple(sorted(vault.transfer_facts(site, to).items()))
        return vault._decide_sorted(residency, cats, "retrieve", site.country, to, extra, stamp)

    def laws(self, residency: Residency) -> tuple[str, ...]:
        hit = self._laws.get(residency)
        if hit is None:
            found = self.vault.engine.jurisdictions(residency)
            hit = self._laws[residency] = tuple(
                sorted(j.pack for j in found if j.coverage != "none")
            )
        return hit

    def compare(self) -> None:
        merged: dict[tuple[Any, ...], FlowChange] = {}
        for key, group in self.groups.items():
            flow = key[0]
            self.out.checked[flow] += group.records
            before, after = (self.decide(key, s) for s in self.stamps)
            if before is None or after is None:
                self.out.skipped["copy to a site no longer configured"] = group.records
                continue
            if before.outcome is after.outcome:
                self.out.unchanged[flow] += group.records
                continue
            # What the day asks that the baseline did not: the step to take before it.
            known = {o.text for o in before.obligations if o.status == "outstanding"}
            steps = tuple(
                o.text
                for o in after.obligations
                if o.status == "outstanding" and o.text not in known
            )
            change = FlowChange(
                flow=flow, collection=key[1], site=key[2], to=key[3],
                laws=self.laws(key[4]), categories=key[5], records=group.records,
                subjects=len(group.subjects), before=before.outcome, after=after.outcome,
                consequence=_consequence(flow, before.outcome, after.outcome, steps),
                rules=tuple(
                    {"id": r.id, "pack": r.pack, "outcome": r.outcome.value, "reason": r.reason}
                    for r in after.rules
                    if r.outcome is not Outcome.allow
                ),
                steps=steps,
            )  # fmt: skip
            seen = merged.get(change.key())
            if seen is None:
                merged[change.key()] = change
            else:
                seen.records += change.records
                seen.subjects += change.subjects
        self.out.changes = sorted(
            merged.values(),
            key=lambda c: (
                ["write", "copy", "transfer"].index(c.flow),
                c.collection or "",
                c.site,
                c.to or "",
            ),
        )


def impact(
    vault: Domicile,
    on: dt.date,
    *,
    baseline: dt.date | None = None,
    progress: Progress | None = None,
) -> Impact:
    """The deployment's flows decided on ``baseline`` (default today) and on ``on``, and
    those whose outcome differs. Reads only."""
    walker = _Walker(vault, baseline or vault._today(), on, progress)
    walker.walk_sites()
    walker.walk_ledger()
    walker.compare()
    return walker.out
