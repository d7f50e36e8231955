"""A three-site deployment (RU, DE, US) per test, on SQLite files or on PostgreSQL.

On PostgreSQL the Russian site (and its key store) lives on a throwaway cluster of its own,
so a test can stop that server for real while Germany and the US, on the machine's server,
keep running. ``Deployment`` gives tests the raw view an auditor would take: every byte a
site keeps, and the power to tamper with it.
"""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from domicile.config import Config, parse_config
from domicile.setup import create_deployment
from domicile.vault import Domicile
from tests.pg import PG_BIN, PgCluster

FIXED_NOW = dt.datetime(2025, 9, 1, 12, 0, tzinfo=dt.UTC)
SITES = ("ru", "de", "us")

CONFIG = """
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
      full_name: {{category: user.name, required: true, max_length: 200}}
      email: {{category: user.contact.email, searchable: true, identifies: true, normalize: email}}
      phone: {{category: user.contact.phone_number, searchable: true, normalize: phone}}
      headline: {{category: user.content.public, max_length: 300}}
      city: {{category: user.contact.address.city}}
      age: {{category: user.demographic.age_range, type: integer}}
    replicate:
      - {{to: de, fields: [full_name, email, city]}}
      - {{to: us, fields: [full_name]}}
filings:
  ru.art22_notice: 2025-01-15
"""

IVAN = {
    "full_name": "Ivan Petrovich Sidorov",
    "email": "ivan.sidorov@example.ru",
    "city": "Yekaterinburg",
}


def sqlite_urls() -> dict[str, str]:
    urls = {s: f"sqlite:data/{s}.sqlite" for s in SITES}
    urls.update({f"{s}_keys": f"sqlite:data/keys/{s}.sqlite" for s in SITES})
    return urls


def make_config(folder: Path, urls: dict[str, str] | None = None) -> Config:
    return parse_config(
        CONFIG.format(**(urls or sqlite_urls())), str(folder / "domicile.yaml"), folder
    )


def open_vault(config: Config) -> Domicile:
    return Domicile(config, clock=lambda: FIXED_NOW)


