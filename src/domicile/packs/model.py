"""The jurisdiction pack format (``format: 1``), as typed models.

A pack is one law (or a family of related laws) written as data. The engine reads it;
it holds no code. Validation happens here (shape) and in ``loader`` (references between
parts of the pack, which need the whole pack). ``docs/packs.md`` describes the format for
people who write packs.
"""

from __future__ import annotations

import datetime as dt
import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from domicile.countries import country

FORMAT_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _one_line(value: Any) -> Any:
    """Folded YAML text keeps line breaks and trailing newlines; prose is one line."""
    return " ".join(value.split()) if isinstance(value, str) else value


Prose = Annotated[str, BeforeValidator(_one_line)]


# --- vocabulary -----------------------------------------------------------------------------


class Operation(StrEnum):
    """What is done with personal data. Follows the verbs the laws use."""

    collect = "collect"
    record = "record"
    store = "store"
    update = "update"
    retrieve = "retrieve"
    transfer = "transfer"
    delete = "delete"


# Operations that put data somewhere (and so can start a storage flow abroad).
WRITE_OPERATIONS = frozenset(
    {Operation.collect, Operation.record, Operation.store, Operation.update}
)


class Outcome(StrEnum):
    """A decision. Order matters: ``strictest`` picks the later one."""

    allow = "allow"
    escalate = "escalate"
    deny = "deny"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Outcome.allow: 0, Outcome.escalate: 1, Outcome.deny: 2}


class FlowKind(StrEnum):
    """How personal data crosses a border.

    - ``transfer``: data is sent abroad (an export, a disclosure to a foreign recipient);
    - ``access``: a requester abroad reads data kept at the site (remote access);
    - ``replica``: a copy of an in-country primary is kept at a foreign site;
    - ``storage``: data is written straight to a foreign site (no in-country primary).
    """

    transfer = "transfer"
    access = "access"
    replica = "replica"
    storage = "storage"


class Status(StrEnum):
    """How firm the legal reading behind a rule is."""

    statutory = "statutory"
    regulation = "regulation"
    regulator_guidance = "regulator_guidance"
    regulator_informal = "regulator_informal"
    practitioner = "practitioner"
    contested = "contested"
    unknown = "unknown"


class SourceKind(StrEnum):
    statute = "statute"
    regulation = "regulation"
    regulator_order = "regulator_order"
    regulator_guidance = "regulator_guidance"
    ministry_guidance = "ministry_guidance"
    court = "court"
    treaty = "treaty"
    practitioner = "practitioner"
    news = "news"


class LocalizationMode(StrEnum):
    """``primary``: the master copy lives in the country, copies abroad may follow it;
    ``exclusive``: stored only in the country; ``copy``: a copy must exist in the country;
    ``on_demand``: only once the regulator orders it."""

    primary = "primary"
    exclusive = "exclusive"
    copy = "copy"
    on_demand = "on_demand"


class ForeignCopies(StrEnum):
    """What the law says of a copy, kept abroad, of an in-country primary."""

    allowed = "allowed"
    transfer_rules = "transfer_rules"  # allowed when the pack's transfer rules allow the copy
    contested = "contested"  # escalate: lawyers disagree
    forbidden = "forbidden"


CountryCode = Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
# How a masked disclosure shows a value: a name's initials, an e-mail's domain, the last
# four characters, a date's year; ``redact`` withholds it.
MaskMethod = Literal["initials", "domain", "last4", "year", "redact"]
Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*(\.[a-z0-9_{}]+)*$")]


def _country_list(value: Any) -> Any:
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list):
        return [country(v, what="country") if isinstance(v, str) else v for v in value]
    return value


# --- predicates -----------------------------------------------------------------------------


