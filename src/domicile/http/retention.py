"""Retention over HTTP, under ``/v1/retention`` (the CLI's ``domicile retention``).

``retention:read`` reads the plan; ``retention:run`` runs the destruction of what is due
(or, with ``dry_run``, says what would go). Destroying data is its own scope, apart from
``records:erase``, so that a client for the application's erasures cannot run it, nor a
scheduler that runs it read records. The client acts within its scopes: the sites it names
(every site when it names none) need ``site:ID`` each, the collections with a retention
``collection:NAME`` each, and a run the purpose ``retention``. Every check is
``domicile.retention.service.authorize``'s, through ``Domicile.authorize``; plan and run
are the CLI's own functions, audited the same way (the client is named in each entry and
in the act of destruction).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from domicile.http.deps import PrincipalDep, ServiceDep, client_access
from domicile.http.problems import ALL
from domicile.policy import parse_date

router = APIRouter(responses=ALL)
SiteId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$", examples=["ru"])]


class RetentionRunBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dry_run: bool = False  # only say what would go; write nothing
    # The sites to run at (default: every site); the client needs the scope of each.
    sites: list[SiteId] | None = Field(default=None, min_length=1, max_length=64)


@router.get("/retention/plan", tags=["retention"])
def plan(
    svc: ServiceDep,
    principal: PrincipalDep,
    site: Annotated[
        list[str] | None,
        Query(description="A site to plan for (repeat for several; default: every site)"),
    ] = None,
    as_of: Annotated[
        str | None,
        Query(pattern=r"^\d{4}-\d{2}-\d{2}$", description="Plan as of this day (default: now)"),
    ] = None,
) -> dict[str, Any]:
    """What retention destroys now and later, per collection and site: counts of records
    and fields due, records kept by legal holds and by restrictions, the next date and a
    month-by-month schedule. Never values; writes nothing."""
    from domicile.retention import plan as run

    when = None
    if as_of is not None:
        when = dt.datetime.combine(parse_date(as_of, "as_of"), dt.time(), dt.UTC)
    return run(svc.vault, now=when, sites=site, access=client_access(svc, principal))


@router.post("/retention/run", tags=["retention"])
def run(body: RetentionRunBody, svc: ServiceDep, principal: PrincipalDep) -> dict[str, Any]:
    """Destroy what is due at the sites named (default: every site), as ``domicile
    retention run`` does: records by crypto-shredding, fields by sealing their record again
    without them where a legal hold keeps the rest; a restricted subject's data is kept.
    Each destruction is audited, naming the client; ``act`` is the id of the signed act of
    destruction the run made (null when nothing was destroyed). A site that does not
    answer is listed in ``unavailable``; run again when it is back."""
    from domicile.retention import run as destroy

    return destroy(
        svc.vault, dry_run=body.dry_run, sites=body.sites, access=client_access(svc, principal)
    )
