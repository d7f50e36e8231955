"""``domicile scan``: where is the personal data of which country's people, and what does
the law say about it being here?

Four steps, each reading only:
1. classify every column from a sample of its values (``classify.py``);
2. find the subjects' tables and the links to them: declared foreign keys, or, for files,
   columns whose values are contained in another table's key (a name that agrees lowers
   the bar; it never suffices alone);
3. read the tables that hold evidence in full, batch by batch, and gather per subject the
   pieces of evidence of every linked row (``evidence.py``), resolved into countries;
4. decide each subject's data with the policy engine as if stored where the source is,
   and report every rule that refuses or escalates, with counts and row references by
   primary key (never a value).

What each subject's rows give (pieces of evidence, row counts, a few row keys) and the
subjects of the keys of tables in between are kept in a ledger on disk (``ledger.py``),
so memory holds a batch of rows, not the source. The report is made member by member
(``scan_parts``): ``scan_to`` writes it as it is made, subject by subject, with each
finding's subjects spooled to the ledger until the finding is written, so what still
grows with the subjects is, for files, link inference's keys at 8 bytes each; ``scan``
gives the report whole, in memory.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import json
import time
from array import array
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO, TypedDict, Unpack

from domicile.discovery.classify import Tally, Verdict, decide, tally, text
from domicile.discovery.evidence import EvidenceBook, Piece, countries_of
from domicile.discovery.keys import key_text, keys_text, part_text
from domicile.discovery.ledger import REFS_PER_SUBJECT, Entry, Ledger, Share
from domicile.discovery.recognizers import KINDS, national_shape
from domicile.discovery.sources import Batch, ForeignKey, Source, TableInfo
from domicile.discovery.stream import LazyArray, LazyObject, materialize
from domicile.discovery.stream import write as write_json
from domicile.errors import BadInput
from domicile.packs.model import Outcome
from domicile.policy import Decision, PolicyEngine
from domicile.residency import Residency

# Row references listed per finding and table (``ledger.REFS_PER_SUBJECT``: per subject).
REFS_PER_FINDING = 1000
# Subjects of findings noted in memory before they go to the spool, as (finding, subject).
SPOOL_BATCH = 5000
# Link inference: share of a column's sampled values found among a table's keys.
CONTAINED_NAMED = 0.9
CONTAINED_UNNAMED = 1.0
MIN_LINK_DISTINCT = 20

Progress = Callable[[str, int], None]


@dataclass
class Link:
    """Rows of ``table`` belong to the row of ``target`` whose key (``target_columns``)
    equals their ``columns``: one column, or several for a composite key such as
    (tenant_id, user_id)."""

    table: str
    columns: tuple[str, ...]
    target: str
    target_columns: tuple[str, ...]
    declared: bool
    containment: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "from": _end(self.table, self.columns),
            "to": _end(self.target, self.target_columns),
            "declared": self.declared,
        }
        if self.containment is not None:
            out["containment"] = round(self.containment, 3)
        if len(self.columns) > 1:
            out["columns"] = list(self.columns)
            out["to_columns"] = list(self.target_columns)
        return out


def _end(table: str, columns: tuple[str, ...]) -> str:
    """``TABLE.COLUMN``, or ``TABLE.(A, B)`` for a composite key."""
    return f"{table}.{columns[0]}" if len(columns) == 1 else f"{table}.({', '.join(columns)})"


@dataclass
class SurveyedTable:
    info: TableInfo
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    key: tuple[str, ...] = ()  # the columns that name a row (empty: row numbers)
    rows: int = 0

    @property
    def personal(self) -> dict[str, str]:
        """Column to kind, for the columns that hold personal data."""
        return {c: v.kind for c, v in self.verdicts.items() if v.kind is not None}

    @property
    def categories(self) -> frozenset[str]:
        return frozenset(v.category for v in self.verdicts.values() if v.category)


def row_key(values: Sequence[Any]) -> str:
    """A row's key as its reference (``keys.key_text``: one way for every type, as the
    links to it, the migration's plan and its journal write it); empty when a part is."""
    return key_text(values) or ""


@dataclass
class Gathered:
    """What step 3 gives step 4: every subject in the order first met with what its rows
    gave, the resolver's answers per piece, and how many rows and values were read."""

    entries: Iterable[tuple[str, Entry]]
    book: EvidenceBook
    rows: int
    values: int


