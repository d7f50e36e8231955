"""Every command, given broken input or an unavailable service, ends in one line and an exit
code from the one table (``ExitCode``), never in a traceback.

The commands are found by walking the CLI itself, so a command added later is tried too.
Each is run in-process through ``main`` (as the console script runs it) with its required
arguments filled in plausibly, against each of several broken deployments."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main

from domicile.cli.app import app, main
from domicile.errors import ExitCode

DOCUMENTED = {int(c) for c in ExitCode} - {ExitCode.INTERNAL, ExitCode.INTERRUPTED}

# Plausible values for required parameters, by name; anything else gets "x".
VALUES = {
    "subject": "citizenship=RU",
    "field": "full_name=Anna",
    "purpose": "signup",
    "token": "dom1_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "seq": "1",
    "site": "ru",
    "scope": "records:read",
    "filing": "ru.art22_notice=2025-01-15",
    "category": "user.name",
    "operation": "store",
    "site_country": "RU",
    "collection": "profiles",
    "on": "2025-07-01",
}
# Commands that would run for real (a server, a long benchmark) given a working deployment:
# they are tried only with the broken ones and with broken options of their own.
LONG = {"serve", "demo", "bench", "replicate"}
# Commands that need the configuration but no site (the clients file is the deployment's;
# `rights list` and `show` read the requests file, so they answer while a site is down;
# `retention acts` reads the retention file).
OFFLINE = {"clients", "rights", "retention acts"}
CONFIG_READS = {"sites never set up", "server down"}


def commands() -> Iterator[tuple[list[str], Any]]:
    def walk(cmd: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                if not getattr(sub, "hidden", False):
                    yield from walk(sub, [*path, name])
        else:
            yield path, cmd

    return walk(typer.main.get_command(app), [])


def argv(path: list[str], cmd: Any) -> tuple[list[str], bool]:
    """The command with its required parameters filled in; whether it takes --config."""
    args = list(path)
    takes_config = False
    for p in cmd.params:
        if "--config" in p.opts:
            takes_config = True
        if not p.required:
            continue
        value = VALUES.get(p.name or "", "x")
        if p.param_type_name == "argument":
            args.append(value)
        else:
            args += [p.opts[0], value]
    return args, takes_config


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out = capsys.readouterr()
    return code, out.out + out.err


def check(args: list[str], code: int, output: str) -> None:
    shown = " ".join(args)
    assert "Traceback" not in output, f"`domicile {shown}` ended in a traceback:\n{output}"
    assert code in DOCUMENTED, f"`domicile {shown}` exited {code}:\n{output}"
    assert "internal error" not in output, f"`domicile {shown}`: {output}"


@pytest.fixture
def broken(tmp_path: Path) -> dict[str, Path]:
    """Deployments that cannot be used, each in its own way."""
    empty = tmp_path / "empty"
    empty.mkdir()
    garbage = tmp_path / "garbage.yaml"
    garbage.write_text("sites: [\n  - {id: ru\n", encoding="utf-8")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x01not text")
    missing_data = tmp_path / "missing"
    missing_data.mkdir()
    # A well-formed configuration whose sites were never set up.
    (missing_data / "domicile.yaml").write_text(
        "environment_id: default\ndata_dir: data\ndefault_site: ru\n"
        "sites:\n  - {id: ru, country: RU, location: {provider: P, city: Moscow, address: A},"
        " backend: 'sqlite:data/ru.sqlite', keys: 'sqlite:data/keys/ru.sqlite'}\n"
        "collections:\n  profiles:\n    fields:\n      full_name: {category: user.name}\n",
        encoding="utf-8",
    )
    down = tmp_path / "down"
    down.mkdir()
    # A site on a PostgreSQL server that does not answer (port 1), with a password.
    (down / "domicile.yaml").write_text(
        "environment_id: default\ndata_dir: data\ndefault_site: ru\n"
        "sites:\n  - {id: ru, country: RU, location: {provider: P, city: Moscow, address: A},"
        " backend: 'postgresql://u:hunter2secret@127.0.0.1:1/x',"
        " keys: 'postgresql://u:hunter2secret@127.0.0.1:1/k'}\n"
        "collections:\n  profiles:\n    fields:\n      full_name: {category: user.name}\n",
        encoding="utf-8",
    )
    return {
        "no file": tmp_path / "nowhere" / "domicile.yaml",
        "empty folder": empty,
        "broken YAML": garbage,
        "not text": binary,
        "sites never set up": missing_data,
        "server down": down,
    }


@pytest.mark.parametrize("case", ["no file", "empty folder", "broken YAML", "not text",
                                  "sites never set up", "server down"])  # fmt: skip
def test_every_command_with_a_broken_deployment(
    case: str, broken: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    tried = 0
    for path, cmd in commands():
        args, takes_config = argv(path, cmd)
        if not takes_config:
            continue
        args += ["--config", str(broken[case])]
        for extra in ([], ["--json"]):
            if extra and not any("--json" in p.opts for p in cmd.params):
                continue
            code, output = run(args + extra, capsys)
            check(args + extra, code, output)
            offline = path[0] in OFFLINE or " ".join(path[:2]) in OFFLINE
            if not offline or case not in CONFIG_READS:
                assert code != 0, f"`domicile {' '.join(args)}` succeeded on a {case}"
            assert "hunter2secret" not in output
        tried += 1
    assert tried >= 20


def test_every_command_with_junk_against_a_working_deployment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = run(["init", str(tmp_path / "d")], capsys)
    assert code == 0, output
    config = str(tmp_path / "d")  # the folder stands for its domicile.yaml
    for path, cmd in commands():
        args, takes_config = argv(path, cmd)
        if not takes_config or path[0] in LONG:
            continue
        code, output = run([*args, "--config", config], capsys)
        check(args, code, output)


CASES = [
    ["init", "/etc/passwd/inside-a-file"],
    ["init", str(Path(__file__))],  # a file, not a folder
    ["demo", "--dir", "/etc/passwd/inside-a-file"],
    ["policy", "validate", "/nonexistent/pack.yaml"],
    ["policy", "validate", "/etc"],
    [
        "policy",
        "explain",
        "--subject",
        "citizenship=ZZ",
        "--category",
        "user.name",
        "--operation",
        "store",
        "--site-country",
        "RU",
    ],
    [
        "policy",
        "explain",
        "--subject",
        "nonsense",
        "--category",
        "nope",
        "--operation",
        "x",
        "--site-country",
        "RU",
    ],
    ["residency", "resolve", "--subject", "phone=123"],
    ["audit", "check-proof", "/nonexistent/proof.json"],
    ["audit", "check-proof", "/etc/hostname"],
    ["bench", "vault", "--backend", "nosuch"],
    [
        "bench",
        "vault",
        "--backend",
        "postgresql",
        "--records",
        "100",
        "--postgres-url",
        "postgresql://u:hunter2secret@127.0.0.1:1",
    ],
    [
        "bench",
        "transfers",
        "--backend",
        "postgresql",
        "--records",
        "100",
        "--postgres-url",
        "postgresql://u:hunter2secret@127.0.0.1:1",
    ],
    ["bench", "vault", "--records", "-5"],
    ["bench", "policy", "--seconds", "zero"],
]


@pytest.mark.parametrize("args", CASES, ids=[" ".join(c[:3]) for c in CASES])
def test_commands_with_broken_arguments(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = run(args, capsys)
    check(args, code, output)
    assert code != 0
    assert "hunter2secret" not in output


def test_an_unexpected_error_is_one_line_and_exit_70(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The last safety net: a bug ends in one line naming where, not in a traceback, and
    without the exception's message (which might hold a value)."""
    import domicile.cli.app as cli

    def boom() -> None:
        raise RuntimeError("Anna Volkova +7 999 123 45 67")

    monkeypatch.setattr(cli, "__version__", property(lambda _: boom()))
    monkeypatch.setattr(cli.console, "print", lambda *a, **k: boom())
    code, output = run(["version"], capsys)
    assert code == ExitCode.INTERNAL
    assert "Traceback" not in output
    assert "Anna" not in output
    assert "internal error (RuntimeError" in output


