"""The federation as three hosts: each node in a network namespace of its own, joined by
veth links to a bridge in a fourth (nothing leaves the machine; the test makes and
removes them all). Then the links are cut: mid-read, mid-replication. Nothing may be
lost, duplicated or disclosed, and every node's audit log verifies once the links are back.
Also: a dump of the US node's memory holds no key of the RU site and no value of a RU
subject that no permitted transfer sent it.

Needs root (network namespaces) and gdb's gcore (the memory dump); without them the test
fails, as every test that needs a component does here."""

from __future__ import annotations

import base64
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import yaml

from domicile.config import load_config
from domicile.federation.ca import ca_dir, create_ca, issue_node
from tests.security.domicile_process import cli, sqlite_audit

DOMICILE = Path(sys.executable).with_name("domicile")
NODES = {"ru": 1, "de": 2, "us": 3}  # the last byte of each host's address
NET = "10.77.{}.{}"
API, CHANNEL = 8700, 8701
SCOPES = ["records:read", "records:write", "records:erase", "collection:*", "purpose:*"]


HSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
HSM_PIN = "netns-4711"
ENV: dict[str, str] = {}  # SoftHSM2's configuration and the PIN, for every domicile process
SETUP = """
import sys
from domicile.config import load_config
from domicile.federation.serving import make_node_keyrings
from domicile.setup import create_deployment
config = load_config(sys.argv[1])
create_deployment(config)
make_node_keyrings(config)
"""


RU_SECRETS = """
import json, sys
from cryptography.hazmat.primitives import serialization as s
from domicile.config import load_config
from domicile.vault import Domicile
vault = Domicile.open(load_config(sys.argv[1]), read_only=True)
signing = vault.keys.signing_key("ru").private_bytes(
    s.Encoding.Raw, s.PrivateFormat.Raw, s.NoEncryption())
assert vault.keys.kind("ru") == "pkcs11"
print(json.dumps([vault.keys.index_key("ru").hex(), signing.hex()]))
"""


def sh(
    *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        list(args), capture_output=True, text=True, timeout=120,
        env={**os.environ, **env} if env else None,
    )  # fmt: skip
    if check and done.returncode != 0:
        pytest.fail(f"{' '.join(args)}: {done.stderr.strip()}", pytrace=False)
    return done


