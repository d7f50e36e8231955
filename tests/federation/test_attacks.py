"""A compromised peer: a node with a valid certificate that sends whatever it likes over
the node channel. Each attack goes over the real channel (mutual TLS with the deployment
CA's certificates, HTTP/2, the node app served as `serve --node` serves it), from a
``NodeChannel`` holding the attacker's own certificate: the node answering knows the
attacker only by that certificate, and must give it no more than what is its own."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from domicile.access import Access
from domicile.config import Config, load_config
from domicile.errors import ConfigError, DomicileError, NodeUnavailable
from domicile.federation.channel import NodeChannel
from domicile.federation.node import WRITES, FederatedDomicile, Replies
from domicile.federation.replication import NodeReplicator
from domicile.federation.routes import MAX_BODY, MAX_KEY
from domicile.federation.serving import node_spec, open_node
from domicile.policy.decision import decision_from_dict, decision_to_wire
from domicile.stores.base import SiteUnavailable
from domicile.vault.core import residency_text
from tests.federation.test_nodes_processes import federate

RU = {"citizenship": "RU"}
US = {"citizenship": "US"}
DE = {"citizenship": "DE"}
FIELDS = {"full_name": "Anna Volkova", "email": "anna.volkova@example.ru", "city": "Kazan"}


class Federation:
    """Three nodes in this process, each node's channel served over mutual TLS on its
    configured port, and each node's vault reaching its peers through the real channel."""

    def __init__(self, cfg: Config, own: dict[str, Config]) -> None:
        self.cfg = cfg
        self.own = own  # a node's own configuration, where it differs
        self.vaults: dict[str, FederatedDomicile] = {}
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.stop = asyncio.Event()
        self.served: list[Any] = []
        self.channels: list[NodeChannel] = []

    def start(self) -> Federation:
        from domicile.federation.routes import node_app
        from domicile.federation.server import serve_node_app

        self.thread.start()
        for node in ("ru", "de", "us"):
            vault = self.vaults[node] = open_node(
                self.own.get(node, self.cfg), node, operator="test"
            )
            host, port = node_spec(self.cfg, node)
            ready = threading.Event()
            self.served.append(
                asyncio.run_coroutine_threadsafe(
                    serve_node_app(
                        node_app(vault), self.cfg.node_dir(node), host, port,
                        ready=lambda _addr, ready=ready: ready.set(),
                        shutdown_trigger=self.stop.wait,
                    ),
                    self.loop,
                )
            )  # fmt: skip
            assert ready.wait(30), f"node {node}'s channel did not start"
        return self

    def close(self) -> None:
        for channel in self.channels:  # the clients first: no connection left open
            channel.close()
        for vault in self.vaults.values():
            vault.peers.channel.close()  # type: ignore[attr-defined]
        self.loop.call_soon_threadsafe(self.stop.set)
        for served in self.served:
            served.result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()
        for vault in self.vaults.values():
            vault.close(checkpoint=False)

    def attacker(self, node: str) -> NodeChannel:
        """A channel holding node ``node``'s own certificate and key, to send anything."""
        fed = self.cfg.model.federation
        assert fed is not None
        channel = NodeChannel(
            self.cfg.node_dir(node),
            {n: s.url for n, s in fed.nodes.items() if n != node},
            attempts=1,
        )
        self.channels.append(channel)
        return channel

    def audit(self, node: str) -> list[dict[str, Any]]:
        return [json.loads(r.payload) for r in self.vaults[node].store(node).audit()]


