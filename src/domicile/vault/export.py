"""A subject's records, for a subject access request: each read as from the requester's site,
so the law's view of a read from abroad (full, masked or refused) applies to each one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from domicile.vault.errors import PolicyRefused
from domicile.vault.service import Domicile, ReadResult, check_purpose


@dataclass
class Export:
    records: list[ReadResult] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)


def export_subject(
    vault: Domicile, token: str, *, purpose: str, as_site: str | None = None
) -> Export:
    check_purpose(purpose)
    site, record_id = vault._locate(token)
    requester = vault._requester(as_site)
    first = vault._load(site, record_id, purpose, "export")
    out = Export()
    for rec in vault.store(site.id).subject_records(first.subject_id):
        if rec.is_replica:
            continue
        each = vault.tokens.issue(site.id, rec.record_id)
        try:
            out.records.append(vault._read(each, site, rec, requester, purpose))
        except PolicyRefused as exc:
            out.refused.append({"token": each, "site": site.id, "reason": exc.message})
    return out
