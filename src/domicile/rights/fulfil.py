"""Doing what a subject's request asks, at every site that holds the subject.

Who acts: the local operator (the CLI, the SDK) acts at each record's own site, so nothing
crosses a border. A client of the API acts as itself: from its own site (``as_site``),
within its own site, collection and purpose scopes, ``rights:write`` standing for the one
record operation the step needs (read, write or erase). Every record is checked through
``Domicile.authorize`` before anything is read or changed, and then read, corrected or
erased by the vault's own operations, which check again: a client's read is decided as a
read from its site (a transfer the law permits, a masked disclosure, or a refusal).

- access, portability: every record of the subject, as one package (JSON;
  ``render.access_html`` makes the readable page); a record the law does not let go to
  the caller's site is listed in ``refused`` (site, collection and the reason);
- rectification: the given fields changed in every record that has them; the copies
  abroad follow through the outbox, which is drained at once (``copies`` says where it
  could not be);
- erasure (and withdrawal with ``erase``): the subject erased at every site holding it,
  its keys destroyed first, its copies with it; a signed destruction act is the answer;
- restriction, withdrawal (without ``erase``): the subject is blocked at every site that
  holds it (``blocks.py``): the vault itself then refuses what the block stops, in the
  one check of every route and command (``Domicile.check_blocks``).

The record operations of a step run as a step of this request (``rights_step``): a
subject's blocks never stop its own requests, and the operations' audit entries say so.

Each step is audited at every site it touched and recorded in the request's history
(counts, sites and audit entry numbers, never a value).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from domicile.access import Access
from domicile.errors import Conflict, NodeUnavailable
from domicile.rights.blocks import place
from domicile.rights.service import PURPOSE, _event, authorize_request, changing, relocate
from domicile.stores.base import SiteUnavailable
from domicile.vault import values
from domicile.vault.core import rights_step
from domicile.vault.errors import PolicyRefused
from domicile.vault.incountry import CATEGORY as INCOUNTRY_CATEGORY
from domicile.vault.incountry import COLLECTION as INCOUNTRY
from domicile.vault.incountry import Caller, InCountryStorage
from domicile.vault.replication import Replicator

if TYPE_CHECKING:
    from domicile.vault import Domicile


@dataclass(frozen=True)
class _Primary:
    """One of the subject's records at its home site, as a step needs it: no values."""

    record_id: str
    collection: str
    categories: tuple[str, ...]


def _home_records(
    vault: Domicile, holding: Mapping[str, Any], access: Access, purpose: str
) -> list[_Primary]:
    """The subject's primaries at the holding's site: read there, or (on a node, at
    another site) as listed by that site's node, which keeps the records."""
    site_id = holding["site"]
    if not vault.is_here(site_id):
        try:
            answer = vault.subject_at(
                site_id, purpose=purpose, access=access, subjects=[holding["subject"]]
            )
        except NodeUnavailable as exc:
            raise SiteUnavailable(
                site_id, exc.message,
                hint="nothing more was done: fulfil the request again once the node is back",
            ) from None  # fmt: skip
        return [
            _Primary(p["record"], p["collection"], tuple(p["categories"]))
            for a in answer
            if a["subject"] == holding["subject"]
            for p in a["primaries"]
        ]
    colls = vault.config.model.collections
    out = []
    for r in vault.store(site_id).subject_records(holding["subject"]):
        if r.is_replica:
            continue
        if r.collection in colls:
            categories = tuple(sorted(set(vault._field_categories(r).values())))
            out.append(_Primary(r.record_id, r.collection, categories))
        elif r.collection == INCOUNTRY:  # the InCountry API's (its files go with them)
            out.append(_Primary(r.record_id, r.collection, (INCOUNTRY_CATEGORY,)))
    return out


Actor = Callable[[str], Access]  # the caller, as it acts on a record of this site
# The record operation each kind of step performs (``rights:write`` stands for it).
STEP_OPERATION = {
    "access": "records:read", "portability": "records:read",
    "rectification": "records:write", "erasure": "records:erase", "withdrawal": "records:erase",
}  # fmt: skip


