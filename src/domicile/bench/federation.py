"""``domicile bench federation``: operations across nodes against the same operations inside
one node, through the same node's public API.

A scratch federated deployment (the starter's three sites, RU, DE and US, each a real
``domicile serve --node SITE`` process on free ports: its site's keys only, its peers over
the mutual-TLS node channel with certificates of the deployment's own CA) and an API client
per node. The same keep-alive HTTP/1.1 client as ``bench http``, with ``connections``
connections, makes ``records`` requests of each kind, in turn:

- in-node writes and reads: US subjects, written and read at the US node, their home;
- cross-node writes and reads: RU subjects, asked of the US node, which sends each to the RU
  node, where it is placed, written, decided and audited (and the US node audits that it
  asked). The Art. 12 notice is on record, so each cross-node read is a full transfer of
  the record to the US (logged as one at the RU node), not a masked answer;
- local reads of the same RU records asked straight at the RU node: what the channel adds
  to a read over asking at home.

Every answer is checked (the site it names, full and not masked), so a run reports figures
only for operations that did what they are counted as. Each kind is bounded by the count
and by ``max_seconds``; its rate is what it did over the time it took. The nodes are
always stopped (SIGTERM: each signs its audit head), on failure and on Ctrl-C too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from itertools import count
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.progress import Progress

from domicile.bench.http import Connection, free_port, loop_run, percentiles, wait_ready
from domicile.bench.vault import _progress
from domicile.errors import BadInput, BenchFailed, DomicileError

NODES = ("ru", "de", "us")
ENTRY = "us"  # the node the application talks to
# Whose records each kind writes and reads: the home node, and the subject's evidence.
HOMES = {
    "in_node": ("us", {"citizenship": "US", "residence": "US"}),
    "cross_node": ("ru", {"citizenship": "RU"}),
}
SCOPES = ["records:write", "records:read", "collection:*", "purpose:*"]
ART12_NOTICE = "2025-01-15"  # on record: reads from the US are full transfers
PUT = "/v1/collections/profiles/records"
# (measure, the node asked, whose records, what they do)
MEASURES = [
    ("in_node_write", ENTRY, "in_node", "write"),
    ("cross_node_write", ENTRY, "cross_node", "write"),
    ("in_node_read", ENTRY, "in_node", "read"),
    ("cross_node_read", ENTRY, "cross_node", "read"),
    ("local_read", "ru", "cross_node", "read"),
]


def _prepare(folder: Path) -> dict[str, str]:
    """The deployment in ``folder``: the starter's, federated (a node per site on free
    ports, the CA, a certificate and a keyring per node, the Art. 12 notice on record),
    and a client per node acting from that node's site. Returns each node's API key."""
    from domicile.clients import ClientRegistry
    from domicile.config import load_config
    from domicile.deploy.starter import init
    from domicile.federation.ca import ca_dir, create_ca, issue_node
    from domicile.federation.serving import make_node_keyrings

    cfg = init(folder)
    path = Path(cfg.source)
    doc = yaml.safe_load(path.read_text())
    doc["federation"] = {"nodes": {n: {"url": f"https://127.0.0.1:{free_port()}"} for n in NODES}}
    doc.setdefault("filings", {})["ru.art12_notice"] = ART12_NOTICE
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    cfg = load_config(path)
    create_ca(ca_dir(cfg.data_dir), "bench federation")
    for node in NODES:
        issue_node(ca_dir(cfg.data_dir), node, ["127.0.0.1"])
    make_node_keyrings(cfg)
    clients = ClientRegistry(cfg.data_dir / "clients.json")
    keys = {}
    for node in (ENTRY, "ru"):
        _, keys[node] = clients.add(f"bench-{node}", [*SCOPES, f"site:{node}"], api_key=True)
    return keys


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to each (a clean stop: a node signs its audit head), then a minute for
    them all to end; SIGKILL to any still running."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + 60
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextlib.contextmanager
def _nodes(config: Path) -> Iterator[dict[str, int]]:
    """Every node as a ``domicile serve --node`` process; yields each one's API port. The
    nodes run in sessions of their own (a Ctrl-C reaches only this process), and are
    stopped here, however the block ends."""
    ports = {n: free_port() for n in NODES}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs = {n: config.parent / f"node-{n}.log" for n in NODES}
    try:
        for node in NODES:
            with open(logs[node], "wb") as sink:
                procs[node] = subprocess.Popen(
                    [sys.executable, "-m", "domicile.cli.app", "serve", "--node", node,
                     "--config", str(config), "--port", str(ports[node])],
                    stdout=subprocess.DEVNULL, stderr=sink, start_new_session=True,
                )  # fmt: skip
        for node in NODES:
            wait_ready(procs[node], ports[node], logs[node])
        yield ports
    finally:
        # A second Ctrl-C while they stop is ignored: it would leave them running.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            _stop(list(procs.values()))
        finally:
            signal.signal(signal.SIGINT, previous)


def _body(kind: str, i: int) -> dict[str, Any]:
    _, subject = HOMES[kind]
    return {
        "subject": subject,
        "fields": {
            "full_name": f"Person {i}",
            "email": f"{kind.replace('_', '-')}-{i}@example.org",  # a new subject each
            "city": "Springfield" if kind == "in_node" else "Kazan",
        },
        "purpose": "benchmark",
    }


async def _phase(
    conns: list[Connection],
    records: int,
    max_seconds: float,
    one: Callable[[Connection, int], Awaitable[None]],
    advance: Callable[[], None],
) -> dict[str, Any]:
    """``one(conn, i)`` for i in 0..records-1, over every connection, until done or
    ``max_seconds`` have passed."""
    numbers = count()
    latencies: list[float] = []
    start = time.perf_counter()
    until = time.monotonic() + max_seconds

    async def loop(conn: Connection) -> None:
        while time.monotonic() < until and (i := next(numbers)) < records:
            began = time.perf_counter()
            await one(conn, i)
            latencies.append(time.perf_counter() - began)
            advance()

    await asyncio.gather(*(loop(c) for c in conns))
    elapsed = time.perf_counter() - start
    return {"done": len(latencies), "seconds": elapsed, "latency": percentiles(latencies)}


async def _drive(
    ports: dict[str, int],
    keys: dict[str, str],
    records: int,
    connections: int,
    max_seconds: float,
    progress: Progress,
) -> dict[str, dict[str, Any]]:
    conns: dict[str, list[Connection]] = {}
    for node in (ENTRY, "ru"):
        auth = f"Bearer {keys[node]}"
        conns[node] = [
            Connection(*await asyncio.open_connection("127.0.0.1", ports[node]), auth)
            for _ in range(connections)
        ]
    tokens: dict[str, dict[int, str]] = {"in_node": {}, "cross_node": {}}

    def writer(kind: str) -> Callable[[Connection, int], Awaitable[None]]:
        home, _ = HOMES[kind]

        async def write(conn: Connection, i: int) -> None:
            answer = json.loads(
                await conn.request("POST", PUT, json.dumps(_body(kind, i)).encode())
            )
            if answer.get("site") != home:
                raise BenchFailed(
                    f"a {kind} write was placed at {answer.get('site')!r}, not {home!r}"
                )
            tokens[kind][i] = answer["token"]

        return write

    def reader(kind: str) -> Callable[[Connection, int], Awaitable[None]]:
        home, _ = HOMES[kind]
        written = list(tokens[kind].values())  # all of them, unless a bound cut the writes

        async def read(conn: Connection, i: int) -> None:
            token = written[i % len(written)]
            answer = json.loads(await conn.request("GET", f"/v1/records/{token}?purpose=benchmark"))
            if answer.get("site") != home or answer.get("masked") is not False:
                raise BenchFailed(
                    f"a {kind} read answered site {answer.get('site')!r}, masked "
                    f"{answer.get('masked')!r}: not the full record from {home!r}"
                )

        return read

    out: dict[str, dict[str, Any]] = {}
    try:
        for name, node, kind, what in MEASURES:
            if what == "read" and not tokens[kind]:
                raise BenchFailed(
                    f"no {kind} record was written in time to read", hint="raise --max-seconds"
                )
            task = progress.add_task(f"{name} (at {node})", total=records)
            one = writer(kind) if what == "write" else reader(kind)
            out[name] = await _phase(
                conns[node], records, max_seconds, one, functools.partial(progress.advance, task)
            )
            progress.remove_task(task)
    finally:
        for group in conns.values():
            for c in group:
                c.writer.close()
    return out


def _kept(keep: Path | None) -> contextlib.AbstractContextManager[str]:
    if keep is None:
        return tempfile.TemporaryDirectory(prefix="domicile-bench-federation-")
    if keep.exists() and (not keep.is_dir() or any(keep.iterdir())):
        raise BadInput(
            f"--keep {keep}: it exists and is not an empty folder",
            hint="name a new folder; the deployment is made in it and left there",
        )
    try:
        keep.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"--keep {keep}: {exc.strerror}") from None
    return contextlib.nullcontext(str(keep))


def run(
    records: int = 1_000,
    *,
    connections: int = 4,
    max_seconds: float = 120.0,
    keep: Path | None = None,
    progress: Console | None = None,
) -> dict[str, Any]:
    """Measure (see the module's words); ``keep``: make the deployment in this new folder
    and leave it there (nodes stopped), to look at what each node holds."""
    from domicile.extras import require

    require("federation", "domicile bench federation")
    with _kept(keep) as tmp:
        folder = Path(tmp) / "deployment"
        keys = _prepare(folder)
        try:
            with _progress(progress) as bars, _nodes(folder / "domicile.yaml") as ports:
                measured = loop_run(_drive(ports, keys, records, connections, max_seconds, bars))
        except DomicileError as exc:
            if keep is None:  # the nodes' logs go with the scratch folder
                exc.hint = "run again with --keep FOLDER to keep each node's log (node-SITE.log)"
            raise
    rate = {
        n: round(m["done"] / m["seconds"], 1) if m["seconds"] else 0.0 for n, m in measured.items()
    }

    def ratio(a: str, b: str) -> float:
        return round(rate[a] / rate[b], 3) if rate[b] else 0.0

    return {
        "benchmark": "federation",
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "nodes": list(NODES),
        "entry_node": ENTRY,
        "records": records,
        "connections": connections,
        "max_seconds": max_seconds,
        "cross_node_reads": "full",  # the Art. 12 notice is on record: each is a transfer
        "done": {n: m["done"] for n, m in measured.items()},
        "per_second": rate,
        "latency_ms": {n: m["latency"] for n, m in measured.items()},
        "targets": {},  # none: the figures say what the channel costs
        "ratios": {
            "cross_node_write_vs_in_node": ratio("cross_node_write", "in_node_write"),
            "cross_node_read_vs_in_node": ratio("cross_node_read", "in_node_read"),
            "cross_node_read_vs_local": ratio("cross_node_read", "local_read"),
        },
        **({"deployment": str(Path(str(keep)).resolve() / "deployment")} if keep else {}),
    }
