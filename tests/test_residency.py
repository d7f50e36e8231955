from __future__ import annotations

import pytest

from domicile.errors import InvalidEvidence
from domicile.residency import SubjectEvidence, resolve
from domicile.residency.documents import snils


def res(**kw: str) -> object:
    return resolve(SubjectEvidence.from_mapping(kw))


def test_declared_citizenships_are_certain() -> None:
    r = resolve(SubjectEvidence.parse(["citizenship=ru, de"]))
    assert r.citizenship.certain == {"RU", "DE"}
    assert not r.uncertain


def test_phone_prefix_is_possible_residence_and_citizenship_not_certain() -> None:
    r = resolve(SubjectEvidence.parse(["phone=+7 912 345-67-89"]))
    assert r.citizenship.certain == frozenset()
    assert r.citizenship.possible == {"RU"}
    assert r.residence.possible == {"RU"}
    assert r.uncertain
    assert any(f.kind == "phone" and f.strength == "weak" for f in r.findings)


def test_kazakh_numbers_under_plus_seven_resolve_to_kazakhstan() -> None:
    r = resolve(SubjectEvidence.parse(["phone=+7 701 123 4567"]))
    assert r.residence.possible == {"KZ"}


def test_declaration_settles_citizenship_against_weak_evidence() -> None:
    r = resolve(SubjectEvidence.parse(["citizenship=DE", "phone=+7 912 345-67-89"]))
    assert r.citizenship.certain == {"DE"}
    assert r.citizenship.possible == frozenset()


def test_documents_prove_or_suggest_citizenship() -> None:
    proven = resolve(SubjectEvidence.parse(["citizenship=DE", "document=ru_passport:4509 123456"]))
    assert proven.citizenship.certain == {"DE", "RU"}
    suggested = resolve(SubjectEvidence.parse(["citizenship=DE", "document=ru_inn:7707083893"]))
    assert suggested.citizenship.certain == {"DE"}
    assert suggested.citizenship.possible == {"RU"}


def test_turkish_numbers_for_foreigners_are_not_citizenship() -> None:
    citizen = resolve(SubjectEvidence.parse(["document=tr_identity:10000000146"]))
    assert citizen.citizenship.certain == {"TR"}
    foreigner = resolve(SubjectEvidence.parse(["document=tr_identity:99999999990"]))
    assert foreigner.citizenship.certain == frozenset()


def test_ip_address_gives_possible_location_private_gives_none() -> None:
    r = resolve(SubjectEvidence.parse(["ip=77.88.55.88"]))
    assert r.location.possible == {"RU"}
    private = resolve(SubjectEvidence.parse(["ip=10.1.2.3"]))
    assert private.location.possible == frozenset()
    assert "private" in private.findings[0].description


def test_declared_location_is_not_overridden_by_ip() -> None:
    r = resolve(SubjectEvidence.parse(["located_at_collection=US", "ip=77.88.55.88"]))
    assert r.location.certain == {"US"}
    assert r.location.possible == frozenset()


@pytest.mark.parametrize("number", ["112-233-445 95", "11223344595", "001-001-998 00"])
def test_snils_checksum_accepts_valid_numbers(number: str) -> None:
    assert len(snils(number)) == 11


@pytest.mark.parametrize("number", ["112-233-445 94", "1122334459", "abc"])
def test_snils_checksum_rejects_invalid_numbers(number: str) -> None:
    with pytest.raises(InvalidEvidence):
        snils(number)


def test_evidence_given_twice_or_malformed_is_refused() -> None:
    with pytest.raises(InvalidEvidence, match="given twice"):
        SubjectEvidence.parse(["residence=DE", "residence=FR"])
    with pytest.raises(InvalidEvidence, match="KEY=VALUE"):
        SubjectEvidence.parse(["citizenship"])
    with pytest.raises(InvalidEvidence, match="TYPE:NUMBER"):
        SubjectEvidence.parse(["document=7707083893"])


def test_evidence_repr_and_findings_hold_no_values() -> None:
    ev = SubjectEvidence.parse(["phone=+7 912 345-67-89", "document=ru_inn:7707083893"])
    assert "912" not in repr(ev)
    text = str(resolve(ev).to_dict())
    assert "912" not in text
    assert "7707083893" not in text
