"""Engine mechanics on two small test packs that disagree (tests/packs)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from domicile.packs import Outcome
from domicile.policy import Decision, PolicyEngine

ALPHA_CITIZEN = {"citizenship": "AT"}


def ask(engine: PolicyEngine, **kw: object) -> Decision:
    kw.setdefault("categories", ["user.contact.email"])
    kw.setdefault("date", "2026-02-02")
    return engine.decide(engine.request(**kw))  # type: ignore[arg-type]


def outcomes(d: Decision) -> dict[str, str]:
    return {r.id: r.outcome.value for r in d.rules}


def test_localized_write_at_home_is_allowed(toy_engine: PolicyEngine) -> None:
    d = ask(toy_engine, subject=ALPHA_CITIZEN, operation="store", site_country="AT")
    assert d.outcome is Outcome.allow
    assert outcomes(d) == {"aa.local": "allow"}


def test_write_abroad_is_denied_with_reason_and_citation(toy_engine: PolicyEngine) -> None:
    d = ask(toy_engine, subject=ALPHA_CITIZEN, operation="store", site_country="DE")
    assert d.outcome is Outcome.deny
    (rule,) = [r for r in d.rules if r.id == "aa.local"]
    assert "outside Alphaland" in rule.reason
    assert rule.citations[0].pinpoint == "s. 1"
    assert "aa.local" in d.explanation


def test_strictest_law_wins_across_packs(toy_engine: PolicyEngine) -> None:
    subject = {"citizenship": "AT", "residence": "BE"}
    # Betaland's resident may not be written to Alphaland without a contract ...
    home = ask(toy_engine, subject=subject, operation="store", site_country="AT")
    assert home.outcome is Outcome.deny
    assert outcomes(home) == {"aa.local": "allow", "bb.export": "deny"}
    assert {j.pack for j in home.jurisdictions} == {"aa", "bb"}
    # ... and Alphaland's citizen may not be written to Betaland at all.
    away = ask(toy_engine, subject=subject, operation="store", site_country="BE")
    assert away.outcome is Outcome.deny
    assert outcomes(away) == {"aa.local": "deny"}
    # The contract on record settles Betaland's side; Alphaland is satisfied at home.
    settled = ask(
        toy_engine, subject=subject, operation="store", site_country="AT",
        filings={"bb.contract.AT": "2026-01-01"},
    )  # fmt: skip
    assert settled.outcome is Outcome.allow


def test_exemption_waives_only_the_named_rule(toy_engine: PolicyEngine) -> None:
    d = ask(
        toy_engine, subject=ALPHA_CITIZEN, operation="store", site_country="DE", bases=["aa.press"]
    )
    assert d.outcome is Outcome.allow
    (rule,) = d.rules
    assert rule.waived_by == "aa.exempt.press"


def test_consent_claimed_is_reported_as_not_lifting_a_localization_rule(
    toy_engine: PolicyEngine,
) -> None:
    d = ask(
        toy_engine, subject=ALPHA_CITIZEN, operation="store", site_country="DE", bases=["consent"]
    )
    assert d.outcome is Outcome.deny
    assert "claimed basis (consent) does not lift" in d.explanation


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        ("2026-01-12", Outcome.deny),  # the 5th working day after the notice: still waiting
        ("2026-01-13", Outcome.allow),  # the day after it
    ],
)
def test_waiting_period_skips_weekend_and_pack_holiday(
    toy_engine: PolicyEngine, day: str, expected: Outcome
) -> None:
    # Filed Friday 2 Jan 2026; working days: 5, 7, 8, 9, 12 Jan (6 Jan is the pack's holiday).
    d = ask(
        toy_engine, subject={"citizenship": "US"}, operation="transfer", site_country="AT",
        to_country="JP", date=day, filings={"aa.notice": "2026-01-02"}, facts={"aa.volume": 10},
    )  # fmt: skip
    assert d.outcome is expected
    if expected is Outcome.deny:
        assert d.earliest_allowed == dt.date(2026, 1, 13)
        assert "wait.aa.notice" in {o.id for o in d.obligations}


def test_missing_notice_becomes_the_obligation_that_unlocks(toy_engine: PolicyEngine) -> None:
    d = ask(
        toy_engine, subject={"citizenship": "US"}, operation="transfer", site_country="AT",
        to_country="BE",
    )  # fmt: skip
    assert d.outcome is Outcome.deny
    ob = {o.id: o for o in d.obligations}["aa.notice"]
    assert ob.status == "outstanding"
    assert "file the export notice" in ob.text
    assert d.earliest_allowed is None


def test_list_membership_follows_dates_and_required_facts(toy_engine: PolicyEngine) -> None:
    base = dict(
        subject={"citizenship": "US"}, operation="transfer", site_country="AT", to_country="US",
        filings={"aa.notice": "2026-03-01"}, facts={"aa.volume": 10},
    )  # fmt: skip
    # Before the US joins the list, and on the day the notice is filed: the wait applies.
    assert ask(toy_engine, **base, date="2026-03-01").outcome is Outcome.deny
    # After joining, only certified recipients count as members.
    certified = {**base, "facts": {"aa.volume": 10, "aa.certified": True}}
    d = ask(toy_engine, **certified, date="2026-03-02")
    assert d.outcome is Outcome.allow
    assert d.rules[0].route == "friends"
    assert ask(toy_engine, **base, date="2026-03-02").outcome is Outcome.deny


def test_unverified_list_member_escalates_until_the_fallback_route_is_met(
    toy_engine: PolicyEngine,
) -> None:
    base = dict(
        subject={"citizenship": "US"}, operation="transfer", site_country="AT", to_country="CH",
        filings={"aa.notice": "2026-01-02"}, facts={"aa.volume": 10},
    )  # fmt: skip
    assert ask(toy_engine, **base, date="2026-01-05").outcome is Outcome.escalate
    assert ask(toy_engine, **base, date="2026-01-20").outcome is Outcome.allow


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        ({}, Outcome.escalate),  # volume unknown: the large-export route may apply
        ({"aa.volume": 10}, Outcome.allow),
        ({"aa.volume": 5000}, Outcome.deny),
    ],
)
def test_unstated_fact_escalates_rather_than_allowing(
    toy_engine: PolicyEngine, facts: dict[str, int], expected: Outcome
) -> None:
    d = ask(
        toy_engine, subject={"citizenship": "US"}, operation="transfer", site_country="AT",
        to_country="JP", date="2026-03-01", filings={"aa.notice": "2026-01-02"}, facts=facts,
    )  # fmt: skip
    assert d.outcome is expected
    if not facts:
        assert "aa.volume" in d.rules[0].reason


def test_ban_denies_even_when_routes_are_met(toy_engine: PolicyEngine) -> None:
    d = ask(
        toy_engine, subject={"citizenship": "US"}, operation="transfer", site_country="AT",
        to_country="BE", filings={"aa.notice": "2026-01-02", "aa.ban.be": "2026-01-20"},
    )  # fmt: skip
    assert d.outcome is Outcome.deny
    assert outcomes(d) == {"aa.export": "allow", "aa.ban": "deny"}


def test_read_from_abroad_is_an_access_flow_and_replica_a_transfer(
    toy_engine: PolicyEngine,
) -> None:
    read = ask(
        toy_engine, subject=ALPHA_CITIZEN, operation="retrieve", site_country="AT", to_country="BE",
        filings={"aa.notice": "2026-01-02"},
    )  # fmt: skip
    assert read.outcome is Outcome.allow
    assert [r.flow.kind.value for r in read.rules if r.flow] == ["access"]
    copy = ask(
        toy_engine, subject=ALPHA_CITIZEN, operation="store", site_country="BE",
        facts={"replica": True}, filings={"aa.notice": "2026-01-02"},
    )  # fmt: skip
    assert copy.outcome is Outcome.allow
    assert outcomes(copy) == {"aa.local": "allow", "aa.export": "allow"}
    assert [r.flow.kind.value for r in copy.rules if r.flow] == ["replica"]


def test_obligation_rule_escalates_until_met(toy_engine: PolicyEngine) -> None:
    base = dict(
        subject=ALPHA_CITIZEN,
        operation="store",
        site_country="AT",
        categories=["user.biometric.voice"],
    )
    open_ = ask(toy_engine, **base)
    assert open_.outcome is Outcome.escalate
    assert {o.id: o.status for o in open_.obligations}["aa.health_register"] == "outstanding"
    done = ask(toy_engine, **base, filings={"aa.notice": "2026-01-02"})
    assert done.outcome is Outcome.allow
    assert {o.id: o.status for o in done.obligations}["aa.health_register"] == "met"


def test_contested_rule_escalates(toy_engine: PolicyEngine) -> None:
    d = ask(
        toy_engine, subject={"citizenship": "US"}, operation="transfer", site_country="BE",
        to_country="US", categories=["user.biometric.fingerprint"],
        filings={"bb.contract.US": "2026-01-01"}, facts={"bb.public_body": False},
    )  # fmt: skip
    assert d.outcome is Outcome.escalate
    assert outcomes(d) == {"bb.export": "allow", "bb.contested": "escalate"}


def test_rules_outside_their_effective_dates_do_not_fire(toy_engine: PolicyEngine) -> None:
    d = ask(
        toy_engine, subject=ALPHA_CITIZEN, operation="store", site_country="DE", date="2019-12-31"
    )
    assert d.outcome is Outcome.allow
    assert d.rules == ()


def test_uncertain_subject_escalates_abroad_and_is_allowed_at_home(
    toy_engine: PolicyEngine,
) -> None:
    subject = {"phone": "+43 664 1234567"}  # an Austrian mobile number: weak evidence only
    abroad = ask(toy_engine, subject=subject, operation="store", site_country="DE")
    assert abroad.outcome is Outcome.escalate
    assert abroad.rules[0].uncertain
    assert abroad.jurisdictions[0].coverage == "possible"
    home = ask(toy_engine, subject=subject, operation="store", site_country="AT")
    assert home.outcome is Outcome.allow


def test_decisions_are_cached_and_reproducible(toy_engine: PolicyEngine) -> None:
    req = toy_engine.request(
        subject=ALPHA_CITIZEN, categories=["user.name"], operation="store", site_country="DE",
        date="2026-02-02",
    )  # fmt: skip
    first = toy_engine.decide(req)
    assert toy_engine.decide(req) is first
    again = toy_engine.evaluate(req)
    assert again == first
    assert again is not first


def test_decision_json_holds_no_plaintext_evidence(toy_engine: PolicyEngine) -> None:
    phone = "+43 664 1234567"
    d = ask(
        toy_engine, subject={"phone": phone, "ip": "81.16.0.1", "document": "ru_inn:7707083893"},
        operation="store", site_country="DE",
    )  # fmt: skip
    text = json.dumps(d.to_dict())
    for secret in ("664", "1234567", "81.16", "7707083893"):
        assert secret not in text
    assert set(d.to_dict()) >= {"decision", "jurisdictions", "rules", "obligations", "explanation"}


def test_routes_follow_their_own_effective_dates(toy_engine: PolicyEngine) -> None:
    base = dict(
        subject={"citizenship": "US"}, operation="transfer", site_country="BE", to_country="US",
        bases=["consent"], facts={"bb.public_body": False},
    )  # fmt: skip
    before = ask(toy_engine, **base, date="2025-06-01")
    assert before.outcome is Outcome.allow
    assert before.rules[0].route == "old_consent"
    assert ask(toy_engine, **base, date="2026-02-02").outcome is Outcome.deny


def test_a_bool_fact_declared_unknown_when_unstated_escalates(toy_engine: PolicyEngine) -> None:
    base = dict(
        subject={"citizenship": "US"}, operation="transfer", site_country="BE", to_country="US",
        filings={"bb.contract.US": "2026-01-01"},
    )  # fmt: skip
    unstated = ask(toy_engine, **base)
    assert unstated.outcome is Outcome.escalate
    assert "bb.public_body" in unstated.rules[0].reason
    assert ask(toy_engine, **base, facts={"bb.public_body": False}).outcome is Outcome.allow


def test_masked_disclosure_only_when_every_refusing_rule_allows_it(engine: PolicyEngine) -> None:
    base = dict(
        subject={"citizenship": "RU"}, operation="retrieve", site_country="RU", to_country="US",
        categories=["user.name", "user.contact.email", "user.contact.phone_number"],
        date="2025-09-19", filings={"ru.art12_notice": "2025-09-05"},
    )  # fmt: skip
    waiting = ask(engine, **base)
    assert waiting.outcome is Outcome.deny
    assert waiting.disclosure == "masked"
    assert dict(waiting.masks) == {"user.name": "initials", "user.contact.email": "domain"}
    assert "Masked disclosure permitted" in waiting.explanation
    banned = ask(
        engine,
        **{
            **base,
            "filings": {"ru.art12_notice": "2025-01-05", "ru.transfer_ban.US": "2025-09-01"},
        },
    )
    assert banned.disclosure == "none"
    allowed = ask(engine, **{**base, "date": "2025-09-22"})
    assert allowed.disclosure == "full"
