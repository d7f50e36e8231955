"""The audit log of a site: hash-chained entries, a Merkle tree over them, signed tree heads,
witnesses, proofs and verification.

Entry ``n`` stores its payload (canonical JSON, never plaintext personal data), the hash of
entry ``n-1`` and its own hash: SHA-256 over a domain tag, the previous hash, ``n`` and the
payload. Editing an entry breaks its hash; deleting, inserting or reordering entries breaks
the sequence or the link to the previous hash.

The entries are also the leaves of a Merkle tree in the Certificate Transparency model
(RFC 9162; ``merkle.py``): leaf ``n-1`` is the hash of entry ``n``. A **tree head** signs
the tree's size and root with the site's Ed25519 key (``heads.py``). Heads are signed
whenever the log crosses a multiple of ``HEAD_EVERY`` entries and in every witness round.
The other sites of the deployment **witness** each head: they check a consistency proof
from the last head they hold and record the new one in their own logs. So a chain that
is rewritten with recomputed hashes, or cut back, no longer matches what the witnesses
(and a heads file kept offline) hold, whoever wrote the site's disk.

Verification reads only: it never signs or records anything.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from domicile.audit.heads import TreeHead, sign_head
from domicile.audit.merkle import (
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    split,
)
from domicile.crypto.keys import KeyProvider
from domicile.crypto.signing import verify
from domicile.errors import BadInput, DomicileError, ExitCode, NotFound
from domicile.stores.base import (
    AuditRow,
    HeadRow,
    SiteStore,
    StoreTransaction,
    TransferCount,
    WitnessRow,
    entry_hash,
)

Action = Literal[
    "write", "read", "update", "delete", "erase", "refuse", "transfer", "rotate", "filing",
    "witness", "disclose_masked", "setup", "upgrade", "request", "attest",
]  # fmt: skip
# A tree head is signed whenever the log crosses a multiple of this many entries (and in
# every witness round).
HEAD_EVERY = 1000
CHECKPOINT_EVERY = HEAD_EVERY  # the name before tree heads
# The roots of complete subtrees of 2**NODE_LEVEL leaves and more are kept (``tree_nodes``),
# so a proof reads a few dozen of them and at most a few hundred entries.
NODE_LEVEL = 8
PAGE = 1000
WITNESS_PREFIX = '{"action":"witness"'  # canonical JSON puts "action" first
# Canonical JSON: sorted keys, no spaces, UTF-8 kept as is. One encoder, made once.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class AuditEvent:
    """What happened. Ids, names and decisions only: never a field value or evidence."""

    action: Action
    site: str
    purpose: str | None = None
    collection: str | None = None
    record: str | None = None
    subject: str | None = None
    # An entry about many records (the writes of a batch) names every one of them, and
    # their subjects in the same order.
    records: tuple[str, ...] = ()
    subjects: tuple[str, ...] = ()
    requester: str | None = None  # the site the operation acted from
    client: str | None = None  # who did it: a client id, or the operator ("cli:USER")
    decision: str | None = None
    rules: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()
    detail: dict[str, Any] = field(default_factory=dict)
    at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())

    def payload(self) -> str:
        data = {
            k: v for k in _FIELDS if (v := getattr(self, k)) is not None and v != () and v != {}
        }
        return _CANONICAL.encode(data)

    @staticmethod
    def canonical(data: dict[str, Any]) -> str:
        """A payload's JSON text from its decoded form (as ``payload`` encodes it)."""
        return _CANONICAL.encode(data)


_FIELDS = tuple(f.name for f in fields(AuditEvent))
_SLOT = "\x00domicile-slot-{}\x00"


