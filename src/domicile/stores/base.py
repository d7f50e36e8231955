"""The site-store interface and its row types.

A store holds, for one site: records (each a sealed body), blind-index entries,
the audit chain and its signed checkpoints, and a little metadata (schema version, the
site it belongs to). Everything that changes does so inside ``transaction()``; the vault
writes a record, its index entries and its audit entry in one transaction.

Stores never see plaintext personal data: field values arrive sealed, index entries are
keyed digests, audit payloads hold ids and decisions only.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from domicile.crypto.errors import DecryptionFailed
from domicile.errors import DomicileError, ExitCode

AUDIT_TAG = b"domicile/audit/v1"


def entry_hash(prev: bytes, seq: int, payload: str) -> bytes:
    """An audit entry's hash: SHA-256 over a domain tag, the previous entry's hash, the
    entry's sequence number (8 bytes, big-endian) and its payload (UTF-8)."""
    return hashlib.sha256(
        AUDIT_TAG + prev + struct.pack(">Q", seq) + payload.encode("utf-8")
    ).digest()


class SiteUnavailable(DomicileError):
    """A site cannot be reached, or will not accept writes. Nothing was written anywhere."""

    code = "site_unavailable"
    exit_code = ExitCode.UNAVAILABLE

    def __init__(self, site: str, reason: str, *, hint: str | None = None) -> None:
        super().__init__(
            f"site {site!r} is unavailable: {reason}",
            hint=hint
            or "nothing was written; retry when the site is back (data never falls back to another site)",
            site=site,
        )
        self.site = site
        self.reason = reason  # may name the database: for the operator, never for a client


SETUP_HINT = (
    "sites are created only by `domicile init` or `domicile sites create ID`; if the"
    " database was moved or renamed, put it back"
)


class StoreMissing(SiteUnavailable):
    """The store's database (SQLite file, PostgreSQL database) does not exist. Only setup
    creates one: anywhere else a missing database is an unavailable site, never a new one."""

    def __init__(self, site: str, reason: str, *, hint: str | None = None) -> None:
        super().__init__(site, reason, hint=hint or SETUP_HINT)


class NoSchema(SiteUnavailable):
    """The database exists but holds no domicile store (an empty database put in place)."""

    def __init__(self, site: str, reason: str, *, hint: str | None = None) -> None:
        super().__init__(site, reason, hint=hint or SETUP_HINT)


class SchemaOutdated(SiteUnavailable):
    """A read-only open found a schema older than this code; reads never migrate."""


class SchemaTooNew(DomicileError):
    code = "schema_too_new"
    exit_code = ExitCode.ENVIRONMENT


class StoreMismatch(SiteUnavailable):
    """The database is not the store the deployment created for this site: another site's,
    another kind of store, or one with another creation id. It is refused like an
    unreachable site (a swapped database must never be written to as if it were the site)."""

    code = "store_mismatch"

    def __init__(self, site: str, reason: str, *, hint: str | None = None) -> None:
        super().__init__(
            site,
            reason,
            hint=hint
            or "nothing was written; check the backend URLs in the configuration and put the"
            " site's own database back",
        )


class VersionConflict(DomicileError):
    code = "version_conflict"
    exit_code = ExitCode.CHECK_FAILED


# The first byte of a record body in layout 3: one AES-GCM seal over every field. A body in
# layout 2 (one seal per field, packed by ``pack_fields``) starts with the length of its
# first field name, at most 64, so the two cannot be confused.
LAYOUT3 = b"\xd3"
_HEADERS: dict[bytes, tuple[str, ...]] = {}  # a layout-3 header's field names (a few shapes)


def body_header(names: Sequence[str]) -> bytes:
    """The start of a layout-3 body: LAYOUT3, then the names of the fields it holds
    (2-byte length, names joined by NUL). The names are the collection's schema, no
    personal data; they are bound into the seal's associated data."""
    raw = "\x00".join(names).encode()
    return LAYOUT3 + len(raw).to_bytes(2, "big") + raw


