"""The shortcuts of the hot paths give exactly what the plain forms give: payload templates
the canonical payload, batched sealing and tokens values that open, fresh ids ids."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from dataclasses import replace

import pytest

from domicile.audit import AuditEvent
from domicile.audit.ledger import PayloadTemplate
from domicile.crypto.blind import DIGEST_BYTES, BlindIndexer
from domicile.crypto.envelope import FieldCipher, new_data_key
from domicile.vault import PolicyRefused
from domicile.vault.replication import Replicator
from domicile.vault.service import new_ids
from domicile.vault.tokens import TokenCodec

from .conftest import IVAN, Deployment

EVENTS = [
    AuditEvent(action="read", site="ru", purpose="view", collection="profiles",
               requester="us", rules=("ru.a", "ru.b"), categories=("user.name",),
               fields=("full_name",), decision="allow"),
    AuditEvent(action="transfer", site="ru", purpose="p", collection="c", requester="de",
               detail={"kind": "access", "masked": False, "routes": [], "to_country": "DE",
                       "version": 1}),
    AuditEvent(action="write", site="ru", purpose="é", detail={"note": 'quote " and \\ and \u2028'}),
]  # fmt: skip


@pytest.mark.parametrize("event", EVENTS)
@pytest.mark.parametrize(
    ("record", "subject", "at", "version"),
    [
        ("0" * 32, "f" * 32, "2025-09-01T12:00:00+00:00", 7),
        ('odd "record" \\ ü', "Ж\x00\n", "", 0),
        ("", "s", "t", 12345678901234),
    ],
)
def test_a_template_renders_the_canonical_payload(
    event: AuditEvent, record: str, subject: str, at: str, version: int
) -> None:
    vary = ["record", "subject", "at"]
    expected_event = replace(event, record=record, subject=subject, at=at)
    if "version" in event.detail:
        vary.append("detail.version")
        expected_event = replace(expected_event, detail={**event.detail, "version": version})
    template = PayloadTemplate(event, vary)
    values = [record, subject, at, version][: len(vary)]
    assert template.render(*values) == expected_event.payload()


def test_a_template_takes_only_strings_and_ints() -> None:
    template = PayloadTemplate(EVENTS[0], ["record"])
    with pytest.raises(TypeError):
        template.render(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        template.render(True)


def test_ids_are_fresh_hex_and_ordered_by_time() -> None:
    first = new_ids(1000)
    time.sleep(0.002)
    later = new_ids(3)
    assert len(set(first + later)) == 1003
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in first + later)
    assert max(i[:12] for i in first) < min(i[:12] for i in later)
    assert new_ids(0) == []


def test_sealing_many_values_opens_each_in_its_place() -> None:
    cipher = FieldCipher(new_data_key())
    items = [(f"value {i}".encode(), f"ctx {i}".encode()) for i in range(20)]
    sealed = cipher.seal_all(items)
    assert len({s[1:13] for s in sealed}) == 20  # a fresh nonce each
    assert [cipher.open(s, ctx) for s, (_, ctx) in zip(sealed, items, strict=True)] == [
        p for p, _ in items
    ]
    with pytest.raises(Exception):  # noqa: B017, PT011 - bound to its context
        cipher.open(sealed[0], items[1][1])


@pytest.mark.parametrize("key", [b"k" * 32, b"", b"x" * 64, bytes(range(65)), b"\xff" * 100])
def test_blind_digests_are_hmac_sha256(key: bytes) -> None:
    """The indexer's keyed HMAC, copied for each digest, gives exactly ``hmac.digest``: keys shorter
    than a block, a block long, and longer (hashed first), for values and search digests."""
    indexer = BlindIndexer(key)
    for collection, field, value in [
        ("profiles", "email", "a@example.org"),
        ("@identity", "user.contact.email", "Ж ü \u2028" * 40),
        ("profiles", "email", ""),
    ]:
        msg = b"\x00".join((collection.encode(), field.encode(), value.encode()))
        want = hmac.digest(key, msg, hashlib.sha256)[:DIGEST_BYTES]
        assert indexer.digest(collection, field, value) == want
        assert indexer.digest(collection, field, value) == want  # the cached prefix
    search = bytes(range(32))
    assert (
        indexer.of_search(search)
        == hmac.digest(key, b"@search\x00" + search, hashlib.sha256)[:DIGEST_BYTES]
    )
    assert BlindIndexer(key + b"!").digest("c", "f", "v") != indexer.digest("c", "f", "v")


def test_hand_written_inits_set_every_field() -> None:
    """``StoredRecord`` and ``PutResult`` set their fields at once instead of through the
    frozen dataclass's ``__init__``: the same fields, equal and frozen as before."""
    import dataclasses

    from domicile.stores import StoredRecord
    from domicile.vault.results import PutResult

    for cls in (StoredRecord, PutResult):
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        values = [f"v{i}" for i in range(len(names))]
        made = cls(*values)
        assert [getattr(made, n) for n in names] == values
        assert dataclasses.replace(made, **{names[0]: "other"}) != made
        assert dataclasses.replace(made) == made
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(made, names[0], "x")
    assert PutResult("t", "s", "c", None, True).join_tokens == {}  # type: ignore[arg-type]


def test_tokens_issued_together_read_back() -> None:
    codec = TokenCodec(new_data_key())
    ids = new_ids(5)
    tokens = codec.issue_many("ru", ids)
    assert len(set(tokens)) == 5
    assert [codec.read(t) for t in tokens] == [("ru", i) for i in ids]
    # The URL-safe alphabet, unpadded, as ``issue`` writes them.
    assert all(re.fullmatch(r"dom1_[A-Za-z0-9_-]+", t) for t in tokens)
    assert {len(t) for t in tokens} == {len(codec.issue("ru", ids[0]))}


def test_every_entry_the_vault_writes_is_canonical(deployment: Deployment) -> None:
    """Puts, reads at home and from abroad (a transfer, with its count), copies, masked
    reads and refusals: each stored payload is what ``AuditEvent.payload`` makes of it
    (sorted keys, no empty fields), and every chain verifies."""
    vault = deployment.open()
    vault.add_filing("eu.scc.US", "2025-01-01")
    people = [
        {"subject": {"citizenship": "RU"}, "fields": IVAN},
        {"subject": {"citizenship": "FR", "residence": "FR"},
         "fields": {"full_name": "Marie Curie", "email": "marie@example.fr"}},
        {"subject": {"citizenship": "US"}, "fields": {"full_name": "Al Smith", "age": 40}},
    ]  # fmt: skip
    results = vault.put_many("profiles", people, purpose="signup")
    for r in results:
        for site in ("ru", "de", "us"):
            try:
                vault.get(r.token, purpose="view", as_site=site)
            except PolicyRefused:  # refusals are entries too
                continue
    Replicator(vault).run_once()
    for site in ("ru", "de", "us"):
        for row in vault.store(site).audit():
            data = json.loads(row.payload)
            assert all(v not in (None, [], {}) for v in data.values())
            canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            assert row.payload == canonical
    assert all(report.ok for report in vault.verify_audit())
    assert vault.store("de").transfer_counts(2025, "US") == (1, 0)
    vault.close()
