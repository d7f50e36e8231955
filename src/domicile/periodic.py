"""The service's timers: work done every so many seconds in a thread of its own.

A timer's ``round`` runs every ``interval`` seconds until ``stop``; a round that fails
is logged (a ``DomicileError`` by its code, anything else by its class) and the next
round comes as usual (a timer outlives a site that does not answer). What a round logs is its own, and names
counts and sites, never a record or a subject.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Self

from domicile.errors import DomicileError


class Periodic:
    """Calls ``round()`` every ``interval`` seconds in a daemon thread called ``name``;
    a failed round is logged to ``logger`` as the ``what`` that failed."""

    def __init__(self, interval: float, name: str, what: str, logger: str) -> None:
        self.interval = interval
        self.what = what
        self.log = logging.getLogger(logger)
        self.last: dict[str, Any] | None = None  # what the last round did, for its callers
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def round(self) -> None:
        raise NotImplementedError

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.round()
            except DomicileError as exc:
                self.log.warning("%s failed: %s", self.what, exc.code)
            except Exception as exc:  # a thread that died would end the timer unseen
                # Its class only: a driver's message may quote what it was given.
                self.log.error("%s failed: %s", self.what, type(exc).__name__)

    def stop(self, timeout: float = 30) -> None:
        """End the thread after the round under way, waiting for it at most ``timeout``."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)
