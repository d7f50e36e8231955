"""The batched store paths (many rows in one statement) against their one-row forms, on
both backends: the same rows change, the same counts are kept, the same chain results."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import psycopg
import pytest

from domicile.errors import BadInput
from domicile.stores import (
    IndexEntry,
    SiteStore,
    StoredRecord,
    TransferCount,
    open_site_store,
)
from domicile.stores.base import (
    AuditRow,
    VersionConflict,
    entry_hash,
    pack_fields,
    unpack_fields,
)
from domicile.stores.postgres import split_read_audit_commit

from .contract import SITE, record


@pytest.fixture(params=["sqlite", "postgresql"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, pg_database: Callable[[str], str]
) -> Iterator[SiteStore]:
    url = f"sqlite:///{tmp_path}/ru.db" if request.param == "sqlite" else pg_database("site")
    s = open_site_store(SITE, url, create=True)
    yield s
    s.close()


def replica(record_id: str, version: int, primary: str | None = "us") -> StoredRecord:
    r = record(record_id, version=version, fields={"email": f"v{version}".encode()})
    return StoredRecord(**{**r.__dict__, "primary_site": primary})


def test_put_replicas_changes_exactly_what_put_replica_would(store: SiteStore) -> None:
    with store.transaction() as tx:
        tx.insert([record("primary")])  # a primary with a clashing id is never overwritten
        tx.put_replica(replica("older", 1))
        tx.put_replica(replica("same", 2))
        tx.put_replica(replica("newer", 5))
    batch = [
        replica("older", 2),  # moves forward
        replica("same", 2),  # equal: unchanged
        replica("newer", 3),  # backwards: unchanged
        replica("fresh", 1),  # new copy
        replica("primary", 9),  # would overwrite a primary: unchanged
    ]
    with store.transaction() as tx:
        changed = tx.put_replicas(batch)
    assert changed == [True, False, False, True, False]
    got = store.get_many([r.record_id for r in batch])
    assert {rid: r.version for rid, r in got.items()} == {
        "older": 2,
        "same": 2,
        "newer": 5,
        "fresh": 1,
        "primary": 1,
    }
    assert got["older"].fields == {"email": b"v2"}  # a layout-2 body, unpacked
    assert got["primary"].primary_site is None


def test_put_replicas_with_a_repeated_id_falls_back_to_one_at_a_time(store: SiteStore) -> None:
    with store.transaction() as tx:
        changed = tx.put_replicas([replica("a", 1), replica("a", 2), replica("a", 2)])
    assert changed == [True, True, False]
    got = store.get("a")
    assert got is not None
    assert got.version == 2


def test_put_replicas_after_a_rolled_back_batch(store: SiteStore) -> None:
    """On PostgreSQL the rows go through a temporary table that the first batch of a
    connection makes: a batch rolled back (the table with it, when it made it) leaves
    nothing behind, and the next batch on the same connection still goes in."""
    staged: list[list[bool]] = []

    def failing_batch() -> None:
        with store.transaction() as tx:
            staged.append(tx.put_replicas([replica("a", 1), replica("b", 1)]))
            raise RuntimeError("the batch fails")

    with pytest.raises(RuntimeError):
        failing_batch()
    assert staged == [[True, True]]
    for batch in (["c", "d"], ["e", "f"]):
        with store.transaction() as tx:
            assert tx.put_replicas([replica(rid, 1) for rid in batch]) == [True, True]
    got = store.get_many(["a", "b", "c", "d", "e", "f"])
    assert sorted(got) == ["c", "d", "e", "f"]
    with store.transaction() as tx:  # staged rows of earlier batches are not written again
        assert tx.put_replicas([replica("c", 2), replica("g", 1)]) == [True, True]
    assert sorted(store.get_many(["a", "b", "c", "d", "e", "f", "g"])) == list("cdefg")


def test_chain_many_chains_as_chain_does(store: SiteStore) -> None:
    """Many entries (hashed in the process on PostgreSQL) and a few (hashed by the
    server there), between entries appended the other ways: one chain, hashed as the
    verifier hashes it."""
    store.chain_now(['{"n":0}'])
    with store.transaction() as tx:
        many = tx.chain_many([f'{{"n":{i},"ü":"日本"}}' for i in range(1, 41)])
        few = tx.chain_many(['{"n":41}', '{"n":42}'])
        assert tx.chain_many([]) == []
    store.chain_now(['{"n":43}'])
    with store.transaction() as tx:
        assert tx.audit_head() == (44, list(store.audit())[-1].hash)
    rows = list(store.audit())
    assert rows[1:43] == [*many, *few]
    prev = b""
    for seq, row in enumerate(rows, 1):
        assert (row.seq, row.prev_hash) == (seq, prev)
        assert row.hash == entry_hash(prev, row.seq, row.payload)
        prev = row.hash


def test_count_transfers_merges_repeats_and_keeps_sensitive(store: SiteStore) -> None:
    with store.transaction() as tx:
        tx.count_transfers(
            [
                TransferCount(2025, "US", "s1", False),
                TransferCount(2025, "US", "s1", True),
                TransferCount(2025, "US", "s2", False),
                TransferCount(2025, "DE", "s1", False),
            ]
        )
    with store.transaction() as tx:
        tx.count_transfers([TransferCount(2025, "US", "s2", False)])
        tx.count_transfers([])
    assert store.transfer_counts(2025, "US") == (2, 1)
    assert store.transfer_counts(2025, "DE") == (1, 0)


def test_a_transfer_entry_and_its_count_commit_together(store: SiteStore) -> None:
    count = TransferCount(2025, "US", "s1", True)
    first = store.chain_transfer_now(['{"action":"transfer","n":1}'], count)
    second = store.chain_transfer_now(['{"action":"transfer","n":2}'], count)
    assert [r.seq for r in [*first, *second]] == [1, 2]
    rows = list(store.audit())
    prev = b""
    for row in rows:
        assert row.prev_hash == prev
        assert row.hash == entry_hash(prev, row.seq, row.payload)
        prev = row.hash
    assert store.transfer_counts(2025, "US") == (1, 1)


def test_subjects_for_finds_the_subject_of_each_known_digest(store: SiteStore) -> None:
    with store.transaction() as tx:
        tx.insert([record("r1", "alice"), record("r2", "bob")])
        tx.index(
            [
                IndexEntry(b"a" * 16, "r1"),
                IndexEntry(b"b" * 16, "r2"),
                IndexEntry(b"c" * 16, "r2"),
            ]
        )
    found = store.subjects_for([b"a" * 16, b"b" * 16, b"z" * 16, b"a" * 16])
    assert found == {b"a" * 16: "alice", b"b" * 16: "bob"}
    assert store.subjects_for([]) == {}


def test_outbox_rows_keep_their_order_in_a_batch(store: SiteStore) -> None:
    items = [(f"r{i}", "s", "de", "upsert") for i in range(50)]
    with store.transaction() as tx:
        tx.enqueue(items)
    assert [i.record_id for i in store.outbox(100)] == [f"r{i}" for i in range(50)]


def test_a_duplicate_in_a_batch_insert_fails_the_whole_transaction(store: SiteStore) -> None:
    duplicate = (sqlite3.IntegrityError, psycopg.errors.UniqueViolation)
    with pytest.raises(duplicate), store.transaction() as tx:
        tx.insert([record("r1"), record("r2"), record("r1", "someone-else")])
    assert store.count() == 0


def test_sqlite_put_replicas_refuses_to_log_what_it_did_not_change(tmp_path: Path) -> None:
    """If rows changed other than predicted, the transaction fails instead of logging
    transfers that did not happen."""
    s = open_site_store(SITE, f"sqlite:///{tmp_path}/ru.db", create=True)
    try:
        s.conn.execute(  # type: ignore[attr-defined]
            "CREATE TRIGGER sneaky BEFORE INSERT ON records WHEN NEW.record_id = 'b'"
            " BEGIN SELECT RAISE(IGNORE); END"
        )
        with pytest.raises(VersionConflict), s.transaction() as tx:
            tx.put_replicas([replica("a", 1), replica("b", 1)])
        assert s.count_replicas() == 0
    finally:
        s.close()


@pytest.mark.parametrize(
    "fields",
    [{}, {"a": b""}, {"email": b"\x01" * 300, "@residency": b"x", "é": b"\x00\xff"}],
)
def test_packed_fields_round_trip(fields: dict[str, bytes]) -> None:
    assert unpack_fields(pack_fields(fields)) == fields


def test_a_cut_blob_does_not_unpack() -> None:
    blob = pack_fields({"email": b"sealed value"})
    with pytest.raises(Exception):  # noqa: B017, PT011 - struct.error or IndexError
        unpack_fields(blob[:8])


# -- PostgreSQL: read entries committed without waiting for the disk (opt-in) ---------------


def test_the_read_audit_parameter_is_taken_out_of_the_url() -> None:
    url = "postgresql://u:p%40ss@h:5432/db?options=-c%20search_path%3Dx&read_audit_commit=async"
    assert split_read_audit_commit(url) == (
        "postgresql://u:p%40ss@h:5432/db?options=-c%20search_path%3Dx",
        "async",
    )
    assert split_read_audit_commit("postgresql://h/db") == ("postgresql://h/db", "sync")
    assert split_read_audit_commit("postgresql://h/db?read_audit_commit=sync") == (
        "postgresql://h/db",
        "sync",
    )


def test_read_entries_commit_asynchronously_only_when_asked(
    pg_database: Callable[[str], str],
) -> None:
    url = pg_database("site")

    def setting(s: SiteStore, read: bool) -> str:
        db = s._reads if read and s._reads is not None else s._db  # type: ignore[attr-defined]
        return str(db.run(lambda c: c.execute("SHOW synchronous_commit").fetchone()[0], "show"))

    plain = open_site_store(SITE, url, create=True)
    try:
        assert (setting(plain, False), setting(plain, True)) == ("on", "on")
    finally:
        plain.close()
    relaxed = open_site_store(SITE, url + "?read_audit_commit=async")
    try:
        assert (setting(relaxed, False), setting(relaxed, True)) == ("on", "off")
        # Read entries (their own connection) and writes interleave in one chain.
        relaxed.chain_now(['{"action":"read","n":1}'], read=True)
        with relaxed.transaction() as tx:
            tx.chain(['{"action":"write","n":2}'])
        relaxed.chain_transfer_now(
            ['{"action":"transfer","n":3}'], TransferCount(2025, "US", "s", False), read=True
        )
        relaxed.chain_now(['{"action":"refuse","n":4}'])
        rows = list(relaxed.audit())
        assert [r.seq for r in rows] == [1, 2, 3, 4]
        prev = b""
        for row in rows:
            assert row.prev_hash == prev
            assert row.hash == entry_hash(prev, row.seq, row.payload)
            prev = row.hash
        assert relaxed.transfer_counts(2025, "US") == (1, 0)
    finally:
        relaxed.close()


def test_an_unknown_read_audit_mode_is_refused(pg_database: Callable[[str], str]) -> None:
    with pytest.raises(BadInput, match="read_audit_commit"):
        open_site_store(SITE, pg_database("site") + "?read_audit_commit=maybe", create=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def site_url(
    request: pytest.FixtureRequest, tmp_path: Path, pg_database: Callable[[str], str]
) -> str:
    return f"sqlite:///{tmp_path}/ru.db" if request.param == "sqlite" else pg_database("site")


def _appends(s: SiteStore, n: int, failures: list[BaseException]) -> None:
    try:
        for i in range(12):
            kind = (n + i) % 4
            if kind == 0:
                s.chain_now([f'{{"n":{n},"i":{i}}}'], read=True)
            elif kind == 1:
                s.chain_transfer_now(
                    [f'{{"n":{n},"i":{i},"t":1}}'],
                    TransferCount(2025, "US", f"s{n}", i % 2 == 0),
                    read=True,
                )
            elif kind == 2:
                s.chain_now([f'{{"n":{n},"i":{i},"a":1}}', f'{{"n":{n},"i":{i},"b":2}}'])
            else:
                with s.transaction() as tx:
                    tx.chain([f'{{"n":{n},"i":{i},"tx":1}}'])
    except BaseException as exc:
        failures.append(exc)


def _assert_one_chain(rows: Sequence[AuditRow]) -> None:
    """The rows are one hash chain from the first entry on, with no gap in their numbers."""
    prev = b""
    for seq, row in enumerate(rows, 1):
        assert (row.seq, row.prev_hash) == (seq, prev)
        assert row.hash == entry_hash(prev, row.seq, row.payload)
        prev = row.hash


def _together(
    stores: Sequence[SiteStore], work: Callable[[SiteStore, int, list[BaseException]], None]
) -> list[AuditRow]:
    """Run ``work`` on every store at once, one thread each; the log they made."""
    failures: list[BaseException] = []
    threads = [threading.Thread(target=work, args=(s, n, failures)) for n, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures, failures
    return list(stores[0].audit())


def test_single_entries_chain_with_every_other_append_under_concurrency(site_url: str) -> None:
    """One-entry appends (one statement on PostgreSQL), transfer entries with their counts,
    several-entry appends and transactions, from several connections at once: one chain."""
    stores = [open_site_store(SITE, site_url, create=i == 0) for i in range(4)]
    try:
        rows = _together(stores, _appends)
        assert len(rows) == 4 * 12 + 4 * 3  # a quarter of the calls append two entries
        _assert_one_chain(rows)
        assert stores[0].transfer_counts(2025, "US") == (4, 2)  # s1 and s3 sent sensitive data
    finally:
        for s in stores:
            s.close()


def test_a_single_entry_rebuilds_a_missing_head_first(pg_database: Callable[[str], str]) -> None:
    url = pg_database("site")
    s = open_site_store(SITE, url, create=True)
    try:
        first = s.chain_now(['{"n":1}', '{"n":2}'])
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DELETE FROM audit_head")
        (third,) = s.chain_now(['{"n":3}'], read=True)
        assert (third.seq, third.prev_hash) == (3, first[-1].hash)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DELETE FROM audit_head")
        (fourth,) = s.chain_transfer_now(['{"n":4}'], TransferCount(2025, "US", "s", True))
        assert (fourth.seq, fourth.prev_hash) == (4, third.hash)
        rows = list(s.audit())
        prev = b""
        for row in rows:
            assert row.prev_hash == prev
            assert row.hash == entry_hash(prev, row.seq, row.payload)
            prev = row.hash
        assert [r.seq for r in rows] == [1, 2, 3, 4]
        assert s.transfer_counts(2025, "US") == (1, 1)
    finally:
        s.close()


def _batches_and_singles(s: SiteStore, n: int, failures: list[BaseException]) -> None:
    try:
        for i in range(4):
            with s.transaction() as tx:
                tx.chain_many([f'{{"n":{n},"i":{i},"k":{k}}}' for k in range(40)])
            s.chain_now([f'{{"n":{n},"i":{i}}}'])
    except BaseException as exc:
        failures.append(exc)


def test_batches_hashed_in_the_process_chain_with_concurrent_appends(site_url: str) -> None:
    """A batch hashed in the process (``chain_many``) reads the head under its lock in its
    own transaction, so batches from several connections and single entries appended on
    the server meanwhile still make one chain."""
    stores = [open_site_store(SITE, site_url, create=i == 0) for i in range(3)]
    try:
        rows = _together(stores, _batches_and_singles)
        assert len(rows) == 3 * 4 * 41
        _assert_one_chain(rows)
    finally:
        for s in stores:
            s.close()
