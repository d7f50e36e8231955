"""The InCountry-compatible storage API (``shared/design/incountry-api.md``), under
``/v2/storage/records/{country}``, plus ``GET /healthcheck``; the token endpoint is
``/oauth2/token`` in ``app.py``.

This module only translates HTTP; the records live in ``domicile.vault.incountry``. Every
storage call needs ``Authorization: Bearer`` (an access token or an API key) and
``x-env-id`` equal to the configuration's ``environment_id``. The path's country picks the
configured site in that country; a country without a site is refused (404, ``no_site``),
never redirected.

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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Body, Depends, File, Header, Request, Response, UploadFile

from domicile.config import Site
from domicile.errors import BadInput
from domicile.http.app import PrincipalDep, Service, ServiceDep, authorize
from domicile.http.problems import documented
from domicile.http.security import Forbidden, Principal, audit_refusal
from domicile.vault.incountry import (
    BODY_KEYS,
    INT_KEYS,
    MAX_ATTACHMENT_BYTES,
    MAX_BATCH,
    PURPOSE,
    STRING_KEYS,
    Caller,
    InCountryStorage,
)

router = APIRouter(tags=["incountry"])
PREFIX = "/v2/storage/records/{country}"
JsonBody = Annotated[Any, Body()]
STORAGE = documented(400, 401, 403, 404, 409, 422, 500, 503)

_RECORD: dict[str, Any] = {
    "type": "object",
    "required": ["record_key"],
    "properties": {
        **{k: {"type": ["string", "null"], "maxLength": 256} for k in STRING_KEYS},
        "record_key": {"type": "string", "minLength": 1, "maxLength": 256},
        **{k: {"type": ["string", "null"]} for k in BODY_KEYS},
        **{k: {"type": ["integer", "null"], "format": "int64"} for k in INT_KEYS},
        "is_encrypted": {"type": ["boolean", "null"]},
        "expires_at": {"type": ["string", "null"], "format": "date-time"},
        # Set by the server; accepted (records read back can be written back) and ignored.
        **{k: {"readOnly": True} for k in ("created_at", "updated_at", "attachments")},
    },
    "additionalProperties": False,
}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


_FIND = {
    "type": "object",
    "properties": {
        "filter": {"type": "object", "description": "the InCountry filter language"},
        "options": {
            "type": "object",
            "properties": {
                "limit": {"type": "integer", "minimum": 1, "maximum": 100},
                "offset": {"type": "integer", "minimum": 0},
                "sort": {"type": "array", "items": {"type": "object"}},
            },
        },
    },
}


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


def _call(operation: str) -> Callable[..., Call]:
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
                svc.vault, "wrong environment", client=principal.client.id, route="incountry"
            )
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

    return dependency


Writer = Annotated[Call, Depends(_call("records:write"))]
Reader = Annotated[Call, Depends(_call("records:read"))]
Deleter = Annotated[Call, Depends(_call("records:delete"))]


@router.get("/healthcheck", summary="InCountry-compatible health check")
def healthcheck() -> dict[str, str]:
    return {"result": "ok"}


@router.post(
    PREFIX, status_code=201, summary="Write (upsert) one record", responses=STORAGE,
    openapi_extra=_body(_RECORD),
)  # fmt: skip
def write(call: Writer, body: JsonBody) -> dict[str, Any]:
    return call.storage.write(call.site, [body], call.caller, batch=False)[0]


@router.post(
    PREFIX + "/batchWrite", status_code=201, summary="Write (upsert) 1 to 100 records",
    responses=STORAGE,
    openapi_extra=_body({"type": "object", "required": ["records"], "properties": {"records": {"type": "array", "minItems": 1, "maxItems": MAX_BATCH, "items": _RECORD}}}),
)  # fmt: skip
def batch_write(call: Writer, body: JsonBody) -> dict[str, Any]:
    if (
        not isinstance(body, dict)
        or set(body) != {"records"}
        or not isinstance(body["records"], list)
    ):
        raise BadInput('a batch is {"records": [...]}')
    return {"records": call.storage.write(call.site, body["records"], call.caller, batch=True)}


@router.post(
    PREFIX + "/find", summary="Find records by filter", responses=STORAGE,
    openapi_extra=_body(_FIND),
)  # fmt: skip
def find(call: Reader, body: JsonBody = None) -> dict[str, Any]:
    return call.storage.find(call.site, body, call.caller)


@router.post(
    PREFIX + "/batchDelete", summary="Delete records by record_key", responses=STORAGE,
    openapi_extra=_body({"type": "object", "required": ["filter"], "properties": {"filter": {"type": "object", "properties": {"record_key": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": MAX_BATCH}}}}}),
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


def _attach(call: Call, record_key: str, file: UploadFile, *, upsert: bool) -> dict[str, Any]:
    data = file.file.read(MAX_ATTACHMENT_BYTES + 1)
    return call.storage.add_attachment(
        call.site, record_key, filename=file.filename, mime_type=file.content_type, data=data,
        upsert=upsert, caller=call.caller,
    )  # fmt: skip


@router.post(
    PREFIX + "/{record_key}/attachments", status_code=201, summary="Add an attachment",
    responses=STORAGE,
)  # fmt: skip
def add_attachment(
    call: Writer, record_key: str, file: Annotated[UploadFile, File()]
) -> dict[str, Any]:
    return _attach(call, record_key, file, upsert=False)


@router.put(
    PREFIX + "/{record_key}/attachments",
    status_code=201,
    summary="Add an attachment, or replace the record's attachment of the same file name",
    responses=STORAGE,
)
def upsert_attachment(
    call: Writer, record_key: str, file: Annotated[UploadFile, File()]
) -> dict[str, Any]:
    return _attach(call, record_key, file, upsert=True)


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
    openapi_extra=_body(
        {
            "type": "object",
            "properties": {"filename": {"type": "string"}, "mime_type": {"type": "string"}},
        }
    ),
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