@pytest.fixture
def fed(tmp_path: Path) -> Iterator[Federation]:
    folder = tmp_path / "dep"
    federate(folder)
    path = folder / "domicile.yaml"
    import yaml

    doc = yaml.safe_load(path.read_text())
    doc["collections"]["profiles"]["replicate"] = [
        {"to": "de", "fields": ["full_name", "headline", "city"]}
    ]
    path.write_text(yaml.safe_dump(doc))
    # The DE node places records of subjects no law localizes at its own site, so that it
    # has primaries of its own beside the copies its peers send it.
    (folder / "de.yaml").write_text(yaml.safe_dump({**doc, "default_site": "de"}))
    own = {"de": load_config(folder / "de.yaml")}
    federation = Federation(load_config(path), own).start()
    try:
        yield federation
    finally:
        federation.close()


def post(channel: NodeChannel, node: str, op: str, body: Any, key: str | None = None) -> Any:
    reply = channel.request(node, "POST", f"/v1/node/{op}", json=body, idempotency_key=key)
    return reply.status_code, reply.json()


def a_us_copy_at_de(fed: Federation) -> tuple[Any, dict[str, Any]]:
    """A US subject's record, copied to DE by the US node's worker over the channel; the
    copy at DE, and a copy document like the ones a replica batch carries."""
    us, de = fed.vaults["us"], fed.vaults["de"]
    us.put("profiles", subject=US, fields={**FIELDS, "city": "Boston"}, purpose="signup")
    assert NodeReplicator(us).run_once().delivered == 1
    (copy,) = de.store("de").replicas("", 10)
    residency, _ = de._open_record(de._sites["de"], copy)
    primary = us.store("us").get(copy.record_id)
    assert primary is not None
    # What a sender attaches: a decision that allows the copy (the US node's own).
    allowed = NodeReplicator(us).permission(us._sites["us"], us._sites["de"], primary, ["city"])
    assert allowed is not None
    assert allowed.outcome.value == "allow"
    doc = {
        "record_id": copy.record_id, "subject_id": copy.subject_id, "collection": "profiles",
        "version": copy.version + 5, "created_at": copy.created_at,
        "updated_at": copy.updated_at, "fields": {"full_name": "Mallory"},
        "residency": residency_text(residency), "decision": decision_to_wire(allowed),
    }  # fmt: skip
    return copy, doc


def batch(home: str, *copies: dict[str, Any], erase: list[str] | None = None) -> dict[str, Any]:
    return {"home": home, "copies": list(copies), "remove": {}, "decisions": {},
            "erase": erase or []}  # fmt: skip


def test_a_peer_cannot_overwrite_another_peers_copy_by_its_record_id(fed: Federation) -> None:
    de = fed.vaults["de"]
    copy, doc = a_us_copy_at_de(fed)
    before = len(fed.audit("de"))
    # In the US node's name: refused (the sender is the verified certificate's node).
    status, answer = post(fed.attacker("ru"), "de", "replica", batch("us", doc))
    assert status == 403, answer
    refused = fed.audit("de")[before:]
    assert [(e["action"], e["requester"], e["detail"]["operation"]) for e in refused] == [
        ("refuse", "ru", "node_replica")
    ]
    before = len(fed.audit("de"))
    # In its own name: that copy is refused, and audited.
    status, answer = post(fed.attacker("ru"), "de", "replica", batch("ru", doc))
    assert status == 200, answer
    assert (answer["delivered"], answer["unchanged"], answer["refused"]) == (0, 0, 1)
    entries = fed.audit("de")[before:]
    assert [(e["action"], e["requester"], e["detail"]["reason"]) for e in entries] == [
        ("refuse", "ru", "not_its_own")
    ]
    after = de.store("de").get(copy.record_id)
    assert after is not None
    assert (after.version, after.primary_site) == (copy.version, "us")
    assert (
        de.get(de.tokens.issue("us", copy.record_id), purpose="view").fields["full_name"]
        == (FIELDS["full_name"])
    )


