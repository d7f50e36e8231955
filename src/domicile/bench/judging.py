"""What every throughput benchmark shares: repeated runs, medians, and ratios judged against
their targets, each beside the measured ceiling of the work it requires.

A benchmark measures rates (operations per second) in each run: ours, a baseline's, and
where it has one, a scratch implementation of exactly the required work (the *ceiling*).
A ratio is ours over the baseline within one run, so that both sides see the same machine
load; over ``--repeat N`` runs the median of each rate and of each ratio is reported.
``ceiling`` is the scratch rate over the same baseline: the best ratio the record layout
allows. ``of_ceiling`` is the ratio over that ceiling: how much of the gap is the code
rather than the layout.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from domicile.extras import require


def require_orm() -> None:
    """``MissingExtra`` unless the ORM baseline (the ``bench`` extra) can be imported."""
    require("bench", "domicile bench vault (its ORM baseline)")


@dataclass(frozen=True)
class Ratio:
    """One judged ratio: ``ours`` over ``baseline`` (names of rates), at least ``target``;
    ``ceiling`` names the scratch rate of the required work, if the benchmark has one."""

    name: str
    ours: str
    baseline: str
    target: float
    ceiling: str | None = None


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def summarize(runs: Sequence[Mapping[str, float]], ratios: Sequence[Ratio]) -> dict[str, Any]:
    """The JSON fields shared by the benchmarks, from each run's rates: ``per_second``
    (medians), ``ratios`` (medians of the per-run ratios), ``ceiling`` and ``of_ceiling``
    (for the ratios that have one), ``target`` and ``runs``."""
    if not runs:
        raise ValueError("no runs to summarize")
    names = list(runs[0])
    per_second = {k: median(r[k] for r in runs) for k in names}
    judged: dict[str, float] = {}
    ceiling: dict[str, float] = {}
    of_ceiling: dict[str, float] = {}
    for spec in ratios:
        judged[spec.name] = median(r[spec.ours] / r[spec.baseline] for r in runs)
        if spec.ceiling is not None:
            ceiling[spec.name] = median(r[spec.ceiling] / r[spec.baseline] for r in runs)
            of_ceiling[spec.name] = median(r[spec.ours] / r[spec.ceiling] for r in runs)
    out: dict[str, Any] = {
        "repeat": len(runs),
        "per_second": {k: round(v) for k, v in per_second.items()},
        "ratios": {k: round(v, 3) for k, v in judged.items()},
        "target": {
            # ``ratio`` is the first ratio's target (the key earlier versions printed);
            # ``ratios`` gives each ratio's own.
            "ratio": ratios[0].target,
            "ratios": {s.name: s.target for s in ratios},
            "met": {s.name: judged[s.name] >= s.target for s in ratios},
        },
        "runs": [{k: round(v) for k, v in r.items()} for r in runs],
    }
    if ceiling:
        out["ceiling"] = {k: round(v, 3) for k, v in ceiling.items()}
        out["of_ceiling"] = {k: round(v, 3) for k, v in of_ceiling.items()}
    return out


def verdict(result: Mapping[str, Any], name: str) -> str:
    """One ratio in words: its value, its target, met or not, and the ceiling beside it."""
    value = result["ratios"][name]
    target = result.get("target", {})
    line = f"ratio {name}: {value}"
    goal = target.get("ratios", {}).get(name, target.get("ratio"))
    if goal is not None:
        met = target.get("met", {}).get(name)
        state = "" if met is None else (", met" if met else ", NOT met")
        line += f" (target {goal}{state})"
    ceiling = result.get("ceiling", {}).get(name)
    if ceiling is not None:
        share = result["of_ceiling"][name]
        line += f"; ceiling of the required work {ceiling}, reached {share:.0%} of it"
    return line


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def in_threads(count: int, work: Callable[[int], None]) -> float:
    """Run ``work(i)`` for i in range(count) on that many threads at once; the wall time
    from the common start to the last one's end. An exception in any thread is raised."""
    failures: list[BaseException] = []
    start_line = threading.Barrier(count + 1)

    def body(i: int) -> None:
        start_line.wait()
        try:
            work(i)
        except BaseException as exc:  # re-raised in the caller
            failures.append(exc)

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    start_line.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if failures:
        raise failures[0]
    return elapsed


def split(items: Sequence[Any], parts: int) -> list[Sequence[Any]]:
    """``items`` dealt into ``parts`` slices of nearly equal size."""
    return [items[i::parts] for i in range(parts)]


def rss_mb() -> float:
    """This process's resident memory now, in MB (Linux ``/proc``; 0 where unavailable)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    import resource

    return pages * resource.getpagesize() / 2**20


class RssSampler:
    """Samples resident memory every ``every`` seconds on a thread, between ``start`` and
    ``stop``; ``peak`` is the highest sample."""

    def __init__(self, every: float = 0.1) -> None:
        self.every = every
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(rss_mb())
            self._stop.wait(self.every)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(rss_mb())

    @property
    def peak(self) -> float:
        return max(self.samples, default=0.0)
