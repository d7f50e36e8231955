"""The cache of subjects' data keys stays bounded on every path that fills it, so a large
load (``domicile bench scale``) keeps flat memory; keys pushed out are fetched again."""

from __future__ import annotations

import pytest

from domicile.vault import core
from domicile.vault.replication import Replicator

from .conftest import Deployment

BOUND = 20


def _people(n: int) -> list[dict[str, object]]:
    return [
        {
            "subject": {"citizenship": "US", "residence": "US"},
            "fields": {"full_name": f"Person {i}", "email": f"p{i}@example.org", "city": "Boston"},
        }
        for i in range(n)
    ]


def test_new_subjects_do_not_grow_the_key_cache_past_its_bound(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(core, "DEK_CACHE", BOUND)  # the one bound, for writes and copies too
    vault = deployment.open()
    results = []
    for start in range(0, 90, 30):
        results += vault.put_many("profiles", _people(90)[start : start + 30], purpose="signup")
        assert len(vault._deks) <= BOUND
    report = Replicator(vault).run_once()  # new keys at the copies' sites
    assert report.delivered > 0
    assert len(vault._deks) <= BOUND
    # The first subject's key left the cache long ago; its record still opens.
    first = vault.get(results[0].token, purpose="view", as_site="us")
    assert first.fields["full_name"] == "Person 0"
    vault.close()
