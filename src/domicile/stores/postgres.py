"""PostgreSQL site and key stores: one database per site (and one per site's key store).

Behaves like the SQLite stores (``sqlite.py``, ``keystore.py``); both run through one
contract test suite. What differs is how concurrency is handled:

- The connection runs in autocommit mode between transactions, so a reader never holds a
  snapshot open; ``transaction()`` opens an explicit ``BEGIN`` ... ``COMMIT`` block (plain
  ``BEGIN``: a database or server set to ``default_transaction_read_only`` stays read-only,
  and writes to it raise ``SiteUnavailable``).
- Concurrent writers chain their audit entries one after another because ``audit_head()``
  locks the single row of ``audit_head`` (``SELECT ... FOR UPDATE``) until the transaction
  ends, and ``append_audit()`` moves that row to the last entry appended.
- One connection per store, guarded by a lock. When the server goes away, the call that
  notices fails with ``SiteUnavailable`` and a later call connects again. A call that finds
  its connection dead before it has done anything (the server restarted since the last
  call) retries once on a fresh connection: reads, and the ``BEGIN`` of a write.

Every driver error becomes ``SiteUnavailable`` (its message never holds the password),
except an integrity error inside a site transaction (such as a duplicate record id), which
propagates unchanged as ``sqlite3.IntegrityError`` does in the SQLite store.

Durability of read entries (opt-in, off by default): a site URL may end in
``?read_audit_commit=async`` (domicile takes the parameter out before connecting). The
audit entries of reads (a read at home, a read from abroad with its transfer count, a read
of a copy) are then committed with ``synchronous_commit = off``, on a second connection of
their own: the read does not wait for the server to flush its log to disk. Everything else
(writes with their entries, refusals, filings, checkpoints) still waits. What this risks:
if the PostgreSQL server or its machine crashes, the read entries of the last moments
(about three times ``wal_writer_delay``, 0.6 s by default) can be lost, although the reads
were served. The chain stays whole (PostgreSQL loses such commits only from the end of its
log, and any later synchronous commit, such as a checkpoint, flushes them), so ``audit
verify`` still passes; the lost reads are simply not in it. A crash of the application
loses nothing: the server has each entry before the read returns. Default:
``read_audit_commit=sync``.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext, suppress
from typing import Any, LiteralString, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.adapt import PyFormat
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow

from domicile.errors import BadInput
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
    OutboxClaim,
    OutboxItem,
    SiteStore,
    SiteUnavailable,
    StoredRecord,
    StoreMismatch,
    StoreMissing,
    StoreTransaction,
    SubjectBlock,
    TransferCount,
    VersionConflict,
    WitnessRow,
    new_creation_id,
    record_and_blocks,
)
from domicile.stores.keystore import KeyStore, WrappedKey
from domicile.stores.schema import (
    KEY_MIGRATIONS,
    SITE_MIGRATIONS,
    check_creation,
    check_current,
    check_meta,
    label,
)

Conn = psycopg.Connection[TupleRow]
T = TypeVar("T")

AUDIT_PAGE = 1000
# A site's tables are analyzed once this many rows (and as many as they held when last
# analyzed) were added by writes.
ANALYZE_AFTER = 2000
# Serialises schema migrations of one database across processes ("domicile" in ASCII).
MIGRATION_LOCK = 0x646F6D6963696C65
# Connection defaults; parameters given in the URL win.
DEFAULTS = {
    "connect_timeout": "5",
    "application_name": "domicile",
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}
MAINTENANCE_DATABASES = ("postgres", "template1")

_BYTES_DUMPER = psycopg.adapters.get_dumper(bytes, PyFormat.BINARY)  # see ``_connect``


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


class _Database:
    """One connection to one PostgreSQL database, reconnected on demand.

    ``label`` names the store in error messages ("its database", "its key store").
    """

    def __init__(
        self,
        site_id: str,
        url: str,
        label: str,
        *,
        settings: Sequence[str] = (),
        readers: int = 0,
    ) -> None:
        self.site_id = site_id
        self.label = label
        self.lock = threading.RLock()
        self._conn: Conn | None = None
        self._open = False
        # Reads run on the connection of writes when it is free, otherwise on connections
        # of their own, up to ``readers`` at once, so concurrent readers of a site neither
        # wait for each other nor for a writer's transaction.
        # With 0 they share the one connection of writes. (psycopg_pool is not used: it
        # connects in background workers and retries with backoff, so a site that is down
        # or a database replaced under us would surface as a wait and a timeout, not as
        # the immediate SiteUnavailable / StoreMismatch that fail-closed callers rely on.)
        self._idle: list[Conn] = []
        self._idle_lock = threading.Lock()
        self.set_readers(readers)
        self._url = url
        # Every session refuses writes (a read-only open): set before ``open``.
        self.read_only = False
        # (kind, creation id) of the store this connection was opened on: checked again on
        # every new connection, so a database renamed away and replaced by another of the
        # same name (empty, or another site's) is never written to as if it were this one.
        self.identity: tuple[str, str | None] | None = None
        self._password = ""
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error:
            params = None
        self._params: dict[str, Any] | None = params
        if params is not None:
            self._password = str(params.get("password") or "")
            for key, value in DEFAULTS.items():
                params.setdefault(key, value)
            if settings:  # server settings for every session of this connection
                given = str(params.get("options") or "")
                params["options"] = " ".join([given, *(f"-c {s}" for s in settings)]).strip()

    # -- errors -------------------------------------------------------------------------

    def redact(self, text: str) -> str:
        """``text`` with the password taken out, however it was written."""
        text = re.sub(r"(//[^/@?#]*?):[^@/?#]*@", r"\1:***@", text)
        text = re.sub(r"(password\s*=\s*)('[^']*'|[^\s&]+)", r"\1***", text, flags=re.I)
        if len(self._password) >= 4:
            for form in {self._password, quote(self._password, safe="")}:
                text = text.replace(form, "***")
        return text

    @property
    def display_url(self) -> str:
        return self.redact(self._url)

    def unavailable(self, what: str, exc: BaseException | None = None) -> SiteUnavailable:
        if exc is None:
            return SiteUnavailable(self.site_id, self.redact(what))
        if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
            return SiteUnavailable(self.site_id, f"{what}: {self.label} is read-only")
        detail = ""
        if isinstance(exc, psycopg.Error) and exc.diag.message_primary:
            detail = exc.diag.message_primary
        else:
            detail = next((line for line in str(exc).splitlines() if line.strip()), "")
        name = type(exc).__name__
        reason = f"{what} ({name}: {detail.strip()})" if detail else f"{what} ({name})"
        return SiteUnavailable(self.site_id, self.redact(reason))

    # -- connecting ---------------------------------------------------------------------

    def _params_or_fail(self) -> dict[str, Any]:
        if self._params is None:
            raise self.unavailable(f"the URL of {self.label} is malformed")
        return self._params

    def _connect(self, **override: str) -> Conn:
        params = {**self._params_or_fail(), **override}
        if self.read_only:
            given = str(params.get("options") or "")
            params["options"] = f"{given} -c default_transaction_read_only=on".strip()
        conn = psycopg.connect(autocommit=True, **params)
        # A binary COPY told its columns' types (``copy.set_types``) dumps ``bytea`` with
        # the dumper registered for that type last: by default the DB-API ``Binary``
        # wrapper's, a Python call per value. Registering the C dumper of ``bytes`` again
        # (the one ``bytes`` already has) makes it the ``bytea`` dumper of this connection.
        conn.adapters.register_dumper(bytes, _BYTES_DUMPER)
        return conn

    def _connect_or_fail(self) -> Conn:
        try:
            return self._connect()
        except psycopg.Error as exc:
            raise self.unavailable(
                f"cannot connect to {self.label} at {self.display_url}", exc
            ) from None

    def open(self, *, create_database: bool = False) -> Conn:
        """A new connection. A database that does not exist is ``StoreMissing``, unless
        ``create_database`` (setup, when asked to) creates it first. The caller prepares
        the schema, then calls ``adopt``."""
        try:
            return self._connect()
        except psycopg.OperationalError as exc:
            first = exc
        except psycopg.Error as exc:
            raise self.unavailable(
                f"cannot connect to {self.label} at {self.display_url}", exc
            ) from None
        # Only a server that answered (and refused this database) is asked whether the
        # database exists: an unreachable one would only make the failure slower.
        answered = "FATAL" in str(first) or "does not exist" in str(first)
        if answered and self._database_exists() is False:
            if not create_database:
                raise StoreMissing(self.site_id, f"{self.label} (a PostgreSQL database) is missing")
            self._create_database()
            return self._connect_or_fail()
        raise self.unavailable(
            f"cannot connect to {self.label} at {self.display_url}", first
        ) from None

    def _maintenance(self) -> Conn | None:
        """A connection to a maintenance database of the same server, if one answers."""
        dbname = str(self._params_or_fail().get("dbname") or "")
        for maintenance in MAINTENANCE_DATABASES:
            if maintenance == dbname:
                continue
            try:
                return self._connect(dbname=maintenance)
            except psycopg.Error:
                continue
        return None

    def _database_exists(self) -> bool | None:
        """Whether the URL's database exists (None: the server cannot tell us)."""
        dbname = str(self._params_or_fail().get("dbname") or "")
        admin = self._maintenance() if dbname else None
        if admin is None:
            return None
        with admin:
            try:
                found = admin.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)
                ).fetchone()
            except psycopg.Error:
                return None
        return found is not None

    def _create_database(self) -> None:
        """Create the URL's database through a maintenance database on the same server
        (setup with ``--create-database`` only)."""
        dbname = str(self._params_or_fail().get("dbname") or "")
        admin = self._maintenance()
        if admin is None:
            raise self.unavailable(f"cannot create {self.label}: no maintenance database answers")
        with admin:
            try:
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
            except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                pass  # someone else created it meanwhile (the catalog's unique index says so)
            except psycopg.Error as exc:
                raise self.unavailable(f"cannot create {self.label} {dbname!r}", exc) from None

    def adopt(self, conn: Conn) -> None:
        with self.lock:
            self._drop()
            self._conn = conn
            self._open = True

    def set_readers(self, readers: int) -> None:
        """Call before ``open``."""
        self.readers = readers
        self._slots = threading.BoundedSemaphore(max(readers, 1))

    def close(self) -> None:
        with self.lock:
            self._open = False
            self._drop()
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            with suppress(psycopg.Error):
                conn.close()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(psycopg.Error):
                conn.close()

    def acquire(self) -> tuple[Conn, bool]:
        """The connection, and whether it was opened just now. Call with the lock held."""
        if not self._open:
            raise self.unavailable(f"{self.label} is closed")
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn, False
        self._drop()
        conn = self._connect_or_fail()
        try:
            self._check_identity(conn)
        except BaseException:
            with suppress(psycopg.Error):
                conn.close()
            raise
        self._conn = conn
        return conn, True

    def _check_identity(self, conn: Conn) -> None:
        """A new connection must reach the store that was opened: one query, made only
        when a connection is made again (after the server or the network went away)."""
        if self.identity is None:
            return
        kind, creation_id = self.identity
        try:
            meta = _meta(conn)
        except psycopg.Error as exc:
            raise self.unavailable(f"cannot read {self.label}", exc) from None
        if meta is None:
            raise NoSchema(self.site_id, f"{self.label} has no domicile schema any more")
        found = (meta.get("site"), meta.get("kind"), meta.get("creation_id"))
        if found != (self.site_id, kind, creation_id):
            raise StoreMismatch(
                self.site_id,
                f"{self.label} is not the one opened before (another site, kind or creation id)",
            )

    @staticmethod
    def _dead(conn: Conn) -> bool:
        return conn.closed or conn.broken

    # -- running ------------------------------------------------------------------------

    def _take(self) -> tuple[Conn, bool]:
        """A reader connection (an idle one, or a new one checked like the first), and
        whether it was made just now."""
        with self._idle_lock:
            if not self._open:
                raise self.unavailable(f"{self.label} is closed")
            while self._idle:
                conn = self._idle.pop()
                if not self._dead(conn):
                    return conn, False
        conn = self._connect_or_fail()
        try:
            self._check_identity(conn)
        except BaseException:
            with suppress(psycopg.Error):
                conn.close()
            raise
        return conn, True

    def _give(self, conn: Conn) -> None:
        with self._idle_lock:
            if self._open and not self._dead(conn) and len(self._idle) < self.readers:
                self._idle.append(conn)
                return
        with suppress(psycopg.Error):
            conn.close()

    def _once_more(
        self, fn: Callable[[Conn], T], what: str, conn: Conn, fresh: bool,
        reconnect: Callable[[], Conn],
    ) -> T:  # fmt: skip
        """``fn`` on ``conn``; if that connection died since its last use (a server
        restart), once more on ``reconnect()``. A connection made just now is not retried."""
        try:
            return fn(conn)
        except psycopg.OperationalError as exc:
            if fresh or not self._dead(conn):
                raise self.unavailable(what, exc) from None
        except psycopg.Error as exc:
            raise self.unavailable(what, exc) from None
        conn = reconnect()
        try:
            return fn(conn)
        except psycopg.Error as exc:
            raise self.unavailable(what, exc) from None

    def _read_apart(self, fn: Callable[[Conn], T], what: str) -> T:
        with self._slots:
            conn, fresh = self._take()
            used = [conn]

            def reconnect() -> Conn:
                # The other idle ones are likely dead too: dropped, and a new one made.
                with self._idle_lock:
                    stale, self._idle = self._idle, []
                for old in stale:
                    with suppress(psycopg.Error):
                        old.close()
                again, _ = self._take()
                used.append(again)
                return again

            try:
                return self._once_more(fn, what, conn, fresh, reconnect)
            finally:
                for c in used:
                    self._give(c)

    def run(self, fn: Callable[[Conn], T], what: str) -> T:
        """Run ``fn`` (which must be safe to repeat: reads) outside a transaction."""
        if self.readers and not self.lock.acquire(blocking=False):
            # The connection of writes is busy (a transaction, another read): read on one
            # of the site's reader connections rather than wait for it.
            return self._read_apart(fn, what)
        if self.readers:
            try:
                return self._run_here(fn, what)
            finally:
                self.lock.release()
        return self._run_here(fn, what)

    def _run_here(self, fn: Callable[[Conn], T], what: str) -> T:
        """``run`` on the connection of writes, when it is free (a read alone keeps to one
        server process, which is faster than waking another)."""
        with self.lock:
            conn, fresh = self.acquire()
            return self._once_more(fn, what, conn, fresh, lambda: self.acquire()[0])

    def begin(self, what: str) -> Conn:
        """Open a transaction block; call with the lock held."""

        def start(conn: Conn) -> Conn:
            conn.execute("BEGIN")
            return conn

        conn, fresh = self.acquire()
        return self._once_more(start, what, conn, fresh, lambda: self.acquire()[0])

    def commit(self, conn: Conn, what: str) -> None:
        if conn.info.transaction_status != TransactionStatus.INTRANS:
            # Failed (an error was caught and ignored inside the block) or lost.
            self.rollback(conn)
            raise self.unavailable(f"{what}: a statement in the transaction failed")
        try:
            conn.execute("COMMIT")
        except psycopg.Error as exc:
            self.rollback(conn)
            raise self.unavailable(what, exc) from None

    def rollback(self, conn: Conn) -> None:
        if self._dead(conn):
            return
        with suppress(psycopg.Error):  # the connection is gone; the server rolled back
            conn.execute("ROLLBACK")

    def write_one(self, fn: Callable[[Conn], T], what: str) -> T:
        """Run ``fn``, one statement, on the connection of writes outside any transaction
        block (autocommit: the statement commits on its own, in one round trip). Any driver
        error -> SiteUnavailable. A connection found dead (the server restarted since its
        last use) is replaced once and the statement sent again, so ``fn`` must be safe to
        repeat: a copy of new keys is (had the first one committed before the
        connection died, the second fails on the duplicate: unavailable, nothing lost)."""
        with self.lock:
            conn, fresh = self.acquire()
            return self._once_more(fn, what, conn, fresh, lambda: self.acquire()[0])

    def write(self, fn: Callable[[Conn], T], what: str) -> T:
        """Run ``fn`` in a transaction of its own; any driver error -> SiteUnavailable."""
        with self.lock:
            conn = self.begin(what)
            try:
                result = fn(conn)
            except psycopg.Error as exc:
                self.rollback(conn)
                raise self.unavailable(what, exc) from None
            except BaseException:
                self.rollback(conn)
                raise
            self.commit(conn, what)
            return result


