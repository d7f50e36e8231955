"""The deployment's certificate authority: who may speak as a node.

A federated deployment runs one node per site. Nodes know each other by certificates that
this CA issues, never by shared secrets. A node certificate names its node in a URI
subject alternative name (``domicile-node:ru``), the only identity the node channel
accepts; DNS and IP names for the node's hosts ride along for ordinary TLS tooling.

Keys are ECDSA P-256, for the CA and the nodes alike: every TLS 1.3 stack must support
``ecdsa_secp256r1_sha256`` (RFC 8446, section 9.1), FIPS 140 modules and HSMs (PKCS#11)
do, and load balancers or proxies that terminate TLS in front of a node do too, whereas
Ed25519 certificates are still refused by several of them.

On disk, under ``DATA_DIR/federation/``::

    ca/ca.pem  ca/ca.key  ca/crl.pem  ca/issued.json     the CA (stays on the CA's machine)
    nodes/<id>/node.pem  node.key  ca.pem  crl.pem      what node <id> needs, copied to its host

Removing a node revokes every certificate it was ever issued, deletes its ``node.pem`` and
``node.key`` here and rewrites the CRL, signed by the CA, in ``ca/`` and in every node
folder here; nodes elsewhere need the new
``crl.pem`` copied to them (they reread it on every new connection).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from domicile.errors import BadInput, Conflict, EnvironmentProblem, NotFound
from domicile.files import lock_file, private_dir, write_private, write_private_json

NODE_SCHEME = "domicile-node"
CA_DAYS = 3650  # ten years: the CA is replaced by a new deployment, not rotated in place
NODE_DAYS = 90  # a node certificate is short-lived; `federation issue` renews it
MAX_NODE_DAYS = 825  # what public CAs were held to before 398; longer is refused

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
CRL = "crl.pem"
ISSUED = "issued.json"
NODE_CERT = "node.pem"
NODE_KEY = "node.key"

_NODE_ID = re.compile(r"^[a-z][a-z0-9_]{0,31}$")  # a site id (config.Ident)
_HOST = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


class NoCA(BadInput):
    """The deployment has no federation CA (it was not made with ``init --federated``)."""

    code = "no_ca"


def federation_dir(data_dir: Path) -> Path:
    """Where a deployment keeps its CA and node bundles."""
    return Path(data_dir) / "federation"


def ca_dir(data_dir: Path) -> Path:
    return federation_dir(data_dir) / "ca"


def node_dir(ca_folder: Path, node_id: str) -> Path:
    """The folder of node ``node_id``'s bundle, beside the CA folder."""
    return Path(ca_folder).parent / "nodes" / check_node_id(node_id)


def node_uri(node_id: str) -> str:
    return f"{NODE_SCHEME}:{node_id}"


