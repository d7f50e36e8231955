"""Writing: placement and the write path, updates and deletions.

Check every value; resolve the subject's residency; ask the decision engine which site must
hold the record (the home site); seal it under the subject's data key; then, in one
transaction at the home site, store the record, its blind indexes and its audit entry;
return a token. Nothing of the subject's data is written to any other site, and if the home
site cannot be reached the write fails: it never falls back."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import orjson

from domicile.access import Access
from domicile.audit import AuditEvent
from domicile.audit.group import Group
from domicile.audit.ledger import AuditLedger
from domicile.config import Collection, FieldSpec, Site
from domicile.crypto.blind import BlindIndexer, search_digest
from domicile.crypto.envelope import DEK_BYTES, NONCE, FieldCipher, key_context
from domicile.crypto.errors import KeyDestroyed
from domicile.crypto.keys import wrap_many
from domicile.errors import BadInput, Conflict
from domicile.packs import Outcome
from domicile.policy import Decision
from domicile.residency import Residency, SubjectEvidence, resolve
from domicile.stores import (
    IndexEntry,
    SiteStore,
    StoredRecord,
    StoreTransaction,
    WrappedKey,
)
from domicile.stores.base import SiteUnavailable, body_header
from domicile.vault import values
from domicile.vault.core import (
    DECISION_CACHE,
    IDENTITY,
    _Shape,
    check_purpose,
    keep_reply,
    new_ids,
    pending_reply,
    residency_text,
)
from domicile.vault.errors import PolicyRefused
from domicile.vault.reading import Reading, _Disclosure
from domicile.vault.results import PutResult, ReadResult, WriteResult
from domicile.vault.sealing import seal_body

_HEX = re.compile(r"[0-9a-f]{32}")
_ITEM_KEYS = {"subject", "fields"}  # what a record given to ``put_many`` may hold


@dataclass(slots=True)
class _Write:
    """What one batch writes at a site, prepared and sealed: committed as a unit."""

    held: set[str]  # existing subjects the batch adds records to: refused if being erased
    records: list[StoredRecord]
    entries: list[IndexEntry]
    outbox: list[tuple[str, str, str, str]]
    events: list[AuditEvent]
    # The answer of a peer's call that this write carries out, kept in the same
    # transaction (``core.PendingReply``): the group commit may run on another thread.
    reply: Callable[[StoreTransaction], None] | None = None

    def run(self, tx: StoreTransaction, ledger: AuditLedger) -> None:
        if self.held and tx.hold_subjects(sorted(self.held)):
            raise _SubjectErased
        # Records, index entries, outbox items (replication: in the same transaction as
        # the primary) and the audit entries naming them, sent together where the backend
        # can (``StoreTransaction.write_batch``).
        ledger.append_payloads(
            tx,
            [ev.payload() for ev in self.events],
            chain=lambda payloads: tx.write_batch(
                self.records, self.entries, self.outbox, payloads
            ),
        )
        if self.reply is not None:
            self.reply(tx)


def _commit_writes(
    store: SiteStore, ledger: AuditLedger, writes: Sequence[_Write]
) -> list[BaseException | None]:
    """One transaction for every write of a group. A write refused alone (its subject is
    being erased) is left out and told so; if the transaction fails, each write is tried
    again in a transaction of its own, so one caller's failure is not its neighbours'."""
    if len(writes) > 1:
        outcomes: list[BaseException | None] = []
        try:
            with store.transaction() as tx:
                for w in writes:
                    outcomes.append(_run_one(tx, ledger, w))
        except SiteUnavailable:
            raise  # the site is down for all of them
        except Exception:
            outcomes = []  # one of them broke the shared transaction: each on its own
        if outcomes:
            return outcomes
    results: list[BaseException | None] = []
    for w in writes:
        try:
            with store.transaction() as tx:
                w.run(tx, ledger)
            results.append(None)
        except SiteUnavailable:
            raise
        except Exception as exc:
            results.append(exc)
    return results


def _run_one(tx: StoreTransaction, ledger: AuditLedger, write: _Write) -> BaseException | None:
    """Run one write of a shared transaction; a subject being erased refuses only it (the
    check writes nothing, so the others go on)."""
    try:
        write.run(tx, ledger)
    except _SubjectErased as exc:
        return exc
    return None


class _SubjectErased(Exception):
    """A write's subject was erased after the write looked it up (redone as a new subject)."""