def split_body(body: bytes) -> tuple[bytes, tuple[str, ...], bytes]:
    """A layout-3 body as (header, field names, sealed part); ``DecryptionFailed`` if it
    is malformed."""
    if len(body) < 3:
        raise _corrupt()
    end = 3 + int.from_bytes(body[1:3], "big")
    header = bytes(body[:end])
    names = _HEADERS.get(header)
    if names is None:
        if len(body) < end:
            raise _corrupt()
        try:
            text = header[3:].decode()
        except UnicodeDecodeError:
            raise _corrupt() from None
        names = tuple(text.split("\x00")) if text else ()
        if len(_HEADERS) < 4096:
            _HEADERS[header] = names
    return header, names, body[end:]


@dataclass(frozen=True)
class StoredRecord:
    """A record as a site stores it: ids, version and times in the clear (no personal data),
    and its ``body``, sealed under its subject's data key (see ``domicile.vault.sealing``)."""

    record_id: str
    subject_id: str
    collection: str
    version: int
    created_at: str
    updated_at: str
    body: bytes  # layout 3: LAYOUT3 + one sealed value; layout 2: ``pack_fields`` of seals
    primary_site: str | None = None  # set on a replica: the site holding the primary

    # The ``__init__`` a frozen dataclass is given sets each field through a call to
    # ``object.__setattr__``; a write makes a record for every row, so this one puts the
    # fields into the instance at once (the same attributes, frozen all the same).
    def __init__(
        self,
        record_id: str,
        subject_id: str,
        collection: str,
        version: int,
        created_at: str,
        updated_at: str,
        body: bytes,
        primary_site: str | None = None,
    ) -> None:
        self.__dict__.update(
            record_id=record_id, subject_id=subject_id, collection=collection, version=version,
            created_at=created_at, updated_at=updated_at, body=body, primary_site=primary_site,
        )  # fmt: skip

    @property
    def layout(self) -> int:
        return 3 if self.body[:1] == LAYOUT3 else 2

    @property
    def fields(self) -> dict[str, bytes]:
        """A layout-2 body's sealed fields, by name (``DecryptionFailed`` if malformed)."""
        if self.layout == 3:
            raise TypeError("a layout-3 record has no separately sealed fields")
        return unpack_fields(self.body)

    @property
    def field_names(self) -> tuple[str, ...]:
        """The names of the fields the record holds (read without opening it)."""
        if self.layout == 3:
            return split_body(self.body)[1]
        return tuple(n for n in unpack_fields(self.body) if not n.startswith("@"))

    @property
    def is_replica(self) -> bool:
        return self.primary_site is not None

    def row(self) -> tuple[str, str, str, int, str, str, bytes, str | None]:
        """The ``records`` columns, in the order of ``RECORD_COLUMNS``."""
        return (
            self.record_id, self.subject_id, self.collection, self.version,
            self.created_at, self.updated_at, self.body, self.primary_site,
        )  # fmt: skip


RECORD_COLUMNS = (
    "record_id, subject_id, collection, version, created_at, updated_at, fields, primary_site"
)


@dataclass(frozen=True)
class OutboxItem:
    """Work for the replication worker: copy (``upsert``) or remove (``delete``) one record
    at a target site, or remove everything of a subject there (``erase``)."""

    seq: int
    record_id: str
    subject_id: str
    target_site: str
    op: Literal["upsert", "delete", "erase"]
    created_at: str


@dataclass
class OutboxClaim:
    """Outbox items one worker took, and how it clears them once delivered.

    ``transaction()`` opens the transaction that counts the transfers, records refusals
    and dequeues the items. Where several workers may run at once (PostgreSQL) it is the
    transaction that holds the items (``SELECT ... FOR UPDATE SKIP LOCKED``) from the
    moment they were taken, committed when the claim ends; a worker that dies before
    then releases them, and another takes them again. ``deferred``: items taken but left
    for later because an earlier item of the same subject is held by another worker (a
    subject's items are delivered in order)."""

    items: list[OutboxItem]
    transaction: Callable[[], AbstractContextManager[StoreTransaction]]
    deferred: int = 0


