"""The serving ceiling of ``domicile bench http``: the same stack as ``domicile serve``
(FastAPI on uvicorn, uvloop and h11), the same paths and bodies, and no work at
all. Each route reads its body and answers a fixed one, so what it measures is what the
framework, the server and the client cost on this machine."""

from __future__ import annotations

from fastapi import FastAPI, Request, Response

app = FastAPI()
_PLACED = b'{"token":"dom1_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","site":"us"}'
_RECORD = b'{"token":"dom1_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","fields":{}}'
_JSON = "application/json"


@app.get("/healthz")
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type=_JSON)


@app.post("/v1/collections/{collection}/records")
async def put(collection: str, request: Request) -> Response:
    await request.body()
    return Response(_PLACED, status_code=201, media_type=_JSON)


@app.post("/v1/collections/{collection}/records/batch")
async def put_batch(collection: str, request: Request) -> Response:
    await request.body()
    return Response(b'{"records":[]}', status_code=201, media_type=_JSON)


@app.get("/v1/records/{token}")
async def get(token: str, purpose: str) -> Response:
    return Response(_RECORD, media_type=_JSON)


@app.post("/v1/read")
async def get_many(request: Request) -> Response:
    await request.body()
    return Response(b'{"records":[]}', media_type=_JSON)
