"""The console's routes, under ``/console`` (left out of the OpenAPI document).

Every page asks the vault's one check (``Domicile.authorize``, through ``http.deps``) for
the scope it shows, exactly as the API route showing the same thing does; the navigation
lists only the pages a client's scopes allow. Every change is a POST carrying the
session's CSRF token, checked before anything else.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import FormData

from domicile.access import Access
from domicile.clients import Client
from domicile.console import views
from domicile.console.session import COOKIE, PRE_COOKIE, PRE_TTL, SESSION_TTL, Session, Sessions
from domicile.countries import country
from domicile.errors import BadInput, DomicileError, NotFound
from domicile.http.deps import Service, client_access
from domicile.http.gate import refuse_credentials, source_address
from domicile.http.observe import log_event
from domicile.http.problems import status_of
from domicile.http.security import Forbidden, Principal
from domicile.packs.model import Operation
from domicile.policy import parse_date
from domicile.vault.service import Domicile

T = TypeVar("T")
HERE = Path(__file__).parent
STATIC = {
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
}
LOOKUP_PURPOSE = "subject_access"
# A subject's page is an export of the subject's data (``export_subject``), for the
# lookup's purpose; reports and evidence packs hold the audit's and the ledger's contents.
SUBJECT_SCOPES = ("records:read", "records:export")
EVIDENCE_SCOPES = ("audit:read", "transfers:read")
# The pages, in the navigation's order: (path, title, the scopes that show it, the purpose
# they are used for). The page itself asks the vault's check for exactly these.
PAGES: tuple[tuple[str, str, tuple[str, ...], str | None], ...] = (
    ("map", "Data map", ("sites:read",), None),
    ("transfers", "Transfers", ("transfers:read",), None),
    ("filings", "Obligations and filings", ("filings:read",), None),
    ("audit", "Audit", ("audit:read",), None),
    ("policy", "Policy explorer", ("policy:read",), None),
    ("subjects", "Subject lookup", SUBJECT_SCOPES, LOOKUP_PURPOSE),
    ("requests", "Subject requests", ("rights:read",), None),
    ("evidence", "Reports and evidence", EVIDENCE_SCOPES, None),
)

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(("html",), default=True),
    auto_reload=False,
)
router = APIRouter(prefix="/console", include_in_schema=False)


# --- sessions and checks -------------------------------------------------------------------


class _Console:
    """What the routes share, kept in the application's state."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc
        self.sessions = Sessions(svc.vault.keys.token_key(), svc.vault.config.model.environment_id)
        self.ledger = views.LedgerIndex(svc.vault)
        self._warm_lock = threading.Lock()
        self._warmed = False

    def warm(self) -> None:
        """Read the logs, verify them and ask the engine its first questions in the
        background, once, after the first successful sign-in (not for anyone who merely
        opens the sign-in form), so that the first page comes quicker. On the service's
        executor, which a stopping service waits for before it closes the stores (a
        thread of its own could still be reading them: a crash at exit)."""
        with self._warm_lock:
            if self._warmed:
                return
            self._warmed = True
        self.svc.executor.submit(self._warm)

    def _warm(self) -> None:
        with contextlib.suppress(DomicileError):
            self.ledger.verified()
            views.obligations(self.svc.vault, dt.datetime.now(dt.UTC).date())


_MADE = threading.Lock()  # one console per application, even when first asked twice at once


def _console(request: Request) -> _Console:
    found: _Console | None = getattr(request.app.state, "console", None)
    if found is None:
        with _MADE:
            found = getattr(request.app.state, "console", None)
            if found is None:
                found = request.app.state.console = _Console(request.app.state.service)
    return found


class _Who:
    """The signed-in client, as the vault sees it."""

    def __init__(self, client: Client, session: Session, svc: Service) -> None:
        self.client = client
        self.session = session
        # The caller exactly as the API sees this client (acting from its only site, else
        # the service's local site).
        self.access: Access = client_access(svc, Principal(client, "console"))

    def may(self, scope: str) -> bool:
        return self.access.missing(scope) is None

    def may_see(self, scopes: tuple[str, ...], purpose: str | None) -> bool:
        """Whether a page needing ``scopes`` (for ``purpose``) is for this client."""
        return all(self.access.missing(s, purpose=purpose) is None for s in scopes)


