"""Law that changes: the packs' calendar, and a deployment's flows decided on both sides of
a dated change (Russia's 23-FZ wording of Art. 18(5), in force 1 July 2025; the 242-FZ
wording, in force 1 September 2015)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from domicile.cli.app import app
from domicile.config import parse_config
from domicile.packs import load_packs
from domicile.packs.changes import law_calendar
from domicile.setup import create_deployment
from domicile.vault import Domicile
from domicile.vault.impact import impact
from domicile.vault.replication import Replicator
from tests.vault.conftest import IVAN, Deployment, sqlite_urls

runner = CliRunner()
RU = {"citizenship": "RU"}
FR = {"citizenship": "FR", "residence": "FR"}
CHANGE = dt.date(2025, 7, 1)


def at(year: int, month: int, day: int) -> dt.datetime:
    return dt.datetime(year, month, day, 12, tzinfo=dt.UTC)


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(params=["sqlite", "postgresql"])
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Deployment:
    """RU, DE and US sites (SQLite files, or databases on the machine's PostgreSQL);
    profiles copied to DE and US. In June 2024 (242-FZ wording, Art. 12 notice on file, the
    wait over) a Russian citizen's profile is kept in Russia with copies in Germany and the
    US; a French citizen's profile is kept in Germany with a copy in the US."""
    urls = sqlite_urls()
    if request.param == "postgresql":
        make_db: Callable[[str], str] = request.getfixturevalue("pg_database")
        urls = {name: make_db(name) for name in urls}
    d = Deployment(request.param, tmp_path, urls, None)
    vault = d.open(at(2024, 6, 11))
    vault.add_filing("ru.art12_notice", "2024-05-27")
    vault.put("profiles", subject=RU, fields=IVAN, purpose="signup")
    vault.put("profiles", subject=FR, fields={"full_name": "Jeanne Martin"}, purpose="signup")
    assert Replicator(vault).run_once().delivered == 2
    vault.close()
    (tmp_path / "domicile.yaml").write_text(d.config_text)
    return d


def test_calendar_lists_the_new_russian_wording_on_1_july_2025() -> None:
    changes = law_calendar(load_packs(), since=CHANGE, until=CHANGE, only=["ru"])
    wording = [c for c in changes if c.kind == "new_wording"]
    assert [(c.rule, c.replaces) for c in wording] == [
        ("ru.localization.2025", "ru.localization.2015")
    ]
    assert any("23-FZ" in c.title for c in wording[0].citations)
    # A deadline that follows another for the same kinds is one change of the deadline.
    (answer,) = law_calendar(
        load_packs(), since=dt.date(2022, 9, 1), until=dt.date(2022, 9, 1), only=["ru"]
    )
    assert (answer.kind, answer.rule, answer.replaces) == (
        "deadline_changes",
        "ru.access_2022",
        "ru.access_before_2022",
    )
    assert "10 working days (was 30 days)" in answer.what
    # Whole calendar: sorted, and the day after a rule's last day is when it stops.
    every = law_calendar(load_packs())
    assert [c.date for c in every] == sorted(c.date for c in every)
    assert all(c.rule != "ru.localization.2015" or c.kind == "rule_starts" for c in every)


def test_calendar_cli_human_json_and_bad_dates() -> None:
    code, out, err = run("policy", "calendar", "--from", "2025-06-01", "--to", "2025-07-31")
    assert code == 0, err
    assert "2025-07-01" in out
    assert "ru.localization.2025" in out
    assert "23-FZ" in out
    code, out, _ = run("policy", "calendar", "--only", "ru", "--json")
    data = json.loads(out)
    assert {"date": "2025-07-01", "rule": "ru.localization.2025"}.items() <= next(
        c for c in data["changes"] if c["date"] == "2025-07-01"
    ).items()
    assert "waiting periods" in data["not_listed"]
    for args in (
        ["--from", "2025-02-30"],
        ["--to", "July"],
        ["--from", "2025-08-01", "--to", "2025-07-01"],
        ["--only", "zz"],
    ):
        code, out, err = run("policy", "calendar", *args)
        assert code == 2, (args, out)
        assert "Traceback" not in err
        assert err.startswith("error:")


def test_impact_on_both_sides_of_the_2025_change(deployment: Deployment) -> None:
    vault = deployment.open(at(2025, 6, 20))
    try:
        before = impact(vault, dt.date(2025, 6, 30))
        after = impact(vault, CHANGE)
    finally:
        vault.close()
    # The day before the change: nothing differs from 20 June.
    assert before.changes == []
    assert before.checked == {"write": 2, "copy": 3, "transfer": 0}
    # On the day: the copies of the Russian primary abroad are contested; nothing else moves.
    assert [(c.flow, c.site, c.to, c.before.value, c.after.value) for c in after.changes] == [
        ("copy", "ru", "de", "allow", "escalate"),
        ("copy", "ru", "us", "allow", "escalate"),
    ]
    for c in after.changes:
        assert c.laws == ("ru",)
        assert c.records == c.subjects == 1
        assert "remove" in c.consequence
        assert any(r["id"] == "ru.localization.2025" for r in c.rules)
    assert after.to_dict()["summary"]["copies_to_remove"] == 2
    assert after.unchanged == {"write": 2, "copy": 1, "transfer": 0}  # the FR copy to DE

    # Looking back from after the change: the same copies become allowed again.
    vault = deployment.open(at(2025, 7, 2))
    try:
        back = impact(vault, dt.date(2025, 6, 30))
    finally:
        vault.close()
    assert [(c.to, c.after.value) for c in back.changes] == [("de", "allow"), ("us", "allow")]
    assert back.to_dict()["summary"]["flows_allowed_again"] == 2


def test_impact_names_a_site_it_could_not_read(tmp_path: Path) -> None:
    d = Deployment("sqlite", tmp_path, sqlite_urls(), None)
    vault = d.open(at(2024, 6, 11))
    vault.add_filing("ru.art12_notice", "2024-05-27")
    vault.put("profiles", subject=RU, fields=IVAN, purpose="signup")
    vault.close()
    d.stop("de")
    vault = d.open(at(2025, 6, 20))
    try:
        out = impact(vault, CHANGE).to_dict()
    finally:
        vault.close()
    assert out["unavailable"] == ["de"]
    assert out["checked"]["write"] == 1  # Russia's records were still walked
    assert out["summary"]["copies_to_remove"] == 2


def test_impact_reads_from_abroad_need_the_art12_notice_from_march_2023(tmp_path: Path) -> None:
    # February 2023: a reader in Germany (adequate) reads a Russian primary under the 2006
    # wording of Art. 12. From 1 March 2023 the same read needs a notice first.
    d = Deployment("sqlite", tmp_path, sqlite_urls(), None)
    vault = d.open(at(2023, 2, 20))
    try:
        token = vault.put("profiles", subject=RU, fields=IVAN, purpose="signup").token
        assert vault.get(token, purpose="view", as_site="de").transfer
        out = impact(vault, dt.date(2023, 3, 1)).to_dict()
    finally:
        vault.close()
    assert out["checked"]["transfer"] == 1
    (read,) = [c for c in out["changes"] if c["flow"] == "transfer"]
    assert (read["site"], read["to"], read["before"], read["after"]) == (
        "ru",
        "DE",
        "allow",
        "deny",
    )
    assert any("ru.art12_notice" in s for s in read["steps"])
    assert out["summary"]["transfers_needing_steps"] == 1


US_ONLY = """
default_site: us
sites:
  - {id: us, country: US, location: {provider: P, city: Ashburn, address: "3 Way"}, backend: "sqlite:data/us.sqlite"}
collections:
  profiles:
    fields:
      full_name: {category: user.name, required: true}
      email: {category: user.contact.email}
      city: {category: user.contact.address.city}
"""


def test_impact_finds_writes_refused_when_the_duty_starts(tmp_path: Path) -> None:
    # August 2015: a Russian citizen's profile is written in the US, lawful until the
    # 242-FZ wording of Art. 18(5) starts on 1 September 2015.
    config = parse_config(US_ONLY, str(tmp_path / "domicile.yaml"), tmp_path)
    create_deployment(config)
    vault = Domicile(config, clock=lambda: at(2015, 8, 3))
    try:
        assert vault.put("profiles", subject=RU, fields=IVAN, purpose="signup").site == "us"
        out = impact(vault, dt.date(2015, 9, 1)).to_dict()
    finally:
        vault.close()
    writes = [c for c in out["changes"] if c["flow"] == "write"]
    assert len(writes) == 1
    assert (writes[0]["site"], writes[0]["before"], writes[0]["after"]) == ("us", "allow", "deny")
    assert writes[0]["consequence"] == "new writes and updates refused"
    assert "ru.localization.2015" in {r["id"] for r in writes[0]["rules"]}
    assert out["summary"]["writes_refused"] == 1


def test_impact_cli_writes_nothing_and_prints_no_values(deployment: Deployment) -> None:
    config = str(deployment.folder / "domicile.yaml")

    def state() -> object:
        # SQLite: every byte of every file; PostgreSQL: every row (a dump's header varies).
        if deployment.backend == "sqlite":
            return deployment.everything()
        return [deployment.dump(n) for n in deployment.urls]

    snapshot = state()
    files = sorted(p for p in deployment.folder.rglob("*"))
    code, out, err = run(
        "policy", "impact", "--on", "2025-07-01", "--baseline", "2025-06-20",
        "--config", config, "--json",
    )  # fmt: skip
    assert code == 0, err
    data = json.loads(out)
    assert data["summary"]["copies_to_remove"] == 2
    code, human, err = run(
        "policy", "impact", "--on", "2025-07-01", "--baseline", "2025-06-20", "--config", config
    )
    assert code == 0, err
    assert "escalate" in human
    assert "ru -> de" in human
    for value in (*IVAN.values(), "Jeanne Martin"):
        assert value not in out
        assert value not in human
    for args in (["--on", "2025-13-01"], ["--on", "2025-07-01", "--baseline", "soon"]):
        code, _, err = run("policy", "impact", *args, "--config", config)
        assert code == 2
        assert err.startswith("error:")
    assert sorted(p for p in deployment.folder.rglob("*")) == files
    assert state() == snapshot
