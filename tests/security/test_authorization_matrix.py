"""The authorization matrix, generated from the service's own OpenAPI document.

Every route of ``app.openapi()`` must have an entry in ``REQUIRED``: the operation scopes
it needs and the constraints that apply to it (``site:``, ``collection:``, ``purpose:``),
or ``None`` for the few routes that need no credentials. A route added later without an
entry fails ``test_every_route_has_an_entry``; one with an entry is covered at once.

For every route, the test sends a valid request (``SAMPLES``) as:
- a client holding exactly the required scopes: the request succeeds (the control);
- no credentials: 401;
- a client missing each required operation scope in turn, and each applicable constraint
  in turn (the site it acts from held elsewhere or not at all, another collection,
  another purpose): refused, 403, or 404 where the record comes from a token and only
  its collection is outside the client's scopes (the answer a missing record gets);
and each refusal must be in the audit of the site where the request arrived, naming the
client and the scope it lacked. In-process (``TestClient``) for speed; the attacks of the
review run against a real ``domicile serve`` in ``test_authorization_attacks.py``.
"""

from __future__ import annotations

import itertools
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from domicile.clients import ClientRegistry
from domicile.config import ServiceSettings
from domicile.deploy.starter import init
from domicile.http.app import create_app
from domicile.vault import Domicile

SITE, COLLECTION, PURPOSE = "site", "collection", "purpose"
NATIVE = frozenset({SITE, COLLECTION, PURPOSE})
INCOUNTRY = frozenset({SITE, PURPOSE})  # collections do not apply to these records
RIGHTS = frozenset({SITE, PURPOSE})  # a subject's request: its sites and its kind's purpose
V2 = "/v2/storage/records/{country}"


@dataclass(frozen=True)
class Required:
    operations: tuple[str, ...]
    constraints: frozenset[str] = frozenset()
    by_token: bool = False  # the record is named by a token: see the module's docstring
    # Many records named by tokens (a batch read): one outside the client's collections is
    # listed as not found, as its single read answers, and the batch answers 200.
    listed: bool = False
    # The sites whose scopes the route needs (a subject's request: every site holding the
    # subject, every site to open one); the one left out by the site cases is ``ru``.
    sites: tuple[str, ...] = ("ru",)
    purpose: str | None = None  # the purpose it needs, when not the sample's own
    # A request about a site the client lacks answers as a missing one (404, not_found).
    hidden: bool = False


