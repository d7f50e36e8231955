"""Attacks by a peer node (verified by its certificate, so trusted for who it is, never
for what it sends): each test sends what a compromised or buggy peer could."""

from __future__ import annotations

import pytest

from domicile.errors import BadInput
from domicile.federation.node import FederatedDomicile
from tests.federation.test_node_routing import federation  # noqa: F401  (the fixture)

EMAIL = "anna.volkova@example.ru"


@pytest.mark.xfail(
    strict=True,
    reason="the home node's checks of a request step (_plain_detail's _WORD, the subject's "
    "_CLIENT pattern) admit an e-mail address or a phone number: plaintext personal data "
    "then sits in its hash-chained log for good",
)
def test_a_peers_request_step_cannot_write_an_identity_into_the_log(
    federation: dict[str, FederatedDomicile],  # noqa: F811
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
