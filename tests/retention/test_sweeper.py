"""The service's retention timer: off unless configured; one process of the deployment
runs it (the sweep lock), another takes over when that one stops; the run is the CLI's,
named ``service:retention`` in the audit and the act."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from domicile.config import ServiceSettings
from domicile.http.app import create_app
from domicile.retention.service import acts
from domicile.retention.sweeper import CALLER, RetentionSweeper
from domicile.vault import Domicile

from .conftest import World

JOHN = {"full_name": "John Miller", "email": "john@example.com", "city": "Denver"}


def test_off_unless_configured(world: World) -> None:
    assert ServiceSettings().retention_every is None
    with pytest.raises(ValidationError):
        ServiceSettings(retention_every=1)  # a run walks every record: not every second
    with TestClient(create_app(world.vault)) as http:
        assert http.app.state.retention is None  # type: ignore[attr-defined]
    other = Domicile(world.config, clock=world.clock)
    app = create_app(other, settings=ServiceSettings(retention_every=3600))
    with TestClient(app):
        assert isinstance(app.state.retention, RetentionSweeper)
        assert app.state.retention.leads
    # Stopped with the service: its lock is free for the next one.
    after = RetentionSweeper(world.vault, 3600)
    assert after.leads
    after.stop()


def test_one_process_sweeps_and_another_takes_over(world: World) -> None:
    world.put("profiles", "US", JOHN)
    world.at(500)  # a year since its last access: due
    # Two processes of one deployment (each opens it; the lock is on the data folder).
    first = RetentionSweeper(world.vault, 3600)
    second = RetentionSweeper(Domicile(world.config, clock=world.clock), 3600)
    try:
        done = first.sweep()
        assert done is not None
        assert [(s["site"], s["records_erased"]) for s in done["sites"]] == [("us", 1)]
        assert second.sweep() is None  # the first leads
        first.stop()
        again = second.sweep()
        assert again is not None
        assert (again["sites"], again["act"]) == ([], None)  # nothing left, nothing twice
    finally:
        first.stop()
        second.stop()
        second.vault.close()
    [act] = acts(world.config)
    assert act["act"]["performed_by"] == CALLER


def test_the_timer_runs_retention(world: World) -> None:
    world.put("profiles", "US", JOHN)
    world.at(500)
    sweeper = RetentionSweeper(world.vault, 0.05).start()
    try:
        deadline = time.monotonic() + 10
        while sweeper.last is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        sweeper.stop()
    assert sweeper.last is not None
    assert sweeper.last["act"] == acts(world.config)[0]["act"]["id"]
