"""The plan of a migration: what moves where, as a file to read and edit; made from a
scan, which reads only."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from domicile.categories import is_under
from domicile.discovery.keys import key_text
from domicile.discovery.sources import DatabaseSource, open_source
from domicile.errors import BadInput, SourceError
from domicile.residency import Residency, TriSet

FORMAT = 1
PURPOSE = "legacy_migration"
LEGACY = ("tokens", "delete")
TOKEN_PREFIX = "dom1_"

Progress = Callable[[str, int], None]


Columns = tuple[str, ...]


def columns_to_file(columns: Columns) -> str | list[str]:
    """A key's columns as a plan file writes them: one name, or a list for a composite key
    (plans written before composite keys keep reading as they did)."""
    return columns[0] if len(columns) == 1 else list(columns)


def columns_from_file(raw: Any) -> Columns:
    if isinstance(raw, str):
        return (raw,)
    if isinstance(raw, list) and raw and all(isinstance(c, str) for c in raw):
        return tuple(raw)
    raise ValueError("a key is a column or a list of columns")


@dataclass
class Step:
    """A link from a table up towards the subjects' table: ``columns`` hold a key of
    ``table`` (whose key columns are ``key``, in the same order)."""

    columns: Columns
    table: str
    key: Columns

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": columns_to_file(self.columns),
            "table": self.table,
            "key": columns_to_file(self.key),
        }


@dataclass
class TablePlan:
    name: str
    key: Columns  # the primary key's columns: a row is named by all of them
    map: dict[str, str]  # column -> field
    via: list[Step] = field(default_factory=list)  # [] for the subjects' table
    kept: list[str] = field(default_factory=list)  # personal columns without a field

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": columns_to_file(self.key),
            "map": dict(self.map),
            "via": [s.to_dict() for s in self.via],
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
    # Rows the plan was made from, to know its database again (see ``_sample``).
    sample: dict[str, dict[str, Any]] = field(default_factory=dict)
    seal: str = ""  # HMAC of ``sealed_part`` under a key of the deployment

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
            "sample": self.sample,
            "seal": self.seal,
        }

    def sealed_part(self) -> bytes:
        """What the seal covers: everything but what the plan invites its reader to edit
        (which tables and columns move and into which fields, ``legacy``, ``batch_size``,
        a subject's ``site`` set to null to keep it). A subject's residency is sealed as
        itself, not by its index into ``residencies``."""

        def residency(entry: Any) -> Any:
            i = entry.get("residency") if isinstance(entry, dict) else None
            if isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(self.residencies):
                return self.residencies[i]
            return None

        data = {
            "domicile_migration": FORMAT,
            "id": self.id,
            "created": self.created,
            "source": self.source,
            "source_description": self.source_description,
            "fingerprint": self.fingerprint,
            "located_in": self.located_in,
            "collection": self.collection,
            "purpose": self.purpose,
            "subjects": {sid: residency(e) for sid, e in self.subjects.items()},
            "sample": self.sample,
        }
        return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()

    def moving(self, sid: str) -> bool:
        entry = self.subjects.get(sid)
        return bool(entry and entry.get("site"))

    def residency(self, sid: str) -> Residency:
        return residency_from_dict(self.residencies[self.subjects[sid]["residency"]])

    def record_id(self, table: str, key: str) -> str:
        """The record id of a row: 12 hex digits of the plan (its time, so a migration's
        records sort together), then 20 of a hash of the plan, the table and the key (as
        ``keys.key_text`` writes it: every column of a composite key)."""
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


# Query keys of a URL that hold a password or say where one is: never kept in a plan.
SECRET_KEYS = frozenset({"password", "passwd", "sslpassword", "passfile"})


def public_url(spec: str) -> str:
    """The source URL as a plan keeps it: without a password (in its user part or its
    query), a SQLite path made absolute."""
    from sqlalchemy.engine import URL, make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(spec)
    except (ArgumentError, ValueError):
        raise SourceError(
            "the source is not a database URL",
            hint="migrate moves rows of a database: postgresql://, mysql:// or sqlite:///FILE",
        ) from None
    query = {k: v for k, v in url.query.items() if k.lower() not in SECRET_KEYS}
    # ``set(password=None)`` keeps the password: build the URL again without one.
    url = URL.create(url.drivername, url.username, None, url.host, url.port, url.database, query)
    if url.drivername.startswith("sqlite") and url.database:
        url = url.set(database=str(Path(url.database).resolve()))
    return url.render_as_string(hide_password=False)


def _same_source(a: str, b: str) -> bool:
    """Whether two URLs name the same database, passwords aside. The query counts whole:
    drivers take ``host``, ``port``, ``service``, ``user``, ``options`` and the like from
    it, over the URL's own parts."""
    from sqlalchemy.engine import make_url

    def norm(u: str) -> tuple[Any, ...]:
        url = make_url(public_url(u))
        driver = url.drivername.partition("+")[0].replace("postgres", "postgresql")
        driver = driver.replace("postgresqlql", "postgresql").replace("mariadb", "mysql")
        query = sorted(
            (k.lower(), v if isinstance(v, str) else tuple(v)) for k, v in url.query.items()
        )
        return (driver, url.host or "", url.port, url.database or "", url.username or "", query)

    return norm(a) == norm(b)


def _seal_key(vault: Any) -> bytes:
    """The deployment's key for plans, derived from its token key (never used as is)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    info = b"domicile/migration-plan/v1"
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(
        vault.keys.token_key()
    )


def seal(plan: Plan, vault: Any) -> None:
    plan.seal = hmac.new(_seal_key(vault), plan.sealed_part(), hashlib.sha256).hexdigest()


def check_seal(plan: Plan, vault: Any) -> None:
    """Refuse a plan this deployment did not make, or one changed where it may not be."""
    if not plan.seal:
        raise BadInput(
            "the plan is not sealed (made before plans were, or its seal was removed)",
            hint="make a new plan with `domicile migrate plan`",
        )
    expected = hmac.new(_seal_key(vault), plan.sealed_part(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, plan.seal):
        raise BadInput(
            "the plan was changed where it may not be (its source, subjects, residencies or "
            "ids), or was made by another deployment",
            hint="only tables, maps, legacy, batch_size and a subject's site (to null) may be "
            "edited; make a new plan with `domicile migrate plan`",
        )


SAMPLE_ROWS = 16


def _value_digest(key: bytes, table: str, row_key: str, column: str, value: Any) -> str:
    msg = f"{table}\x00{row_key}\x00{column}\x00{value!r}".encode()
    return hmac.new(key, msg, hashlib.sha256).hexdigest()[:16]


def _sampled_key(raw: Any, width: int) -> tuple[Any, ...]:
    """A sampled row's key as the plan file holds it (a value, or a list for a composite
    key), as the values of the key's columns; refused unless each is an integer or text."""
    parts = tuple(raw) if width > 1 and isinstance(raw, list) else (raw,)
    if len(parts) != width or not all(type(v) in (int, str) for v in parts):
        raise ValueError("a sampled key is integers or text, one a column of the key")
    return parts


