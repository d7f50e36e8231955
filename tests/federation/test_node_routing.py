"""Node mode's routing and decisions, with the nodes in one process and the channel
replaced by a direct call that passes every request and answer through JSON (the channel
itself, mutual TLS and separate processes are tested in test_channel*.py and
test_federation_processes.py). What is tested here: each node opens only its own site,
holds only its own keys, and decides what leaves its site as a read from the peer's site."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import pytest

from domicile.access import Access, Forbidden
from domicile.crypto.errors import KeyringError
from domicile.errors import BadInput, Conflict, DomicileError, NodeUnavailable
from domicile.federation.node import FederatedDomicile
from domicile.stores.base import SiteUnavailable

from .inprocess import FIELDS, RU, US


def test_a_node_opens_only_its_own_site_and_holds_only_its_keys(
    federation: dict[str, FederatedDomicile],
) -> None:
    us = federation["us"]
    with pytest.raises(SiteUnavailable, match="held by its own node"):
        us.store("ru")
    with pytest.raises(SiteUnavailable):
        us.keystore("ru")
    with pytest.raises(KeyringError, match="no keys for site 'ru'"):
        us.keys.index_key("ru")
    with pytest.raises(KeyringError, match="node 'us'"):
        us.keys.ensure_site("ru")
    # ... but it can check the RU node's signatures: the public key is there.
    assert us.keys.verify_key("ru") is not None
    raw = us.keys.path.read_text()  # type: ignore[attr-defined]
    ru_keys = json.loads(federation["ru"].keys.path.read_text())["sites"]["ru"]  # type: ignore[attr-defined]
    assert ru_keys["index_key"] not in raw
    assert ru_keys["signing_key"] not in raw
    assert all(k not in raw for k in ru_keys["keks"].values())


def test_a_write_at_a_foreign_node_lands_at_the_home_node(
    federation: dict[str, FederatedDomicile],
) -> None:
    us, ru = federation["us"], federation["ru"]
    put = us.put("profiles", subject=RU, fields=FIELDS, purpose="signup")
    assert put.site == "ru"
    # Read at home: full, a local read.
    home = ru.get(put.token, purpose="view")
    assert home.fields["email"] == FIELDS["email"]
    assert not home.transfer
    # The US node asked; the RU node decided (before the Art. 12 notice: masked).
    seen = us.get(put.token, purpose="view")
    assert seen.masked
    assert seen.fields["email"] != FIELDS["email"]
    assert seen.decision.request.to_country == "US"
    ru_log = [json.loads(r.payload) for r in ru.store("ru").audit()]
    us_log = [json.loads(r.payload) for r in us.store("us").audit()]
    assert any(e["action"] == "disclose_masked" and e.get("requester") == "us" for e in ru_log)
    asked = [e for e in us_log if e["action"] == "request"]
    assert [e["detail"]["operation"] for e in asked] == ["put", "get"]
    assert all(e["detail"]["forwarded_to"] == "ru" for e in asked)


def test_a_find_asks_every_node_and_each_decides(
    federation: dict[str, FederatedDomicile],
) -> None:
    us = federation["us"]
    us.put("profiles", subject=RU, fields=FIELDS, purpose="signup")
    us.put("profiles", subject=US, fields={**FIELDS, "full_name": "Ann V"}, purpose="signup")
    found = us.find("profiles", where={"email": FIELDS["email"]}, purpose="view")
    by_site = {r.site: r for r in found.records}
    assert len(found.records) == 2
    assert set(by_site) == {"ru", "us"}
    assert by_site["ru"].masked
    assert by_site["ru"].fields["email"] != FIELDS["email"]
    assert by_site["us"].fields["full_name"] == "Ann V"
    assert not by_site["us"].masked
    assert found.unavailable == []
    us.peers.down.add("ru")  # type: ignore[attr-defined]
    found = us.find("profiles", where={"email": FIELDS["email"]}, purpose="view")
    assert [r.site for r in found.records] == ["us"]
    assert found.unavailable == ["ru"]


def test_a_find_sends_other_nodes_search_digests_never_the_values(
    federation: dict[str, FederatedDomicile],
) -> None:
    us, ru = federation["us"], federation["ru"]
    put = us.put("profiles", subject=RU, fields=FIELDS, purpose="signup")
    sent: list[tuple[str, str, str]] = us.peers.sent  # type: ignore[attr-defined]
    sent.clear()
    # Searched for as typed by a person (the index normalises e-mail addresses).
    typed = "Anna.Volkova@Example.RU"
    found = us.find("profiles", where={"email": typed}, purpose="view")
    record = ru._locate(put.token)[1]
    assert [(r.site, ru._locate(r.token)[1], r.masked) for r in found.records] == [
        ("ru", record, True)
    ]
    finds = [wire for _, op, wire in sent if op == "find"]
    assert len(finds) == 2  # the DE node and the RU node were each asked
    for wire in finds:
        for form in (FIELDS["email"], typed.strip(), "anna.volkova", "example.ru"):
            assert form.lower() not in wire.lower()
        assert set(json.loads(wire)["search"]) == {"email"}
    # What a peer sends is all the home node needs: a find by the digest, the same record.
    body = json.loads(next(wire for node, op, wire in sent if (node, op) == ("ru", "find")))
    answer = ru.answer_peer("us", "find", body)
    assert [ru._locate(r["token"])[1] for r in answer["records"]] == [record]
    # A value that is not there is found nowhere; two fields must both match.
    assert us.find("profiles", where={"email": "other@example.ru"}, purpose="view").records == []
    both = us.find("profiles", where={"email": typed, "phone": "+7 495 123 45 67"}, purpose="view")
    assert both.records == []
    # A peer that sends values instead of digests is refused, as is a field that is not
    # searchable (nothing is searched for it).
    for bad in (
        {**body, "search": {"email": FIELDS["email"]}},
        {**body, "search": None, "where": {"email": FIELDS["email"]}},
        {**body, "search": {"full_name": body["search"]["email"]}},
    ):
        with pytest.raises(BadInput):
            ru.answer_peer("us", "find", bad)


def test_a_peer_cannot_act_from_the_home_country_or_beyond_peer_scopes(
    federation: dict[str, FederatedDomicile],
) -> None:
    ru = federation["ru"]
    put = ru.put("profiles", subject=RU, fields=FIELDS, purpose="signup")
    # The peer claims its caller acts from Russia, with admin: the RU node reads it as from
    # the US all the same, and admin is gone.
    body = {"token": put.token, "purpose": "view", "client": "x", "scopes": ["admin", "site:ru",
            "records:read", "collection:*", "purpose:*"], "as_site": "ru"}  # fmt: skip
    answer = ru.answer_peer("us", "get", body)
    assert answer["record"]["masked"] is True
    access = ru.relayed("us", body)
    assert "admin" not in access.scopes
    assert "site:ru" not in access.scopes
    assert access.site == "us"
    assert access.client == "node:us/x"
    # A node is not its own peer, and a name outside the deployment is no peer.
    with pytest.raises(Forbidden):
        ru.answer_peer("ru", "get", body)
    with pytest.raises(Forbidden):
        ru.answer_peer("xx", "get", body)
    # Operations peers may not ask (here: not erase) are refused, audited.
    fed = ru.config.model.federation
    assert fed is not None
    ru.peer_scopes = ("records:read",)
    with pytest.raises(Forbidden):
        ru.answer_peer("us", "erase", {**body, "scopes": None})


def test_a_forwarded_call_is_never_forwarded_again(
    federation: dict[str, FederatedDomicile],
) -> None:
    us, de = federation["us"], federation["de"]
    put = us.put("profiles", subject=RU, fields=FIELDS, purpose="signup")
    # The DE node is asked by the US for a record it does not hold: no forwarding to RU.
    with pytest.raises(DomicileError) as caught:
        de.answer_peer("us", "get", {"token": put.token, "purpose": "view", "client": "x"})
    assert caught.value.code == "not_found"
    # ... and a write it would place elsewhere is refused, not sent on.
    with pytest.raises(Conflict):
        de.answer_peer("us", "put", {"collection": "profiles", "purpose": "signup",
                                     "items": [{"subject": RU, "fields": FIELDS}]})  # fmt: skip


def test_a_node_acts_from_its_own_site_only(federation: dict[str, FederatedDomicile]) -> None:
    us = federation["us"]
    with pytest.raises(BadInput, match="acts from its own site"):
        us.put("profiles", subject=RU, fields=FIELDS, purpose="signup",
               access=Access.operator("x", site="ru"))  # fmt: skip


def test_an_unavailable_home_node_fails_closed(federation: dict[str, FederatedDomicile]) -> None:
    us = federation["us"]
    put = us.put("profiles", subject=RU, fields=FIELDS, purpose="signup")
    us.peers.down.add("ru")  # type: ignore[attr-defined]
    with pytest.raises(NodeUnavailable) as caught:
        us.get(put.token, purpose="view")
    assert caught.value.exit_code == 4
    with pytest.raises(NodeUnavailable):
        us.put("profiles", subject=RU, fields=FIELDS, purpose="signup")
    log = [json.loads(r.payload) for r in us.store("us").audit()]
    assert log[-1]["detail"] == {
        "operation": "put",
        "forwarded_to": "ru",
        "answer": "node_unavailable",
    }


def test_updates_deletes_and_erasure_are_done_at_home(
    federation: dict[str, FederatedDomicile],
) -> None:
    us, ru = federation["us"], federation["ru"]
    put = us.put("profiles", subject=RU, fields=FIELDS, purpose="signup")
    us.update(put.token, fields={"full_name": "Anna V. Volkova"}, purpose="fix")
    assert ru.get(put.token, purpose="view").fields["full_name"] == "Anna V. Volkova"
    erased = us.erase(put.token, purpose="erasure")
    assert erased
    with pytest.raises(DomicileError):
        ru.get(put.token, purpose="view")


def test_replication_crosses_to_the_target_node_and_is_sealed_there(
    federation: dict[str, FederatedDomicile],
) -> None:
    from domicile.federation.replication import NodeReplicator

    us, de = federation["us"], federation["de"]
    put = us.put("profiles", subject=US, fields={**FIELDS, "city": "Boston"}, purpose="signup")
    assert put.site == "us"
    report = NodeReplicator(us).run_once()
    assert report.delivered == 1, report.to_dict()
    assert report.unavailable == []
    copies = de.store("de").replicas("", 10)
    assert [c.primary_site for c in copies] == ["us"]
    # Sealed under the DE site's key for the subject: the DE node opens it, alone.
    assert set(copies[0].field_names) == {"full_name", "city"}
    seen = de.get(put.token, purpose="view")
    assert seen.source == "replica"
    assert seen.fields == {
        "full_name": FIELDS["full_name"],
        "city": "Boston",
    }
    de_log = [json.loads(r.payload) for r in de.store("de").audit()]
    assert [e["action"] for e in de_log if e.get("requester") == "us"] == ["transfer"]
    # Delivered once: a second round changes and logs nothing.
    assert NodeReplicator(us).run_once().delivered == 0
    assert len(list(de.store("de").audit())) == len(de_log)
    # The erasure reaches the copy at once, through the DE node.
    erased = us.erase(put.token, purpose="erasure")
    assert erased["copies"] == {"deleted": ["de"], "pending": []}
    assert de.store("de").replicas("", 10) == []
    assert us.store("us").outbox(10) == []  # nothing left for the worker


def test_a_peer_may_touch_only_copies_of_its_own_primaries(
    federation: dict[str, FederatedDomicile],
) -> None:
    from domicile.federation.replication import NodeReplicator

    us, de = federation["us"], federation["de"]
    us.put("profiles", subject=US, fields={**FIELDS, "city": "Boston"}, purpose="signup")
    NodeReplicator(us).run_once()
    copy = de.store("de").replicas("", 10)[0]
    # RU claims to be the home of a batch: refused (the home is the verified peer).
    with pytest.raises(Forbidden):
        de.answer_peer("ru", "replica", {"home": "us", "copies": [], "remove": {}, "erase": []})
    # RU, as itself, cannot remove or erase US's copies.
    with pytest.raises(Forbidden):
        de.answer_peer("ru", "replica", {"home": "ru", "copies": [], "remove": {},
                                         "erase": [copy.subject_id]})  # fmt: skip
    de.answer_peer("ru", "replica", {"home": "ru", "copies": [], "erase": [],
                                     "remove": {copy.record_id: "gone"}})  # fmt: skip
    assert [c.record_id for c in de.store("de").replicas("", 10)] == [copy.record_id]
    # Nor send fields the collection does not copy there.
    with pytest.raises(Forbidden):
        de.answer_peer("ru", "replica", {"home": "ru", "remove": {}, "erase": [], "copies": [{
            "record_id": "a" * 32, "subject_id": "b" * 32, "collection": "profiles",
            "version": 1, "created_at": "x", "updated_at": "x", "fields": {"email": "e@x.ru"},
            "residency": "{}", "decision": {}}]})  # fmt: skip


def test_each_node_witnesses_the_others_heads_over_the_channel(
    federation: dict[str, FederatedDomicile],
) -> None:
    us, ru, de = federation["us"], federation["ru"], federation["de"]
    us.put("profiles", subject=RU, fields=FIELDS, purpose="signup")
    rounds = {n: federation[n].witness() for n in ("ru", "us")}
    assert {(r.witness, r.outcome) for r in rounds["ru"].results} == {
        ("de", "recorded"),
        ("us", "recorded"),
    }
    assert {r.witness for r in rounds["us"].results} == {"de", "ru"}
    # More activity, a second round: the witnesses check consistency (asking the home).
    us.put("profiles", subject=RU, fields={**FIELDS, "email": "b@example.ru"}, purpose="signup")
    again = ru.witness()
    assert {r.outcome for r in again.results} == {"recorded"}
    assert [h.site for h in de.store("de").witnessed("ru")][-1:] == ["ru"]
    # A peer cannot pass off a head of another site, nor one it did not sign.
    head = again.heads["ru"].to_dict()
    with pytest.raises(Forbidden):
        de.answer_peer("us", "witness", {"head": head})
    forged = {**head, "size": head["size"] + 1}
    answer = de.answer_peer("ru", "witness", {"head": forged})
    assert answer["outcome"] == "refused"


def test_a_forwarded_put_repeated_after_its_answer_was_lost_is_not_written_twice(
    federation: dict[str, FederatedDomicile],
) -> None:
    us, ru = federation["us"], federation["ru"]
    sent: list[dict[str, Any]] = []
    direct = us.peers

    class Recording:
        def call(self, node: str, op: str, body: Mapping[str, Any], **kw: Any) -> dict[str, Any]:
            sent.append(json.loads(json.dumps(body)))
            return direct.call(node, op, body, **kw)  # type: ignore[no-any-return]

    us.peers = Recording()
    us.put("profiles", subject=RU, fields=FIELDS, purpose="signup")
    before = sum(1 for _ in ru.store("ru").audit())
    # The same call again (as after a restart of the RU node: no reply kept): refused.
    with pytest.raises(DomicileError):
        ru.answer_peer("us", "put", sent[0])
    writes = [json.loads(r.payload) for r in ru.store("ru").audit()][before:]
    assert not [e for e in writes if e["action"] == "write"]


def test_parity_at_a_node_compares_its_copies_with_primaries_its_peers_describe(
    federation: dict[str, FederatedDomicile],
) -> None:
    from domicile.federation.replication import NodeReplicator
    from domicile.vault.parity import check_parity

    us, de = federation["us"], federation["de"]
    put = us.put("profiles", subject=US, fields={**FIELDS, "city": "Boston"}, purpose="signup")
    NodeReplicator(us).run_once()
    report = check_parity(de)
    assert report.ok, report.to_dict()
    assert report.copies == 1
    assert report.lagging == 0
    us.update(put.token, fields={"city": "Austin"}, purpose="fix")  # the copy lags
    assert check_parity(de).lagging == 1
    NodeReplicator(us).run_once()
    assert check_parity(de).to_dict()["lagging"] == 0
    # The US node holds no copies; DE's are DE's to check.
    assert check_parity(us).copies == 0
    assert check_parity(us, "de").unavailable == ["de"]
    # A peer learns versions and field names only, and only of collections copied to it.
    answer = us.answer_peer(
        "ru", "primaries", {"records": [r.record_id for r in de.store("de").replicas("", 10)]}
    )
    assert answer == {"primaries": {}}
    answer = us.answer_peer(
        "de", "primaries", {"records": [r.record_id for r in de.store("de").replicas("", 10)]}
    )
    assert [set(m) for m in answer["primaries"].values()] == [{"version", "fields"}]


def test_a_subjects_request_at_one_node_reaches_the_subject_at_its_home_node(
    federation: dict[str, FederatedDomicile],
) -> None:
    """Access and erasure asked at the US node for a Russian subject: the RU node finds
    the subject by search digests, lists its records, decides each read as from the US,
    erases there, and records each step of the request in its own log."""
    from domicile.rights.fulfil import fulfil
    from domicile.rights.service import open_request

    us, ru = federation["us"], federation["ru"]
    us.put("profiles", subject=RU, fields=FIELDS, purpose="signup")
    us.put("profiles", subject=US, fields={**FIELDS, "email": "ann@example.com"}, purpose="signup")
    sent: list[tuple[str, str, str]] = us.peers.sent  # type: ignore[attr-defined]
    sent.clear()
    who = {"checked_by": "dpo.kim", "verified_how": "account_login"}
    req = open_request(us, "access", {"email": FIELDS["email"]}, **who)
    [h] = req["subject"]["holdings"]
    assert (h["site"], h["records"], h["copies"]) == ("ru", 1, 0)
    assert req["deadline"]["rule"] == "ru.access_2022"  # the RU node said whose law covers
    _, package = fulfil(us, req["id"])
    assert package is not None
    [rec] = package["records"]
    assert (rec["site"], rec["masked"]) == ("ru", True)  # decided at RU, as read from the US
    assert rec["fields"]["email"] != FIELDS["email"]
    assert {node for node, op, _ in sent if op == "subject"} == {"ru", "de"}
    for _, _, wire in sent:  # the identity never crossed, only its search digest
        assert "anna" not in wire.lower()
        assert "volkova" not in wire.lower()

    def ru_log() -> list[dict[str, Any]]:
        return [json.loads(r.payload) for r in ru.store("ru").audit()]

    requests = [e for e in ru_log() if e["action"] == "request"]
    steps = [e for e in requests if e["detail"]["step"] != "holdings"]
    assert [e["detail"]["step"] for e in steps] == ["open", "fulfil"]
    # Each look at the subject's holdings (opening, and fulfilling again) is audited too.
    looks = [e for e in requests if e["detail"]["step"] == "holdings"]
    assert looks
    assert all(e["requester"] == "us" and e["subject"] == h["subject"] for e in looks)
    assert all(e["client"].startswith("node:us/") and e["requester"] == "us" for e in steps)
    assert all(e["subject"] == h["subject"] for e in steps)
    shown = [e for e in ru_log() if e["action"] == "disclose_masked"]
    assert [(e["purpose"], e["requester"]) for e in shown] == [("subject_access", "us")]
    us_log = [json.loads(r.payload) for r in us.store("us").audit()]
    asked = [
        e["detail"]
        for e in us_log
        if e["action"] == "request" and "forwarded_to" in e.get("detail", {})
    ]
    assert {(d["operation"], d["forwarded_to"]) for d in asked} >= {
        ("subject", "ru"),
        ("get", "ru"),
    }

    # An API client with the rights scopes only: rights:write stands for the read at RU too.
    app = Access.of_client(
        "dpo-app", {"rights:write", "rights:read", "site:us", "site:ru", "site:de",
                    "collection:*", "purpose:subject_access"}, "us",
    )  # fmt: skip
    by_app = open_request(us, "access", {"email": FIELDS["email"]}, access=app, **who)
    _, package = fulfil(us, by_app["id"], access=app)
    assert package is not None
    assert [(r["site"], r["masked"]) for r in package["records"]] == [("ru", True)]
    assert [e["client"] for e in ru_log() if e["action"] == "request"][-2:] == [
        "node:us/dpo-app",
        "node:us/dpo-app",
    ]

    # Erasure, asked at the US node: the RU node erases its subject, key first.
    req = open_request(us, "erasure", {"email": FIELDS["email"]}, **who)
    _, act = fulfil(us, req["id"])
    assert act is not None
    [d] = act["act"]["destroyed"]
    assert (d["site"], d["subject"], d["records"], d["key_destroyed"]) == (
        "ru",
        h["subject"],
        1,
        True,
    )
    assert d["categories"] == ["user.contact.email", "user.name"]
    assert ru.store("ru").subject_records(h["subject"]) == []
    steps = [e["detail"]["step"] for e in ru_log() if e["action"] == "request"]
    assert [s for s in steps if s != "holdings"][-2:] == ["open", "fulfil"]
    assert [e for e in ru_log() if e["action"] == "erase" and e["subject"] == h["subject"]]
    assert [s["site"] for s in act["signatures"]] == ["us"]  # RU's part: its own log,
    [part] = act["act"]["parts"]  # whose entry the RU node names and signs
    assert (part["site"], part["part"]["entries"]) == ("ru", act["act"]["log_extract"])
    [entry] = act["act"]["log_extract"]
    assert (entry["site"], entry["action"], entry["records"]) == ("ru", "erase", 1)
    row = next(iter(ru.store("ru").audit(entry["seq"])))
    assert (row.seq, row.hash.hex()) == (entry["seq"], entry["hash"])
    assert json.loads(row.payload)["subject"] == h["subject"]
    assert not open_request(us, "access", {"email": FIELDS["email"]}, **who)["subject"]["found"]
    # The US subject with the same name is untouched.
    assert us.find("profiles", where={"email": "ann@example.com"}, purpose="view").records


def test_a_peers_request_step_carries_no_room_for_a_value(
    federation: dict[str, FederatedDomicile],
) -> None:
    ru = federation["ru"]
    base = {"purpose": "subject_access", "client": "x", "step": "record", "subject": None}
    for detail in ({"name": "Anna Volkova"}, {"x": "a" * 200}, {"Bad": 1}, {"l": [{"a": 1}]}):
        with pytest.raises(BadInput):
            ru.answer_peer("us", "request_step", {**base, "detail": detail})
    with pytest.raises(BadInput, match="purpose"):
        ru.answer_peer("us", "request_step", {**base, "purpose": "view", "detail": {}})
    with pytest.raises(BadInput, match="step"):  # a write only through the call that writes
        ru.answer_peer("us", "subject", {**base, "detail": {}})
    with pytest.raises(BadInput, match="search"):  # identities as values: refused
        ru.answer_peer("us", "subject", {**base, "step": "holdings", "subjects": [],
                                         "identity": {"user.contact.email": FIELDS["email"]}})  # fmt: skip
    assert not [r for r in ru.store("ru").audit() if "Anna" in r.payload or "aaaa" in r.payload]


def test_a_writes_answer_survives_a_restart_of_the_node_without_values_at_rest(
    federation: dict[str, FederatedDomicile],
) -> None:
    """The RU node answers a put and an update, then restarts (a new node app: its
    answers in memory are gone); the US node's retries with the same keys are answered
    from the RU site's store, and nothing is done twice. What the store keeps holds no
    value; it expires; it is the peer's and the operation's only."""
    from starlette.testclient import TestClient

    from domicile.federation.node import StoredReplies
    from domicile.federation.routes import node_app
    from domicile.federation.server import PEER_SCOPE_KEY

    ru = federation["ru"]

    def client(peer: str = "us") -> TestClient:
        app = node_app(ru)  # a node app of its own: what a restarted node has

        async def as_peer(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await app({**scope, PEER_SCOPE_KEY: peer}, receive, send)

        return TestClient(as_peer)

    put = {"collection": "profiles", "purpose": "signup", "client": "app",
           "items": [{"subject": RU, "fields": FIELDS}]}  # fmt: skip
    first = client().post("/v1/node/put", json=put, headers={"Idempotency-Key": "k-put"})
    assert first.status_code == 200, first.text
    token = first.json()["records"][0]["token"]
    before = ru.store("ru").count()
    again = client().post("/v1/node/put", json=put, headers={"Idempotency-Key": "k-put"})
    assert (again.status_code, again.json()) == (200, first.json())
    assert ru.store("ru").count() == before  # not written twice, not refused as existing

    update = {"token": token, "purpose": "fix", "client": "app", "fields": {"city": "Kazan"}}
    done = client().post("/v1/node/update", json=update, headers={"Idempotency-Key": "k-up"})
    assert done.status_code == 200, done.text
    assert done.json()["record"]["version"] == 2
    replay = client().post("/v1/node/update", json=update, headers={"Idempotency-Key": "k-up"})
    assert replay.json() == {"token": token, "version": 2}  # the version, no values at rest
    assert ru.get(token, purpose="view").version == 2  # updated once
    # Another peer, or another operation, with the same key is a call of its own.
    other = client("de").post("/v1/node/update", json=update, headers={"Idempotency-Key": "k-up"})
    assert other.json()["record"]["version"] == 3
    kept = StoredReplies(ru)
    assert kept.get("us", "delete", "k-up") is None
    # Nothing of the values is in the store's kept answers; keys are kept as digests.
    import sqlite3

    path = ru.store("ru").url.removeprefix("sqlite:")  # type: ignore[attr-defined]
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT peer, op, key_digest, answer FROM node_replies").fetchall()
    assert {(p, o) for p, o, _, _ in rows} == {("us", "put"), ("us", "update"), ("de", "update")}
    for _, _, key, answer in rows:
        assert key not in (b"k-put", b"k-up")
        assert len(key) == 32
        for value in (*FIELDS.values(), "Kazan", "anna"):
            assert value.lower() not in answer.lower()
    # Expired answers are not answered, and are dropped with the next one kept.
    later = StoredReplies(ru, clock=lambda: time.time() + 601)
    assert later.get("us", "put", "k-put") is None
    later.put("us", "erase", "k-new", 200, {"records": 1})
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT op FROM node_replies").fetchall() == [("erase",)]


def test_a_peer_cannot_flood_a_nodes_log_with_heads_to_witness(
    federation: dict[str, FederatedDomicile],
) -> None:
    """The RU node records at most 3 heads of the US node per minute (here): the rest are
    refused (429; the US node counts RU as unavailable for that round, DE still witnesses),
    with one audited refusal per minute however many come; the next minute, on again."""
    us, ru = federation["us"], federation["ru"]
    now = [0.0]
    ru.witness_limit, ru.witness_interval, ru.witness_clock = 3, 60.0, lambda: now[0]

    def round_with_activity(n: int) -> Any:
        us.put("profiles", subject=US, fields={**FIELDS, "email": f"u{n}@example.com"},
               purpose="signup")  # fmt: skip
        return us.witness()

    def ru_log() -> list[dict[str, Any]]:
        return [json.loads(r.payload) for r in ru.store("ru").audit()]

    for n in range(3):
        assert round_with_activity(n).unavailable == []
    before = len(ru_log())
    for n in range(3, 8):
        done = round_with_activity(n)
        assert done.unavailable == ["ru"]
        assert [(r.witness, r.outcome) for r in done.results] == [("de", "recorded")]
    new = ru_log()[before:]
    assert [(e["action"], e["detail"]["reason"]) for e in new] == [("refuse", "rate_limited")]
    assert new[0]["client"] == "node:us"
    with pytest.raises(DomicileError) as caught:  # straight to the node: the same answer
        ru.answer_peer("us", "witness", {"head": {}})
    assert caught.value.code == "rate_limited"
    # Another peer has its own allowance.
    by_de = federation["de"].witness()
    assert ("ru", "recorded") in {(r.witness, r.outcome) for r in by_de.results}
    now[0] = 61.0  # the next interval
    assert round_with_activity(8).unavailable == []
    for n in range(9, 12):
        round_with_activity(n)
    refused = [e for e in ru_log() if e["action"] == "refuse"]
    assert len(refused) == 2  # one per interval


def test_an_erasure_answer_about_another_site_or_malformed_is_no_answer(
    federation: dict[str, FederatedDomicile],
) -> None:
    us, ru = federation["us"], federation["ru"]
    put = us.put("profiles", subject=RU, fields=FIELDS, purpose="signup")
    honest = ru.answer_peer
    lies = iter([{"site": "de"}, {"records": "all"}, {"copies": None}])

    shape = {"erased": True, "site": "ru", "country": "RU", "records": 1,
             "key_destroyed": True, "copies": {"deleted": [], "pending": []}}  # fmt: skip

    def lie(peer: str, op: str, body: Any) -> dict[str, Any]:
        return {**shape, **next(lies)} if op == "erase" else honest(peer, op, body)

    ru.answer_peer = lie  # type: ignore[method-assign]
    for _ in range(3):
        with pytest.raises(NodeUnavailable):
            us.erase(put.token, purpose="erasure")
    ru.answer_peer = honest  # type: ignore[method-assign]
    assert us.erase(put.token, purpose="erasure")["records"] == 1


def test_an_erasure_asked_where_copies_are_reaches_the_home_and_lists_both_logs(
    federation: dict[str, FederatedDomicile],
) -> None:
    """A US subject with a copy at DE; the erasure is asked at the DE node: the US node
    erases the subject (and has DE erase the copy), and the act's extract names the
    erase entry in each log."""
    from domicile.federation.replication import NodeReplicator
    from domicile.rights.fulfil import fulfil
    from domicile.rights.service import open_request

    us, de = federation["us"], federation["de"]
    us.put("profiles", subject=US, fields={**FIELDS, "email": "ann@example.com"}, purpose="signup")
    assert NodeReplicator(us).run_once().delivered == 1
    req = open_request(de, "erasure", {"email": "ann@example.com"}, checked_by="dpo.kim",
                       verified_how="account_login")  # fmt: skip
    assert [(h["site"], h["records"], h["copies"]) for h in req["subject"]["holdings"]] == [
        ("de", 0, 1),
        ("us", 1, 0),
    ]
    _, act = fulfil(de, req["id"])
    assert act is not None
    assert [(d["site"], d["key_destroyed"]) for d in act["act"]["destroyed"]] == [("us", True)]
    assert sorted((e["site"], e["action"]) for e in act["act"]["log_extract"]) == [
        ("de", "erase"),
        ("us", "erase"),
    ]
    assert de.store("de").replicas("", 10) == []
    assert [s["site"] for s in act["signatures"]] == ["de"]
