"""Subjects' requests: open one, fulfil it, extend it, close it; list and show them.

Every interface (the CLI's ``domicile rights``, the API's ``/v1/rights``) goes through
these functions, so a request is checked, found, timed and recorded one way.

- The subject is found at every site through the identity blind indexes: the values the
  operator gives are digested with each site's index key at that site; no value leaves the
  process, none is stored. The request keeps each site's opaque subject id.
- The operator states who checked the subject's identity and how; the request records it.
- The deadline comes from the packs (``deadlines.py``): the laws that cover the subject,
  and those of the countries where its data is kept. The earliest binds.
- Fulfilment acts at every site that holds the subject (the local operator reads each
  record where it is kept; a client acts from its own site: see ``fulfil.py``), and every
  step is audited at that site as ``request``; the request's history (in ``rights.json``,
  counts and ids only) is the evidence.
- Who may see or change a request: ``authorize_request`` (and ``may_see`` for lists),
  through ``Domicile.authorize``, for every interface.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from domicile.access import Access
from domicile.audit import AuditEvent
from domicile.config import FieldSpec
from domicile.errors import BadInput, Conflict, NodeUnavailable, NotFound
from domicile.policy import parse_date
from domicile.rights.deadlines import KINDS, deadlines
from domicile.rights.registry import RequestsFile, new_id
from domicile.stores.base import SiteUnavailable
from domicile.vault import values
from domicile.vault.core import IDENTITY
from domicile.vault.incountry import FILES as INCOUNTRY_FILES
from domicile.vault.incountry import profile_subject

if TYPE_CHECKING:
    from domicile.config import Config
    from domicile.vault import Domicile

CHANNELS = ("email", "post", "web", "phone", "in_person", "api", "other")
VERIFIED_HOW = (
    "identity_document", "account_login", "email_confirmation", "phone_confirmation",
    "signed_letter", "in_person", "representative_authority", "other",
)  # fmt: skip
STATUSES = ("open", "extended", "closed")
OUTCOMES = ("fulfilled", "partly_fulfilled", "refused", "no_data", "withdrawn_by_subject")
# Who checked the identity: a staff id or an e-mail-like handle of the operator's staff.
_STAFF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")
PURPOSE = {
    "access": "subject_access", "portability": "subject_portability",
    "rectification": "subject_rectification", "erasure": "subject_erasure",
    "restriction": "subject_restriction", "withdrawal": "subject_withdrawal",
}  # fmt: skip
MAX_REASON = 500
# The record operation each kind's purpose stands for (``rights:write`` allows it for the
# request's own steps): what the caller needs at a subject's home node in a federation.
RECORD_OPERATION = {
    "subject_access": "records:read", "subject_portability": "records:read",
    "subject_rectification": "records:write", "subject_erasure": "records:erase",
    "subject_withdrawal": "records:erase", "subject_restriction": "records:read",
}  # fmt: skip


def for_home_nodes(access: Access, purpose: str) -> Access:
    """The caller as it asks other nodes for a request's steps: a client (already allowed
    ``rights:write`` here) with the record operation its request's purpose stands for;
    each home node cuts it down to what it lets peers ask, and checks it again."""
    if access.scopes is None:
        return access
    return replace(access, scopes=access.scopes | {RECORD_OPERATION[purpose]})


def _choice(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise BadInput(f"unknown {what}", hint=f"use one of: {', '.join(allowed)}")
    return value


def _reason(text: str | None, what: str, *, required: bool) -> str | None:
    if text is None or not text.strip():
        if required:
            raise BadInput(f"give {what}", hint="say why, in a few words, without personal data")
        return None
    text = " ".join(text.split())
    if len(text) > MAX_REASON:
        raise BadInput(f"{what} is at most {MAX_REASON} characters")
    return text


# --- finding the subject ------------------------------------------------------------------


# The InCountry API's subject: its records' profile key, as the application sends it.
PROFILE_KEY = "incountry.profile_key"


def identity_keys(config: Config) -> dict[str, tuple[str, str, FieldSpec]]:
    """What ``--identity K=V`` may name: an identifying field (by its name, or by its data
    category), as (category, field name, field spec)."""
    out: dict[str, tuple[str, str, FieldSpec]] = {}
    for coll in config.model.collections.values():
        for name, spec in coll.fields.items():
            if spec.identifies:
                out.setdefault(name, (spec.category, name, spec))
                out.setdefault(spec.category, (spec.category, name, spec))
    return out


def _digest_inputs(
    config: Config, identity: Mapping[str, str]
) -> tuple[list[tuple[str, str]], str | None]:
    """(category, normalized value) for each identity given, and the InCountry API's
    profile key if one is given; bad input names the key only."""
    if not identity:
        raise BadInput(
            "give at least one identity to find the subject by",
            hint=f"e.g. --identity email=anna@example.org (or {PROFILE_KEY}=...)",
        )
    keys = identity_keys(config)
    out = []
    profile = None
    for key, value in identity.items():
        if key == PROFILE_KEY:
            if not isinstance(value, str) or not value:
                raise BadInput(f"{PROFILE_KEY} needs a value", hint="the key the client sends")
            profile = value
            continue
        found = keys.get(key)
        if found is None and not keys:
            raise BadInput(
                "no field of the configuration identifies a subject",
                hint=f"mark one `identifies: true` (and `searchable: true`) in a collection, "
                f"or find the InCountry API's subject by {PROFILE_KEY}",
            )
        if found is None:
            raise BadInput(
                f"{key!r} is not an identifying field",
                hint=f"use one of: {', '.join(sorted([*keys, PROFILE_KEY]))}",
            )
        category, name, spec = found
        norm = values.normalize(name, spec, values.coerce(name, spec, value))
        out.append((category, norm))
    return out, profile


def locate(
    vault: Domicile,
    identity: Mapping[str, str],
    *,
    access: Access | None = None,
    purpose: str = "subject_access",
) -> list[dict[str, Any]]:
    """At each site, the subject whose identity digests match every given value: its id
    there and how many records of it the site holds; then, by that opaque id, the copies
    other sites keep of them. A site that does not answer stops the search
    (``SiteUnavailable``): a request must not miss a site. On a node, another site is
    searched by its own node (``subject_at``: search digests only, for ``access``)."""
    wanted, profile = _digest_inputs(vault.config, identity)
    access = for_home_nodes(access or vault.operator, purpose)
    if profile is not None and not all(vault.is_here(s.id) for s in vault.config.sites):
        raise Conflict(
            f"a request by {PROFILE_KEY} is opened where every site is held: a node holds "
            "only its own site, and the others' InCountry records are not searched from here",
            hint="open it with the vault's other identities, or at the embedded deployment",
        )

    def unavailable(site_id: str) -> SiteUnavailable:
        vault._drop(site_id)
        return SiteUnavailable(
            site_id, "it does not answer",
            hint="the request was not opened: open it again once every site answers",
        )  # fmt: skip

    found: dict[tuple[str, str], dict[str, Any]] = {}
    for site in vault.config.sites:
        if not vault.is_here(site.id):
            try:
                for h in vault.subject_at(site.id, purpose=purpose, access=access, identity=wanted):
                    found[(site.id, h["subject"])] = holding_of(h)
            except (SiteUnavailable, NodeUnavailable):
                raise unavailable(site.id) from None
            continue
        try:
            for subject in _subjects_here(vault, site.id, wanted, profile):
                records = vault.store(site.id).subject_records(subject)
                if records:
                    found[(site.id, subject)] = _holding(site, subject, records)
        except SiteUnavailable:
            raise unavailable(site.id) from None
    ids = sorted({subject_id for _, subject_id in found})
    for site in vault.config.sites:
        missing = [s for s in ids if (site.id, s) not in found]
        if not missing:
            continue
        try:
            for h in _holdings_at(vault, site, missing, access, purpose):
                found[(site.id, h["subject"])] = h
        except (SiteUnavailable, NodeUnavailable):
            raise unavailable(site.id) from None
    return sorted(found.values(), key=lambda h: (h["site"], h["subject"]))


def _subjects_here(
    vault: Domicile, site_id: str, wanted: list[tuple[str, str]], profile: str | None
) -> list[str]:
    """The subject ids at a site this process holds: the vault's subject whose identity
    digests match every given value (none if they name different people), and the
    InCountry API's subject of the profile key (its records carry another id)."""
    out: list[str] = []
    if wanted:
        indexer = vault._indexers[site_id]
        digests = [indexer.digest(IDENTITY, category, norm) for category, norm in wanted]
        known = vault.store(site_id).subjects_for(digests)
        subjects = {known.get(d) for d in digests}
        if len(subjects) == 1:
            out += [s for s in subjects if s is not None]
    if profile is not None:
        out.append(profile_subject(vault, site_id, profile))
    return out