def test_a_peer_cannot_attach_a_copy_to_a_subject_that_is_not_its_own(fed: Federation) -> None:
    de = fed.vaults["de"]
    copy, doc = a_us_copy_at_de(fed)
    mine = de.put("profiles", subject=DE, purpose="signup",
                  fields={"full_name": "Erika Muster", "email": "erika@example.de"})  # fmt: skip
    assert mine.site == "de", mine
    _, local_id = de._locate(mine.token)
    local = de.store("de").get(local_id)
    assert local is not None
    ru = fed.attacker("ru")
    # The US subject's id (which every node holding its copies knows), a new record id;
    # a DE subject's id; a DE record's id: each copy refused, none written.
    forged = [
        {**doc, "record_id": "c" * 32},
        {**doc, "record_id": "d" * 32, "subject_id": local.subject_id},
        {**doc, "record_id": local.record_id, "subject_id": "e" * 32},
    ]
    status, answer = post(ru, "de", "replica", batch("ru", *forged))
    assert status == 200, answer
    assert (answer["delivered"], answer["unchanged"], answer["refused"]) == (0, 0, 3)
    # Nor erase either subject: the whole batch is refused.
    for subject in (copy.subject_id, local.subject_id):
        status, answer = post(ru, "de", "replica", batch("ru", erase=[subject]))
        assert status == 403, answer
    assert {r.record_id for r in de.store("de").subject_records(local.subject_id)} == {local_id}
    assert [r.record_id for r in de.store("de").subject_records(copy.subject_id)] == [
        copy.record_id
    ]
    assert de.store("de").get("c" * 32) is None
    assert de.store("de").get("d" * 32) is None
    # A colliding copy is refused alone: the rest of its sender's batch goes through (so a
    # record id a third node chose cannot hold up the sender's outbox).
    status, answer = post(fed.attacker("us"), "de", "replica",
                          batch("us", doc, {**doc, "record_id": local.record_id}))  # fmt: skip
    assert status == 200, answer
    assert (answer["delivered"], answer["refused"]) == (1, 1)
    newer = de.store("de").get(copy.record_id)
    assert newer is not None
    assert newer.version == doc["version"]
    assert de.store("de").get(local_id) == local


def test_a_copy_is_decided_at_the_target_not_taken_on_the_senders_word(fed: Federation) -> None:
    """The RU node sends a copy of a RU subject's record that its own pack would not let
    go to Germany (before the Art. 12 notice): the DE node decides again, keeps nothing,
    and audits the refusal; the decision the sender attached counts for nothing."""
    ru_vault, de = fed.vaults["ru"], fed.vaults["de"]
    put = ru_vault.put("profiles", subject=RU, fields=FIELDS, purpose="signup")
    _, rid = ru_vault._locate(put.token)
    primary = ru_vault.store("ru").get(rid)
    assert primary is not None
    residency, _ = ru_vault._open_record(ru_vault._sites["ru"], primary)
    permitted = NodeReplicator(ru_vault).permission(
        ru_vault._sites["ru"], ru_vault._sites["de"], primary, ["full_name"]
    )
    assert permitted is not None
    assert permitted.outcome.value != "allow"
    # ... and the sender attaches the decision of a copy that was allowed.
    _, other = a_us_copy_at_de(fed)
    decision = decision_from_dict(other["decision"])
    doc = {
        "record_id": rid, "subject_id": primary.subject_id, "collection": "profiles",
        "version": 1, "created_at": primary.created_at, "updated_at": primary.updated_at,
        "fields": {"full_name": FIELDS["full_name"]}, "residency": residency_text(residency),
        "decision": decision_to_wire(decision),
    }  # fmt: skip
    before = len(fed.audit("de"))
    status, answer = post(fed.attacker("ru"), "de", "replica", batch("ru", doc))
    assert status == 200, answer
    assert (answer["delivered"], answer["refused"]) == (0, 1)
    assert de.store("de").get(rid) is None
    assert [r.primary_site for r in de.store("de").replicas("", 10)] == ["us"]
    entries = fed.audit("de")[before:]
    assert [(e["action"], e.get("requester")) for e in entries] == [("refuse", "ru")]


