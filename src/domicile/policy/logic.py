"""Predicates compiled to small objects, evaluated in three-valued (Kleene) logic.

TRUE = 1, UNKNOWN = 0, FALSE = -1: ``all`` takes the minimum, ``any`` the maximum and
``not`` the negation. UNKNOWN arises from weak residency evidence and from facts a
request did not state (a year-to-date export count); the engine treats UNKNOWN
conservatively.

A compiled node can also say, when it is not TRUE, what would make it so (``unmet``):
those become the obligations that would unlock a refused transfer.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from domicile.categories import is_under
from domicile.packs.calendar import WorkingCalendar
from domicile.packs.model import CountryList, FactDecl, FlowKind, Operation, Predicate
from domicile.residency import Residency

if TYPE_CHECKING:
    from domicile.packs.model import Pack

TRUE, UNKNOWN, FALSE = 1, 0, -1


@dataclass(frozen=True)
class Flow:
    """Personal data crossing a border. ``origin_pack`` is set when the flow leaves a
    pack's territory as a whole (a covered subject's data written abroad)."""

    kind: FlowKind
    destination: str
    origin: str | None = None
    origin_pack: str | None = None

    def describe(self, territory_name: str | None = None) -> str:
        src = self.origin or territory_name or "the subject's country"
        if self.kind is FlowKind.transfer:
            return f"sending personal data from {src} to {self.destination}"
        if self.kind is FlowKind.access:
            return f"a requester in {self.destination} reading personal data held in {src}"
        if self.kind is FlowKind.replica:
            return f"keeping a copy in {self.destination} of a primary held in {src}"
        return f"writing the data of a subject covered in {src} straight to a site in {self.destination}"


@dataclass
class Context:
    """Everything a predicate may look at, for one request (and one flow at a time)."""

    residency: Residency
    operation: Operation
    categories: tuple[str, ...]
    site_country: str
    date: dt.date
    filings: dict[str, dt.date]
    bases: frozenset[str]
    facts: dict[str, bool | int | str]
    flow: Flow | None = None
    unknown_facts: set[str] = field(default_factory=set)
    filings_used: tuple[str, ...] = ()


@dataclass(frozen=True)
class Unmet:
    """What is missing for a condition to hold, as an obligation that would unlock it."""

    id: str
    text: str
    earliest: dt.date | None = None


class Node:
    __slots__ = ()

    def eval(self, ctx: Context) -> int:
        raise NotImplementedError

    def unmet(self, ctx: Context) -> list[Unmet]:
        """Why this is not TRUE; called only on the slow path, for explanations."""
        return []

    def used(self, ctx: Context) -> list[str]:
        """The filings on record that make this TRUE (for the transfer ledger)."""
        return []


class _All(Node):
    __slots__ = ("parts",)

    def __init__(self, parts: list[Node]) -> None:
        self.parts = parts

    def eval(self, ctx: Context) -> int:
        low = TRUE
        for p in self.parts:
            v = p.eval(ctx)
            if v == FALSE:
                return FALSE
            low = min(low, v)
        return low

    def unmet(self, ctx: Context) -> list[Unmet]:
        return [u for p in self.parts if p.eval(ctx) != TRUE for u in p.unmet(ctx)]

    def used(self, ctx: Context) -> list[str]:
        return [n for p in self.parts for n in p.used(ctx)]


class _Any(Node):
    __slots__ = ("parts",)

    def __init__(self, parts: list[Node]) -> None:
        self.parts = parts

    def eval(self, ctx: Context) -> int:
        high = FALSE
        for p in self.parts:
            v = p.eval(ctx)
            if v == TRUE:
                return TRUE
            high = max(high, v)
        return high

    def used(self, ctx: Context) -> list[str]:
        for p in self.parts:
            if p.eval(ctx) == TRUE:
                return p.used(ctx)
        return []

    def unmet(self, ctx: Context) -> list[Unmet]:
        options = [p.unmet(ctx) for p in self.parts]
        options = [o for o in options if o]
        if not options:
            return []
        if len(options) == 1:
            return options[0]
        texts = [" and ".join(u.text for u in o) for o in options]
        ids = ["+".join(u.id for u in o) for o in options]
        return [Unmet("|".join(ids), "one of: " + "; or ".join(texts))]


class _Not(Node):
    __slots__ = ("part",)

    def __init__(self, part: Node) -> None:
        self.part = part

    def eval(self, ctx: Context) -> int:
        return -self.part.eval(ctx)


class _Const(Node):
    __slots__ = ("value",)

    def __init__(self, value: int) -> None:
        self.value = value

    def eval(self, ctx: Context) -> int:
        return self.value


class _Subject(Node):
    __slots__ = ("attribute", "countries")

    def __init__(self, attribute: str, countries: frozenset[str]) -> None:
        self.attribute = attribute
        self.countries = countries

    def eval(self, ctx: Context) -> int:
        r = ctx.residency
        tri = (
            r.citizenship
            if self.attribute == "citizenship"
            else r.residence
            if self.attribute == "residence"
            else r.location
        )
        return tri.test(self.countries)


class _Site(Node):
    __slots__ = ("countries",)

    def __init__(self, countries: frozenset[str]) -> None:
        self.countries = countries

    def eval(self, ctx: Context) -> int:
        return TRUE if ctx.site_country in self.countries else FALSE


class _Destination(Node):
    __slots__ = ("countries",)

    def __init__(self, countries: frozenset[str]) -> None:
        self.countries = countries

    def eval(self, ctx: Context) -> int:
        f = ctx.flow
        return TRUE if f is not None and f.destination in self.countries else FALSE


class _DestinationInList(Node):
    """Membership on the request date. An unverified member gives UNKNOWN; a member that
    holds only with a fact (``requires_fact``) gives that fact's value."""

    __slots__ = ("members", "name")

    def __init__(self, name: str, lst: CountryList) -> None:
        self.name = name
        self.members = lst.members

    def eval(self, ctx: Context) -> int:
        f = ctx.flow
        if f is None:
            return FALSE
        best = FALSE
        for m in self.members:
            if m.country != f.destination:
                continue
            if (m.from_ and ctx.date < m.from_) or (m.to and ctx.date > m.to):
                continue
            v = TRUE if m.verified else UNKNOWN
            if m.requires_fact is not None:
                fact = ctx.facts.get(m.requires_fact)
                if fact is None or fact is not True:
                    v = FALSE
            best = max(best, v)
        return best


