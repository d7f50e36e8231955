"""Group commit: concurrent reads at a site share one audit append and one commit.

Every read of personal data leaves an audit entry, and no value is returned before its
entry is committed. Committing one entry per read costs a transaction per read; when reads
arrive together (several threads of the service), that cost can be shared. The first
caller to arrive becomes the leader: it takes every entry waiting at that moment (its own
included), appends them in one transaction, commits, and wakes their callers. Callers that
arrive while it commits wait for the next group, led by the first of them. A caller alone
pays exactly what it paid before: there is no timer and no waiting for company.

If the commit fails, every caller of that group gets the error: none of their values is
returned.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from domicile.stores.base import AuditRow, TransferCount


@dataclass
class _Waiter:
    payload: str
    transfer: TransferCount | None
    done: threading.Event = field(default_factory=threading.Event)
    lead: bool = False
    row: AuditRow | None = None
    error: BaseException | None = None


Flush = Callable[[Sequence[str], Sequence[TransferCount]], list[AuditRow]]


class GroupCommit:
    """Appends entries through ``flush(payloads, transfer counts)`` (one transaction that
    returns the rows appended, in order), sharing each flush among concurrent callers."""

    def __init__(self, flush: Flush) -> None:
        self._flush = flush
        self._lock = threading.Lock()
        self._pending: list[_Waiter] = []
        self._busy = False
        self.flushes = 0  # how many transactions (for tests and benchmarks)
        self.entries = 0

    def append(self, payload: str, transfer: TransferCount | None = None) -> AuditRow:
        """Append one entry; returns once it is committed (or raises what the commit did)."""
        me = _Waiter(payload, transfer)
        with self._lock:
            self._pending.append(me)
            if not self._busy:
                self._busy = True
                me.lead = True
        if not me.lead:
            me.done.wait()
            if not me.lead:  # committed (or failed) by another caller's group
                return _result(me)
        self._lead()
        return _result(me)

    def _lead(self) -> None:
        with self._lock:
            group, self._pending = self._pending, []
        try:
            rows = self._flush(
                [w.payload for w in group], [w.transfer for w in group if w.transfer is not None]
            )
            for w, row in zip(group, rows, strict=True):
                w.row = row
        except BaseException as exc:
            for w in group:
                w.error = exc
        self.flushes += 1
        self.entries += len(group)
        with self._lock:
            if self._pending:  # the next group is led by its first caller
                nxt = self._pending[0]
                nxt.lead = True
                nxt.done.set()
            else:
                self._busy = False
        for w in group:
            w.lead = False
            w.done.set()


def _result(w: _Waiter) -> AuditRow:
    if w.error is not None:
        raise w.error
    assert w.row is not None
    return w.row