class IndexEntry(NamedTuple):
    """A blind-index entry: a keyed digest of one value and the record that holds it. The
    digest already names its collection and field (they are part of what is hashed), so
    the entry needs nothing else. A named tuple: the row the ``digests`` table takes, as
    it is (a write makes two or more of them per record)."""

    digest: bytes
    record_id: str


@dataclass(frozen=True)
class AuditRow:
    seq: int
    payload: str  # canonical JSON, no plaintext personal data
    prev_hash: bytes
    hash: bytes


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: bytes
    signed_at: str
    signature: bytes


@dataclass(frozen=True)
class HeadRow:
    """A signed tree head as a site keeps it (see ``domicile.audit.heads``): the size and
    Merkle root of its log, when and how it was signed, and the compact range of the tree
    at that size (the roots of its perfect subtrees), from which the next head grows."""

    size: int
    root: bytes
    signed_at: str
    signature: bytes
    compact: bytes = b""


@dataclass(frozen=True)
class WitnessRow:
    """Another site's signed tree head, as this site witnessed it; ``seq`` is the entry of
    this site's log that records it."""

    site: str
    size: int
    root: bytes
    signed_at: str
    signature: bytes
    seq: int


@dataclass(frozen=True)
class SubjectBlock:
    """A block on the processing of one subject's data at a site: a restriction of
    processing (``restriction``) or a withdrawal of consent (``withdrawal``), placed by a
    subject's request (``request_id``) at ``since`` by ``by`` (a client id or the
    operator). ``allows``: the legal bases a restriction still lets the data be used for
    (from the packs, ``rules``). Opaque ids and names only: no personal data."""

    subject_id: str
    kind: Literal["restriction", "withdrawal"]
    request_id: str
    since: str
    by: str | None
    allows: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()

    def row(self) -> tuple[str, str, str, str, str | None, str, str]:
        """The ``subject_blocks`` columns, in the order of ``BLOCK_COLUMNS``."""
        return (
            self.subject_id, self.kind, self.request_id, self.since, self.by,
            ",".join(self.allows), ",".join(self.rules),
        )  # fmt: skip

    @classmethod
    def from_row(cls, row: Sequence[object]) -> SubjectBlock:
        sid, kind, rid, since, by, allows, rules = row
        return cls(
            str(sid), "withdrawal" if kind == "withdrawal" else "restriction", str(rid),
            str(since), None if by is None else str(by),
            tuple(a for a in str(allows).split(",") if a),
            tuple(r for r in str(rules).split(",") if r),
        )  # fmt: skip

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind, "request": self.request_id, "since": self.since, "by": self.by,
            "allows": list(self.allows), "rules": list(self.rules),
        }  # fmt: skip


BLOCK_COLUMNS = "subject_id, kind, request_id, since, by_client, allows, rules"

# A record with its subject's blocks, in one query (``SiteStore.get_for_read``): one row per
# block, or one row with the block's columns NULL when the subject has none.
READ_SQL = (
    "SELECT r.record_id, r.subject_id, r.collection, r.version, r.created_at, r.updated_at,"
    " r.fields, r.primary_site, b.subject_id, b.kind, b.request_id, b.since, b.by_client,"
    " b.allows, b.rules FROM records r LEFT JOIN subject_blocks b ON b.subject_id = r.subject_id"
    " WHERE r.record_id = "
)
READ_ORDER = " ORDER BY b.since, b.request_id"


def record_and_blocks(
    rows: Sequence[Sequence[Any]], record: Callable[[Any], StoredRecord]
) -> tuple[StoredRecord | None, list[SubjectBlock]]:
    """The rows of ``READ_SQL`` as the record (made by the backend's ``record`` from its
    first eight columns) and its subject's blocks."""
    if not rows:
        return None, []
    return record(rows[0][:8]), [SubjectBlock.from_row(r[8:]) for r in rows if r[9] is not None]


@dataclass(frozen=True)
class TransferCount:
    """A subject's data went to a country this year (the year-to-date counters)."""

    year: int
    to_country: str
    subject_id: str
    sensitive: bool


# Field names seen in blobs, both ways (a handful per deployment; bounded all the same).
_NAME_HEADS: dict[str, bytes] = {}
_HEAD_NAMES: dict[bytes, str] = {}
_NAMES_CACHED = 4096


