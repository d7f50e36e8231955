"""The OpenAPI document says what the server enforces, and the server enforces the document.

FastAPI describes the shapes of the routes. ``harden`` adds what only the deployment knows
and what the gate and the handlers enforce:

- how to authenticate: ``securitySchemes`` (a bearer token: an access token from the OAuth2
  client-credentials flow, or a static API key) and, on each operation that needs a
  client, its ``security``;
- ``x-env-id``: required on every InCountry storage call, and only this environment's id;
- the vocabulary: the countries of the deployment's sites (InCountry paths), ISO 3166-1
  codes, sites and collections by id, the collections' fields with their types, subject
  evidence, record tokens, filing names and facts (from the packs), dates, and the
  InCountry records, find requests and filter language.

Then ``Contract`` holds the document compiled (``jsonschema-rs``): every request's path and
query parameters and JSON body are checked against it before the handler runs, so a
request the document refuses is refused (422), by construction. Two formats the document
names are checked by the handlers, as no schema can: ``phone`` (a number in international
format that belongs to a country) and ``identity-document`` (``TYPE:NUMBER`` with its
checksum).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema_rs
import pycountry

from domicile.config import Config, FieldSpec
from domicile.packs import Operation
from domicile.policy import PolicyEngine
from domicile.residency.resolver import EVIDENCE_KEYS
from domicile.vault.values import EMAIL_PATTERN

# A record token: "dom1_" and the base64url of a sealed (site, record id), at most 200 long.
TOKEN = {"type": "string", "pattern": r"^dom1_[A-Za-z0-9_-]{20,195}$"}
DAY = {"type": "string", "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", "format": "date"}
# A date, with or without a time, with or without an offset (naive means UTC), that stays
# inside years 1 to 9999 once moved to UTC: what ``vault.incountry_filters.parse_time`` reads. Month
# lengths and leap years are in the pattern, so that any string it admits is a real date.
_YEAR = r"(?:000[2-9]|00[1-9][0-9]|0[1-9][0-9][0-9]|[1-8][0-9]{3}|9[0-8][0-9][0-9]|99[0-8][0-9]|999[0-8])"
_LEAP = r"(?:[0-9][0-9](?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_DATE = (
    rf"(?:{_YEAR}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    rf"|02-(?:0[1-9]|1[0-9]|2[0-8]))|{_LEAP}-02-29)"
)
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,6})?)?"
_OFFSET = r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
DATE_TIME = {
    "type": "string",
    "pattern": rf"^{_DATE}(?:T{_TIME}{_OFFSET}?)?$",
    "description": "ISO 8601: a date, or a date-time (with an offset, else UTC)",
}
SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"oauth2": []}]
INT64 = {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}
NAME = {  # a file name or MIME type: one line, not blank
    "type": "string",
    "minLength": 1,
    "maxLength": 255,
    "pattern": r"^[^\x00\r\n]*[^\s\x00][^\x00\r\n]*$",
}
PHONE = {
    "type": "string",
    "format": "phone",
    "pattern": r"^\+[0-9][0-9 ()./-]{2,40}$",
    "description": "international format, e.g. +49 30 1234567 (a number of some country)",
}


def document_schema() -> dict[str, Any]:
    from domicile.residency.documents import DOCUMENTS

    kinds = "|".join(sorted(DOCUMENTS))
    return {
        "type": "string",
        "format": "identity-document",
        "pattern": f"^(?:{kinds}):[0-9A-Za-z .-]{{1,40}}$",
        "description": "TYPE:NUMBER, e.g. ru_inn:7707083893 (the number must pass its checksum)",
    }


def _null(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {"anyOf": [dict(schema), {"type": "null"}]}


def _one_or_many(schema: Mapping[str, Any], *, most: int | None = None) -> dict[str, Any]:
    many: dict[str, Any] = {"type": "array", "items": dict(schema), "minItems": 1}
    if most is not None:
        many["maxItems"] = most
    return {"anyOf": [dict(schema), many]}


def _codes() -> list[str]:
    return sorted(c.alpha_2 for c in pycountry.countries)


def _any_case(code: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" for c in code)


def country_schema() -> dict[str, Any]:
    codes = _codes()
    return {"type": "string", "enum": codes + [c.lower() for c in codes]}


def filing_pattern(names: Iterable[str]) -> str:
    """Every filing name the packs define, ``{country}`` being an ISO code in any case."""
    names = list(names)
    fixed = sorted(re.escape(n) for n in names if "{country}" not in n)
    per_country = sorted(
        re.escape(n.removesuffix(".{country}")) for n in names if n.endswith(".{country}")
    )
    codes = "|".join(_any_case(c) for c in _codes())
    parts = [*fixed]
    if per_country:
        parts.append(f"(?:{'|'.join(per_country)})\\.(?:{codes})")
    return f"^(?:{'|'.join(parts)})$"


def evidence_schema() -> dict[str, Any]:
    """What the service accepts about a subject (see ``residency``)."""
    code = f"(?:{'|'.join(_any_case(c) for c in _codes())})"
    one_country = {"type": "string", "pattern": f"^{code}$"}
    countries = {"type": "string", "pattern": f"^{code}(?:,{code})*$"}
    address = {"anyOf": [{"type": "string", "format": "ipv4"}, {"type": "string", "format": "ipv6"}]}  # fmt: skip
    props = {
        "citizenship": _one_or_many(countries),
        "residence": one_country,
        "located_at_collection": one_country,
        "phone": PHONE,
        "ip": address,
        "document": _one_or_many(document_schema()),
    }
    assert set(props) == set(EVIDENCE_KEYS)
    return {"type": "object", "properties": props, "additionalProperties": False}


def field_schema(spec: FieldSpec) -> dict[str, Any]:
    if spec.type == "integer":
        return {"type": "integer"}
    if spec.type == "boolean":
        return {"type": "boolean"}
    if spec.type == "date":
        return dict(DAY)
    if spec.normalize == "phone":
        # The length bound is in the pattern: a fuzzer makes boundary-length strings from a
        # maxLength, which a format (a real number) cannot follow.
        most = max(3, min(40, spec.max_length) - 2)
        return {**PHONE, "pattern": rf"^\+[0-9][0-9 ()./-]{{2,{most}}}$"}
    if spec.normalize == "email":
        return {"type": "string", "maxLength": spec.max_length, "pattern": EMAIL_PATTERN}
    return {"type": "string", "maxLength": spec.max_length, "pattern": r"^[^\x00]*$"}


def fields_schema(
    config: Config, *, required: bool, searchable_only: bool = False, clearing: bool = False
) -> dict[str, Any]:
    """The fields of the deployment's collections (one collection in most deployments;
    with several, the union of their fields). ``clearing`` (an update): null clears a
    field that no collection requires."""
    props: dict[str, Any] = {}
    needed: list[set[str]] = []
    for coll in config.model.collections.values():
        for name, spec in coll.fields.items():
            if searchable_only and not spec.searchable:
                continue
            props.setdefault(name, field_schema(spec))
        needed.append({n for n, s in coll.fields.items() if s.required})
    if clearing:
        kept = set().union(*needed) if needed else set()
        props = {n: (sch if n in kept else _null(sch)) for n, sch in props.items()}
    out: dict[str, Any] = {
        "type": "object", "properties": props, "additionalProperties": False, "minProperties": 1,
    }  # fmt: skip
    if required and needed:
        out["required"] = sorted(set.intersection(*needed))
    return out


def identity_schema(config: Config) -> dict[str, Any]:
    """The fields that identify a subject (``identifies: true``), by name: what a
    subject's request may find the subject by."""
    from domicile.rights.service import PROFILE_KEY

    props = {
        name: field_schema(spec)
        for coll in config.model.collections.values()
        for name, spec in coll.fields.items()
        if spec.identifies
    }
    props[PROFILE_KEY] = {
        "type": "string", "minLength": 1, "maxLength": 256,
        "description": "The InCountry API's profile key, as the application sends it: finds "
        "the records written through that API for it.",
    }  # fmt: skip
    return {
        "type": "object",
        "properties": props,
        "additionalProperties": False,
        "minProperties": 1,
    }


