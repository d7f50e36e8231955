"""The console end to end, in Debian's Chromium: sign in by keyboard, every page with the
deployment's known contents, a filing added and withdrawn, a subject looked up by identity
and erased, a subject's request opened, extended, fulfilled and closed, a scope-limited client, CSRF refusals, the cookie's flags, and /docs offline.

Screenshots of the main pages go to the test's folder, and to ``DOMICILE_CONSOLE_SHOTS``
when it names one (``docs/console`` for the README's pictures)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from domicile.attest.service import commit
from domicile.rights import list_requests, show
from domicile.vault.errors import SubjectBlocked
from tests.console.conftest import Console

SHOTS = os.environ.get("DOMICILE_CONSOLE_SHOTS")


def shoot(page: Any, tmp_path: Path, name: str) -> None:
    for folder in [tmp_path, *([Path(SHOTS)] if SHOTS else [])]:
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(folder / f"{name}.png"), full_page=True)
        assert (folder / f"{name}.png").stat().st_size > 5000


def sign_in(page: Any, console: Console, who: tuple[str, str]) -> None:
    """By keyboard: the id field has focus; Tab to the secret; Enter submits."""
    from playwright.sync_api import expect

    page.goto(console.url + "/console")
    assert page.url.endswith("/console/signin")
    # The id field has focus once the page has settled (autofocus): typing before that,
    # on a loaded machine, typed into nothing and the sign-in was refused.
    expect(page.locator("#client_id")).to_be_focused()
    page.keyboard.type(who[0])
    page.keyboard.press("Tab")
    page.keyboard.type(who[1])
    expect(page.locator("#client_id")).to_have_value(who[0])
    page.keyboard.press("Enter")
    page.wait_for_url("**/console/map")


def go(page: Any, name: str) -> None:
    """Follow a link of the menu, and wait until its page is the one shown (a click only
    starts the navigation: on a loaded machine, reading at once read the page before)."""
    from playwright.sync_api import expect

    link = page.get_by_role("navigation").get_by_role("link", name=name)
    link.click()
    expect(page.get_by_role("navigation").get_by_role("link", name=name)).to_have_attribute(
        "aria-current", "page"
    )
    page.wait_for_load_state()


@pytest.fixture
def officer(console: Console, browser: Any) -> Iterator[Any]:
    """A signed-in admin's page; any request for something not served here fails it."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    outside: list[str] = []

    def only_here(route: Any) -> None:
        if route.request.url.startswith(console.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_here)
    page = context.new_page()
    sign_in(page, console, console.officer)
    yield page
    context.close()
    assert outside == [], "every asset is served by domicile"


def test_sign_in_sets_a_strict_http_only_cookie_and_sign_out_ends_it(
    console: Console, officer: Any
) -> None:
    cookies = {c["name"]: c for c in officer.context.cookies()}
    session = cookies["domicile_console"]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Strict"
    assert session["secure"] is False  # served over plain http here; Secure over https
    assert session["path"] == "/console"
    assert officer.evaluate("document.cookie") == ""  # scripts cannot read it
    officer.get_by_role("button", name="Sign out").click()
    officer.wait_for_url("**/console/signin")
    officer.goto(console.url + "/console/audit")
    assert officer.url.endswith("/console/signin")


def test_a_wrong_secret_is_refused(console: Console, browser: Any) -> None:
    page = browser.new_page()
    page.goto(console.url + "/console/signin")
    page.get_by_label("Client id").fill(console.officer[0])
    page.get_by_label("Client secret").fill("not-the-secret")
    page.get_by_role("button", name="Sign in").click()
    assert "wrong" in page.get_by_role("alert").inner_text()
    assert not [c for c in page.context.cookies() if c["name"] == "domicile_console"]
    page.close()


