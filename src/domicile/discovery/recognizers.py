"""Recognizers: does one value look like a kind of personal data, and does it pass its test?

Each recognizer is a plain function from a string to a bool (or to a country), with a
validator wherever the identifier has one (checksums through python-stdnum, phone numbers
through phonenumbers, addresses through ``ipaddress``). ``kinds_of`` runs the recognizers
that the value's shape allows, so most values meet one or two checks, never all of them.
Columns are decided from the share of their values each kind accepts (``classify.py``):
a random number passes a one-digit checksum one time in ten, a column of them never
passes as a whole.

Nothing here returns or logs a value: a recognizer says yes or no, and a country.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import phonenumbers
from stdnum import iban as std_iban
from stdnum import luhn
from stdnum.br import cpf as br_cpf
from stdnum.cn import ric as cn_ric
from stdnum.de import idnr as de_idnr
from stdnum.exceptions import ValidationError
from stdnum.in_ import aadhaar as in_aadhaar
from stdnum.in_ import pan as in_pan
from stdnum.ru import inn as ru_inn
from stdnum.tr import tckimlik as tr_tckimlik

from domicile.discovery.gazetteer import CITIES, FREE_MAIL, STREET_WORDS, TLD_COUNTRY
from domicile.errors import InvalidEvidence
from domicile.residency.documents import snils

_NIN = "user.government_id.national_identification_number"


@dataclass(frozen=True)
class Kind:
    """A kind of value a recognizer finds: its data category and whether it can be
    evidence of where the subject belongs."""

    name: str
    category: str
    title: str
    checksum: bool = False  # a validator beyond the shape (a random value rarely passes)
    document: str | None = None  # the residency resolver's document type, if it has one
    evidence: bool = False


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("email", "user.contact.email", "e-mail address", evidence=True),
        Kind("phone", "user.contact.phone_number", "phone number (valid for its country)", evidence=True),
        Kind("ip", "user.device.ip_address", "IP address", evidence=True),
        Kind("ru_inn", f"{_NIN}.ru_inn", "Russian INN (checksum)", True, "ru_inn", True),
        Kind("ru_snils", f"{_NIN}.ru_snils", "Russian SNILS (checksum)", True, "ru_snils", True),
        Kind("ru_passport", "user.government_id.passport_number.ru_internal", "Russian internal passport (series and number)", False, "ru_passport", True),
        Kind("cn_resident_id", f"{_NIN}.cn_resident_id", "Chinese resident id (checksum, birth date)", True, "cn_resident_id", True),
        Kind("in_aadhaar", f"{_NIN}.in_aadhaar", "Aadhaar (Verhoeff checksum)", True, "in_aadhaar", True),
        Kind("in_pan", _NIN, "Indian PAN (format, holder type)", True, "in_pan", True),
        Kind("br_cpf", _NIN, "Brazilian CPF (checksum)", True, "br_cpf", True),
        Kind("tr_identity", _NIN, "Turkish identity number (checksum)", True, "tr_identity", True),
        Kind("kz_iin", _NIN, "Kazakh IIN (checksum, birth date)", True, None, True),
        Kind("de_idnr", _NIN, "German tax id (checksum)", True, None, True),
        Kind("iban", "user.financial.bank_account", "IBAN (mod-97 checksum)", True, None, True),
        Kind("card", "user.financial.credit_card", "payment card number (Luhn, issuer prefix)", True),
        Kind("city", "user.contact.address.city", "city (gazetteer)", evidence=True),
        Kind("address", "user.contact.address.street", "street address", evidence=True),
        Kind("name", "user.name", "person's name (letters of one script)"),
    )
}  # fmt: skip

_EMAIL = re.compile(r"[A-Za-z0-9._%+'-]{1,64}@([A-Za-z0-9-]{1,63}\.)+([A-Za-z]{2,24})")
_PHONE_CHARS = re.compile(r"\+[\d\s().-]{7,22}")
_SEPARATORS = str.maketrans("", "", " -")
_RU_PASSPORT = re.compile(r"\d{2} ?\d{2} \d{6}")
_IBAN = re.compile(r"[A-Z]{2}\d{2}[A-Z0-9 ]{11,36}")
_PAN = re.compile(r"[A-Z]{3}[PFCHATBLJG][A-Z]\d{4}[A-Z]")
_CARD_PREFIX = re.compile(r"4|5[1-5]|2[2-7]|3[47]|6[05]")
_HAS_DIGIT = re.compile(r"\d")
_CPF_FORMAT = re.compile(r"\d{3}\.\d{3}\.\d{3}-\d{2}")


def _stdnum(module: object) -> Callable[[str], bool]:
    validate = module.validate  # type: ignore[attr-defined]

    def check(value: str) -> bool:
        try:
            validate(value)
        except (ValidationError, ValueError):
            return False
        return True

    return check


is_ru_inn = _stdnum(ru_inn)
is_cn_resident_id = _stdnum(cn_ric)
is_in_aadhaar = _stdnum(in_aadhaar)
is_br_cpf = _stdnum(br_cpf)
is_tr_identity = _stdnum(tr_tckimlik)
is_de_idnr = _stdnum(de_idnr)
_is_iban = _stdnum(std_iban)
_is_pan = _stdnum(in_pan)


def is_ru_snils(value: str) -> bool:
    try:
        snils(value)
    except InvalidEvidence:
        return False
    # Numbers below 001-001-998 carry no checksum: as evidence they prove nothing.
    return int(value.translate(_SEPARATORS)[:9]) > 1001998


def is_kz_iin(value: str) -> bool:
    """Kazakh IIN: 12 digits, a birth date (YYMMDD), a century-and-sex digit, and a mod-11
    check digit (a second weighting when the first gives 10)."""
    if len(value) != 12 or not value.isdigit():
        return False
    month, day, century = int(value[2:4]), int(value[4:6]), value[6]
    if not (1 <= month <= 12 and 1 <= day <= 31 and century in "123456"):
        return False
    digits = [int(c) for c in value]
    total = sum(d * w for d, w in zip(digits[:11], range(1, 12), strict=True)) % 11
    if total == 10:
        weights = [3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2]
        total = sum(d * w for d, w in zip(digits[:11], weights, strict=True)) % 11
        if total == 10:
            return False
    return total == digits[11]


def is_in_pan(value: str) -> bool:
    """An individual's PAN: the fourth letter says the holder is a person (P)."""
    return bool(_PAN.fullmatch(value)) and value[3] == "P" and _is_pan(value)


