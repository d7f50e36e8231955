"""The native API: every SDK operation over HTTP, under ``/v1``.

Each operation needs its scope; record operations are also checked against the client's
site, collection and purpose scopes. Reads are decided as reads from the client's site, so
a client of the US application sees a Russian subject's data only through a transfer the
law permits (or in the masked form a pack allows).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from domicile.access import Access
from domicile.countries import country
from domicile.errors import BadInput, DomicileError
from domicile.http.attestation import Attestation, AttestBody
from domicile.http.deps import PrincipalDep, Service, ServiceDep, authorize, client_access
from domicile.http.observe import log_event
from domicile.http.problems import ALL, public_decision, status_of
from domicile.http.security import Forbidden, Principal
from domicile.policy import PolicyEngine, parse_date
from domicile.residency import SubjectEvidence
from domicile.stores.base import SiteUnavailable
from domicile.vault import PolicyRefused, ReadResult
from domicile.vault.parity import check_parity
from domicile.vault.transfers import summarize

# The record routes are async: each hands the vault's (blocking) work to the service's
# executor in one hop (``Service.run``) and answers with the JSON bytes themselves
# (orjson, no second validation of what the vault built; ``response_model`` still
# documents the answer). Well-formed requests to them usually take the fast path
# (``fast.py``), which does the same work without FastAPI's per-request dependency
# resolution. The other routes are plain functions, which FastAPI runs in worker threads.
router = APIRouter(responses=ALL)
Evidence = dict[str, str | list[str]]
FieldValue = str | int | bool
Purpose = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.-]{0,63}$", examples=["account_signup"])]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PutBody(_Body):
    subject: Evidence = Field(examples=[{"citizenship": "RU"}])
    fields: dict[str, FieldValue] = Field(examples=[{"full_name": "Anna Volkova"}])
    purpose: Purpose


class BatchItem(_Body):
    subject: Evidence
    fields: dict[str, FieldValue]


class BatchBody(_Body):
    records: list[BatchItem] = Field(min_length=1, max_length=1000)
    purpose: Purpose


class ReadManyBody(_Body):
    tokens: list[str] = Field(min_length=1, max_length=1000)
    purpose: Purpose


class UpdateBody(_Body):
    fields: dict[str, FieldValue | None] = Field(min_length=1)  # null clears a field
    purpose: Purpose


class FindBody(_Body):
    where: dict[str, FieldValue] = Field(min_length=1)
    purpose: Purpose
    as_site: str | None = None


class EraseBody(_Body):
    token: str
    purpose: Purpose = "erasure"


Day = Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}$", examples=["2025-03-03"])]


class FilingBody(_Body):
    name: str = Field(examples=["ru.art12_notice"])
    date: Day
    note: str | None = Field(default=None, max_length=500)


class ExplainBody(_Body):
    subject: Evidence
    categories: list[str] = Field(min_length=1)
    operation: str
    site_country: str
    to_country: str | None = None
    date: Day | None = None
    filings: dict[str, Day] = {}
    bases: list[str] = []
    facts: dict[str, FieldValue] = {}


class PutResponse(BaseModel):
    token: str
    site: str
    country: str
    decision: dict[str, Any]
    join_tokens: dict[str, str] | None = None


class WrittenResponse(BaseModel):
    """An update's answer to a client that may not read the record back."""

    token: str
    version: int


class RecordResponse(BaseModel):
    token: str
    site: str
    country: str
    collection: str
    version: int
    fields: dict[str, Any]
    transfer: bool
    masked: bool
    source: str
    read_at: str
    decision: str
    disclosure: str
    rules: list[str]


class Unread(BaseModel):
    """A record of a batch read that was not read: the status, code and words its single
    read would have answered with (and, for a policy refusal, the public decision)."""

    token: str
    status: int
    code: str
    detail: str
    decision: dict[str, Any] | None = None


class ReadManyResponse(BaseModel):
    records: list[RecordResponse | Unread]


class PutManyResponse(BaseModel):
    records: list[PutResponse]


def _placed(r: Any) -> dict[str, Any]:
    """A put's answer, as ``PutResponse`` (``join_tokens`` always present)."""
    out: dict[str, Any] = r.to_dict()
    out.setdefault("join_tokens", None)
    return out


def _unread(token: str, exc: DomicileError) -> dict[str, Any]:
    """A failed read of a batch, in the words its single read's problem document uses."""
    status = status_of(exc)
    out: dict[str, Any] = {"token": token, "status": status, "code": exc.code}
    if isinstance(exc, SiteUnavailable):
        log_event("site unavailable", logging.WARNING, route="/v1/read", site=exc.site,
                  reason=exc.reason)  # fmt: skip
        out["detail"] = f"site {exc.site!r} is unavailable"
    elif status == 500:
        log_event("internal error", logging.ERROR, route="/v1/read", code=exc.code)
        out.update(code="internal_error", detail="see the service log")
    else:
        out["detail"] = exc.message
    if isinstance(exc, PolicyRefused):
        out["decision"] = public_decision(exc.decision)
    return out


