"""``domicile scan --engine spark``: the same scan, its full pass run as a Spark job.

The one-process scan (``scan.py``) has four steps; ``scan.scan(SparkSource(...),
gather=gather(...))`` runs them with step 3 on Spark. Steps 1 and 2 (classify columns from a
sample, find keys and links) read little and run on the driver, through ``SparkSource``,
which reads the files with Spark. Step 3, the full pass that reads every row, is the job:
``mapInArrow`` runs the existing recognizers (``EvidenceBook.piece``) over each partition's
Arrow batches and gives, for every row, its subject (or the key of its parent row), its
place in the files, its row reference and its pieces of evidence; joins name the subject of
rows of tables in between (payments through orders); a reduce by subject and table sums the
rows, keeps the first row references and unites the pieces. Phone numbers written without a
country code take a second, smaller pass, as in the one-process scan: each such number is
read under every country that any subject's documents, addresses or bank accounts name
(known after the first pass), so the reading travels as a few country codes and the value
never leaves its task; the join with the subject's countries then picks the reading. Step 4
runs on the driver, once per subject, in the order the one-process scan meets subjects, so
the report is the same (``scan.Judgement``, ``scan.scan_parts``).

What crosses the network and Spark's shuffle files: subject ids and row keys (which are never
columns holding personal data), file names, positions, pieces of evidence (small keys such as
``phone<TAB>DE``) and country codes. Values are read by the tasks and stay in them. Each
task's resolver answers per piece (a ``Residency``, which depends on the piece only) come
back to the driver with the task's row count.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import phonenumbers

from domicile.discovery.classify import text
from domicile.discovery.evidence import EvidenceBook, Piece
from domicile.discovery.ledger import REFS_PER_SUBJECT, Entry
from domicile.discovery.recognizers import national_phone, national_shape
from domicile.discovery.scan import (
    Gather,
    Gathered,
    Progress,
    Survey,
    link_keys,
    phone_regions,
    row_key,
)
from domicile.discovery.sources import Batch, TableInfo, file_kind, file_tables
from domicile.errors import EngineUnavailable, EnvironmentProblem, SourceError
from domicile.extras import require

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# Where a row is: its file, the start of the file's split it was read from, and an id that
# grows along the split (``monotonically_increasing_id``). Sorted, they give the files' order.
FILE, BLOCK, ROW = "_domicile_file", "_domicile_block", "_domicile_row"
POSITION = (FILE, BLOCK, ROW)
# What a task of the full pass gives: one row per source row that has a subject or a parent
# row's key (what = 0), then one row with the task's count, resolver answers and the
# columns of numbers without a country code, in rows of a known subject (later) or of a
# subject a join names (pending) (what = 1).
_PLACE = f"{FILE} string, {BLOCK} long, {ROW} long"
_ROWS = (
    f"what int, sid string, target string, {_PLACE}, ref string, "
    "pieces array<string>, later array<string>, pending array<string>, count long, "
    "book binary"
)
_READINGS = (
    f"what int, sid string, target string, {_PLACE}, readings array<string>, count long, "
    "book binary"
)
_LOG4J = "log4j2-spark.properties"


def require_extra() -> None:
    """Fail in one line when the ``spark`` extra is not installed."""
    require("spark", "domicile scan --engine spark")


def session(master: str | None) -> SparkSession:
    """A Spark session, quiet (warnings and errors only, no progress bars in the terminal).
    ``master``: ``local[N]`` or a cluster's URL; None takes what ``spark-submit`` set (or
    Spark's own default, ``local[*]``)."""
    require_extra()
    from pyspark.errors import PySparkException
    from pyspark.sql import SparkSession

    log4j = resources.files("domicile.discovery").joinpath(_LOG4J)
    java_options = f"-Dlog4j2.configurationFile=file:{log4j}"
    builder = SparkSession.builder.appName("domicile scan")
    if master is not None:
        builder = builder.master(master)
    if master is not None and master.startswith("local"):
        # Local tasks run this interpreter, so they import the same domicile; a few
        # partitions after a shuffle, not a cluster's 200.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = builder.config("spark.sql.shuffle.partitions", str(2 * (os.cpu_count() or 1)))
    for key, value in {
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.session.timeZone": "UTC",
        "spark.driver.extraJavaOptions": java_options,
        "spark.executor.extraJavaOptions": java_options,
    }.items():
        builder = builder.config(key, value)
    no_java = EnvironmentProblem(
        "Spark cannot start: no Java runtime it can use",
        hint="install Java 17 or later and put it on the PATH or set JAVA_HOME",
    )
    if not os.environ.get("JAVA_HOME") and shutil.which("java") is None:
        raise no_java  # before Spark's launcher says so in words of its own
    try:
        spark = builder.getOrCreate()
    except PySparkException as exc:
        if "JAVA" in (exc.getCondition() or ""):
            raise no_java from None
        raise EngineUnavailable(
            "Spark cannot start", hint="check --master and that the cluster answers"
        ) from None
    except Exception:  # the gateway's own errors (a master that does not answer)
        raise EngineUnavailable(
            "Spark cannot start", hint="check --master and that the cluster answers"
        ) from None
    spark.sparkContext.setLogLevel("WARN")
    # PySpark logs a failed query's plan and Spark's message; the scan says what failed in
    # one line of its own (a message of Spark's may quote a record).
    logging.getLogger("DataFrameQueryContextLogger").setLevel(logging.CRITICAL)
    return spark


