"""``domicile bench vault``: the SDK against plain SQL and an ORM on the same backend, in
one run.

Writes N records through ``Domicile.put_many`` (residency, placement, one AES-GCM seal per
record, blind indexes, hash-chained audit, three sites), the same plaintext rows through
plain ``INSERT``s into one indexed table, and the same records through a SQLAlchemy ORM
model with encrypted columns (``bench.orm``), all in the same batch size; then reads a
sample back with ``--readers`` concurrent readers: by token through ``Domicile.get``
(policy, decryption, an audit entry per read, group-committed), by key through a plain
indexed ``SELECT``, and by primary key through the ORM. Beside them, a scratch
implementation of exactly the work record layout 3 requires (``bench.ceiling``). Prints
each rate, the ratios (SDK / baseline), their targets and the ceiling of each.
"""

from __future__ import annotations

import contextlib
import platform
import random
import sqlite3
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from domicile.bench.judging import Ratio, in_threads, require_orm, split, summarize, timed
from domicile.config import Config, parse_config

# Issue 9's targets: put against a plain executemany insert, get against a plain indexed
# select (both backends), and at least the ORM's rates on both.
TARGETS = {"sqlite": {"put": 0.20, "get": 0.30}, "postgresql": {"put": 0.25, "get": 0.30}}
ORM_TARGET = 1.0
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
    return list(people(n, seed))


def people(n: int, seed: int = 7) -> Iterator[dict[str, Any]]:
    """``n`` sample records (no real people), one at a time: a large load need not hold
    them all."""
    rng = random.Random(seed)
    for i in range(n):
        subject, city = COUNTRIES[i % len(COUNTRIES)]
        yield {
            "subject": subject,
            "fields": {
                "full_name": f"Person {i} {rng.choice(['Ivanova', 'Schmidt', 'Smith', 'Petrov'])}",
                "email": f"person{i}.{rng.randrange(10**6)}@example.org",
                "phone": f"+1 202 555 {i % 10000:04d}",
                "headline": rng.choice(["Engineer", "Recruiter", "Designer", "Analyst"]),
                "city": city,
            },
        }


