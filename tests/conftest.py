from __future__ import annotations

from pathlib import Path

import pytest

from domicile.packs import load_packs
from domicile.policy import PolicyEngine

HERE = Path(__file__).parent
PACKS = HERE.parent / "src" / "domicile" / "packs" / "data"
TEST_PACKS = HERE / "packs"


@pytest.fixture(scope="session")
def engine() -> PolicyEngine:
    """Every built-in pack, as a deployment would load them."""
    return PolicyEngine()


@pytest.fixture(scope="session")
def ru_engine() -> PolicyEngine:
    """Only the Russian pack: scenario tests that must not depend on other packs."""
    return PolicyEngine(load_packs([PACKS / "ru.yaml"], builtin=False, env=False))


@pytest.fixture(scope="session")
def toy_engine() -> PolicyEngine:
    """Two small test packs that disagree, for engine mechanics."""
    return PolicyEngine(load_packs([TEST_PACKS], builtin=False, env=False))
