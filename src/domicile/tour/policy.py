"""A guided tour of the decision engine over a sample population (no real people).

Part one: for each subject, where may their profile be stored? Part two: a recruiter in
the US reads a Russian member's profile, before and after the Art. 12 notice, after the
wait and after a ban.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from domicile.packs.model import Outcome
from domicile.policy import Decision, PolicyEngine

SITES = ("RU", "DE", "US", "CN", "IN")
DAY = "2025-09-01"


@dataclass(frozen=True)
class Sample:
    label: str
    evidence: dict[str, str]


POPULATION = (
    Sample("Russian citizen living in Moscow", {"citizenship": "RU", "residence": "RU"}),
    Sample("Russian citizen living in Berlin", {"citizenship": "RU", "residence": "DE"}),
    Sample("Dual citizen, Russia and Germany", {"citizenship": "RU,DE"}),
    Sample("Unknown citizenship, Russian mobile number", {"phone": "+7 912 345-67-89"}),
    Sample("German resident, nothing else declared", {"residence": "DE"}),
    Sample(
        "US citizen signing up in New York", {"citizenship": "US", "located_at_collection": "US"}
    ),
    Sample("Shopper in Shanghai", {"citizenship": "CN", "located_at_collection": "CN"}),
    Sample("Indian card payer", {"citizenship": "IN", "residence": "IN"}),
    Sample("Kazakh citizen in Almaty", {"citizenship": "KZ", "residence": "KZ"}),
    Sample("Vietnamese user in Hanoi", {"citizenship": "VN", "residence": "VN"}),
)

TIMELINE: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("No Art. 12 notice on record", "2025-09-01", {}),
    ("Notice filed 2025-09-05; read on 2025-09-19 (10 working days not yet over)", "2025-09-19", {"ru.art12_notice": "2025-09-05"}),
    ("Same notice; read on 2025-09-22", "2025-09-22", {"ru.art12_notice": "2025-09-05"}),
    ("Roskomnadzor bans transfers to the US from 2025-10-01; read on 2025-10-02", "2025-10-02", {"ru.art12_notice": "2025-09-05", "ru.transfer_ban.US": "2025-10-01"}),
)  # fmt: skip


def placements(engine: PolicyEngine) -> list[dict[str, Any]]:
    rows = []
    for sample in POPULATION:
        decisions: dict[str, Decision] = {}
        for site in SITES:
            categories = ["user.contact.email", "user.name"]
            if sample.label.startswith("Indian"):
                categories.append("user.payment.transaction")
            req = engine.request(
                subject=sample.evidence, categories=categories, operation="store",
                site_country=site, date=DAY, facts={"controller.ciio": False},
            )  # fmt: skip
            decisions[site] = engine.decide(req)
        first = next(iter(decisions.values()))
        laws = [f"{j.name} ({j.coverage})" for j in first.jurisdictions if j.coverage != "none"]
        allowed = [s for s, d in decisions.items() if d.outcome is Outcome.allow]
        rows.append(
            {
                "subject": sample.label,
                "laws": laws,
                "sites": {s: d.outcome.value for s, d in decisions.items()},
                "may_store_in": allowed,
                "why_not": {
                    s: next((r.reason for r in d.rules if r.outcome is d.outcome), "")
                    for s, d in decisions.items()
                    if d.outcome is not Outcome.allow
                },
            }
        )
    return rows


def timeline(engine: PolicyEngine) -> list[dict[str, Any]]:
    out = []
    for label, day, filings in TIMELINE:
        req = engine.request(
            subject={"citizenship": "RU"}, categories=["user.name", "user.contact.email"],
            operation="retrieve", site_country="RU", to_country="US", date=day, filings=filings,
        )  # fmt: skip
        d = engine.decide(req)
        out.append(
            {
                "step": label,
                "decision": d.outcome.value,
                "rules": [r.id for r in d.rules if r.outcome is d.outcome],
                "obligations": [o.text for o in d.obligations if o.status == "outstanding"],
                "earliest_allowed": d.earliest_allowed.isoformat() if d.earliest_allowed else None,
            }
        )
    return out
