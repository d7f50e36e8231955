"""Drives a live ``domicile serve`` with the real, unmodified InCountry Python SDK.

Run by ``test_incountry_sdk.py`` with the Python of a virtual environment holding
``incountry==5.0.0`` and ``pydantic<2`` (never with domicile's own environment). Its only
argument is a JSON file naming the endpoint and the credentials (with ``node`` and
``other``: a federation node's country and another node's, for the subset ``at_node``). Every check is an
``assert``; on success it prints one JSON object on stdout: what ran, and the plaintext
values it sent, so that the test can look for them in the sites' raw bytes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import io
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import incountry
from incountry import (
    EncryptionType,
    SecretKeyAccessor,
    Storage,
    StorageServerException,
    get_salted_hash,
)

ENV = "default"
SECRET_V0 = "domicile-sdk-test-secret-version-zero"
SECRET_V1 = "domicile-sdk-test-secret-version-one"
UTC = dt.UTC
FUTURE = dt.datetime(2031, 5, 17, 8, 30, tzinfo=UTC)
LATER = dt.datetime(2033, 1, 2, 3, 4, 5, tzinfo=UTC)

sent: list[str] = []  # plaintext values sent to the server: none may be found at rest
ran: list[str] = []


def accessor(current: int) -> SecretKeyAccessor:
    secrets = [{"secret": SECRET_V0, "version": 0}, {"secret": SECRET_V1, "version": 1}]
    return SecretKeyAccessor(lambda: {"currentVersion": current, "secrets": secrets[: current + 1]})


def status_of(call: Callable[[], Any]) -> int:
    """The HTTP status of a call that must fail."""
    try:
        call()
    except StorageServerException as exc:
        if exc.status_code is None:
            raise AssertionError(f"no HTTP status: {exc}") from exc
        return int(exc.status_code)
    raise AssertionError("the call was expected to fail")


def keys_of(found: dict[str, Any]) -> list[str]:
    return [r["record_key"] for r in found["records"]]


def people(tag: str) -> list[dict[str, Any]]:
    """Six records with every kind of key; names and bodies are personal data."""
    cities = ["Kazan", "Omsk", "Kazan", "Tver", "Omsk", "Kazan"]
    names = [
        "Zinaida Volkonskaya", "Yaroslav Volkov", "Xenia Belova", "Wladimir Orlov",
        "Vasilisa Volkova", "Ulyana Krylova",
    ]  # fmt: skip
    out = []
    for i, (city, name) in enumerate(zip(cities, names, strict=True)):
        rec: dict[str, Any] = {
            "record_key": f"{tag}-person-{i}",
            "body": json.dumps({"name": name, "note": f"{tag} secret note {i}"}),
            "precommit_body": f"{tag} precommit {i}",
            "profile_key": f"{tag}-profile-{i % 2}",
            "parent_key": f"{tag}-parent",
            "service_key1": f"{tag}-service-{i % 3}",
            "key1": f"{tag}-{city}",
            "key2": f"{tag} {name}",
            "key20": tag,
            "range_key1": i * 10,
            "range_key2": -(2**40) + i,
        }
        if i % 3 == 0:
            rec["expires_at"] = FUTURE + dt.timedelta(days=i)
        out.append(rec)
        sent.extend([rec["record_key"], rec["body"], rec["key2"], name, f"{tag} secret note {i}"])
    return out


def same(got: dict[str, Any], want: dict[str, Any]) -> None:
    for key, value in want.items():
        assert got[key] == value, (key, got[key], value)
    for key in ("key3", "key19", "range_key10", "service_key5"):
        if key not in want:
            assert got[key] is None, key


def full(storage: Storage, cc: str, tag: str, *, plaintext_keys: bool) -> None:
    """Every storage call and every kind of filter, in one country."""
    recs = people(tag)
    single, batch = recs[0], recs[1:]

    written = storage.write(country=cc, **single)["record"]
    same(written, single)
    assert written["version"] in (0, 1)
    assert isinstance(written["created_at"], dt.datetime)
    assert written["attachments"] == []
    out = storage.batch_write(country=cc, records=batch)["records"]
    assert [r["record_key"] for r in out] == [r["record_key"] for r in batch]
    for rec in recs:
        same(storage.read(country=cc, record_key=rec["record_key"])["record"], rec)

    # Upsert: same record_key, new body; created_at stays, updated_at moves on.
    before = storage.read(country=cc, record_key=single["record_key"])["record"]
    changed = {**single, "body": json.dumps({"name": "Zinaida V.", "v": 2}), "key3": f"{tag}-k3"}
    storage.write(country=cc, **changed)
    after = storage.read(country=cc, record_key=single["record_key"])["record"]
    same(after, changed)
    assert after["created_at"] == before["created_at"]
    assert after["updated_at"] >= before["updated_at"]
    recs[0] = changed
    sent.append(changed["body"])

    def find(**filters: Any) -> list[str]:
        return sorted(keys_of(storage.find(country=cc, key20=tag, **filters)))

    k = [r["record_key"] for r in recs]
    everything = storage.find(country=cc, key20=tag)
    assert everything["meta"] == {"count": 6, "limit": 100, "offset": 0, "total": 6}
    assert sorted(keys_of(everything)) == sorted(k)
    assert find(key1=f"{tag}-Kazan") == sorted([k[0], k[2], k[5]])
    assert find(key1=[f"{tag}-Omsk", f"{tag}-Tver"]) == sorted([k[1], k[3], k[4]])
    assert find(key1={"$not": f"{tag}-Kazan"}) == sorted([k[1], k[3], k[4]])
    assert find(key1={"$not": [f"{tag}-Kazan", f"{tag}-Omsk"]}) == [k[3]]
    assert find(record_key=[k[1], k[4]]) == sorted([k[1], k[4]])
    assert find(profile_key=f"{tag}-profile-1") == sorted([k[1], k[3], k[5]])
    assert find(parent_key=f"{tag}-parent", service_key1=f"{tag}-service-0") == sorted([k[0], k[3]])
    assert find(key3=f"{tag}-k3") == [k[0]]
    assert find(range_key1=20) == [k[2]]
    assert find(range_key1=[0, 30, 999]) == sorted([k[0], k[3]])
    assert find(range_key1={"$not": [0, 10]}) == sorted(k[2:])
    assert find(range_key1={"$gt": 10, "$lte": 40}) == sorted(k[2:5])
    assert find(range_key1={"$gte": 10, "$lt": 40}) == sorted(k[1:4])
    assert find(range_key2={"$lt": -(2**40) + 2}) == sorted(k[:2])
    assert find(version={"$gte": 0}) == sorted(k)
    assert find(expires_at=None) == sorted([k[1], k[2], k[4], k[5]])
    assert find(expires_at={"$not": None}) == sorted([k[0], k[3]])
    assert find(expires_at={"$gt": FUTURE + dt.timedelta(days=1)}) == [k[3]]
    assert find(expires_at=FUTURE) == [k[0]]
    created = storage.read(country=cc, record_key=k[5])["record"]["created_at"]
    assert find(created_at={"$lte": created}) == sorted(k)
    assert find(created_at={"$gt": created}) == []
    assert find(updated_at={"$gte": after["updated_at"]}) == [k[0]]
    assert find(
        **{"$or": [{"key1": f"{tag}-Tver"}, {"profile_key": f"{tag}-profile-0"}]}
    ) == sorted([k[0], k[2], k[3], k[4]])
    assert find(
        **{
            "$or": [
                {"record_key": k[5]},
                {"key1": f"{tag}-Omsk", "service_key1": f"{tag}-service-1"},
            ]
        }
    ) == sorted([k[1], k[4], k[5]])
    if plaintext_keys:  # partial matches need keys the server can read (hash_search_keys=False)
        assert find(key2={"$like": "volk"}) == sorted([k[0], k[1], k[4]])
        assert find(key2={"$like": "VOLKOV"}) == sorted([k[1], k[4]])
        assert find(key2={"$like": "volk", "$not": f"{tag} Yaroslav Volkov"}) == sorted(
            [k[0], k[4]]
        )
        found = storage.find(country=cc, search_keys="olkonsk")
        assert keys_of(found) == [k[0]]
        assert storage.find(country=cc, search_keys=f"{tag} X")["meta"]["total"] == 1

    # Sorting and paging.
    desc = storage.find(country=cc, key20=tag, sort=[{"range_key1": "desc"}])
    assert keys_of(desc) == list(reversed(k))
    page = storage.find(country=cc, key20=tag, sort=[{"range_key1": "asc"}], limit=2, offset=3)
    assert keys_of(page) == k[3:5]
    assert page["meta"] == {"count": 2, "limit": 2, "offset": 3, "total": 6}
    by_city = storage.find(country=cc, key20=tag, sort=[{"key1": "asc"}, {"range_key1": "desc"}])

    def stored_key1(r: dict[str, Any]) -> str:  # the server sorts what it holds: maybe hashes
        return r["key1"] if plaintext_keys else get_salted_hash(r["key1"], ENV)

    expected = sorted(recs, key=lambda r: (stored_key1(r), -r["range_key1"]))
    assert keys_of(by_city) == [r["record_key"] for r in expected]
    nulls = storage.find(country=cc, key20=tag, sort=[{"expires_at": "asc"}, {"range_key1": "asc"}])
    assert keys_of(nulls) == [k[0], k[3], k[1], k[2], k[4], k[5]]  # nulls last
    one = storage.find_one(country=cc, key20=tag, key1=f"{tag}-Tver")
    assert one is not None
    assert one["record"]["record_key"] == k[3]
    assert storage.find_one(country=cc, key20=tag, key1=f"{tag}-Nowhere") is None

    # Attachments.
    folder = Path(tempfile.mkdtemp())
    report = folder / f"{tag} Отчёт.txt"
    report.write_bytes(f"{tag} the first version of a private report".encode())
    sent.extend([report.name, report.read_text()])
    with report.open("rb") as fh:
        meta = storage.add_attachment(country=cc, record_key=k[3], file=fh)["attachment_meta"]
    assert meta["filename"] == report.name
    assert meta["mime_type"] == "text/plain"
    assert meta["size"] == report.stat().st_size
    assert meta["hash"] == hashlib.sha256(report.read_bytes()).hexdigest()
    assert meta["download_link"]
    blob = io.BytesIO(json.dumps({"ssn": f"{tag}-123-45-6789"}).encode())
    blob.name = "data.json"
    sent.append(f"{tag}-123-45-6789")
    other = storage.add_attachment(
        country=cc, record_key=k[3], file=blob, mime_type="application/x-custom"
    )["attachment_meta"]
    assert other["mime_type"] == "application/x-custom"
    assert other["file_id"] != meta["file_id"]
    report.write_bytes(f"{tag} the second, longer version of the private report".encode())
    sent.append(report.read_text())
    replaced = storage.add_attachment(country=cc, record_key=k[3], file=str(report), upsert=True)[
        "attachment_meta"
    ]
    assert replaced["file_id"] == meta["file_id"]
    assert replaced["size"] == report.stat().st_size
    got = storage.get_attachment_file(country=cc, record_key=k[3], file_id=meta["file_id"])
    assert got["attachment_data"]["filename"] == report.name
    assert got["attachment_data"]["file"].read() == report.read_bytes()
    m = storage.get_attachment_meta(country=cc, record_key=k[3], file_id=other["file_id"])
    assert m["attachment_meta"]["filename"] == "data.json"
    upd = storage.update_attachment_meta(
        country=cc, record_key=k[3], file_id=other["file_id"], filename="renamed.csv",
        mime_type="text/csv",
    )["attachment_meta"]  # fmt: skip
    assert (upd["filename"], upd["mime_type"]) == ("renamed.csv", "text/csv")
    upd = storage.update_attachment_meta(
        country=cc, record_key=k[3], file_id=other["file_id"], filename="again.csv"
    )["attachment_meta"]
    assert (upd["filename"], upd["mime_type"]) == ("again.csv", "text/csv")
    attached = storage.read(country=cc, record_key=k[3])["record"]["attachments"]
    assert sorted(a["filename"] for a in attached) == sorted([report.name, "again.csv"])
    assert storage.delete_attachment(country=cc, record_key=k[3], file_id=other["file_id"]) == {
        "success": True
    }
    gone = other["file_id"]
    assert (
        status_of(lambda: storage.get_attachment_meta(country=cc, record_key=k[3], file_id=gone))
        == 404
    )
    assert len(storage.read(country=cc, record_key=k[3])["record"]["attachments"]) == 1
    # The record keeps its attachment through an upsert.
    storage.write(country=cc, **{**recs[3], "body": "rewritten"})
    recs[3] = {**recs[3], "body": "rewritten"}
    assert len(storage.read(country=cc, record_key=k[3])["record"]["attachments"]) == 1

    # Deletes.
    assert storage.delete(country=cc, record_key=k[0]) == {"success": True}
    assert status_of(lambda: storage.read(country=cc, record_key=k[0])) == 404
    assert status_of(lambda: storage.delete(country=cc, record_key=k[0])) == 404
    assert storage.batch_delete(country=cc, record_key=[k[1], k[3]]) == {"success": True}
    assert find() == sorted([k[2], k[4], k[5]])
    assert (
        status_of(
            lambda: storage.get_attachment_meta(
                country=cc, record_key=k[3], file_id=meta["file_id"]
            )
        )
        == 404
    )

    assert storage.health_check(country=cc) == {"result": True}
    # A country with no site is refused, never served from another country.
    assert status_of(lambda: storage.read(country="fr", record_key=k[2])) == 404
    assert status_of(lambda: storage.write(country="fr", record_key="x", body="y")) == 404
    ran.append(f"full:{cc}:{tag}")


def server_side(storage: Storage, cc: str, tag: str) -> None:
    """X-Encrypted-Storage: raw keys and body go to the server, which must hash and seal
    them, and come back raw."""
    recs = [
        {
            "record_key": f"{tag}-raw-{i}", "body": f"{tag} raw body of Quentin Quarles {i}",
            "profile_key": f"{tag}-raw-profile", "key1": f"{tag}-raw-key-{i % 2}",
            "key5": f"{tag} Quentin Quarles", "range_key3": i,
        }
        for i in range(4)
    ]  # fmt: skip
    for r in recs:
        sent.extend([r["record_key"], r["body"], r["key1"], r["key5"]])
    written = storage.write(country=cc, **recs[0])["record"]
    same(written, recs[0])
    assert written["is_encrypted"] is True
    storage.batch_write(country=cc, records=recs[1:])
    for r in recs:
        same(storage.read(country=cc, record_key=r["record_key"])["record"], r)
    found = storage.find(country=cc, key1=f"{tag}-raw-key-1", sort=[{"range_key3": "desc"}])
    assert keys_of(found) == [recs[3]["record_key"], recs[1]["record_key"]]
    assert storage.find(country=cc, search_keys="Quentin Quarl")["meta"]["total"] == 4
    assert storage.find(country=cc, key5={"$like": "quentin"})["meta"]["total"] == 4
    storage.delete(country=cc, record_key=recs[0]["record_key"])
    assert status_of(lambda: storage.read(country=cc, record_key=recs[0]["record_key"])) == 404
    ran.append(f"server_side:{cc}")


def migrate(endpoint: str, key: str, cc: str, tag: str) -> None:
    """Key rotation on the client side: records written under secret version 0 are found by
    ``version $not 1`` and written back under version 1."""
    old = Storage(
        environment_id=ENV, oauth_token=key, endpoint=endpoint, secret_key_accessor=accessor(0)
    )
    recs = [
        {"record_key": f"{tag}-rot-{i}", "body": f"{tag} rotating secret {i}", "key1": f"{tag}-rot"}
        for i in range(7)
    ]
    sent.extend(r["body"] for r in recs)
    old.batch_write(country=cc, records=recs)
    assert {r["version"] for r in old.find(country=cc, key1=f"{tag}-rot")["records"]} == {0}
    new = Storage(
        environment_id=ENV, oauth_token=key, endpoint=endpoint, secret_key_accessor=accessor(1)
    )
    stale = new.find(country=cc, version={"$not": 1})["meta"]["total"]
    assert stale >= len(recs)
    result = new.migrate(country=cc, limit=3)
    assert result == {"migrated": 3, "total_left": stale - 3}, result
    while result["total_left"]:
        result = new.migrate(country=cc)
    assert new.find(country=cc, version={"$not": 1})["meta"]["total"] == 0
    rotated = new.find(country=cc, key1=f"{tag}-rot", version=1)
    assert rotated["meta"]["total"] == len(recs)
    for r in recs:
        got = new.read(country=cc, record_key=r["record_key"])["record"]
        assert got["version"] == 1
        assert got["body"] == r["body"]
    ran.append(f"migrate:{cc}:{stale}")


def at_node(cfg: dict[str, Any]) -> None:
    """A subset against one federation node (``cfg["node"]``: its country), the SDK's
    endpoint that country's node, as InCountry's points of presence are: every storage call
    with a static token, then with OAuth2 client credentials from the node's own token
    endpoint; another country's path is refused as misdirected (421), never served."""
    endpoint, cc, other = cfg["endpoint"], cfg["node"], cfg["other"]
    static = Storage(
        environment_id=ENV, oauth_token=cfg["api_key"], endpoint=endpoint,
        secret_key_accessor=accessor(0),
    )  # fmt: skip
    full(static, cc, "static", plaintext_keys=False)
    oauth = Storage(
        environment_id=ENV, client_id=cfg["client_id"], client_secret=cfg["client_secret"],
        endpoint=endpoint, secret_key_accessor=accessor(0),
        options={"auth_endpoints": {"default": endpoint + "/oauth2/token"}},
    )  # fmt: skip
    rec = people("oauth")[0]
    same(oauth.write(country=cc, **rec)["record"], rec)
    same(oauth.read(country=cc, record_key=rec["record_key"])["record"], rec)
    assert keys_of(oauth.find(country=cc, key20="oauth")) == [rec["record_key"]]
    assert oauth.delete(country=cc, record_key=rec["record_key"]) == {"success": True}
    for client in (static, oauth):  # even the admin's key: that country is another node's
        assert status_of(lambda c=client: c.write(country=other, record_key="x", body="y")) == 421
        assert status_of(lambda c=client: c.read(country=other, record_key="x")) == 421
    ran.append(f"node:{cc}:oauth")
    print(json.dumps({"ran": ran, "sent": sorted(set(sent))}))


