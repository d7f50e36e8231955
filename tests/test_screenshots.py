"""scripts/screenshots: the README's pictures are made from real output, and show what
the README says they show."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_pictures_of_real_output(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("screenshots", ROOT / "scripts/screenshots.py")
    assert spec
    assert spec.loader
    shots = importlib.util.module_from_spec(spec)
    sys.modules["screenshots"] = shots  # its dataclasses look themselves up there
    spec.loader.exec_module(shots)
    made = {p.name: text for p, text in shots.make(tmp_path).items()}
    assert set(made) == {"status.png", "masked-read.png", "refusal.png"}
    for name in made:
        data = (tmp_path / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        assert len(data) > 5000
    assert "site ru (RU, Moscow), 1 record: up" in made["status.png"]
    assert "masked:" in made["masked-read.png"]
    assert "A. V." in made["masked-read.png"]
    assert "Anna Volkova" not in made["masked-read.png"]
    assert "what would allow it" in made["refusal.png"]
    assert "Anna" not in made["refusal.png"]
    for committed in made:  # the README shows these
        assert (ROOT / "docs/img" / committed).exists()