def _who(request: Request) -> _Who | None:
    con = _console(request)
    session = con.sessions.read(request.cookies.get(COOKIE))
    if session is None:
        return None
    # Signed out since, or the client's secret changed, or the client was removed.
    if not con.sessions.current(session, con.svc.clients.session_stamp(session.client_id)):
        return None
    client = con.svc.clients.get(session.client_id)
    if client is None:
        return None
    return _Who(client, session, con.svc)


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def render(
    request: Request, name: str, who: _Who | None, code: int = 200, **context: Any
) -> HTMLResponse:
    con = _console(request)
    nav = [(p, t) for p, t, scopes, why in PAGES if who is not None and who.may_see(scopes, why)]
    html = templates.get_template(name).render(
        who=who,
        nav=nav,
        page=context.pop("page", ""),
        csrf=con.sessions.csrf(who.session.sid) if who else "",
        **context,
    )
    return HTMLResponse(html, status_code=code, headers=_NO_STORE)


_NO_STORE = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def _to_signin(request: Request) -> RedirectResponse:
    return RedirectResponse("/console/signin", status_code=303)


async def _run(request: Request, work: Callable[[], T]) -> T:
    return await _console(request).svc.run(work)


def _failed(request: Request, who: _Who, exc: DomicileError, page: str) -> HTMLResponse:
    status = status_of(exc)
    if status == 500:
        log_event("internal error", logging.ERROR, route=f"/console/{page}", code=exc.code)
        message: str = "something went wrong"
        hint: str | None = "see the service log"
    else:
        message, hint = exc.message, exc.hint
    return render(
        request, "error.html", who, status, page=page, status=status, message=message, hint=hint
    )


async def _guarded(
    request: Request,
    page: str,
    scopes: tuple[str, ...],
    build: Callable[[_Who], Response],
    purpose: str | None = None,
) -> Response:
    """A page: signed in, its scopes (for its purpose) checked by the vault's one check
    (refusals audited), then built on the service's executor; a typed error becomes an
    error page."""
    who = _who(request)
    if who is None:
        return _to_signin(request)
    vault = _console(request).svc.vault

    def work() -> Response:
        for scope in scopes:
            vault.authorize(who.access, scope, purpose=purpose)
        return build(who)

    try:
        return await _run(request, work)
    except DomicileError as exc:
        return _failed(request, who, exc, page)


async def _form(request: Request, who: _Who) -> FormData | None:
    """The posted form, or None when its CSRF token is missing or wrong."""
    form = await request.form()
    token = form.get("csrf")
    ok = _console(request).sessions.csrf_ok(
        who.session.sid, token if isinstance(token, str) else None
    )
    return form if ok else None


async def _posted(request: Request) -> tuple[_Who, FormData] | Response:
    """Every change's one gate: a signed-in client and the form's CSRF token, or the
    answer that refuses the request."""
    who = _who(request)
    if who is None:
        return _to_signin(request)
    form = await _form(request, who)
    if form is None:
        return _csrf_refused(request, who)
    return who, form


def _csrf_refused(request: Request, who: _Who | None) -> HTMLResponse:
    return render(
        request, "error.html", who, 403, status=403,
        message="the form's security token is missing or out of date",
        hint="reload the page and submit the form again",
    )  # fmt: skip


def _text(form: FormData | Any, name: str) -> str:
    value = form.get(name) if form is not None else None
    return value.strip() if isinstance(value, str) else ""


def _day(value: str, what: str) -> dt.date | None:
    return parse_date(value, what) if value else None


# --- sign in and out -----------------------------------------------------------------------


@router.get("")
async def home(request: Request) -> Response:
    who = _who(request)
    if who is None:
        return _to_signin(request)
    for path, _, scopes, why in PAGES:
        if who.may_see(scopes, why):
            return RedirectResponse(f"/console/{path}", status_code=303)
    return render(request, "home.html", who, page="")


