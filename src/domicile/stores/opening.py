"""Opening a site's store and its key store: the one place that picks an implementation
from a backend URL. It sits beside the callers (setup, the vault), so that the interfaces in
``base`` and ``keystore`` never import their own implementations. The PostgreSQL ones
are imported when first asked for (psycopg is not loaded for a SQLite deployment)."""

from __future__ import annotations

from domicile.stores.base import SiteStore
from domicile.stores.keystore import KeyStore, SqliteKeyStore
from domicile.stores.sqlite import SqliteSiteStore


def open_site_store(
    site_id: str,
    url: str,
    *,
    create: bool = False,
    creation_id: str | None = None,
    read_only: bool = False,
    adopt: bool = False,
    create_database: bool = False,
) -> SiteStore:
    """Open a site's store.

    - ``create`` (setup only): make the SQLite file, or the schema in an existing empty
      PostgreSQL database (the database itself too with ``create_database``), and give a
      new store a fresh creation id. Without it a missing or empty database is
      ``SiteUnavailable``: it is never created behind the operator's back.
    - ``creation_id``: the id the deployment recorded for this store; a store with
      another id (or none) is refused, as a store of another site is.
    - ``read_only``: neither migrate nor write anything; an outdated schema is refused.
    - ``adopt`` (setup only): give an existing store that has no creation id one.
    """
    if url.startswith("sqlite:"):
        store: SiteStore = SqliteSiteStore(site_id, url)
    elif url.startswith(("postgresql://", "postgres://")):
        from domicile.stores.postgres import PostgresSiteStore

        store = PostgresSiteStore(site_id, url)
    else:
        raise ValueError(f"unsupported backend URL for site {site_id!r}")
    store.open(
        create=create,
        creation_id=creation_id,
        read_only=read_only,
        adopt=adopt,
        create_database=create_database,
    )
    return store


def open_key_store(
    site_id: str,
    url: str,
    *,
    create: bool = False,
    creation_id: str | None = None,
    read_only: bool = False,
    adopt: bool = False,
    create_database: bool = False,
) -> KeyStore:
    """Open a site's key store; the options are those of ``open_site_store``. A missing
    key store is unavailable, never a new empty one: that would make every subject of the
    site look erased."""
    if url.startswith("sqlite:"):
        store: KeyStore = SqliteKeyStore(site_id, url)
    elif url.startswith(("postgresql://", "postgres://")):
        from domicile.stores.postgres import PostgresKeyStore

        store = PostgresKeyStore(site_id, url)
    else:
        raise ValueError(f"unsupported key store URL for site {site_id!r}")
    store.open(
        create=create,
        creation_id=creation_id,
        read_only=read_only,
        adopt=adopt,
        create_database=create_database,
    )
    return store
