"""Reading: the read path, and what a read may disclose.

Open the token; load the record at its home site; ask the engine whether the requester's
site may have it (a read from another country is a transfer, or a masked disclosure where a
pack permits only masked forms); audit the read, or the refusal; then answer."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from domicile.access import Access
from domicile.audit import AuditEvent
from domicile.audit.ledger import PayloadTemplate
from domicile.config import Collection, Site
from domicile.errors import BadInput
from domicile.packs import Outcome
from domicile.policy import Decision
from domicile.residency import Residency
from domicile.stores import (
    StoredRecord,
    TransferCount,
)
from domicile.stores.base import SiteUnavailable
from domicile.vault import values
from domicile.vault.core import (
    VaultCore,
    _Shape,
    _utcnow,
    check_purpose,
)
from domicile.vault.errors import PolicyRefused
from domicile.vault.masking import mask_methods, masked_fields
from domicile.vault.results import FindResult, ReadResult


def transfer_detail(
    decision: Decision,
    from_country: str,
    to_country: str,
    shown: Mapping[str, Any],
    kind: str,
    version: int | None = None,
) -> dict[str, Any]:
    """The ledger's view of a transfer: route and rules, legal bases and filings used. (A
    masked disclosure is no transfer: see ``Domicile._masked_payload``.)"""
    legs = [r for r in decision.rules if r.flow is not None and r.kind == "transfer"]
    return {
        "action": "transfer",
        "decision": decision.outcome.value,
        "fields": tuple(sorted(shown)),
        "detail": {
            "kind": kind,
            "from_country": from_country,
            "to_country": to_country,
            "routes": sorted({f"{r.id}:{r.route}" for r in legs if r.route}),
            "filings": sorted({f for r in legs for f in r.filings_used}),
            "bases": sorted(decision.request.bases),
            **({"version": version} if version is not None else {}),
        },
    }


@dataclass
class _Disclosure:
    """A read decided and opened but not yet audited: what may be shown and its audit
    payload (a read, a transfer with its year-to-date count, or a masked disclosure), or
    the refusal's payload and error."""

    payload: str
    result: ReadResult | None = None
    count: TransferCount | None = None
    error: PolicyRefused | None = None


def with_detail(payload: str, **detail: Any) -> str:
    """An audit payload with more keys in its ``detail`` (canonical, as ``payload()``)."""
    data = json.loads(payload)
    data["detail"] = {**data.get("detail", {}), **detail}
    return AuditEvent.canonical(data)