def test_a_malformed_replica_batch_is_bad_input_not_a_crash(fed: Federation) -> None:
    _, doc = a_us_copy_at_de(fed)
    us = fed.attacker("us")
    for broken in ({k: v for k, v in doc.items() if k != "version"},
                   {**doc, "version": "2"}, {**doc, "fields": ["full_name"]},
                   {**doc, "residency": "not json"},
                   {**doc, "created_at": "Anna Volkova 1990-01-01"},
                   {**doc, "subject_id": "anna.volkova@example.ru"}):  # fmt: skip
        status, answer = post(us, "de", "replica", batch("us", broken))
        assert status == 400, answer
        assert answer["code"] == "bad_input"
        assert "Mallory" not in json.dumps(answer)
        assert "Anna" not in json.dumps(answer)
    stored = fed.vaults["de"].store("de").replicas("", 10)
    assert not [r for r in stored if "nna" in r.subject_id + r.created_at + r.updated_at]


def test_a_peer_claiming_another_identity_in_the_body_reads_as_itself(fed: Federation) -> None:
    ru_vault = fed.vaults["ru"]
    put = ru_vault.put("profiles", subject=RU, fields=FIELDS, purpose="signup")
    before = len(fed.audit("ru"))
    body = {
        "token": put.token,
        "purpose": "view",
        "client": "operator",
        "as_site": "ru",
        "site": "ru",
        "home": "ru",
        "scopes": ["admin", "site:ru", "records:read", "collection:*", "purpose:*"],
    }
    status, answer = post(fed.attacker("us"), "ru", "get", body)
    assert status == 200, answer
    record = answer["record"]
    assert record["masked"] is True
    assert record["fields"]["email"] != FIELDS["email"]
    assert record["decision"]["request"]["to_country"] == "US"
    seen = [e for e in fed.audit("ru")[before:] if e["action"].startswith("disclose")]
    assert [(e["requester"], e["client"]) for e in seen] == [("us", "node:us/operator")]
    # The caller's name goes into the RU node's audit: a name, never room for a value.
    for client in ("Anna Volkova", "x" * 129, 7):
        status, answer = post(fed.attacker("us"), "ru", "get", {**body, "client": client})
        assert status == 400, answer
        assert "Anna" not in json.dumps(answer)
    assert not [e for e in fed.audit("ru") if "Anna" in json.dumps(e)]


def test_an_idempotency_key_answers_only_the_call_it_was_made_for(fed: Federation) -> None:
    """The same key, first on a put, then on a delete: the delete is done, not answered
    with the put's answer; and another peer's call with the same key is its own call."""
    us, de = fed.attacker("us"), fed.attacker("de")
    key = "k" * 32
    put = {"collection": "profiles", "items": [{"subject": RU, "fields": FIELDS}],
           "purpose": "signup", "client": "app"}  # fmt: skip
    status, first = post(us, "ru", "put", put, key)
    assert status == 200, first
    token = first["records"][0]["token"]
    status, again = post(us, "ru", "put", put, key)  # the channel's retry: the first answer
    assert (status, again) == (200, first)
    status, gone = post(us, "ru", "delete", {"token": token, "purpose": "cleanup"}, key)
    assert status == 200, gone
    assert gone["deleted"] is True
    assert fed.vaults["ru"].store("ru").get(fed.vaults["ru"]._locate(token)[1]) is None
    status, other = post(de, "ru", "put", put, key)
    assert status == 200, other
    assert other["records"][0]["token"] != token


def test_peers_never_get_admin_whatever_the_configuration_says(tmp_path: Path) -> None:
    relayed = Access.relayed("us", "app", ["admin", "records:read"], ["records:read", "admin"])
    assert relayed.scopes is not None
    assert "admin" not in relayed.scopes
    assert not relayed.unrestricted
    assert relayed.missing("records:read", site="ru") == "site:ru"
    folder = tmp_path / "dep"
    federate(folder)
    path = folder / "domicile.yaml"
    import yaml

    doc = yaml.safe_load(path.read_text())
    doc["federation"]["peer_scopes"] = ["records:read", "admin"]
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="peer_scopes"):
        load_config(path)


