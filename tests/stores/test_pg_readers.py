"""PostgreSQL sites read on connections of their own (``readers=N`` in the URL), and keep the
planner's statistics current while a bulk load grows their tables."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
import pytest

from domicile.errors import BadInput
from domicile.stores import IndexEntry, open_site_store
from domicile.stores.base import StoreMismatch
from domicile.stores.postgres import ANALYZE_AFTER, PostgresSiteStore, split_options

from .contract import SITE, record


def test_domicile_parameters_are_taken_out_of_the_url() -> None:
    base, options = split_options("postgresql://u:p@h/db?sslmode=require&readers=8")
    assert base == "postgresql://u:p@h/db?sslmode=require"
    assert options == {"readers": "8"}


@pytest.mark.parametrize("value", ["-1", "many", "65", ""])
def test_a_bad_reader_count_is_refused_before_connecting(
    pg_database: Callable[[str], str], value: str
) -> None:
    with pytest.raises(BadInput, match="readers"):
        open_site_store(SITE, pg_database("site") + f"?readers={value}", create=True)


def test_reads_do_not_wait_for_a_write_in_progress(pg_database: Callable[[str], str]) -> None:
    """A writer holds the site's write connection for its whole transaction; a reader on
    its own connection answers meanwhile, from what was committed before."""
    s = open_site_store(SITE, pg_database("site"), create=True)
    try:
        with s.transaction() as tx:
            tx.insert([record("r1")])
        inside, release = threading.Event(), threading.Event()

        def write() -> None:
            with s.transaction() as tx:
                tx.insert([record("r2")])
                inside.set()
                release.wait(10)

        writer = threading.Thread(target=write)
        writer.start()
        try:
            assert inside.wait(10)
            seen: list[int] = []
            reader = threading.Thread(target=lambda: seen.append(s.count()))
            reader.start()
            reader.join(5)
            assert seen == [1], "a read waited for the writer's transaction"
        finally:
            release.set()
            writer.join(10)
        assert s.count() == 2
    finally:
        s.close()


def test_with_no_readers_reads_share_the_write_connection(
    pg_database: Callable[[str], str],
) -> None:
    s = open_site_store(SITE, pg_database("site") + "?readers=0", create=True)
    assert isinstance(s, PostgresSiteStore)
    try:
        with s.transaction() as tx:
            tx.insert([record("r1")])
        pids = {s._db.run(lambda c: c.info.backend_pid, "pid") for _ in range(3)}
        with s._db.lock:
            write_pid = s._db.acquire()[0].info.backend_pid
        assert pids == {write_pid}
    finally:
        s.close()


def test_concurrent_readers_use_at_most_the_connections_asked_for(
    pg_database: Callable[[str], str],
) -> None:
    s = open_site_store(SITE, pg_database("site") + "?readers=2", create=True)
    assert isinstance(s, PostgresSiteStore)
    pids: set[int] = set()
    lock = threading.Lock()

    def read() -> None:
        for _ in range(20):
            pid = s._db.run(
                lambda c: c.execute("SELECT pg_backend_pid() FROM pg_sleep(0.005)").fetchone()[0],
                "pid",
            )
            with lock:
                pids.add(int(pid))

    try:
        threads = [threading.Thread(target=read) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert 1 <= len(pids) <= 3  # the two readers, and the write connection when free
    finally:
        s.close()


def test_a_reader_connection_to_a_replaced_database_is_refused(
    pg_database: Callable[[str], str],
) -> None:
    """Each new reader connection is checked against the store that was opened: a
    database swapped in under the same name is never read as if it were this site's."""
    url = pg_database("site")
    s = open_site_store(SITE, url, create=True)
    assert isinstance(s, PostgresSiteStore)
    other = open_site_store("other", pg_database("other"), create=True)
    try:
        s._db._idle.clear()  # the next read makes a new connection ...
        s._db._params = other._db._params  # ... which reaches another site's database
        # (reads go to reader connections while the write one is busy)
        with busy(s), pytest.raises(StoreMismatch):
            s.count()
    finally:
        s.close()
        other.close()


@contextmanager
def busy(s: PostgresSiteStore) -> Iterator[None]:
    """The site's connection of writes held by another thread (as by a writer)."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with s._db.lock:
            held.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    assert held.wait(10)
    try:
        yield
    finally:
        release.set()
        t.join(10)


def test_a_read_alone_uses_the_connection_of_writes(pg_database: Callable[[str], str]) -> None:
    s = open_site_store(SITE, pg_database("site"), create=True)
    assert isinstance(s, PostgresSiteStore)
    try:
        with s._db.lock:
            write_pid = s._db.acquire()[0].info.backend_pid
        assert s._db.run(lambda c: c.info.backend_pid, "pid") == write_pid
        with busy(s):
            assert s._db.run(lambda c: c.info.backend_pid, "pid") != write_pid
    finally:
        s.close()


def _reltuples(url: str) -> float:
    with psycopg.connect(url) as c:
        row = c.execute("SELECT reltuples FROM pg_class WHERE relname = 'digests'").fetchone()
    assert row is not None
    return float(row[0])


def test_a_bulk_load_brings_the_statistics_up_to_date(pg_database: Callable[[str], str]) -> None:
    url = pg_database("site")
    s = open_site_store(SITE, url, create=True)
    try:
        n = ANALYZE_AFTER // 4 + 10  # a record and a digest each: 4n rows in all
        for batch in range(2):
            rows = [record(f"r{batch}-{i}") for i in range(n)]
            with s.transaction() as tx:
                tx.insert(rows)
                tx.index(IndexEntry(i.to_bytes(32, "big"), r.record_id) for i, r in enumerate(rows))
            if batch == 0:
                assert _reltuples(url) <= 0, "analyzed before the threshold"
        assert _reltuples(url) >= 2 * n - 1  # the digests of both batches
    finally:
        s.close()
