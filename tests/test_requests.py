"""Bad input to the engine: clear, typed errors that say what to do."""

from __future__ import annotations

from typing import Any

import pytest

from domicile.errors import (
    BadInput,
    InvalidDate,
    InvalidEvidence,
    UnknownCategory,
    UnknownCountry,
    UnknownName,
)
from domicile.policy import PolicyEngine

GOOD: dict[str, Any] = dict(
    subject={"citizenship": "RU"},
    categories=["user.contact.email"],
    operation="store",
    site_country="RU",
    date="2025-09-01",
)


def test_a_good_request_is_normalised(ru_engine: PolicyEngine) -> None:
    req = ru_engine.request(
        **{**GOOD, "site_country": "ru", "filings": {"ru.transfer_ban.us": "2025-01-01"}},
        facts={"replica": "yes", "ytd_export_subjects": "12"},
    )
    assert req.site_country == "RU"
    assert req.filings == (("ru.transfer_ban.US", __import__("datetime").date(2025, 1, 1)),)
    assert dict(req.facts) == {"replica": True, "ytd_export_subjects": 12}


@pytest.mark.parametrize(
    ("change", "error", "words"),
    [
        ({"site_country": "XX"}, UnknownCountry, "give two letters"),
        ({"site_country": "UK"}, UnknownCountry, "GB for the United Kingdom"),
        ({"subject": {"citizenship": "RU,Narnia"}}, UnknownCountry, "citizenship"),
        ({"categories": ["user.contact.emial"]}, UnknownCategory, "user.contact.email"),
        ({"categories": []}, BadInput, "at least one data category"),
        ({"operation": "copy"}, BadInput, "collect, record, store"),
        ({"operation": "transfer"}, BadInput, "--to-country"),
        ({"to_country": "US"}, BadInput, "transfer and retrieve"),
        ({"date": "2025-02-30"}, InvalidDate, "YYYY-MM-DD"),
        ({"date": "yesterday"}, InvalidDate, "YYYY-MM-DD"),
        ({"filings": {"ru.art99_notice": "2025-01-01"}}, UnknownName, "ru.art12_notice"),
        ({"filings": {"ru.transfer_ban.ZZ": "2025-01-01"}}, UnknownCountry, "filing country"),
        ({"filings": {"ru.art12_notice": "2025-13-01"}}, InvalidDate, "filing"),
        ({"bases": ["legitimate_interest"]}, UnknownName, "consent"),
        ({"facts": {"replica": "perhaps"}}, BadInput, "true or false"),
        ({"facts": {"ytd_export_subjects": "many"}}, BadInput, "whole number"),
        ({"facts": {"ytd_export_subjects": "-3"}}, BadInput, "negative"),
        ({"facts": {"colour": "blue"}}, UnknownName, "replica"),
        ({"subject": {"phone": "8 912 345 67 89"}}, InvalidEvidence, "country code"),
        ({"subject": {"phone": "+7 000"}}, InvalidEvidence, "not a valid number"),
        ({"subject": {"ip": "300.1.2.3"}}, InvalidEvidence, "IPv4 or IPv6"),
        ({"subject": {"document": "ru_inn:7707083894"}}, InvalidEvidence, "checksum"),
        ({"subject": {"document": "ru_snils:112-233-445 96"}}, InvalidEvidence, "checksum"),
        ({"subject": {"document": "klingon_id:1"}}, InvalidEvidence, "ru_inn"),
        ({"subject": {"shoe_size": "44"}}, InvalidEvidence, "citizenship"),
    ],
)
def test_bad_input_is_refused_with_a_hint(
    ru_engine: PolicyEngine, change: dict[str, Any], error: type[Exception], words: str
) -> None:
    with pytest.raises(error) as caught:
        ru_engine.request(**{**GOOD, **change})
    assert words in str(caught.value)
    assert isinstance(caught.value, BadInput)


def test_errors_about_evidence_never_echo_the_value(ru_engine: PolicyEngine) -> None:
    secrets = {
        "phone": "+7 000 111",
        "ip": "999.888.777.666",
        "document": "ru_snils:987-654-321 00",
    }
    for key, value in secrets.items():
        with pytest.raises(InvalidEvidence) as caught:
            ru_engine.request(**{**GOOD, "subject": {key: value}})
        number = value.split(":")[-1]
        assert number not in str(caught.value)
        assert number not in repr(caught.value.to_dict())