class Hosts:
    """The namespaces, the bridge, and a cut per node's link."""

    def __init__(self, tag: str, subnet: int) -> None:
        self.tag, self.subnet = tag, subnet
        self.switch = f"{tag}sw"
        self.ns = {n: f"{tag}{n}" for n in NODES}

    def addr(self, node: str) -> str:
        return NET.format(self.subnet, NODES[node])

    def up(self) -> None:
        if os.geteuid() != 0 or shutil.which("ip") is None:
            pytest.fail("network namespaces need root and iproute2's ip", pytrace=False)
        sh("ip", "netns", "add", self.switch)
        sw = ("ip", "netns", "exec", self.switch)
        sh(*sw, "ip", "link", "add", "br0", "type", "bridge")
        sh(*sw, "ip", "link", "set", "br0", "up")
        sh(*sw, "ip", "link", "set", "lo", "up")
        hosts = [*self.ns.items(), ("test", None)]
        for i, (node, ns) in enumerate(hosts):
            outer, inner = f"{self.tag}o{i}", f"{self.tag}i{i}"
            sh("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
            sh("ip", "link", "set", outer, "netns", self.switch)
            sh(*sw, "ip", "link", "set", outer, "master", "br0")
            sh(*sw, "ip", "link", "set", outer, "up")
            address = self.addr(node) if ns else NET.format(self.subnet, 254)
            if ns:
                sh("ip", "netns", "add", ns)
                sh("ip", "link", "set", inner, "netns", ns)
                into = ("ip", "netns", "exec", ns)
                sh(*into, "ip", "link", "set", "lo", "up")
            else:  # the test's own end: the application calling the US node
                into = ()
            sh(*into, "ip", "addr", "add", f"{address}/24", "dev", inner)
            sh(*into, "ip", "link", "set", inner, "up")

    def link(self, node: str, up: bool) -> None:
        """Cut (or restore) node's only link: its host keeps running, unreachable."""
        i = list(self.ns).index(node)
        sh("ip", "netns", "exec", self.switch, "ip", "link", "set", f"{self.tag}o{i}",
           "up" if up else "down")  # fmt: skip

    def down(self) -> None:
        for ns in (*self.ns.values(), self.switch):
            sh("ip", "netns", "del", ns, check=False)
        sh("ip", "link", "del", f"{self.tag}i{len(self.ns)}", check=False)


class Node:
    def __init__(self, hosts: Hosts, node: str, config: Path, log: Path) -> None:
        self.node, self.url = node, f"http://{hosts.addr(node)}:{API}"
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", hosts.ns[node], str(DOMICILE), "serve", "--node", node,
                 "--host", hosts.addr(node), "--port", str(API), "--config", str(config)],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **ENV},
            )  # fmt: skip
        self.headers: dict[str, str] = {}

    def wait(self) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"node {self.node} exited:\n{self.log.read_text()}", pytrace=False)
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        pytest.fail(f"node {self.node} did not answer:\n{self.log.read_text()}", pytrace=False)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {**self.headers, **({"Content-Type": "application/json"} if data else {})}
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture(scope="module")
def hosts(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Hosts, dict[str, Node], Path]]:
    tag = f"d{os.getpid() % 100000}"
    net = Hosts(tag, 100 + os.getpid() % 100)
    folder = tmp_path_factory.mktemp("netns") / "dep"
    nodes: dict[str, Node] = {}
    try:
        net.up()
        # The RU site's keys in a SoftHSM2 token of this test's own (its KEK made in the
        # token, its index and signing keys sealed under a key there); the others' in
        # their node keyrings.
        if shutil.which("softhsm2-util") is None or not Path(HSM_MODULE).exists():
            pytest.fail("SoftHSM2 is not installed: run scripts/hsm-deps", pytrace=False)
        tokens = folder.parent / "softhsm"
        (tokens / "tokens").mkdir(parents=True)
        (tokens / "softhsm2.conf").write_text(
            f"directories.tokendir = {tokens / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
        )
        ENV.update(SOFTHSM2_CONF=str(tokens / "softhsm2.conf"), DOMICILE_PKCS11_PIN=HSM_PIN)
        sh("softhsm2-util", "--init-token", "--free", "--label", "netns-ru",
           "--so-pin", "0000-so", "--pin", HSM_PIN, env=ENV)  # fmt: skip
        starter = folder.parent / "starter"
        done = cli("init", str(starter))
        assert done.code == 0, done.err
        doc = yaml.safe_load((starter / "domicile.yaml").read_text())
        ru = next(s for s in doc["sites"] if s["id"] == "ru")
        ru["key_provider"] = {"kind": "pkcs11", "module": HSM_MODULE, "token": "netns-ru"}
        doc["collections"]["profiles"]["replicate"] = [
            {"to": "de", "fields": ["full_name", "city"]}
        ]
        doc["federation"] = {
            "timeout": 2.0,
            "nodes": {n: {"url": f"https://{net.addr(n)}:{CHANNEL}"} for n in NODES},
        }
        folder.mkdir(mode=0o700)
        path = folder / "domicile.yaml"
        path.write_text(yaml.safe_dump(doc))
        cfg = load_config(path)
        create_ca(ca_dir(cfg.data_dir), "netns test")
        for n in NODES:
            issue_node(ca_dir(cfg.data_dir), n, [net.addr(n)])
        # Setup touches the token: in a process of its own, which loads SoftHSM2 with this
        # test's configuration (a process loads it once).
        sh(sys.executable, "-c", SETUP, str(path), env=ENV)
        for n in NODES:
            nodes[n] = Node(net, n, path, folder.parent / f"{n}.log")
        for n, node in nodes.items():
            node.wait()
            done = cli("clients", "add", f"app-{n}", *(f"--scope={s}" for s in SCOPES),
                       f"--scope=site:{n}", "--api-key", "--json", "--config", str(path), env=ENV)  # fmt: skip
            assert done.code == 0, done.err
            node.headers = {"Authorization": f"Bearer {done.json()['api_key']}"}
        yield net, nodes, path
    finally:
        for node in nodes.values():
            node.stop()
        net.down()