def _fetch(conn: Conn, query: LiteralString, args: Sequence[object] = ()) -> list[TupleRow]:
    return conn.execute(query, args).fetchall()


def migrate(
    conn: Conn,
    site: str,
    kind: str,
    migrations: dict[int, list[str]],
    *,
    create: bool,
    creation_id: str | None = None,
    read_only: bool = False,
    adopt: bool = False,
) -> tuple[str | None, bool]:
    """Bring the schema to the newest version in one transaction; refuse a newer or
    foreign database, or one whose creation id is not ``creation_id`` (the same rules as
    ``sqlite.migrate``). Returns the creation id and whether this call created the store.
    A database that is up to date is only read, so a read-only database or standby opens
    for reading; with ``read_only`` nothing is ever written."""
    newest = max(migrations)
    conn.execute("BEGIN")
    try:
        meta = _meta(conn)
        if read_only:
            if meta is None:
                raise NoSchema(site, f"{label(kind)} has no domicile schema")
            check_current(meta, site, kind, newest)
            check_creation(meta, site, kind, creation_id)
            conn.execute("COMMIT")
            return meta.get("creation_id"), False
        if meta is not None:
            check_meta(meta, site, kind, newest)
            if (
                int(meta.get("schema_version", 0)) == newest
                and meta.get("site") == site
                and meta.get("kind") == kind
                and not (adopt and meta.get("creation_id") is None)
            ):
                if not adopt:
                    check_creation(meta, site, kind, creation_id)
                conn.execute("COMMIT")
                return meta.get("creation_id"), False
        if meta is None and not create:
            raise NoSchema(site, f"{label(kind)} has no domicile schema")
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        # Another process may have made the schema while we waited: this DDL takes the
        # catalog locks that make it visible to the look that follows.
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        meta = _meta(conn) or {}
        current = check_meta(meta, site, kind, newest)
        created = current == 0
        if created:
            if not create:
                raise NoSchema(site, f"{label(kind)} has no domicile schema")
            others = conn.execute(
                "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"
                " AND tablename <> 'meta'"
            ).fetchone()
            if others and others[0]:
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
        for version in range(current + 1, newest + 1):
            for stmt in migrations[version]:
                # Trusted text from schema.py; without parameters nothing is interpolated.
                conn.execute(stmt.encode())
        wanted = {"schema_version": str(newest), "site": site, "kind": kind, "creation_id": cid}
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO meta (key, value) VALUES (%s, %s)"
                " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                [(k, v) for k, v in wanted.items() if v is not None],
            )
        conn.execute("COMMIT")
    except BaseException:
        if not conn.closed and not conn.broken:
            with suppress(psycopg.Error):
                conn.execute("ROLLBACK")
        raise
    return cid, created


