"""Finding 2 of the trust review: `audit verify` could be made to pass on a forged history.

Each attack is performed as the attacker would: with the `domicile` command of a real
deployment and raw SQL on the site's database (a SQLite file, or a real PostgreSQL
database), never through domicile's own code. The attacker holds the Russian site's disk
only. Each test passes only when verification catches the attack and names it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from domicile.stores.base import entry_hash

GUARDED = ("audit", "tree_heads", "witnessed")


@dataclass
class Site:
    """A deployment made by `domicile init` (SQLite) or by hand (PostgreSQL), driven only
    through the `domicile` command, and the Russian site's database in the attacker's hands."""

    folder: Path
    backend: str
    ru_url: str  # sqlite:PATH or postgresql://...

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DOMICILE_CONFIG": str(self.folder / "domicile.yaml")}
        return subprocess.run(
            [sys.executable, "-m", "domicile.cli.app", *args],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip

    def json(self, *args: str, code: int = 0) -> Any:
        done = self.cli(*args, "--json")
        assert done.returncode == code, done.stdout + done.stderr
        return json.loads(done.stdout)

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[Any]:
        if self.backend == "sqlite":
            conn = sqlite3.connect(self.ru_url.removeprefix("sqlite:"))
            try:
                rows = conn.execute(query, params).fetchall()
                conn.commit()
            finally:
                conn.close()
            return rows
        with psycopg.connect(self.ru_url, autocommit=True) as pg:
            cur = pg.execute(query.replace("?", "%s"), params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    def unguard(self) -> None:
        """Drop the append-only triggers: the attacker owns the database."""
        for table in GUARDED:
            if self.backend == "sqlite":
                for op in ("update", "delete"):
                    self.sql(f"DROP TRIGGER IF EXISTS {table}_append_only_{op}")
            else:
                self.sql(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")

    def rewrite(self, change: Callable[[int, str], str], upto: int | None = None) -> None:
        """Change payloads and recompute every hash, so the chain alone looks whole."""
        rows = self.sql("SELECT seq, payload FROM audit ORDER BY seq")
        prev = b""
        for seq, payload in rows:
            if upto is not None and seq > upto:
                break
            payload = change(seq, payload)
            digest = entry_hash(prev, seq, payload)
            self.sql(
                "UPDATE audit SET payload = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                (payload, prev, digest, seq),
            )
            prev = digest
        if self.backend == "postgresql":
            self.sql("UPDATE audit_head SET hash = ?, seq = ? WHERE id = 1", (prev, rows[-1][0]))

    def activity(self, n: int = 1) -> str:
        """A Russian subject written and read ``n`` times through the CLI; returns its token."""
        token = self.json(
            "put", "profiles", "--subject", "citizenship=RU", "--field", "full_name=Anna Volkova",
            "--field", "email=anna@example.ru", "--purpose", "signup",
        )["token"]  # fmt: skip
        for _ in range(n):
            self.json("get", token, "--purpose", "view", "--as-site", "ru")
        return str(token)

    def verify(self, *extra: str) -> dict[str, Any]:
        done = self.cli("audit", "verify", "--site", "ru", "--json", *extra)
        report: dict[str, Any] = json.loads(done.stdout)
        assert done.returncode == (0 if report["ok"] else 1), done.stderr
        return report


PG_CONFIG = """
environment_id: default
data_dir: data
default_site: us
local_site: us
sites:
  - {{id: ru, country: RU, location: {{provider: P, city: Moscow, address: "1 Street"}}, backend: "{ru}", keys: "{ru_keys}"}}
  - {{id: de, country: DE, location: {{provider: P, city: Frankfurt, address: "2 Strasse"}}, backend: "{de}", keys: "{de_keys}"}}
  - {{id: us, country: US, location: {{provider: P, city: Ashburn, address: "3 Way"}}, backend: "{us}", keys: "{us_keys}"}}
