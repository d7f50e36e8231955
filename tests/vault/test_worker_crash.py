"""The replication worker killed with SIGKILL at random points, again and again, while the
application keeps writing: after a final run nothing is lost and nothing is duplicated."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter

from domicile.vault.parity import check_parity
from domicile.vault.replication import Replicator

from .conftest import CONFIG, Deployment

FR = {"citizenship": "FR", "residence": "FR"}  # home: Germany; copies to the US need clauses
US = {"citizenship": "US", "residence": "US"}  # home: the US; copies to Germany are free


def test_sigkill_at_random_points_loses_and_duplicates_nothing(deployment: Deployment) -> None:
    config_file = deployment.folder / "domicile.yaml"
    config_file.write_text(CONFIG.format(**deployment.urls), encoding="utf-8")
    rng = random.Random(20261129)
    vault = deployment.open(now=dt.datetime.now(dt.UTC))
    vault.add_filing("eu.scc.US", "2020-01-01")
    tokens = [
        vault.put(
            "profiles", subject=FR if i % 2 else US,
            fields={"full_name": f"Person {i}", "email": f"p{i}@example.org", "city": "Lyon"},
            purpose="signup",
        ).token
        for i in range(40)
    ]  # fmt: skip

    env = {**os.environ, "DOMICILE_CONFIG": str(config_file)}
    command = [
        sys.executable,
        "-m",
        "domicile.cli.app",
        "replicate",
        "--follow",
        "--interval",
        "0.02",
    ]
    kills = 0
    for _ in range(6):
        worker = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        # Keep the application writing while the worker runs, so it dies mid-stream.
        deadline = time.monotonic() + rng.uniform(1.0, 3.0)
        while time.monotonic() < deadline:
            token = rng.choice(tokens)
            vault.update(token, fields={"city": f"City {rng.randrange(1000)}"}, purpose="edit")
            time.sleep(rng.uniform(0.0, 0.05))
        if worker.poll() is None:
            worker.send_signal(signal.SIGKILL)
            kills += 1
        _, err = worker.communicate(timeout=30)
        assert worker.returncode in (-signal.SIGKILL, 0), err.decode()
    assert kills >= 3

    Replicator(vault).run_once()
    assert all(vault.store(s.id).outbox(1) == [] for s in vault.config.sites)
    report = check_parity(vault)
    assert report.ok, report.to_dict()
    assert report.lagging == 0  # every copy is at its primary's version
    assert report.copies == len(tokens)  # one copy per record, none missing
    for site in ("de", "us"):
        entries = [json.loads(r.payload) for r in vault.store(site).audit()]
        delivered = Counter(
            (e["record"], e["detail"]["version"]) for e in entries if e["action"] == "transfer"
        )
        assert delivered, f"nothing was delivered to {site}"
        assert set(delivered.values()) == {1}, "a version was delivered (and logged) twice"
    assert all(r.ok for r in vault.verify_audit())
    vault.close()
