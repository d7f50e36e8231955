"""The deployment CA: what it writes, what it issues, what removing a node does."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from domicile.errors import BadInput, Conflict, NotFound
from domicile.federation import create_ca, issue_node, list_nodes, remove_node
from domicile.federation.ca import NoCA

from .conftest import Deployment


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_the_ca_is_a_p256_ca_whose_key_only_its_owner_reads(deployment: Deployment) -> None:
    ca = _cert(deployment.ca / "ca.pem")
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp256r1"
    basic = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical
    assert basic.value.ca
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert usage.crl_sign
    assert not usage.digital_signature
    assert (ca.not_valid_after_utc - ca.not_valid_before_utc).days >= 3000
    for path in (deployment.ca / "ca.key", deployment.nodes["ru"] / "node.key"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(deployment.ca.stat().st_mode) == 0o700
    assert sorted(p.name for p in deployment.ca.iterdir() if not p.name.startswith(".")) == [
        "ca.key",
        "ca.pem",
        "crl.pem",
        "issued.json",
    ]


def test_a_node_certificate_names_its_node_and_hosts_for_both_ends_of_tls(
    deployment: Deployment,
) -> None:
    bundle = deployment.nodes["ru"]
    assert bundle == deployment.ca.parent / "nodes" / "ru"
    assert sorted(p.name for p in bundle.iterdir()) == ["ca.pem", "crl.pem", "node.key", "node.pem"]
    cert = _cert(bundle / "node.pem")
    cert.verify_directly_issued_by(_cert(deployment.ca / "ca.pem"))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["domicile-node:ru"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 91


def test_removing_a_node_revokes_all_its_certificates_in_every_bundles_crl(
    deployment: Deployment,
) -> None:
    first = _cert(deployment.nodes["us"] / "node.pem").serial_number
    second = _cert(issue_node(deployment.ca, "us", []) / "node.pem").serial_number
    (deployment.nodes["us"] / "keyring.json").write_text("{}")  # a node keeps its keyring here
    revoked = remove_node(deployment.ca, "us")
    assert sorted(revoked) == sorted([format(first, "x"), format(second, "x")])
    assert sorted(p.name for p in deployment.nodes["us"].iterdir()) == [
        "ca.pem", "crl.pem", "keyring.json",
    ]  # fmt: skip
    ca = _cert(deployment.ca / "ca.pem")
    for crl_path in (deployment.ca / "crl.pem", deployment.nodes["ru"] / "crl.pem",
                     deployment.nodes["us"] / "crl.pem"):  # fmt: skip
        crl = x509.load_pem_x509_crl(crl_path.read_bytes())
        assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
        assert {r.serial_number for r in crl} == {first, second}
    states = {(e["node"], e["state"]) for e in list_nodes(deployment.ca)}
    assert states == {("ru", "valid"), ("de", "valid"), ("us", "revoked")}
    assert remove_node(deployment.ca, "us") == []  # again: nothing more to revoke


def test_setup_mistakes_are_clear_errors_that_change_nothing(tmp_path: Path) -> None:
    ca = tmp_path / "federation" / "ca"
    with pytest.raises(NoCA):
        issue_node(ca, "ru", [])
    create_ca(ca, "test")
    before = (ca / "ca.key").read_bytes()
    with pytest.raises(Conflict):
        create_ca(ca, "again")
    assert (ca / "ca.key").read_bytes() == before
    for bad in ("RU", "ru/../x", "", "1ru"):
        with pytest.raises(BadInput):
            issue_node(ca, bad, [])
    with pytest.raises(BadInput):
        issue_node(ca, "ru", ["not a host!"])
    with pytest.raises(BadInput):
        issue_node(ca, "ru", [], days=5000)
    with pytest.raises(NotFound):
        remove_node(ca, "de")
    assert not (tmp_path / "federation" / "nodes").exists()
    assert list_nodes(ca) == []


def test_a_ca_about_to_expire_issues_nothing(tmp_path: Path) -> None:
    ca = tmp_path / "federation" / "ca"
    create_ca(ca, "short", days=1)
    with pytest.raises(BadInput, match="can issue no more"):
        issue_node(ca, "ru", [])
    assert list_nodes(ca) == []