class SparkSource:
    """The files of a folder (a table per file, or per folder of parts), read by Spark.
    Serves the driver's steps 1 and 2 (``scan.survey``) like ``FileSource`` does, and gives
    the full pass its DataFrames. The folder must be one every executor can read at the
    same path (a shared mount on a cluster)."""

    files = True

    def __init__(self, spark: SparkSession, path: Path) -> None:
        self.spark = spark
        self.description = f"files {path.name}"
        self._files = file_tables(path)
        self._columns: dict[str, tuple[str, ...]] = {}
        self._schemas: dict[str, Any] = {}

    def _read(self, table: str) -> DataFrame:
        paths = [str(p) for p in self._files[table]]
        kind = file_kind(self._files[table])
        reader = self.spark.read
        known = self._schemas.get(table)
        if known is not None:
            # Read once, the schema is given after: Spark would otherwise run a job to
            # read the header (CSV) or every line (JSON) each time.
            reader = reader.schema(known)
        if kind == "csv":
            # Every column as text, as the one-process scan reads CSV; quoted values may
            # hold commas, doubled quotes and line breaks.
            sep = "\t" if self._files[table][0].suffix.lower() == ".tsv" else ","
            return reader.csv(
                paths, header=True, inferSchema=False, multiLine=True, escape='"', sep=sep,
                encoding="UTF-8",
            )  # fmt: skip
        if kind == "parquet":
            return reader.parquet(*paths)
        return reader.json(paths)

    def columns(self, table: str) -> tuple[str, ...]:
        found = self._columns.get(table)
        if found is None:
            try:
                df = self._read(table)
                self._schemas[table] = df.schema
                names = list(df.columns)
            except Exception:
                raise self._unreadable(table) from None
            if file_kind(self._files[table]) == "json":
                # Spark sorts JSON keys; the report lists them as the file writes them.
                first = _first_keys(self._files[table][0])
                names = [n for n in first if n in names] + [n for n in names if n not in first]
            found = self._columns[table] = tuple(n for n in names if n != "_corrupt_record")
        return found

    def _unreadable(self, table: str) -> SourceError:
        paths = self._files[table]
        p = paths[0] if len(paths) == 1 else paths[0].parent
        what = {"csv": "CSV", "parquet": "Parquet", "json": "JSON lines"}[file_kind(paths)]
        return SourceError(f"{p.name} cannot be read as {what}", hint="check the file's format")

    def frame(self, table: str, columns: Sequence[str]) -> DataFrame:
        """``columns`` of a table, with each row's place (``POSITION``)."""
        from pyspark.sql import functions as F

        df = self._read(table)
        return df.select(
            *(F.col(_quoted(c)) for c in columns),
            F.col("_metadata.file_path").alias(FILE),
            F.col("_metadata.file_block_start").alias(BLOCK),
            F.monotonically_increasing_id().alias(ROW),
        )

    def tables(self) -> list[TableInfo]:
        return [TableInfo(name, self.columns(name)) for name in self._files]

    def batches(
        self, table: str, columns: Sequence[str], size: int, limit: int | None = None
    ) -> Iterator[Batch]:
        """Batches on the driver, for steps 1 and 2: the first ``limit`` rows in the files'
        order (the sample), or every row of a few key columns (to infer links)."""
        try:
            df = self.frame(table, columns)
            if limit is not None:
                arrow = df.orderBy(*POSITION).limit(limit).toArrow()
                for start in range(0, arrow.num_rows, size):
                    part = arrow.slice(start, size)
                    yield {c: part.column(c).to_pylist() for c in columns}
                return
            batch: Batch = {c: [] for c in columns}
            for row in df.select(*(_quoted(c) for c in columns)).toLocalIterator():
                for c, v in zip(columns, row, strict=True):
                    batch[c].append(v)
                if len(batch[columns[0]]) >= size:
                    yield batch
                    batch = {c: [] for c in columns}
            if batch[columns[0]]:
                yield batch
        except SourceError:
            raise
        except Exception:
            raise _job_failed(f"the table {table}") from None

    def close(self) -> None:
        """The session is the caller's to stop."""


