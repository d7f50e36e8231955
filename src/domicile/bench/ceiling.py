"""The ceiling: a scratch implementation of exactly the work record layout 3 requires.

No policy, no placement, no classes: straight-line code doing what no implementation of the
layout can skip, on the same backend and with the same journal settings as the site stores:

- put, per record: one AES-GCM seal of ``[residency, fields]`` (JSON) whose associated data
  binds site, collection, record id, version and the field-name header; two HMAC-SHA256
  blind-index digests of the e-mail address (its collection's and the identity one) into a
  compact ``(digest, record)`` table; per batch: one audit entry naming every record,
  hash-chained to the previous one; the records, digests and entry inserted in one
  transaction (``COPY`` on PostgreSQL, ``executemany`` on SQLite);
- get, per read: the indexed select of the record, one AES-GCM open, and one hash-chained
  audit entry committed before the value is returned; concurrent readers share one commit
  (group commit: whoever waits first writes every pending entry in one transaction);
- replication (``replicate``): a batch of sealed bodies read in id order, each opened and
  sealed again for the target site under the subject's own data key there (made and wrapped
  under the target's key-encryption key the first time the subject arrives: erasing a subject
  at the target must shred its key), and one hash-chained transfer entry per copy (the
  ledger lists every transfer by record, subject and destination); keys, copies and entries
  written in one transaction per batch at the target.

With a key store (``keys_url``, as the benchmarks give it), put also does what
crypto-shredding requires of every new subject: a data key of its own, made and wrapped
under the site's key-encryption key (AES-GCM, associated data naming site and subject), its
row written to the separate key store and committed before the records it opens (keys apart
from data); each record is sealed under its subject's key. Without one, a single data key
serves every record (the shape of the first ceiling, kept for comparison).

Not counted, although domicile does them: the identity lookup that joins a record to its
subject's earlier ones, residency resolution, placement, the policy decision per copy,
tokens, the outbox. So the ceiling is an upper bound for what the layout allows.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from domicile.bench.judging import in_threads, split, timed

NONCE = 12
COLLECTION = b"profiles"
AUDIT_TAG = b"domicile/audit/v1"
FIELDS = ("full_name", "email", "phone", "headline", "city")
HEADER = b"\xd3" + len("\x00".join(FIELDS)).to_bytes(2, "big") + "\x00".join(FIELDS).encode()

_SQLITE_SCHEMA = (
    "CREATE TABLE records (record_id TEXT PRIMARY KEY, subject_id TEXT NOT NULL,"
    " collection TEXT NOT NULL, version INTEGER NOT NULL, created_at TEXT NOT NULL,"
    " updated_at TEXT NOT NULL, fields BLOB NOT NULL)",
    "CREATE INDEX records_subject ON records (subject_id)",
    "CREATE TABLE digests (digest BLOB NOT NULL, record_id TEXT NOT NULL,"
    " PRIMARY KEY (digest, record_id)) WITHOUT ROWID",
    "CREATE INDEX digests_record ON digests (record_id)",
    "CREATE TABLE audit (seq INTEGER PRIMARY KEY, payload TEXT NOT NULL,"
    " prev_hash BLOB NOT NULL, hash BLOB NOT NULL)",
)
_SQLITE_KEYS = (
    "CREATE TABLE subject_keys (subject_id TEXT PRIMARY KEY, kek_version INTEGER NOT NULL,"
    " wrapped BLOB NOT NULL, created_at TEXT NOT NULL)",
    "CREATE INDEX subject_keys_version ON subject_keys (kek_version)",
)
_PG_SCHEMA = tuple(
    s.replace("BLOB", "BYTEA")
    .replace(" WITHOUT ROWID", "")
    .replace("INTEGER PRIMARY", "BIGINT PRIMARY")
    for s in _SQLITE_SCHEMA
)


def _ids(n: int) -> list[str]:
    """Time-ordered ids, as the vault makes them (index-friendly)."""
    ms = (time.time_ns() // 1_000_000).to_bytes(6, "big").hex()
    pool = os.urandom(10 * n).hex()
    return [ms + pool[i : i + 20] for i in range(0, 20 * n, 20)]


class Scratch:
    """The required work against one database (``sqlite:PATH`` or a PostgreSQL URL)."""

    def __init__(self, url: str, site: str = "bench", *, keys_url: str | None = None) -> None:
        self.url = url
        self.site = site.encode()
        self.sqlite = url.startswith("sqlite:")
        self.aead = AESGCM(AESGCM.generate_key(256))
        self.index_key = os.urandom(32)
        self.kek = AESGCM(AESGCM.generate_key(256))  # the site's key-encryption key
        # Each subject's data key as put made it (unwrapped: the cache domicile keeps).
        self.data_keys: dict[str, AESGCM] = {}
        self.keys_conn: Any = None
        if keys_url is not None:
            self.keys_conn = self._connect(keys_url)
            for stmt in _SQLITE_KEYS:
                self.keys_conn.execute(stmt if self.sqlite else stmt.replace("BLOB", "BYTEA"))
            if not self.sqlite:
                self.keys_conn.commit()
        self.seq = 0
        self.head = b""
        self.chain_lock = threading.Lock()
        # Data keys of subjects copied here (``replicate``), unwrapped: a cache, as
        # domicile keeps one; records written by ``put`` share ``aead``.
        self.subject_keys: dict[str, AESGCM] = {}
        conn = self.connect()
        for stmt in _SQLITE_SCHEMA if self.sqlite else _PG_SCHEMA:
            conn.execute(stmt)
        if not self.sqlite:
            conn.commit()
        self.conn = conn

    def connect(self, *, autocommit: bool = False) -> Any:
        return self._connect(self.url, autocommit=autocommit)

    def _connect(self, url: str, *, autocommit: bool = False) -> Any:
        if url.startswith("sqlite:"):
            conn = sqlite3.connect(
                url.removeprefix("sqlite:"), isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            return conn
        import psycopg

        return psycopg.connect(url, autocommit=autocommit)

    def close(self) -> None:
        self.conn.close()
        if self.keys_conn is not None:
            self.keys_conn.close()

    def _entry(self, payload: str) -> tuple[int, str, bytes, bytes]:
        """The next audit entry (call holding ``chain_lock``)."""
        seq = self.seq + 1
        digest = hashlib.sha256(
            AUDIT_TAG + self.head + struct.pack(">Q", seq) + payload.encode()
        ).digest()
        return seq, payload, self.head, digest

    def _advance(self, entry: tuple[int, str, bytes, bytes]) -> None:
        self.seq, self.head = entry[0], entry[3]

    def put(
        self, items: Sequence[dict[str, Any]], batch: int, advance: Callable[[int], None]
    ) -> float:
        """Seconds to write ``items`` (population records) in batches of ``batch``."""

        def work() -> None:
            for i in range(0, len(items), batch):
                chunk = items[i : i + batch]
                self._put_batch(chunk)
                advance(len(chunk))

        return timed(work)

    def _put_batch(self, chunk: Sequence[dict[str, Any]]) -> None:
        n = len(chunk)
        rids, sids = _ids(n), _ids(n)
        nonces = os.urandom(NONCE * n)
        now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
        start = b"\x00".join((b"domicile/record/v3", self.site, COLLECTION))
        encrypt = self.aead.encrypt
        key = self.index_key
        records = []
        digests = []
        if self.keys_conn is not None:  # each record a new subject, as the benchmarks write
            self._new_keys(sids, now)
        for k, item in enumerate(chunk):
            rid = rids[k]
            nonce = nonces[NONCE * k : NONCE * (k + 1)]
            residency = json.dumps(item["subject"], sort_keys=True, separators=(",", ":"))
            ad = b"\x00".join((start, rid.encode(), b"1", HEADER))
            if self.keys_conn is not None:
                encrypt = self.data_keys[sids[k]].encrypt
            body = HEADER + nonce + encrypt(nonce, orjson.dumps([residency, item["fields"]]), ad)
            records.append((rid, sids[k], "profiles", 1, now, now, body))
            email = item["fields"]["email"].strip().lower().encode()
            for prefix in (b"profiles\x00email\x00", b"@identity\x00user.contact.email\x00"):
                digests.append((hmac.digest(key, prefix + email, hashlib.sha256)[:16], rid))
        payload = json.dumps({"action": "write", "records": rids}, separators=(",", ":"))
        with self.chain_lock:
            entry = self._entry(payload)
            if self.sqlite:
                c = self.conn
                c.execute("BEGIN")
                c.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?)", records)
                c.executemany("INSERT INTO digests VALUES (?, ?)", digests)
                c.execute("INSERT INTO audit VALUES (?, ?, ?, ?)", entry)
                c.execute("COMMIT")
            else:
                with self.conn.transaction(), self.conn.cursor() as cur:
                    with cur.copy(
                        "COPY records (record_id, subject_id, collection, version, created_at,"
                        " updated_at, fields) FROM STDIN"
                    ) as copy:
                        for r in records:
                            copy.write_row(r)
                    with cur.copy("COPY digests (digest, record_id) FROM STDIN") as copy:
                        for d in digests:
                            copy.write_row(d)
                    cur.execute("INSERT INTO audit VALUES (%s, %s, %s, %s)", entry)
            self._advance(entry)

    def _new_keys(self, sids: Sequence[str], now: str) -> None:
        """A data key per subject, wrapped under the key-encryption key and committed to
        the key store before any record it opens is written."""
        kek, site = self.kek, self.site
        nonces = os.urandom(NONCE * len(sids))
        rows = []
        for k, sid in enumerate(sids):
            key = AESGCM.generate_key(256)
            nonce = nonces[NONCE * k : NONCE * (k + 1)]
            wrapped = nonce + kek.encrypt(nonce, key, b"\x00".join((site, sid.encode())))
            rows.append((sid, 1, wrapped, now))
            self.data_keys[sid] = AESGCM(key)
        c = self.keys_conn
        if self.sqlite:
            c.execute("BEGIN")
            c.executemany("INSERT INTO subject_keys VALUES (?, ?, ?, ?)", rows)
            c.execute("COMMIT")
        else:
            with (
                c.transaction(),
                c.cursor() as cur,
                cur.copy(
                    "COPY subject_keys (subject_id, kek_version, wrapped, created_at) FROM STDIN"
                ) as copy,
            ):
                for r in rows:
                    copy.write_row(r)

    def record_ids(self) -> list[str]:
        rows = self.conn.execute("SELECT record_id FROM records ORDER BY record_id").fetchall()
        if not self.sqlite:
            self.conn.commit()
        return [str(r[0]) for r in rows]

    def get(self, ids: Sequence[str], readers: int, advance: Callable[[int], None]) -> float:
        """Seconds for ``readers`` threads, a connection each, to read ``ids``. Each read's
        entry is durable before its value is returned; concurrent readers share commits
        (the first one waiting writes every pending entry in one transaction)."""
        conns = [self.connect(autocommit=True) for _ in range(readers)]
        ph = "?" if self.sqlite else "%s"
        select = f"SELECT subject_id, version, fields FROM records WHERE record_id = {ph}"
        keys, shared = {**self.data_keys, **self.subject_keys}, self.aead
        start = b"\x00".join((b"domicile/record/v3", self.site, COLLECTION))
        group = _GroupCommit(self, f"INSERT INTO audit VALUES ({ph}, {ph}, {ph}, {ph})")

        def reader(n: int) -> None:
            conn = conns[n]
            for rid in split(ids, readers)[n]:
                sid, version, body = conn.execute(select, (rid,)).fetchone()
                body = bytes(body)
                end = 3 + int.from_bytes(body[1:3], "big")
                header, sealed = body[:end], body[end:]
                ad = b"\x00".join((start, rid.encode(), b"%d" % version, header))
                aead = keys.get(sid, shared)
                residency, fields = orjson.loads(aead.decrypt(sealed[:NONCE], sealed[NONCE:], ad))
                if not (residency and fields.get("email")):
                    raise RuntimeError("the scratch store returned a record without its fields")
                payload = json.dumps({"action": "read", "records": [rid]}, separators=(",", ":"))
                group.append(conn, payload)  # returns once the entry is committed
                advance(1)

        try:
            return in_threads(readers, reader)
        finally:
            for c in conns:
                c.close()


class _GroupCommit:
    """Read entries appended by concurrent readers, one transaction for all that wait."""

    def __init__(self, scratch: Scratch, insert: str) -> None:
        self.scratch = scratch
        self.insert = insert
        self.cond = threading.Condition()
        self.pending: list[str] = []
        self.queued = 0  # entries handed in so far
        self.durable = 0  # entries committed so far
        self.writing = False

    def append(self, conn: Any, payload: str) -> None:
        with self.cond:
            self.pending.append(payload)
            self.queued += 1
            mine = self.queued
            while self.durable < mine:
                if self.writing:
                    self.cond.wait()
                    continue
                self.writing = True
                batch, self.pending = self.pending, []
                upto = self.queued
                self.cond.release()
                try:
                    self._write(conn, batch)
                finally:
                    self.cond.acquire()
                    self.writing = False
                self.durable = upto
                self.cond.notify_all()

    def _write(self, conn: Any, payloads: list[str]) -> None:
        s = self.scratch
        with s.chain_lock:
            entries = []
            for payload in payloads:
                entry = s._entry(payload)
                s._advance(entry)
                entries.append(entry)
            if s.sqlite:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(self.insert, entries)
                conn.execute("COMMIT")
            else:
                with conn.transaction(), conn.cursor() as cur:
                    cur.executemany(self.insert, entries)


def replicate(
    source: Scratch, target: Scratch, batch: int, advance: Callable[[int], None]
) -> float:
    """Seconds to copy every record of ``source`` to ``target`` as layout 3 requires: read
    a batch of sealed bodies in id order, open each under the source's key and seal it
    again under the subject's data key at the target (made and wrapped there on the
    subject's first copy; associated data naming the target site), then write the new
    wrapped keys, the batch and one hash-chained transfer entry per copy in one transaction
    at the target. (The outbox that drives domicile's worker is not counted.)"""
    ph = "?" if source.sqlite else "%s"
    select = (
        "SELECT record_id, subject_id, collection, version, created_at, updated_at, fields"
        f" FROM records WHERE record_id > {ph} ORDER BY record_id LIMIT {ph}"
    )
    keys_table = "CREATE TABLE IF NOT EXISTS subject_keys (subject_id TEXT PRIMARY KEY, wrapped BLOB NOT NULL)"
    target.conn.execute(keys_table if target.sqlite else keys_table.replace("BLOB", "BYTEA"))
    if not target.sqlite:
        target.conn.commit()
    start = b"\x00".join((b"domicile/record/v3", source.site, COLLECTION))
    there = b"\x00".join((b"domicile/record/v3", target.site, COLLECTION))
    subject_keys = target.subject_keys  # the target's data key of each subject, once made
    frm, to = source.site.decode(), target.site.decode()

    def work() -> None:
        last = ""
        while True:
            got = source.conn.execute(select, (last, batch)).fetchall()
            if not source.sqlite:
                source.conn.commit()
            if not got:
                return
            nonces = os.urandom(NONCE * len(got))
            rows, new_keys, payloads = [], [], []
            for k, (rid, sid, coll, version, created, updated, body) in enumerate(got):
                body = bytes(body)
                end = 3 + int.from_bytes(body[1:3], "big")
                header, sealed = body[:end], body[end:]
                v = b"%d" % version
                plain = source.data_keys.get(sid, source.aead).decrypt(
                    sealed[:NONCE], sealed[NONCE:], b"\x00".join((start, rid.encode(), v, header))
                )
                aead = subject_keys.get(sid)
                if aead is None:  # the subject's first copy here: its own key, wrapped
                    key = AESGCM.generate_key(256)
                    wrap_nonce = os.urandom(NONCE)
                    wrapped = wrap_nonce + target.aead.encrypt(wrap_nonce, key, sid.encode())
                    new_keys.append((sid, wrapped))
                    aead = subject_keys[sid] = AESGCM(key)
                nonce = nonces[NONCE * k : NONCE * (k + 1)]
                ad = b"\x00".join((there, rid.encode(), v, header))
                rows.append(
                    (
                        rid,
                        sid,
                        coll,
                        version,
                        created,
                        updated,
                        header + nonce + aead.encrypt(nonce, plain, ad),
                    )
                )
                payloads.append(
                    orjson.dumps(
                        {
                            "action": "transfer", "record": rid, "subject": sid, "from": frm,
                            "to": to, "categories": FIELDS, "version": version, "at": updated,
                        }
                    ).decode()
                )  # fmt: skip
            ids = [r[0] for r in rows]
            with target.chain_lock:
                entries = []
                for payload in payloads:
                    entry = target._entry(payload)
                    target._advance(entry)
                    entries.append(entry)
                c = target.conn
                if target.sqlite:
                    c.execute("BEGIN")
                    c.executemany("INSERT INTO subject_keys VALUES (?, ?)", new_keys)
                    c.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                    c.executemany("INSERT INTO audit VALUES (?, ?, ?, ?)", entries)
                    c.execute("COMMIT")
                else:
                    with c.transaction(), c.cursor() as cur:
                        with cur.copy("COPY subject_keys (subject_id, wrapped) FROM STDIN") as copy:
                            for kr in new_keys:
                                copy.write_row(kr)
                        with cur.copy(
                            "COPY records (record_id, subject_id, collection, version,"
                            " created_at, updated_at, fields) FROM STDIN"
                        ) as copy:
                            for r in rows:
                                copy.write_row(r)
                        with cur.copy(
                            "COPY audit (seq, payload, prev_hash, hash) FROM STDIN"
                        ) as copy:
                            for e in entries:
                                copy.write_row(e)
            last = ids[-1]
            advance(len(rows))

    return timed(work)
