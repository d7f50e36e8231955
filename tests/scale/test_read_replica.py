"""A site with a read-only streaming replica (``replica:`` beside its backend), made by
``pg_basebackup -R`` from a private primary: read-only vaults (audit verify, parity,
reports) read the replica; writes, and the audit entries of reads, go to the primary; a
read that must see a write just made reads the primary."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from domicile.config import parse_config
from domicile.errors import DomicileError
from domicile.stores.base import SiteUnavailable
from domicile.vault import Domicile
from domicile.vault.parity import check_parity
from tests.pg import PgCluster
from tests.vault.conftest import SITES, Deployment

DOMICILE = Path(sys.executable).with_name("domicile")
US = {"citizenship": "US", "residence": "US"}


def _caught_up(primary: PgCluster, standby: PgCluster, timeout: float = 120) -> None:
    with psycopg.connect(primary.admin_url, autocommit=True) as conn:
        # The insert position, not the write position: the test clusters commit with
        # synchronous_commit off, so a commit record may still sit in the WAL buffers,
        # past pg_current_wal_lsn(), and "caught up" to that would miss it.
        row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
    assert row is not None
    deadline = time.monotonic() + timeout
    with psycopg.connect(standby.admin_url, autocommit=True) as conn:
        while True:
            done = conn.execute(
                "SELECT %s::pg_lsn <= pg_last_wal_replay_lsn()", (row[0],)
            ).fetchone()
            if done and done[0]:
                return
            assert time.monotonic() < deadline, "the standby did not catch up"
            time.sleep(0.1)


def _replay(standby: PgCluster, *, paused: bool) -> None:
    with psycopg.connect(standby.admin_url, autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_pause()" if paused else "SELECT pg_wal_replay_resume()")
        if paused:  # a pause is requested, then takes effect
            deadline = time.monotonic() + 60
            while (conn.execute("SELECT pg_get_wal_replay_pause_state()").fetchone() or [""])[
                0
            ] != "paused":
                assert time.monotonic() < deadline, "replay did not pause"
                time.sleep(0.05)


def _audit_rows(cluster: PgCluster, site: str) -> int:
    with psycopg.connect(cluster.database_url(site), autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM audit").fetchone()
    return int(row[0]) if row else 0


def test_read_only_vaults_read_the_replica_and_every_write_goes_to_the_primary(
    pg_clusters: Callable[[], PgCluster], tmp_path: Path
) -> None:
    primary = pg_clusters()
    urls = {name: primary.database_url(name) for s in SITES for name in (s, f"{s}_keys")}
    deployment = Deployment("postgresql", tmp_path, urls, None)
    vault = deployment.open()
    tokens = [
        vault.put(
            "profiles", subject=US, fields={"full_name": f"P {i}", "city": "Boston"},
            purpose="signup",
        ).token
        for i in range(20)
    ]  # fmt: skip
    vault.close()

    standby = primary.standby()
    try:
        text = deployment.config_text
        for site in SITES:
            url = urls[site]
            text = text.replace(
                f'backend: "{url}",', f'backend: "{url}", replica: "{standby.database_url(site)}",'
            )
        config_file = tmp_path / "domicile.yaml"
        config_file.write_text(text)
        config = parse_config(text, str(config_file), tmp_path)
        assert all(s.replica for s in config.sites)
        _caught_up(primary, standby)

        reader = Domicile(config, read_only=True)
        writer = Domicile(config)  # read-write: the primary only, replica or not
        try:
            assert f":{standby.port}/" in reader.store("us").display_url
            assert f":{primary.port}/" in writer.store("us").display_url
            assert reader.store("us").count() == 20
            assert all(r.ok for r in reader.verify_audit())
            assert check_parity(reader).ok

            # Nothing goes to the replica: it refuses writes (and nothing is half-written).
            with (
                pytest.raises(SiteUnavailable, match="read-only"),
                reader.store("us").transaction() as tx,
            ):
                tx.enqueue([("r", "s", "de", "upsert")])

            # Lag: with replay paused the replica falls behind. A read-write vault reads
            # its own write on the primary at once, and the audit entry of its read lands
            # there too; a read-only vault that must see it asks for the primary.
            _replay(standby, paused=True)
            before = _audit_rows(primary, "us")
            token = writer.put(
                "profiles", subject=US, fields={"full_name": "New", "city": "Austin"},
                purpose="signup",
            ).token  # fmt: skip
            assert writer.get(token, purpose="support").fields["city"] == "Austin"
            assert _audit_rows(primary, "us") == before + 2  # the write and the read
            assert reader.store("us").count() == 20  # the replica has not replayed them
            assert _audit_rows(standby, "us") == before
            fresh = Domicile(config, read_only=True, replicas=False)
            try:
                assert f":{primary.port}/" in fresh.store("us").display_url
                assert fresh.store("us").count() == 21
            finally:
                fresh.close()
            _replay(standby, paused=False)
            _caught_up(primary, standby)
            assert reader.store("us").count() == 21
            assert all(r.ok for r in reader.verify_audit())
        finally:
            reader.close(checkpoint=False)
            writer.close(checkpoint=False)

        # With the primary down, read-only commands still answer from the replica, while
        # a read (audited on the primary) fails closed.
        primary.stop()
        done = subprocess.run(
            [str(DOMICILE), "audit", "verify", "--config", str(config_file), "--json"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        verified = json.loads(done.stdout)
        sites = verified["sites"] if isinstance(verified, dict) else verified
        assert all(s["ok"] for s in sites), verified
        down = Domicile(config)
        try:
            with pytest.raises(DomicileError) as refused:
                down.get(tokens[0], purpose="support")
            assert refused.value.exit_code == 4
        finally:
            down.close(checkpoint=False)
    finally:
        standby.destroy()


def test_a_replica_must_be_a_postgresql_url(tmp_path: Path) -> None:
    """A SQLite "replica" (or any other URL) is refused when the configuration loads, with
    what to write instead: a read-only vault never opens something that is not a replica."""
    from domicile.errors import ConfigError
    from tests.vault.conftest import CONFIG, sqlite_urls

    text = CONFIG.format(**sqlite_urls()).replace(
        'backend: "sqlite:data/us.sqlite",',
        'backend: "sqlite:data/us.sqlite", replica: "sqlite:data/elsewhere.sqlite",',
    )
    assert "replica:" in text
    with pytest.raises(ConfigError, match="replica must be postgresql://"):
        parse_config(text, str(tmp_path / "domicile.yaml"), tmp_path)