def _meta(conn: Conn) -> dict[str, str] | None:
    row = conn.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return None
    return {str(k): str(v) for k, v in conn.execute("SELECT key, value FROM meta").fetchall()}


def _open(
    db: _Database,
    site: str,
    kind: str,
    migrations: dict[int, list[str]],
    *,
    create: bool,
    creation_id: str | None,
    read_only: bool,
    adopt: bool,
    create_database: bool,
) -> tuple[str | None, bool]:
    with db.lock:
        db.read_only = read_only
        conn = db.open(create_database=create and create_database)
        try:
            cid, created = migrate(
                conn, site, kind, migrations, create=create, creation_id=creation_id,
                read_only=read_only, adopt=adopt,
            )  # fmt: skip
        except psycopg.Error as exc:
            conn.close()
            raise db.unavailable("cannot prepare its database", exc) from None
        except BaseException:
            conn.close()
            raise
        db.identity = (kind, cid)
        db.adopt(conn)
        return cid, created


# -- site store ----------------------------------------------------------------------------


# The first key of the advisory locks that keep a subject's erasure and writes apart.
ERASE_LOCK = 0x646F6D  # "dom"
# The first key of the advisory locks of ``PostgresSiteStore.hold``.
HOLD_LOCK = 0x686F6C  # "hol"