@router.get("/signin")
async def signin_form(request: Request) -> Response:
    return _signin_page(request)


def _signin_page(request: Request, status: int = 200, message: str | None = None) -> Response:
    sessions = _console(request).sessions
    pre = sessions.pre_session()
    sid = sessions.read_pre(pre) or ""
    response = render(
        request, "signin.html", None, status, page="signin",
        signin_csrf=sessions.csrf("pre:" + sid), message=message,
    )  # fmt: skip
    response.set_cookie(
        PRE_COOKIE, pre, max_age=PRE_TTL, path="/console", httponly=True,
        samesite="strict", secure=_secure(request),
    )  # fmt: skip
    return response


@router.post("/signin")
async def signin(request: Request) -> Response:
    con = _console(request)
    svc = con.svc
    form = await request.form()
    sid = con.sessions.read_pre(request.cookies.get(PRE_COOKIE))
    token = _text(form, "csrf")
    if sid is None or not con.sessions.csrf_ok("pre:" + sid, token):
        return _signin_page(request, 403, "the sign-in form expired; please sign in again")
    client_id, secret = _text(form, "client_id"), _text(form, "client_secret")
    known = svc.clients.get(client_id) if client_id else None
    limited_id = known.id if known else None
    client = None
    if svc.throttle.wait(source_address(request.scope), limited_id) is None and known and secret:
        client = await anyio.to_thread.run_sync(svc.clients.by_secret, known.id, secret)
    if client is None:
        # The API's own path for a failed sign-in: counted against the source and client,
        # audited, and limited (429) once over the deployment's limits.
        refusal = await refuse_credentials(svc, request.scope, "invalid credentials", limited_id)
        if refusal.status_code == 429:
            return _signin_page(request, 429, "too many failed sign-ins; wait a minute and retry")
        return _signin_page(request, 401, "the client id or secret is wrong")
    request.state.client = client.id
    con.warm()
    stamp = svc.clients.session_stamp(client.id) or ""
    response = RedirectResponse("/console", status_code=303)
    response.set_cookie(
        COOKIE, con.sessions.issue(client.id, stamp), max_age=SESSION_TTL, path="/console",
        httponly=True, samesite="strict", secure=_secure(request),
    )  # fmt: skip
    response.delete_cookie(PRE_COOKIE, path="/console")
    return response


@router.post("/signout")
async def signout(request: Request) -> Response:
    """Ends every session of the client (``ClientRegistry.end_sessions``), not only this
    browser's cookie, so a copy of the cookie is of no use afterwards."""
    who = _who(request)
    if who is not None:
        if await _form(request, who) is None:
            return _csrf_refused(request, who)
        clients = _console(request).svc.clients
        try:
            await anyio.to_thread.run_sync(clients.end_sessions, who.client.id)
        except DomicileError as exc:
            return _failed(request, who, exc, "")
    response = RedirectResponse("/console/signin", status_code=303)
    response.delete_cookie(COOKIE, path="/console", httponly=True, samesite="strict")
    return response