def _name_head(name: str) -> bytes:
    head = _NAME_HEADS.get(name)
    if head is None:
        raw = name.encode()
        head = struct.pack(">B", len(raw)) + raw
        if len(_NAME_HEADS) < _NAMES_CACHED:
            _NAME_HEADS[name] = head
    return head


def pack_fields(fields: dict[str, bytes]) -> bytes:
    """Sealed fields to one blob: for each, a 1-byte name length, the name, a 4-byte value
    length and the value."""
    parts: list[bytes] = []
    for name, value in fields.items():
        parts += (_name_head(name), len(value).to_bytes(4, "big"), value)
    return b"".join(parts)


def unpack_fields(blob: bytes) -> dict[str, bytes]:
    """The sealed fields of a blob made by ``pack_fields``. A blob that is cut short, too
    long, or names a field in bytes that are not UTF-8 was altered in the database:
    ``DecryptionFailed``, like any sealed value that does not open."""
    fields: dict[str, bytes] = {}
    blob = bytes(blob)
    end = len(blob)
    i = 0
    while i < end:
        j = i + 1 + blob[i]
        raw = blob[i + 1 : j]
        name = _HEAD_NAMES.get(raw)
        if name is None:
            try:
                name = raw.decode()
            except UnicodeDecodeError:
                raise _corrupt() from None
            if len(_HEAD_NAMES) < _NAMES_CACHED:
                _HEAD_NAMES[raw] = name
        i = j + 4
        if i > end:
            raise _corrupt()
        size = int.from_bytes(blob[j:i], "big")
        if i + size > end:
            raise _corrupt()
        fields[name] = blob[i : i + size]
        i += size
    return fields


def _corrupt() -> DecryptionFailed:
    return DecryptionFailed(
        "a stored record is malformed", hint="the site's data was altered; restore it from a backup"
    )


