"""``domicile migrate run`` killed with SIGKILL at random points, on a SQLite and on a
PostgreSQL source, and on a SQLite table with a composite key, then run to the end: zero
rows lost, zero records written twice, each row untouched or wholly replaced after every
kill, and verify clean. Bounded: six kills per backend (four for the composite key), and
a time limit for each campaign."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from domicile.discovery.migration import load_plan
from domicile.discovery.synthetic import generate, write_database
from domicile.vault import Domicile
from tests.discovery.test_migrate import (
    check_moved,
    cli_json,
    deployment,
    make_plan,
    tenant_key,
    tenant_source,
)

KILLS = 6
SUBJECTS = 150
SECONDS = 40  # for one backend's whole campaign


def rows_of(url: str, width: int = 1) -> dict[Any, tuple[Any, ...]]:
    """The customers' rows by key (``width`` columns of it, a tuple when several)."""
    if url.startswith("sqlite:"):
        db = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            return {
                (r[0] if width == 1 else tuple(r[:width])): tuple(r[width:])
                for r in db.execute("SELECT * FROM customers")
            }
        finally:
            db.close()
    import psycopg

    with psycopg.connect(url) as conn:
        cols = "id, fld_a, fld_b, fld_c, fld_d, fld_e, created, h"
        return {r[0]: tuple(r[1:]) for r in conn.execute(f"SELECT {cols} FROM customers")}


FORK_SERVER = """
import os, sys
from domicile.cli.app import main
import domicile.discovery.migration, domicile.vault, sqlalchemy, psycopg, pymysql, rich.progress
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        sys.argv = ["domicile", *line.rstrip("\\n").split("\\t")]
        code = 70
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            os._exit(code)
    print(pid, flush=True)
    _, st = os.waitpid(pid, 0)
    print(f"signal {os.WTERMSIG(st)}" if os.WIFSIGNALED(st) else f"exit {os.WEXITSTATUS(st)}", flush=True)
"""


class ForkServer:
    """A process that has imported domicile once and forks a run for each request, so a
    kill lands in the work rather than in the interpreter's start (seconds on a busy
    machine). Each run is a real process, killed by a real SIGKILL."""

    def __enter__(self) -> ForkServer:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", FORK_SERVER],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self._status: str | None = None
        return self

    def start(self, args: list[str]) -> int:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self._status = None
        self.proc.stdin.write("\t".join(args) + "\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def finished(self) -> bool:
        import select

        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 0)
        return bool(ready)

    def status(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def __exit__(self, *exc: object) -> None:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()


def stamp(journal: Path) -> tuple[int, ...]:
    """When the journal (a SQLite file) was last written, and how much."""
    out: list[int] = []
    for p in (journal, Path(f"{journal}-journal")):
        st = p.stat() if p.exists() else None
        out += [st.st_mtime_ns, st.st_size] if st else [0, 0]
    return tuple(out)


def records(d: Domicile) -> int:
    return sum(d.store(s.id).count() for s in d.config.sites)


def campaign(url: str, tmp: Path, *, composite: bool = False, most: int = KILLS) -> None:
    """Kill runs of a plan up to ``most`` times, then finish and verify. ``composite``: the
    customers are keyed by (tenant_id, id) (``tenant_source``), in SQLite."""
    data = generate(SUBJECTS, seed=21)
    if composite:
        url = tenant_source(tmp, data, contacts=False)
        original = {tenant_key(r[0]): tuple(r[1:]) for r in data.tables["customers"].rows}
    else:
        write_database(data, url)
        original = {r[0]: tuple(r[1:]) for r in data.tables["customers"].rows}
    width = 2 if composite else 1
    config = deployment(tmp)
    plan_file = tmp / "plan.yaml"
    plan = make_plan(url, config, plan_file, "--batch", "1")
    planned = sum(plan["destinations"].values())
    journal = load_plan(plan_file).journal_path
    args = ["migrate", "run", str(plan_file), "--config", config]
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    deadline = time.monotonic() + SECONDS
    kills = 0
    vault = Domicile.open(config, read_only=True)  # sees each run's commits
    with ForkServer() as server:
        while kills < most and time.monotonic() < deadline:
            before = stamp(journal)
            pid = server.start(args)
            # The run is at work once it writes its journal: kill it somewhere in the work.
            while stamp(journal) == before and time.monotonic() < deadline:
                if server.finished():
                    break
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 0.12))
            with contextlib.suppress(ProcessLookupError):  # it ended first: its status says how
                os.kill(pid, signal.SIGKILL)
            status = server.status()
            if status == "exit 0":
                break  # it finished first
            assert status == "signal 9", status
            kills += 1
            # after every kill: each row untouched or wholly replaced; no record twice
            rows = rows_of(url, width)
            tokens = 0
            for key, row in rows.items():
                if str(row[0]).startswith("dom1_"):
                    assert len(set(row[:4])) == 1, f"row {key} half replaced"
                    tokens += 1
                else:
                    assert row == original[key], f"row {key} changed without its token"
            assert tokens <= records(vault) <= planned
    vault.close(checkpoint=False)
    assert kills >= 3, "the run finished before it could be killed enough times"
    done = cli_json("migrate", "run", str(plan_file), "--config", config)
    assert done["refused"] == {}
    moved = check_moved(config, data, rows_of(url, width), original)
    assert moved == planned  # none lost; check_moved: none twice
    report = cli_json("migrate", "verify", str(plan_file), "--config", config)
    assert report["ok"] is True, report["problems"]
    assert report["moved"] == planned


def test_sigkill_campaign_sqlite(tmp_path: Path) -> None:
    campaign(f"sqlite:///{tmp_path / 'legacy.db'}", tmp_path)


def test_sigkill_campaign_postgresql(pg_database: Callable[[str], str], tmp_path: Path) -> None:
    campaign(pg_database("migrate_kill"), tmp_path)


def test_sigkill_campaign_composite_key_sqlite(tmp_path: Path) -> None:
    campaign("", tmp_path, composite=True, most=4)
