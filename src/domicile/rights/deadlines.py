"""When a subject's request must be answered: the packs' ``rights`` deadlines.

Each law that covers the subject (or may: weak evidence counts, as everywhere) and each
law whose territory holds one of the subject's sites may set a deadline for the kind of
request. Every one is computed, from the day the request arrived, in the pack's own
calendar; the earliest wins and the answer says which law set it.
"""

from __future__ import annotations

import calendar as _calendar
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from domicile.packs.calendar import WorkingCalendar
from domicile.packs.loader import LoadedPack, PackSet
from domicile.packs.model import Period, RequestKind, RightsDeadline

KINDS = tuple(k.value for k in RequestKind)


def add_months(day: dt.date, months: int) -> dt.date:
    """The same date ``months`` later; the month's last day when it has no such date."""
    month0 = day.month - 1 + months
    year, month = day.year + month0 // 12, month0 % 12 + 1
    last = _calendar.monthrange(year, month)[1]
    return dt.date(year, month, min(day.day, last))


def period_end(start: dt.date, period: Period, cal: WorkingCalendar) -> dt.date:
    """The last day of ``period`` counted from the day after ``start``: the day by which
    the answer is due (inclusive)."""
    if period.working_days is not None:
        return cal.add_working_days(start, period.working_days)
    if period.days is not None:
        end = start + dt.timedelta(days=period.days)
    else:
        assert period.months is not None
        end = add_months(start, period.months)
    if period.roll_forward:
        while not cal.is_working_day(end):
            end += dt.timedelta(days=1)
    return end


@dataclass(frozen=True)
class Deadline:
    """One law's deadline for one request."""

    pack: str
    law: str
    rule: str
    due: dt.date
    period: str
    says: str
    citations: tuple[str, ...]
    extension: str | None  # e.g. "5 working days"; None when the law allows none
    extension_needs: str | None
    extended_due: dt.date | None  # the latest date an extension can reach
    # How firm the reading behind the period is (the pack's interpretation status:
    # statutory, regulation, regulator_guidance, ..., contested, unknown) and its note.
    reading: str = "statutory"
    reading_note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "pack": self.pack,
            "law": self.law,
            "rule": self.rule,
            "due": self.due.isoformat(),
            "period": self.period,
            "says": self.says,
            "citations": list(self.citations),
            "extension": self.extension,
            "extension_needs": self.extension_needs,
            "extended_due": self.extended_due.isoformat() if self.extended_due else None,
            "reading": {"status": self.reading, "note": self.reading_note},
        }


def _citations(lp: LoadedPack, entry: RightsDeadline) -> tuple[str, ...]:
    titles = {s.id: s.title for s in lp.pack.sources}
    return tuple(
        f"{titles.get(c.source, c.source)}{f', {c.pinpoint}' if c.pinpoint else ''}"
        for c in entry.cite
    )


def pack_deadline(lp: LoadedPack, kind: str, received: dt.date) -> Deadline | None:
    """The deadline this pack sets for a request of ``kind`` received on ``received``."""
    pack = lp.pack
    entry = next((r for r in pack.rights if kind in r.kinds and r.effective.covers(received)), None)
    if entry is None:
        return None
    cal = WorkingCalendar(pack.calendar)
    due = period_end(received, entry.answer_within, cal)
    extended = period_end(due, entry.extension, cal) if entry.extension else None
    return Deadline(
        pack=pack.pack.id,
        law=pack.pack.name,
        rule=entry.id,
        due=due,
        period=str(entry.answer_within),
        says=entry.says,
        citations=_citations(lp, entry),
        extension=str(entry.extension) if entry.extension else None,
        extension_needs=entry.extension_needs,
        extended_due=extended,
        reading=entry.interpretation.status.value,
        reading_note=entry.interpretation.note,
    )


def deadlines(
    packs: PackSet, pack_ids: Iterable[str], kind: str, received: dt.date
) -> list[Deadline]:
    """Every deadline the named packs set, earliest first (the first one binds)."""
    found = []
    for pid in sorted(set(pack_ids)):
        lp = packs.packs.get(pid)
        if lp is None:
            continue
        d = pack_deadline(lp, kind, received)
        if d is not None:
            found.append(d)
    return sorted(found, key=lambda d: (d.due, d.pack))
