"""Subjects' requests over HTTP, under ``/v1/rights`` (the CLI's ``domicile rights``).

``rights:read`` lists and shows requests; ``rights:write`` opens, fulfils, extends,
lifts the block of, and closes them (and so reads, corrects and erases a subject's data: a scope for the
data-protection office's tools). The client acts as itself, within its scopes: a request
concerns the sites holding its subject (every site, to open one), and the client needs
the scope of each (``site:ID``) to see it or act on it; steps need the purpose of the
request's kind (``purpose:subject_access``, ...); ``fulfil`` acts from the client's site
(``as_site``), within its collections, and its reads are decided as reads from there.
Every check is ``domicile.rights``'s, through ``Domicile.authorize``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from domicile.http.deps import PrincipalDep, ServiceDep, authorize, client_access
from domicile.http.problems import ALL

router = APIRouter(responses=ALL)

Kind = Literal["access", "rectification", "erasure", "restriction", "withdrawal", "portability"]
Channel = Literal["email", "post", "web", "phone", "in_person", "api", "other"]
Verified = Literal[
    "identity_document", "account_login", "email_confirmation", "phone_confirmation",
    "signed_letter", "in_person", "representative_authority", "other",
]  # fmt: skip
Outcome = Literal["fulfilled", "partly_fulfilled", "refused", "no_data", "withdrawn_by_subject"]
Day = Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}$", examples=["2026-12-01"])]
RequestId = Annotated[str, Path(pattern=r"^rq_[0-9a-f]{12}$", examples=["rq_0123456789ab"])]
Reason = Annotated[str, Field(min_length=1, max_length=500, pattern=r"\S")]
AsSite = Annotated[
    str | None,
    Query(description="The site the client acts from (default: its only site, else the local one)"),
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RightsOpenBody(_Body):
    kind: Kind
    # Identifying fields (by name) and their values; the document lists the fields.
    identity: dict[str, str | int | bool] = Field(min_length=1)
    checked_by: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$", examples=["dpo.kim"])
    verified_how: Verified
    via: Channel = "api"
    received: Day | None = None


class RightsFulfilBody(_Body):
    fields: dict[str, str | int | bool] = {}  # rectification: the corrected values
    erase: bool = False  # withdrawal of consent: erase the data too


class RightsExtendBody(_Body):
    reason: Reason


class RightsLiftBody(_Body):
    reason: Reason


class RightsCloseBody(_Body):
    outcome: Outcome
    reason: Reason | None = None


@router.post("/rights", tags=["rights"], status_code=201)
def open_request(body: RightsOpenBody, svc: ServiceDep, principal: PrincipalDep) -> dict[str, Any]:
    """Open a subject's request: the subject is found at every site through the identity
    blind indexes, and the deadline set from the laws that cover it (the earliest binds)."""
    from domicile.rights import open_request as run

    identity = {
        k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in body.identity.items()
    }
    return run(
        svc.vault, body.kind, identity, checked_by=body.checked_by,
        verified_how=body.verified_how, via=body.via, received=body.received,
        access=client_access(svc, principal),
    )  # fmt: skip


@router.get("/rights", tags=["rights"])
def list_requests(
    svc: ServiceDep,
    principal: PrincipalDep,
    due_before: Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}-\d{2}$")] = None,
    status: Literal["open", "extended", "closed", "overdue"] | None = None,
) -> list[dict[str, Any]]:
    """Requests on record, soonest due first."""
    from domicile.rights import list_requests as run

    access = authorize(svc, principal, "rights:read")
    return run(
        svc.vault.config, due_before=due_before, status=status, today=svc.vault.clock().date(),
        access=access,
    )  # fmt: skip


@router.get("/rights/{request_id}", tags=["rights"])
def show(request_id: RequestId, svc: ServiceDep, principal: PrincipalDep) -> dict[str, Any]:
    """One request: where the subject's data is, the deadlines and the laws that set
    them, and its history. A request about a site the client may not act at answers 404."""
    from domicile.rights import show as run

    access = authorize(svc, principal, "rights:read")
    return run(
        svc.vault.config, request_id, today=svc.vault.clock().date(), vault=svc.vault,
        access=access,
    )  # fmt: skip


@router.post("/rights/{request_id}/fulfil", tags=["rights"])
def fulfil(
    request_id: RequestId,
    body: RightsFulfilBody,
    svc: ServiceDep,
    principal: PrincipalDep,
    as_site: AsSite = None,
) -> dict[str, Any]:
    """Do what the request asks at every site that holds the subject, as the client acting
    from its site. ``result`` is the subject's data (access, portability: each record read
    as ``GET /v1/records`` reads it for this client, full, masked or listed in
    ``refused``) or the signed act of destruction (erasure)."""
    from domicile.rights import fulfil as run

    fields = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in body.fields.items()}
    req, result = run(
        svc.vault, request_id, fields=fields, erase=body.erase,
        access=client_access(svc, principal, as_site),
    )  # fmt: skip
    return {"request": req, "result": result}


@router.post("/rights/{request_id}/extend", tags=["rights"])
def extend(
    request_id: RequestId, body: RightsExtendBody, svc: ServiceDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Extend the deadline as the binding law allows (once), with a reasoned notice."""
    from domicile.rights import extend as run

    return run(svc.vault, request_id, reason=body.reason, access=client_access(svc, principal))


@router.post("/rights/{request_id}/lift", tags=["rights"])
def lift(
    request_id: RequestId, body: RightsLiftBody, svc: ServiceDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Lift the block a restriction or a withdrawal of consent placed, at every site that
    holds it. (Closing a restriction request lifts it too; a withdrawal stays until lifted.)"""
    from domicile.rights import lift as run

    return run(svc.vault, request_id, reason=body.reason, access=client_access(svc, principal))


@router.post("/rights/{request_id}/close", tags=["rights"])
def close(
    request_id: RequestId, body: RightsCloseBody, svc: ServiceDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Close the request with its outcome (a refusal gives its reasons)."""
    from domicile.rights import close as run

    return run(
        svc.vault, request_id, outcome=body.outcome, reason=body.reason,
        access=client_access(svc, principal),
    )  # fmt: skip
