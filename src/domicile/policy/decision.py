"""Requests to the engine and the decisions it returns. Both are immutable and hashable.

A ``Decision`` carries everything a data-protection officer needs to read and replay it:
the jurisdictions and the evidence that put them there, every rule that fired with its
outcome, reason and citations, the obligations, and the pack versions used.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from domicile.packs.model import FlowKind, Operation, Outcome
from domicile.policy.logic import Flow
from domicile.residency import Residency
from domicile.residency.resolver import Finding, TriSet


@dataclass(frozen=True)
class Request:
    """One question to the engine. Build it with ``PolicyEngine.request`` (which validates);
    construct it directly only from already-validated values."""

    residency: Residency
    categories: tuple[str, ...]
    operation: Operation
    site_country: str
    date: dt.date
    to_country: str | None = None
    filings: tuple[tuple[str, dt.date], ...] = ()
    bases: frozenset[str] = frozenset()
    facts: tuple[tuple[str, bool | int | str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The request without the subject's evidence values (never plaintext)."""
        return {
            "subject": self.residency.to_dict(),
            "categories": list(self.categories),
            "operation": self.operation.value,
            "site_country": self.site_country,
            "to_country": self.to_country,
            "date": self.date.isoformat(),
            "filings": {k: v.isoformat() for k, v in self.filings},
            "bases": sorted(self.bases),
            "facts": dict(self.facts),
        }


@dataclass(frozen=True)
class Citation:
    source: str
    title: str
    kind: str
    url: str | None
    pinpoint: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "title": self.title,
            "kind": self.kind,
            "url": self.url,
            "pinpoint": self.pinpoint,
        }


@dataclass(frozen=True)
class Obligation:
    id: str
    text: str
    rule: str
    pack: str
    status: Literal["outstanding", "ongoing", "met"]
    due: str | None = None
    earliest: dt.date | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "text": self.text,
            "rule": self.rule,
            "pack": self.pack,
            "status": self.status,
            "due": self.due,
            "earliest": self.earliest.isoformat() if self.earliest else None,
        }


@dataclass(frozen=True)
class RuleResult:
    """One rule that fired: it applied (or may apply) to the request."""

    id: str
    pack: str
    kind: str
    title: str
    outcome: Outcome
    reason: str
    says: str
    interpretation: str
    interpretation_note: str | None
    citations: tuple[Citation, ...]
    uncertain: bool = False
    route: str | None = None
    flow: Flow | None = None
    waived_by: str | None = None
    masked_when_refused: bool = False
    filings_used: tuple[str, ...] = ()  # the filings on record that the chosen route rests on

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pack": self.pack,
            "kind": self.kind,
            "title": self.title,
            "outcome": self.outcome.value,
            "reason": self.reason,
            "says": self.says,
            "uncertain": self.uncertain,
            "route": self.route,
            "flow": (
                {
                    "kind": self.flow.kind.value,
                    "origin": self.flow.origin,
                    "origin_pack": self.flow.origin_pack,
                    "destination": self.flow.destination,
                }
                if self.flow
                else None
            ),
            "waived_by": self.waived_by,
            "filings_used": list(self.filings_used),
            "interpretation": {"status": self.interpretation, "note": self.interpretation_note},
            "citations": [c.to_dict() for c in self.citations],
        }


@dataclass(frozen=True)
class JurisdictionResult:
    pack: str
    jurisdiction: str
    name: str
    coverage: Literal["covered", "possible", "none"]
    territory: bool
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "pack": self.pack,
            "jurisdiction": self.jurisdiction,
            "name": self.name,
            "coverage": self.coverage,
            "territory": self.territory,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    request: Request
    jurisdictions: tuple[JurisdictionResult, ...]
    rules: tuple[RuleResult, ...]
    obligations: tuple[Obligation, ...]
    explanation: str
    earliest_allowed: dt.date | None
    packs: tuple[tuple[str, str], ...]
    # What may be shown: everything (allow), masked forms only (every refusing rule permits
    # them; ``masks`` says how, per category), or nothing.
    disclosure: Literal["full", "masked", "none"] = "full"
    masks: tuple[tuple[str, str], ...] = ()

    @property
    def allowed(self) -> bool:
        return self.outcome is Outcome.allow

    @cached_property
    def rule_ids(self) -> tuple[str, ...]:
        return tuple(r.id for r in self.rules)

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": self.outcome.value,
            "date": self.request.date.isoformat(),
            "jurisdictions": [j.to_dict() for j in self.jurisdictions],
            "rules": [r.to_dict() for r in self.rules],
            "obligations": [o.to_dict() for o in self.obligations],
            "explanation": self.explanation,
            "earliest_allowed": self.earliest_allowed.isoformat()
            if self.earliest_allowed
            else None,
            "disclosure": self.disclosure,
            "masks": dict(self.masks),
            "packs": dict(self.packs),
            "request": self.request.to_dict(),
        }