def _quoted(column: str) -> str:
    return "`" + column.replace("`", "``") + "`"


def _first_keys(path: Path) -> list[str]:
    import json

    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.strip():
                try:
                    first = json.loads(line)
                except ValueError:
                    return []
                return list(first) if isinstance(first, dict) else []
    return []


def _job_failed(what: str) -> SourceError:
    """A failed Spark job as one line (``what``: what it was reading). Spark's own message
    may quote a malformed record, so it is not repeated."""
    return SourceError(
        f"the Spark job failed reading {what}",
        hint="check its files; `domicile scan` without --engine names a file it cannot read",
    )


def _encode(piece: Piece) -> str:
    return "\t".join(piece)


def _decode(piece: str) -> Piece:
    return tuple(piece.split("\t"))


# --- what the tasks run -------------------------------------------------------------------


class _Rows:
    """What a task needs to name each row's subject: the table's key and link, and the
    first row number of each split (for tables without a key, whose rows are named by
    their number)."""

    def __init__(
        self,
        plan: Survey,
        name: str,
        offsets: dict[tuple[str, int], tuple[int, int]] | None,
    ) -> None:
        self.name = name
        self.key = plan.tables[name].key
        self.subject_table = plan.is_subject_table(name)
        link = None if self.subject_table else plan.parent[name]
        self.link_columns = link.columns if link else ()
        self.up = link.target if link else ""
        self.up_is_root = bool(link) and plan.is_subject_table(self.up)
        self.offsets = offsets or {}

    def walk(self, batch: Batch, n: int) -> Iterator[tuple[int, str | None, str | None, str]]:
        """Each row of ``batch`` that belongs to a subject: (index, subject id or None when
        a parent row names it, the parent row's key, row reference)."""
        keys = list(zip(*(batch[c] for c in self.key), strict=True)) if self.key else None
        targets = link_keys(batch, self.link_columns, n) if self.link_columns else None
        for i in range(n):
            if keys:
                ref = row_key(keys[i])
            else:
                file, block = batch[FILE][i], batch[BLOCK][i]
                first, start = self.offsets[(file, block)]
                ref = f"#{first + batch[ROW][i] - start}"
            if targets is None:
                yield i, f"{self.name}:{ref}", None, ref
                continue
            target = targets[i]
            if target is None:
                continue
            if self.up_is_root:
                yield i, f"{self.up}:{target}", None, ref
            else:
                yield i, None, target, ref


