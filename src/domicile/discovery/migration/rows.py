"""Reading a source's rows for a migration: whose they are, and whether they moved."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from domicile.discovery.keys import key_text, keys_text
from domicile.discovery.migration.plan import TOKEN_PREFIX, TablePlan
from domicile.discovery.sources import DatabaseSource


def sqlalchemy() -> Any:
    import sqlalchemy as sa

    return sa


def owners(source: DatabaseSource, table: TablePlan, batch: int) -> list[dict[str, str]]:
    """For each step of ``table``'s path but the last: the target table's key -> the value
    of its own link columns (what the step after reads), both as ``key_text`` writes them."""
    out: list[dict[str, str]] = []
    for step, nxt in zip(table.via, table.via[1:], strict=False):
        m: dict[str, str] = {}
        cols = list(dict.fromkeys([*step.key, *nxt.columns]))
        for b in source.batches(step.table, cols, batch):
            n = len(b[cols[0]])
            keys = keys_text([b[c] for c in step.key], n)
            ups = keys_text([b[c] for c in nxt.columns], n)
            for k, v in zip(keys, ups, strict=True):
                if k is not None and v is not None:
                    m[k] = v
        out.append(m)
    return out


def row_key(table: TablePlan, row: Mapping[str, Any]) -> str | None:
    """The row's key as text (every column of a composite key)."""
    return key_text([row[c] for c in table.key])


def subject_of(
    table: TablePlan, row: Mapping[str, Any], owners: Sequence[Mapping[str, str]]
) -> str | None:
    """The subject id of a row, as the scan wrote it (``TABLE:KEY`` of the subjects' row)."""
    if not table.via:
        key = row_key(table, row)
        return None if key is None else f"{table.name}:{key}"
    cur = key_text([row[c] for c in table.via[0].columns])
    if cur is None:
        return None
    for m in owners:
        nxt = m.get(cur)
        if nxt is None:
            return None
        cur = nxt
    return f"{table.via[-1].table}:{cur}"


def is_token(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(TOKEN_PREFIX)


def count_rows(source: DatabaseSource, table: str) -> int:
    sa = sqlalchemy()
    stmt = sa.select(sa.func.count()).select_from(sa.table(table))
    try:
        n = int(source.connection.execute(stmt).scalar() or 0)
        if not source.connection.in_transaction():
            return n
        source.connection.rollback()
        return n
    except Exception as exc:
        raise translated(source, exc) from None


def translated(source: DatabaseSource, exc: Exception) -> Exception:
    """A driver's error as domicile's (without the driver's words); any other as it is."""
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError):
        return source.translate(exc)
    return exc
