"""A subject's records, for a subject access request: each read as from the requester's site,
so the law's view of a read from abroad (full, masked or refused) applies to each one.

An export discloses what reads would, so it needs the read rights a read would need
(``records:export`` and ``records:read``, for the caller's site and purpose); the token's
own record must be in the caller's collections (else it answers as a missing record), and
records of the subject in other collections are withheld and counted, never shown."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from domicile.access import Access
from domicile.vault.errors import PolicyRefused
from domicile.vault.service import Domicile, ReadResult, check_purpose


@dataclass
class Export:
    records: list[ReadResult] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)
    withheld: int = 0  # records in collections the caller may not read

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": [r.to_dict() for r in self.records],
            "refused": self.refused,
            "withheld": self.withheld,
        }


def export_subject(
    vault: Domicile,
    token: str,
    *,
    purpose: str,
    as_site: str | None = None,
    access: Access | None = None,
) -> Export:
    check_purpose(purpose)
    access, requester = vault._acting(access, as_site)
    for operation in ("records:export", "records:read"):
        vault.authorize(access, operation, site=requester.id, purpose=purpose)
    site, record_id = vault._locate(token)
    first = vault._load(site, record_id, purpose, "export", access)
    vault.authorize(access, "records:export", collection=first.collection, hide=True)
    out = Export()
    for rec in vault.store(site.id).subject_records(first.subject_id):
        if rec.is_replica or rec.collection not in vault.config.model.collections:
            continue
        if access.missing("records:read", collection=rec.collection) is not None:
            out.withheld += 1
            continue
        each = vault.tokens.issue(site.id, rec.record_id)
        try:
            under = vault.authorize(
                access, "records:export", collection=rec.collection, purpose=purpose,
                subject=(site.id, rec.subject_id), record=rec.record_id,
            )  # fmt: skip
            out.records.append(
                vault._read(each, site, rec, requester, purpose, access, under=under)
            )
        except PolicyRefused as exc:
            out.refused.append({"token": each, "site": site.id, "reason": exc.message})
    return out
