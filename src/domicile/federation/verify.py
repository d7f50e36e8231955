"""``domicile audit verify --deployment --node SITE``: every node's audit log, each verified
where it is, gathered by one node over the node channel.

No node can read another's log, so each verifies its own (``answer``, the node operation
``verify``: reads only, asked only by a peer whose certificate the handshake verified)
against its own signed heads and the newest head of its log that the asking node has
witnessed, and answers with its report, its newest signed head and the newest head of the
asker's log that it has witnessed, all signed with its site's tree head key (the key its
heads are signed with) over the asker's nonce.

The asker does not take the answer on its word where it can check it (``check``): the
signature, with the node's public key; that the answer is about that node and this ask;
that the node's newest head is signed by it and extends the head of its log witnessed
here (the same size and root, or a consistency proof the node gives). What the node's
report says of the entries past its heads is its own word, as in one process. The asker's
own log is verified last, with the heads of it that the others said they witnessed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from domicile.audit import AuditEvent
from domicile.audit.heads import TreeHead
from domicile.audit.ledger import HeadClaim, VerifyReport, to_head
from domicile.audit.merkle import verify_consistency
from domicile.crypto.signing import sign, verify
from domicile.errors import BadInput, DomicileError, NodeUnavailable
from domicile.federation.node import FederatedDomicile
from domicile.stores.base import SiteUnavailable

_TAG = b"domicile/node-verify/v1\x00"
_NONCE = re.compile(r"[0-9a-f]{32}")


def _message(doc: Mapping[str, Any]) -> bytes:
    return _TAG + AuditEvent.canonical(dict(doc)).encode()


def _newest_witnessed(vault: FederatedDomicile, site: str) -> TreeHead | None:
    """The newest head of ``site``'s log that this node has witnessed."""
    node = vault.node
    assert node is not None
    rows = vault.store(node).witnessed(site)
    return to_head(site, max(rows, key=lambda r: r.size)) if rows else None


def _verify_own(vault: FederatedDomicile, claims: list[HeadClaim]) -> VerifyReport:
    node = vault.node
    assert node is not None

    def key_of(site: str) -> Any:
        try:
            return vault.keys.verify_key(site)
        except DomicileError:
            return None

    return vault.ledger(node).verify(vault.store(node), claims=claims, keys_of=key_of)


