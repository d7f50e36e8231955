"""Pictures of real terminal output for the README: ``scripts/screenshots [FOLDER]``
(default docs/img).

Each picture is a command run for real against a scratch deployment (colours on, 100
columns), its ANSI output read back by rich, exported as SVG and rendered to PNG by
CairoSVG. Nothing is drawn by hand, so a picture shows what a user sees.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.text import Text

WIDTH = 100


@dataclass(frozen=True)
class Shot:
    name: str  # the PNG's file name, without .png
    title: str
    argv: Sequence[str]  # after ``domicile``; "{token}" is the sample record's token


SHOTS = (
    Shot("status", "domicile status", ("status",)),
    Shot(
        "masked-read",
        "a read from the US of a Russian citizen's record",
        ("get", "{token}", "--purpose", "profile_view", "--as-site", "us"),
    ),
    Shot(
        "refusal",
        "the same read after a regulator's ban",
        ("get", "{token}", "--purpose", "profile_view", "--as-site", "us"),
    ),
)


def _run(argv: Sequence[str], env: dict[str, str], cwd: Path) -> str:
    cmd = [sys.executable, "-m", "domicile.cli.app", *argv]
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    return done.stdout + done.stderr


def _picture(shot: Shot, command: str, output: str) -> bytes:
    import cairosvg  # type: ignore[import-untyped]  # the docs' tool: in the dev extra

    console = Console(record=True, width=WIDTH, file=io.StringIO(), force_terminal=True)
    console.print(Text(f"$ {command}", style="bold"))
    console.print(Text.from_ansi(output.rstrip("\n")), soft_wrap=False)
    # Rich asks for a web font; the machine's own monospace keeps the columns aligned.
    svg = console.export_svg(title=shot.title).replace(
        "Fira Code, monospace", "DejaVu Sans Mono, monospace"
    )
    png: bytes = cairosvg.svg2png(bytestring=svg.encode("utf-8"))
    return png


def make(out: Path) -> dict[Path, str]:
    """Write one PNG per shot into ``out``; return each path with the output it shows."""
    out.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOMICILE_")}
    env.update(FORCE_COLOR="1", COLUMNS=str(WIDTH), TERM="xterm-256color", DOMICILE_CONFIG="demo")
    env.pop("NO_COLOR", None)
    written: dict[Path, str] = {}
    with tempfile.TemporaryDirectory(prefix="domicile-shots-") as tmp:
        cwd = Path(tmp)
        _run(["init", "demo"], env, cwd)
        token = _run(
            [
                "put", "profiles", "--subject", "citizenship=RU", "--field",
                "full_name=Anna Volkova", "--field", "email=anna@example.ru", "--purpose",
                "account_signup", "--quiet",
            ],
            env, cwd,
        ).strip()  # fmt: skip
        for shot in SHOTS:
            if shot.name == "refusal":
                _run(["filings", "add", "ru.transfer_ban.US=2025-10-01"], env, cwd)
            argv = [a.replace("{token}", token) for a in shot.argv]
            shown = " ".join(["domicile", *(a if a != token else "$TOKEN" for a in argv)])
            path = out / f"{shot.name}.png"
            output = _run(argv, env, cwd)
            path.write_bytes(_picture(shot, shown, output))
            written[path] = Text.from_ansi(output).plain
    return written


if __name__ == "__main__":
    for p in make(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img")):
        print(p)