def test_a_node_keeps_no_answer_to_a_read_it_was_asked_for() -> None:
    """Answers are kept for repeated writes only: a read's answer (values) is never kept,
    and never given for a later call."""
    replies = Replies()
    done: list[str] = []

    def work(what: str) -> Any:
        return lambda: (done.append(what), (200, {"answer": what}))[1]

    assert replies.once("us", "k", work("get"), op="get") == (200, {"answer": "get"})
    assert replies.once("us", "k", work("find"), op="find") == (200, {"answer": "find"})
    assert replies.once("us", "k", work("put"), op="put") == (200, {"answer": "put"})
    assert replies.once("us", "k", work("put2"), op="put") == (200, {"answer": "put"})
    assert replies.once("de", "k", work("de"), op="put") == (200, {"answer": "de"})
    assert replies.once("us", "k", work("erase"), op="erase") == (200, {"answer": "erase"})
    assert done == ["get", "find", "put", "de", "erase"]
    assert all(slot[1] in WRITES for slot in replies._seen)


def test_a_peers_answer_about_other_sites_or_malformed_is_no_answer(fed: Federation) -> None:
    """A compromised RU node answers the US node with lies: a record it says is DE's, a
    find result that is not one, a witness result in DE's name. The US node passes none of
    it on: each is an unavailable node (503, exit 4), never a crash or another site's word."""
    us, ru = fed.vaults["us"], fed.vaults["ru"]
    put = us.put("profiles", subject=RU, fields=FIELDS, purpose="signup")
    honest = ru.answer_peer

    def lie(peer: str, op: str, body: Any) -> dict[str, Any]:
        if op == "delete":  # an error whose code would carry a value into US's audit
            err = DomicileError("no")
            err.code = "Anna Volkova 1990-01-01"
            raise err
        if op == "erase":  # the unavailability of another site
            raise SiteUnavailable("us", "down")
        answer = honest(peer, op, body)
        if op == "get":
            answer["record"]["site"] = "de"
        elif op == "find":
            answer["records"] = [{"token": put.token}]
        elif op == "witness":
            answer["witness"] = "de"
        return answer

    ru.answer_peer = lie  # type: ignore[method-assign]
    with pytest.raises(NodeUnavailable):
        us.get(put.token, purpose="view")
    found = us.find("profiles", where={"email": FIELDS["email"]}, purpose="view")
    assert found.records == []
    assert "ru" in found.unavailable
    done = us.witness()
    assert [r.witness for r in done.results] == ["de"]
    assert done.unavailable == ["ru"]
    with pytest.raises(DomicileError) as raised:
        us.delete(put.token, purpose="cleanup")
    assert raised.value.code == "peer_error"
    with pytest.raises(NodeUnavailable) as down:  # 503: retried, then no answer from RU
        us.erase(put.token, purpose="erasure")
    assert down.value.node == "ru"
    asked = [e for e in fed.audit("us") if e["action"] == "request"]
    assert [e["detail"]["answer"] for e in asked[-2:]] == ["peer_error", "node_unavailable"]
    assert not [e for e in fed.audit("us") if "Anna" in json.dumps(e)]