# Step 3 on some engine: given the survey, what its rows gave (open while step 4 reads it).
Gather = Callable[["Survey"], AbstractContextManager[Gathered]]


class ScanOptions(TypedDict, total=False):
    """What a scan may be told beside its source, place and engine (see ``scan_parts``)."""

    tables: Sequence[str]
    sample: int
    batch_size: int
    date: dt.date | None
    progress: Progress | None
    gather: Gather | None


def scan(
    source: Source,
    *,
    located_in: str,
    engine: PolicyEngine,
    residencies: dict[str, Residency] | None = None,
    **options: Unpack[ScanOptions],
) -> dict[str, Any]:
    """The report (see the README, "Discovery"), whole in memory. ``residencies``, when
    given, receives each subject's resolved residency (``domicile migrate plan`` places
    subjects by it)."""
    parts = scan_parts(
        source, located_in=located_in, engine=engine, residencies=residencies, **options
    )
    try:
        return {key: materialize(value) for key, value in parts}
    finally:
        parts.close()


def scan_to(
    out: TextIO,
    source: Source,
    *,
    located_in: str,
    engine: PolicyEngine,
    **options: Unpack[ScanOptions],
) -> dict[str, Any]:
    """Write the report to ``out`` as JSON (exactly as ``json.dumps(scan(...),
    ensure_ascii=False, indent=2)``), subject by subject as it is made, never holding it
    whole. Returns a summary for people: the report without ``subjects`` and the findings'
    ``subject_refs``, with ``countries``, the number of subjects per country (``none``:
    no evidence)."""
    summary: dict[str, Any] = {}
    countries = Counter[str]()

    def counted(subjects: LazyObject) -> Iterator[tuple[str, list[str]]]:
        for sid, ccs in subjects.items:
            countries.update(ccs or ["none"])
            yield sid, ccs

    parts = scan_parts(source, located_in=located_in, engine=engine, **options)
    try:
        out.write("{")
        for i, (key, value) in enumerate(parts):
            out.write(f"{',' if i else ''}\n  {json.dumps(key)}: ")
            if key == "subjects":
                value = LazyObject(counted(value))
            elif key == "findings":
                summary[key] = [{k: v for k, v in f.items() if k != "subject_refs"} for f in value]
            else:
                summary[key] = value
            write_json(value, out, level=2)
        out.write("\n}\n")
    finally:
        parts.close()
    summary["countries"] = dict(countries)
    return summary


def scan_parts(
    source: Source,
    *,
    located_in: str,
    engine: PolicyEngine,
    tables: Sequence[str] = (),
    sample: int = 1000,
    batch_size: int = 5000,
    date: dt.date | None = None,
    progress: Progress | None = None,
    residencies: dict[str, Residency] | None = None,
    gather: Gather | None = None,
) -> Generator[tuple[str, Any], None, None]:
    """The report's members in order, each made when it is asked for: ``subjects`` is a
    ``LazyObject`` (step 4, subject by subject), to be read before the next member is
    asked for, and each finding's ``subject_refs`` a ``LazyArray`` of the subjects spooled
    to a ledger meanwhile. ``gather``: step 3 on another engine (``spark.gather``); by
    default in this process. Closing the generator removes the ledgers."""
    started = time.perf_counter()
    day = date or dt.date.today()
    plan = survey(
        source, located_in=located_in, tables=tables, sample=sample, batch_size=batch_size
    )

    @contextmanager
    def in_this_process(plan: Survey) -> Iterator[Gathered]:
        ledger = Ledger()
        try:
            book = EvidenceBook()
            rows, values = _gather(plan, source, ledger, book, located_in, batch_size, progress)
            yield Gathered(ledger.entries(), book, rows, values)
        finally:
            ledger.close()

    spool = Ledger()  # the subjects each finding names, until the finding is written
    try:
        with (gather or in_this_process)(plan) as got:
            yield "source", source.description
            yield "located_in", located_in
            yield "date", day.isoformat()
            yield (
                "columns",
                {
                    f"{name}.{column}": v.to_dict()
                    for name, t in plan.tables.items()
                    for column, v in t.verdicts.items()
                },
            )
            judging = Judgement(
                plan, got.book, engine=engine, located_in=located_in, day=day,
                residencies=residencies, spool=spool,
            )  # fmt: skip
            reading = judging.subjects(got.entries)
            yield "subjects", LazyObject(reading)
            for _ in reading:  # a reader that skipped the subjects: the findings need them
                pass
            yield "links", [link.to_dict() for link in plan.links]
            yield "subject_tables", sorted({r for r in plan.roots.values() if r})
            yield "findings", judging.findings()
            yield (
                "stats",
                {
                    "tables": len(plan.tables),
                    "rows": got.rows,
                    "values": got.values,
                    "subjects": judging.count,
                    "seconds": round(time.perf_counter() - started, 3),
                },
            )
    finally:
        spool.close()


