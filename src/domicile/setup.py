"""Setting a deployment up: the only code that creates sites.

``domicile init`` and ``domicile sites create ID`` come here, and nothing else creates a
site's database, its key store, their schemas, the site's keys in the keyring or the
keyring itself. Everywhere else a missing or foreign database is an unavailable site
(exit 4, HTTP 503), never an empty new one: a site that silently started afresh would
lose its audit log and take writes that belong in its real database.

Each store gets a random creation id (in its ``meta`` table, beside its site id and kind)
and the deployment registry records both ids (``deployment.DeploymentRegistry``). From
then on a store opens only when its ids match what the registry says.

Deployments made before creation ids existed are taken in with ``--adopt``: their
existing stores get a creation id, recorded like a new site's, and an audit entry at the
site says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from domicile.audit.ledger import AuditEvent, AuditLedger
from domicile.config import Config, Site
from domicile.crypto.errors import KeyringError
from domicile.crypto.keys import KeyProvider, LocalKeyring
from domicile.crypto.providers import key_provider
from domicile.deployment import DeploymentRegistry, SiteRecord, now
from domicile.errors import DomicileError, ExitCode
from domicile.files import private_dir, tighten
from domicile.stores import KeyStore, SiteStore, open_key_store, open_site_store
from domicile.stores.base import NoSchema, SchemaOutdated, StoreMissing
from domicile.stores.sqlite import sqlite_path


class SetupRefused(DomicileError):
    """Setup would overwrite or guess: nothing was created."""

    code = "setup_refused"
    exit_code = ExitCode.BAD_INPUT


@dataclass(frozen=True)
class SiteSetup:
    """What setup did for one site."""

    site: str
    outcome: Literal["created", "adopted", "existing"]
    record: SiteRecord

    def to_dict(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "outcome": self.outcome,
            "store_creation_id": self.record.store,
            "keys_creation_id": self.record.keys,
            "created_at": self.record.created_at,
        }


def registry(config: Config) -> DeploymentRegistry:
    return DeploymentRegistry(config.registry_path)


def create_deployment(
    config: Config,
    *,
    adopt: bool = False,
    create_database: bool = False,
    keys: KeyProvider | None = None,
) -> list[SiteSetup]:
    """Create (or ``adopt``) every site of the configuration that is not set up yet
    (``domicile init``, ``domicile sites create --all``). Sites set up already are left as
    they are."""
    known = registry(config).sites()
    out = []
    for site in config.sites:
        if site.id in known:
            out.append(SiteSetup(site.id, "existing", known[site.id]))
        else:
            out.append(
                create_site(
                    config, site.id, adopt=adopt, create_database=create_database, keys=keys
                )
            )
    return out


def create_site(
    config: Config,
    site_id: str,
    *,
    adopt: bool = False,
    create_database: bool = False,
    keys: KeyProvider | None = None,
) -> SiteSetup:
    """Create one site: its database (a SQLite file, or the schema in an existing empty
    PostgreSQL database; the database itself too with ``create_database``), its key store,
    its keys in the keyring, and its record in the deployment registry.

    Refuses a site that is set up already, and a store that exists but is not recorded
    (``adopt`` takes such a store in, when it is the site's own)."""
    site = _site(config, site_id)
    _folders(config, site)
    with registry(config).changing() as sites:
        if site.id in sites:
            raise SetupRefused(
                f"site {site.id!r} is set up already (since {sites[site.id].created_at})",
                hint="nothing to do; `domicile sites` shows its health",
            )
        provider = keys or key_provider(config, _keyring(config, sites, adopt=adopt))
        site_url = config.backend_url(site.backend)
        keys_url = config.keys_url(site)
        found = {
            "database": _exists(open_site_store, site.id, site_url),
            "key store": _exists(open_key_store, site.id, keys_url),
        }
        if adopt:
            store, ks = _adopt(site, provider, found, site_url, keys_url)
        else:
            store, ks = _create(site, provider, found, site_url, keys_url, create_database)
        try:
            assert store.creation_id is not None
            assert ks.creation_id is not None
            record = SiteRecord(site.id, store.creation_id, ks.creation_id, now(), adopted=adopt)
            if adopt:
                # An old store taken in is a fact its own log should show.
                ledger = AuditLedger(site.id, provider)
                ledger.append_now(
                    store,
                    [
                        AuditEvent(
                            action="setup", site=site.id,
                            detail={"adopted": True, "store": record.store, "keys": record.keys},
                        )
                    ],
                )  # fmt: skip
            sites[site.id] = record  # written when the block ends, after all of the above
        finally:
            store.close()
            ks.close()
    return SiteSetup(site.id, "adopted" if adopt else "created", record)


def _site(config: Config, site_id: str) -> Site:
    try:
        return config.site(site_id)
    except KeyError:
        raise SetupRefused(
            f"the configuration has no site {site_id!r}",
            hint="add it to `sites:` in the configuration first; the sites are: "
            + ", ".join(s.id for s in config.sites),
        ) from None


def _folders(config: Config, site: Site) -> None:
    """domicile's own folders, private (0700) whatever they were: the data folder and the
    key stores' default folder."""
    private_dir(config.data_dir, tighten=True)
    private_dir(config.keyring_path.parent)
    if not site.keys:
        private_dir(config.keyring_path.parent / "keys", tighten=True)


def _keyring(config: Config, sites: dict[str, SiteRecord], *, adopt: bool) -> LocalKeyring:
    """The local keyring; a new one only for a deployment that has nothing yet (a new
    keyring beside existing data would leave that data unreadable)."""
    path = config.keyring_path
    if path.exists():
        return LocalKeyring(path)
    restore = "restore the keyring from its backup; without it the data cannot be read"
    if adopt:
        raise SetupRefused(
            f"there is no keyring at {path}; adopting needs the keys the site's data is sealed under",
            hint=restore,
        )
    if sites:
        raise SetupRefused(
            f"the keyring {path} is missing but sites {', '.join(sorted(sites))} are set up",
            hint=restore,
        )
    for s in config.sites:
        url = config.keys_url(s)
        if url.startswith("sqlite:") and sqlite_path(url).exists():
            raise SetupRefused(
                f"the keyring {path} is missing but site {s.id!r} already has subject keys",
                hint=restore,
            )
    return LocalKeyring(path, create=True)


def _exists(opener: Any, site_id: str, url: str) -> bool:
    """Whether a domicile store of this site is at ``url`` (looked at read-only: nothing
    is written). A store of another site or kind is refused as it is."""
    try:
        store = opener(site_id, url, read_only=True)
    except (StoreMissing, NoSchema):
        return False
    except SchemaOutdated:
        return True
    store.close()
    return True


def _create(
    site: Site,
    keys: KeyProvider,
    found: dict[str, bool],
    site_url: str,
    keys_url: str,
    create_database: bool,
) -> tuple[SiteStore, KeyStore]:
    there = [what for what, present in found.items() if present]
    if there:
        raise SetupRefused(
            f"site {site.id!r} already has a {' and a '.join(there)}, not recorded in this deployment",
            hint=f"if it is the site's own (made by an older domicile, or by a setup cut short),"
            f" adopt it: `domicile sites create {site.id} --adopt`; to start the site afresh,"
            " move it away first",
        )
    store = _create_one(open_site_store, site, site_url, create_database)
    try:
        ks = _create_one(open_key_store, site, keys_url, create_database)
    except BaseException:
        store.close()
        raise
    keys.ensure_site(site.id)
    return store, ks


def _create_one(opener: Any, site: Site, url: str, create_database: bool) -> Any:
    try:
        store = opener(site.id, url, create=True, create_database=create_database)
    except StoreMissing:
        raise SetupRefused(
            f"site {site.id!r}: its PostgreSQL database does not exist",
            hint="create it (an empty database), or pass --create-database to let domicile"
            " create it",
        ) from None
    if not store.created:  # made by someone else between the look and now
        store.close()
        raise SetupRefused(
            f"site {site.id!r}: a store appeared at its location while it was being created",
            hint="run the setup again once the other one has finished",
        )
    return store


def _adopt(
    site: Site, keys: KeyProvider, found: dict[str, bool], site_url: str, keys_url: str
) -> tuple[SiteStore, KeyStore]:
    missing = [what for what, present in found.items() if not present]
    if missing:
        raise SetupRefused(
            f"site {site.id!r} has no {' and no '.join(missing)} to adopt",
            hint=f"create the site afresh with `domicile sites create {site.id}`, or restore"
            " its databases first",
        )
    try:
        keys.index_key(site.id)
    except KeyringError:
        raise SetupRefused(
            f"the keyring holds no keys for site {site.id!r}; its data cannot be read without them",
            hint="restore the keyring from its backup",
        ) from None
    store = open_site_store(site.id, site_url, adopt=True)
    try:
        ks = open_key_store(site.id, keys_url, adopt=True)
    except BaseException:
        store.close()
        raise
    for url in (site_url, keys_url):  # older domiciles left them as the umask made them
        if url.startswith("sqlite:"):
            path = sqlite_path(url)
            for f in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
                tighten(f)
    return store, ks


def migrate_sites(config: Config, site_ids: list[str] | None = None) -> list[dict[str, Any]]:
    """Open each site's stores for writing, which upgrades an older schema (read-only
    opens refuse one). Only stores the deployment recorded are opened."""
    from domicile.stores.schema import KEY_SCHEMA_VERSION, SITE_SCHEMA_VERSION

    known = registry(config)
    out = []
    for site_id in site_ids or [s.id for s in config.sites]:
        site = _site(config, site_id)
        record = known.site(site.id)
        store = open_site_store(site.id, config.backend_url(site.backend), creation_id=record.store)
        store.close()
        ks = open_key_store(site.id, config.keys_url(site), creation_id=record.keys)
        ks.close()
        out.append(
            {"site": site.id, "site_schema": SITE_SCHEMA_VERSION, "key_schema": KEY_SCHEMA_VERSION}
        )
    return out
