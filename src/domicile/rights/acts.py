"""Acts of destruction (Russia: RKN Order 179 of 28.10.2022): what was destroyed, where,
how, why, when and by whom, with the numbers of the audit entries that record it (the
extract from the log that Order 179 asks for when processing is automated), signed by each
site that destroyed data with its audit signing key (Ed25519), so the act can be checked
against the sites' keys and their logs.

On a federation's node, the sites of other nodes sign their own parts: each home node
answers the entries of its log that erased the subject, for this request and this asking
node, signed with its own site's key (``sign_part``); the act carries each part as it was
signed (``parts``), and ``verify_act`` checks each against that node's public key, and
that the act's extract for that site is what the part says.

An act holds no personal data: the subject appears by its opaque id at each site, the
data by its categories and counts.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from domicile.crypto.signing import sign, verify

if TYPE_CHECKING:
    from domicile.vault import Domicile

METHOD = (
    "crypto-shredding: the subject's data key was destroyed at each site, then its records,"
    " index entries and copies were deleted; backups made before hold only ciphertext that"
    " no key opens"
)


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# What a node's part of an act holds: nothing else is signed or taken.
ACT_PART_KEYS = ("kind", "site", "asker", "request", "subjects", "entries")
# Kept apart from every other message a site's key signs (heads, node verifications).
_PART_TAG = b"domicile/act-part/v1\x00"


def sign_part(key: Ed25519PrivateKey, part: dict[str, Any]) -> str:
    """A node's signature of its part of an act (base64, as the act's own)."""
    return base64.b64encode(sign(key, _PART_TAG + _canonical(part))).decode()


def check_part(key: Ed25519PublicKey, part: Any, signature: Any) -> bool:
    """Whether ``signature`` is the signature of ``part`` by the key's site."""
    try:
        raw = base64.b64decode(signature, validate=True)
        return bool(verify(key, _PART_TAG + _canonical(dict(part)), raw))
    except (TypeError, ValueError):
        return False


def destruction_act(
    vault: Domicile,
    req: dict[str, Any],
    destroyed: list[dict[str, Any]],
    log_extract: list[dict[str, Any]],
    *,
    performed_by: str | None,
    reason: str | None = None,
    method: str = METHOD,
    parts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The signed act; ``reason`` and ``method`` default to a subject's request's (a
    retention run gives its own). ``parts``: other nodes' signed parts (``part``,
    ``signature``), as ``erased_at`` checked them."""
    sites = {s.id: s for s in vault.config.sites}
    deadline = req.get("deadline") or {}
    body = {
        "id": f"act_{req['id'].removeprefix('rq_')}_{len(req.get('acts', [])) + 1}",
        "kind": "act_of_destruction",
        "controller": vault.config.model.environment_id,
        "request": req["id"],
        "request_kind": req["kind"],
        "request_received": req["received"],
        "reason": reason
        or (
            f"the subject's {req['kind']} request {req['id']}"
            + (f" ({deadline['law']}: {deadline['rule']})" if deadline else "")
        ),
        "method": method,
        "performed_by": performed_by,
        "performed_at": vault.clock().isoformat(),
        # When the sites were searched for the subject's records and copies.
        "searched_at": req["subject"].get("searched_at"),
        "destroyed": [
            {
                **d,
                "information_system": f"domicile site {d['site']}",
                "location": str(sites[d["site"]].location),
            }
            for d in destroyed
        ],
        "totals": {
            "records": sum(d["records"] for d in destroyed),
            "sites": len({d["site"] for d in destroyed}),
            "keys_destroyed": sum(1 for d in destroyed if d["key_destroyed"]),
        },
        "log_extract": log_extract,
    }
    if parts:  # a federation's act: each other node's part, as that node signed it
        body["parts"] = [
            {"site": p["part"]["site"], "part": p["part"], **_public(vault, p["part"]["site"]),
             "signature": p["signature"]}
            for p in parts
        ]  # fmt: skip
    message = _canonical(body)
    signatures = []
    # Each site that destroyed signs once, where its signing key is (on a node: its own
    # site; another node's part is evidenced by the erase and request entries in its log).
    signers = sorted({d["site"] for d in destroyed if vault.is_here(d["site"])}) or [
        vault.config.local_site or vault.config.model.default_site
    ]
    for site_id in signers:
        key = vault.keys.signing_key(site_id)
        signatures.append(
            {
                "site": site_id,
                **_public(vault, site_id),
                "signature": base64.b64encode(sign(key, message)).decode(),
            }
        )
    return {"act": body, "signatures": signatures}


def _public(vault: Domicile, site_id: str) -> dict[str, str]:
    public = vault.keys.verify_key(site_id).public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"algorithm": "Ed25519", "public_key": base64.b64encode(public).decode()}


def verify_act(vault: Domicile, act: dict[str, Any]) -> list[dict[str, Any]]:
    """Each signature checked against its site's key in this deployment's keyring: the
    act's own (``signed`` act), each other node's part of it (part: its signature, that
    it is about this request, and that the act's extract of that site is what the parts
    say), and a site that destroyed data with neither (missing: not valid)."""
    body = act["act"]
    message = _canonical(body)
    out = []
    for s in act.get("signatures", []):
        try:
            ok = verify(vault.keys.verify_key(s["site"]), message, base64.b64decode(s["signature"]))
        except (KeyError, ValueError):
            ok = False
        out.append({"site": s.get("site"), "valid": ok, "signed": "act"})
    parts = body.get("parts") or []
    said: dict[str, list[Any]] = {}
    for p in parts:
        site, part = p.get("site"), p.get("part")
        try:
            ok = (
                isinstance(part, dict)
                and set(part) == set(ACT_PART_KEYS)
                and isinstance(part["entries"], list)
                and (part["site"], part["request"]) == (site, body["request"])
                and check_part(vault.keys.verify_key(str(site)), part, p.get("signature"))
            )
        except (KeyError, ValueError):
            ok = False
        if ok:
            said.setdefault(str(site), []).extend(part["entries"])
        out.append({"site": site, "valid": ok, "signed": "part"})
    for site, entries in said.items():  # the extract of a site is what its node signed
        listed = [e for e in body.get("log_extract", []) if e.get("site") == site]
        if sorted(map(_canonical, listed)) != sorted(map(_canonical, entries)):
            for c in out:
                if c["site"] == site and c["signed"] == "part":
                    c["valid"] = False
    signed = {c["site"] for c in out if c["valid"]}
    for site in sorted({d["site"] for d in body.get("destroyed", [])} - signed):
        if not any(c["site"] == site for c in out):
            out.append({"site": site, "valid": False, "signed": "missing"})
    return out
