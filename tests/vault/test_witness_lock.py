"""Witness rounds run one at a time across the deployment's processes: a round waits while
another holds the deployment's witness lock (a ``flock`` on its data folder, which a
process of ``serve --workers N`` or a command beside them takes for its round)."""

from __future__ import annotations

import fcntl
import os
import threading

from domicile.vault import Domicile
from domicile.vault.auditing import witness_round
from tests.vault.conftest import IVAN


def test_a_round_waits_for_the_round_under_way(vault: Domicile) -> None:
    vault.put("profiles", subject={"citizenship": "RU"}, fields=IVAN, purpose="signup")
    # Another process's round, as the lock sees it: an exclusive flock on the data folder.
    fd = os.open(vault.config.data_dir, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    done = threading.Event()
    heads: list[int] = []

    def run() -> None:
        heads.append(len(witness_round(vault).heads))
        done.set()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert not done.wait(1.0)  # blocked behind the other round
    finally:
        os.close(fd)  # the other round ends (or its process dies): the lock goes with it
    assert done.wait(30)
    thread.join()
    assert len(heads) == 1
    assert heads[0] >= 1  # it signed once the lock was free