def test_a_delete_answer_carrying_anything_else_is_no_answer(fed: Federation) -> None:
    """A compromised RU node answers a delete with more than a delete answers (a value, or
    another site's name): the US node passes none of it on."""
    us, ru = fed.vaults["us"], fed.vaults["ru"]
    honest = ru.answer_peer
    lies = iter([{"name": "Anna Volkova"}, {"site": "de"}])

    def lie(peer: str, op: str, body: Any) -> dict[str, Any]:
        answer = honest(peer, op, body)
        return {**answer, **next(lies)} if op == "delete" else answer

    ru.answer_peer = lie  # type: ignore[method-assign]
    for _ in range(2):
        put = us.put("profiles", subject=RU, fields=FIELDS, purpose="signup")
        with pytest.raises(NodeUnavailable):
            us.delete(put.token, purpose="cleanup")
    ru.answer_peer = honest  # type: ignore[method-assign]
    put = us.put("profiles", subject=RU, fields=FIELDS, purpose="signup")
    assert us.delete(put.token, purpose="cleanup") == {"deleted": True, "site": "ru", "records": 1}


def test_an_oversized_call_or_key_is_refused_and_the_node_answers_on(fed: Federation) -> None:
    us = fed.attacker("us")
    huge = {"collection": "profiles", "purpose": "signup", "items": ["x" * MAX_BODY]}
    status, answer = post(us, "ru", "put", huge)
    assert status == 400, answer
    assert "too large" in answer["message"]
    status, answer = post(us, "ru", "put", {"items": []}, key="k" * (MAX_KEY + 1))
    assert status == 400, answer
    status, answer = post(us, "ru", "find", {"collection": "profiles", "purpose": "view",
                                             "search": {"email": "0" * 64}})  # fmt: skip
    assert status == 200, answer
    # A find by the value itself is not a node call: peers send search digests only.
    status, answer = post(us, "ru", "find", {"collection": "profiles", "purpose": "view",
                                             "where": {"email": FIELDS["email"]}})  # fmt: skip
    assert status == 400, answer
    assert FIELDS["email"] not in json.dumps(answer)


def test_a_peer_asks_only_what_peer_scopes_allow_whatever_it_claims(fed: Federation) -> None:
    """The RU node lets peers only read. The US node, claiming every scope for its caller
    (or none: its own operator), may not write, update, delete or erase there; each refusal
    is audited at RU. (replica, witness and prove are the peer node's own calls, for no
    caller: they are bounded by what is the peer's own, tested above.)"""
    ru_vault = fed.vaults["ru"]
    put = ru_vault.put("profiles", subject=RU, fields=FIELDS, purpose="signup")
    ru_vault.peer_scopes = ("records:read",)
    us = fed.attacker("us")
    everything = ["admin", "records:read", "records:write", "records:delete",
                  "records:erase", "collection:*", "purpose:*", "site:ru"]  # fmt: skip
    before = len(fed.audit("ru"))
    calls = {
        "put": {"collection": "profiles", "items": [{"subject": RU, "fields": FIELDS}]},
        "update": {"token": put.token, "fields": {"city": "Omsk"}},
        "delete": {"token": put.token},
        "erase": {"token": put.token},
    }
    for scopes in (everything, None):
        for op, body in calls.items():
            status, answer = post(us, "ru", op, {**body, "purpose": "signup", "scopes": scopes},
                                  key=f"{op}-{scopes is None}")  # fmt: skip
            assert status == 403, (op, answer)
            assert answer["code"] == "forbidden"
        status, answer = post(us, "ru", "get", {"token": put.token, "purpose": "view",
                                                "scopes": scopes})  # fmt: skip
        assert status == 200, answer
    refused = [e for e in fed.audit("ru")[before:] if e["action"] == "refuse"]
    assert len(refused) == 8
    assert {e["requester"] for e in refused} == {"us"}
    assert ru_vault.get(put.token, purpose="view").fields == FIELDS


