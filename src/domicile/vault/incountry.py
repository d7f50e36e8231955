"""InCountry-compatible records, kept in domicile's sites like every other record.

The InCountry storage protocol (``shared/design/incountry-api.md``; the public ``incountry``
SDK is the judge) stores flat records: a ``record_key``, an opaque ``body`` and
``precommit_body``, string keys (``profile_key``, ``parent_key``, ``service_key1-5``,
``key1-20``), integer ``range_key1-10``, the client's key ``version``, ``is_encrypted``,
``expires_at``, and file attachments. This module keeps them in the site of the path's
country with the vault's own machinery; the HTTP layer (``domicile.http.incountry``) only
translates.

Storage (per site):

- A record is one ``StoredRecord`` of the internal collection ``@incountry``. Its id is a
  keyed blind digest of its ``record_key`` (HMAC-SHA256 under the site's index key), so an
  upsert or a read by key is one primary-key lookup and the key itself is never stored.
- Every value the client sent (keys, bodies, range keys, version, ``expires_at``) and the
  attachments' metadata is a field sealed with AES-256-GCM under the subject's data key,
  bound to site, collection, record and field, exactly as the vault seals its fields. This
  holds whatever the client did: client-side ciphertexts (``2:...``) and hashed keys are
  opaque values to us but are sealed all the same; plaintext bodies (``pt:...``, the SDK's
  ``encrypt=False``), plaintext keys (``hash_search_keys=False``) and server-side-encryption
  requests (``X-Encrypted-Storage: true``: raw keys and body) never reach a disk unsealed.
  In server-side mode the keys are "hashed on the server" by the keyed blind indexes below
  (stronger than the SDK's unkeyed SHA-256) and the body is encrypted by the sealing; the
  caller gets the raw values back, as the SDK expects.
- The subject (one data key) is the record's ``profile_key`` when it has one (so all of a
  person's records share a key, and erasing that subject shreds them all), else the
  record itself. Subject ids are keyed digests too.
- Equality search uses keyed blind indexes, one entry per present string key, range key
  and version (``@incountry``, field name, HMAC of the value), plus one ``@all`` entry per
  record that lists the site's InCountry records.
- An attachment is a ``StoredRecord`` of its own (collection ``@incountry.file``, id = the
  random ``file_id``, same subject) holding the sealed file; its metadata (file name, MIME
  type, size, SHA-256, times) is kept sealed in the record's ``attachments`` field, so a
  record read never loads file contents.
- ``created_at`` and ``updated_at`` are the store's own (non-personal) timestamps.

Policy: the server cannot see inside a body, so a record is treated as generic personal data
(category ``user``), and the subject's evidence is the country of the path taken as the
subject's *declared residence* (``residence=CC``): the InCountry model is that an
application writes each person's records to the country where that person lives, and the
path is the only statement about the subject that the protocol carries. The residency is
sealed into each record (``@residency``, as the vault does) and later decisions read it
from there. Each write asks the engine whether the site may ``store`` (new) or ``update``
(existing) the record, each read or find whether it may ``retrieve`` it, each delete
whether it may ``delete`` it. Reads are local to the site (clients need the site's
``site:`` scope to use it), so no read here is a transfer. Refusals, writes, reads and
deletes go into the site's hash-chained audit with ids and field names, never a value;
if the site is down the call fails closed (``SiteUnavailable``) and nothing is written.
A subject's blocks (a restriction of processing, a withdrawal of consent:
``Domicile.check_blocks``) are checked for every record read, found, changed or deleted
here, and for the first records of a subject, a record rewritten with another
``profile_key`` included (stopped only by a withdrawal of consent, when the configuration
says the purpose ``incountry`` rests on consent); a find leaves blocked records out, and an
attachment is checked again when its last byte has arrived. Expiry keeps a restricted subject's expired records (never serving them)
until the restriction is lifted; under a withdrawal of consent it destroys them.

Finding: a filter is narrowed with the blind indexes where it has equality conditions
(values or lists on string keys, range keys or version; ``$or`` branches that all narrow);
then the candidates are loaded and the whole filter is evaluated in Python on opened
fields (ranges, dates, ``$not``, ``$like``, ``search_keys``), sorted, counted and paged.
Scale limit: a filter without an equality condition (for instance only ``search_keys``,
``$like``, a range or a date, or the SDK's ``migrate()``, which asks for
``version: {"$not": current}``) reads and decrypts the keys of every InCountry record of
the site on each call, and every match is held in memory to be sorted and counted. That is
fine up to some tens of thousands of records per site; beyond that, give such queries an
equality key, or this needs ordered (order-preserving or bucketed) indexes. The filter
language itself (parsing, checking, matching) is ``domicile.vault.incountry_filters``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import mimetypes
import re
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from domicile.access import Access
from domicile.audit import AuditEvent
from domicile.audit.ledger import Action
from domicile.config import Site
from domicile.crypto.envelope import (
    FieldCipher,
    Sealer,
    key_context,
    new_data_key,
    record_context,
)
from domicile.errors import BadInput, OtherNode, TooLarge
from domicile.packs import Outcome
from domicile.periodic import Periodic
from domicile.policy import Decision
from domicile.residency import Residency, SubjectEvidence, resolve
from domicile.stores import IndexEntry, SiteStore, StoredRecord, WrappedKey
from domicile.stores.base import SiteUnavailable, pack_fields
from domicile.vault import values
from domicile.vault.core import _residency_to_json
from domicile.vault.errors import NotFound, PolicyRefused, SubjectBlocked
from domicile.vault.incountry_filters import (
    DATE_KEYS,
    INT_KEYS,
    RANGE_KEYS,
    SEARCH_KEYS,
    SERVICE_KEYS,
    STRING_KEYS,
    Cond,
    Filter,
    as_int,
    check_find,
    is_int,
    iso,
    parse_time,
)
from domicile.vault.sealing import RESIDENCY_FIELD
from domicile.vault.service import Domicile

COLLECTION = "@incountry"
FILES = "@incountry.file"
CATEGORY = "user"  # an opaque body may hold any personal data
PURPOSE = "incountry"
# What its changes hold at a site, against every process serving it (``SiteStore.hold``).
HOLD = "incountry"
ALL = "@all"

BODY_KEYS = ("body", "precommit_body")
# Every field of a record, in the order answers list them.
FIELDS = (
    "record_key", "body", "precommit_body", "profile_key", "parent_key", *SERVICE_KEYS,
    *SEARCH_KEYS, *RANGE_KEYS, "version", "is_encrypted", "expires_at", "created_at",
    "updated_at", "attachments",
)  # fmt: skip
WRITABLE = frozenset(
    (*STRING_KEYS, *BODY_KEYS, *RANGE_KEYS, "version", "is_encrypted", "expires_at")
)
SERVER_MANAGED = frozenset(("created_at", "updated_at", "attachments"))  # accepted, ignored

MAX_KEY_CHARS = 256
MAX_BODY_CHARS = 10 * 1024 * 1024
MAX_BATCH = 100
MAX_ATTACHMENT_BYTES = 100 * 1024 * 1024  # the SDK's own limit
MAX_NAME_CHARS = 255
INT64 = (-(2**63), 2**63 - 1)
CHUNK = 500
COUNTRY = re.compile(r"^[a-z]{2}$")
# The vault's operation, for a subject's blocks, of each policy operation here.
BLOCK_OPERATIONS = {
    "retrieve": "records:read", "update": "records:write", "delete": "records:delete",
    "store": "records:store",
}  # fmt: skip


def profile_subject(vault: Domicile, site_id: str, profile_key: str) -> str:
    """The subject id at ``site_id`` of the records whose ``profile_key`` is this (the
    value as the application sends it: the SDK's hash unless it sends keys in the clear).
    A keyed digest under the site's index key: the key itself is never stored."""
    return vault._indexers[site_id].digest(COLLECTION, "@subject.profile", profile_key).hex()


class NoSite(NotFound):
    """No site of this deployment is in the path's country. Never redirected elsewhere."""

    code = "no_site"


@dataclass(frozen=True)
class _Probe:
    """A subject about to get its first record here: what a block check needs of it."""

    subject_id: str
    record_id: str | None = None


@dataclass(frozen=True)
class Caller:
    """Who is calling, for the audit, and how the answer must look."""

    client: str
    sse: bool = False  # X-Encrypted-Storage: true (raw keys and body; we hash and seal)
    base_url: str = ""  # ".../v2/storage/records/CC", for attachments' download links


# --- values ---------------------------------------------------------------------------------


def _utf8(name: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput(f"{name} is not valid UTF-8 text") from None


def check_record(raw: Any, where: str = "") -> dict[str, Any]:
    """A record as written by a client: the fields it set (nulls dropped), checked."""
    if not isinstance(raw, Mapping):
        raise BadInput(f"{where}a record is a JSON object")
    unknown = sorted(str(k) for k in raw if k not in WRITABLE and k not in SERVER_MANAGED)
    if unknown:
        raise BadInput(
            f"{where}a record has only the fields of the InCountry storage API",
            hint="see the record fields of the InCountry storage API",
        )
    out: dict[str, Any] = {}
    for name in WRITABLE:
        value = raw.get(name)
        if value is None:
            continue
        label = f"{where}{name}"
        if name in STRING_KEYS or name in BODY_KEYS:
            if not isinstance(value, str):
                raise BadInput(f"{label} must be a string")
            _utf8(label, value)
            limit = MAX_BODY_CHARS if name in BODY_KEYS else MAX_KEY_CHARS
            if len(value) > limit:
                raise BadInput(f"{label} is longer than {limit} characters")
        elif name in INT_KEYS:
            if not is_int(value) or not INT64[0] <= value <= INT64[1]:
                raise BadInput(f"{label} must be a signed 64-bit integer")
            value = as_int(value)
        elif name == "is_encrypted":
            if not isinstance(value, bool):
                raise BadInput(f"{label} must be true or false")
        else:  # expires_at
            value = iso(parse_time(value, label))
        out[name] = value
    if not out.get("record_key"):
        raise BadInput(f"{where}record_key is required", hint="a non-empty string")
    return out


# --- whole requests (pure: every check a request's body gets before anything is touched) ----


def _check_not_expired(
    records: Sequence[Mapping[str, Any]], now: dt.datetime, *, batch: bool
) -> None:
    """A record cannot be written already expired: the whole write is refused (400)."""
    for i, rec in enumerate(records):
        if "expires_at" in rec and parse_time(rec["expires_at"], "expires_at") <= now:
            where = f"records[{i}]: " if batch else ""
            raise BadInput(
                f"{where}expires_at is in the past",
                hint="give a time later than now, or leave expires_at out",
            )


def check_batch(body: Any) -> list[dict[str, Any]]:
    """A batch write: ``{"records": [...]}``, 1 to ``MAX_BATCH`` records, each checked."""
    if not isinstance(body, Mapping) or set(body) != {"records"}:
        raise BadInput('a batch is {"records": [...]}')
    records = body["records"]
    if not isinstance(records, list) or not 1 <= len(records) <= MAX_BATCH:
        raise BadInput(f"a batch holds 1 to {MAX_BATCH} records")
    return [check_record(r, f"records[{i}]: ") for i, r in enumerate(records)]


def check_batch_delete(body: Any) -> list[str]:
    if not isinstance(body, Mapping) or set(body) != {"filter"}:
        raise BadInput('batch delete takes {"filter": {"record_key": [...]}}')
    flt = body["filter"]
    if not isinstance(flt, Mapping) or set(flt) != {"record_key"}:
        raise BadInput("batch delete filters by record_key only")
    keys = flt["record_key"]
    if (
        not isinstance(keys, list)
        or not 1 <= len(keys) <= MAX_BATCH
        or not all(isinstance(k, str) and k for k in keys)
    ):
        raise BadInput(f"filter.record_key takes 1 to {MAX_BATCH} non-empty strings")
    return keys


def check_meta(changes: Any) -> dict[str, str]:
    """An attachment's new name or MIME type (at least one)."""
    if not isinstance(changes, Mapping) or not changes:
        raise BadInput("send {filename?, mime_type?} with at least one of them")
    if any(k not in ("filename", "mime_type") for k in changes):
        raise BadInput("unknown attachment field", hint="the fields are filename and mime_type")
    checked = {k: _check_name(k, v) for k, v in changes.items() if v is not None}
    if not checked:
        raise BadInput("send {filename?, mime_type?} with at least one of them")
    return checked


# --- opened records -------------------------------------------------------------------------


class _View:
    """A stored record, opened one field at a time, as filters and answers need them."""

    __slots__ = ("_cipher", "_opened", "_prefix", "rec")

    def __init__(self, rec: StoredRecord, cipher: FieldCipher, prefix: bytes) -> None:
        self.rec = rec
        self._cipher = cipher
        self._prefix = prefix
        self._opened: dict[str, Any] = {}

    def get(self, name: str) -> Any:
        if name in self._opened:
            return self._opened[name]
        value: Any
        if name == "created_at":
            value = parse_time(self.rec.created_at, name)
        elif name == "updated_at":
            value = parse_time(self.rec.updated_at, name)
        else:
            blob = self.rec.fields.get(name)
            value = (
                None
                if blob is None
                else values.decode(self._cipher.open(blob, self._prefix + name.encode()))
            )
            if name == "expires_at" and value is not None:
                value = parse_time(value, name)
        self._opened[name] = value
        return value


@dataclass
class _Draft:
    """One record on its way in."""

    fields: dict[str, Any]
    rid: str
    subject: str
    old: StoredRecord | None = None
    decision: Decision | None = None
    attachments: list[dict[str, Any]] = field(default_factory=list)


def _by(key: str) -> Callable[[_View], tuple[bool, Any]]:
    """Sort on one key; nulls last ascending, first descending (as PostgreSQL does)."""

    def sort_key(view: _View) -> tuple[bool, Any]:
        value = view.get(key)
        return (value is None, 0 if value is None else value)

    return sort_key


def _check_name(label: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadInput(f"{label} must be a non-empty string")
    _utf8(label, value)
    if len(value) > MAX_NAME_CHARS or any(c in value for c in "\x00\r\n"):
        raise BadInput(f"{label} must be at most {MAX_NAME_CHARS} characters, on one line")
    return value


@dataclass
class Upload:
    """An attachment on its way in. Made by ``InCountryStorage.begin_upload`` once the
    record is found and the write allowed; ``start`` names the file, ``write`` seals each
    piece as it arrives (the plaintext is never held whole, nor spooled to a disk), and
    ``InCountryStorage.finish_upload`` writes it."""

    site: Site
    caller: Caller
    operation: str
    rec: StoredRecord
    decision: Decision
    metas: list[dict[str, Any]]
    record_key: str
    cipher: FieldCipher
    upsert: bool
    max_bytes: int
    name: str = ""
    mime: str = ""
    fid: str = ""
    same: dict[str, Any] | None = None
    sealer: Sealer | None = None
    digest: Any = field(default_factory=hashlib.sha256)

    def start(self, filename: str | None, mime_type: str | None) -> None:
        """The file's name and type are known (upsert: the record's file of the same name
        is replaced, keeping its ``file_id``); the MIME type is guessed when none is sent."""
        self.name = _check_name("filename", filename or "file")
        self.mime = (
            _check_name("mime_type", mime_type)
            if mime_type
            else mimetypes.guess_type(self.name)[0] or "application/octet-stream"
        )
        if self.upsert:
            self.same = next((m for m in self.metas if m["filename"] == self.name), None)
        self.fid = self.same["file_id"] if self.same else secrets.token_hex(16)
        self.sealer = self.cipher.sealer(record_context(self.site.id, FILES, self.fid) + b"data")

    def write(self, piece: bytes) -> None:
        if self.sealer is None:
            raise BadInput("the upload has no file", hint="send one multipart part named file")
        if self.sealer.size + len(piece) > self.max_bytes:
            raise TooLarge(f"an attachment is at most {self.max_bytes} bytes")
        self.digest.update(piece)
        self.sealer.update(piece)


class InCountryStorage:
    """InCountry records in the vault's sites. One per service process."""

    def __init__(self, vault: Domicile) -> None:
        self.vault = vault
        self._locks: dict[str, threading.RLock] = {
            s.id: threading.RLock() for s in vault.config.sites
        }
        self._residency: dict[str, Residency] = {}

    # --- plumbing ---------------------------------------------------------------------------

    def site_for(self, country: str, *, client: str | None = None) -> Site:
        """The configured site in the path's country: the local site or the default site
        when one of them is there, else the first in the configuration. A country with no
        site is refused (and the refusal audited); nothing is ever sent elsewhere.

        On a federation node, a country whose site is another node's is refused too
        (``OtherNode``, audited here, naming that node and its address): only the home
        node holds the site's keys and store, so it alone serves that country's path, as
        InCountry serves each country from its own point of presence. Nothing of the
        request is forwarded, and nothing is read or decrypted here."""
        if not COUNTRY.match(country):
            raise BadInput(
                "the country in the path is two lower-case letters",
                hint="e.g. /v2/storage/records/de",
            )
        cc = country.upper()
        here = [s for s in self.vault.config.sites if s.country == cc]
        if not here:
            self.vault._audit_refusal(
                AuditEvent(
                    action="refuse", site="", purpose=PURPOSE, collection=COLLECTION,
                    client=client, detail={"reason": "no_site", "api": "incountry"},
                )
            )  # fmt: skip
            raise NoSite(
                "this deployment has no site in that country",
                hint="records are only stored in the country named; add a site there",
            )
        mine = [s for s in here if self.vault.is_here(s.id)]
        if not mine:
            raise self._other_node(here[0], client)
        for preferred in (self.vault.config.local_site, self.vault.config.model.default_site):
            for s in mine:
                if s.id == preferred:
                    return s
        return mine[0]

    def _other_node(self, site: Site, client: str | None) -> OtherNode:
        """The refusal of a path whose country is another node's site, audited here."""
        self.vault._audit_refusal(
            AuditEvent(
                action="refuse", site="", purpose=PURPOSE, collection=COLLECTION,
                client=client,
                detail={"reason": "other_node", "api": "incountry", "home_site": site.id},
            )
        )  # fmt: skip
        fed = self.vault.config.model.federation
        spec = fed.nodes.get(site.id) if fed else None
        endpoint = spec.api.rstrip("/") if spec and spec.api else None
        where = f"{endpoint}/v2/storage/records/{site.country.lower()}" if endpoint else None
        return OtherNode(
            site.id,
            f"node {site.id!r} holds this deployment's {site.country} records, not node "
            f"{self.vault.node!r}",
            country=site.country,
            endpoint=endpoint,
            hint=(
                f"send the request to {where}"
                if where
                else f"send the request to the API of node {site.id!r}"
            )
            + ": each node serves the InCountry API of its own country only",
        )

    def _home_residency(self, site: Site) -> Residency:
        got = self._residency.get(site.country)
        if got is None:
            got = resolve(SubjectEvidence(residence=site.country))
            self._residency[site.country] = got
        return got

    def _digest(self, site_id: str, name: str, value: str) -> bytes:
        return self.vault._indexers[site_id].digest(COLLECTION, name, value)

    def _rid(self, site_id: str, record_key: str) -> str:
        return self._digest(site_id, "@record", record_key).hex()

    def _subject(self, site_id: str, fields: Mapping[str, Any]) -> str:
        profile = fields.get("profile_key")
        if profile:
            return profile_subject(self.vault, site_id, profile)
        return self._digest(site_id, "@subject.record", fields["record_key"]).hex()

    @contextlib.contextmanager
    def _site(self, site: Site, operation: str, caller: Caller) -> Iterator[SiteStore]:
        """The site's store, after checking that it answers (fail closed); a failure midway
        drops the connection so the next call reconnects."""
        who = Access.of_client(caller.client, (), site.id)  # names the caller in a refusal
        self.vault._require(site.id, PURPOSE, COLLECTION, operation, who)
        try:
            yield self.vault.store(site.id)
        except SiteUnavailable:
            self.vault._drop(site.id)
            raise

    @contextlib.contextmanager
    def _writing(self, site: Site, operation: str, caller: Caller) -> Iterator[SiteStore]:
        """``_site`` for a change that reads before it writes (an upsert replaces the
        version it read): one at a time per site, among this process's threads (its lock)
        and among every process serving the site (the store's hold)."""
        with (
            self._locks[site.id],
            self._site(site, operation, caller) as store,
            store.hold(HOLD),
        ):
            yield store

    def _ensure_keys(self, site_id: str, subjects: Sequence[str]) -> None:
        """A data key for every subject that has none yet, committed before any data
        sealed with it (as the vault does)."""
        ks = self.vault.keystore(site_id)
        wanted = list(dict.fromkeys(subjects))
        for attempt in range(2):
            have = ks.get_many(wanted)
            missing = [s for s in wanted if s not in have]
            if not missing:
                return
            new = []
            for sid in missing:
                version, wrapped = self.vault.keys.wrap(
                    site_id, new_data_key(), key_context(site_id, sid)
                )
                new.append((sid, WrappedKey(version, wrapped)))
            try:
                ks.put_many(new)
                return
            except SiteUnavailable:
                if attempt:  # not a key made meanwhile by another process: the store failed
                    raise

    def _view(self, site: Site, rec: StoredRecord) -> _View:
        cipher = self.vault._cipher(site.id, rec.subject_id)
        return _View(rec, cipher, record_context(site.id, rec.collection, rec.record_id))

    def _seal(
        self, site_id: str, cipher: FieldCipher, collection: str, rid: str, data: Mapping[str, Any]
    ) -> dict[str, bytes]:
        prefix = record_context(site_id, collection, rid)
        return {n: cipher.seal(values.encode(v), prefix + n.encode()) for n, v in data.items()}

    def _load(self, store: SiteStore, rids: Sequence[str]) -> dict[str, StoredRecord]:
        out: dict[str, StoredRecord] = {}
        for i in range(0, len(rids), CHUNK):
            for rid, rec in store.get_many(rids[i : i + CHUNK]).items():
                if rec.collection == COLLECTION and not rec.is_replica:
                    out[rid] = rec
        return out

    def _get(self, site: Site, store: SiteStore, record_key: str) -> StoredRecord:
        """The record, unless it is missing or expired (an expired record is never served,
        even before a sweep destroys it)."""
        rec = store.get(self._rid(site.id, record_key))
        if (
            rec is None
            or rec.collection != COLLECTION
            or self._expired(site, [rec], self.vault.clock())
        ):
            raise NotFound(
                "no record with this record_key", hint="check the record_key and country"
            )
        return rec

    def _expired(
        self, site: Site, recs: Iterable[StoredRecord], now: dt.datetime
    ) -> list[StoredRecord]:
        """The records whose ``expires_at`` is ``now`` or earlier."""
        out = []
        for rec in recs:
            expires = self._view(site, rec).get("expires_at")
            if expires is not None and expires <= now:
                out.append(rec)
        return out

    def _event(
        self,
        action: Action,
        site: Site,
        caller: Caller,
        operation: str,
        *,
        rid: str | None = None,
        subject: str | None = None,
        decision: Decision | None = None,
        fields: Sequence[str] = (),
        at: str | None = None,
        **detail: Any,
    ) -> AuditEvent:
        return AuditEvent(
            action=action, site=site.id, purpose=PURPOSE, collection=COLLECTION, record=rid,
            subject=subject, requester=site.id, client=caller.client,
            decision=decision.outcome.value if decision else None,
            rules=decision.rule_ids if decision else (), categories=(CATEGORY,),
            fields=tuple(sorted(fields)),
            detail={"api": "incountry", "operation": operation,
                    **({"sse": True} if caller.sse else {}), **detail},
            at=at or dt.datetime.now(dt.UTC).isoformat(),
        )  # fmt: skip

    def _allow(
        self,
        site: Site,
        caller: Caller,
        operation: str,
        policy_op: str,
        items: Sequence[tuple[str | None, str | None, Residency]],
    ) -> list[Decision]:
        """Ask the engine about each (record, subject, residency); if any is refused, audit
        the refusals in the site's ledger and raise ``PolicyRefused``."""
        decisions = [
            self.vault._decide(residency, [CATEGORY], policy_op, site.country)
            for _, _, residency in items
        ]
        refused = [
            (item, d)
            for item, d in zip(items, decisions, strict=True)
            if d.outcome is not Outcome.allow
        ]
        if refused:
            events = [
                self._event("refuse", site, caller, operation, rid=rid, subject=sid, decision=d,
                            policy_operation=policy_op)
                for (rid, sid, _), d in refused
            ]  # fmt: skip
            for event in events:
                self.vault._audit_refusal(event, at=site.id)
            d = refused[0][1]
            raise PolicyRefused(
                f"policy does not let site {site.id!r} ({site.country}) {policy_op} this record: "
                f"{d.outcome.value}",
                decision=d.to_dict(),
                hint="see the decision's rules and obligations",
            )
        return decisions

    def _allow_records(
        self,
        site: Site,
        caller: Caller,
        operation: str,
        policy_op: str,
        recs: Sequence[StoredRecord],
        *,
        purpose: str = PURPOSE,
    ) -> list[Decision]:
        items = [(r.record_id, r.subject_id, self.vault._residency(site, r)) for r in recs]
        decisions = self._allow(site, caller, operation, policy_op, items)
        self._check_blocks(site, caller, BLOCK_OPERATIONS[policy_op], recs, purpose=purpose)
        return decisions

    def _check_blocks(
        self,
        site: Site,
        caller: Caller,
        operation: str,
        recs: Iterable[StoredRecord | _Probe],
        *,
        purpose: str = PURPOSE,
    ) -> None:
        """The subjects' blocks (a restriction, a withdrawal of consent), through the
        vault's one check (``Domicile.check_blocks``; the caller's scopes were checked by
        ``Domicile.authorize`` before the call reached here): one query for all of them,
        and ``SubjectBlocked`` (audited) for the first record a block stops."""
        recs = list(recs)
        found = self.vault.store(site.id).blocks([r.subject_id for r in recs]) if recs else []
        if not found:
            return
        who = Access.of_client(caller.client, (), site.id)
        for rec in recs:
            mine = [b for b in found if b.subject_id == rec.subject_id]
            if mine:
                self.vault.check_blocks(
                    who, operation, site.id, rec.subject_id, purpose, collection=COLLECTION,
                    record=rec.record_id, blocks=mine,
                )  # fmt: skip

    # --- answers ----------------------------------------------------------------------------

    def _meta_out(self, meta: Mapping[str, Any], record_key: str, caller: Caller) -> dict[str, Any]:
        link = f"{caller.base_url}/{quote(record_key, safe='')}/attachments/{meta['file_id']}"
        return {
            "file_id": meta["file_id"],
            "filename": meta["filename"],
            "hash": meta["hash"],
            "mime_type": meta["mime_type"],
            "size": meta["size"],
            "created_at": meta["created_at"],
            "updated_at": meta["updated_at"],
            "download_link": link,
        }

    def _render(self, get: Callable[[str], Any], caller: Caller) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in FIELDS:
            value = get(name)
            if name in DATE_KEYS:
                value = iso(value) if value is not None else None
            elif name == "attachments":
                value = [self._meta_out(m, get("record_key"), caller) for m in value or []]
            out[name] = value
        return out

    # --- records ----------------------------------------------------------------------------

    def write(
        self, site: Site, records: Sequence[Any], caller: Caller, *, batch: bool
    ) -> list[dict[str, Any]]:
        """Upsert records by ``record_key``; all are checked and decided before any is
        written, and all are written in one transaction with their audit entries."""
        operation = "batch_write" if batch else "write"
        sent = check_batch({"records": list(records)}) if batch else [check_record(records[0])]
        # A batch is a run of upserts: a record_key given twice ends as its last record.
        last = {rec["record_key"]: i for i, rec in enumerate(sent)}
        checked = [rec for i, rec in enumerate(sent) if last[rec["record_key"]] == i]
        _check_not_expired(sent, self.vault.clock(), batch=batch)
        residency = self._home_residency(site)
        with self._writing(site, operation, caller) as store:
            drafts = [
                _Draft(rec, self._rid(site.id, rec["record_key"]), self._subject(site.id, rec))
                for rec in checked
            ]
            existing = self._load(store, [d.rid for d in drafts])
            # A record that expired is gone, even before a sweep destroys it: its key
            # starts afresh, without its old files or its old created_at.
            expired = self._expired(site, existing.values(), self.vault.clock())
            if expired:
                gone = self._erase_expired(site, expired, caller, operation)["erased"]
                for rid in gone:
                    del existing[rid]
            for d in drafts:
                d.old = existing.get(d.rid)
            decisions = self._allow(
                site, caller, operation, "store",
                [(d.rid, d.subject, residency) for d in drafts if d.old is None],
            )  # fmt: skip
            updates = self._allow(
                site, caller, operation, "update",
                [(d.rid, d.subject, residency) for d in drafts if d.old is not None],
            )  # fmt: skip
            # A subject's blocks: storing goes on under a restriction (not under a withdrawal
            # of consent, for a purpose resting on consent); changes stop under either. A
            # record rewritten with another profile_key is stored anew for that subject.
            self._check_blocks(
                site, caller, "records:store",
                [_Probe(d.subject) for d in drafts
                 if d.old is None or d.old.subject_id != d.subject],
            )  # fmt: skip
            self._check_blocks(
                site, caller, "records:write", [d.old for d in drafts if d.old is not None]
            )
            new_iter, old_iter = iter(decisions), iter(updates)
            for d in drafts:
                d.decision = next(new_iter) if d.old is None else next(old_iter)
            self._ensure_keys(site.id, [d.subject for d in drafts])
            now = iso(self.vault.clock())
            blob = _residency_to_json(residency)
            rows: list[StoredRecord] = []
            moved: list[StoredRecord] = []
            entries: list[IndexEntry] = []
            events: list[AuditEvent] = []
            for d in drafts:
                stored = dict(d.fields)
                stored.setdefault("version", 0)
                stored.setdefault("is_encrypted", caller.sse)
                d.fields = stored
                if d.old is not None:
                    d.attachments = list(self._view(site, d.old).get("attachments") or [])
                    if d.old.subject_id != d.subject:  # a new profile: its files follow it
                        moved.extend(
                            self._rehome_files(site, store, d.old, d.subject, d.attachments)
                        )
                cipher = self.vault._cipher(site.id, d.subject)
                sealed = self._seal(
                    site.id, cipher, COLLECTION, d.rid,
                    {**stored, **({"attachments": d.attachments} if d.attachments else {}),
                     RESIDENCY_FIELD: blob},
                )  # fmt: skip
                created = d.old.created_at if d.old is not None else now
                version = d.old.version + 1 if d.old is not None else 1
                rows.append(
                    StoredRecord(
                        d.rid, d.subject, COLLECTION, version, created, now, pack_fields(sealed)
                    )
                )
                entries.extend(self._index_entries(site.id, d.rid, stored))
                events.append(
                    self._event(
                        "update" if d.old is not None else "write", site, caller, operation,
                        rid=d.rid, subject=d.subject, decision=d.decision, fields=list(stored), at=now,
                    )
                )  # fmt: skip
            with store.transaction() as tx:
                gone = [d.rid for d in drafts if d.old is not None]
                gone += [f.record_id for f in moved]
                if gone:
                    tx.delete(gone)  # and their index entries
                tx.insert(rows + moved)
                tx.index(entries)
                self.vault._ledgers[site.id].append(tx, events)
        out = []
        for d, row in zip(drafts, rows, strict=True):
            view = {
                **d.fields,
                "expires_at": parse_time(d.fields["expires_at"], "expires_at")
                if "expires_at" in d.fields
                else None,
                "created_at": parse_time(row.created_at, "created_at"),
                "updated_at": parse_time(row.updated_at, "updated_at"),
                "attachments": d.attachments,
            }
            out.append(self._render(view.get, caller))
        written = {rec["record_key"]: answer for rec, answer in zip(checked, out, strict=True)}
        return [written[rec["record_key"]] for rec in sent]

    def _rehome_files(
        self,
        site: Site,
        store: SiteStore,
        old: StoredRecord,
        subject: str,
        metas: Sequence[Mapping[str, Any]],
    ) -> list[StoredRecord]:
        """A record's files re-sealed under the key of the record's new subject."""
        if not metas:
            return []
        files = store.get_many([m["file_id"] for m in metas])
        before = self.vault._cipher(site.id, old.subject_id)
        after = self.vault._cipher(site.id, subject)
        out = []
        for f in files.values():
            ctx = record_context(site.id, FILES, f.record_id) + b"data"
            data = before.open(f.fields["data"], ctx)
            out.append(
                dataclasses.replace(
                    f, subject_id=subject, body=pack_fields({"data": after.seal(data, ctx)})
                )
            )
        return out

    def _index_entries(self, site_id: str, rid: str, fields: Mapping[str, Any]) -> list[IndexEntry]:
        out = [IndexEntry(self._digest(site_id, ALL, ""), rid)]
        for name in (*STRING_KEYS[1:], *INT_KEYS):  # the record_key is the record id itself
            value = fields.get(name)
            if value is not None:
                out.append(IndexEntry(self._digest(site_id, name, str(value)), rid))
        return out

    def read(self, site: Site, record_key: str, caller: Caller) -> dict[str, Any]:
        with self._site(site, "read", caller) as store:
            rec = self._get(site, store, record_key)
            (decision,) = self._allow_records(site, caller, "read", "retrieve", [rec])
            view = self._view(site, rec)
            out = self._render(view.get, caller)
            self.vault._audit(
                site.id,
                [self._event("read", site, caller, "read", rid=rec.record_id, subject=rec.subject_id,
                             decision=decision, fields=self._present(rec))],
            )  # fmt: skip
        return out

    def subject_data(
        self, site: Site, record_ids: Sequence[str], caller: Caller, operation: str
    ) -> list[dict[str, Any]]:
        """A subject's records as the API renders them, for the subject's own request
        (access, portability): decided as reads here, blocks checked (a request's step
        goes ahead), each audited as a read under ``operation``. Attachments are listed
        by their metadata; a file's contents stay behind the API's download route."""
        with self._site(site, "read", caller) as store:
            recs = list(self._load(store, record_ids).values())
            if not recs:
                return []
            # The blocks are checked for the request's purpose: its own step goes ahead.
            decisions = self._allow_records(
                site, caller, "read", "retrieve", recs, purpose=operation
            )
            out = []
            for rec in recs:
                rendered = self._render(self._view(site, rec).get, caller)
                for meta in rendered["attachments"]:
                    meta.pop("download_link", None)
                out.append(rendered)
            self.vault._audit(
                site.id,
                [self._event("read", site, caller, operation, rid=rec.record_id,
                             subject=rec.subject_id, decision=d, fields=self._present(rec))
                 for rec, d in zip(recs, decisions, strict=True)],
            )  # fmt: skip
        return out

    @staticmethod
    def _present(rec: StoredRecord) -> list[str]:
        return [n for n in rec.fields if n != RESIDENCY_FIELD]

    def find(self, site: Site, body: Any, caller: Caller) -> dict[str, Any]:
        """Records matching a filter: narrowed by the blind indexes, then checked in Python
        (see the module's docstring for the scale limit)."""
        flt, opts = check_find(body)
        with self._site(site, "find", caller) as store:
            # Decided before anything is opened, for the residency the site's records have.
            self._allow(
                site, caller, "find", "retrieve", [(None, None, self._home_residency(site))]
            )
            narrowed = self._candidates(site.id, store, flt)
            if narrowed is None:
                narrowed = set(store.lookup(self._digest(site.id, ALL, "")))
            matched: list[_View] = []
            ordered = sorted(narrowed)
            now = self.vault.clock()
            for i in range(0, len(ordered), CHUNK):
                for rec in self._load(store, ordered[i : i + CHUNK]).values():
                    view = self._view(site, rec)
                    expires = view.get("expires_at")
                    if (expires is None or expires > now) and flt.matches(view.get):
                        matched.append(view)
            matched = self._unblocked(site, caller, matched)
            matched.sort(key=lambda v: (v.rec.created_at, v.rec.record_id))
            for key, descending in reversed(opts.sort):
                matched.sort(key=_by(key), reverse=descending)
            page = matched[opts.offset : opts.offset + opts.limit]
            decisions = self._allow_records(site, caller, "find", "retrieve", [v.rec for v in page])
            data = [self._render(v.get, caller) for v in page]
            if page:
                self.vault._audit(
                    site.id,
                    [self._event("read", site, caller, "find", rid=v.rec.record_id,
                                 subject=v.rec.subject_id, decision=d, fields=self._present(v.rec),
                                 filter_keys=flt.keys)
                     for v, d in zip(page, decisions, strict=True)],
                )  # fmt: skip
        meta = {
            "count": len(data),
            "limit": opts.limit,
            "offset": opts.offset,
            "total": len(matched),
        }
        return {"data": data, "meta": meta}

    def _unblocked(self, site: Site, caller: Caller, matched: list[_View]) -> list[_View]:
        """The matches a subject's block does not keep from this find (each one it keeps
        is refused and audited, as a read of it would be)."""
        recs = [v.rec for v in matched]
        found = self.vault.store(site.id).blocks([r.subject_id for r in recs]) if recs else []
        if not found:
            return matched
        out = []
        for view in matched:
            try:
                self._check_blocks(site, caller, "records:read", [view.rec])
            except SubjectBlocked:
                continue
            out.append(view)
        return out

    def _narrow(self, site_id: str, store: SiteStore, cond: Cond) -> set[str] | None:
        if cond.eq is None or (cond.key not in STRING_KEYS and cond.key not in INT_KEYS):
            return None
        if cond.key == "record_key":
            return {self._rid(site_id, v) for v in cond.eq}
        out: set[str] = set()
        for v in cond.eq:
            out.update(store.lookup(self._digest(site_id, cond.key, str(v))))
        return out

    def _narrow_all(self, site_id: str, store: SiteStore, conds: Sequence[Cond]) -> set[str] | None:
        sets = [s for c in conds if (s := self._narrow(site_id, store, c)) is not None]
        if not sets:
            return None
        sets.sort(key=len)
        return set.intersection(*sets)

    def _candidates(self, site_id: str, store: SiteStore, flt: Filter) -> set[str] | None:
        """Record ids that may match, from the blind indexes; None when nothing narrows."""
        sets: list[set[str]] = []
        top = self._narrow_all(site_id, store, flt.conds)
        if top is not None:
            sets.append(top)
        if flt.any_of:
            branches = [self._narrow_all(site_id, store, b) for b in flt.any_of]
            if all(b is not None for b in branches):
                sets.append(set().union(*(b for b in branches if b is not None)))
        if not sets:
            return None
        return set.intersection(*sets)

    def delete(self, site: Site, record_keys: Sequence[str], caller: Caller, *, batch: bool) -> int:
        """Delete records and their attachments; one missing record is a ``NotFound``, while
        a batch deletes those that exist."""
        operation = "batch_delete" if batch else "delete"
        with self._writing(site, operation, caller) as store:
            rids = list(dict.fromkeys(self._rid(site.id, k) for k in record_keys))
            recs = list(self._load(store, rids).values())
            if not batch and not recs:
                raise NotFound(
                    "no record with this record_key", hint="check the record_key and country"
                )
            if not recs:
                return 0
            decisions = self._allow_records(site, caller, operation, "delete", recs)
            files = {
                r.record_id: [m["file_id"] for m in self._view(site, r).get("attachments") or []]
                for r in recs
            }
            gone = {r.record_id for r in recs} | {f for fs in files.values() for f in fs}
            shred = self._last_of_subject(store, recs, gone)
            events = [
                self._event("delete", site, caller, operation, rid=r.record_id, subject=r.subject_id,
                            decision=d, fields=self._present(r), files=len(files[r.record_id]),
                            key_destroyed=r.subject_id in shred)
                for r, d in zip(recs, decisions, strict=True)
            ]  # fmt: skip
            # Crypto-shredding, as an erasure does: the key first, so a sealed copy saved
            # anywhere (a backup, a dump) no longer opens, then the rows.
            keys = self.vault.keystore(site.id)
            for subject in sorted(shred):
                keys.delete(subject)
                self.vault._forget_key(site.id, subject)
            with store.transaction() as tx:
                tx.delete(sorted(gone))
                self.vault._ledgers[site.id].append(tx, events)
        return len(recs)

    @staticmethod
    def _last_of_subject(
        store: SiteStore, recs: Sequence[StoredRecord], gone: set[str]
    ) -> set[str]:
        """The subjects of ``recs`` that keep no record at the site once ``gone`` is
        deleted: their data keys go too. (A subject is the records' ``profile_key``, or
        the record itself.)"""
        out = set()
        for subject in {r.subject_id for r in recs}:
            if all(other.record_id in gone for other in store.subject_records(subject)):
                out.add(subject)
        return out

    def batch_delete(self, site: Site, body: Any, caller: Caller) -> int:
        return self.delete(site, check_batch_delete(body), caller, batch=True)

    # --- expiry -----------------------------------------------------------------------------

    def expire(self, site: Site, caller: Caller) -> dict[str, Any]:
        """Destroy the site's records whose ``expires_at`` has passed, with their files,
        through the vault's erasure path (``Domicile.erase_records``): a subject left with
        no record at the site is erased whole, its data key first (crypto-shredding). Each
        record destroyed gets an ``erase`` entry in the site's audit. Reads every record's
        sealed ``expires_at`` (the scale limit of an unnarrowed find)."""
        with self._writing(site, "expire", caller) as store:
            now = self.vault.clock()
            ids = sorted(store.lookup(self._digest(site.id, ALL, "")))
            expired: list[StoredRecord] = []
            for i in range(0, len(ids), CHUNK):
                expired += self._expired(site, self._load(store, ids[i : i + CHUNK]).values(), now)
            out = self._erase_expired(site, expired, caller, "expire")
            del out["erased"]  # record ids: the caller needs the counts
            return out

    def expire_all(self, caller: Caller, site_ids: Sequence[str] | None = None) -> dict[str, Any]:
        """``expire`` at these sites (default: every site). A site that does not answer is
        listed under ``unavailable`` and the others are still swept."""
        # By default, the sites whose data is here (on a federation node, its own only:
        # every other node sweeps its own site).
        wanted = (
            list(site_ids)
            if site_ids
            else [s.id for s in self.vault.config.sites if self.vault.is_here(s.id)]
        )
        sites = {s.id: s for s in self.vault.config.sites}
        unknown = [w for w in wanted if w not in sites]
        if unknown:
            raise BadInput("no site of that name", hint=f"the sites are: {', '.join(sites)}")
        swept: list[dict[str, Any]] = []
        unavailable: list[str] = []
        for site_id in wanted:
            try:
                swept.append(self.expire(sites[site_id], caller))
            except SiteUnavailable:
                unavailable.append(site_id)
        return {
            "sites": swept,
            "records": sum(s["records"] for s in swept),
            "keys_destroyed": sum(s["keys_destroyed"] for s in swept),
            "restricted": sum(s["restricted"] for s in swept),
            "unavailable": unavailable,
        }

    def _erase_expired(
        self, site: Site, recs: Sequence[StoredRecord], caller: Caller, operation: str
    ) -> dict[str, Any]:
        """Erase these expired records, except a restricted subject's: its data is kept as
        it is until the restriction is lifted (the GDPR's Art. 18(1)(b) and (c): the subject
        opposed erasure, or needs the data for a claim), and never served meanwhile; the
        first sweep after the lift destroys it. (A withdrawal of consent does not keep it.)"""
        restricted = self.vault.store(site.id).restricted(r.subject_id for r in recs)
        kept = [r for r in recs if r.subject_id in restricted]
        recs = [r for r in recs if r.subject_id not in restricted]
        files = {
            r.record_id: [m["file_id"] for m in self._view(site, r).get("attachments") or []]
            for r in recs
        }
        out = self.vault.erase_records(
            site.id, recs, belonging=files, purpose=PURPOSE, client=caller.client,
            detail={"api": "incountry", "operation": operation, "reason": "expired"},
        )  # fmt: skip
        return {
            "site": site.id,
            "records": out["records"],
            "keys_destroyed": out["keys_destroyed"],
            "copies": out["copies"],
            "restricted": len(kept),
            "erased": [r.record_id for r in recs],
        }

    # --- attachments ------------------------------------------------------------------------

    def _attachments(self, site: Site, rec: StoredRecord) -> tuple[_View, list[dict[str, Any]]]:
        view = self._view(site, rec)
        return view, [dict(m) for m in view.get("attachments") or []]

    @staticmethod
    def _find_meta(metas: Sequence[dict[str, Any]], file_id: str) -> dict[str, Any]:
        for m in metas:
            if m["file_id"] == file_id:
                return m
        raise NotFound("the record has no attachment with this file_id")

    def _save_metas(
        self,
        site: Site,
        rec: StoredRecord,
        metas: Sequence[Mapping[str, Any]],
    ) -> StoredRecord:
        """The record with its sealed attachment list replaced (its data untouched)."""
        cipher = self.vault._cipher(site.id, rec.subject_id)
        fields = {k: v for k, v in rec.fields.items() if k != "attachments"}
        if metas:
            fields.update(
                self._seal(site.id, cipher, COLLECTION, rec.record_id, {"attachments": list(metas)})
            )
        return dataclasses.replace(rec, version=rec.version + 1, body=pack_fields(fields))

    def add_attachment(
        self,
        site: Site,
        record_key: str,
        *,
        filename: str | None,
        mime_type: str | None,
        data: bytes,
        upsert: bool,
        caller: Caller,
    ) -> dict[str, Any]:
        """Attach a file held whole in memory (the HTTP service streams instead: see
        ``begin_upload``)."""
        upload = self.begin_upload(site, record_key, caller=caller, upsert=upsert)
        upload.start(filename, mime_type)
        upload.write(data)
        return self.finish_upload(upload)

    def begin_upload(
        self,
        site: Site,
        record_key: str,
        *,
        caller: Caller,
        upsert: bool,
        max_bytes: int = MAX_ATTACHMENT_BYTES,
    ) -> Upload:
        """Check and decide an attachment before its first byte is read: the record must
        exist and the policy must let the site update it. The file is then sealed as it
        arrives (``Upload.write``) and written by ``finish_upload``."""
        operation = "upsert_attachment" if upsert else "add_attachment"
        with self._site(site, operation, caller) as store:
            rec = self._get(site, store, record_key)
            (decision,) = self._allow_records(site, caller, operation, "update", [rec])
            view, metas = self._attachments(site, rec)
        cipher = self.vault._cipher(site.id, rec.subject_id)
        return Upload(
            site, caller, operation, rec, decision, metas, str(view.get("record_key")), cipher,
            upsert, min(max_bytes, MAX_ATTACHMENT_BYTES),
        )  # fmt: skip

    def finish_upload(self, upload: Upload) -> dict[str, Any]:
        """Write a sealed upload: its file, the record's new attachment list and the audit
        entry, in one transaction. If the record changed since ``begin_upload``, nothing
        is written (``VersionConflict``)."""
        if upload.sealer is None:
            raise BadInput("the upload has no file", hint="send one multipart part named file")
        site, rec = upload.site, upload.rec
        with self._writing(site, upload.operation, upload.caller) as store:
            # Checked again: a block placed while the file arrived stops the write.
            self._check_blocks(site, upload.caller, "records:write", [rec])
            now = iso(self.vault.clock())
            same = upload.same
            meta = {
                "file_id": upload.fid, "filename": upload.name,
                "hash": upload.digest.hexdigest(), "mime_type": upload.mime,
                "size": upload.sealer.size,
                "created_at": same["created_at"] if same else now, "updated_at": now,
            }  # fmt: skip
            metas = upload.metas
            metas = (
                [meta if m["file_id"] == upload.fid else m for m in metas]
                if same
                else [*metas, meta]
            )
            file_rec = StoredRecord(
                upload.fid, rec.subject_id, FILES, 1, str(meta["created_at"]), now,
                pack_fields({"data": bytes(upload.sealer.finish())}),
            )  # fmt: skip
            new = self._save_metas(site, rec, metas)
            with store.transaction() as tx:
                if same:
                    tx.delete([upload.fid])
                tx.insert([file_rec])
                tx.replace(new, rec.version)
                self.vault._ledgers[site.id].append(
                    tx,
                    [self._event("update", site, upload.caller, upload.operation,
                                 rid=rec.record_id, subject=rec.subject_id,
                                 decision=upload.decision, fields=["attachments"], at=now,
                                 file=upload.fid)],
                )  # fmt: skip
        return self._meta_out(meta, upload.record_key, upload.caller)

    def attachment(
        self, site: Site, record_key: str, file_id: str, caller: Caller, *, with_data: bool
    ) -> tuple[dict[str, Any], bytes | None]:
        """An attachment's metadata, and its bytes when ``with_data``."""
        operation = "get_attachment" if with_data else "get_attachment_meta"
        with self._site(site, operation, caller) as store:
            rec = self._get(site, store, record_key)
            (decision,) = self._allow_records(site, caller, operation, "retrieve", [rec])
            view, metas = self._attachments(site, rec)
            meta = self._find_meta(metas, file_id)
            data: bytes | None = None
            if with_data:
                f = store.get(file_id)
                if f is None or f.collection != FILES:
                    raise NotFound("the attachment's file is gone")
                cipher = self.vault._cipher(site.id, f.subject_id)
                data = cipher.open(
                    f.fields["data"], record_context(site.id, FILES, f.record_id) + b"data"
                )
            self.vault._audit(
                site.id,
                [self._event("read", site, caller, operation, rid=rec.record_id,
                             subject=rec.subject_id, decision=decision, fields=["attachments"],
                             file=file_id)],
            )  # fmt: skip
        return self._meta_out(meta, view.get("record_key"), caller), data

    def update_attachment_meta(
        self, site: Site, record_key: str, file_id: str, changes: Any, caller: Caller
    ) -> dict[str, Any]:
        operation = "update_attachment_meta"
        checked = check_meta(changes)
        with self._writing(site, operation, caller) as store:
            rec = self._get(site, store, record_key)
            (decision,) = self._allow_records(site, caller, operation, "update", [rec])
            view, metas = self._attachments(site, rec)
            meta = self._find_meta(metas, file_id)
            meta.update(checked, updated_at=iso(self.vault.clock()))
            new = self._save_metas(site, rec, metas)
            with store.transaction() as tx:
                tx.replace(new, rec.version)
                self.vault._ledgers[site.id].append(
                    tx,
                    [self._event("update", site, caller, operation, rid=rec.record_id,
                                 subject=rec.subject_id, decision=decision, fields=["attachments"],
                                 file=file_id, changed=sorted(checked))],
                )  # fmt: skip
        return self._meta_out(meta, view.get("record_key"), caller)

    def delete_attachment(self, site: Site, record_key: str, file_id: str, caller: Caller) -> None:
        operation = "delete_attachment"
        with self._writing(site, operation, caller) as store:
            rec = self._get(site, store, record_key)
            (decision,) = self._allow_records(site, caller, operation, "update", [rec])
            _, metas = self._attachments(site, rec)
            self._find_meta(metas, file_id)
            new = self._save_metas(site, rec, [m for m in metas if m["file_id"] != file_id])
            with store.transaction() as tx:
                tx.delete([file_id])
                tx.replace(new, rec.version)
                self.vault._ledgers[site.id].append(
                    tx,
                    [self._event("update", site, caller, operation, rid=rec.record_id,
                                 subject=rec.subject_id, decision=decision, fields=["attachments"],
                                 file=file_id)],
                )  # fmt: skip


class ExpirySweeper(Periodic):
    """Destroys expired InCountry records every ``interval`` seconds, in a thread of its own
    (the service's timer; ``domicile expire`` does the same on demand). A site that does not
    answer is swept on a later round; the log names counts and sites, never a record."""

    def __init__(self, storage: InCountryStorage, interval: float) -> None:
        super().__init__(interval, "domicile-expiry", "expiry sweep", "domicile.incountry")
        self.storage = storage

    def sweep(self) -> dict[str, Any]:
        caller = Caller(self.storage.vault.operator.client or "service:expiry")
        self.last = self.storage.expire_all(caller)
        return self.last

    def round(self) -> None:
        done = self.sweep()
        if done["records"]:
            self.log.info(
                "expiry sweep destroyed %d records (%d keys)",
                done["records"], done["keys_destroyed"],
            )  # fmt: skip
        if done["unavailable"]:
            self.log.warning("expiry sweep: unavailable sites %s", ", ".join(done["unavailable"]))