@dataclass
class Survey:
    """What steps 1 and 2 found: each table's verdicts and key, the links, each table's
    subjects' table (``roots``) and the tables read in full, parents before children."""

    tables: dict[str, SurveyedTable]
    links: list[Link]
    parent: dict[str, Link]  # a table to the link to its parent
    roots: dict[str, str | None]
    order: list[str]

    @property
    def needed_as_parent(self) -> set[str]:
        return {link.target for link in self.parent.values()}

    def is_subject_table(self, name: str) -> bool:
        return self.roots.get(name) == name

    def wanted(self, name: str, columns: Sequence[str]) -> list[str]:
        """The columns read of a table to gather ``columns``: its key, its link, them."""
        t = self.tables[name]
        link = None if self.is_subject_table(name) else self.parent[name]
        wanted = list(dict.fromkeys([*t.key, *(link.columns if link else ()), *columns]))
        return wanted or [t.info.columns[0]]

    def evidence_columns(self, name: str) -> dict[str, str]:
        """Column to kind, for a table's columns whose values are evidence."""
        return {c: k for c, k in self.tables[name].personal.items() if KINDS[k].evidence}


def survey(
    source: Source,
    *,
    located_in: str,
    tables: Sequence[str] = (),
    sample: int = 1000,
    batch_size: int = 5000,
) -> Survey:
    """Steps 1 and 2: classify every column from a sample, find keys, links and subjects.
    Reads a sample of each table, and the key columns in full where links are inferred."""
    infos = source.tables()
    if tables:
        known = {i.name for i in infos}
        missing = [t for t in tables if t not in known]
        if missing:
            raise BadInput(
                f"the source has no table {missing[0]!r}",
                hint=f"use one of: {', '.join(sorted(known)) or '(none)'}",
            )
        infos = [i for i in infos if i.name in tables]
    if not infos:
        raise BadInput("the source holds no tables", hint="check the URL or path")

    # 1. classify from a sample
    state: dict[str, SurveyedTable] = {}
    samples: dict[str, dict[str, list[Any]]] = {}
    for info in infos:
        t = SurveyedTable(info)
        merged: dict[str, Tally] = {}
        rows: dict[str, list[Any]] = {c: [] for c in info.columns}
        for batch in source.batches(info.name, info.columns, batch_size, limit=sample):
            for column, tl in tally(batch, (located_in,)).items():
                merged.setdefault(column, Tally()).merge(tl)
            for c in info.columns:
                rows[c].extend(batch[c])
        samples[info.name] = rows
        for column in info.columns:
            t.verdicts[column] = decide(column, merged.get(column, Tally()))
        t.key = info.primary_key or _infer_key(t, rows)
        state[info.name] = t
    if all(not any(samples[n].values()) for n in state):
        raise BadInput(
            "every table of the source is empty", hint="nothing to scan; check the source"
        )

    # 2. links and subjects
    links = _declared_links(state)
    if source.files or not links:
        links += _inferred_links(source, state, samples, batch_size)
    parent: dict[str, Link] = {}
    for each in links:
        parent.setdefault(each.table, each)
    roots: dict[str, str | None] = {}

    def root(name: str, seen: frozenset[str] = frozenset()) -> str | None:
        if name in roots:
            return roots[name]
        found: str | None = None
        up = parent.get(name)
        if up is not None and up.target not in seen:
            found = root(up.target, seen | {name})
        if found is None and state[name].personal:
            found = name
        roots[name] = found
        return found

    for name in state:
        root(name)

    def depth(name: str) -> int:
        d, cur = 0, name
        while roots.get(cur) not in (None, cur) and cur in parent and d < len(state):
            cur, d = parent[cur].target, d + 1
        return d

    order = sorted((n for n in state if roots.get(n) is not None), key=depth)
    return Survey(state, links, parent, roots, order)


