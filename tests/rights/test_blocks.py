"""Restriction and withdrawal of consent as blocks in the vault: placed at every site
holding the subject, enforced through every route (SDK, CLI, the native API, its fast path
and the InCountry API), audited when they refuse and when they let a use through, lifted
with evidence; new copies held back while restricted and made once after."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from domicile.cli.app import app as cli
from domicile.errors import Conflict
from domicile.rights import close, fulfil, lift, open_request, show
from domicile.stores.base import SubjectBlock
from domicile.vault.errors import SubjectBlocked
from domicile.vault.replication import Replicator

from .conftest import JOHN, OLGA, WHO
from .served import World, cli_json, served_world

READER = ("records:read", "site:us", "site:de", "site:ru", "collection:profiles", "purpose:*")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    yield from served_world(tmp_path)


def _restrict(world: World, fields: dict[str, str]) -> dict[str, Any]:
    req = open_request(world.vault, "restriction", {"email": fields["email"]}, **WHO)
    done, _ = fulfil(world.vault, req["id"])
    return done


def test_a_restricted_subject_is_refused_on_every_route_and_allowed_uses_are_audited(
    world: World,
) -> None:
    token = world.put("US", JOHN)  # home: us; a copy in Germany
    subject = world.subject(token)
    req = _restrict(world, JOHN)
    step = req["history"][-1]
    assert (step["vault_block"], step["sites"]) == (True, ["de", "us"])
    # The copy in Germany brings the GDPR: Art. 18(2)'s exceptions.
    assert step["allows"] == ["legal_claims", "public_interest", "rights_of_others"]
    assert req["block"]["state"] == "in_force"

    # SDK: get (home and the copy), find, update, delete, erase.
    with pytest.raises(SubjectBlocked) as caught:
        world.vault.get(token, purpose="profile_view")
    assert req["id"] in caught.value.message
    assert caught.value.block["kind"] == "restriction"
    for value in JOHN.values():
        assert value not in str(caught.value.to_dict())
    with pytest.raises(SubjectBlocked):
        world.vault.get(token, purpose="profile_view", as_site="de")  # served from the copy
    found = world.vault.find("profiles", where={"email": JOHN["email"]}, purpose="profile_view")
    assert (found.records, len(found.refused)) == ([], 1)
    with pytest.raises(SubjectBlocked, match="no change"):
        world.vault.update(token, fields={"city": "Boulder"}, purpose="profile_view")
    with pytest.raises(SubjectBlocked):
        world.vault.delete(token, purpose="profile_view")
    with pytest.raises(SubjectBlocked):
        world.vault.erase(token, purpose="profile_view")

    # The native API, on both of its paths (the fast one serves a plain GET).
    headers = world.headers(*READER)
    r = world.http.get(f"/v1/records/{token}", params={"purpose": "profile_view"}, headers=headers)
    assert (r.status_code, r.json()["code"]) == (403, "subject_blocked")
    assert r.json()["block"] == {
        "kind": "restriction", "request": req["id"], "since": req["block"]["since"], "site": "us",
    }  # fmt: skip
    assert "John" not in r.text
    r = world.http.post(
        "/v1/read", json={"tokens": [token], "purpose": "profile_view"}, headers=headers
    )
    assert (r.json()["records"][0]["status"], r.json()["records"][0]["code"]) == (
        403,
        "subject_blocked",
    )
    # The CLI.
    code, out = cli_json(world, "get", token, "--purpose", "profile_view")
    assert (code, out["error"]["code"]) == (3, "subject_blocked")

    # A purpose resting on a basis the law still allows goes ahead, and says so.
    assert world.vault.get(token, purpose="legal_defence").fields["city"] == JOHN["city"]
    read = world.entries("us", "read")[-1]
    assert read["detail"]["blocks"] == [
        {"kind": "restriction", "request": req["id"], "allowed_as": "legal_claims"}
    ]
    # The subject's own requests go ahead: access, and a rectification that reaches the copy.
    access = open_request(world.vault, "access", {"email": JOHN["email"]}, **WHO)
    _, package = fulfil(world.vault, access["id"])
    assert package is not None
    assert len(package["records"]) == 1
    assert world.entries("us", "read")[-1]["detail"]["blocks"][0]["allowed_as"] == "subject_request"
    rect = open_request(world.vault, "rectification", {"email": JOHN["email"]}, **WHO)
    fulfil(world.vault, rect["id"], fields={"city": "Boulder"})
    [copy] = [r for r in world.vault.store("de").subject_records(subject)]
    assert copy.version == 2

    # Every refusal is in the audit of the site holding the block, with the request.
    refusals = [
        e for e in world.entries("us", "refuse") if e["detail"].get("reason") == "restricted"
    ]
    assert {e["detail"]["operation"] for e in refusals} >= {
        "records:read", "records:write", "records:delete", "records:erase",
    }  # fmt: skip
    assert all(e["detail"]["request"] == req["id"] for e in refusals)
    assert [e for e in world.entries("de", "refuse") if e["detail"].get("reason") == "restricted"]

    # Closing the request lifts the block, audited at each site; reads work again.
    closed = close(world.vault, req["id"], outcome="fulfilled")
    assert closed["block"]["state"] == "lifted"
    assert closed["history"][-2]["step"] == "lift"
    assert {(e["site"]) for e in closed["history"][-2]["audit"]} == {"us", "de"}
    assert world.vault.get(token, purpose="profile_view").fields["city"] == "Boulder"
    r = world.http.get(f"/v1/records/{token}", params={"purpose": "profile_view"}, headers=headers)
    assert r.status_code == 200
    with pytest.raises(Conflict):
        lift(world.vault, req["id"], reason="again")
    assert all(v.ok for v in world.vault.verify_audit())

    # The table holds ids, names and times: nothing of the subject's data.
    for site in ("us", "de"):
        raw = b"".join(p.read_bytes() for p in (world.folder / "data").glob(f"{site}.sqlite*"))
        for value in JOHN.values():
            assert value.encode() not in raw


def test_the_block_rows_hold_no_personal_data(world: World) -> None:
    world.put("RU", OLGA)
    req = _restrict(world, OLGA)
    with sqlite3.connect(world.folder / "data" / "ru.sqlite") as db:
        rows = db.execute("SELECT * FROM subject_blocks").fetchall()
    [row] = rows
    text = " ".join(map(str, row))
    assert req["id"] in text
    assert "restriction" in text
    for value in (*OLGA.values(), "olga", "smirnova"):
        assert value.lower() not in text.lower()
    # Russia's blocking lets nothing through but storage and the subject's requests.
    assert req["history"][-1]["allows"] == []
    token = world.vault.tokens.issue(
        "ru", world.vault.store("ru").subject_records(row[0])[0].record_id
    )
    with pytest.raises(SubjectBlocked):
        world.vault.get(token, purpose="legal_defence", as_site="ru")


def test_new_copies_wait_while_restricted_and_are_made_once_when_lifted(world: World) -> None:
    token = world.put("US", JOHN, replicate=False)  # its copy for Germany is queued
    subject = world.subject(token)
    req = _restrict(world, JOHN)
    assert req["history"][-1]["sites"] == ["us"]
    report = Replicator(world.vault).run_once()  # reconcile too: it must drop nothing
    assert (report.paused, report.delivered, report.removed) == (1, 0, 0)
    assert world.vault.store("de").subject_records(subject) == []
    assert Replicator(world.vault).pending() == 0
    held = [e for e in world.entries("us", "refuse") if e["detail"].get("paused")]
    assert [e["detail"]["to_site"] for e in held] == ["de"]
    # Storing goes on: a new record of the subject is kept (and its copy waits too).
    world.put("US", {**JOHN, "city": "Aspen"}, replicate=False)
    assert Replicator(world.vault).run_once().paused == 1

    done = lift(world.vault, req["id"], reason="accuracy checked")
    assert done["history"][-1]["requeued"] == 2
    assert show(world.vault.config, req["id"])["block"]["lifted"]["reason"] == "accuracy checked"
    assert Replicator(world.vault).run_once().delivered == 2
    assert Replicator(world.vault).run_once().delivered == 0
    assert len(world.vault.store("de").subject_records(subject)) == 2
    transfers = [e for e in world.entries("de", "transfer") if e["subject"] == subject]
    assert len(transfers) == 2  # each copy crossed once
    code, out = cli_json(world, "rights", "show", req["id"])
    assert code == 0
    assert out["block"]["state"] == "lifted"


def test_withdrawal_stops_consent_purposes_only_and_outlives_its_request(world: World) -> None:
    token = world.put("RU", OLGA)
    req = open_request(world.vault, "withdrawal", {"email": OLGA["email"]}, **WHO)
    done, nothing = fulfil(world.vault, req["id"])
    assert nothing is None
    assert done["block"]["kind"] == "withdrawal"
    with pytest.raises(SubjectBlocked, match="withdrew consent") as caught:
        world.vault.get(token, purpose="newsletter", as_site="ru")
    assert "Olga" not in str(caught.value)
    assert world.vault.get(token, purpose="profile_view", as_site="ru").fields["city"] == "Kazan"
    with pytest.raises(SubjectBlocked):
        world.vault.update(token, fields={"city": "Perm"}, purpose="newsletter", as_site="ru")
    world.vault.update(token, fields={"city": "Perm"}, purpose="profile_view", as_site="ru")
    # No new records of the subject for a purpose resting on consent; others go on.
    with pytest.raises(SubjectBlocked):
        world.vault.put(
            "profiles", subject={"citizenship": "RU"}, fields=OLGA, purpose="newsletter"
        )
    world.vault.put("profiles", subject={"citizenship": "RU"}, fields=OLGA, purpose="signup")
    refusals = [
        e for e in world.entries("ru", "refuse") if e["detail"].get("reason") == "consent_withdrawn"
    ]
    assert len(refusals) == 3
    assert {e["detail"]["basis"] for e in refusals} == {"consent"}
    # Consent stays withdrawn after the request is closed, until the operator lifts it.
    close(world.vault, req["id"], outcome="fulfilled")
    shown = CliRunner().invoke(cli, ["rights", "show", req["id"], "--config", world.cfg]).stdout
    assert "block: consent withdrawn since 2026-12-04T12:00:00 at ru" in shown
    with pytest.raises(SubjectBlocked):
        world.vault.get(token, purpose="newsletter", as_site="ru")
    code, out = cli_json(world, "rights", "lift", req["id"], "--reason", "consent given again")
    assert code == 0, out
    world.vault.close()  # the CLI changed the site: read it afresh
    assert world.vault.get(token, purpose="newsletter", as_site="ru").fields["city"] == "Perm"


def test_the_incountry_api_respects_a_block(world: World) -> None:
    admin = world.headers("admin")
    base = "/v2/storage/records/us"
    for key in ("a", "b"):
        r = world.http.post(base, json={"record_key": key, "profile_key": "p1", "key1": "x"},
                            headers=admin)  # fmt: skip
        assert r.status_code == 201, r.text
    store = world.vault.store("us")
    [subject] = {
        rec.subject_id for rec in store.records_after("", 100) if rec.collection == "@incountry"
    }
    with store.transaction() as tx:
        tx.block(
            SubjectBlock(
                subject, "restriction", "rq_0123456789ab", "2026-12-04T12:00:00+00:00", "dpo"
            )
        )
    r = world.http.get(f"{base}/a", headers=admin)
    assert (r.status_code, r.json()["code"]) == (403, "subject_blocked")
    r = world.http.post(f"{base}/find", json={"filter": {"key1": "x"}}, headers=admin)
    assert r.status_code == 200
    assert r.json()["data"] == []
    r = world.http.post(base, json={"record_key": "a", "profile_key": "p1", "body": "new"},
                        headers=admin)  # fmt: skip
    assert r.status_code == 403
    assert world.http.delete(f"{base}/b", headers=admin).status_code == 403
    # Storing goes on: a new record of the subject is kept.
    r = world.http.post(base, json={"record_key": "c", "profile_key": "p1"}, headers=admin)
    assert r.status_code == 201
    refused = [
        e for e in world.entries("us", "refuse") if e["detail"].get("reason") == "restricted"
    ]
    assert len(refused) >= 4
    with store.transaction() as tx:
        assert tx.unblock(subject, "restriction", "rq_0123456789ab")
    assert world.http.get(f"{base}/a", headers=admin).status_code == 200
