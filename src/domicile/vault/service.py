"""The vault: put, get, update, delete, find and erase records of subjects, by collection.

The write path: check every value; resolve the subject's residency; ask the decision
engine which site must hold the record (the home site); seal each field under the
subject's data key; then, in one transaction at the home site, store the record, its blind
indexes and its audit entry; return a token. Nothing of the subject's data is written to
any other site, and if the home site cannot be reached the write fails: it never falls back.

The read path: open the token; read the record at its home site; ask the engine whether
the requester's site may have it (a read from another country is a transfer, or a masked
disclosure where a pack permits only masked forms); audit the read, or the refusal; only
then open the fields.

Every record operation takes its caller (``access=``, a ``domicile.access.Access``; by
default the local operator, with every right) and checks its scopes through
``Domicile.authorize`` before it decrypts, writes or audits anything as allowed: the
operation, site and purpose before the record is loaded, and the record's collection once
it is (a record outside the caller's collections answers exactly as a missing one does).
Every audit entry names the caller (``client``) and the site it acted from (``requester``).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from domicile.access import Access
from domicile.audit import AuditEvent, AuditLedger, VerifyReport
from domicile.audit.heads import HeadsFile
from domicile.audit.ledger import Action, PayloadTemplate
from domicile.categories import is_under
from domicile.config import Collection, Config, Site, load_config
from domicile.crypto.blind import BlindIndexer
from domicile.crypto.envelope import (
    FieldCipher,
    field_context,
    key_context,
    new_data_key,
    record_context,
)
from domicile.crypto.errors import KeyDestroyed, KeyringError
from domicile.crypto.keys import KeyProvider, LocalKeyring
from domicile.deployment import DeploymentRegistry
from domicile.errors import BadInput, DomicileError
from domicile.filings import FilingEntry, FilingsRegistry
from domicile.packs import Outcome, load_packs
from domicile.policy import Decision, PolicyEngine
from domicile.residency import Residency, SubjectEvidence, TriSet, resolve
from domicile.stores import (
    IndexEntry,
    KeyStore,
    SiteStore,
    StoredRecord,
    TransferCount,
    WrappedKey,
    open_key_store,
    open_site_store,
)
from domicile.stores.base import SiteUnavailable
from domicile.vault import values
from domicile.vault.errors import NotFound, PolicyRefused
from domicile.vault.masking import mask_methods, masked_fields
from domicile.vault.tokens import TokenCodec

if TYPE_CHECKING:
    from domicile.vault.auditing import WitnessRound

PURPOSE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
RESIDENCY_FIELD = "@residency"  # sealed like any field: residency is personal data too
RESIDENCY_AD = RESIDENCY_FIELD.encode()
IDENTITY = "@identity"  # blind-index namespace of identifying values, across collections
DEK_CACHE = 10_000
# Seconds a key rotation waits before its second pass: longer than any writer takes between
# wrapping a new subject's key and storing it.
ROTATION_GRACE = 2.0
DECISION_CACHE = 50_000
SMALL_CACHE = 4_096  # shapes, residencies and audit templates: a few per deployment


def new_ids(n: int) -> list[str]:
    """``n`` fresh ids of 128 bits (32 hex digits): 48 bits of Unix time in milliseconds,
    then 80 random bits. Ids made together sort together, so every index keyed by them
    grows at its end instead of at random pages; a batch's commit then writes a few pages
    per index rather than most of them. An id is no secret (tokens are sealed, and ids
    appear in the audit); the time it carries is no more than ``created_at`` says."""
    ms = (time.time_ns() // 1_000_000).to_bytes(6, "big").hex()
    pool = os.urandom(10 * n).hex()
    return [ms + pool[i : i + 20] for i in range(0, 20 * n, 20)]


class _Shape:
    """What the vault derives from a collection and the names of a record's fields, once:
    each field's category and blind-index settings, and the sorted views that decisions
    and audit entries use."""

    __slots__ = ("ads", "by_field", "categories", "indexed", "joins", "names", "sensitive")

    def __init__(self, coll: Collection, names: Sequence[str]) -> None:
        specs = coll.fields
        known = [n for n in names if n in specs]
        self.by_field = {n: specs[n].category for n in known}  # field -> category
        self.categories = tuple(sorted(set(self.by_field.values())))  # sorted, unique
        self.names = tuple(sorted(known))
        self.sensitive = any(is_sensitive(c) for c in self.categories)
        self.ads = {n: n.encode() for n in names}  # the field part of associated data
        # (field, spec, its category when it identifies the subject, else None)
        self.indexed = [
            (n, specs[n], specs[n].category if specs[n].identifies else None)
            for n in known
            if specs[n].searchable
        ]
        self.joins = [n for n in known if specs[n].join_token]


def _decode(raw: bytes) -> Any:
    return raw[1:].decode("utf-8") if raw[:1] == b"s" else values.decode(raw)


# Categories whose export counts as "sensitive" for volume thresholds (PIPL Art. 28 and the
# special categories of most laws).
SENSITIVE = (
    "user.biometric", "user.health_and_medical", "user.financial", "user.payment",
    "user.childrens", "user.criminal_history", "user.location.precise", "user.government_id",
    "user.demographic.race_ethnicity", "user.demographic.religious_belief",
    "user.demographic.political_opinion", "user.demographic.sexual_orientation",
)  # fmt: skip


def is_sensitive(category: str) -> bool:
    return any(is_under(category, root) for root in SENSITIVE)


def transfer_detail(
    decision: Decision,
    from_country: str,
    to_country: str,
    shown: Mapping[str, Any],
    kind: str,
    version: int | None = None,
) -> dict[str, Any]:
    """The ledger's view of a transfer: route and rules, legal bases and filings used. (A
    masked disclosure is no transfer: see ``Domicile._masked_payload``.)"""
    legs = [r for r in decision.rules if r.flow is not None and r.kind == "transfer"]
    return {
        "action": "transfer",
        "decision": decision.outcome.value,
        "fields": tuple(sorted(shown)),
        "detail": {
            "kind": kind,
            "from_country": from_country,
            "to_country": to_country,
            "routes": sorted({f"{r.id}:{r.route}" for r in legs if r.route}),
            "filings": sorted({f for r in legs for f in r.filings_used}),
            "bases": sorted(decision.request.bases),
            **({"version": version} if version is not None else {}),
        },
    }


def check_purpose(purpose: str) -> str:
    if not isinstance(purpose, str) or not PURPOSE.match(purpose):
        raise BadInput(
            "every call names its purpose as a short lower-case name",
            hint="e.g. --purpose account_signup (letters, digits, _ . -; at most 64)",
        )
    return purpose


def _residency_to_json(r: Residency) -> dict[str, Any]:
    return {
        "citizenship": r.citizenship.to_dict(),
        "residence": r.residence.to_dict(),
        "location": r.location.to_dict(),
    }


def _residency_from_json(data: Mapping[str, Any]) -> Residency:
    def tri(d: Mapping[str, list[str]]) -> TriSet:
        return TriSet(frozenset(d["certain"]), frozenset(d["possible"]))

    return Residency(tri(data["citizenship"]), tri(data["residence"]), tri(data["location"]), ())


@dataclass(frozen=True)
class PutResult:
    token: str
    site: str
    country: str
    decision: Decision
    subject_is_new: bool
    join_tokens: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "site": self.site,
            "country": self.country,
            "decision": self.decision.to_dict(),
            **({"join_tokens": self.join_tokens} if self.join_tokens else {}),
        }


@dataclass(frozen=True)
class ReadResult:
    token: str
    site: str
    country: str
    collection: str
    fields: dict[str, Any]
    version: int
    decision: Decision
    transfer: bool  # the read crossed a border
    masked: bool = False  # only the masked forms a pack permits were disclosed
    source: str = "primary"  # or "replica": a permitted copy at the requester's site
    read_at: str | None = None  # the site whose store answered

    def to_dict(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "site": self.site,
            "country": self.country,
            "collection": self.collection,
            "version": self.version,
            "fields": self.fields,
            "transfer": self.transfer,
            "masked": self.masked,
            "source": self.source,
            "read_at": self.read_at or self.site,
            "decision": self.decision.outcome.value,
            "disclosure": self.decision.disclosure,
            "rules": [r.id for r in self.decision.rules],
        }


@dataclass(frozen=True)
class WriteResult:
    """An update's answer to a caller who may not read the record back (no
    ``records:read``, or the law refuses the read from its site): nothing but the version."""

    token: str
    version: int

    def to_dict(self) -> dict[str, Any]:
        return {"token": self.token, "version": self.version}


@dataclass
class _Disclosure:
    """A read decided and opened but not yet audited: what may be shown and its audit
    payload (a read, a transfer with its year-to-date count, or a masked disclosure), or
    the refusal's payload and error."""

    payload: str
    result: ReadResult | None = None
    count: TransferCount | None = None
    error: PolicyRefused | None = None


