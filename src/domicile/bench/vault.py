"""``domicile bench vault``: the SDK against plain SQL on the same backend, in one run.

Writes N records through ``Domicile.put_many`` (residency, placement, per-field AES-GCM,
blind indexes, hash-chained audit, three sites) and the same plaintext rows through plain
``INSERT``s into one indexed table, in the same batch size; then reads a sample back by
token through ``Domicile.get`` (policy, decryption, an audit entry per read) and by key
through a plain indexed ``SELECT``. Prints each rate and the ratios (SDK / plain).
"""

from __future__ import annotations

import contextlib
import platform
import random
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from domicile.config import Config, parse_config

TARGET = 0.5
COUNTRIES = [
    ({"citizenship": "RU"}, "Moscow"),
    ({"citizenship": "US", "residence": "US"}, "Boston"),
    ({"citizenship": "DE", "residence": "DE"}, "Berlin"),
    ({"citizenship": "US"}, "Denver"),
    ({"citizenship": "RU", "residence": "RU"}, "Kazan"),
]

# The three benchmark sites and the profiles collection's fields, shared by the vault and
# transfer benchmarks (str.format templates: the backends' URLs go into the braces).
SITES = """sites:
  - {{id: ru, country: RU, location: {{provider: bench, city: Moscow, address: "-"}}, backend: "{ru}", keys: "{ru_keys}"}}
  - {{id: de, country: DE, location: {{provider: bench, city: Frankfurt, address: "-"}}, backend: "{de}", keys: "{de_keys}"}}
  - {{id: us, country: US, location: {{provider: bench, city: Ashburn, address: "-"}}, backend: "{us}", keys: "{us_keys}"}}
"""
PROFILE_FIELDS = """    fields:
      full_name: {{category: user.name}}
      email: {{category: user.contact.email, searchable: true, identifies: true, normalize: email}}
      phone: {{category: user.contact.phone_number}}
      headline: {{category: user.content.public}}
      city: {{category: user.contact.address.city}}
"""
CONFIG = (
    "default_site: us\ndata_dir: data\n"
    + SITES
    + "collections:\n  profiles:\n"
    + PROFILE_FIELDS
    + "filings:\n  ru.art22_notice: 2025-01-15\n"
)

RAW_TABLE = (
    "CREATE TABLE raw_profiles (id TEXT PRIMARY KEY, full_name TEXT, email TEXT, phone TEXT,"
    " headline TEXT, city TEXT)"
)
RAW_INDEX = "CREATE INDEX raw_profiles_email ON raw_profiles (email)"


