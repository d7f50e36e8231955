"""A node of a federation: one site's data, keys and decisions, in that site's country.

``domicile serve --node ID`` runs a ``FederatedDomicile``: the vault of one site (``node``
in ``VaultCore``: only that site's stores are opened, only its keys are in its keyring)
that reaches every other site through that site's own node, over the node channel
(mutual TLS with certificates from the deployment's CA: ``channel.py``, ``tls.py``).

What crosses a border is decided where the data lives. A node asked by a peer for one of
its records decides the read under its own packs as a read *from the peer's site* (the
peer's id comes from its verified certificate, never from the request), audits it in its
own log, and answers full, masked or refused; the peer audits that it asked and what it
got (an entry ``request`` with ``detail.forwarded_to``). A peer can never make a node act
as from the node's own country, and never with more than the node lets peers ask
(``federation.peer_scopes``; ``admin`` never).

- ``get``, ``update``, ``delete``, ``erase``: the token names the home site; a record at
  another node is asked of that node.
- ``put``: placement is decided here (policy only: no keys needed), and the records whose
  home is another node are sent there, where they are placed again under that node's
  packs: a node never writes a record whose home it does not agree is its own.
- ``find``: this node's site, then every other node, each searching its own blind indexes
  by the search digests this node sends (``crypto/blind.py``: the values searched for
  never leave this node) and deciding each record it shows.

- ``subject``, ``request_step``: a subject's request (``rights``) at the home node: the
  subject found by the search digests of its identities, its records listed (ids,
  collections, categories), the laws that cover it there, its erasure entries (the home's
  part of a destruction act, signed with its own key); and each step of the request
  recorded in the home's log, a restriction's or a withdrawal's block placed and lifted
  in the home's store (``request_step``, the one that writes).

A forwarded call is never forwarded again, so two nodes that disagree (different pack
versions, say) refuse instead of sending a record round in circles. Calls that write
carry an idempotency key; a node answers a repeated key with its first answer.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import orjson

from domicile.access import Access, Forbidden
from domicile.audit import AuditEvent
from domicile.config import PEER_SCOPES, Collection
from domicile.crypto.blind import SEARCH_BYTES, search_digest
from domicile.crypto.errors import KeyDestroyed
from domicile.errors import BadInput, Conflict, DomicileError, NodeUnavailable, NotFound
from domicile.http.security import RateLimited
from domicile.policy.decision import decision_from_dict, decision_to_wire
from domicile.rights.acts import ACT_PART_KEYS, check_part, sign_part
from domicile.rights.service import RECORD_OPERATION
from domicile.stores.base import SiteUnavailable, StoreTransaction, SubjectBlock, VersionConflict
from domicile.vault.core import IDENTITY, PENDING_REPLY, PendingReply, keep_reply, new_ids
from domicile.vault.errors import InvalidToken, PolicyRefused, SubjectBlocked
from domicile.vault.results import FindResult, PutResult, ReadResult, WriteResult
from domicile.vault.service import Domicile

T = TypeVar("T")
_CLIENT = re.compile(r"[A-Za-z0-9_.:@+-]{1,128}")
_CODE = re.compile(r"[a-z][a-z0-9_]{0,47}")
_HEX = re.compile(r"[0-9a-f]+")

OPERATIONS = (
    "get", "put", "find", "update", "delete", "erase", "subject", "request_step", "replica",
    "witness", "prove", "primaries", "verify",
)  # fmt: skip
# A subject's request (rights/): the record operation each kind's purpose stands for, which
# is what a peer's caller needs at the subject's home node.
RIGHTS_OPERATION = RECORD_OPERATION
# A short word of a peer's detail or entry: ids, dates, site and field names. No "@" and
# no leading "+" or long run of digits alone, so no e-mail address or phone number.
_WORD = re.compile(r"(?![+])(?!\d{7,}$)[A-Za-z0-9_.:+/-]{0,128}")
# A subject id of a site: hex (a fresh id, or a keyed digest of an InCountry profile key).
_SUBJECT = re.compile(r"[0-9a-f]{16,128}")
_KEY = re.compile(r"[a-z][a-z_]{0,31}")
# The peer node's own operations, for no caller.
NODE_OPERATIONS = ("replica", "witness", "prove", "primaries", "verify")


WITNESS_LIMIT = 60  # heads a peer may send to witness per interval (one in 10 s on average)
WITNESS_INTERVAL = 600.0  # seconds


VERIFY_LIMIT = 10  # verifications of its whole log a peer may ask per interval
VERIFY_INTERVAL = 600.0  # seconds


class WitnessRateLimited(RateLimited):
    """A peer sent more heads to witness than a node records in an interval, or asked
    for more verifications of its log than it answers (``op``)."""

    def __init__(
        self, peer: str, limit: int, interval: float, wait: float, *, op: str = "witness"
    ) -> None:
        if op == "witness":
            what, hint = (
                "heads to witness",
                "sign and send heads less often; they are witnessed again in the next interval",
            )
        else:
            what = "asks to verify this node's log" if op == "verify" else "asks for proofs"
            hint = "ask again in the next interval"
        DomicileError.__init__(
            self, f"node {peer!r} sent more than {limit} {what} in {interval:g} s", hint=hint
        )
        self.retry_after = max(1, math.ceil(wait))


class PeerCaller(Protocol):
    """What a node needs of the channel: one call to one peer, answered as JSON or raised
    as the typed error the peer answered (``raise_from_wire``), or ``NodeUnavailable``."""

    def call(
        self, node: str, op: str, body: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]: ...


# --- the wire: results and errors as JSON, and back ----------------------------------------


def read_to_wire(r: ReadResult) -> dict[str, Any]:
    return {
        "token": r.token, "site": r.site, "country": r.country, "collection": r.collection,
        "fields": r.fields, "version": r.version, "decision": decision_to_wire(r.decision),
        "transfer": r.transfer, "masked": r.masked, "source": r.source, "read_at": r.read_at,
    }  # fmt: skip


def read_from_wire(d: Mapping[str, Any]) -> ReadResult:
    return ReadResult(
        d["token"], d["site"], d["country"], d["collection"], dict(d["fields"]), d["version"],
        decision_from_dict(d["decision"]), d["transfer"], d["masked"], d["source"], d["read_at"],
    )  # fmt: skip


def put_to_wire(r: PutResult) -> dict[str, Any]:
    return {
        "token": r.token, "site": r.site, "country": r.country,
        "decision": decision_to_wire(r.decision), "subject_is_new": r.subject_is_new,
        "join_tokens": r.join_tokens,
    }  # fmt: skip


def put_from_wire(d: Mapping[str, Any]) -> PutResult:
    return PutResult(
        d["token"], d["site"], d["country"], decision_from_dict(d["decision"]),
        d["subject_is_new"], dict(d["join_tokens"]),
    )  # fmt: skip


def answer_of(op: str, result: Any) -> dict[str, Any]:
    """A call's answer on the wire from the vault's result: as ``answer_peer`` answers
    it, and as a write keeps it in its own transaction (``Replies``)."""
    if op == "put":
        return {"records": [put_to_wire(r) for r in result]}
    if op == "update":
        return (
            {"record": read_to_wire(result)} if isinstance(result, ReadResult) else result.to_dict()
        )
    return dict(result)


def parsed(
    node: str, doc: Mapping[str, Any], key: str, read: Callable[[Any], T], *, one: bool = False
) -> list[T]:
    """``read`` of each item of ``doc[key]`` (of ``doc[key]`` itself with ``one``), in node
    ``node``'s answer: results of that node's own site only. A malformed answer, or one
    about another site's records (a node answers only for its own), is no answer
    (``NodeUnavailable``), never a crash or a result passed on as another site's."""
    bad = NodeUnavailable(node, f"node {node} answered something that is not a node answer")
    try:
        raw = [doc[key]] if one else doc[key]
        if not isinstance(raw, list):
            raise bad
        out = [read(item) for item in raw]
    except (KeyError, TypeError, ValueError, AttributeError):
        raise bad from None
    for item in out:
        if (item.get("site") if isinstance(item, dict) else getattr(item, "site", None)) != node:
            raise bad
    return out