@router.get("/static/{name}")
async def static(name: str) -> Response:
    kind = STATIC.get(name)
    if kind is None:
        return Response("not found", status_code=404, media_type="text/plain")
    return Response(
        (HERE / "static" / name).read_bytes(),
        media_type=kind,
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


# --- pages ---------------------------------------------------------------------------------


@router.get("/map")
async def data_map(request: Request) -> Response:
    con = _console(request)

    def build(who: _Who) -> Response:
        data = views.data_map(con.svc.vault, con.ledger, who.may("transfers:read"))
        return render(
            request, "map.html", who, page="map", **data,
            diagram=views.diagram(data["sites"], data["flows"]),
        )  # fmt: skip

    return await _guarded(request, "map", ("sites:read",), build)


SHOWN = 200  # ledger entries on one page, newest first


@router.get("/transfers")
async def transfers(request: Request) -> Response:
    con = _console(request)
    q = request.query_params

    def build(who: _Who) -> Response:
        to = q.get("to", "").strip().upper()
        kind = q.get("kind", "").strip()
        dest = country(to, what="destination") if to else None
        since, until = _day(q.get("since", ""), "since"), _day(q.get("until", ""), "until")
        if since and until and since > until:
            raise BadInput("the period starts after it ends", hint="since is the first day")
        entries, unavailable = con.ledger.entries()
        found = views.filter_transfers(
            entries, to=dest, since=since, until=until, kind=kind or None
        )
        by_dest: dict[str, int] = {}
        for e in found:
            by_dest[e["to_country"]] = by_dest.get(e["to_country"], 0) + 1
        return render(
            request, "transfers.html", who, page="transfers",
            entries=found[::-1][:SHOWN], total=len(found), by_dest=sorted(by_dest.items()),
            filters={"to": to, "kind": kind, "since": q.get("since", ""), "until": q.get("until", "")},
            destinations=sorted({e["to_country"] for e in entries}), unavailable=unavailable,
            shown=SHOWN,
        )  # fmt: skip

    return await _guarded(request, "transfers", ("transfers:read",), build)


@router.get("/transfers/{site}/{seq}")
async def transfer(request: Request, site: str, seq: int) -> Response:
    con = _console(request)

    def build(who: _Who) -> Response:
        entries, _ = con.ledger.entries()
        entry = next((e for e in entries if e["site"] == site and e["seq"] == seq), None)
        if entry is None:
            raise NotFound("no transfer entry there", hint="open an entry from the ledger")
        rules = views.rule_details(con.svc.vault, entry["rules"])
        return render(request, "transfer.html", who, page="transfers", e=entry, rules=rules)

    return await _guarded(request, "transfers", ("transfers:read",), build)


@router.get("/filings")
async def filings(request: Request) -> Response:
    return await _filings_page(request)


async def _filings_page(
    request: Request, status: int = 200, done: str | None = None, problem: str | None = None
) -> Response:
    con = _console(request)
    vault = con.svc.vault

    def build(who: _Who) -> Response:
        today = dt.datetime.now(dt.UTC).date()
        names = vault.engine.packs.filing_names()
        countries = sorted({s.country for s in vault.config.sites})
        choices = sorted(
            {n.replace("{country}", c) for n in names for c in countries}
            if any("{country}" in n for n in names)
            else set(names)
        )
        return render(
            request, "filings.html", who, status, page="filings",
            entries=[e.to_dict() for e in vault.filings.entries()],
            obligations=views.obligations(vault, today), today=today.isoformat(),
            choices=choices, can_write=who.may("filings:write"), done=done, problem=problem,
        )  # fmt: skip

    return await _guarded(request, "filings", ("filings:read",), build)


@router.post("/filings")
async def filings_change(request: Request) -> Response:
    posted = await _posted(request)
    if isinstance(posted, Response):
        return posted
    who, form = posted
    vault = _console(request).svc.vault
    action = _text(form, "action")
    name = _text(form, "name")

    def work() -> str:
        if action == "withdraw":
            vault.withdraw_filing(name, access=who.access)
            return f"withdrew {name}"
        if action != "add":
            raise BadInput("unknown action", hint="add or withdraw a filing")
        note = _text(form, "note") or None
        entry = vault.add_filing(name, _text(form, "date"), note=note, access=who.access)
        return f"put {entry.name} on record from {entry.date.isoformat()}"

    try:
        done = await _run(request, work)
    except Forbidden as exc:
        return _failed(request, who, exc, "filings")
    except DomicileError as exc:
        return await _filings_page(
            request,
            status_of(exc),
            problem=f"{exc.message} ({exc.hint})" if exc.hint else exc.message,
        )
    return await _filings_page(request, done=done)


@router.get("/audit")
async def audit(request: Request) -> Response:
    con = _console(request)

    def build(who: _Who) -> Response:
        reports = con.ledger.verified()
        heads = con.svc.vault.audit_heads().to_dict()
        return render(request, "audit.html", who, page="audit", reports=reports, heads=heads)

    return await _guarded(request, "audit", ("audit:read",), build)


OPERATIONS = [o.value for o in Operation]


@router.get("/policy")
async def policy(request: Request) -> Response:
    con = _console(request)
    q = request.query_params
    engine = con.svc.vault.engine

    def build(who: _Who) -> Response:
        vault = con.svc.vault
        asked = {k: q.get(k, "").strip() for k in ("citizenship", "residence", "operation",
                 "site_country", "to_country", "date", "categories", "filings")}  # fmt: skip
        categories = sorted(
            {f.category for c in vault.config.model.collections.values() for f in c.fields.values()}
        )
        decision = None
        if q.get("ask"):
            subject = {k: asked[k] for k in ("citizenship", "residence") if asked[k]}
            filings = dict(vault.filings.current())
            for item in asked["filings"].split():
                name, _, day = item.partition("=")
                filings[name] = parse_date(day, name) if day else dt.date(2000, 1, 1)
            request_ = engine.request(
                subject=subject,
                categories=q.getlist("category") or asked["categories"].split(),
                operation=asked["operation"] or "transfer",
                site_country=asked["site_country"],
                to_country=asked["to_country"] or None,
                date=asked["date"] or dt.datetime.now(dt.UTC).date(),
                filings=filings,
            )
            decision = engine.decide(request_).to_dict()
        return render(
            request, "policy.html", who, page="policy", asked=asked, decision=decision,
            operations=OPERATIONS, categories=categories, chosen=set(q.getlist("category")),
            countries=sorted({s.country for s in vault.config.sites}),
        )  # fmt: skip

    return await _guarded(request, "policy", ("policy:read",), build)


@router.get("/subjects")
async def subjects(request: Request) -> Response:
    """By token (opaque, so it may stand in the address)."""
    return await _subjects(request, request.query_params)


@router.post("/subjects")
async def subjects_found(request: Request) -> Response:
    """By identity: a POST, so that the value (an e-mail address, a phone number) stays
    out of addresses, the browser's history and every proxy's log."""
    posted = await _posted(request)
    if isinstance(posted, Response):
        return posted
    _, form = posted
    return await _subjects(request, form)


async def _subjects(request: Request, q: Any) -> Response:
    con = _console(request)
    vault = con.svc.vault

    def build(who: _Who) -> Response:
        from domicile.vault.export import export_subject

        token = _text(q, "token")
        collection, fld, value = (_text(q, k) for k in ("collection", "field", "value"))
        searchable = {
            name: [f for f, spec in c.fields.items() if spec.searchable]
            for name, c in vault.config.model.collections.items()
        }
        out: dict[str, Any] = {"token": token, "collection": collection, "field": fld,
                               "searchable": searchable, "matches": None, "subject": None}  # fmt: skip
        if not token and value:
            if collection not in searchable or fld not in searchable[collection]:
                raise BadInput("choose a searchable field", hint="the form lists them")
            found = vault.find(
                collection, where={fld: value}, purpose=LOOKUP_PURPOSE, access=who.access
            )
            out["matches"] = [r.to_dict() for r in found.records]
            out["refused"] = found.refused
            if len(found.records) == 1:
                token = found.records[0].token
        if token:
            ex = export_subject(vault, token, purpose=LOOKUP_PURPOSE, access=who.access)
            records = [r.to_dict() for r in ex.records]
            ids = {vault.tokens.read(r["token"])[1] for r in records}
            ids.add(vault.tokens.read(token)[1])
            moves = None
            if who.may("transfers:read"):
                entries, _ = con.ledger.entries()
                moves = views.filter_transfers(
                    entries, to=None, since=None, until=None, kind=None, record=ids
                )
            out["subject"] = {
                "token": token, "records": records, "refused": ex.refused,
                "withheld": ex.withheld, "transfers": moves,
                "can_export": who.may("records:export"), "can_erase": who.may("records:erase"),
                "can_attest": who.may("subjects:attest"),
            }  # fmt: skip
        return render(request, "subjects.html", who, page="subjects", **out)

    return await _guarded(request, "subjects", SUBJECT_SCOPES, build, LOOKUP_PURPOSE)


@router.get("/requests")
async def requests(request: Request) -> Response:
    """Subjects' requests on record (``domicile rights``), soonest due first, and (with
    ``rights:write``) the form that opens one."""
    return await _requests_page(request)


async def _requests_page(
    request: Request, status: int = 200, problem: str | None = None, form: Any = None
) -> Response:
    vault = _console(request).svc.vault
    wanted = request.query_params.get("status", "").strip() or None

    def build(who: _Who) -> Response:
        from domicile.rights import list_requests
        from domicile.rights.deadlines import KINDS
        from domicile.rights.service import CHANNELS, PROFILE_KEY, VERIFIED_HOW

        rows = list_requests(  # only those about the client's sites, as the API lists them
            vault.config, status=wanted, today=vault.clock().date(), access=who.access
        )
        named = {
            name
            for c in vault.config.model.collections.values()
            for name, spec in c.fields.items()
            if spec.identifies
        }
        identifying = [*sorted(named), PROFILE_KEY]  # and the InCountry API's subjects
        return render(
            request, "requests.html", who, status, page="requests", rows=rows,
            status=wanted or "", can_write=who.may("rights:write"), kinds=KINDS,
            channels=CHANNELS, verified=VERIFIED_HOW, identifying=identifying, problem=problem,
            form={k: _text(form, k) for k in ("kind", "field", "via", "verified_how",
                                              "checked_by")},
        )  # fmt: skip

    return await _guarded(request, "requests", ("rights:read",), build)


@router.post("/requests")
async def request_open(request: Request) -> Response:
    """Open a request. A POST: the identifying value stays out of addresses and logs; it
    is used to find the subject through the blind indexes and is not kept."""
    posted = await _posted(request)
    if isinstance(posted, Response):
        return posted
    who, form = posted
    vault = _console(request).svc.vault

    def work() -> dict[str, Any]:
        from domicile.rights import open_request

        field, value = _text(form, "field"), _text(form, "value")
        if not field or not value:
            raise BadInput("name the identifying field and its value", hint="fill in both")
        return open_request(
            vault, _text(form, "kind"), {field: value}, checked_by=_text(form, "checked_by"),
            verified_how=_text(form, "verified_how"), via=_text(form, "via") or "email",
            received=_text(form, "received") or None, access=who.access,
        )  # fmt: skip

    try:
        req = await _run(request, work)
    except Forbidden as exc:
        return _failed(request, who, exc, "requests")
    except DomicileError as exc:
        return await _requests_page(request, status_of(exc), _problem(exc), form)
    found = "found at " + ", ".join(h["site"] for h in req["subject"]["holdings"])
    return await _request_page(
        request, req["id"],
        done=f"opened {req['id']} ({req['kind']}; "
        f"{found if req['subject']['found'] else 'no data found'}; due {req['due'] or 'no date'})",
    )  # fmt: skip


def _problem(exc: DomicileError) -> str:
    return f"{exc.message} ({exc.hint})" if exc.hint else exc.message


@router.get("/requests/{request_id}")
async def request_detail(request: Request, request_id: str) -> Response:
    return await _request_page(request, request_id)


async def _request_page(
    request: Request,
    request_id: str,
    status: int = 200,
    done: str | None = None,
    problem: str | None = None,
) -> Response:
    vault = _console(request).svc.vault

    def build(who: _Who) -> Response:
        from domicile.rights import show
        from domicile.rights.service import OUTCOMES

        req = show(
            vault.config, request_id, today=vault.clock().date(), vault=vault, access=who.access
        )
        from domicile.rights.blocks import block_state

        block = req.get("block") or {}
        return render(
            request, "request.html", who, status, page="requests", req=req,
            can_write=who.may("rights:write") and req["status"] != "closed",
            block_text=block_state(req),
            can_lift=who.may("rights:write") and block.get("state") == "in_force",
            outcomes=OUTCOMES, done=done, problem=problem,
        )  # fmt: skip

    return await _guarded(request, "requests", ("rights:read",), build)


@router.post("/requests/{request_id}")
async def request_step(request: Request, request_id: str) -> Response:
    """A step of a request: fulfil, extend, lift its block or close, as ``domicile rights``
    does. The fulfilment of an access or portability request downloads the subject's data."""
    posted = await _posted(request)
    if isinstance(posted, Response):
        return posted
    who, form = posted
    vault = _console(request).svc.vault
    action = _text(form, "action")

    def work() -> tuple[str, bytes | None]:
        from domicile.rights import close, extend, fulfil

        if action == "extend":
            req = extend(vault, request_id, reason=_text(form, "reason"), access=who.access)
            return f"extended: now due {req['due']}", None
        if action == "close":
            req = close(
                vault, request_id, outcome=_text(form, "outcome"),
                reason=_text(form, "reason") or None, access=who.access,
            )  # fmt: skip
            closed = req["outcome"]
            return (
                f"closed: {closed['outcome']} ({'on' if closed['on_time'] else 'past'} time)",
                None,
            )
        if action == "lift":
            from domicile.rights import lift

            req = lift(vault, request_id, reason=_text(form, "reason"), access=who.access)
            return f"block lifted at {', '.join(req['history'][-1]['sites']) or 'no site'}", None
        if action != "fulfil":
            raise BadInput("unknown step", hint="fulfil, extend, lift or close")
        fields: dict[str, str] = {}
        for line in _text(form, "fields").splitlines():
            if line.strip():
                name, sep, value = line.partition("=")
                if not sep or not name.strip():
                    raise BadInput("write each corrected field as NAME=VALUE, one a line")
                fields[name.strip()] = value.strip()
        req, result = fulfil(
            vault, request_id, fields=fields, erase=_text(form, "erase") == "yes",
            access=who.access,
        )  # fmt: skip
        if req["kind"] in ("access", "portability"):
            body = {"request": req["id"], "result": result}
            return "", json.dumps(body, indent=2, ensure_ascii=False, default=str).encode()
        return f"fulfilled: {req['history'][-1]['step']} done", None

    try:
        done, data = await _run(request, work)
    except Forbidden as exc:
        return _failed(request, who, exc, "requests")
    except DomicileError as exc:
        return await _request_page(request, request_id, status_of(exc), problem=_problem(exc))
    if data is not None:
        return Response(
            data, media_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="{request_id}.json"',
                     **_NO_STORE},
        )  # fmt: skip
    return await _request_page(request, request_id, done=done)


