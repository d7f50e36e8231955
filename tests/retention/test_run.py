"""Retention on SQLite: what the plan says goes, the run destroys; holds keep what a
statute names; copies and keys follow; the act of destruction lists exactly that."""

from __future__ import annotations

import datetime as dt
import json

from domicile.crypto.errors import KeyDestroyed
from domicile.retention import add_period, plan, run
from domicile.retention.service import acts
from domicile.rights.acts import verify_act
from domicile.vault.replication import Replicator

from .conftest import HOLD, T0, World

OLGA = {"full_name": "Olga Smirnova", "email": "olga@example.ru", "city": "Kazan"}
JOHN = {"full_name": "John Miller", "email": "john@example.com", "city": "Denver"}


def _row(out: dict, collection: str, site: str) -> dict:
    [row] = [r for r in out["collections"] if (r["collection"], r["site"]) == (collection, site)]
    return row


def test_periods_by_the_calendar() -> None:
    start = dt.datetime(2024, 1, 31, tzinfo=dt.UTC)
    assert add_period(start, "1m") == dt.datetime(2024, 2, 29, tzinfo=dt.UTC)
    assert add_period(start, "5y") == dt.datetime(2029, 1, 31, tzinfo=dt.UTC)
    assert add_period(start, "2w") == dt.datetime(2024, 2, 14, tzinfo=dt.UTC)
    assert add_period(start, "0d") == start


def test_plan_then_run_with_a_hold(world: World) -> None:
    inv = world.put(
        "invoices", "US", {"payer": "John Miller", "email": "j@example.com", "amount": 40}
    )
    prof = world.put("profiles", "US", JOHN)
    world.put("notes", "US", {"text": "no retention"})
    out = plan(world.vault, now=world.at(10))
    assert _row(out, "invoices", "us")["due"] == {
        "erase": 0, "strip": 0, "fields": 0, "held": 0, "restricted": 0,
    }  # fmt: skip
    assert _row(out, "invoices", "us")["next"] == "2025-04-02"
    assert out["without_retention"] == ["notes"]
    assert "Miller" not in json.dumps(out)
    assert "john@" not in json.dumps(out)

    world.at(100)  # the invoice's 30 days and the profile's city's 90 days are over
    out = plan(world.vault)
    inv_row = _row(out, "invoices", "us")
    assert inv_row["due"] == {
        "erase": 0, "strip": 1, "fields": 1, "held": 1, "restricted": 0,
    }  # fmt: skip
    assert inv_row["holds"][0]["records_held"] == 1
    assert inv_row["next"] == "2030-03-03"
    assert _row(out, "profiles", "us")["due"] == {
        "erase": 0, "strip": 1, "fields": 1, "held": 0, "restricted": 0,
    }  # fmt: skip

    done = run(world.vault)
    assert done["sites"] == [
        {"site": "us", "country": "US", "records_erased": 0, "keys_destroyed": 0,
         "records_stripped": 2, "fields_removed": 2, "records_held": 1,
         "records_changed_meanwhile": 0, "records_restricted": 0},
    ]  # fmt: skip
    assert world.vault.get(inv, purpose="audit").fields == {"payer": "John Miller", "amount": 40}
    assert world.vault.get(prof, purpose="view").fields == {
        "full_name": "John Miller", "email": "john@example.com",
    }  # fmt: skip
    # The copy in Germany loses the city too once the outbox is delivered.
    Replicator(world.vault).run_once(reconcile=False)
    copy = world.vault.store("de").get(world.record(prof).record_id)
    assert copy is not None
    assert "city" not in copy.field_names
    # Run again: nothing more is due, and no second act.
    assert run(world.vault)["act"] is None

    [act] = acts(world.config)
    body = act["act"]
    assert HOLD in json.dumps(body["destroyed"])
    assert sorted(f for d in body["destroyed"] for f in d["fields_removed"]) == ["city", "email"]
    assert len(body["log_extract"]) == 2
    assert all(c["valid"] for c in verify_act(world.vault, act))

    # Five years on the hold ends: the invoice goes whole; the profile's year without
    # access is long over. Two subjects (two e-mail addresses), two keys.
    world.clock.now = dt.datetime(2030, 3, 4, tzinfo=dt.UTC)
    done = run(world.vault)
    assert done["sites"][0]["records_erased"] == 2
    assert done["sites"][0]["keys_destroyed"] == 2
    assert world.record(inv) is None
    assert world.record(prof) is None
    assert all(r.ok for r in world.vault.verify_audit())
    assert len(acts(world.config)) == 2