collections:
  profiles:
    fields:
      full_name: {{category: user.name, required: true}}
      email: {{category: user.contact.email, searchable: true, identifies: true, normalize: email}}
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    if request.param == "sqlite":
        done = subprocess.run(
            [sys.executable, "-m", "domicile.cli.app", "init", str(tmp_path)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        yield Site(tmp_path, "sqlite", f"sqlite:{tmp_path / 'domicile-data' / 'ru.sqlite'}")
        return
    make_db: Callable[[str], str] = request.getfixturevalue("pg_database")
    urls = {name: make_db(name) for s in ("ru", "de", "us") for name in (s, f"{s}_keys")}
    (tmp_path / "domicile.yaml").write_text(PG_CONFIG.format(**urls))
    made = Site(tmp_path, "postgresql", urls["ru"])
    setup = made.cli("sites", "create", "--all")  # the explicit setup step, where it exists
    if setup.returncode != 0:  # before `sites create`: the first open made the stores
        assert "No such command" in setup.stderr or "Usage" in setup.stderr, setup.stderr
    yield made


def test_a_rewritten_chain_without_heads_or_anchor_is_caught(site: Site) -> None:
    """(a) Rewrite the chain with recomputed hashes, delete the site's heads and
    checkpoints, and any anchor file."""
    site.activity(3)
    assert site.verify()["status"] == "verified"
    site.unguard()
    target = site.sql("SELECT min(seq) FROM audit WHERE payload LIKE ?", ('%"view"%',))[0][0]
    site.rewrite(lambda seq, p: p.replace('"view"', '"marketing"') if seq == target else p)
    site.sql("DELETE FROM tree_heads")
    site.sql("DELETE FROM checkpoints")
    for anchor in site.folder.rglob("anchors/*"):
        anchor.unlink()
    report = site.verify()
    assert report["ok"] is False
    bad = report["first_bad"]
    assert bad["seq"] <= target <= bad["until"]
    assert "rewritten" in bad["problem"]
    assert "witnessed by" in bad["problem"]


def test_a_chain_cut_back_to_an_early_head_is_caught(site: Site) -> None:
    """(b) Cut the chain back to an early entry, delete the later heads and checkpoints,
    and put the early head where an anchor would be."""
    site.activity(1)
    early = site.json("audit", "heads")["sites"]["ru"]["head"]
    site.activity(2)
    site.json("audit", "witness")
    site.unguard()
    site.sql("DELETE FROM audit WHERE seq > ?", (early["size"],))
    site.sql("DELETE FROM tree_heads WHERE size > ?", (early["size"],))
    site.sql("DELETE FROM checkpoints")
    if site.backend == "postgresql":
        last = site.sql("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")[0]
        site.sql("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", tuple(last))
    report = site.verify()
    assert report["ok"] is False
    bad = report["first_bad"]
    assert bad["seq"] == early["size"] + 1
    assert "were removed" in bad["problem"]
    assert "witnessed by" in bad["problem"]


def test_entries_edited_or_appended_after_the_last_head_are_not_called_verified(
    site: Site,
) -> None:
    """(c) Edit the entries after the newest witnessed head (recomputing hashes) and append
    forged ones: nobody holds a head of them, so verification must not call them verified.
    (Every command that writes ends with a witness round, so what is left after the
    newest witnessed head is only the records of other sites' heads.)"""
    site.activity(1)
    honest = site.verify()
    assert honest["status"] == "verified"
    witnessed = honest["witnessed"]
    assert honest["entries"] > witnessed  # the records of de's and us's heads
    site.unguard()
    site.rewrite(lambda seq, p: p.replace('"signed_at"', '"signed_at "') if seq > witnessed else p)
    last_seq, last_hash = site.sql("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")[0]
    forged = '{"action":"read","purpose":"audit","site":"ru"}'
    digest = entry_hash(bytes(last_hash), last_seq + 1, forged)
    site.sql(
        "INSERT INTO audit (seq, payload, prev_hash, hash) VALUES (?, ?, ?, ?)",
        (last_seq + 1, forged, bytes(last_hash), digest),
    )
    if site.backend == "postgresql":
        site.sql("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (last_seq + 1, digest))
    report = site.verify()
    assert report["status"] == "partly witnessed"
    assert report["witnessed"] == witnessed
    assert report["unwitnessed"] == report["entries"] - witnessed  # edited and forged alike
    assert site.cli("audit", "verify", "--site", "ru", "--require-witnessed").returncode == 1
    # Entries that a witness does hold a head of cannot be edited unseen.
    site.rewrite(lambda seq, p: p.replace('"view"', '"marketing"'))
    assert site.verify()["status"] == "tampered"


def test_verify_writes_nothing_so_a_second_verify_still_reports(site: Site) -> None:
    site.activity(2)
    site.unguard()
    site.rewrite(lambda seq, p: p.replace('"view"', '"marketing"'))
    site.sql("DELETE FROM tree_heads")
    before = site.sql("SELECT count(*) FROM audit")[0][0]
    first = site.verify()
    second = site.verify()
    assert first["ok"] is False
    assert second["first_bad"] == first["first_bad"]
    assert site.sql("SELECT count(*) FROM audit")[0][0] == before
    assert site.sql("SELECT count(*) FROM tree_heads")[0][0] == 0
    assert not list(site.folder.rglob("anchors"))


def test_a_heads_file_kept_offline_catches_a_rewrite_of_every_site(site: Site) -> None:
    site.activity(2)
    site.json("audit", "witness")
    kept = site.folder / "offline-heads.json"
    done = site.cli("audit", "heads", "--json", "--out", str(kept))
    assert done.returncode == 0, done.stderr
    assert kept.stat().st_mode & 0o077 == 0
    site.unguard()
    site.rewrite(lambda seq, p: p.replace('"view"', '"marketing"'))
    site.sql("DELETE FROM tree_heads")
    # Without the file, an attacker who also emptied every witness would go unseen; with
    # it, verification still names the rewrite.
    report = site.verify("--heads", str(kept))
    assert report["ok"] is False
    assert report["heads_file"] is True
    assert any("heads file" in p["problem"] for p in report["problems"])


def test_an_inclusion_proof_checks_with_the_public_key_alone(site: Site) -> None:
    site.activity(1)
    keys = site.json("audit", "heads")["sites"]
    proof = site.json("audit", "prove", "2", "--site", "ru")
    path = site.folder / "proof.json"
    path.write_text(json.dumps(proof))
    done = site.cli("audit", "check-proof", str(path), "--key", keys["ru"]["public_key"])
    assert done.returncode == 0, done.stderr
    assert (
        site.cli("audit", "check-proof", str(path), "--key", keys["de"]["public_key"]).returncode
        == 2
    )
    proof["entry"]["payload"] = proof["entry"]["payload"].replace("ru", "de")
    path.write_text(json.dumps(proof))
    assert (
        site.cli("audit", "check-proof", str(path), "--key", keys["ru"]["public_key"]).returncode
        == 2
    )