def holding_of(answer: Mapping[str, Any]) -> dict[str, Any]:
    """A request's holding, of a node's answer (``subject_at``): what a request keeps."""
    return {k: answer[k] for k in ("site", "country", "subject", "records", "copies")}


def _holdings_at(
    vault: Domicile, site: Any, subjects: list[str], access: Access, purpose: str
) -> list[dict[str, Any]]:
    """The holdings of these subject ids at one site: read there, or (on a node, for
    another site) as that site's node answers."""
    if not vault.is_here(site.id):
        answer = vault.subject_at(site.id, purpose=purpose, access=access, subjects=subjects)
        return [holding_of(h) for h in answer if h["subject"] in subjects]
    out = []
    for subject in subjects:
        records = vault.store(site.id).subject_records(subject)
        if records:
            out.append(_holding(site, subject, records))
    return out


def relocate(
    vault: Domicile,
    holdings: list[dict[str, Any]],
    *,
    access: Access | None = None,
    purpose: str = "subject_access",
) -> list[dict[str, Any]]:
    """The holdings again, for the subject ids a request found, at every site as they are
    now: copies made since the request was opened are found, records erased since are
    gone. (A subject's records at a site where it was not found when the request was
    opened carry another id there: only its identity, which is not kept, finds them.) A
    site that does not answer stops the step."""
    subjects = sorted({h["subject"] for h in holdings})
    found: list[dict[str, Any]] = []
    for site in vault.config.sites:
        if not subjects:
            break
        try:
            who = for_home_nodes(access or vault.operator, purpose)
            found += _holdings_at(vault, site, subjects, who, purpose)
        except (SiteUnavailable, NodeUnavailable):
            vault._drop(site.id)
            raise SiteUnavailable(
                site.id, "it does not answer",
                hint="nothing was done: fulfil the request again once every site answers",
            ) from None  # fmt: skip
    return sorted(found, key=lambda h: (h["site"], h["subject"]))


