"""``domicile init --federated`` and ``domicile federation issue|remove|list``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cryptography import x509
from typer.testing import CliRunner

from domicile.cli.app import app
from domicile.config import load_config

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size)
        for p in sorted(folder.rglob("*"))
    }


@pytest.fixture
def federated(tmp_path: Path) -> Path:
    code, out, err = run(
        "init", str(tmp_path / "d"), "--federated", "--host", "ru=127.0.0.1",
        "--host", "ru=node-ru.example.org", "--json",
    )  # fmt: skip
    assert code == 0, err
    made = json.loads(out)
    assert sorted(made["federation"]["nodes"]) == ["de", "ru", "us"]
    return tmp_path / "d" / "domicile.yaml"


def test_init_federated_makes_the_ca_and_a_bundle_per_site(federated: Path) -> None:
    fed = federated.parent / "domicile-data" / "federation"
    assert sorted(p.name for p in (fed / "ca").iterdir() if not p.name.startswith(".")) == [
        "ca.key", "ca.pem", "crl.pem", "issued.json",
    ]  # fmt: skip
    for node in ("ru", "de", "us"):
        assert sorted(p.name for p in (fed / "nodes" / node).iterdir()) == [
            "ca.pem", "crl.pem", "keyring.json", "keyring.json.lock", "node.key", "node.pem",
        ]  # fmt: skip
        # Each node's keyring holds its own site's keys, and only public keys of the others.
        keyring = json.loads((fed / "nodes" / node / "keyring.json").read_text())
        assert list(keyring["sites"]) == [node]
        assert sorted(keyring["peers"]) == sorted({"ru", "de", "us"} - {node})
        assert (fed / "nodes" / node / "keyring.json").stat().st_mode & 0o077 == 0
    # ... and the configuration says where each node's channel listens.
    cfg = load_config(federated)
    assert cfg.model.federation is not None
    assert {n: s.url for n, s in cfg.model.federation.nodes.items()} == {
        "ru": "https://127.0.0.1:8701", "de": "https://127.0.0.1:8702",
        "us": "https://127.0.0.1:8703",
    }  # fmt: skip
    cert = x509.load_pem_x509_certificate((fed / "nodes" / "ru" / "node.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["domicile-node:ru"]
    assert san.get_values_for_type(x509.DNSName) == ["node-ru.example.org"]


def test_plain_init_makes_no_federation(tmp_path: Path) -> None:
    code, _, err = run("init", str(tmp_path / "d"))
    assert code == 0, err
    assert not (tmp_path / "d" / "domicile-data" / "federation").exists()
    code, _, err = run("federation", "list", "--config", str(tmp_path / "d"))
    assert code == 2
    assert "init DIR --federated" in err


def test_issue_remove_and_list(federated: Path) -> None:
    cfg = str(federated)
    code, out, err = run(
        "federation", "issue", "us", "--host", "10.1.2.3", "--config", cfg, "--json"
    )
    assert code == 0, err
    issued = json.loads(out)
    assert issued["hosts"] == ["10.1.2.3"]
    code, out, err = run("federation", "remove", "us", "--config", cfg, "--json")
    assert code == 0, err
    assert len(json.loads(out)["revoked"]) == 2
    fed = federated.parent / "domicile-data" / "federation"
    before = _tree(fed)
    code, out, _ = run("federation", "list", "--config", cfg, "--json")
    assert code == 0
    rows = json.loads(out)["certificates"]
    assert [(r["node"], r["state"]) for r in rows] == [
        ("de", "valid"), ("ru", "valid"), ("us", "revoked"), ("us", "revoked"),
    ]  # fmt: skip
    assert issued["serial"] in {r["serial"] for r in rows}
    code, out, _ = run("federation", "list", "--config", cfg)
    assert code == 0
    assert "revoked" in out
    assert _tree(fed) == before, "list wrote something"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["federation", "remove", "fr"], "never issued"),
        (["federation", "issue", "fr"], "no site 'fr'"),
        (["federation", "issue", "ru", "--host", "bad host"], "not a host name"),
        (["federation", "issue", "ru", "--days", "0"], "1 to 825 days"),
    ],
)
def test_bad_input_exits_2_and_changes_nothing(federated: Path, args: list[str], says: str) -> None:
    fed = federated.parent / "domicile-data" / "federation"
    before = _tree(fed)
    code, _, err = run(*args, "--config", str(federated))
    assert code == 2
    assert says in err
    assert "Traceback" not in err
    assert _tree(fed) == before


def test_init_refuses_bad_hosts_before_writing_anything(tmp_path: Path) -> None:
    for args in (["--federated", "--host", "fr=a.example"], ["--host", "ru=a.example"],
                 ["--federated", "--host", "ru"], ["--federated", "--host", "ru=no way"]):  # fmt: skip
        code, _, err = run("init", str(tmp_path / "d"), *args)
        assert code == 2, err
        assert not (tmp_path / "d").exists()
    assert os.listdir(tmp_path) == []


def test_check_proves_the_bundles_work_together_and_flags_a_bad_one(
    federated: Path, tmp_path: Path
) -> None:
    code, out, err = run("federation", "check", "--config", str(federated), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert [n["node"] for n in report["nodes"]] == ["de", "ru", "us"]
    assert {(c["from"], c["peer_seen"], c["http_version"]) for c in report["handshakes"]} == {
        ("de", "de", "HTTP/2"), ("ru", "ru", "HTTP/2"), ("us", "us", "HTTP/2"),
    }  # fmt: skip
    fed = federated.parent / "domicile-data" / "federation"
    kept = tmp_path / "us-kept"
    kept.mkdir()
    for name in ("node.pem", "node.key", "ca.pem"):
        (kept / name).write_bytes((fed / "nodes" / "us" / name).read_bytes())
    assert run("federation", "remove", "us", "--config", str(federated))[0] == 0
    (kept / "crl.pem").write_bytes((fed / "ca" / "crl.pem").read_bytes())
    before = _tree(fed)
    code, out, _ = run("federation", "check", "--bundle", str(fed / "nodes" / "ru"),
                       "--bundle", str(kept), "--json")  # fmt: skip
    assert code == 1
    report = json.loads(out)
    assert [(n["ok"], n.get("problem")) for n in report["nodes"]] == [
        (True, None),
        (False, "revoked"),
    ]
    assert [c["from"] for c in report["handshakes"]] == ["ru"]
    assert _tree(fed) == before
