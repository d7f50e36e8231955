"""``domicile retention`` from the command line: plan and dry run write nothing at all,
a run makes its act, and a bad retention in the configuration is named with its line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from domicile.cli.app import app

from .conftest import HOLD, World, config_text, fingerprint

runner = CliRunner()


def cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def _fill(world: World) -> None:
    """Records written in March 2025: by now their periods are over."""
    world.put("invoices", "US", {"payer": "John Miller", "email": "j@example.com", "amount": 7})
    world.put(
        "profiles", "US", {"full_name": "Ann Lee", "email": "ann@example.com", "city": "Reno"}
    )
    world.put("profiles", "RU", {"full_name": "Olga Smirnova", "email": "olga@example.ru"})
    world.vault.close()


def test_plan_and_dry_run_write_nothing_then_run(world: World, tmp_path: Path) -> None:
    _fill(world)
    cfg = str(tmp_path / "domicile.yaml")
    before = fingerprint(tmp_path)
    code, out, err = cli("retention", "plan", "--config", cfg, "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert {(r["collection"], r["site"]): r["due"]["erase"] for r in plan["collections"]} == {
        ("invoices", "us"): 0, ("profiles", "us"): 1, ("profiles", "ru"): 1,
    }  # fmt: skip
    code, out, err = cli("retention", "plan", "--config", cfg, "--json", "--site", "ru")
    assert [(r["collection"], r["site"]) for r in json.loads(out)["collections"]] == [
        ("profiles", "ru")
    ]
    code, out, err = cli("retention", "run", "--dry-run", "--config", cfg, "--site", "mars")
    assert code == 2
    assert "no configured site is named 'mars'" in err
    code, out, err = cli("retention", "plan", "--config", cfg)
    assert code == 0
    assert HOLD in out
    assert "Miller" not in out
    assert "ann@" not in out
    code, out, err = cli("retention", "run", "--dry-run", "--config", cfg, "--json")
    assert code == 0, err
    dry = json.loads(out)
    assert dry["dry_run"]
    assert dry["act"] is None
    assert sum(s["records_erased"] for s in dry["sites"]) == 2
    assert sum(s["keys_destroyed"] for s in dry["sites"]) == 2
    code, out, err = cli("retention", "acts", "--config", cfg)
    assert code == 0
    assert "no acts yet" in out
    assert fingerprint(tmp_path) == before  # byte for byte, and no new file

    code, out, err = cli("retention", "run", "--config", cfg, "--json")
    assert code == 0, err
    done = json.loads(out)
    assert done["sites"] == dry["sites"]
    assert not done["dry_run"]
    assert done["act"].startswith("act_rt_")
    code, out, err = cli("retention", "acts", "--config", cfg, "--json")
    [act] = json.loads(out)["acts"]
    assert act["act"]["id"] == done["act"]
    assert act["act"]["totals"]["records"] == 2
    code, out, err = cli("audit", "verify", "--config", cfg)
    assert code == 0, out + err
    code, out, err = cli("retention", "run", "--config", cfg)
    assert code == 0
    assert "act of destruction" not in out


BAD = [
    ("keep: 30d\n      hold:", "keep: 30 days\n      hold:", "a period is a number and a unit"),
    ("after: collected\n      keep: 30d", "after: signup\n      keep: 30d", "purpose_end"),
    ("fields: [payer, amount]", "fields: [payer, iban]", "has no field 'iban'"),
    ('statute: "' + HOLD + '", ', "", "statute"),
    (
        "city: {category: user.contact.address.city,",
        "city: {category: user.contact.address.city, required: true,",
        "a required field cannot have a retention",
    ),
]


@pytest.mark.parametrize(("old", "new", "said"), BAD)
def test_bad_retention_is_named_with_its_line(
    tmp_path: Path, old: str, new: str, said: str
) -> None:
    text = config_text()
    assert old in text
    (tmp_path / "domicile.yaml").write_text(text.replace(old, new))
    for args in (["plan"], ["run"], ["run", "--dry-run"]):
        code, out, err = cli("retention", *args, "--config", str(tmp_path / "domicile.yaml"))
        assert code == 2, out + err
        assert said in err
        assert "domicile.yaml:" in err
        assert "Traceback" not in err
    code, out, _ = cli("retention", "plan", "--json", "--config", str(tmp_path / "domicile.yaml"))
    assert json.loads(out)["error"]["code"] == "invalid_config"
    assert list(tmp_path.iterdir()) == [tmp_path / "domicile.yaml"]


def test_bad_as_of(world: World, tmp_path: Path) -> None:
    world.vault.close()
    code, _, err = cli("retention", "plan", "--as-of", "soon", "--config", str(tmp_path))
    assert code == 2
    assert "YYYY-MM-DD" in err


def test_a_site_down_is_done_later(world: World, tmp_path: Path) -> None:
    _fill(world)
    cfg = str(tmp_path / "domicile.yaml")
    ru = tmp_path / "data" / "ru.sqlite"
    ru.rename(tmp_path / "ru.away")
    code, out, err = cli("retention", "run", "--config", cfg, "--json")
    assert code == 4, err
    done = json.loads(out)
    assert done["unavailable"] == ["ru"]
    assert [s["site"] for s in done["sites"]] == ["us"]
    (tmp_path / "ru.away").rename(ru)
    code, out, err = cli("retention", "run", "--config", cfg, "--json")
    assert code == 0, err
    again = {s["site"]: s["records_erased"] for s in json.loads(out)["sites"]}
    assert again == {"ru": 1, "us": 0}  # us: the invoice a hold keeps, nothing more to do
    code, out, _ = cli("retention", "acts", "--config", cfg, "--json")
    found = json.loads(out)["acts"]
    assert [sorted(s["site"] for s in a["signatures"]) for a in found] == [["us"], ["ru"]]


def test_the_plan_names_what_a_restriction_keeps(world: World, tmp_path: Path) -> None:
    from domicile.rights import fulfil, open_request
    from domicile.vault import Domicile

    _fill(world)
    vault = Domicile(world.config, clock=world.clock)
    req = open_request(
        vault, "restriction", {"email": "ann@example.com"},
        checked_by="dpo.kim", verified_how="account_login",
    )  # fmt: skip
    fulfil(vault, req["id"])
    vault.close()
    cfg = str(tmp_path / "domicile.yaml")
    code, out, err = cli("retention", "plan", "--config", cfg)
    assert code == 0, err
    assert "(1 of them kept by a restriction)" in out
    assert f"restricted by request {req['id']}" in out
    assert "Ann" not in out
    assert "ann@" not in out
    code, out, err = cli("retention", "plan", "--config", cfg, "--json")
    [kept] = json.loads(out)["kept"]
    assert (kept["site"], kept["request"], kept["collections"]) == ("us", req["id"], ["profiles"])