class _Tx(StoreTransaction):
    def __init__(self, db: _Database, conn: Conn) -> None:
        self.db = db
        self.c = conn
        self.added = 0  # rows added to records and digests: when many, statistics go stale
        self.staged = False  # made the connection's staging table (``put_replicas``)

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except psycopg.IntegrityError:
            raise  # a caller's mistake (duplicate id), not an outage: as in SQLite
        except psycopg.Error as exc:
            raise self.db.unavailable(what, exc) from None

    def _copy(self, statement: LiteralString, types: Sequence[str], rows: Iterable[Any]) -> None:
        """Rows in through ``COPY ... FROM STDIN`` (binary): one statement for the batch.
        A duplicate key fails the whole COPY (an integrity error, as for ``INSERT``)."""
        with self.c.cursor() as cur, cur.copy(statement) as copy:
            copy.set_types(types)
            for row in rows:
                copy.write_row(row)

    def insert(self, records: Sequence[StoredRecord]) -> None:
        if not records:
            return
        with self._errors("cannot write records"):
            self._copy(COPY_RECORDS, RECORD_TYPES, (r.row() for r in records))
        self.added += len(records)

    def write_batch(
        self,
        records: Sequence[StoredRecord],
        entries: Iterable[IndexEntry],
        outbox: Sequence[tuple[str, str, str, str]],
        payloads: Sequence[str],
    ) -> list[AuditRow]:
        """As the generic path, but the index entries go in by ``COPY`` as the records do:
        they belong to the batch's new records, so none can be there already, and ``COPY``
        costs the server about a quarter less than ``INSERT ... ON CONFLICT`` (measured:
        it inserts a page of rows at a time). Replicas (``primary_site`` set) go the
        generic way."""
        if any(r.primary_site is not None for r in records):
            return super().write_batch(records, entries, outbox, payloads)
        self.insert(records)
        digests = list(dict.fromkeys(entries))
        if digests:
            with self._errors("cannot write index entries"):
                self._copy(COPY_DIGESTS, ("bytea", "text"), digests)
            self.added += len(digests)
        self.enqueue(outbox)
        return self.chain(payloads)

    def replace(self, record: StoredRecord, expect_version: int) -> None:
        with self._errors("cannot update a record"):
            cur = self.c.execute(
                "UPDATE records SET version = %s, updated_at = %s, fields = %s"
                " WHERE record_id = %s AND version = %s",
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
        ids = list(record_ids)
        if not ids:
            return 0
        with self._errors("cannot delete records"):
            self.c.execute("DELETE FROM digests WHERE record_id = ANY(%b::text[])", (ids,))
            cur = self.c.execute("DELETE FROM records WHERE record_id = ANY(%b::text[])", (ids,))
        return max(cur.rowcount, 0)

    # Writers hold their subjects with shared transaction-level advisory locks; an erasure
    # takes the subject's lock exclusively, so it waits for writes already under way and
    # then sees them (each statement of a read-committed transaction sees what committed
    # before it began). Lock keys: (ERASE_LOCK, hashtext(subject)); a collision between two
    # subjects only makes one wait for the other.
    def hold_subjects(self, subject_ids: Sequence[str]) -> set[str]:
        ids = sorted(set(subject_ids))
        if not ids:
            return set()
        with self._errors("cannot hold subjects"):
            self.c.execute(
                "SELECT pg_advisory_xact_lock_shared(%s, hashtext(s)) FROM unnest(%b::text[]) s",
                (ERASE_LOCK, ids),
            )
            rows = self.c.execute(
                "SELECT subject_id FROM erased_subjects WHERE subject_id = ANY(%b::text[])", (ids,)
            ).fetchall()
        return {str(r[0]) for r in rows}

    def erase_subject(self, subject_id: str, erased_at: str) -> int:
        with self._errors("cannot erase a subject"):
            self.c.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (ERASE_LOCK, subject_id)
            )
            self.c.execute(
                "DELETE FROM digests WHERE record_id IN"
                " (SELECT record_id FROM records WHERE subject_id = %s)",
                (subject_id,),
            )
            cur = self.c.execute("DELETE FROM records WHERE subject_id = %s", (subject_id,))
            count = cur.rowcount
            self.c.execute(
                "DELETE FROM subject_blocks WHERE subject_id = %s AND kind <> 'withdrawal'",
                (subject_id,),
            )
            self.c.execute(
                "INSERT INTO erased_subjects VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (subject_id, erased_at),
            )
        return max(count, 0)

    def block(self, block: SubjectBlock) -> bool:
        with self._errors("cannot block a subject"):
            cur = self.c.execute(
                "INSERT INTO subject_blocks (" + BLOCK_COLUMNS + ")"
                " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                block.row(),
            )
        return cur.rowcount == 1

    def unblock(self, subject_id: str, kind: str, request_id: str) -> bool:
        with self._errors("cannot lift a block"):
            cur = self.c.execute(
                "DELETE FROM subject_blocks WHERE subject_id = %s AND kind = %s"
                " AND request_id = %s",
                (subject_id, kind, request_id),
            )
        return cur.rowcount == 1

    def index(self, entries: Iterable[IndexEntry]) -> None:
        rows = list(dict.fromkeys(entries))
        if not rows:
            return
        with self._errors("cannot write index entries"):
            # One statement (binary arrays); an entry kept already stays as it is.
            self.c.execute(INSERT_DIGESTS, ([r[0] for r in rows], [r[1] for r in rows]))
        self.added += len(rows)

    def unindex(self, record_id: str) -> None:
        with self._errors("cannot delete index entries"):
            self.c.execute("DELETE FROM digests WHERE record_id = %s", (record_id,))

    def audit_head(self) -> tuple[int, bytes]:
        with self._errors("cannot lock the audit head"):
            row = self.c.execute(
                "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE"
            ).fetchone()
            if row is None:
                # The head row went missing: rebuild it from the chain, then lock it.
                self.c.execute(
                    "INSERT INTO audit_head (id, seq, hash)"
                    " SELECT 1, coalesce(max(seq), 0),"
                    " coalesce((SELECT hash FROM audit ORDER BY seq DESC LIMIT 1), ''::bytea)"
                    " FROM audit ON CONFLICT (id) DO NOTHING"
                )
                row = self.c.execute(
                    "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE"
                ).fetchone()
        assert row is not None
        return int(row[0]), bytes(row[1])

    def append_audit(self, rows: Sequence[AuditRow]) -> None:
        if not rows:
            return
        last = rows[-1]
        with self._errors("cannot append to the audit ledger"):
            self._copy(
                COPY_AUDIT,
                ("int8", "text", "bytea", "bytea"),
                ((r.seq, r.payload, r.prev_hash, r.hash) for r in rows),
            )
            self.c.execute(
                "UPDATE audit_head SET seq = %s, hash = %s WHERE id = 1", (last.seq, last.hash)
            )

    def chain(self, payloads: Sequence[str]) -> list[AuditRow]:
        if not payloads:
            return []
        with self._errors("cannot append to the audit ledger"):
            rows = self.c.execute(CHAIN_SQL, (list(payloads),)).fetchall()
        return _chained(payloads, rows)

    def chain_many(self, payloads: Sequence[str]) -> list[AuditRow]:
        """Many entries are hashed here, after the head locked in this transaction (as
        ``domicile_audit_append`` does on the server, so one chain still runs through every
        process), and go in by ``COPY``: the function inserts them one statement at a
        time, which cost the server three times as much for a batch of 500 (measured,
        8.3 against 2.7 ms). For a few, the function's single round trip is cheaper."""
        if len(payloads) < CHAIN_HERE_FROM:
            return self.chain(payloads)
        return super().chain(payloads)

    def enqueue(self, items: Sequence[tuple[str, str, str, str]]) -> None:
        if not items:
            return
        now = _now()
        with self._errors("cannot write to the outbox"):
            # COPY keeps the rows' order, so their serial numbers follow it.
            self._copy(
                "COPY outbox (record_id, subject_id, target_site, op, created_at)"
                " FROM STDIN (FORMAT BINARY)",
                ("text", "text", "text", "text", "text"),
                ((*item, now) for item in items),
            )

    def dequeue(self, seqs: Sequence[int]) -> None:
        if not seqs:
            return
        with self._errors("cannot clear the outbox"):
            self.c.execute("DELETE FROM outbox WHERE seq = ANY(%b::int8[])", (list(seqs),))

    def dequeue_erasures(self, subject_id: str, target_sites: Sequence[str]) -> None:
        if not target_sites:
            return
        with self._errors("cannot clear the outbox"):
            self.c.execute(
                "DELETE FROM outbox WHERE op = 'erase' AND subject_id = %s"
                " AND target_site = ANY(%b::text[])",
                (subject_id, list(target_sites)),
            )

    def put_replica(self, record: StoredRecord) -> bool:
        with self._errors("cannot write a replica"):
            cur = self.c.execute(
                INSERT_RECORD + " ON CONFLICT (record_id) DO UPDATE SET version = EXCLUDED.version,"
                " updated_at = EXCLUDED.updated_at, fields = EXCLUDED.fields"
                " WHERE records.version < EXCLUDED.version AND records.primary_site IS NOT NULL",
                record.row(),
            )
        return cur.rowcount == 1

    def put_replicas(self, records: Sequence[StoredRecord]) -> list[bool]:
        """The rows go by ``COPY`` into a temporary table of the connection (emptied at
        every commit or rollback), then into ``records`` with one upsert under the
        condition of ``put_replica``; ``RETURNING`` names the rows that changed. (Binary
        ``COPY`` costs the client about half what binary arrays of the same rows do, and
        the server a little less than ``unnest``.)"""
        ids = [r.record_id for r in records]
        if len(records) < 2 or len(set(ids)) != len(ids):
            return [self.put_replica(r) for r in records]  # ON CONFLICT takes a row once
        with self._errors("cannot write replicas"):
            self._staging()
            self._copy(COPY_STAGED, RECORD_TYPES, (r.row() for r in records))
            changed = {row[0] for row in self.c.execute(PUT_STAGED).fetchall()}
        self.added += len(changed)
        return [rid in changed for rid in ids]

    def _staging(self) -> None:
        """The connection's temporary table of replicas on their way in, made on its first
        use (a new connection after a reconnection makes its own). Made in this
        transaction, it is known to exist only once the transaction has committed
        (``PostgresSiteStore.transaction`` notes it then)."""
        if self.c not in _STAGING:
            self.c.execute(STAGING_TABLE)
            self.staged = True

    def count_transfer(self, year: int, to_country: str, subject_id: str, sensitive: bool) -> None:
        with self._errors("cannot count a transfer"):
            self.c.execute(COUNT_TRANSFER_SQL, (year, to_country, subject_id, sensitive))

    def count_transfers(self, counts: Sequence[TransferCount]) -> None:
        merged: dict[tuple[int, str, str], bool] = {}
        for c in counts:  # one row each: ON CONFLICT takes a row once per statement
            key = (c.year, c.to_country, c.subject_id)
            merged[key] = merged.get(key, False) or c.sensitive
        if not merged:
            return
        with self._errors("cannot count transfers"):
            self.c.execute(
                "INSERT INTO transfer_subjects (year, to_country, subject_id, sensitive)"
                " SELECT * FROM unnest(%b::int4[], %b::text[], %b::text[], %b::bool[])"
                " ON CONFLICT (year, to_country, subject_id) DO UPDATE SET sensitive = true"
                " WHERE NOT transfer_subjects.sensitive AND EXCLUDED.sensitive",
                (
                    [k[0] for k in merged],
                    [k[1] for k in merged],
                    [k[2] for k in merged],
                    list(merged.values()),
                ),
            )

    def add_checkpoint(self, checkpoint: Checkpoint) -> None:
        cp = checkpoint
        with self._errors("cannot write a checkpoint"):
            self.c.execute(
                "INSERT INTO checkpoints (seq, hash, signed_at, signature) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (seq) DO UPDATE SET hash = EXCLUDED.hash,"
                " signed_at = EXCLUDED.signed_at, signature = EXCLUDED.signature",
                (cp.seq, cp.hash, cp.signed_at, cp.signature),
            )

    def _rows(self, what: str, query: LiteralString, args: Sequence[object]) -> list[TupleRow]:
        with self._errors(what):
            return self.c.execute(query, args).fetchall()

    def audit_rows(self, start: int, end: int) -> list[AuditRow]:
        rows = self._rows(
            "cannot read the audit ledger",
            "SELECT seq, payload, prev_hash, hash FROM audit WHERE seq BETWEEN %s AND %s"
            " ORDER BY seq",
            (start, end),
        )
        return [AuditRow(int(q), str(p), bytes(v), bytes(h)) for q, p, v, h in rows]

    def latest_head(self) -> HeadRow | None:
        rows = self._rows(
            "cannot read the tree heads",
            "SELECT size, root, signed_at, signature, compact FROM tree_heads"
            " ORDER BY size DESC LIMIT 1",
            (),
        )
        return _head(rows[0]) if rows else None

    def add_head(self, head: HeadRow) -> bool:
        rows = self._rows(
            "cannot write a tree head",
            "INSERT INTO tree_heads VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
            " RETURNING size",
            (head.size, head.root, head.signed_at, head.signature, head.compact),
        )
        return bool(rows)

    def add_tree_nodes(self, nodes: Sequence[tuple[int, int, bytes]]) -> None:
        if not nodes:
            return
        with self._errors("cannot write tree nodes"):
            self.c.execute(
                "INSERT INTO tree_nodes SELECT * FROM unnest(%b::int4[], %b::int8[], %b::bytea[])"
                " ON CONFLICT DO NOTHING",
                ([n[0] for n in nodes], [n[1] for n in nodes], [n[2] for n in nodes]),
            )

    def latest_witnessed(self, site: str) -> WitnessRow | None:
        rows = self._rows(
            "cannot read the witnessed heads",
            "SELECT " + WITNESS_COLUMNS + " FROM witnessed WHERE site = %s"
            " ORDER BY size DESC LIMIT 1",
            (site,),
        )
        return _witness(rows[0]) if rows else None

    def add_witnessed(self, row: WitnessRow) -> None:
        with self._errors("cannot record a witnessed head"):
            self.c.execute(
                "INSERT INTO witnessed (" + WITNESS_COLUMNS + ") VALUES (%s, %s, %s, %s, %s, %s)",
                (row.site, row.size, row.root, row.signed_at, row.signature, row.seq),
            )

    def keep_reply(
        self, peer: str, op: str, key: bytes, status: int, answer: str, expires: float, now: float
    ) -> None:
        with self._errors("cannot keep a node's answer"):
            self.c.execute("DELETE FROM node_replies WHERE expires < %s", (now,))
            self.c.execute(
                "INSERT INTO node_replies VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (peer, op, key, status, answer, expires),
            )


