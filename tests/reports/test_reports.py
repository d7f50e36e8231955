"""The register and the compliance report against a deployment with known contents (see
conftest.py): the JSON models exactly, the HTML with its figures and sources, the PDF read
back with pdftotext and a page rendered to PNG with pdftoppm; and the CLI reads only."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from domicile.cli.app import app
from domicile.reports import compliance, register, render, report_files, write_report
from domicile.vault import Domicile

from .conftest import PLAINTEXT, Known

runner = CliRunner()
CITY, EMAIL, NAME = "user.contact.address.city", "user.contact.email", "user.name"


def tool(name: str) -> str:
    """A poppler tool the PDF tests need; never skipped: a missing one fails with the fix."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: run scripts/report-deps (poppler-utils)", pytrace=False)
    return found


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def models(known: Known, **kw: Any) -> tuple[dict[str, Any], dict[str, Any], Any]:
    with Domicile(known.config, read_only=True) as v:
        reg = register(v, **kw)
        comp = compliance(
            v, jurisdiction="RU", since=known.today - dt.timedelta(days=3), until=known.today
        )
        heads = v.audit_heads()
    return reg, comp, heads


def test_the_register_lists_the_russian_database_and_the_change_since_the_notice(
    known: Known,
) -> None:
    today, notice = known.today.isoformat(), known.notice.isoformat()
    m = known.today.month
    due = dt.date(known.today.year + (m == 12), m % 12 + 1, 15).isoformat()
    reg, _, _ = models(known)
    assert reg == {
        "kind": "register",
        "pack": "ru",
        "jurisdiction": "RU",
        "title": "Databases holding Russian citizens' personal data (152-FZ Art. 22(3), item 10.1)",
        "citation": "152-FZ Art. 22(3) item 10.1 (Minkomsvyaz Order 315 of 28.08.2015); changes notified by the 15th of the following month (since 1 March 2023)",
        "evidence": "ev.db_register",
        "as_of": today,
        "environment": "default",
        "sites": [
            {
                "site": "ru", "country": "RU", "in_country": True, "provider": "Selectel",
                "city": "Moscow", "address": "Tsvetochnaya 21", "backend": "sqlite",
                # Three Russian citizens were written, one erased.
                "records": 2, "copies": 0, "subjects": 2, "categories": [CITY, EMAIL, NAME],
                "sources": {"ru": "1-2"},
            }
        ],
        "totals": {"sites": 1, "records": 2, "copies": 0, "subjects": 2},
        "notice": {
            "filing": "ru.art22_notice", "on_record": notice, "entry": "us:3", "compared_with": notice,
            "compared_from": "filing ru.art22_notice", "status": "change notice due",
            "due": due, "overdue": False,
        },
        "changes": [
            {"site": "ru", "change": "database added", "category": None, "on": today,
             "entry": "ru:1", "due": due},
        ],
        "sources": {
            "query": "entries of every site's audit naming a localization rule of the 'ru' pack (writes and"
            " copies delivered), then every later write, copy, deletion and erasure of the"
            " same subjects, replayed in time order",
            "entries": {"ru": "1-2"},
        },
    }  # fmt: skip
    # Compared with the register as of today, nothing changed and nothing is due.
    same, _, _ = models(known, since_notice=known.today)
    assert same["changes"] == []
    assert same["notice"]["status"] == "up to date"
    assert same["notice"]["due"] is None


