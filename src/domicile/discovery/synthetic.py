"""A synthetic source with its own truth, for tests and ``domicile bench scan``.

People of many countries, with valid identifiers made by their checksum rules (not read
from any list), linked tables, decoy columns that look like personal data and are not
(order numbers shaped like phones, hashes, timestamps, product codes, country codes of
products) and opaque column names. ``truth`` says, independently of the scanner, which
category each column holds and which countries the scan must find for each subject.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import phonenumbers
from stdnum import iban as std_iban
from stdnum import luhn, verhoeff
from stdnum.cn import ric as cn_ric
from stdnum.de import idnr as de_idnr
from stdnum.iso7064 import mod_11_10
from stdnum.tr import tckimlik

_NIN = "user.government_id.national_identification_number"

COUNTRIES = ("RU", "CN", "IN", "KZ", "DE", "BR", "TR", "US", "FR", "UZ")

_NAMES = {
    "CYRILLIC": (("Анна", "Иван", "Мария", "Олег", "Светлана", "Дмитрий"), ("Иванова", "Петров", "Смирнова", "Кузнецов", "Попова", "Соколов")),
    "CJK": (("伟", "芳", "娜", "敏", "静", "强"), ("王", "李", "张", "刘", "陈", "杨")),
    "LATIN": (("Anna", "Lukas", "Maria", "João", "Ayşe", "Priya", "Emma", "Timur", "Léa"), ("Schmidt", "Silva", "Yılmaz", "Sharma", "Smith", "Nurlanov", "Martin", "Karimov")),  # noqa: RUF001
}  # fmt: skip
_SCRIPT = {"RU": "CYRILLIC", "CN": "CJK"}
_CITY = {
    "RU": ("Москва", "Kazan", "Новосибирск"), "CN": ("北京", "Shanghai", "成都"),
    "IN": ("Mumbai", "Bengaluru", "Pune"), "KZ": ("Almaty", "Астана"),
    "DE": ("Berlin", "Hamburg", "München"), "BR": ("São Paulo", "Recife"),
    "TR": ("İstanbul", "Ankara"), "US": ("Chicago", "Seattle"), "FR": ("Lyon", "Nantes"),
    "UZ": ("Tashkent", "Samarkand"),
}  # fmt: skip
_STREET = {
    "RU": "ул. Ленина, {n}, {city}", "DE": "Hauptstraße {n}, {city}",
    "FR": "{n} rue de la Paix, {city}", "US": "{n} Main Street, {city}",
    "BR": "Rua das Flores {n}, {city}", "TR": "Atatürk Caddesi {n}, {city}",
}  # fmt: skip
_IPS = {
    "RU": ("77.88.55.", "5.255.255.", "94.100.180."), "US": ("8.8.8.",), "CN": ("114.114.114.",),
    "IN": ("49.44.0.", "122.160.0."), "DE": ("81.169.145.",), "BR": ("177.10.0.",),
    "TR": ("78.189.0.", "88.247.0."), "KZ": ("37.150.0.",), "UZ": ("213.230.64.",),
}  # fmt: skip
_FREE_MAIL = ("gmail.com", "mail.ru", "yandex.ru", "qq.com", "web.de", "outlook.com")
# Documents whose valid checksum makes the resolver certain of citizenship.
_CERTAIN_DOCS = {"cn_resident_id", "tr_identity"}


def _digits(rng: random.Random, n: int, first: str = "123456789") -> str:
    return rng.choice(first) + "".join(rng.choice("0123456789") for _ in range(n - 1))


def ru_inn(rng: random.Random) -> str:
    d = [int(c) for c in _digits(rng, 10)]
    w11 = (7, 2, 4, 10, 3, 5, 9, 4, 6, 8)
    d.append(sum(a * b for a, b in zip(d, w11, strict=True)) % 11 % 10)
    w12 = (3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8)
    d.append(sum(a * b for a, b in zip(d, w12, strict=True)) % 11 % 10)
    return "".join(map(str, d))


def ru_snils(rng: random.Random) -> str:
    body = str(rng.randint(2_000_000, 999_999_999)).zfill(9)
    total = sum(int(c) * w for c, w in zip(body, range(9, 0, -1), strict=True)) % 101
    check = 0 if total == 100 else total
    return f"{body[:3]}-{body[3:6]}-{body[6:]} {check:02d}"


def cn_resident_id(rng: random.Random) -> str:
    year, month, day = rng.randint(1960, 2004), rng.randint(1, 12), rng.randint(1, 28)
    body = f"110105{year}{month:02d}{day:02d}{rng.randint(0, 999):03d}"
    return body + cn_ric.calc_check_digit(body + "0")  # it skips the last character


def in_aadhaar(rng: random.Random) -> str:
    while True:
        body = _digits(rng, 11, "23456789")
        number = body + verhoeff.calc_check_digit(body)
        if number != number[::-1]:
            return f"{number[:4]} {number[4:8]} {number[8:]}"


def kz_iin(rng: random.Random) -> str:
    while True:
        body = (
            f"{rng.randint(60, 99):02d}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
            f"{rng.choice('34')}{rng.randint(0, 9999):04d}"
        )
        d = [int(c) for c in body]
        check = sum(a * b for a, b in zip(d, range(1, 12), strict=True)) % 11
        if check == 10:
            w = (3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2)
            check = sum(a * b for a, b in zip(d, w, strict=True)) % 11
        if check != 10:
            return body + str(check)


def br_cpf(rng: random.Random) -> str:
    d = [int(c) for c in _digits(rng, 9)]
    for n in (10, 11):
        d.append(sum(a * b for a, b in zip(d, range(n, 1, -1), strict=False)) * 10 % 11 % 10)
    s = "".join(map(str, d))
    return f"{s[:3]}.{s[3:6]}.{s[6:9]}-{s[9:]}"


def tr_identity(rng: random.Random) -> str:
    body = _digits(rng, 9, "12345678")
    return body + tckimlik.calc_check_digits(body)


def de_tax_id(rng: random.Random) -> str:
    while True:
        body = _digits(rng, 10)
        number = body + mod_11_10.calc_check_digit(body)
        if de_idnr.is_valid(number):
            return number


def iban(rng: random.Random, cc: str) -> str:
    bban = "".join(rng.choice("0123456789") for _ in range(18 if cc == "DE" else 23))
    number = cc + "00" + bban
    return cc + std_iban.calc_check_digits(number) + bban


def card(rng: random.Random) -> str:
    body = "4" + "".join(rng.choice("0123456789") for _ in range(14))
    return body + luhn.calc_check_digit(body)


def phone(rng: random.Random, cc: str) -> str:
    example = phonenumbers.example_number_for_type(cc, phonenumbers.PhoneNumberType.MOBILE)
    assert example is not None
    national = str(example.national_number)
    while True:
        candidate = national[:-4] + f"{rng.randint(0, 9999):04d}"
        parsed = phonenumbers.parse(f"+{example.country_code}{candidate}", None)
        if phonenumbers.is_valid_number(parsed) and (
            phonenumbers.region_code_for_number(parsed) == cc
        ):
            return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


@dataclass
class Table:
    name: str
    columns: list[str]
    key: str
    rows: list[list[Any]] = field(default_factory=list)
    links: dict[str, str] = field(default_factory=dict)  # column to table it refers to


@dataclass
class Dataset:
    tables: dict[str, Table]
    columns: dict[str, str | None]  # "TABLE.COLUMN" to its true category
    subjects: dict[str, list[str]]  # "customers:ID" to the countries a scan must report

    @property
    def values(self) -> int:
        return sum(len(t.rows) * len(t.columns) for t in self.tables.values())


def generate(subjects: int = 300, seed: int = 7, orders_per_subject: int = 2) -> Dataset:
    """A source of ``subjects`` people and their orders, payments, sessions and identity
    documents."""
    rng = random.Random(seed)
    customers = Table("customers", ["id", "fld_a", "fld_b", "fld_c", "fld_d", "fld_e", "created", "h"], "id")  # fmt: skip
    identity = Table("kyc", ["kid", "c_ref", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9"], "kid")  # fmt: skip
    identity.links["c_ref"] = "customers"
    orders = Table("orders", ["oid", "cust", "order_no", "sku", "placed"], "oid")
    orders.links["cust"] = "customers"
    payments = Table("payments", ["pid", "o", "acct", "pan", "amount"], "pid")
    payments.links["o"] = "orders"
    sessions = Table("sessions", ["sid", "u", "addr"], "sid")
    sessions.links["u"] = "customers"
    products = Table("products", ["sku", "title", "origin"], "sku")
    truth_cols: dict[str, str | None] = {
        "customers.id": None, "customers.fld_a": "user.name", "customers.fld_b": "user.contact.email",
        "customers.fld_c": "user.contact.phone_number", "customers.fld_d": "user.contact.address.city",
        "customers.fld_e": "user.contact.address.street", "customers.created": None, "customers.h": None,
        "kyc.kid": None, "kyc.c_ref": None,
        "kyc.x1": f"{_NIN}.ru_inn", "kyc.x2": f"{_NIN}.ru_snils", "kyc.x3": f"{_NIN}.cn_resident_id",
        "kyc.x4": f"{_NIN}.in_aadhaar", "kyc.x5": _NIN, "kyc.x6": _NIN, "kyc.x7": _NIN, "kyc.x8": _NIN,
        "kyc.x9": "user.government_id.passport_number.ru_internal",
        "orders.oid": None, "orders.cust": None, "orders.order_no": None, "orders.sku": None,
        "orders.placed": None, "payments.pid": None, "payments.o": None,
        "payments.acct": "user.financial.bank_account", "payments.pan": "user.financial.credit_card",
        "payments.amount": None, "sessions.sid": None, "sessions.u": None,
        "sessions.addr": "user.device.ip_address", "products.sku": None, "products.title": None,
        "products.origin": None,
    }  # fmt: skip
    skus = [f"SKU-{rng.randint(1000, 9999)}-{rng.choice('ABCDEFGH')}{i}" for i in range(40)]
    for s in skus:
        products.rows.append([s, f"Item {s[-3:]}", rng.choice(COUNTRIES)])
    truth_subjects: dict[str, list[str]] = {}
    oid = pid = sid = kid = 0
    for i in range(1, subjects + 1):
        cc = COUNTRIES[(i - 1) % len(COUNTRIES)]
        certain: set[str] = set()
        possible: set[str] = set()
        first, last = _NAMES[_SCRIPT.get(cc, "LATIN")]
        name = (
            rng.choice(last) + rng.choice(first)
            if cc == "CN"
            else f"{rng.choice(first)} {rng.choice(last)}"
        )
        if rng.random() < 0.5 or cc == "US":
            mail = f"user{i}@{rng.choice(_FREE_MAIL)}"
        else:
            mail = f"p{i}@firm{i % 7}.{cc.lower()}"
            possible.add(cc)
        tel = phone(rng, cc)
        possible.add(cc)
        if rng.random() < 0.1:  # a second phone country: the resolver must keep both
            other = rng.choice([c for c in COUNTRIES if c != cc])
            tel = phone(rng, other)
            possible.add(other)
        city = rng.choice(_CITY[cc])
        possible.add(cc)
        street = _STREET.get(cc, "{n} Main Street, {city}").format(n=rng.randint(1, 99), city=city)
        created = f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00"
        digest = hashlib.sha256(f"{seed}:{i}".encode()).hexdigest()
        customers.rows.append([i, name, mail, tel, city, street, created, digest])
        docs: dict[str, str] = {}
        if cc == "RU":
            docs = {
                "x1": ru_inn(rng),
                "x2": ru_snils(rng),
                "x9": f"{_digits(rng, 4)} {_digits(rng, 6)}",
            }
            certain.add("RU")
        elif cc == "CN":
            docs = {"x3": cn_resident_id(rng)}
        elif cc == "IN":
            docs = {"x4": in_aadhaar(rng)}
        elif cc == "KZ":
            docs = {"x5": kz_iin(rng)}
        elif cc == "BR":
            docs = {"x6": br_cpf(rng)}
        elif cc == "TR":
            docs = {"x7": tr_identity(rng)}
        elif cc == "DE":
            docs = {"x8": de_tax_id(rng)}
        if cc in ("CN", "TR"):
            certain.add(cc)
        if docs:
            kid += 1
            row: list[Any] = [kid, i] + [docs.get(f"x{n}") for n in range(1, 10)]
            identity.rows.append(row)
            possible.add(cc)
        for _ in range(orders_per_subject):
            oid += 1
            order_no = _digits(rng, 11, "7")  # shaped like a Russian phone number, not one
            placed = f"2025-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}T10:00:00Z"
            orders.rows.append([oid, i, order_no, rng.choice(skus), placed])
            pid += 1
            acct = iban(rng, cc) if cc in ("DE", "FR") else None
            payments.rows.append(
                [pid, oid, acct, card(rng), f"{rng.randint(1, 999)}.{rng.randint(0, 99):02d}"]
            )
        if cc in _IPS:
            sid += 1
            sessions.rows.append([sid, i, rng.choice(_IPS[cc]) + str(rng.randint(1, 254))])
            possible.add(cc)
        sid += 1
        private = rng.choice(("10.0.", "192.168.", "203.0.113.", "198.51.100."))
        sessions.rows.append(
            [
                sid,
                i,
                private
                + (f"{rng.randint(0, 255)}." if private.count(".") == 2 else "")
                + str(rng.randint(1, 254)),
            ]
        )
        truth_subjects[f"customers:{i}"] = sorted(certain) if certain else sorted(possible)
    tables = {t.name: t for t in (customers, identity, orders, payments, sessions, products)}
    return Dataset(tables, truth_cols, truth_subjects)


# --- writers -------------------------------------------------------------------------------


def write_database(data: Dataset, url: str) -> None:
    """Create the tables (keys and foreign keys declared) in the database at ``url`` (a
    SQLAlchemy URL) and load the rows."""
    import sqlalchemy as sa

    url = url.replace("postgresql://", "postgresql+psycopg://", 1).replace(
        "mysql://", "mysql+pymysql://", 1
    )
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    made = {}
    for t in data.tables.values():
        cols = []
        for c in t.columns:
            is_int = c == t.key and t.name != "products"
            args: list[Any] = [sa.Integer if is_int or c in t.links else sa.String(255)]
            if c in t.links:
                target = data.tables[t.links[c]]
                args.append(sa.ForeignKey(f"{target.name}.{target.key}"))
            cols.append(sa.Column(c, *args, primary_key=c == t.key, autoincrement=False))
        made[t.name] = sa.Table(t.name, meta, *cols)
    meta.create_all(engine)
    with engine.begin() as conn:
        for t in data.tables.values():
            if t.rows:
                conn.execute(
                    made[t.name].insert(), [dict(zip(t.columns, r, strict=True)) for r in t.rows]
                )
    engine.dispose()


def write_files(data: Dataset, folder: Path, fmt: str = "csv") -> None:
    """One file per table: CSV (with a header), Parquet, or JSON lines."""
    import csv
    import json

    folder.mkdir(parents=True, exist_ok=True)
    for t in data.tables.values():
        path = folder / f"{t.name}.{ {'csv': 'csv', 'parquet': 'parquet', 'jsonl': 'jsonl'}[fmt] }"
        if fmt == "csv":
            with path.open("w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                w.writerow(t.columns)
                w.writerows(["" if v is None else v for v in r] for r in t.rows)
        elif fmt == "jsonl":
            with path.open("w", encoding="utf-8") as fh:
                for r in t.rows:
                    fh.write(
                        json.dumps(dict(zip(t.columns, r, strict=True)), ensure_ascii=False) + "\n"
                    )
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            arrays = {
                c: pa.array(
                    [r[i] if r[i] is None or isinstance(r[i], int) else str(r[i]) for r in t.rows]
                )
                for i, c in enumerate(t.columns)
            }
            pq.write_table(pa.table(arrays), path)
