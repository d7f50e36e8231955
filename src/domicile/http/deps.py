"""What the routers share: the service, its dependencies and its one authorization step.

The application (``app.py``) imports the routers (``native.py``, ``incountry.py``), and the
routers import what they depend on from here, never from ``app.py``.

The vault's work is blocking (a database, a key store). Routes hand it to the service's
own executor (``Service.run``): a small pool of threads kept for the vault, so that the
event loop never blocks on a database and concurrent reads at a site can share one audit
commit, without the generic thread pool's extra scheduling on every request. A single
read on a deployment whose every site is on this machine (SQLite files, keys in the
keyring, no federation) waits on nothing but those files: it runs where it arrives, on
the event loop (``Service.run_single``), and saves the hop to a thread and back, which
cost more than the read itself. Writes stay on the executor, where concurrent ones share
a commit (on the event loop, each alone, puts measured slower).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from domicile.access import Access
from domicile.clients import ClientRegistry
from domicile.config import ServiceSettings
from domicile.http.gate import AuthThrottle, principal_of, refuse_credentials
from domicile.http.observe import Metrics, route_template
from domicile.http.openapi import Contract
from domicile.http.security import Principal, TokenIssuer, Unauthorized, bearer_principal
from domicile.residency import SubjectEvidence, resolve
from domicile.vault import Domicile
from domicile.vault.values import check_fields

T = TypeVar("T")
# Threads that run the vault's work, per service process: enough for reads at a site to
# meet in one audit commit and for a slow site not to hold up the others; few enough that
# they do not fight over the interpreter.
VAULT_THREADS = max(4, min(8, (os.cpu_count() or 1) * 2))


# Bearer values whose client is known (see ``Service.bearer``), per service process.
_PRINCIPALS = 4096


def vault_executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(VAULT_THREADS, thread_name_prefix="domicile-vault")


def on_this_machine(vault: Domicile) -> bool:
    """Whether every site's work waits on nothing but this machine's files: each site a
    SQLite file with its keys in a SQLite key store and the keyring (no PKCS#11 token, no
    Vault Transit), and the vault no node of a federation (whose peers answer over the
    network)."""
    if getattr(vault, "node", None) is not None:
        return False
    return all(
        site.backend.startswith("sqlite:")
        and (site.keys is None or site.keys.startswith("sqlite:"))
        and (site.key_provider is None or site.key_provider.kind == "keyring")
        for site in vault.config.sites
    )


@dataclass
class Service:
    vault: Domicile
    clients: ClientRegistry
    issuer: TokenIssuer
    metrics: Metrics
    settings: ServiceSettings
    throttle: AuthThrottle
    executor: ThreadPoolExecutor = field(default_factory=vault_executor)
    # Single reads run on the event loop (see the module docstring).
    inline: bool = False
    _running: int = field(default=0, repr=False)  # executor work in flight (``run``)
    # bearer digest -> (the clients file's stamp, the principal)
    _principals: dict[bytes, tuple[object, Principal]] = field(default_factory=dict, repr=False)
    _access: dict[tuple[Principal, str | None], Access] = field(default_factory=dict, repr=False)

    def bearer(self, value: str) -> Principal | None:
        """The client a bearer value (an access token, else an API key) belongs to, or None.

        A value once checked is remembered (by its SHA-256 digest, never the value) with
        the stamp of the clients file it was checked against, and, for an access token,
        its expiry. It is answered from memory only while the file is unchanged (the same
        inode, size and modification time: ``clients remove`` and every change of scopes
        rewrite it) and the token unexpired, so a revocation or a change of scopes applies
        to the next request, as when every request looked the client up. Clients of the
        configuration file change only with a restart. A refused value is never kept."""
        if not value or not value.isascii() or len(value) > 4096:
            return None  # as ``bearer_principal`` refuses it
        stamp = self._clients_stamp()
        digest = hashlib.sha256(value.encode()).digest()
        known = self._principals.get(digest)
        if known is not None and known[0] == stamp:
            expires = known[1].expires
            if expires is None or expires >= time.time():
                return known[1]
        principal = bearer_principal(self.issuer, self.clients, value)
        if principal is None:
            self._principals.pop(digest, None)
            return None
        if len(self._principals) >= _PRINCIPALS:
            self._principals.clear()
        self._principals[digest] = (stamp, principal)
        return principal

    def _clients_stamp(self) -> object:
        try:
            st = os.stat(self.clients.path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def access(self, principal: Principal, as_site: str | None = None) -> Access:
        """``client_access``, remembered per principal and site (both immutable)."""
        key = (principal, as_site)
        found = self._access.get(key)
        if found is None:
            found = client_access(self, principal, as_site)
            if len(self._access) >= _PRINCIPALS:
                self._access.clear()
            self._access[key] = found
        return found

    async def run(self, work: Callable[[], T]) -> T:
        """``work()`` (blocking vault work) on the service's executor, awaited."""
        self._running += 1  # counted on the event loop's thread, so without a lock
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, work)
        finally:
            self._running -= 1

    async def run_single(self, work: Callable[[], T]) -> T:
        """A single record's read: where it arrives when every site is on this machine
        (``inline``) and the executor is idle, else on the executor. While a write or a
        batch of this process runs there, it may hold a site's database, and a read on the
        event loop would wait for it there, holding up every other request of this
        process; on the executor it waits alone, and may share its audit commit with the
        batch's reads. (Writes and batches always go to the executor.)"""
        if self.inline and not self._running:
            return work()
        return await self.run(work)


