"""The compliance report of one jurisdiction for a period.

Everything in it is counted from the sites' audit logs (see ``ledger.py``), except what the
law asks of the deployment on the report's last day, which the policy engine decides with
the filings on record, and the checks of the audit logs and of the copies, which are run
read-only. Each figure carries its sources: the query that made it and the entries it
counted, as ``site: seq ranges``.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from domicile.errors import BadInput
from domicile.reports.ledger import AuditView, Entry, refs, replay
from domicile.reports.register import duties_for, register
from domicile.stores.base import SiteUnavailable
from domicile.vault.service import Domicile


def _packs_of(vault: Domicile, jurisdiction: str) -> list[Any]:
    wanted = jurisdiction.strip()
    found = [
        lp
        for lp in vault.engine.packs
        if lp.pack.pack.jurisdiction == wanted.upper() or lp.id == wanted.lower()
    ]
    if not found:
        known = sorted({lp.pack.pack.jurisdiction for lp in vault.engine.packs})
        raise BadInput(
            "no pack of this deployment is for that jurisdiction",
            hint="use one of: " + ", ".join(known),
        )
    return found


def _bucket(day: dt.date, monthly: bool) -> str:
    return day.strftime("%Y-%m") if monthly else day.isoformat()


def _buckets(since: dt.date, until: dt.date, monthly: bool) -> list[str]:
    out: list[str] = []
    day = since
    while day <= until:
        key = _bucket(day, monthly)
        if not out or out[-1] != key:
            out.append(key)
        day += dt.timedelta(days=1)
    return out


def compliance(
    vault: Domicile,
    *,
    jurisdiction: str,
    since: dt.date,
    until: dt.date,
    today: dt.date | None = None,
    view: AuditView | None = None,
    scans: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The compliance report of ``jurisdiction`` (a pack's jurisdiction code or pack id)
    for the days ``since`` to ``until``, both included, as a JSON-ready model. ``scans``:
    reports of ``domicile scan --json`` whose findings under this law join the report."""
    if until < since:
        raise BadInput("--until is before --since", hint="the period runs from --since to --until")
    if (until - since).days > 3660:
        raise BadInput("a period of at most ten years", hint="narrow --since and --until")
    packs = _packs_of(vault, jurisdiction)
    ids = sorted(lp.id for lp in packs)
    prefixes = tuple(i + "." for i in ids)
    countries = sorted({c for lp in packs for c in lp.pack.pack.countries})
    code = packs[0].pack.pack.jurisdiction
    today = today or dt.datetime.now(dt.UTC).date()
    view = view or AuditView.read(vault)
    site_country = {s.id: s.country for s in vault.config.sites}

    def about(e: Entry) -> bool:
        """The law applies: the entry names one of its rules, or the data is written in
        its territory."""
        if any(r.startswith(prefixes) for r in e.rules):
            return True
        return e.action == "write" and site_country.get(e.site) in countries

    in_period = [e for e in view.entries if since <= e.day <= until]
    held = replay(view, about, until=until)
    subjects = set().union(*(held.subjects(s) for s in held.sites)) if held.sites else set()

    def ours(e: Entry) -> bool:
        return about(e) or bool(e.subjects() & subjects)

    figures: dict[str, dict[str, Any]] = {}

    def figure(fid: str, title: str, query: str, entries: list[Entry]) -> str:
        figures[fid] = {
            "title": title,
            "query": query,
            "entries": refs(entries),
            "count": len(entries),
        }
        return fid

    # Records and subjects by site, at the end of the period.
    by_site = []
    site_sources: list[Entry] = []
    for site in vault.config.sites:
        recs = held.sites.get(site.id, {})
        if not recs:
            continue
        srcs = [e for h in recs.values() for e in h.sources]
        site_sources += srcs
        copies = sum(1 for h in recs.values() if h.copy)
        by_site.append(
            {
                "site": site.id, "country": site.country, "records": len(recs) - copies,
                "copies": copies, "subjects": len(held.subjects(site.id)),
                "categories": sorted(held.categories(site.id)),
            }
        )  # fmt: skip
    figure(
        "holdings", "Records and subjects by site",
        f"writes naming a rule of {', '.join(ids)} or written at a site in {', '.join(countries)},"
        f" copies of those subjects' records, less deletions and erasures, up to {until}",
        site_sources,
    )  # fmt: skip

    # Transfers by destination over time.
    monthly = (until - since).days > 62
    transfers = [e for e in in_period if e.action == "transfer" and not e.masked and ours(e)]
    series: dict[str, Counter[str]] = defaultdict(Counter)
    dest: dict[str, dict[str, Any]] = {}
    dest_subjects: dict[str, set[str]] = defaultdict(set)
    for e in transfers:
        to = str(e.detail.get("to_country", "?"))
        series[to][_bucket(e.day, monthly)] += 1
        agg = dest.setdefault(
            to, {"transfers": 0, "subjects": 0, "kinds": {}, "routes": {}, "filings": []}
        )
        agg["transfers"] += 1
        kind = str(e.detail.get("kind", "access"))
        agg["kinds"][kind] = agg["kinds"].get(kind, 0) + 1
        for r in e.detail.get("routes", ()):
            agg["routes"][r] = agg["routes"].get(r, 0) + 1
        agg["filings"] = sorted(set(agg["filings"]) | set(e.detail.get("filings", ())))
        dest_subjects[to] |= e.subjects()
    for to, agg in dest.items():
        agg["subjects"] = len(dest_subjects[to])
    buckets = _buckets(since, until, monthly)
    figure(
        "transfers", "Transfers by destination",
        "entries with action transfer (not masked) about these subjects, logged in the period",
        transfers,
    )  # fmt: skip

    # Decisions by outcome and rule.
    decided = [e for e in in_period if e.data.get("decision") and ours(e)]
    outcomes: Counter[str] = Counter(str(e.data["decision"]) for e in decided)
    per_rule: dict[str, Counter[str]] = defaultdict(Counter)
    for e in decided:
        for r in e.rules:
            if r.startswith(prefixes):
                per_rule[r][str(e.data["decision"])] += 1
    figure(
        "decisions", "Decisions by outcome and rule",
        "entries holding a decision about these subjects, logged in the period; rules of"
        f" {', '.join(ids)} only",
        decided,
    )  # fmt: skip

    # Masked and refused disclosures.
    masked = [e for e in in_period if e.masked and ours(e)]
    refused = [e for e in in_period if e.action == "refuse" and ours(e)]
    figure(
        "masked",
        "Masked disclosures",
        "entries with action disclose_masked about these subjects, in the period",
        masked,
    )
    figure(
        "refused",
        "Refusals",
        "entries with action refuse about these subjects or naming a rule of the packs, in the period",
        refused,
    )

    model: dict[str, Any] = {
        "kind": "compliance",
        "jurisdiction": code,
        "packs": ids,
        "countries": countries,
        "period": {"since": since.isoformat(), "until": until.isoformat(), "granularity": "month" if monthly else "day"},
        "as_of": today.isoformat(),
        "environment": vault.config.model.environment_id,
        "holdings": {"sites": by_site, "subjects": len(subjects), "figure": "holdings"},
        "transfers": {
            "total": len(transfers),
            "by_destination": dict(sorted(dest.items())),
            "series": {"buckets": buckets, "by_destination": {k: [series[k][b] for b in buckets] for k in sorted(series)}},
            "figure": "transfers",
        },
        "decisions": {
            "by_outcome": dict(sorted(outcomes.items())),
            "by_rule": {r: dict(sorted(c.items())) for r, c in sorted(per_rule.items())},
            "figure": "decisions",
        },
        "masked": {"total": len(masked), "entries": [_masked(e) for e in masked[:500]], "figure": "masked"},
        "refused": {"total": len(refused), "entries": [_refused(e) for e in refused[:500]], "figure": "refused"},
        "obligations": _obligations(
            vault, packs, code, countries, held, transfers + masked + refused, min(until, today)
        ),
        "parity": _parity(vault),
        "audit": _audit(vault),
        "discovery": _discovery(scans, ids),
        "figures": figures,
    }  # fmt: skip
    duties = duties_for(vault)
    for pid in ids:
        if pid in duties:
            reg = register(vault, pack=pid, today=today, view=view)
            model["register"] = {
                "pack": pid, "sites": reg["totals"]["sites"], "notice": reg["notice"],
                "changes": len(reg["changes"]),
            }  # fmt: skip
            break
    return model