def _gather(
    plan: Survey,
    source: Source,
    ledger: Ledger,
    book: EvidenceBook,
    located_in: str,
    batch_size: int,
    progress: Progress | None,
) -> tuple[int, int]:
    """Step 3 in this process: read the tables in full, parents before children, and keep
    what each subject's rows give in the ledger (on disk, so memory holds a batch, not the
    source). Returns the rows and values read."""
    state, parent, roots = plan.tables, plan.parent, plan.roots
    stats = Counter[str]()

    def rows_of(
        name: str, columns: Sequence[str]
    ) -> Iterator[tuple[Batch, int, list[tuple[int, str, str]]]]:
        """The batches of a table's ``columns`` (with its key and link), each with its
        rows that belong to a subject: (index, subject id, row reference)."""
        t = state[name]
        subject_table = roots[name] == name
        link = None if subject_table else parent[name]
        wanted = plan.wanted(name, columns)
        rowno = 0
        for batch in source.batches(name, wanted, batch_size):
            n = len(batch[wanted[0]])
            keys = list(zip(*(batch[c] for c in t.key), strict=True)) if t.key else None
            targets = link_keys(batch, link.columns, n) if link else None
            up = link.target if link else ""
            owners = (
                ledger.owners(up, (k for k in targets if k is not None))
                if link and targets and roots[up] != up
                else {}
            )
            found: list[tuple[int, str, str]] = []
            for i in range(n):
                rowno += 1
                ref = row_key(keys[i]) if keys else f"#{rowno}"
                if link is None:
                    sid = f"{name}:{ref}"
                else:
                    assert targets is not None
                    target = targets[i]
                    if target is None:
                        continue
                    sid_found = f"{up}:{target}" if roots[up] == up else owners.get(target)
                    if sid_found is None:
                        continue
                    sid = sid_found
                found.append((i, sid, ref))
            yield batch, n * len(wanted), found

    # Phone numbers without a country code are read once every other piece of evidence
    # is known: the subject's documents and addresses fix how they are read.
    national_later: dict[str, list[str]] = {}
    needed_as_parent = plan.needed_as_parent
    for name in plan.order:
        t = state[name]
        subject_table = roots[name] == name
        evidence_cols = plan.evidence_columns(name)
        # Children of a subjects' table name their subject by its key directly; only
        # tables in between (orders, between payments and customers) keep a map.
        keep_map = name in needed_as_parent and not subject_table
        counted = bool(t.personal)
        for batch, values, found in rows_of(name, list(evidence_cols)):
            if keep_map:
                ledger.own(name, ((ref, sid) for _, sid, ref in found))
            shares: dict[str, Share] = {}
            for i, sid, ref in found if counted else ():
                share = shares.get(sid)
                if share is None:
                    share = shares[sid] = Share()
                share.rows += 1
                if len(share.refs) < REFS_PER_SUBJECT:
                    share.refs.append(ref)
                for column, kind in evidence_cols.items():
                    value = text(batch[column][i])
                    if value is None:
                        continue
                    piece = book.piece(kind, value)
                    if piece is not None:
                        share.pieces.add(piece)
                    elif kind == "phone" and national_shape(value) is not None:
                        later = national_later.setdefault(name, [])
                        if column not in later:
                            later.append(column)
            ledger.add(name, shares)
            stats["values"] += values
            t.rows += len(next(iter(batch.values()), ()))
            if progress:
                progress(name, len(next(iter(batch.values()), ())))
        stats["rows"] += t.rows
    for name, columns in national_later.items():
        for batch, _, found in rows_of(name, columns):
            held = ledger.pieces_of([sid for _, sid, _ in found])
            more: list[tuple[str, Piece]] = []
            for i, sid, _ref in found:
                fixed: set[str] | None = None
                for column in columns:
                    value = text(batch[column][i])
                    if value is None or national_shape(value) is None:
                        continue
                    if fixed is None:
                        fixed = book.fixing(held.get(sid, ()))
                    piece = book.national_phone(
                        value, phone_regions(plan, name, column, located_in, fixed)
                    )
                    if piece is not None:
                        more.append((sid, piece))
            ledger.add_pieces(more)
    return stats["rows"], stats["values"]


