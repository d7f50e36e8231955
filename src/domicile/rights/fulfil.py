"""Doing what a subject's request asks, at every site that holds the subject.

- access, portability: every record of the subject, read where it is kept (so no border
  is crossed), as one package (JSON; ``render.access_html`` makes the readable page);
- rectification: the given fields changed in every record that has them; the copies
  abroad follow through the outbox, which is drained at once (``copies`` says where it
  could not be);
- erasure (and withdrawal with ``erase``): the subject erased at every site holding it,
  its keys destroyed first, its copies with it; a signed destruction act is the answer;
- restriction, withdrawal: the vault has no processing block yet; the step records that
  the operator restricted (or stopped) the processing in the application.

Each step is audited at every site it touched and recorded in the request's history
(counts, sites and audit entry numbers, never a value).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from domicile.access import Access
from domicile.errors import Conflict
from domicile.rights.service import PURPOSE, _event, changing
from domicile.stores.base import SiteUnavailable
from domicile.vault import values
from domicile.vault.replication import Replicator

if TYPE_CHECKING:
    from domicile.vault import Domicile


def _home_records(vault: Domicile, holding: Mapping[str, Any]) -> list[Any]:
    colls = vault.config.model.collections
    return [
        r
        for r in vault.store(holding["site"]).subject_records(holding["subject"])
        if not r.is_replica and r.collection in colls
    ]


def _actor(vault: Domicile, access: Access) -> Access:
    """Who performs the steps: the caller by name, with the rights a request needs (the
    ``rights:write`` scope was checked); the steps act from each record's own site."""
    return Access.operator(access.client)


