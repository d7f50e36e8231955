"""The InCountry-compatible storage API (``shared/design/incountry-api.md``), under
``/v2/storage/records/{country}``, plus ``GET /healthcheck``; the token endpoint is
``/oauth2/token`` in ``app.py``.

This module only translates HTTP; the records live in ``domicile.vault.incountry``. Every
storage call needs ``Authorization: Bearer`` (an access token or an API key) and
``x-env-id`` equal to the configuration's ``environment_id``. The path's country picks the
configured site in that country; a country without a site is refused (404, ``no_site``),
never redirected. A federation node (``serve --node``) serves its own site's country only:
another node's country is refused (421 Misdirected Request, ``other_node``, audited),
naming that node and, where the configuration gives it (``federation.nodes.ID.api``), its
address; the request is not forwarded (``docs/federation.md``).

Scopes: ``records:write`` (write, batchWrite, attachment changes), ``records:read`` (read,
find, attachment downloads and metadata), ``records:delete`` (delete, batchDelete), each
with ``site:ID`` of the country's site: the client acts at that site, so its reads are
local. Every client also needs ``purpose:incountry`` (or ``purpose:*``), as every purpose
needs its scope on the native API; ``collection:`` scopes do not apply (these records
belong to no configured collection). ``admin`` may do everything. The check is the vault's
one check (``Domicile.authorize``), as on every route; refusals are audited where the
request arrived, naming the client and the missing scope, and answered with problem
documents.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Body, Depends, Header, Request, Response
from starlette.concurrency import run_in_threadpool

from domicile.config import Site
from domicile.http import openapi, uploads
from domicile.http.deps import PrincipalDep, Service, ServiceDep, authorize, check_contract
from domicile.http.gate import upload
from domicile.http.observe import route_template
from domicile.http.problems import documented
from domicile.http.security import Forbidden, Principal, audit_refusal
from domicile.vault.incountry import (
    PURPOSE,
    Caller,
    InCountryStorage,
    check_batch,
    check_batch_delete,
    check_meta,
    check_record,
)
from domicile.vault.incountry_filters import check_find

router = APIRouter(tags=["incountry"])
PREFIX = "/v2/storage/records/{country}"
JsonBody = Annotated[Any, Body()]
STORAGE = documented(400, 401, 403, 404, 409, 410, 413, 421, 422, 429, 500, 503)

BODIES = openapi.incountry_bodies()
# The storage's own checks of a body, which say in its words what is wrong with it.
EXPLAIN: dict[str, Callable[[Any], object]] = {
    PREFIX: check_record, PREFIX + "/batchWrite": check_batch, PREFIX + "/find": check_find,
    PREFIX + "/batchDelete": check_batch_delete,
    PREFIX + "/{record_key}/attachments/{file_id}/meta": check_meta,
}  # fmt: skip


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


@dataclass(frozen=True)
class Call:
    """A storage call that passed its checks: where it goes and who makes it."""

    storage: InCountryStorage
    site: Site
    caller: Caller


def _authorize(svc: Service, principal: Principal, operation: str, site: Site) -> None:
    """The vault's one check: the operation, the path country's site (the client acts
    there) and the purpose ``incountry``; collections do not apply to these records."""
    authorize(svc, principal, operation, site=site.id, purpose=PURPOSE)


def _call(operation: str) -> Callable[..., Awaitable[Call]]:
    """The dependency of a storage call needing the scope ``operation``."""

    def dependency(
        request: Request,
        country: str,
        svc: ServiceDep,
        principal: PrincipalDep,
        x_env_id: Annotated[
            str | None, Header(description="The environment id; must be this service's")
        ] = None,
        x_encrypted_storage: Annotated[
            str | None,
            Header(description="`true`: raw keys and body, hashed and sealed by the server"),
        ] = None,
    ) -> Call:
        environment = svc.vault.config.model.environment_id
        if x_env_id != environment:
            audit_refusal(
                svc.vault, "wrong environment", client=principal.client.id,
                route=route_template(request.scope),
            )  # fmt: skip
            raise Forbidden(
                "x-env-id must name this service's environment",
                hint=f"this service is environment {environment!r}",
            )
        storage: InCountryStorage = request.app.state.incountry
        site = storage.site_for(country, client=principal.client.id)
        _authorize(svc, principal, operation, site)
        sse = (x_encrypted_storage or "").strip().lower() == "true"
        base = str(request.base_url).rstrip("/") + f"/v2/storage/records/{country}"
        return Call(storage, site, Caller(principal.client.id, sse, base))

    async def checked(request: Request, call: Call = Depends(dependency)) -> Call:
        # Who may call comes first (403, audited); then whether the call keeps to the API
        # document (422, or 400 in the storage's own words where it has them).
        await check_contract(request, explain=EXPLAIN.get(route_template(request.scope)))
        return call

    return checked


Writer = Annotated[Call, Depends(_call("records:write"))]
Reader = Annotated[Call, Depends(_call("records:read"))]
Deleter = Annotated[Call, Depends(_call("records:delete"))]


@router.get("/healthcheck", summary="InCountry-compatible health check")
def healthcheck() -> dict[str, str]:
    return {"result": "ok"}


@router.post(
    PREFIX, status_code=201, summary="Write (upsert) one record", responses=STORAGE,
    openapi_extra=_body(BODIES[""]),
)  # fmt: skip
def write(call: Writer, body: JsonBody) -> dict[str, Any]:
    return call.storage.write(call.site, [body], call.caller, batch=False)[0]


@router.post(
    PREFIX + "/batchWrite", status_code=201, summary="Write (upsert) 1 to 100 records",
    responses=STORAGE,
    openapi_extra=_body(BODIES["/batchWrite"]),
)  # fmt: skip
def batch_write(call: Writer, body: JsonBody) -> dict[str, Any]:
    check_batch(body)
    return {"records": call.storage.write(call.site, body["records"], call.caller, batch=True)}


@router.post(
    PREFIX + "/find", summary="Find records by filter", responses=STORAGE,
    openapi_extra=_body(BODIES["/find"]),
)  # fmt: skip
def find(call: Reader, body: JsonBody) -> dict[str, Any]:
    return call.storage.find(call.site, body, call.caller)


@router.post(
    PREFIX + "/batchDelete", summary="Delete records by record_key", responses=STORAGE,
    openapi_extra=_body(BODIES["/batchDelete"]),
)  # fmt: skip
def batch_delete(call: Deleter, body: JsonBody) -> dict[str, Any]:
    call.storage.batch_delete(call.site, body, call.caller)
    return {}


@router.get(PREFIX + "/{record_key}", summary="Read one record", responses=STORAGE)
def read(call: Reader, record_key: str) -> dict[str, Any]:
    return call.storage.read(call.site, record_key, call.caller)


@router.delete(PREFIX + "/{record_key}", summary="Delete one record", responses=STORAGE)
def delete(call: Deleter, record_key: str) -> dict[str, Any]:
    call.storage.delete(call.site, [record_key], call.caller, batch=False)
    return {}


async def _attach(call: Call, request: Request, record_key: str, *, upsert: bool) -> dict[str, Any]:
    """Find the record and decide before reading the body; then seal the file as it
    arrives; then write it."""
    svc: Service = request.app.state.service
    upload = await run_in_threadpool(
        call.storage.begin_upload, call.site, record_key, caller=call.caller, upsert=upsert,
        max_bytes=svc.settings.max_attachment_bytes,
    )  # fmt: skip
    await uploads.receive(request, upload)
    return await run_in_threadpool(call.storage.finish_upload, upload)


@router.post(
    PREFIX + "/{record_key}/attachments", status_code=201, summary="Add an attachment",
    responses=STORAGE, openapi_extra=uploads.SCHEMA,
)  # fmt: skip
@upload
async def add_attachment(call: Writer, record_key: str, request: Request) -> dict[str, Any]:
    return await _attach(call, request, record_key, upsert=False)


@router.put(
    PREFIX + "/{record_key}/attachments",
    status_code=201,
    summary="Add an attachment, or replace the record's attachment of the same file name",
    responses=STORAGE,
    openapi_extra=uploads.SCHEMA,
)
@upload
async def upsert_attachment(call: Writer, record_key: str, request: Request) -> dict[str, Any]:
    return await _attach(call, request, record_key, upsert=True)


@router.get(
    PREFIX + "/{record_key}/attachments/{file_id}", summary="Download an attachment",
    response_class=Response,
    responses={**STORAGE, 200: {"description": "The file, as its MIME type", "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}}},
)  # fmt: skip
def get_attachment(call: Reader, record_key: str, file_id: str) -> Response:
    meta, data = call.storage.attachment(
        call.site, record_key, file_id, call.caller, with_data=True
    )
    disposition = "attachment; filename*=UTF-8''" + quote(meta["filename"], safe="")
    return Response(
        content=data or b"",
        media_type=meta["mime_type"],
        headers={"Content-Disposition": disposition},
    )


@router.get(
    PREFIX + "/{record_key}/attachments/{file_id}/meta", summary="An attachment's metadata",
    responses=STORAGE,
)  # fmt: skip
def get_attachment_meta(call: Reader, record_key: str, file_id: str) -> dict[str, Any]:
    meta, _ = call.storage.attachment(call.site, record_key, file_id, call.caller, with_data=False)
    return meta


@router.patch(
    PREFIX + "/{record_key}/attachments/{file_id}/meta",
    summary="Change an attachment's file name or MIME type",
    responses=STORAGE,
    openapi_extra=_body(BODIES["/{record_key}/attachments/{file_id}/meta"]),
)
def update_attachment_meta(
    call: Writer, record_key: str, file_id: str, body: JsonBody
) -> dict[str, Any]:
    return call.storage.update_attachment_meta(call.site, record_key, file_id, body, call.caller)


@router.delete(
    PREFIX + "/{record_key}/attachments/{file_id}", status_code=204, summary="Delete an attachment",
    responses=STORAGE,
)  # fmt: skip
def delete_attachment(call: Writer, record_key: str, file_id: str) -> Response:
    call.storage.delete_attachment(call.site, record_key, file_id, call.caller)
    return Response(status_code=204)
