"""The gate: what every request passes before the application reads a byte of its body.

Pure ASGI middleware, in this order:

1. **Which route.** The request is matched against the application's routes exactly as the
   router will match it, so that logs, metrics and audit entries name the route's template
   even for requests refused here.
2. **Who is calling.** A route that needs a client (any route depending on
   ``authenticate``) gets one from ``Authorization: Bearer`` now, before its body is read:
   an unauthenticated 100 MB JSON is answered 401 while it is still arriving, and never
   parsed. Checking a bearer value is cheap (an HMAC, or a SHA-256 lookup), so a valid one
   is always let through; a failed one counts against the source address (see
   ``AuthThrottle``), and a source over its limit is answered 429 with ``Retry-After``.
3. **How much.** A body longer than the route's cap (``max_attachment_bytes`` on upload
   routes, ``max_json_bytes`` elsewhere) is refused with 413: at once when
   ``Content-Length`` says so, else as soon as the streamed count passes the cap (chunked
   bodies).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, compile_path
from starlette.types import Scope

from domicile.http import problems
from domicile.http.observe import ROUTE_KEY, UNMATCHED
from domicile.http.security import Principal, audit_refusal

if TYPE_CHECKING:
    from domicile.http.deps import Service

UPLOAD = "domicile_upload"  # an endpoint attribute: the route takes an attachment upload
_MAX_KEYS = 10_000  # limited sources or clients whose refusals are counted, not audited


def upload(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """Mark an endpoint as taking an attachment upload (the larger body cap)."""
    setattr(endpoint, UPLOAD, True)
    return endpoint


class BodyTooLarge(HTTPException):
    """A request body over its cap. An ``HTTPException``, so that it passes through the
    framework's body reading unchanged and is answered as a 413 problem document."""

    def __init__(self, cap: int) -> None:
        super().__init__(413, f"the request body is larger than {cap} bytes")
        self.cap = cap