async def _subject_download(
    request: Request, filename: str, make: Callable[[Domicile, _Who, str], Any]
) -> Response:
    """A posted form naming a subject's token, answered by a JSON download of what
    ``make`` gives (on the service's executor), or by the error page of the refusal."""
    posted = await _posted(request)
    if isinstance(posted, Response):
        return posted
    who, form = posted
    vault = _console(request).svc.vault
    token = _text(form, "token")

    def work() -> bytes:
        return json.dumps(make(vault, who, token), indent=2, ensure_ascii=False).encode()

    try:
        data = await _run(request, work)
    except DomicileError as exc:
        return _failed(request, who, exc, "subjects")
    return Response(
        data, media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', **_NO_STORE},
    )  # fmt: skip


@router.post("/subjects/export")
async def subject_export(request: Request) -> Response:
    def make(vault: Domicile, who: _Who, token: str) -> dict[str, Any]:
        from domicile.vault.export import export_subject

        ex = export_subject(vault, token, purpose=LOOKUP_PURPOSE, access=who.access)
        return {
            "records": [r.to_dict() for r in ex.records],
            "refused": ex.refused,
            "withheld": ex.withheld,
        }

    return await _subject_download(request, "subject-export.json", make)


@router.post("/subjects/attestation")
async def subject_attestation(request: Request) -> Response:
    """The subject's attestation (``POST /v1/subjects/attestation``, ``domicile attest
    subject``): where its data is held and nowhere else, against each site's signed
    commitment, downloaded to check offline with ``domicile attest verify``."""

    def make(vault: Domicile, who: _Who, token: str) -> dict[str, Any]:
        from domicile.attest.service import prove

        return prove(vault, token=token, access=who.access, audit=True)

    return await _subject_download(request, "attestation.json", make)


