"""Finding 8 of the trust review: an erasure answered ``erased: true`` while a copy abroad
still served the full record until ``replicate`` ran.

Now an erasure deletes the subject's key and copies at every site that may hold copies,
at once, where those sites answer, and lists the others as pending. The attack: read the
copy abroad right after the erasure. Against a real ``domicile serve`` (SQLite), and with
the CLI on SQLite files and on PostgreSQL databases, where a copy site that does not
answer during the erasure is reported pending and cleared by ``replicate`` once it is
back.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from domicile.vault import Domicile
from domicile.vault.replication import ReplicationReport, Replicator, _TargetPlan
from tests.pg import PgCluster

from .conftest import Served, run_cli

JOE = {"full_name": "Joe Bloggs", "email": "joe.bloggs@example.com", "city": "Boston"}


def _subject_erased(entries: list[dict[str, Any]]) -> str:
    (erase,) = [e for e in entries if e["action"] == "erase"]
    subject: str = erase["subject"]
    return subject


def test_a_copy_abroad_is_gone_when_the_erasure_answers(served: Served) -> None:
    _, admin = served.client("ops", "admin")
    r = served.http.post(
        "/v1/collections/profiles/records",
        json={"subject": {"citizenship": "US"}, "fields": JOE, "purpose": "signup"},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    assert r.json()["site"] == "us"
    assert served.cli("replicate")["delivered"] == 1
    # A client of the German application reads the copy held in Germany.
    _, reader = served.client(
        "de-app", "records:read", "site:de", "collection:profiles", "purpose:*"
    )
    r = served.http.get(f"/v1/records/{token}", params={"purpose": "view"}, headers=reader)
    assert r.status_code == 200, r.text
    assert (r.json()["source"], r.json()["read_at"]) == ("replica", "de")
    assert r.json()["fields"]["email"] == JOE["email"]

    dpo, headers = served.client(
        "dpo", "records:erase", "site:us", "collection:profiles", "purpose:erasure"
    )
    r = served.http.post("/v1/subjects/erase", json={"token": token}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["erased"] is True
    assert r.json()["copies"] == {"deleted": ["de"], "pending": []}

    # The attack: read the copy abroad at once, before any replication worker runs.
    r = served.http.get(f"/v1/records/{token}", params={"purpose": "view"}, headers=reader)
    assert r.status_code == 404, r.text
    assert JOE["email"] not in r.text
    # Gone for good: the copy, and the subject's key at the copy's site; the erasure there
    # names who asked for it; nothing is left for the worker to do.
    subject = _subject_erased(served.audit("us"))
    (at_de,) = [e for e in served.audit("de") if e["action"] == "erase"]
    assert (at_de["subject"], at_de["client"], at_de["detail"]["copies"]) == (subject, dpo, 1)
    vault = Domicile.open(served.config)
    try:
        assert vault.keystore("de").get(subject) is None
        assert vault.store("de").replicas("", 100) == []
        assert vault.store("us").outbox(100) == []
    finally:
        vault.close(checkpoint=False)
    assert served.cli("replicate")["removed"] == 0


# --- the CLI, with a copy site that does not answer -------------------------------------------

CONFIG = """
environment_id: default
data_dir: data
default_site: us
local_site: us
sites:
  - {{id: ru, country: RU, location: {{provider: P, city: Moscow, address: "1 Street"}}, backend: "{ru}", keys: "{ru_keys}"}}
  - {{id: de, country: DE, location: {{provider: P, city: Frankfurt, address: "2 Strasse"}}, backend: "{de}", keys: "{de_keys}"}}
  - {{id: us, country: US, location: {{provider: P, city: Ashburn, address: "3 Way"}}, backend: "{us}", keys: "{us_keys}"}}
collections:
  profiles:
    fields:
      full_name: {{category: user.name, required: true}}
      email: {{category: user.contact.email, searchable: true, identifies: true, normalize: email}}
      city: {{category: user.contact.address.city}}
    replicate:
      - {{to: de, fields: [full_name, email, city]}}
