"""Finding 6: no request size limit, and bodies parsed before authentication (an
unauthenticated 100 MB JSON took 3.5 GB).

Each attack starts sending a body far over the service's cap, over a raw socket, and
reads the answer while the body is still going out: the service must refuse (401 for a
stranger, 413 for a client) before the client has finished sending, and its memory must
not grow with what was sent."""

from __future__ import annotations

import select
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from .conftest import Running

JSON_CAP = 64 * 1024
FILE_CAP = 4 * 1024 * 1024
HUGE = 100 * 1024 * 1024
PIECE = b"x" * 65536
OPTIONS = ("--max-json-bytes", str(JSON_CAP), "--max-attachment-bytes", str(FILE_CAP))


@pytest.fixture
def served(serve: Callable[..., Running]) -> Running:
    return serve(*OPTIONS)


def rss_peak_kb(served: Running) -> int:
    assert served.proc is not None
    with open(f"/proc/{served.proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


@contextmanager
def connection(served: Running) -> Iterator[socket.socket]:
    sock = socket.create_connection(("127.0.0.1", served.port), timeout=30)
    try:
        yield sock
    finally:
        sock.close()


def send_until_answered(
    sock: socket.socket, head: bytes, total: int, *, chunked: bool = False
) -> tuple[int, int]:
    """Send ``head``, then up to ``total`` body bytes, stopping as soon as the service
    answers. Returns (the answer's status, body bytes sent by then)."""
    sock.sendall(head)
    sent = 0
    while sent < total:
        readable, writable, _ = select.select([sock], [sock], [], 10)
        if readable:
            break
        if not writable:
            continue
        piece = (b"%x\r\n" % len(PIECE) + PIECE + b"\r\n") if chunked else PIECE
        try:
            sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += len(PIECE)
    answer = b""
    while b"\r\n" not in answer:
        more = sock.recv(4096)
        assert more, "the service closed the connection without answering"
        answer += more
    return int(answer.split(b" ", 2)[1]), sent


def request_head(path: str, headers: dict[str, str], length: int | None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(
        f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    )
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


PUT = "/v1/collections/profiles/records"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_stranger_is_refused_before_its_body_is_read(served: Running, chunked: bool) -> None:
    before = rss_peak_kb(served)
    with connection(served) as sock:
        status, sent = send_until_answered(
            sock, request_head(PUT, {}, None if chunked else HUGE), HUGE, chunked=chunked
        )
    assert status == 401
    assert sent < HUGE // 4  # answered while most of the body was still to come
    assert rss_peak_kb(served) - before < 50_000  # and nothing of it was held
    refusal = served.refusals()[-1]
    assert refusal["detail"]["reason"] == "no credentials"
    assert refusal["detail"]["route"] == "/v1/collections/{collection}/records"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_client_is_refused_a_body_over_the_cap(served: Running, chunked: bool) -> None:
    before = rss_peak_kb(served)
    auth = {"Authorization": f"Bearer {served.admin_key}"}
    with connection(served) as sock:
        status, sent = send_until_answered(
            sock, request_head(PUT, auth, None if chunked else HUGE), HUGE, chunked=chunked
        )
    assert status == 413
    assert sent < HUGE // 4
    assert rss_peak_kb(served) - before < 50_000


def record(served: Running, key: str) -> None:
    with served.http() as http:
        r = http.post("/v2/storage/records/us", json={"record_key": key}, headers=served.admin)
        assert r.status_code == 201, r.text


def test_attachments_have_their_own_cap(served: Running) -> None:
    record(served, "k")
    url = "/v2/storage/records/us/k/attachments"
    with served.http() as http:
        # Over the JSON cap, under the attachment cap: an attachment may be that large...
        content = b"attachment-secret-" + b"z" * (JSON_CAP * 4)
        r = http.post(url, files={"file": ("a.bin", content)}, headers=served.admin)
        assert r.status_code == 201, r.text
        assert r.json()["size"] == len(content)
        got = http.get(f"{url}/{r.json()['file_id']}", headers=served.admin)
        assert got.content == content
        # ...a JSON body may not.
        big = {"record_key": "k2", "body": "y" * (JSON_CAP * 2)}
        r = http.post("/v2/storage/records/us", json=big, headers=served.admin)
        assert r.status_code == 413
        assert r.json()["code"] == "body_too_large"
        # An attachment over its cap is refused, and nothing is attached.
        r = http.post(url, files={"file": ("b.bin", b"w" * (FILE_CAP + 1))}, headers=served.admin)
        assert r.status_code == 413, r.text
        meta = http.get("/v2/storage/records/us/k", headers=served.admin).json()
        assert [a["filename"] for a in meta["attachments"]] == ["a.bin"]
    # The file was sealed on its way in: its bytes are nowhere at rest.
    assert not any(b"attachment-secret-" in f.read_bytes() for f in served.data_files())


def test_an_attachment_stream_over_its_cap_is_cut_off(served: Running) -> None:
    record(served, "k")
    boundary = "b0undary"
    head = (
        f"POST /v2/storage/records/us/k/attachments HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {served.admin_key}\r\nx-env-id: default\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    part = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="f.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    before = rss_peak_kb(served)
    with connection(served) as sock:
        sock.sendall(head + b"%x\r\n" % len(part) + part + b"\r\n")
        status, sent = send_until_answered(sock, b"", HUGE, chunked=True)
    assert status == 413
    assert sent < HUGE // 4
    assert rss_peak_kb(served) - before < 50_000
    with served.http() as http:
        meta = http.get("/v2/storage/records/us/k", headers=served.admin).json()
    assert meta["attachments"] == []


def test_caps_come_from_the_configuration_too(serve: Callable[..., Running]) -> None:
    served = serve(config=f"service: {{max_json_bytes: {JSON_CAP}}}")
    with served.http() as http:
        body = {"record_key": "k", "body": "v" * JSON_CAP}
        r = http.post("/v2/storage/records/us", json=body, headers=served.admin)
        assert r.status_code == 413
        assert r.json()["detail"] == f"this route takes at most {JSON_CAP} bytes"
        r = http.post("/v2/storage/records/us", json={"record_key": "k"}, headers=served.admin)
        assert r.status_code == 201