COPY_AUDIT: LiteralString = "COPY audit (seq, payload, prev_hash, hash) FROM STDIN (FORMAT BINARY)"
# From this many entries on, ``chain_many`` hashes them on the client (three round trips
# instead of one, but about 11 µs less server time per entry).
CHAIN_HERE_FROM = 32

# The payloads travel as a binary text[] (%b): the text form of an array would escape
# every quote of every JSON payload on the client, which costs more than the append.
CHAIN_SQL: LiteralString = "SELECT out_seq, out_prev, out_hash FROM domicile_audit_append(%b)"


# A subject counted already this year is left as it is unless the transfer makes it a
# sensitive one: an update that changes nothing still writes a row version (and WAL).
COUNT_TRANSFER_SQL: LiteralString = (
    "INSERT INTO transfer_subjects VALUES (%s, %s, %s, %s)"
    " ON CONFLICT (year, to_country, subject_id) DO UPDATE SET sensitive = true"
    " WHERE NOT transfer_subjects.sensitive AND EXCLUDED.sensitive"
)
# Both run once whatever the SELECT reads (PostgreSQL runs every data-modifying WITH to
# completion), in the statement's single transaction.
CHAIN_TRANSFER_SQL: LiteralString = (
    "WITH counted AS (" + COUNT_TRANSFER_SQL + ")"
    " SELECT out_seq, out_prev, out_hash FROM domicile_audit_append(%b)"
)


# One entry in one statement: the UPDATE locks the head row (waiting for a concurrent
# append to commit, then re-reading the row it committed), moves it on by one and computes
# the new hash from the old one exactly as ``domicile_audit_append`` and ``entry_hash`` do;
# the INSERT writes the entry from what the UPDATE returns. No head row: no row, nothing
# written.
APPEND_ONE_CTE: LiteralString = (
    "h AS (UPDATE audit_head SET seq = seq + 1, prev = hash, hash = sha256("
    "'domicile/audit/v1'::bytea || hash || int8send(seq + 1) || convert_to(%(p)s, 'UTF8'))"
    " WHERE id = 1 RETURNING seq, prev, hash)"
    " INSERT INTO audit (seq, payload, prev_hash, hash) SELECT seq, %(p)s, prev, hash FROM h"
    " RETURNING seq, prev_hash, hash"
)
APPEND_ONE_SQL: LiteralString = "WITH " + APPEND_ONE_CTE
APPEND_ONE_TRANSFER_SQL: LiteralString = (
    "WITH counted AS (INSERT INTO transfer_subjects VALUES (%(y)s, %(c)s, %(s)s, %(x)s)"
    " ON CONFLICT (year, to_country, subject_id) DO UPDATE"
    " SET sensitive = transfer_subjects.sensitive OR EXCLUDED.sensitive), " + APPEND_ONE_CTE
)


def _chained(payloads: Sequence[str], rows: Sequence[TupleRow]) -> list[AuditRow]:
    return [
        AuditRow(int(seq), payload, bytes(prev), bytes(digest))
        for payload, (seq, prev, digest) in zip(payloads, rows, strict=True)
    ]


WITNESS_COLUMNS: LiteralString = "site, size, root, signed_at, signature, seq"


def _head(row: TupleRow) -> HeadRow:
    size, root, signed_at, signature, *compact = row
    return HeadRow(int(size), bytes(root), str(signed_at), bytes(signature), *map(bytes, compact))


def _witness(row: TupleRow) -> WitnessRow:
    site, size, root, signed_at, signature, seq = row
    return WitnessRow(str(site), int(size), bytes(root), str(signed_at), bytes(signature), int(seq))


def _record(row: TupleRow) -> StoredRecord:
    rid, sid, coll, version, created, updated, blob, primary = row
    return StoredRecord(
        str(rid), str(sid), str(coll), int(version), str(created), str(updated),
        bytes(blob), primary,
    )  # fmt: skip


INSERT_RECORD: LiteralString = (
    "INSERT INTO records (" + RECORD_COLUMNS + ") VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
)
COPY_RECORDS: LiteralString = "COPY records (" + RECORD_COLUMNS + ") FROM STDIN (FORMAT BINARY)"
RECORD_TYPES = ("text", "text", "text", "int4", "text", "text", "bytea", "text")
INSERT_DIGESTS: LiteralString = (
    "INSERT INTO digests SELECT * FROM unnest(%b::bytea[], %b::text[]) ON CONFLICT DO NOTHING"
)
COPY_DIGESTS: LiteralString = "COPY digests (digest, record_id) FROM STDIN (FORMAT BINARY)"
# Replicas on their way in (``_Tx.put_replicas``): a temporary table of each connection,
# emptied when its transaction ends (committed or not), so it never holds a row between
# transactions; it lives in the session's memory and writes no WAL.
STAGING_TABLE: LiteralString = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS replicas_in (LIKE records) ON COMMIT DELETE ROWS"
)
COPY_STAGED: LiteralString = "COPY replicas_in (" + RECORD_COLUMNS + ") FROM STDIN (FORMAT BINARY)"
PUT_STAGED: LiteralString = (
    "INSERT INTO records (" + RECORD_COLUMNS + ") SELECT " + RECORD_COLUMNS + " FROM replicas_in"
    " ON CONFLICT (record_id) DO UPDATE SET version = EXCLUDED.version,"
    " updated_at = EXCLUDED.updated_at, fields = EXCLUDED.fields"
    " WHERE records.version < EXCLUDED.version AND records.primary_site IS NOT NULL"
    " RETURNING record_id"
)
# The connections whose staging table exists (it goes with its connection).
_STAGING: weakref.WeakSet[Conn] = weakref.WeakSet()


COPY_KEYS: LiteralString = (
    "COPY subject_keys (subject_id, kek_version, wrapped, created_at) FROM STDIN (FORMAT BINARY)"
)


