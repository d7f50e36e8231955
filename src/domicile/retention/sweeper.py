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

import os
from typing import TYPE_CHECKING, Any

from domicile.access import Access
from domicile.files import try_lock
from domicile.periodic import Periodic
from domicile.retention.service import run

if TYPE_CHECKING:
    from domicile.vault import Domicile

CALLER = "service:retention"


class RetentionSweeper(Periodic):
    """Runs retention every ``interval`` seconds in a thread of its own, in the one
    process of the deployment that holds the sweep lock."""

    def __init__(self, vault: Domicile, interval: float) -> None:
        super().__init__(interval, "domicile-retention", "retention sweep", "domicile.retention")
        self.vault = vault
        self._held: int | None = None  # the descriptor holding the sweep lock

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

    def round(self) -> None:
        done = self.sweep()
        if done is None:
            return
        if done["act"]:
            self.log.info(
                "retention sweep: %d records erased, %d stripped of fields; act %s",
                sum(s["records_erased"] for s in done["sites"]),
                sum(s["records_stripped"] for s in done["sites"]),
                done["act"],
            )  # fmt: skip
        if done["unavailable"]:
            self.log.warning(
                "retention sweep: unavailable sites %s", ", ".join(done["unavailable"])
            )

    def stop(self, timeout: float = 60) -> None:
        super().stop(timeout)
        if self._held is not None:
            os.close(self._held)  # another process may lead now
            self._held = None