REQUIRED: dict[tuple[str, str], Required | None] = {
    ("GET", "/healthz"): None,
    ("GET", "/readyz"): None,
    ("GET", "/metrics"): None,
    ("POST", "/oauth2/token"): None,
    ("GET", "/healthcheck"): None,
    ("POST", "/v1/collections/{collection}/records"): Required(("records:write",), NATIVE),
    ("POST", "/v1/collections/{collection}/records/batch"): Required(("records:write",), NATIVE),
    ("GET", "/v1/records/{token}"): Required(("records:read",), NATIVE, by_token=True),
    ("POST", "/v1/read"): Required(("records:read",), NATIVE, listed=True),
    ("PATCH", "/v1/records/{token}"): Required(("records:write",), NATIVE, by_token=True),
    ("DELETE", "/v1/records/{token}"): Required(("records:delete",), NATIVE, by_token=True),
    ("POST", "/v1/collections/{collection}/find"): Required(("records:read",), NATIVE),
    ("POST", "/v1/subjects/erase"): Required(("records:erase",), NATIVE, by_token=True),
    ("GET", "/v1/subjects/export"): Required(
        ("records:export", "records:read"), NATIVE, by_token=True
    ),
    ("POST", "/v1/subjects/attestation"): Required(("subjects:attest",), NATIVE, by_token=True),
    ("GET", "/v1/filings"): Required(("filings:read",)),
    ("POST", "/v1/filings"): Required(("filings:write",)),
    ("DELETE", "/v1/filings/{name}"): Required(("filings:write",)),
    ("GET", "/v1/transfers"): Required(("transfers:read",)),
    ("GET", "/v1/parity"): Required(("parity:read",)),
    ("GET", "/v1/audit/verify"): Required(("audit:read",)),
    ("GET", "/v1/audit/heads"): Required(("audit:read",)),
    ("GET", "/v1/audit/proof"): Required(("audit:read",)),
    ("POST", "/v1/policy/explain"): Required(("policy:read",)),
    ("GET", "/v1/sites"): Required(("sites:read",)),
    ("POST", "/v1/rights"): Required(
        ("rights:write",), RIGHTS, sites=("de", "ru", "us"), purpose="subject_access"
    ),
    # Lists only the requests about the client's sites (test_rights_scopes.py).
    ("GET", "/v1/rights"): Required(("rights:read",)),
    ("GET", "/v1/rights/{request_id}"): Required(("rights:read",), frozenset({SITE}), hidden=True),
    ("POST", "/v1/rights/{request_id}/fulfil"): Required(
        ("rights:write",), NATIVE, purpose="subject_access", hidden=True
    ),
    ("POST", "/v1/rights/{request_id}/extend"): Required(
        ("rights:write",), RIGHTS, purpose="subject_access", hidden=True
    ),
    ("POST", "/v1/rights/{request_id}/close"): Required(
        ("rights:write",), RIGHTS, purpose="subject_access", hidden=True
    ),
    ("POST", "/v1/rights/{request_id}/lift"): Required(
        ("rights:write",), RIGHTS, purpose="subject_restriction", hidden=True
    ),
    # The collections with a retention need their scopes too (the deployment here has none:
    # tests/retention/test_http.py).
    ("GET", "/v1/retention/plan"): Required(("retention:read",), frozenset({SITE})),
    ("POST", "/v1/retention/run"): Required(
        ("retention:run",), frozenset({SITE, PURPOSE}), purpose="retention"
    ),
    ("POST", V2): Required(("records:write",), INCOUNTRY),
    ("POST", V2 + "/batchWrite"): Required(("records:write",), INCOUNTRY),
    ("POST", V2 + "/find"): Required(("records:read",), INCOUNTRY),
    ("POST", V2 + "/batchDelete"): Required(("records:delete",), INCOUNTRY),
    ("GET", V2 + "/{record_key}"): Required(("records:read",), INCOUNTRY),
    ("DELETE", V2 + "/{record_key}"): Required(("records:delete",), INCOUNTRY),
    ("POST", V2 + "/{record_key}/attachments"): Required(("records:write",), INCOUNTRY),
    ("PUT", V2 + "/{record_key}/attachments"): Required(("records:write",), INCOUNTRY),
    ("GET", V2 + "/{record_key}/attachments/{file_id}"): Required(("records:read",), INCOUNTRY),
    ("DELETE", V2 + "/{record_key}/attachments/{file_id}"): Required(("records:write",), INCOUNTRY),
    ("GET", V2 + "/{record_key}/attachments/{file_id}/meta"): Required(
        ("records:read",), INCOUNTRY
    ),
    ("PATCH", V2 + "/{record_key}/attachments/{file_id}/meta"): Required(
        ("records:write",), INCOUNTRY
    ),
}


def _openapi_routes() -> list[tuple[str, str]]:
    """Every (method, path) of the OpenAPI document of a service over a fresh deployment."""
    with tempfile.TemporaryDirectory() as folder:
        vault = Domicile(init(folder))
        try:
            paths = create_app(vault).openapi()["paths"]
        finally:
            vault.close(checkpoint=False)
    methods = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    return [(m.upper(), p) for p, ops in paths.items() for m in ops if m in methods]


ROUTES = _openapi_routes()


def test_every_route_has_an_entry() -> None:
    missing = [f"{m} {p}" for m, p in ROUTES if (m, p) not in REQUIRED]
    assert missing == [], "routes with no entry in REQUIRED (what must they require?)"
    stale = [f"{m} {p}" for m, p in REQUIRED if (m, p) not in ROUTES]
    assert stale == [], "entries of REQUIRED for routes that are gone"


# --- the requests ----------------------------------------------------------------------------

Request = tuple[str, str, dict[str, Any]]  # method, URL, keyword arguments for httpx


