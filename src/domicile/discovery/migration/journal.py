"""The state of a migration's runs, beside its plan."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

from domicile.errors import BadInput


class Journal:
    """The migration's state, in a SQLite file beside the plan: per table the key after
    which the next batch starts (its values with their types, ``keys.cursor_json``), and
    per row (by its key as ``keys.key_text`` writes it) its record id, site and state (``intent``
    before the vault write, ``done`` after the source's commit, ``refused`` when the vault
    would not take it). Never a value: keys, ids, sites."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = path
        if read_only:
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.fchmod(fd, 0o600)
        self._lock_fd = fd
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BadInput(
                "another `migrate run` of this plan is running",
                hint="wait for it to finish, or stop it and run again",
            ) from None
        except ImportError:  # pragma: no cover - no fcntl (Windows)
            pass
        self.db = sqlite3.connect(path, isolation_level=None)
        # A rollback journal, not WAL: ``verify`` opens the file read-only, and a WAL file
        # cannot be read without creating its companions.
        self.db.execute("PRAGMA journal_mode = DELETE")
        self.db.execute("PRAGMA synchronous = FULL")
        self.db.executescript(
            """
            CREATE TABLE IF NOT EXISTS cursor (tbl TEXT PRIMARY KEY, after TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS rows (
                tbl TEXT NOT NULL, key TEXT NOT NULL, rid TEXT NOT NULL, site TEXT,
                state TEXT NOT NULL, PRIMARY KEY (tbl, key));
            """
        )

    @staticmethod
    def open_existing(path: Path) -> Journal | None:
        db = path
        if not db.exists():
            return None
        j = Journal.__new__(Journal)
        j.path = path
        j.db = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        return j

    def cursor(self, table: str) -> str | None:
        """The key after which the table's next batch starts, as ``keys.cursor_json``
        wrote it."""
        row = self.db.execute("SELECT after FROM cursor WHERE tbl = ?", (table,)).fetchone()
        return str(row[0]) if row else None

    def intend(self, table: str, rows: Sequence[tuple[str, str]]) -> None:
        with self._tx():
            self.db.executemany(
                "INSERT INTO rows VALUES (?, ?, ?, NULL, 'intent') ON CONFLICT DO NOTHING",
                [(table, k, rid) for k, rid in rows],
            )

    def finish(
        self,
        table: str,
        done: Sequence[tuple[str, str]],
        refused: Sequence[str],
        after: str | None,
    ) -> None:
        with self._tx():
            self.db.executemany(
                "UPDATE rows SET state = 'done', site = ? WHERE tbl = ? AND key = ?",
                [(site, table, k) for k, site in done],
            )
            self.db.executemany(
                "UPDATE rows SET state = 'refused' WHERE tbl = ? AND key = ?",
                [(table, k) for k in refused],
            )
            if after is not None:
                self.db.execute(
                    "INSERT INTO cursor VALUES (?, ?) ON CONFLICT (tbl) DO UPDATE SET after = excluded.after",
                    (table, after),
                )

    def rows(self, table: str) -> dict[str, tuple[str, str | None, str]]:
        try:
            return {
                k: (rid, site, state)
                for k, rid, site, state in self.db.execute(
                    "SELECT key, rid, site, state FROM rows WHERE tbl = ?", (table,)
                )
            }
        except sqlite3.Error:
            raise BadInput(
                f"the journal {self.path.name} cannot be read (a run stopped mid-write?)",
                hint="run `domicile migrate run` again to finish and repair it, then verify",
            ) from None

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()
        fd = getattr(self, "_lock_fd", None)
        if fd is not None:
            os.close(fd)
