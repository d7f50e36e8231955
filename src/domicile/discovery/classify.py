"""Column classification: from a sample of a column's values to one kind, or none.

``tally`` is a plain function over a columnar batch (column name to values), so the same
code runs on an Arrow batch from DuckDB, on rows from a database cursor, or as a task on a
distributed engine; tallies of several batches merge by adding (``Tally.merge``).
``decide`` turns a column's tally into a verdict. Values decide; a column's name only
breaks ties between kinds that have no checksum, and says so in the verdict.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from domicile.discovery.recognizers import (
    KINDS,
    kinds_of,
    national_phone_country,
    national_shape,
    phone_country,
    script_of,
)

# The share of a column's non-empty values a kind must accept. Checksummed kinds allow a
# few typing errors; a kind without a checksum must match nearly every value.
CHECKSUM_SHARE = 0.8
SHAPE_SHARE = 0.9
NAME_SHARE = 0.85
# Under this many distinct values a column says little (a status, a country code list).
MIN_DISTINCT = 3

_NAME_HINTS: dict[str, re.Pattern[str]] = {
    "ru_passport": re.compile(r"passport|паспорт", re.I),
    "name": re.compile(r"name|имя|фамил|fio|фио", re.I),
}
# A column named like this may count its bare digit strings that are valid numbers under
# the context's regions (it does not lower the bar).
_PHONE_HINT = re.compile(r"phone|tel|mobil|телефон|тел", re.I)
# The share of a column's international numbers one country must hold for the column
# to fix the country of its numbers written without a country code.
REGION_SHARE = 0.8


@dataclass
class Tally:
    """What the recognizers found in one column's values."""

    values: int = 0  # non-empty values seen
    binary: int = 0  # values that are bytes, not text
    kinds: Counter[str] = field(default_factory=Counter)
    scripts: Counter[str] = field(default_factory=Counter)
    distinct: set[int] = field(default_factory=set)  # hashes of up to 64 values
    phone_regions: Counter[str] = field(default_factory=Counter)  # of international numbers
    # Numbers written without a country code that are valid under the regions the context
    # fixes: with the separators people write them with, and bare digits (which order
    # numbers are too: they count only where the column's name says phone).
    national: int = 0
    bare: int = 0
    national_regions: frozenset[str] = frozenset()  # the regions they were read under

    def merge(self, other: Tally) -> None:
        self.values += other.values
        self.binary += other.binary
        self.kinds.update(other.kinds)
        self.scripts.update(other.scripts)
        self.phone_regions.update(other.phone_regions)
        self.national += other.national
        self.bare += other.bare
        self.national_regions |= other.national_regions
        if len(self.distinct) < 64:
            self.distinct |= other.distinct


def text(value: object) -> str | None:
    """A cell as text for the recognizers: None for nulls, bytes and empty strings."""
    if value is None or isinstance(value, bytes | bytearray | memoryview):
        return None
    if isinstance(value, str):
        stripped = value.strip()
        return stripped or None
    if isinstance(value, bool | float):
        return None  # flags and measurements are never identifiers
    return str(value)


def main_region(regions: Counter[str]) -> str | None:
    """The country most of a column's international numbers belong to, if one holds at
    least ``REGION_SHARE`` of them."""
    total = sum(regions.values())
    if not total:
        return None
    region, count = regions.most_common(1)[0]
    return region if count / total >= REGION_SHARE else None


