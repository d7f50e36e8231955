"""``domicile serve`` and ``domicile clients ...``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from domicile.cli._output import console, emit_json, errors
from domicile.config import CONFIG_ENV, DEFAULT_CONFIG, Config, load_config
from domicile.errors import BadInput, ExitCode
from domicile.files import write_private

SERVING = "serving.json"  # in the data folder while `serve` runs

clients_app = typer.Typer(
    help="Clients of the HTTP service and their scopes.", no_args_is_help=True
)
ConfigOpt = typer.Option(None, "--config", envvar=CONFIG_ENV, help="Configuration file.")
JsonOpt = typer.Option(False, "--json", help="Print one JSON object.")

EMBEDDED = Path("domicile-service")
# The event loop: uvloop where it is installed (a dependency on the platforms it builds
# on). The HTTP parser stays h11: httptools answers a request whose method is not one it
# knows with 400 before the application sees it, so it would be neither logged nor counted
# (tests/security/test_metrics_cardinality.py), and it measured no faster here, where the
# service's own work dominates.
SERVER: dict[str, Any] = {"loop": "auto", "http": "h11"}
# What the README's walkthrough does with the demo client, and nothing more: write a
# profile on signup and read it back, acting from the US site.
DEMO_SCOPES = [
    "records:write", "records:read", "site:us", "collection:profiles",
    "purpose:account_signup", "purpose:profile_view",
]  # fmt: skip


def _registry(cfg: Config) -> Any:
    from domicile.clients import ClientRegistry

    return ClientRegistry(
        cfg.data_dir / "clients.json", [c.model_dump() for c in cfg.model.clients]
    )


@clients_app.command("add")
def clients_add(
    name: str = typer.Argument(..., help="A name for the client, e.g. us-app."),
    scope: list[str] = typer.Option(
        ..., "--scope", help="A scope; repeatable. `admin` grants all."
    ),
    api_key: bool = typer.Option(
        False, "--api-key", help="Make a static API key instead of a secret."
    ),
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Make a client. Its secret (or API key) is shown once and stored hashed."""
    from domicile.clients import check_scope

    with errors(as_json):
        cfg = load_config(config)
        scopes = [
            check_scope(s, [x.id for x in cfg.sites], list(cfg.model.collections)) for s in scope
        ]
        client, secret = _registry(cfg).add(name, scopes, api_key=api_key)
    key = "api_key" if api_key else "client_secret"
    out = {
        "client_id": client.id,
        key: secret,
        "name": client.name,
        "scopes": sorted(client.scopes),
    }
    if api_key:
        out["client_secret"] = secret  # the same value: a bearer API key
    if as_json:
        emit_json(out)
        return
    console.print(f"client {client.id} ({escape(client.name)}): {', '.join(sorted(client.scopes))}")
    console.print(f"{key}: {secret}   (shown once; it is stored hashed)")