def phone_regions(
    plan: Survey, table: str, column: str, located_in: str, fixed: Iterable[str]
) -> set[str]:
    """The countries under which a subject's phone number without a country code is read:
    where the source is, what the subject's documents, addresses and bank accounts name,
    and the country most of the column's international numbers belong to."""
    regions = {located_in, *fixed}
    region = plan.tables[table].verdicts[column].region
    if region:
        regions.add(region)
    return regions


class Judgement:
    """Step 4, subject by subject as the report is read: each subject's residency from
    its pieces, and its data decided as if stored where the source is; every rule that
    refuses or escalates, with counts and row references. The subjects a finding names
    go to ``spool`` (a ledger: a million of them are not held) until it is written."""

    def __init__(
        self,
        plan: Survey,
        book: EvidenceBook,
        *,
        engine: PolicyEngine,
        located_in: str,
        day: dt.date,
        residencies: dict[str, Residency] | None,
        spool: Ledger,
    ) -> None:
        self.book, self.engine, self.located_in, self.day = book, engine, located_in, day
        self.residencies, self.spool = residencies, spool
        self.categories = {name: t.categories for name, t in plan.tables.items()}
        self.count = 0
        self._findings: dict[str, dict[str, Any]] = {}
        self._ids: dict[str, int] = {}  # a finding's number in the spool
        self._named: list[tuple[int, str]] = []
        self._shared: dict[Residency, list[str]] = {}
        self._decisions: dict[tuple[Residency, frozenset[str]], Decision] = {}

    def subjects(self, entries: Iterable[tuple[str, Entry]]) -> Iterator[tuple[str, list[str]]]:
        """Every subject (in the order first met) with its countries."""
        for sid, s in entries:
            residency = self.book.residency(s.pieces)
            # One list per distinct residency, shared by its subjects: a report held in
            # memory holds a million subjects' countries without a million lists.
            countries = self._shared.get(residency)
            if countries is None:
                countries = self._shared[residency] = countries_of(residency)
            self.count += 1
            if self.residencies is not None:
                self.residencies[sid] = residency
            self._decide(sid, s, residency)
            if len(self._named) >= SPOOL_BATCH:
                self.spool.note_findings(self._named)
                self._named.clear()
            yield sid, countries
        self.spool.note_findings(self._named)
        self._named.clear()

    def findings(self) -> list[dict[str, Any]]:
        """The findings, denials first, then by subjects (once every subject is read)."""
        return sorted(
            self._findings.values(),
            key=lambda f: (f["outcome"] != "deny", -f["subjects"], f["rule"]),
        )

    def _decide(self, sid: str, s: Entry, residency: Residency) -> None:
        cats = frozenset().union(*(self.categories[tb] for tb in s.rows))
        if not cats:
            return
        decision = self._decisions.get((residency, cats))
        if decision is None:
            request = self.engine.request(
                subject=residency,
                categories=sorted(cats),
                operation="store",
                site_country=self.located_in,
                date=self.day,
            )
            decision = self._decisions[(residency, cats)] = self.engine.decide(request)
        if decision.outcome is Outcome.allow:
            return
        jurisdictions = {j.pack: j.jurisdiction for j in decision.jurisdictions}
        for rule in decision.rules:
            if rule.outcome is Outcome.allow:
                continue
            f = self._findings.get(rule.id)
            if f is None:
                self._ids[rule.id] = len(self._ids)
                f = self._findings[rule.id] = {
                    "rule": rule.id,
                    "pack": rule.pack,
                    "jurisdiction": jurisdictions.get(rule.pack, rule.pack.upper()),
                    "title": rule.title,
                    "outcome": rule.outcome.value,
                    "severity": "high" if rule.outcome is Outcome.deny else "review",
                    "reason": rule.reason,
                    "citations": [c.to_dict() for c in rule.citations],
                    "subjects": 0,
                    "rows": 0,
                    "uncertain_subjects": 0,
                    "subject_refs": LazyArray(self.spool.finding_subjects(self._ids[rule.id])),
                    "row_refs": {},
                    "row_refs_complete": True,
                }
            # Escalation is stricter than allowing: a contested case is its own outcome.
            if rule.outcome is Outcome.deny and f["outcome"] != "deny":
                f["outcome"], f["severity"] = "deny", "high"
            f["subjects"] += 1
            f["uncertain_subjects"] += int(rule.uncertain)
            self._named.append((self._ids[rule.id], sid))
            for tb, count in s.rows.items():
                f["rows"] += count
                listed = f["row_refs"].setdefault(tb, [])
                room = REFS_PER_FINDING - len(listed)
                listed.extend(s.refs[tb][: max(room, 0)])
                if count > min(len(s.refs[tb]), max(room, 0)):
                    f["row_refs_complete"] = False


