"""A node keeps its answer to a peer's write in the write's own transaction: a node that
dies right after the write committed answers the peer's retry with that answer, and
does nothing twice (a real process killed at that instant; in process, a failure raised
there)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from domicile.cli.app import app
from domicile.config import load_config
from domicile.federation.node import FederatedDomicile, Replies, StoredReplies

from .inprocess import FIELDS, RU, add_federation, in_process_nodes

ITEM = {"subject": RU, "fields": FIELDS}
RECORD_ID = "ab" * 16


class Crash(Exception):
    """The node stopping after the write committed, before anything else is done."""


@pytest.fixture
def deployment(tmp_path: Path) -> Path:
    folder = tmp_path / "dep"
    assert CliRunner().invoke(app, ["init", str(folder)]).exit_code == 0
    path = folder / "domicile.yaml"
    add_federation(path)
    return path


@pytest.fixture
def nodes(deployment: Path) -> Iterator[dict[str, FederatedDomicile]]:
    made = in_process_nodes(load_config(deployment))
    yield made
    for n in made.values():
        n.close(checkpoint=False)


def _log(ru: FederatedDomicile) -> list[dict[str, Any]]:
    return [json.loads(r.payload) for r in ru.store("ru").audit()]


def _body(ru: FederatedDomicile, op: str) -> dict[str, Any]:
    """A peer's call of ``op`` about a record of the RU node's own."""
    if op == "put":
        return _body_put()
    token = ru.put("profiles", subject=RU, fields=FIELDS, purpose="signup").token
    if op == "update":
        return {"token": token, "purpose": "fix", "client": "app", "fields": {"city": "Kazan"}}
    if op == "delete":
        return {"token": token, "purpose": "cleanup", "client": "app"}
    if op == "erase":
        return {"token": token, "purpose": "erasure", "client": "app"}
    subject = ru.store("ru").get(ru._locate(token)[1]).subject_id  # type: ignore[union-attr]
    return {"purpose": "subject_access", "client": "app", "step": "record",
            "subject": subject, "detail": {"step": "open"}}  # fmt: skip


@pytest.mark.parametrize("op", ["put", "update", "delete", "erase", "request_step"])
def test_a_retry_after_a_crash_right_after_the_write_gets_its_answer(
    nodes: dict[str, FederatedDomicile], op: str
) -> None:
    ru = nodes["ru"]
    body = _body(ru, op)
    before = len(_log(ru))
    answered: list[dict[str, Any]] = []

    def then_crash() -> tuple[int, dict[str, Any]]:
        answered.append(ru.answer_peer("us", op, json.loads(json.dumps(body))))
        raise Crash  # committed; the node keeps nothing more

    with pytest.raises(Crash):
        Replies(persist=StoredReplies(ru)).once("us", "k1", then_crash, op=op)
    written = _log(ru)[before:]
    assert written, "the write was committed before the crash"

    def again() -> tuple[int, dict[str, Any]]:
        raise AssertionError("the retry was carried out again")

    restarted = Replies(persist=StoredReplies(ru))  # nothing of the first in memory
    status, answer = restarted.once("us", "k1", again, op=op)
    assert status == 200
    first = answered[0]
    if op == "update":  # kept without values: the token and the new version
        assert answer == {"token": body["token"], "version": first["record"]["version"]}
    elif op == "erase":  # kept before the copies were reached: every copy site pending
        copy_sites = sorted({*first["copies"]["deleted"], *first["copies"]["pending"]})
        assert answer == {**first, "copies": {"deleted": [], "pending": copy_sites}}
    else:
        assert answer == first
    assert _log(ru)[before:] == written  # done once


def test_a_node_killed_between_a_put_and_anything_after_answers_the_retry(
    deployment: Path, tmp_path: Path
) -> None:
    """The RU node's process writes a peer's put and is killed (SIGKILL, by itself) as the
    write returns; a new RU node answers the retry from its store, writing nothing."""
    script = f"""
import json, os, signal
from domicile.config import load_config
from domicile.crypto.keys import LocalKeyring
from domicile.federation.node import FederatedDomicile, Replies, StoredReplies
cfg = load_config({str(deployment)!r})
ru = FederatedDomicile(cfg, node="ru", peers=None,
                       keys=LocalKeyring(cfg.as_node("ru").keyring_path))
body = json.loads({json.dumps(_body_put())!r})
def work():
    answer = ru.answer_peer("us", "put", body)
    open({str(tmp_path / "answer.json")!r}, "w").write(json.dumps(answer))
    os.kill(os.getpid(), signal.SIGKILL)
Replies(persist=StoredReplies(ru)).once("us", "k-put", work, op="put")
"""
    # Each node's keyring, made once as `init --federated` makes them.
    for n in in_process_nodes(load_config(deployment)).values():
        n.close(checkpoint=False)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=120)
    assert done.returncode == -9, done.stderr.decode()
    first = json.loads((tmp_path / "answer.json").read_text())
    nodes = in_process_nodes(load_config(deployment))
    try:
        ru = nodes["ru"]
        before = len(_log(ru))
        never: Callable[[], tuple[int, dict[str, Any]]] = _never
        status, answer = Replies(persist=StoredReplies(ru)).once("us", "k-put", never, op="put")
        assert (status, answer) == (200, first)
        assert len(_log(ru)) == before
        assert ru.store("ru").get(RECORD_ID) is not None
    finally:
        for n in nodes.values():
            n.close(checkpoint=False)


def _body_put() -> dict[str, Any]:
    return {"collection": "profiles", "purpose": "signup", "client": "app",
            "items": [ITEM], "record_ids": [RECORD_ID]}  # fmt: skip


def _never() -> tuple[int, dict[str, Any]]:
    raise AssertionError("the retry was carried out again")
