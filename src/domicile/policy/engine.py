"""The decision engine: a pure function from a ``Request`` to a ``Decision``.

How a request is decided:

1. Each pack's coverage is evaluated against the subject's residency (three-valued).
2. The request's border crossings are listed as flows: an export (``transfer`` with a
   destination), a read from abroad (``retrieve`` with ``to_country``), and, for every pack
   that covers the subject, a write to a site outside its territory (``storage``, or
   ``replica`` when ``--fact replica=true`` says the site copies an in-country primary).
3. Packs not connected to the request (not covering the subject, site not on their
   territory, no flow leaving it) are skipped. In the others, every rule in force on the
   request's date that matches the operation, the categories and (for transfer rules) a
   flow leaving the pack's territory, fires and gives an
   outcome: ``allow``, ``escalate`` or ``deny``. Exemptions waive named rules; a rule that
   might apply only because of weak evidence or an unstated fact escalates instead of
   denying; contested readings escalate.
4. The strictest outcome wins (deny over escalate over allow).

Packs are compiled once, when the engine is built; decisions for repeated requests are
cached (requests are immutable and hashable), which is what makes the engine fast on the
hot path of the vault.
"""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from domicile.countries import country, country_name
from domicile.errors import BadInput, InvalidDate, UnknownName
from domicile.packs.calendar import WorkingCalendar
from domicile.packs.loader import PackSet, filing_matches, load_packs
from domicile.packs.model import (
    WRITE_OPERATIONS,
    Exemption,
    FlowKind,
    ForeignCopies,
    LocalizationRule,
    ObligationRule,
    ObligationSpec,
    Operation,
    Outcome,
    Pack,
    ProhibitionRule,
    Route,
    Status,
    TransferRule,
)
from domicile.policy.decision import (
    Citation,
    Decision,
    JurisdictionResult,
    Obligation,
    Request,
    RuleResult,
)
from domicile.policy.explain import explain
from domicile.policy.logic import (
    FALSE,
    TRUE,
    UNKNOWN,
    Compiler,
    Context,
    Flow,
    Node,
    Unmet,
    _All,
    _Any,
    _CoverageRef,
    _Not,
    _Subject,
    categories_match,
)
from domicile.residency import Residency, SubjectEvidence, resolve

AnyRule = LocalizationRule | TransferRule | ProhibitionRule | ObligationRule
# When two packs mask one category differently, the stricter method wins.
MASK_STRICTNESS = {"initials": 1, "last4": 1, "year": 1, "domain": 2, "redact": 3}
_GERUND = {
    Operation.collect: "collecting it",
    Operation.record: "recording it",
    Operation.store: "storing it",
    Operation.update: "updating it",
    Operation.retrieve: "retrieving it",
    Operation.transfer: "transferring it",
    Operation.delete: "deleting it",
}


@dataclass
class _CompiledRule:
    spec: AnyRule
    applies: Node
    categories: tuple[str, ...]
    citations: tuple[Citation, ...]
    waivers: list[tuple[Exemption, Node]]
    routes: list[tuple[Route, Node, Node]] = field(default_factory=list)
    met_when: Node | None = None


@dataclass
class _CompiledPack:
    pack: Pack
    territory: frozenset[str]
    covers: Node
    calendar: WorkingCalendar
    rules: list[_CompiledRule]
    sources: dict[str, Citation]
    facts_read: frozenset[str] = frozenset()

    @property
    def id(self) -> str:
        return self.pack.pack.id

    @property
    def name(self) -> str:
        return self.pack.pack.name

    def originates_here(self, flow: Flow) -> bool:
        if flow.origin is not None:
            return flow.origin in self.territory
        return flow.origin_pack == self.id


@dataclass
class _Fired:
    result: RuleResult
    unmet: list[Unmet]
    obligations: list[Obligation]


