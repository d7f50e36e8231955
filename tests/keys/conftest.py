"""Key custody: a real SoftHSM2 token per test, initialised in a temporary folder.

SoftHSM2 reads its configuration (``SOFTHSM2_CONF``) and its tokens once, when a process
first loads it; tokens made later are not seen by that process. So the session makes one
token folder with a pool of tokens before anything loads the library, and each test takes
a token of its own from the pool. Commands run in subprocesses see every token.

SoftHSM2 comes from Debian (scripts/hsm-deps, which scripts/test runs); without it these
tests fail, saying so; they are never skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "4711-test-pin"
SO_PIN = "0000-so"
POOL = 24


class Tokens:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.conf = folder / "softhsm2.conf"
        self.labels = [f"pool{i}" for i in range(POOL)]
        self.given = 0

    def take(self) -> str:
        if self.given >= len(self.labels):
            pytest.fail(
                f"the SoftHSM2 token pool ({POOL}) is used up: raise POOL in tests/keys/conftest.py"
            )
        label = self.labels[self.given]
        self.given += 1
        return label


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tokens]:
    if shutil.which("softhsm2-util") is None or not Path(MODULE).exists():
        pytest.fail("SoftHSM2 is not installed: run scripts/hsm-deps", pytrace=False)
    folder = tmp_path_factory.mktemp("softhsm")
    (folder / "tokens").mkdir()
    tokens = Tokens(folder)
    tokens.conf.write_text(
        f"directories.tokendir = {folder / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    before = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(tokens.conf)
    for label in tokens.labels:
        subprocess.run(
            ["softhsm2-util", "--init-token", "--free", "--label", label,
             "--so-pin", SO_PIN, "--pin", PIN],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
    try:
        yield tokens
    finally:
        if before is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = before


@pytest.fixture
def token(softhsm: Tokens, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SoftHSM2 token's label; its user PIN is in $DOMICILE_PKCS11_PIN."""
    monkeypatch.setenv("DOMICILE_PKCS11_PIN", PIN)
    return softhsm.take()