@dataclass(frozen=True)
class SiteStatus:
    id: str
    country: str
    location: dict[str, str]
    backend: str
    records: int | None
    healthy: bool
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "country": self.country,
            "location": self.location,
            "backend": self.backend,
            "records": self.records,
            "healthy": self.healthy,
            **({"error": self.error} if self.error else {}),
        }


@dataclass
class FindResult:
    records: list[ReadResult] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": [r.to_dict() for r in self.records],
            "refused": self.refused,
            "unavailable": self.unavailable,
        }


class _SubjectErased(Exception):
    """A write's subject was erased after the write looked it up (redone as a new subject)."""


@dataclass
class _Item:
    """One record on its way in."""

    index: int
    fields: dict[str, Any]
    residency: Residency
    site: Site | None = None
    decision: Decision | None = None
    subject_id: str | None = None
    new_subject: bool = False


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _no_such_record() -> NotFound:
    """The answer for a record that does not exist, and for one outside the caller's
    collections: the same words, so the answer says nothing about which it was."""
    return NotFound("no such record (it may have been deleted or erased)", hint="check the token")


class _Indexers(dict[str, BlindIndexer]):
    """Each site's blind indexer, made when first used: a site whose keys are not in the
    keyring (not set up, or a keyring restored from before it) is unavailable, while the
    other sites work."""

    def __init__(self, provider: KeyProvider) -> None:
        super().__init__()
        self.provider = provider

    def __missing__(self, site_id: str) -> BlindIndexer:
        try:
            indexer = BlindIndexer(self.provider.index_key(site_id))
        except KeyringError as exc:
            raise SiteUnavailable(site_id, exc.message, hint=exc.hint) from None
        self[site_id] = indexer
        return indexer


