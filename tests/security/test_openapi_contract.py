"""Finding 13: the OpenAPI document did not say what the server enforces, and the server
did not refuse what the document refuses: a batchDelete whose filter was a string deleted,
and a find with no body returned every record.

The document must declare how to authenticate and on which operations, require
``x-env-id`` on storage calls, and give the vocabulary (countries, tokens, filing names,
dates) as patterns or enums; bodies are required where the server needs them. Then the
attacks: requests the document refuses, sent to the server, which must refuse them too and
do nothing. (``tests/http/test_schemathesis.py`` fuzzes the whole document both ways.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from domicile.config import ServiceSettings
from domicile.deploy.starter import init
from domicile.http.app import create_app
from domicile.vault import Domicile

STORAGE = "/v2/storage/records"


@pytest.fixture
def http(tmp_path: Path) -> TestClient:
    # Every operation is tried without credentials, from one address: no rate limit here.
    settings = ServiceSettings(auth_failures_per_source="100000/minute")
    return TestClient(create_app(Domicile(init(tmp_path)), settings=settings))


@pytest.fixture
def admin(http: TestClient) -> dict[str, str]:
    app: Any = http.app
    _, key = app.state.service.clients.add("ops", ["admin"], api_key=True)
    return {"Authorization": f"Bearer {key}", "x-env-id": "default"}


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m.upper(), p, op) for p, ops in spec["paths"].items() for m, op in ops.items()]


def test_the_document_declares_how_to_authenticate_and_where(http: TestClient) -> None:
    with http:
        spec = http.get("/openapi.json").json()
        schemes = spec["components"]["securitySchemes"]
        assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
        flows = schemes["oauth2"]["flows"]
        assert flows["clientCredentials"]["tokenUrl"] == "/oauth2/token"
        public = {"/healthz", "/readyz", "/healthcheck", "/oauth2/token"}
        for method, path, op in operations(spec):
            if path in public:
                assert "security" not in op, (method, path)
                continue
            assert op["security"] == [{"bearer": []}, {"oauth2": []}], (method, path)
            # ...and the server asks for them, before it reads anything.
            url = re.sub(r"\{[a-z_]+\}", "x", path).replace("/x/", "/ru/", 1)
            r = http.request(method, url, json={})
            assert r.status_code == 401, (method, path, r.status_code)


def test_storage_calls_require_this_environment(http: TestClient) -> None:
    with http:
        spec = http.get("/openapi.json").json()
        storage = [(m, p, op) for m, p, op in operations(spec) if p.startswith(STORAGE)]
        assert len(storage) == 12
        for method, path, op in storage:
            env = next(p for p in op["parameters"] if p["name"] == "x-env-id")
            assert env["required"] is True, (method, path)
            assert env["schema"]["enum"] == ["default"]
            country = next(p for p in op["parameters"] if p["name"] == "country")
            assert country["schema"]["pattern"] == "^[a-z]{2}$"


def _schema(spec: dict[str, Any], ref_or_schema: dict[str, Any]) -> dict[str, Any]:
    ref = ref_or_schema.get("$ref")
    if ref:
        out: dict[str, Any] = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
        return out
    return ref_or_schema


def test_the_vocabulary_is_in_the_document(http: TestClient) -> None:
    with http:
        spec = http.get("/openapi.json").json()
    params = {
        (p["name"], path): p["schema"]
        for _, path, op in operations(spec)
        for p in op.get("parameters", [])
    }
    token = params[("token", "/v1/records/{token}")]
    assert token["pattern"].startswith("^dom1_")
    filing = params[("name", "/v1/filings/{name}")]["pattern"]
    assert re.match(filing, "ru.art12_notice")
    assert re.match(filing, "ru.transfer_ban.US")
    assert not re.match(filing, "ru.transfer_ban.XX")
    assert not re.match(filing, "ivan.petrov@mail.ru")
    assert params[("since", "/v1/transfers")]["format"] == "date"
    assert "RU" in params[("to", "/v1/transfers")]["enum"]
    assert params[("collection", "/v1/collections/{collection}/records")]["enum"] == ["profiles"]
    schemas = spec["components"]["schemas"]
    explain = schemas["ExplainBody"]["properties"]
    assert "RU" in explain["site_country"]["enum"]
    assert "store" in explain["operation"]["enum"]
    evidence = schemas["PutBody"]["properties"]["subject"]
    assert evidence["additionalProperties"] is False
    assert re.match(evidence["properties"]["residence"]["pattern"], "RU")
    assert not re.match(evidence["properties"]["residence"]["pattern"], "Q1")
    fields = schemas["PutBody"]["properties"]["fields"]
    assert fields["required"] == ["full_name"]
    assert fields["properties"]["full_name"]["maxLength"] == 200
    assert schemas["FilingBody"]["properties"]["date"]["format"] == "date"
    for method, path, op in operations(spec):
        if method in ("POST", "PUT", "PATCH") and "requestBody" in op:
            assert op["requestBody"]["required"] is True, (method, path)
    find = spec["paths"][f"{STORAGE}/{{country}}/find"]["post"]["requestBody"]["content"]
    flt = find["application/json"]["schema"]["properties"]["filter"]["anyOf"][0]
    assert flt["additionalProperties"] is False


def write(http: TestClient, admin: dict[str, str], key: str) -> None:
    r = http.post(f"{STORAGE}/us", json={"record_key": key, "body": "b"}, headers=admin)
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(
    "body",
    [
        {"filter": {"record_key": "k"}},  # a string, not a list: deleted it, once
        {"filter": "k"},
        {"filter": {"record_key": ["k"], "key1": ["x"]}},
        {"filter": {"record_key": []}},
        {"record_key": ["k"]},
        None,
    ],
)
def test_a_batch_delete_the_document_refuses_deletes_nothing(
    http: TestClient, admin: dict[str, str], body: Any
) -> None:
    with http:
        write(http, admin, "k")
        r = http.post(f"{STORAGE}/us/batchDelete", json=body, headers=admin)
        assert 400 <= r.status_code < 500, r.text
        assert http.get(f"{STORAGE}/us/k", headers=admin).status_code == 200


@pytest.mark.parametrize(
    "kwargs", [{}, {"content": b""}, {"json": None}, {"json": []}, {"json": {"filter": "k"}}]
)
def test_a_find_the_document_refuses_returns_nothing(
    http: TestClient, admin: dict[str, str], kwargs: dict[str, Any]
) -> None:
    with http:
        write(http, admin, "k")
        r = http.post(f"{STORAGE}/us/find", headers=admin, **kwargs)
        assert 400 <= r.status_code < 500, r.text
        assert "data" not in r.json()
        # ...while a find with an empty filter is a find of everything, as documented.
        r = http.post(f"{STORAGE}/us/find", json={"filter": {}}, headers=admin)
        assert [x["record_key"] for x in r.json()["data"]] == ["k"]


PUT = "/v1/collections/profiles/records"
ANNA = {"full_name": "A"}
REFUSED: list[tuple[str, str, Any]] = [
    ("POST", f"{STORAGE}/us", {"record_key": "k", "expires_at": "2030-02-30T00:00:00Z"}),
    ("POST", f"{STORAGE}/us", {"record_key": "k", "version": "1"}),
    ("POST", f"{STORAGE}/us/find", {"filter": {"created_at": {"$gt": "tomorrow"}}}),
    ("POST", f"{STORAGE}/us/find", {"filter": {}, "options": {"limit": 101}}),
    ("POST", f"{STORAGE}/us/find", {"filter": {"key1": {"$gt": "a"}}}),
    ("PATCH", f"{STORAGE}/us/k/attachments/f/meta", {"filename": None}),
    ("POST", PUT, {"subject": {"citizenship": "Q1"}, "fields": ANNA, "purpose": "p"}),
    ("POST", PUT, {"subject": {}, "fields": {"full_name": 5}, "purpose": "p"}),
    ("POST", "/v1/collections/nope/records", {"subject": {}, "fields": ANNA, "purpose": "p"}),
    ("POST", "/v1/filings", {"name": "ru.art12_notice", "date": "2025-02-30"}),
    (
        "POST",
        "/v1/policy/explain",
        {"subject": {}, "categories": ["user.name"], "operation": "transfer", "site_country": "RU"},
    ),
    ("GET", "/v1/audit/verify?site=", None),
    ("GET", "/v1/transfers?to=XX", None),
    ("GET", "/v1/records/dom1_x?purpose=p&as_site=mars", None),
]


@pytest.mark.parametrize(("method", "path", "body"), REFUSED)
def test_what_the_document_refuses_the_server_refuses(
    http: TestClient, admin: dict[str, str], method: str, path: str, body: Any
) -> None:
    with http:
        write(http, admin, "k")
        r = http.request(method, path, json=body, headers=admin)
        assert 400 <= r.status_code < 500, (r.status_code, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        app: Any = http.app
        assert sum(s.records for s in app.state.service.vault.sites()) == 1
