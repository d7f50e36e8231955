"""The vault's common ground: configuration, connections to each site's stores (opened only if
they are the ones setup created), the caller check, decisions and their caches, audit helpers,
subject keys, and locating, loading and opening a stored record. The operations build on it:
``reading.py`` (get, find), ``writing.py`` (placement, put, update, delete), ``erasure.py``
(erasure, key rotation) and ``operations.py`` (filings, sites, the audit logs), gathered in
``Domicile`` (``service.py``)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Self

from domicile.access import Access
from domicile.audit import AuditEvent, AuditLedger
from domicile.audit.group import Group, GroupCommit
from domicile.audit.ledger import Action, PayloadTemplate
from domicile.categories import is_under
from domicile.config import Collection, Config, Site, load_config
from domicile.crypto.blind import BlindIndexer, search_key
from domicile.crypto.envelope import (
    FieldCipher,
    key_context,
    record_context,
)
from domicile.crypto.errors import KeyDestroyed, KeyringError
from domicile.crypto.keys import KeyProvider, LocalKeyring
from domicile.crypto.providers import key_provider
from domicile.deployment import DeploymentRegistry
from domicile.errors import BadInput, DomicileError
from domicile.filings import FilingsRegistry
from domicile.packs import load_packs
from domicile.packs.vocabulary import CONSENT_BASES
from domicile.policy import Decision, PolicyEngine
from domicile.residency import Residency, TriSet
from domicile.stores import (
    KeyStore,
    SiteStore,
    StoredRecord,
    open_key_store,
    open_site_store,
)
from domicile.stores.base import (
    AuditRow,
    SiteUnavailable,
    StoreTransaction,
    SubjectBlock,
    TransferCount,
)
from domicile.vault import values
from domicile.vault.errors import NotFound, SubjectBlocked
from domicile.vault.sealing import RESIDENCY_FIELD, canonical, open_body
from domicile.vault.tokens import TokenCodec

PURPOSE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")


RESIDENCY_AD = RESIDENCY_FIELD.encode()  # layout 2: the residency sealed as a field


IDENTITY = "@identity"  # blind-index namespace of identifying values, across collections


DEK_CACHE = 10_000


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


_PURPOSES: set[str] = set()  # purposes checked already (a few per deployment)


def check_purpose(purpose: str) -> str:
    if type(purpose) is str and purpose in _PURPOSES:
        return purpose
    if not isinstance(purpose, str) or not PURPOSE.match(purpose):
        raise BadInput(
            "every call names its purpose as a short lower-case name",
            hint="e.g. --purpose account_signup (letters, digits, _ . -; at most 64)",
        )
    if len(_PURPOSES) < SMALL_CACHE:
        _PURPOSES.add(purpose)
    return purpose


def _residency_to_json(r: Residency) -> dict[str, Any]:
    return {
        "citizenship": r.citizenship.to_dict(),
        "residence": r.residence.to_dict(),
        "location": r.location.to_dict(),
    }


def residency_text(r: Residency) -> str:
    """The JSON text a residency is sealed as (one text per residency)."""
    return canonical(_residency_to_json(r))


def _residency_from_json(data: Mapping[str, Any]) -> Residency:
    def tri(d: Mapping[str, list[str]]) -> TriSet:
        return TriSet(frozenset(d["certain"]), frozenset(d["possible"]))

    return Residency(tri(data["citizenship"]), tri(data["residence"]), tri(data["location"]), ())


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _no_such_record() -> NotFound:
    """The answer for a record that does not exist, and for one outside the caller's
    collections: the same words, so the answer says nothing about which it was."""
    return NotFound("no such record (it may have been deleted or erased)", hint="check the token")


@dataclass(frozen=True)
class RightsStep:
    """A step of a subject's request under way in this context (``rights_step``): the
    vault's operations for that request's purpose pass the subject's blocks."""

    request: str
    kind: str
    purpose: str
    # The request's subject ids (one per site holding it): only theirs pass. None: any.
    subjects: frozenset[str] | None = None


RIGHTS_STEP: ContextVar[RightsStep | None] = ContextVar("domicile_rights_step", default=None)


