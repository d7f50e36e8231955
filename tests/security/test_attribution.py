"""Every audited operation names who did it (finding 1: "so an erasure can be attributed").

A client does everything it may over HTTP (native and InCountry-compatible API); then
every entry its requests added to any site's audit must name it (``client``), beside the
site it acted from (``requester``). The same through the CLI, whose operations name the
operator (``cli:USER``), and the replication worker it runs. (Witness records, one site
recording another's signed head, are the deployment's own bookkeeping and name nobody.)
"""

from __future__ import annotations

import getpass
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from domicile.deploy.starter import init
from domicile.http.app import create_app
from domicile.vault import Domicile

DOMICILE = Path(sys.executable).with_name("domicile")


def _entries(vault: Domicile) -> list[tuple[str, dict[str, Any]]]:
    """Every site's entries but the witness records: those are the sites' own bookkeeping
    (one site recording another's signed head), an operation of nobody."""
    return [
        (s.id, entry)
        for s in vault.config.sites
        for r in vault.store(s.id).audit()
        if (entry := json.loads(r.payload))["action"] != "witness"
    ]


def test_every_entry_of_a_clients_requests_names_it(tmp_path: Path) -> None:
    vault = Domicile(init(tmp_path))
    app = create_app(vault)
    clients = app.state.service.clients
    native, key = clients.add(
        "app", ["records:write", "records:read", "records:delete", "records:erase",
                "records:export", "filings:write", "site:ru", "site:us", "collection:profiles",
                "purpose:*"], api_key=True,
    )  # fmt: skip
    storage, skey = clients.add(
        "storage", ["records:write", "records:read", "records:delete", "site:ru",
                    "purpose:incountry"], api_key=True,
    )  # fmt: skip
    h = {"Authorization": f"Bearer {key}"}
    hs = {"Authorization": f"Bearer {skey}", "x-env-id": "default"}
    before = len(_entries(vault))
    with TestClient(app) as http:
        ok = [
            http.post("/v1/collections/profiles/records", headers=h, json={
                "subject": {"citizenship": "RU"}, "purpose": "signup",
                "fields": {"full_name": "A B", "email": "a@example.ru"}}),
            http.post("/v1/collections/profiles/records/batch", headers=h, json={
                "records": [{"subject": {"citizenship": "RU"},
                             "fields": {"full_name": "C D", "email": "c@example.ru"}}],
                "purpose": "import"}),
        ]  # fmt: skip
        a, c = ok[0].json()["token"], ok[1].json()["records"][0]["token"]
        ok += [
            http.get(f"/v1/records/{a}", params={"purpose": "view"}, headers=h),
            http.get(f"/v1/records/{a}", params={"purpose": "view", "as_site": "ru"}, headers=h),
            http.patch(f"/v1/records/{a}", json={"fields": {"city": "Omsk"}, "purpose": "edit"},
                       headers=h),
            http.post("/v1/collections/profiles/find", headers=h,
                      json={"where": {"email": "a@example.ru"}, "purpose": "lookup"}),
            http.get("/v1/subjects/export", params={"token": a}, headers=h),
            http.post("/v1/filings", json={"name": "eu.scc.US", "date": "2025-01-01"}, headers=h),
            http.delete("/v1/filings/eu.scc.US", headers=h),
            http.delete(f"/v1/records/{c}", params={"purpose": "cleanup"}, headers=h),
            http.post("/v1/subjects/erase", json={"token": a}, headers=h),
        ]  # fmt: skip
        base = "/v2/storage/records/ru"
        ok += [
            http.post(base, json={"record_key": "k", "body": "b"}, headers=hs),
            http.get(f"{base}/k", headers=hs),
            http.post(f"{base}/find", json={"filter": {"record_key": "k"}}, headers=hs),
            http.post(f"{base}/k/attachments", files={"file": ("a.txt", b"a")}, headers=hs),
            http.delete(f"{base}/k", headers=hs),
        ]
        refused = http.get(f"{base}/k", headers=hs)  # a refusal names its client too
    assert [r.status_code for r in ok if r.status_code >= 300] == []
    assert refused.status_code == 404
    added = _entries(vault)[before:]
    actions = {e["action"] for _, e in added}
    assert {"write", "read", "update", "delete", "erase", "filing", "disclose_masked"} <= actions
    unnamed = [
        (site, e["action"]) for site, e in added if e.get("client") not in (native.id, storage.id)
    ]
    assert unnamed == []
    erase = next(e for _, e in added if e["action"] == "erase")
    assert (erase["client"], erase["requester"]) == (native.id, "us")  # the local site
    vault.close()


def _cli(config: Path, *args: str) -> Any:
    done = subprocess.run(
        [str(DOMICILE), *args, "--config", str(config), "--json"],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def test_every_entry_of_the_cli_names_its_operator(tmp_path: Path) -> None:
    config = init(tmp_path)
    path = Path(config.source)
    token = _cli(
        path, "put", "profiles", "--subject", "citizenship=US", "--field", "full_name=E F",
        "--purpose", "signup",
    )["token"]  # fmt: skip
    _cli(path, "get", token, "--purpose", "view")
    _cli(path, "update", token, "--field", "city=Boston", "--purpose", "edit")
    _cli(path, "filings", "add", "eu.scc.US=2025-01-01")
    _cli(path, "replicate")
    _cli(path, "erase", token)
    vault = Domicile(config)
    try:
        entries = _entries(vault)
    finally:
        vault.close(checkpoint=False)
    assert {e["action"] for _, e in entries} >= {"write", "read", "update", "filing", "erase"}
    assert {e.get("client") for _, e in entries} == {f"cli:{getpass.getuser()}"}
