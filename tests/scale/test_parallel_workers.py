"""Replication workers in several processes over one PostgreSQL home site, one of them
killed with SIGKILL mid-way, while the application keeps updating and deleting: every copy
arrives once, each delivered version is logged once, and every audit chain verifies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

from domicile.vault.parity import check_parity

from .conftest import Deployment

RECORDS = 2400
REFUSED = 600
WORKERS = 3
DEADLINE = 300.0  # seconds for the workers to drain the outbox


def _pending(deployment: Deployment, site: str = "us") -> int:
    return int(deployment.execute(site, "SELECT count(*) FROM outbox")[0][0])


def test_parallel_workers_one_killed_deliver_each_copy_once(pg_deployment: Deployment) -> None:
    d = pg_deployment
    config_file = d.folder / "domicile.yaml"
    config_file.write_text(d.config_text, encoding="utf-8")
    vault = d.open()
    us = {"citizenship": "US", "residence": "US"}  # home: the US; copies to Germany
    tokens: list[str] = []
    for start in range(0, RECORDS, 400):
        results = vault.put_many(
            "profiles",
            [
                {
                    "subject": us,
                    "fields": {
                        "full_name": f"Person {i}",
                        "email": f"p{i}@example.org",
                        "city": "Boston",
                    },
                }
                for i in range(start, start + 400)
            ],
            purpose="signup",
        )
        tokens += [r.token for r in results]
    # Subjects at home in Germany whose copies the US may not keep (no clauses filed): each
    # of their items is refused, and the refusal is logged at home once per item.
    fr = {"citizenship": "FR", "residence": "FR"}
    refused = vault.put_many(
        "profiles",
        [
            {"subject": fr, "fields": {"full_name": f"Pers {i}", "email": f"f{i}@example.fr"}}
            for i in range(REFUSED)
        ],
        purpose="signup",
    )
    assert _pending(d) == RECORDS
    assert _pending(d, "de") == REFUSED

    env = {**os.environ, "DOMICILE_CONFIG": str(config_file)}
    command = [sys.executable, "-m", "domicile.cli.app", "replicate", "--follow"]
    workers = [
        subprocess.Popen(
            [*command, "--interval", "0.05"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(WORKERS)
    ]
    try:
        # The application goes on meanwhile: updates (several items of one subject) and
        # deletes (an upsert then a delete of one record), which must arrive in order.
        deadline = time.monotonic() + DEADLINE
        killed_at = None
        for n, token in enumerate(tokens[:300]):
            if n % 3 == 0:
                vault.delete(token, purpose="cleanup")
            else:
                vault.update(token, fields={"city": f"City {n}"}, purpose="edit")
            if killed_at is None and _pending(d) < RECORDS * 2 // 3:
                workers[0].send_signal(signal.SIGKILL)  # mid-way, holding a claim or not
                killed_at = _pending(d)
        while killed_at is None and time.monotonic() < deadline:
            if _pending(d) < RECORDS * 2 // 3:
                workers[0].send_signal(signal.SIGKILL)
                killed_at = _pending(d)
            time.sleep(0.05)
        assert killed_at is not None, "the kill did not land"
        assert killed_at > 0, "the kill did not land mid-way"
        while (_pending(d) or _pending(d, "de")) and time.monotonic() < deadline:
            assert all(w.poll() is None for w in workers[1:]), "a worker stopped"
            time.sleep(0.2)
        assert _pending(d) == 0, f"the workers left {_pending(d)} items within {DEADLINE}s"
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        errors = [w.communicate(timeout=60)[1].decode() for w in workers]
    assert workers[0].returncode == -signal.SIGKILL
    for w, err in zip(workers[1:], errors[1:], strict=True):
        assert w.returncode == 0, err

    deleted = {vault.tokens.read(t)[1] for t in tokens[:300:3]}
    primaries = {r.record_id: r for r in vault.store("us").records_after("", RECORDS * 2)}
    assert len(primaries) == RECORDS - len(deleted)
    copies = {r.record_id: r for r in vault.store("de").replicas("", RECORDS * 2)}
    # Every primary has its one copy, at the primary's version; no deleted one kept a copy.
    assert set(copies) == set(primaries)
    assert all(copies[r].version == primaries[r].version for r in copies)
    entries = [json.loads(r.payload) for r in vault.store("de").audit()]
    delivered = Counter(
        (e["record"], e["detail"]["version"]) for e in entries if e["action"] == "transfer"
    )
    assert set(delivered.values()) == {1}, "a version was delivered (and logged) twice"
    assert all(delivered[(r, c.version)] == 1 for r, c in copies.items())
    removed = Counter(e["record"] for e in entries if e["action"] == "delete")
    assert set(removed.values()) <= {1}, "a removal was logged twice"
    at_home = [json.loads(r.payload) for r in vault.store("de").audit()]
    refusals = Counter(e["record"] for e in at_home if e["action"] == "refuse")
    assert set(refusals) == {vault.tokens.read(r.token)[1] for r in refused}
    assert set(refusals.values()) == {1}, "an item was refused (and logged) twice"
    assert _pending(d, "de") == 0
    report = check_parity(vault)
    assert report.ok, report.to_dict()
    assert all(r.ok for r in vault.verify_audit())
    vault.close()