def tally(batch: Mapping[str, Sequence[Any]], regions: Sequence[str] = ()) -> dict[str, Tally]:
    """Tallies of every column of one columnar batch. ``regions``: the countries the
    context fixes for phone numbers written without a country code (where the source
    is); to classify, the countries of the batch's own international numbers are added
    (which country a number is evidence of is decided more strictly, per subject, in the
    scan). Without a region such numbers are not phones: a bare number names no country."""
    out: dict[str, Tally] = {}
    for column, values in batch.items():
        t = Tally()
        national: list[tuple[str, str]] = []  # (value, shape), this batch only
        for raw in values:
            if isinstance(raw, bytes | bytearray | memoryview):
                t.binary += 1
                continue
            value = text(raw)
            if value is None:
                continue
            t.values += 1
            if len(t.distinct) < 64:
                t.distinct.add(hash(value))
            found = kinds_of(value)
            t.kinds.update(found)
            if "name" in found:
                t.scripts[script_of(value) or "MIXED"] += 1
            elif "phone" in found:
                t.phone_regions[phone_country(value) or ""] += 1
            elif not found:
                shape = national_shape(value)
                if shape is not None:
                    national.append((value, shape))
        if national:
            context = {*regions, *t.phone_regions} - {""}
            if context:
                t.national_regions = frozenset(context)
            for value, shape in national:
                if context and national_phone_country(value, context):
                    if shape == "formatted":
                        t.national += 1
                    else:
                        t.bare += 1
        out[column] = t
    return out


@dataclass(frozen=True)
class Verdict:
    """A column's category (or None), how sure, and why."""

    kind: str | None
    category: str | None
    confidence: float
    evidence: str
    sampled: int
    matched: int
    scripts: tuple[str, ...] = ()
    # A phone column: the country most of its international numbers belong to, and how
    # many of the matched values were numbers without a country code.
    region: str | None = None
    national: int = 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "category": self.category,
            "recognizer": self.kind,
            "confidence": round(self.confidence, 3),
            "evidence": self.evidence,
            "sampled": self.sampled,
            "matched": self.matched,
        }
        if self.scripts:
            out["scripts"] = list(self.scripts)
        if self.national:
            out["national"] = self.national
        return out


def decide(column: str, t: Tally) -> Verdict:
    """The verdict on a column from its tally."""
    if t.values == 0:
        why = "binary values are not read" if t.binary else "no values to judge"
        return Verdict(None, None, 0.0, why, 0, 0)
    if len(t.distinct) < MIN_DISTINCT and t.values >= MIN_DISTINCT:
        return Verdict(None, None, 0.9, "too few distinct values to be about people", t.values, 0)
    kinds = Counter(t.kinds)
    national = t.national + (t.bare if _PHONE_HINT.search(column) else 0)
    if national:
        kinds["phone"] += national
    ranked = sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))
    for kind_name, hits in ranked:
        kind = KINDS[kind_name]
        share = hits / t.values
        need = CHECKSUM_SHARE if kind.checksum else SHAPE_SHARE
        if kind_name == "name":
            need = NAME_SHARE
        hinted = kind_name in _NAME_HINTS and bool(_NAME_HINTS[kind_name].search(column))
        if hinted:
            need -= 0.1
        if share < need:
            continue
        # A second kind that fits as well makes the column ambiguous, unless the first
        # has a checksum the second lacks.
        rivals = [k for k, h in ranked if k != kind_name and h / t.values >= need]
        if rivals and not (kind.checksum and not any(KINDS[r].checksum for r in rivals)):
            return Verdict(
                None, None, 0.5,
                f"values fit {kind_name} and {', '.join(rivals)} equally; not decided",
                t.values, hits,
            )  # fmt: skip
        scripts = tuple(s for s, _ in t.scripts.most_common(3)) if kind_name == "name" else ()
        evidence = f"{hits} of {t.values} sampled values pass: {kind.title}"
        if kind_name == "phone" and national:
            evidence += (
                f"; {national} of them without a country code, valid in "
                f"{' or '.join(sorted(t.national_regions))}"
            )
        if hinted:
            evidence += f"; the column name {column!r} agrees"
        if kind_name != "phone":
            return Verdict(kind_name, kind.category, share, evidence, t.values, hits, scripts)
        region = main_region(t.phone_regions)
        return Verdict(
            kind_name, kind.category, share, evidence, t.values, hits, region=region,
            national=national,
        )  # fmt: skip
    best = ranked[0] if ranked else None
    why = (
        f"at most {best[1]} of {t.values} values pass any recognizer ({best[0]}); not enough"
        if best
        else f"none of {t.values} sampled values passes a recognizer"
    )
    return Verdict(None, None, 1 - (best[1] / t.values if best else 0.0), why, t.values, 0)
