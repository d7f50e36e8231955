"""Attachment uploads, streamed: the multipart body is parsed as it arrives and the part
named ``file`` goes straight into its ``Upload`` (sealed piece by piece). No copy of the
plaintext is held whole in memory or spooled to a temporary file, as a framework's form
parser would do for any file over a megabyte.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from domicile.errors import BadInput
from domicile.vault.incountry import Upload

MAX_HEADER_BYTES = 16 * 1024  # the headers of one part
FIELD = "file"

SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FIELD],
                    "properties": {FIELD: {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _missing() -> RequestValidationError:
    return RequestValidationError(
        [{"type": "missing", "loc": ("body", FIELD), "msg": "Field required", "input": None}]
    )


class _Parts:
    """The callbacks of the multipart parser: headers of each part, then its data."""

    def __init__(self, upload: Upload) -> None:
        self.upload = upload
        self.found = False
        self.in_file = False
        self._name = b""
        self._value = b""
        self._headers: dict[bytes, bytes] = {}
        self._header_bytes = 0

    def on_part_begin(self) -> None:
        self.in_file = False
        self._headers = {}
        self._header_bytes = 0

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._grow(end - start)
        self._name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._grow(end - start)
        self._value += data[start:end]

    def _grow(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > MAX_HEADER_BYTES:
            raise BadInput(f"a multipart part has more than {MAX_HEADER_BYTES} bytes of headers")

    def on_header_end(self) -> None:
        self._headers[self._name.lower()] = self._value
        self._name = self._value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if options.get(b"name") != FIELD.encode() or self.found:
            return  # another form field, or a second file: read and dropped
        filename = options.get(b"filename")
        mime = self._headers.get(b"content-type")
        self.upload.start(
            _text(filename) if filename else None, _text(mime).strip() if mime else None
        )
        self.found = self.in_file = True

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.in_file:
            self.upload.write(data[start:end])

    def on_part_end(self) -> None:
        self.in_file = False


async def receive(request: Request, upload: Upload) -> None:
    """Feed the request's multipart body into ``upload``."""
    kind, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise _missing()
    parts = _Parts(upload)
    callbacks: Any = {
        "on_part_begin": parts.on_part_begin,
        "on_part_data": parts.on_part_data,
        "on_part_end": parts.on_part_end,
        "on_header_field": parts.on_header_field,
        "on_header_value": parts.on_header_value,
        "on_header_end": parts.on_header_end,
        "on_headers_finished": parts.on_headers_finished,
    }
    try:
        parser = MultipartParser(boundary, callbacks)
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except FormParserError:
        raise BadInput(
            "the upload is not valid multipart/form-data", hint="send one part named file"
        ) from None
    if not parts.found:
        raise _missing()