def _rows_with_keys(st: Any, key: Columns, wanted: Sequence[tuple[Any, ...]]) -> Any:
    """The condition that picks the rows of the keys ``wanted`` (a few: the sample)."""
    import sqlalchemy as sa

    if len(key) == 1:
        return st.c[key[0]].in_([k[0] for k in wanted])
    # Row values in IN lists are not written alike by every database; ORs of equalities are.
    return sa.or_(*(sa.and_(*(st.c[c] == v for c, v in zip(key, k, strict=True))) for k in wanted))


def _sample(source: DatabaseSource, tables: Mapping[str, TablePlan], key: bytes) -> dict[str, Any]:
    """The first rows of each table the plan moves, by key: each mapped value as a keyed
    digest (no value, and none to guess without the deployment's key). ``run`` and
    ``verify`` find them again to know that the database is the plan's."""
    import sqlalchemy as sa

    out: dict[str, Any] = {}
    conn = source.connection
    try:
        for t in tables.values():
            cols = [*t.key, *t.map]
            st = sa.table(t.name, *(sa.column(c) for c in cols))
            stmt = (
                sa.select(*(st.c[c] for c in cols))
                .order_by(*(st.c[c] for c in t.key))
                .limit(SAMPLE_ROWS)
            )
            rows = [dict(zip(cols, r, strict=True)) for r in conn.execute(stmt)]
            if not rows or not all(type(r[c]) in (int, str) for r in rows for c in t.key):
                continue  # keys of another type are not sampled
            sampled = []
            for r in rows:
                parts = [r[c] for c in t.key]
                text = key_text(parts) or ""
                digests = [_value_digest(key, t.name, text, c, r[c]) for c in t.map]
                sampled.append([parts[0] if len(parts) == 1 else parts, digests])
            out[t.name] = {"key": columns_to_file(t.key), "columns": list(t.map), "rows": sampled}
    finally:
        if conn.in_transaction():
            conn.rollback()
    return out


