"""Group commit: callers arriving together share one flush; every caller gets its own row
only after the flush that holds its entry returned; a failed flush fails its whole group."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from domicile.audit import group as group_module
from domicile.audit.group import GroupCommit
from domicile.stores.base import AuditRow, TransferCount


class Log:
    """A stand-in for a site's log that records which entries each flush committed."""

    def __init__(self, delay: float = 0.0, fail_on: str | None = None) -> None:
        self.delay = delay
        self.fail_on = fail_on
        self.flushes: list[list[str]] = []
        self.counts: list[TransferCount] = []
        self.committed: set[str] = set()
        self.lock = threading.Lock()

    def flush(self, payloads: Sequence[str], transfers: Sequence[TransferCount]) -> list[AuditRow]:
        time.sleep(self.delay)
        if self.fail_on is not None and self.fail_on in payloads:
            raise OSError("disk gone")
        with self.lock:
            start = sum(len(f) for f in self.flushes)
            self.flushes.append(list(payloads))
            self.counts += transfers
            self.committed.update(payloads)
        return [AuditRow(start + i + 1, p, b"", b"") for i, p in enumerate(payloads)]


def test_a_caller_alone_flushes_alone_and_at_once() -> None:
    log = Log()
    group = GroupCommit(log.flush)
    rows = [group.append(f"e{i}") for i in range(3)]
    assert [r.seq for r in rows] == [1, 2, 3]
    assert log.flushes == [["e0"], ["e1"], ["e2"]]


def test_concurrent_callers_share_flushes_and_each_returns_after_its_own_commit() -> None:
    log = Log(delay=0.01)
    group = GroupCommit(log.flush)
    results: dict[str, AuditRow] = {}
    early: list[str] = []

    def read(name: str) -> None:
        row = group.append(name, TransferCount(2025, "US", name, False))
        with log.lock:
            if name not in log.committed:
                early.append(name)
        results[name] = row

    threads = [threading.Thread(target=read, args=(f"r{i}",)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not early, "a caller returned before its entry was committed"
    assert set(results) == {f"r{i}" for i in range(40)}
    assert all(results[p].payload == p for p in results)
    assert sorted(r.seq for r in results.values()) == list(range(1, 41))
    assert len(log.flushes) < 40  # shared
    assert group.flushes == len(log.flushes)
    assert sorted(c.subject_id for c in log.counts) == sorted(results)


def test_a_failed_flush_fails_every_caller_of_its_group_and_the_next_group_goes_on() -> None:
    log = Log(delay=0.02, fail_on="bad")
    group = GroupCommit(log.flush)
    outcome: dict[str, str] = {}
    gate = threading.Barrier(6)

    def read(name: str) -> None:
        gate.wait()
        try:
            group.append(name)
            outcome[name] = "ok"
        except OSError:
            outcome[name] = "failed"

    threads = [threading.Thread(target=read, args=(n,)) for n in ("bad", "a", "b", "c", "d", "e")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert outcome["bad"] == "failed"
    failed = {n for n, o in outcome.items() if o == "failed"}
    assert failed.isdisjoint(log.committed)  # nobody whose entry is lost was answered
    assert {n for n, o in outcome.items() if o == "ok"} == log.committed
    assert group.append("later").seq >= 1  # the committer is usable again


def test_an_error_in_a_lone_flush_reaches_its_caller() -> None:
    group = GroupCommit(Log(fail_on="x").flush)
    with pytest.raises(OSError, match="disk gone"):
        group.append("x")
    assert group.append("y").payload == "y"


def test_a_leader_waits_for_the_entries_announced_and_takes_them_in_its_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Readers that announced their entries (``expect``) while they open and decide are
    taken into the group of the reader that arrived first, instead of each committing
    alone a moment later; one that gives up (``cancel``) holds nobody up."""
    monkeypatch.setattr(group_module, "GATHER", 20.0)  # however slow the machine is today
    log = Log()
    group = GroupCommit(log.flush)
    for _ in range(4):
        group.expect()
    ready = threading.Barrier(4)
    rows: dict[str, AuditRow] = {}

    def read(name: str) -> None:
        ready.wait()
        time.sleep(0.0005 * int(name[1:]))  # arriving one after another, within the wait
        rows[name] = group.append(name, expected=True)

    threads = [threading.Thread(target=read, args=(f"r{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    ready.wait()
    group.cancel()  # the fourth reader failed before its entry
    for t in threads:
        t.join(30)
    assert sorted(rows) == ["r0", "r1", "r2"]
    assert log.flushes == [sorted(rows, key=lambda n: rows[n].seq)]  # one group of three
    assert group.append("alone").seq == 4  # nothing announced: flushed at once


def test_a_leader_waits_for_an_announced_entry_only_a_moment() -> None:
    log = Log()
    group = GroupCommit(log.flush)
    group.expect()  # announced, and never submitted nor cancelled
    start = time.monotonic()
    assert group.append("e").seq == 1
    assert time.monotonic() - start < 1  # GATHER, not forever
    group.cancel()
