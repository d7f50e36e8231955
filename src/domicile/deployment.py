"""The deployment registry: which sites were set up, and the creation id of each store.

Only setup writes it (``domicile init``, ``domicile sites create``); everything else reads
it. Each site store and key store carries its site id and a random creation id in its
``meta`` table, and the registry (``DATA_DIR/deployment.json``, mode 0600) records those
ids. A store is opened only when its ids match, so an empty database made in place of a
site's (a file moved away, a PostgreSQL database renamed and re-created), or another
site's database put in its place, is refused as unavailable: it is not the site.

The file holds no secret (ids and times); it is private like everything else domicile
keeps, and changed atomically under a file lock, like the keyring.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from domicile.errors import DomicileError, ExitCode
from domicile.files import lock_file, write_private_json
from domicile.stores.base import SiteUnavailable

REGISTRY_FORMAT = 1
NOT_SET_UP_HINT = (
    "set the deployment up with `domicile init`, or its sites with `domicile sites create"
    " --all`; a deployment made by an older domicile is adopted once with"
    " `domicile sites create --all --adopt`"
)


class RegistryError(DomicileError):
    """The deployment registry cannot be read or written."""

    code = "deployment_registry"
    exit_code = ExitCode.ENVIRONMENT


@dataclass(frozen=True)
class SiteRecord:
    """A site as setup made it: the creation ids of its site store and key store."""

    site: str
    store: str  # the site store's creation id
    keys: str  # the key store's creation id
    created_at: str
    adopted: bool = False  # made by an older domicile, taken in by `sites create --adopt`

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class DeploymentRegistry:
    """``DATA_DIR/deployment.json``: site id -> its ``SiteRecord``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")

    def exists(self) -> bool:
        return self.path.exists()

    def _load(self) -> dict[str, Any] | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RegistryError(
                f"cannot read the deployment registry {self.path}: {exc.strerror}"
            ) from None
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if (
            not isinstance(data, dict)
            or data.get("format") != REGISTRY_FORMAT
            or not isinstance(data.get("sites"), dict)
        ):
            raise RegistryError(
                f"the deployment registry {self.path} is not valid",
                hint="restore it from its backup",
            )
        return data

    def sites(self) -> dict[str, SiteRecord]:
        """Every site set up so far (none when the registry does not exist)."""
        data = self._load()
        if data is None:
            return {}
        out = {}
        for site_id, entry in data["sites"].items():
            try:
                out[site_id] = SiteRecord(site=site_id, **entry)
            except TypeError:
                raise RegistryError(
                    f"the deployment registry {self.path} has a malformed entry for site {site_id!r}",
                    hint="restore it from its backup",
                ) from None
        return out

    def site(self, site_id: str) -> SiteRecord:
        """The site's record, or ``SiteUnavailable`` saying why the site cannot be opened.
        Read from the file each time (a store is opened rarely), so a site created by
        another process meanwhile is found."""
        try:
            data = self._load()
        except RegistryError as exc:
            raise SiteUnavailable(site_id, exc.message, hint=exc.hint) from None
        if data is None:
            raise SiteUnavailable(
                site_id, "the deployment is not set up (it has no registry)", hint=NOT_SET_UP_HINT
            )
        if site_id not in data["sites"]:
            raise SiteUnavailable(
                site_id,
                "it was never set up in this deployment",
                hint=f"create it with `domicile sites create {site_id}` (or adopt a database made"
                f" by an older domicile: `domicile sites create {site_id} --adopt`)",
            )
        return self.sites()[site_id]

    @contextlib.contextmanager
    def changing(self) -> Iterator[dict[str, SiteRecord]]:
        """Change the registry under an exclusive lock, on a fresh read; what the block
        leaves in the mapping is written back atomically. Setup holds it while it creates
        a site, so two setups of one deployment never race."""
        with lock_file(self.lock_path):
            sites = self.sites()
            yield sites
            write_private_json(
                self.path,
                {
                    "format": REGISTRY_FORMAT,
                    "sites": {
                        sid: {k: v for k, v in rec.to_dict().items() if k != "site"}
                        for sid, rec in sorted(sites.items())
                    },
                },
            )


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()
