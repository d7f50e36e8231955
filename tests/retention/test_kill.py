"""``retention run`` killed with SIGKILL at random points, then run again: in the end
every record that was due is destroyed exactly once (one audit entry each), every field
removal happened once, every destruction is in exactly one act, and the audit verifies."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from domicile.retention import plan
from domicile.retention.service import acts
from domicile.rights.acts import verify_act
from domicile.vault import Domicile
from domicile.vault.replication import Replicator

from .conftest import World

KILLS = 5
PEOPLE = 300  # profiles at the US site; every third also has an invoice
RUSSIANS = 60
TOTAL = PEOPLE + RUSSIANS + PEOPLE // 3  # retention entries in the end
BUDGET = 30.0  # seconds for the whole campaign
DOMICILE = str(Path(sys.executable).parent / "domicile")


def _fill(world: World) -> None:
    people = [f"p{i}@example.com" for i in range(PEOPLE)]
    world.vault.put_many(
        "profiles",
        [
            {"subject": {"citizenship": "US"}, "fields": {"full_name": "P", "email": e}}
            for e in people
        ],
        purpose="signup",
    )
    world.vault.put_many(  # every third person also has an invoice: a hold keeps it in part
        "invoices",
        [
            {"subject": {"citizenship": "US"}, "fields": {"payer": "P", "email": e, "amount": 1}}
            for e in people[::3]
        ],
        purpose="billing",
    )
    world.vault.put_many(
        "profiles",
        [
            {
                "subject": {"citizenship": "RU"},
                "fields": {"full_name": "R", "email": f"r{i}@example.ru"},
            }
            for i in range(RUSSIANS)
        ],
        purpose="signup",
    )
    Replicator(world.vault).run_once(reconcile=False)


def _retention_entries(vault: Domicile) -> list[tuple[str, int, dict]]:
    out = []
    for site in vault.config.sites:
        for row in vault.store(site.id).audit():
            entry = json.loads(row.payload)
            if entry.get("action") == "erase" and "retention" in entry.get("detail", {}):
                out.append((site.id, row.seq, entry))
    return out


def test_killed_and_rerun(world: World, tmp_path: Path) -> None:
    _fill(world)
    world.vault.close()
    rng = random.Random(12)
    cmd = [DOMICILE, "retention", "run", "--json", "--config", str(tmp_path / "domicile.yaml")]
    env = {**os.environ, "NO_COLOR": "1"}
    started = time.monotonic()
    kills = 0
    progress = [0]  # retention entries in the audit after each kill
    data = tmp_path / "data"
    # How long after the first write a kill may wait. A busy machine takes longer from
    # opening the sites to the first destruction: a kill that found nothing destroyed
    # yet waits up to twice as long the next time.
    window = 0.15

    def stamp() -> list[tuple[int, int]]:  # what a write changes (readers touch only -shm)
        files = sorted([*data.rglob("*.sqlite"), *data.rglob("*.sqlite-wal")])
        return [(f.stat().st_mtime_ns, f.stat().st_size) for f in files if f.exists()]

    while kills < KILLS and time.monotonic() - started < BUDGET:
        before = stamp()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        # Wait for the destruction to begin (a key deleted, a site's database written),
        # then kill at a random point of it.
        while proc.poll() is None and stamp() == before:
            if time.monotonic() - started > BUDGET + 30:
                proc.kill()
                raise AssertionError("the run neither wrote nor ended")
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, window))
        killed = proc.poll() is None
        if killed:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        _, err = proc.communicate()
        assert proc.returncode in (0, -signal.SIGKILL), err.decode()
        with Domicile.open(tmp_path / "domicile.yaml", read_only=True) as peek:
            progress.append(len(_retention_entries(peek)))
        if progress[-1] == progress[-2]:
            window *= 2
        if not killed:
            break  # a run finished the work before its kill: nothing is left to interrupt
    # A fast machine finishes sooner: the campaign counts the kills that landed, at least two.
    assert kills >= 2, f"only {kills} kills landed in {BUDGET} s: {progress}"
    # Some kills landed in the middle of the destruction (not only before or after it).
    print("entries after each kill:", progress)
    assert any(0 < n < TOTAL for n in progress), progress
    final = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert final.returncode == 0, final.stderr

    vault = Domicile.open(tmp_path / "domicile.yaml", read_only=True)
    try:
        due = plan(vault)
        assert all(r["due"]["erase"] == 0 and r["due"]["strip"] == 0 for r in due["collections"])
        entries = _retention_entries(vault)
        erased = Counter(e["record"] for _, _, e in entries if e["detail"]["records"] == 1)
        stripped = Counter(
            (e["record"], f)
            for _, _, e in entries
            if e["detail"]["records"] == 0
            for f in e["fields"]
        )
        assert len(erased) == PEOPLE + RUSSIANS  # every profile, once
        assert set(erased.values()) == {1}
        assert len(stripped) == PEOPLE // 3  # every invoice lost its e-mail address, once
        assert set(stripped.values()) == {1}
        for site in ("us", "ru"):
            assert vault.store(site).count() == (PEOPLE // 3 if site == "us" else 0)
        # Every destruction in exactly one act, every act signed and checkable.
        found = acts(vault.config)
        covered = Counter((x["site"], x["seq"]) for a in found for x in a["act"]["log_extract"])
        assert set(covered.values()) == {1}
        assert set(covered) == {(s, seq) for s, seq, _ in entries}
        for a in found:
            assert all(c["valid"] for c in verify_act(vault, a))
        assert all(r.ok for r in vault.verify_audit())
    finally:
        vault.close(checkpoint=False)
