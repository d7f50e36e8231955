"""The InCountry-compatible API on federation nodes (in one process; the channel is
``Direct``): each node serves the path of its own site's country, with its own keys and
store, and refuses another country's path (421 ``other_node``, audited where the request
arrived) naming the node to call, without asking that node or reading anything of its site."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from domicile.cli.app import app as cli
from domicile.config import load_config
from domicile.federation.node import FederatedDomicile
from domicile.http.app import create_app
from domicile.vault.incountry import Caller

from .inprocess import Direct, add_federation, in_process_nodes

BASE = "/v2/storage/records"
SCOPES = ["records:read", "records:write", "records:delete", "purpose:incountry"]
API = {"ru": "https://ru.api.example:8443", "us": "https://us.api.example"}
SECRET_BODY = "Ekaterina Smirnova, passport 4509 123456"
SECRET_KEY = "ekaterina.smirnova@example.ru"


@dataclass
class Node:
    vault: FederatedDomicile
    http: TestClient

    def token(self, *scopes: str) -> dict[str, str]:
        """A new client of this node with these scopes, and the headers of an access token
        it got from this node's OAuth2 token endpoint (client credentials, HTTP Basic)."""
        client, secret = self.http.app.state.service.clients.add("app", list(scopes))  # type: ignore[attr-defined]
        reply = self.http.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials", "scope": "default"},
            auth=(client.id, secret),
        )
        assert reply.status_code == 200, reply.text
        return {"Authorization": f"Bearer {reply.json()['access_token']}", "x-env-id": "default"}

    def audit(self) -> list[dict[str, Any]]:
        node = self.vault.node
        assert node is not None
        return [json.loads(r.payload) for r in self.vault.store(node).audit()]


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Node]]:
    """Shared by the tests of this module (each uses record keys of its own, and looks at
    the audit entries after its own start)."""
    folder = tmp_path_factory.mktemp("incountry") / "dep"
    result = CliRunner().invoke(cli, ["init", str(folder)])
    assert result.exit_code == 0, result.output
    path = folder / "domicile.yaml"
    add_federation(path)
    doc = yaml.safe_load(path.read_text())
    for node, url in API.items():  # the nodes' public addresses, named in a refusal
        doc["federation"]["nodes"][node]["api"] = url
    path.write_text(yaml.safe_dump(doc))
    vaults = in_process_nodes(load_config(path))
    served = {n: TestClient(create_app(vaults[n])) for n in ("ru", "us")}
    for http in served.values():
        http.__enter__()
    yield {n: Node(vaults[n], http) for n, http in served.items()}
    for http in served.values():
        http.__exit__(None, None, None)
    for v in vaults.values():
        v.close(checkpoint=False)


def test_each_node_serves_its_own_country_with_tokens_and_scopes_as_embedded(
    nodes: dict[str, Node],
) -> None:
    ru = nodes["ru"]
    headers = ru.token(*SCOPES, "site:ru")
    records = [
        {"record_key": f"rec-{i}", "body": f"2:opaque-{i}", "key1": "moscow", "range_key1": i}
        for i in range(3)
    ]
    reply = ru.http.post(f"{BASE}/ru", json=records[0], headers=headers)
    assert reply.status_code == 201, reply.text
    reply = ru.http.post(f"{BASE}/ru/batchWrite", json={"records": records[1:]}, headers=headers)
    assert reply.status_code == 201, reply.text
    reply = ru.http.get(f"{BASE}/ru/rec-1", headers=headers)
    assert reply.status_code == 200, reply.text
    assert reply.json()["body"] == "2:opaque-1"
    found = ru.http.post(
        f"{BASE}/ru/find",
        json={"filter": {"key1": "moscow", "range_key1": {"$gte": 1}}, "options": {"limit": 10}},
        headers=headers,
    )
    assert found.status_code == 200, found.text
    assert sorted(r["record_key"] for r in found.json()["data"]) == ["rec-1", "rec-2"]
    assert ru.http.delete(f"{BASE}/ru/rec-0", headers=headers).status_code == 200
    assert ru.http.get(f"{BASE}/ru/rec-0", headers=headers).status_code == 404
    # The client's scopes are checked at the node as in the embedded service: without the
    # site's scope, or without the operation's, it is refused (and audited there).
    no_site = ru.token(*SCOPES)
    assert ru.http.get(f"{BASE}/ru/rec-1", headers=no_site).status_code == 403
    no_delete = ru.token("records:read", "purpose:incountry", "site:ru")
    assert ru.http.delete(f"{BASE}/ru/rec-1", headers=no_delete).status_code == 403
    assert ru.http.get(f"{BASE}/ru/rec-1", headers=no_delete).status_code == 200
    actions = [e["action"] for e in ru.audit()]
    assert {"write", "read", "delete", "refuse"} <= set(actions)
    # The US node serves its own country the same way.
    us = nodes["us"]
    us_headers = us.token(*SCOPES, "site:us")
    assert us.http.post(f"{BASE}/us", json=records[0], headers=us_headers).status_code == 201
    assert us.http.get(f"{BASE}/us/rec-0", headers=us_headers).json()["body"] == "2:opaque-0"


