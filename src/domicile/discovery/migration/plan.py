"""The plan of a migration: what moves where, as a file to read and edit; made from a
scan, which reads only."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from domicile.categories import is_under
from domicile.discovery.sources import DatabaseSource, open_source
from domicile.errors import BadInput, SourceError
from domicile.residency import Residency, TriSet

FORMAT = 1
PURPOSE = "legacy_migration"
LEGACY = ("tokens", "delete")
TOKEN_PREFIX = "dom1_"

Progress = Callable[[str, int], None]


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