def _arrow(columns: dict[str, list[Any]], schema: Any) -> Any:
    import pyarrow as pa

    return pa.RecordBatch.from_pydict(columns, schema=schema)


def _spark_schema(ddl: str) -> Any:
    """The Arrow schema of a DDL string of this module (nullable fields)."""
    import pyarrow as pa

    types = {
        "int": pa.int32(),
        "string": pa.string(),
        "long": pa.int64(),
        "binary": pa.binary(),
        "array<string>": pa.list_(pa.string()),
    }
    fields = []
    for part in ddl.split(", "):
        name, kind = part.split(" ", 1)
        fields.append(pa.field(name, types[kind]))
    return pa.schema(fields)


class _Task:
    """What a task runs over the partitions of one table: the fields of each row that
    belongs to a subject (``row``; None leaves the row out), then one last row with how
    many rows the task read, its resolver answers per piece, and ``tail``."""

    ddl = ""

    def __init__(self, rows: _Rows) -> None:
        self.rows = rows

    def row(
        self, batch: Batch, i: int, sid: str | None, book: EvidenceBook
    ) -> dict[str, Any] | None:
        raise NotImplementedError

    def tail(self) -> dict[str, Any]:
        return {}

    def __call__(self, batches: Iterable[Any]) -> Iterator[Any]:
        try:
            yield from self._run(batches)
        except Exception as exc:
            # Spark logs a failed task's error on the executor: its message could quote a
            # value, so only its type leaves the task.
            raise RuntimeError(f"a task of domicile scan failed: {type(exc).__name__}") from None

    def _run(self, batches: Iterable[Any]) -> Iterator[Any]:
        schema = _spark_schema(self.ddl)
        book = EvidenceBook()
        count = 0
        for arrow in batches:
            batch: Batch = arrow.to_pydict()
            n = arrow.num_rows
            count += n
            out: dict[str, list[Any]] = {f.name: [] for f in schema}
            for i, sid, target, ref in self.rows.walk(batch, n):
                fields = self.row(batch, i, sid, book)
                if fields is None:
                    continue
                place = {"what": 0, "sid": sid, "target": target, "ref": ref}
                for c in POSITION:
                    place[c] = batch[c][i]
                for f in schema:
                    out[f.name].append(fields[f.name] if f.name in fields else place.get(f.name))
            if out["what"]:
                yield _arrow(out, schema)
        last: dict[str, Any] = {f.name: None for f in schema}
        last.update(what=1, count=count, book=pickle.dumps(book.answers()), **self.tail())
        yield _arrow({k: [v] for k, v in last.items()}, schema)


class _FullPass(_Task):
    """Each row's pieces of evidence, and the columns of its phone numbers without a
    country code (``later``; in the last row, those of rows of a known subject, and
    ``pending``, those of rows whose subject a join names)."""

    ddl = _ROWS

    def __init__(self, rows: _Rows, evidence: dict[str, str], counted: bool) -> None:
        super().__init__(rows)
        self.evidence = evidence if counted else {}
        self.sure: set[str] = set()
        self.pending: set[str] = set()

    def row(self, batch: Batch, i: int, sid: str | None, book: EvidenceBook) -> dict[str, Any]:
        pieces: set[str] = set()
        later: list[str] = []
        for column, kind in self.evidence.items():
            value = text(batch[column][i])
            if value is None:
                continue
            piece = book.piece(kind, value)
            if piece is not None:
                pieces.add(_encode(piece))
            elif kind == "phone" and national_shape(value) is not None:
                later.append(column)
        (self.sure if sid is not None else self.pending).update(later)
        return {"pieces": sorted(pieces), "later": later}

    def tail(self) -> dict[str, Any]:
        return {"later": sorted(self.sure), "pending": sorted(self.pending)}


