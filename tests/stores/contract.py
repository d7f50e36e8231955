"""The contract every site-store and key-store backend keeps.

Each backend's test module subclasses ``SiteStoreContract`` and ``KeyStoreContract`` (as
``TestXxx...``) and provides:

- fixtures ``site_url`` / ``key_url`` (a fresh, empty location for one store),
  ``empty_url`` (an existing database without a domicile schema) and ``unreachable_url``
  (a store that cannot be reached);
- ``raw(url, query)``: run SQL on a connection of its own, bypassing the store, and return
  the rows (used to tamper with the database the way an attacker or operator could);
- ``raw_error`` (the driver's base error class) and ``duplicate_error`` (what inserting an
  existing record id raises inside a transaction: the driver's integrity error, for now).

The base classes are not named ``Test...``, so pytest collects them only through backends.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any, ClassVar

import pytest

from domicile.stores import (
    AuditRow,
    Checkpoint,
    IndexEntry,
    KeyStore,
    SiteStore,
    StoredRecord,
    TransferCount,
    WrappedKey,
    open_key_store,
    open_site_store,
)
from domicile.stores.base import (
    HeadRow,
    NoSchema,
    SchemaOutdated,
    SchemaTooNew,
    SiteUnavailable,
    StoreMismatch,
    SubjectBlock,
    VersionConflict,
    WitnessRow,
    entry_hash,
    pack_fields,
)
from domicile.stores.schema import KEY_SCHEMA_VERSION, SITE_SCHEMA_VERSION

SITE = "ru"
T0 = "2025-07-01T10:00:00+00:00"


def record(
    record_id: str,
    subject_id: str = "subj-1",
    *,
    collection: str = "users",
    version: int = 1,
    created_at: str = T0,
    fields: dict[str, bytes] | None = None,
) -> StoredRecord:
    """A stored record; its body packs ``fields`` (stores keep bodies as opaque bytes)."""
    if fields is None:
        fields = {"email": b"sealed:" + record_id.encode(), "name": b"\x00\xff\x10sealed"}
    return StoredRecord(
        record_id, subject_id, collection, version, created_at, created_at, pack_fields(fields)
    )


def link(prev: bytes, seq: int, payload: str) -> bytes:
    return hashlib.sha256(prev + seq.to_bytes(8, "big") + payload.encode()).digest()


def chain_after(head: tuple[int, bytes], count: int, tag: str = "e") -> list[AuditRow]:
    """``count`` audit rows chained after ``head``."""
    seq, prev = head
    rows = []
    for _ in range(count):
        seq += 1
        payload = f'{{"action":"write","n":{seq},"tag":"{tag}"}}'
        digest = link(prev, seq, payload)
        rows.append(AuditRow(seq, payload, prev, digest))
        prev = digest
    return rows


def append(store: SiteStore, count: int, tag: str = "e") -> list[AuditRow]:
    with store.transaction() as tx:
        rows = chain_after(tx.audit_head(), count, tag)
        tx.append_audit(rows)
    return rows


def assert_chain(rows: Sequence[AuditRow]) -> None:
    prev = b""
    for expected, row in enumerate(rows, start=1):
        assert row.seq == expected
        assert row.prev_hash == prev
        assert row.hash == link(prev, row.seq, row.payload)
        prev = row.hash


def digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


class Backend:
    """What a backend's test module provides (see the module docstring)."""

    backend: ClassVar[str]
    raw_error: ClassVar[type[BaseException]]
    duplicate_error: ClassVar[type[BaseException]]

    def raw(self, url: str, query: str) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def meta(self, url: str) -> dict[str, str]:
        return {str(k): str(v) for k, v in self.raw(url, "SELECT key, value FROM meta")}

    def tables(self, url: str) -> list[tuple[Any, ...]]:
        raise NotImplementedError