def _holding(site: Any, subject: str, records: list[Any]) -> dict[str, Any]:
    return {
        "site": site.id,
        "country": site.country,
        "subject": subject,
        "records": sum(1 for r in records if not r.is_replica),
        "copies": sum(1 for r in records if r.is_replica),
    }


def _laws(
    vault: Domicile, holdings: list[dict[str, Any]], access: Access, purpose: str
) -> tuple[set[str], list[str]]:
    """The packs whose deadlines count for a subject, and why each one does (at another
    node's site, as that node answers: the subject's residency stays there)."""
    packs: set[str] = set()
    why: list[str] = []
    countries = {h["country"] for h in holdings} or {s.country for s in vault.config.sites}
    for lp in vault.engine.packs:
        inside = sorted(countries & set(lp.pack.pack.countries))
        if inside:
            packs.add(lp.id)
            where = "its data is kept" if holdings else "the deployment has sites"
            why.append(f"{lp.id}: {where} in {', '.join(inside)}")
    for h in holdings:
        if not h["records"]:
            continue
        site = vault.config.site(h["site"])
        if vault.is_here(site.id):
            store = vault.store(site.id)
            # A primary that carries the residency (an InCountry file is sealed alone).
            rec = next(
                r
                for r in store.subject_records(h["subject"])
                if not r.is_replica and r.collection != INCOUNTRY_FILES
            )
            residency = vault._residency(site, rec)
            laws = [
                (j.pack, j.coverage)
                for j in vault.engine.jurisdictions(residency)
                if j.coverage != "none"
            ]
        else:
            answer = vault.subject_at(
                site.id, purpose=purpose, access=for_home_nodes(access, purpose),
                subjects=[h["subject"]],
            )  # fmt: skip
            laws = [(p, c) for a in answer for p, c in a["laws"] if c != "none"]
        for pack, coverage in laws:
            if pack not in packs:
                packs.add(pack)
                why.append(
                    f"{pack}: the law {'covers' if coverage == 'covered' else 'may cover'} the subject"
                )
    return packs, why


