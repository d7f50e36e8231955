"""Shared CLI plumbing: JSON output, one-line errors, exit codes.

Exit codes come from one table, ``domicile.errors.ExitCode``. Errors are one line on stderr,
or one JSON object on stdout with ``--json``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from domicile.errors import DomicileError, ExitCode


def _width(stream: Any) -> int | None:
    """Rich's own choice on a terminal or with COLUMNS set; else (a pipe, a file) wide
    enough that tables keep every column and lines are not broken mid-command."""
    if os.environ.get("COLUMNS") or (hasattr(stream, "isatty") and stream.isatty()):
        return None
    return 200


console = Console(highlight=False, width=_width(sys.stdout))
err_console = Console(stderr=True, highlight=False, width=_width(sys.stderr))

T = TypeVar("T")


def _default(value: Any) -> Any:
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=_default) + "\n")


# Passwords in connection URLs (``scheme://user:secret@host``), however a driver quotes them.
_SECRET_IN_URL = re.compile(r"(//[^/@\s:]*):[^@/\s]*@")
# And as a key of a URL's query or of a ``key=value`` connection string (``?password=``,
# ``passwd=``, ``sslpassword=``, ``passfile=``), which drivers take as the password too.
_SECRET_KEY = re.compile(
    r"(?<![\w-])((?:ssl)?password|passwd|passfile)(\s*=\s*)[^&\s]*", re.IGNORECASE
)


def mask_secrets(text: str) -> str:
    """``text`` with every password of a connection URL or string replaced by ``***``."""
    return _SECRET_KEY.sub(r"\1\2***", _SECRET_IN_URL.sub(r"\1:***@", text))


def report(error: DomicileError, *, as_json: bool) -> None:
    """An error as one line on stderr, or as ``{"error": {...}}`` with ``--json``."""
    if as_json:
        out = error.to_dict()
        out["message"] = mask_secrets(out["message"])
        if out.get("hint"):
            out["hint"] = mask_secrets(out["hint"])
        emit_json({"error": out})
    else:
        # Escaped: a message or hint may hold brackets (``domicile[bench]``) that are text.
        decision = getattr(error, "decision", None)
        text = mask_secrets(error.message if decision else str(error))
        err_console.print(f"[bold red]error:[/] {escape(text)}", soft_wrap=True)
        if isinstance(decision, dict):
            for line in refusal_lines(decision):
                err_console.print(escape(line), soft_wrap=True)


def refusal_lines(decision: dict[str, Any]) -> list[str]:
    """A refusal for people: the rules that refused, and what would allow it (the
    outstanding obligations), or that nothing on file would."""
    lines = ["  why:"]
    lines += [
        f"  - {r['id']}: {r['reason']}"
        for r in decision.get("rules", [])
        if r.get("outcome") not in ("allow", "not_applicable")
    ]
    steps = [o for o in decision.get("obligations", []) if o.get("status") == "outstanding"]
    if steps:
        lines.append("  what would allow it:")
        lines += [f"  - {o['text']} ({o['id']})" for o in steps]
    else:
        lines.append("  nothing that can be filed or waited for would allow it")
    if decision.get("earliest_allowed"):
        lines.append(f"  allowed from {decision['earliest_allowed']} if nothing else changes")
    return lines


def fail(error: DomicileError, *, as_json: bool) -> NoReturn:
    report(error, as_json=as_json)
    raise typer.Exit(error.exit_code)


class _Unexpected(DomicileError):
    """What ``last_word`` says of an exception that is not one of domicile's own."""

    def __init__(self, code: str, exit_code: int, message: str, hint: str) -> None:
        super().__init__(message, hint=hint)
        self.code = code
        self.exit_code = exit_code


def last_word(exc: BaseException, *, as_json: bool) -> int:
    """One line for an exception that no command caught, and its exit code. Messages of
    unknown exceptions are not shown: they might hold a value."""
    if isinstance(exc, KeyboardInterrupt):
        err_console.print("interrupted")
        return ExitCode.INTERRUPTED
    error = exc if isinstance(exc, DomicileError) else _described(exc)
    report(error, as_json=as_json)
    return error.exit_code


def _described(exc: BaseException) -> DomicileError:
    if _unreachable(exc):
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
        return _Unexpected(
            "unavailable", ExitCode.UNAVAILABLE,
            f"cannot reach a server: {first or type(exc).__name__}",
            "check that it runs and that the address is right; nothing was written",
        )  # fmt: skip
    if isinstance(exc, OSError):
        what = exc.strerror or type(exc).__name__
        where = f": {exc.filename}" if exc.filename else ""
        return _Unexpected(
            "environment", ExitCode.ENVIRONMENT, f"{what}{where}",
            "check the path, its permissions and the free space",
        )  # fmt: skip
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f" at {tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}" if tb else ""
    return _Unexpected(
        "internal_error", ExitCode.INTERNAL,
        f"internal error ({type(exc).__name__}{where}): this is a bug in domicile",
        "run again with DOMICILE_DEBUG=1 to see where, and report it",
    )  # fmt: skip


def _unreachable(exc: BaseException) -> bool:
    """A database or server that did not answer (a driver's connection error)."""
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    module = type(exc).__module__
    return module.startswith("psycopg") and type(exc).__name__ == "OperationalError"


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


def changes(values: list[str] | None) -> dict[str, str | None]:
    """``--field`` options of an update: ``NAME=VALUE`` sets a field, ``NAME=`` clears it."""
    out: dict[str, str | None] = {}
    for raw in values or []:
        name, sep, value = raw.partition("=")
        if sep and name.strip() and not value.strip():
            out[name.strip()] = None
        else:
            out.update(pairs([raw], "--field"))
    return out


def pairs(values: list[str] | None, what: str) -> dict[str, str]:
    """``NAME=VALUE`` options to a mapping; a malformed one is bad input."""
    from domicile.errors import BadInput

    out: dict[str, str] = {}
    for raw in values or []:
        name, sep, value = raw.partition("=")
        if not sep or not name.strip() or not value.strip():
            # Field values are personal data: never echo them back.
            shown = f"{what} option" if what in _VALUES else f"{what} {raw!r}"
            raise BadInput(f"a {shown} is not NAME=VALUE", hint=f"write e.g. {_EXAMPLES[what]}")
        out[name.strip()] = value.strip()
    return out


_VALUES = ("--field", "--identity")  # options whose values are personal data
_EXAMPLES = {
    "--filing": "--filing ru.art12_notice=2025-03-03",
    "--fact": "--fact replica=true",
    "--field": "--field email=anna@example.org",
    "--identity": "--identity email=anna@example.org",
}