class SiteStoreContract(Backend):
    @pytest.fixture
    def store(self, site_url: str) -> Iterator[SiteStore]:
        store = open_site_store(SITE, site_url, create=True)
        yield store
        store.close()

    @pytest.fixture
    def second(self, site_url: str, store: SiteStore) -> Iterator[SiteStore]:
        """Another store on the same database (another process, in effect)."""
        other = open_site_store(SITE, site_url)
        yield other
        other.close()

    # -- records ----------------------------------------------------------------------------

    def test_backend_is_named(self, store: SiteStore) -> None:
        assert store.backend == self.backend

    def test_insert_then_get_returns_the_same_record(self, store: SiteStore) -> None:
        rec = record("r1", fields={"email": b"\x00sealed\xff", "empty": b"", "имя": b"x" * 5000})
        with store.transaction() as tx:
            tx.insert([rec])
        assert store.get("r1") == rec
        assert store.get("missing") is None

    def test_a_batch_of_records_is_counted(self, store: SiteStore) -> None:
        with store.transaction() as tx:
            tx.insert([record(f"r{i}", f"subj-{i % 7}") for i in range(500)])
        assert store.count() == 500
        assert store.count_subjects() == 7
        assert store.get("r499") == record("r499", "subj-2")

    def test_an_empty_transaction_commits_nothing(self, store: SiteStore) -> None:
        with store.transaction() as tx:
            tx.insert([])
            tx.index([])
            tx.append_audit([])
            assert tx.delete([]) == 0
        assert store.count() == 0
        assert list(store.audit()) == []

    def test_a_duplicate_record_id_fails_the_whole_transaction(self, store: SiteStore) -> None:
        with store.transaction() as tx:
            tx.insert([record("r1")])

        def insert_a_duplicate() -> None:
            with store.transaction() as tx:
                tx.insert([record("r2")])
                tx.insert([record("r1", "someone-else")])

        with pytest.raises(self.duplicate_error):
            insert_a_duplicate()
        assert store.get("r2") is None
        assert store.get("r1") == record("r1")
        assert store.count() == 1

    def test_replace_with_the_expected_version(self, store: SiteStore) -> None:
        with store.transaction() as tx:
            tx.insert([record("r1")])
        newer = StoredRecord(
            "r1", "subj-1", "users", 2, T0, "2025-07-02T00:00:00+00:00", b"\xd3new body"
        )
        with store.transaction() as tx:
            tx.replace(newer, expect_version=1)
        assert store.get("r1") == newer

    def test_replace_with_a_stale_version_conflicts_and_changes_nothing(
        self, store: SiteStore
    ) -> None:
        with store.transaction() as tx:
            tx.insert([record("r1")])
        newer = record("r1", version=3, fields={"email": b"new"})

        def replace_stale() -> None:
            with store.transaction() as tx:
                tx.insert([record("r2")])
                tx.replace(newer, expect_version=2)

        with pytest.raises(VersionConflict):
            replace_stale()
        assert store.get("r1") == record("r1")
        assert store.get("r2") is None

    def test_replace_of_a_missing_record_conflicts(self, store: SiteStore) -> None:
        with pytest.raises(VersionConflict), store.transaction() as tx:
            tx.replace(record("ghost", version=2), expect_version=1)

    def test_delete_removes_records_and_their_index_entries(self, store: SiteStore) -> None:
        with store.transaction() as tx:
            tx.insert([record("r1"), record("r2"), record("r3")])
            tx.index(IndexEntry(digest("same"), rid) for rid in ("r1", "r2", "r3"))
        with store.transaction() as tx:
            assert tx.delete(["r1", "r3", "never-existed"]) == 2
        assert store.get("r1") is None
        assert store.get("r3") is None
        assert store.count() == 1
        assert store.lookup(digest("same")) == ["r2"]
        raw = self.raw(store.url, "SELECT record_id FROM digests")
        assert [r[0] for r in raw] == ["r2"]

    def test_erasing_a_subject_takes_its_records_and_index_entries_only(
        self, store: SiteStore
    ) -> None:
        with store.transaction() as tx:
            tx.insert([record("r1", "subj-1"), record("r2", "subj-1"), record("r3", "subj-2")])
            tx.index([IndexEntry(digest(r), r) for r in ("r1", "r2", "r3")])
        with store.transaction() as tx:
            assert tx.hold_subjects(["subj-1", "subj-2"]) == set()
            assert tx.erase_subject("subj-1", T0) == 2
        assert [r.record_id for r in store.subject_records("subj-1")] == []
        assert store.lookup(digest("r1")) == []
        assert store.lookup(digest("r3")) == ["r3"]
        with store.transaction() as tx:
            assert tx.hold_subjects(["subj-1", "subj-2", "subj-1"]) == {"subj-1"}
            assert tx.erase_subject("subj-1", T0) == 0  # erasing twice is harmless

    def test_blocks_are_kept_per_request_listed_by_subject_lifted_and_erased(
        self, store: SiteStore
    ) -> None:
        first = SubjectBlock(
            "subj-1",
            "restriction",
            "rq_000000000001",
            T0,
            "dpo",
            ("legal_claims",),
            ("eu.art18_2",),
        )
        later = SubjectBlock(
            "subj-1", "withdrawal", "rq_000000000002", "2025-07-02T10:00:00+00:00", None
        )
        other = SubjectBlock("subj-2", "restriction", "rq_000000000003", T0, "dpo")
        with store.transaction() as tx:
            assert tx.block(first)
            assert tx.block(later)
            assert tx.block(other)
            assert not tx.block(replace(first, since="2030-01-01"))  # kept as it was
        assert store.blocks(["subj-1"]) == [first, later]
        assert store.blocks(["subj-1", "subj-2", "nobody"]) == [first, other, later]
        assert store.blocks([]) == []
        # The restricted among them, each with its oldest restriction (not a withdrawal).
        assert store.restricted(["subj-1", "subj-2", "nobody"]) == {
            "subj-1": first,
            "subj-2": other,
        }
        assert store.restricted([]) == {}
        with store.transaction() as tx:
            assert tx.unblock("subj-2", "restriction", "rq_000000000003")
            assert not tx.unblock("subj-2", "restriction", "rq_000000000003")
            tx.insert([record("a", "subj-1")])
            tx.erase_subject("subj-1", T0)  # nothing of an erased subject stays ...
        # ... but a withdrawal of consent, which outlives the data until it is lifted (a
        # subject whose id is fixed, e.g. the InCountry API's profile, may write again).
        assert store.blocks(["subj-1", "subj-2"]) == [later]

    def test_a_read_gets_the_record_with_its_subjects_blocks_in_one_answer(
        self, store: SiteStore
    ) -> None:
        first = SubjectBlock("subj-1", "restriction", "rq_000000000001", T0, "dpo", ("x",))
        later = SubjectBlock(
            "subj-1", "withdrawal", "rq_000000000002", "2025-07-02T10:00:00+00:00", None
        )
        other = SubjectBlock("subj-2", "restriction", "rq_000000000003", T0, "dpo")
        with store.transaction() as tx:
            tx.insert([record("r1", "subj-1"), record("r2", "subj-2"), record("r3", "subj-3")])
            for b in (later, first, other):
                tx.block(b)
        assert store.get_for_read("r1") == (store.get("r1"), [first, later])
        assert store.get_for_read("r2") == (store.get("r2"), [other])
        assert store.get_for_read("r3") == (store.get("r3"), [])
        assert store.get_for_read("nothing") == (None, [])
        # The same answers as the two questions asked one after the other.
        for rid in ("r1", "r2", "r3"):
            rec = store.get(rid)
            assert rec is not None
            assert store.get_for_read(rid) == (rec, store.blocks([rec.subject_id]))

    def test_an_erasure_waits_for_a_write_holding_the_subject_and_takes_its_records(
        self, store: SiteStore, second: SiteStore
    ) -> None:
        failures: list[BaseException] = []
        erased: dict[str, Any] = {}
        trying = threading.Event()

        def eraser() -> None:
            try:
                trying.set()
                with second.transaction() as tx:
                    erased["records"] = tx.erase_subject("subj-1", T0)
                    erased["at"] = time.monotonic()
            except BaseException as exc:
                failures.append(exc)

        with store.transaction() as tx:
            assert tx.hold_subjects(["subj-1"]) == set()
            thread = threading.Thread(target=eraser)
            thread.start()
            trying.wait(5)
            time.sleep(0.5)
            tx.insert([record("late", "subj-1")])  # written while the erasure waits
            assert "at" not in erased, "the erasure did not wait for the write"
            released = time.monotonic()
        thread.join(30)
        assert not thread.is_alive()
        assert not failures, failures
        assert erased["at"] >= released
        assert erased["records"] == 1
        assert store.get("late") is None

    def test_lookup_finds_every_record_of_a_digest_and_nothing_else(self, store: SiteStore) -> None:
        # A digest names its collection and field (they are hashed into it): the index
        # keeps only the digest and the record.
        with store.transaction() as tx:
            tx.insert([record("r1"), record("r2"), record("o1", collection="orders")])
            tx.index(
                [
                    IndexEntry(digest("users.email:a@x"), "r1"),
                    IndexEntry(digest("users.email:a@x"), "r2"),
                    IndexEntry(digest("users.phone:a@x"), "r1"),
                    IndexEntry(digest("orders.email:a@x"), "o1"),
                    IndexEntry(digest("users.email:b@x"), "r2"),
                ]
            )
            tx.index([IndexEntry(digest("users.email:a@x"), "r1")])  # twice: kept once
        assert sorted(store.lookup(digest("users.email:a@x"))) == ["r1", "r2"]
        assert store.lookup(digest("users.phone:a@x")) == ["r1"]
        assert store.lookup(digest("orders.email:a@x")) == ["o1"]
        assert store.lookup(digest("users.email:c@x")) == []
        assert store.subjects_for([digest("orders.email:a@x"), digest("nope")]) == {
            digest("orders.email:a@x"): "subj-1"
        }
        assert store.digests_of(["r1", "o1", "missing"]) == {
            "r1": {digest("users.email:a@x"), digest("users.phone:a@x")},
            "o1": {digest("orders.email:a@x")},
        }
        assert store.digests_of([]) == {}
        assert store.subjects_for([]) == {}

    def test_unindex_drops_every_entry_of_one_record(self, store: SiteStore) -> None:
        with store.transaction() as tx:
            tx.insert([record("r1"), record("r2")])
            tx.index(
                [
                    IndexEntry(digest("e"), "r1"),
                    IndexEntry(digest("p"), "r1"),
                    IndexEntry(digest("e"), "r2"),
                ]
            )
        with store.transaction() as tx:
            tx.unindex("r1")
        assert store.lookup(digest("p")) == []
        assert store.lookup(digest("e")) == ["r2"]

    def test_subject_records_are_that_subjects_in_creation_order(self, store: SiteStore) -> None:
        with store.transaction() as tx:
            tx.insert(
                [
                    record("b", "alice", created_at="2025-07-03T00:00:00+00:00"),
                    record("x", "bob"),
                    record("a", "alice", created_at="2025-07-01T00:00:00+00:00"),
                    record("c", "alice", created_at="2025-07-02T00:00:00+00:00"),
                ]
            )
        assert [r.record_id for r in store.subject_records("alice")] == ["a", "c", "b"]
        assert store.subject_records("nobody") == []

    def test_an_exception_rolls_back_everything_in_the_transaction(self, store: SiteStore) -> None:
        def write_then_fail() -> None:
            with store.transaction() as tx:
                tx.insert([record("r1")])
                tx.index([IndexEntry(digest("e"), "r1")])
                tx.append_audit(chain_after(tx.audit_head(), 3))
                tx.add_checkpoint(Checkpoint(3, b"h" * 32, T0, b"s" * 64))
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            write_then_fail()
        assert store.count() == 0
        assert store.get("r1") is None
        assert store.lookup(digest("e")) == []
        assert list(store.audit()) == []
        assert store.checkpoints() == []
        with store.transaction() as tx:
            assert tx.audit_head() == (0, b"")
            tx.insert([record("r1")])
        assert store.count() == 1

    # -- audit ------------------------------------------------------------------------------

    def test_an_empty_ledger_has_an_empty_head(self, store: SiteStore) -> None:
        with store.transaction() as tx:
            assert tx.audit_head() == (0, b"")
        assert list(store.audit()) == []

    def test_the_head_follows_appends_within_a_transaction(self, store: SiteStore) -> None:
        with store.transaction() as tx:
            rows = chain_after(tx.audit_head(), 3)
            tx.append_audit(rows)
            assert tx.audit_head() == (3, rows[-1].hash)
            more = chain_after(tx.audit_head(), 2)
            tx.append_audit(more)
        assert_chain(list(store.audit()))

    def test_sequential_transactions_chain(self, store: SiteStore) -> None:
        first = append(store, 2)
        with store.transaction() as tx:
            assert tx.audit_head() == (2, first[-1].hash)
            tx.append_audit(chain_after(tx.audit_head(), 1))
        with store.transaction() as tx:
            seq, _ = tx.audit_head()
            assert seq == 3
        rows = list(store.audit())
        assert_chain(rows)
        assert rows[:2] == first

    def test_the_ledger_streams_in_sequence_order_from_start(self, store: SiteStore) -> None:
        for _ in range(5):
            append(store, 500)  # 2500 rows: more than two pages
        stream = store.audit()
        assert isinstance(stream, Iterator)
        rows = list(stream)
        assert len(rows) == 2500
        assert_chain(rows)
        assert [r.seq for r in store.audit(1001)] == list(range(1001, 2501))
        assert [r.seq for r in store.audit(2500)] == [2500]
        assert list(store.audit(2501)) == []

    def test_a_concurrent_writer_waits_for_the_head_and_chains_after_it(
        self, store: SiteStore, second: SiteStore
    ) -> None:
        seen: dict[str, Any] = {}
        failures: list[BaseException] = []
        trying = threading.Event()

        def writer() -> None:
            try:
                trying.set()
                with second.transaction() as tx:
                    seen["head"] = tx.audit_head()
                    seen["at"] = time.monotonic()
                    tx.append_audit(chain_after(seen["head"], 1, "second"))
            except BaseException as exc:
                failures.append(exc)

        with store.transaction() as tx:
            first = chain_after(tx.audit_head(), 3, "first")
            tx.append_audit(first)
            thread = threading.Thread(target=writer)
            thread.start()
            trying.wait(5)
            time.sleep(0.5)
            assert "head" not in seen, "the second writer read the head while it was locked"
            released = time.monotonic()
        thread.join(30)
        assert not thread.is_alive()
        assert not failures, failures
        assert seen["head"] == (3, first[-1].hash)
        assert seen["at"] >= released
        rows = list(store.audit())
        assert_chain(rows)
        assert len(rows) == 4

    def test_many_concurrent_writers_build_one_chain(self, store: SiteStore, site_url: str) -> None:
        writers, rounds = 4, 15
        failures: list[BaseException] = []
        stores = [open_site_store(SITE, site_url) for _ in range(writers)]

        def work(s: SiteStore, n: int) -> None:
            try:
                for _ in range(rounds):
                    append(s, 2, f"w{n}")
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=work, args=(s, n)) for n, s in enumerate(stores)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
        finally:
            for s in stores:
                s.close()
        assert not failures, failures
        rows = list(store.audit())
        assert len(rows) == writers * rounds * 2
        assert_chain(rows)

    def test_chain_hashes_exactly_as_the_verifier_does(self, store: SiteStore) -> None:
        # In a transaction and on its own (one round trip where the backend can), the
        # backend's own chaining must produce the hashes domicile.stores.base.entry_hash gives.
        first = append(store, 2)
        with store.transaction() as tx:
            inside = tx.chain(['{"action":"write","n":"ü"}', '{"action":"read"}'])
        alone = store.chain_now(['{"action":"erase","x":"日本"}'])
        rows = list(store.audit())
        assert rows == [*first, *inside, *alone]
        prev = b""
        for row in rows:
            expected = entry_hash(prev, row.seq, row.payload) if row.seq > 2 else row.hash
            assert row.hash == expected
            assert row.prev_hash == prev
            prev = row.hash
        with store.transaction() as tx:
            assert tx.audit_head() == (5, rows[-1].hash)
            assert tx.chain([]) == []

    def test_single_entries_chain_after_the_head_from_an_empty_log_on(
        self, store: SiteStore
    ) -> None:
        # One entry at a time (a read's: the backend's shortest way), the first of an empty
        # log included, each returned as stored and chained as the verifier chains.
        got = [store.chain_now([f'{{"action":"read","n":{i}}}'], read=True)[0] for i in range(4)]
        with store.transaction() as tx:
            got += tx.chain(['{"action":"write"}'])
        got += store.chain_now(['{"action":"refuse"}'])
        rows = list(store.audit())
        assert rows == got
        assert [r.seq for r in rows] == [1, 2, 3, 4, 5, 6]
        prev = b""
        for row in rows:
            assert row.prev_hash == prev
            assert row.hash == entry_hash(prev, row.seq, row.payload)
            prev = row.hash

    def test_chain_now_rolls_back_nothing_else(self, store: SiteStore) -> None:
        def failing_write() -> None:
            with store.transaction() as tx:
                tx.insert([record("r1")])
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            failing_write()
        store.chain_now(['{"action":"refuse"}'])
        assert store.get("r1") is None
        assert [r.seq for r in store.audit()] == [1]

    def test_the_outbox_keeps_order_and_forgets_what_is_dequeued(self, store: SiteStore) -> None:
        with store.transaction() as tx:
            tx.enqueue([("r1", "s1", "de", "upsert"), ("r2", "s1", "us", "upsert")])
            tx.enqueue([("r1", "s1", "de", "delete")])
        items = store.outbox(10)
        assert [(i.record_id, i.target_site, i.op) for i in items] == [
            ("r1", "de", "upsert"), ("r2", "us", "upsert"), ("r1", "de", "delete"),
        ]  # fmt: skip
        assert items[0].seq < items[1].seq < items[2].seq
        assert [i.seq for i in store.outbox(2)] == [items[0].seq, items[1].seq]
        with store.transaction() as tx:
            tx.dequeue([items[0].seq, items[2].seq])
        assert [i.record_id for i in store.outbox(10)] == ["r2"]

    def test_an_outbox_item_rolls_back_with_its_record(self, store: SiteStore) -> None:
        def failing_write() -> None:
            with store.transaction() as tx:
                tx.insert([record("r1")])
                tx.enqueue([("r1", "subj-1", "de", "upsert")])
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            failing_write()
        assert store.outbox(10) == []

    def test_a_written_batch_holds_its_records_index_outbox_and_chained_entries(
        self, store: SiteStore
    ) -> None:
        append(store, 1, "before")
        with store.transaction() as tx:
            rows = tx.write_batch(
                [record("r1"), record("r2", "subj-2")],
                [IndexEntry(digest("a"), "r1"), IndexEntry(digest("a"), "r2")],
                [("r1", "subj-1", "de", "upsert"), ("r2", "subj-2", "us", "upsert")],
                ['{"action":"write","n":1}', '{"action":"write","n":2}'],
            )
        assert store.get("r2") == record("r2", "subj-2")
        assert sorted(store.lookup(digest("a"))) == ["r1", "r2"]
        items = store.outbox(10)
        assert [(i.record_id, i.target_site) for i in items] == [("r1", "de"), ("r2", "us")]
        assert items[0].seq < items[1].seq
        stored = list(store.audit())
        assert rows == stored[1:]
        assert [r.seq for r in rows] == [2, 3]
        for row, prev in zip(rows, stored, strict=False):
            assert row.prev_hash == prev.hash
            assert row.hash == entry_hash(prev.hash, row.seq, row.payload)

    def test_a_written_batch_with_a_duplicate_id_leaves_nothing(self, store: SiteStore) -> None:
        with store.transaction() as tx:
            tx.insert([record("r1")])

        def write_a_duplicate() -> None:
            with store.transaction() as tx:
                tx.write_batch(
                    [record("r2"), record("r1", "someone-else")],
                    [IndexEntry(digest("b"), "r2")],
                    [("r2", "subj-1", "de", "upsert")],
                    ['{"action":"write"}'],
                )

        with pytest.raises(self.duplicate_error):
            write_a_duplicate()
        assert store.get("r2") is None
        assert store.get("r1") == record("r1")
        assert store.lookup(digest("b")) == []
        assert store.outbox(10) == []
        assert list(store.audit()) == []
        with store.transaction() as tx:  # the store goes on as before
            tx.write_batch([record("r3")], [], [], ['{"action":"write"}'])
        assert store.count() == 2
        assert [r.seq for r in store.audit()] == [1]

    def test_a_replica_only_moves_forward(self, store: SiteStore) -> None:
        v2 = replace(record("r1", version=2), primary_site="ru")
        with store.transaction() as tx:
            assert tx.put_replica(v2) is True
            assert tx.put_replica(v2) is False  # the same version again: nothing changes
            assert tx.put_replica(replace(v2, version=1, body=pack_fields({"x": b"old"}))) is False
            assert tx.put_replica(replace(v2, version=3, body=pack_fields({"x": b"new"}))) is True
        got = store.get("r1")
        assert got is not None
        assert (got.version, got.fields, got.primary_site) == (3, {"x": b"new"}, "ru")
        assert store.count() == 0
        assert store.count_replicas() == 1

    def test_a_replica_never_overwrites_a_primary(self, store: SiteStore) -> None:
        with store.transaction() as tx:
            tx.insert([record("r1", version=1)])
            assert tx.put_replica(replace(record("r1", version=9), primary_site="de")) is False
        got = store.get("r1")
        assert got is not None
        assert (got.version, got.primary_site) == (1, None)

    def test_replicas_page_in_record_order(self, store: SiteStore) -> None:
        with store.transaction() as tx:
            tx.insert([record("p1")])
            for rid in ("r3", "r1", "r2"):
                tx.put_replica(replace(record(rid), primary_site="ru"))
        assert [r.record_id for r in store.replicas("", 2)] == ["r1", "r2"]
        assert [r.record_id for r in store.replicas("r2", 2)] == ["r3"]
        assert set(store.get_many(["r1", "p1", "nope"])) == {"r1", "p1"}

    def test_subject_roles_match_the_walk_over_the_records(self, store: SiteStore) -> None:
        with store.transaction() as tx:
            tx.insert([record("p1", "both"), record("p2", "only-primary"), record("p3", "both")])
            for rid, sid in (("c1", "both"), ("c2", "only-copies"), ("c3", "only-copies")):
                tx.put_replica(replace(record(rid, sid), primary_site="ru"))
        expected = {"both": False, "only-primary": False, "only-copies": True}
        assert store.subject_roles() == expected
        assert SiteStore.subject_roles(store) == expected  # the reference walk agrees

    def test_tagged_audit_rows_are_the_walks_matches(self, store: SiteStore) -> None:
        with store.transaction() as tx:
            head = tx.audit_head()
        rows, prev = [], head[1]
        payloads = [
            '{"action":"attest","n":1}', '{"action":"transfer","subject":"s-1"}',
            '{"action":"attest","n":2}', '{"action":"transfer","subject":"s-2"}',
            '{"action":"read","note":"{\\"action\\":\\"attest\\""}', '{"action":"attest","n":3}',
        ]  # fmt: skip
        for i, payload in enumerate(payloads, start=head[0] + 1):
            digest = link(prev, i, payload)
            rows.append(AuditRow(i, payload, prev, digest))
            prev = digest
        with store.transaction() as tx:
            tx.append_audit(rows)
        top = rows[-1].seq
        cases: list[tuple[str, int, str | None, bool]] = [
            ('{"action":"attest"', top, None, True), ('{"action":"attest"', top - 1, None, True),
            ('{"action":"attest"', top, None, False), ('{"action":"transfer"', top, "s-2", False),
            ('{"action":"transfer"', top, "s-9", False), ('{"action":"erase"', top, None, True),
        ]  # fmt: skip
        for prefix, upto, containing, newest in cases:
            got = store.audit_tagged(prefix, upto, containing=containing, newest=newest)
            walked = SiteStore.audit_tagged(
                store, prefix, upto, containing=containing, newest=newest
            )
            assert got == walked, (prefix, upto, containing, newest)
        newest = store.audit_tagged('{"action":"attest"', top - 1, newest=True)
        assert [r.payload for r in newest] == ['{"action":"attest","n":2}']

    def test_transfer_counts_are_per_year_destination_and_subject(self, store: SiteStore) -> None:
        with store.transaction() as tx:
            tx.count_transfer(2025, "US", "s1", False)
            tx.count_transfer(2025, "US", "s1", True)  # the same subject again, now sensitive
            tx.count_transfer(2025, "US", "s2", False)
            tx.count_transfer(2025, "DE", "s3", False)
            tx.count_transfer(2024, "US", "s4", True)
        assert store.transfer_counts(2025, "US") == (2, 1)
        assert store.transfer_counts(2024, "US") == (1, 1)
        assert store.transfer_counts(2026, "US") == (0, 0)

    def test_a_subject_counted_as_sensitive_stays_counted_so(self, store: SiteStore) -> None:
        with store.transaction() as tx:
            tx.count_transfers(
                [TransferCount(2025, "US", "s1", True), TransferCount(2025, "US", "s2", False)]
            )
        with store.transaction() as tx:  # later transfers, in a batch and one by one
            tx.count_transfers(
                [
                    TransferCount(2025, "US", "s1", False),
                    TransferCount(2025, "US", "s2", True),
                    TransferCount(2025, "US", "s3", False),
                ]
            )
            tx.count_transfer(2025, "US", "s1", False)
            tx.count_transfer(2025, "US", "s3", False)
        assert store.transfer_counts(2025, "US") == (3, 2)

    def test_the_ledger_refuses_updates_at_the_database_level(self, store: SiteStore) -> None:
        rows = append(store, 3)
        with pytest.raises(self.raw_error, match="append-only"):
            self.raw(store.url, "UPDATE audit SET payload = '{}' WHERE seq = 2")
        assert list(store.audit()) == rows

    def test_the_ledger_refuses_deletes_at_the_database_level(self, store: SiteStore) -> None:
        rows = append(store, 3)
        with pytest.raises(self.raw_error, match="append-only"):
            self.raw(store.url, "DELETE FROM audit WHERE seq = 3")
        with pytest.raises(self.raw_error, match="append-only"):
            self.raw(store.url, "DELETE FROM audit")
        assert list(store.audit()) == rows

    def test_checkpoints_are_listed_in_order_and_replaced_by_sequence(
        self, store: SiteStore
    ) -> None:
        with store.transaction() as tx:
            tx.add_checkpoint(Checkpoint(2000, b"b" * 32, T0, b"sig2"))
            tx.add_checkpoint(Checkpoint(1000, b"a" * 32, T0, b"sig1"))
        with store.transaction() as tx:
            tx.add_checkpoint(Checkpoint(2000, b"c" * 32, "2025-08-01T00:00:00+00:00", b"sig3"))
        assert store.checkpoints() == [
            Checkpoint(1000, b"a" * 32, T0, b"sig1"),
            Checkpoint(2000, b"c" * 32, "2025-08-01T00:00:00+00:00", b"sig3"),
        ]

    # -- tree heads, kept subtrees, witness records ---------------------------------------

    def test_tree_heads_are_kept_once_per_size_and_listed_smallest_first(
        self, store: SiteStore
    ) -> None:
        assert store.heads() == []
        with store.transaction() as tx:
            assert tx.latest_head() is None
            assert tx.add_head(HeadRow(7, b"r" * 32, T0, b"s" * 64, b"c" * 96))
            assert tx.add_head(HeadRow(3, b"q" * 32, T0, b"t" * 64, b"d" * 64))
            assert not tx.add_head(HeadRow(7, b"x" * 32, T0, b"u" * 64, b""))
            assert tx.latest_head() == HeadRow(7, b"r" * 32, T0, b"s" * 64, b"c" * 96)
        assert store.heads() == [
            HeadRow(3, b"q" * 32, T0, b"t" * 64),
            HeadRow(7, b"r" * 32, T0, b"s" * 64),
        ]

    def test_tree_heads_and_witness_records_refuse_changes_at_the_database_level(
        self, store: SiteStore
    ) -> None:
        with store.transaction() as tx:
            tx.add_head(HeadRow(2, b"r" * 32, T0, b"s" * 64, b"c" * 32))
            tx.add_witnessed(WitnessRow("de", 4, b"w" * 32, T0, b"s" * 64, 1))
        for query in (
            "UPDATE tree_heads SET size = 9",
            "DELETE FROM tree_heads",
            "UPDATE witnessed SET size = 9",
            "DELETE FROM witnessed",
        ):
            with pytest.raises(self.raw_error, match="append-only"):
                self.raw(store.url, query)
        assert [h.size for h in store.heads()] == [2]
        assert [w.size for w in store.witnessed()] == [4]

    def test_kept_subtrees_are_found_by_level_and_index(self, store: SiteStore) -> None:
        with store.transaction() as tx:
            tx.add_tree_nodes([(8, 0, b"a" * 32), (8, 1, b"b" * 32), (9, 0, b"c" * 32)])
            tx.add_tree_nodes([(8, 0, b"z" * 32)])  # kept already: the first one stays
        assert store.tree_nodes([(8, 0), (9, 0), (9, 1), (8, 7)]) == {
            (8, 0): b"a" * 32,
            (9, 0): b"c" * 32,
        }
        assert store.tree_nodes([]) == {}

    def test_witness_records_are_listed_by_site_and_size(self, store: SiteStore) -> None:
        rows = [
            WitnessRow("us", 5, b"u" * 32, T0, b"s" * 64, 3),
            WitnessRow("de", 9, b"e" * 32, T0, b"s" * 64, 2),
            WitnessRow("de", 4, b"d" * 32, T0, b"s" * 64, 1),
        ]
        with store.transaction() as tx:
            assert tx.latest_witnessed("de") is None
            for row in rows:
                tx.add_witnessed(row)
            assert tx.latest_witnessed("de") == rows[1]
        assert store.witnessed() == [rows[2], rows[1], rows[0]]
        assert store.witnessed("de") == [rows[2], rows[1]]
        assert store.witnessed("cn") == []

    def test_a_nodes_kept_answers_are_first_come_per_peer_and_operation_until_expiry(
        self, store: SiteStore
    ) -> None:
        key = b"k" * 32
        with store.transaction() as tx:
            tx.keep_reply("us", "put", key, 200, '{"a": 1}', 100.0, 10.0)
            tx.keep_reply("us", "put", key, 409, '{"a": 2}', 200.0, 10.0)  # the first stays
            tx.keep_reply("de", "put", key, 201, '{"b": 1}', 300.0, 10.0)
        assert store.reply("us", "put", key, 50.0) == (200, '{"a": 1}')
        assert store.reply("de", "put", key, 50.0) == (201, '{"b": 1}')
        assert store.reply("us", "update", key, 50.0) is None
        assert store.reply("us", "put", key, 100.5) is None  # expired
        with store.transaction() as tx:  # keeping one drops the expired
            tx.keep_reply("us", "erase", key, 200, "{}", 400.0, 150.0)
        assert store.reply("us", "put", key, 0.0) is None
        assert store.reply("de", "put", key, 0.0) == (201, '{"b": 1}')

    def test_audit_rows_are_read_inside_the_transaction(self, store: SiteStore) -> None:
        rows = append(store, 3)
        with store.transaction() as tx:
            more = tx.chain(['{"n":4}'])
            assert tx.audit_rows(2, 4) == [*rows[1:], *more]
            assert tx.audit_rows(5, 9) == []

    # -- schema -----------------------------------------------------------------------------

    def test_the_schema_version_site_and_kind_are_recorded(self, store: SiteStore) -> None:
        assert store.created
        assert store.creation_id is not None
        assert len(store.creation_id) == 32
        assert self.meta(store.url) == {
            "schema_version": str(SITE_SCHEMA_VERSION),
            "site": SITE,
            "kind": "site",
            "creation_id": store.creation_id,
        }

    def test_reopening_is_idempotent(self, store: SiteStore, site_url: str) -> None:
        with store.transaction() as tx:
            tx.insert([record("r1")])
        rows = append(store, 2)
        before = self.meta(site_url)
        for create in (True, False, True):
            again = open_site_store(SITE, site_url, create=create)
            try:
                assert again.get("r1") == record("r1")
                assert list(again.audit()) == rows
            finally:
                again.close()
        assert self.meta(site_url) == before
        store.close()
        store.open(create=False)
        assert store.count() == 1

    def test_a_newer_schema_refuses_to_open(self, store: SiteStore, site_url: str) -> None:
        bumped = SITE_SCHEMA_VERSION + 1
        self.raw(site_url, f"UPDATE meta SET value = '{bumped}' WHERE key = 'schema_version'")
        for create in (True, False):
            with pytest.raises(SchemaTooNew, match=f"version {bumped}"):
                open_site_store(SITE, site_url, create=create)
        assert self.meta(site_url)["schema_version"] == str(bumped)

    def test_another_sites_database_refuses_to_open(self, store: SiteStore, site_url: str) -> None:
        with pytest.raises(StoreMismatch, match="belongs to site 'ru'"):
            open_site_store("de", site_url)
        assert self.meta(site_url)["site"] == SITE

    def test_a_site_database_is_not_a_key_store(self, store: SiteStore, site_url: str) -> None:
        with pytest.raises(StoreMismatch, match="not a key store"):
            open_key_store(SITE, site_url)

    def test_opening_without_create_needs_a_schema(self, empty_url: str) -> None:
        with pytest.raises(SiteUnavailable, match="no domicile schema"):
            open_site_store(SITE, empty_url, create=False)

    def test_opening_never_creates_a_store_unless_asked(self, site_url: str) -> None:
        for options in ({}, {"read_only": True}, {"adopt": True}):
            with pytest.raises(SiteUnavailable) as info:
                open_site_store(SITE, site_url, **options)
            assert info.value.site == SITE
        store = open_site_store(SITE, site_url, create=True)  # what setup does
        store.close()
        assert self.meta(site_url)["site"] == SITE

    def test_setup_refuses_a_database_holding_other_tables(self, empty_url: str) -> None:
        self.raw(empty_url, "CREATE TABLE IF NOT EXISTS unrelated (a INTEGER)")
        with pytest.raises(NoSchema, match="not domicile's"):
            open_site_store(SITE, empty_url, create=True)
        assert not any(r[0] == "records" for r in self.tables(empty_url))

    # -- creation ids -----------------------------------------------------------------------

    def test_a_store_opens_only_with_its_own_creation_id(
        self, store: SiteStore, site_url: str
    ) -> None:
        cid = store.creation_id
        assert cid is not None
        again = open_site_store(SITE, site_url, creation_id=cid)
        assert (again.creation_id, again.created) == (cid, False)
        again.close()
        for other in ("0" * 32, cid[::-1]):
            with pytest.raises(StoreMismatch, match="another creation id") as info:
                open_site_store(SITE, site_url, creation_id=other)
            assert (info.value.site, info.value.exit_code) == (SITE, 4)
            with pytest.raises(StoreMismatch, match="another creation id"):
                open_site_store(SITE, site_url, creation_id=other, read_only=True)
        assert self.meta(site_url)["creation_id"] == cid

    def test_a_store_without_a_creation_id_is_refused_until_adopted(
        self, store: SiteStore, site_url: str
    ) -> None:
        """A store made before creation ids: refused where an id is expected, until setup
        adopts it (which stamps an id once, and keeps it after)."""
        with store.transaction() as tx:
            tx.insert([record("r1")])
        self.raw(site_url, "DELETE FROM meta WHERE key = 'creation_id'")
        with pytest.raises(StoreMismatch, match="no creation id"):
            open_site_store(SITE, site_url, creation_id="0" * 32)
        adopted = open_site_store(SITE, site_url, adopt=True)
        cid = adopted.creation_id
        assert cid is not None
        assert not adopted.created
        assert adopted.get("r1") == record("r1")
        adopted.close()
        assert self.meta(site_url)["creation_id"] == cid
        again = open_site_store(SITE, site_url, adopt=True)
        assert again.creation_id == cid  # adopting twice changes nothing
        again.close()

    # -- read-only opens --------------------------------------------------------------------

    def test_a_read_only_open_writes_nothing(self, store: SiteStore, site_url: str) -> None:
        with store.transaction() as tx:
            tx.insert([record("r1")])
        rows = append(store, 2)
        store.close()
        before = self.meta(site_url)
        reader = open_site_store(SITE, site_url, read_only=True, creation_id=store.creation_id)
        try:
            assert reader.get("r1") == record("r1")
            assert list(reader.audit()) == rows
            with pytest.raises(SiteUnavailable), reader.transaction() as tx:
                tx.insert([record("r2")])
            with pytest.raises(SiteUnavailable):
                reader.chain_now(['{"n":1}'])
        finally:
            reader.close()
        assert self.meta(site_url) == before
        assert [r[0] for r in self.raw(site_url, "SELECT record_id FROM records")] == ["r1"]

    def test_a_read_only_open_refuses_an_older_schema(
        self, store: SiteStore, site_url: str
    ) -> None:
        store.close()
        older = SITE_SCHEMA_VERSION - 1
        self.raw(site_url, f"UPDATE meta SET value = '{older}' WHERE key = 'schema_version'")
        with pytest.raises(SchemaOutdated, match="sites migrate"):
            open_site_store(SITE, site_url, read_only=True)
        assert self.meta(site_url)["schema_version"] == str(older)

    # -- availability -----------------------------------------------------------------------

    def test_an_open_store_answers(self, store: SiteStore) -> None:
        assert store.ping()

    def test_a_closed_store_is_unavailable(self, store: SiteStore) -> None:
        with store.transaction() as tx:
            tx.insert([record("r1")])
        store.close()
        assert not store.ping()
        calls: list[Callable[[], object]] = [
            lambda: store.get("r1"),
            lambda: store.lookup(b"x"),
            lambda: store.subject_records("subj-1"),
            store.count,
            store.checkpoints,
            lambda: list(store.audit()),
        ]
        for call in calls:
            with pytest.raises(SiteUnavailable) as info:
                call()
            assert info.value.site == SITE
        with pytest.raises(SiteUnavailable), store.transaction() as tx:
            tx.insert([record("r2")])
        store.close()  # closing twice is harmless

    def test_an_unreachable_store_is_unavailable(self, unreachable_url: str) -> None:
        for create in (True, False):
            with pytest.raises(SiteUnavailable) as info:
                open_site_store(SITE, unreachable_url, create=create)
            assert info.value.site == SITE
            assert info.value.code == "site_unavailable"