def _evidence(raw: Evidence) -> SubjectEvidence:
    return SubjectEvidence.from_mapping(raw)


def _record(svc: ServiceDep, r: ReadResult) -> dict[str, Any]:
    svc.metrics.decided(r.decision.outcome.value)
    if r.transfer:
        svc.metrics.transfers.labels(r.decision.request.to_country or "?").inc()
    return r.to_dict()


AsSite = Annotated[
    str | None,
    Query(description="The site the client acts from (default: its only site, else the local one)"),
]


# --- the record routes: their work, shared with the fast path (``fast.py``) ---------------


def put_work(
    svc: Service, principal: Principal, path: dict[str, str], body: PutBody, as_site: str | None
) -> bytes:
    r = svc.vault.put(
        path["collection"], subject=body.subject, fields=body.fields, purpose=body.purpose,
        access=svc.access(principal, as_site),
    )  # fmt: skip
    svc.metrics.decided(r.decision.outcome.value)
    return orjson.dumps(_placed(r))


def put_batch_work(
    svc: Service, principal: Principal, path: dict[str, str], body: BatchBody, as_site: str | None
) -> bytes:
    items = [{"subject": i.subject, "fields": i.fields} for i in body.records]
    results = svc.vault.put_many(
        path["collection"], items, purpose=body.purpose,
        access=svc.access(principal, as_site),
    )  # fmt: skip
    return orjson.dumps({"records": [_placed(r) for r in results]})


def get_work(
    svc: Service, principal: Principal, token: str, purpose: str, as_site: str | None
) -> bytes:
    access = svc.access(principal, as_site)
    return orjson.dumps(_record(svc, svc.vault.get(token, purpose=purpose, access=access)))


def read_many_work(
    svc: Service, principal: Principal, body: ReadManyBody, as_site: str | None
) -> bytes:
    access = svc.access(principal, as_site)
    return orjson.dumps({"records": [_read_one(svc, access, t, body.purpose) for t in body.tokens]})


async def read_many(
    svc: Service, principal: Principal, body: ReadManyBody, as_site: str | None
) -> bytes:
    """``read_many_work`` on the executor, always: there, the reads of concurrent batches
    share their audit commits (read one by one on the event loop, each committing alone,
    batches showed no gain that outlasted the machine's noise)."""
    return await svc.run(lambda: read_many_work(svc, principal, body, as_site))


def _read_one(svc: Service, access: Access, token: str, purpose: str) -> dict[str, Any]:
    """One record of a batch read: its single read's answer, or why it was not read."""
    try:
        return _record(svc, svc.vault.get(token, purpose=purpose, access=access))
    except Forbidden:  # the client's scopes, not this record: the whole request
        raise
    except DomicileError as exc:
        return _unread(token, exc)


def _answer(data: bytes, status: int = 200) -> Response:
    return Response(data, status_code=status, media_type="application/json")


@router.post(
    "/collections/{collection}/records",
    tags=["records"],
    response_model=PutResponse,
    status_code=201,
)
async def put(
    collection: str,
    body: PutBody,
    svc: ServiceDep,
    principal: PrincipalDep,
    as_site: AsSite = None,
) -> Response:
    """Store a record at the site the law requires; answer its token."""
    path = {"collection": collection}
    return _answer(await svc.run(lambda: put_work(svc, principal, path, body, as_site)), 201)


@router.post(
    "/collections/{collection}/records/batch",
    tags=["records"],
    response_model=PutManyResponse,
    status_code=201,
)
async def put_batch(
    collection: str,
    body: BatchBody,
    svc: ServiceDep,
    principal: PrincipalDep,
    as_site: AsSite = None,
) -> Response:
    """Store many records; every one is checked and placed before any is written."""
    path = {"collection": collection}
    return _answer(await svc.run(lambda: put_batch_work(svc, principal, path, body, as_site)), 201)