class Reading(VaultCore):
    """get and find: reads, transfers and masked disclosures, each audited before it answers."""

    def get(
        self,
        token: str,
        *,
        purpose: str,
        as_site: str | None = None,
        access: Access | None = None,
    ) -> ReadResult:
        """Read a record for a requester at ``as_site`` (default: the caller's site, else
        ``local_site``).

        At the home site, or in its country, this is a local read. From another country
        it is a transfer: served from a permitted copy at the requester's site when there
        is one, else decided by the transfer rules of the home site's country, which may
        allow the full value, permit only masked forms, or refuse."""
        check_purpose(purpose)
        access, requester = self._acting(access, as_site)
        self.authorize(access, "records:read", site=requester.id, purpose=purpose)
        site, record_id = self._locate(token)
        if requester.id != site.id and requester.id in self._copy_sites:
            local = self._replica_read(token, site, record_id, requester, purpose, access)
            if local is not None:
                return local
        rec, blocks = self._load_blocks(site, record_id, purpose, "get", access)
        under = self.authorize(
            access, "records:read", collection=rec.collection, purpose=purpose, hide=True,
            subject=(site.id, rec.subject_id), record=rec.record_id, blocks=blocks,
        )  # fmt: skip
        try:
            return self._read(token, site, rec, requester, purpose, access, under=under)
        except SiteUnavailable as exc:  # e.g. its key store went away since it was opened
            self._unavailable(exc, purpose, "get", access)
            raise exc from None

    def transfer_facts(self, origin: Site, to_country: str) -> dict[str, bool | int | str]:
        """Year-to-date export counts from ``origin`` to ``to_country``, when a pack of the
        origin's country looks at them (volume thresholds, e.g. China's)."""
        reads = self._facts_read.get(origin.country)
        if reads is None:
            wanted = self.engine.facts_read_in(origin.country)
            reads = bool(wanted & {"ytd_export_subjects", "ytd_export_sensitive_subjects"})
            self._facts_read[origin.country] = reads
        if not reads:
            return {}
        subjects, sensitive = self.store(origin.id).transfer_counts(self._today().year, to_country)
        return {"ytd_export_subjects": subjects + 1, "ytd_export_sensitive_subjects": sensitive}

    def _read(
        self, token: str, site: Site, rec: StoredRecord, requester: Site, purpose: str,
        access: Access, *, under: list[dict[str, Any]] | None = None,
    ) -> ReadResult:  # fmt: skip
        """Decide, audit and open a read of ``rec`` (the caller's scopes and the subject's
        blocks already checked; ``under``: the blocks it goes ahead under)."""
        committer = self.committer(site.id)
        committer.expect()  # its entry is on its way: a leader waits a moment for it
        try:
            shown = self._disclose(token, site, rec, requester, purpose, access, under=under)
        except BaseException:
            committer.cancel()
            raise
        # Committed (with the entries of reads arriving at the same moment) before anything
        # is returned.
        committer.append(shown.payload, shown.count, expected=True)
        if shown.error is not None:
            raise shown.error
        assert shown.result is not None
        return shown.result

    def _disclose(
        self, token: str, site: Site, rec: StoredRecord, requester: Site, purpose: str,
        access: Access, *, operation: str = "get",
        opened_record: tuple[Residency, dict[str, Any]] | None = None,
        under: list[dict[str, Any]] | None = None,
    ) -> _Disclosure:  # fmt: skip
        """What a read of ``rec`` by ``requester`` may show, and the audit payload that
        records it, not yet appended (an update appends it in its own transaction).

        At home: a read. From another country the transfer rules of the home site's
        country decide: a transfer (with its year-to-date count), a masked disclosure
        (where a pack permits only masked forms: no transfer, and recorded as what it is,
        with the mask applied to each field), or a refusal."""
        stamp = self._stamp()
        residency, opened = opened_record or self._open_record(site, rec)
        shape = self._record_shape(rec)
        abroad = requester.country != site.country
        facts = self.transfer_facts(site, requester.country) if abroad else None
        decision = self._decide_sorted(
            residency, shape.categories, "retrieve", site.country,
            requester.country if abroad else None, tuple(sorted((facts or {}).items())), stamp,
        )  # fmt: skip
        masked = False
        if decision.outcome is not Outcome.allow:
            if not (abroad and decision.disclosure == "masked"):
                refusal = self._read_event(
                    site, rec, requester, purpose, decision, shape, access, action="refuse",
                    decision=decision.outcome.value,
                    detail={"operation": operation, "to_country": requester.country},
                )  # fmt: skip
                return _Disclosure(
                    refusal.payload(),
                    error=PolicyRefused(
                        f"policy does not let site {requester.id!r} ({requester.country}) read "
                        f"this record: {decision.outcome.value}",
                        decision=decision.to_dict(),
                        hint="the decision's rules say why, its outstanding obligations what would allow it",
                    ),
                )
            masked = True
        if masked:
            opened = masked_fields(opened, shape.by_field, dict(decision.masks))
            if not opened:  # nothing of this record has a permitted masked form
                refusal = self._read_event(
                    site, rec, requester, purpose, decision, shape, access, action="refuse",
                    decision=decision.outcome.value,
                    detail={"operation": operation, "to_country": requester.country, "masked": True},
                )  # fmt: skip
                return _Disclosure(
                    refusal.payload(),
                    error=PolicyRefused(
                        f"policy does not let site {requester.id!r} ({requester.country}) read "
                        "this record, and none of its fields has a permitted masked form",
                        decision=decision.to_dict(),
                    ),
                )
        shown = tuple(sorted(opened))
        count: TransferCount | None = None
        if not abroad:
            # The read's entry: the same payload as ``_read_event(..., decision="allow",
            # fields=shown).payload()``, from a template per request shape.
            template = self._template(
                ("read", id(decision), site.id, purpose, rec.collection, requester.id, shown,
                 shape.categories, access.client),
                decision,
                lambda: PayloadTemplate(
                    self._read_event(
                        site, rec, requester, purpose, decision, shape, access, decision="allow",
                        fields=shown,
                    ),
                    ("record", "subject", "at"),
                ),
            )  # fmt: skip
            payload = template.render(rec.record_id, rec.subject_id, _utcnow().isoformat())
        elif masked:
            payload = self._masked_payload(
                site, requester, purpose, rec, decision, shape, shown, access
            )
        else:
            payload = self._transfer_payload(
                site, requester, purpose, rec, decision, shape, shown, access
            )
            count = TransferCount(
                self._today().year, requester.country, rec.subject_id, shape.sensitive
            )
        if under:  # a read of blocked data, for a reason the block allows: said in its entry
            payload = with_detail(payload, blocks=under)
        result = ReadResult(
            token, site.id, site.country, rec.collection, opened, rec.version, decision,
            abroad and not masked, masked=masked, read_at=site.id,
        )  # fmt: skip
        return _Disclosure(payload, result, count)

    def _read_event(
        self,
        site: Site,
        rec: StoredRecord,
        requester: Site,
        purpose: str,
        ruling: Decision,
        shape: _Shape,
        access: Access,
        **extra: Any,
    ) -> AuditEvent:
        """The audit event of a read of ``rec`` at ``site`` by ``requester``, under
        ``ruling``; ``extra`` sets or overrides fields."""
        return AuditEvent(
            **{
                "action": "read", "site": site.id, "purpose": purpose,
                "collection": rec.collection, "record": rec.record_id,
                "subject": rec.subject_id, "requester": requester.id, "client": access.client,
                "rules": ruling.rule_ids, "categories": shape.categories, **extra,
            }
        )  # fmt: skip

    def _transfer_payload(
        self,
        origin: Site,
        requester: Site,
        purpose: str,
        rec: StoredRecord,
        decision: Decision,
        shape: _Shape,
        shown: tuple[str, ...],
        access: Access,
    ) -> str:
        """A transfer's entry for the origin's hash-chained audit (committed with its
        year-to-date count by the caller)."""
        to_country = requester.country
        template = self._template(
            ("transfer", id(decision), origin.id, purpose, rec.collection, requester.id, shown,
             shape.categories, access.client),
            decision,
            lambda: PayloadTemplate(
                self._read_event(
                    origin, rec, requester, purpose, decision, shape, access,
                    **transfer_detail(
                        decision, origin.country, to_country, dict.fromkeys(shown), "access",
                        rec.version,
                    ),
                ),
                ("record", "subject", "at", "detail.version"),
            ),
        )  # fmt: skip
        return template.render(rec.record_id, rec.subject_id, _utcnow().isoformat(), rec.version)

    def _masked_payload(
        self,
        origin: Site,
        requester: Site,
        purpose: str,
        rec: StoredRecord,
        decision: Decision,
        shape: _Shape,
        shown: tuple[str, ...],
        access: Access,
    ) -> str:
        """A masked disclosure's entry: what it is (not a transfer, since the law let only
        the masked forms cross), each field shown with the mask applied to it, and the
        fields withheld."""
        template = self._template(
            ("masked", id(decision), origin.id, purpose, rec.collection, requester.id, shown,
             shape.categories, access.client),
            decision,
            lambda: PayloadTemplate(
                self._read_event(
                    origin, rec, requester, purpose, decision, shape, access,
                    action="disclose_masked", decision=decision.outcome.value, fields=shown,
                    detail={
                        "kind": "access", "disclosure": "masked",
                        "from_country": origin.country, "to_country": requester.country,
                        "masks": mask_methods(shown, shape.by_field, dict(decision.masks)),
                        "withheld": sorted(set(shape.names) - set(shown)),
                        "version": rec.version,
                    },
                ),
                ("record", "subject", "at", "detail.version"),
            ),
        )  # fmt: skip
        return template.render(rec.record_id, rec.subject_id, _utcnow().isoformat(), rec.version)

    def _replica_read(
        self, token: str, home: Site, record_id: str, requester: Site, purpose: str,
        access: Access,
    ) -> ReadResult | None:  # fmt: skip
        """Serve a read from the requester's own site when it holds a copy that the law
        still permits there; None to fall back to the primary."""
        try:
            copy = self.store(requester.id).get(record_id)
        except SiteUnavailable:
            self._drop(requester.id)
            return None
        if copy is None or copy.primary_site != home.id:
            return None
        under = self.authorize(
            access, "records:read", collection=copy.collection, purpose=purpose, hide=True,
            subject=(requester.id, copy.subject_id), record=copy.record_id,
        )  # fmt: skip
        residency, opened = self._open_record(requester, copy)
        categories = self._field_categories(copy)
        kept = self._decide(
            residency, categories.values(), "store", requester.country,
            facts={"replica": True, "primary_country": home.country},
        )  # fmt: skip
        if kept.outcome is not Outcome.allow:
            return None  # no longer permitted: the worker removes it; ask the primary
        decision = self._decide(
            residency, categories.values(), "retrieve", requester.country,
            facts={"replica": True, "primary_country": home.country},
        )  # fmt: skip
        if decision.outcome is not Outcome.allow:
            return None
        event = AuditEvent(
            action="read", site=requester.id, purpose=purpose, collection=copy.collection,
            record=copy.record_id, subject=copy.subject_id, requester=requester.id,
            client=access.client, decision="allow", rules=decision.rule_ids,
            fields=tuple(sorted(opened)), categories=tuple(sorted(set(categories.values()))),
            detail={"source": "replica", "primary_site": home.id,
                    **({"blocks": under} if under else {})},
        )  # fmt: skip
        self.audit_read(requester.id, event.payload())
        return ReadResult(
            token, home.id, home.country, copy.collection, opened, copy.version, decision, False,
            source="replica", read_at=requester.id,
        )  # fmt: skip

    def find(
        self,
        collection: str,
        *,
        where: Mapping[str, Any],
        purpose: str,
        as_site: str | None = None,
        access: Access | None = None,
    ) -> FindResult:
        """Records whose searchable fields equal the given values, at every site."""
        check_purpose(purpose)
        coll = self.collection(collection)
        access, requester = self._acting(access, as_site)
        self.authorize(
            access, "records:read", site=requester.id, collection=collection, purpose=purpose
        )
        searched = self._searched(collection, coll, where)
        result = FindResult()
        for site in self.config.sites:
            try:
                indexer = self._indexers[site.id]
                digests = [indexer.digest(collection, f, norm) for f, norm in searched.items()]
                self._find_at(site, collection, digests, requester, purpose, access, result)
            except SiteUnavailable:
                self._drop(site.id)
                result.unavailable.append(site.id)
        return result

    def _searched(
        self, collection: str, coll: Collection, where: Mapping[str, Any]
    ) -> dict[str, str]:
        """The fields searched for and each value's normalised form (checked: searchable
        fields of the collection only)."""
        if not where:
            raise BadInput("give at least one field to search by", hint="e.g. --field email=...")
        checked = values.check_fields(collection, coll, where, partial=True)
        for fname in checked:
            if not coll.fields[fname].searchable:
                raise BadInput(
                    f"field {fname!r} is not searchable",
                    hint=f"searchable fields: {', '.join(n for n, s in coll.fields.items() if s.searchable)}",
                )
        return {
            fname: values.normalize(fname, coll.fields[fname], value)
            for fname, value in checked.items()
        }

    def _find_at(
        self,
        site: Site,
        collection: str,
        digests: Sequence[bytes],
        requester: Site,
        purpose: str,
        access: Access,
        result: FindResult,
    ) -> None:
        """Add to ``result`` the primaries of ``collection`` at ``site`` that every one of
        ``digests`` (the site's index entries) finds, each read as decided for the caller."""
        store = self.store(site.id)
        ids: set[str] | None = None
        for digest in digests:
            found = set(store.lookup(digest))
            ids = found if ids is None else ids & found
        for rid in sorted(ids or ()):
            rec, blocks = store.get_for_read(rid)
            if rec is None or rec.is_replica or rec.collection != collection:
                continue
            token = self.tokens.issue(site.id, rid)
            try:
                under = self.authorize(
                    access, "records:read", collection=collection, purpose=purpose,
                    subject=(site.id, rec.subject_id), record=rid, blocks=blocks,
                )  # fmt: skip
                result.records.append(
                    self._read(token, site, rec, requester, purpose, access, under=under)
                )
            except PolicyRefused as exc:
                result.refused.append({"token": token, "site": site.id, "reason": exc.message})
