"""``domicile bench federation``: three real ``domicile serve --node`` processes, measured
at their smallest size. The figures belong to the benchmark; what is asserted is the shape
of its JSON, that every operation it counts did what it is counted as (the records are at
the node it says, each cross-node read was a full transfer decided and audited at the RU
node), and that the nodes are stopped afterwards, on Ctrl-C too."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.security.domicile_process import cli, sqlite_audit

DOMICILE = Path(sys.executable).with_name("domicile")
MEASURES = {"in_node_write", "cross_node_write", "in_node_read", "cross_node_read", "local_read"}
RECORDS = 12


def _records(db: Path) -> int:
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        (n,) = conn.execute("SELECT count(*) FROM records").fetchone()
        return int(n)


def _running_with(config: Path) -> list[int]:
    """The processes whose command line names ``config``."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(config).encode() in argv:
                out.append(int(entry.name))
    return out


def _channel_ports(config: Path) -> list[int]:
    doc = yaml.safe_load(config.read_text())
    return [int(n["url"].rsplit(":", 1)[1]) for n in doc["federation"]["nodes"].values()]


def _closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _counts(entries: list[dict[str, Any]]) -> Counter[tuple[Any, ...]]:
    return Counter(
        (e["action"], e.get("requester"), e.get("detail", {}).get("operation"),
         e.get("detail", {}).get("forwarded_to"), e.get("detail", {}).get("answer"))
        for e in entries
    )  # fmt: skip


def test_bench_federation_measures_what_each_node_really_did(tmp_path: Path) -> None:
    keep = tmp_path / "kept"
    done = subprocess.run(
        [str(DOMICILE), "bench", "federation", "--records", str(RECORDS), "--connections", "2",
         "--json", "--keep", str(keep)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(done.stdout)
    assert data["benchmark"] == "federation"
    assert (data["records"], data["connections"]) == (RECORDS, 2)
    assert data["nodes"] == ["ru", "de", "us"]
    assert data["entry_node"] == "us"
    assert data["cross_node_reads"] == "full"
    assert data["done"] == dict.fromkeys(MEASURES, RECORDS)
    assert set(data["per_second"]) == set(data["latency_ms"]) == MEASURES
    assert all(v > 0 for v in data["per_second"].values()), data["per_second"]
    assert all(0 < lat["p50"] <= lat["p99"] for lat in data["latency_ms"].values())
    assert set(data["ratios"]) == {
        "cross_node_write_vs_in_node", "cross_node_read_vs_in_node", "cross_node_read_vs_local",
    }  # fmt: skip
    assert all(v > 0 for v in data["ratios"].values())

    folder = Path(data["deployment"])
    config = folder / "domicile.yaml"
    data_dir = folder / "domicile-data"
    # The nodes were stopped: no process runs with the deployment, no channel listens.
    assert _running_with(config) == []
    assert all(_closed(p) for p in _channel_ports(config))

    # The writes: US subjects at the US site, RU subjects at the RU site, none in Germany.
    assert _records(data_dir / "us.sqlite") == RECORDS
    assert _records(data_dir / "ru.sqlite") == RECORDS
    assert _records(data_dir / "de.sqlite") == 0
    logs = {s: sqlite_audit(data_dir / f"{s}.sqlite") for s in ("ru", "de", "us")}
    us, ru = _counts(logs["us"]), _counts(logs["ru"])
    # At the US node: its own writes and reads, and one request to the RU node per
    # cross-node write and read, each answered.
    assert us[("write", "us", None, None, None)] == RECORDS
    assert us[("read", "us", None, None, None)] == RECORDS
    assert us[("request", "us", "put", "ru", "answered")] == RECORDS
    assert us[("request", "us", "get", "ru", "answered")] == RECORDS
    # At the RU node: the writes the US node sent, written there as asked by node us;
    # each cross-node read a full transfer to the US under the Art. 12 notice; and the
    # local reads, asked at the RU node itself.
    assert ru[("write", "us", None, None, None)] == RECORDS
    transfers = [e for e in logs["ru"] if e["action"] == "transfer"]
    assert len(transfers) == RECORDS
    for entry in transfers:
        assert entry["requester"] == "us"
        assert entry["client"].startswith("node:us/")
        assert entry["detail"]["to_country"] == "US"
        assert "ru.art12_notice" in entry["detail"]["filings"]
    assert not [e for e in logs["ru"] if e["action"] == "disclose_masked"]
    assert ru[("read", "ru", None, None, None)] == RECORDS
    # Germany's node saw none of it; every log verifies.
    assert not [e for e in logs["de"] if e["action"] in ("write", "read", "transfer")]
    verified = cli("audit", "verify", "--json", "--config", str(config))
    assert verified.code == 0, verified.out + verified.err


def test_ctrl_c_stops_every_node(tmp_path: Path) -> None:
    keep = tmp_path / "kept"
    proc = subprocess.Popen(
        [str(DOMICILE), "bench", "federation", "--records", "1000000", "--max-seconds", "600",
         "--json", "--keep", str(keep)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    config = keep / "deployment" / "domicile.yaml"
    log = keep / "deployment" / "node-us.log"
    try:
        deadline = time.monotonic() + 300
        while not (log.exists() and b"/v1/collections/" in log.read_bytes()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the benchmark never started writing"
            time.sleep(0.2)
        assert len(_running_with(config)) == 3  # the three nodes, measuring
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert b"Traceback" not in err
    assert _running_with(config) == []
    assert all(_closed(p) for p in _channel_ports(config))


def test_keep_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x")
    done = subprocess.run(
        [str(DOMICILE), "bench", "federation", "--records", "10", "--json", "--keep",
         str(tmp_path)],
        capture_output=True, text=True, timeout=120, env={**os.environ},
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert json.loads(done.stdout)["error"]["code"] == "bad_input"
    assert (tmp_path / "something").read_text() == "x"


def test_a_node_that_does_not_start_fails_the_run_and_the_others_are_stopped(
    tmp_path: Path,
) -> None:
    from domicile.bench.federation import _nodes, _prepare
    from domicile.errors import EnvironmentProblem

    folder = tmp_path / "deployment"
    _prepare(folder)
    config = folder / "domicile.yaml"
    # The RU node's keyring is gone: that node refuses to start.
    (folder / "domicile-data" / "federation" / "nodes" / "ru" / "keyring.json").unlink()
    started = []
    with pytest.raises(EnvironmentProblem) as failed, _nodes(config):
        started.append(True)
    assert "did not start" in failed.value.message
    assert "node-ru.log" in (failed.value.hint or "")
    assert started == []
    assert _running_with(config) == []
    assert all(_closed(p) for p in _channel_ports(config))
