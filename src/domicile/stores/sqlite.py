"""SQLite site store: the embedded default. One database file per site.

WAL journal with ``synchronous=NORMAL``: a committed transaction survives a crash of the
application; a power cut may lose the last moments of commits but never corrupts the file.
``secure_delete`` overwrites deleted rows, so erased data does not linger in free pages.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from domicile.files import create_private, private_dir, tighten
from domicile.stores.base import (
    BLOCK_COLUMNS,
    READ_ORDER,
    READ_SQL,
    RECORD_COLUMNS,
    AuditRow,
    Checkpoint,
    HeadRow,
    IndexEntry,
    NoSchema,
    OutboxItem,
    SiteStore,
    SiteUnavailable,
    StoredRecord,
    StoreMissing,
    StoreTransaction,
    SubjectBlock,
    TransferCount,
    VersionConflict,
    WitnessRow,
    entry_hash,
    new_creation_id,
    record_and_blocks,
)
from domicile.stores.schema import (
    SITE_MIGRATIONS,
    check_creation,
    check_current,
    check_meta,
    label,
)

T = TypeVar("T")

# Reader connections a site keeps open between reads (more are made when more threads
# read at once, and closed when given back beyond this).
IDLE_READERS = 8


def sqlite_path(url: str) -> Path:
    return Path(re.sub(r"^sqlite:(//)?", "", url))


def connect(
    path: Path, site: str, *, create: bool, read_only: bool = False, label: str = "its database"
) -> tuple[sqlite3.Connection, bool]:
    """A connection to the file at ``path``, and whether this call created the file.

    Only ``create`` (setup) makes the file, mode 0600 in a folder of mode 0700, before
    SQLite opens it; every other open uses ``mode=rw``, so SQLite never creates a missing
    file behind our back (a moved-away database is an unavailable site, not a new one)."""
    made = False
    try:
        if create:
            private_dir(path.parent)
            made = create_private(path)
        elif not path.exists():
            raise StoreMissing(site, f"{label} file is missing")
        conn = sqlite3.connect(
            path.resolve().as_uri() + "?mode=rw",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
            timeout=30,
        )
        if read_only:
            conn.execute("PRAGMA query_only=ON")  # refuse every write on this connection
        else:
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA secure_delete=ON")
        conn.execute("PRAGMA foreign_keys=ON")
    except (sqlite3.Error, OSError) as exc:
        raise SiteUnavailable(site, f"cannot open {label} ({exc.__class__.__name__})") from None
    return conn, made


def _meta(conn: sqlite3.Connection) -> dict[str, str] | None:
    """The ``meta`` table's rows, or None when the database has no such table."""
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'")
    if found.fetchone() is None:
        return None
    return {str(k): str(v) for k, v in conn.execute("SELECT key, value FROM meta").fetchall()}


def migrate(
    conn: sqlite3.Connection,
    site: str,
    kind: str,
    migrations: dict[int, list[str]],
    *,
    create: bool,
    creation_id: str | None = None,
    read_only: bool = False,
    adopt: bool = False,
) -> tuple[str | None, bool]:
    """Bring the schema to the newest version; refuse a newer or foreign database, or one
    whose creation id is not ``creation_id``. Returns the store's creation id and whether
    this call created the store. Writes nothing when the store is up to date, and never
    when ``read_only``."""
    newest = max(migrations)
    if read_only:
        meta = _meta(conn)
        if meta is None:
            raise NoSchema(site, f"{label(kind)} has no domicile schema")
        check_current(meta, site, kind, newest)
        check_creation(meta, site, kind, creation_id)
        return meta.get("creation_id"), False
    conn.execute("BEGIN IMMEDIATE")
    try:
        meta = _meta(conn) or {}
        current = check_meta(meta, site, kind, newest)
        created = current == 0
        if created:
            if not create:
                raise NoSchema(site, f"{label(kind)} has no domicile schema")
            others = conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
                " AND name != 'meta' AND name NOT LIKE 'sqlite_%'"
            ).fetchone()[0]
            if others:
                raise NoSchema(
                    site,
                    f"{label(kind)} holds tables that are not domicile's",
                    hint="give the site a new, empty database",
                )
        cid = meta.get("creation_id")
        if created or (adopt and cid is None):
            cid = new_creation_id()
        elif not adopt:
            check_creation(meta, site, kind, creation_id)
        wanted = {"schema_version": str(newest), "site": site, "kind": kind, "creation_id": cid}
        changes = {k: v for k, v in wanted.items() if v is not None and meta.get(k) != v}
        if changes:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            for version in range(current + 1, newest + 1):
                for stmt in migrations[version]:
                    conn.execute(stmt)
            conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(changes.items()))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return cid, created


