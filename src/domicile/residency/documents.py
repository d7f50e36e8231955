"""Identity documents as evidence: which country each type points to, and its checksum.

Checksums come from python-stdnum where it has the document; the Russian SNILS, which it
lacks, is checked here. A document either proves citizenship (a Russian passport) or only
shows a connection (an INN is issued to foreigners who pay tax in Russia too).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from stdnum.br import cpf as br_cpf
from stdnum.cn import ric as cn_ric
from stdnum.exceptions import ValidationError
from stdnum.in_ import aadhaar as in_aadhaar
from stdnum.in_ import pan as in_pan
from stdnum.ru import inn as ru_inn
from stdnum.tr import tckimlik as tr_tckimlik

from domicile.errors import InvalidEvidence

Strength = Literal["certain", "possible"]


@dataclass(frozen=True)
class DocumentType:
    name: str
    title: str
    country: str
    citizenship: Strength | None  # what the document says of citizenship
    residence: Strength | None  # ... and of residence
    check: Callable[[str], str]  # returns the compact number or raises InvalidEvidence
    category: str  # the data category of the number itself


def _stdnum(module: object, title: str) -> Callable[[str], str]:
    def check(number: str) -> str:
        try:
            return str(module.validate(number))  # type: ignore[attr-defined]
        except ValidationError as exc:
            raise InvalidEvidence(
                f"{title}: {str(exc).lower().rstrip('.')}",
                hint="check the number; it fails its format or checksum test",
            ) from None

    return check


def _digits(count: int, title: str) -> Callable[[str], str]:
    def check(number: str) -> str:
        compact = re.sub(r"[\s-]", "", number)
        if not re.fullmatch(rf"\d{{{count}}}", compact):
            raise InvalidEvidence(
                f"{title}: expected {count} digits", hint="check the number and try again"
            )
        return compact

    return check


def snils(number: str) -> str:
    """Validate a Russian SNILS (11 digits; the last two are a checksum)."""
    compact = re.sub(r"[\s-]", "", number)
    if not re.fullmatch(r"\d{11}", compact):
        raise InvalidEvidence("SNILS: expected 11 digits", hint="check the number and try again")
    body, control = compact[:9], int(compact[9:])
    # Numbers up to 001-001-998 were issued before checksums; they carry any control value.
    if int(body) > 1001998:
        total = sum(int(d) * w for d, w in zip(body, range(9, 0, -1), strict=True))
        expected = total % 101
        if expected == 100:
            expected = 0
        if control != expected:
            raise InvalidEvidence(
                "SNILS: checksum does not match", hint="check the number and try again"
            )
    return compact


def _tr_identity(number: str) -> str:
    return _stdnum(tr_tckimlik, "Turkish identity number")(number)


_NIN = "user.government_id.national_identification_number"
_PASSPORT = "user.government_id.passport_number"

DOCUMENTS: dict[str, DocumentType] = {
    d.name: d
    for d in (
        DocumentType(
            "ru_passport", "Russian internal passport", "RU", "certain", "possible",
            _digits(10, "Russian internal passport"), f"{_PASSPORT}.ru_internal",
        ),
        DocumentType(
            "ru_international_passport", "Russian international passport", "RU", "certain", None,
            _digits(9, "Russian international passport"), f"{_PASSPORT}.ru_international",
        ),
        DocumentType(
            "ru_inn", "Russian taxpayer number (INN)", "RU", "possible", "possible",
            _stdnum(ru_inn, "Russian INN"), f"{_NIN}.ru_inn",
        ),
        DocumentType(
            "ru_snils", "Russian insurance account number (SNILS)", "RU", "possible", "possible",
            snils, f"{_NIN}.ru_snils",
        ),
        DocumentType(
            "cn_resident_id", "Chinese resident identity card", "CN", "certain", "possible",
            _stdnum(cn_ric, "Chinese resident identity card"), f"{_NIN}.cn_resident_id",
        ),
        DocumentType(
            "in_aadhaar", "Indian Aadhaar number", "IN", "possible", "possible",
            _stdnum(in_aadhaar, "Aadhaar"), f"{_NIN}.in_aadhaar",
        ),
        DocumentType(
            "in_pan", "Indian permanent account number (PAN)", "IN", "possible", "possible",
            _stdnum(in_pan, "PAN"), _NIN,
        ),
        DocumentType(
            "br_cpf", "Brazilian CPF", "BR", "possible", "possible",
            _stdnum(br_cpf, "CPF"), _NIN,
        ),
        DocumentType(
            "tr_identity", "Turkish identity number", "TR", "certain", "possible",
            _tr_identity, _NIN,
        ),
    )
}  # fmt: skip


def document_type(name: str) -> DocumentType:
    try:
        return DOCUMENTS[name]
    except KeyError:
        raise InvalidEvidence(
            "unknown document type",
            hint=f"use one of: {', '.join(sorted(DOCUMENTS))}",
        ) from None


def citizenship_of(doc: DocumentType, compact: str) -> Strength | None:
    """Turkish numbers starting 99 are issued to foreigners: a connection, not citizenship."""
    if doc.name == "tr_identity" and compact.startswith("99"):
        return "possible"
    return doc.citizenship