def test_serve_on_a_busy_port_exits_5_before_setting_anything_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DOMICILE_CONFIG", raising=False)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, output = run(["serve", "--port", str(port), "--workers", "1"], capsys)
    assert code == ExitCode.ENVIRONMENT, output
    assert "cannot listen on 127.0.0.1" in output
    assert "serving" not in output
    assert list(tmp_path.iterdir()) == []  # the embedded deployment was not made


def test_every_command_that_prints_data_has_json() -> None:
    """Machine output is one JSON object behind --json, on every command but the server."""
    without = [" ".join(p) for p, cmd in commands() if "--json" not in _options(cmd)]
    assert without == ["serve"]


def _options(cmd: Any) -> set[str]:
    return {o for p in cmd.params for o in getattr(p, "opts", [])}


def test_shell_completion_offers_commands(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    """`domicile --install-completion` installs what this answers: the commands and
    subcommands of the CLI, completed from what was typed."""
    monkeypatch.setenv("_DOMICILE_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", "domicile policy ex")
    monkeypatch.setenv("COMP_CWORD", "2")
    with pytest.raises(SystemExit) as done:
        main([])
    assert done.value.code == 0
    assert capsys.readouterr().out.split() == ["explain"]


def test_no_color_is_honoured(tmp_path: Path) -> None:
    """Colour is forced on a pipe (FORCE_COLOR) unless NO_COLOR asks for none."""
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "domicile.cli.app", "policy", "explain",
           "--subject", "citizenship=RU", "--category", "user.name", "--operation", "store",
           "--site-country", "DE", "--date", "2025-09-01"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    coloured = subprocess.run(cmd, env={**env, "FORCE_COLOR": "1"}, capture_output=True, text=True)
    plain = subprocess.run(
        cmd, env={**env, "FORCE_COLOR": "1", "NO_COLOR": "1"}, capture_output=True, text=True
    )
    assert "\x1b[1;31mDENY" in coloured.stdout  # DENY in bold red
    assert "DENY" in plain.stdout
    assert "31m" not in plain.stdout  # no red at all