class World:
    """A deployment served in process, and what requests need: fresh records to act on."""

    def __init__(self, folder: Path) -> None:
        self.vault = Domicile(init(folder))
        # Every route is tried without credentials from one address: more failures than
        # the default limit of one source (its own test is test_auth_rate_limit.py).
        settings = ServiceSettings(auth_failures_per_source="100000/minute")
        self.app = create_app(self.vault, settings=settings)
        self.clients: ClientRegistry = self.app.state.service.clients
        self.http = TestClient(self.app)
        self.admin = self.headers(["admin"])
        self._n = itertools.count()

    def headers(self, scopes: list[str]) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key(scopes)[1]}", "x-env-id": "default"}

    def key(self, scopes: list[str]) -> tuple[str, str]:
        client, key = self.clients.add("matrix", scopes, api_key=True)
        return client.id, key

    def unique(self) -> int:
        return next(self._n)

    def profile(self) -> str:
        """A fresh Russian subject's profile at the Russian site: its token."""
        n = self.unique()
        fields = {"full_name": f"Subject {n}", "email": f"s{n}@example.ru", "city": "Omsk"}
        return self.vault.put(
            "profiles", subject={"citizenship": "RU"}, fields=fields, purpose="seed"
        ).token

    def rights_request(self) -> str:
        """A fresh access request about a fresh Russian subject: its id."""
        from domicile.rights import open_request

        self.profile()
        email = f"s{self.unique() - 1}@example.ru"
        return open_request(
            self.vault, "access", {"email": email}, checked_by="dpo", verified_how="other"
        )["id"]

    def restriction(self) -> str:
        """A fresh restriction of a fresh Russian subject, fulfilled (its block in force):
        its id."""
        from domicile.rights import fulfil, open_request

        self.profile()
        email = f"s{self.unique() - 1}@example.ru"
        rid: str = open_request(
            self.vault, "restriction", {"email": email}, checked_by="dpo", verified_how="other"
        )["id"]
        fulfil(self.vault, rid)
        return rid

    def incountry(self) -> tuple[str, str]:
        """A fresh InCountry record at the Russian site with one attachment: its record
        key and the attachment's file id."""
        key = f"k{self.unique()}"
        r = self.http.post(f"{V2_RU}", json={"record_key": key, "body": "b"}, headers=self.admin)
        assert r.status_code == 201, r.text
        r = self.http.post(
            f"{V2_RU}/{key}/attachments", files={"file": ("a.txt", b"a")}, headers=self.admin
        )
        assert r.status_code == 201, r.text
        return key, r.json()["file_id"]

    def refusals(self) -> list[dict[str, Any]]:
        """The refusals in the audit of the site where requests arrive (the local site)."""
        out = []
        for row in self.vault.store(self.vault.config.local_site).audit():
            entry = json.loads(row.payload)
            if entry["action"] == "refuse":
                out.append(entry)
        return out


V2_RU = "/v2/storage/records/ru"
P = "matrix"  # the purpose of the native requests
AT = {"as_site": "ru"}  # native record requests act from the Russian site


