"""Attacks on ``domicile migrate``'s plan file (review findings 4, 5 and 11): a URL query
that points elsewhere or carries a password, a plan edited or carried to another
database, a plan written over a file it should not replace."""

from __future__ import annotations

import json
import re
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from domicile.discovery.migration import load_plan
from domicile.discovery.migration import run as run_plan
from domicile.discovery.migration.plan import _same_source, public_url
from domicile.discovery.sources import DatabaseSource
from domicile.discovery.synthetic import generate
from domicile.vault import Domicile
from tests.discovery.test_migrate import (
    cli,
    cli_json,
    customers,
    deployment,
    make_plan,
    one_line,
    sqlite_source,
)

SUBJECTS = 40


# --- finding 4: the URL's query ---------------------------------------------------------------


def test_a_query_that_names_another_server_is_another_source() -> None:
    plan = "postgresql://mover@/crm"
    assert _same_source("postgresql://mover:pw@/crm", plan)
    for other in (
        "postgresql://mover:pw@/crm?host=evil.example",
        "postgresql://mover:pw@/crm?port=6543",
        "postgresql://mover:pw@/crm?hostaddr=10.0.0.9",
        "postgresql://mover:pw@/crm?service=other",
        "postgresql://mover:pw@/crm?dbname=other",
        "postgresql://mover:pw@/crm?user=admin",
        "postgresql://mover:pw@/crm?options=-csearch_path%3Dother",
        "mysql://mover:pw@db/crm?unix_socket=/tmp/other.sock",
    ):
        assert not _same_source(other, plan), other
    # a password in the query is the password, not another source
    assert _same_source("postgresql://mover@/crm?password=pw", plan)
    assert _same_source("postgresql://mover@/crm?sslpassword=pw&passfile=/x", plan)


def test_a_password_in_the_query_stays_out_of_the_plan(
    pg_database: Callable[[str], str], tmp_path: Path
) -> None:
    url = pg_database("migq")
    from domicile.discovery.synthetic import write_database

    write_database(generate(SUBJECTS, seed=21), url)
    config = deployment(tmp_path)
    secret = "s3cretQpw"
    assert public_url(f"{url}?password={secret}&PASSWD={secret}&sslpassword={secret}") == url
    with_query = f"{url}?password={secret}"
    plan_file = tmp_path / "plan.yaml"
    make_plan(with_query, config, plan_file)
    assert secret not in plan_file.read_text()
    code, out, err = cli(
        "migrate", "plan", with_query, "--collection", "profiles", "--located-in", "US",
        "--config", config, "--json",
    )  # fmt: skip
    assert code == 0, out + err
    assert secret not in out + err
    # the same source, its password given in the query
    done = cli_json("migrate", "run", str(plan_file), "--source", with_query, "--config", config)
    assert done["moved"] > 0
    # and a query that points elsewhere is refused before anything is opened
    elsewhere = f"{url}?host=127.0.0.2&password={secret}"
    code, out, err = cli(
        "migrate", "verify", str(plan_file), "--source", elsewhere, "--config", config
    )
    assert "another source" in one_line(code, out, err, 2, secret)


def test_error_messages_hide_a_password_in_the_query(tmp_path: Path) -> None:
    config = deployment(tmp_path)
    for as_json in (False, True):
        code, out, err = cli(
            "migrate", "plan", "postgresql://mover@127.0.0.1:1/crm?password=s3cretQpw",
            "--collection", "profiles", "--located-in", "US", "--config", config,
            "--out", str(tmp_path / "p.yaml"), *(["--json"] if as_json else []),
        )  # fmt: skip
        assert code == 4, out + err
        assert "s3cretQpw" not in out + err


def test_output_masks_query_and_keyword_passwords() -> None:
    from domicile.cli._output import mask_secrets

    text = (
        "postgresql://u:pw1@h/db postgresql://u@h/db?sslmode=require&password=pw2 "
        "mysql://u@h/db?PASSWD=pw3&x=1 host=h password=pw4 dbname=db sslpassword=pw5"
    )
    masked = mask_secrets(text)
    for s in ("pw1", "pw2", "pw3", "pw4", "pw5"):
        assert s not in masked
    assert "sslmode=require" in masked
    assert "x=1" in masked