class _Readings(_Task):
    """The second pass: each phone number without a country code, read under every
    country that may fix it (``candidates``, per column); gives ``INDEX<TAB>REGION<TAB>
    COUNTRY`` for each reading that is a valid number, never the number."""

    ddl = _READINGS

    def __init__(
        self, rows: _Rows, columns: Sequence[str], candidates: dict[str, list[str]]
    ) -> None:
        super().__init__(rows)
        self.columns = columns
        self.candidates = candidates

    def row(
        self, batch: Batch, i: int, sid: str | None, book: EvidenceBook
    ) -> dict[str, Any] | None:
        readings: list[str] = []
        for index, column in enumerate(self.columns):
            value = text(batch[column][i])
            if value is None or national_shape(value) is None:
                continue
            for region in self.candidates[column]:
                parsed = national_phone(value, region)
                if parsed is None:
                    continue
                cc = phonenumbers.region_code_for_number(parsed)
                if cc and cc != "001":
                    readings.append(f"{index}\t{region}\t{cc}")
                    book.national_phone(value, [region])  # the piece's answer
        return {"readings": readings} if readings else None


# --- the driver ---------------------------------------------------------------------------


@dataclass
class _Done:
    rows: Any  # the DataFrame of rows that belong to a subject
    read: int
    values: int
    later: set[str]
    pending: set[str]


