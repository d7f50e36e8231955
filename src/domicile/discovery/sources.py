"""Sources a scan reads: databases through SQLAlchemy, files through DuckDB. Read only.

A source lists its tables (columns, primary key, declared foreign keys) and yields
columnar batches (column name to a list of values). Databases are opened so that they
cannot be written through the connection: SQLite read-only (``mode=ro`` and
``query_only``), PostgreSQL with read-only transactions by default, MariaDB/MySQL with a
read-only session. Files are read by an in-memory DuckDB.

Errors name the backend, host and database or the file, never a user name or password,
and never a driver's message (which may quote the URL or a value).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from domicile.errors import DomicileError, SourceError, SourceUnavailable
from domicile.extras import require

FILE_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".jsonl": "json",
    ".ndjson": "json",
}


def require_extra(what: str = "domicile scan") -> None:
    """Fail in one line when the ``scan`` extra is not installed."""
    require("scan", what)


@dataclass(frozen=True)
class ForeignKey:
    columns: tuple[str, ...]
    table: str
    target: tuple[str, ...]


@dataclass(frozen=True)
class TableInfo:
    name: str
    columns: tuple[str, ...]
    primary_key: tuple[str, ...] = ()
    foreign_keys: tuple[ForeignKey, ...] = ()


Batch = dict[str, list[Any]]


class Source(Protocol):
    description: str
    files: bool  # no declared keys: links must be inferred

    def tables(self) -> list[TableInfo]: ...

    def batches(
        self, table: str, columns: Sequence[str], size: int, limit: int | None = None
    ) -> Iterator[Batch]: ...

    def close(self) -> None: ...


def open_source(spec: str) -> Source:
    """The source named by ``spec``: a SQLAlchemy URL, or a file or folder of files."""
    require_extra()
    if "://" in spec or spec.startswith("sqlite:"):
        return DatabaseSource(spec)
    return FileSource(Path(spec))


# --- databases ---------------------------------------------------------------------------

_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mysql+pymysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
    "mariadb+pymysql": "mariadb+pymysql",
    "sqlite": "sqlite",
}


class DatabaseSource:
    files = False

    def __init__(self, spec: str, *, writable: bool = False) -> None:
        """Read only, unless ``writable`` (``domicile migrate run`` rewrites rows it moved,
        in transactions of its own; nothing else opens a source for writing)."""
        import sqlalchemy as sa
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(spec)
        except (ArgumentError, ValueError):
            raise SourceError(
                "the source is not a database URL",
                hint="write e.g. postgresql://user@host/db, mysql://user@host/db, sqlite:///file.db, or a path to files",
            ) from None
        driver = _DRIVERS.get(url.drivername)
        if driver is None:
            raise SourceError(
                f"unsupported database {url.drivername!r}",
                hint="scan reads postgresql://, mysql:// or mariadb://, and sqlite:/// URLs",
            )
        url = url.set(drivername=driver)
        backend = driver.partition("+")[0]
        if backend == "sqlite":
            path = url.database or ""
            self.description = f"sqlite {Path(path).name}"
            if not path or not Path(path).is_file():
                raise SourceError(
                    f"no SQLite file at {path or '(none)'}",
                    hint="give sqlite:///PATH to an existing file",
                )
            if not os.access(path, os.R_OK):
                raise SourceError(
                    f"cannot read the SQLite file {path}", hint="check its permissions"
                )

            mode = "rw" if writable else "ro"

            def connect() -> sqlite3.Connection:
                # Writable: transactions are begun explicitly (``BEGIN IMMEDIATE``), not by
                # the driver before the first write, so a batch's reads are in them too.
                conn = sqlite3.connect(
                    f"file:{path}?mode={mode}", uri=True, check_same_thread=False, timeout=30,
                    isolation_level=None if writable else "DEFERRED",
                )  # fmt: skip
                # Text in another encoding than UTF-8 is read, not refused: it fails
                # every recognizer instead of stopping the scan.
                conn.text_factory = lambda b: b.decode("utf-8", "replace")
                if not writable:
                    conn.execute("PRAGMA query_only = ON")
                return conn

            self.engine = sa.create_engine("sqlite://", creator=connect, poolclass=sa.pool.NullPool)
        else:
            where = f"{url.host or 'localhost'}:{url.port or ''}".rstrip(":")
            self.description = f"{backend} {where}/{url.database or ''}"
            args: dict[str, Any] = {"connect_timeout": 5}
            if backend == "postgresql":
                if not writable:
                    args["options"] = "-c default_transaction_read_only=on"
            else:
                if not writable:
                    args["init_command"] = "SET SESSION TRANSACTION READ ONLY"
                args["charset"] = "utf8mb4"
            self.engine = sa.create_engine(url, connect_args=args, poolclass=sa.pool.NullPool)
        self.backend = backend
        self.url = url  # with its driver; never printed (it may hold a password)
        self._conn = self._connect()

    def _connect(self) -> Any:
        from sqlalchemy.exc import DBAPIError

        try:
            return self.engine.connect()
        except DBAPIError as exc:
            raise self._translate(exc) from None

    def _translate(self, exc: Exception) -> DomicileError:
        text = str(getattr(exc, "orig", exc)).lower()
        if any(w in text for w in ("password", "access denied", "authentication", "role")):
            return SourceError(
                f"the {self.description} source refused the credentials",
                hint="check the user and password in the URL",
            )
        if "unknown database" in text or ("database" in text and "does not exist" in text):
            return SourceError(
                f"the {self.description} source has no such database",
                hint="check the database name in the URL",
            )
        if "file is not a database" in text or "malformed" in text:
            return SourceError(
                f"{self.description} is not a readable SQLite database",
                hint="give a SQLite database file",
            )
        return SourceUnavailable(
            f"the {self.description} source does not answer",
            hint="check that the server is up and reachable, then retry",
        )

    @property
    def connection(self) -> Any:
        """The SQLAlchemy connection (``domicile migrate`` runs its transactions on it)."""
        return self._conn

    def translate(self, exc: Exception) -> DomicileError:
        """A driver's error as domicile's, without the driver's words."""
        return self._translate(exc)

    def tables(self) -> list[TableInfo]:
        import sqlalchemy as sa
        from sqlalchemy.exc import DBAPIError

        try:
            insp = sa.inspect(self._conn)
            out = []
            for name in insp.get_table_names():
                cols = tuple(c["name"] for c in insp.get_columns(name))
                pk = tuple(insp.get_pk_constraint(name).get("constrained_columns") or ())
                fks = tuple(
                    ForeignKey(
                        tuple(fk["constrained_columns"]),
                        fk["referred_table"],
                        tuple(fk["referred_columns"]),
                    )
                    for fk in insp.get_foreign_keys(name)
                )
                out.append(TableInfo(name, cols, pk, fks))
            return out
        except DBAPIError as exc:
            raise self._translate(exc) from None

    def batches(
        self, table: str, columns: Sequence[str], size: int, limit: int | None = None
    ) -> Iterator[Batch]:
        import sqlalchemy as sa
        from sqlalchemy.exc import DBAPIError

        stmt: Any = sa.select(*(sa.column(c) for c in columns)).select_from(sa.table(table))
        if limit is not None:
            stmt = stmt.limit(limit)
        try:
            try:
                result = self._conn.execution_options(stream_results=True, yield_per=size).execute(
                    stmt
                )
                for part in result.partitions(size):
                    if part:
                        yield {
                            c: list(v)
                            for c, v in zip(columns, zip(*part, strict=True), strict=True)
                        }
            finally:
                # The read-only transaction is rolled back: a scan never commits anything.
                self._conn.rollback()
        except DBAPIError as exc:
            raise self._translate(exc) from None

    def close(self) -> None:
        self._conn.close()
        self.engine.dispose()