def explain_schema(engine: PolicyEngine, base: Mapping[str, Any]) -> dict[str, Any]:
    country = country_schema()
    facts: dict[str, Any] = {}
    for name, decl in engine.packs.facts().items():
        facts[name] = {
            "bool": {"type": "boolean"},
            "int": {"type": "integer", "minimum": 0},
            "country": country,
            "str": {"type": "string", "maxLength": 200},
        }[decl.type]
    props = dict(base.get("properties", {}))
    props.update(
        subject=evidence_schema(),
        categories={
            "type": "array", "minItems": 1,
            "items": {"type": "string", "enum": sorted(engine.packs.taxonomy.labels)},
        },
        operation={"type": "string", "enum": [o.value for o in Operation]},
        site_country=country,
        to_country=_null(country),
        date=_null(DAY),
        filings={
            "type": "object", "default": {},
            "propertyNames": {"pattern": filing_pattern(engine.packs.filing_names())},
            "additionalProperties": DAY,
        },
        bases={"type": "array", "default": [], "items": {"type": "string", "enum": sorted(engine.packs.bases())}},
        facts={"type": "object", "default": {}, "properties": facts, "additionalProperties": False},
    )  # fmt: skip
    reads = [Operation.transfer.value, Operation.retrieve.value]
    return {
        **base,
        "properties": props,
        # A transfer names its destination; only a transfer or a read from abroad has one.
        "allOf": [
            {
                "if": {"properties": {"operation": {"const": "transfer"}}, "required": ["operation"]},
                "then": {"required": ["to_country"], "properties": {"to_country": country}},
            },
            {
                "if": {"properties": {"operation": {"not": {"enum": reads}}}, "required": ["operation"]},
                "then": {"properties": {"to_country": {"type": "null"}}},
            },
        ],
    }  # fmt: skip