def link_keys(batch: Batch, columns: Sequence[str], n: int) -> list[str | None]:
    """The key of the row each row of a batch links to, written as that row's reference
    (``row_key``, by ``keys.key_text``); None where a column of the link is empty."""
    return keys_text([batch[c] for c in columns], n)


def _infer_key(t: SurveyedTable, rows: dict[str, list[Any]]) -> tuple[str, ...]:
    """A key for a table without a declared one: a column, unique and never empty in the
    sample, that holds no personal data (a key that is an e-mail address would put values
    in the report). Prefers ``id`` or a name with the table's own (``order_id`` in
    ``orders``), then any name like an id (``customer_id`` may be unique too)."""
    candidates = []
    for column in t.info.columns:
        if t.verdicts[column].kind is not None:
            continue
        values = [text(v) for v in rows[column]]
        if not values or any(v is None for v in values) or len(set(values)) != len(values):
            continue
        lowered = column.lower()
        single = _singular(t.info.name)
        own = lowered in ("id", "uuid", "key", f"{single}_id", f"{single}id")
        named = lowered.endswith(("id", "key", "_no"))
        candidates.append((not own, not named, t.info.columns.index(column), column))
    if candidates:
        return (min(candidates)[3],)
    # A composite key, as multi-tenant schemas have ((tenant_id, user_id)): two columns
    # named like ids, never empty, unique together in the sample, none personal.
    ids = [
        c
        for c in t.info.columns
        if t.verdicts[c].kind is None
        and c.lower().endswith(("id", "key", "_no"))
        and rows[c]
        and all(text(v) is not None for v in rows[c])
    ]
    for a, b in itertools.combinations(ids, 2):
        pairs = list(zip(map(text, rows[a]), map(text, rows[b]), strict=True))
        if len(set(pairs)) == len(pairs):
            return (a, b)
    return ()


def _declared_links(state: dict[str, SurveyedTable]) -> list[Link]:
    out = []
    for name, t in state.items():
        for fk in t.info.foreign_keys:
            # Followed only to the target's key: that is how a row of it is named. The
            # columns of a composite key are taken in the key's order.
            key = state[fk.table].key if fk.table in state else ()
            if not key or sorted(fk.target) != sorted(key) or len(fk.target) != len(key):
                continue
            by_target = dict(zip(fk.target, fk.columns, strict=True))
            out.append(Link(name, tuple(by_target[k] for k in key), fk.table, key, True))
    return out