class _Backend:
    """Where the benchmark's sites and its plain table live."""

    name: str

    def site_urls(self) -> dict[str, str]:
        raise NotImplementedError

    def raw(self) -> contextlib.AbstractContextManager[Any]:
        """A DB-API connection holding the plain ``raw_profiles`` table."""
        raise NotImplementedError

    def raw_reader(self) -> Any:
        """Another connection to the plain table's database (autocommit), for a reader."""
        raise NotImplementedError

    def url(self, name: str) -> str:
        """A scratch database of the benchmark's own (``orm``, ``ceiling``): ``sqlite:PATH``
        or a PostgreSQL URL."""
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

    def raw_reader(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.folder / "raw.sqlite", isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

    def url(self, name: str) -> str:
        return f"sqlite:{self.folder / f'{name}.sqlite'}"


class _Postgres(_Backend):
    name = "postgresql"

    def __init__(self, base_url: str) -> None:
        import psycopg

        self.base = base_url.rstrip("/")
        self.prefix = f"domicile_bench_{uuid.uuid4().hex[:8]}"
        self.names = [
            f"{self.prefix}_{s}" for s in (
                "ru", "de", "us", "ru_keys", "de_keys", "us_keys", "raw", "orm", "ceiling",
                "ceiling_keys", "ceiling_to",
            )
        ]  # fmt: skip
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
        conn.execute(RAW_TABLE)
        conn.execute(RAW_INDEX)
        conn.commit()
        try:
            yield conn
        finally:
            conn.close()

    def placeholder(self) -> str:
        return "%s"

    def raw_reader(self) -> Any:
        import psycopg

        return psycopg.connect(self._url("raw"), autocommit=True)

    def url(self, name: str) -> str:
        return self._url(name)

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


def ratios(backend: str) -> list[Ratio]:
    """What ``bench vault`` judges on ``backend``."""
    goal = TARGETS[backend]
    return [
        Ratio("put_vs_insert", "sdk_batch_put", "raw_insert", goal["put"], "ceiling_put"),
        Ratio("get_vs_select", "sdk_get", "raw_select", goal["get"], "ceiling_get"),
        Ratio("put_vs_orm", "sdk_batch_put", "orm_put", ORM_TARGET, "ceiling_put"),
        Ratio("get_vs_orm", "sdk_get", "orm_get", ORM_TARGET, "ceiling_get"),
    ]


def run(
    records: int = 20_000,
    *,
    backend: str = "sqlite",
    postgres_url: str = "postgresql://postgres@127.0.0.1:5432",
    batch: int = 500,
    gets: int = 5_000,
    readers: int = 4,
    repeat: int = 1,
    progress: Console | None = None,
) -> dict[str, Any]:
    """``repeat`` runs, each on fresh databases; medians of the rates and of the ratios."""
    require_orm()
    runs = [
        _run_once(records, backend, postgres_url, batch, gets, readers, progress)
        for _ in range(repeat)
    ]
    out: dict[str, Any] = {
        "benchmark": "vault",
        "backend": backend,
        "python": platform.python_version(),
        "records": records,
        "batch": batch,
        "gets": min(gets, records),
        "readers": readers,
    }
    out.update(summarize(runs, ratios(backend)))
    return out


def _run_once(
    records: int,
    backend: str,
    postgres_url: str,
    batch: int,
    gets: int,
    readers: int,
    progress: Console | None,
) -> dict[str, float]:
    from domicile.bench import orm
    from domicile.bench.ceiling import Scratch
    from domicile.setup import create_deployment
    from domicile.vault import Domicile

    items = population(records)
    sample_size = min(gets, records)
    rng = random.Random(11)
    sample = rng.sample(range(records), sample_size)
    rows = [(uuid.uuid4().hex, *(it["fields"][k] for k in orm.COLUMNS)) for it in items]
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

                put_time = timed(sdk_put)
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

                    insert_time = timed(raw_insert)
                task = bar.add_task(f"ORM put, encrypted columns ({be.name})", total=records)
                engine = orm.engine(be.url("orm"))
                orm_put_time = orm.put(engine, rows, batch, lambda n: bar.advance(task, n))
                task = bar.add_task(f"required work of layout 3, put ({be.name})", total=records)
                # With a key store: a data key per new subject, as crypto-shredding needs.
                scratch = Scratch(be.url("ceiling"), keys_url=be.url("ceiling_keys"))
                ceiling_put_time = scratch.put(items, batch, lambda n: bar.advance(task, n))

                task = bar.add_task(f"SDK get x{readers} ({be.name})", total=sample_size)
                picked = [tokens[i] for i in sample]

                def sdk_reader(n: int) -> None:
                    for token, site in split(picked, readers)[n]:
                        vault.get(token, purpose="benchmark", as_site=site)
                        bar.advance(task)

                get_time = in_threads(readers, sdk_reader)
                task = bar.add_task(f"plain SELECT x{readers} ({be.name})", total=sample_size)
                select = f"SELECT * FROM raw_profiles WHERE id = {be.placeholder()}"
                raw_ids = [rows[i][0] for i in sample]
                conns = [be.raw_reader() for _ in range(readers)]

                def raw_reader(n: int) -> None:
                    conn = conns[n]
                    for rid in split(raw_ids, readers)[n]:
                        conn.execute(select, (rid,)).fetchone()
                        bar.advance(task)

                try:
                    select_time = in_threads(readers, raw_reader)
                finally:
                    for c in conns:
                        c.close()
                task = bar.add_task(f"ORM get x{readers} ({be.name})", total=sample_size)
                orm_get_time = orm.get(engine, raw_ids, readers, lambda n: bar.advance(task, n))
                engine.dispose()
                task = bar.add_task(f"required work of layout 3, get x{readers}", total=sample_size)
                scratch_ids = scratch.record_ids()
                scratch_sample = [scratch_ids[i] for i in sample]
                ceiling_get_time = scratch.get(
                    scratch_sample, readers, lambda n: bar.advance(task, n)
                )
                scratch.close()
            vault.close()
        finally:
            be.cleanup()
    return {
        "sdk_batch_put": records / put_time,
        "raw_insert": records / insert_time,
        "orm_put": records / orm_put_time,
        "ceiling_put": records / ceiling_put_time,
        "sdk_get": sample_size / get_time,
        "raw_select": sample_size / select_time,
        "orm_get": sample_size / orm_get_time,
        "ceiling_get": sample_size / ceiling_get_time,
    }
