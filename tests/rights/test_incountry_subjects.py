"""Subjects' requests for records written through the InCountry API. The subject is found
by the ``profile_key`` the application sends (digested with the site's index key, never
stored), and access, restriction and erasure reach its records as they reach the vault's:
the package lists them, the block stops the API until it is lifted, the erasure shreds the
subject's key and its files and the act lists them."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from domicile.errors import BadInput, Conflict
from domicile.rights import fulfil, lift, open_request

from .conftest import WHO
from .served import World, cli_json, served_world

BASE = "/v2/storage/records/us"
PROFILE = "incountry.profile_key"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    yield from served_world(tmp_path)


def _write(world: World, key: str, profile: str, **more: Any) -> None:
    r = world.http.post(
        BASE, json={"record_key": key, "profile_key": profile, **more},
        headers=world.headers("admin"),
    )  # fmt: skip
    assert r.status_code == 201, r.text


def _three(world: World) -> None:
    """Two records of profile p1 (one with a file), one of p2."""
    _write(world, "a", "p1", key1="x", body="hello")
    _write(world, "b", "p1", key1="y")
    _write(world, "c", "p2", key1="z")
    r = world.http.post(f"{BASE}/a/attachments", files={"file": ("f.txt", b"data")},
                        headers=world.headers("admin"))  # fmt: skip
    assert r.status_code == 201, r.text


def test_access_lists_the_profiles_records_and_only_them(world: World) -> None:
    _three(world)
    req = open_request(world.vault, "access", {PROFILE: "p1"}, **WHO)
    assert req["identity"]["by"] == [PROFILE]
    [holding] = req["subject"]["holdings"]
    assert (holding["site"], holding["records"]) == ("us", 3)  # two records and one file
    _, package = fulfil(world.vault, req["id"])
    assert package is not None
    records = package["records"]
    assert [r["fields"]["record_key"] for r in records] == ["a", "b"]
    assert records[0]["fields"]["body"] == "hello"
    assert [f["filename"] for f in records[0]["fields"]["attachments"]] == ["f.txt"]
    assert all(r["collection"] == "@incountry" for r in records)
    # Each record read for the request is audited at its site, with no value in the entry.
    reads = [e for e in world.entries("us", "read") if e["detail"].get("api") == "incountry"]
    assert {e["detail"]["operation"] for e in reads} == {"subject_access"}
    assert len(reads) == 2
    assert "hello" not in json.dumps(reads)
    assert "p1" not in json.dumps(reads)
    # A profile key nobody wrote finds nothing.
    none = open_request(world.vault, "access", {PROFILE: "p9"}, **WHO)
    assert none["subject"] == {"found": False, "holdings": []}


def test_a_restriction_by_profile_key_blocks_the_api_until_lifted(world: World) -> None:
    _three(world)
    admin = world.headers("admin")
    req = open_request(world.vault, "restriction", {PROFILE: "p1"}, **WHO)
    fulfil(world.vault, req["id"])
    r = world.http.get(f"{BASE}/a", headers=admin)
    assert (r.status_code, r.json()["code"]) == (403, "subject_blocked")
    assert world.http.get(f"{BASE}/c", headers=admin).status_code == 200  # another profile
    found = world.http.post(f"{BASE}/find", json={"filter": {}}, headers=admin).json()
    assert [d["record_key"] for d in found["data"]] == ["c"]
    lift(world.vault, req["id"], reason="the subject contested the accuracy; checked")
    assert world.http.get(f"{BASE}/a", headers=admin).status_code == 200


def test_erasure_by_profile_key_shreds_records_and_files(world: World) -> None:
    _three(world)
    admin = world.headers("admin")
    req = open_request(world.vault, "erasure", {PROFILE: "p1"}, **WHO)
    [holding] = req["subject"]["holdings"]
    _, act = fulfil(world.vault, req["id"])
    assert act is not None
    [destroyed] = act["act"]["destroyed"]
    assert destroyed["subject"] == holding["subject"]
    assert destroyed["key_destroyed"] is True
    assert destroyed["collections"] == ["@incountry"]
    store = world.vault.store("us")
    assert store.subject_records(holding["subject"]) == []  # records and the attached file
    for key in ("a", "b"):
        assert world.http.get(f"{BASE}/{key}", headers=admin).status_code == 404
    assert world.http.get(f"{BASE}/c", headers=admin).status_code == 200


def test_the_cli_takes_the_profile_key_and_names_it_in_the_hint(world: World) -> None:
    _three(world)
    code, out = cli_json(
        world, "rights", "open", "access", "--identity", f"{PROFILE}=p1",
        "--identity-checked-by", "dpo.kim", "--verified-how", "account_login",
    )  # fmt: skip
    assert code == 0, out
    assert out["subject"]["holdings"][0]["records"] == 3
    with pytest.raises(BadInput, match="not an identifying field") as err:
        open_request(world.vault, "access", {"profile": "p1"}, **WHO)
    assert PROFILE in (err.value.hint or "")
    with pytest.raises(BadInput, match="needs a value"):
        open_request(world.vault, "access", {PROFILE: ""}, **WHO)


def test_expiry_keeps_a_restricted_subjects_records_until_the_lift(world: World) -> None:
    from domicile.vault.incountry import Caller, InCountryStorage

    _write(world, "a", "p1", expires_at="2026-12-05T00:00:00+00:00")
    _write(world, "c", "p2", expires_at="2026-12-05T00:00:00+00:00")
    req = open_request(world.vault, "restriction", {PROFILE: "p1"}, **WHO)
    [holding] = req["subject"]["holdings"]
    fulfil(world.vault, req["id"])
    world.clock.now += dt.timedelta(days=2)
    storage = InCountryStorage(world.vault)
    swept = storage.expire_all(Caller("test"), ["us"])
    assert (swept["records"], swept["restricted"]) == (1, 1)  # p2's went; p1's stays
    store = world.vault.store("us")
    assert len(store.subject_records(holding["subject"])) == 1
    assert world.http.get(f"{BASE}/a", headers=world.headers("admin")).status_code == 404
    lift(world.vault, req["id"], reason="the claim was settled")
    swept = storage.expire_all(Caller("test"), ["us"])
    assert (swept["records"], swept["restricted"]) == (1, 0)
    assert store.subject_records(holding["subject"]) == []


def test_the_api_opens_a_request_by_profile_key(world: World) -> None:
    _three(world)
    headers = world.headers("rights:read", "rights:write", "admin")
    r = world.http.post(
        "/v1/rights",
        json={"kind": "access", "identity": {PROFILE: "p1"}, "checked_by": "dpo.kim",
              "verified_how": "account_login"},
        headers=headers,
    )  # fmt: skip
    assert r.status_code == 201, r.text
    assert r.json()["subject"]["holdings"][0]["records"] == 3


def test_a_rectification_corrects_the_vaults_records_and_leaves_the_apis(world: World) -> None:
    """A person with records of both kinds: the vault's are corrected; the InCountry API's
    belong to the application (it corrects them through that API), so the step says the
    field is unknown when only they hold the subject."""
    token = world.put("US", {"full_name": "Ann Lee", "email": "ann@example.com", "city": "Reno"})
    _write(world, "a", "p1", key1="x")
    req = open_request(
        world.vault, "rectification", {"email": "ann@example.com", PROFILE: "p1"}, **WHO
    )
    assert len({h["subject"] for h in req["subject"]["holdings"]}) == 2  # (and a copy)
    fulfil(world.vault, req["id"], fields={"city": "Elko"})
    assert world.vault.get(token, purpose="profile_view").fields["city"] == "Elko"
    only = open_request(world.vault, "rectification", {PROFILE: "p1"}, **WHO)
    with pytest.raises(Conflict, match="no record of the subject has the field"):
        fulfil(world.vault, only["id"], fields={"city": "Elko"})
