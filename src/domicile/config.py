"""The deployment configuration: one YAML file naming sites, collections, filings and packs.

Found by ``--config FILE``, else ``DOMICILE_CONFIG``, else ``./domicile.yaml``. Relative
paths in it (data folder, keyring, SQLite files, pack files) are relative to the file.
Errors name the file, line and field.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from domicile.countries import country
from domicile.crypto.specs import KeyProviderSpec
from domicile.errors import ConfigError, EnvironmentProblem
from domicile.yamlfile import YamlSource

CONFIG_ENV = "DOMICILE_CONFIG"
DEFAULT_CONFIG = "domicile.yaml"

Ident = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# A line of a site's location: what the database register prints, so never blank.
Line = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]


class Location(_Model):
    """Where a site physically is: what a Russian Art. 22 notice (item 10.1) must state."""

    provider: Line
    city: Line
    address: Line

    def __str__(self) -> str:
        return f"{self.provider}, {self.address}, {self.city}"


class Site(_Model):
    id: Ident
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
    location: Location
    backend: str  # sqlite:PATH or postgresql://...
    keys: str | None = None  # where subject keys live; default beside the keyring
    # Where the site's key-encryption, index and signing keys live (docs/keys.md); default:
    # the deployment's keyring file.
    key_provider: KeyProviderSpec | None = None
    # A read-only streaming replica of the backend (PostgreSQL): read-only vaults read here.
    replica: str | None = None

    @field_validator("replica")
    @classmethod
    def _replica(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError(
                "replica must be postgresql://USER@HOST:PORT/DATABASE (a streaming replica of"
                " a PostgreSQL backend; a SQLite site has none)"
            )
        return value

    @field_validator("country", mode="before")
    @classmethod
    def _cc(cls, value: Any) -> Any:
        return country(value, what="site country") if isinstance(value, str) else value

    @field_validator("backend", "keys")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("sqlite:", "postgresql://", "postgres://")):
            raise ValueError("backend must be sqlite:PATH or postgresql://USER@HOST:PORT/DATABASE")
        return value


# A retention period: a number and a unit (d days, w weeks, m months, y years), e.g. 30d, 5y.
def _period(value: str) -> str:
    if not re.fullmatch(r"\d{1,5}[dwmy]", value):
        raise ValueError("a period is a number and a unit (d, w, m or y), e.g. 30d or 5y")
    return value


Period = Annotated[str, AfterValidator(_period)]


class Hold(_Model):
    """A legal hold: a statute that obliges keeping some fields (e.g. accounting records)
    overrides their erasure for ``keep`` (measured as the retention is), or for as long
    as the hold is configured when no period is given."""

    statute: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=200)]
    fields: list[str] = Field(min_length=1)
    keep: Period | None = None


class Retention(_Model):
    """How long data is kept: ``keep`` after the record was collected (``created_at``), after
    its purpose ended (its last change, ``updated_at``) or after its last access (its last
    read in the audit, else its last change)."""

    after: Literal["purpose_end", "collected", "last_access"]
    keep: Period
    hold: list[Hold] = []


class FieldRetention(_Model):
    """A field kept for less time than its record: removed from the record when due."""

    after: Literal["purpose_end", "collected", "last_access"]
    keep: Period


class FieldSpec(_Model):
    category: str  # a data-category key, checked against the taxonomy when the vault opens
    type: Literal["string", "integer", "boolean", "date"] = "string"
    searchable: bool = False  # equality search through a blind index
    identifies: bool = False  # the value identifies the subject (e.g. an e-mail address)
    required: bool = False
    max_length: int = Field(default=1000, ge=1, le=1_000_000)
    normalize: Literal["none", "lower", "email", "phone"] = "none"
    # A deterministic token for this field's value, the same at every site, so the global
    # application can join and deduplicate without the data.
    join_token: bool = False
    retention: FieldRetention | None = None  # removed from the record when this is due

    @model_validator(mode="after")
    def _identifiers_are_searchable(self) -> FieldSpec:
        if self.identifies and not self.searchable:
            raise ValueError("a field that identifies the subject must also be searchable")
        if self.required and self.retention is not None:
            raise ValueError(
                "a required field cannot have a retention of its own (the record's applies)"
            )
        return self


class ReplicaTarget(_Model):
    """A foreign site that keeps copies of this collection's records, where the law lets
    it: only the listed fields (default all), never ahead of the primary."""

    to: Ident
    fields: list[str] | None = None


class Collection(_Model):
    fields: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")], FieldSpec] = Field(
        min_length=1
    )
    replicate: list[ReplicaTarget] = []
    retention: Retention | None = None


class PurposeSpec(_Model):
    """A purpose the application names in its calls, with the legal basis it rests on (a
    basis the packs know: ``consent``, ``contract``, ``legal_claims``, ...). The vault uses
    it for subjects' blocks: a purpose resting on consent stops for a subject who withdrew
    consent, and a restricted subject's data may be read only for purposes resting on a
    basis the law still allows (``restriction:`` in the packs)."""

    basis: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")]
    title: str | None = None


class ClientSpec(_Model):
    """A client of the HTTP service, defined in the configuration (with hashes only)."""

    client_id: Annotated[str, Field(pattern=r"^dc_[a-z0-9_]{1,40}$")]
    name: str
    scopes: list[str] = Field(min_length=1)
    secret_hash: str | None = None  # see domicile.clients.hash_secret
    api_key_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None


class AuditSettings(_Model):
    """How the service keeps the sites' audit logs witnessed."""

    # Seconds between witness rounds while the service runs (a round runs only when
    # something was logged since the last one, and always when the service stops).
    witness_every: float = Field(default=60, gt=0, le=86400)


