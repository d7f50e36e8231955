"""What the vault's operations answer: results of writes, reads, finds and site checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from domicile.policy import Decision


@dataclass(frozen=True)
class PutResult:
    token: str
    site: str
    country: str
    decision: Decision
    subject_is_new: bool
    join_tokens: dict[str, str] = field(default_factory=dict)

    # Set at once rather than by a call to ``object.__setattr__`` per field (the frozen
    # dataclass's own ``__init__``): a batch put makes one per record.
    def __init__(
        self,
        token: str,
        site: str,
        country: str,
        decision: Decision,
        subject_is_new: bool,
        join_tokens: dict[str, str] | None = None,
    ) -> None:
        self.__dict__.update(
            token=token, site=site, country=country, decision=decision,
            subject_is_new=subject_is_new, join_tokens={} if join_tokens is None else join_tokens,
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "site": self.site,
            "country": self.country,
            "decision": self.decision.to_dict(),
            **({"join_tokens": self.join_tokens} if self.join_tokens else {}),
        }


@dataclass(frozen=True)
class ReadResult:
    token: str
    site: str
    country: str
    collection: str
    fields: dict[str, Any]
    version: int
    decision: Decision
    transfer: bool  # the read crossed a border
    masked: bool = False  # only the masked forms a pack permits were disclosed
    source: str = "primary"  # or "replica": a permitted copy at the requester's site
    read_at: str | None = None  # the site whose store answered

    def to_dict(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "site": self.site,
            "country": self.country,
            "collection": self.collection,
            "version": self.version,
            "fields": self.fields,
            "transfer": self.transfer,
            "masked": self.masked,
            "source": self.source,
            "read_at": self.read_at or self.site,
            "decision": self.decision.outcome.value,
            "disclosure": self.decision.disclosure,
            "rules": [r.id for r in self.decision.rules],
        }


@dataclass(frozen=True)
class WriteResult:
    """An update's answer to a caller who may not read the record back (no
    ``records:read``, or the law refuses the read from its site): nothing but the version."""

    token: str
    version: int

    def to_dict(self) -> dict[str, Any]:
        return {"token": self.token, "version": self.version}


@dataclass(frozen=True)
class SiteStatus:
    id: str
    country: str
    location: dict[str, str]
    backend: str
    records: int | None
    healthy: bool
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "country": self.country,
            "location": self.location,
            "backend": self.backend,
            "records": self.records,
            "healthy": self.healthy,
            **({"error": self.error} if self.error else {}),
        }


@dataclass
class FindResult:
    records: list[ReadResult] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": [r.to_dict() for r in self.records],
            "refused": self.refused,
            "unavailable": self.unavailable,
        }