# --- files -------------------------------------------------------------------------------


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def file_tables(path: Path) -> dict[str, list[Path]]:
    """The tables of a file or folder: each file, or each folder of parts, is one table
    (named by the file's stem or the folder's name), with its files in name order."""
    if not path.exists():
        raise SourceError(
            f"no file or folder at {path}",
            hint="give a path to CSV, Parquet or JSON-lines files, or a database URL",
        )
    found: list[tuple[str, list[Path]]] = []  # table name, its files
    if path.is_dir():
        for p in sorted(path.iterdir()):
            if p.suffix.lower() in FILE_SUFFIXES:
                found.append((p.stem, [p]))
            elif p.is_dir():
                # A folder of parts (part-0.parquet, ...) is one table, as Spark and
                # DuckDB write them.
                parts = sorted(q for q in p.iterdir() if q.suffix.lower() in FILE_SUFFIXES)
                kinds = {FILE_SUFFIXES[q.suffix.lower()] for q in parts}
                if len(kinds) > 1:
                    raise SourceError(
                        f"the folder {p.name} mixes file formats",
                        hint="keep one format per table folder",
                    )
                if parts:
                    found.append((p.name, parts))
        if not found:
            raise SourceError(
                f"no CSV, Parquet or JSON-lines files in {path}",
                hint="file names must end in .csv, .tsv, .parquet, .jsonl or .ndjson",
            )
    else:
        if path.suffix.lower() not in FILE_SUFFIXES:
            raise SourceError(
                f"{path.name} is not a CSV, Parquet or JSON-lines file",
                hint="file names must end in .csv, .tsv, .parquet, .jsonl or .ndjson",
            )
        found = [(path.stem, [path])]
    files: dict[str, list[Path]] = {}
    for name, paths in found:
        for p in paths:
            try:
                with p.open("rb") as fh:
                    fh.read(1)
            except OSError:
                raise SourceError(f"cannot read {p}", hint="check the file's permissions") from None
            if p.stat().st_size == 0:
                raise SourceError(
                    f"{p.name} is empty", hint="export the table again or leave the file out"
                )
        while name in files:
            name += "_"
        files[name] = paths
    return files