# --- who may do what with a request ----------------------------------------------------


def concerned_sites(config: Config, req: Mapping[str, Any]) -> list[str]:
    """The sites a request concerns: those that hold its subject (every configured site
    when none does: the search that opened it looked at all of them)."""
    sites = sorted({h["site"] for h in req["subject"]["holdings"]})
    return sites or [s.id for s in config.sites]


def may_see(access: Access, req: Mapping[str, Any], config: Config) -> bool:
    """Whether ``rights:read`` lets the caller see a request (``list`` leaves out the rest)."""
    return all(
        access.missing("rights:read", site=site) is None for site in concerned_sites(config, req)
    )


def authorize_request(
    vault: Domicile, access: Access, operation: str, req: Mapping[str, Any]
) -> None:
    """The check of a step on one request, through ``Domicile.authorize`` (so each refusal
    is audited where the request arrived): the operation; the scope of every site the
    request concerns (a request about a subject at a site the caller may not act at
    answers as a missing one does, so the caller learns nothing of it); and, for
    ``rights:write``, the purpose of the request's kind (``purpose:subject_access``, ...)."""
    vault.authorize(access, operation)
    for site in concerned_sites(vault.config, req):
        try:
            vault.authorize(access, operation, site=site, hide=True)
        except NotFound:
            raise NotFound("no request of that id", hint="see `domicile rights list`") from None
    if operation == "rights:write":
        vault.authorize(access, operation, purpose=PURPOSE[req["kind"]])


# --- the request's life -------------------------------------------------------------------


def _event(
    vault: Domicile,
    req: dict[str, Any],
    step: str,
    by: str | None,
    *,
    access: Access | None = None,
    **detail: Any,
) -> None:
    """One ``request`` audit entry at each site holding the subject (or the local site
    when none does), and the same step in the request's history, naming those entries.
    On a node, another site's entry is written by its own node (for ``access``)."""
    at = vault.clock().isoformat()
    targets = [(h["site"], h["subject"]) for h in req["subject"]["holdings"]] or [
        (vault.config.local_site or vault.config.model.default_site, None)
    ]
    entries = []
    # Each home node keeps its own entry of a block: the numbers of the others stay here.
    sent = {k: v for k, v in detail.items() if k != "block_audit"}
    for site_id, subject in targets:
        if not vault.is_here(site_id):
            try:
                purpose = PURPOSE[req["kind"]]
                seq = vault.request_step_at(
                    site_id, purpose=purpose,
                    access=for_home_nodes(access or vault.operator, purpose),
                    subject=subject,
                    detail={"request": req["id"], "kind": req["kind"], "step": step, **sent},
                )  # fmt: skip
            except (SiteUnavailable, NodeUnavailable):
                raise SiteUnavailable(
                    site_id, "its node does not answer",
                    hint=f"the step {step!r} was not recorded: run it again once the node is back",
                ) from None  # fmt: skip
            entries.append({"site": site_id, "seq": seq})
            continue
        event = AuditEvent(
            action="request", site=site_id, purpose=PURPOSE[req["kind"]], subject=subject,
            client=by, detail={"request": req["id"], "kind": req["kind"], "step": step, **detail},
            at=at,
        )  # fmt: skip
        try:
            rows = vault.ledger(site_id).append_now(vault.store(site_id), [event])
        except SiteUnavailable:
            vault._drop(site_id)
            raise SiteUnavailable(
                site_id, "it does not answer",
                hint=f"the step {step!r} was not recorded: run it again once the site is back",
            ) from None  # fmt: skip
        entries.append({"site": site_id, "seq": rows[0].seq})
    req["history"].append({"at": at, "step": step, "by": by, "audit": entries, **detail})


