"""Attacks on subjects' processing blocks (a restriction, a withdrawal of consent): each
test takes a path a sibling route guards with the block and tries to get past it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from domicile.rights import fulfil, open_request
from tests.rights import served
from tests.rights.conftest import WHO
from tests.rights.served import World, served_world

BASE = "/v2/storage/records/us"
PROFILE = "incountry.profile_key"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    yield from served_world(tmp_path)


@pytest.fixture
def consent_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """The served deployment, where the InCountry API's purpose rests on consent."""
    monkeypatch.setattr(served, "PURPOSES", served.PURPOSES + "  incountry: {basis: consent}\n")
    yield from served_world(tmp_path)


def _write(world: World, key: str, profile: str, **more: Any) -> Any:
    return world.http.post(
        BASE, json={"record_key": key, "profile_key": profile, **more},
        headers=world.headers("admin"),
    )  # fmt: skip


def test_incountry_write_cannot_move_a_record_into_a_withdrawn_profile(
    consent_world: World,
) -> None:
    world = consent_world
    assert _write(world, "a", "p1", body="one").status_code == 201
    assert _write(world, "c", "p2", body="two").status_code == 201
    req = open_request(world.vault, "withdrawal", {PROFILE: "p1"}, **WHO)
    fulfil(world.vault, req["id"])
    # A new record of p1 is refused: its consent is withdrawn.
    r = _write(world, "n", "p1", body="new")
    assert (r.status_code, r.json()["code"]) == (403, "subject_blocked")
    # The same data reaches p1 by rewriting another profile's record with p1's key.
    r = _write(world, "c", "p1", body="moved in")
    assert (r.status_code, r.json().get("code")) == (403, "subject_blocked"), r.text


def test_a_restricted_incountry_subject_still_gets_its_access_request(world: World) -> None:
    """A block never stops the subject's own request (``check_blocks``: a request's step
    goes ahead), for the InCountry API's records as for the vault's."""
    assert _write(world, "a", "p1", body="one").status_code == 201
    req = open_request(world.vault, "restriction", {PROFILE: "p1"}, **WHO)
    fulfil(world.vault, req["id"])
    access = open_request(world.vault, "access", {PROFILE: "p1"}, **WHO)
    _, package = fulfil(world.vault, access["id"])
    assert package is not None
    assert [r["fields"]["record_key"] for r in package["records"]] == ["a"]
