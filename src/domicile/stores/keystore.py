"""Key stores: where each subject's wrapped data key lives, apart from the site's data.

A backup or copy of a site's database holds only sealed values; without the subject's
data key, which lives here, they cannot be opened. Erasing a subject deletes its key here
first (crypto-shredding), which makes every copy of its data unreadable at once.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from domicile.stores.base import SiteUnavailable
from domicile.stores.schema import KEY_MIGRATIONS
from domicile.stores.sqlite import connect, migrate, sqlite_path


@dataclass(frozen=True)
class WrappedKey:
    kek_version: int
    wrapped: bytes


class KeyStore(ABC):
    backend: str

    def __init__(self, site_id: str, url: str) -> None:
        self.site_id = site_id
        self.url = url

    @abstractmethod
    def open(self, *, create: bool = True) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def ping(self) -> bool: ...

    @abstractmethod
    def get(self, subject_id: str) -> WrappedKey | None: ...

    def get_many(self, subject_ids: Sequence[str]) -> dict[str, WrappedKey]:
        """The keys of those subjects that have one. Backends override with one query."""
        out = {}
        for sid in subject_ids:
            key = self.get(sid)
            if key is not None:
                out[sid] = key
        return out

    @abstractmethod
    def put_many(self, keys: Sequence[tuple[str, WrappedKey]]) -> None:
        """Store new subjects' keys (committed before any data sealed with them)."""

    @abstractmethod
    def delete(self, subject_id: str) -> bool:
        """Destroy a subject's key; True if there was one."""

    @abstractmethod
    def stale(self, current_version: int, limit: int) -> list[tuple[str, WrappedKey]]:
        """Up to ``limit`` keys wrapped with an older key-encryption key."""

    @abstractmethod
    def rewrap(self, subject_id: str, old: WrappedKey, new: WrappedKey) -> bool:
        """Replace ``old`` with ``new`` if the stored key is still ``old``."""

    @abstractmethod
    def versions(self) -> dict[int, int]:
        """How many keys are wrapped with each key-encryption key version."""


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


class SqliteKeyStore(KeyStore):
    backend = "sqlite"

    def __init__(self, site_id: str, url: str) -> None:
        super().__init__(site_id, url)
        self.path = sqlite_path(url)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()

    def open(self, *, create: bool = True) -> None:
        conn = connect(self.path, self.site_id, create=create)
        try:
            migrate(conn, self.site_id, "key", KEY_MIGRATIONS["sqlite"], create=create)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise SiteUnavailable(self.site_id, "its key store is closed")
        return self._conn

    def ping(self) -> bool:
        try:
            with self._lock:
                self.conn.execute("SELECT 1").fetchone()
        except (sqlite3.Error, SiteUnavailable):
            return False
        return self.path.is_file()

    def _run(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self.conn.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise SiteUnavailable(self.site_id, f"its key store failed ({exc})") from None

    def get(self, subject_id: str) -> WrappedKey | None:
        rows = self._run(
            "SELECT kek_version, wrapped FROM subject_keys WHERE subject_id = ?", (subject_id,)
        )
        if not rows:
            return None
        version, wrapped = rows[0]
        return WrappedKey(int(version), bytes(wrapped))

    def get_many(self, subject_ids: Sequence[str]) -> dict[str, WrappedKey]:
        out: dict[str, WrappedKey] = {}
        ids = list(dict.fromkeys(subject_ids))
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            rows = self._run(
                "SELECT subject_id, kek_version, wrapped FROM subject_keys"
                f" WHERE subject_id IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            out.update((str(s), WrappedKey(int(v), bytes(w))) for s, v, w in rows)
        return out

    def put_many(self, keys: Sequence[tuple[str, WrappedKey]]) -> None:
        now = _now()
        with self._lock:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                self.conn.executemany(
                    "INSERT INTO subject_keys VALUES (?, ?, ?, ?)",
                    [(sid, k.kek_version, k.wrapped, now) for sid, k in keys],
                )
                self.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise SiteUnavailable(self.site_id, f"its key store failed ({exc})") from None

    def delete(self, subject_id: str) -> bool:
        with self._lock:
            try:
                cur = self.conn.execute(
                    "DELETE FROM subject_keys WHERE subject_id = ?", (subject_id,)
                )
                # Push the deletion out of the write-ahead log into the (overwritten) main file.
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                raise SiteUnavailable(self.site_id, f"its key store failed ({exc})") from None
            return cur.rowcount > 0

    def stale(self, current_version: int, limit: int) -> list[tuple[str, WrappedKey]]:
        rows = self._run(
            "SELECT subject_id, kek_version, wrapped FROM subject_keys WHERE kek_version != ? LIMIT ?",
            (current_version, limit),
        )
        return [(str(s), WrappedKey(int(v), bytes(w))) for s, v, w in rows]

    def rewrap(self, subject_id: str, old: WrappedKey, new: WrappedKey) -> bool:
        with self._lock:
            try:
                cur = self.conn.execute(
                    "UPDATE subject_keys SET kek_version = ?, wrapped = ? WHERE subject_id = ? AND wrapped = ?",
                    (new.kek_version, new.wrapped, subject_id, old.wrapped),
                )
            except sqlite3.Error as exc:
                raise SiteUnavailable(self.site_id, f"its key store failed ({exc})") from None
            return cur.rowcount == 1

    def versions(self) -> dict[int, int]:
        rows = self._run("SELECT kek_version, count(*) FROM subject_keys GROUP BY kek_version")
        return {int(v): int(n) for v, n in rows}


def open_key_store(site_id: str, url: str, *, create: bool = True) -> KeyStore:
    if url.startswith("sqlite:"):
        store: KeyStore = SqliteKeyStore(site_id, url)
    elif url.startswith(("postgresql://", "postgres://")):
        from domicile.stores.postgres import PostgresKeyStore

        store = PostgresKeyStore(site_id, url)
    else:
        raise ValueError(f"unsupported key store URL for site {site_id!r}")
    store.open(create=create)
    return store