def answer(vault: FederatedDomicile, peer: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """At the node asked: its own log verified, signed for the asking ``peer``."""
    nonce, held = body.get("nonce"), body.get("witnessed")
    if not (isinstance(nonce, str) and _NONCE.fullmatch(nonce)):
        raise BadInput("nonce: 32 lower-case hex digits")
    node = vault.node
    assert node is not None
    key = vault.keys.verify_key(node)
    claims = []
    if held is not None:  # the head of this log the asker holds: checked here too
        claims.append(HeadClaim(TreeHead.from_dict(held, f"node {peer}'s head"), peer, True, key))
    report = _verify_own(vault, claims)
    newest = vault.ledger(node).latest_head(vault.store(node))
    holds = _newest_witnessed(vault, peer)
    doc = {
        "site": node, "asker": peer, "nonce": nonce, "report": report.to_dict(),
        "head": newest.to_dict() if newest else None,
        "holds": holds.to_dict() if holds else None,
    }  # fmt: skip
    return {**doc, "signature": sign(vault.keys.signing_key(node), _message(doc)).hex()}


@dataclass
class NodeVerification:
    """One node's log as the asking node found it."""

    node: str
    report: dict[str, Any] | None = None  # the node's own report (``VerifyReport``)
    checked: list[str] = field(default_factory=list)  # what the asker checked itself
    problems: list[str] = field(default_factory=list)  # what the asker found wrong

    @property
    def ok(self) -> bool:
        return not self.problems and self.report is not None and bool(self.report.get("ok"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node, "ok": self.ok, "report": self.report,
            "checked": self.checked, "problems": self.problems,
        }  # fmt: skip


@dataclass
class DeploymentVerification:
    asked_by: str
    nodes: list[NodeVerification] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.unavailable and all(n.ok for n in self.nodes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "asked_by": self.asked_by,
            "nodes": [n.to_dict() for n in self.nodes], "unavailable": self.unavailable,
        }  # fmt: skip


def verify_deployment(vault: FederatedDomicile) -> DeploymentVerification:
    """At the asking node: every peer's verification of its own log, checked here, and
    this node's own log verified against the heads of it that the peers hold. Reads only."""
    me = vault.node
    if me is None:
        raise BadInput(
            "a deployment's logs are verified from one of its nodes",
            hint="run `domicile audit verify --deployment --node SITE` on that node's host",
        )
    out = DeploymentVerification(me)
    mine = vault.keys.verify_key(me)
    claims: list[HeadClaim] = []
    for peer in sorted(s.id for s in vault.config.sites if s.id != me):
        nonce = os.urandom(16).hex()
        held = _newest_witnessed(vault, peer)
        try:
            got = vault.peers.call(
                peer, "verify", {"nonce": nonce, "witnessed": held.to_dict() if held else None}
            )
        except (NodeUnavailable, SiteUnavailable):
            out.unavailable.append(peer)
            continue
        except DomicileError as exc:  # refused (asked too often, say): not verified
            out.nodes.append(NodeVerification(peer, problems=[f"node {peer}: {exc.message}"]))
            continue
        result, holds = check(vault, peer, nonce, held, got)
        out.nodes.append(result)
        if holds is not None:
            claims.append(HeadClaim(holds, peer, True, mine))
    own = _verify_own(vault, claims)
    out.nodes.insert(0, NodeVerification(me, own.to_dict(), ["verified here"]))
    return out


def check(
    vault: FederatedDomicile, peer: str, nonce: str, held: TreeHead | None, got: Mapping[str, Any]
) -> tuple[NodeVerification, TreeHead | None]:
    """A peer's answer as far as the asker can check it, and the head of the asker's log
    the peer says it witnessed (None when it names none, or the answer does not hold)."""
    me = vault.node
    result = NodeVerification(peer)
    key = vault.keys.verify_key(peer)
    doc = {k: got.get(k) for k in ("site", "asker", "nonce", "report", "head", "holds")}
    signature = got.get("signature")
    try:
        signed = isinstance(signature, str) and verify(key, _message(doc), bytes.fromhex(signature))
    except (ValueError, TypeError):
        signed = False
    if not signed:
        result.problems.append(f"node {peer}'s answer is not signed with its key")
        return result, None
    if (doc["site"], doc["asker"], doc["nonce"]) != (peer, me, nonce):
        result.problems.append(f"node {peer} answered another question (site, asker or nonce)")
        return result, None
    result.checked.append(f"signed with node {peer}'s key")
    report = doc["report"]
    if not isinstance(report, Mapping) or not isinstance(report.get("ok"), bool):
        result.problems.append(f"node {peer}'s answer holds no report")
        return result, None
    result.report = dict(report)
    try:
        head = None if doc["head"] is None else TreeHead.from_dict(doc["head"])
        holds = None if doc["holds"] is None else TreeHead.from_dict(doc["holds"])
    except BadInput:
        result.problems.append(f"node {peer}'s answer holds a malformed head")
        return result, None
    if head is not None and (head.site != peer or not head.verifies(key)):
        result.problems.append(f"node {peer}'s newest head is not signed by it")
    elif held is not None:
        result.problems += _against_witnessed(vault, peer, head, held, result.checked)
    if holds is not None and holds.site != me:
        result.problems.append(f"node {peer} names a head of another log as this node's")
        holds = None
    return result, holds


def _against_witnessed(
    vault: FederatedDomicile, peer: str, head: TreeHead | None, held: TreeHead, checked: list[str]
) -> list[str]:
    """Does the peer's newest head extend the head of its log witnessed here?"""
    if head is None or head.size < held.size:
        return [
            f"node {peer}'s newest head is older than the head of size {held.size} witnessed "
            "here (a rollback)"
        ]
    if head.size == held.size:
        if head.root != held.root:
            return [f"node {peer}'s head of size {held.size} differs from the one witnessed here"]
    else:
        try:
            got = vault.peers.call(peer, "prove", {"from": held.size, "to": head.size})
            proof = [bytes.fromhex(h) for h in got["proof"]]
        except (DomicileError, KeyError, TypeError, ValueError):
            return [f"node {peer} gave no consistency proof from the head witnessed here"]
        if not verify_consistency(held.size, head.size, held.root, head.root, proof):
            return [
                f"node {peer}'s newest head does not extend the head of size {held.size} "
                "witnessed here (its log was rewritten or forked)"
            ]
    checked.append(
        f"its newest head (size {head.size}) extends the one witnessed here (size {held.size})"
    )
    return []