def audit(cfg_path: Path, site: str) -> list[dict[str, Any]]:
    cfg = load_config(cfg_path)
    return sqlite_audit(Path(cfg.backend_url(cfg.site(site).backend).removeprefix("sqlite:")))


def test_reads_across_hosts_and_a_cut_mid_read(hosts: tuple[Hosts, dict[str, Node], Path]) -> None:
    net, nodes, path = hosts
    us, _ru = nodes["us"], nodes["ru"]
    status, put = us.call("POST", "/v1/collections/profiles/records", {
        "subject": {"citizenship": "RU"}, "purpose": "signup",
        "fields": {"full_name": "Olga Sidorova", "email": "olga@example.ru"}})  # fmt: skip
    assert status == 201, put
    assert put["site"] == "ru"
    status, seen = us.call("GET", f"/v1/records/{put['token']}?purpose=view")
    assert status == 200, seen
    assert seen["masked"] is True
    # The RU host drops off the network: the US node cannot ask, and says so (503), at
    # once; it answers nothing from anywhere else.
    net.link("ru", up=False)
    try:
        status, cut = us.call("GET", f"/v1/records/{put['token']}?purpose=view")
        assert status == 503, cut
        assert "Olga" not in json.dumps(cut)
        status, found = us.call("POST", "/v1/collections/profiles/find",
                                {"where": {"email": "olga@example.ru"}, "purpose": "view"})  # fmt: skip
        assert status == 200, found
        assert "ru" in found["unavailable"]
        assert found["records"] == []
    finally:
        net.link("ru", up=True)
    status, again = us.call("GET", f"/v1/records/{put['token']}?purpose=view")
    assert status == 200, again
    asked = [e for e in audit(path, "us") if e["action"] == "request"]
    assert "node_unavailable" in {e["detail"]["answer"] for e in asked}