def test_every_page_renders_with_the_deployments_data(
    console: Console, officer: Any, tmp_path: Path
) -> None:
    page = officer
    # The keyboard's first stop is the skip link, and it shows where focus is.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    # Data map: three sites, their records, the flows of the ledger.
    rows = page.locator("table").first.locator("tbody tr")
    assert rows.count() == 3
    text = page.locator("main").inner_text()
    for cc in ("RU", "DE", "US"):
        assert cc in text
    assert page.locator("svg path.flow").count() >= 1
    shoot(page, tmp_path, "map")
    # Transfers: the ledger, filtered, and one entry opened to its rules.
    go(page, "Transfers")
    assert "transfer(s)" in page.locator("main").inner_text()
    page.get_by_label("Destination").select_option("US")
    page.wait_for_url("**to=US**")
    assert set(page.locator("tbody tr td:nth-child(4)").all_inner_texts()) == {"US"}
    shoot(page, tmp_path, "transfers")
    page.locator("tbody tr a").first.click()
    page.wait_for_url("**/console/transfers/*/*")
    assert page.locator("section.rule").count() >= 1
    assert "ru.art12_notice" in page.locator("main").inner_text()
    shoot(page, tmp_path, "transfer")
    # Audit: every site verified against its signed heads.
    go(page, "Audit")
    statuses = page.locator("tbody").first.locator("tr td:nth-child(2)").all_inner_texts()
    assert len(statuses) == 3
    assert "tampered" not in statuses
    assert page.locator("code.hash").count() >= 3
    shoot(page, tmp_path, "audit")
    # Policy explorer: a question and its decision, rules and citations.
    go(page, "Policy explorer")
    page.get_by_label("Subject's citizenship").fill("RU")
    page.get_by_label("Where the data is").fill("RU")
    page.get_by_label("Where it goes").fill("US")
    page.get_by_label("user.name").check()
    page.get_by_role("button", name="Ask").click()
    heading = page.get_by_role("heading", name="Decision:")
    assert heading.inner_text().split(":")[1].strip() in ("allow", "deny", "escalate")
    assert page.locator("ul.cites li").count() >= 1
    shoot(page, tmp_path, "policy")
    # Subject requests: the one on record, with its legal deadline.
    go(page, "Subject requests")
    row = page.locator("tbody tr").first.inner_text()
    assert "access" in row
    assert "ru.access_2022" in row
    # Reports and evidence: the register, a compliance report and a pack, downloaded.
    go(page, "Reports and evidence")
    with page.expect_download() as got:
        page.get_by_role("button", name="Download the register").click()
    assert got.value.suggested_filename == "register-ru.html"
    page.get_by_label("Format").last.select_option("json")
    with page.expect_download() as got:
        page.get_by_role("button", name="Download the report").click()
    assert got.value.suggested_filename.startswith("compliance-ru-")
    assert got.value.suggested_filename.endswith(".json")
    shoot(page, tmp_path, "evidence")
    # An evidence pack is made while the browser waits (reports, segments, proofs): on a
    # loaded machine that takes longer than a click's usual 30 s.
    with page.expect_download(timeout=180_000) as got:
        page.get_by_role("button", name="Generate and download").click(timeout=180_000)
    pack = got.value
    assert pack.suggested_filename.startswith("evidence-")
    saved = tmp_path / "pack.zip"
    pack.save_as(saved)
    assert saved.read_bytes()[:2] == b"PK"


def test_a_filing_is_added_and_withdrawn(console: Console, officer: Any, tmp_path: Path) -> None:
    page = officer
    go(page, "Obligations and filings")
    assert "ru.art12_notice" in page.locator("main").inner_text()
    page.get_by_label("Filing", exact=True).fill("eu.scc.US")
    page.get_by_label("Date it took effect").fill("2026-01-15")
    page.get_by_role("button", name="Add filing").click()
    assert "put eu.scc.US on record from 2026-01-15" in page.get_by_role("status").inner_text()
    assert "eu.scc.US" in console.vault.filings.current()
    shoot(page, tmp_path, "filings")
    page.get_by_role("button", name="Withdraw eu.scc.US").click()
    assert "withdrew eu.scc.US" in page.get_by_role("status").inner_text()
    assert "eu.scc.US" not in console.vault.filings.current()
    # A name no pack knows: a clear refusal on the page, nothing recorded.
    page.get_by_label("Filing", exact=True).fill("no.such_filing")
    page.get_by_role("button", name="Add filing").click()
    assert page.get_by_role("alert").inner_text()
    assert "no.such_filing" not in console.vault.filings.current()