async def service(request: Request) -> Service:
    # Dependencies are async where they do not block: a sync one costs a thread hop.
    svc: Service = request.app.state.service
    return svc


ServiceDep = Annotated[Service, Depends(service)]


async def authenticate(
    request: Request,
    svc: ServiceDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Principal:
    """The calling client, from ``Authorization: Bearer <access token or API key>``.

    The gate authenticates every route that depends on this before the request's body is
    read, and keeps the client in the request's state; this only hands it over."""
    principal = principal_of(request.scope)
    if principal is None:  # a route the gate did not see as needing a client: check here
        bearer = authorization or ""
        principal = svc.bearer(bearer[7:].strip()) if bearer[:7].lower() == "bearer " else None
        if principal is None:
            await refuse_credentials(svc, request.scope, "invalid credentials")
            raise Unauthorized(
                "the credentials are not valid",
                hint="send Authorization: Bearer <token or API key>",
            )
        request.state.client = principal.client.id
    return principal


PrincipalDep = Annotated[Principal, Depends(authenticate)]


def client_access(svc: Service, principal: Principal, as_site: str | None = None) -> Access:
    """The client as a caller of the vault: its id and scopes, acting from ``as_site`` when
    it names one, else from its only site, else from the service's local site. Whether it
    may act from there is checked with everything else, by ``Domicile.authorize``."""
    client = principal.client
    sites = client.sites
    site = as_site or (sites[0] if len(sites) == 1 else svc.vault.config.local_site)
    return Access.of_client(client.id, client.scopes, site)


def needs_client(route: BaseRoute) -> bool:
    """Whether a route depends on ``authenticate`` (at any depth)."""
    if not isinstance(route, APIRoute):
        return False
    stack = [route.dependant]
    while stack:
        dependant = stack.pop()
        if dependant.call is authenticate:
            return True
        stack.extend(dependant.dependencies)
    return False


def authorize(
    svc: Service,
    principal: Principal,
    operation: str,
    *,
    site: str | None = None,
    collection: str | None = None,
    purpose: str | None = None,
) -> Access:
    """Refuse (403, audited where the request arrived) unless the client's scopes allow
    this, through the vault's one check; the client as a caller otherwise. Record routes
    leave the check to the vault's operations, which make it once the record is known."""
    access = client_access(svc, principal, site)
    svc.vault.authorize(access, operation, site=site, collection=collection, purpose=purpose)
    return access


async def conforms(request: Request) -> None:
    """The dependency: refuse (422) a request the OpenAPI document refuses (or 400, in the
    vault's own words, when its checks of evidence and fields say what is wrong)."""
    svc: Service = request.app.state.service
    collection = request.path_params.get("collection")

    def explain(body: Any) -> None:
        items = body.get("records") if isinstance(body, dict) else None
        for item in items if isinstance(items, list) else [body]:
            if not isinstance(item, dict):
                continue
            if isinstance(item.get("subject"), dict):
                resolve(SubjectEvidence.from_mapping(item["subject"]))
            if collection in svc.vault.config.model.collections:
                coll = svc.vault.collection(collection)
                for key, partial in (("fields", False), ("where", True)):
                    if isinstance(item.get(key), dict):
                        check_fields(collection, coll, item[key], partial=partial)

    await check_contract(request, explain)


async def check_contract(request: Request, explain: Callable[[Any], object] | None = None) -> None:
    """Refuse (422) a request the OpenAPI document refuses, before its handler runs.
    ``explain``, given the body, raises the handler's own ``BadInput`` when it has words for
    what is wrong; the document's verdict stands when it has none."""
    app = request.app
    contract: Contract | None = getattr(app.state, "contract", None)
    if contract is None:
        contract = app.state.contract = Contract(app.openapi())
    method, template = request.method, route_template(request.scope)
    body, has_body = None, False
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    wanted = kind == "application/json" and contract.wants_body(method, template)
    if wanted and await request.body():
        body, has_body = await request.json(), True
    params = {"path": request.path_params, "query": request.query_params, "header": request.headers}
    found = contract.problems(method, template, params, body, has_body)
    if found:
        if explain is not None and has_body:
            explain(body)
        raise RequestValidationError(found)