def _actor(vault: Domicile, access: Access, operation: str) -> Actor:
    """Who performs the steps on a record of a given site. The local operator (every
    right): at that site, by name. A client: from its own site, with its own scopes, and
    ``operation`` (the record operation of the step, which ``rights:write`` allows)."""
    if access.scopes is None:  # on a node: from its own site, wherever the record is
        node = vault.node
        return lambda site_id: access.acting_from(
            site_id if node is None or vault.is_here(site_id) else node
        )
    caller, _ = vault._acting(access, None)
    assert caller.scopes is not None
    acting = replace(caller, scopes=caller.scopes | {operation})
    return lambda site_id: acting


def _check_records(vault: Domicile, req: dict[str, Any], actor: Actor, purpose: str) -> None:
    """Every record the step will touch, through the one check, before any is touched:
    the caller's site, each record's collection and the step's purpose."""
    for h in req["subject"]["holdings"]:
        who = actor(h["site"])
        for rec in _home_records(vault, h, who, purpose):
            vault.authorize(
                who, "rights:write", site=who.site, collection=rec.collection, purpose=purpose
            )


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
    # Where the subject is now: its ids looked up again at every site (copies made since
    # the request was opened); the caller must be allowed at every site found.
    req["subject"]["holdings"] = relocate(
        vault, req["subject"]["holdings"], access=access, purpose=PURPOSE[kind]
    )
    req["subject"]["searched_at"] = vault.clock().isoformat()
    authorize_request(vault, access, "rights:write", req)
    operation = STEP_OPERATION.get(kind if kind != "withdrawal" or erase else "")
    actor = _actor(vault, access, operation or "rights:write")
    purpose = PURPOSE["erasure" if operation == "records:erase" else kind]
    if operation is not None:
        _check_records(vault, req, actor, purpose)
    subjects = {h["subject"] for h in req["subject"]["holdings"]}
    with rights_step(req["id"], kind, purpose, subjects):
        if kind in ("access", "portability"):
            package, detail = _access(vault, req, actor)
        elif kind == "rectification":
            package, detail = None, _rectify(vault, req, dict(fields or {}), actor)
        elif kind == "erasure" or (kind == "withdrawal" and erase):
            package, detail = _erase(vault, req, actor)
        else:
            package, detail = None, place(vault, req, access)
    _event(vault, req, "fulfil", access.client, access=access, **detail)
    return package


