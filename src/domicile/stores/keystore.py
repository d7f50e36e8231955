"""Key stores: where each subject's wrapped data key lives, apart from the site's data.

A backup or copy of a site's database holds only sealed values; without the subject's
data key, which lives here, they cannot be opened. Erasing a subject deletes its key here
first (crypto-shredding), which makes every copy of its data unreadable at once.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import NamedTuple

from domicile.stores.schema import KEY_MIGRATIONS
from domicile.stores.sqlite import SqliteDatabase


class WrappedKey(NamedTuple):
    """A subject's data key as the key store keeps it: wrapped under the site's
    key-encryption key of this version."""

    kek_version: int
    wrapped: bytes


class KeyStore(ABC):
    backend: str

    # What ``open`` found: the store's creation id and whether this open created it.
    creation_id: str | None = None
    created: bool = False

    def __init__(self, site_id: str, url: str) -> None:
        self.site_id = site_id
        self.url = url

    @abstractmethod
    def open(
        self,
        *,
        create: bool = False,
        creation_id: str | None = None,
        read_only: bool = False,
        adopt: bool = False,
        create_database: bool = False,
    ) -> None:
        """As ``SiteStore.open`` (see ``open_site_store``)."""

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
        self._db = SqliteDatabase(site_id, url, "key", KEY_MIGRATIONS["sqlite"], "its key store")
        self.path = self._db.path

    def open(
        self,
        *,
        create: bool = False,
        creation_id: str | None = None,
        read_only: bool = False,
        adopt: bool = False,
        create_database: bool = False,
    ) -> None:
        self.creation_id, self.created = self._db.open(
            create=create, creation_id=creation_id, read_only=read_only, adopt=adopt
        )

    def close(self) -> None:
        self._db.close()

    @property
    def conn(self) -> sqlite3.Connection:
        return self._db.conn

    def ping(self) -> bool:
        return self._db.ping()

    def get(self, subject_id: str) -> WrappedKey | None:
        rows = self._db.read(
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
            rows = self._db.read(
                "SELECT subject_id, kek_version, wrapped FROM subject_keys"
                f" WHERE subject_id IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            out.update((str(s), WrappedKey(int(v), bytes(w))) for s, v, w in rows)
        return out

    def put_many(self, keys: Sequence[tuple[str, WrappedKey]]) -> None:
        now = _now()
        # bytearray: bound as a BLOB without sqlite3's adapter lookup (``sqlite.INSERT_PRIMARIES``)
        rows = [(sid, k.kek_version, bytearray(k.wrapped), now) for sid, k in keys]
        self._db.write(
            lambda c: c.executemany("INSERT INTO subject_keys VALUES (?, ?, ?, ?)", rows)
        )

    def delete(self, subject_id: str) -> bool:
        deleted = self._db.write(
            lambda c: c.execute("DELETE FROM subject_keys WHERE subject_id = ?", (subject_id,))
        ).rowcount
        # Push the deletion out of the write-ahead log into the (overwritten) main file.
        self._db.read("PRAGMA wal_checkpoint(TRUNCATE)")
        return deleted > 0

    def stale(self, current_version: int, limit: int) -> list[tuple[str, WrappedKey]]:
        rows = self._db.read(
            "SELECT subject_id, kek_version, wrapped FROM subject_keys WHERE kek_version != ? LIMIT ?",
            (current_version, limit),
        )
        return [(str(s), WrappedKey(int(v), bytes(w))) for s, v, w in rows]

    def rewrap(self, subject_id: str, old: WrappedKey, new: WrappedKey) -> bool:
        cur = self._db.write(
            lambda c: c.execute(
                "UPDATE subject_keys SET kek_version = ?, wrapped = ? WHERE subject_id = ? AND wrapped = ?",
                (new.kek_version, new.wrapped, subject_id, old.wrapped),
            )
        )
        return cur.rowcount == 1

    def versions(self) -> dict[int, int]:
        rows = self._db.read("SELECT kek_version, count(*) FROM subject_keys GROUP BY kek_version")
        return {int(v): int(n) for v, n in rows}
