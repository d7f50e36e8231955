"""Subjects' requests on record: ``DATA_DIR/rights.json``.

One JSON file beside the deployment's other state (as ``filings.json``), changed only
under a lock and replaced atomically, so two processes never lose each other's changes
and a reader sees a whole file. It holds no personal data: kinds, dates, sites, opaque
subject ids, the categories the subject was identified by (never the values), counts and
the operator's words about the identity check and the reasons. Reading it never creates
it: ``rights list`` on a deployment without requests writes nothing.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from domicile.config import Config
from domicile.errors import DomicileError, ExitCode, NotFound
from domicile.files import lock_file, write_private

FORMAT = 1


class RightsFileError(DomicileError):
    code = "rights_file"
    exit_code = ExitCode.ENVIRONMENT


def new_id() -> str:
    return "rq_" + secrets.token_hex(6)


class RequestsFile:
    def __init__(self, config: Config) -> None:
        self.path: Path = config.data_dir / "rights.json"

    def _read(self) -> dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {"format": FORMAT, "requests": {}}
        except OSError as exc:
            raise RightsFileError(
                f"the requests file {self.path} cannot be read: {exc.strerror}",
                hint="check its permissions",
            ) from None
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise RightsFileError(
                f"the requests file {self.path} is not one domicile wrote",
                hint="restore it from a backup: it is the evidence of the requests",
            )
        return data

    def all(self) -> list[dict[str, Any]]:
        return list(self._read()["requests"].values())

    def get(self, request_id: str) -> dict[str, Any]:
        found = self._read()["requests"].get(request_id)
        if found is None:
            raise NotFound("no request of that id", hint="see `domicile rights list`")
        return dict(found)

    @contextmanager
    def changing(self) -> Iterator[dict[str, Any]]:
        """The requests, to change in place; written back when the block ends without an
        error (nothing is written otherwise)."""
        with lock_file(self.path.with_suffix(".lock")):
            data = self._read()
            yield data["requests"]
            write_private(self.path, json.dumps(data, indent=1, sort_keys=True) + "\n")

    def exists(self) -> bool:
        return os.path.exists(self.path)