def check_node_id(node_id: str) -> str:
    if not isinstance(node_id, str) or not _NODE_ID.fullmatch(node_id):
        raise BadInput(
            f"{node_id!r} is not a node id",
            hint="a node is named by its site id: a lower-case letter, then letters, digits or _ (32 at most)",
        )
    return node_id


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER, hex: what the list shows and the audit records."""
    return cert.fingerprint(hashes.SHA256()).hex()


def host_names(hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        if not _HOST.fullmatch(host):
            raise BadInput(
                f"{host!r} is not a host name or IP address",
                hint="give --host a DNS name such as node-ru.example.com or an address such as 10.0.0.5",
            )
        names.append(x509.DNSName(host.lower()))
    return names


@dataclass(frozen=True)
class CA:
    """The CA's certificate and key, loaded from its folder."""

    folder: Path
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def load(cls, folder: Path) -> CA:
        folder = Path(folder)
        cert_path, key_path = folder / CA_CERT, folder / CA_KEY
        if not cert_path.is_file() or not key_path.is_file():
            raise NoCA(
                f"no federation CA in {folder}",
                hint="create one with `domicile init DIR --federated`",
            )
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except PermissionError as exc:
            raise EnvironmentProblem(f"cannot read the CA in {folder}: {exc.strerror}") from None
        except ValueError:
            raise BadInput(
                f"the CA files in {folder} cannot be read as a certificate and a key",
                hint="restore ca.pem and ca.key from a backup",
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise BadInput(f"the CA key in {folder} is not an ECDSA key")
        return cls(folder, cert, key)


def create_ca(folder: Path, deployment_name: str, *, days: int = CA_DAYS) -> Path:
    """Create the deployment's CA in ``folder`` (usually ``DATA_DIR/federation/ca``): a P-256
    key (0600), a self-signed CA certificate valid ``days``, an empty CRL and an empty
    register of issued certificates. Refuses if a CA is already there."""
    folder = Path(folder)
    name = deployment_name.strip()
    if not name or len(name) > 64:
        raise BadInput("the deployment name must be 1 to 64 characters")
    private_dir(folder, tighten=True)
    with lock_file(folder / ".lock"):
        if (folder / CA_KEY).exists() or (folder / CA_CERT).exists():
            raise Conflict(
                f"{folder} already holds a CA",
                hint="issue node certificates from it with `domicile federation issue NODE`",
            )
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "domicile"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"{name} deployment CA"),
            ]
        )
        now = _now()
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        write_private(folder / CA_KEY, _key_pem(key))
        write_private(folder / CA_CERT, _pem(cert))
        ca = CA(folder, cert, key)
        write_private_json(folder / ISSUED, {"deployment": name, "certificates": []})
        _write_crl(ca, [])
    return folder


def _register(folder: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((folder / ISSUED).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NoCA(
            f"no register of issued certificates in {folder}",
            hint="create the CA with `domicile init DIR --federated`",
        ) from None
    except (ValueError, UnicodeDecodeError):
        raise BadInput(
            f"{folder / ISSUED} is not the CA's register",
            hint="restore it from a backup",
        ) from None
    return data


def issue_node(
    ca_folder: Path, node_id: str, hosts: list[str] | None = None, days: int = NODE_DAYS
) -> Path:
    """Issue node ``node_id`` a certificate (P-256 key, serverAuth and clientAuth, URI SAN
    ``domicile-node:ID`` plus a DNS or IP SAN per host, valid ``days``) and write its bundle
    (``node.pem``, ``node.key``, ``ca.pem``, ``crl.pem``) to ``nodes/ID/`` beside the CA
    folder, replacing an earlier bundle. Earlier certificates stay valid until they expire
    or the node is removed. Returns the bundle's folder."""
    check_node_id(node_id)
    if not 1 <= days <= MAX_NODE_DAYS:
        raise BadInput(f"a node certificate lives 1 to {MAX_NODE_DAYS} days, not {days}")
    hosts = list(dict.fromkeys(hosts or []))
    sans = host_names(hosts)
    ca_folder = Path(ca_folder)
    with lock_file(ca_folder / ".lock"):
        ca = CA.load(ca_folder)
        register = _register(ca_folder)
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        if ca.cert.not_valid_after_utc <= now + dt.timedelta(days=1):
            raise BadInput(
                f"the CA in {ca_folder} expires on {_iso(ca.cert.not_valid_after_utc)}: it can issue no more",
                hint="set up a new federated deployment CA and issue every node from it",
            )
        not_after = min(now + dt.timedelta(days=days), ca.cert.not_valid_after_utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "domicile"),
                        x509.NameAttribute(NameOID.COMMON_NAME, f"node {node_id}"),
                    ]
                )
            )
            .issuer_name(ca.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(node_uri(node_id)), *sans]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
                critical=False,
            )
            .sign(ca.key, hashes.SHA256())
        )
        register["certificates"].append(
            {
                "node": node_id,
                "serial": format(cert.serial_number, "x"),
                "fingerprint": fingerprint(cert),
                "hosts": hosts,
                "not_before": _iso(cert.not_valid_before_utc),
                "not_after": _iso(cert.not_valid_after_utc),
                "revoked_at": None,
            }
        )
        out = node_dir(ca_folder, node_id)
        private_dir(out, tighten=True)
        write_private(out / NODE_KEY, _key_pem(key))
        write_private(out / NODE_CERT, _pem(cert))
        write_private(out / CA_CERT, _pem(ca.cert))
        shutil.copyfile(ca_folder / CRL, out / CRL)
        os.chmod(out / CRL, 0o600)
        write_private_json(ca_folder / ISSUED, register)
    return out