def iban_country(value: str) -> str | None:
    if not _IBAN.fullmatch(value):
        return None
    return value[:2] if _is_iban(value) else None


def is_card(value: str) -> bool:
    compact = value.translate(_SEPARATORS)
    if not (13 <= len(compact) <= 19 and compact.isdigit()):
        return False
    if not _CARD_PREFIX.match(compact):
        return False
    try:
        luhn.validate(compact)
    except ValidationError:
        return False
    return True


def email_domain(value: str) -> str | None:
    """The domain of an e-mail address, lower case, or None if it is not one."""
    match = _EMAIL.fullmatch(value)
    return value.rpartition("@")[2].lower() if match else None


def email_country(domain: str) -> str | None:
    """The country an e-mail domain points to: a country-code domain that is not free mail
    (anyone anywhere can hold a mail.ru or gmail.com address)."""
    if domain in FREE_MAIL:
        return None
    return TLD_COUNTRY.get(domain.rpartition(".")[2])


# Phone numbers parsed, remembered per value: parsing is the dearest recognizer, and a
# number is read again and again (the sample's rows again in the full pass, a company's
# switchboard on every employee's row). Least recently used values leave first, so memory
# stays bounded (a few MB at most) however many distinct numbers a source holds.
PHONE_CACHE = 16384


