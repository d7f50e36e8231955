"""Attack tests against a real ``domicile serve``.

``served``: a deployment made by ``domicile init`` (three SQLite sites, RU, DE, US; the
starter's ``profiles`` collection copied to Germany, and a ``notes`` collection whose
``email`` ties a note to the same subject as a profile), served by a ``domicile serve``
subprocess on a free port, polled on ``/healthz`` until it answers and stopped after the
test. Clients are made the way an operator makes them, with ``domicile clients add
--json``. The attacker's view is HTTP only; the test's own view of what happened is the
sites' audit, read straight from the SQLite files.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

DOMICILE = Path(sys.executable).with_name("domicile")

# The starter configuration's commented example, switched on (with e-mail), and a second
# collection of the same subjects.
STARTER_REPLICATE = """    # replicate:
    #   - {to: de, fields: [full_name, headline, city]}
"""
REPLICATE = """    replicate:
      - {to: de, fields: [full_name, email, city]}
  notes:
    fields:
      email: {category: user.contact.email, searchable: true, identifies: true, normalize: email, max_length: 320}
      text: {category: user.content.public, max_length: 300}
"""


def run_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DOMICILE), *args, "--config", str(config)],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Served:
    """A running ``domicile serve`` and what a test needs around it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.config = folder / "domicile.yaml"
        self.data = folder / "domicile-data"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def cli(self, *args: str) -> Any:
        """``domicile ARGS --json`` against this deployment; its JSON answer."""
        done = run_cli(self.config, *args, "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)

    def client(self, name: str, *scopes: str) -> tuple[str, dict[str, str]]:
        """A client made with ``domicile clients add``: its id and its request headers."""
        args = [a for s in scopes for a in ("--scope", s)]
        made = self.cli("clients", "add", name, *args, "--api-key")
        return made["client_id"], {"Authorization": f"Bearer {made['api_key']}"}

    def audit(self, site: str) -> list[dict[str, Any]]:
        """A site's audit entries, read from its file (read-only, beside the service)."""
        conn = sqlite3.connect(f"file:{self.data / f'{site}.sqlite'}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT payload FROM audit ORDER BY seq").fetchall()
        finally:
            conn.close()
        return [json.loads(p) for (p,) in rows]

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(DOMICILE), "serve", "--port", str(self.port), "--config", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.folder,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"domicile serve exited:\n{self.log.read_text()}", pytrace=False)
            try:
                if self.http.get("/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        pytest.fail(f"domicile serve did not answer:\n{self.log.read_text()}", pytrace=False)

    def stop(self) -> None:
        self.http.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    srv = Served(tmp_path)
    done = subprocess.run(
        [str(DOMICILE), "init", str(tmp_path), "--json"],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    text = srv.config.read_text(encoding="utf-8")
    assert STARTER_REPLICATE in text, "the starter configuration changed: update this fixture"
    srv.config.write_text(text.replace(STARTER_REPLICATE, REPLICATE), encoding="utf-8")
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()
