"""A tamper campaign against the witnessed audit logs: many runs, each one attack on one
site's database (the attacks of finding 2, and random single edits, deletions,
insertions, reorderings and truncations), each followed by a verification of every site.
Every attack must be detected (100%), at the right site, naming the right entry (or, for a
rewrite with recomputed hashes, a range that holds it), and no untouched site may be
blamed. Bounded by a count and a time budget; the seed of a failing run is in its message.
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from domicile.stores.base import entry_hash
from domicile.vault import Domicile
from domicile.vault.replication import Replicator
from tests.vault.conftest import SITES, Deployment, sqlite_urls

KINDS = ("edit", "delete", "insert", "reorder", "truncate", "rewrite", "rewrite_all", "cut_back")


@dataclass(frozen=True)
class Attack:
    site: str
    kind: str
    seq: int  # the entry the verification must name (or a range must hold)
    exact: bool  # named exactly (the chain breaks there), or within a range


class Target:
    """Raw SQL on one site's database, as its attacker would run it."""

    def __init__(self, deployment: Deployment, site: str) -> None:
        self.d = deployment
        self.site = site
        self.pg = deployment.backend == "postgresql"

    def run(self, *statements: str, params: tuple[Any, ...] = ()) -> list[Any]:
        return self.d.execute(self.site, *statements, params=params)

    def rows(self) -> list[tuple[int, str, bytes, bytes]]:
        return [
            (int(s), str(p), bytes(v), bytes(h))
            for s, p, v, h in self.run(
                "SELECT seq, payload, prev_hash, hash FROM audit ORDER BY seq"
            )
        ]

    def set_head(self) -> None:
        """On PostgreSQL the next append chains from ``audit_head``: a careful attacker
        moves it too."""
        if self.pg:
            last = self.run("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
            seq, h = (last[0][0], bytes(last[0][1])) if last else (0, b"")
            self.run("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", params=(seq, h))

    def renumber(self, first: int, delta: int) -> None:
        """Move entries ``first``.. by ``delta`` (through negative numbers: no overlap)."""
        self.run(f"UPDATE audit SET seq = -seq WHERE seq >= {first}")
        self.run(f"UPDATE audit SET seq = -seq + ({delta}) WHERE seq < 0")

    def rewrite_from(self, first: int, change: Callable[[str], str]) -> None:
        prev = b""
        for seq, payload, _, _ in self.rows():
            if seq >= first:
                payload = change(payload) if seq == first else payload
                digest = entry_hash(prev, seq, payload)
                self.run(
                    "UPDATE audit SET payload = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                    params=(payload, prev, digest, seq),
                )
                prev = digest
            else:
                prev = entry_hash(prev, seq, payload)
        self.run("DELETE FROM tree_heads", "DELETE FROM tree_nodes", "DELETE FROM checkpoints")
        self.set_head()


def attack(d: Deployment, rng: random.Random, witnessed: dict[str, int]) -> Attack:
    site = rng.choice(SITES)
    t = Target(d, site)
    rows = t.rows()
    size = len(rows)
    kind = rng.choice(KINDS)
    # Anything a witness holds a head of; the chain itself guards every entry from raw edits.
    k = rng.randint(1, witnessed[site])
    if kind == "edit":
        payload = rows[k - 1][1]
        t.run("UPDATE audit SET payload = ? WHERE seq = ?", params=(payload + " ", k))
        return Attack(site, kind, k, True)
    if kind == "delete":
        k = min(k, size - 1)  # the last entry's deletion is a truncation
        t.run(f"DELETE FROM audit WHERE seq = {k}")
        return Attack(site, kind, k, True)
    if kind == "insert":
        t.renumber(k, 1)
        t.run(
            "INSERT INTO audit (seq, payload, prev_hash, hash) VALUES (?, ?, ?, ?)",
            params=(k, '{"action":"read","site":"' + site + '"}', rows[k - 1][2], rows[k - 1][3]),
        )
        return Attack(site, kind, k, True)
    if kind == "reorder":
        a = min(k, size - 1)
        b = rng.randint(a + 1, size)
        t.run(f"UPDATE audit SET seq = -1 WHERE seq = {a}")
        t.run(f"UPDATE audit SET seq = {a} WHERE seq = {b}")
        t.run(f"UPDATE audit SET seq = {b} WHERE seq = -1")
        return Attack(site, kind, a, True)
    if kind == "truncate":
        t.run(f"DELETE FROM audit WHERE seq >= {k}")
        t.set_head()
        return Attack(site, kind, k, True)
    if kind == "cut_back":  # finding 2 (b): cut back, drop later heads and checkpoints
        t.run(f"DELETE FROM audit WHERE seq >= {k}")
        t.run(f"DELETE FROM tree_heads WHERE size >= {k}", "DELETE FROM checkpoints")
        t.set_head()
        return Attack(site, kind, k, True)
    if kind == "rewrite":  # finding 2 (a): one entry changed, every later hash recomputed
        t.rewrite_from(k, lambda p: p.replace('"', "'", 1) if rng.random() < 0.5 else p + " ")
        return Attack(site, kind, k, False)
    # rewrite_all: a whole new history of the same length
    t.rewrite_from(1, lambda p: p + " ")
    return Attack(site, kind, 1, False)


def build(d: Deployment) -> dict[str, int]:
    """Some activity at every site, witnessed round after round; returns each site's
    witnessed size."""
    vault = d.open()
    countries = ("RU", "DE", "US", "BR")
    tokens: list[str] = []
    for round_ in range(6):
        items = [
            {
                "subject": {"citizenship": countries[(i + round_) % 4]},
                "fields": {"full_name": f"P{round_}-{i}"},
            }
            for i in range(40)
        ]
        results = vault.put_many("profiles", items, purpose="import")
        tokens += [r.token for r in results]
        for r in results[:12]:
            vault.get(r.token, purpose="view", as_site=r.site)
        Replicator(vault).run_once()  # copies abroad: activity at de and us too
        vault.witness()
    vault.witness()
    reports = {r.site: r for r in vault.verify_audit()}
    vault.close(checkpoint=False)
    assert all(r.ok and r.witnessed >= 20 for r in reports.values()), {
        s: r.to_dict() for s, r in reports.items()
    }
    for site in SITES:
        d.drop_audit_guard(site)
    return {site: r.witnessed for site, r in reports.items()}


def check(vault: Domicile, hit: Attack, seed: int) -> None:
    reports = {r.site: r for r in vault.verify_audit()}
    where = f"seed {seed}: {hit}"
    for site, report in reports.items():
        if site != hit.site:
            assert report.ok, f"{where}: untouched site {site} blamed: {report.problems}"
            continue
        assert not report.ok, f"{where}: not detected"
        bad = report.problems[0]
        assert bad.seq is not None, f"{where}: no entry named: {bad}"
        if hit.exact:
            assert bad.seq == hit.seq, f"{where}: named {bad.seq}: {bad.problem}"
        else:
            assert bad.until is not None, f"{where}: no range named: {bad}"
            assert bad.seq <= hit.seq <= bad.until, f"{where}: {bad}"


def more(done: int, wanted: int, at_least: int, start: float, budget: float) -> bool:
    """Another run? Up to ``wanted`` within the time budget; past it only until
    ``at_least`` runs are done (a loaded machine is slower, not a weaker test), and never
    past three budgets (the hard bound)."""
    elapsed = time.monotonic() - start
    if done >= wanted or elapsed >= 3 * budget:
        return False
    return elapsed < budget or done < at_least


def sqlite_campaign(tmp_path: Path, runs: int, budget: float, at_least: int = 0) -> dict[str, int]:
    d = Deployment("sqlite", tmp_path, sqlite_urls(), None)
    witnessed = build(d)
    data = tmp_path / "data"
    pristine = tmp_path / "pristine"
    shutil.copytree(data, pristine)
    vault = d.open()
    kinds: dict[str, int] = dict.fromkeys(KINDS, 0)
    done, start = 0, time.monotonic()
    try:
        while more(done, runs, at_least, start, budget):
            seed = 1000 + done
            vault.close(checkpoint=False)
            shutil.rmtree(data)
            shutil.copytree(pristine, data)
            hit = attack(d, random.Random(seed), witnessed)
            check(vault, hit, seed)
            kinds[hit.kind] += 1
            done += 1
    finally:
        vault.close(checkpoint=False)
    return kinds


def test_every_attack_is_detected_and_located_on_sqlite(tmp_path: Path) -> None:
    kinds = sqlite_campaign(tmp_path, runs=300, budget=60, at_least=120)
    assert sum(kinds.values()) >= 120, f"only {kinds} fitted the time budget"
    assert min(kinds.values()) >= 5, f"every kind of attack, several times: {kinds}"


@pytest.fixture
def pg_deployment(tmp_path: Path, pg_database: Callable[[str], str]) -> Deployment:
    urls = {name: pg_database(name) for s in SITES for name in (s, f"{s}_keys")}
    return Deployment("postgresql", tmp_path, urls, None)


def test_every_attack_is_detected_and_located_on_postgresql(pg_deployment: Deployment) -> None:
    d = pg_deployment
    witnessed = build(d)
    vault = d.open()
    done, start = 0, time.monotonic()
    try:
        while more(done, 20, 6, start, 45):
            seed = 5000 + done
            vault.close(checkpoint=False)
            restores = {site: d.snapshot(site) for site in SITES}
            try:
                hit = attack(d, random.Random(seed), witnessed)
                check(vault, hit, seed)
            finally:
                vault.close(checkpoint=False)
                for restore in restores.values():
                    restore()
            done += 1
    finally:
        vault.close(checkpoint=False)
    assert done >= 6, f"only {done} runs fitted the time budget"


def test_the_campaign_would_notice_a_verifier_that_misses_things(tmp_path: Path) -> None:
    """The campaign itself can fail: with the tampered site's problems hidden, ``check``
    raises."""
    d = Deployment("sqlite", tmp_path, sqlite_urls(), None)
    witnessed = build(d)
    hit = attack(d, random.Random(7), witnessed)
    vault = d.open()
    try:
        real = vault.verify_audit

        def blind(*args: Any, **kwargs: Any) -> Any:
            reports = real(*args, **kwargs)
            for r in reports:
                r.problems.clear()
            return reports

        vault.verify_audit = blind  # type: ignore[method-assign]
        with pytest.raises(AssertionError, match="not detected"):
            check(vault, hit, 7)
    finally:
        vault.close(checkpoint=False)