@contextlib.contextmanager
def rights_step(
    request: str, kind: str, purpose: str, subjects: Iterable[str] | None = None
) -> Iterator[None]:
    """Mark the operations in this block (this thread or task) as a step of a subject's
    request, for the subject ids it names; only ``domicile.rights`` does this."""
    named = frozenset(subjects) if subjects is not None else None
    token = RIGHTS_STEP.set(RightsStep(request, kind, purpose, named))
    try:
        yield
    finally:
        RIGHTS_STEP.reset(token)


@dataclass
class PendingReply:
    """A peer's writing call being answered at node ``site`` (``federation.node.Replies``):
    the write keeps the call's answer in its own transaction (``keep(tx, result)``, from
    the operation's result), so a retry after a crash finds either the answer or nothing
    written. ``kept`` says that a transaction did (it is final once the write returned)."""

    site: str
    keep: Callable[[StoreTransaction, Any], None]
    kept: bool = False

    def keep_in(self, tx: StoreTransaction, result: Any) -> None:
        self.keep(tx, result)
        self.kept = True


PENDING_REPLY: ContextVar[PendingReply | None] = ContextVar("domicile_reply", default=None)


def pending_reply(site_id: str) -> PendingReply | None:
    """The reply a write at ``site_id`` in this context keeps with itself, if any."""
    pending = PENDING_REPLY.get()
    return pending if pending is not None and pending.site == site_id else None


def keep_reply(tx: StoreTransaction, site_id: str, result: Any) -> None:
    """Keep the answer of the peer's call under way (if any) in ``tx``, the transaction of
    its write at ``site_id``."""
    pending = pending_reply(site_id)
    if pending is not None:
        pending.keep_in(tx, result)


_OPERATION_WORDS = {
    "records:read": "read", "records:export": "export", "records:write": "change",
    "records:delete": "deletion", "records:erase": "erasure", "records:store": "new record",
}  # fmt: skip


def _blocked(
    block: SubjectBlock, operation: str, purpose: str | None, basis: str | None, site: str
) -> SubjectBlocked:
    """The error of an operation a block stops: the block and its request, the operation
    and purpose (checked names), never the subject."""
    what = _OPERATION_WORDS.get(operation, operation)
    info = {"kind": block.kind, "request": block.request_id, "since": block.since, "site": site}
    if block.kind == "withdrawal":
        return SubjectBlocked(
            f"the subject withdrew consent (request {block.request_id}): no {what} for"
            f" purpose {purpose!r}, which rests on consent",
            block=info,
            hint="use a purpose with another legal basis (`purposes:` in the configuration)",
        )
    allowed = ", ".join(block.allows) or "none"
    if operation in ("records:read", "records:export"):
        hint = (
            f"while it lasts, the data is read only for the subject's own requests and for"
            f" purposes resting on an allowed basis ({allowed}); purpose {purpose!r} rests"
            f" on {basis or 'no basis on record'}"
        )
    elif operation == "records:write":
        hint = "while it lasts, the data changes only by a rectification request"
    else:
        hint = "restricted data is kept: it goes only by an erasure request"
    return SubjectBlocked(
        f"processing of the subject's data is restricted (request {block.request_id},"
        f" since {block.since[:10]}): no {what} for purpose {purpose!r}",
        block=info,
        hint=hint + "; the restriction ends when it is lifted (`domicile rights lift`)",
    )


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


