"""The service's timer for retention: ``service.retention_every`` (off by default).

Each process of ``domicile serve`` (one, or the workers of ``--workers N``) starts a
sweeper when the option is set, and one of them runs retention: the first to take the
deployment's sweep lock (an exclusive ``flock`` on ``DATA_DIR/retention-sweep.lock``, the
pattern of the witness lock) keeps it while it lives, and the others try again at each
of their rounds, so another takes over when that process ends, however it ends. The run
is ``domicile retention run``'s, at the sites this process holds (a federation node's
own), named ``service:retention`` in the audit and in its acts. The log names counts,
sites and the act, never a record or a subject.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from domicile.access import Access
from domicile.errors import DomicileError
from domicile.files import try_lock
from domicile.retention.service import run

if TYPE_CHECKING:
    from domicile.vault import Domicile

CALLER = "service:retention"
log = logging.getLogger("domicile.retention")


class RetentionSweeper:
    """Runs retention every ``interval`` seconds in a thread of its own, in the one
    process of the deployment that holds the sweep lock."""

    def __init__(self, vault: Domicile, interval: float) -> None:
        self.vault = vault
        self.interval = interval
        self.last: dict[str, Any] | None = None
        self._held: int | None = None  # the descriptor holding the sweep lock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="domicile-retention", daemon=True)

    def start(self) -> RetentionSweeper:
        self._thread.start()
        return self

    @property
    def leads(self) -> bool:
        """Whether this process runs the sweeps (taking the lock if it is free)."""
        if self._held is None:
            self._held = try_lock(self.vault.config.data_dir / "retention-sweep.lock")
        return self._held is not None

    def sweep(self) -> dict[str, Any] | None:
        """One retention run, if this process leads; None if another one does."""
        if not self.leads:
            return None
        here = [s.id for s in self.vault.config.sites if self.vault.is_here(s.id)]
        self.last = run(self.vault, sites=here, access=Access.operator(CALLER))
        return self.last

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                done = self.sweep()
            except DomicileError as exc:
                log.warning("retention sweep failed: %s", exc.code)
                continue
            except Exception as exc:  # the timer must outlive one bad round
                log.error("retention sweep failed: %s", type(exc).__name__)
                continue
            if done is None:
                continue
            if done["act"]:
                log.info(
                    "retention sweep: %d records erased, %d stripped of fields; act %s",
                    sum(s["records_erased"] for s in done["sites"]),
                    sum(s["records_stripped"] for s in done["sites"]),
                    done["act"],
                )  # fmt: skip
            if done["unavailable"]:
                log.warning("retention sweep: unavailable sites %s", ", ".join(done["unavailable"]))

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)
        if self._held is not None:
            os.close(self._held)  # another process may lead now
            self._held = None
