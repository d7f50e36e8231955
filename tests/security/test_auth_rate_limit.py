"""Finding 7: failed authentication was not rate-limited (about 34 guesses a second), and a
normal client's request slowed from 3 ms to 1.7 s while an attacker guessed.

An attacker guesses client secrets against a real service from its own address, as fast as
eight threads go, while a normal client works from another address. The attacker must be
answered 429 (with Retry-After) once over its limit, whatever it claims in
X-Forwarded-For; the normal client must not notice; and the attack must leave a bounded
number of audit entries. A client id under attack is limited from every address. Secrets
hashed with scrypt by earlier versions still work."""

from __future__ import annotations

import base64
import secrets
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from .conftest import Running

GRANT = {"grant_type": "client_credentials", "scope": "default"}
ATTACKER = "127.0.0.2"


def guess(served: Running, client_id: str, count: int, sources: list[str]) -> list[Any]:
    """``count`` wrong secrets for ``client_id``, from ``sources`` in turn, 8 at a time."""

    def one(i: int) -> Any:
        with served.http(sources[i % len(sources)]) as http:
            return http.post(
                "/oauth2/token", data=GRANT, auth=(client_id, secrets.token_urlsafe(32)),
                headers={"X-Forwarded-For": f"10.0.{i % 250}.{i % 7}"},  # ignored
            )  # fmt: skip

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def test_a_guessing_source_is_limited_and_a_normal_client_does_not_notice(
    serve: Callable[..., Running],
) -> None:
    served = serve(
        "--auth-failures-per-source", "20/minute", "--auth-failures-per-client", "1000/minute"
    )
    victim = served.client("victim", "sites:read", api_key=False)
    normal = served.client("normal", "sites:read")
    headers = {"Authorization": f"Bearer {normal['api_key']}"}
    latencies: list[float] = []
    statuses: list[int] = []
    stop = threading.Event()

    def work() -> None:
        with served.http("127.0.0.1") as http:
            while not stop.is_set():
                started = time.perf_counter()
                statuses.append(http.get("/v1/sites", headers=headers).status_code)
                latencies.append(time.perf_counter() - started)

    worker = threading.Thread(target=work)
    worker.start()
    try:
        answers = guess(served, victim["client_id"], 200, [ATTACKER])
        # Also a stranger's bearer guesses from the same address: limited as well.
        with served.http(ATTACKER) as http:
            bearer = http.get("/v1/sites", headers={"Authorization": "Bearer guess"})
        # A normal client (another address) still gets a token for its right secret.
        with served.http("127.0.0.1") as http:
            token = http.post(
                "/oauth2/token", data=GRANT, auth=(victim["client_id"], victim["client_secret"])
            )
    finally:
        stop.set()
        worker.join()

    codes = [a.status_code for a in answers]
    assert set(codes) == {401, 429}
    assert codes.count(401) <= 20 + 8  # the limit, plus the guesses already under way
    limited = [a for a in answers if a.status_code == 429]
    assert all(1 <= int(a.headers["Retry-After"]) <= 60 for a in limited)
    assert limited[0].json()["code"] == "rate_limited"
    assert bearer.status_code == 429
    assert token.status_code == 200

    assert set(statuses) == {200}
    assert statistics.median(latencies) < 0.25, statistics.median(latencies)
    assert max(latencies) < 3, max(latencies)

    # Bounded audit: one entry per failure under the limit, then one for the episode.
    refusals = served.refusals("us")
    assert 20 <= len(refusals) <= 20 + 8 + 2
    assert any(r["detail"]["reason"] == "rate limited" for r in refusals)
    assert all(ATTACKER not in repr(r) for r in refusals)  # the address is kept as a digest
    assert len({r["detail"]["source"] for r in refusals}) == 1
    served.stop()  # the count of unaudited refusals is written when the service stops
    last = [r for r in served.refusals("us") if "rate_limited_unaudited" in r["detail"]]
    assert sum(r["detail"]["rate_limited_unaudited"] for r in last) >= 150


def test_a_client_id_under_attack_is_limited_from_every_address(
    serve: Callable[..., Running],
) -> None:
    served = serve(
        "--auth-failures-per-source", "1000/minute", "--auth-failures-per-client", "5/minute"
    )
    victim = served.client("victim", "sites:read", api_key=False)
    other = served.client("other", "sites:read", api_key=False)
    sources = [f"127.0.0.{i}" for i in range(2, 10)]
    codes = [a.status_code for a in guess(served, victim["client_id"], 60, sources)]
    assert codes.count(401) <= 5 + 8
    assert codes.count(429) >= 60 - 5 - 8
    # Made-up client ids are no one's: they hold no limit of their own (only the source's).
    strangers = [a.status_code for a in guess(served, "dc_nobody", 30, sources)]
    assert set(strangers) == {401}
    with served.http("127.0.0.20") as http:
        # The victim waits for its window; another client is not affected.
        right = http.post(
            "/oauth2/token", data=GRANT, auth=(victim["client_id"], victim["client_secret"])
        )
        assert right.status_code == 429
        assert int(right.headers["Retry-After"]) >= 1
        ok = http.post(
            "/oauth2/token", data=GRANT, auth=(other["client_id"], other["client_secret"])
        )
        assert ok.status_code == 200


def scrypt_hash(secret: str, *, n: int = 2**14, with_params: bool = False) -> str:
    salt = secrets.token_bytes(16)
    digest = Scrypt(salt=salt, length=32, n=n, r=8, p=1).derive(secret.encode())

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    params = f"n={n},r=8,p=1$" if with_params else ""
    return f"scrypt${params}{b64(salt)}${b64(digest)}"


def test_secrets_hashed_with_scrypt_still_work_and_cannot_be_used_to_stall_the_service(
    serve: Callable[..., Running],
) -> None:
    old, tuned = "ds_" + secrets.token_urlsafe(32), "ds_" + secrets.token_urlsafe(32)
    config = f"""clients:
  - {{client_id: dc_legacy, name: legacy, scopes: [sites:read], secret_hash: "{scrypt_hash(old)}"}}
  - {{client_id: dc_tuned, name: tuned, scopes: [sites:read], secret_hash: "{scrypt_hash(tuned, n=2**12, with_params=True)}"}}
"""
    served = serve("--auth-failures-per-client", "10/minute", config=config)
    with served.http() as http:
        for client_id, secret in (("dc_legacy", old), ("dc_tuned", tuned)):
            r = http.post("/oauth2/token", data=GRANT, auth=(client_id, secret))
            assert r.status_code == 200, r.text
            access = {"Authorization": f"Bearer {r.json()['access_token']}"}
            assert http.get("/v1/sites", headers=access).status_code == 200
    # Guessing the scrypt-hashed secret: only the first guesses cost an scrypt run; the
    # others are refused at once, and the rest of the service keeps its pace.
    normal = served.client("normal", "sites:read")
    started = time.perf_counter()
    codes = [a.status_code for a in guess(served, "dc_legacy", 120, ["127.0.0.2", "127.0.0.3"])]
    elapsed = time.perf_counter() - started
    assert codes.count(429) >= 120 - 10 - 8
    with served.http() as http:
        started = time.perf_counter()
        ok = http.get("/v1/sites", headers={"Authorization": f"Bearer {normal['api_key']}"})
        assert ok.status_code == 200
        assert time.perf_counter() - started < 1
    assert elapsed < 30
