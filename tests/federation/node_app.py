"""A node server for the federation tests, run as its own process:
``python node_app.py NODE_DIR STATE_DIR``.

It serves, over ``serve_node_app`` (mutual TLS, uvloop), an app that answers with the
verified peer and the request's idempotency key, and appends to files in STATE_DIR what a
test checks: ``port`` (written once listening), ``requests.jsonl`` (one line per request
the app saw) and ``refusals.jsonl`` (one line per refused peer, from the refusal hook).

Paths: ``/peer`` answers 200; ``/flaky`` answers 503 the first time it sees an idempotency
key; ``/down`` always answers 503; ``/hold`` records the request and, the first time it
sees a key, waits (at most 20 s) until the connection is gone, answering nothing: the
test's proxy cuts that connection once the request is on record.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from domicile.federation.server import PEER_SCOPE_KEY, run_node_app

node_dir, state = Path(sys.argv[1]), Path(sys.argv[2])
seen: dict[str, int] = {}


def _append(name: str, data: dict[str, Any]) -> None:
    with open(state / name, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(data) + "\n")
        fh.flush()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    headers = dict(scope["headers"])
    key = headers.get(b"idempotency-key", b"").decode()
    seen[key] = seen.get(key, 0) + 1
    record = {
        "path": scope["path"],
        "peer": scope[PEER_SCOPE_KEY],
        "key": key,
        "delivery": seen[key],
        "http_version": scope["http_version"],
        "claimed_peer_header": headers.get(b"x-domicile-peer", b"").decode(),
    }
    _append("requests.jsonl", record)
    status = 200
    if scope["path"] == "/down" or (scope["path"] == "/flaky" and seen[key] == 1):
        status = 503
    if scope["path"] == "/hold" and seen[key] == 1:
        try:
            async with asyncio.timeout(20):
                while (await receive())["type"] != "http.disconnect":
                    pass
        except TimeoutError:
            pass
        return
    body = json.dumps(record).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _ready(address: tuple[str, int]) -> None:
    tmp = state / "port.tmp"
    tmp.write_text(str(address[1]))
    os.replace(tmp, state / "port")


def _refused(refusal: Any) -> None:
    _append("refusals.jsonl", {"reason": refusal.reason, **refusal.details})


if __name__ == "__main__":
    run_node_app(app, node_dir, "127.0.0.1", 0, ready=_ready, on_refusal=_refused)
