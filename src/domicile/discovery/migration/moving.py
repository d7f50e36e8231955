"""``migrate run``: batches of rows through the vault, each one transaction of the source."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from domicile.discovery.keys import cursor_json, cursor_ready, cursor_values
from domicile.discovery.migration.journal import Journal
from domicile.discovery.migration.plan import Plan, Progress, TablePlan
from domicile.discovery.migration.rows import (
    count_rows,
    is_token,
    owners,
    row_key,
    sqlalchemy,
    subject_of,
    translated,
)
from domicile.discovery.sources import DatabaseSource
from domicile.errors import DomicileError


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
            total(sum(count_rows(source, t) for t in plan.tables))
        for table in plan.tables.values():
            _run_table(plan, table, vault, source, journal, out, progress)
    finally:
        if journal is not None:
            journal.close()
    out.seconds = time.perf_counter() - started
    return out


@dataclass
class _Row:
    key: tuple[Any, ...]  # the values of the key's columns
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
    sa = sqlalchemy()
    conn = source.connection
    counts = out.tables.setdefault(table.name, Counter())
    parents = owners(source, table, plan.batch_size)
    link = table.via[0].columns if table.via else ()
    columns = list(dict.fromkeys([*table.key, *link, *table.map]))
    t = sa.table(table.name, *(sa.column(c) for c in columns))
    # Rows are read in the order of their key, all its columns: a composite key compares
    # as a row value, so a batch starts right after the last row of the one before.
    key = sa.tuple_(*(t.c[c] for c in table.key)) if len(table.key) > 1 else t.c[table.key[0]]

    def as_key(values: tuple[Any, ...]) -> Any:
        return sa.tuple_(*(sa.literal(v) for v in values)) if len(values) > 1 else values[0]

    saved = journal.cursor(table.name) if journal else None
    after = cursor_values(saved, len(table.key)) if saved is not None else None
    if after is not None and progress is not None:
        done_before = conn.execute(
            sa.select(sa.func.count()).select_from(t).where(key <= as_key(after))
        ).scalar()
        if conn.in_transaction():
            conn.rollback()
        progress(table.name, int(done_before or 0))
    # Rows are locked for the batch: by ``BEGIN IMMEDIATE`` on SQLite, else row by row.
    lock = journal is not None and source.backend != "sqlite"
    while True:
        stmt = sa.select(*(t.c[c] for c in columns)).order_by(*(t.c[c] for c in table.key))
        if after is not None:
            stmt = stmt.where(key > as_key(after))
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
            last = tuple(rows[-1][c] for c in table.key)
            todo = _select_rows(plan, table, rows, parents, counts)
            if journal is None:
                _end(conn, commit=False)
                _dry_batch(plan, vault, todo, out, counts)
            else:
                _move_batch(plan, table, vault, conn, journal, todo, last, out, counts)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                _end(conn, commit=False)
            if isinstance(exc, Exception) and not isinstance(exc, DomicileError):
                raise translated(source, exc) from None
            raise
        out.batches += 1
        if progress is not None:
            progress(table.name, len(rows))
        if not cursor_ready(last):
            return  # a key that cannot be a cursor: the table is read in one batch
        after = last


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
    parents: Sequence[Mapping[str, str]],
    counts: Counter[str],
) -> list[_Row]:
    todo: list[_Row] = []
    for row in rows:
        sid = subject_of(table, row, parents)
        if sid is None or not plan.moving(sid):
            counts["stay"] += 1
            continue
        values = {f: row[c] for c, f in table.map.items() if row[c] is not None}
        if not values:
            counts["already" if plan.legacy == "delete" else "empty"] += 1
            continue
        if all(is_token(v) for v in values.values()):
            counts["already"] += 1
            continue
        text = row_key(table, row)
        if text is None:
            counts["stay"] += 1  # a key with an empty part names no row
            continue
        key = tuple(row[c] for c in table.key)
        todo.append(_Row(key, text, sid, values, plan.record_id(table.name, text)))
    return todo


def _existing(vault: Any, rids: Sequence[str]) -> dict[str, str]:
    """Record id -> site, for the ids some site holds already (as its primary)."""
    found: dict[str, str] = {}
    for site in vault.config.sites:
        for rid, rec in vault.store(site.id).get_many(list(rids)).items():
            if not rec.is_replica:
                found[rid] = site.id
    return found


TAKEN = "id taken by other values"


def _taken(plan: Plan, vault: Any, rows: Sequence[_Row], existing: Mapping[str, str]) -> set[str]:
    """The record ids, of rows whose id some site holds already, whose records do not
    hold the row's own values. Such a record was not written for this row (the plan was
    run on another database, or the row changed after a run stopped): the row must not
    be given its token, and stays."""
    from domicile.stores.base import SiteUnavailable
    from domicile.vault import values as vvalues

    coll = vault.collection(plan.collection)
    out: set[str] = set()
    for r in rows:
        site = existing.get(r.rid)
        if site is None:
            continue
        try:
            rec = vault.store(site).get(r.rid)
            _, held = vault._open_record(vault.config.site(site), rec)
            want = {f: vvalues.coerce(f, coll.fields[f], v) for f, v in r.fields.items()}
        except SiteUnavailable:
            raise
        except (DomicileError, KeyError):  # does not open, or the row's value never could
            out.add(r.rid)
            continue
        if held != want:
            out.add(r.rid)
    return out


def _dry_batch(
    plan: Plan, vault: Any, todo: Sequence[_Row], out: Outcome, counts: Counter[str]
) -> None:
    existing = _existing(vault, [r.rid for r in todo]) if todo else {}
    taken = _taken(plan, vault, todo, existing)
    for r in todo:
        if r.rid in taken:
            out.refused[TAKEN] += 1
            counts["refused"] += 1
            continue
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
    last: tuple[Any, ...],
    out: Outcome,
    counts: Counter[str],
) -> None:
    sa = sqlalchemy()
    journal.intend(table.name, [(r.text_key, r.rid) for r in todo])
    existing = _existing(vault, [r.rid for r in todo]) if todo else {}
    taken = _taken(plan, vault, todo, existing)
    refused = {r.text_key: TAKEN for r in todo if r.rid in taken}
    tokens: dict[str, tuple[str, str]] = {}  # rid -> (token, site)
    for rid, site in existing.items():
        if rid not in taken:
            tokens[rid] = (vault.tokens.issue(site, rid), site)
    fresh = [r for r in todo if r.rid not in existing]
    for r, result in zip(fresh, _put(plan, vault, fresh), strict=True):
        if isinstance(result, str):
            refused[r.text_key] = result
        else:
            tokens[r.rid] = (result.token, result.site)
    done = [r for r in todo if r.rid in tokens]
    if done:
        t = sa.table(table.name, *(sa.column(c) for c in [*table.key, *table.map]))
        # A row is named by every column of its key.
        where = sa.and_(*(t.c[c] == sa.bindparam(f"_k{i}") for i, c in enumerate(table.key)))
        params: list[dict[str, Any]] = [{f"_k{i}": v for i, v in enumerate(r.key)} for r in done]
        if plan.legacy == "tokens":
            stmt = sa.update(t).where(where).values({c: sa.bindparam("_t") for c in table.map})
            for p, r in zip(params, done, strict=True):
                p["_t"] = tokens[r.rid][0]
        else:
            stmt = sa.update(t).where(where).values({c: None for c in table.map})
        conn.execute(stmt, params)
    _end(conn, commit=True)
    journal.finish(
        table.name,
        [(r.text_key, tokens[r.rid][1]) for r in done],
        list(refused),
        cursor_json(last) if cursor_ready(last) else None,
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