def main() -> None:
    cfg = json.loads(Path(sys.argv[1]).read_text())
    endpoint = cfg["endpoint"]
    assert importlib.metadata.version("incountry") == "5.0.0"
    if "node" in cfg:
        at_node(cfg)
        return

    # 1. A static token: the admin's API key, client-side encryption (the SDK's default).
    static = Storage(
        environment_id=ENV, oauth_token=cfg["api_key"], endpoint=endpoint,
        secret_key_accessor=accessor(0),
    )  # fmt: skip
    full(static, "ru", "static", plaintext_keys=False)

    # 2. OAuth2 client credentials against /oauth2/token; this client may use ru and de only.
    oauth = Storage(
        environment_id=ENV, client_id=cfg["client_id"], client_secret=cfg["client_secret"],
        endpoint=endpoint, secret_key_accessor=accessor(0),
        options={"auth_endpoints": {"default": endpoint + "/oauth2/token"}},
    )  # fmt: skip
    full(oauth, "de", "oauth", plaintext_keys=False)
    assert status_of(lambda: oauth.write(country="us", record_key="nope", body="x")) == 403
    assert status_of(lambda: oauth.read(country="us", record_key="nope")) == 403

    # 3. encrypt=False: plaintext bodies (pt:...) and, with hash_search_keys=False, plaintext
    # keys, which the server must still keep sealed.
    plain = Storage(
        environment_id=ENV, oauth_token=cfg["api_key"], endpoint=endpoint, encrypt=False,
        options={"hash_search_keys": False},
    )  # fmt: skip
    full(plain, "us", "plain", plaintext_keys=True)
    for rec in people("plain"):  # what encrypt=False really sent: pt: bodies, hashed record keys
        outbound = incountry.encrypt_record(incountry.InCrypto(), rec, ENV, hash_search_keys=False)
        sent.append(outbound["body"])
        sent.append(get_salted_hash(rec["record_key"], ENV))

    # 4. Server-side encryption mode.
    sse = Storage(
        environment_id=ENV, oauth_token=cfg["api_key"], endpoint=endpoint,
        encrypt=EncryptionType.SSE,
    )  # fmt: skip
    server_side(sse, "ru", "sse")

    # 5. Key rotation on the client side, then migrate(), where the OAuth client wrote.
    migrate(endpoint, cfg["api_key"], "de", "rotation")

    # 6. Wrong environment: refused.
    wrong = Storage(
        environment_id="other-env", oauth_token=cfg["api_key"], endpoint=endpoint,
        secret_key_accessor=accessor(0),
    )  # fmt: skip
    assert status_of(lambda: wrong.read(country="ru", record_key="static-person-2")) == 403
    print(json.dumps({"ran": ran, "sent": sorted(set(sent))}))


if __name__ == "__main__":
    main()
