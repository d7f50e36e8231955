"""The evidence pack: exported from a deployment with known contents and transfers, it
verifies with both checkers (the command and the pack's own verify.py, which agree); a
byte changed in any member, the manifest or its signature is caught and the member named;
export reads only; no plaintext personal data gets into the pack."""

from __future__ import annotations

import ast
import datetime as dt
import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from domicile.cli.app import app
from domicile.vault import Domicile

runner = CliRunner()
TODAY = dt.datetime.now(dt.UTC).date()
SINCE, UNTIL = (TODAY - dt.timedelta(days=1)).isoformat(), TODAY.isoformat()
VALUES = {  # what the subjects gave us: none of it may be in the pack
    "anna": {"full_name": "Anna Volkova", "email": "anna.volkova@example.ru"},
    "boris": {"full_name": "Boris Ignatov", "email": "b.ignatov@example.ru"},
}


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def put(name: str) -> str:
    fields = [f"--field={k}={v}" for k, v in VALUES[name].items()]
    code, out, err = run(
        "put", "profiles", "--subject", "citizenship=RU", *fields, "--purpose", "signup", "--json"
    )
    assert code == 0, err
    return str(json.loads(out)["token"])


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two Russian subjects; a masked read from the US before the Art. 12 notice, then
    three full transfers after it (two to the US, one to Germany); witnessed."""
    folder = tmp_path_factory.mktemp("evidence") / "dep"
    mp = pytest.MonkeyPatch()
    code, _, err = run("init", str(folder))
    assert code == 0, err
    mp.setenv("DOMICILE_CONFIG", str(folder / "domicile.yaml"))
    anna, boris = put("anna"), put("boris")
    assert run("get", anna, "--purpose", "view", "--json")[0] == 0  # masked
    assert run("filings", "add", "ru.art12_notice=2025-03-03")[0] == 0
    for token, site in ((anna, "us"), (boris, "us"), (anna, "de")):
        code, out, err = run("get", token, "--purpose", "view", "--as-site", site, "--json")
        assert code == 0, err
        assert json.loads(out)["masked"] is False
    assert run("audit", "witness")[0] == 0
    assert run("audit", "heads", "--out", str(folder.parent / "heads.json"))[0] == 0
    yield folder
    mp.undo()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def pack(deployment: Path) -> Path:
    before = snapshot(deployment)
    out = deployment.parent / "pack.zip"
    code, stdout, err = run(
        "evidence", "export", "--since", SINCE, "--until", UNTIL, str(out), "--json"
    )
    assert code == 0, err
    data = json.loads(stdout)
    assert data["sites"]["ru"]["entries"] >= 6  # two writes, a masked read, three transfers
    assert snapshot(deployment) == before  # export only reads: byte-identical files
    return out


def verify(path: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    code, out, _err = run("evidence", "verify", str(path), "--json", *extra)
    return code, json.loads(out)


def script(pack: Path, folder: Path) -> Path:
    with zipfile.ZipFile(pack) as zf:
        (folder / "verify.py").write_bytes(zf.read("verify.py"))
    return folder / "verify.py"


def run_script(verify_py: Path, path: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-I", str(verify_py), str(path), "--json", *extra],
        capture_output=True, text=True, timeout=60, cwd=verify_py.parent,
    )  # fmt: skip
    return done.returncode, json.loads(done.stdout)


def test_a_good_pack_verifies_with_both_checkers_and_they_agree(
    deployment: Path, pack: Path, tmp_path: Path
) -> None:
    heads = str(deployment.parent / "heads.json")
    code, report = verify(pack, "--keys", heads)
    assert code == 0, report["failures"]
    assert report["keys"] == {"pinned": ["de", "ru", "us"], "unpinned": []}
    # The heads file's heads are the pack's newest: compared, and the same.
    assert all("matches_pinned_head" in s for s in report["sites"].values())
    assert report["manifest_signed_by"] == ["de", "ru", "us"]
    assert report["ledger"] == {"transfers": 3, "masked_disclosures": 1}
    assert all(s["proven"] for s in report["sites"].values())
    assert report["period"] == {"since": SINCE, "until": UNTIL}
    verify_py = script(pack, tmp_path)
    assert run_script(verify_py, pack, "--keys", heads) == (code, report)
    assert run_script(verify_py, pack) == verify(pack)
    code, out, _ = run("evidence", "verify", str(pack))
    assert code == 0
    assert "ok: every signature and proof holds" in out
    assert "3 transfers and 1 masked disclosures" in out


def test_the_shipped_checker_needs_only_the_standard_library_and_cryptography(
    pack: Path,
) -> None:
    with zipfile.ZipFile(pack) as zf:
        tree = ast.parse(zf.read("verify.py"))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    assert roots - set(sys.stdlib_module_names) == {"cryptography"}


def test_the_ledger_is_the_transfer_entries_of_the_period(pack: Path) -> None:
    with zipfile.ZipFile(pack) as zf:
        ledger = json.loads(zf.read("ledger/transfers.json"))
        ru = json.loads(zf.read("audit/ru.json"))
    assert ledger["total"] == 3
    assert {d: a["transfers"] for d, a in ledger["by_destination"].items()} == {"US": 2, "DE": 1}
    assert all("token" not in e for e in ledger["entries"])
    seqs = {e["seq"] for e in ru["entries"]}
    assert {e["seq"] for e in ledger["entries"]} <= seqs


def test_no_plaintext_personal_data_in_the_pack(pack: Path) -> None:
    with zipfile.ZipFile(pack) as zf:
        contents = {n: zf.read(n).lower() for n in zf.namelist()}
    # A PDF is compressed binary: a four-letter name turns up in it by chance (a CI run
    # found "anna" in a font stream). The PDF is rendered from the HTML member, which is
    # searched for every part; in the PDF's raw bytes, only parts of six letters or more
    # are searched, where a chance match is out of reach.
    assert any(n.endswith(".html") for n in contents) == any(n.endswith(".pdf") for n in contents)
    for name, data in contents.items():
        shortest = 6 if name.endswith(".pdf") else 1
        for fields in VALUES.values():
            for value in fields.values():
                for part in (value, *value.split(), *value.split("@")[:1]):
                    if len(part) >= shortest:
                        assert part.lower().encode() not in data, (
                            f"a value of a subject is in {name}"
                        )


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def rezip(path: Path, contents: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in contents.items():
            zf.writestr(name, data)


def named(report: dict[str, Any]) -> set[str]:
    return {f["member"] for f in report["failures"]}


def test_a_changed_byte_in_any_member_is_caught_and_named(pack: Path, tmp_path: Path) -> None:
    """Each member, the manifest and its signature: bytes changed at spread positions, the
    zip rebuilt around them (what someone editing the pack would do)."""
    original = members(pack)
    verify_py = script(pack, tmp_path)
    for name, data in original.items():
        for i, at in enumerate(sorted({0, len(data) // 3, len(data) // 2, len(data) - 2})):
            changed = bytearray(data)
            changed[at] ^= 0x01
            bad = tmp_path / f"bad-{name.replace('/', '_')}-{at}.zip"
            rezip(bad, {**original, name: bytes(changed)})
            code, report = verify(bad)
            assert code == 1, (name, at)
            assert name in named(report), (name, at, report["failures"])
            if i == 1:  # the shipped checker says the same
                assert run_script(verify_py, bad) == (code, report)


def test_a_flipped_byte_in_the_zip_file_names_the_member(pack: Path, tmp_path: Path) -> None:
    raw = pack.read_bytes()
    with zipfile.ZipFile(pack) as zf:
        infos = zf.infolist()
    for info in infos:
        # The member's stored bytes start after its local header (30 bytes, name, extra).
        name_len = int.from_bytes(raw[info.header_offset + 26 : info.header_offset + 28], "little")
        extra_len = int.from_bytes(raw[info.header_offset + 28 : info.header_offset + 30], "little")
        start = info.header_offset + 30 + name_len + extra_len
        changed = bytearray(raw)
        changed[start + info.compress_size // 2] ^= 0x40
        bad = tmp_path / "flipped.zip"
        bad.write_bytes(bytes(changed))
        code, report = verify(bad)
        assert code == 1, info.filename
        assert info.filename in named(report), (info.filename, report["failures"])


def resign(deployment: Path, contents: dict[str, bytes]) -> dict[str, bytes]:
    """What the deployment's operator could do: rewrite members, then hash and sign a new
    manifest with the real keys."""
    from domicile.evidence.verifier import MANIFEST_TAG

    manifest = json.loads(contents["manifest.json"])
    for m in manifest["members"]:
        data = contents[m["path"]]
        m["sha256"], m["bytes"] = hashlib.sha256(data).hexdigest(), len(data)
    raw = json.dumps(manifest).encode()
    vault = Domicile.open(deployment / "domicile.yaml", read_only=True)
    try:
        sigs = [
            {
                "site": s,
                "signature": vault.keys.signing_key(s).sign(MANIFEST_TAG + b"\x00" + raw).hex(),
            }
            for s in manifest["signed_by"]
        ]
    finally:
        vault.close(checkpoint=False)
    sig = {
        "format": "domicile.evidence-signatures/1",
        "manifest_sha256": hashlib.sha256(raw).hexdigest(),
        "signatures": sigs,
    }
    return {**contents, "manifest.json": raw, "manifest.sig": json.dumps(sig).encode()}


def test_even_the_signer_cannot_leave_a_transfer_out_or_change_an_entry(
    deployment: Path, pack: Path, tmp_path: Path
) -> None:
    original = members(pack)
    ledger = json.loads(original["ledger/transfers.json"])
    dropped = ledger["entries"].pop()
    ledger["total"] -= 1
    bad = tmp_path / "short-ledger.zip"
    rezip(
        bad, resign(deployment, {**original, "ledger/transfers.json": json.dumps(ledger).encode()})
    )
    code, report = verify(bad)
    assert code == 1
    problems = [f["problem"] for f in report["failures"] if f["member"] == "ledger/transfers.json"]
    assert problems == [
        f"entry {dropped['seq']} of site {dropped['logged_at_site']} is a transfer of the "
        "period it does not list",
        "its totals are not those of the transfers of the proven logs",  # per destination
    ]
    ru = json.loads(original["audit/ru.json"])
    entry = next(e for e in ru["entries"] if '"action":"transfer"' in e["payload"])
    entry["payload"] = entry["payload"].replace('"to_country":"US"', '"to_country":"DE"')
    bad = tmp_path / "edited-entry.zip"
    rezip(bad, resign(deployment, {**original, "audit/ru.json": json.dumps(ru).encode()}))
    code, report = verify(bad)
    assert code == 1
    assert any(
        f["member"] == "audit/ru.json"
        and f"entry {entry['seq']} is not in the signed head" in f["problem"]
        for f in report["failures"]
    ), report["failures"]


def test_a_pack_signed_with_other_keys_fails_against_pinned_keys(
    deployment: Path, pack: Path, tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from domicile.audit.heads import public_key_text
    from domicile.evidence.verifier import MANIFEST_TAG

    original = members(pack)
    forger = Ed25519PrivateKey.generate()
    keys = json.loads(original["keys.json"])
    for entry in keys["sites"].values():
        entry["public_key"] = public_key_text(forger.public_key())
    contents = {**original, "keys.json": json.dumps(keys).encode()}
    manifest = json.loads(contents["manifest.json"])
    for m in manifest["members"]:
        m["sha256"] = hashlib.sha256(contents[m["path"]]).hexdigest()
        m["bytes"] = len(contents[m["path"]])
    raw = json.dumps(manifest).encode()
    sig = forger.sign(MANIFEST_TAG + b"\x00" + raw).hex()
    contents["manifest.json"] = raw
    contents["manifest.sig"] = json.dumps({
        "format": "domicile.evidence-signatures/1",
        "manifest_sha256": hashlib.sha256(raw).hexdigest(),
        "signatures": [{"site": s, "signature": sig} for s in manifest["signed_by"]],
    }).encode()  # fmt: skip
    bad = tmp_path / "forged.zip"
    rezip(bad, contents)
    code, report = verify(bad, "--keys", str(deployment.parent / "heads.json"))
    assert code == 1
    assert "keys.json" in named(report)
    assert {"audit/ru.json", "audit/de.json", "audit/us.json"} <= named(report)  # the heads


def test_bad_input_exits_2_and_writes_nothing(deployment: Path, pack: Path, tmp_path: Path) -> None:
    before = snapshot(deployment)
    not_zip = tmp_path / "junk.zip"
    not_zip.write_text("not a zip")
    assert run("evidence", "verify", str(not_zip))[0] == 2
    assert run("evidence", "verify", str(tmp_path / "none.zip"))[0] == 2
    empty = tmp_path / "empty.zip"
    rezip(empty, {"a.txt": b"x"})
    code, out, _ = run("evidence", "verify", str(empty), "--json")
    assert code == 2
    assert "not a domicile evidence pack" in json.loads(out)["error"]["message"]
    assert run("evidence", "verify", str(pack), "--keys", str(not_zip))[0] == 2
    out = tmp_path / "p.zip"
    for args in (
        ["--since", UNTIL, "--until", SINCE],  # backwards
        ["--since", "2025-02-30"],
        ["--since", SINCE, "--until", "tomorrow"],
    ):
        code, _, err = run("evidence", "export", *args, str(out))
        assert code == 2, args
        assert err.startswith("error:")
        assert not out.exists()
    code, _, err = run("evidence", "export", "--since", SINCE, str(pack))  # exists
    assert code == 2
    assert "already exists" in err
    assert run("evidence", "export", "--since", SINCE, str(tmp_path / "no" / "p.zip"))[0] == 2
    assert snapshot(deployment) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".part") == []


def test_a_period_without_entries_verifies(pack: Path, tmp_path: Path) -> None:
    out = tmp_path / "old.zip"
    code, stdout, err = run(
        "evidence", "export", "--since", "2020-01-01", "--until", "2020-01-31", str(out), "--json"
    )
    assert code == 0, err
    # Each site shows its first entry, after the period: nothing of the log is in it.
    sites = json.loads(stdout)["sites"].values()
    assert [(s["entries"], s["first"], s["in_period"]) for s in sites] == [(1, 1, 0)] * 3
    code, report = verify(out)
    assert code == 0, report["failures"]
    assert report["ledger"] == {"transfers": 0, "masked_disclosures": 0}
    code, text, _ = run(
        "evidence",
        "export",
        "--since",
        "2020-01-01",
        "--until",
        "2020-01-31",
        str(tmp_path / "o.zip"),
    )
    assert code == 0
    assert "ru: entries 1-1 (0 of the period); signed heads: " in text
    assert "check it with: domicile evidence verify" in text


def test_operations_no_head_covers_yet_are_left_out_and_counted(
    deployment: Path, tmp_path: Path
) -> None:
    vault = Domicile.open(deployment / "domicile.yaml")
    try:
        token = vault.put(
            "profiles", subject={"citizenship": "RU"}, fields={"full_name": "X Y"}, purpose="signup"
        ).token
        vault.get(token, purpose="view", as_site="us")  # a transfer, in no pack yet
    finally:
        vault.close(checkpoint=False)  # no witness round: neither is under a head
    out = tmp_path / "p.zip"
    code, stdout, err = run("evidence", "export", "--since", SINCE, str(out), "--json")
    assert code == 0, err
    assert json.loads(stdout)["sites"]["ru"]["not_yet_signed"] == 2
    code, report = verify(out)
    assert code == 0, report["failures"]
    assert report["sites"]["ru"]["not_yet_signed"] == 2
    assert report["ledger"]["transfers"] == 3  # the ledger ends where the proven log ends
    code, text, _ = run("evidence", "export", "--since", SINCE, str(tmp_path / "h.zip"))
    assert "2 later operations of the period are not in the pack" in text
    assert run("audit", "witness")[0] == 0
    code, stdout, _ = run("evidence", "export", "--since", SINCE, str(tmp_path / "q.zip"), "--json")
    assert code == 0
    assert json.loads(stdout)["sites"]["ru"]["not_yet_signed"] == 0
    code, report = verify(tmp_path / "q.zip")
    assert code == 0, report["failures"]
    assert report["ledger"]["transfers"] == 4


@pytest.mark.parametrize("end", ["first", "last"])
def test_even_the_signer_cannot_cut_the_period_short(
    deployment: Path, pack: Path, tmp_path: Path, end: str
) -> None:
    original = members(pack)
    ru = json.loads(original["audit/ru.json"])
    ru["entries"] = ru["entries"][1:] if end == "first" else ru["entries"][:-1]
    bad = tmp_path / "cut.zip"
    rezip(bad, resign(deployment, {**original, "audit/ru.json": json.dumps(ru).encode()}))
    code, report = verify(bad)
    assert code == 1
    problems = [f["problem"] for f in report["failures"] if f["member"] == "audit/ru.json"]
    assert any(
        f"the {'start' if end == 'first' else 'end'} of the period may have been cut" in p
        for p in problems
    ), report["failures"]


def test_a_head_other_than_the_pinned_one_of_the_same_size_is_a_fork(
    deployment: Path, pack: Path, tmp_path: Path
) -> None:
    from domicile.audit.heads import TreeHead, head_message

    heads = json.loads((deployment.parent / "heads.json").read_text())
    ru = heads["sites"]["ru"]["head"]
    other = bytes(32)
    vault = Domicile.open(deployment / "domicile.yaml", read_only=True)
    try:
        signature = vault.keys.signing_key("ru").sign(
            head_message("ru", ru["size"], other, ru["signed_at"])
        )
    finally:
        vault.close(checkpoint=False)
    forked = TreeHead("ru", ru["size"], other, ru["signed_at"], signature)
    heads["sites"]["ru"]["head"] = forked.to_dict()
    pinned = tmp_path / "heads.json"
    pinned.write_text(json.dumps(heads))
    code, report = verify(pack, "--keys", str(pinned))
    assert code == 1
    assert [f["member"] for f in report["failures"]] == ["audit/ru.json"]
    assert "forked" in report["failures"][0]["problem"]
    heads["sites"]["ru"]["head"]["root"] = "11" * 32  # no longer signed: the file is bad input
    pinned.write_text(json.dumps(heads))
    assert run("evidence", "verify", str(pack), "--keys", str(pinned))[0] == 2


def forge(original: dict[str, bytes], rename: dict[str, str]) -> dict[str, bytes]:
    """What a forger without the deployment's keys could do: rename sites (``rename``:
    old id -> new id; a site renamed to "" is dropped with its log and transfers), make a
    key per site, sign every head and the manifest with them, drop the witness records
    (they would need the real keys)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from domicile.audit.heads import public_key_text
    from domicile.evidence.verifier import MANIFEST_TAG, head_message

    contents = dict(original)
    new = {old: sid for old, sid in rename.items() if sid}
    forged = {sid: Ed25519PrivateKey.generate() for sid in new.values()}
    keys = json.loads(contents["keys.json"])
    keys["sites"] = {
        new[old]: {**e, "public_key": public_key_text(forged[new[old]].public_key())}
        for old, e in keys["sites"].items()
        if old in new
    }
    contents["keys.json"] = json.dumps(keys).encode()
    manifest = json.loads(contents["manifest.json"])
    for old in rename:
        path = f"audit/{old}.json"
        seg = json.loads(contents.pop(path))
        if old not in new:
            manifest["members"] = [m for m in manifest["members"] if m["path"] != path]
            continue
        sid, key = new[old], forged[new[old]]
        seg["site"], seg["witnessed"] = sid, []
        for h in seg["heads"]:
            h["site"] = sid
            h["signature"] = key.sign(
                head_message(sid, h["size"], bytes.fromhex(h["root"]), h["signed_at"])
            ).hex()
        contents[f"audit/{sid}.json"] = json.dumps(seg).encode()
        for m in manifest["members"]:
            if m["path"] == path:
                m["path"] = f"audit/{sid}.json"
    ledger = json.loads(contents["ledger/transfers.json"])
    for rows in (ledger["entries"], ledger["masked_disclosures"]["entries"]):
        rows[:] = [r for r in rows if new.get(r["logged_at_site"])]
        for r in rows:
            r["logged_at_site"] = new[r["logged_at_site"]]
    ledger["total"] = len(ledger["entries"])
    ledger["masked_disclosures"]["total"] = len(ledger["masked_disclosures"]["entries"])
    contents["ledger/transfers.json"] = json.dumps(ledger).encode()
    for m in manifest["members"]:
        m["sha256"] = hashlib.sha256(contents[m["path"]]).hexdigest()
        m["bytes"] = len(contents[m["path"]])
    manifest["signed_by"] = sorted(forged)
    raw = json.dumps(manifest).encode()
    contents["manifest.json"] = raw
    contents["manifest.sig"] = json.dumps({
        "format": "domicile.evidence-signatures/1",
        "manifest_sha256": hashlib.sha256(raw).hexdigest(),
        "signatures": [
            {"site": s, "signature": k.sign(MANIFEST_TAG + b"\x00" + raw).hex()}
            for s, k in sorted(forged.items())
        ],
    }).encode()  # fmt: skip
    return contents