@router.get("/records/{token}", tags=["records"], response_model=RecordResponse)
async def get(
    token: str,
    svc: ServiceDep,
    principal: PrincipalDep,
    purpose: Annotated[str, Query(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")],
    as_site: AsSite = None,
) -> Response:
    """Read a record as from the client's site: locally, or as a transfer the law permits
    (full or masked), or refused with the obligations that would unlock it. A record
    outside the client's collections answers 404, as a missing one does."""
    return _answer(await svc.run_single(lambda: get_work(svc, principal, token, purpose, as_site)))


@router.post("/read", tags=["records"], response_model=ReadManyResponse)
async def get_many(
    body: ReadManyBody, svc: ServiceDep, principal: PrincipalDep, as_site: AsSite = None
) -> Response:
    """Read many records (1 to 1000 tokens), each exactly as ``GET /records/{token}``
    reads it: through the same check, decided, and audited one by one before the answer.
    ``records`` lists them in the order asked; a record that was not read (missing,
    outside the client's collections, refused by policy, its key erased, its site down)
    is listed with the status, code and words its single read would have answered. A
    client whose scopes do not allow reading at all is refused as a whole (403)."""
    return _answer(await read_many(svc, principal, body, as_site))


@router.patch("/records/{token}", tags=["records"], response_model=RecordResponse | WrittenResponse)
def update(
    token: str,
    body: UpdateBody,
    svc: ServiceDep,
    principal: PrincipalDep,
    as_site: AsSite = None,
) -> dict[str, Any]:
    """Change fields of a record. The answer shows what a read by this client would: the
    record as a read from its site gets it (full, masked), else only the new version."""
    r = svc.vault.update(
        token, fields=body.fields, purpose=body.purpose,
        access=client_access(svc, principal, as_site),
    )  # fmt: skip
    return _record(svc, r) if isinstance(r, ReadResult) else r.to_dict()


@router.delete("/records/{token}", tags=["records"])
def delete(
    token: str,
    svc: ServiceDep,
    principal: PrincipalDep,
    purpose: Annotated[str, Query(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")],
    as_site: AsSite = None,
) -> dict[str, Any]:
    return svc.vault.delete(token, purpose=purpose, access=client_access(svc, principal, as_site))


@router.post("/collections/{collection}/find", tags=["records"])
def find(
    collection: str, body: FindBody, svc: ServiceDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Records whose searchable fields equal the given values, at every site, each read as
    from the client's site."""
    result = svc.vault.find(
        collection, where=body.where, purpose=body.purpose,
        access=client_access(svc, principal, body.as_site),
    )  # fmt: skip
    return {
        "records": [_record(svc, r) for r in result.records],
        "refused": result.refused,
        "unavailable": result.unavailable,
    }


@router.post("/subjects/erase", tags=["subjects"])
def erase(
    body: EraseBody, svc: ServiceDep, principal: PrincipalDep, as_site: AsSite = None
) -> dict[str, Any]:
    """Erase the subject a token belongs to: its key is destroyed, its records deleted, and
    at once its copies and keys at every site that may hold copies (``copies.deleted``);
    sites that do not answer are listed in ``copies.pending``, and the replication worker
    finishes there."""
    return svc.vault.erase(
        body.token, purpose=body.purpose, access=client_access(svc, principal, as_site)
    )


@router.get("/subjects/export", tags=["subjects"])
def export(
    token: str,
    svc: ServiceDep,
    principal: PrincipalDep,
    purpose: Annotated[str, Query(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")] = "subject_access",
    as_site: AsSite = None,
) -> dict[str, Any]:
    """Every record of the subject a token belongs to, each read as from the client's site
    (a subject access request). Needs ``records:export`` and ``records:read``; records in
    collections the client may not read are withheld (``withheld`` counts them)."""
    from domicile.vault.export import export_subject

    out = export_subject(
        svc.vault, token, purpose=purpose, access=client_access(svc, principal, as_site)
    )
    return {
        "records": [_record(svc, r) for r in out.records],
        "refused": out.refused,
        "withheld": out.withheld,
    }


@router.post(
    "/subjects/attestation", tags=["subjects"], response_model=Attestation,
    response_model_exclude_none=True,
)  # fmt: skip
def attestation(
    body: AttestBody, svc: ServiceDep, principal: PrincipalDep, as_site: AsSite = None
) -> dict[str, Any]:
    """A proof of where the subject a token belongs to is held: its primary records at its
    home site, and at every other site nothing or a copy with the transfer entries that
    allowed it, against each site's signed commitment (``domicile attest verify``). Names
    the subject by a keyed hash only. ``since``: the verifier's heads, to prove the newer
    ones extend them. Needs ``subjects:attest`` for the client's site, the record's
    collection and the purpose, and the policy must let the client's site read the record
    (decided as a read from there, 403 with the decision otherwise); the disclosure is
    audited at the home site. 409 while a site changed since its newest commitment
    (``domicile attest commit``)."""
    from domicile.attest.service import prove

    access = client_access(svc, principal, as_site)
    return prove(
        svc.vault, token=body.token, access=access, since=body.since, purpose=body.purpose,
        audit=True,
    )  # fmt: skip


@router.get("/filings", tags=["filings"])
def list_filings(svc: ServiceDep, principal: PrincipalDep) -> list[dict[str, Any]]:
    authorize(svc, principal, "filings:read")
    return [e.to_dict() for e in svc.vault.filings.entries()]


@router.post("/filings", tags=["filings"], status_code=201)
def add_filing(body: FilingBody, svc: ServiceDep, principal: PrincipalDep) -> dict[str, Any]:
    """Put a filing on record; decisions use it at once, from its date."""
    access = client_access(svc, principal)
    return svc.vault.add_filing(body.name, body.date, note=body.note, access=access).to_dict()


@router.delete("/filings/{name}", tags=["filings"])
def withdraw_filing(name: str, svc: ServiceDep, principal: PrincipalDep) -> dict[str, Any]:
    access = client_access(svc, principal)
    return {"withdrawn": svc.vault.withdraw_filing(name, access=access).to_dict()}


@router.get("/transfers", tags=["ledger"])
def transfers(
    svc: ServiceDep,
    principal: PrincipalDep,
    since: Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}-\d{2}$")] = None,
    to: str | None = None,
    limit: Annotated[int, Query(ge=0, le=10000)] = 1000,
    masked: bool = False,
) -> dict[str, Any]:
    """The transfer ledger; masked disclosures (no transfers) counted apart, and listed
    with ``masked=true``."""
    authorize(svc, principal, "transfers:read")
    dest = country(to, what="to") if to else None
    day = parse_date(since, "since") if since else None
    out = summarize(svc.vault, since=day, to_country=dest, limit=limit, masked=masked)
    return out.to_dict()


@router.get("/parity", tags=["ledger"])
def parity(svc: ServiceDep, principal: PrincipalDep, site: str | None = None) -> dict[str, Any]:
    authorize(svc, principal, "parity:read")
    if site is not None and site not in {s.id for s in svc.vault.config.sites}:
        raise BadInput("no site of that name", hint="see /v1/sites")
    return check_parity(svc.vault, site).to_dict()


@router.get("/audit/verify", tags=["ledger"])
def audit_verify(
    svc: ServiceDep, principal: PrincipalDep, site: str | None = None
) -> dict[str, Any]:
    """Prove each site's audit chain; name the first bad entry."""
    authorize(svc, principal, "audit:read")
    reports = svc.vault.verify_audit(site)
    return {"ok": all(r.ok for r in reports), "sites": [r.to_dict() for r in reports]}


@router.get("/audit/heads", tags=["ledger"])
def audit_heads(svc: ServiceDep, principal: PrincipalDep) -> dict[str, Any]:
    """Every site's public key and newest signed tree head: a heads file to keep offline
    (``domicile audit verify --heads FILE``)."""
    authorize(svc, principal, "audit:read")
    return svc.vault.audit_heads().to_dict()


@router.get("/audit/proof", tags=["ledger"])
def audit_proof(
    svc: ServiceDep,
    principal: PrincipalDep,
    site: Annotated[str, Query(pattern=r"^[a-z][a-z0-9_]{0,31}$")],
    seq: Annotated[int, Query(ge=1)],
) -> dict[str, Any]:
    """An audit entry with its inclusion proof against the site's newest signed tree head,
    checkable with the site's public key alone."""
    authorize(svc, principal, "audit:read")
    return svc.vault.prove_entry(site, seq)


@router.post("/policy/explain", tags=["policy"])
def explain(body: ExplainBody, svc: ServiceDep, principal: PrincipalDep) -> dict[str, Any]:
    """Ask the decision engine, as ``domicile policy explain`` does."""
    authorize(svc, principal, "policy:read")
    engine: PolicyEngine = svc.vault.engine
    request = engine.request(
        subject=_evidence(body.subject), categories=body.categories, operation=body.operation,
        site_country=body.site_country, to_country=body.to_country,
        date=body.date or dt.date.today().isoformat(), filings=dict(body.filings), bases=body.bases,
        facts=dict(body.facts),
    )  # fmt: skip
    return engine.decide(request).to_dict()


@router.get("/sites", tags=["operations"])
def sites(svc: ServiceDep, principal: PrincipalDep) -> list[dict[str, Any]]:
    authorize(svc, principal, "sites:read")
    return [public_site(s.to_dict()) for s in svc.vault.sites()]


def public_site(site: dict[str, Any]) -> dict[str, Any]:
    """A site as a client sees it: the kind of its database, never its path or URL, and
    whether it answers, never why not (that is in the service's log)."""
    out = dict(site, backend=str(site["backend"]).partition(":")[0])
    if out.pop("error", None):
        out["error"] = "unavailable"
    return out


# Subjects' requests (``/v1/rights``) and retention (``/v1/retention``) live in their own
# modules; their routes are these routes (added as they are: the gate and the route labels
# list this router's routes).
from domicile.http.retention import router as _retention  # noqa: E402
from domicile.http.rights import router as _rights  # noqa: E402

router.routes.extend(_rights.routes)
router.routes.extend(_retention.routes)
