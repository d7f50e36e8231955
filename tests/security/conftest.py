"""Attack tests against a real ``domicile serve``.

``served``: a deployment made by ``domicile init`` (three SQLite sites, RU, DE, US; the
starter's ``profiles`` collection copied to Germany, and a ``notes`` collection whose
``email`` ties a note to the same subject as a profile), served by a ``domicile serve``
subprocess on a free port, polled on ``/healthz`` until it answers and stopped after the
test. Clients are made the way an operator makes them, with ``domicile clients add
--json``. The attacker's view is HTTP only; the test's own view of what happened is the
sites' audit, read straight from the SQLite files.

``serve(*options, config=YAML, edit=FUNCTION)``: a plain ``domicile init`` deployment (its
configuration changed by ``FUNCTION``, with ``YAML`` added), served with ``options``. Its
requests can come from any 127.0.0.0/8 address, so that an attacker and a normal client
are two sources, as they would be on a network.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

DOMICILE = Path(sys.executable).with_name("domicile")
STARTUP_SECONDS = 60

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


# --- the serve factory ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(DOMICILE), *args], capture_output=True, text=True, check=False, timeout=120
    )
    if check:
        assert done.returncode == 0, f"domicile {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


class Running:
    """One running service and the deployment behind it, for the ``serve`` factory: a
    plain ``domicile init`` deployment, any ``serve`` options, requests from any
    127.0.0.0/8 source address, the service's JSON log."""

    def __init__(self, folder: Path, *serve_args: str) -> None:
        self.folder = folder
        self.config = folder / "domicile.yaml"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "serve.log"
        self.serve_args = serve_args
        self.proc: subprocess.Popen[bytes] | None = None
        if not self.config.exists():
            run("init", str(folder))
        self.admin_key = self.client("admin", "admin")["api_key"]
        self.admin = {"Authorization": f"Bearer {self.admin_key}", "x-env-id": "default"}

    def cli(self, *args: str, check: bool = True) -> dict[str, Any]:
        done = run(*args, "--config", str(self.config), "--json", check=check)
        out: dict[str, Any] = json.loads(done.stdout or "{}")
        return out

    def client(self, name: str, *scopes: str, api_key: bool = True) -> dict[str, Any]:
        """A client made with ``domicile clients add`` (an API key, or a secret)."""
        args = ["clients", "add", name, *(x for s in scopes for x in ("--scope", s))]
        return self.cli(*args, *(["--api-key"] if api_key else []))

    def start(self) -> Running:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(DOMICILE), "serve", "--config", str(self.config), "--port", str(self.port),
                 *self.serve_args],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.folder,
            )  # fmt: skip
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"domicile serve exited:\n{self.log_text()}", pytrace=False)
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        pytest.fail(f"domicile serve did not answer:\n{self.log_text()}", pytrace=False)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def http(self, source: str = "127.0.0.1", **kwargs: Any) -> httpx.Client:
        """A client whose requests come from ``source`` (any 127.0.0.0/8 address)."""
        transport = httpx.HTTPTransport(local_address=source)
        return httpx.Client(base_url=self.url, transport=transport, timeout=60, **kwargs)

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def log_events(self) -> list[dict[str, Any]]:
        """The service's JSON log lines."""
        out = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def data_files(self) -> list[Path]:
        return [f for f in sorted(self.folder.rglob("*")) if f.is_file() and f != self.log]

    def audit(self, site: str = "us") -> list[dict[str, Any]]:
        """A site's audit entries, read from its database (read-only, beside the service)."""
        path = self.folder / "domicile-data" / f"{site}.sqlite"
        if not path.exists():  # a site nothing has been written to yet
            return []
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT payload FROM audit ORDER BY seq").fetchall()
        finally:
            conn.close()
        return [json.loads(p) for (p,) in rows]

    def refusals(self, site: str = "us") -> list[dict[str, Any]]:
        return [e for e in self.audit(site) if e["action"] == "refuse"]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    """``serve(*options, config=YAML, edit=FUNCTION)``: a fresh deployment (its
    configuration changed by ``FUNCTION``, with ``YAML`` added) and its service, started
    with ``options``."""
    started: list[Running] = []

    def start(
        *serve_args: str, config: str = "", edit: Callable[[str], str] | None = None
    ) -> Running:
        served = Running(tmp_path / f"deployment{len(started)}", *serve_args)
        started.append(served)
        text = served.config.read_text(encoding="utf-8")
        text = (edit(text) if edit else text) + ("\n" + config + "\n" if config else "")
        served.config.write_text(text, encoding="utf-8")
        return served.start()

    try:
        yield start
    finally:
        for served in started:
            served.stop()
