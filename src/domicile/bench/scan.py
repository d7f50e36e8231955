"""``domicile bench scan``: the scan's speed and accuracy on a synthetic source with its
own truth, against a naive baseline measured in the same run.

The source (``discovery/synthetic.py``) holds people of ten countries, linked tables,
decoy columns and opaque column names; it is written to a SQLite file and to Parquet files.
The scan's rate is end to end: every value of the source over the seconds from opening it
to the finished report (classification samples each column, the full pass reads the
columns that residency needs). The baseline does what a scanner without validators does:
it runs every recognizer's regular expression on every value of every column and calls a
column by the pattern most of its values match. Accuracy is per category over columns
(precision, recall, F1 against the generator's truth, and their macro average) and per
subject (the countries the scan reports equal the generator's).
"""

from __future__ import annotations

import platform
import re
import resource
import tempfile
import time
from collections import Counter
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from rich.console import Console

from domicile.discovery import open_source, run_scan
from domicile.discovery.classify import text
from domicile.discovery.synthetic import Dataset, generate, write_database, write_files
from domicile.errors import BadInput
from domicile.policy import PolicyEngine

TARGET_VALUES_PER_SECOND = 85_000
TARGET_MACRO_F1 = 0.9
TARGET_SUBJECTS_EXACT = 0.95
_NIN = "user.government_id.national_identification_number"

# The patterns a scanner without validators would use: shapes only.
BASELINE_PATTERNS: dict[str, str] = {
    "user.contact.email": r"[^@\s]+@[^@\s]+\.\w+",
    "user.contact.phone_number": r"\+?[\d\s().-]{10,18}",
    "user.device.ip_address": r"\d{1,3}(\.\d{1,3}){3}|[0-9a-fA-F:]+:[0-9a-fA-F:]+",
    f"{_NIN}.ru_inn": r"\d{10}|\d{12}",
    f"{_NIN}.ru_snils": r"\d{3}-\d{3}-\d{3} \d{2}",
    f"{_NIN}.cn_resident_id": r"\d{17}[\dXx]",
    f"{_NIN}.in_aadhaar": r"\d{4} \d{4} \d{4}",
    _NIN: r"\d{11}|\d{3}\.\d{3}\.\d{3}-\d{2}",
    "user.government_id.passport_number.ru_internal": r"\d{4} \d{6}",
    "user.financial.bank_account": r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}",
    "user.financial.credit_card": r"\d{13,19}",
    "user.contact.address.street": r".*\d+.*(street|str|ул|rue|rua|caddesi).*",
    "user.contact.address.city": r"[A-Z\u0400-\u04ff][\w\u0400-\u04ff' -]+",
    "user.name": r"[^\W\d_]+( [^\W\d_]+)*",
}


def _baseline(data: Dataset) -> tuple[dict[str, str | None], int, float]:
    """Classify every column by running every pattern on every value."""
    compiled = [(cat, re.compile(p)) for cat, p in BASELINE_PATTERNS.items()]
    out: dict[str, str | None] = {}
    values = 0
    start = time.perf_counter()
    for t in data.tables.values():
        for i, column in enumerate(t.columns):
            hits: Counter[str] = Counter()
            seen = 0
            for row in t.rows:
                value = text(row[i])
                values += 1
                if value is None:
                    continue
                seen += 1
                for cat, rx in compiled:
                    if rx.fullmatch(value):
                        hits[cat] += 1
            best = hits.most_common(1)
            out[f"{t.name}.{column}"] = best[0][0] if best and best[0][1] > seen / 2 else None
    return out, values, time.perf_counter() - start


def accuracy(truth: dict[str, str | None], found: dict[str, str | None]) -> dict[str, Any]:
    """Per-category precision, recall and F1 over columns, and their macro averages."""
    per: dict[str, dict[str, float]] = {}
    for cat in sorted({c for c in truth.values() if c}):
        tp = sum(1 for k, v in truth.items() if v == cat and found.get(k) == cat)
        fp = sum(1 for k, v in found.items() if v == cat and truth.get(k) != cat)
        fn = sum(1 for k, v in truth.items() if v == cat and found.get(k) != cat)
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        per[cat] = {"precision": round(p, 3), "recall": round(r, 3), "f1": round(f1, 3)}
    decoys = [k for k, v in truth.items() if v is None]
    false_alarms = sum(1 for k in decoys if found.get(k) is not None)
    n = len(per) or 1
    return {
        "per_category": per,
        "macro_precision": round(sum(v["precision"] for v in per.values()) / n, 3),
        "macro_recall": round(sum(v["recall"] for v in per.values()) / n, 3),
        "macro_f1": round(sum(v["f1"] for v in per.values()) / n, 3),
        "decoy_columns_flagged": f"{false_alarms} of {len(decoys)}",
    }