def test_the_compliance_report_counts_what_the_audit_holds(known: Known) -> None:
    today, notice = known.today.isoformat(), known.notice.isoformat()
    _, comp, heads = models(known)
    with Domicile(known.config, read_only=True) as v:
        witnessed = {
            s: [
                {"witness": w, "size": row.size, "root": row.root.hex(), "entry": f"{w}:{row.seq}"}
                for w in ("ru", "de", "us")
                if w != s and (row := max(v.store(w).witnessed(s), key=lambda r: r.size))
            ]
            for s in ("ru", "de", "us")
        }
    # Every site's newest head is held by both others.
    assert all(
        len(w) == 2 and w[0]["root"] == heads.heads[s].root.hex() for s, w in witnessed.items()
    )
    masked_at = comp["masked"]["entries"][0].pop("at")
    assert masked_at.startswith(today)
    days = [(known.today - dt.timedelta(days=n)).isoformat() for n in (3, 2, 1, 0)]
    assert comp == {
        "kind": "compliance", "jurisdiction": "RU", "packs": ["ru"], "countries": ["RU"],
        "period": {"since": days[0], "until": today, "granularity": "day"},
        "as_of": today, "environment": "default",
        "holdings": {
            "sites": [{"site": "ru", "country": "RU", "records": 2, "copies": 0, "subjects": 2,
                       "categories": [CITY, EMAIL, NAME]}],
            "subjects": 2, "figure": "holdings",
        },
        "transfers": {
            "total": 1,
            "by_destination": {"US": {
                "transfers": 1, "subjects": 1, "kinds": {"access": 1},
                "routes": {"ru.transfer.art12:non_adequate": 1}, "filings": ["ru.art12_notice"],
            }},
            "series": {"buckets": days, "by_destination": {"US": [0, 0, 0, 1]}},
            "figure": "transfers",
        },
        "decisions": {
            # three writes, the transfer (allow) and the masked read (deny)
            "by_outcome": {"allow": 4, "deny": 1},
            "by_rule": {
                "ru.localization.2025": {"allow": 4, "deny": 1},
                "ru.notice.art22": {"allow": 3},
                "ru.transfer.art12": {"allow": 1, "deny": 1},
            },
            "figure": "decisions",
        },
        "masked": {
            "total": 1,
            "entries": [{"entry": "ru:4", "from_country": "RU", "to_country": "US",
                         "masks": {"email": "domain", "full_name": "initials"}, "withheld": [],
                         "rules": ["ru.localization.2025", "ru.transfer.art12"]}],
            "figure": "masked",
        },
        "refused": {"total": 0, "entries": [], "figure": "refused"},
        "obligations": {
            "as_of": today,
            "asked": ["store at ru (RU)", "read from US of data held in RU"],
            "outstanding": [], "waiting": [],
            "filings_on_record": [{"filing": "ru.art12_notice", "date": notice},
                                  {"filing": "ru.art22_notice", "date": notice}],
        },
        "parity": {"ok": True, "discrepancies": 0, "problems": {}, "unavailable": []},
        "audit": {
            "ok": True,
            "sites": [
                {"site": s, "status": "verified", "ok": True, "entries": n, "witnessed": w,
                 "unwitnessed": 0, "witnesses": sorted({"ru", "de", "us"} - {s}), "problem": None}
                for s, n, w in (("ru", 8, 6), ("de", 5, 3), ("us", 5, 3))
            ],
            "heads": {
                s: {"size": h.size, "root": h.root.hex(), "signed_at": h.signed_at,
                    "public_key": heads.keys[s], "witnessed": witnessed[s]}
                for s, h in sorted(heads.heads.items())
            },
        },
        "discovery": {"scans": [], "findings": 0},
        "figures": {
            "holdings": {"title": "Records and subjects by site", "entries": {"ru": "1-2"}, "count": 2,
                         "query": "writes naming a rule of ru or written at a site in RU, copies of those"
                         f" subjects' records, less deletions and erasures, up to {today}"},
            "transfers": {"title": "Transfers by destination", "entries": {"ru": "6"}, "count": 1,
                          "query": "entries with action transfer (not masked) about these subjects, logged in the period"},
            "decisions": {"title": "Decisions by outcome and rule", "entries": {"ru": "1-4, 6"}, "count": 5,
                          "query": "entries holding a decision about these subjects, logged in the period; rules of ru only"},
            "masked": {"title": "Masked disclosures", "entries": {"ru": "4"}, "count": 1,
                       "query": "entries with action disclose_masked about these subjects, in the period"},
            "refused": {"title": "Refusals", "entries": {}, "count": 0,
                        "query": "entries with action refuse about these subjects or naming a rule of the packs, in the period"},
        },
        "register": {
            "pack": "ru", "sites": 1, "changes": 1,
            "notice": {"filing": "ru.art22_notice", "on_record": notice, "entry": "us:3", "compared_with": notice,
                       "compared_from": "filing ru.art22_notice", "status": "change notice due",
                       "due": comp["register"]["notice"]["due"], "overdue": False},
        },
    }  # fmt: skip
    assert {h.size for h in heads.heads.values()} == {6, 3}