# --- finding 11: the plan file ----------------------------------------------------------------


def test_plan_never_replaces_a_file_and_is_private(tmp_path: Path) -> None:
    url = sqlite_source(tmp_path, generate(SUBJECTS, seed=22))
    config = deployment(tmp_path)
    target = Path(config)  # domicile.yaml itself
    before = target.read_bytes()
    code, out, err = cli(
        "migrate", "plan", url, "--collection", "profiles", "--located-in", "US",
        "--out", str(target), "--config", config,
    )  # fmt: skip
    assert "exists already" in one_line(code, out, err, 2)
    assert target.read_bytes() == before
    plan_file = tmp_path / "plan.json"
    make_plan(url, config, plan_file)
    assert stat.S_IMODE(plan_file.stat().st_mode) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".plan.json")]


# --- finding 5: the plan belongs to its deployment and its database -------------------------


def _edit(plan_file: Path, change: Callable[[dict[str, Any]], None]) -> None:
    data = yaml.safe_load(plan_file.read_text())
    change(data)
    plan_file.write_text(yaml.safe_dump(data, sort_keys=False))


def _us_for_everyone(data: dict[str, Any]) -> None:
    for r in data["residencies"]:
        for part in ("citizenship", "residence", "location"):
            r[part] = {"certain": ["US"], "possible": []}


def test_an_edited_residency_is_refused(tmp_path: Path) -> None:
    url = sqlite_source(tmp_path, generate(SUBJECTS, seed=23))
    config = deployment(tmp_path)
    plan_file = tmp_path / "plan.yaml"
    plan = make_plan(url, config, plan_file)
    assert plan["destinations"].get("ru", 0) > 0
    _edit(plan_file, _us_for_everyone)
    before = (tmp_path / "legacy.db").read_bytes()
    for verb in ("run", "verify"):
        code, out, err = cli("migrate", verb, str(plan_file), "--config", config)
        assert "changed" in one_line(code, out, err, 2)
    assert (tmp_path / "legacy.db").read_bytes() == before
    d = Domicile.open(config)
    try:
        assert sum(d.store(s.id).count() for s in d.config.sites) == 0
    finally:
        d.close()


def test_edits_the_plan_invites_still_run(tmp_path: Path) -> None:
    url = sqlite_source(tmp_path, generate(SUBJECTS, seed=24))
    config = deployment(tmp_path)
    plan_file = tmp_path / "plan.yaml"
    make_plan(url, config, plan_file)
    kept: list[str] = []

    def keep_some(data: dict[str, Any]) -> None:
        data["legacy"] = "delete"
        data["batch_size"] = 7
        data["tables"]["customers"]["map"].pop("fld_c")
        for sid, s in list(data["subjects"].items())[:5]:
            if s["site"]:
                s["site"] = None
                kept.append(sid)

    _edit(plan_file, keep_some)
    assert kept
    done = cli_json("migrate", "run", str(plan_file), "--config", config)
    assert done["moved"] > 0
    report = cli_json("migrate", "verify", str(plan_file), "--config", config)
    assert report["ok"] is True, report["problems"]


