"""``serve_node_app`` on the standard asyncio loop, in this process (the node processes of
test_handshake.py run it on uvloop): the refusal hook gets typed ``PeerRefused`` objects,
and a connection that merely hangs up is not a refusal."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from domicile.errors import NodeUnavailable, PeerRefused
from domicile.federation.channel import NodeChannel
from domicile.federation.server import PEER_SCOPE_KEY, serve_node_app

from .conftest import Deployment, bundle, mint


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return  # no lifespan support: the server goes on without it
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": json.dumps(scope[PEER_SCOPE_KEY]).encode()})


class InProcess:
    def __init__(self, node_dir: Path) -> None:
        self.refusals: list[PeerRefused] = []
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, args=(node_dir,), daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            pytest.fail("the in-process node server did not start", pytrace=False)

    def _run(self, node_dir: Path) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()

            def ready(address: tuple[str, int]) -> None:
                self.port = address[1]
                self._ready.set()

            await serve_node_app(
                _app, node_dir, "127.0.0.1", 0, on_refusal=self.refusals.append,
                ready=ready, shutdown_trigger=self._stop.wait,
            )  # fmt: skip

        asyncio.run(main())

    def stop(self) -> None:
        assert self._loop is not None
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        assert not self._thread.is_alive()


@pytest.fixture
def server(deployment: Deployment) -> Iterator[InProcess]:
    s = InProcess(deployment.nodes["ru"])
    yield s
    s.stop()


def test_served_on_asyncio_with_typed_refusals(
    deployment: Deployment, server: InProcess, tmp_path: Path
) -> None:
    url = f"https://127.0.0.1:{server.port}"
    with NodeChannel(deployment.nodes["us"], {"ru": url}) as channel:
        assert channel.request("ru", "GET", "/").json() == "us"

    with socket.create_connection(("127.0.0.1", server.port), timeout=10):
        pass  # connect and hang up: a health check, not a peer
    cert, key = mint(deployment.ca_cert(), deployment.ca_key(), nodes=["de"],
                     usages=[ExtendedKeyUsageOID.SERVER_AUTH])  # fmt: skip
    server_only = bundle(tmp_path / "server-only", deployment.nodes["de"], cert, key)
    channel = NodeChannel(server_only, {"ru": url}, attempts=1)
    with channel, pytest.raises(NodeUnavailable):
        channel.request("ru", "GET", "/")
    with NodeChannel(deployment.nodes["de"], {"ru": url}) as channel:
        assert channel.request("ru", "GET", "/").json() == "de"  # the server serves on
    assert [type(r) for r in server.refusals] == [PeerRefused]
    assert server.refusals[0].reason == "not_a_node"
