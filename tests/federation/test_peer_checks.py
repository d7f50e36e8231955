"""Attacks by a peer node (verified by its certificate, so trusted for who it is, never
for what it sends): each test sends what a compromised or buggy peer could."""

from __future__ import annotations

import json

import pytest

from domicile.errors import BadInput
from domicile.federation.node import FederatedDomicile

EMAIL = "anna.volkova@example.ru"


def test_a_peers_request_step_cannot_write_an_identity_into_the_log(
    federation: dict[str, FederatedDomicile],
) -> None:
    ru = federation["ru"]
    base = {"purpose": "subject_access", "client": "x", "step": "record", "subject": None}
    for body in (
        {**base, "detail": {"note": EMAIL}},
        {**base, "detail": {"note": "+79161234567"}},
        {**base, "subject": EMAIL, "detail": {}},
    ):
        with pytest.raises(BadInput):
            ru.answer_peer("us", "request_step", body)
    assert not [r for r in ru.store("ru").audit() if "anna" in r.payload]


def test_a_peers_look_at_a_subjects_holdings_is_audited_at_home(
    federation: dict[str, FederatedDomicile],
) -> None:
    us, ru = federation["us"], federation["ru"]
    put = us.put(
        "profiles", subject={"citizenship": "RU"},
        fields={"full_name": "Anna Volkova", "email": EMAIL}, purpose="signup",
    )  # fmt: skip
    site, rid = ru.tokens.read(put.token)
    rec = ru.store(site).get(rid)
    assert rec is not None
    before = len(list(ru.store("ru").audit()))
    answer = ru.answer_peer(
        "us", "subject",
        {"purpose": "subject_access", "client": "x", "step": "holdings",
         "subjects": [rec.subject_id]},
    )  # fmt: skip
    [holding] = answer["holdings"]
    assert holding["laws"]  # what covers the subject: personal data about it
    after = [json.loads(r.payload) for r in list(ru.store("ru").audit())[before:]]
    assert [e for e in after if e.get("subject") == rec.subject_id], after


def test_a_peer_cannot_make_a_node_walk_its_log_without_limit(
    federation: dict[str, FederatedDomicile],
) -> None:
    from domicile.errors import DomicileError

    us, ru = federation["us"], federation["ru"]
    for n in range(3):
        us.put(
            "profiles", subject={"citizenship": "RU"},
            fields={"full_name": "Anna Volkova", "email": f"a{n}@example.ru"}, purpose="signup",
        )  # fmt: skip
    ru.witness()  # a signed head to prove up to
    head = ru.ledger("ru").latest_head(ru.store("ru"))
    assert head is not None
    ru.prove_limit = 2  # as verify, the sibling walk of the log, is limited
    codes = []
    for _ in range(20):
        try:
            ru.answer_peer("us", "prove", {"from": 1, "to": head.size})
        except DomicileError as exc:
            codes.append(exc.code)
    assert "rate_limited" in codes