class PayloadTemplate:
    """The payloads of many events that differ only in a few fields, without building and
    encoding each event: ``render`` gives exactly ``replace(event, **values).payload()``.

    ``vary`` names the fields that change from event to event (top-level, or
    ``"detail.KEY"``); each rendered value must be a string or an int (never None, which
    would drop the key from the payload).
    """

    __slots__ = ("_parts", "_vary")

    def __init__(self, event: AuditEvent, vary: Sequence[str]) -> None:
        top: dict[str, Any] = {}
        detail = dict(event.detail)
        for i, name in enumerate(vary):
            if name.startswith("detail."):
                detail[name.removeprefix("detail.")] = _SLOT.format(i)
            else:
                top[name] = _SLOT.format(i)
        text = replace(event, detail=detail, **top).payload()
        parts: list[str] = []
        order: list[int] = []
        rest = text
        while True:
            found = [(rest.find(_ENCODED[i]), i) for i in range(len(vary))]
            found = [(at, i) for at, i in found if at >= 0]
            if not found:
                break
            at, i = min(found)
            parts.append(rest[:at])
            order.append(i)
            rest = rest[at + len(_ENCODED[i]) :]
        parts.append(rest)
        if sorted(order) != list(range(len(vary))):
            raise ValueError("every varying field must appear once in the payload")
        self._parts = tuple(parts)
        self._vary = tuple(order)

    def render(self, *values: str | int) -> str:
        """The payload with ``values`` (in the order of ``vary``) in their places."""
        parts = self._parts
        out = [parts[0]]
        for n, i in enumerate(self._vary):
            value = values[i]
            if isinstance(value, str):
                out.append(_encode_string(value))
            elif isinstance(value, int) and not isinstance(value, bool):
                out.append(str(value))
            else:
                raise TypeError("a varying audit field must be a string or an int")
            out.append(parts[n + 1])
        return "".join(out)


_encode_string = json.encoder.encode_basestring  # what the canonical encoder uses for str
_ENCODED = [_encode_string(_SLOT.format(i)) for i in range(16)]


def checkpoint_message(site: str, seq: int, digest: bytes) -> bytes:
    """What the checkpoints of earlier versions signed (entry ``seq`` and its chain hash);
    they are still checked where a log has them."""
    return b"\x00".join((b"domicile/checkpoint/v1", site.encode(), str(seq).encode(), digest))


def leaf_of(row: AuditRow) -> bytes:
    """An entry's Merkle leaf: the leaf hash of the entry hash computed from what the entry
    holds (never the stored hash column, which an editor could leave as it was)."""
    return leaf_hash(entry_hash(row.prev_hash, row.seq, row.payload))


def is_witness_record(payload: str) -> bool:
    return payload.startswith(WITNESS_PREFIX)


class AuditError(DomicileError):
    """The log cannot be read as a log (a gap, a missing head); ``audit verify`` says more."""

    code = "audit_error"
    exit_code = ExitCode.CHECK_FAILED


@dataclass
class Problem:
    seq: int | None
    problem: str
    until: int | None = None  # the last entry the problem may concern, for a range

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seq": self.seq, "problem": self.problem}
        if self.until is not None:
            out["until"] = self.until
        return out


@dataclass(frozen=True)
class HeadClaim:
    """A signed head of the log under verification, and who holds it."""

    head: TreeHead
    holder: str  # the site keeping it, or "heads file"
    external: bool  # held outside the site (a witness or the heads file)
    key: Ed25519PublicKey

    @property
    def label(self) -> str:
        if self.holder == "heads file":
            return f"the head of size {self.head.size} in the heads file"
        if not self.external:
            return f"the head of size {self.head.size} the site signed"
        return f"the head of size {self.head.size} witnessed by {self.holder}"


