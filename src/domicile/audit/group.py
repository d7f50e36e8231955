"""Group commit: work arriving at a site at the same moment shares one transaction.

Every read of personal data leaves an audit entry, and no value is returned before its
entry is committed; every write commits its records, index entries, outbox rows and audit
entries together. Committing once per caller costs a transaction (on PostgreSQL a round
trip and a wait for the disk) per caller; when callers arrive together (several threads of
the service), that cost can be shared. The first caller to arrive becomes the leader: it
takes every item waiting at that moment (its own included), runs them in one transaction,
commits, and wakes their callers. Callers that arrive while it commits wait for the next
group, led by the first of them. A caller alone pays exactly what it paid before: there is
no waiting for company.

Callers may also say that an item is on its way (``expect``, then ``submit(...,
expected=True)``, or ``cancel`` if it will not come): a read announces its entry once its
record is loaded, while it opens and decides it. A leader waits for the items on their way
(at most ``GATHER`` seconds) before it takes the group, so that readers working together
share one commit instead of each committing alone a moment apart; with nothing on its way,
it does not wait at all. (Writes announce nothing: their groups form as before.)

If the commit fails, every caller of that group gets the error: none of their values is
returned and none of their writes is reported done. A flush may also fail one item alone
(by returning its exception in that item's place).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from domicile.stores.base import AuditRow, TransferCount

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

# The longest a leader waits for announced items (seconds): they are a read's own work
# between its select and its entry, normally well under a millisecond.
GATHER = 0.002


class _Waiter(Generic[ItemT, ResultT]):
    """One caller's item; ``done`` is held until the item is settled (or the caller is to
    lead the next group)."""

    __slots__ = ("done", "error", "item", "lead", "result")

    def __init__(self, item: ItemT) -> None:
        self.item = item
        self.done = threading.Lock()
        self.done.acquire()
        self.lead = False
        self.result: ResultT | None = None
        self.error: BaseException | None = None


class Group(Generic[ItemT, ResultT]):
    """Runs items through ``flush(items)`` (one transaction that returns, in order, each
    item's result or the exception that failed it alone), sharing each flush among
    concurrent callers."""

    def __init__(
        self, flush: Callable[[Sequence[ItemT]], Sequence[ResultT | BaseException]]
    ) -> None:
        self._flush = flush
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._pending: list[_Waiter[ItemT, ResultT]] = []
        self._busy = False
        self._coming = 0  # items announced (``expect``) and not yet submitted
        self.flushes = 0  # how many transactions (for tests and benchmarks)
        self.entries = 0

    def expect(self) -> None:
        """Announce an item this caller will ``submit`` (with ``expected=True``) or
        ``cancel`` shortly: a leader waits a moment for it."""
        with self._lock:
            self._coming += 1

    def cancel(self) -> None:
        """The announced item will not come (its caller failed before submitting it)."""
        with self._lock:
            self._arrive()

    def _arrive(self) -> None:  # holding the lock
        self._coming -= 1
        if not self._coming:
            self._arrived.notify_all()

    def submit(self, item: ItemT, *, expected: bool = False) -> ResultT:
        """Run one item; returns once it is committed (or raises what failed it).
        ``expected``: the item announced by this caller's ``expect``."""
        with self._lock:
            if expected:
                self._arrive()
            alone = not self._busy and not self._coming
            if alone:  # nobody in flight or on the way: flushed at once, as its own group
                self._busy = True
            else:
                me: _Waiter[ItemT, ResultT] = _Waiter(item)
                self._pending.append(me)
                if not self._busy:
                    self._busy = True
                    me.lead = True
        if alone:
            return self._alone(item)
        if not me.lead:
            me.done.acquire()
            if not me.lead:  # committed (or failed) by another caller's group
                return _result(me)
        self._lead()
        return _result(me)

    def _alone(self, item: ItemT) -> ResultT:
        """Flush one item that found the group idle (``_lead`` without the waiting)."""
        try:
            outcome = self._flush([item])[0]
        finally:
            self.flushes += 1
            self.entries += 1
            self._hand_on()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _hand_on(self) -> None:
        """After a flush: the first caller waiting leads the next group, else idle."""
        with self._lock:
            if self._pending:
                nxt = self._pending[0]
                nxt.lead = True
                nxt.done.release()
            else:
                self._busy = False

    def _lead(self) -> None:
        with self._lock:
            if self._coming:  # items on their way: take them into this group
                until = time.monotonic() + GATHER
                while self._coming:
                    left = until - time.monotonic()
                    if left <= 0:
                        break
                    self._arrived.wait(left)
            group, self._pending = self._pending, []
        try:
            outcomes = self._flush([w.item for w in group])
            for w, outcome in zip(group, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    w.error = outcome
                else:
                    w.result = outcome
        except BaseException as exc:
            for w in group:
                w.error = exc
        self.flushes += 1
        self.entries += len(group)
        self._hand_on()
        for w in group:
            if w.lead:
                w.lead = False  # the leader itself: not waiting on ``done``
            else:
                w.done.release()


def _result(w: _Waiter[ItemT, ResultT]) -> ResultT:
    if w.error is not None:
        raise w.error
    return w.result  # type: ignore[return-value]  # set with the error unset


Flush = Callable[[Sequence[str], Sequence[TransferCount]], list[AuditRow]]


class GroupCommit(Group[tuple[str, TransferCount | None], AuditRow]):
    """Appends audit entries through ``flush(payloads, transfer counts)`` (one transaction
    that returns the rows appended, in order), sharing each flush among concurrent
    callers: the entries of reads."""

    def __init__(self, flush: Flush) -> None:
        def entries(
            items: Sequence[tuple[str, TransferCount | None]],
        ) -> Sequence[AuditRow | BaseException]:
            return flush([p for p, _ in items], [t for _, t in items if t is not None])

        super().__init__(entries)

    def append(
        self, payload: str, transfer: TransferCount | None = None, *, expected: bool = False
    ) -> AuditRow:
        """Append one entry; returns once it is committed (or raises what the commit did).
        ``expected``: the entry announced by this caller's ``expect``."""
        return self.submit((payload, transfer), expected=expected)
