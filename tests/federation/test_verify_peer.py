"""``verify_peer``, the one check of a peer's certificate, against certificates an attacker
or a mistake would bring. (test_handshake.py makes the same attacks over real TLS.)"""

from __future__ import annotations

import datetime as dt
import shutil

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from domicile.errors import PeerRefused
from domicile.federation import Trust, remove_node, verify_peer

from .conftest import Deployment, forged_ca, mint

DER = serialization.Encoding.DER


def _der(path) -> bytes:  # type: ignore[no-untyped-def]
    from cryptography import x509

    return x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(DER)


def _refused(der: bytes | None, trust: Trust, reason: str, **kw: object) -> PeerRefused:
    with pytest.raises(PeerRefused) as caught:
        verify_peer(der, trust, **kw)  # type: ignore[arg-type]
    assert caught.value.reason == reason
    assert caught.value.exit_code == 3
    return caught.value


def test_a_node_certificate_of_the_deployment_is_its_node(deployment: Deployment) -> None:
    trust = Trust.of_node(deployment.nodes["ru"])
    der = _der(deployment.nodes["de"] / "node.pem")
    assert verify_peer(der, trust, role="client") == "de"
    assert verify_peer(der, trust, role="server", expect="de") == "de"


def test_every_certificate_that_is_not_a_current_node_certificate_is_refused(
    deployment: Deployment,
) -> None:
    trust = Trust.of_node(deployment.nodes["ru"])
    ca, ca_key = deployment.ca_cert(), deployment.ca_key()
    now = dt.datetime.now(dt.UTC)
    fake_ca, fake_key = forged_ca(ca)

    _refused(None, trust, "no_certificate", role="client")
    _refused(b"not a certificate", trust, "unknown_ca", role="client")
    forged, _ = mint(fake_ca, fake_key, nodes=["de"])
    refusal = _refused(forged.public_bytes(DER), trust, "unknown_ca", role="client")
    assert refusal.node == "de"
    assert refusal.fingerprint
    expired, _ = mint(ca, ca_key, nodes=["de"], not_before=now - dt.timedelta(days=10),
                      not_after=now - dt.timedelta(seconds=1))  # fmt: skip
    _refused(expired.public_bytes(DER), trust, "expired", role="client")
    early, _ = mint(ca, ca_key, nodes=["de"], not_before=now + dt.timedelta(hours=1))
    _refused(early.public_bytes(DER), trust, "not_yet_valid", role="client")
    nameless, _ = mint(ca, ca_key, nodes=[])
    _refused(nameless.public_bytes(DER), trust, "no_node_identity", role="client")
    two, _ = mint(ca, ca_key, nodes=["de", "us"])
    _refused(two.public_bytes(DER), trust, "no_node_identity", role="client")
    server_only, _ = mint(ca, ca_key, nodes=["de"], usages=[ExtendedKeyUsageOID.SERVER_AUTH])
    _refused(server_only.public_bytes(DER), trust, "not_a_node", role="client")
    assert verify_peer(server_only.public_bytes(DER), trust, role="server") == "de"
    _refused(ca.public_bytes(DER), trust, "not_a_node", role="client")  # the CA itself
    de = _der(deployment.nodes["de"] / "node.pem")
    _refused(de, trust, "wrong_node", role="server", expect="us")
    # the clock: a valid certificate checked at a time outside its validity
    _refused(de, trust, "expired", role="client", now=now + dt.timedelta(days=400))


def test_a_removed_node_is_refused_once_the_new_crl_is_on_disk(deployment: Deployment) -> None:
    trust = Trust.of_node(deployment.nodes["ru"])
    us = _der(deployment.nodes["us"] / "node.pem")
    assert verify_peer(us, trust, role="client") == "us"
    remove_node(deployment.ca, "us")  # rewrites nodes/ru/crl.pem; the Trust rereads it
    _refused(us, trust, "revoked", role="client")


def test_a_crl_not_signed_by_the_ca_refuses_everyone(deployment: Deployment, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """An attacker who swaps the CRL for an empty one of their own gains nothing."""
    node = tmp_path / "ru-copy"
    shutil.copytree(deployment.nodes["ru"], node)
    fake_ca, fake_key = forged_ca(deployment.ca_cert())
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    now = dt.datetime.now(dt.UTC)
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(fake_ca.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=1))
        .sign(fake_key, hashes.SHA256())
    )
    (node / "crl.pem").write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    trust = Trust.of_node(node)
    _refused(_der(deployment.nodes["de"] / "node.pem"), trust, "crl_unusable", role="client")
    (node / "crl.pem").unlink()
    _refused(_der(deployment.nodes["de"] / "node.pem"), trust, "crl_unusable", role="client")


def test_a_bundle_without_its_crl_makes_no_context(deployment: Deployment, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from domicile.errors import BadInput
    from domicile.federation import client_context, server_context

    node = tmp_path / "ru-copy"
    shutil.copytree(deployment.nodes["ru"], node)
    (node / "crl.pem").unlink()
    with pytest.raises(BadInput, match=r"crl\.pem"):
        server_context(node)
    with pytest.raises(BadInput, match=r"crl\.pem"):
        client_context(node, "de")