class _Job:
    """Step 3 as Spark jobs, one table at a time, parents before children."""

    def __init__(self, source: SparkSource, plan: Survey, located_in: str) -> None:
        self.source = source
        self.plan = plan
        self.located_in = located_in
        self.book = EvidenceBook()
        self.owners: dict[str, DataFrame] = {}  # a table in between: its keys' subjects
        self.kept: list[DataFrame] = []  # persisted, unpersisted at the end
        self.rows = 0
        self.values = 0

    def _keep(self, df: DataFrame) -> DataFrame:
        from pyspark import StorageLevel

        df = df.persist(StorageLevel.MEMORY_AND_DISK)
        self.kept.append(df)
        return df

    def release(self) -> None:
        for df in self.kept:
            df.unpersist()

    def _offsets(self, name: str, df: DataFrame) -> dict[tuple[str, int], tuple[int, int]]:
        """For a table without a key: each split's first row number and first row id (rows
        are named ``#N`` by their number in the table, counted from 1)."""
        from pyspark.sql import functions as F

        if self.plan.tables[name].key:
            return {}
        splits = (
            df.groupBy(FILE, BLOCK)
            .agg(F.count(F.lit(1)).alias("n"), F.min(ROW).alias("start"))
            .orderBy(FILE, BLOCK)
            .collect()
        )
        out, first = {}, 1
        for s in splits:
            out[(s[FILE], s[BLOCK])] = (first, s["start"])
            first += s["n"]
        return out

    def _run(self, name: str, columns: Sequence[str], make: Callable[[_Rows], _Task]) -> _Done:
        """A pass over one table: its rows that belong to a subject, each with its subject
        id (through the parent's owners where a table in between names it), persisted, and
        what the tasks' last rows say. Learns the tasks' resolver answers."""
        from pyspark.sql import functions as F

        wanted = self.plan.wanted(name, columns)
        df = self.source.frame(name, wanted)
        rows = _Rows(self.plan, name, self._offsets(name, df))
        task = make(rows)
        out = self._keep(df.mapInArrow(task, task.ddl))
        tails = out.where(F.col("what") == 1).collect()
        done = _Done(None, 0, 0, set(), set())
        for tail in tails:
            fields = tail.asDict()
            done.read += fields["count"]
            self.book.learn(pickle.loads(fields["book"]))
            done.later.update(fields.get("later") or ())
            done.pending.update(fields.get("pending") or ())
        done.values = done.read * len(wanted)
        data = out.where(F.col("what") == 0).drop("what", "count", "book", "pending")
        if not rows.subject_table and not rows.up_is_root:
            owners = self.owners[rows.up]
            data = data.join(owners, data["target"] == owners["key"], "inner").select(
                F.col("owner").alias("sid"), *(c for c in data.columns if c != "sid")
            )
        done.rows = self._keep(data.where(F.col("sid").isNotNull()))
        return done

    def gather(self, progress: Progress | None) -> tuple[list[DataFrame], dict[str, list[str]]]:
        """The full pass over every table; returns the rows that count (of tables holding
        personal data) and, per table, its columns of phone numbers without a country code."""
        from pyspark.sql import functions as F

        plan = self.plan
        needed_as_parent = plan.needed_as_parent
        counted_rows: list[DataFrame] = []
        later: dict[str, list[str]] = {}
        for index, name in enumerate(plan.order):
            evidence = plan.evidence_columns(name)
            counted = bool(plan.tables[name].personal)
            try:
                task = partial(_FullPass, evidence=evidence, counted=counted)
                done = self._run(name, list(evidence), task)
                found, read, values = done.rows, done.read, done.values
                if name in needed_as_parent and not plan.is_subject_table(name):
                    # A later row with the same key names the subject, as in the ledger.
                    self.owners[name] = self._keep(
                        found.groupBy(F.col("ref").alias("key")).agg(
                            F.max_by("sid", F.struct(*POSITION)).alias("owner")
                        )
                    )
                if counted:
                    counted_rows.append(found.withColumn("t", F.lit(index)))
                    columns = set(done.later)
                    if done.pending - columns:
                        # Numbers in rows whose subject a join named: count the rows the
                        # join kept, as the one-process scan does.
                        columns |= {
                            r[0] for r in found.select(F.explode("later")).distinct().collect()
                        }
                    if columns:
                        later[name] = sorted(columns, key=list(evidence).index)
            except SourceError:
                raise
            except Exception:
                raise _job_failed(f"the table {name}") from None
            self.rows += read
            self.values += values
            plan.tables[name].rows = read
            if progress:
                progress(name, read)
        return counted_rows, later

    def readings(
        self, counted_rows: list[DataFrame], later: dict[str, list[str]]
    ) -> DataFrame | None:
        """The second pass: the pieces that phone numbers without a country code give,
        read under the countries each subject's other evidence names. (sid, pieces)."""
        from pyspark.sql import functions as F

        if not later:
            return None
        plan, book = self.plan, self.book
        fixing = {p: sorted(book.fixing([p])) for p in book.answers()}
        everywhere = sorted({cc for ccs in fixing.values() for cc in ccs})
        # Each subject's fixing countries, from its pieces (no value involved).
        pairs = [(_encode(p), cc) for p, ccs in fixing.items() for cc in ccs]
        spark = self.source.spark
        fixing_df = spark.createDataFrame(pairs or [("", "")], "piece string, cc string")
        held = _union(counted_rows).select("sid", F.explode("pieces").alias("piece"))
        fixed = (
            held.join(F.broadcast(fixing_df), "piece")
            .groupBy("sid")
            .agg(F.collect_set("cc").alias("fixed"))
        )
        found: list[DataFrame] = []
        for name, columns in later.items():
            candidates = {
                c: sorted(phone_regions(plan, name, c, self.located_in, everywhere))
                for c in columns
            }
            try:
                task = partial(_Readings, columns=columns, candidates=candidates)
                read = self._run(name, columns, task).rows
            except SourceError:
                raise
            except Exception:
                raise _job_failed(f"the table {name}") from None
            choose = _choose(plan, name, columns, self.located_in)
            picked = (
                read.join(fixed, "sid", "left")
                .select("sid", "readings", "fixed")
                .mapInArrow(choose, "sid string, pieces array<string>")
            )
            found.append(picked)
        return _union(found)

    def entries(
        self, counted_rows: list[DataFrame], national: DataFrame | None
    ) -> Iterator[tuple[str, Entry]]:
        """Every subject, in the order the one-process scan meets them, with what its rows
        gave: rows and the first row references per table, and its pieces."""
        from pyspark.sql import functions as F

        if not counted_rows:
            return
        order = self.plan.order
        per_table = (
            _union(counted_rows)
            .groupBy("sid", "t")
            .agg(
                F.count(F.lit(1)).alias("n"),
                F.min(F.struct("t", *POSITION)).alias("first"),
                F.slice(
                    F.array_sort(F.collect_list(F.struct(*POSITION, "ref"))), 1, REFS_PER_SUBJECT
                ).alias("refs"),
                F.flatten(F.collect_list("pieces")).alias("pieces"),
            )
        )
        subjects = per_table.groupBy("sid").agg(
            F.min("first").alias("first"),
            F.collect_list(F.struct("t", "n", F.col("refs.ref").alias("refs"))).alias("tables"),
            F.array_distinct(F.flatten(F.collect_list("pieces"))).alias("pieces"),
        )
        if national is not None:
            more = national.groupBy("sid").agg(F.flatten(F.collect_list("pieces")).alias("more"))
            subjects = subjects.join(more, "sid", "left").select(
                "sid", "first", "tables",
                F.array_distinct(
                    F.concat("pieces", F.coalesce("more", F.array().cast("array<string>")))
                ).alias("pieces"),
            )  # fmt: skip
        try:
            for row in subjects.orderBy("first").toLocalIterator():
                e = Entry(pieces={_decode(p) for p in row["pieces"]})
                for part in sorted(row["tables"], key=lambda p: p["t"]):
                    table = order[part["t"]]
                    e.rows[table] = part["n"]
                    e.refs[table] = list(part["refs"])
                yield row["sid"], e
        except Exception:
            raise _job_failed("the subjects' evidence") from None


