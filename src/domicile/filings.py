"""The filings registry: facts on record that the law cares about.

Notices filed (Russia's Art. 12 notice), clauses signed (``eu.scc.US``), regulators' bans
(``ru.transfer_ban.US``): each is a name from a pack and the date it took effect. Some come
from the configuration; the rest are recorded at run time with ``domicile filings add`` and
kept in ``DATA_DIR/filings.json``. Every running process sees a change at once: the file
is re-read whenever it changes. Withdrawn filings stay in the file's history as evidence.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from domicile.config import Config
from domicile.errors import BadInput, Conflict, DomicileError, ExitCode, NotFound
from domicile.files import lock_file
from domicile.policy import PolicyEngine, parse_date

FORMAT = 1


class FilingsError(DomicileError):
    code = "filings_error"
    exit_code = ExitCode.ENVIRONMENT


@dataclass(frozen=True)
class FilingEntry:
    name: str
    date: dt.date
    source: str  # "config" or "registry"
    title: str
    recorded_at: str | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "date": self.date.isoformat(),
            "source": self.source,
            "title": self.title,
            "recorded_at": self.recorded_at,
            "note": self.note,
        }


class FilingsRegistry:
    def __init__(self, config: Config, engine: PolicyEngine) -> None:
        self.config = config
        self.engine = engine
        self.path = config.data_dir / "filings.json"
        self._path_str = str(self.path)
        self._stamp: tuple[int, int] | None = None
        self._loaded = False
        self._data: dict[str, Any] = {"format": FORMAT, "filings": {}, "history": []}
        self._merged: dict[str, dt.date] = {}
        self._config = {engine.filing_name(name): day for name, day in config.model.filings.items()}
        self._refresh()

    # --- reading ----------------------------------------------------------------------------

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self._path_str)  # each decision asks: the plain call is cheapest
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def _refresh(self) -> None:
        stamp = self._file_stamp()
        if self._loaded and stamp == self._stamp:
            return
        self._data = self._read()
        self._stamp = stamp
        merged = dict(self._config)
        for name, entry in self._data["filings"].items():
            merged[name] = dt.date.fromisoformat(entry["date"])
        self._merged = merged
        self._loaded = True

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"format": FORMAT, "filings": {}, "history": []}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise FilingsError(
                f"the filings registry {self.path} is unreadable",
                hint="restore it from a backup; its history is evidence",
            ) from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise FilingsError(f"the filings registry {self.path} has an unknown format")
        return data

    def current(self) -> dict[str, dt.date]:
        """Every filing on record now (the file is re-read if another process changed it)."""
        self._refresh()
        return self._merged

    @property
    def version(self) -> tuple[int, int] | None:
        """Changes whenever the registry does: decision caches key on it."""
        self._refresh()
        return self._stamp

    def entries(self) -> list[FilingEntry]:
        self._refresh()
        out = []
        titles = self._titles()
        for name, day in sorted(self._merged.items()):
            stored = self._data["filings"].get(name)
            out.append(
                FilingEntry(
                    name, day, "registry" if stored else "config", titles(name),
                    stored.get("recorded_at") if stored else None,
                    stored.get("note") if stored else None,
                )
            )  # fmt: skip
        return out

    def _titles(self) -> Any:
        patterns = {}
        for lp in self.engine.packs:
            for pattern, filing in lp.pack.filings.items():
                patterns[pattern] = filing.title

        def title(name: str) -> str:
            if name in patterns:
                return patterns[name]
            head, _, cc = name.rpartition(".")
            spec = patterns.get(f"{head}.{{country}}")
            return spec.replace("{country}", cc) if spec else name

        return title

    def history(self) -> list[dict[str, Any]]:
        self._refresh()
        return list(self._data["history"])

    # --- changing ---------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        with lock_file(self.path.with_suffix(".lock")):  # 0600, in a 0700 folder
            data = self._read()
            yield data
            fd, tmp = tempfile.mkstemp(prefix=".filings-", dir=self.path.parent)
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(data, out, indent=1, sort_keys=True)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        self._loaded = False
        self._refresh()

    def add(self, name: str, date: str | dt.date, *, note: str | None = None) -> FilingEntry:
        canonical = self.engine.filing_name(name)
        day = parse_date(date, f"filing {canonical}")
        if note is not None and len(note) > 500:
            raise BadInput("a filing note is at most 500 characters")
        now = dt.datetime.now(dt.UTC).isoformat()
        with self._locked() as data:
            data["filings"][canonical] = {"date": day.isoformat(), "recorded_at": now, "note": note}
            data["history"].append(
                {"event": "add", "name": canonical, "date": day.isoformat(), "at": now}
            )
        return next(e for e in self.entries() if e.name == canonical)

    def withdraw(self, name: str) -> FilingEntry:
        canonical = self.engine.filing_name(name)
        self._refresh()
        entry = next((e for e in self.entries() if e.name == canonical), None)
        if entry is None:
            raise NotFound(
                f"no filing {canonical!r} is on record", hint="see `domicile filings list`"
            )
        if entry.source == "config":
            raise Conflict(
                f"filing {canonical!r} comes from the configuration file",
                hint=f"remove it from `filings:` in {self.config.source}",
            )
        now = dt.datetime.now(dt.UTC).isoformat()
        with self._locked() as data:
            data["filings"].pop(canonical, None)
            data["history"].append({"event": "withdraw", "name": canonical, "at": now})
        return entry
