"""Subjects' requests on PostgreSQL sites: found by identity, corrected everywhere, then
erased from every site and copy with a signed act."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from domicile.rights import close, fulfil, open_request
from domicile.rights.acts import verify_act
from tests.vault.conftest import SITES, Deployment

from .conftest import JOHN, WHO, World, make_world


@pytest.fixture
def pg_world(tmp_path: Path, pg_database: Callable[[str], str]) -> Iterator[World]:
    urls = {}
    for s in SITES:
        urls[s] = pg_database(s)
        urls[f"{s}_keys"] = pg_database(f"{s}_keys")
    yield from make_world(Deployment("postgresql", tmp_path, urls, None).config)


def test_rectify_then_erase_on_postgresql(pg_world: World) -> None:
    world = pg_world
    token = world.put("US", JOHN)
    subject = world.vault.store("us").get(world.vault.tokens.read(token)[1]).subject_id  # type: ignore[union-attr]
    rect = open_request(world.vault, "rectification", {"email": JOHN["email"]}, **WHO)
    assert [(h["site"], h["records"], h["copies"]) for h in rect["subject"]["holdings"]] == [
        ("de", 0, 1), ("us", 1, 0),
    ]  # fmt: skip
    fulfil(world.vault, rect["id"], fields={"city": "Boulder"})
    [copy] = world.records("de", subject)
    assert copy.version == 2
    close(world.vault, rect["id"], outcome="fulfilled")
    erasure = open_request(world.vault, "erasure", {"email": JOHN["email"]}, **WHO)
    _, act = fulfil(world.vault, erasure["id"])
    assert act is not None
    for site in SITES:
        assert world.records(site, subject) == []
    assert {(e["site"], e["action"]) for e in act["act"]["log_extract"]} == {
        ("us", "erase"), ("de", "erase"),
    }  # fmt: skip
    assert all(c["valid"] for c in verify_act(world.vault, act))
    assert all(r.ok for r in world.vault.verify_audit())


def test_a_restriction_blocks_and_lifts_on_postgresql(pg_world: World) -> None:
    from domicile.vault.errors import SubjectBlocked

    world = pg_world
    token = world.put("US", JOHN)
    req = open_request(world.vault, "restriction", {"email": JOHN["email"]}, **WHO)
    done, _ = fulfil(world.vault, req["id"])
    assert done["history"][-1]["sites"] == ["de", "us"]
    with pytest.raises(SubjectBlocked):
        world.vault.get(token, purpose="profile_view")
    with pytest.raises(SubjectBlocked):
        world.vault.get(token, purpose="profile_view", as_site="de")
    close(world.vault, req["id"], outcome="fulfilled")
    assert world.vault.get(token, purpose="profile_view").fields["city"] == JOHN["city"]
    assert all(r.ok for r in world.vault.verify_audit())
