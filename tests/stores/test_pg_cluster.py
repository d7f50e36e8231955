"""The throwaway-cluster fixture, and stores whose server really stops and starts again
while another site's server keeps running."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from domicile.stores import WrappedKey, open_key_store, open_site_store
from domicile.stores.base import SiteUnavailable
from tests.pg import ADMIN_URL, PgCluster, answers, ensure_server, free_port

from .contract import SITE, append, assert_chain, record


def test_a_cluster_serves_its_own_database(pg_cluster: PgCluster) -> None:
    assert pg_cluster.running
    assert pg_cluster.url.endswith(f":{pg_cluster.port}/domicile")
    with psycopg.connect(pg_cluster.url) as conn:
        row = conn.execute("SELECT current_database(), current_setting('port')").fetchone()
    assert row == ("domicile", str(pg_cluster.port))
    assert pg_cluster.port != 5432


def test_stopping_a_sites_server_makes_only_that_site_unavailable(
    pg_cluster: PgCluster, pg_database: Callable[[str], str]
) -> None:
    ru = open_site_store(SITE, pg_cluster.url, create=True)
    ru_keys = open_key_store(
        SITE, pg_cluster.database_url("ru_keys"), create=True, create_database=True
    )
    de = open_site_store("de", pg_database("de"), create=True)
    try:
        with ru.transaction() as tx:
            tx.insert([record("r1")])
        rows = append(ru, 2)
        ru_keys.put_many([("subj-1", WrappedKey(1, b"k1"))])

        pg_cluster.stop()
        assert not pg_cluster.running
        assert not ru.ping()
        for call in (
            lambda: ru.get("r1"),
            ru.count,
            lambda: list(ru.audit()),
            lambda: ru_keys.get("subj-1"),
            lambda: ru_keys.put_many([("subj-2", WrappedKey(1, b"k2"))]),
        ):
            with pytest.raises(SiteUnavailable) as info:
                call()
            assert info.value.site == SITE

        def write() -> None:
            with ru.transaction() as tx:
                tx.insert([record("r2")])

        with pytest.raises(SiteUnavailable):
            write()
        with pytest.raises(SiteUnavailable):
            open_site_store(SITE, pg_cluster.url)

        # The other site does not notice.
        assert de.ping()
        with de.transaction() as tx:
            tx.insert([record("d1")])
        assert de.count() == 1

        pg_cluster.start()
        assert ru.ping()
        assert ru.get("r1") == record("r1")
        assert list(ru.audit()) == rows
        assert ru.get("r2") is None  # the refused write left nothing
        append(ru, 1)
        assert_chain(list(ru.audit()))
        assert ru_keys.get("subj-1") == WrappedKey(1, b"k1")
        assert ru_keys.get("subj-2") is None
    finally:
        ru.close()
        ru_keys.close()
        de.close()


def test_a_restart_between_two_calls_goes_unnoticed(pg_cluster: PgCluster) -> None:
    ru = open_site_store(SITE, pg_cluster.url, create=True)
    try:
        with ru.transaction() as tx:
            tx.insert([record("r1")])
        pg_cluster.stop()
        pg_cluster.start()
        assert ru.count() == 1  # the dead connection is replaced, once
        pg_cluster.stop(mode="immediate")  # like a crash
        pg_cluster.start()
        with ru.transaction() as tx:
            tx.insert([record("r2")])
        assert ru.count() == 2
    finally:
        ru.close()


def test_destroy_stops_the_server_and_removes_its_files(
    pg_clusters: Callable[[], PgCluster],
) -> None:
    cluster = pg_clusters()
    url, root = cluster.url, cluster.root
    assert root.is_dir()
    assert answers(url)
    cluster.destroy()
    assert not root.exists()
    assert not answers(url, timeout=1)
    cluster.destroy()  # again: harmless (the fixture does it once more at teardown)


def test_a_server_that_cannot_be_reached_is_reported_not_skipped() -> None:
    # Nothing listens on this port; ensure_server tries to start the machine's cluster
    # (already running: a no-op), waits, and describes the failure for pytest.fail.
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    problem = ensure_server(url, timeout=1)
    assert problem is not None
    assert "pg_ctlcluster" in problem
    assert ensure_server(ADMIN_URL, timeout=5) is None