def open_request(
    vault: Domicile,
    kind: str,
    identity: Mapping[str, str],
    *,
    checked_by: str,
    verified_how: str,
    via: str = "email",
    received: str | dt.date | None = None,
    access: Access | None = None,
) -> dict[str, Any]:
    access = access or vault.operator
    vault.authorize(access, "rights:write")
    _choice(kind, KINDS, "request kind")
    # The search looks at every site: only a caller that may act at every site opens one.
    for site in vault.config.sites:
        vault.authorize(access, "rights:write", site=site.id)
    vault.authorize(access, "rights:write", purpose=PURPOSE[kind])
    _choice(via, CHANNELS, "channel (--via)")
    _choice(verified_how, VERIFIED_HOW, "way of checking the identity (--verified-how)")
    if not _STAFF.match(checked_by or ""):
        raise BadInput(
            "--identity-checked-by names the member of staff who checked the identity",
            hint="a staff id or login, e.g. dpo.kim (letters, digits and . _ @ + -)",
        )
    today = vault.clock().date()
    day = parse_date(received, "--received") if received is not None else today
    if day > today:
        raise Conflict(
            "a request cannot have arrived after today", hint="give --received YYYY-MM-DD"
        )
    holdings = locate(vault, identity, access=access, purpose=PURPOSE[kind])
    pack_ids, why = _laws(vault, holdings, access, PURPOSE[kind])
    found = deadlines(vault.engine.packs, pack_ids, kind, day)
    binding = found[0] if found else None
    req: dict[str, Any] = {
        "id": new_id(),
        "kind": kind,
        "status": "open",
        "received": day.isoformat(),
        "via": via,
        "opened_at": vault.clock().isoformat(),
        "opened_by": access.client,
        "identity": {
            "by": sorted(
                k if k == PROFILE_KEY else identity_keys(vault.config)[k][0] for k in identity
            ),
            "checked_by": checked_by,
            "verified_how": verified_how,
        },
        "subject": {"found": bool(holdings), "holdings": holdings},
        "laws": why,
        "deadline": binding.to_dict() if binding else None,
        "deadlines": [d.to_dict() for d in found],
        "due": binding.due.isoformat() if binding else None,
        "extension": None,
        "outcome": None,
        "history": [],
    }
    # The file is read (and checked) first: a request that cannot be kept is not audited.
    with RequestsFile(vault.config).changing() as all_requests:
        _event(
            vault, req, "open", access.client, access=access, sites=len(holdings),
            due=req["due"], rule=binding.rule if binding else None,
        )  # fmt: skip
        all_requests[req["id"]] = req
    return req


@contextmanager
def changing(vault: Domicile, request_id: str, access: Access) -> Iterator[dict[str, Any]]:
    """The request, to change in place while the requests file is locked (so two changes
    of one request never overwrite each other); saved when the block ends without an
    error, left as it was otherwise."""
    vault.authorize(access, "rights:write")
    with RequestsFile(vault.config).changing() as all_requests:
        req = all_requests.get(request_id)
        if req is None:
            raise NotFound("no request of that id", hint="see `domicile rights list`")
        authorize_request(vault, access, "rights:write", req)
        if req["status"] == "closed":
            raise Conflict("the request is closed", hint="open a new request")
        yield req


def extend(
    vault: Domicile, request_id: str, *, reason: str, access: Access | None = None
) -> dict[str, Any]:
    """Extend the deadline as far as the binding law allows, once, with a reasoned notice
    to the subject; only before the deadline has passed."""
    access = access or vault.operator
    with changing(vault, request_id, access) as req:
        _extend(vault, req, reason, access)
    return req


def _extend(vault: Domicile, req: dict[str, Any], reason: str, access: Access) -> None:
    text = _reason(reason, "the reason for the extension (--reason)", required=True)
    deadline = req["deadline"]
    if deadline is None or deadline["extension"] is None:
        law = deadline["law"] if deadline else "no law"
        raise Conflict(
            f"{law} allows no extension of this deadline",
            hint="answer by the due date, or close the request with its outcome",
        )
    if req["extension"] is not None:
        raise Conflict("the deadline was extended already", hint="the law allows one extension")
    today = vault.clock().date()
    if today > dt.date.fromisoformat(req["due"]):
        raise Conflict(
            "the deadline has passed: it can no longer be extended",
            hint=f"{deadline['law']} wants the notice before {req['due']}",
        )
    req["extension"] = {
        "by": deadline["extension"],
        "reason": text,
        "notice": deadline["extension_needs"],
        "at": vault.clock().isoformat(),
        "from": req["due"],
    }
    req["due"] = deadline["extended_due"]
    req["status"] = "extended"
    _event(
        vault, req, "extend", access.client, access=access, due=req["due"], rule=deadline["rule"]
    )


