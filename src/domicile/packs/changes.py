"""The law's calendar: the dates on which something a pack says changes its effect.

Read from the packs' own dates: a rule (or a transfer route, a subject-rights deadline, a
penalty) starts on its ``effective.from`` and stops the day after its ``effective.to``; a
country joins or leaves a pack's list (adequacy, reciprocity) on its member's dates. A rule
that ends the day before another rule of the same kind in the same pack starts is one
wording replacing another, and is listed once, as a new wording.

Waiting periods after a filing (a notice, then so many working days) run from each
deployment's own filing dates: they are no date of the law and are not listed here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from domicile.packs.loader import PackSet
from domicile.packs.model import Cite, Effective, Pack

ChangeKind = Literal[
    "rule_starts", "rule_ends", "new_wording", "route_opens", "route_closes",
    "deadline_starts", "deadline_changes", "deadline_ends", "listed", "delisted", "penalty_starts",
    "penalty_ends",
]  # fmt: skip

# Said once in every calendar: why filings' waiting periods are not among the dates.
WAITING_NOTE = (
    "waiting periods after a filing run from the deployment's own filing dates and are not"
    " listed; `domicile policy explain --filing NAME=DATE` gives the earliest allowed day"
)


@dataclass(frozen=True)
class Citation:
    source: str
    title: str
    pinpoint: str | None = None
    url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "title": self.title,
            "pinpoint": self.pinpoint,
            "url": self.url,
        }

    def __str__(self) -> str:
        return self.title + (f", {self.pinpoint}" if self.pinpoint else "")


@dataclass(frozen=True)
class LawChange:
    """One change on one day: ``rule`` names what changes (a rule id, ``rule/route``, a
    rights deadline id, a penalty id or a list name), ``what`` says how, in plain words."""

    date: dt.date
    pack: str
    jurisdiction: str
    kind: ChangeKind
    rule: str
    what: str
    replaces: str | None = None
    citations: tuple[Citation, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "date": self.date.isoformat(),
            "pack": self.pack,
            "jurisdiction": self.jurisdiction,
            "kind": self.kind,
            "rule": self.rule,
            "what": self.what,
            "replaces": self.replaces,
            "citations": [c.to_dict() for c in self.citations],
        }


def _stem(rule_id: str) -> str:
    """A rule id without its last part: ``ru.localization`` of ``ru.localization.2025``."""
    return rule_id.rpartition(".")[0]


def _after(day: dt.date) -> dt.date | None:
    """The first day without a period that ends on ``day`` (none after the last date)."""
    return None if day >= dt.date.max else day + dt.timedelta(days=1)


class _PackDates:
    """Collects one pack's changes."""

    def __init__(self, pack: Pack) -> None:
        self.pack = pack
        self.sources = {s.id: s for s in pack.sources}
        self.out: list[LawChange] = []

    def cites(self, items: Iterable[Cite]) -> tuple[Citation, ...]:
        found = []
        for c in items:
            s = self.sources.get(c.source)
            if s is not None:
                found.append(Citation(s.id, s.title, c.pinpoint, s.url))
        return tuple(found)

    def add(
        self, day: dt.date | None, kind: ChangeKind, rule: str, what: str,
        cite: Iterable[Cite] = (), replaces: str | None = None,
    ) -> None:  # fmt: skip
        if day is None:
            return
        info = self.pack.pack
        self.out.append(
            LawChange(day, info.id, info.jurisdiction, kind, rule, what, replaces, self.cites(cite))
        )

    def span(
        self, eff: Effective, start: ChangeKind, end: ChangeKind, rule: str, title: str,
        cite: Iterable[Cite],
    ) -> None:  # fmt: skip
        items = list(cite)
        if eff.from_ is not None:
            self.add(eff.from_, start, rule, f"in force: {title}", items)
        if eff.to is not None:
            self.add(_after(eff.to), end, rule, f"no longer in force: {title}", items)

    def rules(self) -> None:
        rules = self.pack.rules
        # A rule ending the day before a rule of the same kind and id stem starts: a new
        # wording of one provision.
        successor: dict[str, str] = {}
        for old in rules:
            if old.effective.to is None:
                continue
            for new in rules:
                if (
                    new is not old
                    and new.kind == old.kind
                    and _stem(new.id) == _stem(old.id)
                    and new.effective.from_ is not None
                    and new.effective.from_ == _after(old.effective.to)
                ):
                    successor[old.id] = new.id
        replaced = {v: k for k, v in successor.items()}
        for r in rules:
            if r.id in replaced:
                self.add(
                    r.effective.from_, "new_wording", r.id,
                    f"new wording in force: {r.title} (replaces {replaced[r.id]})",
                    [*r.cite], replaces=replaced[r.id],
                )  # fmt: skip
            elif r.effective.from_ is not None:
                self.add(r.effective.from_, "rule_starts", r.id, f"in force: {r.title}", r.cite)
            if r.effective.to is not None and r.id not in successor:
                self.add(
                    _after(r.effective.to), "rule_ends", r.id, f"no longer in force: {r.title}",
                    r.cite,
                )  # fmt: skip
            for route in getattr(r, "routes", []):
                self.span(
                    route.effective, "route_opens", "route_closes", f"{r.id}/{route.name}",
                    f"transfer route {route.title}", [*route.cite, *r.cite][:3],
                )  # fmt: skip

    def rest(self) -> None:
        rights = self.pack.rights
        # A deadline for the same kinds that starts the day after another ends: a change of
        # the deadline, listed once.
        follows = {
            new.id: old
            for old in rights
            for new in rights
            if old.effective.to is not None
            and new.effective.from_ == _after(old.effective.to)
            and set(new.kinds) == set(old.kinds)
        }
        replaced = {old.id for old in follows.values()}
        for d in rights:
            kinds = ", ".join(k.value for k in d.kinds)
            prev = follows.get(d.id)
            if prev is not None:
                self.add(
                    d.effective.from_, "deadline_changes", d.id,
                    f"answer {kinds} requests within {d.answer_within}"
                    f" (was {prev.answer_within})", d.cite, replaces=prev.id,
                )  # fmt: skip
            elif d.effective.from_ is not None:
                self.add(
                    d.effective.from_, "deadline_starts", d.id,
                    f"in force: answer {kinds} requests within {d.answer_within}", d.cite,
                )  # fmt: skip
            if d.effective.to is not None and d.id not in replaced:
                self.add(
                    _after(d.effective.to), "deadline_ends", d.id,
                    f"no longer in force: answer {kinds} requests within {d.answer_within}",
                    d.cite,
                )  # fmt: skip
        for p in self.pack.penalties:
            self.span(
                p.effective, "penalty_starts", "penalty_ends", p.id,
                f"penalty {p.instrument}: {p.offence}", p.cite,
            )  # fmt: skip
        for name, lst in self.pack.lists.items():
            cite = [Cite(source=lst.source)]
            # A listing that ends the day before the same country's next one starts is
            # one listing renewed (a new decision), not a day off the list.
            starts = {(m.country, m.from_) for m in lst.members if m.from_ is not None}
            ends = {(m.country, _after(m.to)) for m in lst.members if m.to is not None}
            for m in lst.members:
                tail = "" if m.verified else " (unverified)"
                if m.from_ is not None:
                    renewed = (m.country, m.from_) in ends
                    self.add(
                        m.from_, "listed", name,
                        f"{m.country}{' stays on, by a new decision,' if renewed else ' joins'}"
                        f" the list {lst.title}{tail}",
                        cite,
                    )  # fmt: skip
                if m.to is not None and (m.country, _after(m.to)) not in starts:
                    self.add(
                        _after(m.to), "delisted", name,
                        f"{m.country} leaves the list {lst.title}{tail}", cite,
                    )  # fmt: skip


def law_calendar(
    packs: PackSet,
    *,
    since: dt.date | None = None,
    until: dt.date | None = None,
    only: Sequence[str] = (),
) -> list[LawChange]:
    """Every change of the packs (``only``: these pack ids) on a day from ``since`` to
    ``until`` (both included, either open), in date order, then pack, then rule."""
    out: list[LawChange] = []
    for lp in packs:
        if only and lp.id not in only:
            continue
        dates = _PackDates(lp.pack)
        dates.rules()
        dates.rest()
        out.extend(
            c
            for c in dates.out
            if (since is None or c.date >= since) and (until is None or c.date <= until)
        )
    out.sort(key=lambda c: (c.date, c.pack, c.rule, c.kind))
    return out
