"""The scan's per-subject ledger, on disk: what a subject's rows gave, kept out of memory.

A scan of a source with millions of subjects cannot hold every subject's evidence, row
counts and row references in memory (nor the map from the keys of tables in between,
such as orders, to their subjects). The ledger keeps them in a temporary SQLite file,
written batch by batch (a batch's subjects are gathered in memory, then added in one
transaction) and read back once, subject by subject in the order they were first met, so
the report is the same as if it had all been held in memory.

What it holds is what the report holds: subject ids (table and primary key, never a
personal value: keys that hold personal data are not used), table names, row keys and
pieces of evidence (small keys such as ``("phone", "DE")``, by number). The file is made
in a folder only the scanning user can read and is deleted when the scan ends.

A scan killed outright (SIGKILL, a crash, the machine's OOM killer) cannot delete its
folder. Each ledger holds an exclusive lock (``flock``) on a file in its folder for as
long as it lives, and the kernel drops the lock when the process ends, however it ends.
So the next scan removes every ledger folder of its user in the temporary folder whose
lock it can take: their owners are gone. A process id would not do: ids are reused, and
a scan in another PID namespace (a container sharing ``/tmp``) has an id that means
nothing here; a lock is held or not, wherever its holder runs.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from domicile.discovery.evidence import Piece
from domicile.files import try_lock

# Row references kept per subject and table (fewer than 8: see ``Ledger.add``).
REFS_PER_SUBJECT = 3
# SQLite's page cache for the ledger, in KiB: what it may hold in memory.
CACHE_KIB = 32 * 1024
_IN_CHUNK = 500  # parameters per IN (...) lookup
PREFIX = "domicile-scan-"
# A ledger's folder is made under this name, locked, then renamed to PREFIX: a folder named
# PREFIX... always has its lock file, held from the start.
MAKING = ".domicile-scan-making-"
LOCK = "owner.lock"
# A folder without its lock file (killed while being made) is removed once this old.
UNLOCKED_GRACE = 3600.0

_SCHEMA = """
CREATE TABLE subject (sid TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE piece (sid TEXT NOT NULL, piece INTEGER NOT NULL,
    PRIMARY KEY (sid, piece)) WITHOUT ROWID;
CREATE TABLE rowcount (sid TEXT NOT NULL, tbl INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (sid, tbl)) WITHOUT ROWID;
CREATE TABLE ref (sid TEXT NOT NULL, tbl INTEGER NOT NULL, seq INTEGER NOT NULL,
    ref TEXT NOT NULL, PRIMARY KEY (sid, tbl, seq)) WITHOUT ROWID;
CREATE TABLE owner (tbl INTEGER NOT NULL, key TEXT NOT NULL, sid TEXT NOT NULL,
    PRIMARY KEY (tbl, key)) WITHOUT ROWID;
CREATE TABLE named (finding INTEGER NOT NULL, seq INTEGER NOT NULL, sid TEXT NOT NULL,
    PRIMARY KEY (finding, seq)) WITHOUT ROWID;
"""


class Share:
    """One subject's share of one batch of one table."""

    __slots__ = ("pieces", "refs", "rows")

    def __init__(self) -> None:
        self.rows = 0
        self.refs: list[str] = []  # up to REFS_PER_SUBJECT
        self.pieces: set[Piece] = set()


@dataclass
class Entry:
    """Everything a subject's rows gave, read back."""

    pieces: set[Piece] = field(default_factory=set)
    rows: Counter[str] = field(default_factory=Counter)  # table to rows
    refs: dict[str, list[str]] = field(default_factory=dict)  # table to a few row keys


def remove_stale(parent: Path | None = None) -> list[Path]:
    """Remove the ledger folders in ``parent`` (the temporary folder) that are the
    current user's and whose owner is gone (their lock is free); the removed ones.
    Without locks across processes (Windows), none: the OS's cleaning of its temporary
    folder is left to do it."""
    parent = Path(parent or tempfile.gettempdir())
    removed: list[Path] = []
    if os.name != "posix":  # no flock: try_lock would take every folder's lock
        return removed
    try:
        entries = list(parent.iterdir())
    except OSError:
        return removed
    for folder in entries:
        if not folder.name.startswith((PREFIX, MAKING)):
            continue
        try:
            st = folder.lstat()  # never through a link
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            continue
        lock = folder / LOCK
        fd: int | None = None
        try:
            if lock.exists():
                fd = try_lock(lock)
                if fd is None:
                    continue  # its scan is running
            elif time.time() - st.st_mtime < UNLOCKED_GRACE:
                continue
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        except OSError:
            continue
        finally:
            if fd is not None:
                os.close(fd)
    return removed


class Ledger:
    def __init__(self) -> None:
        remove_stale()
        making = Path(tempfile.mkdtemp(prefix=MAKING))
        self._lock_fd = try_lock(making / LOCK)
        self._dir = making.with_name(PREFIX + making.name.removeprefix(MAKING))
        making.rename(self._dir)
        self._db = sqlite3.connect(self._dir / "ledger.sqlite", isolation_level=None)
        for pragma in ("journal_mode = OFF", "synchronous = OFF", "temp_store = FILE"):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        self._db.executescript(_SCHEMA)
        self._pieces: list[Piece] = []
        self._piece_ids: dict[Piece, int] = {}
        self._tables: list[str] = []  # in the order they were first written
        self._table_ids: dict[str, int] = {}
        self._seq = 0
        self._named = 0
        self.subjects = 0

    def close(self) -> None:
        self._db.close()
        shutil.rmtree(self._dir, ignore_errors=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # after the folder is gone: no one removes it twice
            self._lock_fd = None

    def _piece(self, p: Piece) -> int:
        i = self._piece_ids.get(p)
        if i is None:
            i = self._piece_ids[p] = len(self._pieces)
            self._pieces.append(p)
        return i

    def _table(self, name: str) -> int:
        i = self._table_ids.get(name)
        if i is None:
            i = self._table_ids[name] = len(self._tables)
            self._tables.append(name)
        return i

    def add(self, table: str, batch: dict[str, Share]) -> None:
        """Add one batch of ``table``: its subjects' shares, in the order they were met."""
        if not batch:
            return
        tbl = self._table(table)
        subjects: list[tuple[str, int]] = []
        pieces: list[tuple[str, int]] = []
        counts: list[tuple[str, int, int]] = []
        refs: list[tuple[str, int, int, str]] = []
        seq = self._seq
        for sid, e in batch.items():
            seq += 1
            subjects.append((sid, seq))
            for p in e.pieces:
                pieces.append((sid, self._piece(p)))
            counts.append((sid, tbl, e.rows))
            for j, r in enumerate(e.refs):
                refs.append((sid, tbl, seq * 8 + j, r))
        self._seq = seq
        db = self._db
        db.execute("BEGIN")
        before = db.total_changes
        db.executemany("INSERT OR IGNORE INTO subject VALUES (?, ?)", subjects)
        self.subjects += db.total_changes - before
        db.executemany("INSERT OR IGNORE INTO piece VALUES (?, ?)", pieces)
        db.executemany(
            "INSERT INTO rowcount VALUES (?, ?, ?) "
            "ON CONFLICT (sid, tbl) DO UPDATE SET n = n + excluded.n",
            counts,
        )
        db.executemany("INSERT INTO ref VALUES (?, ?, ?, ?)", refs)
        db.execute("COMMIT")

    def add_pieces(self, found: Iterable[tuple[str, Piece]]) -> None:
        rows = [(sid, self._piece(p)) for sid, p in found]
        if rows:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR IGNORE INTO piece VALUES (?, ?)", rows)
            self._db.execute("COMMIT")

    def pieces_of(self, sids: Sequence[str]) -> dict[str, set[Piece]]:
        out: dict[str, set[Piece]] = {}
        unique = list(dict.fromkeys(sids))
        for i in range(0, len(unique), _IN_CHUNK):
            part = unique[i : i + _IN_CHUNK]
            marks = ", ".join("?" * len(part))
            for sid, p in self._db.execute(
                f"SELECT sid, piece FROM piece WHERE sid IN ({marks})", part
            ):
                out.setdefault(sid, set()).add(self._pieces[p])
        return out

    # --- the keys of tables in between, to their subjects -------------------------------

    def own(self, table: str, pairs: Iterable[tuple[str, str]]) -> None:
        """Remember the subject of each (key, subject) of ``table``; a later row with the
        same key replaces an earlier one."""
        tbl = self._table(table)
        self._db.execute("BEGIN")
        self._db.executemany(
            "INSERT OR REPLACE INTO owner VALUES (?, ?, ?)", ((tbl, k, s) for k, s in pairs)
        )
        self._db.execute("COMMIT")

    def owners(self, table: str, keys: Iterable[str]) -> dict[str, str]:
        tbl = self._table(table)
        unique = list(dict.fromkeys(keys))
        out: dict[str, str] = {}
        for i in range(0, len(unique), _IN_CHUNK):
            part = unique[i : i + _IN_CHUNK]
            marks = ", ".join("?" * len(part))
            out.update(
                self._db.execute(
                    f"SELECT key, sid FROM owner WHERE tbl = ? AND key IN ({marks})", [tbl, *part]
                )
            )
        return out

    # --- the subjects each finding names, in the order they were named ---------------------

    def note_findings(self, named: Sequence[tuple[int, str]]) -> None:
        """Note that finding ``i`` names subject ``sid``, for each (i, sid)."""
        if not named:
            return
        start = self._named
        self._named += len(named)
        self._db.execute("BEGIN")
        self._db.executemany(
            "INSERT INTO named VALUES (?, ?, ?)",
            ((i, start + j, sid) for j, (i, sid) in enumerate(named)),
        )
        self._db.execute("COMMIT")

    def finding_subjects(self, finding: int) -> Iterator[str]:
        """The subjects finding ``finding`` names (once all are noted)."""
        for (sid,) in self._db.execute(
            "SELECT sid FROM named WHERE finding = ? ORDER BY seq", (finding,)
        ):
            yield sid

    # --- reading back ---------------------------------------------------------------------

    def entries(self) -> Iterator[tuple[str, Entry]]:
        """Every subject, in the order first met, with everything its rows gave."""
        db = self._db
        # Subjects in the order first met, each one's rows found by its id: no sort of a
        # whole table (a sort may hold up to the page cache in memory, one per query).
        # CROSS JOIN keeps the subjects as the outer loop.
        db.execute("CREATE INDEX IF NOT EXISTS subject_seq ON subject (seq)")
        pieces = db.execute(
            "SELECT s.seq, p.piece FROM subject s CROSS JOIN piece p ON p.sid = s.sid "
            "ORDER BY s.seq"
        )
        counts = db.execute(
            "SELECT s.seq, r.tbl, r.n FROM subject s CROSS JOIN rowcount r ON r.sid = s.sid "
            "ORDER BY s.seq, r.tbl"
        )
        refs = db.execute(
            "SELECT s.seq, f.tbl, f.ref FROM subject s CROSS JOIN ref f ON f.sid = s.sid "
            "ORDER BY s.seq, f.tbl, f.seq"
        )
        next_piece = next(pieces, None)
        next_count = next(counts, None)
        next_ref = next(refs, None)
        for sid, seq in db.execute("SELECT sid, seq FROM subject ORDER BY seq"):
            e = Entry()
            while next_piece is not None and next_piece[0] == seq:
                e.pieces.add(self._pieces[next_piece[1]])
                next_piece = next(pieces, None)
            while next_count is not None and next_count[0] == seq:
                e.rows[self._tables[next_count[1]]] = next_count[2]
                next_count = next(counts, None)
            while next_ref is not None and next_ref[0] == seq:
                listed = e.refs.setdefault(self._tables[next_ref[1]], [])
                if len(listed) < REFS_PER_SUBJECT:
                    listed.append(next_ref[2])
                next_ref = next(refs, None)
            yield sid, e
