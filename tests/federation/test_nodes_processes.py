"""Three nodes (RU, DE, US) as three `domicile serve --node` processes, talking over the
node channel (mutual TLS, certificates of the deployment's CA). An application talks to the
US node only; the RU subject's data is written, decided and kept at the RU node, and what
the US node gets of it is what the RU node's packs let a reader in the US have."""

from __future__ import annotations

import json
import shutil
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from domicile.config import load_config
from domicile.deploy.starter import init
from domicile.federation.ca import ca_dir, create_ca, issue_node
from domicile.federation.serving import make_node_keyrings
from tests.security.domicile_process import Served, cli, free_port, sqlite_audit

SCOPES = ["records:read", "records:write", "records:erase", "collection:*", "purpose:*"]
FIELDS = {"full_name": "Anna Volkova", "email": "anna.volkova@example.ru"}


def federate(folder: Path) -> dict[str, int]:
    """A deployment made by `init`, then federated: a CA, a certificate and a keyring per
    node, and each node's channel on a free port."""
    init(folder)  # in this process: `domicile init` is tested on its own elsewhere
    path = folder / "domicile.yaml"
    doc = yaml.safe_load(path.read_text())
    ports = {s["id"]: free_port() for s in doc["sites"]}
    doc["federation"] = {"nodes": {n: {"url": f"https://127.0.0.1:{p}"} for n, p in ports.items()}}
    path.write_text(yaml.safe_dump(doc))
    cfg = load_config(path)
    create_ca(ca_dir(cfg.data_dir), "test")
    for node in ports:
        issue_node(ca_dir(cfg.data_dir), node, ["127.0.0.1"])
    make_node_keyrings(cfg)
    return ports


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Served]]:
    folder = tmp_path_factory.mktemp("federation") / "dep"
    federate(folder)
    config = str(folder / "domicile.yaml")
    running: dict[str, Served] = {}
    try:
        for node in ("ru", "de", "us"):
            served = Served(folder.parent, "--node", node, "--config", config).start()
            done = cli(
                "clients", "add", f"app-{node}", *(f"--scope={s}" for s in SCOPES),
                f"--scope=site:{node}", "--api-key", "--json", "--config", config,
            )  # fmt: skip
            assert done.code == 0, done.err
            served.headers = {"Authorization": f"Bearer {done.json()['api_key']}"}
            running[node] = served
        yield running
    finally:
        for served in running.values():
            served.stop()