class StoreTransaction(ABC):
    """Changes to one site, committed together or not at all."""

    @abstractmethod
    def insert(self, records: Sequence[StoredRecord]) -> None: ...

    @abstractmethod
    def replace(self, record: StoredRecord, expect_version: int) -> None:
        """Overwrite a record whose stored version is ``expect_version``, else raise
        ``VersionConflict``."""

    @abstractmethod
    def delete(self, record_ids: Sequence[str]) -> int:
        """Delete records and their index entries; returns how many records went."""

    @abstractmethod
    def hold_subjects(self, subject_ids: Sequence[str]) -> set[str]:
        """Keep these subjects from being erased until this transaction ends, and return
        those of them already erased (a write must not add records to an erased subject)."""

    @abstractmethod
    def erase_subject(self, subject_id: str, erased_at: str) -> int:
        """Delete every record of a subject and their index entries, and its blocks but a
        withdrawal of consent (which stays until it is lifted: a subject whose id is fixed
        by its key may be written again), and remember it as erased, after every
        transaction holding it has ended; returns the records deleted."""

    @abstractmethod
    def index(self, entries: Iterable[IndexEntry]) -> None: ...

    @abstractmethod
    def unindex(self, record_id: str) -> None:
        """Drop every index entry of a record."""

    @abstractmethod
    def audit_head(self) -> tuple[int, bytes]:
        """The last audit sequence number and hash, locked until the transaction ends, so
        appends from concurrent writers chain one after another. (0, b"") when empty."""

    @abstractmethod
    def append_audit(self, rows: Sequence[AuditRow]) -> None: ...

    def chain(self, payloads: Sequence[str]) -> list[AuditRow]:
        """Append ``payloads`` after the locked head, hashing each onto the one before;
        returns the new rows. Backends may do this on the server in one round trip."""
        seq, prev = self.audit_head()
        rows = []
        for payload in payloads:
            seq += 1
            digest = entry_hash(prev, seq, payload)
            rows.append(AuditRow(seq, payload, prev, digest))
            prev = digest
        self.append_audit(rows)
        return rows

    def chain_many(self, payloads: Sequence[str]) -> list[AuditRow]:
        """``chain`` for a batch of many entries (a replication batch's transfers, one per
        copy): backends may append many their own cheaper way. The same rows as ``chain``."""
        return self.chain(payloads)

    def write_batch(
        self,
        records: Sequence[StoredRecord],
        entries: Iterable[IndexEntry],
        outbox: Sequence[tuple[str, str, str, str]],
        payloads: Sequence[str],
    ) -> list[AuditRow]:
        """A batch of new records with their index entries (entries of these records
        only) and outbox items, and the audit entries that name them chained after the
        head, in this transaction; returns the new audit rows. The same as ``insert``,
        ``index``, ``enqueue`` and ``chain`` one after another; a backend may write them its
        own cheaper way."""
        self.insert(records)
        self.index(entries)
        self.enqueue(outbox)
        return self.chain(payloads)

    @abstractmethod
    def add_checkpoint(self, checkpoint: Checkpoint) -> None: ...

    @abstractmethod
    def audit_rows(self, start: int, end: int) -> list[AuditRow]:
        """Audit rows ``start`` to ``end`` (inclusive), in order, as this transaction sees
        them (its own appends included)."""

    @abstractmethod
    def latest_head(self) -> HeadRow | None:
        """The site's own newest tree head (the biggest), with its compact range."""

    @abstractmethod
    def add_head(self, head: HeadRow) -> bool:
        """Keep a signed tree head of this site's log; False if one of that size exists."""

    @abstractmethod
    def add_tree_nodes(self, nodes: Sequence[tuple[int, int, bytes]]) -> None:
        """Keep the roots of complete subtrees, as (level, index, hash): the subtree of
        leaves ``[index * 2**level, (index + 1) * 2**level)`` (already kept: ignored)."""

    @abstractmethod
    def latest_witnessed(self, site: str) -> WitnessRow | None:
        """The newest (biggest) head of ``site`` this site has witnessed."""

    @abstractmethod
    def add_witnessed(self, row: WitnessRow) -> None:
        """Record another site's head as witnessed (with the entry that records it)."""

    @abstractmethod
    def keep_reply(
        self, peer: str, op: str, key: bytes, status: int, answer: str, expires: float, now: float
    ) -> None:
        """Keep a node's first answer to a peer's call (its idempotency key's digest
        ``key``; an answer that holds no value) until ``expires`` (seconds since the
        epoch), unless one is kept already; and drop the answers expired by ``now``."""

    @abstractmethod
    def enqueue(self, items: Sequence[tuple[str, str, str, str]]) -> None:
        """Outbox items as (record_id, subject_id, target_site, op), in order."""

    @abstractmethod
    def dequeue(self, seqs: Sequence[int]) -> None: ...

    @abstractmethod
    def dequeue_erasures(self, subject_id: str, target_sites: Sequence[str]) -> None:
        """Clear the outbox's ``erase`` items of a subject for these target sites (an
        erasure that reached them at once)."""

    @abstractmethod
    def put_replica(self, record: StoredRecord) -> bool:
        """Insert a replica, or replace one with an older version; True if it changed.
        A replica never moves backwards: an older or equal version changes nothing."""

    def put_replicas(self, records: Sequence[StoredRecord]) -> list[bool]:
        """``put_replica`` for each record, in order; backends may do it in one statement."""
        return [self.put_replica(r) for r in records]

    @abstractmethod
    def block(self, block: SubjectBlock) -> bool:
        """Keep a block on a subject's processing; False if the same request's block of
        that kind was kept already (it stays as it was)."""

    @abstractmethod
    def unblock(self, subject_id: str, kind: str, request_id: str) -> bool:
        """Remove the block a request placed; False if there was none."""

    @abstractmethod
    def count_transfer(self, year: int, to_country: str, subject_id: str, sensitive: bool) -> None:
        """Note that a subject's data went to a country this year (idempotent)."""

    def count_transfers(self, counts: Sequence[TransferCount]) -> None:
        """``count_transfer`` for each; backends may do it in one statement."""
        for c in counts:
            self.count_transfer(c.year, c.to_country, c.subject_id, c.sensitive)