# --- the way back: a decision sent between nodes (``domicile.federation``) ----------------


def _tri(d: dict[str, Any]) -> TriSet:
    return TriSet(frozenset(d["certain"]), frozenset(d["possible"]))


def _date(text: str | None) -> dt.date | None:
    return dt.date.fromisoformat(text) if text else None


def decision_to_wire(decision: Decision) -> dict[str, Any]:
    """``to_dict`` and what it leaves out (which rules permit masked forms when they
    refuse): everything ``decision_from_dict`` needs to rebuild the same decision."""
    out = decision.to_dict()
    out["masked_when_refused"] = [r.id for r in decision.rules if r.masked_when_refused]
    return out


def decision_from_dict(d: dict[str, Any]) -> Decision:
    """The ``Decision`` that ``decision_to_wire`` (or ``to_dict``) made ``d`` of: how a node
    rebuilds the decision its peer made under its own packs, so that its callers see the
    same object a local operation answers. Raises ``KeyError``/``ValueError``/``TypeError``
    on a malformed document."""
    masked = frozenset(d.get("masked_when_refused") or ())
    req, subject = d["request"], d["request"]["subject"]
    residency = Residency(
        _tri(subject["citizenship"]),
        _tri(subject["residence"]),
        _tri(subject["location_at_collection"]),
        tuple(
            Finding(f["kind"], f["country"], f["strength"], tuple(f["supports"]), f["description"])
            for f in subject["evidence"]
        ),
    )
    request = Request(
        residency=residency,
        categories=tuple(req["categories"]),
        operation=Operation(req["operation"]),
        site_country=req["site_country"],
        date=dt.date.fromisoformat(req["date"]),
        to_country=req["to_country"],
        filings=tuple((k, dt.date.fromisoformat(v)) for k, v in req["filings"].items()),
        bases=frozenset(req["bases"]),
        facts=tuple(req["facts"].items()),
    )

    def rule(r: dict[str, Any]) -> RuleResult:
        f = r["flow"]
        return RuleResult(
            id=r["id"], pack=r["pack"], kind=r["kind"], title=r["title"],
            outcome=Outcome(r["outcome"]), reason=r["reason"], says=r["says"],
            interpretation=r["interpretation"]["status"],
            interpretation_note=r["interpretation"]["note"],
            citations=tuple(Citation(**c) for c in r["citations"]),
            uncertain=r["uncertain"], route=r["route"],
            flow=Flow(FlowKind(f["kind"]), f["destination"], f["origin"], f["origin_pack"])
            if f else None,
            waived_by=r["waived_by"], masked_when_refused=r["id"] in masked,
            filings_used=tuple(r["filings_used"]),
        )  # fmt: skip

    return Decision(
        outcome=Outcome(d["decision"]),
        request=request,
        jurisdictions=tuple(
            JurisdictionResult(
                j["pack"],
                j["jurisdiction"],
                j["name"],
                j["coverage"],
                j["territory"],
                tuple(j["reasons"]),
            )
            for j in d["jurisdictions"]
        ),
        rules=tuple(rule(r) for r in d["rules"]),
        obligations=tuple(
            Obligation(
                o["id"],
                o["text"],
                o["rule"],
                o["pack"],
                o["status"],
                o["due"],
                _date(o["earliest"]),
            )
            for o in d["obligations"]
        ),
        explanation=d["explanation"],
        earliest_allowed=_date(d["earliest_allowed"]),
        packs=tuple(d["packs"].items()),
        disclosure=d["disclosure"],
        masks=tuple(d["masks"].items()),
    )
