"""The deployment's audit logs as one body of evidence: witness rounds, verification
against every witness and an offline heads file, exported heads and inclusion proofs.

Each site's log is a Merkle tree with signed heads (``domicile.audit``). Here the sites of a
deployment watch each other: in a **witness round** every site signs a head of its log
when something happened since its last one, and every other site that answers records it
after checking that it extends the last head it recorded. Verification of a site then
checks its log against its own heads, the heads its witnesses hold and, if given, a heads
file the operator kept elsewhere, and reads nothing but the stores and the keyring.

Every function here that only reads (``verify``, ``export_heads``, ``prove``) writes
nothing, anywhere; ``witness_round`` is the one that writes, and it is called explicitly
(``domicile audit witness``), by the service on a timer, and when a process that appended
to a log closes the vault.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from domicile.audit.heads import (
    HeadsFile,
    TreeHead,
    parse_public_key,
    proof_document,
    public_key_text,
)
from domicile.audit.ledger import (
    HeadClaim,
    Problem,
    VerifyReport,
    WitnessResult,
    claims_from,
    head_claim,
    witness_head,
)
from domicile.errors import BadInput, DomicileError
from domicile.stores.base import SiteUnavailable

if TYPE_CHECKING:
    from domicile.vault.core import VaultCore as Domicile


@dataclass
class WitnessRound:
    """What one round did: the head each site signed (or already had) and what each
    witness did with each head; sites that did not answer."""

    heads: dict[str, TreeHead] = field(default_factory=dict)
    results: list[WitnessResult] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)

    @property
    def refused(self) -> list[WitnessResult]:
        return [r for r in self.results if r.outcome == "refused"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": not self.refused,
            "heads": {site: head.to_dict() for site, head in sorted(self.heads.items())},
            "witnessed": [r.to_dict() for r in self.results],
            "refused": [r.to_dict() for r in self.refused],
            "unavailable": sorted(self.unavailable),
        }


def _check_site(vault: Domicile, site_id: str) -> None:
    if site_id not in {s.id for s in vault.config.sites}:
        raise BadInput(
            f"no site named {site_id!r}",
            hint=f"the sites are: {', '.join(s.id for s in vault.config.sites)}",
        )


@contextlib.contextmanager
def one_round_at_a_time(vault: Domicile) -> Iterator[None]:
    """Hold the deployment's witness lock: an exclusive ``flock`` on its data folder, so
    that rounds run one after another across threads and processes (the workers of a
    ``serve --workers N``, a command run beside them). Two rounds at once could hand a
    witness the heads of one log out of order, and a head older than the one it holds
    looks like a log cut back. The lock goes with the process that held it, however it
    ends. Without a data folder to lock (it moved away), the round runs as before."""
    try:
        fd = os.open(vault.config.data_dir, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def witness_round(vault: Domicile, *, sites: Sequence[str] | None = None) -> WitnessRound:
    """Sign each site's log where it changed and have every other site witness it (one
    round at a time across the deployment's processes)."""
    ids = list(sites) if sites is not None else [s.id for s in vault.config.sites]
    for sid in ids:
        _check_site(vault, sid)
    with one_round_at_a_time(vault):
        return _round(vault, ids)


def _round(vault: Domicile, ids: list[str]) -> WitnessRound:
    out = WitnessRound()
    for sid in ids:
        try:
            head = vault.ledger(sid).sign_head(vault.store(sid), only_after_activity=True)
        except SiteUnavailable:
            vault.forget_store(sid)
            out.unavailable.append(sid)
            continue
        if head is not None:
            out.heads[sid] = head
    for sid, head in out.heads.items():
        key = vault.keys.verify_key(sid)
        home = vault.store(sid)
        ledger = vault.ledger(sid)

        def prove(size1: int, size2: int, ledger: Any = ledger, home: Any = home) -> list[bytes]:
            return list(ledger.consistency(home, size1, size2))

        for witness in vault.config.sites:
            if witness.id == sid or witness.id in out.unavailable:
                continue
            try:
                result = witness_head(
                    vault.ledger(witness.id), vault.store(witness.id), head, key, prove,
                    refusals_seen=vault.witness_refusals,
                )  # fmt: skip
                if result.outcome == "refused":
                    # Built from the kept subtrees, the proof can fail because those were
                    # altered although the log extends; only a proof from the entries
                    # themselves may refuse a head.
                    def prove_from_entries(
                        size1: int, size2: int, ledger: Any = ledger, home: Any = home
                    ) -> list[bytes]:
                        return list(ledger.consistency(home, size1, size2, use_nodes=False))

                    result = witness_head(
                        vault.ledger(witness.id), vault.store(witness.id), head, key,
                        prove_from_entries, refusals_seen=vault.witness_refusals,
                    )  # fmt: skip
            except SiteUnavailable:
                vault.forget_store(witness.id)
                out.unavailable.append(witness.id)
                continue
            out.results.append(result)
    return out


