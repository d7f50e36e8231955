"""``/v1/retention``: the plan and the run through the API, behind their own scopes, with
the client's site, collection and purpose scopes; the run is the CLI's, audited the same
way, and the plan writes nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from domicile.config import ServiceSettings
from domicile.http.app import create_app
from domicile.retention.service import acts

from .conftest import World, fingerprint

COLLECTIONS = ("collection:profiles", "collection:invoices")
RUNNER = ("retention:run", "site:us", *COLLECTIONS, "purpose:retention")
JOHN = {"full_name": "John Miller", "email": "john@example.com", "city": "Denver"}
OLGA = {"full_name": "Olga Smirnova", "email": "olga@example.ru", "city": "Kazan"}


class Api:
    def __init__(self, world: World) -> None:
        settings = ServiceSettings(auth_failures_per_source="100000/minute")
        self.app = create_app(world.vault, settings=settings)
        self.http = TestClient(self.app)
        self.world = world

    def headers(self, *scopes: str) -> tuple[str, dict[str, str]]:
        client, key = self.app.state.service.clients.add("retention", list(scopes), api_key=True)
        return client.id, {"Authorization": f"Bearer {key}"}

    def entries(self, site: str) -> list[dict[str, Any]]:
        return [json.loads(r.payload) for r in self.world.vault.store(site).audit()]


@pytest.fixture
def api(world: World) -> Api:
    return Api(world)  # no lifespan: the witness and the sweeps stay off, nothing else writes


def test_a_run_limited_to_its_sites_is_audited_as_the_client(api: Api, world: World) -> None:
    world.put("profiles", "US", JOHN)
    world.put("profiles", "RU", OLGA)
    world.at(500)  # both profiles' year since their last access is over
    client, headers = api.headers(*RUNNER)
    # Every site when none is named: this client may act at the US site only.
    r = api.http.post("/v1/retention/run", json={}, headers=headers)
    assert r.status_code == 403, r.text
    assert "site:ru" in r.json()["detail"]
    r = api.http.post("/v1/retention/run", json={"sites": ["us"], "dry_run": True}, headers=headers)
    assert r.status_code == 200, r.text
    assert (r.json()["act"], r.json()["sites"][0]["records_erased"]) == (None, 1)
    assert acts(world.config) == []

    r = api.http.post("/v1/retention/run", json={"sites": ["us"]}, headers=headers)
    assert r.status_code == 200, r.text
    out = r.json()
    assert [(s["site"], s["records_erased"], s["keys_destroyed"]) for s in out["sites"]] == [
        ("us", 1, 1)
    ]
    [act] = acts(world.config)
    assert out["act"] == act["act"]["id"]
    assert act["act"]["performed_by"] == client
    assert [d["site"] for d in act["act"]["destroyed"]] == ["us"]
    erased = [e for e in api.entries("us") if e["action"] == "erase"]
    assert [(e["client"], e["purpose"]) for e in erased] == [(client, "retention")]
    # The Russian profile is due too, but the run did not reach its site.
    assert [e for e in api.entries("ru") if e["action"] == "erase"] == []
    ru = [r for r in world.vault.store("ru").records_after("", 10) if not r.is_replica]
    assert len(ru) == 1


def test_every_scope_of_a_run_is_checked_and_refusals_are_audited(api: Api, world: World) -> None:
    cases = [
        (("retention:read", *RUNNER[1:]), "retention:run"),
        (("retention:run", "site:us", "collection:profiles", "purpose:retention"),
         "collection:invoices"),
        (RUNNER[:-1], "purpose:retention"),
        (("retention:run", "site:de", *COLLECTIONS, "purpose:retention"), "site:us"),
    ]  # fmt: skip
    for scopes, missing in cases:
        client, headers = api.headers(*scopes)
        r = api.http.post("/v1/retention/run", json={"sites": ["us"]}, headers=headers)
        assert (r.status_code, r.json()["code"]) == (403, "forbidden"), scopes
        assert missing in r.json()["detail"]
        last = api.entries("us")[-1]
        assert (last["action"], last["client"]) == ("refuse", client)
        assert last["detail"]["missing_scope"] == missing
    # A run is not a plan, nor is erasing records running retention.
    _, headers = api.headers(
        "records:erase", "retention:read", "site:us", *COLLECTIONS, "purpose:*"
    )
    assert api.http.post("/v1/retention/run", json={}, headers=headers).status_code == 403
    _, admin = api.headers("admin")
    r = api.http.post("/v1/retention/run", json={"sites": ["mars"]}, headers=admin)
    assert r.status_code == 422  # the document lists the sites
    r = api.http.get("/v1/retention/plan", params={"site": "mars"}, headers=admin)
    assert r.status_code == 400
    assert "mars" in r.json()["detail"]


def test_the_plan_reads_only(api: Api, world: World) -> None:
    world.put("invoices", "US", {"payer": "John Miller", "email": "j@example.com", "amount": 4})
    world.put("profiles", "RU", OLGA)
    world.at(100)
    _, headers = api.headers("retention:read", "site:us", *COLLECTIONS)
    before = fingerprint(world.config.data_dir)
    r = api.http.get("/v1/retention/plan", params={"site": "us"}, headers=headers)
    assert r.status_code == 200, r.text
    assert fingerprint(world.config.data_dir) == before
    out = r.json()
    assert {(row["collection"], row["site"]) for row in out["collections"]} == {("invoices", "us")}
    assert out["collections"][0]["due"]["strip"] == 1
    assert "Miller" not in r.text
    r = api.http.get(
        "/v1/retention/plan", params={"site": "us", "as_of": "2025-03-04"}, headers=headers
    )
    assert r.json()["collections"][0]["due"]["strip"] == 0
    # The plan of every site needs every site's scope.
    r = api.http.get("/v1/retention/plan", headers=headers)
    assert r.status_code == 403
    assert r.json()["detail"].endswith("'site:ru'")
