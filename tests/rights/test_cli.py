"""``domicile rights`` from the command line: the whole life of a request, bad input with
its exit codes, and read-only commands that write nothing at all."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from domicile.cli.app import app
from domicile.deploy.starter import init
from domicile.vault import Domicile

runner = CliRunner()
ANNA = "anna.volkova@example.ru"
WHO = ["--identity-checked-by", "dpo.kim", "--verified-how", "identity_document"]


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def deployment(tmp_path: Path) -> Path:
    init(tmp_path)
    cfg = tmp_path / "domicile.yaml"
    code, _, err = run(
        "put", "profiles", "--subject", "citizenship=RU", "--field", "full_name=Anna <Volkova>",
        "--field", f"email={ANNA}", "--purpose", "signup", "--config", str(cfg),
    )  # fmt: skip
    assert code == 0, err
    return tmp_path


def files(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


def test_a_request_from_opening_to_closing(deployment: Path) -> None:
    cfg = str(deployment / "domicile.yaml")
    code, out, err = run("rights", "open", "access", "--identity", f"email={ANNA}", *WHO,
                         "--via", "post", "--config", cfg, "--json")  # fmt: skip
    assert code == 0, err
    req = json.loads(out)
    assert req["deadline"]["rule"] == "ru.access_2022"
    rid = req["id"]
    code, out, _ = run("rights", "show", rid, "--config", cfg)
    assert code == 0
    assert "10 working days under Russia, rule ru.access_2022" in out
    assert "checked by dpo.kim (identity_document)" in out
    code, out, _ = run("rights", "fulfil", rid, "--config", cfg)
    assert code == 2
    assert "--out" in out + _
    data, page = deployment / "anna.json", deployment / "anna.html"
    code, out, err = run("rights", "fulfil", rid, "--out", str(data), "--html", str(page),
                         "--config", cfg)  # fmt: skip
    assert code == 0, err
    assert json.loads(data.read_text())["records"][0]["fields"]["email"] == ANNA
    assert "Anna &lt;Volkova&gt;" in page.read_text()
    assert oct(data.stat().st_mode & 0o777) == "0o600"
    code, out, _ = run("rights", "close", rid, "--outcome", "fulfilled", "--config", cfg)
    assert code == 0
    assert "closed: fulfilled, on time" in out
    code, out, _ = run("rights", "list", "--config", cfg, "--json", "--status", "closed")
    assert [r["id"] for r in json.loads(out)] == [rid]
    assert ANNA not in (deployment / "domicile-data" / "rights.json").read_text()


def test_erasure_writes_the_signed_act(deployment: Path) -> None:
    cfg = str(deployment / "domicile.yaml")
    code, out, _ = run("rights", "open", "erasure", "--identity", f"email={ANNA}", *WHO,
                       "--config", cfg, "--json")  # fmt: skip
    rid = json.loads(out)["id"]
    act, page = deployment / "act.json", deployment / "act.html"
    code, out, err = run("rights", "fulfil", rid, "--act", str(act), "--html", str(page),
                         "--config", cfg)  # fmt: skip
    assert code == 0, err
    assert json.loads(act.read_text())["act"]["totals"]["records"] == 1
    assert "Act of destruction" in page.read_text()
    code, out, _ = run("rights", "act", rid, "--config", cfg, "--json")
    assert code == 0
    assert [c["valid"] for c in json.loads(out)["verified"]] == [True]
    code, out, _ = run("rights", "open", "access", "--identity", f"email={ANNA}", *WHO,
                       "--config", cfg, "--json")  # fmt: skip
    assert json.loads(out)["subject"]["found"] is False


def test_bad_input_exits_2_without_echoing_values(deployment: Path) -> None:
    cfg = str(deployment / "domicile.yaml")
    before = files(deployment)
    for args, words in [
        (["open", "forget", "--identity", f"email={ANNA}", *WHO], "unknown request kind"),
        (["open", "access", "--identity", ANNA, *WHO], "not NAME=VALUE"),
        (["open", "access", "--identity", f"full_name={ANNA}", *WHO], "not an identifying field"),
        (["open", "access", "--identity", f"email={ANNA}", "--identity-checked-by", "x",
          "--verified-how", "vibes"], "way of checking"),
        (["list", "--due-before", "soon"], "--due-before"),
        (["list", "--status", "lost"], "unknown status"),
        (["show", "rq_000000000000"], "no request of that id"),
        (["act", "rq_000000000000"], "no request of that id"),
    ]:  # fmt: skip
        code, out, err = run("rights", *args, "--config", cfg, "--json")
        assert code == 2, (args, out, err)
        error = json.loads(out)["error"]
        assert words in error["message"], error
        assert ANNA not in out + err
        assert "volkova" not in (out + err).lower()
    assert files(deployment) == before


def test_a_file_that_exists_stops_the_fulfilment_before_anything_is_done(
    deployment: Path,
) -> None:
    cfg = str(deployment / "domicile.yaml")
    _, out, _ = run("rights", "open", "erasure", "--identity", f"email={ANNA}", *WHO,
                    "--config", cfg, "--json")  # fmt: skip
    rid = json.loads(out)["id"]
    taken = deployment / "taken.html"
    taken.write_text("mine")
    code, out, _ = run("rights", "fulfil", rid, "--html", str(taken), "--config", cfg, "--json")
    assert code == 2
    assert "exists already" in out
    assert taken.read_text() == "mine"
    code, out, _ = run("rights", "show", rid, "--config", cfg, "--json")
    assert [h["step"] for h in json.loads(out)["history"]] == ["open"]


def test_list_show_and_act_write_nothing(deployment: Path) -> None:
    cfg = str(deployment / "domicile.yaml")
    before = files(deployment)
    assert run("rights", "list", "--config", cfg)[1].strip() == "no requests on record"
    assert (
        run("rights", "list", "--config", cfg, "--json", "--status", "overdue")[1].strip() == "[]"
    )
    assert files(deployment) == before
    assert not (deployment / "domicile-data" / "rights.json").exists()
    _, out, _ = run("rights", "open", "erasure", "--identity", f"email={ANNA}", *WHO,
                    "--config", cfg, "--json")  # fmt: skip
    rid = json.loads(out)["id"]
    assert run("rights", "fulfil", rid, "--config", cfg)[0] == 0
    os.sync()
    before = files(deployment)
    for args in (["list"], ["list", "--due-before", "2030-01-01"], ["show", rid], ["act", rid]):
        code, _, err = run("rights", *args, "--config", cfg)
        assert code == 0, err
        code, _, err = run("rights", *args, "--config", cfg, "--json")
        assert code == 0, err
    assert files(deployment) == before


def test_a_damaged_requests_file_is_said_so_and_left_alone(deployment: Path) -> None:
    cfg = str(deployment / "domicile.yaml")
    damaged = deployment / "domicile-data" / "rights.json"
    damaged.write_text('{"format": 99}')
    for args in (["list"], ["show", "rq_000000000000"]):
        code, out, err = run("rights", *args, "--config", cfg)
        assert code == 5
        assert "is not one domicile wrote" in err
        assert "Traceback" not in out + err
    code, out, _ = run("rights", "open", "access", "--identity", f"email={ANNA}", *WHO,
                       "--config", cfg, "--json")  # fmt: skip
    assert code == 5
    assert json.loads(out)["error"]["code"] == "rights_file"
    assert damaged.read_text() == '{"format": 99}'
    with Domicile.open(cfg, read_only=True) as d:
        assert not any('"action":"request"' in r.payload for r in d.store("ru").audit())