def _compile(pack: Pack, packs: PackSet) -> _CompiledPack:
    calendar = WorkingCalendar(pack.calendar)
    bases = packs.bases()
    compiler = Compiler(pack, calendar, bases, packs.facts())
    coverage = {name: compiler.compile(c.when) for name, c in pack.coverage.items()}
    sources = {s.id: Citation(s.id, s.title, s.kind.value, s.url, None) for s in pack.sources}

    def cites(items: Iterable[Any]) -> tuple[Citation, ...]:
        out = []
        for c in items:
            base = sources[c.source]
            out.append(Citation(base.source, base.title, base.kind, base.url, c.pinpoint))
        return tuple(out)

    exemptions = [(ex, compiler.compile(ex.when)) for ex in pack.exemptions]
    rules: list[_CompiledRule] = []
    for spec in pack.rules:
        cr = _CompiledRule(
            spec=spec,
            applies=compiler.compile(spec.applies),
            categories=compiler.expand_categories(spec.categories),
            citations=cites(spec.cite),
            waivers=[(ex, node) for ex, node in exemptions if spec.id in ex.waives],
        )
        if isinstance(spec, TransferRule):
            cr.routes = [
                (r, compiler.compile(r.when), compiler.compile(r.requires)) for r in spec.routes
            ]
        if isinstance(spec, ObligationRule) and spec.met_when is not None:
            cr.met_when = compiler.compile(spec.met_when)
        rules.append(cr)
    compiler.link(coverage.__getitem__)  # after every reference to a coverage is compiled
    return _CompiledPack(
        pack=pack,
        territory=frozenset(pack.pack.countries),
        covers=coverage[pack.pack.covers],
        calendar=calendar,
        rules=rules,
        sources=sources,
        facts_read=frozenset(compiler.facts_read),
    )


def _subject_reasons(node: Node, ctx: Context, out: list[tuple[str, frozenset[str]]]) -> None:
    """Collect the subject atoms that make a coverage predicate hold or possibly hold."""
    if isinstance(node, _All | _Any):
        for p in node.parts:
            _subject_reasons(p, ctx, out)
    elif isinstance(node, _CoverageRef):
        _subject_reasons(node.target, ctx, out)
    elif isinstance(node, _Subject) and node.eval(ctx) != FALSE:
        out.append((node.attribute, node.countries))
    elif isinstance(node, _Not):
        return


