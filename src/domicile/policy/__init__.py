"""Policy decisions: what the law allows for a subject, data, operation, place and date."""

from domicile.policy.decision import (
    Citation,
    Decision,
    JurisdictionResult,
    Obligation,
    Request,
    RuleResult,
)
from domicile.policy.engine import PolicyEngine, parse_date
from domicile.policy.fixtures import FixtureResult, run_fixtures
from domicile.policy.logic import Flow

__all__ = [
    "Citation",
    "Decision",
    "FixtureResult",
    "Flow",
    "JurisdictionResult",
    "Obligation",
    "PolicyEngine",
    "Request",
    "RuleResult",
    "parse_date",
    "run_fixtures",
]