class KeyStoreContract(Backend):
    @pytest.fixture
    def keystore(self, key_url: str) -> Iterator[KeyStore]:
        store = open_key_store(SITE, key_url, create=True)
        yield store
        store.close()

    def test_backend_is_named(self, keystore: KeyStore) -> None:
        assert keystore.backend == self.backend

    def test_keys_put_in_a_batch_come_back(self, keystore: KeyStore) -> None:
        keys = [(f"subj-{i}", WrappedKey(1, bytes([i]) * 60)) for i in range(50)]
        keystore.put_many(keys)
        for sid, key in keys:
            assert keystore.get(sid) == key
        assert keystore.get("nobody") is None
        keystore.put_many([])
        found = keystore.get_many([sid for sid, _ in keys[:3]] + ["nobody"])
        assert found == dict(keys[:3])
        assert keystore.get_many([]) == {}

    def test_delete_destroys_exactly_that_key(self, keystore: KeyStore) -> None:
        keystore.put_many([("a", WrappedKey(1, b"ka")), ("b", WrappedKey(1, b"kb"))])
        assert keystore.delete("a") is True
        assert keystore.get("a") is None
        assert keystore.delete("a") is False
        assert keystore.get("b") == WrappedKey(1, b"kb")
        rows = self.raw(keystore.url, "SELECT subject_id FROM subject_keys")
        assert [r[0] for r in rows] == ["b"]

    def test_a_batch_with_an_existing_subject_writes_nothing(self, keystore: KeyStore) -> None:
        keystore.put_many([("a", WrappedKey(1, b"ka"))])
        with pytest.raises(SiteUnavailable):
            keystore.put_many([("new", WrappedKey(1, b"kn")), ("a", WrappedKey(2, b"other"))])
        assert keystore.get("new") is None
        assert keystore.get("a") == WrappedKey(1, b"ka")
        keystore.put_many([("new", WrappedKey(1, b"kn"))])  # still usable
        assert keystore.get("new") == WrappedKey(1, b"kn")

    def test_stale_lists_keys_of_other_versions_up_to_a_limit(self, keystore: KeyStore) -> None:
        keystore.put_many(
            [(f"old-{i}", WrappedKey(1, b"o%d" % i)) for i in range(5)]
            + [(f"cur-{i}", WrappedKey(2, b"c%d" % i)) for i in range(3)]
        )
        stale = keystore.stale(2, 100)
        assert sorted(sid for sid, _ in stale) == [f"old-{i}" for i in range(5)]
        assert all(key.kek_version == 1 for _, key in stale)
        assert len(keystore.stale(2, 2)) == 2
        assert keystore.stale(2, 0) == []

    def test_rewrap_replaces_only_the_key_it_expects(self, keystore: KeyStore) -> None:
        old, new = WrappedKey(1, b"old"), WrappedKey(2, b"new")
        keystore.put_many([("a", old)])
        assert keystore.rewrap("a", WrappedKey(1, b"not-the-stored-one"), new) is False
        assert keystore.get("a") == old
        assert keystore.rewrap("a", old, new) is True
        assert keystore.get("a") == new
        assert keystore.rewrap("a", old, WrappedKey(3, b"newer")) is False  # lost the race
        assert keystore.rewrap("missing", old, new) is False
        assert keystore.get("a") == new

    def test_versions_count_keys_per_key_encryption_key(self, keystore: KeyStore) -> None:
        assert keystore.versions() == {}
        keystore.put_many([("a", WrappedKey(1, b"a")), ("b", WrappedKey(1, b"b"))])
        keystore.put_many([("c", WrappedKey(3, b"c"))])
        assert keystore.versions() == {1: 2, 3: 1}

    def test_the_schema_version_site_and_kind_are_recorded(self, keystore: KeyStore) -> None:
        assert keystore.created
        assert keystore.creation_id is not None
        assert self.meta(keystore.url) == {
            "schema_version": str(KEY_SCHEMA_VERSION),
            "site": SITE,
            "kind": "key",
            "creation_id": keystore.creation_id,
        }

    def test_reopening_is_idempotent(self, keystore: KeyStore, key_url: str) -> None:
        keystore.put_many([("a", WrappedKey(1, b"ka"))])
        before = self.meta(key_url)
        for create in (True, False):
            again = open_key_store(SITE, key_url, create=create)
            try:
                assert again.get("a") == WrappedKey(1, b"ka")
            finally:
                again.close()
        assert self.meta(key_url) == before

    def test_a_newer_schema_refuses_to_open(self, keystore: KeyStore, key_url: str) -> None:
        bumped = KEY_SCHEMA_VERSION + 1
        self.raw(key_url, f"UPDATE meta SET value = '{bumped}' WHERE key = 'schema_version'")
        with pytest.raises(SchemaTooNew):
            open_key_store(SITE, key_url)

    def test_another_sites_key_store_refuses_to_open(
        self, keystore: KeyStore, key_url: str
    ) -> None:
        with pytest.raises(StoreMismatch, match="belongs to site 'ru'"):
            open_key_store("de", key_url)

    def test_a_key_store_is_not_a_site_store(self, keystore: KeyStore, key_url: str) -> None:
        with pytest.raises(StoreMismatch, match="not a site store"):
            open_site_store(SITE, key_url)

    def test_an_open_key_store_answers(self, keystore: KeyStore) -> None:
        assert keystore.ping()

    def test_a_closed_key_store_is_unavailable(self, keystore: KeyStore) -> None:
        keystore.put_many([("a", WrappedKey(1, b"ka"))])
        keystore.close()
        assert not keystore.ping()
        calls = [
            lambda: keystore.get("a"),
            lambda: keystore.put_many([("b", WrappedKey(1, b"kb"))]),
            lambda: keystore.delete("a"),
            lambda: keystore.stale(2, 10),
            lambda: keystore.rewrap("a", WrappedKey(1, b"ka"), WrappedKey(2, b"x")),
            keystore.versions,
        ]
        for call in calls:
            with pytest.raises(SiteUnavailable):
                call()

    def test_an_unreachable_key_store_is_unavailable(self, unreachable_url: str) -> None:
        with pytest.raises(SiteUnavailable):
            open_key_store(SITE, unreachable_url, create=False)

    def test_a_missing_key_store_is_unavailable_never_a_new_empty_one(self, key_url: str) -> None:
        """An empty new key store would make every subject of the site look erased."""
        for options in ({}, {"read_only": True}, {"adopt": True}):
            with pytest.raises(SiteUnavailable):
                open_key_store(SITE, key_url, **options)
        store = open_key_store(SITE, key_url, create=True)
        store.close()

    def test_a_key_store_opens_only_with_its_own_creation_id(
        self, keystore: KeyStore, key_url: str
    ) -> None:
        keystore.put_many([("a", WrappedKey(1, b"ka"))])
        cid = keystore.creation_id
        assert cid is not None
        again = open_key_store(SITE, key_url, creation_id=cid)
        assert again.get("a") == WrappedKey(1, b"ka")
        again.close()
        with pytest.raises(StoreMismatch, match="another creation id"):
            open_key_store(SITE, key_url, creation_id="f" * 32)
