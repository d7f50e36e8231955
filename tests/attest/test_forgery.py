"""Forgeries of an operator who keeps old pieces of its own logs: an old commitment of a
site (made before a copy reached it) put in place of the newest one, and an entry that is
no transfer passed off as the transfer behind a copy. Each must fail, named."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from domicile.cli.app import app

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """John at home in the US; de committed while empty, then John copied to de and
    everything committed again; heads exported; John's proof made."""
    folder = tmp_path_factory.mktemp("forge") / "dep"
    mp = pytest.MonkeyPatch()
    assert run("init", str(folder))[0] == 0
    config = folder / "domicile.yaml"
    text = config.read_text()
    text = text.replace("    # replicate:\n    #   - {to: de", "    replicate:\n      - {to: de")
    config.write_text(text)
    mp.setenv("DOMICILE_CONFIG", str(config))
    code, out, err = run(
        "put", "profiles", "--subject", "citizenship=US", "--field=full_name=John Carter",
        "--field=email=j.carter@example.com", "--purpose", "signup", "--json",
    )  # fmt: skip
    assert code == 0, err
    token = json.loads(out)["token"]
    assert run("attest", "commit", "--site", "de")[0] == 0  # de: empty
    assert run("replicate")[0] == 0
    assert run("attest", "commit")[0] == 0
    heads = folder.parent / "heads.json"
    assert run("audit", "heads", "--out", str(heads))[0] == 0
    code, out, err = run("attest", "subject", "--token", token, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["sites"]["de"]["holds"] == "copy"
    yield {"folder": folder, "heads": heads, "doc": doc, "config": config}
    mp.undo()


def verify(dep: dict[str, Any], doc: Any) -> tuple[int, str]:
    path = dep["folder"].parent / "proof.json"
    path.write_text(json.dumps(doc))
    code, out, err = run(
        "attest", "verify", str(path), "--keys", str(dep["heads"]), "--subject", doc["subject"]
    )
    assert code in (0, 1), err
    return code, out


def test_the_honest_proof_verifies(dep: dict[str, Any]) -> None:
    code, out = verify(dep, dep["doc"])
    assert code == 0, out
    assert "ok de: holds a lawful copy" in out


def test_an_old_commitment_cannot_stand_for_the_newest(dep: dict[str, Any]) -> None:
    from domicile.attest.commitment import CommitmentHead, SubjectTree, attest_key
    from domicile.attest.service import ATTEST_PREFIX, _entry_path
    from domicile.vault import Domicile

    doc = json.loads(json.dumps(dep["doc"]))
    vault = Domicile.open(dep["config"], read_only=True)
    try:
        store = vault.store("de")
        rows = [r for r in store.audit(1) if r.payload.startswith(ATTEST_PREFIX)]
        assert len(rows) == 2  # de's first (empty) commitment, then the one with the copy
        first = rows[0]
        old = CommitmentHead.from_dict(json.loads(first.payload)["detail"]["commitment"], "c")
        old_tree = SubjectTree(attest_key(vault.keys.token_key()), "de", {})
        assert old_tree.root == old.root
        sec = doc["sites"]["de"]
        sec["commitment"] = old.to_dict()
        sec["entry"] = {
            "seq": first.seq,
            "payload": first.payload,
            "prev_hash": first.prev_hash.hex(),
        }
        sec["audit_path"] = _entry_path(store, first.seq, sec["audit_head"]["size"])
        sec.pop("member")
        sec.pop("transfers")
        sec["holds"] = "nothing"
        sec["absence"] = old_tree.prove(bytes.fromhex(doc["subject"]), None)
    finally:
        vault.close(checkpoint=False)
    code, out = verify(dep, doc)
    assert code == 1, out
    assert "FAILED de:" in out
    assert "newest commitment" in out
    assert "attestation verified" not in out


def test_an_entry_that_is_no_transfer_cannot_stand_for_one(dep: dict[str, Any]) -> None:
    from domicile.attest.service import ATTEST_PREFIX
    from domicile.audit.ledger import LogTree
    from domicile.audit.merkle import inclusion_proof
    from domicile.stores.base import entry_hash
    from domicile.vault import Domicile

    doc = json.loads(json.dumps(dep["doc"]))
    vault = Domicile.open(dep["config"], read_only=True)
    try:
        store = vault.store("de")
        size = doc["sites"]["de"]["audit_head"]["size"]
        row = next(r for r in store.audit(1) if r.payload.startswith(ATTEST_PREFIX))
        t = doc["sites"]["de"]["transfers"][0]
        t.update(
            seq=row.seq,
            entry_hash=entry_hash(row.prev_hash, row.seq, row.payload).hex(),
            audit_path=[h.hex() for h in inclusion_proof(row.seq - 1, size, LogTree(store).subtree)],
            rules=["eu.gdpr.art45_adequacy"], to_country="DE", from_country="US",
            decision="allow", collection="profiles",
        )  # fmt: skip
        if "payload" in t:  # the real entry's payload, over the attest entry's place
            t["prev_hash"] = row.prev_hash.hex()
    finally:
        vault.close(checkpoint=False)
    code, out = verify(dep, doc)
    assert code == 1, out
    assert "FAILED de:" in out
    assert "transfer entry" in out
    assert "attestation verified" not in out


def _one_entry_log(payload: str) -> tuple[Any, dict[str, Any]]:
    """A signed-looking head over a log of one entry, and that entry as a proof ships it."""
    from domicile.audit.heads import TreeHead
    from domicile.audit.merkle import leaf_hash
    from domicile.stores.base import entry_hash

    root = leaf_hash(entry_hash(b"", 1, payload))
    head = TreeHead("de", 1, root, "2026-01-01T00:00:00+00:00", b"\x00" * 64)
    return head, {"seq": 1, "prev_hash": "", "payload": payload, "audit_path": []}


def transfer(**detail: Any) -> str:
    data = {
        "action": "transfer", "site": "de", "requester": "us", "decision": "allow",
        "collection": "profiles", "detail": {"kind": "replica", "to_country": "DE", **detail},
    }  # fmt: skip
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        (transfer(), "written before transfer entries named the subject's keyed hash"),
        (transfer(subject_key="ab" * 32), "copied another subject"),
        (transfer(kind="read", subject_key="cd" * 32), "records no copy"),
        (transfer(subject_key="cd" * 32).replace('"allow"', '"deny"'), "did not allow"),
        (transfer(subject_key="cd" * 32).replace('"site":"de"', '"site":"ru"'), "not here"),
    ],
)
def test_a_transfer_entry_that_cannot_be_bound_fails_closed(payload: str, named: str) -> None:
    from domicile.attest.verifier import SiteResult, _check_transfers
    from domicile.errors import BadInput

    head, entry = _one_entry_log(payload)
    with pytest.raises(BadInput) as caught:
        _check_transfers("de", bytes.fromhex("cd" * 32), [entry], head, SiteResult("de"))
    assert named in caught.value.message
    # The same entry, naming the subject and allowed, passes; its summary is read from it.
    head, entry = _one_entry_log(transfer(subject_key="cd" * 32))
    result = SiteResult("de")
    _check_transfers("de", bytes.fromhex("cd" * 32), [entry], head, result)
    assert result.transfers[0]["from_site"] == "us"