@dataclass
class VerifyReport:
    site: str
    entries: int = 0
    checkpoints: int = 0
    heads: int = 0  # signed heads checked, wherever they are held
    witnesses: list[str] = field(default_factory=list)  # sites holding heads of this log
    unavailable_witnesses: list[str] = field(default_factory=list)
    heads_file: bool = False
    witnessed: int = 0  # entries covered by a head held outside the site that matches
    unwitnessed: int = 0  # operations after them (records of other sites' heads excepted)
    head_seq: int = 0
    head_hash: str = ""
    root: str = ""
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No tampering found (entries not yet witnessed are not a problem, but are not
        verified either: see ``status``)."""
        return not self.problems

    @property
    def status(self) -> str:
        if self.problems:
            return "tampered"
        if self.entries == 0:
            return "empty"
        if self.witnessed == 0:
            return "not witnessed"
        return "verified" if self.unwitnessed == 0 else "partly witnessed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "status": self.status,
            "site": self.site,
            "entries": self.entries,
            "witnessed": self.witnessed,
            "unwitnessed": self.unwitnessed,
            "witnesses": self.witnesses,
            "unavailable_witnesses": self.unavailable_witnesses,
            "heads_file": self.heads_file,
            "heads": self.heads,
            "checkpoints": self.checkpoints,
            "head": {"seq": self.head_seq, "hash": self.head_hash, "root": self.root},
            "first_bad": self.problems[0].to_dict() if self.problems else None,
            "problems": [p.to_dict() for p in self.problems],
        }


def to_head(site: str, row: HeadRow | WitnessRow) -> TreeHead:
    return TreeHead(site, row.size, row.root, row.signed_at, row.signature)


class LogTree:
    """The Merkle tree of a site's log, read from its store: subtree roots from the kept
    complete subtrees where there are some, else hashed from the entries. Read only."""

    def __init__(self, store: SiteStore, *, use_nodes: bool = True) -> None:
        self.store = store
        self.use_nodes = use_nodes
        self._blocks: dict[int, list[bytes]] = {}
        self._nodes: dict[tuple[int, int], bytes | None] = {}

    def _leaf(self, index: int) -> bytes:
        block = index >> NODE_LEVEL
        leaves = self._blocks.get(block)
        if leaves is None:
            first = (block << NODE_LEVEL) + 1
            leaves = []
            for row in self.store.audit(first):
                if row.seq != first + len(leaves):
                    raise AuditError(
                        f"site {self.store.site_id!r}: the audit log has a gap at entry "
                        f"{first + len(leaves)}",
                        hint="run `domicile audit verify` for that site",
                    )
                leaves.append(leaf_of(row))
                if len(leaves) == 1 << NODE_LEVEL:
                    break
            self._blocks[block] = leaves
        offset = index - (block << NODE_LEVEL)
        if offset >= len(leaves):
            raise AuditError(f"site {self.store.site_id!r}: the audit log has no entry {index + 1}")
        return leaves[offset]

    def _node(self, level: int, idx: int) -> bytes | None:
        key = (level, idx)
        if key not in self._nodes:
            self._nodes[key] = self.store.tree_nodes([key]).get(key) if self.use_nodes else None
        return self._nodes[key]

    def subtree(self, lo: int, hi: int) -> bytes:
        """The root of leaves ``[lo, hi)``."""
        n = hi - lo
        if n == 1:
            return self._leaf(lo)
        if n & (n - 1) == 0 and lo % n == 0 and n >= 1 << NODE_LEVEL:
            level = n.bit_length() - 1
            kept = self._node(level, lo >> level)
            if kept is not None:
                return kept
        k = split(n)
        return node_hash(self.subtree(lo, lo + k), self.subtree(lo + k, hi))


class AuditLedger:
    """Appends to one site's log, signs its tree heads, proves and verifies it."""

    def __init__(self, site_id: str, keys: KeyProvider) -> None:
        self.site_id = site_id
        self.keys = keys
        self.appended = False  # this process added to the log (so it should be witnessed)

    # --- appending ----------------------------------------------------------------------

    def append(self, tx: StoreTransaction, events: Sequence[AuditEvent]) -> list[AuditRow]:
        """Chain ``events`` after the head, inside the caller's transaction. Signs a tree
        head whenever the log crosses a multiple of ``HEAD_EVERY``."""
        return self.append_payloads(tx, [ev.payload() for ev in events])

    def append_payloads(
        self,
        tx: StoreTransaction,
        payloads: Sequence[str],
        *,
        chain: Callable[[Sequence[str]], list[AuditRow]] | None = None,
    ) -> list[AuditRow]:
        """``append`` for payloads already encoded (``AuditEvent.payload`` or a
        ``PayloadTemplate``). ``chain``: what appends them in ``tx`` (``tx.chain`` unless
        given; ``StoreTransaction.write_batch`` sends them with the rows they name)."""
        rows = (chain or tx.chain)(payloads)
        self.appended = True
        if self._crosses(rows):
            self._sign(tx)
        return rows

    def append_now(self, store: SiteStore, events: Sequence[AuditEvent]) -> list[AuditRow]:
        """Chain ``events`` in a transaction of their own (one round trip where the
        backend can), e.g. the entry for a read."""
        return self.append_payloads_now(store, [ev.payload() for ev in events])

    def append_payloads_now(
        self,
        store: SiteStore,
        payloads: Sequence[str],
        *,
        transfer: TransferCount | None = None,
        read: bool = False,
    ) -> list[AuditRow]:
        """``append_now`` for encoded payloads; with ``transfer``, the year-to-date count
        of a transfer commits together with its entries. ``read``: these are the entries
        of a read (see ``SiteStore.chain_now``)."""
        if transfer is None:
            rows = store.chain_now(payloads, read=read)
        else:
            rows = store.chain_transfer_now(payloads, transfer, read=read)
        self.appended = True
        if self._crosses(rows):
            with store.transaction() as tx:
                self._sign(tx)
        return rows

    def append_group_now(
        self, store: SiteStore, payloads: Sequence[str], transfers: Sequence[TransferCount]
    ) -> list[AuditRow]:
        """The entries of a group of reads (``domicile.audit.group``), with their transfer
        counts, in one transaction: one entry goes the single-entry way (one round trip)."""
        if len(payloads) == 1:
            return self.append_payloads_now(
                store, payloads, transfer=transfers[0] if transfers else None, read=True
            )
        rows = store.chain_group_now(payloads, transfers, read=True)
        self.appended = True
        if self._crosses(rows):
            with store.transaction() as tx:
                self._sign(tx)
        return rows

    @staticmethod
    def _crosses(rows: Sequence[AuditRow]) -> bool:
        return bool(rows) and (rows[0].seq - 1) // HEAD_EVERY != rows[-1].seq // HEAD_EVERY

    # --- tree heads ---------------------------------------------------------------------

    def sign_head(self, store: SiteStore, *, only_after_activity: bool = False) -> TreeHead | None:
        """Sign the log's current size and root, unless the newest head already covers
        it; returns the newest head (None for an empty log). ``only_after_activity``: do
        not sign when every entry since the newest head records another site's head (so
        witness rounds alone do not keep the logs growing)."""
        with store.transaction() as tx:
            return self._sign(tx, only_after_activity=only_after_activity)

    def latest_head(self, store: SiteStore) -> TreeHead | None:
        heads = store.heads()
        return to_head(self.site_id, heads[-1]) if heads else None

    def _sign(self, tx: StoreTransaction, *, only_after_activity: bool = False) -> TreeHead | None:
        size, _ = tx.audit_head()  # locked until the transaction ends: no append between
        latest = tx.latest_head()
        if size == 0:
            return None
        if latest is not None and latest.size >= size:
            return to_head(self.site_id, latest)
        nodes: list[tuple[int, int, bytes]] = []
        compact = self._compact(tx, latest)
        compact.on_node = lambda level, idx, h: nodes.append((level, idx, h))
        compact.min_level = NODE_LEVEL
        activity = False
        while compact.size < size:
            rows = tx.audit_rows(compact.size + 1, min(size, compact.size + PAGE))
            for row in rows:
                if row.seq != compact.size + 1:
                    raise AuditError(
                        f"site {self.site_id!r}: the audit log has a gap at entry {compact.size + 1}",
                        hint="run `domicile audit verify`; no head was signed",
                    )
                compact.append(leaf_of(row))
                activity = activity or not is_witness_record(row.payload)
            if not rows:
                raise AuditError(
                    f"site {self.site_id!r}: the audit log ends before entry {compact.size + 1}"
                )
        if only_after_activity and not activity and latest is not None:
            return to_head(self.site_id, latest)
        root = compact.root()
        head = sign_head(self.keys.signing_key(self.site_id), self.site_id, size, root)
        tx.add_head(HeadRow(size, root, head.signed_at, head.signature, compact.pack()))
        tx.add_tree_nodes(nodes)
        return head

    def _compact(self, tx: StoreTransaction, latest: HeadRow | None) -> CompactRange:
        """The compact range at the newest head, checked against its signed root; rebuilt
        from the entries when it does not match (or there is no head yet)."""
        if latest is not None:
            key = self.keys.verify_key(self.site_id)
            try:
                compact = CompactRange.unpack(latest.size, latest.compact)
            except ValueError:
                compact = None
            if (
                compact is not None
                and compact.root() == latest.root
                and to_head(self.site_id, latest).verifies(key)
            ):
                return compact
        return CompactRange()

    # --- proofs -------------------------------------------------------------------------

    def prove(self, store: SiteStore, seq: int) -> tuple[AuditRow, TreeHead, list[bytes]]:
        """Entry ``seq``, the newest signed head covering it and its inclusion proof."""
        head = self.latest_head(store)
        if seq < 1:
            raise BadInput("entries are numbered from 1")
        if head is None or head.size < seq:  # no proof of it (yet): as a missing record, 404
            raise NotFound(
                f"entry {seq} of site {self.site_id!r} is not covered by a signed tree head yet",
                hint="run `domicile audit witness` to sign and witness the newest entries",
            )
        row = next(iter(store.audit(seq)), None)
        if row is None or row.seq != seq:
            raise AuditError(f"site {self.site_id!r} has no audit entry {seq}")
        return row, head, inclusion_proof(seq - 1, head.size, LogTree(store).subtree)

    def consistency(
        self, store: SiteStore, size1: int, size2: int, *, use_nodes: bool = True
    ) -> list[bytes]:
        """The proof that the log at ``size2`` entries extends itself at ``size1``."""
        return consistency_proof(size1, size2, LogTree(store, use_nodes=use_nodes).subtree)

    # --- verification -------------------------------------------------------------------

    def verify(
        self,
        store: SiteStore,
        *,
        claims: Sequence[HeadClaim] = (),
        keys_of: Callable[[str], Ed25519PublicKey | None] | None = None,
    ) -> VerifyReport:
        """Walk the whole log (streamed) and check it: the chain, every signed head this
        site keeps, and every head in ``claims`` (held by witnesses or a heads file).
        ``keys_of(site)`` gives other sites' public keys, to tell records of their heads
        apart from operations in the part of the log no witness covers yet. Reads only."""
        report = VerifyReport(self.site_id)
        public = self.keys.verify_key(self.site_id)
        own = [
            HeadClaim(to_head(self.site_id, h), self.site_id, False, public) for h in store.heads()
        ]
        wanted: dict[int, list[HeadClaim]] = {}
        for claim in [*own, *claims]:
            report.heads += 1
            if claim.head.site != self.site_id or not claim.head.verifies(claim.key):
                report.problems.append(
                    Problem(None, f"{claim.label} has a bad signature (forged or altered)")
                )
                continue
            wanted.setdefault(claim.head.size, []).append(claim)
        report.witnesses = sorted({c.holder for c in claims if c.holder != "heads file"})
        report.heads_file = any(c.holder == "heads file" for c in claims)
        legacy: dict[int, list[tuple[str, bytes]]] = {}
        for cp in store.checkpoints():
            report.checkpoints += 1
            if verify(public, checkpoint_message(self.site_id, cp.seq, cp.hash), cp.signature):
                legacy.setdefault(cp.seq, []).append((f"checkpoint {cp.seq}", cp.hash))
            else:
                report.problems.append(
                    Problem(cp.seq, f"checkpoint {cp.seq} has a bad signature (forged or altered)")
                )

        compact = CompactRange()
        activity = 0  # operations so far (records of other sites' heads are not)
        activity_at: dict[int, int] = {0: 0}
        matched = 0  # the biggest size at which some head matched
        expected, prev = 1, b""
        for row in store.audit(1):
            report.entries += 1
            if row.seq != expected:
                what = (
                    f"entry {expected} is missing (deleted) or entries were reordered"
                    if row.seq > expected
                    else f"entry {row.seq} appears out of order or twice (inserted or reordered)"
                )
                report.problems.append(Problem(expected, what))
                break
            if row.prev_hash != prev:
                report.problems.append(
                    Problem(
                        row.seq,
                        "does not follow the entry before it (an entry was deleted, inserted or reordered)",
                    )
                )
                break
            digest = entry_hash(row.prev_hash, row.seq, row.payload)
            if digest != row.hash:
                report.problems.append(
                    Problem(row.seq, "its contents do not match its hash (edited)")
                )
                break
            compact.append(leaf_hash(digest))
            if not self._records_a_head(row.payload, keys_of):
                activity += 1
            for label, cp_hash in legacy.get(row.seq, ()):
                if cp_hash != row.hash:
                    report.problems.append(
                        Problem(row.seq, f"the chain differs from {label} (entries were rewritten)")
                    )
            claims_here = wanted.get(row.seq)
            if claims_here:
                root = compact.root()
                for claim in claims_here:
                    if claim.head.root == root:
                        if claim.external:
                            report.witnessed = max(report.witnessed, row.seq)
                            activity_at[row.seq] = activity
                        continue
                    report.problems.append(
                        Problem(
                            matched + 1,
                            f"entries {matched + 1} to {row.seq} are not what {claim.label} "
                            f"(signed {claim.head.signed_at}) commits to: the log was rewritten"
                            + (f"; entries up to {matched} still match" if matched else ""),
                            until=row.seq,
                        )
                    )
                if all(c.head.root == root for c in claims_here):
                    matched = row.seq
            expected, prev = row.seq + 1, row.hash
        report.head_seq, report.head_hash = expected - 1, prev.hex()
        report.root = compact.root().hex()
        if not report.problems:
            cut = [c for size, cs in wanted.items() if size > report.head_seq for c in cs]
            cut += [
                HeadClaim(
                    TreeHead(self.site_id, seq, b"", "", b""), f"checkpoint {seq}", False, public
                )
                for seq in legacy
                if seq > report.head_seq
            ]
            if cut:
                biggest = max(cut, key=lambda c: c.head.size)
                label = biggest.label if biggest.head.root else biggest.holder
                report.problems.append(
                    Problem(
                        report.head_seq + 1,
                        f"entries {report.head_seq + 1} to {biggest.head.size} were removed: "
                        f"{label} covers {biggest.head.size} entries",
                        until=biggest.head.size,
                    )
                )
        report.unwitnessed = activity - activity_at.get(report.witnessed, 0)
        return report

    def _records_a_head(
        self, payload: str, keys_of: Callable[[str], Ed25519PublicKey | None] | None
    ) -> bool:
        """Whether an entry is a witness's record of another site's valid signed head
        (which proves nothing about this site's own operations)."""
        if keys_of is None or not is_witness_record(payload):
            return False
        try:
            detail = json.loads(payload)["detail"]
            head = TreeHead.from_dict(detail["head"])
        except (KeyError, TypeError, ValueError):
            return False
        key = keys_of(head.site)
        return key is not None and head.site != self.site_id and head.verifies(key)


