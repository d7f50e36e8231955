"""The InCountry-compatible storage API through FastAPI's test client: records, the filter
language, paging, attachments, errors, scopes, policy, fail-closed, the audit, and that no
value reaches a site's bytes unsealed."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from domicile.cli.app import app as cli
from domicile.clients import ClientRegistry
from domicile.config import ServiceSettings
from domicile.http.app import create_app
from domicile.policy import PolicyEngine
from domicile.residency import SubjectEvidence, resolve
from domicile.vault import Domicile
from domicile.vault.incountry import COLLECTION, FIELDS, FILES, Caller, InCountryStorage
from tests.vault.conftest import Deployment, sqlite_urls

from .conftest import BASE, Api, Clock, open_api

T0 = dt.datetime(2025, 9, 1, 12, 0, tzinfo=dt.UTC)


def hours(n: int) -> str:
    return (T0 + dt.timedelta(hours=n)).isoformat()


# --- records ----------------------------------------------------------------------------------


def test_write_and_read_return_every_field(any_api: Api) -> None:
    api = any_api
    record = {
        "record_key": "rk-1", "body": "2:Y2lwaGVydGV4dA==", "precommit_body": "2:cHJl",
        "profile_key": "pk", "parent_key": "parent", "service_key1": "svc", "key1": "k1",
        "key20": "k20", "range_key1": -(2**63), "range_key10": 2**63 - 1, "version": 3,
        "is_encrypted": True, "expires_at": "2030-01-31T10:00:00Z",
    }  # fmt: skip
    written = api.write("ru", record)
    assert list(written) == list(FIELDS)
    for key, value in record.items():
        if key != "expires_at":
            assert written[key] == value, key
    assert written["expires_at"] == "2030-01-31T10:00:00+00:00"  # +00:00, never Z
    assert written["created_at"] == written["updated_at"] == T0.isoformat()
    assert written["created_at"].endswith("+00:00")
    assert written["key2"] is None
    assert written["range_key2"] is None
    assert written["service_key5"] is None
    assert written["attachments"] == []
    r = api.http.get(f"{BASE}/ru/rk-1", headers=api.admin)
    assert r.status_code == 200
    assert r.json() == written
    # Defaults: version 0; is_encrypted false, or true when the server encrypts (SSE).
    plain = api.write("ru", {"record_key": "bare"})
    assert (plain["version"], plain["is_encrypted"], plain["body"]) == (0, False, None)
    sse = api.write("ru", {"record_key": "raw", "body": "hi"}, **{"X-Encrypted-Storage": "true"})
    assert sse["is_encrypted"] is True
    # Stored in the Russian site, and nowhere else.
    assert [s.records for s in api.vault.sites()] == [3, 0, 0]


def test_upsert_keeps_created_at_and_attachments(api: Api) -> None:
    api.write("de", {"record_key": "a", "body": "one", "key1": "x", "range_key1": 1})
    r = api.http.post(
        f"{BASE}/de/a/attachments", files={"file": ("f.txt", b"data")}, headers=api.admin
    )
    assert r.status_code == 201
    api.clock.tick(hours=1)
    second = api.write("de", {"record_key": "a", "body": "two", "key2": "y"})
    assert second["created_at"] == T0.isoformat()
    assert second["updated_at"] == hours(1)
    assert (second["body"], second["key1"], second["key2"], second["range_key1"]) == (
        "two", None, "y", None,
    )  # fmt: skip
    assert [a["filename"] for a in second["attachments"]] == ["f.txt"]
    # The old keys are no longer indexed; the new ones are.
    assert api.keys("de", {"key1": "x"}) == []
    assert api.keys("de", {"key2": "y"}) == ["a"]
    assert api.keys("de", {"range_key1": 1}) == []


def test_a_new_profile_moves_the_record_and_its_files_to_the_new_subject(api: Api) -> None:
    api.write("de", {"record_key": "a", "profile_key": "p1"})
    api.write("de", {"record_key": "b", "profile_key": "p1"})
    store = api.vault.store("de")
    subjects = {rec.subject_id for rec in store.get_many(_rids(api, "de", ["a", "b"])).values()}
    assert len(subjects) == 1  # one person, one data key
    meta = api.http.post(
        f"{BASE}/de/a/attachments", files={"file": ("cv.pdf", b"%PDF-secret")}, headers=api.admin
    ).json()
    api.write("de", {"record_key": "a", "profile_key": "p2"})
    moved = {rec.subject_id for rec in store.get_many(_rids(api, "de", ["a", "b"])).values()}
    assert len(moved) == 2
    r = api.http.get(f"{BASE}/de/a/attachments/{meta['file_id']}", headers=api.admin)
    assert r.content == b"%PDF-secret"
    assert store.get(meta["file_id"]).subject_id == store.get(_rids(api, "de", ["a"])[0]).subject_id  # type: ignore[union-attr]


def test_erasing_a_profile_shreds_all_its_records(api: Api) -> None:
    """The vault's erasure works on these records: the profile's key goes, then its rows."""
    api.write("us", {"record_key": "a", "profile_key": "p", "body": "x"})
    api.write("us", {"record_key": "b", "profile_key": "p", "body": "y"})
    api.write("us", {"record_key": "c", "profile_key": "q", "body": "z"})
    token = api.vault.tokens.issue("us", _rids(api, "us", ["a"])[0])
    out = api.vault.erase(token)
    assert out["records"] == 2
    assert out["key_destroyed"]
    assert api.keys("us", {}) == ["c"]
    assert api.http.get(f"{BASE}/us/b", headers=api.admin).status_code == 404


def _rids(api: Api, site: str, keys: list[str]) -> list[str]:
    storage = api.http.app.state.incountry  # type: ignore[attr-defined]
    return [storage._rid(site, k) for k in keys]


def test_batch_write(api: Api) -> None:
    records = [{"record_key": f"b{i}", "key1": "batch", "range_key1": i} for i in range(100)]
    r = api.http.post(f"{BASE}/us/batchWrite", json={"records": records}, headers=api.admin)
    assert r.status_code == 201
    assert [x["record_key"] for x in r.json()["records"]] == [x["record_key"] for x in records]
    assert all(list(x) == list(FIELDS) for x in r.json()["records"])
    assert len(api.keys("us", {"key1": "batch"})) == 100


def test_a_batch_is_a_run_of_upserts(api: Api) -> None:
    """A record_key given twice in one batch ends as its last record (as two writes would)."""
    body = {"records": [{"record_key": "same", "body": "1"}, {"record_key": "same", "body": "2"}]}
    r = api.http.post(f"{BASE}/us/batchWrite", json=body, headers=api.admin)
    assert r.status_code == 201, r.text
    assert [x["body"] for x in r.json()["records"]] == ["2", "2"]
    assert api.http.get(f"{BASE}/us/same", headers=api.admin).json()["body"] == "2"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"records": []}, "1 to 100"),
        ({"records": [{"record_key": f"k{i}"} for i in range(101)]}, "1 to 100"),
        ({"records": [{"record_key": "ok"}, {"record_key": "bad", "range_key1": "1"}]}, "records[1]: range_key1"),
        ({"records": [{"record_key": "ok"}, {"body": "no key"}]}, "records[1]: record_key is required"),
        ({"rows": []}, "records"),
        ([{"record_key": "x"}], "records"),
    ],
)  # fmt: skip
def test_bad_batches_write_nothing(api: Api, body: Any, problem: str) -> None:
    r = api.http.post(f"{BASE}/us/batchWrite", json=body, headers=api.admin)
    assert r.status_code == 400, r.text
    assert problem in r.json()["detail"]
    assert r.headers["content-type"] == "application/problem+json"
    assert [s.records for s in api.vault.sites()] == [0, 0, 0]


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({}, "record_key is required"),
        ({"record_key": ""}, "record_key is required"),
        ({"record_key": 5}, "record_key must be a string"),
        ({"record_key": "k", "key1": "x" * 257}, "key1 is longer than 256"),
        ({"record_key": "k", "range_key1": 2**63}, "range_key1 must be a signed 64-bit"),
        ({"record_key": "k", "range_key2": True}, "range_key2 must be a signed 64-bit"),
        ({"record_key": "k", "version": 1.5}, "version must be a signed 64-bit"),
        ({"record_key": "k", "is_encrypted": "yes"}, "is_encrypted must be true or false"),
        ({"record_key": "k", "expires_at": "tomorrow"}, "expires_at is not an ISO 8601"),
        ({"record_key": "k", "key21": "x"}, "only the fields of the InCountry storage API"),
        ({"record_key": "k", "body": {"nested": 1}}, "body must be a string"),
    ],
)
def test_bad_records_are_refused_without_echoing_values(
    api: Api, record: dict[str, Any], problem: str
) -> None:
    r = api.http.post(f"{BASE}/ru", json=record, headers=api.admin)
    assert r.status_code == 400
    assert problem in r.json()["detail"]
    assert "x" * 20 not in r.text
    assert [s.records for s in api.vault.sites()] == [0, 0, 0]


def test_server_managed_fields_are_accepted_and_ignored(api: Api) -> None:
    written = api.write(
        "ru", {"record_key": "k", "created_at": "1999-01-01", "attachments": [], "updated_at": None}
    )
    assert written["created_at"] == T0.isoformat()


def test_missing_records_are_404(api: Api) -> None:
    for method in ("get", "delete"):
        r = api.http.request(method.upper(), f"{BASE}/ru/nope", headers=api.admin)
        assert r.status_code == 404
        assert r.json()["code"] == "not_found"


def test_delete_and_batch_delete(api: Api) -> None:
    for k in ("a", "b", "c", "d"):
        api.write("de", {"record_key": k, "key1": "del"})
    r = api.http.delete(f"{BASE}/de/a", headers=api.admin)
    assert (r.status_code, r.json()) == (200, {})
    assert api.http.get(f"{BASE}/de/a", headers=api.admin).status_code == 404
    body = {"filter": {"record_key": ["b", "c", "never-written"]}}
    r = api.http.post(f"{BASE}/de/batchDelete", json=body, headers=api.admin)
    assert (r.status_code, r.json()) == (200, {})
    assert api.keys("de", {"key1": "del"}) == ["d"]
    for bad in ({"filter": {"record_key": []}}, {"filter": {"key1": ["d"]}}, {"record_key": ["d"]}):
        r = api.http.post(f"{BASE}/de/batchDelete", json=bad, headers=api.admin)
        assert r.status_code == 400
    assert api.keys("de", {}) == ["d"]


# --- find -------------------------------------------------------------------------------------

DATA: list[dict[str, Any]] = [
    {"record_key": "r0", "key1": "alpha", "key2": "Anna Volkova", "profile_key": "p1",
     "range_key1": 0, "version": 0, "expires_at": "2030-01-01T00:00:00+00:00", "service_key1": "s"},
    {"record_key": "r1", "key1": "beta", "key2": "Boris Volkov", "profile_key": "p1",
     "range_key1": 10, "version": 1},
    {"record_key": "r2", "key1": "alpha", "key2": "Clara Zetkin", "profile_key": "p2",
     "range_key1": 20, "version": 1, "expires_at": "2031-06-01T00:00:00+00:00"},
    {"record_key": "r3", "key1": "gamma", "key2": "Dmitri Orlov", "range_key1": -5, "version": 2,
     "parent_key": "r0"},
    {"record_key": "r4", "key3": "only-key3", "range_key2": 7, "version": 0},
]  # fmt: skip


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, engine: PolicyEngine) -> Iterator[Api]:
    """DATA in Germany, one record an hour from T0; r1 rewritten at T0+10h. Noise in Russia.
    Shared by the tests that only read it."""
    folder = tmp_path_factory.mktemp("dataset")
    opened = open_api(Deployment("sqlite", folder, sqlite_urls(), None), engine)
    api = next(opened)
    for i, rec in enumerate(DATA):
        api.clock.now = T0 + dt.timedelta(hours=i)
        api.write("de", rec)
        api.write("ru", {**rec, "record_key": f"ru-{i}"})  # another country: never found
    api.clock.now = T0 + dt.timedelta(hours=10)
    api.write("de", DATA[1])
    yield api
    opened.close()


ALL = ["r0", "r1", "r2", "r3", "r4"]


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({}, ALL),
        ({"key1": "alpha"}, ["r0", "r2"]),
        ({"key1": ["beta", "gamma", "zeta"]}, ["r1", "r3"]),
        ({"key1": {"$not": "alpha"}}, ["r1", "r3", "r4"]),  # a missing value is "not alpha"
        ({"key1": {"$not": ["alpha", "beta"]}}, ["r3", "r4"]),
        ({"key1": None}, ["r4"]),
        ({"key2": {"$like": "volk"}}, ["r0", "r1"]),
        ({"key2": {"$like": "VOLKOVA"}}, ["r0"]),
        ({"key2": {"$like": "volk", "$not": "Anna Volkova"}}, ["r1"]),
        ({"search_keys": "olko"}, ["r0", "r1"]),
        ({"search_keys": "only-k"}, ["r4"]),
        ({"search_keys": "ALPHA", "profile_key": "p2"}, ["r2"]),
        ({"profile_key": "p1", "key1": "alpha"}, ["r0"]),
        ({"record_key": ["r1", "r4", "nope"]}, ["r1", "r4"]),
        ({"record_key": {"$not": "r0"}}, ["r1", "r2", "r3", "r4"]),
        ({"parent_key": "r0"}, ["r3"]),
        ({"service_key1": "s"}, ["r0"]),
        ({"range_key1": 10}, ["r1"]),
        ({"range_key1": [0, 20]}, ["r0", "r2"]),
        ({"range_key1": {"$not": 0}}, ["r1", "r2", "r3", "r4"]),
        ({"range_key1": {"$not": [0, 10], "$gt": -10}}, ["r2", "r3"]),
        ({"range_key1": {"$gt": 0, "$lte": 20}}, ["r1", "r2"]),
        ({"range_key1": {"$gte": -5, "$lt": 10}}, ["r0", "r3"]),
        ({"range_key1": {"$lt": 100}}, ["r0", "r1", "r2", "r3"]),
        ({"range_key2": 7}, ["r4"]),
        ({"version": 1}, ["r1", "r2"]),
        ({"version": {"$not": 1}}, ["r0", "r3", "r4"]),
        ({"version": {"$gte": 1}, "key1": "alpha"}, ["r2"]),
        ({"created_at": {"$gte": hours(2)}}, ["r2", "r3", "r4"]),
        ({"created_at": {"$lt": hours(1)}}, ["r0"]),
        ({"created_at": hours(3)}, ["r3"]),
        ({"created_at": [hours(3), hours(4)]}, ["r3", "r4"]),
        ({"created_at": {"$not": hours(0), "$lte": hours(2)}}, ["r1", "r2"]),
        ({"updated_at": {"$gt": hours(5)}}, ["r1"]),
        ({"expires_at": None}, ["r1", "r3", "r4"]),
        ({"expires_at": {"$not": None}}, ["r0", "r2"]),
        ({"expires_at": {"$gt": "2030-06-01T00:00:00Z"}}, ["r2"]),
        ({"expires_at": {"$lte": "2030-01-01"}}, ["r0"]),
        ({"expires_at": ["2030-01-01T00:00:00+00:00", "2031-06-01T03:00:00+03:00"]}, ["r0", "r2"]),
        ({"$or": [{"key1": "gamma"}, {"profile_key": "p2"}]}, ["r2", "r3"]),
        ({"$or": [{"key1": "alpha", "profile_key": "p1"}, {"key3": "only-key3"}]}, ["r0", "r4"]),
        ({"$or": [{"key1": {"$not": "alpha"}}, {"record_key": "r0"}]}, ["r0", "r1", "r3", "r4"]),
        ({"$or": [{"key2": {"$like": "zetkin"}}, {"key1": "beta"}]}, ["r1", "r2"]),
        ({"key1": "alpha", "$or": [{"profile_key": "p2"}, {"record_key": "r0"}]}, ["r0", "r2"]),
    ],
)
def test_find_filters(dataset: Api, flt: dict[str, Any], expected: list[str]) -> None:
    r = dataset.find("de", flt)
    assert r.status_code == 200, r.text
    body = r.json()
    assert sorted(x["record_key"] for x in body["data"]) == expected
    assert body["meta"] == {
        "count": len(expected),
        "limit": 100,
        "offset": 0,
        "total": len(expected),
    }
    assert all(list(x) == list(FIELDS) for x in body["data"])


# null and {"$not": null} on every key kind: "has no value" and "has a value", alone, with
# other operators and inside $or. The first row is the request a second client sent.
@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({"key2": "Anna Volkova", "key3": {"$not": None}}, []),
        ({"key1": "alpha", "key2": {"$not": None}}, ["r0", "r2"]),
        ({"key1": {"$not": None}}, ["r0", "r1", "r2", "r3"]),
        ({"key3": {"$not": None}}, ["r4"]),
        ({"key3": None}, ["r0", "r1", "r2", "r3"]),
        ({"key2": {"$not": None, "$like": "volk"}}, ["r0", "r1"]),
        ({"record_key": {"$not": None}}, ALL),
        ({"record_key": None}, []),
        ({"profile_key": {"$not": None}}, ["r0", "r1", "r2"]),
        ({"profile_key": None}, ["r3", "r4"]),
        ({"parent_key": {"$not": None}}, ["r3"]),
        ({"parent_key": None}, ["r0", "r1", "r2", "r4"]),
        ({"service_key1": {"$not": None}}, ["r0"]),
        ({"service_key2": {"$not": None}}, []),
        ({"range_key1": {"$not": None}}, ["r0", "r1", "r2", "r3"]),
        ({"range_key1": None}, ["r4"]),
        ({"range_key1": {"$not": None, "$gt": 0}}, ["r1", "r2"]),
        ({"range_key1": {"$not": [0, 10]}}, ["r2", "r3", "r4"]),  # a missing value passes
        ({"range_key2": {"$not": None}}, ["r4"]),
        ({"version": {"$not": None}}, ALL),
        ({"version": None}, []),
        ({"version": {"$not": None, "$lte": 1}}, ["r0", "r1", "r2", "r4"]),
        ({"expires_at": {"$not": None, "$lt": "2031-01-01"}}, ["r0"]),
        ({"$or": [{"key3": {"$not": None}}, {"parent_key": {"$not": None}}]}, ["r3", "r4"]),
        ({"$or": [{"key3": None}, {"profile_key": "p2"}]}, ["r0", "r1", "r2", "r3"]),
        ({"$or": [{"key1": "beta"}, {"service_key1": {"$not": None}}]}, ["r0", "r1"]),
    ],
)  # fmt: skip
def test_find_null_and_not_null_on_every_key_kind(
    dataset: Api, flt: dict[str, Any], expected: list[str]
) -> None:
    r = dataset.find("de", flt)
    assert r.status_code == 200, r.text
    assert sorted(x["record_key"] for x in r.json()["data"]) == expected


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"filter": {"search_keys": "abc", "key1": "x"}}, "search_keys cannot be combined"),
        ({"filter": {"search_keys": "ab"}}, "3 to 200"),
        ({"filter": {"search_keys": "a" * 201}}, "3 to 200"),
        ({"filter": {"search_keys": "abc", "$or": [{"key1": "a"}, {"key2": "b"}]}}, "cannot be combined with $or"),
        ({"filter": {"$or": [{"key1": "a"}]}}, "two or more"),
        ({"filter": {"$or": [{"key1": "a"}, {"$or": [{"key1": "a"}, {"key1": "b"}]}]}}, "only string keys"),
        ({"filter": {"$or": [{"key1": "a"}, {"range_key1": 1}]}}, "only string keys"),
        ({"filter": {"$or": [{"key1": "a"}, {}]}}, "non-empty"),
        ({"filter": {"range_key1": {"$gt": 1, "$gte": 2}}}, "$gt or $gte"),
        ({"filter": {"range_key1": {"$lt": 1, "$lte": 2}}}, "$lt or $lte"),
        ({"filter": {"range_key1": {"$gt": "1"}}}, "$gt takes an integer"),
        ({"filter": {"range_key1": {}}}, "cannot be empty"),
        ({"filter": {"range_key1": "1"}}, "give an integer"),
        ({"filter": {"range_key1": []}}, "give an integer"),
        ({"filter": {"version": {"$like": 1}}}, "unsupported operator"),
        ({"filter": {"key1": {"$regex": "a"}}}, "unsupported operator"),
        ({"filter": {"profile_key": {"$like": "a"}}}, "unsupported operator"),
        ({"filter": {"key1": 1}}, "give a string"),
        ({"filter": {"key1": {"$like": 1}}}, "$like takes a string"),
        ({"filter": {"key21": "a"}}, "unknown filter key"),
        ({"filter": {"created_at": None}}, "cannot be null"),
        ({"filter": {"updated_at": {"$not": None}}}, "cannot be null"),
        ({"filter": {"created_at": {"$not": None, "$gt": "2025-01-01"}}}, "cannot be null"),
        ({"filter": {"key1": [None]}}, "give a string"),
        ({"filter": {"key1": {"$not": []}}}, "give a string"),
        ({"filter": {"key1": {"$not": ["a", None]}}}, "give a string"),
        ({"filter": {"range_key1": {"$not": [1, None]}}}, "give an integer"),
        ({"filter": {"range_key1": {"$gt": None}}}, "$gt takes an integer"),
        ({"filter": {"version": {"$not": True}}}, "give an integer"),
        ({"filter": {"expires_at": {"$lt": None}}}, "ISO 8601"),
        ({"filter": {"expires_at": [None]}}, "ISO 8601"),
        ({"filter": {"key1": {"$like": None}}}, "$like takes a string"),
        ({"filter": {"$or": [{"key1": "a"}, {"range_key1": {"$not": None}}]}}, "only string keys"),
        ({"filter": {"created_at": "yesterday"}}, "not an ISO 8601"),
        ({"filter": []}, "filter must be a JSON object"),
        ({"filter": {}, "options": {"limit": 0}}, "options.limit"),
        ({"filter": {}, "options": {"limit": 101}}, "options.limit"),
        ({"filter": {}, "options": {"offset": -1}}, "options.offset"),
        ({"filter": {}, "options": {"sort": [{"body": "asc"}]}}, "cannot sort by"),
        ({"filter": {}, "options": {"sort": [{"version": "asc"}]}}, "cannot sort by"),
        ({"filter": {}, "options": {"sort": [{"key1": "up"}]}}, "'asc' or 'desc'"),
        ({"filter": {}, "options": {"sort": [{"key1": "asc", "key2": "asc"}]}}, "exactly one key"),
        ({"filter": {}, "options": {"page": 2}}, "unknown find option"),
        ({"filter": {}, "where": {}}, "unknown find request field"),
    ],
)  # fmt: skip
def test_find_refuses_bad_filters(dataset: Api, body: dict[str, Any], problem: str) -> None:
    r = dataset.http.post(f"{BASE}/de/find", json=body, headers=dataset.admin)
    assert r.status_code == 400, r.text
    assert problem in r.json()["detail"]


def test_find_sorts_pages_and_counts(dataset: Api) -> None:
    api = dataset
    # nulls last ascending, first descending (as PostgreSQL orders them)
    assert api.keys("de", {}, sort=[{"range_key1": "desc"}]) == ["r4", "r2", "r1", "r0", "r3"]
    assert api.keys("de", {}, sort=[{"range_key1": "asc"}]) == ["r3", "r0", "r1", "r2", "r4"]
    # Several keys: key1, then range_key1 descending within equal key1 values.
    assert api.keys("de", {}, sort=[{"key1": "asc"}, {"range_key1": "desc"}]) == [
        "r2", "r0", "r1", "r3", "r4",
    ]  # fmt: skip
    assert api.keys("de", {}, sort=[{"expires_at": "desc"}, {"created_at": "asc"}]) == [
        "r1",
        "r3",
        "r4",
        "r2",
        "r0",
    ]  # fmt: skip  (nulls first when descending)
    assert api.keys("de", {}, sort=[{"updated_at": "desc"}])[0] == "r1"
    assert api.keys("de", {}) == ALL  # default order: oldest first
    r = api.find("de", {}, limit=2, offset=1, sort=[{"range_key1": "desc"}])
    assert [x["record_key"] for x in r.json()["data"]] == ["r2", "r1"]
    assert r.json()["meta"] == {"count": 2, "limit": 2, "offset": 1, "total": 5}
    r = api.find("de", {"key1": "alpha"}, offset=5)
    assert r.json() == {"data": [], "meta": {"count": 0, "limit": 100, "offset": 5, "total": 2}}
    r = api.http.post(f"{BASE}/de/find", json={}, headers=api.admin)  # no filter: everything
    assert r.json()["meta"]["total"] == 5
    r = api.http.post(f"{BASE}/de/find", headers=api.admin)  # no body at all: refused
    assert r.status_code == 422


def test_find_at_scale_narrows_with_blind_indexes(api: Api) -> None:
    records = [{"record_key": f"k{i}", "key1": f"v{i % 7}", "range_key1": i} for i in range(300)]
    for i in range(0, 300, 100):
        r = api.http.post(
            f"{BASE}/us/batchWrite", json={"records": records[i : i + 100]}, headers=api.admin
        )
        assert r.status_code == 201
    r = api.find(
        "us", {"key1": "v3", "range_key1": {"$gte": 150}}, limit=5, sort=[{"range_key1": "asc"}]
    )
    body = r.json()
    assert [x["range_key1"] for x in body["data"]] == [150, 157, 164, 171, 178]
    assert body["meta"]["total"] == len([i for i in range(150, 300) if i % 7 == 3])
    assert api.find("us", {}).json()["meta"] == {
        "count": 100,
        "limit": 100,
        "offset": 0,
        "total": 300,
    }


# --- attachments ------------------------------------------------------------------------------


def test_attachments(api: Api) -> None:
    api.write("ru", {"record_key": "doc", "body": "b"})
    url = f"{BASE}/ru/doc/attachments"
    name = "Паспорт scan.pdf"
    r = api.http.post(url, files={"file": (name, b"%PDF-1 passport")}, headers=api.admin)
    assert r.status_code == 201
    meta = r.json()
    assert set(meta) == {
        "file_id", "filename", "hash", "mime_type", "size", "created_at", "updated_at",
        "download_link",
    }  # fmt: skip
    assert (meta["filename"], meta["mime_type"], meta["size"]) == (name, "application/pdf", 15)
    assert meta["hash"] == hashlib.sha256(b"%PDF-1 passport").hexdigest()
    assert meta["download_link"].endswith(f"{url}/{meta['file_id']}")
    # An unknown extension is octet-stream; an explicit type is kept.
    odd = api.http.post(url, files={"file": ("blob.zzz", b"?")}, headers=api.admin).json()
    assert odd["mime_type"] == "application/octet-stream"
    typed = api.http.post(
        url, files={"file": ("notes", b"n", "text/markdown")}, headers=api.admin
    ).json()
    assert typed["mime_type"] == "text/markdown"
    # Download: bytes, type, and the name percent-encoded as UTF-8.
    r = api.http.get(f"{url}/{meta['file_id']}", headers=api.admin)
    assert r.content == b"%PDF-1 passport"
    assert r.headers["content-type"].startswith("application/pdf")
    assert r.headers["content-disposition"] == "attachment; filename*=UTF-8''" + quote(
        name, safe=""
    )
    # Upsert by file name keeps the file_id and replaces the content.
    api.clock.tick(minutes=5)
    r = api.http.put(url, files={"file": (name, b"%PDF-2 passport v2")}, headers=api.admin)
    assert r.status_code == 201
    assert r.json()["file_id"] == meta["file_id"]
    assert (r.json()["size"], r.json()["created_at"], r.json()["updated_at"]) == (
        18, meta["created_at"], (T0 + dt.timedelta(minutes=5)).isoformat(),
    )  # fmt: skip
    assert api.http.get(f"{url}/{meta['file_id']}", headers=api.admin).content.endswith(b"v2")
    # POST with the same name adds a second file; PUT with a new name adds too.
    again = api.http.post(url, files={"file": (name, b"third")}, headers=api.admin).json()
    assert again["file_id"] != meta["file_id"]
    record = api.http.get(f"{BASE}/ru/doc", headers=api.admin).json()
    assert len(record["attachments"]) == 4
    # Metadata: read, change, refuse bad changes.
    r = api.http.get(f"{url}/{odd['file_id']}/meta", headers=api.admin)
    assert r.json() == odd
    r = api.http.patch(
        f"{url}/{odd['file_id']}/meta", json={"filename": "report.csv"}, headers=api.admin
    )
    assert (r.json()["filename"], r.json()["mime_type"]) == (
        "report.csv",
        "application/octet-stream",
    )
    r = api.http.patch(
        f"{url}/{odd['file_id']}/meta", json={"mime_type": "text/csv"}, headers=api.admin
    )
    assert (r.json()["filename"], r.json()["mime_type"]) == ("report.csv", "text/csv")
    for bad in ({}, {"size": 3}, {"filename": ""}, {"filename": None}, {"mime_type": 5}, []):
        r = api.http.patch(f"{url}/{odd['file_id']}/meta", json=bad, headers=api.admin)
        assert r.status_code == 400, bad
    # Delete.
    r = api.http.delete(f"{url}/{odd['file_id']}", headers=api.admin)
    assert (r.status_code, r.content) == (204, b"")
    for path in (f"{url}/{odd['file_id']}", f"{url}/{odd['file_id']}/meta"):
        assert api.http.get(path, headers=api.admin).status_code == 404
    assert api.http.delete(f"{url}/{odd['file_id']}", headers=api.admin).status_code == 404
    assert (
        api.http.post(
            f"{BASE}/ru/nope/attachments", files={"file": ("a", b"a")}, headers=api.admin
        ).status_code
        == 404
    )
    # Deleting the record deletes its files.
    store = api.vault.store("ru")
    assert [store.get(m["file_id"]) is not None for m in (meta, typed, again)] == [True] * 3
    api.http.delete(f"{BASE}/ru/doc", headers=api.admin)
    assert [store.get(m["file_id"]) for m in (meta, typed, again)] == [None] * 3
    assert store.count() == 0


def test_a_file_id_of_another_record_is_not_served(api: Api) -> None:
    api.write("ru", {"record_key": "mine"})
    api.write("ru", {"record_key": "theirs"})
    meta = api.http.post(
        f"{BASE}/ru/theirs/attachments", files={"file": ("t.txt", b"theirs")}, headers=api.admin
    ).json()
    r = api.http.get(f"{BASE}/ru/mine/attachments/{meta['file_id']}", headers=api.admin)
    assert r.status_code == 404


# --- expiry -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "when", [hours(-1), T0.isoformat(), "2025-09-01T15:00:00+03:00", "2020-01-01"]
)
def test_a_write_that_has_already_expired_is_refused(api: Api, when: str) -> None:
    api.write("de", {"record_key": "kept", "body": "old"})
    for path, body, where in (
        ("", {"record_key": "new", "expires_at": when}, ""),
        ("", {"record_key": "kept", "body": "new", "expires_at": when}, ""),
        ("/batchWrite", {"records": [{"record_key": "ok", "expires_at": hours(1)},
                                     {"record_key": "new", "expires_at": when}]}, "records[1]: "),
    ):  # fmt: skip
        r = api.http.post(f"{BASE}/de{path}", json=body, headers=api.admin)
        assert r.status_code == 400, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert (r.json()["code"], r.json()["detail"]) == (
            "bad_input",
            f"{where}expires_at is in the past",
        )
        assert when not in r.text
    # Nothing was written: not the batch's good record, not the upsert.
    assert api.keys("de", {}) == ["kept"]
    assert api.http.get(f"{BASE}/de/kept", headers=api.admin).json()["body"] == "old"
    assert api.write("de", {"record_key": "later", "expires_at": hours(1)})["expires_at"] == hours(
        1
    )


def test_expired_records_are_not_served(api: Api) -> None:
    api.write("de", {"record_key": "soon", "key1": "k", "profile_key": "p", "expires_at": hours(1)})
    api.write(
        "de", {"record_key": "later", "key1": "k", "profile_key": "p", "expires_at": hours(3)}
    )
    api.write("de", {"record_key": "never", "key1": "k"})
    fid = api.http.post(
        f"{BASE}/de/soon/attachments", files={"file": ("a.txt", b"data")}, headers=api.admin
    ).json()["file_id"]
    assert sorted(api.keys("de", {"key1": "k"})) == ["later", "never", "soon"]
    api.clock.tick(hours=1)  # "soon" expires at this very instant
    before = len(api.audit("de"))
    assert api.http.get(f"{BASE}/de/soon", headers=api.admin).status_code == 404
    for path in (f"/soon/attachments/{fid}", f"/soon/attachments/{fid}/meta"):
        assert api.http.get(f"{BASE}/de{path}", headers=api.admin).status_code == 404
    r = api.find("de", {"key1": "k"})
    assert sorted(x["record_key"] for x in r.json()["data"]) == ["later", "never"]
    assert r.json()["meta"]["total"] == 2
    assert api.keys("de", {"record_key": "soon"}) == []
    assert api.keys("de", {"expires_at": {"$not": None}}) == ["later"]
    assert api.keys("de", {"profile_key": "p"}, limit=1) == ["later"]  # the SDK's find_one
    # Nothing about the expired record was read (the audit has no read of it).
    soon = _rids(api, "de", ["soon"])[0]
    assert not [e for e in api.audit("de")[before:] if soon in e]
    api.clock.tick(hours=5)
    assert api.keys("de", {"key1": "k"}) == ["never"]


def test_a_write_over_an_expired_record_starts_afresh(api: Api) -> None:
    api.write("de", {"record_key": "k", "body": "old", "expires_at": hours(1)})
    api.http.post(f"{BASE}/de/k/attachments", files={"file": ("a.txt", b"x")}, headers=api.admin)
    api.clock.tick(hours=2)
    again = api.write("de", {"record_key": "k", "body": "new"})
    assert (again["created_at"], again["attachments"], again["expires_at"]) == (hours(2), [], None)
    erased = [json.loads(e) for e in api.audit("de") if '"action":"erase"' in e]
    assert [(e["detail"]["operation"], e["detail"]["files"]) for e in erased] == [("write", 1)]


def test_the_sweep_destroys_expired_records_and_shreds_last_keys(any_api: Api) -> None:
    api = any_api
    api.write("us", {"record_key": "a", "profile_key": "p", "body": "x", "expires_at": hours(1)})
    api.write("us", {"record_key": "b", "profile_key": "p", "body": "y"})
    api.write("us", {"record_key": "c", "profile_key": "q", "body": "z", "expires_at": hours(1)})
    api.write("us", {"record_key": "d", "body": "w", "expires_at": hours(1)})
    api.write("us", {"record_key": "e", "body": "v", "expires_at": hours(5)})
    fid = api.http.post(
        f"{BASE}/us/c/attachments", files={"file": ("c.txt", b"secret")}, headers=api.admin
    ).json()["file_id"]
    store, keys = api.vault.store("us"), api.vault.keystore("us")
    recs = dict(zip("abcde", _rids(api, "us", list("abcde")), strict=True))
    subject = {k: store.get(rid).subject_id for k, rid in recs.items()}  # type: ignore[union-attr]
    api.clock.tick(hours=2)
    sweeper = api.http.app.state.expiry  # type: ignore[attr-defined]  # the service's timer
    report = sweeper.sweep()
    assert (report["records"], report["keys_destroyed"], report["unavailable"]) == (3, 2, [])
    assert [s["site"] for s in report["sites"]] == ["ru", "de", "us"]
    # The rows and the attached file are gone; q's and d's keys went (their last records),
    # p's stays with b, which is still served.
    assert [store.get(recs[k]) is None for k in "abcde"] == [True, False, True, True, False]
    assert store.get(fid) is None
    have = keys.get_many(list(subject.values()))
    assert sorted(k for k, sid in subject.items() if sid in have) == ["a", "b", "e"]  # a, b: p
    assert api.http.get(f"{BASE}/us/b", headers=api.admin).json()["body"] == "y"
    assert sorted(api.keys("us", {})) == ["b", "e"]
    erased = [json.loads(e) for e in api.audit("us") if '"action":"erase"' in e]
    assert sorted((e["record"], e["detail"]["key_destroyed"], e["detail"]["files"]) for e in erased) == sorted(
        [(recs["a"], False, 0), (recs["c"], True, 1), (recs["d"], True, 0)]
    )  # fmt: skip
    assert all(e["detail"]["reason"] == "expired" and e["collection"] == COLLECTION for e in erased)
    assert all(report.ok for report in api.vault.verify_audit("us"))
    assert sweeper.sweep()["records"] == 0  # nothing left to do


def test_a_sweep_goes_on_past_a_site_that_is_down(api: Api) -> None:
    api.write("ru", {"record_key": "r", "expires_at": hours(1)})
    api.write("us", {"record_key": "u", "expires_at": hours(1)})
    api.clock.tick(hours=2)
    api.deployment.stop("ru")
    report = api.http.app.state.expiry.sweep()  # type: ignore[attr-defined]
    assert (report["records"], report["unavailable"]) == (1, ["ru"])
    assert [s["site"] for s in report["sites"]] == ["de", "us"]
    api.deployment.start("ru")
    assert api.http.app.state.expiry.sweep()["records"] == 1  # type: ignore[attr-defined]
    assert api.vault.store("ru").get(_rids(api, "ru", ["r"])[0]) is None


def test_the_service_sweeps_on_a_timer(tmp_path: Path, engine: PolicyEngine) -> None:
    deployment = Deployment("sqlite", tmp_path, sqlite_urls(), None)
    clock = Clock()
    vault = Domicile(deployment.config, clock=clock, engine=engine)
    registry = ClientRegistry(tmp_path / "clients.json")
    _, key = registry.add("admin", ["admin"], api_key=True)
    headers = {"Authorization": f"Bearer {key}", "x-env-id": "default"}
    app = create_app(vault, clients=registry, settings=ServiceSettings(expire_every=0.05))
    with TestClient(app) as http:
        r = http.post(
            f"{BASE}/ru", json={"record_key": "k", "expires_at": hours(1)}, headers=headers
        )
        assert r.status_code == 201
        rid = app.state.incountry._rid("ru", "k")
        assert vault.store("ru").get(rid) is not None
        clock.tick(hours=1)
        deadline = time.monotonic() + 10
        while vault.store("ru").get(rid) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert vault.store("ru").get(rid) is None
    assert '"reason":"expired"' in "\n".join(row.payload for row in vault.store("ru").audit())


def test_domicile_expire_sweeps_on_demand(tmp_path: Path, engine: PolicyEngine) -> None:
    deployment = Deployment("sqlite", tmp_path, sqlite_urls(), None)
    past = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)  # written then; expired now, in real time
    with Domicile(deployment.config, clock=lambda: past, engine=engine) as vault:
        storage = InCountryStorage(vault)
        site = storage.site_for("de")
        caller = Caller("test")
        storage.write(
            site, [{"record_key": "old", "expires_at": "2021-01-01"}], caller, batch=False
        )
        storage.write(
            site, [{"record_key": "kept", "expires_at": "2999-01-01"}], caller, batch=False
        )
    config = str(tmp_path / "domicile.yaml")
    (tmp_path / "domicile.yaml").write_text(deployment.config_text)
    result = CliRunner().invoke(cli, ["expire", "--site", "de", "--json", "--config", config])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["records"], report["keys_destroyed"], report["unavailable"]) == (1, 1, [])
    result = CliRunner().invoke(cli, ["expire", "--config", config])
    assert result.exit_code == 0, result.output
    assert "de: 0 expired records destroyed" in result.stdout
    result = CliRunner().invoke(cli, ["expire", "--site", "mars", "--config", config])
    assert result.exit_code == 2
    assert "no site of that name" in result.stderr


# --- countries, authentication, scopes --------------------------------------------------------


def test_healthcheck(api: Api) -> None:
    assert api.http.get("/healthcheck").json() == {"result": "ok"}


def test_a_country_without_a_site_is_refused_and_audited(api: Api) -> None:
    for method, path in (("POST", ""), ("GET", "/k"), ("POST", "/find")):
        r = api.http.request(
            method, f"{BASE}/fr{path}", json={"record_key": "k"}, headers=api.admin
        )
        assert r.status_code == 404
        assert r.json()["code"] == "no_site"
    assert '"reason":"no_site"' in api.audit("us")[-1]
    assert "FR" not in api.audit("us")[-1]  # a path value never reaches the audit
    assert [s.records for s in api.vault.sites()] == [0, 0, 0]
    for bad in ("RU", "rus", "r1"):
        r = api.http.get(f"{BASE}/{bad}/k", headers=api.admin)
        assert r.status_code == 400


def test_authentication_and_environment(api: Api) -> None:
    url = f"{BASE}/ru/k"
    assert api.http.get(url, headers={"x-env-id": "default"}).status_code == 401
    r = api.http.get(url, headers={"x-env-id": "default", "Authorization": "Bearer nonsense"})
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    no_env = {"Authorization": api.admin["Authorization"]}
    assert api.http.get(url, headers=no_env).status_code == 403
    assert api.http.get(url, headers={**no_env, "x-env-id": "prod"}).status_code == 403
    assert '"reason":"wrong environment"' in api.audit("us")[-1]


def test_oauth2_client_credentials_as_the_sdk_sends_them(api: Api) -> None:
    client, secret = api.clients.add(
        "sdk", ["records:read", "records:write", "site:ru", "purpose:incountry"]
    )
    basic = base64.b64encode(f"{client.id}:{secret}".encode()).decode()
    form = {"grant_type": "client_credentials", "scope": "default", "audience": "http://x"}
    r = api.http.post("/oauth2/token", data=form, headers={"Authorization": f"Basic {basic}"})
    assert r.status_code == 200
    token = r.json()
    assert token["token_type"] == "bearer"
    assert token["expires_in"] > 0
    headers = {"Authorization": f"Bearer {token['access_token']}", "x-env-id": "default"}
    r = api.http.post(f"{BASE}/ru", json={"record_key": "t"}, headers=headers)
    assert r.status_code == 201


def _basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


GRANT = {"grant_type": "client_credentials", "scope": "default", "audience": "http://x"}


# Every refusal of the token endpoint is an RFC 6749 5.2 error with InCountry's status_code.
@pytest.mark.parametrize(
    ("credentials", "form", "status", "error"),
    [
        ("wrong-secret", GRANT, 401, "invalid_client"),
        ("unknown-id", GRANT, 401, "invalid_client"),
        ("none", GRANT, 401, "invalid_client"),
        ("form-wrong-secret", GRANT, 401, "invalid_client"),
        ("garbled-basic", GRANT, 401, "invalid_client"),
        ("right", {**GRANT, "scope": "other"}, 400, "invalid_scope"),
        ("right", {**GRANT, "scope": "   "}, 400, "invalid_scope"),
        ("right", {**GRANT, "grant_type": "password"}, 400, "unsupported_grant_type"),
        ("right", {**GRANT, "grant_type": "authorization_code"}, 400, "unsupported_grant_type"),
        ("right", {"scope": "default"}, 400, "invalid_request"),
        ("right", {**GRANT, "grant_type": ""}, 400, "invalid_request"),
    ],
)  # fmt: skip
def test_token_errors_are_oauth2_errors(
    api: Api, credentials: str, form: dict[str, str], status: int, error: str
) -> None:
    client, secret = api.clients.add("sdk", ["records:read", "site:ru", "purpose:incountry"])
    headers: dict[str, str] = {}
    data = dict(form)
    if credentials == "right":
        headers = _basic(client.id, secret)
    elif credentials == "wrong-secret":
        headers = _basic(client.id, secret[::-1])
    elif credentials == "unknown-id":
        headers = _basic("dc_nobody", secret)
    elif credentials == "form-wrong-secret":
        data.update(client_id=client.id, client_secret=secret[::-1])
    elif credentials == "garbled-basic":
        headers = {"Authorization": "Basic %%%"}
    before = len(api.audit("us"))
    r = api.http.post("/oauth2/token", data=data, headers=headers)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert set(body) == {"error", "error_description", "status_code"}
    assert (body["error"], body["status_code"]) == (error, status)
    assert body["error_description"]
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Basic")
    else:
        assert "www-authenticate" not in r.headers
    assert secret not in r.text
    assert secret[::-1] not in r.text
    refusals = [e for e in api.audit("us")[before:] if '"action":"refuse"' in e]
    assert len(refusals) == 1  # each refusal is audited


def test_a_json_token_request_is_an_invalid_request(api: Api) -> None:
    client, secret = api.clients.add("sdk", ["records:read"])
    r = api.http.post("/oauth2/token", json=GRANT, headers=_basic(client.id, secret))
    assert (r.status_code, r.json()["error"], r.json()["status_code"]) == (
        400, "invalid_request", 400,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("scopes", "method", "path", "missing"),
    [
        (["records:read", "site:ru"], "POST", "", "records:write"),
        (["records:read", "site:ru"], "DELETE", "/k", "records:delete"),
        (["records:read", "site:ru"], "POST", "/k/attachments", "records:write"),
        (["records:write", "site:ru"], "GET", "/k", "records:read"),
        (["records:write", "site:ru"], "POST", "/find", "records:read"),
        (["records:read", "records:write", "site:de"], "GET", "/k", "site:ru"),
        (["records:read", "site:ru", "purpose:billing"], "GET", "/k", "purpose:incountry"),
        (["records:read", "site:ru"], "GET", "/k", "purpose:incountry"),
        (["records:delete", "site:ru"], "POST", "/batchWrite", "records:write"),
        (["records:read", "site:ru"], "POST", "/batchDelete", "records:delete"),
    ],
)
def test_scopes_are_enforced_and_refusals_audited(
    api: Api, scopes: list[str], method: str, path: str, missing: str
) -> None:
    api.write("ru", {"record_key": "k", "body": "b"})
    headers = api.headers(scopes)
    kwargs: dict[str, Any] = (
        {"files": {"file": ("a", b"a")}} if "attachments" in path else {"json": {}}
    )
    r = api.http.request(method, f"{BASE}/ru{path}", headers=headers, **kwargs)
    assert r.status_code == 403, r.text
    assert missing in r.json()["detail"]
    last = json.loads(api.audit("us")[-1])
    assert (last["action"], last["detail"]["missing_scope"]) == ("refuse", missing)
    assert api.http.get(f"{BASE}/ru/k", headers=api.admin).json()["body"] == "b"


def test_scoped_clients_can_do_their_job(api: Api) -> None:
    rw = api.headers(["records:read", "records:write", "records:delete", "site:ru", "purpose:*"])
    r = api.http.post(f"{BASE}/ru", json={"record_key": "k", "body": "b"}, headers=rw)
    assert r.status_code == 201
    reader = api.headers(["records:read", "site:ru", "purpose:incountry"])
    assert api.http.get(f"{BASE}/ru/k", headers=reader).status_code == 200
    assert api.http.post(f"{BASE}/ru/find", json={}, headers=reader).status_code == 200
    assert api.http.delete(f"{BASE}/ru/k", headers=rw).status_code == 200


# --- policy, failure, audit, encryption at rest -----------------------------------------------


def test_policy_refusals_are_enforced_and_audited_at_the_site(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.write("de", {"record_key": "kept", "body": "b"})
    real = api.vault._decide
    # A real refusal (a Russian citizen's data stored in Germany after 1 July 2025), returned
    # for whichever operation is under test.
    deny = real(resolve(SubjectEvidence(citizenship=("RU",))), ["user"], "store", "DE")
    assert deny.outcome.value == "deny"

    def refuse(operation: str) -> Any:
        def decide(residency: Any, cats: Any, op: str, *args: Any, **kwargs: Any) -> Any:
            return deny if op == operation else real(residency, cats, op, *args, **kwargs)

        return decide

    monkeypatch.setattr(api.vault, "_decide", refuse("store"))
    r = api.http.post(f"{BASE}/de", json={"record_key": "new", "body": "b"}, headers=api.admin)
    assert r.status_code == 403
    assert r.json()["code"] == "policy_refused"
    assert "ru.localization.2025" in [x["id"] for x in r.json()["decision"]["rules"]]
    last = json.loads(api.audit("de")[-1])
    assert (last["action"], last["collection"], last["decision"]) == ("refuse", COLLECTION, "deny")
    assert last["detail"]["policy_operation"] == "store"
    assert api.keys("de", {}) == ["kept"]
    # An update of an existing record asks "update"; reads, finds and deletes their own.
    for operation, method, path, body in (
        ("update", "POST", "", {"record_key": "kept", "body": "new"}),
        ("retrieve", "GET", "/kept", None),
        ("retrieve", "POST", "/find", {}),
        ("delete", "DELETE", "/kept", None),
    ):
        monkeypatch.setattr(api.vault, "_decide", refuse(operation))
        r = api.http.request(method, f"{BASE}/de{path}", json=body, headers=api.admin)
        assert r.status_code == 403, (operation, r.text)
        assert json.loads(api.audit("de")[-1])["action"] == "refuse"
    monkeypatch.setattr(api.vault, "_decide", real)
    assert api.http.get(f"{BASE}/de/kept", headers=api.admin).json()["body"] == "b"


def test_fail_closed_when_the_site_is_down(api: Api) -> None:
    api.write("ru", {"record_key": "k", "body": "b"})
    api.deployment.stop("ru")
    for method, path, body in (
        ("POST", "", {"record_key": "k2", "body": "b"}),
        ("GET", "/k", None),
        ("POST", "/find", {}),
        ("DELETE", "/k", None),
        ("POST", "/batchWrite", {"records": [{"record_key": "k3"}]}),
    ):
        r = api.http.request(method, f"{BASE}/ru{path}", json=body, headers=api.admin)
        assert r.status_code == 503, r.text
        assert (r.json()["code"], r.json()["site"]) == ("site_unavailable", "ru")
    last = json.loads(api.audit("us")[-1])
    assert (last["action"], last["detail"]["reason"], last["detail"]["home_site"]) == (
        "refuse", "site_unavailable", "ru",
    )  # fmt: skip
    # Nothing went elsewhere; other countries carry on.
    assert api.keys("de", {}) == []
    assert api.keys("us", {}) == []
    api.write("de", {"record_key": "k2"})
    api.deployment.start("ru")
    api.write("ru", {"record_key": "k4"})
    assert sorted(api.keys("ru", {})) == ["k", "k4"]  # the site came back with its data


def test_every_operation_is_in_the_sites_audit_without_values(api: Api) -> None:
    api.write("ru", {"record_key": "Ivanov", "body": "Ivan Ivanov's body", "key1": "ivanov@mail"})
    api.write("ru", {"record_key": "Ivanov", "body": "Ivan Ivanov's new body"})
    api.http.get(f"{BASE}/ru/Ivanov", headers=api.admin)
    api.find("ru", {"key1": "ivanov@mail"})
    api.find("ru", {"record_key": "Ivanov"})
    fid = api.http.post(
        f"{BASE}/ru/Ivanov/attachments",
        files={"file": ("ivanov.txt", b"Ivanov")},
        headers=api.admin,
    ).json()["file_id"]
    api.http.get(f"{BASE}/ru/Ivanov/attachments/{fid}", headers=api.admin)
    api.http.delete(f"{BASE}/ru/Ivanov", headers=api.admin)
    entries = [json.loads(p) for p in api.audit("ru")]
    assert [(e["action"], e["detail"]["operation"]) for e in entries] == [
        ("write", "write"), ("update", "write"), ("read", "read"), ("read", "find"),
        ("update", "add_attachment"), ("read", "get_attachment"), ("delete", "delete"),
    ]  # fmt: skip
    rid = entries[0]["record"]
    assert all(e["record"] == rid and e["collection"] == COLLECTION for e in entries)
    assert all(e["purpose"] == "incountry" and e["site"] == e["requester"] == "ru" for e in entries)
    assert entries[0]["fields"] == ["body", "is_encrypted", "key1", "record_key", "version"]
    assert entries[0]["rules"] == ["ru.localization.2025", "ru.notice.art22"]
    text = "\n".join(api.audit("ru")).lower()
    assert "ivan" not in text
    assert all(r.ok for r in api.vault.verify_audit())


def test_no_plaintext_at_rest_in_any_mode(any_api: Api) -> None:
    """Client-side ciphertexts, ``pt:`` bodies with plaintext keys (``encrypt=False``,
    ``hash_search_keys=False``) and server-side-encryption requests: every value is sealed."""
    api = any_api
    secrets = {
        "name": "Yevgenia Razumovskaya", "email": "y.razumovskaya@example.ru",
        "passport": "4509 123456", "file": "Razumovskaya passport scan", "ctext": "2:U2VhbGVkQnlDbGllbnQ=",
    }  # fmt: skip
    payload = json.dumps(
        {"meta": {"record_key": "pt-rec", "key1": secrets["email"]}, "payload": secrets["name"]}
    )
    pt_body = "pt:" + base64.b64encode(payload.encode()).decode()
    hashed = hashlib.sha256(f"{secrets['email']}:default".encode()).hexdigest()
    api.write("ru", {"record_key": hashed, "body": secrets["ctext"], "key1": hashed, "version": 1})
    api.write("ru", {"record_key": "pt-rec-" + secrets["passport"], "body": pt_body,
                     "key1": secrets["email"], "key2": secrets["name"], "profile_key": secrets["email"]})  # fmt: skip
    sse = {"X-Encrypted-Storage": "true"}
    api.write("ru", {"record_key": secrets["email"], "body": secrets["name"], "key3": secrets["passport"],
                     "service_key2": secrets["name"], "precommit_body": secrets["passport"]}, **sse)  # fmt: skip
    api.http.post(
        f"{BASE}/ru/{quote(secrets['email'])}/attachments",
        files={"file": (secrets["name"] + ".txt", secrets["file"].encode())},
        headers={**api.admin, **sse},
    )
    # Everything can be found and read back...
    assert api.keys("ru", {"key1": secrets["email"]}) == ["pt-rec-" + secrets["passport"]]
    assert api.keys("ru", {"search_keys": "razumov"}) == ["pt-rec-" + secrets["passport"]]
    got = api.http.get(f"{BASE}/ru/{quote(secrets['email'])}", headers={**api.admin, **sse}).json()
    assert (got["body"], got["key3"], got["attachments"][0]["size"]) == (
        secrets["name"], secrets["passport"], len(secrets["file"]),
    )  # fmt: skip
    # ...but no byte of any store holds a value, a client-side hash or a pt: body.
    raw = api.deployment.everything()
    assert len(raw) > 10_000
    for value in [
        *secrets.values(),
        pt_body,
        hashed,
        payload,
        base64.b64encode(payload.encode()).decode(),
    ]:
        assert value.encode() not in raw, value
        assert value.encode("utf-16-le") not in raw, value
    assert "razumov" not in "\n".join(api.audit("ru")).lower()


def test_openapi_documents_the_storage_api(api: Api) -> None:
    paths = api.http.get("/openapi.json").json()["paths"]
    assert {
        "/healthcheck", f"{BASE}/{{country}}", f"{BASE}/{{country}}/find",
        f"{BASE}/{{country}}/batchWrite", f"{BASE}/{{country}}/batchDelete",
        f"{BASE}/{{country}}/{{record_key}}", f"{BASE}/{{country}}/{{record_key}}/attachments",
        f"{BASE}/{{country}}/{{record_key}}/attachments/{{file_id}}",
        f"{BASE}/{{country}}/{{record_key}}/attachments/{{file_id}}/meta",
    } <= set(paths)  # fmt: skip
    assert FILES  # attachments are records of their own collection
