"""Acts of destruction (Russia: RKN Order 179 of 28.10.2022): what was destroyed, where,
how, why, when and by whom, with the numbers of the audit entries that record it (the
extract from the log that Order 179 asks for when processing is automated), signed by each
site that destroyed data with its audit signing key (Ed25519), so the act can be checked
against the sites' keys and their logs.

An act holds no personal data: the subject appears by its opaque id at each site, the
data by its categories and counts.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

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


def destruction_act(
    vault: Domicile,
    req: dict[str, Any],
    destroyed: list[dict[str, Any]],
    log_extract: list[dict[str, Any]],
    *,
    performed_by: str | None,
    reason: str | None = None,
    method: str = METHOD,
) -> dict[str, Any]:
    """The signed act; ``reason`` and ``method`` default to a subject's request's (a
    retention run gives its own)."""
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
    message = _canonical(body)
    signatures = []
    # Each site that destroyed signs once, where its signing key is (on a node: its own
    # site; another node's part is evidenced by the erase and request entries in its log).
    signers = sorted({d["site"] for d in destroyed if vault.is_here(d["site"])}) or [
        vault.config.local_site or vault.config.model.default_site
    ]
    for site_id in signers:
        key = vault.keys.signing_key(site_id)
        public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        signatures.append(
            {
                "site": site_id,
                "algorithm": "Ed25519",
                "public_key": base64.b64encode(public).decode(),
                "signature": base64.b64encode(sign(key, message)).decode(),
            }
        )
    return {"act": body, "signatures": signatures}


def verify_act(vault: Domicile, act: dict[str, Any]) -> list[dict[str, Any]]:
    """Each signature checked against its site's key in this deployment's keyring."""
    message = _canonical(act["act"])
    out = []
    for s in act.get("signatures", []):
        try:
            ok = verify(vault.keys.verify_key(s["site"]), message, base64.b64decode(s["signature"]))
        except (KeyError, ValueError):
            ok = False
        out.append({"site": s.get("site"), "valid": ok})
    return out
