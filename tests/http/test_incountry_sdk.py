"""The proof: the real, unmodified InCountry Python SDK (PyPI ``incountry==5.0.0``) against a
real ``domicile serve``.

The SDK does not import under pydantic 2, so it gets a virtual environment of its own
(``pydantic<2``), cached at ``SDK_VENV`` so that reruns are fast. If it cannot be installed
the test fails, loudly: it is never skipped. The service runs as a subprocess on a free port
with three SQLite sites; its clients are made with ``domicile clients add``. The SDK runs
``sdk_scenario.py`` with that environment's Python: a static token (an API key), OAuth2
client credentials, ``encrypt=False`` with plaintext keys, server-side encryption, and key
rotation with ``migrate()``. Afterwards no value the SDK sent may be found in any byte the
deployment keeps, and every site's audit chain must verify.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from domicile.config import load_config
from domicile.setup import create_deployment

SDK_VENV = Path("/tmp/domicile-incountry-sdk-venv")
SDK_REQUIREMENTS = ["incountry==5.0.0", "pydantic<2"]
SCENARIO = Path(__file__).with_name("sdk_scenario.py")
DOMICILE = Path(sys.executable).with_name("domicile")

CONFIG = """
environment_id: default
data_dir: data
default_site: us
local_site: us
sites:
  - {id: ru, country: RU, location: {provider: P, city: Moscow, address: "1 Street"}, backend: "sqlite:data/ru.sqlite"}
  - {id: de, country: DE, location: {provider: P, city: Frankfurt, address: "2 Strasse"}, backend: "sqlite:data/de.sqlite"}
  - {id: us, country: US, location: {provider: P, city: Ashburn, address: "3 Way"}, backend: "sqlite:data/us.sqlite"}
collections:
  profiles:
    fields:
      full_name: {category: user.name}
"""


def _run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload,no-any-return]


def sdk_python() -> Path:
    """The Python of the SDK's own environment, made (once) if needed; any failure to
    install it fails the test."""
    python = SDK_VENV / "bin" / "python"
    marker = SDK_VENV / "domicile-sdk.json"
    check = [
        str(python), "-c",
        "import importlib.metadata as m, incountry, pydantic;"
        "assert m.version('incountry') == '5.0.0', m.version('incountry');"
        "assert pydantic.VERSION.startswith('1.'), pydantic.VERSION",
    ]  # fmt: skip
    SDK_VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{SDK_VENV}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cached = marker.exists() and json.loads(marker.read_text()) == SDK_REQUIREMENTS
        if cached and _run(check).returncode == 0:
            return python
        shutil.rmtree(SDK_VENV, ignore_errors=True)
        steps = [
            [sys.executable, "-m", "venv", str(SDK_VENV)],
            [str(python), "-m", "pip", "install", "--disable-pip-version-check", *SDK_REQUIREMENTS],
            check,
        ]
        for step in steps:
            done = _run(step, timeout=900)
            if done.returncode != 0:
                pytest.fail(
                    f"could not install the InCountry SDK ({' '.join(step)}):\n"
                    f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}",
                    pytrace=False,
                )
        marker.write_text(json.dumps(SDK_REQUIREMENTS))
        return python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def domicile(config: Path, *args: str) -> dict[str, object]:
    done = _run([str(DOMICILE), *args, "--config", str(config), "--json"])
    assert done.returncode == 0, done.stdout + done.stderr
    out: dict[str, object] = json.loads(done.stdout)
    return out


class Server:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.config = folder / "domicile.yaml"
        self.config.write_text(CONFIG, encoding="utf-8")
        create_deployment(load_config(self.config))  # the sites exist before the server
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

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
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        pytest.fail(f"domicile serve did not answer:\n{self.log.read_text()}", pytrace=False)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # a clean stop: the service signs each site's audit head
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path)
    try:
        yield srv
    finally:
        srv.stop()


def test_the_real_incountry_sdk_works_against_domicile(server: Server) -> None:
    started = time.monotonic()
    python = sdk_python()
    admin = domicile(server.config, "clients", "add", "sdk-admin", "--scope", "admin", "--api-key")
    app = domicile(
        server.config, "clients", "add", "sdk-app", "--scope", "records:read",
        "--scope", "records:write", "--scope", "records:delete", "--scope", "site:ru",
        "--scope", "site:de", "--scope", "purpose:incountry",
    )  # fmt: skip
    server.start()
    creds = server.folder / "sdk.json"
    creds.write_text(
        json.dumps(
            {
                "endpoint": server.url,
                "api_key": admin["api_key"],
                "client_id": app["client_id"],
                "client_secret": app["client_secret"],
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INC_", "PYTHON"))}
    done = _run([str(python), str(SCENARIO), str(creds)], timeout=900, env=env)
    server.stop()
    assert done.returncode == 0, (
        f"the SDK scenario failed:\n{done.stdout[-5000:]}\n{done.stderr[-8000:]}\n"
        f"server log:\n{server.log.read_text()[-5000:]}"
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["ran"] == [
        "full:ru:static", "full:de:oauth", "full:us:plain", "server_side:ru",
        "migrate:de:10",
    ]  # fmt: skip

    # No value the SDK sent is anywhere at rest: not in the sites, their write-ahead logs,
    # the key stores, the audit anchors, nor in the service's log.
    data = server.folder / "data"
    files = [f for f in sorted(data.rglob("*")) if f.is_file()]
    assert {f.name for f in files} >= {"ru.sqlite", "de.sqlite", "us.sqlite", "keyring.json"}
    everything = b"".join(f.read_bytes() for f in files) + server.log.read_bytes()
    sent: list[str] = report["sent"]
    assert len(sent) > 100
    leaked = [v for v in sent if v.encode() in everything]
    assert leaked == []

    # Every site's chain verifies, and holds the InCountry calls: writes, reads, deletes
    # and refusals, by id and field name only.
    verified = domicile(server.config, "audit", "verify")
    assert verified["ok"] is True, verified
    actions: dict[str, set[str]] = {}
    for site in ("ru", "de", "us"):
        conn = sqlite3.connect(data / f"{site}.sqlite")
        for (payload,) in conn.execute("SELECT payload FROM audit ORDER BY seq"):
            entry = json.loads(payload)
            actions.setdefault(site, set()).add(entry["action"])
        conn.close()
    for site in ("ru", "de", "us"):
        assert {"write", "update", "read", "delete"} <= actions[site], (site, actions[site])
    assert "refuse" in actions["us"]  # scope and no-site refusals, where requests arrive
    print(f"real-SDK scenario: {time.monotonic() - started:.1f}s", file=sys.stderr)