class FactTest(_Model):
    """Compare a fact (``--fact NAME=VALUE``) with a value. Exactly one comparison."""

    name: Name
    eq: bool | int | str | None = None
    ne: bool | int | str | None = None
    gt: int | None = None
    gte: int | None = None
    lt: int | None = None
    lte: int | None = None

    @model_validator(mode="after")
    def _one_comparison(self) -> FactTest:
        given = [k for k in ("eq", "ne", "gt", "gte", "lt", "lte") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of eq, ne, gt, gte, lt, lte")
        return self

    @property
    def comparison(self) -> tuple[str, bool | int | str]:
        for k in ("eq", "ne", "gt", "gte", "lt", "lte"):
            v = getattr(self, k)
            if v is not None:
                return k, v
        raise AssertionError("validated to hold one comparison")


class Waited(_Model):
    """True once ``working_days`` (or ``days``) have passed since a filing.

    Counting starts the day after the filing date; the operation may happen from the day
    after the last counted day. Working days skip weekends and the pack's public holidays.
    """

    after: Name
    working_days: int | None = Field(default=None, ge=1)
    days: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_period(self) -> Waited:
        if (self.working_days is None) == (self.days is None):
            raise ValueError("give exactly one of working_days, days")
        return self


# The atoms of a predicate. Exactly one key is set. The subject atoms are three-valued:
# they are "unknown" when only weak evidence (phone prefix, IP address) suggests a country.
_ATOMS = (
    "all",
    "any",
    "not_",
    "always",
    "coverage",
    "citizen_of",
    "resident_of",
    "located_in",
    "site_in",
    "destination_in",
    "destination_in_list",
    "origin_in",
    "flow",
    "operation",
    "categories",
    "basis",
    "fact",
    "filed",
    "waited",
)


class Predicate(_Model):
    """A condition, written as one-key maps, e.g. ``{citizen_of: RU}`` or
    ``{all: [{flow: [access]}, {filed: ru.art12_notice}]}``.

    Country sets accept ``territory`` for the pack's own countries.
    """

    all: list[Predicate] | None = None
    any: list[Predicate] | None = None
    not_: Predicate | None = Field(default=None, alias="not")
    always: bool | None = None
    coverage: Name | None = None
    citizen_of: list[str] | None = None
    resident_of: list[str] | None = None
    located_in: list[str] | None = None
    site_in: list[str] | None = None
    destination_in: list[str] | None = None
    destination_in_list: Name | None = None
    origin_in: list[str] | None = None
    flow: list[FlowKind] | None = None
    operation: list[Operation] | None = None
    categories: list[str] | None = None
    basis: Name | None = None
    fact: FactTest | None = None
    filed: Name | None = None
    waited: Waited | None = None

    @field_validator(
        "citizen_of",
        "resident_of",
        "located_in",
        "site_in",
        "destination_in",
        "origin_in",
        "flow",
        "operation",
        "categories",
        mode="before",
    )
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator(
        "citizen_of", "resident_of", "located_in", "site_in", "destination_in", "origin_in"
    )
    @classmethod
    def _countries(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        return [v if v == "territory" else country(v) for v in value]

    @model_validator(mode="after")
    def _one_atom(self) -> Predicate:
        given = [a for a in _ATOMS if getattr(self, a) is not None]
        if len(given) != 1:
            names = ", ".join(a.rstrip("_") for a in _ATOMS)
            raise ValueError(f"a condition has exactly one key, one of: {names}")
        if self.always is False:
            raise ValueError("write `always: true`; for never, use `not: {always: true}`")
        return self

    @property
    def atom(self) -> str:
        for a in _ATOMS:
            if getattr(self, a) is not None:
                return a
        raise AssertionError("validated to hold one atom")


# --- pack parts -----------------------------------------------------------------------------


# A source's or regulator's address: shown as a link in reports and the console, so only a
# web address (never javascript:, data: or a path).
WebUrl = Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$")]


class Regulator(_Model):
    id: Name
    name: str
    url: WebUrl | None = None


class Source(_Model):
    id: Name
    kind: SourceKind
    title: str
    url: WebUrl | None = None
    date: dt.date | None = None
    binding: bool = False


class Cite(_Model):
    source: Name
    pinpoint: str | None = None


class Interpretation(_Model):
    status: Status
    note: Prose | None = None


class Effective(_Model):
    from_: dt.date | None = Field(default=None, alias="from")
    to: dt.date | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Effective:
        if self.from_ and self.to and self.to < self.from_:
            raise ValueError("`to` is before `from`")
        return self

    def covers(self, day: dt.date) -> bool:
        return (self.from_ is None or self.from_ <= day) and (self.to is None or day <= self.to)


class ListMember(_Model):
    """A country on a named list, optionally for a date range and only when a fact holds
    (e.g. the EU-US Data Privacy Framework covers only certified recipients)."""

    country: CountryCode
    from_: dt.date | None = Field(default=None, alias="from")
    to: dt.date | None = None
    verified: bool = True
    requires_fact: Name | None = None
    note: str | None = None

    @field_validator("country", mode="before")
    @classmethod
    def _cc(cls, value: Any) -> Any:
        return country(value) if isinstance(value, str) else value


class CountryList(_Model):
    title: str
    source: Name
    members: list[ListMember]
    note: Prose | None = None

    @field_validator("members", mode="before")
    @classmethod
    def _plain_codes(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"country": v} if isinstance(v, str) else v for v in value]
        return value


class Calendar(_Model):
    """Working days for waiting periods: weekends, then public holidays from the
    ``holidays`` library for ``holidays_of``, then the pack's own additions."""

    holidays_of: CountryCode | None = None
    weekend: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = ["sat", "sun"]
    extra_holidays: list[dt.date] = []
    extra_working_days: list[dt.date] = []


class RequestKind(StrEnum):
    """What a data subject asks of the controller."""

    access = "access"
    rectification = "rectification"
    erasure = "erasure"
    restriction = "restriction"
    withdrawal = "withdrawal"  # of consent
    portability = "portability"


class Period(_Model):
    """A length of time the law gives: ``working_days`` (from the pack's calendar),
    ``days`` or ``months``. Counting starts the day after the request arrived. With
    ``roll_forward``, a period that ends on a day off ends on the next working day (the
    EU's Regulation 1182/71 Art. 3(4))."""

    working_days: int | None = Field(default=None, ge=1, le=366)
    days: int | None = Field(default=None, ge=1, le=366)
    months: int | None = Field(default=None, ge=1, le=24)
    roll_forward: bool = False

    @model_validator(mode="after")
    def _one_length(self) -> Period:
        given = [k for k in ("working_days", "days", "months") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of working_days, days, months")
        return self

    def __str__(self) -> str:
        for unit in ("working_days", "days", "months"):
            n = getattr(self, unit)
            if n is not None:
                word = unit.replace("_", " ")
                return f"{n} {word[:-1] if n == 1 else word}"
        raise AssertionError("validated to hold one length")


class RightsDeadline(_Model):
    """How long the controller has to answer a subject's request of the listed kinds
    (``kinds``), and by how much it may extend that (``extension``) when it tells the
    subject why (``extension_needs``). The first deadline effective on the day the
    request arrived applies; kinds with no entry have no deadline from this pack."""

    id: Name
    kinds: list[RequestKind] = Field(min_length=1)
    answer_within: Period
    extension: Period | None = None
    extension_needs: Prose | None = None
    effective: Effective = Effective()
    says: Prose
    interpretation: Interpretation = Interpretation(status=Status.statutory)
    cite: list[Cite] = Field(min_length=1)

    @model_validator(mode="after")
    def _extension_has_terms(self) -> RightsDeadline:
        if (self.extension is None) != (self.extension_needs is None):
            raise ValueError("give `extension` and `extension_needs` together, or neither")
        return self


class RestrictionRule(_Model):
    """What a restriction of processing still lets a controller do with the subject's data
    under this law, besides storing it and answering the subject's own requests: the legal
    bases (``allows``) a purpose may rest on to use the data while it is restricted (the
    GDPR's Art. 18(2): legal claims, the rights of another person, important public
    interest). An empty list: nothing but storage. The first rule effective on a day
    applies."""

    id: Name
    allows: list[Name] = []
    effective: Effective = Effective()
    says: Prose
    cite: list[Cite] = Field(min_length=1)


class Filing(_Model):
    """A fact on record that the law cares about. A name may hold ``{country}``."""

    title: str
    kind: Literal["notice", "contract", "approval", "assessment", "ban", "order"] = "notice"
    authority: Name | None = None
    unlocks: str | None = None  # what to do to get it on record, in plain words
    cite: list[Cite] = []


class Basis(_Model):
    """A legal basis a request may claim (``--basis NAME``)."""

    title: str
    cite: list[Cite] = []


class FactDecl(_Model):
    """A fact a request may state (``--fact NAME=VALUE``). A ``bool`` fact that is not
    stated counts as false unless ``unstated: unknown``; any other unstated fact is
    unknown (and so escalates wherever it matters)."""

    title: str
    type: Literal["bool", "int", "str", "country"]
    unstated: Literal["false", "unknown"] | None = None

    @property
    def default(self) -> bool | None:
        return False if self.type == "bool" and self.unstated != "unknown" else None


class Coverage(_Model):
    when: Predicate
    note: Prose | None = None
    cite: list[Cite] = []


class ObligationSpec(_Model):
    id: Name
    text: str
    due: str | None = None  # e.g. "before the first transfer", "by the 15th of next month"


class Exemption(_Model):
    id: Name
    title: str
    when: Predicate
    waives: list[Name]
    note: str | None = None
    cite: list[Cite]


class Route(_Model):
    """One lawful way across the border. Routes are tried in order; the first whose
    ``when`` holds decides. When its ``requires`` is not met, the rule is violated and the
    unmet parts become obligations that would unlock the transfer."""

    name: Name
    title: str
    effective: Effective = Effective()  # a route outside its dates is skipped
    when: Predicate = Predicate(always=True)
    requires: Predicate = Predicate(always=True)
    status: Status | None = None  # a contested route escalates even when met
    obligations: list[ObligationSpec] = []
    cite: list[Cite] = []


class _RuleBase(_Model):
    id: Name
    title: str
    says: Prose  # the rule in plain words
    effective: Effective = Effective()
    applies: Predicate = Predicate(always=True)
    categories: list[str] = ["user"]
    violation: Outcome = Outcome.deny
    interpretation: Interpretation = Interpretation(status=Status.statutory)
    obligations: list[ObligationSpec] = []
    evidence: list[Name] = []
    penalties: list[Name] = []
    # When this rule refuses, the pack still lets the masked forms in ``masks`` through
    # (e.g. initials instead of a name); categories without a mask are withheld.
    masked_when_refused: bool = False
    cite: list[Cite]

    @model_validator(mode="after")
    def _contested_escalates(self) -> _RuleBase:
        if self.interpretation.status is Status.contested and self.violation is Outcome.deny:
            raise ValueError(
                "a contested rule must have `violation: escalate`: contested points never deny"
                " or allow on their own"
            )
        return self


class LocalizationRule(_RuleBase):
    """Where covered data must be processed. Applies to the listed operations; satisfied
    when the site is in the pack's territory."""

    kind: Literal["localization"]
    mode: LocalizationMode
    operations: list[Operation]
    foreign_copies: ForeignCopies = ForeignCopies.forbidden
    max_offshore: str | None = None  # e.g. "PT24H": processing abroad must end within
    min_retention: str | None = None


class TransferRule(_RuleBase):
    """How data may leave the pack's territory. Applies to flows whose origin is inside it
    and whose destination is outside."""

    kind: Literal["transfer"]
    flows: list[FlowKind] = list(FlowKind)
    routes: list[Route] = Field(min_length=1)


class ProhibitionRule(_RuleBase):
    """Something that is never allowed when ``applies`` holds (e.g. a regulator's ban)."""

    kind: Literal["prohibition"]
    flows: list[FlowKind] | None = None  # None: any request; else only these flows
    operations: list[Operation] | None = None


class ObligationRule(_RuleBase):
    """A duty that does not by itself stop the operation (a notice to file, an assessment
    to keep). With ``met_when`` it is outstanding until that holds, and meanwhile the rule's
    outcome is ``violation``; without it the duty is ongoing and the outcome is allow."""

    kind: Literal["obligation"]
    flows: list[FlowKind] | None = None
    operations: list[Operation] | None = None
    met_when: Predicate | None = None
    violation: Outcome = Outcome.allow
    duty: ObligationSpec


Rule = Annotated[
    LocalizationRule | TransferRule | ProhibitionRule | ObligationRule,
    Field(discriminator="kind"),
]


class Evidence(_Model):
    id: Name
    description: str
    artifact: Literal[
        "document",
        "contract",
        "attestation",
        "system_log",
        "config_snapshot",
        "regulator_receipt",
        "assessment_report",
        "consent_record",
        "destruction_act",
        "metric",
    ]
    machine_checkable: bool = False


class Money(_Model):
    currency: str
    min: float | None = None
    max: float | None = None


class Penalty(_Model):
    id: Name
    instrument: str
    offence: str
    subject: Literal["legal_entity", "official", "individual", "any"] = "legal_entity"
    fine: Money | None = None
    turnover_pct: float | None = None
    non_monetary: list[str] = []
    effective: Effective = Effective()
    cite: list[Cite] = []


class Precedent(_Model):
    party: str
    date: str
    outcome: str
    cite: list[Cite] = []


# --- fixtures -------------------------------------------------------------------------------


class FixtureRequest(_Model):
    """A request in the words of ``domicile policy explain``."""

    subject: dict[str, str] = {}
    categories: list[str] = ["user.contact.email"]
    operation: Operation
    site_country: CountryCode
    to_country: CountryCode | None = None
    date: dt.date
    filings: dict[str, dt.date] = {}
    bases: list[str] = []
    facts: dict[str, bool | int | str] = {}

    @field_validator("categories", "bases", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class FixtureExpect(_Model):
    decision: Outcome
    disclosure: Literal["full", "masked", "none"] | None = None
    rules: list[str] = []  # fired, each with the final decision as its own outcome
    fired: list[str] = []  # fired, with any outcome
    not_fired: list[str] = []
    obligations: list[str] = []  # obligation ids that must be listed


class Fixture(_Model):
    name: str
    request: FixtureRequest
    expect: FixtureExpect


# --- the pack -------------------------------------------------------------------------------


class PackInfo(_Model):
    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    jurisdiction: Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
    name: str
    title: str
    countries: list[CountryCode] = Field(min_length=1)
    covers: Name  # the coverage that decides whether this law covers a subject
    version: Annotated[str, Field(pattern=r"^\d+\.\d+\.\d+$")]
    as_of: dt.date
    status: Literal["draft", "legal_review", "approved", "deprecated"]
    regulators: list[Regulator] = []
    open_questions: list[str] = []

    @field_validator("countries", mode="before")
    @classmethod
    def _ccs(cls, value: Any) -> Any:
        return _country_list(value)


class Pack(_Model):
    format: Literal[1]
    pack: PackInfo
    sources: list[Source] = Field(min_length=1)
    calendar: Calendar = Calendar()
    lists: dict[Name, CountryList] = {}
    categories: dict[str, str] = {}  # new category keys under existing parents
    groups: dict[Name, list[str]] = {}  # named sets of categories
    filings: dict[str, Filing] = {}
    bases: dict[Name, Basis] = {}
    facts: dict[Name, FactDecl] = {}
    coverage: dict[Name, Coverage]
    exemptions: list[Exemption] = []
    rules: list[Rule] = Field(min_length=1)
    evidence: list[Evidence] = []
    penalties: list[Penalty] = []
    precedents: list[Precedent] = []
    masks: dict[str, MaskMethod] = {}  # category (or group) -> how to mask it
    rights: list[RightsDeadline] = []  # deadlines for answering subjects' requests
    restriction: list[RestrictionRule] = []  # what a restriction still allows
    tests: list[Fixture] = []

    @model_validator(mode="after")
    def _one_deadline_per_day(self) -> Pack:
        seen: dict[RequestKind, list[RightsDeadline]] = {}
        for entry in self.rights:
            for kind in entry.kinds:
                for other in seen.setdefault(kind, []):
                    if _overlap(entry.effective, other.effective):
                        raise ValueError(
                            f"rights {entry.id!r} and {other.id!r} both set the deadline for"
                            f" {kind.value} requests on the same days: give them `effective`"
                            " dates that do not overlap"
                        )
                seen[kind].append(entry)
        return self

    @property
    def id(self) -> str:
        return self.pack.id


def _overlap(a: Effective, b: Effective) -> bool:
    lo = max(a.from_ or dt.date.min, b.from_ or dt.date.min)
    hi = min(a.to or dt.date.max, b.to or dt.date.max)
    return lo <= hi


FILING_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*(\.\{country\})?$")