@clients_app.command("list")
def clients_list(config: str | None = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """The clients and their scopes (never their secrets)."""
    with errors(as_json):
        rows = [c.to_dict() for c in _registry(load_config(config)).all()]
    if as_json:
        emit_json(rows)
        return
    table = Table(title="Clients")
    for col in ("client_id", "name", "scopes", "source"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["client_id"], escape(r["name"]), escape(" ".join(r["scopes"])), r["source"])
    console.print(table)


@clients_app.command("remove")
def clients_remove(
    client_id: str = typer.Argument(..., help="The client id, as `clients list` shows it."),
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Remove a client: its credentials stop working at once."""
    with errors(as_json):
        _registry(load_config(config)).remove(client_id)
    if as_json:
        emit_json({"removed": client_id})
    else:
        console.print(f"removed {client_id}")


def embedded_config() -> tuple[Config, dict[str, str], bool]:
    """The embedded default: ``./domicile-service``, set up on first use by ``init`` (the
    one explicit setup path), with a demo client whose credentials are kept beside it,
    readable by the owner only. The flag says whether the demo client was made just now
    (its secret is shown then, and never again)."""
    from domicile.deploy.starter import init

    target = EMBEDDED / DEFAULT_CONFIG
    cfg = load_config(target) if target.exists() else init(EMBEDDED)
    creds_file = EMBEDDED / "demo-client.json"
    if creds_file.exists():
        creds: dict[str, str] = json.loads(creds_file.read_text(encoding="utf-8"))
        return cfg, creds, False
    client, secret = _registry(cfg).add("demo", DEMO_SCOPES)
    creds = {"client_id": client.id, "client_secret": secret}
    write_private(creds_file, json.dumps(creds))
    return cfg, creds, True


def register(app: typer.Typer) -> None:
    app.add_typer(clients_app, name="clients")

    @app.command()
    def serve(
        host: str = typer.Option("127.0.0.1", "--host"),
        port: int = typer.Option(
            8700, "--port", min=1, max=65535, envvar="DOMICILE_PORT",
            help="Port to listen on (or DOMICILE_PORT).",
        ),
        config: str | None = typer.Option(
            None, "--config", envvar=CONFIG_ENV, help="Configuration (default: the embedded one)."
        ),
        sample: bool = typer.Option(
            False, "--sample", help="Load the sample population into an empty deployment."
        ),
        metrics_address: str | None = typer.Option(
            None, "--metrics-address", metavar="HOST:PORT",
            help="Serve /metrics, unauthenticated, on this address only (service.metrics_address).",
        ),
        max_json_bytes: int | None = typer.Option(
            None, "--max-json-bytes", help="Largest JSON or form body (service.max_json_bytes)."
        ),
        max_attachment_bytes: int | None = typer.Option(
            None, "--max-attachment-bytes",
            help="Largest attachment upload (service.max_attachment_bytes).",
        ),
        auth_failures_per_source: str | None = typer.Option(
            None, "--auth-failures-per-source", metavar="RATE",
            help="Failed authentications allowed per source address, e.g. 30/minute.",
        ),
        auth_failures_per_client: str | None = typer.Option(
            None, "--auth-failures-per-client", metavar="RATE",
            help="Failed authentications allowed per client id, e.g. 10/minute.",
        ),
        workers: int | None = typer.Option(
            None, "--workers", min=1, max=256,
            help="Processes serving the deployment together (default: the number of cores).",
        ),
        node: str | None = typer.Option(
            None, "--node", metavar="SITE",
            help="Run the federation node of SITE: its own site's data and keys only, its "
            "peers over the node channel (federation.nodes in the configuration).",
        ),
    ) -> None:  # fmt: skip
        """Run the HTTP service. With no configuration, the embedded default: three SQLite
        sites in ./domicile-service and a demo client, whose credentials are printed."""
        import logging
        import os

        from domicile.access import cli_operator
        from domicile.vault import Domicile

        creds: dict[str, str] | None = None
        made = False
        overrides = {
            "metrics_address": metrics_address, "max_json_bytes": max_json_bytes,
            "max_attachment_bytes": max_attachment_bytes,
            "auth_failures_per_source": auth_failures_per_source,
            "auth_failures_per_client": auth_failures_per_client,
        }  # fmt: skip
        with errors(False):
            _require_free(host, port, "--port")
            if metrics_address:
                mh, _, mp = metrics_address.rpartition(":")
                if mp.isdigit():
                    _require_free(mh.strip("[]"), int(mp), "--metrics-address")
            if config is None and not Path(DEFAULT_CONFIG).exists():
                cfg, creds, made = embedded_config()
            else:
                cfg = load_config(config)
            settings = _settings(cfg, {k: v for k, v in overrides.items() if v is not None})
            vault: Domicile
            if node is not None:
                from domicile.federation.serving import node_spec, open_node

                if workers not in (None, 1) or sample or settings.metrics_address:
                    raise BadInput(
                        "a node runs as one process, without --sample or a metrics address",
                        hint="leave out --workers, --sample and --metrics-address with --node",
                    )
                workers = 1
                _require_free(*node_spec(cfg, node), "federation.nodes." + node)
                vault = open_node(cfg, node, operator=cli_operator())
                cfg = vault.config
            else:
                vault = Domicile(cfg, operator=cli_operator())  # who loads a sample
            if sample and not any(s.records for s in vault.sites()):
                from domicile.tour.vault import load_sample

                placed = load_sample(vault)
                console.print(f"sample population loaded: {placed} records")

        def say(text: str) -> None:
            console.print(text, soft_wrap=True)  # whole lines: commands stay copyable

        processes = workers or os.cpu_count() or 1
        base = f"http://{host}:{port}"
        say(
            f"[bold]domicile[/] serving {escape(cfg.source)} at {base} (OpenAPI: {base}/docs; console: {base}/console)"
        )
        say(
            f"sites: {', '.join(f'{s.id} ({s.country})' for s in cfg.sites)}; environment id: {cfg.model.environment_id}"
        )
        say(f"processes: {processes}")
        if settings.metrics_address:
            say(f"metrics: http://{settings.metrics_address}/metrics")
        if settings.retention_every is not None:
            say(f"retention: runs every {settings.retention_every:g} seconds, in one process")
        if creds and made:  # the secret is shown once, when it is made
            say(
                f"demo client: client_id={creds['client_id']} client_secret={creds['client_secret']}"
            )
            say(
                f"try: curl -s -u {creds['client_id']}:{creds['client_secret']} -d grant_type=client_credentials {base}/oauth2/token"
            )
        elif creds:
            say(
                f"demo client: client_id={creds['client_id']} (its secret is in "
                f"{EMBEDDED / 'demo-client.json'}, readable by you only)"
            )
        if node is not None:
            say(f"node: {node}; node channel (mutual TLS): {cfg.model.federation.nodes[node].url}")  # type: ignore[union-attr]
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        with _announced(cfg, base, processes):
            _run(vault, cfg, settings, processes, host, port)


def _run(vault: Any, cfg: Config, settings: Any, processes: int, host: str, port: int) -> None:
    import asyncio

    import uvicorn

    from domicile.http.app import create_app, metrics_app
    from domicile.http.observe import QuietErrors

    proxies = settings.trusted_proxies
    if processes > 1:
        vault.close()  # each worker opens the deployment itself
        _serve_workers(cfg, settings, processes, host, port)
        return
    app = create_app(vault, settings=settings)
    api = uvicorn.Server(
            uvicorn.Config(
                QuietErrors(app), host=host, port=port, log_level="warning", access_log=False,
                proxy_headers=bool(proxies), forwarded_allow_ips=proxies or None, **SERVER,
            )
        )  # fmt: skip
    if getattr(vault, "node", None) is not None:  # a federation node: its channel too
        from domicile.federation.serving import serve_node

        asyncio.run(serve_node(vault, api))
        if not api.started:
            raise typer.Exit(ExitCode.ENVIRONMENT)
        return
    if not settings.metrics_address:
        api.run()
        if not api.started:  # it could not listen (taken since the check)
            raise typer.Exit(ExitCode.ENVIRONMENT)
        return
    mhost, _, mport = settings.metrics_address.rpartition(":")
    metrics = uvicorn.Server(
            uvicorn.Config(
                metrics_app(app.state.service.metrics), host=mhost.strip("[]"), port=int(mport),
                log_level="warning", access_log=False, lifespan="off",
            )
        )  # fmt: skip

    async def both() -> None:
        # The metrics listener takes the signal handlers first; the API's own replace
        # them while it runs, and hand a stop signal back when it stops.
        task = asyncio.create_task(metrics.serve())
        await asyncio.sleep(0)
        try:
            await api.serve()
        finally:
            metrics.should_exit = True
            await task

    asyncio.run(both())


@contextmanager
def _announced(cfg: Config, url: str, processes: int) -> Iterator[None]:
    """While the service runs, ``DATA_DIR/serving.json`` says where (for ``status``);
    removed when it stops, unless another server has since taken it over."""
    import datetime as dt
    import os

    path = cfg.data_dir / SERVING
    me = os.getpid()
    record = {
        "pid": me, "url": url, "processes": processes,
        "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }  # fmt: skip
    write_private(path, json.dumps(record))
    try:
        yield
    finally:
        try:
            if json.loads(path.read_text(encoding="utf-8")).get("pid") == me:
                path.unlink()
        except (OSError, ValueError):
            pass


def running_server(cfg: Config) -> dict[str, Any] | None:
    """The server ``serving.json`` names, if its process still runs; reads only."""
    import os

    try:
        record: dict[str, Any] = json.loads((cfg.data_dir / SERVING).read_text(encoding="utf-8"))
        os.kill(int(record["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record


def _require_free(host: str, port: int, option: str) -> None:
    """Refuse, before anything is set up or printed, an address something else listens on:
    the machine stands in the way (exit 5), not the policy."""
    import socket

    from domicile.errors import EnvironmentProblem

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return  # an unresolvable host is uvicorn's to report
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            probe.bind(addr)
        except OSError as exc:
            raise EnvironmentProblem(
                f"cannot listen on {host}:{port} ({exc.strerror or 'in use'})",
                hint=f"stop what listens there, or pass another {option}",
            ) from None


def _serve_workers(cfg: Config, settings: Any, processes: int, host: str, port: int) -> None:
    """``serve`` with ``processes`` worker processes on one listening socket (uvicorn's
    supervisor, which restarts a worker that dies). Each builds its application in
    ``domicile.http.worker``; their metrics are kept in a private folder made for this run
    (removed when it stops) and summed by /metrics, on the API or on the metrics address,
    which this process serves."""
    import os
    import shutil
    import tempfile
    import threading

    import uvicorn

    from domicile.http import worker
    from domicile.http.app import metrics_app
    from domicile.http.observe import MULTIPROCESS_DIR, Metrics

    made = None
    if not os.environ.get(MULTIPROCESS_DIR):
        made = tempfile.mkdtemp(prefix="domicile-metrics-")  # mode 0700
        os.environ[MULTIPROCESS_DIR] = made
    os.environ[worker.ENV] = worker.spec(
        str(Path(cfg.source).resolve()), settings.model_dump(mode="json"), processes
    )
    proxies = settings.trusted_proxies
    try:
        if settings.metrics_address:
            mhost, _, mport = settings.metrics_address.rpartition(":")
            listener = uvicorn.Server(
                uvicorn.Config(
                    metrics_app(Metrics()), host=mhost.strip("[]"), port=int(mport),
                    log_level="warning", access_log=False, lifespan="off",
                )
            )  # fmt: skip
            threading.Thread(target=listener.run, name="domicile-metrics", daemon=True).start()
        uvicorn.run(
            "domicile.http.worker:app", factory=True, workers=processes, host=host, port=port,
            log_level="warning", access_log=False, proxy_headers=bool(proxies),
            forwarded_allow_ips=proxies or None, **SERVER,
        )  # fmt: skip
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)


def _settings(cfg: Config, overrides: dict[str, Any]) -> Any:
    """The configuration's ``service:`` settings with the command line's on top."""
    from pydantic import ValidationError

    from domicile.config import ServiceSettings
    from domicile.errors import BadInput

    try:
        return ServiceSettings.model_validate({**cfg.model.service.model_dump(), **overrides})
    except ValidationError as exc:
        where = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
        raise BadInput(
            f"invalid serve option(s): {where}",
            hint="--metrics-address HOST:PORT; byte counts of at least 1024; rates such as 10/minute",
        ) from None
