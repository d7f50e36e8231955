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

from domicile.packs.model import Operation, Outcome
from domicile.policy.logic import Flow
from domicile.residency import Residency


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
