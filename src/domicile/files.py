"""Private files and folders: what domicile keeps on disk is for its owner only.

Site databases, key stores, the keyring, the deployment registry and the registries of
clients and filings are created mode 0600 in folders of mode 0700. The modes are set
explicitly after creation (``chmod``), so they do not depend on the process's umask: a
umask of 0 would otherwise leave a key store readable by everyone, and a strict one
(0277) would leave domicile unable to write its own files.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows; one process per deployment there
    fcntl = None  # type: ignore[assignment]

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path, *, tighten: bool = False) -> Path:
    """Make ``path`` and any missing parents as folders only the owner can enter.

    Folders that exist already keep their mode unless ``tighten`` (set by setup, for the
    folders that are domicile's own: the data folder, the key stores' folder)."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue  # made by another process meanwhile
        os.chmod(d, DIR_MODE)
    if tighten:
        os.chmod(path, DIR_MODE)
    return path


def create_private(path: Path) -> bool:
    """Create ``path`` as an empty file of mode 0600 if it does not exist; True if this
    call created it. An existing file is left as it is."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return True


def tighten(path: Path) -> None:
    """Mode 0600 for an existing file of ours (nothing if it is not there)."""
    with contextlib.suppress(FileNotFoundError):
        os.chmod(path, FILE_MODE)


@contextlib.contextmanager
def lock_file(path: Path) -> Iterator[int]:
    """An exclusive lock across processes, held on ``path`` (a 0600 file made on first
    use), released when the block ends."""
    private_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)  # closing releases the lock


def try_lock(path: Path) -> int | None:
    """An exclusive lock across processes on ``path`` (a 0600 file made on first use) if
    no other holder has it: the descriptor that holds it (closing it releases the lock,
    as does the end of the process, however it ends), else None at once."""
    private_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` atomically with ``text`` (a 0600 file; fsynced first), so a reader
    sees the old content or the new, never a part."""
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_private_json(path: Path, data: Any) -> None:
    write_private(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