class SiteStore(ABC):
    """One site's database."""

    backend: str  # "sqlite" or "postgresql"

    def __init__(self, site_id: str, url: str) -> None:
        self.site_id = site_id
        self.url = url

    # What ``open`` found: the store's creation id (None on a store made before creation
    # ids, until it is adopted) and whether this open created the store.
    creation_id: str | None = None
    created: bool = False

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
        """Connect; migrate the schema (create it only with ``create``); refuse a schema
        newer than this code, a database of another site or kind, or one whose creation id
        is not ``creation_id``. Raises ``SiteUnavailable``. See ``open_site_store``."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def ping(self) -> bool:
        """True when the site answers."""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[StoreTransaction]: ...

    def chain_now(self, payloads: Sequence[str], *, read: bool = False) -> list[AuditRow]:
        """``chain`` in a transaction of its own (an audit entry for a read). ``read``
        says the entries are those of a read, which a backend may be configured to commit
        without waiting for the disk (PostgreSQL's ``read_audit_commit=async``)."""
        with self.transaction() as tx:
            return tx.chain(payloads)

    def chain_transfer_now(
        self, payloads: Sequence[str], transfer: TransferCount, *, read: bool = False
    ) -> list[AuditRow]:
        """A transfer's audit entries and its year-to-date count, in one transaction of
        their own (one round trip where the backend can); ``read`` as for ``chain_now``."""
        with self.transaction() as tx:
            rows = tx.chain(payloads)
            tx.count_transfer(
                transfer.year, transfer.to_country, transfer.subject_id, transfer.sensitive
            )
            return rows

    def chain_group_now(
        self, payloads: Sequence[str], transfers: Sequence[TransferCount], *, read: bool = False
    ) -> list[AuditRow]:
        """The entries of several operations (a group commit of reads) and their transfer
        counts, in one transaction of their own; ``read`` as for ``chain_now``."""
        with self.transaction() as tx:
            rows = tx.chain(payloads)
            if transfers:
                tx.count_transfers(transfers)
            return rows

    @abstractmethod
    def get(self, record_id: str) -> StoredRecord | None: ...

    def get_for_read(self, record_id: str) -> tuple[StoredRecord | None, list[SubjectBlock]]:
        """The record (None if there is none) and its subject's blocks (``blocks``), as
        one read sees them: in one query where the backend can (``READ_SQL``)."""
        rec = self.get(record_id)
        return rec, (self.blocks([rec.subject_id]) if rec is not None else [])

    @abstractmethod
    def lookup(self, digest: bytes) -> list[str]:
        """Record ids with an index entry of ``digest``."""

    @abstractmethod
    def digests_of(self, record_ids: Sequence[str]) -> dict[str, set[bytes]]:
        """The index entries kept for each of these records (a record with none is left
        out): what a rebuild of index entries compares with, to add only what is missing."""

    def subjects_for(self, digests: Sequence[bytes]) -> dict[bytes, str]:
        """For each digest found in the index, the subject id of a record that carries it.
        Backends override this with one query."""
        out: dict[bytes, str] = {}
        for d in digests:
            for rid in self.lookup(d):
                rec = self.get(rid)
                if rec is not None:
                    out[d] = rec.subject_id
                    break
        return out

    @abstractmethod
    def subject_records(self, subject_id: str) -> list[StoredRecord]: ...

    @abstractmethod
    def reply(self, peer: str, op: str, key: bytes, now: float) -> tuple[int, str] | None:
        """The answer kept for a peer's call (``StoreTransaction.keep_reply``), if it has
        not expired by ``now``: its status and its JSON."""

    @abstractmethod
    def blocks(self, subject_ids: Sequence[str]) -> list[SubjectBlock]:
        """The blocks kept on these subjects' processing (see ``SubjectBlock``), oldest
        first."""

    def restricted(self, subject_ids: Iterable[str]) -> dict[str, SubjectBlock]:
        """Of these subjects, those whose processing is restricted here, each with its
        oldest restriction (a withdrawal of consent is not one): one query for all."""
        ids = sorted(set(subject_ids))
        found: dict[str, SubjectBlock] = {}
        for b in self.blocks(ids) if ids else ():
            if b.kind == "restriction":
                found.setdefault(b.subject_id, b)
        return found

    @abstractmethod
    def get_many(self, record_ids: Sequence[str]) -> dict[str, StoredRecord]: ...

    @abstractmethod
    def outbox(self, limit: int) -> list[OutboxItem]:
        """The oldest outbox items, in order."""

    @contextmanager
    def hold(self, name: str) -> Iterator[None]:
        """Keep other processes' blocks that hold ``name`` on this site waiting until this
        block ends: for a read followed by a write that depends on what was read (an
        upsert), when several processes serve one site. The default holds nothing: a
        SQLite site is served by one host, whose processes each serialize such blocks
        with their own lock, but not against each other (see docs/scale.md)."""
        yield

    @contextmanager
    def claim_outbox(self, limit: int) -> Iterator[OutboxClaim]:
        """Take up to ``limit`` of the oldest outbox items for one worker (see
        ``OutboxClaim``). This default suits a single writer (SQLite): the items are read
        now and cleared later in a transaction of their own, so only one worker may run
        against the site at a time."""
        yield OutboxClaim(self.outbox(limit), self.transaction)

    @abstractmethod
    def replicas(self, after: str, limit: int) -> list[StoredRecord]:
        """Replicas held here, in record-id order after ``after`` (keyset paging)."""

    @abstractmethod
    def records_after(self, after: str, limit: int) -> list[StoredRecord]:
        """Every record held here (primaries and replicas), in record-id order after
        ``after`` (keyset paging: for a walk over the whole site)."""

    def subject_roles(self) -> dict[str, bool]:
        """``{subject id: whether only copies of it are held here}`` for every subject the
        site holds (what an attestation tree is built from). The stores answer it in one
        grouped query; this walk over the records is the reference."""
        out: dict[str, bool] = {}
        after = ""
        while True:
            page = self.records_after(after, 1000)
            if not page:
                return out
            for r in page:
                out[r.subject_id] = out.get(r.subject_id, True) and r.is_replica
            after = page[-1].record_id

    def audit_tagged(
        self, prefix: str, upto: int, *, containing: str | None = None, newest: bool = False
    ) -> list[AuditRow]:
        """Audit rows up to sequence ``upto`` whose payload starts with ``prefix`` (and
        holds ``containing``, if given), in sequence order; only the last of them when
        ``newest``. A filter for callers that then check each row themselves: the stores
        run it inside the database, so a search of a long log reads only what matches."""
        found: list[AuditRow] = []
        for row in self.audit(1):
            if row.seq > upto:
                break
            if row.payload.startswith(prefix) and (containing is None or containing in row.payload):
                found.append(row)
        return found[-1:] if newest else found

    @abstractmethod
    def count_replicas(self) -> int: ...

    @abstractmethod
    def transfer_counts(self, year: int, to_country: str) -> tuple[int, int]:
        """Subjects (all, sensitive) exported to a country in a year, from here."""

    @abstractmethod
    def count(self) -> int:
        """Primary records held here (replicas are counted by ``count_replicas``)."""

    @abstractmethod
    def count_subjects(self) -> int:
        """Distinct subjects whose primary records are held here."""

    @abstractmethod
    def audit(self, start: int = 1) -> Iterator[AuditRow]:
        """Audit rows in storage order from sequence ``start``, streamed."""

    @abstractmethod
    def checkpoints(self) -> list[Checkpoint]: ...

    @abstractmethod
    def heads(self) -> list[HeadRow]:
        """The site's own signed tree heads, smallest first (without compact ranges)."""

    @abstractmethod
    def tree_nodes(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """The kept subtree roots among ``keys`` (level, index)."""

    @abstractmethod
    def witnessed(self, site: str | None = None) -> list[WitnessRow]:
        """Heads of other sites (or of ``site``) this site has witnessed, by site and size."""

    @property
    def display_url(self) -> str:
        """The URL without a password."""
        import re

        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", self.url)


def new_creation_id() -> str:
    """A store's creation id: 128 random bits, fixed when setup creates the store."""
    return secrets.token_hex(16)
