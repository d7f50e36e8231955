"""Field values: checked against the collection before anything is written.

Every problem with a write is found here, before a single byte is stored, so a bad
record (or one bad record in a batch) leaves nothing half-written. Messages name the
field, never the value.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from typing import Any

import phonenumbers

from domicile.config import Collection, FieldSpec
from domicile.errors import BadInput

MAX_FIELDS_BYTES = 1_000_000
# A field normalized as e-mail holds one address: a local part, "@", a domain with a dot.
# The published OpenAPI document carries the same pattern, so the service and every
# client agree on what is refused. The space characters are spelled out: ``\s`` means
# more in Python than in the document's (ECMA-262) regular expressions.
EMAIL_PATTERN = r"^[^@ \t\n\r\f\v\x00]{1,64}@[^@ \t\n\r\f\v\x00.]+(\.[^@ \t\n\r\f\v\x00.]+)+$"
_EMAIL = re.compile(EMAIL_PATTERN)


class InvalidField(BadInput):
    code = "invalid_field"


def _utf8(name: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidField(
            f"field {name!r} is not valid UTF-8 text", hint="send UTF-8 text"
        ) from None
    if "\x00" in value:
        raise InvalidField(
            f"field {name!r} contains a NUL character", hint="remove control characters"
        )


def coerce(name: str, spec: FieldSpec, value: Any) -> Any:
    """The value in its declared type, or ``InvalidField``. Strings from the CLI are parsed."""
    if value is None:
        raise InvalidField(f"field {name!r} is null", hint="leave the field out instead")
    if spec.type == "string":
        if not isinstance(value, str):
            raise InvalidField(f"field {name!r} must be text, not {type(value).__name__}")
        _utf8(name, value)
        if len(value) > spec.max_length:
            raise InvalidField(
                f"field {name!r} is longer than its limit of {spec.max_length} characters",
                hint="shorten it, or raise max_length in the configuration",
            )
        if spec.normalize == "email" and not _EMAIL.fullmatch(value):  # fullmatch: no "\n" before $
            raise InvalidField(
                f"field {name!r} is not an e-mail address",
                hint="write it as name@domain, e.g. someone@example.org",
            )
        return value
    if spec.type == "integer":
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                raise InvalidField(f"field {name!r} must be a whole number") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidField(f"field {name!r} must be a whole number")
        return value
    if spec.type == "boolean":
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise InvalidField(f"field {name!r} must be true or false")
        return value
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value).isoformat()
        except ValueError:
            pass
    raise InvalidField(f"field {name!r} must be a date, YYYY-MM-DD")


def check_fields(
    collection_name: str,
    collection: Collection,
    fields: Mapping[str, Any],
    *,
    partial: bool = False,
    clear: bool = False,
) -> dict[str, Any]:
    """The fields, each in its declared type. ``partial``: required fields may be absent
    (an update, a search); ``clear``: None clears a field that is not required (an update)."""
    if type(fields) is not dict and not isinstance(fields, Mapping):
        raise InvalidField("fields must be a mapping of field names to values")
    if not fields:
        raise InvalidField("give at least one field", hint="e.g. --field email=...")
    out: dict[str, Any] = {}
    specs, required = _plan(collection)
    for name, value in fields.items():
        hit = specs.get(name) if type(name) is str or isinstance(name, str) else None
        if hit is None:
            raise InvalidField(
                f"collection {collection_name!r} has no such field",
                hint=f"its fields are: {', '.join(specs)}",
            )
        spec, text, max_length, email = hit
        if value is None and clear:
            if spec.required:
                raise InvalidField(
                    f"field {name!r} is required: it can be changed, not cleared",
                    hint=f"give a new value, e.g. --field {name}=...",
                )
            out[name] = None
            continue
        if (
            text
            and type(value) is str
            and value.isascii()  # ASCII: valid UTF-8 by construction
            and len(value) <= max_length
            and "\x00" not in value
            and (not email or _EMAIL.fullmatch(value))  # fullmatch: no "\n" before $
        ):
            out[name] = value  # what ``coerce`` returns for such a value, checked the same way
            continue
        out[name] = coerce(name, spec, value)
    if not partial:
        missing = [n for n in required if n not in out]
        if missing:
            raise InvalidField(f"required field(s) missing: {', '.join(missing)}")
    return out


# Each collection's fields as ``check_fields`` reads them on every record: the spec, whether
# it holds text, its length limit and whether it is an e-mail address, read out of the
# (frozen) configuration once; and the required fields, in order.
_Plan = tuple[dict[str, tuple[FieldSpec, bool, int, bool]], tuple[str, ...]]
_PLANS: dict[int, tuple[Collection, _Plan]] = {}


def _plan(collection: Collection) -> _Plan:
    hit = _PLANS.get(id(collection))
    if hit is not None and hit[0] is collection:  # the entry keeps it alive: ids stay unique
        return hit[1]
    specs = {
        name: (spec, spec.type == "string", spec.max_length, spec.normalize == "email")
        for name, spec in collection.fields.items()
    }
    required = tuple(n for n, s in collection.fields.items() if s.required)
    if len(_PLANS) >= 256:
        _PLANS.clear()
    _PLANS[id(collection)] = (collection, (specs, required))
    return specs, required


def encode(value: Any) -> bytes:
    """A value as bytes with a one-letter type tag: s(tring), i(nteger), b(oolean), j(son)."""
    if isinstance(value, str):
        return b"s" + value.encode("utf-8")
    if isinstance(value, bool):
        return b"b1" if value else b"b0"
    if isinstance(value, int):
        return b"i" + str(value).encode()
    return b"j" + json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode(raw: bytes) -> Any:
    tag, body = raw[:1], raw[1:]
    if tag == b"s":
        return body.decode("utf-8")
    if tag == b"b":
        return body == b"1"
    if tag == b"i":
        return int(body)
    return json.loads(body.decode("utf-8"))


def normalize(name: str, spec: FieldSpec, value: Any) -> str:
    """The form a value is indexed (and searched) under."""
    text = value if isinstance(value, str) else json.dumps(value)
    if spec.normalize in ("lower", "email"):
        return text.strip().lower()
    if spec.normalize == "phone":
        try:
            parsed = phonenumbers.parse(text, None)
        except phonenumbers.NumberParseException:
            raise InvalidField(
                f"field {name!r} is not a phone number in international format",
                hint="write it with its country code, e.g. +49 30 1234567",
            ) from None
        return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))
    return text