MiB = 1024 * 1024
ADDRESS = r"^(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):\d{1,5}$"  # HOST:PORT, or [IPv6]:PORT


def _rate(value: str) -> str:
    """A rate such as ``10/minute`` or ``100 per hour`` (the ``limits`` library's notation)."""
    from limits import parse

    try:
        parse(value)
    except ValueError:
        raise ValueError("a rate is N/second, N/minute or N/hour, e.g. 10/minute") from None
    return value


Rate = Annotated[str, AfterValidator(_rate)]


class ServiceSettings(_Model):
    """How ``domicile serve`` guards itself (``service:``); its options override these."""

    # HOST:PORT of a second listener that serves only /metrics, to no one but whoever can
    # reach that address. Without it, /metrics is on the API and needs the metrics:read scope.
    metrics_address: Annotated[str, Field(pattern=ADDRESS)] | None = None
    # The largest request body, in bytes: JSON (and form) requests, and attachment uploads.
    max_json_bytes: int = Field(default=16 * MiB, ge=1024, le=1024 * MiB)
    max_attachment_bytes: int = Field(default=100 * MiB, ge=1024, le=100 * MiB)
    # Failed authentications allowed per source address and per client id, after which the
    # source (or the client id, at the token endpoint) is answered 429 until the window ends.
    auth_failures_per_source: Rate = "30/minute"
    auth_failures_per_client: Rate = "10/minute"
    # Addresses of reverse proxies whose X-Forwarded-For names the real source address.
    # Empty: the peer's address is the source (a client cannot choose its own).
    trusted_proxies: list[str] = []
    # Seconds between the service's sweeps that destroy expired InCountry records (records
    # past their expires_at are never served, swept or not).
    expire_every: float = Field(default=60.0, gt=0, le=86400)
    # Seconds between the service's retention runs (``domicile.retention``), in one of its
    # processes; None (the default): the service runs none (run it from cron or the API).
    # At least a minute: each run walks every record under a retention.
    retention_every: float | None = Field(default=None, ge=60, le=31 * 86400)