def file_kind(paths: Sequence[Path]) -> str:
    """``csv``, ``parquet`` or ``json``: the format of a table's files."""
    return FILE_SUFFIXES[paths[0].suffix.lower()]


class FileSource:
    files = True

    def __init__(self, path: Path) -> None:
        import duckdb

        self.description = f"files {path.name}"
        self._files = file_tables(path)
        self._db = duckdb.connect(":memory:")
        self._db.execute("SET enable_progress_bar = false")

    def _relation(self, table: str) -> str:
        paths = self._files[table]
        kind = file_kind(paths)
        files = "[" + ", ".join(_literal(str(p)) for p in paths) + "]"
        if kind == "csv":
            # Every column as text: identifiers keep their leading zeros.
            return f"read_csv({files}, all_varchar = true, header = true)"
        if kind == "parquet":
            return f"read_parquet({files})"
        return f"read_json({files}, format = 'newline_delimited')"

    def _translate(self, table: str, exc: Exception) -> SourceError:
        p = self._files[table][0] if len(self._files[table]) == 1 else self._files[table][0].parent
        text = str(exc).lower()
        if "unicode" in text or "utf-8" in text or "utf8" in text or "encoding" in text:
            return SourceError(
                f"{p.name} is not UTF-8 text", hint="convert it to UTF-8 and scan again"
            )
        if "empty" in text or "no columns" in text or "0 columns" in text:
            return SourceError(
                f"{p.name} holds no data", hint="export the table again or leave the file out"
            )
        what = {"csv": "CSV", "parquet": "Parquet", "json": "JSON lines"}[
            FILE_SUFFIXES[self._files[table][0].suffix.lower()]
        ]
        return SourceError(f"{p.name} cannot be read as {what}", hint="check the file's format")

    def tables(self) -> list[TableInfo]:
        import duckdb

        out = []
        for name in self._files:
            try:
                desc = self._db.execute(f"SELECT * FROM {self._relation(name)} LIMIT 0").description
            except duckdb.Error as exc:
                raise self._translate(name, exc) from None
            out.append(TableInfo(name, tuple(d[0] for d in desc or ())))
        return out

    def batches(
        self, table: str, columns: Sequence[str], size: int, limit: int | None = None
    ) -> Iterator[Batch]:
        import duckdb

        cols = ", ".join(_ident(c) for c in columns)
        sql = f"SELECT {cols} FROM {self._relation(table)}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        try:
            relation: Any = self._db.sql(sql)
            # DuckDB 2 reads Arrow batches with to_arrow_reader; 1.x with record_batch.
            if hasattr(relation, "to_arrow_reader"):
                reader = relation.to_arrow_reader(size)
            else:
                reader = relation.record_batch(size)
            for batch in reader:
                if batch.num_rows:
                    yield {c: batch.column(i).to_pylist() for i, c in enumerate(columns)}
        except duckdb.Error as exc:
            raise self._translate(table, exc) from None

    def close(self) -> None:
        self._db.close()
