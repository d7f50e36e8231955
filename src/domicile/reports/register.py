"""The database location register: every site holding the data of the subjects a law
covers, with its country, provider and street address (Russia's Art. 22 notice, item 10.1),
the categories held and the subjects counted; what changed since the last notice, and when
the change notice is due.

Which subjects a law covers is what the engine decided when their data was written: an
entry that names a localization rule of the law's pack (``ru.localization.2025`` fires for
a Russian citizen) makes its subject one of them, at that site and at every site a copy of their
record reached. The register as it stood when the last notice was filed is replayed from
the same audit up to that day, so the two are counted alike and every row points at the
entries it rests on.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from domicile.errors import BadInput
from domicile.reports.ledger import AuditView, Entry, Holdings, refs, replay
from domicile.vault.service import Domicile


@dataclass(frozen=True)
class RegisterDuty:
    """A law's duty to keep (and notify) a register of the databases holding its subjects'
    data: the evidence item naming it in the pack, the filing that notifies it, and when a
    change must be notified."""

    pack: str
    evidence: str
    title: str
    notice: str | None  # the filing that states the register to the regulator
    change_due: str  # "next_month_15": by the 15th of the following month; "before": before processing; "none"
    citation: str


# A pack keeps a register of databases by location when one of its evidence items is one
# (``ev.db_register``, ``ev.storage_register``, ``ev.payment_store_register``, ...).
REGISTER_EVIDENCE = re.compile(r"^ev\.([a-z0-9]+_)*(db|storage|store)_register$")

# Registers notified to a regulator: the pack format has no field for how a change is
# notified, so these are written here, with their wording checked against the sources.
# Any other pack's register is kept as evidence, titled by the pack's own evidence item.
NOTIFIED: dict[str, RegisterDuty] = {
    "ru": RegisterDuty(
        "ru", "ev.db_register",
        "Databases holding Russian citizens' personal data (152-FZ Art. 22(3), item 10.1)",
        "ru.art22_notice", "next_month_15",
        "152-FZ Art. 22(3) item 10.1 (Minkomsvyaz Order 315 of 28.08.2015); changes notified by the 15th of the following month (since 1 March 2023)",
    ),
    "uz": RegisterDuty(
        "uz", "ev.db_register",
        "Personal databases of Uzbek citizens (PD Law Art. 27-1)",
        "uz.database_registered", "before",
        "PD Law Art. 27-1: a database is registered in the State register before citizens' data is processed in it",
    ),
}  # fmt: skip


def duties_for(vault: Domicile) -> dict[str, RegisterDuty]:
    """The register duties of the packs this deployment loads, by pack id."""
    out = {}
    for lp in vault.engine.packs:
        ev = next((e for e in lp.pack.evidence if REGISTER_EVIDENCE.match(e.id)), None)
        if ev is None:
            continue
        known = NOTIFIED.get(lp.id)
        if known is not None and known.evidence == ev.id:
            out[lp.id] = known
            continue
        rules = [r.title for r in lp.pack.rules if ev.id in r.evidence]
        out[lp.id] = RegisterDuty(
            lp.id, ev.id, ev.description, None, "none",
            "; ".join(rules) + ("; " if rules else "") + "kept as evidence, not notified",
        )  # fmt: skip
    return dict(sorted(out.items()))


def covered_by(lp: Any) -> Callable[[Entry], bool]:
    """Whether an entry is about a subject whose data the law requires to be localized:
    it names one of the pack's localization rules (they fire for the subjects the law
    covers, e.g. Russian citizens, and not for a foreigner's data that merely sits in the
    country, for whom only the notice rule fires). A pack without localization rules: any
    of its rules."""
    rules = {r.id for r in lp.pack.rules if r.kind == "localization"} or {
        r.id for r in lp.pack.rules
    }

    def about(e: Entry) -> bool:
        return any(r in rules for r in e.rules)

    return about


def due_after(change: dt.date, rule: str) -> dt.date | None:
    """When a change made on ``change`` must be notified."""
    if rule == "next_month_15":
        y, m = (change.year + 1, 1) if change.month == 12 else (change.year, change.month + 1)
        return dt.date(y, m, 15)
    if rule == "before":
        return change
    return None


def _site_rows(vault: Domicile, held: Holdings, pack_countries: set[str]) -> list[dict[str, Any]]:
    rows = []
    for site in vault.config.sites:
        recs = held.sites.get(site.id, {})
        if not recs:
            continue
        sources = [e for h in recs.values() for e in h.sources]
        primaries = sum(1 for h in recs.values() if not h.copy)
        rows.append(
            {
                "site": site.id,
                "country": site.country,
                "in_country": site.country in pack_countries,
                "provider": site.location.provider,
                "city": site.location.city,
                "address": site.location.address,
                "backend": "sqlite" if site.backend.startswith("sqlite:") else "postgresql",
                "records": primaries,
                "copies": len(recs) - primaries,
                "subjects": len(held.subjects(site.id)),
                "categories": sorted(held.categories(site.id)),
                "sources": refs(sources),
            }
        )
    return rows


def register(
    vault: Domicile,
    *,
    pack: str = "ru",
    since_notice: dt.date | None = None,
    today: dt.date | None = None,
    view: AuditView | None = None,
) -> dict[str, Any]:
    """The register of ``pack`` as a JSON-ready model (see the module docstring)."""
    duties = duties_for(vault)
    duty = duties.get(pack)
    if duty is None:
        raise BadInput(
            f"the pack {pack!r} keeps no database register here",
            hint="use one of: " + (", ".join(sorted(duties)) or "none is loaded"),
        )
    lp = next(p for p in vault.engine.packs if p.id == pack)
    countries = set(lp.pack.pack.countries)
    today = today or dt.datetime.now(dt.UTC).date()
    view = view or AuditView.read(vault)
    about = covered_by(lp)
    now = replay(view, about)
    on_record = vault.filings.current().get(duty.notice) if duty.notice else None
    baseline_day = since_notice or on_record
    if baseline_day is not None:
        then = replay(view, about, until=baseline_day)
        base_from = "--since-notice" if since_notice else f"filing {duty.notice}"
    else:
        then, base_from = Holdings(), "no notice on record"
    rows = _site_rows(vault, now, countries)
    # The audit entry that put the notice on record (none for a filing of the configuration).
    added = next(
        (
            e
            for e in reversed(view.entries)
            if e.action == "filing"
            and e.detail.get("name") == duty.notice
            and e.detail.get("change") == "add"
        ),
        None,
    )
    changes = _changes(vault, now, then, baseline_day, duty)
    if on_record is not None and since_notice is None and added is not None:
        changes += _moved(vault, added, duty, {r["site"] for r in rows}, today)
    dues = [c["due"] for c in changes if c["due"]]
    notice: dict[str, Any] = {
        "filing": duty.notice,
        "on_record": on_record.isoformat() if on_record else None,
        "entry": added.ref if added is not None else None,
        "compared_with": baseline_day.isoformat() if baseline_day else None,
        "compared_from": base_from,
    }
    if duty.notice and on_record is None and rows:
        first = min(
            (e for h in now.sites.values() for r in h.values() for e in r.sources),
            key=lambda e: e.at,
        )
        notice["status"] = "missing"
        notice["due"] = first.day.isoformat()  # before processing: overdue since the first record
    elif dues:
        notice["status"] = "change notice due"
        notice["due"] = min(dues)
    else:
        notice["status"] = "up to date" if duty.notice else "not notified (kept as evidence)"
        notice["due"] = None
    if notice["due"] is not None:
        notice["overdue"] = notice["due"] < today.isoformat()
    return {
        "kind": "register",
        "pack": pack,
        "jurisdiction": lp.pack.pack.jurisdiction,
        "title": duty.title,
        "citation": duty.citation,
        "evidence": duty.evidence,
        "as_of": today.isoformat(),
        "environment": vault.config.model.environment_id,
        "sites": rows,
        "totals": {
            "sites": len(rows),
            "records": sum(r["records"] for r in rows),
            "copies": sum(r["copies"] for r in rows),
            "subjects": len(set().union(*(now.subjects(s) for s in now.sites))) if now.sites else 0,
        },
        "notice": notice,
        "changes": changes,
        "sources": {
            "query": (
                f"entries of every site's audit naming a localization rule of the {pack!r} pack (writes and"
                " copies delivered), then every later write, copy, deletion and erasure of"
                " the same subjects, replayed in time order"
            ),
            "entries": refs(e for h in now.sites.values() for r in h.values() for e in r.sources),
        },
    }


def _moved(
    vault: Domicile, added: Entry, duty: RegisterDuty, holding: set[str], today: dt.date
) -> list[dict[str, Any]]:
    """Sites holding the data whose location (country, provider, city, address) differs
    from where they were when the notice went on record: ``added``, the filing's audit
    entry, keeps a digest of each. When the site moved is not recorded, so the change is
    dated today, the day it is seen; a notice is due by the same rule from the day of the
    move."""
    from domicile.vault.operations import location_digests

    then = added.detail.get("sites")
    if not isinstance(then, dict):
        return []  # a notice from the configuration, or recorded before digests were kept
    now = location_digests(vault.config)
    due = due_after(today, duty.change_due)
    return [
        {
            "site": sid,
            "change": "database moved (its provider or address differs from the notice's)"
            if sid in then
            else "database added (not in the deployment when the notice was filed)",
            "category": None,
            "on": today.isoformat(),
            "entry": added.ref,
            "due": due.isoformat() if due else None,
        }
        for sid in sorted(holding)
        if then.get(sid) != now[sid]
    ]


def _changes(
    vault: Domicile, now: Holdings, then: Holdings, since: dt.date | None, duty: RegisterDuty
) -> list[dict[str, Any]]:
    out = []

    def add(site: str, what: str, category: str | None, entry: Entry | None) -> None:
        day = entry.day if entry else since
        due = due_after(day, duty.change_due) if day else None
        out.append(
            {
                "site": site,
                "change": what,
                "category": category,
                "on": day.isoformat() if day else None,
                "entry": entry.ref if entry else None,
                "due": due.isoformat() if due else None,
            }
        )

    for site in vault.config.sites:
        sid = site.id
        had, has = bool(then.sites.get(sid)), bool(now.sites.get(sid))
        if has and not had:
            add(sid, "database added", None, now.changed.get((sid, None)))
        elif had and not has:
            add(sid, "database no longer holds the data", None, now.changed.get((sid, None)))
        if had and has:
            before, after = then.categories(sid), now.categories(sid)
            for c in sorted(after - before):
                add(sid, "category added", c, now.changed.get((sid, c)))
            for c in sorted(before - after):
                add(sid, "category removed", c, now.changed.get((sid, c)))
    return out
