"""``domicile bench vault|transfers|scale`` at their smallest sizes: the JSON each prints,
on both backends, and the one-line message when the ORM baseline's extra is missing. The
figures are not asserted (they belong to benchmarks, not tests); their shape is."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from typer.testing import CliRunner

from domicile.cli.app import app
from tests.pg import PgServer

runner = CliRunner()
VAULT_RATES = {
    "sdk_batch_put", "raw_insert", "orm_put", "ceiling_put",
    "sdk_get", "raw_select", "orm_get", "ceiling_get",
}  # fmt: skip
VAULT_RATIOS = {"put_vs_insert", "get_vs_select", "put_vs_orm", "get_vs_orm"}


def bench(*args: str) -> dict[str, Any]:
    result = runner.invoke(app, ["bench", *args, "--json"])
    assert result.exit_code == 0, result.stdout + result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> list[str]:
    if request.param == "sqlite":
        return ["--backend", "sqlite"]
    server: PgServer = request.getfixturevalue("pg_server")
    base = server.admin_url.rsplit("/", 1)[0]
    return ["--backend", "postgresql", "--postgres-url", base]


def test_bench_vault_reports_every_side_with_targets_and_ceilings(backend: list[str]) -> None:
    data = bench(
        "vault", "--records", "100", "--gets", "20", "--readers", "2", "--repeat", "2", *backend
    )
    assert data["benchmark"] == "vault"
    assert data["backend"] == backend[1]
    assert (data["records"], data["gets"], data["readers"], data["repeat"]) == (100, 20, 2, 2)
    assert set(data["per_second"]) == VAULT_RATES
    assert all(v > 0 for v in data["per_second"].values())
    assert set(data["ratios"]) == VAULT_RATIOS
    assert set(data["ceiling"]) == set(data["of_ceiling"]) == VAULT_RATIOS
    assert [set(r) for r in data["runs"]] == [VAULT_RATES, VAULT_RATES]
    put_target = 0.2 if backend[1] == "sqlite" else 0.25
    assert data["target"]["ratio"] == put_target
    assert data["target"]["ratios"] == {
        "put_vs_insert": put_target, "get_vs_select": 0.3, "put_vs_orm": 1.0, "get_vs_orm": 1.0
    }  # fmt: skip
    assert data["target"]["met"] == {
        k: data["ratios"][k] >= v for k, v in data["target"]["ratios"].items()
    }


def test_bench_vault_prints_each_ratio_beside_its_target_and_ceiling() -> None:
    result = runner.invoke(
        app, ["bench", "vault", "--records", "100", "--gets", "10", "--readers", "1"]
    )
    assert result.exit_code == 0, result.stderr
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("ratio ")]
    assert [ln.split(":")[0] for ln in lines] == [f"ratio {r}" for r in (
        "put_vs_insert", "get_vs_select", "put_vs_orm", "get_vs_orm"
    )]  # fmt: skip
    assert all("(target " in ln for ln in lines)
    assert "ceiling of the required work" in result.stdout


def test_bench_transfers_reports_ratios_with_ceilings(backend: list[str]) -> None:
    data = bench(
        "transfers", "--records", "100", "--reads", "10", "--parity-records", "0", *backend
    )
    assert data["delivered"] == 100
    assert set(data["ratios"]) == {"replication_vs_copy", "read_abroad_vs_select"}
    assert set(data["ceiling"]) == set(data["ratios"])
    assert set(data["per_second"]) == {
        "replication", "plain_copy", "ceiling_replication",
        "read_from_abroad", "plain_select", "ceiling_read",
    }  # fmt: skip
    assert data["target"]["ratios"] == {"replication_vs_copy": 0.25, "read_abroad_vs_select": 0.3}
    assert "parity_memory" not in data


def test_bench_transfers_keeps_the_parity_memory_check() -> None:
    data = bench("transfers", "--records", "100", "--reads", "10", "--parity-records", "2000")
    assert data["parity_memory"]["ok"] is True
    assert data["parity_memory"]["copies"] == 2000


def test_bench_scale_reports_tenths_and_memory(backend: list[str]) -> None:
    data = bench("scale", "--records", "1000", "--batch", "50", *backend)
    assert data["benchmark"] == "scale"
    assert set(data["per_second"]) == {
        "first_tenth", "last_tenth", "overall", "ceiling_first_tenth", "ceiling_last_tenth",
    }  # fmt: skip
    assert set(data["ratios"]) == {"last_vs_first"}
    # The layout's own ratio beside ours, measured in the same run.
    rates = data["per_second"]
    allowed = data["ceiling"]["last_vs_first"]
    assert allowed == pytest.approx(
        rates["ceiling_last_tenth"] / rates["ceiling_first_tenth"], rel=0.01
    )
    assert data["of_ceiling"]["last_vs_first"] == pytest.approx(
        data["ratios"]["last_vs_first"] / allowed, rel=0.02
    )
    assert data["target"]["ratios"] == {"last_vs_first": 0.8}
    assert set(data["target"]["met"]) == {"last_vs_first", "memory_flat"}
    memory = data["memory"]
    assert len(memory["by_tenth_mb"]) == 10
    assert memory["peak_mb"] >= max(memory["by_tenth_mb"]) > 0
    assert memory["flat"] is data["target"]["met"]["memory_flat"]


def test_the_smallest_scale_load_is_refused_below_its_minimum() -> None:
    result = runner.invoke(app, ["bench", "scale", "--records", "10"])
    assert result.exit_code == 2


WITHOUT_ORM = (
    "import sys\n"
    "sys.modules['sqlalchemy'] = None  # as if the bench extra were not installed\n"
    "sys.modules['sqlalchemy_utils'] = None\n"
    "from domicile.cli.app import main\n"
    "sys.argv = ['domicile', *sys.argv[1:]]\n"
    "main()\n"
)


def _without_orm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_ORM, "bench", "vault", "--records", "100", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_without_the_bench_extra_vault_says_what_to_install() -> None:
    done = _without_orm()
    assert done.returncode == 2
    message = done.stderr.strip()
    assert len(message.splitlines()) == 1
    assert "pip install 'domicile[bench]'" in message
    assert "Traceback" not in done.stderr


def test_without_the_bench_extra_json_names_the_error() -> None:
    done = _without_orm("--json")
    assert done.returncode == 2
    error = json.loads(done.stdout)["error"]
    assert error["code"] == "missing_extra"
    assert "domicile[bench]" in error["hint"]