# sqlite3 binds str, int, float and bytearray values as they are; any other (bytes, None)
# first goes through its adapter lookup, which misses by raising and clearing an
# AttributeError: about a microsecond a value. So the writes of a batch bind blobs as
# bytearray (stored the same: a BLOB) and leave NULL columns out.
INSERT_PRIMARIES = (
    "INSERT INTO records (record_id, subject_id, collection, version, created_at, updated_at,"
    " fields) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


class _Tx(StoreTransaction):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.c = conn

    def insert(self, records: Sequence[StoredRecord]) -> None:
        if all(r.primary_site is None for r in records):  # primaries: no NULL to bind
            self.c.executemany(
                INSERT_PRIMARIES,
                [
                    (r.record_id, r.subject_id, r.collection, r.version, r.created_at,
                     r.updated_at, bytearray(r.body))
                    for r in records
                ],
            )  # fmt: skip
            return
        self.c.executemany(
            f"INSERT INTO records ({RECORD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [r.row() for r in records],
        )

    def replace(self, record: StoredRecord, expect_version: int) -> None:
        cur = self.c.execute(
            "UPDATE records SET version = ?, updated_at = ?, fields = ? WHERE record_id = ? AND version = ?",
            (
                record.version,
                record.updated_at,
                record.body,
                record.record_id,
                expect_version,
            ),
        )
        if cur.rowcount != 1:
            raise VersionConflict(
                "the record changed since it was read", hint="read it again and retry"
            )

    def delete(self, record_ids: Sequence[str]) -> int:
        ids = [(r,) for r in record_ids]
        self.c.executemany("DELETE FROM digests WHERE record_id = ?", ids)
        before = self.c.total_changes
        self.c.executemany("DELETE FROM records WHERE record_id = ?", ids)
        return self.c.total_changes - before

    # A SQLite write holds the whole database (BEGIN IMMEDIATE): holding a subject needs no
    # lock of its own, only a look at the erasures.
    def hold_subjects(self, subject_ids: Sequence[str]) -> set[str]:
        ids = list(dict.fromkeys(subject_ids))
        out: set[str] = set()
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            rows = self.c.execute(
                "SELECT subject_id FROM erased_subjects"
                f" WHERE subject_id IN ({','.join('?' * len(chunk))})",
                chunk,
            ).fetchall()
            out.update(str(r[0]) for r in rows)
        return out

    def erase_subject(self, subject_id: str, erased_at: str) -> int:
        self.c.execute(
            "DELETE FROM digests WHERE record_id IN"
            " (SELECT record_id FROM records WHERE subject_id = ?)",
            (subject_id,),
        )
        cur = self.c.execute("DELETE FROM records WHERE subject_id = ?", (subject_id,))
        count = cur.rowcount
        self.c.execute(
            "DELETE FROM subject_blocks WHERE subject_id = ? AND kind <> 'withdrawal'",
            (subject_id,),
        )
        self.c.execute(
            "INSERT INTO erased_subjects VALUES (?, ?) ON CONFLICT DO NOTHING",
            (subject_id, erased_at),
        )
        return max(count, 0)

    def block(self, block: SubjectBlock) -> bool:
        cur = self.c.execute(
            f"INSERT INTO subject_blocks ({BLOCK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            block.row(),
        )
        return cur.rowcount == 1

    def unblock(self, subject_id: str, kind: str, request_id: str) -> bool:
        cur = self.c.execute(
            "DELETE FROM subject_blocks WHERE subject_id = ? AND kind = ? AND request_id = ?",
            (subject_id, kind, request_id),
        )
        return cur.rowcount == 1

    def index(self, entries: Iterable[IndexEntry]) -> None:
        self.c.executemany(
            "INSERT OR IGNORE INTO digests VALUES (?, ?)",
            [(bytearray(digest), record_id) for digest, record_id in entries],
        )

    def unindex(self, record_id: str) -> None:
        self.c.execute("DELETE FROM digests WHERE record_id = ?", (record_id,))

    def audit_head(self) -> tuple[int, bytes]:
        row = self.c.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        return (int(row[0]), bytes(row[1])) if row else (0, b"")

    def append_audit(self, rows: Sequence[AuditRow]) -> None:
        if len(rows) == 1:
            r = rows[0]
            self.c.execute(
                "INSERT INTO audit VALUES (?, ?, ?, ?)", (r.seq, r.payload, r.prev_hash, r.hash)
            )
            return
        self.c.executemany(
            "INSERT INTO audit VALUES (?, ?, ?, ?)",
            [(r.seq, r.payload, r.prev_hash, r.hash) for r in rows],
        )

    def enqueue(self, items: Sequence[tuple[str, str, str, str]]) -> None:
        now = _now()
        self.c.executemany(
            "INSERT INTO outbox (record_id, subject_id, target_site, op, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            [(*item, now) for item in items],
        )

    def dequeue(self, seqs: Sequence[int]) -> None:
        self.c.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])

    def dequeue_erasures(self, subject_id: str, target_sites: Sequence[str]) -> None:
        self.c.executemany(
            "DELETE FROM outbox WHERE op = 'erase' AND subject_id = ? AND target_site = ?",
            [(subject_id, t) for t in target_sites],
        )

    def put_replica(self, record: StoredRecord) -> bool:
        cur = self.c.execute(PUT_REPLICA, record.row())
        return cur.rowcount == 1

    def put_replicas(self, records: Sequence[StoredRecord]) -> list[bool]:
        """Which rows will change is read first (the transaction holds the write lock, so
        nothing changes in between), then those rows go in with one ``executemany``."""
        ids = [r.record_id for r in records]
        if len(records) < 2 or len(set(ids)) != len(ids):
            return [self.put_replica(r) for r in records]
        existing: dict[str, tuple[int, str | None]] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            for rid, version, primary in self.c.execute(
                "SELECT record_id, version, primary_site FROM records"
                f" WHERE record_id IN ({','.join('?' * len(chunk))})",
                chunk,
            ):
                existing[rid] = (version, primary)
        changed = []
        for r in records:  # the condition of PUT_REPLICA's upsert
            old = existing.get(r.record_id)
            changed.append(old is None or (old[1] is not None and old[0] < r.version))
        rows = [r.row() for r, change in zip(records, changed, strict=True) if change]
        if rows:
            before = self.c.total_changes
            self.c.executemany(PUT_REPLICA, rows)
            if self.c.total_changes - before != len(rows):
                raise VersionConflict("replicas changed while they were written", hint="retry")
        return changed

    def count_transfer(self, year: int, to_country: str, subject_id: str, sensitive: bool) -> None:
        self.c.execute(COUNT_TRANSFER, (year, to_country, subject_id, int(sensitive)))

    def count_transfers(self, counts: Sequence[TransferCount]) -> None:
        self.c.executemany(
            COUNT_TRANSFER,
            [(c.year, c.to_country, c.subject_id, int(c.sensitive)) for c in counts],
        )

    def add_checkpoint(self, checkpoint: Checkpoint) -> None:
        cp = checkpoint
        self.c.execute(
            "INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?)",
            (cp.seq, cp.hash, cp.signed_at, cp.signature),
        )

    def audit_rows(self, start: int, end: int) -> list[AuditRow]:
        rows = self.c.execute(
            "SELECT seq, payload, prev_hash, hash FROM audit WHERE seq BETWEEN ? AND ? ORDER BY seq",
            (start, end),
        ).fetchall()
        return [AuditRow(int(q), str(p), bytes(v), bytes(h)) for q, p, v, h in rows]

    def latest_head(self) -> HeadRow | None:
        row = self.c.execute(
            "SELECT size, root, signed_at, signature, compact FROM tree_heads"
            " ORDER BY size DESC LIMIT 1"
        ).fetchone()
        return _head(row) if row else None

    def add_head(self, head: HeadRow) -> bool:
        cur = self.c.execute(
            "INSERT INTO tree_heads VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (head.size, head.root, head.signed_at, head.signature, head.compact),
        )
        return cur.rowcount == 1

    def add_tree_nodes(self, nodes: Sequence[tuple[int, int, bytes]]) -> None:
        self.c.executemany("INSERT INTO tree_nodes VALUES (?, ?, ?) ON CONFLICT DO NOTHING", nodes)

    def latest_witnessed(self, site: str) -> WitnessRow | None:
        row = self.c.execute(
            f"SELECT {WITNESS_COLUMNS} FROM witnessed WHERE site = ? ORDER BY size DESC LIMIT 1",
            (site,),
        ).fetchone()
        return _witness(row) if row else None

    def add_witnessed(self, row: WitnessRow) -> None:
        self.c.execute(
            f"INSERT INTO witnessed ({WITNESS_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            (row.site, row.size, row.root, row.signed_at, row.signature, row.seq),
        )

    def keep_reply(
        self, peer: str, op: str, key: bytes, status: int, answer: str, expires: float, now: float
    ) -> None:
        self.c.execute("DELETE FROM node_replies WHERE expires < ?", (now,))
        self.c.execute(
            "INSERT INTO node_replies VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (peer, op, key, status, answer, expires),
        )