def test_a_subject_is_looked_up_by_identity_and_erased(
    console: Console, officer: Any, tmp_path: Path
) -> None:
    page = officer
    go(page, "Subject lookup")
    page.get_by_label("Field").select_option("email")
    page.get_by_label("Value").fill("person.de@example.org")
    page.get_by_role("button", name="Find").click()
    main = page.locator("main").inner_text()
    assert "Where the subject's data lives" in main
    assert "person.de@example.org" in main  # read as this client may: an admin in the US
    assert page.locator("section table tbody tr").count() == 1
    shoot(page, tmp_path, "subject")
    with page.expect_download() as got:
        page.get_by_role("button", name="Export (JSON)").click()
    assert got.value.suggested_filename == "subject-export.json"
    # Its attestation: refused (a page that says what to run) until the sites commit.
    with page.expect_navigation():
        page.get_by_role("button", name="Attestation (JSON)").click()
    assert "no witnessed commitment" in page.get_by_role("alert").inner_text()
    assert "domicile attest commit" in page.locator("main").inner_text()
    page.go_back()
    commit(console.vault)
    with page.expect_download() as got:
        page.get_by_role("button", name="Attestation (JSON)").click()
    proof = json.loads(Path(got.value.path()).read_text())
    home = console.vault.tokens.read(console.tokens["DE"])[0]
    assert proof["home"] == home
    assert {s: v["holds"] for s, v in proof["sites"].items()} == {
        s: "primary" if s == home else "nothing" for s in ("de", "ru", "us")
    }
    page.get_by_role("button", name="Erase…").click()
    assert page.get_by_role("heading", name="Erase this subject?").is_visible()
    page.get_by_role("button", name="Yes, erase the subject").click()
    assert "the subject's key is destroyed" in page.get_by_role("status").inner_text()
    # The record is gone for every reader.
    assert "example.org" not in page.url  # the identity never stood in an address
    page.goto(console.url + "/console/subjects?token=" + console.tokens["DE"])
    assert page.get_by_role("alert").is_visible()


def test_a_subject_request_is_opened_extended_fulfilled_and_closed(
    console: Console, officer: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page = officer
    go(page, "Subject requests")
    page.get_by_label("Kind").select_option("access")
    page.get_by_label("Identifying field").select_option("email")
    page.get_by_label("Its value").fill("person.ru@example.org")
    page.get_by_label("How the identity was checked").select_option("account_login")
    page.get_by_label("Checked by").fill("dpo.kim")
    page.get_by_role("button", name="Open request").click()
    status = page.get_by_role("status").inner_text()
    assert "found at ru" in status
    request_id = status.split()[1]
    main = page.locator("main").inner_text()
    assert "The law that sets the deadline" in main
    assert "ru.access_2022" in main
    assert "person.ru@example.org" not in page.content()  # the value is not kept or shown
    shoot(page, tmp_path, "request")
    page.get_by_label("Reason given to the subject").fill("the records are being gathered")
    page.get_by_role("button", name="Extend").click()
    expect(page.get_by_role("status")).to_contain_text("extended: now due")
    assert page.get_by_role("button", name="Extend").count() == 0  # once only
    with page.expect_download() as got:
        page.get_by_role("button", name="Fulfil access").click()
    assert got.value.suggested_filename == f"{request_id}.json"
    body = json.loads(Path(got.value.path()).read_text())
    assert body["request"] == request_id
    assert body["result"]  # the subject's records, as this client may read them
    page.goto(f"{console.url}/console/requests/{request_id}")
    page.get_by_label("Outcome").select_option("fulfilled")
    page.get_by_role("button", name="Close request").click()
    expect(page.get_by_role("status")).to_contain_text("closed: fulfilled")
    assert page.get_by_role("button", name="Close request").count() == 0
    steps = [h["step"] for h in show(console.vault.config, request_id)["history"]]
    assert (steps[0], steps[-1]) == ("open", "close")
    assert "extend" in steps
    # A value that identifies nobody: the request is still opened (it is answered "no
    # data"), and the page says that nothing was found.
    go(page, "Subject requests")
    page.get_by_label("Its value").fill("nobody@example.org")
    page.get_by_label("Checked by").fill("dpo.kim")
    page.get_by_role("button", name="Open request").click()
    expect(page.get_by_role("status")).to_contain_text("no data found")
    # A malformed name of the checker: refused on the form's page, nothing opened.
    before = list_requests(console.vault.config)
    go(page, "Subject requests")
    page.get_by_label("Its value").fill("person.us@example.org")
    page.get_by_label("Checked by").fill("not a valid name!")
    page.get_by_role("button", name="Open request").click()
    expect(page.get_by_role("alert")).to_be_visible()
    assert list_requests(console.vault.config) == before


def test_a_restriction_blocks_reads_until_it_is_lifted_in_the_console(
    console: Console, officer: Any
) -> None:
    from playwright.sync_api import expect

    page, token = officer, console.tokens["US"]
    go(page, "Subject requests")
    page.get_by_label("Kind").select_option("restriction")
    page.get_by_label("Identifying field").select_option("email")
    page.get_by_label("Its value").fill("person.us@example.org")
    page.get_by_label("Checked by").fill("dpo.kim")
    page.get_by_role("button", name="Open request").click()
    expect(page.get_by_role("status")).to_contain_text("found at us")
    page.get_by_role("button", name="Fulfil restriction").click()
    expect(page.get_by_role("heading", name="Processing block")).to_be_visible()
    with pytest.raises(SubjectBlocked):
        console.vault.get(token, purpose="support", as_site="us")
    page.get_by_label("Why the block ends").fill("the accuracy check is done")
    page.get_by_role("button", name="Lift the block").click()
    expect(page.get_by_role("status")).to_contain_text("block lifted at us")
    assert console.vault.get(token, purpose="support", as_site="us").fields


def test_a_scope_limited_client_sees_only_what_it_may(console: Console, browser: Any) -> None:
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, console, console.viewer)
    nav = page.get_by_role("navigation", name="Pages").locator("a").all_inner_texts()
    assert nav == ["Data map", "Obligations and filings", "API"]
    assert "may not read the transfer ledger" in page.locator("main").inner_text()
    for path in ("transfers", "audit", "policy", "subjects?token=x", "evidence"):
        response = page.goto(f"{console.url}/console/{path}")
        assert response is not None
        assert response.status == 403, path
        assert "lacks the scope" in page.get_by_role("alert").inner_text()
    page.goto(console.url + "/console/filings")
    assert page.get_by_role("button", name="Add filing").count() == 0
    # Posting anyway, with a valid CSRF token, is refused by the same check as the API's.
    token = page.evaluate("document.querySelector('input[name=csrf]').value")
    r = page.request.post(
        console.url + "/console/filings",
        form={"csrf": token, "action": "add", "name": "eu.scc.US", "date": "2026-01-01"},
    )
    assert r.status == 403
    assert "eu.scc.US" not in console.vault.filings.current()
    before = list_requests(console.vault.config)
    r = page.request.post(
        console.url + "/console/requests",
        form={"csrf": token, "kind": "erasure", "field": "email",
              "value": "person.us@example.org", "checked_by": "x", "verified_how": "other"},
    )  # fmt: skip
    assert r.status == 403
    assert list_requests(console.vault.config) == before
    context.close()


