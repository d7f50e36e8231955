"""What the service tells its operators: Prometheus metrics and one JSON log line per request.

Nothing a caller sends ever becomes a label or a log field. A request is known by the
template of the route the router matched (``/v1/records/{token}``), never by its path: a
path holds tokens, record keys and countries, and a substring replacement of the path
parameters leaves pieces of them behind. A request that matches no route is ``unmatched``.
Methods outside a fixed set are ``OTHER``. So every label has a bounded set of values by
construction, however many requests an attacker sends.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import Scope

log = logging.getLogger("domicile.http")

METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
UNMATCHED = "unmatched"
# Set (to a private folder) by ``serve --workers N``: each process keeps its counts in files
# there, and /metrics sums them (``prometheus_client``'s multiprocess mode).
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
ROUTE_KEY = "domicile.route"  # the scope key where the matched template is kept


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "domicile_requests",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "domicile_request_seconds", "HTTP request latency", ["route"], registry=self.registry
        )
        self.decisions = Counter(
            "domicile_decisions",
            "Policy decisions behind requests",
            ["outcome"],
            registry=self.registry,
        )
        self.transfers = Counter(
            "domicile_transfers",
            "Transfers (reads from abroad)",
            ["destination"],
            registry=self.registry,
        )
        self.auth_refused = Counter(
            "domicile_auth_refused",
            "Requests refused for their credentials (reason: missing, invalid, rate_limited)",
            ["reason"],
            registry=self.registry,
        )
        # The labelled series of requests seen so far (method, route, status), and of
        # decisions by outcome: a dict look-up per request instead of building the labels
        # each time. Bounded, as the labels are (see the module docstring).
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._outcomes: dict[str, Any] = {}

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        series = self._series.get(key)
        if series is None:
            series = (
                self.requests.labels(method, route, status_label(status)),
                self.latency.labels(route),
            )
            self._series[key] = series
        series[0].inc()
        series[1].observe(seconds)

    def decided(self, outcome: str) -> None:
        """One more policy decision with this outcome (a fixed set of values)."""
        child = self._outcomes.get(outcome)
        if child is None:
            child = self._outcomes[outcome] = self.decisions.labels(outcome)
        child.inc()

    def exposition(self) -> bytes:
        """The text /metrics answers: this process's counts or, in a service of several
        processes, every process's counts summed."""
        if os.environ.get(MULTIPROCESS_DIR):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)


def route_template(scope: Scope) -> str:
    """The template of the route this request matched, else ``unmatched``; never the path."""
    known = scope.get(ROUTE_KEY)
    if isinstance(known, str):
        return known
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return template if isinstance(template, str) else UNMATCHED


def method_label(method: str) -> str:
    return method if method in METHODS else "OTHER"


def status_label(status: int) -> str:
    return str(status) if 100 <= status <= 599 else "other"


def log_event(event: str, level: int = logging.INFO, **fields: Any) -> None:
    """One JSON line. Callers pass ids, templates, codes and type names, never a value."""
    log.log(level, json.dumps({"event": event, **fields}, default=str))


def observed(metrics: Metrics, scope: Scope, status: int, seconds: float) -> None:
    """A request answered: its metrics, and its log line (the route's template, status,
    duration and client id; built straight into a log record, without looking up the
    caller's source line, which every line would name alike)."""
    route = route_template(scope)
    method = method_label(scope["method"])
    metrics.request(method, route, status, seconds)
    if log.isEnabledFor(logging.INFO):
        line = {
            "event": "request", "method": method, "route": route, "status": status,
            "ms": round(seconds * 1000, 2), "client": scope.get("state", {}).get("client"),
        }  # fmt: skip
        record = log.makeRecord(
            log.name, logging.INFO, __file__, 0, orjson.dumps(line).decode(), (), None, "observed"
        )
        log.handle(record)


class Observe:
    """Metrics and one JSON log line per request (pure ASGI: no extra task per request)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def record_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            observed(self.metrics, scope, status, time.perf_counter() - start)


class QuietErrors:
    """The outermost layer under a server: an exception that escapes the application is
    logged by its type only. (The server's own log would print its message and traceback,
    and an exception's message can hold a value.)"""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            if scope["type"] != "http":
                raise
            log_event(
                "unhandled", logging.ERROR, route=route_template(scope), error=type(exc).__name__
            )
