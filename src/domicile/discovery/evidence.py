"""Evidence per subject: from recognised values to the residency resolver's answer.

A value is reduced at once to a *piece*: a small key such as ``("phone", "DE")`` or
``("document", "ru_inn")``. Each distinct piece is resolved once, with the first real value
that produced it, by the existing resolver (``domicile.residency.resolve``); the pieces the
resolver has no key for (bank accounts, addresses, e-mail domains, and two documents it
does not know) become weak findings here, read the way the resolver reads weak evidence:
a possible residence and, with no citizenship declared, a possible citizenship. A subject
holds only its set of pieces, never a value; its residency is the union of its pieces'.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal

import iptocc
import phonenumbers

from domicile.countries import country_name
from domicile.discovery.recognizers import (
    DOCUMENT_VALIDATORS,
    KINDS,
    address_country,
    city_country,
    email_country,
    email_domain,
    iban_country,
    ip_address,
    national_phone,
    national_phone_country,
    phone_country,
)
from domicile.errors import BadInput
from domicile.residency import Finding, Residency, SubjectEvidence, TriSet, resolve

Piece = tuple[str, ...]

_FIXING = ("document", "address", "bank_account")
_EMPTY = Residency(TriSet(), TriSet(), TriSet(), ())


def _weak(
    kind: Literal["email", "bank_account", "address"], cc: str, description: str
) -> Residency:
    finding = Finding(kind, cc, "weak", ("residence", "citizenship"), description)
    tri = TriSet(frozenset(), frozenset({cc}))
    return Residency(citizenship=tri, residence=tri, location=TriSet(), findings=(finding,))


def _document(cc: str, title: str) -> Residency:
    finding = Finding(
        "document", cc, "document", ("citizenship", "residence"),
        f"{title} (valid checksum) shows a connection to {cc}",
    )  # fmt: skip
    tri = TriSet(frozenset(), frozenset({cc}))
    return Residency(citizenship=tri, residence=tri, location=TriSet(), findings=(finding,))


class EvidenceBook:
    """Pieces of evidence per subject, and the resolver's answer per set of pieces."""

    def __init__(self) -> None:
        self._pieces: dict[Piece, Residency] = {}
        self._sets: dict[frozenset[Piece], Residency] = {}

    def piece(self, kind: str, value: str) -> Piece | None:
        """The piece of evidence ``value`` (of a column of ``kind``) gives, or None when
        it gives none (an invalid value, free mail, a private address)."""
        try:
            return self._piece(kind, value)
        except BadInput:
            return None  # a value the resolver refuses is no evidence

    def _piece(self, kind: str, value: str) -> Piece | None:
        spec = KINDS[kind]
        if kind in DOCUMENT_VALIDATORS:
            if not DOCUMENT_VALIDATORS[kind](value):
                return None
            if spec.document is None:
                doc_cc = "KZ" if kind == "kz_iin" else "DE"
                title = "Kazakh IIN" if kind == "kz_iin" else "German tax id"
                return self._remember(("document", kind), lambda: _document(doc_cc, title))
            # A Turkish number starting 99 is a foreigner's: the only document whose
            # reading depends on the number, so the only one keyed by it.
            foreign = kind == "tr_identity" and value.lstrip().startswith("99")
            doc_key: Piece = ("document", spec.document, "foreign" if foreign else "")
            if doc_key not in self._pieces:
                self._pieces[doc_key] = resolve(
                    SubjectEvidence(documents=((spec.document, value),))
                )
            return doc_key
        if kind == "phone":
            cc = phone_country(value)
            if cc is None:
                return None
            key: Piece = ("phone", cc)
            if key not in self._pieces:
                self._pieces[key] = resolve(SubjectEvidence(phone=value))
            return key
        if kind == "ip":
            ip = ip_address(value)
            if ip is None or not ip.is_global:
                return None  # documentation, private and reserved ranges say nothing
            ip_cc = iptocc.country_code(str(ip))
            if not ip_cc:
                return None
            ip_key: Piece = ("ip", str(ip_cc))
            if ip_key not in self._pieces:
                self._pieces[ip_key] = resolve(SubjectEvidence(ip=str(ip)))
            return ip_key
        if kind == "email":
            domain = email_domain(value)
            mail_cc = email_country(domain) if domain else None
            if mail_cc is None:
                return None
            return self._remember(
                ("email", mail_cc),
                lambda: _weak(
                    "email", mail_cc, f"e-mail at a {mail_cc} domain that is not free mail"
                ),
            )
        if kind == "iban":
            bank_cc = iban_country(value)
            if bank_cc is None:
                return None
            return self._remember(
                ("bank_account", bank_cc),
                lambda: _weak(
                    "bank_account",
                    bank_cc,
                    f"bank account (IBAN) held in {bank_cc} ({country_name(bank_cc)})",
                ),
            )
        if kind in ("city", "address"):
            found = city_country(value) if kind == "city" else address_country(value)
            if not isinstance(found, str):
                return None
            return self._remember(
                ("address", found),
                lambda: _weak("address", found, f"address in {found} ({country_name(found)})"),
            )
        return None

    def national_phone(self, value: str, regions: Iterable[str]) -> Piece | None:
        """The piece a phone number written without its country code gives, read under
        the ``regions`` the context fixes (``recognizers.national_phone_country``): none
        when it is valid under none of them or under several."""
        regions = sorted(regions)
        cc = national_phone_country(value, regions)
        if cc is None:
            return None
        key: Piece = ("phone", cc)
        if key not in self._pieces:
            for region in regions:
                parsed = national_phone(value, region)
                if parsed is not None:
                    number = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
                    self._pieces[key] = resolve(SubjectEvidence(phone=number))
                    break
        return key

    def fixing(self, pieces: Iterable[Piece]) -> set[str]:
        """The countries a subject's documents, addresses and bank accounts name: the
        context that fixes how its numbers without a country code are read."""
        out: set[str] = set()
        for p in pieces:
            if p[0] in _FIXING:
                out |= self._pieces[p].countries
        return out

    def answers(self) -> dict[Piece, Residency]:
        """The resolver's answer for every piece met so far. A piece's answer depends on
        the piece alone (its country, its document), so books of several processes, such
        as the tasks of a Spark job, merge without asking which value came first."""
        return dict(self._pieces)

    def learn(self, answers: dict[Piece, Residency]) -> None:
        """Take another book's answers (``answers``) for the pieces this one lacks."""
        for piece, residency in answers.items():
            self._pieces.setdefault(piece, residency)

    def _remember(self, key: Piece, make: Callable[[], Residency]) -> Piece:
        """``key``, its residency made once (the first time it is met)."""
        if key not in self._pieces:
            self._pieces[key] = make()
        return key

    def residency(self, pieces: Iterable[Piece]) -> Residency:
        """The union of the pieces' residencies: what is certain anywhere is certain, and
        what is certain is no longer only possible."""
        key = frozenset(pieces)
        hit = self._sets.get(key)
        if hit is not None:
            return hit
        if not key:
            return _EMPTY
        parts = [self._pieces[p] for p in sorted(key)]

        def union(attr: str) -> TriSet:
            certain = frozenset().union(*(getattr(r, attr).certain for r in parts))
            possible = frozenset().union(*(getattr(r, attr).possible for r in parts))
            return TriSet(certain, possible - certain)

        findings = tuple(dict.fromkeys(f for r in parts for f in r.findings))
        res = Residency(union("citizenship"), union("residence"), union("location"), findings)
        self._sets[key] = res
        return res


def countries_of(res: Residency) -> list[str]:
    """The countries the resolver is certain of, or the possible ones when none is."""
    certain = res.citizenship.certain | res.residence.certain | res.location.certain
    return sorted(certain) if certain else sorted(res.countries)