# The errors a peer's answer may carry, by code; anything else is raised as a DomicileError
# with the peer's code (its words, which never hold a value: errors never do).
_ERRORS: dict[str, type[DomicileError]] = {
    e.code: e
    for e in (
        BadInput, InvalidToken, NotFound, Conflict, Forbidden, PolicyRefused, SiteUnavailable,
        VersionConflict, KeyDestroyed, SubjectBlocked,
    )
}  # fmt: skip


def error_to_wire(exc: DomicileError) -> dict[str, Any]:
    out = exc.to_dict()
    if isinstance(exc, SiteUnavailable):
        out["site"] = exc.site
    return out


def raise_from_wire(doc: Mapping[str, Any], node: str) -> DomicileError:
    """The typed error a peer answered, to raise here."""
    code, message, hint = doc.get("code"), str(doc.get("message", "")), doc.get("hint")
    details = doc.get("details") or {}
    cls = _ERRORS.get(str(code))
    if cls is SubjectBlocked:  # a block at the home node: its kind, request, time and site
        raw = details.get("block")
        block = {
            k: str(raw[k])[:128] for k in ("kind", "request", "since", "site")
            if isinstance(raw, Mapping) and isinstance(raw.get(k), str)
        }  # fmt: skip
        return SubjectBlocked(message, block={**block, "site": node}, hint=hint)
    if cls is PolicyRefused:
        return PolicyRefused(message, decision=details.get("decision"), hint=hint)
    if cls is not None and issubclass(cls, SiteUnavailable):
        return SiteUnavailable(node, message, hint=hint)  # a node speaks for its own site
    if cls is Forbidden:
        return Forbidden(message, hint=hint, missing=details.get("missing"))
    if cls is not None:
        return cls(message, hint=hint)
    err = DomicileError(f"node {node!r} answered: {message[:500]}", hint=hint)
    # The code goes into this node's audit (the answer a request got): a code, nothing else.
    err.code = code if isinstance(code, str) and _CODE.fullmatch(code) else "peer_error"
    return err


@dataclass(frozen=True)
class PrimaryMeta:
    """A primary as a parity check sees it: its version and field names, no values."""

    version: int
    field_names: tuple[str, ...]
    is_replica: bool = False


