"""The CLI contract: options, JSON shape, exit codes (0 any decision, 1 failed check, 2 bad input)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from domicile.cli.app import app

from .conftest import PACKS, TEST_PACKS

runner = CliRunner()

EXPLAIN = [
    "policy", "explain", "--subject", "citizenship=RU", "--category", "user.contact.email",
    "--operation", "store", "--site-country", "DE", "--date", "2025-09-01",
]  # fmt: skip


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_explain_json_contract() -> None:
    code, out, _ = run(*EXPLAIN, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["decision"] == "deny"
    assert {"decision", "jurisdictions", "rules", "obligations", "explanation"} <= set(data)
    covering = {j["jurisdiction"]: j["coverage"] for j in data["jurisdictions"]}
    assert covering["RU"] == "covered"
    assert "ru.localization.2025" in [r["id"] for r in data["rules"]]


def test_explain_accepts_every_documented_option() -> None:
    code, out, _ = run(
        "policy", "explain", "--subject", "citizenship=RU", "--subject", "phone=+7 912 345-67-89",
        "--subject", "document=ru_inn:7707083893", "--subject", "ip=77.88.55.88",
        "--subject", "residence=RU", "--subject", "located_at_collection=RU",
        "--category", "user.name", "--operation", "retrieve", "--site-country", "RU",
        "--to-country", "US", "--date", "2025-09-22",
        "--filing", "ru.art22_notice=2020-01-01", "--filing", "ru.art12_notice=2025-09-05",
        "--filing", "ru.transfer_ban.CN=2025-01-01", "--filing", "eu.scc.US=2024-01-01",
        "--basis", "consent", "--basis", "ru.art6_1_8", "--fact", "replica=false",
        "--fact", "controller.ciio=false", "--fact", "controller.state_body=false",
        "--fact", "ytd_export_subjects=10", "--fact", "ytd_export_sensitive_subjects=0", "--json",
    )  # fmt: skip
    assert code == 0, out
    data = json.loads(out)
    assert data["decision"] == "allow"
    assert "912" not in out
    assert "7707083893" not in out
    assert "77.88" not in out


def test_explain_human_output_names_rule_and_decision() -> None:
    code, out, _ = run(*EXPLAIN)
    assert code == 0
    assert "DENY" in out
    assert "ru.localization.2025" in out


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (["--site-country", "XX"], "site country is not an ISO 3166-1 alpha-2 code"),
        (["--date", "2025-02-30"], "not a real date"),
        (["--category", "user.nope"], "unknown data category"),
        (["--filing", "ru.art12_notice"], "NAME=VALUE"),
    ],
)
def test_bad_input_exits_2_with_one_clear_line(change: list[str], words: str) -> None:
    args = list(EXPLAIN)
    flag = change[0]
    if flag in args:
        args[args.index(flag) + 1] = change[1]
    else:
        args += change
    code, out, err = run(*args)
    assert code == 2
    assert words in err
    assert "Traceback" not in err + out
    assert len(err.strip().splitlines()) == 1
    code, out, _ = run(*args, "--json")
    assert code == 2
    assert json.loads(out)["error"]["code"]


def test_missing_required_option_is_a_usage_error() -> None:
    code, _, err = run("policy", "explain", "--subject", "citizenship=RU")
    assert code == 2
    assert "Missing option" in err


def test_policy_list() -> None:
    code, out, _ = run("policy", "list", "--json")
    assert code == 0
    ids = {p["id"] for p in json.loads(out)}
    assert "ru" in ids


def test_policy_validate_ok_and_broken(tmp_path: Path) -> None:
    code, out, _ = run("policy", "validate", str(PACKS / "ru.yaml"), "--json")
    assert code == 0
    assert json.loads(out)["ok"] is True
    bad = tmp_path / "bad.yaml"
    bad.write_text((TEST_PACKS / "aa.yaml").read_text().replace("mode: primary", "mode: sometimes"))
    code, _, err = run("policy", "validate", str(bad))
    assert code == 2
    assert f"{bad}:" in err
    assert "rules[0].mode" in err


def test_policy_validate_reports_failing_fixtures(tmp_path: Path) -> None:
    text = (PACKS / "ru.yaml").read_text()
    text = text.replace(
        "expect: {decision: deny, rules: [ru.localization.2025], not_fired: [ru.localization.2015]}",
        "expect: {decision: allow}",
    )
    mine = tmp_path / "ru.yaml"
    mine.write_text(text)
    code, out, _ = run("policy", "validate", str(mine), "--json")
    assert code == 1
    report = json.loads(out)
    assert report["ok"] is False
    assert "decision is deny, expected allow" in report["failed"][0]["problems"][0]


def test_residency_resolve() -> None:
    code, out, _ = run("residency", "resolve", "--subject", "phone=+7 912 345-67-89", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["citizenship"]["possible"] == ["RU"]
    assert data["uncertain"] is True
    assert [j["coverage"] for j in data["jurisdictions"] if j["pack"] == "ru"] == ["possible"]
    assert "912" not in out


def test_policy_fixtures_all_pass() -> None:
    code, out, _ = run("policy", "fixtures", "--json")
    assert code == 0, out
    assert json.loads(out)["ok"] is True


def test_bench_policy_prints_ratios() -> None:
    code, out, _ = run("bench", "policy", "--seconds", "0.05", "--json")
    assert code == 0
    data = json.loads(out)
    assert set(data["ratios"]) == {
        "decide_cached_vs_dict",
        "decide_uncached_vs_dict",
        "resolve_vs_dict",
    }
    assert all(v > 0 for v in data["ratios"].values())


def test_bench_rejects_an_unknown_backend() -> None:
    code, _, err = run("bench", "vault", "--backend", "oracle", "--json")
    assert code == 2
    assert "unknown backend" in err + _


def test_policy_tour_runs() -> None:
    code, out, _ = run("policy", "tour", "--json")
    assert code == 0
    data = json.loads(out)
    moscow = data["placements"][0]
    assert moscow["sites"]["RU"] == "allow"
    assert moscow["sites"]["US"] == "deny"
    assert [s["decision"] for s in data["timeline"]] == ["deny", "deny", "allow", "deny"]


def test_main_job_demo(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    code, out, err = run("demo", "--dir", str(folder), "--json")
    assert code == 0, err
    data = json.loads(out)
    placed = {p["subject"]: p["site"] for p in data["placements"]}
    assert placed["Russian citizen in Moscow"] == "ru"
    assert placed["French resident"] == "de"
    assert placed["US citizen in Boston"] == "us"
    assert placed["Russian citizen living in Berlin"] is None  # conflicting laws: refused
    assert data["plaintext_check"]["found"] == []
    assert all(a["ok"] for a in data["audit"])
    # Running it again recreates its own folder; a foreign folder is left alone.
    assert run("demo", "--dir", str(folder), "--json")[0] == 0
    other = tmp_path / "mine"
    other.mkdir()
    assert run("demo", "--dir", str(other))[0] == 1


def test_version_names_the_packs() -> None:
    for args in (["--version"], ["version"]):
        code, out, _ = run(*args)
        assert code == 0
        assert out.startswith("domicile ")
        assert "ru 1." in out


@pytest.mark.parametrize("args", [["--help"], ["get", "--help"], ["audit", "--help"]])
def test_help_shows_no_type_for_flags_and_whole_sentences(args: list[str]) -> None:
    result = CliRunner().invoke(app, args, env={"COLUMNS": "250"})
    assert result.exit_code == 0
    assert "<bool>" not in result.stdout
    # A docstring's own line breaks do not cut the command list's sentences short: on a
    # wide terminal each command's description is one line.
    rows = [ln.strip("│ ") for ln in result.stdout.splitlines() if ln.startswith("│")]
    continued = [r for r in rows if r and not r.startswith(("-", "*")) and r[0].islower()
                 and "  " not in r]  # fmt: skip
    assert not continued, continued
