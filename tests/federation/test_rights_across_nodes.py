"""Subjects' requests whose steps reach other nodes: a restriction's block placed and lifted
by each node holding the subject, in its own store and log; an act of destruction whose
parts are signed by the nodes that destroyed. The nodes run in one process, the channel
replaced by ``Direct`` (every call and answer through JSON)."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Mapping
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from domicile.access import Forbidden
from domicile.errors import BadInput, ExitCode, NodeUnavailable, NotFound
from domicile.federation.node import FederatedDomicile, Replies, StoredReplies
from domicile.federation.replication import NodeReplicator
from domicile.http.problems import status_of
from domicile.rights import close, fulfil, lift, open_request, show
from domicile.rights.acts import sign_part, verify_act
from domicile.rights.render import act_html
from domicile.stores.base import SiteUnavailable
from domicile.vault.errors import SubjectBlocked

from .inprocess import FIELDS, RU, US

WHO = {"checked_by": "dpo.kim", "verified_how": "account_login"}
ANN = {**FIELDS, "email": "ann@example.com"}
GDPR_RESTRICTION = "eu.art18_2"  # its exceptions: legal claims, rights of others, public interest


def _log(node: FederatedDomicile) -> list[dict[str, Any]]:
    assert node.node is not None
    return [json.loads(r.payload) for r in node.store(node.node).audit()]


def _us_subject_copied_to_de(federation: dict[str, FederatedDomicile]) -> tuple[str, str]:
    """A US subject whose profile is copied to DE: its token and its id at US."""
    us = federation["us"]
    put = us.put("profiles", subject=US, fields=ANN, purpose="signup")
    assert NodeReplicator(us).run_once().delivered == 1
    [rec] = [r for r in us.store("us").get_many([us._locate(put.token)[1]]).values()]
    return put.token, rec.subject_id


def test_a_restriction_asked_at_a_copy_node_blocks_the_subject_at_its_home_node_too(
    federation: dict[str, FederatedDomicile],
) -> None:
    """Asked at DE (which holds a copy): DE blocks its copy itself, the US node blocks the
    primary in its own store, audits it there as asked by DE, and answers the entry's
    number; the US node then refuses reads of the subject from anywhere. Closing the
    request lifts both, and the US node queues the copy again."""
    us, de = federation["us"], federation["de"]
    token, subject = _us_subject_copied_to_de(federation)
    req = open_request(de, "restriction", {"email": ANN["email"]}, **WHO)
    done, _ = fulfil(de, req["id"])
    step = done["history"][-1]
    assert (step["vault_block"], step["sites"]) == (True, ["de", "us"])
    [(_, us_seq)] = [(a["site"], a["seq"]) for a in step["block_audit"] if a["site"] == "us"]
    [kept] = us.store("us").blocks([subject])
    assert (kept.kind, kept.request_id, kept.by) == ("restriction", req["id"], "node:de/operator")
    assert kept.allows == tuple(done["block"]["allows"])
    [entry] = [e for e in _log(us) if e["action"] == "request" and e["detail"]["step"] == "block"]
    assert (entry["requester"], entry["subject"], entry["detail"]["request"]) == (
        "de",
        subject,
        req["id"],
    )
    assert json.loads(next(iter(us.store("us").audit(us_seq))).payload) == entry
    asked = [e["detail"] for e in _log(de) if e["detail"].get("forwarded_to") == "us"]
    assert {"operation": "request_step", "forwarded_to": "us", "answer": "answered"} in asked
    for reader in (us, de, federation["ru"]):  # decided at the home, wherever asked
        with pytest.raises(SubjectBlocked) as caught:
            reader.get(token, purpose="profile_view")
        assert caught.value.block["request"] == req["id"]
        assert status_of(caught.value) == 403

    # Run again (a retry after a node was down, say): each site's block stays one block.
    fulfil(de, req["id"])
    assert len(us.store("us").blocks([subject])) == 1

    # Another node cannot lift it: the request is DE's.
    lifting = {"purpose": "subject_restriction", "client": None, "step": "lift",
               "kind": "restriction", "request": req["id"], "subject": subject}  # fmt: skip
    with pytest.raises(Forbidden, match="not placed by node"):
        us.answer_peer("ru", "request_step", lifting)
    assert len(us.store("us").blocks([subject])) == 1
    [refused] = [e for e in _log(us) if e.get("detail", {}).get("reason") == "not_its_block"]
    assert (refused["action"], refused["requester"], refused["subject"]) == (
        "refuse",
        "ru",
        subject,
    )

    close(de, req["id"], outcome="fulfilled")
    assert us.store("us").blocks([subject]) == []
    assert de.store("de").blocks([subject]) == []
    lifted = show(de.config, req["id"])["history"]
    assert [h["sites"] for h in lifted if h["step"] == "lift"] == [["de", "us"]]
    assert us.get(token, purpose="profile_view").fields["email"] == ANN["email"]


def test_a_withdrawal_asked_at_another_node_blocks_consent_at_home_until_lifted(
    federation: dict[str, FederatedDomicile],
) -> None:
    us, ru = federation["us"], federation["ru"]
    us.put("profiles", subject=RU, fields=FIELDS, purpose="signup")
    req = open_request(us, "withdrawal", {"email": FIELDS["email"]}, **WHO)
    [h] = req["subject"]["holdings"]
    done, _ = fulfil(us, req["id"])
    assert done["history"][-1]["sites"] == ["ru"]
    [kept] = ru.store("ru").blocks([h["subject"]])
    assert (kept.kind, kept.request_id) == ("withdrawal", req["id"])
    close(us, req["id"], outcome="fulfilled")  # consent stays withdrawn
    assert ru.store("ru").blocks([h["subject"]])
    lift(us, req["id"], reason="the subject consented again")
    assert ru.store("ru").blocks([h["subject"]]) == []
    steps = [e["detail"]["step"] for e in _log(ru) if e["action"] == "request"]
    # (besides the audited looks at the subject's holdings)
    assert [s for s in steps if s != "holdings"] == ["open", "block", "fulfil", "close", "lift"]


def test_a_peers_block_step_is_decided_and_kept_by_the_home_node(
    federation: dict[str, FederatedDomicile],
) -> None:
    """The home checks the request's purpose, the subject and every word it keeps, never
    lets a restriction allow more than its own packs do, and answers a repeated call from
    what it kept (one block, one audit entry)."""
    us = federation["us"]
    _, subject = _us_subject_copied_to_de(federation)
    body = {
        "purpose": "subject_restriction", "client": "dpo", "step": "block", "kind": "restriction",
        "request": "rq_1", "subject": subject, "since": "2026-12-01T10:00:00+00:00",
        "allows": ["legal_claims", "marketing"], "rules": [GDPR_RESTRICTION],
    }  # fmt: skip
    for bad in ({"purpose": "subject_access"}, {"kind": "erasure"}, {"allows": ["Anna Volkova"]},
                {"since": {"at": 1}}, {"subject": "a b"}, {"rules": ["made.up"]}):  # fmt: skip
        with pytest.raises(BadInput):
            us.answer_peer("de", "request_step", {**body, **bad})
    with pytest.raises(NotFound):
        us.answer_peer("de", "request_step", {**body, "subject": "s" * 32})
    # The answer is kept with the block: a retry after a restart (a fresh Replies, its
    # memory gone) is answered from the store, not done again.
    answers = [
        Replies(persist=StoredReplies(us)).once(
            "de", "k1", lambda: (200, us.answer_peer("de", "request_step", body)),
            op="request_step",
        )
        for _ in range(2)
    ]  # fmt: skip
    assert answers[0] == answers[1]
    assert set(answers[0][1]) == {"site", "subject", "seq", "changed", "requeued"}
    [kept] = us.store("us").blocks([subject])
    assert kept.allows == ("legal_claims",)  # not more than the rule named allows
    blocks = [e for e in _log(us) if e["action"] == "request" and e["detail"]["step"] == "block"]
    assert len(blocks) == 1
    assert not [e for e in _log(us) if "Anna" in json.dumps(e)]


def test_a_home_node_that_does_not_answer_the_block_leaves_the_request_as_it_was(
    federation: dict[str, FederatedDomicile],
) -> None:
    us, de = federation["us"], federation["de"]
    token, subject = _us_subject_copied_to_de(federation)
    req = open_request(de, "restriction", {"email": ANN["email"]}, **WHO)
    channel = de.peers
    honest = channel.call

    def down(node: str, op: str, body: Mapping[str, Any], **kw: Any) -> dict[str, Any]:
        if (node, op) == ("us", "request_step"):
            raise NodeUnavailable(node, "did not answer")
        return honest(node, op, body, **kw)

    channel.call = down  # type: ignore[method-assign]
    with pytest.raises(NodeUnavailable) as caught:
        fulfil(de, req["id"])
    assert (caught.value.exit_code, status_of(caught.value)) == (ExitCode.UNAVAILABLE, 503)
    assert caught.value.node == "us"
    kept = show(de.config, req["id"])
    assert kept.get("block") is None
    assert [h["step"] for h in kept["history"]] == ["open"]
    assert us.store("us").blocks([subject]) == []
    assert us.get(token, purpose="profile_view").fields  # nothing placed at the home
    # The copy's block, placed before the home failed, is undone (audited as a lift):
    # no request knows of it, so nothing could ever lift it.
    assert de.store("de").blocks([subject]) == []
    assert [e["detail"].get("step") for e in _log(de) if "request" in e["detail"]][-2:] == [
        "block",
        "lift",
    ]

    channel.call = honest  # type: ignore[method-assign]
    done, _ = fulfil(de, req["id"])
    assert done["block"]["state"] == "in_force"
    assert len(de.store("de").blocks([subject])) == 1


def test_a_block_placed_at_one_node_is_lifted_there_when_the_next_node_fails(
    federation: dict[str, FederatedDomicile],
) -> None:
    """Asked at RU, which holds nothing of the subject: DE blocks the copy, the US node
    answers that its site is down; RU has DE lift its block again, and keeps nothing of
    the step."""
    us, de, ru = federation["us"], federation["de"], federation["ru"]
    _, subject = _us_subject_copied_to_de(federation)
    req = open_request(ru, "restriction", {"email": ANN["email"]}, **WHO)
    assert [h["site"] for h in req["subject"]["holdings"]] == ["de", "us"]
    honest = us.answer_peer

    def fails(peer: str, op: str, body: Any) -> dict[str, Any]:
        if op == "request_step" and body["step"] == "block":
            raise SiteUnavailable("us", "its database does not answer")
        return honest(peer, op, body)

    us.answer_peer = fails  # type: ignore[method-assign]
    with pytest.raises(NodeUnavailable):
        fulfil(ru, req["id"])
    assert de.store("de").blocks([subject]) == []
    steps = [e["detail"].get("step") for e in _log(de) if "request" in e["detail"]]
    assert steps[-2:] == ["block", "lift"]
    assert show(ru.config, req["id"]).get("block") is None


@pytest.mark.parametrize(
    "lie",
    [
        {"extra": "anything"},  # more than the ids and counts a block step answers
        {"subject": "f" * 32},  # about another subject
        {"site": "ru"},  # about another site
        {"seq": "7"},
    ],
)
def test_a_block_answer_with_more_or_about_another_subject_is_no_answer(
    federation: dict[str, FederatedDomicile], lie: dict[str, Any]
) -> None:
    us, de = federation["us"], federation["de"]
    _us_subject_copied_to_de(federation)
    req = open_request(de, "restriction", {"email": ANN["email"]}, **WHO)
    honest = us.answer_peer

    def lying(peer: str, op: str, body: Any) -> dict[str, Any]:
        answer = honest(peer, op, body)
        return {**answer, **lie} if op == "request_step" and body["step"] == "block" else answer

    us.answer_peer = lying  # type: ignore[method-assign]
    with pytest.raises(NodeUnavailable) as caught:
        fulfil(de, req["id"])
    assert status_of(caught.value) == 503
    assert show(de.config, req["id"]).get("block") is None


def _erase_ru_subject_from_us(federation: dict[str, FederatedDomicile]) -> dict[str, Any]:
    us = federation["us"]
    us.put("profiles", subject=RU, fields=FIELDS, purpose="signup")
    req = open_request(us, "erasure", {"email": FIELDS["email"]}, **WHO)
    _, act = fulfil(us, req["id"])
    assert act is not None
    return act


def test_each_node_signs_its_part_of_the_act_and_every_part_is_verified(
    federation: dict[str, FederatedDomicile],
) -> None:
    us, de = federation["us"], federation["de"]
    act = _erase_ru_subject_from_us(federation)
    [part] = act["act"]["parts"]
    assert (part["site"], part["part"]["asker"], part["part"]["request"]) == (
        "ru",
        "us",
        act["act"]["request"],
    )
    for checker in (us, de):  # any node: it knows every node's public key
        checks = verify_act(checker, act)
        assert [(c["site"], c["signed"], c["valid"]) for c in checks] == [
            ("us", "act", True),
            ("ru", "part", True),
        ]

    def checked(doc: dict[str, Any]) -> list[tuple[str, str, bool]]:
        return [(c["site"], c["signed"], c["valid"]) for c in verify_act(us, doc)]

    assert "the part (its log's entries) of site ru" in act_html(act)

    # A part signed by another key: RU's part is not valid.
    forged = copy.deepcopy(act)
    forged["act"]["parts"][0]["signature"] = sign_part(
        Ed25519PrivateKey.generate(), forged["act"]["parts"][0]["part"]
    )
    assert ("ru", "part", False) in checked(forged)
    # A part whose bytes were changed after signing.
    bent = copy.deepcopy(act)
    raw = bytearray(base64.b64decode(bent["act"]["parts"][0]["signature"]))
    raw[0] ^= 1
    bent["act"]["parts"][0]["signature"] = base64.b64encode(bytes(raw)).decode()
    assert ("ru", "part", False) in checked(bent)
    # An act without RU's part: RU destroyed, and nobody of RU signed.
    bare = copy.deepcopy(act)
    del bare["act"]["parts"]
    assert ("ru", "missing", False) in checked(bare)


def test_an_erased_part_not_signed_by_its_node_is_refused_at_the_asker(
    federation: dict[str, FederatedDomicile],
) -> None:
    us, ru = federation["us"], federation["ru"]
    honest = ru.answer_peer

    def resigned(peer: str, op: str, body: Any) -> dict[str, Any]:
        answer = honest(peer, op, body)
        if op == "subject" and body["step"] == "erased":
            answer["signature"] = sign_part(Ed25519PrivateKey.generate(), answer["part"])
        return answer

    ru.answer_peer = resigned  # type: ignore[method-assign]
    us.put("profiles", subject=RU, fields=FIELDS, purpose="signup")
    req = open_request(us, "erasure", {"email": FIELDS["email"]}, **WHO)
    with pytest.raises(NodeUnavailable, match="not signed"):
        fulfil(us, req["id"])
    assert not show(us.config, req["id"]).get("acts")