def test_another_countrys_path_is_refused_naming_its_node_and_nothing_crosses(
    nodes: dict[str, Node],
) -> None:
    ru, us = nodes["ru"], nodes["us"]
    ru_headers = ru.token(*SCOPES, "site:ru")
    written = ru.http.post(
        f"{BASE}/ru", json={"record_key": "anna", "body": "2:opaque"}, headers=ru_headers
    )
    assert written.status_code == 201, written.text
    ru_before, us_before = len(ru.audit()), len(us.audit())
    peers = us.vault.peers
    assert isinstance(peers, Direct)
    # Even a client with every scope, the RU site's among them, is sent to the RU node.
    headers = us.token(*SCOPES, "site:ru", "site:us")
    calls = [
        ("POST", f"{BASE}/ru", {"record_key": "anna", "body": "2:changed"}),
        ("POST", f"{BASE}/ru/batchWrite", {"records": [{"record_key": "anna"}]}),
        ("GET", f"{BASE}/ru/anna", None),
        ("POST", f"{BASE}/ru/find", {"filter": {"record_key": "anna"}}),
        ("DELETE", f"{BASE}/ru/anna", None),
        ("POST", f"{BASE}/ru/batchDelete", {"filter": {"record_key": ["anna"]}}),
        ("GET", f"{BASE}/ru/anna/attachments/f1/meta", None),
    ]
    for method, path, body in calls:
        reply = us.http.request(method, path, json=body, headers=headers)
        assert reply.status_code == 421, (path, reply.text)
        problem = reply.json()
        assert problem["code"] == "other_node"
        assert problem["node"] == "ru"
        assert problem["country"] == "RU"
        assert problem["endpoint"] == API["ru"]
        assert f"{API['ru']}/v2/storage/records/ru" in problem["hint"]
    upload = us.http.post(
        f"{BASE}/ru/anna/attachments", files={"file": ("a.txt", b"data")}, headers=headers
    )
    assert upload.status_code == 421, upload.text
    # Refused where it arrived, one entry per call, naming the home site; nothing asked of
    # the RU node, nothing in its log, and its record unchanged.
    refused = us.audit()[us_before:]
    assert len(refused) == len(calls) + 1
    assert {(e["action"], e["detail"]["reason"], e["detail"]["home_site"]) for e in refused} == {
        ("refuse", "other_node", "ru")
    }
    assert peers.calls == []
    assert len(ru.audit()) == ru_before
    assert ru.http.get(f"{BASE}/ru/anna", headers=ru_headers).json()["body"] == "2:opaque"
    # A country with no site at all is still 404 no_site, at a node as embedded.
    assert us.http.get(f"{BASE}/fr/anna", headers=headers).json()["code"] == "no_site"
    # The node's expiry sweep covers its own site only (the RU node sweeps its own).
    swept = us.http.app.state.incountry.expire_all(Caller("test:expiry"))  # type: ignore[attr-defined]
    assert [s["site"] for s in swept["sites"]] == ["us"]
    assert swept["unavailable"] == []


def test_the_us_node_keeps_no_ru_plaintext_and_no_ru_key(nodes: dict[str, Node]) -> None:
    ru, us = nodes["ru"], nodes["us"]
    sse = {"X-Encrypted-Storage": "true"}  # raw keys and body: the server seals them
    record = {"record_key": SECRET_KEY, "body": SECRET_BODY, "key1": SECRET_KEY}
    reply = ru.http.post(f"{BASE}/ru", json=record, headers={**ru.token(*SCOPES, "site:ru"), **sse})
    assert reply.status_code == 201, reply.text
    reply = us.http.post(
        f"{BASE}/ru", json=record, headers={**us.token(*SCOPES, "site:ru", "site:us"), **sse}
    )
    assert reply.status_code == 421
    assert SECRET_BODY not in reply.text
    assert SECRET_KEY not in reply.text
    us.vault.close(checkpoint=False)  # its write-ahead log folded into the files
    ru.vault.close(checkpoint=False)
    cfg = us.vault.config
    site = {s.id: s for s in cfg.sites}["us"]
    files = [
        Path(cfg.backend_url(site.backend).removeprefix("sqlite:")),
        Path(cfg.keys_url(site).removeprefix("sqlite:")),
        Path(us.vault.keys.path),  # type: ignore[attr-defined]  # the keyring it runs with
    ]
    us_bytes = b"".join(
        p.read_bytes() for f in files for p in f.parent.glob(f.name + "*") if p.is_file()
    )
    assert files[0].exists()
    assert files[2].exists()
    ru_keys = json.loads(ru.vault.keys.path.read_text())["sites"]["ru"]  # type: ignore[attr-defined]
    secrets = [ru_keys["index_key"], ru_keys["signing_key"], *ru_keys["keks"].values()]
    assert [s for s in secrets if s.encode() in us_bytes] == []
    assert SECRET_BODY.encode() not in us_bytes
    assert SECRET_KEY.encode() not in us_bytes
    # ... nor at rest at the RU node, which holds the record sealed.
    data = b"".join(p.read_bytes() for p in cfg.data_dir.rglob("*") if p.is_file())
    assert SECRET_BODY.encode() not in data
    assert SECRET_KEY.encode() not in data


def test_a_node_is_ready_when_its_own_site_answers(nodes: dict[str, Node]) -> None:
    """A load balancer's probe of a node asks about that node's own site only: its peers'
    sites are theirs to report (before, every node answered 503 for ever)."""
    for node in ("ru", "us"):
        reply = nodes[node].http.get("/readyz")
        assert reply.status_code == 200, reply.text
        assert reply.json() == {"ready": True, "sites": {node: True}}