def test_a_cut_mid_replication_loses_and_duplicates_nothing(
    hosts: tuple[Hosts, dict[str, Node], Path],
) -> None:
    net, nodes, path = hosts
    us = nodes["us"]
    cfg = load_config(path)
    de_store = Path(str(cfg.backend_url(cfg.site("de").backend)).removeprefix("sqlite:"))
    n, written, landed, runs = 2000, 0, False, []

    def transfers_at_de() -> int:  # cheap, so the cut follows the first copies closely
        with closing(sqlite3.connect(f"file:{de_store}?mode=ro", uri=True)) as conn:
            return int(conn.execute(
                "SELECT count(*) FROM audit WHERE payload LIKE '{\"action\":\"transfer\"%'"
            ).fetchone()[0])  # fmt: skip

    # A round: 2000 new records, the US node's worker (in the US host) delivering their
    # copies, and the DE host dropping off as soon as the first copies are there. A
    # machine can be quick enough to finish a round before the cut: then another round
    # (three at most); the cut must land mid-run once.
    for _ in range(3):
        items = [{"subject": {"citizenship": "US"}, "fields": {
            "full_name": f"Person {written + i}", "email": f"p{written + i}@example.com",
            "city": "Boston"}} for i in range(n)]  # fmt: skip
        for start in range(0, n, 200):
            status, out = us.call("POST", "/v1/collections/profiles/records/batch",
                                  {"records": items[start:start + 200], "purpose": "signup"})  # fmt: skip
            assert status == 201, out
        before = transfers_at_de()
        written += n
        worker = subprocess.Popen(
            ["ip", "netns", "exec", net.ns["us"], str(DOMICILE), "replicate", "--node", "us",
             "--json", "--config", str(path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **ENV},
        )  # fmt: skip
        deadline = time.monotonic() + 120
        at_cut = before
        while time.monotonic() < deadline and worker.poll() is None:
            at_cut = transfers_at_de()
            if at_cut > before:
                break
            time.sleep(0.05)
        net.link("de", up=False)
        try:
            out, err = worker.communicate(timeout=180)
        finally:
            net.link("de", up=True)
        first = json.loads(out) if out.strip().startswith("{") else {"output": out, "err": err}
        runs.append({"at_cut": at_cut - before, "report": first})
        # Landed mid-run: DE held some of this round's copies and not all, and the run saw
        # DE go (its own count may be 0: a batch DE committed may have lost its answer).
        if before < at_cut < before + n and "de" in first.get("unavailable", []):
            landed = True
            break
    assert landed, runs
    # Then a run with the link back finishes the work.
    done = subprocess.run(
        ["ip", "netns", "exec", net.ns["us"], str(DOMICILE), "replicate", "--node", "us",
         "--json", "--config", str(path)],
        capture_output=True, text=True, timeout=300, env={**os.environ, **ENV},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    transfers = [e for e in audit(path, "de") if e["action"] == "transfer"]
    records = {e["record"] for e in transfers}
    assert len(records) == written, runs
    assert len(transfers) == written  # every copy logged once: none twice
    status, health = nodes["de"].call("GET", "/healthz")
    assert status == 200, health


def test_every_log_verifies_after_the_cuts(hosts: tuple[Hosts, dict[str, Node], Path]) -> None:
    _, _, path = hosts
    for node in NODES:
        done = subprocess.run(
            ["ip", "netns", "exec", hosts[0].ns[node], str(DOMICILE), "audit", "witness",
             "--node", node, "--json", "--config", str(path)],
            capture_output=True, text=True, timeout=120, env={**os.environ, **ENV},
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
    # Parity at the DE host: its copies against the primaries the US node describes.
    done = subprocess.run(
        ["ip", "netns", "exec", hosts[0].ns["de"], str(DOMICILE), "parity", "--node", "de",
         "--json", "--config", str(path)],
        capture_output=True, text=True, timeout=300, env={**os.environ, **ENV},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    parity = json.loads(done.stdout)
    assert parity["ok"] is True
    assert parity["copies"] >= 1000
    done = cli("audit", "verify", "--json", "--config", str(path), env=ENV)
    assert done.code == 0, done.out + done.err


def test_the_us_hosts_memory_holds_no_ru_key_and_no_untransferred_ru_value(
    hosts: tuple[Hosts, dict[str, Node], Path],
) -> None:
    _, nodes, path = hosts
    if shutil.which("gcore") is None:
        pytest.fail("gcore (gdb) is needed to dump the node's memory", pytrace=False)
    ru, us = nodes["ru"], nodes["us"]
    secret = {"full_name": "Zinaida Kuznetsova", "email": "zinaida.k@example.ru"}
    status, put = ru.call("POST", "/v1/collections/profiles/records",
                          {"subject": {"citizenship": "RU"}, "fields": secret, "purpose": "signup"})  # fmt: skip
    assert status == 201, put
    # The US node reads it (masked: no permitted transfer of the full value yet).
    status, seen = us.call("GET", f"/v1/records/{put['token']}?purpose=view")
    assert status == 200, seen
    assert seen["masked"] is True
    pid = _child_pid(us.proc.pid)
    dump = path.parent / "us-core"
    done = subprocess.run(["gcore", "-o", str(dump), str(pid)], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    core = Path(f"{dump}.{pid}").read_bytes()
    try:
        cfg = load_config(path)
        # The dump is the node's memory: its own site's keys are in it (the keyring holds
        # them as it reads them from its file, in base64).
        own = json.loads((cfg.node_dir("us") / "keyring.json").read_text())["sites"]["us"]
        assert own["index_key"].encode() in core
        # The RU site's keys are in its token: its KEK cannot leave it; its index and
        # signing keys, unsealed by the token inside the RU node, are not in the US node.
        assert "ru" not in json.loads((cfg.node_dir("ru") / "keyring.json").read_text())["sites"]
        done = sh(sys.executable, "-c", RU_SECRETS, str(path), env=ENV)
        for secret_key in json.loads(done.stdout):
            raw = bytes.fromhex(secret_key)
            assert raw not in core
            assert base64.b64encode(raw) not in core
        for value in secret.values():
            assert value.encode() not in core
            assert value.encode("utf-16-le") not in core
    finally:
        Path(f"{dump}.{pid}").unlink(missing_ok=True)


def _child_pid(pid: int) -> int:
    """The domicile process under `ip netns exec` (which execs it: usually the same pid)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = children.read_text().split() if children.exists() else []
    return int(kids[0]) if kids else pid
