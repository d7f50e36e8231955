"""The blocks a subject's request places on the processing of its data, and their lifting.

- A **restriction** (GDPR Art. 18, 152-FZ's blocking) marks the subject restricted at
  every site that holds it (its records and its copies), naming the request, when and by
  whom. While it lasts the vault (``Domicile.check_blocks``, in the one authorization path
  of every route and command) keeps the data stored but refuses to read it, change it,
  delete it or copy it anew, except for the subject's own requests and for purposes whose
  legal basis the laws covering the subject still allow (the packs' ``restriction:``; the
  strictest of them binds: a basis must be allowed by every pack that has a rule). It ends
  when it is lifted: explicitly (``lift``), or when the request is closed. Lifting queues
  the subject's records again for the copies that were held back.
- A **withdrawal of consent** (without ``erase``) marks the subject the same way; the
  vault then refuses every operation for a purpose whose basis (``purposes:`` in the
  configuration) is consent. Closing the request keeps it: consent stays withdrawn until
  the subject gives it again, which the operator records with ``lift``.

Each site's change is one transaction holding the block (or its removal) and its audit
entry (``request``, step ``block`` or ``lift``); the request keeps the block's state
(``block``) and the step in its history. The block rows hold opaque ids, names of bases
and rules, times and the caller's id: no personal data.

On a federation's node, a site of another node is blocked (and freed) by that node: the
node channel's ``request_step`` with step ``block`` or ``lift``. The home node checks the
caller and the request's purpose, narrows a restriction's bases to what its own packs
allow, writes the block and its audit entry in its own store, and answers ids and counts
only.

A site or a node that fails stops the step, and nothing of it is kept in the request; the
blocks this run had placed at other sites are removed again (each audited as a ``lift``),
since no request would know of them and nothing could lift them. A block the request
placed before (a rerun) is left as it is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from domicile.access import Access
from domicile.audit import AuditEvent
from domicile.errors import BadInput, Conflict, DomicileError, NodeUnavailable, NotFound
from domicile.rights.registry import RequestsFile
from domicile.rights.service import PURPOSE, _laws, _reason, authorize_request, for_home_nodes
from domicile.stores.base import SiteUnavailable, SubjectBlock

if TYPE_CHECKING:
    from domicile.vault import Domicile

BLOCKING = ("restriction", "withdrawal")


def allowed_bases(
    vault: Domicile, holdings: list[dict[str, Any]], access: Access
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The legal bases a restriction still lets the subject's data be used for, and the
    pack rules that say so: the bases every covering pack with a rule in force today
    allows (none when no pack has one: only storage and the subject's own requests)."""
    packs, _ = _laws(vault, holdings, access, PURPOSE["restriction"])
    today = vault.clock().date()
    sets: list[set[str]] = []
    rules: list[str] = []
    for lp in vault.engine.packs:
        if lp.id not in packs:
            continue
        rule = next((r for r in lp.pack.restriction if r.effective.covers(today)), None)
        if rule is not None:
            sets.append(set(rule.allows))
            rules.append(rule.id)
    allows = set.intersection(*sets) if sets else set()
    return tuple(sorted(allows)), tuple(sorted(rules))


