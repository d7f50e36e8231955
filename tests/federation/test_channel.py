"""The node channel's answers when a node is slow, flaky or gone: bounded retries that
carry one idempotency key, and ``NodeUnavailable`` (exit 4) in the end."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from domicile.errors import BadInput, ExitCode, NodeUnavailable
from domicile.federation.channel import NodeChannel

from .conftest import Deployment, NodeServer


class CuttingProxy:
    """A TCP proxy on a free loopback port in front of a node server. It forwards bytes
    both ways (TLS stays end to end) but cuts its first connection as soon as the server
    has put a request on record: a connection dropped after the request arrived and before
    its answer came back."""

    def __init__(self, server: NodeServer) -> None:
        self.server = server
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.cut = threading.Event()
        self._sockets: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
                client.settimeout(None)
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(("127.0.0.1", self.server.port), timeout=10)
            self._sockets += [client, upstream]
            pumps = [
                threading.Thread(target=self._pump, args=(client, upstream), daemon=True),
                threading.Thread(target=self._pump, args=(upstream, client), daemon=True),
            ]
            for t in pumps:
                t.start()
            if self.connections == 1:
                threading.Thread(target=self._cut, args=(client, upstream), daemon=True).start()

    def _cut(self, *socks: socket.socket) -> None:
        deadline = time.monotonic() + 30
        while not self.server.requests() and time.monotonic() < deadline:
            time.sleep(0.02)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self.cut.set()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        self._thread.join(5)
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


@pytest.fixture
def proxy(deployment: Deployment, node_servers: Any) -> Iterator[CuttingProxy]:
    p = CuttingProxy(node_servers(deployment.nodes["ru"]))
    yield p
    p.close()


def test_a_dropped_connection_is_retried_with_the_same_idempotency_key(
    deployment: Deployment, proxy: CuttingProxy
) -> None:
    channel = NodeChannel(
        deployment.nodes["de"], {"ru": f"https://127.0.0.1:{proxy.port}"}, timeout=30,
        attempts=3, backoff=0.05,
    )  # fmt: skip
    with channel:
        answer = channel.request("ru", "POST", "/hold", json={"n": 1}, idempotency_key="op-7")
    assert proxy.cut.is_set()
    assert answer.status_code == 200
    seen = proxy.server.requests()
    assert [(r["key"], r["delivery"]) for r in seen] == [("op-7", 1), ("op-7", 2)]
    assert answer.json()["delivery"] == 2
    assert proxy.connections == 2


def test_a_503_is_retried_with_the_same_generated_key(
    deployment: Deployment, node_servers: Any
) -> None:
    ru = node_servers(deployment.nodes["ru"])
    with NodeChannel(deployment.nodes["de"], {"ru": ru.url}, attempts=3, backoff=0.05) as ch:
        answer = ch.request("ru", "PUT", "/flaky", json={})
    assert answer.status_code == 200
    keys = [r["key"] for r in ru.requests()]
    assert len(keys) == 2
    assert keys[0] == keys[1]
    assert len(keys[0]) == 32


def test_a_node_that_keeps_answering_503_is_unavailable_after_bounded_tries(
    deployment: Deployment, node_servers: Any
) -> None:
    ru = node_servers(deployment.nodes["ru"])
    ch = NodeChannel(deployment.nodes["de"], {"ru": ru.url}, attempts=3, backoff=0.05)
    with ch, pytest.raises(NodeUnavailable) as caught:
        ch.request("ru", "GET", "/down", idempotency_key="k")
    assert caught.value.exit_code == ExitCode.UNAVAILABLE == 4
    assert caught.value.node == "ru"
    assert "HTTP 503" in caught.value.message
    assert [r["key"] for r in ru.requests()] == ["k", "k", "k"]


def test_a_node_that_does_not_listen_is_unavailable(deployment: Deployment) -> None:
    with socket.socket() as s:  # a port that was free a moment ago and is closed now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with (
        NodeChannel(
            deployment.nodes["de"], {"ru": f"https://127.0.0.1:{port}"}, attempts=2, backoff=0.05
        ) as ch,
        pytest.raises(NodeUnavailable) as caught,
    ):
        ch.request("ru", "GET", "/peer")
    assert "ConnectError" in caught.value.message


def test_a_node_that_accepts_and_never_answers_is_unavailable_after_its_timeout(
    deployment: Deployment,
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        ch = NodeChannel(
            deployment.nodes["de"], {"ru": f"https://127.0.0.1:{port}"}, timeout=0.5,
            attempts=2, backoff=0.05,
        )  # fmt: skip
        with ch, pytest.raises(NodeUnavailable):
            ch.request("ru", "GET", "/peer")


def test_misuse_is_bad_input(deployment: Deployment) -> None:
    with pytest.raises(BadInput):
        NodeChannel(deployment.nodes["de"], {"ru": "http://127.0.0.1:1"})
    with pytest.raises(BadInput):
        NodeChannel(deployment.nodes["de"], {"RU!": "https://127.0.0.1:1"})
    with NodeChannel(deployment.nodes["de"], {"ru": "https://127.0.0.1:1"}) as ch:
        with pytest.raises(BadInput):
            ch.request("us", "GET", "/peer")
        with pytest.raises(BadInput):
            ch.request("ru", "GET", "peer")