def _access(
    vault: Domicile, req: dict[str, Any], actor: Actor
) -> tuple[dict[str, Any], dict[str, Any]]:
    purpose = PURPOSE[req["kind"]]
    out: list[dict[str, Any]] = []
    refused: list[dict[str, Any]] = []
    copies = []
    for h in req["subject"]["holdings"]:
        site = vault.config.site(h["site"])
        primaries = _home_records(vault, h, actor(site.id), purpose)
        out += _incountry_data(vault, site, primaries, actor(site.id), purpose, refused)
        for rec in primaries:
            if rec.collection == INCOUNTRY:
                continue
            token = vault.tokens.issue(site.id, rec.record_id)
            try:  # the read path of GET /v1/records: decided as from the caller's site
                r = vault.get(token, purpose=purpose, access=actor(site.id))
            except PolicyRefused as exc:
                refused.append(
                    {"site": site.id, "country": site.country, "collection": rec.collection,
                     "reason": exc.message}
                )  # fmt: skip
                continue
            out.append(
                {
                    "collection": r.collection,
                    "site": r.site,
                    "country": r.country,
                    "version": r.version,
                    "masked": r.masked,
                    "transfer": r.transfer,
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
        "searched_at": req["subject"]["searched_at"],
        "records": out,
        "refused": refused,
        "copies_held_at": copies,
    }
    detail = {
        "records": len(out),
        "sites": sorted({r["site"] for r in out}),
        "read_from": sorted(
            {actor(h["site"]).site or h["site"] for h in req["subject"]["holdings"]}
        ),
        "refused": len(refused),
    }
    return package, detail


def _incountry_data(
    vault: Domicile,
    site: Any,
    primaries: list[_Primary],
    who: Access,
    purpose: str,
    refused: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """The subject's records of the InCountry API at a site, as that API renders them
    (bodies as the application stored them: its own ciphertext, if it encrypts)."""
    ids = [p.record_id for p in primaries if p.collection == INCOUNTRY]
    if not ids:
        return []
    if who.site is not None and who.site != site.id:
        # Read from another site, a record would cross a border; an opaque body cannot be
        # masked, and the InCountry API reads only where it keeps the data. So these are
        # read at their own site or not at all (never handed over as a local read).
        refused.append(
            {"site": site.id, "country": site.country, "collection": INCOUNTRY,
             "reason": f"the InCountry API's records are read at their own site only: fulfil "
                       f"the request from site {site.id!r} (or as the operator)"}
        )  # fmt: skip
        return []
    caller = Caller(who.client or "operator")
    try:
        found = InCountryStorage(vault).subject_data(site, ids, caller, purpose)
    except PolicyRefused as exc:
        refused.append(
            {"site": site.id, "country": site.country, "collection": INCOUNTRY,
             "reason": exc.message}
        )  # fmt: skip
        return []
    out = []
    for rec in sorted(found, key=lambda r: r["record_key"]):
        fields = {k: v for k, v in rec.items() if v is not None and v != []}
        out.append(
            {"collection": INCOUNTRY, "site": site.id, "country": site.country,
             "version": rec["version"], "masked": False, "transfer": None, "fields": fields,
             "categories": dict.fromkeys(fields, INCOUNTRY_CATEGORY)}
        )  # fmt: skip
    return out


def _rectify(
    vault: Domicile, req: dict[str, Any], fields: dict[str, str], actor: Actor
) -> dict[str, Any]:
    if not fields:
        raise Conflict(
            "a rectification needs the corrected fields",
            hint="e.g. --field city=Kazan (the field's new value)",
        )
    plan = []
    known: set[str] = set()
    for h in req["subject"]["holdings"]:
        for rec in _home_records(vault, h, actor(h["site"]), PURPOSE["rectification"]):
            if rec.collection == INCOUNTRY:
                continue  # the application's own record: corrected through that API
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
            access=actor(site_id),
        )  # fmt: skip
    by = actor(vault.config.local_site or vault.config.model.default_site).client
    report = Replicator(vault, client=by).run_once(reconcile=False)
    return {
        "records": len(plan),
        "fields": sorted(known),
        "sites": sorted({s for s, _, _ in plan}),
        "copies_pending": sorted(set(report.unavailable)),
    }


def _erase(
    vault: Domicile, req: dict[str, Any], actor: Actor
) -> tuple[dict[str, Any], dict[str, Any]]:
    from domicile.rights.acts import destruction_act

    destroyed = []
    marks = _audit_marks(vault)
    for h in req["subject"]["holdings"]:
        records = _home_records(vault, h, actor(h["site"]), PURPOSE["erasure"])
        if not records:
            continue
        categories = sorted({c for r in records for c in r.categories})
        collections = sorted({r.collection for r in records})
        token = vault.tokens.issue(h["site"], records[0].record_id)
        result = vault.erase(token, purpose=PURPOSE["erasure"], access=actor(h["site"]))
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
    parts = []
    for h in req["subject"]["holdings"]:  # on a node: each other node signs its own entries
        if not vault.is_here(h["site"]) and h["subject"] in subjects:
            part = vault.erased_at(
                h["site"], purpose=PURPOSE["erasure"], access=actor(h["site"]),
                subjects=[h["subject"]], request=req["id"],
            )  # fmt: skip
            extract += part["part"]["entries"]
            parts.append(part)
    by = actor(vault.config.local_site or vault.config.model.default_site).client
    act = destruction_act(vault, req, destroyed, extract, performed_by=by, parts=parts)
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
        if not vault.is_here(site.id):
            continue  # another node's log: its own entries are its evidence
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