def call(node: Served, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    reply = node.request(method, path, body)
    return reply.status, reply.body


def test_a_ru_subject_written_at_the_us_node_lives_at_the_ru_node(
    nodes: dict[str, Served],
) -> None:
    us, ru = nodes["us"], nodes["ru"]
    status, put = call(us, "POST", "/v1/collections/profiles/records",
                       {"subject": {"citizenship": "RU"}, "fields": FIELDS, "purpose": "signup"})  # fmt: skip
    assert status == 201, put
    assert put["site"] == "ru"
    token = put["token"]
    # At home: the full record, a local read.
    status, home = call(ru, "GET", f"/v1/records/{token}?purpose=view")
    assert status == 200, home
    assert home["fields"] == FIELDS
    # From the US node: what the RU node let a reader in the US have (masked, before the
    # Art. 12 notice), decided and audited at the RU node.
    status, seen = call(us, "GET", f"/v1/records/{token}?purpose=view")
    assert status == 200, seen
    assert seen["masked"] is True
    assert seen["fields"]["email"] != FIELDS["email"]
    # find, from the US node, asks the RU node, which searches its own indexes.
    status, found = call(us, "POST", "/v1/collections/profiles/find",
                         {"where": {"email": FIELDS["email"]}, "purpose": "view"})  # fmt: skip
    assert status == 200, found
    assert [r["site"] for r in found["records"]] == ["ru"]
    assert found["records"][0]["masked"] is True
    # Erasure from the US node is done at home.
    status, erased = call(us, "POST", "/v1/subjects/erase", {"token": token, "purpose": "erasure"})
    assert status == 200, erased
    status, gone = call(ru, "GET", f"/v1/records/{token}?purpose=view")
    assert status in (404, 410), gone


def test_each_node_audits_its_side_and_every_log_verifies(nodes: dict[str, Served]) -> None:
    folder = nodes["ru"].folder / "dep"
    cfg = load_config(folder / "domicile.yaml")
    logs = {s.id: sqlite_audit(Path(cfg.backend_url(s.backend).removeprefix("sqlite:")))
            for s in cfg.sites}  # fmt: skip
    asked = [e for e in logs["us"] if e["action"] == "request"]
    assert {e["detail"]["operation"] for e in asked} >= {"put", "get", "find", "erase"}
    assert {e["detail"]["forwarded_to"] for e in asked if e["detail"]["operation"] != "find"} == {
        "ru"
    }
    assert {e["detail"]["forwarded_to"] for e in asked if e["detail"]["operation"] == "find"} == {
        "ru",
        "de",
    }
    decided = [e for e in logs["ru"] if e.get("requester") == "us"]
    assert any(e["action"] == "disclose_masked" for e in decided)
    assert all(e["client"].startswith("node:us/") for e in decided)
    # Each node's head, witnessed by the others over the channel (a CLI process acting
    # as the node, with its certificate).
    for node in ("ru", "us"):
        done = cli(
            "audit", "witness", "--node", node, "--json", "--config", str(folder / "domicile.yaml")
        )
        assert done.code == 0, done.out + done.err
        assert {r["witness"] for r in done.json()["witnessed"] if r["outcome"] != "refused"} == (
            {"ru", "de", "us"} - {node}
        )
    logs = {s.id: sqlite_audit(Path(cfg.backend_url(s.backend).removeprefix("sqlite:")))
            for s in cfg.sites}  # fmt: skip
    # The DE node saw nothing of it.
    assert not [e for e in logs["de"] if e["action"] in ("write", "read", "disclose_masked")]
    done = cli("audit", "verify", "--json", "--config", str(folder / "domicile.yaml"))
    assert done.code == 0, done.out + done.err
    # The same, asked by the US node of each node over the channel: each verifies its own
    # log and signs its answer, checked at the US node against the heads it witnessed.
    done = cli(
        "audit", "verify", "--deployment", "--node", "us", "--json",
        "--config", str(folder / "domicile.yaml"),
    )  # fmt: skip
    assert done.code == 0, done.out + done.err
    found = done.json()
    assert [n["node"] for n in found["nodes"]] == ["us", "de", "ru"]
    assert all(n["ok"] and n["problems"] == [] for n in found["nodes"])
    assert "signed with node ru's key" in found["nodes"][2]["checked"]


def test_the_node_channel_refuses_a_caller_without_a_node_certificate(
    nodes: dict[str, Served],
) -> None:
    cfg = load_config(nodes["ru"].folder / "dep" / "domicile.yaml")
    fed = cfg.model.federation
    assert fed is not None
    ctx = ssl.create_default_context(cafile=str(cfg.node_dir("ru") / "ca.pem"))
    ctx.check_hostname = False
    req = urllib.request.Request(fed.nodes["ru"].url + "/v1/node/ping")
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        urllib.request.urlopen(req, context=ctx, timeout=10)


def test_the_us_node_holds_no_ru_key_material(nodes: dict[str, Served]) -> None:
    cfg = load_config(nodes["ru"].folder / "dep" / "domicile.yaml")
    ru = json.loads((cfg.node_dir("ru") / "keyring.json").read_text())["sites"]["ru"]
    secrets = [ru["index_key"], ru["signing_key"], *ru["keks"].values()]
    for path in cfg.node_dir("us").rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert not any(s in text for s in secrets), path


def test_a_node_impersonated_is_refused_and_the_refusal_audited(
    nodes: dict[str, Served], tmp_path: Path
) -> None:
    """A forged certificate for "us" (a CA of the same name), an expired one from the real
    CA, and the certificate of a removed node: the RU node refuses each at the handshake,
    before any request, and writes each refusal in its own log. Last in this module: it
    removes a node."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from domicile.errors import DomicileError
    from domicile.federation.ca import remove_node
    from domicile.federation.channel import NodeChannel

    from .conftest import bundle, forged_ca, mint

    folder = nodes["ru"].folder / "dep"
    cfg = load_config(folder / "domicile.yaml")
    fed = cfg.model.federation
    assert fed is not None
    ru_url = fed.nodes["ru"].url
    real = cfg.node_dir("us")
    ca_cert = x509.load_pem_x509_certificate((ca_dir(cfg.data_dir) / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key(
        (ca_dir(cfg.data_dir) / "ca.key").read_bytes(), None
    )
    fake_ca, fake_key = forged_ca(ca_cert)
    now = dt.datetime.now(dt.UTC)
    attempts = {
        "unknown_ca": bundle(tmp_path / "forged", real, *mint(fake_ca, fake_key, nodes=["us"])),
        "expired": bundle(tmp_path / "expired", real, *mint(
            ca_cert, ca_key, nodes=["us"],  # type: ignore[arg-type]
            not_before=now - dt.timedelta(days=60), not_after=now - dt.timedelta(days=1))),
    }  # fmt: skip
    before = len(audit_of(cfg, "ru"))

    def knock(folder: Path) -> None:
        with (
            NodeChannel(folder, {"ru": ru_url}, attempts=1, timeout=5) as channel,
            pytest.raises(DomicileError),
        ):
            channel.request("ru", "GET", "/v1/node/ping")

    for folder_ in attempts.values():
        knock(folder_)
    # A removed node: its own, once valid, certificate.
    removed = tmp_path / "removed"
    shutil.copytree(cfg.node_dir("de"), removed)
    remove_node(ca_dir(cfg.data_dir), "de")
    knock(removed)
    reasons = {"unknown_ca", "expired", "revoked"}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        refused = [e for e in audit_of(cfg, "ru")[before:] if e["action"] == "refuse"]
        seen = {e["detail"].get("refused_because") for e in refused}
        if reasons <= seen:
            break
        time.sleep(0.2)
    assert reasons <= seen, refused
    assert all(e["detail"]["operation"] == "node_channel" for e in refused)


def audit_of(cfg: Any, site: str) -> list[dict[str, Any]]:
    return sqlite_audit(Path(cfg.backend_url(cfg.site(site).backend).removeprefix("sqlite:")))
