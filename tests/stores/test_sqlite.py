"""The SQLite stores against the shared contract."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any, ClassVar

import pytest

from domicile.stores import WrappedKey, open_key_store, open_site_store
from domicile.stores.base import SiteUnavailable
from domicile.stores.sqlite import sqlite_path

from .contract import KeyStoreContract, SiteStoreContract, record


class SqliteBackend:
    backend: ClassVar[str] = "sqlite"
    raw_error: ClassVar[type[BaseException]] = sqlite3.Error
    duplicate_error: ClassVar[type[BaseException]] = sqlite3.IntegrityError

    def raw(self, url: str, query: str) -> list[tuple[Any, ...]]:
        with closing(sqlite3.connect(sqlite_path(url), isolation_level=None)) as conn:
            return conn.execute(query).fetchall()

    def tables(self, url: str) -> list[tuple[Any, ...]]:
        return self.raw(url, "SELECT name FROM sqlite_master WHERE type = 'table'")

    @pytest.fixture
    def site_url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path}/sites/ru.db"

    @pytest.fixture
    def key_url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path}/keys/ru.db"

    @pytest.fixture
    def empty_url(self, tmp_path: Path) -> str:
        path = tmp_path / "empty.db"
        with closing(sqlite3.connect(path)) as conn:
            conn.execute("CREATE TABLE unrelated (a INTEGER)")
        return f"sqlite:///{path}"

    @pytest.fixture
    def unreachable_url(self, tmp_path: Path) -> str:
        blocker = tmp_path / "not-a-directory"
        blocker.write_text("a file where the store's directory should be")
        return f"sqlite:///{blocker}/ru.db"


class TestSqliteSiteStore(SqliteBackend, SiteStoreContract):
    pass


class TestSqliteKeyStore(SqliteBackend, KeyStoreContract):
    pass


def test_a_file_moved_away_or_replaced_while_open_takes_no_more_writes(tmp_path: Path) -> None:
    """The open connection still reaches the moved file (a ghost): domicile notices and
    refuses, instead of writing where nobody will look, or creating a new file."""
    path = tmp_path / "ru.db"
    store = open_site_store("ru", f"sqlite:///{path}", create=True)
    try:
        assert store.ping()
        path.rename(tmp_path / "elsewhere.db")
        assert not store.ping()
        with (
            pytest.raises(SiteUnavailable, match="moved, replaced or deleted"),
            store.transaction() as tx,
        ):
            tx.insert([record("r1")])
        assert not path.exists()
        path.write_bytes((tmp_path / "elsewhere.db").read_bytes())  # a copy put in its place
        assert not store.ping()  # not the file that was opened
    finally:
        store.close()


def test_a_key_store_deleted_while_open_answers_no_more_reads(tmp_path: Path) -> None:
    """A read from a deleted key store must not answer from the ghost, and after it must
    not say "no key" (which would read as erased): the site is unavailable."""
    path = tmp_path / "keys.db"
    keys = open_key_store("ru", f"sqlite:///{path}", create=True)
    try:
        keys.put_many([("a", WrappedKey(1, b"ka"))])
        for f in tmp_path.glob("keys.db*"):
            f.unlink()
        for read in (lambda: keys.get("a"), lambda: keys.get_many(["a"]), keys.versions):
            with pytest.raises(SiteUnavailable, match="moved, replaced or deleted"):
                read()
        assert not path.exists()
    finally:
        keys.close()


def _writing(store: Any, then: Callable[[], None]) -> tuple[threading.Thread, threading.Event]:
    """A thread inside a write transaction of ``store`` (one record written, not yet
    committed; ``then`` run inside it), until the returned event is set."""
    inside, finish = threading.Event(), threading.Event()

    def write() -> None:
        with store.transaction() as tx:
            tx.insert([record("r2")])
            then()
            inside.set()
            finish.wait(20)

    thread = threading.Thread(target=write)
    thread.start()
    assert inside.wait(20)
    return thread, finish


def test_reads_do_not_wait_for_a_write_and_see_only_what_is_committed(tmp_path: Path) -> None:
    """WAL lets a read go on beside a write: a reader thread is not held up by another
    thread's transaction (it reads on a connection of its own) and does not see its
    uncommitted rows; the writing thread sees its own."""
    store = open_site_store("ru", f"sqlite:///{tmp_path}/ru.db", create=True)
    seen: list[object] = []
    try:
        with store.transaction() as tx:
            tx.insert([record("r1")])
        thread, finish = _writing(store, lambda: seen.append(store.get("r2")))
        try:
            start = time.monotonic()
            assert store.get("r1") is not None
            assert store.get_for_read("r2") == (None, [])
            assert time.monotonic() - start < 10  # not after the writer's 20 s wait
        finally:
            finish.set()
            thread.join(20)
        assert len(seen) == 1
        assert seen[0] is not None  # the writer read its own write
        assert store.get("r2") is not None
    finally:
        store.close()
    with pytest.raises(SiteUnavailable):
        store.get("r1")


def test_a_reader_connection_is_never_opened_on_a_file_put_in_the_stores_place(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ru.db"
    store = open_site_store("ru", f"sqlite:///{path}", create=True)
    other = open_site_store("ru", f"sqlite:///{tmp_path}/other.db", create=True)
    other.close()
    try:
        with store.transaction() as tx:
            tx.insert([record("r1")])

        def swap() -> None:  # while the connection of writes is busy
            path.rename(tmp_path / "moved.db")
            (tmp_path / "other.db").rename(path)

        thread, finish = _writing(store, swap)
        try:
            with pytest.raises(SiteUnavailable):
                store.get("r1")
        finally:
            finish.set()
            thread.join(20)
    finally:
        store.close()