@router.post("/subjects/erase")
async def subject_erase(request: Request) -> Response:
    """Two steps: without ``confirm=yes`` a page that asks; with it, the erasure."""
    posted = await _posted(request)
    if isinstance(posted, Response):
        return posted
    who, form = posted
    vault = _console(request).svc.vault
    token = _text(form, "token")
    if _text(form, "confirm") != "yes":

        def check() -> Response:
            vault.authorize(who.access, "records:erase")
            site, _ = vault.tokens.read(token)
            return render(request, "erase.html", who, page="subjects", token=token, site=site)

        try:
            return await _run(request, check)
        except DomicileError as exc:
            return _failed(request, who, exc, "subjects")
    try:
        out = await _run(request, lambda: vault.erase(token, purpose="erasure", access=who.access))
    except DomicileError as exc:
        return _failed(request, who, exc, "subjects")
    return render(request, "erased.html", who, page="subjects", out=out)


@router.get("/evidence")
async def evidence(request: Request) -> Response:
    vault = _console(request).svc.vault

    def build(who: _Who) -> Response:
        from domicile.reports import duties_for

        today = dt.datetime.now(dt.UTC).date()
        return render(
            request, "evidence.html", who, page="evidence",
            since=(today - dt.timedelta(days=30)).isoformat(), until=today.isoformat(),
            registers=sorted(duties_for(vault)),
            jurisdictions=sorted({lp.pack.pack.jurisdiction for lp in vault.engine.packs}),
        )  # fmt: skip

    return await _guarded(request, "evidence", EVIDENCE_SCOPES, build)