# --- witnessing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WitnessResult:
    """What a witness did with a head: ``recorded``, ``known`` (already held), or
    ``refused`` (with the reason: a fork, a rollback or a bad signature)."""

    witness: str
    site: str
    size: int
    outcome: Literal["recorded", "known", "refused"]
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "witness": self.witness,
            "site": self.site,
            "size": self.size,
            "outcome": self.outcome,
        }
        if self.reason:
            out["reason"] = self.reason
        return out


def witness_head(
    witness: AuditLedger,
    store: SiteStore,
    head: TreeHead,
    key: Ed25519PublicKey,
    prove: Callable[[int, int], Sequence[bytes]],
    *,
    refusals_seen: set[tuple[str, str, int, bytes]] | None = None,
) -> WitnessResult:
    """``witness`` (the ledger of the witnessing site, whose store is ``store``) records
    another site's signed ``head`` in its log, after checking the head's signature with
    ``key`` and, when it already holds an older head of that site, a consistency proof
    between the two (``prove(old_size, new_size)``, answered by the other site). A head
    that does not extend the last one recorded is refused, and the refusal is recorded
    (once per head and process, when ``refusals_seen`` is given) as evidence of a fork."""
    from domicile.audit.merkle import verify_consistency

    site = head.site
    with store.transaction() as tx:
        tx.audit_head()  # one witness round at a time per witness
        last = tx.latest_witnessed(site)
        reason: str | None = None
        if not head.verifies(key):
            reason = "its signature does not verify"
        elif last is not None and last.size == head.size:
            if last.root == head.root:
                return WitnessResult(witness.site_id, site, head.size, "known")
            reason = f"it differs from the head of the same size ({head.size}) recorded earlier"
        elif last is not None and last.size > head.size:
            reason = f"it is older than the head of size {last.size} recorded earlier (a rollback)"
        elif last is not None:
            proof = prove(last.size, head.size)
            if not verify_consistency(last.size, head.size, last.root, head.root, proof):
                reason = (
                    f"it does not extend the head of size {last.size} recorded earlier "
                    "(the log was rewritten or forked)"
                )
        detail: dict[str, Any] = {"head": head.to_dict()}
        if reason is None:
            rows = witness.append(tx, [AuditEvent("witness", witness.site_id, detail=detail)])
            tx.add_witnessed(
                WitnessRow(site, head.size, head.root, head.signed_at, head.signature, rows[-1].seq)
            )
            return WitnessResult(witness.site_id, site, head.size, "recorded")
        key_seen = (witness.site_id, site, head.size, head.root)
        if refusals_seen is None or key_seen not in refusals_seen:
            detail["refused"] = reason
            if last is not None:
                detail["recorded"] = {"size": last.size, "root": last.root.hex()}
            witness.append(tx, [AuditEvent("witness", witness.site_id, detail=detail)])
            if refusals_seen is not None:
                refusals_seen.add(key_seen)
        return WitnessResult(witness.site_id, site, head.size, "refused", reason)


def claims_from(
    site: str, holder: str, rows: Sequence[WitnessRow], key: Ed25519PublicKey
) -> list[HeadClaim]:
    return [HeadClaim(to_head(site, r), holder, True, key) for r in rows if r.site == site]


def head_claim(head: TreeHead, key: Ed25519PublicKey) -> HeadClaim:
    return HeadClaim(head, "heads file", True, key)


def witness_detail(payload: str) -> Mapping[str, Any] | None:
    """The detail of a witness record, or None for any other entry."""
    if not is_witness_record(payload):
        return None
    detail = json.loads(payload).get("detail")
    return detail if isinstance(detail, dict) else None