def population(n: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        subject, city = COUNTRIES[i % len(COUNTRIES)]
        out.append(
            {
                "subject": subject,
                "fields": {
                    "full_name": f"Person {i} {rng.choice(['Ivanova', 'Schmidt', 'Smith', 'Petrov'])}",
                    "email": f"person{i}.{rng.randrange(10**6)}@example.org",
                    "phone": f"+1 202 555 {i % 10000:04d}",
                    "headline": rng.choice(["Engineer", "Recruiter", "Designer", "Analyst"]),
                    "city": city,
                },
            }
        )
    return out


class _Backend:
    """Where the benchmark's sites and its plain table live."""

    name: str

    def site_urls(self) -> dict[str, str]:
        raise NotImplementedError

    def raw(self) -> contextlib.AbstractContextManager[Any]:
        """A DB-API connection holding the plain ``raw_profiles`` table."""
        raise NotImplementedError

    def placeholder(self) -> str:
        return "?"

    def cleanup(self) -> None: ...


class _Sqlite(_Backend):
    name = "sqlite"

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def site_urls(self) -> dict[str, str]:
        urls = {s: f"sqlite:{self.folder / 'data' / f'{s}.sqlite'}" for s in ("ru", "de", "us")}
        urls.update(
            {
                f"{s}_keys": f"sqlite:{self.folder / 'keys' / f'{s}.sqlite'}"
                for s in ("ru", "de", "us")
            }
        )
        return urls

    @contextlib.contextmanager
    def raw(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.folder / "raw.sqlite", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # the site stores' own settings
        conn.execute(RAW_TABLE)
        conn.execute(RAW_INDEX)
        try:
            yield conn
        finally:
            conn.close()


class _Postgres(_Backend):
    name = "postgresql"

    def __init__(self, base_url: str) -> None:
        import psycopg

        self.base = base_url.rstrip("/")
        self.prefix = f"domicile_bench_{uuid.uuid4().hex[:8]}"
        self.names = [
            f"{self.prefix}_{s}" for s in ("ru", "de", "us", "ru_keys", "de_keys", "us_keys", "raw")
        ]
        with psycopg.connect(f"{self.base}/postgres", autocommit=True) as conn:
            for n in self.names:
                conn.execute(f'CREATE DATABASE "{n}"')

    def _url(self, suffix: str) -> str:
        return f"{self.base}/{self.prefix}_{suffix}"

    def site_urls(self) -> dict[str, str]:
        return {k: self._url(k) for k in ("ru", "de", "us", "ru_keys", "de_keys", "us_keys")}

    @contextlib.contextmanager
    def raw(self) -> Iterator[Any]:
        import psycopg

        conn = psycopg.connect(self._url("raw"))
        conn.execute(RAW_TABLE.replace("TEXT PRIMARY KEY", "TEXT PRIMARY KEY"))
        conn.execute(RAW_INDEX)
        conn.commit()
        try:
            yield conn
        finally:
            conn.close()

    def placeholder(self) -> str:
        return "%s"

    def cleanup(self) -> None:
        import psycopg

        with psycopg.connect(f"{self.base}/postgres", autocommit=True) as conn:
            for n in self.names:
                conn.execute(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)')


def _progress(console: Console | None) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console or Console(stderr=True), transient=True, disable=console is None,
    )  # fmt: skip


def _timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(
    records: int = 20_000,
    *,
    backend: str = "sqlite",
    postgres_url: str = "postgresql://postgres@127.0.0.1:5432",
    batch: int = 500,
    gets: int = 5_000,
    progress: Console | None = None,
) -> dict[str, Any]:
    from domicile.setup import create_deployment
    from domicile.vault import Domicile

    items = population(records)
    sample_size = min(gets, records)
    with tempfile.TemporaryDirectory(prefix="domicile-bench-") as tmp:
        folder = Path(tmp)
        be: _Backend = _Sqlite(folder) if backend == "sqlite" else _Postgres(postgres_url)
        try:
            config: Config = parse_config(CONFIG.format(**be.site_urls()), "bench.yaml", folder)
            create_deployment(config)  # sites are made only by setup
            vault = Domicile(config)
            batches = [items[i : i + batch] for i in range(0, len(items), batch)]
            with _progress(progress) as bar:
                task = bar.add_task(f"SDK put ({be.name})", total=records)
                tokens: list[tuple[str, str]] = []

                def sdk_put() -> None:
                    for chunk in batches:
                        for r in vault.put_many("profiles", chunk, purpose="benchmark"):
                            tokens.append((r.token, r.site))
                        bar.advance(task, len(chunk))

                put_time = _timed(sdk_put)
                rows = [
                    (
                        uuid.uuid4().hex,
                        *(
                            it["fields"][k]
                            for k in ("full_name", "email", "phone", "headline", "city")
                        ),
                    )
                    for it in items
                ]
                task = bar.add_task(f"plain INSERT ({be.name})", total=records)
                with be.raw() as conn:
                    ph = be.placeholder()
                    insert = f"INSERT INTO raw_profiles VALUES ({', '.join([ph] * 6)})"

                    def raw_insert() -> None:
                        for i in range(0, len(rows), batch):
                            chunk = rows[i : i + batch]
                            if backend == "sqlite":
                                conn.execute("BEGIN")
                                conn.executemany(insert, chunk)
                                conn.execute("COMMIT")
                            else:
                                with conn.cursor() as cur:
                                    cur.executemany(insert, chunk)
                                conn.commit()
                            bar.advance(task, len(chunk))

                    insert_time = _timed(raw_insert)
                    rng = random.Random(11)
                    sample = rng.sample(range(records), sample_size)
                    task = bar.add_task(f"SDK get ({be.name})", total=sample_size)

                    def sdk_get() -> None:
                        for i in sample:
                            token, site = tokens[i]
                            vault.get(token, purpose="benchmark", as_site=site)
                            bar.advance(task)

                    get_time = _timed(sdk_get)
                    select = f"SELECT * FROM raw_profiles WHERE id = {ph}"
                    task = bar.add_task(f"plain SELECT ({be.name})", total=sample_size)
                    if backend != "sqlite":
                        conn.autocommit = True  # a plain select is one round trip

                    def raw_select() -> None:
                        for i in sample:
                            if backend == "sqlite":
                                conn.execute(select, (rows[i][0],)).fetchone()
                            else:
                                conn.execute(select, (rows[i][0],)).fetchone()
                            bar.advance(task)

                    select_time = _timed(raw_select)
            vault.close()
        finally:
            be.cleanup()
    rates = {
        "sdk_batch_put": records / put_time,
        "raw_insert": records / insert_time,
        "sdk_get": sample_size / get_time,
        "raw_select": sample_size / select_time,
    }
    ratios = {
        "put_vs_insert": rates["sdk_batch_put"] / rates["raw_insert"],
        "get_vs_select": rates["sdk_get"] / rates["raw_select"],
    }
    return {
        "benchmark": "vault",
        "backend": backend,
        "python": platform.python_version(),
        "records": records,
        "batch": batch,
        "gets": sample_size,
        "per_second": {k: round(v) for k, v in rates.items()},
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "target": {"ratio": TARGET, "met": {k: v >= TARGET for k, v in ratios.items()}},
    }