@functools.lru_cache(maxsize=PHONE_CACHE)
def phone_country(value: str) -> str | None:
    """The country of a phone number written with its country code, if it is a valid
    number there; global service numbers (+800...) belong to no country."""
    if not _PHONE_CHARS.fullmatch(value) and not (
        value.startswith("00") and value[2:].translate(_SEPARATORS).isdigit()
    ):
        return None
    try:
        parsed = phonenumbers.parse("+" + value[2:] if value.startswith("00") else value, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    region = phonenumbers.region_code_for_number(parsed)
    return str(region) if region and region != "001" else None


_NATIONAL = re.compile(r"\(?\d[\d\s().-]{4,22}\d")
_DATE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[.-]\d{1,2}[.-]\d{2,4}|\d{4}\.\d{1,2}\.\d{1,2}")
_NATIONAL_FORMATTING = frozenset(" -().")


def national_shape(value: str) -> str | None:
    """Whether ``value`` is written like a phone number without its country code:
    ``"formatted"`` (digits with the spaces, hyphens, dots or parentheses people write
    them with, as in ``8 912 345-67-89`` or ``(0)30 1234567``), ``"bare"`` (digits only,
    which order numbers are too), or None (letters, a date, a leading + or 00, or a
    count of digits no national number has)."""
    if value.startswith(("+", "00")) or not _NATIONAL.fullmatch(value) or _DATE.fullmatch(value):
        return None
    digits = sum(ch.isdigit() for ch in value)
    if not 6 <= digits <= 15:
        return None
    return "formatted" if any(ch in _NATIONAL_FORMATTING for ch in value) else "bare"


def national_phone(value: str, region: str) -> phonenumbers.PhoneNumber | None:
    """``value`` read as a national number of ``region`` (a country fixed by something
    else than the number: where the source is, the subject's documents, the column's
    other numbers), if it is a valid number there. The trunk prefix (8 in Russia, 0 in
    Germany) may be left out only where every number of the plan has one length (Russia,
    the US, France): a plan of many lengths, such as Germany's, accepts most strings of
    digits without it. A number that carries a country code without a plus
    (``79123456789``) is not a national number."""
    if national_shape(value) is None:
        return None
    meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if meta is None:
        return None
    prefix = meta.national_prefix
    if prefix and not value.lstrip("(").startswith(prefix) and not _one_length(region):
        return None
    try:
        parsed = phonenumbers.parse(value, region, keep_raw_input=True)
    except phonenumbers.NumberParseException:
        return None
    if parsed.country_code_source != phonenumbers.CountryCodeSource.FROM_DEFAULT_COUNTRY:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return parsed


@functools.cache
def _one_length(region: str) -> bool:
    meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if meta is None or meta.mobile is None or meta.fixed_line is None:
        return False
    lengths = {*meta.mobile.possible_length, *meta.fixed_line.possible_length}
    return len(lengths) == 1


def national_phone_country(value: str, regions: Iterable[str]) -> str | None:
    """The country of a number written without its country code, read under each of
    ``regions`` (the countries the context fixes): the one country it is a valid number
    of, or None when it is valid under none or under several (ambiguous). The country is
    the numbering plan's: under RU, an ``8 7xx`` number is Kazakh (both share +7). A
    bare number alone never gives a country: the regions come from elsewhere."""
    return _national_phone_country(value, tuple(sorted(set(regions))))


@functools.lru_cache(maxsize=PHONE_CACHE)
def _national_phone_country(value: str, regions: tuple[str, ...]) -> str | None:
    found = set()
    for region in regions:
        parsed = national_phone(value, region)
        if parsed is not None:
            cc = phonenumbers.region_code_for_number(parsed)
            if cc and cc != "001":
                found.add(str(cc))
    return found.pop() if len(found) == 1 else None


def ip_address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not (7 <= len(value) <= 45) or not (value[0].isdigit() or ":" in value):
        return None
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def script_of(value: str) -> str | None:
    """The one script a value's letters are written in (LATIN, CYRILLIC, CJK, ...), or
    None if it mixes scripts or holds anything but letters, spaces, hyphens, apostrophes
    and dots."""
    found: str | None = None
    for ch in value:
        if ch in " -'.":
            continue
        if not ch.isalpha():
            return None
        name = unicodedata.name(ch, "")
        script = "CJK" if name.startswith("CJK") else name.partition(" ")[0]
        if found is None:
            found = script
        elif script != found:
            return None
    return found


def is_person_name(value: str) -> bool:
    """Given names and surnames: one to four words of one script, each capitalised (or a
    two-to-four character name in a script without case, such as Chinese)."""
    if not (2 <= len(value) <= 60):
        return False
    script = script_of(value)
    if script is None:
        return False
    if script == "CJK":
        return 2 <= len(value) <= 4 and " " not in value
    words = value.split()
    if not (1 <= len(words) <= 4):
        return False
    for word in words:
        head = word[0]
        if not head.isupper() or len(word) < 2:
            return False
        if word.isupper():  # codes such as RU or USD, not names
            return False
    return True


def city_country(value: str) -> str | None:
    return CITIES.get(value.strip().casefold())


def address_country(value: str) -> str | bool:
    """A street address: a house number and a street word. Returns its country when a
    known city is named in it, True when it is an address of no known city, False when
    it is not an address."""
    if not (8 <= len(value) <= 200) or not _HAS_DIGIT.search(value):
        return False
    lowered = value.casefold()
    words = set(re.split(r"[\s,.]+", lowered))
    if not (words & STREET_WORDS or any(w in lowered for w in ("路", "街", "号"))):
        return False
    for part in re.split(r",\s*", lowered):
        cc = CITIES.get(part.strip())
        if cc:
            return cc
    return True


def kinds_of(value: str) -> list[str]:
    """Every kind whose validator accepts ``value`` (usually none or one)."""
    if "@" in value:
        return ["email"] if email_domain(value) else []
    first = value[0]
    if (first == "+" or value.startswith("00")) and phone_country(value):
        return ["phone"]
    compact = value.translate(_SEPARATORS)
    if "." in value and _CPF_FORMAT.fullmatch(value):
        compact = compact.replace(".", "")
    if compact.isdigit():
        return _digit_kinds(value, compact)
    if len(compact) == 18 and compact[:17].isdigit() and compact[17] in "Xx":
        return ["cn_resident_id"] if is_cn_resident_id(compact) else []
    if ip_address(value) is not None:
        return ["ip"]
    if first.isalpha() and first.isupper() and value[1:2].isupper():
        if len(value) == 10 and is_in_pan(value):
            return ["in_pan"]
        if iban_country(value):
            return ["iban"]
    if city_country(value):
        return ["city"]
    if address_country(value) is not False:
        return ["address"]
    if is_person_name(value):
        return ["name"]
    return []


def _digit_kinds(value: str, compact: str) -> list[str]:
    n = len(compact)
    out: list[str] = []
    if n == 10:
        if is_ru_inn(compact):
            out.append("ru_inn")
        if _RU_PASSPORT.fullmatch(value):
            out.append("ru_passport")
    elif n == 11:
        if is_ru_snils(compact):
            out.append("ru_snils")
        if is_br_cpf(compact):
            out.append("br_cpf")
        if is_tr_identity(compact):
            out.append("tr_identity")
        if is_de_idnr(compact):
            out.append("de_idnr")
    elif n == 12:
        if is_ru_inn(compact):
            out.append("ru_inn")
        if is_in_aadhaar(compact):
            out.append("in_aadhaar")
        if is_kz_iin(compact):
            out.append("kz_iin")
    elif n == 18 and is_cn_resident_id(compact):
        out.append("cn_resident_id")
    if 13 <= n <= 19 and is_card(compact):
        out.append("card")
    return out


_DOC_SEPARATORS = str.maketrans("", "", " -.")


def _compact(check: Callable[[str], bool]) -> Callable[[str], bool]:
    return lambda value: check(value.translate(_DOC_SEPARATORS))


# One validator per identifier kind, for the full pass over a column already classified:
# a value of an INN column is checked as an INN only.
DOCUMENT_VALIDATORS: dict[str, Callable[[str], bool]] = {
    "ru_inn": _compact(lambda v: len(v) in (10, 12) and v.isdigit() and is_ru_inn(v)),
    "ru_snils": _compact(lambda v: len(v) == 11 and v.isdigit() and is_ru_snils(v)),
    "ru_passport": lambda v: bool(_RU_PASSPORT.fullmatch(v)),
    "cn_resident_id": _compact(lambda v: len(v) == 18 and is_cn_resident_id(v)),
    "in_aadhaar": _compact(lambda v: len(v) == 12 and v.isdigit() and is_in_aadhaar(v)),
    "in_pan": is_in_pan,
    "br_cpf": _compact(lambda v: len(v) == 11 and v.isdigit() and is_br_cpf(v)),
    "tr_identity": _compact(lambda v: len(v) == 11 and v.isdigit() and is_tr_identity(v)),
    "kz_iin": _compact(is_kz_iin),
    "de_idnr": _compact(lambda v: len(v) == 11 and v.isdigit() and is_de_idnr(v)),
}
