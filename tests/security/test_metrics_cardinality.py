"""Finding 5: unauthenticated requests made /metrics grow without bound (20,000 requests
gave a 122 MB page), and anyone could read it.

The attack floods a real service with requests whose every part an attacker chooses (path,
method, token, record key, country) and checks that the metrics page stays small: each
label takes its values from a fixed set (methods, route templates, statuses). Then it
tries to read the page without the metrics:read scope, and reads it on the separate
listener ``--metrics-address`` opens."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from .conftest import Running, free_port

FLOOD = 1600


def flood(served: Running, start: int, count: int) -> None:
    def batch(worker: int) -> None:
        with served.http() as http:
            for i in range(start + worker, start + count, 8):
                junk = secrets.token_hex(8)
                method = ("GET", "POST", "DELETE", f"X{junk[:6].upper()}")[i % 4]
                path = (
                    f"/{junk}",
                    f"/v1/records/dom1_{junk}",
                    f"/v2/storage/records/{junk[:2]}/{junk}",
                    f"/v1/collections/{junk}/records",
                )[(i // 4) % 4]
                http.request(method, path, headers={"Authorization": f"Bearer {junk}"})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(batch, range(8)))


def series(page: str) -> set[str]:
    return {line.split(" ")[0] for line in page.splitlines() if line and not line.startswith("#")}


def test_metrics_stay_bounded_and_need_a_scope(serve: Callable[..., Running]) -> None:
    served = serve("--auth-failures-per-source", "100000/minute")
    scraper = served.client("scraper", "metrics:read")
    reader = {"Authorization": f"Bearer {scraper['api_key']}"}
    with served.http() as http:
        http.get("/metrics", headers=reader)  # the scrape's own series exist from now on
    flood(served, 0, FLOOD // 2)
    with served.http() as http:
        first = http.get("/metrics", headers=reader).text
    flood(served, FLOOD // 2, FLOOD // 2)
    with served.http() as http:
        second = http.get("/metrics", headers=reader).text

    # Twice the requests, not one series more: every label value comes from a fixed set.
    assert series(second) == series(first)
    requests = [s for s in series(second) if s.startswith("domicile_requests_total")]
    assert len(requests) < 60, requests
    assert len(second) < 100_000
    labels = set(re.findall(r'(?:method|route)="([^"]*)"', second))
    assert labels <= {
        "GET", "POST", "DELETE", "OTHER", "unmatched", "/healthz", "/metrics", "/v1/records/{token}",
        "/v2/storage/records/{country}/{record_key}", "/v1/collections/{collection}/records",
    }  # fmt: skip
    total = sum(
        float(line.rsplit(" ", 1)[1])
        for line in second.splitlines()
        if line.startswith("domicile_requests_total{")
    )
    assert total >= FLOOD  # every request was counted, under a bounded label

    # Without the scope: refused, whoever asks.
    other = served.client("other", "records:read", "site:us")
    with served.http() as http:
        assert http.get("/metrics").status_code == 401
        bad = http.get("/metrics", headers={"Authorization": f"Bearer {other['api_key']}"})
        assert bad.status_code == 403
        assert "domicile_requests_total" not in bad.text


def test_metrics_on_their_own_address(serve: Callable[..., Running]) -> None:
    port = free_port()
    served = serve("--metrics-address", f"127.0.0.1:{port}")
    page = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert page.status_code == 200
    assert "domicile_requests_total" in page.text
    assert httpx.get(f"http://127.0.0.1:{port}/v1/sites", timeout=10).status_code == 404
    # The API itself still asks for the scope.
    with served.http() as http:
        assert http.get("/metrics").status_code == 401
    assert f"metrics: http://127.0.0.1:{port}/metrics" in served.log_text()