def test_a_public_api_client_at_a_node_reaches_no_node_route_and_acts_from_it_only(
    fed: Federation,
) -> None:
    """The public API a node serves to applications has no /v1/node route (those are on
    the mutual-TLS listener only), and a client there, even an admin, acts from the node's
    own site: asking as from Russia at the US node is refused, not decided as a local read."""
    from fastapi.testclient import TestClient

    from domicile.http.app import create_app

    us, ru = fed.vaults["us"], fed.vaults["ru"]
    token = us.put("profiles", subject=RU, fields=FIELDS, purpose="signup").token
    app = create_app(us)
    with TestClient(app) as http:
        _, key = app.state.service.clients.add("admin", ["admin"], api_key=True)
        auth = {"Authorization": f"Bearer {key}"}
        for path in ("/v1/node/get", "/v1/node/replica", "/node/get"):
            reply = http.post(path, json={"token": token, "purpose": "view"},
                              headers={**auth, "domicile.peer": "ru"})  # fmt: skip
            assert reply.status_code == 404, (path, reply.text)
        assert http.get("/v1/node/ping", headers=auth).status_code == 404
        before = len(fed.audit("ru"))
        reply = http.get(f"/v1/records/{token}", params={"purpose": "view", "as_site": "ru"},
                         headers=auth)  # fmt: skip
        assert reply.status_code == 400, reply.text
        assert "acts from its own site only" in reply.json()["detail"]
        _, key = app.state.service.clients.add(
            "ru-app", ["records:read", "collection:*", "purpose:*", "site:ru"], api_key=True
        )
        reply = http.get(f"/v1/records/{token}", params={"purpose": "view"},
                         headers={"Authorization": f"Bearer {key}"})  # fmt: skip
        assert reply.status_code == 400, reply.text
        assert FIELDS["email"] not in reply.text
    assert not [e for e in fed.audit("ru")[before:] if e["action"].startswith("disclose")]
    assert ru.get(token, purpose="view").fields == FIELDS


def test_a_put_naming_one_record_id_twice_is_bad_input(fed: Federation) -> None:
    """A peer names the ids of the records it forwards: the same id twice is refused
    before anything is written, as bad input (never a database error)."""
    ru = fed.vaults["ru"]
    before = len(fed.audit("ru"))
    items = [
        {"subject": RU, "fields": FIELDS},
        {"subject": RU, "fields": {**FIELDS, "city": "Ufa"}},
    ]
    status, answer = post(fed.attacker("us"), "ru", "put", {
        "collection": "profiles", "items": items, "purpose": "signup",
        "record_ids": ["f" * 32, "f" * 32],
    }, key="twice")  # fmt: skip
    assert status == 400, answer
    assert answer["code"] == "bad_input"
    assert ru.store("ru").get("f" * 32) is None
    assert not [e for e in fed.audit("ru")[before:] if e["action"] == "write"]


def test_the_node_app_served_without_a_verified_peer_refuses_every_call(fed: Federation) -> None:
    """Served without the mutual-TLS server (so no verified peer in the request's scope),
    the node app refuses every call, whatever the headers claim, and audits it."""
    from fastapi.testclient import TestClient

    from domicile.federation.routes import node_app

    ru = fed.vaults["ru"]
    token = ru.put("profiles", subject=RU, fields=FIELDS, purpose="signup").token
    before = len(fed.audit("ru"))
    with TestClient(node_app(ru)) as http:
        claims = {"domicile.peer": "us", "x-domicile-peer": "us", "x-ssl-client-s-dn": "CN=us"}
        reply = http.post("/v1/node/get", json={"token": token, "purpose": "view"},
                          headers=claims)  # fmt: skip
        assert reply.status_code == 403, reply.text
        assert FIELDS["email"] not in reply.text
        assert http.get("/v1/node/ping", headers=claims).status_code == 403
    refused = fed.audit("ru")[before:]
    assert [(e["action"], e["detail"]["reason"]) for e in refused] == [
        ("refuse", "no_verified_peer"),
        ("refuse", "no_verified_peer"),
    ]