PUT_REPLICA = (
    f"INSERT INTO records ({RECORD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (record_id) DO UPDATE SET version = excluded.version,"
    " updated_at = excluded.updated_at, fields = excluded.fields"
    " WHERE records.version < excluded.version AND records.primary_site IS NOT NULL"
)
# A subject counted already is rewritten only when the transfer makes it a sensitive one.
COUNT_TRANSFER = (
    "INSERT INTO transfer_subjects VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE"
    " SET sensitive = 1 WHERE excluded.sensitive > sensitive"
)


def _record(row: tuple[Any, ...]) -> StoredRecord:
    rid, sid, coll, version, created, updated, blob, primary = row
    return StoredRecord(
        str(rid), str(sid), str(coll), int(version), str(created), str(updated),
        bytes(blob), primary,
    )  # fmt: skip


WITNESS_COLUMNS = "site, size, root, signed_at, signature, seq"


def _head(row: tuple[Any, ...]) -> HeadRow:
    size, root, signed_at, signature, *compact = row
    return HeadRow(int(size), bytes(root), str(signed_at), bytes(signature), *map(bytes, compact))


def _witness(row: tuple[Any, ...]) -> WitnessRow:
    site, size, root, signed_at, signature, seq = row
    return WitnessRow(str(site), int(size), bytes(root), str(signed_at), bytes(signature), int(seq))


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