"""


class Copies:
    """A deployment driven by the CLI whose copy site (Germany) can be taken down."""

    def __init__(self, folder: Path, urls: dict[str, str], de: PgCluster | None) -> None:
        self.folder = folder
        self.config = folder / "domicile.yaml"
        self.config.write_text(CONFIG.format(**urls), encoding="utf-8")
        self.de_cluster = de
        # Sites exist once setup made them (Germany's cluster has no databases yet).
        self.ok("sites", "create", "--all", "--create-database")

    def run(self, *args: str) -> tuple[int, Any]:
        done = run_cli(self.config, *args, "--json")
        try:
            out = json.loads(done.stdout)
        except ValueError:
            pytest.fail(f"domicile {' '.join(args)}: {done.stdout}{done.stderr}", pytrace=False)
        return done.returncode, out

    def ok(self, *args: str) -> Any:
        code, out = self.run(*args)
        assert code == 0, out
        return out

    def down(self) -> None:
        if self.de_cluster is not None:
            self.de_cluster.stop()
            return
        db = self.folder / "data" / "de.sqlite"  # its path becomes a directory: no database
        shutil.move(db, db.with_suffix(".away"))
        for extra in db.parent.glob("de.sqlite-*"):
            extra.unlink()
        db.mkdir()

    def up(self) -> None:
        if self.de_cluster is not None:
            self.de_cluster.start()
            return
        db = self.folder / "data" / "de.sqlite"
        db.rmdir()
        shutil.move(db.with_suffix(".away"), db)


@pytest.fixture(params=["sqlite", "postgresql"])
def copies(request: pytest.FixtureRequest, tmp_path: Path) -> Copies:
    if request.param == "sqlite":
        urls = {s: f"sqlite:data/{s}.sqlite" for s in ("ru", "de", "us")}
        urls |= {f"{s}_keys": f"sqlite:data/keys/{s}.sqlite" for s in ("ru", "de", "us")}
        return Copies(tmp_path, urls, None)
    de: PgCluster = request.getfixturevalue("pg_cluster")
    make_db: Callable[[str], str] = request.getfixturevalue("pg_database")
    urls = {name: make_db(name) for name in ("ru", "ru_keys", "us", "us_keys")}
    urls |= {"de": de.database_url("de"), "de_keys": de.database_url("de_keys")}
    return Copies(tmp_path, urls, de)


def _put(copies: Copies, email: str) -> str:
    out = copies.ok(
        "put", "profiles", "--subject", "citizenship=US", "--field", f"full_name={JOE['full_name']}",
        "--field", f"email={email}", "--field", f"city={JOE['city']}", "--purpose", "signup",
    )  # fmt: skip
    token: str = out["token"]
    return token


def test_erasure_reaches_copies_at_once_or_reports_them_pending(copies: Copies) -> None:
    token = _put(copies, "a@example.com")
    assert copies.ok("replicate")["delivered"] == 1
    assert copies.ok("get", token, "--purpose", "view", "--as-site", "de")["source"] == "replica"
    out = copies.ok("erase", token)
    assert out["copies"] == {"deleted": ["de"], "pending": []}
    # Right after the erasure, the copy abroad is not there to read.
    code, out = copies.run("get", token, "--purpose", "view", "--as-site", "de")
    assert (code, out["error"]["code"]) == (2, "not_found")

    # Germany does not answer while a second subject is erased: the answer says so, and
    # the erasure there waits in the outbox until the site is back and `replicate` runs.
    other = _put(copies, "b@example.com")
    assert copies.ok("replicate")["delivered"] == 1
    copies.down()
    try:
        out = copies.ok("erase", other)
        assert out["erased"] is True
        assert out["copies"] == {"deleted": [], "pending": ["de"]}
    finally:
        copies.up()
    report = copies.ok("replicate")
    assert report["removed"] == 1
    code, out = copies.run("get", other, "--purpose", "view", "--as-site", "de")
    assert (code, out["error"]["code"]) == (2, "not_found")
    vault = Domicile.open(copies.config)
    try:
        assert vault.store("de").replicas("", 100) == []
        erased = [
            json.loads(r.payload)["subject"]
            for r in vault.store("us").audit()
            if '"action":"erase"' in r.payload
        ]
        assert len(erased) == 2
        assert all(vault.keystore("de").get(s) is None for s in erased)
        assert vault.store("us").outbox(100) == []
        # Each erasure at the copy site is evidenced once, by the erasure or the worker.
        at_de = [json.loads(r.payload) for r in vault.store("de").audit()]
        assert sorted(e["subject"] for e in at_de if e["action"] == "erase") == sorted(erased)
    finally:
        vault.close(checkpoint=False)


def test_a_copy_in_flight_is_not_written_after_its_subject_was_erased_there(
    copies: Copies,
) -> None:
    """A worker that read the primary (and holds its key) before the erasure and delivers
    after it: the copy's site knows the subject is erased there and keeps nothing, not even
    the key the worker made for the copy."""
    token = _put(copies, "c@example.com")
    worker_vault = Domicile.open(copies.config)
    eraser = Domicile.open(copies.config)
    try:
        worker = Replicator(worker_vault)
        home, target = worker.sites["us"], worker.sites["de"]
        items = worker_vault.store("us").outbox(10)
        (primary,) = worker_vault.store("us").get_many([i.record_id for i in items]).values()
        plan = _TargetPlan(target)
        worker._plan_upsert(home, target, primary, plan, [], worker_vault._stamp())
        assert list(plan.copies) == [primary.record_id]  # about to deliver

        assert eraser.erase(token)["copies"] == {"deleted": ["de"], "pending": []}

        report = ReplicationReport()
        worker._apply(home, plan, report)
        assert report.delivered == 0
        assert eraser.store("de").replicas("", 100) == []
        assert eraser.keystore("de").get(primary.subject_id) is None
    finally:
        worker_vault.close(checkpoint=False)
        eraser.close(checkpoint=False)
