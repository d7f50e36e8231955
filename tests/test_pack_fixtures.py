"""Every built-in pack's own fixtures, each as a test of its own."""

from __future__ import annotations

import pytest

from domicile.packs import load_packs
from domicile.policy import PolicyEngine
from domicile.policy.fixtures import check_fixture

_PACKS = load_packs(env=False)
_CASES = [(lp.id, fx) for lp in _PACKS for fx in lp.pack.tests]


@pytest.fixture(scope="module")
def all_packs() -> PolicyEngine:
    return PolicyEngine(_PACKS)


def test_every_pack_has_fixtures() -> None:
    for lp in _PACKS:
        assert len(lp.pack.tests) >= 8, f"pack {lp.id} has too few fixtures"


@pytest.mark.parametrize(("pack", "fixture"), _CASES, ids=[f"{p}: {f.name}" for p, f in _CASES])
def test_fixture(all_packs: PolicyEngine, pack: str, fixture: object) -> None:
    result = check_fixture(all_packs, pack, fixture)  # type: ignore[arg-type]
    assert result.ok, "; ".join(result.problems)
