"""The vault: put, get, update, delete, find and erase records of subjects, by collection.

The write path: check every value; resolve the subject's residency; ask the decision
engine which site must hold the record (the home site); seal the record under the
subject's data key; then, in one transaction at the home site, store the record, its blind
indexes and its audit entry; return a token. Nothing of the subject's data is written to
any other site, and if the home site cannot be reached the write fails: it never falls back.

The read path: open the token; read the record at its home site; ask the engine whether
the requester's site may have it (a read from another country is a transfer, or a masked
disclosure where a pack permits only masked forms); audit the read, or the refusal; only
then open the fields.

Every record operation takes its caller (``access=``, a ``domicile.access.Access``; by
default the local operator, with every right) and checks its scopes through
``Domicile.authorize`` before it decrypts, writes or audits anything as allowed: the
operation, site and purpose before the record is loaded, and the record's collection once
it is (a record outside the caller's collections answers exactly as a missing one does),
with the blocks a subject's request put on its subject (``VaultCore.check_blocks``: a
restriction of processing, a withdrawal of consent).
Every audit entry names the caller (``client``) and the site it acted from (``requester``).
"""

from __future__ import annotations

import contextlib

from domicile.errors import DomicileError
from domicile.vault.core import check_purpose, new_ids
from domicile.vault.erasure import ROTATION_GRACE, Erasure
from domicile.vault.operations import Operations
from domicile.vault.results import FindResult, PutResult, ReadResult, SiteStatus, WriteResult
from domicile.vault.sealing import RESIDENCY_FIELD
from domicile.vault.writing import Writing

__all__ = [
    "RESIDENCY_FIELD",
    "ROTATION_GRACE",
    "Domicile",
    "FindResult",
    "PutResult",
    "ReadResult",
    "SiteStatus",
    "WriteResult",
    "check_purpose",
    "new_ids",
]


class Domicile(Writing, Erasure, Operations):
    """The SDK. ``Domicile.open()`` reads the configuration; close it when done."""

    def close(self, *, checkpoint: bool = True) -> None:
        """Disconnect. If this process added to any site's audit log, first run a witness
        round (unless ``checkpoint=False``), so what it did is signed and witnessed. A
        process that only read (verification, say) writes nothing here."""
        with self._lock:
            if checkpoint and any(ledger.appended for ledger in self._ledgers.values()):
                with contextlib.suppress(DomicileError):
                    self.witness()
            super().close()
