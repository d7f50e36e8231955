"""The SQLite stores against the shared contract."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any, ClassVar

import pytest

from domicile.stores.sqlite import sqlite_path

from .contract import KeyStoreContract, SiteStoreContract


class SqliteBackend:
    backend: ClassVar[str] = "sqlite"
    raw_error: ClassVar[type[BaseException]] = sqlite3.Error
    duplicate_error: ClassVar[type[BaseException]] = sqlite3.IntegrityError

    def raw(self, url: str, query: str) -> list[tuple[Any, ...]]:
        with closing(sqlite3.connect(sqlite_path(url), isolation_level=None)) as conn:
            return conn.execute(query).fetchall()

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