# What a node lets its peers ask of it for their callers (``domicile.federation``): every
# forwarded call is cut down to these, and never carries ``admin``.
PEER_SCOPES = ("records:read", "records:write", "records:delete", "records:erase")


class NodeSpec(_Model):
    """One node of a federation: the site it holds and where its node channel listens."""

    url: Annotated[str, Field(pattern=r"^https://[^/\s]+$")]  # https://HOST:PORT, mutual TLS
    keyring: str | None = None  # default: DATA_DIR/federation/nodes/ID/keyring.json
    # Where applications reach the node's public API (its InCountry endpoint among them):
    # named to a client that called the wrong node, so that it can call this one.
    api: Annotated[str | None, Field(pattern=r"^https?://[^/\s]+(/[^\s]*)?$")] = None


class FederationSettings(_Model):
    """A node in each country (``domicile serve --node ID``); absent: one process holds
    every site (the embedded default)."""

    nodes: dict[Ident, NodeSpec] = Field(min_length=1)
    peer_scopes: list[str] = list(PEER_SCOPES)
    timeout: float = Field(default=10.0, gt=0, le=300)  # seconds per call to a peer

    @field_validator("peer_scopes")
    @classmethod
    def _record_operations_only(cls, v: list[str]) -> list[str]:
        wrong = [s for s in v if s not in PEER_SCOPES]
        if wrong:
            raise ValueError(
                f"peer_scopes may name only record operations ({', '.join(PEER_SCOPES)}), "
                f"not {', '.join(map(repr, wrong))}"
            )
        return v


class DeploymentConfig(_Model):
    environment_id: str = "default"
    data_dir: str = "domicile-data"
    keyring: str | None = None  # default: DATA_DIR/keyring.json
    default_site: Ident
    local_site: Ident | None = None  # where this process runs; refusals are audited here
    sites: list[Site] = Field(min_length=1)
    collections: dict[Ident, Collection] = Field(min_length=1)
    filings: dict[str, dt.date] = {}  # facts on record, e.g. ru.art22_notice: 2025-01-15
    facts: dict[str, bool | int | str] = {}  # facts about the controller, e.g. controller.ciio
    # The legal basis of each purpose (see ``PurposeSpec``); a purpose not listed has none
    # on record, and is stopped by a restriction but not by a withdrawal of consent.
    purposes: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")], PurposeSpec] = {}
    packs: list[str] = []
    clients: list[ClientSpec] = []
    audit: AuditSettings = AuditSettings()
    service: ServiceSettings = ServiceSettings()
    federation: FederationSettings | None = None