class ChannelCaller:
    """``PeerCaller`` over the node channel (``channel.NodeChannel``): a POST to the peer's
    ``/v1/node/OP``, its JSON answer, or the typed error it answered."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel

    def call(
        self, node: str, op: str, body: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        response = self.channel.request(
            node, "POST", f"/v1/node/{op}", json=dict(body), idempotency_key=idempotency_key
        )
        try:
            doc = response.json()
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise NodeUnavailable(node, f"node {node} answered something that is not a node answer")
        if response.status_code == 200:
            return doc
        raise raise_from_wire(doc, node)


# --- the node itself -----------------------------------------------------------------------


class FederatedDomicile(Domicile):
    """The vault as node ``node`` runs it (see the module's words)."""

    def __init__(self, config: Any, *, node: str, peers: PeerCaller, **kwargs: Any) -> None:
        super().__init__(config, node=node, **kwargs)
        self.peers = peers
        fed = self.config.model.federation
        self.peer_scopes = tuple(fed.peer_scopes if fed else PEER_SCOPES)
        # Heads a peer may send to witness (each a witness entry in this node's log): at
        # most ``witness_limit`` per ``witness_interval`` seconds per peer; the refusals of
        # an interval are audited once.
        self.witness_limit = WITNESS_LIMIT
        self.witness_interval = WITNESS_INTERVAL
        self.witness_clock: Callable[[], float] = time.monotonic
        # The same for a peer's asks to verify this node's whole log (a walk of all of it).
        self.verify_limit = VERIFY_LIMIT
        self.verify_interval = VERIFY_INTERVAL
        # And its asks for consistency proofs (each reads the log up to the head asked):
        # one per head it witnesses, so as many as it may send heads.
        self.prove_limit = WITNESS_LIMIT
        self.prove_interval = WITNESS_INTERVAL
        # (op, peer): [start, count, audited]
        self._witness_windows: dict[tuple[str, str], list[Any]] = {}
        self._witness_lock = threading.Lock()

    # -- the caller a peer relays

    def relayed(self, peer: str, body: Mapping[str, Any]) -> Access:
        """The caller of a call that ``peer`` (verified by its certificate) relays."""
        if peer == self.node or peer not in self._sites:
            raise Forbidden(f"{peer!r} is not a peer node of this deployment")
        client = body.get("client")
        scopes = body.get("scopes")
        if client is not None and not (isinstance(client, str) and _CLIENT.fullmatch(client)):
            # It goes into this node's audit: a caller's name, never room for anything else.
            raise BadInput(
                "client: a client id or operator name (1-128 of A-Z a-z 0-9 _ . : @ + -)"
            )
        if scopes is not None and not (
            isinstance(scopes, list) and all(isinstance(s, str) for s in scopes)
        ):
            raise BadInput("scopes: a list of strings")
        return Access.relayed(peer, client, scopes, self.peer_scopes)

    def _ask(
        self,
        home: str,
        op: str,
        body: dict[str, Any],
        access: Access,
        purpose: str,
        *,
        writes: bool = False,
    ) -> dict[str, Any]:
        """Ask the home node, audit here that we asked and how it answered."""
        if access.relayed_by is not None:  # never forwarded twice
            raise Conflict(
                f"node {home!r} holds this, not node {self.node!r}",
                hint="the nodes disagree about where this belongs: check that they run the same packs",
            )
        body = {
            **body, "purpose": purpose, "client": access.client,
            "scopes": sorted(access.scopes) if access.scopes is not None else None,
        }  # fmt: skip
        key = new_ids(1)[0] if writes else None
        outcome = "answered"
        try:
            answer = self.peers.call(home, op, body, idempotency_key=key)
            return answer
        except DomicileError as exc:
            outcome = exc.code
            raise
        finally:
            self._audit_asked(home, op, purpose, access, outcome)

    def _audit_asked(self, home: str, op: str, purpose: str, access: Access, outcome: str) -> None:
        event = AuditEvent(
            action="request", site=self.config.local_site, purpose=purpose,
            requester=access.site or self.config.local_site, client=access.client,
            detail={"operation": op, "forwarded_to": home, "answer": outcome},
        )  # fmt: skip
        try:
            self._audit(self.config.local_site, [event])
        except SiteUnavailable:
            self._drop(self.config.local_site)
            raise

    # -- reads

    def get(
        self,
        token: str,
        *,
        purpose: str,
        as_site: str | None = None,
        access: Access | None = None,
    ) -> ReadResult:
        site, record_id = self._locate(token)
        if self.is_here(site.id):
            return super().get(token, purpose=purpose, as_site=as_site, access=access)
        from domicile.vault.core import check_purpose

        check_purpose(purpose)
        access, requester = self._acting(access, as_site)
        self.authorize(access, "records:read", site=requester.id, purpose=purpose)
        if requester.id in self._copy_sites and access.relayed_by is None:
            local = self._replica_read(token, site, record_id, requester, purpose, access)
            if local is not None:
                return local
        answer = self._ask(site.id, "get", {"token": token}, access, purpose)
        return parsed(site.id, answer, "record", read_from_wire, one=True)[0]

    def find(
        self,
        collection: str,
        *,
        where: Mapping[str, Any],
        purpose: str,
        as_site: str | None = None,
        access: Access | None = None,
    ) -> FindResult:
        result = super().find(
            collection, where=where, purpose=purpose, as_site=as_site, access=access
        )
        access, _ = self._acting(access, as_site)
        elsewhere = [s for s in result.unavailable if not self.is_here(s)]
        result.unavailable = [s for s in result.unavailable if self.is_here(s)]
        if access.relayed_by is not None:
            return result  # a peer asks each node itself
        if not elsewhere:
            return result
        # What crosses is the search digest of each value (crypto/blind.py), never the value.
        searched = self._searched(collection, self.collection(collection), where)
        search = {
            fname: search_digest(self._search_key, collection, fname, norm).hex()
            for fname, norm in searched.items()
        }
        for site_id in elsewhere:
            try:
                answer = self._ask(
                    site_id, "find", {"collection": collection, "search": search},
                    access, purpose,
                )  # fmt: skip
                records = parsed(site_id, answer, "records", read_from_wire)
                refused = parsed(site_id, answer, "refused", dict)
            except (SiteUnavailable, NodeUnavailable):
                result.unavailable.append(site_id)
                continue
            result.records.extend(records)
            result.refused.extend(refused)
            if site_id in answer.get("unavailable", ()):  # its own site only
                result.unavailable.append(site_id)
        return result

    def find_searched(
        self, collection: str, search: Mapping[str, bytes], *, purpose: str, access: Access
    ) -> FindResult:
        """``find`` at this node's own site for a peer, by search digests (field name to
        ``search_digest``): the values are never here. Each record found is decided for
        the caller as a read from the peer's site, as ``find`` decides it."""
        from domicile.vault.core import check_purpose

        check_purpose(purpose)
        coll = self.collection(collection)
        access, requester = self._acting(access, None)
        self.authorize(
            access, "records:read", site=requester.id, collection=collection, purpose=purpose
        )
        for fname in search:
            spec = coll.fields.get(fname)
            if spec is None or not spec.searchable:
                raise BadInput(f"search: {fname!r} is not a searchable field of {collection!r}")
        node = self.node
        assert node is not None
        result = FindResult()
        try:
            indexer = self._indexers[node]
            rows = [indexer.of_search(d) for d in search.values()]
            self._find_at(self._sites[node], collection, rows, requester, purpose, access, result)
        except SiteUnavailable:
            self._drop(node)
            result.unavailable.append(node)
        return result

    # -- subjects' requests: each home node finds, lists and audits its own part

    def subject_at(
        self,
        site_id: str,
        *,
        purpose: str,
        access: Access,
        identity: Sequence[tuple[str, str]] | None = None,
        subjects: Sequence[str] = (),
    ) -> list[dict[str, Any]]:
        """The subject's holdings at ``site_id``, as its node answers: found there by the
        search digests of its identities (category, normalised value; never the values)
        and by the subject ids given. Each holding lists its primaries (record id,
        collection, categories) and the laws that cover the subject there."""
        body: dict[str, Any] = {"step": "holdings", "subjects": list(subjects)}
        if identity is not None:
            body["identity"] = {
                category: search_digest(self._search_key, IDENTITY, category, norm).hex()
                for category, norm in identity
            }
        answer = self._ask(site_id, "subject", body, access, purpose)
        return parsed(site_id, answer, "holdings", _holding_from_wire)

    def request_step_at(
        self,
        site_id: str,
        *,
        purpose: str,
        access: Access,
        subject: str | None,
        detail: Mapping[str, Any],
    ) -> int:
        """Have ``site_id``'s node record a step of a subject's request in its own log
        (an entry ``request``, as each site holding the subject records it); its number."""
        body = {"step": "record", "subject": subject, "detail": dict(detail)}
        answer = self._ask(site_id, "request_step", body, access, purpose, writes=True)
        seq = answer.get("seq")
        if answer.get("site") != site_id or not isinstance(seq, int) or isinstance(seq, bool):
            raise NodeUnavailable(
                site_id, f"node {site_id} answered something that is not a node answer"
            )
        return seq

    def erased_at(
        self,
        site_id: str,
        *,
        purpose: str,
        access: Access,
        subjects: Sequence[str],
        request: str,
    ) -> dict[str, Any]:
        """``site_id``'s part of the destruction act of ``request``: the entries of its
        log that erased these subjects' data there (their key destroyed; site, number,
        hash, time, no values), signed by its node with its own key. A part that is not
        about this ask, or not signed with that node's key, is no answer."""
        body = {"step": "erased", "subjects": list(subjects), "request": request}
        answer = self._ask(site_id, "subject", body, access, purpose)
        bad = NodeUnavailable(
            site_id, f"node {site_id} answered something that is not a node answer"
        )
        part, signature = answer.get("part"), answer.get("signature")
        if set(answer) != {"part", "signature"} or not isinstance(part, Mapping):
            raise bad
        if set(part) != set(ACT_PART_KEYS) or (
            part["kind"],
            part["site"],
            part["asker"],
            part["request"],
            part["subjects"],
        ) != ("act_part", site_id, self.node, request, list(subjects)):
            raise bad
        entries = parsed(site_id, part, "entries", _entry_from_wire)
        if entries != part["entries"]:  # nothing in them but what an entry holds
            raise bad
        if not check_part(self.keys.verify_key(site_id), part, signature):
            raise NodeUnavailable(
                site_id, f"node {site_id}'s part of the act is not signed with its key",
                hint="check the deployment's keys of that node (its certificate and keyring)",
            )  # fmt: skip
        return {"part": dict(part), "signature": signature}

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
        """Have ``site_id``'s node place (``step`` block) or lift (lift) the block of
        ``request`` on its subject there; its answer: the number of its audit entry,
        whether it changed anything (1: placed, or lifted; 0: as it was) and how many
        records it queued again for copies. An answer with anything else in it,
        or about another site or subject, is no answer."""
        body = {"step": step, "subject": subject, "request": request, "kind": kind, **block}
        answer = self._ask(site_id, "request_step", body, access, purpose, writes=True)
        seq, requeued = answer.get("seq"), answer.get("requeued")
        changed = answer.get("changed")
        if not (
            set(answer) == {"site", "subject", "seq", "changed", "requeued"}
            and (answer["site"], answer["subject"]) == (site_id, subject)
            and _count(seq)
            and seq != 0
            and changed in (0, 1)
            and not isinstance(changed, bool)
            and _count(requeued)
        ):
            raise NodeUnavailable(
                site_id, f"node {site_id} answered something that is not a node answer"
            )
        return {"seq": seq, "changed": changed, "requeued": requeued}

    def _subject_for(
        self, body: Mapping[str, Any], purpose: str, access: Access, *, writes: bool
    ) -> dict[str, Any]:
        """A peer's step of a subject's request, at this node's site only: ``subject``
        reads (holdings, erased), ``request_step`` records a step (record), nothing else."""
        operation = RIGHTS_OPERATION.get(purpose)
        if operation is None:
            raise BadInput(
                "purpose: the purpose of a subject's request",
                hint=f"one of: {', '.join(RIGHTS_OPERATION)}",
            )
        access, requester = self._acting(access, None)
        self.authorize(access, operation, site=requester.id, purpose=purpose)
        node = self.node
        assert node is not None
        site = self._sites[node]
        store = self.store(node)
        step = body.get("step")
        if writes != (step in ("record", "block", "lift")):
            raise BadInput(
                "step: holdings or erased (subject), record, block or lift (request_step)"
            )
        if step in ("block", "lift"):
            return self._block_here(body, step, purpose, access, requester.id)
        if step == "record":
            subject = body.get("subject")
            if subject is not None and not (
                isinstance(subject, str) and _SUBJECT.fullmatch(subject)
            ):
                raise BadInput("subject: a subject id of this site")
            event = AuditEvent(
                action="request", site=node, purpose=purpose, subject=subject,
                requester=requester.id, client=access.client,
                detail=_plain_detail(body.get("detail")), at=self.clock().isoformat(),
            )  # fmt: skip
            with store.transaction() as tx:
                rows = self.ledger(node).append(tx, [event])
                answer = {"site": node, "seq": rows[0].seq}
                keep_reply(tx, node, answer)
            return answer
        if step not in ("holdings", "erased"):
            raise BadInput("step: holdings, erased or record")
        subjects = body.get("subjects")
        if not (
            isinstance(subjects, list)
            and len(subjects) <= 100
            and all(isinstance(s, str) and _SUBJECT.fullmatch(s) for s in subjects)
        ):
            raise BadInput("subjects: at most 100 subject ids")
        if step == "erased":
            request = body.get("request")
            if not (isinstance(request, str) and _CLIENT.fullmatch(request)):
                raise BadInput("request: the id of the request whose act this is")
            part = {
                "kind": "act_part", "site": node, "asker": requester.id, "request": request,
                "subjects": subjects, "entries": _erasure_entries(store, node, subjects),
            }  # fmt: skip
            return {"part": part, "signature": sign_part(self.keys.signing_key(node), part)}
        wanted = set(subjects)
        if body.get("identity") is not None:
            indexer = self._indexers[node]
            matched: set[str] | None = None
            for digest in _search_digests(body.get("identity")).values():
                found = store.get_many(store.lookup(indexer.of_search(digest)))
                mine = {r.subject_id for r in found.values() if not r.is_replica}
                matched = mine if matched is None else matched & mine
            if matched is not None and len(matched) == 1:  # every identity, one person
                wanted |= matched
        colls = self.config.model.collections
        out = []
        for subject in sorted(wanted):
            records = store.subject_records(subject)
            if not records:
                continue
            primaries = [r for r in records if not r.is_replica and r.collection in colls]
            laws: list[list[str]] = []
            if primaries:
                residency = self._residency(site, primaries[0])
                laws = [
                    [j.pack, j.coverage]
                    for j in self.engine.jurisdictions(residency)
                    if j.coverage != "none"
                ]
            out.append(
                {
                    "site": node, "country": site.country, "subject": subject,
                    "records": sum(1 for r in records if not r.is_replica),
                    "copies": sum(1 for r in records if r.is_replica),
                    "primaries": [
                        {"record": r.record_id, "collection": r.collection,
                         "categories": sorted(set(self._field_categories(r).values()))}
                        for r in primaries
                    ],
                    "laws": laws,
                }
            )  # fmt: skip
        if out:  # what the peer learns of each subject (ids, categories, laws) is a read here
            events = [
                AuditEvent(
                    action="request", site=node, purpose=purpose, subject=h["subject"],
                    requester=requester.id, client=access.client,
                    detail={"step": "holdings", "operation": "node_subject",
                            "records": h["records"], "copies": h["copies"]},
                    at=self.clock().isoformat(),
                )
                for h in out
            ]  # fmt: skip
            self.ledger(node).append_now(store, events)
        return {"holdings": out}

    def _block_here(
        self, body: Mapping[str, Any], step: str, purpose: str, access: Access, requester: str
    ) -> dict[str, Any]:
        """A peer's block of a subject of this node's site (``step`` block), or its lifting
        (lift): decided here (the caller was checked for the request's purpose, which must
        be the purpose of the block's kind; a restriction keeps only the bases this node's
        own packs allow too), written with its audit entry in one transaction of this
        node's store, the answer kept there for a retry."""
        from domicile.rights.blocks import BLOCKING, _change_site, bases_here, unblock
        from domicile.rights.service import PURPOSE

        node = self.node
        assert node is not None
        kind, request, subject = (_an_id(body, n) for n in ("kind", "request", "subject"))
        if kind not in BLOCKING or purpose != PURPOSE[kind]:
            raise BadInput(
                "kind: restriction or withdrawal, with the purpose of its request",
                hint=f"{PURPOSE['restriction']} or {PURPOSE['withdrawal']}",
            )
        records = self.store(node).subject_records(subject)
        if not records:
            raise NotFound(f"node {node!r} holds no subject of that id", hint="ask its home node")
        req = {"id": request, "kind": kind}
        out: dict[str, Any] = {}

        def keep(tx: StoreTransaction, seq: int, result: bool | tuple[bool, int]) -> None:
            changed, requeued = result if isinstance(result, tuple) else (result, 0)
            out.update(site=node, subject=subject, seq=seq, changed=int(changed), requeued=requeued)
            keep_reply(tx, node, dict(out))

        if step == "lift":
            # Only the node whose request placed a block lifts it (the request is kept
            # there); a block gone already is a lift done before (a rerun).
            placed = [b for b in self.store(node).blocks([subject])
                      if (b.request_id, b.kind) == (request, kind)]  # fmt: skip
            if placed and not str(placed[0].by).startswith(f"node:{requester}/"):
                self._audit_refusal(
                    AuditEvent(
                        action="refuse", site="", purpose=purpose, subject=subject,
                        requester=requester, client=access.client,
                        detail={"operation": "request_step", "step": "lift", "request": request,
                                "reason": "not_its_block"},
                    )
                )  # fmt: skip
                raise Forbidden(
                    f"the block of request {request} was not placed by node {requester!r}",
                    hint="lift it from the node where the request was opened",
                )
            _change_site(
                self, node, subject, req, "lift", access.client,
                lambda tx: unblock(self, tx, node, subject, kind, request),
                requester=requester, answer=keep, block=kind,
            )  # fmt: skip
            return out
        since = body.get("since")
        asked = {name: _names(body.get(name)) for name in ("allows", "rules")}
        if not (isinstance(since, str) and _WORD.fullmatch(since)):
            raise BadInput("since: a time")
        allows: tuple[str, ...] = ()
        rules: tuple[str, ...] = ()
        if kind == "restriction":  # never more than the rules named, nor this node's own
            holding = {
                "site": node, "country": self._sites[node].country, "subject": subject,
                "records": sum(1 for r in records if not r.is_replica),
            }  # fmt: skip
            allows, rules = bases_here(self, holding, access, asked["allows"], asked["rules"])
        block = SubjectBlock(subject, kind, request, since, access.client, allows, rules)  # type: ignore[arg-type]
        _change_site(
            self, node, subject, req, "block", access.client, lambda tx: tx.block(block),
            requester=requester, answer=keep, block=kind, allows=list(allows), rules=list(rules),
        )  # fmt: skip
        return out

    # -- writes

    def _write_placed(
        self,
        by_site: dict[str, list[Any]],
        items: Sequence[Mapping[str, Any]],
        collection: str,
        coll: Collection,
        purpose: str,
        access: Access,
    ) -> dict[int, PutResult]:
        here = {s: g for s, g in by_site.items() if self.is_here(s)}
        there = {s: g for s, g in by_site.items() if not self.is_here(s)}
        if there and access.relayed_by is not None:
            raise Conflict(
                f"these records belong at {', '.join(sorted(there))} under this node's packs, not here",
                hint="the nodes disagree about placement: check that they run the same packs",
            )
        forwarded: dict[str, list[dict[str, Any]]] = {}
        for site_id, group in there.items():
            batch = []
            for p in group:
                subject = items[p.index].get("subject")
                if not isinstance(subject, Mapping) and not (
                    isinstance(subject, Sequence) and not isinstance(subject, str)
                ):
                    raise BadInput(
                        "a record whose home is another node needs its subject evidence as a mapping or a list",
                        hint="e.g. subject={'citizenship': 'RU'}",
                    )
                batch.append(
                    {"subject": subject if isinstance(subject, Mapping) else list(subject),
                     "fields": p.fields}
                )  # fmt: skip
            forwarded[site_id] = batch
        results = (
            super()._write_placed(here, items, collection, coll, purpose, access) if here else {}
        )
        for site_id, batch in forwarded.items():
            # The record ids are chosen here: a call repeated after the home restarted (its
            # first answer lost) is refused there as existing, never written twice.
            answer = self._ask(
                site_id, "put",
                {"collection": collection, "items": batch, "record_ids": new_ids(len(batch))},
                access, purpose, writes=True,
            )  # fmt: skip
            put = parsed(site_id, answer, "records", put_from_wire)
            if len(put) != len(there[site_id]):
                raise NodeUnavailable(site_id, f"node {site_id} answered for other records")
            for p, r in zip(there[site_id], put, strict=True):
                results[p.index] = r
        return results

    def update(
        self,
        token: str,
        *,
        fields: Mapping[str, Any],
        purpose: str,
        as_site: str | None = None,
        access: Access | None = None,
    ) -> ReadResult | WriteResult:
        site, _ = self._locate(token)
        if self.is_here(site.id):
            return super().update(
                token, fields=fields, purpose=purpose, as_site=as_site, access=access
            )
        access, requester = self._acting(access, as_site)
        self.authorize(access, "records:write", site=requester.id, purpose=purpose)
        answer = self._ask(
            site.id, "update", {"token": token, "fields": dict(fields)}, access, purpose,
            writes=True,
        )  # fmt: skip
        if "record" in answer:
            return parsed(site.id, answer, "record", read_from_wire, one=True)[0]
        if answer.get("token") != token or not isinstance(answer.get("version"), int):
            raise NodeUnavailable(
                site.id, f"node {site.id} answered something that is not a node answer"
            )
        return WriteResult(token, answer["version"])

    def delete(
        self,
        token: str,
        *,
        purpose: str,
        as_site: str | None = None,
        access: Access | None = None,
    ) -> dict[str, Any]:
        site, _ = self._locate(token)
        if self.is_here(site.id):
            return super().delete(token, purpose=purpose, as_site=as_site, access=access)
        access, requester = self._acting(access, as_site)
        self.authorize(access, "records:delete", site=requester.id, purpose=purpose)
        answer = self._ask(site.id, "delete", {"token": token}, access, purpose, writes=True)
        # Checked like an erasure's answer: only what a delete answers, about its own site.
        if answer != {"deleted": True, "site": site.id, "records": 1}:
            raise NodeUnavailable(
                site.id, f"node {site.id} answered something that is not a node answer"
            )
        return {"deleted": True, "site": site.id, "records": 1}

    def erase(
        self,
        token: str,
        *,
        purpose: str = "erasure",
        as_site: str | None = None,
        access: Access | None = None,
    ) -> dict[str, Any]:
        site, _ = self._locate(token)
        if self.is_here(site.id):
            return super().erase(token, purpose=purpose, as_site=as_site, access=access)
        access, requester = self._acting(access, as_site)
        self.authorize(access, "records:erase", site=requester.id, purpose=purpose)
        answer = self._ask(site.id, "erase", {"token": token}, access, purpose, writes=True)
        copies = answer.get("copies")
        if not (
            answer.get("site") == site.id  # about its own site only
            and isinstance(answer.get("records"), int)
            and isinstance(answer.get("key_destroyed"), bool)
            and isinstance(copies, Mapping)
            and all(
                isinstance(copies.get(k), list) and all(isinstance(x, str) for x in copies[k])
                for k in ("deleted", "pending")
            )
        ):
            raise NodeUnavailable(
                site.id, f"node {site.id} answered something that is not a node answer"
            )
        return answer

    # -- witnesses: each node records the others' signed heads

    def witness(self, sites: Sequence[str] | None = None) -> Any:
        """Sign this node's log where it changed, and have every peer witness its newest
        head over the node channel (each peer checks the signature with this site's
        public key and the head's consistency with the last one it recorded, asking this
        node for the proof). ``sites`` is accepted for the SDK's signature; a node signs
        and sends only its own."""
        from domicile.audit.ledger import WitnessResult
        from domicile.vault.auditing import WitnessRound, one_round_at_a_time

        node = self.node
        assert node is not None
        out = WitnessRound()
        with one_round_at_a_time(self):
            try:
                store = self.store(node)
                ledger = self.ledger(node)
                head = ledger.sign_head(store, only_after_activity=True) or ledger.latest_head(
                    store
                )
            except SiteUnavailable:
                self.forget_store(node)
                out.unavailable.append(node)
                return out
            if head is None:
                return out
            out.heads[node] = head
            for peer in self._sites:
                if peer == node:
                    continue
                try:
                    answer = self.peers.call(peer, "witness", {"head": head.to_dict()})
                except (NodeUnavailable, SiteUnavailable):
                    out.unavailable.append(peer)
                    continue
                except DomicileError as exc:
                    if exc.code != WitnessRateLimited.code:
                        raise
                    out.unavailable.append(peer)  # it witnesses again in its next interval
                    continue
                outcome, reason = answer.get("outcome"), answer.get("reason")
                if (
                    answer.get("witness") != peer  # a witness speaks for itself only,
                    or answer.get("site") != node  # of this node's head only
                    or answer.get("size") != head.size
                    or outcome not in ("recorded", "refused")
                    or not isinstance(reason, str | None)
                ):
                    out.unavailable.append(peer)
                    continue
                out.results.append(WitnessResult(peer, node, head.size, outcome, reason))
        return out

    def _witness_peer(self, peer: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Record ``peer``'s signed head in this node's log (or the refusal of it)."""
        from domicile.audit.heads import TreeHead
        from domicile.audit.ledger import witness_head

        self._witness_allowance(peer)
        head = TreeHead.from_dict(body.get("head"), f"node {peer}'s head")
        if head.site != peer:
            raise Forbidden(f"node {peer!r} may send only its own site's heads to witness")

        def prove(size1: int, size2: int) -> list[bytes]:
            answer = self.peers.call(peer, "prove", {"from": size1, "to": size2})
            proof = answer.get("proof")
            if not isinstance(proof, list) or not all(isinstance(h, str) for h in proof):
                raise NodeUnavailable(peer, f"node {peer} answered something that is not a proof")
            try:
                return [bytes.fromhex(h) for h in proof]
            except ValueError:
                raise NodeUnavailable(
                    peer, f"node {peer} answered something that is not a proof"
                ) from None

        node = self.node
        assert node is not None
        result = witness_head(
            self.ledger(node), self.store(node), head, self.keys.verify_key(peer), prove,
            refusals_seen=self.witness_refusals,
        )  # fmt: skip
        return result.to_dict()

    def _witness_allowance(self, peer: str, op: str = "witness") -> None:
        """Count one head from ``peer`` (``op`` witness; or one ask to verify, ``op``
        verify, or for a proof, ``op`` prove) in its current interval, or refuse it (``WitnessRateLimited``, 429) when
        the interval's allowance is spent; the first refusal of an interval is audited,
        the others only counted."""
        limit, interval = {
            "witness": (self.witness_limit, self.witness_interval),
            "verify": (self.verify_limit, self.verify_interval),
            "prove": (self.prove_limit, self.prove_interval),
        }[op]
        with self._witness_lock:
            now = self.witness_clock()
            window = self._witness_windows.get((op, peer))
            if window is None or now - window[0] >= interval:
                window = self._witness_windows[(op, peer)] = [now, 0, False]
            if window[1] < limit:
                window[1] += 1
                return
            audit, window[2] = not window[2], True
            wait = window[0] + interval - now
        if audit:
            self._audit_refusal(
                AuditEvent(
                    action="refuse", site="", requester=peer, client=f"node:{peer}",
                    detail={"operation": f"node_{op}", "reason": "rate_limited",
                            "limit": limit, "interval": interval},
                )
            )  # fmt: skip
        raise WitnessRateLimited(peer, limit, interval, wait, op=op)

    def _prove(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """A consistency proof between two sizes of this node's log (asked by a witness)."""
        size1, size2 = body.get("from"), body.get("to")
        if not (isinstance(size1, int) and isinstance(size2, int) and 0 < size1 <= size2):
            raise BadInput("from and to: sizes of the log, 0 < from <= to")
        node = self.node
        assert node is not None
        store = self.store(node)
        newest = self.ledger(node).latest_head(store)
        if newest is None or size2 > newest.size:  # proofs only up to a head it signed
            raise BadInput("to: larger than this node's newest signed head")
        proof = self.ledger(node).consistency(store, size1, size2, use_nodes=False)
        return {"proof": [h.hex() for h in proof]}

    # -- an erasure reaches the copies at once, where their nodes answer

    def erase_copies_at(self, site_id: str, subject: str) -> None:
        """Have ``site_id``'s node erase this node's subject's copies there (as a
        replication batch of one erasure; the outbox item stays if it does not answer)."""
        if self.is_here(site_id):
            return
        body: dict[str, Any] = {"home": self.node, "copies": [], "remove": {}, "erase": [subject]}
        self.peers.call(site_id, "replica", body, idempotency_key=f"erase-{subject}")

    # -- parity: a copy's primary, described without its values

    def primary_meta(self, home: str, record_ids: Sequence[str]) -> dict[str, Any]:
        if self.is_here(home):
            return super().primary_meta(home, record_ids)
        try:
            answer = self.peers.call(home, "primaries", {"records": list(record_ids)})
        except NodeUnavailable as exc:
            raise SiteUnavailable(home, exc.message) from None
        out: dict[str, Any] = {}
        for rid, meta in (answer.get("primaries") or {}).items():
            if rid in record_ids and isinstance(meta, Mapping):
                out[rid] = PrimaryMeta(int(meta["version"]), tuple(map(str, meta["fields"])))
        return out

    def _primaries_for(self, peer: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """The version and field names (never values) of this node's primaries among
        ``records``, of collections that copy to the peer's site: what its parity check
        compares its copies with."""
        ids = body.get("records")
        if (
            not isinstance(ids, list)
            or len(ids) > 1000
            or not all(isinstance(r, str) and len(r) == 32 for r in ids)
        ):
            raise BadInput("records: at most 1000 record ids")
        node = self.node
        assert node is not None
        copied_to_peer = {
            name for name, coll in self.config.model.collections.items()
            if any(t.to == peer for t in coll.replicate)
        }  # fmt: skip
        found = self.store(node).get_many(ids)
        return {
            "primaries": {
                rid: {"version": r.version, "fields": list(r.field_names)}
                for rid, r in found.items()
                if not r.is_replica and r.collection in copied_to_peer
            }
        }

    # -- answering a peer

    def _node_call(self, peer: str, op: str, body: Mapping[str, Any]) -> dict[str, Any]:
        if peer == self.node or peer not in self._sites:
            raise Forbidden(f"{peer!r} is not a peer node of this deployment")
        if op == "replica":
            from domicile.federation.replication import receive

            return receive(self, peer, body)
        if op == "witness":
            return self._witness_peer(peer, body)
        if op == "primaries":
            return self._primaries_for(peer, body)
        if op == "verify":
            from domicile.federation.verify import answer

            self._witness_allowance(peer, "verify")
            return answer(self, peer, body)
        self._witness_allowance(peer, "prove")
        return self._prove(body)

    def answer_peer(self, peer: str, op: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Do what ``peer`` (verified by its certificate) asks for its caller, here, as a
        caller acting from the peer's site; the answer is JSON."""
        if op not in OPERATIONS:
            raise NotFound(f"no node operation {op!r}")
        if not isinstance(body, Mapping):
            raise BadInput("a node call's body is a JSON object")
        if op in NODE_OPERATIONS:  # the peer node itself, for no caller
            try:
                return self._node_call(peer, op, body)
            except Forbidden as exc:  # what is not the peer's: audited here, as a caller's is
                self._audit_refusal(
                    AuditEvent(
                        action="refuse", site="", requester=peer if peer in self._sites else None,
                        client=f"node:{peer}",
                        detail={"operation": f"node_{op}", "reason": "not_its_own",
                                "refused_because": exc.message},
                    )
                )  # fmt: skip
                raise
        access = self.relayed(peer, body)
        purpose = body.get("purpose")
        if not isinstance(purpose, str):
            raise BadInput("purpose: a string")

        def text(name: str) -> str:
            value = body.get(name)
            if not isinstance(value, str):
                raise BadInput(f"{name}: a string")
            return value

        def mapping(name: str) -> dict[str, Any]:
            value = body.get(name)
            if not isinstance(value, Mapping):
                raise BadInput(f"{name}: an object")
            return dict(value)

        if op in ("get", "update", "delete", "erase"):
            site, _ = self._locate(text("token"))
            if not self.is_here(site.id):
                raise NotFound(
                    f"node {self.node!r} does not hold that record", hint="ask its home node"
                )
        if op == "get":
            return {"record": read_to_wire(self.get(text("token"), purpose=purpose, access=access))}
        if op == "update":
            r = self.update(text("token"), fields=mapping("fields"), purpose=purpose, access=access)
            return answer_of(op, r)
        if op == "delete":
            return self.delete(text("token"), purpose=purpose, access=access)
        if op == "erase":
            return self.erase(text("token"), purpose=purpose, access=access)
        if op in ("subject", "request_step"):
            return self._subject_for(body, purpose, access, writes=op == "request_step")
        if op == "find":
            found = self.find_searched(
                text("collection"), _search_digests(body.get("search")), purpose=purpose,
                access=access,
            )  # fmt: skip
            return {
                "records": [read_to_wire(r) for r in found.records],
                "refused": found.refused,
                "unavailable": found.unavailable,
            }
        items = body.get("items")
        if not isinstance(items, list):
            raise BadInput("items: a list")
        ids = body.get("record_ids")
        if ids is not None and not isinstance(ids, list):
            raise BadInput("record_ids: a list")
        results = self.put_many(
            text("collection"), items, purpose=purpose, access=access, record_ids=ids
        )
        return answer_of(op, results)


def _search_digests(raw: Any) -> dict[str, bytes]:
    """A peer's ``search``: field name to a search digest in hex (never a value)."""
    want = 2 * SEARCH_BYTES
    if not (
        isinstance(raw, Mapping)
        and 0 < len(raw) <= 64
        and all(
            isinstance(k, str) and isinstance(v, str) and len(v) == want and _HEX.fullmatch(v)
            for k, v in raw.items()
        )
    ):
        raise BadInput(
            f"search: field names to search digests ({want} lower-case hex digits each)",
            hint="a node sends search digests, never the values searched for",
        )
    return {k: bytes.fromhex(v) for k, v in raw.items()}


def _holding_from_wire(d: Any) -> dict[str, Any]:
    """A peer's holding of a subject, checked field by field (nothing else is kept)."""
    words = (str,)
    primaries = [
        {
            "record": p["record"] if isinstance(p["record"], words) else _bad(),
            "collection": p["collection"] if isinstance(p["collection"], words) else _bad(),
            "categories": [c if isinstance(c, words) else _bad() for c in p["categories"]],
        }
        for p in d["primaries"]
    ]
    laws = [[str(pack), str(coverage)] for pack, coverage in d["laws"]]
    counts = [d["records"], d["copies"]]
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts):
        _bad()
    if not (isinstance(d["subject"], str) and isinstance(d["country"], str)):
        _bad()
    return {
        "site": d["site"], "country": d["country"], "subject": d["subject"],
        "records": d["records"], "copies": d["copies"], "primaries": primaries, "laws": laws,
    }  # fmt: skip


def _erasure_entries(store: Any, site: str, subjects: Sequence[str]) -> list[dict[str, Any]]:
    """The entries of this site's log that erased these subjects (an erasure of the
    subject or of its copies: its key destroyed), as a destruction act lists them."""
    out = []
    for subject in subjects:
        for row in store.audit_tagged('{"action":"erase"', 2**62, containing=subject):
            entry = json.loads(row.payload)
            detail = entry.get("detail") or {}
            if entry.get("subject") == subject and detail.get("key_destroyed") is True:
                out.append(
                    {
                        "site": site, "seq": row.seq, "hash": row.hash.hex(), "action": "erase",
                        "at": entry.get("at"),
                        "records": detail.get("records", detail.get("copies")),
                    }
                )  # fmt: skip
    return out


def _entry_from_wire(d: Any) -> dict[str, Any]:
    """A peer's log entry in a destruction act's extract, checked field by field."""
    seq, digest, at, records = d["seq"], d["hash"], d["at"], d["records"]
    if not (
        isinstance(seq, int)
        and not isinstance(seq, bool)
        and seq > 0
        and isinstance(digest, str)
        and len(digest) == 64
        and _HEX.fullmatch(digest)
        and (at is None or (isinstance(at, str) and _WORD.fullmatch(at)))
        and (records is None or (isinstance(records, int) and not isinstance(records, bool)))
    ):
        _bad()
    return {"site": d["site"], "seq": seq, "hash": digest, "action": "erase", "at": at,
            "records": records}  # fmt: skip


def _bad() -> Any:
    raise ValueError("not a node answer")


def _an_id(body: Mapping[str, Any], name: str) -> str:
    """``body[name]``: an id or a name (it goes into this node's audit: nothing else)."""
    value = body.get(name)
    if not (isinstance(value, str) and _CLIENT.fullmatch(value)):
        raise BadInput(f"{name}: an id")
    return value


def _names(raw: Any) -> list[str]:
    """A peer's list of names (bases, rules): at most 64 short words."""
    if not (
        isinstance(raw, list)
        and len(raw) <= 64
        and all(isinstance(w, str) and _WORD.fullmatch(w) for w in raw)
    ):
        raise BadInput("allows and rules: lists of names")
    return raw


def _count(n: Any) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 0


def _plain_detail(raw: Any) -> dict[str, Any]:
    """The detail of a peer's request step, for this node's audit: names, numbers and
    short words (ids, dates, site and field names), never room for a value."""

    def plain(v: Any) -> bool:
        return (
            v is None
            or isinstance(v, bool | int)
            or (isinstance(v, str) and bool(_WORD.fullmatch(v)))
        )

    if not (
        isinstance(raw, Mapping)
        and len(raw) <= 32
        and all(
            isinstance(k, str)
            and _KEY.fullmatch(k)
            and (plain(v) or (isinstance(v, list) and len(v) <= 64 and all(map(plain, v))))
            for k, v in raw.items()
        )
    ):
        raise BadInput(
            "detail: names, numbers and short words only (ids, dates, site and field names)"
        )
    return dict(raw)


# The calls that change something: only these are answered again from what was kept (a
# read is safe to do twice, and its answer, which holds values, is not kept).
WRITES = frozenset({"put", "update", "delete", "erase", "request_step", "replica"})


class Replies:
    """A node's first answer to each idempotency key of each peer's writing call, kept for
    a while (in memory, and with ``persist`` in the node's site store as well), so a call
    the channel repeats (its answer was lost) is answered, not done twice. An answer is kept for the peer and the operation that made it: another peer's
    call, or another operation, with the same key is its own call. (The body is not part
    of it: a replication batch repeated after a lost answer may be planned afresh.)"""

    def __init__(
        self,
        keep: float = 600.0,
        most: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        *,
        persist: StoredReplies | None = None,
    ) -> None:
        self.keep, self.most, self.clock = keep, most, clock
        self.persist = persist  # the answers kept in the node's site store as well
        self._seen: OrderedDict[tuple[str, str, str], tuple[float, int, dict[str, Any]]]
        self._seen = OrderedDict()
        self._lock = threading.Lock()
        self._busy: dict[tuple[str, str, str], threading.Lock] = {}

    def once(
        self,
        peer: str,
        key: str | None,
        work: Callable[[], tuple[int, dict[str, Any]]],
        *,
        op: str,
    ) -> tuple[int, dict[str, Any]]:
        if key is None or op not in WRITES:
            return work()
        slot = (peer, op, key)
        with self._lock:
            gate = self._busy.setdefault(slot, threading.Lock())
        try:
            with gate:  # the same key twice at once: the second waits for the first's answer
                with self._lock:
                    now = self.clock()
                    while self._seen and next(iter(self._seen.values()))[0] < now - self.keep:
                        self._seen.popitem(last=False)
                    hit = self._seen.get(slot)
                if hit is not None:
                    return hit[1], hit[2]
                pending: PendingReply | None = None
                if self.persist is not None:  # answered before this process started?
                    kept = self.persist.get(peer, op, key)
                    if kept is not None:
                        return kept
                    pending = self.persist.pending(peer, op, key)
                # The write keeps its answer in its own transaction (``pending``): a crash
                # after it committed leaves the answer for the retry, never a write without
                # one.
                context = PENDING_REPLY.set(pending)
                try:
                    status, answer = work()
                finally:
                    PENDING_REPLY.reset(context)
                if status < 500:  # a site that was down may answer a retry
                    with self._lock:
                        self._seen[slot] = (self.clock(), status, answer)
                        while len(self._seen) > self.most:
                            self._seen.popitem(last=False)
                    # What wrote nothing (a refusal, an operation that had no write to
                    # carry its answer) is kept on its own: a crash before it loses nothing.
                    if self.persist is not None and not (
                        status == 200 and pending and pending.kept
                    ):
                        self.persist.put(peer, op, key, status, answer)
                return status, answer
        finally:
            with self._lock:
                self._busy.pop(slot, None)


class StoredReplies:
    """``Replies``' answers kept in the node's own site store too (the table
    ``node_replies``, made by the store's schema upgrade like any other), for ``keep``
    seconds of wall-clock time: a node restarted between doing a peer's write and the
    peer's retry answers the retry, rather than doing the write again.

    What is kept: the SHA-256 of the idempotency key, the peer, the operation, the status
    and the answer with no value in it. put, delete, erase, replica and subject answers hold
    none (tokens, decisions, counts, opaque ids; a put's join tokens are keyed tokens);
    an update's read-back (the record as its caller may read it) is kept as its token and
    version only, so a retry answered from the store gets the version, as a caller
    without ``records:read`` does. Error answers never hold values. A store that does not
    answer keeps nothing (the answer in memory still serves retries)."""

    def __init__(
        self, vault: FederatedDomicile, keep: float = 600.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.vault, self.keep, self.clock = vault, keep, clock

    @staticmethod
    def _digest(key: str) -> bytes:
        return hashlib.sha256(key.encode()).digest()

    def get(self, peer: str, op: str, key: str) -> tuple[int, dict[str, Any]] | None:
        node = self.vault.node
        assert node is not None
        try:
            row = self.vault.store(node).reply(peer, op, self._digest(key), self.clock())
        except SiteUnavailable:
            self.vault.forget_store(node)
            return None
        if row is None:
            return None
        return row[0], orjson.loads(row[1])

    def keep_in(
        self, tx: StoreTransaction, peer: str, op: str, key: str, status: int,
        answer: dict[str, Any],
    ) -> None:  # fmt: skip
        """Keep an answer in ``tx``: the write's own transaction, or one of its own."""
        kept = without_values(op, answer)
        now = self.clock()
        tx.keep_reply(
            peer, op, self._digest(key), status, orjson.dumps(kept).decode(), now + self.keep, now
        )

    def pending(self, peer: str, op: str, key: str) -> PendingReply:
        """The answer of this call, for its write to keep in its own transaction."""
        node = self.vault.node
        assert node is not None
        return PendingReply(
            node, lambda tx, result: self.keep_in(tx, peer, op, key, 200, answer_of(op, result))
        )

    def put(self, peer: str, op: str, key: str, status: int, answer: dict[str, Any]) -> None:
        node = self.vault.node
        assert node is not None
        try:
            with self.vault.store(node).transaction() as tx:
                self.keep_in(tx, peer, op, key, status, answer)
        except SiteUnavailable:
            self.vault.forget_store(node)


def without_values(op: str, answer: dict[str, Any]) -> dict[str, Any]:
    """A node's answer as it may be kept at rest: an update's read-back reduced to the
    token and version (``WriteResult``); every other answer as it is (it holds no value)."""
    record = answer.get("record") if op == "update" else None
    if isinstance(record, Mapping):
        return {"token": record.get("token"), "version": record.get("version")}
    return answer