# --- the InCountry storage API ----------------------------------------------------------


def incountry_record() -> dict[str, Any]:
    from domicile.vault.incountry import BODY_KEYS, MAX_BODY_CHARS
    from domicile.vault.incountry_filters import INT_KEYS, STRING_KEYS

    return {
        "type": "object",
        "required": ["record_key"],
        "properties": {
            **{k: _null({"type": "string", "maxLength": 256}) for k in STRING_KEYS},
            "record_key": {"type": "string", "minLength": 1, "maxLength": 256},
            **{k: _null({"type": "string", "maxLength": MAX_BODY_CHARS}) for k in BODY_KEYS},
            **{k: _null(INT64) for k in INT_KEYS},
            "is_encrypted": _null({"type": "boolean"}),
            "expires_at": _null(DATE_TIME),
            # Set by the server; accepted (records read back can be written back) and ignored.
            **{k: {"readOnly": True} for k in ("created_at", "updated_at", "attachments")},
        },
        "additionalProperties": False,
    }


def incountry_filter() -> dict[str, Any]:
    """The find filter language (``vault.incountry_filters.parse_filter``)."""
    from domicile.vault.incountry_filters import (
        DATE_KEYS,
        INT_KEYS,
        NULLABLE,
        SEARCH_KEYS,
        SEARCH_MAX,
        SEARCH_MIN,
        STRING_KEYS,
    )  # fmt: skip

    def ops(value: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
        return {
            "type": "object", "minProperties": 1, "additionalProperties": False,
            "properties": {n: dict(value) for n in names},
            "not": {"anyOf": [{"required": ["$gt", "$gte"]}, {"required": ["$lt", "$lte"]}]},
        }  # fmt: skip

    text = {"type": "string"}
    null = {"type": "null"}

    def cond(key: str, value: Mapping[str, Any], ranges: bool) -> dict[str, Any]:
        """A value, a non-empty list (any of), or operators; ``null`` (has no value) and
        ``{"$not": null}`` (has a value) on every key a record may lack."""
        some = _one_or_many(value)["anyOf"]
        nullable = [null] if key in NULLABLE else []
        operator = ops(value, ["$gt", "$gte", "$lt", "$lte"] if ranges else [])
        operator["properties"]["$not"] = {"anyOf": [*some, *nullable]}
        if key in SEARCH_KEYS:
            operator["properties"]["$like"] = text
        return {"anyOf": [*some, *nullable, operator]}

    branch = {
        "type": "object", "minProperties": 1, "additionalProperties": False,
        "properties": {k: cond(k, text, ranges=False) for k in STRING_KEYS},
    }  # fmt: skip
    props = {
        **{k: cond(k, text, ranges=False) for k in STRING_KEYS},
        **{k: cond(k, {"type": "integer"}, ranges=True) for k in INT_KEYS},
        **{k: cond(k, DATE_TIME, ranges=True) for k in DATE_KEYS},
        "search_keys": {"type": "string", "minLength": SEARCH_MIN, "maxLength": SEARCH_MAX},
        "$or": {"type": "array", "minItems": 2, "items": branch},
    }
    return {
        "type": "object",
        "description": "the InCountry filter language",
        "properties": props,
        "additionalProperties": False,
        # search_keys searches key1-20 itself: it is not combined with them, nor with $or.
        "allOf": [
            {
                "if": {"required": ["search_keys"]},
                "then": {"properties": {k: False for k in (*SEARCH_KEYS, "$or")}},
            }
        ],
    }


def incountry_find() -> dict[str, Any]:
    from domicile.vault.incountry_filters import FIND_LIMIT, SORT_KEYS

    sort_item = {
        "type": "object", "minProperties": 1, "maxProperties": 1, "additionalProperties": False,
        "properties": {k: {"type": "string", "enum": ["asc", "desc"]} for k in SORT_KEYS},
    }  # fmt: skip
    return {
        "type": "object",
        "properties": {
            "filter": _null(incountry_filter()),
            "options": _null(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "limit": _null({"type": "integer", "minimum": 1, "maximum": FIND_LIMIT}),
                        "offset": _null({"type": "integer", "minimum": 0}),
                        "sort": _null({"type": "array", "items": sort_item}),
                    },
                }
            ),
        },
        "additionalProperties": False,
    }


