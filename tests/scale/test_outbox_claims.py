"""Several replication workers share one home site's outbox (PostgreSQL): each takes items
no other holds, a subject's items keep their order, and a worker that dies gives its items
back."""

from __future__ import annotations

import pytest

from domicile.stores import open_site_store
from domicile.stores.base import SiteStore

from .conftest import Deployment


def _enqueue(store: SiteStore, items: list[tuple[str, str, str, str]]) -> None:
    with store.transaction() as tx:
        tx.enqueue(items)


def _store(deployment: Deployment) -> SiteStore:
    created = deployment.open().deployment.site("us")
    return open_site_store("us", deployment.url("us"), creation_id=created.store)


def test_two_claims_take_disjoint_items_and_a_subject_waits_its_turn(
    pg_deployment: Deployment,
) -> None:
    a, b = _store(pg_deployment), _store(pg_deployment)  # two workers: two connections
    try:
        _enqueue(
            a,
            [
                ("r1", "S", "de", "upsert"),
                ("r2", "T", "de", "upsert"),
                ("r1", "S", "de", "delete"),
                ("r3", "U", "de", "upsert"),
            ],
        )
        with a.claim_outbox(1) as first:
            assert [(i.record_id, i.op) for i in first.items] == [("r1", "upsert")]
            with b.claim_outbox(10) as second:
                # S's delete must not overtake its upsert, which the first worker holds.
                assert [(i.record_id, i.op) for i in second.items] == [
                    ("r2", "upsert"),
                    ("r3", "upsert"),
                ]
                assert second.deferred == 1
                with second.transaction() as tx:
                    tx.dequeue([i.seq for i in second.items])
            with first.transaction() as tx:
                tx.dequeue([i.seq for i in first.items])
        with b.claim_outbox(10) as third:
            assert [(i.record_id, i.op) for i in third.items] == [("r1", "delete")]
            assert third.deferred == 0
            with third.transaction() as tx:
                tx.dequeue([i.seq for i in third.items])
        assert a.outbox(10) == []
    finally:
        a.close()
        b.close()


def test_a_claim_that_fails_gives_its_items_back_in_order(pg_deployment: Deployment) -> None:
    a, b = _store(pg_deployment), _store(pg_deployment)
    try:
        _enqueue(a, [("r1", "S", "de", "upsert"), ("r1", "S", "de", "delete")])

        def die() -> None:
            with a.claim_outbox(1) as dying:
                assert len(dying.items) == 1
                with b.claim_outbox(10) as meanwhile:
                    assert meanwhile.items == []
                    assert meanwhile.deferred == 1
                raise RuntimeError("the worker dies before it clears its items")

        with pytest.raises(RuntimeError):
            die()
        with b.claim_outbox(10) as after:
            assert [(i.record_id, i.op) for i in after.items] == [
                ("r1", "upsert"),
                ("r1", "delete"),
            ]
    finally:
        a.close()
        b.close()


def test_sqlite_keeps_one_worker_and_reads_items_in_order(tmp_path: object) -> None:
    """SQLite has a single writer: the default claim reads the oldest items and clears
    them later in a transaction of its own (one worker per site)."""
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    store = open_site_store("us", f"sqlite:{tmp_path / 'us.sqlite'}", create=True)
    try:
        _enqueue(store, [("r1", "S", "de", "upsert"), ("r1", "S", "de", "delete")])
        with store.claim_outbox(10) as claim:
            assert [i.op for i in claim.items] == ["upsert", "delete"]
            assert claim.deferred == 0
            with claim.transaction() as tx:
                tx.dequeue([i.seq for i in claim.items])
        assert store.outbox(10) == []
    finally:
        store.close()
