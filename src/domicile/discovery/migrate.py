"""``domicile migrate``: move the subjects a scan's findings name into their home sites,
through the vault, and leave tokens (or nothing) in the source in their place.

Three steps, each its own command:

- **plan** scans the source (reading only), proposes a mapping of columns to the fields of
  a collection from the columns' categories, places every subject a finding names with
  the vault's own placement, and writes it all to a plan file the user can edit: which
  rows of which tables move, which columns go to which field, what the legacy values
  become (``tokens`` or ``delete``), and how many subjects go to each site.
- **run** moves the rows, batch by batch. A batch is one transaction of the source: its
  rows are locked (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL, MariaDB: ``SELECT ... FOR
  UPDATE``), put into the vault, then rewritten, then committed. Each row's record id is
  derived from the plan's id, the table and the row's key, so a run killed between the
  vault's commit and the source's finds the records already written and only rewrites the
  rows: nothing lost, nothing written twice. The journal (a SQLite file beside the plan)
  holds each row's intent before the vault write and marks it done after the source's
  commit; it is what ``verify`` checks a deleted value against.
- **verify** reads only: every moved row holds the token of its own record (or nothing,
  for ``delete``), every token resolves to a record that exists, the counts agree, no
  value of a moved row still matches a moved record's blind index, and every site's
  audit log verifies.

No value of the source is ever printed, logged or written anywhere but the vault: plans,
journals and reports name tables, columns, keys, sites and counts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from domicile.categories import is_under
from domicile.discovery.sources import DatabaseSource, open_source
from domicile.errors import BadInput, DomicileError, SourceError
from domicile.residency import Residency, TriSet

FORMAT = 1
PURPOSE = "legacy_migration"
LEGACY = ("tokens", "delete")
TOKEN_PREFIX = "dom1_"

Progress = Callable[[str, int], None]


# --- the plan ------------------------------------------------------------------------------


@dataclass
class Step:
    """A link from a table up towards the subjects' table: ``column`` holds a key of
    ``table`` (whose key column is ``key``)."""

    column: str
    table: str
    key: str


@dataclass
class TablePlan:
    name: str
    key: str
    map: dict[str, str]  # column -> field
    via: list[Step] = field(default_factory=list)  # [] for the subjects' table
    kept: list[str] = field(default_factory=list)  # personal columns without a field

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "map": dict(self.map),
            "via": [{"column": s.column, "table": s.table, "key": s.key} for s in self.via],
            "kept": list(self.kept),
        }


@dataclass
class Plan:
    id: str
    created: str
    source: str  # the URL without its password
    source_description: str
    fingerprint: str
    located_in: str
    collection: str
    legacy: str
    batch_size: int
    purpose: str
    tables: dict[str, TablePlan]
    subjects: dict[str, dict[str, Any]]  # subject id -> {"site": id or None, "residency": n}
    residencies: list[dict[str, Any]]
    path: Path | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        sites = Counter(str(s["site"]) for s in self.subjects.values() if s["site"])
        return {
            "domicile_migration": FORMAT,
            "id": self.id,
            "created": self.created,
            "source": self.source,
            "source_description": self.source_description,
            "fingerprint": self.fingerprint,
            "located_in": self.located_in,
            "collection": self.collection,
            "legacy": self.legacy,
            "batch_size": self.batch_size,
            "purpose": self.purpose,
            "tables": {n: t.to_dict() for n, t in self.tables.items()},
            "destinations": dict(sorted(sites.items())),
            "unplaced": sum(1 for s in self.subjects.values() if not s["site"]),
            "notes": list(self.notes),
            "subjects": self.subjects,
            "residencies": self.residencies,
        }

    def moving(self, sid: str) -> bool:
        entry = self.subjects.get(sid)
        return bool(entry and entry.get("site"))

    def residency(self, sid: str) -> Residency:
        return residency_from_dict(self.residencies[self.subjects[sid]["residency"]])

    def record_id(self, table: str, key: str) -> str:
        """The record id of a row: 12 hex digits of the plan (its time, so a migration's
        records sort together), then 20 of a hash of the plan, the table and the key."""
        digest = hashlib.sha256(f"{self.id}\x00{table}\x00{key}".encode()).hexdigest()
        return self.id[:12] + digest[:20]

    @property
    def journal_path(self) -> Path:
        # Named for the plan: a new plan written over an old one starts a journal of its own.
        assert self.path is not None
        return self.path.with_name(f"{self.path.name}.{self.id[-8:]}.journal")


def residency_to_dict(r: Residency) -> dict[str, Any]:
    return {
        "citizenship": r.citizenship.to_dict(),
        "residence": r.residence.to_dict(),
        "location": r.location.to_dict(),
    }


def residency_from_dict(data: Mapping[str, Any]) -> Residency:
    def tri(d: Mapping[str, Any]) -> TriSet:
        return TriSet(frozenset(d.get("certain", ())), frozenset(d.get("possible", ())))

    return Residency(
        tri(data.get("citizenship", {})),
        tri(data.get("residence", {})),
        tri(data.get("location", {})),
        (),
    )


def public_url(spec: str) -> str:
    """The source URL as a plan keeps it: without a password, a SQLite path made absolute."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(spec)
    except (ArgumentError, ValueError):
        raise SourceError(
            "the source is not a database URL",
            hint="migrate moves rows of a database: postgresql://, mysql:// or sqlite:///FILE",
        ) from None
    from sqlalchemy.engine import URL

    # ``set(password=None)`` keeps the password: build the URL again without one.
    url = URL.create(
        url.drivername, url.username, None, url.host, url.port, url.database, url.query
    )
    if url.drivername.startswith("sqlite") and url.database:
        url = url.set(database=str(Path(url.database).resolve()))
    return url.render_as_string(hide_password=False)