class Deployment:
    """One test's deployment and raw access to its sites."""

    def __init__(
        self, backend: str, folder: Path, urls: dict[str, str], ru: PgCluster | None
    ) -> None:
        self.backend = backend
        self.folder = folder
        self.urls = urls
        self.ru_cluster = ru
        self.config = make_config(folder, urls)
        # Sites are created only by setup; the ru cluster's databases are new, hence
        # create_database (the machine's server's databases exist, empty).
        create_deployment(self.config, create_database=True)

    def open(self, now: dt.datetime = FIXED_NOW) -> Domicile:
        return Domicile(self.config, clock=lambda: now)

    @property
    def config_text(self) -> str:
        """The configuration as a file would hold it (for the CLI)."""
        return CONFIG.format(**self.urls)

    def url(self, name: str) -> str:
        url = self.urls[name]
        return (
            f"sqlite:{self.folder / url.removeprefix('sqlite:')}"
            if url.startswith("sqlite:")
            else url
        )

    def _path(self, name: str) -> Path:
        return Path(self.url(name).removeprefix("sqlite:"))

    def raw(self, name: str) -> bytes:
        """Every byte a store keeps: its files (SQLite, with WAL), or a full dump (PostgreSQL)."""
        if self.backend == "sqlite":
            p = self._path(name)
            return b"".join(f.read_bytes() for f in sorted(p.parent.glob(p.name + "*")))
        out = subprocess.run(
            [str(PG_BIN / "pg_dump"), "--data-only", "--inserts", self.url(name)],
            check=True, capture_output=True,
        )  # fmt: skip
        return out.stdout

    def dump(self, name: str) -> str:
        """A store's whole content as SQL text: what it holds, not how the file lays it out
        (SQLite rewrites pages when its write-ahead log is folded back on close)."""
        if self.backend == "sqlite":
            if not self._path(name).exists():
                return "(no file)"
            conn = sqlite3.connect(f"file:{self._path(name)}?mode=ro", uri=True)
            try:
                return "\n".join(conn.iterdump())
            finally:
                conn.close()
        lines = self.raw(name).decode().splitlines()
        return "\n".join(x for x in lines if not x.startswith(("\\restrict", "\\unrestrict")))

    def everything(self) -> bytes:
        """The raw bytes of every store, plus every file under the data folder."""
        blobs = [self.raw(n) for n in self.urls]
        blobs += [f.read_bytes() for f in sorted(self.folder.rglob("*")) if f.is_file()]
        return b"".join(blobs)

    def execute(self, name: str, *statements: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Run SQL straight against a store, bypassing domicile (an attacker's view)."""
        rows: list[Any] = []
        if self.backend == "sqlite":
            conn = sqlite3.connect(self._path(name))
            try:
                for sql in statements:
                    rows = conn.execute(sql, params if sql == statements[-1] else ()).fetchall()
                conn.commit()
            finally:
                conn.close()
        else:
            with psycopg.connect(self.url(name), autocommit=True) as pconn:
                for sql in statements:
                    cur = pconn.execute(
                        sql.replace("?", "%s"), params if sql == statements[-1] else ()
                    )
                    rows = cur.fetchall() if cur.description else []
        return rows

    def drop_audit_guard(self, name: str) -> None:
        """Drop the triggers that keep the log, its heads and witness records append-only."""
        tables = ("audit", "tree_heads", "witnessed")
        if self.backend == "sqlite":
            self.execute(
                name,
                *(
                    f"DROP TRIGGER IF EXISTS {t}_append_only_{op}"
                    for t in tables
                    for op in ("update", "delete")
                ),
            )
        else:
            self.execute(name, *(f"DROP TRIGGER IF EXISTS {t}_append_only ON {t}" for t in tables))

    def snapshot(self, name: str) -> Callable[[], None]:
        """Copy a site's data store now; the returned function puts the copy back."""
        if self.backend == "sqlite":
            src = self._path(name)
            saved = {f.name: f.read_bytes() for f in src.parent.glob(src.name + "*")}

            def restore() -> None:
                for f in src.parent.glob(src.name + "*"):
                    f.unlink()
                for fname, data in saved.items():
                    (src.parent / fname).write_bytes(data)

            return restore
        url = self.url(name)
        base, _, db = url.rpartition("/")
        copy = f"{db}_copy"
        with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{copy}" TEMPLATE "{db}"')

        def restore_pg() -> None:
            with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
                conn.execute(f'DROP DATABASE "{db}" WITH (FORCE)')
                conn.execute(f'ALTER DATABASE "{copy}" RENAME TO "{db}"')

        return restore_pg

    def stop(self, site: str) -> None:
        if self.backend == "sqlite":
            # The site's database cannot be opened: its files go aside (kept for ``start``)
            # and its path becomes a directory.
            p = self._path(site)
            aside = self.folder / f"{site}-down"
            aside.mkdir()
            for f in p.parent.glob(p.name + "*"):
                f.rename(aside / f.name)
            p.mkdir(parents=True)
        else:
            assert site == "ru"
            assert self.ru_cluster is not None
            self.ru_cluster.stop()

    def start(self, site: str) -> None:
        if self.backend == "sqlite":
            p = self._path(site)
            shutil.rmtree(p)
            aside = self.folder / f"{site}-down"
            for f in aside.iterdir():
                f.rename(p.parent / f.name)
            aside.rmdir()
        else:
            assert self.ru_cluster is not None
            self.ru_cluster.start()


@pytest.fixture(params=["sqlite", "postgresql"])
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    if request.param == "sqlite":
        yield Deployment("sqlite", tmp_path, sqlite_urls(), None)
        return
    ru: PgCluster = request.getfixturevalue("pg_cluster")
    make_db: Callable[[str], str] = request.getfixturevalue("pg_database")
    urls = {
        "ru": ru.database_url("ru"), "ru_keys": ru.database_url("ru_keys"),
        "de": make_db("de"), "de_keys": make_db("de_keys"),
        "us": make_db("us"), "us_keys": make_db("us_keys"),
    }  # fmt: skip
    yield Deployment("postgresql", tmp_path, urls, ru)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """A three-site SQLite deployment, set up."""
    config = make_config(tmp_path)
    create_deployment(config)
    return config


@pytest.fixture
def vault(config: Config) -> Iterator[Domicile]:
    d = open_vault(config)
    yield d
    d.close()
