"""TLS between nodes: the contexts, and the one check that turns a peer's certificate into
a node id.

Both ends of the node channel require a certificate (mutual TLS 1.3) and trust only the
deployment CA's ``ca.pem`` from the node's bundle, never the system's CAs. OpenSSL checks
the chain and the validity period during the handshake; then, still inside the handshake
and before a byte of HTTP is read or sent, ``verify_peer`` checks the certificate again in
full: signed by the deployment CA, valid now, not revoked by the CA's CRL (reread from the
bundle whenever the file changes, so a removed node is refused without a restart), a node
certificate for the right purpose, naming exactly one node, and (for a client) the node it
meant to reach. Host names play no part: a node is who its certificate says, which is why
the client context does not check host names.

The check is wired in through ``SSLContext.sslobject_class`` and ``sslsocket_class`` (the
ssl module's documented way to customise the objects a context makes), so it runs in the
asyncio server of ``serve.py`` and in httpx's synchronous client alike. A refusal raises
``HandshakeRefused`` (an ``ssl.SSLError``, so servers treat it as a failed handshake)
carrying a ``PeerRefused``, and is passed to the context's ``on_refusal`` callback first.
"""

from __future__ import annotations

import datetime as dt
import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID

from domicile.errors import BadInput, PeerRefused
from domicile.federation.ca import CA_CERT, CRL, NODE_CERT, NODE_KEY, NODE_SCHEME

log = logging.getLogger("domicile.federation")

Role = Literal["server", "client"]  # the role of the PEER whose certificate is checked
Refusal = Callable[[PeerRefused], None]

# Every reason a peer is refused, and what it means.
REASONS = {
    "no_certificate": "the peer presented no certificate",
    "unknown_ca": "the certificate is not signed by this deployment's CA",
    "expired": "the certificate has expired",
    "not_yet_valid": "the certificate is not valid yet",
    "revoked": "the certificate was revoked (its node was removed)",
    "not_a_node": "the certificate is not a node certificate for this use",
    "no_node_identity": "the certificate names no node, or more than one",
    "wrong_node": "the certificate is another node's than the one asked for",
    "crl_unusable": "this node's CRL cannot be read or is not signed by the CA",
}


@dataclass
class _CRLCache:
    stamp: tuple[int, int, int] | None = None
    serials: frozenset[int] | None = None


class Trust:
    """What a node trusts: the deployment CA of its bundle and the CA's current CRL."""

    def __init__(self, ca_pem: Path, crl_pem: Path) -> None:
        self.ca_path = Path(ca_pem)
        self.crl_path = Path(crl_pem)
        try:
            self.ca = x509.load_pem_x509_certificate(self.ca_path.read_bytes())
        except (OSError, ValueError):
            raise BadInput(
                f"{self.ca_path} is not a readable CA certificate",
                hint="copy ca.pem from the deployment's federation/nodes/NODE/ folder",
            ) from None
        self._crl = _CRLCache()
        self._lock = threading.Lock()

    @classmethod
    def of_node(cls, node_dir: Path) -> Trust:
        node_dir = Path(node_dir)
        return cls(node_dir / CA_CERT, node_dir / CRL)

    def revoked_serials(self) -> frozenset[int]:
        """The serials the CA's CRL revokes; reread when the file changes. Raises
        ``PeerRefused('crl_unusable')`` if it is missing, unreadable or not the CA's."""
        try:
            st = self.crl_path.stat()
        except OSError:
            raise _refused("crl_unusable") from None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._lock:
            if self._crl.stamp == stamp and self._crl.serials is not None:
                return self._crl.serials
            try:
                crl = x509.load_pem_x509_crl(self.crl_path.read_bytes())
            except (OSError, ValueError):
                raise _refused("crl_unusable") from None
            if crl.issuer != self.ca.subject or not crl.is_signature_valid(
                self.ca.public_key()  # type: ignore[arg-type]
            ):
                raise _refused("crl_unusable")
            serials = frozenset(r.serial_number for r in crl)
            self._crl = _CRLCache(stamp, serials)
            return serials


def _refused(
    reason: str, cert: x509.Certificate | None = None, node: str | None = None
) -> PeerRefused:
    serial = format(cert.serial_number, "x") if cert is not None else None
    fp = cert.fingerprint(hashes.SHA256()).hex() if cert is not None else None
    return PeerRefused(
        reason,
        f"node peer refused: {REASONS[reason]}",
        node=node,
        serial=serial,
        fingerprint=fp,
    )