def verify(
    vault: Domicile, site_id: str | None = None, *, heads: HeadsFile | None = None
) -> list[VerifyReport]:
    """Verify each site's log (or one site's) against its own heads, every witness's
    record of it and the heads file. Reads only."""
    ids = [site_id] if site_id else [s.id for s in vault.config.sites]
    for sid in ids:
        _check_site(vault, sid)
    keys: dict[str, Ed25519PublicKey] = {}

    def key_of(sid: str) -> Ed25519PublicKey | None:
        if sid not in keys:
            try:
                keys[sid] = vault.keys.verify_key(sid)
            except DomicileError:
                return None
        return keys[sid]

    reports = []
    for sid in ids:
        public = key_of(sid)
        if public is None:
            raise BadInput(f"the keyring has no signing key of site {sid!r}")
        claims: list[HeadClaim] = []
        unavailable: list[str] = []
        for other in vault.config.sites:
            if other.id == sid:
                continue
            try:
                claims += claims_from(sid, other.id, vault.store(other.id).witnessed(sid), public)
            except SiteUnavailable:
                vault.forget_store(other.id)
                unavailable.append(other.id)
        file_problems: list[Problem] = []
        if heads is not None and sid in heads.keys:
            file_key = parse_public_key(heads.keys[sid])
            if public_key_text(public) != heads.keys[sid]:
                file_problems.append(
                    Problem(
                        None,
                        "the site's signing key is not the one in the heads file "
                        "(the keyring was replaced or altered)",
                    )
                )
            if sid in heads.heads:
                claims.append(head_claim(heads.heads[sid], file_key))
        report = vault.ledger(sid).verify(vault.store(sid), claims=claims, keys_of=key_of)
        report.unavailable_witnesses = unavailable
        report.problems[:0] = file_problems
        reports.append(report)
    return reports


def export_heads(vault: Domicile) -> HeadsFile:
    """Every site's public key and newest signed head, for an operator to keep offline.
    Reads only (run ``witness_round`` first for heads of the newest entries)."""
    keys: dict[str, str] = {}
    heads: dict[str, TreeHead] = {}
    for s in vault.config.sites:
        keys[s.id] = public_key_text(vault.keys.verify_key(s.id))
        head = vault.ledger(s.id).latest_head(vault.store(s.id))
        if head is not None:
            heads[s.id] = head
    return HeadsFile(
        vault.config.model.environment_id, dt.datetime.now(dt.UTC).isoformat(), keys, heads
    )


def prove(vault: Domicile, site_id: str, seq: int) -> dict[str, Any]:
    """Entry ``seq`` of a site's log with its inclusion proof against the newest signed
    head, checkable with the site's public key alone. Reads only."""
    _check_site(vault, site_id)
    row, head, path = vault.ledger(site_id).prove(vault.store(site_id), seq)
    return proof_document(
        site_id, vault.keys.verify_key(site_id), row.seq, row.payload, row.prev_hash, head, path
    )


def load_heads(path: str | Path) -> HeadsFile:
    return HeadsFile.load(path)


class Witnesser:
    """Runs a witness round every ``interval`` seconds in a thread of its own, whenever
    this process has added to some site's log since the last round (the service's timer)."""

    def __init__(self, vault: Domicile, interval: float) -> None:
        import threading

        self.vault = vault
        self.interval = interval
        self.last: WitnessRound | None = None
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="domicile-witness", daemon=True)

    def start(self) -> Witnesser:
        self._thread.start()
        return self

    def _run(self) -> None:
        import logging

        log = logging.getLogger("domicile.audit")
        while not self._stop.wait(self.interval):
            ledgers = [self.vault.ledger(s.id) for s in self.vault.config.sites]
            if not any(ledger.appended for ledger in ledgers):
                continue
            for ledger in ledgers:
                ledger.appended = False
            try:
                self.last = witness_round(self.vault)
                self.error = None
            except DomicileError as exc:
                self.error = exc.code
                log.warning("witness round failed: %s", exc.code)
                continue
            for r in self.last.refused:
                # A refused head is evidence of a rewritten or forked log: say so loudly.
                log.error(
                    "site %s refused to witness a head of site %s (size %d): %s",
                    r.witness, r.site, r.size, r.reason,
                )  # fmt: skip

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