def close(
    vault: Domicile,
    request_id: str,
    *,
    outcome: str,
    reason: str | None = None,
    access: Access | None = None,
) -> dict[str, Any]:
    access = access or vault.operator
    with changing(vault, request_id, access) as req:
        _close(vault, req, outcome, reason, access)
    return req


def _close(
    vault: Domicile, req: dict[str, Any], outcome: str, reason: str | None, access: Access
) -> None:
    _choice(outcome, OUTCOMES, "outcome (--outcome)")
    text = _reason(reason, "the reasons for the refusal (--reason)", required=outcome == "refused")
    if outcome in ("fulfilled", "partly_fulfilled") and not any(
        h["step"] == "fulfil" for h in req["history"]
    ):
        raise Conflict(
            "the request has not been fulfilled yet",
            hint=f"run `domicile rights fulfil {req['id']}` first, or give another outcome",
        )
    today = vault.clock().date()
    on_time = req["due"] is None or today <= dt.date.fromisoformat(req["due"])
    block = req.get("block")
    if req["kind"] == "restriction" and block and block["state"] == "in_force":
        # A restriction lasts as long as its request: closing it lifts it (a withdrawal
        # of consent stays: see ``blocks.py``).
        from domicile.rights.blocks import lift_block

        lift_block(vault, req, access.client, f"the request was closed ({outcome})", access=access)
    req["status"] = "closed"
    req["outcome"] = {
        "outcome": outcome,
        "reason": text,
        "at": vault.clock().isoformat(),
        "on_time": on_time,
    }
    _event(vault, req, "close", access.client, access=access, outcome=outcome, on_time=on_time)


# --- reading (never writes) ---------------------------------------------------------------


def summary(req: dict[str, Any], today: dt.date) -> dict[str, Any]:
    due = req["due"]
    overdue = req["status"] != "closed" and due is not None and dt.date.fromisoformat(due) < today
    return {
        "id": req["id"],
        "kind": req["kind"],
        "status": req["status"],
        "received": req["received"],
        "due": due,
        "law": req["deadline"]["pack"] if req["deadline"] else None,
        "rule": req["deadline"]["rule"] if req["deadline"] else None,
        "overdue": overdue,
        "sites": [h["site"] for h in req["subject"]["holdings"]],
        "outcome": req["outcome"]["outcome"] if req["outcome"] else None,
    }


def list_requests(
    config: Config,
    *,
    due_before: str | dt.date | None = None,
    status: str | None = None,
    today: dt.date | None = None,
    access: Access | None = None,
) -> list[dict[str, Any]]:
    """Requests on record, by due date; ``status`` may also be ``overdue``. For a caller
    (``access``), only the requests it may see (``may_see``)."""
    today = today or dt.datetime.now(dt.UTC).date()
    limit = parse_date(due_before, "--due-before") if due_before is not None else None
    if status is not None:
        _choice(status, (*STATUSES, "overdue"), "status (--status)")
    rows = [
        summary(r, today)
        for r in RequestsFile(config).all()
        if access is None or may_see(access, r, config)
    ]
    if status == "overdue":
        rows = [r for r in rows if r["overdue"]]
    elif status is not None:
        rows = [r for r in rows if r["status"] == status]
    if limit is not None:
        rows = [r for r in rows if r["due"] is not None and r["due"] < limit.isoformat()]
    return sorted(rows, key=lambda r: (r["due"] or "9999", r["id"]))


def show(
    config: Config,
    request_id: str,
    *,
    today: dt.date | None = None,
    vault: Domicile | None = None,
    access: Access | None = None,
) -> dict[str, Any]:
    """One request. For a caller (``access``, with the ``vault`` that audits a refusal),
    checked by ``authorize_request``: one it may not see answers as a missing one."""
    req = RequestsFile(config).get(request_id)
    if access is not None:
        assert vault is not None, "a caller's refusal is audited by the vault"
        authorize_request(vault, access, "rights:read", req)
    req["overdue"] = summary(req, today or dt.datetime.now(dt.UTC).date())["overdue"]
    if req["kind"] in ("restriction", "withdrawal"):
        req.setdefault("block", None)
    return req