def test_the_eu_report_shows_the_refused_read_and_the_missing_clauses(known: Known) -> None:
    with Domicile(known.config, read_only=True) as v:
        eu = compliance(v, jurisdiction="EU", since=known.today, until=known.today)
    assert [(s["site"], s["records"], s["subjects"]) for s in eu["holdings"]["sites"]] == [
        ("de", 2, 2)
    ]
    assert eu["refused"]["total"] == 1
    (refusal,) = eu["refused"]["entries"]
    assert (refusal["entry"], refusal["operation"], refusal["to_country"], refusal["decision"]) == (
        "de:3", "get", "US", "deny",
    )  # fmt: skip
    assert "eu.transfer.gdpr" in refusal["rules"]
    assert eu["transfers"]["total"] == 0
    assert eu["obligations"]["asked"] == ["store at de (DE)", "read from US of data held in DE"]
    assert "register" not in eu  # the GDPR keeps no database register


def test_html_holds_the_figures_with_their_sources_and_no_value(known: Known) -> None:
    reg, comp, _ = models(known)
    html = render(comp, "html").decode()
    assert html.count('src="data:image/svg+xml;base64,') == 3  # holdings, transfers, decisions
    for fid in ("holdings", "transfers", "decisions", "masked", "refused"):
        assert f'id="src-{fid}"' in html
        assert f'href="#src-{fid}"' in html
    assert "ru.transfer.art12:non_adequate: 1" in html
    assert "<code>ru: 1-4, 6</code>" in html
    assert "http://" not in html
    assert "https://" not in html
    page = render(reg, "html").decode()
    assert "Tsvetochnaya 21" in page
    assert "Selectel" in page
    for value in PLAINTEXT:
        assert value not in html
        assert value not in page


