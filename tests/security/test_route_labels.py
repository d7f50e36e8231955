"""Finding 4: path values leaked into logs, metrics and the audit.

The route template used to be made by replacing each path parameter's value in the path, so
``GET /v2/storage/records/ru/ivan.petrov@mail.ru`` was logged as
``.../ivan.petrov@mail.{country}``, and a refusal wrote that string into a site's
append-only audit. The attack sends personal values in paths, query strings and bodies of a
real service, authenticated and not, to routes that exist and routes that do not; then
looks for them in every log line, the metrics page, and every site's audit."""

from __future__ import annotations

from collections.abc import Callable

from .conftest import Running

SECRET = "ivan.petrov@mail.ru"
PIECES = ("ivan", "petrov", "mail.ru", "mail.", "@mail")
TEMPLATES = {
    "/v2/storage/records/{country}/{record_key}",
    "/v1/records/{token}",
    "/v1/collections/{collection}/records",
    "/v1/filings/{name}",
}


def attack(served: Running, headers: dict[str, str]) -> None:
    with served.http() as http:
        http.get(f"/v2/storage/records/ru/{SECRET}", headers=headers)
        http.get(f"/v2/storage/records/{SECRET[:2]}/{SECRET}", headers=headers)  # "iv": no site
        http.delete(f"/v2/storage/records/ru/{SECRET}", headers=headers)
        http.get(f"/v1/records/dom1_{SECRET}", params={"purpose": SECRET}, headers=headers)
        http.post(f"/v1/collections/{SECRET}/records", json={"x": SECRET}, headers=headers)
        http.delete(f"/v1/filings/{SECRET}", headers=headers)
        http.get(f"/v1/{SECRET}", params={"q": SECRET}, headers=headers)  # no such route
        http.request("PURGE", f"/{SECRET}", headers=headers)  # nor such a method
        http.post(
            f"/v2/storage/records/ru/{SECRET}/attachments",
            files={"file": (f"{SECRET}.txt", SECRET.encode())},
            headers=headers,
        )


def test_no_path_query_or_body_value_reaches_a_log_a_metric_or_the_audit(
    serve: Callable[..., Running],
) -> None:
    served = serve()
    limited = served.client("limited", "records:read", "site:de", "collection:profiles")
    metrics = served.client("scraper", "metrics:read")
    attack(served, {})  # no credentials
    attack(served, {"Authorization": f"Bearer {SECRET}"})  # bad credentials
    attack(served, {"Authorization": f"Bearer {limited['api_key']}", "x-env-id": "default"})
    attack(served, served.admin)
    with served.http() as http:
        page = http.get("/metrics", headers={"Authorization": f"Bearer {metrics['api_key']}"})
    assert page.status_code == 200
    served.stop()

    # Every request was logged, by its route's template (or as unmatched), never its path.
    events = [e for e in served.log_events() if e["event"] == "request"]
    assert len(events) >= 4 * 9
    routes = {e["route"] for e in events}
    assert routes >= TEMPLATES | {"unmatched"}
    assert {e["method"] for e in events} >= {"GET", "POST", "DELETE", "OTHER"}

    audits = {site: served.audit(site) for site in ("ru", "de", "us")}
    refusals = [e for e in audits["us"] if e["action"] == "refuse"]
    assert len(refusals) >= 10  # the refusals were audited...
    assert {e["detail"].get("route") for e in refusals} & TEMPLATES  # ...by template

    everything = {
        "log": served.log_text(),
        "metrics": page.text,
        **{f"audit {site}": repr(entries) for site, entries in audits.items()},
    }
    for where, text in everything.items():
        for piece in PIECES:
            assert piece not in text, f"{piece!r} reached the {where}"
