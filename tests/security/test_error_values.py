"""Finding 12: errors echoed evidence values (``citizenship 'Q1'``), and 503 answers named a
site's database host, port and name.

The attack puts one marker value in every place a request can carry one (evidence, field
names and values, path segments, query parameters, filter keys and operators, option
names, filings, facts, headers) and sends each to a real service. Every answer is refused,
and the marker appears in no answer, no log line and no audit entry. Then a site whose
database does not answer: the 503 names the site, and only the service's log says where
its database is."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .conftest import Running, free_port

MARK = "qq7secret"
PUT = "/v1/collections/profiles/records"
GOOD = {"subject": {"citizenship": "RU"}, "fields": {"full_name": "A"}, "purpose": "signup"}
RECORDS = "/v2/storage/records/us"


def put(**change: Any) -> tuple[str, str, dict[str, Any]]:
    return ("POST", PUT, {**GOOD, **change})


def evidence(**subject: Any) -> tuple[str, str, dict[str, Any]]:
    return put(subject=subject)


EXPLAIN = {
    "subject": {"citizenship": "RU"}, "categories": ["user.name"], "operation": "store",
    "site_country": "RU",
}  # fmt: skip

# (method, path, JSON body or None)
ATTACKS: list[tuple[str, str, Any]] = [
    evidence(citizenship="Q1"),
    evidence(citizenship=MARK),
    evidence(citizenship=["RU", MARK]),
    evidence(residence=MARK),
    evidence(located_at_collection=MARK),
    evidence(phone=f"+7{MARK}"),
    evidence(phone=MARK),
    evidence(ip=MARK),
    evidence(document=f"{MARK}:123"),
    evidence(document=f"ru_inn:{MARK}"),
    evidence(document=f"ru_passport:{MARK}"),
    evidence(**{MARK: "RU"}),
    put(fields={MARK: "x"}),
    put(fields={"full_name": [MARK]}),
    put(fields={"full_name": MARK * 100}),
    put(fields={"full_name": MARK + "\x00"}),
    put(**{MARK: 1}),
    put(purpose=MARK.upper()),
    ("POST", f"/v1/collections/{MARK}/records", GOOD),
    ("GET", f"/v1/records/{MARK}?purpose=view", None),
    ("GET", f"/v1/records/dom1_{MARK}?purpose=view", None),
    ("GET", f"/v1/records/dom1_{MARK}?purpose=view&as_site={MARK}", None),
    ("POST", "/v1/collections/profiles/find", {"where": {MARK: "x"}, "purpose": "find"}),
    (
        "POST",
        "/v1/collections/profiles/find",
        {"where": {"email": "x"}, "purpose": "f", "as_site": MARK},
    ),
    ("POST", "/v1/filings", {"name": MARK, "date": "2025-01-01"}),
    ("POST", "/v1/filings", {"name": f"ru.transfer_ban.{MARK}", "date": "2025-01-01"}),
    ("DELETE", f"/v1/filings/{MARK}", None),
    ("GET", f"/v1/transfers?to={MARK}", None),
    ("GET", f"/v1/parity?site={MARK}", None),
    ("GET", f"/v1/audit/verify?site={MARK}", None),
    ("POST", "/v1/policy/explain", {**EXPLAIN, "subject": {"citizenship": MARK}}),
    ("POST", "/v1/policy/explain", {**EXPLAIN, "categories": [MARK]}),
    ("POST", "/v1/policy/explain", {**EXPLAIN, "operation": MARK}),
    ("POST", "/v1/policy/explain", {**EXPLAIN, "site_country": MARK}),
    ("POST", "/v1/policy/explain", {**EXPLAIN, "to_country": MARK, "operation": "transfer"}),
    ("POST", "/v1/policy/explain", {**EXPLAIN, "filings": {MARK: "2025-01-01"}}),
    ("POST", "/v1/policy/explain", {**EXPLAIN, "bases": [MARK]}),
    ("POST", "/v1/policy/explain", {**EXPLAIN, "facts": {MARK: 1}}),
    ("POST", "/v1/policy/explain", {**EXPLAIN, "facts": {"replica": MARK}}),
    ("POST", "/v1/policy/explain", {**EXPLAIN, "facts": {"ytd_export_subjects": MARK}}),
    ("POST", "/v1/policy/explain", {**EXPLAIN, "date": "2025-02-30"}),
    ("POST", RECORDS, {"record_key": "k", MARK: "x"}),
    ("POST", RECORDS, {"record_key": "k", "key1": {MARK: 1}}),
    ("POST", RECORDS, {"record_key": "k", "expires_at": MARK}),
    ("POST", RECORDS + "/batchWrite", {"records": [{"record_key": "k", MARK: 1}]}),
    ("POST", RECORDS + "/find", {"filter": {MARK: 1}}),
    ("POST", RECORDS + "/find", {"filter": {"key1": {f"${MARK}": 1}}}),
    ("POST", RECORDS + "/find", {"filter": {"$or": [{MARK: "a"}, {"key1": "b"}]}}),
    ("POST", RECORDS + "/find", {"filter": {"created_at": MARK}}),
    ("POST", RECORDS + "/find", {"filter": {}, "options": {MARK: 1}}),
    ("POST", RECORDS + "/find", {"filter": {}, "options": {"sort": [{MARK: "asc"}]}}),
    ("POST", RECORDS + "/find", {"filter": {}, "options": {"sort": [{"key1": MARK}]}}),
    ("POST", RECORDS + "/find", {"filter": {}, MARK: 1}),
    ("POST", RECORDS + "/batchDelete", {"filter": {MARK: ["k"]}}),
    ("PATCH", RECORDS + "/k/attachments/f/meta", {MARK: "x"}),
]


def test_no_error_repeats_a_value_the_request_carried(serve: Callable[..., Running]) -> None:
    served = serve()
    answers = []
    with served.http() as http:
        assert http.post(RECORDS, json={"record_key": "k"}, headers=served.admin).status_code == 201
        for method, path, body in ATTACKS:
            r = http.request(method, path, json=body, headers=served.admin)
            answers.append((method, path, r))
        token = http.post(
            "/oauth2/token", data={"grant_type": "client_credentials", "scope": MARK},
            auth=("dc_x", "y"),
        )  # fmt: skip
        answers.append(("POST", "/oauth2/token", token))
        env = http.get(RECORDS + "/k", headers={**served.admin, "x-env-id": MARK})
        answers.append(("GET", "x-env-id", env))
        bearer = http.get("/v1/sites", headers={"Authorization": f"Bearer {MARK}"})
        answers.append(("GET", "bearer", bearer))
    served.stop()
    for method, path, r in answers:
        assert 400 <= r.status_code < 500, (method, path, r.status_code, r.text)
        # Problem documents, except the token endpoint's OAuth2 errors (RFC 6749 5.2).
        oauth = path == "/oauth2/token"
        assert r.headers["content-type"] == (
            "application/json" if oauth else "application/problem+json"
        )
        text = r.text.lower()
        assert MARK not in text, (method, path, r.text)
        assert "q1" not in text, (method, path, r.text)
    assert MARK not in served.log_text()
    for site in ("ru", "de", "us"):
        assert MARK not in repr(served.audit(site)), site


def test_an_unavailable_site_is_named_and_its_database_is_not(
    serve: Callable[..., Running],
) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://postgres@127.0.0.1:{port}/{MARK}_db"
    served = serve(
        edit=lambda text: text.replace("backend: sqlite:domicile-data/de.sqlite", f"backend: {url}")
    )
    german = {**GOOD, "subject": {"citizenship": "DE", "residence": "DE"}}
    with served.http() as http:
        r = http.post(PUT, json=german, headers=served.admin)
        sites = http.get("/v1/sites", headers=served.admin)
        ready = http.get("/readyz")
    assert r.status_code == 503, r.text
    problem = r.json()
    assert problem["code"] == "site_unavailable"
    assert problem["site"] == "de"
    assert problem["detail"] == "site 'de' is unavailable"
    de = next(s for s in sites.json() if s["id"] == "de")
    assert de["backend"] == "postgresql"
    assert de["healthy"] is False
    assert ready.status_code == 503
    for answer in (r, sites, ready):
        for secret in (MARK, str(port), "127.0.0.1", "postgres@"):
            assert secret not in answer.text, (secret, answer.text)
    # The operator's log says what is wrong, and where.
    served.stop()
    down = [e for e in served.log_events() if e["event"] == "site unavailable"]
    assert down
    assert down[0]["site"] == "de"
    assert str(port) in down[0]["reason"]