class _Origin(Node):
    __slots__ = ("countries", "pack_id")

    def __init__(self, countries: frozenset[str], pack_id: str | None) -> None:
        self.countries = countries
        self.pack_id = pack_id

    def eval(self, ctx: Context) -> int:
        f = ctx.flow
        if f is None:
            return FALSE
        if f.origin is not None:
            return TRUE if f.origin in self.countries else FALSE
        return TRUE if self.pack_id is not None and f.origin_pack == self.pack_id else FALSE


class _FlowKind(Node):
    __slots__ = ("kinds",)

    def __init__(self, kinds: frozenset[FlowKind]) -> None:
        self.kinds = kinds

    def eval(self, ctx: Context) -> int:
        return TRUE if ctx.flow is not None and ctx.flow.kind in self.kinds else FALSE


class _Operation(Node):
    __slots__ = ("ops",)

    def __init__(self, ops: frozenset[Operation]) -> None:
        self.ops = ops

    def eval(self, ctx: Context) -> int:
        return TRUE if ctx.operation in self.ops else FALSE


class _Categories(Node):
    __slots__ = ("keys",)

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = keys

    def eval(self, ctx: Context) -> int:
        return TRUE if categories_match(ctx.categories, self.keys) else FALSE


class _Basis(Node):
    __slots__ = ("name", "title")

    def __init__(self, name: str, title: str) -> None:
        self.name = name
        self.title = title

    def eval(self, ctx: Context) -> int:
        return TRUE if self.name in ctx.bases else FALSE

    def unmet(self, ctx: Context) -> list[Unmet]:
        return [Unmet(f"basis.{self.name}", f"rely on {self.title} (--basis {self.name})")]


