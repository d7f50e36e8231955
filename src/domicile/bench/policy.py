"""``domicile bench policy``: decisions per second against plain dictionary lookups.

The engine is asked the same few hundred request shapes over and over, as the vault asks
it on its hot path: compiled packs plus the decision cache carry that load. The uncached
figure shows the cost of a first decision. The baseline is a dictionary lookup per
request in the same loop shape, so the ratio says how close the engine comes to the
cheapest possible answer.
"""

from __future__ import annotations

import itertools
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

from domicile.policy import PolicyEngine, Request
from domicile.residency import SubjectEvidence, resolve

SUBJECTS: list[dict[str, str]] = [
    {"citizenship": "RU"},
    {"citizenship": "RU,DE"},
    {"citizenship": "DE", "residence": "DE"},
    {"citizenship": "US", "residence": "US"},
    {"citizenship": "CN", "located_at_collection": "CN"},
    {"citizenship": "IN", "residence": "IN"},
    {"phone": "+7 912 345-67-89"},
    {"citizenship": "FR", "ip": "2.16.0.1"},
]
SITES = ["RU", "DE", "US", "CN", "IN"]
DATES = ["2024-03-01", "2025-09-01"]
TARGET_DECISIONS_PER_SECOND = 50_000


def _rate(fn: Callable[[], int], seconds: float) -> float:
    """Calls ``fn`` (which does some operations and returns how many) for ``seconds``."""
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        done += fn()
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - start)


def build_requests(engine: PolicyEngine) -> list[Request]:
    out = []
    for subj, site, date in itertools.product(SUBJECTS, SITES, DATES):
        out.append(
            engine.request(
                subject=subj, categories=["user.contact.email"], operation="store",
                site_country=site, date=date,
            )
        )  # fmt: skip
        if site != "US":
            out.append(
                engine.request(
                    subject=subj, categories=["user.contact.email"], operation="retrieve",
                    site_country=site, to_country="US", date=date,
                    filings={"ru.art12_notice": "2023-06-01"},
                )
            )  # fmt: skip
    return out


def run(seconds: float = 1.0) -> dict[str, Any]:
    engine = PolicyEngine()
    requests = build_requests(engine)
    evidence = [SubjectEvidence.from_mapping(s) for s in SUBJECTS]

    def loop(op: Callable[[Any], object], items: Sequence[Any]) -> Callable[[], int]:
        def batch() -> int:
            for item in items:
                op(item)
            return len(items)

        return batch

    table = {i: i for i in range(len(requests))}
    keys = list(table)
    baseline = _rate(loop(table.__getitem__, keys), seconds)
    for r in requests:
        engine.decide(r)  # warm the cache: the steady state of a running service
    cached = _rate(loop(engine.decide, requests), seconds)
    uncached = _rate(loop(engine.evaluate, requests), seconds)
    resolves = _rate(loop(resolve, evidence), seconds)
    return {
        "benchmark": "policy",
        "python": platform.python_version(),
        "request_shapes": len(requests),
        "packs": len(engine.packs),
        "per_second": {
            "decide_cached": round(cached),
            "decide_uncached": round(uncached),
            "resolve": round(resolves),
            "baseline_dict_lookup": round(baseline),
        },
        "ratios": {
            "decide_cached_vs_dict": round(cached / baseline, 4),
            "decide_uncached_vs_dict": round(uncached / baseline, 4),
            "resolve_vs_dict": round(resolves / baseline, 4),
        },
        "target": {
            "decisions_per_second": TARGET_DECISIONS_PER_SECOND,
            "met": cached >= TARGET_DECISIONS_PER_SECOND,
        },
    }
