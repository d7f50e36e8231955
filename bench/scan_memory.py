"""Peak memory of ``domicile scan`` on the synthetic source at a given size, measured in a
process that does nothing else (``domicile bench scan`` generates the source in its own
process, so its peak is the generator's).

``make`` generates SUBJECTS people (``discovery/synthetic.py``) into FOLDER: ``source.db``
(SQLite, keys declared), ``files/`` (Parquet, no keys) and ``truth.json``. ``scan`` scans
one of them in a child process and prints, as JSON, the seconds and CPU seconds, values
per second of each, the child's peak resident memory, the share of subjects exactly right, and a digest of the
report without its timing (equal digests: equal results). ``--report stream`` writes the
report to a file as ``domicile scan --out`` does, subject by subject; ``whole`` (the
default) holds it whole and then writes it, as the scan did before.

    .venv/bin/python bench/scan_memory.py make 200000 /tmp/scan200k   # --base 50000
    .venv/bin/python bench/scan_memory.py scan /tmp/scan200k sqlite
    .venv/bin/python bench/scan_memory.py scan /tmp/scan200k parquet
    .venv/bin/python bench/scan_memory.py scan /tmp/scan200k sqlite --report stream
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

CHILD = """
import json, sys, time
from domicile.discovery import open_source, run_scan
from domicile.discovery.scan import scan_to
from domicile.policy import PolicyEngine
spec, out, mode = sys.argv[1], sys.argv[2], sys.argv[3]
start = time.perf_counter()
source = open_source(spec)
try:
    if mode == "stream":  # as `domicile scan --out` writes it: subject by subject
        with open(out + ".report", "w", encoding="utf-8") as fh:
            scan_to(fh, source, located_in="US", engine=PolicyEngine())
    else:  # the report held whole, then written
        report = run_scan(source, located_in="US", engine=PolicyEngine())
        with open(out + ".report", "w", encoding="utf-8") as fh:
            json.dump(report, fh, ensure_ascii=False, indent=2)
finally:
    source.close()
seconds = time.perf_counter() - start
with open(out, "w") as fh:
    json.dump({"seconds": seconds}, fh)
"""


def make(subjects: int, folder: Path, base: int) -> None:
    """A source of ``base`` generated people, repeated with shifted keys up to
    ``subjects`` (generating a million people one by one takes most of an hour)."""
    from domicile.discovery.synthetic import generate

    if subjects % base:
        raise SystemExit("SUBJECTS must be a multiple of --base")
    folder.mkdir(parents=True, exist_ok=False)
    data = generate(base)
    db = sqlite3.connect(folder / "source.db")
    for t in data.tables.values():
        cols = []
        for c in t.columns:
            kind = "INTEGER" if (c == t.key and t.name != "products") or c in t.links else "TEXT"
            extra = " PRIMARY KEY" if c == t.key else ""
            if c in t.links:
                target = data.tables[t.links[c]]
                extra += f" REFERENCES {target.name}({target.key})"
            cols.append(f"{c} {kind}{extra}")
        db.execute(f"CREATE TABLE {t.name} ({', '.join(cols)})")
        marks = ", ".join("?" * len(t.columns))
        db.executemany(f"INSERT INTO {t.name} VALUES ({marks})", t.rows)
    counts = {t.name: len(t.rows) for t in data.tables.values()}
    truth: dict[str, list[str]] = {}
    for k in range(subjects // base):
        for key, countries in data.subjects.items():
            truth[f"customers:{int(key.partition(':')[2]) + k * base}"] = countries
        if k == 0:
            continue
        for t in data.tables.values():
            if t.name == "products":
                continue
            shifted = []
            for c in t.columns:
                owner = t.links.get(c) if c in t.links else (t.name if c == t.key else None)
                shifted.append(f"{c} + {k * counts[owner]}" if owner else c)
            bound = f"{t.key} <= {counts[t.name]}"
            db.execute(
                f"INSERT INTO {t.name} SELECT {', '.join(shifted)} FROM {t.name} WHERE {bound}"
            )
    db.commit()
    values = sum(
        db.execute(f"SELECT count(*) FROM {t.name}").fetchone()[0] * len(t.columns)
        for t in data.tables.values()
    )
    files = folder / "files"
    files.mkdir()
    for t in data.tables.values():
        _parquet(db, t.name, t.columns, files / f"{t.name}.parquet")
    db.close()
    (folder / "truth.json").write_text(json.dumps({"values": values, "subjects": truth}))


def _parquet(db: sqlite3.Connection, table: str, columns: list[str], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cur = db.execute(f"SELECT * FROM {table}")
    writer = None
    while rows := cur.fetchmany(100_000):
        arrays = {
            c: pa.array(
                [r[i] if r[i] is None or isinstance(r[i], int) else str(r[i]) for r in rows]
            )
            for i, c in enumerate(columns)
        }
        batch = pa.table(arrays)
        if writer is None:
            writer = pq.ParquetWriter(path, batch.schema)
        writer.write_table(batch.cast(writer.schema))
    if writer is not None:
        writer.close()


def scan(folder: Path, kind: str, mode: str = "whole") -> dict[str, object]:
    spec = f"sqlite:///{folder / 'source.db'}" if kind == "sqlite" else str(folder / "files")
    out = folder / f"report-{kind}-{os.getpid()}.json"
    subprocess.run([sys.executable, "-c", CHILD, spec, str(out), mode], check=True)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak = usage.ru_maxrss / 1024
    cpu = usage.ru_utime + usage.ru_stime
    result = json.loads(out.read_text())
    out.unlink()
    written = Path(f"{out}.report")
    report = json.loads(written.read_text(encoding="utf-8"))
    written.unlink()
    report["stats"].pop("seconds")
    truth = json.loads((folder / "truth.json").read_text())
    exact = sum(report["subjects"].get(k) == v for k, v in truth["subjects"].items())
    text = json.dumps(report, ensure_ascii=False, sort_keys=True).encode()
    return {
        "source": kind,
        "report": mode,
        "subjects": len(truth["subjects"]),
        "values": truth["values"],
        "seconds": round(result["seconds"], 1),
        "values_per_second": round(truth["values"] / result["seconds"]),
        # On a shared machine the wall clock counts other processes' turns; the CPU time
        # is the scan's own (with the interpreter's start and the policy packs' loading).
        "cpu_seconds": round(cpu, 1),
        "values_per_cpu_second": round(truth["values"] / cpu),
        "peak_rss_mb": round(peak),
        "subjects_exact": round(exact / len(truth["subjects"]), 4),
        "report_digest": hashlib.sha256(text).hexdigest()[:16],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make")
    m.add_argument("subjects", type=int)
    m.add_argument("folder", type=Path)
    m.add_argument("--base", type=int, default=50_000, help="people generated, then repeated")
    s = sub.add_parser("scan")
    s.add_argument("folder", type=Path)
    s.add_argument("kind", choices=["sqlite", "parquet"])
    s.add_argument(
        "--report",
        choices=["whole", "stream"],
        default="whole",
        help="hold the report whole and then write it, or write it as it is made (--out)",
    )
    args = parser.parse_args()
    if args.command == "make":
        start = time.perf_counter()
        make(args.subjects, args.folder, min(args.base, args.subjects))
        print(f"made in {time.perf_counter() - start:.0f} s")
    else:
        print(json.dumps(scan(args.folder, args.kind, args.report)))


if __name__ == "__main__":
    main()
