"""Retention periods and their enforcement.

A collection declares ``retention: {after, keep, hold}`` and a field may declare its own
``retention: {after, keep}`` (it goes earlier than its record). What a period runs from,
with what the vault records (no new date is stored):

- ``collected``: the record's ``created_at``;
- ``purpose_end``: the record's ``updated_at``, its last change by the application (the
  application marks the end of a purpose by its last update, e.g. closing an account;
  retention's own field removals keep ``updated_at`` as it was);
- ``last_access``: the latest of ``updated_at`` and the record's last read in the site's
  audit log (``read`` and ``disclose_masked`` entries).

A legal hold names a statute and fields: while it lasts (its ``keep``, run from the same
date, or for as long as it is configured), those fields stay when their record or their
own period is due; the record's other fields are removed, and the record goes when the
hold ends.

``run`` destroys what is due, site by site, by crypto-shredding (``Erasure.erase_records``:
a subject left with nothing at the site loses its data key first) or, for a held record or
a field due before its record, by sealing the record again without the fields. Each
destruction is one audit entry written in the transaction that destroys, so a run killed
at any point and run again destroys nothing twice and misses nothing. The act of
destruction (``rights/acts.py``) is made afterwards from the audit: every retention entry
not yet in an act, from the marks kept in ``DATA_DIR/retention.json`` (replaced
atomically with the act), so an act missed by a killed run is made by the next one.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import secrets
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from domicile.access import Access
from domicile.audit import AuditEvent
from domicile.config import Collection
from domicile.crypto.errors import KeyDestroyed
from domicile.errors import BadInput, DomicileError, ExitCode
from domicile.files import lock_file, write_private_json
from domicile.stores import IndexEntry, StoredRecord
from domicile.stores.base import SiteUnavailable, SubjectBlock, VersionConflict
from domicile.vault.core import residency_text
from domicile.vault.sealing import seal_body

if TYPE_CHECKING:
    from domicile.config import Config, Site
    from domicile.vault import Domicile

PURPOSE = "retention"
READ, RUN = "retention:read", "retention:run"  # the clients' scopes (``domicile.clients``)
PAGE = 500
BATCH = 25  # records per transaction: a stopped run redoes at most this many
FORMAT = 1
METHOD = (
    "crypto-shredding: a subject left with nothing at a site lost its data key first, then"
    " its records, index entries and copies were deleted; records a legal hold keeps were"
    " sealed again without the fields whose retention ended, and their copies replaced;"
    " backups made before hold only ciphertext"
)
READS = ("read", "disclose_masked")
DESTROYS = ("erase", "strip")  # the verdicts that destroy something
Progress = Callable[[str, int], None]


class RetentionFileError(DomicileError):
    code = "retention_file"
    exit_code = ExitCode.ENVIRONMENT


def add_period(start: dt.datetime, period: str) -> dt.datetime:
    """``start`` plus a period such as 30d, 2w, 6m or 5y (months and years by the
    calendar; the 31st plus a month is the month's last day)."""
    n, unit = int(period[:-1]), period[-1]
    if unit == "d":
        return start + dt.timedelta(days=n)
    if unit == "w":
        return start + dt.timedelta(weeks=n)
    years, month0 = divmod(start.month - 1 + n * (12 if unit == "y" else 1), 12)
    year, month = start.year + years, month0 + 1
    return start.replace(
        year=year, month=month, day=min(start.day, calendar.monthrange(year, month)[1])
    )


def _when(text: str) -> dt.datetime:
    at = dt.datetime.fromisoformat(text)
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class Verdict:
    """What retention does to one record now: ``erase`` it, ``strip`` some fields, nothing
    because a hold keeps it (``held``), or nothing yet (``keep``); and when it next acts."""

    action: str
    fields: tuple[str, ...] = ()  # the fields removed by a strip
    held_by: tuple[str, ...] = ()  # statutes keeping something that would otherwise go
    next: dt.datetime | None = None


def _anchor(rec: StoredRecord, after: str, last_read: dict[str, dt.datetime]) -> dt.datetime:
    if after == "collected":
        return _when(rec.created_at)
    changed = _when(rec.updated_at)
    read = last_read.get(rec.record_id) if after == "last_access" else None
    return max(changed, read) if read else changed


def assess(
    rec: StoredRecord, coll: Collection, last_read: dict[str, dt.datetime], now: dt.datetime
) -> Verdict:
    """The one place that decides what retention does to a record (plan and run use it)."""
    present = set(rec.field_names) & set(coll.fields)
    ret = coll.retention
    held: dict[str, set[str]] = {}  # statute -> fields it keeps now
    later: list[dt.datetime] = []
    record_due = None
    if ret is not None:
        base = _anchor(rec, ret.after, last_read)
        record_due = add_period(base, ret.keep)
        for hold in ret.hold:
            until = add_period(base, hold.keep) if hold.keep else None
            kept = present & set(hold.fields)
            if kept and (until is None or until > now):
                held.setdefault(hold.statute, set()).update(kept)
                if until is not None:
                    later.append(until)
    keeps = set().union(*held.values()) if held else set()
    if record_due is not None and record_due <= now:
        if not keeps:
            return Verdict("erase")
        gone = present - keeps
        return Verdict(
            "strip" if gone else "held",
            tuple(sorted(gone)),
            tuple(sorted(held)),
            min(later) if later else None,
        )
    gone_fields: list[str] = []
    stopped: set[str] = set()
    dates = [record_due] if record_due is not None else []
    for name in sorted(present):
        own = coll.fields[name].retention
        if own is None:
            continue
        due = add_period(_anchor(rec, own.after, last_read), own.keep)
        if due > now:
            dates.append(due)
        elif name in keeps:
            stopped.update(s for s, f in held.items() if name in f)
        else:
            gone_fields.append(name)
    nxt = min(dates) if dates else None
    if gone_fields:
        return Verdict("strip", tuple(gone_fields), tuple(sorted(stopped)), nxt)
    return Verdict("held" if stopped else "keep", (), tuple(sorted(stopped)), nxt)


def authorize(
    vault: Domicile, access: Access, operation: str, sites: Sequence[str] | None = None
) -> list[Site]:
    """The check of a plan (``retention:read``) or a run (``retention:run``) by a caller,
    through ``Domicile.authorize`` (each refusal audited where the request arrived); the
    sites it covers, in the configuration's order: ``sites``, or every site.

    The caller needs the operation; the scope of every site covered (``site:ID``: a
    client limited to some sites names them); the scope of every collection with a
    retention, since a plan counts them and a run destroys in each; and, to run, the
    purpose ``retention`` its audit entries carry. The CLI's operator has every right."""
    vault.authorize(access, operation)
    chosen = list(vault.config.sites)
    if sites is not None:
        known = {s.id for s in chosen}
        unknown = sorted(set(sites) - known)
        if unknown or not sites:
            raise BadInput(
                f"no configured site is named {unknown[0]!r}" if unknown else "no site named",
                hint=f"name sites of the configuration ({', '.join(sorted(known))}), or none"
                " for every site",
            )
        chosen = [s for s in chosen if s.id in set(sites)]
    for site in chosen:
        vault.authorize(access, operation, site=site.id)
    for name in sorted(_governed(vault.config)):
        vault.authorize(access, operation, collection=name)
    if operation == RUN:
        vault.authorize(access, operation, purpose=PURPOSE)
    return chosen


def _governed(config: Config) -> dict[str, Collection]:
    """The collections with a retention of their own or of some field."""
    return {
        name: coll
        for name, coll in config.model.collections.items()
        if coll.retention is not None or any(f.retention for f in coll.fields.values())
    }


def _last_reads(vault: Domicile, governed: dict[str, Collection]) -> dict[str, dt.datetime]:
    """Each record's last read, from the audit logs of every site that answers (a read of
    a copy names the record too); nothing when no period runs from the last access."""
    out: dict[str, dt.datetime] = {}
    if not any(
        (c.retention is not None and c.retention.after == "last_access")
        or any(f.retention and f.retention.after == "last_access" for f in c.fields.values())
        for c in governed.values()
    ):
        return out
    for site in vault.config.sites:
        try:
            _reads_at(vault, site.id, out)
        except SiteUnavailable:
            vault._drop(site.id)
    return out


def _reads_at(vault: Domicile, site_id: str, out: dict[str, dt.datetime]) -> None:
    for row in vault.store(site_id).audit():
        if '"action":"read"' not in row.payload and "disclose_masked" not in row.payload:
            continue
        entry = json.loads(row.payload)
        if entry.get("action") not in READS or not entry.get("at"):
            continue
        at = _when(entry["at"])
        for rid in [entry.get("record"), *entry.get("records", ())]:
            if rid and (rid not in out or out[rid] < at):
                out[rid] = at


def _walk(
    vault: Domicile,
    site: Site,
    governed: dict[str, Collection],
    now: dt.datetime,
    last_read: dict[str, dt.datetime],
) -> Iterator[tuple[StoredRecord, Verdict]]:
    """Every primary record of a governed collection at the site, with its verdict."""
    store = vault.store(site.id)
    after = ""
    while True:
        page = store.records_after(after, PAGE)
        if not page:
            return
        after = page[-1].record_id
        for rec in page:
            coll = governed.get(rec.collection)
            if coll is not None and not rec.is_replica:
                yield rec, assess(rec, coll, last_read, now)


def _day(at: dt.datetime | None) -> str | None:
    return at.date().isoformat() if at else None


def plan(
    vault: Domicile,
    *,
    now: dt.datetime | None = None,
    sites: Sequence[str] | None = None,
    access: Access | None = None,
) -> dict[str, Any]:
    """What retention destroys now and later, per collection and site (``sites``, else
    every site), for ``access`` (default: the operator; see ``authorize``): counts and
    dates, never values. Reads only."""
    chosen = authorize(vault, access or vault.operator, READ, sites)
    now = now or vault.clock()
    governed = _governed(vault.config)
    rows = []
    kept: list[dict[str, Any]] = []
    unavailable = []
    last_read = _last_reads(vault, governed)
    for site in chosen:
        per: dict[str, dict[str, Any]] = {}
        try:
            walked = list(_walk(vault, site, governed, now, last_read))
            blocks = _restrictions(
                vault, site, {r.subject_id for r, v in walked if v.action in DESTROYS}
            )
        except SiteUnavailable:
            vault._drop(site.id)
            unavailable.append(site.id)
            continue
        keeps: dict[str, dict[str, Any]] = {}
        for rec, v in walked:
            row = per.setdefault(rec.collection, _plan_row(rec.collection, site, governed))
            row["records"] += 1
            if v.action == "erase":
                row["due"]["erase"] += 1
            elif v.action == "strip":
                row["due"]["strip"] += 1
                row["due"]["fields"] += len(v.fields)
            block = blocks.get(rec.subject_id) if v.action in DESTROYS else None
            if block is not None:
                row["due"]["restricted"] += 1
                k = keeps.setdefault(rec.subject_id, _kept(site, block))
                k["records"] += 1
                k["collections"] = sorted({*k["collections"], rec.collection})
            for statute in v.held_by:
                row["_held"][statute] += 1
            if v.action in ("held", "strip") and v.held_by:
                row["due"]["held"] += 1
            if v.next is not None:
                row["_later"][v.next.strftime("%Y-%m")] += 1
                if row["next"] is None or v.next < row["next"]:
                    row["next"] = v.next
        for row in per.values():
            row["next"] = _day(row["next"])
            row["schedule"] = dict(sorted(row.pop("_later").items()))
            held = row.pop("_held")
            for h in row["holds"]:
                h["records_held"] = held.get(h["statute"], 0)
            rows.append(row)
        kept += keeps.values()
    return {
        "as_of": now.isoformat(),
        "collections": rows,
        "kept": kept,
        "without_retention": sorted(set(vault.config.model.collections) - set(governed)),
        "unavailable": unavailable,
    }


def _plan_row(name: str, site: Site, governed: dict[str, Collection]) -> dict[str, Any]:
    coll = governed[name]
    ret = coll.retention
    return {
        "collection": name,
        "site": site.id,
        "country": site.country,
        "retention": f"{ret.keep} after {ret.after}" if ret else None,
        "field_retention": {
            n: f"{f.retention.keep} after {f.retention.after}"
            for n, f in coll.fields.items()
            if f.retention is not None
        },
        "records": 0,
        # Due by their periods; ``restricted``: how many of those a restriction keeps.
        "due": {"erase": 0, "strip": 0, "fields": 0, "held": 0, "restricted": 0},
        "next": None,
        "holds": [
            {"statute": h.statute, "fields": h.fields, "keep": h.keep}
            for h in (ret.hold if ret else [])
        ],
        "_held": Counter(),
        "_later": Counter(),
    }


def _kept(site: Site, block: SubjectBlock) -> dict[str, Any]:
    """What the plan says of a subject whose due data a restriction keeps: opaque ids,
    the request and why, never a value."""
    return {
        "site": site.id,
        "country": site.country,
        "subject": block.subject_id,
        "request": block.request_id,
        "since": block.since,
        "rules": list(block.rules),
        "reason": f"processing restricted by the subject's request {block.request_id}: the"
        " data is kept as it is until the restriction is lifted (or the request closed);"
        " the first run after that destroys what is due",
        "records": 0,
        "collections": [],
    }


def _restrictions(vault: Domicile, site: Site, subjects: set[str]) -> dict[str, SubjectBlock]:
    """Of these subjects, those whose processing is restricted at the site
    (``domicile.rights``), each with its oldest restriction: their data stays as it is
    until the restriction is lifted (the GDPR's Art. 18(1)(c): the subject may need it
    for a claim), so neither the plan counts it as going nor a run destroys it."""
    return vault.store(site.id).restricted(subjects)


# --- the run ---------------------------------------------------------------------------


def _state_path(config: Config) -> Path:
    return config.data_dir / "retention.json"


def _read_state(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"format": FORMAT, "marks": {}, "acts": []}
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise RetentionFileError(
            f"the retention file {path} is not one domicile wrote",
            hint="restore it from a backup: it holds the acts of destruction",
        )
    return data


def acts(config: Config) -> list[dict[str, Any]]:
    """The acts of destruction retention runs made (read only)."""
    return list(_read_state(_state_path(config))["acts"])


def _rule(coll: Collection, fields: tuple[str, ...] = ()) -> str:
    if fields:
        own = [f for f in fields if coll.fields[f].retention is not None]
        if own:
            return ", ".join(
                f"{f}: {r.keep} after {r.after}" for f in own if (r := coll.fields[f].retention)
            )
    ret = coll.retention
    return f"{ret.keep} after {ret.after}" if ret else "field retention"


def _strip(
    vault: Domicile,
    site: Site,
    rec: StoredRecord,
    v: Verdict,
    coll: Collection,
    client: str | None,
) -> None:
    """Seal the record again without ``v.fields`` (its version moves on, its ``updated_at``
    stays), re-index it and replace its copies; one audit entry, in the same transaction."""
    residency, current = vault._open_record(site, rec)
    kept = {k: val for k, val in current.items() if k in coll.fields and k not in v.fields}
    version = rec.version + 1
    body = seal_body(
        vault._cipher(site.id, rec.subject_id), site.id, rec.collection, rec.record_id,
        version, residency_text(residency), kept,
    )  # fmt: skip
    new = replace(rec, version=version, body=body)
    own, idents = vault._digests(vault._indexers[site.id], rec.collection, coll, kept)
    categories = sorted({coll.fields[f].category for f in v.fields})
    event = AuditEvent(
        action="erase", site=site.id, purpose=PURPOSE, collection=rec.collection,
        record=rec.record_id, subject=rec.subject_id, requester=site.id,
        client=client, fields=v.fields,
        detail={"retention": _rule(coll, v.fields), "records": 0, "key_destroyed": False,
                "fields_removed": len(v.fields), "categories": categories,
                "held_by": list(v.held_by)},
        at=vault.clock().isoformat(),
    )  # fmt: skip
    with vault.store(site.id).transaction() as tx:
        tx.replace(new, rec.version)
        tx.enqueue(
            [
                (rec.record_id, rec.subject_id, t, "upsert")
                for t in vault._replica_targets(coll, site.id)
            ]
        )
        tx.unindex(rec.record_id)
        tx.index(IndexEntry(d, rec.record_id) for d in (*own, *idents))
        vault._ledgers[site.id].append(tx, [event])


def run(
    vault: Domicile,
    *,
    now: dt.datetime | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
    sites: Sequence[str] | None = None,
    access: Access | None = None,
) -> dict[str, Any]:
    """Destroy what is due at ``sites`` (else every site), as ``access`` (default: the
    operator; see ``authorize``), who is named in every audit entry and in the act
    (``dry_run``: only say what would go, writing nothing). The CLI and the HTTP API both
    run it: one path, audited the same way."""
    caller = access or vault.operator
    chosen = authorize(vault, caller, RUN, sites)
    job = _Job(chosen, caller.client, now or vault.clock(), _governed(vault.config))
    path = _state_path(vault.config)
    if dry_run:
        return _run(vault, job, dry_run=True, progress=progress)
    with lock_file(path.with_suffix(".lock")):  # one run at a time
        _read_state(path)  # a damaged file stops the run before anything is destroyed
        out = _run(vault, job, dry_run=False, progress=progress)
        act = _make_act(vault, path, job)
    out["act"] = act["act"]["id"] if act else None
    return out


@dataclass(frozen=True)
class _Job:
    """A run's terms: its sites, the caller named in its audit entries, its time and the
    collections with a retention."""

    sites: list[Site]
    client: str | None
    now: dt.datetime
    governed: dict[str, Collection]


def _run(vault: Domicile, job: _Job, *, dry_run: bool, progress: Progress | None) -> dict[str, Any]:
    sites = []
    unavailable = []
    last_read = _last_reads(vault, job.governed)
    for site in job.sites:
        try:
            summary = _run_site(vault, site, job, last_read, dry_run=dry_run, progress=progress)
        except SiteUnavailable:
            vault._drop(site.id)
            unavailable.append(site.id)
            continue
        if summary is not None:
            sites.append(summary)
    return {
        "dry_run": dry_run,
        "as_of": job.now.isoformat(),
        "sites": sites,
        "unavailable": unavailable,
        "act": None,
    }


def _run_site(
    vault: Domicile,
    site: Site,
    job: _Job,
    last_read: dict[str, dt.datetime],
    *,
    dry_run: bool,
    progress: Progress | None,
) -> dict[str, Any] | None:
    governed = job.governed
    erase: dict[tuple[str, tuple[str, ...]], list[StoredRecord]] = defaultdict(list)
    strips: list[tuple[StoredRecord, Verdict]] = []
    held = 0
    for rec, v in _walk(vault, site, governed, job.now, last_read):
        if v.action == "erase":
            cats = tuple(sorted(set(vault._field_categories(rec).values())))
            erase[(rec.collection, cats)].append(rec)
        elif v.action == "strip":
            strips.append((rec, v))
        if v.held_by:
            held += 1
    restricted = _restrictions(
        vault, site,
        {r.subject_id for rs in erase.values() for r in rs} | {r.subject_id for r, _ in strips},
    )  # fmt: skip
    kept_back = 0
    if restricted:
        for key in list(erase):
            kept = [r for r in erase[key] if r.subject_id not in restricted]
            kept_back += len(erase[key]) - len(kept)
            if kept:
                erase[key] = kept
            else:
                del erase[key]
        kept_back += sum(1 for r, _ in strips if r.subject_id in restricted)
        strips = [(r, v) for r, v in strips if r.subject_id not in restricted]
    n_erase = sum(len(r) for r in erase.values())
    keys = done = skipped = unreadable = 0
    removed = sum(len(v.fields) for _, v in strips) if dry_run else 0
    if dry_run:
        store = vault.store(site.id)
        going = {r.record_id for rs in erase.values() for r in rs}
        subjects = {r.subject_id for rs in erase.values() for r in rs}
        keys = sum(all(o.record_id in going for o in store.subject_records(s)) for s in subjects)
    else:
        for (cname, cats), records in erase.items():
            detail = {"retention": _rule(governed[cname]), "categories": list(cats)}
            for i in range(0, len(records), BATCH):
                result = vault.erase_records(
                    site.id, records[i : i + BATCH], purpose=PURPOSE,
                    client=job.client, detail=detail,
                )  # fmt: skip
                keys += result["keys_destroyed"]
                done += len(records[i : i + BATCH])
                if progress:
                    progress(site.id, done)
        for rec, v in strips:
            coll = governed[rec.collection]
            try:
                _strip(vault, site, rec, v, coll, job.client)
                removed += len(v.fields)
            except VersionConflict:
                skipped += 1  # changed meanwhile: the next run looks at it again
            except KeyDestroyed:
                # Its subject's key went in a run stopped before it deleted the rows
                # (and a hold was configured since): nothing of it can be read, so the
                # rows go too, said so in the audit.
                vault.erase_records(
                    site.id, [rec], purpose=PURPOSE, client=job.client,
                    detail={"retention": _rule(coll), "unreadable": True,
                            "categories": sorted(set(vault._field_categories(rec).values()))},
                )  # fmt: skip
                unreadable += 1
            done += 1
            if progress:
                progress(site.id, done)
    if not (n_erase or strips or held or kept_back):
        return None
    return {
        "site": site.id,
        "country": site.country,
        "records_erased": n_erase + unreadable,
        "keys_destroyed": keys,
        "records_stripped": len(strips) - skipped - unreadable,
        "fields_removed": removed,
        "records_held": held,
        "records_changed_meanwhile": skipped,
        "records_restricted": kept_back,
    }


def _make_act(vault: Domicile, path: Path, job: _Job) -> dict[str, Any] | None:
    """One act for every retention entry of the run's sites' audit not yet in an act (this
    run's, and those of a run killed before it made its own), saved with the new marks at
    once. Other sites' entries wait for a run that covers them."""
    from domicile.rights.acts import destruction_act

    state = _read_state(path)
    marks = dict(state["marks"])
    found: list[tuple[str, Any, dict[str, Any]]] = []
    for site in job.sites:
        seen: list[tuple[str, Any, dict[str, Any]]] = []
        last = int(marks.get(site.id, 0))
        try:
            for row in vault.store(site.id).audit(last + 1):
                last = row.seq
                if '"retention"' not in row.payload:
                    continue
                entry = json.loads(row.payload)
                if entry.get("action") == "erase" and "retention" in (entry.get("detail") or {}):
                    seen.append((site.id, row, entry))
        except SiteUnavailable:  # its entries go into the act of a later run
            vault._drop(site.id)
            continue
        marks[site.id] = last
        found += seen
    if not found:
        return None
    sites = {s.id: s for s in vault.config.sites}
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    rules: set[str] = set()
    for site_id, _row, e in found:
        d = e.get("detail") or {}
        rules.add(f"{e.get('collection')}: {d['retention']}")
        g = groups.setdefault(
            (site_id, e.get("subject", "")),
            {
                "site": site_id, "country": sites[site_id].country, "subject": e.get("subject"),
                "records": 0, "collections": set(), "categories": set(),
                "fields_removed": set(), "key_destroyed": False, "held_by": set(),
                "copies_deleted": [], "copies_pending": [], "at": e.get("at"),
            },
        )  # fmt: skip
        g["records"] += int(d.get("records", 0))
        g["collections"].add(e.get("collection"))
        g["categories"].update(d.get("categories", ()))
        g["fields_removed"].update(e.get("fields", ()))
        g["held_by"].update(d.get("held_by", ()))
        g["key_destroyed"] = g["key_destroyed"] or bool(d.get("key_destroyed"))
        g["at"] = max(g["at"] or "", e.get("at") or "")
    destroyed = [
        {k: sorted(v) if isinstance(v, set) else v for k, v in g.items()} for g in groups.values()
    ]
    extract = [
        {
            "site": site_id, "seq": row.seq, "hash": row.hash.hex(), "action": e["action"],
            "at": e.get("at"), "records": (e.get("detail") or {}).get("records"),
        }
        for site_id, row, e in found
    ]  # fmt: skip
    run_id = "rt_" + secrets.token_hex(6)
    act = destruction_act(
        vault,
        {
            "id": run_id,
            "kind": "retention",
            "received": job.now.date().isoformat(),
            # When the sites were searched: the audit entries were read just now.
            "subject": {"searched_at": vault.clock().isoformat()},
        },
        destroyed,
        extract,
        performed_by=job.client,
        reason="the retention periods of the configuration ended ("
        + "; ".join(sorted(rules))
        + ")",
        method=METHOD,
    )
    state["marks"] = marks
    state["acts"].append(act)
    write_private_json(path, state)
    return act
