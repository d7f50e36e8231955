"""Every recognizer with a valid value, one that fails its checksum or test, and a decoy
that must stay none; column decisions; evidence that is and is not evidence."""

from __future__ import annotations

import random

import pytest

from domicile.discovery import decide, kinds_of, tally
from domicile.discovery.evidence import EvidenceBook, countries_of
from domicile.discovery.recognizers import national_phone_country
from domicile.discovery.synthetic import kz_iin, ru_inn

# (kind, valid, fails its validator, decoy of a similar shape)
CASES = [
    ("ru_inn", "7707083893", "7707083894", "7707083"),
    ("ru_inn", "500100732259", "500100732258", "50010073225"),
    ("ru_snils", "112-233-445 95", "112-233-445 96", "112-233-445"),
    ("ru_passport", "4509 123456", "4509 12345", "45091234567890"),
    ("cn_resident_id", "360426199101010071", "360426199101010072", "360426199113010071"),
    ("in_aadhaar", "2341 2341 2346", "2341 2341 2347", "1341 2341 2346"),
    ("in_pan", "ACUPA7085R", "ACUPA7085", "AAACA1234A"),
    ("br_cpf", "390.533.447-05", "390.533.447-04", "390.533.44"),
    ("tr_identity", "17291716060", "17291716061", "07291716060"),
    ("kz_iin", "951231350210", "951231350211", "951331350210"),
    ("de_idnr", "36574261809", "36574261890", "3657426180"),
    ("iban", "DE89370400440532013000", "DE89370400440532013001", "DE8937040044"),
    ("card", "4111 1111 1111 1111", "4111 1111 1111 1112", "9111111111111111"),
    ("phone", "+7 912 345-67-89", "+7 000 000-00-00", "79123456789"),
    ("phone", "+49 1512 3456789", "+49 1", "ORD-491512345678"),
    ("email", "anna.petrova@firm.ru", "anna.petrova@firm", "order#12@"),
    ("ip", "77.88.55.55", "300.1.1.1", "1.2.3"),
    ("ip", "2001:db8::1", "2001:db8:::1", "::"),
    ("city", "Москва", "Moskvaaa", "RU"),
    ("address", "ул. Ленина, 10, Москва", "ул. Ленина, Москва", "2024-05-01 10:00:00"),
    ("address", "12 Main Street, Chicago", "Main Street, Chicago", "SKU-1234-AB"),
    ("name", "Анна Иванова", "Анна Ivanova", "USD"),
    (
        "name",
        "王伟",
        "王伟伟伟伟伟",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    ),
]


@pytest.mark.parametrize(("kind", "valid", "invalid", "decoy"), CASES)
def test_recognizer_accepts_valid_refuses_invalid_and_decoy(
    kind: str, valid: str, invalid: str, decoy: str
) -> None:
    assert kind in kinds_of(valid)
    assert kind not in kinds_of(invalid)
    assert kind not in kinds_of(decoy)


def test_kz_iin_check_digit_is_checked_on_generated_numbers() -> None:
    rng = random.Random(3)
    for _ in range(50):
        number = kz_iin(rng)
        assert "kz_iin" in kinds_of(number)
        wrong = number[:-1] + str((int(number[-1]) + 1) % 10)
        assert "kz_iin" not in kinds_of(wrong)


@pytest.mark.parametrize(
    "decoy",
    [
        "5d41402abc4b2a76b9719d911017c592",  # md5
        "2025-03-01T10:00:00Z",
        "2025-03-01 10:00:00",
        "SKU-4821-C7",
        "RU",
        "DE",
        "USD",
        "v1.2.3",
        "1234.56",
        "0",
    ],
)
def test_decoys_stay_none(decoy: str) -> None:
    assert kinds_of(decoy) == []


def _column(values: list[str], name: str = "fld") -> str | None:
    return decide(name, tally({name: values})[name]).kind


def test_a_column_of_order_numbers_shaped_like_phones_is_none() -> None:
    rng = random.Random(5)
    orders = ["7" + "".join(rng.choice("0123456789") for _ in range(10)) for _ in range(400)]
    assert _column(orders, "phone") is None  # the name says phone; the values do not


def test_a_column_of_random_numbers_is_none_though_some_pass_a_checksum() -> None:
    rng = random.Random(6)
    numbers = ["".join(rng.choice("0123456789") for _ in range(10)) for _ in range(400)]
    assert any("ru_inn" in kinds_of(n) for n in numbers)  # about one in ten passes alone
    assert _column(numbers, "inn") is None


def test_country_codes_of_products_are_none() -> None:
    assert _column(["RU", "DE", "CN", "IN", "US", "FR"] * 30, "country") is None