def _choose(
    plan: Survey, name: str, columns: Sequence[str], located_in: str
) -> Callable[[Iterable[Any]], Iterator[Any]]:
    """Picks, for each number, the reading under the countries its subject's evidence
    fixes: the one country it is a valid number of, or none (``national_phone_country``)."""
    schema = _spark_schema("sid string, pieces array<string>")

    def task(batches: Iterable[Any]) -> Iterator[Any]:
        for arrow in batches:
            batch = arrow.to_pydict()
            sids: list[str] = []
            pieces: list[list[str]] = []
            for sid, readings, fixed in zip(
                batch["sid"], batch["readings"], batch["fixed"], strict=True
            ):
                by_value: dict[int, list[tuple[str, str]]] = {}
                for reading in readings:
                    index, region, cc = reading.split("\t")
                    by_value.setdefault(int(index), []).append((region, cc))
                found: set[str] = set()
                for index, options in by_value.items():
                    regions = phone_regions(plan, name, columns[index], located_in, fixed or ())
                    ccs = {cc for region, cc in options if region in regions}
                    if len(ccs) == 1:
                        found.add(_encode(("phone", ccs.pop())))
                if found:
                    sids.append(sid)
                    pieces.append(sorted(found))
            if sids:
                yield _arrow({"sid": sids, "pieces": pieces}, schema)

    return task


def _union(frames: Sequence[DataFrame]) -> DataFrame:
    out = frames[0]
    for df in frames[1:]:
        out = out.unionByName(df)
    return out


def gather(source: SparkSource, located_in: str, progress: Progress | None = None) -> Gather:
    """Step 3 of ``scan.scan`` (its ``gather``) as Spark jobs over ``source``'s files."""

    @contextmanager
    def on_spark(plan: Survey) -> Iterator[Gathered]:
        job = _Job(source, plan, located_in)
        try:
            counted_rows, later = job.gather(progress)
            national = job.readings(counted_rows, later)
            yield Gathered(job.entries(counted_rows, national), job.book, job.rows, job.values)
        finally:
            job.release()

    return on_spark


__all__ = ["FILE", "POSITION", "SparkSource", "gather", "require_extra", "session"]