def source_address(scope: Scope) -> str:
    """The peer's address (or, behind a trusted proxy, the one it names)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class AuthThrottle:
    """Counts failed authentications per source address and per client id, in moving
    windows held in memory (``limits``), and says how long a source must wait once it has
    failed too often.

    The windows are per process. A service of ``N`` processes (``serve --workers N``) gives
    each one ``1/N`` of each limit (rounded up), so the service as a whole never allows
    more failures than configured, wherever the connections land; a source whose failures
    all reach one process is limited sooner.

    A refusal is audited, but one attacker must not grow a site's append-only audit without
    bound: while a source (or client id) is limited, only its first 429 is audited; the
    others are counted, and the count is audited when the limit lifts (or the service stops).
    """

    def __init__(self, per_source: str, per_client: str, key: bytes, *, share: int = 1) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._per_source: RateLimitItem = _share(parse(per_source), share)
        self._per_client: RateLimitItem = _share(parse(per_client), share)
        self._key = key
        self._quiet: dict[str, int] = {}  # limited keys -> refusals counted, not audited
        self._lock = threading.Lock()

    def source_id(self, address: str) -> str:
        """A keyed digest of an address: audit entries from one source can be told apart
        and tied together without keeping the address itself."""
        return hmac.new(self._key, address.encode(), hashlib.sha256).hexdigest()[:16]

    def _keys(self, source: str, client: str | None) -> list[tuple[RateLimitItem, str]]:
        keys = [(self._per_source, f"source:{source}")]
        if client is not None:
            keys.append((self._per_client, f"client:{client}"))
        return keys

    def wait(self, source: str, client: str | None = None) -> float | None:
        """Seconds until ``source`` (or ``client``) may try again, or None if it may now."""
        longest: float | None = None
        for item, key in self._keys(source, client):
            if not self._limiter.test(item, key):
                reset = self._limiter.get_window_stats(item, key).reset_time
                seconds = max(1.0, reset - time.time())
                longest = seconds if longest is None else max(longest, seconds)
        return longest

    def failed(self, source: str, client: str | None = None) -> None:
        for item, key in self._keys(source, client):
            self._limiter.hit(item, key)

    def limited(self, key: str) -> bool:
        """A limited request from ``key``: True if it is to be audited (the first of its
        episode), else it is counted."""
        with self._lock:
            if key in self._quiet:
                self._quiet[key] += 1
                return False
            if len(self._quiet) >= _MAX_KEYS:
                self._quiet["*"] = self._quiet.get("*", 0) + 1
                return False
            self._quiet[key] = 0
            return True

    def lifted(self, key: str) -> int:
        """``key`` is no longer limited: how many of its refusals went unaudited."""
        with self._lock:
            return self._quiet.pop(key, 0)

    def drain(self) -> dict[str, int]:
        """Every count not yet audited (when the service stops)."""
        with self._lock:
            out = {k: n for k, n in self._quiet.items() if n}
            self._quiet.clear()
            return out


def _share(item: RateLimitItem, share: int) -> RateLimitItem:
    """One process's part of a limit shared by ``share`` processes."""
    if share <= 1:
        return item
    return type(item)(-(-item.amount // share), item.multiples, item.namespace)


@dataclass(frozen=True)
class RouteFacts:
    template: str
    authenticated: bool
    upload: bool


@dataclass(frozen=True)
class _Entry:
    regex: re.Pattern[str]
    methods: frozenset[str] | None
    facts: RouteFacts


class Gate:
    """See the module docstring. ``routes`` lists the application's routes in the order
    the router tries them, each with the prefix it is mounted under."""

    def __init__(
        self,
        app: Any,
        service: Service,
        routes: Callable[[], list[tuple[str, BaseRoute]]],
        needs_client: Callable[[BaseRoute], bool],
    ) -> None:
        self.app = app
        self.service = service
        self._routes = routes
        self._needs_client = needs_client
        self._table: list[_Entry] | None = None

    def _build(self) -> list[_Entry]:
        table = []
        for prefix, route in self._routes():
            path = getattr(route, "path", None)
            if not isinstance(path, str):
                continue
            regex, template, _ = compile_path(prefix + path)
            methods = getattr(route, "methods", None)
            endpoint = getattr(route, "endpoint", None)
            facts = RouteFacts(
                template, self._needs_client(route), bool(getattr(endpoint, UPLOAD, False))
            )
            table.append(_Entry(regex, frozenset(methods) if methods else None, facts))
        return table

    def match(self, scope: Scope) -> RouteFacts | None:
        """The route the router will take: the first full match, else the first partial
        one (a known path with another method, answered 405)."""
        if self._table is None:
            self._table = self._build()
        path, method = scope["path"], scope["method"]
        partial: RouteFacts | None = None
        for entry in self._table:
            if entry.regex.match(path):
                if entry.methods is None or method in entry.methods:
                    return entry.facts
                if partial is None:
                    partial = entry.facts
        return partial

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        facts = self.match(scope)
        scope[ROUTE_KEY] = facts.template if facts else UNMATCHED
        if facts is not None and facts.authenticated:
            refusal = await self._authenticate(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        settings = self.service.settings
        cap = settings.max_attachment_bytes if facts and facts.upload else settings.max_json_bytes
        if facts is not None and facts.upload:
            cap += 64 * 1024  # the multipart envelope around the file
        length = Headers(scope=scope).get("content-length")
        if length is not None and length.isdigit() and int(length) > cap:
            await problems.too_large(cap)(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal received
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    raise BodyTooLarge(cap)
            return message

        async def watch(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, watch)
        except BodyTooLarge:
            if started:
                raise
            await problems.too_large(cap)(scope, receive, send)

    async def _authenticate(self, scope: Scope) -> Any | None:
        """None when the caller is a client (kept in the request's state), else the
        response that refuses it."""
        svc = self.service
        header = Headers(scope=scope).get("authorization") or ""
        reason = "no credentials"
        if header[:7].lower() == "bearer ":
            reason = "invalid credentials"
            principal = svc.bearer(header[7:].strip())
            if principal is not None:
                state = scope.setdefault("state", {})
                state["principal"] = principal
                state["client"] = principal.client.id
                return None
        return await refuse_credentials(svc, scope, reason)


async def refuse_credentials(
    svc: Service, scope: Scope, reason: str, client: str | None = None
) -> Any:
    """Count a failed authentication, audit it (or count it, if its source is limited), and
    answer 401, or 429 once the source or client id is over its limit."""
    throttle = svc.throttle
    address = source_address(scope)
    source = throttle.source_id(address)
    route = scope.get(ROUTE_KEY, UNMATCHED)
    wait = throttle.wait(address, client)
    if wait is not None:
        svc.metrics.auth_refused.labels("rate_limited").inc()
        if throttle.limited(f"source:{address}"):
            await anyio.to_thread.run_sync(
                lambda: audit_refusal(
                    svc.vault, "rate limited", client=client, route=route, source=source
                )
            )
        return rate_limited(wait)
    counted = throttle.lifted(f"source:{address}")
    throttle.failed(address, client)
    svc.metrics.auth_refused.labels("missing" if reason == "no credentials" else "invalid").inc()
    extra = {"rate_limited_unaudited": counted} if counted else {}
    await anyio.to_thread.run_sync(
        lambda: audit_refusal(svc.vault, reason, client=client, route=route, source=source, **extra)
    )
    if reason == "no credentials":
        return problems.problem(
            401, "unauthorized", "unauthorized", detail="credentials are missing",
            hint="send Authorization: Bearer <token or API key>",
        )  # fmt: skip
    return problems.problem(
        401, "unauthorized", "unauthorized", detail="the credentials are not valid",
        hint="get a new token from /oauth2/token",
    )  # fmt: skip


def rate_limited(wait: float) -> Any:
    seconds = math.ceil(wait)
    return problems.problem(
        429, "rate_limited", "too many failed authentications",
        headers={"Retry-After": str(seconds)},
        detail=f"too many failed authentications from this source; retry in {seconds} s",
        hint="check the credentials before retrying",
    )  # fmt: skip


def principal_of(scope: Scope) -> Principal | None:
    found = scope.get("state", {}).get("principal")
    return found if isinstance(found, Principal) else None
