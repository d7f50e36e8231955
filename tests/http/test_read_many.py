"""POST /v1/read: many records in one request, each read exactly as a single read
reads it (the same check, decision and audit entry), with per-record problems."""

from __future__ import annotations

import json
from typing import Any

from .conftest import Service
from .test_native import ANNA, RECORDS, put_ru

UNKNOWN = "dom1_" + "A" * 43  # the shape of a token, but not one of this deployment's
READ = "/v1/read"


def put_us(service: Service, name: str) -> str:
    _, admin = service.client("ops", "admin")
    body = {"subject": {"citizenship": "US"}, "fields": {"full_name": name}, "purpose": "signup"}
    r = service.http.post("/v1/collections/profiles/records", json=body, headers=admin)
    assert r.status_code == 201, r.text
    token: str = r.json()["token"]
    return token


def entries(service: Service) -> dict[str, int]:
    return {site: len(list(service.vault.store(site).audit())) for site in ("ru", "de", "us")}


def reads_since(service: Service, before: dict[str, int]) -> list[tuple[str, str, Any, Any]]:
    """The audit entries added since ``before``: (site, action, record, client), sorted."""
    out = []
    for site, n in before.items():
        for row in list(service.vault.store(site).audit())[n:]:
            e = json.loads(row.payload)
            out.append((site, e["action"], e.get("record"), e.get("client")))
    return sorted(out, key=repr)


def test_each_record_is_read_and_audited_as_its_single_read(service: Service) -> None:
    ru = put_ru(service)
    us1, us2 = put_us(service, "Jane Roe"), put_us(service, "John Doe")
    _, us_app = service.client("us-app", *RECORDS, "site:us")
    tokens = [us1, ru, UNKNOWN, us2, us1]
    before = entries(service)
    r = service.http.post(READ, json={"tokens": tokens, "purpose": "view"}, headers=us_app)
    assert r.status_code == 200, r.text
    records = r.json()["records"]
    assert [x["token"] for x in records] == tokens  # in the order asked, repeats kept
    assert records[0]["fields"] == {"full_name": "Jane Roe"}
    assert records[3]["fields"] == {"full_name": "John Doe"}
    assert (records[1]["masked"], records[1]["fields"]["full_name"]) == (True, "A. S. V.")
    assert (records[2]["status"], records[2]["code"]) == (404, "invalid_token")
    batch = reads_since(service, before)

    # The same tokens read one by one leave the same entries, for the same client.
    before = entries(service)
    for token in tokens:
        single = service.http.get(
            f"/v1/records/{token}", params={"purpose": "view"}, headers=us_app
        )
        assert single.status_code in (200, 404)
    assert reads_since(service, before) == batch
    assert [a for _, a, _, _ in batch].count("read") == 3
    assert [a for _, a, _, _ in batch].count("disclose_masked") == 1


def test_a_policy_refusal_is_one_record_s_problem_without_its_values(service: Service) -> None:
    ru, us = put_ru(service), put_us(service, "Jane Roe")
    service.vault.add_filing("ru.art12_notice", "2025-01-01")
    service.vault.add_filing("ru.transfer_ban.US", "2025-02-01")
    _, us_app = service.client("us-app", *RECORDS, "site:us")
    r = service.http.post(READ, json={"tokens": [ru, us], "purpose": "view"}, headers=us_app)
    assert r.status_code == 200, r.text
    refused, read = r.json()["records"]
    assert (refused["status"], refused["code"]) == (403, "policy_refused")
    assert "ru.transfer.ban" in [rule["id"] for rule in refused["decision"]["rules"]]
    assert "request" not in refused["decision"]  # names the subject's countries
    assert read["fields"] == {"full_name": "Jane Roe"}
    for value in ANNA.values():
        assert value not in r.text
    # Audited at the record's home site, as the single read's refusal is.
    site, record_id = service.vault.tokens.read(ru)
    assert any(record_id in p for p in service.refusals(site))


def test_a_client_that_may_not_read_is_refused_as_a_whole(service: Service) -> None:
    us = put_us(service, "Jane Roe")
    _, writer = service.client("writer", "records:write", "collection:profiles", "purpose:*")
    _, elsewhere = service.client("de-app", *RECORDS, "site:de", "site:ru")
    before = entries(service)
    refusals = len(service.refusals())
    for headers, as_site in ((writer, None), (elsewhere, "us")):
        params = {"as_site": as_site} if as_site else {}
        r = service.http.post(
            READ, json={"tokens": [us, us], "purpose": "view"}, params=params, headers=headers
        )
        assert (r.status_code, r.json()["code"]) == (403, "forbidden"), r.text
        assert "Jane" not in r.text
    # One refusal each, audited where the request arrived; nothing read.
    assert len(service.refusals()) == refusals + 2
    assert not [x for x in reads_since(service, before) if x[1] == "read"]


def test_a_record_outside_the_client_s_collections_is_listed_as_not_found(
    service: Service,
) -> None:
    us = put_us(service, "Jane Roe")
    _, other = service.client("other", "records:read", "collection:notes", "purpose:*", "site:us")
    refusals = len(service.refusals())
    r = service.http.post(READ, json={"tokens": [us, UNKNOWN], "purpose": "view"}, headers=other)
    assert r.status_code == 200, r.text
    hidden, missing = r.json()["records"]
    # The same answer as for a token of no record: nothing says the record exists.
    assert (hidden["status"], hidden["code"]) == (404, "not_found")
    assert missing["status"] == 404
    assert "profiles" not in r.text
    assert "Jane" not in r.text
    audited = service.refusals()[refusals:]
    assert len(audited) == 1
    assert '"missing_scope":"collection:profiles"' in audited[0]


def test_the_document_bounds_the_batch(service: Service) -> None:
    us = put_us(service, "Jane Roe")
    _, us_app = service.client("us-app", *RECORDS, "site:us")
    for tokens in ([], [us] * 1001, ["not-a-token"]):
        r = service.http.post(READ, json={"tokens": tokens, "purpose": "view"}, headers=us_app)
        assert r.status_code == 422, (len(tokens), r.text)
    r = service.http.post(READ, json={"tokens": [us]}, headers=us_app)
    assert r.status_code == 422
    spec = service.http.get("/openapi.json").json()
    op = spec["paths"][READ]["post"]
    assert op["security"] == [{"bearer": []}, {"oauth2": []}]
    body = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    items = spec["components"]["schemas"][body]["properties"]["tokens"]["items"]
    assert items["pattern"].startswith("^dom1_")