def test_a_plan_of_another_deployment_or_source_is_refused(tmp_path: Path) -> None:
    url = sqlite_source(tmp_path, generate(SUBJECTS, seed=25))
    other_url = sqlite_source(tmp_path, generate(SUBJECTS, seed=26), "other.db")
    config = deployment(tmp_path)
    plan_file = tmp_path / "plan.yaml"
    make_plan(url, config, plan_file)
    # the source named in the file, changed
    _edit(plan_file, lambda d: d.update(source=public_url(other_url)))
    code, out, err = cli("migrate", "run", str(plan_file), "--config", config)
    assert "changed" in one_line(code, out, err, 2)
    # a plan of another deployment
    (tmp_path / "two").mkdir()
    config2 = deployment(tmp_path / "two")
    plan2 = tmp_path / "plan2.yaml"
    make_plan(url, config2, plan2)
    code, out, err = cli("migrate", "run", str(plan2), "--config", config)
    assert "changed" in one_line(code, out, err, 2)
    # a plan without its seal (as plans were before they had one)
    _edit(plan2, lambda d: d.pop("seal"))
    code, out, err = cli("migrate", "verify", str(plan2), "--config", config2)
    assert "not sealed" in one_line(code, out, err, 2)


def test_a_plan_carried_to_another_database_at_the_same_place_is_refused(
    tmp_path: Path,
) -> None:
    """The plan ran on one database; another one with the same schema and the same keys
    (other people) now stands where it was. Its rows must not be taken for moved and
    given the tokens of the first database's records."""
    a = generate(SUBJECTS, seed=27)
    url = sqlite_source(tmp_path, a)
    config = deployment(tmp_path)
    plan_file = tmp_path / "plan.yaml"
    make_plan(url, config, plan_file)
    assert cli("migrate", "run", str(plan_file), "--config", config)[0] == 0
    # another database of the same schema and keys, at the same path; a copy of the plan
    sqlite_source(tmp_path, generate(SUBJECTS, seed=28), "b.db")
    shutil.move(tmp_path / "b.db", tmp_path / "legacy.db")
    copy = tmp_path / "copy.yaml"
    copy.write_bytes(plan_file.read_bytes())
    before = customers(url)
    code, out, err = cli("migrate", "run", str(copy), "--config", config)
    assert "another database" in one_line(code, out, err, 2)
    assert customers(url) == before


def test_a_record_of_other_values_is_never_taken_for_a_row_moved(tmp_path: Path) -> None:
    """Below the plan's checks: when a row's record id is already in the vault, the run
    rewrites the row only if the record holds the row's own values."""
    url = sqlite_source(tmp_path, generate(SUBJECTS, seed=29))
    config = deployment(tmp_path)
    plan_file = tmp_path / "plan.yaml"
    make_plan(url, config, plan_file)
    assert cli("migrate", "run", str(plan_file), "--config", config)[0] == 0
    sqlite_source(tmp_path, generate(SUBJECTS, seed=30), "b.db")
    shutil.move(tmp_path / "b.db", tmp_path / "legacy.db")
    before = customers(url)
    copy = tmp_path / "copy.yaml"
    copy.write_bytes(plan_file.read_bytes())
    plan = load_plan(copy)
    d = Domicile.open(config)
    src = DatabaseSource(url, writable=True)  # the plan's checks bypassed on purpose
    try:
        outcome = run_plan(plan, vault=d, source=src)
    finally:
        src.close()
        d.close()
    after = customers(url)
    overwritten = [k for k in after if after[k][0] != before[k][0] and k in before]
    # rows whose ids were taken stay as they were; none holds another record's token
    assert outcome.refused.get("id taken by other values", 0) > 0
    d = Domicile.open(config)
    try:
        for k in overwritten:
            site, _ = d.tokens.read(after[k][0])
            got = d.get(after[k][0], purpose="check", as_site=site).fields
            assert got["email"] == before[k][1]
    finally:
        d.close()


def test_the_plan_keeps_no_value(tmp_path: Path) -> None:
    data = generate(SUBJECTS, seed=31)
    url = sqlite_source(tmp_path, data)
    config = deployment(tmp_path)
    plan_file = tmp_path / "plan.json"
    make_plan(url, config, plan_file)
    text = plan_file.read_text()
    values = {str(v) for r in data.tables["customers"].rows for v in r[1:6] if v is not None}
    assert not [v for v in values if len(v) > 3 and v in text]
    sealed = json.loads(text)
    assert re.fullmatch(r"[0-9a-f]{64}", sealed["seal"])