def bases_here(
    vault: Domicile,
    holding: dict[str, Any],
    access: Access,
    allows: list[str],
    rules: list[str],
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """At a home node: the bases a peer's restriction (``allows`` by ``rules``, as the
    asking node found them) may keep for the subject here. Each rule must be one of this
    node's packs in force today, and the bases no more than every rule named allows and,
    where this node's own packs covering the subject have a rule, than those allow too."""
    today = vault.clock().date()
    known = {
        r.id: set(r.allows)
        for lp in vault.engine.packs
        for r in lp.pack.restriction
        if r.effective.covers(today)
    }
    unknown = sorted(set(rules) - set(known))
    if unknown:
        raise BadInput(
            f"rules: {', '.join(unknown)} is not a restriction rule in force here",
            hint="the nodes disagree about the law: check that they run the same packs",
        )
    kept = set.intersection(*(known[r] for r in rules)) & set(allows) if rules else set()
    own, own_rules = allowed_bases(vault, [holding], access)
    if own_rules:
        kept &= set(own)
    return tuple(sorted(kept)), tuple(sorted(set(rules) | set(own_rules)))


def _change_site(
    vault: Domicile,
    site_id: str,
    subject: str,
    req: Mapping[str, Any],
    step: str,
    by: str | None,
    change: Any,
    *,
    requester: str | None = None,
    answer: Callable[[Any, int, Any], None] | None = None,
    **detail: Any,
) -> tuple[int, Any]:
    """One site's change (``change(tx)``) with its audit entry, in one transaction;
    returns the entry's number and what ``change`` returned. ``requester``: the site the
    caller acts from (a peer's, at a home node); ``answer(tx, seq, result)`` keeps a
    peer's answer in the same transaction."""
    event = AuditEvent(
        action="request", site=site_id, purpose=PURPOSE[req["kind"]], subject=subject,
        requester=requester or site_id, client=by,
        detail={"request": req["id"], "kind": req["kind"], "step": step, **detail},
        at=vault.clock().isoformat(),
    )  # fmt: skip
    try:
        with vault.store(site_id).transaction() as tx:
            result = change(tx)
            rows = vault.ledger(site_id).append(tx, [event])
            seq = rows[0].seq if rows else 0
            if answer is not None:
                answer(tx, seq, result)
    except SiteUnavailable:
        vault.forget_store(site_id)
        raise SiteUnavailable(
            site_id, "it does not answer",
            hint=f"the {step} is not complete: run it again once the site is back (a site"
            " done already is left as it is)",
        ) from None  # fmt: skip
    return seq, result


def _at_node(
    vault: Domicile,
    site_id: str,
    subject: str,
    req: Mapping[str, Any],
    step: str,
    access: Access,
    **block: Any,
) -> dict[str, Any]:
    """Have the node of ``site_id`` (another node's site) place or lift the block there;
    its answer (the audit entry's number, how many records it queued again for copies).
    A node that does not answer stops the step."""
    purpose = PURPOSE[req["kind"]]
    try:
        return vault.block_at(
            site_id, purpose=purpose, access=for_home_nodes(access, purpose), subject=subject,
            step=step, request=req["id"], kind=req["kind"], **block,
        )  # fmt: skip
    except (SiteUnavailable, NodeUnavailable) as exc:
        raise NodeUnavailable(
            site_id, f"the node of site {site_id} did not {step} the subject: {exc.message}",
            hint=f"nothing of this {step} was recorded in the request: run it again once the"
            " node is back (a site done already is left as it is)",
        ) from None  # fmt: skip


def place(vault: Domicile, req: dict[str, Any], access: Access) -> dict[str, Any]:
    """Block the subject at every site holding it now (the request's holdings, looked up
    again by ``fulfil``); a site blocked already by this request is left as it is. Returns
    the step's detail for the request's history."""
    kind = req["kind"]
    assert kind in BLOCKING
    by = access.client
    holdings = req["subject"]["holdings"]
    allows, rules = allowed_bases(vault, holdings, access) if kind == "restriction" else ((), ())
    now = vault.clock().isoformat()
    earlier = req.get("block") or {}
    since = earlier.get("since") if earlier.get("state") == "in_force" else None
    since = since or now
    placed = []
    fresh: list[dict[str, Any]] = []  # blocked by this run: undone if a later site fails
    try:
        for h in holdings:
            if not vault.is_here(h["site"]):
                got = _at_node(
                    vault, h["site"], h["subject"], req, "block", access, since=since,
                    allows=list(allows), rules=list(rules),
                )  # fmt: skip
                seq, new = got["seq"], bool(got["changed"])
            else:
                block = SubjectBlock(h["subject"], kind, req["id"], since, by, allows, rules)
                seq, new = _change_site(
                    vault, h["site"], h["subject"], req, "block", by,
                    lambda tx, b=block: tx.block(b), block=kind, allows=list(allows),
                    rules=list(rules),
                )  # fmt: skip
            placed.append({"site": h["site"], "subject": h["subject"], "seq": seq})
            if new:
                fresh.append(h)
    except DomicileError:
        _undo(vault, req, fresh, by, access)
        raise
    req["block"] = {
        "kind": kind,
        "state": "in_force",
        "since": since,
        "by": by,
        "allows": list(allows),
        "rules": list(rules),
        "at": [{"site": p["site"], "subject": p["subject"]} for p in placed],
        "lifted": None,
    }
    return {
        "vault_block": True,
        "block": kind,
        "sites": [p["site"] for p in placed],
        "allows": list(allows),
        "rules": list(rules),
        "block_audit": [{"site": p["site"], "seq": p["seq"]} for p in placed],
    }


def _undo(
    vault: Domicile, req: dict[str, Any], fresh: list[dict[str, Any]], by: str | None,
    access: Access,
) -> None:  # fmt: skip
    """Remove the blocks a run placed before one of its sites failed: the request is not
    saved, so no lift or close would ever find them. Each removal is audited as a lift;
    a site that fails now too keeps its block, and the run's error is what is raised."""
    for h in reversed(fresh):
        with contextlib.suppress(DomicileError):
            if vault.is_here(h["site"]):
                _change_site(
                    vault, h["site"], h["subject"], req, "lift", by,
                    lambda tx, s=h["site"], j=h["subject"]: unblock(
                        vault, tx, s, j, req["kind"], req["id"]
                    ),
                    block=req["kind"], undone="the block was not placed at every site",
                )  # fmt: skip
            else:
                _at_node(vault, h["site"], h["subject"], req, "lift", access)


def _requeue(vault: Domicile, tx: Any, site_id: str, subject: str) -> int:
    """Queue the subject's records at ``site_id`` again for every site its collections copy
    to: the copies held back while it was restricted are made now (delivery is
    idempotent: a copy that exists and is current changes nothing and logs nothing)."""
    colls = vault.config.model.collections
    items = [
        (r.record_id, subject, t, "upsert")
        for r in vault.store(site_id).subject_records(subject)
        if not r.is_replica and r.collection in colls
        for t in vault._replica_targets(colls[r.collection], site_id)
    ]
    if items:
        tx.enqueue(items)
    return len(items)


def lift_block(
    vault: Domicile,
    req: dict[str, Any],
    by: str | None,
    reason: str,
    step: str = "lift",
    access: Access | None = None,
) -> None:
    """Lift the request's block at every site it was placed, audited there, and record it
    in the request (its state and a ``lift`` step in its history). ``access``: the caller,
    as another node's site is asked to lift it (the operator when not given)."""
    block = req.get("block")
    if not block or block.get("state") != "in_force":
        raise Conflict(
            "this request has no block in force",
            hint="a restriction or a withdrawal of consent places one when it is fulfilled",
        )
    now = vault.clock().isoformat()
    entries = []
    requeued = 0
    for at in block["at"]:
        site_id, subject = at["site"], at["subject"]
        if not vault.is_here(site_id):
            got = _at_node(vault, site_id, subject, req, "lift", access or vault.operator)
            requeued += got["requeued"]
            entries.append({"site": site_id, "seq": got["seq"]})
            continue
        seq, (_, n) = _change_site(
            vault, site_id, subject, req, step, by,
            lambda tx, s=site_id, j=subject: unblock(vault, tx, s, j, block["kind"], req["id"]),
            block=block["kind"],
        )  # fmt: skip
        requeued += n
        entries.append({"site": site_id, "seq": seq})
    block["state"] = "lifted"
    block["lifted"] = {"at": now, "by": by, "reason": reason}
    req["history"].append(
        {"at": now, "step": step, "by": by, "audit": entries, "block": block["kind"],
         "sites": [e["site"] for e in entries], "requeued": requeued}
    )  # fmt: skip


def unblock(
    vault: Domicile, tx: Any, site_id: str, subject: str, kind: str, request: str
) -> tuple[bool, int]:
    """Remove a request's block of ``subject`` at ``site_id`` in ``tx``; a restriction's
    records are queued again for the copies held back. Returns whether there was a block,
    and how many records were queued."""
    removed = tx.unblock(subject, kind, request)
    return removed, _requeue(vault, tx, site_id, subject) if kind == "restriction" else 0


def lift(
    vault: Domicile, request_id: str, *, reason: str, access: Access | None = None
) -> dict[str, Any]:
    """Lift the block a request placed (a closed request too: a withdrawal of consent
    outlives its request until the subject consents again). ``reason``: why, in a few
    words, without personal data."""
    access = access or vault.operator
    vault.authorize(access, "rights:write")
    text = _reason(reason, "the reason for lifting the block (--reason)", required=True)
    assert text is not None
    with RequestsFile(vault.config).changing() as all_requests:
        req: dict[str, Any] | None = all_requests.get(request_id)
        if req is None:
            raise NotFound("no request of that id", hint="see `domicile rights list`")
        authorize_request(vault, access, "rights:write", req)
        lift_block(vault, req, access.client, text, access=access)
    return req


def block_state(req: Mapping[str, Any]) -> str:
    """The block in plain words, for ``rights show``."""
    block = req.get("block")
    if not block:
        if req["kind"] in BLOCKING:
            return "no block placed yet (fulfil the request to place it)"
        return ""
    sites = ", ".join(a["site"] for a in block["at"]) or "no site"
    what = "restricted" if block["kind"] == "restriction" else "consent withdrawn"
    if block["state"] == "in_force":
        line = f"block: {what} since {block['since'][:19]} at {sites}"
        if block["kind"] == "restriction":
            line += f"; still allowed for: {', '.join(block['allows']) or 'nothing but storage'}"
        return line
    lifted = block["lifted"] or {}
    return f"block: {what} from {block['since'][:19]}, lifted {str(lifted.get('at'))[:19]} ({lifted.get('reason')})"
