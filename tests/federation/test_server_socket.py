"""The node channel's listening socket: connections accepted from it send each write at
once (``TCP_NODELAY``), so a small answer never waits for the peer's delayed ACK. With
Nagle's algorithm on, every call across the channel took about 40 ms more (found by
``domicile bench federation``)."""

from __future__ import annotations

import asyncio
import socket

from domicile.federation.server import bind


def test_connections_accepted_on_the_node_socket_have_nagle_off() -> None:
    async def scenario() -> list[int]:
        seen: list[int] = []
        accepted = asyncio.Event()

        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            accepted.set()
            writer.close()

        listening = bind("127.0.0.1", 0)
        server = await asyncio.start_server(connection, sock=listening)
        try:
            port = listening.getsockname()[1]
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            await asyncio.wait_for(accepted.wait(), 30)
            writer.close()
        finally:
            server.close()
            await server.wait_closed()
        return seen

    assert asyncio.run(scenario()) == [1]
