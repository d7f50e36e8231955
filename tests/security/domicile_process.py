"""The real thing, as an attacker or operator meets it: the ``domicile`` command in a process
of its own, and ``domicile serve`` on a free port.

Used by the attack tests of sites that go missing or get swapped, and of file modes.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

DOMICILE = Path(sys.executable).with_name("domicile")


@dataclass
class Done:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def _with_umask(umask: int | None) -> Callable[[], None] | None:
    """Run in the child before ``exec``: the umask the command starts with."""
    if umask is None:
        return None

    def child() -> None:
        os.umask(umask)

    return child


def cli(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    umask: int | None = None,
) -> Done:
    """``domicile ARGS`` in a process of its own (with ``umask``, if given)."""
    done = subprocess.run(
        [str(DOMICILE), *args], capture_output=True, text=True, timeout=120, cwd=cwd,
        env={**os.environ, **(env or {})}, preexec_fn=_with_umask(umask),
    )  # fmt: skip
    return Done(done.returncode, done.stdout, done.stderr)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Reply:
    status: int
    body: Any


class Served:
    """``domicile serve`` in a process of its own; stopped (SIGTERM, then SIGKILL) at the end."""

    def __init__(
        self,
        folder: Path,
        *args: str,
        env: dict[str, str] | None = None,
        umask: int | None = None,
    ) -> None:
        self.folder = folder
        self.umask = umask
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / f"serve-{self.port}.log"
        self.args = args
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.headers: dict[str, str] = {}

    def start(self) -> Served:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(DOMICILE), "serve", "--port", str(self.port), *self.args],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.folder,
                env={**os.environ, **(self.env or {})}, preexec_fn=_with_umask(self.umask),
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"domicile serve exited:\n{self.output()}", pytrace=False)
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        pytest.fail(f"domicile serve did not answer:\n{self.output()}", pytrace=False)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def request(self, method: str, path: str, body: Any = None) -> Reply:
        data = None if body is None else json.dumps(body).encode()
        headers = {**self.headers, **({"Content-Type": "application/json"} if data else {})}
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return Reply(r.status, json.loads(r.read() or b"null"))
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, json.loads(exc.read() or b"null"))


def admin_headers(config: Path) -> dict[str, str]:
    """The headers of a new static-API-key client with every scope."""
    done = cli(
        "clients", "add", "ops", "--scope", "admin", "--api-key", "--json", "--config", str(config)
    )
    assert done.code == 0, done.err + done.out
    return {"Authorization": f"Bearer {done.json()['api_key']}"}


def sqlite_audit(path: Path) -> list[dict[str, Any]]:
    """A SQLite site's audit entries, read straight from its file."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return [json.loads(p) for (p,) in conn.execute("SELECT payload FROM audit ORDER BY seq")]


def refusals_for(entries: list[dict[str, Any]], site: str) -> list[dict[str, Any]]:
    """Refusals recorded because ``site`` was unavailable."""
    return [
        e
        for e in entries
        if e.get("action") == "refuse"
        and e.get("detail", {}).get("reason") == "site_unavailable"
        and e.get("detail", {}).get("home_site") == site
    ]
