"""A federation's PKI made for real, certificates an attacker would bring, and node
servers run as their own processes on free loopback ports."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from domicile.federation import create_ca, issue_node
from domicile.federation.node import FederatedDomicile

from .inprocess import init_federation

HERE = Path(__file__).parent
START_TIMEOUT = 60.0  # a loaded 2-core machine imports slowly


@dataclass
class Deployment:
    ca: Path  # DATA_DIR/federation/ca
    nodes: dict[str, Path]  # node id to its bundle

    def ca_cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate((self.ca / "ca.pem").read_bytes())

    def ca_key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key((self.ca / "ca.key").read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[dict[str, FederatedDomicile]]:
    """A node per site of the deployment ``domicile init`` makes (profiles copied to DE),
    in one process (``inprocess.py``)."""
    nodes = init_federation(tmp_path)
    yield nodes
    for n in nodes.values():
        n.close(checkpoint=False)


@pytest.fixture
def deployment(tmp_path: Path) -> Deployment:
    """A CA and three nodes (ru, de, us) issued by it, for 127.0.0.1."""
    ca = tmp_path / "data" / "federation" / "ca"
    create_ca(ca, "test")
    nodes = {n: issue_node(ca, n, ["127.0.0.1", "localhost"]) for n in ("ru", "de", "us")}
    return Deployment(ca, nodes)


def forged_ca(like: x509.Certificate) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A CA an attacker made with the very same name as the deployment's."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(like.subject)
        .issuer_name(like.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def mint(
    issuer: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    nodes: list[str],
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    usages: list[x509.ObjectIdentifier] | None = None,
    hosts: tuple[str, ...] = ("localhost",),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A node-like certificate with whatever an attacker or a mistake puts in it."""
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(f"domicile-node:{n}") for n in nodes
    ]
    names += [x509.DNSName(h) for h in hosts]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node")]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(days=1))
        .not_valid_after(not_after or now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                usages
                if usages is not None
                else [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )
    return cert, key


def bundle(dest: Path, like: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Path:
    """A node folder holding ``cert`` and ``key``, with the CA and CRL of bundle ``like``."""
    dest.mkdir(parents=True)
    (dest / "node.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (dest / "node.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    for name in ("ca.pem", "crl.pem"):
        shutil.copy(like / name, dest / name)
    return dest


@dataclass
class NodeServer:
    """A node server process (tests/federation/node_app.py) and what it wrote down."""

    proc: subprocess.Popen[bytes]
    state: Path
    port: int

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _lines(self, name: str) -> list[dict[str, Any]]:
        path = self.state / name
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def requests(self) -> list[dict[str, Any]]:
        return self._lines("requests.jsonl")

    def refusals(self, *, at_least: int = 0, wait: float = 10.0) -> list[dict[str, Any]]:
        """The refusals on record, waiting (bounded) until there are ``at_least``: the
        hook runs in the server process, maybe after the client has given up."""
        deadline = time.monotonic() + wait
        while True:
            found = self._lines("refusals.jsonl")
            if len(found) >= at_least or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)


def start_node(node_dir: Path, state: Path) -> NodeServer:
    state.mkdir(parents=True)
    log = open(state / "server.log", "wb")  # noqa: SIM115 - closed with the process
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "node_app.py"), str(node_dir), str(state)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    log.close()
    deadline = time.monotonic() + START_TIMEOUT
    while not (state / "port").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(
                "the node server did not start:\n" + (state / "server.log").read_text(),
                pytrace=False,
            )
        time.sleep(0.05)
    return NodeServer(proc, state, int((state / "port").read_text()))


@pytest.fixture
def node_servers(tmp_path: Path) -> Iterator[Any]:
    """Start node servers with ``start(node_dir)``; all are stopped at the end."""
    started: list[NodeServer] = []

    def start(node_dir: Path) -> NodeServer:
        server = start_node(node_dir, tmp_path / f"server{len(started)}")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
