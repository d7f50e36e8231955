"""The judging shared by the benchmarks: medians over runs, per-run ratios, targets and the
ceiling beside each ratio."""

from __future__ import annotations

import pytest

from domicile.bench.judging import Ratio, in_threads, split, summarize, verdict

SPECS = [
    Ratio("put_vs_insert", "put", "insert", 0.2, "ceiling_put"),
    Ratio("get_vs_select", "get", "select", 0.3),
]


def test_ratios_are_medians_of_each_runs_own_ratio() -> None:
    # Run 2 is slow on both sides (a busy machine): its ratio is still 0.1.
    runs = [
        {"put": 10.0, "insert": 100.0, "ceiling_put": 40.0, "get": 30.0, "select": 100.0},
        {"put": 1.0, "insert": 10.0, "ceiling_put": 4.0, "get": 3.0, "select": 10.0},
        {"put": 30.0, "insert": 100.0, "ceiling_put": 50.0, "get": 40.0, "select": 100.0},
    ]
    out = summarize(runs, SPECS)
    assert out["repeat"] == 3
    assert out["per_second"]["put"] == 10
    assert out["ratios"] == {"put_vs_insert": 0.1, "get_vs_select": 0.3}
    assert out["ceiling"] == {"put_vs_insert": 0.4}
    assert out["of_ceiling"] == {"put_vs_insert": 0.25}
    assert out["target"]["ratio"] == 0.2
    assert out["target"]["ratios"] == {"put_vs_insert": 0.2, "get_vs_select": 0.3}
    assert out["target"]["met"] == {"put_vs_insert": False, "get_vs_select": True}
    assert len(out["runs"]) == 3


def test_a_verdict_names_target_state_and_ceiling() -> None:
    out = summarize(
        [{"put": 10.0, "insert": 100.0, "ceiling_put": 40.0, "get": 30.0, "select": 100.0}],
        SPECS,
    )
    assert verdict(out, "put_vs_insert") == (
        "ratio put_vs_insert: 0.1 (target 0.2, NOT met);"
        " ceiling of the required work 0.4, reached 25% of it"
    )
    assert verdict(out, "get_vs_select") == "ratio get_vs_select: 0.3 (target 0.3, met)"


def test_summarize_refuses_no_runs() -> None:
    with pytest.raises(ValueError, match="no runs"):
        summarize([], SPECS)


def test_threads_share_the_work_and_failures_surface() -> None:
    seen: list[int] = []
    parts = split(list(range(10)), 3)
    assert sorted(x for p in parts for x in p) == list(range(10))
    in_threads(3, lambda i: seen.extend(parts[i]))
    assert sorted(seen) == list(range(10))

    def boom(i: int) -> None:
        if i == 1:
            raise RuntimeError("reader 1 failed")

    with pytest.raises(RuntimeError, match="reader 1 failed"):
        in_threads(2, boom)
