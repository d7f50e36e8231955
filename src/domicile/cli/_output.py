"""Shared CLI plumbing: JSON output, one-line errors, exit codes.

Exit codes: 0 success (any policy decision from ``policy explain``), 1 a check failed,
2 bad input. Errors are one line on stderr, or one JSON object on stdout with ``--json``.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console

from domicile.errors import DomicileError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

T = TypeVar("T")


def _default(value: Any) -> Any:
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=_default) + "\n")


def fail(error: DomicileError, *, as_json: bool) -> NoReturn:
    if as_json:
        emit_json({"error": error.to_dict()})
    else:
        err_console.print(f"[bold red]error:[/] {error}", soft_wrap=True)
    raise typer.Exit(error.exit_code)


@contextmanager
def errors(as_json: bool) -> Iterator[None]:
    """Turn domicile's typed errors into one clear line and the right exit code."""
    try:
        yield
    except DomicileError as exc:
        fail(exc, as_json=as_json)


def guarded(as_json: bool, fn: Callable[[], T]) -> T:
    with errors(as_json):
        return fn()
    raise AssertionError("unreachable")


def pairs(values: list[str] | None, what: str) -> dict[str, str]:
    """``NAME=VALUE`` options to a mapping; a malformed one is bad input."""
    from domicile.errors import BadInput

    out: dict[str, str] = {}
    for raw in values or []:
        name, sep, value = raw.partition("=")
        if not sep or not name.strip() or not value.strip():
            # Field values are personal data: never echo them back.
            shown = f"{what} option" if what == "--field" else f"{what} {raw!r}"
            raise BadInput(f"a {shown} is not NAME=VALUE", hint=f"write e.g. {_EXAMPLES[what]}")
        out[name.strip()] = value.strip()
    return out


_EXAMPLES = {
    "--filing": "--filing ru.art12_notice=2025-03-03",
    "--fact": "--fact replica=true",
    "--field": "--field email=anna@example.org",
}