def test_a_column_of_valid_numbers_with_a_few_typos_is_decided() -> None:
    rng = random.Random(8)
    values = [ru_inn(rng) for _ in range(95)] + ["123456789012"] * 5
    verdict = decide("fld_q", tally({"fld_q": values})["fld_q"])
    assert verdict.kind == "ru_inn"
    assert verdict.category == "user.government_id.national_identification_number.ru_inn"
    assert "95 of 100" in verdict.evidence


def test_binary_and_empty_columns_are_none_and_say_why() -> None:
    t = tally({"blob": [b"\x00\x01", b"\xff"] * 10, "empty": [None, ""] * 10})
    assert decide("blob", t["blob"]).evidence == "binary values are not read"
    assert decide("empty", t["empty"]).category is None


def test_names_report_their_script_and_are_not_residency_evidence() -> None:
    names = ["Анна Иванова", "Иван Петров", "Мария Смирнова", "Олег Кузнецов"] * 10
    verdict = decide("fio", tally({"fio": names})["fio"])
    assert verdict.category == "user.name"
    assert verdict.scripts == ("CYRILLIC",)
    assert EvidenceBook().piece("name", "Анна Иванова") is None


@pytest.mark.parametrize(
    ("kind", "value", "country"),
    [
        ("email", "anna@firm.ru", "RU"),
        ("email", "anna@mail.ru", None),  # free mail: anyone anywhere
        ("email", "anna@gmail.com", None),
        ("email", "anna@firm.com", None),  # generic domain
        ("ip", "77.88.55.55", "RU"),
        ("ip", "10.1.2.3", None),  # private
        ("ip", "203.0.113.7", None),  # documentation range
        ("phone", "+49 1512 3456789", "DE"),
        ("iban", "DE89370400440532013000", "DE"),
        ("address", "ул. Ленина, 10, Москва", "RU"),
        ("ru_inn", "7707083893", "RU"),
        ("ru_inn", "7707083894", None),  # fails its checksum: no evidence
        ("kz_iin", "951231350210", "KZ"),
    ],
)
def test_evidence_from_values(kind: str, value: str, country: str | None) -> None:
    book = EvidenceBook()
    piece = book.piece(kind, value)
    if country is None:
        assert piece is None
    else:
        assert piece is not None
        assert countries_of(book.residency([piece])) == [country]


def test_a_passport_makes_a_country_certain_and_drops_the_possible_ones() -> None:
    book = EvidenceBook()
    pieces = [
        book.piece("ru_passport", "4509 123456"),
        book.piece("phone", "+49 1512 3456789"),
    ]
    res = book.residency([p for p in pieces if p])
    assert res.citizenship.certain == {"RU"}
    assert countries_of(res) == ["RU"]
    assert "DE" in res.residence.possible


def test_tallies_of_arrow_batches_merge_to_the_tally_of_the_whole() -> None:
    """The map-reduce property a distributed run relies on: classify each batch where it
    lies (an Arrow batch from any engine), add the tallies, decide once."""
    import pyarrow as pa

    rng = random.Random(2)
    values = [ru_inn(rng) for _ in range(300)] + ["7707083894"] * 20
    table = pa.table({"fld": values})
    whole = tally(table.to_pydict())["fld"]
    merged = None
    for batch in table.to_batches(max_chunksize=37):
        part = tally(batch.to_pydict())["fld"]
        if merged is None:
            merged = part
        else:
            merged.merge(part)
    assert merged is not None
    assert (merged.values, merged.kinds) == (whole.values, whole.kinds)
    assert decide("fld", merged) == decide("fld", whole)


# --- phone numbers without a country code --------------------------------------------------

# (value, regions the context fixes, the country it is evidence of or None)
NATIONAL = [
    ("8 912 345-67-89", ["RU"], "RU"),  # a Russian mobile with its trunk prefix
    ("9123456789", ["RU"], "RU"),  # Russian numbers all have ten digits: 8 may be left out
    ("(0)30 1234567", ["DE"], "DE"),
    ("030 1234567", ["US", "DE"], "DE"),  # invalid in the US, valid in Germany
    ("(212) 555-0123", ["US"], "US"),
    ("8 701 234 5678", ["RU"], "KZ"),  # +7 is shared: the plan names Kazakhstan
    ("8 912 345-67-89", [], None),  # no region: a bare number names no country
    ("8 000 000-00-00", ["RU"], None),  # not a valid Russian number
    ("(0)30 12", ["DE"], None),  # too short
    ("8 912 345-67-89", ["DE"], None),  # German numbers start with 0
    ("30 1234567", ["DE"], None),  # German numbering needs its 0: most digits pass without
    ("06 12 34 56 78", ["FR"], "FR"),
    ("06 12 34 56 78", ["DE", "FR"], None),  # valid in both: ambiguous, no evidence
    ("9123456789", ["RU", "US"], None),  # valid in both
    ("79123456789", ["RU"], None),  # a country code without a plus, or an order number
    ("2025-03-01", ["DE"], None),  # a date German numbering would accept
    ("1234.56", ["US", "DE", "RU"], None),
]