def _claimed_nodes(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    prefix = f"{NODE_SCHEME}:"
    return [
        uri[len(prefix) :]
        for uri in san.get_values_for_type(x509.UniformResourceIdentifier)
        if uri.startswith(prefix)
    ]


def verify_peer(
    der: bytes | None,
    trust: Trust,
    *,
    role: Role,
    expect: str | None = None,
    now: dt.datetime | None = None,
) -> str:
    """The verified node id of a peer's certificate (DER), or ``PeerRefused``.

    ``role`` is what the peer acts as: ``"client"`` when a node server checks a caller,
    ``"server"`` when the channel checks the node it connected to; ``expect`` is the node
    the caller meant to reach. Every check is made here, whatever OpenSSL checked before."""
    if not der:
        raise _refused("no_certificate")
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        raise _refused("unknown_ca") from None
    claimed = _claimed_nodes(cert)
    node = claimed[0] if len(claimed) == 1 else None
    try:
        cert.verify_directly_issued_by(trust.ca)
    except (ValueError, TypeError, InvalidSignature):
        raise _refused("unknown_ca", cert, node) from None
    when = now or dt.datetime.now(dt.UTC)
    if when < cert.not_valid_before_utc:
        raise _refused("not_yet_valid", cert, node)
    if when > cert.not_valid_after_utc:
        raise _refused("expired", cert, node)
    if cert.serial_number in trust.revoked_serials():
        raise _refused("revoked", cert, node)
    try:
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise _refused("not_a_node", cert, node) from None
    wanted = (
        ExtendedKeyUsageOID.CLIENT_AUTH if role == "client" else ExtendedKeyUsageOID.SERVER_AUTH
    )
    if basic.ca or wanted not in usage:
        raise _refused("not_a_node", cert, node)
    if node is None:
        raise _refused("no_node_identity", cert)
    if expect is not None and node != expect:
        raise _refused("wrong_node", cert, node)
    return node


# OpenSSL's verification codes (X509_V_ERR_*) for what it refuses before verify_peer runs;
# any other code (no issuer, bad signature, a chain that does not end at the CA) is
# "unknown_ca".
_OPENSSL_REASONS = {
    9: "not_yet_valid",  # CERT_NOT_YET_VALID
    10: "expired",  # CERT_HAS_EXPIRED
    23: "revoked",  # CERT_REVOKED
    26: "not_a_node",  # INVALID_PURPOSE: the extended key usage does not fit
}


def refusal_of(exc: ssl.SSLError) -> PeerRefused | None:
    """The ``PeerRefused`` for a handshake that failed over the peer's certificate; None
    for any other failure (a peer that hung up, spoke something else than TLS 1.3): that is
    a connection that did not happen, not a refused peer."""
    if isinstance(exc, HandshakeRefused):
        return exc.refusal
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _refused(_OPENSSL_REASONS.get(exc.verify_code, "unknown_ca"))
    if "PEER_DID_NOT_RETURN_A_CERTIFICATE" in str(exc.reason):
        return _refused("no_certificate")
    return None


class HandshakeRefused(ssl.SSLError):
    """The handshake failed because ``verify_peer`` refused the peer."""

    def __init__(self, refusal: PeerRefused) -> None:
        super().__init__(1, f"node peer refused ({refusal.reason})")
        self.refusal = refusal


class NodeContext(ssl.SSLContext):
    """An SSL context for the node channel: it knows the node's trust, which role its
    peers play, which node it expects (client side) and whom to tell about refusals."""

    domicile_trust: Trust
    domicile_peer_role: Role
    domicile_expect: str | None
    domicile_on_refusal: Refusal | None


def _after_handshake(conn: ssl.SSLObject | ssl.SSLSocket, handshake: Callable[[], None]) -> None:
    ctx = conn.context
    assert isinstance(ctx, NodeContext)
    try:
        handshake()
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
        raise
    except ssl.SSLError as exc:
        refusal = refusal_of(exc)
        if refusal is not None:
            _tell(ctx, refusal)
        else:
            log.debug("node channel: a TLS handshake failed (%s)", exc.reason)
        raise
    try:
        node = verify_peer(
            conn.getpeercert(binary_form=True),
            ctx.domicile_trust,
            role=ctx.domicile_peer_role,
            expect=ctx.domicile_expect,
        )
    except PeerRefused as refusal:
        _tell(ctx, refusal)
        raise HandshakeRefused(refusal) from None
    conn.domicile_peer = node  # type: ignore[union-attr]


def _tell(ctx: NodeContext, refusal: PeerRefused) -> None:
    log.warning(
        "node channel: refused a peer (%s)",
        refusal.reason,
        extra={"peer": refusal.details},
    )
    if ctx.domicile_on_refusal is not None:
        try:
            ctx.domicile_on_refusal(refusal)
        except Exception:  # the refusal stands whatever the callback does
            log.exception("node channel: the refusal callback failed")


class _CheckedSSLObject(ssl.SSLObject):
    """What asyncio's TLS transport drives: verifies the peer when the handshake ends."""

    def do_handshake(self) -> None:
        _after_handshake(self, super().do_handshake)


class _CheckedSSLSocket(ssl.SSLSocket):
    """What a blocking client (httpx) drives: verifies the peer when the handshake ends."""

    def do_handshake(self, block: bool = False) -> None:
        _after_handshake(self, lambda: super(_CheckedSSLSocket, self).do_handshake(block))


def peer_of(ssl_object: Any) -> str | None:
    """The node id ``verify_peer`` established for a finished handshake (None if the
    object is not one of ours or its handshake did not pass)."""
    peer = getattr(ssl_object, "domicile_peer", None)
    return peer if isinstance(peer, str) else None


def _context(
    node_dir: Path,
    purpose: int,
    *,
    peer_role: Role,
    expect: str | None,
    on_refusal: Refusal | None,
) -> NodeContext:
    node_dir = Path(node_dir)
    trust = Trust.of_node(node_dir)
    try:
        trust.revoked_serials()  # a node without a usable CRL does not start
    except PeerRefused:
        raise BadInput(
            f"{node_dir / CRL} is missing or not signed by the bundle's CA",
            hint="copy crl.pem from the deployment's federation/ca/ folder",
        ) from None
    ctx = NodeContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_TICKET
    if purpose == ssl.PROTOCOL_TLS_CLIENT:
        ctx.check_hostname = False  # the node is named by its certificate: verify_peer
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_verify_locations(cafile=str(trust.ca_path))
        ctx.load_cert_chain(str(node_dir / NODE_CERT), str(node_dir / NODE_KEY))
    except (OSError, ssl.SSLError):
        raise BadInput(
            f"{node_dir} is not a usable node bundle (node.pem, node.key, ca.pem, crl.pem)",
            hint="issue one with `domicile federation issue NODE` and copy its folder",
        ) from None
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    ctx.sslobject_class = _CheckedSSLObject
    ctx.sslsocket_class = _CheckedSSLSocket
    ctx.domicile_trust = trust
    ctx.domicile_peer_role = peer_role
    ctx.domicile_expect = expect
    ctx.domicile_on_refusal = on_refusal
    return ctx


def server_context(node_dir: Path, *, on_refusal: Refusal | None = None) -> NodeContext:
    """The context a node serves with: TLS 1.3, a client certificate required, the
    deployment CA only; callers are checked by ``verify_peer`` (role client)."""
    return _context(
        node_dir, ssl.PROTOCOL_TLS_SERVER, peer_role="client", expect=None, on_refusal=on_refusal
    )


def client_context(
    node_dir: Path, expect: str, *, on_refusal: Refusal | None = None
) -> NodeContext:
    """The context to reach node ``expect`` with: TLS 1.3, this node's certificate, the
    deployment CA only; the server must be node ``expect`` (``verify_peer``, role server)
    before the handshake counts as done."""
    return _context(
        node_dir, ssl.PROTOCOL_TLS_CLIENT, peer_role="server", expect=expect, on_refusal=on_refusal
    )


def own_node_id(node_dir: Path) -> str:
    """The node id of the bundle's own certificate."""
    try:
        cert = x509.load_pem_x509_certificate((Path(node_dir) / NODE_CERT).read_bytes())
    except (OSError, ValueError):
        raise BadInput(f"{node_dir} holds no readable node.pem") from None
    claimed = _claimed_nodes(cert)
    if len(claimed) != 1:
        raise BadInput(f"{node_dir}/node.pem is not a node certificate")
    return claimed[0]
