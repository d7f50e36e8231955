"""``domicile federation check``: do these node bundles work, together, over mutual TLS?

Each bundle's own certificate goes through ``verify_peer`` as its peers will see it (in
both roles, against the bundle's CA and CRL), and then the first bundle serves a
loopback node server on a free 127.0.0.1 port to which every bundle connects through the
node channel: the handshake, HTTP/2 and the peer id the server sees are the real ones.
Nothing is written.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from domicile.errors import DomicileError, EnvironmentProblem, PeerRefused
from domicile.extras import require
from domicile.federation.ca import NODE_CERT
from domicile.federation.tls import Trust, own_node_id, verify_peer

START_TIMEOUT = 30.0


async def _whoami(scope: dict[str, Any], receive: Any, send: Any) -> None:
    from domicile.federation.server import PEER_SCOPE_KEY

    if scope["type"] != "http":
        return
    body = json.dumps({"peer": scope[PEER_SCOPE_KEY]}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


class _Loopback:
    """A node server for one bundle, on its own event loop in a thread."""

    def __init__(self, bundle: Path) -> None:
        from domicile.federation.server import serve_node_app

        self.port = 0
        self.error: BaseException | None = None
        ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

        def on_ready(address: tuple[str, int]) -> None:
            self.port = address[1]
            ready.set()

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await serve_node_app(
                _whoami, bundle, "127.0.0.1", 0, ready=on_ready, shutdown_trigger=self._stop.wait
            )

        def run() -> None:
            try:
                asyncio.run(main())
            except BaseException as exc:  # reported by the caller
                self.error = exc
                ready.set()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not ready.wait(START_TIMEOUT) or self.error is not None:
            raise EnvironmentProblem(
                "could not serve a loopback node on 127.0.0.1 for the check",
                hint="check that this machine can listen on a loopback port",
            )

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(START_TIMEOUT)


def check_bundles(bundles: list[Path], *, now: dt.datetime | None = None) -> dict[str, Any]:
    """Check ``bundles`` (node folders): each certificate as its peers see it, then a
    loopback request from every bundle to the first. ``ok`` is False if anything failed."""
    require("federation", "`domicile federation check`")
    from domicile.federation.channel import NodeChannel

    when = now or dt.datetime.now(dt.UTC)
    nodes: list[dict[str, Any]] = []
    usable: list[tuple[str, Path]] = []
    for folder in bundles:
        entry: dict[str, Any] = {"bundle": str(folder)}
        try:
            node = own_node_id(folder)
            cert = x509.load_pem_x509_certificate((folder / NODE_CERT).read_bytes())
            der = cert.public_bytes(Encoding.DER)
            trust = Trust.of_node(folder)
            entry.update(node=node, serial=format(cert.serial_number, "x"))
            entry["not_after"] = cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
            entry["days_left"] = (cert.not_valid_after_utc - when).days
            for role in ("client", "server"):
                verify_peer(der, trust, role=role, expect=node, now=when)
        except PeerRefused as refusal:
            entry.update(ok=False, problem=refusal.reason)
        except DomicileError as exc:
            entry.update(ok=False, problem=exc.message)
        else:
            entry["ok"] = True
            usable.append((node, folder))
        nodes.append(entry)
    calls: list[dict[str, Any]] = []
    if usable:
        server_node, server_dir = usable[0]
        loopback = _Loopback(server_dir)
        try:
            for node, folder in usable:
                call: dict[str, Any] = {"from": node, "to": server_node}
                url = f"https://127.0.0.1:{loopback.port}"
                try:
                    with NodeChannel(folder, {server_node: url}, timeout=10, attempts=1) as ch:
                        answer = ch.request(server_node, "GET", "/")
                    seen = answer.json().get("peer")
                    call.update(ok=seen == node, peer_seen=seen, http_version=answer.http_version)
                except DomicileError as exc:
                    call.update(ok=False, problem=exc.message)
                calls.append(call)
        finally:
            loopback.close()
    ok = bool(nodes) and all(n["ok"] for n in nodes) and all(c["ok"] for c in calls)
    return {"ok": ok, "nodes": nodes, "handshakes": calls}
