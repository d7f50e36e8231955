"""How a row's key becomes text, in one place: the scan's subject ids and row references,
the links that name a parent's row, the plan's subjects and record ids, the journal of a
migration and the problems verify lists all write a key the same way, so each can find
the others' keys again.

A key is one column or several (a composite key such as ``(tenant_id, user_id)``); its
parts are joined by ``/``. A part is written by its type, not by ``str``: bytes as hex,
numbers the same whether the driver gives an integer, an integral float or a decimal
(a key ``5`` read as ``5.0`` from a file is the same row), dates in ISO form. A composite
key escapes ``/`` and ``\\`` inside its parts, so that two different keys never read the
same; a single-column key is written as it is.

The cursor of a migration (the last key a batch moved) is kept as JSON that gives the
key's values back with their types (``cursor_json``, ``cursor_values``).
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any

SEPARATOR = "/"


def part_text(value: Any) -> str | None:
    """One part of a key as text; None for an empty part (a row with no key to name)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, decimal.Decimal):
        if value == value.to_integral_value():
            return str(int(value))
        return format(value.normalize(), "f")
    if isinstance(value, bytes | bytearray | memoryview):
        return "0x" + bytes(value).hex()
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return str(value)


def key_text(values: Sequence[Any]) -> str | None:
    """A key (the values of its columns, in the key's order) as text; None when a part
    is empty."""
    if len(values) == 1:
        return part_text(values[0])
    parts = []
    for v in values:
        p = part_text(v)
        if p is None:
            return None
        parts.append(p.replace("\\", "\\\\").replace(SEPARATOR, "\\" + SEPARATOR))
    return SEPARATOR.join(parts)


def keys_text(columns: Sequence[Sequence[Any]], n: int) -> list[str | None]:
    """The keys of ``n`` rows given column by column (a columnar batch's key columns)."""
    if len(columns) == 1:
        return [part_text(v) for v in columns[0]]
    return [key_text([c[i] for c in columns]) for i in range(n)]


# --- a migration's cursor: values with their types -----------------------------------------


def _tagged(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return {"float": repr(value)}
    if isinstance(value, decimal.Decimal):
        return {"decimal": str(value)}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"bytes": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, dt.datetime):
        return {"datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"date": value.isoformat()}
    if isinstance(value, dt.time):
        return {"time": value.isoformat()}
    if isinstance(value, uuid.UUID):
        return {"uuid": str(value)}
    raise TypeError(f"a key of type {type(value).__name__} cannot be a cursor")


_UNTAG: dict[str, Callable[[str], Any]] = {
    "float": float,
    "decimal": decimal.Decimal,
    "bytes": base64.b64decode,
    "datetime": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "uuid": uuid.UUID,
}


def _untagged(value: Any) -> Any:
    if isinstance(value, dict):
        [(kind, text)] = value.items()
        return _UNTAG[kind](text)
    return value


def cursor_json(values: Sequence[Any]) -> str:
    """A key's values as JSON: a single column's value alone (as cursors were written
    before composite keys), several as a list."""
    if len(values) == 1:
        return json.dumps(_tagged(values[0]))
    return json.dumps([_tagged(v) for v in values])


def cursor_values(text: str, width: int) -> tuple[Any, ...]:
    """The values ``cursor_json`` wrote, for a key of ``width`` columns."""
    data = json.loads(text)
    if width == 1:
        return (_untagged(data),)
    if not isinstance(data, list) or len(data) != width:
        raise ValueError("the cursor does not fit the key")
    return tuple(_untagged(v) for v in data)


def cursor_ready(values: Sequence[Any]) -> bool:
    """Whether a key can be kept as a cursor (and rows be paged by it)."""
    try:
        cursor_json(values)
    except TypeError:
        return False
    return True


__all__ = ["cursor_json", "cursor_ready", "cursor_values", "key_text", "keys_text", "part_text"]