@pytest.mark.parametrize(
    "rename",
    [
        {"ru": "ru-1", "de": "de-1", "us": "us-1"},  # every site renamed, new keys
        {"ru": "", "de": "", "us": ""},  # no site at all
        {"ru": "ru-1", "de": "", "us": ""},  # one renamed, the others dropped
    ],
    ids=["renamed", "empty", "dropped"],
)
def test_a_pack_of_other_sites_fails_against_pinned_keys(
    deployment: Path, pack: Path, tmp_path: Path, rename: dict[str, str]
) -> None:
    bad = tmp_path / "forged.zip"
    rezip(bad, forge(members(pack), rename))
    heads = str(deployment.parent / "heads.json")
    code, report = verify(bad, "--keys", heads)
    assert code == 1, report
    problems = " | ".join(f["problem"] for f in report["failures"])
    for site in ("ru", "de", "us"):
        assert f"site {site} of the keys file given is not in the pack" in problems
    for sid in filter(None, rename.values()):
        assert f"site {sid} is not in the keys file given" in problems
    assert run_script(script(pack, tmp_path), bad, "--keys", heads) == (code, report)


def test_a_site_left_out_of_the_pack_fails_against_pinned_keys(
    deployment: Path, pack: Path, tmp_path: Path
) -> None:
    """The operator drops the US site (its log and its transfers) and signs with the real
    keys of the sites left."""
    original = members(pack)
    keys = json.loads(original["keys.json"])
    del keys["sites"]["us"]
    ledger = json.loads(original["ledger/transfers.json"])
    ledger["entries"] = [e for e in ledger["entries"] if e["logged_at_site"] != "us"]
    ledger["total"] = len(ledger["entries"])
    contents = {**original, "keys.json": json.dumps(keys).encode()}
    contents["ledger/transfers.json"] = json.dumps(ledger).encode()
    del contents["audit/us.json"]
    for site in ("ru", "de"):  # and the US site's records of their heads
        seg = json.loads(contents[f"audit/{site}.json"])
        seg["witnessed"] = [w for w in seg["witnessed"] if w["witness"] != "us"]
        contents[f"audit/{site}.json"] = json.dumps(seg).encode()
    manifest = json.loads(contents["manifest.json"])
    manifest["members"] = [m for m in manifest["members"] if m["path"] != "audit/us.json"]
    manifest["signed_by"] = ["de", "ru"]
    contents["manifest.json"] = json.dumps(manifest).encode()
    bad = tmp_path / "no-us.zip"
    rezip(bad, resign(deployment, contents))
    code, report = verify(bad, "--keys", str(deployment.parent / "heads.json"))
    assert code == 1
    assert {
        "member": "keys.json",
        "problem": "site us of the keys file given is not in the pack",
    } in (report["failures"])


