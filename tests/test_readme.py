"""The README, followed as a new user follows it, so it cannot drift from what domicile does.

The walk copies the repository as a fresh clone holds it (the files git tracks or would
track, as they are in this working tree) to a scratch folder, and works there:

1. ``scripts/run`` starts the service on the embedded default, as the quick start says,
   and the walk waits until it answers. The quick start's other command, ``scripts/test``,
   is this very suite and is not run again.
2. Every ```sh block of the README runs, in the order of the file, in one bash session
   (variables and the current folder carry over, as in a user's terminal), and so does
   every ``$ `` line of a ```console block. A command must exit 0, or the code its
   trailing comment names (``# ... exit 3 ...``). Blocks written ```sh norun are shown,
   not run: servers that never end, benchmarks of minutes, hosts that do not exist here.
3. No command may print a traceback.

Two liberties, both about this machine rather than the README: the clone's ``.venv`` is
the test's own environment (linked, so nothing is installed; the packaging test installs
from scratch), and the service listens on a free port (``DOMICILE_PORT``) that replaces
8700 in the examples, so a server someone left running cannot fail the walk.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\S*)(.*)$")
EXPECT = re.compile(r"\bexit (\d+)\b")
WALK_SECONDS = 420


@dataclass(frozen=True)
class Example:
    line: int  # where the command starts in the README
    command: str  # one logical command, continuation lines joined
    expect: int  # the exit code it must end with


def _logical(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Join continuation lines (trailing backslash) into one command each."""
    out: list[tuple[int, str]] = []
    start, parts = 0, []
    for no, text in lines:
        if not parts:
            start = no
        parts.append(text)
        if text.rstrip().endswith("\\"):
            continue
        out.append((start, "\n".join(parts)))
        parts = []
    if parts:
        out.append((start, "\n".join(parts)))
    return out


def _comment(line: str) -> str:
    """What follows the first unquoted ``#`` that starts a word: the line's comment."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[i:]
    return ""


def _expected(command: str) -> int:
    m = EXPECT.search(_comment(command.splitlines()[-1]))
    return int(m.group(1)) if m else 0


def examples(text: str) -> list[Example]:
    """Every command the README asks a reader to run, in order."""
    found: list[Example] = []
    block: list[tuple[int, str]] | None = None
    kind = ""
    for no, line in enumerate(text.splitlines(), start=1):
        m = FENCE.match(line)
        if m and block is None:
            lang, rest = m.group(1), m.group(2).split()
            if lang in ("sh", "console") and "norun" not in rest:
                block, kind = [], lang
            elif lang or line.strip() == "```":
                block, kind = [], "skip"
            continue
        if m and block is not None and line.strip() == "```":
            if kind == "sh":
                cmds = [(n, t) for n, t in block if t.strip() and not t.lstrip().startswith("#")]
                found += [Example(n, c, _expected(c)) for n, c in _logical(cmds)]
            elif kind == "console":
                cmds, inside = [], False
                for n, t in block:
                    if t.startswith("$ "):
                        cmds.append((n, t[2:]))
                        inside = t.rstrip().endswith("\\")
                    elif inside:
                        cmds.append((n, t))
                        inside = t.rstrip().endswith("\\")
                found += [Example(n, c, _expected(c)) for n, c in _logical(cmds)]
            block = None
            continue
        if block is not None:
            block.append((no, line))
    return found


def test_examples_are_found() -> None:
    """The extraction itself: blocks, continuations, expected codes, norun."""
    text = (
        "```sh\n# a comment\ndomicile put x \\\n    --field a=b   # -> token\n"
        "domicile get $T --as-site us   # exit 3 unless allowed\n```\n"
        "```sh norun\ndomicile serve\n```\n```\nnot a command\n```\n"
        '```console\n$ domicile policy explain \\\n    --json\n{\n  "x": 1\n}\n```\n'
    )
    got = examples(text)
    assert [(e.line, e.expect) for e in got] == [(3, 0), (5, 3), (14, 0)]
    assert got[0].command == "domicile put x \\\n    --field a=b   # -> token"
    assert got[2].command.startswith("domicile policy explain \\\n    --json")


def _tracked_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout  # fmt: skip
    return [p for p in out.decode().split("\0") if p]


def _clone(dest: Path) -> None:
    for rel in _tracked_files():
        src = ROOT / rel
        if not src.is_file():  # deleted in the working tree
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    venv = Path(sys.prefix)
    stamp = venv / ".domicile-installed"
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    # scripts/_env reinstalls when the stamp differs, which would point this environment's
    # editable install at the scratch clone: refuse instead.
    borrowed = stamp.exists() and stamp.read_text().strip() == want
    assert borrowed, "the README walk borrows the environment scripts/test made; run scripts/test"
    (dest / ".venv").symlink_to(venv)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(home: Path, port: int) -> dict[str, str]:
    venv_bin = str(Path(sys.prefix) / "bin")
    path = ":".join(p for p in os.environ.get("PATH", "").split(":") if p and p != venv_bin)
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith("DOMICILE_") and k not in ("VIRTUAL_ENV", "PYTHONPATH")
    }  # fmt: skip
    env.update(PATH=path, HOME=str(home), DOMICILE_PORT=str(port))
    return env


def _wait_healthy(port: int, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"scripts/run ended with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"scripts/run did not answer within 120 s:\n{log.read_text()}")


def _script(found: list[Example], port: int) -> str:
    lines = ["set +e"]
    for ex in found:
        cmd = ex.command.replace("8700", str(port))
        shown = shlex.quote(ex.command.splitlines()[0][:100])
        lines += [
            f"echo '>>> README.md:{ex.line}'",
            cmd,
            "__rc=$?",
            f'if [ "$__rc" -ne {ex.expect} ]; then '
            f'echo "README.md:{ex.line}: exit $__rc, expected {ex.expect}: "{shown} >&2; exit 97; fi',
        ]
    return "\n".join(lines) + "\n"


def test_readme_walkthrough(tmp_path: Path) -> None:
    found = examples(README.read_text(encoding="utf-8"))
    assert len(found) > 40, "the README lost its examples"
    clone, home = tmp_path / "domicile", tmp_path / "home"
    home.mkdir()
    _clone(clone)
    port = _free_port()
    env = _env(home, port)
    server_log = tmp_path / "server.log"
    with server_log.open("wb") as out:
        server = subprocess.Popen(
            ["scripts/run"], cwd=clone, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        _wait_healthy(port, server, server_log)
        walk = subprocess.run(
            ["bash", "-c", _script(found, port)], cwd=clone, env=env, capture_output=True,
            text=True, timeout=WALK_SECONDS,
        )  # fmt: skip
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    output = walk.stdout + walk.stderr
    assert walk.returncode == 0, output[-6000:]
    assert "Traceback" not in output, output[-6000:]
    assert "Traceback" not in server_log.read_text(), server_log.read_text()[-4000:]
