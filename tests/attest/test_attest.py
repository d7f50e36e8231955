"""Attestation end to end, through the command: a Russian subject proven at home and
nowhere else; a subject with a lawful copy abroad, the transfer entry shown; proofs for
another subject, against a stale head or with a forged head fail, each named; what the
verifier is given holds no subject id, record id, token or value; the proof is made
without writing anything; the API route gives a subject's own proof to a client with the
scope and to no other."""

from __future__ import annotations

import contextlib
import json
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from domicile.attest.commitment import commitment_message
from domicile.cli.app import app
from domicile.crypto.signing import sign

runner = CliRunner()
VALUES = {
    "anna": ("RU", {"full_name": "Anna Volkova", "email": "anna.volkova@example.ru"}),
    "john": ("US", {"full_name": "John Carter", "email": "j.carter@example.com"}),
    "boris": ("RU", {"full_name": "Boris Ignatov", "email": "b.ignatov@example.ru"}),
}


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def put(name: str) -> dict[str, Any]:
    citizenship, values = VALUES[name]
    fields = [f"--field={k}={v}" for k, v in values.items()]
    code, out, err = run(
        "put", "profiles", "--subject", f"citizenship={citizenship}", *fields,
        "--purpose", "signup", "--json",
    )  # fmt: skip
    assert code == 0, err
    return dict(json.loads(out))


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Anna and Boris at home in Russia; John in the US with a copy in Germany (the
    collection copies names to Germany where the law permits); committed, heads exported."""
    folder = tmp_path_factory.mktemp("attest") / "dep"
    mp = pytest.MonkeyPatch()
    assert run("init", str(folder))[0] == 0
    config = folder / "domicile.yaml"
    text = config.read_text()
    text = text.replace("    # replicate:\n    #   - {to: de", "    replicate:\n      - {to: de")
    config.write_text(text)
    mp.setenv("DOMICILE_CONFIG", str(config))
    out = {"folder": folder, "anna": put("anna"), "john": put("john"), "boris": put("boris")}
    assert run("replicate")[0] == 0
    code, stdout, err = run("attest", "commit", "--json")
    assert code == 0, err
    assert json.loads(stdout)["ok"]
    out["heads"] = folder.parent / "heads.json"
    assert run("audit", "heads", "--out", str(out["heads"]))[0] == 0
    yield out
    mp.undo()


def prove(dep: dict[str, Any], name: str, *extra: str) -> dict[str, Any]:
    code, out, err = run("attest", "subject", "--token", dep[name]["token"], "--json", *extra)
    assert code == 0, err
    return dict(json.loads(out))


def verify(
    dep: dict[str, Any], doc: Any, *extra: str, heads: Path | None = None
) -> tuple[int, dict[str, Any]]:
    path = dep["folder"].parent / "proof.json"
    path.write_text(json.dumps(doc))
    if "--subject" not in extra:  # the hash the subject's application kept
        extra = (*extra, "--subject", str(doc.get("subject", "")))
    code, out, err = run(
        "attest", "verify", str(path), "--keys", str(heads or dep["heads"]), "--json", *extra
    )
    assert code in (0, 1), err
    return code, dict(json.loads(out))


def problems(report: dict[str, Any]) -> str:
    return " | ".join([*report["problems"], *(p for s in report["sites"] for p in s["problems"])])


def test_a_subject_at_home_and_nowhere_else(dep: dict[str, Any]) -> None:
    doc = prove(dep, "anna")
    assert doc["home"] == dep["anna"]["site"] == "ru"
    assert {s: v["holds"] for s, v in doc["sites"].items()} == {
        "ru": "primary", "de": "nothing", "us": "nothing",
    }  # fmt: skip
    code, report = verify(dep, doc)
    assert code == 0, problems(report)
    assert report["held_at"] == ["ru"]
    # Human output too.
    path = dep["folder"].parent / "anna.json"
    path.write_text(json.dumps(doc))
    code, out, _ = run(
        "attest", "verify", str(path), "--keys", str(dep["heads"]), "--subject", doc["subject"]
    )
    assert code == 0
    assert "ok ru: holds the primary records" in out
    assert "ok de: does not hold the subject" in out
    assert "attestation verified" in out


def test_a_copy_abroad_shows_the_transfer_that_allowed_it(dep: dict[str, Any]) -> None:
    doc = prove(dep, "john")
    home = dep["john"]["site"]
    assert doc["home"] == home
    assert doc["sites"][home]["holds"] == "primary"
    assert doc["sites"]["de"]["holds"] == "copy"
    code, report = verify(dep, doc)
    assert code == 0, problems(report)
    de = next(s for s in report["sites"] if s["site"] == "de")
    assert de["holds"] == "copy"
    assert de["transfers"]
    t = de["transfers"][0]
    assert t["from_site"] == home
    assert t["decision"] == "allow"
    assert t["to_country"] == "DE"
    # A copy whose transfer entries are left out is not lawful as far as the proof shows.
    bare = json.loads(json.dumps(doc))
    bare["sites"]["de"]["transfers"] = []
    code, report = verify(dep, bare)
    assert code == 1
    assert "no transfer entry" in problems(report)


def test_by_identity_is_the_same_subject(dep: dict[str, Any]) -> None:
    by_token = prove(dep, "anna")
    code, out, err = run(
        "attest", "subject", "--identity", f"email={VALUES['anna'][1]['email']}", "--json"
    )
    assert code == 0, err
    assert json.loads(out)["subject"] == by_token["subject"]
    code, _, err = run("attest", "subject", "--identity", "email=nobody@example.ru", "--json")
    assert code == 2
    assert "no subject" in err + _
    assert "nobody@example.ru" not in err + _


def test_a_proof_for_another_subject_fails(dep: dict[str, Any]) -> None:
    anna, boris = prove(dep, "anna"), prove(dep, "boris")
    assert anna["subject"] != boris["subject"]
    # Boris's proof passed off as Anna's: the leaves are Boris's, not Anna's hash.
    swapped = {**boris, "subject": anna["subject"]}
    code, report = verify(dep, swapped)
    assert code == 1
    assert "another subject" in problems(report)
    # A genuine proof, but not of the subject the verifier asked about.
    code, report = verify(dep, boris, "--subject", anna["subject"])
    assert code == 1
    assert "another subject" in problems(report)
    code, report = verify(dep, anna, "--subject", anna["subject"])
    assert code == 0, problems(report)


def test_a_forged_head_fails(dep: dict[str, Any]) -> None:
    doc = prove(dep, "anna")
    # The commitment's root changed (a site claiming another set of subjects).
    forged = json.loads(json.dumps(doc))
    forged["sites"]["de"]["commitment"]["root"] = "00" * 32
    code, report = verify(dep, forged)
    assert code == 1
    assert "de" in [s["site"] for s in report["sites"] if s["problems"]]
    assert "commitment has a bad signature (forged" in problems(report)
    # A commitment properly signed, but with a key that is not the site's.
    other = json.loads(json.dumps(doc))
    head = other["sites"]["us"]["commitment"]
    head["signature"] = sign(
        Ed25519PrivateKey.generate(),
        commitment_message("us", head["size"], bytes.fromhex(head["root"]), head["signed_at"]),
    ).hex()
    code, report = verify(dep, other)
    assert code == 1
    assert "forged" in problems(report)
    # The audit tree head forged.
    tree = json.loads(json.dumps(doc))
    tree["sites"]["ru"]["audit_head"]["signature"] = "11" * 64
    code, report = verify(dep, tree)
    assert code == 1
    assert "audit tree head has a bad signature" in problems(report)
    # A site left out of the proof.
    short = json.loads(json.dumps(doc))
    del short["sites"]["us"]
    code, report = verify(dep, short)
    assert code == 1
    assert "says nothing about this site" in problems(report)


def test_the_verifier_is_given_no_subject_id_and_no_value(dep: dict[str, Any]) -> None:
    folder = dep["folder"]
    secrets: set[str] = set()
    for site in ("ru", "de", "us"):
        with contextlib.closing(sqlite3.connect(folder / "domicile-data" / f"{site}.sqlite")) as db:
            for sid, rid in db.execute("SELECT subject_id, record_id FROM records"):
                secrets |= {sid, rid}
    assert secrets
    for _, values in VALUES.values():
        secrets |= set(values.values())
    for name in ("anna", "john"):
        secrets.add(dep[name]["token"])
    john = prove(dep, "john")
    # A copy's transfer entries go whole (so that they can be checked): they name John's
    # internal random id and his copied record's id, and nothing else of the kind.
    payloads = " ".join(t.pop("payload") for t in john["sites"]["de"]["transfers"])
    assert [s for s in secrets if s in payloads]
    assert not [s for _, values in VALUES.values() for s in values.values() if s in payloads]
    given = json.dumps(john) + json.dumps(prove(dep, "anna"))
    given += dep["heads"].read_text()
    leaked = [s for s in secrets if s in given]
    assert leaked == []
    # Per site, at most the subject's own hash and two opaque neighbours: nothing to enumerate.
    doc = prove(dep, "anna")
    for section in doc["sites"].values():
        absence = section.get("absence") or {}
        shown = [n for n in (absence.get("left"), absence.get("right")) if n]
        assert len(shown) <= 2
        assert all(set(n) == {"index", "key", "role_commit", "audit_path"} for n in shown)


def test_the_proof_is_made_without_writing(dep: dict[str, Any], tmp_path: Path) -> None:
    folder = dep["folder"]

    def snapshot() -> dict[str, bytes]:
        return {str(p): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    before = snapshot()
    out = tmp_path / "p.json"
    code, _, err = run("attest", "subject", "--token", dep["anna"]["token"], "--out", str(out))
    assert code == 0, err
    assert out.stat().st_mode & 0o777 == 0o600
    assert run("attest", "status")[0] == 0
    assert snapshot() == before


def test_bad_inputs_exit_2(dep: dict[str, Any], tmp_path: Path) -> None:
    junk = tmp_path / "junk.json"
    junk.write_text("{}")
    pin = ("--subject", "00" * 32)
    code, _, _ = run("attest", "verify", str(junk), "--keys", str(dep["heads"]), *pin)
    assert code == 2
    code, _, _ = run(
        "attest", "verify", str(tmp_path / "missing.json"), "--keys", str(dep["heads"]), *pin
    )
    assert code == 2
    # No --subject: a proof could be about anyone, so the verifier does not start.
    code, _, err = run("attest", "verify", str(junk), "--keys", str(dep["heads"]))
    assert code == 2
    assert "--subject" in err
    code, _, _ = run("attest", "subject", "--token", "dom1_nonsense", "--json")
    assert code == 2
    code, _, _ = run("attest", "subject", "--json")
    assert code == 2
    code, _, _ = run("attest", "commit", "--site", "mars")
    assert code == 2


def test_the_api_gives_a_subject_its_own_proof(dep: dict[str, Any]) -> None:
    from domicile.http.app import create_app
    from domicile.vault import Domicile

    vault = Domicile.open(dep["folder"] / "domicile.yaml")
    try:
        application = create_app(vault)
        clients = application.state.service.clients
        app_client, key = clients.add(
            "subject-app",
            ["subjects:attest", "site:ru", "collection:profiles", "purpose:attestation"],
            api_key=True,
        )
        _, weak = clients.add(
            "reader", ["records:read", "site:ru", "collection:profiles"], api_key=True
        )
        with TestClient(application) as http:
            body = {"token": dep["anna"]["token"]}
            r = http.post(
                "/v1/subjects/attestation", json=body, headers={"Authorization": f"Bearer {key}"}
            )
            assert r.status_code == 200, r.text
            code, report = verify(dep, r.json())
            assert code == 0, problems(report)
            # The disclosure is audited at the home site, as a read is, naming the client.
            last = json.loads(list(vault.store("ru").audit(1))[-1].payload)
            assert last["action"] == "read"
            assert last["detail"] == {"operation": "subjects:attest"}
            assert last["purpose"] == "attestation"
            assert last["client"] == app_client.id
            r = http.post(
                "/v1/subjects/attestation", json=body, headers={"Authorization": f"Bearer {weak}"}
            )
            assert r.status_code == 403
            assert "subjects:attest" in r.text
            # A client of site us asks about Anna, at home in Russia: decided as a read from
            # us would be, refused (audited at ru), never answered.
            _, abroad = clients.add(
                "us-app",
                ["subjects:attest", "site:us", "collection:profiles", "purpose:attestation"],
                api_key=True,
            )
            r = http.post(
                "/v1/subjects/attestation", json=body, headers={"Authorization": f"Bearer {abroad}"}
            )
            assert r.status_code == 403, r.text
            assert "policy does not let site 'us'" in r.text
            last = json.loads(list(vault.store("ru").audit(1))[-1].payload)
            assert (last["action"], last["requester"]) == ("refuse", "us")
            # A purpose outside the client's purpose scopes is refused.
            _, narrow = clients.add(
                "narrow-app",
                ["subjects:attest", "site:ru", "collection:profiles", "purpose:support"],
                api_key=True,
            )
            r = http.post(
                "/v1/subjects/attestation",
                json={**body, "purpose": "marketing"},
                headers={"Authorization": f"Bearer {narrow}"},
            )
            assert r.status_code == 403, r.text
            paths = application.openapi()["paths"]
            assert "/v1/subjects/attestation" in paths
    finally:
        vault.close(checkpoint=False)


def test_a_broken_proof_is_named_never_a_traceback(dep: dict[str, Any]) -> None:
    """Any part of a proof replaced by junk: the verifier names a failure (or, for the
    parts it does not rely on, still holds), and never raises."""
    from domicile.attest import verifier
    from domicile.audit.heads import HeadsFile

    heads = HeadsFile.load(dep["heads"])
    doc = prove(dep, "john", "--heads", str(dep["heads"]))
    paths: list[list[Any]] = []

    def walk(node: Any, at: list[Any]) -> None:
        paths.append(at)
        items = (
            node.items()
            if isinstance(node, dict)
            else enumerate(node)
            if isinstance(node, list)
            else ()
        )
        for k, v in items:
            walk(v, [*at, k])

    walk(doc, [])
    assert verifier.check(doc, heads, doc["subject"]).ok
    unbound = verifier.check(doc, heads)  # a true proof, but about whom?
    assert not unbound.ok
    assert "unbound" in unbound.problems[0]
    rng = random.Random(11)
    junk: list[Any] = [None, 1, -1, "x", "", [], {}, "00" * 32, "zz" * 32, 2**70, {"a": 1}]
    for _ in range(300):
        at = rng.choice(paths[1:])
        broken = json.loads(json.dumps(doc))
        node = broken
        for k in at[:-1]:
            node = node[k]
        node[at[-1]] = rng.choice(junk)
        report = verifier.check(broken, heads, doc["subject"])
        assert isinstance(report.ok, bool)


# The tests below change the deployment: they run last.


def test_a_changed_site_refuses_proofs_until_committed(dep: dict[str, Any]) -> None:
    old = prove(dep, "anna")
    put_new = {"full_name": "Vera Orlova", "email": "vera@example.ru"}
    code, _, err = run(
        "put", "profiles", "--subject", "citizenship=RU",
        *[f"--field={k}={v}" for k, v in put_new.items()], "--purpose", "signup",
    )  # fmt: skip
    assert code == 0, err
    code, out, _ = run("attest", "status")
    assert code == 1
    assert "stale" in out
    code, out, err = run("attest", "subject", "--token", dep["anna"]["token"], "--json")
    assert code == 1
    assert "stale_commitment" in out + err
    assert run("attest", "commit")[0] == 0
    newer = dep["folder"].parent / "heads-newer.json"
    assert run("audit", "heads", "--out", str(newer))[0] == 0
    # The old proof stands on heads older than the verifier's: stale.
    code, report = verify(dep, old, heads=newer)
    assert code == 1
    assert "stale" in problems(report)
    # A new proof against the new heads holds; against the old heads file it is too new.
    fresh = prove(dep, "anna")
    assert verify(dep, fresh, heads=newer)[0] == 0
    code, report = verify(dep, fresh)
    assert code == 1
    assert "export the heads again" in problems(report)
    # Made against the verifier's (older) heads file, it shows that the newer heads extend
    # it, and holds against that file.
    extended = prove(dep, "anna", "--heads", str(dep["heads"]))
    assert any("consistency" in v for v in extended["sites"].values())
    code, report = verify(dep, extended)
    assert code == 0, problems(report)
    # A consistency proof that does not connect the two heads fails.
    site = next(s for s, v in extended["sites"].items() if "consistency" in v)
    extended["sites"][site]["consistency"]["path"][0] = "00" * 32
    code, report = verify(dep, extended)
    assert code == 1
    assert "does not extend it" in problems(report)


def test_commit_with_a_site_down_publishes_the_others(dep: dict[str, Any]) -> None:
    db = dep["folder"] / "domicile-data" / "de.sqlite"
    away = db.with_name("de.sqlite.away")
    db.rename(away)
    try:
        code, out, _ = run("attest", "commit", "--json")
        assert code == 4
        data = json.loads(out)
        assert data["unavailable"] == ["de"]
        assert sorted(s["site"] for s in data["sites"]) == ["ru", "us"]
        code, _, err = run("attest", "subject", "--token", dep["anna"]["token"], "--json")
        assert code == 4, err
    finally:
        away.rename(db)
    assert run("attest", "commit")[0] == 0
