"""The PostgreSQL stores against the shared contract, plus what only PostgreSQL has:
creating the database, read-only servers, lost connections, the audit_head row."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import psycopg
import pytest
from psycopg import sql

from domicile.stores import (
    IndexEntry,
    KeyStore,
    SiteStore,
    WrappedKey,
    open_key_store,
    open_site_store,
)
from domicile.stores import postgres as pg_store
from domicile.stores.base import SiteUnavailable, StoreMissing
from tests.pg import PgServer, free_port

from .contract import (
    SITE,
    KeyStoreContract,
    SiteStoreContract,
    append,
    assert_chain,
    chain_after,
    digest,
    record,
)


def raw(url: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query.encode(), params or None)
        return cur.fetchall() if cur.description else []


class PostgresBackend:
    backend: ClassVar[str] = "postgresql"
    raw_error: ClassVar[type[BaseException]] = psycopg.Error
    duplicate_error: ClassVar[type[BaseException]] = psycopg.errors.UniqueViolation

    def raw(self, url: str, query: str) -> list[tuple[Any, ...]]:
        return raw(url, query)

    def tables(self, url: str) -> list[tuple[Any, ...]]:
        return raw(url, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")

    @pytest.fixture
    def site_url(self, pg_database: Callable[[str], str]) -> str:
        return pg_database("site")

    @pytest.fixture
    def key_url(self, pg_database: Callable[[str], str]) -> str:
        return pg_database("keys")

    @pytest.fixture
    def empty_url(self, pg_database: Callable[[str], str]) -> str:
        return pg_database("empty")

    @pytest.fixture
    def unreachable_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"


class TestPostgresSiteStore(PostgresBackend, SiteStoreContract):
    pass


class TestPostgresKeyStore(PostgresBackend, KeyStoreContract):
    pass


# -- PostgreSQL only -------------------------------------------------------------------------


@pytest.fixture
def fresh_name(pg_server: PgServer) -> Iterator[Callable[[str], str]]:
    """Names of databases that do not exist yet (dropped after the test if created)."""
    names: list[str] = []

    def make(label: str) -> str:
        names.append(pg_server.new_name(label))
        return names[-1]

    yield make
    pg_server.discard(names)


def database_exists(pg_server: PgServer, name: str) -> bool:
    return bool(raw(pg_server.admin_url, "SELECT 1 FROM pg_database WHERE datname = %s", (name,)))


def backend_pids(pg_server: PgServer, url: str) -> list[int]:
    dbname = url.rsplit("/", 1)[1]
    rows = raw(
        pg_server.admin_url,
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = 'domicile'",
        (dbname,),
    )
    return [int(r[0]) for r in rows]


def terminate(pg_server: PgServer, url: str) -> None:
    pids = backend_pids(pg_server, url)
    assert pids
    for pid in pids:
        raw(pg_server.admin_url, "SELECT pg_terminate_backend(%s)", (pid,))


@pytest.fixture
def store(pg_url: str) -> Iterator[SiteStore]:
    s = open_site_store(SITE, pg_url, create=True)
    yield s
    s.close()


def test_a_missing_database_is_created_only_when_setup_asks_for_it(
    pg_server: PgServer, fresh_name: Callable[[str], str]
) -> None:
    name = fresh_name("created")
    for opener in (open_site_store, open_key_store):
        for create in (False, True):  # even a setup creates the database only when asked
            with pytest.raises(StoreMissing, match="is missing"):
                opener(SITE, pg_server.url(name), create=create)
    assert not database_exists(pg_server, name)
    store = open_site_store(SITE, pg_server.url(name), create=True, create_database=True)
    try:
        assert database_exists(pg_server, name)
        assert store.created
        assert store.count() == 0
    finally:
        store.close()
    keys_name = fresh_name("created_keys")
    keys = open_key_store(SITE, pg_server.url(keys_name), create=True, create_database=True)
    keys.close()
    assert database_exists(pg_server, keys_name)


def test_concurrent_opens_of_a_new_database_migrate_once(
    pg_server: PgServer, fresh_name: Callable[[str], str]
) -> None:
    url = pg_server.url(fresh_name("racing"))
    stores: list[SiteStore] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def opener() -> None:
        try:
            s = open_site_store(SITE, url, create=True, create_database=True)
            with lock:
                stores.append(s)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert not failures, failures
        assert len(stores) == 6
        append(stores[0], 1)
        assert len(list(stores[-1].audit())) == 1
    finally:
        for s in stores:
            s.close()


def test_errors_never_show_the_password(pg_server: PgServer) -> None:
    secret = "s3cr3t-Pa55"
    urls = [
        f"postgresql://postgres:{secret}@127.0.0.1:{free_port()}/nowhere",
        f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere?password={secret}",
        # a live server (trust auth ignores the password) without that database
        pg_server.url(pg_server.new_name("never")).replace("postgres@", f"postgres:{secret}@"),
    ]
    for url in urls:
        for opener in (open_site_store, open_key_store):
            with pytest.raises((SiteUnavailable, psycopg.Error)) as info:
                opener(SITE, url, create=False)
            assert isinstance(info.value, SiteUnavailable), info.value
            exc = info.value
            for text in (str(exc), repr(exc), repr(exc.to_dict()), str(exc.__cause__)):
                assert secret not in text
    assert secret not in pg_store.PostgresSiteStore(SITE, urls[0]).display_url
    assert secret not in pg_store.PostgresSiteStore(SITE, urls[1]).display_url


def test_a_malformed_url_is_unavailable_not_a_driver_error() -> None:
    with pytest.raises(SiteUnavailable, match="malformed"):
        open_site_store(SITE, "postgresql://postgres@127.0.0.1:5432/x?nonsense_option=1")


def test_a_read_only_database_refuses_writes(
    pg_server: PgServer, pg_database: Callable[[str], str]
) -> None:
    site_url, key_url = pg_database("ro_site"), pg_database("ro_keys")
    store = open_site_store(SITE, site_url, create=True)
    keys = open_key_store(SITE, key_url, create=True)
    with store.transaction() as tx:
        tx.insert([record("r1")])
    keys.put_many([("a", WrappedKey(1, b"ka"))])
    store.close()
    keys.close()
    for url in (site_url, key_url):
        name = sql.Identifier(url.rsplit("/", 1)[1])
        with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(name)
            )

    store, keys = open_site_store(SITE, site_url), open_key_store(SITE, key_url)
    try:
        assert store.get("r1") == record("r1")  # reads still work
        assert keys.get("a") == WrappedKey(1, b"ka")
        with pytest.raises(SiteUnavailable, match="read-only"), store.transaction() as tx:
            tx.audit_head()
        with pytest.raises(SiteUnavailable, match="read-only"), store.transaction() as tx:
            tx.insert([record("r2")])
        for write in (
            lambda: keys.put_many([("b", WrappedKey(1, b"kb"))]),
            lambda: keys.delete("a"),
            lambda: keys.rewrap("a", WrappedKey(1, b"ka"), WrappedKey(2, b"x")),
        ):
            with pytest.raises(SiteUnavailable, match="read-only"):
                write()
        assert store.count() == 1
        assert keys.get("a") == WrappedKey(1, b"ka")
    finally:
        store.close()
        keys.close()


def test_a_read_only_database_without_a_schema_cannot_be_prepared(
    pg_server: PgServer, pg_database: Callable[[str], str]
) -> None:
    url = pg_database("ro_empty")
    name = sql.Identifier(url.rsplit("/", 1)[1])
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(name)
        )
    with pytest.raises(SiteUnavailable, match="cannot prepare"):
        open_site_store(SITE, url, create=True)


def test_the_audit_head_row_tracks_the_last_appended_row(store: SiteStore) -> None:
    assert raw(store.url, "SELECT seq, hash FROM audit_head") == [(0, b"")]
    rows = append(store, 3)
    assert raw(store.url, "SELECT seq, hash FROM audit_head") == [(3, rows[-1].hash)]


def test_a_missing_audit_head_row_is_rebuilt_from_the_chain(store: SiteStore) -> None:
    rows = append(store, 3)
    raw(store.url, "DELETE FROM audit_head")
    with store.transaction() as tx:
        assert tx.audit_head() == (3, rows[-1].hash)
        tx.append_audit(chain_after((3, rows[-1].hash), 1))
    assert_chain(list(store.audit()))


def test_the_ledger_is_read_in_pages(store: SiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pg_store, "AUDIT_PAGE", 4)
    queries: list[str] = []
    read = store._read  # type: ignore[attr-defined]

    def counting(query: str, args: Any = ()) -> Any:
        queries.append(query)
        return read(query, args)

    monkeypatch.setattr(store, "_read", counting)
    append(store, 10)
    stream = store.audit(2)
    first = next(stream)
    assert first.seq == 2
    assert len(queries) == 1  # only the first page so far
    assert [r.seq for r in stream] == list(range(3, 11))
    assert len(queries) == 3  # 2-5, 6-9, 10
    queries.clear()
    assert [r.seq for r in store.audit(3)] == list(range(3, 11))
    assert len(queries) == 3  # 3-6, 7-10, and an empty page to be sure


def test_a_dropped_connection_is_replaced_on_the_next_call(
    pg_server: PgServer, store: SiteStore
) -> None:
    with store.transaction() as tx:
        tx.insert([record("r1")])
    terminate(pg_server, store.url)
    assert store.count() == 1  # reads retry once on a fresh connection
    terminate(pg_server, store.url)
    with store.transaction() as tx:  # so does the BEGIN of a write
        tx.insert([record("r2")])
    assert store.count() == 2
    assert store.ping()


def test_a_connection_lost_inside_a_transaction_is_unavailable_and_writes_nothing(
    pg_server: PgServer, store: SiteStore
) -> None:
    def write_across_the_loss() -> None:
        with store.transaction() as tx:
            tx.insert([record("r1")])
            terminate(pg_server, store.url)
            tx.index([IndexEntry(digest("e"), "r1")])

    with pytest.raises(SiteUnavailable):
        write_across_the_loss()
    assert store.count() == 0
    assert store.lookup(digest("e")) == []
    with store.transaction() as tx:
        tx.insert([record("r1")])
    assert store.count() == 1


def test_a_failed_statement_caught_inside_a_transaction_does_not_commit(
    store: SiteStore,
) -> None:
    with store.transaction() as tx:
        tx.insert([record("r1")])

    def swallow_an_error() -> None:
        with store.transaction() as tx:
            tx.insert([record("r2")])
            with pytest.raises(psycopg.errors.UniqueViolation):
                tx.insert([record("r1")])

    with pytest.raises(SiteUnavailable, match="did not commit"):
        swallow_an_error()
    assert store.count() == 1
    assert store.get("r2") is None


def test_the_key_store_reconnects_too(pg_server: PgServer, key_url_store: KeyStore) -> None:
    keys = key_url_store
    keys.put_many([("a", WrappedKey(1, b"ka"))])
    terminate(pg_server, keys.url)
    assert keys.get("a") == WrappedKey(1, b"ka")
    terminate(pg_server, keys.url)
    assert keys.delete("a") is True


@pytest.fixture
def key_url_store(pg_database: Callable[[str], str]) -> Iterator[KeyStore]:
    keys = open_key_store(SITE, pg_database("keys"), create=True)
    yield keys
    keys.close()