class Config:
    """A validated configuration and the folder its relative paths are relative to."""

    def __init__(self, model: DeploymentConfig, base: Path, source: str) -> None:
        self.model = model
        self.base = base
        self.source = source

    @property
    def sites(self) -> list[Site]:
        return self.model.sites

    def site(self, site_id: str) -> Site:
        for s in self.model.sites:
            if s.id == site_id:
                return s
        raise KeyError(site_id)

    def path(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base / p

    @property
    def data_dir(self) -> Path:
        return self.path(self.model.data_dir)

    @property
    def keyring_path(self) -> Path:
        return (
            self.path(self.model.keyring) if self.model.keyring else self.data_dir / "keyring.json"
        )

    def node_dir(self, node: str) -> Path:
        """What a node keeps of its own: its certificate and key, its keyring."""
        return self.data_dir / "federation" / "nodes" / node

    def as_node(self, node: str) -> Config:
        """This configuration as node ``node`` runs it: acting from its own site, with its
        own keyring (which holds only its site's keys)."""
        spec = self.model.federation.nodes.get(node) if self.model.federation else None
        keyring = (spec.keyring if spec else None) or str(self.node_dir(node) / "keyring.json")
        # Subject key stores stay where they are (by default they sit beside the keyring).
        sites = [s.model_copy(update={"keys": s.keys or self.keys_url(s)}) for s in self.sites]
        model = self.model.model_copy(
            update={"local_site": node, "keyring": keyring, "sites": sites}
        )
        return Config(model, self.base, self.source)

    @property
    def registry_path(self) -> Path:
        """The deployment registry: the sites set up, and their stores' creation ids."""
        return self.data_dir / "deployment.json"

    def backend_url(self, url: str) -> str:
        """Resolve a relative SQLite path against the configuration's folder."""
        if url.startswith("sqlite:"):
            raw = re.sub(r"^sqlite:(//)?", "", url)
            return f"sqlite:{self.path(raw)}"
        return url

    def keys_url(self, site: Site) -> str:
        if site.keys:
            return self.backend_url(site.keys)
        return f"sqlite:{self.keyring_path.parent / 'keys' / f'{site.id}.sqlite'}"

    @property
    def local_site(self) -> str:
        return self.model.local_site or self.model.default_site

    @property
    def pack_paths(self) -> list[Path]:
        return [self.path(p) for p in self.model.packs]


def find_config(path: str | os.PathLike[str] | None = None) -> Path:
    """The configuration file: ``path``, else ``DOMICILE_CONFIG``, else ./domicile.yaml. A
    folder (such as the one ``domicile init`` made) stands for the domicile.yaml in it."""
    if path is None:
        path = os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG
    found = Path(path)
    if found.is_dir():
        return found / DEFAULT_CONFIG
    return found


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    p = find_config(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            "no configuration file",
            file=str(p),
            hint="run `domicile init` to write one, or pass --config FILE / set DOMICILE_CONFIG",
        ) from None
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", file=str(p)) from None
    except OSError as exc:
        raise EnvironmentProblem(
            f"{p}: cannot read it ({exc.strerror or type(exc).__name__})",
            hint="check the path and its permissions",
        ) from None
    return parse_config(text, str(p), p.resolve().parent)


def parse_config(text: str, name: str, base: Path) -> Config:
    source = YamlSource(name, text, ConfigError)
    data = source.parse()
    if not isinstance(data, dict):
        raise ConfigError("a configuration is a YAML mapping", file=name, line=1)
    model = source.validate(DeploymentConfig, data)
    ids = [s.id for s in model.sites]
    for i, sid in enumerate(ids):
        if sid in ids[:i]:
            raise source.error(("sites", i, "id"), f"site id {sid!r} is used twice")
    for cname, coll in model.collections.items():
        for i, target in enumerate(coll.replicate):
            if target.to not in ids:
                raise source.error(
                    ("collections", cname, "replicate", i, "to"),
                    f"{target.to!r} is not one of the sites",
                    hint=f"use one of: {', '.join(ids)}",
                )
            for j, fname in enumerate(target.fields or []):
                if fname not in coll.fields:
                    raise source.error(
                        ("collections", cname, "replicate", i, "fields", j),
                        f"collection {cname!r} has no field {fname!r}",
                    )
        for i, hold in enumerate(coll.retention.hold if coll.retention else []):
            for j, fname in enumerate(hold.fields):
                if fname not in coll.fields:
                    raise source.error(
                        ("collections", cname, "retention", "hold", i, "fields", j),
                        f"collection {cname!r} has no field {fname!r}",
                        hint=f"a hold names fields of its collection: {', '.join(coll.fields)}",
                    )
    for key in ("default_site", "local_site"):
        value = getattr(model, key)
        if value is not None and value not in ids:
            raise source.error(
                (key,), f"{value!r} is not one of the sites", hint=f"use one of: {', '.join(ids)}"
            )
    for node in model.federation.nodes if model.federation else ():
        if node not in ids:
            raise source.error(
                ("federation", "nodes", node),
                f"node {node!r} is not one of the sites (a node holds one site)",
                hint=f"name nodes after the sites: {', '.join(ids)}",
            )
    return Config(model, base, name)