@pytest.mark.parametrize(("value", "regions", "country"), NATIONAL)
def test_national_numbers_are_read_only_under_a_fixed_region(
    value: str, regions: list[str], country: str | None
) -> None:
    assert national_phone_country(value, regions) == country
    assert "phone" not in kinds_of(value)  # never alone
    piece = EvidenceBook().national_phone(value, regions)
    assert piece == (None if country is None else ("phone", country))


def _ru_national(rng: random.Random, n: int) -> list[str]:
    return [
        f"8 912 {rng.randint(0, 999):03d}-{rng.randint(0, 99):02d}-{rng.randint(0, 99):02d}"
        for _ in range(n)
    ]


def test_a_column_of_national_numbers_is_a_phone_column_under_its_region_only() -> None:
    values = _ru_national(random.Random(12), 200)
    assert decide("fld", tally({"fld": values})["fld"]).kind is None
    assert decide("fld", tally({"fld": values}, ["US"])["fld"]).kind is None
    verdict = decide("fld", tally({"fld": values}, ["RU"])["fld"])
    assert verdict.kind == "phone"
    assert verdict.national == verdict.matched
    assert "without a country code, valid in RU" in verdict.evidence


def test_a_column_mostly_of_one_countrys_numbers_reads_the_rest_under_it() -> None:
    rng = random.Random(13)
    international = [f"+7 912 345 {rng.randint(10, 99)} {rng.randint(10, 99)}" for _ in range(70)]
    values = international + _ru_national(rng, 30)
    verdict = decide("fld", tally({"fld": values}, ["US"])["fld"])
    assert (verdict.kind, verdict.region, verdict.national) == ("phone", "RU", 30)


@pytest.mark.parametrize(
    ("prefix", "region", "column"),
    [("8", "RU", "order_no"), ("8", "RU", "phone"), ("0", "DE", "phone"), ("", "US", "tel")],
)
def test_order_numbers_shaped_like_national_numbers_stay_none(
    prefix: str, region: str, column: str
) -> None:
    """Bare digits count only where the column's name says phone, and random ones are not
    valid numbers often enough even there (Germany's permissive plan included)."""
    rng = random.Random(14)
    orders = [prefix + "".join(rng.choice("0123456789") for _ in range(10)) for _ in range(400)]
    assert decide(column, tally({column: orders}, [region])[column]).kind is None


def test_bare_valid_numbers_count_where_the_name_says_phone() -> None:
    rng = random.Random(15)
    bare = [f"89{rng.randint(0, 10**9 - 1):09d}" for _ in range(200)]
    assert decide("fld", tally({"fld": bare}, ["RU"])["fld"]).kind is None
    assert decide("mobile", tally({"mobile": bare}, ["RU"])["mobile"]).kind == "phone"


def test_phone_numbers_are_parsed_once_per_value_and_the_memory_is_bounded() -> None:
    """A number read again is answered from the cache, the same answer as parsing it
    anew; the regions a national number is read under count as a set, in any order; the
    cache holds at most ``PHONE_CACHE`` numbers."""
    from domicile.discovery import recognizers as r
    from domicile.discovery.synthetic import phone

    rng = random.Random(9)
    values = [phone(rng, cc) for cc in ("RU", "DE", "US", "IN")] + ["+7 000", "8 912 345-67-89"]
    r.phone_country.cache_clear()
    first = [r.phone_country(v) for v in values]
    again = [r.phone_country(v) for v in values]
    assert first == again == [r.phone_country.__wrapped__(v) for v in values]
    assert first[:4] == ["RU", "DE", "US", "IN"]
    assert r.phone_country.cache_info().hits == len(values)
    assert r.national_phone_country("8 912 345-67-89", ["RU", "DE"]) == "RU"
    assert r.national_phone_country("8 912 345-67-89", ("DE", "RU", "RU")) == "RU"
    for i in range(r.PHONE_CACHE + 10):
        r.phone_country(f"+1 {i}")
    assert r.phone_country.cache_info().currsize == r.PHONE_CACHE