def incountry_bodies() -> dict[str, dict[str, Any]]:
    """Request bodies of the storage calls, by the last part of their path templates."""
    from domicile.vault.incountry import MAX_BATCH

    record = incountry_record()
    return {
        "": record,
        "/batchWrite": {
            "type": "object", "required": ["records"], "additionalProperties": False,
            "properties": {"records": {"type": "array", "minItems": 1, "maxItems": MAX_BATCH, "items": record}},
        },
        "/find": incountry_find(),
        "/batchDelete": {
            "type": "object", "required": ["filter"], "additionalProperties": False,
            "properties": {
                "filter": {
                    "type": "object", "required": ["record_key"], "additionalProperties": False,
                    "properties": {
                        "record_key": {
                            "type": "array", "minItems": 1, "maxItems": MAX_BATCH,
                            "items": {"type": "string", "minLength": 1},
                        }
                    },
                }
            },
        },
        "/{record_key}/attachments/{file_id}/meta": {
            "type": "object", "minProperties": 1, "additionalProperties": False,
            "properties": {"filename": NAME, "mime_type": NAME},
        },
    }  # fmt: skip


# --- the whole document -----------------------------------------------------------------


def harden(
    spec: dict[str, Any],
    config: Config,
    engine: PolicyEngine,
    authenticated: set[tuple[str, str]],
) -> dict[str, Any]:
    """Add the deployment's contract to the generated document (in place, once)."""
    components = spec.setdefault("components", {})
    if "securitySchemes" in components:
        return spec
    components["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "An access token from /oauth2/token, or a static API key.",
        },
        "oauth2": {
            "type": "oauth2",
            "description": "Client credentials (HTTP Basic); the token is sent as a bearer.",
            "flows": {"clientCredentials": {"tokenUrl": "/oauth2/token", "scopes": {}}},
        },
    }
    site = {"type": "string", "enum": sorted(s.id for s in config.sites)}
    filing = {"type": "string", "pattern": filing_pattern(engine.packs.filing_names())}

    for path, operations in spec.get("paths", {}).items():
        for method, op in operations.items():
            if (method.upper(), path) in authenticated:
                op["security"] = SECURITY
            for param in op.get("parameters", []):
                name, where = param["name"], param["in"]
                new: dict[str, Any] | None = None
                if name == "x-env-id" and where == "header":
                    param["required"] = True
                    new = {"type": "string", "enum": [config.model.environment_id]}
                elif name == "x-encrypted-storage" and where == "header":
                    new = {"type": "string", "enum": ["true", "false"]}
                elif name == "country" and where == "path":
                    # Any country may be asked for; one without a site is refused (404).
                    new = {"type": "string", "pattern": "^[a-z]{2}$"}
                elif name == "token":
                    new = TOKEN
                elif name == "collection" and where == "path":
                    new = {"type": "string", "enum": sorted(config.model.collections)}
                elif name in ("as_site", "site") and where == "query":
                    # A repeatable site (``?site=ru&site=de``) is a list of them.
                    old = param.get("schema", {})
                    kinds = [s.get("type") for s in [old, *old.get("anyOf", [])]]
                    new = {"type": "array", "items": site} if "array" in kinds else site
                elif name == "name" and path.startswith("/v1/filings/"):
                    new = filing
                elif name in ("since", "due_before", "as_of"):
                    new = DAY
                elif name == "to" and path == "/v1/transfers":
                    new = country_schema()
                if new is not None:
                    old = param.get("schema", {})
                    param["schema"] = {**copy.deepcopy(new), **{k: old[k] for k in ("title", "default") if k in old}}  # fmt: skip

    schemas = components.get("schemas", {})
    evidence = evidence_schema()
    for model in schemas.values():
        props = model.get("properties", {})
        if "subject" in props:
            props["subject"] = copy.deepcopy(evidence)
        if "token" in props:
            props["token"] = dict(TOKEN)
        if "tokens" in props:
            props["tokens"]["items"] = dict(TOKEN)
        if "as_site" in props:
            props["as_site"] = _null(site)
    for model, fields, required in (
        ("PutBody", "fields", True), ("BatchItem", "fields", True),
        ("UpdateBody", "fields", False),
    ):  # fmt: skip
        if model in schemas:
            schemas[model]["properties"][fields] = fields_schema(
                config, required=required, clearing=model == "UpdateBody"
            )
    if "FindBody" in schemas:
        where = fields_schema(config, required=False, searchable_only=True)
        schemas["FindBody"]["properties"]["where"] = where
    if "RightsOpenBody" in schemas:
        schemas["RightsOpenBody"]["properties"]["identity"] = identity_schema(config)
        schemas["RightsOpenBody"]["properties"]["received"] = _null(DAY)
    if "RightsFulfilBody" in schemas:
        corrected = fields_schema(config, required=False)
        corrected.pop("minProperties")
        schemas["RightsFulfilBody"]["properties"]["fields"] = corrected
    if "RetentionRunBody" in schemas:
        sites = schemas["RetentionRunBody"]["properties"]["sites"]
        sites["anyOf"][0]["items"] = dict(site)
        sites["anyOf"][0]["uniqueItems"] = True
    if "FilingBody" in schemas:
        schemas["FilingBody"]["properties"]["name"] = filing
        schemas["FilingBody"]["properties"]["date"] = DAY
    if "ExplainBody" in schemas:
        schemas["ExplainBody"] = explain_schema(engine, schemas["ExplainBody"])
    return spec


