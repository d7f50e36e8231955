"""The InCountry-compatible storage API (placeholder router; see ``shared/design/incountry-api.md``)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["incountry"])


@router.get("/healthcheck", summary="InCountry-compatible health check")
def healthcheck() -> dict[str, str]:
    return {"result": "ok"}
