"""Crossing borders, on SQLite and on PostgreSQL: copies only when the law permits them,
removal when it stops, masked and refused reads, and a ledger with each transfer once."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter

import pytest

from domicile.vault import Domicile, PolicyRefused
from domicile.vault.parity import check_parity
from domicile.vault.replication import Replicator
from domicile.vault.transfers import summarize

from .conftest import IVAN, Deployment

RU = {"citizenship": "RU"}
FR = {"citizenship": "FR", "residence": "FR"}


def at(year: int, month: int, day: int) -> dt.datetime:
    return dt.datetime(year, month, day, 12, tzinfo=dt.UTC)


def audit(vault: Domicile, site: str) -> list[dict[str, object]]:
    return [json.loads(r.payload) for r in vault.store(site).audit()]


def copies(vault: Domicile, site: str) -> dict[str, int]:
    return {c.record_id: c.version for c in vault.store(site).replicas("", 10_000)}


def test_a_copy_only_after_the_notice_and_the_wait_then_a_ban_removes_it(
    deployment: Deployment,
) -> None:
    # June 2024: the 2015 wording of Art. 18(5) lets a copy follow the Russian primary under
    # Art. 12's rules. Germany is adequate (notice only); the US waits 10 working days.
    vault = deployment.open(at(2024, 6, 3))
    token = vault.put("profiles", subject=RU, fields=IVAN, purpose="signup").token
    rid = vault.tokens.read(token)[1]
    report = Replicator(vault).run_once()
    assert (report.delivered, report.refused) == (0, 2)  # no Art. 12 notice yet
    assert copies(vault, "de") == copies(vault, "us") == {}
    refusals = [e for e in audit(vault, "ru") if e["action"] == "refuse"]
    assert {e["detail"]["to_site"] for e in refusals} == {"de", "us"}  # type: ignore[index]

    vault.add_filing("ru.art12_notice", "2024-05-27")
    vault.update(token, fields={"city": "Kazan"}, purpose="edit")  # queues the record again
    report = Replicator(vault).run_once()
    assert report.delivered == 1
    assert copies(vault, "de") == {rid: 2}
    assert copies(vault, "us") == {}  # the wait runs to 10 June
    vault.close()

    vault = deployment.open(at(2024, 6, 11))
    vault.update(token, fields={"city": "Omsk"}, purpose="edit")
    assert Replicator(vault).run_once().delivered == 2
    assert copies(vault, "de") == copies(vault, "us") == {rid: 3}
    # Each copy holds only its permitted fields, sealed under its own site's key.
    de = vault.get(token, purpose="view", as_site="de")
    assert (de.source, de.read_at, de.transfer) == ("replica", "de", False)
    assert de.fields == {"full_name": IVAN["full_name"], "email": IVAN["email"], "city": "Omsk"}
    assert vault.get(token, purpose="view", as_site="us").fields == {"full_name": IVAN["full_name"]}
    assert check_parity(vault).ok

    # Roskomnadzor bans transfers to the US: the copy there goes, with evidence; Germany's stays.
    vault.add_filing("ru.transfer_ban.US", "2024-06-11")
    report = Replicator(vault).run_once()
    assert report.removed == 1
    assert copies(vault, "us") == {}
    assert copies(vault, "de") == {rid: 3}
    deletion = [e for e in audit(vault, "us") if e["action"] == "delete"]
    assert len(deletion) == 1
    assert "no longer permits" in deletion[0]["detail"]["reason"]  # type: ignore[index]
    assert "ru.transfer.ban" in deletion[0]["rules"]  # type: ignore[operator]
    vault.close()

    # 1 July 2025: the new wording makes foreign copies contested; contested never keeps.
    vault = deployment.open(at(2025, 7, 1))
    assert Replicator(vault).run_once().removed == 1
    assert copies(vault, "de") == {}
    assert all(r.ok for r in vault.verify_audit())
    vault.close()


def test_erasure_reaches_the_copies_and_their_keys(deployment: Deployment) -> None:
    vault = deployment.open(at(2024, 6, 20))
    vault.add_filing("ru.art12_notice", "2024-01-10")
    token = vault.put("profiles", subject=RU, fields=IVAN, purpose="signup").token
    Replicator(vault).run_once()
    subject = vault.store("ru").get(vault.tokens.read(token)[1]).subject_id  # type: ignore[union-attr]
    assert vault.keystore("de").get(subject) is not None
    vault.erase(token)
    Replicator(vault).run_once()
    assert copies(vault, "de") == copies(vault, "us") == {}
    assert vault.keystore("de").get(subject) is None
    assert vault.keystore("us").get(subject) is None
    assert any(e["action"] == "erase" for e in audit(vault, "de"))
    vault.close()
    for value in IVAN.values():
        assert value.encode() not in deployment.everything()


def test_cross_border_reads_full_masked_or_refused_each_logged(deployment: Deployment) -> None:
    vault = deployment.open(at(2025, 9, 19))
    ru = vault.put(
        "profiles", subject=RU, fields={**IVAN, "phone": "+7 912 345-67-89"}, purpose="signup"
    ).token
    fr = vault.put(
        "profiles",
        subject=FR,
        fields={"full_name": "Camille Durand", "email": "c@d.fr"},
        purpose="signup",
    ).token
    # Russia, during the wait after the Art. 12 notice: masked forms only; the phone number
    # and the city have no permitted masked form, so they are withheld.
    vault.add_filing("ru.art12_notice", "2025-09-05")
    masked = vault.get(ru, purpose="recruiter_view", as_site="us")
    assert masked.masked
    assert masked.fields == {"full_name": "I. P. S.", "email": "*@example.ru"}
    # The EU without standard clauses for the US: refused, and the refusal audited at home.
    with pytest.raises(PolicyRefused):
        vault.get(fr, purpose="recruiter_view", as_site="us")
    refusal = audit(vault, "de")[-1]
    assert refusal["action"] == "refuse"
    assert "eu.transfer.gdpr" in refusal["rules"]  # type: ignore[operator]
    # With clauses on record the full value crosses, once, with its route and filing.
    vault.add_filing("eu.scc.US", "2025-09-01")
    full = vault.get(fr, purpose="recruiter_view", as_site="us")
    assert (full.masked, full.transfer) == (False, True)
    assert full.fields["email"] == "c@d.fr"
    # The ledger lists the transfer; the masked disclosure is no transfer, counted apart.
    ledger = summarize(vault, masked=True)
    assert ledger.total == 1
    (fr_entry,) = ledger.entries
    assert fr_entry["from_country"] == "DE"
    assert fr_entry["filings"] == ["eu.scc.US"]
    assert fr_entry["routes"] == ["eu.transfer.gdpr:scc"]
    assert ledger.by_destination["US"]["subjects"] == 1
    assert (ledger.masked_total, ledger.masked_by_destination) == (1, {"US": 1})
    assert ledger.masked_entries is not None
    assert ledger.masked_entries[0]["from_country"] == "RU"
    # Year-to-date counters count real transfers only: nothing went from Russia.
    assert vault.store("ru").transfer_counts(2025, "US") == (0, 0)
    assert vault.store("de").transfer_counts(2025, "US") == (1, 0)
    assert all(r.ok for r in vault.verify_audit())
    vault.close()


def test_parity_finds_a_copy_ahead_of_its_primary_and_a_missing_primary(
    deployment: Deployment,
) -> None:
    vault = deployment.open(at(2024, 6, 20))
    vault.add_filing("ru.art12_notice", "2024-01-10")
    a, b = (
        vault.put("profiles", subject=RU, fields={**IVAN, "email": e}, purpose="signup").token
        for e in ("a@example.ru", "b@example.ru")
    )
    Replicator(vault).run_once()
    assert check_parity(vault).ok
    ra, rb = vault.tokens.read(a)[1], vault.tokens.read(b)[1]
    vault.close()
    deployment.execute("us", "UPDATE records SET version = 7 WHERE record_id = ?", params=(ra,))
    deployment.execute("ru", "DELETE FROM records WHERE record_id = ?", params=(rb,))
    vault = deployment.open(at(2024, 6, 20))
    report = check_parity(vault).to_dict()
    assert report["ok"] is False
    found = Counter((d["problem"], d["site"]) for d in report["discrepancies"])  # type: ignore[union-attr]
    assert found == {
        ("copy_ahead", "us"): 1,
        ("missing_primary", "de"): 1,
        ("missing_primary", "us"): 1,
    }
    vault.close()


def test_every_transfer_appears_once_across_redelivery(deployment: Deployment) -> None:
    vault = deployment.open(at(2024, 6, 20))
    vault.add_filing("ru.art12_notice", "2024-01-10")
    tokens = [
        vault.put(
            "profiles", subject=RU, fields={**IVAN, "email": f"p{i}@example.ru"}, purpose="signup"
        ).token
        for i in range(5)
    ]
    worker = Replicator(vault)
    worker.run_once()
    # A worker that died after delivering but before clearing the outbox: the same items
    # come round again. Nothing changes and nothing more is logged.
    for site in ("ru",):
        with vault.store(site).transaction() as tx:
            tx.enqueue([(vault.tokens.read(t)[1], "x", "de", "upsert") for t in tokens])
    again = worker.run_once()
    assert (again.delivered, again.unchanged) == (0, 5)
    entries = [e for e in audit(vault, "de") if e["action"] == "transfer"]
    keys = Counter((e["record"], e["detail"]["version"]) for e in entries)  # type: ignore[index]
    assert len(keys) == 5
    assert set(keys.values()) == {1}
    assert all(r.ok for r in vault.verify_audit())
    vault.close()


def test_join_tokens_are_deterministic_and_opaque(deployment: Deployment) -> None:
    vault = deployment.open()
    a = vault.join_token("profiles", "email", "Ivan@Example.RU")
    b = vault.join_token("profiles", "email", "ivan@example.ru")
    assert a == b
    assert a.startswith("dj1_")
    assert "ivan" not in a.lower()
    assert vault.join_token("profiles", "email", "other@example.ru") != a
    vault.close()