@dataclass(slots=True)
class _Item:
    """One record on its way in."""

    index: int
    fields: dict[str, Any]
    residency: Residency
    site: Site | None = None
    decision: Decision | None = None
    subject_id: str | None = None
    new_subject: bool = False
    record_id: str | None = None  # given by the caller, else a fresh one


class Writing(Reading):
    """put, update and delete (an update answers what a read by the same caller would)."""

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
        record_ids: Sequence[str] | None = None,
    ) -> list[PutResult]:
        """Write records. Everything is checked and placed before anything is written; the
        records of one site are written in one transaction.

        ``record_ids`` (one per item, 32 hex digits) names the new records instead of fresh
        ids: a caller that must not write a record twice (``domicile migrate``, resumed
        after a crash) derives them from its own keys and looks them up first; a record
        id that exists already fails the write."""
        check_purpose(purpose)
        coll = self.collection(collection)
        access, acting = self._acting(access, None)
        self.authorize(
            access, "records:write", site=acting.id, collection=collection, purpose=purpose
        )
        if not items:
            raise BadInput("nothing to write", hint="give at least one record")
        if record_ids is not None:
            record_ids = list(record_ids)
            if (
                len(record_ids) != len(items)
                or not all(
                    isinstance(r, str) and len(r) == 32 and _HEX.fullmatch(r) for r in record_ids
                )
                or len(set(record_ids)) != len(record_ids)
            ):
                raise BadInput(
                    "record ids: one per record, each different, 32 lower-case hex digits each"
                )
        prepared: list[_Item] = []
        evidence_cache: dict[Any, Residency] = {}
        for i, item in enumerate(items):
            try:
                if (type(item) is not dict and not isinstance(item, Mapping)) or not (
                    item.keys() <= _ITEM_KEYS
                ):
                    raise BadInput("each record is {subject: ..., fields: ...}")
                checked = values.check_fields(collection, coll, item.get("fields") or {})
                residency = self._evidence_residency(item.get("subject"), evidence_cache)
                prepared.append(_Item(i, checked, residency))
                if record_ids is not None:
                    prepared[-1].record_id = record_ids[i]
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
        results = self._write_placed(by_site, items, collection, coll, purpose, access)
        return [results[i] for i in range(len(prepared))]

    def _write_placed(
        self,
        by_site: dict[str, list[_Item]],
        items: Sequence[Mapping[str, Any]],
        collection: str,
        coll: Collection,
        purpose: str,
        access: Access,
    ) -> dict[int, PutResult]:
        """Write records checked and placed, site by site (a federation's node forwards the
        groups whose home is another node: ``domicile.federation.node``)."""
        # Fail closed before writing anything: every home site must answer, and records
        # named by the caller must not exist yet (a write repeated is refused, not doubled).
        for site_id, group in by_site.items():
            self._require(site_id, purpose, collection, "put", access)
            named = [p.record_id for p in group if p.record_id is not None]
            if named and self.store(site_id).get_many(named):
                raise Conflict(
                    "a record with one of these ids exists already",
                    hint="it was written before: look it up instead of writing it again",
                )
        results: dict[int, PutResult] = {}
        if len(by_site) == 1:
            for site_id, group in by_site.items():
                results.update(self._write_site(site_id, collection, coll, group, purpose, access))
            return results
        # Several home sites: each written on a thread of its own, so one site's sealing
        # runs while another's database inserts and commits (its wait releases the
        # interpreter). Each site's write is its own transaction, as it was one after
        # another; the first failure, in site order, is raised once all have finished.
        with ThreadPoolExecutor(max_workers=len(by_site), thread_name_prefix="put") as pool:
            futures = [
                pool.submit(self._write_site, site_id, collection, coll, group, purpose, access)
                for site_id, group in by_site.items()
            ]
        failure: BaseException | None = None
        for future in futures:
            error = future.exception()
            if error is not None:
                failure = failure or error
            else:
                results.update(future.result())
        if failure is not None:
            raise failure
        return results

    @staticmethod
    def _evidence_residency(raw: Any, cache: dict[Any, Residency]) -> Residency:
        """The residency of a record's subject evidence; ``cache`` serves a batch whose
        records repeat the same evidence (keyed by the evidence, and by a mapping's items
        when they are all strings)."""
        if isinstance(raw, Residency):
            return raw  # resolved already (``domicile migrate`` keeps a scan's residency)
        key: tuple[tuple[str, str], ...] | None = None
        if (type(raw) is dict or isinstance(raw, Mapping)) and all(
            type(v) is str for v in raw.values()
        ):
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
        # subject's earlier records: one index query for the whole batch.
        digests = self._batch_digests(indexer, collection, coll, group)
        known = store.subjects_for([d for _, idents in digests for d in idents])
        made: dict[str, None] = {}  # the new subjects of this batch, keyed below
        ciphers: dict[str, FieldCipher] = {}
        fresh = iter(new_ids(len(group)))
        held: set[str] = set()  # existing subjects this batch adds records to
        for item, (_, idents) in zip(group, digests, strict=True):
            sid = None
            for d in idents:
                sid = known.get(d)
                if sid is not None:
                    break
            if sid is not None and sid not in ciphers and sid not in made:
                try:
                    ciphers[sid] = self._cipher(site_id, sid)
                    held.add(sid)
                except KeyDestroyed:
                    sid = None  # being erased right now: this record starts a new subject
            if sid is None:
                sid = next(fresh)
                made[sid] = None
                item.new_subject = True
                for d in idents:
                    known[d] = sid  # later records of this batch join the new subject
            else:
                item.new_subject = False
                for d in idents:
                    known.setdefault(d, sid)  # later records of this batch join it too
            item.subject_id = sid
        # Each new subject's data key, wrapped under the site's key-encryption key: the
        # keys drawn from the OS at once, wrapped in one call where the provider can.
        new_keys: list[tuple[str, WrappedKey]] = []
        if made:
            pool = os.urandom(DEK_BYTES * len(made))
            deks = [pool[DEK_BYTES * k : DEK_BYTES * (k + 1)] for k in range(len(made))]
            contexts = [key_context(site_id, sid) for sid in made]
            wrapped = wrap_many(self.keys, site_id, list(zip(deks, contexts, strict=True)))
            for sid, dek, (version, blob) in zip(made, deks, wrapped, strict=True):
                new_keys.append((sid, WrappedKey(version, blob)))
                ciphers[sid] = FieldCipher(dek)
        if held and self._rests_on_consent(purpose):
            # Subjects who withdrew consent get no new records for a purpose resting on it.
            found = store.blocks(sorted(held))
            for sid in sorted({b.subject_id for b in found}):
                self.check_blocks(
                    access, "records:store", site_id, sid, purpose, collection=collection,
                    blocks=[b for b in found if b.subject_id == sid],
                )  # fmt: skip
        if new_keys:
            ks.put_many(new_keys)  # committed before any data sealed with them
            self.keep_ciphers(site_id, [(sid, ciphers[sid]) for sid, _ in new_keys])

        now = self.clock().isoformat()
        rids = [
            item.record_id or fresh_id
            for item, fresh_id in zip(group, new_ids(len(group)), strict=True)
        ]
        tokens = self.tokens.issue_many(site_id, rids)
        nonces = os.urandom(NONCE * len(group))
        records: list[StoredRecord] = []
        entries: list[IndexEntry] = []
        results: dict[int, PutResult] = {}
        texts: dict[Residency, str] = {}
        # Each shape of record in the batch (the names of its fields, in order) once: what
        # the vault derives from it, and the header of its body.
        shapes: dict[tuple[str, ...], tuple[_Shape, bytes]] = {}
        # One audit entry per decision and shape, naming every record of the batch it covers.
        written: dict[tuple[int, tuple[str, ...]], tuple[Decision, _Shape, list[str], list[str]]]
        written = {}
        outbox: list[tuple[str, str, str, str]] = []
        targets = self._replica_targets(coll, site_id)
        context = b"\x00".join((b"domicile/record/v3", site_id.encode(), collection.encode()))
        country = site.country
        dumps = orjson.dumps
        for n, (item, rid, token, (own, idents)) in enumerate(
            zip(group, rids, tokens, digests, strict=True)
        ):
            sid = item.subject_id
            decision = item.decision
            assert sid is not None
            assert decision is not None
            fields = item.fields
            names = tuple(fields)
            hit = shapes.get(names)
            if hit is None:
                hit = shapes[names] = (self._shape(collection, coll, names), body_header(names))
            shape, header = hit
            text = texts.get(item.residency)
            if text is None:
                text = texts[item.residency] = residency_text(item.residency)
            cipher = ciphers.get(sid) or self._cipher(site_id, sid)
            nonce = nonces[NONCE * n : NONCE * (n + 1)]
            # ``sealing.body_context`` for version 1, from the batch's common start.
            ad = b"\x00".join((context, rid.encode(), b"1", header))
            body = header + nonce + cipher.aead.encrypt(nonce, dumps([text, fields]), ad)
            records.append(StoredRecord(rid, sid, collection, 1, now, now, body))
            for d in own:
                entries.append(IndexEntry(d, rid))
            for d in idents:
                entries.append(IndexEntry(d, rid))
            group_key = (id(decision), shape.names)
            batch = written.get(group_key)
            if batch is None:
                batch = written[group_key] = (decision, shape, [], [])
            batch[2].append(rid)
            batch[3].append(sid)
            results[item.index] = PutResult(
                token,
                site_id,
                country,
                decision,
                item.new_subject,
                self._join_tokens(collection, coll, fields) if shape.joins else {},
            )
            if targets:
                outbox.extend((rid, sid, t, "upsert") for t in targets)
        acting = access.site or self.config.local_site
        events = [
            AuditEvent(
                action="write", site=site_id, purpose=purpose, collection=collection,
                requester=acting, client=access.client, decision=decision.outcome.value,
                rules=decision.rule_ids, categories=shape.categories, fields=shape.names,
                records=tuple(rec_ids), subjects=tuple(sub_ids), at=now,
            )
            for decision, shape, rec_ids, sub_ids in written.values()
        ]  # fmt: skip
        reply = None
        pending = pending_reply(site_id)
        if pending is not None:  # a peer's put: its answer, the results in order
            answer = [results[i] for i in sorted(results)]
            reply = partial(pending.keep_in, result=answer)
        try:
            self.commit_write(site_id, _Write(held, records, entries, outbox, events, reply))
        except SiteUnavailable:
            self._drop(site_id)
            raise
        return results

    def commit_write(self, site_id: str, write: _Write) -> None:
        """Commit a prepared write: with the writes arriving at the same site at the same
        moment, in one transaction (``domicile.audit.group``). Returns once committed."""
        group = self._writers.get(site_id)
        if group is None:
            with self._lock:
                group = self._writers.get(site_id)
                if group is None:

                    def flush(writes: Sequence[_Write]) -> list[BaseException | None]:
                        # The site's store as it is now (it is opened again after an outage).
                        return _commit_writes(self.store(site_id), self._ledgers[site_id], writes)

                    group = self._writers[site_id] = Group(flush)
        group.submit(write)

    def _digests(
        self, indexer: BlindIndexer, collection: str, coll: Collection, fields: Mapping[str, Any]
    ) -> tuple[list[bytes], list[bytes]]:
        """A record's blind-index digests: those of its searchable fields (in the
        collection's namespace), and those of its identifying values (in the identity
        namespace, by category, shared by every collection)."""
        indexed = self._shape(collection, coll, tuple(fields)).indexed
        return self._digests_of(indexer, collection, indexed, fields)

    def _batch_digests(
        self, indexer: BlindIndexer, collection: str, coll: Collection, group: Sequence[_Item]
    ) -> list[tuple[list[bytes], list[bytes]]]:
        """``_digests`` of each record of a batch (the indexed fields of each shape found
        once)."""
        plans: dict[tuple[str, ...], list[tuple[str, FieldSpec, str | None]]] = {}
        out = []
        for item in group:
            fields = item.fields
            names = tuple(fields)
            indexed = plans.get(names)
            if indexed is None:
                indexed = plans[names] = self._shape(collection, coll, names).indexed
            out.append(self._digests_of(indexer, collection, indexed, fields))
        return out

    def _digests_of(
        self,
        indexer: BlindIndexer,
        collection: str,
        indexed: Sequence[tuple[str, FieldSpec, str | None]],
        fields: Mapping[str, Any],
    ) -> tuple[list[bytes], list[bytes]]:
        own: list[bytes] = []
        idents: list[bytes] = []
        for name, spec, identity in indexed:
            norm = values.normalize(name, spec, fields[name])
            own.append(indexer.digest(collection, name, norm))
            if identity is not None:
                idents.append(indexer.digest(IDENTITY, identity, norm))
            if self.federated:  # the same values, found by search digests from other nodes
                own += self._searched_as(indexer, collection, name, identity, norm)
        return own, idents

    def _searched_as(
        self, indexer: BlindIndexer, collection: str, name: str, identity: str | None, norm: str
    ) -> list[bytes]:
        """The index entries by which other nodes find a value: its search digests
        (``crypto/blind.py``), keyed again with the site's index key."""
        key = self._search_key
        out = [indexer.of_search(search_digest(key, collection, name, norm))]
        if identity is not None:
            out.append(indexer.of_search(search_digest(key, IDENTITY, identity, norm)))
        return out

    def search_entries(self, site_id: str, rec: StoredRecord) -> list[bytes]:
        """The search entries of a record at ``site_id``, opened with its subject's key,
        as a write in a federated deployment makes them (``federation reindex`` adds them
        to records written before). Raises ``KeyDestroyed`` for an erased subject."""
        collection = rec.collection
        coll = self.collection(collection)
        indexer = self._indexers[site_id]
        _, fields = self._open_record(self._sites[site_id], rec)
        known = {k: v for k, v in fields.items() if k in coll.fields and v is not None}
        out: list[bytes] = []
        for name, spec, identity in self._shape(collection, coll, tuple(known)).indexed:
            norm = values.normalize(name, spec, known[name])
            out += self._searched_as(indexer, collection, name, identity, norm)
        return out

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
        under = self.authorize(
            access, "records:write", collection=rec.collection, purpose=purpose, hide=True,
            subject=(site.id, rec.subject_id), record=rec.record_id,
        )  # fmt: skip
        coll = self.collection(rec.collection)
        checked = values.check_fields(rec.collection, coll, fields, partial=True, clear=True)
        residency, current = self._open_record(site, rec)
        merged = {  # a field given as None is cleared
            k: v
            for k, v in {
                **{k: v for k, v in current.items() if k in coll.fields},
                **checked,
            }.items()
            if v is not None
        }
        decision = self._decide(
            residency, [coll.fields[f].category for f in merged], "update", site.country
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
        # The whole body is sealed again (layout 3, whatever it was): its version is part of
        # what the seal binds.
        cipher = self._cipher(site.id, rec.subject_id)
        now = self.clock().isoformat()
        version = rec.version + 1
        body = seal_body(
            cipher, site.id, rec.collection, rec.record_id, version,
            residency_text(residency), merged,
        )  # fmt: skip
        new = replace(rec, version=version, updated_at=now, body=body)
        # The read back, decided before anything is written and committed with the write.
        shown: _Disclosure | None = None
        if (
            access.missing(
                "records:read", site=requester.id, collection=rec.collection, purpose=purpose
            )
            is None
        ):
            shown = self._disclose(
                token, site, new, requester, purpose, access, operation="update",
                opened_record=(residency, merged), under=under,
            )  # fmt: skip
            if shown.error is not None:
                shown = None  # the law refuses this caller the record: only the version
        own, idents = self._digests(self._indexers[site.id], rec.collection, coll, merged)
        store = self.store(site.id)
        with store.transaction() as tx:
            tx.replace(new, rec.version)
            tx.enqueue(
                [
                    (rec.record_id, rec.subject_id, t, "upsert")
                    for t in self._replica_targets(coll, site.id)
                ]
            )
            if any(coll.fields[f].searchable for f in checked):
                tx.unindex(rec.record_id)
                tx.index(IndexEntry(d, rec.record_id) for d in (*own, *idents))
            event = self._event(
                "update", site, rec, purpose, access, decision="allow", rules=decision.rule_ids,
                fields=tuple(sorted(checked)), at=now, detail={"blocks": under} if under else {},
            )  # fmt: skip
            payloads = [event.payload()]
            if shown is not None:
                payloads.append(shown.payload)
                if shown.count is not None:
                    c = shown.count
                    tx.count_transfer(c.year, c.to_country, c.subject_id, c.sensitive)
            self._ledgers[site.id].append_payloads(tx, payloads)
            result: ReadResult | WriteResult = (
                WriteResult(token, new.version)
                if shown is None or shown.result is None
                else shown.result
            )
            keep_reply(tx, site.id, result)
        return result

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
        self.authorize(
            access, "records:delete", collection=rec.collection, purpose=purpose, hide=True,
            subject=(site.id, rec.subject_id), record=rec.record_id,
        )  # fmt: skip
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
            answer = {"deleted": True, "site": site.id, "records": 1}
            keep_reply(tx, site.id, answer)
        return answer