def test_pdf_text_and_a_page_rendered(known: Known, tmp_path: Path) -> None:
    reg, comp, _ = models(known)
    paths = write_report(comp, tmp_path) + write_report(reg, tmp_path, formats=("pdf",))
    names = sorted(p.name for p in paths)
    assert names == sorted([
        f"compliance-ru-{comp['period']['since']}-{comp['period']['until']}.{f}" for f in ("json", "html", "pdf")
    ] + ["register-ru.pdf"])  # fmt: skip
    pdf = next(p for p in paths if p.name.startswith("compliance") and p.suffix == ".pdf")
    assert pdf.read_bytes().startswith(b"%PDF-")
    text = subprocess.run(
        [tool("pdftotext"), "-layout", str(pdf), "-"], check=True, capture_output=True, text=True
    ).stdout
    for needle in ("Compliance report: RU", "Transfers by destination", "ru.transfer.art12:non_adequate",
                   "Audit verification", "verified", "the newest", "ru: 1-4, 6", "Sources"):  # fmt: skip
        assert needle in text, needle
    reg_text = subprocess.run(
        [tool("pdftotext"), "-layout", str(tmp_path / "register-ru.pdf"), "-"], check=True, capture_output=True, text=True
    ).stdout  # fmt: skip
    for needle in (
        "Database location register",
        "Tsvetochnaya",
        "Selectel",
        "database added",
        "change notice due",
    ):
        assert needle in reg_text, needle
    for value in PLAINTEXT:
        assert value not in text
        assert value not in reg_text
    subprocess.run(
        [
            tool("pdftoppm"),
            "-r",
            "50",
            "-png",
            "-f",
            "1",
            "-l",
            "1",
            str(pdf),
            str(tmp_path / "page"),
        ],
        check=True,
    )
    (png,) = tmp_path.glob("page*.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 5000  # a page with tables and a chart, not a blank one


def _state(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file()
    }  # fmt: skip


def test_the_cli_reads_only_and_writes_only_its_out_file(known: Known, tmp_path: Path) -> None:
    before = _state(known.folder)
    cfg = str(known.folder)
    since, until = (known.today - dt.timedelta(days=3)).isoformat(), known.today.isoformat()
    code, out, _ = run("report", "register", "--config", cfg, "--json")
    assert code == 0, out
    assert json.loads(out)["totals"]["subjects"] == 2
    code, out, _ = run("report", "register", "--config", cfg)
    assert code == 0
    assert "Tsvetochnaya 21" in out
    assert "change notice due" in out
    code, out, _ = run(
        "report",
        "compliance",
        "--jurisdiction",
        "RU",
        "--since",
        since,
        "--until",
        until,
        "--config",
        cfg,
    )
    assert code == 0, out
    assert "transfers: 1; to US: 1" in out
    code, out, _ = run("report", "compliance", "--jurisdiction", "ru", "--since", since, "--until", until,
                       "--config", cfg, "--format", "html")  # fmt: skip
    assert code == 0
    assert out.startswith("<!DOCTYPE html>")
    target = tmp_path / "r.pdf"
    code, out, _ = run("report", "register", "--config", cfg, "--out", str(target))
    assert code == 0
    assert "wrote" in out
    assert target.read_bytes().startswith(b"%PDF-")
    assert _state(known.folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.pdf"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["register", "--pack", "eu"], "keeps no database register"),
        (["register", "--since-notice", "2025-02-30"], "not a real date"),
        (["register", "--format", "pdf"], "a PDF goes to a file"),
        (["register", "--format", "docx"], "unknown --format"),
        (["register", "--out", "x.txt"], "cannot tell the format"),
        (["register", "--out", "/nonexistent/folder/r.pdf"], "no folder"),
        (["compliance", "--jurisdiction", "XX", "--since", "2025-01-01", "--until", "2025-02-01"], "no pack"),
        (["compliance", "--jurisdiction", "RU", "--since", "2025-02-01", "--until", "2025-01-01"], "before --since"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(known: Known, args: list[str], words: str) -> None:
    before = _state(known.folder)
    code, out, err = run("report", *args, "--config", str(known.folder))
    assert code == 2, (out, err)
    assert words in err
    assert "Traceback" not in err + out
    assert len(err.strip().splitlines()) == 1
    assert _state(known.folder) == before


def test_a_missing_extra_is_one_line_and_exit_2(known: Known, tmp_path: Path) -> None:
    script = (
        "import sys; sys.modules['weasyprint'] = None; from domicile.cli.app import main; "
        f"sys.argv = ['domicile', 'report', 'register', '--config', {str(known.folder)!r}, "
        f"'--out', {str(tmp_path / 'r.pdf')!r}]; main()"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: domicile report --format pdf needs the 'reports' extra (pip install "
        "'domicile[reports]')"
    )
    assert list(tmp_path.iterdir()) == []


def test_report_files_for_the_evidence_pack(known: Known) -> None:
    with Domicile(known.config, read_only=True) as v:
        files = report_files(v, since=known.notice, until=known.today, formats=("json",))
    since, until = known.notice.isoformat(), known.today.isoformat()
    assert sorted(files) == sorted(
        [f"reports/register-{p}.json" for p in ("cn", "id", "in", "kz", "ru", "uz", "vn")]
        + [
            f"reports/compliance-{j}-{since}-{until}.json"
            for j in ("cn", "eu", "id", "in", "kz", "ru", "uz", "vn")
        ]
    )
    ru = json.loads(files["reports/register-ru.json"])
    assert ru["totals"] == {"sites": 1, "records": 2, "copies": 0, "subjects": 2}
    cn = json.loads(files["reports/register-cn.json"])
    assert (cn["sites"], cn["notice"]["status"]) == ([], "not notified (kept as evidence)")


def test_a_site_that_does_not_answer_fails_the_report(known: Known, tmp_path: Path) -> None:
    db = known.folder / "data" / "de.sqlite"
    aside = tmp_path / "aside"
    aside.mkdir()
    files = list(db.parent.glob("de.sqlite*"))
    for f in files:
        f.rename(aside / f.name)
    db.mkdir()  # the site's database cannot be opened
    try:
        for args in (
            ["register"],
            [
                "compliance",
                "--jurisdiction",
                "RU",
                "--since",
                "2025-01-01",
                "--until",
                "2025-12-31",
            ],
        ):
            code, out, err = run(
                "report", *args, "--config", str(known.folder), "--out", str(tmp_path / "r.json")
            )
            assert code == 4, (out, err)
            assert "site 'de' is unavailable" in err
            assert not (tmp_path / "r.json").exists()
    finally:
        db.rmdir()
        for f in aside.iterdir():
            f.rename(db.parent / f.name)


def test_the_register_counts_the_laws_subjects_not_every_record_in_the_country(
    known: Known,
) -> None:
    # A US citizen's record kept in Russia fires Russia's notice rule (the site is in its
    # territory) but no localization rule: it is not in the register of citizens' databases.
    from domicile.reports.ledger import Entry
    from domicile.reports.register import covered_by

    with Domicile(known.config, read_only=True) as v:
        ru = next(lp for lp in v.engine.packs if lp.id == "ru")
    about = covered_by(ru)
    at = dt.datetime.now(dt.UTC)
    assert about(
        Entry(
            "ru", 1, at, {"action": "write", "rules": ["ru.localization.2025", "ru.notice.art22"]}
        )
    )
    assert not about(Entry("ru", 2, at, {"action": "write", "rules": ["ru.notice.art22"]}))


def test_changes_since_the_notice_and_their_due_dates(tmp_path: Path) -> None:
    from domicile.config import parse_config
    from domicile.setup import create_deployment

    from .conftest import CONFIG

    (tmp_path / "domicile.yaml").write_text(CONFIG)
    config = parse_config(CONFIG, str(tmp_path / "domicile.yaml"), tmp_path)
    create_deployment(config)
    ru = {"citizenship": "RU"}

    def on(day: dt.date) -> Domicile:
        return Domicile(
            config, clock=lambda: dt.datetime(day.year, day.month, day.day, 12, tzinfo=dt.UTC)
        )

    with on(dt.date(2024, 6, 3)) as v:
        ivan = v.put(
            "profiles",
            subject=ru,
            fields={"full_name": "Ivan", "email": "i@x.ru"},
            purpose="signup",
        ).token
        v.add_filing("ru.art22_notice", "2024-06-10")  # the notice states name and e-mail at ru
    with on(dt.date(2024, 8, 20)) as v:
        v.put(
            "profiles", subject=ru, fields={"full_name": "Olga", "city": "Kazan"}, purpose="signup"
        )
    with Domicile(config) as v:
        v.erase(ivan)  # today: the e-mail address is no longer held
    today = dt.datetime.now(dt.UTC).date()
    m = today.month
    next_15th = dt.date(today.year + (m == 12), m % 12 + 1, 15).isoformat()
    with Domicile(config, read_only=True) as v:
        reg = register(v)
        fresh = register(v, since_notice=dt.date(2024, 6, 1))
        actions = {r.seq: json.loads(r.payload)["action"] for r in v.store("ru").audit()}
    write, erase = (next(s for s, a in actions.items() if a == k) for k in ("write", "erase"))
    assert write == 1
    assert [(s["site"], s["records"], s["subjects"], s["categories"]) for s in reg["sites"]] == [
        ("ru", 1, 1, [CITY, NAME])
    ]
    assert reg["changes"] == [
        {"site": "ru", "change": "category added", "category": CITY, "on": "2024-08-20",
         "entry": "ru:3", "due": "2024-09-15"},  # ru:2 is a witness record
        {"site": "ru", "change": "category removed", "category": EMAIL, "on": today.isoformat(),
         "entry": f"ru:{erase}", "due": next_15th},
    ]  # fmt: skip
    assert {k: reg["notice"][k] for k in ("status", "due", "overdue", "compared_with")} == {
        "status": "change notice due", "due": "2024-09-15", "overdue": True,
        "compared_with": "2024-06-10",
    }  # fmt: skip
    assert fresh["changes"] == [
        {"site": "ru", "change": "database added", "category": None, "on": "2024-06-03",
         "entry": "ru:1", "due": "2024-07-15"},
    ]  # fmt: skip
    assert fresh["notice"]["compared_from"] == "--since-notice"


def test_a_database_that_moved_since_the_notice_is_a_change_to_notify(tmp_path: Path) -> None:
    """The notice's filing keeps where each site was; a site holding the data that has
    another provider or address now is listed as moved, its notice due by the 15th of the
    next month (the move's own day is not recorded: it is dated the day it is seen)."""
    from domicile.config import parse_config
    from domicile.setup import create_deployment

    from .conftest import CONFIG

    config = parse_config(CONFIG, str(tmp_path / "domicile.yaml"), tmp_path)
    create_deployment(config)
    with Domicile(config) as v:
        v.put("profiles", subject={"citizenship": "RU"}, fields={"full_name": "Ivan"},
              purpose="signup")  # fmt: skip
        v.add_filing("ru.art22_notice", dt.date.today().isoformat())
    with Domicile(config, read_only=True) as v:
        assert register(v)["changes"] == []
    moved = CONFIG.replace("Tsvetochnaya 21", "Butlerova 7").replace("Equinix", "Vultr")
    assert moved != CONFIG
    config = parse_config(moved, str(tmp_path / "domicile.yaml"), tmp_path)
    today = dt.datetime.now(dt.UTC).date()
    m = today.month
    next_15th = dt.date(today.year + (m == 12), m % 12 + 1, 15).isoformat()
    with Domicile(config, read_only=True) as v:
        reg = register(v)
    assert [(c["site"], c["change"].split(" (")[0], c["on"], c["due"]) for c in reg["changes"]] == [
        ("ru", "database moved", today.isoformat(), next_15th)
    ]  # us moved too, but holds no Russian citizen's data
    assert reg["notice"]["status"] == "change notice due"


def test_a_blank_site_address_is_refused_with_its_line(tmp_path: Path) -> None:
    from .conftest import CONFIG

    (tmp_path / "domicile.yaml").write_text(
        CONFIG.replace('address: "Tsvetochnaya 21"', 'address: "  "')
    )
    code, out, err = run("report", "register", "--config", str(tmp_path))
    assert code == 2, (out, err)
    assert (
        "domicile.yaml:7: sites[0].location.address: String should have at least 1 character" in err
    )


def test_scan_findings_join_the_compliance_report_as_counts(known: Known, tmp_path: Path) -> None:
    """A scan of a database outside domicile (its JSON report) joins the report of the law
    it found against, counted, without the scan's row or subject references."""
    scan = {
        "source": "postgresql crm.internal/crm", "located_in": "US", "date": "2026-12-01",
        "findings": [
            {"rule": "ru.localization.2025", "pack": "ru", "jurisdiction": "RU",
             "title": "Art. 18(5)", "outcome": "deny", "severity": "high", "subjects": 12,
             "rows": 72, "uncertain_subjects": 2, "subject_refs": ["customers:SECRET-KEY-1"],
             "row_refs": {"customers": ["SECRET-KEY-1"]}},
            {"rule": "cn.localization", "pack": "cn", "jurisdiction": "CN", "title": "x",
             "outcome": "deny", "severity": "high", "subjects": 3, "rows": 3},
        ],
    }  # fmt: skip
    path = tmp_path / "scan.json"
    path.write_text(json.dumps(scan))
    since, until = (known.today - dt.timedelta(days=3)).isoformat(), known.today.isoformat()
    args = ["report", "compliance", "--jurisdiction", "RU", "--since", since, "--until", until,
            "--config", str(known.folder), "--findings", str(path)]  # fmt: skip
    code, out, err = run(*args, "--json")
    assert code == 0, out + err
    disc = json.loads(out)["discovery"]
    assert disc["findings"] == 1  # the Chinese finding belongs to another report
    [found] = disc["scans"][0]["findings"]
    assert (found["rule"], found["subjects"], found["rows"]) == ("ru.localization.2025", 12, 72)
    code, html, _ = run(*args, "--format", "html")
    assert code == 0
    assert "ru.localization.2025" in html
    assert "SECRET-KEY-1" not in out + html
    path.write_text("[]")
    code, _, err = run(*args)
    assert code == 2
    assert "not a scan report" in err