def test_a_pack_of_another_deployment_fails_against_pinned_keys(
    deployment: Path, pack: Path, tmp_path: Path
) -> None:
    heads = json.loads((deployment.parent / "heads.json").read_text())
    heads["environment"] = "another-deployment"
    pinned = tmp_path / "heads.json"
    pinned.write_text(json.dumps(heads))
    code, report = verify(pack, "--keys", str(pinned))
    assert code == 1
    assert any("deployment" in f["problem"] for f in report["failures"]), report["failures"]


def test_deeply_nested_json_is_a_failure_not_a_crash(
    deployment: Path, pack: Path, tmp_path: Path
) -> None:
    original = members(pack)
    nested = b"[" * 200_000 + b"]" * 200_000
    verify_py = script(pack, tmp_path)
    cases = {
        "manifest": {**original, "manifest.json": nested},
        "changed": {**original, "ledger/transfers.json": nested},  # not what the manifest says
        "signed": resign(deployment, {**original, "ledger/transfers.json": nested}),
    }
    for case, contents in cases.items():
        bad = tmp_path / f"nested-{case}.zip"
        rezip(bad, contents)
        code, report = verify(bad)
        assert code == 1, (case, report)
        member = "manifest.json" if case == "manifest" else "ledger/transfers.json"
        assert member in named(report), (case, report["failures"])
        assert run_script(verify_py, bad) == (code, report)
    keys = tmp_path / "nested-keys.json"
    keys.write_bytes(b'{"sites":' + nested + b"}")
    code, out, _ = run("evidence", "verify", str(pack), "--keys", str(keys), "--json")
    assert code == 2
    assert "nested too deeply" in json.loads(out)["error"]["message"]