class _Fact(Node):
    __slots__ = ("default", "name", "op", "title", "value")

    def __init__(
        self, name: str, op: str, value: bool | int | str, title: str, default: bool | None
    ) -> None:
        self.name = name
        self.op = op
        self.value = value
        self.title = title
        self.default = default

    def eval(self, ctx: Context) -> int:
        got = ctx.facts.get(self.name, self.default)
        if got is None:
            ctx.unknown_facts.add(self.name)
            return UNKNOWN
        op, want = self.op, self.value
        if op == "eq":
            ok = got == want
        elif op == "ne":
            ok = got != want
        elif not isinstance(got, int) or isinstance(got, bool):
            return FALSE
        elif op == "gt":
            ok = got > int(want)
        elif op == "gte":
            ok = got >= int(want)
        elif op == "lt":
            ok = got < int(want)
        else:
            ok = got <= int(want)
        return TRUE if ok else FALSE

    def unmet(self, ctx: Context) -> list[Unmet]:
        sign = {"eq": "=", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[self.op]
        if ctx.facts.get(self.name, self.default) is None:
            return [Unmet(f"fact.{self.name}", f"state {self.title} (--fact {self.name}=...)")]
        return [Unmet(f"fact.{self.name}", f"needs {self.title} {sign} {self.value}")]


def _filing_name(template: str, ctx: Context) -> str | None:
    if "{destination}" not in template:
        return template
    if ctx.flow is None:
        return None
    return template.replace("{destination}", ctx.flow.destination)


class _Filed(Node):
    __slots__ = ("template", "title", "unlocks")

    def __init__(self, template: str, title: str, unlocks: str | None) -> None:
        self.template = template
        self.title = title
        self.unlocks = unlocks

    def eval(self, ctx: Context) -> int:
        name = _filing_name(self.template, ctx)
        if name is None:
            return FALSE
        on = ctx.filings.get(name)
        return TRUE if on is not None and on <= ctx.date else FALSE

    def used(self, ctx: Context) -> list[str]:
        name = _filing_name(self.template, ctx)
        return [name] if name and self.eval(ctx) == TRUE else []

    def unmet(self, ctx: Context) -> list[Unmet]:
        name = _filing_name(self.template, ctx) or self.template
        dest = ctx.flow.destination if ctx.flow else "?"
        title = self.title.replace("{country}", dest)
        text = (
            self.unlocks.replace("{country}", dest) if self.unlocks else f"put on record: {title}"
        )
        on = ctx.filings.get(name)
        if on is not None and on > ctx.date:
            text += f" (on record only from {on.isoformat()})"
        return [Unmet(name, f"{text} (--filing {name}=YYYY-MM-DD)")]


class _Waited(Node):
    __slots__ = ("after", "calendar", "days", "title", "working_days")

    def __init__(
        self,
        after: str,
        title: str,
        working_days: int | None,
        days: int | None,
        calendar: WorkingCalendar,
    ) -> None:
        self.after = after
        self.title = title
        self.working_days = working_days
        self.days = days
        self.calendar = calendar

    def earliest(self, ctx: Context) -> dt.date | None:
        name = _filing_name(self.after, ctx)
        on = ctx.filings.get(name) if name else None
        if on is None:
            return None
        return self.calendar.earliest_after(on, working_days=self.working_days, days=self.days)

    def eval(self, ctx: Context) -> int:
        first = self.earliest(ctx)
        return TRUE if first is not None and ctx.date >= first else FALSE

    def used(self, ctx: Context) -> list[str]:
        name = _filing_name(self.after, ctx)
        return [name] if name and self.eval(ctx) == TRUE else []

    def unmet(self, ctx: Context) -> list[Unmet]:
        period = f"{self.working_days} working days" if self.working_days else f"{self.days} days"
        first = self.earliest(ctx)
        name = _filing_name(self.after, ctx) or self.after
        if first is None:
            text = f"wait {period} after putting on record: {self.title}"
        else:
            text = f"wait {period} after {self.title} (filed {ctx.filings[name].isoformat()}): allowed from {first.isoformat()}"
        return [Unmet(f"wait.{name}", text, first)]


class _CoverageRef(Node):
    __slots__ = ("name", "target")

    def __init__(self, name: str) -> None:
        self.name = name
        self.target: Node = _Const(FALSE)

    def eval(self, ctx: Context) -> int:
        return self.target.eval(ctx)


def categories_match(requested: Iterable[str], keys: Iterable[str]) -> bool:
    keys = tuple(keys)
    return any(is_under(c, k) for c in requested for k in keys)


@dataclass
class Compiler:
    """Compiles one pack's predicates, resolving names against the pack."""

    pack: Pack
    calendar: WorkingCalendar
    bases: dict[str, str]
    facts: dict[str, FactDecl]
    coverage_refs: dict[str, _CoverageRef] = field(default_factory=dict)
    facts_read: set[str] = field(default_factory=set)  # every fact a condition looks at

    @property
    def territory(self) -> frozenset[str]:
        return frozenset(self.pack.pack.countries)

    def countries(self, values: Iterable[str]) -> frozenset[str]:
        out: set[str] = set()
        for v in values:
            if v == "territory":
                out |= self.territory
            else:
                out.add(v)
        return frozenset(out)

    def expand_categories(self, keys: Iterable[str]) -> tuple[str, ...]:
        out: list[str] = []
        for k in keys:
            out.extend(self.pack.groups.get(k, [k]))
        return tuple(out)

    def filing_title(self, template: str) -> tuple[str, str | None]:
        spec = self.pack.filings[template.replace("{destination}", "{country}")]
        return spec.title, spec.unlocks

    def compile(self, p: Predicate) -> Node:
        a = p.atom
        if p.all is not None:
            return _All([self.compile(x) for x in p.all])
        if p.any is not None:
            return _Any([self.compile(x) for x in p.any])
        if p.not_ is not None:
            return _Not(self.compile(p.not_))
        if a == "always":
            return _Const(TRUE)
        if p.coverage is not None:
            return self.coverage_refs.setdefault(p.coverage, _CoverageRef(p.coverage))
        if p.citizen_of is not None:
            return _Subject("citizenship", self.countries(p.citizen_of))
        if p.resident_of is not None:
            return _Subject("residence", self.countries(p.resident_of))
        if p.located_in is not None:
            return _Subject("location", self.countries(p.located_in))
        if p.site_in is not None:
            return _Site(self.countries(p.site_in))
        if p.destination_in is not None:
            return _Destination(self.countries(p.destination_in))
        if p.destination_in_list is not None:
            name = p.destination_in_list
            return _DestinationInList(name, self.pack.lists[name])
        if p.origin_in is not None:
            pack_id = self.pack.pack.id if "territory" in p.origin_in else None
            return _Origin(self.countries(p.origin_in), pack_id)
        if p.flow is not None:
            return _FlowKind(frozenset(p.flow))
        if p.operation is not None:
            return _Operation(frozenset(p.operation))
        if p.categories is not None:
            return _Categories(self.expand_categories(p.categories))
        if p.basis is not None:
            return _Basis(p.basis, self.bases.get(p.basis, p.basis))
        if p.fact is not None:
            op, value = p.fact.comparison
            decl = self.facts[p.fact.name]
            self.facts_read.add(p.fact.name)
            return _Fact(p.fact.name, op, value, decl.title, decl.default)
        if p.filed is not None:
            title, unlocks = self.filing_title(p.filed)
            return _Filed(p.filed, title, unlocks)
        if p.waited is not None:
            title, _ = self.filing_title(p.waited.after)
            return _Waited(
                p.waited.after, title, p.waited.working_days, p.waited.days, self.calendar
            )
        raise AssertionError(f"unhandled predicate atom {a}")

    def link(self, compiled: Callable[[str], Node]) -> None:
        """Point coverage references at their compiled coverage predicates."""
        for name, ref in self.coverage_refs.items():
            ref.target = compiled(name)