def _parse_bool(name: str, raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("true", "yes", "1", "on"):
        return True
    if low in ("false", "no", "0", "off"):
        return False
    raise BadInput(f"fact {name!r} takes true or false", hint=f"write {name}=true")


def parse_date(raw: str | dt.date, what: str = "date") -> dt.date:
    if isinstance(raw, dt.date):
        return raw
    try:
        return dt.date.fromisoformat(raw.strip())
    except ValueError:
        raise InvalidDate(
            f"{what} is not a real date", hint="write YYYY-MM-DD, e.g. 2025-09-01"
        ) from None


class PolicyEngine:
    """Decides requests against a set of packs. Build once; share freely (no mutable state
    but the decision cache)."""

    def __init__(self, packs: PackSet | None = None, *, cache_size: int = 65536) -> None:
        self.packs = packs if packs is not None else load_packs()
        self._compiled = [_compile(lp.pack, self.packs) for lp in self.packs]
        self._bases = self.packs.bases()
        self._facts = self.packs.facts()
        self._filings = self.packs.filing_names()
        self._versions = tuple(sorted((lp.id, lp.pack.pack.version) for lp in self.packs))
        self._masks = {
            lp.id: {
                key: method
                for name, method in lp.pack.masks.items()
                for key in lp.pack.groups.get(name, [name])
            }
            for lp in self.packs
        }
        self._cache: dict[Request, Decision] = {}
        self._cache_size = cache_size

    @classmethod
    def from_files(cls, extra: Sequence[str] = (), **kwargs: Any) -> PolicyEngine:
        return cls(load_packs(extra), **kwargs)

    def facts_read_in(self, country: str) -> frozenset[str]:
        """The facts that the packs of ``country``'s territory look at (callers compute
        costly facts, such as year-to-date export counts, only when they matter)."""
        out: frozenset[str] = frozenset()
        for cp in self._compiled:
            if country in cp.territory:
                out |= cp.facts_read
        return out

    # --- building requests ------------------------------------------------------------------

    def filing_name(self, raw: str) -> str:
        """Canonical form of a filing name (country suffix upper-cased), or ``UnknownName``."""
        name = raw.strip()
        head, _, tail = name.rpartition(".")
        if len(tail) == 2 and tail.isalpha():
            candidate = f"{head}.{country(tail, what='filing country')}"
            if any(filing_matches(p, candidate) for p in self._filings):
                return candidate
        if name in self._filings and "{country}" not in name:
            return name
        known = [n.replace("{country}", "CC") for n in self._filings]
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        prefix = name.split(".", 1)[0] + "."
        same_pack = [n for n in known if n.startswith(prefix)]
        if close:
            hint = "did you mean " + " or ".join(close) + "?"
        elif same_pack:
            hint = "this pack's filings are: " + ", ".join(same_pack)
        else:
            hint = "`domicile policy list` shows the packs; each pack's filings start with its id"
        raise UnknownName("unknown filing name", hint=hint)

    def fact_value(self, name: str, raw: str | bool | int) -> bool | int | str:
        if name not in self._facts:
            raise UnknownName("unknown fact", hint="use one of: " + ", ".join(sorted(self._facts)))
        ftype = self._facts[name].type
        if isinstance(raw, bool) or ftype == "bool":
            if isinstance(raw, bool):
                if ftype != "bool":
                    raise BadInput(f"fact {name!r} is a {ftype}, not true/false")
                return raw
            return _parse_bool(name, str(raw))
        if ftype == "int":
            try:
                value = int(raw)
            except ValueError:
                raise BadInput(f"fact {name!r} takes a whole number") from None
            if value < 0:
                raise BadInput(f"fact {name!r} cannot be negative")
            return value
        if ftype == "country":
            return country(str(raw), what=f"fact {name}")
        return str(raw)

    def request(
        self,
        *,
        subject: Residency | SubjectEvidence | Mapping[str, Any] | Sequence[str],
        categories: str | Sequence[str],
        operation: str | Operation,
        site_country: str,
        date: str | dt.date,
        to_country: str | None = None,
        filings: Mapping[str, str | dt.date] | None = None,
        bases: Iterable[str] = (),
        facts: Mapping[str, str | bool | int] | None = None,
    ) -> Request:
        """Validate and normalise a request; raises a ``BadInput`` subclass on bad input."""
        if isinstance(subject, Residency):
            residency = subject
        else:
            if isinstance(subject, SubjectEvidence):
                evidence = subject
            elif isinstance(subject, Mapping):
                evidence = SubjectEvidence.from_mapping(subject)
            else:
                evidence = SubjectEvidence.parse(subject)
            residency = resolve(evidence)
        cats = [categories] if isinstance(categories, str) else list(categories)
        if not cats:
            raise BadInput(
                "give at least one data category", hint="e.g. --category user.contact.email"
            )
        checked = tuple(sorted({self.packs.taxonomy.check(c) for c in cats}))
        try:
            op = Operation(operation)
        except ValueError:
            raise BadInput(
                "unknown operation",
                hint="use one of: " + ", ".join(o.value for o in Operation),
            ) from None
        site = country(site_country, what="site country")
        dest = country(to_country, what="destination country") if to_country else None
        if op is Operation.transfer and dest is None:
            raise BadInput("a transfer needs a destination", hint="add --to-country CC")
        if dest is not None and op not in (Operation.transfer, Operation.retrieve):
            raise BadInput(
                f"--to-country is for transfer and retrieve, not {op.value}",
                hint="a read from abroad is `--operation retrieve --to-country CC`",
            )
        day = parse_date(date)
        filed = tuple(
            sorted(
                (self.filing_name(k), parse_date(v, f"filing {k}"))
                for k, v in (filings or {}).items()
            )
        )
        claimed = frozenset(bases)
        for b in claimed:
            if b not in self._bases:
                raise UnknownName(
                    "unknown legal basis",
                    hint="use one of: " + ", ".join(sorted(self._bases)),
                )
        stated = tuple(sorted((k, self.fact_value(k, v)) for k, v in (facts or {}).items()))
        return Request(
            residency=residency,
            categories=checked,
            operation=op,
            site_country=site,
            date=day,
            to_country=dest if dest != site else None,
            filings=filed,
            bases=claimed,
            facts=stated,
        )

    # --- deciding ---------------------------------------------------------------------------

    def decide(self, request: Request) -> Decision:
        """The decision for ``request``, from the cache when the same request was seen."""
        hit = self._cache.get(request)
        if hit is not None:
            return hit
        decision = self.evaluate(request)
        if len(self._cache) >= self._cache_size:
            self._cache.pop(next(iter(self._cache)))
        self._cache[request] = decision
        return decision

    def evaluate(self, request: Request) -> Decision:
        """Decide ``request`` without the cache."""
        facts = dict(request.facts)
        ctx = Context(
            residency=request.residency,
            operation=request.operation,
            categories=request.categories,
            site_country=request.site_country,
            date=request.date,
            filings=dict(request.filings),
            bases=request.bases,
            facts=facts,
        )
        flows: list[tuple[Flow, bool]] = []
        if request.to_country is not None:
            kind = FlowKind.transfer if request.operation is Operation.transfer else FlowKind.access
            flows.append((Flow(kind, request.to_country, origin=request.site_country), False))

        coverage: dict[str, int] = {}
        for cp in self._compiled:
            cov = cp.covers.eval(ctx)
            coverage[cp.id] = cov
            if (
                cov != FALSE
                and request.operation in WRITE_OPERATIONS
                and request.site_country not in cp.territory
            ):
                replica = facts.get("replica") is True
                primary = facts.get("primary_country")
                origin = primary if isinstance(primary, str) and primary in cp.territory else None
                kind = FlowKind.replica if replica else FlowKind.storage
                flow = Flow(kind, request.site_country, origin=origin, origin_pack=cp.id)
                flows.append((flow, cov == UNKNOWN))

        fired: list[_Fired] = []
        for cp in self._compiled:
            # A law has a say only when it is connected to the request: it covers (or may
            # cover) the subject, the site is on its territory, or data leaves it.
            if (
                coverage[cp.id] == FALSE
                and request.site_country not in cp.territory
                and not any(cp.originates_here(f) for f, _ in flows)
            ):
                continue
            for rule in cp.rules:
                spec = rule.spec
                if not spec.effective.covers(request.date):
                    continue
                if not categories_match(request.categories, rule.categories):
                    continue
                if isinstance(spec, LocalizationRule):
                    f = self._localization(cp, rule, spec, ctx, coverage[cp.id])
                    if f:
                        fired.append(f)
                elif isinstance(spec, TransferRule):
                    fired.extend(self._transfer(cp, rule, spec, ctx, flows))
                else:
                    fired.extend(self._conditional(cp, rule, spec, ctx, flows))
        return self._assemble(request, ctx, coverage, flows, fired)

    # --- rule kinds -------------------------------------------------------------------------

    def _result(
        self,
        cp: _CompiledPack,
        rule: _CompiledRule,
        outcome: Outcome,
        reason: str,
        **extra: Any,
    ) -> RuleResult:
        spec = rule.spec
        return RuleResult(
            id=spec.id,
            pack=cp.id,
            kind=spec.kind,
            title=spec.title,
            outcome=outcome,
            reason=reason,
            says=spec.says,
            interpretation=spec.interpretation.status.value,
            interpretation_note=spec.interpretation.note,
            citations=rule.citations,
            masked_when_refused=spec.masked_when_refused,
            **extra,
        )

    def _waiver(self, rule: _CompiledRule, ctx: Context) -> Exemption | None:
        for ex, node in rule.waivers:
            if node.eval(ctx) == TRUE:
                return ex
        return None

    def _standing(
        self, cp: _CompiledPack, spec: AnyRule, items: Iterable[ObligationSpec]
    ) -> list[Obligation]:
        return [Obligation(o.id, o.text, spec.id, cp.id, "ongoing", o.due) for o in items]

    def _localization(
        self,
        cp: _CompiledPack,
        rule: _CompiledRule,
        spec: LocalizationRule,
        ctx: Context,
        coverage: int,
    ) -> _Fired | None:
        if ctx.operation not in spec.operations:
            return None
        ctx.flow = None
        applies = rule.applies.eval(ctx)
        if applies == FALSE:
            return None
        waiver = self._waiver(rule, ctx)
        if waiver is not None:
            res = self._result(
                cp, rule, Outcome.allow, f"waived: {waiver.title}", waived_by=waiver.id
            )
            return _Fired(res, [], [])
        site = ctx.site_country
        where = f"{site} ({country_name(site)})"
        if site in cp.territory:
            outcome = Outcome.allow
            reason = f"the site is in {where}, inside {cp.name}"
        elif ctx.facts.get("replica") is True:
            fc = spec.foreign_copies
            if fc is ForeignCopies.allowed:
                outcome, reason = (
                    Outcome.allow,
                    f"a copy in {where} of the in-country primary is allowed",
                )
            elif fc is ForeignCopies.transfer_rules:
                outcome = Outcome.allow
                reason = (
                    f"a copy in {where} of the in-country primary is allowed when the transfer "
                    f"rules of {cp.name} allow it"
                )
            elif fc is ForeignCopies.contested:
                outcome = Outcome.escalate
                reason = (
                    f"whether a copy in {where} of the in-country primary may be kept is "
                    "contested; a lawyer must decide"
                )
            else:
                outcome = spec.violation
                reason = f"copies abroad are not allowed; the site is in {where}, outside {cp.name}"
        else:
            outcome = spec.violation
            reason = (
                f"the site is in {where}, outside {cp.name}: {_GERUND[ctx.operation]} there is "
                "not permitted"
            )
        uncertain = applies == UNKNOWN
        if uncertain:
            reason += (
                "; the subject may be covered (weak evidence), so this is treated conservatively"
            )
            if outcome is Outcome.deny:
                outcome = Outcome.escalate
        res = self._result(cp, rule, outcome, reason, uncertain=uncertain)
        return _Fired(res, [], self._standing(cp, spec, spec.obligations))

    def _transfer(
        self,
        cp: _CompiledPack,
        rule: _CompiledRule,
        spec: TransferRule,
        ctx: Context,
        flows: list[tuple[Flow, bool]],
    ) -> list[_Fired]:
        out: list[_Fired] = []
        for flow, flow_uncertain in flows:
            if flow.kind not in spec.flows or not cp.originates_here(flow):
                continue
            if flow.destination in cp.territory:
                continue
            ctx.flow = flow
            ctx.unknown_facts = set()
            applies = rule.applies.eval(ctx)
            if applies == FALSE:
                continue
            what = flow.describe(cp.name)
            waiver = self._waiver(rule, ctx)
            if waiver is not None:
                res = self._result(
                    cp, rule, Outcome.allow, f"{what}: waived: {waiver.title}",
                    waived_by=waiver.id, flow=flow,
                )  # fmt: skip
                out.append(_Fired(res, [], []))
                continue
            ctx.filings_used = ()
            outcome, route, reason, unmet, obligations = self._route(cp, rule, spec, ctx)
            uncertain = applies == UNKNOWN or flow_uncertain
            if uncertain and outcome is Outcome.deny:
                outcome = Outcome.escalate
                reason += "; the subject may be covered (weak evidence), so this escalates"
            if ctx.unknown_facts:
                reason += f" (not stated: {', '.join(sorted(ctx.unknown_facts))})"
            res = self._result(
                cp, rule, outcome, f"{what}: {reason}", route=route, flow=flow,
                uncertain=uncertain, filings_used=ctx.filings_used,
            )  # fmt: skip
            out.append(_Fired(res, unmet, obligations + self._standing(cp, spec, spec.obligations)))
        ctx.flow = None
        return out

    def _route(
        self, cp: _CompiledPack, rule: _CompiledRule, spec: TransferRule, ctx: Context
    ) -> tuple[Outcome, str | None, str, list[Unmet], list[Obligation]]:
        """Pick the route. A route whose ``when`` is only possibly true is weighed too:
        if it could allow what the chosen route refuses, or could refuse what it allows,
        the answer escalates rather than guessing."""
        maybe_allows: list[Route] = []
        maybe_refuses: list[tuple[Route, list[Unmet]]] = []
        for route, when, requires in rule.routes:
            if not route.effective.covers(ctx.date):
                continue
            w = when.eval(ctx)
            if w == FALSE:
                continue
            met = requires.eval(ctx)
            if w == UNKNOWN:
                if met == TRUE:
                    maybe_allows.append(route)
                else:
                    maybe_refuses.append((route, requires.unmet(ctx)))
                continue
            standing = self._standing(cp, spec, route.obligations)
            if met == TRUE:
                if route.status is Status.contested:
                    return (
                        Outcome.escalate, route.name,
                        f"route '{route.title}' is met but its reading is contested; a lawyer must decide",
                        [], standing,
                    )  # fmt: skip
                if maybe_refuses:
                    other, unmet = maybe_refuses[0]
                    return (
                        Outcome.escalate, route.name,
                        f"route '{route.title}' is met, but route '{other.title}' may apply instead "
                        "and is not met",
                        unmet, standing,
                    )  # fmt: skip
                ctx.filings_used = tuple(dict.fromkeys([*when.used(ctx), *requires.used(ctx)]))
                return Outcome.allow, route.name, f"route '{route.title}' is met", [], standing
            unmet = requires.unmet(ctx)
            missing = "; ".join(u.text for u in unmet) or "its conditions do not hold"
            if met == UNKNOWN or maybe_allows:
                alt = f"; route '{maybe_allows[0].title}' may apply instead" if maybe_allows else ""
                return (
                    Outcome.escalate, route.name,
                    f"route '{route.title}' is not met ({missing}){alt}", unmet, standing,
                )  # fmt: skip
            return (
                spec.violation, route.name,
                f"route '{route.title}' is not met: {missing}", unmet, standing,
            )  # fmt: skip
        if maybe_allows:
            return (
                Outcome.escalate, maybe_allows[0].name,
                f"only route '{maybe_allows[0].title}' may apply, and whether it does is uncertain",
                [], [],
            )  # fmt: skip
        unmet = [u for _, us in maybe_refuses for u in us]
        return spec.violation, None, "no lawful route applies to this transfer", unmet, []

    def _conditional(
        self,
        cp: _CompiledPack,
        rule: _CompiledRule,
        spec: ProhibitionRule | ObligationRule,
        ctx: Context,
        flows: list[tuple[Flow, bool]],
    ) -> list[_Fired]:
        if spec.operations is not None and ctx.operation not in spec.operations:
            return []
        if spec.flows is None:
            targets: list[tuple[Flow | None, bool]] = [(None, False)]
        else:
            targets = [
                (f, u)
                for f, u in flows
                if f.kind in spec.flows
                and cp.originates_here(f)
                and f.destination not in cp.territory
            ]
        out: list[_Fired] = []
        for flow, flow_uncertain in targets:
            ctx.flow = flow
            ctx.unknown_facts = set()
            applies = rule.applies.eval(ctx)
            if applies == FALSE:
                continue
            prefix = f"{flow.describe(cp.name)}: " if flow else ""
            waiver = self._waiver(rule, ctx)
            if waiver is not None:
                res = self._result(
                    cp, rule, Outcome.allow, f"{prefix}waived: {waiver.title}",
                    waived_by=waiver.id, flow=flow,
                )  # fmt: skip
                out.append(_Fired(res, [], []))
                continue
            uncertain = applies == UNKNOWN or flow_uncertain
            if isinstance(spec, ProhibitionRule):
                outcome = spec.violation
                reason = f"{prefix}{spec.title.rstrip('.')}"
                obligations: list[Obligation] = []
                unmet: list[Unmet] = []
            else:
                duty = spec.duty
                status: Literal["met", "outstanding", "ongoing"] = "ongoing"
                outcome = Outcome.allow
                unmet = []
                if rule.met_when is not None:
                    met = rule.met_when.eval(ctx) == TRUE
                    status = "met" if met else "outstanding"
                    if not met:
                        outcome = spec.violation
                        unmet = rule.met_when.unmet(ctx)
                reason = f"{prefix}{duty.text}: {status}"
                obligations = [Obligation(duty.id, duty.text, spec.id, cp.id, status, duty.due)]
            if uncertain and outcome is Outcome.deny:
                outcome = Outcome.escalate
            if applies == UNKNOWN and ctx.unknown_facts:
                reason += f" (not stated: {', '.join(sorted(ctx.unknown_facts))})"
            elif uncertain:
                reason += " (the subject may be covered: weak evidence)"
            res = self._result(cp, rule, outcome, reason, flow=flow, uncertain=uncertain)
            out.append(_Fired(res, unmet, obligations + self._standing(cp, spec, spec.obligations)))
        ctx.flow = None
        return out

    # --- assembling the decision ------------------------------------------------------------

    def jurisdictions(
        self, residency: Residency, *, site_country: str | None = None, flows: Sequence[Flow] = ()
    ) -> tuple[JurisdictionResult, ...]:
        """The packs that cover a subject, or whose territory a request touches."""
        ctx = Context(
            residency=residency,
            operation=Operation.store,
            categories=("user",),
            site_country=site_country or "--",
            date=dt.date.today(),
            filings={},
            bases=frozenset(),
            facts={},
        )
        return self._jurisdictions(
            ctx, {cp.id: cp.covers.eval(ctx) for cp in self._compiled}, flows
        )

    def _jurisdictions(
        self, ctx: Context, coverage: Mapping[str, int], flows: Sequence[Flow]
    ) -> tuple[JurisdictionResult, ...]:
        out = []
        for cp in self._compiled:
            cov = coverage[cp.id]
            site_inside = ctx.site_country in cp.territory
            leaving = [
                f for f in flows if f.origin in cp.territory and f.destination not in cp.territory
            ]
            if cov == FALSE and not site_inside and not leaving:
                continue
            reasons: list[str] = []
            if cov != FALSE:
                hits: list[tuple[str, frozenset[str]]] = []
                _subject_reasons(cp.covers, ctx, hits)
                for attribute, countries in hits:
                    for why in ctx.residency.why(attribute, countries):  # type: ignore[arg-type]
                        if why not in reasons:
                            reasons.append(why)
                if cov == UNKNOWN:
                    reasons.append("coverage is possible, not certain: treated conservatively")
            if site_inside:
                reasons.append(f"the site is in {ctx.site_country}, inside {cp.name}")
            for f in leaving:
                reasons.append(f"personal data leaves {f.origin} for {f.destination}")
            label = "covered" if cov == TRUE else "possible" if cov == UNKNOWN else "none"
            out.append(
                JurisdictionResult(
                    pack=cp.id,
                    jurisdiction=cp.pack.pack.jurisdiction,
                    name=cp.name,
                    coverage=label,  # type: ignore[arg-type]
                    territory=site_inside or bool(leaving),
                    reasons=tuple(reasons),
                )
            )
        return tuple(out)

    def _assemble(
        self,
        request: Request,
        ctx: Context,
        coverage: Mapping[str, int],
        flows: list[tuple[Flow, bool]],
        fired: list[_Fired],
    ) -> Decision:
        outcome = Outcome.allow
        for f in fired:
            if f.result.outcome.rank > outcome.rank:
                outcome = f.result.outcome
        obligations: dict[str, Obligation] = {}
        for f in fired:
            for u in f.unmet:
                if u.id not in obligations:
                    obligations[u.id] = Obligation(
                        u.id, u.text, f.result.id, f.result.pack, "outstanding", None, u.earliest
                    )
            for o in f.obligations:
                if o.id not in obligations or o.status == "outstanding":
                    obligations[o.id] = o
        earliest: dt.date | None = None
        blocking = [f for f in fired if f.result.outcome is not Outcome.allow]
        if blocking and all(f.unmet and all(u.earliest for u in f.unmet) for f in blocking):
            earliest = max(u.earliest for f in blocking for u in f.unmet if u.earliest)
        jurisdictions = self._jurisdictions(ctx, coverage, [f for f, _ in flows])
        disclosure: Literal["full", "masked", "none"] = "full"
        masks: dict[str, str] = {}
        if outcome is not Outcome.allow:
            disclosure = "none"
            if all(f.result.masked_when_refused for f in blocking):
                disclosure = "masked"
                for f in blocking:
                    for key, method in self._masks[f.result.pack].items():
                        old = masks.get(key)
                        if old is None or MASK_STRICTNESS[method] > MASK_STRICTNESS[old]:
                            masks[key] = method
        decision = Decision(
            outcome=outcome,
            request=request,
            jurisdictions=jurisdictions,
            rules=tuple(f.result for f in fired),
            obligations=tuple(obligations.values()),
            explanation="",
            earliest_allowed=earliest,
            packs=self._versions,
            disclosure=disclosure,
            masks=tuple(sorted(masks.items())),
        )
        return replace(decision, explanation=explain(decision))
