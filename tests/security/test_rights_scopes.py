"""Subjects' requests behind the client's own scopes (review findings 2 and 3).

A ``rights:write`` client is a client like any other: it acts from its site, within its
collections and purposes, and a read it makes for an access request is decided as a read
from its site (masked, a transfer or refused, as ``GET /v1/records`` would be). A request
concerns the sites that hold its subject (every site, for the search that opens it): a
client limited to other sites may neither open it, nor see it, nor act on it.
"""

from __future__ import annotations

import json

from domicile.rights import open_request
from tests.http.conftest import Service, service  # noqa: F401  (the fixture)

ANNA = {"full_name": "Anna Volkova", "email": "anna@example.ru", "city": "Omsk"}
ALL_SITES = ("site:ru", "site:de", "site:us")
OPEN = {
    "kind": "access",
    "identity": {"email": "anna@example.ru"},
    "checked_by": "dpo.kim",
    "verified_how": "email_confirmation",
}


def _anna(service: Service) -> str:  # noqa: F811
    return service.vault.put(
        "profiles", subject={"citizenship": "RU"}, fields=ANNA, purpose="seed"
    ).token


def _request(service: Service, kind: str = "access") -> str:  # noqa: F811
    return str(
        open_request(
            service.vault, kind, {"email": ANNA["email"]}, checked_by="dpo", verified_how="other"
        )["id"]
    )


def _entries(service: Service, site: str) -> list[dict[str, object]]:  # noqa: F811
    return [json.loads(r.payload) for r in service.vault.store(site).audit()]


def _no_plaintext(text: str) -> None:
    for value in ANNA.values():
        assert value not in text


def test_a_client_of_one_site_cannot_read_a_subject_of_another(service: Service) -> None:  # noqa: F811
    _anna(service)
    rid = _request(service)
    _, us = service.client("us-office", "rights:write", "site:us")
    r = service.http.post(f"/v1/rights/{rid}/fulfil", json={}, headers=us)
    assert r.status_code in (403, 404), r.text
    _no_plaintext(r.text)
    assert not [e for e in _entries(service, "ru") if e["action"] in ("read", "transfer")]


def test_a_client_of_one_site_cannot_erase_a_subject_of_another(service: Service) -> None:  # noqa: F811
    token = _anna(service)
    rid = _request(service, "erasure")
    _, us = service.client("us-office", "rights:write", "site:us", "collection:*", "purpose:*")
    r = service.http.post(f"/v1/rights/{rid}/fulfil", json={}, headers=us)
    assert r.status_code in (403, 404), r.text
    assert service.vault.get(token, purpose="check", as_site="ru").fields["email"] == ANNA["email"]


def test_the_read_is_decided_as_from_the_clients_site(service: Service) -> None:  # noqa: F811
    """Every site's scope, acting from the US: the Russian record goes out only in the
    form a read from the US may have (masked here), audited as that read."""
    _anna(service)
    rid = _request(service)
    client, office = service.client("dpo", "rights:write", *ALL_SITES, "collection:*", "purpose:*")
    r = service.http.post(f"/v1/rights/{rid}/fulfil", json={}, headers=office)
    assert r.status_code == 200, r.text
    [record] = r.json()["result"]["records"]
    assert record["masked"] is True
    _no_plaintext(r.text)
    [read] = [
        e for e in _entries(service, "ru") if e["action"] in ("read", "transfer", "disclose_masked")
    ]
    assert (read["action"], read["requester"], read["client"]) == (
        "disclose_masked",
        "us",
        client.id,
    )
    # Acting from the subject's own site, the same client reads it there, in full.
    rid = _request(service)
    r = service.http.post(
        f"/v1/rights/{rid}/fulfil", json={}, headers=office, params={"as_site": "ru"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["result"]["records"][0]["fields"]["email"] == ANNA["email"]


def test_the_clients_collections_and_purposes_bound_the_request(service: Service) -> None:  # noqa: F811
    token = _anna(service)
    for scopes in (("collection:notes", "purpose:*"), ("collection:*", "purpose:marketing")):
        rid = _request(service, "erasure")
        _, c = service.client("dpo", "rights:write", *ALL_SITES, *scopes)
        r = service.http.post(f"/v1/rights/{rid}/fulfil", json={}, params={"as_site": "ru"},
                              headers=c)  # fmt: skip
        assert r.status_code == 403, r.text
    assert service.vault.get(token, purpose="check", as_site="ru").fields["email"] == ANNA["email"]


def test_a_client_of_some_sites_cannot_search_every_site(service: Service) -> None:  # noqa: F811
    _anna(service)
    _, us = service.client("us-office", "rights:write", "site:us", "purpose:*")
    r = service.http.post("/v1/rights", json=OPEN, headers=us)
    assert r.status_code == 403, r.text
    assert "ru" not in r.json().get("detail", "").replace("site:ru", "")
    _no_plaintext(r.text)
    _, admin = service.client("admin", "admin")
    assert service.http.get("/v1/rights", headers=admin).json() == []  # nothing on record
    _, office = service.client("dpo", "rights:write", *ALL_SITES, "purpose:subject_access")
    assert service.http.post("/v1/rights", json=OPEN, headers=office).status_code == 201


def test_a_client_sees_only_requests_about_its_sites(service: Service) -> None:  # noqa: F811
    _anna(service)
    rid = _request(service)
    _, de = service.client("de-office", "rights:read", "site:de")
    assert service.http.get("/v1/rights", headers=de).json() == []
    r = service.http.get(f"/v1/rights/{rid}", headers=de)
    assert r.status_code == 404, r.text
    assert "subject" not in r.text
    _, ru = service.client("ru-office", "rights:read", "site:ru")
    assert [x["id"] for x in service.http.get("/v1/rights", headers=ru).json()] == [rid]
    assert service.http.get(f"/v1/rights/{rid}", headers=ru).json()["id"] == rid
    # Acting on it is refused alike, before anything is read or changed.
    _, de_w = service.client("de-office", "rights:write", "site:de", "purpose:*", "collection:*")
    for step, body in (
        ("fulfil", {}),
        ("extend", {"reason": "x"}),
        ("close", {"outcome": "no_data"}),
    ):
        r = service.http.post(f"/v1/rights/{rid}/{step}", json=body, headers=de_w)
        assert r.status_code == 404, (step, r.text)
    assert service.http.get(f"/v1/rights/{rid}", headers=ru).json()["history"][-1]["step"] == "open"


def test_the_consoles_requests_page_lists_only_requests_about_the_clients_sites(
    service: Service,  # noqa: F811
) -> None:
    import re

    _anna(service)
    rid = _request(service)
    for scopes, shown in ((("rights:read", "site:de"), False), (("rights:read", "site:ru"), True)):
        client, secret = service.clients.add("officer", list(scopes))
        service.http.cookies.clear()
        form = service.http.get("/console/signin").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form)
        assert csrf is not None
        r = service.http.post(
            "/console/signin",
            data={"csrf": csrf.group(1), "client_id": client.id, "client_secret": secret},
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text
        page = service.http.get("/console/requests")
        assert page.status_code == 200, page.text
        assert (rid in page.text) is shown, scopes
