"""The store interfaces do not import their implementations: the choice of one lives in
``stores.opening``, next to the callers."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import domicile.stores


def _imports(module: str) -> set[str]:
    path = Path(domicile.stores.__file__).parent / f"{module}.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_interfaces_do_not_import_their_implementations() -> None:
    assert not _imports("base") & {
        "domicile.stores.sqlite", "domicile.stores.postgres", "domicile.stores.opening"
    }  # fmt: skip
    assert not _imports("keystore") & {"domicile.stores.postgres", "domicile.stores.opening"}


def test_a_sqlite_deployment_does_not_load_the_postgresql_store() -> None:
    probe = (
        "import sys, tempfile, pathlib\n"
        "from domicile.stores import open_site_store\n"
        "d = pathlib.Path(tempfile.mkdtemp())\n"
        "open_site_store('ru', f'sqlite:{d}/ru.sqlite', create=True).close()\n"
        "print('psycopg' in sys.modules, 'domicile.stores.postgres' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["False", "False"]