def _discovery(scans: Sequence[Mapping[str, Any]], packs: Sequence[str]) -> dict[str, Any]:
    """What scans of databases domicile does not manage found against this law: per
    source, each finding's rule, severity and counts (never its row or subject references:
    the scan report holds those for whoever fixes them)."""
    out: list[dict[str, Any]] = []
    for scan in scans:
        found: list[dict[str, Any]] = [
            {
                "rule": str(f.get("rule")), "outcome": str(f.get("outcome")),
                "severity": str(f.get("severity")), "title": str(f.get("title", "")),
                "subjects": int(f.get("subjects", 0)), "rows": int(f.get("rows", 0)),
                "uncertain_subjects": int(f.get("uncertain_subjects", 0)),
            }
            for f in scan.get("findings", [])
            if isinstance(f, Mapping) and f.get("pack") in packs
        ]  # fmt: skip
        out.append(
            {
                "source": str(scan.get("source")), "located_in": str(scan.get("located_in")),
                "date": str(scan.get("date")), "findings": found,
                "subjects": sum(f["subjects"] for f in found),
            }
        )  # fmt: skip
    return {"scans": out, "findings": sum(len(s["findings"]) for s in out)}


def _masked(e: Entry) -> dict[str, Any]:
    return {
        "entry": e.ref, "at": e.at.isoformat(), "from_country": e.detail.get("from_country"),
        "to_country": e.detail.get("to_country"), "masks": e.detail.get("masks", {}),
        "withheld": e.detail.get("withheld", []), "rules": e.rules,
    }  # fmt: skip


