"""The record routes' fast path (``domicile.http.fast``) answers exactly what the FastAPI
endpoints answer: the same status and the same document for well-formed requests, and for
anything else the application's own answer, since it hands those requests over."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from domicile.deploy.starter import init
from domicile.http import fast
from domicile.http.app import create_app
from domicile.vault import Domicile

US = {"subject": {"citizenship": "US"}, "fields": {"full_name": "Jane Roe"}, "purpose": "signup"}


def _shape(value: Any) -> Any:
    """A document with its tokens and times blanked (they differ from run to run)."""
    if isinstance(value, dict):
        return {k: "*" if k in ("token", "date") else _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return value


def _answers(folder: Path) -> list[tuple[int, Any, str]]:
    """Well-formed requests to the four record routes, then refusals of each kind."""
    folder.mkdir()
    app = create_app(Domicile(init(folder)))
    _, key = app.state.service.clients.add("ops", ["admin"], api_key=True)
    admin = {"Authorization": f"Bearer {key}"}
    with TestClient(app) as client:
        return _requests(client, admin)


def test_the_record_routes_answer_alike_on_both_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: list[str] = []
    check = fast.FastRecords._check

    def counted(self: fast.FastRecords, route: fast.FastRoute, *args: Any) -> Any:
        out = check(self, route, *args)
        if out is not None:
            served.append(route.template)
        return out

    monkeypatch.setattr(fast.FastRecords, "_check", counted)
    answers = _answers(tmp_path / "fast")
    # The well-formed requests took the fast path: the four that succeed, and the read of
    # a token that names no record (the vault refuses it, and the application's handler
    # answers); none that the document or a model refuses did.
    assert len(served) == 5
    monkeypatch.setattr(fast, "ROUTES", {})  # every request through FastAPI
    assert _answers(tmp_path / "fastapi") == answers
    assert [a[0] for a in answers] == [
        201,
        201,
        200,
        200,
        422,
        422,
        422,
        422,
        422,
        400,
        422,
        422,
        404,
        422,
    ]


def _requests(client: TestClient, admin: dict[str, str]) -> list[tuple[int, Any, str]]:
    answers = []
    put = client.post("/v1/collections/profiles/records", json=US, headers=admin)
    answers.append((put.status_code, _shape(put.json()), put.headers["content-type"]))
    token = put.json()["token"]
    batch = client.post(
        "/v1/collections/profiles/records/batch",
        json={"records": [{k: US[k] for k in ("subject", "fields")}] * 2, "purpose": "signup"},
        headers=admin,
    )
    answers.append((batch.status_code, _shape(batch.json()), batch.headers["content-type"]))
    got = client.get(f"/v1/records/{token}", params={"purpose": "view"}, headers=admin)
    answers.append((got.status_code, _shape(got.json()), got.headers["content-type"]))
    many = client.post(
        "/v1/read", json={"tokens": [token, "dom1_" + "A" * 43], "purpose": "view"},
        headers=admin,
    )  # fmt: skip
    answers.append((many.status_code, _shape(many.json()), many.headers["content-type"]))
    # Refusals: by the document, by the model, by the vault.
    for method, url, kwargs in [
        ("POST", "/v1/collections/profiles/records", {"json": {**US, "purpose": "Bad Purpose"}}),
        ("POST", "/v1/collections/profiles/records", {"json": {**US, "extra": 1}}),
        ("POST", "/v1/collections/profiles/records", {"content": b"{not json", "headers": {"content-type": "application/json"}}),
        ("POST", "/v1/collections/profiles/records", {"data": {"purpose": "x"}}),
        ("POST", "/v1/collections/nothing/records", {"json": US}),
        ("POST", "/v1/collections/profiles/records", {"json": {**US, "subject": {"citizenship": "XX"}}}),
        ("GET", f"/v1/records/{token}", {}),
        ("GET", f"/v1/records/{token}", {"params": {"purpose": "view", "as_site": "mars"}}),
        ("GET", "/v1/records/dom1_" + "A" * 43, {"params": {"purpose": "view"}}),
        ("POST", "/v1/read", {"json": {"tokens": [], "purpose": "view"}}),
    ]:  # fmt: skip
        headers = {**admin, **kwargs.pop("headers", {})}
        r = client.request(method, url, headers=headers, **kwargs)
        answers.append((r.status_code, _shape(r.json()), r.headers["content-type"]))
    return answers