# A worker's claim: the oldest items no other worker holds, locked until its transaction ends.
CLAIM_OUTBOX_SQL: LiteralString = (
    "SELECT seq, record_id, subject_id, target_site, op, created_at FROM outbox"
    " ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED"
)
# The earliest item of each claimed subject that the claim does not hold (another worker's,
# or not yet taken): the claim's later items of that subject wait for it.
EARLIER_OUTBOX_SQL: LiteralString = (
    "SELECT subject_id, min(seq) FROM outbox WHERE subject_id = ANY(%b::text[]) AND seq < %s"
    " AND NOT (seq = ANY(%b::int8[])) GROUP BY subject_id"
)


READ_AUDIT_COMMIT = "read_audit_commit"
READERS = "readers"
# Parameters of a site's URL that are domicile's own, not libpq's.
OPTIONS = (READ_AUDIT_COMMIT, READERS)
# Reader connections per database when the URL does not say (see ``_Database``).
DEFAULT_READERS = 4
MAX_READERS = 64


def split_options(url: str) -> tuple[str, dict[str, str]]:
    """The URL without domicile's own parameters, and their values (the last one given
    wins). Other parameters go to libpq as they were."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, v) for k, v in pairs if k not in OPTIONS]
    options = {k: v for k, v in pairs if k in OPTIONS}
    if not options:
        return url, {}
    return urlunsplit(parts._replace(query=urlencode(kept, quote_via=quote))), options


def split_read_audit_commit(url: str) -> tuple[str, str]:
    """The URL without domicile's parameters, and ``read_audit_commit`` (``sync`` when
    absent)."""
    base, options = split_options(url)
    return base, options.get(READ_AUDIT_COMMIT, "sync")


def readers_option(site_id: str, options: dict[str, str]) -> int:
    """How many reader connections the URL asks for: ``readers=N``, 0 to share the
    connection of writes."""
    raw = options.get(READERS)
    if raw is None:
        return DEFAULT_READERS
    if not raw.isdigit() or int(raw) > MAX_READERS:
        raise BadInput(
            f"site {site_id!r}: {READERS} is {raw!r}",
            hint=f"write {READERS}=N with N from 0 (reads share the connection of writes)"
            f" to {MAX_READERS}",
        )
    return int(raw)


class PostgresSiteStore(SiteStore):
    backend = "postgresql"

    def __init__(self, site_id: str, url: str) -> None:
        super().__init__(site_id, url)
        base, self._options = split_options(url)
        self.read_audit_commit = self._options.get(READ_AUDIT_COMMIT, "sync")
        self._base = base
        self._db = _Database(site_id, base, "its database")
        # Connections of long transactions (outbox claims, holds), made when first used.
        self._aside: dict[str, _Database] = {}
        self._holding: Conn | None = None  # the transaction of the hold under way
        # Rows added since the statistics were last brought up to date, and the size then.
        self._added = 0
        self._analyzed_at = 0
        # Read entries' own connection when they may commit without waiting for the disk.
        self._reads: _Database | None = None
        if self.read_audit_commit == "async":
            self._reads = _Database(
                site_id, base, "its database", settings=["synchronous_commit=off"]
            )

    @property
    def display_url(self) -> str:
        return self._db.display_url

    def open(
        self,
        *,
        create: bool = False,
        creation_id: str | None = None,
        read_only: bool = False,
        adopt: bool = False,
        create_database: bool = False,
    ) -> None:
        if self.read_audit_commit not in ("sync", "async"):
            raise BadInput(
                f"site {self.site_id!r}: {READ_AUDIT_COMMIT} is {self.read_audit_commit!r}",
                hint=f"write {READ_AUDIT_COMMIT}=sync (the default) or {READ_AUDIT_COMMIT}=async",
            )
        self._db.set_readers(readers_option(self.site_id, self._options))
        self.creation_id, self.created = _open(
            self._db, self.site_id, "site", SITE_MIGRATIONS["postgresql"], create=create,
            creation_id=creation_id, read_only=read_only, adopt=adopt,
            create_database=create_database,
        )  # fmt: skip
        if self._reads is not None:
            with self._reads.lock:
                self._reads.read_only = read_only
                conn = self._reads.open()
                self._reads.identity = self._db.identity
                try:
                    self._reads._check_identity(conn)
                except BaseException:
                    conn.close()
                    raise
                self._reads.adopt(conn)

    def close(self) -> None:
        self._db.close()
        if self._reads is not None:
            self._reads.close()
        with self._db.lock:
            aside, self._aside = self._aside, {}
        for db in aside.values():
            db.close()

    def ping(self) -> bool:
        try:
            self._db.run(lambda c: _fetch(c, "SELECT 1 FROM meta LIMIT 1"), "ping")
        except SiteUnavailable:
            return False
        return True

    @contextmanager
    def transaction(self) -> Iterator[StoreTransaction]:
        db = self._db
        with db.lock:
            conn = db.begin("cannot start a write")
            tx = _Tx(db, conn)
            try:
                yield tx
            except BaseException:
                db.rollback(conn)
                raise
            db.commit(conn, "the write did not commit")
            if tx.staged:
                _STAGING.add(conn)
            self._grew(conn, tx.added)

    def _grew(self, conn: Conn, added: int) -> None:
        """Keep the planner's statistics current during a bulk load: autovacuum analyzes
        late, and until it does an identity lookup may scan the whole index table. After
        the tables doubled since the last look (and grew by at least ANALYZE_AFTER rows),
        ANALYZE them: a sample, so the cost of one stays flat as they grow, and doubling
        keeps the total to about twice the rows loaded. Stale counts are harmless in
        between: the planner scales the rows per page it last saw by the table's current
        size. (Every fifth of growth cost the server a fifth of a put's work on a 20,000
        record load.) Call with the lock held."""
        self._added += added
        if self._added < max(ANALYZE_AFTER, self._analyzed_at):
            return
        try:
            conn.execute("ANALYZE records, digests")
            row = conn.execute(
                "SELECT coalesce(sum(greatest(reltuples, 0)), 0)::bigint FROM pg_class"
                " WHERE oid IN ('records'::regclass, 'digests'::regclass)"
            ).fetchone()
        except psycopg.Error:
            return  # statistics are an optimisation; the write has committed
        self._analyzed_at = int(row[0]) if row else 0
        self._added = 0

    def chain_now(self, payloads: Sequence[str], *, read: bool = False) -> list[AuditRow]:
        """One statement, committed on its own: a single round trip. Not retried on a lost
        connection, so an entry is never written twice."""
        if not payloads:
            return []
        db = self._reads if read and self._reads is not None else self._db
        with db.lock:
            conn, _ = db.acquire()
            try:
                if len(payloads) == 1:
                    rows = conn.execute(APPEND_ONE_SQL, {"p": payloads[0]}).fetchall()
                    if rows:
                        return _chained(payloads, rows)
                    # No head row (it went missing): nothing was written; the function
                    # rebuilds the head from the chain.
                rows = conn.execute(CHAIN_SQL, (list(payloads),)).fetchall()
            except psycopg.Error as exc:
                raise db.unavailable("cannot append to the audit ledger", exc) from None
        return _chained(payloads, rows)

    def chain_transfer_now(
        self, payloads: Sequence[str], transfer: TransferCount, *, read: bool = False
    ) -> list[AuditRow]:
        """The entries and the year-to-date count in one statement (a data-modifying
        ``WITH``), so in one transaction and one round trip. Not retried, as ``chain_now``."""
        if not payloads:
            return []
        db = self._reads if read and self._reads is not None else self._db
        t = transfer
        count = {"y": t.year, "c": t.to_country, "s": t.subject_id, "x": t.sensitive}
        with db.lock:
            conn, _ = db.acquire()
            try:
                if len(payloads) == 1:
                    rows = conn.execute(
                        APPEND_ONE_TRANSFER_SQL, {**count, "p": payloads[0]}
                    ).fetchall()
                    if rows:
                        return _chained(payloads, rows)
                    # No head row: only the (idempotent) count was written; once more with
                    # the function, which rebuilds the head.
                rows = conn.execute(
                    CHAIN_TRANSFER_SQL,
                    (t.year, t.to_country, t.subject_id, t.sensitive, list(payloads)),
                ).fetchall()
            except psycopg.Error as exc:
                raise db.unavailable("cannot append to the audit ledger", exc) from None
        return _chained(payloads, rows)

    def chain_group_now(
        self, payloads: Sequence[str], transfers: Sequence[TransferCount], *, read: bool = False
    ) -> list[AuditRow]:
        """One transaction on the connection of reads (so ``read_audit_commit=async``
        applies to groups too): the entries through the server-side append, the counts in
        one statement."""
        if not payloads:
            return []
        db = self._reads if read and self._reads is not None else self._db

        def write(conn: Conn) -> list[TupleRow]:
            for t in transfers:
                conn.execute(COUNT_TRANSFER_SQL, (t.year, t.to_country, t.subject_id, t.sensitive))
            return conn.execute(CHAIN_SQL, (list(payloads),)).fetchall()

        return _chained(payloads, db.write(write, "cannot append to the audit ledger"))

    def _read(self, query: LiteralString, args: Sequence[object] = ()) -> list[TupleRow]:
        return self._db.run(lambda c: _fetch(c, query, args), "cannot read")

    def get(self, record_id: str) -> StoredRecord | None:
        rows = self._read(
            "SELECT " + RECORD_COLUMNS + " FROM records WHERE record_id = %s", (record_id,)
        )
        return _record(rows[0]) if rows else None

    def get_for_read(self, record_id: str) -> tuple[StoredRecord | None, list[SubjectBlock]]:
        return record_and_blocks(self._read(READ_SQL + "%s" + READ_ORDER, (record_id,)), _record)

    def reply(self, peer: str, op: str, key: bytes, now: float) -> tuple[int, str] | None:
        rows = self._read(
            "SELECT status, answer FROM node_replies"
            " WHERE peer = %s AND op = %s AND key_digest = %s AND expires >= %s",
            (peer, op, key, now),
        )
        return (int(rows[0][0]), str(rows[0][1])) if rows else None

    def lookup(self, digest: bytes) -> list[str]:
        rows = self._read("SELECT record_id FROM digests WHERE digest = %s", (digest,))
        return [str(r[0]) for r in rows]

    def digests_of(self, record_ids: Sequence[str]) -> dict[str, set[bytes]]:
        if not record_ids:
            return {}
        rows = self._read(
            "SELECT record_id, digest FROM digests WHERE record_id = ANY(%s)",
            (list(dict.fromkeys(record_ids)),),
        )
        out: dict[str, set[bytes]] = {}
        for rid, d in rows:
            out.setdefault(str(rid), set()).add(bytes(d))
        return out

    def subjects_for(self, digests: Sequence[bytes]) -> dict[bytes, str]:
        if not digests:
            return {}
        rows = self._read(
            "SELECT b.digest, r.subject_id FROM digests b"
            " JOIN records r ON r.record_id = b.record_id"
            " WHERE b.digest = ANY(%b)",
            (list(dict.fromkeys(digests)),),
        )
        out: dict[bytes, str] = {}
        for digest, subject in rows:
            out.setdefault(bytes(digest), str(subject))
        return out

    def subject_records(self, subject_id: str) -> list[StoredRecord]:
        rows = self._read(
            "SELECT " + RECORD_COLUMNS + " FROM records WHERE subject_id = %s"
            " ORDER BY created_at, record_id",
            (subject_id,),
        )
        return [_record(r) for r in rows]

    def blocks(self, subject_ids: Sequence[str]) -> list[SubjectBlock]:
        if not subject_ids:
            return []
        rows = self._read(
            "SELECT " + BLOCK_COLUMNS + " FROM subject_blocks WHERE subject_id = ANY(%b::text[])"
            " ORDER BY since, request_id",
            (list(dict.fromkeys(subject_ids)),),
        )
        return [SubjectBlock.from_row(r) for r in rows]

    def count(self) -> int:
        return int(self._read("SELECT count(*) FROM records WHERE primary_site IS NULL")[0][0])

    def count_subjects(self) -> int:
        return int(
            self._read("SELECT count(DISTINCT subject_id) FROM records WHERE primary_site IS NULL")[
                0
            ][0]
        )

    def get_many(self, record_ids: Sequence[str]) -> dict[str, StoredRecord]:
        if not record_ids:
            return {}
        rows = self._read(
            "SELECT " + RECORD_COLUMNS + " FROM records WHERE record_id = ANY(%b::text[])",
            (list(record_ids),),
        )
        return {str(r[0]): _record(r) for r in rows}

    def outbox(self, limit: int) -> list[OutboxItem]:
        rows = self._read(
            "SELECT seq, record_id, subject_id, target_site, op, created_at FROM outbox"
            " ORDER BY seq LIMIT %s",
            (limit,),
        )
        return [
            OutboxItem(int(s), str(r), str(sub), str(t), op, str(c)) for s, r, sub, t, op, c in rows
        ]

    def _apart(self, purpose: str) -> _Database:
        """A connection of its own for ``purpose`` (made when first used), for a
        transaction that stays open while the caller works elsewhere: an outbox claim held
        while the items are delivered, a hold while an upsert reads and writes. The
        connection of writes stays free for the process's other writes meanwhile."""
        with self._db.lock:
            db = self._aside.get(purpose)
            if db is None:
                db = _Database(self.site_id, self._base, "its database")
                db.read_only = self._db.read_only
                conn = db.open()
                db.identity = self._db.identity
                try:
                    db._check_identity(conn)
                except BaseException:
                    conn.close()
                    raise
                db.adopt(conn)
                self._aside[purpose] = db
            return db

    @contextmanager
    def hold(self, name: str) -> Iterator[None]:
        """A transaction-level advisory lock on ``name`` (``HOLD_LOCK``, ``hashtext``), in a
        transaction of its own that lasts as long as the block: every process and host
        serving the site waits for it. A process that dies releases it with its
        connection."""
        db = self._apart("hold")
        with db.lock:  # re-entrant: a hold inside a hold joins the outer transaction
            outer = self._holding
            conn = outer if outer is not None else db.begin("cannot hold the site")
            self._holding = conn
            try:
                try:
                    conn.execute(
                        "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (HOLD_LOCK, name)
                    )
                except psycopg.Error as exc:
                    raise db.unavailable("cannot hold the site", exc) from None
                yield
            except BaseException:
                if outer is None:
                    db.rollback(conn)
                raise
            finally:
                self._holding = outer
            if outer is None:
                db.commit(conn, "cannot release the site")

    @contextmanager
    def claim_outbox(self, limit: int) -> Iterator[OutboxClaim]:
        """Several workers, in as many processes or hosts, share one outbox: each takes the
        oldest items no other worker holds (``FOR UPDATE SKIP LOCKED``) in a transaction
        that lasts until the items are delivered and dequeued. A worker killed meanwhile
        loses its connection; the server rolls the transaction back and the items are free
        for the next worker (delivery is idempotent at the target).

        A subject's items keep their order: an item is delivered only if no earlier item of
        its subject is still in the outbox outside this claim (held by another worker, or
        left by a worker that died). Such items are deferred, still held until this claim
        ends so no one else takes them out of turn either."""
        db = self._apart("claim")
        with db.lock:
            conn = db.begin("cannot take outbox items")
            try:
                try:
                    rows = conn.execute(CLAIM_OUTBOX_SQL, (limit,)).fetchall()
                    items = [
                        OutboxItem(int(s), str(r), str(sub), str(t), op, str(c))
                        for s, r, sub, t, op, c in rows
                    ]
                    earlier: dict[str, int] = {}
                    if items:
                        earlier = {
                            str(sub): int(seq)
                            for sub, seq in conn.execute(
                                EARLIER_OUTBOX_SQL,
                                (
                                    list({i.subject_id for i in items}),
                                    items[-1].seq,
                                    [i.seq for i in items],
                                ),
                            ).fetchall()
                        }
                except psycopg.Error as exc:
                    raise db.unavailable("cannot take outbox items", exc) from None
                ready = [i for i in items if earlier.get(i.subject_id, i.seq + 1) > i.seq]
                tx = _Tx(db, conn)
                yield OutboxClaim(ready, lambda: nullcontext(tx), len(items) - len(ready))
            except BaseException:
                db.rollback(conn)
                raise
            db.commit(conn, "clearing the outbox did not commit")

    def replicas(self, after: str, limit: int) -> list[StoredRecord]:
        rows = self._read(
            "SELECT " + RECORD_COLUMNS + " FROM records"
            " WHERE primary_site IS NOT NULL AND record_id > %s ORDER BY record_id LIMIT %s",
            (after, limit),
        )
        return [_record(r) for r in rows]

    def records_after(self, after: str, limit: int) -> list[StoredRecord]:
        rows = self._read(
            "SELECT " + RECORD_COLUMNS + " FROM records"
            " WHERE record_id > %s ORDER BY record_id LIMIT %s",
            (after, limit),
        )
        return [_record(r) for r in rows]

    def subject_roles(self) -> dict[str, bool]:
        rows = self._read(
            "SELECT subject_id, bool_and(primary_site IS NOT NULL) FROM records GROUP BY subject_id"
        )
        return {str(sid): bool(only_copies) for sid, only_copies in rows}

    def audit_tagged(
        self, prefix: str, upto: int, *, containing: str | None = None, newest: bool = False
    ) -> list[AuditRow]:
        sql = (
            "SELECT seq, payload, prev_hash, hash FROM audit"
            " WHERE seq <= %s AND left(payload, %s) = %s"
        )
        args: tuple[object, ...] = (upto, len(prefix), prefix)
        if containing is not None:
            sql += " AND strpos(payload, %s) > 0"
            args += (containing,)
        sql += " ORDER BY seq DESC LIMIT 1" if newest else " ORDER BY seq"
        rows = self._read(sql, args)
        return [AuditRow(int(q), str(p), bytes(v), bytes(h)) for q, p, v, h in rows]

    def count_replicas(self) -> int:
        return int(self._read("SELECT count(*) FROM records WHERE primary_site IS NOT NULL")[0][0])

    def transfer_counts(self, year: int, to_country: str) -> tuple[int, int]:
        row = self._read(
            "SELECT count(*), count(*) FILTER (WHERE sensitive) FROM transfer_subjects"
            " WHERE year = %s AND to_country = %s",
            (year, to_country),
        )[0]
        return int(row[0]), int(row[1])

    def audit(self, start: int = 1) -> Iterator[AuditRow]:
        # Pages in sequence order (keyset), one query each, so memory stays bounded on long
        # chains and no lock or snapshot is held while the caller consumes a page.
        last = start - 1
        while True:
            rows = self._read(
                "SELECT seq, payload, prev_hash, hash FROM audit WHERE seq > %s"
                " ORDER BY seq LIMIT %s",
                (last, AUDIT_PAGE),
            )
            for seq, payload, prev, h in rows:
                yield AuditRow(int(seq), str(payload), bytes(prev), bytes(h))
                last = max(last, int(seq))
            if len(rows) < AUDIT_PAGE:
                return

    def checkpoints(self) -> list[Checkpoint]:
        rows = self._read("SELECT seq, hash, signed_at, signature FROM checkpoints ORDER BY seq")
        return [Checkpoint(int(s), bytes(h), str(t), bytes(sig)) for s, h, t, sig in rows]

    def heads(self) -> list[HeadRow]:
        rows = self._read("SELECT size, root, signed_at, signature FROM tree_heads ORDER BY size")
        return [_head(r) for r in rows]

    def tree_nodes(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        if not keys:
            return {}
        rows = self._read(
            "SELECT n.level, n.idx, n.hash FROM tree_nodes n"
            " JOIN unnest(%b::int4[], %b::int8[]) AS k(level, idx)"
            " ON n.level = k.level AND n.idx = k.idx",
            ([k[0] for k in keys], [k[1] for k in keys]),
        )
        return {(int(level), int(idx)): bytes(h) for level, idx, h in rows}

    def witnessed(self, site: str | None = None) -> list[WitnessRow]:
        if site is None:
            rows = self._read("SELECT " + WITNESS_COLUMNS + " FROM witnessed ORDER BY site, size")
        else:
            rows = self._read(
                "SELECT " + WITNESS_COLUMNS + " FROM witnessed WHERE site = %s ORDER BY size",
                (site,),
            )
        return [_witness(r) for r in rows]


# -- key store -----------------------------------------------------------------------------


class PostgresKeyStore(KeyStore):
    backend = "postgresql"

    def __init__(self, site_id: str, url: str) -> None:
        super().__init__(site_id, url)
        base, self._options = split_options(url)
        self._db = _Database(site_id, base, "its key store")

    @property
    def display_url(self) -> str:
        return self._db.display_url

    def open(
        self,
        *,
        create: bool = False,
        creation_id: str | None = None,
        read_only: bool = False,
        adopt: bool = False,
        create_database: bool = False,
    ) -> None:
        self._db.set_readers(readers_option(self.site_id, self._options))
        self.creation_id, self.created = _open(
            self._db, self.site_id, "key", KEY_MIGRATIONS["postgresql"], create=create,
            creation_id=creation_id, read_only=read_only, adopt=adopt,
            create_database=create_database,
        )  # fmt: skip

    def close(self) -> None:
        self._db.close()

    def ping(self) -> bool:
        try:
            self._db.run(lambda c: _fetch(c, "SELECT 1"), "ping")
        except SiteUnavailable:
            return False
        return True

    def _read(self, query: LiteralString, args: Sequence[object] = ()) -> list[TupleRow]:
        return self._db.run(lambda c: _fetch(c, query, args), "its key store failed")

    def get(self, subject_id: str) -> WrappedKey | None:
        rows = self._read(
            "SELECT kek_version, wrapped FROM subject_keys WHERE subject_id = %s", (subject_id,)
        )
        if not rows:
            return None
        version, wrapped = rows[0]
        return WrappedKey(int(version), bytes(wrapped))

    def get_many(self, subject_ids: Sequence[str]) -> dict[str, WrappedKey]:
        if not subject_ids:
            return {}
        rows = self._read(
            "SELECT subject_id, kek_version, wrapped FROM subject_keys WHERE subject_id = ANY(%b::text[])",
            (list(subject_ids),),
        )
        return {str(s): WrappedKey(int(v), bytes(w)) for s, v, w in rows}

    def put_many(self, keys: Sequence[tuple[str, WrappedKey]]) -> None:
        if not keys:
            return
        now = _now()
        rows = [(sid, k.kek_version, k.wrapped, now) for sid, k in keys]

        def put(conn: Conn) -> None:
            with conn.cursor() as cur, cur.copy(COPY_KEYS) as copy:
                copy.set_types(["text", "int4", "bytea", "text"])
                for row in rows:
                    copy.write_row(row)

        # One COPY outside a transaction block: a statement of its own, all or nothing,
        # committed before the call returns (so before any data sealed with these keys),
        # without the round trips of BEGIN and COMMIT.
        self._db.write_one(put, "its key store failed")

    def delete(self, subject_id: str) -> bool:
        # Deleting the row is the crypto-shredding step. The dead tuple stays in the table
        # file until (auto)vacuum reclaims it, and in WAL and backups for their retention.
        def delete(conn: Conn) -> bool:
            cur = conn.execute("DELETE FROM subject_keys WHERE subject_id = %s", (subject_id,))
            return cur.rowcount > 0

        return self._db.write(delete, "its key store failed")

    def stale(self, current_version: int, limit: int) -> list[tuple[str, WrappedKey]]:
        rows = self._read(
            "SELECT subject_id, kek_version, wrapped FROM subject_keys"
            " WHERE kek_version != %s LIMIT %s",
            (current_version, limit),
        )
        return [(str(s), WrappedKey(int(v), bytes(w))) for s, v, w in rows]

    def rewrap(self, subject_id: str, old: WrappedKey, new: WrappedKey) -> bool:
        def rewrap(conn: Conn) -> bool:
            cur = conn.execute(
                "UPDATE subject_keys SET kek_version = %s, wrapped = %s"
                " WHERE subject_id = %s AND wrapped = %s",
                (new.kek_version, new.wrapped, subject_id, old.wrapped),
            )
            return cur.rowcount == 1

        return self._db.write(rewrap, "its key store failed")

    def versions(self) -> dict[int, int]:
        rows = self._read("SELECT kek_version, count(*) FROM subject_keys GROUP BY kek_version")
        return {int(v): int(n) for v, n in rows}