def remove_node(ca_folder: Path, node_id: str) -> list[str]:
    """Revoke every certificate node ``node_id`` was issued, rewrite the CRL (in the CA
    folder and in every node bundle beside it) and delete the node's certificate and key
    from its folder here (a keyring kept there stays). Returns
    the serials revoked now (none if they were all revoked before)."""
    check_node_id(node_id)
    ca_folder = Path(ca_folder)
    with lock_file(ca_folder / ".lock"):
        ca = CA.load(ca_folder)
        register = _register(ca_folder)
        mine = [c for c in register["certificates"] if c["node"] == node_id]
        if not mine:
            raise NotFound(
                f"the CA never issued a certificate to node {node_id}",
                hint="`domicile federation list` shows the nodes",
            )
        when = _iso(_now())
        revoked = []
        for entry in mine:
            if entry["revoked_at"] is None:
                entry["revoked_at"] = when
                revoked.append(entry["serial"])
        write_private_json(ca_folder / ISSUED, register)
        _write_crl(ca, register["certificates"])
        # The node's credentials go; anything else kept in its folder (its keyring) stays.
        bundle = node_dir(ca_folder, node_id)
        for name in (NODE_KEY, NODE_CERT):
            (bundle / name).unlink(missing_ok=True)
    return revoked


def _write_crl(ca: CA, certificates: list[dict[str, Any]]) -> None:
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now - dt.timedelta(minutes=5))
        # The CRL changes only when a node is removed; nodes reread it on every connection.
        .next_update(max(ca.cert.not_valid_after_utc, now + dt.timedelta(days=1)))
    )
    for entry in certificates:
        if entry["revoked_at"] is None:
            continue
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(int(entry["serial"], 16))
            .revocation_date(
                dt.datetime.strptime(entry["revoked_at"], "%Y-%m-%dT%H:%M:%SZ").replace(
                    tzinfo=dt.UTC
                )
            )
            .build()
        )
    crl = builder.sign(ca.key, hashes.SHA256())
    text = crl.public_bytes(serialization.Encoding.PEM).decode("ascii")
    write_private(ca.folder / CRL, text)
    nodes = ca.folder.parent / "nodes"
    if nodes.is_dir():
        for bundle in sorted(nodes.iterdir()):
            if (bundle / NODE_CERT).is_file() or (bundle / CRL).is_file():
                write_private(bundle / CRL, text)


def list_nodes(ca_folder: Path, *, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Every certificate the CA issued: node, serial, hosts, validity, revoked or not and
    whether it is usable now. Reads only."""
    ca_folder = Path(ca_folder)
    if not (ca_folder / CA_CERT).is_file():
        raise NoCA(
            f"no federation CA in {ca_folder}",
            hint="create one with `domicile init DIR --federated`",
        )
    when = _iso(now or _now())
    out = []
    for entry in _register(ca_folder)["certificates"]:
        state = "revoked" if entry["revoked_at"] else "valid"
        if state == "valid" and entry["not_after"] < when:
            state = "expired"
        out.append({**entry, "state": state})
    return sorted(out, key=lambda e: (e["node"], e["not_before"], e["serial"]))


def deployment_name(ca_folder: Path) -> str:
    with contextlib.suppress(BadInput):
        return str(_register(Path(ca_folder)).get("deployment", ""))
    return ""
