"""Running a pack's own test fixtures: requests in, expected decisions out."""

from __future__ import annotations

from dataclasses import dataclass

from domicile.errors import DomicileError
from domicile.packs.model import Fixture, Outcome
from domicile.policy.decision import Decision
from domicile.policy.engine import PolicyEngine


@dataclass(frozen=True)
class FixtureResult:
    pack: str
    name: str
    problems: tuple[str, ...]
    decision: Decision | None

    @property
    def ok(self) -> bool:
        return not self.problems


def check_fixture(engine: PolicyEngine, pack_id: str, fx: Fixture) -> FixtureResult:
    r = fx.request
    try:
        request = engine.request(
            subject=r.subject,
            categories=r.categories,
            operation=r.operation,
            site_country=r.site_country,
            to_country=r.to_country,
            date=r.date,
            filings=r.filings,
            bases=r.bases,
            facts=r.facts,
        )
    except DomicileError as exc:
        return FixtureResult(pack_id, fx.name, (f"bad request: {exc}",), None)
    d = engine.evaluate(request)
    want = fx.expect
    problems: list[str] = []
    if d.outcome is not want.decision:
        problems.append(f"decision is {d.outcome.value}, expected {want.decision.value}")
    if want.disclosure is not None and d.disclosure != want.disclosure:
        problems.append(f"disclosure is {d.disclosure}, expected {want.disclosure}")
    fired = {r.id: r.outcome for r in d.rules}
    for rid in want.rules:
        got = [r.outcome for r in d.rules if r.id == rid]
        if not got:
            problems.append(f"rule {rid} did not fire")
        elif want.decision not in got:
            outs = ", ".join(sorted({o.value for o in got}))
            problems.append(f"rule {rid} gave {outs}, expected {want.decision.value}")
    for rid in want.fired:
        if rid not in fired:
            problems.append(f"rule {rid} did not fire")
    for rid in want.not_fired:
        if rid in fired:
            problems.append(f"rule {rid} fired ({fired[rid].value}) but should not have")
    listed = {o.id for o in d.obligations}
    for oid in want.obligations:
        if oid not in listed:
            problems.append(
                f"obligation {oid} not listed (got: {', '.join(sorted(listed)) or 'none'})"
            )
    return FixtureResult(pack_id, fx.name, tuple(problems), d)


def run_fixtures(engine: PolicyEngine, pack_ids: list[str] | None = None) -> list[FixtureResult]:
    out = []
    for lp in engine.packs:
        if pack_ids is not None and lp.id not in pack_ids:
            continue
        for fx in lp.pack.tests:
            out.append(check_fixture(engine, lp.id, fx))
    return out


__all__ = ["FixtureResult", "Outcome", "check_fixture", "run_fixtures"]
