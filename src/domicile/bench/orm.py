"""The ORM baseline: what a developer writes without domicile.

A SQLAlchemy 2 ORM model whose personal columns are ``StringEncryptedType`` with
sqlalchemy-utils' ``AesGcmEngine`` (one AES-GCM seal per column under one application key),
on the same backend and with the same journal settings as the site stores. It writes the
same records in the same batch sizes (one session and transaction per batch) and reads them
back by primary key, with the same number of concurrent readers (a session per reader).
It does strictly less than domicile: no residency, placement, per-subject keys, blind
indexes or audit.

Needs the ``bench`` extra (``pip install 'domicile[bench]'``): import this module only after
``judging.require_orm()``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Engine, String, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy_utils import StringEncryptedType
from sqlalchemy_utils.types.encrypted.encrypted_type import AesGcmEngine

from domicile.bench.judging import in_threads, split, timed

COLUMNS = ("full_name", "email", "phone", "headline", "city")
# The application's one key, as such code keeps it (fixed here: the figures need no secret).
KEY = hashlib.sha256(b"domicile bench orm baseline").hexdigest()


def _encrypted() -> Any:
    return StringEncryptedType(String, KEY, AesGcmEngine)


class _Base(DeclarativeBase):
    pass


class Profile(_Base):
    __tablename__ = "orm_profiles"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    full_name: Mapped[str] = mapped_column(_encrypted())
    email: Mapped[str] = mapped_column(_encrypted())
    phone: Mapped[str] = mapped_column(_encrypted())
    headline: Mapped[str] = mapped_column(_encrypted())
    city: Mapped[str] = mapped_column(_encrypted())


def engine(url: str) -> Engine:
    """An engine for a SQLite file (``sqlite:PATH``) or a PostgreSQL database URL, with
    the tables made."""
    if url.startswith("sqlite:"):
        eng = create_engine(f"sqlite:///{url.removeprefix('sqlite:')}")

        @event.listens_for(eng, "connect")
        def _pragmas(conn: Any, _record: Any) -> None:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # the site stores' own settings

    else:
        eng = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    _Base.metadata.create_all(eng)
    return eng


def put(
    eng: Engine, rows: Sequence[tuple[str, ...]], batch: int, advance: Callable[[int], None]
) -> float:
    """Seconds to write ``rows`` (id, then the five columns) in batches of ``batch``."""

    def work() -> None:
        for i in range(0, len(rows), batch):
            chunk = rows[i : i + batch]
            with Session(eng) as session, session.begin():
                session.add_all(
                    Profile(**dict(zip(("id", *COLUMNS), r, strict=True))) for r in chunk
                )
            advance(len(chunk))

    return timed(work)


def get(eng: Engine, ids: Sequence[str], readers: int, advance: Callable[[int], None]) -> float:
    """Seconds for ``readers`` threads, a session each, to load ``ids`` by primary key
    (every column decrypted)."""

    def reader(n: int) -> None:
        with Session(eng) as session:
            for rid in split(ids, readers)[n]:
                row = session.get(Profile, rid)
                if row is None or not row.email:
                    raise RuntimeError("the ORM baseline lost a record it wrote")
                session.expunge(row)  # each read goes to the database, as a new request would
                advance(1)

    return in_threads(readers, reader)