def fulfil(
    vault: Domicile,
    request_id: str,
    *,
    fields: Mapping[str, str] | None = None,
    erase: bool = False,
    access: Access | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Fulfil the request; returns it and, for access and portability, the package (for
    erasure, the destruction act)."""
    access = access or vault.operator
    with changing(vault, request_id, access) as req:
        package = _fulfil(vault, req, fields, erase, access)
    return req, package


def _fulfil(
    vault: Domicile,
    req: dict[str, Any],
    fields: Mapping[str, str] | None,
    erase: bool,
    access: Access,
) -> dict[str, Any] | None:
    kind = req["kind"]
    if fields and kind != "rectification":
        raise Conflict("corrected fields are for rectification requests only")
    if erase and kind != "withdrawal":
        raise Conflict("`erase` is for withdrawal of consent (erasure requests always erase)")
    if any(h["step"] == "fulfil" for h in req["history"]) and kind in ("erasure",):
        raise Conflict("the request was fulfilled already", hint="close it with its outcome")
    actor = _actor(vault, access)
    if kind in ("access", "portability"):
        package, detail = _access(vault, req, actor)
    elif kind == "rectification":
        package, detail = None, _rectify(vault, req, dict(fields or {}), actor)
    elif kind == "erasure" or (kind == "withdrawal" and erase):
        package, detail = _erase(vault, req, actor)
    else:
        package, detail = None, {"recorded": kind, "vault_block": False}
    _event(vault, req, "fulfil", access.client, **detail)
    return package


def _access(
    vault: Domicile, req: dict[str, Any], actor: Access
) -> tuple[dict[str, Any], dict[str, Any]]:
    purpose = PURPOSE[req["kind"]]
    out: list[dict[str, Any]] = []
    copies = []
    for h in req["subject"]["holdings"]:
        site = vault.config.site(h["site"])
        for rec in _home_records(vault, h):
            token = vault.tokens.issue(site.id, rec.record_id)
            r = vault._read(token, site, rec, site, purpose, actor.acting_from(site.id))
            out.append(
                {
                    "collection": r.collection,
                    "site": r.site,
                    "country": r.country,
                    "version": r.version,
                    "fields": r.fields,
                    "categories": {
                        f: vault.collection(r.collection).fields[f].category
                        for f in r.fields
                        if f in vault.collection(r.collection).fields
                    },
                }
            )
        if h["copies"]:
            copies.append({"site": h["site"], "country": h["country"], "copies": h["copies"]})
    package = {
        "request": req["id"],
        "kind": req["kind"],
        "format": "domicile.subject-data.v1",
        "generated_at": vault.clock().isoformat(),
        "records": out,
        "copies_held_at": copies,
    }
    detail = {"records": len(out), "sites": sorted({r["site"] for r in out})}
    return package, detail


def _rectify(
    vault: Domicile, req: dict[str, Any], fields: dict[str, str], actor: Access
) -> dict[str, Any]:
    if not fields:
        raise Conflict(
            "a rectification needs the corrected fields",
            hint="e.g. --field city=Kazan (the field's new value)",
        )
    plan = []
    known: set[str] = set()
    for h in req["subject"]["holdings"]:
        for rec in _home_records(vault, h):
            coll = vault.collection(rec.collection)
            mine = {k: v for k, v in fields.items() if k in coll.fields}
            known.update(mine)
            if mine:
                # Checked before anything changes: a bad value stops the whole request.
                values.check_fields(rec.collection, coll, mine, partial=True)
                plan.append((h["site"], rec, mine))
    unknown = sorted(set(fields) - known)
    if unknown:
        raise Conflict(
            f"no record of the subject has the field(s) {', '.join(map(repr, unknown))}",
            hint="name fields of the collections that hold the subject's records",
        )
    for site_id, rec, mine in plan:
        token = vault.tokens.issue(site_id, rec.record_id)
        vault.update(
            token, fields=mine, purpose=PURPOSE["rectification"],
            access=actor.acting_from(site_id),
        )  # fmt: skip
    report = Replicator(vault, client=actor.client).run_once(reconcile=False)
    return {
        "records": len(plan),
        "fields": sorted(known),
        "sites": sorted({s for s, _, _ in plan}),
        "copies_pending": sorted(set(report.unavailable)),
    }


def _erase(
    vault: Domicile, req: dict[str, Any], actor: Access
) -> tuple[dict[str, Any], dict[str, Any]]:
    from domicile.rights.acts import destruction_act

    destroyed = []
    marks = _audit_marks(vault)
    for h in req["subject"]["holdings"]:
        records = _home_records(vault, h)
        if not records:
            continue
        categories = sorted({c for r in records for c in vault._field_categories(r).values()})
        collections = sorted({r.collection for r in records})
        token = vault.tokens.issue(h["site"], records[0].record_id)
        result = vault.erase(token, purpose=PURPOSE["erasure"], access=actor.acting_from(h["site"]))
        destroyed.append(
            {
                "site": h["site"],
                "country": h["country"],
                "subject": h["subject"],
                "records": result["records"],
                "collections": collections,
                "categories": categories,
                "key_destroyed": result["key_destroyed"],
                "copies_deleted": result["copies"]["deleted"],
                "copies_pending": result["copies"]["pending"],
                "at": vault.clock().isoformat(),
            }
        )
    subjects = {d["subject"] for d in destroyed}
    extract = _log_extract(vault, marks, subjects)
    act = destruction_act(vault, req, destroyed, extract, performed_by=actor.client)
    detail = {
        "records": sum(d["records"] for d in destroyed),
        "sites": [d["site"] for d in destroyed],
        "keys_destroyed": sum(1 for d in destroyed if d["key_destroyed"]),
        "copies_pending": sorted({s for d in destroyed for s in d["copies_pending"]}),
        "act": act["act"]["id"],
    }
    req.setdefault("acts", []).append(act)
    return act, detail


def _audit_marks(vault: Domicile) -> dict[str, int]:
    """Each answering site's last audit entry number, before the erasure."""
    marks = {}
    for site in vault.config.sites:
        try:
            with vault.store(site.id).transaction() as tx:
                marks[site.id] = tx.audit_head()[0]
        except SiteUnavailable:
            vault._drop(site.id)
    return marks


def _log_extract(
    vault: Domicile, marks: Mapping[str, int], subjects: set[str]
) -> list[dict[str, Any]]:
    """The audit entries, appended since ``marks``, that erased or deleted these subjects'
    data: site, entry number, hash, action, time (the entries hold no values)."""
    out = []
    for site_id, mark in marks.items():
        try:
            rows = list(vault.store(site_id).audit(mark + 1))
        except SiteUnavailable:
            vault._drop(site_id)
            continue
        for row in rows:
            entry = json.loads(row.payload)
            if entry.get("subject") in subjects and entry.get("action") in ("erase", "delete"):
                out.append(
                    {
                        "site": site_id, "seq": row.seq, "hash": row.hash.hex(),
                        "action": entry["action"], "at": entry.get("at"),
                        "records": (entry.get("detail") or {}).get("records"),
                    }
                )  # fmt: skip
    return out


def as_json(package: Mapping[str, Any]) -> str:
    return json.dumps(package, ensure_ascii=False, indent=2, sort_keys=True) + "\n"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
