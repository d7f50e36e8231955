"""The vault's CLI contract: JSON shapes and exit codes (0 ok, 2 bad input, 3 policy, 4 site)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from domicile.cli.app import app

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    code, _, err = run("init", str(tmp_path))
    assert code == 0, err
    monkeypatch.setenv("DOMICILE_CONFIG", str(tmp_path / "domicile.yaml"))
    return tmp_path


def put_ru() -> dict[str, object]:
    code, out, err = run(
        "put", "profiles", "--subject", "citizenship=RU", "--field", "full_name=Anna Volkova",
        "--field", "email=anna@example.ru", "--purpose", "signup", "--json",
    )  # fmt: skip
    assert code == 0, err
    data: dict[str, object] = json.loads(out)
    return data


def test_init_writes_a_commented_config_and_a_private_keyring(deployment: Path) -> None:
    text = (deployment / "domicile.yaml").read_text()
    assert "item 10.1" in text
    assert (deployment / "domicile-data" / "keyring.json").stat().st_mode & 0o077 == 0
    code, _, err = run("init", str(deployment))
    assert code == 2
    assert "already exists" in err


def test_put_get_find_erase(deployment: Path) -> None:
    data = put_ru()
    assert set(data) >= {"token", "site", "country", "decision"}
    assert (data["site"], data["country"]) == ("ru", "RU")
    token = str(data["token"])
    code, out, _ = run("get", token, "--purpose", "view", "--as-site", "ru", "--json")
    assert code == 0
    got = json.loads(out)
    assert got["fields"] == {"full_name": "Anna Volkova", "email": "anna@example.ru"}
    assert got["site"] == "ru"
    code, out, _ = run(
        "find",
        "profiles",
        "--field",
        "email=ANNA@example.ru",
        "--purpose",
        "lookup",
        "--as-site",
        "ru",
        "--json",
    )
    assert code == 0
    assert [r["token"] for r in json.loads(out)["records"]] != []
    code, out, _ = run("erase", token, "--json")
    assert code == 0
    assert json.loads(out)["key_destroyed"] is True
    code, out, _ = run("get", token, "--purpose", "view", "--as-site", "ru", "--json")
    assert code == 2
    assert json.loads(out)["error"]["code"] == "not_found"


def test_cross_border_reads_masked_then_refused_exit_3(deployment: Path) -> None:
    token = str(put_ru()["token"])
    # From the US (local_site) before any Art. 12 notice: only the masked forms Russia's
    # pack permits come out.
    code, out, _ = run("get", token, "--purpose", "view", "--json")
    assert code == 0
    got = json.loads(out)
    assert got["masked"] is True
    assert got["fields"] == {"full_name": "A. V.", "email": "*@example.ru"}
    # A regulator's ban on transfers to the US: refused outright, exit 3.
    code, out, _ = run("filings", "add", "ru.transfer_ban.us=2025-01-01", "--json")
    assert code == 0
    assert json.loads(out)["name"] == "ru.transfer_ban.US"
    code, out, _ = run("get", token, "--purpose", "view", "--json")
    assert code == 3
    err = json.loads(out)["error"]
    assert err["code"] == "policy_refused"
    assert err["details"]["decision"]["disclosure"] == "none"
    code, _, stderr = run("get", token, "--purpose", "view")
    assert code == 3
    lines = stderr.strip().splitlines()  # the refusal, then why and what would allow it
    assert lines[0].startswith("error: policy does not let site 'us' (US) read this record")
    assert any(line.startswith("  - ru.transfer.ban: ") for line in lines)
    assert "Anna" not in stderr
    code, out, _ = run("filings", "list", "--json")
    assert {f["name"]: f["source"] for f in json.loads(out)} == {
        "ru.art22_notice": "config", "ru.transfer_ban.US": "registry",
    }  # fmt: skip
    assert run("filings", "withdraw", "ru.transfer_ban.US")[0] == 0
    assert run("filings", "withdraw", "ru.art22_notice")[0] == 2  # from the config file
    assert run("filings", "add", "ru.nonsense=2025-01-01")[0] == 2
    assert run("get", token, "--purpose", "view", "--json")[0] == 0


def test_transfers_and_parity_commands(deployment: Path) -> None:
    token = str(put_ru()["token"])
    run("get", token, "--purpose", "view", "--json")  # a masked read from the US
    code, out, _ = run("transfers", "--json")
    assert code == 0
    data = json.loads(out)
    # A masked disclosure is no transfer: counted apart, listed only with --masked.
    assert (data["total"], data["entries"]) == (0, [])
    assert data["masked_disclosures"] == {"total": 1, "by_destination": {"US": 1}}
    code, out, _ = run("transfers", "--masked", "--json")
    (entry,) = json.loads(out)["masked_disclosures"]["entries"]
    assert entry["masks"] == {"email": "domain", "full_name": "initials"}
    assert entry["client"].startswith("cli:")
    code, out, _ = run("transfers", "--masked")
    assert code == 0
    assert "1 masked disclosures (not transfers): US: 1" in out
    assert run("transfers", "--to", "DE", "--json")[1].count('"total": 0') == 2
    code, out, _ = run("replicate", "--json")  # the starter config replicates nothing
    assert code == 0
    assert json.loads(out)["delivered"] == 0
    code, out, _ = run("parity", "--json")
    assert code == 0
    assert json.loads(out) == {
        "ok": True, "copies": 0, "lagging": 0, "discrepancy_count": 0, "discrepancies": [],
        "unavailable": [],
    }  # fmt: skip


def test_unavailable_site_exits_4(deployment: Path) -> None:
    ru = deployment / "domicile-data" / "ru.sqlite"
    for f in ru.parent.glob("ru.sqlite*"):
        f.unlink()
    ru.mkdir()  # the Russian database cannot be opened
    code, out, _ = run(
        "put", "profiles", "--subject", "citizenship=RU", "--field", "full_name=A",
        "--purpose", "signup", "--json",
    )  # fmt: skip
    assert code == 4
    assert json.loads(out)["error"]["details"]["site"] == "ru"
    code, out, _ = run("sites", "--json")
    assert code == 4  # every site listed, and the exit code says one is down
    rows = {r["id"]: r for r in json.loads(out)}
    assert rows["ru"]["healthy"] is False
    assert rows["us"]["healthy"] is True
    assert set(rows["us"]) >= {"id", "country", "location", "backend", "records", "healthy"}
    code, out, _ = run("sites")
    assert code == 4
    assert "down" in out
    assert "no site" not in out


def test_human_output_is_whole_and_says_what_it_means(deployment: Path) -> None:
    token = str(put_ru()["token"])
    code, out, _ = run("get", token, "--purpose", "profile_view", "--as-site", "us")
    assert code == 0, out
    assert token in out  # whole, so it can be copied
    assert "Anna Volkova" not in out
    assert "masked" in out
    assert "ru.transfer.art12" in out
    assert "ru.art12_notice" in out  # what would unlock the full values
    code, out, _ = run("find", "profiles", "--field", "email=nobody@example.ru", "--purpose", "x")
    assert (code, out.strip()) == (0, "no record matches")
    code, out, _ = run("replicate")
    assert code == 0
    assert out.startswith("replication: ")
    assert "{" not in out
    code, out, _ = run("keys", "rotate", "--site", "ru", "--grace", "0")
    assert code == 0
    assert out.startswith("site ru: key-encryption key v1 -> v2")
    assert "{" not in out


@pytest.mark.parametrize(
    "args",
    [
        ["put", "nope", "--subject", "citizenship=RU", "--field", "full_name=A", "--purpose", "p"],
        [
            "put",
            "profiles",
            "--subject",
            "citizenship=XX",
            "--field",
            "full_name=A",
            "--purpose",
            "p",
        ],
        ["put", "profiles", "--subject", "citizenship=RU", "--field", "size=9", "--purpose", "p"],
        [
            "put",
            "profiles",
            "--subject",
            "citizenship=RU",
            "--field",
            "full_name",
            "--purpose",
            "p",
        ],
        [
            "put",
            "profiles",
            "--subject",
            "citizenship=RU",
            "--field",
            "full_name=A",
            "--purpose",
            "Bad Purpose",
        ],
        ["get", "dom1_garbage", "--purpose", "p"],
    ],
)
def test_bad_input_exits_2_with_nothing_written(deployment: Path, args: list[str]) -> None:
    code, out, err = run(*args, "--json")
    assert code == 2, out + err
    assert json.loads(out)["error"]["code"]
    code, out, _ = run("sites", "--json")
    assert all(r["records"] == 0 for r in json.loads(out))


def test_audit_verify_detects_an_edited_entry(deployment: Path) -> None:
    put_ru()
    code, out, _ = run("audit", "verify", "--site", "ru", "--json")
    assert code == 0
    assert json.loads(out)["ok"] is True
    conn = sqlite3.connect(deployment / "domicile-data" / "ru.sqlite")
    conn.execute("DROP TRIGGER audit_append_only_update")
    conn.execute("UPDATE audit SET payload = replace(payload, 'signup', 'marketing') WHERE seq = 1")
    conn.commit()
    conn.close()
    code, out, _ = run("audit", "verify", "--json")
    assert code == 1
    data = json.loads(out)
    assert data["ok"] is False
    ru = next(s for s in data["sites"] if s["site"] == "ru")
    assert ru["first_bad"] == {"seq": 1, "problem": "its contents do not match its hash (edited)"}


def test_config_errors_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "domicile.yaml"
    bad.write_text("default_site: us\nsites:\n  - id: us\n    country: USA\n")
    code, _, err = run("sites", "--config", str(bad))
    assert code == 2
    assert f"{bad}:4: sites[0].country" in err


def test_configuration_keeps_its_file_name(tmp_path: Path) -> None:
    from domicile.config import load_config

    run("init", str(tmp_path))
    assert load_config(tmp_path / "domicile.yaml").source == str(tmp_path / "domicile.yaml")


def test_status_names_the_deployment_and_how_it_stands(deployment: Path) -> None:
    put_ru()
    before = stamps(deployment)
    code, out, _ = run("status", "--json")
    assert code == 0, out
    data = json.loads(out)
    assert data["deployment"]["config"] == str((deployment / "domicile.yaml").resolve())
    assert {s["id"]: s["records"] for s in data["sites"]} == {"ru": 1, "de": 0, "us": 0}
    assert data["replication"]["pending"] >= 0
    assert any(f["name"] == "ru.art22_notice" for f in data["filings"])
    code, out, _ = run("status")
    assert code == 0
    assert f"deployment: {(deployment / 'domicile.yaml').resolve()}" in out
    assert "site ru (RU, Moscow), 1 record: up" in out
    assert stamps(deployment) == before  # status writes nothing


def stamps(deployment: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p): (p.stat().st_mtime_ns, p.stat().st_size)
        for p in (deployment / "domicile-data").rglob("*")
        if p.is_file()
    }


def test_filing_mistakes_get_short_helpful_answers(deployment: Path) -> None:
    code, _, err = run("filings", "add", "ru.art12_notice")
    assert code == 2
    assert "--filing" not in err
    assert "NAME=YYYY-MM-DD" in err
    code, _, err = run("filings", "add", "ru.art12_notcie=2025-01-01")
    assert code == 2
    assert "did you mean ru.art12_notice" in err
    assert len(err) < 300  # suggestions, not the list of every filing of every pack


def test_update_clears_a_field_with_name_equals_nothing(deployment: Path) -> None:
    token = str(put_ru()["token"])
    code, _, err = run("update", token, "--field", "city=Kazan", "--purpose", "edit")
    assert code == 0, err
    code, _, err = run(
        "update", token, "--field", "email=", "--field", "city=", "--purpose", "edit"
    )
    assert code == 0, err
    code, out, _ = run("get", token, "--purpose", "view", "--as-site", "ru", "--json")
    assert json.loads(out)["fields"] == {"full_name": "Anna Volkova"}
    # A cleared searchable field is no longer found by its old value.
    code, out, _ = run(
        "find", "profiles", "--field", "email=anna@example.ru", "--purpose", "lookup",
        "--as-site", "ru", "--json",
    )  # fmt: skip
    assert json.loads(out)["records"] == []
    code, _, err = run("update", token, "--field", "full_name=", "--purpose", "edit")
    assert code == 2
    assert "required" in err
    assert "Anna" not in err


@pytest.mark.parametrize("bad", ["notanemail", "anna@", "@example.ru", "anna@example", "a b@x.ru"])
def test_an_email_field_refuses_what_is_not_an_address(deployment: Path, bad: str) -> None:
    code, _, err = run(
        "put", "profiles", "--subject", "citizenship=RU", "--field", "full_name=Anna",
        "--field", f"email={bad}", "--purpose", "signup",
    )  # fmt: skip
    assert code == 2
    assert "not an e-mail address" in err
    assert bad not in err


@pytest.mark.parametrize(
    "args",
    [
        ("sites", "--json"),
        ("transfers", "--json"),
        ("transfers", "--masked"),
        ("parity", "--json"),
        ("filings", "list", "--json"),
        ("audit", "verify", "--json"),
        ("audit", "heads"),
        ("status",),
    ],
)
def test_commands_that_only_read_write_nothing(deployment: Path, args: tuple[str, ...]) -> None:
    """Listing, checking and showing leave every file of the deployment as it was: no
    witness round, no schema upgrade, no journal."""
    from domicile.vault import Domicile

    token = str(put_ru()["token"])
    run("get", token, "--purpose", "view", "--as-site", "us")  # a masked read: evidence
    d = Domicile.open(str(deployment / "domicile.yaml"))
    d.put("profiles", subject={"citizenship": "DE"}, fields={"full_name": "L"}, purpose="s")
    d.close(checkpoint=False)  # an entry not yet witnessed: a writing command would sign
    before = stamps(deployment)
    code, out, err = run(*args)
    assert code == 0, out + err
    assert stamps(deployment) == before