def test_only_the_members_the_manifest_lists_are_read(
    pack: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An added member is named, never read; a member of another size than the listed one
    is named, not read; and the members together have a size cap."""
    from domicile.evidence import verifier

    original = members(pack)
    bad = tmp_path / "extra.zip"
    rezip(bad, {**original, "extra.bin": bytes(1 << 20), "keys.json": original["keys.json"] + b" "})
    read: list[str] = []
    real = zipfile.ZipFile.read

    def spy(self: zipfile.ZipFile, name: Any, pwd: bytes | None = None) -> bytes:
        read.append(name if isinstance(name, str) else name.filename)
        return real(self, name, pwd)

    monkeypatch.setattr(zipfile.ZipFile, "read", spy)
    code, report = verify(bad)
    assert code == 1
    assert {"extra.bin", "keys.json"} <= named(report)
    assert "extra.bin" not in read
    assert "keys.json" not in read
    monkeypatch.setattr(verifier, "MAX_PACK", 4096)
    code, report = verify(pack)
    assert code == 1
    assert any("too big" in f["problem"] for f in report["failures"]), report["failures"]


LEDGER_EDITS = {
    "kind": lambda d: d["entries"][0].update(kind="replica"),
    "from_country": lambda d: d["entries"][0].update(from_country="DE"),
    "routes": lambda d: d["entries"][0].update(routes=["adequacy"]),
    "bases": lambda d: d["entries"][0].update(bases=["consent"]),
    "rules": lambda d: d["entries"][0].update(rules=["ru.none"]),
    "filings": lambda d: d["entries"][0].update(filings=[]),
    "purpose": lambda d: d["entries"][0].update(purpose="security"),
    "categories": lambda d: d["entries"][0].update(categories=[]),
    "added field": lambda d: d["entries"][0].update(note="approved"),
    "masks": lambda d: d["masked_disclosures"]["entries"][0].update(masks={}),
    "by destination": lambda d: d["by_destination"]["US"].update(transfers=1, subjects=1),
    "masked totals": lambda d: d["masked_disclosures"].update(by_destination={}),
    "period": lambda d: d["period"].update(since="2020-01-01"),
}


@pytest.mark.parametrize("edit", sorted(LEDGER_EDITS))
def test_even_the_signer_cannot_change_a_field_of_the_ledger(
    deployment: Path, pack: Path, tmp_path: Path, edit: str
) -> None:
    original = members(pack)
    ledger = json.loads(original["ledger/transfers.json"])
    before = json.dumps(ledger, sort_keys=True)
    LEDGER_EDITS[edit](ledger)
    assert json.dumps(ledger, sort_keys=True) != before
    bad = tmp_path / "edited-ledger.zip"
    contents = {**original, "ledger/transfers.json": json.dumps(ledger).encode()}
    rezip(bad, resign(deployment, contents))
    code, report = verify(bad)
    assert code == 1, edit
    assert named(report) == {"ledger/transfers.json"}, report["failures"]


@pytest.fixture
def own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A deployment of its own, for tests that need a log of a particular shape."""
    folder = tmp_path / "own"
    assert run("init", str(folder))[0] == 0
    monkeypatch.setenv("DOMICILE_CONFIG", str(folder / "domicile.yaml"))
    return folder


def test_an_entry_with_a_skewed_time_cannot_hide_a_cut(own: Path, tmp_path: Path) -> None:
    """Entries whose own times are out of order (a clock set back): the signer ships the
    log from such an entry on, leaving out the entries of the period before it."""
    put("anna")
    vault = Domicile.open(own / "domicile.yaml")
    try:
        vault.clock = lambda: dt.datetime(2020, 1, 1, tzinfo=dt.UTC)  # type: ignore[method-assign]
        vault.put(
            "profiles", subject={"citizenship": "RU"}, fields={"full_name": "X Y"}, purpose="signup"
        )
    finally:
        vault.close(checkpoint=False)
    assert run("audit", "witness")[0] == 0
    out = tmp_path / "p.zip"
    assert run("evidence", "export", "--since", UNTIL, str(out))[0] == 0
    assert verify(out)[0] == 0
    original = members(out)
    ru = json.loads(original["audit/ru.json"])
    skewed = next(i for i, e in enumerate(ru["entries"]) if '"at":"2020-' in e["payload"])
    assert skewed > 0
    ru["entries"] = ru["entries"][skewed:]
    bad = tmp_path / "cut.zip"
    rezip(bad, resign(own, {**original, "audit/ru.json": json.dumps(ru).encode()}))
    code, report = verify(bad)
    assert code == 1
    assert any(
        f["member"] == "audit/ru.json"
        and "the start of the period may have been cut" in f["problem"]
        for f in report["failures"]
    ), report["failures"]


def test_a_pinned_head_older_than_the_pack_is_compared_or_fails(own: Path, tmp_path: Path) -> None:
    put("anna")
    assert run("audit", "witness")[0] == 0
    held = tmp_path / "held.json"
    assert run("audit", "heads", "--out", str(held))[0] == 0
    put("boris")
    assert run("audit", "witness")[0] == 0
    later = (TODAY + dt.timedelta(days=1)).isoformat()  # every head is before this period
    out = tmp_path / "p.zip"
    assert run("evidence", "export", "--since", later, "--until", later, str(out))[0] == 0
    code, report = verify(out, "--keys", str(held))
    assert code == 1
    assert any("cannot be compared" in f["problem"] for f in report["failures"]), report
    out = tmp_path / "q.zip"
    args = ("--since", later, "--until", later, "--pinned", str(held), str(out))
    assert run("evidence", "export", *args)[0] == 0
    code, report = verify(out, "--keys", str(held))
    assert code == 0, report["failures"]
    assert all("matches_pinned_head" in s for s in report["sites"].values())
