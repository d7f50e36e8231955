"""The localized vault: records stored encrypted at the site the law requires."""

from domicile.vault.errors import InvalidToken, NotFound, PolicyRefused
from domicile.vault.service import (
    Domicile,
    FindResult,
    PutResult,
    ReadResult,
    SiteStatus,
    WriteResult,
)

__all__ = [
    "Domicile",
    "FindResult",
    "InvalidToken",
    "NotFound",
    "PolicyRefused",
    "PutResult",
    "ReadResult",
    "SiteStatus",
    "WriteResult",
]