class SqliteDatabase:
    """One SQLite file of a site (its data, or its subjects' keys): the connection, the
    lock that serializes its use across threads, the schema, and writes that either
    commit whole or leave nothing. ``label`` names the file in errors ("its database")."""

    def __init__(
        self, site_id: str, url: str, kind: str, migrations: dict[int, list[str]], label: str
    ) -> None:
        self.site_id = site_id
        self.path = sqlite_path(url)
        self.kind = kind
        self.migrations = migrations
        self.label = label
        self.lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None  # (device, inode) of the file opened
        # Key stores check their file before reads too: a read of a key from a key store
        # that was deleted must not answer from the ghost (nor say "erased" after it).
        self.check_reads = kind == "key"
        # A site's reads run on the connection of writes when it is free, otherwise on
        # read-only connections of their own (WAL lets readers and a writer work at once),
        # so concurrent readers wait neither for each other nor for a writer's
        # transaction: a read's select does not queue behind the audit entries of the
        # reads before it. (A thread inside its own transaction holds the lock, so it
        # still reads on that connection and sees its own writes.) Key stores keep to
        # one connection: their reads are rare and include the WAL checkpoint that
        # scrubs shredded keys, which must not run beside a write.
        self.apart = kind == "site"
        self._idle: list[sqlite3.Connection] = []
        self._opened = 0  # which open() the idle connections belong to
        self._creation_id: str | None = None

    def open(
        self,
        *,
        create: bool,
        creation_id: str | None = None,
        read_only: bool = False,
        adopt: bool = False,
    ) -> tuple[str | None, bool]:
        """Connect and check (or prepare) the schema; returns the store's creation id and
        whether this call created the store."""
        conn, made = connect(
            self.path, self.site_id, create=create, read_only=read_only, label=self.label
        )
        try:
            self._identity = self._stat()
            cid, created = migrate(
                conn, self.site_id, self.kind, self.migrations, create=create,
                creation_id=creation_id, read_only=read_only, adopt=adopt,
            )  # fmt: skip
        except sqlite3.Error as exc:
            conn.close()
            raise SiteUnavailable(self.site_id, f"cannot prepare {self.label} ({exc})") from None
        except BaseException:
            conn.close()
            if made:  # a file this call made for a store it could not create: take it back
                for leftover in (self.path, *self._sidecars()):
                    leftover.unlink(missing_ok=True)
            raise
        if made:
            for sidecar in self._sidecars():  # SQLite makes them like the file; to be sure
                tighten(sidecar)
        self._conn = conn
        self._creation_id = cid
        return cid, created

    def _sidecars(self) -> list[Path]:
        return [self.path.with_name(self.path.name + suffix) for suffix in ("-wal", "-shm")]

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def same_file(self) -> bool:
        """The path still names the file this connection opened. A file moved away,
        deleted or replaced leaves the connection writing into a ghost, so it is checked
        before every write and every read of a key store."""
        return self._identity is not None and self._stat() == self._identity

    def _check_file(self) -> None:
        if not self.same_file():
            raise SiteUnavailable(
                self.site_id, f"{self.label} file was moved, replaced or deleted while open"
            )

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise SiteUnavailable(self.site_id, f"{self.label} is closed")
        return self._conn

    def close(self) -> None:
        self._opened += 1  # connections lent out now are closed when given back
        idle, self._idle = self._idle, []
        for c in idle:
            c.close()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def ping(self) -> bool:
        # The file itself must still be there: a connection to a file that was removed or
        # replaced would write into a ghost.
        if self._conn is None or not self.same_file():
            return False
        try:
            with self.lock:
                self._conn.execute("SELECT 1 FROM meta LIMIT 1").fetchone()
        except sqlite3.Error:
            return False
        return True

    def read(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        if not self.lock.acquire(blocking=not self.apart):
            return self._read_apart(sql, args)  # the connection of writes is busy
        try:
            if self.check_reads:
                self._check_file()
            try:
                return self.conn.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise SiteUnavailable(self.site_id, f"cannot read {self.label} ({exc})") from None
        finally:
            self.lock.release()

    def _read_apart(self, sql: str, args: Sequence[object]) -> list[tuple[Any, ...]]:
        """``read`` on a reader connection (an idle one, else a new one)."""
        opened = self._opened
        try:
            conn = self._idle.pop()
        except IndexError:
            conn = self._reader()
        try:
            rows = conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            conn.close()
            raise SiteUnavailable(self.site_id, f"cannot read {self.label} ({exc})") from None
        except BaseException:
            conn.close()
            raise
        if opened == self._opened and len(self._idle) < IDLE_READERS:
            self._idle.append(conn)
        else:
            conn.close()
        return rows

    def _reader(self) -> sqlite3.Connection:
        """A new read-only connection to the file the connection of writes opened: the
        same file (device and inode) and the same store (creation id), else unavailable."""
        if self._conn is None:
            raise SiteUnavailable(self.site_id, f"{self.label} is closed")
        conn, _ = connect(self.path, self.site_id, create=False, read_only=True, label=self.label)
        try:
            self._check_file()
            meta = _meta(conn)
        except BaseException:
            conn.close()
            raise
        if meta is None or meta.get("creation_id") != self._creation_id:
            conn.close()
            raise SiteUnavailable(self.site_id, f"{self.label} file was replaced while open")
        return conn

    def begin(self) -> sqlite3.Connection:
        """Start a write; the caller holds ``lock`` until ``commit`` or ``rollback``."""
        conn = self.conn
        self._check_file()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise SiteUnavailable(
                self.site_id, f"cannot start a write to {self.label} ({exc})"
            ) from None
        return conn

    def commit(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self.rollback(conn)
            raise SiteUnavailable(
                self.site_id, f"the write to {self.label} did not commit ({exc})"
            ) from None

    @staticmethod
    def rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` in a transaction of its own: all of it is committed, or none of it."""
        with self.lock:
            conn = self.begin()
            try:
                result = fn(conn)
            except sqlite3.Error as exc:
                self.rollback(conn)
                raise SiteUnavailable(self.site_id, f"cannot write {self.label} ({exc})") from None
            except BaseException:
                self.rollback(conn)
                raise
            self.commit(conn)
            return result


# One audit entry chained after the head in a single statement, which commits on its own
# (autocommit) under the database's write lock: the hash is ``entry_hash``, computed in
# Python by the function the store registers on its connection (``_hash_one``), which also
# keeps the row it made. (An empty log gets its first entry the usual way.)
APPEND_ONE = (
    "INSERT INTO audit (seq, payload, prev_hash, hash)"
    " SELECT seq + 1, ?1, hash, domicile_entry_hash(hash, seq + 1, ?1)"
    " FROM audit ORDER BY seq DESC LIMIT 1"
)


class SqliteSiteStore(SiteStore):
    backend = "sqlite"

    def __init__(self, site_id: str, url: str) -> None:
        super().__init__(site_id, url)
        self._db = SqliteDatabase(site_id, url, "site", SITE_MIGRATIONS["sqlite"], "its database")
        self.path = self._db.path
        self._made: list[AuditRow] = []  # the row ``_hash_one`` made (under the lock)

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
        self._db.conn.create_function("domicile_entry_hash", 3, self._hash_one)

    def _hash_one(self, prev: bytes, seq: int, payload: str) -> bytes:
        digest = entry_hash(prev, seq, payload)
        self._made.append(AuditRow(seq, payload, prev, digest))
        return digest

    @property
    def conn(self) -> sqlite3.Connection:
        return self._db.conn

    def close(self) -> None:
        self._db.close()

    def ping(self) -> bool:
        return self._db.ping()

    @contextmanager
    def transaction(self) -> Iterator[StoreTransaction]:
        db = self._db
        with db.lock:
            conn = db.begin()
            try:
                yield _Tx(conn)
            except BaseException:
                db.rollback(conn)
                raise
            db.commit(conn)

    def _write(self, fn: Callable[[_Tx], T]) -> T:
        """``fn`` in a transaction of its own: ``transaction()`` without the context
        manager's overhead, for the one-entry writes of reads."""
        return self._db.write(lambda conn: fn(_Tx(conn)))

    def chain_now(self, payloads: Sequence[str], *, read: bool = False) -> list[AuditRow]:
        if len(payloads) == 1:  # e.g. the entry of a read: one statement (``APPEND_ONE``)
            db = self._db
            with db.lock:
                conn = db.conn
                db._check_file()
                self._made.clear()
                try:
                    conn.execute(APPEND_ONE, (payloads[0],))
                except sqlite3.Error as exc:
                    db.rollback(conn)
                    raise SiteUnavailable(
                        self.site_id, f"cannot write {db.label} ({exc})"
                    ) from None
                made, self._made = self._made, []
            if len(made) == 1:
                return made
        return self._write(lambda tx: tx.chain(payloads))

    def chain_transfer_now(
        self, payloads: Sequence[str], transfer: TransferCount, *, read: bool = False
    ) -> list[AuditRow]:
        def write(tx: _Tx) -> list[AuditRow]:
            rows = tx.chain(payloads)
            tx.count_transfer(
                transfer.year, transfer.to_country, transfer.subject_id, transfer.sensitive
            )
            return rows

        return self._write(write)

    def _read(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        return self._db.read(sql, args)

    def get(self, record_id: str) -> StoredRecord | None:
        rows = self._read(f"SELECT {RECORD_COLUMNS} FROM records WHERE record_id = ?", (record_id,))
        return _record(rows[0]) if rows else None

    def get_for_read(self, record_id: str) -> tuple[StoredRecord | None, list[SubjectBlock]]:
        return record_and_blocks(self._read(READ_SQL + "?" + READ_ORDER, (record_id,)), _record)

    def reply(self, peer: str, op: str, key: bytes, now: float) -> tuple[int, str] | None:
        rows = self._read(
            "SELECT status, answer FROM node_replies"
            " WHERE peer = ? AND op = ? AND key_digest = ? AND expires >= ?",
            (peer, op, key, now),
        )
        return (int(rows[0][0]), str(rows[0][1])) if rows else None

    def get_many(self, record_ids: Sequence[str]) -> dict[str, StoredRecord]:
        out: dict[str, StoredRecord] = {}
        ids = list(record_ids)
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            rows = self._read(
                f"SELECT {RECORD_COLUMNS} FROM records WHERE record_id IN ({','.join('?' * len(chunk))})",
                tuple(chunk),
            )
            out.update((str(r[0]), _record(r)) for r in rows)
        return out

    def outbox(self, limit: int) -> list[OutboxItem]:
        rows = self._read(
            "SELECT seq, record_id, subject_id, target_site, op, created_at FROM outbox"
            " ORDER BY seq LIMIT ?",
            (limit,),
        )
        return [
            OutboxItem(int(s), str(r), str(sub), str(t), op, str(c)) for s, r, sub, t, op, c in rows
        ]

    def replicas(self, after: str, limit: int) -> list[StoredRecord]:
        rows = self._read(
            f"SELECT {RECORD_COLUMNS} FROM records WHERE primary_site IS NOT NULL AND record_id > ?"
            " ORDER BY record_id LIMIT ?",
            (after, limit),
        )
        return [_record(r) for r in rows]

    def records_after(self, after: str, limit: int) -> list[StoredRecord]:
        rows = self._read(
            f"SELECT {RECORD_COLUMNS} FROM records WHERE record_id > ? ORDER BY record_id LIMIT ?",
            (after, limit),
        )
        return [_record(r) for r in rows]

    def subject_roles(self) -> dict[str, bool]:
        # One pass over the table, grouped here: SQLite would group through the subject
        # index, a random read of the table per record (several times slower).
        out: dict[str, bool] = {}
        for sid, is_copy in self._read("SELECT subject_id, primary_site IS NOT NULL FROM records"):
            out[sid] = out.get(sid, True) and bool(is_copy)
        return out

    def audit_tagged(
        self, prefix: str, upto: int, *, containing: str | None = None, newest: bool = False
    ) -> list[AuditRow]:
        sql = "SELECT seq, payload, prev_hash, hash FROM audit WHERE seq <= ? AND substr(payload, 1, ?) = ?"
        args: tuple[object, ...] = (upto, len(prefix), prefix)
        if containing is not None:
            sql += " AND instr(payload, ?) > 0"
            args += (containing,)
        sql += " ORDER BY seq DESC LIMIT 1" if newest else " ORDER BY seq"
        rows = self._read(sql, args)
        return [AuditRow(int(q), str(p), bytes(v), bytes(h)) for q, p, v, h in rows]

    def count_replicas(self) -> int:
        value = self._read("SELECT count(*) FROM records WHERE primary_site IS NOT NULL")[0][0]
        assert isinstance(value, int)
        return value

    def transfer_counts(self, year: int, to_country: str) -> tuple[int, int]:
        row = self._read(
            "SELECT count(*), coalesce(sum(sensitive), 0) FROM transfer_subjects"
            " WHERE year = ? AND to_country = ?",
            (year, to_country),
        )[0]
        return int(row[0]), int(row[1])

    def lookup(self, digest: bytes) -> list[str]:
        rows = self._read("SELECT record_id FROM digests WHERE digest = ?", (digest,))
        return [str(r[0]) for r in rows]

    def digests_of(self, record_ids: Sequence[str]) -> dict[str, set[bytes]]:
        out: dict[str, set[bytes]] = {}
        unique = list(dict.fromkeys(record_ids))
        for i in range(0, len(unique), 500):
            chunk = unique[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._read(
                f"SELECT record_id, digest FROM digests WHERE record_id IN ({marks})", tuple(chunk)
            )
            for rid, d in rows:
                out.setdefault(str(rid), set()).add(bytes(d))
        return out

    def subjects_for(self, digests: Sequence[bytes]) -> dict[bytes, str]:
        out: dict[bytes, str] = {}
        unique = list(dict.fromkeys(digests))
        for i in range(0, len(unique), 500):
            chunk = unique[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._read(
                "SELECT b.digest, r.subject_id FROM digests b JOIN records r ON r.record_id = b.record_id"
                f" WHERE b.digest IN ({marks})",
                tuple(bytearray(d) for d in chunk),  # bound as blobs, no adapter lookup
            )
            for digest, subject in rows:
                out.setdefault(bytes(digest), str(subject))
        return out

    def subject_records(self, subject_id: str) -> list[StoredRecord]:
        rows = self._read(
            f"SELECT {RECORD_COLUMNS} FROM records WHERE subject_id = ? ORDER BY created_at, record_id",
            (subject_id,),
        )
        return [_record(r) for r in rows]

    def blocks(self, subject_ids: Sequence[str]) -> list[SubjectBlock]:
        ids = list(dict.fromkeys(subject_ids))
        out: list[SubjectBlock] = []
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            rows = self._read(
                f"SELECT {BLOCK_COLUMNS} FROM subject_blocks"
                f" WHERE subject_id IN ({','.join('?' * len(chunk))}) ORDER BY since, request_id",
                tuple(chunk),
            )
            out += [SubjectBlock.from_row(r) for r in rows]
        return out

    def count(self) -> int:
        value = self._read("SELECT count(*) FROM records WHERE primary_site IS NULL")[0][0]
        assert isinstance(value, int)
        return value

    def count_subjects(self) -> int:
        value = self._read(
            "SELECT count(DISTINCT subject_id) FROM records WHERE primary_site IS NULL"
        )[0][0]
        assert isinstance(value, int)
        return value

    def audit(self, start: int = 1) -> Iterator[AuditRow]:
        # Pages of 1000 in sequence order, so memory stays bounded on long chains.
        last = start - 1
        while True:
            rows = self._read(
                "SELECT seq, payload, prev_hash, hash FROM audit WHERE seq > ? ORDER BY seq LIMIT 1000",
                (last,),
            )
            if not rows:
                return
            for seq, payload, prev, h in rows:
                yield AuditRow(int(seq), str(payload), bytes(prev), bytes(h))
                last = max(last, int(seq))
            if len(rows) < 1000:
                return

    def checkpoints(self) -> list[Checkpoint]:
        rows = self._read("SELECT seq, hash, signed_at, signature FROM checkpoints ORDER BY seq")
        return [Checkpoint(int(s), bytes(h), str(t), bytes(sig)) for s, h, t, sig in rows]

    def heads(self) -> list[HeadRow]:
        rows = self._read("SELECT size, root, signed_at, signature FROM tree_heads ORDER BY size")
        return [_head(r) for r in rows]

    def tree_nodes(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        out: dict[tuple[int, int], bytes] = {}
        wanted = list(dict.fromkeys(keys))
        for i in range(0, len(wanted), 400):
            chunk = wanted[i : i + 400]
            where = " OR ".join("(level = ? AND idx = ?)" for _ in chunk)
            args = tuple(v for key in chunk for v in key)
            for level, idx, h in self._read(
                f"SELECT level, idx, hash FROM tree_nodes WHERE {where}", args
            ):
                out[(int(level), int(idx))] = bytes(h)
        return out

    def witnessed(self, site: str | None = None) -> list[WitnessRow]:
        if site is None:
            rows = self._read(f"SELECT {WITNESS_COLUMNS} FROM witnessed ORDER BY site, size")
        else:
            rows = self._read(
                f"SELECT {WITNESS_COLUMNS} FROM witnessed WHERE site = ? ORDER BY size", (site,)
            )
        return [_witness(r) for r in rows]