def test_a_call_from_a_peer_is_never_forwarded_again(fed: Federation) -> None:
    """The US node asks the RU node to write a US subject's record (its home is the US
    site): RU refuses (409), rather than send it on, and asks no node anything."""
    before = {n: len(fed.audit(n)) for n in ("ru", "de", "us")}
    body = {"collection": "profiles", "items": [{"subject": US, "fields": FIELDS}],
            "purpose": "signup", "client": "app"}  # fmt: skip
    status, answer = post(fed.attacker("us"), "ru", "put", body, key="loop")
    assert status == 409, answer
    assert not [e for e in fed.audit("ru")[before["ru"] :] if e["action"] in ("request", "write")]
    assert len(fed.audit("us")) == before["us"]
    assert len(fed.audit("de")) == before["de"]


def test_a_replica_batch_answer_lost_then_a_longer_batch_delivers_every_copy(
    fed: Federation,
) -> None:
    """The US node's batch reaches DE, which applies it, but the answer is lost; by the next
    round more items are queued, so the next batch starts with the same items and has more.
    DE must apply that batch, not answer it with the first one's answer (which would
    dequeue the new items at home undelivered: copies lost for good)."""
    us, de = fed.vaults["us"], fed.vaults["de"]

    def people(start: int, n: int) -> list[dict[str, Any]]:
        return [{"subject": US, "fields": {"full_name": f"P {i}", "email": f"p{i}@example.com",
                                           "city": "Boston"}}
                for i in range(start, start + n)]  # fmt: skip

    us.put_many("profiles", people(0, 80), purpose="signup")
    channel = us.peers

    class LosesTheFirstAnswer:
        lost = False

        def call(self, node: str, op: str, body: Any, **kw: Any) -> dict[str, Any]:
            answer: dict[str, Any] = channel.call(node, op, body, **kw)
            if op == "replica" and not self.lost:
                self.lost = True
                raise NodeUnavailable(node, "the answer was lost")
            return answer

    us.peers = LosesTheFirstAnswer()
    try:
        first = NodeReplicator(us).run_once(reconcile=False)
    finally:
        us.peers = channel
    assert first.unavailable == ["de"]
    assert len(de.store("de").replicas("", 500)) == 80  # applied there, answer lost
    us.put_many("profiles", people(80, 20), purpose="signup")
    second = NodeReplicator(us).run_once(reconcile=False)
    assert second.unavailable == []
    assert (second.unchanged, second.delivered) == (80, 20)
    assert len(de.store("de").replicas("", 500)) == 100
    assert NodeReplicator(us).pending() == 0


def test_a_removal_reason_from_a_peer_leaves_no_room_for_a_value(fed: Federation) -> None:
    """A peer removes its own copy, giving as the reason (and as its decision's rule id)
    text that holds a value: the removal happens (the copy is the peer's), but DE's evidence
    of it carries no such text."""
    de = fed.vaults["de"]
    copy, _ = a_us_copy_at_de(fed)
    reason = "Anna Volkova, passport 4510 123456"
    ru = fed.vaults["ru"]
    _, rid = ru._locate(ru.put("profiles", subject=RU, fields=FIELDS, purpose="signup").token)
    primary = ru.store("ru").get(rid)
    assert primary is not None
    ruled = NodeReplicator(ru).permission(ru._sites["ru"], ru._sites["de"], primary, ["city"])
    assert ruled is not None
    (rule, *_) = ruled.rule_ids
    forged = json.loads(json.dumps(decision_to_wire(ruled)).replace(rule, reason))
    before = len(fed.audit("de"))
    body = {"home": "us", "copies": [], "erase": [], "decisions": {copy.record_id: forged},
            "remove": {copy.record_id: reason}}  # fmt: skip
    status, answer = post(fed.attacker("us"), "de", "replica", body)
    assert status == 200, answer
    assert answer["removed"] == 1
    assert de.store("de").get(copy.record_id) is None
    entries = fed.audit("de")[before:]
    assert [e["action"] for e in entries] == ["delete"]
    assert entries[0]["detail"]["reason"] == "its home node removed it"
    assert not entries[0].get("rules")
    assert "Anna" not in json.dumps(fed.audit("de"))