def _check_sample(plan: Plan, source: DatabaseSource, vault: Any) -> None:
    """Refuse a database other than the plan's: of the sampled rows of each table, at
    least half must still be there and hold the token of their own record, or more than
    half of their values as the plan saw them. A few rows changed since are tolerated,
    other rows under the same keys are not."""
    import sqlalchemy as sa

    from domicile.discovery.migration.rows import is_token
    from domicile.vault.errors import InvalidToken

    key = _seal_key(vault)
    conn = source.connection
    try:
        for name, s in plan.sample.items():
            key_cols = columns_from_file(s["key"])
            cols = [*key_cols, *s["columns"]]
            st = sa.table(name, *(sa.column(c) for c in cols))
            wanted = [_sampled_key(k, len(key_cols)) for k, _ in s["rows"]]
            stmt = sa.select(*(st.c[c] for c in cols)).where(_rows_with_keys(st, key_cols, wanted))
            found = {
                key_text(r[: len(key_cols)]): dict(zip(cols, r, strict=True))
                for r in conn.execute(stmt)
            }
            agree = undecided = 0
            for parts, (_, digests) in zip(wanted, s["rows"], strict=True):
                k = key_text(parts) or ""
                row = found.get(k)
                if row is None:
                    continue
                values = [row[c] for c in s["columns"]]
                if all(v is None for v in values):
                    undecided += 1  # cleared by ``legacy: delete``, or empty from the start
                    continue
                rid = plan.record_id(name, k)
                same = held = 0
                for c, v, d in zip(s["columns"], values, digests, strict=True):
                    if is_token(v):
                        with contextlib.suppress(InvalidToken):
                            same += len(s["columns"]) * (vault.tokens.read(v)[1] == rid)
                    elif v is not None:
                        held += 1
                        same += _value_digest(key, name, k, c, v) == d
                # moved by this plan, or most of its values as the plan saw them
                agree += same * 2 > held
            decided = len(s["rows"]) - undecided
            if decided and agree * 2 < decided:
                raise BadInput(
                    f"the plan is for another database than {plan.source_description}: "
                    f"{decided - agree} of {decided} sampled rows of {name} are not the plan's",
                    hint="make a new plan for this database with `domicile migrate plan`",
                )
    except sa.exc.DBAPIError as exc:
        raise source.translate(exc) from None
    finally:
        if conn.in_transaction():
            conn.rollback()


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
        parents: dict[str, Step] = {}
        for link in report["links"]:
            t, c = link["from"].split(".", 1)
            tt, tk = link["to"].split(".", 1)
            if "columns" in link:  # a composite key: its columns are listed
                step = Step(tuple(link["columns"]), tt, tuple(link["to_columns"]))
            else:
                step = Step((c,), tt, (tk,))
            parents.setdefault(t, step)
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
                via.append(parents[cur])
                cur = parents[cur].table
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
            if not info.primary_key:
                notes.append(f"{name}: no primary key; its rows stay")
                continue
            key = tuple(info.primary_key)
            if any(c in mapping or c in personal for c in key):
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
            sample=_sample(source, tables, _seal_key(vault)),
        )
        seal(plan, vault)
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


def new_plan_file(path: Path) -> None:
    """Refuse, before any work, a plan file that exists already or cannot be made."""
    if path.exists() or path.is_symlink():
        raise BadInput(
            f"{path} exists already", hint="give a new file name; a plan never replaces a file"
        )
    if not path.parent.is_dir():
        raise BadInput(f"the folder of {path} does not exist", hint="create it first")


def save_plan(plan: Plan, path: Path) -> None:
    """Write the plan to ``path``, a new file of mode 0600 (it names the source and the
    residencies of its subjects): whole or not at all, never over an existing file."""
    import os
    import tempfile

    data = plan.to_dict()
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
    else:
        text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
    new_plan_file(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError:
        raise BadInput(
            f"cannot write {path}", hint="check the folder and its permissions"
        ) from None
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, path)  # fails if the name was taken meanwhile: nothing is replaced
    except FileExistsError:
        raise BadInput(
            f"{path} exists already", hint="give a new file name; a plan never replaces a file"
        ) from None
    except OSError:
        raise BadInput(
            f"cannot write {path}", hint="check the folder and its permissions"
        ) from None
    finally:
        Path(tmp).unlink(missing_ok=True)


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
                columns_from_file(t["key"]),
                {str(c): str(f) for c, f in (t.get("map") or {}).items()},
                [_step_from(s) for s in t.get("via") or []],
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
            sample=_sample_from(data.get("sample")),
            seal=str(data.get("seal") or ""),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise BadInput(
            f"{path} is not a valid migration plan",
            hint="legacy is tokens or delete; batch_size 1 to 100000; tables need key and map",
        ) from None


def _step_from(raw: Any) -> Step:
    step = Step(columns_from_file(raw["column"]), str(raw["table"]), columns_from_file(raw["key"]))
    if len(step.columns) != len(step.key):
        raise ValueError("a link names as many columns as its target's key has")
    return step


def _sample_from(raw: Any) -> dict[str, dict[str, Any]]:
    """The sample as the file holds it, checked for shape (its content is sealed)."""
    if raw is None:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for name, s in dict(raw).items():
        cols = [str(c) for c in s["columns"]]
        key = columns_from_file(s["key"])
        rows = []
        for k, digests in s["rows"]:
            _sampled_key(k, len(key))
            if len(digests) != len(cols):
                raise ValueError
            rows.append([k, [str(d) for d in digests]])
        out[str(name)] = {"key": columns_to_file(key), "columns": cols, "rows": rows}
    return out


def open_planned_source(
    plan: Plan, override: str | None, *, writable: bool, vault: Any
) -> DatabaseSource:
    """The plan's source (or ``override``, the same source with its password), checked to be
    the one the plan was made for: the plan sealed by this deployment, the URL the plan's,
    the tables as they were, the sampled rows the plan's own."""
    check_seal(plan, vault)
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
        _check_sample(plan, source, vault)
    except BaseException:
        source.close()
        raise
    return source
