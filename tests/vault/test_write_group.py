"""Group commit of writes: puts arriving at a site together share one transaction, every
record of every caller is stored, indexed, queued for its copies and named in the audit, and
one caller's failure in a shared transaction is not its neighbours'."""

from __future__ import annotations

import json
import sqlite3
import threading
from typing import Any

import psycopg

from domicile.audit import AuditEvent
from domicile.stores import StoredRecord
from domicile.vault import Domicile
from domicile.vault.writing import _commit_writes, _Write

from .conftest import Deployment

RU = {"citizenship": "RU"}


def person(t: int, n: int) -> dict[str, str]:
    return {"full_name": f"Person {t}-{n}", "email": f"p{t}.{n}@example.ru", "city": "Omsk"}


def test_concurrent_puts_share_commits_and_every_record_is_kept(deployment: Deployment) -> None:
    vault: Domicile = deployment.open()
    tokens: dict[tuple[int, int], str] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def write(t: int) -> None:
        try:
            start.wait()
            for n in range(15):
                tokens[t, n] = vault.put(
                    "profiles", subject=RU, fields=person(t, n), purpose="signup"
                ).token
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not errors, errors
    group = vault._writers["ru"]
    assert group.entries == 120
    assert group.flushes < group.entries  # some puts shared a transaction
    for (t, n), token in tokens.items():
        assert vault.get(token, purpose="check", as_site="ru").fields == person(t, n)
    # Each record is found through its own blind index, and its copies are queued.
    found = vault.find(
        "profiles", where={"email": "p3.7@example.ru"}, purpose="check", as_site="ru"
    )
    assert len(found.records) == 1
    vault.close()
    vault = deployment.open()
    assert all(r.ok for r in vault.verify_audit("ru"))
    vault.close()
    named = {rid for p in payloads(deployment) if p["action"] == "write" for rid in p["records"]}
    assert len(named) == 120


def test_a_failure_in_a_shared_transaction_is_only_its_callers(deployment: Deployment) -> None:
    """Two writes share a transaction; the second reuses a record id already stored, so the
    shared transaction fails. Each is then committed on its own: the first is kept and told
    so, the second alone gets the error, and the log names only what was kept."""
    vault: Domicile = deployment.open()
    existing = vault.put("profiles", subject=RU, fields=person(0, 0), purpose="x")
    store, ledger = vault.store("ru"), vault._ledgers["ru"]
    old = store.get(vault.tokens.read(existing.token)[1])
    assert old is not None

    def write(record: StoredRecord, name: str) -> _Write:
        event = AuditEvent(
            action="write", site="ru", purpose=name, collection="profiles",
            records=(record.record_id,), subjects=(record.subject_id,),
        )  # fmt: skip
        return _Write(set(), [record], [], [], [event])

    fresh = StoredRecord("fresh-record-id", old.subject_id, "profiles", 1, old.created_at,
                         old.updated_at, old.body)  # fmt: skip
    outcomes = _commit_writes(store, ledger, [write(fresh, "first"), write(old, "second")])
    assert outcomes[0] is None
    assert isinstance(outcomes[1], sqlite3.IntegrityError | psycopg.IntegrityError)
    assert store.get("fresh-record-id") is not None
    vault.close()
    purposes = [p.get("purpose") for p in payloads(deployment)]
    assert "first" in purposes
    assert "second" not in purposes


def payloads(deployment: Deployment) -> list[dict[str, Any]]:
    vault = deployment.open()
    try:
        return [json.loads(r.payload) for r in vault.store("ru").audit()]
    finally:
        vault.close(checkpoint=False)
