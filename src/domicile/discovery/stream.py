"""JSON written as it is made: a report of millions of subjects goes to a file (or standard
output) entry by entry, never held whole, and reads exactly as ``json.dumps(report,
ensure_ascii=False, indent=2)`` of the same report would (what ``--json`` has always
printed), so a reader cannot tell the two apart.

A value to write is ordinary JSON data, in which any mapping or list may be replaced by a
``LazyObject`` (an iterator of key and value pairs) or a ``LazyArray`` (an iterator of
items), each read once, as it is written.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

INDENT = 2


class LazyObject:
    """A JSON object whose members come from an iterator, read once."""

    __slots__ = ("items",)

    def __init__(self, items: Iterable[tuple[str, Any]]) -> None:
        self.items = iter(items)


class LazyArray:
    """A JSON array whose items come from an iterator, read once."""

    __slots__ = ("items",)

    def __init__(self, items: Iterable[Any]) -> None:
        self.items = iter(items)


def materialize(value: Any) -> Any:
    """``value`` with every lazy part read into a dict or a list; a part without any is
    kept as it is (not copied: the scan's subjects share their lists of countries)."""
    if isinstance(value, LazyObject):
        return {k: materialize(v) for k, v in value.items}
    if isinstance(value, LazyArray):
        return [materialize(v) for v in value.items]
    if not _lazy_inside(value):
        return value
    if isinstance(value, dict):
        return {k: materialize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [materialize(v) for v in value]
    return value


def _lazy_inside(value: Any) -> bool:
    if isinstance(value, LazyObject | LazyArray):
        return True
    if isinstance(value, dict):
        return any(_lazy_inside(v) for v in value.values())
    if isinstance(value, list):
        return any(_lazy_inside(v) for v in value)
    return False


def write(
    value: Any,
    out: TextIO,
    *,
    default: Callable[[Any], Any] | None = None,
    level: int = 0,
) -> None:
    """Write ``value`` to ``out`` as ``json.dumps(materialize(value), ensure_ascii=False,
    indent=2, default=default)`` would (without a final newline)."""
    if not _lazy_inside(value):
        text = json.dumps(value, ensure_ascii=False, indent=INDENT, default=default)
        out.write(text.replace("\n", "\n" + " " * level) if level else text)
        return
    if isinstance(value, dict | LazyObject):
        pairs: Iterator[tuple[Any, Any]] = (
            iter(value.items()) if isinstance(value, dict) else value.items
        )
        _members(
            ((json.dumps(k, ensure_ascii=False) + ": ", v) for k, v in pairs),
            "{",
            "}",
            out,
            default,
            level,
        )
        return
    items = iter(value) if isinstance(value, list) else value.items
    _members((("", v) for v in items), "[", "]", out, default, level)


def _members(
    members: Iterator[tuple[str, Any]],
    opening: str,
    closing: str,
    out: TextIO,
    default: Callable[[Any], Any] | None,
    level: int,
) -> None:
    inner = " " * (level + INDENT)
    first = True
    for prefix, v in members:
        out.write(f"{opening}\n{inner}{prefix}" if first else f",\n{inner}{prefix}")
        first = False
        write(v, out, default=default, level=level + INDENT)
    out.write(opening + closing if first else "\n" + " " * level + closing)


__all__ = ["LazyArray", "LazyObject", "materialize", "write"]