REPORT_TYPES = {
    "json": "application/json",
    "html": "text/html; charset=utf-8",
    "pdf": "application/pdf",
}


@router.post("/reports/{kind}")
async def report(request: Request, kind: str) -> Response:
    """A report (the register of a pack, or a jurisdiction's compliance report for a
    period) rendered as the CLI's ``domicile report`` renders it, downloaded."""
    posted = await _posted(request)
    if isinstance(posted, Response):
        return posted
    who, form = posted
    vault = _console(request).svc.vault

    def work() -> tuple[bytes, str, str]:
        from domicile.reports import compliance, name_of, register, render, require_extra

        for scope in EVIDENCE_SCOPES:
            vault.authorize(who.access, scope)
        fmt = _text(form, "format") or "html"
        if fmt not in REPORT_TYPES:
            raise BadInput("unknown report format", hint="json, html or pdf")
        require_extra(fmt)
        if kind == "register":
            model = register(vault, pack=_text(form, "pack").lower() or "ru")
        elif kind == "compliance":
            since = parse_date(_text(form, "since"), "since")
            until = parse_date(_text(form, "until"), "until")
            model = compliance(
                vault, jurisdiction=_text(form, "jurisdiction"), since=since, until=until
            )
        else:
            raise NotFound("no such report", hint="register or compliance")
        return render(model, fmt), f"{name_of(model)}.{fmt}", REPORT_TYPES[fmt]

    try:
        data, filename, kind_ = await _run(request, work)
    except DomicileError as exc:
        return _failed(request, who, exc, "evidence")
    return Response(
        data, media_type=kind_,
        headers={"Content-Disposition": f'attachment; filename="{filename}"', **_NO_STORE},
    )  # fmt: skip


@router.post("/evidence")
async def evidence_export(request: Request) -> Response:
    posted = await _posted(request)
    if isinstance(posted, Response):
        return posted
    who, form = posted
    vault = _console(request).svc.vault

    def work() -> tuple[bytes, str]:
        from domicile.evidence.pack import export_pack

        for scope in EVIDENCE_SCOPES:
            vault.authorize(who.access, scope)
        since = parse_date(_text(form, "since"), "since")
        until = parse_date(_text(form, "until"), "until")
        if since > until:
            raise BadInput("the period starts after it ends", hint="since is the first day")
        with tempfile.TemporaryDirectory(prefix="domicile-console-") as tmp:
            target = Path(tmp) / "evidence.zip"
            export_pack(vault, target, since=since, until=until)
            return target.read_bytes(), f"evidence-{since}-{until}.zip"

    try:
        data, filename = await _run(request, work)
    except DomicileError as exc:
        return _failed(request, who, exc, "evidence")
    return Response(
        data, media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', **_NO_STORE},
    )  # fmt: skip
