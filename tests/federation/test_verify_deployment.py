"""``audit verify --deployment``: each node verifies its own log and signs its answer; the
asking node checks each answer against the heads it witnessed, and says which nodes did
not answer (exit 4)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from domicile.cli.app import app
from domicile.config import load_config
from domicile.federation.node import FederatedDomicile
from domicile.federation.verify import verify_deployment

from .inprocess import FIELDS, RU, US, Direct, add_federation, in_process_nodes


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[dict[str, FederatedDomicile]]:
    folder = tmp_path / "dep"
    assert CliRunner().invoke(app, ["init", str(folder)]).exit_code == 0
    add_federation(folder / "domicile.yaml")
    made = in_process_nodes(load_config(folder / "domicile.yaml"))
    us = made["us"]
    us.put("profiles", subject=RU, fields=FIELDS, purpose="signup")
    us.put("profiles", subject=US, fields=FIELDS, purpose="signup")
    for n in made.values():  # each node's head, witnessed by the others
        n.witness()
    us.put("profiles", subject=RU, fields={**FIELDS, "full_name": "B"}, purpose="signup")
    made["ru"].witness()  # a newer RU head: the US node holds the older one, and asks a proof
    yield made
    for n in made.values():
        n.close(checkpoint=False)


class Altering(Direct):
    """The channel with someone on it who makes the RU node's verification say ok."""

    def call(
        self, node: str, op: str, body: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        answer = super().call(node, op, body, idempotency_key=idempotency_key)
        if op == "verify" and node == "ru":
            answer["report"] = {**answer["report"], "ok": True, "status": "verified"}
        return answer


def test_every_node_verifies_its_own_log_and_the_asker_checks_each_answer(
    nodes: dict[str, FederatedDomicile],
) -> None:
    us, ru = nodes["us"], nodes["ru"]
    out = verify_deployment(us)
    assert out.ok, out.to_dict()
    assert [n.node for n in out.nodes] == ["us", "de", "ru"]
    by = {n.node: n for n in out.nodes}
    assert by["ru"].report is not None
    assert by["ru"].report["witnessed"] > 0
    assert "signed with node ru's key" in by["ru"].checked
    assert any("extends the one witnessed here" in c for c in by["ru"].checked)
    # The asker's own log: verified here against the heads of it the others witnessed.
    assert by["us"].report is not None
    assert by["us"].report["witnesses"] == ["de", "ru"]
    before = [r.payload for r in ru.store("ru").audit()]
    verify_deployment(us)
    assert [r.payload for r in ru.store("ru").audit()] == before  # nothing written there

    us.peers.down.add("de")  # type: ignore[attr-defined]
    out = verify_deployment(us)
    assert out.unavailable == ["de"]
    assert not out.ok
    us.peers.down.clear()  # type: ignore[attr-defined]

    # The RU log altered in its database: the RU node's own verification finds it, and an
    # answer changed on the way to say otherwise does not verify with the RU node's key.
    path = ru.store("ru").url.removeprefix("sqlite:")  # type: ignore[attr-defined]
    with sqlite3.connect(path) as db:
        db.execute("DROP TRIGGER audit_append_only_update")
        db.execute("UPDATE audit SET payload = payload || ' ' WHERE seq = 2")
    ru.forget_store("ru")
    found = {n.node: n for n in verify_deployment(us).nodes}["ru"]
    assert not found.ok
    assert found.problems == []  # a true answer: the RU node's report says what is wrong
    assert found.report is not None
    assert found.report["first_bad"]["seq"] == 2
    us.peers = Altering("us", nodes)
    altered = {n.node: n for n in verify_deployment(us).nodes}["ru"]
    assert not altered.ok
    assert altered.problems == ["node ru's answer is not signed with its key"]

    # Each ask is a walk of the whole log: a node answers a peer a few per interval, and
    # audits the first refusal of an interval.
    ru.verify_limit = 0
    for _ in range(2):
        limited = {n.node: n for n in verify_deployment(us).nodes}["ru"]
        assert not limited.ok
        assert "asks to verify this node's log" in limited.problems[0]
    refused = [
        e for e in (json.loads(r.payload) for r in ru.store("ru").audit())
        if e["action"] == "refuse" and e["detail"].get("operation") == "node_verify"
    ]  # fmt: skip
    assert [e["detail"]["reason"] for e in refused] == ["rate_limited"]


def test_the_command_names_the_nodes_that_do_not_answer(tmp_path: Path) -> None:
    from .test_nodes_processes import federate

    folder = tmp_path / "dep"
    federate(folder)  # certificates and keyrings; no node is running
    config = str(folder / "domicile.yaml")
    runner = CliRunner()
    done = runner.invoke(
        app, ["audit", "verify", "--deployment", "--node", "us", "--json", "--config", config]
    )
    assert done.exit_code == 4, done.output
    out = json.loads(done.stdout)
    assert (out["ok"], out["unavailable"]) == (False, ["de", "ru"])
    assert [n["node"] for n in out["nodes"]] == ["us"]
    told = runner.invoke(
        app, ["audit", "verify", "--deployment", "--node", "us", "--config", config]
    )
    assert told.exit_code == 4
    assert "de, ru did not answer" in told.output
    alone = runner.invoke(app, ["audit", "verify", "--node", "us", "--config", config])
    assert alone.exit_code == 2
    assert "--deployment and --node go together" in alone.output
