"""What remembering parsed phone numbers saves: ``recognizers.phone_country`` with its
cache against the same function without it (``__wrapped__``), in one process, on columns
of the synthetic generator's numbers where each distinct number appears REPEAT times (1:
every number once, the cache's worst case; 3: a sample's rows read again in the full pass
and a few shared numbers; 20: a company's switchboard on its employees' rows).

    .venv/bin/python bench/phone_cache.py            # 20,000 values per column
    .venv/bin/python bench/phone_cache.py --values 100000
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable


def _rate(fn: Callable[[str], object], values: list[str]) -> float:
    start = time.perf_counter()
    for v in values:
        fn(v)
    return len(values) / (time.perf_counter() - start)


def main() -> None:
    from domicile.discovery.recognizers import phone_country
    from domicile.discovery.synthetic import COUNTRIES, phone

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=20_000)
    args = parser.parse_args()
    rng = random.Random(1)
    ratios: dict[str, float] = {}
    out: dict[str, object] = {"values": args.values, "ratios": ratios}
    for repeat in (1, 3, 20):
        distinct = list(
            dict.fromkeys(phone(rng, rng.choice(COUNTRIES)) for _ in range(args.values // repeat))
        )
        values = [rng.choice(distinct) for _ in range(args.values)] if repeat > 1 else distinct
        _rate(phone_country.__wrapped__, distinct)  # warm: metadata and regexes loaded
        phone_country.cache_clear()
        plain = _rate(phone_country.__wrapped__, values)
        cached = _rate(phone_country, values)
        out[f"repeat_{repeat}"] = {
            "plain_per_second": round(plain),
            "cached_per_second": round(cached),
        }
        ratios[f"repeat_{repeat}_cached_vs_plain"] = round(cached / plain, 2)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
