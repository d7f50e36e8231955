"""Residency resolution: from evidence about a subject to the countries connected to them.

The result keeps two kinds of knowledge apart. A country is *certain* for an attribute
(citizenship, residence, location at collection) when the subject declared it or a
document proves it; it is only *possible* when weak evidence (a phone prefix, an IP
address, a tax number that foreigners can hold too) points there. The policy engine reads
possible countries three-valued: a rule that would cover the subject if the possibility
were true is treated conservatively, never as if the subject were uncovered.

Rules of resolution:
- declared or documented facts settle an attribute; weak evidence fills only attributes
  nobody declared (a declared residence is not overridden by a phone prefix);
- identity documents add to citizenship even beside a declaration (dual citizens often
  declare only one);
- with no declared citizenship, every country connected to the subject is a possible
  citizenship.

No plaintext personal data leaves this module: findings describe evidence by kind and
country, never by value.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import iptocc
import phonenumbers

from domicile.countries import country, country_name
from domicile.errors import InvalidEvidence
from domicile.residency.documents import citizenship_of, document_type

EVIDENCE_KEYS = ("citizenship", "residence", "located_at_collection", "phone", "ip", "document")

Attribute = Literal["citizenship", "residence", "location"]
# The last three come only from discovery (``domicile scan``), never from declared evidence.
Kind = Literal[
    "citizenship", "residence", "located_at_collection", "phone", "ip", "document",
    "email", "bank_account", "address",
]  # fmt: skip

TRUE, UNKNOWN, FALSE = 1, 0, -1


@dataclass(frozen=True)
class TriSet:
    """Countries that certainly hold for an attribute, and others that possibly do."""

    certain: frozenset[str] = frozenset()
    possible: frozenset[str] = frozenset()

    def test(self, countries: frozenset[str]) -> int:
        """TRUE (1) if a certain country is in ``countries``, UNKNOWN (0) if only a
        possible one is, else FALSE (-1)."""
        if self.certain & countries:
            return TRUE
        if self.possible & countries:
            return UNKNOWN
        return FALSE

    def to_dict(self) -> dict[str, list[str]]:
        return {"certain": sorted(self.certain), "possible": sorted(self.possible)}


@dataclass(frozen=True)
class Finding:
    """One piece of evidence, described without its value."""

    kind: Kind
    country: str
    strength: Literal["declared", "document", "weak"]
    supports: tuple[Attribute, ...]
    description: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "country": self.country,
            "strength": self.strength,
            "supports": list(self.supports),
            "description": self.description,
        }


@dataclass(frozen=True)
class SubjectEvidence:
    """What we know about a subject. ``repr`` never shows the values."""

    citizenship: tuple[str, ...] = field(default=(), repr=False)
    residence: str | None = field(default=None, repr=False)
    located_at_collection: str | None = field(default=None, repr=False)
    phone: str | None = field(default=None, repr=False)
    ip: str | None = field(default=None, repr=False)
    documents: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    @classmethod
    def parse(cls, pairs: Iterable[str]) -> SubjectEvidence:
        """From ``KEY=VALUE`` strings, as ``--subject`` gives them."""
        items: list[tuple[str, str]] = []
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep or not value.strip():
                raise InvalidEvidence(
                    f"subject evidence {key.strip()!r} needs a value",
                    hint="write KEY=VALUE, e.g. citizenship=RU",
                )
            items.append((key.strip(), value.strip()))
        return cls.from_items(items)

    @classmethod
    def from_items(cls, items: Iterable[tuple[str, str]]) -> SubjectEvidence:
        values: dict[str, Any] = {"citizenship": [], "documents": []}
        for key, value in items:
            if key not in EVIDENCE_KEYS:
                raise InvalidEvidence(
                    "unknown subject evidence",
                    hint=f"use one of: {', '.join(EVIDENCE_KEYS)}",
                )
            if key == "citizenship":
                values["citizenship"].extend(v.strip() for v in value.split(",") if v.strip())
            elif key == "document":
                kind, sep, number = value.partition(":")
                if not sep or not number.strip():
                    raise InvalidEvidence(
                        "document evidence needs a type and a number",
                        hint="write document=TYPE:NUMBER, e.g. document=ru_inn:7707083893",
                    )
                values["documents"].append((kind.strip(), number.strip()))
            elif key in values:
                raise InvalidEvidence(f"subject evidence {key!r} given twice", hint="give it once")
            else:
                values[key] = value
        return cls(
            citizenship=tuple(values.pop("citizenship")),
            documents=tuple(values.pop("documents")),
            **values,
        )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> SubjectEvidence:
        items: list[tuple[str, str]] = []
        for key, value in data.items():
            if isinstance(value, list | tuple):
                sep = "," if key == "citizenship" else None
                if sep:
                    items.append((key, ",".join(str(v) for v in value)))
                else:
                    items.extend((key, str(v)) for v in value)
            else:
                items.append((key, str(value)))
        return cls.from_items(items)

    def is_empty(self) -> bool:
        return not (
            self.citizenship
            or self.residence
            or self.located_at_collection
            or self.phone
            or self.ip
            or self.documents
        )


@dataclass(frozen=True)
class Residency:
    """The resolved connections of a subject to countries, with the evidence for each."""

    citizenship: TriSet
    residence: TriSet
    location: TriSet
    findings: tuple[Finding, ...]
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Residencies key the decision caches; hash once, not on every lookup.
        key = (self.citizenship, self.residence, self.location, self.findings)
        object.__setattr__(self, "_hash", hash(key))

    def __hash__(self) -> int:
        return self._hash

    @property
    def uncertain(self) -> bool:
        return bool(self.citizenship.possible or self.residence.possible or self.location.possible)

    @property
    def countries(self) -> frozenset[str]:
        out: frozenset[str] = frozenset()
        for t in (self.citizenship, self.residence, self.location):
            out |= t.certain | t.possible
        return out

    def attribute(self, name: Attribute) -> TriSet:
        return {
            "citizenship": self.citizenship,
            "residence": self.residence,
            "location": self.location,
        }[name]

    def why(self, attribute: Attribute, countries: frozenset[str]) -> list[str]:
        """Descriptions of the findings that connect ``attribute`` to ``countries``."""
        found = [
            f.description
            for f in self.findings
            if attribute in f.supports and f.country in countries
        ]
        if found:
            return found
        tri = self.attribute(attribute)
        certain = sorted(tri.certain & countries)
        possible = sorted(tri.possible & countries)
        return [f"{attribute} {', '.join(certain)} (certain)"] * bool(certain) + [
            f"{attribute} {', '.join(possible)} (possible)"
        ] * bool(possible)

    def to_dict(self) -> dict[str, Any]:
        return {
            "citizenship": self.citizenship.to_dict(),
            "residence": self.residence.to_dict(),
            "location_at_collection": self.location.to_dict(),
            "uncertain": self.uncertain,
            "evidence": [f.to_dict() for f in self.findings],
        }


def _phone_country(number: str) -> str:
    if not number.startswith("+"):
        raise InvalidEvidence(
            "phone number is not in international format",
            hint="give it with its country code, e.g. +7 495 123-45-67",
        )
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        raise InvalidEvidence(
            "phone number cannot be parsed",
            hint="give it in international format, e.g. +49 30 1234567",
        ) from None
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidEvidence(
            "phone number is not a valid number for any country",
            hint="check the digits and the country code",
        )
    region = phonenumbers.region_code_for_number(parsed)
    if not region or region == "001":
        raise InvalidEvidence(
            "phone number belongs to no country (a global service number)",
            hint="leave it out; it says nothing about residence",
        )
    return str(region)


def _ip_country(address: str) -> str | None:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise InvalidEvidence(
            "IP address is malformed", hint="give an IPv4 or IPv6 address, e.g. 192.0.2.10"
        ) from None
    if not ip.is_global:
        return None
    found = iptocc.country_code(str(ip))
    return str(found) if found else None


def resolve(evidence: SubjectEvidence) -> Residency:
    """Resolve ``evidence`` to a ``Residency``. Raises ``InvalidEvidence`` on bad input."""
    findings: list[Finding] = []
    cit_certain: set[str] = set()
    cit_doc_possible: set[str] = set()
    res_certain: set[str] = set()
    res_weak: set[str] = set()
    loc_certain: set[str] = set()
    loc_weak: set[str] = set()

    for raw in evidence.citizenship:
        cc = country(raw, what="citizenship")
        cit_certain.add(cc)
        findings.append(
            Finding("citizenship", cc, "declared", ("citizenship",), f"declared citizenship {cc}")
        )
    if evidence.residence:
        cc = country(evidence.residence, what="residence")
        res_certain.add(cc)
        findings.append(
            Finding("residence", cc, "declared", ("residence",), f"declared residence {cc}")
        )
    if evidence.located_at_collection:
        cc = country(evidence.located_at_collection, what="located_at_collection")
        loc_certain.add(cc)
        findings.append(
            Finding(
                "located_at_collection", cc, "declared", ("location",),
                f"located in {cc} when the data was collected",
            )
        )  # fmt: skip

    for kind, number in evidence.documents:
        doc = document_type(kind)
        compact = doc.check(number)
        cit = citizenship_of(doc, compact)
        supports: list[Attribute] = []
        if cit == "certain":
            cit_certain.add(doc.country)
            supports.append("citizenship")
        elif cit == "possible":
            cit_doc_possible.add(doc.country)
            supports.append("citizenship")
        if doc.residence == "certain":
            res_certain.add(doc.country)
            supports.append("residence")
        elif doc.residence == "possible":
            res_weak.add(doc.country)
            supports.append("residence")
        proves = "proves citizenship" if cit == "certain" else "shows a connection"
        findings.append(
            Finding(
                "document", doc.country, "document", tuple(supports),
                f"{doc.title} (valid checksum or format) {proves} to {doc.country}",
            )
        )  # fmt: skip

    if evidence.phone:
        cc = _phone_country(evidence.phone)
        res_weak.add(cc)
        findings.append(
            Finding(
                "phone", cc, "weak", ("residence", "citizenship"),
                f"phone number registered in {cc} ({country_name(cc)}); a prefix is not citizenship",
            )
        )  # fmt: skip
    if evidence.ip:
        ip_cc = _ip_country(evidence.ip)
        if ip_cc is None:
            note = "IP address at collection is private or unassigned: no country"
            findings.append(Finding("ip", "--", "weak", (), note))
        else:
            loc_weak.add(ip_cc)
            findings.append(
                Finding(
                    "ip", ip_cc, "weak", ("location", "citizenship"),
                    f"IP address at collection maps to {ip_cc} (bundled iptocc data; VPNs mislead)",
                )
            )  # fmt: skip

    citizenship_possible = set(cit_doc_possible)
    if not evidence.citizenship:
        citizenship_possible |= res_certain | res_weak | loc_certain | loc_weak
    residence_possible = res_weak if not evidence.residence else set()
    location_possible = loc_weak if not evidence.located_at_collection else set()

    return Residency(
        citizenship=TriSet(frozenset(cit_certain), frozenset(citizenship_possible - cit_certain)),
        residence=TriSet(frozenset(res_certain), frozenset(residence_possible - res_certain)),
        location=TriSet(frozenset(loc_certain), frozenset(location_possible - loc_certain)),
        findings=tuple(findings),
    )