class Domicile:
    """The SDK. ``Domicile.open()`` reads the configuration; close it when done."""

    def __init__(
        self,
        config: Config,
        *,
        keys: KeyProvider | None = None,
        engine: PolicyEngine | None = None,
        clock: Callable[[], dt.datetime] = _utcnow,
        operator: str | None = None,
        read_only: bool = False,
    ) -> None:
        self.config = config
        self.clock = clock
        # The caller of operations that name none: the local operator, with every right,
        # named in the audit as ``operator`` (the CLI passes "cli:USER").
        self.operator = Access.operator(operator)
        # Every store opened read-only: nothing migrated, nothing written (a write fails as
        # an unavailable site). For commands that must only read, such as `audit verify`.
        self.read_only = read_only
        self.keys: KeyProvider = keys or self._keyring(config)
        self.engine = engine or PolicyEngine(load_packs(config.pack_paths))
        # Sites, their stores and their keys are made only by setup (domicile.setup); the
        # registry says which stores are the sites' own (their creation ids).
        self.deployment = DeploymentRegistry(config.registry_path)
        self.tokens = TokenCodec(self.keys.token_key())
        self.filings = FilingsRegistry(config, self.engine)
        self._join_key = self.keys.join_key()
        self._sites = {s.id: s for s in config.sites}
        self._stores: dict[str, SiteStore] = {}
        self._keystores: dict[str, KeyStore] = {}
        self._ledgers = {s.id: AuditLedger(s.id, self.keys) for s in config.sites}
        # Heads a witness refused in this process (the refusal is recorded once).
        self.witness_refusals: set[tuple[str, str, int, bytes]] = set()
        self._indexers = _Indexers(self.keys)
        self._deks: OrderedDict[tuple[str, str], FieldCipher] = OrderedDict()
        # Requests are validated once per shape: the engine's cache keys on the validated form.
        self._decisions: dict[tuple[Any, ...], Decision] = {}
        self._placements: dict[tuple[Any, ...], tuple[Site, Decision]] = {}
        self._shapes: dict[tuple[str, tuple[str, ...]], _Shape] = {}
        self._residencies: dict[bytes, Residency] = {}  # sealed residency, opened -> parsed
        self._templates: dict[tuple[Any, ...], tuple[Any, PayloadTemplate]] = {}
        self._facts_read: dict[str, bool] = {}
        # Sites that some collection copies to: the only places a copy can be read from.
        self._copy_sites = frozenset(
            t.to for c in config.model.collections.values() for t in c.replicate
        )
        self._lock = threading.RLock()
        for name, coll in config.model.collections.items():
            for fname, spec in coll.fields.items():
                try:
                    self.engine.packs.taxonomy.check(spec.category)
                except DomicileError as exc:
                    raise BadInput(
                        f"collection {name!r} field {fname!r}: {exc.message}", hint=exc.hint
                    ) from None

    @staticmethod
    def _keyring(config: Config) -> LocalKeyring:
        """The local keyring. Only setup makes one (a new keyring beside existing data
        would make that data unreadable)."""
        if not config.keyring_path.exists():
            for s in config.sites:
                url = config.keys_url(s)
                if url.startswith("sqlite:") and Path(url.removeprefix("sqlite:")).exists():
                    raise KeyringError(
                        f"the keyring {config.keyring_path} is missing but site {s.id!r} already has subject keys",
                        hint="restore the keyring from its backup; without it the data cannot be read",
                    )
        return LocalKeyring(config.keyring_path)

    @classmethod
    def open(cls, config: str | Path | Config | None = None, **kwargs: Any) -> Domicile:
        cfg = config if isinstance(config, Config) else load_config(config)
        return cls(cfg, **kwargs)

    def close(self, *, checkpoint: bool = True) -> None:
        """Disconnect. If this process added to any site's audit log, first run a witness
        round (unless ``checkpoint=False``), so what it did is signed and witnessed. A
        process that only read (verification, say) writes nothing here."""
        with self._lock:
            if checkpoint and any(ledger.appended for ledger in self._ledgers.values()):
                with contextlib.suppress(DomicileError):
                    self.witness()
            for store in self._stores.values():
                store.close()
            for ks in self._keystores.values():
                ks.close()
            self._stores.clear()
            self._keystores.clear()
            self._deks.clear()
            for ledger in self._ledgers.values():
                ledger.appended = False

    def __enter__(self) -> Domicile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing ---------------------------------------------------------------------------

    def store(self, site_id: str) -> SiteStore:
        """The site's store: opened only if it is the one setup created (the creation id
        the deployment recorded), else ``SiteUnavailable``. Never created here."""
        with self._lock:
            store = self._stores.get(site_id)
            if store is None:
                site = self._sites[site_id]
                created = self.deployment.site(site_id)
                store = open_site_store(
                    site_id,
                    self.config.backend_url(site.backend),
                    creation_id=created.store,
                    read_only=self.read_only,
                )
                self._stores[site_id] = store
            return store

    def keystore(self, site_id: str) -> KeyStore:
        """The site's key store, on the same terms as ``store``: a missing key store is an
        unavailable site, never an empty new one (that would read as every subject erased)."""
        with self._lock:
            ks = self._keystores.get(site_id)
            if ks is None:
                created = self.deployment.site(site_id)
                ks = open_key_store(
                    site_id,
                    self.config.keys_url(self._sites[site_id]),
                    creation_id=created.keys,
                    read_only=self.read_only,
                )
                self._keystores[site_id] = ks
            return ks

    def ledger(self, site_id: str) -> AuditLedger:
        return self._ledgers[site_id]

    def forget_store(self, site_id: str) -> None:
        """Forget a connection that failed, so the next call reconnects."""
        self._drop(site_id)

    def _drop(self, site_id: str) -> None:
        """Forget the site's connections after a failure, so the next call opens them
        again (and checks again that they are the site's own)."""
        with self._lock:
            for cache in (self._stores, self._keystores):
                store = cache.pop(site_id, None)
                if store is not None:
                    with contextlib.suppress(Exception):
                        store.close()

    def collection(self, name: str) -> Collection:
        try:
            return self.config.model.collections[name]
        except KeyError:
            raise BadInput(
                "no collection of that name",
                hint=f"the configuration has: {', '.join(self.config.model.collections)}",
            ) from None

    def _today(self) -> dt.date:
        return self.clock().date()

    def _stamp(self) -> tuple[dt.date, Any]:
        """Today and the filings registry's version: what, besides the request, a decision
        depends on. Taken once per operation (a batch is decided on one day, under one
        set of filings)."""
        return self._today(), self.filings.version

    def _decide(
        self,
        residency: Residency,
        categories: Iterable[str],
        operation: str,
        site_country: str,
        to_country: str | None = None,
        facts: Mapping[str, bool | int | str] | None = None,
        *,
        stamp: tuple[dt.date, Any] | None = None,
    ) -> Decision:
        return self._decide_sorted(
            residency, tuple(sorted(set(categories))), operation, site_country, to_country,
            tuple(sorted((facts or {}).items())), stamp or self._stamp(),
        )  # fmt: skip

    def _decide_sorted(
        self,
        residency: Residency,
        cats: tuple[str, ...],
        operation: str,
        site_country: str,
        to_country: str | None,
        extra: tuple[tuple[str, bool | int | str], ...],
        stamp: tuple[dt.date, Any],
    ) -> Decision:
        """``_decide`` with the categories sorted and unique and the facts as sorted items."""
        key = (residency, cats, operation, site_country, to_country, extra, *stamp)
        hit = self._decisions.get(key)
        if hit is not None:
            return hit
        req = self.engine.request(
            subject=residency,
            categories=cats,
            operation=operation,
            site_country=site_country,
            to_country=to_country,
            date=stamp[0],
            filings=self.filings.current(),
            facts={**self.config.model.facts, **dict(extra)},
        )
        decision = self.engine.decide(req)
        if len(self._decisions) >= DECISION_CACHE:
            self._decisions.clear()
        self._decisions[key] = decision
        return decision

    def _shape(self, collection: str, coll: Collection, names: tuple[str, ...]) -> _Shape:
        key = (collection, names)
        shape = self._shapes.get(key)
        if shape is None:
            if len(self._shapes) >= SMALL_CACHE:
                self._shapes.clear()
            shape = self._shapes[key] = _Shape(coll, names)
        return shape

    def _template(
        self, key: tuple[Any, ...], keep: Any, make: Callable[[], PayloadTemplate]
    ) -> PayloadTemplate:
        """A cached payload template. ``key`` may hold ``id(keep)``: the entry keeps
        ``keep`` alive, so that id cannot be reused while the entry exists."""
        hit = self._templates.get(key)
        if hit is not None and hit[0] is keep:
            return hit[1]
        template = make()
        if len(self._templates) >= SMALL_CACHE:
            self._templates.clear()
        self._templates[key] = (keep, template)
        return template

    def _audit(self, site_id: str, events: Sequence[AuditEvent]) -> None:
        """Audit entries in a transaction of their own (reads, refusals)."""
        self._ledgers[site_id].append_now(self.store(site_id), events)

    def _audit_refusal(self, event: AuditEvent, at: str | None = None) -> None:
        """Record a refusal at the site where the request arrived; if even that site is
        down, the refusal is raised all the same."""
        site = at or self.config.local_site
        try:
            self._audit(site, [replace(event, site=site)])
        except SiteUnavailable:
            self._drop(site)

    def authorize(
        self,
        access: Access,
        operation: str,
        *,
        site: str | None = None,
        collection: str | None = None,
        purpose: str | None = None,
        hide: bool = False,
    ) -> None:
        """The one check of a caller's scopes, for every operation of every interface.

        A refusal is audited where the request arrived, naming the caller and the missing
        scope (the names given here are configured sites and collections and checked
        purposes, never other request values), and raised as ``Forbidden``; with ``hide``
        (a record's collection, known only once it is loaded) as the ``NotFound`` a
        missing record gets, so a caller cannot tell the two apart."""
        missing = access.missing(operation, site=site, collection=collection, purpose=purpose)
        if missing is None:
            return
        self._audit_refusal(
            AuditEvent(
                action="refuse", site="", purpose=purpose, client=access.client,
                requester=access.site or self.config.local_site,
                detail=access.audit_detail(operation, missing),
            )
        )  # fmt: skip
        if hide:
            raise _no_such_record()
        raise access.refusal(missing)

    def _cipher(self, site_id: str, subject_id: str) -> FieldCipher:
        key = (site_id, subject_id)
        with self._lock:
            cached = self._deks.get(key)
            if cached is not None:
                self._deks.move_to_end(key)
                return cached
        try:
            wrapped = self.keystore(site_id).get(subject_id)
        except SiteUnavailable:
            self._drop(site_id)
            raise
        if wrapped is None:
            raise KeyDestroyed(
                "the subject's data key no longer exists (erased)",
                hint="the data cannot be read by anyone any more",
            )
        dek = self.keys.unwrap(
            site_id, wrapped.kek_version, wrapped.wrapped, key_context(site_id, subject_id)
        )
        cipher = FieldCipher(dek)
        with self._lock:
            self._deks[key] = cipher
            if len(self._deks) > DEK_CACHE:
                self._deks.popitem(last=False)
        return cipher

    def _forget_key(self, site_id: str, subject_id: str) -> None:
        with self._lock:
            self._deks.pop((site_id, subject_id), None)

    # --- placement --------------------------------------------------------------------------

    def place(self, residency: Residency, categories: Iterable[str]) -> tuple[Site, Decision]:
        """The home site for a subject's record, or ``PolicyRefused``."""
        return self._place_sorted(residency, tuple(sorted(set(categories))), self._stamp())

    def _place_sorted(
        self, residency: Residency, cats: tuple[str, ...], stamp: tuple[dt.date, Any]
    ) -> tuple[Site, Decision]:
        key = (residency, cats, *stamp)
        hit = self._placements.get(key)
        if hit is not None:
            return hit
        placed = self._place(residency, cats, stamp)
        if len(self._placements) >= DECISION_CACHE:
            self._placements.clear()
        self._placements[key] = placed
        return placed

    def _place(
        self, residency: Residency, cats: tuple[str, ...], stamp: tuple[dt.date, Any]
    ) -> tuple[Site, Decision]:
        decisions: dict[str, Decision] = {}
        by_country: dict[str, Decision] = {}
        for s in self.config.sites:
            if s.country not in by_country:
                by_country[s.country] = self._decide_sorted(
                    residency, cats, "store", s.country, None, (), stamp
                )
            decisions[s.id] = by_country[s.country]
        allowed = [s for s in self.config.sites if decisions[s.id].outcome is Outcome.allow]
        if not allowed:

            def why(d: Decision) -> str:
                rules = [r.id for r in d.rules if r.outcome is d.outcome]
                return f"{d.outcome.value} by {', '.join(rules)}" if rules else d.outcome.value

            summary = "; ".join(
                f"{s.id} ({s.country}): {why(decisions[s.id])}" for s in self.config.sites
            )
            first = next(iter(decisions.values()))
            raise PolicyRefused(
                f"no configured site may hold this record ({summary})",
                decision=first.to_dict(),
                hint="see `domicile policy explain` for each site; add a site or a filing that unlocks one",
            )
        default = self.config.model.default_site

        def rank(s: Site) -> tuple[int, int, int]:
            home = 2
            for j in decisions[s.id].jurisdictions:
                if j.coverage == "none":
                    continue
                if s.country in self.engine.packs.get(j.pack).pack.countries:
                    home = min(home, 0 if j.coverage == "covered" else 1)
            return (home, 0 if s.id == default else 1, self.config.sites.index(s))

        best = min(allowed, key=rank)
        return best, decisions[best.id]

    # --- writes -----------------------------------------------------------------------------

    def put(
        self,
        collection: str,
        *,
        subject: SubjectEvidence | Mapping[str, Any] | Sequence[str],
        fields: Mapping[str, Any],
        purpose: str,
        access: Access | None = None,
    ) -> PutResult:
        return self.put_many(
            collection, [{"subject": subject, "fields": fields}], purpose=purpose, access=access
        )[0]

    def put_many(
        self,
        collection: str,
        items: Sequence[Mapping[str, Any]],
        *,
        purpose: str,
        access: Access | None = None,
    ) -> list[PutResult]:
        """Write records. Everything is checked and placed before anything is written; the
        records of one site are written in one transaction."""
        check_purpose(purpose)
        access = access or self.operator
        coll = self.collection(collection)
        acting = self._requester(access.site)
        self.authorize(
            access, "records:write", site=acting.id, collection=collection, purpose=purpose
        )
        if not items:
            raise BadInput("nothing to write", hint="give at least one record")
        prepared: list[_Item] = []
        evidence_cache: dict[Any, Residency] = {}
        for i, item in enumerate(items):
            try:
                if not isinstance(item, Mapping) or set(item) - {"subject", "fields"}:
                    raise BadInput("each record is {subject: ..., fields: ...}")
                checked = values.check_fields(collection, coll, item.get("fields") or {})
                residency = self._evidence_residency(item.get("subject"), evidence_cache)
                prepared.append(_Item(i, checked, residency))
            except BadInput as exc:
                where = f"record {i}: " if len(items) > 1 else ""
                raise type(exc)(where + exc.message, hint=exc.hint) from None

        stamp = self._stamp()  # the whole batch is placed on one day, under one set of filings
        placed: dict[tuple[Residency, tuple[str, ...]], tuple[Site, Decision]] = {}
        for p in prepared:
            names = tuple(p.fields)
            hit = placed.get((p.residency, names))
            if hit is None:
                cats = self._shape(collection, coll, names).categories
                try:
                    hit = self._place_sorted(p.residency, cats, stamp)
                except PolicyRefused as exc:
                    self._audit_refusal(
                        AuditEvent(
                            action="refuse", site="", purpose=purpose, collection=collection,
                            requester=acting.id, client=access.client, categories=cats,
                            detail={"operation": "put", "reason": "policy"}, decision="deny",
                        )
                    )  # fmt: skip
                    where = f"record {p.index}: " if len(prepared) > 1 else ""
                    raise PolicyRefused(
                        where + exc.message, decision=exc.decision, hint=exc.hint
                    ) from None
                placed[(p.residency, names)] = hit
            p.site, p.decision = hit

        by_site: dict[str, list[_Item]] = {}
        for p in prepared:
            assert p.site is not None
            by_site.setdefault(p.site.id, []).append(p)
        # Fail closed before writing anything: every home site must answer.
        for site_id in by_site:
            self._require(site_id, purpose, collection, "put", access)
        results: dict[int, PutResult] = {}
        for site_id, group in by_site.items():
            results.update(self._write_site(site_id, collection, coll, group, purpose, access))
        return [results[i] for i in range(len(prepared))]

    @staticmethod
    def _evidence_residency(raw: Any, cache: dict[Any, Residency]) -> Residency:
        """The residency of a record's subject evidence; ``cache`` serves a batch whose
        records repeat the same evidence (keyed by the evidence, and by a mapping's items
        when they are all strings)."""
        key: tuple[tuple[str, str], ...] | None = None
        if isinstance(raw, Mapping) and all(type(v) is str for v in raw.values()):
            key = tuple(raw.items())
            hit = cache.get(key)
            if hit is not None:
                return hit
        if isinstance(raw, SubjectEvidence):
            ev = raw
        elif isinstance(raw, Mapping):
            ev = SubjectEvidence.from_mapping(raw)
        elif isinstance(raw, Sequence) and not isinstance(raw, str):
            ev = SubjectEvidence.parse(raw)
        else:
            raise BadInput("subject evidence is missing", hint="e.g. --subject citizenship=RU")
        residency = cache.get(ev)
        if residency is None:
            residency = cache[ev] = resolve(ev)
        if key is not None:
            cache[key] = residency
        return residency

    def _unavailable(
        self,
        exc: SiteUnavailable,
        purpose: str,
        operation: str,
        access: Access | None = None,
        collection: str | None = None,
    ) -> None:
        """After ``exc``: forget the failed site's connections, and audit the refusal at
        the site where the request arrived (when that is another site)."""
        self._drop(exc.site)
        arrival = self.config.local_site
        if arrival != exc.site:
            who = access or self.operator
            self._audit_refusal(
                AuditEvent(
                    action="refuse", site="", purpose=purpose, collection=collection,
                    requester=who.site or arrival, client=who.client,
                    detail={"operation": operation, "reason": "site_unavailable", "home_site": exc.site},
                )
            )  # fmt: skip

    def _require(
        self,
        site_id: str,
        purpose: str,
        collection: str | None,
        operation: str,
        access: Access | None = None,
    ) -> None:
        """Raise ``SiteUnavailable`` (and audit the refusal where the request arrived)
        unless the site's store and key store both answer."""
        try:
            ok = self.store(site_id).ping() and self.keystore(site_id).ping()
            if not ok:
                raise SiteUnavailable(site_id, "it does not answer")
        except SiteUnavailable as exc:
            self._drop(site_id)
            arrival = self.config.local_site
            if arrival != site_id:
                who = access or self.operator
                self._audit_refusal(
                    AuditEvent(
                        action="refuse", site="", purpose=purpose, collection=collection,
                        requester=who.site or arrival, client=who.client,
                        detail={"operation": operation, "reason": "site_unavailable", "home_site": site_id},
                    ),
                    at=arrival,
                )  # fmt: skip
            raise exc from None

    def _write_site(
        self,
        site_id: str,
        collection: str,
        coll: Collection,
        group: list[_Item],
        purpose: str,
        access: Access,
    ) -> dict[int, PutResult]:
        try:
            return self._write_site_once(site_id, collection, coll, group, purpose, access)
        except _SubjectErased:
            # A subject this batch joined was erased between the index lookup and the
            # write. Nothing was written; the lookup no longer finds it, so its records
            # start a new subject this time.
            return self._write_site_once(site_id, collection, coll, group, purpose, access)

    def _write_site_once(
        self,
        site_id: str,
        collection: str,
        coll: Collection,
        group: list[_Item],
        purpose: str,
        access: Access,
    ) -> dict[int, PutResult]:
        site = self._sites[site_id]
        indexer = self._indexers[site_id]
        store = self.store(site_id)
        ks = self.keystore(site_id)
        # Each record's blind-index digests, computed once: its own entries and, for
        # identifying values (e.g. an e-mail address), the digests that tie it to the
        # subject's earlier records: one index query per identifying category per batch.
        digests = [self._digests(indexer, collection, coll, item.fields) for item in group]
        wanted: dict[str, list[bytes]] = {}
        for _, idents in digests:
            for category, digest in idents:
                wanted.setdefault(category, []).append(digest)
        known = {
            (category, d): sid
            for category, ds in wanted.items()
            for d, sid in store.subjects_for(IDENTITY, category, ds).items()
        }
        new_keys: list[tuple[str, WrappedKey]] = []
        ciphers: dict[str, FieldCipher] = {}
        fresh = iter(new_ids(len(group)))
        held: set[str] = set()  # existing subjects this batch adds records to
        for item, (_, idents) in zip(group, digests, strict=True):
            sid = next((known[p] for p in idents if p in known), None)
            if sid is not None and sid not in ciphers:
                try:
                    ciphers[sid] = self._cipher(site_id, sid)
                    held.add(sid)
                except KeyDestroyed:
                    sid = None  # being erased right now: this record starts a new subject
            if sid is None:
                sid = next(fresh)
                dek = new_data_key()
                version, wrapped = self.keys.wrap(site_id, dek, key_context(site_id, sid))
                new_keys.append((sid, WrappedKey(version, wrapped)))
                ciphers[sid] = FieldCipher(dek)
                item.new_subject = True
                for p in idents:
                    known[p] = sid  # later records of this batch join the new subject
            else:
                item.new_subject = False
                for p in idents:
                    known.setdefault(p, sid)  # later records of this batch join it too
            item.subject_id = sid
        if new_keys:
            ks.put_many(new_keys)  # committed before any data sealed with them
            with self._lock:
                for sid, _ in new_keys:
                    self._deks[(site_id, sid)] = ciphers[sid]

        now = self.clock().isoformat()
        rids = new_ids(len(group))
        tokens = self.tokens.issue_many(site_id, rids)
        records: list[StoredRecord] = []
        entries: list[IndexEntry] = []
        payloads: list[str] = []
        results: dict[int, PutResult] = {}
        residency_blobs: dict[Residency, bytes] = {}
        outbox: list[tuple[str, str, str, str]] = []
        targets = self._replica_targets(coll, site_id)
        encode = values.encode
        for item, rid, token, (own, idents) in zip(group, rids, tokens, digests, strict=True):
            sid = item.subject_id
            decision = item.decision
            assert sid is not None
            assert decision is not None
            shape = self._shape(collection, coll, tuple(item.fields))
            cipher = ciphers.get(sid) or self._cipher(site_id, sid)
            prefix = record_context(site_id, collection, rid)
            blob = residency_blobs.get(item.residency)
            if blob is None:
                blob = residency_blobs[item.residency] = values.encode(
                    _residency_to_json(item.residency)
                )
            ads = shape.ads
            sealed = cipher.seal_all(
                [
                    *(
                        # values.encode, with its common case (text) inline
                        (b"s" + v.encode() if type(v) is str else encode(v), prefix + ads[n])
                        for n, v in item.fields.items()
                    ),
                    (blob, prefix + RESIDENCY_AD),
                ]
            )
            records.append(
                StoredRecord(
                    rid, sid, collection, 1, now, now,
                    dict(zip((*item.fields, RESIDENCY_FIELD), sealed, strict=True)),
                )
            )  # fmt: skip
            entries += [IndexEntry(collection, f, d, rid) for f, d in own]
            entries += [IndexEntry(IDENTITY, c, d, rid) for c, d in idents]
            template = self._write_template(site_id, purpose, collection, shape, decision, access)
            payloads.append(template.render(rid, sid, now))
            results[item.index] = PutResult(
                token,
                site_id,
                site.country,
                decision,
                item.new_subject,
                self._join_tokens(collection, coll, item.fields) if shape.joins else {},
            )
            outbox.extend((rid, sid, t, "upsert") for t in targets)
        try:
            with store.transaction() as tx:
                if held and tx.hold_subjects(sorted(held)):
                    raise _SubjectErased
                tx.insert(records)
                tx.index(entries)
                tx.enqueue(outbox)  # replication: in the same transaction as the primary
                self._ledgers[site_id].append_payloads(tx, payloads)
        except SiteUnavailable:
            self._drop(site_id)
            raise
        return results

    def _write_template(
        self,
        site_id: str,
        purpose: str,
        collection: str,
        shape: _Shape,
        decision: Decision,
        access: Access,
    ) -> PayloadTemplate:
        """The payloads of a batch's write entries differ only in record, subject and time."""
        acting = access.site or self.config.local_site
        client = access.client
        return self._template(
            ("write", id(decision), site_id, purpose, collection, shape.names, acting, client),
            decision,
            lambda: PayloadTemplate(
                AuditEvent(
                    action="write", site=site_id, purpose=purpose, collection=collection,
                    requester=acting, client=client, decision=decision.outcome.value,
                    rules=decision.rule_ids, categories=shape.categories, fields=shape.names,
                ),
                ("record", "subject", "at"),
            ),
        )  # fmt: skip

    def _digests(
        self, indexer: BlindIndexer, collection: str, coll: Collection, fields: Mapping[str, Any]
    ) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
        """A record's blind-index digests: (field, digest) in the collection's namespace,
        and (category, digest) in the identity namespace for identifying fields."""
        own: list[tuple[str, bytes]] = []
        idents: list[tuple[str, bytes]] = []
        for name, spec, identity in self._shape(collection, coll, tuple(fields)).indexed:
            norm = values.normalize(name, spec, fields[name])
            own.append((name, indexer.digest(collection, name, norm)))
            if identity is not None:
                idents.append((identity, indexer.digest(IDENTITY, identity, norm)))
        return own, idents

    @staticmethod
    def _replica_targets(coll: Collection, home: str) -> list[str]:
        return [t.to for t in coll.replicate if t.to != home]

    def _join_tokens(
        self, collection: str, coll: Collection, fields: Mapping[str, Any]
    ) -> dict[str, str]:
        return {
            name: self.join_token(collection, name, value)
            for name, value in fields.items()
            if coll.fields[name].join_token
        }

    def join_token(self, collection: str, field_name: str, value: Any) -> str:
        """The deterministic token of a value: the same wherever the record lives, so the
        application can join and deduplicate; it reveals nothing without the join key."""
        spec = self.collection(collection).fields.get(field_name)
        if spec is None:
            raise BadInput(f"collection {collection!r} has no such field")
        norm = values.normalize(field_name, spec, values.coerce(field_name, spec, value))
        msg = b"\x00".join((collection.encode(), field_name.encode(), norm.encode("utf-8")))
        digest = hmac.digest(self._join_key, msg, hashlib.sha256)
        return "dj1_" + base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def _index_entries(
        self,
        site_id: str,
        indexer: BlindIndexer,
        collection: str,
        coll: Collection,
        record_id: str,
        fields: Mapping[str, Any],
    ) -> list[IndexEntry]:
        out = []
        for fname, value in fields.items():
            spec = coll.fields[fname]
            if not spec.searchable:
                continue
            norm = values.normalize(fname, spec, value)
            out.append(
                IndexEntry(collection, fname, indexer.digest(collection, fname, norm), record_id)
            )
            if spec.identifies:
                out.append(
                    IndexEntry(
                        IDENTITY,
                        spec.category,
                        indexer.digest(IDENTITY, spec.category, norm),
                        record_id,
                    )
                )
        return out

    # --- reads ------------------------------------------------------------------------------

    def _event(
        self, action: Action, site: Site, rec: StoredRecord, purpose: str, access: Access,
        **extra: Any,
    ) -> AuditEvent:  # fmt: skip
        """An audit event about one record, by ``access`` from the site it acts from."""
        return AuditEvent(
            action=action, site=site.id, purpose=purpose, collection=rec.collection,
            record=rec.record_id, subject=rec.subject_id,
            requester=access.site or self.config.local_site, client=access.client, **extra,
        )  # fmt: skip

    def _locate(self, token: str) -> tuple[Site, str]:
        site_id, record_id = self.tokens.read(token)
        site = self._sites.get(site_id)
        if site is None:
            raise NotFound(
                "the token belongs to a site this configuration does not have",
                hint="use the configuration the token was issued under",
            )
        return site, record_id

    def _requester(self, as_site: str | None) -> Site:
        sid = as_site or self.config.local_site
        site = self._sites.get(sid)
        if site is None:
            raise BadInput("no site of that name", hint=f"the sites are: {', '.join(self._sites)}")
        return site

    def _acting(self, access: Access | None, as_site: str | None) -> tuple[Access, Site]:
        """The caller (the local operator when none is given) acting from ``as_site``, else
        from its own site, else from the local site."""
        access = access or self.operator
        site = self._requester(as_site or access.site)
        if access.site != site.id:
            access = access.acting_from(site.id)
        return access, site

    def _load(
        self, site: Site, record_id: str, purpose: str, operation: str, access: Access
    ) -> StoredRecord:
        """The stored (still sealed) record, or ``NotFound`` (audited where the request
        arrived, as a refusal outside the caller's collections is: the two look alike)."""
        try:
            rec = self.store(site.id).get(record_id)
            self.keystore(site.id)  # opened (once) here, so a missing key store is refused here
        except SiteUnavailable as exc:
            self._unavailable(exc, purpose, operation, access)
            raise exc from None
        if rec is None or rec.is_replica:
            self._audit_refusal(
                AuditEvent(
                    action="refuse", site="", purpose=purpose, client=access.client,
                    requester=access.site or self.config.local_site,
                    detail={"operation": operation, "reason": "not_found"},
                )
            )  # fmt: skip
            raise _no_such_record()
        return rec

    def _open(self, site: Site, rec: StoredRecord, *, skip: str | None = None) -> dict[str, Any]:
        """Decrypt every field of a record (but ``skip``)."""
        cipher = self._cipher(site.id, rec.subject_id)
        prefix = record_context(site.id, rec.collection, rec.record_id)
        return {
            name: _decode(cipher.open(blob, prefix + name.encode()))
            for name, blob in rec.fields.items()
            if name != skip
        }

    def _residency(self, site: Site, rec: StoredRecord) -> Residency:
        cipher = self._cipher(site.id, rec.subject_id)
        context = record_context(site.id, rec.collection, rec.record_id) + RESIDENCY_AD
        plain = cipher.open(rec.fields[RESIDENCY_FIELD], context)
        # Many subjects share a residency: parse each distinct one once.
        residency = self._residencies.get(plain)
        if residency is None:
            residency = _residency_from_json(values.decode(plain))
            if len(self._residencies) >= SMALL_CACHE:
                self._residencies.clear()
            self._residencies[plain] = residency
        return residency

    def _categories(self, rec: StoredRecord) -> list[str]:
        coll = self.collection(rec.collection)
        return [coll.fields[f].category for f in rec.fields if f in coll.fields]

    def get(
        self,
        token: str,
        *,
        purpose: str,
        as_site: str | None = None,
        access: Access | None = None,
    ) -> ReadResult:
        """Read a record for a requester at ``as_site`` (default: the caller's site, else
        ``local_site``).

        At the home site, or in its country, this is a local read. From another country
        it is a transfer: served from a permitted copy at the requester's site when there
        is one, else decided by the transfer rules of the home site's country, which may
        allow the full value, permit only masked forms, or refuse."""
        check_purpose(purpose)
        access, requester = self._acting(access, as_site)
        self.authorize(access, "records:read", site=requester.id, purpose=purpose)
        site, record_id = self._locate(token)
        if requester.id != site.id and requester.id in self._copy_sites:
            local = self._replica_read(token, site, record_id, requester, purpose, access)
            if local is not None:
                return local
        rec = self._load(site, record_id, purpose, "get", access)
        self.authorize(access, "records:read", collection=rec.collection, hide=True)
        try:
            return self._read(token, site, rec, requester, purpose, access)
        except SiteUnavailable as exc:  # e.g. its key store went away since it was opened
            self._unavailable(exc, purpose, "get", access)
            raise exc from None

    def _field_categories(self, rec: StoredRecord) -> dict[str, str]:
        return self._record_shape(rec).by_field

    def _record_shape(self, rec: StoredRecord) -> _Shape:
        return self._shape(rec.collection, self.collection(rec.collection), tuple(rec.fields))

    def transfer_facts(self, origin: Site, to_country: str) -> dict[str, bool | int | str]:
        """Year-to-date export counts from ``origin`` to ``to_country``, when a pack of the
        origin's country looks at them (volume thresholds, e.g. China's)."""
        reads = self._facts_read.get(origin.country)
        if reads is None:
            wanted = self.engine.facts_read_in(origin.country)
            reads = bool(wanted & {"ytd_export_subjects", "ytd_export_sensitive_subjects"})
            self._facts_read[origin.country] = reads
        if not reads:
            return {}
        subjects, sensitive = self.store(origin.id).transfer_counts(self._today().year, to_country)
        return {"ytd_export_subjects": subjects + 1, "ytd_export_sensitive_subjects": sensitive}

    def _read(
        self, token: str, site: Site, rec: StoredRecord, requester: Site, purpose: str,
        access: Access,
    ) -> ReadResult:  # fmt: skip
        """Decide, audit and open a read of ``rec`` (the caller's scopes already checked)."""
        shown = self._disclose(token, site, rec, requester, purpose, access)
        store = self.store(site.id)
        if shown.error is not None:
            self._ledgers[site.id].append_payloads_now(store, [shown.payload])
            raise shown.error
        self._ledgers[site.id].append_payloads_now(
            store, [shown.payload], transfer=shown.count, read=True
        )
        assert shown.result is not None
        return shown.result

    def _disclose(
        self, token: str, site: Site, rec: StoredRecord, requester: Site, purpose: str,
        access: Access, *, operation: str = "get",
    ) -> _Disclosure:  # fmt: skip
        """What a read of ``rec`` by ``requester`` may show, and the audit payload that
        records it, not yet appended (an update appends it in its own transaction).

        At home: a read. From another country the transfer rules of the home site's
        country decide: a transfer (with its year-to-date count), a masked disclosure
        (where a pack permits only masked forms: no transfer, and recorded as what it is,
        with the mask applied to each field), or a refusal."""
        stamp = self._stamp()
        residency = self._residency(site, rec)
        shape = self._record_shape(rec)
        abroad = requester.country != site.country
        facts = self.transfer_facts(site, requester.country) if abroad else None
        decision = self._decide_sorted(
            residency, shape.categories, "retrieve", site.country,
            requester.country if abroad else None, tuple(sorted((facts or {}).items())), stamp,
        )  # fmt: skip
        masked = False
        if decision.outcome is not Outcome.allow:
            if not (abroad and decision.disclosure == "masked"):
                refusal = self._read_event(
                    site, rec, requester, purpose, decision, shape, access, action="refuse",
                    decision=decision.outcome.value,
                    detail={"operation": operation, "to_country": requester.country},
                )  # fmt: skip
                return _Disclosure(
                    refusal.payload(),
                    error=PolicyRefused(
                        f"policy does not let site {requester.id!r} ({requester.country}) read "
                        f"this record: {decision.outcome.value}",
                        decision=decision.to_dict(),
                        hint="see the decision's obligations for what would allow it",
                    ),
                )
            masked = True
        opened = self._open(site, rec, skip=RESIDENCY_FIELD)
        if masked:
            opened = masked_fields(opened, shape.by_field, dict(decision.masks))
            if not opened:  # nothing of this record has a permitted masked form
                refusal = self._read_event(
                    site, rec, requester, purpose, decision, shape, access, action="refuse",
                    decision=decision.outcome.value,
                    detail={"operation": operation, "to_country": requester.country, "masked": True},
                )  # fmt: skip
                return _Disclosure(
                    refusal.payload(),
                    error=PolicyRefused(
                        f"policy does not let site {requester.id!r} ({requester.country}) read "
                        "this record, and none of its fields has a permitted masked form",
                        decision=decision.to_dict(),
                    ),
                )
        shown = tuple(sorted(opened))
        count: TransferCount | None = None
        if not abroad:
            # The read's entry: the same payload as ``_read_event(..., decision="allow",
            # fields=shown).payload()``, from a template per request shape.
            template = self._template(
                ("read", id(decision), site.id, purpose, rec.collection, requester.id, shown,
                 shape.categories, access.client),
                decision,
                lambda: PayloadTemplate(
                    self._read_event(
                        site, rec, requester, purpose, decision, shape, access, decision="allow",
                        fields=shown,
                    ),
                    ("record", "subject", "at"),
                ),
            )  # fmt: skip
            payload = template.render(rec.record_id, rec.subject_id, _utcnow().isoformat())
        elif masked:
            payload = self._masked_payload(
                site, requester, purpose, rec, decision, shape, shown, access
            )
        else:
            payload = self._transfer_payload(
                site, requester, purpose, rec, decision, shape, shown, access
            )
            count = TransferCount(
                self._today().year, requester.country, rec.subject_id, shape.sensitive
            )
        result = ReadResult(
            token, site.id, site.country, rec.collection, opened, rec.version, decision,
            abroad and not masked, masked=masked, read_at=site.id,
        )  # fmt: skip
        return _Disclosure(payload, result, count)

    def _read_event(
        self,
        site: Site,
        rec: StoredRecord,
        requester: Site,
        purpose: str,
        ruling: Decision,
        shape: _Shape,
        access: Access,
        **extra: Any,
    ) -> AuditEvent:
        """The audit event of a read of ``rec`` at ``site`` by ``requester``, under
        ``ruling``; ``extra`` sets or overrides fields."""
        return AuditEvent(
            **{
                "action": "read", "site": site.id, "purpose": purpose,
                "collection": rec.collection, "record": rec.record_id,
                "subject": rec.subject_id, "requester": requester.id, "client": access.client,
                "rules": ruling.rule_ids, "categories": shape.categories, **extra,
            }
        )  # fmt: skip

    def _transfer_payload(
        self,
        origin: Site,
        requester: Site,
        purpose: str,
        rec: StoredRecord,
        decision: Decision,
        shape: _Shape,
        shown: tuple[str, ...],
        access: Access,
    ) -> str:
        """A transfer's entry for the origin's hash-chained audit (committed with its
        year-to-date count by the caller)."""
        to_country = requester.country
        template = self._template(
            ("transfer", id(decision), origin.id, purpose, rec.collection, requester.id, shown,
             shape.categories, access.client),
            decision,
            lambda: PayloadTemplate(
                self._read_event(
                    origin, rec, requester, purpose, decision, shape, access,
                    **transfer_detail(
                        decision, origin.country, to_country, dict.fromkeys(shown), "access",
                        rec.version,
                    ),
                ),
                ("record", "subject", "at", "detail.version"),
            ),
        )  # fmt: skip
        return template.render(rec.record_id, rec.subject_id, _utcnow().isoformat(), rec.version)

    def _masked_payload(
        self,
        origin: Site,
        requester: Site,
        purpose: str,
        rec: StoredRecord,
        decision: Decision,
        shape: _Shape,
        shown: tuple[str, ...],
        access: Access,
    ) -> str:
        """A masked disclosure's entry: what it is (not a transfer, since the law let only
        the masked forms cross), each field shown with the mask applied to it, and the
        fields withheld."""
        template = self._template(
            ("masked", id(decision), origin.id, purpose, rec.collection, requester.id, shown,
             shape.categories, access.client),
            decision,
            lambda: PayloadTemplate(
                self._read_event(
                    origin, rec, requester, purpose, decision, shape, access,
                    action="disclose_masked", decision=decision.outcome.value, fields=shown,
                    detail={
                        "kind": "access", "disclosure": "masked",
                        "from_country": origin.country, "to_country": requester.country,
                        "masks": mask_methods(shown, shape.by_field, dict(decision.masks)),
                        "withheld": sorted(set(shape.names) - set(shown)),
                        "version": rec.version,
                    },
                ),
                ("record", "subject", "at", "detail.version"),
            ),
        )  # fmt: skip
        return template.render(rec.record_id, rec.subject_id, _utcnow().isoformat(), rec.version)

    def _replica_read(
        self, token: str, home: Site, record_id: str, requester: Site, purpose: str,
        access: Access,
    ) -> ReadResult | None:  # fmt: skip
        """Serve a read from the requester's own site when it holds a copy that the law
        still permits there; None to fall back to the primary."""
        try:
            copy = self.store(requester.id).get(record_id)
        except SiteUnavailable:
            self._drop(requester.id)
            return None
        if copy is None or copy.primary_site != home.id:
            return None
        self.authorize(access, "records:read", collection=copy.collection, hide=True)
        residency = self._residency(requester, copy)
        categories = self._field_categories(copy)
        kept = self._decide(
            residency, categories.values(), "store", requester.country,
            facts={"replica": True, "primary_country": home.country},
        )  # fmt: skip
        if kept.outcome is not Outcome.allow:
            return None  # no longer permitted: the worker removes it; ask the primary
        decision = self._decide(
            residency, categories.values(), "retrieve", requester.country,
            facts={"replica": True, "primary_country": home.country},
        )  # fmt: skip
        if decision.outcome is not Outcome.allow:
            return None
        opened = self._open(requester, copy, skip=RESIDENCY_FIELD)
        event = AuditEvent(
            action="read", site=requester.id, purpose=purpose, collection=copy.collection,
            record=copy.record_id, subject=copy.subject_id, requester=requester.id,
            client=access.client, decision="allow", rules=decision.rule_ids,
            fields=tuple(sorted(opened)), categories=tuple(sorted(set(categories.values()))),
            detail={"source": "replica", "primary_site": home.id},
        )  # fmt: skip
        self._ledgers[requester.id].append_payloads_now(
            self.store(requester.id), [event.payload()], read=True
        )
        return ReadResult(
            token, home.id, home.country, copy.collection, opened, copy.version, decision, False,
            source="replica", read_at=requester.id,
        )  # fmt: skip

    def find(
        self,
        collection: str,
        *,
        where: Mapping[str, Any],
        purpose: str,
        as_site: str | None = None,
        access: Access | None = None,
    ) -> FindResult:
        """Records whose searchable fields equal the given values, at every site."""
        check_purpose(purpose)
        coll = self.collection(collection)
        access, requester = self._acting(access, as_site)
        self.authorize(
            access, "records:read", site=requester.id, collection=collection, purpose=purpose
        )
        if not where:
            raise BadInput("give at least one field to search by", hint="e.g. --field email=...")
        checked = values.check_fields(collection, coll, where, partial=True)
        for fname in checked:
            if not coll.fields[fname].searchable:
                raise BadInput(
                    f"field {fname!r} is not searchable",
                    hint=f"searchable fields: {', '.join(n for n, s in coll.fields.items() if s.searchable)}",
                )
        result = FindResult()
        for site in self.config.sites:
            try:
                store = self.store(site.id)
                indexer = self._indexers[site.id]
                ids: set[str] | None = None
                for fname, value in checked.items():
                    digest = indexer.digest(
                        collection, fname, values.normalize(fname, coll.fields[fname], value)
                    )
                    found = set(store.lookup(collection, fname, digest))
                    ids = found if ids is None else ids & found
                for rid in sorted(ids or ()):
                    rec = store.get(rid)
                    if rec is None or rec.is_replica or rec.collection != collection:
                        continue
                    token = self.tokens.issue(site.id, rid)
                    try:
                        result.records.append(
                            self._read(token, site, rec, requester, purpose, access)
                        )
                    except PolicyRefused as exc:
                        result.refused.append(
                            {"token": token, "site": site.id, "reason": exc.message}
                        )
            except SiteUnavailable:
                self._drop(site.id)
                result.unavailable.append(site.id)
        return result

    def update(
        self,
        token: str,
        *,
        fields: Mapping[str, Any],
        purpose: str,
        as_site: str | None = None,
        access: Access | None = None,
    ) -> ReadResult | WriteResult:
        """Change fields of a record at its home site.

        The answer never shows more than a read by the same caller would: the record as
        ``get`` would answer it for the caller's site (full, masked or, when the law
        refuses that read, nothing), audited as that read in the update's own transaction,
        or only the new version when the caller may not read (no ``records:read``)."""
        check_purpose(purpose)
        access, requester = self._acting(access, as_site)
        self.authorize(access, "records:write", site=requester.id, purpose=purpose)
        site, record_id = self._locate(token)
        rec = self._load(site, record_id, purpose, "update", access)
        self.authorize(access, "records:write", collection=rec.collection, hide=True)
        coll = self.collection(rec.collection)
        checked = values.check_fields(rec.collection, coll, fields, partial=True)
        residency = self._residency(site, rec)
        names = {f for f in rec.fields if f in coll.fields} | set(checked)
        decision = self._decide(
            residency, [coll.fields[f].category for f in names], "update", site.country
        )
        if decision.outcome is not Outcome.allow:
            refusal = self._event(
                "refuse", site, rec, purpose, access, decision=decision.outcome.value,
                rules=decision.rule_ids, detail={"operation": "update"},
            )  # fmt: skip
            self._audit(site.id, [refusal])
            raise PolicyRefused(
                f"policy refuses this update: {decision.outcome.value}", decision=decision.to_dict()
            )
        cipher = self._cipher(site.id, rec.subject_id)
        sealed = dict(rec.fields)
        for name, value in checked.items():
            sealed[name] = cipher.seal(
                values.encode(value), field_context(site.id, rec.collection, rec.record_id, name)
            )
        now = self.clock().isoformat()
        new = replace(rec, version=rec.version + 1, updated_at=now, fields=sealed)
        # The read back, decided before anything is written and committed with the write.
        shown: _Disclosure | None = None
        if (
            access.missing(
                "records:read", site=requester.id, collection=rec.collection, purpose=purpose
            )
            is None
        ):
            shown = self._disclose(token, site, new, requester, purpose, access, operation="update")
            if shown.error is not None:
                shown = None  # the law refuses this caller the record: only the version
        reindex = [f for f in checked if coll.fields[f].searchable]
        store = self.store(site.id)
        with store.transaction() as tx:
            tx.replace(new, rec.version)
            tx.enqueue(
                [
                    (rec.record_id, rec.subject_id, t, "upsert")
                    for t in self._replica_targets(coll, site.id)
                ]
            )
            if reindex:
                tx.unindex(rec.record_id, reindex)
                tx.unindex(
                    rec.record_id,
                    [coll.fields[f].category for f in reindex if coll.fields[f].identifies],
                )
                tx.index(
                    self._index_entries(
                        site.id,
                        self._indexers[site.id],
                        rec.collection,
                        coll,
                        rec.record_id,
                        {f: checked[f] for f in reindex},
                    )
                )
            event = self._event(
                "update", site, rec, purpose, access, decision="allow", rules=decision.rule_ids,
                fields=tuple(sorted(checked)), at=now,
            )  # fmt: skip
            payloads = [event.payload()]
            if shown is not None:
                payloads.append(shown.payload)
                if shown.count is not None:
                    c = shown.count
                    tx.count_transfer(c.year, c.to_country, c.subject_id, c.sensitive)
            self._ledgers[site.id].append_payloads(tx, payloads)
        if shown is None or shown.result is None:
            return WriteResult(token, new.version)
        return shown.result

    def delete(
        self,
        token: str,
        *,
        purpose: str,
        as_site: str | None = None,
        access: Access | None = None,
    ) -> dict[str, Any]:
        """Delete one record (the subject and its other records stay)."""
        check_purpose(purpose)
        access, requester = self._acting(access, as_site)
        self.authorize(access, "records:delete", site=requester.id, purpose=purpose)
        site, record_id = self._locate(token)
        rec = self._load(site, record_id, purpose, "delete", access)
        self.authorize(access, "records:delete", collection=rec.collection, hide=True)
        store = self.store(site.id)
        with store.transaction() as tx:
            tx.delete([rec.record_id])
            coll = self.collection(rec.collection)
            tx.enqueue(
                [
                    (rec.record_id, rec.subject_id, t, "delete")
                    for t in self._replica_targets(coll, site.id)
                ]
            )
            self._ledgers[site.id].append(tx, [self._event("delete", site, rec, purpose, access)])
        return {"deleted": True, "site": site.id, "records": 1}

    def erase(
        self,
        token: str,
        *,
        purpose: str = "erasure",
        as_site: str | None = None,
        access: Access | None = None,
    ) -> dict[str, Any]:
        """Erase the subject the token belongs to: destroy its data key first (so every copy
        and backup of its data becomes unreadable), then delete all its records here; then,
        at once, its copies and its key at every site that may hold copies and answers.

        The answer lists those sites (``copies.deleted``) and the ones that did not answer
        (``copies.pending``): their outbox items stay, and ``replicate`` finishes there."""
        check_purpose(purpose)
        access, requester = self._acting(access, as_site)
        self.authorize(access, "records:erase", site=requester.id, purpose=purpose)
        site, record_id = self._locate(token)
        rec = self._load(site, record_id, purpose, "erase", access)
        self.authorize(access, "records:erase", collection=rec.collection, hide=True)
        subject = rec.subject_id
        self._require(site.id, purpose, None, "erase", access)
        self.keystore(site.id).delete(subject)
        self._forget_key(site.id, subject)
        store = self.store(site.id)
        # Every site that may hold copies forgets the subject too: its copies and its key.
        copy_sites = sorted(self._copy_sites - {site.id})
        with store.transaction() as tx:
            # After every write already holding the subject; later ones see it erased.
            removed = tx.erase_subject(subject, self.clock().isoformat())
            tx.enqueue([(record_id, subject, t, "erase") for t in copy_sites])
            self._ledgers[site.id].append(
                tx,
                [
                    AuditEvent(
                        action="erase", site=site.id, purpose=purpose, subject=subject,
                        requester=requester.id, client=access.client,
                        detail={"records": removed, "key_destroyed": True},
                    )
                ],
            )  # fmt: skip
        from domicile.vault.replication import erase_copies  # the worker's module uses ours

        deleted, pending = erase_copies(self, site, subject, copy_sites, access, purpose)
        return {
            "erased": True,
            "site": site.id,
            "country": site.country,
            "records": removed,
            "key_destroyed": True,
            "copies": {"deleted": deleted, "pending": pending},
        }

    # --- filings ----------------------------------------------------------------------------

    def add_filing(
        self,
        name: str,
        date: str | dt.date,
        *,
        note: str | None = None,
        access: Access | None = None,
    ) -> FilingEntry:
        """Put a filing on record (a notice, clauses, a ban); decisions use it at once."""
        access = access or self.operator
        self.authorize(access, "filings:write")
        entry = self.filings.add(name, date, note=note)
        self._audit_filing("add", entry, access)
        return entry

    def withdraw_filing(self, name: str, *, access: Access | None = None) -> FilingEntry:
        access = access or self.operator
        self.authorize(access, "filings:write")
        entry = self.filings.withdraw(name)
        self._audit_filing("withdraw", entry, access)
        return entry

    def _audit_filing(self, change: str, entry: FilingEntry, access: Access) -> None:
        event = AuditEvent(
            action="filing", site=self.config.local_site,
            requester=access.site or self.config.local_site, client=access.client,
            detail={"change": change, "name": entry.name, "date": entry.date.isoformat()},
        )  # fmt: skip
        try:
            self._audit(self.config.local_site, [event])
        except SiteUnavailable:
            self._drop(self.config.local_site)

    # --- operations -------------------------------------------------------------------------

    def sites(self) -> list[SiteStatus]:
        out = []
        for s in self.config.sites:
            loc = s.location.model_dump()
            try:
                store = self.store(s.id)
                healthy = store.ping() and self.keystore(s.id).ping()
                out.append(
                    SiteStatus(
                        s.id,
                        s.country,
                        loc,
                        store.display_url,
                        store.count() if healthy else None,
                        healthy,
                    )
                )
            except DomicileError as exc:
                self._drop(s.id)
                out.append(SiteStatus(s.id, s.country, loc, s.backend, None, False, exc.message))
        return out

    def verify_audit(
        self, site_id: str | None = None, *, heads: HeadsFile | str | Path | None = None
    ) -> list[VerifyReport]:
        """Verify each site's audit log (or one site's) against its own signed heads, the
        heads its witnesses hold and, when given, a heads file kept offline. Reads only."""
        from domicile.vault import auditing

        if heads is not None and not isinstance(heads, HeadsFile):
            heads = HeadsFile.load(heads)
        return auditing.verify(self, site_id, heads=heads)

    def witness(self, sites: Sequence[str] | None = None) -> WitnessRound:
        """Sign each site's log where it changed and have the other sites witness it."""
        from domicile.vault import auditing

        return auditing.witness_round(self, sites=sites)

    def audit_heads(self) -> HeadsFile:
        """Every site's public key and newest signed head (reads only)."""
        from domicile.vault import auditing

        return auditing.export_heads(self)

    def prove_entry(self, site_id: str, seq: int) -> dict[str, Any]:
        """An audit entry with its inclusion proof (reads only)."""
        from domicile.vault import auditing

        return auditing.prove(self, site_id, seq)

    def rotate_key(
        self, site_id: str, *, batch: int = 500, grace: float = ROTATION_GRACE
    ) -> dict[str, Any]:
        """Rotate a site's key-encryption key without downtime: new writes use the new key at
        once (in every process: each looks at the keyring before it wraps a key); existing
        data keys are re-wrapped in batches; the old key is retired last.

        A writer may have wrapped a new subject's key with the old key just before the
        rotation and store it just after the first pass: after ``grace`` seconds a second
        pass re-wraps such stragglers, and an old key is retired only if nothing at all is
        wrapped with it any more."""
        if site_id not in self._sites:
            raise BadInput("no site of that name", hint=f"the sites are: {', '.join(self._sites)}")
        if grace < 0:
            raise BadInput("the grace period cannot be negative", hint="give seconds, e.g. 2")
        ks = self.keystore(site_id)
        old = self.keys.current_version(site_id)
        new = self.keys.rotate(site_id)

        def rewrap_stale() -> int:
            done = 0
            while True:
                stale = ks.stale(new, batch)
                if not stale:
                    return done
                for sid, wk in stale:
                    ctx = key_context(site_id, sid)
                    dek = self.keys.unwrap(site_id, wk.kek_version, wk.wrapped, ctx)
                    version, wrapped = self.keys.wrap(site_id, dek, ctx)
                    if ks.rewrap(sid, wk, WrappedKey(version, wrapped)):
                        done += 1

        rewrapped = rewrap_stale()
        if grace:
            time.sleep(grace)
        rewrapped += rewrap_stale()
        retired = []
        for v in range(1, new):
            if v in getattr(self.keys, "versions", lambda _s: [])(
                site_id
            ) and not ks.versions().get(v):
                self.keys.retire(site_id, v)
                retired.append(v)
        self._audit(
            site_id,
            [
                AuditEvent(
                    action="rotate",
                    site=site_id,
                    client=self.operator.client,
                    detail={"from": old, "to": new, "rewrapped": rewrapped},
                )
            ],
        )
        return {
            "site": site_id,
            "from_version": old,
            "to_version": new,
            "rewrapped": rewrapped,
            "retired": retired,
        }