def _native(world: World, method: str, path: str) -> Request:
    put = {
        "subject": {"citizenship": "RU"},
        "fields": {"full_name": "New Person", "email": f"n{world.unique()}@example.ru"},
    }
    match (method, path):
        case ("POST", "/v1/collections/{collection}/records"):
            return method, "/v1/collections/profiles/records", {
                "json": {**put, "purpose": P}, "params": AT}  # fmt: skip
        case ("POST", "/v1/collections/{collection}/records/batch"):
            return method, "/v1/collections/profiles/records/batch", {
                "json": {"records": [put], "purpose": P}, "params": AT}  # fmt: skip
        case ("GET", "/v1/records/{token}"):
            return method, f"/v1/records/{world.profile()}", {"params": {**AT, "purpose": P}}
        case ("POST", "/v1/read"):
            return method, path, {
                "json": {"tokens": [world.profile()], "purpose": P}, "params": AT}  # fmt: skip
        case ("PATCH", "/v1/records/{token}"):
            return method, f"/v1/records/{world.profile()}", {
                "json": {"fields": {"city": "Kazan"}, "purpose": P}, "params": AT}  # fmt: skip
        case ("DELETE", "/v1/records/{token}"):
            return method, f"/v1/records/{world.profile()}", {"params": {**AT, "purpose": P}}
        case ("POST", "/v1/collections/{collection}/find"):
            world.profile()
            return method, "/v1/collections/profiles/find", {
                "json": {"where": {"email": "s0@example.ru"}, "purpose": P, "as_site": "ru"}}  # fmt: skip
        case ("POST", "/v1/subjects/erase"):
            return method, "/v1/subjects/erase", {
                "json": {"token": world.profile(), "purpose": P}, "params": AT}  # fmt: skip
        case ("GET", "/v1/subjects/export"):
            return method, "/v1/subjects/export", {
                "params": {**AT, "purpose": P, "token": world.profile()}}  # fmt: skip
        case ("POST", "/v1/subjects/attestation"):
            from domicile.attest.service import commit

            token = world.profile()
            commit(world.vault)  # a proof needs every site's current commitment
            return method, path, {"json": {"token": token, "purpose": P}, "params": AT}
        case ("POST", "/v1/filings"):
            return method, "/v1/filings", {"json": {"name": "eu.scc.US", "date": "2025-01-01"}}
        case ("DELETE", "/v1/filings/{name}"):
            world.vault.add_filing("eu.scc.CN", "2025-01-01")
            return method, "/v1/filings/eu.scc.CN", {}
        case ("POST", "/v1/policy/explain"):
            return method, "/v1/policy/explain", {"json": {
                "subject": {"citizenship": "RU"}, "categories": ["user.name"],
                "operation": "store", "site_country": "DE", "date": "2025-09-01"}}  # fmt: skip
        case ("POST", "/v1/rights"):
            return method, path, {"json": {
                "kind": "access", "identity": {"email": "s0@example.ru"},
                "checked_by": "dpo", "verified_how": "other"}}  # fmt: skip
        case ("GET", "/v1/rights/{request_id}"):
            return method, f"/v1/rights/{world.rights_request()}", {}
        case ("POST", "/v1/rights/{request_id}/fulfil"):
            return method, f"/v1/rights/{world.rights_request()}/fulfil", {
                "json": {}, "params": AT}  # fmt: skip
        case ("POST", "/v1/rights/{request_id}/extend"):
            return method, f"/v1/rights/{world.rights_request()}/extend", {
                "json": {"reason": "archives"}}  # fmt: skip
        case ("POST", "/v1/rights/{request_id}/close"):
            return method, f"/v1/rights/{world.rights_request()}/close", {
                "json": {"outcome": "no_data"}}  # fmt: skip
        case ("POST", "/v1/rights/{request_id}/lift"):
            return method, f"/v1/rights/{world.restriction()}/lift", {
                "json": {"reason": "accuracy checked"}}  # fmt: skip
        case ("GET", "/v1/retention/plan"):
            return method, path, {"params": {"site": "ru"}}
        case ("POST", "/v1/retention/run"):
            return method, path, {"json": {"sites": ["ru"]}}
        case ("GET", "/v1/audit/proof"):
            world.profile()
            world.vault.witness()  # entry 1 under a signed head
            return method, path, {"params": {"site": "ru", "seq": 1}}
        case ("GET", _):
            return method, path, {}
    raise AssertionError(f"no sample request for {method} {path}: add one to SAMPLES")


def _incountry(world: World, method: str, path: str) -> Request:
    rest = path.removeprefix(V2)
    if rest in ("", "/batchWrite", "/find", "/batchDelete"):
        key, _ = world.incountry()
        body = {
            "": {"record_key": f"new{world.unique()}", "body": "b"},
            "/batchWrite": {"records": [{"record_key": f"new{world.unique()}"}]},
            "/find": {"filter": {"record_key": key}},
            "/batchDelete": {"filter": {"record_key": [key]}},
        }[rest]
        return method, V2_RU + rest, {"json": body}
    key, file_id = world.incountry()
    url = V2_RU + rest.replace("{record_key}", key).replace("{file_id}", file_id)
    if rest.endswith("/attachments"):
        return method, url, {"files": {"file": ("b.txt", b"b")}}
    if method == "PATCH":
        return method, url, {"json": {"filename": "c.txt"}}
    return method, url, {}