# --- the server keeps to it ---------------------------------------------------------------


def _admits_text(schema: Mapping[str, Any]) -> bool:
    if schema.get("type") == "string":
        return True
    return any(_admits_text(s) for s in schema.get("anyOf", []))


@dataclass
class _Operation:
    params: list[tuple[str, str, Any]] = field(default_factory=list)  # (name, in, validator)
    body: Any = None


class Contract:
    """The hardened document compiled: a validator per operation's text parameters and
    JSON body."""

    def wants_body(self, method: str, template: str) -> bool:
        op = self._ops.get((method, template))
        return op is not None and op.body is not None

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self._ops: dict[tuple[str, str], _Operation] = {}
        components = spec.get("components", {})
        for path, operations in spec.get("paths", {}).items():
            for method, op in operations.items():
                compiled = _Operation()
                for p in op.get("parameters", []):
                    schema = p.get("schema", {})
                    # x-env-id is the storage calls' own check: refused 403, and audited.
                    checked = p["in"] in ("path", "query", "header") and p["name"] != "x-env-id"
                    if checked and _admits_text(schema):
                        compiled.params.append((p["name"], p["in"], self._compile(schema, components)))  # fmt: skip
                content = op.get("requestBody", {}).get("content", {})
                if "application/json" in content:
                    body = content["application/json"].get("schema")
                    if body:
                        compiled.body = self._compile(body, components)
                self._ops[(method.upper(), path)] = compiled

    @staticmethod
    def _compile(schema: Mapping[str, Any], components: Mapping[str, Any]) -> Any:
        root = {**schema, "components": components}  # "#/components/..." resolves in it
        return jsonschema_rs.Draft202012Validator(root, validate_formats=True)

    def problems(
        self,
        method: str,
        template: str,
        params: Mapping[str, Mapping[str, str]],  # "path", "query", "header": name -> value
        body: Any = None,
        has_body: bool = False,
    ) -> list[dict[str, Any]]:
        """Where the request breaks the document (empty when it keeps to it): locations
        and the kind of problem, never the values."""
        op = self._ops.get((method, template))
        if op is None:
            return []
        out = []
        for name, where, validator in op.params:
            value = params[where].get(name)
            if value is not None and not validator.is_valid(value):
                out.append(
                    {"type": "contract", "loc": (where, name), "msg": _what(validator, value)}
                )
        if has_body and op.body is not None:
            for error in op.body.iter_errors(body):
                loc = ("body", *error.instance_path)
                out.append({"type": "contract", "loc": loc, "msg": _kind(error)})
                if len(out) >= 20:
                    break
        return out


def _kind(error: Any) -> str:
    kind = type(error.kind).__name__
    return f"does not match the API document ({kind})"


def _what(validator: Any, value: Any) -> str:
    return next((_kind(e) for e in validator.iter_errors(value)), "invalid")
