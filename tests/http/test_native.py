"""The native API: authentication, scopes (a matrix of them), problem documents, operations."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .conftest import Service

ANNA = {"full_name": "Anna Sergeevna Volkova", "email": "anna.volkova@example.ru", "city": "Kazan"}
PUT = {"subject": {"citizenship": "RU"}, "fields": ANNA, "purpose": "signup"}
RECORDS = ["records:write", "records:read", "collection:profiles", "purpose:*"]


def put_ru(service: Service) -> str:
    _, admin = service.client("ops", "admin")
    r = service.http.post("/v1/collections/profiles/records", json=PUT, headers=admin)
    assert r.status_code == 201, r.text
    assert r.json()["site"] == "ru"
    token: str = r.json()["token"]
    return token


def test_client_credentials_grant_and_bearer_token(service: Service) -> None:
    client, secret = service.clients.add("us-app", [*RECORDS, "site:us"])
    r = service.http.post(
        "/oauth2/token", data={"grant_type": "client_credentials", "scope": "default"},
        auth=(client.id, secret),
    )  # fmt: skip
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] > 0
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    assert (
        service.http.post("/v1/collections/profiles/records", json=PUT, headers=headers).status_code
        == 201
    )


@pytest.mark.parametrize(
    ("auth", "data"),
    [
        (("dc_nobody", "x"), {"grant_type": "client_credentials"}),
        (None, {"grant_type": "client_credentials", "client_id": "dc_x", "client_secret": "y"}),
        ("wrong-secret", {"grant_type": "client_credentials"}),
        ("right", {"grant_type": "client_credentials", "scope": "other-env"}),
        ("right", {"grant_type": "password"}),
    ],
)
def test_bad_credentials_are_refused_and_audited(
    service: Service, auth: Any, data: dict[str, str]
) -> None:
    client, secret = service.clients.add("app", RECORDS)
    if auth == "right":
        auth = (client.id, secret)
    elif auth == "wrong-secret":
        auth = (client.id, secret + "x")
    r = service.http.post("/oauth2/token", data=data, auth=auth)
    # OAuth2 errors (RFC 6749 5.2): 401 for the client's credentials, 400 for the request.
    expected = {"other-env": "invalid_scope", "password": "unsupported_grant_type"}
    error = expected.get(data.get("scope", ""), expected.get(data["grant_type"], "invalid_client"))
    assert (r.json()["error"], r.status_code) == (error, 401 if error == "invalid_client" else 400)
    assert r.headers["content-type"] == "application/json"
    if r.status_code == 401:
        assert r.headers["www-authenticate"].startswith("Basic")
    assert secret not in r.text
    assert len(service.refusals()) == 1


@pytest.mark.parametrize("header", [None, "Bearer nope", "Bearer dat1.e30.forged", "Basic abc"])
def test_requests_without_valid_credentials_get_401(service: Service, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    r = service.http.get("/v1/sites", headers=headers)
    assert r.status_code == 401
    assert r.json()["code"] == "unauthorized"
    assert len(service.refusals()) == 1


# (scopes, method, path builder, body, expected status)
MATRIX: list[tuple[list[str], str, str, dict[str, Any] | None, int]] = [
    # writing
    ([*RECORDS, "site:us"], "POST", "/v1/collections/profiles/records", PUT, 201),
    (
        ["records:read", "collection:profiles", "purpose:*", "site:us"],
        "POST",
        "/v1/collections/profiles/records",
        PUT,
        403,
    ),
    (
        ["records:write", "collection:orders", "purpose:*"],
        "POST",
        "/v1/collections/profiles/records",
        PUT,
        403,
    ),
    (
        ["records:write", "collection:profiles", "purpose:marketing"],
        "POST",
        "/v1/collections/profiles/records",
        PUT,
        403,
    ),
    (
        ["records:write", "collection:*", "purpose:signup", "site:de"],
        "POST",
        "/v1/collections/profiles/records",
        PUT,
        201,
    ),
    # no site to act from: not even a write
    (
        ["records:write", "collection:*", "purpose:signup"],
        "POST",
        "/v1/collections/profiles/records",
        PUT,
        403,
    ),
    # reading from the client's own site, or one it may not act from
    ([*RECORDS, "site:ru"], "GET", "/v1/records/{token}?purpose=view", None, 200),
    ([*RECORDS, "site:ru"], "GET", "/v1/records/{token}?purpose=view&as_site=us", None, 403),
    # several sites and none named: it acts from the service's local site (us), if it may
    ([*RECORDS, "site:us", "site:de"], "GET", "/v1/records/{token}?purpose=view", None, 200),
    ([*RECORDS, "site:ru", "site:de"], "GET", "/v1/records/{token}?purpose=view", None, 403),
    (
        ["records:write", "collection:profiles", "purpose:*", "site:ru"],
        "GET",
        "/v1/records/{token}?purpose=view",
        None,
        403,
    ),
    (
        [*RECORDS[:-1], "purpose:signup", "site:ru"],
        "GET",
        "/v1/records/{token}?purpose=view",
        None,
        403,
    ),
    # the ledger and other operations
    (["audit:read"], "GET", "/v1/audit/verify", None, 200),
    ([*RECORDS, "site:us", "transfers:read"], "GET", "/v1/audit/verify", None, 403),
    (["transfers:read"], "GET", "/v1/transfers", None, 200),
    (["audit:read"], "GET", "/v1/transfers", None, 403),
    (
        ["filings:write"],
        "POST",
        "/v1/filings",
        {"name": "ru.art12_notice", "date": "2025-03-03"},
        201,
    ),
    (
        ["filings:read"],
        "POST",
        "/v1/filings",
        {"name": "ru.art12_notice", "date": "2025-03-03"},
        403,
    ),
    (
        ["records:erase", "purpose:*", "site:us", "collection:profiles"],
        "POST",
        "/v1/subjects/erase",
        {"token": "{token}"},
        200,
    ),
    (["records:erase", "purpose:*"], "POST", "/v1/subjects/erase", {"token": "{token}"}, 403),
    (["records:delete", "purpose:*"], "POST", "/v1/subjects/erase", {"token": "{token}"}, 403),
    (["sites:read"], "GET", "/v1/sites", None, 200),
    (["parity:read"], "GET", "/v1/sites", None, 403),
    (["admin"], "GET", "/v1/records/{token}?purpose=view&as_site=ru", None, 200),
]


@pytest.mark.parametrize(
    ("scopes", "method", "path", "body", "status"), MATRIX,
    ids=[f"{m} {p.split('?')[0]} {' '.join(s)} -> {st}" for s, m, p, _, st in MATRIX],
)  # fmt: skip
def test_scope_matrix_and_every_refusal_audited(
    service: Service,
    scopes: list[str],
    method: str,
    path: str,
    body: dict[str, Any] | None,
    status: int,
) -> None:
    token = put_ru(service)
    _, headers = service.client("matrix", *scopes)
    before = len(service.refusals())
    url = path.replace("{token}", token)
    payload = json.loads(json.dumps(body).replace("{token}", token)) if body else None
    r = service.http.request(method, url, json=payload, headers=headers)
    assert r.status_code == status, r.text
    refusals = service.refusals()
    if status == 403:
        assert r.json()["code"] == "forbidden"
        assert len(refusals) == before + 1
        assert '"missing_scope"' in refusals[-1] or '"reason":"no site"' in refusals[-1]
    else:
        assert len(refusals) == before


def test_a_us_client_reads_a_russian_subject_only_through_a_permitted_transfer(
    service: Service,
) -> None:
    token = put_ru(service)
    _, us = service.client("us-app", *RECORDS, "site:us")
    # No Art. 12 notice: only the masked forms Russia's pack permits cross.
    r = service.http.get(f"/v1/records/{token}", params={"purpose": "view"}, headers=us)
    assert r.status_code == 200
    assert r.json()["masked"] is True
    assert r.json()["fields"] == {"full_name": "A. S. V.", "email": "*@example.ru"}
    # Notice filed long ago: the full value, logged as a transfer to the US.
    service.vault.add_filing("ru.art12_notice", "2025-01-01")
    r = service.http.get(f"/v1/records/{token}", params={"purpose": "view"}, headers=us)
    assert r.json()["fields"] == ANNA
    assert (r.json()["transfer"], r.json()["read_at"]) == (True, "ru")
    # A ban: refused, with the rule and no personal data in the problem document.
    service.vault.add_filing("ru.transfer_ban.US", "2025-02-01")
    r = service.http.get(f"/v1/records/{token}", params={"purpose": "view"}, headers=us)
    assert r.status_code == 403
    problem = r.json()
    assert problem["code"] == "policy_refused"
    assert "ru.transfer.ban" in [rule["id"] for rule in problem["decision"]["rules"]]
    assert "citizenship" not in r.text
    for value in ANNA.values():
        assert value not in r.text
    _, ops = service.client("ops", "metrics:read")
    metrics = service.http.get("/metrics", headers=ops).text
    # The full read was a transfer; the masked one before it was not.
    assert 'domicile_transfers_total{destination="US"} 1.0' in metrics
    assert 'domicile_decisions_total{outcome="deny"}' in metrics


def test_a_record_whose_subject_key_is_gone_answers_410_not_500(service: Service) -> None:
    token = put_ru(service)
    _, admin = service.client("ops", "admin")
    site, record_id = service.vault.tokens.read(token)
    subject = service.vault.store(site).get(record_id).subject_id  # type: ignore[union-attr]
    service.vault.keystore(site).delete(subject)  # the key row alone, not by an erasure
    service.vault.close(checkpoint=False)  # forget the cached data key
    r = service.http.get(
        f"/v1/records/{token}", params={"purpose": "view", "as_site": "ru"}, headers=admin
    )
    assert (r.status_code, r.json()["code"]) == (410, "key_destroyed")


def test_problem_documents_name_the_field_not_the_value(service: Service) -> None:
    _, admin = service.client("ops", "admin")
    bad = {**PUT, "fields": {"full_name": "Secret Name " * 30}}
    r = service.http.post("/v1/collections/profiles/records", json=bad, headers=admin)
    assert r.status_code == 400
    assert "full_name" in r.json()["detail"]
    assert "Secret Name" not in r.text
    r = service.http.post(
        "/v1/collections/profiles/records",
        json={**PUT, "fields": {"full_name": "A"}, "extra": 1},
        headers=admin,
    )
    assert r.status_code == 422
    assert r.json()["code"] == "invalid_request"
    assert "Traceback" not in r.text
    r = service.http.post(
        "/v1/collections/profiles/records", json={**PUT, "fields": {"shoe": "x"}}, headers=admin
    )
    assert (r.status_code, r.json()["code"]) == (400, "invalid_field")  # the vault's own words
    r = service.http.get("/v1/records/dom1_not-a-token", params={"purpose": "view"}, headers=admin)
    assert r.status_code == 422  # not even the form of a token
    forged = "dom1_" + "A" * 60
    r = service.http.get(f"/v1/records/{forged}", params={"purpose": "view"}, headers=admin)
    assert r.status_code == 404  # a token that is not one of ours names no record
    assert r.json()["code"] == "invalid_token"


def test_every_sdk_operation_over_http(service: Service) -> None:
    _, admin = service.client("ops", "admin")
    http = service.http
    batch = {
        "records": [
            {
                "subject": {"citizenship": "US"},
                "fields": {"full_name": f"P{i}", "email": f"p{i}@x.org"},
            }
            for i in range(3)
        ],
        "purpose": "import",
    }
    r = http.post("/v1/collections/profiles/records/batch", json=batch, headers=admin)
    assert r.status_code == 201
    tokens = [x["token"] for x in r.json()["records"]]
    r = http.patch(
        f"/v1/records/{tokens[0]}",
        json={"fields": {"city": "Boston"}, "purpose": "edit"},
        headers=admin,
    )
    assert r.json()["version"] == 2
    r = http.post(
        "/v1/collections/profiles/find",
        json={"where": {"email": "P1@X.ORG"}, "purpose": "lookup"},
        headers=admin,
    )
    assert [x["fields"]["full_name"] for x in r.json()["records"]] == ["P1"]
    r = http.get("/v1/subjects/export", params={"token": tokens[0]}, headers=admin)
    assert [x["fields"]["city"] for x in r.json()["records"]] == ["Boston"]
    assert http.delete(
        f"/v1/records/{tokens[2]}", params={"purpose": "cleanup"}, headers=admin
    ).json()["deleted"]
    assert http.post("/v1/subjects/erase", json={"token": tokens[1]}, headers=admin).json()[
        "key_destroyed"
    ]
    assert (
        http.get(f"/v1/records/{tokens[1]}", params={"purpose": "view"}, headers=admin).status_code
        == 404
    )
    assert http.get("/v1/audit/verify", headers=admin).json()["ok"] is True
    assert http.get("/v1/parity", headers=admin).json()["ok"] is True
    assert http.get("/v1/transfers", headers=admin).json()["total"] == 0
    assert {s["id"] for s in http.get("/v1/sites", headers=admin).json()} == {"ru", "de", "us"}
    explain = {
        "subject": {"citizenship": "RU"},
        "categories": ["user.name"],
        "operation": "store",
        "site_country": "DE",
        "date": "2025-09-01",
    }
    r = http.post("/v1/policy/explain", json=explain, headers=admin)
    assert r.json()["decision"] == "deny"
    assert (
        http.post(
            "/v1/filings", json={"name": "eu.scc.us", "date": "2025-01-01"}, headers=admin
        ).json()["name"]
        == "eu.scc.US"
    )
    assert "eu.scc.US" in [f["name"] for f in http.get("/v1/filings", headers=admin).json()]
    assert http.delete("/v1/filings/eu.scc.US", headers=admin).status_code == 200


def test_health_readiness_and_openapi(service: Service) -> None:
    assert service.http.get("/healthz").json() == {"status": "ok"}
    assert service.http.get("/readyz").json()["ready"] is True
    ru = service.vault.config.data_dir / "ru.sqlite"
    service.vault.close()
    for f in ru.parent.glob("ru.sqlite*"):
        f.unlink()
    ru.mkdir()
    r = service.http.get("/readyz")
    assert r.status_code == 503
    assert r.json()["sites"]["ru"] is False
    spec = service.http.get("/openapi.json").json()
    assert "/v1/collections/{collection}/records" in spec["paths"]
    assert "/oauth2/token" in spec["paths"]


def test_null_clears_a_field_and_an_email_field_takes_only_addresses(service: Service) -> None:
    _, admin = service.client("ops", "admin")
    token = put_ru(service)
    r = service.http.patch(
        f"/v1/records/{token}", json={"fields": {"city": None}, "purpose": "edit"}, headers=admin
    )
    assert r.status_code == 200, r.text
    r = service.http.get(f"/v1/records/{token}?purpose=view&as_site=ru", headers=admin)
    assert set(r.json()["fields"]) == {"full_name", "email"}
    r = service.http.patch(  # a required field cannot be cleared, by the document itself
        f"/v1/records/{token}", json={"fields": {"full_name": None}, "purpose": "edit"},
        headers=admin,
    )  # fmt: skip
    assert r.status_code in (400, 422)
    assert "Anna" not in r.text
    bad = {**PUT, "fields": {**ANNA, "email": "anna.volkova.example.ru"}}
    r = service.http.post("/v1/collections/profiles/records", json=bad, headers=admin)
    assert r.status_code in (400, 422)
    assert "volkova" not in r.text
    email = service.http.get("/openapi.json").json()["components"]["schemas"]["PutBody"]
    assert "@" in email["properties"]["fields"]["properties"]["email"]["pattern"]