def sample(world: World, method: str, path: str) -> Request:
    """A request that succeeds for a client with exactly the scopes the route requires."""
    if path.startswith(V2):
        return _incountry(world, method, path)
    return _native(world, method, path)


# --- the cases -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    variant: str
    scopes: tuple[str, ...] | None  # None: no credentials
    status: int
    missing: str | None  # the scope the audited refusal must name
    listed: bool = False  # refused record by record: 200, the record listed as not found

    @property
    def id(self) -> str:
        return f"{self.method} {self.path} | {self.variant}"


def _cases() -> Iterator[Case]:
    for method, path in ROUTES:
        req = REQUIRED.get((method, path))
        if req is None:
            continue
        incountry = path.startswith(V2)
        purpose = req.purpose or ("incountry" if incountry else P)
        constraint = {
            SITE: [f"site:{s}" for s in req.sites],
            COLLECTION: ["collection:profiles"],
            PURPOSE: [f"purpose:{purpose}"],
        }
        full = [*req.operations, *(s for c in sorted(req.constraints) for s in constraint[c])]

        def without(scope: str, *instead: str, full: list[str] = full) -> tuple[str, ...]:
            # A client has at least one scope: "site:de" grants no operation here.
            kept = [s for s in full if s != scope]
            return tuple(kept + [s for s in instead if s not in kept]) or ("site:de",)

        yield Case(method, path, "the scopes it requires", tuple(full), 200, None)
        yield Case(method, path, "no credentials", None, 401, None)
        for op in req.operations:
            yield Case(method, path, f"without {op}", without(op), 403, op)
        if SITE in req.constraints:
            refused = 404 if req.hidden else 403
            yield Case(method, path, "acting from a site it lacks", without("site:ru", "site:de"),
                       refused, "site:ru")  # fmt: skip
            yield Case(method, path, "no site scope", without("site:ru"), refused, "site:ru")
        if COLLECTION in req.constraints:
            yield Case(
                method, path, "another collection", without("collection:profiles", "collection:notes"),
                200 if req.listed else 404 if req.by_token else 403, "collection:profiles",
                listed=req.listed,
            )  # fmt: skip
        if PURPOSE in req.constraints:
            yield Case(method, path, "another purpose",
                       without(f"purpose:{purpose}", "purpose:other"), 403, f"purpose:{purpose}")  # fmt: skip


CASES = list(_cases())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("matrix"))
    with w.http:
        yield w
    w.vault.close()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_route_refuses_every_missing_scope_and_audits_it(world: World, case: Case) -> None:
    method, url, kwargs = sample(world, case.method, case.path)
    if case.scopes is None:
        headers = {"x-env-id": "default"}
        client = None
    else:
        client, key = world.key(list(case.scopes))
        headers = {"Authorization": f"Bearer {key}", "x-env-id": "default"}
    before = len(world.refusals())
    r = world.http.request(method, url, headers=headers, **kwargs)
    refusals = world.refusals()[before:]
    if case.status == 200 and not case.listed:  # the control: it works, nothing refused
        assert r.status_code in (200, 201, 204), r.text
        assert refusals == []
        return
    assert r.status_code == case.status, r.text
    if case.scopes is None:
        return  # no client to name; the refusal of credentials is item 7's
    assert [(e.get("client"), e["detail"].get("missing_scope")) for e in refusals] == [
        (client, case.missing)
    ], "the refusal must be audited once, where the request arrived, naming client and scope"
    if case.status == 404:  # as for a missing record: nothing says the record exists
        assert r.json()["code"] == "not_found"
        assert "profiles" not in r.text
    elif case.listed:  # the same, for the one record of the batch
        assert [(x["status"], x["code"]) for x in r.json()["records"]] == [(404, "not_found")]
        assert "profiles" not in r.text
    else:
        assert r.json()["code"] == "forbidden"
        assert case.missing is not None
        assert case.missing in r.json()["detail"]
