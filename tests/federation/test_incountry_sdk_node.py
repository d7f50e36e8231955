"""The real, unmodified InCountry SDK (``incountry==5.0.0``, in its own environment: see
``tests/http/test_incountry_sdk.py``) against one federation node, ``domicile serve --node
ru`` in a process of its own: the SDK's endpoint is the RU node, as it would be InCountry's
Russian point of presence. A subset of the scenario: every storage call with a static
token, a client's calls with an OAuth2 token from the node's own token endpoint, and the US
path refused as misdirected (421). Afterwards no value the SDK sent is in any file of the
deployment, and the RU node's log holds the calls and the refusals."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.http.test_incountry_sdk import SCENARIO, _run, sdk_python
from tests.security.domicile_process import Served, cli, sqlite_audit

from .test_nodes_processes import federate

SCOPES = ["records:read", "records:write", "records:delete", "purpose:incountry", "site:ru"]


def test_the_real_incountry_sdk_against_the_ru_node(tmp_path: Path) -> None:
    python = sdk_python()
    folder = tmp_path / "dep"
    federate(folder)
    config = str(folder / "domicile.yaml")
    admin = cli("clients", "add", "sdk-admin", "--scope", "admin", "--api-key", "--json",
                "--config", config)  # fmt: skip
    assert admin.code == 0, admin.err
    app = cli("clients", "add", "sdk-app", *(f"--scope={s}" for s in SCOPES), "--json",
              "--config", config)  # fmt: skip
    assert app.code == 0, app.err
    node = Served(folder.parent, "--node", "ru", "--config", config).start()
    try:
        creds = tmp_path / "sdk.json"
        creds.write_text(
            json.dumps(
                {
                    "endpoint": node.url, "node": "ru", "other": "us",
                    "api_key": admin.json()["api_key"],
                    "client_id": app.json()["client_id"],
                    "client_secret": app.json()["client_secret"],
                }
            )
        )  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith(("INC_", "PYTHON"))}
        done = _run([str(python), str(SCENARIO), str(creds)], timeout=600, env=env)
    finally:
        node.stop()
    assert done.returncode == 0, (
        f"the SDK scenario failed:\n{done.stdout[-5000:]}\n{done.stderr[-8000:]}\n"
        f"node log:\n{node.output()[-5000:]}"
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["ran"] == ["full:ru:static", "node:ru:oauth"]
    sent: list[str] = report["sent"]
    assert len(sent) > 20
    everything = b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())
    everything += node.output().encode()
    assert [v for v in sent if v.encode() in everything] == []
    entries = sqlite_audit(folder / "domicile-data" / "ru.sqlite")
    assert {"write", "update", "read", "delete"} <= {e["action"] for e in entries}
    misdirected = [e for e in entries if e.get("detail", {}).get("reason") == "other_node"]
    assert len(misdirected) == 4  # two clients, a write and a read each, to the US path
    assert {e["detail"]["home_site"] for e in misdirected} == {"us"}
