"""Serving an ASGI app to other nodes over mutual TLS, with each request's verified peer.

Neither uvicorn nor hypercorn (0.18) puts the client's certificate into the ASGI scope
(hypercorn reads the TLS object only for ALPN). So this module accepts the connections
itself: asyncio's TLS server runs the handshake with ``tls.server_context``, whose
``verify_peer`` refuses a bad peer inside the handshake and records the node id of a good
one on the connection's TLS object; then each connection is handed to hypercorn's
connection class (HTTP/2 or HTTP/1.1 by ALPN) with an app that sets
``scope["domicile.peer"]`` to that node id. The id comes from the handshake of the very
connection that carries the request, never from anything the peer sends over it.

hypercorn's ``TCPServer``, ``WorkerContext`` and ``Lifespan`` are its internal classes;
``pyproject.toml`` pins hypercorn below the next minor version for that reason, and
tests/federation runs every path through them.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

from domicile.extras import require
from domicile.federation.tls import Refusal, peer_of, server_context

PEER_SCOPE_KEY = "domicile.peer"  # the verified node id of the connection's peer

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


class _WithPeer:
    """The app, for one connection: every request scope names the verified peer."""

    def __init__(self, app: ASGIApp, peer: str) -> None:
        self.app = app
        self.peer = peer

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            scope[PEER_SCOPE_KEY] = self.peer
        await self.app(scope, receive, send)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket (``port`` 0: a free one; read it with ``getsockname``).

    Its protocol is named (``IPPROTO_TCP``, not 0): asyncio turns Nagle's algorithm off
    (``TCP_NODELAY``) only on connections whose socket says it is TCP, and with it on,
    every answer on the channel waited for the peer's delayed ACK (about 40 ms a call)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(512)
    sock.setblocking(False)
    return sock


async def serve_node_app(
    app: ASGIApp,
    node_dir: Path,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    on_refusal: Refusal | None = None,
    sock: socket.socket | None = None,
    ready: Callable[[tuple[str, int]], None] | None = None,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    handshake_timeout: float = 10.0,
    graceful_timeout: float = 5.0,
) -> None:
    """Serve ``app`` to the deployment's nodes on ``host:port`` (or on ``sock``) until
    ``shutdown_trigger`` returns (default: SIGINT or SIGTERM).

    Only peers whose certificate ``tls.verify_peer`` accepts get a connection; each refusal
    is logged and passed to ``on_refusal`` (the node writes its audit entry there; it is
    called on the event loop, so it must not block for long). ``ready`` is called with the
    bound address once connections are accepted. The app's lifespan runs around it all."""
    require("federation", "serving a node")
    from hypercorn.asyncio.lifespan import Lifespan
    from hypercorn.asyncio.tcp_server import TCPServer
    from hypercorn.asyncio.worker_context import WorkerContext
    from hypercorn.config import Config
    from hypercorn.utils import wrap_app

    ctx = server_context(node_dir, on_refusal=on_refusal)
    config = Config()
    config.graceful_timeout = graceful_timeout
    config.accesslog = None
    loop = asyncio.get_running_loop()

    lifespan_state: dict[str, Any] = {}
    lifespan = Lifespan(
        wrap_app(cast(Any, app), config.wsgi_max_body_size, "asgi"), config, loop, lifespan_state
    )
    lifespan_task = loop.create_task(lifespan.handle_lifespan())
    await lifespan.wait_for_startup()
    if lifespan_task.done() and lifespan_task.exception() is not None:
        raise lifespan_task.exception()  # type: ignore[misc]

    context = WorkerContext(None)
    tasks: set[asyncio.Task[None]] = set()

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        peer = peer_of(writer.get_extra_info("ssl_object"))
        if peer is None:  # not reachable: the handshake raises for every unverified peer
            writer.close()
            return
        per_connection = wrap_app(
            cast(Any, _WithPeer(app, peer)), config.wsgi_max_body_size, "asgi"
        )
        await TCPServer(per_connection, loop, config, context, lifespan_state, reader, writer)

    listening = sock or bind(host, port)
    server = await asyncio.start_server(
        connection, sock=listening, ssl=ctx, ssl_handshake_timeout=handshake_timeout
    )
    stop = asyncio.Event()
    if shutdown_trigger is None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)

        async def _wait() -> None:
            await stop.wait()

        shutdown_trigger = _wait
    try:
        if ready is not None:
            name = listening.getsockname()
            ready((name[0], name[1]))
        await shutdown_trigger()
    finally:
        await context.terminated.set()
        server.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()
        if tasks:
            await asyncio.wait(list(tasks), timeout=graceful_timeout)
        for task in list(tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await lifespan.wait_for_shutdown()
        lifespan_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await lifespan_task


def run_node_app(app: ASGIApp, node_dir: Path, host: str, port: int, **kwargs: Any) -> None:
    """``serve_node_app`` in a new event loop (uvloop's where installed), until a signal."""
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - Windows
        runner = asyncio.run  # type: ignore[assignment]
    runner(serve_node_app(app, node_dir, host, port, **kwargs))
