"""One process of ``domicile serve --workers N``.

The server's supervisor starts each worker as a fresh interpreter, which builds its own
application here (``app``, a factory) from what ``serve`` put in the environment: the
configuration file, the service settings with the command line's on top, and the number
of processes. Each worker opens the deployment itself; what the processes share, they
share through the deployment's stores and files (see ``docs/architecture.md``, "Serving").
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

ENV = "DOMICILE_SERVE_WORKER"  # JSON: {"config": PATH, "settings": {...}, "processes": N}


def spec(config: str, settings: dict[str, Any], processes: int) -> str:
    return json.dumps({"config": config, "settings": settings, "processes": processes})


def app() -> Any:
    """The application of one worker (called by uvicorn in each worker process)."""
    from domicile.access import cli_operator
    from domicile.config import ServiceSettings, load_config
    from domicile.http.app import create_app
    from domicile.http.observe import QuietErrors
    from domicile.vault import Domicile

    wanted = json.loads(os.environ[ENV])
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # The lines are the message alone: no record needs its thread's or process's names,
    # which cost a look-up each (a line per request).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    cfg = load_config(wanted["config"])
    settings = ServiceSettings.model_validate(wanted["settings"])
    vault = Domicile(cfg, operator=cli_operator())
    return QuietErrors(create_app(vault, settings=settings, processes=int(wanted["processes"])))