def _singular(name: str) -> str:
    lowered = name.lower()
    for suffix in ("ies", "es", "s"):
        if lowered.endswith(suffix) and len(lowered) > len(suffix) + 2:
            return lowered[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return lowered


def _inferred_links(
    source: Source,
    state: dict[str, SurveyedTable],
    samples: dict[str, dict[str, list[Any]]],
    batch_size: int,
) -> list[Link]:
    """Links for sources without declared keys: a column of one table whose sampled values
    are (nearly) all keys of another table; for a composite key, columns whose sampled
    tuples are (nearly) all its tuples."""
    keyed = {n: t for n, t in state.items() if t.key}
    key_sets: dict[str, _Keys] = {}
    parts: dict[str, list[_Keys]] = {}  # a composite key's values, column by column
    for name, t in keyed.items():
        keys = _Keys()
        split = [_Keys() for _ in t.key] if len(t.key) > 1 else []
        for batch in source.batches(name, list(t.key), batch_size):
            keys.extend(link_keys(batch, t.key, len(batch[t.key[0]])))
            for j, part in enumerate(split):
                part.extend(map(part_text, batch[t.key[j]]))
        key_sets[name] = keys.done()
        if split:
            parts[name] = [part.done() for part in split]
    out = []
    declared = {
        (fk_t, c) for fk_t, t in state.items() for fk in t.info.foreign_keys for c in fk.columns
    }

    def sampled(name: str, columns: Sequence[str]) -> set[str]:
        rows = samples[name]
        n = len(rows[columns[0]])
        return {v for v in link_keys(rows, columns, n) if v is not None}

    for name, t in state.items():
        free = [
            c
            for c in t.info.columns
            if t.verdicts[c].kind is None and (name, c) not in declared and t.key != (c,)
        ]
        # A part of the table's own composite key is not a link alone: small per-tenant
        # numbers fit any sequential key.
        alone = [c for c in free if c not in t.key]
        # Candidates from the sample, then checked on the whole column(s): sequential
        # integer keys make a sample of one table's references fit several tables.
        best: tuple[bool, float, float, tuple[str, ...], str] | None = None
        full: dict[tuple[str, ...], _Keys] = {}
        for target, keys in key_sets.items():
            if target == name or not keys:
                continue
            key = state[target].key
            if len(key) == 1:
                options: list[tuple[str, ...]] = [(c,) for c in alone]
            else:
                # Each column fits one part of the key on its own before the tuples are tried.
                fits = []
                for j in range(len(key)):
                    fit: list[str] = []
                    for c in free:
                        distinct = sampled(name, [c])
                        if (
                            distinct
                            and parts[target][j].count(distinct) / len(distinct) >= CONTAINED_NAMED
                        ):
                            fit.append(c)
                    fits.append(fit)
                options = [
                    combo for combo in itertools.product(*fits) if len(set(combo)) == len(combo)
                ]
            for columns in options:
                if len(columns) > 1 and set(columns) == set(t.key):
                    continue  # the table's own key, as a single key is never a link
                named = _named(columns, target, key)
                enough = CONTAINED_NAMED if named else CONTAINED_UNNAMED
                distinct = sampled(name, columns)
                if not distinct or keys.count(distinct) / len(distinct) < enough:
                    continue
                if not named and len(distinct) < MIN_LINK_DISTINCT:
                    continue
                whole = full.get(columns)
                if whole is None:
                    whole = _Keys()
                    for batch in source.batches(name, list(columns), batch_size):
                        whole.extend(link_keys(batch, columns, len(batch[columns[0]])))
                    whole = full[columns] = whole.done()
                found = keys.overlap(whole)
                share = found / len(whole)
                if share < enough:
                    continue
                # Equal containment: the table whose keys the column covers best.
                candidate = (named, share, found / len(keys), columns, target)
                if best is None or candidate[:3] > best[:3]:
                    best = candidate
        if best is not None:
            _, share, _, columns, target = best
            out.append(Link(name, columns, target, state[target].key, False, share))
    return out


class _Keys:
    """A set of keys (as text), held as the sorted 64-bit hashes of the keys: 8 bytes a
    key, where a set of strings takes ten times that (link inference reads every key of
    every table). Two keys whose hashes collide count as one: at a million keys, a chance
    in some ten million million."""

    def __init__(self) -> None:
        self._h = array("q")

    def extend(self, values: Iterable[str | None]) -> None:
        self._h.extend(hash(v) for v in values if v is not None)

    def done(self) -> _Keys:
        """Sorted, each hash once (after the last ``extend``)."""
        self._h = array("q", sorted(set(self._h)))
        return self

    def __len__(self) -> int:
        return len(self._h)

    def _has(self, h: int) -> bool:
        i = bisect.bisect_left(self._h, h)
        return i < len(self._h) and self._h[i] == h

    def count(self, values: Iterable[str]) -> int:
        """How many of ``values`` (distinct) are keys."""
        return sum(1 for v in values if self._has(hash(v)))

    def overlap(self, other: _Keys) -> int:
        """How many keys both hold."""
        small, large = (self, other) if len(self) <= len(other) else (other, self)
        return sum(1 for h in small._h if large._has(h))


def _named(columns: tuple[str, ...], target: str, key: tuple[str, ...]) -> bool:
    """Whether the names of a link's columns agree with its target: ``customer_id`` for
    ``customers``; for a composite key, each column named like its part of the key."""
    if len(columns) == 1:
        return _singular(target) in columns[0].lower()
    return all(c.lower().endswith(k.lower()) for c, k in zip(columns, key, strict=True))


__all__ = [
    "ForeignKey",
    "Gather",
    "Gathered",
    "Judgement",
    "Link",
    "ScanOptions",
    "Survey",
    "SurveyedTable",
    "link_keys",
    "phone_regions",
    "row_key",
    "scan",
    "scan_parts",
    "scan_to",
    "survey",
]
