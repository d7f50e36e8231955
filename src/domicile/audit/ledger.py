"""Hash-chained audit entries, signed checkpoints, and verification.

Entry ``n`` stores its payload (canonical JSON, never plaintext personal data), the hash of
entry ``n-1`` and its own hash: SHA-256 over a domain tag, the previous hash, ``n`` and the
payload. Editing an entry breaks its hash; deleting, inserting or reordering entries breaks
the sequence or the link to the previous hash. A checkpoint signs (``n``, hash of ``n``)
with the site's Ed25519 key; a copy of the newest checkpoint is also kept outside the
database (the anchor file), so cutting entries off the end of the chain, or rewriting the
whole chain, is detected too.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from domicile.crypto.keys import KeyProvider
from domicile.crypto.signing import sign, verify
from domicile.stores.base import (
    AuditRow,
    Checkpoint,
    SiteStore,
    StoreTransaction,
    TransferCount,
    entry_hash,
)

Action = Literal[
    "write", "read", "update", "delete", "erase", "refuse", "transfer", "rotate", "filing"
]
CHECKPOINT_EVERY = 1000
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
    requester: str | None = None
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
    return b"\x00".join((b"domicile/checkpoint/v1", site.encode(), str(seq).encode(), digest))


@dataclass
class Problem:
    seq: int | None
    problem: str

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "problem": self.problem}


@dataclass
class VerifyReport:
    site: str
    entries: int = 0
    checkpoints: int = 0
    head_seq: int = 0
    head_hash: str = ""
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "site": self.site,
            "entries": self.entries,
            "checkpoints": self.checkpoints,
            "head": {"seq": self.head_seq, "hash": self.head_hash},
            "first_bad": self.problems[0].to_dict() if self.problems else None,
            "problems": [p.to_dict() for p in self.problems],
        }


class AuditLedger:
    """Appends to and verifies one site's chain."""

    def __init__(self, site_id: str, keys: KeyProvider, anchor_dir: Path | None = None) -> None:
        self.site_id = site_id
        self.keys = keys
        self.anchor = anchor_dir / f"{site_id}.json" if anchor_dir else None

    def append(self, tx: StoreTransaction, events: Sequence[AuditEvent]) -> list[AuditRow]:
        """Chain ``events`` after the head, inside the caller's transaction. Signs a
        checkpoint whenever the chain crosses a multiple of ``CHECKPOINT_EVERY``."""
        rows = tx.chain([ev.payload() for ev in events])
        if self._crosses(rows):
            self._checkpoint(tx, rows[-1].seq, rows[-1].hash)
        return rows

    def append_payloads(self, tx: StoreTransaction, payloads: Sequence[str]) -> list[AuditRow]:
        """``append`` for payloads already encoded (``AuditEvent.payload`` or a
        ``PayloadTemplate``)."""
        rows = tx.chain(payloads)
        if self._crosses(rows):
            self._checkpoint(tx, rows[-1].seq, rows[-1].hash)
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
        if self._crosses(rows):
            with store.transaction() as tx:
                self._checkpoint(tx, rows[-1].seq, rows[-1].hash)
        return rows

    @staticmethod
    def _crosses(rows: Sequence[AuditRow]) -> bool:
        return (
            bool(rows) and (rows[0].seq - 1) // CHECKPOINT_EVERY != rows[-1].seq // CHECKPOINT_EVERY
        )

    def checkpoint(self, store: SiteStore) -> Checkpoint | None:
        """Sign the current head (e.g. at shutdown or on demand)."""
        with store.transaction() as tx:
            seq, digest = tx.audit_head()
            if seq == 0:
                return None
            return self._checkpoint(tx, seq, digest)

    def _checkpoint(self, tx: StoreTransaction, seq: int, digest: bytes) -> Checkpoint:
        sig = sign(
            self.keys.signing_key(self.site_id), checkpoint_message(self.site_id, seq, digest)
        )
        cp = Checkpoint(seq, digest, dt.datetime.now(dt.UTC).isoformat(), sig)
        tx.add_checkpoint(cp)
        if self.anchor is not None:
            self.anchor.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.anchor.with_suffix(".tmp")
            tmp.write_text(
                json.dumps(
                    {"site": self.site_id, "seq": seq, "hash": digest.hex(), "signature": sig.hex()}
                ),
                encoding="utf-8",
            )
            tmp.replace(self.anchor)
        return cp

    def _anchor(self) -> Checkpoint | None:
        if self.anchor is None or not self.anchor.exists():
            return None
        data = json.loads(self.anchor.read_text(encoding="utf-8"))
        return Checkpoint(
            int(data["seq"]), bytes.fromhex(data["hash"]), "", bytes.fromhex(data["signature"])
        )

    def verify(self, store: SiteStore) -> VerifyReport:
        """Walk the whole chain (streamed) and check it against every checkpoint."""
        report = VerifyReport(self.site_id)
        public = self.keys.verify_key(self.site_id)
        checkpoints = store.checkpoints()
        anchor = self._anchor()
        report.checkpoints = len(checkpoints)
        wanted: dict[int, list[tuple[str, Checkpoint]]] = {}
        for cp in checkpoints:
            wanted.setdefault(cp.seq, []).append((f"checkpoint {cp.seq}", cp))
        if anchor is not None:
            wanted.setdefault(anchor.seq, []).append(("the anchor file's checkpoint", anchor))
        for seq, items in wanted.items():
            for label, cp in items:
                if not verify(
                    public, checkpoint_message(self.site_id, cp.seq, cp.hash), cp.signature
                ):
                    report.problems.append(
                        Problem(seq, f"{label} has a bad signature (forged or altered)")
                    )

        expected, prev = 1, b""
        for row in self._rows(store):
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
            if entry_hash(row.prev_hash, row.seq, row.payload) != row.hash:
                report.problems.append(
                    Problem(row.seq, "its contents do not match its hash (edited)")
                )
                break
            for label, cp in wanted.get(row.seq, []):
                if cp.hash != row.hash:
                    report.problems.append(
                        Problem(row.seq, f"the chain differs from {label} (entries were rewritten)")
                    )
            expected, prev = row.seq + 1, row.hash
        report.head_seq, report.head_hash = expected - 1, prev.hex()
        if report.ok:
            last = max(wanted, default=0)
            if last > report.head_seq:
                report.problems.append(
                    Problem(
                        report.head_seq + 1,
                        f"entries after {report.head_seq} were removed: a checkpoint covers entry {last}",
                    )
                )
        return report

    def _rows(self, store: SiteStore) -> Iterator[AuditRow]:
        return store.audit(1)