def _refused(e: Entry) -> dict[str, Any]:
    return {
        "entry": e.ref, "at": e.at.isoformat(),
        "operation": e.detail.get("operation"), "to_country": e.detail.get("to_country"),
        "decision": e.data.get("decision"), "reason": e.detail.get("reason", "policy"),
        "rules": e.rules,
    }  # fmt: skip


def _obligations(
    vault: Domicile, packs: list[Any], code: str, countries: list[str], held: Any,
    crossings: list[Entry], day: dt.date,
) -> dict[str, Any]:  # fmt: skip
    """What the law asks on ``day``: the engine's outstanding obligations for storing these
    subjects' data where it is held, and for reading it from each destination met in the
    period, with waiting periods and their end dates."""
    ids = {lp.id for lp in packs}
    home = code if code in countries else countries[0]
    evidence = {"citizenship": home, "residence": home}
    filings = vault.filings.current()
    facts = dict(vault.config.model.facts)
    site_country = {s.id: s.country for s in vault.config.sites}
    asked: list[tuple[str, Any]] = []
    for sid in sorted(held.sites):
        cats = sorted(held.categories(sid))
        if cats:
            req = vault.engine.request(
                subject=evidence, categories=cats, operation="store",
                site_country=site_country[sid], date=day, filings=filings, facts=facts,
            )  # fmt: skip
            asked.append((f"store at {sid} ({site_country[sid]})", req))
    routes = sorted(
        {
            (site_country.get(e.site, home), str(e.detail["to_country"]))
            for e in crossings
            if e.detail.get("to_country")
        }
    )
    for origin, to in routes:
        cats = sorted({c for e in crossings for c in e.data.get("categories", ())}) or ["user.name"]
        req = vault.engine.request(
            subject=evidence, categories=cats, operation="retrieve",
            site_country=origin, to_country=to, date=day, filings=filings, facts=facts,
        )  # fmt: skip
        asked.append((f"read from {to} of data held in {origin}", req))
    outstanding: dict[str, dict[str, Any]] = {}
    waiting = []
    for what, req in asked:
        d = vault.engine.decide(req)
        for o in d.obligations:
            if o.pack in ids and o.status == "outstanding":
                item = outstanding.setdefault(
                    o.id, {"id": o.id, "text": o.text, "rule": o.rule, "due": o.due, "for": []}
                )
                item["for"].append(what)
        if d.earliest_allowed is not None and d.earliest_allowed > day:
            waiting.append(
                {
                    "for": what,
                    "decision": d.outcome.value,
                    "allowed_from": d.earliest_allowed.isoformat(),
                }
            )
    on_record = sorted(
        ({"filing": k, "date": v.isoformat()} for k, v in filings.items() if k.split(".", 1)[0] in ids),
        key=lambda f: f["filing"],
    )  # fmt: skip
    return {
        "as_of": day.isoformat(),
        "asked": [w for w, _ in asked],
        "outstanding": sorted(outstanding.values(), key=lambda o: o["id"]),
        "waiting": waiting,
        "filings_on_record": on_record,
    }


def _parity(vault: Domicile) -> dict[str, Any]:
    from domicile.vault.parity import check_parity

    report = check_parity(vault).to_dict()
    return {
        "ok": report["ok"],
        "discrepancies": len(report.get("discrepancies", [])),
        "problems": dict(Counter(d["problem"] for d in report.get("discrepancies", []))),
        "unavailable": report.get("unavailable", []),
    }


def _audit(vault: Domicile) -> dict[str, Any]:
    sites = []
    for r in vault.verify_audit():
        sites.append(
            {
                "site": r.site, "status": r.status, "ok": r.ok, "entries": r.entries,
                "witnessed": r.witnessed, "unwitnessed": r.unwitnessed,
                "witnesses": sorted(r.witnesses),
                "problem": (f"entry {r.problems[0].seq}: " if r.problems[0].seq else "") + r.problems[0].problem if r.problems else None,
            }
        )  # fmt: skip
    heads: dict[str, Any] = {}
    try:
        exported = vault.audit_heads()
    except SiteUnavailable:
        exported = None
    if exported is not None:
        for sid, head in sorted(exported.heads.items()):
            heads[sid] = {
                "size": head.size, "root": head.root.hex(), "signed_at": head.signed_at,
                "public_key": exported.keys.get(sid), "witnessed": _witnessed(vault, sid),
            }  # fmt: skip
    return {"ok": all(s["ok"] for s in sites), "sites": sites, "heads": heads}


def _witnessed(vault: Domicile, site: str) -> list[dict[str, Any]]:
    """The newest head of ``site`` each other site holds, with the entry of the witness's
    own log that records it."""
    out = []
    for w in vault.config.sites:
        if w.id == site:
            continue
        rows = vault.store(w.id).witnessed(site)
        if rows:
            row = max(rows, key=lambda r: r.size)
            out.append(
                {
                    "witness": w.id,
                    "size": row.size,
                    "root": row.root.hex(),
                    "entry": f"{w.id}:{row.seq}",
                }
            )
    return out