class VaultCore:
    """State and plumbing shared by every operation of the vault (see ``Domicile``)."""

    def __init__(
        self,
        config: Config,
        *,
        keys: KeyProvider | None = None,
        engine: PolicyEngine | None = None,
        clock: Callable[[], dt.datetime] = _utcnow,
        operator: str | None = None,
        read_only: bool = False,
        node: str | None = None,
        replicas: bool | None = None,
    ) -> None:
        # A node of a federation (``domicile.federation``) holds one site: only that site's
        # stores are opened and only its keys are in its keyring; the other sites are their
        # own nodes' (None: every site is here, the embedded default).
        if node is not None:
            if node not in {s.id for s in config.sites}:
                raise BadInput(
                    f"no site {node!r} to be the node of",
                    hint=f"the sites are: {', '.join(s.id for s in config.sites)}",
                )
            if config.model.local_site != node:
                config = config.as_node(node)
        self.node = node
        self.config = config
        self.clock = clock
        # The caller of operations that name none: the local operator, with every right,
        # named in the audit as ``operator`` (the CLI passes "cli:USER").
        self.operator = Access.operator(operator)
        # Every store opened read-only: nothing migrated, nothing written (a write fails as
        # an unavailable site). For commands that must only read, such as `audit verify`.
        self.read_only = read_only
        # Read-only vaults read a site's streaming replica where one is configured (its
        # ``replica`` URL), sparing the primary; a replica may lag, so a caller that must
        # see a write just made passes ``replicas=False`` (or reads through a read-write
        # vault, which always uses the primary). Writes, and the audit entries of reads,
        # only ever go to the primary.
        self.replicas = read_only if replicas is None else (replicas and read_only)
        # Each site's keys from the provider its configuration names (the keyring file by
        # default; crypto/providers.py).
        self.keys: KeyProvider = keys or key_provider(config, self._keyring(config), node=node)
        self.engine = engine or PolicyEngine(load_packs(config.pack_paths))
        # Sites, their stores and their keys are made only by setup (domicile.setup); the
        # registry says which stores are the sites' own (their creation ids).
        self.deployment = DeploymentRegistry(config.registry_path)
        self.tokens = TokenCodec(self.keys.token_key())
        self.filings = FilingsRegistry(config, self.engine)
        self._join_key = self.keys.join_key()
        # A federated deployment also indexes each searchable value by its search digest
        # (crypto/blind.py), so that a node can search another's site without the value.
        self._search_key = search_key(self._join_key)
        self.federated = config.model.federation is not None
        self._sites = {s.id: s for s in config.sites}
        self._stores: dict[str, SiteStore] = {}
        self._keystores: dict[str, KeyStore] = {}
        self._ledgers = {s.id: AuditLedger(s.id, self.keys) for s in config.sites}
        self._committers: dict[str, GroupCommit] = {}  # group commit of reads, per site
        self._writers: dict[str, Group[Any, None]] = {}  # group commit of writes, per site
        # Heads a witness refused in this process (the refusal is recorded once).
        self.witness_refusals: set[tuple[str, str, int, bytes]] = set()
        self._indexers = _Indexers(self.keys)
        self._deks: OrderedDict[tuple[str, str], FieldCipher] = OrderedDict()
        # Requests are validated once per shape: the engine's cache keys on the validated form.
        self._decisions: dict[tuple[Any, ...], Decision] = {}
        self._placements: dict[tuple[Any, ...], tuple[Site, Decision]] = {}
        self._shapes: dict[tuple[str, tuple[str, ...]], _Shape] = {}
        self._residencies: dict[str, Residency] = {}  # sealed residency, opened -> parsed
        self._templates: dict[tuple[Any, ...], tuple[Any, PayloadTemplate]] = {}
        self._facts_read: dict[str, bool] = {}
        self._acting_as: dict[tuple[Access, str], Access] = {}  # a caller acting from a site
        # Sites that some collection copies to: the only places a copy can be read from.
        self._copy_sites = frozenset(
            t.to for c in config.model.collections.values() for t in c.replicate
        )
        self._lock = threading.RLock()
        bases = self.engine.packs.bases()
        for name, purpose in config.model.purposes.items():
            if purpose.basis not in bases:
                raise BadInput(
                    f"purpose {name!r}: unknown legal basis {purpose.basis!r}",
                    hint="use a basis the packs know: " + ", ".join(sorted(bases)),
                )
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
    def open(cls, config: str | Path | Config | None = None, **kwargs: Any) -> Self:
        cfg = config if isinstance(config, Config) else load_config(config)
        return cls(cfg, **kwargs)

    def close(self, *, checkpoint: bool = True) -> None:
        """Disconnect from every store (``Domicile.close`` first runs a witness round)."""
        with self._lock:
            for store in self._stores.values():
                store.close()
            for ks in self._keystores.values():
                ks.close()
            self._stores.clear()
            self._keystores.clear()
            self._deks.clear()
            for ledger in self._ledgers.values():
                ledger.appended = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def store(self, site_id: str) -> SiteStore:
        """The site's store: opened only if it is the one setup created (the creation id
        the deployment recorded), else ``SiteUnavailable``. Never created here."""
        store = self._stores.get(site_id)  # opened already: no lock (the usual case)
        if store is not None:
            return store
        with self._lock:
            store = self._stores.get(site_id)
            if store is None:
                self._here(site_id)
                site = self._sites[site_id]
                created = self.deployment.site(site_id)
                url = site.replica if self.replicas and site.replica else site.backend
                store = open_site_store(
                    site_id,
                    self.config.backend_url(url),
                    creation_id=created.store,
                    read_only=self.read_only,
                )
                self._stores[site_id] = store
            return store

    def keystore(self, site_id: str) -> KeyStore:
        """The site's key store, on the same terms as ``store``: a missing key store is an
        unavailable site, never an empty new one (that would read as every subject erased)."""
        ks = self._keystores.get(site_id)  # opened already: no lock (the usual case)
        if ks is not None:
            return ks
        with self._lock:
            ks = self._keystores.get(site_id)
            if ks is None:
                self._here(site_id)
                created = self.deployment.site(site_id)
                ks = open_key_store(
                    site_id,
                    self.config.keys_url(self._sites[site_id]),
                    creation_id=created.keys,
                    read_only=self.read_only,
                )
                self._keystores[site_id] = ks
            return ks

    def is_here(self, site_id: str) -> bool:
        """Whether the site's data is in this process's reach (always, but on a node)."""
        return self.node is None or site_id == self.node

    def erase_copies_at(self, site_id: str, subject: str) -> None:
        """Erase a subject's copies at a site whose data is not here (a federation's node
        asks that site's node; in one process every site is here)."""
        self._here(site_id)

    def subject_at(
        self,
        site_id: str,
        *,
        purpose: str,
        access: Access,
        identity: Sequence[tuple[str, str]] | None = None,
        subjects: Sequence[str] = (),
    ) -> list[dict[str, Any]]:
        """A subject's holdings at a site whose data is not here (a federation's node asks
        that site's node: ``FederatedDomicile.subject_at``; in one process every site is
        here, and ``rights`` reads it directly)."""
        self._here(site_id)
        return []

    def erased_at(
        self,
        site_id: str,
        *,
        purpose: str,
        access: Access,
        subjects: Sequence[str],
        request: str,
    ) -> dict[str, Any]:
        """The part of ``request``'s destruction act of a site whose data is not here:
        the erasure entries of these subjects in its log, signed by that site (a
        federation's node asks that site's node)."""
        self._here(site_id)
        return {}

    def request_step_at(
        self,
        site_id: str,
        *,
        purpose: str,
        access: Access,
        subject: str | None,
        detail: Mapping[str, Any],
    ) -> int:
        """Record a step of a subject's request in the log of a site whose data is not
        here (a federation's node asks that site's node)."""
        self._here(site_id)
        return 0

    def block_at(
        self,
        site_id: str,
        *,
        purpose: str,
        access: Access,
        subject: str,
        step: str,
        request: str,
        kind: str,
        **block: Any,
    ) -> dict[str, Any]:
        """Place (``step`` block) or lift (lift) a request's block of a subject at a site
        whose data is not here (a federation's node asks that site's node)."""
        self._here(site_id)
        return {}

    def primary_meta(self, home: str, record_ids: Sequence[str]) -> dict[str, Any]:
        """The stored records among ``record_ids`` at ``home`` (what a parity check
        compares copies with: versions and field names; a node asks the home's node)."""
        return dict(self.store(home).get_many(list(record_ids)))

    def _here(self, site_id: str) -> None:
        if not self.is_here(site_id):
            raise SiteUnavailable(
                site_id,
                f"its data is held by its own node, not by node {self.node!r}",
                hint="ask its node; a node reaches another site only over the node channel",
            )

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

    def audit_read(
        self, site_id: str, payload: str, transfer: TransferCount | None = None
    ) -> AuditRow:
        """The entry of a read (or its refusal), committed before this returns: with the
        entries of reads arriving at the same site at the same moment, in one transaction
        (``domicile.audit.group``)."""
        return self.committer(site_id).append(payload, transfer)

    def committer(self, site_id: str) -> GroupCommit:
        """The group commit of the entries of reads at a site."""
        committer = self._committers.get(site_id)
        if committer is None:
            with self._lock:
                committer = self._committers.get(site_id)
                if committer is None:
                    ledger = self._ledgers[site_id]

                    def flush(
                        payloads: Sequence[str], transfers: Sequence[TransferCount]
                    ) -> list[AuditRow]:
                        return ledger.append_group_now(self.store(site_id), payloads, transfers)

                    committer = self._committers[site_id] = GroupCommit(flush)
        return committer

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
        subject: tuple[str, str] | None = None,
        record: str | None = None,
        blocks: Sequence[SubjectBlock] | None = None,
    ) -> list[dict[str, Any]] | None:
        """The one check of a caller's scopes, for every operation of every interface.

        A refusal is audited where the request arrived, naming the caller and the missing
        scope (the names given here are configured sites and collections and checked
        purposes, never other request values), and raised as ``Forbidden``; with ``hide``
        (a record's collection, known only once it is loaded) as the ``NotFound`` a
        missing record gets, so a caller cannot tell the two apart.

        With ``subject`` (the site holding the record, and its subject there), the
        subject's blocks are checked too, once the scopes pass (``check_blocks``): the
        answer is then the blocks the operation goes ahead under, for its audit entry
        (``blocks``: the subject's blocks, when the caller has read them already)."""
        missing = access.missing(operation, site=site, collection=collection, purpose=purpose)
        if missing is None:
            if subject is None:
                return None
            return self.check_blocks(
                access, operation, subject[0], subject[1], purpose,
                collection=collection, record=record, blocks=blocks,
            )  # fmt: skip
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

    def check_blocks(
        self,
        access: Access,
        operation: str,
        site_id: str,
        subject_id: str,
        purpose: str | None,
        *,
        collection: str | None = None,
        record: str | None = None,
        blocks: Sequence[SubjectBlock] | None = None,
    ) -> list[dict[str, Any]] | None:
        """The subject's blocks at ``site_id`` (a restriction of processing, a withdrawal
        of consent: ``domicile.rights``) against one operation on its data.

        - A step of a subject's request (``rights_step``, with that request kind's
          purpose) goes ahead: the subject's own requests are never blocked.
        - Under a restriction, a read (or export) goes ahead only for a purpose whose
          legal basis (``purposes:`` in the configuration) is one the block allows (the
          packs' ``restriction:``, e.g. legal claims); nothing is changed, deleted or
          erased but by the subject's requests (rectification, erasure). Storing new
          records continues.
        - Under a withdrawal of consent, nothing is done for a purpose resting on consent.

        A refusal is audited at the site holding the block (through ``_audit_refusal``)
        and raised as ``SubjectBlocked``, naming the block's kind and request, never the
        subject. Returns the blocks the operation goes ahead under (None: no block
        concerns it), for the operation's audit entry."""
        if blocks is None:
            try:
                blocks = self.store(site_id).blocks([subject_id])
            except SiteUnavailable:
                self._drop(site_id)
                raise
        if not blocks:
            return None
        step = RIGHTS_STEP.get()
        spec = self.config.model.purposes.get(purpose) if purpose else None
        basis = spec.basis if spec is not None else None
        under: list[dict[str, Any]] = []
        for block in blocks:
            if (
                step is not None
                and step.purpose == purpose
                and (step.subjects is None or subject_id in step.subjects)
            ):
                under.append(
                    {"kind": block.kind, "request": block.request_id,
                     "allowed_as": "subject_request", "step_of": step.request}
                )  # fmt: skip
                continue
            if block.kind == "withdrawal":
                if basis not in CONSENT_BASES:
                    continue  # another basis: the withdrawal does not reach it
                reason = "consent_withdrawn"
            elif operation == "records:store":
                continue  # storage goes on under a restriction
            elif operation in ("records:read", "records:export") and basis in block.allows:
                under.append({"kind": block.kind, "request": block.request_id, "allowed_as": basis})
                continue
            else:
                reason = "restricted"
            self._audit_refusal(
                AuditEvent(
                    action="refuse", site="", purpose=purpose, collection=collection,
                    record=record, subject=subject_id, client=access.client,
                    requester=access.site or self.config.local_site,
                    detail={"operation": operation, "reason": reason, "block": block.kind,
                            "request": block.request_id, "basis": basis},
                ),
                at=site_id,
            )  # fmt: skip
            raise _blocked(block, operation, purpose, basis, site_id)
        return under or None

    def _rests_on_consent(self, purpose: str | None) -> bool:
        """Whether the configuration says ``purpose`` rests on the subject's consent."""
        spec = self.config.model.purposes.get(purpose) if purpose else None
        return spec is not None and spec.basis in CONSENT_BASES

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
        self.keep_ciphers(site_id, [(subject_id, cipher)])
        return cipher

    def keep_ciphers(self, site_id: str, ciphers: Iterable[tuple[str, FieldCipher]]) -> None:
        """Keep subjects' opened keys at a site in the cache, bounded (``DEK_CACHE``, the
        oldest going first), so that a large load or replication keeps flat memory."""
        with self._lock:
            for subject_id, cipher in ciphers:
                self._deks[(site_id, subject_id)] = cipher
            for _ in range(len(self._deks) - DEK_CACHE):
                self._deks.popitem(last=False)

    def _forget_key(self, site_id: str, subject_id: str) -> None:
        with self._lock:
            self._deks.pop((site_id, subject_id), None)

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

    @staticmethod
    def _replica_targets(coll: Collection, home: str) -> list[str]:
        return [t.to for t in coll.replicate if t.to != home]

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
        from its own site, else from the local site. On a node, a caller acts from the
        node's own site, or from the site of the peer node that relayed it: no other."""
        access = access or self.operator
        if access.relayed_by is not None:
            as_site = access.relayed_by
        elif self.node is not None and (as_site or access.site or self.node) != self.node:
            raise BadInput(
                f"node {self.node!r} acts from its own site only",
                hint="leave out as_site, or send the request to the node of that site",
            )
        site = self._requester(as_site or access.site)
        if access.site != site.id:
            key = (access, site.id)
            acting = self._acting_as.get(key)
            if acting is None:
                if len(self._acting_as) >= SMALL_CACHE:
                    self._acting_as.clear()
                acting = self._acting_as[key] = access.acting_from(site.id)
            access = acting
        return access, site

    def _load(
        self, site: Site, record_id: str, purpose: str, operation: str, access: Access
    ) -> StoredRecord:
        """The stored (still sealed) record, or ``NotFound`` (audited where the request
        arrived, as a refusal outside the caller's collections is: the two look alike)."""
        return self._load_blocks(site, record_id, purpose, operation, access, blocks=False)[0]

    def _load_blocks(
        self, site: Site, record_id: str, purpose: str, operation: str, access: Access,
        *, blocks: bool = True,
    ) -> tuple[StoredRecord, list[SubjectBlock]]:  # fmt: skip
        """``_load``, with its subject's blocks (for ``authorize``) read in the same query."""
        held: list[SubjectBlock] = []
        try:
            store = self.store(site.id)
            if blocks:
                rec, held = store.get_for_read(record_id)
            else:
                rec = store.get(record_id)
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
        return rec, held

    def _open_record(self, site: Site, rec: StoredRecord) -> tuple[Residency, dict[str, Any]]:
        """The subject's residency and every field of a record, opened with the subject's
        data key at ``site`` (either layout)."""
        text, fields = open_body(self._cipher(site.id, rec.subject_id), site.id, rec)
        return self.residency_of(text), fields

    def residency_of(self, text: str) -> Residency:
        """A residency from the JSON text it was sealed as; many subjects share one, so
        each distinct text is parsed once."""
        residency = self._residencies.get(text)
        if residency is None:
            data: dict[str, Any] = json.loads(text)
            residency = _residency_from_json(data)
            if len(self._residencies) >= SMALL_CACHE:
                self._residencies.clear()
            self._residencies[text] = residency
        return residency

    def _residency(self, site: Site, rec: StoredRecord) -> Residency:
        """Only the residency: for a layout-2 record (InCountry's), without opening the
        other fields."""
        if rec.layout == 3:
            return self._open_record(site, rec)[0]
        cipher = self._cipher(site.id, rec.subject_id)
        context = record_context(site.id, rec.collection, rec.record_id) + RESIDENCY_AD
        return self.residency_of(
            canonical(values.decode(cipher.open(rec.fields[RESIDENCY_FIELD], context)))
        )

    def _field_categories(self, rec: StoredRecord) -> dict[str, str]:
        return self._record_shape(rec).by_field

    def _record_shape(self, rec: StoredRecord) -> _Shape:
        return self._shape(rec.collection, self.collection(rec.collection), rec.field_names)