def test_last_access_extends_and_a_shred_reaches_the_copies(world: World) -> None:
    kept = world.put("profiles", "US", JOHN)
    gone = world.put("profiles", "US", {**JOHN, "email": "other@example.com"})
    world.at(200)
    world.vault.get(kept, purpose="view")  # read: its year runs from now
    world.at(380)
    out = plan(world.vault)
    assert _row(out, "profiles", "us")["due"]["erase"] == 1
    subject = world.record(gone).subject_id
    done = run(world.vault)
    assert done["sites"][0]["records_erased"] == 1
    assert done["sites"][0]["keys_destroyed"] == 1
    assert world.record(gone) is None
    assert world.record(kept) is not None
    assert world.vault.store("de").subject_records(subject) == []
    try:
        world.vault._cipher("us", subject)
        raise AssertionError("the key should be gone")
    except KeyDestroyed:
        pass
    [act] = acts(world.config)
    # The record kept loses its city (90 days after collection): a second entry.
    [d] = [d for d in act["act"]["destroyed"] if d["key_destroyed"]]
    [stripped] = [d for d in act["act"]["destroyed"] if not d["key_destroyed"]]
    assert (stripped["records"], stripped["fields_removed"]) == (0, ["city"])
    assert (d["site"], d["subject"], d["records"], d["key_destroyed"]) == ("us", subject, 1, True)
    assert set(d["categories"]) == {"user.name", "user.contact.email", "user.contact.address.city"}


def test_a_russian_subject_at_its_site(world: World) -> None:
    token = world.put("profiles", "RU", OLGA)
    assert world.vault.tokens.read(token)[0] == "ru"
    world.clock.now = T0 + dt.timedelta(days=400)
    done = run(world.vault)
    assert [(s["site"], s["records_erased"]) for s in done["sites"]] == [("ru", 1)]
    [act] = acts(world.config)
    assert [s["site"] for s in act["signatures"]] == ["ru"]
    assert "Moscow" in act["act"]["destroyed"][0]["location"]


def test_a_restricted_subject_is_kept_until_the_restriction_is_lifted(world: World) -> None:
    from domicile.rights import fulfil, lift, open_request

    prof = world.put("profiles", "US", JOHN)
    req = open_request(
        world.vault, "restriction", {"email": JOHN["email"]},
        checked_by="dpo.kim", verified_how="account_login",
    )  # fmt: skip
    fulfil(world.vault, req["id"])
    world.at(500)  # the profile's year since its last access is over
    # The plan says the profile is due, and that the restriction keeps it.
    out = plan(world.vault)
    due = _row(out, "profiles", "us")["due"]
    assert (due["erase"], due["restricted"]) == (1, 1)
    subject = world.record(prof).subject_id
    [kept] = out["kept"]
    assert kept["subject"] == subject
    assert (kept["site"], kept["request"], kept["records"]) == ("us", req["id"], 1)
    assert kept["collections"] == ["profiles"]
    assert req["id"] in kept["reason"]
    assert "John" not in json.dumps(out)
    assert "john@" not in json.dumps(out)
    [site] = run(world.vault)["sites"]
    assert (site["records_erased"], site["records_restricted"]) == (0, 1)
    assert world.record(prof) is not None
    lift(world.vault, req["id"], reason="the claim was settled")
    assert plan(world.vault)["kept"] == []
    [site] = run(world.vault)["sites"]
    assert (site["records_erased"], site["records_restricted"]) == (1, 0)
    assert world.record(prof) is None
