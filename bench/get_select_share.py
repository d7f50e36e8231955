"""What share of a get is its select: the part a read replica could take from the primary.

A get reads the record (one select) and appends its audit entry, which must go to the
primary (every read is audited). This makes a three-site deployment on the machine's
PostgreSQL (fresh databases, dropped afterwards), writes RECORDS records at the US site,
and times, best of three rounds of COUNT each: a whole ``Domicile.get``, the record's
select alone (``SiteStore.get``) and a single audit append (``chain_now``). Prints the
ratios. docs/scale.md reads them.

    .venv/bin/python bench/get_select_share.py
    .venv/bin/python bench/get_select_share.py --records 300 --count 1500
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.pg import PgServer
from tests.vault.conftest import SITES, Deployment

US = {"citizenship": "US", "residence": "US"}


def best(count: int, fn: Callable[[int], object]) -> float:
    rounds = []
    for _ in range(3):
        start = time.perf_counter()
        for i in range(count):
            fn(i)
        rounds.append((time.perf_counter() - start) / count)
    return min(rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300)
    parser.add_argument("--count", type=int, default=1500)
    args = parser.parse_args()
    server = PgServer()
    labels = [n for s in SITES for n in (s, f"{s}_keys")]
    names = [server.create_database(label) for label in labels]
    urls = dict(zip(labels, map(server.url, names), strict=True))
    try:
        with tempfile.TemporaryDirectory() as folder:
            vault = Deployment("postgresql", Path(folder), urls, None).open()
            written = vault.put_many(
                "profiles",
                [{"subject": US, "fields": {"full_name": f"P{i}"}} for i in range(args.records)],
                purpose="signup",
            )
            tokens = [r.token for r in written]
            ids = [vault.tokens.read(t)[1] for t in tokens]
            store = vault.store("us")
            n = len(tokens)
            get = best(args.count, lambda i: vault.get(tokens[i % n], purpose="support"))
            select = best(args.count, lambda i: store.get(ids[i % n]))
            entry = '{"action":"bench","site":"us"}'
            append = best(args.count, lambda i: store.chain_now([entry], read=True))
            vault.close()
    finally:
        server.discard(names)
        server._drop(server._pending)
    print(f"get {get * 1e6:.0f} us")
    print(f"  its select {select * 1e6:.0f} us: ratio {select / get:.2f} of a get")
    print(f"  one audit append {append * 1e6:.0f} us: ratio {append / get:.2f} of a get")


if __name__ == "__main__":
    main()