def _same_source(a: str, b: str) -> bool:
    from sqlalchemy.engine import make_url

    def norm(u: str) -> tuple[Any, ...]:
        url = make_url(public_url(u))
        driver = url.drivername.partition("+")[0].replace("postgres", "postgresql")
        driver = driver.replace("postgresqlql", "postgresql").replace("mariadb", "mysql")
        return (driver, url.host or "", url.port, url.database or "", url.username or "")

    return norm(a) == norm(b)


def _fingerprint(source: DatabaseSource, tables: Sequence[str]) -> str:
    infos = {i.name: i for i in source.tables()}
    text = "\n".join(
        f"{t}:{','.join(infos[t].columns)}" if t in infos else f"{t}:-" for t in sorted(tables)
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _ordinary_database(spec: str) -> None:
    if "://" not in spec and not spec.startswith("sqlite:"):
        raise BadInput(
            "migrate moves rows of a database, not files",
            hint="give a database URL (postgresql://, mysql://, sqlite:///FILE); files are read-only exports",
        )


def make_plan(
    spec: str,
    *,
    vault: Any,
    collection: str,
    located_in: str,
    engine: Any,
    maps: Sequence[str] = (),
    legacy: str = "tokens",
    batch_size: int = 500,
    progress: Progress | None = None,
) -> Plan:
    """Scan ``spec`` (reading only) and propose a plan for moving its findings home."""
    from domicile.discovery.scan import scan
    from domicile.vault.core import new_ids
    from domicile.vault.errors import PolicyRefused

    _ordinary_database(spec)
    if legacy not in LEGACY:
        raise BadInput(f"unknown --legacy {legacy!r}", hint="use tokens or delete")
    coll = vault.collection(collection)
    overrides = _parse_maps(maps)
    source = open_source(spec)
    assert isinstance(source, DatabaseSource)
    try:
        infos = {i.name: i for i in source.tables()}
        residencies: dict[str, Residency] = {}
        report = scan(
            source, located_in=located_in, engine=engine, progress=progress,
            residencies=residencies,
        )  # fmt: skip
        moving: set[str] = set()
        for f in report["findings"]:
            moving.update(f["subject_refs"])
        parents: dict[str, tuple[str, str, str]] = {}
        for link in report["links"]:
            t, c = link["from"].split(".", 1)
            tt, tk = link["to"].split(".", 1)
            parents.setdefault(t, (c, tt, tk))
        roots = set(report["subject_tables"])
        notes: list[str] = []
        tables: dict[str, TablePlan] = {}
        for name, info in infos.items():
            personal = {
                col: c["category"]
                for key, c in report["columns"].items()
                for t, col in [key.split(".", 1)]
                if t == name and c["category"]
            }
            via: list[Step] = []
            cur = name
            while cur not in roots and cur in parents and len(via) <= len(infos):
                c, tt, tk = parents[cur]
                via.append(Step(c, tt, tk))
                cur = tt
            if cur not in roots:
                continue  # linked to no subject
            mapping = _propose(personal, coll)
            for (t, col), fld in overrides.items():
                if t not in (None, name):
                    continue
                if col not in info.columns:
                    if t == name:
                        raise BadInput(
                            f"--map: table {name!r} has no column {col!r}",
                            hint=f"its columns are: {', '.join(info.columns)}",
                        )
                    continue
                if fld:
                    if fld not in coll.fields:
                        raise BadInput(
                            f"--map: collection {collection!r} has no field {fld!r}",
                            hint=f"its fields are: {', '.join(coll.fields)}",
                        )
                    mapping = {k: v for k, v in mapping.items() if v != fld}
                    mapping[col] = fld
                else:
                    mapping.pop(col, None)
            if not mapping:
                if personal:
                    notes.append(
                        f"{name}: no field of {collection!r} for its personal columns; they stay "
                        f"({', '.join(sorted(personal))})"
                    )
                continue
            if len(info.primary_key) != 1:
                notes.append(f"{name}: no single-column primary key; its rows stay")
                continue
            key = info.primary_key[0]
            if key in mapping or key in personal:
                notes.append(f"{name}: its key holds personal data; its rows stay")
                continue
            missing = [
                n for n, s in coll.fields.items() if s.required and n not in mapping.values()
            ]
            if missing:
                explicit = any(t == name for t, _ in overrides)
                if explicit:
                    raise BadInput(
                        f"--map: table {name!r} maps no column to the required field(s) {', '.join(missing)}",
                        hint=f"add --map {name}.COLUMN={missing[0]}",
                    )
                notes.append(
                    f"{name}: no column for the required field(s) {', '.join(missing)} of "
                    f"{collection!r}; its personal columns stay ({', '.join(sorted(personal))})"
                )
                continue
            kept = sorted(c for c in personal if c not in mapping)
            tables[name] = TablePlan(name, key, mapping, via, kept)
            if kept:
                notes.append(f"{name}: personal columns with no field stay: {', '.join(kept)}")
        unknown = [
            f"{t}.{c}" if t else c
            for t, c in overrides
            if not any(t in (None, n) and c in infos[n].columns for n in infos)
        ]
        if unknown:
            raise BadInput(
                f"--map: no column {unknown[0]!r} in the source",
                hint="write --map TABLE.COLUMN=FIELD",
            )
        # Placement: the vault's own, for the fields each subject's records would hold.
        cats = sorted({coll.fields[f].category for t in tables.values() for f in t.map.values()})
        res_index: dict[Residency, int] = {}
        res_list: list[dict[str, Any]] = []
        placed: dict[Residency, str | None] = {}
        subjects: dict[str, dict[str, Any]] = {}
        for sid in sorted(moving):
            r = residencies.get(sid)
            if r is None:
                continue
            if r not in res_index:
                res_index[r] = len(res_list)
                res_list.append(residency_to_dict(r))
                try:
                    site, _ = vault.place(r, cats) if cats else (None, None)
                    placed[r] = site.id if site else None
                except PolicyRefused:
                    placed[r] = None
            subjects[sid] = {"site": placed[r], "residency": res_index[r]}
        if not tables:
            notes.append(f"no table holds a record of {collection!r}: nothing would move")
        plan = Plan(
            id=new_ids(1)[0],
            created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            source=public_url(spec),
            source_description=source.description,
            fingerprint=_fingerprint(source, list(tables)),
            located_in=located_in,
            collection=collection,
            legacy=legacy,
            batch_size=batch_size,
            purpose=PURPOSE,
            tables=tables,
            subjects=subjects,
            residencies=res_list,
            notes=notes,
        )
        return plan
    finally:
        source.close()


def _parse_maps(maps: Sequence[str]) -> dict[tuple[str | None, str], str]:
    out: dict[tuple[str | None, str], str] = {}
    for m in maps:
        col, sep, fld = m.partition("=")
        if not sep or not col.strip():
            raise BadInput(
                f"--map {m!r} is not COLUMN=FIELD", hint="e.g. --map customers.fld_b=email"
            )
        table, dot, column = col.strip().rpartition(".")
        out[(table if dot else None, column)] = fld.strip()
    return out


def _propose(personal: Mapping[str, str], coll: Any) -> dict[str, str]:
    """Column -> field, from the columns' categories: the field of the same category, or
    one whose category is broader; each field once (the first column in order wins)."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for exact in (True, False):
        for col, cat in personal.items():
            if col in out:
                continue
            for name, spec in coll.fields.items():
                if name in used:
                    continue
                hit = spec.category == cat if exact else is_under(cat, spec.category)
                if hit:
                    out[col] = name
                    used.add(name)
                    break
    return out


def save_plan(plan: Plan, path: Path) -> None:
    data = plan.to_dict()
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
    else:
        text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
    try:
        path.write_text(text, encoding="utf-8")
    except OSError:
        raise BadInput(
            f"cannot write {path}", hint="check the folder and its permissions"
        ) from None


def load_plan(path: Path) -> Plan:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(
            f"no plan file at {path}",
            hint="write one with `domicile migrate plan SOURCE --out FILE`",
        ) from None
    except (OSError, UnicodeDecodeError):
        raise BadInput(f"cannot read the plan file {path}", hint="check the file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        raise BadInput(
            f"{path} is not a plan (neither JSON nor YAML)", hint="check the file"
        ) from None
    if not isinstance(data, dict) or data.get("domicile_migration") != FORMAT:
        raise BadInput(
            f"{path} is not a migration plan of this version",
            hint="write one with `domicile migrate plan SOURCE --out FILE`",
        )
    try:
        tables = {
            str(n): TablePlan(
                str(n),
                str(t["key"]),
                {str(c): str(f) for c, f in (t.get("map") or {}).items()},
                [
                    Step(str(s["column"]), str(s["table"]), str(s["key"]))
                    for s in t.get("via") or []
                ],
                [str(c) for c in t.get("kept") or []],
            )
            for n, t in (data.get("tables") or {}).items()
        }
        legacy = str(data["legacy"])
        batch = int(data["batch_size"])
        if legacy not in LEGACY or not 1 <= batch <= 100_000:
            raise ValueError
        subjects = {str(k): dict(v) for k, v in (data.get("subjects") or {}).items()}
        residencies = list(data.get("residencies") or [])
        for v in subjects.values():
            if v.get("site") is not None and not 0 <= int(v["residency"]) < len(residencies):
                raise ValueError
        return Plan(
            id=str(data["id"]),
            created=str(data["created"]),
            source=str(data["source"]),
            source_description=str(data["source_description"]),
            fingerprint=str(data["fingerprint"]),
            located_in=str(data["located_in"]),
            collection=str(data["collection"]),
            legacy=legacy,
            batch_size=batch,
            purpose=str(data.get("purpose") or PURPOSE),
            tables=tables,
            subjects=subjects,
            residencies=residencies,
            path=path,
            notes=[str(n) for n in data.get("notes") or []],
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise BadInput(
            f"{path} is not a valid migration plan",
            hint="legacy is tokens or delete; batch_size 1 to 100000; tables need key and map",
        ) from None


def open_planned_source(plan: Plan, override: str | None, *, writable: bool) -> DatabaseSource:
    """The plan's source (or ``override``, the same source with its password), checked to be
    the one the plan was made for."""
    spec = override or plan.source
    if override is not None:
        _ordinary_database(override)
        if not _same_source(override, plan.source):
            raise BadInput(
                f"the plan is for another source ({plan.source_description})",
                hint="give --source the URL of the database the plan was made from",
            )
    source = DatabaseSource(spec, writable=writable)
    try:
        if _fingerprint(source, list(plan.tables)) != plan.fingerprint:
            raise BadInput(
                f"the plan is for another source ({plan.source_description}): its tables differ",
                hint="make a new plan for this source with `domicile migrate plan`",
            )
    except BaseException:
        source.close()
        raise
    return source


# --- the journal ---------------------------------------------------------------------------


class Journal:
    """The migration's state, in a SQLite file beside the plan: per table the key after
    which the next batch starts, and per row its record id, site and state (``intent``
    before the vault write, ``done`` after the source's commit, ``refused`` when the vault
    would not take it). Never a value: keys, ids, sites."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = path
        if read_only:
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.fchmod(fd, 0o600)
        self._lock_fd = fd
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BadInput(
                "another `migrate run` of this plan is running",
                hint="wait for it to finish, or stop it and run again",
            ) from None
        except ImportError:  # pragma: no cover - no fcntl (Windows)
            pass
        self.db = sqlite3.connect(path, isolation_level=None)
        # A rollback journal, not WAL: ``verify`` opens the file read-only, and a WAL file
        # cannot be read without creating its companions.
        self.db.execute("PRAGMA journal_mode = DELETE")
        self.db.execute("PRAGMA synchronous = FULL")
        self.db.executescript(
            """
            CREATE TABLE IF NOT EXISTS cursor (tbl TEXT PRIMARY KEY, after TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS rows (
                tbl TEXT NOT NULL, key TEXT NOT NULL, rid TEXT NOT NULL, site TEXT,
                state TEXT NOT NULL, PRIMARY KEY (tbl, key));
            """
        )

    @staticmethod
    def open_existing(path: Path) -> Journal | None:
        db = path
        if not db.exists():
            return None
        j = Journal.__new__(Journal)
        j.path = path
        j.db = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        return j

    def cursor(self, table: str) -> Any:
        row = self.db.execute("SELECT after FROM cursor WHERE tbl = ?", (table,)).fetchone()
        return json.loads(row[0]) if row else None

    def intend(self, table: str, rows: Sequence[tuple[str, str]]) -> None:
        with self._tx():
            self.db.executemany(
                "INSERT INTO rows VALUES (?, ?, ?, NULL, 'intent') ON CONFLICT DO NOTHING",
                [(table, k, rid) for k, rid in rows],
            )

    def finish(
        self, table: str, done: Sequence[tuple[str, str]], refused: Sequence[str], after: Any
    ) -> None:
        with self._tx():
            self.db.executemany(
                "UPDATE rows SET state = 'done', site = ? WHERE tbl = ? AND key = ?",
                [(site, table, k) for k, site in done],
            )
            self.db.executemany(
                "UPDATE rows SET state = 'refused' WHERE tbl = ? AND key = ?",
                [(table, k) for k in refused],
            )
            if after is not None:
                self.db.execute(
                    "INSERT INTO cursor VALUES (?, ?) ON CONFLICT (tbl) DO UPDATE SET after = excluded.after",
                    (table, json.dumps(after)),
                )

    def rows(self, table: str) -> dict[str, tuple[str, str | None, str]]:
        try:
            return {
                k: (rid, site, state)
                for k, rid, site, state in self.db.execute(
                    "SELECT key, rid, site, state FROM rows WHERE tbl = ?", (table,)
                )
            }
        except sqlite3.Error:
            raise BadInput(
                f"the journal {self.path.name} cannot be read (a run stopped mid-write?)",
                hint="run `domicile migrate run` again to finish and repair it, then verify",
            ) from None

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()
        fd = getattr(self, "_lock_fd", None)
        if fd is not None:
            os.close(fd)


# --- reading the source --------------------------------------------------------------------


def _sa() -> Any:
    import sqlalchemy as sa

    return sa


def _owners(source: DatabaseSource, table: TablePlan, batch: int) -> list[dict[str, str]]:
    """For each step of ``table``'s path but the last: the target table's key -> the value
    of its own link column (what the step after reads), as text."""
    out: list[dict[str, str]] = []
    for step, nxt in zip(table.via, table.via[1:], strict=False):
        m: dict[str, str] = {}
        for b in source.batches(step.table, [step.key, nxt.column], batch):
            for k, v in zip(b[step.key], b[nxt.column], strict=True):
                if k is not None and v is not None:
                    m[str(k)] = str(v)
        out.append(m)
    return out


def _subject_of(
    table: TablePlan, row: Mapping[str, Any], owners: Sequence[Mapping[str, str]]
) -> str | None:
    if not table.via:
        return f"{table.name}:{row[table.key]}"
    value = row[table.via[0].column]
    if value is None:
        return None
    cur = str(value)
    for m in owners:
        nxt = m.get(cur)
        if nxt is None:
            return None
        cur = nxt
    return f"{table.via[-1].table}:{cur}"


def _is_token(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(TOKEN_PREFIX)


def _count(source: DatabaseSource, table: str) -> int:
    sa = _sa()
    stmt = sa.select(sa.func.count()).select_from(sa.table(table))
    try:
        n = int(source.connection.execute(stmt).scalar() or 0)
        if not source.connection.in_transaction():
            return n
        source.connection.rollback()
        return n
    except Exception as exc:
        raise _translated(source, exc) from None


def _translated(source: DatabaseSource, exc: Exception) -> Exception:
    """A driver's error as domicile's (without the driver's words); any other as it is."""
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError):
        return source.translate(exc)
    return exc


# --- run -----------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a run did (or, dry, would do), per table and site; counts only."""

    dry_run: bool
    moved: Counter[str] = field(default_factory=Counter)  # site -> rows
    tables: dict[str, Counter[str]] = field(default_factory=dict)
    refused: Counter[str] = field(default_factory=Counter)  # reason -> rows
    batches: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        rows = sum(self.moved.values())
        return {
            "dry_run": self.dry_run,
            "moved": rows,
            "sites": dict(sorted(self.moved.items())),
            "tables": {t: dict(sorted(c.items())) for t, c in self.tables.items()},
            "refused": dict(sorted(self.refused.items())),
            "batches": self.batches,
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(rows / self.seconds, 1) if self.seconds > 0 else None,
        }


def run(
    plan: Plan,
    *,
    vault: Any,
    source: DatabaseSource,
    dry_run: bool = False,
    progress: Progress | None = None,
    total: Callable[[int], None] | None = None,
) -> Outcome:
    """Move the plan's rows (see the module's docstring); ``dry_run`` writes nothing."""
    started = time.perf_counter()
    out = Outcome(dry_run)
    journal = None if dry_run else Journal(plan.journal_path)
    try:
        if total is not None:
            total(sum(_count(source, t) for t in plan.tables))
        for table in plan.tables.values():
            _run_table(plan, table, vault, source, journal, out, progress)
    finally:
        if journal is not None:
            journal.close()
    out.seconds = time.perf_counter() - started
    return out


@dataclass
class _Row:
    key: Any
    text_key: str
    sid: str
    fields: dict[str, Any]
    rid: str


def _run_table(
    plan: Plan,
    table: TablePlan,
    vault: Any,
    source: DatabaseSource,
    journal: Journal | None,
    out: Outcome,
    progress: Progress | None,
) -> None:
    sa = _sa()
    conn = source.connection
    counts = out.tables.setdefault(table.name, Counter())
    owners = _owners(source, table, plan.batch_size)
    columns = list(dict.fromkeys([table.key, *(s.column for s in table.via[:1]), *table.map]))
    t = sa.table(table.name, *(sa.column(c) for c in columns))
    after = journal.cursor(table.name) if journal else None
    if after is not None and progress is not None:
        done_before = conn.execute(
            sa.select(sa.func.count()).select_from(t).where(t.c[table.key] <= after)
        ).scalar()
        if conn.in_transaction():
            conn.rollback()
        progress(table.name, int(done_before or 0))
    # Rows are locked for the batch: by ``BEGIN IMMEDIATE`` on SQLite, else row by row.
    lock = journal is not None and source.backend != "sqlite"
    while True:
        stmt = sa.select(*(t.c[c] for c in columns)).order_by(t.c[table.key])
        if after is not None:
            stmt = stmt.where(t.c[table.key] > after)
        stmt = stmt.limit(plan.batch_size)
        if lock:
            stmt = stmt.with_for_update()
        try:
            if journal is not None and source.backend == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            rows = [dict(zip(columns, r, strict=True)) for r in conn.execute(stmt)]
            if not rows:
                _end(conn, commit=False)
                return
            last = rows[-1][table.key]
            todo = _select_rows(plan, table, rows, owners, counts)
            if journal is None:
                _end(conn, commit=False)
                _dry_batch(plan, vault, todo, out, counts)
            else:
                _move_batch(plan, table, vault, conn, journal, todo, last, out, counts)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                _end(conn, commit=False)
            if isinstance(exc, Exception) and not isinstance(exc, DomicileError):
                raise _translated(source, exc) from None
            raise
        out.batches += 1
        after = last if not isinstance(last, bytes) else None
        if progress is not None:
            progress(table.name, len(rows))
        if after is None:
            return


def _end(conn: Any, *, commit: bool) -> None:
    if commit:
        conn.commit()
    elif conn.in_transaction():
        conn.rollback()
    else:
        with contextlib.suppress(Exception):
            conn.exec_driver_sql("ROLLBACK")


def _select_rows(
    plan: Plan,
    table: TablePlan,
    rows: Sequence[Mapping[str, Any]],
    owners: Sequence[Mapping[str, str]],
    counts: Counter[str],
) -> list[_Row]:
    todo: list[_Row] = []
    for row in rows:
        sid = _subject_of(table, row, owners)
        if sid is None or not plan.moving(sid):
            counts["stay"] += 1
            continue
        values = {f: row[c] for c, f in table.map.items() if row[c] is not None}
        if not values:
            counts["already" if plan.legacy == "delete" else "empty"] += 1
            continue
        if all(_is_token(v) for v in values.values()):
            counts["already"] += 1
            continue
        key = row[table.key]
        todo.append(_Row(key, str(key), sid, values, plan.record_id(table.name, str(key))))
    return todo


def _existing(vault: Any, rids: Sequence[str]) -> dict[str, str]:
    """Record id -> site, for the ids some site holds already (as its primary)."""
    found: dict[str, str] = {}
    for site in vault.config.sites:
        for rid, rec in vault.store(site.id).get_many(list(rids)).items():
            if not rec.is_replica:
                found[rid] = site.id
    return found


def _dry_batch(
    plan: Plan, vault: Any, todo: Sequence[_Row], out: Outcome, counts: Counter[str]
) -> None:
    existing = _existing(vault, [r.rid for r in todo]) if todo else {}
    for r in todo:
        site = existing.get(r.rid) or plan.subjects[r.sid]["site"]
        out.moved[site] += 1
        counts["move"] += 1


def _move_batch(
    plan: Plan,
    table: TablePlan,
    vault: Any,
    conn: Any,
    journal: Journal,
    todo: Sequence[_Row],
    last: Any,
    out: Outcome,
    counts: Counter[str],
) -> None:
    sa = _sa()
    journal.intend(table.name, [(r.text_key, r.rid) for r in todo])
    existing = _existing(vault, [r.rid for r in todo]) if todo else {}
    tokens: dict[str, tuple[str, str]] = {}  # rid -> (token, site)
    for rid, site in existing.items():
        tokens[rid] = (vault.tokens.issue(site, rid), site)
    fresh = [r for r in todo if r.rid not in existing]
    refused: dict[str, str] = {}
    for r, result in zip(fresh, _put(plan, vault, fresh), strict=True):
        if isinstance(result, str):
            refused[r.text_key] = result
        else:
            tokens[r.rid] = (result.token, result.site)
    done = [r for r in todo if r.rid in tokens]
    if done:
        t = sa.table(table.name, *(sa.column(c) for c in [table.key, *table.map]))
        if plan.legacy == "tokens":
            stmt = (
                sa.update(t)
                .where(t.c[table.key] == sa.bindparam("_k"))
                .values({c: sa.bindparam("_t") for c in table.map})
            )
            params = [{"_k": r.key, "_t": tokens[r.rid][0]} for r in done]
        else:
            stmt = (
                sa.update(t)
                .where(t.c[table.key] == sa.bindparam("_k"))
                .values({c: None for c in table.map})
            )
            params = [{"_k": r.key} for r in done]
        conn.execute(stmt, params)
    _end(conn, commit=True)
    journal.finish(
        table.name,
        [(r.text_key, tokens[r.rid][1]) for r in done],
        list(refused),
        None if isinstance(last, bytes) else last,
    )
    for r in done:
        out.moved[tokens[r.rid][1]] += 1
    counts["move"] += len(done)
    counts["refused"] += len(refused)
    out.refused.update(refused.values())


def _put(plan: Plan, vault: Any, rows: Sequence[_Row]) -> list[Any]:
    """Put the rows' records; a batch the vault refuses is tried row by row, and a row it
    refuses alone stays in the source (its reason, by kind, is returned in its place)."""
    from domicile.errors import BadInput as _Bad
    from domicile.vault.errors import PolicyRefused

    if not rows:
        return []

    def put(part: Sequence[_Row]) -> list[Any]:
        return list(
            vault.put_many(
                plan.collection,
                [{"subject": plan.residency(r.sid), "fields": r.fields} for r in part],
                purpose=plan.purpose,
                record_ids=[r.rid for r in part],
            )
        )

    try:
        return put(rows)
    except (PolicyRefused, _Bad):
        pass
    results: list[Any] = []
    for r in rows:
        try:
            results.extend(put([r]))
        except PolicyRefused:
            results.append("policy")
        except _Bad:
            results.append("invalid value")
    return results


# --- verify --------------------------------------------------------------------------------


def verify(
    plan: Plan, *, vault: Any, source: DatabaseSource, progress: Progress | None = None
) -> dict[str, Any]:
    """Check a migration (reading only); ``problems`` is empty when all is well."""
    from domicile.crypto.blind import BlindIndexer
    from domicile.vault import values as vvalues
    from domicile.vault.errors import InvalidToken

    problems: list[str] = []
    journal = Journal.open_existing(plan.journal_path) if plan.path else None
    coll = vault.collection(plan.collection)
    searchable = [(n, s) for n, s in coll.fields.items() if s.searchable]
    indexers = {s.id: BlindIndexer(vault.keys.index_key(s.id)) for s in vault.config.sites}
    stats: Counter[str] = Counter()
    sites: Counter[str] = Counter()
    try:
        for table in plan.tables.values():
            owners = _owners(source, table, plan.batch_size)
            jrows = journal.rows(table.name) if journal else {}
            personal = [*table.map, *table.kept]
            cols = list(dict.fromkeys([table.key, *(s.column for s in table.via[:1]), *personal]))
            seen: set[str] = set()
            for batch in source.batches(table.name, cols, plan.batch_size):
                rows = [
                    dict(zip(cols, r, strict=True))
                    for r in zip(*(batch[c] for c in cols), strict=True)
                ]
                expect: dict[str, tuple[str, str]] = {}  # rid -> (key, what)
                check_values: list[tuple[str, str, Any]] = []
                for row in rows:
                    sid = _subject_of(table, row, owners)
                    if sid is None or not plan.moving(sid):
                        continue
                    key = str(row[table.key])
                    seen.add(key)
                    rid = plan.record_id(table.name, key)
                    mapped = {c: row[c] for c in table.map if row[c] is not None}
                    tokens = {c: v for c, v in mapped.items() if _is_token(v)}
                    plain = [c for c in mapped if c not in tokens]
                    j = jrows.get(key)
                    if plan.legacy == "tokens":
                        if plain and not tokens:
                            if j and j[2] == "refused":
                                stats["refused"] += 1
                            else:
                                stats["not moved"] += 1
                            continue
                        if plain:
                            problems.append(
                                f"{table.name} row {key}: {', '.join(plain)} still hold values beside tokens"
                            )
                        for c, v in tokens.items():
                            try:
                                site, got = vault.tokens.read(v)
                            except InvalidToken:
                                problems.append(
                                    f"{table.name} row {key}: {c} holds a token that does not resolve"
                                )
                                continue
                            if got != rid:
                                problems.append(
                                    f"{table.name} row {key}: {c} holds the token of another record"
                                )
                                continue
                            expect[rid] = (key, site)
                    else:
                        if plain:
                            if j and j[2] == "done":
                                problems.append(
                                    f"{table.name} row {key}: moved, but {', '.join(plain)} still hold values"
                                )
                            elif j and j[2] == "refused":
                                stats["refused"] += 1
                            else:
                                stats["not moved"] += 1
                            continue
                        if j and j[2] == "done" and j[1]:
                            expect[rid] = (key, j[1])
                    for c in personal:
                        v = row[c]
                        if v is not None and not _is_token(v):
                            check_values.append((key, c, v))
                            stats["kept"] += c in table.kept
                # every token resolves to a record that exists where it says
                by_site: dict[str, list[str]] = {}
                for rid, (_, site) in expect.items():
                    by_site.setdefault(site, []).append(rid)
                found: set[str] = set()
                for site, rids in by_site.items():
                    if site not in indexers:
                        problems.append(f"{table.name}: {len(rids)} token(s) name an unknown site")
                        continue
                    got = vault.store(site).get_many(rids)
                    for rid in rids:
                        rec = got.get(rid)
                        if rec is None or rec.is_replica:
                            problems.append(
                                f"{table.name} row {expect[rid][0]}: its record is missing at site {site}"
                            )
                        else:
                            found.add(rid)
                            sites[site] += 1
                stats["moved"] += len(found)
                # no value of a moved row matches a moved record's blind index
                if searchable and check_values:
                    for key, c, v in check_values:
                        for name, spec in searchable:
                            try:
                                norm = vvalues.normalize(name, spec, vvalues.coerce(name, spec, v))
                            except DomicileError:
                                continue
                            for site, ix in indexers.items():
                                hits = vault.store(site).lookup(
                                    ix.digest(plan.collection, name, norm)
                                )
                                # a record of this migration (its ids start with the plan's)
                                if any(h.startswith(plan.id[:12]) for h in hits):
                                    problems.append(
                                        f"{table.name} row {key}: {c} still holds the {name} of a moved record"
                                    )
                                    break
                if progress is not None:
                    progress(table.name, len(rows))
            # rows deleted after they moved must have their records
            if journal is not None:
                gone = [
                    k for k, (_, _, state) in jrows.items() if state == "done" and k not in seen
                ]
                for k in gone:
                    problems.append(f"{table.name} row {k}: moved, then left the source")
            if journal is not None:
                done = sum(1 for _, _, state in jrows.values() if state == "done")
                moved_here = sum(1 for k in jrows if jrows[k][2] == "done" and k in seen)
                if done != moved_here:
                    problems.append(
                        f"{table.name}: the journal counts {done} rows moved, the source {moved_here}"
                    )
        if stats["not moved"]:
            problems.append(
                f"{stats['not moved']} row(s) of subjects the plan moves are not moved yet (run `domicile migrate run`)"
            )
        audit = vault.verify_audit()
        for r in audit:
            if not r.ok:
                problems.append(f"the audit log of site {r.site} does not verify")
    finally:
        if journal is not None:
            journal.close()
    return {
        "plan": plan.id,
        "source": plan.source_description,
        "ok": not problems,
        "moved": stats["moved"],
        "refused": stats["refused"],
        "not_moved": stats["not moved"],
        "sites": dict(sorted(sites.items())),
        "kept_columns": {t.name: t.kept for t in plan.tables.values() if t.kept},
        "kept_values": stats["kept"],
        "problems": problems,
    }
