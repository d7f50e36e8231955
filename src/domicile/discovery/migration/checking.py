"""``migrate verify``: reads only, and lists what is wrong."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from domicile.discovery.migration.journal import Journal
from domicile.discovery.migration.plan import Plan, Progress
from domicile.discovery.migration.rows import is_token, owners, row_key, subject_of
from domicile.discovery.sources import DatabaseSource
from domicile.errors import DomicileError


def verify(
    plan: Plan, *, vault: Any, source: DatabaseSource, progress: Progress | None = None
) -> dict[str, Any]:
    """Check a migration (reading only); ``problems`` is empty when all is well."""
    from domicile.crypto.blind import BlindIndexer
    from domicile.vault import values as vvalues
    from domicile.vault.errors import InvalidToken

    problems: list[str] = []
    journal = Journal.open_existing(plan.journal_path) if plan.path else None
    coll = vault.collection(plan.collection)
    searchable = [(n, s) for n, s in coll.fields.items() if s.searchable]
    indexers = {s.id: BlindIndexer(vault.keys.index_key(s.id)) for s in vault.config.sites}
    stats: Counter[str] = Counter()
    sites: Counter[str] = Counter()
    try:
        for table in plan.tables.values():
            parents = owners(source, table, plan.batch_size)
            jrows = journal.rows(table.name) if journal else {}
            personal = [*table.map, *table.kept]
            link = table.via[0].columns if table.via else ()
            cols = list(dict.fromkeys([*table.key, *link, *personal]))
            seen: set[str] = set()
            for batch in source.batches(table.name, cols, plan.batch_size):
                rows = [
                    dict(zip(cols, r, strict=True))
                    for r in zip(*(batch[c] for c in cols), strict=True)
                ]
                expect: dict[str, tuple[str, str]] = {}  # rid -> (key, what)
                check_values: list[tuple[str, str, Any]] = []
                for row in rows:
                    sid = subject_of(table, row, parents)
                    if sid is None or not plan.moving(sid):
                        continue
                    key = row_key(table, row)
                    if key is None:
                        continue  # a key with an empty part: the run leaves such rows
                    seen.add(key)
                    rid = plan.record_id(table.name, key)
                    mapped = {c: row[c] for c in table.map if row[c] is not None}
                    tokens = {c: v for c, v in mapped.items() if is_token(v)}
                    plain = [c for c in mapped if c not in tokens]
                    j = jrows.get(key)
                    if plan.legacy == "tokens":
                        if plain and not tokens:
                            if j and j[2] == "refused":
                                stats["refused"] += 1
                            else:
                                stats["not moved"] += 1
                            continue
                        if plain:
                            problems.append(
                                f"{table.name} row {key}: {', '.join(plain)} still hold values beside tokens"
                            )
                        for c, v in tokens.items():
                            try:
                                site, got = vault.tokens.read(v)
                            except InvalidToken:
                                problems.append(
                                    f"{table.name} row {key}: {c} holds a token that does not resolve"
                                )
                                continue
                            if got != rid:
                                problems.append(
                                    f"{table.name} row {key}: {c} holds the token of another record"
                                )
                                continue
                            expect[rid] = (key, site)
                    else:
                        if plain:
                            if j and j[2] == "done":
                                problems.append(
                                    f"{table.name} row {key}: moved, but {', '.join(plain)} still hold values"
                                )
                            elif j and j[2] == "refused":
                                stats["refused"] += 1
                            else:
                                stats["not moved"] += 1
                            continue
                        if j and j[2] == "done" and j[1]:
                            expect[rid] = (key, j[1])
                    for c in personal:
                        v = row[c]
                        if v is not None and not is_token(v):
                            check_values.append((key, c, v))
                            stats["kept"] += c in table.kept
                # every token resolves to a record that exists where it says
                by_site: dict[str, list[str]] = {}
                for rid, (_, site) in expect.items():
                    by_site.setdefault(site, []).append(rid)
                found: set[str] = set()
                for site, rids in by_site.items():
                    if site not in indexers:
                        problems.append(f"{table.name}: {len(rids)} token(s) name an unknown site")
                        continue
                    got = vault.store(site).get_many(rids)
                    for rid in rids:
                        rec = got.get(rid)
                        if rec is None and _erased(vault.store(site), rid):
                            stats["erased"] += 1  # a subject's erasure or retention took it
                        elif rec is None or rec.is_replica:
                            problems.append(
                                f"{table.name} row {expect[rid][0]}: its record is missing at site {site}"
                            )
                        else:
                            found.add(rid)
                            sites[site] += 1
                stats["moved"] += len(found)
                # no value of a moved row matches a moved record's blind index
                if searchable and check_values:
                    for key, c, v in check_values:
                        for name, spec in searchable:
                            try:
                                norm = vvalues.normalize(name, spec, vvalues.coerce(name, spec, v))
                            except DomicileError:
                                continue
                            for site, ix in indexers.items():
                                hits = vault.store(site).lookup(
                                    ix.digest(plan.collection, name, norm)
                                )
                                # a record of this migration (its ids start with the plan's)
                                if any(h.startswith(plan.id[:12]) for h in hits):
                                    problems.append(
                                        f"{table.name} row {key}: {c} still holds the {name} of a moved record"
                                    )
                                    break
                if progress is not None:
                    progress(table.name, len(rows))
            # rows deleted after they moved must have their records
            if journal is not None:
                gone = [
                    k for k, (_, _, state) in jrows.items() if state == "done" and k not in seen
                ]
                for k in gone:
                    problems.append(f"{table.name} row {k}: moved, then left the source")
            if journal is not None:
                done = sum(1 for _, _, state in jrows.values() if state == "done")
                moved_here = sum(1 for k in jrows if jrows[k][2] == "done" and k in seen)
                if done != moved_here:
                    problems.append(
                        f"{table.name}: the journal counts {done} rows moved, the source {moved_here}"
                    )
        if stats["not moved"]:
            problems.append(
                f"{stats['not moved']} row(s) of subjects the plan moves are not moved yet (run `domicile migrate run`)"
            )
        audit = vault.verify_audit()
        for r in audit:
            if not r.ok:
                problems.append(f"the audit log of site {r.site} does not verify")
    finally:
        if journal is not None:
            journal.close()
    return {
        "plan": plan.id,
        "source": plan.source_description,
        "ok": not problems,
        "moved": stats["moved"],
        "refused": stats["refused"],
        "not_moved": stats["not moved"],
        "erased": stats["erased"],
        "sites": dict(sorted(sites.items())),
        "kept_columns": {t.name: t.kept for t in plan.tables.values() if t.kept},
        "kept_values": stats["kept"],
        "problems": problems,
    }


_WRITES = '{"action":"write"'
_ERASES = '{"action":"erase"'


def _erased(store: Any, rid: str) -> bool:
    """Whether the site's audit shows record ``rid`` destroyed after it was written: an
    ``erase`` entry naming it (retention, expiry), or naming the subject its ``write`` entry
    gave it (a subject's erasure destroys the subject whole). The log is the evidence, so
    a record that vanished without an entry is still reported missing."""
    if store.audit_tagged(_ERASES, 2**62, containing=rid, newest=True):
        return True
    for row in store.audit_tagged(_WRITES, 2**62, containing=rid):
        entry = json.loads(row.payload)
        records = entry.get("records") or []
        if rid in records:
            subject = entry["subjects"][records.index(rid)]
            if any(
                json.loads(r.payload).get("subject") == subject
                for r in store.audit_tagged(_ERASES, 2**62, containing=subject)
            ):
                return True
    return False
