"""The OpenAPI description of an attestation (``POST /v1/subjects/attestation``): the
document ``domicile attest subject`` writes, field by field, so that a client can check
it with ``domicile attest verify`` or its own RFC 9162 code."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Hex32 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="32 bytes, hex")]
Hex64 = Annotated[str, Field(pattern=r"^[0-9a-f]{128}$", description="64 bytes, hex")]


class AttestBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(
        min_length=1, max_length=200, description="A token of one of the subject's records."
    )
    purpose: str = Field(
        default="attestation",
        pattern=r"^[a-z][a-z0-9_.-]{0,63}$",
        description="Why the proof is asked for: checked against the client's purpose "
        "scopes and recorded in the audit entry of the disclosure.",
    )
    since: dict[str, Annotated[int, Field(ge=0)]] | None = Field(
        default=None,
        description="The size of the audit head the verifier holds, per site (its heads "
        "file): where the newest head is bigger, the proof shows that it extends it.",
        examples=[{"ru": 12, "de": 9}],
    )


class SignedHead(BaseModel):
    """A site's signed statement (Ed25519 over the tag, site, size, root and signed_at)."""

    site: str
    size: int = Field(ge=0)
    root: Hex32
    signed_at: str
    signature: Hex64


class AuditEntry(BaseModel):
    """The audit entry that records the commitment (its payload names no subject)."""

    seq: int = Field(ge=1)
    payload: str
    prev_hash: str = Field(pattern=r"^([0-9a-f]{64})?$")


class Membership(BaseModel):
    """The subject's own leaf: its index, its role and the salt of the role's hash."""

    index: int = Field(ge=0)
    role: Literal["primary", "copy"]
    salt: Hex32
    audit_path: list[Hex32]


class Neighbour(BaseModel):
    """A leaf next to where the subject would be: another opaque keyed hash."""

    index: int = Field(ge=0)
    key: Hex32
    role_commit: Hex32
    audit_path: list[Hex32]


class Absence(BaseModel):
    """Two adjacent leaves bracketing the subject's hash (one at either end; none when
    the tree is empty)."""

    left: Neighbour | None = None
    right: Neighbour | None = None


class TransferRef(BaseModel):
    """A transfer entry that brought a copy, whole: the verifier rebuilds its hash from
    ``prev_hash``, ``seq`` and ``payload``, proves it in the site's signed log and reads
    the decision, the sites and the subject's keyed hash from the payload. The payload
    names the subject's internal random id and its copied records' ids, never a value."""

    seq: int = Field(ge=1)
    prev_hash: str = Field(pattern=r"^([0-9a-f]{64})?$")
    payload: str
    audit_path: list[Hex32]


class Consistency(BaseModel):
    """An RFC 9162 consistency proof from the verifier's head (``from_size``) to
    ``audit_head``."""

    from_size: int = Field(ge=1)
    path: list[Hex32]


class SiteAttestation(BaseModel):
    commitment: SignedHead
    entry: AuditEntry
    audit_head: SignedHead
    audit_path: list[Hex32]
    newest: Hex64 = Field(
        description="The site's Ed25519 signature over 'domicile/attest-newest/v1' 0x00 site "
        "0x00 audit size 0x00 audit root 0x00 entry seq 0x00 commitment root: the entry is "
        "its newest commitment up to audit_head."
    )
    consistency: Consistency | None = None
    public_key: str = Field(pattern=r"^ed25519:")
    holds: Literal["primary", "copy", "nothing"]
    member: Membership | None = None
    absence: Absence | None = None
    transfers: list[TransferRef] | None = None


class Attestation(BaseModel):
    """Where the subject's data is, per site, provable with the sites' public keys."""

    format: Literal["domicile.attestation/1"]
    environment: str
    subject: Hex32 = Field(description="The subject's keyed hash (HMAC-SHA-256)")
    home: str
    made_at: str
    sites: dict[str, SiteAttestation]
    how_to_check: str
