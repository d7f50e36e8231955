"""Who is acting, from which site, with which rights: the one check every operation makes.

An ``Access`` is the caller of an operation: a client of the HTTP service (its id, its
scopes and the site it acts from), or the local operator of the CLI or the SDK (full
rights, named for the audit, e.g. ``cli:anna``). The vault's record operations take one
(``access=``) and ask ``Access.missing`` (through ``Domicile.authorize``, which audits a
refusal) before they decrypt, write or audit anything as allowed; the HTTP routes that
touch no record ask the same place. So there is one answer to "may this caller do this",
for every route, command and SDK call, and it cannot drift between them.

Scopes (see ``domicile.clients``): an operation (``records:read``, ``filings:write``, ...)
and the constraints ``site:ID`` (the sites the caller may act from), ``collection:NAME``
and ``purpose:NAME`` (``*`` for any), or ``admin`` for everything. A constraint with no
scope of its kind allows nothing: a client without ``purpose:`` scopes may name no purpose.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from domicile.errors import DomicileError, ExitCode


class Forbidden(DomicileError):
    """The caller lacks a scope (``missing``), or may not act as it asked. Audited."""

    code = "forbidden"
    exit_code = ExitCode.REFUSED

    def __init__(self, message: str, *, hint: str | None = None, missing: str | None = None):
        super().__init__(message, hint=hint)
        self.missing = missing


@dataclass(frozen=True)
class Access:
    """A caller. ``scopes`` None means every right (the local operator)."""

    client: str | None = None  # a client id, or the operator's name ("cli:USER"); audited
    site: str | None = None  # the site it acts from; None: the deployment's local site
    scopes: frozenset[str] | None = None
    # A caller of another node, relayed by that node over the node channel: the peer's id,
    # taken from its verified certificate (never from a request's words). It acts from the
    # peer's site, whatever it asked, with at most the peer's allowed scopes.
    relayed_by: str | None = None

    @classmethod
    def relayed(
        cls, peer: str, client: str | None, claimed: Iterable[str] | None, allowed: Iterable[str]
    ) -> Access:
        """The caller a peer node relays: named ``node:PEER/CLIENT`` in the audit, acting
        from the peer's site, with the scopes it claims cut down to what this node lets
        peers ask (``allowed``: operations) and never ``admin`` or another site."""
        ops = set(allowed) - {"admin"}  # whatever the configuration says
        if claimed is None:  # the peer's own operator: every operation peers may ask
            scopes = {*ops, "collection:*", "purpose:*"}
        else:
            scopes = {
                s for s in claimed
                if s in ops or s.startswith(("collection:", "purpose:"))
            }  # fmt: skip
        scopes.add(f"site:{peer}")
        return cls(f"node:{peer}/{client or 'operator'}", peer, frozenset(scopes), peer)

    @classmethod
    def operator(cls, name: str | None = None, site: str | None = None) -> Access:
        """The local operator (CLI or SDK): every right, named ``name`` in the audit."""
        return cls(name, site, None)

    @classmethod
    def of_client(cls, client_id: str, scopes: Iterable[str], site: str | None) -> Access:
        return cls(client_id, site, frozenset(scopes))

    @property
    def unrestricted(self) -> bool:
        return self.scopes is None or "admin" in self.scopes

    def acting_from(self, site: str) -> Access:
        return replace(self, site=site)

    def missing(
        self,
        operation: str,
        *,
        site: str | None = None,
        collection: str | None = None,
        purpose: str | None = None,
    ) -> str | None:
        """None when allowed, else the first scope that is missing. A constraint given as
        None is not asked about (it does not apply to the operation)."""
        scopes = self.scopes
        if scopes is None or "admin" in scopes:
            return None
        if operation not in scopes:
            return operation
        if site is not None and f"site:{site}" not in scopes:
            return f"site:{site}"
        if collection is not None and not (
            "collection:*" in scopes or f"collection:{collection}" in scopes
        ):
            return f"collection:{collection}"
        if purpose is not None and not ("purpose:*" in scopes or f"purpose:{purpose}" in scopes):
            return f"purpose:{purpose}"
        return None

    def refusal(self, missing: str) -> Forbidden:
        """The error for a missing scope: names the scope, never a value of the request."""
        return Forbidden(
            f"client {self.client!r} lacks the scope {missing!r}",
            hint="ask an administrator: domicile clients add NAME --scope ...",
            missing=missing,
        )

    def audit_detail(self, operation: str, missing: str) -> dict[str, Any]:
        return {"operation": operation, "reason": "scope", "missing_scope": missing}


def cli_operator() -> str:
    """The name the CLI's operations carry in the audit: ``cli:`` and the OS user."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no user name in the environment or the password database
        return "cli:unknown"
