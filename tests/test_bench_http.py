"""``domicile bench http --json``: a real multi-process service, the SDK and the serving
ceiling measured in one run, with every rate, latency and ratio the README quotes (the
figures themselves belong to the benchmark, not to a test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

DOMICILE = Path(sys.executable).with_name("domicile")
MEASURES = {"put", "get", "put_batch", "get_batch"}


def test_bench_http_reports_rates_latencies_ratios_and_the_ceiling() -> None:
    done = subprocess.run(
        [str(DOMICILE), "bench", "http", "--seconds", "0.5", "--workers", "2",
         "--concurrency", "2", "--batch", "5", "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert (data["workers"], data["concurrency"], data["batch"]) == (2, 2, 5)
    rates = data["per_second"]
    assert set(rates) == {f"http_{m}" for m in MEASURES} | {
        "sdk_put", "sdk_get", "ceiling_put", "ceiling_get",
    }  # fmt: skip
    assert all(v > 0 for v in rates.values()), rates
    for name, latency in data["latency_ms"].items():
        assert name in rates
        assert 0 < latency["p50"] <= latency["p99"], (name, latency)
    assert set(data["ratios"]) == {
        "http_put_vs_sdk", "http_get_vs_sdk", "http_put_batch_vs_sdk", "http_get_batch_vs_sdk",
        "ceiling_put_vs_sdk", "ceiling_get_vs_sdk", "http_put_vs_ceiling", "http_get_vs_ceiling",
    }  # fmt: skip
    assert data["targets"] == {"http_put_vs_sdk": 0.6, "http_get_vs_sdk": 0.5}
    # A missed target carries the ceiling the serving stack itself allows.
    for name, ceiling in data["ceilings"].items():
        assert data["ratios"][name] < data["targets"][name]
        assert ceiling == data["ratios"][name.replace("http_", "ceiling_")]


def test_bench_http_prints_a_readable_table() -> None:
    done = subprocess.run(
        [str(DOMICILE), "bench", "http", "--seconds", "0.5", "--workers", "1",
         "--concurrency", "1", "--batch", "2"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "ratio http_put_vs_sdk:" in done.stdout
    assert "(target 0.6)" in done.stdout
    assert "{" not in done.stdout  # a table and sentences, never a dict