def test_changes_without_the_csrf_token_are_refused(console: Console, officer: Any) -> None:
    before = dict(console.vault.filings.current())
    for form in (
        {"action": "add", "name": "eu.scc.US", "date": "2026-01-01"},
        {"action": "add", "name": "eu.scc.US", "date": "2026-01-01", "csrf": "forged"},
    ):
        r = officer.request.post(console.url + "/console/filings", form=form)
        assert r.status == 403
        assert "security token" in r.text()
    r = officer.request.post(
        console.url + "/console/subjects/erase",
        form={"token": console.tokens["RU"], "confirm": "yes"},
    )
    assert r.status == 403
    assert console.vault.filings.current() == before
    assert console.vault.get(console.tokens["RU"], purpose="support", as_site="ru")


def test_docs_work_offline(console: Console, browser: Any) -> None:
    page = browser.new_page()
    outside: list[str] = []

    def only_here(route: Any) -> None:
        if route.request.url.startswith(console.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_here)
    blocked: list[str] = []  # what the pages' Content-Security-Policy stopped
    page.on(
        "console",
        lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None,
    )
    response = page.goto(console.url + "/docs")
    assert response is not None
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    page.locator(".swagger-ui .info .title").wait_for()
    assert "domicile" in page.locator(".swagger-ui .info .title").inner_text()
    assert page.locator(".opblock").count() > 10
    response = page.goto(console.url + "/redoc")
    assert response is not None
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    page.get_by_role("heading", name="domicile").first.wait_for()
    assert outside == []
    # Only ReDoc's "powered by" logo from its CDN is stopped (by the policy, as it should be).
    assert [m for m in blocked if "https://cdn.redoc.ly/" not in m] == []
    page.close()