def run(
    subjects: int = 5000,
    *,
    sample: int = 1000,
    progress: Console | None = None,
    keep: Path | None = None,
) -> dict[str, Any]:
    """``keep``: write the source into this new folder (``source.db``, ``files/``) and
    leave it there, for trying ``domicile scan`` on it; by default a temporary folder."""
    if keep is not None:
        if keep.exists() and (not keep.is_dir() or any(keep.iterdir())):
            raise BadInput(
                f"--keep {keep}: it exists and is not an empty folder",
                hint="name a new folder; the source is written into it",
            )
        try:
            keep.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadInput(f"--keep {keep}: {exc.strerror}") from None
    data = generate(subjects)
    total = data.values
    engine = PolicyEngine()
    results: dict[str, Any] = {}
    with (
        nullcontext(str(keep))
        if keep is not None
        else tempfile.TemporaryDirectory(prefix="domicile-bench-scan-")
    ) as tmp:
        folder = Path(tmp)
        write_database(data, f"sqlite:///{folder / 'source.db'}")
        write_files(data, folder / "files", "parquet")
        for name, spec in (
            ("sqlite", f"sqlite:///{folder / 'source.db'}"),
            ("parquet", str(folder / "files")),
        ):
            if progress:
                progress.print(f"scanning {name} ({total:,} values)")
            start = time.perf_counter()
            source = open_source(spec)
            try:
                report = run_scan(source, located_in="US", engine=engine, sample=sample)
            finally:
                source.close()
            seconds = time.perf_counter() - start
            found = {k: v["category"] for k, v in report["columns"].items()}
            exact = sum(report["subjects"].get(k) == v for k, v in data.subjects.items())
            results[name] = {
                "seconds": round(seconds, 3),
                "values_per_second": round(total / seconds),
                "accuracy": accuracy(data.columns, found),
                "subjects_exact": round(exact / len(data.subjects), 4),
            }
    if progress:
        progress.print("baseline: every pattern on every value")
    base_found, base_values, base_seconds = _baseline(data)
    base_rate = base_values / base_seconds
    base_acc = accuracy(data.columns, base_found)
    worst_rate = min(r["values_per_second"] for r in results.values())
    worst_f1 = min(r["accuracy"]["macro_f1"] for r in results.values())
    worst_exact = min(r["subjects_exact"] for r in results.values())
    return {
        "benchmark": "scan",
        "python": platform.python_version(),
        "subjects": subjects,
        "values": total,
        "rows": sum(len(t.rows) for t in data.tables.values()),
        "sample": sample,
        "per_second": {
            "scan_sqlite": results["sqlite"]["values_per_second"],
            "scan_parquet": results["parquet"]["values_per_second"],
            "baseline_all_regex": round(base_rate),
        },
        "scan": results,
        "baseline": {"seconds": round(base_seconds, 3), "accuracy": base_acc},
        "ratios": {
            "scan_sqlite_vs_baseline_speed": round(
                results["sqlite"]["values_per_second"] / base_rate, 3
            ),
            "scan_parquet_vs_baseline_speed": round(
                results["parquet"]["values_per_second"] / base_rate, 3
            ),
            "scan_vs_baseline_macro_f1": round(worst_f1 / (base_acc["macro_f1"] or 1.0), 3),
        },
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "target": {
            "values_per_second": TARGET_VALUES_PER_SECOND,
            "macro_f1": TARGET_MACRO_F1,
            "subjects_exact": TARGET_SUBJECTS_EXACT,
            "met": {
                "values_per_second": worst_rate >= TARGET_VALUES_PER_SECOND,
                "macro_f1": worst_f1 >= TARGET_MACRO_F1,
                "subjects_exact": worst_exact >= TARGET_SUBJECTS_EXACT,
            },
        },
    }
